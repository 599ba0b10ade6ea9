//! Playout fixtures shared by the integration tests and the benchmark.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use playhead_proto::ids::{ContentId, UserId};
use playhead_proto::subjects::{UserKind, catalog_content, user_subject};
use playhead_proto::v1::{
    ContentUpdate, Entitlement, EntitlementsUpdate, Heartbeat, HeartbeatKind,
};
use prost::Message;

pub fn heartbeat(
    user: &str,
    device: &str,
    playout: &str,
    content: &str,
    kind: HeartbeatKind,
    position_ms: u64,
) -> Heartbeat {
    Heartbeat {
        user_id: user.into(),
        device_id: device.into(),
        playout_id: playout.into(),
        content_id: content.into(),
        kind: kind as i32,
        position_ms,
    }
}

/// A wall-clock instant `from_now` ahead (the broker stamps messages with the same clock).
pub fn in_wall_clock(from_now: Duration) -> prost_types::Timestamp {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        + from_now;
    prost_types::Timestamp {
        seconds: at.as_secs() as i64,
        nanos: at.subsec_nanos() as i32,
    }
}

/// Grants `tags`, each valid for `valid_for`; `concurrency_limit` 0 keeps the current limit.
pub fn entitlements(
    user: &str,
    tags: &[&str],
    valid_for: Duration,
    concurrency_limit: u32,
) -> EntitlementsUpdate {
    EntitlementsUpdate {
        user_id: user.into(),
        entitlements: tags
            .iter()
            .map(|tag| Entitlement {
                tag: tag.to_string(),
                valid_until: Some(in_wall_clock(valid_for)),
            })
            .collect(),
        concurrency_limit,
    }
}

/// Publishes into the user inbox and waits for the broker's acknowledgement.
pub async fn publish_entitlements(jetstream: &jetstream::Context, update: &EntitlementsUpdate) {
    let user = UserId::parse(update.user_id.as_str()).expect("a valid user id");
    jetstream
        .publish(
            user_subject(&user, UserKind::Entitlements),
            update.encode_to_vec().into(),
        )
        .await
        .expect("publish entitlements")
        .await
        .expect("entitlements stored");
}

/// Publishes a catalog update and waits for the broker's acknowledgement.
pub async fn publish_content(jetstream: &jetstream::Context, content: &str, tags: &[&str]) {
    let content_id = ContentId::parse(content).expect("a valid content id");
    let update = ContentUpdate {
        content_id: content.into(),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
    };
    jetstream
        .publish(catalog_content(&content_id), update.encode_to_vec().into())
        .await
        .expect("publish content")
        .await
        .expect("content stored");
}
