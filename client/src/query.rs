//! Queries: the request checks the gateway and the node share, so both edges refuse the same
//! request with the same words, and [`QueryError`], which travels over the NATS service API as
//! an HTTP-like `Nats-Service-Error-Code`.
//!
//! ```
//! use playhead_client::query::{QueryError, sessions_query};
//! use playhead_client::v1::ListSessionsRequest;
//!
//! let request = ListSessionsRequest {
//!     user_id: "ann".into(),
//!     page_size: 500,
//!     ..Default::default()
//! };
//! let error = sessions_query(&request).unwrap_err();
//! assert!(matches!(error, QueryError::InvalidArgument(_)));
//! assert_eq!(error.code(), 400);
//! assert_eq!(error.to_string(), "page_size 500 is over the limit of 100");
//! ```

use std::collections::BTreeSet;

use playhead_proto::ids::{IdError, ImportId, PlaylistId, StationId, Tag, UserId};
use playhead_proto::v1;

use crate::command::MAX_ENTITLEMENTS;
use crate::time::Timestamp;
use crate::wire;

/// Largest page a query returns.
pub const MAX_PAGE_SIZE: u32 = 100;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Longest artist name a shows query may name, in characters.
pub const MAX_ARTIST_CHARS: usize = 256;
/// Longest page token a shows query may carry back.
pub const MAX_PAGE_TOKEN_BYTES: usize = 512;

/// A query that cannot be answered, with the service error code it travels as.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    /// Service error codes (HTTP-like): 400, 404, 500.
    pub fn code(&self) -> usize {
        match self {
            QueryError::InvalidArgument(_) => 400,
            QueryError::NotFound(_) => 404,
            QueryError::Internal(_) => 500,
        }
    }
}

impl From<IdError> for QueryError {
    fn from(error: IdError) -> Self {
        QueryError::InvalidArgument(error.to_string())
    }
}

/// `0` means the default; above the maximum is refused rather than silently cut.
pub fn page_size(requested: u32) -> Result<usize, QueryError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        size if size <= MAX_PAGE_SIZE => Ok(size as usize),
        size => Err(QueryError::InvalidArgument(format!(
            "page_size {size} is over the limit of {MAX_PAGE_SIZE}"
        ))),
    }
}

/// A page of a station's plays, newest first: before or since a play sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaysQuery {
    pub page_size: usize,
    pub before: Option<u64>,
    pub since: Option<u64>,
}

/// Checks a `ListPlays` request.
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

/// Checks a `GetSession` request.
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
    pub fn precedes(&self, other: &SessionCursor) -> bool {
        other.last_touched_ms < self.last_touched_ms
            || (other.last_touched_ms == self.last_touched_ms && other.playlist > self.playlist)
    }
}

/// Checks a `ListSessions` request.
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

/// Checks a `ListPlayouts` request.
pub fn playouts_query(request: &v1::ListPlayoutsRequest) -> Result<UserId, QueryError> {
    Ok(UserId::parse(request.user_id.as_str())?)
}

/// A page of viewing history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewHistoryQuery {
    pub user: UserId,
    pub page_size: usize,
    /// Only records viewed strictly before this instant (the previous page's `next_before`).
    pub before: Option<Timestamp>,
}

/// Checks a `ListViewHistory` request.
pub fn view_history_query(
    request: &v1::ListViewHistoryRequest,
) -> Result<ViewHistoryQuery, QueryError> {
    Ok(ViewHistoryQuery {
        user: UserId::parse(request.user_id.as_str())?,
        page_size: page_size(request.page_size)?,
        before: request
            .before
            .as_ref()
            .map(|before| Timestamp::from_millis(wire::timestamp_millis(before))),
    })
}

