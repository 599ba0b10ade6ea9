//! Song enrichment against the real broker and a local provider answering in the MusicBrainz
//! and Cover Art Archive shapes (`playhead_tests::provider`), which records every call with
//! its time: one provider call per distinct song however many stations start it, the cache
//! kept across a restart, not-found answers cached, and a provider that is down, failing or
//! asking to slow down never holding a song back, nor being asked faster than its rate limit.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use playhead_actors::config::{EnrichmentProvider, NodeConfig};
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{EVENTS_STREAM, NOW_PLAYING_BUCKET, station_song};
use playhead_proto::v1::{self, NowPlaying, SongObserved, WatchNowPlayingRequest};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::provider::{Answer, ExpectedEnrichment, Service, TestProvider};
use playhead_tests::system::{
    TestGateway, TestNode, all_plays_full, metric_value, temp_dir, test_node_config,
};
use prost::Message as _;

/// The node's configuration with enrichment asking `provider`, `rate` requests a second.
fn enriching(
    nats_url: &str,
    data: &std::path::Path,
    provider: &TestProvider,
    rate: f64,
) -> NodeConfig {
    let mut config = test_node_config(nats_url, data);
    let enrichment = &mut config.enrichment;
    enrichment.provider = EnrichmentProvider::Musicbrainz;
    enrichment.musicbrainz_url = provider.musicbrainz_url();
    enrichment.coverart_url = provider.coverart_url();
    enrichment.user_agent = "playhead-tests/1 ( tests@playhead.invalid )".into();
    enrichment.musicbrainz_rate_per_sec = rate;
    enrichment.coverart_rate_per_sec = rate;
    enrichment.request_timeout_ms = 2_000;
    enrichment.max_attempts = 2;
    enrichment.backoff_initial_ms = 100;
    enrichment.backoff_max_ms = 500;
    enrichment.breaker_failures = 3;
    enrichment.breaker_open_secs = 1;
    config
}

