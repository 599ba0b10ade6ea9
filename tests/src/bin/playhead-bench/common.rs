//! What the benchmarks share: the node under test configured like `playhead-node` configures
//! itself, the bare pull consumer that is the baseline of every drain, waiting for the node to
//! have processed an inbox, and the latency figures of a phase of gRPC load.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use hdrhistogram::Histogram;
use playhead_actors::config::{EnrichmentProvider, FlagOverrides, NodeConfig};
use playhead_client::service::nats_auth::NatsRole;
use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::{requester_keys_for, seed_for};
use playhead_tests::model::{Publication, publish_pipelined};
use playhead_tests::system::{START_TIMEOUT, TestNode, metric_value};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::cpu::{CpuSample, CpuSpent};

/// The scratch stream of the journal floor (see [`journal_floor`]).
const JOURNAL_FLOOR_STREAM: &str = "BENCH_JOURNAL_FLOOR";
const JOURNAL_FLOOR_PREFIX: &str = "bench-floor";
/// Longest a drain may take before the benchmark gives up on it.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a drain's progress is scraped from the node's metrics. Each scrape encodes the
/// node's whole registry on the node's own runtime (5% of its CPU when scraped every 5 ms), a
/// cost the bare drains do not pay; 20 ms bounds the error on the end of a drain to 20 ms.
const PROGRESS_POLL: Duration = Duration::from_millis(20);
/// Messages the baseline consumer asks for per pull.
const BASELINE_BATCH: usize = 500;

/// Pulls a bare drain lets go unanswered (no responder yet, a missed heartbeat) before it
/// gives up.
const MAX_TRANSIENT_PULL_ERRORS: u32 = 100;
/// Load before the measured part of a read phase.
pub(crate) const WARM_UP: Duration = Duration::from_secs(1);
/// Outcomes the node counts per inbox message (`playhead_inbox_messages_total`).
const INBOX_OUTCOMES: [&str; 4] = ["applied", "unchanged", "duplicate", "dead_lettered"];

/// The node's configuration loaded like playhead-node loads it, so PLAYHEAD_* variables tune
/// the node under test: joins `nats_url` (signed in as the node), keeps state in `data_dir`, metrics on a free port.
pub(crate) fn node_config(
    nats_url: &str,
    data_dir: &Path,
    partitions: u32,
) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig::load(
        None,
        &FlagOverrides {
            data_dir: Some(data_dir.to_owned()),
            nats_url: Some(nats_url.to_owned()),
            nats_nkey_file: seed_for(nats_url, NatsRole::Node),
            partitions: Some(partitions),
            metrics_listen: Some("127.0.0.1:0".parse().expect("valid address")),
            ..FlagOverrides::default()
        },
    )
    .context("benchmark node configuration")?;
    config.nats.requester_keys = requester_keys_for(nats_url);
    // Measured without enrichment (the other phases' figures predate it, and no benchmark
    // reaches the real MusicBrainz); the enrichment phase measures the difference.
    config.enrichment.provider = EnrichmentProvider::None;
    Ok(config)
}

/// The drain benchmark of `inbox`: `publish` stores `count` messages while no node consumes
/// them; a bare consumer drains them, then bare consumers per partition, then the node started
/// from `config`, timed from its start until it has processed them all, with the CPU this
/// process and the broker (`broker_pid`) spent in each. Returns the times and the node, still
/// running.
pub(crate) async fn publish_and_drain(
    jetstream: &jetstream::Context,
    broker_pid: Option<u32>,
    config: NodeConfig,
    inbox: Inbox,
    (count, what): (u64, &str),
    publish: impl Future<Output = ()>,
) -> anyhow::Result<(Drains, TestNode)> {
    let (drains, node, _) = publish_and_drain_until(
        jetstream,
        broker_pid,
        config,
        inbox,
        (count, what),
        publish,
        async |node: &TestNode| wait_processed(node, inbox, count as f64, what).await,
    )
    .await?;
    Ok((drains, node))
}

