//! Station events (`playhead.events.station.{station_id}.*`): `SongStarted`, `SongEnded` and
//! `SongEnriched`, all version 1. `SongEnded` gained an optional `enrichment` field with
//! enrichment; an older event without it decodes as a play that had none, which it was.

use playhead_proto::ids::StationId;
use playhead_proto::v1;

use super::{
    CodecError, EncodedEvent, InvalidPayload, decode_v1, read_time, same_entity, time, version_1,
};
use crate::domain::enrichment::Enrichment;
use crate::domain::station::{Song, StationEvent};
use crate::domain::time::Timestamp;
use crate::wire;

// The names `StationEvent::name` gives, `'static` for errors (the `name` argument is borrowed).
const SONG_STARTED: &str = "SongStarted";
const SONG_ENDED: &str = "SongEnded";
const SONG_ENRICHED: &str = "SongEnriched";

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
            enrichment,
        } => version_1(
            event.name(),
            v1::SongEnded {
                station_id,
                play_seq: *play_seq,
                song: Some(song(ended)),
                started_at: time(*started_at),
                ended_at: time(*ended_at),
                enrichment: enrichment.as_ref().map(wire::song_enrichment),
            },
        ),
        StationEvent::SongEnriched {
            play_seq,
            enrichment,
        } => version_1(
            event.name(),
            v1::SongEnriched {
                station_id,
                play_seq: *play_seq,
                enrichment: Some(wire::song_enrichment(enrichment)),
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
                enrichment: m.enrichment.map(read_enrichment).transpose()?,
            })
        }),
        SONG_ENRICHED => decode_v1(SONG_ENRICHED, version, payload, |m: v1::SongEnriched| {
            same_entity("station_id", own, m.station_id)?;
            let enrichment = m.enrichment.ok_or(InvalidPayload::Missing {
                field: "enrichment",
            })?;
            Ok(StationEvent::SongEnriched {
                play_seq: m.play_seq,
                enrichment: read_enrichment(enrichment)?,
            })
        }),
        _ => Err(CodecError::UnknownEvent {
            family: "station",
            name: name.to_owned(),
        }),
    }
}

/// An enrichment as recorded; `enriched_at` is required.
pub fn read_enrichment(m: v1::SongEnrichment) -> Result<Enrichment, InvalidPayload> {
    Ok(Enrichment {
        enriched_at: read_time("enrichment.enriched_at", m.enriched_at)?,
        recording_mbid: m.recording_mbid,
        title: m.title,
        artist: m.artist,
        artist_mbid: m.artist_mbid,
        release_mbid: m.release_mbid,
        release_title: m.release_title,
        release_year: m.release_year,
        cover_url: m.cover_url,
    })
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
