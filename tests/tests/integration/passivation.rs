//! Idle entities are passivated and come back with their state.

use std::time::Duration;

use playhead_proto::ids::StationId;
use playhead_proto::subjects::station_song;
use playhead_proto::v1::{ListPlaysRequest, SongObserved};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::model::publish_pipelined;
use playhead_tests::system::{TestGateway, TestNode, metric_value, temp_dir, test_node_config};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stations_passivate_and_resume_with_their_state() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.actors.passivate_after_secs = 1;
    config.actors.passivation_check_secs = 1;
    let node = TestNode::start(config).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let station = StationId::parse("sleepy").unwrap();
    let publish = |raw: &'static str| {
        let jetstream = jetstream.clone();
        let subject = station_song(&station);
        async move {
            let song = SongObserved {
                raw: raw.into(),
                ..Default::default()
            };
            jetstream
                .publish(subject, song.encode_to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish("A - One").await;
    eventually(
        "the station actor to go live",
        Duration::from_secs(10),
        || async {
            let metrics = node.metrics().await;
            (metric_value(&metrics, "playhead_entities_live", &[("kind", "station")]) == 1.0)
                .then_some(())
        },
    )
    .await;
    eventually(
        "the idle station to be passivated",
        Duration::from_secs(15),
        || async {
            let metrics = node.metrics().await;
            let live = metric_value(&metrics, "playhead_entities_live", &[("kind", "station")]);
            let passivated = metric_value(
                &metrics,
                "playhead_entities_passivated_total",
                &[("kind", "station")],
            );
            (live == 0.0 && passivated >= 1.0).then_some(())
        },
    )
    .await;

    // It comes back with its state: the next song is play 2 and ends play 1.
    publish("B - Two").await;
    let client = gateway.stations().await;
    let plays = eventually("the second play", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let plays = client
                .list_plays(ListPlaysRequest {
                    station_id: "sleepy".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .plays;
            (plays.len() == 2).then_some(plays)
        }
    })
    .await;
    assert_eq!(plays[0].play_seq, 2);
    assert_eq!(plays[0].song.clone().unwrap().title, "Two");
    assert!(plays[1].ended_at.is_some());
    gateway.stop().await;
    node.stop().await;
}

/// With batches applied side by side and the live bound at one entity, the bound never stops
/// an entity while a batch of it is in flight: a stop would drop its slice from the mailbox,
/// failing the batch as if the entity had panicked (and, repeated, quarantining songs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_bound_never_stops_an_entity_with_a_batch_in_flight() {
    const STATIONS: usize = 40;
    const ROUNDS: usize = 5;
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.actors.max_live_entities_per_shard = 1;
    config.ingest.batches_in_flight = 8;
    // Small batches, so many are in flight at once.
    config.ingest.batch_size = 4;
    let node = TestNode::start(config).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let songs = (0..ROUNDS).flat_map(|round| {
        (0..STATIONS).map(move |station| {
            let song = SongObserved {
                raw: format!("Artist {station} - Song {round}"),
                ..Default::default()
            };
            let subject = station_song(&StationId::parse(format!("bound-{station}")).unwrap());
            (subject, bytes::Bytes::from(song.encode_to_vec()))
        })
    });
    publish_pipelined(&jetstream, songs).await;
    let total = (STATIONS * ROUNDS) as f64;
    let metrics = eventually("every song applied", Duration::from_secs(30), || async {
        let metrics = node.metrics().await;
        let applied = metric_value(
            &metrics,
            "playhead_inbox_messages_total",
            &[("inbox", "station"), ("outcome", "applied")],
        );
        (applied >= total).then_some(metrics)
    })
    .await;
    let count = |name: &str| metric_value(&metrics, name, &[("kind", "station")]);
    assert_eq!(count("playhead_entity_failures_total"), 0.0);
    assert!(
        count("playhead_entities_passivated_total") > 0.0,
        "the bound evicted"
    );
    assert_eq!(
        metric_value(&metrics, "playhead_dead_letters_total", &[]),
        0.0
    );
    node.stop().await;
}
