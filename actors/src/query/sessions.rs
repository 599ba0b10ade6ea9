//! `get_session` and `list_sessions`: what a listener may see of their player sessions
//! (never the upcoming order). A session past its TTL is not found, even before compaction
//! drops its bucket.

use playhead_proto::v1;

use playhead_client::query::{SessionCursor, session_query, sessions_query};

use super::{QueryContext, QueryError, decode_request};
use crate::domain::time::Timestamp;
use crate::wire;

pub(super) fn get_session(
    context: &QueryContext,
    payload: &[u8],
    now: Timestamp,
) -> Result<v1::PlayerSession, QueryError> {
    let request = decode_request::<v1::GetSessionRequest>(payload)?;
    let (user, playlist) = session_query(&request)?;
    context
        .storage
        .sessions
        .load(&user, &playlist)?
        .filter(|stored| stored.session.is_live(now, &context.player_policy))
        .map(|stored| {
            wire::player_session(
                &user,
                &playlist,
                &stored.session,
                &context.player_policy,
                now,
            )
        })
        .ok_or_else(|| {
            QueryError::NotFound(format!(
                "user {user} has no live session for playlist {playlist}"
            ))
        })
}

pub(super) fn list_sessions(
    context: &QueryContext,
    payload: &[u8],
    now: Timestamp,
) -> Result<v1::ListSessionsResponse, QueryError> {
    let request = decode_request::<v1::ListSessionsRequest>(payload)?;
    let query = sessions_query(&request)?;
    let mut live: Vec<_> = context
        .storage
        .sessions
        .list(&query.user)?
        .into_iter()
        .filter(|(_, stored)| stored.session.is_live(now, &context.player_policy))
        .map(|(playlist, stored)| {
            let cursor = SessionCursor {
                last_touched_ms: stored.session.last_touched_at.as_millis(),
                playlist,
            };
            (cursor, stored)
        })
        .filter(|(cursor, _)| {
            query
                .after
                .as_ref()
                .is_none_or(|after| after.precedes(cursor))
        })
        .collect();
    live.sort_by(|(a, _), (b, _)| {
        b.last_touched_ms
            .cmp(&a.last_touched_ms)
            .then_with(|| a.playlist.cmp(&b.playlist))
    });
    let more = live.len() > query.page_size;
    live.truncate(query.page_size);
    let next_page_token = match live.last() {
        Some((cursor, _)) if more => cursor.token(),
        _ => String::new(),
    };
    Ok(v1::ListSessionsResponse {
        sessions: live
            .iter()
            .map(|(cursor, stored)| {
                wire::player_session(
                    &query.user,
                    &cursor.playlist,
                    &stored.session,
                    &context.player_policy,
                    now,
                )
            })
            .collect(),
        next_page_token,
    })
}
