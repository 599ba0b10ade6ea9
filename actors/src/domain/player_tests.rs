//! Given/when/then tests of the player decider, and its invariants as property tests. That the
//! events rebuild the state, read back from storage or from the journal, is checked in
//! `runtime::kinds::round_trips`.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::domain::decider::Given;

const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

fn policy() -> PlayerPolicy {
    PlayerPolicy::default()
}

fn at(millis: u64) -> Timestamp {
    Timestamp::from_millis(millis)
}

fn tracks(count: usize) -> Vec<Track> {
    (0..count)
        .map(|index| Track {
            track_id: format!("track-{index}"),
            artist: format!("Artist {}", index % 4),
        })
        .collect()
}

fn start_with(tracks: Vec<Track>, seed: Option<u64>, restart: bool) -> PlayerCommand {
    PlayerCommand::Start(StartPlaylist {
        user_id: UserId::parse("user-1").unwrap(),
        playlist_id: PlaylistId::parse("playlist-1").unwrap(),
        tracks,
        seed,
        restart,
        other_sessions: None,
    })
}

/// A start of a new session, the listener's other sessions last touched at `others`.
fn start_beside(others: &[u64], restart: bool) -> PlayerCommand {
    let PlayerCommand::Start(start) = start_with(tracks(3), Some(42), restart) else {
        unreachable!("start_with makes a start")
    };
    PlayerCommand::Start(StartPlaylist {
        other_sessions: Some(others.iter().map(|at| Timestamp(*at)).collect()),
        ..start
    })
}

#[test]
fn a_new_session_beyond_the_listeners_limit_is_refused_until_one_lapses() {
    let policy = PlayerPolicy {
        max_sessions: 2,
        session_ttl: Duration::from_secs(3600),
        ..PlayerPolicy::default()
    };
    let hour = 3_600_000;
    // Given two other sessions live, when a new one starts, then it is refused with the limit.
    let refused = policy
        .decide(&start_beside(&[10, 20], false), &None, Timestamp(30))
        .unwrap_err();
    assert!(
        matches!(refused, PlayerError::TooManySessions { limit: 2, .. }),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("1h after its last use"),
        "{refused}"
    );
    // Given one of them lapsed, then the new one starts.
    let events = policy
        .decide(
            &start_beside(&[10, hour + 20], false),
            &None,
            Timestamp(hour + 15),
        )
        .unwrap();
    assert!(matches!(
        events.as_slice(),
        [PlayerEvent::SessionStarted { .. }]
    ));
    // Given the listener's own session is live, then resuming or restarting it adds none, so
    // the limit does not apply.
    let own = <PlayerPolicy as crate::domain::decider::Decider>::fold(
        None,
        &policy.decide(&start(3), &None, Timestamp(25)).unwrap(),
    );
    for restart in [false, true] {
        assert!(
            policy
                .decide(&start_beside(&[10, 20], restart), &own, Timestamp(30))
                .is_ok()
        );
    }
    // Given its own session lapsed, then starting it again is a new session, counted.
    assert!(matches!(
        policy.decide(
            &start_beside(&[hour, hour], false),
            &own,
            Timestamp(hour + 30)
        ),
        Err(PlayerError::TooManySessions { .. })
    ));
    // Not looked up: no limit.
    assert!(policy.decide(&start(3), &None, Timestamp(30)).is_ok());
}

fn start(count: usize) -> PlayerCommand {
    start_with(tracks(count), Some(42), false)
}

fn started(count: usize, when: u64) -> PlayerEvent {
    PlayerEvent::SessionStarted {
        tracks: tracks(count),
        seed: 42,
        recent_skips: Vec::new(),
        at: at(when),
    }
}

/// The default policy, for the shared given/when/then harness.
static POLICY: PlayerPolicy = PlayerPolicy {
    skip_limit: 3,
    skip_window: Duration::from_secs(60 * 60),
    session_ttl: Duration::from_secs(30 * 24 * 60 * 60),
    max_sessions: crate::domain::player::DEFAULT_MAX_SESSIONS,
};

