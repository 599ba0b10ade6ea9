//! The enrichment cache: what the provider answered for each distinct song (by its normalised
//! key), in a time-partitioned keyspace with a sliding TTL (a song played again moves into the
//! current bucket; one not played for `cache_ttl_secs` leaves with its bucket). A "not found"
//! answer is kept too, and counts only for `not_found_ttl_secs`.

use std::sync::Arc;
use std::time::Duration;

use playhead_proto::v1;

use super::StorageError;
use super::clock::Clock;
use super::keyspace::{CompactionReport, Expiry, KeyspaceConfig, TimeKeyspace};
use crate::config::EnrichmentConfig;
use crate::domain::enrichment::Enrichment;
use crate::journal::codec::read_enrichment;
use crate::wire;

/// What the cache holds for a song.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Found(Enrichment),
    /// The provider did not know the song (and the answer still counts).
    NotFound,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CachedSong {
    #[prost(message, optional, tag = "1")]
    enrichment: Option<v1::SongEnrichment>,
    /// When the provider said it does not know the song (0 when found).
    #[prost(uint64, tag = "2")]
    not_found_at_ms: u64,
}

#[derive(Clone)]
pub struct EnrichmentStore {
    songs: TimeKeyspace,
    not_found_ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl EnrichmentStore {
    pub fn open(
        db: &sled::Db,
        config: &EnrichmentConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StorageError> {
        let songs = TimeKeyspace::open(
            db,
            KeyspaceConfig {
                name: "enrichment".into(),
                bucket_width: Duration::from_secs(config.cache_bucket_secs),
                retention: Duration::from_secs(config.cache_ttl_secs),
            },
            clock.clone(),
        )?;
        Ok(Self {
            songs,
            not_found_ttl: Duration::from_secs(config.not_found_ttl_secs),
            clock,
        })
    }

    /// What is known of the song `key`; a hit from an older bucket is moved into the current
    /// one (sliding TTL).
    pub fn lookup(&self, key: &str) -> Result<Option<Cached>, StorageError> {
        let Some((bucket, bytes)) = self.songs.get_located(key.as_bytes())? else {
            return Ok(None);
        };
        let stored = <CachedSong as prost::Message>::decode(bytes.as_ref()).map_err(|error| {
            StorageError::Corrupt {
                what: "enrichment cache entry",
                detail: error.to_string(),
            }
        })?;
        let now = self.clock.now_millis();
        let cached = match stored.enrichment {
            Some(enrichment) => Cached::Found(read_enrichment(enrichment).map_err(|error| {
                StorageError::Corrupt {
                    what: "enrichment cache entry",
                    detail: error.to_string(),
                }
            })?),
            None => {
                let until = stored
                    .not_found_at_ms
                    .saturating_add(self.not_found_ttl.as_millis() as u64);
                if until <= now {
                    return Ok(None);
                }
                return Ok(Some(Cached::NotFound));
            }
        };
        if bucket != self.songs.bucket_of(now) {
            self.songs.insert(key.as_bytes(), &bytes)?;
        }
        Ok(Some(cached))
    }

    pub fn store_found(&self, key: &str, enrichment: &Enrichment) -> Result<(), StorageError> {
        let stored = CachedSong {
            enrichment: Some(wire::song_enrichment(enrichment)),
            not_found_at_ms: 0,
        };
        self.songs
            .insert(key.as_bytes(), &prost::Message::encode_to_vec(&stored))?;
        Ok(())
    }

    pub fn store_not_found(&self, key: &str) -> Result<(), StorageError> {
        let stored = CachedSong {
            enrichment: None,
            not_found_at_ms: self.clock.now_millis(),
        };
        self.songs
            .insert(key.as_bytes(), &prost::Message::encode_to_vec(&stored))?;
        Ok(())
    }

    /// Drops expired cache buckets.
    pub fn compact(&self, expiry: &Expiry) -> Result<CompactionReport, StorageError> {
        Ok(self.songs.compact(expiry)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use crate::storage::clock::ManualClock;

    const DAY: u64 = 24 * 3600 * 1000;

    fn store(clock: Arc<ManualClock>) -> (tempfile::TempDir, EnrichmentStore) {
        let directory = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(directory.path()).open().unwrap();
        let config = EnrichmentConfig {
            cache_ttl_secs: 3 * 24 * 3600,
            cache_bucket_secs: 24 * 3600,
            not_found_ttl_secs: 3600,
            ..EnrichmentConfig::default()
        };
        (
            directory,
            EnrichmentStore::open(&db, &config, clock).unwrap(),
        )
    }

    fn found() -> Enrichment {
        Enrichment {
            recording_mbid: "r-1".into(),
            title: "Sinnerman".into(),
            release_year: 1965,
            cover_url: "https://coverartarchive.org/x.jpg".into(),
            enriched_at: Timestamp::from_millis(5),
            ..Enrichment::default()
        }
    }

    #[test]
    fn a_found_song_reads_back_and_slides_with_its_plays() {
        let clock = Arc::new(ManualClock::new(10 * DAY));
        let (_directory, store) = store(clock.clone());
        assert_eq!(store.lookup("a\u{1f}b").unwrap(), None);
        store.store_found("a\u{1f}b", &found()).unwrap();
        // Played again every two days: it never leaves, though the TTL is three days.
        for _ in 0..5 {
            clock.advance(Duration::from_millis(2 * DAY));
            assert_eq!(
                store.lookup("a\u{1f}b").unwrap(),
                Some(Cached::Found(found()))
            );
        }
        // Not played for four days: gone.
        clock.advance(Duration::from_millis(4 * DAY));
        assert_eq!(store.lookup("a\u{1f}b").unwrap(), None);
    }

    #[test]
    fn a_not_found_answer_counts_only_for_its_own_ttl() {
        let clock = Arc::new(ManualClock::new(10 * DAY));
        let (_directory, store) = store(clock.clone());
        store.store_not_found("x\u{1f}y").unwrap();
        clock.advance(Duration::from_millis(3_599_000));
        assert_eq!(store.lookup("x\u{1f}y").unwrap(), Some(Cached::NotFound));
        clock.advance(Duration::from_millis(1_000));
        assert_eq!(store.lookup("x\u{1f}y").unwrap(), None);
        // A later answer replaces it.
        store.store_found("x\u{1f}y", &found()).unwrap();
        assert_eq!(
            store.lookup("x\u{1f}y").unwrap(),
            Some(Cached::Found(found()))
        );
    }
}
