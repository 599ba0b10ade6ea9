//! Mapping between domain types and `playhead.v1` wire messages, in one place.

use playhead_proto::ids::StationId;
use playhead_proto::v1;

use crate::domain::station::{ObserveSong, Song, StationCommand, StationEvent, StationState};
use crate::domain::time::Timestamp;
use crate::storage::station_store::PlayRecord;

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let millis = at.as_millis();
    prost_types::Timestamp {
        seconds: (millis / 1000) as i64,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_millis(at: &prost_types::Timestamp) -> u64 {
    (at.seconds.max(0) as u64) * 1000 + (at.nanos.max(0) as u64) / 1_000_000
}

fn song(song: &Song) -> v1::Song {
    v1::Song {
        artist: song.artist.clone(),
        title: song.title.clone(),
    }
}

pub fn observe_command(observed: v1::SongObserved) -> StationCommand {
    StationCommand::ObserveSong(ObserveSong {
        artist: observed.artist,
        title: observed.title,
        raw: observed.raw,
    })
}

/// The protobuf payload of a station event.
pub fn station_event_payload(station: &StationId, event: &StationEvent) -> Vec<u8> {
    use prost::Message;
    match event {
        StationEvent::SongStarted {
            play_seq,
            song: started,
            started_at,
        } => v1::SongStarted {
            station_id: station.to_string(),
            play_seq: *play_seq,
            song: Some(song(started)),
            started_at: Some(timestamp(*started_at)),
        }
        .encode_to_vec(),
        StationEvent::SongEnded {
            play_seq,
            song: ended,
            started_at,
            ended_at,
        } => v1::SongEnded {
            station_id: station.to_string(),
            play_seq: *play_seq,
            song: Some(song(ended)),
            started_at: Some(timestamp(*started_at)),
            ended_at: Some(timestamp(*ended_at)),
        }
        .encode_to_vec(),
    }
}

/// The now-playing projection of a station state (None before its first song).
pub fn now_playing(station: &StationId, state: &StationState) -> Option<v1::NowPlaying> {
    let current = state.current.as_ref()?;
    Some(v1::NowPlaying {
        station_id: station.to_string(),
        play_seq: current.play_seq,
        song: Some(song(&current.song)),
        started_at: Some(timestamp(current.started_at)),
    })
}

pub fn play(record: PlayRecord) -> v1::Play {
    v1::Play {
        play_seq: record.play_seq,
        song: Some(v1::Song {
            artist: record.artist,
            title: record.title,
        }),
        started_at: Some(timestamp(Timestamp::from_millis(record.started_at_ms))),
        ended_at: record
            .ended_at_ms
            .map(|millis| timestamp(Timestamp::from_millis(millis))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let at = Timestamp::from_millis(1_763_000_123_456);
        assert_eq!(timestamp_millis(&timestamp(at)), at.as_millis());
    }
}
