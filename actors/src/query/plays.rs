//! `list_plays`: a station's plays, newest first, paged with `before` / `since` cursors.

use playhead_proto::ids::StationId;
use playhead_proto::v1;

use super::{QueryError, decode_request, page_size};
use crate::storage::Storage;
use crate::storage::station_store::PlaysQuery;
use crate::wire;

/// Validates a page request; shared with the gateway so both edges agree.
pub fn plays_query(request: &v1::ListPlaysRequest) -> Result<(StationId, PlaysQuery), QueryError> {
    let station = StationId::parse(request.station_id.clone())?;
    Ok((
        station,
        PlaysQuery {
            page_size: page_size(request.page_size)?,
            before: request.before,
            since: request.since,
        },
    ))
}

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
        plays: page.plays.into_iter().map(wire::play).collect(),
        next_before: page.next_before,
        next_since: page.next_since,
    })
}
