//! The user entity: a thin shell around the player decider (one session per playlist). Per
//! slice of commands it skips sequences already applied to a session (answering them again
//! from the stored answer), decides, publishes the events, persists the touched sessions in
//! one batch (which refreshes their sliding TTL), and then publishes each answer to the
//! command's `Playhead-Reply-To`.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::subjects::{EventFamily, ReplySubject};
use playhead_proto::v1;
use prost::Message;
use tracing::Instrument;

use crate::domain::player::{self, PlayerError, PlayerPolicy, Session};
use crate::domain::time::Timestamp;
use crate::events::{self, OutgoingEvent};
use crate::metrics::NodeMetrics;
use crate::sharding::{Entity, EntityError, Envelope, Outcome};
use crate::storage::Storage;
use crate::storage::session_store::{LastAnswer, StoredSession};
use crate::{telemetry, wire};

/// What every user entity shares.
pub struct UserContext {
    pub storage: Storage,
    pub jetstream: jetstream::Context,
    /// Replies go out as core NATS messages.
    pub client: async_nats::Client,
    pub metrics: Arc<NodeMetrics>,
    pub policy: PlayerPolicy,
}

/// A screened user-inbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    /// Where the decision goes, when the publisher asked for it.
    pub reply_to: Option<ReplySubject>,
    pub message: UserMessage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMessage {
    Player {
        playlist: PlaylistId,
        command: player::PlayerCommand,
    },
}

pub struct UserEntity {
    id: UserId,
    /// Sessions read so far (`None`: none stored); loaded on first use, so a user with many
    /// playlists costs memory only for those in play.
    sessions: HashMap<PlaylistId, Option<StoredSession>>,
}

/// A decision to publish once state is persisted.
struct PendingReply {
    subject: ReplySubject,
    reply: v1::PlayerReply,
}

impl Entity for UserEntity {
    type Id = UserId;
    type Command = UserCommand;
    type Context = UserContext;

    const KIND: &'static str = "user";

    fn load(id: UserId, _context: &UserContext) -> Result<Self, EntityError> {
        Ok(Self {
            id,
            sessions: HashMap::new(),
        })
    }

    async fn apply(
        &mut self,
        context: &Arc<UserContext>,
        batch: Vec<Envelope<UserCommand>>,
    ) -> Result<Vec<Outcome>, EntityError> {
        let span = tracing::debug_span!("user.apply", user = %self.id, commands = batch.len());
        telemetry::adopt_context(
            &span,
            batch.first().and_then(|envelope| envelope.headers.as_ref()),
        );
        async {
            // Decided into a copy: on error `self` is left as it was.
            let mut working: HashMap<PlaylistId, Option<StoredSession>> = HashMap::new();
            let mut touched: Vec<PlaylistId> = Vec::new();
            let mut outgoing: Vec<OutgoingEvent> = Vec::new();
            let mut replies: Vec<PendingReply> = Vec::new();
            let mut outcomes = Vec::with_capacity(batch.len());
            for envelope in &batch {
                let UserMessage::Player { playlist, command } = &envelope.command.message;
                if !working.contains_key(playlist) {
                    let current = self.session(context, playlist)?;
                    working.insert(playlist.clone(), current);
                }
                let current = working.get_mut(playlist).expect("inserted above");
                let decision = self.decide_player(
                    &context.policy,
                    playlist,
                    command,
                    current,
                    envelope.seq,
                    envelope.now,
                );
                if let Some(events) = decision.events {
                    if !touched.contains(playlist) {
                        touched.push(playlist.clone());
                    }
                    outgoing.extend(events);
                }
                if let Some(subject) = &envelope.command.reply_to {
                    replies.push(PendingReply {
                        subject: subject.clone(),
                        reply: decision.reply,
                    });
                }
                outcomes.push(decision.outcome);
            }
            if !outgoing.is_empty() {
                events::publish(
                    &context.jetstream,
                    &context.metrics,
                    EventFamily::User,
                    self.id.as_str(),
                    outgoing,
                )
                .await?;
            }
            let to_save: Vec<(&PlaylistId, &StoredSession)> = touched
                .iter()
                .filter_map(|playlist| {
                    working
                        .get(playlist)
                        .and_then(Option::as_ref)
                        .map(|stored| (playlist, stored))
                })
                .collect();
            {
                let _persist = tracing::debug_span!("persist", sessions = to_save.len()).entered();
                context.storage.sessions.save(&self.id, &to_save)?;
            }
            self.sessions.extend(working);
            send_replies(context, replies).await;
            Ok(outcomes)
        }
        .instrument(span)
        .await
    }
}

