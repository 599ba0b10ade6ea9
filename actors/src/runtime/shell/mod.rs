//! The one loop every entity kind runs, for one entity and one slice of its commands:
//!
//! 1. skip what was applied (inbox sequence at or below the entity's), answering it again;
//! 2. decide each command against the records (a decider panic quarantines that command);
//! 3. fold the events in and collect them;
//! 4. append them to the journal, expecting the entity's last journal event — exactly once,
//!    whatever the downtime;
//! 5. persist the records with the new sequences, then project.
//!
//! The answers travel back with the outcomes, each filed by inbox sequence once the slice's
//! events are in the journal; the intake sends them after its next flush. A command that comes
//! back is answered as it was the first time (see `answer_again`).
//!
//! **Catching up.** When the append is refused because the journal holds events the records
//! lack (a crash after an append and before the local commit; a store restored from an older
//! snapshot), the shell drops its records, reloads them from storage, folds the missing events
//! from the journal and decides the slice again: commands already in the journal are now
//! skipped, and answered as they were the first time from the records kept around each folded
//! decision. Before it stores the caught-up records, a catch-up files the answer of every
//! command that may still come back and that its decisions cover — those decisions' own
//! commands, and the commands between them that changed nothing, read back from the inbox and
//! decided again against the records of their time — so the answers survive another crash
//! that takes the records kept in memory. A node that did not stop cleanly also compares each
//! entity's journal position when the entity loads, so an entity is never served behind its
//! journal even before its next command.
//!
//! **A decision cut short.** Events are appended one by one, so a crash can leave the first
//! events of a decision in the journal without the rest. Catch-up does not fold such a trailing
//! part: it waits for its command, which comes back (it was never acknowledged). Deciding it
//! again from the same state gives the same events (deciders are pure; `now` is the stored
//! time), so only the missing ones are appended. Should the decision come out differently
//! (an input from elsewhere changed meanwhile), the part in the journal stands as the
//! decision: the journal is never contradicted.
//!
//! On any failure the records are dropped and reloaded from storage on the next slice, so
//! nothing decided but not journaled survives in memory.

mod catch_up;

use std::panic::AssertUnwindSafe;

use tracing::Instrument as _;

use crate::domain::decider::Decider;
use crate::domain::time::Timestamp;
use crate::journal::append::{JournalError, OutgoingEvent};
use crate::metrics::EventLabel;
use crate::storage::{MainWrites, Owner};

use super::{
    Decided, EntityError, EntityKind, Envelope, Outcome, Processed, QuarantineReason, Runtime,
    Sequences, SliceError,
};

/// Catch-ups allowed for one slice before the shell gives up (each one means the journal
/// moved on between reading it and appending to it).
const MAX_CATCH_UPS: usize = 3;

/// Answers of the latest decisions made here that an entity keeps for their redeliveries (a
/// batch retried after another entity failed).
const RECENT_ANSWERS: usize = 16;

/// Decisions folded from the journal that an entity keeps (with the records after each) for
/// the redeliveries of their commands.
const REPLAYED_KEPT: usize = 256;

pub struct Shell<K: EntityKind> {
    id: K::Id,
    /// `None` until loaded, and after a failure.
    loaded: Option<Loaded<K>>,
    /// The answers of the latest commands decided here, by inbox sequence, oldest first.
    recent: std::collections::VecDeque<(u64, Option<Vec<u8>>)>,
}

struct Loaded<K: EntityKind> {
    records: K::Records,
    sequences: Sequences,
    /// The first part of a decision a crash cut short, waiting for its command.
    pending: Option<Partial<K::Event>>,
    /// The records before and after each decision the last catch-up folded, by inbox
    /// sequence, oldest first: a command coming back is answered as it was the first time.
    replayed: Vec<Replayed<K>>,
}

/// One step of a catch-up: the records right after the decision of command `inbox_seq`
/// (`events`), or before the first such decision (no events).
struct Replayed<K: EntityKind> {
    inbox_seq: u64,
    events: Vec<K::Event>,
    records: K::Records,
}

