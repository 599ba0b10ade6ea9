//! `make bench`: playhead's benchmark program. It starts a real nats-server (the harness's, on a
//! random port with a temporary store), measures playhead against a bare baseline in the same
//! run, and prints figures and ratios next to the targets of DESIGN.md §10.
//!
//! - [`ingest`]: drain rate of a pre-filled station inbox, playhead-node ÷ a bare consumer.
//! - [`reads`]: `GetNowPlaying` throughput and latency ÷ the gateway's own health check.
//! - [`sessions`]: player sessions: TTL compaction ÷ per-key deletes, `NextTrack` latency while
//!   the node compacts ÷ before, restart with the sessions persisted, disk size under churn.
//! - [`heartbeats`]: video heartbeats: drain rate of a pre-filled heartbeat storm ÷ a bare
//!   consumer (checked against the admissions the storm must produce), and `Heartbeat` RPC
//!   latency at a steady paced rate next to the health check at the same rate.
//! - [`journal`]: the cost of appending each decision to the journal (`Journal::append` of one-
//!   and two-event decisions) ÷ plain JetStream publishes of the same payloads.
//! - [`rebuild`]: a node whose store is deleted restores the snapshots of 1M sessions and 100k
//!   stations and replays a journal tail: time until it serves, and a spot check that it
//!   answers as before (on a broker of its own).
//! - [`edge`]: the gateway process under a flood of 4 MiB requests over thousands of streams
//!   (its peak memory, the answers, the health check beside it) and a million watched ids.
//! - [`imports`]: a day's batch of concert listings (mostly repeats) imported from the object
//!   store by a playhead-node process, and re-run: times, counts and the node's peak memory,
//!   against reading the same object back bare (on a broker of its own).
//! - [`enrichment`]: song changes drained without and with song enrichment against a local
//!   MusicBrainz-shaped provider (each run on a broker of its own): provider calls per
//!   distinct song, the ingest ratio with ÷ without, the time until every song is enriched.
//! - [`common`]: what they share: the node's configuration, the publish-then-drain sequence
//!   with its bare baselines, and the figures of a phase of gRPC load.
//! - [`cpu`], [`node_log`]: the CPU shares of node and broker during a phase, and the node's
//!   own log records of a rebuild.
//!
//! Build it in release (`make bench` does); a debug build measures the compiler, not playhead.

