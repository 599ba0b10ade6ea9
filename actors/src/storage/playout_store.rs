//! The playout record of each user: entitlement tags, concurrency limit, slots and the answers
//! filed for redeliveries ([`PlayoutState`]), with the last inbox sequence folded into it.
//!
//! One record per user in the plain sled tree `user_playouts`. It has no TTL of its own: the
//! decider bounds it (at most [`MAX_ENTITLEMENTS`] tags, [`MAX_CONCURRENCY_LIMIT`] slots and
//! [`MAX_RECENT_DECISIONS`] answers, a few KiB), expired tags and slots are dropped by the next
//! command, and it is rebuildable from JetStream like everything in sled.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use playhead_proto::ids::{ContentId, DeviceId, PlayoutId, Tag, UserId};
use playhead_proto::v1;

use super::user_meta_store::UserMeta;
use super::{MainWrites, StorageError};
use crate::domain::playout::{
    HeartbeatAction, HeartbeatDecision, HeartbeatReason, MAX_CONCURRENCY_LIMIT, MAX_ENTITLEMENTS,
    MAX_RECENT_DECISIONS, PlayoutState, RecentDecision, Slot,
};
use crate::domain::time::Timestamp;
use crate::wire;

const TREE_NAME: &str = "user_playouts";
const WHAT: &str = "user playouts";

/// A user's playout state and the last inbox sequence applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredPlayouts {
    pub state: PlayoutState,
    pub last_applied_seq: u64,
    /// Where the whole user entity stood when this record was written (its last inbox
    /// sequence and journal event): written with the record, so a heartbeat costs one write
    /// instead of this record plus `user_meta`. Zero in records written before.
    pub position: UserMeta,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntitlementRecord {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(uint64, tag = "2")]
    valid_until_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SlotRecord {
    #[prost(string, tag = "1")]
    device_id: String,
    #[prost(string, tag = "2")]
    playout_id: String,
    #[prost(string, tag = "3")]
    content_id: String,
    #[prost(uint64, tag = "4")]
    started_at_ms: u64,
    #[prost(uint64, tag = "5")]
    last_heartbeat_at_ms: u64,
    /// 6-9: absent in records written before bookmarks were stored sparingly, when every
    /// view was stored: read as "nothing unsaved" (and a bookmark due at the next BEAT).
    #[prost(uint64, tag = "6")]
    position_ms: u64,
    #[prost(uint32, tag = "7")]
    beats_unsaved: u32,
    #[prost(uint64, tag = "8")]
    bookmarked_at_ms: u64,
    #[prost(uint64, tag = "9")]
    viewed_at_ms: u64,
}

/// `action` and `reason` hold `playhead.v1` `HeartbeatAction` / `HeartbeatReason` values; 0 is never
/// written, so a record that lost them reads as corrupt instead of as a silent CONTINUE.
#[derive(Clone, PartialEq, prost::Message)]
struct RecentDecisionRecord {
    #[prost(string, tag = "1")]
    playout_id: String,
    #[prost(enumeration = "v1::HeartbeatAction", tag = "2")]
    action: i32,
    #[prost(enumeration = "v1::HeartbeatReason", tag = "3")]
    reason: i32,
    #[prost(uint64, tag = "4")]
    next_heartbeat_ms: u64,
}

/// Entitlements in tag order, slots in admission order, decisions oldest first: the orders
/// [`PlayoutState`] keeps, so a record decodes into an identical state.
#[derive(Clone, PartialEq, prost::Message)]
struct PlayoutsRecord {
    #[prost(uint64, tag = "1")]
    last_applied_seq: u64,
    #[prost(message, repeated, tag = "2")]
    entitlements: Vec<EntitlementRecord>,
    #[prost(uint32, optional, tag = "3")]
    concurrency_limit: Option<u32>,
    #[prost(message, repeated, tag = "4")]
    slots: Vec<SlotRecord>,
    #[prost(message, repeated, tag = "5")]
    recent_decisions: Vec<RecentDecisionRecord>,
    /// Absent in records written before bookmarks were stored sparingly: 0.
    #[prost(uint64, tag = "6")]
    last_view_at_ms: u64,
    /// The user entity's position (see [`StoredPlayouts::position`]); absent before: 0.
    #[prost(uint64, tag = "7")]
    user_inbox_seq: u64,
    #[prost(uint64, tag = "8")]
    user_journal_seq: u64,
}

#[derive(Clone)]
pub struct PlayoutStore {
    records: sled::Tree,
}

