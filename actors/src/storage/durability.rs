//! Group commit on one flusher thread, and the main-db writes that must wait for the bucket
//! dbs.
//!
//! Callers queue waiters; the thread takes every waiter queued so far and every deferred main-db
//! write (a round), flushes the bucket dbs, writes the deferred writes in the order they came,
//! then flushes the main db and answers the round's waiters. Writes made before a waiter was
//! queued are covered by the round that answers it. One thread, woken once per
//! round, instead of `flush_async` per caller (which wakes sled's pool twice each time).
//!
//! **Deferred main-db writes.** An entity commit that wrote bucketed records must not let its
//! main-db records (which hold its journal position) reach disk first. Rather than wait for a
//! bucket flush in the middle of its commit (a round trip to this thread per commit: measured,
//! a sixth of the node's CPU in the heartbeat storm), it hands its main-db writes here: they are
//! written right after the next bucket flush, so no main-db flush (sled's own, every 500 ms,
//! included) can carry them before the bucketed records they vouch for are on disk. Until they
//! are written, the owner's later main-db writes queue behind them (order per owner), and a load
//! of the owner waits for them ([`Durability::settled`]). Deferring wakes nobody: the waiter
//! that follows every commit (the batch's flush before its acknowledgement) starts the round.

use std::collections::HashMap;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::StorageError;
use super::keyspace::TimeKeyspace;

/// The entity whose main-db writes a [`MainWrites`] holds: its family's token and its id.
pub type Owner = (&'static str, String);

/// How soon the thread tries again to write deferred writes a failure held back, with no new
/// request to wake it.
const RETRY_HELD_BACK: Duration = Duration::from_millis(100);

/// Main-db writes of one commit, in order: sled recovers its log as a prefix, so a crash keeps
/// a prefix of them (records before the bookkeeping that vouches for them).
#[derive(Default)]
pub struct MainWrites {
    inserts: Vec<(sled::Tree, Vec<u8>, Vec<u8>)>,
    /// Called once they are written (fault injection: "the main db reached disk now").
    after_written: Option<Box<dyn FnOnce() + Send>>,
}

impl MainWrites {
    pub fn insert(&mut self, tree: &sled::Tree, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.inserts.push((tree.clone(), key.into(), value));
    }

    /// Calls `hook` right after the writes are made, wherever that happens.
    pub fn after_written(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.after_written = Some(Box::new(hook));
    }

    /// Writes them now, in order.
    pub fn write(mut self) -> Result<(), StorageError> {
        self.write_all()
    }

    /// The writes `fill` makes, written now (records written outside an entity commit).
    pub fn write_now(fill: impl FnOnce(&mut MainWrites)) -> Result<(), StorageError> {
        let mut writes = MainWrites::default();
        fill(&mut writes);
        writes.write()
    }

    /// Writes those not written yet, in order; after a failure, what remains is still held.
    fn write_all(&mut self) -> Result<(), StorageError> {
        let mut done = 0;
        let result = self.inserts.iter().try_for_each(|(tree, key, value)| {
            tree.insert(key.as_slice(), value.as_slice())?;
            done += 1;
            Ok::<_, sled::Error>(())
        });
        self.inserts.drain(..done);
        result?;
        if let Some(hook) = self.after_written.take() {
            hook();
        }
        Ok(())
    }
}

/// Answered once every write made before it was queued is on disk.
type Waiter = tokio::sync::oneshot::Sender<Result<(), String>>;

struct Deferred {
    owner: Owner,
    writes: MainWrites,
}

/// The deferred writes not taken by a round yet, and how many deferred writes of each owner
/// are not written yet.
#[derive(Default)]
struct Pending {
    queue: Vec<Deferred>,
    owners: HashMap<Owner, usize>,
}

pub(super) struct Durability {
    waiters: std::sync::mpsc::Sender<Waiter>,
    pending: Arc<Mutex<Pending>>,
}

impl Durability {
    /// Starts the flusher thread; it ends (and lets go of `db`) once every `Storage` is
    /// dropped, after writing what was deferred.
    pub(super) fn new(db: sled::Db, bucketed: Vec<TimeKeyspace>) -> Self {
        let (waiters, queue) = std::sync::mpsc::channel::<Waiter>();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let flusher = Flusher {
            db,
            bucketed,
            pending: pending.clone(),
            held_back: Vec::new(),
        };
        std::thread::Builder::new()
            .name("playhead-flusher".into())
            .spawn(move || flusher.run(queue))
            .expect("cannot start the flusher thread");
        Self { waiters, pending }
    }

    /// Returns once every write made before the call is on disk, bucket dbs first.
    pub(super) async fn wait(&self) -> Result<(), StorageError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.waiters.send(done).map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(StorageError::Flush)
    }

    /// Writes `writes` now, or — when they must wait for the bucket dbs (`after_buckets`), or
    /// `owner` has writes still deferred — right after the next bucket flush, in order.
    pub(super) fn commit(
        &self,
        owner: Owner,
        writes: MainWrites,
        after_buckets: bool,
    ) -> Result<(), StorageError> {
        let mut pending = lock(&self.pending);
        if !after_buckets && !pending.owners.contains_key(&owner) {
            drop(pending);
            return writes.write();
        }
        *pending.owners.entry(owner.clone()).or_default() += 1;
        pending.queue.push(Deferred { owner, writes });
        Ok(())
    }

    /// Returns once `owner`'s deferred writes are written (at once when it has none).
    pub(super) async fn settled(&self, owner: &Owner) -> Result<(), StorageError> {
        if !lock(&self.pending).owners.contains_key(owner) {
            return Ok(());
        }
        // The round that answers this takes them, if none took them before.
        self.wait().await
    }
}

