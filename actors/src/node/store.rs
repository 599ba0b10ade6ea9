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
//! - **resume**: otherwise. When the last run did not stop cleanly the store may be behind the
//!   journal, so every entity checks its journal position when it loads (`Runtime::recovering`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use playhead_proto::subjects::EVENTS_STREAM;

use crate::config::NodeConfig;
use crate::storage::clock::SystemClock;
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

/// Opens sled; a store sled reports as corrupt is moved aside and an empty one opened.
pub fn open(config: &NodeConfig) -> anyhow::Result<Storage> {
    let dir = state_dir(config);
    match Storage::open(&dir, config, Arc::new(SystemClock)) {
        Ok(storage) => Ok(storage),
        Err(StorageError::Sled(sled::Error::Corruption { .. })) => {
            tracing::error!(store = %dir.display(), "the local store is corrupt; it is rebuilt from the journal");
            move_aside(&dir, "corrupt")?;
            Storage::open(&dir, config, Arc::new(SystemClock))
                .with_context(|| format!("cannot open storage under {}", dir.display()))
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot open storage under {}", dir.display()))
        }
    }
}

/// Whether the journal holds anything a store would have to fold.
pub async fn journal_has_events(jetstream: &jetstream::Context) -> anyhow::Result<bool> {
    let mut stream = jetstream
        .get_stream(EVENTS_STREAM)
        .await
        .context("cannot read the journal stream")?;
    let info = stream
        .info()
        .await
        .context("cannot read the journal stream")?;
    Ok(info.state.last_sequence > 0)
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
