//! Invariants over generated runs of heartbeats and entitlement updates: slots never exceed
//! the limit, every STOP names a rule that was really broken, and the first interval stays
//! within its bounds; and the decider neither panics nor breaks those invariants under any
//! policy [`PlayoutPolicy::validate`] accepts. That the events rebuild the state, read back
//! from storage or from the journal, is checked in `runtime::kinds::round_trips`.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;

const DEVICES: [&str; 5] = ["d0", "d1", "d2", "d3", "d4"];
const PLAYOUTS: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
const TAGS: [&str; 3] = ["sports", "movies", "kids"];

/// The catalog of the generated runs: content 3 is unknown.
fn catalog(content: usize) -> (ContentId, Option<BTreeSet<Tag>>) {
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
                device_id: device_id(DEVICES[*device]),
                playout_id: playout_id(PLAYOUTS[*playout]),
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
                .map(|(index, minutes)| Entitlement {
                    tag: tag(TAGS[*index]),
                    valid_until: at(now.saturating_add_signed(minutes * MINUTE as i64)),
                })
                .collect(),
            concurrency_limit: *concurrency_limit,
        }),
    }
}

/// Independent of the decider: may content with `content_tags` be watched at `now`?
fn really_entitled(state: &PlayoutState, content_tags: &Option<BTreeSet<Tag>>, now: u64) -> bool {
    let Some(content_tags) = content_tags else {
        return false;
    };
    state
        .entitlements
        .iter()
        .any(|(tag, until)| until.as_millis() > now && content_tags.contains(tag))
}

/// Independent of the decider: the slots holding a seat at `now`.
fn really_live<'a>(state: &'a PlayoutState, policy: &PlayoutPolicy, now: u64) -> Vec<&'a Slot> {
    let timeout = policy.slot_timeout.as_millis() as u64;
    state
        .slots
        .iter()
        .filter(|slot| now.saturating_sub(slot.last_heartbeat_at.as_millis()) < timeout)
        .collect()
}