mod common;
mod cpu;
mod edge;
mod enrichment;
mod heartbeats;
mod imports;
mod ingest;
mod journal;
mod node_log;
mod reads;
mod rebuild;
mod sessions;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use playhead_tests::harness::NatsServer;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Benchmarks playhead against bare baselines measured in the same run.
///
/// Needs the nats-server binary: `make bench` installs it and sets PLAYHEAD_NATS_SERVER.
/// With no `--*-only` flag every phase runs: ingest, reads, sessions, heartbeats, journal,
/// rebuild, edge, imports, enrichment.
#[derive(Debug, Parser)]
#[command(name = "playhead-bench", version)]
#[command(group(clap::ArgGroup::new("only").multiple(false)))]
struct Args {
    /// Song observations pre-filled into the station inbox.
    #[arg(long, default_value_t = 100_000)]
    observations: usize,
    /// Stations the observations are spread over.
    #[arg(long, default_value_t = 2_000)]
    stations: usize,
    /// Share of observations (percent) that repeat the song already on air.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(0..=100))]
    repeat_percent: u64,
    /// Inbox partitions (P of the subject transform), as deployed.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Seconds of measured load per read phase and per heartbeat RPC phase (after one second
    /// of warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    read_secs: u64,
    /// Requests in flight during the read phases.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// HTTP/2 connections the read and heartbeat RPC load is spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    connections: u64,
    /// Measure ingest only (quicker when tuning the node).
    #[arg(long, group = "only")]
    ingest_only: bool,
    /// Measure ingest and then the `GetNowPlaying` reads of the stations it stored only.
    #[arg(long, group = "only")]
    reads_only: bool,
    /// Player sessions in the bucket that is compacted and persisted across a restart.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    sessions: u64,
    /// Listeners whose sessions carry the `NextTrack` load while the node compacts.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    session_users: u64,
    /// `NextTrack` requests per second, paced (0: as fast as the workers go).
    #[arg(long, default_value_t = 500)]
    session_rate: u64,
    /// `NextTrack` requests in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    session_concurrency: u64,
    /// New sessions per simulated day of churn (and as many touched).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    churn_per_day: u64,
    /// Records a second the node removes from an expired bucket before dropping its tree (0:
    /// whole-tree drops; default: the node's `storage.expiry_removes_per_sec`).
    #[arg(long)]
    expiry_removes_per_sec: Option<u64>,
    /// Times the expiry of a session bucket under `NextTrack` load is measured, each time with
    /// a node and a bucket of its own; the figure pools their windows (one ~3 s window around a
    /// drop holds too few requests for a steady p99).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10))]
    expiry_runs: u64,
    /// Measure player sessions only.
    #[arg(long, group = "only")]
    sessions_only: bool,
    /// Users of the heartbeat storm, each entitled to one package of content.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_users: u64,
    /// Heartbeats of the storm pre-filled into the user inbox, spread over the users.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeats: u64,
    /// `Heartbeat` requests per second through the gateway, paced open-loop (the health-check
    /// baseline runs at the same rate).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    heartbeat_rate: u64,
    /// Measure video heartbeats only.
    #[arg(long, group = "only")]
    heartbeats_only: bool,
    /// Measure the memory a live user entity holds only (part of the heartbeats phase; two
    /// node processes, under a minute).
    #[arg(long, group = "only")]
    memory_only: bool,
    /// Run the gateway of the `Heartbeat` RPC phase as a release `playhead-gateway` process of
    /// its own, as deployed, instead of inside the benchmark's process (on the in-process
    /// node's runtime). Measured side by side on 2026-11-30: no better on 2 cores (one more
    /// process to schedule), so the default stays as the earlier figures were taken.
    #[arg(long)]
    heartbeat_gateway_process: bool,
    /// Decisions appended per variant and round in the journal phase.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    journal_decisions: u64,
    /// Entities appending at once in the journal phase (each one decision at a time).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    journal_entities: u64,
    /// Rounds of the journal phase (the median round is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    journal_rounds: u64,
    /// Measure the journal append cost only.
    #[arg(long, group = "only")]
    journal_only: bool,
    /// Player sessions in the snapshot a rebuild restores.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    rebuild_sessions: u64,
    /// Sessions of each listener in that snapshot (playlists per user).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    rebuild_sessions_per_user: u64,
    /// Stations in the snapshot a rebuild restores.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    rebuild_stations: u64,
    /// Song observations of each station before the snapshot (each a play unless it repeats).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    rebuild_plays: u64,
    /// Song observations in the journal tail the rebuild replays.
    #[arg(long, default_value_t = 50_000)]
    rebuild_observations: u64,
    /// Player commands in the journal tail the rebuild replays.
    #[arg(long, default_value_t = 50_000)]
    rebuild_commands: u64,
    /// `GetSession` and `ListPlays` requests (each) compared before and after the rebuild.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rebuild_checks: u64,
    /// Measure the rebuild only.
    #[arg(long, group = "only")]
    rebuild_only: bool,
    /// HTTP/2 connections of the edge flood.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    edge_connections: u64,
    /// Requests each connection keeps in flight (the gateway allows 200 streams).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1000))]
    edge_streams: u64,
    /// Size of each flood request, in MiB.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    edge_request_mib: u64,
    /// Seconds of flood.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    edge_secs: u64,
    /// Health checks a second beside the flood (and before it).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    edge_health_rate: u64,
    /// Distinct station ids watched after the flood.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(100..))]
    watched_ids: u64,
    /// Measure the gateway's edge only.
    #[arg(long, group = "only")]
    edge_only: bool,
    /// Listings (lines) of the imported batch.
    #[arg(long, default_value_t = 360_000, value_parser = clap::value_parser!(u64).range(1..))]
    import_records: u64,
    /// Distinct shows of the imported batch (the rest of the listings repeat them).
    #[arg(long, default_value_t = 36_000, value_parser = clap::value_parser!(u64).range(1..=500_000))]
    import_distinct: u64,
    /// Distinct artists of the imported shows.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    import_artists: u64,
    /// Share of imported shows (percent) that carry the source's own event id.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    import_id_percent: u64,
    /// Measure imports only.
    #[arg(long, group = "only")]
    imports_only: bool,
    /// Song changes (observations that start a play) of the enrichment phase; the repeats of
    /// `--repeat-percent` come on top, over `--stations` stations.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    enrichment_changes: u64,
    /// Distinct songs among those changes, each started at least once.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(2..))]
    enrichment_songs: u64,
    /// How long the test provider takes to answer each request, in ms.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    enrichment_latency_ms: u64,
    /// Requests per second the node may send to each provider service (MusicBrainz, Cover Art
    /// Archive).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    enrichment_rate: u64,
    /// Measure song enrichment only.
    #[arg(long, group = "only")]
    enrichment_only: bool,
}

