//! Expiry with a sled db per bucket (issue 10, item 4, decided by measurement): what removing
//! an expired bucket of N sessions costs a foreground that reads, writes and flushes sessions
//! meanwhile,
//! as the node keeps them (the store's session buckets are sled dbs of their own: closed, then
//! deleted) and as they were kept before (a tree of the serving db, `drop_tree`'d whole).
//! Storage alone, the foreground on a thread of its own, paced; the two one after the other,
//! each with a window of the same load just before its removal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use playhead_actors::storage::clock::{Clock, ManualClock};
use playhead_actors::storage::keyspace::{Expiry, Placement};
use playhead_actors::storage::session_store::SessionStore;
use playhead_tests::system::temp_dir;

use super::fixtures::{
    FilledStore, PREFILLED_TRACKS, default_bucket_droppable_at, fill, prefilled_ids, stored_session,
};
use crate::common::latency_histogram;

/// Foreground operations a second (each a session read, written back and flushed).
const FOREGROUND_RATE: u64 = 2_000;
/// Sessions the foreground cycles through.
const FOREGROUND_SESSIONS: usize = 300;
/// Length of each window (before, during).
const WINDOW: Duration = Duration::from_secs(3);

/// One removal: how long it took and the foreground's latencies (µs) around it.
pub(super) struct Removal {
    pub(super) took: Duration,
    before: Histogram<u64>,
    during: Histogram<u64>,
}

pub(super) struct OwnDb {
    pub(super) same_db: Removal,
    pub(super) own_db: Removal,
}

impl Removal {
    /// Foreground p99 during the removal ÷ just before.
    pub(super) fn p99_ratio(&self) -> f64 {
        self.during.value_at_quantile(0.99) as f64
            / self.before.value_at_quantile(0.99).max(1) as f64
    }
}

/// Fills a bucket of `count` sessions in the node's store (a bucket db) and `count` in a tree
/// of a plain serving db, then removes each under the paced foreground on its own store.
pub(super) fn removals(count: usize) -> anyhow::Result<OwnDb> {
    let data = temp_dir();
    eprintln!("sessions: filling a bucket of {count} sessions in the node's store (a bucket db)…");
    let FilledStore {
        config,
        filled_at,
        clock,
        storage,
        session,
        ..
    } = FilledStore::fill(&data.path().join("store"), count)?;
    clock.set(default_bucket_droppable_at(&config, filled_at));
    let own_db = removal_under_foreground(&storage.sessions, clock.now_millis(), || {
        Ok(storage.sessions.compact(&Expiry::whole())?.buckets_dropped)
    })?;
    drop(storage);

    eprintln!("sessions: filling the same {count} sessions into a tree of a serving db…");
    let serving_db = sled::Config::new()
        .path(data.path().join("trees"))
        .cache_capacity(config.storage.cache_mib * 1024 * 1024)
        .open()?;
    let clock = Arc::new(ManualClock::new(filled_at));
    let trees = SessionStore::open(&serving_db, &config.player, clock.clone(), Placement::Trees)?;
    fill(&trees, "u", count, &session)?;
    serving_db.flush()?;
    clock.set(default_bucket_droppable_at(&config, filled_at));
    let same_db = removal_under_foreground(&trees, clock.now_millis(), || {
        Ok(trees.compact(&Expiry::whole())?.buckets_dropped)
    })?;
    Ok(OwnDb { same_db, own_db })
}

/// Runs the paced foreground on `store` (its sessions in the bucket of `now_ms`, live
/// throughout) for a window, calls `remove` (which must remove exactly one bucket), and
/// runs it a window more.
fn removal_under_foreground(
    store: &SessionStore,
    now_ms: u64,
    remove: impl FnOnce() -> anyhow::Result<usize>,
) -> anyhow::Result<Removal> {
    let foreground_session = stored_session(PREFILLED_TRACKS, now_ms);
    fill(store, "fg", FOREGROUND_SESSIONS, &foreground_session)?;
    eprintln!(
        "sessions: removing the bucket under a foreground of {FOREGROUND_RATE} session reads + writes + flushes/s…"
    );
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<Removal> {
        let load = scope.spawn(|| foreground(store, started, &stop));
        let at = |offset: Duration| {
            let wait = (started + offset).saturating_duration_since(Instant::now());
            std::thread::sleep(wait);
        };
        let result = (|| {
            at(WINDOW);
            let removing = Instant::now();
            let dropped = remove()?;
            let took = removing.elapsed();
            anyhow::ensure!(
                dropped == 1,
                "compaction removed {dropped} buckets, expected the one filled"
            );
            at(WINDOW * 2);
            Ok(took)
        })();
        stop.store(true, Ordering::Relaxed);
        let samples = load
            .join()
            .map_err(|_| anyhow::anyhow!("the foreground thread panicked"))??;
        let took = result?;
        let window = |from: Duration| {
            let mut histogram = latency_histogram();
            for (at, micros) in &samples {
                if *at >= from && *at < from + WINDOW {
                    histogram.saturating_record(*micros);
                }
            }
            histogram
        };
        Ok(Removal {
            took,
            before: window(Duration::ZERO),
            during: window(WINDOW),
        })
    })
}

/// Reads, writes back and flushes the foreground sessions in turn at [`FOREGROUND_RATE`]
/// until `stop`; returns (when it started, its latency in µs) for each operation.
fn foreground(
    store: &SessionStore,
    started: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<(Duration, u64)>> {
    let every = Duration::from_nanos(1_000_000_000 / FOREGROUND_RATE);
    let ids = (0..FOREGROUND_SESSIONS)
        .map(|n| prefilled_ids("fg", n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut samples = Vec::new();
    let mut next = started;
    for (user, playlist) in ids.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Open loop: a late operation is timed from when it was due.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let session = store
            .load(user, playlist)?
            .ok_or_else(|| anyhow::anyhow!("foreground session {user}/{playlist} is missing"))?;
        store.save(user, &[(playlist, &session)])?;
        // Made durable, as the node does before it answers.
        store.keyspace().flush()?;
        let done = Instant::now();
        samples.push((
            next.duration_since(started),
            done.duration_since(next).as_micros() as u64,
        ));
        next += every;
    }
    Ok(samples)
}

impl OwnDb {
    pub(super) fn print(&self, sessions: usize) {
        println!();
        println!(
            "sessions: removing an expired bucket of {sessions} sessions under a foreground of {FOREGROUND_RATE} session reads + writes + flushes/s (storage alone, {FOREGROUND_SESSIONS} sessions, windows of {} s)",
            WINDOW.as_secs()
        );
        for (what, removal) in [
            ("a bucket db (as built), deleted", &self.own_db),
            ("a tree of the serving db, dropped", &self.same_db),
        ] {
            println!(
                "  {what:<38} in {:.3} s; foreground before: p50 {} µs p99 {} µs max {} µs ({} ops); during: p50 {} µs p99 {} µs max {} µs ({} ops); p99 ratio {:.2}",
                removal.took.as_secs_f64(),
                removal.before.value_at_quantile(0.50),
                removal.before.value_at_quantile(0.99),
                removal.before.max(),
                removal.before.len(),
                removal.during.value_at_quantile(0.50),
                removal.during.value_at_quantile(0.99),
                removal.during.max(),
                removal.during.len(),
                removal.p99_ratio()
            );
        }
    }
}
