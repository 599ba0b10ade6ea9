//! `playhead-gateway`: the gRPC gateway. See `playhead-gateway --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use playhead_client::service::duration::parse_duration;
use playhead_client::service::telemetry::{self, LogFormat};
use playhead_gateway::config::{self, Layer, Listen};
use playhead_gateway::server;
use tokio_util::sync::CancellationToken;

/// playhead's stateless gRPC gateway (package playhead.v1): validates requests, publishes
/// commands to NATS, serves now-playing from a local cache fed by a KV watch, forwards
/// per-entity queries to the nodes, and serves the operator console (a web page) on its own
/// port. Health (grpc.health.v1) and reflection are on.
///
/// Settings, each layer over the one before: defaults; a TOML file (--config or
/// PLAYHEAD_GATEWAY_CONFIG; keys as the flags' names with underscores, e.g.
/// request_timeout = "2s"); PLAYHEAD_GATEWAY_<KEY> environment variables (e.g.
/// PLAYHEAD_GATEWAY_REQUEST_TIMEOUT=2s); flags. Unknown keys are refused. Durations are
/// written with their unit: 250ms, 2s, 1m. The heartbeat interval of a fail-open answer is the
/// nodes' (playout.heartbeat_interval_secs), which they publish. Stops gracefully on SIGTERM
/// or Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "playhead-gateway", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = config::CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
    /// NATS server or cluster to use [default: nats://127.0.0.1:4222].
    #[arg(long)]
    nats_url: Option<String>,
    /// The gateway user's nkey seed file (mode 0600), when the broker has users (every broker
    /// configured from deploy/nats does; `make run` passes the embedded broker's).
    #[arg(long)]
    nats_nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) of a broker that listens with TLS (tls:// URLs); TLS is then required.
    #[arg(long)]
    nats_ca_file: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Prometheus /metrics, /livez and /readyz listen address [default: 127.0.0.1:9465].
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// The operator console's HTTP address, or "off" [default: 127.0.0.1:9466]. It asks for an
    /// operator or admin token; keep it on loopback: it speaks plain HTTP.
    #[arg(long)]
    console_listen: Option<Listen>,
    /// Longest wait for the broker or a node (1ms..=1m) [default: 2s].
    #[arg(long, value_parser = parse_duration)]
    request_timeout: Option<Duration>,
    /// Longest wait for a heartbeat decision (1ms..=1m) [default: 2s]. When no decision comes
    /// in time (or the broker is down) the gateway answers CONTINUE with reason DEGRADED:
    /// playback never stops because playhead is in trouble.
    #[arg(long, value_parser = parse_duration)]
    heartbeat_timeout: Option<Duration>,
    /// Log format: text or json [default: text].
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log filter directives (RUST_LOG wins when set) [default: info].
    #[arg(long)]
    log_filter: Option<String>,
    /// RPCs handled at once; one more is answered RESOURCE_EXHAUSTED before its request is
    /// read (1..=100000) [default: 512].
    #[arg(long)]
    max_concurrent_rpcs: Option<usize>,
    /// HTTP/2 streams one connection may have open at once; a client's further RPCs wait on
    /// its side (1..=10000) [default: 100].
    #[arg(long)]
    max_streams_per_connection: Option<u32>,
    /// How long a RESOURCE_EXHAUSTED, OUT_OF_RANGE (request too large) or UNAUTHENTICATED
    /// answer is held back, holding no permit and no body (0s..=10s; 0s: none) [default: 1s]. A
    /// client that floods then cycles its streams slowly instead of taking the gateway's CPU.
    #[arg(long, value_parser = parse_duration)]
    refusal_pause: Option<Duration>,
    /// The token key ring: lines of `KID BASE64-SECRET`, the first signs; readable by its owner
    /// only (`playhead token keygen --out FILE` makes one). Every RPC but health and reflection
    /// needs `authorization: Bearer <token>`. Required.
    #[arg(long)]
    auth_keys: Option<PathBuf>,
    /// The gRPC server's certificate chain (PEM). With --tls-key, the gateway serves gRPC over
    /// TLS; listening beyond loopback without them is refused.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM), readable by its owner (and group) only.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Largest import batch an UploadImport may store, in bytes (1..=1073741824) [default:
    /// 67108864, 64 MiB]. A larger upload is stopped, its partial object deleted, and answered
    /// OUT_OF_RANGE.
    #[arg(long)]
    max_import_bytes: Option<u64>,
    /// Uploads streaming into the object store at once; one more is answered
    /// RESOURCE_EXHAUSTED (1..=1024) [default: 16].
    #[arg(long)]
    max_concurrent_uploads: Option<usize>,
    /// Read and validate every layer, print the resulting settings, and exit (status 0; a bad
    /// value exits 2 with what is wrong, as at start).
    #[arg(long)]
    check_config: bool,
}

impl Cli {
    /// The flags as the top layer of the settings.
    fn layer(&self) -> Layer {
        Layer {
            nats_url: self.nats_url.clone(),
            nats_nkey_file: self.nats_nkey_file.clone(),
            nats_ca_file: self.nats_ca_file.clone(),
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            console_listen: self.console_listen,
            request_timeout: self.request_timeout,
            heartbeat_timeout: self.heartbeat_timeout,
            log_format: self.log_format.as_deref().map(|format| match format {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            }),
            log_filter: self.log_filter.clone(),
            max_concurrent_rpcs: self.max_concurrent_rpcs,
            max_streams_per_connection: self.max_streams_per_connection,
            refusal_pause: self.refusal_pause,
            auth_keys: self.auth_keys.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            max_import_bytes: self.max_import_bytes,
            max_concurrent_uploads: self.max_concurrent_uploads,
        }
    }
}

/// mimalloc: glibc malloc was about a quarter of the node's CPU under load (profiled).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match config::load(cli.config.as_deref(), std::env::vars(), cli.layer()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("playhead-gateway: {error}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        println!("{settings:#?}");
        return Ok(());
    }
    let log = settings.log;
    let config = settings.gateway;
    let _telemetry = telemetry::init(
        &telemetry::ServiceIdentity::this_process("playhead-gateway", env!("CARGO_PKG_VERSION")),
        &log,
    )?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("signal received; stopping");
        signals.cancel();
    });
    server::serve(config, shutdown, None).await
}
