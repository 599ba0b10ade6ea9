//! Local state in sled: rebuildable from JetStream, made durable before inbox messages are
//! acknowledged.
//!
//! - [`clock`]: the clock keyspaces read (injected, so tests do not sleep).
//! - [`dump`]: raw copies of selected trees to a checksummed stream and back (snapshots).
//! - [`keyspace`]: time-partitioned keyspaces: TTL expiry by dropping whole buckets (a tree of
//!   the main db, or a sled db of its own).
//! - [`station_store`]: station state and play history.
//! - [`enrichment_store`]: the enrichment cache (what the provider answered per distinct song).
//! - [`session_store`]: player sessions (sliding TTL).
//! - [`catalog_store`]: content items and their tags.
//! - [`playout_store`]: each user's entitlements, concurrency slots and filed answers.
//! - [`view_history_store`]: viewing history and bookmarks (sliding TTL, capped per user).
//! - [`user_meta_store`]: where each user entity stands (inbox and journal sequences).
//! - [`import_store`]: imports (state, progress, line errors) and each source's journal position.
//! - [`show_store`]: upcoming shows, dated by their start (they leave with their bucket).
//! - `durability`: group commit, so concurrent partitions share one flush (bucket dbs first,
//!   then the main db), and main-db writes that wait for the bucket dbs ([`MainWrites`]).

pub mod answer_store;
pub mod catalog_store;
pub mod clock;
pub mod dump;
mod durability;
pub mod enrichment_store;
pub mod import_store;
pub mod keyspace;
pub mod playout_store;
pub mod session_store;
pub mod show_store;
pub mod station_store;
pub mod user_meta_store;
pub mod view_history_store;

use std::path::Path;
use std::sync::Arc;

use self::answer_store::AnswerStore;
use self::catalog_store::CatalogStore;
use self::clock::Clock;
use self::dump::SLED_DEFAULT_TREE;
use self::durability::Durability;
pub use self::durability::{MainWrites, Owner};
use self::enrichment_store::EnrichmentStore;
use self::import_store::ImportStore;
use self::keyspace::{BucketDbs, CompactionReport, Expiry, KeyspaceError, Placement, TimeKeyspace};
use self::playout_store::PlayoutStore;
use self::session_store::SessionStore;
use self::show_store::ShowStore;
use self::station_store::StationStore;
use self::user_meta_store::UserMetaStore;
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
    #[error("sled flush failed: {0}")]
    Flush(String),
}

/// Opens the db at `config`'s path again in a test. sled's flusher thread lets go of the
/// previous handle's file lock a moment after the drop, so a lock conflict is retried briefly.
#[cfg(test)]
pub(crate) fn reopen_db(config: &sled::Config) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            Ok(db) => return db,
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("reopening the db: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use crate::storage::clock::ManualClock;

    /// Every tree the store creates belongs to exactly one kind's snapshot (or is the node's
    /// own bookkeeping), so a snapshot never misses a record nor copies one twice.
    #[test]
    fn every_tree_belongs_to_one_kind() {
        let directory = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_millis(1_000_000).as_millis(),
        ));
        let storage = Storage::open(directory.path(), &NodeConfig::default(), clock).unwrap();
        // A bucket db of each bucketed keyspace exists, and is listed under its bucket name.
        for keyspace in &storage.bucketed {
            keyspace.insert(b"key", b"value").unwrap();
        }
        let names = storage.tree_names();
        assert!(
            names
                .iter()
                .any(|name| name.starts_with(b"ks/player_sessions/0")),
            "{names:?}"
        );
        for tree in names {
            if owns_tree(NODE_TREES, &tree) {
                continue;
            }
            let owners = [STATION_TREES, USER_TREES, CONTENT_TREES, IMPORT_TREES]
                .iter()
                .filter(|trees| owns_tree(trees, &tree))
                .count();
            assert_eq!(owners, 1, "{}", String::from_utf8_lossy(&tree));
        }
        assert!(owns_tree(
            USER_TREES,
            b"ks/player_sessions/00000000000000000007"
        ));
        assert!(!owns_tree(USER_TREES, b"ks/player_sessions_v2/meta"));
    }

    #[test]
    fn the_size_on_disk_counts_the_bucket_dbs() {
        let directory = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let storage = Storage::open(directory.path(), &NodeConfig::default(), clock).unwrap();
        storage.flush().unwrap();
        let before = storage.size_on_disk().unwrap();

        let sessions = storage.sessions.keyspace();
        for n in 0..1_000u32 {
            sessions.insert(&n.to_be_bytes(), &[7u8; 1_024]).unwrap();
        }
        storage.flush().unwrap();

        assert!(
            storage.size_on_disk().unwrap() >= before + 1_000 * 1_024,
            "{before} → {}",
            storage.size_on_disk().unwrap()
        );
    }
}

