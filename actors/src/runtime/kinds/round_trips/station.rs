//! Stations: song observations in every spelling a poller sends, songs the enrichment cache
//! knew, the enrichment service's answers (current and stale), the play history capped.

use std::collections::BTreeMap;
use std::sync::Arc;

use playhead_proto::ids::StationId;
use proptest::prelude::*;

use super::{
    Decision, MINUTE, START, every_event, messages, rebuilt_from_journal, run_as_the_shell,
    temporary_db,
};
use crate::config::{NodeConfig, StationConfig};
use crate::domain::enrichment::Enrichment;
use crate::domain::station::{
    EnrichSong, ObserveSong, Song, StationCommand, StationDecider, StationEvent,
};
use crate::domain::time::Timestamp;
use crate::runtime::kinds::station::StationKind;
use crate::storage::clock::ManualClock;
use crate::storage::station_store::{PlayRecord, PlaysQuery, StationStore, StoredStation};

const SONGS: [(&str, &str); 5] = [
    ("Simon & Garfunkel", "The Boxer"),
    ("Nina Simone", "Sinnerman"),
    ("Björk", "Jóga"),
    ("Daft Punk", "One More Time"),
    ("Sigur Rós", "Hoppípolla"),
];

/// How a poller spelled what it saw.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    AsListed,
    /// Only "ARTIST - Title" in `raw`.
    Raw,
    /// Lower case with stray spaces: the same song as the listed spelling.
    Sloppy,
    /// Nothing at all: refused.
    Blank,
    /// As listed, and the enrichment cache knew the song.
    Known,
    /// Not an observation: the enrichment service's answer for this song and this play
    /// (often stale: the play ended, or is another song's).
    Answer(u64),
}

/// What the provider says of the song `index` of [`SONGS`].
fn enrichment_of(index: usize) -> Enrichment {
    Enrichment {
        recording_mbid: format!("recording-{index}"),
        title: SONGS[index].1.to_uppercase(),
        release_year: 1960 + index as u32,
        cover_url: format!("https://coverartarchive.org/release/{index}/front-500.jpg"),
        enriched_at: Timestamp::from_millis(START + index as u64),
        ..Enrichment::default()
    }
}

/// (time since the previous observation, slice ends, (song, spelling)).
type Step = (u64, bool, (usize, Spelling));

fn observe((song, spelling): &(usize, Spelling), _now: Timestamp) -> StationCommand {
    let (artist, title) = SONGS[*song];
    let observation = match spelling {
        Spelling::AsListed => ObserveSong {
            artist: artist.into(),
            title: title.into(),
            raw: String::new(),
            known: None,
        },
        Spelling::Known => ObserveSong {
            artist: artist.into(),
            title: title.into(),
            raw: String::new(),
            known: Some(enrichment_of(*song)),
        },
        Spelling::Answer(play_seq) => {
            let key = Song {
                artist: artist.into(),
                title: title.into(),
            }
            .comparison_key();
            return StationCommand::EnrichSong(EnrichSong {
                play_seq: *play_seq,
                song_key: key,
                enrichment: enrichment_of(*song),
            });
        }
        Spelling::Raw => ObserveSong {
            raw: format!("{} - {title}", artist.to_uppercase()),
            ..ObserveSong::default()
        },
        Spelling::Sloppy => ObserveSong {
            artist: format!("  {}  ", artist.to_lowercase()),
            title: title.to_lowercase(),
            raw: String::new(),
            known: None,
        },
        Spelling::Blank => ObserveSong {
            artist: " ".into(),
            title: String::new(),
            raw: "  ".into(),
            known: None,
        },
    };
    StationCommand::ObserveSong(observation)
}

/// Observations up to 40 minutes apart (a run crosses the store's day-wide buckets).
fn steps() -> impl Strategy<Value = Vec<Step>> {
    let spelling = prop_oneof![
        4 => Just(Spelling::AsListed),
        2 => Just(Spelling::Raw),
        2 => Just(Spelling::Sloppy),
        1 => Just(Spelling::Blank),
        2 => Just(Spelling::Known),
        3 => (1..12u64).prop_map(Spelling::Answer),
    ];
    prop::collection::vec(
        (0..40 * MINUTE, any::<bool>(), (0..SONGS.len(), spelling)),
        0..60,
    )
}

