//! Health that tells the truth: without its broker connection the gateway can publish no
//! command and answer no query, so every gRPC service (and the overall `""`) is SERVING only
//! while the connection is up, and `/readyz` says the same. The connection state is read every
//! [`POLL`]; a change is logged once.

use std::sync::Arc;
use std::time::Duration;

use playhead_client::service::http::{Readiness, ReadinessCheck};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often the connection state is read.
pub const POLL: Duration = Duration::from_millis(250);

/// Whether the broker connection is up, with the state for a person.
fn broker(client: &async_nats::Client) -> Result<String, String> {
    match client.connection_state() {
        async_nats::connection::State::Connected => Ok(String::new()),
        state => Err(format!("broker connection {state:?}")),
    }
}

/// Keeps `services` (names as in `grpc.health.v1`) and the overall status in step with the
/// broker connection until `stop`.
pub async fn follow_broker(
    reporter: HealthReporter,
    client: async_nats::Client,
    services: Vec<&'static str>,
    stop: CancellationToken,
) {
    let mut serving = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = poll.tick() => {}
        }
        let now = broker(&client);
        if serving == Some(now.is_ok()) {
            continue;
        }
        let status = match &now {
            Ok(_) => {
                tracing::info!("broker connected: gRPC services SERVING");
                ServingStatus::Serving
            }
            Err(detail) => {
                tracing::warn!(%detail, "broker unreachable: gRPC services NOT_SERVING");
                ServingStatus::NotServing
            }
        };
        for service in std::iter::once("").chain(services.iter().copied()) {
            reporter.set_service_status(service, status).await;
        }
        serving = Some(now.is_ok());
    }
}

/// The gateway's `/readyz`: the broker connection.
pub fn readiness(client: async_nats::Client) -> ReadinessCheck {
    Arc::new(move || {
        let check = broker(&client);
        Box::pin(async move { Readiness::default().check("broker", check) })
    })
}
