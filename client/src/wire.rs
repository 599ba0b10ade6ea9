//! Values on the wire that are not messages of their own: timestamps, durations in
//! milliseconds, and the answer a heartbeat gets when no decision can be had.

use std::time::Duration;

use playhead_proto::v1;

use crate::time::Timestamp;

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let millis = at.as_millis();
    prost_types::Timestamp {
        seconds: (millis / 1000) as i64,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    }
}

/// Saturating: a client's far-future timestamp must not overflow (a panic in debug builds).
pub fn timestamp_millis(at: &prost_types::Timestamp) -> u64 {
    (at.seconds.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add((at.nanos.max(0) as u64) / 1_000_000)
}

pub fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The fail-open answer: playback continues, the client beats again after `interval`.
pub fn degraded_decision(interval: Duration) -> v1::HeartbeatDecision {
    v1::HeartbeatDecision {
        action: v1::HeartbeatAction::Continue as i32,
        reason: v1::HeartbeatReason::Degraded as i32,
        next_heartbeat_ms: duration_millis(interval),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let at = Timestamp::from_millis(1_763_000_123_456);
        assert_eq!(timestamp_millis(&timestamp(at)), at.as_millis());
    }

    #[test]
    fn a_far_future_timestamp_saturates() {
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        };
        assert_eq!(timestamp_millis(&far), u64::MAX);
    }
}
