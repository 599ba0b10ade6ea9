//! Copies rejected inbox messages to `PLAYHEAD_DLQ`, with headers naming the reason and the
//! original subject, and counts them.

use std::sync::Arc;

use async_nats::jetstream;
use playhead_proto::headers::{
    DLQ_DETAIL, DLQ_ORIGINAL_SUBJECT, DLQ_REASON, DLQ_STORED_SUBJECT, DLQ_STREAM,
    DLQ_STREAM_SEQUENCE, MSG_ID,
};
use playhead_proto::subjects::Inbox;

use super::screen::DeadLetter;
use crate::metrics::{DeadLetterLabel, NodeMetrics};
use crate::runtime::EntityError;

/// Longest detail kept in a header.
const MAX_DETAIL_CHARS: usize = 512;

#[derive(Clone)]
pub struct DeadLetters {
    pub jetstream: jetstream::Context,
    pub metrics: Arc<NodeMetrics>,
}

impl DeadLetters {
    pub async fn publish(
        &self,
        inbox: Inbox,
        message: &jetstream::Message,
        letter: &DeadLetter,
    ) -> Result<(), EntityError> {
        let mut headers = message.headers.clone().unwrap_or_default();
        let original_subject = inbox
            .parse_stored(&message.subject)
            .map(|stored| stored.original_subject())
            .unwrap_or_else(|_| message.subject.to_string());
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or_default();
        headers.insert(DLQ_REASON, letter.reason.label());
        headers.insert(DLQ_DETAIL, header_safe(&letter.detail).as_str());
        headers.insert(
            DLQ_ORIGINAL_SUBJECT,
            header_safe(&original_subject).as_str(),
        );
        headers.insert(DLQ_STORED_SUBJECT, header_safe(&message.subject).as_str());
        headers.insert(DLQ_STREAM, inbox.stream_name());
        headers.insert(DLQ_STREAM_SEQUENCE, sequence.to_string().as_str());
        // A redelivered reject is copied once.
        headers.insert(
            MSG_ID,
            format!("dlq:{}:{sequence}", inbox.stream_name()).as_str(),
        );
        let publish_error = |error: String| EntityError::Publish {
            what: "dead letter",
            detail: error,
        };
        self.jetstream
            .publish_with_headers(inbox.dlq_subject(), headers, message.payload.clone())
            .await
            .map_err(|error| publish_error(error.to_string()))?
            .await
            .map_err(|error| publish_error(error.to_string()))?;
        self.metrics
            .dead_letters
            .get_or_create(&DeadLetterLabel {
                inbox: inbox.label(),
                reason: letter.reason.label(),
            })
            .inc();
        tracing::info!(
            inbox = inbox.label(),
            reason = letter.reason.label(),
            detail = %letter.detail,
            subject = %original_subject,
            sequence,
            "message dead-lettered"
        );
        Ok(())
    }
}

/// Header values cannot carry control characters; keep them printable and short.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL_CHARS)
        .collect()
}
