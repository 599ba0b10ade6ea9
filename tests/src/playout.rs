//! Playout fixtures shared by the integration tests and the benchmark.

use std::time::Duration;

use async_nats::jetstream;
use playhead_actors::config::NodeConfig;
use playhead_actors::domain::time::Timestamp;
use playhead_actors::storage::clock::{Clock, SystemClock};
use playhead_actors::wire;
use playhead_gateway::auth::AuthedChannel;
use playhead_gateway::server::GatewayConfig;
use playhead_proto::ids::{ContentId, UserId};
use playhead_proto::subjects::{Inbox, UserKind, catalog_content, user_subject};
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::{
    CheckEntitlementsRequest, ContentUpdate, Entitlement, EntitlementsUpdate, Heartbeat,
    HeartbeatAction, HeartbeatDecision, HeartbeatKind, HeartbeatReason, ListPlayoutsRequest,
};
use prost::Message;
use tempfile::TempDir;

use crate::harness::NatsServer;
use crate::system::{
    TestGateway, TestNode, temp_dir, test_gateway_config, test_node_config, wait_until_drained,
};

/// Longest a playout test waits for the system to settle.
pub const WAIT: Duration = Duration::from_secs(20);

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
    let from_now = u64::try_from(from_now.as_millis()).expect("a test-sized duration");
    wire::timestamp(Timestamp::from_millis(SystemClock.now_millis() + from_now))
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

/// A broker, a node and a gateway for playout tests, with a catalog where `film-1` to `film-6`
/// need the `premium` tag and `match-1` the `sports` tag.
pub struct PlayoutSystem {
    pub nats: NatsServer,
    pub node: TestNode,
    pub gateway: TestGateway,
    pub jetstream: async_nats::jetstream::Context,
    pub client: PlayoutServiceClient<AuthedChannel>,
    _data: TempDir,
}

impl PlayoutSystem {
    /// `tune` adjusts the node's configuration; the gateway waits 2 s for a decision.
    pub async fn start(tune: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::start_with_gateway(tune, Duration::from_secs(2)).await
    }

    pub async fn start_with_gateway(
        tune: impl FnOnce(&mut NodeConfig),
        heartbeat_timeout: Duration,
    ) -> Self {
        let nats = NatsServer::start();
        let data = temp_dir();
        let mut config = test_node_config(&nats.url(), data.path());
        tune(&mut config);
        let node = TestNode::start(config).await;
        let gateway = TestGateway::start_with(GatewayConfig {
            heartbeat_timeout,
            ..test_gateway_config(&nats.url())
        })
        .await;
        let jetstream = async_nats::jetstream::new(nats.connect().await);
        for film in ["film-1", "film-2", "film-3", "film-4", "film-5", "film-6"] {
            publish_content(&jetstream, film, &["premium"]).await;
        }
        publish_content(&jetstream, "match-1", &["sports"]).await;
        wait_until_drained(&jetstream, Inbox::Catalog, WAIT).await;
        let client = gateway.playouts().await;
        Self {
            nats,
            node,
            gateway,
            jetstream,
            client,
            _data: data,
        }
    }

    pub async fn entitle(&self, user: &str, tags: &[&str], valid_for: Duration, limit: u32) {
        publish_entitlements(&self.jetstream, &entitlements(user, tags, valid_for, limit)).await;
    }

    pub async fn beat(
        &self,
        user: &str,
        device: &str,
        playout: &str,
        content: &str,
        kind: HeartbeatKind,
        position_ms: u64,
    ) -> HeartbeatDecision {
        self.client
            .clone()
            .heartbeat(heartbeat(user, device, playout, content, kind, position_ms))
            .await
            .expect("a heartbeat is always answered")
            .into_inner()
    }

    pub async fn live_playouts(&self, user: &str) -> Vec<String> {
        self.client
            .clone()
            .list_playouts(ListPlayoutsRequest {
                user_id: user.into(),
            })
            .await
            .expect("list playouts")
            .into_inner()
            .playouts
            .into_iter()
            .map(|playout| playout.playout_id)
            .collect()
    }

    pub async fn held_tags(&self, user: &str, tags: &[&str]) -> Vec<String> {
        self.client
            .clone()
            .check_entitlements(CheckEntitlementsRequest {
                user_id: user.into(),
                tags: tags.iter().map(|tag| tag.to_string()).collect(),
            })
            .await
            .expect("check entitlements")
            .into_inner()
            .held_tags
    }

    pub async fn stop(self) {
        self.gateway.stop().await;
        self.node.stop().await;
    }
}

pub fn answer(decision: &HeartbeatDecision) -> (HeartbeatAction, HeartbeatReason) {
    (
        HeartbeatAction::try_from(decision.action).expect("a known action"),
        HeartbeatReason::try_from(decision.reason).expect("a known reason"),
    )
}

pub const CONTINUE: (HeartbeatAction, HeartbeatReason) =
    (HeartbeatAction::Continue, HeartbeatReason::Ok);