impl std::fmt::Debug for PlayoutStore {
    // sled's Debug for a tree dumps its contents.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PlayoutStore")
            .field("tree", &TREE_NAME)
            .finish_non_exhaustive()
    }
}

impl PlayoutStore {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            records: db.open_tree(TREE_NAME)?,
        })
    }

    /// The user's stored playouts, or the initial state if the user was never seen.
    pub fn load(&self, user: &UserId) -> Result<StoredPlayouts, StorageError> {
        match self.records.get(user.as_str())? {
            Some(bytes) => decode(&bytes).map_err(|detail| StorageError::Corrupt {
                what: WHAT,
                detail: format!("{user}: {detail}"),
            }),
            None => Ok(StoredPlayouts::default()),
        }
    }

    /// Replaces the user's record (state and sequence in one write, so they never disagree).
    pub fn save(&self, writes: &mut MainWrites, user: &UserId, stored: &StoredPlayouts) {
        writes.insert(&self.records, user.as_str(), encode(stored));
    }
}

fn encode(stored: &StoredPlayouts) -> Vec<u8> {
    let state = &stored.state;
    prost::Message::encode_to_vec(&PlayoutsRecord {
        last_applied_seq: stored.last_applied_seq,
        user_inbox_seq: stored.position.last_inbox_seq,
        user_journal_seq: stored.position.last_journal_seq,
        entitlements: state
            .entitlements
            .iter()
            .map(|(tag, valid_until)| EntitlementRecord {
                tag: tag.as_str().to_owned(),
                valid_until_ms: valid_until.as_millis(),
            })
            .collect(),
        concurrency_limit: state.concurrency_limit,
        slots: state
            .slots
            .iter()
            .map(|slot| SlotRecord {
                device_id: slot.device_id.as_str().to_owned(),
                playout_id: slot.playout_id.as_str().to_owned(),
                content_id: slot.content_id.as_str().to_owned(),
                started_at_ms: slot.started_at.as_millis(),
                last_heartbeat_at_ms: slot.last_heartbeat_at.as_millis(),
                position_ms: slot.position_ms,
                beats_unsaved: slot.beats_unsaved,
                bookmarked_at_ms: slot.bookmarked_at.as_millis(),
                viewed_at_ms: slot.viewed_at.as_millis(),
            })
            .collect(),
        recent_decisions: state
            .recent_decisions
            .iter()
            .map(|recent| RecentDecisionRecord {
                playout_id: recent.playout_id.as_str().to_owned(),
                action: wire::heartbeat_action(recent.decision.action) as i32,
                reason: wire::heartbeat_reason(recent.decision.reason) as i32,
                next_heartbeat_ms: wire::duration_millis(recent.decision.next_heartbeat),
            })
            .collect(),
        last_view_at_ms: state.last_view_at.as_millis(),
    })
}

