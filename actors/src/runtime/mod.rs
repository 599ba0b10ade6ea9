//! The entity runtime: one generic shell for every entity kind, hosted in ractor actors that a
//! shard per inbox partition spawns on first use and passivates when idle.
//!
//! - [`EntityKind`]: what a kind plugs into the shell (its decider, storage, codec, answers).
//! - [`shell`]: the one loop every kind runs — skip what was applied, decide, append to the
//!   journal, evolve, persist — and catching up from the journal.
//! - [`entity_actor`]: the ractor actor hosting one entity's shell.
//! - [`shard`]: the per-partition supervisor: routing, lazy spawn, passivation.
//! - [`kinds`]: the station, user and content kinds.
//! - [`enrichment`]: the enrichment service and its provider client.
//! - [`rebuild`]: folding the journal into a store restored from a snapshot (or empty).

pub mod enrichment;
pub mod entity_actor;
pub mod imports;
pub mod kinds;
pub mod rebuild;
pub mod shard;
pub mod shell;

use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use playhead_proto::subjects::{EventFamily, ReplySubject};

use crate::domain::decider::Decider;
use crate::domain::time::Timestamp;
use crate::journal::append::{Journal, JournalError, JournalRecord};
use crate::journal::codec::{CodecError, EncodedEvent};
use crate::metrics::NodeMetrics;
use crate::storage::{MainWrites, StorageError};

/// One inbox message addressed to an entity, after screening.
#[derive(Debug, Clone)]
pub struct Envelope<C> {
    /// Inbox stream sequence: entities skip sequences they already applied.
    pub seq: u64,
    /// The broker's stored timestamp: the decider's `now`.
    pub now: Timestamp,
    pub command: C,
    /// Where the answer goes, when the publisher asked for one.
    pub reply_to: Option<ReplySubject>,
    /// The command's trace (the child of the publisher's `traceparent`, when it sent one):
    /// its decision, journal events, persisting and answer are recorded under it.
    /// `Span::none()` unless traces are exported.
    pub span: tracing::Span,
}

/// A child of `parent` named `$name`, or no span when `parent` is none (spans are not
/// exported): nothing is created for nobody.
#[macro_export]
macro_rules! child_span {
    ($parent:expr, $name:literal $(, $($field:tt)*)?) => {{
        let parent: &tracing::Span = $parent;
        if parent.is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(parent: parent, $name $(, $($field)*)?)
        }
    }};
}

/// Why a message was set aside without being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// The decider panicked on it.
    Panic,
    /// It failed again and again for a reason that will not go away.
    Poison,
}

impl QuarantineReason {
    pub fn label(self) -> &'static str {
        match self {
            QuarantineReason::Panic => "panic",
            QuarantineReason::Poison => "poison",
        }
    }
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
    /// Set aside: it goes to the dead-letter stream, the partition carries on.
    Quarantined {
        reason: QuarantineReason,
        detail: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Quarantined { .. } => "quarantined",
        }
    }
}

/// One envelope's outcome and, for a kind that answers, the encoded answer (sent only once
/// the decision is durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub outcome: Outcome,
    pub answer: Option<Vec<u8>>,
}

/// An infrastructure failure while applying: the batch is retried, never skipped — unless
/// the failure is permanent and keeps coming back, when the message is quarantined.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("journal event {sequence} cannot be read: {source}")]
    Codec {
        sequence: u64,
        #[source]
        source: CodecError,
    },
    #[error("publishing {what} failed: {detail}")]
    Publish { what: &'static str, detail: String },
    #[error("entity actor {id} is gone: {detail}")]
    ActorGone { id: String, detail: String },
    #[error("entity {id} panicked: {detail}")]
    Panicked { id: String, detail: String },
    #[error("the journal of {id} keeps moving while catching up; is another node processing it?")]
    Contended { id: String },
    #[error("injected fault: {0}")]
    Injected(String),
    #[error("injected transient fault: {0}")]
    InjectedTransient(String),
}

