//! Logs and traces: `tracing` to stderr (text or JSON), plus OTLP export when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context travels in NATS headers.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

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
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP (ractor's own spans are
/// left out: they are one per actor and say nothing about a request).
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
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(
                Targets::new()
                    .with_default(LevelFilter::TRACE)
                    .with_target("ractor", LevelFilter::OFF),
            )
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
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
