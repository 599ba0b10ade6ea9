//! Upcoming shows, dated by their start: each show lives in the bucket of its start time in a
//! time-partitioned keyspace (`ks/shows`), so it leaves with its bucket once the show is over
//! (`imports.show_keep_after_start_secs` after the bucket's end), never by a per-row delete.
//!
//! In each bucket tree:
//! - `s{fingerprint}` → the show ([`ShowValue`]), with where it was first listed (import
//!   serial and line): written last, it is what makes a show known;
//! - `a{artist key}\0{starts_at_ms: 8 bytes BE}{fingerprint}` → empty: the artist index, in
//!   start order, that listings scan.
//!
//! Known fingerprints are kept in memory (loaded from the live buckets at open), so
//! de-duplicating a record costs one map lookup. A record written again by the same import line
//! (a resumed import going over lines it did before a crash) is recognised by its origin and
//! counted as new again, so an interrupted import ends with exact counts.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::StorageError;
use super::clock::Clock;
use super::keyspace::{BucketIndex, CompactionReport, Expiry, KeyspaceConfig, TimeKeyspace};
use crate::config::ImportsConfig;

/// A show's fingerprint (see `domain::show::fingerprint`).
pub type Fingerprint = [u8; 16];

const RECORD_TAG: u8 = b's';
const ARTIST_TAG: u8 = b'a';

/// Where a show was first listed: the import (by its serial) and the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub import_serial: u64,
    pub line: u64,
}

/// A show as stored.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ShowValue {
    #[prost(string, tag = "1")]
    pub artist: String,
    #[prost(string, tag = "2")]
    pub artist_key: String,
    #[prost(string, tag = "3")]
    pub venue: String,
    #[prost(string, tag = "4")]
    pub city: String,
    #[prost(string, tag = "5")]
    pub country: String,
    #[prost(uint64, tag = "6")]
    pub starts_at_ms: u64,
    #[prost(string, tag = "7")]
    pub url: String,
    #[prost(string, tag = "8")]
    pub source: String,
    #[prost(string, tag = "9")]
    pub source_event_id: String,
    #[prost(uint64, tag = "10")]
    pub import_serial: u64,
    #[prost(uint64, tag = "11")]
    pub line: u64,
}

/// What [`ShowStore::add`] did with a show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored: nobody listed it before (or this very line did, before a restart).
    New,
    /// A show with the same fingerprint is known.
    Duplicate,
    /// Its bucket has already expired: the show is over.
    Over,
}

/// Where listing resumes: after the show with this start and fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShowCursor {
    pub starts_at_ms: u64,
    pub fingerprint: Fingerprint,
}

impl ShowCursor {
    const TOKEN_VERSION: u8 = 1;

    /// The opaque page token (hex of a version byte, the start and the fingerprint).
    pub fn token(&self) -> String {
        let mut bytes = Vec::with_capacity(25);
        bytes.push(Self::TOKEN_VERSION);
        bytes.extend_from_slice(&self.starts_at_ms.to_be_bytes());
        bytes.extend_from_slice(&self.fingerprint);
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Reads a token made by [`Self::token`].
    pub fn parse(token: &str) -> Option<Self> {
        if token.len() != 50 || !token.is_ascii() {
            return None;
        }
        let bytes: Vec<u8> = (0..25)
            .map(|index| u8::from_str_radix(&token[index * 2..index * 2 + 2], 16))
            .collect::<Result<_, _>>()
            .ok()?;
        if bytes[0] != Self::TOKEN_VERSION {
            return None;
        }
        Some(Self {
            starts_at_ms: u64::from_be_bytes(bytes[1..9].try_into().ok()?),
            fingerprint: bytes[9..25].try_into().ok()?,
        })
    }
}

/// One page of shows in start order, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShowsPage {
    pub shows: Vec<ShowValue>,
    pub next: Option<ShowCursor>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    bucket: BucketIndex,
    origin: Origin,
}

#[derive(Clone)]
pub struct ShowStore {
    shows: TimeKeyspace,
    known: Arc<RwLock<HashMap<Fingerprint, Known>>>,
}

