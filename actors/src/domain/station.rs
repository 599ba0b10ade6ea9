//! Station decider: turns song observations from pollers into `SongStarted` / `SongEnded`
//! only when the song really changes.
//!
//! Observations are compared by a normalised key (case, whitespace, punctuation variants), so
//! "Simon & Garfunkel" and "simon and garfunkel" are the same song; the spelling of the first
//! observation is the one shown.
//!
//! Enrichment (what the provider knows of a song) comes in two ways, both recorded as
//! `SongEnriched`: with the observation, when the cache knew the song as it started (the shell
//! fills [`ObserveSong::known`]), or later as an [`EnrichSong`] command once the provider
//! answered. Only the play still on air, not yet enriched and of the same song takes it.

use super::decider::Decider;
use super::enrichment::Enrichment;
use super::normalise::{comparison_chars, comparison_key, split_raw, tidy};
use super::time::Timestamp;

/// A song as displayed: the original spelling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Song {
    pub artist: String,
    pub title: String,
}

impl Song {
    /// The key two observations of the same song share.
    pub fn comparison_key(&self) -> String {
        format!(
            "{}\u{1f}{}",
            comparison_key(&self.artist),
            comparison_key(&self.title)
        )
    }

    /// Whether `other` is the same song spelled alike: their [`Song::comparison_key`]s are
    /// equal (compared without building them).
    pub fn same_song(&self, other: &Song) -> bool {
        comparison_chars(&self.artist).eq(comparison_chars(&other.artist))
            && comparison_chars(&self.title).eq(comparison_chars(&other.title))
    }
}

/// A poller saw this on air.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObserveSong {
    pub artist: String,
    pub title: String,
    /// "Artist - Title", used when artist and title are both empty.
    pub raw: String,
    /// What the enrichment cache knew of the observed song when it was decided (an input from
    /// elsewhere, recorded in the `SongEnriched` it leads to). Filled in by the shell, only
    /// for a song that is not the one on air.
    pub known: Option<Enrichment>,
}

impl ObserveSong {
    /// The song observed, tidied (or parsed from `raw`).
    pub fn song(&self) -> Result<Song, StationError> {
        observed_song(self)
    }
}

/// The enrichment service's answer for one play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichSong {
    pub play_seq: u64,
    /// [`Song::comparison_key`] of the song looked up.
    pub song_key: String,
    pub enrichment: Enrichment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StationCommand {
    ObserveSong(ObserveSong),
    EnrichSong(EnrichSong),
}

/// The song on air now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPlay {
    pub play_seq: u64,
    pub song: Song,
    pub started_at: Timestamp,
    pub enrichment: Option<Enrichment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StationState {
    pub current: Option<CurrentPlay>,
    /// The play_seq of the latest SongStarted (0 before the first).
    pub last_play_seq: u64,
}

impl StationState {
    /// Whether an enrichment of the song `song_key` for the play `play_seq` applies: that play
    /// is on air, of that song, and not enriched yet.
    pub fn takes_enrichment(&self, play_seq: u64, song_key: &str) -> bool {
        self.current.as_ref().is_some_and(|current| {
            current.play_seq == play_seq
                && current.enrichment.is_none()
                && current.song.comparison_key() == song_key
        })
    }
}

/// Station domain events, named in the past tense (version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StationEvent {
    SongStarted {
        play_seq: u64,
        song: Song,
        started_at: Timestamp,
    },
    SongEnded {
        play_seq: u64,
        song: Song,
        started_at: Timestamp,
        ended_at: Timestamp,
        /// The play's enrichment when it ended (so the play history keeps it).
        enrichment: Option<Enrichment>,
    },
    SongEnriched {
        play_seq: u64,
        enrichment: Enrichment,
    },
}

impl StationEvent {
    /// The event name used in subjects.
    pub fn name(&self) -> &'static str {
        match self {
            StationEvent::SongStarted { .. } => "SongStarted",
            StationEvent::SongEnded { .. } => "SongEnded",
            StationEvent::SongEnriched { .. } => "SongEnriched",
        }
    }
}

/// Why a station command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StationError {
    #[error("the observation names no song: artist, title and raw are all empty")]
    EmptyObservation,
}

/// The station decider: no policy, so a unit type.
#[derive(Debug, Clone, Copy, Default)]
pub struct StationDecider;

impl Decider for StationDecider {
    type Command = StationCommand;
    type Event = StationEvent;
    type State = StationState;
    type Error = StationError;

    fn initial() -> StationState {
        StationState::default()
    }

