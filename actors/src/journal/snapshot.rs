//! Snapshots of folded sled state in the JetStream object store, so a node whose sled is lost
//! restores them and replays only the journal after [`SnapshotMeta::journal_seq`].
//!
//! One object per (kind, group), [`snapshot_object`] in [`SNAPSHOT_BUCKET`]. Its bytes are a
//! [`dump`] of the selected trees; its [`SnapshotMeta`] travels in the
//! object's metadata map, which lives in the same object-info record as the chunk list and
//! digest, so meta and bytes are always replaced together. Dumps and downloads go through a
//! scratch file (removed on every path, errors included): neither is ever whole in memory.
//!
//! What a replacement guarantees (async-nats 0.51 `ObjectStore::put`, read in its source): the
//! chunks go to a fresh subject `$O.{bucket}.C.{nuid}`, each awaiting its JetStream ack; only
//! then is the object info (nuid, size, SHA-256 digest, metadata) published on
//! `$O.{bucket}.M.{name}` with a rollup, and only after that are the previous version's chunks
//! purged. Hence:
//! - interrupted before the info is acked, the previous snapshot stays current and readable;
//!   the chunks already sent stay in the stream, referenced by nothing, until purged;
//! - interrupted between the info and the purge, the new snapshot is current and the previous
//!   version's chunks are the orphans;
//! - a download checks the SHA-256 digest at the last chunk, so a torn copy is refused.
//!
//! Takes of one (kind, group) must not run concurrently (one writer per group): `put` reads the
//! previous version before uploading, and two racing puts can orphan chunks. A download racing
//! a replacement can have its chunks purged under it; the read then waits for chunks that never
//! come (not exercised by the tests), [`DOWNLOAD_STALL_TIMEOUT`] cuts it, and a retry reads the
//! new version.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::CreateObjectStoreError;
use async_nats::jetstream::object_store::{
    self, GetError, GetErrorKind, InfoError, InfoErrorKind, Object, ObjectMetadata, ObjectStore,
    PutError,
};
use async_nats::jetstream::{self, stream::StorageType};
use playhead_proto::ids::IdError;
use playhead_proto::subjects::{SNAPSHOT_BUCKET, snapshot_object};
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::storage::dump::{self, DumpError, DumpReport, NamedTrees};

mod meta;

pub use self::meta::SnapshotMeta;

/// Object-store chunk size: bigger than the 128 KiB default to halve the acknowledged round
/// trips per upload, and well under the broker's default 1 MiB max payload.
pub const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;
/// A download that receives nothing for this long is abandoned (see the module doc).
pub const DOWNLOAD_STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot kind {kind:?} cannot name an object: {source}")]
    InvalidKind { kind: String, source: IdError },
    #[error(
        "cannot create or open the object-store bucket {SNAPSHOT_BUCKET}: {source}; check that \
         JetStream is enabled and has file storage left"
    )]
    Bucket { source: CreateObjectStoreError },
    #[error(
        "scratch file in {}: {source}; point scratch_dir at a writable directory with room for \
         one dump",
        dir.display()
    )]
    Scratch { dir: PathBuf, source: io::Error },
    #[error("dumping sled for {object} failed: {source}; check the node's sled store and retry")]
    Dump { object: String, source: DumpError },
    #[error(
        "uploading {object} failed: {source}; the previous snapshot, if any, is still current: \
         retry"
    )]
    Upload { object: String, source: PutError },
    #[error("looking up {object} failed: {source}; check the JetStream connection and retry")]
    Lookup { object: String, source: InfoError },
    #[error(
        "opening {object} for download failed: {source}; check the JetStream connection and retry"
    )]
    Fetch { object: String, source: GetError },
    #[error(
        "downloading {object} failed after {received} bytes: {source}; retry (a snapshot \
         replaced during the download fails this way too)"
    )]
    Download {
        object: String,
        received: u64,
        source: io::Error,
    },
    #[error("{object} has unreadable metadata {key} = {value:?}; take a new snapshot")]
    BadMeta {
        object: String,
        key: &'static str,
        value: Option<String>,
    },
    #[error(
        "{object} is in dump format {format}, this build reads {}; restore it with the release \
         that wrote it, or rebuild from the journal",
        dump::FORMAT_VERSION
    )]
    UnsupportedFormat { object: String, format: u32 },
    #[error(
        "restoring {object} failed: {source}; discard the partially restored db, then retry or \
         rebuild from the journal"
    )]
    Restore { object: String, source: DumpError },
    #[error(
        "{object} restored {restored:?} but its metadata announces {announced_entries} entries \
         in {announced_bytes} bytes; discard the restored db and take a new snapshot"
    )]
    CountMismatch {
        object: String,
        restored: DumpReport,
        announced_entries: u64,
        announced_bytes: u64,
    },
    #[error("the blocking {task} of {object} did not finish: {source}")]
    Task {
        object: String,
        task: &'static str,
        source: tokio::task::JoinError,
    },
}

