//! A rejected inbox message is copied to PLAYHEAD_DLQ with only the headers playhead sets and a
//! payload that fits, whatever the publisher sent; the partition it came from carries on.
//!
//! JetStream applies control headers on every publish, so a copy that kept them could fail
//! where the inbox publish held (and the partition would retry that copy forever). For each
//! control header of a publish (async-nats 0.51 `header.rs`), an undecodable payload goes to a
//! station subject with that header set to a value the inbox accepts.
//!
//! What the inbox streams (defaults: no rollup, no per-message TTL, no atomic batches, no
//! counters, no schedules) do with each of them on nats-server 2.15.1 (checked by the test):
//!
//! | header                                                | value sent                  | inbox   |
//! |-------------------------------------------------------|-----------------------------|---------|
//! | `Nats-Msg-Id`                                         | a fresh id                  | stores  |
//! | `Nats-Expected-Stream`                                | `PLAYHEAD_INBOX_STATION`    | stores  |
//! | `Nats-Expected-Last-Sequence`                         | the inbox's last sequence   | stores  |
//! | `Nats-Expected-Last-Subject-Sequence`                 | the subject's last sequence | stores  |
//! | `…-Subject-Sequence-Subject` (+ `…-Sequence`)         | `>` (+ the inbox's last)    | stores  |
//! | `Nats-Expected-Last-Msg-Id`                           | the last message's id       | stores  |
//! | `Nats-Rollup`                                         | `sub`                       | refuses |
//! | `Nats-TTL`                                            | `1h`                        | refuses |
//! | `Nats-Marker-Reason`                                  | `MaxAge`                    | stores  |
//! | `Nats-Schedule` (+ `Nats-Schedule-Target`)            | `@hourly`                   | refuses |
//! | `Nats-Schedule-{Target,TTL,Source,Time-Zone,Rollup}`  | alone                       | stores  |
//! | `Nats-Scheduler`, `Nats-Schedule-Next`                | alone                       | refuses |
//! | `Nats-Batch-Id` (+ sequence, commit)                  | an id                       | refuses |
//! | `Nats-Batch-Sequence`, `Nats-Batch-Commit`            | alone, `1`                  | stores  |
//! | `Nats-Incr`                                           | `1`                         | refuses |
//! | `Nats-Required-Api-Level`                             | `0`                         | stores  |
//! | `Nats-{Stream,Sequence,Time-Stamp,Subject}`           | anything                    | stores  |
//! | `Nats-Last-{Stream,Consumer,Sequence}`, `Nats-Pin-Id` | anything                    | stores  |
//!
//! A refused publish never reaches the node; every stored one must come out as a clean copy.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_proto::headers::{
    CONTENT_TYPE, DLQ_DETAIL, DLQ_ORIGINAL_SUBJECT, DLQ_PAYLOAD_BYTES, DLQ_REASON,
    DLQ_STORED_SUBJECT, DLQ_STREAM, DLQ_STREAM_SEQUENCE, DLQ_TRUNCATED, JSON_CONTENT_TYPE, MSG_ID,
    REPLY_TO, TRACEPARENT, TRACESTATE,
};
use playhead_proto::ids::StationId;
use playhead_proto::partition::partition_of;
use playhead_proto::subjects::{self, Inbox, station_song};
use playhead_proto::v1::{ListPlaysRequest, SongObserved};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::system::{
    TEST_PARTITIONS, TestGateway, TestNode, metric_value, temp_dir, test_node_config,
};
use prost::Message;

/// How long a copy, or the next valid message of the partition, may take.
pub(crate) const WITHIN: Duration = Duration::from_secs(10);

/// Not a `SongObserved`: the screen dead-letters it as `undecodable`.
pub(crate) const UNDECODABLE: &[u8] = &[0xff, 0xff, 0xff, 0x01];

/// The only headers a copy may carry.
const COPY_HEADERS: &[&str] = &[
    DLQ_REASON,
    DLQ_DETAIL,
    DLQ_ORIGINAL_SUBJECT,
    DLQ_STORED_SUBJECT,
    DLQ_STREAM,
    DLQ_STREAM_SEQUENCE,
    DLQ_PAYLOAD_BYTES,
    DLQ_TRUNCATED,
    MSG_ID,
    CONTENT_TYPE,
];

/// A header value chosen so that the expectation it states holds for the inbox publish.
#[derive(Clone, Copy, Debug)]
enum Value {
    Literal(&'static str),
    /// The inbox stream's last sequence.
    InboxLastSequence,
    /// The sequence of the valid message published just before on the same subject.
    SubjectLastSequence,
    /// The `Nats-Msg-Id` of the valid message published just before.
    LastMsgId,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum InboxVerdict {
    Stores,
    Refuses,
}
use InboxVerdict::{Refuses, Stores};

struct Case {
    headers: &'static [(&'static str, Value)],
    inbox: InboxVerdict,
}

