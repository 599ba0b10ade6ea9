//! Entitlement rules: which tags admit which content, their validity, renewals and bounds,
//! and the input the decider refuses.

use playhead_proto::ids::IdError;

use super::*;

#[test]
fn given_tags_that_do_not_match_when_started_then_it_stops_not_entitled() {
    let mut command = heartbeat(HeartbeatKind::Start, "tv", "p1");
    command.content_tags = tags(&["movies", "kids"]);
    let state = given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command), 1)
        .then_filed(vec![PlayoutEvent::PlayoutStopped {
            device_id: device_id("tv"),
            playout_id: playout_id("p1"),
            content_id: film(),
            kind: HeartbeatKind::Start,
            reason: StopReason::NotEntitled,
            position_ms: 0,
            next_heartbeat: interval(),
            at: at(1),
        }]);
    assert!(state.slots.is_empty());
    assert_eq!(
        state.last_decision(&playout_id("p1")),
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
fn an_admission_records_the_tags_it_was_decided_on() {
    let mut command = heartbeat(HeartbeatKind::Start, "tv", "p1");
    command.content_tags = tags(&["movies", "sports"]);
    let mut admitted = started("tv", "p1", 1);
    if let PlayoutEvent::PlayoutStarted { content_tags, .. } = &mut admitted {
        *content_tags = tags(&["movies", "sports"]);
    }
    given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command), 1)
        .then_filed(vec![admitted]);
}

#[test]
fn given_unknown_content_when_started_then_it_is_not_entitled() {
    let mut command = heartbeat(HeartbeatKind::Start, "tv", "p1");
    command.content_tags = None;
    given(&[entitled()])
        .when(PlayoutCommand::Heartbeat(command.clone()), 1)
        .then_filed(vec![stopped(
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
fn given_an_entitlement_that_lapsed_since_start_when_beat_then_it_stops_and_frees_the_slot() {
    let state = given(&[sports_until(5 * MINUTE), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 600_000), 10 * MINUTE)
        .then_filed(vec![stopped(
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
fn given_a_renewal_then_the_tag_keeps_one_record_with_the_new_end() {
    let state = given(&[sports_until(DAY)])
        .when(update(&[("sports", 2 * DAY)], None), MINUTE)
        .then_filed(vec![PlayoutEvent::EntitlementsUpdated {
            entitlements: vec![Entitlement {
                tag: tag("sports"),
                valid_until: at(2 * DAY),
            }],
            concurrency_limit: None,
            at: at(MINUTE),
        }]);
    assert_eq!(state.entitlements.len(), 1);
    assert_eq!(state.entitlements[&tag("sports")], at(2 * DAY));
    assert_eq!(
        state.held_tags(at(DAY + 1)).collect::<Vec<_>>(),
        vec![&tag("sports")]
    );
    given_state(state)
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
        vec![(tag("movies"), at(3 * DAY))]
    );
}

#[test]
fn bad_input_is_rejected_with_its_rule() {
    // A bad id is refused where it is parsed, so no command can carry one to the decider.
    assert_eq!(
        DeviceId::parse("tv.1"),
        Err(IdError::InvalidCharacter {
            kind: "device_id",
            value: "tv.1".into(),
            found: '.',
        })
    );
    assert_eq!(
        PlayoutId::parse(""),
        Err(IdError::Empty { kind: "playout_id" })
    );
    assert_eq!(
        Tag::parse("sports>"),
        Err(IdError::InvalidCharacter {
            kind: "tag",
            value: "sports>".into(),
            found: '>',
        })
    );
    given(&[])
        .when(update(&[], Some(0)), 0)
        .then_refused(PlayoutError::InvalidConcurrencyLimit(0));
    given(&[])
        .when(update(&[], Some(MAX_CONCURRENCY_LIMIT + 1)), 0)
        .then_refused(PlayoutError::InvalidConcurrencyLimit(
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
        .then_refused(PlayoutError::TooManyEntitlements {
            count: MAX_ENTITLEMENTS + 1,
        });
    let state = given(&[])
        .when(update(&all[..MAX_ENTITLEMENTS], None), 0)
        .then_answer_state();
    assert_eq!(state.entitlements.len(), MAX_ENTITLEMENTS);
    // One more distinct tag overflows; a renewal or a lapsed tag does not.
    given_state(state.clone())
        .when(update(&[("extra", DAY)], None), 1)
        .then_refused(PlayoutError::TooManyEntitlements {
            count: MAX_ENTITLEMENTS + 1,
        });
    given_state(state.clone())
        .when(update(&[("tag-0", 2 * DAY)], None), 1)
        .then_answer_state();
    given_state(state)
        .when(update(&[("tag-0", 0), ("extra", DAY)], None), 1)
        .then_answer_state();
}
