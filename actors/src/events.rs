//! Publishing domain events to `PLAYHEAD_EVENTS`, shared by every entity kind.

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::future::try_join_all;
use playhead_proto::headers::MSG_ID;
use playhead_proto::subjects::{EventFamily, event_subject};

use crate::metrics::{EventLabel, NodeMetrics};
use crate::sharding::EntityError;
use crate::telemetry;

/// One encoded event and the inbox sequence of the command that produced it.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub seq: u64,
    pub name: &'static str,
    pub payload: Vec<u8>,
}

/// Publishes `events` (in order, pipelined) and waits for every broker acknowledgement.
///
/// Each event's `Nats-Msg-Id` is derived from the entity, the inbox sequence and the event's
/// index among that command's events: a command re-decided after a crash produces the same
/// ids, and the broker drops the copies.
pub async fn publish(
    jetstream: &jetstream::Context,
    metrics: &NodeMetrics,
    family: EventFamily,
    entity_id: &str,
    events: Vec<OutgoingEvent>,
) -> Result<(), EntityError> {
    let failed = |error: String| EntityError::Publish {
        what: "domain event",
        detail: error,
    };
    let mut acks = Vec::with_capacity(events.len());
    let mut previous_seq = None;
    let mut index_in_command = 0;
    for event in events {
        index_in_command = if previous_seq == Some(event.seq) {
            index_in_command + 1
        } else {
            0
        };
        previous_seq = Some(event.seq);
        let mut headers = HeaderMap::new();
        headers.insert(
            MSG_ID,
            format!(
                "{}:{entity_id}:{}:{index_in_command}",
                family.token(),
                event.seq
            )
            .as_str(),
        );
        telemetry::inject_context(&mut headers);
        let ack = jetstream
            .publish_with_headers(
                event_subject(family, entity_id, event.name),
                headers,
                event.payload.into(),
            )
            .await
            .map_err(|error| failed(error.to_string()))?;
        acks.push(ack);
        metrics
            .events_published
            .get_or_create(&EventLabel { event: event.name })
            .inc();
    }
    try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
        .await
        .map_err(|error| failed(error.to_string()))?;
    Ok(())
}
