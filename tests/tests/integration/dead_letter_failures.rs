//! A dead-letter copy that cannot be stored is given up, logged and counted, and its partition
//! moves on: at once when the broker refuses it for good, after a few attempts when it keeps
//! failing for a reason that could pass.

use async_nats::HeaderMap;
use async_nats::jetstream;
use playhead_gateway::auth::AuthedChannel;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{DLQ_STREAM, station_song};
use playhead_proto::v1::ListPlaysRequest;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::system::{TestGateway, TestNode, metric_value, temp_dir, test_node_config};

use crate::dead_letter_hygiene::{UNDECODABLE, WITHIN, neighbour_of, song};

/// Attempts at one copy that fails for reasons that could pass (the node's
/// `MAX_COPY_ATTEMPTS`): the intake retries all but the last.
const COPY_ATTEMPTS: f64 = 5.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_cannot_be_stored_are_given_up_and_the_partition_moves_on() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = jetstream::new(nats.connect().await);
    let stations = gateway.stations().await;

    // The broker refuses every copy for good: PLAYHEAD_DLQ now takes 16 bytes at most.
    let mut config = jetstream
        .get_stream(DLQ_STREAM)
        .await
        .expect("dlq stream")
        .get_info()
        .await
        .expect("dlq info")
        .config;
    config.max_message_size = 16;
    jetstream
        .update_stream(config)
        .await
        .expect("dlq limit lowered");
    reject_and_carry_on(&jetstream, &node, &stations, "refused", 1.0).await;
    // Given up at the first refusal, without a retry.
    assert_eq!(retries(&node).await, 0.0);

    // No stream takes the copies any more: no responders, which could pass, so the copy is
    // retried until it has failed 5 times in a row.
    jetstream
        .delete_stream(DLQ_STREAM)
        .await
        .expect("dlq deleted");
    reject_and_carry_on(&jetstream, &node, &stations, "unanswered", 2.0).await;
    assert_eq!(retries(&node).await, COPY_ATTEMPTS - 1.0);

    // Nothing was counted as copied.
    assert_eq!(
        metric_value(&node.metrics().await, "playhead_dead_letters_total", &[]),
        0.0
    );
    gateway.stop().await;
    node.stop().await;
}

async fn retries(node: &TestNode) -> f64 {
    metric_value(
        &node.metrics().await,
        "playhead_batch_retries_total",
        &[("inbox", "station")],
    )
}

/// Publishes an undecodable message for `station`, waits until its copy is given up (the
/// failure counter reaches `failures`), then until a valid song of the same partition is
/// applied.
async fn reject_and_carry_on(
    jetstream: &jetstream::Context,
    node: &TestNode,
    stations: &StationServiceClient<AuthedChannel>,
    station: &str,
    failures: f64,
) {
    let publish = |station: &str, payload: Vec<u8>| {
        let subject = station_song(&StationId::parse(station).expect("valid id"));
        async move {
            jetstream
                .publish_with_headers(subject, HeaderMap::new(), payload.into())
                .await
                .expect("publish sent")
                .await
                .expect("the inbox stores it")
        }
    };
    publish(station, UNDECODABLE.to_vec()).await;
    eventually(
        &format!("the copy of {station}'s message to be given up"),
        WITHIN,
        || async {
            let metrics = node.metrics().await;
            let given_up = metric_value(
                &metrics,
                "playhead_dead_letter_failures_total",
                &[("inbox", "station")],
            );
            (given_up == failures).then_some(())
        },
    )
    .await;

    let neighbour = neighbour_of(station);
    publish(&neighbour, song(&neighbour, "After")).await;
    eventually(
        &format!("{station}: the next song of the same partition to be applied"),
        WITHIN,
        || {
            let mut stations = stations.clone();
            let neighbour = neighbour.clone();
            async move {
                let plays = stations
                    .list_plays(ListPlaysRequest {
                        station_id: neighbour,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .plays;
                (!plays.is_empty()).then_some(())
            }
        },
    )
    .await;
}