impl StorageError {
    /// Whether retrying may succeed: an IO error (a full disk, a hiccup) may pass; a record
    /// that cannot be decoded stays undecodable.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Sled(sled::Error::Io(_))
                | StorageError::InUse { .. }
                | StorageError::Flush(_)
        ) || matches!(
            self,
            StorageError::Keyspace(KeyspaceError::Sled(sled::Error::Io(_)))
        )
    }
}

/// What the node notes about its own store: whether it was ever initialized, whether the last
/// run stopped cleanly, and which journal it folds (the `PLAYHEAD_EVENTS` it was built from).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreMarks {
    pub initialized: bool,
    pub stopped_cleanly: bool,
    pub journal_identity: Option<String>,
    /// The journal's last sequence when the store was last stopped cleanly.
    pub journal_end_at_stop: Option<u64>,
}

const NODE_META_TREE: &str = "node_meta";

/// The time-partitioned keyspaces, as compaction and its metrics name them.
pub const KEYSPACES: [&str; 6] = [
    "station_plays",
    "enrichment",
    "player_sessions",
    "view_history",
    "answers",
    "shows",
];

/// Trees of the node's own bookkeeping, in no kind's snapshot: its marks, and the answers of
/// recent commands (worth nothing to a rebuilt store).
pub const NODE_TREES: &[&str] = &[NODE_META_TREE, "ks/answers"];

/// The sled trees holding each kind's records — a name, or a keyspace's `ks/{name}` prefix —
/// which its snapshot copies (see [`owns_tree`]).
/// The enrichment cache goes with the stations: a store rebuilt from a snapshot does not ask
/// the provider again for the songs it knew.
pub const STATION_TREES: &[&str] = &["station_state", "ks/station_plays", "ks/enrichment"];
pub const USER_TREES: &[&str] = &[
    "user_meta",
    "user_playouts",
    "ks/player_sessions",
    "ks/view_history",
];
pub const CONTENT_TREES: &[&str] = &["catalog_content"];
/// Imports and the shows they listed (their snapshot; imports completed after it are run again
/// from their objects after a rebuild, from their `ImportCompleted` in the journal).
pub const IMPORT_TREES: &[&str] = &[
    "imports",
    "import_errors",
    "import_sources",
    "import_meta",
    "ks/shows",
];

/// Whether the sled tree `name` is one of `trees` (a tree name, or a keyspace's prefix).
pub fn owns_tree(trees: &[&str], name: &[u8]) -> bool {
    trees.iter().any(|tree| {
        let tree = tree.as_bytes();
        name == tree || (name.starts_with(tree) && name.get(tree.len()) == Some(&b'/'))
    })
}
const MARK_INITIALIZED: &[u8] = b"initialized";
const MARK_STOPPED_CLEANLY: &[u8] = b"stopped_cleanly";
const MARK_JOURNAL: &[u8] = b"journal_identity";
const MARK_JOURNAL_END: &[u8] = b"journal_end_at_stop";
const MARK_READINESS_PROBE: &[u8] = b"readiness_probe";

/// Where the bucket dbs live, under the store's directory (moved aside and rebuilt with it).
const BUCKET_DBS_DIR: &str = "buckets";
/// Each bucket db may cache up to this fraction of `storage.cache_mib`: a few buckets are hot
/// (the current ones), the older ones are only probed.
const BUCKET_CACHE_SHARE: u64 = 8;

