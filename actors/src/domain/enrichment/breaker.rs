//! The circuit breaker of one provider: after `failures` consecutive failed requests it opens
//! and refuses every request for `open_for`; then it is half-open and lets exactly one trial
//! request through at a time; the trial's success closes it, its failure opens it again.
//!
//! Every request holds a [`Permit`] and gives it back with its outcome ([`Breaker::record`])
//! or without one ([`Breaker::abandon`]: cancelled, or an answer that says nothing of the
//! provider's health), so a trial that never finishes cannot keep the breaker half-open and
//! shut for good.

use std::time::{Duration, Instant};

/// What the breaker lets through, as the `enrichment_breaker_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// Leave to send one request; hand it back through [`Breaker::record`] or [`Breaker::abandon`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit is given back with the request's outcome"]
pub struct Permit {
    trial: bool,
}

impl Permit {
    /// Whether this is the half-open breaker's one trial request.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_out: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    state: State,
}

impl Breaker {
    /// `failures` of at least 1 (config validates it; 0 is taken as 1).
    pub fn new(failures: u32, open_for: Duration) -> Self {
        debug_assert!(failures >= 1, "validated in config");
        Self {
            failures_to_open: failures.max(1),
            open_for,
            state: State::Closed {
                consecutive_failures: 0,
            },
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A permit to send a request now, or how long until the breaker may let one through:
    /// the rest of the open time, or (while the trial is out) a whole open time, which is how
    /// long it stays shut if the trial fails.
    pub fn permit(&mut self, now: Instant) -> Result<Permit, Duration> {
        match self.state {
            State::Closed { .. } => Ok(Permit { trial: false }),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { trial_out: false } => {
                self.state = State::HalfOpen { trial_out: true };
                Ok(Permit { trial: true })
            }
            State::HalfOpen { trial_out: true } => Err(self.open_for),
        }
    }

    /// The outcome of a permitted request. Outcomes of requests let through before the breaker
    /// opened, arriving while it is open or half-open, are ignored: only the trial decides.
    pub fn record(&mut self, permit: Permit, now: Instant, success: bool) {
        match (&mut self.state, permit.trial) {
            (State::Closed { .. }, _) if success => {
                self.state = State::Closed {
                    consecutive_failures: 0,
                };
            }
            (
                State::Closed {
                    consecutive_failures,
                },
                _,
            ) => {
                *consecutive_failures += 1;
                if *consecutive_failures >= self.failures_to_open {
                    self.open(now);
                }
            }
            (State::HalfOpen { trial_out: true }, true) if success => {
                self.state = State::Closed {
                    consecutive_failures: 0,
                };
            }
            (State::HalfOpen { trial_out: true }, true) => self.open(now),
            (State::Open { .. } | State::HalfOpen { .. }, _) => {}
        }
    }

    /// A permitted request that says nothing of the provider's health (cancelled, rate-limited,
    /// refused as malformed): a trial's turn goes to the next request.
    pub fn abandon(&mut self, permit: Permit) {
        if permit.trial && self.state == (State::HalfOpen { trial_out: true }) {
            self.state = State::HalfOpen { trial_out: false };
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now.checked_add(self.open_for).unwrap_or(now),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// A breaker opening after 3 failures, for 30 s, that saw `failures` failed requests
    /// ending at `t0`.
    fn given_failures(t0: Instant, failures: u32) -> Breaker {
        let mut breaker = Breaker::new(3, OPEN_FOR);
        for _ in 0..failures {
            let permit = breaker.permit(t0).expect("closed");
            breaker.record(permit, t0, false);
        }
        breaker
    }

    #[test]
    fn given_a_new_breaker_then_it_is_closed_and_lets_requests_through() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(3, OPEN_FOR);

        assert_eq!(breaker.state(t0), BreakerState::Closed);
        assert_eq!(breaker.permit(t0), Ok(Permit { trial: false }));
    }

    #[test]
    fn given_two_failures_when_the_third_fails_then_it_opens() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 2);
        assert_eq!(breaker.state(t0), BreakerState::Closed);

        let permit = breaker.permit(t0).expect("closed");
        breaker.record(permit, t0, false);

        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[test]
    fn given_two_failures_when_a_request_succeeds_then_counting_starts_again() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 2);

        let permit = breaker.permit(t0).expect("closed");
        breaker.record(permit, t0, true);
        for _ in 0..2 {
            let permit = breaker.permit(t0).expect("closed");
            breaker.record(permit, t0, false);
        }

        assert_eq!(breaker.state(t0), BreakerState::Closed);
    }

