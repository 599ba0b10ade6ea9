//! Inbox intake: one task per ownership group (see [`group`]) pulls batches from the group's
//! durable consumer in two stages:
//!
//! - **apply**: screens out bad input, applies the rest through the group's shard (entities
//!   run side by side; each one's messages in order): decisions journaled, records and the
//!   answers filed in sled (not yet flushed). Up to `batches_in_flight` batches are applied
//!   side by side as long as they share no entity; a batch that shares one waits for the
//!   batch ahead to be through (retries included), and batches leave the stage in delivery
//!   order;
//! - **settle**, behind it on its own task: copies the dead letters, flushes the local store
//!   once for every batch applied meanwhile, sends their answers, and acknowledges the last of
//!   them. The consumer acknowledges cumulatively, so this is a contiguous durable
//!   watermark: nothing is acknowledged before everything delivered ahead of it is applied
//!   and flushed.
//!
//! The apply stage does not wait for a flush, so batches fill while the disk is slow; the
//! settle stage lags by at most `SETTLE_QUEUE` batches (and the consumer's
//! `max_ack_pending`) before the apply stage waits for it.
//!
//! **Nothing stalls a group.** A batch that fails for a transient reason (the broker is
//! away) is retried as it is, never skipped. A batch that fails for a permanent reason is
//! taken apart: its messages are applied one at a time, so the one that fails is known; after
//! `max_attempts` failures it is quarantined to the dead-letter stream (reason `poison`, or
//! `panic` when an actor panicked on it) and the group carries on. A decider panic is
//! quarantined at once (the shell catches it).
//!
//! The intake owns its shard actor: it spawns it, spawns it again if it dies, and stops it
//! when the intake stops.
//!
//! - `apply`: the batch through the shard, retries, isolation and quarantine.
//! - [`screen`]: what makes a message unusable, as a dead-letter reason.
//! - [`commands`]: wire → domain command mapping shared with the gateway.
//! - [`dead_letter`]: the copies in `PLAYHEAD_DLQ`.

mod apply;
pub mod commands;
pub mod dead_letter;
pub mod group;
pub mod imports;
pub mod screen;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::{MessagesError, MessagesErrorKind};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use playhead_client::service::nats_auth::RequesterKeys;
use playhead_proto::headers::REPLY_SIGNATURE;
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use self::dead_letter::DeadLetters;
use self::group::GroupId;
use self::screen::{DeadLetter, DeadLetterReason, Screened};
use crate::domain::time::Timestamp;
use crate::metrics::{GroupLabel, InboxLabel, InboxOutcome, NodeMetrics};
use crate::runtime::shard::{ShardActor, ShardArguments, ShardMessage};
use crate::runtime::{EntityError, EntityKind, Envelope, Outcome, Processed, QuarantineReason};
use crate::storage::Storage;
use crate::telemetry;

/// Whether the reply subject `reply` of the stored message `stored_subject` (of `inbox`) is
/// signed by the user whose prefix it is under (always, when `requesters` is `None`): checked
/// at intake, and again before a catch-up answers a stored command.
pub fn check_reply_signature(
    requesters: Option<&RequesterKeys>,
    inbox: playhead_proto::subjects::Inbox,
    stored_subject: &str,
    headers: Option<&HeaderMap>,
    reply: &str,
) -> Result<(), DeadLetter> {
    let Some(requesters) = requesters else {
        return Ok(());
    };
    let refused = |detail: String| DeadLetter::new(DeadLetterReason::InvalidReplyTo, detail);
    let subject = inbox
        .parse_stored(stored_subject)
        .map_err(|error| refused(error.to_string()))?
        .original_subject();
    let signature = headers
        .and_then(|headers| headers.get(REPLY_SIGNATURE))
        .map(|value| value.as_str());
    requesters
        .verify(&subject, reply, signature)
        .map_err(|refusal| refused(refusal.to_string()))
}

