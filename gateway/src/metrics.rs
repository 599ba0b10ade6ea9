//! Gateway metrics: gRPC requests by method and code, with a latency histogram, the
//! heartbeat answers (how often the gateway failed open, and why), and import uploads and
//! watches.

use std::sync::Arc;
use std::time::Instant;

use playhead_client::service::http as metrics_http;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub action: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct GatewayMetrics {
    pub registry: Registry,
    /// Heartbeat answers by action and reason (DEGRADED: failed open).
    pub heartbeat_decisions: Family<DecisionLabel, Counter>,
    /// Heartbeats answered DEGRADED, by why no decision came.
    pub heartbeat_fail_open: Family<CauseLabel, Counter>,
    pub requests: Family<RequestLabel, Counter>,
    pub request_seconds: Family<MethodLabel, Histogram, fn() -> Histogram>,
    pub cached_stations: Gauge,
    /// The nodes' heartbeat interval this gateway follows (fail-open answers ask for it).
    pub heartbeat_interval_seconds: Gauge,
    /// The nodes' size limit of a command this gateway follows.
    pub max_message_bytes: Gauge,
    pub watchers: Gauge,
    /// Dead letters the console replayed into their inbox.
    pub dead_letter_replays: Counter,
    /// Open console event streams.
    pub console_streams: Gauge,
    /// Finished `UploadImport`s by outcome (see [`crate::import`]).
    pub import_uploads: Family<OutcomeLabel, Counter>,
    /// Bytes of import batches stored in the object store.
    pub import_upload_bytes: Counter,
    /// Uploads streaming into the object store now.
    pub import_uploads_open: Gauge,
    /// Open WatchImport streams.
    pub import_watchers: Gauge,
}

fn latency_histogram() -> Histogram {
    // 25 µs .. ~13 s
    Histogram::new(exponential_buckets(0.000_025, 2.0, 20))
}

impl GatewayMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("playhead_gateway");
        let requests = Family::<RequestLabel, Counter>::default();
        let request_seconds =
            Family::<MethodLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let cached_stations = Gauge::default();
        let heartbeat_interval_seconds = Gauge::default();
        let max_message_bytes = Gauge::default();
        let watchers = Gauge::default();
        let dead_letter_replays = Counter::default();
        let console_streams = Gauge::default();
        let heartbeat_decisions = Family::<DecisionLabel, Counter>::default();
        let heartbeat_fail_open = Family::<CauseLabel, Counter>::default();
        let import_uploads = Family::<OutcomeLabel, Counter>::default();
        let import_upload_bytes = Counter::default();
        let import_uploads_open = Gauge::default();
        let import_watchers = Gauge::default();
        registry.register(
            "heartbeat_decisions",
            "Heartbeat answers by action and reason (reason degraded: the gateway failed open)",
            heartbeat_decisions.clone(),
        );
        registry.register(
            "heartbeat_fail_open",
            "Heartbeats answered CONTINUE/DEGRADED because no decision came, by cause \
             (timeout, unavailable, internal, duplicate)",
            heartbeat_fail_open.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        registry.register(
            "grpc_request_seconds",
            "gRPC request latency by method (streams: until the first message)",
            request_seconds.clone(),
        );
        registry.register(
            "cached_stations",
            "Stations in the now-playing cache",
            cached_stations.clone(),
        );
        registry.register(
            "heartbeat_interval_seconds",
            "The nodes' heartbeat interval, as published by them and followed here",
            heartbeat_interval_seconds.clone(),
        );
        registry.register(
            "max_message_bytes",
            "The nodes' size limit of an inbox message (ingest.max_message_bytes), as published \
             by them and held to every command here before it is encoded",
            max_message_bytes.clone(),
        );
        registry.register(
            "now_playing_watchers",
            "Open WatchNowPlaying streams",
            watchers.clone(),
        );
        registry.register(
            "dead_letter_replays",
            "Dead letters replayed into their inbox from the console",
            dead_letter_replays.clone(),
        );
        registry.register(
            "console_streams",
            "Open console event streams (live pages)",
            console_streams.clone(),
        );
        registry.register(
            "import_uploads",
            "Finished UploadImport calls by outcome (stored: stored and requested; known: the \
             import id was known, nothing stored; too_large, idle, client_error, invalid: \
             refused or cut short, the partial object deleted; refused: \
             max_concurrent_uploads reached; store_error, request_error: the broker or the \
             node failed)",
            import_uploads.clone(),
        );
        registry.register(
            "import_upload_bytes",
            "Bytes of import batches stored in the object store",
            import_upload_bytes.clone(),
        );
        registry.register(
            "import_uploads_open",
            "Uploads streaming into the object store now (at most max_concurrent_uploads)",
            import_uploads_open.clone(),
        );
        registry.register(
            "import_watchers",
            "Open WatchImport streams",
            import_watchers.clone(),
        );
        metrics_http::register_build_info(&mut registry);
        Arc::new(Self {
            registry,
            heartbeat_decisions,
            heartbeat_fail_open,
            requests,
            request_seconds,
            cached_stations,
            heartbeat_interval_seconds,
            max_message_bytes,
            watchers,
            dead_letter_replays,
            console_streams,
            import_uploads,
            import_upload_bytes,
            import_uploads_open,
            import_watchers,
        })
    }

    /// Records one finished request (see [`crate::rpc_layer`]).
    pub fn record(&self, method: &'static str, code: &'static str, started: Instant) {
        self.requests
            .get_or_create(&RequestLabel { method, code })
            .inc();
        self.request_seconds
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
    }
}

impl GatewayMetrics {
    /// Records one heartbeat answer; `fail_open_cause` when the gateway answered itself.
    pub fn record_heartbeat(
        &self,
        decision: &playhead_proto::v1::HeartbeatDecision,
        fail_open_cause: Option<&'static str>,
    ) {
        use playhead_proto::v1::{HeartbeatAction, HeartbeatReason};
        let action = match HeartbeatAction::try_from(decision.action) {
            Ok(HeartbeatAction::Continue) => "continue",
            Ok(HeartbeatAction::Stop) => "stop",
            Ok(HeartbeatAction::Unspecified) | Err(_) => "unspecified",
        };
        let reason = match HeartbeatReason::try_from(decision.reason) {
            Ok(HeartbeatReason::Ok) => "ok",
            Ok(HeartbeatReason::NotEntitled) => "not_entitled",
            Ok(HeartbeatReason::ConcurrencyLimit) => "concurrency_limit",
            Ok(HeartbeatReason::Degraded) => "degraded",
            Ok(HeartbeatReason::Unspecified) | Err(_) => "unspecified",
        };
        self.heartbeat_decisions
            .get_or_create(&DecisionLabel { action, reason })
            .inc();
        if let Some(cause) = fail_open_cause {
            self.heartbeat_fail_open
                .get_or_create(&CauseLabel { cause })
                .inc();
        }
    }
}

/// The code's name as `tonic::Code`'s Debug prints it, without allocating per request.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_match_tonics_debug_spelling() {
        for value in 0..=16 {
            let code = tonic::Code::from_i32(value);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }
}