/// Everything the node keeps in sled: one db for everything but the records of the
/// time-partitioned keyspaces of entity state (plays, sessions, viewing history), whose buckets
/// are sled dbs of their own, expired by deleting them.
///
/// Writes to the two reach disk independently, so an entity's commit writes its bucketed
/// records first and hands its main-db writes (which hold its journal position) to
/// [`Storage::commit_main`], which writes them only once those records are durable: the main db
/// never gets to disk ahead of the records it vouches for.
#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
    node_meta: sled::Tree,
    pub stations: StationStore,
    pub enrichment: EnrichmentStore,
    pub sessions: SessionStore,
    pub catalog: CatalogStore,
    pub playouts: PlayoutStore,
    pub view_history: ViewHistoryStore,
    pub user_meta: UserMetaStore,
    pub answers: AnswerStore,
    pub imports: ImportStore,
    pub shows: ShowStore,
    /// The keyspaces whose buckets are sled dbs of their own (see [`Storage::commit_main`]).
    bucketed: Vec<TimeKeyspace>,
    bucket_root: std::path::PathBuf,
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
        let bucket_root = directory.join(BUCKET_DBS_DIR);
        let buckets = Placement::OwnDbs(BucketDbs {
            root: bucket_root.clone(),
            cache_bytes: config.storage.cache_mib * 1024 * 1024 / BUCKET_CACHE_SHARE,
        });
        let stations = StationStore::open(&db, &config.station, clock.clone(), buckets.clone())?;
        let enrichment = EnrichmentStore::open(&db, &config.enrichment, clock.clone())?;
        let sessions = SessionStore::open(&db, &config.player, clock.clone(), buckets.clone())?;
        let catalog = CatalogStore::open(&db, config.storage.catalog_cache_items)?;
        let playouts = PlayoutStore::open(&db)?;
        let view_history = ViewHistoryStore::open(&db, &config.playout, clock.clone(), buckets)?;
        let answers = AnswerStore::open(
            &db,
            std::time::Duration::from_secs(config.ingest.answer_retention_secs),
            clock.clone(),
        )?;
        let user_meta = UserMetaStore::open(&db)?;
        let imports = ImportStore::open(&db)?;
        let shows = ShowStore::open(&db, &config.imports, clock)?;
        let bucketed = vec![
            stations.plays().clone(),
            sessions.keyspace().clone(),
            view_history.keyspace().clone(),
        ];
        Ok(Self {
            durability: Arc::new(Durability::new(db.clone(), bucketed.clone())),
            bucketed,
            bucket_root,
            node_meta: db.open_tree(NODE_META_TREE)?,
            db,
            stations,
            enrichment,
            sessions,
            catalog,
            playouts,
            view_history,
            user_meta,
            answers,
            imports,
            shows,
        })
    }

    pub fn marks(&self) -> Result<StoreMarks, StorageError> {
        let flag = |key: &[u8]| -> Result<bool, StorageError> {
            Ok(self
                .node_meta
                .get(key)?
                .is_some_and(|value| value.as_ref() == b"1"))
        };
        Ok(StoreMarks {
            initialized: flag(MARK_INITIALIZED)?,
            stopped_cleanly: flag(MARK_STOPPED_CLEANLY)?,
            journal_identity: self
                .node_meta
                .get(MARK_JOURNAL)?
                .map(|value| String::from_utf8_lossy(&value).into_owned()),
            journal_end_at_stop: self
                .node_meta
                .get(MARK_JOURNAL_END)?
                .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
                .map(u64::from_be_bytes),
        })
    }

    /// Notes that the store is in use and folds `journal_identity`; durable before it returns,
    /// so a crash from here on is seen at the next start.
    pub fn mark_running(&self, journal_identity: &str) -> Result<(), StorageError> {
        self.flush_buckets()?;
        self.node_meta.insert(MARK_INITIALIZED, b"1".as_slice())?;
        self.node_meta
            .insert(MARK_STOPPED_CLEANLY, b"0".as_slice())?;
        self.node_meta
            .insert(MARK_JOURNAL, journal_identity.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Notes a clean stop (everything before is flushed with it) and the journal's last
    /// sequence then: a journal that moved on before the next start was written by another
    /// node, and this store may be behind it.
    pub fn mark_stopped_cleanly(&self, journal_end: u64) -> Result<(), StorageError> {
        self.flush_buckets()?;
        self.node_meta
            .insert(MARK_JOURNAL_END, journal_end.to_be_bytes().as_slice())?;
        self.node_meta
            .insert(MARK_STOPPED_CLEANLY, b"1".as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    /// A small write for the readiness probe (the time, so each probe changes something).
    pub fn note_probe(&self) -> Result<(), StorageError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        self.node_meta
            .insert(MARK_READINESS_PROBE, now.to_be_bytes().as_slice())?;
        Ok(())
    }

    /// The sled database (snapshots dump and restore its trees).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Drops the expired buckets of every time-partitioned keyspace, naming each.
    pub fn compact(
        &self,
        expiry: &Expiry,
    ) -> Vec<(&'static str, Result<CompactionReport, StorageError>)> {
        let [plays, enrichment, sessions, history, answers, shows] = KEYSPACES;
        vec![
            (plays, self.stations.compact_history(expiry)),
            (enrichment, self.enrichment.compact(expiry)),
            (sessions, self.sessions.compact(expiry)),
            (history, self.view_history.compact(expiry)),
            (
                answers,
                self.answers.keyspace().compact(expiry).map_err(Into::into),
            ),
            (shows, self.shows.compact(expiry)),
        ]
    }

    /// Returns once every write made before the call is on disk, bucket dbs first. Concurrent
    /// callers share one flush (group commit).
    pub async fn make_durable(&self) -> Result<(), StorageError> {
        self.durability.wait().await
    }

    /// Writes `owner`'s main-db `writes` of one commit: now, or — when the commit wrote
    /// bucketed records (`after_buckets`), or an earlier commit of `owner` is still waiting —
    /// right after the next bucket flush, in commit order. [`Self::make_durable`] covers them
    /// either way.
    pub fn commit_main(
        &self,
        owner: Owner,
        writes: MainWrites,
        after_buckets: bool,
    ) -> Result<(), StorageError> {
        self.durability.commit(owner, writes, after_buckets)
    }

    /// Returns once `owner`'s main-db writes handed to [`Self::commit_main`] are written (a
    /// load of its records reads them).
    pub async fn main_settled(&self, owner: &Owner) -> Result<(), StorageError> {
        self.durability.settled(owner).await
    }

    /// Flushes the bucket dbs, then the main db.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.flush_buckets()?;
        self.db.flush()?;
        Ok(())
    }

    /// Flushes the main db alone (fault injection: sled may write it out at any moment).
    pub fn flush_main_only(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    fn flush_buckets(&self) -> Result<(), StorageError> {
        for keyspace in &self.bucketed {
            keyspace.flush_buckets()?;
        }
        Ok(())
    }

    /// Bytes on disk: the main db and every bucket db.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.db.size_on_disk()? + directory_size(&self.bucket_root)?)
    }

    /// Every named tree a snapshot may hold (sled's default tree excepted), sorted: the main
    /// db's trees, and each bucket db under its keyspace's bucket name (`ks/{name}/{index}`,
    /// as if it were a tree of the main db: snapshots do not depend on where buckets live).
    pub fn tree_names(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = self
            .db
            .tree_names()
            .into_iter()
            .filter(|name| name.as_ref() != SLED_DEFAULT_TREE)
            .map(|name| name.to_vec())
            .collect();
        for keyspace in &self.bucketed {
            names.extend(
                keyspace
                    .buckets()
                    .into_iter()
                    .map(|(bucket, _)| keyspace.bucket_name(bucket).into_bytes()),
            );
        }
        names.sort();
        names
    }

    /// The tree `name` of [`Self::tree_names`], created when missing (a restore writes it).
    pub fn open_tree(&self, name: &[u8]) -> Result<sled::Tree, StorageError> {
        for keyspace in &self.bucketed {
            if let Some(bucket) = keyspace.parse_bucket_name(name) {
                return Ok(keyspace.bucket(bucket)?);
            }
        }
        Ok(self.db.open_tree(name)?)
    }
}

/// The bytes of every file under `directory`. What compaction deletes meanwhile counts as
/// gone, not as an error.
fn directory_size(directory: &Path) -> Result<u64, StorageError> {
    let gone = |error: &std::io::Error| error.kind() == std::io::ErrorKind::NotFound;
    let io = |error: std::io::Error| StorageError::Sled(sled::Error::Io(error));
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if gone(&error) => return Ok(0),
        Err(error) => return Err(io(error)),
    };
    let mut total = 0;
    for entry in entries {
        let (entry, metadata) =
            match entry.and_then(|entry| entry.metadata().map(|metadata| (entry, metadata))) {
                Ok(found) => found,
                Err(error) if gone(&error) => continue,
                Err(error) => return Err(io(error)),
            };
        total += if metadata.is_dir() {
            directory_size(&entry.path())?
        } else {
            metadata.len()
        };
    }
    Ok(total)
}
