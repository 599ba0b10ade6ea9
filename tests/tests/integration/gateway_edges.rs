//! The gateway's edges: invalid ids, limits, unknown stations, health and request metrics.

use std::time::Duration;

use playhead_client::command::MAX_TRACKS;
use playhead_client::settings::DEFAULT_MAX_MESSAGE_BYTES;
use playhead_gateway::server::GatewayConfig;
use playhead_proto::subjects::Inbox;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{
    GetNowPlayingRequest, ListPlaysRequest, ListSessionsRequest, PlayerOutcome, PlaylistTrack,
    SongObserved, StartPlaylist, StartPlaylistRequest, WatchNowPlayingRequest,
};
use playhead_proto::v1::{HeartbeatKind, HeartbeatReason};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::playout::heartbeat;
use playhead_tests::system::{
    NodeProcess, TestGateway, TestNode, metric_value, temp_dir, test_gateway_config,
    test_node_config,
};
use prost::Message;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_and_limits_are_invalid_arguments_and_unknown_stations_not_found() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let mut client: StationServiceClient<_> = gateway.stations().await;

    for bad in ["a.b", "a b", "x*", ">", "", &"y".repeat(129)] {
        let code = client
            .get_now_playing(GetNowPlayingRequest {
                station_id: bad.to_string(),
            })
            .await
            .expect_err("invalid id")
            .code();
        assert_eq!(code, Code::InvalidArgument, "GetNowPlaying({bad:?})");
        let code = client
            .list_plays(ListPlaysRequest {
                station_id: bad.to_string(),
                ..Default::default()
            })
            .await
            .expect_err("invalid id")
            .code();
        assert_eq!(code, Code::InvalidArgument, "ListPlays({bad:?})");
        let code = client
            .report_song(SongObserved {
                station_id: bad.to_string(),
                raw: "A - B".into(),
                ..Default::default()
            })
            .await
            .expect_err("invalid id")
            .code();
        assert_eq!(code, Code::InvalidArgument, "ReportSong({bad:?})");
        let code = client
            .watch_now_playing(WatchNowPlayingRequest {
                station_ids: vec!["fine".into(), bad.to_string()],
            })
            .await
            .expect_err("invalid id")
            .code();
        assert_eq!(code, Code::InvalidArgument, "WatchNowPlaying({bad:?})");
    }
    let too_big = client
        .list_plays(ListPlaysRequest {
            station_id: "fine".into(),
            page_size: 101,
            ..Default::default()
        })
        .await
        .expect_err("page too big");
    assert_eq!(too_big.code(), Code::InvalidArgument);
    let too_many = client
        .watch_now_playing(WatchNowPlayingRequest {
            station_ids: (0..101).map(|index| format!("s{index}")).collect(),
        })
        .await
        .expect_err("too many stations");
    assert_eq!(too_many.code(), Code::InvalidArgument);

    for code in [
        client
            .get_now_playing(GetNowPlayingRequest {
                station_id: "never-seen".into(),
            })
            .await
            .expect_err("unknown")
            .code(),
        client
            .list_plays(ListPlaysRequest {
                station_id: "never-seen".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown")
            .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }

    // ReportSong is durably accepted into the inbox; a repeated idempotency key is dropped.
    let mut request = tonic::Request::new(SongObserved {
        station_id: "reported".into(),
        raw: "Nina Simone - Sinnerman".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("idempotency-key", "retry-1".parse().unwrap());
    let first = client
        .report_song(request)
        .await
        .expect("accepted")
        .into_inner();
    let mut again = tonic::Request::new(SongObserved {
        station_id: "reported".into(),
        raw: "Nina Simone - Sinnerman".into(),
        ..Default::default()
    });
    again
        .metadata_mut()
        .insert("idempotency-key", "retry-1".parse().unwrap());
    let second = client
        .report_song(again)
        .await
        .expect("accepted")
        .into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.sequence, second.sequence);

    // Health answers SERVING once the gateway's broker connection is up (it may still be
    // connecting right after start).
    let health = HealthClient::new(gateway.channel().await);
    eventually(
        "the station service SERVING",
        Duration::from_secs(10),
        || {
            let mut health = health.clone();
            async move {
                let status = health
                    .check(HealthCheckRequest {
                        service: "playhead.v1.StationService".into(),
                    })
                    .await
                    .expect("health")
                    .into_inner()
                    .status;
                (status == 1).then_some(())
            }
        },
    )
    .await;
    // One tower layer counts every playhead RPC: errors by their code, answers as Ok, and
    // nothing for the health service.
    let metrics = gateway.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "playhead_gateway_grpc_requests_total",
            &[("method", "GetNowPlaying"), ("code", "InvalidArgument")]
        ) >= 6.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "playhead_gateway_grpc_requests_total",
            &[("method", "ReportSong"), ("code", "Ok")]
        ),
        2.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "playhead_gateway_grpc_request_seconds_count",
            &[("method", "ReportSong")]
        ) >= 2.0
    );
    assert!(!metrics.contains("method=\"Check\""), "{metrics}");
    gateway.stop().await;
    node.stop().await;
}