// Every critical section is a queue or map operation that cannot leave it inconsistent, so a
// poisoned lock is still safe to use.
fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gone() -> StorageError {
    StorageError::Flush("the flusher thread stopped".into())
}

struct Flusher {
    db: sled::Db,
    bucketed: Vec<TimeKeyspace>,
    pending: Arc<Mutex<Pending>>,
    /// Deferred writes taken and not written yet (a failed round's, first in the next round).
    held_back: Vec<Deferred>,
}

impl Flusher {
    fn run(mut self, queue: std::sync::mpsc::Receiver<Waiter>) {
        loop {
            let first = if self.held_back.is_empty() {
                queue.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                queue.recv_timeout(RETRY_HELD_BACK)
            };
            let mut round: Vec<Waiter> = match first {
                Ok(first) => vec![first],
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => break,
            };
            round.extend(queue.try_iter());
            self.round(round);
        }
        // Every `Storage` is gone: what is still deferred goes in with one last round, and
        // onto disk.
        self.round(Vec::new());
        if let Err(error) = self.db.flush() {
            tracing::warn!(%error, "the last flush of the main db failed");
        }
    }

    fn round(&mut self, waiters: Vec<Waiter>) {
        // Taken before the bucket flush: the bucketed records they vouch for were written
        // before they were deferred, so this flush covers them.
        self.held_back.append(&mut lock(&self.pending).queue);
        let buckets = self
            .bucketed
            .iter()
            .try_for_each(|keyspace| keyspace.flush_buckets().map(|_| ()))
            .map_err(|error| error.to_string());
        // Only once the bucketed records they vouch for are on disk.
        let written = buckets.and_then(|()| self.write_deferred());
        if waiters.is_empty() {
            return;
        }
        let main = written.and_then(|()| {
            self.db
                .flush()
                .map(|_| ())
                .map_err(|error| error.to_string())
        });
        for waiter in waiters {
            let _ = waiter.send(main.clone());
        }
    }

