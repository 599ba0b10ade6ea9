//! The content catalog: each item's tags (no TTL: an item lives until retagged), with the last
//! applied inbox sequence. The user actor reads it to check entitlement by tag.
//!
//! Heartbeats read the tags of the content they play, thousands a second, so the tags are also
//! kept in memory (`TagCache`): the catalog entity puts the tags it commits there, and a miss
//! reads sled once and keeps the answer (an unknown item too). The cache is bounded: a catalog
//! can hold millions of items while the contents being watched at any moment are few, and
//! DESIGN §8 wants every cache bounded. Nothing in it outlives the process: a restart or a
//! rebuild opens a new store with an empty cache, filled again from sled (which the rebuild
//! writes through [`CatalogStore::commit`] anyway).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

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

/// Tags by content in two generations, bounded by `capacity` entries in all: entries go into
/// the young one; when it is full (half the capacity), the old one is forgotten and the young
/// one becomes old; a hit in the old one moves the entry back to the young one. So the items
/// read within the last generation stay, O(1) per operation, with no list to maintain.
#[derive(Debug)]
struct TagCache {
    young: HashMap<ContentId, ContentState>,
    old: HashMap<ContentId, ContentState>,
    generation_capacity: usize,
    /// Commits so far: a fill that read sled before a commit must not overwrite its tags.
    commits: u64,
}

impl TagCache {
    fn new(capacity: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            generation_capacity: (capacity / 2).max(1),
            commits: 0,
        }
    }

    fn get(&mut self, content: &ContentId) -> Option<ContentState> {
        if let Some(tags) = self.young.get(content) {
            return Some(tags.clone());
        }
        let tags = self.old.remove(content)?;
        self.insert(content.clone(), tags.clone());
        Some(tags)
    }

    fn insert(&mut self, content: ContentId, tags: ContentState) {
        if self.young.len() >= self.generation_capacity && !self.young.contains_key(&content) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&content);
        self.young.insert(content, tags);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[derive(Clone)]
pub struct CatalogStore {
    items: sled::Tree,
    cache: Arc<Mutex<TagCache>>,
}

impl std::fmt::Debug for CatalogStore {
    // sled's Debug for a tree dumps its contents.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CatalogStore")
            .field("cached", &self.lock_cache().len())
            .finish_non_exhaustive()
    }
}

impl CatalogStore {
    /// Opens the catalog with a tag cache of at most `cache_items` items.
    pub fn open(db: &sled::Db, cache_items: usize) -> Result<Self, StorageError> {
        Ok(Self {
            items: db.open_tree("catalog_content")?,
            cache: Arc::new(Mutex::new(TagCache::new(cache_items))),
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

    /// The item's tags; `None` for an item the catalog never described. From memory when
    /// cached; a miss reads sled once and caches the answer.
    pub fn tags_of(&self, content: &ContentId) -> Result<Option<BTreeSet<Tag>>, StorageError> {
        let commits_before_read = {
            let mut cache = self.lock_cache();
            if let Some(tags) = cache.get(content) {
                return Ok(tags);
            }
            cache.commits
        };
        let tags = self.load(content)?.state;
        let mut cache = self.lock_cache();
        // A commit since the read may have written newer tags (to sled, then here): keep them.
        if cache.commits == commits_before_read {
            cache.insert(content.clone(), tags.clone());
        }
        Ok(tags)
    }

    /// Writes the item, then its tags into the cache (the catalog entity's commit).
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
        let mut cache = self.lock_cache();
        cache.insert(content.clone(), Some(tags.clone()));
        cache.commits += 1;
        Ok(())
    }

    /// Items whose tags are in memory (at most the configured capacity).
    pub fn cached_items(&self) -> usize {
        self.lock_cache().len()
    }

    // Every critical section is a map operation that cannot leave the cache inconsistent, so
    // a poisoned lock is still safe to use.
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, TagCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> BTreeSet<Tag> {
        names.iter().map(|tag| Tag::parse(*tag).unwrap()).collect()
    }

    fn stored(names: &[&str]) -> StoredContent {
        StoredContent {
            state: Some(tags(names)),
            last_applied_seq: 1,
            last_journal_seq: 1,
        }
    }

    #[test]
    fn given_a_committed_item_when_its_tags_are_read_then_no_sled_read_is_needed() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = CatalogStore::open(&db, 100).unwrap();
        let film = ContentId::parse("film-1").unwrap();
        store.commit(&film, &stored(&["sports"])).unwrap();
        // Behind the cache's back: a read that went to sled would see this.
        db.open_tree("catalog_content")
            .unwrap()
            .remove(film.as_str())
            .unwrap();

        assert_eq!(store.tags_of(&film).unwrap(), Some(tags(&["sports"])));
    }

    #[test]
    fn given_an_unknown_item_cached_as_such_when_the_catalog_tags_it_then_readers_see_the_tags() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = CatalogStore::open(&db, 100).unwrap();
        let film = ContentId::parse("film-1").unwrap();
        assert_eq!(store.tags_of(&film).unwrap(), None);

        store.commit(&film, &stored(&["premium"])).unwrap();

        assert_eq!(store.tags_of(&film).unwrap(), Some(tags(&["premium"])));
        assert_eq!(
            store.clone().tags_of(&film).unwrap(),
            Some(tags(&["premium"]))
        );
    }