async fn observe(jetstream: &jetstream::Context, station: &str, artist: &str, title: &str) {
    let station = StationId::parse(station).unwrap();
    let payload = SongObserved {
        station_id: station.to_string(),
        artist: artist.into(),
        title: title.into(),
        ..SongObserved::default()
    };
    jetstream
        .publish(station_song(&station), payload.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn now_playing(kv: &jetstream::kv::Store, station: &str) -> Option<NowPlaying> {
    let value = kv.get(station).await.ok()??;
    NowPlaying::decode(value.as_ref()).ok()
}

/// Waits until `station` plays `title` with an enrichment, and returns it.
async fn enriched(kv: &jetstream::kv::Store, station: &str, title: &str) -> v1::SongEnrichment {
    eventually(
        &format!("{station} to play {title} enriched"),
        Duration::from_secs(30),
        || async move {
            let now = now_playing(kv, station).await?;
            if now.song.as_ref()?.title != title {
                return None;
            }
            now.enrichment
        },
    )
    .await
}

fn assert_enrichment(found: &v1::SongEnrichment, expected: &ExpectedEnrichment, what: &str) {
    assert_eq!(
        (
            &found.recording_mbid,
            &found.title,
            &found.artist,
            &found.artist_mbid,
            &found.release_mbid,
            &found.release_title,
            found.release_year,
            &found.cover_url,
        ),
        (
            &expected.recording_mbid,
            &expected.title,
            &expected.artist,
            &expected.artist_mbid,
            &expected.release_mbid,
            &expected.release_title,
            expected.release_year,
            &expected.cover_url,
        ),
        "{what}"
    );
    assert!(found.enriched_at.is_some(), "{what}: enriched_at");
}

/// `SongEnriched` events in the journal per station.
async fn enriched_events(jetstream: &jetstream::Context) -> BTreeMap<String, usize> {
    let events = jetstream.get_stream(EVENTS_STREAM).await.unwrap();
    let mut counts = events
        .info_with_subjects("playhead.events.station.*.SongEnriched")
        .await
        .unwrap();
    let mut per_station = BTreeMap::new();
    while let Some(entry) = counts.next().await {
        let (subject, count) = entry.unwrap();
        per_station.insert(subject.split('.').nth(3).unwrap().to_owned(), count);
    }
    per_station
}

/// Whether the song an answer is about has `title` (recording searches only).
fn searches_for(provider: &TestProvider, title: &str) -> usize {
    provider
        .calls_to(Service::MusicBrainz)
        .iter()
        .filter(|call| call.title.as_deref() == Some(title))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_stations_one_call_and_the_cache_outlives_a_restart() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let provider = TestProvider::start().await.unwrap();
    // Slow enough that every station has started the song before the answer comes.
    provider.set_latency(Duration::from_millis(1_500));
    provider.set_not_found("Nobody Knows", "Unheard Song");
    let config = enriching(&nats.url(), data.path(), &provider, 5.0);
    let node = TestNode::start(config.clone()).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = jetstream::new(nats.connect().await);
    let kv = jetstream.get_key_value(NOW_PLAYING_BUCKET).await.unwrap();

    // A listener watching one of the stations sees the song, then its enriched version.
    let mut stations_client = gateway.stations().await;
    let mut watch = stations_client
        .watch_now_playing(WatchNowPlayingRequest {
            station_ids: vec!["radio-000".into()],
        })
        .await
        .unwrap()
        .into_inner();

    // When 100 stations switch to the same new song at once.
    let stations: Vec<String> = (0..100).map(|index| format!("radio-{index:03}")).collect();
    futures::future::join_all(
        stations
            .iter()
            .map(|station| observe(&jetstream, station, "Nina Simone", "Sinnerman")),
    )
    .await;

    // Then each is served at once, unenriched (the provider has not answered yet).
    let first = within(
        "the first now-playing",
        Duration::from_secs(10),
        watch.next(),
    )
    .await
    .expect("a now-playing")
    .expect("a now-playing, not an error");
    assert_eq!(first.song.as_ref().unwrap().title, "Sinnerman");
    assert_eq!(
        first.enrichment, None,
        "served before the provider answered"
    );

    // And every one gets the enrichment of exactly one provider call.
    let expected = TestProvider::expected("Nina Simone", "Sinnerman");
    for station in &stations {
        let found = enriched(&kv, station, "Sinnerman").await;
        assert_enrichment(&found, &expected, station);
    }
    let second = within(
        "the enriched now-playing",
        Duration::from_secs(10),
        watch.next(),
    )
    .await
    .expect("the enriched now-playing")
    .expect("not an error");
    assert_enrichment(
        second
            .enrichment
            .as_ref()
            .expect("the watcher sees the enrichment"),
        &expected,
        "watched",
    );
    assert_eq!(
        provider.calls_to(Service::MusicBrainz).len(),
        1,
        "one search"
    );
    assert_eq!(provider.calls_to(Service::CoverArt).len(), 1, "one cover");
    let call = &provider.calls_to(Service::MusicBrainz)[0];
    assert_eq!(
        call.user_agent.as_deref(),
        Some("playhead-tests/1 ( tests@playhead.invalid )")
    );
    // One SongEnriched per station in the journal.
    let station_count = stations.len();
    let events = eventually(
        "a SongEnriched per station",
        Duration::from_secs(10),
        || {
            let jetstream = jetstream.clone();
            async move {
                let events = enriched_events(&jetstream).await;
                (events.len() == station_count).then_some(events)
            }
        },
    )
    .await;
    assert!(events.values().all(|count| *count == 1), "{events:?}");
    let metrics = node.metrics().await;
    // Stations that started the song while it was asked joined the one look-up (any later
    // found it in the cache); none asked again.
    let joins = metric_value(
        &metrics,
        "playhead_enrichment_singleflight_joins_total",
        &[],
    );
    assert!((1.0..=99.0).contains(&joins), "joins: {joins}");

    // The play history keeps the enrichment once the song has ended.
    observe(&jetstream, "radio-000", "Björk", "Jóga").await;
    let joga = TestProvider::expected("Björk", "Jóga");
    assert_enrichment(&enriched(&kv, "radio-000", "Jóga").await, &joga, "Jóga");
    let plays = all_plays_full(&mut stations_client, "radio-000").await;
    assert_eq!(plays.len(), 2);
    assert!(plays[0].ended_at.is_some());
    assert_enrichment(
        plays[0].enrichment.as_ref().expect("ended play keeps it"),
        &expected,
        "history",
    );
    assert_enrichment(
        plays[1].enrichment.as_ref().expect("play on air"),
        &joga,
        "history",
    );

    // A song the provider does not know: asked once, served unenriched, and not asked again.
    provider.set_latency(Duration::ZERO);
    observe(&jetstream, "radio-001", "Nobody Knows", "Unheard Song").await;
    eventually("the not-found answer", Duration::from_secs(20), || async {
        let metrics = node.metrics().await;
        (metric_value(
            &metrics,
            "playhead_enrichment_songs_total",
            &[("outcome", "not_found")],
        ) == 1.0)
            .then_some(())
    })
    .await;
    observe(&jetstream, "radio-002", "nobody knows", "UNHEARD SONG").await;
    eventually(
        "the second station to play it",
        Duration::from_secs(10),
        || async {
            let now = now_playing(&kv, "radio-002").await?;
            (now.song?.title == "UNHEARD SONG").then_some(())
        },
    )
    .await;
    eventually("a cached not-found", Duration::from_secs(10), || async {
        let metrics = node.metrics().await;
        (metric_value(
            &metrics,
            "playhead_enrichment_cache_total",
            &[("result", "not_found_hit")],
        ) >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        searches_for(&provider, "Unheard Song"),
        1,
        "not-found is cached"
    );
    assert_eq!(
        now_playing(&kv, "radio-002").await.unwrap().enrichment,
        None
    );
    let calls_before_restart = provider.calls().len();

    // After a restart, known songs are not asked again: new plays start enriched.
    node.stop().await;
    let node = TestNode::start(config).await;
    observe(&jetstream, "radio-new-1", "NINA SIMONE", "sinnerman").await;
    observe(&jetstream, "radio-new-2", "Björk", "Jóga").await;
    assert_enrichment(
        &enriched(&kv, "radio-new-1", "sinnerman").await,
        &expected,
        "after restart",
    );
    assert_enrichment(
        &enriched(&kv, "radio-new-2", "Jóga").await,
        &joga,
        "after restart",
    );
    assert_eq!(
        provider.calls().len(),
        calls_before_restart,
        "no call after the restart"
    );
    let metrics = node.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "playhead_enrichment_cache_total",
            &[("result", "hit")]
        ) >= 2.0
    );
    node.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_holds_nothing_back_and_is_never_asked_too_fast() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let provider = TestProvider::start().await.unwrap();
    // Two requests a second: consecutive searches at least 500 ms apart.
    let rate = 2.0;
    let node = TestNode::start(enriching(&nats.url(), data.path(), &provider, rate)).await;
    let jetstream = jetstream::new(nats.connect().await);
    let kv = jetstream.get_key_value(NOW_PLAYING_BUCKET).await.unwrap();

    // The provider is down: songs still start, served unenriched.
    provider.set_answer(Service::MusicBrainz, Answer::Down);
    let songs = [
        ("radio-a", "Massive Attack", "Teardrop"),
        ("radio-b", "Portishead", "Glory Box"),
    ];
    for (station, artist, title) in songs {
        observe(&jetstream, station, artist, title).await;
    }
    for (station, _, title) in songs {
        let now = eventually("the song served", Duration::from_secs(10), || async {
            let now = now_playing(&kv, station).await?;
            (now.song.as_ref()?.title == title).then_some(now)
        })
        .await;
        assert_eq!(now.enrichment, None, "{station}: provider down");
    }
    // Enough failures to open the breaker.
    eventually("the breaker to open", Duration::from_secs(20), || async {
        let metrics = node.metrics().await;
        (metric_value(
            &metrics,
            "playhead_enrichment_breaker_state",
            &[("provider", "musicbrainz")],
        ) == 2.0)
            .then_some(())
    })
    .await;

    // Then it is back, but answers 503 twice before answering normally.
    provider.set_answer(Service::MusicBrainz, Answer::Normal);
    provider.fail_next(
        Service::MusicBrainz,
        2,
        Answer::Status {
            code: 503,
            retry_after: None,
        },
    );
    for (station, artist, title) in songs {
        let found = enriched(&kv, station, title).await;
        assert_enrichment(&found, &TestProvider::expected(artist, title), station);
    }

    // A 429 with Retry-After: 2 holds every search back for 2 s.
    provider.fail_next(
        Service::MusicBrainz,
        1,
        Answer::Status {
            code: 429,
            retry_after: Some("2".into()),
        },
    );
    let asked_before = provider.calls_to(Service::MusicBrainz).len();
    observe(&jetstream, "radio-c", "Björk", "Hyperballad").await;
    let found = enriched(&kv, "radio-c", "Hyperballad").await;
    assert_enrichment(
        &found,
        &TestProvider::expected("Björk", "Hyperballad"),
        "after 429",
    );
    let searches = provider.calls_to(Service::MusicBrainz);
    let after_429 = &searches[asked_before..];
    assert_eq!(after_429[0].status, 429);
    assert!(after_429.len() >= 2);
    let waited = after_429[1].at - after_429[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "Retry-After honoured: {waited:?}"
    );

    // A refused search (400) is not asked again: the song is given up and served as it is.
    provider.fail_next(
        Service::MusicBrainz,
        1,
        Answer::Status {
            code: 400,
            retry_after: None,
        },
    );
    observe(&jetstream, "radio-d", "Björk", "Army of Me").await;
    eventually(
        "the refused song given up",
        Duration::from_secs(20),
        || async {
            let metrics = node.metrics().await;
            (metric_value(
                &metrics,
                "playhead_enrichment_songs_total",
                &[("outcome", "given_up")],
            ) == 1.0)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(searches_for(&provider, "Army of Me"), 1, "asked once");
    assert_eq!(now_playing(&kv, "radio-d").await.unwrap().enrichment, None);

    // Every call the provider saw, failed or not, kept to the rate limit. The times are read
    // where the server reads each request, so loopback transit may shift one by a few
    // milliseconds either way: 50 ms of slack on a 500 ms interval.
    for service in [Service::MusicBrainz, Service::CoverArt] {
        let calls = provider.calls_to(service);
        assert!(!calls.is_empty());
        for pair in calls.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap + Duration::from_millis(50) >= Duration::from_secs_f64(1.0 / rate),
                "{service:?} asked {gap:?} after the previous call"
            );
        }
    }
    let metrics = node.metrics().await;
    for (outcome, at_least) in [
        ("unreachable", 1.0),
        ("server_error", 2.0),
        ("rate_limited", 1.0),
    ] {
        let calls = metric_value(
            &metrics,
            "playhead_enrichment_provider_calls_total",
            &[("provider", "musicbrainz"), ("outcome", outcome)],
        );
        assert!(calls >= at_least, "{outcome}: {calls}");
    }
    node.stop().await;
}
