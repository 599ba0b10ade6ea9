//! Player decider: one playlist session of one listener. The server picks the order (a
//! seeded shuffle the listener never sees ahead), advances on `Next`, grants at most
//! `skip_limit` skips per rolling `skip_window` (`skip_limit = 0` disables skipping), marks the
//! session completed once every track has been played, and treats a session untouched for
//! `session_ttl` as gone.
//!
//! Pure: the policy and `now` are arguments; the order is derived from the seed in `evolve`,
//! so folding the events always reproduces the state.

use std::time::Duration;

pub use playhead_client::command::{MAX_TRACKS, TrackError};
use playhead_proto::ids::{PlaylistId, UserId};

use super::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub track_id: String,
    pub artist: String,
}

/// Limits of the player, from configuration ([`PlayerPolicy::validate`] says which are usable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerPolicy {
    /// Skips granted per rolling `skip_window`. 0 disables skipping: every Skip is answered
    /// `SkipDenied` with `retry_after = skip_window` (nothing frees a place, so the client is
    /// told to wait one whole window before asking again), and `Next` still plays on.
    pub skip_limit: u32,
    pub skip_window: Duration,
    /// A session untouched this long is gone (sliding: every command touches it).
    pub session_ttl: Duration,
    /// Live sessions one listener may have; starting one more is refused
    /// ([`PlayerError::TooManySessions`]) until one lapses.
    pub max_sessions: u32,
}

/// The default of [`PlayerPolicy::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: u32 = 200;

impl Default for PlayerPolicy {
    fn default() -> Self {
        Self {
            skip_limit: 3,
            skip_window: Duration::from_secs(60 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

/// Why a player policy is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerPolicyError {
    #[error(
        "skip_window must be at least 1 ms: a window that holds no skip never limits any \
         (set skip_limit to 0 to disable skipping)"
    )]
    ZeroSkipWindow,
    #[error("session_ttl must be at least 1 ms, or every session is gone as soon as it starts")]
    ZeroSessionTtl,
    #[error("max_sessions_per_user must be at least 1, or no listener can start a playlist")]
    NoSessions,
    /// A restart carries the skips still in the window from the previous session, even an
    /// expired one; the store forgets an expired session on its own schedule, so with a TTL
    /// shorter than the window the same restart would be decided differently from sled than
    /// from memory or the journal.
    #[error(
        "session_ttl ({ttl:?}) must be at least skip_window ({window:?}), so an expired \
         session holds no skip that still counts"
    )]
    TtlShorterThanSkipWindow {
        ttl: std::time::Duration,
        window: std::time::Duration,
    },
}

