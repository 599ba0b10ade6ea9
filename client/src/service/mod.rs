//! What playhead's own services share (feature `service`): logging and OTLP tracing, W3C trace
//! context in NATS headers ([`telemetry`]), and the operations endpoint ([`http`]).

pub mod http;
pub mod telemetry;
