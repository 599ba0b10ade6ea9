//! The operator's web console: one page (embedded in the binary) and the small JSON + SSE API
//! it reads, served on its own HTTP port (`console_listen`).
//!
//! **Why JSON and Server-Sent Events rather than gRPC-Web.** A browser reads SSE with the
//! built-in `EventSource` (reconnects by itself) and JSON with `fetch`: the page is plain
//! HTML and JavaScript with no generated client, bundler or proxy, so it can be embedded as one
//! file and read by a person. The API is a view for people, not a second public contract: the
//! gRPC services stay the API for programs. Every read goes through the same checks and node
//! queries as the gRPC handlers ([`crate::node_client::NodeClient::checked_query`]).
//!
//! - `GET /`: the page. `GET /api/events`: SSE, `now-playing` (every station's song on
//!   connect, then each change, pushed from the KV-fed cache — no polling) and `dead-letter`
//!   (each new dead letter).
//! - `GET /api/stations/{id}/plays`, `GET /api/users/{id}`: play history, user lookup.
//! - `GET /api/dead-letters`, `POST /api/dead-letters/{sequence}/replay`: see [`dead_letters`].
//! - `GET /api/status`: broker, node leases and consumer lag; see [`status`].
//! - `GET|POST|DELETE /api/session`: sign in with an operator or admin token; see [`session`].
//!
//! Every other `/api/` route needs a signed-in operator or admin (a replay: admin). The console
//! is bound to loopback by default and speaks plain HTTP (the cookie is not `Secure`): reach it
//! through an SSH tunnel or `kubectl port-forward`. A replay must be sent as
//! `application/json`, which a cross-site form cannot do without a CORS preflight this server
//! never grants, and the session cookie is `SameSite=Strict`.

pub mod dead_letters;
pub mod events;
pub mod session;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use crate::auth::KeyRing;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use playhead_client::query::{playouts_query, plays_query, sessions_query, view_history_query};
use playhead_proto::subjects::Query as NodeQuery;
use playhead_proto::v1::{
    ListPlayoutsRequest, ListPlayoutsResponse, ListPlaysRequest, ListPlaysResponse,
    ListSessionsRequest, ListSessionsResponse, ListViewHistoryRequest, ListViewHistoryResponse,
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use crate::node_client::NodeClient;
use crate::now_playing::NowPlayingCache;

/// The page, embedded at build time.
const INDEX_HTML: &str = include_str!("../../console/index.html");

/// Largest request body (a replay's edited payload, JSON-quoted): as large as a gRPC request.
const MAX_BODY_BYTES: usize = crate::server::MAX_GRPC_REQUEST_BYTES;

/// Most event streams open at once (each holds a broker subscription).
pub const MAX_EVENT_STREAMS: usize = 64;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub node: Arc<NodeClient>,
    pub cache: NowPlayingCache,
    pub metrics: Arc<GatewayMetrics>,
    /// Ends the event streams, so a graceful shutdown does not wait on open pages.
    pub shutdown: CancellationToken,
    /// The keys sign-in tokens are verified with (the gRPC ones).
    pub keys: Arc<KeyRing>,
    streams: Arc<Semaphore>,
}

impl Console {
    pub fn new(
        node: Arc<NodeClient>,
        cache: NowPlayingCache,
        metrics: Arc<GatewayMetrics>,
        shutdown: CancellationToken,
        keys: Arc<KeyRing>,
    ) -> Self {
        Self {
            node,
            cache,
            metrics,
            shutdown,
            keys,
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }

    pub fn router(self) -> Router {
        let api = Router::new()
            .route("/api/events", get(events::stream))
            .route("/api/stations/{station}/plays", get(station_plays))
            .route("/api/users/{user}", get(user))
            .route("/api/dead-letters", get(dead_letters::list))
            .route(
                "/api/dead-letters/{sequence}/replay",
                post(dead_letters::replay),
            )
            .route("/api/status", get(status::report))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                session::guard,
            ));
        Router::new()
            .route("/", get(index))
            .route(
                "/api/session",
                get(session::current)
                    .post(session::sign_in)
                    .delete(session::sign_out),
            )
            .merge(api)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    console: Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, console.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// An API answer: JSON, or `{"error": …}` with the status of its [`GatewayError`].
pub type ApiResult<T> = Result<Json<T>, ApiError>;

pub struct ApiError(pub GatewayError);

impl<E: Into<GatewayError>> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.0.to_string() });
        (status, Json(body)).into_response()
    }
}

async fn index() -> Response {
    let mut response = axum::response::Html(INDEX_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A protobuf message in the canonical proto3 JSON mapping, as the page reads it.
pub fn proto_json<M>(message: &M) -> serde_json::Value
where
    M: prost::Message + prost::Name + std::fmt::Debug,
{
    serde_json::from_str(&playhead_proto::codec::to_json(message))
        .unwrap_or(serde_json::Value::Null)
}

#[derive(Debug, Deserialize)]
struct PlaysPage {
    #[serde(default)]
    page_size: u32,
    before: Option<u64>,
}

async fn station_plays(
    State(console): State<Console>,
    Path(station): Path<String>,
    Query(page): Query<PlaysPage>,
) -> ApiResult<serde_json::Value> {
    let request = ListPlaysRequest {
        station_id: station,
        page_size: page.page_size,
        before: page.before,
        since: None,
    };
    let plays: ListPlaysResponse = console
        .node
        .checked_query(NodeQuery::ListPlays, &request, plays_query)
        .await?;
    Ok(Json(proto_json(&plays)))
}

/// Most view-history records the user lookup shows.
const USER_VIEW_HISTORY: u32 = 50;

/// A user's sessions, live playouts and latest viewing history, read at once.
async fn user(
    State(console): State<Console>,
    Path(user): Path<String>,
) -> ApiResult<serde_json::Value> {
    let node = &console.node;
    let sessions = ListSessionsRequest {
        user_id: user.clone(),
        page_size: 100,
        page_token: String::new(),
    };
    let playouts = ListPlayoutsRequest {
        user_id: user.clone(),
    };
    let history = ListViewHistoryRequest {
        user_id: user,
        page_size: USER_VIEW_HISTORY,
        before: None,
    };
    let (sessions, playouts, history) = tokio::try_join!(
        node.checked_query::<_, ListSessionsResponse, _>(
            NodeQuery::ListSessions,
            &sessions,
            sessions_query
        ),
        node.checked_query::<_, ListPlayoutsResponse, _>(
            NodeQuery::ListPlayouts,
            &playouts,
            playouts_query
        ),
        node.checked_query::<_, ListViewHistoryResponse, _>(
            NodeQuery::ListViewHistory,
            &history,
            view_history_query
        ),
    )?;
    Ok(Json(serde_json::json!({
        "sessions": proto_json(&sessions),
        "playouts": proto_json(&playouts),
        "viewHistory": proto_json(&history),
    })))
}
