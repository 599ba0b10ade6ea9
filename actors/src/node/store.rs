//! Opening the local store at start, and rebuilding it when it cannot be trusted.
//!
//! sled is a rebuildable copy of the journal's fold. At start the node decides:
//!
//! - **fresh**: no store and nothing in the journal: start empty;
//! - **rebuild**: no store (deleted, or moved aside because it was corrupt or `--rebuild` was
//!   asked) while the journal or a snapshot holds state: restore the latest snapshots, replay
//!   the journal after them, then serve — never empty state silently;
//! - **refuse**: the store folds another incarnation of `PLAYHEAD_EVENTS` (the stream was
//!   recreated): serving it would mix two histories, so the node stops and says how to rebuild;
//! - **stale → rebuild**: another node owned the groups since this store last ran, or the
//!   journal moved on after its clean stop: the store misses that work, so it is moved aside
//!   and rebuilt;
//! - **resume**: otherwise. When the last run did not stop cleanly the store may be behind the
//!   journal, so every entity checks its journal position when it loads (`Runtime::recovering`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::kv;
use async_nats::jetstream::object_store::ObjectStore;
use playhead_client::service::retry::{ConstantBuilder, Retryable};
use playhead_proto::subjects::{EVENTS_STREAM, EventFamily};

use super::snapshots;
use crate::config::NodeConfig;
use crate::domain::user::UserDecider;
use crate::runtime::kinds::catalog::{CatalogContext, ContentKind};
use crate::runtime::kinds::station::{StationContext, StationKind};
use crate::runtime::kinds::user::{UserContext, UserKind};
use crate::runtime::rebuild::{self, Replay, Replayer};
use crate::storage::clock::SystemClock;
use crate::storage::keyspace::KeyspaceError;
use crate::storage::{Storage, StorageError};

/// What the node found, and what it did about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    Fresh,
    Rebuilt,
    /// Resumed; `clean`: the last run stopped cleanly.
    Resumed {
        clean: bool,
    },
}

/// Where sled lives under the data dir.
pub fn state_dir(config: &NodeConfig) -> PathBuf {
    config.data_dir.join("state")
}

