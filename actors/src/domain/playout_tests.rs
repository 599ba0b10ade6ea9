//! Given/when/then tests of the playout decider, and its invariants as property tests.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use super::*;

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
    policy().first_heartbeat(playout)
}

fn film() -> ContentId {
    ContentId::parse("film-1").unwrap()
}

fn tags(names: &[&str]) -> Option<BTreeSet<String>> {
    Some(names.iter().map(|name| name.to_string()).collect())
}

/// A heartbeat for `film-1`, tagged `sports`, at position 0.
fn heartbeat(kind: HeartbeatKind, device: &str, playout: &str) -> Heartbeat {
    Heartbeat {
        device_id: device.into(),
        playout_id: playout.into(),
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
            .map(|(tag, until)| Entitlement {
                tag: tag.to_string(),
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
            tag: "sports".into(),
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
        device_id: device.into(),
        playout_id: playout.into(),
        content_id: film(),
        position_ms: 0,
        readmitted: false,
        next_heartbeat: jittered(playout),
        at: at(when),
    }
}

fn readmitted(device: &str, playout: &str, position_ms: u64, when: u64) -> PlayoutEvent {
    PlayoutEvent::PlayoutStarted {
        device_id: device.into(),
        playout_id: playout.into(),
        content_id: film(),
        position_ms,
        readmitted: true,
        next_heartbeat: jittered(playout),
        at: at(when),
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
        device_id: device.into(),
        playout_id: playout.into(),
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
        device_id: device.into(),
        playout_id: playout.into(),
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

/// given(events).when(command, now) → the decision.
struct Given(PlayoutState);

fn given(events: &[PlayoutEvent]) -> Given {
    Given(events.iter().fold(initial(), evolve))
}

impl Given {
    fn when(self, command: PlayoutCommand, now: u64) -> Then {
        let decided = policy().decide(&command, &self.0, at(now));
        Then {
            state: self.0,
            decided,
        }
    }
}

struct Then {
    state: PlayoutState,
    decided: Result<Vec<PlayoutEvent>, PlayoutError>,
}

impl Then {
    /// Asserts the events and, for a heartbeat, that the answer derived from them is the one
    /// filed for redeliveries; returns the state they lead to.
    fn then(self, expected: Vec<PlayoutEvent>) -> PlayoutState {
        let events = self.decided.expect("command accepted");
        assert_eq!(events, expected);
        let state = events.iter().fold(self.state, evolve);
        if let Some((playout, answer)) = events.iter().rev().find_map(PlayoutEvent::decision) {
            assert_eq!(state.last_decision(playout), Some(answer));
        }
        state
    }

    fn then_answer(self, expected: HeartbeatDecision) -> PlayoutState {
        let events = self.decided.expect("command accepted");
        assert_eq!(decision(&events), Some(expected));
        events.iter().fold(self.state, evolve)
    }

    /// For an entitlements update: accepted, answering no heartbeat.
    fn then_answer_state(self) -> PlayoutState {
        let events = self.decided.expect("command accepted");
        assert_eq!(decision(&events), None, "an update answers no heartbeat");
        events.iter().fold(self.state, evolve)
    }

    fn then_rejected(self, expected: PlayoutError) {
        assert_eq!(self.decided, Err(expected));
    }
}

#[test]
fn given_an_entitled_user_when_started_then_it_is_admitted_with_a_jittered_interval() {
    let state = given(&[entitled()])
        .when(start("tv", "p1"), 1_000)
        .then(vec![started("tv", "p1", 1_000)]);
    assert_eq!(seats(&state), vec![("tv", "p1")]);
    assert_eq!(state.slots[0].started_at, at(1_000));
    given(&[entitled()])
        .when(start("tv", "p1"), 1_000)
        .then_answer(proceed(jittered("p1")));
}

#[test]
fn given_tags_that_do_not_match_when_started_then_it_stops_not_entitled() {
    let mut command = heartbeat(HeartbeatKind::Start, "tv", "p1");
    command.content_tags = tags(&["movies", "kids"]);
    let state = given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command), 1)
        .then(vec![PlayoutEvent::PlayoutStopped {
            device_id: "tv".into(),
            playout_id: "p1".into(),
            content_id: film(),
            kind: HeartbeatKind::Start,
            reason: StopReason::NotEntitled,
            position_ms: 0,
            next_heartbeat: interval(),
            at: at(1),
        }]);
    assert!(state.slots.is_empty());
    assert_eq!(
        state.last_decision("p1"),
        Some(stop(HeartbeatReason::NotEntitled))
    );
}

#[test]
fn given_any_tag_in_common_when_started_then_it_is_entitled() {
    let mut command = heartbeat(HeartbeatKind::Start, "tv", "p1");
    command.content_tags = tags(&["movies", "sports"]);
    given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command), 1)
        .then_answer(proceed(jittered("p1")));
}

