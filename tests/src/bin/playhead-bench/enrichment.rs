//! Enrichment: the same song observations — `changes` song changes over `songs` distinct
//! songs, every song started at least once, the rest repeats of the song on air — drained by
//! playhead-node twice, each time on a broker of its own against a bare consumer of the same
//! stream: run A with enrichment off, run B with a MusicBrainz-shaped test provider answering
//! in `latency` (in this process, like the node). Measured: both drains and their node ÷ bare
//! ratios, the ratio of B's to A's, the provider's calls against the distinct songs, and the
//! time until every song is enriched and the answers are drained too.
//!
//! In run B the node's enrichment service sends its answers (`EnrichSong`) through the station
//! inbox while the node drains it, so the node's count of processed inbox messages would end
//! the drain early. Both runs therefore end their drain on the node's consumer: its ack floor
//! reaching the stream sequence of the last observation (see [`wait_acked`]).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream::Stream};
use futures::StreamExt as _;
use playhead_actors::broker;
use playhead_actors::config::{EnrichmentConfig, EnrichmentProvider, NodeConfig};
use playhead_actors::domain::player::shuffled_order;
use playhead_proto::subjects::{EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::model::{Observation, Rng, expected_plays, publish_all};
use playhead_tests::provider::{Service, TestProvider};
use playhead_tests::system::{TestNode, metric_value, temp_dir};

use crate::common::{
    DRAIN_TIMEOUT, Drains, format_counts, inbox_outcomes, node_config, publish_and_drain_until,
};

const SEED: u64 = 11;
/// The journal's `SongEnriched` events of every station (`playhead.events.station.{id}.*`).
const SONG_ENRICHED_EVENTS: &str = "playhead.events.station.*.SongEnriched";
/// How often the node's consumer is asked for its ack floor while it drains: bounds the error
/// on the end of a drain. A consumer info is one request the broker answers from memory.
const ACK_FLOOR_POLL: Duration = Duration::from_millis(20);
/// How often the enrichment's progress is scraped once the observations are drained.
const ENRICHED_POLL: Duration = Duration::from_millis(50);
/// Longest the benchmark waits for every song to be enriched after the drain.
const ENRICHED_TIMEOUT: Duration = Duration::from_secs(300);
/// Least look-ups in flight: each is a search then a cover listing, one provider latency each,
/// so a rate `r` per service keeps about `2 × r × latency` look-ups busy.
const MIN_LOOKUPS_IN_FLIGHT: usize = 64;

pub(crate) struct Workload {
    pub(crate) stations: usize,
    /// Observations that start a play (the song differs from the one on air).
    pub(crate) changes: usize,
    /// Distinct songs among the changes.
    pub(crate) songs: usize,
    /// Share (percent) of all observations that repeat the song on air.
    pub(crate) repeat_percent: u64,
    pub(crate) partitions: u32,
    /// How long the provider takes to answer each request.
    pub(crate) latency: Duration,
    /// Requests per second to each of the provider's two services.
    pub(crate) rate_per_sec: u64,
}

impl Workload {
    fn observations(&self) -> usize {
        self.changes * 100 / (100 - self.repeat_percent as usize)
    }

    fn lookups_in_flight(&self) -> usize {
        let busy = 2.0 * self.rate_per_sec as f64 * self.latency.as_secs_f64();
        MIN_LOOKUPS_IN_FLIGHT.max((busy * 1.25).ceil() as usize)
    }
}

/// What one drain of the observations produced.
struct Run {
    drains: Drains,
    /// From the node's start until it had processed every observation (as in `drains`).
    node_drain: Duration,
    /// The node's inbox outcomes and the events in the journal after the drain and the
    /// journal floor (in run B with the answers processed meanwhile).
    outcomes: Vec<(&'static str, f64)>,
    events: u64,
    /// Stream sequence of the last observation in the inbox.
    last_observation: u64,
    /// Answers (`EnrichSong`, stored after the observations) delivered to the node by the
    /// drain's end, and how many of them it had acknowledged by then.
    answers_delivered: u64,
    answers_acked: u64,
}

/// The two runs and what enrichment did in run B.
pub(crate) struct Measured {
    without: Run,
    with: Run,
    musicbrainz_calls: usize,
    coverart_calls: usize,
    /// From the node's start until every song was enriched and the inbox drained again.
    until_enriched: Option<Duration>,
    song_enriched_events: u64,
    /// Answers stored in the inbox in all.
    answers: u64,
    metrics: String,
}

/// What the verdicts need.
pub(crate) struct Figures {
    pub(crate) songs: usize,
    pub(crate) musicbrainz_calls: usize,
    pub(crate) coverart_calls: usize,
    /// (node ÷ bare with enrichment) ÷ (node ÷ bare without).
    pub(crate) ingest_ratio: f64,
    /// The node's drain rate with ÷ without: the same, without the spread of the two bare
    /// drains (each run's own bare drain varies by ±20% here).
    pub(crate) node_ratio: f64,
    pub(crate) until_enriched: Option<Duration>,
}

impl Figures {
    pub(crate) fn calls_ratio(&self) -> f64 {
        self.musicbrainz_calls as f64 / self.songs as f64
    }
}

pub(crate) async fn run(workload: &Workload) -> anyhow::Result<Measured> {
    let observations = generate(workload)?;

    eprintln!("enrichment, run A: without enrichment…");
    let without = {
        let nats = NatsServer::start();
        let data = temp_dir();
        let mut config = node_config(&nats.url(), data.path(), workload.partitions)?;
        // The loaded defaults enrich from musicbrainz.org: off, as the baseline.
        config.enrichment.provider = EnrichmentProvider::None;
        let (run, node, _) = drain(&nats, config, &observations).await?;
        node.stop().await;
        run
    };

    eprintln!("enrichment, run B: with enrichment…");
    let provider = TestProvider::start().await?;
    provider.set_latency(workload.latency);
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = node_config(&nats.url(), data.path(), workload.partitions)?;
    let rate = workload.rate_per_sec as f64;
    config.enrichment = EnrichmentConfig {
        provider: EnrichmentProvider::Musicbrainz,
        musicbrainz_url: provider.musicbrainz_url(),
        coverart_url: provider.coverart_url(),
        user_agent: concat!("playhead-bench/", env!("CARGO_PKG_VERSION"), " ( local )").into(),
        musicbrainz_rate_per_sec: rate,
        coverart_rate_per_sec: rate,
        max_concurrent_lookups: workload.lookups_in_flight(),
        ..config.enrichment
    };
    config
        .validate()
        .context("enrichment benchmark configuration")?;
    let (with, node, started) = drain(&nats, config, &observations).await?;

    let jetstream = jetstream::new(nats.connect().await);
    let inbox = jetstream.get_stream(Inbox::Station.stream_name()).await?;
    eprintln!("waiting until every song is enriched…");
    let until_enriched = wait_enriched(&node, &inbox, workload.songs)
        .await?
        .map(|at| at.duration_since(started));
    let metrics = node.metrics().await;
    let answers = inbox.get_info().await?.state.last_sequence - with.last_observation;
    let song_enriched_events = song_enriched_events(&jetstream).await?;
    node.stop().await;
    Ok(Measured {
        without,
        with,
        musicbrainz_calls: provider.calls_to(Service::MusicBrainz).len(),
        coverart_calls: provider.calls_to(Service::CoverArt).len(),
        until_enriched,
        song_enriched_events,
        answers,
        metrics,
    })
}

/// Publishes `observations` to a fresh broker's station inbox and drains them (see
/// [`publish_and_drain_until`]); the node keeps running.
async fn drain(
    nats: &NatsServer,
    config: NodeConfig,
    observations: &[Observation],
) -> anyhow::Result<(Run, TestNode, Instant)> {
    // One group (the default): one consumer over the whole inbox, whose ack floor covers every
    // message. Filtered group consumers' floors stop at their own last message.
    anyhow::ensure!(
        config.ingest.groups == 1,
        "the enrichment phase ends its drains on the ack floor of the one station consumer: \
         run it with ingest.groups = 1 (PLAYHEAD_INGEST__GROUPS is {})",
        config.ingest.groups
    );
    let jetstream = jetstream::new(nats.connect().await);
    broker::ensure_streams(&jetstream, &config)
        .await
        .context("creating the inbox streams")?;
    let inbox = jetstream.get_stream(Inbox::Station.stream_name()).await?;
    let consumer = Inbox::Station.consumer_name(0, 1);
    let last_observation = Cell::new(0);
    let publish = async {
        publish_all(&jetstream, observations).await;
        // Nothing else writes to the inbox before the node starts.
        let stored = inbox.get_info().await.expect("station inbox info");
        last_observation.set(stored.state.last_sequence);
    };
    let mut drained = None;
    let (drains, node, started) = publish_and_drain_until(
        &jetstream,
        nats.pid(),
        config,
        Inbox::Station,
        (observations.len() as u64, "observations"),
        publish,
        async |_node: &TestNode| {
            let info = wait_acked(&inbox, &consumer, last_observation.get()).await?;
            drained = Some((Instant::now(), info));
            Ok(())
        },
    )
    .await?;
    let (ended, info) = drained.expect("the drain ended");
    let last = last_observation.get();
    let metrics = node.metrics().await;
    let events = jetstream
        .get_stream(EVENTS_STREAM)
        .await?
        .get_info()
        .await?
        .state
        .messages;
    let run = Run {
        drains,
        node_drain: ended.duration_since(started),
        outcomes: inbox_outcomes(&metrics, Inbox::Station),
        events,
        last_observation: last,
        answers_delivered: info.delivered.stream_sequence.max(last) - last,
        answers_acked: info.ack_floor.stream_sequence - last,
    };
    Ok((run, node, started))
}

/// Polls the node's `consumer` of the station inbox until its ack floor reaches stream
/// sequence `last`. Its acknowledgements cover every earlier message (`AckPolicy::All`), and
/// it delivers in stream order, so every observation up to `last` is then processed, and no
/// answer stored after them was counted instead of one.
async fn wait_acked(inbox: &Stream, consumer: &str, last: u64) -> anyhow::Result<consumer::Info> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let info = inbox.consumer_info(consumer).await;
        match info {
            Ok(info) if info.ack_floor.stream_sequence >= last => return Ok(info),
            Ok(info) => anyhow::ensure!(
                Instant::now() < deadline,
                "playhead-node acknowledged up to inbox sequence {} of {last} in {DRAIN_TIMEOUT:?}",
                info.ack_floor.stream_sequence
            ),
            Err(error) => anyhow::ensure!(
                Instant::now() < deadline,
                "no info of the node's consumer {consumer} in {DRAIN_TIMEOUT:?}: {error}"
            ),
        }
        tokio::time::sleep(ACK_FLOOR_POLL).await;
    }
}

