//! Settings the nodes publish for the gateways (KV bucket `PLAYHEAD_SETTINGS`), so each is
//! configured in one place: the heartbeat interval (`playout.heartbeat_interval_secs` of the
//! node), which a fail-open heartbeat answer asks the client to wait, and the size limit of an
//! inbox message (`ingest.max_message_bytes`), which the gateway holds every command to before
//! encoding it. Until a node published them, the nodes' defaults apply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use playhead_client::settings::{DEFAULT_HEARTBEAT_INTERVAL_SECS, DEFAULT_MAX_MESSAGE_BYTES};
use playhead_proto::subjects::{HEARTBEAT_INTERVAL_KEY, MAX_MESSAGE_BYTES_KEY, SETTINGS_BUCKET};
use tokio_util::sync::CancellationToken;

use crate::follow::follow_bucket;

#[derive(Debug)]
pub struct Settings {
    heartbeat_interval_ms: AtomicU64,
    max_message_bytes: AtomicU64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: AtomicU64::new(DEFAULT_HEARTBEAT_INTERVAL_SECS * 1000),
            max_message_bytes: AtomicU64::new(DEFAULT_MAX_MESSAGE_BYTES as u64),
        }
    }
}

impl Settings {
    /// The nodes' heartbeat interval, as last published.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.load(Ordering::Relaxed))
    }

    /// The most bytes a command's payload may have, as last published.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed) as usize
    }

    /// Follows the bucket until `stop` (waiting for it while no node created it yet).
    pub async fn follow(self: Arc<Self>, jetstream: jetstream::Context, stop: CancellationToken) {
        follow_bucket(&jetstream, SETTINGS_BUCKET, ">", &stop, |entry| {
            self.apply(&entry.key, &entry.value)
        })
        .await
    }

    /// Takes a published setting; a value that is not a positive number is logged and ignored.
    pub fn apply(&self, key: &str, value: &[u8]) {
        let (slot, name) = match key {
            HEARTBEAT_INTERVAL_KEY => (&self.heartbeat_interval_ms, "heartbeat interval (ms)"),
            MAX_MESSAGE_BYTES_KEY => (&self.max_message_bytes, "max message bytes"),
            _ => return,
        };
        let number = std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .filter(|&number| number > 0);
        match number {
            Some(number) => {
                if slot.swap(number, Ordering::Relaxed) != number {
                    tracing::info!(setting = key, value = number, "following the nodes' {name}");
                }
            }
            None => tracing::warn!(
                setting = key,
                value = %String::from_utf8_lossy(value),
                "ignoring a published {name} that is not a positive number"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_what_the_nodes_publish_and_ignores_nonsense() {
        let settings = Settings::default();
        assert_eq!(settings.max_message_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        settings.apply(MAX_MESSAGE_BYTES_KEY, b"131072");
        settings.apply(HEARTBEAT_INTERVAL_KEY, b"7000");
        assert_eq!(settings.max_message_bytes(), 131_072);
        assert_eq!(settings.heartbeat_interval(), Duration::from_secs(7));
        settings.apply(MAX_MESSAGE_BYTES_KEY, b"0");
        settings.apply(MAX_MESSAGE_BYTES_KEY, b"lots");
        settings.apply("something_else", b"1");
        assert_eq!(settings.max_message_bytes(), 131_072);
    }
}
