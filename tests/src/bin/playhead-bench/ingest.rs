//! Ingest: the station inbox is pre-filled with song observations while no node runs; a bare
//! async-nats pull consumer drains it (the baseline: fetch in batches, ack every message, no
//! decoding), then playhead-node drains the same stored messages through its partition
//! consumers, shards, entity actors, sled and event publishing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use playhead_actors::broker;
use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::model::{generate, publish_all};
use playhead_tests::system::{TestNode, temp_dir};

use crate::common::{
    Batches, bare_consumer, drain, format_counts, inbox_outcomes, node_config, print_node_drain,
    print_rate, wait_processed,
};

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
    batches: Batches,
    _data: tempfile::TempDir,
}

pub async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<Ingested> {
    let data = temp_dir();
    let config = node_config(&nats.url(), data.path(), workload.partitions)?;

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
    wait_processed(
        &node,
        Inbox::Station,
        observations.len() as f64,
        "observations",
    )
    .await?;
    let node_drain = started.elapsed();

    let metrics = node.metrics().await;
    let outcomes = inbox_outcomes(&metrics, Inbox::Station);
    let batches = Batches::scrape(&metrics, Inbox::Station);
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
        _data: data,
    })
}

/// Drains the station inbox with one ephemeral pull consumer of its own (the node's consumers
/// are untouched): the broker's best case for these messages.
async fn bare_drain(jetstream: &jetstream::Context, count: usize) -> anyhow::Result<Duration> {
    let stream = jetstream.get_stream(Inbox::Station.stream_name()).await?;
    let consumer = bare_consumer(
        &stream,
        "bench-bare",
        String::new(),
        consumer::DeliverPolicy::All,
    )
    .await?;
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
        let mut consumer = bare_consumer(
            &stream,
            &format!("bench-bare-p{partition}"),
            filter,
            consumer::DeliverPolicy::All,
        )
        .await?;
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
        let line = |what: &str, elapsed: Duration| print_rate(what, elapsed, count, "msg/s");
        line("publish (pipelined, every ack awaited)", self.publish);
        line("bare consumer drain (pull, ack each)", self.baseline);
        line("bare drain, one consumer per partition", self.partitioned);
        print_node_drain(self.node_drain, self.node_ready, count, "msg/s");
        println!(
            "  outcomes: {}; events published {}",
            format_counts(&self.outcomes),
            self.events
        );
        self.batches.print(count);
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