    fn decide(
        &self,
        command: &StationCommand,
        state: &StationState,
        now: Timestamp,
    ) -> Result<Vec<StationEvent>, StationError> {
        let observation = match command {
            StationCommand::ObserveSong(observation) => observation,
            StationCommand::EnrichSong(answer) => return Ok(enrich(answer, state)),
        };
        let song = observed_song(observation)?;
        let previous = state.current.as_ref();
        if previous.is_some_and(|current| current.song.same_song(&song)) {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(3);
        if let Some(current) = previous {
            events.push(StationEvent::SongEnded {
                play_seq: current.play_seq,
                song: current.song.clone(),
                started_at: current.started_at,
                ended_at: now,
                enrichment: current.enrichment.clone(),
            });
        }
        let play_seq = state.last_play_seq + 1;
        events.push(StationEvent::SongStarted {
            play_seq,
            song,
            started_at: now,
        });
        if let Some(known) = &observation.known {
            events.push(StationEvent::SongEnriched {
                play_seq,
                enrichment: known.clone(),
            });
        }
        Ok(events)
    }

    fn evolve(mut state: StationState, event: &StationEvent) -> StationState {
        match event {
            StationEvent::SongStarted {
                play_seq,
                song,
                started_at,
            } => {
                state.current = Some(CurrentPlay {
                    play_seq: *play_seq,
                    song: song.clone(),
                    started_at: *started_at,
                    enrichment: None,
                });
                state.last_play_seq = *play_seq;
            }
            StationEvent::SongEnriched {
                play_seq,
                enrichment,
            } => {
                if let Some(current) = state
                    .current
                    .as_mut()
                    .filter(|current| current.play_seq == *play_seq)
                {
                    current.enrichment = Some(enrichment.clone());
                }
            }
            StationEvent::SongEnded { play_seq, .. } => {
                if state
                    .current
                    .as_ref()
                    .is_some_and(|current| current.play_seq == *play_seq)
                {
                    state.current = None;
                }
            }
        }
        state
    }
}

/// An answer applies to the play on air, of the same song, not yet enriched; any other is
/// stale (the song changed while the provider was asked) and changes nothing.
fn enrich(answer: &EnrichSong, state: &StationState) -> Vec<StationEvent> {
    if !state.takes_enrichment(answer.play_seq, &answer.song_key) {
        return Vec::new();
    }
    vec![StationEvent::SongEnriched {
        play_seq: answer.play_seq,
        enrichment: answer.enrichment.clone(),
    }]
}

fn observed_song(observation: &ObserveSong) -> Result<Song, StationError> {
    let (artist, title) =
        if observation.artist.trim().is_empty() && observation.title.trim().is_empty() {
            split_raw(&observation.raw)
        } else {
            (tidy(&observation.artist), tidy(&observation.title))
        };
    if artist.is_empty() && title.is_empty() {
        return Err(StationError::EmptyObservation);
    }
    Ok(Song { artist, title })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::decider::Given;

    fn song(artist: &str, title: &str) -> Song {
        Song {
            artist: artist.into(),
            title: title.into(),
        }
    }

    fn observe(artist: &str, title: &str) -> StationCommand {
        StationCommand::ObserveSong(ObserveSong {
            artist: artist.into(),
            title: title.into(),
            raw: String::new(),
            known: None,
        })
    }

    fn observe_known(artist: &str, title: &str, known: Enrichment) -> StationCommand {
        StationCommand::ObserveSong(ObserveSong {
            artist: artist.into(),
            title: title.into(),
            raw: String::new(),
            known: Some(known),
        })
    }

    fn catalogued(recording: &str) -> Enrichment {
        Enrichment {
            recording_mbid: recording.into(),
            title: "Sinnerman".into(),
            artist: "Nina Simone".into(),
            release_title: "Pastel Blues".into(),
            release_year: 1965,
            enriched_at: at(7),
            ..Enrichment::default()
        }
    }

    fn enriched(play_seq: u64, recording: &str) -> StationEvent {
        StationEvent::SongEnriched {
            play_seq,
            enrichment: catalogued(recording),
        }
    }

    fn answer(play_seq: u64, artist: &str, title: &str, recording: &str) -> StationCommand {
        StationCommand::EnrichSong(EnrichSong {
            play_seq,
            song_key: song(artist, title).comparison_key(),
            enrichment: catalogued(recording),
        })
    }

    fn observe_raw(raw: &str) -> StationCommand {
        StationCommand::ObserveSong(ObserveSong {
            raw: raw.into(),
            ..Default::default()
        })
    }

    fn at(millis: u64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    fn given(events: &[StationEvent]) -> Given<'static, StationDecider> {
        Given::new(&StationDecider, events)
    }

    fn started(play_seq: u64, artist: &str, title: &str, started_at: u64) -> StationEvent {
        StationEvent::SongStarted {
            play_seq,
            song: song(artist, title),
            started_at: at(started_at),
        }
    }

    #[test]
    fn first_observation_starts_the_first_play() {
        given(&[])
            .when(observe("Nina Simone", "Sinnerman"), at(10))
            .then(vec![started(1, "Nina Simone", "Sinnerman", 10)]);
    }

    #[test]
    fn a_new_song_ends_the_previous_one_and_starts_the_next() {
        given(&[started(1, "Nina Simone", "Sinnerman", 10)])
            .when(observe("Björk", "Jóga"), at(250))
            .then(vec![
                StationEvent::SongEnded {
                    play_seq: 1,
                    song: song("Nina Simone", "Sinnerman"),
                    started_at: at(10),
                    ended_at: at(250),
                    enrichment: None,
                },
                started(2, "Björk", "Jóga", 250),
            ]);
    }

    #[test]
    fn repeated_observations_of_the_current_song_change_nothing() {
        let history = [started(1, "Simon & Garfunkel", "The Boxer", 10)];
        for (artist, title) in [
            ("Simon & Garfunkel", "The Boxer"),
            ("simon and garfunkel", "the boxer"),
            ("  SIMON AND  GARFUNKEL", "The Boxer!"),
        ] {
            given(&history)
                .when(observe(artist, title), at(20))
                .then(vec![]);
        }
    }

    #[test]
    fn the_first_spelling_is_kept_for_display() {
        let state = given(&[started(1, "Simon & Garfunkel", "The Boxer", 10)])
            .when(observe("SIMON AND GARFUNKEL", "the boxer"), at(20))
            .then(vec![]);
        assert_eq!(
            state.current.unwrap().song,
            song("Simon & Garfunkel", "The Boxer")
        );
    }

    #[test]
    fn raw_is_parsed_when_artist_and_title_are_absent() {
        given(&[])
            .when(observe_raw("Nina Simone - Sinnerman"), at(5))
            .then(vec![started(1, "Nina Simone", "Sinnerman", 5)]);
        // The raw spelling of the song on air is a repeat, not a change.
        given(&[started(1, "Nina Simone", "Sinnerman", 5)])
            .when(observe_raw("NINA SIMONE – Sinnerman"), at(9))
            .then(vec![]);
    }

    #[test]
    fn explicit_fields_win_over_raw_and_are_tidied() {
        let command = StationCommand::ObserveSong(ObserveSong {
            artist: "  Nina   Simone ".into(),
            title: "Sinnerman".into(),
            raw: "Someone Else - Other".into(),
            known: None,
        });
        given(&[])
            .when(command, at(5))
            .then(vec![started(1, "Nina Simone", "Sinnerman", 5)]);
    }

    #[test]
    fn an_observation_without_any_song_is_rejected() {
        given(&[])
            .when(observe_raw("   "), at(5))
            .then_refused(StationError::EmptyObservation);
        given(&[])
            .when(observe(" ", ""), at(5))
            .then_refused(StationError::EmptyObservation);
    }

    #[test]
    fn a_song_the_cache_knows_starts_enriched() {
        let state = given(&[])
            .when(
                observe_known("Nina Simone", "Sinnerman", catalogued("r-1")),
                at(10),
            )
            .then(vec![
                started(1, "Nina Simone", "Sinnerman", 10),
                enriched(1, "r-1"),
            ]);
        assert_eq!(state.current.unwrap().enrichment, Some(catalogued("r-1")));
    }

    #[test]
    fn a_repeat_of_the_song_on_air_records_no_enrichment_again() {
        given(&[
            started(1, "Nina Simone", "Sinnerman", 10),
            enriched(1, "r-1"),
        ])
        .when(
            observe_known("NINA SIMONE", "sinnerman", catalogued("r-2")),
            at(20),
        )
        .then(vec![]);
    }

    #[test]
    fn the_providers_answer_enriches_the_play_on_air() {
        let state = given(&[started(1, "Nina Simone", "Sinnerman", 10)])
            .when(answer(1, "nina simone", "SINNERMAN", "r-1"), at(30))
            .then(vec![enriched(1, "r-1")]);
        assert_eq!(state.current.unwrap().enrichment, Some(catalogued("r-1")));
    }

    #[test]
    fn a_stale_answer_changes_nothing() {
        let history = [
            started(1, "Nina Simone", "Sinnerman", 10),
            StationEvent::SongEnded {
                play_seq: 1,
                song: song("Nina Simone", "Sinnerman"),
                started_at: at(10),
                ended_at: at(20),
                enrichment: None,
            },
            started(2, "Björk", "Jóga", 20),
        ];
        // The play it was asked for has ended.
        given(&history)
            .when(answer(1, "Nina Simone", "Sinnerman", "r-1"), at(30))
            .then(vec![]);
        // The play on air, but another song's answer.
        given(&history)
            .when(answer(2, "Nina Simone", "Sinnerman", "r-1"), at(30))
            .then(vec![]);
        // Already enriched: the first answer stands.
        given(&[
            started(1, "Nina Simone", "Sinnerman", 10),
            enriched(1, "r-1"),
        ])
        .when(answer(1, "Nina Simone", "Sinnerman", "r-2"), at(30))
        .then(vec![]);
        // Nothing on air yet.
        given(&[])
            .when(answer(1, "Nina Simone", "Sinnerman", "r-1"), at(30))
            .then(vec![]);
    }

    #[test]
    fn a_play_ends_with_its_enrichment() {
        given(&[
            started(1, "Nina Simone", "Sinnerman", 10),
            enriched(1, "r-1"),
        ])
        .when(observe("Björk", "Jóga"), at(250))
        .then(vec![
            StationEvent::SongEnded {
                play_seq: 1,
                song: song("Nina Simone", "Sinnerman"),
                started_at: at(10),
                ended_at: at(250),
                enrichment: Some(catalogued("r-1")),
            },
            started(2, "Björk", "Jóga", 250),
        ]);
    }

    #[test]
    fn a_song_that_returns_later_is_a_new_play() {
        let history = [
            started(1, "A", "One", 10),
            StationEvent::SongEnded {
                play_seq: 1,
                song: song("A", "One"),
                started_at: at(10),
                ended_at: at(20),
                enrichment: None,
            },
            started(2, "B", "Two", 20),
        ];
        let (_, decision) = given(&history).when(observe("A", "One"), at(30)).decision();
        assert_eq!(decision.unwrap().last(), Some(&started(3, "A", "One", 30)));
    }

    fn observations() -> impl Strategy<Value = Vec<(usize, bool, u64)>> {
        // (which of a few songs, spelled as a variant?, time step)
        prop::collection::vec((0usize..4, any::<bool>(), 0u64..1_000), 0..60)
    }

    const SONGS: [(&str, &str); 4] = [
        ("Simon & Garfunkel", "The Boxer"),
        ("Nina Simone", "Sinnerman"),
        ("Björk", "Jóga"),
        ("Daft Punk", "One More Time"),
    ];

    fn variant_command(which: usize, variant: bool) -> StationCommand {
        let (artist, title) = SONGS[which];
        if variant {
            observe_raw(&format!("{} - {}", artist.to_uppercase(), title))
        } else {
            observe(artist, title)
        }
    }

    proptest! {
        /// Checked against an independent oracle: the plays a listener would have noted down
        /// (a new play whenever the song on air changes), not against the decider's own fold.
        #[test]
        fn the_plays_are_exactly_the_changes_of_song(steps in observations()) {
            let decider = StationDecider;
            let mut state = StationDecider::initial();
            let mut noted: Vec<usize> = Vec::new();
            let mut started_songs: Vec<usize> = Vec::new();
            let mut now = 0;
            for (which, variant, step) in steps {
                now += step;
                if noted.last() != Some(&which) {
                    noted.push(which);
                }
                let events = decider.decide(&variant_command(which, variant), &state, at(now)).unwrap();
                for event in &events {
                    if let StationEvent::SongStarted { song, .. } = event {
                        let index = SONGS.iter().position(|(artist, _)| song.artist.to_lowercase() == artist.to_lowercase()).unwrap();
                        started_songs.push(index);
                    }
                }
                state = StationDecider::fold(state, &events);
            }
            prop_assert_eq!(&started_songs, &noted);
            prop_assert_eq!(state.last_play_seq, noted.len() as u64);
            prop_assert_eq!(state.current.map(|play| play.play_seq), (!noted.is_empty()).then_some(noted.len() as u64));
        }

        #[test]
        fn consecutive_plays_are_different_songs_and_each_end_matches_its_start(
            steps in observations()
        ) {
            let decider = StationDecider;
            let mut state = StationDecider::initial();
            let mut now = 0;
            for (which, variant, step) in steps {
                now += step;
                let previous = state.current.clone();
                let events = decider.decide(&variant_command(which, variant), &state, at(now)).unwrap();
                if let (Some(previous), Some(StationEvent::SongStarted { song, .. })) =
                    (&previous, events.last())
                {
                    prop_assert_ne!(previous.song.comparison_key(), song.comparison_key());
                    let ends_the_previous_play = matches!(
                        &events[0],
                        StationEvent::SongEnded { play_seq, .. } if *play_seq == previous.play_seq
                    );
                    prop_assert!(ends_the_previous_play);
                }
                state = StationDecider::fold(state, &events);
                // Observing what is on air again is always a no-op.
                prop_assert!(decider.decide(&variant_command(which, !variant), &state, at(now)).unwrap().is_empty());
            }
        }
    }
}
