//! The answers a user sends back, as pure functions of the state, so that a model of the
//! inboxes computes the very bytes the node publishes: a player command gets a `PlayerReply`,
//! a heartbeat a `HeartbeatDecision`, an entitlements update nothing.

use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::v1;
use prost::Message;

use crate::domain::player::{PlayerError, PlayerEvent, Session, SessionStatus};
use crate::domain::playout::{self, PlayoutCommand};
use crate::domain::time::Timestamp;
use crate::domain::user::{UserCommand, UserDecider, UserError, UserEvent, UserState};
use crate::runtime::Decided;
use crate::storage::session_store::LastAnswer;
use crate::wire;

/// The answer filed on `playlist`'s session once a decision's `events` are folded into
/// `state` (what a redelivered player command is answered with).
pub fn filed_answer(playlist: &PlaylistId, events: &[UserEvent], state: &UserState) -> LastAnswer {
    let player_events = UserEvent::player_events_of(events, playlist);
    player_answer(&player_events, state.session(playlist).as_ref())
}

/// The encoded answer to `command`, decided as `decided`, with `state` the user's state after
/// it and `filed` the answer filed on the command's session (player commands only); `None`
/// for a command that answers nothing.
pub fn encode(
    decider: &UserDecider,
    id: &UserId,
    state: &UserState,
    filed: LastAnswer,
    command: &UserCommand,
    decided: Decided<'_, UserEvent, UserError>,
    now: Timestamp,
) -> Option<Vec<u8>> {
    match command {
        UserCommand::Player { playlist, .. } => {
            let policy = &decider.player;
            let session = state.session(playlist).as_ref();
            let view =
                |session: Option<&Session>, answer: LastAnswer, detail: String| v1::PlayerReply {
                    outcome: answer.outcome,
                    session: session
                        .map(|session| wire::player_session(id, playlist, session, policy, now)),
                    retry_after_ms: answer.retry_after_ms,
                    detail,
                };
            let reply = match decided {
                // A no-op changes nothing: answer for the session as it is.
                Decided::Events([]) => view(session, player_answer(&[], session), String::new()),
                Decided::Events(_) | Decided::Duplicate => view(session, filed, String::new()),
                Decided::Refused(UserError::Player(PlayerError::NoSession)) => view(
                    None,
                    LastAnswer {
                        outcome: v1::PlayerOutcome::NotFound as i32,
                        retry_after_ms: 0,
                    },
                    PlayerError::NoSession.to_string(),
                ),
                Decided::Refused(
                    error @ UserError::Player(PlayerError::TooManySessions { .. }),
                ) => view(
                    None,
                    LastAnswer {
                        outcome: v1::PlayerOutcome::SessionLimit as i32,
                        retry_after_ms: 0,
                    },
                    error.to_string(),
                ),
                Decided::Refused(error) => view(
                    session.filter(|session| session.is_live(now, policy)),
                    LastAnswer {
                        outcome: v1::PlayerOutcome::Rejected as i32,
                        retry_after_ms: 0,
                    },
                    error.to_string(),
                ),
            };
            Some(reply.encode_to_vec())
        }
        UserCommand::Playout(PlayoutCommand::Heartbeat(heartbeat)) => {
            let decision = match decided {
                Decided::Events(events) => {
                    let playout_events: Vec<_> = events
                        .iter()
                        .filter_map(|event| match event {
                            UserEvent::Playout(event) => Some(event.clone()),
                            UserEvent::Player { .. } => None,
                        })
                        .collect();
                    playout::decision(&playout_events)
                }
                Decided::Duplicate => state.playouts.last_decision(&heartbeat.playout_id),
                Decided::Refused(_) => None,
            };
            // Nothing to report (no longer filed, or refused): fail open, as the gateway
            // would.
            let answer = decision
                .map(wire::heartbeat_decision)
                .unwrap_or_else(|| wire::degraded_decision(decider.playout.heartbeat_interval));
            Some(answer.encode_to_vec())
        }
        UserCommand::Playout(PlayoutCommand::UpdateEntitlements(_)) => None,
    }
}

/// The answer to a command that produced `events` and left the session as `session`.
pub fn player_answer(events: &[PlayerEvent], session: Option<&Session>) -> LastAnswer {
    let denied = events.iter().find_map(|event| match event {
        PlayerEvent::SkipDenied { retry_after, .. } => Some(*retry_after),
        _ => None,
    });
    if let Some(retry_after) = denied {
        return LastAnswer {
            outcome: v1::PlayerOutcome::SkipLimited as i32,
            retry_after_ms: retry_after.as_millis().try_into().unwrap_or(u64::MAX),
        };
    }
    let completed = session.is_some_and(|session| session.status == SessionStatus::Completed);
    LastAnswer {
        outcome: if completed {
            v1::PlayerOutcome::Completed
        } else {
            v1::PlayerOutcome::Ok
        } as i32,
        retry_after_ms: 0,
    }
}
