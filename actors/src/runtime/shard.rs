//! The shard of one inbox partition: routes each envelope to its entity actor (spawned on
//! first use), runs the entities of a batch concurrently, and passivates entities that have
//! been idle (or are least recently used beyond the bound). The shard is the only sender to
//! its entities and handles one message at a time, so no command is ever in flight to an
//! entity that is being passivated.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use super::entity_actor::{EntityActor, EntityArguments, EntityMessage};
use super::{EntityError, EntityKind, Envelope, Processed, Runtime, SliceError};
use crate::metrics::{EntityKindLabel as KindLabel, NodeMetrics};

/// How long passivation waits for an entity to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub enum ShardMessage<E: EntityKind> {
    /// Apply envelopes in order; one result per envelope, in the same order.
    Process(
        Vec<(E::Id, Envelope<E::Command>)>,
        RpcReplyPort<Result<Vec<Processed>, SliceError>>,
    ),
    /// Stop entities idle longer than the configured time.
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

/// One entity's share of a batch: positions in the batch and the envelopes at them.
type EntitySlice<C> = (Vec<usize>, Vec<Envelope<C>>);

impl<E> Default for ShardActor<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

struct LiveEntity<E: EntityKind> {
    actor: ActorRef<EntityMessage<E>>,
    last_used: Instant,
}

pub struct ShardState<E: EntityKind> {
    arguments: ShardArguments<E>,
    live: HashMap<E::Id, LiveEntity<E>>,
}

impl<E: EntityKind> ShardState<E> {
    fn kind_label(&self) -> KindLabel {
        KindLabel { kind: E::KIND }
    }

    async fn entity(
        &mut self,
        myself: &ActorRef<ShardMessage<E>>,
        id: &E::Id,
    ) -> Result<ActorRef<EntityMessage<E>>, EntityError> {
        if let Some(live) = self.live.get_mut(id) {
            live.last_used = Instant::now();
            return Ok(live.actor.clone());
        }
        let (actor, _) = Actor::spawn_linked(
            None,
            EntityActor::<E>::default(),
            EntityArguments {
                id: id.clone(),
                context: self.arguments.context.clone(),
                runtime: self.arguments.runtime.clone(),
            },
            myself.get_cell(),
        )
        .await
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
            },
        );
        Ok(actor)
    }

    async fn stop_entities(&mut self, ids: Vec<E::Id>) {
        for id in ids {
            let Some(live) = self.live.remove(&id) else {
                continue;
            };
            if let Err(error) = live.actor.stop_and_wait(None, Some(STOP_TIMEOUT)).await {
                tracing::warn!(kind = E::KIND, %id, %error, "entity did not stop cleanly");
            }
            self.arguments
                .metrics
                .entities_live
                .get_or_create(&self.kind_label())
                .dec();
            self.arguments
                .metrics
                .entities_passivated
                .get_or_create(&self.kind_label())
                .inc();
        }
    }

    async fn process(
        &mut self,
        myself: &ActorRef<ShardMessage<E>>,
        batch: Vec<(E::Id, Envelope<E::Command>)>,
    ) -> Result<Vec<Processed>, SliceError> {
        let total = batch.len();
        // Group by entity, remembering each envelope's position in the batch.
        let mut slices: HashMap<E::Id, EntitySlice<E::Command>> = HashMap::new();
        for (position, (id, envelope)) in batch.into_iter().enumerate() {
            let slice = slices.entry(id).or_default();
            slice.0.push(position);
            slice.1.push(envelope);
        }
        let mut calls = Vec::with_capacity(slices.len());
        for (id, (positions, envelopes)) in slices {
            let first_seq = envelopes.first().map(|envelope| envelope.seq);
            let actor = self.entity(myself, &id).await?;
            calls.push(async move {
                let result = actor
                    .call(|reply| EntityMessage::Apply(envelopes, reply), None)
                    .await;
                (id, positions, first_seq, result)
            });
        }
        let mut processed: Vec<Option<Processed>> = vec![None; total];
        let mut failed = Vec::new();
        let mut first_error: Option<SliceError> = None;
        for (id, positions, first_seq, result) in join_all(calls).await {
            let error = match result {
                Ok(CallResult::Success(Ok(results))) => {
                    debug_assert_eq!(results.len(), positions.len());
                    for (position, result) in positions.into_iter().zip(results) {
                        processed[position] = Some(result);
                    }
                    continue;
                }
                Ok(CallResult::Success(Err(error))) => error,
                // The actor dropped the reply without answering: it failed (a panic outside
                // the decider) while applying this slice.
                Ok(CallResult::SenderError) => SliceError {
                    error: EntityError::Panicked {
                        id: id.to_string(),
                        detail: "the entity actor failed while applying".into(),
                    },
                    at_seq: first_seq,
                },
                Ok(CallResult::Timeout) => EntityError::ActorGone {
                    id: id.to_string(),
                    detail: "timed out".into(),
                }
                .into(),
                Err(error) => EntityError::ActorGone {
                    id: id.to_string(),
                    detail: error.to_string(),
                }
                .into(),
            };
            tracing::warn!(kind = E::KIND, %id, error = %error.error, "entity failed; it reloads from storage");
            failed.push(id);
            // Report a permanent failure before a transient one: it is what needs isolating.
            if first_error
                .as_ref()
                .is_none_or(|first| first.error.is_transient() && !error.error.is_transient())
            {
                first_error = Some(error);
            }
        }
        // A failed entity restarts from its persisted state when the batch is retried.
        self.stop_entities(failed).await;
        if let Some(error) = first_error {
            return Err(error);
        }
        self.enforce_bound().await;
        Ok(processed
            .into_iter()
            .map(|result| result.expect("every position has a result"))
            .collect())
    }

    async fn passivate_idle(&mut self) {
        let passivate_after = self.arguments.passivate_after;
        let idle: Vec<E::Id> = self
            .live
            .iter()
            .filter(|(_, live)| live.last_used.elapsed() >= passivate_after)
            .map(|(id, _)| id.clone())
            .collect();
        if !idle.is_empty() {
            tracing::debug!(
                kind = E::KIND,
                count = idle.len(),
                "passivating idle entities"
            );
        }
        self.stop_entities(idle).await;
    }

    /// Keeps at most `max_live_entities`, passivating the least recently used.
    async fn enforce_bound(&mut self) {
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
            .map(|(id, live)| (live.last_used, id.clone()))
            .collect();
        by_age.sort_by_key(|(last_used, _)| *last_used);
        let oldest = by_age.into_iter().take(excess).map(|(_, id)| id).collect();
        self.stop_entities(oldest).await;
    }
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
        let all = state.live.keys().cloned().collect();
        state.stop_entities(all).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMessage::Process(batch, reply) => {
                let result = state.process(&myself, batch).await;
                let _ = reply.send(result);
            }
            ShardMessage::PassivateIdle => state.passivate_idle().await,
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
