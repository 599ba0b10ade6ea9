//! Playout events (admissions, heartbeats, stops, slot housekeeping, entitlement updates).
//!
//! Every event is version 1 except `PlayoutStarted`, version 2 ([`PLAYOUT_STARTED_VERSION`]):
//! version 1 is the message published before the journal existed (user, device, playout and
//! content only), upcast by [`upcast_playout_started_v1`]. `HeartbeatRecorded` gained
//! `bookmark_deferred` within version 1: absent it reads `false` (stored), which is what every
//! event written before it meant.

use std::time::Duration;

use playhead_proto::ids::{ContentId, DeviceId, PlayoutId, Tag, UserId};
use playhead_proto::v1;

use super::super::content::{read_tags, tag_names};
use super::super::{
    CodecError, EncodedEvent, InvalidPayload, decode_v1, millis, read_message, read_time,
    same_entity, time, version_1,
};
use crate::domain::playout::{Entitlement, HeartbeatKind, PlayoutEvent, StopReason};
use crate::domain::time::Timestamp;
use crate::wire;

/// The schema version `PlayoutStarted` is written with: 2 added the position, the re-admission
/// flag, the answer, the time and the catalog tags the admission was decided on.
pub const PLAYOUT_STARTED_VERSION: u32 = 2;

// The names `PlayoutEvent::name` gives, `'static` for errors (the `name` argument is borrowed).
const ENTITLEMENTS_UPDATED: &str = "EntitlementsUpdated";
const SLOT_EXPIRED: &str = "SlotExpired";
const SLOT_REVOKED: &str = "SlotRevoked";
const SLOT_RECLAIMED: &str = "SlotReclaimed";
const PLAYOUT_STARTED: &str = "PlayoutStarted";
const HEARTBEAT_RECORDED: &str = "HeartbeatRecorded";
const PLAYOUT_ENDED: &str = "PlayoutEnded";
const PLAYOUT_STOPPED: &str = "PlayoutStopped";

pub(super) fn encode(user: &UserId, event: &PlayoutEvent) -> EncodedEvent {
    let user_id = user.to_string();
    let name = event.name();
    match event {
        PlayoutEvent::EntitlementsUpdated {
            entitlements,
            concurrency_limit,
            at,
        } => version_1(
            name,
            v1::EntitlementsUpdated {
                user_id,
                entitlements: entitlements.iter().map(entitlement).collect(),
                concurrency_limit: *concurrency_limit,
                at: time(*at),
            },
        ),
        PlayoutEvent::SlotExpired {
            device_id,
            playout_id,
            content_id,
            last_heartbeat_at,
            at,
        } => version_1(
            name,
            v1::SlotExpired {
                user_id,
                device_id: device_id.to_string(),
                playout_id: playout_id.to_string(),
                content_id: content_id.to_string(),
                last_heartbeat_at: time(*last_heartbeat_at),
                at: time(*at),
            },
        ),
        PlayoutEvent::SlotRevoked {
            device_id,
            playout_id,
            content_id,
            at,
        } => version_1(
            name,
            v1::SlotRevoked {
                user_id,
                device_id: device_id.to_string(),
                playout_id: playout_id.to_string(),
                content_id: content_id.to_string(),
                at: time(*at),
            },
        ),
        PlayoutEvent::SlotReclaimed {
            device_id,
            previous_playout_id,
            previous_content_id,
            playout_id,
            at,
        } => version_1(
            name,
            v1::SlotReclaimed {
                user_id,
                device_id: device_id.to_string(),
                previous_playout_id: previous_playout_id.to_string(),
                playout_id: playout_id.to_string(),
                previous_content_id: previous_content_id.to_string(),
                at: time(*at),
            },
        ),
        PlayoutEvent::PlayoutStarted {
            device_id,
            playout_id,
            content_id,
            position_ms,
            readmitted,
            next_heartbeat,
            at,
            content_tags,
        } => EncodedEvent {
            name,
            version: PLAYOUT_STARTED_VERSION,
            payload: prost::Message::encode_to_vec(&v1::PlayoutStarted {
                user_id,
                device_id: device_id.to_string(),
                playout_id: playout_id.to_string(),
                content_id: content_id.to_string(),
                position_ms: *position_ms,
                readmitted: *readmitted,
                next_heartbeat_ms: millis(*next_heartbeat),
                at: time(*at),
                content_tags: content_tags.as_ref().map(|tags| v1::TagSet {
                    tags: tag_names(tags),
                }),
            }),
        },
        PlayoutEvent::HeartbeatRecorded {
            device_id,
            playout_id,
            content_id,
            position_ms,
            next_heartbeat,
            at,
            bookmarked,
        } => version_1(
            name,
            v1::HeartbeatRecorded {
                user_id,
                device_id: device_id.to_string(),
                playout_id: playout_id.to_string(),
                content_id: content_id.to_string(),
                position_ms: *position_ms,
                next_heartbeat_ms: millis(*next_heartbeat),
                at: time(*at),
                bookmark_deferred: !*bookmarked,
            },
        ),
        PlayoutEvent::PlayoutEnded {
            device_id,
            playout_id,
            content_id,
            position_ms,
            freed_slot,
            next_heartbeat,
            at,
        } => version_1(
            name,
            v1::PlayoutEnded {
                user_id,
                device_id: device_id.to_string(),
                playout_id: playout_id.to_string(),
                content_id: content_id.to_string(),
                position_ms: *position_ms,
                freed_slot: *freed_slot,
                next_heartbeat_ms: millis(*next_heartbeat),
                at: time(*at),
            },
        ),
        PlayoutEvent::PlayoutStopped {
            device_id,
            playout_id,
            content_id,
            kind,
            reason,
            position_ms,
            next_heartbeat,
            at,
        } => version_1(
            name,
            v1::PlayoutStopped {
                user_id,
                playout_id: playout_id.to_string(),
                reason: wire::heartbeat_reason((*reason).into()) as i32,
                device_id: device_id.to_string(),
                content_id: content_id.to_string(),
                kind: heartbeat_kind(*kind) as i32,
                position_ms: *position_ms,
                next_heartbeat_ms: millis(*next_heartbeat),
                at: time(*at),
            },
        ),
    }
}

