//! The ractor actor hosting one entity's [`Shell`]: it loads with its first slice and applies
//! command slices one at a time, each reported through the slice's [`SliceDone`]. A panic
//! outside the decider (which the shell catches itself) fails the actor; the slice it held
//! reports a failure as it is dropped, its shard drops the actor, and the next command starts
//! a fresh one from storage.

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::shard::SliceDone;
use super::shell::Shell;
use super::{EntityKind, Envelope, Runtime};

pub enum EntityMessage<K: EntityKind> {
    /// Apply these envelopes in order and report through the [`SliceDone`].
    Apply(Vec<Envelope<K::Command>>, SliceDone),
}

pub struct EntityActor<K>(PhantomData<fn() -> K>);

impl<K> Default for EntityActor<K> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct EntityActorState<K: EntityKind> {
    shell: Shell<K>,
    context: Arc<K::Context>,
    runtime: Arc<Runtime>,
}

pub struct EntityArguments<K: EntityKind> {
    pub id: K::Id,
    pub context: Arc<K::Context>,
    pub runtime: Arc<Runtime>,
}

impl<K: EntityKind> Actor for EntityActor<K> {
    type Msg = EntityMessage<K>;
    type State = EntityActorState<K>;
    type Arguments = EntityArguments<K>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Loading happens with the first slice, so a load failure is reported (and retried)
        // with the batch instead of failing the spawn.
        Ok(EntityActorState {
            shell: Shell::new(arguments.id),
            context: arguments.context,
            runtime: arguments.runtime,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let EntityMessage::Apply(batch, done) = message;
        state
            .runtime
            .faults
            .panic_actor_if_marked(batch.iter().map(|envelope| &envelope.command));
        // Boxed: the slice's future (~4 KB) lives only while a slice is applied, instead of
        // inside every live actor's task (50,000 users live at once in a heartbeat storm).
        let result = Box::pin(state.shell.apply(&state.runtime, &state.context, batch)).await;
        done.complete(result);
        Ok(())
    }
}