#[test]
fn given_unknown_content_when_started_then_it_is_not_entitled() {
    let mut command = heartbeat(HeartbeatKind::Start, "tv", "p1");
    command.content_tags = None;
    given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command.clone()), 1)
        .then(vec![stopped(
            HeartbeatKind::Start,
            StopReason::NotEntitled,
            "tv",
            "p1",
            0,
            1,
        )]);
    // Known content without tags matches nothing either.
    command.content_tags = Some(BTreeSet::new());
    given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command), 1)
        .then_answer(stop(HeartbeatReason::NotEntitled));
}

#[test]
fn given_an_entitlement_that_ended_when_started_then_it_is_not_entitled() {
    // valid_until is exclusive.
    given(&[sports_until(10 * MINUTE)])
        .when(start("tv", "p1"), 10 * MINUTE - 1)
        .then_answer(proceed(jittered("p1")));
    given(&[sports_until(10 * MINUTE)])
        .when(start("tv", "p1"), 10 * MINUTE)
        .then_answer(stop(HeartbeatReason::NotEntitled));
    given(&[])
        .when(start("tv", "p1"), 0)
        .then_answer(stop(HeartbeatReason::NotEntitled));
}

#[test]
fn given_the_limit_reached_when_another_device_starts_then_it_stops_at_the_limit() {
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(start("tablet", "p3"), MINUTE)
    .then(vec![stopped(
        HeartbeatKind::Start,
        StopReason::ConcurrencyLimit,
        "tablet",
        "p3",
        0,
        MINUTE,
    )]);
    assert_eq!(seats(&state), vec![("tv", "p1"), ("phone", "p2")]);
}

#[test]
fn given_one_slot_free_when_another_device_starts_then_it_is_admitted() {
    let state = given(&[entitled(), started("tv", "p1", 0)])
        .when(start("phone", "p2"), MINUTE)
        .then(vec![started("phone", "p2", MINUTE)]);
    assert_eq!(seats(&state), vec![("tv", "p1"), ("phone", "p2")]);
}

#[test]
fn given_both_rules_broken_when_started_then_not_entitled_is_named() {
    let mut command = heartbeat(HeartbeatKind::Start, "tablet", "p3");
    command.content_tags = None;
    given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(PlayoutCommand::Heartbeat(command), MINUTE)
    .then_answer(stop(HeartbeatReason::NotEntitled));
}

#[test]
fn given_a_device_holding_a_slot_when_it_starts_again_then_it_reclaims_its_slot() {
    // The app crashed without END: the limit is full, and its own device gets back in at once.
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(start("tv", "p3"), MINUTE)
    .then(vec![
        PlayoutEvent::SlotReclaimed {
            device_id: "tv".into(),
            previous_playout_id: "p1".into(),
            previous_content_id: film(),
            playout_id: "p3".into(),
            at: at(MINUTE),
        },
        started("tv", "p3", MINUTE),
    ]);
    assert_eq!(seats(&state), vec![("phone", "p2"), ("tv", "p3")]);
}

#[test]
fn given_a_live_playout_when_started_again_then_it_keeps_its_one_slot() {
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(start("tv", "p1"), MINUTE)
    .then(vec![started("tv", "p1", MINUTE)]);
    assert_eq!(seats(&state), vec![("phone", "p2"), ("tv", "p1")]);
}