/// [`publish_and_drain`] for an inbox the node adds to while it drains (answers of its own
/// services): its count of processed messages would end the drain early, so the caller tells
/// the end, `drained` returning once the node has processed the `count` published messages.
/// Returns the times, the node, still running, and when it was started.
pub(crate) async fn publish_and_drain_until(
    jetstream: &jetstream::Context,
    broker_pid: Option<u32>,
    config: NodeConfig,
    inbox: Inbox,
    (count, what): (u64, &str),
    publish: impl Future<Output = ()>,
    drained: impl AsyncFnOnce(&TestNode) -> anyhow::Result<()>,
) -> anyhow::Result<(Drains, TestNode, Instant)> {
    let stream = jetstream.get_stream(inbox.stream_name()).await?;
    let from = consumer::DeliverPolicy::ByStartSequence {
        start_sequence: stream.get_info().await?.state.last_sequence + 1,
    };
    eprintln!("publishing {count} {what}…");
    let started = Instant::now();
    publish.await;
    let publish = started.elapsed();

    eprintln!("draining {what} with a bare consumer…");
    let (baseline, baseline_cpu) = bare_drain(jetstream, broker_pid, inbox, from, count).await?;
    eprintln!("draining {what} with bare partition consumers…");
    let partitions = config.ingest.partitions;
    let partitioned = bare_partitioned_drain(jetstream, inbox, partitions, from).await?;

    let journal_before = jetstream
        .get_stream(EVENTS_STREAM)
        .await?
        .get_info()
        .await?
        .state
        .last_sequence;
    eprintln!("draining {what} with playhead-node…");
    let cpu_before = CpuSample::now(broker_pid);
    let node_started = Instant::now();
    let node = TestNode::start_with(config, run_options()?, START_TIMEOUT).await;
    let node_ready = node_started.elapsed();
    drained(&node).await?;
    let node_drain = node_started.elapsed();
    let node_cpu = CpuSample::now(broker_pid).spent_since(&cpu_before);
    eprintln!("publishing the events the node journaled again, bare…");
    let journal_floor = journal_floor(jetstream, broker_pid, journal_before).await?;
    let drains = Drains {
        publish,
        baseline,
        baseline_cpu,
        partitioned,
        node_ready,
        node_drain,
        node_cpu,
        journal_floor,
    };
    Ok((drains, node, node_started))
}

/// The broker's least cost of the journal: the events appended after sequence `after`, read
/// back and published again — pipelined, without the expected-sequence checks an append
/// needs — to a scratch stream of their own (deleted after). With the bare drain, the least
/// time a node that journals every event in its own message could take on this machine.
async fn journal_floor(
    jetstream: &jetstream::Context,
    broker_pid: Option<u32>,
    after: u64,
) -> anyhow::Result<JournalFloor> {
    let events = jetstream.get_stream(EVENTS_STREAM).await?;
    let appended = events.get_info().await?.state.last_sequence - after;
    let reader = bare_consumer(
        &events,
        "bench-journal-reader",
        String::new(),
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
    )
    .await?;
    let mut copies = Vec::with_capacity(appended as usize);
    drain(reader, appended, |message| {
        // The broker's own headers would apply to the copy: only playhead's are kept.
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter().flat_map(|headers| headers.iter()) {
            if !AsRef::<str>::as_ref(name).starts_with("Nats-") {
                for value in values {
                    headers.append(name.clone(), value.as_str());
                }
            }
        }
        copies.push(Publication {
            subject: format!("{JOURNAL_FLOOR_PREFIX}.{}", message.subject),
            headers,
            payload: message.payload.clone(),
        });
    })
    .await?;
    jetstream
        .create_stream(jetstream::stream::Config {
            name: JOURNAL_FLOOR_STREAM.into(),
            subjects: vec![format!("{JOURNAL_FLOOR_PREFIX}.>")],
            ..Default::default()
        })
        .await?;
    let cpu_before = CpuSample::now(broker_pid);
    let started = Instant::now();
    publish_pipelined(jetstream, copies).await;
    let publish = started.elapsed();
    let cpu = CpuSample::now(broker_pid).spent_since(&cpu_before);
    jetstream.delete_stream(JOURNAL_FLOOR_STREAM).await?;
    Ok(JournalFloor {
        events: appended,
        publish,
        cpu,
    })
}

/// Drains `count` messages of `inbox`, starting `from`, with one ephemeral pull consumer of
/// its own (the node's consumers are untouched): the broker's best case for these messages.
async fn bare_drain(
    jetstream: &jetstream::Context,
    broker_pid: Option<u32>,
    inbox: Inbox,
    from: consumer::DeliverPolicy,
    count: u64,
) -> anyhow::Result<(Duration, CpuSpent)> {
    let stream = jetstream.get_stream(inbox.stream_name()).await?;
    let consumer = bare_consumer(&stream, "bench-bare", String::new(), from).await?;
    let cpu_before = CpuSample::now(broker_pid);
    let started = Instant::now();
    drain(consumer, count, |_| {}).await?;
    let elapsed = started.elapsed();
    Ok((elapsed, CpuSample::now(broker_pid).spent_since(&cpu_before)))
}

