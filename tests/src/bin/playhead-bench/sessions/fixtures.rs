//! The sessions every part fills its keyspace with, and the bucket arithmetic they share.

use std::time::{Duration, Instant};

use playhead_actors::domain::player::{PlayerEvent, Track, evolve};
use playhead_actors::domain::time::Timestamp;
use playhead_actors::storage::session_store::{LastAnswer, SessionStore, StoredSession};
use playhead_proto::ids::{PlaylistId, UserId};

pub(super) const DAY_MS: u64 = 24 * 3600 * 1000;
/// An arbitrary fixed day, so storage-level runs are identical from one run to the next.
pub(super) const EPOCH_DAY: u64 = 20_000;
/// Sessions saved per call (one user's batch) when filling a bucket.
pub(super) const SESSIONS_PER_SAVE: usize = 1_000;
/// Tracks of each pre-filled session (sets the record size, ~200 bytes).
pub(super) const PREFILLED_TRACKS: usize = 10;

/// When compaction may drop bucket `index` (expired for one more bucket width).
pub(super) fn droppable_at(index: u64, width: u64, ttl: u64) -> u64 {
    (index + 2) * width + ttl
}

/// A playing session of `tracks` tracks, started (and touched) at `at_ms`.
pub(super) fn stored_session(tracks: usize, at_ms: u64) -> StoredSession {
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
pub(super) fn prefilled_ids(prefix: &str, n: usize) -> anyhow::Result<(UserId, PlaylistId)> {
    Ok((
        UserId::parse(format!("{prefix}{:07}", n / SESSIONS_PER_SAVE))?,
        PlaylistId::parse(format!("pl{:04}", n % SESSIONS_PER_SAVE))?,
    ))
}

/// Saves `count` copies of `session` under the ids of [`prefilled_ids`], one batch per user,
/// reporting progress on stderr; returns the time it took.
pub(super) fn fill(
    store: &SessionStore,
    prefix: &str,
    count: usize,
    session: &StoredSession,
) -> anyhow::Result<Duration> {
    let playlists = (0..SESSIONS_PER_SAVE.min(count))
        .map(|n| Ok(prefilled_ids(prefix, n)?.1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let step = (count / 10).max(1);
    let mut saved = 0;
    while saved < count {
        let (user, _) = prefilled_ids(prefix, saved)?;
        let in_batch = (count - saved).min(SESSIONS_PER_SAVE);
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

pub(super) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
