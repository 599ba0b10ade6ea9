//! Viewing history and bookmarks: one record per (user, content) with the last position, the
//! last viewed time and whether that view ended, in the time-partitioned keyspace
//! `view_history` (sliding TTL: every view rewrites the record into the current bucket), capped
//! per user (the least recently viewed are evicted).
//!
//! Three key families share the keyspace (ids cannot contain `/`, so `ann` never reads `anna`):
//!
//! - `r/{user}/{content}` → the record;
//! - `t/{user}/{last_viewed_ms as big-endian u64}/{content}` → empty: a time index, so listing
//!   newest first and finding the oldest to evict walk only the keys they need, in order;
//! - `n/{user}` → big-endian u32: an upper bound on the user's live records, then the sorted
//!   32-bit hashes of the contents of those records (a superset: see below). A bound written
//!   before the hashes were kept is the u32 alone; the next write learns them by one scan.
//!
//! A write puts the bound, then each record's new index entry and the record, into one bucket
//! (they expire together) in that order, with plain inserts: sled recovers its log as a
//! prefix, so a crash never leaves a bound below the records nor a record without its index
//! entry; it may leave a new index entry whose record is older or missing, which listing skips
//! and the replay of the same decision (the user's journal position is stored after these
//! writes) completes before anything else writes this history. Then the write removes the
//! previous index entry from the one bucket that holds it (the bucket where the record's newest
//! copy was found: they were written together), never from every live bucket. A crash in
//! between leaves a stale index entry (its record has moved on to a later time): listing skips
//! it, the next recount removes it, else it expires. Eviction removes the record before its
//! index entry: a crash in between leaves an index entry without a record, which listing skips
//! and which, being the oldest, the next eviction takes first.
//!
//! **Never-viewed contents are known without probing.** A record is looked up newest bucket
//! first through every live bucket, so a content the user never viewed would cost a read per
//! live bucket (181 with the defaults). The bound therefore carries the hashes of the user's
//! contents, kept a superset of its live records' like the count is kept an upper bound: a
//! write adds the hashes of the records it creates to the bound it writes first; a recount
//! writes the hashes of what it counted after its evictions; expiry only leaves hashes of
//! records gone, until the next recount. A content whose hash is absent has no record; one
//! whose hash is present (or a collision) is looked up as before. No bound at all means no live
//! record: the bound is rewritten into the current bucket with every write, so its newest copy
//! is never older than any record.
//!
//! The bound is not an exact count because expiry drops records without telling anyone; it
//! only ever overestimates (it grows with every record created, written before the record, and is
//! rewritten only after evictions finished). While it is within the cap nothing is scanned;
//! past the cap one scan of the user's index keys (at most cap + a few) recounts exactly, and
//! only then are the oldest evicted: a user never loses a record to a count that expiry made
//! stale.
//!
//! Writes to one user's history must be serialised by the caller (the user's entity actor);
//! reads may run concurrently and see each record at most once.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use playhead_proto::ids::{ContentId, UserId};

use super::StorageError;
use super::clock::Clock;
use super::keyspace::{
    BucketIndex, CompactionReport, Direction, Expiry, KeyspaceConfig, Placement, TimeKeyspace,
};
use crate::config::PlayoutConfig;
use crate::domain::playout::Bookmark;
use crate::domain::time::Timestamp;

const RECORD_FAMILY: &[u8] = b"r/";
const INDEX_FAMILY: &[u8] = b"t/";
const BOUND_FAMILY: &[u8] = b"n/";
const TIMESTAMP_BYTES: usize = 8;

/// The viewing history of one (user, content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRecord {
    pub content_id: ContentId,
    /// Position of the last bookmark.
    pub position_ms: u64,
    /// Broker time of the last bookmark.
    pub last_viewed_at: Timestamp,
    /// The last view ended: the player sent END, or a BEAT was answered STOP. A later START or
    /// BEAT of the same content (watching it again) clears it.
    pub completed: bool,
}