/// given(events).when(command, now) → the decision, under the default policy.
fn given(events: &[PlayerEvent]) -> Given<'static, PlayerPolicy> {
    Given::new(&POLICY, events)
}

fn given_state(state: PlayerState) -> Given<'static, PlayerPolicy> {
    Given::state(&POLICY, state)
}

#[test]
fn the_harness_policy_is_the_default() {
    assert_eq!(POLICY, PlayerPolicy::default());
}

/// The track the session would play now, read through the public view.
fn current_id(state: &PlayerState) -> String {
    state
        .as_ref()
        .and_then(Session::current_track)
        .map(|track| track.track_id.clone())
        .expect("a current track")
}

#[test]
fn given_no_session_when_started_then_the_session_starts_with_the_seed() {
    given(&[])
        .when(start(12), 1_000)
        .then(vec![started(12, 1_000)]);
}

#[test]
fn given_no_seed_when_started_then_the_seed_comes_from_the_ids() {
    let command = start_with(tracks(5), None, false);
    let expected_seed = default_seed(
        &UserId::parse("user-1").unwrap(),
        &PlaylistId::parse("playlist-1").unwrap(),
    );
    given(&[])
        .when(command, 5)
        .then(vec![PlayerEvent::SessionStarted {
            tracks: tracks(5),
            seed: expected_seed,
            recent_skips: Vec::new(),
            at: at(5),
        }]);
    assert_ne!(
        default_seed(
            &UserId::parse("user-2").unwrap(),
            &PlaylistId::parse("playlist-1").unwrap()
        ),
        expected_seed,
        "another listener gets another order"
    );
}

#[test]
fn the_order_is_deterministic_per_seed_and_a_permutation() {
    let order = shuffled_order(12, 7);
    assert_eq!(order, shuffled_order(12, 7));
    assert_ne!(order, shuffled_order(12, 8));
    assert_ne!(
        order,
        (0..12).collect::<Vec<u32>>(),
        "12 tracks are shuffled"
    );
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..12).collect::<Vec<u32>>());
}

/// Pinned on purpose: a stored session keeps only its seed and re-derives its order on load
/// (`evolve`), and a session without a seed takes `default_seed`. Changing either function
/// silently reorders every live session mid-playlist; if one must change, version the seed
/// instead of editing these values.
#[test]
fn the_shuffle_and_the_default_seed_give_pinned_outputs() {
    assert_eq!(shuffled_order(10, 42), vec![0, 9, 5, 8, 6, 4, 7, 2, 1, 3]);
    assert_eq!(
        shuffled_order(12, 7),
        vec![10, 11, 5, 1, 7, 4, 8, 2, 9, 6, 0, 3]
    );
    assert_eq!(shuffled_order(5, 0), vec![2, 3, 1, 4, 0]);
    assert_eq!(shuffled_order(1, 7), vec![0]);
    assert_eq!(shuffled_order(0, 7), Vec::<u32>::new());
    let seed = |user: &str, playlist: &str| {
        default_seed(
            &UserId::parse(user).unwrap(),
            &PlaylistId::parse(playlist).unwrap(),
        )
    };
    assert_eq!(seed("ann", "road-trip"), 0xb72e_2380_67cc_d5f1);
    assert_eq!(seed("bob", "road-trip"), 0x23b7_77c1_2ce4_35e5);
    assert_eq!(seed("user-1", "playlist-1"), 0xd067_d6f3_0e29_1755);
}

#[test]
fn given_a_started_session_then_the_first_track_is_the_first_of_the_seeded_order() {
    let state = given(&[started(12, 0)]).into_state();
    let first = shuffled_order(12, 42)[0] as usize;
    assert_eq!(current_id(&state), tracks(12)[first].track_id);
}

