//! Ownership of the inbox groups: a second node on the same broker stands by while another
//! node owns the groups, never touching a consumer or its store; it takes over when the owner
//! stops (at once) or dies (once the lease lapses), and a node whose store missed another
//! node's work rebuilds it before serving.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use playhead_proto::subjects::Inbox;
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::model::{ExpectedPlay, Observation, generate, publish_all};
use playhead_tests::system::{
    NodeProcess, TestGateway, assert_all_plays, songs_started_per_station, temp_dir,
    wait_until_drained,
};

const LEASE: [(&str, &str); 1] = [("PLAYHEAD_INGEST__OWNERSHIP_LEASE_SECS", "3")];
const DRAIN: Duration = Duration::from_secs(60);
const STATIONS: usize = 30;

async fn wait_for_log(node: &mut NodeProcess, what: &str, needle: &str) {
    let log_path = node.process.log_path().to_owned();
    eventually(what, Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move { log.contains(needle).then_some(()) }
    })
    .await;
}

fn log_of(node: &NodeProcess) -> String {
    std::fs::read_to_string(node.process.log_path()).unwrap_or_default()
}

/// Every station's plays, as the gateway answers them, equal the model's.
async fn assert_plays(nats_url: &str, expected: &BTreeMap<String, Vec<ExpectedPlay>>, when: &str) {
    let gateway = TestGateway::start(nats_url).await;
    assert_all_plays(&mut gateway.stations().await, expected, when).await;
    gateway.stop().await;
}

