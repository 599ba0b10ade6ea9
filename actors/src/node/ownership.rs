//! Ownership of the inbox groups: a node processes a group only while it holds the group's
//! lease, a key in the broker's `PLAYHEAD_OWNERSHIP` bucket whose entries lapse after
//! `ingest.ownership_lease_secs` unless renewed.
//!
//! - At start the node takes the lease of every group (single-node: it owns them all) before it
//!   touches a consumer or its store. A group leased by another node makes it **stand by**: it
//!   says which node holds it and tries again until that lease lapses (the other node stopped
//!   or died), then starts as usual. Its store missed what the other node did, so it is
//!   rebuilt from the snapshots and the journal (`PLAYHEAD_LAST_OWNER` names the node that
//!   owned the groups last; a node that finds another one there rebuilds).
//! - While it runs the node renews its leases every third of the lease time. A lease that
//!   another node took, or that could not be renewed for a whole lease time, is fatal: the node
//!   stops (exit 1) rather than process a group it may no longer own.
//! - A clean stop releases the leases after intake has stopped, so a standby takes over at once.
//!
//! A node recognises its own leases by its node id (kept in the data dir), so a restart after a
//! crash does not wait for its own lease to lapse. The data dir itself is locked (`node.lock`),
//! so two processes never share one node id.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use nix::fcntl::{Flock, FlockArg};
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::ingest::group::GroupId;

pub use playhead_proto::subjects::OWNERSHIP_BUCKET;
use playhead_proto::subjects::{lease_holder, lease_node};

/// The bucket that remembers which node owned the groups last (no expiry): a node that finds
/// another one there knows its store missed that node's work.
pub const LAST_OWNER_BUCKET: &str = "PLAYHEAD_LAST_OWNER";
const LAST_OWNER_KEY: &str = "groups";

/// How often a standby reports who holds what it waits for.
const STANDBY_REPORT: Duration = Duration::from_secs(30);

/// The exclusive lock on a data dir, held for the life of the node.
pub struct DataDirLock {
    _lock: Flock<File>,
    /// This node's id (stable across restarts of the same data dir).
    pub node_id: String,
}

/// Locks `data_dir` for this process and reads (or creates) its node id.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = data_dir.join("node.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another playhead-node is using the data dir {} ({errno}); give each node its own \
             data dir",
            data_dir.display()
        )
    })?;
    let id_path = data_dir.join("node-id");
    let node_id = match std::fs::read_to_string(&id_path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => {
            let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
            let seed = format!("{nanos}:{}:{}", std::process::id(), data_dir.display());
            let id = format!(
                "node-{:08x}{:08x}",
                playhead_proto::partition::fnv1a_32(seed.as_bytes()),
                nanos as u32
            );
            std::fs::write(&id_path, &id)
                .with_context(|| format!("cannot write {}", id_path.display()))?;
            id
        }
    };
    Ok(DataDirLock {
        _lock: lock,
        node_id,
    })
}

/// The leases this node holds.
pub struct Ownership {
    bucket: kv::Store,
    holder: String,
    node_id: String,
    lease: Duration,
    /// Each owned group and the revision of its lease entry.
    held: Vec<(GroupId, u64)>,
    /// The node that owned the groups before this one took them (`None`: never recorded).
    pub previous_owner: Option<String>,
}

