//! The station entity: a thin shell around the station decider. Per slice of commands it
//! skips sequences already applied, decides, publishes the events (de-duplicated by the
//! broker on redelivery), projects now-playing into the KV bucket, then persists the plays
//! and the state with the last applied sequence.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use playhead_proto::ids::StationId;
use playhead_proto::subjects::EventFamily;
use prost::Message;
use tracing::Instrument;

use crate::domain::decider::Decider;
use crate::domain::station::{StationCommand, StationDecider, StationEvent};
use crate::events::{self, OutgoingEvent};
use crate::metrics::NodeMetrics;
use crate::sharding::{Entity, EntityError, Envelope, Outcome};
use crate::storage::Storage;
use crate::storage::station_store::StoredStation;
use crate::{telemetry, wire};

/// What every station entity shares.
pub struct StationContext {
    pub storage: Storage,
    pub jetstream: jetstream::Context,
    pub now_playing: kv::Store,
    pub metrics: Arc<NodeMetrics>,
}

pub struct StationEntity {
    id: StationId,
    stored: StoredStation,
}

impl Entity for StationEntity {
    type Id = StationId;
    type Command = StationCommand;
    type Context = StationContext;

    const KIND: &'static str = "station";

    fn load(id: StationId, context: &StationContext) -> Result<Self, EntityError> {
        let stored = context.storage.stations.load(&id)?;
        Ok(Self { id, stored })
    }

    async fn apply(
        &mut self,
        context: &Arc<StationContext>,
        batch: Vec<Envelope<StationCommand>>,
    ) -> Result<Vec<Outcome>, EntityError> {
        let span =
            tracing::debug_span!("station.apply", station = %self.id, commands = batch.len());
        telemetry::adopt_context(
            &span,
            batch.first().and_then(|envelope| envelope.headers.as_ref()),
        );
        async {
            let mut next = self.stored.clone();
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut decided: Vec<(u64, StationEvent)> = Vec::new();
            for envelope in &batch {
                if envelope.seq <= next.last_applied_seq {
                    outcomes.push(Outcome::Duplicate);
                    continue;
                }
                let _decide = tracing::trace_span!("decide", seq = envelope.seq).entered();
                match StationDecider.decide(&envelope.command, &next.state, envelope.now) {
                    Ok(events) if events.is_empty() => outcomes.push(Outcome::Unchanged),
                    Ok(events) => {
                        outcomes.push(Outcome::Applied {
                            events: events.len(),
                        });
                        next.state = StationDecider::fold(next.state, &events);
                        decided.extend(events.into_iter().map(|event| (envelope.seq, event)));
                    }
                    Err(error) => outcomes.push(Outcome::Rejected {
                        reason: error.to_string(),
                    }),
                }
                next.last_applied_seq = envelope.seq;
            }
            if decided.is_empty() {
                // Re-deciding these no-ops after a crash gives the same no-ops: no write needed.
                self.stored = next;
                return Ok(outcomes);
            }
            self.publish(context, &decided).await?;
            self.project(context, &next).await?;
            let events: Vec<StationEvent> = decided.into_iter().map(|(_, event)| event).collect();
            let _persist = tracing::debug_span!("persist", events = events.len()).entered();
            context.storage.stations.commit(&self.id, &events, &next)?;
            self.stored = next;
            Ok(outcomes)
        }
        .instrument(span)
        .await
    }
}

impl StationEntity {
    async fn publish(
        &self,
        context: &StationContext,
        decided: &[(u64, StationEvent)],
    ) -> Result<(), EntityError> {
        let outgoing: Vec<OutgoingEvent> = decided
            .iter()
            .map(|(seq, event)| OutgoingEvent {
                seq: *seq,
                name: event.name(),
                payload: wire::station_event_payload(&self.id, event),
            })
            .collect();
        events::publish(
            &context.jetstream,
            &context.metrics,
            EventFamily::Station,
            self.id.as_str(),
            outgoing,
        )
        .await
    }

    async fn project(
        &self,
        context: &StationContext,
        next: &StoredStation,
    ) -> Result<(), EntityError> {
        let Some(now_playing) = wire::now_playing(&self.id, &next.state) else {
            return Ok(());
        };
        context
            .now_playing
            .put(self.id.as_str(), now_playing.encode_to_vec().into())
            .await
            .map_err(|error| EntityError::Publish {
                what: "now-playing projection",
                detail: error.to_string(),
            })?;
        Ok(())
    }
}
