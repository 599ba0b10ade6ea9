//! Rebuilding sled from the journal: one ordered pass over `PLAYHEAD_EVENTS` from a sequence
//! (just after the restored snapshot's, or the first event), folding every event into its
//! entity's records with the same kind code the shell uses.
//!
//! Records restored from a snapshot may already hold some of these events (the snapshot is
//! read while the node runs); each record knows the last inbox sequence folded into it and
//! skips decisions it already holds, so replaying is idempotent. A trailing decision cut short
//! by a crash is left out: its command was never acknowledged, so it comes back and the shell
//! completes it.
//!
//! Entities are folded in memory and written in chunks, so memory stays bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_proto::subjects::{EVENTS_STREAM, EventFamily, parse_event_subject};

use super::{EntityError, EntityKind, Sequences};
use crate::journal::append::{JournalError, JournalRecord, record};
use crate::storage::MainWrites;

/// Entities held in memory before a chunk is written.
const CHUNK_ENTITIES: usize = 20_000;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot read the journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot fold the journal: {0}")]
    Entity(#[from] EntityError),
    #[error("journal event {sequence} names an invalid entity: {detail}")]
    BadEntity { sequence: u64, detail: String },
    #[error("a replayer thread failed: {0}")]
    Replayer(#[from] tokio::task::JoinError),
}

/// What a rebuild replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub entities_written: u64,
    /// Decisions cut short at the end of an entity's journal, left for their commands.
    pub cut_short: u64,
    pub elapsed: Duration,
}

/// Folds one kind's events into records, a chunk of entities at a time.
pub struct Replayer<K: EntityKind> {
    context: Arc<K::Context>,
    entities: HashMap<K::Id, Replaying<K>>,
    written: u64,
    /// Events up to here are in the restored snapshot.
    skip_through: u64,
}

struct Replaying<K: EntityKind> {
    records: K::Records,
    sequences: Sequences,
    /// Events of the decision being read (they arrive one message at a time).
    decision: Vec<JournalRecord>,
    applied: Vec<(u64, Vec<K::Event>)>,
}

impl<K: EntityKind> Replayer<K> {
    pub fn new(context: Arc<K::Context>) -> Self {
        Self {
            context,
            entities: HashMap::new(),
            written: 0,
            skip_through: 0,
        }
    }

    /// Skips the events up to `sequence`: the restored snapshot of this kind holds them.
    pub fn skipping_through(mut self, sequence: u64) -> Self {
        self.skip_through = sequence;
        self
    }

    fn push(&mut self, id: K::Id, record: JournalRecord) -> Result<(), RebuildError> {
        if record.sequence <= self.skip_through {
            return Ok(());
        }
        if !self.entities.contains_key(&id) {
            if self.entities.len() >= CHUNK_ENTITIES {
                self.write_settled()?;
            }
            let (records, sequences) = K::load(&self.context, &id)?;
            self.entities.insert(
                id.clone(),
                Replaying {
                    records,
                    sequences,
                    decision: Vec::new(),
                    applied: Vec::new(),
                },
            );
        }
        let entity = self.entities.get_mut(&id).expect("inserted above");
        if entity
            .decision
            .first()
            .is_some_and(|first| first.inbox_seq != record.inbox_seq)
        {
            // Cut short and followed by other decisions: the part in the journal stands.
            let decision = std::mem::take(&mut entity.decision);
            fold::<K>(&self.context, &id, entity, decision)?;
        }
        let ends = record.ends_decision();
        entity.decision.push(record);
        if ends {
            let decision = std::mem::take(&mut entity.decision);
            fold::<K>(&self.context, &id, entity, decision)?;
        }
        Ok(())
    }

