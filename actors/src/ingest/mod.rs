//! Inbox intake: one task per inbox partition pulls batches from its durable consumer,
//! screens out bad input into the dead-letter stream, hands the rest to the partition's
//! shard, makes state durable, and only then acknowledges (the consumer acks cumulatively).
//! A batch that fails for infrastructure reasons is retried in place, never skipped, so a
//! partition never moves past a message it has not applied.

pub mod commands;
pub mod dead_letter;
pub mod screen;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{MessagesError, MessagesErrorKind};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use playhead_proto::subjects::Inbox;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio_util::sync::CancellationToken;

use self::dead_letter::DeadLetters;
use self::screen::{DeadLetter, DeadLetterReason};
use crate::domain::time::Timestamp;
use crate::metrics::{InboxLabel, InboxOutcome, NodeMetrics, PartitionLabel};
use crate::sharding::shard::ShardMessage;
use crate::sharding::{Entity, EntityError, Envelope, Outcome};
use crate::storage::Storage;

/// Screens one stored message into its entity id and command.
pub type Screen<E> = fn(
    &str,
    Option<&async_nats::HeaderMap>,
    &[u8],
    usize,
) -> Result<(<E as Entity>::Id, <E as Entity>::Command), DeadLetter>;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the consumer of {consumer} stopped: {detail}")]
    Consumer { consumer: String, detail: String },
    /// Fatal: the partition cannot be read any more until the topology is set up again.
    #[error("the consumer {consumer} is gone")]
    ConsumerGone {
        consumer: String,
        #[source]
        source: MessagesError,
    },
    #[error("the message stream of the consumer {consumer} ended")]
    StreamEnded { consumer: String },
}

pub struct PartitionIntake<E: Entity> {
    pub inbox: Inbox,
    pub partition: u32,
    pub consumer: PullConsumer,
    pub shard: ActorRef<ShardMessage<E>>,
    pub screen: Screen<E>,
    pub storage: Storage,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<NodeMetrics>,
    pub batch_size: usize,
    pub max_message_bytes: usize,
}

