//! Journal append cost per decision: what writing every decision to `PLAYHEAD_EVENTS` costs,
//! against plain JetStream publishes of the same payloads, in one run and the same way.
//!
//! K entities append at once, each one decision at a time (as an entity actor does: the next
//! decision waits for the previous one's acknowledgement); every variant publishes the same
//! number of decisions of station events (`SongStarted`, and `SongEnded` + `SongStarted`) to the
//! journal stream, each entity on subjects of its own:
//!
//! - bare: a plain publish per event, its ack awaited (the baseline);
//! - bare, chained: the same with the two expected-last-subject-sequence headers the journal
//!   sets, so the broker checks the entity's last sequence (no playhead code);
//! - `Journal::append` of one-event decisions, and of two-event decisions (each event its own
//!   chained publish, as the journal writes them);
//! - atomic batches (nats-server 2.12+, ADR-50) on a scratch stream that allows them: one
//!   batch holds one decision of each of the K entities, each message with the entity's
//!   expected-last-subject-sequence check, and one acknowledgement answers the whole batch —
//!   what a journal written a lane batch at a time would cost (not what playhead does). On a
//!   single-replica file stream nats-server stages each batch in a file store of its own
//!   (`newBatchStore` in `server/jetstream_batching.go`): measured ~2.7 ms a batch of 64, about
//!   four times `Journal::append`'s cost a decision;
//! - fast batches (nats-server 2.14+, "fast ingest") on a scratch stream that allows them: the
//!   same batches, not atomic, each message checked on its own, acknowledged by flow control
//!   and one publish acknowledgement at the commit (not what playhead does either).
//!
//! The variants run in turn, round after round (the broker's store keeps growing, so no variant
//! always runs on the smaller stream); the median round is reported with the range.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use playhead_actors::broker;
use playhead_actors::domain::station::{Song, StationEvent};
use playhead_actors::domain::time::Timestamp;
use playhead_actors::journal::append::{Journal, OutgoingEvent};
use playhead_actors::journal::codec::{EncodedEvent, encode_station};
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{EventFamily, entity_journal, event_subject};
use playhead_tests::harness::NatsServer;
use playhead_tests::system::temp_dir;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::common::{latency_histogram, node_config};
use crate::cpu::CpuSample;

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
/// The scratch stream of the atomic-batch variant, and its subjects' prefix.
const ATOMIC_STREAM: &str = "BENCH_JOURNAL_ATOMIC";
const ATOMIC_PREFIX: &str = "bench-atomic";
/// The scratch stream of the fast-batch variant, its subjects' prefix, and the prefix of the
/// reply subjects that carry each message's batch position.
const FAST_STREAM: &str = "BENCH_JOURNAL_FAST";
const FAST_PREFIX: &str = "bench-fast";
const FAST_REPLIES: &str = "bench-fast-replies";
/// Fast-batch operations, as the reply subject names them (`server/stream.go`).
const FAST_START: u8 = 0;
const FAST_APPEND: u8 = 1;
const FAST_COMMIT: u8 = 2;
/// Messages nats-server takes in one atomic batch (its default limit).
const MAX_ATOMIC_BATCH: usize = 1_000;
/// Decisions appended before the first round, not measured.
const WARM_UP_DECISIONS: usize = 2_000;

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Decisions per variant and round.
    pub decisions: usize,
    /// Entities appending at once.
    pub entities: usize,
    pub rounds: usize,
    pub partitions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    BareChained,
    AppendOne,
    AppendTwo,
    AtomicBatch,
    FastBatch,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Bare,
        Variant::BareChained,
        Variant::AppendOne,
        Variant::AppendTwo,
        Variant::AtomicBatch,
        Variant::FastBatch,
    ];

    fn label(self) -> &'static str {
        match self {
            Variant::Bare => "(a) bare publish, ack awaited",
            Variant::BareChained => "(a2) bare + expected-sequence headers",
            Variant::AppendOne => "(b) Journal::append, 1-event decisions",
            Variant::AppendTwo => "(c) Journal::append, 2-event decisions",
            Variant::AtomicBatch => "(d) atomic batches, one decision an entity",
            Variant::FastBatch => "(e) fast batches, one decision an entity",
        }
    }

    fn token(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::BareChained => "chained",
            Variant::AppendOne => "one",
            Variant::AppendTwo => "two",
            Variant::AtomicBatch => "atomic",
            Variant::FastBatch => "fast",
        }
    }

    fn events(self) -> usize {
        match self {
            Variant::AppendTwo => 2,
            _ => 1,
        }
    }
}