/// A playout payload's event; `None` when `name` is no playout event. `stored_at` (the
/// journal message's stored time) is read by the version-1 `PlayoutStarted` upcast only.
pub(super) fn decode(
    own: &str,
    name: &str,
    version: u32,
    payload: &[u8],
    stored_at: Timestamp,
) -> Option<Result<PlayoutEvent, CodecError>> {
    let decoded = match name {
        ENTITLEMENTS_UPDATED => decode_v1(
            ENTITLEMENTS_UPDATED,
            version,
            payload,
            |m: v1::EntitlementsUpdated| {
                same_entity("user_id", own, m.user_id)?;
                Ok(PlayoutEvent::EntitlementsUpdated {
                    entitlements: m
                        .entitlements
                        .into_iter()
                        .map(read_entitlement)
                        .collect::<Result<_, _>>()?,
                    concurrency_limit: m.concurrency_limit,
                    at: read_time("at", m.at)?,
                })
            },
        ),
        SLOT_EXPIRED => decode_v1(SLOT_EXPIRED, version, payload, |m: v1::SlotExpired| {
            same_entity("user_id", own, m.user_id)?;
            Ok(PlayoutEvent::SlotExpired {
                device_id: DeviceId::parse(m.device_id)?,
                playout_id: PlayoutId::parse(m.playout_id)?,
                content_id: ContentId::parse(m.content_id)?,
                last_heartbeat_at: read_time("last_heartbeat_at", m.last_heartbeat_at)?,
                at: read_time("at", m.at)?,
            })
        }),
        SLOT_REVOKED => decode_v1(SLOT_REVOKED, version, payload, |m: v1::SlotRevoked| {
            same_entity("user_id", own, m.user_id)?;
            Ok(PlayoutEvent::SlotRevoked {
                device_id: DeviceId::parse(m.device_id)?,
                playout_id: PlayoutId::parse(m.playout_id)?,
                content_id: ContentId::parse(m.content_id)?,
                at: read_time("at", m.at)?,
            })
        }),
        SLOT_RECLAIMED => decode_v1(SLOT_RECLAIMED, version, payload, |m: v1::SlotReclaimed| {
            same_entity("user_id", own, m.user_id)?;
            Ok(PlayoutEvent::SlotReclaimed {
                device_id: DeviceId::parse(m.device_id)?,
                previous_playout_id: PlayoutId::parse(m.previous_playout_id)?,
                previous_content_id: ContentId::parse(m.previous_content_id)?,
                playout_id: PlayoutId::parse(m.playout_id)?,
                at: read_time("at", m.at)?,
            })
        }),
        PLAYOUT_STARTED => {
            if !(1..=PLAYOUT_STARTED_VERSION).contains(&version) {
                return Some(Err(CodecError::UnsupportedVersion {
                    name: PLAYOUT_STARTED,
                    version,
                }));
            }
            read_message(PLAYOUT_STARTED, payload, |m: v1::PlayoutStarted| {
                same_entity("user_id", own, m.user_id)?;
                let device_id = DeviceId::parse(m.device_id)?;
                let playout_id = PlayoutId::parse(m.playout_id)?;
                let content_id = ContentId::parse(m.content_id)?;
                if version == 1 {
                    return Ok(upcast_playout_started_v1(
                        device_id, playout_id, content_id, stored_at,
                    ));
                }
                Ok(PlayoutEvent::PlayoutStarted {
                    device_id,
                    playout_id,
                    content_id,
                    position_ms: m.position_ms,
                    readmitted: m.readmitted,
                    next_heartbeat: Duration::from_millis(m.next_heartbeat_ms),
                    at: read_time("at", m.at)?,
                    content_tags: m.content_tags.map(|set| read_tags(set.tags)).transpose()?,
                })
            })
        }
        HEARTBEAT_RECORDED => decode_v1(
            HEARTBEAT_RECORDED,
            version,
            payload,
            |m: v1::HeartbeatRecorded| {
                same_entity("user_id", own, m.user_id)?;
                Ok(PlayoutEvent::HeartbeatRecorded {
                    device_id: DeviceId::parse(m.device_id)?,
                    playout_id: PlayoutId::parse(m.playout_id)?,
                    content_id: ContentId::parse(m.content_id)?,
                    position_ms: m.position_ms,
                    next_heartbeat: Duration::from_millis(m.next_heartbeat_ms),
                    at: read_time("at", m.at)?,
                    bookmarked: !m.bookmark_deferred,
                })
            },
        ),
        PLAYOUT_ENDED => decode_v1(PLAYOUT_ENDED, version, payload, |m: v1::PlayoutEnded| {
            same_entity("user_id", own, m.user_id)?;
            Ok(PlayoutEvent::PlayoutEnded {
                device_id: DeviceId::parse(m.device_id)?,
                playout_id: PlayoutId::parse(m.playout_id)?,
                content_id: ContentId::parse(m.content_id)?,
                position_ms: m.position_ms,
                freed_slot: m.freed_slot,
                next_heartbeat: Duration::from_millis(m.next_heartbeat_ms),
                at: read_time("at", m.at)?,
            })
        }),
        PLAYOUT_STOPPED => decode_v1(
            PLAYOUT_STOPPED,
            version,
            payload,
            |m: v1::PlayoutStopped| {
                same_entity("user_id", own, m.user_id)?;
                Ok(PlayoutEvent::PlayoutStopped {
                    device_id: DeviceId::parse(m.device_id)?,
                    playout_id: PlayoutId::parse(m.playout_id)?,
                    content_id: ContentId::parse(m.content_id)?,
                    kind: read_kind(m.kind)?,
                    reason: read_stop_reason(m.reason)?,
                    position_ms: m.position_ms,
                    next_heartbeat: Duration::from_millis(m.next_heartbeat_ms),
                    at: read_time("at", m.at)?,
                })
            },
        ),
        _ => return None,
    };
    Some(decoded)
}

