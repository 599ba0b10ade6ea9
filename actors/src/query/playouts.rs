//! `list_playouts`, `list_view_history` and `check_entitlements`: what a viewer may see of
//! their playout record. A user the node never saw has no playouts, no history and no tags
//! (an empty answer, not an error).

use std::collections::BTreeSet;

use playhead_proto::ids::{Tag, UserId};
use playhead_proto::v1;

use super::{QueryContext, QueryError, decode_request, page_size};
use crate::domain::playout::MAX_ENTITLEMENTS;
use crate::domain::time::Timestamp;
use crate::storage::Storage;
use crate::wire;

/// Validates a `ListPlayouts` request; shared with the gateway.
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

/// Validates a `ListViewHistory` request; shared with the gateway.
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

/// Validates a `CheckEntitlements` request (at most [`MAX_ENTITLEMENTS`] tags); shared with
/// the gateway. Repeated tags are asked once.
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

/// The slots holding a seat now, oldest admission first.
pub(super) fn list_playouts(
    context: &QueryContext,
    payload: &[u8],
    now: Timestamp,
) -> Result<v1::ListPlayoutsResponse, QueryError> {
    let user = playouts_query(&decode_request(payload)?)?;
    let stored = context.storage.playouts.load(&user)?;
    Ok(v1::ListPlayoutsResponse {
        playouts: stored
            .state
            .live_slots(now, &context.playout_policy)
            .map(wire::playout)
            .collect(),
    })
}

pub(super) fn list_view_history(
    storage: &Storage,
    payload: &[u8],
) -> Result<v1::ListViewHistoryResponse, QueryError> {
    let query = view_history_query(&decode_request(payload)?)?;
    // BEATs store a bookmark only now and then; the playout record holds each playout's latest
    // view, which the listing overlays so the answer is as if every BEAT had been stored.
    let live_views: Vec<_> = storage
        .playouts
        .load(&query.user)?
        .state
        .live_views()
        .collect();
    let page = storage.view_history.list_with_live_views(
        &query.user,
        query.page_size,
        query.before,
        &live_views,
    )?;
    Ok(v1::ListViewHistoryResponse {
        records: page.records.into_iter().map(wire::view_record).collect(),
        next_before: page.next_before.map(wire::timestamp),
    })
}

/// The asked tags the user holds now, in the order asked.
pub(super) fn check_entitlements(
    storage: &Storage,
    payload: &[u8],
    now: Timestamp,
) -> Result<v1::CheckEntitlementsResponse, QueryError> {
    let (user, tags) = entitlements_query(&decode_request(payload)?)?;
    let stored = storage.playouts.load(&user)?;
    let held: BTreeSet<&Tag> = stored.state.held_tags(now).collect();
    Ok(v1::CheckEntitlementsResponse {
        held_tags: tags
            .into_iter()
            .filter(|tag| held.contains(tag))
            .map(Tag::into_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(page.page_size, super::super::DEFAULT_PAGE_SIZE as usize);
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
}