    /// Writes the deferred writes in order; a failure holds back the rest (the failed one
    /// first) for the next round.
    fn write_deferred(&mut self) -> Result<(), String> {
        let mut done = 0;
        let mut result = Ok(());
        for deferred in &mut self.held_back {
            if let Err(error) = deferred.writes.write_all() {
                result = Err(error.to_string());
                break;
            }
            done += 1;
        }
        if done > 0 {
            let mut pending = lock(&self.pending);
            for deferred in self.held_back.drain(..done) {
                if let Some(count) = pending.owners.get_mut(&deferred.owner) {
                    *count -= 1;
                    if *count == 0 {
                        pending.owners.remove(&deferred.owner);
                    }
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::NodeConfig;
    use crate::storage::clock::ManualClock;
    use crate::storage::{MainWrites, Owner, Storage};

    fn storage(directory: &std::path::Path) -> Storage {
        let clock = Arc::new(ManualClock::new(1_000_000));
        Storage::open(directory, &NodeConfig::default(), clock).unwrap()
    }

    fn owner(id: &str) -> Owner {
        ("user", id.to_owned())
    }

    fn put(tree: &sled::Tree, value: &str) -> MainWrites {
        let mut writes = MainWrites::default();
        writes.insert(tree, "key", value.as_bytes().to_vec());
        writes
    }

    /// A commit of `id` writing `value` to `tree`, after bucketed records or not.
    fn commit(storage: &Storage, id: &str, tree: &sled::Tree, value: &str, after_buckets: bool) {
        storage
            .commit_main(owner(id), put(tree, value), after_buckets)
            .unwrap();
    }

    fn read(tree: &sled::Tree) -> Option<String> {
        tree.get("key")
            .unwrap()
            .map(|value| String::from_utf8(value.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn given_a_commit_with_bucketed_records_when_committed_then_its_main_writes_wait_for_the_next_round()
     {
        let directory = tempfile::tempdir().unwrap();
        let storage = storage(directory.path());
        let tree = storage.db().open_tree("test").unwrap();

        commit(&storage, "ann", &tree, "1", true);
        assert_eq!(read(&tree), None, "written before the bucket flush");

        storage.make_durable().await.unwrap();
        assert_eq!(read(&tree).as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn given_an_owner_with_deferred_writes_when_it_commits_again_then_the_later_write_queues_behind()
     {
        let directory = tempfile::tempdir().unwrap();
        let storage = storage(directory.path());
        let tree = storage.db().open_tree("test").unwrap();
        let other = storage.db().open_tree("other").unwrap();

        commit(&storage, "ann", &tree, "1", true);
        // No bucketed records this time, but ann's first commit is still waiting.
        commit(&storage, "ann", &tree, "2", false);
        assert_eq!(read(&tree), None, "written ahead of the first commit");
        // Another owner with nothing deferred writes at once.
        commit(&storage, "bob", &other, "b", false);
        assert_eq!(read(&other).as_deref(), Some("b"));

        storage.make_durable().await.unwrap();
        assert_eq!(
            read(&tree).as_deref(),
            Some("2"),
            "the earlier commit landed last"
        );
        // Nothing waits any more: the next commit writes at once.
        commit(&storage, "ann", &tree, "3", false);
        assert_eq!(read(&tree).as_deref(), Some("3"));
    }

    #[tokio::test]
    async fn given_deferred_writes_when_their_owner_is_loaded_then_the_load_waits_for_them() {
        let directory = tempfile::tempdir().unwrap();
        let storage = storage(directory.path());
        let tree = storage.db().open_tree("test").unwrap();

        commit(&storage, "ann", &tree, "1", true);
        storage.main_settled(&owner("ann")).await.unwrap();

        assert_eq!(read(&tree).as_deref(), Some("1"));
    }

    #[test]
    fn given_deferred_writes_when_the_store_is_dropped_then_they_are_written() {
        let directory = tempfile::tempdir().unwrap();
        {
            let storage = storage(directory.path());
            let tree = storage.db().open_tree("test").unwrap();
            commit(&storage, "ann", &tree, "1", true);
        }
        // The flusher thread lets go of the db once it has written them.
        let config = sled::Config::new().path(directory.path());
        let db = crate::storage::reopen_db(&config);
        let tree = db.open_tree("test").unwrap();
        assert_eq!(read(&tree).as_deref(), Some("1"));
    }
}
