//! The shard of one ownership group: routes each envelope to its entity actor (spawned on
//! first use), runs the entities of a batch concurrently, and passivates entities that have
//! been idle (or are least recently used beyond the bound). The shard is the only sender to
//! its entities, and an entity with a slice in flight is never passivated or evicted, so no
//! command is ever dropped by a passivation.
//!
//! A batch costs the shard one message per entity and no round trip: each entity gets its
//! slice with a [`SliceDone`] and reports through it into one channel per batch, drained on
//! a task of the batch's own; a slice whose actor fails or stops before answering reports a
//! failure as it is dropped, so a batch always completes. The shard does not wait for a batch
//! to complete before it takes the next: the caller runs batches side by side only when they
//! share no entity (the intake does), and the completion comes back to the shard as a message
//! ([`ShardMessage::Finished`]), which stops the batch's failed entities before it answers, so
//! a retry finds them reloading from storage. Spawning does not wait for the entity to start,
//! and an entity loads with its first slice, on its own task.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, ActorRuntime, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::entity_actor::{EntityActor, EntityArguments, EntityMessage};
use super::{EntityError, EntityKind, Envelope, Processed, Runtime, SliceError};
use crate::metrics::{EntityKindLabel as KindLabel, NodeMetrics};

/// What one slice of a batch came to; `None` when it was dropped unanswered.
type SliceReport = (usize, Option<Result<Vec<Processed>, SliceError>>);

/// A slice's share of its batch's completion: the entity reports through it exactly once.
/// Dropped unanswered (the actor failed while applying, or stopped with the slice still in
/// its mailbox), it reports that instead, so the shard never waits for an answer that cannot
/// come.
pub struct SliceDone {
    slice: usize,
    reports: Option<mpsc::UnboundedSender<SliceReport>>,
}

impl SliceDone {
    pub fn complete(mut self, result: Result<Vec<Processed>, SliceError>) {
        if let Some(reports) = self.reports.take() {
            // The shard outlives its batch's slices; if it is gone, nobody is waiting.
            let _ = reports.send((self.slice, Some(result)));
        }
    }
}

impl Drop for SliceDone {
    fn drop(&mut self) {
        if let Some(reports) = self.reports.take() {
            let _ = reports.send((self.slice, None));
        }
    }
}

/// How long the shard's own stop waits for each entity to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle entities one passivation step stops; the rest wait behind the batches queued
/// meanwhile, so a crowd going idle at once does not hold the group.
const PASSIVATION_STEP: usize = 1_024;

pub enum ShardMessage<E: EntityKind> {
    /// Apply envelopes in order; one result per envelope, in the same order. Batches in
    /// flight at once must share no entity.
    Process(
        Vec<(E::Id, Envelope<E::Command>)>,
        RpcReplyPort<Result<Vec<Processed>, SliceError>>,
    ),
    /// Every slice of a batch has reported (sent by the batch's own task).
    Finished(Box<FinishedBatch<E>>),
    /// Stop entities idle longer than the configured time, `PASSIVATION_STEP` at a time.
    PassivateIdle,
    /// How many entity actors are live (for tests and introspection).
    LiveEntities(RpcReplyPort<usize>),
}

pub struct ShardArguments<E: EntityKind> {
    pub context: Arc<E::Context>,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<NodeMetrics>,
    pub passivate_after: Duration,
    pub passivation_check: Duration,
    pub max_live_entities: usize,
}

pub struct ShardActor<E>(PhantomData<fn() -> E>);

/// Why the shard stops an entity, as the metrics count it.
#[derive(Clone, Copy)]
enum Stop {
    /// Idle, over the bound, or the shard stopping.
    Passivated,
    /// Its slice of a batch failed.
    Failed,
}

/// One entity's share of a batch: positions in the batch and the envelopes at them.
type EntitySlice<C> = (Vec<usize>, Vec<Envelope<C>>);

/// A completed batch, back at the shard.
pub struct FinishedBatch<E: EntityKind> {
    /// Every entity the batch had a slice for.
    entities: Vec<E::Id>,
    /// Those whose slice failed: stopped before the answer, so a retry reloads them.
    failed: Vec<E::Id>,
    result: Result<Vec<Processed>, SliceError>,
    reply: RpcReplyPort<Result<Vec<Processed>, SliceError>>,
}

impl<E> Default for ShardActor<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

struct LiveEntity<E: EntityKind> {
    actor: ActorRef<EntityMessage<E>>,
    last_used: Instant,
    /// Slices sent and not yet finished: while any, the entity is not passivated or evicted
    /// (a stop would drop the slice from its mailbox, failing a batch for nothing).
    in_flight: u32,
}

impl<E: EntityKind> LiveEntity<E> {
    fn is_idle_since(&self, now: Instant, passivate_after: Duration) -> bool {
        self.in_flight == 0 && now.saturating_duration_since(self.last_used) >= passivate_after
    }
}

pub struct ShardState<E: EntityKind> {
    arguments: ShardArguments<E>,
    live: HashMap<E::Id, LiveEntity<E>>,
}

impl<E: EntityKind> ShardState<E> {
    fn kind_label(&self) -> KindLabel {
        KindLabel { kind: E::KIND }
    }

