//! A node whose local store is gone (deleted, or moved aside with `--rebuild`) rebuilds it from
//! the latest snapshot and the journal before serving, and answers exactly as before.

use std::time::Duration;

use async_nats::jetstream;
use playhead_actors::config::NodeConfig;
use playhead_actors::domain::user::UserDecider;
use playhead_client::service::nats_auth::NatsRole;
use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::mixed::check::{assert_answers_match, assert_journal_matches};
use playhead_tests::mixed::model::Model;
use playhead_tests::mixed::workload::{self, Workload};
use playhead_tests::model::publish_pipelined;
use playhead_tests::system::{NodeProcess, TestGateway, temp_dir, wait_until_drained};

const DRAIN: Duration = Duration::from_secs(60);

async fn drained(jetstream: &jetstream::Context) {
    for inbox in Inbox::ALL.iter().copied() {
        wait_until_drained(jetstream, inbox, DRAIN).await;
    }
}

async fn publish(jetstream: &jetstream::Context, workload: &Workload) {
    publish_pipelined(jetstream, workload.catalog.clone()).await;
    wait_until_drained(jetstream, Inbox::Catalog, DRAIN).await;
    publish_pipelined(jetstream, workload.messages.clone()).await;
    drained(jetstream).await;
}

async fn journal_len(jetstream: &jetstream::Context) -> u64 {
    jetstream
        .get_stream(EVENTS_STREAM)
        .await
        .expect("journal")
        .info()
        .await
        .expect("journal info")
        .state
        .messages
}

/// Every answer equals the model, and the journal holds exactly the model's events (the
/// rebuild appended nothing).
async fn assert_serves_the_model(
    nats: &NatsServer,
    jetstream: &jetstream::Context,
    workload: &Workload,
) {
    let config = NodeConfig::default();
    let decider = UserDecider {
        player: config.player_policy(),
        playout: config.playout_policy(),
    };
    let model = Model::from_inboxes(jetstream, &decider, config.ingest.max_message_bytes).await;
    assert_journal_matches(jetstream, &model).await;
    let gateway = TestGateway::start(&nats.url()).await;
    assert_answers_match(
        &gateway,
        &model,
        &workload.stations,
        &workload.users,
        &decider.player,
        &decider.playout,
    )
    .await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_store_is_rebuilt_from_the_journal_and_answers_as_before() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let workload = workload::generate(3, 10, 20, 3_000, &nats.credentials(NatsRole::Admin));
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    publish(&jetstream, &workload).await;
    assert_serves_the_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
    let events = journal_len(&jetstream).await;

    std::fs::remove_dir_all(data.path().join("state")).expect("delete the local store");
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    let log = std::fs::read_to_string(node.process.log_path()).unwrap_or_default();
    assert!(
        log.contains("journal replayed"),
        "the node rebuilt before serving:\n{}",
        node.process.log_tail(30)
    );
    assert_serves_the_model(&nats, &jetstream, &workload).await;
    assert_eq!(
        journal_len(&jetstream).await,
        events,
        "rebuilding appends nothing"
    );
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");

    // --rebuild moves a store that looks fine aside and rebuilds it just the same.
    let mut node =
        NodeProcess::start_with_args(&nats.url(), data.path(), &["--rebuild"], &[]).await;
    eventually(
        "the old store to be moved aside",
        Duration::from_secs(5),
        || async {
            std::fs::read_dir(data.path())
                .ok()?
                .filter_map(Result::ok)
                .any(|entry| {
                    entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("state.before-rebuild-")
                })
                .then_some(())
        },
    )
    .await;
    assert_serves_the_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");

    // A store of the earlier layout (a session bucket as a tree of the main db) is moved aside
    // and rebuilt too, instead of serving without the buckets it holds.
    {
        let db = sled::open(data.path().join("state")).expect("open the stopped store");
        db.open_tree("ks/player_sessions/00000000000000000001")
            .and_then(|tree| tree.insert(b"user/playlist", b"an old session".as_slice()))
            .expect("write an old-layout bucket");
        db.flush().expect("flush");
    }
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    assert!(
        std::fs::read_dir(data.path())
            .expect("the data dir")
            .filter_map(Result::ok)
            .any(|entry| entry
                .file_name()
                .to_string_lossy()
                .starts_with("state.old-layout-")),
        "the old-layout store was moved aside:\n{}",
        node.process.log_tail(30)
    );
    assert_serves_the_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_serving_bound_the_replay_and_the_rebuild_answers_as_before() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let workload = workload::generate(9, 10, 20, 4_000, &nats.credentials(NatsRole::Admin));
    // A snapshot every 2 s: several are taken while the workload is being applied.
    let env = [("PLAYHEAD_JOURNAL__SNAPSHOT_INTERVAL_SECS", "2")];
    let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    publish_pipelined(&jetstream, workload.catalog.clone()).await;
    wait_until_drained(&jetstream, Inbox::Catalog, DRAIN).await;
    let (covered, tail) = workload.messages.split_at(workload.messages.len() * 3 / 4);
    publish_pipelined(&jetstream, covered.to_vec()).await;
    drained(&jetstream).await;
    // One more snapshot once everything so far is applied.
    let taken = node.plain_log().matches("snapshots taken").count();
    eventually(
        "a snapshot after the covered part",
        Duration::from_secs(20),
        || {
            let now = node.plain_log().matches("snapshots taken").count();
            async move { (now > taken).then_some(()) }
        },
    )
    .await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
    let covered_events = journal_len(&jetstream).await;

    // The tail is applied by a node that takes no snapshot: only the journal holds it.
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    publish_pipelined(&jetstream, tail.to_vec()).await;
    drained(&jetstream).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
    let events = journal_len(&jetstream).await;
    assert!(events > covered_events, "the tail decided something");

    std::fs::remove_dir_all(data.path().join("state")).expect("delete the local store");
    let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    let log = node.plain_log();
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("snapshot restored") && line.contains("covers="))
            .count(),
        playhead_actors::node::snapshots::KINDS.len(),
        "every kind's snapshot was restored:\n{}",
        node.process.log_tail(30)
    );
    let replayed_from = log
        .lines()
        .find(|line| line.contains("replaying the journal"))
        .and_then(|line| line.split("from=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|from| from.parse::<u64>().ok());
    assert!(
        replayed_from.is_some_and(|from| from > covered_events / 2 && from <= covered_events + 1),
        "the replay starts where the snapshots end, not at the beginning: {replayed_from:?}, \
         snapshots taken up to about {covered_events} of {events}"
    );
    assert_serves_the_model(&nats, &jetstream, &workload).await;
    assert_eq!(
        journal_len(&jetstream).await,
        events,
        "rebuilding appends nothing"
    );
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
}