/// A deployment upgraded from one consumer per partition: the group consumers start where the
/// old ones had acknowledged (nothing acknowledged is applied again, nothing after it is
/// skipped), and the old consumers are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumers_take_over_from_the_ack_floor_of_an_earlier_layout() {
    use async_nats::jetstream::consumer::{self, pull};

    let nats = NatsServer::start();
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let data = temp_dir();
    // Start once so that the inbox stream exists, then stop and play the old layout.
    let mut node = NodeProcess::start(&nats.url(), data.path(), &LEASE).await;
    assert!(node.process.terminate_within(DRAIN).success());
    let stream = jetstream
        .get_stream(Inbox::Station.stream_name())
        .await
        .expect("station inbox");
    let mut names = stream.consumer_names();
    while let Some(name) = names.next().await {
        stream
            .delete_consumer(&name.expect("name"))
            .await
            .expect("delete");
    }
    let (observations, _) = generate(31, STATIONS, 400, 50);
    publish_all(&jetstream, &observations).await;
    // The old node had applied and acknowledged the first 150 of them.
    let old: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("station-p000".into()),
            ack_policy: consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .expect("old-layout consumer");
    let mut batch = old
        .fetch()
        .max_messages(150)
        .messages()
        .await
        .expect("fetch");
    let mut last = None;
    while let Some(message) = batch.next().await {
        last = Some(message.expect("message"));
    }
    last.expect("150 messages")
        .double_ack()
        .await
        .expect("ack the old layout's work");

    let node = NodeProcess::start(&nats.url(), data.path(), &LEASE).await;
    wait_until_drained(&jetstream, Inbox::Station, DRAIN).await;
    // Only observations 151..400 were applied: the model of exactly those.
    let expected = playhead_tests::model::expected_plays(&observations[150..]);
    assert_plays(&nats.url(), &expected, "after the upgrade").await;
    let mut names: Vec<String> = stream
        .consumer_names()
        .map(|name| name.expect("name"))
        .collect()
        .await;
    names.sort();
    assert_eq!(
        names,
        (0..playhead_tests::system::TEST_GROUPS)
            .map(|group| Inbox::Station.consumer_name(group, playhead_tests::system::TEST_GROUPS))
            .collect::<Vec<_>>(),
        "the earlier layout's consumer is deleted"
    );
    let mut node = node;
    assert!(node.process.terminate_within(DRAIN).success());
    // Started again, the group consumers (created at a start sequence) are kept as they are:
    // the broker refuses to change a consumer's deliver policy.
    let mut node = NodeProcess::start(&nats.url(), data.path(), &LEASE).await;
    assert_plays(&nats.url(), &expected, "after a restart").await;
    assert!(node.process.terminate_within(DRAIN).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_stands_by_and_takes_over_with_a_rebuilt_store() {
    let nats = NatsServer::start();
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let (data_a, data_b) = (temp_dir(), temp_dir());
    let (all, expected_all) = generate(23, STATIONS, 2_100, 80);
    let phase = |end: usize| -> (&[Observation], BTreeMap<String, Vec<ExpectedPlay>>) {
        (&all[..end], generate(23, STATIONS, end, 80).1)
    };
    let (first, expected_first) = phase(1_000);
    let (second, expected_second) = phase(2_000);

    // A owns every group; B stands by and never touches a consumer or a store.
    let mut a = NodeProcess::start(&nats.url(), data_a.path(), &LEASE).await;
    let mut b = NodeProcess::spawn(&nats.url(), data_b.path(), &LEASE);
    wait_for_log(&mut b, "the second node to stand by", "standing by").await;
    publish_all(&jetstream, first).await;
    wait_until_drained(&jetstream, Inbox::Station, DRAIN).await;
    // Longer than a lease: B keeps trying, and keeps standing by.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(b.process.is_running(), "the standby keeps running");
    assert!(
        !log_of(&b).contains("playhead-node serving"),
        "B must not serve while A owns the groups:\n{}",
        b.process.log_tail(20)
    );
    assert!(
        !data_b.path().join("state").exists(),
        "B must not open a store while it stands by"
    );
    assert_plays(&nats.url(), &expected_first, "with A serving").await;

    // A stops cleanly and lets go: B takes over at once, its store built from the journal.
    let status = a.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
    wait_for_log(&mut b, "B to take over", "playhead-node serving").await;
    publish_all(&jetstream, &second[first.len()..]).await;
    wait_until_drained(&jetstream, Inbox::Station, DRAIN).await;
    assert_plays(&nats.url(), &expected_second, "after B took over").await;

    // A comes back and stands by; B dies; once B's lease lapses A takes over. A's store
    // stopped cleanly but missed B's work: it must be rebuilt, or the stations B changed and
    // nobody touches again would answer A's old plays.
    let mut a = NodeProcess::spawn(&nats.url(), data_a.path(), &LEASE);
    wait_for_log(&mut a, "A to stand by behind B", "standing by").await;
    b.process.kill();
    wait_for_log(&mut a, "A to take over from B", "playhead-node serving").await;
    assert!(
        log_of(&a).contains("rebuilding it"),
        "A's store missed B's work and must be rebuilt:\n{}",
        a.process.log_tail(30)
    );
    assert_plays(&nats.url(), &expected_second, "after A took over again").await;
    // A few more songs, on a few stations: A processes them on top of the rebuilt store.
    publish_all(&jetstream, &all[second.len()..]).await;
    wait_until_drained(&jetstream, Inbox::Station, DRAIN).await;
    assert_plays(&nats.url(), &expected_all, "at the end").await;

    // Whoever processed them, every SongStarted is in the journal exactly once.
    let started = songs_started_per_station(&jetstream).await;
    let expected_counts: BTreeMap<String, usize> = expected_all
        .iter()
        .map(|(station, plays)| (station.clone(), plays.len()))
        .collect();
    assert_eq!(started, expected_counts);
    let status = a.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
}

/// Preparing the store (a restore or a rebuild) may take longer than a lease: the leases are
/// renewed meanwhile, so the node serves afterwards instead of finding them lapsed and stopping
/// (a 27 s rebuild in the benchmark against a 15 s lease did, before the renewals started at
/// once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_preparation_longer_than_a_lease_keeps_the_groups() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut env = LEASE.to_vec();
    env.push(("PLAYHEAD_FAULTS", "prepare_delay_ms=5000"));
    let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    let (observations, expected) = generate(41, STATIONS, 200, 50);
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    publish_all(&jetstream, &observations).await;
    wait_until_drained(&jetstream, Inbox::Station, DRAIN).await;
    assert_plays(&nats.url(), &expected, "after a long store preparation").await;
    // Well past a lease after serving: still running, never having lost a group.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(node.process.is_running(), "{}", node.process.log_tail(20));
    assert!(
        !log_of(&node).contains("lost the ownership"),
        "{}",
        node.process.log_tail(20)
    );
    node.process.terminate();
}
