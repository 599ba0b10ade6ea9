//! Station state (one record per station, with the last applied inbox sequence) and the
//! play history (time-partitioned, capped per station, paged by `play_seq`).

use std::sync::Arc;
use std::time::Duration;

use playhead_proto::ids::StationId;
use playhead_proto::v1;

use super::clock::Clock;
use super::keyspace::{
    CompactionReport, Direction, Expiry, KeyspaceConfig, Placement, TimeKeyspace,
};
use super::{MainWrites, StorageError};
use crate::config::StationConfig;
use crate::domain::station::{CurrentPlay, Song, StationEvent, StationState};
use crate::domain::time::Timestamp;
use crate::journal::codec::read_enrichment;
use crate::wire;

/// One play as stored (and as listed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlayRecord {
    #[prost(uint64, tag = "1")]
    pub play_seq: u64,
    #[prost(string, tag = "2")]
    pub artist: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(uint64, tag = "4")]
    pub started_at_ms: u64,
    #[prost(uint64, optional, tag = "5")]
    pub ended_at_ms: Option<u64>,
    /// As recorded in the journal's `SongEnriched` (absent until it arrived).
    #[prost(message, optional, tag = "6")]
    pub enrichment: Option<v1::SongEnrichment>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StationSnapshot {
    #[prost(uint64, tag = "1")]
    last_applied_seq: u64,
    #[prost(uint64, tag = "2")]
    last_play_seq: u64,
    #[prost(message, optional, tag = "3")]
    current: Option<PlayRecord>,
    #[prost(uint64, tag = "4")]
    last_journal_seq: u64,
}

/// A station's state, the last inbox sequence folded into it and its last journal event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredStation {
    pub state: StationState,
    pub last_applied_seq: u64,
    pub last_journal_seq: u64,
}

pub use playhead_client::query::PlaysQuery;

/// Plays newest first, with the cursors for the neighbouring pages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlaysPage {
    pub plays: Vec<PlayRecord>,
    pub next_before: Option<u64>,
    pub next_since: Option<u64>,
}

#[derive(Clone)]
pub struct StationStore {
    states: sled::Tree,
    plays: TimeKeyspace,
    history_cap: u64,
}

impl StationStore {
    pub fn open(
        db: &sled::Db,
        config: &StationConfig,
        clock: Arc<dyn Clock>,
        placement: Placement,
    ) -> Result<Self, StorageError> {
        let plays = TimeKeyspace::open_placed(
            db,
            KeyspaceConfig {
                name: "station_plays".into(),
                bucket_width: Duration::from_secs(config.history_bucket_secs),
                retention: Duration::from_secs(config.history_retention_secs),
            },
            clock,
            placement,
        )?;
        Ok(Self {
            states: db.open_tree("station_state")?,
            plays,
            history_cap: config.history_cap,
        })
    }

    /// The play history's keyspace.
    pub fn plays(&self) -> &TimeKeyspace {
        &self.plays
    }

    /// The station's stored state, or the initial state if it was never seen.
    pub fn load(&self, station: &StationId) -> Result<StoredStation, StorageError> {
        let Some(bytes) = self.states.get(station.as_str())? else {
            return Ok(StoredStation::default());
        };
        let snapshot =
            <StationSnapshot as prost::Message>::decode(bytes.as_ref()).map_err(|error| {
                StorageError::Corrupt {
                    what: "station state",
                    detail: format!("{station}: {error}"),
                }
            })?;
        let current = snapshot
            .current
            .map(|play| {
                let enrichment =
                    play.enrichment
                        .map(read_enrichment)
                        .transpose()
                        .map_err(|error| StorageError::Corrupt {
                            what: "station state",
                            detail: format!("{station}: enrichment: {error}"),
                        })?;
                Ok::<_, StorageError>(CurrentPlay {
                    play_seq: play.play_seq,
                    song: Song {
                        artist: play.artist,
                        title: play.title,
                    },
                    started_at: Timestamp::from_millis(play.started_at_ms),
                    enrichment,
                })
            })
            .transpose()?;
        Ok(StoredStation {
            state: StationState {
                current,
                last_play_seq: snapshot.last_play_seq,
            },
            last_applied_seq: snapshot.last_applied_seq,
            last_journal_seq: snapshot.last_journal_seq,
        })
    }