#[test]
fn given_a_live_slot_when_beat_then_the_slot_and_bookmark_are_refreshed() {
    let events = given(&[entitled(), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 42_000), 10 * MINUTE)
        .decided
        .unwrap();
    assert_eq!(
        events,
        vec![PlayoutEvent::HeartbeatRecorded {
            device_id: "tv".into(),
            playout_id: "p1".into(),
            content_id: film(),
            position_ms: 42_000,
            next_heartbeat: interval(),
            at: at(10 * MINUTE),
        }]
    );
    assert_eq!(
        events[0].bookmark(),
        Some(Bookmark {
            content_id: film(),
            position_ms: 42_000,
            at: at(10 * MINUTE),
            view_ended: false,
        })
    );
    let state = given(&[entitled(), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 42_000), 10 * MINUTE)
        .then(events);
    assert_eq!(state.slots[0].last_heartbeat_at, at(10 * MINUTE));
    assert_eq!(state.slots[0].started_at, at(0));
    // After a BEAT the interval is the normal one, not the jittered one.
    assert_eq!(state.last_decision("p1"), Some(proceed(interval())));
}

#[test]
fn given_a_refreshed_slot_then_it_lives_a_timeout_from_the_last_beat() {
    let timeout = policy().slot_timeout.as_millis() as u64;
    let state = given(&[entitled(), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 1), 20 * MINUTE)
        .then_answer(proceed(interval()));
    assert!(state.slots[0].is_live(at(20 * MINUTE + timeout - 1), &policy()));
    assert!(!state.slots[0].is_live(at(20 * MINUTE + timeout), &policy()));
}

#[test]
fn given_an_expired_slot_when_beat_with_room_then_it_is_readmitted() {
    let timeout = policy().slot_timeout.as_millis() as u64;
    let state = given(&[entitled(), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 5_000), timeout)
        .then(vec![
            expired("tv", "p1", 0, timeout),
            readmitted("tv", "p1", 5_000, timeout),
        ]);
    assert_eq!(state.slots[0].started_at, at(timeout));
    assert_eq!(state.last_decision("p1"), Some(proceed(jittered("p1"))));
}

#[test]
fn given_an_unknown_playout_when_beat_with_room_then_it_is_readmitted() {
    // The actor lost nothing, but the START may have been decided elsewhere or never arrived.
    given(&[entitled()])
        .when(beat("tv", "p1", 7), MINUTE)
        .then(vec![readmitted("tv", "p1", 7, MINUTE)]);
}

#[test]
fn given_a_full_limit_when_an_unknown_playout_beats_then_it_stops_at_the_limit() {
    let events = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(beat("tablet", "p3", 9_000), MINUTE)
    .decided
    .unwrap();
    assert_eq!(
        events,
        vec![stopped(
            HeartbeatKind::Beat,
            StopReason::ConcurrencyLimit,
            "tablet",
            "p3",
            9_000,
            MINUTE,
        )]
    );
    // The viewer did watch until the stop: the view ends with that bookmark.
    assert_eq!(
        events[0].bookmark(),
        Some(Bookmark {
            content_id: film(),
            position_ms: 9_000,
            at: at(MINUTE),
            view_ended: true,
        })
    );
}

#[test]
fn given_an_expired_slot_taken_by_others_when_it_beats_then_it_stops_at_the_limit() {
    let timeout = policy().slot_timeout.as_millis() as u64;
    given(&[
        entitled(),
        started("tv", "p1", 0),
        expired("tv", "p1", 0, timeout),
        started("phone", "p2", timeout),
        started("tablet", "p3", timeout),
    ])
    .when(beat("tv", "p1", 1), timeout + MINUTE)
    .then(vec![stopped(
        HeartbeatKind::Beat,
        StopReason::ConcurrencyLimit,
        "tv",
        "p1",
        1,
        timeout + MINUTE,
    )]);
}

#[test]
fn given_a_device_with_a_slot_when_an_unknown_playout_beats_then_it_reclaims() {
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(beat("tv", "p9", 3), MINUTE)
    .then(vec![
        PlayoutEvent::SlotReclaimed {
            device_id: "tv".into(),
            previous_playout_id: "p1".into(),
            previous_content_id: film(),
            playout_id: "p9".into(),
            at: at(MINUTE),
        },
        readmitted("tv", "p9", 3, MINUTE),
    ]);
    assert_eq!(seats(&state), vec![("phone", "p2"), ("tv", "p9")]);
}

#[test]
fn given_an_entitlement_that_lapsed_since_start_when_beat_then_it_stops_and_frees_the_slot() {
    let state = given(&[sports_until(5 * MINUTE), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 600_000), 10 * MINUTE)
        .then(vec![stopped(
            HeartbeatKind::Beat,
            StopReason::NotEntitled,
            "tv",
            "p1",
            600_000,
            10 * MINUTE,
        )]);
    assert!(state.slots.is_empty());
}

