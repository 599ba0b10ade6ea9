//! Settings the nodes publish for the gateways (KV bucket `PLAYHEAD_SETTINGS`), so each is
//! configured in one place: the heartbeat interval (`playout.heartbeat_interval_secs` of the
//! node), which a fail-open heartbeat answer asks the client to wait. Until a node published
//! it, the nodes' default applies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use playhead_client::settings::DEFAULT_HEARTBEAT_INTERVAL_SECS;
use playhead_proto::subjects::{HEARTBEAT_INTERVAL_KEY, SETTINGS_BUCKET};
use tokio_util::sync::CancellationToken;

use crate::follow::follow_bucket;

#[derive(Debug)]
pub struct Settings {
    heartbeat_interval_ms: AtomicU64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: AtomicU64::new(DEFAULT_HEARTBEAT_INTERVAL_SECS * 1000),
        }
    }
}

impl Settings {
    /// The nodes' heartbeat interval, as last published.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.load(Ordering::Relaxed))
    }

    /// Follows the bucket until `stop` (waiting for it while no node created it yet).
    pub async fn follow(self: Arc<Self>, jetstream: jetstream::Context, stop: CancellationToken) {
        follow_bucket(
            &jetstream,
            SETTINGS_BUCKET,
            HEARTBEAT_INTERVAL_KEY,
            &stop,
            |entry| self.apply(&entry.value),
        )
        .await
    }

    fn apply(&self, value: &[u8]) {
        let interval_ms = std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .filter(|&ms| ms > 0);
        match interval_ms {
            Some(ms) => {
                if self.heartbeat_interval_ms.swap(ms, Ordering::Relaxed) != ms {
                    tracing::info!(
                        heartbeat_interval_ms = ms,
                        "following the nodes' heartbeat interval"
                    );
                }
            }
            None => tracing::warn!(
                value = %String::from_utf8_lossy(value),
                "ignoring a heartbeat interval that is not a positive number of ms"
            ),
        }
    }
}
