//! Player sessions, one record per (user, playlist) in a time-partitioned keyspace: every
//! write refreshes the record into the current bucket (the sliding TTL), and expiry drops
//! whole buckets. Each record carries the last inbox sequence applied to it (so a redelivered
//! command is recognised) and the answer given to that command (so it can be given again).

use std::sync::Arc;
use std::time::Duration;

use playhead_proto::ids::{PlaylistId, UserId};

use super::StorageError;
use super::clock::Clock;
use super::keyspace::{
    CompactionReport, Direction, Expiry, KeyspaceConfig, Placement, TimeKeyspace,
};
use crate::config::PlayerConfig;
use crate::domain::player::{Session, SessionStatus, Track, shuffled_order};
use crate::domain::time::Timestamp;

/// The answer given to the last command applied to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastAnswer {
    /// A `playhead.v1.PlayerOutcome` value.
    pub outcome: i32,
    pub retry_after_ms: u64,
}

/// A session with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub session: Session,
    pub last_applied_seq: u64,
    pub last_answer: LastAnswer,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TrackRecord {
    #[prost(string, tag = "1")]
    track_id: String,
    #[prost(string, tag = "2")]
    artist: String,
}

/// The order is not stored: it is derived from the seed, as `evolve` derives it.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionRecord {
    #[prost(uint64, tag = "1")]
    last_applied_seq: u64,
    #[prost(message, repeated, tag = "2")]
    tracks: Vec<TrackRecord>,
    #[prost(uint64, tag = "3")]
    seed: u64,
    #[prost(uint32, tag = "4")]
    position: u32,
    #[prost(uint64, repeated, tag = "5")]
    skipped_at_ms: Vec<u64>,
    #[prost(bool, tag = "6")]
    completed: bool,
    #[prost(uint64, tag = "7")]
    started_at_ms: u64,
    #[prost(uint64, tag = "8")]
    last_touched_at_ms: u64,
    #[prost(int32, tag = "9")]
    last_outcome: i32,
    #[prost(uint64, tag = "10")]
    last_retry_after_ms: u64,
}

/// The one field of a [`SessionRecord`] the session limit reads (prost skips the others).
#[derive(Clone, PartialEq, prost::Message)]
struct SessionTouch {
    #[prost(uint64, tag = "8")]
    last_touched_at_ms: u64,
}

#[derive(Clone)]
pub struct SessionStore {
    sessions: TimeKeyspace,
}

impl SessionStore {
    pub fn open(
        db: &sled::Db,
        config: &PlayerConfig,
        clock: Arc<dyn Clock>,
        placement: Placement,
    ) -> Result<Self, StorageError> {
        let sessions = TimeKeyspace::open_placed(
            db,
            KeyspaceConfig {
                name: "player_sessions".into(),
                bucket_width: Duration::from_secs(config.session_bucket_secs),
                retention: Duration::from_secs(config.session_ttl_secs),
            },
            clock,
            placement,
        )?;
        Ok(Self { sessions })
    }

