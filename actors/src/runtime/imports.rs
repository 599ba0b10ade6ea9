//! Imports of concert listings: one actor per source runs that source's imports one at a time,
//! each streamed from the object store line by line (never whole in memory).
//!
//! An import notes its progress — the last line done and its counts — every
//! `imports.commit_every_lines` lines, after the shows of those lines, so a restart resumes
//! from the last note and goes over at most that many lines again; the shows those lines wrote
//! are recognised by their origin (import serial + line), so the counts come out exact. At the
//! end the import's `ImportCompleted` is appended to the journal exactly once: the source's
//! last journal sequence is kept in the store, the append expects it, and an append a crash
//! cut short before its note is found in the journal on the next run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::{self, ObjectStore};
use playhead_proto::ids::SourceId;
use playhead_proto::subjects::EventFamily;
use playhead_proto::v1;
use prost::Message as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::ImportsConfig;
use crate::domain::show::{
    self, ImportFormat, Line, LineParser, LineSplitter, ParsedLine, ShowRecord,
};
use crate::domain::time::Timestamp;
use crate::journal::append::{Journal, JournalError, OutgoingEvent};
use crate::journal::codec::EncodedEvent;
use crate::metrics::{ImportStateLabel, NodeMetrics, RecordOutcome};
use crate::storage::clock::{Clock as _, SystemClock};
use crate::storage::import_store::{ImportRecord, ImportState};
use crate::storage::show_store::{Added, ShowValue};
use crate::storage::{Storage, StorageError};

/// Bytes read from the object at a time.
const READ_BYTES: usize = 64 * 1024;
/// A run that failed for a reason that may pass (the broker away) is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What every import actor shares.
pub struct ImportContext {
    pub storage: Storage,
    pub objects: ObjectStore,
    pub journal: Journal,
    pub metrics: Arc<NodeMetrics>,
    pub config: ImportsConfig,
    /// Cancelled when the node stops: a run notes its progress and ends; it resumes at the
    /// next start.
    pub stop: CancellationToken,
    /// Fault injection (tests): a pause after each read from the object.
    pub read_delay: Option<Duration>,
}

/// Why a run ended early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot read object {object}: {detail}")]
    Object { object: String, detail: String },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Completed or failed, journaled if completed.
    Finished(ImportState),
    /// The node is stopping; the import resumes at the next start.
    Stopped,
    /// No such import, or nothing left to do.
    Nothing,
}

/// The import actors, one per source, spawned on first use.
pub struct Importers {
    context: Arc<ImportContext>,
    actors: HashMap<SourceId, ActorRef<ImportMessage>>,
}

impl Importers {
    pub fn new(context: Arc<ImportContext>) -> Self {
        Self {
            context,
            actors: HashMap::new(),
        }
    }

    /// Queues the import on its source's actor; an actor that died (a panic) is replaced.
    pub async fn run(&mut self, source: &SourceId, import_id: String) -> anyhow::Result<()> {
        let mut message = ImportMessage::Run(import_id);
        if let Some(actor) = self.actors.get(source) {
            match actor.cast(message) {
                Ok(()) => return Ok(()),
                Err(ractor::MessagingErr::SendErr(returned)) => {
                    tracing::error!(%source, "the importer of this source died; starting a new one");
                    self.actors.remove(source);
                    message = returned;
                }
                Err(error) => anyhow::bail!("the importer of {source} is gone: {error}"),
            }
        }
        let (actor, _handle) =
            Actor::spawn(None, ImportActor, (self.context.clone(), source.clone()))
                .await
                .map_err(|error| {
                    anyhow::anyhow!("cannot start the importer of {source}: {error}")
                })?;
        self.actors.insert(source.clone(), actor.clone());
        actor
            .cast(message)
            .map_err(|error| anyhow::anyhow!("the importer of {source} is gone: {error}"))
    }

    /// Queues every import a previous run left unfinished, oldest first.
    pub async fn resume_unfinished(&mut self) -> anyhow::Result<usize> {
        let unfinished = self.context.storage.imports.unfinished()?;
        for record in &unfinished {
            let source = SourceId::parse(record.source.as_str())?;
            tracing::info!(
                import_id = %record.import_id,
                %source,
                lines_done = record.lines_done,
                "resuming an unfinished import"
            );
            self.run(&source, record.import_id.clone()).await?;
        }
        Ok(unfinished.len())
    }

    /// Stops every actor after the run in hand (which notes its progress: see
    /// [`ImportContext::stop`]).
    pub async fn stop(self) {
        for (_, actor) in self.actors {
            actor.stop(None);
            let _ = actor
                .wait(Some(Duration::from_secs(30)))
                .await
                .inspect_err(|error| tracing::warn!(%error, "an importer did not stop in time"));
        }
    }
}

