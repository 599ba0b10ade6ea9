//! Idle entities are passivated and come back with their state.

use std::time::Duration;

use playhead_proto::ids::StationId;
use playhead_proto::subjects::station_song;
use playhead_proto::v1::{ListPlaysRequest, SongObserved};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
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
