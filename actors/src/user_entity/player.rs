//! The player half of the user entity: one session per playlist.

use playhead_proto::ids::PlaylistId;
use playhead_proto::v1;
use prost::Message;

use super::{Decided, Position, UserContext, UserEntity, Working};
use crate::domain::player::{self, PlayerError, PlayerPolicy, Session};
use crate::domain::time::Timestamp;
use crate::events::OutgoingEvent;
use crate::sharding::{EntityError, Outcome};
use crate::storage::session_store::{LastAnswer, StoredSession};
use crate::wire;

/// What one player command came to.
struct Decision {
    outcome: Outcome,
    /// The events to publish; `Some` when the session changed (and must be saved).
    events: Option<Vec<OutgoingEvent>>,
    reply: v1::PlayerReply,
}

impl UserEntity {
    /// Decides a player command against the batch's copy of its session.
    pub(super) fn player(
        &self,
        context: &UserContext,
        working: &mut Working,
        playlist: PlaylistId,
        command: &player::PlayerCommand,
        at: Position,
    ) -> Result<Decided, EntityError> {
        if !working.sessions.contains_key(&playlist) {
            let current = self.session(context, &playlist)?;
            working.sessions.insert(playlist.clone(), current);
        }
        let current = working.sessions.get_mut(&playlist).expect("inserted above");
        let decision = self.decide_player(
            &context.player_policy,
            &playlist,
            command,
            current,
            at.seq,
            at.now,
        );
        if let Some(events) = decision.events {
            if !working.touched_sessions.contains(&playlist) {
                working.touched_sessions.push(playlist);
            }
            working.outgoing.extend(events);
        }
        Ok(Decided {
            outcome: decision.outcome,
            reply: Some(decision.reply.encode_to_vec()),
        })
    }

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
