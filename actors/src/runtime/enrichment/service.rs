//! The enrichment service: one task that owns the songs waiting for the provider.
//!
//! A station whose new song the cache did not know (see [`EnrichmentLink::known`], asked while
//! the station decides) files the play with [`EnrichmentLink::want`] once its `SongStarted` is
//! in the journal. The service then:
//!
//! - joins the play to the song's look-up if one is already waiting (**single-flight**: one
//!   provider call per distinct song, however many stations start it at once);
//! - answers at once from the cache if the song was answered meanwhile;
//! - else queues the song; at most `max_concurrent_lookups` look-ups run, each paced by its
//!   provider's rate limit; a failed one is tried again later (after the provider's hint, or
//!   the backoff), until the provider answers;
//! - on an answer, caches it (found, or not found with its shorter TTL) and sends every
//!   waiting play an `EnrichSong` command through the station inbox, so the station decides
//!   (the play may have ended meanwhile) and journals `SongEnriched` like any other decision.
//!
//! Nothing here blocks a station: `want` never waits (a full queue counts the play as
//! dropped), and the look-ups run on their own tasks.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use playhead_proto::headers::MSG_ID;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{Inbox, StationInboxKind, station_subject};
use playhead_proto::v1;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::provider::{HttpProvider, Lookup, ProviderError};
use crate::config::EnrichmentConfig;
use crate::domain::enrichment::Enrichment;
use crate::domain::enrichment::backoff::Backoff;
use crate::domain::station::Song;
use crate::domain::time::Timestamp;
use crate::metrics::{CacheResultLabel, EnrichmentOutcomeLabel, GroupLabel, NodeMetrics};
use crate::storage::StorageError;
use crate::storage::enrichment_store::{Cached, EnrichmentStore};
use crate::storage::station_store::StationStore;
use crate::wire;

/// How often deferred look-ups check the backlog again.
const BACKLOG_RECHECK: Duration = Duration::from_millis(100);

/// Rounds of unreadable answers after which a song is given up.
const GIVE_UP_AFTER: u32 = 5;

/// A play that started without its song's enrichment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub station: StationId,
    pub play_seq: u64,
    pub song: Song,
    /// Filed again at start (a play left waiting by the last run): not counted as dropped
    /// when the queue is full.
    pub resumed: bool,
}

/// What a station holds of the service: the cache, and the queue to the service's task.
#[derive(Clone)]
pub struct EnrichmentLink {
    cache: EnrichmentStore,
    requests: mpsc::Sender<Wanted>,
    metrics: Arc<NodeMetrics>,
}

impl EnrichmentLink {
    /// What the cache knows of the song `song_key` starting on a station: its enrichment, or
    /// `None` (not known, or known to be unknown to the provider). Counted by result.
    pub fn known(&self, song_key: &str) -> Result<Option<Enrichment>, StorageError> {
        let cached = self.cache.lookup(song_key)?;
        let result = match &cached {
            Some(Cached::Found(_)) => "hit",
            Some(Cached::NotFound) => "not_found_hit",
            None => "miss",
        };
        self.metrics
            .enrichment_cache
            .get_or_create(&CacheResultLabel { result })
            .inc();
        Ok(match cached {
            Some(Cached::Found(enrichment)) => Some(enrichment),
            _ => None,
        })
    }

    /// Files a play for enrichment. Never waits: with the queue full, the play is counted as
    /// dropped (its song is asked again the next time a station starts it).
    pub fn want(&self, wanted: Wanted) {
        if let Err(error) = self.requests.try_send(wanted) {
            let wanted = match error {
                mpsc::error::TrySendError::Full(wanted) => wanted,
                mpsc::error::TrySendError::Closed(_) => return,
            };
            if !wanted.resumed {
                self.dropped(&wanted);
            }
        }
    }

    fn dropped(&self, wanted: &Wanted) {
        self.metrics
            .enrichment_songs
            .get_or_create(&EnrichmentOutcomeLabel { outcome: "dropped" })
            .inc();
        tracing::debug!(station = %wanted.station, play_seq = wanted.play_seq, "enrichment queue full: play not enriched");
    }
}

/// A song waiting for the provider, with the plays that wait for it.
struct Pending {
    song: Song,
    waiters: Vec<(StationId, u64)>,
    since: Instant,
    failures: u32,
}

