//! Per-entity queries over the NATS service API (`$SRV.PING.playhead` discovers them).
//! Errors travel as `Nats-Service-Error-Code` with HTTP-like codes the gateway maps once.
//! Up to [`MAX_CONCURRENT_QUERIES`] are answered at once, each on a blocking thread (they read
//! sled), so a long read (a page of 100 sessions) holds no other query; one more waits for a
//! slot, and the broker holds the requests meanwhile.
//!
//! - [`plays`]: a station's play history, cursor-paged.
//! - [`sessions`]: a listener's player sessions.
//! - [`playouts`]: a viewer's live playouts, viewing history and entitlements.
//! - [`shows`]: an import's status, and upcoming shows by artist, station or listener.

pub mod playouts;
pub mod plays;
pub mod sessions;
pub mod shows;

use std::sync::Arc;

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SelectAll;
use playhead_proto::subjects::{QUERY_GROUP, QUERY_SERVICE, Query};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::domain::player::PlayerPolicy;
use crate::domain::playout::PlayoutPolicy;
use crate::domain::time::Timestamp;
use crate::storage::Storage;
use crate::storage::clock::{Clock, SystemClock};
use crate::telemetry;

pub use playhead_client::query::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QueryError, page_size};

/// Decodes a query's request message.
fn decode_request<M: prost::Message + Default>(payload: &[u8]) -> Result<M, QueryError> {
    M::decode(payload)
        .map_err(|error| QueryError::InvalidArgument(format!("undecodable request: {error}")))
}

impl From<crate::storage::StorageError> for QueryError {
    fn from(error: crate::storage::StorageError) -> Self {
        QueryError::Internal(error.to_string())
    }
}

/// Queries answered at once.
pub const MAX_CONCURRENT_QUERIES: usize = 64;

/// What the query handlers read.
#[derive(Clone)]
pub struct QueryContext {
    pub storage: Storage,
    pub player_policy: PlayerPolicy,
    pub playout_policy: PlayoutPolicy,
    /// A station's or a listener's artists looked up for shows.
    pub max_artists_per_query: usize,
    /// Fault injection (tests): this endpoint answers this much later.
    pub slow_query: Option<(String, std::time::Duration)>,
}

impl QueryContext {
    fn answer(&self, query: Query, payload: &[u8]) -> Result<Vec<u8>, QueryError> {
        use prost::Message;
        if let Some((endpoint, delay)) = &self.slow_query
            && endpoint == query.endpoint_name()
        {
            std::thread::sleep(*delay);
        }
        match query {
            Query::ListPlays => Ok(plays::list_plays(&self.storage, payload)?.encode_to_vec()),
            Query::GetSession => {
                Ok(sessions::get_session(self, payload, wall_clock())?.encode_to_vec())
            }
            Query::ListSessions => {
                Ok(sessions::list_sessions(self, payload, wall_clock())?.encode_to_vec())
            }
            Query::ListPlayouts => {
                Ok(playouts::list_playouts(self, payload, wall_clock())?.encode_to_vec())
            }
            Query::ListViewHistory => {
                Ok(playouts::list_view_history(&self.storage, payload)?.encode_to_vec())
            }
            Query::CheckEntitlements => {
                Ok(
                    playouts::check_entitlements(&self.storage, payload, wall_clock())?
                        .encode_to_vec(),
                )
            }
            Query::GetImport => Ok(shows::get_import(self, payload)?.encode_to_vec()),
            Query::ListShows => Ok(shows::list_shows(self, payload, wall_clock())?.encode_to_vec()),
        }
    }
}

fn wall_clock() -> Timestamp {
    Timestamp::from_millis(SystemClock.now_millis())
}

/// The query service, subscribed and ready to answer (see [`start`]).
pub struct QueryService {
    service: service::Service,
    requests: SelectAll<futures::stream::BoxStream<'static, (Query, service::Request)>>,
    context: QueryContext,
}

/// Starts the query service: when this returns, the broker routes queries to it, so a node
/// that says it serves answers them.
pub async fn start(
    client: async_nats::Client,
    context: QueryContext,
) -> anyhow::Result<QueryService> {
    let service = client
        .service_builder()
        .description("playhead per-entity queries")
        .queue_group(QUERY_GROUP)
        .start(QUERY_SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|error| anyhow::anyhow!("cannot start the query service: {error}"))?;
    let mut requests = SelectAll::new();
    for query in Query::ALL.iter().copied() {
        let endpoint = service
            .endpoint_builder()
            .name(query.endpoint_name())
            .add(query.subject())
            .await
            .map_err(|error| {
                anyhow::anyhow!("cannot add the {} endpoint: {error}", query.endpoint_name())
            })?;
        requests.push(endpoint.map(move |request| (query, request)).boxed());
    }
    client
        .flush()
        .await
        .map_err(|error| anyhow::anyhow!("cannot register the query endpoints: {error}"))?;
    Ok(QueryService {
        service,
        requests,
        context,
    })
}

impl QueryService {
    /// Answers queries until `stop` is cancelled, then finishes those in flight.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let QueryService {
            service,
            mut requests,
            context,
        } = self;
        let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_QUERIES));
        let mut in_flight = JoinSet::new();
        loop {
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let (query, request) = tokio::select! {
                _ = stop.cancelled() => break,
                next = requests.next() => match next {
                    Some(next) => next,
                    None => break,
                },
            };
            while in_flight.try_join_next().is_some() {}
            in_flight.spawn(answer(context.clone(), query, request, slot));
        }
        while in_flight.join_next().await.is_some() {}
        service
            .stop()
            .await
            .map_err(|error| anyhow::anyhow!("cannot stop the query service: {error}"))?;
        Ok(())
    }
}

/// Answers one query (reading sled on a blocking thread) and frees its slot.
async fn answer(
    context: QueryContext,
    query: Query,
    request: service::Request,
    _slot: OwnedSemaphorePermit,
) {
    let span = if telemetry::exporting() {
        let span = tracing::info_span!("query", endpoint = query.endpoint_name());
        telemetry::adopt_context(&span, request.message.headers.as_ref());
        span
    } else {
        tracing::Span::none()
    };
    let payload = request.message.payload.clone();
    let read_span = span.clone();
    let answered =
        tokio::task::spawn_blocking(move || read_span.in_scope(|| context.answer(query, &payload)))
            .await
            .unwrap_or_else(|error| {
                Err(QueryError::Internal(format!("the query failed: {error}")))
            });
    let response = answered
        .map(Bytes::from)
        .map_err(|error| service::error::Error {
            code: error.code(),
            status: error.to_string(),
        });
    if let Err(error) = request.respond(response).instrument(span).await {
        tracing::warn!(endpoint = query.endpoint_name(), %error, "cannot answer a query");
    }
}
