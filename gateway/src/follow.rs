//! Following a KV bucket: every entry (history first, then each change) handed to a callback,
//! watched again after each interruption — a broker outage, or a bucket no node has created
//! yet — backing off from 100 ms to 5 s (with jitter, [`retry::backoff`]). The now-playing
//! cache and the settings use it.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use playhead_client::service::retry;
use tokio_util::sync::CancellationToken;

/// Follows the keys matching `filter` in `bucket` until `stop`.
pub async fn follow_bucket(
    jetstream: &jetstream::Context,
    bucket: &str,
    filter: &str,
    stop: &CancellationToken,
    mut on_entry: impl FnMut(kv::Entry),
) {
    let max = Duration::from_secs(5);
    // The callback is the loop's own mutable state, so the loop sleeps itself.
    let mut waits = retry::backoff(Duration::from_millis(100), max);
    loop {
        let error = match watch_once(jetstream, bucket, filter, stop, &mut on_entry).await {
            Ok(()) => return,
            Err(error) => error,
        };
        let wait = waits.next().unwrap_or(max);
        tracing::warn!(
            bucket,
            %error,
            retry_in_ms = wait.as_millis() as u64,
            "watch of a KV bucket interrupted"
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One watch, until `stop` (`Ok`) or an interruption (`Err`).
async fn watch_once(
    jetstream: &jetstream::Context,
    bucket: &str,
    filter: &str,
    stop: &CancellationToken,
    on_entry: &mut impl FnMut(kv::Entry),
) -> anyhow::Result<()> {
    let store = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        store = jetstream.get_key_value(bucket) => store?,
    };
    let mut entries = store.watch_with_history(filter).await?;
    tracing::info!(bucket, filter, "following a KV bucket");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            entry = entries.next() => match entry {
                Some(entry) => on_entry(entry?),
                None => anyhow::bail!("the watch ended"),
            },
        }
    }
}