impl EntityError {
    /// Whether retrying as it is may succeed (the broker or an actor comes back); permanent
    /// failures count towards quarantining the message they happened on.
    pub fn is_transient(&self) -> bool {
        match self {
            EntityError::Storage(error) => error.is_transient(),
            EntityError::Journal(error) => error.is_transient(),
            EntityError::Publish { .. }
            | EntityError::ActorGone { .. }
            | EntityError::InjectedTransient(_) => true,
            EntityError::Codec { .. }
            | EntityError::Panicked { .. }
            | EntityError::Contended { .. }
            | EntityError::Injected(_) => false,
        }
    }
}

/// A failed slice, with the envelope it failed on when that is known.
#[derive(Debug)]
pub struct SliceError {
    pub error: EntityError,
    pub at_seq: Option<u64>,
}

impl SliceError {
    pub fn at(seq: u64) -> impl FnOnce(EntityError) -> SliceError {
        move |error| SliceError {
            error,
            at_seq: Some(seq),
        }
    }
}

impl From<EntityError> for SliceError {
    fn from(error: EntityError) -> Self {
        Self {
            error,
            at_seq: None,
        }
    }
}

/// Where an entity stands: the last inbox sequence it applied and the sequence of its last
/// journal event (what its next append expects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequences {
    pub last_inbox: u64,
    pub last_journal: u64,
}

/// What every entity of every kind shares.
pub struct Runtime {
    pub journal: Journal,
    pub metrics: Arc<NodeMetrics>,
    /// Held (shared) from an append until its local commit; a snapshot takes it exclusively
    /// for a moment, so every event up to the sequence it records is in sled when it starts.
    pub commit_gate: tokio::sync::RwLock<()>,
    /// The node did not stop cleanly last time: sled may be behind the journal, so every
    /// entity compares its journal position with the broker's when it loads.
    pub recovering: bool,
    /// Injected faults (tests only; none unless `PLAYHEAD_FAULTS` is set).
    pub faults: Arc<crate::faults::Faults>,
    /// Events appended since start (snapshots are also taken by event count).
    pub appended: std::sync::atomic::AtomicU64,
    /// The store: the answers of recent commands (for their redeliveries), and the order
    /// between an entity's bucketed records and its main-db writes (`Storage::commit_main`).
    pub storage: crate::storage::Storage,
    /// Whose signatures reply subjects need (`None`: not checked): a catch-up answers a stored
    /// command only under a reply subject its requester signed, as the intake does.
    pub requesters: Option<Arc<playhead_client::service::nats_auth::RequesterKeys>>,
}