#[derive(Debug)]
struct Partial<E> {
    inbox_seq: u64,
    /// Events the whole decision has.
    count: usize,
    /// The ones in the journal.
    events: Vec<E>,
}

/// Why deciding a slice did not complete.
enum Failure {
    /// The journal holds events the records lack: catch up, then decide again.
    Behind,
    Failed(SliceError),
}

impl From<SliceError> for Failure {
    fn from(error: SliceError) -> Self {
        Failure::Failed(error)
    }
}

impl From<EntityError> for Failure {
    fn from(error: EntityError) -> Self {
        Failure::Failed(error.into())
    }
}

impl<K: EntityKind> Shell<K> {
    pub fn new(id: K::Id) -> Self {
        Self {
            id,
            loaded: None,
            recent: std::collections::VecDeque::new(),
        }
    }

    pub fn id(&self) -> &K::Id {
        &self.id
    }

    /// Decides and commits a slice of commands, in order; one [`Processed`] per envelope.
    pub async fn apply(
        &mut self,
        runtime: &Runtime,
        context: &K::Context,
        mut batch: Vec<Envelope<K::Command>>,
    ) -> Result<Vec<Processed>, SliceError> {
        // The slice's commands come in inbox order, after every acknowledged one: none before
        // the first can come back.
        let redelivered_from = batch.first().map_or(u64::MAX, |envelope| envelope.seq);
        for _ in 0..MAX_CATCH_UPS {
            let mut loaded = match self.loaded.take() {
                Some(loaded) => loaded,
                None => {
                    self.load_records(runtime, context, redelivered_from)
                        .await?
                }
            };
            match self
                .decide_and_commit(runtime, context, &mut loaded, &mut batch)
                .await
            {
                Ok(processed) => {
                    self.loaded = Some(loaded);
                    for (envelope, result) in batch.iter().zip(&processed) {
                        if !matches!(result.outcome, Outcome::Duplicate) {
                            if self.recent.len() == RECENT_ANSWERS {
                                self.recent.pop_front();
                            }
                            // Grown one at a time: a live entity holds it.
                            self.recent.reserve_exact(1);
                            self.recent.push_back((envelope.seq, result.answer.clone()));
                        }
                    }
                    return Ok(processed);
                }
                Err(Failure::Behind) => {
                    // The records may hold decisions that never reached the journal.
                    let (records, sequences) = load::<K>(runtime, context, &self.id).await?;
                    let mut fresh = Loaded {
                        records,
                        sequences,
                        pending: None,
                        replayed: Vec::new(),
                    };
                    self.catch_up(runtime, context, &mut fresh, redelivered_from)
                        .await?;
                    self.loaded = Some(fresh);
                }
                Err(Failure::Failed(error)) => return Err(error),
            }
        }
        Err(EntityError::Contended {
            id: self.id.to_string(),
        }
        .into())
    }

    async fn load_records(
        &self,
        runtime: &Runtime,
        context: &K::Context,
        redelivered_from: u64,
    ) -> Result<Loaded<K>, SliceError> {
        let (records, sequences) = load::<K>(runtime, context, &self.id).await?;
        let mut loaded = Loaded {
            records,
            sequences,
            pending: None,
            replayed: Vec::new(),
        };
        if runtime.recovering {
            let last = runtime
                .journal
                .last_sequence(K::FAMILY, self.id.as_ref())
                .await
                .map_err(EntityError::from)?;
            if last != loaded.sequences.last_journal {
                self.catch_up(runtime, context, &mut loaded, redelivered_from)
                    .await?;
            }
        }
        Ok(loaded)
    }

