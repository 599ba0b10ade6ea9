//! Time-partitioned keyspace: records with a sliding TTL, expired by dropping whole sled trees.
//!
//! A [`TimeKeyspace`] writes each record into the sled tree of the current time bucket (`now /
//! bucket_width`), so a record expires with its bucket at no cost: reads never look into an
//! expired bucket. Compaction then gets rid of expired trees in the background, whole or —
//! so sled's `drop_tree` of a big tree does not stall every other write — emptied at a
//! bounded rate first ([`Expiry`]).
//!
//! A copy written in bucket `b` is live while `now < (b + 1) * bucket_width + retention`, so a
//! record lives at least `retention` after its last write. Rewriting a record (the "touch" of a
//! sliding TTL) puts a fresh copy in the current bucket and leaves the older copy to expire with
//! its bucket; reads take the copy of the newest live bucket and ignore expired buckets that
//! compaction has not dropped yet.
//!
//! Trees are named `ks/{name}/{bucket_index:020}` (zero-padded so names sort by time), plus one
//! `ks/{name}/meta` tree that pins the bucket width: bucket indexes only mean something for the
//! width that produced them, so reopening with another width is refused.
//!
//! [`Placement::OwnDbs`] keeps each bucket in a sled db of its own instead, the directory
//! `{root}/{name}/{bucket_index:020}`: an expired bucket is closed and its directory deleted,
//! which costs the serving db nothing (sled's `drop_tree` frees every page of the tree through
//! the locks and log every other write of the db goes through). Such a bucket reaches disk only
//! when flushed ([`TimeKeyspace::flush_buckets`]): what orders it with the serving db's writes
//! is the caller's (see `storage::Storage::commit_main`).
//!
//! Open one `TimeKeyspace` per (db, name) and clone it to share: clones share the bucket map.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::iter::FusedIterator;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use sled::IVec;

use super::clock::Clock;

/// Upper bound on how many buckets can be live at once: every `get` probes each live bucket.
pub const MAX_LIVE_BUCKETS: u64 = 1024;

const TREE_NAME_ROOT: &str = "ks";
const BUCKET_INDEX_DIGITS: usize = 20;
const META_TREE_LEAF: &str = "meta";
const BUCKET_WIDTH_META_KEY: &[u8] = b"bucket_width_ms";

/// The index of one bucket tree (`time / bucket_width`): where a copy of a record lives, as
/// [`TimeKeyspace::get_located`] reports it, so it can later be removed from that tree alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketIndex(u64);

impl BucketIndex {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Naming and time geometry of one keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyspaceConfig {
    /// Lowercase `[a-z0-9_]+`; becomes part of the sled tree names.
    pub name: String,
    /// Time span covered by one bucket tree (whole milliseconds are used).
    pub bucket_width: Duration,
    /// How long a record stays readable after the end of the bucket of its last write.
    pub retention: Duration,
}

impl KeyspaceConfig {
    /// Checks the config, with messages that say what to change.
    pub fn validate(&self) -> Result<(), KeyspaceConfigError> {
        if self.name.is_empty() {
            return Err(KeyspaceConfigError::EmptyName);
        }
        let name_is_well_formed = self
            .name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
        if !name_is_well_formed {
            return Err(KeyspaceConfigError::InvalidName {
                name: self.name.clone(),
            });
        }
        let geometry = BucketGeometry::from_durations(self.bucket_width, self.retention);
        if geometry.width_millis == 0 {
            return Err(KeyspaceConfigError::BucketWidthTooSmall {
                name: self.name.clone(),
                bucket_width: self.bucket_width,
            });
        }
        if self.retention < self.bucket_width {
            return Err(KeyspaceConfigError::RetentionShorterThanBucketWidth {
                name: self.name.clone(),
                retention: self.retention,
                bucket_width: self.bucket_width,
            });
        }
        let max_live_buckets = geometry.max_live_buckets();
        if max_live_buckets > MAX_LIVE_BUCKETS {
            return Err(KeyspaceConfigError::TooManyLiveBuckets {
                name: self.name.clone(),
                live_buckets: max_live_buckets,
                max_live_buckets: MAX_LIVE_BUCKETS,
            });
        }
        Ok(())
    }
}

/// Why a [`KeyspaceConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyspaceConfigError {
    #[error(
        "keyspace name is empty: give it a short name such as `sessions` \
         (lowercase ascii letters, digits and `_`)"
    )]
    EmptyName,
    #[error(
        "keyspace name `{name}` may only contain lowercase ascii letters, digits and `_` \
         because it becomes part of sled tree names"
    )]
    InvalidName { name: String },
    #[error("keyspace `{name}`: bucket_width must be at least 1 ms, got {bucket_width:?}")]
    BucketWidthTooSmall {
        name: String,
        bucket_width: Duration,
    },
    #[error(
        "keyspace `{name}`: retention ({retention:?}) must be at least bucket_width \
         ({bucket_width:?}); raise retention or shrink bucket_width"
    )]
    RetentionShorterThanBucketWidth {
        name: String,
        retention: Duration,
        bucket_width: Duration,
    },
    #[error(
        "keyspace `{name}`: retention / bucket_width allows {live_buckets} live buckets but at \
         most {max_live_buckets} are supported because every read probes each live bucket; \
         widen bucket_width"
    )]
    TooManyLiveBuckets {
        name: String,
        live_buckets: u64,
        max_live_buckets: u64,
    },
}

/// Errors of [`TimeKeyspace`] operations.
#[derive(Debug, thiserror::Error)]
pub enum KeyspaceError {
    #[error("sled error: {0}")]
    Sled(#[from] sled::Error),
    #[error("invalid keyspace config: {0}")]
    InvalidConfig(#[from] KeyspaceConfigError),
    #[error(
        "keyspace `{name}` was created with a bucket_width of {stored_millis} ms but is opened \
         with {configured_millis} ms; bucket trees are indexed by time / width, so restore the \
         old width or move the data to a keyspace with a new name"
    )]
    BucketWidthChanged {
        name: String,
        stored_millis: u64,
        configured_millis: u64,
    },
    #[error("keyspace `{name}` metadata is corrupt: {detail}")]
    CorruptMetadata { name: String, detail: String },
    #[error(
        "keyspace `{name}` keeps its buckets in dbs of their own, but this store holds them as \
         trees of its db (written by an earlier version): rebuild the store from the journal \
         with `playhead-node --rebuild`"
    )]
    PlacementChanged { name: String },
    #[error("keyspace `{name}`: bucket directory {}: {source}", path.display())]
    BucketDir {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a keyspace keeps its buckets.
#[derive(Debug, Clone, Default)]
pub enum Placement {
    /// A tree of the keyspace's db per bucket, dropped with sled's `drop_tree`.
    #[default]
    Trees,
    /// A sled db of its own per bucket, closed and deleted once expired.
    OwnDbs(BucketDbs),
}

/// Where the bucket dbs of [`Placement::OwnDbs`] live, and how much each may cache.
#[derive(Debug, Clone)]
pub struct BucketDbs {
    /// Each keyspace's buckets go under `{root}/{name}/`.
    pub root: PathBuf,
    pub cache_bytes: u64,
}

impl BucketDbs {
    fn keyspace_dir(&self, keyspace_name: &str) -> PathBuf {
        self.root.join(keyspace_name)
    }

    fn bucket_dir(&self, keyspace_name: &str, bucket_index: u64) -> PathBuf {
        self.keyspace_dir(keyspace_name)
            .join(format!("{bucket_index:0BUCKET_INDEX_DIGITS$}"))
    }

    /// Opens (or creates) one bucket db and hands out its tree. No sled flusher thread: it
    /// reaches disk when flushed. A db this process closed a moment ago may still hold its
    /// lock for a moment, so a lock conflict is retried briefly.
    fn open(&self, directory: &Path) -> Result<sled::Tree, sled::Error> {
        let deadline = Instant::now() + BUCKET_LOCK_WAIT;
        loop {
            let opened = sled::Config::new()
                .path(directory)
                .cache_capacity(self.cache_bytes)
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => return Ok(sled::Tree::clone(&db)),
                Err(sled::Error::Io(error))
                    if error.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The bucket dbs a keyspace left under its directory, by index.
    fn existing(&self, keyspace_name: &str) -> Result<BTreeMap<u64, PathBuf>, std::io::Error> {
        let directory = self.keyspace_dir(keyspace_name);
        let mut found = BTreeMap::new();
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == BUCKET_INDEX_DIGITS
                && name.bytes().all(|byte| byte.is_ascii_digit())
                && let Ok(index) = name.parse()
            {
                found.insert(index, entry.path());
            }
        }
        Ok(found)
    }
}

/// Bucket dbs under a temporary directory (tests): keep the directory as long as the dbs.
#[cfg(test)]
pub(crate) fn temporary_bucket_dbs() -> (tempfile::TempDir, Placement) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let placement = Placement::OwnDbs(BucketDbs {
        root: directory.path().to_owned(),
        cache_bytes: 1 << 20,
    });
    (directory, placement)
}

/// Deletes a bucket db's directory, its big files shrunk a step at a time first: ext4 frees a
/// file's blocks in the `unlink` (or `ftruncate`) that lets go of them, holding its journal for
/// the whole file meanwhile — measured here, 110 ms for a 1M-session bucket (454 MiB), during
/// which every write of the node waited — so each step frees [`DELETE_STEP_BYTES`] and yields.
fn remove_gradually(directory: &Path) -> std::io::Result<()> {
    shrink_files(directory)?;
    std::fs::remove_dir_all(directory)
}

fn shrink_files(directory: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            shrink_files(&entry.path())?;
            continue;
        }
        let file = std::fs::OpenOptions::new().write(true).open(entry.path())?;
        let mut length = file.metadata()?.len();
        while length > DELETE_STEP_BYTES {
            length -= DELETE_STEP_BYTES;
            file.set_len(length)?;
            std::thread::sleep(DELETE_STEP_PAUSE);
        }
    }
    Ok(())
}

