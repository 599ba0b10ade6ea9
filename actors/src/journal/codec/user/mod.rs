//! User events (`playhead.events.user.{user_id}.*`): the player events of each playlist
//! session ([`player`]) and the playout events ([`playout`]), behind one journal per user as
//! the user entity has one inbox.

use playhead_proto::ids::UserId;

use super::{CodecError, EncodedEvent};
use crate::domain::time::Timestamp;
use crate::domain::user::UserEvent;

mod player;
mod playout;

pub use playout::PLAYOUT_STARTED_VERSION;

pub fn encode_user(user: &UserId, event: &UserEvent) -> EncodedEvent {
    match event {
        UserEvent::Player { playlist, event } => player::encode(user, playlist, event),
        UserEvent::Playout(event) => playout::encode(user, event),
    }
}

/// `stored_at` is the broker's stored time of the journal message: the upcast of a version-1
/// `PlayoutStarted` takes its `at` from it (version 1 recorded no time).
pub fn decode_user(
    user: &UserId,
    name: &str,
    version: u32,
    payload: &[u8],
    stored_at: Timestamp,
) -> Result<UserEvent, CodecError> {
    let own = user.as_str();
    if let Some(decoded) = player::decode(own, name, version, payload) {
        return decoded.map(|(playlist, event)| UserEvent::Player { playlist, event });
    }
    if let Some(decoded) = playout::decode(own, name, version, payload, stored_at) {
        return decoded.map(UserEvent::Playout);
    }
    Err(CodecError::UnknownEvent {
        family: "user",
        name: name.to_owned(),
    })
}