/// The service's task state.
pub struct EnrichmentService {
    config: EnrichmentConfig,
    /// Ownership groups per inbox (whose pending counts make the backlog).
    groups: u32,
    stations: StationStore,
    provider: HttpProvider,
    link: EnrichmentLink,
    jetstream: jetstream::Context,
    requests: mpsc::Receiver<Wanted>,
    pending: HashMap<String, Pending>,
    ready: VecDeque<String>,
    retries: BinaryHeap<Reverse<(Instant, String)>>,
    lookups: JoinSet<(String, Result<Lookup, ProviderError>)>,
    deliveries: JoinSet<()>,
}

/// Starts nothing yet: the link for the stations, and the service to run.
pub fn service(
    config: &EnrichmentConfig,
    groups: u32,
    provider: HttpProvider,
    cache: EnrichmentStore,
    stations: StationStore,
    jetstream: jetstream::Context,
    metrics: Arc<NodeMetrics>,
) -> (EnrichmentLink, EnrichmentService) {
    // Room for every pending song's first play and a burst beyond: the loop drains it fast.
    let (sender, requests) = mpsc::channel(config.max_pending_songs.max(1024));
    let link = EnrichmentLink {
        cache,
        requests: sender,
        metrics,
    };
    let service = EnrichmentService {
        config: config.clone(),
        groups,
        stations,
        provider,
        link: link.clone(),
        jetstream,
        requests,
        pending: HashMap::new(),
        ready: VecDeque::new(),
        retries: BinaryHeap::new(),
        lookups: JoinSet::new(),
        deliveries: JoinSet::new(),
    };
    (link, service)
}

