//! Snapshots of sled trees through a real broker's object store: 200k entries out and back entry
//! for entry, a new snapshot replacing the previous one, and restoring when there is none.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use playhead_actors::journal::snapshot::{self, SnapshotMeta};
use playhead_actors::storage::dump;
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{DEFAULT_TIMEOUT, within};
use playhead_tests::system::temp_dir;
use tracing_subscriber::layer::SubscriberExt;

const SNAPSHOTTED_TREES: [&str; 3] = [
    "station_state",
    "user_playouts",
    "ks/view_history/00000000000000020000",
];
/// Present in every source db, never selected: must not reach the restored db.
const LOCAL_ONLY_TREE: &str = "local_only";
const ENTRIES: usize = 200_000;
const VALUE_BYTES: usize = 200;
/// Generous for 200k entries on 2 shared cores in a debug build.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

fn temporary_db() -> sled::Db {
    sled::Config::new()
        .temporary(true)
        .open()
        .expect("temporary sled db")
}

fn selected(name: &[u8]) -> bool {
    SNAPSHOTTED_TREES.iter().any(|tree| tree.as_bytes() == name)
}

/// Spreads `entries` over the snapshotted trees, values derived from `salt` and the index so
/// two fills with different salts differ in every value.
fn fill(db: &sled::Db, entries: usize, salt: u8) {
    for (tree_index, tree_name) in SNAPSHOTTED_TREES.iter().enumerate() {
        let tree = db.open_tree(tree_name).expect("open tree");
        let mut batch = sled::Batch::default();
        for index in (tree_index..entries).step_by(SNAPSHOTTED_TREES.len()) {
            let key = format!("entity-{index:08}");
            let value: Vec<u8> = (0..VALUE_BYTES)
                .map(|offset| (index + offset) as u8 ^ salt)
                .collect();
            batch.insert(key.as_bytes(), value);
        }
        tree.apply_batch(batch).expect("fill tree");
    }
    db.open_tree(LOCAL_ONLY_TREE)
        .expect("open tree")
        .insert(b"never", b"copied")
        .expect("insert");
}

/// Compares every entry of every snapshotted tree and checks nothing else was restored.
fn assert_same_trees(expected: &sled::Db, restored: &sled::Db) {
    for tree_name in SNAPSHOTTED_TREES {
        let expected_tree = expected.open_tree(tree_name).expect("open tree");
        let restored_tree = restored.open_tree(tree_name).expect("open tree");
        assert_eq!(
            restored_tree.len(),
            expected_tree.len(),
            "entries of {tree_name}"
        );
        for (expected_entry, restored_entry) in expected_tree.iter().zip(restored_tree.iter()) {
            assert_eq!(
                restored_entry.expect("restored entry"),
                expected_entry.expect("expected entry"),
                "in {tree_name}"
            );
        }
    }
    let local_only_restored = restored
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == LOCAL_ONLY_TREE.as_bytes());
    assert!(!local_only_restored, "an unselected tree was restored");
}

async fn bucket(nats: &NatsServer) -> ObjectStore {
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    within(
        "the snapshot bucket",
        DEFAULT_TIMEOUT,
        snapshot::ensure_bucket(&jetstream, 1),
    )
    .await
    .expect("snapshot bucket")
}

fn assert_no_scratch_left(scratch: &Path) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .expect("scratch dir")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    assert!(left.is_empty(), "scratch files left behind: {left:?}");
}

/// The `*_seconds` fields that `take` and `restore` log, by (kind, group).
///
/// A global subscriber, not a thread-scoped one: with a single scoped dispatcher, tracing-core
/// computes a callsite's interest from the default of whichever thread hits it first, so a
/// parallel test reaching the snapshot callsites first would silence them for good.
#[derive(Clone, Default)]
struct PhaseLog(Arc<Mutex<BTreeMap<(String, u64), Phases>>>);

/// Seconds by field name (`dump_seconds`, `upload_seconds`, ...).
type Phases = BTreeMap<&'static str, f64>;

const SNAPSHOT_LOG_TARGET: &str = "playhead_actors::journal::snapshot";

fn phase_log() -> &'static PhaseLog {
    static LOG: OnceLock<PhaseLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = PhaseLog::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log.clone()))
            .expect("no other global subscriber in the integration tests");
        log
    })
}

