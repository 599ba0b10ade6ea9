//! `list_playouts`, `list_view_history` and `check_entitlements`: what a viewer may see of
//! their playout record. A user the node never saw has no playouts, no history and no tags
//! (an empty answer, not an error).

use std::collections::BTreeSet;

use playhead_proto::ids::Tag;
use playhead_proto::v1;

use playhead_client::query::{entitlements_query, playouts_query, view_history_query};

use super::{QueryContext, QueryError, decode_request};
use crate::domain::time::Timestamp;
use crate::storage::Storage;
use crate::storage::view_history_store::ViewRecord;
use crate::wire;

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
        records: page.records.into_iter().map(view_record).collect(),
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

fn view_record(record: ViewRecord) -> v1::ViewRecord {
    v1::ViewRecord {
        content_id: record.content_id.into_string(),
        position_ms: record.position_ms,
        last_viewed_at: Some(wire::timestamp(record.last_viewed_at)),
        completed: record.completed,
    }
}