#[test]
fn given_a_live_slot_when_ended_then_the_slot_is_freed_and_the_bookmark_kept() {
    let events = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(end("tv", "p1", 3_600_000), 20 * MINUTE)
    .decided
    .unwrap();
    assert_eq!(
        events,
        vec![PlayoutEvent::PlayoutEnded {
            device_id: "tv".into(),
            playout_id: "p1".into(),
            content_id: film(),
            position_ms: 3_600_000,
            freed_slot: true,
            next_heartbeat: interval(),
            at: at(20 * MINUTE),
        }]
    );
    assert_eq!(
        events[0].bookmark(),
        Some(Bookmark {
            content_id: film(),
            position_ms: 3_600_000,
            at: at(20 * MINUTE),
            view_ended: true,
        })
    );
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(end("tv", "p1", 3_600_000), 20 * MINUTE)
    .then(events);
    assert_eq!(seats(&state), vec![("phone", "p2")]);
    assert_eq!(state.last_decision("p1"), Some(proceed(interval())));
    // The freed seat is taken at once by another device.
    Given(state)
        .when(start("tablet", "p3"), 21 * MINUTE)
        .then(vec![started("tablet", "p3", 21 * MINUTE)]);
}

#[test]
fn given_an_unknown_playout_when_ended_then_the_bookmark_is_still_recorded() {
    let state = given(&[entitled()])
        .when(end("tv", "p1", 77), MINUTE)
        .then(vec![PlayoutEvent::PlayoutEnded {
            device_id: "tv".into(),
            playout_id: "p1".into(),
            content_id: film(),
            position_ms: 77,
            freed_slot: false,
            next_heartbeat: interval(),
            at: at(MINUTE),
        }]);
    assert!(state.slots.is_empty());
    // END is acknowledged, never a STOP: nothing was violated.
    given(&[])
        .when(end("tv", "p1", 77), MINUTE)
        .then_answer(proceed(interval()));
}

#[test]
fn given_slots_silent_for_the_timeout_then_their_capacity_is_free() {
    let timeout = policy().slot_timeout.as_millis() as u64;
    let history = [
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
        PlayoutEvent::HeartbeatRecorded {
            device_id: "phone".into(),
            playout_id: "p2".into(),
            content_id: film(),
            position_ms: 1,
            next_heartbeat: interval(),
            at: at(10 * MINUTE),
        },
    ];
    given(&history)
        .when(start("tablet", "p3"), timeout - 1)
        .then_answer(stop(HeartbeatReason::ConcurrencyLimit));
    let state = given(&history)
        .when(start("tablet", "p3"), timeout)
        .then(vec![
            expired("tv", "p1", 0, timeout),
            started("tablet", "p3", timeout),
        ]);
    assert_eq!(seats(&state), vec![("phone", "p2"), ("tablet", "p3")]);
    assert_eq!(state.live_slots(at(timeout), &policy()).count(), 2);
}

#[test]
fn the_first_interval_is_jittered_in_half_to_full_and_fixed_per_playout() {
    let full = interval();
    let mut quarters = [0usize; 4];
    for index in 0..2_000 {
        let playout = format!("playout-{index}");
        let next = jittered(&playout);
        assert!(next >= full / 2 && next <= full, "{next:?} for {playout}");
        assert_eq!(next, jittered(&playout), "replay gives the same answer");
        let quarter = ((next - full / 2).as_millis() * 4 / (full / 2).as_millis()).min(3);
        quarters[quarter as usize] += 1;
    }
    // Uniform enough: each quarter of the range gets its share (500 expected).
    assert!(
        quarters.iter().all(|count| (400..=600).contains(count)),
        "{quarters:?}"
    );
    assert_ne!(jittered("p1"), jittered("p2"));
    let short = PlayoutPolicy {
        heartbeat_interval: Duration::from_millis(3),
        ..policy()
    };
    assert!((2..=3).contains(&short.first_heartbeat("p1").as_millis()));
}