/// One variant's rounds.
struct Measured {
    variant: Variant,
    /// Wall time of each round.
    rounds: Vec<Duration>,
    /// Round trip of every decision of every round, µs.
    latency: Histogram<u64>,
    /// CPU seconds of every round: this process (the client) and the broker (`None`: not
    /// readable here).
    client_cpu: Option<f64>,
    broker_cpu: Option<f64>,
}

pub struct JournalCost {
    measured: Vec<Measured>,
    stream_messages: u64,
}

pub async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<JournalCost> {
    anyhow::ensure!(
        workload.entities > 0 && workload.decisions >= workload.entities && workload.rounds > 0,
        "the journal phase needs at least one decision per entity and one round"
    );
    anyhow::ensure!(
        workload.entities <= MAX_ATOMIC_BATCH,
        "the journal phase's atomic batches hold one decision of each entity: at most {MAX_ATOMIC_BATCH} entities"
    );
    let data = temp_dir();
    let config = node_config(&nats.url(), data.path(), workload.partitions)?;
    let jetstream = jetstream::new(nats.connect().await);
    broker::ensure_streams(&jetstream, &config)
        .await
        .context("creating the journal stream")?;
    let journal = Journal::open(jetstream.clone()).await?;
    // The batch variants' streams: each allows its protocol.
    let scratch = |name: &str, prefix: &str| jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    };
    let atomic = jetstream::stream::Config {
        allow_atomic_publish: true,
        ..scratch(ATOMIC_STREAM, ATOMIC_PREFIX)
    };
    let fast = jetstream::stream::Config {
        allow_batch_publish: true,
        ..scratch(FAST_STREAM, FAST_PREFIX)
    };
    for (config, variant) in [(atomic, "atomic-batch"), (fast, "fast-batch")] {
        jetstream
            .create_stream(config)
            .await
            .with_context(|| format!("creating the {variant} scratch stream"))?;
    }

    eprintln!("journal: warming up…");
    let warm_up = Workload {
        decisions: WARM_UP_DECISIONS.max(workload.entities),
        ..*workload
    };
    for variant in Variant::ALL {
        append_round(&jetstream, &journal, variant, "warm", &warm_up).await?;
    }
    let mut measured: Vec<Measured> = Variant::ALL
        .iter()
        .map(|&variant| Measured {
            variant,
            rounds: Vec::new(),
            latency: latency_histogram(),
            client_cpu: Some(0.0),
            broker_cpu: Some(0.0),
        })
        .collect();
    for round in 0..workload.rounds {
        for entry in &mut measured {
            eprintln!(
                "journal: round {} of {}: {}…",
                round + 1,
                workload.rounds,
                entry.variant.label()
            );
            let before = CpuSample::now(nats.pid());
            let (elapsed, latency) = append_round(
                &jetstream,
                &journal,
                entry.variant,
                &format!("r{round}"),
                workload,
            )
            .await?;
            let spent = CpuSample::now(nats.pid()).spent_since(&before);
            let add = |total: Option<f64>, spent: Option<f64>| Some(total? + spent?);
            entry.client_cpu = add(entry.client_cpu, spent.bench);
            entry.broker_cpu = add(entry.broker_cpu, spent.broker);
            entry.rounds.push(elapsed);
            entry.latency.add(latency)?;
        }
    }
    let stream_messages = journal_messages(&jetstream).await?;
    Ok(JournalCost {
        measured,
        stream_messages,
    })
}