/// Polls until the node counts `songs` songs enriched, none waits for the provider, and the
/// station inbox is drained: the node's consumer acknowledged the inbox's last message, and
/// no answer arrived in the poll after that (a song's answers leave just after it is
/// counted). When it was first found drained; `None` after [`ENRICHED_TIMEOUT`].
async fn wait_enriched(
    node: &TestNode,
    inbox: &Stream,
    songs: usize,
) -> anyhow::Result<Option<Instant>> {
    let consumer = Inbox::Station.consumer_name(0, 1);
    let deadline = Instant::now() + ENRICHED_TIMEOUT;
    let mut drained_at: Option<(u64, Instant)> = None;
    loop {
        let metrics = node.metrics().await;
        let enriched = metric_value(
            &metrics,
            "playhead_enrichment_songs_total",
            &[("outcome", "enriched")],
        );
        let pending = metric_value(&metrics, "playhead_enrichment_pending_songs", &[]);
        let mut drained = None;
        if enriched >= songs as f64 && pending == 0.0 {
            let last = inbox.get_info().await?.state.last_sequence;
            let acked = inbox
                .consumer_info(&consumer)
                .await?
                .ack_floor
                .stream_sequence;
            drained = (acked >= last).then_some(last);
        }
        drained_at = match (drained, drained_at) {
            (Some(last), Some((before, at))) if last == before => return Ok(Some(at)),
            (Some(last), _) => Some((last, Instant::now())),
            (None, _) => None,
        };
        if Instant::now() >= deadline {
            eprintln!(
                "enrichment: {enriched} of {songs} songs enriched, {pending} waiting, after {ENRICHED_TIMEOUT:?}"
            );
            return Ok(None);
        }
        tokio::time::sleep(ENRICHED_POLL).await;
    }
}