    async fn decide_and_commit(
        &self,
        runtime: &Runtime,
        context: &K::Context,
        loaded: &mut Loaded<K>,
        batch: &mut [Envelope<K::Command>],
    ) -> Result<Vec<Processed>, Failure> {
        let decider = K::decider(context);
        let mut processed = Vec::with_capacity(batch.len());
        let mut applied: Vec<(u64, Vec<K::Event>)> = Vec::new();
        let mut outgoing: Vec<OutgoingEvent> = Vec::new();
        for envelope in batch.iter_mut() {
            let seq = envelope.seq;
            if runtime.faults.poisons(&envelope.command) {
                return Err(SliceError::at(seq)(EntityError::Injected(format!(
                    "poison on inbox sequence {seq}"
                )))
                .into());
            }
            if runtime.faults.fails(&envelope.command) {
                return Err(SliceError::at(seq)(EntityError::InjectedTransient(format!(
                    "failure on inbox sequence {seq}"
                )))
                .into());
            }
            K::prepare(
                context,
                &self.id,
                &mut loaded.records,
                &mut envelope.command,
            )
            .map_err(SliceError::at(seq))?;
            if seq <= loaded.sequences.last_inbox {
                processed.push(Processed {
                    outcome: Outcome::Duplicate,
                    answer: self
                        .answer_again(runtime, context, loaded, envelope)
                        .map_err(SliceError::at(seq))?,
                });
                continue;
            }
            if loaded
                .pending
                .as_ref()
                .is_some_and(|partial| partial.inbox_seq < seq)
            {
                // Its command is not coming back: the part in the journal is the decision.
                let partial = loaded.pending.take().expect("checked above");
                self.stand(context, loaded, partial, &mut applied)
                    .map_err(SliceError::at(seq))?;
            }
            let decision = crate::child_span!(&envelope.span, "decide").in_scope(|| {
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    runtime.faults.panic_if_marked(&envelope.command);
                    decider.decide(&envelope.command, K::state(&loaded.records), envelope.now)
                }))
            });
            let partial = loaded.pending.take_if(|partial| partial.inbox_seq == seq);
            let result = match decision {
                Ok(Ok(events)) if !events.is_empty() || partial.is_some() => {
                    let (events, fresh_from) = match partial {
                        Some(partial) => self.reconcile(events, partial),
                        None => (events, 0),
                    };
                    let count = events.len() as u32;
                    for (index, event) in events.iter().enumerate().skip(fresh_from) {
                        outgoing.push(OutgoingEvent {
                            inbox_seq: seq,
                            index: index as u32,
                            count,
                            event: K::encode(&self.id, event),
                            span: envelope.span.clone(),
                        });
                    }
                    K::apply(&mut loaded.records, seq, &events, false);
                    let answer = K::answer(
                        context,
                        &self.id,
                        &loaded.records,
                        &envelope.command,
                        Decided::Events(&events),
                        envelope.now,
                    );
                    applied.push((seq, events));
                    Processed {
                        outcome: Outcome::Applied {
                            events: count as usize,
                        },
                        answer,
                    }
                }
                Ok(Ok(_no_events)) => Processed {
                    outcome: Outcome::Unchanged,
                    answer: K::answer(
                        context,
                        &self.id,
                        &loaded.records,
                        &envelope.command,
                        Decided::Events(&[]),
                        envelope.now,
                    ),
                },
                Ok(Err(error)) => {
                    if let Some(partial) = partial {
                        self.stand(context, loaded, partial, &mut applied)
                            .map_err(SliceError::at(seq))?;
                    }
                    Processed {
                        outcome: if K::is_bad_input(&error) {
                            Outcome::Rejected {
                                reason: error.to_string(),
                            }
                        } else {
                            Outcome::Unchanged
                        },
                        answer: K::answer(
                            context,
                            &self.id,
                            &loaded.records,
                            &envelope.command,
                            Decided::Refused(&error),
                            envelope.now,
                        ),
                    }
                }
                Err(panic) => {
                    if let Some(partial) = partial {
                        self.stand(context, loaded, partial, &mut applied)
                            .map_err(SliceError::at(seq))?;
                    }
                    let detail = panic_message(panic.as_ref());
                    tracing::error!(kind = K::KIND, id = %self.id, seq, %detail, "the decider panicked; the command is quarantined");
                    Processed {
                        outcome: Outcome::Quarantined {
                            reason: QuarantineReason::Panic,
                            detail,
                        },
                        answer: None,
                    }
                }
            };
            // A command answered before whose records got ahead of the entity's sequences (a
            // crash between storing them) is decided again here: its answer stays the first.
            let result = match envelope.reply_to {
                Some(_) => match runtime
                    .storage
                    .answers
                    .get(K::FAMILY.token(), self.id.as_ref(), seq)
                    .map_err(|error| SliceError::at(seq)(error.into()))?
                {
                    Some(filed) => Processed {
                        answer: Some(filed),
                        ..result
                    },
                    None => result,
                },
                None => result,
            };
            loaded.sequences.last_inbox = seq;
            processed.push(result);
        }
        // Filed once the decisions are in the journal and before the records (sled writes
        // reach the disk in order): a command that comes back finds its first answer,
        // whatever changed since. Answers to commands that came back are filed too: one
        // rebuilt from a catch-up may be the first that leaves, and must stay the answer
        // after the next crash.
        let file_answers = || {
            let answered = batch
                .iter()
                .zip(&processed)
                .filter(|(envelope, _)| envelope.reply_to.is_some())
                .filter_map(|(envelope, result)| Some((envelope.seq, result.answer.clone()?)));
            runtime
                .storage
                .answers
                .file(K::FAMILY.token(), self.id.as_ref(), answered)
                .map_err(EntityError::from)
        };
        if applied.is_empty() {
            // Re-deciding these no-ops after a crash gives the same no-ops: nothing else to
            // write.
            file_answers()?;
            return Ok(processed);
        }
        let _gate = runtime.commit_gate.read().await;
        // One append per slice: its span is a child of the last deciding command's trace (each
        // event's message carries its own command's).
        let last_span = outgoing
            .last()
            .map_or_else(tracing::Span::none, |event| event.span.clone());
        if !outgoing.is_empty() {
            let expected = loaded.sequences.last_journal;
            runtime.faults.delay_append().await;
            loaded.sequences.last_journal = match runtime
                .journal
                .append(K::FAMILY, self.id.as_ref(), expected, &outgoing)
                .instrument(crate::child_span!(
                    &last_span,
                    "append",
                    events = outgoing.len()
                ))
                .await
            {
                Ok(last) => {
                    runtime.faults.appended();
                    last
                }
                Err(JournalError::Conflict { .. }) => return Err(Failure::Behind),
                Err(error) => {
                    let at_seq = match &error {
                        JournalError::Refused { inbox_seq, .. } => Some(*inbox_seq),
                        _ => None,
                    };
                    return Err(Failure::Failed(SliceError {
                        error: error.into(),
                        at_seq,
                    }));
                }
            };
            runtime
                .appended
                .fetch_add(outgoing.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for event in &outgoing {
                runtime
                    .metrics
                    .events_published
                    .get_or_create(&EventLabel {
                        event: event.event.name,
                    })
                    .inc();
            }
        }
        file_answers()?;
        crate::child_span!(&last_span, "persist")
            .in_scope(|| persist::<K>(runtime, context, &self.id, loaded, &applied))?;
        K::project(context, &self.id, &loaded.records).await?;
        Ok(processed)
    }
}

