//! `ImportService`: imports by reference (a claim check). A batch goes into the object store
//! bucket `PLAYHEAD_IMPORTS` as `{source}/{import_id}`, and a small `ImportRequest` naming it
//! is published on `playhead.import.{source}` with a reply subject; the node's import actor
//! answers `ImportAccepted` there, then reads, validates and de-duplicates the batch on its own
//! time. Statuses are read through the node's `get_import` query.
//!
//! - `UploadImport` streams the chunks straight into the object store ([`upload`]: one
//!   chunk in memory at a time, `max_import_bytes` at most), then requests the import as
//!   `StartImport` does. An import id the node knows already is answered with its recorded
//!   state and nothing is stored. An upload refused or cut short has its partial object
//!   deleted — also when the client goes away mid-upload: the store and the request run in a
//!   task of their own, owned by the server and waited for at shutdown.
//! - `StartImport` requests the import of an object already stored (`Nats-Msg-Id`
//!   `import-{import_id}`, so the broker drops a repeated request). The node's answer is the
//!   answer, FAILED included; only the broker or a silent node make errors.
//! - `WatchImport` sends the status at once, then each change ([`watch`]: read every
//!   [`WATCH_POLL`]), and ends after a terminal state (COMPLETED or FAILED).
//!
//! Bounds: `max_concurrent_uploads` uploads at once, [`MAX_IMPORT_WATCHERS`] watches at once
//! (one more of either is answered RESOURCE_EXHAUSTED), an upload pausing longer than
//! [`UPLOAD_IDLE_TIMEOUT`] is abandoned.

pub mod upload;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;

use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectStore};
use futures::{Stream, StreamExt};
use playhead_client::command;
use playhead_client::query::import_query;
use playhead_proto::ids::ImportId;
use playhead_proto::subjects::{IMPORTS_BUCKET, Query, import_request};
use playhead_proto::v1::import_service_server::ImportService;
use playhead_proto::v1::{
    GetImportRequest, ImportAccepted, ImportChunk, ImportRequest, ImportState, ImportStatus,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

pub use self::upload::UPLOAD_IDLE_TIMEOUT;
use self::upload::{UploadBody, UploadError, UploadHeader};
use self::watch::WatcherGuard;
pub use self::watch::{WATCH_OUTAGE_LIMIT, WATCH_POLL, is_terminal};
use crate::auth::{Access, authorize};
use crate::error::{GatewayError, respond};
use crate::metrics::{GatewayMetrics, OutcomeLabel};
use crate::node_client::{CommandOutcome, NodeClient, command_headers};

/// Default largest batch an upload may store: 64 MiB.
pub const DEFAULT_MAX_IMPORT_BYTES: u64 = 64 * 1024 * 1024;
/// Default uploads streaming at once.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 16;
/// `WatchImport` streams open at once; each reads the status every [`WATCH_POLL`].
pub const MAX_IMPORT_WATCHERS: usize = 1_000;

/// The import settings of a gateway (`max_import_bytes`, `max_concurrent_uploads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Largest batch an upload may store.
    pub max_import_bytes: u64,
    /// Uploads streaming at once.
    pub max_concurrent_uploads: usize,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_import_bytes: DEFAULT_MAX_IMPORT_BYTES,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
        }
    }
}

pub struct ImportApi {
    node: Arc<NodeClient>,
    metrics: Arc<GatewayMetrics>,
    limits: ImportLimits,
    uploads: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    /// Owns the uploads' tasks; the server closes and waits for it at shutdown.
    tasks: TaskTracker,
    /// Ends open watch streams, so a graceful shutdown does not wait on them.
    shutdown: CancellationToken,
}

type ImportStatusStream = Pin<Box<dyn Stream<Item = Result<ImportStatus, Status>> + Send>>;

impl ImportApi {
    pub fn new(
        node: Arc<NodeClient>,
        metrics: Arc<GatewayMetrics>,
        limits: ImportLimits,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        ImportApi {
            node,
            metrics,
            limits,
            uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
            watches: Arc::new(Semaphore::new(MAX_IMPORT_WATCHERS)),
            tasks,
            shutdown,
        }
    }