/// Records newest first; `next_before` is the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViewPage {
    pub records: Vec<ViewRecord>,
    pub next_before: Option<Timestamp>,
}

/// What one [`ViewHistoryStore::record`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordReport {
    /// Contents the user had no live record of.
    pub created: usize,
    /// Records written (created or moved on).
    pub written: usize,
    /// Least recently viewed records removed to respect the cap.
    pub evicted: usize,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ViewRecordProto {
    #[prost(uint64, tag = "1")]
    position_ms: u64,
    #[prost(uint64, tag = "2")]
    last_viewed_ms: u64,
    #[prost(bool, tag = "3")]
    completed: bool,
}

#[derive(Clone)]
pub struct ViewHistoryStore {
    history: TimeKeyspace,
    cap: usize,
}

impl std::fmt::Debug for ViewHistoryStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ViewHistoryStore")
            .field("history", &self.history)
            .field("cap", &self.cap)
            .finish()
    }
}

impl ViewHistoryStore {
    pub fn open(
        db: &sled::Db,
        config: &PlayoutConfig,
        clock: Arc<dyn Clock>,
        placement: Placement,
    ) -> Result<Self, StorageError> {
        let history = TimeKeyspace::open_placed(
            db,
            KeyspaceConfig {
                name: "view_history".into(),
                bucket_width: Duration::from_secs(config.history_bucket_secs),
                retention: Duration::from_secs(config.history_retention_secs),
            },
            clock,
            placement,
        )?;
        Ok(Self {
            history,
            cap: (config.history_cap as usize).max(1),
        })
    }

    /// Applies bookmarks in order (e.g. `events.iter().filter_map(PlayoutEvent::bookmark)`).
    ///
    /// A bookmark older than the record's last view is ignored (late delivery must not move
    /// history back), and one identical to the record writes nothing, so recording the same
    /// bookmarks again (a redelivered command) leaves the history as it was: at most a record
    /// the cap evicted comes back as the oldest and is evicted again.
    pub fn record(
        &self,
        user: &UserId,
        bookmarks: &[Bookmark],
    ) -> Result<RecordReport, StorageError> {
        self.record_beside_live_views(user, &[], bookmarks, &[])
    }

