//! What playhead's own services share (feature `service`): logging and OTLP tracing, W3C trace
//! context in NATS headers ([`telemetry`]), the operations endpoint ([`http`]), and
//! human-readable durations for configuration ([`duration`]), the retry policy ([`retry`]), and
//! NATS users and credentials ([`nats_auth`]), files of secrets ([`secret_file`]).

pub mod duration;
pub mod http;
pub mod nats_auth;
pub mod retry;
pub mod secret_file;
pub mod telemetry;
