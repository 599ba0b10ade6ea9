//! `playhead-gateway`: the gRPC gateway. See `playhead-gateway --help`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use playhead_client::service::telemetry::{self, LogConfig, LogFormat};
use playhead_gateway::server::{self, GatewayConfig};
use tokio_util::sync::CancellationToken;

/// playhead's stateless gRPC gateway (package playhead.v1): validates requests, publishes
/// commands to NATS, serves now-playing from a local cache fed by a KV watch, and forwards
/// per-entity queries to the nodes. Health (grpc.health.v1) and reflection are on. Every flag
/// can also be set by its PLAYHEAD_GATEWAY_* environment variable. The heartbeat interval of a
/// fail-open answer is the nodes' (playout.heartbeat_interval_secs), which they publish. Stops gracefully on
/// SIGTERM or Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "playhead-gateway", version)]
struct Cli {
    /// NATS server or cluster to use.
    #[arg(
        long,
        env = "PLAYHEAD_GATEWAY_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// gRPC listen address.
    #[arg(
        long,
        env = "PLAYHEAD_GATEWAY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    listen: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(
        long,
        env = "PLAYHEAD_GATEWAY_METRICS_LISTEN",
        default_value = "127.0.0.1:9465"
    )]
    metrics_listen: SocketAddr,
    /// Longest wait for the broker or a node, in milliseconds (1..=60000).
    #[arg(
        long,
        env = "PLAYHEAD_GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    request_timeout_ms: u64,
    /// Longest wait for a heartbeat decision, in milliseconds (1..=60000). When no decision
    /// comes in time (or the broker is down) the gateway answers CONTINUE with reason
    /// DEGRADED: playback never stops because playhead is in trouble.
    #[arg(
        long,
        env = "PLAYHEAD_GATEWAY_HEARTBEAT_TIMEOUT_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    heartbeat_timeout_ms: u64,
    /// Log format: text or json (RUST_LOG sets the filter).
    #[arg(long, env = "PLAYHEAD_GATEWAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Parse and validate the flags and environment, print the resulting settings, and exit
    /// (status 0; a bad value exits 2 with what is wrong, as at start).
    #[arg(long)]
    check_config: bool,
}

/// mimalloc: glibc malloc was about a quarter of the node's CPU under load (profiled).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = GatewayConfig {
        nats_url: cli.nats_url,
        listen: cli.listen,
        metrics_listen: cli.metrics_listen,
        request_timeout: Duration::from_millis(cli.request_timeout_ms),
        heartbeat_timeout: Duration::from_millis(cli.heartbeat_timeout_ms),
    };
    if cli.check_config {
        println!("{config:#?}\nlog format: {}", cli.log_format);
        return Ok(());
    }
    let log = LogConfig {
        format: if cli.log_format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        filter: "info".into(),
    };
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