/// Appends `workload.decisions` decisions of `variant` from `workload.entities` entities at
/// once; returns the wall time and each decision's round trip.
async fn append_round(
    jetstream: &jetstream::Context,
    journal: &Journal,
    variant: Variant,
    round: &str,
    workload: &Workload,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    match variant {
        Variant::AtomicBatch | Variant::FastBatch => {
            return batch_round(jetstream, variant, round, workload).await;
        }
        _ => {}
    }
    let start = Arc::new(Barrier::new(workload.entities + 1));
    let mut entities = JoinSet::new();
    for entity in 0..workload.entities {
        // Spread the decisions as evenly as they divide.
        let decisions = workload.decisions / workload.entities
            + usize::from(entity < workload.decisions % workload.entities);
        let id = StationId::parse(format!("jbench-{round}-{}-{entity}", variant.token()))?;
        let appender = Appender::new(jetstream.clone(), journal.clone(), variant, id);
        let start = start.clone();
        entities.spawn(async move {
            start.wait().await;
            appender.append_all(decisions).await
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut latency = latency_histogram();
    while let Some(joined) = entities.join_next().await {
        latency.add(joined??)?;
    }
    Ok((started.elapsed(), latency))
}

/// `workload.decisions` one-event decisions of `workload.entities` entities as batches of
/// `variant`'s protocol, one after the other, each holding one decision of each entity (the
/// last one fewer when they do not divide), every message checked against its entity's last
/// sequence; returns the wall time and each decision's round trip (its batch's).
async fn batch_round(
    jetstream: &jetstream::Context,
    variant: Variant,
    round: &str,
    workload: &Workload,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let client = jetstream.client();
    let id = StationId::parse(format!("jbench-{round}-{}", variant.token()))?;
    let payload = Bytes::from(song_change(&id).1.payload);
    let prefix = match variant {
        Variant::AtomicBatch => ATOMIC_PREFIX,
        _ => FAST_PREFIX,
    };
    let subjects: Vec<(String, String)> = (0..workload.entities)
        .map(|entity| {
            let entity = format!("{prefix}.{round}.e{entity}");
            (format!("{entity}.SongStarted"), format!("{entity}.>"))
        })
        .collect();
    // Fast batches answer on each message's reply subject.
    let mut replies = match variant {
        Variant::FastBatch => Some(
            client
                .subscribe(format!("{FAST_REPLIES}.{round}.>"))
                .await?,
        ),
        _ => None,
    };
    let mut last = vec![0u64; workload.entities];
    let mut latency = latency_histogram();
    let mut remaining = workload.decisions;
    let mut batch = 0;
    let started = Instant::now();
    while remaining > 0 {
        let size = remaining.min(workload.entities);
        remaining -= size;
        let began = Instant::now();
        let messages = subjects
            .iter()
            .zip(&last)
            .take(size)
            .map(|((subject, check), last)| {
                let mut headers = HeaderMap::new();
                headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, last.to_string().as_str());
                headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, check.as_str());
                (subject.clone(), headers, payload.clone())
            });
        let acked = match &mut replies {
            Some(replies) => {
                let reply_prefix = format!("{FAST_REPLIES}.{round}.b{batch}");
                publish_fast(&client, replies, &reply_prefix, size, messages).await?
            }
            None => {
                let batch_id = format!("{round}-{batch}");
                publish_atomic(jetstream, &batch_id, size, messages).await?
            }
        };
        // Gaps fail either batch, so its messages took consecutive sequences, in order.
        let first = acked + 1 - size as u64;
        for (position, slot) in last.iter_mut().take(size).enumerate() {
            *slot = first + position as u64;
        }
        latency.record_n(began.elapsed().as_micros().max(1) as u64, size as u64)?;
        batch += 1;
    }
    Ok((started.elapsed(), latency))
}

/// Publishes `size` messages as one atomic batch; returns the sequence its acknowledgement
/// gives (its last message's).
async fn publish_atomic(
    jetstream: &jetstream::Context,
    batch_id: &str,
    size: usize,
    messages: impl Iterator<Item = (String, HeaderMap, Bytes)>,
) -> anyhow::Result<u64> {
    let client = jetstream.client();
    for (position, (subject, mut headers, payload)) in messages.enumerate() {
        headers.insert(BATCH_ID, batch_id);
        headers.insert(BATCH_SEQUENCE, (position + 1).to_string().as_str());
        if position + 1 < size {
            client
                .publish_with_headers(subject, headers, payload)
                .await?;
            continue;
        }
        headers.insert(BATCH_COMMIT, "1");
        let ack = jetstream
            .publish_with_headers(subject, headers, payload)
            .await?
            .await
            .context("an atomic batch was refused")?;
        anyhow::ensure!(
            ack.batch_size == Some(size as u64),
            "an atomic batch of {size} was acknowledged as {:?}",
            ack.batch_size
        );
        return Ok(ack.sequence);
    }
    anyhow::bail!("an atomic batch of {size} had fewer messages")
}

/// Publishes `size` messages as one fast batch, each naming its batch and position in its
/// reply subject (`reply_prefix`, ending in the batch id, under what `replies` listens to);
/// returns the sequence of the commit's publish acknowledgement, which (or a flow message
/// reporting an error) comes back on `replies`.
async fn publish_fast(
    client: &async_nats::Client,
    replies: &mut async_nats::Subscriber,
    reply_prefix: &str,
    size: usize,
    messages: impl Iterator<Item = (String, HeaderMap, Bytes)>,
) -> anyhow::Result<u64> {
    for (position, (subject, headers, payload)) in messages.enumerate() {
        let operation = if position + 1 == size {
            FAST_COMMIT
        } else if position == 0 {
            FAST_START
        } else {
            FAST_APPEND
        };
        // <prefix>.<batch id>.<ack every>.<gap mode>.<batch sequence>.<operation>.$FI
        let reply = format!(
            "{reply_prefix}.{size}.fail.{}.{operation}.$FI",
            position + 1
        );
        client
            .publish_with_reply_and_headers(subject, reply, headers, payload)
            .await?;
    }
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .context("no answer to a fast batch's commit")?
            .context("the fast-batch replies ended")?;
        let answer: serde_json::Value = serde_json::from_slice(&answer.payload)?;
        anyhow::ensure!(
            answer.get("error").is_none(),
            "a fast batch was refused: {answer}"
        );
        // Flow-control acknowledgements name a type; the publish acknowledgement names the
        // stream.
        if answer.get("stream").is_some() && answer.get("type").is_none() {
            return answer
                .get("seq")
                .and_then(serde_json::Value::as_u64)
                .with_context(|| {
                    format!("a publish acknowledgement without a sequence: {answer}")
                });
        }
    }
}