/// `StartPlaylist` tracks `t…` with ids of `id_len` characters and no artist.
fn playlist_of(user: &str, count: usize, id_len: usize) -> StartPlaylistRequest {
    let tracks = (0..count)
        .map(|n| PlaylistTrack {
            track_id: format!("t{n:0width$}", width = id_len - 1),
            artist: String::new(),
        })
        .collect();
    StartPlaylistRequest {
        user_id: user.into(),
        start: Some(StartPlaylist {
            playlist_id: "big".into(),
            tracks,
            seed: Some(1),
            restart: false,
        }),
    }
}

/// One size contract: the node publishes its `ingest.max_message_bytes`, the gateway holds
/// every command to it before encoding it, and a playlist at the documented maximum
/// (`MAX_TRACKS` tracks with 8-character ids) fits the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playlist_at_the_documented_maximum_is_accepted_and_larger_ones_refused_before_publishing()
 {
    const NODE_LIMIT: usize = 96 * 1024;
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.ingest.max_message_bytes = NODE_LIMIT;
    let node = TestNode::start(config).await;
    let gateway = TestGateway::start(&nats.url()).await;
    // The gateway follows the limit the node published (not its own default of 64 KiB).
    eventually(
        "the gateway to follow the node's limit",
        Duration::from_secs(10),
        || {
            let gateway = &gateway;
            async move {
                let metrics = gateway.metrics().await;
                (metric_value(&metrics, "playhead_gateway_max_message_bytes", &[])
                    == NODE_LIMIT as f64)
                    .then_some(())
            }
        },
    )
    .await;
    let mut players = gateway.players().await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let published = || {
        let jetstream = jetstream.clone();
        async move {
            let mut stream = jetstream
                .get_stream(Inbox::User.stream_name())
                .await
                .unwrap();
            stream.info().await.unwrap().state.messages
        }
    };

    // The documented maximum fits the default limit, and is accepted.
    let maximum = playlist_of("max", MAX_TRACKS, 8);
    assert!(maximum.encoded_len() < DEFAULT_MAX_MESSAGE_BYTES);
    let reply = players
        .start_playlist(maximum)
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(reply.outcome, PlayerOutcome::Ok as i32, "{reply:?}");
    assert!(reply.session.is_some());
    // Above the node's default but within the limit it published: accepted too.
    let between = playlist_of("between", 3_000, 24);
    assert!((DEFAULT_MAX_MESSAGE_BYTES..NODE_LIMIT).contains(&between.encoded_len()));
    players.start_playlist(between).await.expect("accepted");

    // One track more than the maximum, or more bytes than the node takes: refused, nothing
    // published.
    let before = published().await;
    let status = players
        .start_playlist(playlist_of("over", MAX_TRACKS + 1, 8))
        .await
        .expect_err("too many tracks");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("at most 5000"),
        "{}",
        status.message()
    );
    let too_big = playlist_of("big", 3_000, 40);
    let size = too_big.encoded_len();
    assert!(size > NODE_LIMIT);
    let status = players
        .start_playlist(too_big)
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("at most 98304"),
        "{}",
        status.message()
    );
    assert_eq!(published().await, before, "nothing was published");
    node.stop().await;
}

/// A broker whose inboxes a node created before it stopped: heartbeats are then accepted and
/// wait for a decision until the gateway's heartbeat timeout, which holds them in flight.
async fn inboxes_without_a_node() -> NatsServer {
    let nats = NatsServer::start();
    let data = temp_dir();
    TestNode::start(test_node_config(&nats.url(), data.path()))
        .await
        .stop()
        .await;
    nats
}

