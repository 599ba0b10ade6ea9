//! Station song changes from NATS publishers to gRPC clients, checked against a model.

use std::time::Duration;

use futures::StreamExt;
use playhead_proto::ids::StationId;
use playhead_proto::partition::partition_of;
use playhead_proto::subjects::{Inbox, station_song};
use playhead_proto::v1::{GetNowPlayingRequest, NowPlaying, SongObserved, WatchNowPlayingRequest};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::model::{ExpectedPlay, generate, publish_all};
use playhead_tests::system::{
    TestGateway, TestNode, list_plays_page, plays_of, temp_dir, test_node_config,
    wait_until_drained,
};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_become_exact_now_playing_and_paged_history() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);

    // Given 2,000 observations over 50 stations, about 80% of them repeats.
    let (observations, expected) = generate(7, 50, 2_000, 80);
    publish_all(&jetstream, &observations).await;
    wait_until_drained(&jetstream, Inbox::Station, Duration::from_secs(60)).await;

    let mut client = gateway.stations().await;
    for (station, plays) in &expected {
        // Then now-playing is the last change, as first spelled.
        let last = plays.last().expect("every listed station has a play");
        let now_playing = eventually(
            "now-playing to reach the gateway cache",
            Duration::from_secs(10),
            || {
                let mut client = client.clone();
                let station = station.clone();
                async move {
                    let response = client
                        .get_now_playing(GetNowPlayingRequest {
                            station_id: station,
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .now_playing?;
                    (response.play_seq == plays.len() as u64).then_some(response)
                }
            },
        )
        .await;
        let song = now_playing.song.expect("song");
        assert_eq!((&song.artist, &song.title), (&last.0, &last.1), "{station}");

        // Paging towards the past with `before`: every play once, newest first.
        let mut backwards = Vec::new();
        let mut before = None;
        loop {
            let response = list_plays_page(&mut client, station, 7, before, None).await;
            backwards.extend(plays_of(&response));
            match response.next_before {
                Some(cursor) => before = Some(cursor),
                None => break,
            }
        }
        let expected_newest_first: Vec<(u64, ExpectedPlay)> = plays
            .iter()
            .cloned()
            .enumerate()
            .map(|(index, play)| (index as u64 + 1, play))
            .rev()
            .collect();
        assert_eq!(
            backwards, expected_newest_first,
            "{station} paged with before"
        );

        // Paging towards the present with `since`: every play once, pages newest first.
        let mut forwards = Vec::new();
        let mut since = Some(0);
        loop {
            let response = list_plays_page(&mut client, station, 7, None, since).await;
            if response.plays.is_empty() {
                break;
            }
            let mut page_plays = plays_of(&response);
            page_plays.reverse();
            forwards.extend(page_plays);
            since = response.next_since;
        }
        let expected_oldest_first: Vec<_> = expected_newest_first.iter().rev().cloned().collect();
        assert_eq!(
            forwards, expected_oldest_first,
            "{station} paged with since"
        );

        // Every play but the current one has ended.
        let newest = list_plays_page(&mut client, station, 100, None, None).await;
        assert!(newest.plays[0].ended_at.is_none());
        assert!(
            newest
                .plays
                .iter()
                .skip(1)
                .all(|play| play.ended_at.is_some())
        );
    }

    // The domain events agree: exactly one SongStarted per play.
    let total_plays: u64 = expected.values().map(|plays| plays.len() as u64).sum();
    let events = jetstream
        .get_stream(playhead_proto::subjects::EVENTS_STREAM)
        .await
        .expect("events stream");
    let mut per_subject = events
        .info_with_subjects("playhead.events.station.*.SongStarted")
        .await
        .expect("events per subject");
    let mut song_started = 0u64;
    while let Some(entry) = per_subject.next().await {
        song_started += entry.expect("subject count").1 as u64;
    }
    assert_eq!(song_started, total_plays);

    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_partitions_inbox_subjects_as_clients_compute_them() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.ingest.partitions = 64;
    let node = TestNode::start(config).await;
    let client = nats.connect().await;
    let jetstream = async_nats::jetstream::new(client);
    let stations: Vec<String> = (0..200).map(|index| format!("radio_{index}-x")).collect();
    for station in &stations {
        let id = StationId::parse(station.clone()).expect("valid");
        let song = SongObserved {
            station_id: station.clone(),
            raw: "A - B".into(),
            ..Default::default()
        };
        jetstream
            .publish(station_song(&id), song.encode_to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let stream = jetstream
        .get_stream(Inbox::Station.stream_name())
        .await
        .expect("inbox stream");
    for (index, station) in stations.iter().enumerate() {
        let stored = stream
            .get_raw_message(index as u64 + 1)
            .await
            .expect("stored message");
        let parsed = Inbox::Station
            .parse_stored(&stored.subject)
            .expect("stored subject parses");
        assert_eq!(parsed.entity_token, station.as_str());
        assert_eq!(parsed.partition, partition_of(station, 64), "{station}");
    }
    node.stop().await;
}

async fn next_change(watch: &mut tonic::Streaming<NowPlaying>) -> NowPlaying {
    within(
        "a now-playing change",
        Duration::from_secs(10),
        watch.next(),
    )
    .await
    .expect("stream open")
    .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_the_current_value_then_each_change_once_in_order() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let station = StationId::parse("watched").expect("valid");
    let publish = |artist: &str, title: &str| {
        let song = SongObserved {
            station_id: station.to_string(),
            artist: artist.into(),
            title: title.into(),
            ..Default::default()
        };
        let jetstream = jetstream.clone();
        let subject = station_song(&station);
        async move {
            jetstream
                .publish(subject, song.encode_to_vec().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    };
    publish("First", "Song").await;
    let mut client = gateway.stations().await;
    let mut watch = client
        .watch_now_playing(WatchNowPlayingRequest {
            station_ids: vec!["watched".into(), "silent".into()],
        })
        .await
        .expect("watch")
        .into_inner();
    // The current value first (it may already be cached or arrive shortly).
    let first: NowPlaying = next_change(&mut watch).await;
    assert_eq!(
        (first.play_seq, first.song.unwrap().title),
        (1, "Song".to_string())
    );
    let mut received = vec![1];
    let mut on_air = ("First".to_string(), "Song".to_string());
    for change in 2..=6u64 {
        // A repeat of the song on air (differently spelled) changes nothing, sends nothing...
        publish(&on_air.0.to_uppercase(), &format!("{}!", on_air.1)).await;
        // ...so the next item is the next change: a duplicate would show up first.
        on_air = (format!("Artist {change}"), format!("Title {change}"));
        publish(&on_air.0, &on_air.1).await;
        let item = next_change(&mut watch).await;
        received.push(item.play_seq);
        assert_eq!(item.song.unwrap().artist, format!("Artist {change}"));
    }
    assert_eq!(received, vec![1, 2, 3, 4, 5, 6]);
    drop(client);
    gateway.stop().await;
    node.stop().await;
}
