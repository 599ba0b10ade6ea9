//! PLACEHOLDER until the codec branch lands: the API the rest of the node compiles against.

use playhead_proto::ids::{ContentId, StationId, UserId};

use crate::domain::catalog::CatalogEvent;
use crate::domain::station::StationEvent;
use crate::domain::time::Timestamp;
use crate::domain::user::UserEvent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub name: &'static str,
    pub version: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event {name}")]
    UnknownEvent { name: String },
}

pub fn encode_station(_station: &StationId, _event: &StationEvent) -> EncodedEvent {
    todo!("codec branch")
}
pub fn decode_station(
    _station: &StationId,
    _name: &str,
    _version: u32,
    _payload: &[u8],
    _stored_at: Timestamp,
) -> Result<StationEvent, CodecError> {
    todo!("codec branch")
}
pub fn encode_user(_user: &UserId, _event: &UserEvent) -> EncodedEvent {
    todo!("codec branch")
}
pub fn decode_user(
    _user: &UserId,
    _name: &str,
    _version: u32,
    _payload: &[u8],
    _stored_at: Timestamp,
) -> Result<UserEvent, CodecError> {
    todo!("codec branch")
}
pub fn encode_content(_content: &ContentId, _event: &CatalogEvent) -> EncodedEvent {
    todo!("codec branch")
}
pub fn decode_content(
    _content: &ContentId,
    _name: &str,
    _version: u32,
    _payload: &[u8],
    _stored_at: Timestamp,
) -> Result<CatalogEvent, CodecError> {
    todo!("codec branch")
}