    /// The newest live copy of the session, if any.
    pub fn load(
        &self,
        user: &UserId,
        playlist: &PlaylistId,
    ) -> Result<Option<StoredSession>, StorageError> {
        self.sessions
            .get(&session_key(user, playlist))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Writes (and so refreshes) the sessions of one user, one by one: each record carries
    /// the inbox sequence it reflects, so a crash that keeps some of them is folded forward
    /// record by record (and no `sled::Batch` takes sled's process-wide exclusive lock).
    pub fn save(
        &self,
        user: &UserId,
        sessions: &[(&PlaylistId, &StoredSession)],
    ) -> Result<(), StorageError> {
        let parts: Vec<_> = sessions
            .iter()
            .map(|(playlist, stored)| {
                (
                    *playlist,
                    &stored.session,
                    stored.last_applied_seq,
                    stored.last_answer,
                )
            })
            .collect();
        self.save_parts(user, &parts)
    }

    /// [`SessionStore::save`] from the parts an entity keeps apart: (playlist, session, last
    /// applied inbox sequence, last answer).
    pub fn save_parts(
        &self,
        user: &UserId,
        sessions: &[(&PlaylistId, &Session, u64, LastAnswer)],
    ) -> Result<(), StorageError> {
        if sessions.is_empty() {
            return Ok(());
        }
        self.sessions.insert_each(sessions.iter().map(
            |(playlist, session, last_applied_seq, last_answer)| {
                (
                    session_key(user, playlist),
                    encode(session, *last_applied_seq, *last_answer),
                )
            },
        ))?;
        Ok(())
    }

    /// Every stored session of `user` (live per the keyspace; the caller applies the policy).
    pub fn list(&self, user: &UserId) -> Result<Vec<(PlaylistId, StoredSession)>, StorageError> {
        self.scan_user(user, decode)
    }

    /// When each stored session of `user` was last touched, read without decoding the rest of
    /// the records (their tracks); what the limit on sessions per listener counts.
    pub fn touches(&self, user: &UserId) -> Result<Vec<(PlaylistId, Timestamp)>, StorageError> {
        self.scan_user(user, |bytes| {
            let touch: SessionTouch =
                prost::Message::decode(bytes).map_err(|error| StorageError::Corrupt {
                    what: "session record",
                    detail: error.to_string(),
                })?;
            Ok(Timestamp(touch.last_touched_at_ms))
        })
    }

    /// Every stored session record of `user`, by playlist, read by `read`.
    fn scan_user<T>(
        &self,
        user: &UserId,
        read: impl Fn(&[u8]) -> Result<T, StorageError>,
    ) -> Result<Vec<(PlaylistId, T)>, StorageError> {
        let prefix = user_prefix(user);
        self.sessions
            .scan_prefix(&prefix, Direction::Forward)?
            .map(|entry| {
                let (key, value) = entry?;
                let playlist = std::str::from_utf8(&key[prefix.len()..])
                    .ok()
                    .and_then(|token| PlaylistId::parse(token).ok())
                    .ok_or_else(|| StorageError::Corrupt {
                        what: "session key",
                        detail: String::from_utf8_lossy(&key).into_owned(),
                    })?;
                Ok((playlist, read(&value)?))
            })
            .collect()
    }

    /// Drops expired session buckets.
    pub fn compact(&self, expiry: &Expiry) -> Result<CompactionReport, StorageError> {
        Ok(self.sessions.compact(expiry)?)
    }

    /// The underlying keyspace (benchmarks and introspection).
    pub fn keyspace(&self) -> &TimeKeyspace {
        &self.sessions
    }
}

/// `{user_id}/`: ids cannot contain `/`, so one user's sessions never mix with another's.
fn user_prefix(user: &UserId) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(user.as_str().len() + 1);
    prefix.extend_from_slice(user.as_str().as_bytes());
    prefix.push(b'/');
    prefix
}

/// `{user_id}/{playlist_id}`.
pub fn session_key(user: &UserId, playlist: &PlaylistId) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(playlist.as_str().as_bytes());
    key
}

fn encode(session: &Session, last_applied_seq: u64, last_answer: LastAnswer) -> Vec<u8> {
    prost::Message::encode_to_vec(&SessionRecord {
        last_applied_seq,
        tracks: session
            .tracks
            .iter()
            .map(|track| TrackRecord {
                track_id: track.track_id.clone(),
                artist: track.artist.clone(),
            })
            .collect(),
        seed: session.seed,
        position: session.position as u32,
        skipped_at_ms: session.skipped_at.iter().map(|at| at.as_millis()).collect(),
        completed: session.status == SessionStatus::Completed,
        started_at_ms: session.started_at.as_millis(),
        last_touched_at_ms: session.last_touched_at.as_millis(),
        last_outcome: last_answer.outcome,
        last_retry_after_ms: last_answer.retry_after_ms,
    })
}

