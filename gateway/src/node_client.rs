//! The gateway's side of NATS: queries to the node's service endpoints, commands published
//! into the inboxes, and the replies to those commands, routed through one wildcard
//! subscription instead of one subscription per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, publish::PublishAck};
use futures::StreamExt;
use futures::future::BoxFuture;
use playhead_client::command;
use playhead_client::query::QueryError;
use playhead_client::service::nats_auth::NatsCredentials;
use playhead_client::service::telemetry;
use playhead_proto::headers::{MSG_ID, REPLY_SIGNATURE, REPLY_TO};
use playhead_proto::subjects::Query;
use prost::Message;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::settings::Settings;

/// gRPC metadata key whose value becomes the broker's `Nats-Msg-Id` (retries de-duplicate).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Headers of a command: trace context, and the idempotency key as `Nats-Msg-Id`.
pub fn command_headers(idempotency_key: Option<&str>) -> Result<HeaderMap, GatewayError> {
    let mut headers = HeaderMap::new();
    telemetry::inject_context(&mut headers);
    if let Some(key) = idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(GatewayError::InvalidArgument(format!(
                "{IDEMPOTENCY_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
        headers.insert(MSG_ID, key);
    }
    Ok(headers)
}

/// The `idempotency-key` metadata of a request, if any.
pub fn idempotency_key<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// What became of a command published with a reply subject.
#[derive(Debug)]
pub enum CommandOutcome<R> {
    /// The actor's decision.
    Decided(R),
    /// The broker had already accepted a command with the same idempotency key; the actor
    /// answered that one, not this copy.
    Duplicate,
}

pub struct NodeClient {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub request_timeout: Duration,
    /// What the nodes publish: the size limit of a command, the heartbeat interval.
    pub settings: Arc<Settings>,
    replies: ReplyRouter,
    /// The gateway user's key, which signs each reply subject (`Playhead-Reply-Signature`).
    credentials: Option<NatsCredentials>,
}

impl NodeClient {
    /// Subscribes the reply router; its dispatcher runs until `stop` (owned by the caller's
    /// task set through the returned future).
    pub async fn start(
        client: async_nats::Client,
        request_timeout: Duration,
        settings: Arc<Settings>,
        credentials: Option<NatsCredentials>,
        stop: CancellationToken,
    ) -> Result<(Arc<Self>, BoxFuture<'static, ()>), GatewayError> {
        let (replies, dispatcher) = ReplyRouter::start(&client, stop).await?;
        let node = Arc::new(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            request_timeout,
            settings,
            replies,
            credentials,
        });
        Ok((node, dispatcher))
    }

    fn timeout(&self) -> GatewayError {
        GatewayError::Timeout(self.request_timeout.as_millis() as u64)
    }

    /// Asks the node's query endpoint and decodes its answer (or its error code).
    pub async fn query<R: Message + Default>(
        &self,
        query: Query,
        request: &impl Message,
    ) -> Result<R, GatewayError> {
        let mut headers = HeaderMap::new();
        telemetry::inject_context(&mut headers);
        let reply = tokio::time::timeout(
            self.request_timeout,
            self.client.request_with_headers(
                query.subject(),
                headers,
                request.encode_to_vec().into(),
            ),
        )
        .await
        .map_err(|_| self.timeout())?
        .map_err(|error| GatewayError::Unavailable(error.to_string()))?;
        if let Some(headers) = &reply.headers
            && let Some(code) = headers.get(async_nats::service::NATS_SERVICE_ERROR_CODE)
        {
            let status = headers
                .get(async_nats::service::NATS_SERVICE_ERROR)
                .map(|value| value.to_string())
                .unwrap_or_default();
            return Err(GatewayError::from_service_code(
                code.as_str().parse().unwrap_or(500),
                status,
            ));
        }
        R::decode(reply.payload.as_ref())
            .map_err(|error| GatewayError::Internal(format!("undecodable node reply: {error}")))
    }

    /// [`NodeClient::query`] after `check`, the node's own rules for the request, so a bad
    /// request is refused here with the node's words instead of a round trip.
    pub async fn checked_query<Q: Message, R: Message + Default, V>(
        &self,
        query: Query,
        request: &Q,
        check: fn(&Q) -> Result<V, QueryError>,
    ) -> Result<R, GatewayError> {
        check(request)?;
        self.query(query, request).await
    }

    /// A command's payload, once its size is known to fit the nodes' limit: counted before it
    /// is encoded, so an oversize request is refused without a copy of it.
    pub fn encode_command(&self, command: &impl Message) -> Result<Vec<u8>, GatewayError> {
        command::check_encoded_size(command.encoded_len(), self.settings.max_message_bytes())?;
        Ok(command.encode_to_vec())
    }

    /// Publishes into an inbox stream and waits for the broker's acknowledgement.
    pub async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<PublishAck, GatewayError> {
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|error| GatewayError::Unavailable(error.to_string()))?;
        tokio::time::timeout(self.request_timeout, ack)
            .await
            .map_err(|_| self.timeout())?
            .map_err(|error| GatewayError::Unavailable(error.to_string()))
    }

    /// Publishes a command with `Playhead-Reply-To` and waits for the actor's decision, all
    /// (the publish, the broker's acknowledgement and the decision) within `timeout`.
    pub async fn command<R: Message + Default>(
        &self,
        subject: String,
        mut headers: HeaderMap,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<CommandOutcome<R>, GatewayError> {
        let pending = self.replies.expect();
        headers.insert(REPLY_TO, pending.subject.as_str());
        if let Some(credentials) = &self.credentials {
            let signature = credentials.sign_reply(&subject, &pending.subject);
            headers.insert(REPLY_SIGNATURE, signature.as_str());
        }
        let decided = async {
            let ack = self.publish(subject, headers, payload).await?;
            if ack.duplicate {
                return Ok(CommandOutcome::Duplicate);
            }
            let message = pending
                .receiver
                .await
                .map_err(|_| GatewayError::Unavailable("the gateway is shutting down".into()))?;
            R::decode(message.payload.as_ref())
                .map(CommandOutcome::Decided)
                .map_err(|error| GatewayError::Internal(format!("undecodable decision: {error}")))
        };
        tokio::time::timeout(timeout, decided)
            .await
            .map_err(|_| GatewayError::Timeout(timeout.as_millis() as u64))?
    }
}

type PendingMap = Arc<Mutex<HashMap<u64, oneshot::Sender<async_nats::Message>>>>;

/// Routes replies arriving on `{prefix}.{n}` to the request waiting for `n`.
struct ReplyRouter {
    prefix: String,
    next_token: AtomicU64,
    pending: PendingMap,
}

/// One expected reply; dropping it (timeout, cancelled request) forgets the slot.
struct PendingReply {
    subject: String,
    receiver: oneshot::Receiver<async_nats::Message>,
    _slot: SlotGuard,
}

struct SlotGuard {
    token: u64,
    pending: PendingMap,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.token);
    }
}

