//! Ingest: the station inbox is pre-filled with song observations while no node runs; a bare
//! async-nats pull consumer drains it (the baseline: fetch in batches, ack every message, no
//! decoding), then playhead-node drains the same stored messages through its partition
//! consumers, shards, entity actors, sled and event publishing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_actors::broker;
use playhead_actors::config::{FlagOverrides, NodeConfig};
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
    partitioned: Duration,
    node_ready: Duration,
    node_drain: Duration,
    outcomes: Vec<(&'static str, f64)>,
    events: u64,
    batches: f64,
    batch_seconds: f64,
    _data: tempfile::TempDir,
}

pub async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<Ingested> {
    let data = temp_dir();
    // Loaded like playhead-node loads it, so PLAYHEAD_* variables tune the node under test.
    let config = NodeConfig::load(
        None,
        &FlagOverrides {
            data_dir: Some(data.path().to_owned()),
            nats_url: Some(nats.url()),
            partitions: Some(workload.partitions),
            metrics_listen: Some("127.0.0.1:0".parse().expect("valid address")),
            ..FlagOverrides::default()
        },
    )
    .context("benchmark node configuration")?;

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

    eprintln!("draining with bare partition consumers…");
    let partitioned = bare_partitioned_drain(&jetstream, workload.partitions).await?;

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
    let batches = metric_value(&metrics, "playhead_batch_seconds_count", &station_label);
    let batch_seconds = metric_value(&metrics, "playhead_batch_seconds_sum", &station_label);
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
        partitioned,
        node_ready,
        node_drain,
        outcomes,
        events,
        batches,
        batch_seconds,
        _data: data,
    })
}

/// Drains the station inbox with one ephemeral pull consumer of its own (the node's consumers
/// are untouched): the broker's best case for these messages.
async fn bare_drain(jetstream: &jetstream::Context, count: usize) -> anyhow::Result<Duration> {
    let stream = jetstream.get_stream(Inbox::Station.stream_name()).await?;
    let consumer = bare_consumer(&stream, "bench-bare", String::new()).await?;
    let started = Instant::now();
    drain(consumer, count as u64).await?;
    Ok(started.elapsed())
}

/// Drains the station inbox with one ephemeral pull consumer per partition, filtered like
/// the node's, all at once: what the partitioned layout costs the broker before playhead does
/// any work.
async fn bare_partitioned_drain(
    jetstream: &jetstream::Context,
    partitions: u32,
) -> anyhow::Result<Duration> {
    let stream = jetstream.get_stream(Inbox::Station.stream_name()).await?;
    let mut drains = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let filter = Inbox::Station.partition_filter(partition);
        let mut consumer =
            bare_consumer(&stream, &format!("bench-bare-p{partition}"), filter).await?;
        let pending = consumer.info().await?.num_pending;
        drains.push((consumer, pending));
    }
    let started = Instant::now();
    futures::future::try_join_all(
        drains
            .into_iter()
            .map(|(consumer, pending)| drain(consumer, pending)),
    )
    .await?;
    Ok(started.elapsed())
}

async fn bare_consumer(
    stream: &jetstream::stream::Stream,
    name: &str,
    filter_subject: String,
) -> anyhow::Result<consumer::PullConsumer> {
    Ok(stream
        .create_consumer(consumer::pull::Config {
            name: Some(name.into()),
            filter_subject,
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            max_ack_pending: 10_000,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?)
}

/// Pulls `count` messages in batches and acks each one, decoding nothing.
async fn drain(consumer: consumer::PullConsumer, count: u64) -> anyhow::Result<()> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BASELINE_BATCH)
        .messages()
        .await?;
    for _ in 0..count {
        let message = tokio::time::timeout(DRAIN_TIMEOUT, messages.next())
            .await
            .context("bare consumer stalled")?
            .context("bare consumer ended early")?
            .map_err(|error| anyhow::anyhow!("bare consumer: {error}"))?;
        message
            .ack()
            .await
            .map_err(|error| anyhow::anyhow!("bare ack: {error}"))?;
    }
    Ok(())
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
        line("bare drain, one consumer per partition", self.partitioned);
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
        println!(
            "  node batches {:.0}: mean {:.0} messages in {:.1} ms",
            self.batches,
            count / self.batches,
            self.batch_seconds / self.batches * 1_000.0
        );
        let ratio = rate(self.node_drain) / rate(self.baseline);
        println!("  ratio node ÷ bare drain rate {ratio:.2}");
        println!(
            "  ratio node ÷ bare partitioned drain rate {:.2} (the partitioned layout's own cost: {:.2})",
            rate(self.node_drain) / rate(self.partitioned),
            rate(self.partitioned) / rate(self.baseline)
        );
        ratio
    }
}
