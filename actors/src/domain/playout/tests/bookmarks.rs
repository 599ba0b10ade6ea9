//! Which views the viewing history stores: START, END, a STOP of a BEAT, every Nth BEAT of a
//! playout, the first BEAT in a new history bucket, a BEAT naming another content, and the
//! latest view of a slot released before it was stored; the others stay in the slot, which
//! readers overlay ([`PlayoutState::live_views`]).

use super::*;

/// A BEAT of `film-1` on (`device`, `playout`), answered with the normal interval.
fn recorded(
    device: &str,
    playout: &str,
    position_ms: u64,
    when: u64,
    bookmarked: bool,
) -> PlayoutEvent {
    PlayoutEvent::HeartbeatRecorded {
        device_id: device_id(device),
        playout_id: playout_id(playout),
        content_id: film(),
        position_ms,
        next_heartbeat: interval(),
        at: at(when),
        bookmarked,
    }
}

/// START at minute 0, then `beats` BEATs one minute apart that the history did not store.
fn started_with_unstored_beats(beats: u64) -> Vec<PlayoutEvent> {
    let mut events = vec![entitled(), started("tv", "p1", 0)];
    events.extend(
        (1..=beats).map(|minute| recorded("tv", "p1", minute * 1_000, minute * MINUTE, false)),
    );
    events
}

#[test]
fn given_a_start_and_eight_unstored_beats_when_the_ninth_beat_then_it_is_not_stored() {
    given(&started_with_unstored_beats(8))
        .when(beat("tv", "p1", 9_000), 9 * MINUTE)
        .then_filed(vec![recorded("tv", "p1", 9_000, 9 * MINUTE, false)]);
}

#[test]
fn given_a_start_and_nine_unstored_beats_when_the_tenth_beat_then_it_is_stored_and_counting_restarts()
 {
    let state = given(&started_with_unstored_beats(9))
        .when(beat("tv", "p1", 10_000), 10 * MINUTE)
        .then_filed(vec![recorded("tv", "p1", 10_000, 10 * MINUTE, true)]);

    assert_eq!(state.slots[0].beats_unsaved, 0);
    assert_eq!(state.slots[0].bookmarked_at, at(10 * MINUTE));
    assert_eq!(state.live_views().count(), 0, "nothing left to overlay");
    given_state(state)
        .when(beat("tv", "p1", 11_000), 11 * MINUTE)
        .then_filed(vec![recorded("tv", "p1", 11_000, 11 * MINUTE, false)]);
}

#[test]
fn given_a_bookmark_stored_yesterday_when_the_first_beat_of_a_new_bucket_then_it_is_stored() {
    let history = [sports_until(2 * DAY), started("tv", "p1", DAY - 5 * MINUTE)];
    given(&history)
        .when(beat("tv", "p1", 600_000), DAY + 5 * MINUTE)
        .then_filed(vec![recorded("tv", "p1", 600_000, DAY + 5 * MINUTE, true)]);
}

#[test]
fn given_a_policy_storing_every_beat_when_beats_then_each_is_stored() {
    let every = PlayoutPolicy {
        bookmark_every_beats: 1,
        ..policy()
    };
    let state = Given::new(&every, &[entitled(), started("tv", "p1", 0)])
        .when(beat("tv", "p1", 1_000), MINUTE)
        .then(vec![recorded("tv", "p1", 1_000, MINUTE, true)]);
    Given::state(&every, state)
        .when(beat("tv", "p1", 2_000), 2 * MINUTE)
        .then(vec![recorded("tv", "p1", 2_000, 2 * MINUTE, true)]);
}

#[test]
fn given_a_zero_bookmark_interval_then_the_policy_is_refused() {
    let zero = PlayoutPolicy {
        bookmark_every_beats: 0,
        ..policy()
    };
    assert_eq!(zero.validate(), Err(PlayoutPolicyError::ZeroBookmarkEvery));
    let no_bucket = PlayoutPolicy {
        bookmark_bucket: Duration::ZERO,
        ..policy()
    };
    assert_eq!(
        no_bucket.validate(),
        Err(PlayoutPolicyError::ZeroBookmarkBucket)
    );
}