/// What one command came to.
struct Decision {
    outcome: Outcome,
    /// The events to publish; `Some` when the session changed (and must be saved).
    events: Option<Vec<OutgoingEvent>>,
    reply: v1::PlayerReply,
}

impl UserEntity {
    fn session(
        &self,
        context: &UserContext,
        playlist: &PlaylistId,
    ) -> Result<Option<StoredSession>, EntityError> {
        if let Some(cached) = self.sessions.get(playlist) {
            return Ok(cached.clone());
        }
        Ok(context.storage.sessions.load(&self.id, playlist)?)
    }

    /// Decides one command against `current`, updating it in place.
    fn decide_player(
        &self,
        policy: &PlayerPolicy,
        playlist: &PlaylistId,
        command: &player::PlayerCommand,
        current: &mut Option<StoredSession>,
        seq: u64,
        now: Timestamp,
    ) -> Decision {
        let view =
            |session: Option<&Session>, answer: LastAnswer, detail: String| v1::PlayerReply {
                outcome: answer.outcome,
                session: session
                    .map(|session| wire::player_session(&self.id, playlist, session, policy, now)),
                retry_after_ms: answer.retry_after_ms,
                detail,
            };
        if let Some(stored) = current.as_ref()
            && seq <= stored.last_applied_seq
        {
            // A redelivery: answer again as the first time.
            return Decision {
                outcome: Outcome::Duplicate,
                events: None,
                reply: view(Some(&stored.session), stored.last_answer, String::new()),
            };
        }
        let state = current.as_ref().map(|stored| stored.session.clone());
        match policy.decide(command, &state, now) {
            Ok(events) if events.is_empty() => {
                let answer = wire::player_answer(&[], state.as_ref());
                Decision {
                    outcome: Outcome::Unchanged,
                    events: None,
                    reply: view(state.as_ref(), answer, String::new()),
                }
            }
            Ok(events) => {
                let next = events.iter().fold(state, player::evolve);
                let answer = wire::player_answer(&events, next.as_ref());
                let reply = view(next.as_ref(), answer, String::new());
                let outgoing = events
                    .iter()
                    .map(|event| OutgoingEvent {
                        seq,
                        name: event.name(),
                        payload: wire::player_event_payload(&self.id, playlist, event),
                    })
                    .collect();
                *current = next.map(|session| StoredSession {
                    session,
                    last_applied_seq: seq,
                    last_answer: answer,
                });
                Decision {
                    outcome: Outcome::Applied {
                        events: events.len(),
                    },
                    events: Some(outgoing),
                    reply,
                }
            }
            // Not bad input: the session expired or never started. The caller learns it.
            Err(PlayerError::NoSession) => Decision {
                outcome: Outcome::Unchanged,
                events: None,
                reply: view(
                    None,
                    LastAnswer {
                        outcome: v1::PlayerOutcome::NotFound as i32,
                        retry_after_ms: 0,
                    },
                    PlayerError::NoSession.to_string(),
                ),
            },
            Err(error) => Decision {
                outcome: Outcome::Rejected {
                    reason: error.to_string(),
                },
                events: None,
                reply: view(
                    state
                        .as_ref()
                        .filter(|session| session.is_live(now, policy)),
                    LastAnswer {
                        outcome: v1::PlayerOutcome::Rejected as i32,
                        retry_after_ms: 0,
                    },
                    error.to_string(),
                ),
            },
        }
    }
}

/// Best effort: a publisher that went away does not hold up the partition.
async fn send_replies(context: &UserContext, replies: Vec<PendingReply>) {
    for PendingReply { subject, reply } in replies {
        let mut headers = HeaderMap::new();
        telemetry::inject_context(&mut headers);
        if let Err(error) = context
            .client
            .publish_with_headers(
                subject.as_str().to_owned(),
                headers,
                reply.encode_to_vec().into(),
            )
            .await
        {
            tracing::warn!(subject = subject.as_str(), %error, "cannot publish a reply");
        }
    }
}
