//! Catalog decider: the tags of one content item. Entitlement is checked by tag, so a
//! `ContentUpdate` simply replaces the item's tag set; an identical update changes nothing.

use std::collections::BTreeSet;

use playhead_proto::ids::Tag;

use super::decider::Decider;
use super::time::Timestamp;

/// Most tags one content item may carry.
pub const MAX_CONTENT_TAGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogCommand {
    /// Replace the item's tags.
    SetTags(BTreeSet<Tag>),
}

/// `None` until the item was first described.
pub type ContentState = Option<BTreeSet<Tag>>;

/// Catalog domain events, named in the past tense (version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogEvent {
    ContentTagged { tags: BTreeSet<Tag> },
}

impl CatalogEvent {
    /// The event name used in subjects.
    pub fn name(&self) -> &'static str {
        match self {
            CatalogEvent::ContentTagged { .. } => "ContentTagged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} tags given; a content item carries at most {MAX_CONTENT_TAGS}")]
    TooManyTags(usize),
}

/// The catalog decider: no policy, so a unit type.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogDecider;

impl Decider for CatalogDecider {
    type Command = CatalogCommand;
    type Event = CatalogEvent;
    type State = ContentState;
    type Error = CatalogError;

    fn initial() -> ContentState {
        None
    }

    /// Time plays no part: a retag takes effect whenever it arrives.
    fn decide(
        &self,
        command: &CatalogCommand,
        state: &ContentState,
        _now: Timestamp,
    ) -> Result<Vec<CatalogEvent>, CatalogError> {
        match command {
            CatalogCommand::SetTags(tags) => {
                if tags.len() > MAX_CONTENT_TAGS {
                    return Err(CatalogError::TooManyTags(tags.len()));
                }
                if state.as_ref() == Some(tags) {
                    return Ok(Vec::new());
                }
                Ok(vec![CatalogEvent::ContentTagged { tags: tags.clone() }])
            }
        }
    }

    fn evolve(_state: ContentState, event: &CatalogEvent) -> ContentState {
        match event {
            CatalogEvent::ContentTagged { tags } => Some(tags.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decider::Given;

    fn tags(names: &[&str]) -> BTreeSet<Tag> {
        names
            .iter()
            .map(|name| Tag::parse(*name).unwrap())
            .collect()
    }

    fn tagged(names: &[&str]) -> CatalogEvent {
        CatalogEvent::ContentTagged { tags: tags(names) }
    }

    fn given(events: &[CatalogEvent]) -> Given<'static, CatalogDecider> {
        Given::new(&CatalogDecider, events)
    }

    const NOW: Timestamp = Timestamp(1_000);

    #[test]
    fn given_an_unknown_item_when_tagged_then_it_is_tagged() {
        given(&[])
            .when(CatalogCommand::SetTags(tags(&["premium", "sports"])), NOW)
            .then(vec![tagged(&["premium", "sports"])]);
    }

    #[test]
    fn given_a_tagged_item_when_the_same_tags_arrive_then_nothing_changes() {
        given(&[tagged(&["premium"])])
            .when(CatalogCommand::SetTags(tags(&["premium"])), NOW)
            .then(vec![]);
    }

    #[test]
    fn given_a_tagged_item_when_new_tags_arrive_then_they_replace_the_old_ones() {
        let state = given(&[tagged(&["premium", "sports"])])
            .when(CatalogCommand::SetTags(tags(&["free"])), NOW)
            .then(vec![tagged(&["free"])]);
        assert_eq!(
            state,
            Some(tags(&["free"])),
            "a retag is a replacement, not a merge"
        );
    }

    #[test]
    fn too_many_tags_are_refused() {
        let many: BTreeSet<Tag> = (0..=MAX_CONTENT_TAGS)
            .map(|n| Tag::parse(format!("t{n}")).unwrap())
            .collect();
        given(&[])
            .when(CatalogCommand::SetTags(many), NOW)
            .then_refused(CatalogError::TooManyTags(MAX_CONTENT_TAGS + 1));
    }
}