#[test]
fn given_a_live_session_when_started_again_then_it_resumes_where_it_was() {
    let state = given(&[started(12, 0)])
        .when(PlayerCommand::Next, MINUTE)
        .then(vec![PlayerEvent::TrackAdvanced {
            track_id: tracks(12)[shuffled_order(12, 42)[0] as usize]
                .track_id
                .clone(),
            skipped: false,
            at: at(MINUTE),
        }]);
    let resumed = given_state(state.clone())
        .when(start(12), 20 * DAY)
        .then(vec![PlayerEvent::SessionResumed { at: at(20 * DAY) }]);
    let resumed = resumed.unwrap();
    assert_eq!(resumed.position, 1);
    assert_eq!(resumed.last_touched_at, at(20 * DAY));
}

#[test]
fn given_a_live_session_when_started_with_restart_then_it_begins_again() {
    let state = given(&[
        started(12, 0),
        PlayerEvent::TrackAdvanced {
            track_id: "x".into(),
            skipped: false,
            at: at(1),
        },
    ])
    .when(start_with(tracks(12), Some(42), true), 2)
    .then(vec![started(12, 2)]);
    assert_eq!(state.unwrap().position, 0);
}

#[test]
fn given_recent_skips_when_restarted_then_the_skips_still_count() {
    let skip = |minute: u64| PlayerEvent::TrackAdvanced {
        track_id: format!("track-{minute}"),
        skipped: true,
        at: at(minute * MINUTE),
    };
    given(&[started(12, 0), skip(1), skip(50)])
        .when(start_with(tracks(12), Some(42), true), 70 * MINUTE)
        .then(vec![PlayerEvent::SessionStarted {
            tracks: tracks(12),
            seed: 42,
            // The skip at minute 1 has left the window; the one at minute 50 has not.
            recent_skips: vec![at(50 * MINUTE)],
            at: at(70 * MINUTE),
        }]);
}

#[test]
fn given_a_session_untouched_past_its_ttl_when_started_then_it_begins_fresh() {
    let ttl = policy().session_ttl.as_millis() as u64;
    given(&[started(12, 0)])
        .when(start(12), ttl)
        .then(vec![started(12, ttl)]);
}

#[test]
fn given_a_session_touched_recently_then_its_ttl_slides() {
    let ttl = policy().session_ttl.as_millis() as u64;
    let state = given(&[
        started(12, 0),
        PlayerEvent::SessionResumed { at: at(ttl - 1) },
    ])
    .into_state();
    assert!(state.as_ref().unwrap().is_live(at(2 * ttl - 2), &policy()));
    assert!(!state.as_ref().unwrap().is_live(at(2 * ttl - 1), &policy()));
}

#[test]
fn given_an_expired_session_when_next_then_there_is_no_session() {
    let ttl = policy().session_ttl.as_millis() as u64;
    given(&[started(3, 0)])
        .when(PlayerCommand::Next, ttl + 1)
        .then_refused(PlayerError::NoSession);
}

#[test]
fn given_no_session_when_next_or_skip_then_there_is_no_session() {
    given(&[])
        .when(PlayerCommand::Next, 0)
        .then_refused(PlayerError::NoSession);
    given(&[])
        .when(PlayerCommand::Skip, 0)
        .then_refused(PlayerError::NoSession);
}

#[test]
fn given_bad_playlists_when_started_then_they_are_rejected() {
    given(&[])
        .when(start(0), 0)
        .then_refused(PlayerError::InvalidTracks(TrackError::EmptyPlaylist));
    given(&[])
        .when(start(MAX_TRACKS + 1), 0)
        .then_refused(PlayerError::InvalidTracks(TrackError::TooManyTracks(
            MAX_TRACKS + 1,
        )));
    let mut twice = tracks(3);
    twice[2].track_id = "track-0".into();
    given(&[])
        .when(start_with(twice, None, false), 0)
        .then_refused(PlayerError::InvalidTracks(TrackError::DuplicateTrack(
            "track-0".into(),
        )));
    let mut unnamed = tracks(2);
    unnamed[1].track_id.clear();
    given(&[])
        .when(start_with(unnamed, None, false), 0)
        .then_refused(PlayerError::InvalidTracks(TrackError::EmptyTrackId));
}

