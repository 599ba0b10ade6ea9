//! Sharding runtime: a shard actor per inbox partition spawns one entity actor per id on
//! first use and passivates idle ones; entity actors are thin shells around a decider.
//!
//! - [`Entity`]: what an entity kind provides (load, apply a slice of commands).
//! - [`entity_actor`]: the ractor actor hosting one entity.
//! - [`shard`]: the per-partition supervisor: routing, lazy spawn, passivation.

pub mod entity_actor;
pub mod shard;

use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use async_nats::HeaderMap;

use crate::domain::time::Timestamp;
use crate::storage::StorageError;

/// One inbox message addressed to an entity, after screening.
#[derive(Debug, Clone)]
pub struct Envelope<C> {
    /// Inbox stream sequence: entities skip sequences they already applied.
    pub seq: u64,
    /// The broker's stored timestamp: the decider's `now`.
    pub now: Timestamp,
    pub command: C,
    /// The inbound headers (reply subject, trace context).
    pub headers: Option<HeaderMap>,
}

/// What became of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Decided, with this many events.
    Applied { events: usize },
    /// Decided: nothing to change.
    Unchanged,
    /// Already applied before (redelivery).
    Duplicate,
    /// The decider refused it; it goes to the dead-letter stream with this reason.
    Rejected { reason: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected { .. } => "rejected",
        }
    }
}

/// An infrastructure failure while applying: the batch is retried, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("publishing {what} failed: {detail}")]
    Publish { what: &'static str, detail: String },
    #[error("entity actor {id} is gone: {detail}")]
    ActorGone { id: String, detail: String },
}

/// An entity kind: its id, its commands and the thin shell around its decider.
pub trait Entity: Sized + Send + Sync + 'static {
    type Id: Clone + Eq + Hash + Display + Send + Sync + 'static;
    type Command: Clone + Send + Sync + 'static;
    /// Shared by every entity of the kind (storage, broker handles, metrics).
    type Context: Send + Sync + 'static;

    /// Metrics label and log field.
    const KIND: &'static str;

    /// Loads the entity's state (the initial state if it was never seen).
    fn load(id: Self::Id, context: &Self::Context) -> Result<Self, EntityError>;

    /// Decides every envelope in order, publishes the events, persists state with the last
    /// applied sequence, and returns one outcome per envelope. On error nothing of `self`
    /// may have changed.
    fn apply(
        &mut self,
        context: &Arc<Self::Context>,
        batch: Vec<Envelope<Self::Command>>,
    ) -> impl Future<Output = Result<Vec<Outcome>, EntityError>> + Send;
}
