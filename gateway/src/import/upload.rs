//! The body of an `UploadImport`, apart from NATS and gRPC plumbing: the first chunk's header
//! (which source, which import, how the batch is encoded), checked before anything is stored,
//! and [`UploadBody`], the stream of chunk bytes the object store's `put` reads through
//! [`ImportReader`] — one chunk in memory at a time, never the whole batch — bounded in size
//! (`max_import_bytes`) and in idle time ([`UPLOAD_IDLE_TIMEOUT`]).
//!
//! A failing body ends as if it were complete and keeps its [`UploadError`] for the caller:
//! `put` then publishes the object's metadata and returns, and the caller deletes the object
//! through the store, which purges its chunks. Had the reader returned an I/O error instead,
//! `put` would return early, leaving the chunks it had published under an object id only it
//! knew, unreachable by any delete.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectMetadata;
use bytes::Bytes;
use futures::Stream;
use playhead_proto::ids::{ImportId, SourceId};
use playhead_proto::subjects::import_object_name;
use playhead_proto::v1::ImportChunk;
use tokio::time::{Instant, Sleep};
use tokio_util::io::StreamReader;

use crate::error::GatewayError;

/// Longest `content_type` a first chunk may give.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;
/// Longest `file_name` a first chunk may give.
pub const MAX_FILE_NAME_BYTES: usize = 1024;
/// How long an upload may go without a chunk before it is abandoned (and its partial object
/// deleted): a stalled client must not hold an upload slot for ever.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Object metadata keys the node reads the batch's encoding from.
pub const CONTENT_TYPE_KEY: &str = "content-type";
pub const FILE_NAME_KEY: &str = "file-name";

/// Why an upload's body is refused or cut short.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload has no chunk: its first chunk must name the source")]
    NoChunk,
    #[error(
        "the upload is larger than this gateway's limit of {limit} bytes ({mib:.1} MiB, \
         max_import_bytes): split the batch, or raise the limit (--max-import-bytes, \
         PLAYHEAD_GATEWAY_MAX_IMPORT_BYTES or max_import_bytes in the gateway's config file)",
        mib = *limit as f64 / (1024.0 * 1024.0)
    )]
    TooLarge { limit: u64 },
    #[error(
        "chunk {index} sets {field} to {found:?} but the first chunk to {first:?}: only the \
         first chunk names it (later ones leave it empty or repeat it)"
    )]
    Conflicting {
        index: u64,
        field: &'static str,
        found: String,
        first: String,
    },
    #[error("no chunk came for {}s; the upload was abandoned", .0.as_secs())]
    Idle(Duration),
    /// The client's stream failed (cancelled, reset, a chunk that does not decode).
    #[error("the upload stream failed: {}", .0.message())]
    Client(tonic::Status),
}

/// What the first chunk says about the batch, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadHeader {
    pub source: SourceId,
    pub import_id: ImportId,
    /// Whether the client named the import (else the gateway picked a fresh id, which no node
    /// can know yet).
    pub id_given: bool,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
}

impl UploadHeader {
    /// Checks the first chunk: `source` is an id, `import_id` one too or empty (a fresh one is
    /// picked), `content_type` and `file_name` are bounded printable text.
    pub fn from_first_chunk(chunk: &ImportChunk) -> Result<UploadHeader, GatewayError> {
        let source = SourceId::parse(chunk.source.as_str())?;
        let (import_id, id_given) = match chunk.import_id.as_str() {
            "" => (fresh_import_id(), false),
            given => (ImportId::parse(given)?, true),
        };
        Ok(UploadHeader {
            source,
            import_id,
            id_given,
            content_type: optional_text(
                "content_type",
                &chunk.content_type,
                MAX_CONTENT_TYPE_BYTES,
            )?,
            file_name: optional_text("file_name", &chunk.file_name, MAX_FILE_NAME_BYTES)?,
        })
    }

    /// The object the batch is stored as: `{source}/{import_id}`.
    pub fn object_name(&self) -> String {
        import_object_name(&self.source, &self.import_id)
    }