    /// [`Self::record`], while the user's playouts hold `live_views` not stored yet (see
    /// [`Self::list_with_live_views`]): the cap evicts by the view a reader sees, so a record
    /// being watched is as recent as its latest heartbeat. `released` (views of released
    /// slots, each older than every view decided after it) go first and only replace a record
    /// strictly older: a record in the same millisecond was viewed after them.
    pub fn record_beside_live_views(
        &self,
        user: &UserId,
        released: &[Bookmark],
        bookmarks: &[Bookmark],
        live_views: &[Bookmark],
    ) -> Result<RecordReport, StorageError> {
        // content → (its stored record and the bucket holding it, its record after the
        // bookmarks so far)
        type Change = (Option<(BucketIndex, ViewRecord)>, Option<ViewRecord>);
        let mut bound = self.load_bound(user)?;
        let mut changes: BTreeMap<&ContentId, Change> = BTreeMap::new();
        let in_order = released
            .iter()
            .map(|bookmark| (bookmark, true))
            .chain(bookmarks.iter().map(|bookmark| (bookmark, false)));
        for (bookmark, strictly_newer) in in_order {
            let content = &bookmark.content_id;
            let (_, latest) = match changes.entry(content) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let stored = if bound.may_hold(content) {
                        self.get_located(user, content)?
                    } else {
                        None
                    };
                    let latest = stored.as_ref().map(|(_, record)| record.clone());
                    entry.insert((stored, latest))
                }
            };
            if latest.as_ref().is_some_and(|latest| {
                bookmark.at < latest.last_viewed_at
                    || (strictly_newer && bookmark.at == latest.last_viewed_at)
            }) {
                continue;
            }
            *latest = Some(ViewRecord {
                content_id: content.clone(),
                position_ms: bookmark.position_ms,
                last_viewed_at: bookmark.at,
                completed: bookmark.view_ended,
            });
        }
        let changes: Vec<(Option<(BucketIndex, ViewRecord)>, ViewRecord)> = changes
            .into_values()
            .filter_map(|(stored, latest)| match latest {
                Some(latest) if stored.as_ref().map(|(_, record)| record) != Some(&latest) => {
                    Some((stored, latest))
                }
                _ => None,
            })
            .collect();
        if changes.is_empty() {
            return Ok(RecordReport::default());
        }

        let created: Vec<&ContentId> = changes
            .iter()
            .filter(|(stored, _)| stored.is_none())
            .map(|(_, next)| &next.content_id)
            .collect();
        bound.add(&created);
        // In this order, in one bucket, without a `sled::Batch` (which takes sled's
        // process-wide exclusive lock and seals a log buffer): a crash keeps a prefix, so the
        // bound is never below the records nor missing their contents, and an index entry never
        // misses its record.
        let mut writes = Vec::with_capacity(2 * changes.len() + 1);
        writes.push((bound_key(user), bound.encode()));
        for (_, next) in &changes {
            let content = &next.content_id;
            writes.push((index_key(user, next.last_viewed_at, content), Vec::new()));
            writes.push((record_key(user, content), encode(next)));
        }
        self.history.insert_each(writes)?;
        for (stored, next) in &changes {
            if let Some((bucket, stored)) = stored
                && stored.last_viewed_at != next.last_viewed_at
            {
                // The index entry was written into the bucket of the record copy found, just
                // before it: it is in that bucket, and only there is it looked for.
                self.history.remove_in_bucket(
                    *bucket,
                    &index_key(user, stored.last_viewed_at, &stored.content_id),
                )?;
            }
        }

        let evicted = if bound.count > self.cap {
            self.recount_and_evict(user, live_views)?
        } else {
            0
        };
        Ok(RecordReport {
            created: created.len(),
            written: changes.len(),
            evicted,
        })
    }

    /// The user's live record of `content`.
    pub fn get(
        &self,
        user: &UserId,
        content: &ContentId,
    ) -> Result<Option<ViewRecord>, StorageError> {
        Ok(self.get_located(user, content)?.map(|(_, record)| record))
    }

    /// The user's live record of `content` and the bucket holding it (and its index entry).
    fn get_located(
        &self,
        user: &UserId,
        content: &ContentId,
    ) -> Result<Option<(BucketIndex, ViewRecord)>, StorageError> {
        self.history
            .get_located(&record_key(user, content))?
            .map(|(bucket, bytes)| Ok((bucket, decode(content.clone(), &bytes)?)))
            .transpose()
    }

    /// Up to `page_size` (at least 1) records viewed strictly before `before` (all when
    /// `None`), newest first. Records viewed in the same millisecond as the last one of the
    /// page join it, so the exclusive timestamp cursor never skips a record.
    pub fn list(
        &self,
        user: &UserId,
        page_size: usize,
        before: Option<Timestamp>,
    ) -> Result<ViewPage, StorageError> {
        self.list_with_live_views(user, page_size, before, &[])
    }

    /// [`Self::list`] with the user's live views overlaid: a stored record whose content a
    /// playout has viewed since (a BEAT whose bookmark was not stored, see
    /// [`crate::domain::playout::PlayoutState::live_views`]) is listed with that newer view,
    /// in the place its time gives it, as if every view had been stored. A content with no
    /// stored record (the cap evicted it) stays unlisted until its playout stores a bookmark.
    pub fn list_with_live_views(
        &self,
        user: &UserId,
        page_size: usize,
        before: Option<Timestamp>,
        live_views: &[Bookmark],
    ) -> Result<ViewPage, StorageError> {
        let page_size = page_size.max(1);
        let overlaid = self.overlay(user, live_views)?;
        // Oldest first, so `pop` yields them in listing order: (time, content) descending,
        // the order of the index keys.
        let mut newer_views: Vec<&ViewRecord> = overlaid
            .values()
            .filter(|record| before.is_none_or(|before| record.last_viewed_at < before))
            .collect();
        newer_views.sort_by(|a, b| listing_key(a).cmp(&listing_key(b)));

        let prefix = index_prefix(user);
        let upper = match before {
            Some(before) => index_time_prefix(user, before),
            None => prefix_successor(&prefix),
        };
        let mut page = ViewPage::default();
        for entry in self
            .history
            .range(prefix.clone()..upper, Direction::Reverse)?
        {
            let (key, _) = entry?;
            let (viewed_at, content) = parse_index_key(&key, prefix.len())?;
            if overlaid.contains_key(&content) {
                continue; // listed at the time of its newer view
            }
            let Some(record) = self.get(user, &content)? else {
                continue; // evicted; a crash kept its index entry
            };
            if record.last_viewed_at != viewed_at {
                continue; // stale: the record moved on, a crash kept its old index entry
            }
            while let Some(newer) = newer_views
                .pop_if(|newer| listing_key(newer) > (record.last_viewed_at, &record.content_id))
            {
                if !add_to_page(&mut page, page_size, newer.clone()) {
                    return Ok(page);
                }
            }
            if !add_to_page(&mut page, page_size, record) {
                return Ok(page);
            }
        }
        while let Some(newer) = newer_views.pop() {
            if !add_to_page(&mut page, page_size, newer.clone()) {
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// The stored records that `live_views` are newer than, as a reader sees them: content →
    /// the record with its latest view (a view is never an end: that is always stored).
    fn overlay(
        &self,
        user: &UserId,
        live_views: &[Bookmark],
    ) -> Result<BTreeMap<ContentId, ViewRecord>, StorageError> {
        let mut latest: BTreeMap<&ContentId, &Bookmark> = BTreeMap::new();
        for view in live_views {
            match latest.entry(&view.content_id) {
                Entry::Vacant(entry) => {
                    entry.insert(view);
                }
                Entry::Occupied(mut entry) => {
                    if view.at >= entry.get().at {
                        entry.insert(view);
                    }
                }
            }
        }
        let mut overlaid = BTreeMap::new();
        for (content, view) in latest {
            let Some(stored) = self.get(user, content)? else {
                continue;
            };
            if view.at > stored.last_viewed_at {
                overlaid.insert(
                    content.clone(),
                    ViewRecord {
                        content_id: content.clone(),
                        position_ms: view.position_ms,
                        last_viewed_at: view.at,
                        completed: view.view_ended,
                    },
                );
            }
        }
        Ok(overlaid)
    }

    /// Drops expired buckets.
    pub fn compact(&self, expiry: &Expiry) -> Result<CompactionReport, StorageError> {
        Ok(self.history.compact(expiry)?)
    }

    /// The underlying keyspace (benchmarks and introspection).
    pub fn keyspace(&self) -> &TimeKeyspace {
        &self.history
    }

    /// Counts the user's records from the index, drops stale index entries, evicts the least
    /// recently viewed beyond the cap, then stores the exact count as the new bound.
    /// A content a playout viewed since its record was stored (`live_views`) counts as viewed
    /// then.
    fn recount_and_evict(
        &self,
        user: &UserId,
        live_views: &[Bookmark],
    ) -> Result<usize, StorageError> {
        let prefix = index_prefix(user);
        let mut seen = HashSet::new();
        // Newest first: the first index entry of a content is its record's, later ones are
        // stale (a record's last view never moves back).
        let mut indexed = Vec::new();
        let mut stale = Vec::new();
        for entry in self.history.scan_prefix(&prefix, Direction::Reverse)? {
            let (key, _) = entry?;
            let (viewed_at, content) = parse_index_key(&key, prefix.len())?;
            if seen.insert(content.clone()) {
                indexed.push((viewed_at, content));
            } else {
                stale.push(key);
            }
        }
        for key in stale {
            self.history.remove(&key)?;
        }
        if !live_views.is_empty() {
            let viewed_at = |(indexed_at, content): &(Timestamp, ContentId)| {
                live_views
                    .iter()
                    .filter(|view| view.content_id == *content)
                    .map(|view| view.at)
                    .fold(*indexed_at, Timestamp::max)
            };
            // Stable: ties keep the index order.
            indexed.sort_by_key(|entry| std::cmp::Reverse(viewed_at(entry)));
        }
        let mut evicted = 0;
        while indexed.len() > self.cap {
            let Some((viewed_at, content)) = indexed.pop() else {
                break;
            };
            // Record first: a crash in between leaves an index entry without a record, which
            // listing skips; the reverse would leave a record nothing lists or evicts.
            if self.history.remove(&record_key(user, &content))? {
                evicted += 1;
            }
            self.history.remove(&index_key(user, viewed_at, &content))?;
        }
        let counted: Vec<&ContentId> = indexed.iter().map(|(_, content)| content).collect();
        let recounted = Bound::of(&counted);
        self.history.insert(&bound_key(user), &recounted.encode())?;
        Ok(evicted)
    }

    /// The user's bound, with the hashes of its contents: learnt by one scan of its records
    /// when the bound predates them. No bound: no live record (see the module docs).
    fn load_bound(&self, user: &UserId) -> Result<Bound, StorageError> {
        let Some(bytes) = self.history.get(&bound_key(user))? else {
            return Ok(Bound::default());
        };
        let corrupt = || StorageError::Corrupt {
            what: "view history count",
            detail: format!("{user}: {} bytes, not 4 + 4 per content", bytes.len()),
        };
        if bytes.is_empty() || bytes.len() % 4 != 0 {
            return Err(corrupt());
        }
        let mut words = bytes
            .chunks_exact(4)
            .map(|word| u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
        let count = words.next().unwrap_or_default() as usize;
        if bytes.len() > 4 {
            return Ok(Bound::new(count, words.collect()));
        }
        // Written before the hashes were kept: every live record's content, once.
        let prefix = record_prefix(user);
        let mut hashes = Vec::new();
        for entry in self.history.scan_prefix(&prefix, Direction::Forward)? {
            let (key, _) = entry?;
            hashes.push(content_hash(&key[prefix.len()..]));
        }
        Ok(Bound::new(count, hashes))
    }
}

/// Where a record goes in a listing: newest first, then by content descending (the order of
/// the index keys `t/{user}/{time}/{content}` read in reverse).
fn listing_key(record: &ViewRecord) -> (Timestamp, &ContentId) {
    (record.last_viewed_at, &record.content_id)
}

/// Adds `record` to the page unless the page is full and `record` was viewed in another
/// millisecond than its last one: then notes the cursor and says the page is done.
fn add_to_page(page: &mut ViewPage, page_size: usize, record: ViewRecord) -> bool {
    if let Some(last) = page.records.last()
        && page.records.len() >= page_size
        && last.last_viewed_at != record.last_viewed_at
    {
        page.next_before = Some(last.last_viewed_at);
        return false;
    }
    page.records.push(record);
    true
}

/// `{family}{user}`.
fn user_key(family: &[u8], user: &UserId) -> Vec<u8> {
    [family, user.as_str().as_bytes()].concat()
}

/// `r/{user}/`.
fn record_prefix(user: &UserId) -> Vec<u8> {
    let mut key = user_key(RECORD_FAMILY, user);
    key.push(b'/');
    key
}

/// `r/{user}/{content}`.
fn record_key(user: &UserId, content: &ContentId) -> Vec<u8> {
    let mut key = record_prefix(user);
    key.extend_from_slice(content.as_str().as_bytes());
    key
}

/// `t/{user}/`.
fn index_prefix(user: &UserId) -> Vec<u8> {
    let mut key = user_key(INDEX_FAMILY, user);
    key.push(b'/');
    key
}

/// `t/{user}/{viewed_at}`: every index key of that millisecond sorts after it.
fn index_time_prefix(user: &UserId, viewed_at: Timestamp) -> Vec<u8> {
    let mut key = index_prefix(user);
    key.extend_from_slice(&viewed_at.as_millis().to_be_bytes());
    key
}

/// `t/{user}/{viewed_at}/{content}`: big-endian, so keys sort by view time.
fn index_key(user: &UserId, viewed_at: Timestamp, content: &ContentId) -> Vec<u8> {
    let mut key = index_time_prefix(user, viewed_at);
    key.push(b'/');
    key.extend_from_slice(content.as_str().as_bytes());
    key
}

fn parse_index_key(key: &[u8], prefix_len: usize) -> Result<(Timestamp, ContentId), StorageError> {
    let corrupt = || StorageError::Corrupt {
        what: "view history index key",
        detail: String::from_utf8_lossy(key).into_owned(),
    };
    let rest = key.get(prefix_len..).ok_or_else(corrupt)?;
    let (millis, rest) = rest.split_at_checked(TIMESTAMP_BYTES).ok_or_else(corrupt)?;
    let millis = u64::from_be_bytes(millis.try_into().map_err(|_| corrupt())?);
    let content = rest
        .strip_prefix(b"/")
        .and_then(|content| std::str::from_utf8(content).ok())
        .and_then(|content| ContentId::parse(content).ok())
        .ok_or_else(corrupt)?;
    Ok((Timestamp::from_millis(millis), content))
}

/// `n/{user}`.
fn bound_key(user: &UserId) -> Vec<u8> {
    user_key(BOUND_FAMILY, user)
}

/// The first key after every key starting with `prefix` (which ends in `/`, never `0xff`).
fn prefix_successor(prefix: &[u8]) -> Vec<u8> {
    let mut upper = prefix.to_vec();
    if let Some(last) = upper.last_mut() {
        *last += 1;
    }
    upper
}

/// What `n/{user}` holds: an upper bound on the user's live records and a superset of the
/// hashes of their contents, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bound {
    count: usize,
    hashes: Vec<u32>,
}

impl Bound {
    fn new(count: usize, mut hashes: Vec<u32>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        Self { count, hashes }
    }

    /// The exact bound of these contents.
    fn of(contents: &[&ContentId]) -> Self {
        Self::new(
            contents.len(),
            contents.iter().map(|content| Self::hash(content)).collect(),
        )
    }

    /// Counts `created` records more, and their contents.
    fn add(&mut self, created: &[&ContentId]) {
        self.count = self.count.saturating_add(created.len());
        self.hashes
            .extend(created.iter().map(|content| Self::hash(content)));
        self.hashes.sort_unstable();
        self.hashes.dedup();
    }

    /// False only when the user has no live record of `content`.
    fn may_hold(&self, content: &ContentId) -> bool {
        self.hashes.binary_search(&Self::hash(content)).is_ok()
    }

    fn hash(content: &ContentId) -> u32 {
        content_hash(content.as_str().as_bytes())
    }

    fn encode(&self) -> Vec<u8> {
        std::iter::once(u32::try_from(self.count).unwrap_or(u32::MAX))
            .chain(self.hashes.iter().copied())
            .flat_map(u32::to_be_bytes)
            .collect()
    }
}

/// FNV-1a, 32 bits: stable across builds (a bound outlives the process); a collision only
/// costs the lookup it would have saved.
fn content_hash(content: &[u8]) -> u32 {
    content.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

fn encode(record: &ViewRecord) -> Vec<u8> {
    prost::Message::encode_to_vec(&ViewRecordProto {
        position_ms: record.position_ms,
        last_viewed_ms: record.last_viewed_at.as_millis(),
        completed: record.completed,
    })
}

fn decode(content_id: ContentId, bytes: &[u8]) -> Result<ViewRecord, StorageError> {
    let record = <ViewRecordProto as prost::Message>::decode(bytes).map_err(|error| {
        StorageError::Corrupt {
            what: "view record",
            detail: format!("{content_id}: {error}"),
        }
    })?;
    Ok(ViewRecord {
        content_id,
        position_ms: record.position_ms,
        last_viewed_at: Timestamp::from_millis(record.last_viewed_ms),
        completed: record.completed,
    })
}

#[cfg(test)]
#[path = "view_history_store_tests.rs"]
mod tests;