/// Screens one stored message into its entity, command and reply subject.
pub type Screen<K> =
    fn(
        &str,
        Option<&HeaderMap>,
        &[u8],
        usize,
    ) -> Result<Screened<<K as EntityKind>::Id, <K as EntityKind>::Command>, DeadLetter>;

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
    #[error("the shard of {consumer} cannot start: {detail}")]
    Shard { consumer: String, detail: String },
}

/// What an intake needs besides its consumer.
pub struct IntakeConfig {
    pub batch_size: usize,
    /// Batches applied side by side (sharing no entity).
    pub batches_in_flight: usize,
    pub max_message_bytes: usize,
    /// Failures of one message, for a reason that does not go away, before it is quarantined.
    pub max_attempts: u32,
}

pub struct GroupIntake<K: EntityKind> {
    pub group: GroupId,
    pub consumer: PullConsumer,
    /// How to start (and restart) the group's shard.
    pub shard_arguments: Box<dyn Fn() -> ShardArguments<K> + Send + Sync>,
    pub screen: Screen<K>,
    /// Whose signatures reply subjects need (`None`: not checked).
    pub requesters: Option<Arc<RequesterKeys>>,
    pub storage: Storage,
    pub dead_letters: DeadLetters,
    /// Answers go out as core NATS messages.
    pub client: async_nats::Client,
    pub metrics: Arc<NodeMetrics>,
    pub config: IntakeConfig,
    /// The entities' runtime (here for its injected faults, tests only).
    pub runtime: Arc<crate::runtime::Runtime>,
    /// What `/readyz` reads of this intake.
    pub progress: Arc<IntakeProgress>,
}

/// How long an intake may hold delivered-but-unsettled work, or leave messages waiting, without
/// settling a batch before `/readyz` calls it stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

/// An intake's progress as `/readyz` reads it: running, and when it last settled a batch with
/// how many messages its consumer still held then.
#[derive(Debug, Default)]
pub struct IntakeProgress {
    running: std::sync::atomic::AtomicBool,
    /// Unix ms of the last settled batch (or of the start).
    settled_at_ms: std::sync::atomic::AtomicU64,
    /// Messages the consumer still held after that batch.
    pending: std::sync::atomic::AtomicU64,
}

impl IntakeProgress {
    fn started(&self, now_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.settled_at_ms.store(now_ms, Relaxed);
        self.running.store(true, Relaxed);
    }

    fn settled(&self, now_ms: u64, pending: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.settled_at_ms.store(now_ms, Relaxed);
        self.pending.store(pending, Relaxed);
    }

