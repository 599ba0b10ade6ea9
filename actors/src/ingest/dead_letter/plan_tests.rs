use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use playhead_proto::headers::{
    CONTENT_TYPE, DLQ_DETAIL, DLQ_ORIGINAL_SUBJECT, DLQ_PAYLOAD_BYTES, DLQ_REASON,
    DLQ_STORED_SUBJECT, DLQ_STREAM, DLQ_STREAM_SEQUENCE, DLQ_TRUNCATED, MSG_ID, REPLY_TO,
    TRACEPARENT,
};
use playhead_proto::subjects::Inbox;

use super::*;

const STORED: &str = "playhead-in.station.3.radio-7.song";
const ORIGINAL: &str = "playhead.station.radio-7.song";
const ONE_MIB: usize = 1024 * 1024;

fn origin(sequence: Option<u64>) -> Origin<'static> {
    Origin {
        inbox: Inbox::Station,
        original_subject: ORIGINAL,
        stored_subject: STORED,
        sequence,
    }
}

fn undecodable() -> DeadLetter {
    DeadLetter::new(
        DeadLetterReason::Undecodable,
        "payload is not a valid protobuf",
    )
}

/// Every control header a JetStream publish may carry, and some that are not ours either.
fn everything_a_publisher_may_send(content_type: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("Nats-Msg-Id", "theirs"),
        ("Nats-Expected-Stream", "PLAYHEAD_INBOX_STATION"),
        ("Nats-Expected-Last-Sequence", "5"),
        ("Nats-Expected-Last-Subject-Sequence", "5"),
        ("Nats-Expected-Last-Subject-Sequence-Subject", ">"),
        ("Nats-Expected-Last-Msg-Id", "before"),
        ("Nats-Rollup", "sub"),
        ("Nats-TTL", "1h"),
        ("Nats-Marker-Reason", "MaxAge"),
        ("Nats-Schedule", "@hourly"),
        ("Nats-Schedule-Target", "x"),
        ("Nats-Batch-Id", "b"),
        ("Nats-Batch-Sequence", "1"),
        ("Nats-Batch-Commit", "1"),
        ("Nats-Incr", "1"),
        ("Nats-Required-Api-Level", "0"),
        (
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        (REPLY_TO, "playhead.reply.x"),
        ("X-Anything", "y"),
        (CONTENT_TYPE, content_type),
    ] {
        headers.insert(name, value);
    }
    headers
}

fn names(headers: &CopyHeaders) -> Vec<&'static str> {
    headers.names().collect()
}

#[test]
fn a_copy_carries_only_playhead_headers_whatever_the_original_carried() {
    let original = everything_a_publisher_may_send("application/x-protobuf");
    let headers = CopyHeaders::new(origin(Some(42)), &undecodable(), Some(&original));
    assert_eq!(
        names(&headers),
        [
            DLQ_REASON,
            DLQ_DETAIL,
            DLQ_ORIGINAL_SUBJECT,
            DLQ_STORED_SUBJECT,
            DLQ_STREAM,
            DLQ_STREAM_SEQUENCE,
            MSG_ID,
        ]
    );
    assert_eq!(headers.get(DLQ_REASON), Some("undecodable"));
    assert_eq!(headers.get(DLQ_ORIGINAL_SUBJECT), Some(ORIGINAL));
    assert_eq!(headers.get(DLQ_STORED_SUBJECT), Some(STORED));
    assert_eq!(headers.get(DLQ_STREAM), Some("PLAYHEAD_INBOX_STATION"));
    assert_eq!(headers.get(DLQ_STREAM_SEQUENCE), Some("42"));
    assert_eq!(headers.get(MSG_ID), Some("dlq:PLAYHEAD_INBOX_STATION:42"));
    // The map handed to the client holds exactly these.
    let map = headers.to_header_map();
    assert_eq!(map.len(), names(&headers).len());
    assert_eq!(
        map.get(MSG_ID).map(|value| value.as_str()),
        Some("dlq:PLAYHEAD_INBOX_STATION:42")
    );
}

#[test]
fn the_content_type_travels_only_when_the_payload_was_read_as_json() {
    for (sent, kept) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("APPLICATION/JSON", true),
        ("application/x-protobuf", false),
        ("text/plain", false),
    ] {
        let original = everything_a_publisher_may_send(sent);
        let headers = CopyHeaders::new(origin(Some(1)), &undecodable(), Some(&original));
        // Always the canonical value, never the publisher's spelling.
        let expected = kept.then_some("application/json");
        assert_eq!(headers.get(CONTENT_TYPE), expected, "{sent}");
    }
    let bare = CopyHeaders::new(origin(Some(1)), &undecodable(), None);
    assert_eq!(bare.get(CONTENT_TYPE), None);
}

#[test]
fn without_a_stream_sequence_there_is_no_dedup_id_that_could_collide() {
    let headers = CopyHeaders::new(origin(None), &undecodable(), None);
    assert_eq!(headers.get(DLQ_STREAM_SEQUENCE), None);
    assert_eq!(headers.get(MSG_ID), None);
}

#[test]
fn header_values_stay_printable_and_bounded() {
    let letter = DeadLetter::new(
        DeadLetterReason::Undecodable,
        format!("line\r\nbreak\tand {}", "x".repeat(2_000)),
    );
    let headers = CopyHeaders::new(origin(Some(1)), &letter, None);
    let detail = headers.get(DLQ_DETAIL).expect("detail");
    assert!(detail.starts_with("line  break and x"));
    assert!(!detail.chars().any(char::is_control));
    assert_eq!(detail.chars().count(), 512);
    // Building the client's map does not panic on what the publisher sent.
    headers.to_header_map();
}