impl PlayerPolicy {
    /// Refuses the values that would make the player meaningless; `decide` never panics on
    /// them either, so a policy that bypassed this check degrades, not crashes. Any
    /// `skip_limit` is usable, 0 included (skipping disabled).
    pub fn validate(&self) -> Result<(), PlayerPolicyError> {
        // Timestamps are milliseconds: a shorter duration is zero to the decider.
        if self.skip_window.as_millis() == 0 {
            return Err(PlayerPolicyError::ZeroSkipWindow);
        }
        if self.session_ttl.as_millis() == 0 {
            return Err(PlayerPolicyError::ZeroSessionTtl);
        }
        if self.max_sessions == 0 {
            return Err(PlayerPolicyError::NoSessions);
        }
        if self.session_ttl < self.skip_window {
            return Err(PlayerPolicyError::TtlShorterThanSkipWindow {
                ttl: self.session_ttl,
                window: self.skip_window,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlaylist {
    pub user_id: UserId,
    pub playlist_id: PlaylistId,
    pub tracks: Vec<Track>,
    /// Shuffle seed; derived from the ids when absent.
    pub seed: Option<u64>,
    /// Start over even when a live session exists (otherwise it resumes).
    pub restart: bool,
    /// When the listener's other sessions were last touched, as stored when the command came
    /// (the node looks them up before deciding; `None`: not looked up, no limit applies).
    /// Only a start that begins a new session counts them against
    /// [`PlayerPolicy::max_sessions`].
    pub other_sessions: Option<Vec<Timestamp>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerCommand {
    Start(StartPlaylist),
    /// The current track finished: move on.
    Next,
    /// The listener wants the next track before this one finished.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Playing,
    Completed,
}

/// One session's state. `order` is private to the server: views never expose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub tracks: Vec<Track>,
    pub seed: u64,
    /// Indices into `tracks`, in playing order.
    pub order: Vec<u32>,
    /// How many tracks of `order` were played (finished or skipped).
    pub position: usize,
    /// When each granted skip happened, oldest first.
    pub skipped_at: Vec<Timestamp>,
    pub status: SessionStatus,
    pub started_at: Timestamp,
    pub last_touched_at: Timestamp,
}

/// No session, or one (possibly expired: `decide` checks with the policy).
pub type PlayerState = Option<Session>;

/// Player domain events, named in the past tense (version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerEvent {
    SessionStarted {
        tracks: Vec<Track>,
        seed: u64,
        /// Skips of the previous session still inside the window: starting over must not
        /// reset the skip limit.
        recent_skips: Vec<Timestamp>,
        at: Timestamp,
    },
    SessionResumed {
        at: Timestamp,
    },
    TrackAdvanced {
        track_id: String,
        skipped: bool,
        at: Timestamp,
    },
    SkipDenied {
        retry_after: Duration,
        at: Timestamp,
    },
    SessionCompleted {
        at: Timestamp,
    },
}

impl PlayerEvent {
    /// The event name used in subjects.
    pub fn name(&self) -> &'static str {
        match self {
            PlayerEvent::SessionStarted { .. } => "SessionStarted",
            PlayerEvent::SessionResumed { .. } => "SessionResumed",
            PlayerEvent::TrackAdvanced { .. } => "TrackAdvanced",
            PlayerEvent::SkipDenied { .. } => "SkipDenied",
            PlayerEvent::SessionCompleted { .. } => "SessionCompleted",
        }
    }
}

/// Why a player command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerError {
    #[error("no live session for this playlist: start it first")]
    NoSession,
    #[error(
        "this listener has {limit} live sessions, the most allowed (player.max_sessions_per_user); \
         a session lapses {ttl} after its last use"
    )]
    TooManySessions { limit: u32, ttl: String },
    /// The tracks fail the checks a publisher can run before sending (the client crate's).
    #[error(transparent)]
    InvalidTracks(#[from] TrackError),
}

pub fn initial() -> PlayerState {
    None
}

impl Session {
    /// Whether the session is still alive at `now` (sliding TTL from the last touch).
    pub fn is_live(&self, now: Timestamp, policy: &PlayerPolicy) -> bool {
        now.saturating_duration_since(self.last_touched_at) < policy.session_ttl
    }

    /// The track playing now; `None` once completed.
    pub fn current_track(&self) -> Option<&Track> {
        let index = *self.order.get(self.position)?;
        self.tracks.get(index as usize)
    }

    /// Tracks already played, in the order they were played.
    pub fn played_tracks(&self) -> impl Iterator<Item = &Track> {
        self.order[..self.position]
            .iter()
            .map(|index| &self.tracks[*index as usize])
    }

    pub fn tracks_remaining(&self) -> usize {
        self.order.len() - self.position
    }

    /// Granted skips inside the window ending at `now`, oldest first.
    fn skips_in_window(&self, now: Timestamp, policy: &PlayerPolicy) -> &[Timestamp] {
        let first_inside = self
            .skipped_at
            .partition_point(|at| now.saturating_duration_since(*at) >= policy.skip_window);
        &self.skipped_at[first_inside..]
    }

    /// Skips used in the current window (what the listener is shown).
    pub fn skips_used(&self, now: Timestamp, policy: &PlayerPolicy) -> usize {
        self.skips_in_window(now, policy).len()
    }
}

impl PlayerPolicy {
    /// Whether a new session fits beside the listener's other live ones.
    fn check_room(&self, others: Option<&[Timestamp]>, now: Timestamp) -> Result<(), PlayerError> {
        let live_others = others
            .unwrap_or_default()
            .iter()
            .filter(|touched| now.saturating_duration_since(**touched) < self.session_ttl)
            .count();
        if live_others >= self.max_sessions as usize {
            return Err(PlayerError::TooManySessions {
                limit: self.max_sessions,
                ttl: playhead_client::service::duration::format_duration(self.session_ttl),
            });
        }
        Ok(())
    }

