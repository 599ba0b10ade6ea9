//! `WatchImport` after its first status: read the status every [`WATCH_POLL`], send what
//! changed, end after a terminal state; ride out a broker or node outage for
//! [`WATCH_OUTAGE_LIMIT`], then end with its error.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use playhead_proto::subjects::Query;
use playhead_proto::v1::{GetImportRequest, ImportState, ImportStatus};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Status;

use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use crate::node_client::NodeClient;

/// How often a watch reads the status.
pub const WATCH_POLL: Duration = Duration::from_millis(250);
/// How long a watch rides out a broker or node outage before it ends with the error.
pub const WATCH_OUTAGE_LIMIT: Duration = Duration::from_secs(30);

/// `first`, then each change of the import's status, until a terminal one; `guard` is held
/// while the stream lives.
pub(super) fn changes(
    node: Arc<NodeClient>,
    request: GetImportRequest,
    first: ImportStatus,
    guard: WatcherGuard,
) -> impl Stream<Item = Result<ImportStatus, Status>> + Send {
    let mut tick = tokio::time::interval_at(Instant::now() + WATCH_POLL, WATCH_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let polling = Polling {
        node,
        request,
        changes: StatusChanges::new(&first),
        tick,
        failing_since: None,
        ended: false,
        _guard: guard,
    };
    futures::stream::once(futures::future::ready(Ok(first)))
        .chain(futures::stream::unfold(polling, Polling::next))
}

/// Whether no further change of an import will come.
pub fn is_terminal(status: &ImportStatus) -> bool {
    matches!(
        ImportState::try_from(status.state),
        Ok(ImportState::Completed | ImportState::Failed)
    )
}

/// What a watch sends of the statuses it reads: each one that differs from the last sent,
/// and nothing after a terminal one.
#[derive(Debug, Clone)]
pub struct StatusChanges {
    last: ImportStatus,
    finished: bool,
}

impl StatusChanges {
    /// After `first` was sent.
    pub fn new(first: &ImportStatus) -> Self {
        StatusChanges {
            last: first.clone(),
            finished: is_terminal(first),
        }
    }

    /// The status to send, if it is news.
    pub fn observe(&mut self, status: ImportStatus) -> Option<ImportStatus> {
        if self.finished || status == self.last {
            return None;
        }
        self.finished = is_terminal(&status);
        self.last = status.clone();
        Some(status)
    }

    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// A watch's reads after the first status.
struct Polling {
    node: Arc<NodeClient>,
    request: GetImportRequest,
    changes: StatusChanges,
    tick: tokio::time::Interval,
    /// Since when reads have failed for want of the broker or a node.
    failing_since: Option<Instant>,
    /// An error was sent: the stream ends.
    ended: bool,
    _guard: WatcherGuard,
}

impl Polling {
    async fn next(mut self) -> Option<(Result<ImportStatus, Status>, Polling)> {
        if self.ended || self.changes.finished() {
            return None;
        }
        loop {
            self.tick.tick().await;
            let read = self
                .node
                .query::<ImportStatus>(Query::GetImport, &self.request)
                .await;
            match read {
                Ok(status) => {
                    self.failing_since = None;
                    if let Some(changed) = self.changes.observe(status) {
                        return Some((Ok(changed), self));
                    }
                }
                Err(error @ (GatewayError::Unavailable(_) | GatewayError::Timeout(_))) => {
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= WATCH_OUTAGE_LIMIT {
                        self.ended = true;
                        return Some((Err(error.into()), self));
                    }
                }
                Err(error) => {
                    self.ended = true;
                    return Some((Err(error.into()), self));
                }
            }
        }
    }
}

/// Counts an open watch and holds its slot; both released when the client goes away.
pub(super) struct WatcherGuard {
    pub(super) metrics: Arc<GatewayMetrics>,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.metrics.import_watchers.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ImportState, records_read: u64) -> ImportStatus {
        ImportStatus {
            import_id: "imp-1".into(),
            state: state as i32,
            records_read,
            ..ImportStatus::default()
        }
    }

    #[test]
    fn a_watch_sends_changes_only_and_nothing_after_a_terminal_state() {
        let mut changes = StatusChanges::new(&status(ImportState::Accepted, 0));
        assert!(!changes.finished());
        assert_eq!(changes.observe(status(ImportState::Accepted, 0)), None);
        let running = status(ImportState::Running, 10);
        assert_eq!(changes.observe(running.clone()), Some(running.clone()));
        assert_eq!(changes.observe(running), None);
        let completed = status(ImportState::Completed, 20);
        assert_eq!(changes.observe(completed.clone()), Some(completed));
        assert!(changes.finished());
        assert_eq!(changes.observe(status(ImportState::Running, 30)), None);
    }

    #[test]
    fn a_watch_of_a_finished_import_sends_its_first_status_only() {
        for state in [ImportState::Completed, ImportState::Failed] {
            let mut changes = StatusChanges::new(&status(state, 5));
            assert!(changes.finished());
            assert_eq!(changes.observe(status(ImportState::Running, 6)), None);
        }
        assert!(!is_terminal(&status(ImportState::Unspecified, 0)));
    }
}
