//! The journal's codec: every domain event ↔ a versioned `playhead.v1` payload.
//!
//! The journal is the source of truth (state = fold of its events), so the codec is lossless:
//! `decode(encode(e)) == e` for every event and every value. Each stored event is named by its
//! subject's last token (the domain `name()`), its schema version and the payload; the caller
//! stores the version next to the payload and hands it back with the message's stored time.
//!
//! Old versions stay readable forever: a decoder that meets an older version *upcasts* it to
//! the current domain event, filling what the old schema did not record with documented
//! defaults. Today only `PlayoutStarted` has two versions (see `user`); every other event is
//! version 1.
//!
//! Decoding trusts nothing: ids are parsed into their newtypes, a payload naming another
//! entity than the journal entry's is refused, timestamps are range-checked, and no input
//! panics (a property test feeds it arbitrary bytes).
//!
//! - `station`, `user`, `content`: one module per entity family.

use std::time::Duration;

use playhead_proto::ids::IdError;
use prost::Message;

use crate::domain::time::Timestamp;
use crate::wire;

mod content;
mod station;
mod user;

pub use content::{decode_content, encode_content};
pub use station::{decode_station, encode_station, read_enrichment};
pub use user::{PLAYOUT_STARTED_VERSION, decode_user, encode_user};

#[cfg(test)]
mod tests;

/// One event as the journal stores it: the last subject token, its schema version, the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub name: &'static str,
    pub version: u32,
    pub payload: Vec<u8>,
}

/// Why a stored event could not be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the {family} family has no event named {name:?}")]
    UnknownEvent { family: &'static str, name: String },
    #[error("{name} has no schema version {version}")]
    UnsupportedVersion { name: &'static str, version: u32 },
    #[error("the {name} payload is not a protobuf message of its type")]
    Undecodable {
        name: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the {name} payload decodes but does not describe a valid event")]
    Invalid {
        name: &'static str,
        #[source]
        detail: InvalidPayload,
    },
}

/// What is wrong inside a payload that decodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPayload {
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("{field} is {found:?}, but the journal entry belongs to {expected:?}")]
    OtherEntity {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("{field} ({seconds} s, {nanos} ns) is not a millisecond time after the Unix epoch")]
    Time {
        field: &'static str,
        seconds: i64,
        nanos: i32,
    },
    #[error("{field} has no meaning for the value {value}")]
    Enum { field: &'static str, value: i32 },
    #[error("track_count is {count}, but {listed} tracks are listed")]
    TrackCount { count: u32, listed: usize },
}

/// Decodes a version-1 payload (the only version of most events) and reads it with `read`.
fn decode_v1<M, E>(
    name: &'static str,
    version: u32,
    payload: &[u8],
    read: impl FnOnce(M) -> Result<E, InvalidPayload>,
) -> Result<E, CodecError>
where
    M: Message + Default,
{
    if version != 1 {
        return Err(CodecError::UnsupportedVersion { name, version });
    }
    read_message(name, payload, read)
}

/// Decodes `payload` as `M` and reads it with `read`, naming `name` in any error.
fn read_message<M, E>(
    name: &'static str,
    payload: &[u8],
    read: impl FnOnce(M) -> Result<E, InvalidPayload>,
) -> Result<E, CodecError>
where
    M: Message + Default,
{
    let message = M::decode(payload).map_err(|source| CodecError::Undecodable { name, source })?;
    read(message).map_err(|detail| CodecError::Invalid { name, detail })
}

fn version_1(name: &'static str, message: impl Message) -> EncodedEvent {
    EncodedEvent {
        name,
        version: 1,
        payload: message.encode_to_vec(),
    }
}

/// Checks that the payload's entity id (`field`) is the journal entry's own.
fn same_entity(field: &'static str, expected: &str, found: String) -> Result<(), InvalidPayload> {
    playhead_proto::ids::validate(field, &found)?;
    if found != expected {
        return Err(InvalidPayload::OtherEntity {
            field,
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(())
}

fn time(at: Timestamp) -> Option<prost_types::Timestamp> {
    Some(wire::timestamp(at))
}

/// A required timestamp; anything a `u64` of milliseconds cannot hold is invalid (the range
/// check keeps `wire::timestamp_millis` from overflowing on foreign input).
fn read_time(
    field: &'static str,
    at: Option<prost_types::Timestamp>,
) -> Result<Timestamp, InvalidPayload> {
    let at = at.ok_or(InvalidPayload::Missing { field })?;
    let fits = at.seconds >= 0
        && (0..1_000_000_000).contains(&at.nanos)
        && (at.seconds as u64)
            .checked_mul(1000)
            .and_then(|millis| millis.checked_add(at.nanos as u64 / 1_000_000))
            .is_some();
    if !fits {
        return Err(InvalidPayload::Time {
            field,
            seconds: at.seconds,
            nanos: at.nanos,
        });
    }
    Ok(Timestamp::from_millis(wire::timestamp_millis(&at)))
}

/// Durations are whole milliseconds in the domain (they come from millisecond timestamps and
/// configured intervals), so `_ms` loses nothing.
fn millis(duration: Duration) -> u64 {
    wire::duration_millis(duration)
}