#[test]
fn given_a_renewal_then_the_tag_keeps_one_record_with_the_new_end() {
    let state = given(&[sports_until(DAY)])
        .when(update(&[("sports", 2 * DAY)], None), MINUTE)
        .then(vec![PlayoutEvent::EntitlementsUpdated {
            entitlements: vec![Entitlement {
                tag: "sports".into(),
                valid_until: at(2 * DAY),
            }],
            concurrency_limit: None,
            at: at(MINUTE),
        }]);
    assert_eq!(state.entitlements.len(), 1);
    assert_eq!(state.entitlements["sports"], at(2 * DAY));
    assert_eq!(
        state.held_tags(at(DAY + 1)).collect::<Vec<_>>(),
        vec!["sports"]
    );
    Given(state)
        .when(start("tv", "p1"), DAY + 1)
        .then_answer(proceed(jittered("p1")));
}

#[test]
fn given_an_update_then_tags_ending_in_the_past_are_dropped_and_a_tag_given_twice_takes_the_last() {
    let state = given(&[entitled()])
        .when(
            update(
                &[("movies", DAY), ("sports", MINUTE), ("movies", 3 * DAY)],
                None,
            ),
            MINUTE,
        )
        .then_answer_state();
    // A valid_until in the past revokes the tag.
    assert_eq!(
        state.entitlements.into_iter().collect::<Vec<_>>(),
        vec![("movies".to_string(), at(3 * DAY))]
    );
}

#[test]
fn given_a_higher_limit_then_more_devices_are_admitted() {
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(update(&[], Some(3)), MINUTE)
    .then_answer_state();
    assert_eq!(state.concurrency_limit(&policy()), 3);
    Given(state)
        .when(start("tablet", "p3"), 2 * MINUTE)
        .then(vec![started("tablet", "p3", 2 * MINUTE)]);
    // An update without a limit keeps the one set.
    let state = given(&[PlayoutEvent::EntitlementsUpdated {
        entitlements: vec![],
        concurrency_limit: Some(5),
        at: at(0),
    }])
    .when(update(&[("kids", DAY)], None), 1)
    .then_answer_state();
    assert_eq!(state.concurrency_limit, Some(5));
}

#[test]
fn given_a_lower_limit_then_the_newest_slots_lose_their_seat_at_once() {
    let state = given(&[
        entitled(),
        PlayoutEvent::EntitlementsUpdated {
            entitlements: vec![],
            concurrency_limit: Some(3),
            at: at(0),
        },
        started("tv", "p1", 0),
        started("phone", "p2", 1),
        started("tablet", "p3", 2),
    ])
    .when(update(&[], Some(1)), MINUTE)
    .then(vec![
        PlayoutEvent::EntitlementsUpdated {
            entitlements: vec![],
            concurrency_limit: Some(1),
            at: at(MINUTE),
        },
        PlayoutEvent::SlotRevoked {
            device_id: "phone".into(),
            playout_id: "p2".into(),
            content_id: film(),
            at: at(MINUTE),
        },
        PlayoutEvent::SlotRevoked {
            device_id: "tablet".into(),
            playout_id: "p3".into(),
            content_id: film(),
            at: at(MINUTE),
        },
    ]);
    assert_eq!(seats(&state), vec![("tv", "p1")]);
    // The oldest plays on; the others are stopped at their next BEAT.
    Given(state.clone())
        .when(beat("tv", "p1", 1), 2 * MINUTE)
        .then_answer(proceed(interval()));
    Given(state)
        .when(beat("phone", "p2", 1), 2 * MINUTE)
        .then_answer(stop(HeartbeatReason::ConcurrencyLimit));
}

#[test]
fn bad_input_is_rejected_with_its_rule() {
    given(&[entitled()])
        .when(start("tv.1", "p1"), 0)
        .then_rejected(PlayoutError::InvalidId(IdError::InvalidCharacter {
            kind: "device_id",
            value: "tv.1".into(),
            found: '.',
        }));
    given(&[entitled()])
        .when(start("tv", ""), 0)
        .then_rejected(PlayoutError::InvalidId(IdError::Empty {
            kind: "playout_id",
        }));
    given(&[])
        .when(update(&[("sports>", DAY)], None), 0)
        .then_rejected(PlayoutError::InvalidId(IdError::InvalidCharacter {
            kind: "entitlement_tag",
            value: "sports>".into(),
            found: '>',
        }));
    given(&[])
        .when(update(&[], Some(0)), 0)
        .then_rejected(PlayoutError::InvalidConcurrencyLimit(0));
    given(&[])
        .when(update(&[], Some(MAX_CONCURRENCY_LIMIT + 1)), 0)
        .then_rejected(PlayoutError::InvalidConcurrencyLimit(
            MAX_CONCURRENCY_LIMIT + 1,
        ));
    given(&[])
        .when(update(&[], Some(MAX_CONCURRENCY_LIMIT)), 0)
        .then_answer_state();
}

