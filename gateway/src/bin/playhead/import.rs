//! `playhead import FILE --source S` (UploadImport, then WatchImport) and
//! `playhead import status ID` (GetImport).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use futures::StreamExt as _;
use playhead_gateway::auth::AuthedChannel;
use playhead_proto::v1::import_service_client::ImportServiceClient;
use playhead_proto::v1::{GetImportRequest, ImportChunk, ImportState, ImportStatus};
use tokio::io::AsyncReadExt as _;

/// Bytes per uploaded chunk (one gRPC message each).
const CHUNK_BYTES: usize = 256 * 1024;
/// Shortest time between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Bad lines printed in a summary.
const ERRORS_SHOWN: usize = 10;

/// `playhead import`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: Option<ImportCommand>,
    /// The batch to upload: JSON lines or CSV of shows (a file named `status` is `./status`).
    #[arg(required = true)]
    file: Option<PathBuf>,
    /// The import source (the scraper), an id ([A-Za-z0-9_-], 1 to 128 characters).
    #[arg(long, required = true)]
    source: Option<String>,
    /// The import id; re-running an id the node knows stores nothing and shows its status.
    /// Default: a fresh one, picked by the gateway.
    #[arg(long)]
    id: Option<String>,
    /// How the batch is encoded (application/x-ndjson, application/jsonl, text/csv); default:
    /// the node goes by the file's name, then by its content.
    #[arg(long)]
    content_type: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Show an import's status, its counts and its first bad lines (GetImport).
    Status {
        /// The import id.
        id: String,
    },
}

pub async fn import(channel: AuthedChannel, args: ImportArgs) -> anyhow::Result<()> {
    let mut client = ImportServiceClient::new(channel);
    if let Some(ImportCommand::Status { id }) = args.command {
        let status = client
            .get_import(GetImportRequest { import_id: id })
            .await?
            .into_inner();
        print!("{}", summary(&status));
        return Ok(());
    }
    let (Some(file), Some(source)) = (args.file, args.source) else {
        bail!("give the FILE to upload and --source (or `playhead import status ID`)");
    };
    let first = ImportChunk {
        source,
        import_id: args.id.unwrap_or_default(),
        content_type: args.content_type.unwrap_or_default(),
        file_name: file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        data: Vec::new(),
    };
    let accepted = upload(&mut client, &file, first).await?;
    eprintln!(
        "import {}: {} (object {})",
        accepted.import_id,
        state_name(accepted.state),
        accepted.object_name
    );
    follow(&mut client, accepted.import_id).await
}

/// Streams the file in chunks of [`CHUNK_BYTES`], the first carrying `first`'s header, with a
/// progress line on stderr.
async fn upload(
    client: &mut ImportServiceClient<AuthedChannel>,
    path: &Path,
    first: ImportChunk,
) -> anyhow::Result<playhead_proto::v1::ImportAccepted> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let metadata = file.metadata().await?;
    // A pipe or a device has no size to count against.
    let total = metadata.is_file().then_some(metadata.len());
    let (read_failed, read_failure) = tokio::sync::oneshot::channel::<std::io::Error>();
    let line_open = Arc::new(AtomicBool::new(false));
    let reading = Reading {
        file,
        header: Some(first),
        failed: Some(read_failed),
        progress: Progress::new(path.display().to_string(), total, line_open.clone()),
        done: false,
    };
    let chunks = futures::stream::unfold(reading, Reading::next);
    // A read error cancels the call: the gateway then deletes what it stored.
    let answer = tokio::select! {
        answer = client.upload_import(chunks) => answer.map(tonic::Response::into_inner),
        Ok(error) = read_failure => {
            Err(tonic::Status::cancelled(format!("cannot read {}: {error}", path.display())))
        }
    };
    // The gateway may answer before the whole file is sent (a known import id, a refusal).
    if line_open.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
    Ok(answer?)
}

struct Reading {
    file: tokio::fs::File,
    /// The first chunk's fields, until the first chunk is sent.
    header: Option<ImportChunk>,
    failed: Option<tokio::sync::oneshot::Sender<std::io::Error>>,
    progress: Progress,
    done: bool,
}

impl Reading {
    async fn next(mut self) -> Option<(ImportChunk, Reading)> {
        if self.done {
            return None;
        }
        let mut data = Vec::with_capacity(CHUNK_BYTES);
        match (&mut self.file)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut data)
            .await
        {
            Ok(_) => {}
            Err(error) => {
                if let Some(failed) = self.failed.take() {
                    let _ = failed.send(error);
                }
                // Never end the request as if the file were whole: the call is cancelled.
                futures::future::pending::<()>().await;
            }
        }
        let last = data.len() < CHUNK_BYTES;
        self.progress.sent(data.len() as u64, last);
        let chunk = match self.header.take() {
            Some(header) => ImportChunk { data, ..header },
            // The end of the file at a chunk boundary: nothing more to send.
            None if data.is_empty() => return None,
            None => ImportChunk {
                data,
                ..ImportChunk::default()
            },
        };
        self.done = last;
        Some((chunk, self))
    }
}

