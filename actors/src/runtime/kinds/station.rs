//! The station kind: song observations decided by the station decider; the play history and
//! the station record in sled; now-playing projected into the KV bucket. With enrichment on,
//! a new song is looked up in the enrichment cache before it is decided (a hit is journaled
//! with it), and a miss is filed with the enrichment service once the play is persisted.

use std::sync::OnceLock;

use async_nats::jetstream::kv;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::EventFamily;
use prost::Message;

use crate::domain::decider::Decider;
use crate::domain::station::{StationCommand, StationDecider, StationEvent, StationState};
use crate::journal::append::JournalRecord;
use crate::journal::codec::{self, CodecError, EncodedEvent};
use crate::runtime::enrichment::{EnrichmentLink, Wanted};
use crate::runtime::{EntityError, EntityKind, Sequences};
use crate::storage::station_store::StoredStation;
use crate::storage::{MainWrites, Storage};
use crate::wire;

/// What every station shares.
pub struct StationContext {
    pub storage: Storage,
    pub now_playing: kv::Store,
    /// Set once the enrichment service runs (never, with `enrichment.provider = "none"`):
    /// a store being rebuilt files nothing.
    pub enrichment: OnceLock<EnrichmentLink>,
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

    /// A song that is not the one on air gets what the enrichment cache knows of it.
    fn prepare(
        context: &StationContext,
        _id: &StationId,
        records: &mut StationRecords,
        command: &mut StationCommand,
    ) -> Result<(), EntityError> {
        let (Some(enrichment), StationCommand::ObserveSong(observation)) =
            (context.enrichment.get(), command)
        else {
            return Ok(());
        };
        // An observation naming no song is the decider's to refuse.
        let Ok(song) = observation.song() else {
            return Ok(());
        };
        let on_air = records.state.current.as_ref();
        if on_air.is_some_and(|current| current.song.same_song(&song)) {
            return Ok(());
        }
        observation.known = enrichment.known(&song.comparison_key())?;
        Ok(())
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

    fn persist_bucketed(
        context: &StationContext,
        id: &StationId,
        records: &mut StationRecords,
        applied: &[(u64, Vec<StationEvent>)],
    ) -> Result<bool, EntityError> {
        let events: Vec<&StationEvent> = applied.iter().flat_map(|(_, events)| events).collect();
        Ok(context
            .storage
            .stations
            .commit_plays(id, &events, &records.state)?)
    }

    fn persist(
        context: &StationContext,
        id: &StationId,
        records: &mut StationRecords,
        sequences: Sequences,
        applied: &[(u64, Vec<StationEvent>)],
        writes: &mut MainWrites,
    ) -> Result<(), EntityError> {
        let events: Vec<&StationEvent> = applied.iter().flat_map(|(_, events)| events).collect();
        context.storage.stations.commit_state(
            writes,
            id,
            &StoredStation {
                state: records.state.clone(),
                last_applied_seq: records.last_applied_seq,
                last_journal_seq: sequences.last_journal,
            },
        );
        if let Some(enrichment) = context.enrichment.get()
            && let Some(current) = records.state.current.as_ref()
            && current.enrichment.is_none()
            && events.iter().any(|event| {
                matches!(event, StationEvent::SongStarted { play_seq, .. } if *play_seq == current.play_seq)
            })
        {
            enrichment.want(Wanted {
                station: id.clone(),
                play_seq: current.play_seq,
                song: current.song.clone(),
                resumed: false,
            });
        }
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