/// What a lease entry says about its holder ([`lease_holder`]).
fn holder_of(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

impl Ownership {
    /// Takes the lease of every group in `groups`, standing by while another node holds one.
    /// `None` when `stop` came first.
    pub async fn acquire(
        jetstream: &jetstream::Context,
        config: &NodeConfig,
        node_id: &str,
        groups: Vec<GroupId>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let lease = Duration::from_secs(config.ingest.ownership_lease_secs);
        let bucket = jetstream
            .create_or_update_key_value(kv::Config {
                bucket: OWNERSHIP_BUCKET.into(),
                description: "which playhead node owns which inbox group (leases)".into(),
                history: 1,
                max_age: lease,
                num_replicas: config.nats.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot set up the {OWNERSHIP_BUCKET} bucket"))?;
        let holder = lease_holder(node_id, std::process::id(), &config.data_dir);
        let mut ownership = Self {
            bucket,
            holder,
            node_id: node_id.to_owned(),
            lease,
            held: Vec::with_capacity(groups.len()),
            previous_owner: None,
        };
        let mut waiting = groups;
        let mut last_report: Option<tokio::time::Instant> = None;
        loop {
            let mut still_waiting = Vec::new();
            let mut held_elsewhere = Vec::new();
            for group in waiting {
                match ownership.take(group).await? {
                    Some(revision) => ownership.held.push((group, revision)),
                    None => {
                        let holder = ownership.holder_of(group).await;
                        held_elsewhere.push(format!("{group} by {holder}"));
                        still_waiting.push(group);
                    }
                }
            }
            if still_waiting.is_empty() {
                ownership.previous_owner = ownership.record_owner(jetstream, config).await?;
                tracing::info!(
                    node = %ownership.node_id,
                    groups = ownership.held.len(),
                    lease_secs = lease.as_secs(),
                    "this node owns every inbox group"
                );
                return Ok(Some(ownership));
            }
            if last_report.is_none_or(|at| at.elapsed() >= STANDBY_REPORT) {
                tracing::warn!(
                    node = %ownership.node_id,
                    waiting = still_waiting.len(),
                    held = ?held_elsewhere.iter().take(3).collect::<Vec<_>>(),
                    "standing by: another node owns inbox groups of this deployment; this node \
                     takes over once that node stops (or its lease lapses). Two nodes on one \
                     deployment are not scale-out yet: stop one, or give each its own broker"
                );
                last_report = Some(tokio::time::Instant::now());
            }
            waiting = still_waiting;
            tokio::select! {
                _ = stop.cancelled() => {
                    ownership.release().await;
                    return Ok(None);
                }
                _ = tokio::time::sleep(lease / 3) => {}
            }
        }
    }

    /// Notes this node as the groups' owner; returns the node noted before.
    async fn record_owner(
        &self,
        jetstream: &jetstream::Context,
        config: &NodeConfig,
    ) -> anyhow::Result<Option<String>> {
        let bucket = jetstream
            .create_or_update_key_value(kv::Config {
                bucket: LAST_OWNER_BUCKET.into(),
                description: "the playhead node that owned the inbox groups last".into(),
                history: 1,
                num_replicas: config.nats.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot set up the {LAST_OWNER_BUCKET} bucket"))?;
        let previous = bucket
            .get(LAST_OWNER_KEY)
            .await
            .with_context(|| format!("cannot read {LAST_OWNER_BUCKET}"))?
            .map(|value| lease_node(&holder_of(&value)).to_owned());
        bucket
            .put(LAST_OWNER_KEY, Bytes::from(self.holder.clone()))
            .await
            .with_context(|| format!("cannot write {LAST_OWNER_BUCKET}"))?;
        Ok(previous)
    }

    /// Whether another node owned the groups since this node last did: this node's store
    /// then misses that node's work.
    pub fn another_node_owned_since(&self) -> bool {
        self.previous_owner
            .as_deref()
            .is_some_and(|previous| previous != self.node_id)
    }

    /// The groups this node owns.
    pub fn groups(&self) -> Vec<GroupId> {
        self.held.iter().map(|(group, _)| *group).collect()
    }

    /// Takes `group`'s lease if it is free or already this node's; `None` if another node
    /// holds it.
    async fn take(&self, group: GroupId) -> anyhow::Result<Option<u64>> {
        let key = group.lease_key();
        let value = Bytes::from(self.holder.clone());
        match self.bucket.create(&key, value.clone()).await {
            Ok(revision) => return Ok(Some(revision)),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot take the lease of {group}"));
            }
        }
        let entry = self
            .bucket
            .entry(&key)
            .await
            .with_context(|| format!("cannot read the lease of {group}"))?;
        match entry {
            // Ours, from a run of this node that did not release it: take it back.
            Some(entry)
                if entry.operation == kv::Operation::Put
                    && lease_node(&holder_of(&entry.value)) == self.node_id =>
            {
                match self.bucket.update(&key, value, entry.revision).await {
                    Ok(revision) => Ok(Some(revision)),
                    Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        Ok(None)
                    }
                    Err(error) => {
                        Err(error).with_context(|| format!("cannot take the lease of {group}"))
                    }
                }
            }
            // Released or lapsed between the two calls: try again next round.
            _ => Ok(None),
        }
    }

    async fn holder_of(&self, group: GroupId) -> String {
        match self.bucket.entry(group.lease_key()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => holder_of(&entry.value),
            _ => "(released)".to_owned(),
        }
    }

    /// Renews every lease each third of the lease time until `stop`, then releases them.
    /// Returns an error when a lease was lost: the node must stop processing.
    pub async fn keep(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.release().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(self.lease / 3) => {}
            }
            match self.renew().await {
                Ok(()) => renewed_at = tokio::time::Instant::now(),
                Err(Renewal::Lost { group, holder }) => {
                    anyhow::bail!(
                        "lost the ownership of inbox group {group} to {holder}; stopping so \
                         that only one node processes it"
                    )
                }
                Err(Renewal::Unreachable(error)) => {
                    if renewed_at.elapsed() >= self.lease {
                        anyhow::bail!(
                            "could not renew the ownership leases for {} s ({error}); stopping \
                             so that only one node processes each group",
                            self.lease.as_secs()
                        );
                    }
                    tracing::warn!(%error, "cannot renew the ownership leases yet; retrying");
                }
            }
        }
    }

    async fn renew(&mut self) -> Result<(), Renewal> {
        let value = Bytes::from(self.holder.clone());
        for (group, revision) in &mut self.held {
            match self
                .bucket
                .update(group.lease_key(), value.clone(), *revision)
                .await
            {
                Ok(next) => *revision = next,
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let holder = match self.bucket.entry(group.lease_key()).await {
                        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                            holder_of(&entry.value)
                        }
                        _ => "nobody (the lease lapsed)".to_owned(),
                    };
                    return Err(Renewal::Lost {
                        group: *group,
                        holder,
                    });
                }
                Err(error) => return Err(Renewal::Unreachable(error.to_string())),
            }
        }
        Ok(())
    }

    /// Lets go of every lease (best effort: unreleased leases lapse).
    async fn release(&self) {
        for (group, revision) in &self.held {
            if let Err(error) = self
                .bucket
                .delete_expect_revision(group.lease_key(), Some(*revision))
                .await
            {
                tracing::warn!(%group, %error, "cannot release an ownership lease; it lapses");
            }
        }
        if !self.held.is_empty() {
            tracing::info!(groups = self.held.len(), "ownership leases released");
        }
    }
}

enum Renewal {
    Lost { group: GroupId, holder: String },
    Unreachable(String),
}