impl EnrichmentService {
    /// Runs until `stop`; look-ups in flight are abandoned (their plays stay unenriched and
    /// are filed again at the next start).
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            musicbrainz = %self.config.musicbrainz_url,
            coverart = %self.config.coverart_url,
            rate_per_sec = self.config.musicbrainz_rate_per_sec,
            "enrichment service started"
        );
        loop {
            let deferred = !self.ready.is_empty() && self.backlogged();
            while !deferred
                && self.lookups.len() < self.config.max_concurrent_lookups
                && let Some(key) = self.ready.pop_front()
            {
                self.start_lookup(key);
            }
            let next_retry = self.retries.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                () = tokio::time::sleep(BACKLOG_RECHECK), if deferred => {}
                _ = stop.cancelled() => break,
                wanted = self.requests.recv() => match wanted {
                    Some(wanted) => self.on_wanted(wanted),
                    None => break,
                },
                Some(done) = self.lookups.join_next(), if !self.lookups.is_empty() => match done {
                    Ok((key, answer)) => self.on_answer(key, answer),
                    Err(error) => tracing::error!(%error, "an enrichment look-up task failed"),
                },
                Some(_) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {}
                () = sleep_until(next_retry), if next_retry.is_some() => self.retry_due(),
            }
        }
        self.lookups.abort_all();
        // Answers already on their way get a moment to reach the inbox.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.deliveries.join_next().await.is_some() {}
        })
        .await;
        tracing::info!(waiting = self.pending.len(), "enrichment service stopped");
        Ok(())
    }

    /// Whether the station inbox has more waiting than `defer_while_backlog_above`: then no
    /// new look-up starts (those running finish), so a node catching up (after an outage, a
    /// restart, a burst) spends its cores on the song changes first. Read from the pending
    /// count each group's intake notes with every batch.
    fn backlogged(&self) -> bool {
        let metrics = &self.link.metrics;
        let pending = (0..self.groups).map(|group| {
            metrics
                .consumer_pending
                .get_or_create(&GroupLabel {
                    inbox: Inbox::Station.label(),
                    group,
                })
                .get()
        });
        over_backlog(pending, self.config.defer_while_backlog_above)
    }

    fn on_wanted(&mut self, wanted: Wanted) {
        let key = wanted.song.comparison_key();
        let metrics = &self.link.metrics;
        if let Some(pending) = self.pending.get_mut(&key) {
            if pending.waiters.len() < self.config.max_waiters_per_song {
                pending.waiters.push((wanted.station, wanted.play_seq));
                metrics.enrichment_singleflight_joins.inc();
            } else if !wanted.resumed {
                self.link.dropped(&wanted);
            }
            return;
        }
        // Answered since the station looked (another station's look-up ended meanwhile).
        match self.link.cache.lookup(&key) {
            Ok(Some(Cached::Found(enrichment))) => {
                self.deliver(key, enrichment, vec![(wanted.station, wanted.play_seq)]);
                return;
            }
            Ok(Some(Cached::NotFound)) => return,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "enrichment cache unreadable; asking the provider");
            }
        }
        if self.pending.len() >= self.config.max_pending_songs {
            if !wanted.resumed {
                self.link.dropped(&wanted);
            }
            return;
        }
        self.pending.insert(
            key.clone(),
            Pending {
                song: wanted.song,
                waiters: vec![(wanted.station, wanted.play_seq)],
                since: Instant::now(),
                failures: 0,
            },
        );
        metrics
            .enrichment_pending_songs
            .set(self.pending.len() as i64);
        self.ready.push_back(key);
    }

    fn start_lookup(&mut self, key: String) {
        let Some(pending) = self.pending.get(&key) else {
            return;
        };
        let provider = self.provider.clone();
        let song = pending.song.clone();
        self.lookups.spawn(async move {
            let answer = provider.lookup(&song.artist, &song.title).await;
            (key, answer)
        });
    }

    fn on_answer(&mut self, key: String, answer: Result<Lookup, ProviderError>) {
        let metrics = self.link.metrics.clone();
        let (enrichment, outcome) = match answer {
            Ok(Lookup::Found(mut enrichment)) => {
                enrichment.enriched_at = Timestamp::now();
                if let Err(error) = self.link.cache.store_found(&key, &enrichment) {
                    tracing::warn!(%error, "cannot cache an enrichment");
                }
                (Some(enrichment), "enriched")
            }
            Ok(Lookup::NotFound) => {
                if let Err(error) = self.link.cache.store_not_found(&key) {
                    tracing::warn!(%error, "cannot cache a not-found answer");
                }
                (None, "not_found")
            }
            Err(error) => {
                let Entry::Occupied(mut entry) = self.pending.entry(key) else {
                    return;
                };
                let pending = entry.get_mut();
                pending.failures += 1;
                // A refusal (4xx), or an answer that keeps being unreadable, will not change
                // by asking again: the song is given up (asked again at its next play).
                let undecodable = matches!(error, ProviderError::Undecodable { .. });
                if error.is_permanent() || (undecodable && pending.failures >= GIVE_UP_AFTER) {
                    tracing::warn!(
                        artist = %pending.song.artist,
                        title = %pending.song.title,
                        error = %causes(&error),
                        "enrichment look-up given up"
                    );
                    entry.remove();
                    metrics
                        .enrichment_pending_songs
                        .set(self.pending.len() as i64);
                    metrics
                        .enrichment_songs
                        .get_or_create(&EnrichmentOutcomeLabel {
                            outcome: "given_up",
                        })
                        .inc();
                    return;
                }
                let wait = error
                    .retry_in()
                    .unwrap_or_else(|| rounds(&self.config).ceiling(pending.failures))
                    .max(Duration::from_millis(self.config.backoff_initial_ms));
                // While the breaker is open every waiting song hears so at once: the provider
                // client warns when it opens, so these are only debug.
                if matches!(error, ProviderError::BreakerOpen { .. }) {
                    tracing::debug!(
                        artist = %pending.song.artist,
                        title = %pending.song.title,
                        retry_in_ms = wait.as_millis() as u64,
                        "enrichment provider's breaker open; the song waits"
                    );
                } else {
                    tracing::info!(
                        artist = %pending.song.artist,
                        title = %pending.song.title,
                        failures = pending.failures,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %causes(&error),
                        "enrichment look-up failed; the song waits for the provider"
                    );
                }
                self.retries
                    .push(Reverse((Instant::now() + wait, entry.key().clone())));
                return;
            }
        };
        metrics
            .enrichment_songs
            .get_or_create(&EnrichmentOutcomeLabel { outcome })
            .inc();
        let Some(pending) = self.pending.remove(&key) else {
            return;
        };
        metrics
            .enrichment_lookup_seconds
            .observe(pending.since.elapsed().as_secs_f64());
        metrics
            .enrichment_pending_songs
            .set(self.pending.len() as i64);
        if let Some(enrichment) = enrichment {
            self.deliver(key, enrichment, pending.waiters);
        }
    }

    fn retry_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.retries.peek()
            && *at <= now
        {
            let Some(Reverse((_, key))) = self.retries.pop() else {
                break;
            };
            if self.pending.contains_key(&key) {
                self.ready.push_back(key);
            }
        }
    }

    /// Sends each waiting play its answer through the station inbox (one `EnrichSong` per
    /// play, published together, then their acknowledgements awaited). A play that has
    /// already ended (or got its enrichment) is skipped: the station would take nothing from
    /// it. Its stored state may lag behind, never run ahead, so nothing that still applies is
    /// skipped, and the station decides anyway.
    fn deliver(&mut self, key: String, enrichment: Enrichment, waiters: Vec<(StationId, u64)>) {
        let jetstream = self.jetstream.clone();
        let stations = self.stations.clone();
        self.deliveries.spawn(async move {
            let enrichment = wire::song_enrichment(&enrichment);
            let mut acks = Vec::with_capacity(waiters.len());
            for (station, play_seq) in waiters {
                if !still_waiting(&stations, &station, play_seq, &key) {
                    continue;
                }
                let command = v1::EnrichSong {
                    station_id: station.to_string(),
                    play_seq,
                    song_key: key.clone(),
                    enrichment: Some(enrichment.clone()),
                };
                let subject = station_subject(&station, StationInboxKind::Enrichment);
                let mut headers = HeaderMap::new();
                // A second answer for the same play within the broker's window is dropped.
                headers.insert(MSG_ID, format!("enrichment.{station}.{play_seq}").as_str());
                match publish(&jetstream, subject, headers, command.encode_to_vec()).await {
                    Ok(ack) => acks.push((station, play_seq, ack)),
                    Err(error) => {
                        tracing::warn!(%station, play_seq, %error, "cannot send an enrichment to its station")
                    }
                }
            }
            for (station, play_seq, ack) in acks {
                if let Err(error) = ack.await {
                    tracing::warn!(%station, play_seq, %error, "an enrichment was not stored in the station inbox");
                }
            }
        });
    }
}

