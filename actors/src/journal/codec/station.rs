//! Station events (`playhead.events.station.{station_id}.*`): `SongStarted`, `SongEnded`, both
//! version 1 (the messages published since the first release already carried every field).

use playhead_proto::ids::StationId;
use playhead_proto::v1;

use super::{
    CodecError, EncodedEvent, InvalidPayload, decode_v1, read_time, same_entity, time, version_1,
};
use crate::domain::station::{Song, StationEvent};
use crate::domain::time::Timestamp;

// The names `StationEvent::name` gives, `'static` for errors (the `name` argument is borrowed).
const SONG_STARTED: &str = "SongStarted";
const SONG_ENDED: &str = "SongEnded";

pub fn encode_station(station: &StationId, event: &StationEvent) -> EncodedEvent {
    let station_id = station.to_string();
    match event {
        StationEvent::SongStarted {
            play_seq,
            song: started,
            started_at,
        } => version_1(
            event.name(),
            v1::SongStarted {
                station_id,
                play_seq: *play_seq,
                song: Some(song(started)),
                started_at: time(*started_at),
            },
        ),
        StationEvent::SongEnded {
            play_seq,
            song: ended,
            started_at,
            ended_at,
        } => version_1(
            event.name(),
            v1::SongEnded {
                station_id,
                play_seq: *play_seq,
                song: Some(song(ended)),
                started_at: time(*started_at),
                ended_at: time(*ended_at),
            },
        ),
    }
}

/// `stored_at` is unused: no station event has an older version to upcast.
pub fn decode_station(
    station: &StationId,
    name: &str,
    version: u32,
    payload: &[u8],
    _stored_at: Timestamp,
) -> Result<StationEvent, CodecError> {
    let own = station.as_str();
    match name {
        SONG_STARTED => decode_v1(SONG_STARTED, version, payload, |m: v1::SongStarted| {
            same_entity("station_id", own, m.station_id)?;
            Ok(StationEvent::SongStarted {
                play_seq: m.play_seq,
                song: read_song(m.song)?,
                started_at: read_time("started_at", m.started_at)?,
            })
        }),
        SONG_ENDED => decode_v1(SONG_ENDED, version, payload, |m: v1::SongEnded| {
            same_entity("station_id", own, m.station_id)?;
            Ok(StationEvent::SongEnded {
                play_seq: m.play_seq,
                song: read_song(m.song)?,
                started_at: read_time("started_at", m.started_at)?,
                ended_at: read_time("ended_at", m.ended_at)?,
            })
        }),
        _ => Err(CodecError::UnknownEvent {
            family: "station",
            name: name.to_owned(),
        }),
    }
}

fn song(song: &Song) -> v1::Song {
    v1::Song {
        artist: song.artist.clone(),
        title: song.title.clone(),
    }
}

/// The song is required: an empty `Song` message (both fields empty) is still present.
fn read_song(song: Option<v1::Song>) -> Result<Song, InvalidPayload> {
    let song = song.ok_or(InvalidPayload::Missing { field: "song" })?;
    Ok(Song {
        artist: song.artist,
        title: song.title,
    })
}
