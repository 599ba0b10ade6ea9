//! Compaction: `SessionStore::compact` dropping one bucket of N sessions, against removing
//! the same N keys one by one from the same keyspace of the same db (the baseline). Storage
//! alone, with a `ManualClock`.

use std::time::{Duration, Instant};

use playhead_actors::storage::keyspace::Expiry;
use playhead_actors::storage::session_store::session_key;
use playhead_tests::system::temp_dir;

use super::fixtures::{
    FilledStore, PREFILLED_TRACKS, SESSIONS_PER_SAVE, default_bucket_droppable_at, fill, mib,
    prefilled_ids,
};

pub(super) struct Compaction {
    pub(super) fill: Duration,
    size_full: u64,
    pub(super) drop: Duration,
    drop_flush: Duration,
    deletes: Duration,
    deletes_flush: Duration,
}

/// One bucket of `count` sessions dropped by compaction, then the same keys refilled into
/// the next bucket and removed one by one.
pub(super) fn compaction_vs_deletes(count: usize) -> anyhow::Result<Compaction> {
    let data = temp_dir();
    eprintln!("sessions: filling one bucket with {count} sessions…");
    let FilledStore {
        config,
        filled_at,
        clock,
        storage,
        session,
        took: filled,
    } = FilledStore::fill(&data.path().join("state"), count)?;
    let store = &storage.sessions;
    let size_full = storage.size_on_disk()?;

    clock.set(default_bucket_droppable_at(&config, filled_at));
    let started = Instant::now();
    let report = store.compact(&Expiry::whole())?;
    let drop = started.elapsed();
    let started = Instant::now();
    storage.flush()?;
    let drop_flush = started.elapsed();
    anyhow::ensure!(
        report.buckets_dropped == 1,
        "compaction dropped {} buckets, expected the one filled",
        report.buckets_dropped
    );

    eprintln!("sessions: refilling the same keys, then removing them one by one…");
    fill(store, "u", count, &session)?;
    storage.flush()?;
    let started = Instant::now();
    for n in 0..count {
        let (user, playlist) = prefilled_ids("u", n)?;
        let removed = store.keyspace().remove(&session_key(&user, &playlist))?;
        anyhow::ensure!(removed, "session {n} was not there to remove");
    }
    let deletes = started.elapsed();
    let started = Instant::now();
    storage.flush()?;
    Ok(Compaction {
        fill: filled,
        size_full,
        drop,
        drop_flush,
        deletes,
        deletes_flush: started.elapsed(),
    })
}

impl Compaction {
    pub(super) fn print(&self, sessions: usize) {
        let seconds = |duration: Duration| duration.as_secs_f64();
        println!();
        println!(
            "sessions: one bucket of {sessions} sessions ({PREFILLED_TRACKS} tracks each, {:.0} MiB on disk), daily buckets, 30-day TTL",
            mib(self.size_full)
        );
        println!(
            "  fill ({SESSIONS_PER_SAVE} sessions per save)        {:>8.2} s {:>10.0} sessions/s",
            seconds(self.fill),
            sessions as f64 / seconds(self.fill)
        );
        println!(
            "  compact(): drop the bucket            {:>8.3} s   (then flush {:.3} s)",
            seconds(self.drop),
            seconds(self.drop_flush)
        );
        println!(
            "  baseline: remove each key             {:>8.3} s   (then flush {:.3} s)",
            seconds(self.deletes),
            seconds(self.deletes_flush)
        );
        println!(
            "  ratio per-key deletes ÷ compaction {:.0} (with the flushes {:.0})",
            seconds(self.deletes) / seconds(self.drop),
            seconds(self.deletes + self.deletes_flush) / seconds(self.drop + self.drop_flush)
        );
    }
}