/// Whether the station, as stored, would still take the answer `song_key` for `play_seq` (the
/// decider's own rule; a store that cannot be read says yes: the station decides).
fn still_waiting(
    stations: &StationStore,
    station: &StationId,
    play_seq: u64,
    song_key: &str,
) -> bool {
    stations.load(station).map_or(true, |stored| {
        stored.state.takes_enrichment(play_seq, song_key)
    })
}

/// Publishes, retrying a refused or failed send a few times (a broker hiccup).
async fn publish(
    jetstream: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
    let mut attempt = 0;
    loop {
        match jetstream
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
            .await
        {
            Ok(ack) => return Ok(ack),
            Err(error) if attempt < 4 => {
                attempt += 1;
                tracing::debug!(%error, attempt, "retrying an enrichment publish");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// An error with its causes, `: `-separated (what failed, and why).
fn causes(error: &dyn std::error::Error) -> String {
    std::iter::successors(Some(error), |error| error.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Whether the groups' pending counts add up to more than `limit` (0: no limit).
fn over_backlog(pending: impl Iterator<Item = i64>, limit: u64) -> bool {
    limit > 0 && pending.sum::<i64>() > limit as i64
}

/// The spacing of whole look-up rounds: exponential from `backoff_initial_ms`, capped at
/// `backoff_max_ms` (the provider's own retries already spread their attempts), by the
/// provider's own [`Backoff`], without jitter.
fn rounds(config: &EnrichmentConfig) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_ups_wait_while_the_groups_together_are_over_the_backlog() {
        assert!(!over_backlog([400, 600].into_iter(), 1_000));
        assert!(over_backlog([400, 601].into_iter(), 1_000));
        assert!(!over_backlog(std::iter::empty(), 1_000));
        // 0 turns the wait off.
        assert!(!over_backlog([1_000_000].into_iter(), 0));
    }

    #[test]
    fn rounds_back_off_exponentially_up_to_the_cap() {
        let config = EnrichmentConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..EnrichmentConfig::default()
        };
        let waits: Vec<u64> = (0..6)
            .map(|failures| rounds(&config).ceiling(failures).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(
            rounds(&config).ceiling(u32::MAX),
            Duration::from_millis(1_000)
        );
    }
}
