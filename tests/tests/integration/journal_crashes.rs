//! The journal is exactly-once whatever happens to the node: SIGKILLed at random points of a
//! mixed workload, or killed between an append and its local commit and kept down longer than
//! the broker's duplicate window, it neither loses nor repeats anything — every answer equals
//! the model, and every event is in the journal once, in order. Nor does it contradict what it
//! told a publisher: every answer sent to a message's `Playhead-Reply-To`, the first time or
//! again after a redelivery, is the model's answer to that message. Nor does the main db,
//! reaching disk on its own, get ahead of the bucket dbs holding the records it vouches for.

use std::time::Duration;

use async_nats::jetstream;
use playhead_actors::config::NodeConfig;
use playhead_actors::domain::user::UserDecider;
use playhead_client::service::nats_auth::NatsRole;
use playhead_proto::subjects::Inbox;
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::mixed::check::{
    RepliesChecked, assert_answers_match, assert_journal_matches, assert_replies_match,
};
use playhead_tests::mixed::model::Model;
use playhead_tests::mixed::replies::Replies;
use playhead_tests::mixed::workload::{self, REPLY_SUBJECTS, Workload};
use playhead_tests::model::{Rng, publish_pipelined};
use playhead_tests::system::{
    NodeProcess, TestGateway, temp_dir, unfinished_messages, wait_until_drained,
};

const DRAIN: Duration = Duration::from_secs(120);

/// Messages asking for an answer that must get at least one: only a node killed between
/// deciding and answering leaves one unanswered (its redelivery is answered again).
const MIN_ANSWERED_PERCENT: usize = 90;

async fn drained(jetstream: &jetstream::Context) {
    for inbox in Inbox::ALL.iter().copied() {
        wait_until_drained(jetstream, inbox, DRAIN).await;
    }
}

/// Inbox messages not yet acknowledged, over every group of every inbox.
async fn unfinished(jetstream: &jetstream::Context) -> u64 {
    let mut total = 0;
    for inbox in Inbox::ALL.iter().copied() {
        total += unfinished_messages(jetstream, inbox)
            .await
            .expect("consumer info");
    }
    total
}

/// Compares everything the system answers and holds with the model of its inboxes, and
/// returns the model.
async fn assert_matches_model(
    nats: &NatsServer,
    jetstream: &jetstream::Context,
    workload: &Workload,
) -> Model {
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
    model
}

/// Checks every answer received against the model.
async fn assert_replies_match_model(
    replies: Replies,
    model: &Model,
    tolerated: usize,
) -> RepliesChecked {
    let replies = replies.collect().await;
    let checked = assert_replies_match(model, &replies, MIN_ANSWERED_PERCENT, tolerated);
    eprintln!("answers checked against the model: {checked:?}");
    checked
}

/// Runs nodes with `faults` until one finishes the inboxes without crashing, or `runs` ran;
/// returns how many crashed.
async fn crash_repeatedly(
    nats: &NatsServer,
    jetstream: &jetstream::Context,
    data: &std::path::Path,
    env: &[(&str, &str)],
    runs: usize,
    pause: Duration,
) -> usize {
    let mut crashes = 0;
    for _ in 0..runs {
        let mut node = NodeProcess::spawn(&nats.url(), data, env);
        let crashed = eventually("the node to crash or finish", DRAIN, || {
            let done = node
                .process
                .try_exit_status()
                .map(|status| !status.success());
            let jetstream = jetstream.clone();
            async move {
                match done {
                    Some(crashed) => Some(crashed),
                    None => (unfinished(&jetstream).await == 0).then_some(false),
                }
            }
        })
        .await;
        if !crashed {
            break;
        }
        crashes += 1;
        tokio::time::sleep(pause).await;
    }
    crashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_during_a_mixed_workload_lose_and_repeat_nothing() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let workload = workload::generate(21, 24, 60, 20_000, &nats.credentials(NatsRole::Admin));
    let replies = Replies::subscribe(nats.connect().await, REPLY_SUBJECTS).await;
    // Snapshots every second, so some are taken while the node works and is killed.
    let env = [("PLAYHEAD_JOURNAL__SNAPSHOT_INTERVAL_SECS", "1")];
    let node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    publish_pipelined(&jetstream, workload.catalog.clone()).await;
    wait_until_drained(&jetstream, Inbox::Catalog, DRAIN).await;
    drop(node);

    // Each round leaves a backlog while the node is down, starts it, and kills it (SIGKILL) at a
    // random point of the work.
    let mut rng = Rng::new(7);
    let mut kills_mid_work = 0;
    for chunk in workload
        .messages
        .chunks(workload.messages.len().div_ceil(20))
    {
        publish_pipelined(&jetstream, chunk.to_vec()).await;
        let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
        // The kill point is what is random here; nothing is waited for.
        tokio::time::sleep(Duration::from_millis(10 + rng.below(200))).await;
        node.process.kill();
        if unfinished(&jetstream).await > 0 {
            kills_mid_work += 1;
        }
    }
    let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    drained(&jetstream).await;
    assert!(
        kills_mid_work >= 12,
        "only {kills_mid_work} of 20 kills came with work in hand; raise the message count"
    );
    let model = assert_matches_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");

    // The snapshots taken through all that, plus the journal after them, rebuild the same.
    std::fs::remove_dir_all(data.path().join("state")).expect("delete the local store");
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    assert_matches_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
    // Rebuilding answers nothing again; what was answered through the kills is checked.
    assert_replies_match_model(replies, &model, 0).await;
}