/// Writes what `applied` touched: the bucketed records, then the main db's, which the store
/// writes only once those are durable (right after the next group commit's bucket flush: the
/// commit does not wait for it).
fn persist<K: EntityKind>(
    runtime: &Runtime,
    context: &K::Context,
    id: &K::Id,
    loaded: &mut Loaded<K>,
    applied: &[(u64, Vec<K::Event>)],
) -> Result<(), EntityError> {
    let records = &mut loaded.records;
    let after_buckets = K::persist_bucketed(context, id, records, applied)?;
    let mut writes = MainWrites::default();
    K::persist(context, id, records, loaded.sequences, applied, &mut writes)?;
    if runtime.faults.crashes_after_persists() {
        // "sled wrote the main db out now", wherever the writes are made.
        let (faults, storage) = (runtime.faults.clone(), runtime.storage.clone());
        writes.after_written(move || {
            faults.persisted(|| {
                let _ = storage.flush_main_only();
            });
        });
    }
    runtime
        .storage
        .commit_main(owner::<K>(id), writes, after_buckets)?;
    Ok(())
}

/// The entity's records as stored, once the main-db writes of its earlier commits are written.
async fn load<K: EntityKind>(
    runtime: &Runtime,
    context: &K::Context,
    id: &K::Id,
) -> Result<(K::Records, Sequences), EntityError> {
    runtime.storage.main_settled(&owner::<K>(id)).await?;
    K::load(context, id)
}