/// Admission: beyond `max_concurrent_rpcs` requests in flight, one more is answered
/// RESOURCE_EXHAUSTED at once (not queued), and the gateway takes requests again as soon as
/// those in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_resource_exhausted_at_once() {
    let nats = inboxes_without_a_node().await;
    let hold = Duration::from_secs(3);
    let gateway = TestGateway::start_with(GatewayConfig {
        heartbeat_timeout: hold,
        max_concurrent_rpcs: 2,
        ..test_gateway_config(&nats.url())
    })
    .await;
    let playouts = gateway.playouts().await;
    let beat = |user: &str| heartbeat(user, "tv", "p1", "film-1", HeartbeatKind::Start, 0);
    let held: Vec<_> = ["ann", "bob"]
        .into_iter()
        .map(|user| {
            let mut playouts = playouts.clone();
            let request = beat(user);
            tokio::spawn(async move { playouts.heartbeat(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let refused = playouts
        .clone()
        .heartbeat(beat("cid"))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_concurrent_rpcs"));
    // Refused while the two are still held: not queued behind them.
    assert!(held.iter().all(|held| !held.is_finished()));

    for held in held {
        let decision = held
            .await
            .unwrap()
            .expect("a fail-open answer")
            .into_inner();
        assert_eq!(decision.reason, HeartbeatReason::Degraded as i32);
    }
    // Room again.
    let decision = playouts
        .clone()
        .heartbeat(beat("dee"))
        .await
        .expect("admitted again")
        .into_inner();
    assert_eq!(decision.reason, HeartbeatReason::Degraded as i32);
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "playhead_gateway_grpc_requests_total",
            &[("method", "Heartbeat"), ("code", "ResourceExhausted")]
        ),
        1.0
    );
}

/// The node answers queries concurrently: a slow one (injected: `list_sessions` takes 3 s) does
/// not hold the others, which are answered while it is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_does_not_hold_the_others() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = NodeProcess::start(
        &nats.url(),
        data.path(),
        &[("PLAYHEAD_FAULTS", "slow_query=list_sessions:3000")],
    )
    .await;
    let gateway = TestGateway::start_with(GatewayConfig {
        request_timeout: Duration::from_secs(10),
        ..test_gateway_config(&nats.url())
    })
    .await;
    let mut players = gateway.players().await;
    let slow = tokio::spawn(async move {
        players
            .list_sessions(ListSessionsRequest {
                user_id: "ann".into(),
                page_size: 10,
                page_token: String::new(),
            })
            .await
    });
    // Give the slow query time to reach the node first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stations = gateway.stations().await;
    for _ in 0..5 {
        // The node's answer (a station it never saw has no plays), not a timeout.
        let answer = stations
            .list_plays(ListPlaysRequest {
                station_id: "radio-1".into(),
                page_size: 10,
                before: None,
                since: None,
            })
            .await;
        assert_eq!(answer.expect_err("no plays").code(), Code::NotFound);
    }
    assert!(
        !slow.is_finished(),
        "the other queries were answered while the slow one ran"
    );
    let sessions = slow.await.unwrap().expect("the slow query is answered too");
    assert!(sessions.into_inner().sessions.is_empty());
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_abuse_is_held_back_without_holding_a_permit() {
    let nats = inboxes_without_a_node().await;
    let gateway = TestGateway::start_with(GatewayConfig {
        heartbeat_timeout: Duration::from_secs(1),
        max_concurrent_rpcs: 1,
        refusal_pause: Duration::from_secs(5),
        ..test_gateway_config(&nats.url())
    })
    .await;
    let beat = |user: &str| heartbeat(user, "tv", "p1", "film-1", HeartbeatKind::Start, 0);
    // A call without a token: refused, and its answer held back.
    let tokenless = playhead_proto::v1::playout_service_client::PlayoutServiceClient::new(
        gateway.channel().await,
    );
    let refused = {
        let mut tokenless = tokenless.clone();
        let request = beat("ann");
        tokio::spawn(async move { tokenless.heartbeat(request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile the one permit is free: a valid call is admitted (it waits the heartbeat
    // timeout for its fail-open answer), not RESOURCE_EXHAUSTED.
    let admitted = gateway
        .playouts()
        .await
        .heartbeat(beat("bob"))
        .await
        .expect("admitted beside the held-back refusal")
        .into_inner();
    assert_eq!(admitted.reason, HeartbeatReason::Degraded as i32);
    // The refusal is still held back after that whole call.
    assert!(!refused.is_finished(), "answered without the pause");
    let status = refused.await.unwrap().expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}
