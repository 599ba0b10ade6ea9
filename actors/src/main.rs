//! `playhead-node`: the actor node. See `playhead-node --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use playhead_actors::config::{FlagOverrides, NodeConfig};
use playhead_actors::faults::Faults;
use playhead_actors::{node, telemetry};
use tokio_util::sync::CancellationToken;

/// playhead's actor node: consumes the inbox streams, runs station, user and content actors,
/// appends their decisions to the journal (PLAYHEAD_EVENTS), keeps the folded state in sled,
/// and answers queries over NATS.
///
/// With no --nats-url it starts its own nats-server (JetStream under DATA_DIR/jetstream,
/// listening on 127.0.0.1:4222). Configuration layers, lowest first: built-in defaults,
/// the --config TOML file, PLAYHEAD_* environment variables (nested keys joined by "__",
/// e.g. PLAYHEAD_INGEST__PARTITIONS=32), then these flags. Stops gracefully on SIGTERM or
/// Ctrl-C: intake stops, actors drain, sled is flushed, NATS is drained.
#[derive(Debug, Parser)]
#[command(name = "playhead-node", version)]
struct Cli {
    /// TOML configuration file (see deploy/playhead.toml for every key).
    #[arg(long, short = 'c', env = "PLAYHEAD_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for sled state (and the embedded broker's store).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Join this NATS server or cluster instead of starting an embedded one.
    #[arg(long)]
    nats_url: Option<String>,
    /// nats-server executable for the embedded broker.
    #[arg(long)]
    nats_server_bin: Option<PathBuf>,
    /// The node user's nkey seed file (mode 0600) for joining --nats-url (the embedded broker
    /// makes its own, under the data dir in nats-credentials/).
    #[arg(long)]
    nats_nkey_file: Option<PathBuf>,
    /// Inbox partition count (must match every client of the deployment).
    #[arg(long)]
    partitions: Option<u32>,
    /// Prometheus /metrics listen address.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Load and validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
    /// Rebuild the local store from the latest snapshot and the journal before serving (the
    /// current store is moved aside under the data dir, not deleted). Progress is logged.
    #[arg(long)]
    rebuild: bool,
}

/// mimalloc: glibc malloc was about a quarter of the node's CPU under load (profiled).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let flags = FlagOverrides {
        data_dir: cli.data_dir.clone(),
        nats_url: cli.nats_url.clone(),
        nats_server_bin: cli.nats_server_bin.clone(),
        nats_nkey_file: cli.nats_nkey_file.clone(),
        partitions: cli.partitions,
        metrics_listen: cli.metrics_listen,
    };
    let config = match NodeConfig::load(cli.config.as_deref(), &flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("playhead-node: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.check_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => {
                use std::io::Write as _;
                // A closed pipe (`--check-config | head`) is not an error worth a panic.
                let _ = writeln!(std::io::stdout(), "{text}");
                return std::process::ExitCode::SUCCESS;
            }
            Err(error) => {
                eprintln!("playhead-node: cannot print the configuration: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let faults = match Faults::from_env() {
        Ok(faults) => faults,
        Err(error) => {
            eprintln!("playhead-node: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let options = node::RunOptions {
        rebuild: cli.rebuild,
        faults,
    };
    match run(config, options) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("playhead-node: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: NodeConfig, options: node::RunOptions) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(
        &telemetry::ServiceIdentity::this_process("playhead-node", env!("CARGO_PKG_VERSION")),
        &config.log,
    )?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let signal_task = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
            _ = signals.cancelled() => return,
        }
        tracing::info!("signal received; stopping");
        signals.cancel();
    });
    let result = node::run_with(config, options, shutdown.clone(), None).await;
    shutdown.cancel();
    let _ = signal_task.await;
    result
}
