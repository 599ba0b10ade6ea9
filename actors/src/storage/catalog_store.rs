//! The content catalog: each item's tags (no TTL: an item lives until retagged), with the last
//! applied inbox sequence. The user actor reads it to check entitlement by tag.

use std::collections::BTreeSet;

use playhead_proto::ids::{ContentId, Tag};

use super::StorageError;
use crate::domain::catalog::ContentState;

#[derive(Clone, PartialEq, prost::Message)]
struct ContentRecord {
    #[prost(uint64, tag = "1")]
    last_applied_seq: u64,
    #[prost(string, repeated, tag = "2")]
    tags: Vec<String>,
    #[prost(uint64, tag = "3")]
    last_journal_seq: u64,
}

/// An item's tags, the last inbox sequence folded into them and its last journal event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredContent {
    pub state: ContentState,
    pub last_applied_seq: u64,
    pub last_journal_seq: u64,
}

#[derive(Clone)]
pub struct CatalogStore {
    items: sled::Tree,
}

impl CatalogStore {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            items: db.open_tree("catalog_content")?,
        })
    }

    pub fn load(&self, content: &ContentId) -> Result<StoredContent, StorageError> {
        let Some(bytes) = self.items.get(content.as_str())? else {
            return Ok(StoredContent::default());
        };
        let corrupt = |detail: String| StorageError::Corrupt {
            what: "catalog item",
            detail: format!("{content}: {detail}"),
        };
        let record = <ContentRecord as prost::Message>::decode(bytes.as_ref())
            .map_err(|error| corrupt(error.to_string()))?;
        let tags = record
            .tags
            .into_iter()
            .map(|tag| Tag::parse(tag).map_err(|error| corrupt(error.to_string())))
            .collect::<Result<BTreeSet<Tag>, _>>()?;
        Ok(StoredContent {
            state: Some(tags),
            last_applied_seq: record.last_applied_seq,
            last_journal_seq: record.last_journal_seq,
        })
    }

    /// The item's tags; `None` for an item the catalog never described.
    pub fn tags_of(&self, content: &ContentId) -> Result<Option<BTreeSet<Tag>>, StorageError> {
        Ok(self.load(content)?.state)
    }

    pub fn commit(&self, content: &ContentId, stored: &StoredContent) -> Result<(), StorageError> {
        let Some(tags) = &stored.state else {
            return Ok(());
        };
        let record = ContentRecord {
            last_applied_seq: stored.last_applied_seq,
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
            last_journal_seq: stored.last_journal_seq,
        };
        self.items
            .insert(content.as_str(), prost::Message::encode_to_vec(&record))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_unknown_items_have_none() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = CatalogStore::open(&db).unwrap();
        let film = ContentId::parse("film-1").unwrap();
        assert_eq!(store.tags_of(&film).unwrap(), None);
        let tags: BTreeSet<Tag> = ["premium", "sports"]
            .into_iter()
            .map(|tag| Tag::parse(tag).unwrap())
            .collect();
        let stored = StoredContent {
            state: Some(tags.clone()),
            last_applied_seq: 4,
            last_journal_seq: 9,
        };
        store.commit(&film, &stored).unwrap();
        assert_eq!(store.load(&film).unwrap(), stored);
        assert_eq!(store.tags_of(&film).unwrap(), Some(tags));
    }
}
