//! Admission and slots: the concurrency limit, a device reclaiming its slot, silent slots
//! freeing their seat, limit changes, and the policy that sets the defaults.

use super::*;

#[test]
fn given_an_entitled_user_when_started_then_it_is_admitted_with_a_jittered_interval() {
    let state = given(&[entitled()])
        .when(start("tv", "p1"), 1_000)
        .then_filed(vec![started("tv", "p1", 1_000)]);
    assert_eq!(seats(&state), vec![("tv", "p1")]);
    assert_eq!(state.slots[0].started_at, at(1_000));
    given(&[entitled()])
        .when(start("tv", "p1"), 1_000)
        .then_answer(proceed(jittered("p1")));
}

#[test]
fn given_the_limit_reached_when_another_device_starts_then_it_stops_at_the_limit() {
    let state = given(&[
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
    ])
    .when(start("tablet", "p3"), MINUTE)
    .then_filed(vec![stopped(
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
        .then_filed(vec![started("phone", "p2", MINUTE)]);
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
    .then_filed(vec![
        PlayoutEvent::SlotReclaimed {
            device_id: device_id("tv"),
            previous_playout_id: playout_id("p1"),
            previous_content_id: film(),
            playout_id: playout_id("p3"),
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
    .then_filed(vec![started("tv", "p1", MINUTE)]);
    assert_eq!(seats(&state), vec![("phone", "p2"), ("tv", "p1")]);
}

#[test]
fn given_slots_silent_for_the_timeout_then_their_capacity_is_free() {
    let timeout = policy().slot_timeout.as_millis() as u64;
    let history = [
        entitled(),
        started("tv", "p1", 0),
        started("phone", "p2", 0),
        PlayoutEvent::HeartbeatRecorded {
            device_id: device_id("phone"),
            playout_id: playout_id("p2"),
            content_id: film(),
            position_ms: 1,
            next_heartbeat: interval(),
            at: at(10 * MINUTE),
            bookmarked: false,
        },
    ];
    given(&history)
        .when(start("tablet", "p3"), timeout - 1)
        .then_answer(stop(HeartbeatReason::ConcurrencyLimit));
    let state = given(&history)
        .when(start("tablet", "p3"), timeout)
        .then_filed(vec![
            expired("tv", "p1", 0, timeout),
            started("tablet", "p3", timeout),
        ]);
    assert_eq!(seats(&state), vec![("phone", "p2"), ("tablet", "p3")]);
    assert_eq!(state.live_slots(at(timeout), &policy()).count(), 2);
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
    given_state(state)
        .when(start("tablet", "p3"), 2 * MINUTE)
        .then_filed(vec![started("tablet", "p3", 2 * MINUTE)]);
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
    .then_filed(vec![
        PlayoutEvent::EntitlementsUpdated {
            entitlements: vec![],
            concurrency_limit: Some(1),
            at: at(MINUTE),
        },
        PlayoutEvent::SlotRevoked {
            device_id: device_id("phone"),
            playout_id: playout_id("p2"),
            content_id: film(),
            at: at(MINUTE),
        },
        PlayoutEvent::SlotRevoked {
            device_id: device_id("tablet"),
            playout_id: playout_id("p3"),
            content_id: film(),
            at: at(MINUTE),
        },
    ]);
    assert_eq!(seats(&state), vec![("tv", "p1")]);
    // The oldest plays on; the others are stopped at their next BEAT.
    given_state(state.clone())
        .when(beat("tv", "p1", 1), 2 * MINUTE)
        .then_answer(proceed(interval()));
    given_state(state)
        .when(beat("phone", "p2", 1), 2 * MINUTE)
        .then_answer(stop(HeartbeatReason::ConcurrencyLimit));
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