    /// The entity's actor, spawned if it is not live, counted with one more slice in flight.
    /// The spawn does not wait for the actor to start: its first slice waits in its mailbox
    /// meanwhile.
    fn entity(
        &mut self,
        myself: &ActorRef<ShardMessage<E>>,
        id: &E::Id,
    ) -> Result<ActorRef<EntityMessage<E>>, EntityError> {
        if let Some(live) = self.live.get_mut(id) {
            live.last_used = Instant::now();
            live.in_flight += 1;
            return Ok(live.actor.clone());
        }
        // Its start cannot fail (loading happens with the first slice), so the handle that
        // would report a failed start is not kept.
        let (actor, _started) = ActorRuntime::spawn_linked_instant(
            None,
            EntityActor::<E>::default(),
            EntityArguments {
                id: id.clone(),
                context: self.arguments.context.clone(),
                runtime: self.arguments.runtime.clone(),
            },
            myself.get_cell(),
        )
        .map_err(|error| EntityError::ActorGone {
            id: id.to_string(),
            detail: error.to_string(),
        })?;
        self.arguments
            .metrics
            .entities_live
            .get_or_create(&self.kind_label())
            .inc();
        self.live.insert(
            id.clone(),
            LiveEntity {
                actor: actor.clone(),
                last_used: Instant::now(),
                in_flight: 1,
            },
        );
        Ok(actor)
    }

    /// Stops the entities and forgets them, without waiting for them to end: nothing is in
    /// flight to them (the callers pick entities without slices in flight, or whose batch has
    /// finished), and a fresh actor of the same entity loads what they stored. Waiting for
    /// each held the shard ~3–5 µs an entity (50,000 idle at once: 0.17–0.26 s; 56 ms without).
    fn stop_entities(&mut self, ids: Vec<E::Id>, why: Stop) {
        let metrics = &self.arguments.metrics;
        let label = self.kind_label();
        for id in ids {
            let Some(live) = self.live.remove(&id) else {
                continue;
            };
            live.actor.stop(None);
            metrics.entities_live.get_or_create(&label).dec();
            match why {
                Stop::Passivated => metrics.entities_passivated.get_or_create(&label).inc(),
                Stop::Failed => metrics.entity_failures.get_or_create(&label).inc(),
            };
        }
    }

    /// Sends each entity its slice of `batch` and returns at once: the batch's own task
    /// collects the reports and sends them back as [`ShardMessage::Finished`].
    fn process(
        &mut self,
        myself: &ActorRef<ShardMessage<E>>,
        batch: Vec<(E::Id, Envelope<E::Command>)>,
        reply: RpcReplyPort<Result<Vec<Processed>, SliceError>>,
    ) {
        let total = batch.len();
        // Group by entity, remembering each envelope's position in the batch.
        let mut slices: HashMap<E::Id, EntitySlice<E::Command>> = HashMap::new();
        for (position, (id, envelope)) in batch.into_iter().enumerate() {
            let slice = slices.entry(id).or_default();
            slice.0.push(position);
            slice.1.push(envelope);
        }
        let (reports, reported) = mpsc::unbounded_channel();
        // Per slice: its entity, its positions in the batch and its first inbox sequence.
        let mut sent = Vec::with_capacity(slices.len());
        for (slice, (id, (positions, envelopes))) in slices.into_iter().enumerate() {
            let first_seq = envelopes.first().map(|envelope| envelope.seq);
            let done = SliceDone {
                slice,
                reports: Some(reports.clone()),
            };
            match self.entity(myself, &id) {
                // A send to an actor that just died hands the message back in the error; it
                // is dropped there, and its `SliceDone` reports the failure.
                Ok(actor) => drop(actor.send_message(EntityMessage::Apply(envelopes, done))),
                Err(error) => done.complete(Err(error.into())),
            }
            sent.push((id, positions, first_seq));
        }
        drop(reports);
        let myself = myself.clone();
        tokio::spawn(async move {
            let entities = sent.iter().map(|(id, _, _)| id.clone()).collect();
            let (result, failed) = collect::<E>(reported, sent, total).await;
            // If the shard is gone, the reply goes with the message: the caller sees the
            // shard fail, and starts a fresh one.
            let finished = FinishedBatch {
                entities,
                failed,
                result,
                reply,
            };
            let _ = myself.send_message(ShardMessage::Finished(Box::new(finished)));
        });
    }

    /// A batch has finished: its entities are free again, the failed ones are stopped (a
    /// retry reloads them from storage), and then the caller is answered.
    fn finish(&mut self, finished: FinishedBatch<E>) {
        let FinishedBatch {
            entities,
            failed,
            result,
            reply,
        } = finished;
        for id in &entities {
            if let Some(live) = self.live.get_mut(id) {
                live.in_flight = live.in_flight.saturating_sub(1);
            }
        }
        self.stop_entities(failed, Stop::Failed);
        if result.is_ok() {
            self.enforce_bound();
        }
        let _ = reply.send(result);
    }