#[test]
fn entitlement_tags_are_bounded_per_user() {
    let names: Vec<String> = (0..=MAX_ENTITLEMENTS).map(|i| format!("tag-{i}")).collect();
    let all: Vec<(&str, u64)> = names.iter().map(|name| (name.as_str(), DAY)).collect();
    given(&[])
        .when(update(&all, None), 0)
        .then_rejected(PlayoutError::TooManyEntitlements {
            count: MAX_ENTITLEMENTS + 1,
        });
    let state = given(&[])
        .when(update(&all[..MAX_ENTITLEMENTS], None), 0)
        .then_answer_state();
    assert_eq!(state.entitlements.len(), MAX_ENTITLEMENTS);
    // One more distinct tag overflows; a renewal or a lapsed tag does not.
    Given(state.clone())
        .when(update(&[("extra", DAY)], None), 1)
        .then_rejected(PlayoutError::TooManyEntitlements {
            count: MAX_ENTITLEMENTS + 1,
        });
    Given(state.clone())
        .when(update(&[("tag-0", 2 * DAY)], None), 1)
        .then_answer_state();
    Given(state)
        .when(update(&[("tag-0", 0), ("extra", DAY)], None), 1)
        .then_answer_state();
}

#[test]
fn the_default_policy_is_valid_and_bad_ones_are_named() {
    assert_eq!(policy().validate(), Ok(()));
    assert_eq!(initial().concurrency_limit(&policy()), 2);
    let bad_limit = PlayoutPolicy {
        default_concurrency_limit: 0,
        ..policy()
    };
    assert_eq!(
        bad_limit.validate(),
        Err(PlayoutPolicyError::ConcurrencyLimit(0))
    );
    let zero = PlayoutPolicy {
        heartbeat_interval: Duration::ZERO,
        ..policy()
    };
    assert_eq!(zero.validate(), Err(PlayoutPolicyError::ZeroInterval));
    let short_timeout = PlayoutPolicy {
        slot_timeout: Duration::from_secs(5 * 60),
        ..policy()
    };
    assert!(matches!(
        short_timeout.validate(),
        Err(PlayoutPolicyError::TimeoutNotAboveInterval { .. })
    ));
}

#[test]
fn a_redelivered_heartbeat_is_answered_from_the_state() {
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(start("tablet", "p3"), MINUTE)
    .then_answer(stop(HeartbeatReason::ConcurrencyLimit));
    assert_eq!(state.last_decision("p1"), Some(proceed(jittered("p1"))));
    assert_eq!(
        state.last_decision("p3"),
        Some(stop(HeartbeatReason::ConcurrencyLimit))
    );
    assert_eq!(state.last_decision("p4"), None);
    // Bounded: the oldest answers make room.
    let many: Vec<PlayoutEvent> = (0..MAX_RECENT_DECISIONS + 5)
        .map(|index| started("tv", &format!("q{index}"), index as u64))
        .collect();
    let state = given(&many).0;
    assert_eq!(state.recent_decisions.len(), MAX_RECENT_DECISIONS);
    assert_eq!(state.last_decision("q0"), None);
    assert!(
        state
            .last_decision(&format!("q{}", MAX_RECENT_DECISIONS + 4))
            .is_some()
    );
    assert_eq!(seats(&state).len(), 1, "one device, one slot");
}

#[test]
fn events_have_past_tense_names_and_refused_starts_leave_no_bookmark() {
    let refused = stopped(
        HeartbeatKind::Start,
        StopReason::NotEntitled,
        "tv",
        "p1",
        0,
        0,
    );
    assert_eq!(refused.name(), "PlayoutStopped");
    assert_eq!(refused.bookmark(), None);
    assert_eq!(started("tv", "p1", 0).name(), "PlayoutStarted");
    assert_eq!(expired("tv", "p1", 0, 1).name(), "SlotExpired");
    assert_eq!(expired("tv", "p1", 0, 1).bookmark(), None);
    assert_eq!(entitled().name(), "EntitlementsUpdated");
    assert_eq!(decision(&[]), None);
}