#[test]
fn given_the_last_track_when_next_then_the_session_completes() {
    let order = shuffled_order(2, 42);
    let state = given(&[started(2, 0)])
        .when(PlayerCommand::Next, 1)
        .then(vec![PlayerEvent::TrackAdvanced {
            track_id: tracks(2)[order[0] as usize].track_id.clone(),
            skipped: false,
            at: at(1),
        }]);
    let state = given_state(state).when(PlayerCommand::Next, 2).then(vec![
        PlayerEvent::TrackAdvanced {
            track_id: tracks(2)[order[1] as usize].track_id.clone(),
            skipped: false,
            at: at(2),
        },
        PlayerEvent::SessionCompleted { at: at(2) },
    ]);
    let session = state.clone().unwrap();
    assert_eq!(session.status, SessionStatus::Completed);
    assert_eq!(session.current_track(), None);
    assert_eq!(session.tracks_remaining(), 0);
    // A completed session stays completed: nothing more to play or skip.
    given_state(state.clone())
        .when(PlayerCommand::Next, 3)
        .then(vec![]);
    given_state(state).when(PlayerCommand::Skip, 3).then(vec![]);
}

#[test]
fn given_skips_up_to_the_limit_when_one_more_then_it_is_denied_with_the_wait() {
    let mut state = given(&[started(12, 0)]).into_state();
    for minute in 1..=3 {
        let current = current_id(&state);
        state = given_state(state)
            .when(PlayerCommand::Skip, minute * MINUTE)
            .then(vec![PlayerEvent::TrackAdvanced {
                track_id: current,
                skipped: true,
                at: at(minute * MINUTE),
            }]);
    }
    let current = current_id(&state);
    let state = given_state(state)
        .when(PlayerCommand::Skip, 10 * MINUTE)
        .then(vec![PlayerEvent::SkipDenied {
            // The skip at minute 1 leaves the 60-minute window at minute 61.
            retry_after: Duration::from_millis(51 * MINUTE),
            at: at(10 * MINUTE),
        }]);
    assert_eq!(current_id(&state), current, "a denied skip keeps the track");
    assert_eq!(
        state
            .as_ref()
            .unwrap()
            .skips_used(at(10 * MINUTE), &policy()),
        3
    );
}

#[test]
fn given_skips_at_the_limit_when_the_window_rolls_then_one_more_is_granted() {
    let events = [
        started(12, 0),
        PlayerEvent::TrackAdvanced {
            track_id: "a".into(),
            skipped: true,
            at: at(MINUTE),
        },
        PlayerEvent::TrackAdvanced {
            track_id: "b".into(),
            skipped: true,
            at: at(2 * MINUTE),
        },
        PlayerEvent::TrackAdvanced {
            track_id: "c".into(),
            skipped: true,
            at: at(3 * MINUTE),
        },
    ];
    let state = given(&events).into_state();
    let current = current_id(&state);
    given(&events)
        .when(PlayerCommand::Skip, 61 * MINUTE)
        .then(vec![PlayerEvent::TrackAdvanced {
            track_id: current,
            skipped: true,
            at: at(61 * MINUTE),
        }]);
    // One minute earlier the window still held all three.
    let (_, denied) = given(&events)
        .when(PlayerCommand::Skip, 61 * MINUTE - 1)
        .decision();
    assert!(matches!(
        denied.as_deref(),
        Ok([PlayerEvent::SkipDenied { retry_after, .. }]) if *retry_after == Duration::from_millis(1)
    ));
}