    pub fn decide(
        &self,
        command: &PlayerCommand,
        state: &PlayerState,
        now: Timestamp,
    ) -> Result<Vec<PlayerEvent>, PlayerError> {
        let live = state.as_ref().filter(|session| session.is_live(now, self));
        match command {
            PlayerCommand::Start(start) => {
                validate_tracks(&start.tracks)?;
                if live.is_some() && !start.restart {
                    return Ok(vec![PlayerEvent::SessionResumed { at: now }]);
                }
                if live.is_none() {
                    self.check_room(start.other_sessions.as_deref(), now)?;
                }
                let seed = start
                    .seed
                    .unwrap_or_else(|| default_seed(&start.user_id, &start.playlist_id));
                let recent_skips = state
                    .as_ref()
                    .map(|previous| previous.skips_in_window(now, self).to_vec())
                    .unwrap_or_default();
                Ok(vec![PlayerEvent::SessionStarted {
                    tracks: start.tracks.clone(),
                    seed,
                    recent_skips,
                    at: now,
                }])
            }
            PlayerCommand::Next => {
                let session = live.ok_or(PlayerError::NoSession)?;
                Ok(advance(session, false, now))
            }
            PlayerCommand::Skip => {
                let session = live.ok_or(PlayerError::NoSession)?;
                if session.status == SessionStatus::Completed {
                    return Ok(Vec::new());
                }
                let limit = self.skip_limit as usize;
                let in_window = session.skips_in_window(now, self);
                if in_window.len() < limit {
                    return Ok(advance(session, true, now));
                }
                let retry_after = if limit == 0 {
                    // Skipping is disabled: no skip leaving the window frees a place.
                    self.skip_window
                } else {
                    // A place frees when the `limit`-th newest skip leaves the window.
                    in_window[in_window.len() - limit]
                        .saturating_add(self.skip_window)
                        .saturating_duration_since(now)
                };
                Ok(vec![PlayerEvent::SkipDenied {
                    retry_after,
                    at: now,
                }])
            }
        }
    }
}

pub fn validate_tracks(tracks: &[Track]) -> Result<(), PlayerError> {
    playhead_client::command::check_track_ids(tracks.iter().map(|track| track.track_id.as_str()))?;
    Ok(())
}

/// Moves past the current track; completes the session after the last one.
fn advance(session: &Session, skipped: bool, now: Timestamp) -> Vec<PlayerEvent> {
    let Some(current) = session.current_track() else {
        return Vec::new();
    };
    let mut events = vec![PlayerEvent::TrackAdvanced {
        track_id: current.track_id.clone(),
        skipped,
        at: now,
    }];
    if session.tracks_remaining() == 1 {
        events.push(PlayerEvent::SessionCompleted { at: now });
    }
    events
}

pub fn evolve(state: PlayerState, event: &PlayerEvent) -> PlayerState {
    match event {
        PlayerEvent::SessionStarted {
            tracks,
            seed,
            recent_skips,
            at,
        } => Some(Session {
            order: shuffled_order(tracks.len(), *seed),
            tracks: tracks.clone(),
            seed: *seed,
            position: 0,
            skipped_at: recent_skips.clone(),
            status: SessionStatus::Playing,
            started_at: *at,
            last_touched_at: *at,
        }),
        PlayerEvent::SessionResumed { at } | PlayerEvent::SkipDenied { at, .. } => {
            state.map(|session| Session {
                last_touched_at: *at,
                ..session
            })
        }
        PlayerEvent::TrackAdvanced { skipped, at, .. } => state.map(|mut session| {
            session.position = (session.position + 1).min(session.order.len());
            if *skipped {
                session.skipped_at.push(*at);
            }
            session.last_touched_at = *at;
            session
        }),
        PlayerEvent::SessionCompleted { at } => state.map(|session| Session {
            status: SessionStatus::Completed,
            last_touched_at: *at,
            ..session
        }),
    }
}

/// The seed when the listener gives none: stable per (user, playlist), different across
/// listeners, so one listener's order tells nothing about another's.
pub fn default_seed(user: &UserId, playlist: &PlaylistId) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = user
        .as_str()
        .bytes()
        .chain(std::iter::once(0x1f))
        .chain(playlist.as_str().bytes());
    bytes.fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Fisher–Yates over `0..len` driven by splitmix64: the same seed gives the same order on
/// every node and every replay.
pub fn shuffled_order(len: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..len).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

impl super::decider::Decider for PlayerPolicy {
    type Command = PlayerCommand;
    type Event = PlayerEvent;
    type State = PlayerState;
    type Error = PlayerError;

    fn initial() -> PlayerState {
        initial()
    }

    fn decide(
        &self,
        command: &PlayerCommand,
        state: &PlayerState,
        now: Timestamp,
    ) -> Result<Vec<PlayerEvent>, PlayerError> {
        PlayerPolicy::decide(self, command, state, now)
    }

    fn evolve(state: PlayerState, event: &PlayerEvent) -> PlayerState {
        evolve(state, event)
    }
}

#[cfg(test)]
#[path = "player_tests.rs"]
mod tests;