impl ShowStore {
    /// Opens the keyspace and loads the fingerprints of its live shows.
    pub fn open(
        db: &sled::Db,
        config: &ImportsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StorageError> {
        let shows = TimeKeyspace::open(
            db,
            KeyspaceConfig {
                name: "shows".into(),
                bucket_width: Duration::from_secs(config.show_bucket_secs),
                retention: Duration::from_secs(config.show_keep_after_start_secs),
            },
            clock,
        )?;
        let mut known = HashMap::new();
        for (bucket, tree) in shows.live_buckets_from(0) {
            for entry in tree.scan_prefix([RECORD_TAG]) {
                let (key, value) = entry?;
                let Ok(fingerprint) = Fingerprint::try_from(&key[1..]) else {
                    continue;
                };
                let show = decode(&value)?;
                known.insert(
                    fingerprint,
                    Known {
                        bucket,
                        origin: Origin {
                            import_serial: show.import_serial,
                            line: show.line,
                        },
                    },
                );
            }
        }
        if !known.is_empty() {
            tracing::info!(shows = known.len(), "loaded the fingerprints of live shows");
        }
        Ok(Self {
            shows,
            known: Arc::new(RwLock::new(known)),
        })
    }

    /// Stores `show` unless a show with its fingerprint is known (see [`Added`]).
    pub fn add(&self, fingerprint: Fingerprint, show: &ShowValue) -> Result<Added, StorageError> {
        let origin = Origin {
            import_serial: show.import_serial,
            line: show.line,
        };
        let known = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fingerprint)
            .copied();
        if let Some(known) = known
            && self.shows.is_live(known.bucket)
            && known.origin != origin
        {
            return Ok(Added::Duplicate);
        }
        // New, or written by this very line before: (re)written whole, index first, so a show
        // is known only once it is listed.
        let index_key = artist_index_key(&show.artist_key, show.starts_at_ms, &fingerprint);
        if !self
            .shows
            .insert_dated(show.starts_at_ms, &index_key, &[])?
        {
            return Ok(Added::Over);
        }
        self.shows.insert_dated(
            show.starts_at_ms,
            &record_key(&fingerprint),
            &prost::Message::encode_to_vec(show),
        )?;
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                fingerprint,
                Known {
                    bucket: self.shows.bucket_of(show.starts_at_ms),
                    origin,
                },
            );
        Ok(Added::New)
    }

    /// The shows of `artist_keys` starting at or after `from_ms` (and after `after`), in start
    /// order, at most `page_size`. Buckets are visited in time order and the scan stops at the
    /// first bucket that completes the page.
    pub fn list(
        &self,
        artist_keys: &[String],
        from_ms: u64,
        after: Option<ShowCursor>,
        page_size: usize,
    ) -> Result<ShowsPage, StorageError> {
        let page_size = page_size.max(1);
        let from_ms = after.map_or(from_ms, |cursor| from_ms.max(cursor.starts_at_ms));
        let mut found: Vec<(ShowCursor, sled::Tree)> = Vec::new();
        for (_, tree) in self.shows.live_buckets_from(from_ms) {
            for artist in artist_keys {
                let start = artist_index_key(artist, from_ms, &[0; 16]);
                let end = artist_index_key(artist, u64::MAX, &[0xff; 16]);
                for entry in tree.range(start..=end) {
                    let (key, _) = match entry {
                        Ok(entry) => entry,
                        Err(sled::Error::CollectionNotFound(_)) => break,
                        Err(error) => return Err(error.into()),
                    };
                    let Some(cursor) = parse_artist_index_key(&key, artist.len()) else {
                        continue;
                    };
                    if after.is_some_and(|after| cursor <= after) {
                        continue;
                    }
                    found.push((cursor, tree.clone()));
                }
            }
            if found.len() > page_size {
                break;
            }
        }
        found.sort_by_key(|(cursor, _)| *cursor);
        let more = found.len() > page_size;
        found.truncate(page_size);
        let mut shows = Vec::with_capacity(found.len());
        for (cursor, tree) in &found {
            // An index entry without its record is a write a crash cut short: not a show.
            match tree.get(record_key(&cursor.fingerprint)) {
                Ok(Some(value)) => shows.push(decode(&value)?),
                Ok(None) | Err(sled::Error::CollectionNotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(ShowsPage {
            shows,
            next: if more {
                found.last().map(|(cursor, _)| *cursor)
            } else {
                None
            },
        })
    }

    /// Live shows known (their fingerprints in memory).
    pub fn known_count(&self) -> usize {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drops expired buckets, and forgets their fingerprints.
    pub fn compact(&self, expiry: &Expiry) -> Result<CompactionReport, StorageError> {
        let report = self.shows.compact(expiry)?;
        if report.buckets_dropped > 0 {
            let shows = &self.shows;
            self.known
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, known| shows.is_live(known.bucket));
        }
        Ok(report)
    }
}

fn record_key(fingerprint: &Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(RECORD_TAG);
    key.extend_from_slice(fingerprint);
    key
}

/// `a{artist}\0{starts_at_ms BE}{fingerprint}`; an artist key holds no NUL (it is normalised
/// text), so one artist's entries never interleave with another's.
fn artist_index_key(artist_key: &str, starts_at_ms: u64, fingerprint: &Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(artist_key.len() + 26);
    key.push(ARTIST_TAG);
    key.extend_from_slice(artist_key.as_bytes());
    key.push(0);
    key.extend_from_slice(&starts_at_ms.to_be_bytes());
    key.extend_from_slice(fingerprint);
    key
}

fn parse_artist_index_key(key: &[u8], artist_len: usize) -> Option<ShowCursor> {
    let rest = key.get(artist_len + 2..)?;
    if rest.len() != 24 {
        return None;
    }
    Some(ShowCursor {
        starts_at_ms: u64::from_be_bytes(rest[..8].try_into().ok()?),
        fingerprint: rest[8..].try_into().ok()?,
    })
}

fn decode(bytes: &[u8]) -> Result<ShowValue, StorageError> {
    prost::Message::decode(bytes).map_err(|error| StorageError::Corrupt {
        what: "show",
        detail: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::clock::ManualClock;

    const DAY: u64 = 24 * 3600 * 1000;

    fn store(dir: &std::path::Path, clock: Arc<ManualClock>) -> ShowStore {
        // A store dropped just before may hold its file lock a moment longer (sled's threads).
        let db = crate::storage::reopen_db(&sled::Config::new().path(dir));
        ShowStore::open(&db, &ImportsConfig::default(), clock).unwrap()
    }

    fn show(artist: &str, starts_at_ms: u64, serial: u64, line: u64) -> ShowValue {
        ShowValue {
            artist: artist.to_owned(),
            artist_key: artist.to_lowercase(),
            venue: "Hall".into(),
            city: "Oslo".into(),
            country: "NO".into(),
            starts_at_ms,
            url: "https://example.com".into(),
            source: "s".into(),
            source_event_id: String::new(),
            import_serial: serial,
            line,
        }
    }

    fn fingerprint(n: u8) -> Fingerprint {
        [n; 16]
    }

    #[test]
    fn given_a_known_show_when_another_line_lists_it_then_it_is_a_duplicate_but_the_same_line_again_is_new()
     {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(100 * DAY));
        let shows = store(dir.path(), clock);
        let first = show("abba", 101 * DAY, 1, 7);
        assert_eq!(shows.add(fingerprint(1), &first).unwrap(), Added::New);
        assert_eq!(
            shows
                .add(fingerprint(1), &show("abba", 101 * DAY, 1, 8))
                .unwrap(),
            Added::Duplicate
        );
        assert_eq!(
            shows
                .add(fingerprint(1), &show("abba", 101 * DAY, 2, 7))
                .unwrap(),
            Added::Duplicate
        );
        assert_eq!(
            shows.add(fingerprint(1), &first).unwrap(),
            Added::New,
            "the line that listed it, gone over again after a restart"
        );
    }

    #[test]
    fn given_shows_of_several_artists_when_listed_in_pages_then_every_show_comes_once_in_start_order()
     {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(100 * DAY));
        let shows = store(dir.path(), clock);
        let mut expected = Vec::new();
        for n in 0..30u8 {
            let artist = if n % 3 == 0 { "other" } else { "abba" };
            // Spread over several days, written out of order.
            let starts_at = 100 * DAY + u64::from((n * 7) % 30) * DAY / 3 + u64::from(n);
            let value = show(artist, starts_at, 1, u64::from(n));
            assert_eq!(shows.add(fingerprint(n), &value).unwrap(), Added::New);
            if artist == "abba" {
                expected.push(starts_at);
            }
        }
        expected.sort_unstable();
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = shows.list(&["abba".to_owned()], 0, after, 4).unwrap();
            assert!(page.shows.len() <= 4);
            listed.extend(page.shows.iter().map(|show| show.starts_at_ms));
            match page.next {
                Some(next) => after = Some(ShowCursor::parse(&next.token()).unwrap()),
                None => break,
            }
        }
        assert_eq!(listed, expected);
    }

    #[test]
    fn given_a_show_whose_bucket_expired_when_compacted_then_it_is_gone_and_no_longer_known() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(100 * DAY));
        let shows = store(dir.path(), clock.clone());
        shows
            .add(fingerprint(1), &show("abba", 100 * DAY + 5, 1, 1))
            .unwrap();
        shows
            .add(fingerprint(2), &show("abba", 110 * DAY, 1, 2))
            .unwrap();
        clock.set(103 * DAY);
        let page = shows.list(&["abba".to_owned()], 0, None, 10).unwrap();
        assert_eq!(page.shows.len(), 1, "the first show is over");
        let report = shows.compact(&Expiry::whole()).unwrap();
        assert_eq!(report.buckets_dropped, 1);
        assert_eq!(shows.known_count(), 1);
        assert_eq!(
            shows
                .add(fingerprint(3), &show("abba", 100 * DAY, 1, 3))
                .unwrap(),
            Added::Over
        );
    }

    #[test]
    fn known_shows_are_loaded_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(100 * DAY));
        {
            let shows = store(dir.path(), clock.clone());
            shows
                .add(fingerprint(1), &show("abba", 101 * DAY, 1, 1))
                .unwrap();
        }
        let shows = store(dir.path(), clock);
        assert_eq!(
            shows
                .add(fingerprint(1), &show("abba", 101 * DAY, 2, 1))
                .unwrap(),
            Added::Duplicate
        );
    }

    #[test]
    fn page_tokens_read_back_and_garbage_is_refused() {
        let cursor = ShowCursor {
            starts_at_ms: 1_234_567,
            fingerprint: [0xab; 16],
        };
        assert_eq!(ShowCursor::parse(&cursor.token()), Some(cursor));
        assert_eq!(ShowCursor::parse("zz"), None);
        assert_eq!(ShowCursor::parse(&"0".repeat(50)), None);
    }
}