/// `SongEnded`, `SongStarted` of a typical song change of station `id`, encoded.
fn song_change(id: &StationId) -> (EncodedEvent, EncodedEvent) {
    let song = |n: u64| Song {
        artist: format!("Artist {n}"),
        title: format!("Song Title {n}"),
    };
    let at = Timestamp::from_millis(1_790_000_000_000);
    let ended = encode_station(
        id,
        &StationEvent::SongEnded {
            play_seq: 41,
            song: song(7),
            started_at: at,
            ended_at: at.saturating_add(Duration::from_secs(200)),
            enrichment: None,
        },
    );
    let started = encode_station(
        id,
        &StationEvent::SongStarted {
            play_seq: 42,
            song: song(8),
            started_at: at.saturating_add(Duration::from_secs(200)),
        },
    );
    (ended, started)
}

/// One entity appending its decisions one after the other.
struct Appender {
    jetstream: jetstream::Context,
    journal: Journal,
    variant: Variant,
    id: StationId,
    /// `SongEnded`, `SongStarted` of a typical song change.
    ended: EncodedEvent,
    started: EncodedEvent,
}

impl Appender {
    fn new(
        jetstream: jetstream::Context,
        journal: Journal,
        variant: Variant,
        id: StationId,
    ) -> Self {
        let (ended, started) = song_change(&id);
        Self {
            jetstream,
            journal,
            variant,
            id,
            ended,
            started,
        }
    }

