//! The gateway-local now-playing cache, push-fed by a watch of the KV bucket: every replica
//! is updated as stations change, with no polling and no TTL guessing. Each station has a
//! `watch` channel: readers get the latest value, and a slow watcher skips to the latest
//! instead of holding anyone back. Every change is also announced (by station id) to
//! [`NowPlayingCache::changes`], for followers of all stations such as the console's wall.

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

#[derive(Clone)]
pub struct NowPlayingCache {
    stations: Arc<RwLock<HashMap<StationId, Slot>>>,
    changes: broadcast::Sender<StationId>,
}

impl Default for NowPlayingCache {
    fn default() -> Self {
        Self {
            stations: Arc::default(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }
}

impl NowPlayingCache {
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
            .iter()
            .filter_map(|(station, slot)| Some((station.clone(), slot.borrow().clone()?)))
            .collect()
    }

    pub fn get(&self, station: &StationId) -> Option<Arc<NowPlaying>> {
        let stations = self.stations.read().expect("cache lock poisoned");
        stations.get(station)?.borrow().clone()
    }

    /// A receiver that sees the current value (if any) and every later one.
    pub fn subscribe(&self, station: &StationId) -> watch::Receiver<Option<Arc<NowPlaying>>> {
        if let Some(slot) = self
            .stations
            .read()
            .expect("cache lock poisoned")
            .get(station)
        {
            return slot.subscribe();
        }
        let mut stations = self.stations.write().expect("cache lock poisoned");
        stations
            .entry(station.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub fn len(&self) -> usize {
        self.stations.read().expect("cache lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn store(&self, station: StationId, value: Option<Arc<NowPlaying>>) {
        let mut stations = self.stations.write().expect("cache lock poisoned");
        let slot = stations
            .entry(station.clone())
            .or_insert_with(|| watch::channel(None).0);
        let newer = match (&*slot.borrow(), &value) {
            (Some(current), Some(next)) => next.play_seq > current.play_seq,
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
