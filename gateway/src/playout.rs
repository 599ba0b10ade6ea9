//! `PlayoutService`. `Heartbeat` publishes into the user inbox with a reply subject and waits
//! for the user actor's decision for at most `heartbeat_timeout`; when no decision comes in
//! time, or the broker cannot be reached, it **fails open**: CONTINUE with reason DEGRADED
//! and the normal interval. Only an explicit STOP from the actor stops a stream; a heartbeat
//! the gateway refuses as malformed is the only error a player sees. The three reads go
//! through the node's query endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use playhead_client::command;
use playhead_client::query::{QueryError, entitlements_query, playouts_query, view_history_query};
use playhead_client::wire;
use playhead_proto::ids::UserId;
use playhead_proto::subjects::{Query, UserKind, user_subject};
use playhead_proto::v1::playout_service_server::PlayoutService;
use playhead_proto::v1::{
    CheckEntitlementsRequest, CheckEntitlementsResponse, Heartbeat, HeartbeatDecision,
    ListPlayoutsRequest, ListPlayoutsResponse, ListViewHistoryRequest, ListViewHistoryResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize};
use crate::error::{GatewayError, respond};
use crate::metrics::GatewayMetrics;
use crate::node_client::{CommandOutcome, NodeClient, command_headers};

pub struct PlayoutApi {
    pub node: Arc<NodeClient>,
    pub metrics: Arc<GatewayMetrics>,
    /// Longest wait for a decision before failing open.
    pub heartbeat_timeout: Duration,
    /// Heartbeats answered DEGRADED so far (an outage logs once per `FAIL_OPEN_LOG_EVERY`).
    pub fail_opens: AtomicU64,
}

/// During an outage every heartbeat fails open: log the first and then one in this many.
const FAIL_OPEN_LOG_EVERY: u64 = 1000;

impl PlayoutApi {
    async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatDecision, GatewayError> {
        // Refused here as the node's screen would refuse it, so it is never dead-lettered.
        let user = UserId::parse(heartbeat.user_id.as_str())?;
        let screened = command::heartbeat(&heartbeat)?;
        let payload = self.node.encode_command(&heartbeat)?;
        let decided = self
            .node
            .command::<HeartbeatDecision>(
                user_subject(&user, UserKind::Heartbeat),
                command_headers(None)?,
                payload,
                self.heartbeat_timeout,
            )
            .await;
        let (decision, fail_open_cause) = match decided {
            Ok(CommandOutcome::Decided(decision)) => (decision, None),
            // Only with a Msg-Id, which heartbeats are not given; fail open all the same.
            Ok(CommandOutcome::Duplicate) => (self.degraded(), Some("duplicate")),
            Err(error) => {
                let so_far = self.fail_opens.fetch_add(1, Ordering::Relaxed) + 1;
                if so_far % FAIL_OPEN_LOG_EVERY == 1 {
                    tracing::warn!(
                        user = %user,
                        playout = %screened.playout_id,
                        %error,
                        failed_open_so_far = so_far,
                        "no heartbeat decision; failing open (CONTINUE, DEGRADED); logged once \
                         per {FAIL_OPEN_LOG_EVERY}, see playhead_gateway_heartbeat_fail_open_total"
                    );
                }
                let cause = match error {
                    GatewayError::Timeout(_) => "timeout",
                    GatewayError::Unavailable(_) => "unavailable",
                    _ => "internal",
                };
                (self.degraded(), Some(cause))
            }
        };
        self.metrics.record_heartbeat(&decision, fail_open_cause);
        Ok(decision)
    }

    /// A read through the node's query endpoint, checked first with the node's own rules.
    async fn read<Q: Message, R: Message + Default, V>(
        &self,
        query: Query,
        request: Request<Q>,
        user_id: fn(&Q) -> &str,
        check: fn(&Q) -> Result<V, QueryError>,
    ) -> Result<Response<R>, Status> {
        authorize(&request, Access::ReadUser(user_id(request.get_ref())))?;
        respond(
            self.node
                .checked_query(query, &request.into_inner(), check)
                .await,
        )
    }

    fn degraded(&self) -> HeartbeatDecision {
        // The interval a fail-open answer asks for: the nodes' heartbeat interval.
        wire::degraded_decision(self.node.settings.heartbeat_interval())
    }
}

#[tonic::async_trait]
impl PlayoutService for PlayoutApi {
    async fn heartbeat(
        &self,
        request: Request<Heartbeat>,
    ) -> Result<Response<HeartbeatDecision>, Status> {
        authorize(&request, Access::ActFor(&request.get_ref().user_id))?;
        let result = self.heartbeat(request.into_inner()).await;
        respond(result)
    }

    async fn list_playouts(
        &self,
        request: Request<ListPlayoutsRequest>,
    ) -> Result<Response<ListPlayoutsResponse>, Status> {
        self.read(
            Query::ListPlayouts,
            request,
            |request| &request.user_id,
            playouts_query,
        )
        .await
    }

    async fn list_view_history(
        &self,
        request: Request<ListViewHistoryRequest>,
    ) -> Result<Response<ListViewHistoryResponse>, Status> {
        self.read(
            Query::ListViewHistory,
            request,
            |request| &request.user_id,
            view_history_query,
        )
        .await
    }

    async fn check_entitlements(
        &self,
        request: Request<CheckEntitlementsRequest>,
    ) -> Result<Response<CheckEntitlementsResponse>, Status> {
        self.read(
            Query::CheckEntitlements,
            request,
            |request| &request.user_id,
            entitlements_query,
        )
        .await
    }
}