#[test]
fn given_unstored_beats_then_the_slot_holds_the_latest_view_for_readers() {
    let state = given(&started_with_unstored_beats(3)).into_state();

    assert_eq!(
        state.live_views().collect::<Vec<_>>(),
        vec![Bookmark {
            content_id: film(),
            position_ms: 3_000,
            at: at(3 * MINUTE),
            view_ended: false,
        }]
    );
    // Every heartbeat is a view a reader sees; only some are stored.
    let unstored = recorded("tv", "p1", 3_000, 3 * MINUTE, false);
    assert!(unstored.bookmark().is_some());
    assert_eq!(unstored.stored_bookmark(), None);
    let stored = recorded("tv", "p1", 3_000, 3 * MINUTE, true);
    assert_eq!(stored.stored_bookmark(), stored.bookmark());
}

#[test]
fn given_a_slot_with_unstored_beats_when_its_device_starts_another_playout_then_its_view_is_released()
 {
    let given_events = started_with_unstored_beats(3);
    let before = given(&given_events).into_state();

    let after = given(&given_events)
        .when(start("tv", "p2"), 4 * MINUTE)
        .then_answer(proceed(jittered("p2")));

    assert_eq!(
        released_views(&before.slots, &after),
        vec![Bookmark {
            content_id: film(),
            position_ms: 3_000,
            at: at(3 * MINUTE),
            view_ended: false,
        }]
    );
}

#[test]
fn given_a_slot_with_unstored_beats_when_it_expires_then_its_view_is_released() {
    let given_events = started_with_unstored_beats(2);
    let before = given(&given_events).into_state();
    let timeout = policy().slot_timeout.as_millis() as u64;

    let after = given(&given_events)
        .when(start("phone", "p2"), 2 * MINUTE + timeout)
        .then_answer(proceed(jittered("p2")));

    assert_eq!(
        released_views(&before.slots, &after)
            .iter()
            .map(|view| (view.position_ms, view.at))
            .collect::<Vec<_>>(),
        [(2_000, at(2 * MINUTE))]
    );
}

#[test]
fn given_a_slot_whose_latest_view_is_stored_when_it_is_released_then_nothing_more_is_stored() {
    let mut given_events = started_with_unstored_beats(2);
    given_events.push(recorded("tv", "p1", 3_000, 3 * MINUTE, true));
    let before = given(&given_events).into_state();

    let after = given(&given_events)
        .when(end("tv", "p1", 4_000), 4 * MINUTE)
        .then_answer(proceed(interval()));

    assert!(after.slots.is_empty());
    assert_eq!(released_views(&before.slots, &after), vec![]);
}

#[test]
fn given_a_slot_when_a_beat_names_another_content_then_it_is_stored_and_the_slot_keeps_its_own_view()
 {
    let other = ContentId::parse("film-2").unwrap();
    let command = PlayoutCommand::Heartbeat(Heartbeat {
        content_id: other.clone(),
        position_ms: 5_000,
        ..heartbeat(HeartbeatKind::Beat, "tv", "p1")
    });

    let state = given(&started_with_unstored_beats(2))
        .when(command, 3 * MINUTE)
        .then_filed(vec![PlayoutEvent::HeartbeatRecorded {
            device_id: device_id("tv"),
            playout_id: playout_id("p1"),
            content_id: other,
            position_ms: 5_000,
            next_heartbeat: interval(),
            at: at(3 * MINUTE),
            bookmarked: true,
        }]);

    let views: Vec<_> = state
        .live_views()
        .map(|view| (view.content_id, view.position_ms))
        .collect();
    assert_eq!(views, [(film(), 2_000)]);
    assert_eq!(state.slots[0].last_heartbeat_at, at(3 * MINUTE));
}

#[test]
fn given_a_start_when_a_beat_comes_in_the_same_millisecond_then_it_is_stored() {
    // A reader tells views apart by time: an unstored view in the millisecond of the stored
    // one could not be overlaid on it.
    given(&[entitled(), started("tv", "p1", MINUTE)])
        .when(beat("tv", "p1", 5_000), MINUTE)
        .then_filed(vec![recorded("tv", "p1", 5_000, MINUTE, true)]);
}
