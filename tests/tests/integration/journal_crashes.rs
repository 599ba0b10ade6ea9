//! The journal is exactly-once whatever happens to the node: SIGKILLed at random points of a
//! mixed workload, or killed between an append and its local commit and kept down longer than
//! the broker's duplicate window, it neither loses nor repeats anything — every answer equals
//! the model, and every event is in the journal once, in order.

use std::time::Duration;

use async_nats::jetstream;
use playhead_actors::config::NodeConfig;
use playhead_actors::domain::user::UserDecider;
use playhead_proto::subjects::Inbox;
use playhead_tests::harness::NatsServer;
use playhead_tests::mixed::check::{assert_answers_match, assert_journal_matches};
use playhead_tests::mixed::model::Model;
use playhead_tests::mixed::workload::{self, Workload};
use playhead_tests::model::{Rng, publish_pipelined};
use playhead_tests::system::{
    NodeProcess, TEST_PARTITIONS, TestGateway, temp_dir, wait_until_drained,
};

const DRAIN: Duration = Duration::from_secs(120);

async fn drained(jetstream: &jetstream::Context) {
    for inbox in Inbox::ALL.iter().copied() {
        wait_until_drained(jetstream, inbox, TEST_PARTITIONS, DRAIN).await;
    }
}

/// Inbox messages not yet acknowledged, over every partition of every inbox.
async fn unfinished(jetstream: &jetstream::Context) -> u64 {
    let mut total = 0;
    for inbox in Inbox::ALL.iter().copied() {
        let stream = jetstream
            .get_stream(inbox.stream_name())
            .await
            .expect("inbox stream");
        for partition in 0..TEST_PARTITIONS {
            let info = stream
                .consumer_info(inbox.consumer_name(partition))
                .await
                .expect("consumer info");
            total += info.num_pending + info.num_ack_pending as u64;
        }
    }
    total
}

/// Compares everything the system answers and holds with the model of its inboxes.
async fn assert_matches_model(
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
    assert!(
        model.journal_len() > 1_000,
        "the workload decided too little to prove anything"
    );
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
async fn twenty_sigkills_during_a_mixed_workload_lose_and_repeat_nothing() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let workload = workload::generate(21, 24, 60, 20_000);
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    publish_pipelined(&jetstream, workload.catalog.clone()).await;
    wait_until_drained(&jetstream, Inbox::Catalog, TEST_PARTITIONS, DRAIN).await;

    // Publish while the node is being killed, so kills land at every stage of the work.
    let publisher = {
        let jetstream = jetstream.clone();
        let messages = workload.messages.clone();
        tokio::spawn(async move {
            for chunk in messages.chunks(1_000) {
                publish_pipelined(&jetstream, chunk.to_vec()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let mut rng = Rng::new(7);
    let mut kills_mid_work = 0;
    for _ in 0..20 {
        // The kill point is what is random here; nothing is waited for.
        tokio::time::sleep(Duration::from_millis(150 + rng.below(600))).await;
        node.process.kill();
        if unfinished(&jetstream).await > 0 {
            kills_mid_work += 1;
        }
        node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    }
    publisher.await.expect("publisher");
    drained(&jetstream).await;
    assert!(
        kills_mid_work >= 15,
        "only {kills_mid_work} of 20 kills came with work in hand; raise the message count"
    );
    assert_matches_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_longer_than_the_duplicate_window_after_an_append_repeats_nothing() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let workload = workload::generate(5, 6, 10, 2_000);
    // One-second duplicate window on the inboxes; the journal must not depend on any.
    let window = [("PLAYHEAD_INGEST__DUPLICATE_WINDOW_SECS", "1")];
    let node = NodeProcess::start(&nats.url(), data.path(), &window).await;
    publish_pipelined(&jetstream, workload.catalog.clone()).await;
    wait_until_drained(&jetstream, Inbox::Catalog, TEST_PARTITIONS, DRAIN).await;
    drop(node);
    publish_pipelined(&jetstream, workload.messages.clone()).await;
    // Each run appends a few decisions, then dies before committing them locally; it stays
    // down past the duplicate window, and the next run must find them in the journal.
    for _ in 0..5 {
        let mut env = window.to_vec();
        env.push(("PLAYHEAD_FAULTS", "crash_after_appends=7"));
        let mut node = NodeProcess::spawn(&nats.url(), data.path(), &env);
        let status = node.process.wait_for_exit(Duration::from_secs(60));
        assert!(
            !status.success(),
            "the injected crash aborts the node: {status}"
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    }
    let mut node = NodeProcess::start(&nats.url(), data.path(), &window).await;
    drained(&jetstream).await;
    assert_matches_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
}