/// Decides every step under `policy` against the state folded so far, checking the per-step
/// invariants.
fn run(
    policy: &PlayoutPolicy,
    monotonic: bool,
    steps: &[(u64, Step)],
) -> Result<(), TestCaseError> {
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
            prop_assert_eq!(answers[0].0, &heartbeat.playout_id);
            for event in &decided {
                let PlayoutEvent::PlayoutStopped { reason, .. } = event else {
                    continue;
                };
                let entitled = really_entitled(&state, &heartbeat.content_tags, now);
                match reason {
                    StopReason::NotEntitled => prop_assert!(!entitled, "entitled, yet stopped"),
                    StopReason::ConcurrencyLimit => {
                        prop_assert!(entitled, "entitlement is checked first");
                        let others = really_live(&state, policy, now)
                            .into_iter()
                            .filter(|slot| slot.device_id != heartbeat.device_id)
                            .count();
                        let limit = state.concurrency_limit(policy) as usize;
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
                let others = really_live(&state, policy, now)
                    .into_iter()
                    .filter(|slot| {
                        slot.device_id != heartbeat.device_id
                            && slot.playout_id != heartbeat.playout_id
                    })
                    .count();
                if others < state.concurrency_limit(policy) as usize {
                    prop_assert_eq!(
                        decision(&decided).map(|answer| answer.action),
                        Some(HeartbeatAction::Continue)
                    );
                }
            }
        }
        state = decided.iter().fold(state, evolve);
        events.extend(decided);
        let limit = state.concurrency_limit(policy) as usize;
        prop_assert!(
            really_live(&state, policy, now).len() <= limit,
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
    Ok(())
}

/// Keeps `view` in `history` unless it is older than the one kept (the viewing history's rule;
/// a released view also yields to one of the same millisecond).
fn keep(history: &mut BTreeMap<ContentId, Bookmark>, view: Bookmark, released: bool) {
    if history
        .get(&view.content_id)
        .is_none_or(|kept| view.at > kept.at || (!released && view.at == kept.at))
    {
        history.insert(view.content_id.clone(), view);
    }
}

/// Decides every step under `policy` and checks that what a reader of the viewing history
/// sees (the stored bookmarks, as `UserRecords` stores them, with the slots' live views
/// overlaid, as the listing does) is what storing every view would give (the oracle: every
/// event's `bookmark()`), times running backwards and colliding included.
fn run_history(
    policy: &PlayoutPolicy,
    monotonic: bool,
    steps: &[(u64, Step)],
) -> Result<(), TestCaseError> {
    let mut now = 0;
    let mut state = initial();
    let mut every_view = BTreeMap::new();
    let mut stored = BTreeMap::new();
    for (index, (time, step)) in steps.iter().enumerate() {
        // Monotonic runs collide in the same millisecond often.
        now = if monotonic {
            now + time / 100_000
        } else {
            *time
        };
        let decided = policy
            .decide(&command(step, now), &state, at(now))
            .map_err(|error| TestCaseError::fail(format!("valid input rejected: {error}")))?;
        let before = state.slots.clone();
        state = decided.iter().fold(state, evolve);
        for view in released_views(&before, &state) {
            keep(&mut stored, view, true);
        }
        for event in &decided {
            if let Some(view) = event.stored_bookmark() {
                keep(&mut stored, view, false);
            }
            if let Some(view) = event.bookmark() {
                keep(&mut every_view, view, false);
            }
        }
        let mut live = BTreeMap::new();
        for view in state.live_views() {
            keep(&mut live, view, false);
        }
        let mut seen = stored.clone();
        for (content, view) in live {
            if seen.get(&content).is_some_and(|kept| view.at > kept.at) {
                seen.insert(content, view);
            }
        }
        prop_assert_eq!(&seen, &every_view, "after step {}", index);
    }
    Ok(())
}

/// Any policy [`PlayoutPolicy::validate`] accepts, drawn from a range that also holds what it
/// refuses (a default limit of 0 or above [`MAX_CONCURRENCY_LIMIT`], a heartbeat interval
/// under 1 ms, a slot timeout not longer than the interval), so the filter is the refusal rule
/// itself. Timeouts reach 40 minutes against steps up to 22 minutes apart (monotonic runs), so
/// slots both expire and survive.
fn any_valid_policy() -> impl Strategy<Value = PlayoutPolicy> {
    (
        0..=MAX_CONCURRENCY_LIMIT + 4,
        0..20 * MINUTE,
        0..40 * MINUTE,
    )
        .prop_map(|(limit, interval, timeout)| PlayoutPolicy {
            default_concurrency_limit: limit,
            heartbeat_interval: Duration::from_millis(interval),
            slot_timeout: Duration::from_millis(timeout),
            ..policy()
        })
        .prop_filter("refused by validate", |policy| policy.validate().is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn live_slots_never_exceed_the_limit_and_every_stop_names_a_broken_rule(
        (monotonic, steps) in run_steps(),
    ) {
        run(&policy(), monotonic, &steps)?;
    }

    #[test]
    fn under_any_valid_policy_the_decider_never_panics_and_keeps_its_invariants(
        policy in any_valid_policy(),
        (monotonic, steps) in run_steps(),
    ) {
        run(&policy, monotonic, &steps)?;
    }

    #[test]
    fn readers_see_every_view_though_only_some_are_stored(
        every in 1..6u32,
        bucket_minutes in 20..200u64,
        (monotonic, steps) in run_steps(),
    ) {
        let policy = PlayoutPolicy {
            bookmark_every_beats: every,
            bookmark_bucket: Duration::from_millis(bucket_minutes * MINUTE),
            ..policy()
        };
        run_history(&policy, monotonic, &steps)?;
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
        let playout = PlayoutId::parse(playout)?;
        let next = policy.first_heartbeat(&playout).as_millis() as u64;
        prop_assert!(next * 2 >= interval_ms && next <= interval_ms);
        prop_assert_eq!(policy.first_heartbeat(&playout).as_millis() as u64, next);
    }
}