pub enum ImportMessage {
    /// Run (or resume) this import of the actor's source.
    Run(String),
}

struct ImportActor;

impl Actor for ImportActor {
    type Msg = ImportMessage;
    type State = (Arc<ImportContext>, SourceId);
    type Arguments = (Arc<ImportContext>, SourceId);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(arguments)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        (context, source): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ImportMessage::Run(import_id) = message;
        match run_import(context, &import_id).await {
            Ok(end) => tracing::debug!(%import_id, %source, ?end, "import run ended"),
            Err(error) => {
                tracing::warn!(
                    %import_id,
                    %source,
                    %error,
                    retry_in_secs = RETRY_AFTER.as_secs(),
                    "import interrupted; it carries on from its last committed line"
                );
                if !context.stop.is_cancelled() {
                    myself.send_after(RETRY_AFTER, move || ImportMessage::Run(import_id));
                }
            }
        }
        Ok(())
    }
}

/// Runs (or resumes, or finishes journaling) one import.
pub async fn run_import(context: &ImportContext, import_id: &str) -> Result<RunEnd, RunError> {
    let storage = &context.storage;
    let Some(mut record) = storage.imports.load(import_id)? else {
        return Ok(RunEnd::Nothing);
    };
    match record.state() {
        ImportState::Failed => return Ok(RunEnd::Nothing),
        ImportState::Completed if record.journal_seq != 0 => return Ok(RunEnd::Nothing),
        ImportState::Completed => {
            journal_completion(context, &mut record).await?;
            return Ok(RunEnd::Finished(ImportState::Completed));
        }
        ImportState::Accepted | ImportState::Running => {}
    }
    let started = Instant::now();
    context.metrics.imports_running.inc();
    let _running = scopeguard(|| {
        context.metrics.imports_running.dec();
    });
    let resumed_from = record.lines_done;
    record.state = ImportState::Running as i32;
    record.updated_at_ms = now_millis();
    storage.imports.save(&record)?;
    tracing::info!(
        import_id,
        source = %record.source,
        object = %record.object_name,
        resumed_from,
        "import running"
    );

    let object = match context.objects.get(&record.object_name).await {
        Ok(object) => object,
        Err(error) if error.kind() == object_store::GetErrorKind::NotFound => {
            let failure = format!(
                "object {:?} is not in the imports bucket (upload it first)",
                record.object_name
            );
            return fail(context, record, failure).await;
        }
        Err(error) => {
            return Err(RunError::Object {
                object: record.object_name.clone(),
                detail: error.to_string(),
            });
        }
    };
    let metadata = object.info().metadata.clone();
    let mut reader = object;
    let mut run = Run::new(context, record);
    let mut buffer = vec![0u8; READ_BYTES];
    let mut next_progress_log = Instant::now() + Duration::from_secs(5);
    loop {
        if context.stop.is_cancelled() {
            run.commit()?;
            tracing::info!(
                import_id,
                lines_done = run.record.lines_done,
                "import paused for the shutdown; it resumes at the next start"
            );
            return Ok(RunEnd::Stopped);
        }
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(|error| RunError::Object {
                object: run.record.object_name.clone(),
                detail: error.to_string(),
            })?;
        if read == 0 {
            break;
        }
        if run.parser.is_none() {
            let format = show::detect_format(
                metadata.get("content-type").map(String::as_str),
                metadata.get("file-name").map(String::as_str),
                &buffer[..read],
            );
            run.parser = Some(LineParser::with_max_line_bytes(
                format,
                context.config.max_line_bytes,
            ));
            run.format = Some(format);
        }
        // Parsing and sled writes, ~1.5 ms a read: off the async workers' hands meanwhile
        // (block_in_place needs the multi-threaded runtime the node runs on).
        let bytes = &buffer[..read];
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| run.feed(bytes))?
            }
            _ => run.feed(bytes)?,
        }
        if let Some(delay) = context.read_delay {
            tokio::time::sleep(delay).await;
        }
        if Instant::now() >= next_progress_log {
            next_progress_log = Instant::now() + Duration::from_secs(5);
            tracing::info!(
                import_id,
                lines_done = run.record.lines_done,
                new = run.record.records_new,
                duplicate = run.record.records_duplicate,
                invalid = run.record.records_invalid,
                "import progress"
            );
        }
    }
    run.finish()?;
    let mut record = run.record;
    record.state = ImportState::Completed as i32;
    record.completed_at_ms = now_millis();
    record.updated_at_ms = record.completed_at_ms;
    storage.imports.save(&record)?;
    storage.make_durable().await?;
    context
        .metrics
        .import_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        import_id,
        source = %record.source,
        read = record.records_read,
        new = record.records_new,
        duplicate = record.records_duplicate,
        invalid = record.records_invalid,
        seconds = started.elapsed().as_secs_f64(),
        "import completed"
    );
    // Run again after a rebuild, it is in the journal already.
    if record.journal_seq == 0 {
        journal_completion(context, &mut record).await?;
    }
    context
        .metrics
        .imports
        .get_or_create(&ImportStateLabel { state: "completed" })
        .inc();
    Ok(RunEnd::Finished(ImportState::Completed))
}