fn decode(bytes: &[u8]) -> Result<StoredSession, StorageError> {
    let record = <SessionRecord as prost::Message>::decode(bytes).map_err(|error| {
        StorageError::Corrupt {
            what: "player session",
            detail: error.to_string(),
        }
    })?;
    let tracks: Vec<Track> = record
        .tracks
        .into_iter()
        .map(|track| Track {
            track_id: track.track_id,
            artist: track.artist,
        })
        .collect();
    let order = shuffled_order(tracks.len(), record.seed);
    if record.position as usize > order.len() {
        return Err(StorageError::Corrupt {
            what: "player session",
            detail: format!(
                "position {} is past the {} tracks",
                record.position,
                order.len()
            ),
        });
    }
    Ok(StoredSession {
        session: Session {
            tracks,
            seed: record.seed,
            order,
            position: record.position as usize,
            skipped_at: record
                .skipped_at_ms
                .into_iter()
                .map(Timestamp::from_millis)
                .collect(),
            status: if record.completed {
                SessionStatus::Completed
            } else {
                SessionStatus::Playing
            },
            started_at: Timestamp::from_millis(record.started_at_ms),
            last_touched_at: Timestamp::from_millis(record.last_touched_at_ms),
        },
        last_applied_seq: record.last_applied_seq,
        last_answer: LastAnswer {
            outcome: record.last_outcome,
            retry_after_ms: record.last_retry_after_ms,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::player::{PlayerEvent, evolve};
    use crate::storage::clock::ManualClock;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn ids(user: &str, playlist: &str) -> (UserId, PlaylistId) {
        (
            UserId::parse(user).unwrap(),
            PlaylistId::parse(playlist).unwrap(),
        )
    }

    fn session(at_ms: u64) -> StoredSession {
        let tracks = (0..5)
            .map(|n| Track {
                track_id: format!("t{n}"),
                artist: format!("artist {n}"),
            })
            .collect();
        let started = PlayerEvent::SessionStarted {
            tracks,
            seed: 42,
            recent_skips: vec![],
            at: Timestamp::from_millis(at_ms),
        };
        let skipped = PlayerEvent::TrackAdvanced {
            track_id: "ignored".into(),
            skipped: true,
            at: Timestamp::from_millis(at_ms + 1),
        };
        let session = [started, skipped]
            .iter()
            .fold(None, evolve)
            .expect("started");
        StoredSession {
            session,
            last_applied_seq: 7,
            last_answer: LastAnswer {
                outcome: 2,
                retry_after_ms: 1234,
            },
        }
    }

    /// Sessions in bucket dbs under the returned directory.
    fn open(clock: &Arc<ManualClock>) -> (SessionStore, tempfile::TempDir) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (buckets, placement) = crate::storage::keyspace::temporary_bucket_dbs();
        let store =
            SessionStore::open(&db, &PlayerConfig::default(), clock.clone(), placement).unwrap();
        (store, buckets)
    }

    #[test]
    fn a_saved_session_loads_back_identically_with_its_order() {
        let clock = Arc::new(ManualClock::new(100 * DAY_MS));
        let (store, _buckets) = open(&clock);
        let (user, playlist) = ids("ann", "road-trip");
        let stored = session(100 * DAY_MS);
        store.save(&user, &[(&playlist, &stored)]).unwrap();
        assert_eq!(store.load(&user, &playlist).unwrap(), Some(stored));
        let (_, other) = ids("ann", "other");
        assert_eq!(store.load(&user, &other).unwrap(), None);
    }

    #[test]
    fn listing_returns_only_that_users_sessions_each_once_newest_copy() {
        let clock = Arc::new(ManualClock::new(100 * DAY_MS));
        let (store, _buckets) = open(&clock);
        let (ann, first) = ids("ann", "a");
        let (annie, second) = ids("annie", "b");
        store.save(&ann, &[(&first, &session(1))]).unwrap();
        store.save(&annie, &[(&second, &session(1))]).unwrap();
        clock.advance(std::time::Duration::from_millis(2 * DAY_MS));
        let mut touched = session(2);
        touched.last_applied_seq = 99;
        store.save(&ann, &[(&first, &touched)]).unwrap();
        let listed = store.list(&ann).unwrap();
        assert_eq!(listed, vec![(first, touched)]);
    }

    #[test]
    fn untouched_sessions_vanish_after_compaction_touched_ones_stay() {
        let clock = Arc::new(ManualClock::new(100 * DAY_MS));
        let (store, _buckets) = open(&clock);
        let (user, kept) = ids("ann", "kept");
        let (_, dropped) = ids("ann", "dropped");
        store
            .save(&user, &[(&kept, &session(1)), (&dropped, &session(1))])
            .unwrap();
        // Touch one of them every 20 days for 60 days.
        for _ in 0..3 {
            clock.advance(std::time::Duration::from_millis(20 * DAY_MS));
            store.save(&user, &[(&kept, &session(2))]).unwrap();
            store.compact(&Expiry::whole()).unwrap();
        }
        assert!(store.load(&user, &kept).unwrap().is_some());
        assert_eq!(store.load(&user, &dropped).unwrap(), None);
        assert_eq!(store.list(&user).unwrap().len(), 1);
    }
}
