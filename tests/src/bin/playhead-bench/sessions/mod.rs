//! Player sessions (issue 3): the costs of the time-partitioned session keyspace.
//!
//! - compaction: `SessionStore::compact` dropping one bucket of N sessions, against removing
//!   the same N keys one by one from the same keyspace of the same db (the baseline);
//! - serving: `NextTrack` latency through the gateway in a window that contains the node's
//!   periodic compaction of a pre-filled N-session bucket, against an earlier window of the
//!   same load;
//! - own db: removing such a bucket as the node keeps it (a sled db of its own) and as it was
//!   kept before (a tree of the serving db), under a paced foreground of session reads, writes
//!   and flushes (storage alone);
//! - restart: from starting the node on a data dir holding N sessions until a `GetSession` of
//!   one of them answers (sessions load lazily: this is sled recovery and topology set-up);
//! - churn: `size_on_disk` after 60 simulated days of new and touched sessions with daily
//!   compaction, against after 30, at a roughly constant live set (and after 90, to see
//!   whether it levels off).
//!
//! Storage-level parts move a `ManualClock`. The serving part pre-fills the node's data dir
//! with the clock placed in a future bucket, chosen so the bucket becomes droppable at a
//! wall-clock instant T far enough ahead for the set-up and the baseline window.

mod churn;
mod compaction;
pub(crate) mod fixtures;
mod own_db;
mod restart;
mod serving;

use churn::Churn;
use compaction::Compaction;
use own_db::OwnDb;
use serving::Expiries;

pub struct Workload {
    /// Sessions in the bucket that is compacted (and persisted across the restart).
    pub sessions: usize,
    /// Foreground listeners driven with `NextTrack`.
    pub users: usize,
    /// Paced `NextTrack` requests per second over all workers (0: unpaced closed loop).
    pub rate: u64,
    pub concurrency: usize,
    pub partitions: u32,
    /// New sessions a simulated day, and as many touched ones.
    pub churn_per_day: usize,
    /// The node's `storage.expiry_removes_per_sec` (`None`: its default).
    pub expiry_removes_per_sec: Option<u64>,
    /// Times the expiry under load is measured, each with a bucket of its own (pooled).
    pub expiry_runs: usize,
}

pub struct Sessions {
    compaction: Compaction,
    own_db: OwnDb,
    serving: Expiries,
    churn: Churn,
}

pub async fn run(nats_url: &str, workload: &Workload) -> anyhow::Result<Sessions> {
    let sessions = workload.sessions;
    anyhow::ensure!(sessions > 0, "--sessions must be at least 1");
    let compaction =
        tokio::task::spawn_blocking(move || compaction::compaction_vs_deletes(sessions)).await??;
    let fill_rate = sessions as f64 / compaction.fill.as_secs_f64();
    let own_db = tokio::task::spawn_blocking(move || own_db::removals(sessions)).await??;
    let serving = Expiries::measure(nats_url, workload, fill_rate).await?;
    let per_day = workload.churn_per_day;
    let churn = tokio::task::spawn_blocking(move || churn::churn(per_day)).await??;
    Ok(Sessions {
        compaction,
        own_db,
        serving,
        churn,
    })
}

/// The figures the summary judges.
pub struct Figures {
    /// Seconds `compact()` took to drop the bucket, storage alone.
    pub compaction_idle: f64,
    /// Seconds the node's compaction took to drop it while serving, the slowest of the runs
    /// (`None`: not seen in one of them).
    pub compaction_serving: Option<f64>,
    /// `NextTrack` p99 in the compaction windows ÷ in the baseline windows (runs pooled).
    pub p99_ratio: f64,
    /// Seconds closing and deleting the bucket kept as a sled db of its own took.
    pub own_db_removal: f64,
    /// Foreground p99 (storage alone) while that db was removed ÷ just before.
    pub own_db_p99_ratio: f64,
    /// The same while the bucket, a tree of the foreground's db, was dropped.
    pub same_db_p99_ratio: f64,
    /// Seconds from restart until a pre-filled session was served.
    pub restart: f64,
    /// Bytes on disk after 60 days ÷ after 30 (reported).
    pub disk_ratio: f64,
    /// Bytes on disk after 90 days ÷ after 60: about 1 when disk use is bounded.
    pub disk_ratio_later: f64,
}

impl Sessions {
    pub fn report(&self, workload: &Workload) -> Figures {
        self.compaction.print(workload.sessions);
        self.own_db.print(workload.sessions);
        self.serving.starts().print(workload);
        let compaction_serving = self.serving.print_load(workload);
        let (disk_ratio, disk_ratio_later) = self.churn.print(workload.churn_per_day);
        Figures {
            compaction_idle: self.compaction.drop.as_secs_f64(),
            compaction_serving,
            p99_ratio: self.serving.p99_ratio(),
            own_db_removal: self.own_db.own_db.took.as_secs_f64(),
            own_db_p99_ratio: self.own_db.own_db.p99_ratio(),
            same_db_p99_ratio: self.own_db.same_db.p99_ratio(),
            restart: self.serving.starts().restart.answered.as_secs_f64(),
            disk_ratio,
            disk_ratio_later,
        }
    }
}
