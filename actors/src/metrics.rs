//! Prometheus metrics of the node, and the operations HTTP endpoint (also used by the gateway):
//! `/metrics`, `/livez` (the process answers) and `/readyz` (every check of the service passes:
//! 200 with one line per check, else 503 with the same lines).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboxOutcome {
    pub inbox: &'static str,
    /// applied | unchanged | duplicate | dead_lettered
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboxLabel {
    pub inbox: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub inbox: &'static str,
    /// The ownership group's index.
    pub group: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabel {
    pub inbox: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntityKindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyspaceLabel {
    pub keyspace: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The labels every series of the node's counters can take, so each starts at 0 (an alert on
/// `increase(...)` sees the first event, and a dashboard shows 0, not "no data").
pub struct LabelSets<'a> {
    pub inboxes: &'a [&'static str],
    pub kinds: &'a [&'static str],
    pub dead_letter_reasons: &'a [&'static str],
    pub keyspaces: &'a [&'static str],
}

/// `build_info{version} 1`: which build a scraped process runs.
pub fn register_build_info(registry: &mut Registry) {
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Build {
        version: &'static str,
    }
    let info = Family::<Build, Gauge>::default();
    info.get_or_create(&Build {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    registry.register("build_info", "The running build (always 1)", info);
}

/// The standard `process_*` metrics (Linux, read from /proc on each scrape): CPU seconds,
/// resident and virtual memory, open and maximum file descriptors, threads, start time.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

impl ProcessCollector {
    /// A registry without a prefix holding it (the names are standard).
    pub fn registry() -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        registry
    }

    fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // stat(5) numbers fields from 1 with the pid; `fields[0]` is field 3 (state).
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kilobytes = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        };
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse::<u64>()
            .ok()?;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|line| line.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok();
        Some(ProcessFigures {
            cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / USER_HZ,
            threads: field(20)?,
            resident_bytes: kilobytes("VmRSS:")?,
            virtual_bytes: kilobytes("VmSize:")?,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
            max_fds,
        })
    }
}

