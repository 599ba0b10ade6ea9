//! Ingest: the station inbox is pre-filled with song observations while no node runs; a bare
//! async-nats pull consumer drains it (the baseline: fetch in batches, ack every message, no
//! decoding), then playhead-node drains the same stored messages through its partition
//! consumers, shards, entity actors, sled and event publishing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_actors::broker;
use playhead_actors::config::NodeConfig;
use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::model::{generate, publish_all};
use playhead_tests::system::{TestNode, metric_value, temp_dir};

/// Longest a drain may take before the benchmark gives up on it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages the baseline consumer asks for per pull.
const BASELINE_BATCH: usize = 500;

pub struct Workload {
    pub observations: usize,
    pub stations: usize,
    pub repeat_percent: u64,
    pub partitions: u32,
}

pub struct Ingested {
    /// The node that drained the inbox; it keeps running for the read phases.
    pub node: TestNode,
    /// Stations that received observations.
    pub stations: Vec<String>,
    publish: Duration,
    baseline: Duration,
    node_ready: Duration,
    node_drain: Duration,
    outcomes: Vec<(&'static str, f64)>,
    events: u64,
    _data: tempfile::TempDir,
}

pub async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<Ingested> {
    let data = temp_dir();
    let mut config = NodeConfig {
        data_dir: data.path().to_owned(),
        ..NodeConfig::default()
    };
    config.nats.url = nats.url();
    config.ingest.partitions = workload.partitions;
    config.metrics.listen = "127.0.0.1:0".parse().expect("valid address");
    config.validate().context("benchmark node configuration")?;

    let jetstream = jetstream::new(nats.connect().await);
    broker::ensure_topology(&jetstream, &config)
        .await
        .context("creating the inbox streams and consumers")?;

    let (observations, expected) = generate(
        7,
        workload.stations,
        workload.observations,
        workload.repeat_percent,
    );
    eprintln!("publishing {} observations…", observations.len());
    let started = Instant::now();
    publish_all(&jetstream, &observations).await;
    let publish = started.elapsed();

    eprintln!("draining with a bare consumer…");
    let baseline = bare_drain(&jetstream, observations.len()).await?;

    eprintln!("draining with playhead-node…");
    let started = Instant::now();
    let node = TestNode::start(config).await;
    let node_ready = started.elapsed();
    let total = observations.len() as f64;
    let deadline = started + DRAIN_TIMEOUT;
    let station_label = [("inbox", Inbox::Station.label())];
    loop {
        // The node counts a batch only after its acknowledgement: at `total` all are acked.
        let processed = metric_value(
            &node.metrics().await,
            "playhead_inbox_messages_total",
            &station_label,
        );
        if processed >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "playhead-node processed {processed} of {total} observations in {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let node_drain = started.elapsed();

    let metrics = node.metrics().await;
    let outcomes = ["applied", "unchanged", "duplicate", "dead_lettered"]
        .into_iter()
        .map(|outcome| {
            let labels = [station_label[0], ("outcome", outcome)];
            (
                outcome,
                metric_value(&metrics, "playhead_inbox_messages_total", &labels),
            )
        })
        .collect();
    let events = jetstream
        .get_stream(EVENTS_STREAM)
        .await?
        .get_info()
        .await?
        .state
        .messages;
    Ok(Ingested {
        node,
        stations: expected.into_keys().collect(),
        publish,
        baseline,
        node_ready,
        node_drain,
        outcomes,
        events,
        _data: data,
    })
}

/// Drains `count` messages of the station inbox with an ephemeral pull consumer of its own
/// (the node's consumers are untouched) and returns the time it took.
async fn bare_drain(jetstream: &jetstream::Context, count: usize) -> anyhow::Result<Duration> {
    let stream = jetstream.get_stream(Inbox::Station.stream_name()).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            name: Some("bench-baseline".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BASELINE_BATCH)
        .messages()
        .await?;
    for _ in 0..count {
        let message = tokio::time::timeout(DRAIN_TIMEOUT, messages.next())
            .await
            .context("baseline consumer stalled")?
            .context("baseline consumer ended early")?
            .map_err(|error| anyhow::anyhow!("baseline consumer: {error}"))?;
        message
            .ack()
            .await
            .map_err(|error| anyhow::anyhow!("baseline ack: {error}"))?;
    }
    let elapsed = started.elapsed();
    drop(messages);
    stream.delete_consumer("bench-baseline").await?;
    Ok(elapsed)
}

impl Ingested {
    /// Prints the ingest figures and returns the node ÷ bare drain-rate ratio.
    pub fn report(&self, workload: &Workload) -> f64 {
        let count = workload.observations as f64;
        let rate = |elapsed: Duration| count / elapsed.as_secs_f64();
        println!();
        println!(
            "ingest: {} song observations over {} stations ({}% repeats), {} partitions",
            workload.observations, workload.stations, workload.repeat_percent, workload.partitions
        );
        let line = |what: &str, elapsed: Duration| {
            println!(
                "  {what:<40} {:>8.2} s {:>10.0} msg/s",
                elapsed.as_secs_f64(),
                rate(elapsed)
            );
        };
        line("publish (pipelined, every ack awaited)", self.publish);
        line("bare consumer drain (pull, ack each)", self.baseline);
        line("playhead-node drain (start included)", self.node_drain);
        println!(
            "  {:<40} {:>8.2} s",
            "  of which start until ready",
            self.node_ready.as_secs_f64()
        );
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(outcome, value)| format!("{outcome} {value:.0}"))
            .collect();
        println!(
            "  outcomes: {}; events published {}",
            outcomes.join(", "),
            self.events
        );
        let ratio = rate(self.node_drain) / rate(self.baseline);
        println!("  ratio node ÷ bare drain rate {ratio:.2}");
        ratio
    }
}