/// Publishes a small mixed workload (`seed`; the catalog first), runs nodes with `env` plus
/// `faults` until one finishes the inboxes or `runs` ran, pausing `pause` after each crash,
/// and asserts at least `min_crashes` crashed ("`what`"); then a node with `env` alone drains
/// the rest, everything it holds and every answer sent are checked against the model.
async fn crash_in_a_loop(
    seed: u64,
    env: &[(&str, &str)],
    faults: &str,
    (runs, pause, min_crashes): (usize, Duration, usize),
    what: &str,
) -> RepliesChecked {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let workload = workload::generate(seed, 6, 10, 2_000, &nats.credentials(NatsRole::Admin));
    let replies = Replies::subscribe(nats.connect().await, REPLY_SUBJECTS).await;
    let node = NodeProcess::start(&nats.url(), data.path(), env).await;
    publish_pipelined(&jetstream, workload.catalog.clone()).await;
    wait_until_drained(&jetstream, Inbox::Catalog, DRAIN).await;
    drop(node);
    publish_pipelined(&jetstream, workload.messages.clone()).await;
    let mut crashing = env.to_vec();
    crashing.push(("PLAYHEAD_FAULTS", faults));
    let crashes = crash_repeatedly(&nats, &jetstream, data.path(), &crashing, runs, pause).await;
    assert!(crashes >= min_crashes, "only {crashes} runs crashed {what}");
    let mut node = NodeProcess::start(&nats.url(), data.path(), env).await;
    drained(&jetstream).await;
    let model = assert_matches_model(&nats, &jetstream, &workload).await;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
    assert_replies_match_model(replies, &model, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_longer_than_the_duplicate_window_after_an_append_repeats_nothing() {
    // One-second duplicate window on the inboxes; the journal must not depend on any. Each run
    // appends a few decisions, then dies before committing them locally; it stays down past
    // the duplicate window, and the next run must find them in the journal. A run that finds
    // too little left to do to reach its crash is stopped once the inboxes drained.
    crash_in_a_loop(
        5,
        &[("PLAYHEAD_INGEST__DUPLICATE_WINDOW_SECS", "1")],
        "crash_after_appends=3",
        (6, Duration::from_millis(2_500), 3),
        "between an append and its commit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_main_db_reached_disk_before_its_bucket_dbs_loses_nothing() {
    // Each run commits a few entities, then flushes the main db alone — sled may write it out
    // at any moment — and dies: the bucket dbs (plays, sessions, viewing history) keep only
    // what was flushed before. An entity position on disk ahead of its bucketed records would
    // skip them for good.
    crash_in_a_loop(
        17,
        &[],
        "crash_after_persists=3",
        (8, Duration::ZERO, 4),
        "right after an entity commit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_answering_and_before_settling_answers_its_redeliveries_the_same() {
    // Each run sends the answers of a few batches, then dies before they are flushed and
    // acknowledged: the next run gets those messages again, finds their decisions in the
    // journal, and must answer them as the first run did.
    let checked = crash_in_a_loop(
        13,
        &[],
        "crash_after_answers=3",
        (8, Duration::ZERO, 4),
        "between answering and settling",
    )
    .await;
    // Caught here before catch-ups filed the answers of the commands their decisions cover:
    // a command that changed nothing, between two journaled decisions, was answered from the
    // state after a second crash (1-3 wrong messages in about a quarter of the runs).
    assert!(
        checked.repeated > 0,
        "no message was answered again after a crash: {checked:?}"
    );
}
