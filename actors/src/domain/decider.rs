//! The one shape every actor kind's domain logic takes: `initial`, `decide`, `evolve`.
//!
//! `decide` is pure: the command, the state and `now` (the broker's stored timestamp of the
//! inbox message) are all it reads, so replaying the inbox gives the same decisions. `evolve`
//! is total and reads nothing but the state and the event (no policy, no clock): folding the
//! journal rebuilds the state whatever the configuration is today. Policies that shape
//! decisions (skip limits, slot timeouts) live in `self`, which `evolve` cannot see.
//!
//! [`Given`] is the given/when/then harness every decider's tests share.

use super::time::Timestamp;

pub trait Decider {
    type Command;
    type Event;
    type State;
    /// Why a command was refused (bad input, or a rule that forbids it): nothing is decided.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The state of an entity that was never seen.
    fn initial() -> Self::State;

    fn decide(
        &self,
        command: &Self::Command,
        state: &Self::State,
        now: Timestamp,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Folds `events` into `state`, in order.
    fn fold<'a>(
        state: Self::State,
        events: impl IntoIterator<Item = &'a Self::Event>,
    ) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(state, Self::evolve)
    }
}

/// `Given::new(decider, events).when(command, now).then(expected)`: the state is the fold of
/// the given events from [`Decider::initial`], exactly as the journal rebuilds it.
pub struct Given<'d, D: Decider> {
    decider: &'d D,
    state: D::State,
}

impl<'d, D: Decider> Given<'d, D> {
    pub fn new<'e>(decider: &'d D, events: impl IntoIterator<Item = &'e D::Event>) -> Self
    where
        D::Event: 'e,
    {
        Self {
            decider,
            state: D::fold(D::initial(), events),
        }
    }

    /// Starts from an explicit state (for states no event sequence reaches cheaply).
    pub fn state(decider: &'d D, state: D::State) -> Self {
        Self { decider, state }
    }

    /// The given state itself (the fold of the given events).
    pub fn into_state(self) -> D::State {
        self.state
    }

    /// Decides `command` at `now` (a [`Timestamp`], or epoch milliseconds).
    pub fn when(self, command: D::Command, now: impl Into<Timestamp>) -> When<D> {
        let decision = self.decider.decide(&command, &self.state, now.into());
        When {
            state: self.state,
            decision,
        }
    }
}

/// What a decider decided: its events, or why it refused.
pub type Decision<D> = Result<Vec<<D as Decider>::Event>, <D as Decider>::Error>;

/// The decision of [`Given::when`], to be checked.
pub struct When<D: Decider> {
    state: D::State,
    decision: Decision<D>,
}

impl<D: Decider> When<D>
where
    D::Event: std::fmt::Debug + PartialEq,
    D::Error: PartialEq,
{
    /// Asserts the decision is exactly `expected`; returns the state after folding it.
    #[track_caller]
    pub fn then(self, expected: Vec<D::Event>) -> D::State {
        match self.decision {
            Ok(events) => {
                assert_eq!(events, expected, "decided events");
                D::fold(self.state, &events)
            }
            Err(error) => panic!("expected events {expected:?}, the command was refused: {error}"),
        }
    }

    /// Asserts the command was refused with `expected`.
    #[track_caller]
    pub fn then_refused(self, expected: D::Error) {
        match self.decision {
            Ok(events) => panic!("expected refusal {expected}, decided {events:?}"),
            Err(error) => assert_eq!(error, expected, "refusal"),
        }
    }

    /// The raw decision, for tests that check more than equality.
    pub fn decision(self) -> (D::State, Decision<D>) {
        (self.state, self.decision)
    }
}
