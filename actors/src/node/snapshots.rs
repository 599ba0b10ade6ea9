//! Taking snapshots of every kind's folded state on an interval and an event count, and
//! restoring them when the store is rebuilt.
//!
//! A snapshot records the journal sequence `S` it covers: every event up to `S` is in the
//! records it copies. To make that true while the node runs, taking one first holds the
//! runtime's commit gate exclusively for a moment (no entity is between an append and its
//! local commit), reads the journal's last sequence, and lets go; the copy itself runs beside
//! the traffic. Records written during the copy may hold later events too: each record knows
//! the last inbox sequence folded into it, so replaying the journal after `S` skips what they
//! already hold.
//!
//! One snapshot per kind (group 0 holds every partition while one node owns them all).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, object_store::ObjectStore};
use playhead_proto::subjects::EVENTS_STREAM;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::journal::snapshot::{self, SnapshotMeta};
use crate::metrics::SnapshotLabel;
use crate::runtime::Runtime;
use crate::storage::{self, Storage};

/// The group a single node's snapshots cover: every partition.
pub const GROUP: u32 = 0;

/// A kind's snapshot name and the sled trees it copies.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotKind {
    pub name: &'static str,
    pub trees: &'static [&'static str],
}

pub const KINDS: [SnapshotKind; 4] = [
    SnapshotKind {
        name: "station",
        trees: storage::STATION_TREES,
    },
    SnapshotKind {
        name: "user",
        trees: storage::USER_TREES,
    },
    SnapshotKind {
        name: "content",
        trees: storage::CONTENT_TREES,
    },
    // Trees are copied in name order: `imports` (each import's progress) before `ks/shows`, so
    // a restored import never claims lines whose shows are missing (see `runtime::imports`).
    SnapshotKind {
        name: "imports",
        trees: storage::IMPORT_TREES,
    },
];

impl SnapshotKind {
    fn select(self) -> impl Fn(&[u8]) -> bool {
        move |tree: &[u8]| storage::owns_tree(self.trees, tree)
    }

    /// Takes this kind's snapshot of the whole store (the main db and every bucket db),
    /// recorded as covering journal sequence `covered`; `scratch` holds the dump meanwhile.
    pub async fn take(
        self,
        storage: &Storage,
        bucket: &ObjectStore,
        covered: u64,
        partitions: u32,
        taken_at_ms: u64,
        scratch: &Path,
    ) -> Result<SnapshotMeta, snapshot::SnapshotError> {
        snapshot::take(
            storage,
            self.select(),
            bucket,
            SnapshotMeta::new(self.name, GROUP, covered, partitions, taken_at_ms),
            scratch,
        )
        .await
    }
}

fn scratch_dir(config: &NodeConfig) -> PathBuf {
    config.data_dir.join("snapshots")
}

async fn journal_last_sequence(jetstream: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = jetstream
        .get_stream(EVENTS_STREAM)
        .await
        .context("cannot read the journal stream")?;
    Ok(stream
        .info()
        .await
        .context("cannot read the journal stream")?
        .state
        .last_sequence)
}

