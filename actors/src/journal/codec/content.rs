//! Catalog events (`playhead.events.content.{content_id}.*`): `ContentTagged`, version 1.

use std::collections::BTreeSet;

use playhead_proto::ids::{ContentId, Tag};
use playhead_proto::v1;

use super::{CodecError, EncodedEvent, InvalidPayload, decode_v1, same_entity, version_1};
use crate::domain::catalog::CatalogEvent;
use crate::domain::time::Timestamp;

// The name `CatalogEvent::name` gives, `'static` for errors (the `name` argument is borrowed).
const CONTENT_TAGGED: &str = "ContentTagged";

pub fn encode_content(content: &ContentId, event: &CatalogEvent) -> EncodedEvent {
    match event {
        CatalogEvent::ContentTagged { tags } => version_1(
            event.name(),
            v1::ContentTagged {
                content_id: content.to_string(),
                tags: tag_names(tags),
            },
        ),
    }
}

/// `stored_at` is unused: no catalog event has an older version to upcast.
pub fn decode_content(
    content: &ContentId,
    name: &str,
    version: u32,
    payload: &[u8],
    _stored_at: Timestamp,
) -> Result<CatalogEvent, CodecError> {
    match name {
        CONTENT_TAGGED => decode_v1(CONTENT_TAGGED, version, payload, |m: v1::ContentTagged| {
            same_entity("content_id", content.as_str(), m.content_id)?;
            Ok(CatalogEvent::ContentTagged {
                tags: read_tags(m.tags)?,
            })
        }),
        _ => Err(CodecError::UnknownEvent {
            family: "content",
            name: name.to_owned(),
        }),
    }
}

/// In the set's (sorted) order, so equal sets encode to equal bytes.
pub(super) fn tag_names(tags: &BTreeSet<Tag>) -> Vec<String> {
    tags.iter().map(Tag::to_string).collect()
}

/// Every tag is parsed; a repeated tag collapses into the set (the encoder never repeats one).
pub(super) fn read_tags(tags: Vec<String>) -> Result<BTreeSet<Tag>, InvalidPayload> {
    tags.into_iter()
        .map(|tag| Tag::parse(tag).map_err(InvalidPayload::from))
        .collect()
}
