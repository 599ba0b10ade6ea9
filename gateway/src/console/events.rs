//! `GET /api/events`: the console's live feed over Server-Sent Events.
//!
//! On connect: one `now-playing` event per station that has a song. Then one per change, as
//! the KV-fed cache sees it, and one `dead-letter` event per new dead letter (a broker
//! subscription to the dead-letter subjects). A slow page never holds anyone back: its events
//! queue in a small channel; once it falls behind the cache's change feed it gets the whole
//! snapshot again (latest values), never a backlog.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use playhead_proto::headers::DLQ_REASON;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::DLQ_CAPTURE;
use playhead_proto::v1::NowPlaying;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiError, Console, MAX_EVENT_STREAMS, proto_json};
use crate::error::GatewayError;

/// Events queued for one page before the feed waits for it.
const QUEUE: usize = 256;

pub async fn stream(State(console): State<Console>) -> Response {
    let Ok(permit) = console.streams.clone().try_acquire_owned() else {
        return ApiError(GatewayError::Unavailable(format!(
            "{MAX_EVENT_STREAMS} console pages are already following events; close one"
        )))
        .into_response();
    };
    // Subscribed before the snapshot is read, so no change falls between the two.
    let changes = console.cache.changes();
    let dead_letters = match console.node.client.subscribe(DLQ_CAPTURE).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            return ApiError(GatewayError::Unavailable(error.to_string())).into_response();
        }
    };
    let (events, queued) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let _permit = permit;
        let metrics = console.metrics.clone();
        metrics.console_streams.inc();
        feed(console, changes, dead_letters, events).await;
        metrics.console_streams.dec();
    });
    Sse::new(ReceiverStream::new(queued).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Feeds one page until it goes away, the broker subscription ends or the gateway stops.
async fn feed(
    console: Console,
    mut changes: broadcast::Receiver<StationId>,
    mut dead_letters: async_nats::Subscriber,
    events: mpsc::Sender<Event>,
) {
    if !send_snapshot(&console, &events).await {
        return;
    }
    loop {
        let event = tokio::select! {
            _ = console.shutdown.cancelled() => return,
            _ = events.closed() => return,
            change = changes.recv() => match change {
                Ok(station) => {
                    let value = console.cache.get(&station);
                    now_playing_event(&station, value.as_deref())
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !send_snapshot(&console, &events).await {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            letter = dead_letters.next() => match letter {
                Some(letter) => dead_letter_event(&letter),
                None => return,
            },
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn send_snapshot(console: &Console, events: &mpsc::Sender<Event>) -> bool {
    for (station, value) in console.cache.snapshot() {
        if events
            .send(now_playing_event(&station, Some(&value)))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// `now-playing`: `{"stationId": …, "nowPlaying": NowPlaying | null}`.
pub fn now_playing_event(station: &StationId, value: Option<&NowPlaying>) -> Event {
    let data = serde_json::json!({
        "stationId": station.as_str(),
        "nowPlaying": value.map(proto_json),
    });
    Event::default().event("now-playing").data(data.to_string())
}

/// `dead-letter`: `{"reason": …, "subject": …}` (the page fetches the list again).
fn dead_letter_event(letter: &async_nats::Message) -> Event {
    let reason = letter
        .headers
        .as_ref()
        .and_then(|headers| headers.get(DLQ_REASON))
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default();
    let data = serde_json::json!({ "reason": reason, "subject": letter.subject.as_str() });
    Event::default().event("dead-letter").data(data.to_string())
}