    /// The object's name and the metadata the node reads (`content-type`, `file-name`).
    pub fn object_metadata(&self) -> ObjectMetadata {
        let mut metadata = HashMap::new();
        if let Some(content_type) = &self.content_type {
            metadata.insert(CONTENT_TYPE_KEY.to_owned(), content_type.clone());
        }
        if let Some(file_name) = &self.file_name {
            metadata.insert(FILE_NAME_KEY.to_owned(), file_name.clone());
        }
        ObjectMetadata {
            name: self.object_name(),
            metadata,
            ..ObjectMetadata::default()
        }
    }
}

/// Empty is none; otherwise at most `limit` bytes without control characters (the values end
/// up in object metadata, logs and the console).
fn optional_text(
    field: &'static str,
    value: &str,
    limit: usize,
) -> Result<Option<String>, GatewayError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > limit {
        return Err(GatewayError::InvalidArgument(format!(
            "{field} is {} bytes; at most {limit}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(GatewayError::InvalidArgument(format!(
            "{field} {value:?} contains a control character"
        )));
    }
    Ok(Some(value.to_owned()))
}

/// A fresh import id: `imp-` and 128 random bits from the thread's CSPRNG, in hex.
pub fn fresh_import_id() -> ImportId {
    ImportId::parse(format!("imp-{:032x}", rand::random::<u128>()))
        .expect("imp- and hex digits make an id")
}

/// The first chunk's fields that later chunks may only repeat.
#[derive(Debug, Clone)]
struct FirstFields {
    source: String,
    import_id: String,
    content_type: String,
    file_name: String,
}

