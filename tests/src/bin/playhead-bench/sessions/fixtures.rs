//! The sessions every part fills its keyspace with, and the bucket arithmetic they share.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use playhead_actors::config::NodeConfig;
use playhead_actors::domain::player::{PlayerEvent, Track, evolve};
use playhead_actors::domain::time::Timestamp;
use playhead_actors::storage::Storage;
use playhead_actors::storage::clock::ManualClock;
use playhead_actors::storage::session_store::{LastAnswer, SessionStore, StoredSession};
use playhead_proto::ids::{PlaylistId, UserId};

pub(crate) const DAY_MS: u64 = 24 * 3600 * 1000;
/// An arbitrary fixed day, so storage-level runs are identical from one run to the next.
pub(crate) const EPOCH_DAY: u64 = 20_000;
/// Sessions saved per call (one user's batch) when filling a bucket.
pub(crate) const SESSIONS_PER_SAVE: usize = 1_000;
/// Tracks of each pre-filled session (sets the record size, ~200 bytes).
pub(crate) const PREFILLED_TRACKS: usize = 10;

/// When compaction may drop bucket `index` (expired for one more bucket width).
pub(crate) fn droppable_at(index: u64, width: u64, ttl: u64) -> u64 {
    (index + 2) * width + ttl
}

/// When the default session bucket holding `filled_at_ms` may be dropped.
pub(crate) fn default_bucket_droppable_at(config: &NodeConfig, filled_at_ms: u64) -> u64 {
    let width = config.player.session_bucket_secs * 1000;
    let ttl = config.player.session_ttl_secs * 1000;
    droppable_at(filled_at_ms / width, width, ttl)
}

/// A store with the default configuration whose clock stands at [`EPOCH_DAY`], holding one
/// bucket of [`prefilled_ids`] sessions ("u" users), flushed.
pub(crate) struct FilledStore {
    pub(crate) config: NodeConfig,
    pub(crate) filled_at: u64,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) storage: Storage,
    /// The session every one of them holds.
    pub(crate) session: StoredSession,
    /// How long filling took.
    pub(crate) took: Duration,
}

impl FilledStore {
    pub(crate) fn fill(dir: &Path, count: usize) -> anyhow::Result<Self> {
        let config = NodeConfig::default();
        let filled_at = EPOCH_DAY * DAY_MS;
        let clock = Arc::new(ManualClock::new(filled_at));
        let storage = Storage::open(dir, &config, clock.clone())?;
        let session = stored_session(PREFILLED_TRACKS, filled_at);
        let took = fill(&storage.sessions, "u", count, &session)?;
        storage.flush()?;
        Ok(Self {
            config,
            filled_at,
            clock,
            storage,
            session,
            took,
        })
    }
}

/// A playing session of `tracks` tracks, started (and touched) at `at_ms`.
pub(crate) fn stored_session(tracks: usize, at_ms: u64) -> StoredSession {
    let tracks = (0..tracks)
        .map(|n| Track {
            track_id: format!("t{n:02}"),
            artist: format!("artist {}", n % 5),
        })
        .collect();
    let started = PlayerEvent::SessionStarted {
        tracks,
        seed: 7,
        recent_skips: Vec::new(),
        at: Timestamp::from_millis(at_ms),
    };
    StoredSession {
        session: evolve(None, &started).expect("a started session"),
        last_applied_seq: 1,
        last_answer: LastAnswer::default(),
    }
}

/// The `n`th filled session: user `{prefix}{n / 1000}`, playlist `pl{n % 1000}`.
pub(crate) fn prefilled_ids(prefix: &str, n: usize) -> anyhow::Result<(UserId, PlaylistId)> {
    spread_ids(prefix, n, SESSIONS_PER_SAVE)
}

/// The `n`th session filled with `per_user` sessions a user: user `{prefix}{n / per_user}`,
/// playlist `pl{n % per_user}`.
pub(crate) fn spread_ids(
    prefix: &str,
    n: usize,
    per_user: usize,
) -> anyhow::Result<(UserId, PlaylistId)> {
    Ok((
        UserId::parse(format!("{prefix}{:07}", n / per_user))?,
        PlaylistId::parse(format!("pl{:04}", n % per_user))?,
    ))
}

/// Saves `count` copies of `session` under the ids of [`prefilled_ids`], one batch per user,
/// reporting progress on stderr; returns the time it took.
pub(crate) fn fill(
    store: &SessionStore,
    prefix: &str,
    count: usize,
    session: &StoredSession,
) -> anyhow::Result<Duration> {
    fill_spread(store, (prefix, SESSIONS_PER_SAVE), count, session)
}

/// [`fill`] with `per_user` sessions a user (the ids of [`spread_ids`]).
pub(crate) fn fill_spread(
    store: &SessionStore,
    (prefix, per_user): (&str, usize),
    count: usize,
    session: &StoredSession,
) -> anyhow::Result<Duration> {
    anyhow::ensure!(per_user > 0, "at least one session a user");
    let playlists = (0..per_user.min(count))
        .map(|n| Ok(spread_ids(prefix, n, per_user)?.1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let step = (count / 10).max(1);
    let mut saved = 0;
    while saved < count {
        let (user, _) = spread_ids(prefix, saved, per_user)?;
        let in_batch = (count - saved).min(per_user);
        let batch: Vec<_> = playlists[..in_batch]
            .iter()
            .map(|playlist| (playlist, session))
            .collect();
        store.save(&user, &batch)?;
        if (saved + in_batch) / step > saved / step {
            eprintln!(
                "  {} of {count} sessions saved ({:.0}/s)",
                saved + in_batch,
                (saved + in_batch) as f64 / started.elapsed().as_secs_f64()
            );
        }
        saved += in_batch;
    }
    Ok(started.elapsed())
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
