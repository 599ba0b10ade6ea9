//! The model of what a node must hold after processing the inboxes: the inbox streams read
//! back in order, screened and decided by the same pure deciders, folded without sled, NATS
//! or crashes. The node under test, crashed and restarted any number of times, must answer
//! exactly this and hold exactly these events in its journal.
//!
//! The model shares the deciders and the wire views with the node on purpose: what it checks
//! is that every stored command was applied exactly once, in order — not the rules themselves
//! (the deciders' own tests do that). Likewise the answers: the model encodes each one with
//! the node's own pure functions, from the state the model folded up to that message.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_actors::domain::catalog::CatalogDecider;
use playhead_actors::domain::decider::Decider;
use playhead_actors::domain::playout::{PlayoutCommand, PlayoutEvent};
use playhead_actors::domain::station::{StationDecider, StationEvent, StationState};
use playhead_actors::domain::time::Timestamp;
use playhead_actors::domain::user::{UserCommand, UserDecider, UserEvent, UserState};
use playhead_actors::ingest::screen;
use playhead_actors::journal::codec::{self, EncodedEvent};
use playhead_actors::runtime::Decided;
use playhead_actors::runtime::kinds::user::answers;
use playhead_actors::storage::session_store::LastAnswer;
use playhead_proto::ids::{ContentId, Tag};
use playhead_proto::subjects::{EventFamily, Inbox};

/// One message as an inbox stored it.
pub struct Stored {
    pub subject: String,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: bytes::Bytes,
    pub seq: u64,
    pub at: Timestamp,
}

/// A play as listed: (play_seq, artist, title, started_at, ended_at).
pub type ModelPlay = (u64, String, String, u64, Option<u64>);

/// One event in an entity's journal: the command's inbox sequence and the encoded event.
pub type ModelEvent = (u64, EncodedEvent);

/// A view-history record: (position, last viewed, completed).
pub type ModelView = (u64, Timestamp, bool);

/// What a message that asked for an answer must be answered.
#[derive(Debug, Clone)]
pub struct ModelAnswer {
    pub inbox_seq: u64,
    pub user: String,
    /// A player command (`PlayerReply`) rather than a heartbeat (`HeartbeatDecision`).
    pub player: bool,
    pub encoded: Vec<u8>,
}

#[derive(Default)]
pub struct Model {
    pub stations: BTreeMap<String, StationState>,
    pub plays: BTreeMap<String, BTreeMap<u64, ModelPlay>>,
    pub users: BTreeMap<String, UserState>,
    pub views: BTreeMap<String, BTreeMap<ContentId, ModelView>>,
    pub tags: BTreeMap<ContentId, BTreeSet<Tag>>,
    /// (family, id) → the entity's journal, in order.
    pub journal: BTreeMap<(EventFamily, String), Vec<ModelEvent>>,
    /// Reply subject → the answer its message must get.
    pub answers: BTreeMap<String, ModelAnswer>,
}

/// Every message `inbox` stored, in stream order.
pub async fn read_inbox(jetstream: &jetstream::Context, inbox: Inbox) -> Vec<Stored> {
    let stream = jetstream
        .get_stream(inbox.stream_name())
        .await
        .expect("inbox stream");
    let last = stream.cached_info().state.last_sequence;
    let mut stored = Vec::new();
    if last == 0 {
        return stored;
    }
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer")
        .messages()
        .await
        .expect("ordered messages");
    while let Some(message) = messages.next().await {
        let message = message.expect("inbox message");
        let info = message.info().expect("a stored message");
        let seq = info.stream_sequence;
        let at = Timestamp::from_millis((info.published.unix_timestamp_nanos() / 1_000_000) as u64);
        stored.push(Stored {
            subject: message.subject.to_string(),
            headers: message.headers.clone(),
            payload: message.payload.clone(),
            seq,
            at,
        });
        if seq >= last {
            break;
        }
    }
    stored
}