impl FirstFields {
    fn check(&self, index: u64, chunk: &ImportChunk) -> Result<(), UploadError> {
        let fields = [
            ("source", &self.source, &chunk.source),
            ("import_id", &self.import_id, &chunk.import_id),
            ("content_type", &self.content_type, &chunk.content_type),
            ("file_name", &self.file_name, &chunk.file_name),
        ];
        for (field, first, found) in fields {
            if !found.is_empty() && found != first {
                return Err(UploadError::Conflicting {
                    index,
                    field,
                    found: found.chars().take(128).collect(),
                    first: first.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The bytes of an upload's chunks, in order: the first chunk's data, then each later chunk's.
/// Ends early (as if complete) at the first failure, which [`UploadBody::failure`] keeps.
pub struct UploadBody<S> {
    first: Option<Bytes>,
    first_fields: FirstFields,
    rest: S,
    limit: u64,
    received: u64,
    /// Chunks seen so far, the first included.
    chunks: u64,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Whether the client has been waited for since the last chunk (the deadline is armed).
    waiting: bool,
    failure: Option<UploadError>,
    finished: bool,
}

/// What the object store's `put` reads an upload through.
pub type ImportReader<S> = StreamReader<UploadBody<S>, Bytes>;

impl<S> UploadBody<S>
where
    S: Stream<Item = Result<ImportChunk, tonic::Status>> + Unpin,
{
    /// The body of an upload whose first chunk was `first` (its header already read) and
    /// whose later chunks come from `rest`; at most `limit` bytes, and no pause longer than
    /// `idle` between chunks.
    pub fn new(first: ImportChunk, rest: S, limit: u64, idle: Duration) -> Self {
        let first_fields = FirstFields {
            source: first.source,
            import_id: first.import_id,
            content_type: first.content_type,
            file_name: first.file_name,
        };
        let mut body = UploadBody {
            first: None,
            first_fields,
            rest,
            limit,
            received: 0,
            chunks: 1,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            failure: None,
            finished: false,
        };
        body.first = body.take(first.data);
        body
    }

    /// An [`ImportReader`] over this body.
    pub fn into_reader(self) -> ImportReader<S> {
        StreamReader::new(self)
    }

    /// Bytes handed on so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Why the body ended early, if it did.
    pub fn failure(&self) -> Option<&UploadError> {
        self.failure.as_ref()
    }

    pub fn into_failure(self) -> Option<UploadError> {
        self.failure
    }

    /// Counts `data` against the limit: its bytes to hand on, or `None` (failed, or empty).
    fn take(&mut self, data: Vec<u8>) -> Option<Bytes> {
        let size = data.len() as u64;
        if self.received.saturating_add(size) > self.limit {
            self.fail(UploadError::TooLarge { limit: self.limit });
            return None;
        }
        self.received += size;
        (!data.is_empty()).then(|| Bytes::from(data))
    }

    fn fail(&mut self, failure: UploadError) {
        debug_assert!(self.failure.is_none(), "a body fails once");
        self.failure = Some(failure);
        self.finished = true;
    }
}

impl<S> Stream for UploadBody<S>
where
    S: Stream<Item = Result<ImportChunk, tonic::Status>> + Unpin,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let body = &mut *self;
        if let Some(first) = body.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        loop {
            if body.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut body.rest).poll_next(context) {
                Poll::Ready(None) => {
                    body.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(status))) => {
                    body.waiting = false;
                    body.fail(UploadError::Client(status));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    body.chunks += 1;
                    body.waiting = false;
                    if let Err(conflict) = body.first_fields.check(body.chunks, &chunk) {
                        body.fail(conflict);
                        continue;
                    }
                    if let Some(data) = body.take(chunk.data) {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // An empty chunk (or the limit, which has finished the body): go on.
                }
                Poll::Pending => {
                    // The idle clock runs while the client is waited for, not while the store
                    // publishes what it sent.
                    if !body.waiting {
                        body.waiting = true;
                        let deadline = Instant::now() + body.idle;
                        body.deadline.as_mut().reset(deadline);
                    }
                    if body.deadline.as_mut().poll(context).is_ready() {
                        body.fail(UploadError::Idle(body.idle));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn chunk(data: &[u8]) -> ImportChunk {
        ImportChunk {
            data: data.to_vec(),
            ..ImportChunk::default()
        }
    }

    fn first(data: &[u8]) -> ImportChunk {
        ImportChunk {
            source: "songkick".into(),
            import_id: "imp-1".into(),
            ..chunk(data)
        }
    }

    type Chunks = futures::stream::Iter<std::vec::IntoIter<Result<ImportChunk, tonic::Status>>>;

    fn body(
        first: ImportChunk,
        rest: Vec<Result<ImportChunk, tonic::Status>>,
        limit: u64,
    ) -> UploadBody<Chunks> {
        UploadBody::new(
            first,
            futures::stream::iter(rest),
            limit,
            UPLOAD_IDLE_TIMEOUT,
        )
    }

    /// Everything the store's `put` would read, and why the body ended.
    async fn read_all(body: UploadBody<Chunks>) -> (Vec<u8>, Option<UploadError>) {
        let mut reader = body.into_reader();
        let mut read = Vec::new();
        reader.read_to_end(&mut read).await.unwrap();
        (read, reader.into_inner().into_failure())
    }

    #[tokio::test]
    async fn the_reader_joins_chunks_across_their_boundaries() {
        let rest = vec![Ok(chunk(b"lo wo")), Ok(chunk(b"")), Ok(chunk(b"rld\n"))];
        let mut reader = body(first(b"hel"), rest, 1024).into_reader();
        // Reads smaller than a chunk, and reads spanning two.
        let mut small = [0u8; 2];
        reader.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"he");
        let mut across = [0u8; 5];
        reader.read_exact(&mut across).await.unwrap();
        assert_eq!(&across, b"llo w");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"orld\n");
        assert_eq!(reader.get_ref().received(), 12);
        assert!(reader.get_ref().failure().is_none());
    }

    #[tokio::test]
    async fn exactly_the_limit_passes_and_one_byte_more_is_refused() {
        let (read, failure) = read_all(body(first(b"12345"), vec![Ok(chunk(b"678"))], 8)).await;
        assert_eq!(read, b"12345678");
        assert!(failure.is_none(), "{failure:?}");
        let (read, failure) = read_all(body(first(b"12345"), vec![Ok(chunk(b"6789"))], 8)).await;
        // The chunk that would cross the limit is not handed on.
        assert_eq!(read, b"12345");
        assert!(
            matches!(failure, Some(UploadError::TooLarge { limit: 8 })),
            "{failure:?}"
        );
        // The first chunk alone over the limit.
        let (read, failure) = read_all(body(first(b"123456789"), vec![], 8)).await;
        assert!(read.is_empty());
        assert!(matches!(failure, Some(UploadError::TooLarge { limit: 8 })));
        // The message says the limit and how to raise it.
        let message = UploadError::TooLarge { limit: 64 << 20 }.to_string();
        assert!(message.contains("67108864 bytes (64.0 MiB"), "{message}");
        assert!(message.contains("--max-import-bytes"), "{message}");
    }

    #[tokio::test]
    async fn a_client_error_or_a_conflicting_chunk_ends_the_body_with_its_failure() {
        let rest = vec![
            Ok(chunk(b"b")),
            Err(tonic::Status::cancelled("gone")),
            Ok(chunk(b"never read")),
        ];
        let (read, failure) = read_all(body(first(b"a"), rest, 1024)).await;
        assert_eq!(read, b"ab");
        assert!(
            matches!(failure, Some(UploadError::Client(status)) if status.code() == tonic::Code::Cancelled)
        );
        // Later chunks may repeat the first chunk's fields, not change them.
        let repeat = ImportChunk {
            source: "songkick".into(),
            ..chunk(b"b")
        };
        let other = ImportChunk {
            import_id: "imp-2".into(),
            ..chunk(b"c")
        };
        let (read, failure) = read_all(body(first(b"a"), vec![Ok(repeat), Ok(other)], 1024)).await;
        assert_eq!(read, b"ab");
        assert!(
            matches!(
                failure,
                Some(UploadError::Conflicting {
                    index: 3,
                    field: "import_id",
                    ..
                })
            ),
            "{failure:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_upload_is_abandoned_after_the_idle_timeout() {
        let stalled =
            futures::stream::iter(vec![Ok(chunk(b"b"))]).chain(futures::stream::pending());
        let idle = Duration::from_secs(30);
        let mut reader = UploadBody::new(first(b"a"), Box::pin(stalled), 1024, idle).into_reader();
        let started = Instant::now();
        let mut read = Vec::new();
        reader.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"ab");
        assert!(matches!(
            reader.get_ref().failure(),
            Some(UploadError::Idle(_))
        ));
        assert!(started.elapsed() >= idle);
    }

    #[test]
    fn the_first_chunk_names_a_source_and_maybe_an_import() {
        let header = UploadHeader::from_first_chunk(&ImportChunk {
            content_type: "text/csv".into(),
            file_name: "shows.csv".into(),
            ..first(b"")
        })
        .unwrap();
        assert!(header.id_given);
        assert_eq!(header.object_name(), "songkick/imp-1");
        let metadata = header.object_metadata();
        assert_eq!(metadata.name, "songkick/imp-1");
        assert_eq!(metadata.metadata[CONTENT_TYPE_KEY], "text/csv");
        assert_eq!(metadata.metadata[FILE_NAME_KEY], "shows.csv");
        // No import id: a fresh one each time, which is an id.
        let unnamed = ImportChunk {
            source: "songkick".into(),
            ..chunk(b"")
        };
        let one = UploadHeader::from_first_chunk(&unnamed).unwrap();
        let two = UploadHeader::from_first_chunk(&unnamed).unwrap();
        assert!(!one.id_given);
        assert_ne!(one.import_id, two.import_id);
        assert!(one.import_id.as_str().starts_with("imp-"));
        assert_eq!(one.import_id.as_str().len(), 4 + 32);
        assert!(one.object_metadata().metadata.is_empty());
        // Refused: no or a bad source, a bad id, oversize or control-character text.
        let refused = |chunk: ImportChunk| UploadHeader::from_first_chunk(&chunk).is_err();
        assert!(refused(chunk(b"data")));
        assert!(refused(ImportChunk {
            source: "a.b".into(),
            ..chunk(b"")
        }));
        assert!(refused(ImportChunk {
            import_id: "imp 1".into(),
            ..first(b"")
        }));
        assert!(refused(ImportChunk {
            content_type: "t".repeat(MAX_CONTENT_TYPE_BYTES + 1),
            ..first(b"")
        }));
        assert!(!refused(ImportChunk {
            file_name: "f".repeat(MAX_FILE_NAME_BYTES),
            ..first(b"")
        }));
        assert!(refused(ImportChunk {
            file_name: "a\nb".into(),
            ..first(b"")
        }));
    }
}
