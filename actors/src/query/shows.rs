//! `get_import` (an import's status and its first line errors) and `list_shows` (upcoming shows
//! of an artist, of the artists recently played on a station, or of the artists of a listener's
//! live sessions; in start order, cursor-paged).

use std::collections::HashSet;

use playhead_client::query::{ShowsSelector, import_query, shows_query};
use playhead_proto::ids::{StationId, UserId};
use playhead_proto::v1;

use super::{QueryContext, QueryError, decode_request};
use crate::domain::show::artist_key;
use crate::domain::time::Timestamp;
use crate::runtime::imports::status_of;
use crate::storage::show_store::{ShowCursor, ShowValue};
use crate::storage::station_store::PlaysQuery;

/// Plays read per page while gathering a station's artists.
const PLAYS_PER_PAGE: usize = 100;

pub(super) fn get_import(
    context: &QueryContext,
    payload: &[u8],
) -> Result<v1::ImportStatus, QueryError> {
    let import = import_query(&decode_request::<v1::GetImportRequest>(payload)?)?;
    let imports = &context.storage.imports;
    let record = imports
        .load(import.as_str())?
        .ok_or_else(|| QueryError::NotFound(format!("no import {import}")))?;
    let errors = imports.errors(import.as_str())?;
    Ok(status_of(&record, errors))
}

pub(super) fn list_shows(
    context: &QueryContext,
    payload: &[u8],
    now: Timestamp,
) -> Result<v1::ListShowsResponse, QueryError> {
    let query = shows_query(&decode_request::<v1::ListShowsRequest>(payload)?)?;
    let after = match &query.page_token {
        None => None,
        Some(token) => Some(ShowCursor::parse(token).ok_or_else(|| {
            QueryError::InvalidArgument("page_token is not one this service gave".to_owned())
        })?),
    };
    let from_ms = query
        .from
        .map_or(0, Timestamp::as_millis)
        .max(now.as_millis());
    let limit = context.max_artists_per_query;
    let artists = match &query.selector {
        ShowsSelector::Artist(artist) => vec![artist_key(artist)],
        ShowsSelector::Station(station) => station_artists(context, station, limit)?,
        ShowsSelector::User(user) => listener_artists(context, user, now, limit)?,
    };
    let page = context
        .storage
        .shows
        .list(&artists, from_ms, after, query.page_size)?;
    Ok(v1::ListShowsResponse {
        shows: page.shows.into_iter().map(show).collect(),
        next_page_token: page.next.map(|cursor| cursor.token()).unwrap_or_default(),
        artists,
    })
}

/// The artists played on the station within its retained history, most recent first.
fn station_artists(
    context: &QueryContext,
    station: &StationId,
    limit: usize,
) -> Result<Vec<String>, QueryError> {
    let mut artists = Vec::new();
    let mut seen = HashSet::new();
    let mut before = None;
    loop {
        let page = context.storage.stations.list_plays(
            station,
            PlaysQuery {
                page_size: PLAYS_PER_PAGE,
                before,
                since: None,
            },
        )?;
        for play in &page.plays {
            let key = artist_key(&play.artist);
            if !key.is_empty() && seen.insert(key.clone()) {
                artists.push(key);
                if artists.len() >= limit {
                    return Ok(artists);
                }
            }
        }
        match page.next_before {
            Some(next) => before = Some(next),
            None => return Ok(artists),
        }
    }
}

/// The artists of the tracks in the listener's live sessions, the most recently touched
/// session first.
fn listener_artists(
    context: &QueryContext,
    user: &UserId,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<String>, QueryError> {
    let mut sessions: Vec<_> = context
        .storage
        .sessions
        .list(user)?
        .into_iter()
        .filter(|(_, stored)| stored.session.is_live(now, &context.player_policy))
        .collect();
    sessions.sort_by_key(|(_, stored)| std::cmp::Reverse(stored.session.last_touched_at));
    let mut artists = Vec::new();
    let mut seen = HashSet::new();
    for (_, stored) in &sessions {
        for track in &stored.session.tracks {
            let key = artist_key(&track.artist);
            if !key.is_empty() && seen.insert(key.clone()) {
                artists.push(key);
                if artists.len() >= limit {
                    return Ok(artists);
                }
            }
        }
    }
    Ok(artists)
}

fn show(value: ShowValue) -> v1::Show {
    v1::Show {
        artist: value.artist,
        venue: value.venue,
        city: value.city,
        starts_at: Some(playhead_client::wire::timestamp(Timestamp(
            value.starts_at_ms,
        ))),
        url: value.url,
        country: value.country,
        source: value.source,
        source_event_id: value.source_event_id,
    }
}
