//! Per-entity queries over the NATS service API (`$SRV.PING.playhead` discovers them).
//! Errors travel as `Nats-Service-Error-Code` with HTTP-like codes the gateway maps once.

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{QUERY_GROUP, QUERY_SERVICE, Query};
use playhead_proto::v1;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::storage::Storage;
use crate::storage::station_store::PlaysQuery;
use crate::wire;

/// Largest page a query returns.
pub const MAX_PAGE_SIZE: u32 = 100;
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// A query that cannot be answered, with the service error code it travels as.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    /// Service error codes (HTTP-like): 400, 404, 500.
    pub fn code(&self) -> usize {
        match self {
            QueryError::InvalidArgument(_) => 400,
            QueryError::NotFound(_) => 404,
            QueryError::Internal(_) => 500,
        }
    }
}

/// Serves the query endpoints until `stop` is cancelled.
pub async fn serve(
    client: async_nats::Client,
    storage: Storage,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let service = client
        .service_builder()
        .description("playhead per-entity queries")
        .queue_group(QUERY_GROUP)
        .start(QUERY_SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|error| anyhow::anyhow!("cannot start the query service: {error}"))?;
    let mut list_plays = service
        .endpoint_builder()
        .name(Query::ListPlays.endpoint_name())
        .add(Query::ListPlays.subject())
        .await
        .map_err(|error| anyhow::anyhow!("cannot add the list_plays endpoint: {error}"))?;
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => break,
            request = list_plays.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let response = list_plays_response(&storage, &request.message.payload)
            .map(|response| Bytes::from(response.encode_to_vec()))
            .map_err(|error| service::error::Error {
                code: error.code(),
                status: error.to_string(),
            });
        if let Err(error) = request.respond(response).await {
            tracing::warn!(%error, "cannot answer a list_plays request");
        }
    }
    service
        .stop()
        .await
        .map_err(|error| anyhow::anyhow!("cannot stop the query service: {error}"))?;
    Ok(())
}

/// Validates a page request; shared with the gateway so both edges agree.
pub fn plays_query(request: &v1::ListPlaysRequest) -> Result<(StationId, PlaysQuery), QueryError> {
    let station = StationId::parse(request.station_id.clone())
        .map_err(|error| QueryError::InvalidArgument(error.to_string()))?;
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if size <= MAX_PAGE_SIZE => size,
        size => {
            return Err(QueryError::InvalidArgument(format!(
                "page_size {size} is over the limit of {MAX_PAGE_SIZE}"
            )));
        }
    };
    Ok((
        station,
        PlaysQuery {
            page_size: page_size as usize,
            before: request.before,
            since: request.since,
        },
    ))
}

fn list_plays_response(
    storage: &Storage,
    payload: &[u8],
) -> Result<v1::ListPlaysResponse, QueryError> {
    let request = v1::ListPlaysRequest::decode(payload)
        .map_err(|error| QueryError::InvalidArgument(format!("undecodable request: {error}")))?;
    let (station, query) = plays_query(&request)?;
    let stored = storage
        .stations
        .load(&station)
        .map_err(|error| QueryError::Internal(error.to_string()))?;
    if stored.state.last_play_seq == 0 {
        return Err(QueryError::NotFound(format!(
            "station {station} has no plays"
        )));
    }
    let page = storage
        .stations
        .list_plays(&station, query)
        .map_err(|error| QueryError::Internal(error.to_string()))?;
    Ok(v1::ListPlaysResponse {
        plays: page.plays.into_iter().map(wire::play).collect(),
        next_before: page.next_before,
        next_since: page.next_since,
    })
}
