//! What a dead-letter copy carries, decided without the broker: its headers (only names
//! playhead chooses, never the publisher's), its payload (whole, or a bounded preview) and
//! whether a failed publish of it is worth retrying.

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use playhead_proto::codec::PayloadFormat;
use playhead_proto::headers::{
    CONTENT_TYPE, DLQ_DETAIL, DLQ_ORIGINAL_SUBJECT, DLQ_PAYLOAD_BYTES, DLQ_REASON,
    DLQ_STORED_SUBJECT, DLQ_STREAM, DLQ_STREAM_SEQUENCE, DLQ_TRUNCATED, JSON_CONTENT_TYPE, MSG_ID,
};
use playhead_proto::subjects::Inbox;

use crate::ingest::screen::{DeadLetter, DeadLetterReason};

/// Bytes of the original payload a preview keeps. The whole original stays in its inbox
/// stream (named by the copy's stream and sequence headers) for the inbox retention.
pub const PREVIEW_BYTES: usize = 4 * 1024;

/// Room left under the broker's max payload, so that a copy that only just fits by our count
/// is previewed rather than refused.
pub const PAYLOAD_MARGIN_BYTES: usize = 4 * 1024;

/// Failed publishes in a row after which a copy is given up even if each failure looked
/// transient: a broker that keeps failing one copy (e.g. no stream takes the DLQ subject) must
/// not hold a partition for ever.
pub const MAX_COPY_ATTEMPTS: u32 = 5;

/// Longest header value kept (details and subjects are cut, never refused).
const MAX_HEADER_CHARS: usize = 512;

/// `NATS/1.0\r\n` before the headers and `\r\n` after them, as the client counts them
/// against the max payload.
const HEADER_FRAMING_BYTES: usize = b"NATS/1.0\r\n".len() + b"\r\n".len();

/// Where a rejected message came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub inbox: Inbox,
    /// The subject the publisher used (the stored one when it cannot be mapped back).
    pub original_subject: &'a str,
    pub stored_subject: &'a str,
    /// The inbox stream sequence; absent only for a message that is not a JetStream one.
    pub sequence: Option<u64>,
}

/// The headers of a copy, built from scratch. JetStream applies control headers
/// (`Nats-Expected-*`, `Nats-Rollup`, `Nats-TTL`, `Nats-Batch-*`, ...) on every publish, so a
/// publisher's header that held for the inbox could make the copy fail for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyHeaders {
    pairs: Vec<(&'static str, String)>,
}

impl CopyHeaders {
    /// Reason, detail, origin and an id of our own; of the original headers only the
    /// content type, and only when the payload was read as JSON (a reader of the copy needs
    /// it), written as the canonical `application/json`.
    pub fn new(origin: Origin<'_>, letter: &DeadLetter, original: Option<&HeaderMap>) -> Self {
        let stream = origin.inbox.stream_name();
        let mut pairs = vec![
            (DLQ_REASON, letter.reason.label().to_owned()),
            (DLQ_DETAIL, header_safe(&letter.detail)),
            (DLQ_ORIGINAL_SUBJECT, header_safe(origin.original_subject)),
            (DLQ_STORED_SUBJECT, header_safe(origin.stored_subject)),
            (DLQ_STREAM, stream.to_owned()),
        ];
        if let Some(sequence) = origin.sequence {
            pairs.push((DLQ_STREAM_SEQUENCE, sequence.to_string()));
            // A redelivered reject is copied once (the broker drops the duplicate).
            pairs.push((MSG_ID, format!("dlq:{stream}:{sequence}")));
        }
        let content_type = original
            .and_then(|headers| headers.get(CONTENT_TYPE))
            .map(|value| value.as_str());
        if PayloadFormat::from_content_type(content_type) == PayloadFormat::Json {
            pairs.push((CONTENT_TYPE, JSON_CONTENT_TYPE.to_owned()));
        }
        Self { pairs }
    }

    /// Marks the copy as a preview of a payload of `original_len` bytes.
    pub fn mark_preview(&mut self, original_len: usize) {
        self.pairs
            .push((DLQ_PAYLOAD_BYTES, original_len.to_string()));
        self.pairs.push((DLQ_TRUNCATED, "true".to_owned()));
    }

    /// Bytes these headers take on the wire, as the client counts them against max payload.
    pub fn wire_len(&self) -> usize {
        HEADER_FRAMING_BYTES
            + self
                .pairs
                .iter()
                .map(|(name, value)| name.len() + b": ".len() + value.len() + b"\r\n".len())
                .sum::<usize>()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.pairs.iter().map(|(name, _)| *name)
    }

    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.pairs {
            headers.insert(*name, value.as_str());
        }
        headers
    }
}

/// How much of the original payload a copy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadPlan {
    Whole,
    /// The first `bytes` bytes (marked with [`CopyHeaders::mark_preview`]).
    Preview {
        bytes: usize,
    },
}

/// Every oversize payload above [`PREVIEW_BYTES`] is previewed: the node refused it for its
/// size, and the whole stays in the inbox stream. Any other payload is copied whole when the
/// copy fits under the broker's `max_payload` with [`PAYLOAD_MARGIN_BYTES`] to spare, and
/// previewed otherwise (a copy that does not fit could never be stored).
pub fn plan_payload(
    reason: DeadLetterReason,
    payload_len: usize,
    headers_len: usize,
    max_payload: usize,
) -> PayloadPlan {
    let room = max_payload.saturating_sub(headers_len + PAYLOAD_MARGIN_BYTES);
    let oversize = reason == DeadLetterReason::Oversize && payload_len > PREVIEW_BYTES;
    if !oversize && payload_len <= room {
        return PayloadPlan::Whole;
    }
    // The margin also covers the two preview headers; a broker limit too small for a whole
    // preview gets what room there is.
    PayloadPlan::Preview {
        bytes: payload_len.min(PREVIEW_BYTES).min(room),
    }
}

/// Whether publishing a copy again could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The broker answered with an error that the same copy gets again (a 4xx JetStream
    /// error, a too-large message, a failed expectation).
    Permanent,
    /// Connection loss, timeout, no responders, a 5xx: the broker may take it later.
    Transient,
}

pub fn classify(error: &PublishError) -> Failure {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => Failure::Permanent,
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => Failure::Transient,
        PublishErrorKind::Other => {
            let api_error = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>());
            match api_error {
                Some(api_error) if (400..500).contains(&api_error.code()) => Failure::Permanent,
                _ => Failure::Transient,
            }
        }
    }
}

/// While the connection is down the batch cannot be acknowledged either and comes back later:
/// such failures are not the copy's and do not bring it closer to being given up.
pub fn counts_against_copy(failure: Failure, connected: bool) -> bool {
    failure == Failure::Permanent || connected
}

/// Whether a copy is given up after a failure, `failures_in_a_row` counted so far.
pub fn gives_up(failure: Failure, failures_in_a_row: u32) -> bool {
    failure == Failure::Permanent || failures_in_a_row >= MAX_COPY_ATTEMPTS
}

/// Header values cannot carry control characters; keep them printable and short.
pub fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_HEADER_CHARS)
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