struct ProcessFigures {
    cpu_seconds: f64,
    start_time_seconds: f64,
    threads: u64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(figures) = Self::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(figures.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let mut gauges = vec![
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                figures.start_time_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                figures.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                figures.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                figures.open_fds as f64,
            ),
            ("process_threads", "OS threads", figures.threads as f64),
        ];
        if let Some(max_fds) = figures.max_fds {
            gauges.push((
                "process_max_fds",
                "Maximum number of open file descriptors",
                max_fds as f64,
            ));
        }
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Every metric of the node.
pub struct NodeMetrics {
    pub registry: Registry,
    pub inbox_messages: Family<InboxOutcome, Counter>,
    pub batch_seconds: Family<InboxLabel, Histogram, fn() -> Histogram>,
    pub message_latency_seconds: Family<InboxLabel, Histogram, fn() -> Histogram>,
    pub consumer_pending: Family<GroupLabel, Gauge>,
    pub entities_live: Family<EntityKindLabel, Gauge>,
    pub entities_passivated: Family<EntityKindLabel, Counter>,
    pub dead_letters: Family<DeadLetterLabel, Counter>,
    pub dead_letter_failures: Family<InboxLabel, Counter>,
    pub events_published: Family<EventLabel, Counter>,
    pub batch_retries: Family<InboxLabel, Counter>,
    pub keyspace_buckets: Family<KeyspaceLabel, Gauge>,
    pub keyspace_buckets_dropped: Family<KeyspaceLabel, Counter>,
    pub keyspace_compaction_seconds: Family<KeyspaceLabel, Histogram, fn() -> Histogram>,
    pub keyspace_compaction_failures: Family<KeyspaceLabel, Counter>,
    pub journal_catch_ups: Family<EntityKindLabel, Counter>,
    pub snapshot_seconds: Family<SnapshotLabel, Histogram, fn() -> Histogram>,
    pub snapshot_failures: Family<SnapshotLabel, Counter>,
    pub snapshot_last_success: Family<SnapshotLabel, Gauge>,
    pub snapshot_journal_sequence: Family<SnapshotLabel, Gauge>,
}

impl NodeMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("playhead");
        let metrics = Self {
            inbox_messages: Family::default(),
            batch_seconds: Family::new_with_constructor(latency_histogram),
            message_latency_seconds: Family::new_with_constructor(latency_histogram),
            consumer_pending: Family::default(),
            entities_live: Family::default(),
            entities_passivated: Family::default(),
            dead_letters: Family::default(),
            dead_letter_failures: Family::default(),
            events_published: Family::default(),
            batch_retries: Family::default(),
            keyspace_buckets: Family::default(),
            keyspace_buckets_dropped: Family::default(),
            keyspace_compaction_seconds: Family::new_with_constructor(latency_histogram),
            keyspace_compaction_failures: Family::default(),
            journal_catch_ups: Family::default(),
            snapshot_seconds: Family::new_with_constructor(latency_histogram),
            snapshot_failures: Family::default(),
            snapshot_last_success: Family::default(),
            snapshot_journal_sequence: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "inbox_messages",
            "Inbox messages processed, by inbox and outcome",
            metrics.inbox_messages.clone(),
        );
        registry.register(
            "batch_seconds",
            "Time to process one partition batch (decide, persist, publish, flush, ack)",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "message_latency_seconds",
            "From the broker storing an inbox message to its acknowledgement",
            metrics.message_latency_seconds.clone(),
        );
        registry.register(
            "consumer_pending",
            "Inbox messages not yet delivered to the ownership group's consumer",
            metrics.consumer_pending.clone(),
        );
        registry.register(
            "entities_live",
            "Entity actors currently running",
            metrics.entities_live.clone(),
        );
        registry.register(
            "entities_passivated",
            "Entity actors stopped because they were idle or over the per-shard bound",
            metrics.entities_passivated.clone(),
        );
        registry.register(
            "dead_letters",
            "Inbox messages copied to PLAYHEAD_DLQ, by reason",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "dead_letter_failures",
            "Dead-letter copies given up (refused for good by the broker, or failing repeatedly); \
             the original stays in its inbox stream",
            metrics.dead_letter_failures.clone(),
        );
        registry.register(
            "events_published",
            "Domain events published to PLAYHEAD_EVENTS",
            metrics.events_published.clone(),
        );
        registry.register(
            "batch_retries",
            "Partition batches retried after a storage or broker failure",
            metrics.batch_retries.clone(),
        );
        registry.register(
            "keyspace_buckets",
            "Time-bucket trees held per keyspace (live, and expired ones not yet dropped)",
            metrics.keyspace_buckets.clone(),
        );
        registry.register(
            "keyspace_buckets_dropped",
            "Expired time-bucket trees dropped by compaction",
            metrics.keyspace_buckets_dropped.clone(),
        );
        registry.register(
            "keyspace_compaction_seconds",
            "Time one compaction of a keyspace took",
            metrics.keyspace_compaction_seconds.clone(),
        );
        registry.register(
            "keyspace_compaction_failures",
            "Compactions that failed (retried at the next interval)",
            metrics.keyspace_compaction_failures.clone(),
        );
        registry.register(
            "journal_catch_ups",
            "Entities that folded journal events their local records lacked (after a crash or a restore)",
            metrics.journal_catch_ups.clone(),
        );
        registry.register(
            "snapshot_seconds",
            "Time to copy one kind's folded state to the object store",
            metrics.snapshot_seconds.clone(),
        );
        registry.register(
            "snapshot_failures",
            "Snapshots that failed (tried again at the next check)",
            metrics.snapshot_failures.clone(),
        );
        registry.register(
            "snapshot_last_success_timestamp_seconds",
            "Unix time of each kind's last successful snapshot",
            metrics.snapshot_last_success.clone(),
        );
        registry.register(
            "snapshot_journal_sequence",
            "Journal sequence the latest snapshot of each kind covers",
            metrics.snapshot_journal_sequence.clone(),
        );
        register_build_info(&mut registry);
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    /// Creates every series of `labels` at 0 (see [`LabelSets`]).
    pub fn start_at_zero(&self, labels: &LabelSets<'_>) {
        for &inbox in labels.inboxes {
            for outcome in ["applied", "unchanged", "duplicate", "dead_lettered"] {
                self.inbox_messages
                    .get_or_create(&InboxOutcome { inbox, outcome })
                    .inc_by(0);
            }
            for &reason in labels.dead_letter_reasons {
                self.dead_letters
                    .get_or_create(&DeadLetterLabel { inbox, reason })
                    .inc_by(0);
            }
            self.dead_letter_failures
                .get_or_create(&InboxLabel { inbox })
                .inc_by(0);
            self.batch_retries
                .get_or_create(&InboxLabel { inbox })
                .inc_by(0);
        }
        for &kind in labels.kinds {
            self.entities_passivated
                .get_or_create(&EntityKindLabel { kind })
                .inc_by(0);
            self.journal_catch_ups
                .get_or_create(&EntityKindLabel { kind })
                .inc_by(0);
            self.snapshot_failures
                .get_or_create(&SnapshotLabel { kind })
                .inc_by(0);
        }
        for &keyspace in labels.keyspaces {
            self.keyspace_buckets_dropped
                .get_or_create(&KeyspaceLabel { keyspace })
                .inc_by(0);
            self.keyspace_compaction_failures
                .get_or_create(&KeyspaceLabel { keyspace })
                .inc_by(0);
        }
    }
}

/// What `/readyz` answers: ready or not, with one `name: ok|FAIL detail` line per check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Result<String, String>)>,
}

impl Readiness {
    /// Adds a check: `Ok(detail)` passes, `Err(detail)` fails.
    pub fn check(mut self, name: &'static str, result: Result<String, String>) -> Self {
        self.checks.push((name, result));
        self
    }

    pub fn is_ready(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(_, result)| result.is_ok())
    }

    /// One line per check, for people and probes' logs.
    pub fn report(&self) -> String {
        let mut text = String::new();
        for (name, result) in &self.checks {
            let line = match result {
                Ok(detail) => format!("{name}: ok {detail}"),
                Err(detail) => format!("{name}: FAIL {detail}"),
            };
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Runs a service's readiness checks (each call checks afresh).
pub type ReadinessCheck =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Readiness> + Send>> + Send + Sync>;

/// Serves `GET /metrics` (Prometheus text), `GET /livez` and `GET /readyz` until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<dyn Fn() -> String + Send + Sync>,
    readiness: ReadinessCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = registry.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(),
                    )
                }
            }),
        )
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let readiness = readiness().await;
                    let status = if readiness.is_ready() {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, readiness.report())
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Renders registries, one after the other, in the OpenMetrics text format.
pub fn render(registries: &[&Registry]) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    for registry in registries {
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, registry);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut text);
    text
}