/// `SongEnriched` events in the journal, from the broker's count per subject.
async fn song_enriched_events(jetstream: &jetstream::Context) -> anyhow::Result<u64> {
    let events = jetstream.get_stream(EVENTS_STREAM).await?;
    let mut counts = events.info_with_subjects(SONG_ENRICHED_EVENTS).await?;
    let mut total = 0;
    while let Some(entry) = counts.next().await {
        let (_subject, count) = entry?;
        total += count as u64;
    }
    Ok(total)
}

/// The observations, seeded: `changes` of them start a play — every station about
/// `changes / stations` times, every song `changes / songs` times (at least once), both in a
/// shuffled order — and the others, spread among them, repeat a station's song on air.
fn generate(workload: &Workload) -> anyhow::Result<Vec<Observation>> {
    let Workload {
        stations,
        changes,
        songs,
        repeat_percent,
        ..
    } = *workload;
    anyhow::ensure!(repeat_percent < 100, "the repeats leave no song change");
    anyhow::ensure!(
        (2..=changes).contains(&songs) && stations > 0,
        "give at least 2 distinct songs, at most one per song change, and some stations"
    );
    let station_of_change: Vec<usize> = shuffled_order(changes, SEED)
        .into_iter()
        .map(|slot| slot as usize % stations)
        .collect();
    let mut song_of_change: Vec<usize> = shuffled_order(changes, SEED + 1)
        .into_iter()
        .map(|slot| slot as usize % songs)
        .collect();
    let mut rng = Rng::new(SEED);
    let mut on_air: Vec<Option<usize>> = vec![None; stations];
    let mut playing: Vec<usize> = Vec::with_capacity(stations);
    let total = workload.observations();
    let mut repeats_left = total - changes;
    let mut next_change = 0;
    let mut observations = Vec::with_capacity(total);
    for _ in 0..total {
        let changes_left = (changes - next_change) as u64;
        let repeat = !playing.is_empty()
            && rng.below(changes_left + repeats_left as u64) < repeats_left as u64;
        let (station, song) = if repeat {
            repeats_left -= 1;
            let station = playing[rng.below(playing.len() as u64) as usize];
            (station, on_air[station].expect("a playing station"))
        } else {
            let station = station_of_change[next_change];
            // A change must differ from the song on air: take a later change's song instead.
            if Some(song_of_change[next_change]) == on_air[station] {
                let other = (next_change + 1..changes)
                    .find(|&later| Some(song_of_change[later]) != on_air[station])
                    .context("the last song changes are all of one song")?;
                song_of_change.swap(next_change, other);
            }
            let song = song_of_change[next_change];
            next_change += 1;
            if on_air[station].replace(song).is_none() {
                playing.push(station);
            }
            (station, song)
        };
        observations.push(Observation {
            station: format!("station-{station}"),
            artist: format!("Artist {song}"),
            title: format!("Song {song}"),
        });
    }
    // Checked against the model's own reading of the observations, not this generator's.
    let plays = expected_plays(&observations);
    let started: usize = plays.values().map(Vec::len).sum();
    let distinct: BTreeSet<_> = plays.values().flatten().collect();
    anyhow::ensure!(
        started == changes && distinct.len() == songs,
        "generated {started} song changes over {} songs, not {changes} over {songs}",
        distinct.len()
    );
    Ok(observations)
}

