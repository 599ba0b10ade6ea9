//! Time as playhead counts it: Unix epoch milliseconds, as the broker stamps stored messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// This machine's clock (0 before the epoch).
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
        )
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Epoch milliseconds, as tests and fixtures write them.
impl From<u64> for Timestamp {
    fn from(millis: u64) -> Self {
        Self(millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_saturates_instead_of_wrapping() {
        let far = Timestamp::from_millis(1_000).saturating_add(Duration::from_secs(u64::MAX));
        assert_eq!(far, Timestamp::from_millis(u64::MAX));
        assert_eq!(
            Timestamp::from_millis(5).saturating_duration_since(Timestamp::from_millis(9)),
            Duration::ZERO
        );
    }
}
