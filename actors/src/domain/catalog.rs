//! Catalog decider: the tags of one content item. Entitlement is checked by tag, so a
//! `ContentUpdate` simply replaces the item's tag set; an identical update changes nothing.

use std::collections::BTreeSet;

use playhead_proto::ids::Tag;

/// Most tags one content item may carry.
pub const MAX_CONTENT_TAGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogCommand {
    /// Replace the item's tags.
    SetTags(BTreeSet<Tag>),
}

/// `None` until the item was first described.
pub type ContentState = Option<BTreeSet<Tag>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogEvent {
    ContentTagged { tags: BTreeSet<Tag> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} tags given; a content item carries at most {MAX_CONTENT_TAGS}")]
    TooManyTags(usize),
}

pub fn initial() -> ContentState {
    None
}

pub fn decide(
    command: &CatalogCommand,
    state: &ContentState,
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

pub fn evolve(_state: ContentState, event: &CatalogEvent) -> ContentState {
    match event {
        CatalogEvent::ContentTagged { tags } => Some(tags.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> BTreeSet<Tag> {
        names
            .iter()
            .map(|name| Tag::parse(*name).unwrap())
            .collect()
    }

    fn given(events: &[CatalogEvent]) -> ContentState {
        events.iter().fold(initial(), evolve)
    }

    #[test]
    fn given_an_unknown_item_when_tagged_then_it_is_tagged() {
        let command = CatalogCommand::SetTags(tags(&["premium", "sports"]));
        let events = decide(&command, &given(&[])).unwrap();
        assert_eq!(
            events,
            vec![CatalogEvent::ContentTagged {
                tags: tags(&["premium", "sports"])
            }]
        );
    }

    #[test]
    fn given_a_tagged_item_when_the_same_tags_arrive_then_nothing_changes() {
        let state = given(&[CatalogEvent::ContentTagged {
            tags: tags(&["premium"]),
        }]);
        let command = CatalogCommand::SetTags(tags(&["premium"]));
        assert_eq!(decide(&command, &state).unwrap(), Vec::new());
    }

    #[test]
    fn given_a_tagged_item_when_new_tags_arrive_then_they_replace_the_old_ones() {
        let state = given(&[CatalogEvent::ContentTagged {
            tags: tags(&["premium", "sports"]),
        }]);
        let events = decide(&CatalogCommand::SetTags(tags(&["free"])), &state).unwrap();
        assert_eq!(
            events.iter().fold(state, evolve),
            Some(tags(&["free"])),
            "a retag is a replacement, not a merge"
        );
    }

    #[test]
    fn too_many_tags_are_refused() {
        let many: BTreeSet<Tag> = (0..=MAX_CONTENT_TAGS)
            .map(|n| Tag::parse(format!("t{n}")).unwrap())
            .collect();
        assert_eq!(
            decide(&CatalogCommand::SetTags(many), &None),
            Err(CatalogError::TooManyTags(MAX_CONTENT_TAGS + 1))
        );
    }
}