// ---- properties ----

const DEVICES: [&str; 5] = ["d0", "d1", "d2", "d3", "d4"];
const PLAYOUTS: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
const TAGS: [&str; 3] = ["sports", "movies", "kids"];

/// The catalog of the generated runs: content 3 is unknown.
fn catalog(content: usize) -> (ContentId, Option<BTreeSet<String>>) {
    let content_id = ContentId::parse(format!("content-{content}")).unwrap();
    let content_tags = match content {
        0 => tags(&["sports"]),
        1 => tags(&["movies"]),
        2 => tags(&["sports", "kids"]),
        _ => None,
    };
    (content_id, content_tags)
}

#[derive(Debug, Clone)]
enum Step {
    Heartbeat {
        device: usize,
        playout: usize,
        content: usize,
        kind: HeartbeatKind,
        position_ms: u64,
    },
    Update {
        /// (tag, valid_until relative to now in minutes)
        entitlements: Vec<(usize, i64)>,
        concurrency_limit: Option<u32>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        Just(HeartbeatKind::Start),
        Just(HeartbeatKind::Beat),
        Just(HeartbeatKind::End)
    ];
    prop_oneof![
        8 => (0..DEVICES.len(), 0..PLAYOUTS.len(), 0..4usize, kind, 0..10_000_000u64).prop_map(
            |(device, playout, content, kind, position_ms)| Step::Heartbeat {
                device,
                playout,
                content,
                kind,
                position_ms,
            }
        ),
        1 => (
            proptest::collection::vec((0..TAGS.len(), -60i64..240), 0..4),
            proptest::option::of(1..=4u32),
        )
            .prop_map(|(entitlements, concurrency_limit)| Step::Update {
                entitlements,
                concurrency_limit,
            }),
    ]
}

/// Timestamps either move forward by arbitrary gaps or jump anywhere in a 3-hour range.
fn run_steps() -> impl Strategy<Value = (bool, Vec<(u64, Step)>)> {
    (
        any::<bool>(),
        proptest::collection::vec((0..180 * MINUTE, step()), 0..120),
    )
}

fn command(step: &Step, now: u64) -> PlayoutCommand {
    match step {
        Step::Heartbeat {
            device,
            playout,
            content,
            kind,
            position_ms,
        } => {
            let (content_id, content_tags) = catalog(*content);
            PlayoutCommand::Heartbeat(Heartbeat {
                device_id: DEVICES[*device].into(),
                playout_id: PLAYOUTS[*playout].into(),
                content_id,
                content_tags,
                kind: *kind,
                position_ms: *position_ms,
            })
        }
        Step::Update {
            entitlements,
            concurrency_limit,
        } => PlayoutCommand::UpdateEntitlements(UpdateEntitlements {
            entitlements: entitlements
                .iter()
                .map(|(tag, minutes)| Entitlement {
                    tag: TAGS[*tag].into(),
                    valid_until: at(now.saturating_add_signed(minutes * MINUTE as i64)),
                })
                .collect(),
            concurrency_limit: *concurrency_limit,
        }),
    }
}

/// Independent of the decider: may content with `content_tags` be watched at `now`?
fn really_entitled(
    state: &PlayoutState,
    content_tags: &Option<BTreeSet<String>>,
    now: u64,
) -> bool {
    let Some(content_tags) = content_tags else {
        return false;
    };
    state
        .entitlements
        .iter()
        .any(|(tag, until)| until.as_millis() > now && content_tags.contains(tag))
}

/// Independent of the decider: the slots holding a seat at `now`.
fn really_live(state: &PlayoutState, now: u64) -> Vec<&Slot> {
    let timeout = policy().slot_timeout.as_millis() as u64;
    state
        .slots
        .iter()
        .filter(|slot| now.saturating_sub(slot.last_heartbeat_at.as_millis()) < timeout)
        .collect()
}

struct Run {
    events: Vec<PlayoutEvent>,
    state: PlayoutState,
}

