//! Copies rejected inbox messages to `PLAYHEAD_DLQ`, with headers naming the reason and the
//! original subject, and counts them.
//!
//! A copy carries only headers playhead chooses and a payload that fits under the broker's
//! max payload ([`plan`]). Its publish can still fail: a failure the broker would repeat, or
//! [`MAX_COPY_ATTEMPTS`] failures in a row, gives the copy up (logged at error with the
//! original's stream and sequence, counted) so that the partition moves on; anything else is
//! retried by the intake. The original stays in its inbox stream either way.

pub mod plan;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishError;
use bytes::Bytes;
use playhead_proto::subjects::Inbox;

pub use self::plan::MAX_COPY_ATTEMPTS;
use self::plan::{CopyHeaders, Failure, Origin, PayloadPlan};
use super::screen::DeadLetter;
use crate::metrics::{DeadLetterLabel, InboxLabel, NodeMetrics};
use crate::runtime::EntityError;

#[derive(Clone)]
pub struct DeadLetters {
    /// Knows the broker's max payload.
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub metrics: Arc<NodeMetrics>,
}

/// What became of a dead letter (an `Err` from [`DeadLetterCopy::attempt`] means "retry").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Stored in `PLAYHEAD_DLQ` (or already there: the broker dropped the duplicate).
    Copied,
    /// Never to be stored: logged and counted; the original stays in its inbox stream.
    GivenUp,
}

impl DeadLetters {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Prepares the copy of `message`; [`DeadLetterCopy::attempt`] publishes it.
    pub fn copy<'a>(
        &'a self,
        inbox: Inbox,
        message: &'a jetstream::Message,
        letter: &'a DeadLetter,
    ) -> DeadLetterCopy<'a> {
        let original_subject = inbox
            .parse_stored(&message.subject)
            .map(|stored| stored.original_subject())
            .unwrap_or_else(|_| message.subject.to_string());
        let origin = Origin {
            inbox,
            original_subject: &original_subject,
            stored_subject: &message.subject,
            sequence: message.info().ok().map(|info| info.stream_sequence),
        };
        let mut headers = CopyHeaders::new(origin, letter, message.headers.as_ref());
        let plan = plan::plan_payload(
            letter.reason,
            message.payload.len(),
            headers.wire_len(),
            self.client.max_payload(),
        );
        let payload = match plan {
            PayloadPlan::Whole => message.payload.clone(),
            PayloadPlan::Preview { bytes } => {
                headers.mark_preview(message.payload.len());
                message.payload.slice(..bytes)
            }
        };
        DeadLetterCopy {
            dead_letters: self,
            inbox,
            letter,
            sequence: origin.sequence,
            original_subject,
            headers,
            payload,
            failures: AtomicU32::new(0),
        }
    }
}

/// One dead letter on its way to `PLAYHEAD_DLQ`; it counts its failed attempts.
pub struct DeadLetterCopy<'a> {
    dead_letters: &'a DeadLetters,
    inbox: Inbox,
    letter: &'a DeadLetter,
    sequence: Option<u64>,
    original_subject: String,
    headers: CopyHeaders,
    payload: Bytes,
    failures: AtomicU32,
}

impl DeadLetterCopy<'_> {
    /// Publishes the copy once. `Err` when it failed and is worth retrying; the intake's
    /// backoff paces the attempts.
    pub async fn attempt(&self) -> Result<CopyOutcome, EntityError> {
        let Err(error) = self.publish().await else {
            self.copied();
            return Ok(CopyOutcome::Copied);
        };
        let failure = plan::classify(&error);
        let failures = if plan::counts_against_copy(failure, self.dead_letters.connected()) {
            self.failures.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.failures.load(Ordering::Relaxed)
        };
        if plan::gives_up(failure, failures) {
            self.give_up(&error, failure, failures);
            return Ok(CopyOutcome::GivenUp);
        }
        Err(EntityError::Publish {
            what: "dead letter",
            detail: error.to_string(),
        })
    }

    async fn publish(&self) -> Result<(), PublishError> {
        self.dead_letters
            .jetstream
            .publish_with_headers(
                self.inbox.dlq_subject(self.letter.reason.label()),
                self.headers.to_header_map(),
                self.payload.clone(),
            )
            .await?
            .await?;
        Ok(())
    }

    fn copied(&self) {
        let reason = self.letter.reason.label();
        self.dead_letters
            .metrics
            .dead_letters
            .get_or_create(&DeadLetterLabel {
                inbox: self.inbox.label(),
                reason,
            })
            .inc();
        tracing::info!(
            inbox = self.inbox.label(),
            reason,
            detail = %self.letter.detail,
            subject = %self.original_subject,
            sequence = self.sequence,
            preview = self.headers.get(playhead_proto::headers::DLQ_TRUNCATED).is_some(),
            "message dead-lettered"
        );
    }

    fn give_up(&self, error: &PublishError, failure: Failure, failures: u32) {
        self.dead_letters
            .metrics
            .dead_letter_failures
            .get_or_create(&InboxLabel {
                inbox: self.inbox.label(),
            })
            .inc();
        tracing::error!(
            inbox = self.inbox.label(),
            stream = self.inbox.stream_name(),
            sequence = self.sequence,
            reason = self.letter.reason.label(),
            detail = %self.letter.detail,
            subject = %self.original_subject,
            %error,
            ?failure,
            failures,
            "dead-letter copy given up; the original stays in its inbox stream"
        );
    }
}
