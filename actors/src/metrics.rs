//! Prometheus metrics of the node; the operations endpoint that serves them is the client
//! crate's (`playhead_client::service::http`), shared with the gateway.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use playhead_client::service::http::{
    ProcessCollector, Readiness, ReadinessCheck, register_build_info, render, serve,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
pub struct RecordOutcome {
    /// new | duplicate | invalid
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImportStateLabel {
    /// accepted | completed | failed (counters); running (gauge)
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// musicbrainz | coverart
    pub provider: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabel {
    /// musicbrainz | coverart
    pub provider: &'static str,
    /// ok | not_found | rate_limited | server_error | client_error | timeout | unreachable |
    /// undecodable
    pub outcome: &'static str,
}

/// Every outcome label of [`ProviderCallLabel`].
pub const PROVIDER_CALL_OUTCOMES: &[&str] = &[
    "ok",
    "not_found",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "unreachable",
    "undecodable",
];

/// Every provider label.
pub const PROVIDERS: &[&str] = &["musicbrainz", "coverart"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheResultLabel {
    /// hit | not_found_hit | miss
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnrichmentOutcomeLabel {
    /// enriched | not_found | dropped | given_up
    pub outcome: &'static str,
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

/// Every metric of the node.
pub struct NodeMetrics {
    pub registry: Registry,
    pub inbox_messages: Family<InboxOutcome, Counter>,
    pub batch_seconds: Family<InboxLabel, Histogram, fn() -> Histogram>,
    pub message_latency_seconds: Family<InboxLabel, Histogram, fn() -> Histogram>,
    pub consumer_pending: Family<GroupLabel, Gauge>,
    pub entities_live: Family<EntityKindLabel, Gauge>,
    pub entities_passivated: Family<EntityKindLabel, Counter>,
    pub entity_failures: Family<EntityKindLabel, Counter>,
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
    pub import_records: Family<RecordOutcome, Counter>,
    pub imports: Family<ImportStateLabel, Counter>,
    pub imports_running: Gauge,
    pub import_seconds: Histogram,
    pub enrichment_cache: Family<CacheResultLabel, Counter>,
    pub enrichment_provider_calls: Family<ProviderCallLabel, Counter>,
    pub enrichment_singleflight_joins: Counter,
    pub enrichment_rate_limit_waits: Family<ProviderLabel, Counter>,
    pub enrichment_rate_limit_wait_seconds: Family<ProviderLabel, Counter<f64, AtomicU64>>,
    pub enrichment_breaker_state: Family<ProviderLabel, Gauge>,
    pub enrichment_pending_songs: Gauge,
    pub enrichment_songs: Family<EnrichmentOutcomeLabel, Counter>,
    pub enrichment_lookup_seconds: Histogram,
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
            entity_failures: Family::default(),
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
            import_records: Family::default(),
            imports: Family::default(),
            imports_running: Gauge::default(),
            import_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            enrichment_cache: Family::default(),
            enrichment_provider_calls: Family::default(),
            enrichment_singleflight_joins: Counter::default(),
            enrichment_rate_limit_waits: Family::default(),
            enrichment_rate_limit_wait_seconds: Family::default(),
            enrichment_breaker_state: Family::default(),
            enrichment_pending_songs: Gauge::default(),
            enrichment_songs: Family::default(),
            // 10 ms .. ~160 s
            enrichment_lookup_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
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
            "entity_failures",
            "Entity slices of a batch that failed (the entity is stopped, and reloads from \
             storage when the batch is retried)",
            metrics.entity_failures.clone(),
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
        registry.register(
            "import_records",
            "Import records by outcome (new, duplicate, invalid)",
            metrics.import_records.clone(),
        );
        registry.register(
            "imports",
            "Imports that reached a state (accepted, completed, failed)",
            metrics.imports.clone(),
        );
        registry.register(
            "imports_running",
            "Imports running now",
            metrics.imports_running.clone(),
        );
        registry.register(
            "import_seconds",
            "How long an import ran, from its start (or resumption) to its end",
            metrics.import_seconds.clone(),
        );
        registry.register(
            "enrichment_cache",
            "Enrichment cache look-ups of a new song on a station, by result (hit, not_found_hit, miss)",
            metrics.enrichment_cache.clone(),
        );
        registry.register(
            "enrichment_provider_calls",
            "HTTP requests to an enrichment provider, by provider and outcome",
            metrics.enrichment_provider_calls.clone(),
        );
        registry.register(
            "enrichment_singleflight_joins",
            "Plays that joined a look-up already waiting for the same song instead of asking again",
            metrics.enrichment_singleflight_joins.clone(),
        );
        registry.register(
            "enrichment_rate_limit_waits",
            "Requests that waited for their provider's rate limit (token bucket or Retry-After)",
            metrics.enrichment_rate_limit_waits.clone(),
        );
        registry.register(
            "enrichment_rate_limit_wait_seconds",
            "Time requests spent waiting for their provider's rate limit",
            metrics.enrichment_rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "enrichment_breaker_state",
            "Circuit breaker of each provider: 0 closed, 1 half-open (one trial request), 2 open",
            metrics.enrichment_breaker_state.clone(),
        );
        registry.register(
            "enrichment_pending_songs",
            "Distinct songs waiting for the provider",
            metrics.enrichment_pending_songs.clone(),
        );
        registry.register(
            "enrichment_songs",
            "Songs the provider answered for (enriched, not_found), that were not queued (dropped), \
             or that were given up (given_up: refused by the provider, or its answers unreadable)",
            metrics.enrichment_songs.clone(),
        );
        registry.register(
            "enrichment_lookup_seconds",
            "From a song's first miss to its provider's answer (waits, retries and requests)",
            metrics.enrichment_lookup_seconds.clone(),
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
            self.entity_failures
                .get_or_create(&EntityKindLabel { kind })
                .inc_by(0);
            self.journal_catch_ups
                .get_or_create(&EntityKindLabel { kind })
                .inc_by(0);
            self.snapshot_failures
                .get_or_create(&SnapshotLabel { kind })
                .inc_by(0);
        }
        for outcome in ["new", "duplicate", "invalid"] {
            self.import_records
                .get_or_create(&RecordOutcome { outcome })
                .inc_by(0);
        }
        for state in ["accepted", "completed", "failed"] {
            self.imports
                .get_or_create(&ImportStateLabel { state })
                .inc_by(0);
        }
        for result in ["hit", "not_found_hit", "miss"] {
            self.enrichment_cache
                .get_or_create(&CacheResultLabel { result })
                .inc_by(0);
        }
        for outcome in ["enriched", "not_found", "dropped", "given_up"] {
            self.enrichment_songs
                .get_or_create(&EnrichmentOutcomeLabel { outcome })
                .inc_by(0);
        }
        for &provider in PROVIDERS {
            for &outcome in PROVIDER_CALL_OUTCOMES {
                self.enrichment_provider_calls
                    .get_or_create(&ProviderCallLabel { provider, outcome })
                    .inc_by(0);
            }
            self.enrichment_rate_limit_waits
                .get_or_create(&ProviderLabel { provider })
                .inc_by(0);
            self.enrichment_rate_limit_wait_seconds
                .get_or_create(&ProviderLabel { provider })
                .inc_by(0.0);
            self.enrichment_breaker_state
                .get_or_create(&ProviderLabel { provider })
                .set(0);
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
