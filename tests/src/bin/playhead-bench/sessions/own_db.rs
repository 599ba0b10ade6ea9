//! Expiry with a sled db per bucket (issue 10, item 4, decided by measurement): what removing
//! an expired bucket of N sessions costs a foreground that reads and writes sessions meanwhile,
//! when the bucket is a tree of the foreground's db (`compact()` dropping it, the whole drop)
//! and when it is a db of its own (closed, then its directory deleted). Storage alone, the
//! foreground on a thread of its own, paced; both removals in the same run, one after the
//! other (the db first: the drop's aftermath outlasts its window), each with a window of the
//! same load just before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use playhead_actors::storage::Storage;
use playhead_actors::storage::clock::{Clock, ManualClock};
use playhead_actors::storage::keyspace::Expiry;
use playhead_actors::storage::session_store::SessionStore;
use playhead_tests::system::temp_dir;

use super::fixtures::{
    FilledStore, PREFILLED_TRACKS, default_bucket_droppable_at, fill, prefilled_ids, stored_session,
};
use crate::common::latency_histogram;

/// Foreground operations a second (each a session read then written back).
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

/// Fills a bucket of `count` sessions in the foreground's db and `count` in a db of their
/// own, then removes each under the paced foreground.
pub(super) fn removals(count: usize) -> anyhow::Result<OwnDb> {
    let data = temp_dir();
    eprintln!("sessions: filling a bucket of {count} sessions in the serving db…");
    let FilledStore {
        config,
        filled_at,
        clock,
        storage,
        session,
        ..
    } = FilledStore::fill(&data.path().join("main"), count)?;

    // A bare sled db holding only the bucket: dropping the last handle closes it here.
    let own_dir = data.path().join("bucket");
    let bucket_db = sled::Config::new().path(&own_dir).open()?;
    let bucket = SessionStore::open(
        &bucket_db,
        &config.player,
        Arc::new(ManualClock::new(filled_at)),
    )?;
    eprintln!("sessions: filling the same {count} sessions into a db of their own…");
    fill(&bucket, "u", count, &session)?;
    bucket_db.flush()?;

    // The foreground's sessions live in a later bucket, which stays live throughout.
    clock.set(default_bucket_droppable_at(&config, filled_at));
    let foreground_session = stored_session(PREFILLED_TRACKS, clock.now_millis());
    fill(
        &storage.sessions,
        "fg",
        FOREGROUND_SESSIONS,
        &foreground_session,
    )?;

    eprintln!(
        "sessions: removing each bucket under a foreground of {FOREGROUND_RATE} session reads + writes/s…"
    );
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<OwnDb> {
        let load = scope.spawn(|| foreground(&storage, started, &stop));
        let at = |offset: Duration| {
            let wait = (started + offset).saturating_duration_since(Instant::now());
            std::thread::sleep(wait);
        };
        let result = (|| {
            // The bucket as a db of its own: closed (sled flushes and stops its threads),
            // then its files deleted.
            at(WINDOW);
            let removing = Instant::now();
            drop(bucket);
            drop(bucket_db);
            std::fs::remove_dir_all(&own_dir)?;
            let own_took = removing.elapsed();
            // The whole drop of a tree of the serving db (what compaction does at most).
            at(WINDOW * 3);
            let removing = Instant::now();
            let report = storage.sessions.compact(&Expiry::whole())?;
            let same_took = removing.elapsed();
            anyhow::ensure!(
                report.buckets_dropped == 1,
                "compaction dropped {} buckets, expected the one filled",
                report.buckets_dropped
            );
            at(WINDOW * 4);
            Ok((same_took, own_took))
        })();
        stop.store(true, Ordering::Relaxed);
        let samples = load
            .join()
            .map_err(|_| anyhow::anyhow!("the foreground thread panicked"))??;
        let (same_took, own_took) = result?;
        let window = |from: Duration| {
            let mut histogram = latency_histogram();
            for (at, micros) in &samples {
                if *at >= from && *at < from + WINDOW {
                    histogram.saturating_record(*micros);
                }
            }
            histogram
        };
        Ok(OwnDb {
            own_db: Removal {
                took: own_took,
                before: window(Duration::ZERO),
                during: window(WINDOW),
            },
            same_db: Removal {
                took: same_took,
                before: window(WINDOW * 2),
                during: window(WINDOW * 3),
            },
        })
    })
}

/// Reads and writes back the foreground sessions in turn at [`FOREGROUND_RATE`] until
/// `stop`; returns (when it started, its latency in µs) for each operation.
fn foreground(
    storage: &Storage,
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
        let session = storage
            .sessions
            .load(user, playlist)?
            .ok_or_else(|| anyhow::anyhow!("foreground session {user}/{playlist} is missing"))?;
        storage.sessions.save(user, &[(playlist, &session)])?;
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
            "sessions: removing an expired bucket of {sessions} sessions under a foreground of {FOREGROUND_RATE} session reads + writes/s (storage alone, {FOREGROUND_SESSIONS} sessions, windows of {} s)",
            WINDOW.as_secs()
        );
        for (what, removal) in [
            ("a db of its own, closed and deleted", &self.own_db),
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