/// Opens the snapshot bucket, creating it (file storage, `replicas` copies) when missing. An
/// existing bucket is used as it is.
pub async fn ensure_bucket(
    jetstream: &jetstream::Context,
    replicas: usize,
) -> Result<ObjectStore, SnapshotError> {
    if let Ok(store) = jetstream.get_object_store(SNAPSHOT_BUCKET).await {
        return Ok(store);
    }
    let created = jetstream
        .create_object_store(object_store::Config {
            bucket: SNAPSHOT_BUCKET.to_owned(),
            description: Some("playhead: current snapshot of each group's folded state".into()),
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another node may have created it between our get and create.
        Err(source) => jetstream
            .get_object_store(SNAPSHOT_BUCKET)
            .await
            .map_err(|_| SnapshotError::Bucket { source }),
    }
}

/// Dumps the trees `select` accepts and makes them the current snapshot of (kind, group),
/// replacing the previous one only once the upload is complete. Returns `meta` with the counts
/// and format filled.
pub async fn take(
    db: &(impl NamedTrees + Clone + Send + 'static),
    select: impl Fn(&[u8]) -> bool + Send + 'static,
    store: &ObjectStore,
    meta: SnapshotMeta,
    scratch_dir: &Path,
) -> Result<SnapshotMeta, SnapshotError> {
    let object = object_name(&meta.kind, meta.group)?;
    let started = Instant::now();
    let scratch = scratch_file(scratch_dir)?;
    let dump_target = scratch.reopen().map_err(scratch_error(scratch_dir))?;
    let db = db.clone();
    let report = tokio::task::spawn_blocking(move || dump::dump_trees(&db, select, dump_target))
        .await
        .map_err(task_error(&object, "dump"))?
        .map_err(|source| SnapshotError::Dump {
            object: object.clone(),
            source,
        })?;
    let dump_seconds = started.elapsed().as_secs_f64();

    let meta = SnapshotMeta {
        entries: report.entries,
        bytes: report.bytes,
        format: dump::FORMAT_VERSION,
        ..meta
    };
    let upload_started = Instant::now();
    let mut upload_source =
        tokio::fs::File::from_std(scratch.reopen().map_err(scratch_error(scratch_dir))?);
    let object_meta = ObjectMetadata {
        name: object.clone(),
        description: Some(format!(
            "playhead {} state of group {} at journal sequence {}",
            meta.kind, meta.group, meta.journal_seq
        )),
        chunk_size: Some(UPLOAD_CHUNK_BYTES),
        metadata: meta.to_object_metadata(),
        headers: None,
    };
    store
        .put(object_meta, &mut upload_source)
        .await
        .map_err(|source| SnapshotError::Upload {
            object: object.clone(),
            source,
        })?;
    remove_scratch(scratch);
    tracing::info!(
        kind = %meta.kind,
        group = meta.group,
        journal_seq = meta.journal_seq,
        entries = meta.entries,
        bytes = meta.bytes,
        dump_seconds,
        upload_seconds = upload_started.elapsed().as_secs_f64(),
        seconds = started.elapsed().as_secs_f64(),
        "snapshot uploaded"
    );
    Ok(meta)
}

/// The meta of the current snapshot of (kind, group), or `None` when there is none.
pub async fn latest(
    store: &ObjectStore,
    kind: &str,
    group: u32,
) -> Result<Option<SnapshotMeta>, SnapshotError> {
    let object = object_name(kind, group)?;
    match store.info(&object).await {
        Ok(info) if info.deleted => Ok(None),
        Ok(info) => {
            SnapshotMeta::from_object_metadata(&object, &info.metadata, kind, group).map(Some)
        }
        Err(error) if error.kind() == InfoErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotError::Lookup { object, source }),
    }
}

/// Downloads the current snapshot of (kind, group) and restores its trees into `db` (see
/// [`dump::restore_trees`]: each restored tree is replaced). `None`, with `db` untouched, when
/// there is no snapshot.
///
/// On error `db` may hold a partial restore: restore into a fresh db and discard it on error.
pub async fn restore(
    db: &(impl NamedTrees + Clone + Send + 'static),
    store: &ObjectStore,
    kind: &str,
    group: u32,
    scratch_dir: &Path,
) -> Result<Option<SnapshotMeta>, SnapshotError> {
    let object = object_name(kind, group)?;
    let started = Instant::now();
    let mut download = match store.get(&object).await {
        Ok(download) => download,
        Err(error) if error.kind() == GetErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Fetch { object, source }),
    };
    let meta = SnapshotMeta::from_object_metadata(&object, &download.info.metadata, kind, group)?;
    if meta.format != dump::FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedFormat {
            object,
            format: meta.format,
        });
    }

    let scratch = scratch_file(scratch_dir)?;
    let target = tokio::fs::File::from_std(scratch.reopen().map_err(scratch_error(scratch_dir))?);
    download_to(&mut download, target)
        .await
        .map_err(|(received, source)| SnapshotError::Download {
            object: object.clone(),
            received,
            source,
        })?;
    let download_seconds = started.elapsed().as_secs_f64();

    let restore_started = Instant::now();
    let restore_source = scratch.reopen().map_err(scratch_error(scratch_dir))?;
    let db = db.clone();
    let restored = tokio::task::spawn_blocking(move || dump::restore_trees(&db, restore_source))
        .await
        .map_err(task_error(&object, "restore"))?
        .map_err(|source| SnapshotError::Restore {
            object: object.clone(),
            source,
        })?;
    remove_scratch(scratch);
    if restored.entries != meta.entries || restored.bytes != meta.bytes {
        return Err(SnapshotError::CountMismatch {
            object,
            restored,
            announced_entries: meta.entries,
            announced_bytes: meta.bytes,
        });
    }
    tracing::info!(
        kind = %meta.kind,
        group = meta.group,
        journal_seq = meta.journal_seq,
        entries = meta.entries,
        bytes = meta.bytes,
        download_seconds,
        restore_seconds = restore_started.elapsed().as_secs_f64(),
        seconds = started.elapsed().as_secs_f64(),
        "snapshot restored"
    );
    Ok(Some(meta))
}