// Each critical section is one map operation: a poisoned lock still holds a whole map.
fn lock(
    pending: &PendingMap,
) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<async_nats::Message>>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReplyRouter {
    async fn start(
        client: &async_nats::Client,
        stop: CancellationToken,
    ) -> Result<(Self, BoxFuture<'static, ()>), GatewayError> {
        let prefix = client.new_inbox();
        let mut subscription = client
            .subscribe(format!("{prefix}.*"))
            .await
            .map_err(|error| GatewayError::Unavailable(error.to_string()))?;
        let pending: PendingMap = Arc::default();
        let router = Self {
            prefix: prefix.clone(),
            next_token: AtomicU64::new(1),
            pending: pending.clone(),
        };
        let dispatcher = async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    message = subscription.next() => match message {
                        Some(message) => message,
                        None => break,
                    },
                };
                let token = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|token| token.parse::<u64>().ok());
                let waiting = token.and_then(|token| lock(&pending).remove(&token));
                match waiting {
                    Some(sender) => {
                        let _ = sender.send(message);
                    }
                    // Late (the request timed out) or a second answer to a redelivery.
                    None => tracing::debug!(subject = %message.subject, "unclaimed reply"),
                }
            }
            let _ = subscription.unsubscribe().await;
        };
        Ok((router, Box::pin(dispatcher)))
    }

    fn expect(&self) -> PendingReply {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        lock(&self.pending).insert(token, sender);
        PendingReply {
            subject: format!("{}.{token}", self.prefix),
            receiver,
            _slot: SlotGuard {
                token,
                pending: self.pending.clone(),
            },
        }
    }
}