#[test]
fn given_skipping_disabled_when_skip_then_it_is_denied_for_a_whole_window() {
    let disabled = PlayerPolicy {
        skip_limit: 0,
        ..policy()
    };
    let state = given(&[started(12, 0)]).into_state();
    let current = current_id(&state);
    let state = Given::state(&disabled, state)
        .when(PlayerCommand::Skip, MINUTE)
        .then(vec![PlayerEvent::SkipDenied {
            retry_after: disabled.skip_window,
            at: at(MINUTE),
        }]);
    assert_eq!(current_id(&state), current, "a denied skip keeps the track");
    // Finishing a track still plays on.
    Given::state(&disabled, state)
        .when(PlayerCommand::Next, 2 * MINUTE)
        .then(vec![PlayerEvent::TrackAdvanced {
            track_id: current,
            skipped: false,
            at: at(2 * MINUTE),
        }]);
}

#[test]
fn a_policy_with_a_zero_window_or_ttl_is_refused_and_a_zero_skip_limit_is_not() {
    assert_eq!(policy().validate(), Ok(()));
    let disabled = PlayerPolicy {
        skip_limit: 0,
        ..policy()
    };
    assert_eq!(disabled.validate(), Ok(()));
    let no_window = PlayerPolicy {
        skip_window: Duration::from_micros(999),
        ..policy()
    };
    assert_eq!(no_window.validate(), Err(PlayerPolicyError::ZeroSkipWindow));
    let no_ttl = PlayerPolicy {
        session_ttl: Duration::ZERO,
        ..policy()
    };
    assert_eq!(no_ttl.validate(), Err(PlayerPolicyError::ZeroSessionTtl));
    let ttl_inside_window = PlayerPolicy {
        session_ttl: Duration::from_secs(60),
        skip_window: Duration::from_secs(61),
        ..policy()
    };
    assert!(matches!(
        ttl_inside_window.validate(),
        Err(PlayerPolicyError::TtlShorterThanSkipWindow { .. })
    ));
}

#[test]
fn finished_tracks_do_not_count_as_skips() {
    let state = given(&[started(12, 0)]).into_state();
    let after_five = (1..=5).fold(state, |state, minute| {
        let events = policy()
            .decide(&PlayerCommand::Next, &state, at(minute * MINUTE))
            .expect("next accepted");
        events.iter().fold(state, evolve)
    });
    let session = after_five.as_ref().unwrap();
    assert_eq!(session.position, 5);
    assert_eq!(session.skips_used(at(6 * MINUTE), &policy()), 0);
    let decided = policy()
        .decide(&PlayerCommand::Skip, &after_five, at(6 * MINUTE))
        .unwrap();
    assert!(matches!(
        decided.as_slice(),
        [PlayerEvent::TrackAdvanced { skipped: true, .. }]
    ));
}

#[test]
fn the_view_shows_played_tracks_in_order_and_not_the_upcoming_ones() {
    let order = shuffled_order(5, 42);
    let state = given(&[
        started(5, 0),
        PlayerEvent::TrackAdvanced {
            track_id: tracks(5)[order[0] as usize].track_id.clone(),
            skipped: false,
            at: at(1),
        },
        PlayerEvent::TrackAdvanced {
            track_id: tracks(5)[order[1] as usize].track_id.clone(),
            skipped: true,
            at: at(2),
        },
    ])
    .into_state()
    .unwrap();
    let played: Vec<&str> = state
        .played_tracks()
        .map(|track| track.track_id.as_str())
        .collect();
    assert_eq!(
        played,
        vec![
            tracks(5)[order[0] as usize].track_id.as_str(),
            tracks(5)[order[1] as usize].track_id.as_str()
        ]
    );
    assert_eq!(
        state.current_track().unwrap().track_id,
        tracks(5)[order[2] as usize].track_id
    );
    assert_eq!(state.tracks_remaining(), 3);
    assert_eq!(state.skips_used(at(2), &policy()), 1);
}

#[derive(Debug, Clone)]
enum Step {
    Next,
    Skip,
    Start { restart: bool },
}

fn step() -> impl Strategy<Value = (u64, Step)> {
    (
        0..30 * MINUTE,
        prop_oneof![
            4 => Just(Step::Next),
            4 => Just(Step::Skip),
            1 => any::<bool>().prop_map(|restart| Step::Start { restart }),
        ],
    )
}