/// Version 1 of `PlayoutStarted` recorded only who started what on which device; what it did
/// not record is filled with the values that claim the least:
/// - `position_ms = 0`, `readmitted = false`: the admission is read as a plain START from the
///   beginning (a bookmark of 0 is overwritten by the playout's next heartbeat);
/// - `next_heartbeat = 0`: **unknown**, not "beat at once". The jittered interval was not
///   recorded and depended on the policy of the time; it is only read back to answer a
///   redelivery of that very heartbeat, long answered by the time a version-1 event is folded;
/// - `at` = the stored time of the journal message: version 1 had no time, and the broker
///   stamped the message right after the decision;
/// - `content_tags = None`: the catalog input was not recorded.
fn upcast_playout_started_v1(
    device_id: DeviceId,
    playout_id: PlayoutId,
    content_id: ContentId,
    stored_at: Timestamp,
) -> PlayoutEvent {
    PlayoutEvent::PlayoutStarted {
        device_id,
        playout_id,
        content_id,
        position_ms: 0,
        readmitted: false,
        next_heartbeat: Duration::ZERO,
        at: stored_at,
        content_tags: None,
    }
}

fn entitlement(entitlement: &Entitlement) -> v1::Entitlement {
    v1::Entitlement {
        tag: entitlement.tag.to_string(),
        valid_until: time(entitlement.valid_until),
    }
}

fn read_entitlement(entitlement: v1::Entitlement) -> Result<Entitlement, InvalidPayload> {
    Ok(Entitlement {
        tag: Tag::parse(entitlement.tag)?,
        valid_until: read_time("valid_until", entitlement.valid_until)?,
    })
}

fn heartbeat_kind(kind: HeartbeatKind) -> v1::HeartbeatKind {
    match kind {
        HeartbeatKind::Start => v1::HeartbeatKind::Start,
        HeartbeatKind::Beat => v1::HeartbeatKind::Beat,
        HeartbeatKind::End => v1::HeartbeatKind::End,
    }
}

fn read_kind(value: i32) -> Result<HeartbeatKind, InvalidPayload> {
    match v1::HeartbeatKind::try_from(value) {
        Ok(v1::HeartbeatKind::Start) => Ok(HeartbeatKind::Start),
        Ok(v1::HeartbeatKind::Beat) => Ok(HeartbeatKind::Beat),
        Ok(v1::HeartbeatKind::End) => Ok(HeartbeatKind::End),
        Ok(v1::HeartbeatKind::Unspecified) | Err(_) => Err(InvalidPayload::Enum {
            field: "kind",
            value,
        }),
    }
}

/// Only the two rules a STOP can name; OK, DEGRADED and unknown values are not stops.
fn read_stop_reason(value: i32) -> Result<StopReason, InvalidPayload> {
    match v1::HeartbeatReason::try_from(value) {
        Ok(v1::HeartbeatReason::NotEntitled) => Ok(StopReason::NotEntitled),
        Ok(v1::HeartbeatReason::ConcurrencyLimit) => Ok(StopReason::ConcurrencyLimit),
        _ => Err(InvalidPayload::Enum {
            field: "reason",
            value,
        }),
    }
}