    /// [`Self::commit_plays`], then [`Self::commit_state`], written at once (tests and
    /// benchmarks; an entity commit writes the state only once the plays are durable).
    pub fn commit(
        &self,
        station: &StationId,
        events: &[&StationEvent],
        stored: &StoredStation,
    ) -> Result<(), StorageError> {
        self.commit_plays(station, events, &stored.state)?;
        MainWrites::write_now(|writes| self.commit_state(writes, station, stored))
    }

    /// Writes the plays the events touch, one by one in order (no `sled::Batch`: it takes
    /// sled's process-wide exclusive lock), and removes those the cap evicts; returns whether
    /// it wrote anything. Before [`Self::commit_state`]: a crash in between leaves some of the
    /// plays, which the redelivered message rewrites identically.
    pub fn commit_plays(
        &self,
        station: &StationId,
        events: &[&StationEvent],
        state: &StationState,
    ) -> Result<bool, StorageError> {
        let mut evicted = Vec::new();
        // One record per play the events touch, as it stands after them (in event order).
        let mut touched: Vec<PlayRecord> = Vec::new();
        for event in events {
            if let StationEvent::SongStarted { play_seq, .. } = event
                && *play_seq > self.history_cap
            {
                evicted.push(play_key(station, play_seq - self.history_cap));
            }
            let record = match event {
                StationEvent::SongEnriched {
                    play_seq,
                    enrichment,
                } => {
                    if let Some(record) = touched.iter_mut().find(|r| r.play_seq == *play_seq) {
                        record.enrichment = Some(wire::song_enrichment(enrichment));
                        continue;
                    }
                    // Enriched after it started: the play on air holds everything else.
                    match state.current.as_ref() {
                        Some(current) if current.play_seq == *play_seq => current_record(current),
                        _ => continue,
                    }
                }
                _ => play_record(event),
            };
            match touched.iter_mut().find(|r| r.play_seq == record.play_seq) {
                Some(existing) => *existing = record,
                None => touched.push(record),
            }
        }
        let play_writes: Vec<(Vec<u8>, Vec<u8>)> = touched
            .iter()
            .map(|record| {
                (
                    play_key(station, record.play_seq),
                    prost::Message::encode_to_vec(record),
                )
            })
            .collect();
        let wrote = !play_writes.is_empty() || !evicted.is_empty();
        if !play_writes.is_empty() {
            self.plays.insert_each(play_writes)?;
        }
        for key in evicted {
            self.plays.remove(&key)?;
        }
        Ok(wrote)
    }

    /// Writes the station's state (its journal position with it).
    pub fn commit_state(
        &self,
        writes: &mut MainWrites,
        station: &StationId,
        stored: &StoredStation,
    ) {
        let snapshot = StationSnapshot {
            last_applied_seq: stored.last_applied_seq,
            last_journal_seq: stored.last_journal_seq,
            last_play_seq: stored.state.last_play_seq,
            current: stored.state.current.as_ref().map(current_record),
        };
        writes.insert(
            &self.states,
            station.as_str(),
            prost::Message::encode_to_vec(&snapshot),
        );
    }

    /// Up to `limit` stations whose play on air has no enrichment, with that play: those a
    /// stopped run left waiting for the provider are filed again at start.
    pub fn unenriched_plays(
        &self,
        limit: usize,
    ) -> Result<Vec<(StationId, u64, Song)>, StorageError> {
        let mut plays = Vec::new();
        for entry in self.states.iter() {
            if plays.len() >= limit {
                break;
            }
            let (key, bytes) = entry?;
            let Ok(station) = StationId::parse(String::from_utf8_lossy(&key).into_owned()) else {
                continue;
            };
            let Ok(snapshot) = <StationSnapshot as prost::Message>::decode(bytes.as_ref()) else {
                continue;
            };
            if let Some(play) = snapshot.current
                && play.enrichment.is_none()
            {
                plays.push((
                    station,
                    play.play_seq,
                    Song {
                        artist: play.artist,
                        title: play.title,
                    },
                ));
            }
        }
        Ok(plays)
    }