/// Takes a snapshot of every kind; returns the journal sequence they cover.
pub async fn take_all(
    storage: &Storage,
    runtime: &Runtime,
    jetstream: &jetstream::Context,
    bucket: &ObjectStore,
    config: &NodeConfig,
) -> anyhow::Result<u64> {
    let covered = {
        let _quiet = runtime.commit_gate.write().await;
        // Every commit so far has its main-db writes in the store (some wait for a bucket
        // flush): the snapshot read next holds at least what the journal had then.
        storage
            .make_durable()
            .await
            .context("cannot make the store durable before a snapshot")?;
        journal_last_sequence(jetstream).await?
    };
    let scratch = scratch_dir(config);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    for kind in KINDS {
        let started = Instant::now();
        let label = SnapshotLabel { kind: kind.name };
        let result = kind
            .take(
                storage,
                bucket,
                covered,
                config.ingest.partitions,
                (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64,
                &scratch,
            )
            .await;
        match result {
            Ok(meta) => {
                runtime
                    .metrics
                    .snapshot_seconds
                    .get_or_create(&label)
                    .observe(started.elapsed().as_secs_f64());
                runtime
                    .metrics
                    .snapshot_last_success
                    .get_or_create(&label)
                    .set(time::OffsetDateTime::now_utc().unix_timestamp());
                runtime
                    .metrics
                    .snapshot_journal_sequence
                    .get_or_create(&label)
                    .set(meta.journal_seq as i64);
            }
            Err(error) => {
                runtime
                    .metrics
                    .snapshot_failures
                    .get_or_create(&label)
                    .inc();
                return Err(error).with_context(|| format!("snapshot of the {} kind", kind.name));
            }
        }
    }
    Ok(covered)
}

/// Takes snapshots every `journal.snapshot_interval_secs`, or sooner once
/// `journal.snapshot_every_events` events were appended. A failed snapshot is logged, counted
/// and tried again at the next check; it never stops the node.
pub async fn snapshot_periodically(
    storage: Storage,
    runtime: Arc<Runtime>,
    jetstream: jetstream::Context,
    bucket: ObjectStore,
    config: Arc<NodeConfig>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs(config.journal.snapshot_interval_secs);
    let every_events = config.journal.snapshot_every_events;
    let check = interval.min(Duration::from_secs(5));
    let mut last = Instant::now();
    let mut appended_at_last = runtime.appended.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(check) => {}
        }
        let appended = runtime.appended.load(Ordering::Relaxed);
        let by_count =
            every_events > 0 && appended.saturating_sub(appended_at_last) >= every_events;
        if last.elapsed() < interval && !by_count {
            continue;
        }
        match take_all(&storage, &runtime, &jetstream, &bucket, &config).await {
            Ok(covered) => {
                tracing::info!(covered, "snapshots taken");
                last = Instant::now();
                appended_at_last = appended;
            }
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "snapshot failed; the journal must keep every event until one succeeds"
            ),
        }
    }
}

/// Restores the latest snapshot of every kind into the store at `state_dir` (which must not be
/// open), the kinds side by side; returns, per kind, the journal sequence its snapshot covers
/// (`None`: no snapshot).
pub async fn restore_all(
    state_dir: &Path,
    bucket: &ObjectStore,
    config: &NodeConfig,
) -> anyhow::Result<Vec<(SnapshotKind, Option<u64>)>> {
    let scratch = scratch_dir(config);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let storage = super::store::open_at(state_dir, config).await?;
    let restores = KINDS.iter().map(|kind| {
        let (storage, scratch) = (&storage, &scratch);
        async move {
            let restored = snapshot::restore(storage, bucket, kind.name, GROUP, scratch)
                .await
                .with_context(|| format!("cannot restore the {} snapshot", kind.name))?;
            if let Some(meta) = &restored {
                anyhow::ensure!(
                    meta.partitions == config.ingest.partitions,
                    "the {} snapshot was taken with {} partitions, this node runs {}; \
                     partitions are fixed per deployment",
                    kind.name,
                    meta.partitions,
                    config.ingest.partitions
                );
                tracing::info!(
                    kind = kind.name,
                    covers = meta.journal_seq,
                    entries = meta.entries,
                    "snapshot restored"
                );
            }
            Ok((*kind, restored.map(|meta| meta.journal_seq)))
        }
    });
    let covered = futures::future::try_join_all(restores).await?;
    storage.flush().context("cannot flush the restored store")?;
    Ok(covered)
}

/// Whether any kind has a snapshot.
pub async fn any_snapshot(bucket: &ObjectStore) -> anyhow::Result<bool> {
    for kind in KINDS {
        if snapshot::latest(bucket, kind.name, GROUP).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
