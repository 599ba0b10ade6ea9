//! Waits between attempts of one provider request: jittered exponential backoff, and the
//! `Retry-After` a provider may ask for.
//!
//! The jitter comes from a number the caller gives (a counter, a hash), mixed here, so that
//! the same inputs always give the same delay and tests can pin it.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// The longest `Retry-After` taken: a provider asking for more is retried after this anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// `max` below `initial` is taken as `initial` (config refuses it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        debug_assert!(max >= initial, "validated in config");
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// The ceiling of the delay after the attempt numbered `attempt` (0 for the first) failed:
    /// `initial · 2^attempt`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        2u32.checked_pow(attempt)
            .and_then(|factor| self.initial.checked_mul(factor))
            .map_or(self.max, |delay| delay.min(self.max))
    }

    /// The delay after attempt `attempt` failed: in `[d / 2, d]` where `d` is its
    /// [ceiling](Self::ceiling), placed by `jitter`.
    pub fn delay(&self, attempt: u32, jitter: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        let floor = ceiling / 2;
        let span = ceiling - floor;
        let offset = match span.checked_add(1) {
            Some(choices) => mix(jitter) % choices,
            None => mix(jitter),
        };
        Duration::from_nanos(floor + offset)
    }
}

/// SplitMix64's finaliser: consecutive counters land far apart.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How long a `Retry-After` header asks to wait, from `now`: delta-seconds (`120`) or an
/// HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`), at most [`MAX_RETRY_AFTER`]; a date already
/// past is zero. `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|byte| byte.is_ascii_digit()) {
        // All digits but too many for a u64: far beyond the cap.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let date = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = SystemTime::from(date)
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn backoff() -> Backoff {
        Backoff::new(ms(500), ms(30_000))
    }

    #[test]
    fn given_the_first_attempt_failed_then_the_ceiling_is_the_initial_delay() {
        assert_eq!(backoff().ceiling(0), ms(500));
    }

    #[test]
    fn given_later_attempts_then_the_ceiling_doubles_up_to_the_max() {
        let ceilings: Vec<Duration> = (0..9).map(|attempt| backoff().ceiling(attempt)).collect();

        assert_eq!(
            ceilings,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
            .map(ms)
        );
        assert_eq!(backoff().ceiling(u32::MAX), ms(30_000));
    }

    #[test]
    fn given_the_same_jitter_then_the_delay_is_the_same_and_pinned() {
        let delay = backoff().delay(3, 42);

        assert_eq!(delay, backoff().delay(3, 42));
        assert_eq!(
            delay,
            Duration::from_nanos(2_000_000_000 + mix(42) % 2_000_000_001)
        );
    }

    #[test]
    fn given_successive_counters_then_the_delays_spread_over_the_range() {
        let delays: Vec<Duration> = (0..100)
            .map(|counter| backoff().delay(4, counter))
            .collect();

        assert!(delays.iter().any(|delay| *delay < ms(5_000)));
        assert!(delays.iter().any(|delay| *delay > ms(7_000)));
    }

    #[test]
    fn given_a_zero_initial_delay_then_every_delay_is_zero() {
        let backoff = Backoff::new(Duration::ZERO, Duration::ZERO);

        assert_eq!(backoff.delay(5, 7), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn the_delay_stays_within_half_the_ceiling_and_the_ceiling(
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..600_000,
            attempt in 0u32..100,
            jitter in any::<u64>(),
        ) {
            let max = ms(initial_ms + extra_ms);
            let backoff = Backoff::new(ms(initial_ms), max);

            let delay = backoff.delay(attempt, jitter);

            // The oracle: initial · 2^attempt in floating point, capped.
            let uncapped_secs = (initial_ms as f64 / 1000.0) * 2f64.powi(attempt as i32);
            let ceiling = if uncapped_secs >= max.as_secs_f64() {
                max
            } else {
                ms(initial_ms) * 2u32.pow(attempt)
            };
            prop_assert!(delay <= ceiling, "{delay:?} above {ceiling:?}");
            prop_assert!(delay >= ceiling / 2, "{delay:?} below half of {ceiling:?}");
            prop_assert!(delay <= max);
        }
    }

    /// 1994-11-06 08:49:37 UTC, the date of RFC 9110's example.
    fn rfc_example_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn given_delta_seconds_then_they_are_the_wait() {
        assert_eq!(
            parse_retry_after("120", rfc_example_time()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 0 ", rfc_example_time()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn given_an_http_date_then_the_wait_is_the_time_until_it() {
        let now = rfc_example_time() - Duration::from_secs(90);

        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn given_an_http_date_already_past_then_the_wait_is_zero() {
        let now = rfc_example_time() + Duration::from_secs(5);

        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn given_a_wait_beyond_an_hour_then_it_is_capped_at_an_hour() {
        let now = rfc_example_time();

        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn given_garbage_then_there_is_no_wait() {
        let now = rfc_example_time();
        for value in [
            "",
            "soon",
            "-5",
            "1.5",
            "12 s",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
    }
}
