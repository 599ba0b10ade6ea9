//! Gateway assembly: NATS connection, now-playing cache, gRPC services with health and
//! reflection, `/metrics`, and one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use playhead_client::service::http as metrics_http;
use playhead_proto::v1::import_service_server::ImportServiceServer;
use playhead_proto::v1::player_service_server::PlayerServiceServer;
use playhead_proto::v1::playout_service_server::PlayoutServiceServer;
use playhead_proto::v1::show_service_server::ShowServiceServer;
use playhead_proto::v1::station_service_server::StationServiceServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;

use crate::auth::KeyRing;
use crate::console::{self, Console};
use crate::health;
use crate::import::{ImportApi, ImportLimits};
use crate::metrics::GatewayMetrics;
use crate::node_client::NodeClient;
use crate::now_playing::NowPlayingCache;
use crate::player::PlayerApi;
use crate::playout::PlayoutApi;
use crate::rpc_layer::RpcLayer;
use crate::settings::Settings;
use crate::show::ShowApi;
use crate::station::StationApi;
use playhead_client::service::nats_auth::{self, NatsAccess};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub nats_url: String,
    /// The gateway user's nkey and the broker's CA, when given.
    pub nats: NatsAccess,
    /// The keys tokens are verified with.
    pub keys: Arc<KeyRing>,
    /// The gRPC server's TLS identity; `None` serves plaintext (loopback only, see
    /// [`crate::config`]).
    pub tls: Option<GatewayTls>,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// The operator console's HTTP address; `None` serves no console.
    pub console_listen: Option<SocketAddr>,
    /// Longest wait for the broker or a node on a request.
    pub request_timeout: Duration,
    /// Longest wait for a heartbeat decision before answering CONTINUE / DEGRADED.
    pub heartbeat_timeout: Duration,
    /// RPCs handled at once; one more is answered RESOURCE_EXHAUSTED.
    pub max_concurrent_rpcs: usize,
    /// HTTP/2 streams one connection may have open at once (more wait in the client).
    pub max_streams_per_connection: u32,
    /// How long a RESOURCE_EXHAUSTED, OUT_OF_RANGE or UNAUTHENTICATED answer waits (zero: none).
    pub refusal_pause: Duration,
    /// Limits of `UploadImport`.
    pub imports: ImportLimits,
}

/// A TLS identity read and checked at start.
#[derive(Clone)]
pub struct GatewayTls {
    pub cert_path: std::path::PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for GatewayTls {
    /// Names the certificate, never the key.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GatewayTls")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl GatewayTls {
    /// Reads the certificate chain and the (owner-only) key, and checks that rustls takes them.
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<GatewayTls, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let cert_pem = std::fs::read_to_string(cert)
            .map_err(|error| ConfigError::Tls(format!("tls_cert {}: {error}", cert.display())))?;
        let key_pem = playhead_client::service::secret_file::read_private_file(key)
            .map_err(|error| ConfigError::Tls(format!("tls_key {}: {error}", key.display())))?;
        let tls = GatewayTls {
            cert_path: cert.to_owned(),
            cert_pem,
            key_pem,
        };
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|error| {
                ConfigError::Tls(format!(
                    "tls_cert {} with tls_key {}: {error}",
                    cert.display(),
                    key.display()
                ))
            })?;
        Ok(tls)
    }

    fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct GatewayEndpoints {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub console: Option<SocketAddr>,
}