    async fn upload(
        &self,
        mut chunks: Streaming<ImportChunk>,
    ) -> Result<ImportAccepted, GatewayError> {
        let counted = |error: GatewayError| {
            count(&self.metrics, outcome_of(&error));
            error
        };
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            counted(GatewayError::ResourceExhausted(format!(
                "the gateway is storing {} uploads already (max_concurrent_uploads); retry \
                 with backoff",
                self.limits.max_concurrent_uploads
            )))
        })?;
        let first = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, chunks.message()).await {
            Err(_) => Err(UploadError::Idle(UPLOAD_IDLE_TIMEOUT)),
            Ok(Err(status)) => Err(UploadError::Client(status)),
            Ok(Ok(None)) => Err(UploadError::NoChunk),
            Ok(Ok(Some(first))) => Ok(first),
        }
        .map_err(|error| counted(error.into()))?;
        let header = UploadHeader::from_first_chunk(&first).map_err(counted)?;
        if header.id_given
            && let Some(known) = known_import(&self.node, &header.import_id)
                .await
                .map_err(counted)?
        {
            // Re-running an id applies nothing twice: nothing is stored.
            count(&self.metrics, "known");
            return Ok(known);
        }
        let upload = Upload {
            node: self.node.clone(),
            metrics: self.metrics.clone(),
            header,
            max_bytes: self.limits.max_import_bytes,
            _permit: permit,
        };
        // In the RPC's span: the import request carries its trace on to the node.
        self.tasks
            .spawn(upload.run(first, chunks).in_current_span())
            .await
            .map_err(|error| GatewayError::Internal(format!("the upload task failed: {error}")))?
    }

    async fn get_import(&self, request: &GetImportRequest) -> Result<ImportStatus, GatewayError> {
        self.node
            .checked_query(Query::GetImport, request, import_query)
            .await
    }

    async fn watch(&self, request: GetImportRequest) -> Result<ImportStatusStream, GatewayError> {
        import_query(&request)?;
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            GatewayError::ResourceExhausted(format!(
                "the gateway follows {MAX_IMPORT_WATCHERS} imports already; retry with backoff \
                 or poll GetImport"
            ))
        })?;
        let first = self.get_import(&request).await?;
        self.metrics.import_watchers.inc();
        let guard = WatcherGuard {
            metrics: self.metrics.clone(),
            _permit: permit,
        };
        let stream = watch::changes(self.node.clone(), request, first, guard)
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Box::pin(stream))
    }
}

/// One upload past its header: store the batch, then request its import.
struct Upload {
    node: Arc<NodeClient>,
    metrics: Arc<GatewayMetrics>,
    header: UploadHeader,
    max_bytes: u64,
    /// Held until the partial object, if any, is deleted.
    _permit: OwnedSemaphorePermit,
}

impl Upload {
    async fn run(
        self,
        first: ImportChunk,
        rest: Streaming<ImportChunk>,
    ) -> Result<ImportAccepted, GatewayError> {
        self.metrics.import_uploads_open.inc();
        let stored = self.store(first, rest).await;
        self.metrics.import_uploads_open.dec();
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                count(&self.metrics, outcome_of(&error));
                return Err(error);
            }
        };
        self.metrics.import_upload_bytes.inc_by(stored.size as u64);
        tracing::info!(
            source = %self.header.source,
            import = %self.header.import_id,
            object = %stored.name,
            bytes = stored.size,
            "import batch stored"
        );
        let request = ImportRequest {
            source: self.header.source.to_string(),
            import_id: self.header.import_id.to_string(),
            object_name: stored.name,
        };
        let accepted = start_import(&self.node, &request).await;
        count(
            &self.metrics,
            if accepted.is_ok() {
                "stored"
            } else {
                "request_error"
            },
        );
        accepted
    }

    /// Streams the chunks into the bucket; a body refused or cut short is deleted again.
    async fn store(
        &self,
        first: ImportChunk,
        rest: Streaming<ImportChunk>,
    ) -> Result<ObjectInfo, GatewayError> {
        let bucket = self
            .node
            .jetstream
            .get_object_store(IMPORTS_BUCKET)
            .await
            .map_err(|error| {
                GatewayError::Unavailable(format!(
                    "cannot open the object store bucket {IMPORTS_BUCKET} (playhead-node \
                     creates it at start): {error}"
                ))
            })?;
        let name = self.header.object_name();
        let mut reader =
            UploadBody::new(first, rest, self.max_bytes, UPLOAD_IDLE_TIMEOUT).into_reader();
        let put = bucket.put(self.header.object_metadata(), &mut reader).await;
        if let Some(failure) = reader.into_inner().into_failure() {
            delete_partial(&bucket, &name).await;
            return Err(failure.into());
        }
        match put {
            Ok(stored) => Ok(stored),
            Err(error) => {
                // Chunks published before the failure have no metadata: the store cannot name
                // them for a delete; the bucket's max_age expires them.
                tracing::warn!(object = %name, %error, "storing an import batch failed");
                Err(GatewayError::Unavailable(format!(
                    "cannot store object {name}: {error}"
                )))
            }
        }
    }
}

/// Deletes what a failed upload stored (its metadata and chunks); logged, not returned: the
/// upload's own failure is the answer.
async fn delete_partial(bucket: &ObjectStore, name: &str) {
    match bucket.delete(name).await {
        Ok(()) => tracing::debug!(object = %name, "partial import batch deleted"),
        Err(error) if error.kind() == object_store::DeleteErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(object = %name, %error, "cannot delete a partial import batch")
        }
    }
}

