//! The retry policy of playhead's services, from backon: exponential backoff with jitter, so
//! that the many loops that retry after the same broker outage do not retry in step.
//!
//! Where an attempt is a self-contained future, retry it with [`Retryable`] and
//! [`policy`]. Where each attempt needs state the loop owns mutably (an intake's shard, a
//! watcher's callback), take the waits from [`backoff`] in the loop.

use std::time::Duration;

pub use backon::{
    BackoffBuilder, ConstantBuilder, ExponentialBackoff, ExponentialBuilder, Retryable,
};

/// The policy: waits from `first`, doubling up to `max`, each plus a random part of itself,
/// without end (callers stop on their shutdown signal).
pub fn policy(first: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// The waits of [`policy`], for loops that sleep themselves.
pub fn backoff(first: Duration, max: Duration) -> ExponentialBackoff {
    policy(first, max).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_from_first_to_max_with_jitter_and_never_end() {
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let waits: Vec<Duration> = backoff(first, max).take(50).collect();
        assert_eq!(waits.len(), 50, "no end");
        // Jitter adds up to the wait itself: each wait lies in [base, 2 × base].
        assert!(waits[0] >= first && waits[0] <= first * 2, "{:?}", waits[0]);
        assert!(waits[3] >= first * 8, "{:?}", waits[3]);
        assert!(waits.iter().all(|wait| *wait <= max * 2), "{waits:?}");
        assert!(waits[40..].iter().all(|wait| *wait >= max), "{waits:?}");
        // Two loops started together do not wait in step.
        let other: Vec<Duration> = backoff(first, max).take(50).collect();
        assert_ne!(waits, other);
    }
}
