//! `StationService`: validates, maps to NATS, maps errors once (see [`crate::error`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use playhead_client::query::plays_query;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{Query, station_song};
use playhead_proto::v1::station_service_server::StationService;
use playhead_proto::v1::{
    GetNowPlayingRequest, GetNowPlayingResponse, ListPlaysRequest, ListPlaysResponse, NowPlaying,
    ReportSongResponse, SongObserved, WatchNowPlayingRequest,
};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize};
use crate::error::{GatewayError, respond};
use crate::metrics::GatewayMetrics;
use crate::node_client::{NodeClient, command_headers, idempotency_key};
use crate::now_playing::NowPlayingCache;

/// Most stations one WatchNowPlaying stream may follow.
pub const MAX_WATCHED_STATIONS: usize = 100;
pub struct StationApi {
    pub node: Arc<NodeClient>,
    pub cache: NowPlayingCache,
    pub metrics: Arc<GatewayMetrics>,
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
        self.node
            .checked_query(Query::ListPlays, &request, plays_query)
            .await
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
        let headers = command_headers(idempotency_key)?;
        let payload = self.node.encode_command(&song)?;
        let ack = self
            .node
            .publish(station_song(&station), headers, payload)
            .await?;
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
        authorize(&request, Access::ReadStations)?;
        respond(
            self.get_now_playing(request.get_ref())
                .map(|now_playing| GetNowPlayingResponse {
                    now_playing: Some(now_playing),
                }),
        )
    }

    async fn list_plays(
        &self,
        request: Request<ListPlaysRequest>,
    ) -> Result<Response<ListPlaysResponse>, Status> {
        authorize(&request, Access::ReadStations)?;
        respond(self.list_plays(request.into_inner()).await)
    }

    async fn watch_now_playing(
        &self,
        request: Request<WatchNowPlayingRequest>,
    ) -> Result<Response<NowPlayingStream>, Status> {
        authorize(&request, Access::ReadStations)?;
        respond(self.watch(request.get_ref()))
    }

    async fn report_song(
        &self,
        request: Request<SongObserved>,
    ) -> Result<Response<ReportSongResponse>, Status> {
        authorize(&request, Access::Report(&request.get_ref().station_id))?;
        let idempotency_key = idempotency_key(&request);
        respond(
            self.report_song(request.into_inner(), idempotency_key.as_deref())
                .await,
        )
    }
}