#[test]
fn wire_len_counts_what_the_client_checks() {
    let mut headers = CopyHeaders::new(origin(Some(7)), &undecodable(), None);
    headers.mark_preview(123);
    let by_hand: usize = "NATS/1.0\r\n".len()
        + "\r\n".len()
        + names(&headers)
            .into_iter()
            .map(|name| format!("{name}: {}\r\n", headers.get(name).expect("present")).len())
            .sum::<usize>();
    assert_eq!(headers.wire_len(), by_hand);
    assert_eq!(headers.get(DLQ_PAYLOAD_BYTES), Some("123"));
    assert_eq!(headers.get(DLQ_TRUNCATED), Some("true"));
}

#[test]
fn a_payload_is_copied_whole_while_the_copy_fits_with_the_margin() {
    let headers = 300;
    let fits = ONE_MIB - headers - PAYLOAD_MARGIN_BYTES;
    for reason in [DeadLetterReason::Undecodable, DeadLetterReason::Rejected] {
        assert_eq!(
            plan_payload(reason, fits, headers, ONE_MIB),
            PayloadPlan::Whole
        );
        assert_eq!(
            plan_payload(reason, fits + 1, headers, ONE_MIB),
            PayloadPlan::Preview {
                bytes: PREVIEW_BYTES
            }
        );
    }
    // Just under the broker's max payload: stored in the inbox, too large for a copy.
    assert_eq!(
        plan_payload(
            DeadLetterReason::Undecodable,
            ONE_MIB - 100,
            headers,
            ONE_MIB
        ),
        PayloadPlan::Preview {
            bytes: PREVIEW_BYTES
        }
    );
}

#[test]
fn an_oversize_payload_above_the_preview_bound_is_always_previewed() {
    let oversize = DeadLetterReason::Oversize;
    assert_eq!(
        plan_payload(oversize, PREVIEW_BYTES, 300, ONE_MIB),
        PayloadPlan::Whole
    );
    assert_eq!(
        plan_payload(oversize, PREVIEW_BYTES + 1, 300, ONE_MIB),
        PayloadPlan::Preview {
            bytes: PREVIEW_BYTES
        }
    );
    // The same size for another reason fits, so it is copied whole.
    assert_eq!(
        plan_payload(DeadLetterReason::Undecodable, 64 * 1024 + 1, 300, ONE_MIB),
        PayloadPlan::Whole
    );
}

#[test]
fn a_broker_limit_too_small_for_a_whole_preview_gets_what_room_there_is() {
    let headers = 300;
    let max_payload = headers + PAYLOAD_MARGIN_BYTES + 1_000;
    assert_eq!(
        plan_payload(DeadLetterReason::Undecodable, 1_000, headers, max_payload),
        PayloadPlan::Whole
    );
    assert_eq!(
        plan_payload(DeadLetterReason::Undecodable, 1_001, headers, max_payload),
        PayloadPlan::Preview { bytes: 1_000 }
    );
    assert_eq!(
        plan_payload(DeadLetterReason::Undecodable, 10, headers, 1_000),
        PayloadPlan::Preview { bytes: 0 }
    );
}

fn api_error(code: usize, err_code: u64) -> PublishError {
    let error: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
        "code": code,
        "err_code": err_code,
        "description": "from the broker",
    }))
    .expect("an API error");
    PublishError::with_source(PublishErrorKind::Other, error)
}

#[test]
fn errors_the_broker_would_repeat_are_permanent() {
    // expected stream does not match, message too large, rollup / TTL / counter refused
    for (code, err_code) in [(400, 10060), (400, 10054), (400, 10117), (400, 10166)] {
        assert_eq!(classify(&api_error(code, err_code)), Failure::Permanent);
    }
    for kind in [
        PublishErrorKind::MaxPayloadExceeded,
        PublishErrorKind::WrongLastSequence,
        PublishErrorKind::WrongLastMessageId,
    ] {
        assert_eq!(
            classify(&PublishError::new(kind)),
            Failure::Permanent,
            "{kind}"
        );
    }
}

#[test]
fn connection_trouble_and_unavailability_are_transient() {
    for kind in [
        PublishErrorKind::TimedOut,
        PublishErrorKind::BrokenPipe,
        PublishErrorKind::StreamNotFound,
        PublishErrorKind::MaxAckPending,
        PublishErrorKind::Other,
    ] {
        assert_eq!(
            classify(&PublishError::new(kind)),
            Failure::Transient,
            "{kind}"
        );
    }
    // JetStream temporarily unavailable (no quorum, stream offline).
    assert_eq!(classify(&api_error(503, 10008)), Failure::Transient);
    assert_eq!(classify(&api_error(500, 10000)), Failure::Transient);
}

#[test]
fn a_permanent_failure_gives_up_at_once_a_transient_one_after_five_in_a_row() {
    assert!(gives_up(Failure::Permanent, 1));
    for failures in 1..MAX_COPY_ATTEMPTS {
        assert!(!gives_up(Failure::Transient, failures), "{failures}");
    }
    assert!(gives_up(Failure::Transient, MAX_COPY_ATTEMPTS));
    assert_eq!(MAX_COPY_ATTEMPTS, 5);
}

#[test]
fn failures_while_disconnected_do_not_count_against_the_copy() {
    assert!(counts_against_copy(Failure::Transient, true));
    assert!(!counts_against_copy(Failure::Transient, false));
    // A refusal is an answer from the broker, whatever the state is by now.
    assert!(counts_against_copy(Failure::Permanent, false));
}