/// Decodes and checks what the decider guarantees, so a damaged record is reported instead
/// of deciding on nonsense.
fn decode(bytes: &[u8]) -> Result<StoredPlayouts, String> {
    let record =
        <PlayoutsRecord as prost::Message>::decode(bytes).map_err(|error| error.to_string())?;
    if record.entitlements.len() > MAX_ENTITLEMENTS {
        return Err(format!(
            "{} entitlements, more than the {MAX_ENTITLEMENTS} allowed",
            record.entitlements.len()
        ));
    }
    if let Some(limit) = record.concurrency_limit
        && !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit)
    {
        return Err(format!("concurrency limit {limit} is out of range"));
    }
    if record.slots.len() > MAX_CONCURRENCY_LIMIT as usize {
        return Err(format!(
            "{} slots, more than the {MAX_CONCURRENCY_LIMIT} any limit allows",
            record.slots.len()
        ));
    }
    if record.recent_decisions.len() > MAX_RECENT_DECISIONS {
        return Err(format!(
            "{} recent decisions, more than the {MAX_RECENT_DECISIONS} kept",
            record.recent_decisions.len()
        ));
    }

    let mut entitlements = BTreeMap::new();
    for entitlement in record.entitlements {
        let tag = Tag::parse(entitlement.tag).map_err(|error| format!("entitlement: {error}"))?;
        let valid_until = Timestamp::from_millis(entitlement.valid_until_ms);
        if let Some(_duplicate) = entitlements.insert(tag, valid_until) {
            return Err("an entitlement tag is stored twice".to_owned());
        }
    }

    let slots = record
        .slots
        .into_iter()
        .map(|slot| {
            let in_slot = |error| format!("slot: {error}");
            Ok(Slot {
                device_id: DeviceId::parse(slot.device_id).map_err(in_slot)?,
                playout_id: PlayoutId::parse(slot.playout_id).map_err(in_slot)?,
                content_id: ContentId::parse(slot.content_id).map_err(in_slot)?,
                started_at: Timestamp::from_millis(slot.started_at_ms),
                last_heartbeat_at: Timestamp::from_millis(slot.last_heartbeat_at_ms),
                position_ms: slot.position_ms,
                beats_unsaved: slot.beats_unsaved,
                bookmarked_at: Timestamp::from_millis(slot.bookmarked_at_ms),
                viewed_at: Timestamp::from_millis(slot.viewed_at_ms),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;

    let recent_decisions = record
        .recent_decisions
        .into_iter()
        .map(|recent| {
            let action = match v1::HeartbeatAction::try_from(recent.action) {
                Ok(v1::HeartbeatAction::Continue) => HeartbeatAction::Continue,
                Ok(v1::HeartbeatAction::Stop) => HeartbeatAction::Stop,
                _ => return Err(format!("unknown heartbeat action {}", recent.action)),
            };
            // DEGRADED is the gateway's answer, never a decision the actor stores.
            let reason = match v1::HeartbeatReason::try_from(recent.reason) {
                Ok(v1::HeartbeatReason::Ok) => HeartbeatReason::Ok,
                Ok(v1::HeartbeatReason::NotEntitled) => HeartbeatReason::NotEntitled,
                Ok(v1::HeartbeatReason::ConcurrencyLimit) => HeartbeatReason::ConcurrencyLimit,
                _ => return Err(format!("unknown heartbeat reason {}", recent.reason)),
            };
            Ok(RecentDecision {
                playout_id: PlayoutId::parse(recent.playout_id)
                    .map_err(|error| format!("recent decision: {error}"))?,
                decision: HeartbeatDecision {
                    action,
                    reason,
                    next_heartbeat: Duration::from_millis(recent.next_heartbeat_ms),
                },
            })
        })
        .collect::<Result<VecDeque<_>, String>>()?;

    Ok(StoredPlayouts {
        state: PlayoutState {
            entitlements,
            concurrency_limit: record.concurrency_limit,
            slots,
            recent_decisions,
            last_view_at: Timestamp::from_millis(record.last_view_at_ms),
        },
        last_applied_seq: record.last_applied_seq,
        position: UserMeta {
            last_inbox_seq: record.user_inbox_seq,
            last_journal_seq: record.user_journal_seq,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::playout::{
        Entitlement, Heartbeat, HeartbeatKind, PlayoutCommand, PlayoutPolicy, UpdateEntitlements,
        evolve, initial,
    };

    const MINUTE_MS: u64 = 60_000;

    fn open_store() -> (sled::Db, PlayoutStore) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = PlayoutStore::open(&db).unwrap();
        (db, store)
    }

    fn tag(name: &str) -> Tag {
        Tag::parse(name).unwrap()
    }

    fn heartbeat(
        kind: HeartbeatKind,
        device: &str,
        playout: &str,
        tag_name: &str,
    ) -> PlayoutCommand {
        PlayoutCommand::Heartbeat(Heartbeat {
            device_id: DeviceId::parse(device).unwrap(),
            playout_id: PlayoutId::parse(playout).unwrap(),
            content_id: ContentId::parse(format!("{tag_name}-film")).unwrap(),
            content_tags: Some(BTreeSet::from([tag(tag_name)])),
            kind,
            position_ms: 42_000,
        })
    }

    /// Folds the decider's own events, so the state is one the decider can really produce:
    /// entitlements, a limit, two live slots (one reclaimed on its device), a STOP and an END
    /// filed among the recent decisions.
    fn lived_in_state() -> PlayoutState {
        let policy = PlayoutPolicy::default();
        let commands = [
            PlayoutCommand::UpdateEntitlements(UpdateEntitlements {
                entitlements: vec![
                    Entitlement {
                        tag: tag("sports"),
                        valid_until: Timestamp::from_millis(1_000 * MINUTE_MS),
                    },
                    Entitlement {
                        tag: tag("films"),
                        valid_until: Timestamp::from_millis(2_000 * MINUTE_MS),
                    },
                ],
                concurrency_limit: Some(2),
            }),
            heartbeat(HeartbeatKind::Start, "tv", "p1", "sports"),
            heartbeat(HeartbeatKind::Start, "phone", "p2", "films"),
            heartbeat(HeartbeatKind::Start, "tablet", "p3", "films"),
            heartbeat(HeartbeatKind::Beat, "tv", "p1", "sports"),
            heartbeat(HeartbeatKind::Start, "phone", "p4", "films"),
            heartbeat(HeartbeatKind::Start, "laptop", "p5", "news"),
            heartbeat(HeartbeatKind::End, "tablet", "p3", "films"),
        ];
        let mut state = initial();
        for (minute, command) in (1u64..).zip(&commands) {
            let now = Timestamp::from_millis(minute * MINUTE_MS);
            let events = policy.decide(command, &state, now).unwrap();
            state = events.iter().fold(state, evolve);
        }
        state
    }

    #[test]
    fn given_a_lived_in_state_when_saved_and_loaded_then_it_comes_back_identical() {
        let (_db, store) = open_store();
        let user = UserId::parse("ann").unwrap();
        let state = lived_in_state();
        assert_eq!(state.entitlements.len(), 2);
        assert_eq!(state.slots.len(), 2);
        assert!(
            state
                .recent_decisions
                .iter()
                .any(|recent| recent.decision.action == HeartbeatAction::Stop)
        );
        let stored = StoredPlayouts {
            state,
            last_applied_seq: 1234,
            position: UserMeta {
                last_inbox_seq: 1234,
                last_journal_seq: 5678,
            },
        };

        MainWrites::write_now(|writes| store.save(writes, &user, &stored)).unwrap();

        assert_eq!(store.load(&user).unwrap(), stored);
    }

    #[test]
    fn given_an_absent_user_when_loaded_then_the_initial_state_at_sequence_zero() {
        let (_db, store) = open_store();
        let stored = StoredPlayouts {
            state: lived_in_state(),
            last_applied_seq: 9,
            position: UserMeta::default(),
        };
        let ann = UserId::parse("ann").unwrap();
        MainWrites::write_now(|writes| store.save(writes, &ann, &stored)).unwrap();

        let loaded = store.load(&UserId::parse("anna").unwrap()).unwrap();

        assert_eq!(loaded, StoredPlayouts::default());
        assert_eq!(loaded.state, initial());
    }

    #[test]
    fn given_a_record_with_an_unknown_decision_action_when_loaded_then_it_is_corrupt() {
        let (db, store) = open_store();
        let record = PlayoutsRecord {
            last_applied_seq: 1,
            entitlements: vec![],
            concurrency_limit: None,
            slots: vec![],
            recent_decisions: vec![RecentDecisionRecord {
                playout_id: "p1".into(),
                action: 7,
                reason: v1::HeartbeatReason::Ok as i32,
                next_heartbeat_ms: 1,
            }],
            last_view_at_ms: 0,
            user_inbox_seq: 0,
            user_journal_seq: 0,
        };
        db.open_tree(TREE_NAME)
            .unwrap()
            .insert("ann", prost::Message::encode_to_vec(&record))
            .unwrap();

        let loaded = store.load(&UserId::parse("ann").unwrap());

        assert!(matches!(
            loaded,
            Err(StorageError::Corrupt { what: WHAT, .. })
        ));
    }

    #[test]
    fn given_a_record_with_an_invalid_slot_id_when_loaded_then_it_is_corrupt_naming_it() {
        let (db, store) = open_store();
        let record = PlayoutsRecord {
            last_applied_seq: 1,
            entitlements: vec![],
            concurrency_limit: None,
            slots: vec![SlotRecord {
                device_id: "tv.1".into(),
                playout_id: "p1".into(),
                content_id: "film".into(),
                started_at_ms: 0,
                last_heartbeat_at_ms: 0,
                ..Default::default()
            }],
            recent_decisions: vec![],
            last_view_at_ms: 0,
            user_inbox_seq: 0,
            user_journal_seq: 0,
        };
        db.open_tree(TREE_NAME)
            .unwrap()
            .insert("ann", prost::Message::encode_to_vec(&record))
            .unwrap();

        let loaded = store.load(&UserId::parse("ann").unwrap());

        let Err(StorageError::Corrupt { what: WHAT, detail }) = loaded else {
            panic!("expected a corrupt record, got {loaded:?}");
        };
        assert!(
            detail.starts_with("ann: slot: device_id \"tv.1\""),
            "{detail}"
        );
    }

    #[test]
    fn given_garbage_bytes_when_loaded_then_it_is_corrupt() {
        let (db, store) = open_store();
        db.open_tree(TREE_NAME)
            .unwrap()
            .insert("ann", &[0xff, 0xff, 0xff][..])
            .unwrap();

        assert!(matches!(
            store.load(&UserId::parse("ann").unwrap()),
            Err(StorageError::Corrupt { what: WHAT, .. })
        ));
    }
}
