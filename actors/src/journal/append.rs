//! Appending an entity's decisions to `PLAYHEAD_EVENTS`, exactly once whatever the downtime,
//! and reading an entity's journal back.
//!
//! **Optimistic concurrency per entity.** Every event of an entity lives on
//! `playhead.events.{family}.{id}.{EventName}`. An append names the sequence of the entity's
//! last event it knows (`Nats-Expected-Last-Subject-Sequence`, checked against the wildcard
//! `playhead.events.{family}.{id}.*` through `Nats-Expected-Last-Subject-Sequence-Subject`):
//! if the journal moved on — the node crashed after an append and before its local commit,
//! and the command came back — the broker refuses, nothing is written twice, and the entity
//! catches up from the journal instead. Unlike `Nats-Msg-Id` this holds for any downtime.
//!
//! **One event per message, chained.** Each event expects the one before it, so the events of
//! a slice land in order or not at all past the first refusal. Atomic batch publish would
//! write a decision in one go, but on a file-backed R1 stream nats-server 2.15 stages every
//! batch in a store of its own: measured here ~10× slower than chained publishes (300 vs
//! 2,200 two-event decisions/s, sequential). Fast batches (2.14+) gathering the appends of
//! many entities into one acknowledgement were built and measured too: no CPU saved, the
//! broker's cost being each event's check and store (README, *Benchmarks*, eleventh
//! session). A crash between two events of one decision
//! leaves the first part in the journal; [`EVENT_INDEX`] (`{index}/{count}`) lets catch-up
//! recognise it and the shell complete it (see `runtime::shell`).
//!
//! Reads use direct get (`allow_direct`) with the entity's wildcard subject.

use async_nats::jetstream::{self, context::PublishErrorKind, stream::DirectGetErrorKind};
use async_nats::{HeaderMap, HeaderName};
use bytes::Bytes;
use playhead_proto::headers::{EVENT_INDEX, EVENT_VERSION, INBOX_SEQUENCE};
use playhead_proto::subjects::{EVENTS_STREAM, EventFamily, entity_journal, event_subject};

use super::codec::EncodedEvent;
use crate::domain::time::Timestamp;
use crate::telemetry;

// Built once (a `&str` name is validated, matched and copied on every insert).
const EXPECTED_LAST_SUBJECT_SEQUENCE: HeaderName =
    HeaderName::from_static("Nats-Expected-Last-Subject-Sequence");
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: HeaderName =
    HeaderName::from_static("Nats-Expected-Last-Subject-Sequence-Subject");
const INBOX_SEQUENCE_HEADER: HeaderName = HeaderName::from_static(INBOX_SEQUENCE);
const EVENT_INDEX_HEADER: HeaderName = HeaderName::from_static(EVENT_INDEX);
const EVENT_VERSION_HEADER: HeaderName = HeaderName::from_static(EVENT_VERSION);

/// Why an append or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The entity's journal holds events after the one the append expected: the local state is
    /// behind (or, with `actual < expected`, the events it expected have expired).
    #[error(
        "the journal of {subject} moved on: expected its last event at {expected}, it is at {actual}"
    )]
    Conflict {
        subject: String,
        expected: u64,
        actual: u64,
    },
    /// The broker refused the event and will refuse it again (too large, bad header...).
    #[error("the broker refused event {name} of {subject}: {detail}")]
    Refused {
        subject: String,
        name: &'static str,
        /// The command whose decision it belongs to.
        inbox_seq: u64,
        detail: String,
    },
    /// The broker could not be reached or did not answer in time: retrying may succeed.
    #[error("the journal is unavailable: {detail}")]
    Unavailable { detail: String },
    /// A stored event is not a playhead event (missing or malformed journal headers).
    #[error("journal event {sequence} on {subject} is malformed: {detail}")]
    Malformed {
        subject: String,
        sequence: u64,
        detail: String,
    },
}

impl JournalError {
    pub fn is_transient(&self) -> bool {
        matches!(self, JournalError::Unavailable { .. })
    }
}

/// One event to append, with the decision it belongs to.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// Inbox sequence of the command that decided it.
    pub inbox_seq: u64,
    /// Place in its decision, and the decision's size.
    pub index: u32,
    pub count: u32,
    pub event: EncodedEvent,
    /// The deciding command's trace: the event's message carries it.
    pub span: tracing::Span,
}

/// One event read back from an entity's journal.
#[derive(Debug, Clone)]
pub struct JournalRecord {
    pub sequence: u64,
    pub event_name: String,
    pub version: u32,
    pub inbox_seq: u64,
    pub index: u32,
    pub count: u32,
    pub payload: Bytes,
    pub stored_at: Timestamp,
}