/// Bytes a bucket's deletion frees at a time (~1 ms of ext4's journal here, p50 0.97 ms), and
/// the pause between steps: a 1M-session bucket goes in ~0.4 s, the journal free two thirds of
/// it. 16 MiB steps (~4 ms each) took half as long but held every flush of the node up to 4 ms
/// 70% of the time: `NextTrack` p99 during the drop ÷ before, three drops pooled, 1.50 and 1.56,
/// against 1.06–1.37 over five such runs with 4 MiB (and 1.12 with 2 MiB and 1 ms pauses).
const DELETE_STEP_BYTES: u64 = 4 << 20;
const DELETE_STEP_PAUSE: Duration = Duration::from_millis(2);

/// How long opening a bucket db waits for the lock of one this process just closed.
const BUCKET_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Key order of [`TimeKeyspace::range`] and [`TimeKeyspace::scan_prefix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Ascending keys.
    #[default]
    Forward,
    /// Descending keys.
    Reverse,
}

/// What one [`TimeKeyspace::compact`] run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    pub buckets_dropped: usize,
    /// Records removed one by one from expired buckets before their trees were dropped (0
    /// when trees are dropped whole).
    pub records_removed: u64,
    pub buckets_remaining: usize,
    pub elapsed: Duration,
}

/// How [`TimeKeyspace::compact`] gets rid of an expired bucket.
///
/// sled's `drop_tree` logs a free record for every page of the tree and frees every page in
/// one go, through the same log, IO thread pool and locks as every other write of the
/// process: a 1M-record bucket stalls the foreground's writes for the length of the drop. A
/// paced expiry first empties the tree at a bounded rate (its leaves merge away as they
/// empty), then drops what little is left.
#[derive(Debug, Clone, Default)]
pub struct Expiry {
    /// Records removed per second while emptying; `None` drops each tree whole at once.
    pub removes_per_sec: Option<std::num::NonZeroU64>,
    /// Cancelled when the node stops: an emptying under way ends (the bucket stays mapped,
    /// expired, and the next compaction carries on from what is left).
    pub stop: tokio_util::sync::CancellationToken,
}

impl Expiry {
    /// Trees dropped whole, at once.
    pub fn whole() -> Self {
        Self::default()
    }

    /// Trees emptied at `removes_per_sec` records a second, then dropped; 0 = whole.
    pub fn paced(removes_per_sec: u64, stop: tokio_util::sync::CancellationToken) -> Self {
        Self {
            removes_per_sec: std::num::NonZeroU64::new(removes_per_sec),
            stop,
        }
    }
}

/// Records removed per emptying step: one step, then a pause that keeps the average rate.
const REMOVES_PER_STEP: usize = 256;
/// A pause between steps is cut in naps of at most this, so a stop is seen quickly.
const LONGEST_PAUSE: Duration = Duration::from_millis(50);
/// How often a long emptying reports its progress.
const EMPTYING_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Bucket arithmetic in whole milliseconds; saturating so far-future clocks cannot wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BucketGeometry {
    width_millis: u64,
    retention_millis: u64,
}

impl BucketGeometry {
    fn from_durations(bucket_width: Duration, retention: Duration) -> Self {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self {
            width_millis: millis(bucket_width),
            retention_millis: millis(retention),
        }
    }

    fn bucket_index_at(self, now_millis: u64) -> u64 {
        now_millis / self.width_millis
    }

    fn expires_at_millis(self, bucket_index: u64) -> u64 {
        bucket_index
            .saturating_add(1)
            .saturating_mul(self.width_millis)
            .saturating_add(self.retention_millis)
    }

    fn is_live(self, bucket_index: u64, now_millis: u64) -> bool {
        now_millis < self.expires_at_millis(bucket_index)
    }

    /// Lower bound of the live bucket indexes, so reads skip old buckets without visiting them.
    fn first_possibly_live_bucket_index(self, now_millis: u64) -> u64 {
        now_millis.saturating_sub(self.retention_millis) / self.width_millis
    }

    /// Expired for one more bucket width: a reader that picked its buckets just before expiry
    /// has had a whole bucket width to finish before the tree disappears.
    fn is_droppable(self, bucket_index: u64, now_millis: u64) -> bool {
        now_millis
            >= self
                .expires_at_millis(bucket_index)
                .saturating_add(self.width_millis)
    }

    fn max_live_buckets(self) -> u64 {
        self.retention_millis
            .div_ceil(self.width_millis)
            .saturating_add(1)
    }
}

fn bucket_tree_prefix(keyspace_name: &str) -> String {
    format!("{TREE_NAME_ROOT}/{keyspace_name}/")
}

fn bucket_tree_name(keyspace_name: &str, bucket_index: u64) -> String {
    format!("{TREE_NAME_ROOT}/{keyspace_name}/{bucket_index:0BUCKET_INDEX_DIGITS$}")
}

fn meta_tree_name(keyspace_name: &str) -> String {
    format!("{TREE_NAME_ROOT}/{keyspace_name}/{META_TREE_LEAF}")
}

/// `Some(index)` only for this keyspace's bucket trees; the meta tree and other keyspaces
/// (even `ks/{name}_suffix/..`, thanks to the `/` in the prefix) yield `None`.
fn parse_bucket_tree_name(tree_name: &[u8], bucket_tree_prefix: &str) -> Option<u64> {
    let digits = tree_name.strip_prefix(bucket_tree_prefix.as_bytes())?;
    if digits.len() != BUCKET_INDEX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A sled lookup on a tree that compaction dropped after the caller picked it: everything in it
/// had expired, so it reads as empty rather than failing the whole request.
fn is_dropped_tree_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::CollectionNotFound(_))
}

/// A keyspace of records with a sliding TTL, one sled tree per time bucket. Cheap to clone.
#[derive(Clone)]
pub struct TimeKeyspace {
    inner: Arc<KeyspaceInner>,
}

struct KeyspaceInner {
    db: sled::Db,
    placement: Placement,
    config: KeyspaceConfig,
    geometry: BucketGeometry,
    clock: Arc<dyn Clock>,
    buckets: RwLock<BTreeMap<u64, sled::Tree>>,
    /// Test hook: how many per-key removes each bucket tree received.
    #[cfg(test)]
    removes_per_bucket: std::sync::Mutex<BTreeMap<u64, usize>>,
}

impl std::fmt::Debug for TimeKeyspace {
    // sled's own Debug for trees dumps their contents, so never derive through it.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TimeKeyspace")
            .field("config", &self.inner.config)
            .field("bucket_count", &self.bucket_count())
            .finish_non_exhaustive()
    }
}

impl TimeKeyspace {
    /// Opens the keyspace, adopting every bucket tree that an earlier run left in `db`.
    pub fn open(
        db: &sled::Db,
        config: KeyspaceConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, KeyspaceError> {
        Self::open_placed(db, config, clock, Placement::Trees)
    }

    /// [`Self::open`] with the buckets where `placement` says; the bucket width is pinned in
    /// `db` either way. A store whose buckets are trees is not opened as one of bucket dbs
    /// (its records would be left behind).
    pub fn open_placed(
        db: &sled::Db,
        config: KeyspaceConfig,
        clock: Arc<dyn Clock>,
        placement: Placement,
    ) -> Result<Self, KeyspaceError> {
        config.validate()?;
        let geometry = BucketGeometry::from_durations(config.bucket_width, config.retention);
        ensure_bucket_width_unchanged(db, &config.name, geometry.width_millis)?;

        let prefix = bucket_tree_prefix(&config.name);
        let mut buckets = BTreeMap::new();
        for tree_name in db.tree_names() {
            let Some(bucket_index) = parse_bucket_tree_name(&tree_name, &prefix) else {
                continue;
            };
            if matches!(placement, Placement::OwnDbs(_)) {
                return Err(KeyspaceError::PlacementChanged {
                    name: config.name.clone(),
                });
            }
            buckets.insert(bucket_index, db.open_tree(&tree_name)?);
        }
        if let Placement::OwnDbs(dbs) = &placement {
            let bucket_dir_error = |path: PathBuf| {
                let name = config.name.clone();
                move |source| KeyspaceError::BucketDir { name, path, source }
            };
            let directory = dbs.keyspace_dir(&config.name);
            std::fs::create_dir_all(&directory).map_err(bucket_dir_error(directory.clone()))?;
            for (bucket_index, path) in dbs
                .existing(&config.name)
                .map_err(bucket_dir_error(directory))?
            {
                buckets.insert(bucket_index, dbs.open(&path)?);
            }
        }
        tracing::info!(
            keyspace = %config.name,
            own_dbs = matches!(placement, Placement::OwnDbs(_)),
            buckets = buckets.len(),
            bucket_width_ms = geometry.width_millis,
            retention_ms = geometry.retention_millis,
            "opened time keyspace"
        );

        Ok(Self {
            inner: Arc::new(KeyspaceInner {
                db: db.clone(),
                placement,
                config,
                geometry,
                clock,
                buckets: RwLock::new(buckets),
                #[cfg(test)]
                removes_per_bucket: Default::default(),
            }),
        })
    }

    pub fn config(&self) -> &KeyspaceConfig {
        &self.inner.config
    }

    /// The name of bucket `bucket` in a snapshot (and, for trees, in the db).
    pub fn bucket_name(&self, bucket: BucketIndex) -> String {
        bucket_tree_name(&self.inner.config.name, bucket.0)
    }

    /// The bucket a name of [`Self::bucket_name`]'s form designates, if it is one of ours.
    pub fn parse_bucket_name(&self, name: &[u8]) -> Option<BucketIndex> {
        parse_bucket_tree_name(name, &bucket_tree_prefix(&self.inner.config.name)).map(BucketIndex)
    }

    /// Writes into the current bucket; older copies are left to expire with their buckets.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), KeyspaceError> {
        self.current_bucket_tree()?.insert(key, value)?;
        Ok(())
    }

    /// Writes the entries into the current bucket one by one, in order: no atomicity across
    /// them (a crash keeps a prefix: sled recovers its log in order), and none of the
    /// process-wide exclusive lock every `sled::Batch` takes (it holds off every read and
    /// write of every tree meanwhile).
    pub fn insert_each(
        &self,
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<(), KeyspaceError> {
        let tree = self.current_bucket_tree()?;
        for (key, value) in entries {
            tree.insert(key, value)?;
        }
        Ok(())
    }

    /// The value of the newest live copy of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>, KeyspaceError> {
        Ok(self.get_located(key)?.map(|(_, value)| value))
    }

    /// The value of the newest live copy of `key`, with the bucket that holds it.
    pub fn get_located(&self, key: &[u8]) -> Result<Option<(BucketIndex, IVec)>, KeyspaceError> {
        let now_millis = self.inner.clock.now_millis();
        for (bucket_index, tree) in self.live_buckets_newest_first(now_millis) {
            match tree.get(key) {
                Ok(Some(value)) => return Ok(Some((BucketIndex(bucket_index), value))),
                Ok(None) => {}
                Err(error) if is_dropped_tree_error(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(None)
    }

    /// Removes `key` from every live bucket (cap eviction; expiry never deletes per record).
    /// Returns whether any copy was removed.
    pub fn remove(&self, key: &[u8]) -> Result<bool, KeyspaceError> {
        let now_millis = self.inner.clock.now_millis();
        let mut live_buckets = self.live_buckets_newest_first(now_millis);
        // Oldest first: a concurrent `get` probes newest first, so until the newest copy goes
        // it still sees that copy, never an older value resurfacing half-way through.
        live_buckets.reverse();
        let mut removed_any_copy = false;
        let newest = live_buckets.len().saturating_sub(1);
        for (position, (bucket_index, tree)) in live_buckets.into_iter().enumerate() {
            self.note_remove(bucket_index);
            match tree.remove(key) {
                Ok(previous) => {
                    removed_any_copy |= previous.is_some();
                    // Bucket dbs reach disk each on its own: an older copy's removal is made
                    // durable before a newer one's is written, so a crash never leaves an
                    // older copy to resurface once the newer one is gone.
                    if previous.is_some() && position < newest && self.owns_dbs() {
                        tree.flush()?;
                    }
                }
                Err(error) if is_dropped_tree_error(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(removed_any_copy)
    }

    /// Removes `key` from the one bucket `bucket` (where [`Self::get_located`] found it): O(1)
    /// trees touched instead of every live one. Copies in other buckets stay (they expire with
    /// their bucket). A bucket already dropped holds nothing: `Ok(false)`.
    pub fn remove_in_bucket(&self, bucket: BucketIndex, key: &[u8]) -> Result<bool, KeyspaceError> {
        let Some(tree) = self.read_buckets().get(&bucket.0).cloned() else {
            return Ok(false);
        };
        self.note_remove(bucket.0);
        match tree.remove(key) {
            Ok(previous) => Ok(previous.is_some()),
            Err(error) if is_dropped_tree_error(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    #[cfg(test)]
    fn note_remove(&self, bucket_index: u64) {
        *self
            .inner
            .removes_per_bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(bucket_index)
            .or_default() += 1;
    }

    #[cfg(not(test))]
    fn note_remove(&self, _bucket_index: u64) {}

    /// Test hook: per-key removes each bucket tree received so far.
    #[cfg(test)]
    pub(crate) fn removes_per_bucket(&self) -> BTreeMap<u64, usize> {
        self.inner
            .removes_per_bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Live entries within `range`, each key once with its newest value, lazily merged.
    pub fn range(
        &self,
        range: impl RangeBounds<Vec<u8>> + Clone,
        direction: Direction,
    ) -> Result<MergedEntries, KeyspaceError> {
        let now_millis = self.inner.clock.now_millis();
        let sources = self
            .live_buckets_newest_first(now_millis)
            .into_iter()
            .map(|(bucket_index, tree)| (bucket_index, tree.range(range.clone())));
        MergedEntries::new(sources, direction)
    }

    /// Live entries whose key starts with `prefix`, each key once with its newest value.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        direction: Direction,
    ) -> Result<MergedEntries, KeyspaceError> {
        let now_millis = self.inner.clock.now_millis();
        let sources = self
            .live_buckets_newest_first(now_millis)
            .into_iter()
            .map(|(bucket_index, tree)| (bucket_index, tree.scan_prefix(prefix)));
        MergedEntries::new(sources, direction)
    }

    /// Drops every bucket tree expired for at least one more bucket width, as `expiry` says:
    /// whole, or emptied at a bounded rate first. Stopped half-way (`expiry.stop`), it keeps
    /// the buckets it did not finish for the next run and reports what it did.
    ///
    /// A drop becomes durable with sled's next flush; a drop lost to a crash only brings back an
    /// expired tree, which reads ignore and the next compaction drops again. Records removed
    /// while emptying are as invisible: reads never look into an expired bucket.
    pub fn compact(&self, expiry: &Expiry) -> Result<CompactionReport, KeyspaceError> {
        let started = Instant::now();
        let now_millis = self.inner.clock.now_millis();
        let geometry = self.inner.geometry;

        // Unmapped first, under the lock but without IO, so no new reader can pick these trees.
        let mut doomed_buckets: Vec<(u64, sled::Tree)> = {
            let mut buckets = self.write_buckets();
            let doomed_indexes: Vec<u64> = buckets
                .keys()
                .copied()
                .take_while(|&bucket_index| geometry.is_droppable(bucket_index, now_millis))
                .collect();
            doomed_indexes
                .into_iter()
                .filter_map(|bucket_index| {
                    buckets
                        .remove(&bucket_index)
                        .map(|tree| (bucket_index, tree))
                })
                .collect()
        };
        // Popped oldest first; on failure or stop the rest goes back into the map.
        doomed_buckets.reverse();

        let mut buckets_dropped = 0;
        let mut records_removed = 0;
        while let Some((bucket_index, tree)) = doomed_buckets.pop() {
            if let Placement::OwnDbs(dbs) = &self.inner.placement {
                // Closed (sled flushes it once the last handle goes: a reader may still hold
                // one, and Linux keeps deleted files open for it), then deleted a step at a
                // time: the serving db is not involved. A failed delete leaves the directory,
                // adopted again at the next start and removed then.
                drop(tree);
                let path = dbs.bucket_dir(&self.inner.config.name, bucket_index);
                match remove_gradually(&path) {
                    Ok(()) => buckets_dropped += 1,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(KeyspaceError::BucketDir {
                            name: self.inner.config.name.clone(),
                            path,
                            source,
                        });
                    }
                }
                continue;
            }
            let tree_name = bucket_tree_name(&self.inner.config.name, bucket_index);
            match self.expire_bucket(&tree, &tree_name, expiry, &mut records_removed) {
                Ok(Expired::Dropped) => buckets_dropped += 1,
                Ok(Expired::AlreadyGone) => {
                    tracing::debug!(tree = %tree_name, "bucket tree was already dropped");
                }
                Ok(Expired::Stopped) => {
                    doomed_buckets.push((bucket_index, tree));
                    self.remap_undropped_buckets(doomed_buckets);
                    tracing::info!(
                        keyspace = %self.inner.config.name,
                        records_removed,
                        "compaction stopped while emptying an expired bucket; the next run goes on"
                    );
                    break;
                }
                Err(error) => {
                    doomed_buckets.push((bucket_index, tree));
                    self.remap_undropped_buckets(doomed_buckets);
                    return Err(error.into());
                }
            }
        }

        let report = CompactionReport {
            buckets_dropped,
            records_removed,
            buckets_remaining: self.bucket_count(),
            elapsed: started.elapsed(),
        };
        if report.buckets_dropped == 0 {
            tracing::debug!(keyspace = %self.inner.config.name, "no expired bucket to drop");
        } else {
            tracing::info!(
                keyspace = %self.inner.config.name,
                buckets_dropped = report.buckets_dropped,
                records_removed = report.records_removed,
                buckets_remaining = report.buckets_remaining,
                elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
                "dropped expired buckets"
            );
        }
        Ok(report)
    }

    /// Gets rid of one (unmapped, expired) bucket tree as `expiry` says: emptied first when
    /// paced, then dropped.
    fn expire_bucket(
        &self,
        tree: &sled::Tree,
        tree_name: &str,
        expiry: &Expiry,
        records_removed: &mut u64,
    ) -> Result<Expired, sled::Error> {
        if let Some(rate) = expiry.removes_per_sec
            && !self.empty_tree(tree, tree_name, rate, &expiry.stop, records_removed)?
        {
            return Ok(Expired::Stopped);
        }
        Ok(if self.inner.db.drop_tree(tree_name)? {
            Expired::Dropped
        } else {
            Expired::AlreadyGone
        })
    }

    /// Removes every record of `tree` in steps of [`REMOVES_PER_STEP`], in key order from
    /// where the last step ended, pausing between steps to keep to `rate`. Returns whether the
    /// tree was emptied (false: `stop` came first).
    fn empty_tree(
        &self,
        tree: &sled::Tree,
        tree_name: &str,
        rate: std::num::NonZeroU64,
        stop: &tokio_util::sync::CancellationToken,
        records_removed: &mut u64,
    ) -> Result<bool, sled::Error> {
        let step_period = Duration::from_secs_f64(REMOVES_PER_STEP as f64 / rate.get() as f64);
        let started = Instant::now();
        let removed_before = *records_removed;
        let mut next_progress = started + EMPTYING_PROGRESS_EVERY;
        let mut from = Bound::Unbounded;
        loop {
            if stop.is_cancelled() {
                return Ok(false);
            }
            let step_started = Instant::now();
            let keys = tree
                .range::<IVec, _>((from.clone(), Bound::Unbounded))
                .keys()
                .take(REMOVES_PER_STEP)
                .collect::<Result<Vec<IVec>, _>>();
            let keys = match keys {
                Ok(keys) => keys,
                Err(error) if is_dropped_tree_error(&error) => return Ok(true),
                Err(error) => return Err(error),
            };
            let Some(last) = keys.last().cloned() else {
                return Ok(true);
            };
            for key in keys {
                match tree.remove(key) {
                    Ok(_) => *records_removed += 1,
                    Err(error) if is_dropped_tree_error(&error) => return Ok(true),
                    Err(error) => return Err(error),
                }
            }
            from = Bound::Excluded(last);
            collect_deferred_frees();
            if Instant::now() >= next_progress {
                next_progress += EMPTYING_PROGRESS_EVERY;
                tracing::info!(
                    keyspace = %self.inner.config.name,
                    tree = %tree_name,
                    removed = *records_removed - removed_before,
                    elapsed_s = started.elapsed().as_secs(),
                    removes_per_sec = rate.get(),
                    "emptying an expired bucket before dropping it"
                );
            }
            let resume_at = step_started + step_period;
            while !stop.is_cancelled() {
                let left = resume_at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(LONGEST_PAUSE));
            }
        }
    }

    /// Bucket trees currently held, including expired ones that compaction has not dropped yet.
    pub fn bucket_count(&self) -> usize {
        self.read_buckets().len()
    }

    /// Flushes the bucket dbs, then the whole sled db (sled has no per-tree flush); returns
    /// the bytes written.
    pub fn flush(&self) -> Result<usize, KeyspaceError> {
        Ok(self.flush_buckets()? + self.inner.db.flush()?)
    }

    /// Flushes every live bucket db ([`Placement::OwnDbs`]; trees go with their db: nothing to
    /// do); returns the bytes written. Writes only ever go to live buckets. An expired one is
    /// left alone, so compaction holds its last handle and closes it on its own thread — a
    /// flush holding a handle would otherwise close it (an fsync, and freeing the db's page
    /// table) in the middle of a group commit, which every answer waits for.
    pub fn flush_buckets(&self) -> Result<usize, KeyspaceError> {
        if !self.owns_dbs() {
            return Ok(0);
        }
        let now_millis = self.inner.clock.now_millis();
        let mut written = 0;
        for (_, tree) in self.live_buckets_newest_first(now_millis) {
            written += tree.flush()?;
        }
        Ok(written)
    }

    /// Whether each bucket is a sled db of its own.
    pub fn owns_dbs(&self) -> bool {
        matches!(self.inner.placement, Placement::OwnDbs(_))
    }

    /// Every bucket held (expired ones compaction has not removed yet included), oldest first.
    pub fn buckets(&self) -> Vec<(BucketIndex, sled::Tree)> {
        self.read_buckets()
            .iter()
            .map(|(&bucket_index, tree)| (BucketIndex(bucket_index), tree.clone()))
            .collect()
    }

    /// The bucket of index `bucket`, created when missing, live or not (a snapshot restores
    /// the buckets it holds; compaction removes the expired ones).
    pub fn bucket(&self, bucket: BucketIndex) -> Result<sled::Tree, KeyspaceError> {
        self.bucket_tree(bucket.0)
    }

    /// Writes into the bucket of the time `at_millis` instead of now: a record dated by its own
    /// time (a show by its start) lives until `retention` after the end of that bucket. Refused
    /// (`Ok(false)`, nothing written) when that bucket has already expired.
    pub fn insert_dated(
        &self,
        at_millis: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, KeyspaceError> {
        let geometry = self.inner.geometry;
        let bucket_index = geometry.bucket_index_at(at_millis);
        if !geometry.is_live(bucket_index, self.inner.clock.now_millis()) {
            return Ok(false);
        }
        self.bucket_tree(bucket_index)?.insert(key, value)?;
        Ok(true)
    }

    /// The bucket index of the time `at_millis`.
    pub fn bucket_of(&self, at_millis: u64) -> BucketIndex {
        BucketIndex(self.inner.geometry.bucket_index_at(at_millis))
    }

    /// Whether the bucket still holds live records (reads look into it).
    pub fn is_live(&self, bucket: BucketIndex) -> bool {
        self.inner
            .geometry
            .is_live(bucket.0, self.inner.clock.now_millis())
    }

    /// The live buckets from the one of the time `from_millis` on, oldest first (dated records:
    /// a scan in time order visits them in this order and may stop early).
    pub fn live_buckets_from(&self, from_millis: u64) -> Vec<(BucketIndex, sled::Tree)> {
        let geometry = self.inner.geometry;
        let now_millis = self.inner.clock.now_millis();
        let first = geometry
            .bucket_index_at(from_millis)
            .max(geometry.first_possibly_live_bucket_index(now_millis));
        self.read_buckets()
            .range(first..)
            .filter(|&(&bucket_index, _)| geometry.is_live(bucket_index, now_millis))
            .map(|(&bucket_index, tree)| (BucketIndex(bucket_index), tree.clone()))
            .collect()
    }

    fn current_bucket_tree(&self) -> Result<sled::Tree, KeyspaceError> {
        let bucket_index = self
            .inner
            .geometry
            .bucket_index_at(self.inner.clock.now_millis());
        self.bucket_tree(bucket_index)
    }

    fn bucket_tree(&self, bucket_index: u64) -> Result<sled::Tree, KeyspaceError> {
        if let Some(tree) = self.read_buckets().get(&bucket_index) {
            return Ok(tree.clone());
        }
        if let Placement::OwnDbs(dbs) = &self.inner.placement {
            // Under the lock: a db opened twice would refuse the second opener its lock.
            let mut buckets = self.write_buckets();
            if let Some(tree) = buckets.get(&bucket_index) {
                return Ok(tree.clone());
            }
            let tree = dbs.open(&dbs.bucket_dir(&self.inner.config.name, bucket_index))?;
            buckets.insert(bucket_index, tree.clone());
            return Ok(tree);
        }
        // Opened outside the lock (it writes sled metadata); sled hands every opener of a name
        // the same tree, so losing a race to another task is harmless.
        let tree_name = bucket_tree_name(&self.inner.config.name, bucket_index);
        let tree = self.inner.db.open_tree(&tree_name)?;
        let mut buckets = self.write_buckets();
        Ok(buckets.entry(bucket_index).or_insert(tree).clone())
    }

    /// Cloned handles so no lock is held while sled does IO.
    fn live_buckets_newest_first(&self, now_millis: u64) -> Vec<(u64, sled::Tree)> {
        let geometry = self.inner.geometry;
        let first_possibly_live = geometry.first_possibly_live_bucket_index(now_millis);
        self.read_buckets()
            .range(first_possibly_live..)
            .rev()
            .filter(|&(&bucket_index, _)| geometry.is_live(bucket_index, now_millis))
            .map(|(&bucket_index, tree)| (bucket_index, tree.clone()))
            .collect()
    }

    /// Puts back the buckets a failed compaction unmapped but did not drop, for the next run.
    fn remap_undropped_buckets(&self, undropped_buckets: Vec<(u64, sled::Tree)>) {
        let mut buckets = self.write_buckets();
        for (bucket_index, tree) in undropped_buckets {
            buckets.entry(bucket_index).or_insert(tree);
        }
    }

    // Every critical section is a single map lookup, insert or remove, so a panic elsewhere
    // cannot leave the map half-updated: a poisoned lock is still safe to use.
    fn read_buckets(&self) -> RwLockReadGuard<'_, BTreeMap<u64, sled::Tree>> {
        self.inner
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_buckets(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, sled::Tree>> {
        self.inner
            .buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the epoch-deferred work of this thread and of the global queue here, on the thread
/// emptying a bucket. Leaves merged away as a tree empties are freed by deferred functions —
/// each scans sled's whole free list under the mutex that page allocation also takes — which
/// otherwise run on whichever thread pins next: a serving one. A few rounds let the epoch
/// advance far enough for this step's frees to be collected.
fn collect_deferred_frees() {
    for _ in 0..3 {
        crossbeam_epoch::pin().flush();
    }
}

/// What [`TimeKeyspace::expire_bucket`] did with a bucket tree.
enum Expired {
    Dropped,
    /// sled no longer knew the tree.
    AlreadyGone,
    /// The emptying was stopped; the tree stays.
    Stopped,
}

fn ensure_bucket_width_unchanged(
    db: &sled::Db,
    keyspace_name: &str,
    configured_millis: u64,
) -> Result<(), KeyspaceError> {
    let meta_tree = db.open_tree(meta_tree_name(keyspace_name))?;
    let configured_bytes = configured_millis.to_be_bytes();
    let swap_result = meta_tree.compare_and_swap(
        BUCKET_WIDTH_META_KEY,
        None::<&[u8]>,
        Some(&configured_bytes[..]),
    )?;
    let Err(existing) = swap_result else {
        return Ok(());
    };
    let stored_bytes = existing.current.unwrap_or_default();
    let stored_millis = <[u8; 8]>::try_from(stored_bytes.as_ref())
        .map(u64::from_be_bytes)
        .map_err(|_| KeyspaceError::CorruptMetadata {
            name: keyspace_name.to_owned(),
            detail: format!(
                "bucket_width_ms holds {} bytes instead of 8",
                stored_bytes.len()
            ),
        })?;
    if stored_millis != configured_millis {
        return Err(KeyspaceError::BucketWidthChanged {
            name: keyspace_name.to_owned(),
            stored_millis,
            configured_millis,
        });
    }
    Ok(())
}

/// Lazy k-way merge of per-bucket sled iterators: each key once, with the newest bucket's value.
///
/// Holds one pending entry per bucket, never a bucket's whole content. After yielding an error
/// it ends.
pub struct MergedEntries {
    direction: Direction,
    bucket_cursors: Vec<sled::Iter>,
    heads: BinaryHeap<MergeHead>,
    pending_error: Option<sled::Error>,
    finished: bool,
}

/// The next entry of one bucket; the heap's maximum is the entry to yield next.
struct MergeHead {
    key: IVec,
    value: IVec,
    bucket_index: u64,
    cursor_position: usize,
    direction: Direction,
}

impl Ord for MergeHead {
    fn cmp(&self, other: &Self) -> Ordering {
        let key_priority = match self.direction {
            Direction::Forward => other.key.cmp(&self.key),
            Direction::Reverse => self.key.cmp(&other.key),
        };
        // On equal keys the newest bucket comes out first, so its value is the one yielded.
        key_priority.then_with(|| self.bucket_index.cmp(&other.bucket_index))
    }
}

impl PartialOrd for MergeHead {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MergeHead {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MergeHead {}

impl MergedEntries {
    fn new(
        sources: impl IntoIterator<Item = (u64, sled::Iter)>,
        direction: Direction,
    ) -> Result<Self, KeyspaceError> {
        let mut merged = Self {
            direction,
            bucket_cursors: Vec::new(),
            heads: BinaryHeap::new(),
            pending_error: None,
            finished: false,
        };
        let mut bucket_indexes = Vec::new();
        for (bucket_index, cursor) in sources {
            bucket_indexes.push(bucket_index);
            merged.bucket_cursors.push(cursor);
        }
        for (cursor_position, bucket_index) in bucket_indexes.into_iter().enumerate() {
            if let Some(head) = merged.advance_cursor(cursor_position, bucket_index)? {
                merged.heads.push(head);
            }
        }
        Ok(merged)
    }

    fn advance_cursor(
        &mut self,
        cursor_position: usize,
        bucket_index: u64,
    ) -> Result<Option<MergeHead>, sled::Error> {
        let cursor = &mut self.bucket_cursors[cursor_position];
        let next_entry = match self.direction {
            Direction::Forward => cursor.next(),
            Direction::Reverse => cursor.next_back(),
        };
        match next_entry {
            None => Ok(None),
            Some(Ok((key, value))) => Ok(Some(MergeHead {
                key,
                value,
                bucket_index,
                cursor_position,
                direction: self.direction,
            })),
            Some(Err(error)) if is_dropped_tree_error(&error) => Ok(None),
            Some(Err(error)) => Err(error),
        }
    }

    fn refill_from(&mut self, cursor_position: usize, bucket_index: u64) {
        match self.advance_cursor(cursor_position, bucket_index) {
            Ok(Some(head)) => self.heads.push(head),
            Ok(None) => {}
            Err(error) => {
                self.pending_error.get_or_insert(error);
            }
        }
    }
}

impl Iterator for MergedEntries {
    type Item = Result<(IVec, IVec), KeyspaceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        if let Some(error) = self.pending_error.take() {
            self.finished = true;
            return Some(Err(error.into()));
        }
        let Some(newest) = self.heads.pop() else {
            self.finished = true;
            return None;
        };
        self.refill_from(newest.cursor_position, newest.bucket_index);
        // Older copies of the same key sit at the top of the heap now; skip them.
        while self
            .heads
            .peek()
            .is_some_and(|older_copy| older_copy.key == newest.key)
        {
            if let Some(older_copy) = self.heads.pop() {
                debug_assert!(older_copy.bucket_index < newest.bucket_index);
                self.refill_from(older_copy.cursor_position, older_copy.bucket_index);
            }
        }
        Some(Ok((newest.key, newest.value)))
    }
}

impl FusedIterator for MergedEntries {}

#[cfg(test)]
mod tests {
    use super::super::clock::ManualClock;
    use super::*;
    use tokio_util::sync::CancellationToken;

    use proptest::prelude::*;

    const WIDTH: Duration = Duration::from_secs(60);
    const RETENTION: Duration = Duration::from_secs(180);
    const WIDTH_MILLIS: u64 = 60_000;
    const RETENTION_MILLIS: u64 = 180_000;
    /// Start exactly on a bucket boundary so tests can reason in whole buckets.
    const START_MILLIS: u64 = 1_000 * WIDTH_MILLIS;

    fn sessions_config() -> KeyspaceConfig {
        KeyspaceConfig {
            name: "sessions".to_owned(),
            bucket_width: WIDTH,
            retention: RETENTION,
        }
    }

    fn temporary_db() -> sled::Db {
        sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled db opens")
    }

    fn open_sessions(db: &sled::Db, clock: &Arc<ManualClock>) -> TimeKeyspace {
        TimeKeyspace::open(db, sessions_config(), clock.clone()).expect("keyspace opens")
    }

    fn bucket_tree_names(db: &sled::Db) -> Vec<String> {
        let prefix = bucket_tree_prefix("sessions");
        db.tree_names()
            .into_iter()
            .filter(|name| parse_bucket_tree_name(name, &prefix).is_some())
            .map(|name| String::from_utf8(name.to_vec()).expect("tree names are utf-8"))
            .collect()
    }

    fn collect_entries(
        entries: impl Iterator<Item = Result<(IVec, IVec), KeyspaceError>>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        entries
            .map(|entry| {
                let (key, value) = entry.expect("merged entry reads");
                (key.to_vec(), value.to_vec())
            })
            .collect()
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        entries
            .iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn given_an_empty_name_when_validated_then_it_is_rejected() {
        let config = KeyspaceConfig {
            name: String::new(),
            ..sessions_config()
        };

        assert_eq!(config.validate(), Err(KeyspaceConfigError::EmptyName));
    }

    #[test]
    fn given_a_name_with_a_slash_or_uppercase_when_validated_then_it_is_rejected() {
        for bad_name in ["player/sessions", "Sessions", "sessions-v2", "séances"] {
            let config = KeyspaceConfig {
                name: bad_name.to_owned(),
                ..sessions_config()
            };

            assert_eq!(
                config.validate(),
                Err(KeyspaceConfigError::InvalidName {
                    name: bad_name.to_owned()
                })
            );
        }
    }

    #[test]
    fn given_a_sub_millisecond_bucket_width_when_validated_then_it_is_rejected() {
        let config = KeyspaceConfig {
            bucket_width: Duration::from_micros(999),
            ..sessions_config()
        };

        assert!(matches!(
            config.validate(),
            Err(KeyspaceConfigError::BucketWidthTooSmall { .. })
        ));
    }

    #[test]
    fn given_retention_shorter_than_a_bucket_when_validated_then_it_is_rejected() {
        let config = KeyspaceConfig {
            retention: Duration::from_secs(59),
            ..sessions_config()
        };

        assert!(matches!(
            config.validate(),
            Err(KeyspaceConfigError::RetentionShorterThanBucketWidth { .. })
        ));
    }

    #[test]
    fn given_thirty_days_of_one_second_buckets_when_validated_then_too_many_live_buckets() {
        let config = KeyspaceConfig {
            bucket_width: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 24 * 3600),
            ..sessions_config()
        };

        assert!(matches!(
            config.validate(),
            Err(KeyspaceConfigError::TooManyLiveBuckets { .. })
        ));
    }

    #[test]
    fn given_an_invalid_config_when_opening_then_open_fails_with_invalid_config() {
        let db = temporary_db();
        let config = KeyspaceConfig {
            name: String::new(),
            ..sessions_config()
        };

        let opened = TimeKeyspace::open(&db, config, Arc::new(ManualClock::new(START_MILLIS)));

        assert!(matches!(
            opened,
            Err(KeyspaceError::InvalidConfig(KeyspaceConfigError::EmptyName))
        ));
    }

    #[test]
    fn given_bucket_geometry_then_liveness_and_droppability_follow_the_bucket_end() {
        let geometry = BucketGeometry::from_durations(WIDTH, RETENTION);
        let bucket_index = 7;
        let bucket_end = 8 * WIDTH_MILLIS;

        assert!(geometry.is_live(bucket_index, bucket_end + RETENTION_MILLIS - 1));
        assert!(!geometry.is_live(bucket_index, bucket_end + RETENTION_MILLIS));
        assert!(!geometry.is_droppable(
            bucket_index,
            bucket_end + RETENTION_MILLIS + WIDTH_MILLIS - 1
        ));
        assert!(geometry.is_droppable(bucket_index, bucket_end + RETENTION_MILLIS + WIDTH_MILLIS));
        for now_millis in [
            0,
            1,
            RETENTION_MILLIS,
            bucket_end + RETENTION_MILLIS,
            u64::MAX,
        ] {
            let first = geometry.first_possibly_live_bucket_index(now_millis);
            assert!(first == 0 || !geometry.is_live(first - 1, now_millis));
        }
    }

    #[test]
    fn given_tree_names_of_other_keyspaces_when_parsed_then_only_own_buckets_match() {
        let prefix = bucket_tree_prefix("sessions");

        assert_eq!(
            parse_bucket_tree_name(bucket_tree_name("sessions", 42).as_bytes(), &prefix),
            Some(42)
        );
        assert_eq!(
            parse_bucket_tree_name(bucket_tree_name("sessions_v2", 42).as_bytes(), &prefix),
            None
        );
        assert_eq!(
            parse_bucket_tree_name(meta_tree_name("sessions").as_bytes(), &prefix),
            None
        );
        assert_eq!(
            parse_bucket_tree_name(b"ks/sessions/99999999999999999999", &prefix),
            None
        );
    }

    #[test]
    fn given_a_touched_and_an_untouched_record_when_time_passes_then_only_the_touched_one_lives() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace.insert(b"touched", b"v1").unwrap();
        keyspace.insert(b"untouched", b"v1").unwrap();

        // Touch just before the first copy would expire.
        clock.advance(WIDTH + RETENTION - Duration::from_millis(1));
        keyspace.insert(b"touched", b"v2").unwrap();
        clock.advance(Duration::from_millis(1));

        assert_eq!(keyspace.get(b"untouched").unwrap(), None);
        assert_eq!(
            keyspace.get(b"touched").unwrap().as_deref(),
            Some(&b"v2"[..])
        );

        clock.advance(WIDTH);
        let report = keyspace.compact(&Expiry::whole()).unwrap();

        assert_eq!(report.buckets_dropped, 1);
        assert_eq!(report.buckets_remaining, 1);
        assert_eq!(keyspace.get(b"untouched").unwrap(), None);
        assert_eq!(
            keyspace.get(b"touched").unwrap().as_deref(),
            Some(&b"v2"[..])
        );
    }

    #[test]
    fn given_an_expired_bucket_within_grace_when_compacting_then_it_is_kept() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace.insert(b"player", b"session").unwrap();

        clock.advance(WIDTH + RETENTION);
        let report = keyspace.compact(&Expiry::whole()).unwrap();

        assert_eq!(keyspace.get(b"player").unwrap(), None);
        assert_eq!(report.buckets_dropped, 0);
        assert_eq!(keyspace.bucket_count(), 1);
    }

    #[test]
    fn given_compacted_buckets_then_their_trees_are_gone_and_later_writes_read_back() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        for bucket in 0..3u8 {
            keyspace.insert(&[b'k', bucket], b"old").unwrap();
            clock.advance(WIDTH);
        }
        assert_eq!(bucket_tree_names(&db).len(), 3);

        clock.advance(RETENTION + WIDTH);
        let report = keyspace.compact(&Expiry::whole()).unwrap();
        keyspace.insert(b"k-new", b"fresh").unwrap();

        assert_eq!(report.buckets_dropped, 3);
        assert_eq!(
            bucket_tree_names(&db),
            vec![bucket_tree_name("sessions", 1007)]
        );
        assert_eq!(
            keyspace.get(b"k-new").unwrap().as_deref(),
            Some(&b"fresh"[..])
        );
        assert_eq!(keyspace.get(&[b'k', 0]).unwrap(), None);
    }

    #[test]
    fn given_entries_inserted_each_when_read_then_each_is_in_the_current_bucket_and_newest_wins() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace.insert(b"a", b"a-old").unwrap();
        clock.advance(WIDTH);

        keyspace
            .insert_each(pairs(&[("a", "a-new"), ("b", "b1")]))
            .unwrap();

        assert_eq!(keyspace.get(b"a").unwrap().as_deref(), Some(&b"a-new"[..]));
        assert_eq!(keyspace.get(b"b").unwrap().as_deref(), Some(&b"b1"[..]));
        let (bucket, _) = keyspace.get_located(b"b").unwrap().unwrap();
        let (later, _) = {
            clock.advance(WIDTH);
            keyspace.insert(b"c", b"c1").unwrap();
            keyspace.get_located(b"c").unwrap().unwrap()
        };
        assert!(bucket < later, "written to the bucket current at the time");
    }

    #[test]
    fn given_copies_in_several_buckets_when_ranging_then_each_key_once_with_newest_value() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace.insert(b"a", b"a-expired").unwrap();
        keyspace.insert(b"z", b"z-expired").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"b", b"b1").unwrap();
        keyspace.insert(b"c", b"c1").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"c", b"c2").unwrap();
        keyspace.insert(b"d", b"d2").unwrap();
        clock.advance(WIDTH);
        keyspace
            .insert_each(pairs(&[("b", "b3"), ("e", "e3")]))
            .unwrap();
        // Bucket 0 is now expired but not compacted: "a" and "z" must not show up.
        clock.advance(RETENTION - 2 * WIDTH);
        assert_eq!(keyspace.bucket_count(), 4);

        let forward = collect_entries(keyspace.range(.., Direction::Forward).unwrap());
        let reverse = collect_entries(keyspace.range(.., Direction::Reverse).unwrap());

        let expected = pairs(&[("b", "b3"), ("c", "c2"), ("d", "d2"), ("e", "e3")]);
        assert_eq!(forward, expected);
        assert_eq!(reverse, expected.into_iter().rev().collect::<Vec<_>>());
        assert_eq!(keyspace.get(b"a").unwrap(), None);
    }

    #[test]
    fn given_several_buckets_when_paging_a_bounded_reverse_range_then_pages_join_up() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        for key in 0..30u8 {
            keyspace.insert(&[key], &[key]).unwrap();
            if key % 10 == 9 {
                clock.advance(WIDTH);
            }
        }

        let first_page = collect_entries(
            keyspace
                .range(vec![5]..vec![20], Direction::Reverse)
                .unwrap()
                .take(4),
        );
        let last_key_of_first_page = first_page.last().unwrap().0.clone();
        let second_page = collect_entries(
            keyspace
                .range(vec![5]..last_key_of_first_page, Direction::Reverse)
                .unwrap(),
        );

        let all_keys: Vec<u8> = first_page
            .iter()
            .chain(&second_page)
            .map(|(key, _)| key[0])
            .collect();
        assert_eq!(first_page.len(), 4);
        assert_eq!(all_keys, (5..20u8).rev().collect::<Vec<_>>());
    }

    #[test]
    fn given_prefixed_keys_in_several_buckets_when_scanning_a_prefix_then_only_live_matches() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace.insert(b"user/1/old", b"expired").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"user/1/a", b"a1").unwrap();
        keyspace.insert(b"user/2/a", b"other user").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"user/1/a", b"a2").unwrap();
        keyspace.insert(b"user/1/b", b"b2").unwrap();
        keyspace.insert(b"user/10/a", b"not user 1").unwrap();
        clock.advance(RETENTION - WIDTH);

        let forward = collect_entries(
            keyspace
                .scan_prefix(b"user/1/", Direction::Forward)
                .unwrap(),
        );
        let reverse = collect_entries(
            keyspace
                .scan_prefix(b"user/1/", Direction::Reverse)
                .unwrap(),
        );

        let expected = pairs(&[("user/1/a", "a2"), ("user/1/b", "b2")]);
        assert_eq!(forward, expected);
        assert_eq!(reverse, expected.into_iter().rev().collect::<Vec<_>>());
    }

    #[test]
    fn given_copies_in_several_buckets_when_removed_then_no_copy_is_readable() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace.insert(b"evicted", b"v1").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"evicted", b"v2").unwrap();
        keyspace.insert(b"kept", b"k").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"evicted", b"v3").unwrap();

        let removed = keyspace.remove(b"evicted").unwrap();

        assert!(removed);
        assert_eq!(keyspace.get(b"evicted").unwrap(), None);
        assert_eq!(
            collect_entries(keyspace.range(.., Direction::Forward).unwrap()),
            pairs(&[("kept", "k")])
        );
        assert!(!keyspace.remove(b"evicted").unwrap());
    }

    #[test]
    fn given_a_flushed_keyspace_when_the_db_is_reopened_then_all_buckets_are_found() {
        let directory = tempfile::tempdir().unwrap();
        let sled_config = sled::Config::new().path(directory.path());
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        {
            let db = sled_config.open().unwrap();
            let keyspace = open_sessions(&db, &clock);
            keyspace.insert(b"first", b"1").unwrap();
            clock.advance(WIDTH);
            keyspace.insert(b"second", b"2").unwrap();
            keyspace.flush().unwrap();
        }

        let db = crate::storage::reopen_db(&sled_config);
        let reopened = open_sessions(&db, &clock);

        assert_eq!(reopened.bucket_count(), 2);
        assert_eq!(reopened.get(b"first").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(
            collect_entries(reopened.range(.., Direction::Forward).unwrap()),
            pairs(&[("first", "1"), ("second", "2")])
        );
    }

    #[test]
    fn given_compacted_buckets_when_the_db_is_reopened_then_they_stay_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let sled_config = sled::Config::new().path(directory.path());
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        {
            let db = sled_config.open().unwrap();
            let keyspace = open_sessions(&db, &clock);
            keyspace.insert(b"old", b"1").unwrap();
            clock.advance(WIDTH + RETENTION + WIDTH);
            keyspace.insert(b"new", b"2").unwrap();
            assert_eq!(
                keyspace.compact(&Expiry::whole()).unwrap().buckets_dropped,
                1
            );
            keyspace.flush().unwrap();
        }

        let db = crate::storage::reopen_db(&sled_config);
        let reopened = open_sessions(&db, &clock);

        assert_eq!(reopened.bucket_count(), 1);
        assert_eq!(bucket_tree_names(&db).len(), 1);
        assert_eq!(reopened.get(b"new").unwrap().as_deref(), Some(&b"2"[..]));
    }

    fn open_sessions_in_own_dbs(
        db: &sled::Db,
        clock: &Arc<ManualClock>,
        placement: &Placement,
    ) -> TimeKeyspace {
        TimeKeyspace::open_placed(db, sessions_config(), clock.clone(), placement.clone())
            .expect("keyspace opens")
    }

    fn bucket_dirs(placement: &Placement) -> Vec<String> {
        let Placement::OwnDbs(dbs) = placement else {
            panic!("not bucket dbs")
        };
        let mut names: Vec<String> = std::fs::read_dir(dbs.keyspace_dir("sessions"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn given_buckets_in_own_dbs_when_compacted_then_expired_directories_are_deleted_and_live_ones_read()
     {
        let db = temporary_db();
        let (_directory, placement) = temporary_bucket_dbs();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions_in_own_dbs(&db, &clock, &placement);
        for bucket in 0..3u8 {
            keyspace.insert(&[b'k', bucket], b"old").unwrap();
            clock.advance(WIDTH);
        }
        assert_eq!(bucket_dirs(&placement).len(), 3);
        assert!(
            bucket_tree_names(&db).is_empty(),
            "no bucket tree in the db"
        );

        clock.advance(RETENTION + WIDTH);
        keyspace.insert(b"k-new", b"fresh").unwrap();
        let report = keyspace.compact(&Expiry::whole()).unwrap();

        assert_eq!(report.buckets_dropped, 3);
        assert_eq!(report.records_removed, 0, "no record is removed one by one");
        assert_eq!(bucket_dirs(&placement), vec![format!("{:020}", 1007)]);
        assert_eq!(
            keyspace.get(b"k-new").unwrap().as_deref(),
            Some(&b"fresh"[..])
        );
        assert_eq!(keyspace.get(&[b'k', 0]).unwrap(), None);
    }

    #[test]
    fn given_a_directory_with_big_files_when_removed_gradually_then_nothing_is_left() {
        let directory = tempfile::tempdir().unwrap();
        let bucket = directory.path().join("00000000000000000001");
        std::fs::create_dir_all(bucket.join("blobs")).unwrap();
        std::fs::write(
            bucket.join("db"),
            vec![7u8; (DELETE_STEP_BYTES * 2 + 123) as usize],
        )
        .unwrap();
        std::fs::write(bucket.join("blobs").join("1"), b"blob").unwrap();

        remove_gradually(&bucket).unwrap();

        assert!(!bucket.exists());
    }

    #[test]
    fn given_buckets_in_own_dbs_when_reopened_then_each_is_adopted_and_reads_back() {
        let directory = tempfile::tempdir().unwrap();
        let sled_config = sled::Config::new().path(directory.path().join("main"));
        let (_buckets, placement) = temporary_bucket_dbs();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        {
            let db = sled_config.open().unwrap();
            let keyspace = open_sessions_in_own_dbs(&db, &clock, &placement);
            keyspace.insert(b"first", b"1").unwrap();
            clock.advance(WIDTH);
            keyspace.insert(b"second", b"2").unwrap();
            keyspace.flush().unwrap();
        }

        let db = crate::storage::reopen_db(&sled_config);
        let reopened = open_sessions_in_own_dbs(&db, &clock, &placement);

        assert_eq!(reopened.bucket_count(), 2);
        assert_eq!(
            collect_entries(reopened.range(.., Direction::Forward).unwrap()),
            pairs(&[("first", "1"), ("second", "2")])
        );
    }

    #[test]
    fn given_copies_in_several_bucket_dbs_when_removed_then_no_copy_is_readable() {
        let db = temporary_db();
        let (_directory, placement) = temporary_bucket_dbs();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions_in_own_dbs(&db, &clock, &placement);
        keyspace.insert(b"evicted", b"old").unwrap();
        clock.advance(WIDTH);
        keyspace.insert(b"evicted", b"new").unwrap();

        assert!(keyspace.remove(b"evicted").unwrap());

        assert_eq!(keyspace.get(b"evicted").unwrap(), None);
    }

    #[test]
    fn given_buckets_as_trees_when_opened_as_own_dbs_then_open_refuses_and_says_to_rebuild() {
        let db = temporary_db();
        let (_directory, placement) = temporary_bucket_dbs();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        open_sessions(&db, &clock).insert(b"k", b"v").unwrap();

        let refused = TimeKeyspace::open_placed(&db, sessions_config(), clock.clone(), placement);

        match refused {
            Err(error @ KeyspaceError::PlacementChanged { .. }) => {
                assert!(error.to_string().contains("--rebuild"), "{error}");
            }
            other => panic!("expected PlacementChanged, got {other:?}"),
        }
    }

    #[test]
    fn given_an_existing_keyspace_when_reopened_with_another_bucket_width_then_open_refuses() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        open_sessions(&db, &clock).insert(b"k", b"v").unwrap();
        let wider = KeyspaceConfig {
            bucket_width: WIDTH * 2,
            ..sessions_config()
        };

        let reopened = TimeKeyspace::open(&db, wider, clock.clone());

        assert!(matches!(
            reopened,
            Err(KeyspaceError::BucketWidthChanged {
                stored_millis: WIDTH_MILLIS,
                configured_millis: 120_000,
                ..
            })
        ));
    }

    #[test]
    fn given_two_keyspaces_in_one_db_then_they_neither_see_nor_drop_each_other() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let sessions = open_sessions(&db, &clock);
        let sessions_v2 = TimeKeyspace::open(
            &db,
            KeyspaceConfig {
                name: "sessions_v2".to_owned(),
                retention: RETENTION * 10,
                ..sessions_config()
            },
            clock.clone(),
        )
        .unwrap();
        sessions.insert(b"k", b"v1").unwrap();
        sessions_v2.insert(b"k", b"v2").unwrap();

        clock.advance(WIDTH + RETENTION + WIDTH);
        sessions.compact(&Expiry::whole()).unwrap();

        assert_eq!(sessions.get(b"k").unwrap(), None);
        assert_eq!(sessions_v2.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(sessions_v2.bucket_count(), 1);
    }

    #[test]
    fn given_a_bucket_of_100k_records_when_it_expires_then_compaction_drops_it_whole() {
        const RECORDS: usize = 100_000;
        const RECORDS_PER_BATCH: usize = 10_000;
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        for batch_start in (0..RECORDS).step_by(RECORDS_PER_BATCH) {
            let batch = (batch_start..batch_start + RECORDS_PER_BATCH).map(|record| {
                let key = u32::try_from(record).unwrap().to_be_bytes().to_vec();
                (key, b"session".to_vec())
            });
            keyspace.insert_each(batch).unwrap();
        }
        let bucket_tree = db
            .open_tree(bucket_tree_name("sessions", 1000))
            .expect("bucket tree exists");
        assert_eq!(bucket_tree.len(), RECORDS);
        drop(bucket_tree);

        clock.advance(WIDTH + RETENTION + WIDTH);
        let report = keyspace.compact(&Expiry::whole()).unwrap();

        assert_eq!(report.buckets_dropped, 1);
        assert_eq!(keyspace.bucket_count(), 0);
        assert!(bucket_tree_names(&db).is_empty());
        assert_eq!(keyspace.get(&0u32.to_be_bytes()).unwrap(), None);
        assert_eq!(keyspace.range(.., Direction::Forward).unwrap().count(), 0);
    }

    /// A keyspace whose first bucket holds `records` records, with the clock moved to where
    /// that bucket may be dropped.
    fn expired_bucket_of(records: u32) -> (sled::Db, TimeKeyspace) {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        keyspace
            .insert_each((0..records).map(|record| (record.to_be_bytes().to_vec(), vec![7; 64])))
            .unwrap();
        clock.advance(WIDTH + RETENTION + WIDTH);
        (db, keyspace)
    }

    #[test]
    fn given_a_paced_expiry_when_compacting_then_the_bucket_is_emptied_record_by_record_then_dropped()
     {
        let (db, keyspace) = expired_bucket_of(1_000);
        let expiry = Expiry::paced(10_000_000, CancellationToken::new());

        let report = keyspace.compact(&expiry).unwrap();

        assert_eq!(report.buckets_dropped, 1);
        assert_eq!(report.records_removed, 1_000);
        assert_eq!(keyspace.bucket_count(), 0);
        assert!(bucket_tree_names(&db).is_empty());
        assert_eq!(keyspace.get(&0u32.to_be_bytes()).unwrap(), None);
    }

    #[test]
    fn given_a_whole_expiry_when_compacting_then_no_record_is_removed_one_by_one() {
        let (db, keyspace) = expired_bucket_of(1_000);

        let report = keyspace
            .compact(&Expiry::paced(0, CancellationToken::new()))
            .unwrap();

        assert_eq!(report.buckets_dropped, 1);
        assert_eq!(report.records_removed, 0);
        assert!(bucket_tree_names(&db).is_empty());
    }

    #[test]
    fn given_an_emptying_stopped_half_way_then_the_bucket_stays_expired_and_the_next_run_finishes()
    {
        let (db, keyspace) = expired_bucket_of(1_000);
        let stop = CancellationToken::new();
        // One step of REMOVES_PER_STEP records, then a pause of a second: the stop lands in it.
        let slow = Expiry::paced(REMOVES_PER_STEP as u64, stop.clone());
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stop.cancel();
        });

        let stopped = keyspace.compact(&slow).unwrap();
        stopper.join().unwrap();

        assert_eq!(stopped.buckets_dropped, 0);
        assert_eq!(stopped.records_removed, REMOVES_PER_STEP as u64);
        assert_eq!(keyspace.bucket_count(), 1, "kept for the next run");
        assert_eq!(
            keyspace.get(&999u32.to_be_bytes()).unwrap(),
            None,
            "still expired"
        );
        let tree = db.open_tree(bucket_tree_name("sessions", 1000)).unwrap();
        assert_eq!(tree.len(), 1_000 - REMOVES_PER_STEP);
        drop(tree);

        let finished = keyspace
            .compact(&Expiry::paced(10_000_000, CancellationToken::new()))
            .unwrap();

        assert_eq!(finished.buckets_dropped, 1);
        assert_eq!(finished.records_removed, (1_000 - REMOVES_PER_STEP) as u64);
        assert!(bucket_tree_names(&db).is_empty());
    }

    #[test]
    fn given_a_tree_handle_when_sled_drops_the_tree_then_the_handle_reports_collection_not_found() {
        // Pins the sled 0.34 behaviour that reads racing compaction rely on.
        let db = temporary_db();
        let tree = db.open_tree("ks/sessions/00000000000000000001").unwrap();
        tree.insert(b"k", b"v").unwrap();

        assert!(db.drop_tree("ks/sessions/00000000000000000001").unwrap());

        assert!(matches!(
            tree.get(b"k"),
            Err(sled::Error::CollectionNotFound(_))
        ));
        assert!(matches!(
            tree.insert(b"k", b"v"),
            Err(sled::Error::CollectionNotFound(_))
        ));
    }

    #[test]
    fn given_an_open_range_when_its_buckets_are_dropped_underneath_then_it_ends_without_error() {
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);
        let many_entries = (0..5_000u32).map(|record| (record.to_be_bytes().to_vec(), vec![0; 64]));
        keyspace.insert_each(many_entries).unwrap();
        let mut entries = keyspace.range(.., Direction::Forward).unwrap();
        assert!(entries.next().unwrap().is_ok());

        clock.advance(WIDTH + RETENTION + WIDTH);
        assert_eq!(
            keyspace.compact(&Expiry::whole()).unwrap().buckets_dropped,
            1
        );
        let remaining: Vec<_> = entries.collect();

        // It may still yield what sled had cached of the dropped tree, but never an error.
        assert!(remaining.iter().all(Result::is_ok));
        assert!(remaining.len() < 5_000);
    }

    #[test]
    fn given_many_threads_when_inserting_and_reading_concurrently_then_every_write_is_readable() {
        const THREADS: u8 = 8;
        const KEYS_PER_THREAD: u8 = 50;
        let db = temporary_db();
        let clock = Arc::new(ManualClock::new(START_MILLIS));
        let keyspace = open_sessions(&db, &clock);

        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let keyspace = keyspace.clone();
                let clock = clock.clone();
                scope.spawn(move || {
                    for key in 0..KEYS_PER_THREAD {
                        keyspace.insert(&[thread, key], &[key]).unwrap();
                        // Two advances per thread: 160 s in total whatever the interleaving,
                        // short of the 240 s a copy written at the start stays live.
                        if key % 25 == 0 {
                            clock.advance(Duration::from_secs(10));
                        }
                        assert_eq!(
                            keyspace.get(&[thread, key]).unwrap().as_deref(),
                            Some(&[key][..])
                        );
                    }
                });
            }
        });

        let all_entries = collect_entries(keyspace.range(.., Direction::Forward).unwrap());
        assert_eq!(
            all_entries.len(),
            usize::from(THREADS) * usize::from(KEYS_PER_THREAD)
        );
    }

    #[test]
    fn given_the_keyspace_then_it_can_be_shared_across_tasks() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<TimeKeyspace>();
        fn assert_send<T: Send>() {}
        assert_send::<MergedEntries>();
    }

    #[derive(Debug, Clone)]
    enum ModelOperation {
        Insert { key: u8, value: u8 },
        Remove { key: u8 },
        Advance { millis: u64 },
        Compact,
    }

    fn model_operation() -> impl Strategy<Value = ModelOperation> {
        prop_oneof![
            4 => (0..12u8, any::<u8>())
                .prop_map(|(key, value)| ModelOperation::Insert { key, value }),
            1 => (0..12u8).prop_map(|key| ModelOperation::Remove { key }),
            3 => (0..=RETENTION_MILLIS).prop_map(|millis| ModelOperation::Advance { millis }),
            1 => Just(ModelOperation::Compact),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn given_random_operations_then_reads_agree_with_a_last_write_model(
            operations in prop::collection::vec(model_operation(), 1..60),
        ) {
            let db = temporary_db();
            let clock = Arc::new(ManualClock::new(START_MILLIS + 12_345));
            let keyspace = open_sessions(&db, &clock);
            let geometry = BucketGeometry::from_durations(WIDTH, RETENTION);
            let mut model: BTreeMap<u8, (u8, u64)> = BTreeMap::new();

            for operation in operations {
                match operation {
                    ModelOperation::Insert { key, value } => {
                        keyspace.insert(&[key], &[value]).unwrap();
                        model.insert(key, (value, clock.now_millis()));
                    }
                    ModelOperation::Remove { key } => {
                        keyspace.remove(&[key]).unwrap();
                        model.remove(&key);
                    }
                    ModelOperation::Advance { millis } => {
                        clock.advance(Duration::from_millis(millis));
                    }
                    ModelOperation::Compact => {
                        keyspace.compact(&Expiry::whole()).unwrap();
                    }
                }

                let now_millis = clock.now_millis();
                let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|(_, (_, last_write_millis))| {
                        geometry.is_live(geometry.bucket_index_at(*last_write_millis), now_millis)
                    })
                    .map(|(key, (value, _))| (vec![*key], vec![*value]))
                    .collect();
                for key in 0..12u8 {
                    let expected_value = expected
                        .iter()
                        .find(|(expected_key, _)| expected_key[..] == [key])
                        .map(|(_, value)| value.clone());
                    let actual_value = keyspace.get(&[key]).unwrap().map(|value| value.to_vec());
                    prop_assert_eq!(actual_value, expected_value, "get of key {}", key);
                }
                let forward = collect_entries(keyspace.range(.., Direction::Forward).unwrap());
                prop_assert_eq!(&forward, &expected);
                let mut reverse = collect_entries(keyspace.range(.., Direction::Reverse).unwrap());
                reverse.reverse();
                prop_assert_eq!(&reverse, &expected);
            }
        }
    }
}