/// The upload's progress line on stderr: bytes sent of the total, and the percentage.
struct Progress {
    label: String,
    /// `None`: unknown (a pipe).
    total: Option<u64>,
    sent: u64,
    printed_at: Option<Instant>,
    /// Whether the line is printed and not yet ended.
    line_open: Arc<AtomicBool>,
}

impl Progress {
    fn new(label: String, total: Option<u64>, line_open: Arc<AtomicBool>) -> Self {
        Progress {
            label,
            total,
            sent: 0,
            printed_at: None,
            line_open,
        }
    }

    fn sent(&mut self, bytes: u64, last: bool) {
        self.sent += bytes;
        let due = self
            .printed_at
            .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if !(due || last) {
            return;
        }
        self.printed_at = Some(Instant::now());
        match self.total {
            Some(total) => {
                let percent = match total {
                    0 => 100.0,
                    total => (self.sent as f64 * 100.0 / total as f64).min(100.0),
                };
                eprint!(
                    "\ruploading {}: {} / {total} bytes ({percent:.0}%)",
                    self.label, self.sent
                );
            }
            None => eprint!("\ruploading {}: {} bytes", self.label, self.sent),
        }
        self.line_open.store(!last, Ordering::Relaxed);
        if last {
            eprintln!();
        }
    }
}

/// Follows WatchImport to a terminal state, printing the counts as they change; prints the
/// summary and fails if the import FAILED.
async fn follow(
    client: &mut ImportServiceClient<AuthedChannel>,
    import_id: String,
) -> anyhow::Result<()> {
    let mut changes = client
        .watch_import(GetImportRequest {
            import_id: import_id.clone(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(status) = changes.next().await {
        let status = status?;
        eprintln!(
            "import {}: {} read {} new {} duplicate {} invalid {}",
            status.import_id,
            state_name(status.state),
            status.records_read,
            status.records_new,
            status.records_duplicate,
            status.records_invalid
        );
        last = Some(status);
    }
    let Some(status) = last else {
        bail!("the gateway sent no status of import {import_id}");
    };
    print!("{}", summary(&status));
    match ImportState::try_from(status.state) {
        Ok(ImportState::Completed) => Ok(()),
        Ok(ImportState::Failed) => bail!("import {import_id} failed: {}", status.failure),
        _ => bail!(
            "the watch ended before import {import_id} finished; see `playhead import status \
             {import_id}`"
        ),
    }
}

/// `COMPLETED` for `IMPORT_STATE_COMPLETED`.
fn state_name(state: i32) -> String {
    ImportState::try_from(state).map_or_else(
        |_| format!("state {state}"),
        |state| {
            state
                .as_str_name()
                .trim_start_matches("IMPORT_STATE_")
                .to_owned()
        },
    )
}

/// An import's status for a person: state, counts, failure, the first bad lines.
fn summary(status: &ImportStatus) -> String {
    let mut text = format!(
        "import {} ({}): {}\n  object     {}\n  read       {}\n  new        {}\n  \
         duplicate  {}\n  invalid    {}\n",
        status.import_id,
        status.source,
        state_name(status.state),
        status.object_name,
        status.records_read,
        status.records_new,
        status.records_duplicate,
        status.records_invalid
    );
    if !status.failure.is_empty() {
        text.push_str(&format!("  failure    {}\n", status.failure));
    }
    if !status.errors.is_empty() {
        let total = status.records_invalid.max(status.errors.len() as u64);
        text.push_str(&format!(
            "  first bad lines ({} of {total}):\n",
            status.errors.len().min(ERRORS_SHOWN)
        ));
        for error in status.errors.iter().take(ERRORS_SHOWN) {
            text.push_str(&format!("    line {}: {}\n", error.line, error.reason));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use playhead_proto::v1::ImportLineError;

    use super::*;

    #[test]
    fn a_summary_gives_the_counts_the_failure_and_the_first_bad_lines() {
        let status = ImportStatus {
            import_id: "imp-1".into(),
            source: "songkick".into(),
            state: ImportState::Completed as i32,
            records_read: 12,
            records_new: 3,
            records_duplicate: 7,
            records_invalid: 14,
            errors: (1..=12)
                .map(|line| ImportLineError {
                    line,
                    reason: "no starts_at".into(),
                })
                .collect(),
            ..ImportStatus::default()
        };
        let text = summary(&status);
        assert!(
            text.starts_with("import imp-1 (songkick): COMPLETED\n"),
            "{text}"
        );
        assert!(text.contains("  duplicate  7\n"), "{text}");
        assert!(text.contains("first bad lines (10 of 14)"), "{text}");
        assert!(text.contains("    line 10: no starts_at\n"), "{text}");
        assert!(!text.contains("line 11:"), "{text}");
        assert_eq!(state_name(ImportState::Failed as i32), "FAILED");
        assert_eq!(state_name(42), "state 42");
    }
}
