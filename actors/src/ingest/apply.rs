//! Applying a screened batch through the partition's shard: retried as it is after a transient
//! failure; after a permanent one, applied message by message so the one that keeps failing is
//! known and quarantined (see the module doc of [`super`]).

use std::time::Duration;

use async_nats::jetstream;
use playhead_client::service::retry::{self, ExponentialBackoff, Retryable};
use ractor::rpc::CallResult;
use tokio_util::sync::CancellationToken;

use super::{Accepted, GroupIntake, ShardSlot};
use crate::metrics::InboxLabel;
use crate::runtime::shard::ShardMessage;
use crate::runtime::{
    EntityError, EntityKind, Envelope, Outcome, Processed, QuarantineReason, SliceError,
};

const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The waits between attempts (jittered, from 100 ms up to 5 s). The apply loops take the
/// waits and sleep themselves.
fn backoff() -> ExponentialBackoff {
    retry::backoff(RETRY_BACKOFF_START, RETRY_BACKOFF_MAX)
}

impl<K: EntityKind> GroupIntake<K> {
    /// Applies the accepted envelopes of `messages`. A transient failure retries the batch as
    /// it is (screened again from `messages`); a permanent one applies the messages one by one
    /// and quarantines those that keep failing. `None` when stopped first.
    pub(super) async fn apply(
        &self,
        messages: &[jetstream::Message],
        accepted: Vec<Accepted<K>>,
        shard: &ShardSlot<K>,
        stop: &CancellationToken,
    ) -> Option<Vec<Processed>> {
        if accepted.is_empty() {
            return Some(Vec::new());
        }
        let envelopes = |accepted: Vec<Accepted<K>>| -> Vec<(K::Id, Envelope<K::Command>)> {
            accepted
                .into_iter()
                .map(|(_, id, envelope)| (id, envelope))
                .collect()
        };
        let again = || envelopes(self.screen_batch(messages).0);
        let mut batch = Some(envelopes(accepted));
        let mut waits = backoff();
        loop {
            let attempt = batch.take().unwrap_or_else(again);
            match self.call_shard(shard, attempt).await {
                Ok(results) => return Some(results),
                Err(failure) if failure.error.is_transient() => {
                    let wait = self.note_retry("apply", &failure.error, &mut waits);
                    if !self.pause(stop, wait).await {
                        return None;
                    }
                }
                Err(failure) => {
                    tracing::warn!(
                        inbox = self.group.inbox.label(),
                        group = %self.group,
                        error = %failure.error,
                        at_seq = failure.at_seq,
                        "a batch failed for a reason that may not go away; applying its messages one by one"
                    );
                    break;
                }
            }
        }
        let batch = again();
        let mut results = Vec::with_capacity(batch.len());
        for item in batch {
            results.push(self.apply_one(item, shard, stop).await?);
        }
        Some(results)
    }

    /// Applies one message, quarantining it once it failed `max_attempts` times for a reason
    /// that does not go away (the failure of the whole batch counts as the first).
    async fn apply_one(
        &self,
        item: (K::Id, Envelope<K::Command>),
        shard: &ShardSlot<K>,
        stop: &CancellationToken,
    ) -> Option<Processed> {
        let seq = item.1.seq;
        let mut failures = 1;
        let mut waits = backoff();
        loop {
            let wait = match self.call_shard(shard, vec![item.clone()]).await {
                Ok(mut results) => return results.pop(),
                Err(failure) if failure.error.is_transient() => {
                    self.note_retry("apply", &failure.error, &mut waits)
                }
                Err(failure) => {
                    failures += 1;
                    if failures >= self.config.max_attempts {
                        let reason = match failure.error {
                            EntityError::Panicked { .. } => QuarantineReason::Panic,
                            _ => QuarantineReason::Poison,
                        };
                        tracing::error!(
                            inbox = self.group.inbox.label(),
                            group = %self.group,
                            seq,
                            failures,
                            error = %failure.error,
                            "quarantining a message that keeps failing"
                        );
                        return Some(Processed {
                            outcome: Outcome::Quarantined {
                                reason,
                                detail: format!("failed {failures} times; last: {}", failure.error),
                            },
                            answer: None,
                        });
                    }
                    self.note_retry("apply", &failure.error, &mut waits)
                }
            };
            if !self.pause(stop, wait).await {
                return None;
            }
        }
    }