impl JournalRecord {
    /// Whether this is the last event of its decision.
    pub fn ends_decision(&self) -> bool {
        self.index + 1 >= self.count
    }
}

/// The journal stream, for appends and per-entity reads.
#[derive(Clone)]
pub struct Journal {
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
}

/// An inbox message read back by sequence (the command of a decision a catch-up folds).
pub struct StoredCommand {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
    pub stored_at_millis: u64,
}

impl Journal {
    /// The messages of the inbox stream `stream` on `filter` with a sequence in `from..=to`,
    /// oldest first (those that expired are missing).
    pub async fn inbox_messages(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, StoredCommand)>, JournalError> {
        let unavailable = |detail: String| JournalError::Unavailable { detail };
        let stream = self
            .jetstream
            .get_stream_no_info(stream)
            .await
            .map_err(|error| unavailable(format!("cannot open {stream}: {error}")))?;
        let mut messages = Vec::new();
        let mut next = from.max(1);
        while next <= to {
            let message = match stream.get_first_raw_message_by_subject(filter, next).await {
                Ok(message) => message,
                Err(error)
                    if error.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    break;
                }
                Err(error) => {
                    return Err(unavailable(format!(
                        "cannot read the inbox messages on {filter} from {next}: {error}"
                    )));
                }
            };
            if message.sequence > to {
                break;
            }
            next = message.sequence + 1;
            messages.push((
                message.sequence,
                StoredCommand {
                    subject: message.subject.to_string(),
                    headers: message.headers,
                    payload: message.payload,
                    stored_at_millis: (message.time.unix_timestamp_nanos() / 1_000_000).max(0)
                        as u64,
                },
            ));
        }
        Ok(messages)
    }

    pub async fn open(jetstream: jetstream::Context) -> Result<Self, JournalError> {
        let stream = jetstream.get_stream(EVENTS_STREAM).await.map_err(|error| {
            JournalError::Unavailable {
                detail: format!("cannot open {EVENTS_STREAM}: {error}"),
            }
        })?;
        Ok(Self { jetstream, stream })
    }

    /// Appends `events` in order after the entity's event at `expected_last` (0: none yet);
    /// returns the sequence of the last one. Stops at the first failure: the events before it
    /// are in the journal, the shell learns which on its next append.
    pub async fn append(
        &self,
        family: EventFamily,
        id: &str,
        expected_last: u64,
        events: &[OutgoingEvent],
    ) -> Result<u64, JournalError> {
        let journal_subject = entity_journal(family, id);
        let mut last = expected_last;
        for outgoing in events {
            let mut headers = HeaderMap::new();
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, last.to_string());
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                journal_subject.as_str(),
            );
            headers.insert(INBOX_SEQUENCE_HEADER, outgoing.inbox_seq.to_string());
            headers.insert(
                EVENT_INDEX_HEADER,
                format!("{}/{}", outgoing.index, outgoing.count),
            );
            headers.insert(EVENT_VERSION_HEADER, outgoing.event.version.to_string());
            // A span that records nothing (traces not exported) has no context to carry.
            if !outgoing.span.is_none() {
                telemetry::inject_span_context(&outgoing.span, &mut headers);
            }
            let subject = event_subject(family, id, outgoing.event.name);
            let published = match self
                .jetstream
                .publish_with_headers(
                    subject,
                    headers,
                    Bytes::copy_from_slice(&outgoing.event.payload),
                )
                .await
            {
                Ok(ack) => ack.await,
                Err(error) => {
                    return Err(JournalError::Unavailable {
                        detail: error.to_string(),
                    });
                }
            };
            last = match published {
                Ok(ack) => ack.sequence,
                Err(error) => {
                    return Err(classify(error, &journal_subject, outgoing, last));
                }
            };
        }
        Ok(last)
    }

    /// The entity's events after sequence `after`, oldest first.
    pub async fn read_after(
        &self,
        family: EventFamily,
        id: &str,
        after: u64,
    ) -> Result<Vec<JournalRecord>, JournalError> {
        let journal_subject = entity_journal(family, id);
        let mut records = Vec::new();
        let mut next = after + 1;
        loop {
            let message = match self
                .stream
                .direct_get_next_for_subject(journal_subject.as_str(), Some(next))
                .await
            {
                Ok(message) => message,
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
                Err(error) => {
                    return Err(JournalError::Unavailable {
                        detail: error.to_string(),
                    });
                }
            };
            next = message.sequence + 1;
            records.push(record(
                message.subject.as_str(),
                message.sequence,
                &message.headers,
                message.payload,
                message.time,
            )?);
        }
        Ok(records)
    }

    /// The sequence of the entity's last event (0 when it has none).
    pub async fn last_sequence(&self, family: EventFamily, id: &str) -> Result<u64, JournalError> {
        match self
            .stream
            .direct_get_last_for_subject(entity_journal(family, id))
            .await
        {
            Ok(message) => Ok(message.sequence),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(error) => Err(JournalError::Unavailable {
                detail: error.to_string(),
            }),
        }
    }
}

