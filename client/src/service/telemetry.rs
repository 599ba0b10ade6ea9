//! Logs and traces: `tracing` to stderr (text or JSON), plus OTLP export when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context travels in NATS headers.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The `[log]` section of a service's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directives; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported (OTLP configured). Per-message spans are only worth their cost
/// then: without an exporter they would be formatted for nobody.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keeps the trace exporter alive; dropping it flushes pending spans.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {error}");
        }
    }
}

/// Who exports the traces: the OTLP resource's `service.name`, `service.version` and
/// `service.instance.id`.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    pub name: &'static str,
    pub version: &'static str,
    /// Distinguishes the processes of one service (a node's id; host and pid for a gateway).
    pub instance_id: String,
}

impl ServiceIdentity {
    /// This process: `instance_id` is `{hostname}/{pid}`.
    pub fn this_process(name: &'static str, version: &'static str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        Self {
            name,
            version,
            instance_id: format!("{host}/{}", std::process::id()),
        }
    }
}

/// Installs the global subscriber. Call once, from a binary. With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP. ractor's own spans are
/// left out whatever the filter says (see `not_an_actor_span`).
pub fn init(service: &ServiceIdentity, config: &LogConfig) -> anyhow::Result<TelemetryGuard> {
    let service_name = service.name;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .map_err(|error| anyhow::anyhow!("log.filter {:?}: {error}", config.filter))?;
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service_name)
                            .with_attributes([
                                opentelemetry::KeyValue::new("service.version", service.version),
                                opentelemetry::KeyValue::new(
                                    "service.instance.id",
                                    service.instance_id.clone(),
                                ),
                            ])
                            .build(),
                    )
                    .build(),
            )
        }
        _ => None,
    };
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)));
    let registry = filtered_registry(filter).with(otel_layer);
    match config.format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()?,
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// The registry every layer sits on: ractor's actor spans never enter it, `filter` decides the
/// rest.
fn filtered_registry(filter: EnvFilter) -> impl tracing::Subscriber + for<'a> LookupSpan<'a> {
    tracing_subscriber::registry()
        .with(filter_fn(not_an_actor_span))
        .with(filter)
}

/// ractor opens a span (`Actor`, at INFO) for each actor's whole life and enters it at every
/// poll of the actor's task. They say nothing about a request, and a live entity's span held
/// ~1 KB (measured 2026-12-01: 9.0 → 7.9 KB per live user entity), so no filter lets them in;
/// ractor's events still pass.
fn not_an_actor_span(metadata: &tracing::Metadata<'_>) -> bool {
    !(metadata.is_span() && metadata.target().starts_with("ractor"))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Writes the current span's W3C trace context into `headers`.
pub fn inject_context(headers: &mut HeaderMap) {
    inject_span_context(&tracing::Span::current(), headers);
}

/// Writes `span`'s W3C trace context into `headers` (a message published for a request that
/// is not the current span's, e.g. one of a batch).
pub fn inject_span_context(span: &tracing::Span, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

struct HttpExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes the trace context of an HTTP request (a gRPC client's `traceparent`), if any, the
/// parent of `span`.
pub fn adopt_http_context(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key(playhead_proto::headers::TRACEPARENT) {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HttpExtractor(headers));
    let _ = span.set_parent(context);
}

/// Makes the trace context carried by `headers` (if any) the parent of `span`.
pub fn adopt_context(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else { return };
    if headers.get(playhead_proto::headers::TRACEPARENT).is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Without an OTLP exporter there is no span context to attach to: nothing to do.
    let _ = span.set_parent(context);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::span::{Attributes, Id};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::Context;

    use super::*;

    /// Names the spans and the targets of the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_new_span(&self, attributes: &Attributes<'_>, _id: &Id, _context: Context<'_, S>) {
            let metadata = attributes.metadata();
            self.0
                .lock()
                .unwrap()
                .push(format!("span {} {}", metadata.target(), metadata.name()));
        }

        fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("event {}", event.metadata().target()));
        }
    }

    #[test]
    fn given_any_filter_when_ractor_opens_an_actor_span_then_no_layer_sees_it_but_its_events_pass()
    {
        let seen = Seen::default();
        let subscriber = filtered_registry(EnvFilter::new("trace")).with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let _actor = tracing::info_span!(target: "ractor::actor", "Actor", id = 7).entered();
            let _slice = tracing::info_span!(target: "playhead_actors::runtime", "slice").entered();
            tracing::warn!(target: "ractor::actor", "an actor failed");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["span playhead_actors::runtime slice", "event ractor::actor"]
        );
    }
}
