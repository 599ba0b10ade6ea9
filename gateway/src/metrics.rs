//! Gateway metrics: gRPC requests by method and code, with a latency histogram.

use std::sync::Arc;
use std::time::Instant;

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

pub struct GatewayMetrics {
    pub registry: Registry,
    pub requests: Family<RequestLabel, Counter>,
    pub request_seconds: Family<MethodLabel, Histogram, fn() -> Histogram>,
    pub cached_stations: Gauge,
    pub watchers: Gauge,
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
        let watchers = Gauge::default();
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
            "now_playing_watchers",
            "Open WatchNowPlaying streams",
            watchers.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            request_seconds,
            cached_stations,
            watchers,
        })
    }

    /// Records one finished request.
    pub fn record<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: &Result<T, tonic::Status>,
    ) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.requests
            .get_or_create(&RequestLabel {
                method,
                code: code_name(code),
            })
            .inc();
        self.request_seconds
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The code's name as `tonic::Code`'s Debug prints it, without allocating per request.
fn code_name(code: tonic::Code) -> &'static str {
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