impl Measured {
    pub(crate) fn report(&self, workload: &Workload) -> Figures {
        let count = workload.observations() as f64;
        println!();
        println!(
            "enrichment: {} song observations over {} stations: {} song changes over {} distinct songs, {}% repeats; {} partitions",
            workload.observations(),
            workload.stations,
            workload.changes,
            workload.songs,
            workload.repeat_percent,
            workload.partitions
        );
        println!("  run A, enrichment off (a broker of its own)");
        let ratio_without = self.without.report(count);
        println!(
            "  run B, enrichment on: test provider answering in {} ms, {} requests/s to each service, {} look-ups in flight (another broker)",
            workload.latency.as_millis(),
            workload.rate_per_sec,
            workload.lookups_in_flight()
        );
        let ratio_with = self.with.report(count);
        println!(
            "  answers (EnrichSong) delivered to the node by the drain's end {}, acknowledged {} (the drain ends on the consumer's ack floor)",
            self.with.answers_delivered, self.with.answers_acked
        );
        let ingest_ratio = ratio_with / ratio_without;
        println!("  ingest ratio with ÷ without enrichment {ingest_ratio:.2}");
        // The same observations: the rate ratio is the inverse time ratio.
        let node_ratio = self.without.node_drain.as_secs_f64() / self.with.node_drain.as_secs_f64();
        println!("  node drain rate with ÷ without enrichment {node_ratio:.2}");

        let metric =
            |name: &str, labels: &[(&str, &str)]| metric_value(&self.metrics, name, labels);
        let songs = |outcome| metric("playhead_enrichment_songs_total", &[("outcome", outcome)]);
        let cache = |result| metric("playhead_enrichment_cache_total", &[("result", result)]);
        let calls = |provider| {
            let labels = [("provider", provider)];
            let all = metric("playhead_enrichment_provider_calls_total", &labels);
            let ok = metric(
                "playhead_enrichment_provider_calls_total",
                &[("provider", provider), ("outcome", "ok")],
            );
            (all, all - ok)
        };
        println!(
            "  provider calls: MusicBrainz {}, Cover Art Archive {}, for {} distinct songs (the provider's record)",
            self.musicbrainz_calls, self.coverart_calls, workload.songs
        );
        let (musicbrainz, musicbrainz_failed) = calls("musicbrainz");
        let (coverart, coverart_failed) = calls("coverart");
        println!(
            "    the node's count: MusicBrainz {musicbrainz:.0} ({musicbrainz_failed:.0} not ok), Cover Art Archive {coverart:.0} ({coverart_failed:.0} not ok)"
        );
        println!(
            "  cache on a song change: {}; single-flight joins {:.0}",
            format_counts(&[
                ("hit", cache("hit")),
                ("miss", cache("miss")),
                ("not found hit", cache("not_found_hit")),
            ]),
            metric("playhead_enrichment_singleflight_joins_total", &[])
        );
        println!(
            "  songs: {}",
            format_counts(&[
                ("enriched", songs("enriched")),
                ("not found", songs("not_found")),
                ("dropped", songs("dropped")),
                ("given up", songs("given_up")),
            ])
        );
        let lookups = metric("playhead_enrichment_lookup_seconds_count", &[]);
        let lookup_seconds = metric("playhead_enrichment_lookup_seconds_sum", &[]);
        let waited = |provider| {
            metric(
                "playhead_enrichment_rate_limit_wait_seconds_total",
                &[("provider", provider)],
            )
        };
        println!(
            "  look-up, first miss to answer: mean {:.0} ms; rate-limit waits: MusicBrainz {:.1} s, Cover Art Archive {:.1} s (summed over requests)",
            lookup_seconds / lookups * 1_000.0,
            waited("musicbrainz"),
            waited("coverart")
        );
        println!(
            "  SongEnriched events in the journal {} of {} song changes; answers sent through the inbox {}",
            self.song_enriched_events, workload.changes, self.answers
        );
        match self.until_enriched {
            Some(elapsed) => println!(
                "  every song enriched and the inbox drained again {:.2} s after the node's start",
                elapsed.as_secs_f64()
            ),
            None => println!(
                "  every song enriched: NOT within {} s of the drain's end",
                ENRICHED_TIMEOUT.as_secs()
            ),
        }
        Figures {
            songs: workload.songs,
            musicbrainz_calls: self.musicbrainz_calls,
            coverart_calls: self.coverart_calls,
            ingest_ratio,
            node_ratio,
            until_enriched: self.until_enriched,
        }
    }
}

impl Run {
    /// Prints one run's drains and returns its node ÷ bare drain-rate ratio.
    fn report(&self, count: f64) -> f64 {
        self.drains.print_times(count, "msg/s");
        println!(
            "  after the drain and the journal floor: outcomes {}; events in the journal {}",
            format_counts(&self.outcomes),
            self.events
        );
        self.drains.print_ratios(count, None)
    }
}