/// Runs `steps` from a fresh 20-track session under the default policy; returns every
/// accepted event.
fn run(steps: &[(u64, Step)]) -> Vec<PlayerEvent> {
    run_under(&policy(), 20, steps)
}

/// Runs `steps` under `policy` from a fresh session of `count` tracks started at 0.
fn run_under(policy: &PlayerPolicy, count: usize, steps: &[(u64, Step)]) -> Vec<PlayerEvent> {
    let mut now = 0;
    let mut events = vec![started(count, 0)];
    let mut state = given(&events).into_state();
    for (gap, step) in steps {
        now += gap;
        let command = match step {
            Step::Next => PlayerCommand::Next,
            Step::Skip => PlayerCommand::Skip,
            Step::Start { restart } => start_with(tracks(count), Some(42), *restart),
        };
        if let Ok(decided) = policy.decide(&command, &state, at(now)) {
            state = decided.iter().fold(state, evolve);
            events.extend(decided);
        }
    }
    events
}

/// Independent of the decider: no rolling window of `policy.skip_window` holds more than
/// `policy.skip_limit` granted skips.
fn check_skips_within_limit(
    policy: &PlayerPolicy,
    events: &[PlayerEvent],
) -> Result<(), TestCaseError> {
    let granted: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            PlayerEvent::TrackAdvanced {
                skipped: true, at, ..
            } => Some(at.as_millis()),
            _ => None,
        })
        .collect();
    let window = policy.skip_window.as_millis() as u64;
    for end in &granted {
        let in_window = granted
            .iter()
            .filter(|at| **at <= *end && end - **at < window)
            .count();
        prop_assert!(
            in_window <= policy.skip_limit as usize,
            "{in_window} skips in one window under {policy:?}"
        );
    }
    Ok(())
}

/// Any policy, zeros included: `decide` must not panic on what `validate` would refuse either
/// (a node must never die on a policy, and the deciders are used beyond the config path).
fn any_policy() -> impl Strategy<Value = PlayerPolicy> {
    let millis = || prop_oneof![1 => Just(0u64), 4 => 1..10_000u64];
    (0..5u32, millis(), millis()).prop_map(|(skip_limit, window, ttl)| PlayerPolicy {
        skip_limit,
        skip_window: Duration::from_millis(window),
        session_ttl: Duration::from_millis(ttl),
        max_sessions: 1,
    })
}

/// Steps a few seconds apart, so skips fall in and out of second-long windows and sessions
/// outlive or outlast second-long TTLs.
fn short_step() -> impl Strategy<Value = (u64, Step)> {
    (
        0..3_000u64,
        prop_oneof![
            4 => Just(Step::Next),
            4 => Just(Step::Skip),
            1 => any::<bool>().prop_map(|restart| Step::Start { restart }),
        ],
    )
}

proptest! {
    #[test]
    fn skips_granted_in_any_window_never_exceed_the_limit(
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        let events = run(&steps);
        check_skips_within_limit(&policy(), &events)?;
    }

    #[test]
    fn the_decider_never_panics_and_keeps_the_limit_under_any_policy(
        policy in any_policy(),
        count in 1..6usize,
        steps in proptest::collection::vec(short_step(), 0..60),
    ) {
        let events = run_under(&policy, count, &steps);
        check_skips_within_limit(&policy, &events)?;
    }

    #[test]
    fn every_track_is_played_at_most_once_per_pass(
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        let events = run(&steps);
        let mut played_this_pass = HashSet::new();
        for event in &events {
            match event {
                PlayerEvent::SessionStarted { .. } => played_this_pass.clear(),
                PlayerEvent::TrackAdvanced { track_id, .. } => {
                    prop_assert!(played_this_pass.insert(track_id.clone()), "{track_id} twice");
                }
                PlayerEvent::SessionCompleted { .. } => {
                    prop_assert_eq!(played_this_pass.len(), 20, "completed before every track");
                }
                _ => {}
            }
        }
    }
}
