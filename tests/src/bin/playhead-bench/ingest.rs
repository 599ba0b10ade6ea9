//! Ingest: the station inbox is pre-filled with song observations while no node runs; a bare
//! async-nats pull consumer drains it (the baseline: fetch in batches, ack every message, no
//! decoding), then playhead-node drains the same stored messages through its partition
//! consumers, shards, entity actors, sled and event publishing.

use anyhow::Context as _;
use async_nats::jetstream;
use playhead_actors::broker;
use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::model::{generate, publish_all};
use playhead_tests::system::{TestNode, temp_dir};

use crate::common::{
    Batches, Drains, format_counts, inbox_outcomes, node_config, publish_and_drain,
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
    drains: Drains,
    outcomes: Vec<(&'static str, f64)>,
    events: u64,
    batches: Batches,
    _data: tempfile::TempDir,
}

pub async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<Ingested> {
    let data = temp_dir();
    let config = node_config(&nats.url(), data.path(), workload.partitions)?;

    let jetstream = jetstream::new(nats.connect().await);
    broker::ensure_streams(&jetstream, &config)
        .await
        .context("creating the inbox streams and consumers")?;

    let (observations, expected) = generate(
        7,
        workload.stations,
        workload.observations,
        workload.repeat_percent,
    );
    let count = observations.len() as u64;
    let (drains, node) = publish_and_drain(
        &jetstream,
        nats.pid(),
        config,
        Inbox::Station,
        (count, "observations"),
        publish_all(&jetstream, &observations),
    )
    .await?;

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
        drains,
        outcomes,
        events,
        batches,
        _data: data,
    })
}

impl Ingested {
    /// Prints the ingest figures and returns the node ÷ bare drain-rate ratio.
    pub fn report(&self, workload: &Workload) -> f64 {
        let count = workload.observations as f64;
        println!();
        println!(
            "ingest: {} song observations over {} stations ({}% repeats), {} partitions",
            workload.observations, workload.stations, workload.repeat_percent, workload.partitions
        );
        self.drains.print_times(count, "msg/s");
        println!(
            "  outcomes: {}; events published {}",
            format_counts(&self.outcomes),
            self.events
        );
        if let Some(events) = self.events_per_decision() {
            println!(
                "  events per decision: {events:.2} (events published ÷ applied observations)"
            );
        }
        self.batches.print(count);
        self.drains.print_ratios(count, Some(0.6))
    }

    /// Journal events per applied observation (`None` when none was applied).
    pub fn events_per_decision(&self) -> Option<f64> {
        let applied = self
            .outcomes
            .iter()
            .find(|(outcome, _)| *outcome == "applied")
            .map_or(0.0, |(_, count)| *count);
        (applied > 0.0).then(|| self.events as f64 / applied)
    }
}
