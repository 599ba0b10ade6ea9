//! The operations endpoint of a playhead service: `/metrics` (OpenMetrics text), `/livez` (the
//! process answers) and `/readyz` (every check of the service passes: 200 with one line per
//! check, else 503 with the same lines); the standard `process_*` metrics and `build_info`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

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
