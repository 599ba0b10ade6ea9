//! `GET /api/status`: what an operator checks first — is this gateway connected, which node
//! holds which inbox groups (the ownership leases, and how fresh each renewal is), how far
//! each group's consumer lags behind its inbox, and how many dead letters wait.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use axum::Json;
use axum::extract::State;
use futures::{StreamExt, TryStreamExt};
use playhead_proto::subjects::{DLQ_STREAM, Inbox, OWNERSHIP_BUCKET, lease_node};
use serde::Serialize;
use time::OffsetDateTime;

use super::{ApiResult, Console};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub node_id: String,
    pub groups: Vec<String>,
    /// Since the oldest renewal among its leases.
    pub lease_age_ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub stream: String,
    pub name: String,
    /// Messages of its filter not yet delivered: the lag.
    pub pending: u64,
    pub ack_pending: usize,
    pub redelivered: usize,
    pub last_active_ago_ms: Option<u64>,
}

fn age_ms(since: OffsetDateTime, now: OffsetDateTime) -> u64 {
    u64::try_from((now - since).whole_milliseconds()).unwrap_or(0)
}

/// The lease holders: `{node_id} pid=… data_dir=…` per group key.
async fn nodes(jetstream: &jetstream::Context, now: OffsetDateTime) -> Vec<NodeView> {
    let Ok(bucket) = jetstream.get_key_value(OWNERSHIP_BUCKET).await else {
        return Vec::new();
    };
    let Ok(keys) = bucket.keys().await else {
        return Vec::new();
    };
    let keys: Vec<String> = keys.filter_map(|key| async { key.ok() }).collect().await;
    let mut by_node = BTreeMap::<String, NodeView>::new();
    for key in keys {
        let Ok(Some(entry)) = bucket.entry(&key).await else {
            continue;
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let node_id = lease_node(&String::from_utf8_lossy(&entry.value)).to_owned();
        let age = age_ms(entry.created, now);
        let view = by_node.entry(node_id.clone()).or_insert_with(|| NodeView {
            node_id,
            groups: Vec::new(),
            lease_age_ms: 0,
        });
        view.groups.push(key);
        view.lease_age_ms = view.lease_age_ms.max(age);
    }
    by_node.into_values().collect()
}

async fn consumers(jetstream: &jetstream::Context, now: OffsetDateTime) -> Vec<ConsumerView> {
    let mut views = Vec::new();
    for inbox in Inbox::ALL {
        let Ok(stream) = jetstream.get_stream(inbox.stream_name()).await else {
            continue;
        };
        let Ok(infos) = stream.consumers().try_collect::<Vec<_>>().await else {
            continue;
        };
        views.extend(infos.into_iter().map(|info| ConsumerView {
            stream: info.stream_name,
            name: info.name,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            last_active_ago_ms: info.delivered.last_active.map(|at| age_ms(at, now)),
        }));
    }
    views.sort_by(|a, b| (&a.stream, &a.name).cmp(&(&b.stream, &b.name)));
    views
}

pub async fn report(State(console): State<Console>) -> ApiResult<serde_json::Value> {
    let jetstream = &console.node.jetstream;
    let now = OffsetDateTime::now_utc();
    let broker = match console.node.client.connection_state() {
        async_nats::connection::State::Connected => "connected".to_owned(),
        other => other.to_string(),
    };
    let dead_letters = match jetstream.get_stream(DLQ_STREAM).await {
        Ok(mut stream) => stream.info().await.map(|info| info.state.messages).ok(),
        Err(_) => None,
    };
    let (nodes, consumers) = tokio::join!(nodes(jetstream, now), consumers(jetstream, now));
    Ok(Json(serde_json::json!({
        "gateway": { "broker": broker, "version": env!("CARGO_PKG_VERSION") },
        "nodes": nodes,
        "consumers": consumers,
        "deadLetters": dead_letters,
    })))
}