    fn stopped(&self) {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Ok` with the backlog, or why the intake is not progressing: not running, or messages
    /// waiting and nothing settled for [`STALLED_AFTER`].
    pub fn check(&self, now_ms: u64) -> Result<String, String> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.running.load(Relaxed) {
            return Err("not running".into());
        }
        let pending = self.pending.load(Relaxed);
        let quiet_ms = now_ms.saturating_sub(self.settled_at_ms.load(Relaxed));
        if pending > 0 && quiet_ms > STALLED_AFTER.as_millis() as u64 {
            return Err(format!(
                "stalled: {pending} messages waiting, nothing settled for {} s",
                quiet_ms / 1000
            ));
        }
        Ok(format!("{pending} waiting"))
    }
}

fn unix_ms_now() -> u64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

/// Applied batches the settle stage may hold before the apply stage waits for it.
const SETTLE_QUEUE: usize = 64;

/// Frees the entities of a batch that is through the apply stage and queues it for the
/// settle stage (waiting while the settler is `SETTLE_QUEUE` batches behind: back-pressure).
/// False when the intake must stop: the batch was stopped before it was applied (nothing
/// behind it may settle), or the settle stage is gone.
async fn pass_on<Id: Eq + std::hash::Hash>(
    busy: &mut HashSet<Id>,
    (entities, applied): (HashSet<Id>, Option<Applied>),
    settle_queue: &tokio::sync::mpsc::Sender<Applied>,
) -> bool {
    for id in &entities {
        busy.remove(id);
    }
    match applied {
        Some(applied) => settle_queue.send(applied).await.is_ok(),
        None => false,
    }
}

/// The group's shard, shared by the batches in flight; spawned again if it dies.
pub(super) struct ShardSlot<K: EntityKind>(tokio::sync::Mutex<Option<ActorRef<ShardMessage<K>>>>);

/// A batch the apply stage is done with, for the settle stage.
struct Applied {
    batch: Vec<jetstream::Message>,
    /// Positions in `batch` to copy to the dead-letter stream, in order.
    rejected: Vec<(usize, DeadLetter)>,
    /// The answers, sent once the batch is durable, each under its command's trace.
    answers: Vec<Answer>,
    /// Outcomes of the applied messages, by label.
    counts: HashMap<&'static str, u64>,
    started: std::time::Instant,
}

/// An answer for the settle stage to send once its batch is durable.
struct Answer {
    subject: playhead_proto::subjects::ReplySubject,
    answer: Vec<u8>,
    /// The answered command's trace.
    span: tracing::Span,
}

/// A command's span, the child of its publisher's `traceparent` when it sent one; none while
/// spans are not exported.
fn command_span(inbox: &'static str, seq: u64, headers: Option<&HeaderMap>) -> tracing::Span {
    if !telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("apply", inbox, seq);
    telemetry::adopt_context(&span, headers);
    span
}

/// A screened message, where it sits in its batch.
type Accepted<K> = (
    usize,
    <K as EntityKind>::Id,
    Envelope<<K as EntityKind>::Command>,
);

impl<K: EntityKind> GroupIntake<K> {
    /// Runs until `stop` is cancelled (then returns `Ok`: what was applied is settled, or
    /// left unacknowledged if it cannot be), or until the consumer ends, which is an error:
    /// the node cannot go on without this group.
    pub async fn run(self, stop: CancellationToken) -> Result<(), IngestError> {
        let intake = Arc::new(self);
        let consumer_name = intake.group.consumer_name();
        let shard = ShardSlot(tokio::sync::Mutex::new(Some(
            intake.spawn_shard(&consumer_name).await?,
        )));
        intake.progress.started(unix_ms_now());
        let (settle_queue, settling) = tokio::sync::mpsc::channel(SETTLE_QUEUE);
        let settler = tokio::spawn(intake.clone().settle(settling, stop.clone()));
        let result = intake
            .pull(&consumer_name, &shard, settle_queue, &stop)
            .await;
        // The queue is closed: the settler finishes what was applied, then ends.
        let _ = settler.await;
        if let Some(shard) = shard.0.into_inner() {
            let _ = shard
                .stop_and_wait(None, Some(Duration::from_secs(30)))
                .await;
        }
        intake.progress.stopped();
        tracing::debug!(consumer = %consumer_name, "intake stopped");
        result
    }

    /// Takes batches as the consumer delivers them and applies up to `batches_in_flight`
    /// side by side, as long as they share no entity (a batch that does waits for the ones
    /// ahead, so each entity still sees its messages in order, one batch at a time, retries
    /// included). Applied batches go to the settle stage in delivery order, so its watermark
    /// stays contiguous.
    async fn pull(
        &self,
        consumer_name: &str,
        shard: &ShardSlot<K>,
        settle_queue: tokio::sync::mpsc::Sender<Applied>,
        stop: &CancellationToken,
    ) -> Result<(), IngestError> {
        let ended = |detail: String| IngestError::Consumer {
            consumer: consumer_name.to_owned(),
            detail,
        };
        let messages = self
            .consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|error| ended(error.to_string()))?;
        let mut batches = messages.ready_chunks(self.config.batch_size);
        let mut in_flight = futures::stream::FuturesOrdered::new();
        // The entities of the batches in flight.
        let mut busy: HashSet<K::Id> = HashSet::new();
        let end = loop {
            let batch = tokio::select! {
                biased;
                _ = stop.cancelled() => break Ok(()),
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    if !pass_on(&mut busy, done, &settle_queue).await {
                        break Ok(());
                    }
                    continue;
                }
                batch = batches.next(), if in_flight.len() < self.config.batches_in_flight => {
                    match batch {
                        Some(batch) => batch,
                        // async-nats ends the stream only when the consumer became unusable.
                        None => break Err(IngestError::StreamEnded { consumer: consumer_name.to_owned() }),
                    }
                }
            };
            let mut messages = Vec::with_capacity(batch.len());
            for message in batch {
                match message {
                    Ok(message) => messages.push(message),
                    Err(error) if self.consumer_is_gone(&error).await => {
                        return Err(IngestError::ConsumerGone {
                            consumer: consumer_name.to_owned(),
                            source: error,
                        });
                    }
                    // Heartbeat gaps and reconnects surface here; the stream carries on.
                    Err(error) => tracing::warn!(consumer = %consumer_name, %error, "pull error"),
                }
            }
            if messages.is_empty() {
                continue;
            }
            let screened = self.screen_batch(&messages);
            let entities: HashSet<K::Id> = screened.0.iter().map(|(_, id, _)| id.clone()).collect();
            // An entity of this batch still in flight: the batches ahead go first.
            while entities.iter().any(|id| busy.contains(id)) {
                let done = in_flight.next().await.expect("a busy entity is in flight");
                if !pass_on(&mut busy, done, &settle_queue).await {
                    return Ok(());
                }
            }
            busy.extend(entities.iter().cloned());
            in_flight.push_back(async move {
                (
                    entities,
                    self.apply_batch(messages, screened, shard, stop).await,
                )
            });
        };
        // Stopping (or the stream ended): the batches in flight finish their attempt in hand
        // and settle in order, up to the first one that did not get applied.
        while let Some(done) = in_flight.next().await {
            if !pass_on(&mut busy, done, &settle_queue).await {
                break;
            }
        }
        end
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

    pub(super) async fn spawn_shard(
        &self,
        consumer_name: &str,
    ) -> Result<ActorRef<ShardMessage<K>>, IngestError> {
        let (shard, _handle) =
            Actor::spawn(None, ShardActor::<K>::default(), (self.shard_arguments)())
                .await
                .map_err(|error| IngestError::Shard {
                    consumer: consumer_name.to_owned(),
                    detail: error.to_string(),
                })?;
        Ok(shard)
    }

    /// Screens every message of a batch: the envelopes to apply, with their positions, and the
    /// dead letters. A pure function of the messages, so a retry screens them again instead of
    /// keeping a copy of every envelope in case the batch fails.
    fn screen_batch(
        &self,
        batch: &[jetstream::Message],
    ) -> (Vec<Accepted<K>>, Vec<(usize, DeadLetter)>) {
        let mut accepted: Vec<Accepted<K>> = Vec::with_capacity(batch.len());
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
                self.config.max_message_bytes,
            )
            .and_then(|screened| self.signed_reply(&message.subject, message, screened));
            match screened {
                Ok(Screened {
                    id,
                    command,
                    reply_to,
                }) => accepted.push((
                    position,
                    id,
                    Envelope {
                        seq: info.stream_sequence,
                        now: Timestamp::from_millis(
                            (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                        ),
                        command,
                        reply_to,
                        span: command_span(
                            self.group.inbox.label(),
                            info.stream_sequence,
                            message.headers.as_ref(),
                        ),
                    },
                )),
                Err(letter) => rejected.push((position, letter)),
            }
        }
        (accepted, rejected)
    }

    /// `screened` when its reply subject (if any) is signed by the user whose prefix it is
    /// under; a dead letter `invalid_reply_to` otherwise.
    fn signed_reply(
        &self,
        stored_subject: &str,
        message: &jetstream::Message,
        screened: Screened<K::Id, K::Command>,
    ) -> Result<Screened<K::Id, K::Command>, DeadLetter> {
        if let Some(reply) = &screened.reply_to {
            check_reply_signature(
                self.requesters.as_deref(),
                self.group.inbox,
                stored_subject,
                message.headers.as_ref(),
                reply.as_str(),
            )?;
        }
        Ok(screened)
    }

    /// The apply stage for one screened batch: applies it through the shard (decisions
    /// journaled, state and answers written but not yet flushed) and hands the rest to the
    /// settle stage. `None` when stopped first.
    async fn apply_batch(
        &self,
        batch: Vec<jetstream::Message>,
        (accepted, mut rejected): (Vec<Accepted<K>>, Vec<(usize, DeadLetter)>),
        shard: &ShardSlot<K>,
        stop: &CancellationToken,
    ) -> Option<Applied> {
        let started = std::time::Instant::now();
        let replies: Vec<_> = accepted
            .iter()
            .map(|(position, _, envelope)| {
                (*position, envelope.reply_to.clone(), envelope.span.clone())
            })
            .collect();
        let results = self.apply(&batch, accepted, shard, stop).await?;
        let mut counts = HashMap::<&'static str, u64>::new();
        let mut answers = Vec::new();
        for ((position, reply_to, span), processed) in replies.into_iter().zip(results) {
            let Processed { outcome, answer } = processed;
            if let (Some(subject), Some(answer)) = (reply_to, answer) {
                answers.push(Answer {
                    subject,
                    answer,
                    span,
                });
            }
            match outcome {
                // Counted once, as dead-lettered, in the settle stage.
                Outcome::Rejected { reason } => rejected.push((
                    position,
                    DeadLetter::new(DeadLetterReason::Rejected, reason),
                )),
                Outcome::Quarantined { reason, detail } => rejected.push((
                    position,
                    DeadLetter::new(
                        match reason {
                            QuarantineReason::Panic => DeadLetterReason::Panic,
                            QuarantineReason::Poison => DeadLetterReason::Poison,
                        },
                        detail,
                    ),
                )),
                outcome => *counts.entry(outcome.label()).or_default() += 1,
            }
        }
        rejected.sort_by_key(|(position, _)| *position);
        Some(Applied {
            batch,
            rejected,
            answers,
            counts,
            started,
        })
    }

    /// The settle stage: takes every applied batch queued so far (in delivery order), copies
    /// their dead letters, makes the store durable with one flush, sends their answers, and
    /// acknowledges the last message — a contiguous watermark: every message up to it is
    /// applied and flushed, and the consumer acknowledges cumulatively. Meanwhile the apply
    /// stage goes on with the next batches. Ends once the queue is closed and drained, or when
    /// stopped with a failure in hand (then the rest is redelivered after restart).
    async fn settle(
        self: Arc<Self>,
        mut queue: tokio::sync::mpsc::Receiver<Applied>,
        stop: CancellationToken,
    ) {
        let mut ready = Vec::new();
        // The latest acknowledgement, waiting for the broker's confirmation.
        let mut acknowledging: Option<tokio::task::JoinHandle<()>> = None;
        while queue.recv_many(&mut ready, SETTLE_QUEUE).await > 0 {
            for applied in &ready {
                for (position, letter) in &applied.rejected {
                    // Copied or given up, the batch moves on; only a failure worth retrying
                    // holds it.
                    let copy =
                        self.dead_letters
                            .copy(self.group.inbox, &applied.batch[*position], letter);
                    if self
                        .retry(&stop, "dead letter", || copy.attempt())
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
            let flushed = self
                .retry(&stop, "flush", || async {
                    self.storage.make_durable().await.map_err(EntityError::from)
                })
                .await;
            if flushed.is_none() {
                return;
            }
            // Only now is every decision settled here durable, with its answer filed: a
            // command that comes back gets the very answer sent.
            for applied in &mut ready {
                self.send_answers(std::mem::take(&mut applied.answers))
                    .await;
            }
            let last = ready
                .last()
                .and_then(|applied| applied.batch.last())
                .expect("batches are never empty");
            // Cumulative: acknowledges every batch settled here, dead letters included, so it
            // covers the ones before it. No round waits for a confirmation: one lost with the
            // connection (a broker restart) held the next round for the request timeout, and
            // every heartbeat behind it failed open. The one before is left to finish alone.
            acknowledging = Some(tokio::spawn(self.acknowledge(last)));
            for applied in ready.drain(..) {
                self.record_metrics(&applied);
            }
        }
        // The last one is confirmed (or times out) before the stage ends, so a clean stop
        // leaves nothing to redeliver.
        if let Some(last) = acknowledging {
            let _ = last.await;
        }
    }

    /// Acknowledges `last` (cumulatively: the consumer acks all) and waits for the broker to
    /// confirm it, through the client's shared reply subscription — `double_ack` subscribes
    /// and unsubscribes an inbox of its own for every acknowledgement. A failure is only
    /// logged: redelivery is harmless, every entity skips what it already applied, and the
    /// next round's acknowledgement covers this one.
    fn acknowledge(&self, last: &jetstream::Message) -> impl Future<Output = ()> + Send + 'static {
        let client = self.client.clone();
        let subject = last.reply.clone();
        let group = self.group;
        async move {
            let result = match subject {
                Some(subject) => client
                    .request(subject, bytes::Bytes::from_static(b"+ACK"))
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string()),
                None => Err("not a JetStream message".to_owned()),
            };
            if let Err(error) = result {
                tracing::warn!(inbox = group.inbox.label(), %group, %error, "ack failed");
            }
        }
    }

    /// Best effort: a publisher that went away does not hold up the group.
    async fn send_answers(&self, answers: Vec<Answer>) {
        let any = !answers.is_empty();
        for Answer {
            subject,
            answer,
            span,
        } in answers
        {
            let reply = crate::child_span!(&span, "reply");
            let mut headers = HeaderMap::new();
            telemetry::inject_span_context(&reply, &mut headers);
            if let Err(error) = self
                .client
                .publish_with_headers(subject.as_str().to_owned(), headers, answer.into())
                .instrument(reply)
                .await
            {
                tracing::warn!(subject = subject.as_str(), %error, "cannot publish an answer");
            }
        }
        if any && self.runtime.faults.crashes_after_answers() {
            // The answers reach the broker before the process dies.
            if self.client.flush().await.is_ok() {
                self.runtime.faults.answered();
            }
        }
    }

    fn record_metrics(&self, applied: &Applied) {
        let Applied {
            batch,
            rejected,
            counts,
            started,
            ..
        } = applied;
        let dead_lettered = rejected.len();
        let inbox = self.group.inbox.label();
        for (&outcome, &count) in counts {
            self.metrics
                .inbox_messages
                .get_or_create(&InboxOutcome { inbox, outcome })
                .inc_by(count);
        }
        if dead_lettered > 0 {
            self.metrics
                .inbox_messages
                .get_or_create(&InboxOutcome {
                    inbox,
                    outcome: "dead_lettered",
                })
                .inc_by(dead_lettered as u64);
        }
        let label = InboxLabel { inbox };
        self.metrics
            .batch_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if let Some(info) = batch.last().and_then(|last| last.info().ok()) {
            let now_nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            let age = (now_nanos - info.published.unix_timestamp_nanos()).max(0) as f64 / 1e9;
            self.metrics
                .message_latency_seconds
                .get_or_create(&label)
                .observe(age);
            self.metrics
                .consumer_pending
                .get_or_create(&GroupLabel {
                    inbox,
                    group: self.group.index,
                })
                .set(info.pending as i64);
            self.progress.settled(unix_ms_now(), info.pending);
        }
    }
}
