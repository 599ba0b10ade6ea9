//! Nothing stalls a partition: a command its decider panics on is quarantined at once, one
//! that fails for a reason that does not go away (or fails its entity actor) is quarantined
//! after `ingest.max_attempts`, and the commands around it — on the same station — are applied.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_proto::headers::{DLQ_DETAIL, DLQ_REASON, DLQ_STREAM_SEQUENCE};
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{DLQ_STREAM, station_song};
use playhead_proto::v1::{ListPlaysRequest, SongObserved};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::system::{NodeProcess, TestGateway, http_get, metric_value, temp_dir};
use prost::Message;

const WITHIN: Duration = Duration::from_secs(10);

fn song(station: &str, title: &str) -> Vec<u8> {
    SongObserved {
        station_id: station.into(),
        artist: "Quarantine".into(),
        title: title.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Publishes a song; returns its inbox sequence.
async fn publish(jetstream: &jetstream::Context, station: &str, title: &str) -> u64 {
    let subject = station_song(&StationId::parse(station).expect("valid id"));
    jetstream
        .publish(subject, song(station, title).into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

/// The dead-letter copy of inbox message `sequence`: (reason, detail).
async fn dead_letter_of(jetstream: &jetstream::Context, sequence: u64) -> (String, String) {
    let stream = jetstream.get_stream(DLQ_STREAM).await.expect("dlq");
    let mut letters = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("dlq reader")
        .messages()
        .await
        .expect("dlq messages");
    let wanted = sequence.to_string();
    within(
        &format!("the quarantined copy of inbox message {sequence}"),
        WITHIN,
        async {
            loop {
                let letter = letters
                    .next()
                    .await
                    .expect("dlq open")
                    .expect("dlq message");
                let headers = letter.headers.clone().unwrap_or_default();
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|value| value.to_string())
                        .unwrap_or_default()
                };
                if header(DLQ_STREAM_SEQUENCE) == wanted {
                    return (header(DLQ_REASON), header(DLQ_DETAIL));
                }
            }
        },
    )
    .await
}

/// The titles listed for `station`, oldest first, once there are `count` of them.
async fn plays(gateway: &TestGateway, station: &str, count: usize) -> Vec<String> {
    let client = gateway.stations().await;
    eventually(&format!("{count} plays on {station}"), WITHIN, || {
        let mut client = client.clone();
        let station = station.to_owned();
        async move {
            let plays = client
                .list_plays(ListPlaysRequest {
                    station_id: station,
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .plays;
            (plays.len() >= count).then(|| {
                plays
                    .iter()
                    .rev()
                    .map(|play| play.song.clone().unwrap_or_default().title)
                    .collect()
            })
        }
    })
    .await
}

async fn node_metrics(node: &NodeProcess) -> String {
    let address = node
        .operations_address()
        .expect("the node logs its operations address");
    http_get(&format!("http://{address}/metrics")).await.1
}

/// Before, `mark` and After published to `station` of a node started with `env`; the checks
/// every case shares are made: Before and After are applied around the quarantined `mark`.
struct Quarantined {
    _nats: NatsServer,
    _data: tempfile::TempDir,
    node: NodeProcess,
    gateway: TestGateway,
    /// The dead letter of `mark`.
    reason: String,
    detail: String,
}

async fn quarantine(station: &str, mark: &str, env: &[(&str, &str)]) -> Quarantined {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let node = NodeProcess::start(&nats.url(), data.path(), env).await;
    let gateway = TestGateway::start(&nats.url()).await;
    publish(&jetstream, station, "Before").await;
    let marked = publish(&jetstream, station, mark).await;
    publish(&jetstream, station, "After").await;
    let (reason, detail) = dead_letter_of(&jetstream, marked).await;
    assert_eq!(plays(&gateway, station, 2).await, ["Before", "After"]);
    Quarantined {
        _nats: nats,
        _data: data,
        node,
        gateway,
        reason,
        detail,
    }
}

/// The quarantined message was counted once, as `reason`.
async fn assert_dead_lettered_once(node: &NodeProcess, reason: &str) -> String {
    let metrics = node_metrics(node).await;
    assert_eq!(
        metric_value(
            &metrics,
            "playhead_dead_letters_total",
            &[("reason", reason)]
        ),
        1.0,
        "quarantined once"
    );
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_panic_is_quarantined_at_once_and_the_station_carries_on() {
    let case = quarantine("radio-q", "BOOM", &[("PLAYHEAD_FAULTS", "panic_on=BOOM")]).await;
    assert_eq!(case.reason, "panic");
    assert!(
        case.detail.contains("injected decider panic"),
        "{}",
        case.detail
    );
    let metrics = assert_dead_lettered_once(&case.node, "panic").await;
    assert_eq!(
        metric_value(&metrics, "playhead_batch_retries_total", &[]),
        0.0,
        "a decider panic is not retried"
    );
    case.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_quarantined_after_max_attempts_and_the_station_carries_on()
{
    let case = quarantine(
        "radio-p",
        "POISON",
        &[
            ("PLAYHEAD_FAULTS", "poison_on=POISON"),
            ("PLAYHEAD_INGEST__MAX_ATTEMPTS", "4"),
        ],
    )
    .await;
    assert_eq!(case.reason, "poison");
    assert!(case.detail.starts_with("failed 4 times"), "{}", case.detail);
    assert!(
        case.node
            .plain_log()
            .contains("quarantining a message that keeps failing"),
        "{}",
        case.node.process.log_tail(20)
    );
    case.gateway.stop().await;
}

/// The actor fails while it holds the slice (a panic outside the decider's guard): the slice
/// still reports — as a failure — so the batch does not wait for it, the shard starts the
/// entity again from storage, and the message is quarantined after `max_attempts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_actor_that_fails_while_applying_does_not_stall_the_group() {
    let case = quarantine(
        "radio-a",
        "BANG",
        &[
            ("PLAYHEAD_FAULTS", "actor_panic_on=BANG"),
            ("PLAYHEAD_INGEST__MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    assert_eq!(case.reason, "panic");
    assert!(case.detail.starts_with("failed 3 times"), "{}", case.detail);
    assert!(
        case.detail
            .contains("the entity actor failed while applying"),
        "{}",
        case.detail
    );
    assert_dead_lettered_once(&case.node, "panic").await;
    case.gateway.stop().await;
}

/// A batch waiting to be retried after a transient failure keeps its station in order: a later
/// batch for the same station waits for it (batches applied side by side share no entity).
/// Were it applied first, the retried song would come behind the station's last applied
/// sequence and be skipped as a duplicate: lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_retried_after_a_transient_failure_keeps_its_station_in_order() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = jetstream::new(nats.connect().await);
    let node = NodeProcess::start(
        &nats.url(),
        data.path(),
        &[("PLAYHEAD_FAULTS", "fail_on=AGAIN:3")],
    )
    .await;
    let gateway = TestGateway::start(&nats.url()).await;
    publish(&jetstream, "radio-r", "Before").await;
    publish(&jetstream, "radio-r", "AGAIN").await;
    eventually("the batch holding AGAIN to fail", WITHIN, || async {
        let metrics = node_metrics(&node).await;
        (metric_value(&metrics, "playhead_batch_retries_total", &[]) >= 1.0).then_some(())
    })
    .await;
    // Published while that batch waits for its next attempt (three failures: ~0.7 s of
    // backoff), beside a song of another station, which need not wait.
    publish(&jetstream, "radio-r", "After").await;
    publish(&jetstream, "radio-s", "Elsewhere").await;
    assert_eq!(plays(&gateway, "radio-s", 1).await, ["Elsewhere"]);
    assert_eq!(
        plays(&gateway, "radio-r", 3).await,
        ["Before", "AGAIN", "After"]
    );
    let metrics = node_metrics(&node).await;
    assert_eq!(
        metric_value(&metrics, "playhead_batch_retries_total", &[]),
        3.0,
        "one retry per injected failure"
    );
    gateway.stop().await;
}
