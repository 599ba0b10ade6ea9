//! The user entity's decider: one listener's player sessions (one per playlist, the player
//! decider) and playouts (the playout decider), behind one inbox so a user's commands stay in
//! order across kinds.
//!
//! The state may be *partial*: the entity holds only the sessions it has loaded, so a user with
//! hundreds of playlists costs memory for those in play. `decide` reads only the session its
//! command names, and the caller loads that session before deciding; `evolve` touches only the
//! session its event names.

use std::collections::BTreeMap;

use playhead_proto::ids::PlaylistId;

use super::decider::Decider;
use super::player::{PlayerCommand, PlayerError, PlayerEvent, PlayerPolicy, PlayerState};
use super::playout::{PlayoutCommand, PlayoutError, PlayoutEvent, PlayoutPolicy, PlayoutState};
use super::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserDecider {
    pub player: PlayerPolicy,
    pub playout: PlayoutPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Player {
        playlist: PlaylistId,
        command: PlayerCommand,
    },
    /// A heartbeat (its content's tags looked up by the caller) or an entitlements update.
    Playout(PlayoutCommand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    Player {
        playlist: PlaylistId,
        event: PlayerEvent,
    },
    Playout(PlayoutEvent),
}

impl UserEvent {
    /// The event name used in subjects.
    pub fn name(&self) -> &'static str {
        match self {
            UserEvent::Player { event, .. } => event.name(),
            UserEvent::Playout(event) => event.name(),
        }
    }

    /// The player events among `events` that concern `playlist`'s session, in order.
    pub fn player_events_of(events: &[UserEvent], playlist: &PlaylistId) -> Vec<PlayerEvent> {
        events
            .iter()
            .filter_map(|event| match event {
                UserEvent::Player {
                    playlist: named,
                    event,
                } if named == playlist => Some(event.clone()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Player(#[from] PlayerError),
    #[error(transparent)]
    Playout(#[from] PlayoutError),
}

/// The sessions loaded so far (`None`: loaded, and there is none) and the playout state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserState {
    pub sessions: BTreeMap<PlaylistId, PlayerState>,
    pub playouts: PlayoutState,
}

const NO_SESSION: &PlayerState = &None;

impl UserState {
    /// The session of `playlist` (none when it was never started or not loaded).
    pub fn session(&self, playlist: &PlaylistId) -> &PlayerState {
        self.sessions.get(playlist).unwrap_or(NO_SESSION)
    }
}

impl Decider for UserDecider {
    type Command = UserCommand;
    type Event = UserEvent;
    type State = UserState;
    type Error = UserError;

    fn initial() -> UserState {
        UserState::default()
    }

    fn decide(
        &self,
        command: &UserCommand,
        state: &UserState,
        now: Timestamp,
    ) -> Result<Vec<UserEvent>, UserError> {
        match command {
            UserCommand::Player { playlist, command } => Ok(self
                .player
                .decide(command, state.session(playlist), now)?
                .into_iter()
                .map(|event| UserEvent::Player {
                    playlist: playlist.clone(),
                    event,
                })
                .collect()),
            UserCommand::Playout(command) => Ok(self
                .playout
                .decide(command, &state.playouts, now)?
                .into_iter()
                .map(UserEvent::Playout)
                .collect()),
        }
    }

    fn evolve(mut state: UserState, event: &UserEvent) -> UserState {
        match event {
            UserEvent::Player { playlist, event } => {
                let session = state.sessions.remove(playlist).flatten();
                let next = <PlayerPolicy as Decider>::evolve(session, event);
                state.sessions.insert(playlist.clone(), next);
            }
            UserEvent::Playout(event) => {
                let playouts = std::mem::take(&mut state.playouts);
                state.playouts = <PlayoutPolicy as Decider>::evolve(playouts, event);
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use playhead_proto::ids::{ContentId, DeviceId, PlayoutId, Tag, UserId};

    use super::*;
    use crate::domain::decider::Given;
    use crate::domain::player::{StartPlaylist, Track};
    use crate::domain::playout::{Heartbeat, HeartbeatKind};

    fn playlist(name: &str) -> PlaylistId {
        PlaylistId::parse(name).unwrap()
    }

    fn start(name: &str) -> UserCommand {
        UserCommand::Player {
            playlist: playlist(name),
            command: PlayerCommand::Start(StartPlaylist {
                user_id: UserId::parse("ann").unwrap(),
                playlist_id: playlist(name),
                tracks: (0..3)
                    .map(|n| Track {
                        track_id: format!("t{n}"),
                        artist: "A".into(),
                    })
                    .collect(),
                seed: Some(1),
                restart: false,
                other_sessions: None,
            }),
        }
    }

    fn next(name: &str) -> UserCommand {
        UserCommand::Player {
            playlist: playlist(name),
            command: PlayerCommand::Next,
        }
    }

    #[test]
    fn player_commands_decide_against_their_own_playlist_only() {
        let decider = UserDecider::default();
        let state = Given::new(&decider, &[])
            .when(start("road-trip"), Timestamp(10))
            .decision();
        let events = state.1.unwrap();
        let state = UserDecider::fold(state.0, &events);
        // The other playlist has no session: its Next is refused as such.
        Given::state(&decider, state.clone())
            .when(next("gym"), Timestamp(20))
            .then_refused(UserError::Player(PlayerError::NoSession));
        let (_, advanced) = Given::state(&decider, state)
            .when(next("road-trip"), Timestamp(20))
            .decision();
        assert!(matches!(
            advanced.unwrap().as_slice(),
            [UserEvent::Player { playlist: p, event: PlayerEvent::TrackAdvanced { .. } }] if p.as_str() == "road-trip"
        ));
    }

    #[test]
    fn playout_commands_go_to_the_playout_decider() {
        let decider = UserDecider::default();
        let heartbeat = PlayoutCommand::Heartbeat(Heartbeat {
            device_id: DeviceId::parse("tv").unwrap(),
            playout_id: PlayoutId::parse("p1").unwrap(),
            content_id: ContentId::parse("film").unwrap(),
            content_tags: Some(BTreeSet::from([Tag::parse("free").unwrap()])),
            kind: HeartbeatKind::Start,
            position_ms: 0,
        });
        let alone = decider
            .playout
            .decide(&heartbeat, &PlayoutState::default(), Timestamp(5))
            .unwrap();
        let state = Given::new(&decider, &[])
            .when(UserCommand::Playout(heartbeat), Timestamp(5))
            .then(alone.iter().cloned().map(UserEvent::Playout).collect());
        assert_eq!(
            state.playouts,
            alone
                .iter()
                .fold(PlayoutState::default(), crate::domain::playout::evolve)
        );
        assert!(state.sessions.is_empty());
    }
}