/// Largest gRPC request a service decodes: twice the most a node can be configured to take in
/// one inbox message (`ingest.max_message_bytes` ≤ 1 MiB). A request up to this size that does
/// not fit the nodes' current limit is answered INVALID_ARGUMENT with its size; a larger one is
/// refused by tonic before it is read whole.
pub const MAX_GRPC_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Serves until `shutdown` is cancelled; `ready` gets the bound addresses.
pub async fn serve(
    config: GatewayConfig,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<GatewayEndpoints>>,
) -> anyhow::Result<()> {
    let imports = config.imports;
    let client = nats_auth::connect(&config.nats_url, "playhead-gateway", config.nats.options())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats_url))?;
    let jetstream = jetstream::new(client.clone());
    let metrics = GatewayMetrics::new();
    let cache = NowPlayingCache::default();
    let stop_background = CancellationToken::new();
    let mut background = JoinSet::new();
    background.spawn(
        cache
            .clone()
            .follow(jetstream.clone(), stop_background.clone()),
    );
    let settings = Arc::new(Settings::default());
    background.spawn(settings.clone().follow(jetstream, stop_background.clone()));
    let (node, reply_dispatcher) = NodeClient::start(
        client.clone(),
        config.request_timeout,
        settings.clone(),
        config.nats.credentials.clone(),
        stop_background.clone(),
    )
    .await
    .context("cannot subscribe for command replies")?;
    background.spawn(reply_dispatcher);

    let grpc_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.listen))?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics_listen))?;
    let console_listener = match config.console_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for the console on {address}"))?,
        ),
        None => None,
    };
    let endpoints = GatewayEndpoints {
        grpc: grpc_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
        console: match &console_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        },
    };
    if let Some(listener) = console_listener {
        let console = Console::new(
            node.clone(),
            cache.clone(),
            metrics.clone(),
            stop_background.clone(),
            config.keys.clone(),
        );
        let stop = stop_background.clone();
        background.spawn(async move {
            if let Err(error) = console::serve(listener, console, stop.cancelled_owned()).await {
                tracing::warn!(%error, "console stopped");
            }
        });
    }
    {
        let metrics = metrics.clone();
        let cache = cache.clone();
        let settings = settings.clone();
        let stop = stop_background.clone();
        let readiness = health::readiness(client.clone());
        background.spawn(async move {
            let process = metrics_http::ProcessCollector::registry();
            let render = move || {
                metrics.cached_stations.set(cache.len() as i64);
                metrics
                    .heartbeat_interval_seconds
                    .set(settings.heartbeat_interval().as_secs() as i64);
                metrics
                    .max_message_bytes
                    .set(settings.max_message_bytes() as i64);
                metrics_http::render(&[&metrics.registry, &process])
            };
            if let Err(error) = metrics_http::serve(
                metrics_listener,
                Arc::new(render),
                readiness,
                stop.cancelled_owned(),
            )
            .await
            {
                tracing::warn!(%error, "metrics endpoint stopped");
            }
        });
    }

    // NOT_SERVING until the broker connection is seen up, and whenever it is down.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    background.spawn(health::follow_broker(
        health_reporter,
        client.clone(),
        vec![
            StationServiceServer::<StationApi>::NAME,
            PlayerServiceServer::<PlayerApi>::NAME,
            PlayoutServiceServer::<PlayoutApi>::NAME,
            ImportServiceServer::<ImportApi>::NAME,
            ShowServiceServer::<ShowApi>::NAME,
        ],
        stop_background.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(playhead_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let station = StationApi {
        node: node.clone(),
        cache,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let player = PlayerApi {
        node: node.clone(),
        metrics: metrics.clone(),
    };
    let uploads = TaskTracker::new();
    let import = ImportApi::new(
        node.clone(),
        metrics.clone(),
        imports,
        uploads.clone(),
        shutdown.clone(),
    );
    let show = ShowApi { node: node.clone() };
    let rpc_metrics = metrics.clone();
    let playout = PlayoutApi {
        node,
        metrics,
        heartbeat_timeout: config.heartbeat_timeout,
        fail_opens: Default::default(),
    };
    tracing::info!(
        grpc = %endpoints.grpc,
        metrics = %format!("http://{}/metrics", endpoints.metrics),
        console = %endpoints
            .console
            .map_or_else(|| "off".to_owned(), |address| format!("http://{address}/")),
        nats = %config.nats_url,
        tls = config.tls.is_some(),
        "playhead-gateway serving"
    );
    if let Some(ready) = ready {
        let _ = ready.send(endpoints);
    }
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        server = server
            .tls_config(tls.server_config())
            .context("the TLS identity was checked at start")?;
    }
    let served = server
        .max_concurrent_streams(Some(config.max_streams_per_connection))
        // Flow-control windows start at HTTP/2's 64 KiB and grow with the measured
        // bandwidth-delay product: a large request on a fast link still flows, while a stream
        // that is refused has pushed at most a small window (with hyper's fixed 1 MiB, a flood of
        // refused 4 MiB requests moved gigabytes a second over loopback; `make bench`, edge).
        .http2_adaptive_window(Some(true))
        .layer(RpcLayer::new(
            rpc_metrics,
            config.keys.clone(),
            config.max_concurrent_rpcs,
            config.refusal_pause,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            StationServiceServer::new(station).max_decoding_message_size(MAX_GRPC_REQUEST_BYTES),
        )
        .add_service(
            PlayerServiceServer::new(player).max_decoding_message_size(MAX_GRPC_REQUEST_BYTES),
        )
        .add_service(
            PlayoutServiceServer::new(playout).max_decoding_message_size(MAX_GRPC_REQUEST_BYTES),
        )
        // Each upload chunk is one message of at most this size.
        .add_service(
            ImportServiceServer::new(import).max_decoding_message_size(MAX_GRPC_REQUEST_BYTES),
        )
        .add_service(ShowServiceServer::new(show).max_decoding_message_size(MAX_GRPC_REQUEST_BYTES))
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY small replies wait on Nagle's algorithm and delayed ACKs:
            // a flat ~40 ms per request once a connection is busy. Listeners passed in as a
            // stream do not get the server builder's nodelay setting, so set it here.
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await;
    // The one shutdown path: gRPC has stopped taking requests; let the uploads still storing
    // (their clients gone) delete their partial objects or request their imports; stop the
    // cache and metrics, then drain NATS.
    uploads.close();
    uploads.wait().await;
    stop_background.cancel();
    while background.join_next().await.is_some() {}
    if let Err(error) = client.drain().await {
        tracing::warn!(%error, "nats drain failed");
    }
    tracing::info!("playhead-gateway stopped");
    served.context("gRPC server failed")
}