/// Decides every step against the state folded so far, checking the per-step invariants.
fn run(monotonic: bool, steps: &[(u64, Step)]) -> Result<Run, TestCaseError> {
    let policy = policy();
    let mut now = 0;
    let mut state = initial();
    let mut events = Vec::new();
    for (time, step) in steps {
        now = if monotonic { now + time / 8 } else { *time };
        let command = command(step, now);
        let decided = policy
            .decide(&command, &state, at(now))
            .map_err(|error| TestCaseError::fail(format!("valid input rejected: {error}")))?;
        if let PlayoutCommand::Heartbeat(heartbeat) = &command {
            let answers: Vec<_> = decided.iter().filter_map(PlayoutEvent::decision).collect();
            prop_assert_eq!(answers.len(), 1, "one answer per heartbeat");
            prop_assert_eq!(answers[0].0, heartbeat.playout_id.as_str());
            for event in &decided {
                let PlayoutEvent::PlayoutStopped { reason, .. } = event else {
                    continue;
                };
                let entitled = really_entitled(&state, &heartbeat.content_tags, now);
                match reason {
                    StopReason::NotEntitled => prop_assert!(!entitled, "entitled, yet stopped"),
                    StopReason::ConcurrencyLimit => {
                        prop_assert!(entitled, "entitlement is checked first");
                        let others = really_live(&state, now)
                            .into_iter()
                            .filter(|slot| slot.device_id != heartbeat.device_id)
                            .count();
                        let limit = state.concurrency_limit(&policy) as usize;
                        prop_assert!(others >= limit, "{others} other slots, limit {limit}");
                    }
                }
            }
            // The converses: nothing un-entitled plays on, and an entitled START is refused
            // only at the limit.
            if heartbeat.kind != HeartbeatKind::End
                && !really_entitled(&state, &heartbeat.content_tags, now)
            {
                prop_assert_eq!(
                    decision(&decided),
                    Some(HeartbeatDecision {
                        action: HeartbeatAction::Stop,
                        reason: HeartbeatReason::NotEntitled,
                        next_heartbeat: policy.heartbeat_interval,
                    })
                );
            }
            if heartbeat.kind == HeartbeatKind::Start
                && really_entitled(&state, &heartbeat.content_tags, now)
            {
                let others = really_live(&state, now)
                    .into_iter()
                    .filter(|slot| {
                        slot.device_id != heartbeat.device_id
                            && slot.playout_id != heartbeat.playout_id
                    })
                    .count();
                if others < state.concurrency_limit(&policy) as usize {
                    prop_assert_eq!(
                        decision(&decided).map(|answer| answer.action),
                        Some(HeartbeatAction::Continue)
                    );
                }
            }
        }
        state = decided.iter().fold(state, evolve);
        events.extend(decided);
        let limit = state.concurrency_limit(&policy) as usize;
        prop_assert!(
            really_live(&state, now).len() <= limit,
            "live slots over the limit"
        );
        prop_assert!(state.slots.len() <= limit, "slots over the limit");
        let devices: HashSet<&str> = state.slots.iter().map(|s| s.device_id.as_str()).collect();
        let playouts: HashSet<&str> = state.slots.iter().map(|s| s.playout_id.as_str()).collect();
        prop_assert_eq!(devices.len(), state.slots.len(), "one slot per device");
        prop_assert_eq!(playouts.len(), state.slots.len(), "one slot per playout");
        if let PlayoutCommand::Heartbeat(heartbeat) = &command {
            prop_assert_eq!(
                state.last_decision(&heartbeat.playout_id),
                decision(&events[events.len() - 1..]),
                "a redelivery is answered as the first time"
            );
        }
    }
    Ok(Run { events, state })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn live_slots_never_exceed_the_limit_and_every_stop_names_a_broken_rule(
        (monotonic, steps) in run_steps(),
    ) {
        run(monotonic, &steps)?;
    }

    #[test]
    fn folding_the_events_reproduces_the_state((monotonic, steps) in run_steps()) {
        let Run { events, state } = run(monotonic, &steps)?;
        prop_assert_eq!(events.iter().fold(initial(), evolve), state);
    }

    #[test]
    fn the_first_interval_is_within_half_and_full_for_any_id(
        playout in "[A-Za-z0-9_-]{1,128}",
        interval_ms in 1u64..100_000_000,
    ) {
        let policy = PlayoutPolicy {
            heartbeat_interval: Duration::from_millis(interval_ms),
            ..policy()
        };
        let next = policy.first_heartbeat(&playout).as_millis() as u64;
        prop_assert!(next * 2 >= interval_ms && next <= interval_ms);
        prop_assert_eq!(policy.first_heartbeat(&playout).as_millis() as u64, next);
    }
}
