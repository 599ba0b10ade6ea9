//! Content catalog updates through the catalog inbox: tags are applied once per change, and
//! bad updates are dead-lettered with a reason while the rest carry on.

use std::time::Duration;

use playhead_proto::headers::DLQ_REASON;
use playhead_proto::ids::ContentId;
use playhead_proto::subjects::{DLQ_STREAM, Inbox, catalog_content};
use playhead_proto::v1::ContentUpdate;
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::system::{
    TestNode, metric_value, temp_dir, test_node_config, wait_until_drained,
};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_updates_apply_once_per_change_and_bad_tags_are_dead_lettered() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let publish = |content: &str, tags: &[&str]| {
        let jetstream = jetstream.clone();
        let subject = catalog_content(&ContentId::parse(content).unwrap());
        let update = ContentUpdate {
            content_id: content.into(),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
        };
        async move {
            jetstream
                .publish(subject, update.encode_to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish("film-1", &["premium"]).await;
    publish("film-1", &["premium"]).await; // the same tags: no change
    publish("film-1", &["premium", "sports"]).await;
    publish("film-2", &["bad tag"]).await;
    publish("film-3", &["free"]).await;
    wait_until_drained(&jetstream, Inbox::Catalog, Duration::from_secs(20)).await;

    // Counted just after each batch's acknowledgement: poll rather than race it.
    let counts = eventually("the catalog outcomes", Duration::from_secs(10), || async {
        let metrics = node.metrics().await;
        let count = |outcome: &str| {
            metric_value(
                &metrics,
                "playhead_inbox_messages_total",
                &[("inbox", "catalog"), ("outcome", outcome)],
            )
        };
        let counts = (count("applied"), count("unchanged"), count("dead_lettered"));
        (counts.0 + counts.1 + counts.2 >= 5.0).then_some(counts)
    })
    .await;
    assert_eq!(counts, (3.0, 1.0, 1.0));
    let dlq = jetstream.get_stream(DLQ_STREAM).await.unwrap();
    let letter = eventually("the dead letter", Duration::from_secs(10), || {
        let dlq = dlq.clone();
        async move {
            dlq.get_last_raw_message_by_subject("playhead.dlq.catalog.invalid_id")
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(
        letter.headers.get(DLQ_REASON).map(|value| value.as_str()),
        Some("invalid_id")
    );
    node.stop().await;
}
