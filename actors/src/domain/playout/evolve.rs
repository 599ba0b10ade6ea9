//! `evolve`: folds one event into the state. Total and policy-free, so replaying the log
//! rebuilds the state whatever the configuration is now.

use std::collections::BTreeMap;

use playhead_proto::ids::Tag;

use super::{Entitlement, MAX_RECENT_DECISIONS, PlayoutEvent, PlayoutState, RecentDecision, Slot};
use crate::domain::time::Timestamp;

/// Upserts `update` into `entitlements` and drops the tags no longer valid at `at`: expired
/// tags cost no room, and a renewal replaces the record instead of adding one.
pub(super) fn merge_entitlements(
    entitlements: &mut BTreeMap<Tag, Timestamp>,
    update: &[Entitlement],
    at: Timestamp,
) {
    for entitlement in update {
        entitlements.insert(entitlement.tag.clone(), entitlement.valid_until);
    }
    entitlements.retain(|_, valid_until| at < *valid_until);
}

pub fn evolve(mut state: PlayoutState, event: &PlayoutEvent) -> PlayoutState {
    match event {
        PlayoutEvent::EntitlementsUpdated {
            entitlements,
            concurrency_limit,
            at,
        } => {
            merge_entitlements(&mut state.entitlements, entitlements, *at);
            if concurrency_limit.is_some() {
                state.concurrency_limit = *concurrency_limit;
            }
        }
        PlayoutEvent::SlotExpired { playout_id, .. }
        | PlayoutEvent::SlotRevoked { playout_id, .. }
        | PlayoutEvent::SlotReclaimed {
            previous_playout_id: playout_id,
            ..
        }
        | PlayoutEvent::PlayoutEnded { playout_id, .. }
        | PlayoutEvent::PlayoutStopped { playout_id, .. } => {
            state.slots.retain(|slot| slot.playout_id != *playout_id);
        }
        PlayoutEvent::PlayoutStarted {
            device_id,
            playout_id,
            content_id,
            position_ms,
            at,
            ..
        } => {
            state
                .slots
                .retain(|slot| slot.device_id != *device_id && slot.playout_id != *playout_id);
            // Grown one at a time (a first push would make room for four): a live user's
            // state is held in memory by its actor.
            state.slots.reserve_exact(1);
            state.slots.push(Slot {
                device_id: device_id.clone(),
                playout_id: playout_id.clone(),
                content_id: content_id.clone(),
                started_at: *at,
                last_heartbeat_at: *at,
                position_ms: *position_ms,
                viewed_at: *at,
                // A START's bookmark is always stored.
                beats_unsaved: 0,
                bookmarked_at: *at,
            });
        }
        PlayoutEvent::HeartbeatRecorded {
            playout_id,
            content_id,
            position_ms,
            at,
            bookmarked,
            ..
        } => {
            if let Some(slot) = state
                .slots
                .iter_mut()
                .find(|slot| slot.playout_id == *playout_id)
            {
                // Out-of-order delivery must not age a slot nor move its position back.
                slot.last_heartbeat_at = slot.last_heartbeat_at.max(*at);
                // A BEAT naming another content is always stored; the slot keeps the view of
                // its own content only.
                if *content_id == slot.content_id {
                    let latest = *at >= slot.viewed_at;
                    if latest {
                        slot.viewed_at = *at;
                        slot.position_ms = *position_ms;
                    }
                    if *bookmarked {
                        slot.bookmarked_at = slot.bookmarked_at.max(*at);
                    }
                    // Counting too many unsaved BEATs only stores a view again; too few would
                    // lose one, so an older stored bookmark leaves the count alone.
                    if *bookmarked && latest {
                        slot.beats_unsaved = 0;
                    } else if !*bookmarked {
                        slot.beats_unsaved = slot.beats_unsaved.saturating_add(1);
                    }
                }
            }
        }
    }
    fold_decision(state, event)
}

/// Notes the view `event` records and files the answer it gives, for redeliveries.
fn fold_decision(mut state: PlayoutState, event: &PlayoutEvent) -> PlayoutState {
    if let Some(view) = event.bookmark() {
        state.last_view_at = state.last_view_at.max(view.at);
    }
    if let Some((playout_id, decision)) = event.decision() {
        state
            .recent_decisions
            .retain(|recent| recent.playout_id != *playout_id);
        if state.recent_decisions.len() == MAX_RECENT_DECISIONS {
            state.recent_decisions.pop_front();
        }
        state.recent_decisions.reserve_exact(1);
        state.recent_decisions.push_back(RecentDecision {
            playout_id: playout_id.clone(),
            decision,
        });
    }
    state
}