/// mimalloc: glibc malloc was about a quarter of the node's CPU under load (profiled).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stderr_filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(stderr_filter),
        )
        .with(node_log::layer())
        .init();
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run `make bench` for figures worth reporting");
    }
    let nats = NatsServer::start();
    println!(
        "playhead benchmark: nats-server on {}, {} cores",
        nats.url(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    let session_workload = sessions::Workload {
        sessions: args.sessions as usize,
        users: args.session_users as usize,
        rate: args.session_rate,
        concurrency: args.session_concurrency as usize,
        partitions: args.partitions,
        churn_per_day: args.churn_per_day as usize,
        expiry_removes_per_sec: args.expiry_removes_per_sec,
        expiry_runs: args.expiry_runs as usize,
    };
    let heartbeat_workload = heartbeats::Workload {
        users: args.heartbeat_users as usize,
        heartbeats: args.heartbeats as usize,
        partitions: args.partitions,
        rate: args.heartbeat_rate,
        gateway_in_process: !args.heartbeat_gateway_process,
        duration: Duration::from_secs(args.read_secs),
        connections: args.connections as usize,
    };
    let journal_workload = journal::Workload {
        decisions: args.journal_decisions as usize,
        entities: args.journal_entities as usize,
        rounds: args.journal_rounds as usize,
        partitions: args.partitions,
    };
    let rebuild_workload = rebuild::Workload {
        sessions: args.rebuild_sessions as usize,
        sessions_per_user: args.rebuild_sessions_per_user as usize,
        stations: args.rebuild_stations as usize,
        plays_per_station: args.rebuild_plays as usize,
        observations: args.rebuild_observations as usize,
        player_commands: args.rebuild_commands as usize,
        repeat_percent: args.repeat_percent,
        partitions: args.partitions,
        checks: args.rebuild_checks as usize,
    };
    let edge_workload = edge::Workload {
        connections: args.edge_connections as usize,
        streams: args.edge_streams as usize,
        request_bytes: (args.edge_request_mib as usize) << 20,
        flood: Duration::from_secs(args.edge_secs),
        health_rate: args.edge_health_rate,
        watched_ids: args.watched_ids as usize,
    };
    let import_workload = imports::Workload {
        records: args.import_records as usize,
        distinct: args.import_distinct as usize,
        artists: args.import_artists as usize,
        id_percent: args.import_id_percent,
    };
    let enrichment_workload = enrichment::Workload {
        stations: args.stations,
        changes: args.enrichment_changes as usize,
        songs: args.enrichment_songs as usize,
        repeat_percent: args.repeat_percent,
        partitions: args.partitions,
        latency: Duration::from_millis(args.enrichment_latency_ms),
        rate_per_sec: args.enrichment_rate,
    };
    if args.enrichment_only {
        let figures = enrichment::run(&enrichment_workload)
            .await?
            .report(&enrichment_workload);
        println!();
        println!("summary (DESIGN.md §10)");
        enrichment_verdicts(&figures);
        return checks_passed();
    }
    if args.imports_only {
        let figures = imports::run(&import_workload).await?;
        figures.report(&import_workload);
        println!();
        println!("summary (DESIGN.md §10)");
        import_verdicts(&figures, &import_workload);
        return checks_passed();
    }
    if args.edge_only {
        let figures = edge::run(&edge_workload).await?;
        figures.report(&edge_workload);
        println!();
        println!("summary (DESIGN.md §10)");
        edge_verdicts(&figures);
        return checks_passed();
    }
    if args.heartbeats_only {
        let figures = heartbeats::run(&nats, &heartbeat_workload)
            .await?
            .report(&heartbeat_workload);
        println!();
        println!("summary (DESIGN.md §10)");
        heartbeat_verdicts(&figures, &heartbeat_workload);
        return checks_passed();
    }
    if args.memory_only {
        let entity_bytes = heartbeats::memory::run().await?.print();
        println!();
        println!("summary (DESIGN.md §10)");
        memory_verdict(entity_bytes);
        return checks_passed();
    }
    if args.sessions_only {
        let figures = sessions::run(&nats.url(), &session_workload)
            .await?
            .report(&session_workload);
        println!();
        println!("summary (DESIGN.md §10)");
        session_verdicts(&figures);
        return checks_passed();
    }
    if args.journal_only {
        let figures = journal::run(&nats, &journal_workload)
            .await?
            .report(&journal_workload, None);
        println!();
        println!("summary (DESIGN.md §10)");
        journal_verdicts(&figures);
        return checks_passed();
    }
    if args.rebuild_only {
        let figures = rebuild::run(&rebuild_workload)
            .await?
            .report(&rebuild_workload);
        println!();
        println!("summary (DESIGN.md §10)");
        rebuild_verdicts(&figures);
        return checks_passed();
    }

    let workload = ingest::Workload {
        observations: args.observations,
        stations: args.stations,
        repeat_percent: args.repeat_percent,
        partitions: args.partitions,
    };
    let ingested = ingest::run(&nats, &workload).await?;
    let ratio_ingest = ingested.report(&workload);

    if args.ingest_only {
        ingested.node.stop().await;
        println!();
        verdict(
            "ingest: node ÷ bare drain rate",
            ratio_ingest,
            "≥ 0.6",
            ratio_ingest >= 0.6,
        );
        return checks_passed();
    }
    let load = reads::Load {
        duration: Duration::from_secs(args.read_secs),
        concurrency: args.concurrency as usize,
        connections: args.connections as usize,
    };
    let read = reads::run(&nats.url(), &ingested.stations, &load).await?;
    let (ratio_reads, p99) = read.report(&load);
    let ingest_events_per_decision = ingested.events_per_decision();
    ingested.node.stop().await;
    if args.reads_only {
        println!();
        println!("summary (DESIGN.md §10)");
        read_verdicts(ratio_reads, p99);
        return checks_passed();
    }
    let figures = sessions::run(&nats.url(), &session_workload)
        .await?
        .report(&session_workload);
    let heartbeat_figures = heartbeats::run(&nats, &heartbeat_workload)
        .await?
        .report(&heartbeat_workload);
    let journal_figures = journal::run(&nats, &journal_workload)
        .await?
        .report(&journal_workload, ingest_events_per_decision);
    let rebuild_figures = rebuild::run(&rebuild_workload)
        .await?
        .report(&rebuild_workload);
    let edge_figures = edge::run(&edge_workload).await?;
    edge_figures.report(&edge_workload);
    let import_figures = imports::run(&import_workload).await?;
    import_figures.report(&import_workload);
    let enrichment_figures = enrichment::run(&enrichment_workload)
        .await?
        .report(&enrichment_workload);

    println!();
    println!("summary (DESIGN.md §10)");
    verdict(
        "ingest: node ÷ bare drain rate",
        ratio_ingest,
        "≥ 0.6",
        ratio_ingest >= 0.6,
    );
    read_verdicts(ratio_reads, p99);
    session_verdicts(&figures);
    heartbeat_verdicts(&heartbeat_figures, &heartbeat_workload);
    journal_verdicts(&journal_figures);
    rebuild_verdicts(&rebuild_figures);
    edge_verdicts(&edge_figures);
    import_verdicts(&import_figures, &import_workload);
    enrichment_verdicts(&enrichment_figures);
    checks_passed()
}

fn read_verdicts(ratio: f64, p99: f64) {
    verdict(
        "GetNowPlaying ÷ health throughput",
        ratio,
        "≥ 0.8",
        ratio >= 0.8,
    );
    verdict("GetNowPlaying p99 (ms)", p99, "≤ 3", p99 <= 3.0);
}

fn enrichment_verdicts(figures: &enrichment::Figures) {
    // One MusicBrainz search per distinct song, exactly: fewer leaves songs unenriched.
    verdict(
        "enrichment: provider calls ÷ distinct songs",
        figures.calls_ratio(),
        "= 1",
        figures.musicbrainz_calls == figures.songs,
    );
    println!(
        "  {:<36} {:>8}   (reported; one per song whose release has a listing)",
        "enrichment: Cover Art Archive calls", figures.coverart_calls
    );
    // The ingest ratios with and without, both over one bare baseline (the two runs' bare
    // drains of the same stored messages, whose spread alone moves each run's own ratio by up
    // to ±25% here): that is the node's drain rate with ÷ without.
    verdict(
        "enrichment: ingest ratio with ÷ without",
        figures.node_ratio,
        "≥ 0.9",
        figures.node_ratio >= 0.9,
    );
    println!(
        "  {:<36} {:>8.2}   (reported; each run over its own bare drain)",
        "enrichment: own-baseline ratios", figures.ingest_ratio
    );
    let until_enriched = figures
        .until_enriched
        .map_or(f64::NAN, |elapsed| elapsed.as_secs_f64());
    check(
        "enrichment: all songs enriched (s)",
        format!("{until_enriched:.2}"),
        "from the node's start; must all be",
        figures.until_enriched.is_some(),
    );
}

fn import_verdicts(figures: &imports::Figures, workload: &imports::Workload) {
    let import = figures.first.elapsed.as_secs_f64();
    verdict(
        &format!("import of {} listings (s)", workload.records),
        import,
        "≤ 5",
        import <= 5.0,
    );
    let rerun = figures.rerun.elapsed.as_secs_f64();
    verdict(
        "import re-run, nothing new (s)",
        rerun,
        "≤ 3",
        rerun <= 3.0 && figures.rerun.status.records_new == 0,
    );
    check(
        "import re-run: records new",
        figures.rerun.status.records_new,
        "must be 0",
        figures.rerun.status.records_new == 0,
    );
    println!(
        "  {:<36} {:>8.2}   (reported; import time ÷ bare read of the object)",
        "import ÷ bare read",
        figures.ratio()
    );
    println!(
        "  {:<36} {:>8.0}   (reported; VmHWM of the node process)",
        "import: node peak RSS (MiB)", figures.peak_rss_mib
    );
}

fn edge_verdicts(figures: &edge::Figures) {
    verdict(
        "edge flood: gateway peak RSS (MiB)",
        figures.peak_rss_mib,
        "< 512",
        figures.peak_rss_mib < 512.0,
    );
    verdict(
        "edge flood: health p99 (ms)",
        figures.health_p99_during_ms,
        "< 50",
        figures.health_p99_during_ms < 50.0 && figures.health_failed_during == 0,
    );
    let exhausted = figures
        .answers
        .get("ResourceExhausted")
        .copied()
        .unwrap_or_default();
    check(
        "edge flood: RESOURCE_EXHAUSTED answers",
        exhausted,
        "must be > 0",
        exhausted > 0,
    );
    // The cache keeps the stations that play, those watched now, and up to its idle bound of
    // ids nobody watches any more.
    let bound = playhead_gateway::now_playing::DEFAULT_IDLE_SLOTS as f64 + (64 * 100) as f64;
    verdict(
        &format!("{} watched ids: cached stations", figures.watched),
        figures.cached_stations,
        &format!("≤ {bound}"),
        figures.cached_stations <= bound,
    );
}

fn journal_verdicts(figures: &journal::Figures) {
    println!(
        "  {:<36} {:>8.2}   (reported; decisions/s ÷ bare publishes)",
        "journal append, 1-event ÷ bare", figures.one_event_ratio
    );
    println!(
        "  {:<36} {:>8.2}   (reported; decisions/s ÷ bare publishes)",
        "journal append, 2-event ÷ bare", figures.two_event_ratio
    );
}

fn rebuild_verdicts(figures: &rebuild::Figures) {
    verdict(
        "rebuild to serving (s)",
        figures.to_serving,
        "≤ 30",
        figures.to_serving <= 30.0,
    );
    println!(
        "  {:<36} {:>8.0}   (reported)",
        "  snapshot entries restored", figures.restored
    );
    println!(
        "  {:<36} {:>8.0}   (reported)",
        "  journal events replayed", figures.replayed
    );
    check(
        "rebuild spot check: answers differing",
        figures.differences,
        "must be 0",
        figures.differences == 0,
    );
}

fn session_verdicts(figures: &sessions::Figures) {
    verdict(
        "session bucket compaction, idle (s)",
        figures.compaction_idle,
        "≤ 1",
        figures.compaction_idle <= 1.0,
    );
    // NaN when the node was not seen dropping the bucket inside the compaction window.
    let serving = figures.compaction_serving.unwrap_or(f64::NAN);
    verdict(
        "session compaction, serving (s)",
        serving,
        "≤ 1",
        serving <= 1.0,
    );
    verdict(
        "NextTrack p99 compacting ÷ before",
        figures.p99_ratio,
        "≤ 1.5",
        figures.compaction_serving.is_some() && figures.p99_ratio <= 1.5,
    );
    println!("  {:<36} {:>8}   (DESIGN's goal: 1.2)", "", "");
    println!(
        "  {:<36} {:>8.2}   (reported: storage alone, the bucket db closed and deleted)",
        "  bucket db removed (s)", figures.own_db_removal
    );
    println!(
        "  {:<36} {:>8.2}   (reported: storage alone; a tree of the serving db dropped: {:.2})",
        "  foreground p99 meanwhile ÷ before", figures.own_db_p99_ratio, figures.same_db_p99_ratio
    );
    verdict(
        "restart to a session served (s)",
        figures.restart,
        "≤ 5",
        figures.restart <= 5.0,
    );
    println!(
        "  {:<36} {:>8.2}   (reported; the issue asks for the ratio)",
        "disk after 60 ÷ 30 days of churn", figures.disk_ratio
    );
    // Bounded disk use: once a whole TTL of buckets is held, a further month adds nothing.
    verdict(
        "disk after 90 ÷ 60 days (bounded)",
        figures.disk_ratio_later,
        "≤ 1.1",
        figures.disk_ratio_later <= 1.1,
    );
}

fn heartbeat_verdicts(figures: &heartbeats::Figures, workload: &heartbeats::Workload) {
    // Issue 10's target for the storm.
    verdict(
        "heartbeat storm: node ÷ bare drain",
        figures.drain_ratio,
        "≥ 0.25",
        figures.drain_ratio >= 0.25,
    );
    // A fail-open answer is not a round trip: the p99 counts only when every answer was one.
    verdict(
        &format!("Heartbeat p99 at {} req/s (ms)", workload.rate),
        figures.p99,
        "≤ 5",
        figures.p99 <= 5.0 && figures.not_ok == 0 && figures.errors == 0,
    );
    println!(
        "  {:<36} {:>8.2}   (reported: the broker path alone, no playhead)",
        "Heartbeat floor p99 (ms)", figures.floor_p99
    );
    check(
        "Heartbeat answers not CONTINUE/OK",
        figures.not_ok,
        "must be 0; DEGRADED is a gateway timeout",
        figures.not_ok == 0,
    );
    check(
        "Heartbeat requests failed",
        figures.errors,
        "must be 0",
        figures.errors == 0,
    );
    memory_verdict(figures.entity_bytes);
}

fn memory_verdict(entity_bytes: f64) {
    let entity_kb = entity_bytes / 1000.0;
    verdict(
        "memory per live user entity (KB)",
        entity_kb,
        "≤ 8",
        entity_kb <= 8.0,
    );
}

/// Correctness checks that failed in this run. A wrong answer is not a figure: the run ends
/// with an error (a figure that misses its target only prints MISSED).
static FAILED_CHECKS: AtomicUsize = AtomicUsize::new(0);

/// Prints a correctness check, marked FAILED (and counted) unless `passed`.
fn check(figure: &str, value: impl std::fmt::Display, rule: &str, passed: bool) {
    let mark = if passed { "" } else { "   !!!!! FAILED" };
    println!("  {figure:<36} {value:>8}   ({rule}){mark}");
    if !passed {
        FAILED_CHECKS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The run's end: an error when any correctness check failed.
fn checks_passed() -> anyhow::Result<()> {
    match FAILED_CHECKS.load(Ordering::Relaxed) {
        0 => Ok(()),
        failed => anyhow::bail!(
            "{failed} correctness check(s) FAILED above: this run's figures are not to be trusted"
        ),
    }
}

fn verdict(figure: &str, value: f64, target: &str, met: bool) {
    let mark = if met { "met" } else { "MISSED" };
    println!("  {figure:<36} {value:>8.2}   target {target:<6} {mark}");
}
