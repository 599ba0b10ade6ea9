//! The station kind: song observations decided by the station decider; the play history and
//! the station record in sled; now-playing projected into the KV bucket.

use async_nats::jetstream::kv;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::EventFamily;
use prost::Message;

use crate::domain::decider::Decider;
use crate::domain::station::{StationCommand, StationDecider, StationEvent, StationState};
use crate::journal::append::JournalRecord;
use crate::journal::codec::{self, CodecError, EncodedEvent};
use crate::runtime::{EntityError, EntityKind, Sequences};
use crate::storage::Storage;
use crate::storage::station_store::StoredStation;
use crate::wire;

/// What every station shares.
pub struct StationContext {
    pub storage: Storage,
    pub now_playing: kv::Store,
}

/// One station in memory: its state and the last inbox sequence folded into it.
#[derive(Clone)]
pub struct StationRecords {
    state: StationState,
    last_applied_seq: u64,
}

pub struct StationKind;

impl EntityKind for StationKind {
    type Id = StationId;
    type Decider = StationDecider;
    type Command = StationCommand;
    type Event = StationEvent;
    type Records = StationRecords;
    type Context = StationContext;

    const KIND: &'static str = "station";
    const FAMILY: EventFamily = EventFamily::Station;
    const INBOX_STREAM: &'static str = playhead_proto::subjects::Inbox::Station.stream_name();

    fn decider(_context: &StationContext) -> &StationDecider {
        &StationDecider
    }

    fn parse_id(token: &str) -> Result<StationId, playhead_proto::ids::IdError> {
        StationId::parse(token)
    }

    fn state(records: &StationRecords) -> &StationState {
        &records.state
    }

    fn load(
        context: &StationContext,
        id: &StationId,
    ) -> Result<(StationRecords, Sequences), EntityError> {
        let stored = context.storage.stations.load(id)?;
        Ok((
            StationRecords {
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
        records: &mut StationRecords,
        inbox_seq: u64,
        events: &[StationEvent],
        replayed: bool,
    ) {
        if replayed && records.last_applied_seq >= inbox_seq {
            return;
        }
        let state = std::mem::take(&mut records.state);
        records.state = StationDecider::fold(state, events);
        records.last_applied_seq = inbox_seq;
    }

    fn encode(id: &StationId, event: &StationEvent) -> EncodedEvent {
        codec::encode_station(id, event)
    }

    fn decode(id: &StationId, record: &JournalRecord) -> Result<StationEvent, CodecError> {
        codec::decode_station(
            id,
            &record.event_name,
            record.version,
            &record.payload,
            record.stored_at,
        )
    }

    fn persist(
        context: &StationContext,
        id: &StationId,
        records: &mut StationRecords,
        sequences: Sequences,
        applied: &[(u64, Vec<StationEvent>)],
    ) -> Result<(), EntityError> {
        let events: Vec<&StationEvent> = applied.iter().flat_map(|(_, events)| events).collect();
        context.storage.stations.commit(
            id,
            &events,
            &StoredStation {
                state: records.state.clone(),
                last_applied_seq: records.last_applied_seq,
                last_journal_seq: sequences.last_journal,
            },
        )?;
        Ok(())
    }

    async fn project(
        context: &StationContext,
        id: &StationId,
        records: &StationRecords,
    ) -> Result<(), EntityError> {
        let Some(now_playing) = wire::now_playing(id, &records.state) else {
            return Ok(());
        };
        context
            .now_playing
            .put(id.as_str(), now_playing.encode_to_vec().into())
            .await
            .map_err(|error| EntityError::Publish {
                what: "now-playing projection",
                detail: error.to_string(),
            })?;
        Ok(())
    }
}