    async fn append_all(&self, decisions: usize) -> anyhow::Result<Histogram<u64>> {
        let subject = event_subject(EventFamily::Station, self.id.as_str(), self.started.name);
        let journal_subject = entity_journal(EventFamily::Station, self.id.as_str());
        let payload = Bytes::from(self.started.payload.clone());
        let mut latency = latency_histogram();
        let mut last = 0;
        for decision in 0..decisions {
            let began = Instant::now();
            last = match self.variant {
                Variant::Bare => {
                    self.jetstream
                        .publish(subject.clone(), payload.clone())
                        .await?
                        .await?
                        .sequence
                }
                Variant::BareChained => {
                    let mut headers = HeaderMap::new();
                    headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, last.to_string().as_str());
                    headers.insert(
                        EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                        journal_subject.as_str(),
                    );
                    self.jetstream
                        .publish_with_headers(subject.clone(), headers, payload.clone())
                        .await?
                        .await?
                        .sequence
                }
                Variant::AtomicBatch | Variant::FastBatch => {
                    anyhow::bail!("batches are appended by a round of their own, not an entity")
                }
                Variant::AppendOne | Variant::AppendTwo => {
                    let events = self.decision(decision as u64 + 1);
                    self.journal
                        .append(EventFamily::Station, self.id.as_str(), last, &events)
                        .await?
                }
            };
            latency.record(began.elapsed().as_micros().max(1) as u64)?;
        }
        Ok(latency)
    }

    /// The events of one decision, as the shell hands them to the journal.
    fn decision(&self, inbox_seq: u64) -> Vec<OutgoingEvent> {
        let events: Vec<&EncodedEvent> = match self.variant {
            Variant::AppendTwo => vec![&self.ended, &self.started],
            _ => vec![&self.started],
        };
        let count = events.len() as u32;
        events
            .into_iter()
            .enumerate()
            .map(|(index, event)| OutgoingEvent {
                inbox_seq,
                index: index as u32,
                count,
                event: event.clone(),
                span: tracing::Span::none(),
            })
            .collect()
    }
}

async fn journal_messages(jetstream: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(jetstream
        .get_stream(playhead_proto::subjects::EVENTS_STREAM)
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// The figures the summary reports: decisions/s of each append variant ÷ the bare publish's.
pub struct Figures {
    pub one_event_ratio: f64,
    pub two_event_ratio: f64,
}

impl JournalCost {
    /// Prints the table; `ingest_events_per_decision` is the ingest phase's, when it ran.
    pub fn report(&self, workload: &Workload, ingest_events_per_decision: Option<f64>) -> Figures {
        println!();
        println!(
            "journal: {} decisions per variant from {} entities at once (one decision at a time \
             each), median of {} rounds [range]; journal stream {} messages at the end",
            workload.decisions, workload.entities, workload.rounds, self.stream_messages
        );
        let median = |measured: &Measured| {
            let mut rounds = measured.rounds.clone();
            rounds.sort();
            (
                rounds[rounds.len() / 2],
                rounds[0],
                rounds[rounds.len() - 1],
            )
        };
        let rate = |elapsed: Duration| workload.decisions as f64 / elapsed.as_secs_f64();
        let bare = rate(median(&self.measured[0]).0);
        let mut ratios = vec![0.0; self.measured.len()];
        for (slot, measured) in self.measured.iter().enumerate() {
            let (middle, fastest, slowest) = median(measured);
            let per_decision =
                |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / workload.decisions as f64;
            ratios[slot] = rate(middle) / bare;
            println!(
                "  {:<40} {:>6.1} µs/decision [{:.1}–{:.1}]  {:>6.0} decisions/s  ÷ bare {:.2}  round trip p50 {:.2} ms, p99 {:.2} ms",
                measured.variant.label(),
                per_decision(middle),
                per_decision(fastest),
                per_decision(slowest),
                rate(middle),
                ratios[slot],
                measured.latency.value_at_quantile(0.5) as f64 / 1_000.0,
                measured.latency.value_at_quantile(0.99) as f64 / 1_000.0,
            );
            let per_decision_cpu = |seconds: Option<f64>| match seconds {
                Some(seconds) => format!(
                    "{:.1}",
                    seconds * 1e6 / (workload.decisions * workload.rounds) as f64
                ),
                None => "?".to_owned(),
            };
            println!(
                "  {:<40} CPU µs/decision: client {}, nats-server {}",
                "",
                per_decision_cpu(measured.client_cpu),
                per_decision_cpu(measured.broker_cpu)
            );
            if measured.variant.events() > 1 {
                println!(
                    "  {:<40} {:>6.1} µs/event, {:.0} events/s",
                    "",
                    per_decision(middle) / measured.variant.events() as f64,
                    rate(middle) * measured.variant.events() as f64
                );
            }
        }
        match ingest_events_per_decision {
            Some(events) => println!(
                "  the ingest phase's decisions carried {events:.2} events each (events published ÷ applied observations)"
            ),
            None => {
                println!("  (the ingest phase did not run: its events per decision are unknown)")
            }
        }
        Figures {
            one_event_ratio: ratios[2],
            two_event_ratio: ratios[3],
        }
    }
}