fn object_name(kind: &str, group: u32) -> Result<String, SnapshotError> {
    snapshot_object(kind, group).map_err(|source| SnapshotError::InvalidKind {
        kind: kind.to_owned(),
        source,
    })
}

/// Copies the object into `target`; on error, how many bytes had arrived.
async fn download_to(
    download: &mut Object,
    target: tokio::fs::File,
) -> Result<u64, (u64, io::Error)> {
    let mut target = tokio::io::BufWriter::with_capacity(1 << 20, target);
    let mut buffer = vec![0u8; UPLOAD_CHUNK_BYTES];
    let mut received = 0u64;
    loop {
        let read =
            match tokio::time::timeout(DOWNLOAD_STALL_TIMEOUT, download.read(&mut buffer)).await {
                Ok(read) => read.map_err(|error| (received, error))?,
                Err(_elapsed) => {
                    let stalled = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data for {DOWNLOAD_STALL_TIMEOUT:?}"),
                    );
                    return Err((received, stalled));
                }
            };
        if read == 0 {
            break;
        }
        target
            .write_all(&buffer[..read])
            .await
            .map_err(|error| (received, error))?;
        received += read as u64;
    }
    target.flush().await.map_err(|error| (received, error))?;
    Ok(received)
}

fn scratch_file(dir: &Path) -> Result<NamedTempFile, SnapshotError> {
    tempfile::Builder::new()
        .prefix("snapshot-")
        .suffix(".dump")
        .tempfile_in(dir)
        .map_err(scratch_error(dir))
}

/// Removal failing after the work succeeded is worth a warning, not a failed snapshot.
fn remove_scratch(scratch: NamedTempFile) {
    let path = scratch.path().to_owned();
    if let Err(error) = scratch.close() {
        tracing::warn!(path = %path.display(), %error, "snapshot scratch file not removed");
    }
}

fn scratch_error(dir: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Scratch {
        dir: dir.to_owned(),
        source,
    }
}

fn task_error<'a>(
    object: &'a str,
    task: &'static str,
) -> impl FnOnce(tokio::task::JoinError) -> SnapshotError + 'a {
    move |source| SnapshotError::Task {
        object: object.to_owned(),
        task,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_that_cannot_name_an_object_is_refused() {
        assert!(matches!(
            object_name("user.player", 0),
            Err(SnapshotError::InvalidKind { .. })
        ));
    }
}
