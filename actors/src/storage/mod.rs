//! Local state in sled: rebuildable from JetStream, made durable before inbox messages are
//! acknowledged.
//!
//! - [`clock`]: the clock keyspaces read (injected, so tests do not sleep).
//! - [`dump`]: raw copies of selected trees to a checksummed stream and back (snapshots).
//! - [`keyspace`]: time-partitioned keyspaces: TTL expiry by dropping whole trees.
//! - [`station_store`]: station state and play history.
//! - [`session_store`]: player sessions (sliding TTL).
//! - [`catalog_store`]: content items and their tags.
//! - [`playout_store`]: each user's entitlements, concurrency slots and filed answers.
//! - [`view_history_store`]: viewing history and bookmarks (sliding TTL, capped per user).
//! - [`Durability`]: group commit, so concurrent partitions share one flush.

pub mod catalog_store;
pub mod clock;
pub mod dump;
pub mod keyspace;
pub mod playout_store;
pub mod session_store;
pub mod station_store;
pub mod view_history_store;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use self::catalog_store::CatalogStore;
use self::clock::Clock;
use self::keyspace::{CompactionReport, KeyspaceError};
use self::playout_store::PlayoutStore;
use self::session_store::SessionStore;
use self::station_store::StationStore;
use self::view_history_store::ViewHistoryStore;
use crate::config::NodeConfig;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "{} is locked by another process: is another playhead-node using this data dir?",
        path.display()
    )]
    InUse { path: std::path::PathBuf },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("keyspace: {0}")]
    Keyspace(#[from] KeyspaceError),
    #[error("stored {what} cannot be decoded: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// Everything the node keeps in sled.
#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
    pub stations: StationStore,
    pub sessions: SessionStore,
    pub catalog: CatalogStore,
    pub playouts: PlayoutStore,
    pub view_history: ViewHistoryStore,
    durability: Arc<Durability>,
}

impl Storage {
    pub fn open(
        directory: &Path,
        config: &NodeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(directory)
            .cache_capacity(config.storage.cache_mib * 1024 * 1024)
            .open()
            .map_err(|error| match error {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StorageError::InUse {
                        path: directory.to_owned(),
                    }
                }
                error => StorageError::Sled(error),
            })?;
        let stations = StationStore::open(&db, &config.station, clock.clone())?;
        let sessions = SessionStore::open(&db, &config.player, clock.clone())?;
        let catalog = CatalogStore::open(&db)?;
        let playouts = PlayoutStore::open(&db)?;
        let view_history = ViewHistoryStore::open(&db, &config.playout, clock)?;
        Ok(Self {
            durability: Arc::new(Durability::new(db.clone())),
            db,
            stations,
            sessions,
            catalog,
            playouts,
            view_history,
        })
    }

    /// Drops the expired buckets of every time-partitioned keyspace, naming each.
    pub fn compact(&self) -> Vec<(&'static str, Result<CompactionReport, StorageError>)> {
        vec![
            ("station_plays", self.stations.compact_history()),
            ("player_sessions", self.sessions.compact()),
            ("view_history", self.view_history.compact()),
        ]
    }

    /// Returns once every write made before the call is on disk. Concurrent callers share
    /// one flush (group commit).
    pub async fn make_durable(&self) -> Result<(), StorageError> {
        self.durability.make_durable().await
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Group commit over `sled::Db::flush_async`.
struct Durability {
    db: sled::Db,
    /// Incremented by every caller; a caller's writes precede its ticket.
    tickets: AtomicU64,
    /// Every ticket up to this value is durable.
    durable_through: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl Durability {
    fn new(db: sled::Db) -> Self {
        Self {
            db,
            tickets: AtomicU64::new(0),
            durable_through: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    async fn make_durable(&self) -> Result<(), StorageError> {
        let ticket = self.tickets.fetch_add(1, Ordering::AcqRel) + 1;
        let _flushing = self.flushing.lock().await;
        if self.durable_through.load(Ordering::Acquire) >= ticket {
            // A flush that started after our writes finished while we waited.
            return Ok(());
        }
        let covered = self.tickets.load(Ordering::Acquire);
        self.db.flush_async().await?;
        self.durable_through.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }
}
