//! Logs and traces: the client crate's service telemetry, which the gateway shares.

pub use playhead_client::service::telemetry::*;