/// The recorded state of an import the node knows, as an `ImportAccepted`; `None` when the
/// node answers NOT_FOUND.
async fn known_import(
    node: &NodeClient,
    import_id: &ImportId,
) -> Result<Option<ImportAccepted>, GatewayError> {
    let request = GetImportRequest {
        import_id: import_id.to_string(),
    };
    match node.query::<ImportStatus>(Query::GetImport, &request).await {
        Ok(status) => Ok(Some(accepted_from_status(status))),
        Err(GatewayError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

fn accepted_from_status(status: ImportStatus) -> ImportAccepted {
    ImportAccepted {
        import_id: status.import_id,
        state: status.state,
        object_name: status.object_name,
        failure: status.failure,
    }
}

/// Publishes the request on `playhead.import.{source}` with a reply subject and returns the
/// node's answer as it is (a FAILED import included).
async fn start_import(
    node: &NodeClient,
    request: &ImportRequest,
) -> Result<ImportAccepted, GatewayError> {
    let checked = command::import_request(request)?;
    let payload = node.encode_command(request)?;
    // The broker drops a repeated request for the same import.
    let headers = command_headers(Some(&format!("import-{}", checked.import_id)))?;
    let outcome = node
        .command::<ImportAccepted>(
            import_request(&checked.source),
            headers,
            payload,
            node.request_timeout,
        )
        .await?;
    match outcome {
        CommandOutcome::Decided(accepted) => Ok(accepted),
        // The first copy was answered already: say where that import is now (if the node has
        // not recorded it yet, it is accepted and waiting in the inbox).
        CommandOutcome::Duplicate => Ok(known_import(node, &checked.import_id)
            .await?
            .unwrap_or_else(|| ImportAccepted {
                import_id: checked.import_id.to_string(),
                state: ImportState::Accepted as i32,
                object_name: checked.object_name,
                failure: String::new(),
            })),
    }
}

fn count(metrics: &GatewayMetrics, outcome: &'static str) {
    metrics
        .import_uploads
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

/// The `import_uploads` outcome of an upload that failed.
fn outcome_of(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::Upload(UploadError::TooLarge { .. }) => "too_large",
        GatewayError::Upload(UploadError::Idle(_)) => "idle",
        GatewayError::Upload(UploadError::Client(_)) => "client_error",
        GatewayError::Upload(UploadError::NoChunk | UploadError::Conflicting { .. })
        | GatewayError::InvalidId(_)
        | GatewayError::InvalidArgument(_) => "invalid",
        GatewayError::ResourceExhausted(_) => "refused",
        _ => "store_error",
    }
}

#[tonic::async_trait]
impl ImportService for ImportApi {
    async fn upload_import(
        &self,
        request: Request<Streaming<ImportChunk>>,
    ) -> Result<Response<ImportAccepted>, Status> {
        authorize(&request, Access::RunImports)?;
        respond(self.upload(request.into_inner()).await)
    }

    async fn start_import(
        &self,
        request: Request<ImportRequest>,
    ) -> Result<Response<ImportAccepted>, Status> {
        authorize(&request, Access::RunImports)?;
        respond(start_import(&self.node, request.get_ref()).await)
    }

    async fn get_import(
        &self,
        request: Request<GetImportRequest>,
    ) -> Result<Response<ImportStatus>, Status> {
        authorize(&request, Access::ReadImports)?;
        respond(self.get_import(request.get_ref()).await)
    }

    async fn watch_import(
        &self,
        request: Request<GetImportRequest>,
    ) -> Result<Response<ImportStatusStream>, Status> {
        authorize(&request, Access::ReadImports)?;
        respond(self.watch(request.into_inner()).await)
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
    fn a_known_import_answers_its_recorded_state() {
        let accepted = accepted_from_status(ImportStatus {
            object_name: "songkick/imp-1".into(),
            failure: "the object does not exist".into(),
            ..status(ImportState::Failed, 0)
        });
        assert_eq!(
            accepted,
            ImportAccepted {
                import_id: "imp-1".into(),
                state: ImportState::Failed as i32,
                object_name: "songkick/imp-1".into(),
                failure: "the object does not exist".into(),
            }
        );
    }

    #[test]
    fn upload_failures_are_counted_by_outcome() {
        let cases = [
            (UploadError::TooLarge { limit: 1 }.into(), "too_large"),
            (UploadError::Idle(UPLOAD_IDLE_TIMEOUT).into(), "idle"),
            (
                UploadError::Client(Status::cancelled("gone")).into(),
                "client_error",
            ),
            (UploadError::NoChunk.into(), "invalid"),
            (GatewayError::ResourceExhausted("x".into()), "refused"),
            (GatewayError::Unavailable("x".into()), "store_error"),
        ];
        for (error, outcome) in cases {
            assert_eq!(outcome_of(&error), outcome, "{error}");
        }
    }
}
