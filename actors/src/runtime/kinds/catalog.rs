//! The content kind: each catalog item's tags (what entitlement is checked against), decided by
//! the catalog decider and kept with the last applied inbox sequence.

use playhead_proto::ids::ContentId;
use playhead_proto::subjects::EventFamily;

use crate::domain::catalog::{CatalogCommand, CatalogDecider, CatalogEvent, ContentState};
use crate::domain::decider::Decider;
use crate::journal::append::JournalRecord;
use crate::journal::codec::{self, CodecError, EncodedEvent};
use crate::runtime::{EntityError, EntityKind, Sequences};
use crate::storage::catalog_store::StoredContent;
use crate::storage::{MainWrites, Storage};

/// What every content item shares.
pub struct CatalogContext {
    pub storage: Storage,
}

/// One item in memory: its tags and the last inbox sequence folded into them.
#[derive(Clone)]
pub struct ContentRecords {
    state: ContentState,
    last_applied_seq: u64,
}

pub struct ContentKind;

impl EntityKind for ContentKind {
    type Id = ContentId;
    type Decider = CatalogDecider;
    type Command = CatalogCommand;
    type Event = CatalogEvent;
    type Records = ContentRecords;
    type Context = CatalogContext;

    const KIND: &'static str = "content";
    const FAMILY: EventFamily = EventFamily::Content;
    const INBOX_STREAM: &'static str = playhead_proto::subjects::Inbox::Catalog.stream_name();

    fn decider(_context: &CatalogContext) -> &CatalogDecider {
        &CatalogDecider
    }

    fn parse_id(token: &str) -> Result<ContentId, playhead_proto::ids::IdError> {
        ContentId::parse(token)
    }

    fn state(records: &ContentRecords) -> &ContentState {
        &records.state
    }

    fn load(
        context: &CatalogContext,
        id: &ContentId,
    ) -> Result<(ContentRecords, Sequences), EntityError> {
        let stored = context.storage.catalog.load(id)?;
        Ok((
            ContentRecords {
                state: stored.state,
                last_applied_seq: stored.last_applied_seq,
            },
            Sequences {
                last_inbox: stored.last_applied_seq,
                last_journal: stored.last_journal_seq,
            },
        ))
    }

    fn apply(
        records: &mut ContentRecords,
        inbox_seq: u64,
        events: &[CatalogEvent],
        replayed: bool,
    ) {
        if replayed && records.last_applied_seq >= inbox_seq {
            return;
        }
        let state = records.state.take();
        records.state = CatalogDecider::fold(state, events);
        records.last_applied_seq = inbox_seq;
    }

    fn encode(id: &ContentId, event: &CatalogEvent) -> EncodedEvent {
        codec::encode_content(id, event)
    }

    fn decode(id: &ContentId, record: &JournalRecord) -> Result<CatalogEvent, CodecError> {
        codec::decode_content(
            id,
            &record.event_name,
            record.version,
            &record.payload,
            record.stored_at,
        )
    }

    fn persist(
        context: &CatalogContext,
        id: &ContentId,
        records: &mut ContentRecords,
        sequences: Sequences,
        _applied: &[(u64, Vec<CatalogEvent>)],
        _writes: &mut MainWrites,
    ) -> Result<(), EntityError> {
        // No bucketed records, so nothing to wait for: written at once, and the tag cache
        // filled once it is.
        context.storage.catalog.commit(
            id,
            &StoredContent {
                state: records.state.clone(),
                last_applied_seq: records.last_applied_seq,
                last_journal_seq: sequences.last_journal,
            },
        )?;
        Ok(())
    }
}