const fn case(headers: &'static [(&'static str, Value)], inbox: InboxVerdict) -> Case {
    Case { headers, inbox }
}

use Value::{InboxLastSequence, LastMsgId, Literal, SubjectLastSequence};

const CASES: &[Case] = &[
    case(&[("Nats-Msg-Id", Literal("hygiene-own-id"))], Stores),
    case(
        &[("Nats-Expected-Stream", Literal("PLAYHEAD_INBOX_STATION"))],
        Stores,
    ),
    case(
        &[("Nats-Expected-Last-Sequence", InboxLastSequence)],
        Stores,
    ),
    case(
        &[("Nats-Expected-Last-Subject-Sequence", SubjectLastSequence)],
        Stores,
    ),
    case(
        &[
            ("Nats-Expected-Last-Subject-Sequence-Subject", Literal(">")),
            ("Nats-Expected-Last-Subject-Sequence", InboxLastSequence),
        ],
        Stores,
    ),
    case(&[("Nats-Expected-Last-Msg-Id", LastMsgId)], Stores),
    case(&[("Nats-Rollup", Literal("sub"))], Refuses),
    case(&[("Nats-TTL", Literal("1h"))], Refuses),
    case(&[("Nats-Marker-Reason", Literal("MaxAge"))], Stores),
    case(
        &[
            ("Nats-Schedule", Literal("@hourly")),
            (
                "Nats-Schedule-Target",
                Literal("playhead.station.radio-7.song"),
            ),
        ],
        Refuses,
    ),
    case(
        &[(
            "Nats-Schedule-Target",
            Literal("playhead.station.radio-7.song"),
        )],
        Stores,
    ),
    case(&[("Nats-Schedule-TTL", Literal("1h"))], Stores),
    case(
        &[(
            "Nats-Schedule-Source",
            Literal("playhead.station.radio-7.song"),
        )],
        Stores,
    ),
    case(
        &[("Nats-Schedule-Time-Zone", Literal("Europe/Paris"))],
        Stores,
    ),
    case(&[("Nats-Schedule-Rollup", Literal("sub"))], Stores),
    case(
        &[("Nats-Scheduler", Literal("playhead.schedules.x"))],
        Refuses,
    ),
    case(
        &[("Nats-Schedule-Next", Literal("2030-01-01T00:00:00Z"))],
        Refuses,
    ),
    case(
        &[
            ("Nats-Batch-Id", Literal("hygiene-batch")),
            ("Nats-Batch-Sequence", Literal("1")),
            ("Nats-Batch-Commit", Literal("1")),
        ],
        Refuses,
    ),
    case(&[("Nats-Batch-Sequence", Literal("1"))], Stores),
    case(&[("Nats-Batch-Commit", Literal("1"))], Stores),
    case(&[("Nats-Incr", Literal("1"))], Refuses),
    case(&[("Nats-Required-Api-Level", Literal("0"))], Stores),
    case(
        &[("Nats-Stream", Literal("PLAYHEAD_INBOX_STATION"))],
        Stores,
    ),
    case(&[("Nats-Sequence", Literal("1"))], Stores),
    case(
        &[("Nats-Time-Stamp", Literal("2030-01-01T00:00:00Z"))],
        Stores,
    ),
    case(
        &[("Nats-Subject", Literal("playhead.station.x.song"))],
        Stores,
    ),
    case(
        &[("Nats-Last-Stream", Literal("PLAYHEAD_INBOX_STATION"))],
        Stores,
    ),
    case(&[("Nats-Last-Consumer", Literal("station-p000"))], Stores),
    case(&[("Nats-Last-Sequence", Literal("1"))], Stores),
    case(&[("Nats-Pin-Id", Literal("pin"))], Stores),
    // Not control headers, but not playhead's either: none of them may travel with a copy.
    case(
        &[
            (
                TRACEPARENT,
                Literal("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ),
            (TRACESTATE, Literal("vendor=1")),
            (REPLY_TO, Literal("playhead.reply.somebody")),
            (CONTENT_TYPE, Literal("application/x-protobuf")),
            ("X-Anything", Literal("kept by nobody")),
        ],
        Stores,
    ),
];

/// A live view of PLAYHEAD_DLQ.
struct DeadLetterReader {
    letters: consumer::pull::Stream,
}

impl DeadLetterReader {
    async fn open(jetstream: &jetstream::Context) -> Self {
        let stream = jetstream
            .get_stream(subjects::DLQ_STREAM)
            .await
            .expect("dlq stream");
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("dlq reader");
        let letters = consumer.messages().await.expect("dlq messages");
        Self { letters }
    }

    /// The copy of the inbox message stored at `sequence`, within [`WITHIN`].
    async fn copy_of(&mut self, sequence: u64) -> jetstream::Message {
        let wanted = sequence.to_string();
        within(
            &format!("the dead-letter copy of inbox message {sequence}"),
            WITHIN,
            async {
                loop {
                    let letter = self
                        .letters
                        .next()
                        .await
                        .expect("dlq stream open")
                        .expect("dlq message");
                    let headers = letter.headers.as_ref().expect("copies carry headers");
                    if headers.get(DLQ_STREAM_SEQUENCE).map(|value| value.as_str())
                        == Some(wanted.as_str())
                    {
                        return letter;
                    }
                }
            },
        )
        .await
    }
}

/// Asserts that `copy` carries only playhead's headers, names its origin and reason, and
/// keeps the content type only when it is exactly JSON.
fn assert_clean_copy(copy: &jetstream::Message, sequence: u64, reason: &str, what: &str) {
    let headers = copy.headers.as_ref().expect("copies carry headers");
    for (name, _) in headers.iter() {
        assert!(
            COPY_HEADERS
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name.as_ref())),
            "{what}: the copy carries the foreign header {name}"
        );
    }
    let value = |name: &str| headers.get(name).map(|value| value.to_string());
    assert_eq!(value(DLQ_REASON).as_deref(), Some(reason), "{what}");
    assert_eq!(
        value(DLQ_STREAM).as_deref(),
        Some(Inbox::Station.stream_name()),
        "{what}"
    );
    assert_eq!(
        value(MSG_ID),
        Some(format!("dlq:{}:{sequence}", Inbox::Station.stream_name())),
        "{what}"
    );
    if let Some(content_type) = value(CONTENT_TYPE) {
        assert_eq!(content_type, JSON_CONTENT_TYPE, "{what}");
    }
}