impl PhaseLog {
    #[track_caller]
    fn seconds(&self, kind: &str, group: u64, phase: &str) -> f64 {
        let log = self.0.lock().expect("phase log");
        log.get(&(kind.to_owned(), group))
            .and_then(|phases| phases.get(phase).copied())
            .unwrap_or_else(|| panic!("no {phase} logged for {kind}/{group}: {log:?}"))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PhaseLog {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.target() == SNAPSHOT_LOG_TARGET {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        if let (Some(kind), Some(group)) = (fields.kind, fields.group) {
            self.0
                .lock()
                .expect("phase log")
                .entry((kind, group))
                .or_default()
                .extend(fields.seconds);
        }
    }
}

#[derive(Default)]
struct EventFields {
    kind: Option<String>,
    group: Option<u64>,
    seconds: Vec<(&'static str, f64)>,
}

impl tracing::field::Visit for EventFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name().ends_with("_seconds") {
            self.seconds.push((field.name(), value));
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "group" {
            self.group = Some(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "kind" {
            self.kind = Some(format!("{value:?}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_200k_entries_restores_entry_for_entry() {
    let phases = phase_log();
    let nats = NatsServer::start();
    let store = bucket(&nats).await;
    let scratch = temp_dir();
    let source = temporary_db();
    fill(&source, ENTRIES, 0);

    let taken = within(
        "the snapshot upload",
        TRANSFER_TIMEOUT,
        snapshot::take(
            &source,
            selected,
            &store,
            SnapshotMeta::new("user", 1, 4_242, 16, 1_700_000_000_000),
            scratch.path(),
        ),
    )
    .await
    .expect("take");

    assert_eq!(taken.entries, ENTRIES as u64);
    assert!(taken.bytes > (ENTRIES * VALUE_BYTES) as u64);
    assert_eq!(
        (taken.journal_seq, taken.format),
        (4_242, dump::FORMAT_VERSION)
    );
    let latest = within(
        "latest",
        DEFAULT_TIMEOUT,
        snapshot::latest(&store, "user", 1),
    )
    .await
    .expect("latest");
    assert_eq!(latest, Some(taken.clone()));

    let restored = temporary_db();
    let restored_meta = within(
        "the snapshot restore",
        TRANSFER_TIMEOUT,
        snapshot::restore(&restored, &store, "user", 1, scratch.path()),
    )
    .await
    .expect("restore");

    assert_eq!(restored_meta, Some(taken.clone()));
    assert_same_trees(&source, &restored);
    assert_no_scratch_left(scratch.path());
    eprintln!(
        "snapshot of {} entries ({:.1} MiB): dump {:.2} s, upload {:.2} s, download {:.2} s, \
         restore {:.2} s",
        taken.entries,
        taken.bytes as f64 / (1024.0 * 1024.0),
        phases.seconds("user", 1, "dump_seconds"),
        phases.seconds("user", 1, "upload_seconds"),
        phases.seconds("user", 1, "download_seconds"),
        phases.seconds("user", 1, "restore_seconds"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_snapshot_replaces_the_previous_one() {
    let nats = NatsServer::start();
    let store = bucket(&nats).await;
    let scratch = temp_dir();
    let older = temporary_db();
    fill(&older, 3_000, 0x55);
    let newer = temporary_db();
    fill(&newer, 2_000, 0xaa);

    for (db, journal_seq) in [(&older, 10), (&newer, 20)] {
        within(
            "a snapshot upload",
            TRANSFER_TIMEOUT,
            snapshot::take(
                db,
                selected,
                &store,
                SnapshotMeta::new("station", 2, journal_seq, 16, 1_700_000_000_000),
                scratch.path(),
            ),
        )
        .await
        .expect("take");
    }

    let latest = within(
        "latest",
        DEFAULT_TIMEOUT,
        snapshot::latest(&store, "station", 2),
    )
    .await
    .expect("latest")
    .expect("a snapshot exists");
    assert_eq!(latest.journal_seq, 20);
    assert_eq!(latest.entries, 2_000);
    let restored = temporary_db();
    within(
        "the snapshot restore",
        TRANSFER_TIMEOUT,
        snapshot::restore(&restored, &store, "station", 2, scratch.path()),
    )
    .await
    .expect("restore")
    .expect("a snapshot exists");
    assert_same_trees(&newer, &restored);
    assert_no_scratch_left(scratch.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_group_without_a_snapshot_finds_none_and_writes_nothing() {
    let nats = NatsServer::start();
    let store = bucket(&nats).await;
    // Opening the bucket again is idempotent.
    let store_again = bucket(&nats).await;
    let scratch = temp_dir();
    let source = temporary_db();
    fill(&source, 300, 0);
    within(
        "a snapshot upload of another group",
        TRANSFER_TIMEOUT,
        snapshot::take(
            &source,
            selected,
            &store,
            SnapshotMeta::new("user", 0, 1, 16, 1_700_000_000_000),
            scratch.path(),
        ),
    )
    .await
    .expect("take");

    let target = temporary_db();
    let restored = within(
        "the snapshot restore",
        DEFAULT_TIMEOUT,
        snapshot::restore(&target, &store_again, "user", 5, scratch.path()),
    )
    .await
    .expect("restore");
    let latest = within(
        "latest",
        DEFAULT_TIMEOUT,
        snapshot::latest(&store_again, "user", 5),
    )
    .await
    .expect("latest");

    assert_eq!(restored, None);
    assert_eq!(latest, None);
    assert_eq!(target.tree_names().len(), 1, "only sled's default tree");
    assert_no_scratch_left(scratch.path());
}
