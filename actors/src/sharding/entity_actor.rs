//! The ractor actor hosting one entity: it loads on start and applies command slices.

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{Entity, EntityError, Envelope, Outcome};

pub enum EntityMessage<E: Entity> {
    Apply(
        Vec<Envelope<E::Command>>,
        RpcReplyPort<Result<Vec<Outcome>, EntityError>>,
    ),
}

pub struct EntityActor<E>(PhantomData<fn() -> E>);

impl<E> Default for EntityActor<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct EntityActorState<E: Entity> {
    entity: E,
    context: Arc<E::Context>,
}

impl<E: Entity> Actor for EntityActor<E> {
    type Msg = EntityMessage<E>;
    type State = EntityActorState<E>;
    type Arguments = (E::Id, Arc<E::Context>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (id, context): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let entity = E::load(id, &context)?;
        Ok(EntityActorState { entity, context })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let EntityMessage::Apply(batch, reply) = message;
        let result = state.entity.apply(&state.context, batch).await;
        // The shard may have given up waiting (shutdown); nothing else to tell.
        let _ = reply.send(result);
        Ok(())
    }
}