/// Parses the journal headers of a stored event.
pub fn record(
    subject: &str,
    sequence: u64,
    headers: &HeaderMap,
    payload: Bytes,
    stored: time::OffsetDateTime,
) -> Result<JournalRecord, JournalError> {
    let malformed = |detail: String| JournalError::Malformed {
        subject: subject.to_owned(),
        sequence,
        detail,
    };
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .ok_or_else(|| malformed(format!("no {name} header")))
    };
    let number = |name: &str| -> Result<u64, JournalError> {
        header(name)?
            .parse()
            .map_err(|_| malformed(format!("{name} is not a number")))
    };
    let inbox_seq = number(INBOX_SEQUENCE)?;
    let version = u32::try_from(number(EVENT_VERSION)?)
        .map_err(|_| malformed(format!("{EVENT_VERSION} is out of range")))?;
    let position = header(EVENT_INDEX)?;
    let (index, count) = position
        .split_once('/')
        .and_then(|(index, count)| Some((index.parse::<u32>().ok()?, count.parse::<u32>().ok()?)))
        .filter(|(index, count)| index < count)
        .ok_or_else(|| malformed(format!("{EVENT_INDEX} {position:?} is not index/count")))?;
    let event_name = subject.rsplit('.').next().unwrap_or_default().to_owned();
    Ok(JournalRecord {
        sequence,
        event_name,
        version,
        inbox_seq,
        index,
        count,
        payload,
        stored_at: Timestamp::from_millis((stored.unix_timestamp_nanos() / 1_000_000).max(0) as u64),
    })
}

fn classify(
    error: jetstream::context::PublishError,
    journal_subject: &str,
    outgoing: &OutgoingEvent,
    expected: u64,
) -> JournalError {
    match error.kind() {
        PublishErrorKind::WrongLastSequence => JournalError::Conflict {
            subject: journal_subject.to_owned(),
            expected,
            actual: std::error::Error::source(&error)
                .and_then(|source| actual_last_sequence(&source.to_string()))
                .unwrap_or(u64::MAX),
        },
        PublishErrorKind::MaxPayloadExceeded | PublishErrorKind::Other => JournalError::Refused {
            subject: journal_subject.to_owned(),
            name: outgoing.event.name,
            inbox_seq: outgoing.inbox_seq,
            detail: error.to_string(),
        },
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::WrongLastMessageId => JournalError::Unavailable {
            detail: error.to_string(),
        },
    }
}

/// The broker names where the journal is: "wrong last sequence: 17502 (code 400, ...)".
fn actual_last_sequence(description: &str) -> Option<u64> {
    let (_, rest) = description.split_once("last sequence: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actual_last_sequence_is_read_from_the_broker_error() {
        assert_eq!(
            actual_last_sequence("wrong last sequence: 17502 (code 400, error code 10071)"),
            Some(17502)
        );
        assert_eq!(actual_last_sequence("wrong last sequence: 0"), Some(0));
        assert_eq!(actual_last_sequence("something else"), None);
    }

    #[test]
    fn journal_headers_parse_and_malformed_ones_are_named() {
        let mut headers = HeaderMap::new();
        headers.insert(INBOX_SEQUENCE, "41");
        headers.insert(EVENT_INDEX, "1/2");
        headers.insert(EVENT_VERSION, "2");
        let stored = time::OffsetDateTime::from_unix_timestamp(5).unwrap();
        let parsed = record(
            "playhead.events.station.radio-1.SongStarted",
            9,
            &headers,
            Bytes::from_static(b"x"),
            stored,
        )
        .unwrap();
        assert_eq!(
            (parsed.inbox_seq, parsed.index, parsed.count, parsed.version),
            (41, 1, 2, 2)
        );
        assert_eq!(parsed.event_name, "SongStarted");
        assert_eq!(parsed.stored_at, Timestamp::from_millis(5_000));
        assert!(parsed.ends_decision());
        headers.insert(EVENT_INDEX, "2/2");
        assert!(matches!(
            record("s", 9, &headers, Bytes::new(), stored),
            Err(JournalError::Malformed { .. })
        ));
    }
}