/// The plays the events describe, newest first, read from the payloads alone: one per
/// `SongStarted`, closed by the `SongEnded` of the same play; the `history_cap` newest kept.
fn plays_described_by(decisions: &[Decision<StationEvent>], history_cap: u64) -> Vec<PlayRecord> {
    let mut plays = BTreeMap::new();
    for event in every_event(decisions) {
        match event {
            StationEvent::SongStarted {
                play_seq,
                song,
                started_at,
            } => {
                plays.insert(
                    *play_seq,
                    PlayRecord {
                        play_seq: *play_seq,
                        artist: song.artist.clone(),
                        title: song.title.clone(),
                        started_at_ms: started_at.as_millis(),
                        ended_at_ms: None,
                        enrichment: None,
                    },
                );
            }
            StationEvent::SongEnriched {
                play_seq,
                enrichment,
            } => {
                if let Some(play) = plays.get_mut(play_seq) {
                    play.enrichment = Some(crate::wire::song_enrichment(enrichment));
                }
            }
            StationEvent::SongEnded {
                play_seq, ended_at, ..
            } => {
                if let Some(play) = plays.get_mut(play_seq) {
                    play.ended_at_ms = Some(ended_at.as_millis());
                }
            }
        }
    }
    plays
        .into_values()
        .rev()
        .take(history_cap as usize)
        .collect()
}

/// Every play the store lists, newest first, following `next_before` page by page.
fn listed_plays(
    store: &StationStore,
    station: &StationId,
    page_size: usize,
) -> Result<Vec<PlayRecord>, TestCaseError> {
    let mut plays = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_plays(
            station,
            PlaysQuery {
                page_size,
                before,
                since: None,
            },
        )?;
        prop_assert!(page.plays.len() <= page_size);
        plays.extend(page.plays);
        match page.next_before {
            Some(cursor) => {
                prop_assert!(
                    before.is_none_or(|before| cursor < before),
                    "the cursor stalls"
                );
                before = Some(cursor);
            }
            None => return Ok(plays),
        }
    }
}

/// Decides `steps` for one station, committing each slice, then reads it back.
fn check(history_cap: u64, page_size: usize, steps: &[Step]) -> Result<(), TestCaseError> {
    let station = StationId::parse("radio-1")?;
    let clock = Arc::new(ManualClock::new(START));
    let config = StationConfig {
        history_cap,
        ..NodeConfig::default().station
    };
    let db = temporary_db()?;
    let (_buckets, placement) = crate::storage::keyspace::temporary_bucket_dbs();
    let store = StationStore::open(&db, &config, clock.clone(), placement)?;
    let run = run_as_the_shell(
        &StationDecider,
        messages(steps, observe),
        |state, now, slice, last_journal_seq| {
            clock.set(now.as_millis());
            let events: Vec<&StationEvent> = every_event(slice).collect();
            let stored = StoredStation {
                state: state.clone(),
                last_applied_seq: slice[slice.len() - 1].inbox_seq,
                last_journal_seq,
            };
            store.commit(&station, &events, &stored)?;
            Ok(())
        },
    )?;

    prop_assert_eq!(
        store.load(&station)?,
        StoredStation {
            state: run.state.clone(),
            last_applied_seq: run.last_applied_seq(),
            last_journal_seq: run.last_journal_seq,
        }
    );
    prop_assert_eq!(
        listed_plays(&store, &station, page_size)?,
        plays_described_by(&run.decisions, history_cap)
    );
    prop_assert_eq!(
        rebuilt_from_journal::<StationKind>(&station, &run.decisions)?,
        run.state
    );
    Ok(())
}

proptest! {
    #[test]
    fn a_station_comes_back_from_sled_and_from_the_journal(
        history_cap in 1..24u64,
        page_size in 1..8usize,
        steps in steps(),
    ) {
        check(history_cap, page_size, &steps)?;
    }
}