    /// Stops up to [`PASSIVATION_STEP`] idle entities; if more are idle, queues the next step
    /// behind what is already in the shard's mailbox.
    fn passivate_idle(&mut self, myself: &ActorRef<ShardMessage<E>>) {
        let passivate_after = self.arguments.passivate_after;
        // One clock read per step: a step scans every live entity.
        let now = Instant::now();
        let mut idle = self
            .live
            .iter()
            .filter(|(_, live)| live.is_idle_since(now, passivate_after))
            .map(|(id, _)| id.clone());
        let step: Vec<E::Id> = idle.by_ref().take(PASSIVATION_STEP).collect();
        let more = idle.next().is_some();
        if !step.is_empty() {
            tracing::debug!(
                kind = E::KIND,
                count = step.len(),
                more,
                "passivating idle entities"
            );
        }
        self.stop_entities(step, Stop::Passivated);
        // The shard is stopping if this fails: its own stop takes the rest.
        if more {
            let _ = myself.send_message(ShardMessage::PassivateIdle);
        }
    }

    /// Keeps at most `max_live_entities` (beyond the entities with slices in flight),
    /// passivating the least recently used.
    fn enforce_bound(&mut self) {
        let excess = self
            .live
            .len()
            .saturating_sub(self.arguments.max_live_entities);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(Instant, E::Id)> = self
            .live
            .iter()
            .filter(|(_, live)| live.in_flight == 0)
            .map(|(id, live)| (live.last_used, id.clone()))
            .collect();
        by_age.sort_by_key(|(last_used, _)| *last_used);
        let oldest = by_age.into_iter().take(excess).map(|(_, id)| id).collect();
        self.stop_entities(oldest, Stop::Passivated);
    }
}

/// Drains a batch's reports (every slice reports exactly once, so this ends when the last one
/// has): the batch's result and the entities whose slice failed.
async fn collect<E: EntityKind>(
    mut reported: mpsc::UnboundedReceiver<SliceReport>,
    mut sent: Vec<(E::Id, Vec<usize>, Option<u64>)>,
    total: usize,
) -> (Result<Vec<Processed>, SliceError>, Vec<E::Id>) {
    let mut processed: Vec<Option<Processed>> = vec![None; total];
    let mut failed = Vec::new();
    let mut first_error: Option<SliceError> = None;
    while let Some((slice, report)) = reported.recv().await {
        let (id, positions, first_seq) = &mut sent[slice];
        let error = match report {
            Some(Ok(results)) => {
                debug_assert_eq!(results.len(), positions.len());
                for (position, result) in positions.drain(..).zip(results) {
                    processed[position] = Some(result);
                }
                continue;
            }
            Some(Err(error)) => error,
            // The actor failed (a panic outside the decider) or stopped while holding this
            // slice.
            None => SliceError {
                error: EntityError::Panicked {
                    id: id.to_string(),
                    detail: "the entity actor failed while applying".into(),
                },
                at_seq: *first_seq,
            },
        };
        tracing::warn!(kind = E::KIND, %id, error = %error.error, "entity failed; it reloads from storage");
        failed.push(id.clone());
        // Report a permanent failure before a transient one: it is what needs isolating.
        if first_error
            .as_ref()
            .is_none_or(|first| first.error.is_transient() && !error.error.is_transient())
        {
            first_error = Some(error);
        }
    }
    let result = match first_error {
        Some(error) => Err(error),
        None => Ok(processed
            .into_iter()
            .map(|result| result.expect("every position has a result"))
            .collect()),
    };
    (result, failed)
}

impl<E: EntityKind> Actor for ShardActor<E> {
    type Msg = ShardMessage<E>;
    type State = ShardState<E>;
    type Arguments = ShardArguments<E>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(arguments.passivation_check, || ShardMessage::PassivateIdle);
        Ok(ShardState {
            arguments,
            live: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The node flushes its store next: every entity has ended first.
        let actors: Vec<_> = state.live.values().map(|live| live.actor.clone()).collect();
        let all = state.live.keys().cloned().collect();
        state.stop_entities(all, Stop::Passivated);
        for actor in actors {
            if let Err(error) = actor.wait(Some(STOP_TIMEOUT)).await {
                tracing::warn!(kind = E::KIND, %error, "entity did not stop in time");
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMessage::Process(batch, reply) => state.process(&myself, batch, reply),
            ShardMessage::Finished(finished) => state.finish(*finished),
            ShardMessage::PassivateIdle => state.passivate_idle(&myself),
            ShardMessage::LiveEntities(reply) => {
                let _ = reply.send(state.live.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Passivation stops are expected; a panicking entity is dropped from the map so the
        // next command reloads it from storage. Either way the shard carries on.
        if let SupervisionEvent::ActorFailed(cell, reason) = event {
            let dead = state
                .live
                .iter()
                .find(|(_, live)| live.actor.get_id() == cell.get_id())
                .map(|(id, _)| id.clone());
            if let Some(id) = dead {
                tracing::error!(kind = E::KIND, %id, %reason, "entity actor failed");
                state.live.remove(&id);
                state
                    .arguments
                    .metrics
                    .entities_live
                    .get_or_create(&state.kind_label())
                    .dec();
            }
        }
        Ok(())
    }
}
