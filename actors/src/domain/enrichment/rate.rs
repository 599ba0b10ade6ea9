//! The rate limit of one provider: a token bucket holding one token (no bursts), refilled at
//! `rate` tokens per second, so the requests it lets through are at least `1 / rate` apart.
//!
//! Callers reserve the next free slot and then wait for it on their own (the limiter holds no
//! clock and sleeps nowhere), so concurrent callers are handed successive slots in the order
//! they asked. A provider's `Retry-After` pauses the bucket: no slot starts before it ends.

use std::time::{Duration, Instant};

/// The slowest rate the limiter keeps apart (one request per 1000 s), also what a rate that
/// is not a positive number stands for: config validation refuses both before they get here.
const SLOWEST_RATE_PER_SEC: f64 = 0.001;

/// Token bucket of capacity 1: the state is the earliest instant the next request may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// `1 / rate`, rounded up to the nanosecond so that slots are never closer than that.
    interval: Duration,
    /// The next free slot; `None` while the bucket has never been drawn from.
    next_free: Option<Instant>,
}

impl RateLimit {
    pub fn new(rate_per_sec: f64) -> Self {
        debug_assert!(
            rate_per_sec.is_finite() && rate_per_sec > 0.0,
            "rate {rate_per_sec} is validated in config"
        );
        let rate = if rate_per_sec.is_finite() {
            rate_per_sec.max(SLOWEST_RATE_PER_SEC)
        } else {
            SLOWEST_RATE_PER_SEC
        };
        // At most 1e12 ns (the slowest rate): the cast cannot saturate.
        let interval_nanos = (1e9 / rate).ceil().max(1.0) as u64;
        Self {
            interval: Duration::from_nanos(interval_nanos),
            next_free: None,
        }
    }

    /// The least time between two slots.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes the next free slot, at `now` or later, and returns how long the caller waits for
    /// it (zero when the bucket is full). The slot is the caller's whether or not it waits.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let slot = self.next_free.map_or(now, |next_free| next_free.max(now));
        // Past `Instant`'s range there is nothing left to keep apart: the slot stays the limit.
        self.next_free = Some(slot.checked_add(self.interval).unwrap_or(slot));
        slot.saturating_duration_since(now)
    }

    /// No slot before `until` (a `Retry-After`); slots already handed out stay as they were.
    pub fn pause_until(&mut self, until: Instant) {
        self.next_free = Some(
            self.next_free
                .map_or(until, |next_free| next_free.max(until)),
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn given_a_fresh_bucket_when_a_request_reserves_then_it_goes_at_once() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(1.0);

        assert_eq!(limit.reserve(t0), Duration::ZERO);
    }

    #[test]
    fn given_a_slot_just_taken_when_another_caller_reserves_then_it_waits_one_interval() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(2.0);
        limit.reserve(t0);

        assert_eq!(limit.reserve(t0 + ms(100)), ms(400));
    }

    #[test]
    fn given_concurrent_callers_when_they_reserve_at_once_then_they_get_successive_slots() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(1.0);

        let waits: Vec<Duration> = (0..4).map(|_| limit.reserve(t0)).collect();

        assert_eq!(waits, vec![ms(0), ms(1000), ms(2000), ms(3000)]);
    }

    #[test]
    fn given_a_long_idle_bucket_when_two_requests_come_at_once_then_the_second_still_waits() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(1.0);
        limit.reserve(t0);

        assert_eq!(limit.reserve(t0 + ms(60_000)), Duration::ZERO);
        assert_eq!(
            limit.reserve(t0 + ms(60_000)),
            ms(1000),
            "idle time does not bank a burst"
        );
    }

    #[test]
    fn given_a_pause_when_a_request_reserves_then_its_slot_is_the_end_of_the_pause() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(10.0);
        limit.reserve(t0);

        limit.pause_until(t0 + ms(5_000));

        assert_eq!(limit.reserve(t0 + ms(1_000)), ms(4_000));
        assert_eq!(
            limit.reserve(t0 + ms(1_000)),
            ms(4_100),
            "and the rate resumes"
        );
    }

    #[test]
    fn given_slots_reserved_beyond_a_pause_when_it_is_shorter_then_they_are_kept() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(1.0);
        for _ in 0..5 {
            limit.reserve(t0);
        }

        limit.pause_until(t0 + ms(2_000));

        assert_eq!(limit.reserve(t0), ms(5_000));
    }

    #[test]
    fn given_a_rate_of_three_then_the_interval_is_rounded_up_not_down() {
        assert_eq!(
            RateLimit::new(3.0).interval(),
            Duration::from_nanos(333_333_334)
        );
    }

    /// One step of a caller: after `gap_ms`, either a reservation or a pause of `pause_ms`.
    #[derive(Debug, Clone)]
    enum Step {
        Reserve { gap_ms: u64 },
        Pause { gap_ms: u64, pause_ms: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..3_000).prop_map(|gap_ms| Step::Reserve { gap_ms }),
            1 => (0u64..3_000, 0u64..10_000)
                .prop_map(|(gap_ms, pause_ms)| Step::Pause { gap_ms, pause_ms }),
        ]
    }

    proptest! {
        #[test]
        fn slots_are_never_closer_than_one_over_the_rate_nor_inside_a_pause(
            rate in 0.01f64..1000.0,
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let t0 = Instant::now();
            let mut limit = RateLimit::new(rate);
            let mut now = t0;
            let mut slots: Vec<Instant> = Vec::new();
            let mut paused_until: Option<Instant> = None;
            for step in steps {
                match step {
                    Step::Reserve { gap_ms } => {
                        now += ms(gap_ms);
                        let slot = now + limit.reserve(now);
                        if let Some(until) = paused_until {
                            prop_assert!(slot >= until, "a slot inside a pause");
                        }
                        slots.push(slot);
                    }
                    Step::Pause { gap_ms, pause_ms } => {
                        now += ms(gap_ms);
                        let until = now + ms(pause_ms);
                        limit.pause_until(until);
                        paused_until = Some(paused_until.map_or(until, |p| p.max(until)));
                    }
                }
            }
            let least_gap_nanos = 1e9 / rate;
            for pair in slots.windows(2) {
                prop_assert!(pair[1] > pair[0], "slots are handed out in order");
                let gap_nanos = (pair[1] - pair[0]).as_nanos() as f64;
                prop_assert!(
                    gap_nanos >= least_gap_nanos,
                    "slots {gap_nanos} ns apart, less than 1/{rate} s"
                );
            }
        }
    }
}
