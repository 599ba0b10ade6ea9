//! What the benchmarks share: the node under test configured like `playhead-node` configures
//! itself, the bare pull consumer that is the baseline of every drain, waiting for the node to
//! have processed an inbox, and the latency figures of a phase of gRPC load.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use hdrhistogram::Histogram;
use playhead_actors::config::{FlagOverrides, NodeConfig};
use playhead_proto::subjects::Inbox;
use playhead_tests::system::{TestNode, metric_value};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Longest a drain may take before the benchmark gives up on it.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages the baseline consumer asks for per pull.
const BASELINE_BATCH: usize = 500;
/// Load before the measured part of a read phase.
pub(crate) const WARM_UP: Duration = Duration::from_secs(1);
/// Outcomes the node counts per inbox message (`playhead_inbox_messages_total`).
const INBOX_OUTCOMES: [&str; 4] = ["applied", "unchanged", "duplicate", "dead_lettered"];

/// The node's configuration loaded like playhead-node loads it, so PLAYHEAD_* variables tune
/// the node under test: joins `nats_url`, keeps state in `data_dir`, metrics on a free port.
pub(crate) fn node_config(
    nats_url: &str,
    data_dir: &Path,
    partitions: u32,
) -> anyhow::Result<NodeConfig> {
    NodeConfig::load(
        None,
        &FlagOverrides {
            data_dir: Some(data_dir.to_owned()),
            nats_url: Some(nats_url.to_owned()),
            partitions: Some(partitions),
            metrics_listen: Some("127.0.0.1:0".parse().expect("valid address")),
            ..FlagOverrides::default()
        },
    )
    .context("benchmark node configuration")
}

/// An ephemeral pull consumer of the benchmark's own (the node's consumers are untouched).
pub(crate) async fn bare_consumer(
    stream: &jetstream::stream::Stream,
    name: &str,
    filter_subject: String,
    deliver_policy: consumer::DeliverPolicy,
) -> anyhow::Result<consumer::PullConsumer> {
    Ok(stream
        .create_consumer(consumer::pull::Config {
            name: Some(name.into()),
            filter_subject,
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy,
            max_ack_pending: 10_000,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?)
}

/// Pulls `count` messages in batches and acks each one, decoding nothing.
pub(crate) async fn drain(consumer: consumer::PullConsumer, count: u64) -> anyhow::Result<()> {
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

/// Polls the node's metrics until it has processed (and acknowledged) `total` messages of
/// `inbox` since it started; `what` names them in the error when [`DRAIN_TIMEOUT`] passes.
pub(crate) async fn wait_processed(
    node: &TestNode,
    inbox: Inbox,
    total: f64,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let label = [("inbox", inbox.label())];
    loop {
        // The node counts a batch only after its acknowledgement: at `total` all are acked.
        let processed = metric_value(
            &node.metrics().await,
            "playhead_inbox_messages_total",
            &label,
        );
        if processed >= total {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "playhead-node processed {processed} of {total} {what} in {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The node's count of `inbox` messages per outcome, from one scrape.
pub(crate) fn inbox_outcomes(metrics: &str, inbox: Inbox) -> Vec<(&'static str, f64)> {
    INBOX_OUTCOMES
        .into_iter()
        .map(|outcome| {
            let labels = [("inbox", inbox.label()), ("outcome", outcome)];
            (
                outcome,
                metric_value(metrics, "playhead_inbox_messages_total", &labels),
            )
        })
        .collect()
}

/// One line of a drain report: the time `count` messages took, and their rate in `unit`.
pub(crate) fn print_rate(what: &str, elapsed: Duration, count: f64, unit: &str) {
    println!(
        "  {what:<40} {:>8.2} s {:>10.0} {unit}",
        elapsed.as_secs_f64(),
        count / elapsed.as_secs_f64()
    );
}

/// The node's drain of `count` messages, timed from its start, and how much the start took.
pub(crate) fn print_node_drain(drain: Duration, ready: Duration, count: f64, unit: &str) {
    print_rate("playhead-node drain (start included)", drain, count, unit);
    println!(
        "  {:<40} {:>8.2} s",
        "  of which start until ready",
        ready.as_secs_f64()
    );
}

/// The node's partition batches of one inbox since it started.
pub(crate) struct Batches {
    count: f64,
    seconds: f64,
}

impl Batches {
    pub(crate) fn scrape(metrics: &str, inbox: Inbox) -> Self {
        let label = [("inbox", inbox.label())];
        Self {
            count: metric_value(metrics, "playhead_batch_seconds_count", &label),
            seconds: metric_value(metrics, "playhead_batch_seconds_sum", &label),
        }
    }

    /// One report line: how many batches carried `messages`, and their mean size and time.
    pub(crate) fn print(&self, messages: f64) {
        println!(
            "  node batches {:.0}: mean {:.0} messages in {:.1} ms",
            self.count,
            messages / self.count,
            self.seconds / self.count * 1_000.0
        );
    }
}

/// `outcome value, …` for a report line.
pub(crate) fn format_counts(counts: &[(&str, f64)]) -> String {
    counts
        .iter()
        .map(|(what, value)| format!("{what} {value:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Microseconds, 1 µs .. 60 s at 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The gateway's `grpc.health.v1` Check: tonic with no playhead code behind it.
pub(crate) async fn health_check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(drop)
}

/// What one phase of load produced.
pub(crate) struct Phase {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Microseconds per successful request.
    pub(crate) latency: Histogram<u64>,
}

impl Phase {
    pub(crate) fn new(elapsed: Duration) -> Self {
        Self {
            requests: 0,
            errors: 0,
            elapsed,
            latency: latency_histogram(),
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn millis_at(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }

    pub(crate) fn print(&self, what: &str) {
        println!(
            "  {what:<16} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   errors {}",
            self.rate(),
            self.millis_at(0.50),
            self.millis_at(0.99),
            self.latency.max() as f64 / 1_000.0,
            self.errors
        );
    }
}
