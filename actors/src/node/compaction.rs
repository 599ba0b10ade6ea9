//! Dropping expired time buckets of every keyspace on an interval, off the async workers.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{KeyspaceLabel, NodeMetrics};
use crate::storage::Storage;
use crate::storage::keyspace::Expiry;

pub(super) async fn compact_periodically(
    storage: Storage,
    metrics: Arc<NodeMetrics>,
    every: Duration,
    removes_per_sec: u64,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let expiry = Arc::new(Expiry::paced(removes_per_sec, stop.clone()));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let (storage, expiry) = (storage.clone(), expiry.clone());
        // Emptying and dropping trees is blocking IO; keep it off the async workers.
        let reports = tokio::task::spawn_blocking(move || storage.compact(&expiry)).await?;
        for (keyspace, result) in reports {
            let label = KeyspaceLabel { keyspace };
            match result {
                Ok(report) => {
                    metrics
                        .keyspace_buckets
                        .get_or_create(&label)
                        .set(report.buckets_remaining as i64);
                    metrics
                        .keyspace_buckets_dropped
                        .get_or_create(&label)
                        .inc_by(report.buckets_dropped as u64);
                    metrics
                        .keyspace_compaction_seconds
                        .get_or_create(&label)
                        .observe(report.elapsed.as_secs_f64());
                }
                Err(error) => {
                    metrics
                        .keyspace_compaction_failures
                        .get_or_create(&label)
                        .inc();
                    tracing::warn!(keyspace, %error, "keyspace compaction failed");
                }
            }
        }
    }
}
