//! `list_plays`: a station's plays, newest first, paged with `before` / `since` cursors.

use playhead_proto::v1;

use playhead_client::query::plays_query;

use super::{QueryError, decode_request};
use crate::domain::time::Timestamp;
use crate::storage::Storage;
use crate::storage::station_store::PlayRecord;
use crate::wire;

pub(super) fn list_plays(
    storage: &Storage,
    payload: &[u8],
) -> Result<v1::ListPlaysResponse, QueryError> {
    let request = decode_request::<v1::ListPlaysRequest>(payload)?;
    let (station, query) = plays_query(&request)?;
    let stored = storage.stations.load(&station)?;
    if stored.state.last_play_seq == 0 {
        return Err(QueryError::NotFound(format!(
            "station {station} has no plays"
        )));
    }
    let page = storage.stations.list_plays(&station, query)?;
    Ok(v1::ListPlaysResponse {
        plays: page.plays.into_iter().map(play).collect(),
        next_before: page.next_before,
        next_since: page.next_since,
    })
}

fn play(record: PlayRecord) -> v1::Play {
    v1::Play {
        play_seq: record.play_seq,
        song: Some(v1::Song {
            artist: record.artist,
            title: record.title,
        }),
        started_at: Some(wire::timestamp(Timestamp::from_millis(
            record.started_at_ms,
        ))),
        ended_at: record
            .ended_at_ms
            .map(|millis| wire::timestamp(Timestamp::from_millis(millis))),
        enrichment: record.enrichment,
    }
}