    pub fn list_plays(
        &self,
        station: &StationId,
        query: PlaysQuery,
    ) -> Result<PlaysPage, StorageError> {
        let page_size = query.page_size.max(1);
        let mut plays = match (query.since, query.before) {
            (Some(since), before) => {
                let upper = before.unwrap_or(u64::MAX);
                let mut ascending = self.collect(
                    play_key(station, since.saturating_add(1))..play_key(station, upper),
                    Direction::Forward,
                    page_size,
                )?;
                ascending.reverse();
                ascending
            }
            (None, before) => self.collect(
                play_key(station, 0)..play_key(station, before.unwrap_or(u64::MAX)),
                Direction::Reverse,
                page_size,
            )?,
        };
        plays.retain(|play| play.play_seq != 0);
        let next_since = plays.first().map(|play| play.play_seq).or(query.since);
        let next_before = match plays.last() {
            Some(oldest) if self.has_play_before(station, oldest.play_seq)? => {
                Some(oldest.play_seq)
            }
            _ => None,
        };
        Ok(PlaysPage {
            plays,
            next_before,
            next_since,
        })
    }

    /// Drops expired play-history buckets.
    pub fn compact_history(&self, expiry: &Expiry) -> Result<CompactionReport, StorageError> {
        Ok(self.plays.compact(expiry)?)
    }

    fn has_play_before(&self, station: &StationId, play_seq: u64) -> Result<bool, StorageError> {
        let mut older = self.plays.range(
            play_key(station, 1)..play_key(station, play_seq),
            Direction::Reverse,
        )?;
        Ok(older.next().transpose()?.is_some())
    }

    fn collect(
        &self,
        range: std::ops::Range<Vec<u8>>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<PlayRecord>, StorageError> {
        self.plays
            .range(range, direction)?
            .take(limit)
            .map(|entry| {
                let (_, value) = entry?;
                <PlayRecord as prost::Message>::decode(value.as_ref()).map_err(|error| {
                    StorageError::Corrupt {
                        what: "play record",
                        detail: error.to_string(),
                    }
                })
            })
            .collect()
    }
}

/// `{station_id}/{play_seq as big-endian u64}`: ids cannot contain `/`, so one station's
/// keys never interleave with another's, and big-endian keeps them in play order.
fn play_key(station: &StationId, play_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(station.as_str().len() + 9);
    key.extend_from_slice(station.as_str().as_bytes());
    key.push(b'/');
    key.extend_from_slice(&play_seq.to_be_bytes());
    key
}

fn current_record(play: &CurrentPlay) -> PlayRecord {
    PlayRecord {
        play_seq: play.play_seq,
        artist: play.song.artist.clone(),
        title: play.song.title.clone(),
        started_at_ms: play.started_at.as_millis(),
        ended_at_ms: None,
        enrichment: play.enrichment.as_ref().map(wire::song_enrichment),
    }
}

/// The record of the play a `SongStarted` or `SongEnded` describes (a `SongEnriched` is
/// folded into the record by [`StationStore::commit`]).
fn play_record(event: &StationEvent) -> PlayRecord {
    match event {
        StationEvent::SongStarted {
            play_seq,
            song,
            started_at,
        } => PlayRecord {
            play_seq: *play_seq,
            artist: song.artist.clone(),
            title: song.title.clone(),
            started_at_ms: started_at.as_millis(),
            ended_at_ms: None,
            enrichment: None,
        },
        StationEvent::SongEnded {
            play_seq,
            song,
            started_at,
            ended_at,
            enrichment,
        } => PlayRecord {
            play_seq: *play_seq,
            artist: song.artist.clone(),
            title: song.title.clone(),
            started_at_ms: started_at.as_millis(),
            ended_at_ms: Some(ended_at.as_millis()),
            enrichment: enrichment.as_ref().map(wire::song_enrichment),
        },
        StationEvent::SongEnriched { play_seq, .. } => PlayRecord {
            play_seq: *play_seq,
            ..PlayRecord::default()
        },
    }
}
