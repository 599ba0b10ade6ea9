//! Given/when/then tests of the playout decider, one file per rule, and its invariants as
//! property tests. The fixtures take ids as `&str` and parse them, so a test reads as its
//! scenario.

use super::*;
use crate::domain::decider::{Given, When};

mod admission;
mod bookmarks;
mod entitlements;
mod heartbeats;
mod properties;

const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

fn policy() -> PlayoutPolicy {
    PlayoutPolicy::default()
}

fn at(millis: u64) -> Timestamp {
    Timestamp::from_millis(millis)
}

fn interval() -> Duration {
    policy().heartbeat_interval
}

fn jittered(playout: &str) -> Duration {
    policy().first_heartbeat(&playout_id(playout))
}

fn film() -> ContentId {
    ContentId::parse("film-1").unwrap()
}

fn device_id(name: &str) -> DeviceId {
    DeviceId::parse(name).unwrap()
}

fn playout_id(name: &str) -> PlayoutId {
    PlayoutId::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

fn tags(names: &[&str]) -> Option<BTreeSet<Tag>> {
    Some(names.iter().copied().map(tag).collect())
}

/// A heartbeat for `film-1`, tagged `sports`, at position 0.
fn heartbeat(kind: HeartbeatKind, device: &str, playout: &str) -> Heartbeat {
    Heartbeat {
        device_id: device_id(device),
        playout_id: playout_id(playout),
        content_id: film(),
        content_tags: tags(&["sports"]),
        kind,
        position_ms: 0,
    }
}

fn start(device: &str, playout: &str) -> PlayoutCommand {
    PlayoutCommand::Heartbeat(heartbeat(HeartbeatKind::Start, device, playout))
}

fn beat(device: &str, playout: &str, position_ms: u64) -> PlayoutCommand {
    PlayoutCommand::Heartbeat(Heartbeat {
        position_ms,
        ..heartbeat(HeartbeatKind::Beat, device, playout)
    })
}

fn end(device: &str, playout: &str, position_ms: u64) -> PlayoutCommand {
    PlayoutCommand::Heartbeat(Heartbeat {
        position_ms,
        ..heartbeat(HeartbeatKind::End, device, playout)
    })
}

fn update(entitlements: &[(&str, u64)], concurrency_limit: Option<u32>) -> PlayoutCommand {
    PlayoutCommand::UpdateEntitlements(UpdateEntitlements {
        entitlements: entitlements
            .iter()
            .map(|(name, until)| Entitlement {
                tag: tag(name),
                valid_until: at(*until),
            })
            .collect(),
        concurrency_limit,
    })
}

/// The user holds `sports` for a day from 0.
fn sports_until(until: u64) -> PlayoutEvent {
    PlayoutEvent::EntitlementsUpdated {
        entitlements: vec![Entitlement {
            tag: tag("sports"),
            valid_until: at(until),
        }],
        concurrency_limit: None,
        at: at(0),
    }
}

fn entitled() -> PlayoutEvent {
    sports_until(DAY)
}

fn started(device: &str, playout: &str, when: u64) -> PlayoutEvent {
    PlayoutEvent::PlayoutStarted {
        device_id: device_id(device),
        playout_id: playout_id(playout),
        content_id: film(),
        position_ms: 0,
        readmitted: false,
        next_heartbeat: jittered(playout),
        at: at(when),
        content_tags: tags(&["sports"]),
    }
}

fn readmitted(device: &str, playout: &str, position_ms: u64, when: u64) -> PlayoutEvent {
    PlayoutEvent::PlayoutStarted {
        device_id: device_id(device),
        playout_id: playout_id(playout),
        content_id: film(),
        position_ms,
        readmitted: true,
        next_heartbeat: jittered(playout),
        at: at(when),
        content_tags: tags(&["sports"]),
    }
}

fn stopped(
    kind: HeartbeatKind,
    reason: StopReason,
    device: &str,
    playout: &str,
    position_ms: u64,
    when: u64,
) -> PlayoutEvent {
    PlayoutEvent::PlayoutStopped {
        device_id: device_id(device),
        playout_id: playout_id(playout),
        content_id: film(),
        kind,
        reason,
        position_ms,
        next_heartbeat: interval(),
        at: at(when),
    }
}

fn expired(device: &str, playout: &str, last: u64, when: u64) -> PlayoutEvent {
    PlayoutEvent::SlotExpired {
        device_id: device_id(device),
        playout_id: playout_id(playout),
        content_id: film(),
        last_heartbeat_at: at(last),
        at: at(when),
    }
}

fn stop(reason: HeartbeatReason) -> HeartbeatDecision {
    HeartbeatDecision {
        action: HeartbeatAction::Stop,
        reason,
        next_heartbeat: interval(),
    }
}

fn proceed(next_heartbeat: Duration) -> HeartbeatDecision {
    HeartbeatDecision {
        action: HeartbeatAction::Continue,
        reason: HeartbeatReason::Ok,
        next_heartbeat,
    }
}

fn seats(state: &PlayoutState) -> Vec<(&str, &str)> {
    state
        .slots
        .iter()
        .map(|slot| (slot.device_id.as_str(), slot.playout_id.as_str()))
        .collect()
}

/// The default policy, for the shared given/when/then harness.
static POLICY: PlayoutPolicy = PlayoutPolicy {
    default_concurrency_limit: 2,
    slot_timeout: Duration::from_secs(25 * 60),
    heartbeat_interval: Duration::from_secs(10 * 60),
    bookmark_every_beats: DEFAULT_BOOKMARK_EVERY_BEATS,
    bookmark_bucket: Duration::from_secs(24 * 3600),
};

/// given(events).when(command, now) → the decision, under the default policy.
fn given(events: &[PlayoutEvent]) -> Given<'static, PlayoutPolicy> {
    Given::new(&POLICY, events)
}

fn given_state(state: PlayoutState) -> Given<'static, PlayoutPolicy> {
    Given::state(&POLICY, state)
}

#[test]
fn the_harness_policy_is_the_default() {
    assert_eq!(POLICY, PlayoutPolicy::default());
}

/// What the playout tests check beyond the shared harness: the answer a heartbeat gets, and
/// that it is the one filed for redeliveries.
trait ThenAnswer {
    /// Asserts the events and, for a heartbeat, that the answer derived from them is the one
    /// filed for redeliveries; returns the state they lead to.
    fn then_filed(self, expected: Vec<PlayoutEvent>) -> PlayoutState;
    fn then_answer(self, expected: HeartbeatDecision) -> PlayoutState;
    /// For an entitlements update: accepted, answering no heartbeat.
    fn then_answer_state(self) -> PlayoutState;
}

impl ThenAnswer for When<PlayoutPolicy> {
    #[track_caller]
    fn then_filed(self, expected: Vec<PlayoutEvent>) -> PlayoutState {
        let state = self.then(expected.clone());
        if let Some((playout, answer)) = expected.iter().rev().find_map(PlayoutEvent::decision) {
            assert_eq!(state.last_decision(playout), Some(answer));
        }
        state
    }

    #[track_caller]
    fn then_answer(self, expected: HeartbeatDecision) -> PlayoutState {
        let (state, decided) = self.decision();
        let events = decided.expect("command accepted");
        assert_eq!(decision(&events), Some(expected));
        events.iter().fold(state, evolve)
    }

    #[track_caller]
    fn then_answer_state(self) -> PlayoutState {
        let (state, decided) = self.decision();
        let events = decided.expect("command accepted");
        assert_eq!(decision(&events), None, "an update answers no heartbeat");
        events.iter().fold(state, evolve)
    }
}