/// Drains `inbox` from `from` on with one ephemeral pull consumer per partition, filtered like
/// the node's, all at once: what the partitioned layout costs the broker before playhead does
/// any work.
async fn bare_partitioned_drain(
    jetstream: &jetstream::Context,
    inbox: Inbox,
    partitions: u32,
    from: consumer::DeliverPolicy,
) -> anyhow::Result<Duration> {
    let stream = jetstream.get_stream(inbox.stream_name()).await?;
    let mut drains = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let filter = inbox.partition_filter(partition);
        let mut consumer =
            bare_consumer(&stream, &format!("bench-bare-p{partition}"), filter, from).await?;
        let pending = consumer.info().await?.num_pending;
        drains.push((consumer, pending));
    }
    let started = Instant::now();
    futures::future::try_join_all(
        drains
            .into_iter()
            .map(|(consumer, pending)| drain(consumer, pending, |_| {})),
    )
    .await?;
    Ok(started.elapsed())
}

async fn bare_consumer(
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

/// Pulls `count` messages in batches and acks each one, after handing it to `each`.
async fn drain(
    consumer: consumer::PullConsumer,
    count: u64,
    mut each: impl FnMut(&jetstream::Message),
) -> anyhow::Result<()> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BASELINE_BATCH)
        .messages()
        .await?;
    let mut taken = 0;
    let mut transient = 0;
    while taken < count {
        let message = match tokio::time::timeout(DRAIN_TIMEOUT, messages.next())
            .await
            .context("bare consumer stalled")?
            .context("bare consumer ended early")?
        {
            Ok(message) => message,
            // A pull the broker had no responder for yet (a consumer just created): the stream
            // pulls again.
            Err(error)
                if matches!(
                    error.kind(),
                    MessagesErrorKind::NoResponders | MessagesErrorKind::MissingHeartbeat
                ) && transient < MAX_TRANSIENT_PULL_ERRORS =>
            {
                transient += 1;
                continue;
            }
            Err(error) => anyhow::bail!("bare consumer: {error}"),
        };
        taken += 1;
        each(&message);
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
    wait_processed_by(async || node.metrics().await, inbox, total, what).await
}