impl Model {
    /// Folds what the three inboxes stored, the catalog first.
    pub async fn from_inboxes(
        jetstream: &jetstream::Context,
        user_decider: &UserDecider,
        max_message_bytes: usize,
    ) -> Model {
        let mut model = Model::default();
        for message in read_inbox(jetstream, Inbox::Catalog).await {
            let Ok(screened) = screen::screen_catalog(
                &message.subject,
                message.headers.as_ref(),
                &message.payload,
                max_message_bytes,
            ) else {
                continue;
            };
            let state = model.tags.get(&screened.id).cloned();
            let Ok(events) = CatalogDecider.decide(&screened.command, &state, message.at) else {
                continue;
            };
            let next = CatalogDecider::fold(state, &events);
            model.record(
                EventFamily::Content,
                screened.id.as_str(),
                message.seq,
                &events,
                |event| codec::encode_content(&screened.id, event),
            );
            if let Some(tags) = next {
                model.tags.insert(screened.id, tags);
            }
        }
        for message in read_inbox(jetstream, Inbox::Station).await {
            let Ok(screened) = screen::screen_station(
                &message.subject,
                message.headers.as_ref(),
                &message.payload,
                max_message_bytes,
            ) else {
                continue;
            };
            let id = screened.id.to_string();
            let state = model.stations.remove(&id).unwrap_or_default();
            let events = StationDecider
                .decide(&screened.command, &state, message.at)
                .unwrap_or_default();
            let plays = model.plays.entry(id.clone()).or_default();
            for event in &events {
                match event {
                    StationEvent::SongStarted {
                        play_seq,
                        song,
                        started_at,
                    } => {
                        plays.insert(
                            *play_seq,
                            (
                                *play_seq,
                                song.artist.clone(),
                                song.title.clone(),
                                started_at.as_millis(),
                                None,
                            ),
                        );
                    }
                    StationEvent::SongEnded {
                        play_seq, ended_at, ..
                    } => {
                        if let Some(play) = plays.get_mut(play_seq) {
                            play.4 = Some(ended_at.as_millis());
                        }
                    }
                    // Enrichment is off in these runs (`test_node_config`): the model has none.
                    StationEvent::SongEnriched { .. } => {}
                }
            }
            model.record(EventFamily::Station, &id, message.seq, &events, |event| {
                codec::encode_station(&screened.id, event)
            });
            model
                .stations
                .insert(id, StationDecider::fold(state, &events));
        }
        for message in read_inbox(jetstream, Inbox::User).await {
            let Ok(screened) = screen::screen_user(
                &message.subject,
                message.headers.as_ref(),
                &message.payload,
                max_message_bytes,
            ) else {
                continue;
            };
            let id = screened.id.to_string();
            let mut command = screened.command;
            if let UserCommand::Playout(PlayoutCommand::Heartbeat(heartbeat)) = &mut command {
                heartbeat.content_tags = model.tags.get(&heartbeat.content_id).cloned();
            }
            let state = model.users.remove(&id).unwrap_or_default();
            let decision = user_decider.decide(&command, &state, message.at);
            let events = decision.clone().unwrap_or_default();
            let views = model.views.entry(id.clone()).or_default();
            for event in &events {
                if let UserEvent::Playout(event) = event
                    && let Some(bookmark) = PlayoutEvent::bookmark(event)
                {
                    let later = views
                        .get(&bookmark.content_id)
                        .is_none_or(|(_, viewed, _)| bookmark.at >= *viewed);
                    if later {
                        views.insert(
                            bookmark.content_id,
                            (bookmark.position_ms, bookmark.at, bookmark.view_ended),
                        );
                    }
                }
            }
            model.record(EventFamily::User, &id, message.seq, &events, |event| {
                codec::encode_user(&screened.id, event)
            });
            let state = UserDecider::fold(state, &events);
            if let Some(reply_to) = screened.reply_to {
                // The answer filed on the session matters only when events were applied, as
                // in the node.
                let filed = match &command {
                    UserCommand::Player { playlist, .. } => {
                        answers::filed_answer(playlist, &events, &state)
                    }
                    UserCommand::Playout(_) => LastAnswer::default(),
                };
                let decided = match &decision {
                    Ok(events) => Decided::Events(events),
                    Err(error) => Decided::Refused(error),
                };
                let encoded = answers::encode(
                    user_decider,
                    &screened.id,
                    &state,
                    filed,
                    &command,
                    decided,
                    message.at,
                );
                if let Some(encoded) = encoded {
                    let answer = ModelAnswer {
                        inbox_seq: message.seq,
                        user: id.clone(),
                        player: matches!(command, UserCommand::Player { .. }),
                        encoded,
                    };
                    let earlier = model.answers.insert(reply_to.as_str().to_owned(), answer);
                    assert!(
                        earlier.is_none(),
                        "two inbox messages ask for an answer on {}",
                        reply_to.as_str()
                    );
                }
            }
            model.users.insert(id, state);
        }
        model
    }

    fn record<E>(
        &mut self,
        family: EventFamily,
        id: &str,
        inbox_seq: u64,
        events: &[E],
        encode: impl Fn(&E) -> EncodedEvent,
    ) {
        if events.is_empty() {
            return;
        }
        self.journal
            .entry((family, id.to_owned()))
            .or_default()
            .extend(events.iter().map(|event| (inbox_seq, encode(event))));
    }

    /// How many events the journal must hold in all.
    pub fn journal_len(&self) -> usize {
        self.journal.values().map(Vec::len).sum()
    }
}
