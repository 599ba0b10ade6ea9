//! `StationService`: validates, maps to NATS, maps errors once (see [`crate::error`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::{Stream, StreamExt};
use playhead_actors::query::plays_query;
use playhead_actors::telemetry;
use playhead_proto::headers::MSG_ID;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{Query, station_song};
use playhead_proto::v1::station_service_server::StationService;
use playhead_proto::v1::{
    GetNowPlayingRequest, GetNowPlayingResponse, ListPlaysRequest, ListPlaysResponse, NowPlaying,
    ReportSongResponse, SongObserved, WatchNowPlayingRequest,
};
use prost::Message;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use crate::now_playing::NowPlayingCache;

/// Most stations one WatchNowPlaying stream may follow.
pub const MAX_WATCHED_STATIONS: usize = 100;
/// gRPC metadata key whose value becomes the broker's `Nats-Msg-Id` (retries de-duplicate).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

pub struct StationApi {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub cache: NowPlayingCache,
    pub metrics: Arc<GatewayMetrics>,
    pub request_timeout: Duration,
    /// Ends open watch streams, so a graceful shutdown does not wait on idle watchers.
    pub shutdown: CancellationToken,
}

type NowPlayingStream = Pin<Box<dyn Stream<Item = Result<NowPlaying, Status>> + Send>>;

impl StationApi {
    fn get_now_playing(&self, request: &GetNowPlayingRequest) -> Result<NowPlaying, GatewayError> {
        let station = StationId::parse(request.station_id.clone())?;
        self.cache
            .get(&station)
            .map(|value| NowPlaying::clone(&value))
            .ok_or_else(|| GatewayError::NotFound(format!("station {station} has no song yet")))
    }

    async fn list_plays(
        &self,
        request: ListPlaysRequest,
    ) -> Result<ListPlaysResponse, GatewayError> {
        plays_query(&request)?;
        let mut headers = HeaderMap::new();
        telemetry::inject_context(&mut headers);
        let reply = tokio::time::timeout(
            self.request_timeout,
            self.client.request_with_headers(
                Query::ListPlays.subject(),
                headers,
                request.encode_to_vec().into(),
            ),
        )
        .await
        .map_err(|_| GatewayError::Timeout(self.request_timeout.as_millis() as u64))?
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
        ListPlaysResponse::decode(reply.payload.as_ref())
            .map_err(|error| GatewayError::Internal(format!("undecodable node reply: {error}")))
    }

    fn watch(&self, request: &WatchNowPlayingRequest) -> Result<NowPlayingStream, GatewayError> {
        if request.station_ids.is_empty() {
            return Err(GatewayError::InvalidArgument(
                "name at least one station in station_ids".into(),
            ));
        }
        if request.station_ids.len() > MAX_WATCHED_STATIONS {
            return Err(GatewayError::InvalidArgument(format!(
                "{} stations requested; one stream follows at most {MAX_WATCHED_STATIONS}",
                request.station_ids.len()
            )));
        }
        let stations = request
            .station_ids
            .iter()
            .map(|id| StationId::parse(id.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let per_station = stations.iter().map(|station| {
            WatchStream::new(self.cache.subscribe(station))
                .filter_map(|value| async move { value.map(|value| Ok(NowPlaying::clone(&value))) })
                .boxed()
        });
        let metrics = self.metrics.clone();
        metrics.watchers.inc();
        let guard = WatcherGuard(metrics);
        let merged = futures::stream::select_all(per_station)
            .take_until(self.shutdown.clone().cancelled_owned())
            .map(move |item| {
                let _ = &guard;
                item
            });
        Ok(Box::pin(merged))
    }

    async fn report_song(
        &self,
        song: SongObserved,
        idempotency_key: Option<&str>,
    ) -> Result<ReportSongResponse, GatewayError> {
        let station = StationId::parse(song.station_id.clone())?;
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
        let ack = self
            .jetstream
            .publish_with_headers(station_song(&station), headers, song.encode_to_vec().into())
            .await
            .map_err(|error| GatewayError::Unavailable(error.to_string()))?;
        let ack = tokio::time::timeout(self.request_timeout, ack)
            .await
            .map_err(|_| GatewayError::Timeout(self.request_timeout.as_millis() as u64))?
            .map_err(|error| GatewayError::Unavailable(error.to_string()))?;
        Ok(ReportSongResponse {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// Counts open watch streams; decremented when the client goes away.
struct WatcherGuard(Arc<GatewayMetrics>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}

#[tonic::async_trait]
impl StationService for StationApi {
    async fn get_now_playing(
        &self,
        request: Request<GetNowPlayingRequest>,
    ) -> Result<Response<GetNowPlayingResponse>, Status> {
        let started = Instant::now();
        let result = self
            .get_now_playing(request.get_ref())
            .map(|now_playing| {
                Response::new(GetNowPlayingResponse {
                    now_playing: Some(now_playing),
                })
            })
            .map_err(Status::from);
        self.metrics.record("GetNowPlaying", started, &result);
        result
    }

    async fn list_plays(
        &self,
        request: Request<ListPlaysRequest>,
    ) -> Result<Response<ListPlaysResponse>, Status> {
        let started = Instant::now();
        let result = self
            .list_plays(request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from);
        self.metrics.record("ListPlays", started, &result);
        result
    }

    async fn watch_now_playing(
        &self,
        request: Request<WatchNowPlayingRequest>,
    ) -> Result<Response<NowPlayingStream>, Status> {
        let started = Instant::now();
        let result = self
            .watch(request.get_ref())
            .map(Response::new)
            .map_err(Status::from);
        self.metrics.record("WatchNowPlaying", started, &result);
        result
    }

    async fn report_song(
        &self,
        request: Request<SongObserved>,
    ) -> Result<Response<ReportSongResponse>, Status> {
        let started = Instant::now();
        let idempotency_key = request
            .metadata()
            .get(IDEMPOTENCY_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let result = self
            .report_song(request.into_inner(), idempotency_key.as_deref())
            .await
            .map(Response::new)
            .map_err(Status::from);
        self.metrics.record("ReportSong", started, &result);
        result
    }
}