    async fn call_shard(
        &self,
        shard: &ShardSlot<K>,
        batch: Vec<(K::Id, Envelope<K::Command>)>,
    ) -> Result<Vec<Processed>, SliceError> {
        let consumer_name = self.group.consumer_name();
        let actor = {
            let mut slot = shard.0.lock().await;
            match &*slot {
                Some(actor) => actor.clone(),
                None => {
                    let actor = self.spawn_shard(&consumer_name).await.map_err(|error| {
                        EntityError::ActorGone {
                            id: consumer_name.clone(),
                            detail: error.to_string(),
                        }
                    })?;
                    *slot = Some(actor.clone());
                    actor
                }
            }
        };
        match actor
            .call(|reply| ShardMessage::Process(batch, reply), None)
            .await
        {
            Ok(CallResult::Success(result)) => result,
            other => {
                // The shard died (a bug, or a panic while routing): start a fresh one; its
                // entities reload from storage.
                tracing::error!(consumer = %consumer_name, result = ?other.map(|_| ()), "the shard actor failed; restarting it");
                // Another batch in flight may have seen it fail first and started a new one.
                let mut slot = shard.0.lock().await;
                if slot
                    .as_ref()
                    .is_some_and(|current| current.get_id() == actor.get_id())
                {
                    actor.stop(None);
                    *slot = None;
                }
                Err(EntityError::ActorGone {
                    id: consumer_name,
                    detail: "the shard actor failed".into(),
                }
                .into())
            }
        }
    }

    /// Logs and counts a failed attempt; the wait before the next one.
    fn note_retry(
        &self,
        what: &str,
        error: &EntityError,
        waits: &mut ExponentialBackoff,
    ) -> Duration {
        let wait = waits.next().unwrap_or(RETRY_BACKOFF_MAX);
        self.log_retry(what, error, wait);
        wait
    }

    fn log_retry(&self, what: &str, error: &EntityError, wait: Duration) {
        tracing::warn!(
            inbox = self.group.inbox.label(),
            group = %self.group,
            %error,
            retry_in_ms = wait.as_millis() as u64,
            "{what} failed; retrying"
        );
        self.metrics
            .batch_retries
            .get_or_create(&InboxLabel {
                inbox: self.group.inbox.label(),
            })
            .inc();
    }

    /// Waits `wait`; false if `stop` came first.
    async fn pause(&self, stop: &CancellationToken, wait: Duration) -> bool {
        tokio::select! {
            _ = stop.cancelled() => {
                self.note_stopped();
                false
            }
            _ = tokio::time::sleep(wait) => true,
        }
    }

    fn note_stopped(&self) {
        tracing::warn!(
            inbox = self.group.inbox.label(),
            group = %self.group,
            "stopping with an unfinished batch; it is redelivered after restart"
        );
    }

    /// Runs `attempt` until it succeeds, backing off; None if `stop` came first. An attempt in
    /// flight is never cut short: once `stop` comes the wait ends, and the next failure is the
    /// last.
    pub(super) async fn retry<F, Fut, T>(
        &self,
        stop: &CancellationToken,
        what: &str,
        attempt: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, EntityError>>,
    {
        let waiting = stop.clone();
        let result = attempt
            .retry(retry::policy(RETRY_BACKOFF_START, RETRY_BACKOFF_MAX))
            .sleep(move |wait| {
                let stop = waiting.clone();
                async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            })
            .when(|_| !stop.is_cancelled())
            .notify(|error, wait| self.log_retry(what, error, wait))
            .await;
        if result.is_err() {
            // The policy has no last attempt: only `stop` ends it in failure.
            self.note_stopped();
        }
        result.ok()
    }
}
