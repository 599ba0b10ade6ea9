//! `decide`: the rules that turn a command and the state into events (see the module doc of
//! [`super`]), and the jitter of the first heartbeat interval.

use std::time::Duration;

use playhead_proto::ids::PlayoutId;

use super::evolve::merge_entitlements;
use super::{
    Heartbeat, HeartbeatKind, MAX_CONCURRENCY_LIMIT, MAX_ENTITLEMENTS, PlayoutCommand,
    PlayoutError, PlayoutEvent, PlayoutPolicy, PlayoutState, Slot, StopReason, UpdateEntitlements,
};
use crate::domain::time::Timestamp;

impl PlayoutPolicy {
    /// The interval after an admission: uniform in [50%, 100%] of `heartbeat_interval`, fixed
    /// per playout id.
    pub fn first_heartbeat(&self, playout_id: &PlayoutId) -> Duration {
        let interval = self.heartbeat_interval.as_millis() as u64;
        let spread = interval / 2;
        // Multiply-high maps the hash's top bits onto 0..=spread.
        let offset =
            ((u128::from(spread_hash(playout_id.as_str())) * u128::from(spread + 1)) >> 64) as u64;
        Duration::from_millis(interval - offset)
    }

    pub fn decide(
        &self,
        command: &PlayoutCommand,
        state: &PlayoutState,
        now: Timestamp,
    ) -> Result<Vec<PlayoutEvent>, PlayoutError> {
        match command {
            PlayoutCommand::UpdateEntitlements(update) => self.update(update, state, now),
            PlayoutCommand::Heartbeat(heartbeat) => self.heartbeat(heartbeat, state, now),
        }
    }

