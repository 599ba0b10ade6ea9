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
        // Song covers: the Cover Art Archive redirects each image to archive.org, then to one
        // of its `*.archive.org` storage hosts (the page shows https covers only).
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data: https://coverartarchive.org \
             https://archive.org https://*.archive.org; frame-ancestors 'none'",
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

#[cfg(test)]
mod tests {
    use playhead_proto::v1::{NowPlaying, Song, SongEnrichment};

    use super::*;

    fn now_playing(enrichment: Option<SongEnrichment>) -> NowPlaying {
        NowPlaying {
            station_id: "radio-1".into(),
            play_seq: 7,
            song: Some(Song {
                artist: "Nina Simone".into(),
                title: "Sinnerman".into(),
            }),
            started_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            enrichment,
        }
    }

    fn pastel_blues() -> SongEnrichment {
        SongEnrichment {
            recording_mbid: "1b2c3d4e-0000-4000-8000-000000000001".into(),
            title: "Sinnerman".into(),
            artist: "Nina Simone".into(),
            artist_mbid: "1b2c3d4e-0000-4000-8000-000000000002".into(),
            release_mbid: "1b2c3d4e-0000-4000-8000-000000000003".into(),
            release_title: "Pastel Blues".into(),
            release_year: 1965,
            cover_url: "https://coverartarchive.org/release/1b2c3d4e/front-250.jpg".into(),
            enriched_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn the_wall_reads_the_enrichment_under_its_camel_case_names() {
        let value = proto_json(&now_playing(Some(pastel_blues())));

        let enrichment = &value["enrichment"];
        assert_eq!(
            enrichment["recordingMbid"],
            "1b2c3d4e-0000-4000-8000-000000000001"
        );
        assert_eq!(enrichment["releaseTitle"], "Pastel Blues");
        assert_eq!(enrichment["releaseYear"], 1965, "a number, not a string");
        assert_eq!(
            enrichment["coverUrl"],
            "https://coverartarchive.org/release/1b2c3d4e/front-250.jpg"
        );
    }

    #[test]
    fn unknown_parts_of_an_enrichment_are_left_out_and_no_enrichment_is_no_field() {
        let bare = SongEnrichment {
            release_year: 0,
            cover_url: String::new(),
            ..pastel_blues()
        };
        let value = proto_json(&now_playing(Some(bare)));
        let enrichment = value["enrichment"].as_object().expect("an object");
        assert!(!enrichment.contains_key("releaseYear"), "{value}");
        assert!(!enrichment.contains_key("coverUrl"), "{value}");

        let value = proto_json(&now_playing(None));
        assert!(value.get("enrichment").is_none(), "{value}");
        assert_eq!(value["song"]["title"], "Sinnerman");
    }

    #[tokio::test]
    async fn the_page_may_load_covers_from_the_cover_art_archive_only() {
        let response = index().await;
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        let directive = |name: &str| {
            policy
                .split(';')
                .map(str::trim)
                .find_map(|directive| directive.strip_prefix(name)?.strip_prefix(' '))
                .map(|sources| sources.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("no {name} in {policy}"))
        };
        assert_eq!(
            directive("img-src"),
            [
                "'self'",
                "data:",
                "https://coverartarchive.org",
                "https://archive.org",
                "https://*.archive.org"
            ]
        );
        assert_eq!(directive("default-src"), ["'self'"]);
        assert_eq!(directive("frame-ancestors"), ["'none'"]);
    }
}
