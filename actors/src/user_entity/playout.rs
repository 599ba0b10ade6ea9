//! The playout half of the user entity: heartbeats and entitlement updates decided against
//! the user's one playout record; bookmarks go to the viewing history.

use playhead_proto::v1;
use prost::Message;

use super::{Decided, Position, UserContext, UserEntity, Working};
use crate::domain::playout::{self, Heartbeat, PlayoutCommand, PlayoutEvent, UpdateEntitlements};
use crate::events::OutgoingEvent;
use crate::sharding::{EntityError, Outcome};
use crate::storage::playout_store::StoredPlayouts;
use crate::wire;

impl UserEntity {
    /// Decides a heartbeat; the content's tags come from the catalog as it is now.
    pub(super) fn heartbeat(
        &self,
        context: &UserContext,
        working: &mut Working,
        mut heartbeat: Heartbeat,
        at: Position,
    ) -> Result<Decided, EntityError> {
        let stored = self.working_playouts(context, working)?;
        if at.seq <= stored.last_applied_seq {
            // A redelivery: the answer filed for the playout, if it is still kept (the newest
            // few are); else fail open as the gateway would.
            let answer = stored
                .state
                .last_decision(&heartbeat.playout_id)
                .map(wire::heartbeat_decision)
                .unwrap_or_else(|| {
                    wire::degraded_decision(context.playout_policy.heartbeat_interval)
                });
            return Ok(Decided {
                outcome: Outcome::Duplicate,
                reply: Some(answer.encode_to_vec()),
            });
        }
        heartbeat.content_tags = context.storage.catalog.tags_of(&heartbeat.content_id)?;
        let decided = self.decide(context, working, &PlayoutCommand::Heartbeat(heartbeat), at);
        let reply = decided
            .answer
            .unwrap_or_else(|| wire::degraded_decision(context.playout_policy.heartbeat_interval));
        Ok(Decided {
            outcome: decided.outcome,
            reply: Some(reply.encode_to_vec()),
        })
    }

    pub(super) fn entitlements(
        &self,
        context: &UserContext,
        working: &mut Working,
        update: UpdateEntitlements,
        at: Position,
    ) -> Result<Decided, EntityError> {
        let stored = self.working_playouts(context, working)?;
        if at.seq <= stored.last_applied_seq {
            return Ok(Decided {
                outcome: Outcome::Duplicate,
                reply: None,
            });
        }
        let decided = self.decide(
            context,
            working,
            &PlayoutCommand::UpdateEntitlements(update),
            at,
        );
        Ok(Decided {
            outcome: decided.outcome,
            reply: None,
        })
    }

    /// The batch's copy of the playout record, read on first use.
    fn working_playouts<'w>(
        &self,
        context: &UserContext,
        working: &'w mut Working,
    ) -> Result<&'w mut StoredPlayouts, EntityError> {
        if working.playouts.is_none() {
            working.playouts = Some(match &self.playouts {
                Some(cached) => cached.clone(),
                None => context.storage.playouts.load(&self.id)?,
            });
        }
        Ok(working.playouts.as_mut().expect("set above"))
    }

    /// Decides `command` against the working record and folds its events in.
    fn decide(
        &self,
        context: &UserContext,
        working: &mut Working,
        command: &PlayoutCommand,
        at: Position,
    ) -> PlayoutDecision {
        let stored = working.playouts.as_mut().expect("loaded by the caller");
        let events = match context
            .playout_policy
            .decide(command, &stored.state, at.now)
        {
            Ok(events) => events,
            Err(error) => {
                return PlayoutDecision {
                    outcome: Outcome::Rejected {
                        reason: error.to_string(),
                    },
                    answer: None,
                };
            }
        };
        let state = std::mem::take(&mut stored.state);
        stored.state = events.iter().fold(state, playout::evolve);
        stored.last_applied_seq = at.seq;
        working.playouts_touched = true;
        working
            .bookmarks
            .extend(events.iter().filter_map(PlayoutEvent::bookmark));
        working.outgoing.extend(events.iter().filter_map(|event| {
            wire::playout_event_payload(&self.id, event).map(|payload| OutgoingEvent {
                seq: at.seq,
                name: event.name(),
                payload,
            })
        }));
        PlayoutDecision {
            outcome: Outcome::Applied {
                events: events.len(),
            },
            answer: playout::decision(&events).map(wire::heartbeat_decision),
        }
    }
}

struct PlayoutDecision {
    outcome: Outcome,
    /// The answer to a heartbeat; `None` for an update, or a refused command.
    answer: Option<v1::HeartbeatDecision>,
}
