//! The import inbox (`playhead.import.{source}` → `PLAYHEAD_INBOX_IMPORT`, one partition, one
//! durable consumer): each request is screened (bad ones are dead-lettered with a reason), an
//! import id seen before is answered with its recorded state (nothing is applied twice), and a
//! new one is recorded ACCEPTED — or FAILED when its object is not in the bucket — durably,
//! then answered on `Playhead-Reply-To` and acknowledged, and handed to its source's importer.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::PullConsumer, object_store::ObjectStore};
use futures::StreamExt as _;
use playhead_client::service::nats_auth::RequesterKeys;
use playhead_proto::ids::SourceId;
use playhead_proto::subjects::{EVENTS_STREAM, IMPORT_CONSUMER, Inbox, ReplySubject};
use playhead_proto::v1;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{CopyOutcome, DeadLetters};
use super::screen::{self, DeadLetter, ScreenedImport};
use crate::metrics::{ImportStateLabel, InboxOutcome, NodeMetrics};
use crate::runtime::imports::{Importers, now_millis, status_of};
use crate::storage::Storage;
use crate::storage::import_store::{ImportRecord, ImportState};

/// Requests fetched at a time (they are few and quick).
const BATCH: usize = 16;
/// A failed step (the broker away, a flush failed) is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Creates (or keeps) the import inbox's durable consumer.
pub async fn consumer(jetstream: &jetstream::Context) -> anyhow::Result<PullConsumer> {
    let stream = jetstream
        .get_stream(Inbox::Import.stream_name())
        .await
        .map_err(|error| anyhow::anyhow!("cannot open {}: {error}", Inbox::Import.stream_name()))?;
    stream
        .get_or_create_consumer(
            IMPORT_CONSUMER,
            jetstream::consumer::pull::Config {
                durable_name: Some(IMPORT_CONSUMER.to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|error| anyhow::anyhow!("cannot create the import consumer: {error}"))
}

/// The import inbox's intake.
pub struct ImportIntake {
    pub consumer: PullConsumer,
    pub client: async_nats::Client,
    pub objects: ObjectStore,
    pub storage: Storage,
    pub importers: Importers,
    pub dead_letters: DeadLetters,
    pub requesters: Option<Arc<RequesterKeys>>,
    pub metrics: Arc<NodeMetrics>,
    pub max_message_bytes: usize,
    /// The store was rebuilt: imports completed after its snapshot are run again (see
    /// `reconcile_with_journal`).
    pub rebuilt: bool,
    pub jetstream: jetstream::Context,
}

impl ImportIntake {
    /// Resumes unfinished imports, then takes requests until `stop`; the importers stop with it.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        if self.rebuilt {
            self.reconcile_with_journal().await?;
        }
        let resumed = self.importers.resume_unfinished().await?;
        if resumed > 0 {
            tracing::info!(imports = resumed, "unfinished imports resumed");
        }
        let result = self.take_requests(&stop).await;
        self.importers.stop().await;
        result
    }

    /// After a rebuild: every import the journal says completed that the restored store does
    /// not know is recorded again (with its journal event, so it is not appended twice) and
    /// run again from its object, so its shows come back.
    async fn reconcile_with_journal(&self) -> anyhow::Result<()> {
        let stream = self
            .jetstream
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|error| anyhow::anyhow!("cannot open {EVENTS_STREAM}: {error}"))?;
        let last = stream.cached_info().state.last_sequence;
        if last == 0 {
            return Ok(());
        }
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: "playhead.events.import.*.ImportCompleted".to_owned(),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|error| anyhow::anyhow!("cannot read the import events: {error}"))?;
        let pending = consumer.cached_info().num_pending;
        if pending == 0 {
            return Ok(());
        }
        let mut events = consumer
            .messages()
            .await
            .map_err(|error| anyhow::anyhow!("cannot read the import events: {error}"))?;
        let (mut read, mut again) = (0u64, 0u64);
        while read < pending {
            let Some(event) = events.next().await else {
                break;
            };
            let event =
                event.map_err(|error| anyhow::anyhow!("cannot read an import event: {error}"))?;
            read += 1;
            let sequence = event.info().map(|info| info.stream_sequence).unwrap_or(0);
            let Some(status) = v1::ImportCompleted::decode(event.payload.as_ref())
                .ok()
                .and_then(|completed| completed.status)
            else {
                tracing::warn!(sequence, "an ImportCompleted event cannot be read; skipped");
                continue;
            };
            let Ok(source) = SourceId::parse(status.source.as_str()) else {
                continue;
            };
            let imports = &self.storage.imports;
            if sequence > imports.source_journal_seq(&source)? {
                imports.set_source_journal_seq(&source, sequence)?;
            }
            if imports.load(&status.import_id)?.is_some() {
                continue;
            }
            let now = now_millis();
            imports.save(&ImportRecord {
                source: status.source.clone(),
                import_id: status.import_id.clone(),
                object_name: status.object_name.clone(),
                serial: imports.take_serial()?,
                state: ImportState::Accepted as i32,
                accepted_at_ms: now,
                updated_at_ms: now,
                journal_seq: sequence,
                ..Default::default()
            })?;
            again += 1;
        }
        self.storage.make_durable().await?;
        tracing::info!(
            events = read,
            imports_run_again = again,
            "imports reconciled with the journal after the rebuild"
        );
        Ok(())
    }

    async fn take_requests(&mut self, stop: &CancellationToken) -> anyhow::Result<()> {
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                batch = self
                    .consumer
                    .fetch()
                    .max_messages(BATCH)
                    .expires(Duration::from_secs(1))
                    .messages() => batch,
            };
            let mut messages = match batch {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot fetch import requests; trying again");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            loop {
                // A batch can outlive its expiry (a pull request the broker lost in a restart
                // ends only at the client's timeout): stopping does not wait for it.
                let message = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    message = messages.next() => message,
                };
                let Some(message) = message else {
                    break;
                };
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "an import request could not be read");
                        break;
                    }
                };
                // Retried until it is handled: a request is acknowledged only once answered.
                loop {
                    match self.handle(&message).await {
                        Ok(()) => break,
                        Err(error) if !stop.is_cancelled() => {
                            tracing::warn!(%error, "import request not handled yet; trying again");
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                        Err(_) => return Ok(()),
                    }
                }
                if let Err(error) = message.double_ack().await {
                    tracing::warn!(%error, "cannot acknowledge an import request (it comes back and is answered again)");
                }
            }
        }
    }

    async fn handle(&mut self, message: &jetstream::Message) -> anyhow::Result<()> {
        let headers = message.headers.as_ref();
        let screened = screen::screen_import(
            &message.subject,
            headers,
            &message.payload,
            self.max_message_bytes,
        )
        .and_then(|screened| self.check_reply(message, headers, screened));
        let screened = match screened {
            Ok(screened) => screened,
            Err(letter) => return self.dead_letter(message, &letter).await,
        };
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        let (record, new) = match self.storage.imports.load(screened.import_id.as_str())? {
            Some(record) => (record, false),
            None => (self.accept(&screened, sequence).await?, true),
        };
        self.storage.make_durable().await?;
        if let Some(reply) = &screened.reply_to {
            self.answer(reply, &record).await;
        }
        self.metrics
            .inbox_messages
            .get_or_create(&InboxOutcome {
                inbox: Inbox::Import.label(),
                outcome: if new { "applied" } else { "duplicate" },
            })
            .inc();
        // Queued again when not finished: harmless (the source's actor runs its imports one
        // at a time and finds a finished one done), and a request retried after a failed hand-
        // over still reaches the actor.
        if !record.state().is_terminal() {
            self.importers
                .run(&screened.source, record.import_id.clone())
                .await?;
        }
        Ok(())
    }

    fn check_reply(
        &self,
        message: &jetstream::Message,
        headers: Option<&HeaderMap>,
        screened: ScreenedImport,
    ) -> Result<ScreenedImport, DeadLetter> {
        if let Some(reply) = &screened.reply_to {
            super::check_reply_signature(
                self.requesters.as_deref(),
                Inbox::Import,
                &message.subject,
                headers,
                reply.as_str(),
            )?;
        }
        Ok(screened)
    }

    /// Records a new import: ACCEPTED, or FAILED at once when its object is missing.
    async fn accept(
        &self,
        screened: &ScreenedImport,
        request_seq: u64,
    ) -> anyhow::Result<ImportRecord> {
        let now = now_millis();
        let mut record = ImportRecord {
            source: screened.source.to_string(),
            import_id: screened.import_id.to_string(),
            object_name: screened.object_name.clone(),
            serial: self.storage.imports.take_serial()?,
            state: ImportState::Accepted as i32,
            accepted_at_ms: now,
            updated_at_ms: now,
            request_seq,
            ..Default::default()
        };
        let state = match self.objects.info(&screened.object_name).await {
            Ok(_) => "accepted",
            Err(error)
                if error.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound =>
            {
                record.state = ImportState::Failed as i32;
                record.failure = format!(
                    "object {:?} is not in the imports bucket (upload it first)",
                    screened.object_name
                );
                record.completed_at_ms = now;
                "failed"
            }
            Err(error) => anyhow::bail!("cannot look up object {}: {error}", screened.object_name),
        };
        self.storage.imports.save(&record)?;
        self.metrics
            .imports
            .get_or_create(&ImportStateLabel { state })
            .inc();
        tracing::info!(
            import_id = %record.import_id,
            source = %record.source,
            object = %record.object_name,
            state,
            "import requested"
        );
        Ok(record)
    }

    /// Best effort: a requester that went away can ask for the status later.
    async fn answer(&self, reply: &ReplySubject, record: &ImportRecord) {
        let accepted = v1::ImportAccepted {
            import_id: record.import_id.clone(),
            state: status_of(record, Vec::new()).state,
            object_name: record.object_name.clone(),
            failure: record.failure.clone(),
        };
        if let Err(error) = self
            .client
            .publish(reply.as_str().to_owned(), accepted.encode_to_vec().into())
            .await
        {
            tracing::warn!(subject = reply.as_str(), %error, "cannot answer an import request");
        }
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        letter: &DeadLetter,
    ) -> anyhow::Result<()> {
        let copy = self.dead_letters.copy(Inbox::Import, message, letter);
        loop {
            match copy.attempt().await {
                Ok(CopyOutcome::Copied | CopyOutcome::GivenUp) => break,
                Err(error) => {
                    tracing::warn!(%error, "dead-letter copy failed; trying again");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
        self.metrics
            .inbox_messages
            .get_or_create(&InboxOutcome {
                inbox: Inbox::Import.label(),
                outcome: "dead_lettered",
            })
            .inc();
        Ok(())
    }
}
