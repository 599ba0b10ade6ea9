//! What playhead's own services share (feature `service`): logging and OTLP tracing, W3C trace
//! context in NATS headers ([`telemetry`]), the operations endpoint ([`http`]), and
//! human-readable durations for configuration ([`duration`]), and the retry policy ([`retry`]).

pub mod duration;
pub mod http;
pub mod retry;
pub mod telemetry;
