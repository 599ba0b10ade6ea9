//! Round trips of every entity kind. A realistic run of commands is decided by the kind's real
//! decider and folded as the shell folds it (decision by decision, persisting at the end of
//! each slice); the state reached must then come back unchanged from both places a node
//! rebuilds it from:
//!
//! - **sled**: written through the kind's stores as its `persist` writes them, then read back;
//! - **the journal**: every event encoded and decoded by the kind's codec glue (each decoded
//!   event equal to the one decided), and the decoded events folded from `Decider::initial()`.
//!
//! The state compared owes nothing to a store or to the codec, so one that drops or garbles a
//! field fails here. One module per kind: [`station`] (with the play history listed page by
//! page against the plays the events describe), [`user`] (sessions and playouts), [`content`].

mod content;
mod station;
mod user;

use bytes::Bytes;
use proptest::prelude::*;

use crate::domain::decider::Decider;
use crate::domain::time::Timestamp;
use crate::journal::append::JournalRecord;
use crate::runtime::EntityKind;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
/// November 2023: a realistic wall-clock time, far from both ends of the range.
const START: u64 = 1_700_000_000_000;

/// One inbox message: the broker's stored time (the decider's `now`), the command, and whether
/// the shell's slice ends after it (it persists then).
struct Message<C> {
    now: Timestamp,
    command: C,
    slice_ends: bool,
}

/// Builds the messages of a run from (time since the previous message, slice ends, step).
fn messages<S, C>(
    steps: &[(u64, bool, S)],
    command: impl Fn(&S, Timestamp) -> C,
) -> Vec<Message<C>> {
    let mut now = START;
    steps
        .iter()
        .map(|(gap, slice_ends, step)| {
            now += gap;
            let now = Timestamp::from_millis(now);
            Message {
                now,
                command: command(step, now),
                slice_ends: *slice_ends,
            }
        })
        .collect()
}

/// A decision that had events, as the shell applies and journals it.
struct Decision<E> {
    inbox_seq: u64,
    now: Timestamp,
    events: Vec<E>,
}

struct Run<D: Decider> {
    state: D::State,
    /// Every decision that had events, in inbox order.
    decisions: Vec<Decision<D::Event>>,
    /// The sequence of the last event in the entity's journal.
    last_journal_seq: u64,
}

impl<D: Decider> Run<D> {
    /// The inbox sequence of the last decision folded into the state.
    fn last_applied_seq(&self) -> u64 {
        self.decisions
            .last()
            .map_or(0, |decision| decision.inbox_seq)
    }
}

/// Decides `messages` in order (inbox sequences 1, 2, …) as the shell does: a refusal or a
/// decision without events changes nothing; events are journaled and folded into the state;
/// at the end of every slice that applied something, and of the run, `persist` gets the state,
/// the slice's `now`, the slice's decisions and the journal position.
fn run_as_the_shell<D: Decider>(
    decider: &D,
    messages: Vec<Message<D::Command>>,
    mut persist: impl FnMut(
        &D::State,
        Timestamp,
        &[Decision<D::Event>],
        u64,
    ) -> Result<(), TestCaseError>,
) -> Result<Run<D>, TestCaseError> {
    let mut state = D::initial();
    let mut decisions = Vec::new();
    let mut last_journal_seq = 0;
    let mut slice_start = 0;
    let count = messages.len();
    for (index, message) in messages.into_iter().enumerate() {
        if let Ok(events) = decider.decide(&message.command, &state, message.now)
            && !events.is_empty()
        {
            state = D::fold(state, &events);
            last_journal_seq += events.len() as u64;
            decisions.push(Decision {
                inbox_seq: index as u64 + 1,
                now: message.now,
                events,
            });
        }
        if (message.slice_ends || index + 1 == count) && decisions.len() > slice_start {
            persist(
                &state,
                message.now,
                &decisions[slice_start..],
                last_journal_seq,
            )?;
            slice_start = decisions.len();
        }
    }
    Ok(Run {
        state,
        decisions,
        last_journal_seq,
    })
}

/// The state rebuilt from the journal: every event encoded by the kind, stored as a journal
/// record, decoded back (and equal to the event decided) and folded from `Decider::initial()`.
fn rebuilt_from_journal<K: EntityKind>(
    id: &K::Id,
    decisions: &[Decision<K::Event>],
) -> Result<<K::Decider as Decider>::State, TestCaseError> {
    let mut state = <K::Decider as Decider>::initial();
    let mut sequence = 0;
    for decision in decisions {
        let count = decision.events.len() as u32;
        for (index, event) in decision.events.iter().enumerate() {
            sequence += 1;
            let encoded = K::encode(id, event);
            let record = JournalRecord {
                sequence,
                event_name: encoded.name.to_owned(),
                version: encoded.version,
                inbox_seq: decision.inbox_seq,
                index: index as u32,
                count,
                payload: Bytes::from(encoded.payload),
                stored_at: decision.now,
            };
            let decoded = K::decode(id, &record)
                .map_err(|error| TestCaseError::fail(format!("event {sequence}: {error}")))?;
            prop_assert_eq!(&decoded, event);
            state = <K::Decider as Decider>::evolve(state, &decoded);
        }
    }
    Ok(state)
}

fn temporary_db() -> Result<sled::Db, TestCaseError> {
    Ok(sled::Config::new().temporary(true).open()?)
}

fn every_event<E>(decisions: &[Decision<E>]) -> impl Iterator<Item = &E> {
    decisions.iter().flat_map(|decision| &decision.events)
}