/// Ends the import as failed (nothing more is read; what it stored stays).
async fn fail(
    context: &ImportContext,
    mut record: ImportRecord,
    failure: String,
) -> Result<RunEnd, RunError> {
    tracing::warn!(import_id = %record.import_id, %failure, "import failed");
    record.state = ImportState::Failed as i32;
    record.failure = failure;
    record.completed_at_ms = now_millis();
    record.updated_at_ms = record.completed_at_ms;
    context.storage.imports.save(&record)?;
    context.storage.make_durable().await?;
    context
        .metrics
        .imports
        .get_or_create(&ImportStateLabel { state: "failed" })
        .inc();
    Ok(RunEnd::Finished(ImportState::Failed))
}

/// Appends the import's `ImportCompleted` exactly once and notes its sequence.
async fn journal_completion(
    context: &ImportContext,
    record: &mut ImportRecord,
) -> Result<(), RunError> {
    let source = SourceId::parse(record.source.as_str()).map_err(|error| RunError::Object {
        object: record.object_name.clone(),
        detail: error.to_string(),
    })?;
    let storage = &context.storage;
    let expected = storage.imports.source_journal_seq(&source)?;
    let event = OutgoingEvent {
        inbox_seq: record.request_seq,
        index: 0,
        count: 1,
        event: EncodedEvent {
            name: "ImportCompleted",
            version: 1,
            payload: v1::ImportCompleted {
                status: Some(v1::ImportStatus {
                    state: ImportState::Completed as i32,
                    ..status_of(record, Vec::new())
                }),
            }
            .encode_to_vec(),
        },
        span: tracing::Span::current(),
    };
    let sequence = match context
        .journal
        .append(EventFamily::Import, source.as_str(), expected, &[event])
        .await
    {
        Ok(sequence) => sequence,
        Err(JournalError::Conflict { .. }) => {
            // The journal moved on since the last note: a crash came between an append and
            // its note. If it was this import's event, it is there.
            match find_completion(context, &source, expected, &record.import_id).await? {
                Some(sequence) => sequence,
                None => {
                    let last = context
                        .journal
                        .last_sequence(EventFamily::Import, source.as_str())
                        .await?;
                    storage.imports.set_source_journal_seq(&source, last)?;
                    return Box::pin(journal_completion(context, record)).await;
                }
            }
        }
        Err(error) => return Err(error.into()),
    };
    record.journal_seq = sequence;
    storage.imports.save(record)?;
    storage.imports.set_source_journal_seq(&source, sequence)?;
    storage.make_durable().await?;
    Ok(())
}

async fn find_completion(
    context: &ImportContext,
    source: &SourceId,
    after: u64,
    import_id: &str,
) -> Result<Option<u64>, RunError> {
    let records = context
        .journal
        .read_after(EventFamily::Import, source.as_str(), after)
        .await?;
    Ok(records.iter().find_map(|record| {
        let completed = v1::ImportCompleted::decode(record.payload.as_ref()).ok()?;
        (completed.status?.import_id == import_id).then_some(record.sequence)
    }))
}

/// The status an import answers with: COMPLETED only once its `ImportCompleted` is in the
/// journal (until then it is still RUNNING).
pub fn status_of(record: &ImportRecord, errors: Vec<(u64, String)>) -> v1::ImportStatus {
    let state = match record.state() {
        ImportState::Completed if record.journal_seq == 0 => ImportState::Running as i32,
        _ => record.state,
    };
    let timestamp =
        |millis: u64| (millis > 0).then(|| playhead_client::wire::timestamp(Timestamp(millis)));
    v1::ImportStatus {
        import_id: record.import_id.clone(),
        source: record.source.clone(),
        state,
        records_read: record.records_read,
        records_new: record.records_new,
        records_duplicate: record.records_duplicate,
        records_invalid: record.records_invalid,
        errors: errors
            .into_iter()
            .map(|(line, reason)| v1::ImportLineError { line, reason })
            .collect(),
        updated_at: timestamp(record.updated_at_ms),
        object_name: record.object_name.clone(),
        failure: record.failure.clone(),
        accepted_at: timestamp(record.accepted_at_ms),
        completed_at: timestamp(record.completed_at_ms),
    }
}