/// [`wait_processed`] for a node whose metrics `scrape` reads (one in a process of its own).
pub(crate) async fn wait_processed_by(
    scrape: impl AsyncFn() -> String,
    inbox: Inbox,
    total: f64,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let label = [("inbox", inbox.label())];
    loop {
        // The node counts a batch only after its acknowledgement: at `total` all are acked.
        let processed = metric_value(&scrape().await, "playhead_inbox_messages_total", &label);
        if processed >= total {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "playhead-node processed {processed} of {total} {what} in {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(PROGRESS_POLL).await;
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

/// The times of one drain benchmark: the same stored messages published, drained bare, and
/// drained by the node.
pub(crate) struct Drains {
    publish: Duration,
    /// One bare consumer over the whole stream.
    baseline: Duration,
    baseline_cpu: CpuSpent,
    /// One bare consumer per partition, all at once.
    partitioned: Duration,
    /// Until the node's start returned, and until it had processed every message.
    node_ready: Duration,
    node_drain: Duration,
    /// From the node's start until it had processed every message.
    node_cpu: CpuSpent,
    journal_floor: JournalFloor,
}

/// The events the node journaled during its drain, and how long publishing them again bare
/// took.
struct JournalFloor {
    events: u64,
    publish: Duration,
    cpu: CpuSpent,
}

impl Drains {
    /// The time and rate (`unit`) of each step for `count` messages.
    pub(crate) fn print_times(&self, count: f64, unit: &str) {
        let line = |what: &str, elapsed: Duration| {
            println!(
                "  {what:<40} {:>8.2} s {:>10.0} {unit}",
                elapsed.as_secs_f64(),
                count / elapsed.as_secs_f64()
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
    }

    /// Prints the node's drain rate ÷ the bare ones and where the CPU went, with the CPU budget
    /// of a node at the `target` ratio; returns node ÷ the single bare consumer.
    pub(crate) fn print_ratios(&self, count: f64, target: Option<f64>) -> f64 {
        // Same message count throughout: the rate ratio is the inverse time ratio.
        let node_over = |bare: Duration| bare.as_secs_f64() / self.node_drain.as_secs_f64();
        let ratio = node_over(self.baseline);
        println!("  ratio node ÷ bare drain rate {ratio:.2}");
        println!(
            "  ratio node ÷ bare partitioned drain rate {:.2} (the partitioned layout's own cost: {:.2})",
            node_over(self.partitioned),
            self.baseline.as_secs_f64() / self.partitioned.as_secs_f64()
        );
        let JournalFloor {
            events, publish, ..
        } = self.journal_floor;
        let floor = self.baseline + publish;
        println!(
            "  journal floor: the {events} journaled events published again bare (pipelined, no expected-sequence checks) {:.2} s; bare drain + that {:.2} s",
            publish.as_secs_f64(),
            floor.as_secs_f64()
        );
        println!(
            "    → best ratio a node journaling every event could reach here {:.2}; node ÷ that floor {:.2}",
            self.baseline.as_secs_f64() / floor.as_secs_f64(),
            node_over(floor)
        );
        self.print_cpu(count, target);
        ratio
    }

    /// CPU seconds of each drain, split between the benchmark process (the bare client, or
    /// the node) and nats-server; with a `target`, what the two cores leave the node at it.
    fn print_cpu(&self, count: f64, target: Option<f64>) {
        let seconds = |spent: Option<f64>| spent.map_or("n/a".to_owned(), |s| format!("{s:.2}"));
        let line = |what: &str, who: &str, spent: CpuSpent, wall: Duration| {
            println!(
                "    {what:<34} {who} {:>6} s   nats-server {:>6} s   ({} of the cores busy)",
                seconds(spent.bench),
                seconds(spent.broker),
                spent
                    .cores_busy(wall)
                    .map_or("n/a".to_owned(), |cores| format!("{cores:.2}"))
            );
        };
        println!("  CPU (benchmark process: the bare client, or the in-process node; nats-server)");
        line("bare drain", "client", self.baseline_cpu, self.baseline);
        let floor = &self.journal_floor;
        line(
            "journaled events published again",
            "client",
            floor.cpu,
            floor.publish,
        );
        line(
            "playhead-node drain",
            "node  ",
            self.node_cpu,
            self.node_drain,
        );
        let (Some(target), Some(node), Some(broker)) =
            (target, self.node_cpu.bench, self.node_cpu.broker)
        else {
            return;
        };
        // At the target the node drains in baseline ÷ target; its messages still cost the
        // broker what they cost it now.
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let drain_at_target = self.baseline.as_secs_f64() / target;
        let left_to_node = cores * drain_at_target - broker;
        let micros = |core_seconds: f64| core_seconds / count * 1e6;
        let bare_client = self
            .baseline_cpu
            .bench
            .zip(floor.cpu.bench)
            .map(|(a, b)| a + b);
        println!(
            "    budget at the target {target}: a drain of ≤ {drain_at_target:.2} s gives {cores:.0} cores {:.1} core-s; the broker's {broker:.2} for the node's traffic leaves the node ≤ {left_to_node:.2} ({:.1} µs a message) at 100% busy; it used {node:.2} ({:.1} µs){}",
            cores * drain_at_target,
            micros(left_to_node),
            micros(node),
            bare_client.map_or(String::new(), |client| format!(
                "; a bare client of the same traffic used {client:.2} ({:.1} µs)",
                micros(client)
            ))
        );
    }
}

/// The node's partition batches of one inbox since it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batches {
    count: f64,
    seconds: f64,
    /// Inbox messages processed, whatever their outcome.
    pub(crate) messages: f64,
}

impl Batches {
    pub(crate) fn scrape(metrics: &str, inbox: Inbox) -> Self {
        let label = [("inbox", inbox.label())];
        Self {
            count: metric_value(metrics, "playhead_batch_seconds_count", &label),
            seconds: metric_value(metrics, "playhead_batch_seconds_sum", &label),
            messages: metric_value(metrics, "playhead_inbox_messages_total", &label),
        }
    }

    /// The batches between an `earlier` scrape and this one.
    pub(crate) fn since(&self, earlier: &Batches) -> Batches {
        Batches {
            count: self.count - earlier.count,
            seconds: self.seconds - earlier.seconds,
            messages: self.messages - earlier.messages,
        }
    }

    /// One report line: how many batches carried `messages`, and their mean size and time.
    pub(crate) fn print(&self, messages: f64) {
        self.print_as("node batches", messages);
    }

    /// [`Batches::print`] with another name for the batches.
    pub(crate) fn print_as(&self, what: &str, messages: f64) {
        println!(
            "  {what} {:.0}: mean {:.0} messages in {:.1} ms",
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

/// The drained node's run options: the faults of `PLAYHEAD_FAULTS`, as `playhead-node` reads
/// them (e.g. `append_delay_ms=1`, a broker a network round trip away).
fn run_options() -> anyhow::Result<playhead_actors::node::RunOptions> {
    Ok(playhead_actors::node::RunOptions {
        faults: playhead_actors::faults::Faults::from_env()?,
        ..Default::default()
    })
}
