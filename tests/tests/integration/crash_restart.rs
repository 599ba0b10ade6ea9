//! A node killed mid-ingest (SIGKILL) or stopped gracefully (SIGTERM) and restarted neither
//! loses a play nor records one twice.

use std::collections::BTreeMap;
use std::time::Duration;

use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::model::{generate, publish_all};
use playhead_tests::system::{
    NodeProcess, TestGateway, assert_all_plays, songs_started_per_station, temp_dir,
    unfinished_messages, wait_until_drained,
};

#[derive(Debug, Clone, Copy)]
enum Interruption {
    Kill,
    Terminate,
}

async fn interrupted_ingest_loses_and_duplicates_nothing(interruption: Interruption) {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;

    let (observations, expected) = generate(11, 30, 20_000, 80);
    publish_all(&jetstream, &observations).await;
    // Interrupt once some, but not all, of the inbox has been applied.
    eventually(
        "some events to be published",
        Duration::from_secs(30),
        || async {
            let info = jetstream
                .get_stream(EVENTS_STREAM)
                .await
                .ok()?
                .get_info()
                .await
                .ok()?;
            (info.state.messages >= 20).then_some(())
        },
    )
    .await;
    match interruption {
        Interruption::Kill => {
            node.process.kill();
        }
        Interruption::Terminate => {
            let status = node.process.terminate_within(Duration::from_secs(30));
            assert!(status.success(), "graceful stop exits 0: {status}");
        }
    }
    // The interruption must have come mid-ingest, or this test proves nothing.
    let unfinished = unfinished_messages(&jetstream, Inbox::Station)
        .await
        .expect("consumer info");
    assert!(
        unfinished > 0,
        "the node finished before it was interrupted; raise the observation count"
    );
    let node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    wait_until_drained(&jetstream, Inbox::Station, Duration::from_secs(60)).await;

    let gateway = TestGateway::start(&nats.url()).await;
    let mut client = gateway.stations().await;
    assert_all_plays(&mut client, &expected, "after the restart").await;
    // Events were not appended twice either (the journal appends are exactly-once).
    let started_per_station = songs_started_per_station(&jetstream).await;
    let expected_counts: BTreeMap<String, usize> = expected
        .iter()
        .map(|(station, plays)| (station.clone(), plays.len()))
        .collect();
    assert_eq!(started_per_station, expected_counts);
    gateway.stop().await;
    let mut node = node;
    let status = node.process.terminate_within(Duration::from_secs(30));
    assert!(status.success(), "graceful stop exits 0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_ingest_restarts_without_losing_or_repeating_plays() {
    interrupted_ingest_loses_and_duplicates_nothing(Interruption::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_mid_ingest_restarts_without_losing_or_repeating_plays() {
    interrupted_ingest_loses_and_duplicates_nothing(Interruption::Terminate).await;
}