/// Moves the store aside (kept for inspection) so the next open starts empty.
pub fn move_aside(dir: &Path, why: &str) -> anyhow::Result<Option<PathBuf>> {
    if !dir.exists() {
        return Ok(None);
    }
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = dir.with_file_name(format!(
        "{}.{why}-{stamp}",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::rename(dir, &aside).with_context(|| {
        format!(
            "cannot move the store {} aside to {}",
            dir.display(),
            aside.display()
        )
    })?;
    tracing::warn!(from = %dir.display(), to = %aside.display(), why, "moved the local store aside; delete it once satisfied");
    Ok(Some(aside))
}

/// How long an open waits for a store this process just closed: sled's flusher thread lets go
/// of the file lock a moment after the last handle is dropped.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Opens sled; a store sled reports as corrupt, or of an earlier layout (bucket trees instead
/// of bucket dbs), is moved aside and an empty one opened (then rebuilt from the journal).
pub async fn open(config: &NodeConfig) -> anyhow::Result<Storage> {
    let dir = state_dir(config);
    let open = || retry_while_locked(|| Storage::open(&dir, config, Arc::new(SystemClock)));
    match open().await {
        Ok(storage) => Ok(storage),
        Err(StorageError::Sled(sled::Error::Corruption { .. })) => {
            tracing::error!(store = %dir.display(), "the local store is corrupt; it is rebuilt from the journal");
            move_aside(&dir, "corrupt")?;
            open()
                .await
                .with_context(|| format!("cannot open storage under {}", dir.display()))
        }
        Err(StorageError::Keyspace(KeyspaceError::PlacementChanged { name })) => {
            tracing::warn!(store = %dir.display(), keyspace = name, "the local store keeps its buckets as trees (an earlier layout); it is rebuilt from the journal");
            move_aside(&dir, "old-layout")?;
            open()
                .await
                .with_context(|| format!("cannot open storage under {}", dir.display()))
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot open storage under {}", dir.display()))
        }
    }
}

/// Opens the store at `dir` as it is (to restore snapshots into it).
pub async fn open_at(dir: &Path, config: &NodeConfig) -> anyhow::Result<Storage> {
    retry_while_locked(|| Storage::open(dir, config, Arc::new(SystemClock)))
        .await
        .with_context(|| format!("cannot open {}", dir.display()))
}

/// Retries `open` while the store is locked, for at most [`LOCK_RELEASE_WAIT`]: another
/// process would hold it longer, and then the error says so.
async fn retry_while_locked<T>(
    mut open: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    const EVERY: Duration = Duration::from_millis(50);
    let times = (LOCK_RELEASE_WAIT.as_millis() / EVERY.as_millis()) as usize;
    (|| std::future::ready(open()))
        .retry(
            ConstantBuilder::default()
                .with_delay(EVERY)
                .with_max_times(times),
        )
        .sleep(tokio::time::sleep)
        .when(|error| matches!(error, StorageError::InUse { .. }))
        .await
}

/// Whether the journal holds anything a store would have to fold.
pub async fn journal_has_events(jetstream: &jetstream::Context) -> anyhow::Result<bool> {
    Ok(journal_last_sequence(jetstream).await? > 0)
}

/// The journal's last sequence (0 while it is empty).
pub async fn journal_last_sequence(jetstream: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = jetstream
        .get_stream(EVENTS_STREAM)
        .await
        .context("cannot read the journal stream")?;
    let info = stream
        .info()
        .await
        .context("cannot read the journal stream")?;
    Ok(info.state.last_sequence)
}

/// The first sequence the journal still holds (1 if nothing expired yet).
pub async fn journal_first_sequence(jetstream: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = jetstream
        .get_stream(EVENTS_STREAM)
        .await
        .context("cannot read the journal stream")?;
    let info = stream
        .info()
        .await
        .context("cannot read the journal stream")?;
    Ok(info.state.first_sequence.max(1))
}

/// Refuses a store that folds another journal than `journal_identity`.
pub fn check_identity(storage: &Storage, journal_identity: &str) -> anyhow::Result<()> {
    let marks = storage.marks()?;
    match marks.journal_identity.as_deref() {
        Some(folded) if marks.initialized && folded != journal_identity => anyhow::bail!(
            "the local store folds another journal ({EVENTS_STREAM} created {folded}) than the \
             broker's ({EVENTS_STREAM} created {journal_identity}): the stream was recreated. \
             Start with --rebuild to rebuild the store from this broker's journal (the current \
             store is moved aside, not deleted)"
        ),
        _ => Ok(()),
    }
}

/// Every kind's shared context.
pub(super) struct Contexts {
    pub(super) station: Arc<StationContext>,
    pub(super) user: Arc<UserContext>,
    pub(super) content: Arc<CatalogContext>,
}

impl Contexts {
    fn new(config: &NodeConfig, storage: &Storage, now_playing: &kv::Store) -> Self {
        Self {
            station: Arc::new(StationContext {
                storage: storage.clone(),
                now_playing: now_playing.clone(),
                enrichment: std::sync::OnceLock::new(),
            }),
            user: Arc::new(UserContext {
                storage: storage.clone(),
                decider: UserDecider {
                    player: config.player_policy(),
                    playout: config.playout_policy(),
                },
            }),
            content: Arc::new(CatalogContext {
                storage: storage.clone(),
            }),
        }
    }
}

/// Opens the local store; an empty one is rebuilt from the latest snapshots and the journal
/// when they hold state, before anything is served.
pub(super) async fn prepare_store(
    config: &NodeConfig,
    jetstream: &jetstream::Context,
    bucket: &ObjectStore,
    journal_identity: &str,
    now_playing: &kv::Store,
    another_owner: bool,
) -> anyhow::Result<(Storage, Contexts, StoreState)> {
    let mut storage = open(config).await?;
    check_identity(&storage, journal_identity)?;
    let mut marks = storage.marks()?;
    if marks.initialized {
        // Another writer since this store stopped: it misses that work, whichever entities
        // it touched, so it is rebuilt (a redelivery would only bring back this node's own
        // unacknowledged messages).
        let journal_end = journal_last_sequence(jetstream).await?;
        // (A store stopped by a version that did not note the journal's end is trusted.)
        let moved_on = marks.stopped_cleanly
            && marks
                .journal_end_at_stop
                .is_some_and(|at_stop| at_stop != journal_end);
        if another_owner || moved_on {
            tracing::warn!(
                another_owner,
                journal_end_at_stop = ?marks.journal_end_at_stop,
                journal_end,
                "another node wrote the journal since this store last ran: rebuilding it"
            );
            drop(storage);
            move_aside(&state_dir(config), "stale")?;
            storage = open(config).await?;
            marks = storage.marks()?;
        }
    }
    if marks.initialized {
        let contexts = Contexts::new(config, &storage, now_playing);
        let state = StoreState::Resumed {
            clean: marks.stopped_cleanly,
        };
        return Ok((storage, contexts, state));
    }
    let has_snapshot = snapshots::any_snapshot(bucket).await?;
    if !has_snapshot && !journal_has_events(jetstream).await? {
        let contexts = Contexts::new(config, &storage, now_playing);
        return Ok((storage, contexts, StoreState::Fresh));
    }
    tracing::warn!(
        has_snapshot,
        "the local store is empty but the broker holds state: rebuilding"
    );
    let started = std::time::Instant::now();
    // Snapshots are raw sled trees: restore them into the store opened afresh, then reopen it.
    let covered = if has_snapshot {
        drop(storage);
        snapshots::restore_all(&state_dir(config), bucket, config).await?
    } else {
        drop(storage);
        snapshots::KINDS.iter().map(|kind| (*kind, None)).collect()
    };
    let storage = open(config).await?;
    let contexts = Contexts::new(config, &storage, now_playing);
    let covered_by = |name: &str| {
        covered
            .iter()
            .find(|(kind, _)| kind.name == name)
            .and_then(|(_, sequence)| *sequence)
            .unwrap_or(0)
    };
    let from = covered
        .iter()
        .map(|(_, sequence)| sequence.unwrap_or(0))
        .min()
        .unwrap_or(0)
        + 1;
    let first = journal_first_sequence(jetstream).await?;
    if first > from {
        anyhow::bail!(
            "the local store must be rebuilt from journal sequence {from}, but the journal now \
             starts at {first}: the events in between expired before a snapshot covered them \
             (journal.retention_secs must exceed twice journal.snapshot_interval_secs). \
             Restore the data directory from a backup"
        );
    }
    // One replayer thread for stations and content, two for users (the most events).
    let mut replayers: HashMap<EventFamily, Vec<Box<dyn Replay + Send>>> = HashMap::new();
    replayers.insert(
        EventFamily::Station,
        vec![Box::new(
            Replayer::<StationKind>::new(contexts.station.clone())
                .skipping_through(covered_by("station")),
        )],
    );
    replayers.insert(
        EventFamily::User,
        (0..2)
            .map(|_| {
                Box::new(
                    Replayer::<UserKind>::new(contexts.user.clone())
                        .skipping_through(covered_by("user")),
                ) as Box<dyn Replay + Send>
            })
            .collect(),
    );
    replayers.insert(
        EventFamily::Content,
        vec![Box::new(
            Replayer::<ContentKind>::new(contexts.content.clone())
                .skipping_through(covered_by("content")),
        )],
    );
    let report = rebuild::replay(jetstream, from, replayers).await?;
    storage.flush().context("cannot flush the rebuilt store")?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        replayed = report.events,
        "the local store is rebuilt"
    );
    Ok((storage, contexts, StoreState::Rebuilt))
}