    #[test]
    fn given_an_open_breaker_when_a_request_asks_then_it_is_refused_with_the_time_left() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 3);

        assert_eq!(breaker.permit(t0 + secs(10)), Err(secs(20)));
        assert_eq!(breaker.permit(t0 + secs(29)), Err(secs(1)));
    }

    #[test]
    fn given_the_open_time_over_then_it_is_half_open_and_lets_exactly_one_trial_through() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 3);
        let later = t0 + OPEN_FOR;
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);

        let trial = breaker.permit(later);

        assert_eq!(trial, Ok(Permit { trial: true }));
        assert_eq!(breaker.permit(later), Err(OPEN_FOR), "one trial at a time");
        assert_eq!(breaker.permit(later + secs(5)), Err(OPEN_FOR));
        assert_eq!(breaker.state(later + secs(5)), BreakerState::HalfOpen);
    }

    #[test]
    fn given_a_trial_out_when_it_succeeds_then_the_breaker_closes() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 3);
        let later = t0 + OPEN_FOR;
        let trial = breaker.permit(later).expect("half-open");

        breaker.record(trial, later, true);

        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert_eq!(breaker.permit(later), Ok(Permit { trial: false }));
    }

    #[test]
    fn given_a_trial_out_when_it_fails_then_the_breaker_opens_again_for_the_whole_time() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 3);
        let later = t0 + OPEN_FOR + secs(2);
        let trial = breaker.permit(later).expect("half-open");

        breaker.record(trial, later + secs(1), false);

        assert_eq!(breaker.state(later + secs(1)), BreakerState::Open);
        assert_eq!(breaker.permit(later + secs(1)), Err(OPEN_FOR));
        assert_eq!(
            breaker.state(later + secs(1) + OPEN_FOR),
            BreakerState::HalfOpen
        );
    }

    #[test]
    fn given_a_trial_out_when_it_is_abandoned_then_the_next_request_is_the_trial() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 3);
        let later = t0 + OPEN_FOR;
        let trial = breaker.permit(later).expect("half-open");

        breaker.abandon(trial);

        assert_eq!(breaker.permit(later), Ok(Permit { trial: true }));
    }

    #[test]
    fn given_a_half_open_breaker_when_a_request_let_through_before_it_opened_ends_then_only_the_trial_decides()
     {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 2);
        let straggler = breaker.permit(t0).expect("closed");
        let permit = breaker.permit(t0).expect("closed");
        breaker.record(permit, t0, false);
        let later = t0 + OPEN_FOR;
        let trial = breaker.permit(later).expect("half-open");

        breaker.record(straggler, later, true);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);

        breaker.record(trial, later, false);
        assert_eq!(breaker.state(later), BreakerState::Open);
    }

    #[test]
    fn given_an_open_breaker_when_a_straggler_succeeds_then_it_stays_open() {
        let t0 = Instant::now();
        let mut breaker = given_failures(t0, 2);
        let straggler = breaker.permit(t0).expect("closed");
        let permit = breaker.permit(t0).expect("closed");
        breaker.record(permit, t0, false);

        breaker.record(straggler, t0 + secs(1), true);

        assert_eq!(breaker.state(t0 + secs(1)), BreakerState::Open);
    }

    #[test]
    fn the_gauge_values_are_pinned() {
        assert_eq!(BreakerState::Closed.as_gauge(), 0);
        assert_eq!(BreakerState::HalfOpen.as_gauge(), 1);
        assert_eq!(BreakerState::Open.as_gauge(), 2);
    }
}