/// The entity as the store names the owner of main-db writes.
fn owner<K: EntityKind>(id: &K::Id) -> Owner {
    (K::FAMILY.token(), id.to_string())
}

impl<K: EntityKind> Shell<K> {
    /// The answer to a command already applied, as it was the first time: kept from a
    /// decision made here, or rebuilt from the records around it when a catch-up folded it
    /// from the journal (its own decision's events and the records after them; a command that
    /// changed nothing is decided again against the records before it, deciders being pure).
    /// Older than both, it is answered from the state (a session's filed answer, a playout's
    /// last decision).
    fn answer_again(
        &self,
        runtime: &Runtime,
        context: &K::Context,
        loaded: &Loaded<K>,
        envelope: &Envelope<K::Command>,
    ) -> Result<Option<Vec<u8>>, EntityError> {
        let seq = envelope.seq;
        if let Some((_, answer)) = self.recent.iter().find(|(kept, _)| *kept == seq) {
            return Ok(answer.clone());
        }
        if envelope.reply_to.is_some()
            && let Some(filed) =
                runtime
                    .storage
                    .answers
                    .get(K::FAMILY.token(), self.id.as_ref(), seq)?
        {
            return Ok(Some(filed));
        }
        let answer = |records: &K::Records, decided| {
            K::answer(
                context,
                &self.id,
                records,
                &envelope.command,
                decided,
                envelope.now,
            )
        };
        if let Some(own) = loaded
            .replayed
            .iter()
            .find(|step| step.inbox_seq == seq && !step.events.is_empty())
        {
            if K::holds_later(&own.records, &envelope.command, seq) {
                return Ok(None);
            }
            return Ok(answer(&own.records, Decided::Events(&own.events)));
        }
        if let Some(before) = loaded
            .replayed
            .iter()
            .rev()
            .find(|step| step.inbox_seq < seq)
            && let Some(answer) = self.answer_if_unchanged(
                context,
                &mut before.records.clone(),
                &mut envelope.command.clone(),
                (seq, envelope.now),
            )?
        {
            return Ok(answer);
        }
        // Older than what a catch-up kept, or it changed something then yet no decision of it
        // is in the journal: the state is all there is to answer from — unless it holds a
        // later decision (then no answer: none was sent, and the state would contradict it).
        if K::holds_later(&loaded.records, &envelope.command, seq) {
            return Ok(None);
        }
        Ok(answer(&loaded.records, Decided::Duplicate))
    }

    /// The answer `command` (of inbox sequence `seq`) gets, decided again against `records`
    /// (what it reads loaded first), when that decision changes nothing: deciders being pure,
    /// the answer it got when it was decided against the same records. `None` when it would
    /// change something, or when the records it reads hold a later decision.
    fn answer_if_unchanged(
        &self,
        context: &K::Context,
        records: &mut K::Records,
        command: &mut K::Command,
        (seq, now): (u64, Timestamp),
    ) -> Result<Option<Option<Vec<u8>>>, EntityError> {
        K::prepare(context, &self.id, records, command)?;
        let (records, command) = (&*records, &*command);
        if K::holds_later(records, command, seq) {
            return Ok(None);
        }
        let decided = std::panic::catch_unwind(AssertUnwindSafe(|| {
            K::decider(context).decide(command, K::state(records), now)
        }));
        let answer = |decided| K::answer(context, &self.id, records, command, decided, now);
        Ok(match decided {
            Ok(Ok(events)) if events.is_empty() => Some(answer(Decided::Events(&[]))),
            Ok(Err(error)) => Some(answer(Decided::Refused(&error))),
            _ => None,
        })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