    /// Writes and forgets every entity not in the middle of a decision.
    fn write_settled(&mut self) -> Result<(), RebuildError> {
        let settled: Vec<K::Id> = self
            .entities
            .iter()
            .filter(|(_, entity)| entity.decision.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in settled {
            let mut entity = self.entities.remove(&id).expect("listed above");
            self.write(&id, &mut entity)?;
        }
        Ok(())
    }

    fn write(&mut self, id: &K::Id, entity: &mut Replaying<K>) -> Result<(), RebuildError> {
        if !entity.applied.is_empty() {
            // Written at once: the rebuilt store is flushed whole (buckets first) before it
            // serves.
            K::persist_bucketed(&self.context, id, &mut entity.records, &entity.applied)?;
            let mut writes = MainWrites::default();
            K::persist(
                &self.context,
                id,
                &mut entity.records,
                entity.sequences,
                &entity.applied,
                &mut writes,
            )?;
            writes.write().map_err(EntityError::from)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Writes everything; returns (entities written, decisions left cut short).
    fn finish(mut self) -> Result<(u64, u64), RebuildError> {
        let mut cut_short = 0;
        for (id, mut entity) in std::mem::take(&mut self.entities) {
            if !entity.decision.is_empty() {
                cut_short += 1;
                tracing::warn!(
                    kind = K::KIND,
                    %id,
                    inbox_seq = entity.decision[0].inbox_seq,
                    "a decision at the end of the journal was cut short; it completes when its command comes back"
                );
            }
            self.write(&id, &mut entity)?;
        }
        Ok((self.written, cut_short))
    }
}

fn fold<K: EntityKind>(
    context: &K::Context,
    id: &K::Id,
    entity: &mut Replaying<K>,
    decision: Vec<JournalRecord>,
) -> Result<(), RebuildError> {
    let Some(last) = decision.last() else {
        return Ok(());
    };
    let (inbox_seq, sequence) = (last.inbox_seq, last.sequence);
    let events = decision
        .iter()
        .map(|record| {
            K::decode(id, record).map_err(|source| EntityError::Codec {
                sequence: record.sequence,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for event in &events {
        K::prepare_event(context, id, &mut entity.records, event)?;
    }
    K::apply(&mut entity.records, inbox_seq, &events, true);
    entity.sequences.last_inbox = entity.sequences.last_inbox.max(inbox_seq);
    entity.sequences.last_journal = entity.sequences.last_journal.max(sequence);
    entity.applied.push((inbox_seq, events));
    Ok(())
}

/// Routes journal events to the replayer of their kind.
pub trait Replay {
    /// Takes one event of this kind's family.
    fn take(&mut self, id: &str, record: JournalRecord) -> Result<(), RebuildError>;
    /// Writes what is left; (entities written, decisions cut short).
    fn finish(self: Box<Self>) -> Result<(u64, u64), RebuildError>;
}

impl<K: EntityKind> Replay for Replayer<K> {
    fn take(&mut self, id: &str, record: JournalRecord) -> Result<(), RebuildError> {
        let sequence = record.sequence;
        let id = K::parse_id(id).map_err(|error| RebuildError::BadEntity {
            sequence,
            detail: error.to_string(),
        })?;
        self.push(id, record)
    }

    fn finish(self: Box<Self>) -> Result<(u64, u64), RebuildError> {
        Replayer::finish(*self)
    }
}

/// Events in flight to one replayer thread.
const REPLAYER_QUEUE: usize = 4_096;

/// Replays `PLAYHEAD_EVENTS` from `from_sequence` up to its last event at the start, handing
/// each event to a replayer of its family (families without one are skipped). Each replayer
/// runs on a thread of its own; a family with several spreads its entities over them by hash,
/// so one entity's events stay in order on one thread while the kinds (and the entities of a
/// kind) fold side by side.
pub async fn replay(
    jetstream: &jetstream::Context,
    from_sequence: u64,
    replayers: HashMap<EventFamily, Vec<Box<dyn Replay + Send>>>,
) -> Result<ReplayReport, RebuildError> {
    let started = Instant::now();
    let mut lanes: HashMap<EventFamily, Vec<tokio::sync::mpsc::Sender<(String, JournalRecord)>>> =
        HashMap::new();
    let mut threads = Vec::new();
    for (family, family_replayers) in replayers {
        for mut replayer in family_replayers {
            let (sender, mut events) =
                tokio::sync::mpsc::channel::<(String, JournalRecord)>(REPLAYER_QUEUE);
            lanes.entry(family).or_default().push(sender);
            threads.push(tokio::task::spawn_blocking(move || {
                while let Some((id, record)) = events.blocking_recv() {
                    replayer.take(&id, record)?;
                }
                replayer.finish()
            }));
        }
    }
    let read = read_journal(jetstream, from_sequence, &lanes).await;
    // Closing the lanes lets every replayer finish what it holds.
    drop(lanes);
    let mut report = ReplayReport::default();
    // A replayer's own error explains a read that stopped early better than the read can.
    let mut replayer_error = None;
    for thread in threads {
        match thread
            .await
            .map_err(RebuildError::from)
            .and_then(|finished| finished)
        {
            Ok((written, cut_short)) => {
                report.entities_written += written;
                report.cut_short += cut_short;
            }
            Err(error) => {
                replayer_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = replayer_error {
        return Err(error);
    }
    report.events = read?;
    report.elapsed = started.elapsed();
    tracing::info!(
        events = report.events,
        entities = report.entities_written,
        cut_short = report.cut_short,
        seconds = report.elapsed.as_secs_f64(),
        "journal replayed"
    );
    Ok(report)
}

/// Reads the journal from `from_sequence` to its last event now, sending each event down the
/// lane of its entity; returns how many events were read.
async fn read_journal(
    jetstream: &jetstream::Context,
    from_sequence: u64,
    lanes: &HashMap<EventFamily, Vec<tokio::sync::mpsc::Sender<(String, JournalRecord)>>>,
) -> Result<u64, RebuildError> {
    let unavailable = |detail: String| JournalError::Unavailable { detail };
    let mut stream = jetstream
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|error| unavailable(error.to_string()))?;
    let last = stream
        .info()
        .await
        .map_err(|error| unavailable(error.to_string()))?
        .state
        .last_sequence;
    if last < from_sequence {
        return Ok(0);
    }
    tracing::info!(
        from = from_sequence,
        to = last,
        events = last - from_sequence + 1,
        "replaying the journal"
    );
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from_sequence,
            },
            filter_subject: playhead_proto::subjects::EVENTS_CAPTURE.into(),
            ..Default::default()
        })
        .await
        .map_err(|error| unavailable(error.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| unavailable(error.to_string()))?;
    let mut read = 0;
    let mut last_progress = Instant::now();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|error| unavailable(error.to_string()))?;
        let info = message
            .info()
            .map_err(|error| unavailable(error.to_string()))?;
        let (sequence, published) = (info.stream_sequence, info.published);
        if let Some(subject) = parse_event_subject(&message.subject)
            && let Some(family_lanes) = lanes.get(&subject.family)
        {
            let headers = message.headers.clone().unwrap_or_default();
            let journal_record = record(
                &message.subject,
                sequence,
                &headers,
                message.payload.clone(),
                published,
            )?;
            let lane = playhead_proto::partition::fnv1a_32(subject.id.as_bytes()) as usize
                % family_lanes.len();
            if family_lanes[lane]
                .send((subject.id.to_owned(), journal_record))
                .await
                .is_err()
            {
                // The replayer stopped on an error; it is reported when its thread is joined.
                break;
            }
        }
        read += 1;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            tracing::info!(
                at = sequence,
                to = last,
                replayed = read,
                "replaying the journal"
            );
        }
        if sequence >= last {
            break;
        }
    }
    Ok(read)
}
