//! Settings the nodes publish for the edges (KV bucket
//! [`SETTINGS_BUCKET`](crate::subjects::SETTINGS_BUCKET)), so each is configured in one place.

/// The nodes' `playout.heartbeat_interval_secs` unless configured; also what a gateway answers
/// a fail-open heartbeat with before any node published its interval.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 10 * 60;

/// The nodes' `ingest.max_message_bytes` unless configured: the most bytes an inbox message's
/// payload may have. A gateway holds commands to it before any node published its own.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