const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl<E: Entity> PartitionIntake<E> {
    /// Runs until `stop` is cancelled; the batch in hand is finished (or abandoned unacked
    /// if it cannot complete) before returning. Returns an error, without waiting for `stop`,
    /// when the consumer is gone: the partition can no longer be read.
    pub async fn run(self, stop: CancellationToken) -> Result<(), IngestError> {
        let consumer_name = self.inbox.consumer_name(self.partition);
        let messages = self
            .consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|error| IngestError::Consumer {
                consumer: consumer_name.clone(),
                detail: error.to_string(),
            })?;
        let mut batches = messages.ready_chunks(self.batch_size);
        loop {
            let batch = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                batch = batches.next() => match batch {
                    Some(batch) => batch,
                    // async-nats ends the stream only when the consumer became unusable.
                    None => return Err(IngestError::StreamEnded { consumer: consumer_name }),
                },
            };
            let mut messages = Vec::with_capacity(batch.len());
            for message in batch {
                match message {
                    Ok(message) => messages.push(message),
                    Err(error) if self.consumer_is_gone(&error).await => {
                        return Err(IngestError::ConsumerGone {
                            consumer: consumer_name,
                            source: error,
                        });
                    }
                    // Heartbeat gaps and reconnects surface here; the stream carries on.
                    Err(error) => tracing::warn!(consumer = %consumer_name, %error, "pull error"),
                }
            }
            if !messages.is_empty() {
                self.process(messages, &stop).await;
            }
        }
        tracing::debug!(consumer = %consumer_name, "intake stopped");
        Ok(())
    }

    /// Whether a pull error means the consumer no longer exists: the server said so (a pull
    /// pending when it was deleted), or a pull that found no responder or missed heartbeats
    /// and the API confirms it (a pull sent after the deletion). Anything else (a reconnect,
    /// a leader change) is transient: warning and pulling on is right.
    async fn consumer_is_gone(&self, error: &MessagesError) -> bool {
        match error.kind() {
            MessagesErrorKind::ConsumerDeleted => true,
            MessagesErrorKind::NoResponders | MessagesErrorKind::MissingHeartbeat => matches!(
                self.consumer.get_info().await.map_err(|error| error.kind()),
                Err(ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound)
            ),
            _ => false,
        }
    }

    async fn process(&self, batch: Vec<jetstream::Message>, stop: &CancellationToken) {
        let started = std::time::Instant::now();
        let inbox = self.inbox.label();
        let mut accepted = Vec::with_capacity(batch.len());
        let mut accepted_positions = Vec::with_capacity(batch.len());
        let mut rejected: Vec<(usize, DeadLetter)> = Vec::new();
        for (position, message) in batch.iter().enumerate() {
            let Ok(info) = message.info() else {
                rejected.push((
                    position,
                    DeadLetter::new(DeadLetterReason::BadSubject, "not a JetStream message"),
                ));
                continue;
            };
            let screened = (self.screen)(
                &message.subject,
                message.headers.as_ref(),
                &message.payload,
                self.max_message_bytes,
            );
            match screened {
                Ok((id, command)) => {
                    accepted_positions.push(position);
                    accepted.push((
                        id,
                        Envelope {
                            seq: info.stream_sequence,
                            now: Timestamp::from_millis(
                                (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                            ),
                            command,
                            headers: message.headers.clone(),
                        },
                    ));
                }
                Err(letter) => rejected.push((position, letter)),
            }
        }
        let Some(outcomes) = self.apply_with_retry(accepted, stop).await else {
            return;
        };
        let mut counts = std::collections::HashMap::<&'static str, u64>::new();
        for (position, outcome) in accepted_positions.into_iter().zip(outcomes) {
            match outcome {
                // Counted once, as dead-lettered, below.
                Outcome::Rejected { reason } => rejected.push((
                    position,
                    DeadLetter::new(DeadLetterReason::Rejected, reason),
                )),
                outcome => *counts.entry(outcome.label()).or_default() += 1,
            }
        }
        for (position, letter) in &rejected {
            let published = self
                .retry(stop, "dead letter", || {
                    self.dead_letters
                        .publish(self.inbox, &batch[*position], letter)
                })
                .await;
            if published.is_none() {
                return;
            }
        }
        let flushed = self
            .retry(stop, "flush", || async {
                self.storage.make_durable().await.map_err(EntityError::from)
            })
            .await;
        if flushed.is_none() {
            return;
        }
        let last = batch.last().expect("batches are never empty");
        // Cumulative: acknowledges the whole batch, dead letters included.
        if let Err(error) = last.double_ack().await {
            // Redelivery is harmless: every entity skips what it already applied.
            tracing::warn!(inbox, partition = self.partition, %error, "ack failed");
        }
        for (outcome, count) in counts {
            self.metrics
                .inbox_messages
                .get_or_create(&InboxOutcome { inbox, outcome })
                .inc_by(count);
        }
        if !rejected.is_empty() {
            self.metrics
                .inbox_messages
                .get_or_create(&InboxOutcome {
                    inbox,
                    outcome: "dead_lettered",
                })
                .inc_by(rejected.len() as u64);
        }
        let label = InboxLabel { inbox };
        self.metrics
            .batch_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if let Ok(info) = last.info() {
            let now_nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            let age = (now_nanos - info.published.unix_timestamp_nanos()).max(0) as f64 / 1e9;
            self.metrics
                .message_latency_seconds
                .get_or_create(&label)
                .observe(age);
            self.metrics
                .consumer_pending
                .get_or_create(&PartitionLabel {
                    inbox,
                    partition: self.partition,
                })
                .set(info.pending as i64);
        }
    }

    /// Applies the accepted envelopes, retrying the whole batch on failure (entities skip
    /// what they already applied). None when stopped before it succeeded.
    async fn apply_with_retry(
        &self,
        accepted: Vec<(E::Id, Envelope<E::Command>)>,
        stop: &CancellationToken,
    ) -> Option<Vec<Outcome>> {
        if accepted.is_empty() {
            return Some(Vec::new());
        }
        self.retry(stop, "apply", || async {
            let batch = accepted.clone();
            match self
                .shard
                .call(|reply| ShardMessage::Process(batch, reply), None)
                .await
            {
                Ok(CallResult::Success(outcomes)) => outcomes,
                other => Err(EntityError::ActorGone {
                    id: format!("shard {}", self.partition),
                    detail: format!("{other:?}"),
                }),
            }
        })
        .await
    }

    /// Runs `attempt` until it succeeds, backing off; None if `stop` came first.
    async fn retry<F, Fut, T>(
        &self,
        stop: &CancellationToken,
        what: &str,
        mut attempt: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, EntityError>>,
    {
        let mut backoff = RETRY_BACKOFF_START;
        loop {
            match attempt().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    tracing::warn!(
                        inbox = self.inbox.label(),
                        partition = self.partition,
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "{what} failed; retrying the batch"
                    );
                    self.metrics
                        .batch_retries
                        .get_or_create(&InboxLabel {
                            inbox: self.inbox.label(),
                        })
                        .inc();
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::warn!(
                        inbox = self.inbox.label(),
                        partition = self.partition,
                        "stopping with an unfinished batch; it is redelivered after restart"
                    );
                    return None;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }
}