/// Checks a `CheckEntitlements` request (at most [`MAX_ENTITLEMENTS`] tags). Repeated tags
/// are asked once.
pub fn entitlements_query(
    request: &v1::CheckEntitlementsRequest,
) -> Result<(UserId, Vec<Tag>), QueryError> {
    let user = UserId::parse(request.user_id.as_str())?;
    if request.tags.len() > MAX_ENTITLEMENTS {
        return Err(QueryError::InvalidArgument(format!(
            "{} tags asked; at most {MAX_ENTITLEMENTS} per request",
            request.tags.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut tags = Vec::with_capacity(request.tags.len());
    for tag in &request.tags {
        let tag = Tag::parse(tag.as_str())?;
        if seen.insert(tag.clone()) {
            tags.push(tag);
        }
    }
    Ok((user, tags))
}

/// Checks a `GetImport` request.
pub fn import_query(request: &v1::GetImportRequest) -> Result<ImportId, QueryError> {
    Ok(ImportId::parse(request.import_id.as_str())?)
}

/// Whose upcoming shows a `ListShows` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowsSelector {
    /// One artist, as the caller spells it (1 to [`MAX_ARTIST_CHARS`] characters).
    Artist(String),
    /// The artists recently played on a station.
    Station(StationId),
    /// The artists a listener recently listened to.
    User(UserId),
}

/// A page of upcoming shows, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowsQuery {
    pub selector: ShowsSelector,
    /// Shows starting at or after this (the node never goes earlier than now).
    pub from: Option<Timestamp>,
    pub page_size: usize,
    /// The previous page's `next_page_token` (opaque here; the node reads it).
    pub page_token: Option<String>,
}

/// Checks a `ListShows` request: exactly one selector, a bounded artist name or a valid id,
/// the page size and the page token's length.
pub fn shows_query(request: &v1::ListShowsRequest) -> Result<ShowsQuery, QueryError> {
    use v1::list_shows_request::Selector;
    let selector = match &request.selector {
        None => {
            return Err(QueryError::InvalidArgument(
                "give one of artist, station_id or user_id".into(),
            ));
        }
        Some(Selector::Artist(artist)) => {
            let chars = artist.chars().count();
            if artist.trim().is_empty() || chars > MAX_ARTIST_CHARS {
                return Err(QueryError::InvalidArgument(format!(
                    "artist must be 1 to {MAX_ARTIST_CHARS} characters of text; got {chars}"
                )));
            }
            ShowsSelector::Artist(artist.clone())
        }
        Some(Selector::StationId(station)) => {
            ShowsSelector::Station(StationId::parse(station.as_str())?)
        }
        Some(Selector::UserId(user)) => ShowsSelector::User(UserId::parse(user.as_str())?),
    };
    if request.page_token.len() > MAX_PAGE_TOKEN_BYTES {
        return Err(QueryError::InvalidArgument(format!(
            "page_token is {} bytes; a token this service returned has at most \
             {MAX_PAGE_TOKEN_BYTES}",
            request.page_token.len()
        )));
    }
    Ok(ShowsQuery {
        selector,
        from: request
            .from
            .as_ref()
            .map(|from| Timestamp::from_millis(wire::timestamp_millis(from))),
        page_size: page_size(request.page_size)?,
        page_token: Some(request.page_token.clone()).filter(|token| !token.is_empty()),
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

    #[test]
    fn requests_are_checked_before_anything_is_read() {
        assert!(playouts_query(&v1::ListPlayoutsRequest::default()).is_err());
        let too_big = v1::ListViewHistoryRequest {
            user_id: "ann".into(),
            page_size: 1_000,
            before: None,
        };
        assert!(matches!(
            view_history_query(&too_big),
            Err(QueryError::InvalidArgument(_))
        ));
        let page = view_history_query(&v1::ListViewHistoryRequest {
            user_id: "ann".into(),
            page_size: 0,
            before: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
        })
        .unwrap();
        assert_eq!(page.page_size, DEFAULT_PAGE_SIZE as usize);
        assert_eq!(page.before, Some(Timestamp::from_millis(5_000)));
    }

    #[test]
    fn asked_tags_are_validated_bounded_and_asked_once() {
        let ask = |tags: &[&str]| v1::CheckEntitlementsRequest {
            user_id: "ann".into(),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
        };
        let (_, tags) = entitlements_query(&ask(&["sports", "premium", "sports"])).unwrap();
        let tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        assert_eq!(tags, ["sports", "premium"]);
        assert!(entitlements_query(&ask(&["no spaces"])).is_err());
        let many: Vec<String> = (0..=MAX_ENTITLEMENTS).map(|n| format!("t{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(entitlements_query(&ask(&many)).is_err());
    }

    #[test]
    fn an_import_is_asked_by_a_valid_id() {
        let ask = |import_id: &str| v1::GetImportRequest {
            import_id: import_id.into(),
        };
        assert_eq!(import_query(&ask("imp-1")).unwrap().as_str(), "imp-1");
        for bad in ["", "imp.1", "imp 1"] {
            assert!(matches!(
                import_query(&ask(bad)),
                Err(QueryError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn a_shows_query_has_one_bounded_selector_and_a_bounded_page() {
        use v1::list_shows_request::Selector;
        let ask = |selector: Option<Selector>| v1::ListShowsRequest {
            selector,
            ..Default::default()
        };
        let refused = |request: &v1::ListShowsRequest| {
            matches!(shows_query(request), Err(QueryError::InvalidArgument(_)))
        };
        assert!(refused(&ask(None)));
        let longest = "é".repeat(MAX_ARTIST_CHARS);
        let query = shows_query(&ask(Some(Selector::Artist(longest.clone())))).unwrap();
        assert_eq!(query.selector, ShowsSelector::Artist(longest.clone()));
        assert_eq!(query.page_size, DEFAULT_PAGE_SIZE as usize);
        assert_eq!(query.page_token, None);
        for artist in [String::new(), "   ".into(), format!("{longest}é")] {
            assert!(
                refused(&ask(Some(Selector::Artist(artist.clone())))),
                "{artist:?}"
            );
        }
        assert!(refused(&ask(Some(Selector::StationId("radio.1".into())))));
        assert!(refused(&ask(Some(Selector::UserId(String::new())))));
        assert_eq!(
            shows_query(&ask(Some(Selector::UserId("ann".into()))))
                .unwrap()
                .selector,
            ShowsSelector::User(UserId::parse("ann").unwrap())
        );
        let page = |page_size: u32, page_token: String| v1::ListShowsRequest {
            selector: Some(Selector::StationId("radio-1".into())),
            from: Some(prost_types::Timestamp {
                seconds: 7,
                nanos: 0,
            }),
            page_size,
            page_token,
        };
        let query = shows_query(&page(MAX_PAGE_SIZE, "t".repeat(MAX_PAGE_TOKEN_BYTES))).unwrap();
        assert_eq!(query.from, Some(Timestamp::from_millis(7_000)));
        assert_eq!(query.page_size, MAX_PAGE_SIZE as usize);
        assert!(refused(&page(MAX_PAGE_SIZE + 1, String::new())));
        assert!(refused(&page(0, "t".repeat(MAX_PAGE_TOKEN_BYTES + 1))));
    }
}