    #[test]
    fn given_a_store_reopened_on_the_same_db_then_tags_come_from_sled() {
        let directory = tempfile::tempdir().unwrap();
        let film = ContentId::parse("film-1").unwrap();
        {
            let db = sled::Config::new().path(directory.path()).open().unwrap();
            let store = CatalogStore::open(&db, 100).unwrap();
            store.commit(&film, &stored(&["kids"])).unwrap();
            db.flush().unwrap();
        }
        // sled's flusher lets go of the file lock a moment after the last handle is dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(directory.path()).open() {
                Ok(db) => break db,
                Err(error) if std::time::Instant::now() > deadline => panic!("reopen: {error}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        let reopened = CatalogStore::open(&db, 100).unwrap();

        assert_eq!(reopened.cached_items(), 0);
        assert_eq!(reopened.tags_of(&film).unwrap(), Some(tags(&["kids"])));
        assert_eq!(reopened.cached_items(), 1);
    }

    #[test]
    fn given_more_items_than_the_capacity_then_the_cache_stays_bounded_and_answers_stay_right() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = CatalogStore::open(&db, 10).unwrap();
        let items: Vec<ContentId> = (0..50)
            .map(|n| ContentId::parse(format!("film-{n}")).unwrap())
            .collect();
        for (n, item) in items.iter().enumerate() {
            if n % 2 == 0 {
                store.commit(item, &stored(&["sports"])).unwrap();
            }
        }

        for _ in 0..3 {
            for (n, item) in items.iter().enumerate() {
                let expected = (n % 2 == 0).then(|| tags(&["sports"]));
                assert_eq!(store.tags_of(item).unwrap(), expected, "{item}");
                assert!(store.cached_items() <= 10);
            }
        }
    }

    #[test]
    fn given_a_hot_item_among_many_cold_ones_then_it_stays_cached() {
        let mut cache = TagCache::new(4);
        let hot = ContentId::parse("hot").unwrap();
        cache.insert(hot.clone(), Some(tags(&["sports"])));
        for n in 0..20 {
            cache.insert(ContentId::parse(format!("cold-{n}")).unwrap(), None);
            assert_eq!(cache.get(&hot), Some(Some(tags(&["sports"]))), "round {n}");
            assert!(cache.len() <= 4);
        }
    }

    #[test]
    fn tags_round_trip_and_unknown_items_have_none() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = CatalogStore::open(&db, 100).unwrap();
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
