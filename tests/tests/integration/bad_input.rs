//! Every kind of bad input lands in PLAYHEAD_DLQ with its reason and original subject, while
//! the valid messages around it are processed.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use playhead_proto::headers::{CONTENT_TYPE, DLQ_ORIGINAL_SUBJECT, DLQ_REASON};
use playhead_proto::subjects::{DLQ_STREAM, Inbox};
use playhead_proto::v1::{ListPlaysRequest, SongObserved};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::within;
use playhead_tests::system::{
    TestGateway, TestNode, metric_value, temp_dir, test_node_config, wait_until_drained,
};
use prost::Message;

fn song(station: &str, artist: &str, title: &str) -> Vec<u8> {
    SongObserved {
        station_id: station.into(),
        artist: artist.into(),
        title: title.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_with_a_reason_and_nothing_else_is_lost() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.ingest.max_message_bytes = 1024;
    let node = TestNode::start(config).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let good = "playhead.station.good.song";

    let mut json_headers = HeaderMap::new();
    json_headers.insert(CONTENT_TYPE, "application/json");
    // (subject, headers, payload, expected dead-letter reason or None for valid)
    let messages: Vec<(&str, HeaderMap, Vec<u8>, Option<&str>)> = vec![
        (good, HeaderMap::new(), song("good", "A", "One"), None),
        (
            good,
            HeaderMap::new(),
            song("good", "A", &"x".repeat(2000)),
            Some("oversize"),
        ),
        (
            "playhead.station.bad#id.song",
            HeaderMap::new(),
            song("", "A", "One"),
            Some("invalid_id"),
        ),
        (
            good,
            HeaderMap::new(),
            vec![0xff, 0xff, 0xff, 0x01],
            Some("undecodable"),
        ),
        (
            good,
            HeaderMap::new(),
            song("other", "B", "Two"),
            Some("id_mismatch"),
        ),
        (
            good,
            HeaderMap::new(),
            song("good", " ", ""),
            Some("rejected"),
        ),
        (
            good,
            json_headers.clone(),
            br#"{"stationId":"good","raw":"B - Two"}"#.to_vec(),
            None,
        ),
        (
            good,
            json_headers,
            br#"{"stationId":"good","raw":"#.to_vec(),
            Some("undecodable"),
        ),
        (good, HeaderMap::new(), song("good", "C", "Three"), None),
    ];
    for (subject, headers, payload, _) in &messages {
        jetstream
            .publish_with_headers(subject.to_string(), headers.clone(), payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("inbox ack");
    }
    wait_until_drained(&jetstream, Inbox::Station, Duration::from_secs(30)).await;

    // The valid messages were all applied, in order.
    let mut client = gateway.stations().await;
    let plays = client
        .list_plays(ListPlaysRequest {
            station_id: "good".into(),
            ..Default::default()
        })
        .await
        .expect("plays")
        .into_inner()
        .plays;
    let titles: Vec<String> = plays
        .iter()
        .map(|play| play.song.clone().unwrap_or_default().title)
        .collect();
    assert_eq!(titles, ["Three", "Two", "One"]);

    // Every bad one is in the DLQ once, with its reason and original subject.
    let expected: Vec<(&str, &str)> = messages
        .iter()
        .filter_map(|(subject, _, _, reason)| reason.map(|reason| (reason, *subject)))
        .collect();
    let dlq = jetstream.get_stream(DLQ_STREAM).await.expect("dlq stream");
    let consumer = dlq
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("dlq reader");
    let mut letters = consumer.messages().await.expect("dlq messages");
    let mut found = Vec::new();
    for _ in 0..expected.len() {
        let letter = within("a dead letter", Duration::from_secs(10), letters.next())
            .await
            .expect("stream open")
            .expect("message");
        let headers = letter.headers.clone().expect("dead letters carry headers");
        found.push((
            headers.get(DLQ_REASON).expect("reason").to_string(),
            headers
                .get(DLQ_ORIGINAL_SUBJECT)
                .expect("original subject")
                .to_string(),
        ));
    }
    // Partitions run concurrently: compare as sets.
    let mut expected_owned: Vec<(String, String)> = expected
        .iter()
        .map(|(reason, subject)| (reason.to_string(), subject.to_string()))
        .collect();
    expected_owned.sort();
    found.sort();
    assert_eq!(found, expected_owned);
    let dlq_info = jetstream
        .get_stream(DLQ_STREAM)
        .await
        .expect("dlq")
        .get_info()
        .await
        .expect("dlq info");
    assert_eq!(dlq_info.state.messages, expected.len() as u64);

    // And they are counted by reason.
    let metrics = node.metrics().await;
    let mut by_reason = BTreeMap::new();
    for (reason, _) in &expected {
        *by_reason.entry(*reason).or_insert(0.0) += 1.0;
    }
    for (reason, count) in by_reason {
        assert_eq!(
            metric_value(
                &metrics,
                "playhead_dead_letters_total",
                &[("reason", reason)]
            ),
            count,
            "{reason}"
        );
    }
    gateway.stop().await;
    node.stop().await;
}
