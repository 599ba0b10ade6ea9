//! Content items: retags, identical ones (which change nothing) and refused ones included.

use playhead_proto::ids::{ContentId, Tag};
use proptest::prelude::*;

use super::{HOUR, messages, rebuilt_from_journal, run_as_the_shell, temporary_db};
use crate::domain::catalog::{CatalogCommand, CatalogDecider, MAX_CONTENT_TAGS};
use crate::domain::time::Timestamp;
use crate::runtime::kinds::catalog::ContentKind;
use crate::storage::catalog_store::{CatalogStore, StoredContent};

const TAGS: [&str; 6] = ["sports", "movies", "kids", "premium", "free", "uhd"];

/// A retag: the tags of `TAGS` whose bit is set, or one more than an item may carry.
#[derive(Debug, Clone, Copy)]
enum Retag {
    Tags(u8),
    TooMany,
}

/// (time since the previous retag, slice ends, retag).
type Step = (u64, bool, Retag);

fn retag(retag: &Retag, _now: Timestamp) -> CatalogCommand {
    let tags = match retag {
        Retag::Tags(bits) => TAGS
            .iter()
            .enumerate()
            .filter(|(bit, _)| bits & (1 << bit) != 0)
            .map(|(_, name)| Tag::parse(*name).expect("a valid tag"))
            .collect(),
        Retag::TooMany => (0..=MAX_CONTENT_TAGS)
            .map(|n| Tag::parse(format!("tag-{n}")).expect("a valid tag"))
            .collect(),
    };
    CatalogCommand::SetTags(tags)
}

/// Retags drawn mostly from a few sets (so identical updates, which change nothing, come up),
/// the empty set included.
fn steps() -> impl Strategy<Value = Vec<Step>> {
    let retag = prop_oneof![
        4 => (0u8..4).prop_map(Retag::Tags),
        4 => (0u8..64).prop_map(Retag::Tags),
        1 => Just(Retag::TooMany),
    ];
    prop::collection::vec((0..HOUR, any::<bool>(), retag), 0..40)
}

/// Decides `steps` for one item, committing each slice, then reads it back.
fn check(steps: &[Step]) -> Result<(), TestCaseError> {
    let content = ContentId::parse("film-1")?;
    let db = temporary_db()?;
    let store = CatalogStore::open(&db, 16)?;
    let run = run_as_the_shell(
        &CatalogDecider,
        messages(steps, retag),
        |state, _now, slice, last_journal_seq| {
            let stored = StoredContent {
                state: state.clone(),
                last_applied_seq: slice[slice.len() - 1].inbox_seq,
                last_journal_seq,
            };
            store.commit(&content, &stored)?;
            Ok(())
        },
    )?;

    prop_assert_eq!(
        store.load(&content)?,
        StoredContent {
            state: run.state.clone(),
            last_applied_seq: run.last_applied_seq(),
            last_journal_seq: run.last_journal_seq,
        }
    );
    // The tags heartbeats read (from memory, fed by the commits) agree with sled.
    prop_assert_eq!(store.tags_of(&content)?, run.state.clone());
    prop_assert_eq!(
        rebuilt_from_journal::<ContentKind>(&content, &run.decisions)?,
        run.state
    );
    Ok(())
}

proptest! {
    #[test]
    fn a_content_item_comes_back_from_sled_and_from_the_journal(steps in steps()) {
        check(&steps)?;
    }
}