pub(crate) fn song(station: &str, title: &str) -> Vec<u8> {
    SongObserved {
        station_id: station.into(),
        artist: "Hygiene".into(),
        title: title.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A station other than `station` on the same partition.
pub(crate) fn neighbour_of(station: &str) -> String {
    let partition = partition_of(station, TEST_PARTITIONS);
    (0..)
        .map(|n| format!("{station}-next-{n}"))
        .find(|candidate| partition_of(candidate, TEST_PARTITIONS) == partition)
        .expect("some neighbour shares the partition")
}

struct Harness {
    jetstream: jetstream::Context,
    gateway: TestGateway,
    dead_letters: DeadLetterReader,
}

impl Harness {
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        self.jetstream
            .publish_with_headers(subject, headers, payload.into())
            .await
            .expect("publish sent")
            .await
    }

    async fn state(&self, stream: &str) -> jetstream::stream::State {
        self.jetstream
            .get_stream(stream)
            .await
            .expect("stream")
            .get_info()
            .await
            .expect("stream info")
            .state
    }

    /// Publishes a valid song for a neighbour of `station` and waits until it is applied:
    /// the partition did not stall on what came before.
    async fn assert_partition_carries_on(&self, station: &str, what: &str) {
        let neighbour = neighbour_of(station);
        let subject = station_song(&StationId::parse(neighbour.clone()).expect("valid id"));
        self.publish(subject, HeaderMap::new(), song(&neighbour, "After"))
            .await
            .expect("the inbox stores a valid song");
        let stations = self.gateway.stations().await;
        eventually(
            &format!("{what}: the next song of the same partition to be applied"),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_copies_carry_only_playhead_headers_and_never_stall_a_partition() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let client = nats.connect().await;
    let max_payload = client.server_info().max_payload;
    assert!(max_payload > 0, "the server announced its max payload");
    let jetstream = async_nats::jetstream::new(client);
    let dead_letters = DeadLetterReader::open(&jetstream).await;
    let mut harness = Harness {
        jetstream,
        gateway,
        dead_letters,
    };

    for (index, case) in CASES.iter().enumerate() {
        control_header_case(&mut harness, index, case).await;
    }

    // Exactly JSON: the content type is needed to read the copy, so it travels with it.
    let station = "hygiene-json";
    let subject = station_song(&StationId::parse(station).expect("valid id"));
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
    let ack = harness
        .publish(subject.clone(), headers, br#"{"stationId":"#.to_vec())
        .await
        .expect("the inbox stores bad JSON");
    let copy = harness.dead_letters.copy_of(ack.sequence).await;
    assert_clean_copy(&copy, ack.sequence, "undecodable", "json");
    let headers = copy.headers.as_ref().expect("headers");
    assert_eq!(
        headers.get(CONTENT_TYPE).map(|value| value.to_string()),
        Some(JSON_CONTENT_TYPE.to_owned())
    );
    harness.assert_partition_carries_on(station, "json").await;

    // Oversize for the node (64 KiB by default): a preview, whether or not the whole would fit
    // in a copy; just under the broker's max payload, the whole could not.
    for (station, length) in [
        ("hygiene-large", 100 * 1024),
        ("hygiene-huge", max_payload - 100),
    ] {
        let subject = station_song(&StationId::parse(station).expect("valid id"));
        let payload: Vec<u8> = (0..length).map(|index| (index % 251) as u8).collect();
        let ack = harness
            .publish(subject, HeaderMap::new(), payload.clone())
            .await
            .expect("the inbox stores a payload under the broker's max payload");
        let copy = harness.dead_letters.copy_of(ack.sequence).await;
        assert_clean_copy(&copy, ack.sequence, "oversize", station);
        let headers = copy.headers.as_ref().expect("headers");
        let value = |name: &str| headers.get(name).map(|value| value.to_string());
        assert_eq!(value(DLQ_TRUNCATED).as_deref(), Some("true"), "{station}");
        assert_eq!(
            value(DLQ_PAYLOAD_BYTES),
            Some(length.to_string()),
            "{station}"
        );
        assert!(
            !copy.payload.is_empty() && copy.payload.len() <= 4096,
            "{station}: a preview of {} bytes",
            copy.payload.len()
        );
        assert_eq!(
            copy.payload.as_ref(),
            &payload[..copy.payload.len()],
            "{station}: the preview is the payload's start"
        );
        harness.assert_partition_carries_on(station, station).await;
    }

    // One copy per stored reject and no other: refused publishes never reached the node.
    let stored = CASES.iter().filter(|case| case.inbox == Stores).count() + 3;
    assert_eq!(
        harness.state(subjects::DLQ_STREAM).await.messages,
        stored as u64
    );
    // Every copy was made: none was given up.
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "playhead_dead_letter_failures_total", &[]),
        0.0
    );
    harness.gateway.stop().await;
    node.stop().await;
}

/// Publishes a valid song, then an undecodable one carrying the case's headers; checks what the
/// inbox did with it, its copy, and that the partition carries on.
async fn control_header_case(harness: &mut Harness, index: usize, case: &Case) {
    let names: Vec<&str> = case.headers.iter().map(|(name, _)| *name).collect();
    let what = names.join(" + ");
    let station = format!("hygiene-{index}");
    let subject = station_song(&StationId::parse(station.clone()).expect("valid id"));

    // A valid song first, so "last sequence" and "last id" expectations have a value.
    let mut prelude_headers = HeaderMap::new();
    let prelude_id = format!("hygiene-prelude-{index}");
    prelude_headers.insert(MSG_ID, prelude_id.as_str());
    let prelude = harness
        .publish(subject.clone(), prelude_headers, song(&station, "Prelude"))
        .await
        .expect("the inbox stores the prelude");
    // Such an expectation cannot hold for PLAYHEAD_DLQ, or this case would prove nothing.
    let dlq_last = harness.state(subjects::DLQ_STREAM).await.last_sequence;
    assert!(prelude.sequence > dlq_last, "{what}: sequences too close");

    let mut headers = HeaderMap::new();
    for (name, value) in case.headers {
        let value = match value {
            Literal(text) => text.to_string(),
            InboxLastSequence => harness
                .state(Inbox::Station.stream_name())
                .await
                .last_sequence
                .to_string(),
            SubjectLastSequence => prelude.sequence.to_string(),
            LastMsgId => prelude_id.clone(),
        };
        headers.insert(*name, value.as_str());
    }
    let published = harness
        .publish(subject.clone(), headers, UNDECODABLE.to_vec())
        .await;
    match (case.inbox, published) {
        // Refused by the broker's answer (not lost on the way): nothing reaches the node.
        (Refuses, Err(error)) => assert_ne!(error.kind(), PublishErrorKind::TimedOut, "{what}"),
        (Stores, Ok(ack)) => {
            let copy = harness.dead_letters.copy_of(ack.sequence).await;
            assert_clean_copy(&copy, ack.sequence, "undecodable", &what);
            let headers = copy.headers.as_ref().expect("headers");
            assert_eq!(
                headers
                    .get(DLQ_ORIGINAL_SUBJECT)
                    .map(|value| value.to_string()),
                Some(subject),
                "{what}"
            );
            assert_eq!(copy.payload.as_ref(), UNDECODABLE, "{what}");
        }
        (expected, outcome) => panic!(
            "{what}: expected the inbox to answer {expected:?}, got {:?}",
            outcome
                .map(|ack| ack.sequence)
                .map_err(|error| error.to_string())
        ),
    }
    harness.assert_partition_carries_on(&station, &what).await;
}
