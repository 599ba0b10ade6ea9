//! `get_session` and `list_sessions`: what a listener may see of their player sessions
//! (never the upcoming order). A session past its TTL is not found, even before compaction
//! drops its bucket.

use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::v1;

use super::{QueryContext, QueryError, decode_request, page_size};
use crate::domain::time::Timestamp;
use crate::wire;

/// Validates a `GetSession` request; shared with the gateway.
pub fn session_query(request: &v1::GetSessionRequest) -> Result<(UserId, PlaylistId), QueryError> {
    let user = UserId::parse(request.user_id.clone())?;
    let playlist = PlaylistId::parse(request.playlist_id.clone())?;
    Ok((user, playlist))
}

/// A page of a listener's sessions, most recently touched first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsQuery {
    pub user: UserId,
    pub page_size: usize,
    /// Continue after this position of the previous page.
    pub after: Option<SessionCursor>,
}

/// A position in the "most recent first, then playlist id" order; travels as the opaque
/// page token `{last_touched_ms}.{playlist_id}` (ids cannot contain `.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub last_touched_ms: u64,
    pub playlist: PlaylistId,
}

impl SessionCursor {
    pub fn token(&self) -> String {
        format!("{}.{}", self.last_touched_ms, self.playlist)
    }

    pub fn parse(token: &str) -> Result<Self, QueryError> {
        let invalid = || {
            QueryError::InvalidArgument(format!(
                "page_token {token:?} is not one this service returned"
            ))
        };
        let (millis, playlist) = token.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            last_touched_ms: millis.parse().map_err(|_| invalid())?,
            playlist: PlaylistId::parse(playlist).map_err(|_| invalid())?,
        })
    }

    /// Whether `other` comes after this cursor in listing order.
    fn precedes(&self, other: &SessionCursor) -> bool {
        other.last_touched_ms < self.last_touched_ms
            || (other.last_touched_ms == self.last_touched_ms && other.playlist > self.playlist)
    }
}

/// Validates a `ListSessions` request; shared with the gateway.
pub fn sessions_query(request: &v1::ListSessionsRequest) -> Result<SessionsQuery, QueryError> {
    let user = UserId::parse(request.user_id.clone())?;
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(SessionCursor::parse(token)?),
    };
    Ok(SessionsQuery {
        user,
        page_size: page_size(request.page_size)?,
        after,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let cursor = SessionCursor {
            last_touched_ms: 1_763_000_000_123,
            playlist: PlaylistId::parse("road-trip").unwrap(),
        };
        assert_eq!(SessionCursor::parse(&cursor.token()).unwrap(), cursor);
        for garbage in ["", "abc", "12", "x.road-trip", "12.a b"] {
            assert!(
                matches!(
                    SessionCursor::parse(garbage),
                    Err(QueryError::InvalidArgument(_))
                ),
                "{garbage:?} accepted"
            );
        }
    }

    #[test]
    fn the_order_is_most_recent_first_then_by_playlist() {
        let at = |millis, playlist: &str| SessionCursor {
            last_touched_ms: millis,
            playlist: PlaylistId::parse(playlist).unwrap(),
        };
        let cursor = at(100, "b");
        assert!(cursor.precedes(&at(99, "a")));
        assert!(cursor.precedes(&at(100, "c")));
        assert!(!cursor.precedes(&at(100, "a")));
        assert!(!cursor.precedes(&at(101, "z")));
        assert!(!cursor.precedes(&cursor));
    }
}
