//! Wall-clock abstraction for storage code that reasons about time (bucket choice, expiry).
//!
//! Storage takes an `Arc<dyn Clock>` instead of calling `SystemTime::now()` so that tests can
//! move time forward by days without sleeping: production wires [`SystemClock`], tests wire
//! [`ManualClock`] and advance it explicitly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now" as Unix epoch milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        // A clock set before 1970 is a broken host; pinning it to the epoch keeps callers total
        // (everything simply looks very old) instead of panicking in a storage hot path.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        duration_to_millis_saturating(since_epoch)
    }
}

/// A clock that only moves when told to; shared by tests across modules.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_millis: AtomicU64,
}

impl ManualClock {
    /// A clock frozen at `start_millis` (Unix epoch milliseconds).
    pub fn new(start_millis: u64) -> Self {
        Self {
            now_millis: AtomicU64::new(start_millis),
        }
    }

    /// Jumps to `now_millis`; going backwards is allowed so tests can model clock skew.
    pub fn set(&self, now_millis: u64) {
        self.now_millis.store(now_millis, Ordering::SeqCst);
    }

    /// Moves the clock forward by `elapsed`, saturating at `u64::MAX` milliseconds.
    pub fn advance(&self, elapsed: Duration) {
        let elapsed_millis = duration_to_millis_saturating(elapsed);
        // fetch_update rather than fetch_add so a huge advance saturates instead of wrapping.
        let _ =
            self.now_millis
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current_millis| {
                    Some(current_millis.saturating_add(elapsed_millis))
                });
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.now_millis.load(Ordering::SeqCst)
    }
}

fn duration_to_millis_saturating(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn given_a_manual_clock_when_advanced_twice_then_now_is_the_sum() {
        let clock = ManualClock::new(1_000);

        clock.advance(Duration::from_millis(250));
        clock.advance(Duration::from_secs(2));

        assert_eq!(clock.now_millis(), 3_250);
    }

    #[test]
    fn given_a_manual_clock_when_set_backwards_then_now_follows() {
        let clock = ManualClock::new(10_000);

        clock.set(4_000);

        assert_eq!(clock.now_millis(), 4_000);
    }

    #[test]
    fn given_a_manual_clock_near_the_end_of_time_when_advanced_then_it_saturates() {
        let clock = ManualClock::new(u64::MAX - 5);

        clock.advance(Duration::from_secs(1));

        assert_eq!(clock.now_millis(), u64::MAX);
    }

    #[test]
    fn given_a_shared_manual_clock_when_advanced_through_one_handle_then_every_holder_sees_it() {
        let clock = Arc::new(ManualClock::new(0));
        let as_dyn_clock: Arc<dyn Clock> = clock.clone();

        clock.advance(Duration::from_millis(42));

        assert_eq!(as_dyn_clock.now_millis(), 42);
    }

    #[test]
    fn given_the_system_clock_when_read_then_it_reports_epoch_milliseconds_after_2020() {
        const FIRST_OF_JANUARY_2020_MILLIS: u64 = 1_577_836_800_000;
        const FIRST_OF_JANUARY_2200_MILLIS: u64 = 7_258_118_400_000;

        let now_millis = SystemClock.now_millis();

        // Bounds on both sides catch a seconds/micros mix-up, not just a zero.
        assert!(now_millis > FIRST_OF_JANUARY_2020_MILLIS);
        assert!(now_millis < FIRST_OF_JANUARY_2200_MILLIS);
    }
}
