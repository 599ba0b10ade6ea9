//! The gateway-local now-playing cache, push-fed by a watch of the KV bucket: every replica
//! is updated as stations change, with no polling and no TTL guessing. Each station has a
//! `watch` channel: readers get the latest value, and a slow watcher skips to the latest
//! instead of holding anyone back. Every change is also announced (by station id) to
//! [`NowPlayingCache::changes`], for followers of all stations such as the console's wall.
//!
//! Bounded: a station is held while it has a song or a watcher. Watching ids that have no
//! song leaves empty slots behind when the watch ends; once more than a bound of them pile up
//! (10,000 by default) the next new watch sweeps them, so the cache holds the stations that
//! play plus what is watched now, not every id ever asked for.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, kv};
use playhead_proto::ids::StationId;
use playhead_proto::subjects::NOW_PLAYING_BUCKET;
use playhead_proto::v1::NowPlaying;
use prost::Message;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::follow::follow_bucket;

type Slot = watch::Sender<Option<Arc<NowPlaying>>>;

/// Station changes an all-stations follower may fall behind by before it is told it lagged
/// (it then reads the whole [`NowPlayingCache::snapshot`] again).
const CHANGES_CAPACITY: usize = 4096;

/// Slots with neither a song nor a watcher tolerated before a sweep.
pub const DEFAULT_IDLE_SLOTS: usize = 10_000;

#[derive(Clone)]
pub struct NowPlayingCache {
    stations: Arc<RwLock<Stations>>,
    changes: broadcast::Sender<StationId>,
}

struct Stations {
    slots: HashMap<StationId, Slot>,
    idle_bound: usize,
    /// A new slot sweeps the idle ones once the map is this large.
    sweep_at: usize,
}

impl Default for NowPlayingCache {
    fn default() -> Self {
        Self::with_idle_bound(DEFAULT_IDLE_SLOTS)
    }
}

impl NowPlayingCache {
    /// A cache that sweeps once more than `idle_bound` slots have neither a song nor a watcher.
    pub fn with_idle_bound(idle_bound: usize) -> Self {
        Self {
            stations: Arc::new(RwLock::new(Stations {
                slots: HashMap::new(),
                idle_bound,
                sweep_at: idle_bound,
            })),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }

    /// The ids of the stations that change from now on (read their value with
    /// [`NowPlayingCache::get`]). Subscribe before taking a [`NowPlayingCache::snapshot`], so
    /// that nothing falls between the two.
    pub fn changes(&self) -> broadcast::Receiver<StationId> {
        self.changes.subscribe()
    }

    /// Every station that has a song now.
    pub fn snapshot(&self) -> Vec<(StationId, Arc<NowPlaying>)> {
        let stations = self.stations.read().expect("cache lock poisoned");
        stations
            .slots
            .iter()
            .filter_map(|(station, slot)| Some((station.clone(), slot.borrow().clone()?)))
            .collect()
    }

    pub fn get(&self, station: &StationId) -> Option<Arc<NowPlaying>> {
        let stations = self.stations.read().expect("cache lock poisoned");
        stations.slots.get(station)?.borrow().clone()
    }

    /// A receiver that sees the current value (if any) and every later one.
    pub fn subscribe(&self, station: &StationId) -> watch::Receiver<Option<Arc<NowPlaying>>> {
        if let Some(slot) = self
            .stations
            .read()
            .expect("cache lock poisoned")
            .slots
            .get(station)
        {
            return slot.subscribe();
        }
        let mut stations = self.stations.write().expect("cache lock poisoned");
        if stations.slots.len() >= stations.sweep_at {
            stations.sweep();
        }
        stations
            .slots
            .entry(station.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub fn len(&self) -> usize {
        self.stations
            .read()
            .expect("cache lock poisoned")
            .slots
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn store(&self, station: StationId, value: Option<Arc<NowPlaying>>) {
        let mut stations = self.stations.write().expect("cache lock poisoned");
        let slot = stations
            .slots
            .entry(station.clone())
            .or_insert_with(|| watch::channel(None).0);
        let newer = match (&*slot.borrow(), &value) {
            (Some(current), Some(next)) => is_newer(current, next),
            _ => true,
        };
        if newer {
            slot.send_replace(value);
            // No follower of all stations is not an error.
            let _ = self.changes.send(station);
        }
    }

    /// Follows the KV bucket until `stop`, re-watching after broker outages.
    pub async fn follow(self, jetstream: jetstream::Context, stop: CancellationToken) {
        follow_bucket(&jetstream, NOW_PLAYING_BUCKET, ">", &stop, |entry| {
            self.apply(entry)
        })
        .await
    }

    fn apply(&self, entry: kv::Entry) {
        let Ok(station) = StationId::parse(entry.key.clone()) else {
            tracing::warn!(key = %entry.key, "ignoring a now-playing key that is not a station id");
            return;
        };
        match entry.operation {
            kv::Operation::Put => match NowPlaying::decode(entry.value.as_ref()) {
                Ok(value) => self.store(station, Some(Arc::new(value))),
                Err(error) => tracing::warn!(%station, %error, "undecodable now-playing value"),
            },
            kv::Operation::Delete | kv::Operation::Purge => self.store(station, None),
        }
    }
}

impl Stations {
    /// Drops the slots with neither a song nor a watcher; the next sweep waits until the map
    /// has grown by the idle bound again (amortised O(1) per new slot).
    fn sweep(&mut self) {
        self.slots
            .retain(|_, slot| slot.borrow().is_some() || slot.receiver_count() > 0);
        self.sweep_at = self.slots.len() + self.idle_bound;
    }
}

/// A later play, or the same play once its enrichment arrived (a redelivered older value
/// never replaces a newer one).
fn is_newer(current: &NowPlaying, next: &NowPlaying) -> bool {
    next.play_seq > current.play_seq
        || (next.play_seq == current.play_seq
            && current.enrichment.is_none()
            && next.enrichment.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use playhead_proto::v1::SongEnrichment;

    #[test]
    fn a_play_is_replaced_by_a_later_one_or_by_itself_enriched() {
        let play = |play_seq: u64, enriched: bool| NowPlaying {
            play_seq,
            enrichment: enriched.then(|| SongEnrichment {
                recording_mbid: "r".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(is_newer(&play(1, false), &play(2, false)));
        assert!(is_newer(&play(1, false), &play(1, true)));
        assert!(!is_newer(&play(1, true), &play(1, false)));
        assert!(!is_newer(&play(1, true), &play(1, true)));
        assert!(!is_newer(&play(2, false), &play(1, true)));
    }

    fn station(n: usize) -> StationId {
        StationId::parse(format!("s{n}")).unwrap()
    }

    #[test]
    fn ids_watched_without_a_song_do_not_pile_up() {
        let cache = NowPlayingCache::with_idle_bound(100);
        let playing = station(0);
        cache.store(
            playing.clone(),
            Some(Arc::new(NowPlaying {
                station_id: "s0".into(),
                play_seq: 1,
                ..Default::default()
            })),
        );
        let watched = cache.subscribe(&station(1));
        // 3,000 watches of ids that never play, each ended (its receiver dropped).
        for n in 2..3_002 {
            drop(cache.subscribe(&station(n)));
        }
        assert!(cache.len() <= 102, "{} slots", cache.len());
        // What plays, and what is watched now, stay.
        assert!(cache.get(&playing).is_some());
        assert!(
            cache
                .stations
                .read()
                .unwrap()
                .slots
                .contains_key(&station(1))
        );
        drop(watched);
    }
}