/// How the shell should answer a command it did not apply this time.
pub enum Decided<'a, E, R> {
    /// Applied now, with these events.
    Events(&'a [E]),
    /// Refused by the decider.
    Refused(&'a R),
    /// Applied before: answer from the state as it is.
    Duplicate,
}

/// An entity kind: its ids, its decider, and how its state is stored, journaled and answered.
/// The loop itself is [`shell::Shell`], the same for every kind.
pub trait EntityKind: Sized + Send + Sync + 'static {
    type Id: Clone + Eq + Hash + Display + Debug + AsRef<str> + Send + Sync + 'static;
    type Decider: Decider<Command = Self::Command, Event = Self::Event> + Send + Sync + 'static;
    type Command: Clone + Debug + Send + Sync + 'static;
    type Event: Clone + PartialEq + Debug + Send + Sync + 'static;
    /// One entity's records in memory: the decider's state and what each stored record keeps
    /// beside it.
    type Records: Clone + Send + Sync + 'static;
    /// Shared by every entity of the kind (storage, policies, projections).
    type Context: Send + Sync + 'static;

    /// Metrics label and log field.
    const KIND: &'static str;
    const FAMILY: EventFamily;
    /// Whether commands of this kind get answers (then a catch-up files the answers of the
    /// decisions it folds, reading their commands back from the inbox).
    const ANSWERS: bool = false;
    /// The inbox stream its commands are stored in.
    const INBOX_STREAM: &'static str;

    /// The command of a stored inbox message, and whether its publisher awaits an answer.
    fn stored_command(
        _subject: &str,
        _headers: &async_nats::HeaderMap,
        _payload: &[u8],
    ) -> Option<(Self::Command, bool)> {
        None
    }

    /// The stored inbox subjects of this entity's commands (a filter), for kinds that answer.
    fn inbox_filter(_id: &Self::Id) -> Option<String> {
        None
    }

    fn decider(context: &Self::Context) -> &Self::Decider;

    /// The id in a journal subject.
    fn parse_id(token: &str) -> Result<Self::Id, playhead_proto::ids::IdError>;

    /// The decider's view of the records.
    fn state(records: &Self::Records) -> &<Self::Decider as Decider>::State;

    /// Loads the stored records (the initial state if never seen) and where they stand.
    fn load(
        context: &Self::Context,
        id: &Self::Id,
    ) -> Result<(Self::Records, Sequences), EntityError>;

    /// Makes the records hold what deciding `command` reads (parts loaded lazily) and fills
    /// the command's inputs from elsewhere (a heartbeat's catalog tags).
    fn prepare(
        _context: &Self::Context,
        _id: &Self::Id,
        _records: &mut Self::Records,
        _command: &mut Self::Command,
    ) -> Result<(), EntityError> {
        Ok(())
    }

    /// Makes the records hold what folding `event` touches.
    fn prepare_event(
        _context: &Self::Context,
        _id: &Self::Id,
        _records: &mut Self::Records,
        _event: &Self::Event,
    ) -> Result<(), EntityError> {
        Ok(())
    }

    /// Folds one decision's events (the decider's `evolve`, plus each record's bookkeeping).
    /// `replayed`: they come from the journal, and a record already past `inbox_seq` (written
    /// before a crash cut the commit short) skips them.
    fn apply(records: &mut Self::Records, inbox_seq: u64, events: &[Self::Event], replayed: bool);

    /// Whether a record `command` reads already holds a decision made after inbox sequence
    /// `seq`: a crash left it ahead of the entity's position (bucketed records are made
    /// durable before the main db's), so the answer `command` got then cannot be rebuilt from
    /// it — and since answers are sent only once filed durably, none was sent.
    fn holds_later(_records: &Self::Records, _command: &Self::Command, _seq: u64) -> bool {
        false
    }

    /// Whether a refusal is bad input (dead-lettered) rather than a normal answer.
    fn is_bad_input(_error: &<Self::Decider as Decider>::Error) -> bool {
        true
    }

    /// The encoded answer to `command`, or `None` for kinds that do not answer.
    fn answer(
        _context: &Self::Context,
        _id: &Self::Id,
        _records: &Self::Records,
        _command: &Self::Command,
        _decided: Decided<'_, Self::Event, <Self::Decider as Decider>::Error>,
        _now: Timestamp,
    ) -> Option<Vec<u8>> {
        None
    }

    fn encode(id: &Self::Id, event: &Self::Event) -> EncodedEvent;

    fn decode(id: &Self::Id, record: &JournalRecord) -> Result<Self::Event, CodecError>;

    /// The first half of a commit: writes what the decisions in `applied` touched in the
    /// keyspaces whose buckets are sled dbs of their own (see [`crate::storage::Storage`]).
    /// The main-db writes of [`Self::persist`], which hold the entity's position, are written
    /// only once these are durable. Returns whether it wrote anything (nothing to wait for
    /// otherwise).
    fn persist_bucketed(
        _context: &Self::Context,
        _id: &Self::Id,
        _records: &mut Self::Records,
        _applied: &[(u64, Vec<Self::Event>)],
    ) -> Result<bool, EntityError> {
        Ok(false)
    }

    /// The rest of what the decisions in `applied` touched (the main db), with `sequences`,
    /// into `writes`: records before the bookkeeping, so a crash in between replays correctly.
    /// The shell writes them, after the bucketed records are durable when there are any.
    /// `records` is mutable for bookkeeping `apply` left for the commit (e.g. views of slots
    /// it released); after a failure the shell drops the records anyway.
    fn persist(
        context: &Self::Context,
        id: &Self::Id,
        records: &mut Self::Records,
        sequences: Sequences,
        applied: &[(u64, Vec<Self::Event>)],
        writes: &mut MainWrites,
    ) -> Result<(), EntityError>;

    /// Projections outside sled (the now-playing bucket), after `persist`.
    fn project(
        _context: &Self::Context,
        _id: &Self::Id,
        _records: &Self::Records,
    ) -> impl Future<Output = Result<(), EntityError>> + Send {
        std::future::ready(Ok(()))
    }
}