/// One run over an object's lines.
struct Run<'a> {
    context: &'a ImportContext,
    record: ImportRecord,
    splitter: LineSplitter,
    parser: Option<LineParser>,
    format: Option<ImportFormat>,
    /// Lines up to this one were done by an earlier run: parsed (a CSV header matters) but not
    /// counted or stored again.
    done_before: u64,
    last_commit_line: u64,
    /// The first storage error met inside the splitter's callback.
    failed: Option<StorageError>,
}

impl<'a> Run<'a> {
    fn new(context: &'a ImportContext, record: ImportRecord) -> Self {
        Self {
            splitter: LineSplitter::new(context.config.max_line_bytes),
            parser: None,
            format: None,
            done_before: record.lines_done,
            last_commit_line: record.lines_done,
            record,
            context,
            failed: None,
        }
    }

    /// Takes the next bytes of the object.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(1));
        splitter.push(bytes, &mut |line| self.line(line));
        self.splitter = splitter;
        self.after_lines()
    }

    fn finish(&mut self) -> Result<(), StorageError> {
        if self.parser.is_none() {
            // An empty object: nothing to read.
            self.parser = Some(LineParser::new(ImportFormat::JsonLines));
        }
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(1));
        splitter.finish(&mut |line| self.line(line));
        self.splitter = splitter;
        self.after_lines()?;
        self.commit()
    }

    fn after_lines(&mut self) -> Result<(), StorageError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        if self.record.lines_done >= self.last_commit_line + self.context.config.commit_every_lines
        {
            self.commit()?;
        }
        Ok(())
    }

    /// Notes how far the import got (after the shows of those lines: sled keeps writes in
    /// order, so a crash never leaves the note ahead of them).
    fn commit(&mut self) -> Result<(), StorageError> {
        self.record.updated_at_ms = now_millis();
        self.context.storage.imports.save(&self.record)?;
        self.last_commit_line = self.record.lines_done;
        Ok(())
    }

    fn line(&mut self, line: Line<'_>) {
        if self.failed.is_some() {
            return;
        }
        if let Err(error) = self.apply(line) {
            self.failed = Some(error);
        }
    }

    fn apply(&mut self, line: Line<'_>) -> Result<(), StorageError> {
        let Some(parser) = self.parser.as_mut() else {
            return Ok(());
        };
        let parsed = parser.parse(&line);
        if line.number <= self.done_before {
            return Ok(());
        }
        self.record.lines_done = line.number;
        let outcome = match parsed {
            Ok(ParsedLine::Blank | ParsedLine::Header) => return Ok(()),
            Ok(ParsedLine::Show(show)) => self.add(line.number, &show)?,
            Err(error) => Err(error.to_string()),
        };
        self.record.records_read += 1;
        let label = match outcome {
            Ok(Added::New) => {
                self.record.records_new += 1;
                "new"
            }
            Ok(Added::Duplicate) => {
                self.record.records_duplicate += 1;
                "duplicate"
            }
            Ok(Added::Over) | Err(_) => {
                let reason = match outcome {
                    Err(reason) => reason,
                    _ => "the show is over: it started more than imports.show_keep_after_start_secs ago".to_owned(),
                };
                self.context.storage.imports.note_error(
                    &self.record.import_id,
                    line.number,
                    &reason,
                    self.record.records_invalid,
                )?;
                self.record.records_invalid += 1;
                "invalid"
            }
        };
        self.context
            .metrics
            .import_records
            .get_or_create(&RecordOutcome { outcome: label })
            .inc();
        Ok(())
    }

    fn add(&self, line: u64, show: &ShowRecord) -> Result<Result<Added, String>, StorageError> {
        let Ok(starts_at_ms) = u64::try_from(show.starts_at_ms) else {
            return Ok(Err("starts_at is before 1970".to_owned()));
        };
        let fingerprint = show::fingerprint(&self.record.source, show);
        let value = ShowValue {
            artist: show.artist.clone(),
            artist_key: show.artist_key.clone(),
            venue: show.venue.clone(),
            city: show.city.clone(),
            country: show.country.clone(),
            starts_at_ms,
            url: show.url.clone(),
            source: self.record.source.clone(),
            source_event_id: show.source_event_id.clone().unwrap_or_default(),
            import_serial: self.record.serial,
            line,
        };
        Ok(Ok(self.context.storage.shows.add(fingerprint, &value)?))
    }
}

/// The wall clock the node's stores read.
pub(crate) fn now_millis() -> u64 {
    SystemClock.now_millis()
}

/// Runs `action` when dropped.
fn scopeguard(action: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(action) = self.0.take() {
                action();
            }
        }
    }
    Guard(Some(action))
}