    fn update(
        &self,
        update: &UpdateEntitlements,
        state: &PlayoutState,
        now: Timestamp,
    ) -> Result<Vec<PlayoutEvent>, PlayoutError> {
        if let Some(limit) = update.concurrency_limit
            && !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit)
        {
            return Err(PlayoutError::InvalidConcurrencyLimit(limit));
        }
        if update.entitlements.len() > MAX_ENTITLEMENTS {
            return Err(PlayoutError::TooManyEntitlements {
                count: update.entitlements.len(),
            });
        }
        let mut merged = state.entitlements.clone();
        merge_entitlements(&mut merged, &update.entitlements, now);
        if merged.len() > MAX_ENTITLEMENTS {
            return Err(PlayoutError::TooManyEntitlements {
                count: merged.len(),
            });
        }
        let mut events = vec![PlayoutEvent::EntitlementsUpdated {
            entitlements: update.entitlements.clone(),
            concurrency_limit: update.concurrency_limit,
            at: now,
        }];
        let limit = update
            .concurrency_limit
            .unwrap_or_else(|| state.concurrency_limit(self));
        self.release_slots(state, limit, now, &mut events);
        Ok(events)
    }

    fn heartbeat(
        &self,
        heartbeat: &Heartbeat,
        state: &PlayoutState,
        now: Timestamp,
    ) -> Result<Vec<PlayoutEvent>, PlayoutError> {
        let limit = state.concurrency_limit(self);
        let mut events = Vec::new();
        let seated = self.release_slots(state, limit, now, &mut events);
        let own_slot = seated
            .iter()
            .find(|slot| slot.playout_id == heartbeat.playout_id);
        let entitled = state.is_entitled(heartbeat.content_tags.as_ref(), now);
        let answer = match (heartbeat.kind, own_slot) {
            (HeartbeatKind::End, _) => PlayoutEvent::PlayoutEnded {
                device_id: heartbeat.device_id.clone(),
                playout_id: heartbeat.playout_id.clone(),
                content_id: heartbeat.content_id.clone(),
                position_ms: heartbeat.position_ms,
                freed_slot: own_slot.is_some(),
                next_heartbeat: self.heartbeat_interval,
                at: now,
            },
            (HeartbeatKind::Beat, Some(_)) if !entitled => {
                self.stopped(heartbeat, StopReason::NotEntitled, now)
            }
            (HeartbeatKind::Beat, Some(slot)) => PlayoutEvent::HeartbeatRecorded {
                device_id: heartbeat.device_id.clone(),
                playout_id: heartbeat.playout_id.clone(),
                content_id: heartbeat.content_id.clone(),
                position_ms: heartbeat.position_ms,
                next_heartbeat: self.heartbeat_interval,
                at: now,
                bookmarked: self.beat_stores_bookmark(state, slot, &heartbeat.content_id, now),
            },
            (HeartbeatKind::Start | HeartbeatKind::Beat, _) if !entitled => {
                self.stopped(heartbeat, StopReason::NotEntitled, now)
            }
            (HeartbeatKind::Start | HeartbeatKind::Beat, _) => {
                // The seat of this device, or of this very playout, is taken over, not added.
                let others = seated
                    .iter()
                    .filter(|slot| {
                        slot.device_id != heartbeat.device_id
                            && slot.playout_id != heartbeat.playout_id
                    })
                    .count();
                if others >= limit as usize {
                    self.stopped(heartbeat, StopReason::ConcurrencyLimit, now)
                } else {
                    if let Some(previous) = seated.iter().find(|slot| {
                        slot.device_id == heartbeat.device_id
                            && slot.playout_id != heartbeat.playout_id
                    }) {
                        events.push(PlayoutEvent::SlotReclaimed {
                            device_id: heartbeat.device_id.clone(),
                            previous_playout_id: previous.playout_id.clone(),
                            previous_content_id: previous.content_id.clone(),
                            playout_id: heartbeat.playout_id.clone(),
                            at: now,
                        });
                    }
                    PlayoutEvent::PlayoutStarted {
                        device_id: heartbeat.device_id.clone(),
                        playout_id: heartbeat.playout_id.clone(),
                        content_id: heartbeat.content_id.clone(),
                        position_ms: heartbeat.position_ms,
                        readmitted: heartbeat.kind == HeartbeatKind::Beat,
                        next_heartbeat: self.first_heartbeat(&heartbeat.playout_id),
                        at: now,
                        content_tags: heartbeat.content_tags.clone(),
                    }
                }
            }
        };
        events.push(answer);
        Ok(events)
    }

    fn stopped(&self, heartbeat: &Heartbeat, reason: StopReason, now: Timestamp) -> PlayoutEvent {
        PlayoutEvent::PlayoutStopped {
            device_id: heartbeat.device_id.clone(),
            playout_id: heartbeat.playout_id.clone(),
            content_id: heartbeat.content_id.clone(),
            kind: heartbeat.kind,
            reason,
            position_ms: heartbeat.position_ms,
            next_heartbeat: self.heartbeat_interval,
            at: now,
        }
    }

    /// Releases the slots expired at `now`, then the newest beyond `limit`; returns the slots
    /// that keep their seat (at most `limit`).
    fn release_slots<'a>(
        &self,
        state: &'a PlayoutState,
        limit: u32,
        now: Timestamp,
        events: &mut Vec<PlayoutEvent>,
    ) -> Vec<&'a Slot> {
        let mut seated = Vec::with_capacity(state.slots.len());
        for slot in &state.slots {
            if slot.is_live(now, self) {
                seated.push(slot);
            } else {
                events.push(PlayoutEvent::SlotExpired {
                    device_id: slot.device_id.clone(),
                    playout_id: slot.playout_id.clone(),
                    content_id: slot.content_id.clone(),
                    last_heartbeat_at: slot.last_heartbeat_at,
                    at: now,
                });
            }
        }
        let kept = seated.len().min(limit as usize);
        for slot in seated.drain(kept..) {
            events.push(PlayoutEvent::SlotRevoked {
                device_id: slot.device_id.clone(),
                playout_id: slot.playout_id.clone(),
                content_id: slot.content_id.clone(),
                at: now,
            });
        }
        debug_assert!(seated.len() <= limit as usize);
        seated
    }
}

/// FNV-1a, 64 bits (stable across nodes and releases, unlike `std`'s hasher), then the
/// murmur3 finalizer: FNV-1a alone barely moves its top bits for ids that differ in the last
/// byte (`playout-1`, `playout-2`, …), which would bunch their first heartbeats together.
fn spread_hash(value: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = value.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}
