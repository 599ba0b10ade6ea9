//! Every RPC but health needs a signed token, and a token reaches only what its role and
//! subject cover: refused calls publish and read nothing.

use std::time::Duration;

use playhead_gateway::auth::{Bearer, Claims, KeyRing, Role, now_secs};
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{
    GetNowPlayingRequest, GetSessionRequest, Heartbeat, ListSessionsRequest, PlaylistTrack,
    SongObserved, StartPlaylist, StartPlaylistRequest,
};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::system::{
    CliTarget, TestGateway, TestNode, cli, temp_dir, test_gateway_config, test_node_config,
};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn start(user: &str, playlist: &str) -> StartPlaylistRequest {
    StartPlaylistRequest {
        user_id: user.into(),
        start: Some(StartPlaylist {
            playlist_id: playlist.into(),
            tracks: (0..3)
                .map(|n| PlaylistTrack {
                    track_id: format!("t{n}"),
                    artist: String::new(),
                })
                .collect(),
            seed: Some(1),
            restart: false,
        }),
    }
}

fn song(station: &str) -> SongObserved {
    SongObserved {
        station_id: station.into(),
        artist: "Nina Simone".into(),
        title: "Sinnerman".into(),
        ..SongObserved::default()
    }
}

/// Messages stored in an inbox stream.
async fn stored(jetstream: &async_nats::jetstream::Context, stream: &str) -> u64 {
    jetstream
        .get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_nothing_is_published_or_read_and_health_stays_open() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);

    let mut health = HealthClient::new(gateway.channel().await);
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("health needs no token");

    let now = now_secs();
    let expired = gateway.keys.mint(&Claims {
        sub: "ann".into(),
        role: Role::Admin,
        stations: Vec::new(),
        iat: now - 7200,
        exp: now - 3600,
    });
    let foreign = KeyRing::generate("test").mint(&Claims {
        sub: "ann".into(),
        role: Role::Admin,
        stations: Vec::new(),
        iat: now,
        exp: now + 3600,
    });
    let unsigned = PlayerServiceClient::new(gateway.channel().await);
    let refused = [
        ("expired", Some(expired)),
        ("signed with another key", Some(foreign)),
        ("garbage", Some("not-a-token".to_owned())),
    ];
    let status = unsigned.clone().start_playlist(start("ann", "p")).await;
    assert_eq!(status.unwrap_err().code(), Code::Unauthenticated, "none");
    for (what, token) in refused {
        let channel = gateway.channel_as(token.as_deref().unwrap()).await;
        let status = PlayerServiceClient::new(channel.clone())
            .start_playlist(start("ann", "p"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        let status = StationServiceClient::new(channel.clone())
            .report_song(song("radio-1"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        let status = StationServiceClient::new(channel.clone())
            .get_now_playing(GetNowPlayingRequest {
                station_id: "radio-1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
        let status = PlayoutServiceClient::new(channel)
            .heartbeat(Heartbeat {
                user_id: "ann".into(),
                device_id: "tv".into(),
                playout_id: "p1".into(),
                content_id: "film".into(),
                kind: 1,
                position_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    }
    assert_eq!(stored(&jetstream, "PLAYHEAD_INBOX_USER").await, 0);
    assert_eq!(stored(&jetstream, "PLAYHEAD_INBOX_STATION").await, 0);
    let unauthenticated = gateway.metrics().await;
    assert!(
        unauthenticated.contains("code=\"Unauthenticated\""),
        "refusals are counted"
    );
    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_only_what_it_may() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let as_role = |role, subject: &str, stations: &[&str]| gateway.token(role, subject, stations);

    // A listener drives its own player and reads its own sessions, nobody else's.
    let ann = gateway
        .channel_as(&as_role(Role::Listener, "ann", &[]))
        .await;
    let mut ann_players = PlayerServiceClient::new(ann.clone());
    ann_players
        .start_playlist(start("ann", "road"))
        .await
        .unwrap();
    let denied = ann_players
        .start_playlist(start("bob", "road"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("own user"), "{denied:?}");
    let denied = ann_players
        .list_sessions(ListSessionsRequest {
            user_id: "bob".into(),
            ..ListSessionsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = StationServiceClient::new(ann.clone())
        .report_song(song("radio-1"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Only ann's command reached the inbox.
    assert_eq!(stored(&jetstream, "PLAYHEAD_INBOX_USER").await, 1);
    let mut admin_players = gateway.players().await;
    let bob = admin_players
        .get_session(GetSessionRequest {
            user_id: "bob".into(),
            playlist_id: "road".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bob.code(), Code::NotFound, "bob has no session");

    // An operator reads everyone's state and changes none.
    let operator = gateway
        .channel_as(&as_role(Role::Operator, "ops", &[]))
        .await;
    let mut operator_players = PlayerServiceClient::new(operator);
    let sessions = operator_players
        .list_sessions(ListSessionsRequest {
            user_id: "ann".into(),
            ..ListSessionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sessions.sessions.len(), 1);
    let denied = operator_players
        .start_playlist(start("ann", "gym"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A station token reports for its stations only.
    let poller = gateway
        .channel_as(&as_role(Role::Station, "poller", &["radio-1"]))
        .await;
    let mut stations = StationServiceClient::new(poller);
    stations.report_song(song("radio-1")).await.unwrap();
    let denied = stations.report_song(song("radio-2")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("radio-2"), "{denied:?}");
    assert_eq!(stored(&jetstream, "PLAYHEAD_INBOX_STATION").await, 1);
    assert_eq!(stored(&jetstream, "PLAYHEAD_INBOX_USER").await, 1);
    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_keys_and_tokens_a_gateway_accepts() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let keys = data.path().join("auth-keys");
    let keys_arg = keys.display().to_string();
    let nobody = CliTarget {
        grpc_url: "http://127.0.0.1:1".into(),
        token: String::new(),
    };
    let (ok, _, err) = cli(
        &nobody,
        &["token", "keygen", "--out", &keys_arg, "--kid", "k7"],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&nobody, &["token", "keygen", "--out", &keys_arg]).await;
    assert!(!ok, "an existing key file is never overwritten");
    assert!(err.contains("cannot create"), "{err}");
    let ring = KeyRing::load(&keys).expect("keygen writes a ring the gateway loads");
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k7"]);
    let gateway = TestGateway::start_with(playhead_gateway::server::GatewayConfig {
        keys: std::sync::Arc::new(ring),
        ..test_gateway_config(&nats.url())
    })
    .await;
    let (ok, token, err) = cli(
        &nobody,
        &[
            "token", "mint", "--keys", &keys_arg, "--user", "fay", "--role", "listener",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let fay = CliTarget {
        grpc_url: gateway.grpc_url(),
        token: token.trim().to_owned(),
    };
    let own = [
        "player",
        "start",
        "--user",
        "fay",
        "--playlist",
        "chill",
        "--track",
        "a",
    ];
    let (ok, _, err) = cli(&fay, &own).await;
    assert!(ok, "{err}");
    let other = [
        "player",
        "start",
        "--user",
        "gus",
        "--playlist",
        "chill",
        "--track",
        "a",
    ];
    let (ok, _, err) = cli(&fay, &other).await;
    assert!(!ok);
    assert!(err.contains("PermissionDenied"), "{err}");
    let tokenless = CliTarget {
        token: String::new(),
        ..fay.clone()
    };
    let (ok, _, err) = cli(&tokenless, &own).await;
    assert!(!ok);
    assert!(err.contains("PLAYHEAD_TOKEN"), "{err}");
    let (ok, _, err) = cli(
        &nobody,
        &[
            "token", "mint", "--keys", &keys_arg, "--user", "a.b", "--role", "listener",
        ],
    )
    .await;
    assert!(!ok && err.contains("sub must be an id"), "{err}");
    // Tokens last what --valid-for says.
    let bearer = Bearer::new(fay.token.as_str());
    assert!(bearer.is_ok());
    let claims = KeyRing::load(&keys)
        .unwrap()
        .verify(&fay.token, now_secs())
        .unwrap();
    assert_eq!(
        claims.exp - claims.iat,
        Duration::from_secs(30 * 24 * 3600).as_secs()
    );
    gateway.stop().await;
    node.stop().await;
}

/// The test TLS material (`tests/fixtures/tls`), the key copied to an owner-only file.
fn test_tls(dir: &std::path::Path) -> playhead_gateway::server::GatewayTls {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let key = dir.join("gateway.key");
    KeyRing::generate("unused").create_file(&key).unwrap();
    std::fs::write(&key, std::fs::read(fixtures.join("gateway.key")).unwrap()).unwrap();
    playhead_gateway::server::GatewayTls::load(&fixtures.join("gateway.pem"), &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_gateway_answers_only_over_tls() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start_with(playhead_gateway::server::GatewayConfig {
        tls: Some(test_tls(data.path())),
        ..test_gateway_config(&nats.url())
    })
    .await;
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem");
    let url = format!("https://localhost:{}", gateway.endpoints.grpc.port());
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(&ca).unwrap()),
        ))
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection with the test CA");
    let bearer = Bearer::new(&gateway.admin_token()).unwrap();
    let mut stations = StationServiceClient::new(bearer.channel(channel));
    stations
        .report_song(song("radio-1"))
        .await
        .expect("over TLS");
    // The same port in clear: no answer.
    let clear = tonic::transport::Endpoint::from_shared(gateway.grpc_url())
        .unwrap()
        .connect_lazy();
    let plaintext = StationServiceClient::new(bearer.channel(clear))
        .report_song(song("radio-1"))
        .await
        .unwrap_err();
    // (A transport failure: its code depends on where the handshake broke.)
    assert!(
        !matches!(plaintext.code(), Code::Ok | Code::InvalidArgument),
        "{plaintext:?}"
    );
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    assert_eq!(
        stored(&jetstream, "PLAYHEAD_INBOX_STATION").await,
        1,
        "only the TLS report"
    );
    // The CLI over TLS, trusting the CA it is given.
    let target = CliTarget {
        grpc_url: url,
        token: gateway.admin_token(),
    };
    let ca_arg = ca.display().to_string();
    let shown = eventually(
        "the CLI to show the song over TLS",
        Duration::from_secs(10),
        || {
            let (target, ca_arg) = (target.clone(), ca_arg.clone());
            async move {
                let (ok, out, _) =
                    cli(&target, &["--ca-cert", &ca_arg, "now-playing", "radio-1"]).await;
                ok.then_some(out)
            }
        },
    )
    .await;
    assert!(shown.contains("Sinnerman"), "{shown}");
    let (ok, _, _) = cli(&target, &["now-playing", "radio-1"]).await;
    assert!(!ok, "the test CA is not among the system's roots");
    gateway.stop().await;
    node.stop().await;
}

/// Every RPC of the gateway but health and reflection, each aimed at user `bob` or station
/// `radio-b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    GetNowPlaying,
    ListPlays,
    WatchNowPlaying,
    ReportSong,
    StartPlaylist,
    NextTrack,
    SkipTrack,
    GetSession,
    ListSessions,
    Heartbeat,
    ListPlayouts,
    ListViewHistory,
    CheckEntitlements,
}

impl Rpc {
    const ALL: [Rpc; 13] = [
        Rpc::GetNowPlaying,
        Rpc::ListPlays,
        Rpc::WatchNowPlaying,
        Rpc::ReportSong,
        Rpc::StartPlaylist,
        Rpc::NextTrack,
        Rpc::SkipTrack,
        Rpc::GetSession,
        Rpc::ListSessions,
        Rpc::Heartbeat,
        Rpc::ListPlayouts,
        Rpc::ListViewHistory,
        Rpc::CheckEntitlements,
    ];

    /// Whether it acts for or reads a user (else a station).
    fn is_users(self) -> bool {
        !matches!(
            self,
            Rpc::GetNowPlaying | Rpc::ListPlays | Rpc::WatchNowPlaying | Rpc::ReportSong
        )
    }

    /// Whether it changes state.
    fn is_command(self) -> bool {
        matches!(
            self,
            Rpc::ReportSong | Rpc::StartPlaylist | Rpc::NextTrack | Rpc::SkipTrack | Rpc::Heartbeat
        )
    }

    /// Calls it over `channel` with `token` (none: no `authorization` header); `Ok` when the
    /// gateway let it through (whatever it answered).
    async fn call(
        self,
        channel: tonic::transport::Channel,
        token: Option<&str>,
    ) -> Result<(), tonic::Status> {
        use playhead_proto::v1::{
            CheckEntitlementsRequest, ListPlayoutsRequest, ListPlaysRequest,
            ListViewHistoryRequest, PlayerTrackRequest, WatchNowPlayingRequest,
        };
        let header: Option<tonic::metadata::AsciiMetadataValue> =
            token.map(|token| format!("Bearer {token}").parse().unwrap());
        let authorize = move |mut request: tonic::Request<()>| {
            if let Some(header) = &header {
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
            }
            Ok(request)
        };
        let mut stations =
            StationServiceClient::with_interceptor(channel.clone(), authorize.clone());
        let mut players = PlayerServiceClient::with_interceptor(channel.clone(), authorize.clone());
        let mut playouts = PlayoutServiceClient::with_interceptor(channel, authorize);
        let track = || PlayerTrackRequest {
            user_id: "bob".into(),
            playlist_id: "road".into(),
        };
        let through = |result: Result<(), tonic::Status>| match result {
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) =>
            {
                Err(status)
            }
            _ => Ok(()),
        };
        through(match self {
            Rpc::GetNowPlaying => stations
                .get_now_playing(GetNowPlayingRequest {
                    station_id: "radio-b".into(),
                })
                .await
                .map(drop),
            Rpc::ListPlays => stations
                .list_plays(ListPlaysRequest {
                    station_id: "radio-b".into(),
                    ..ListPlaysRequest::default()
                })
                .await
                .map(drop),
            Rpc::WatchNowPlaying => stations
                .watch_now_playing(WatchNowPlayingRequest {
                    station_ids: vec!["radio-b".into()],
                })
                .await
                .map(drop),
            Rpc::ReportSong => stations.report_song(song("radio-b")).await.map(drop),
            Rpc::StartPlaylist => players.start_playlist(start("bob", "road")).await.map(drop),
            Rpc::NextTrack => players.next_track(track()).await.map(drop),
            Rpc::SkipTrack => players.skip_track(track()).await.map(drop),
            Rpc::GetSession => players
                .get_session(GetSessionRequest {
                    user_id: "bob".into(),
                    playlist_id: "road".into(),
                })
                .await
                .map(drop),
            Rpc::ListSessions => players
                .list_sessions(ListSessionsRequest {
                    user_id: "bob".into(),
                    ..ListSessionsRequest::default()
                })
                .await
                .map(drop),
            Rpc::Heartbeat => playouts
                .heartbeat(Heartbeat {
                    user_id: "bob".into(),
                    device_id: "tv".into(),
                    playout_id: "p1".into(),
                    content_id: "film".into(),
                    kind: 3,
                    position_ms: 5_000,
                })
                .await
                .map(drop),
            Rpc::ListPlayouts => playouts
                .list_playouts(ListPlayoutsRequest {
                    user_id: "bob".into(),
                })
                .await
                .map(drop),
            Rpc::ListViewHistory => playouts
                .list_view_history(ListViewHistoryRequest {
                    user_id: "bob".into(),
                    ..ListViewHistoryRequest::default()
                })
                .await
                .map(drop),
            Rpc::CheckEntitlements => playouts
                .check_entitlements(CheckEntitlementsRequest {
                    user_id: "bob".into(),
                    tags: vec!["premium".into()],
                })
                .await
                .map(drop),
        })
    }
}

/// What bob and radio-b look like, read by an admin: sessions, playouts, viewing history, and
/// the messages stored in both inboxes.
async fn bobs_state(gateway: &TestGateway, jetstream: &async_nats::jetstream::Context) -> String {
    use playhead_proto::v1::{ListPlayoutsRequest, ListViewHistoryRequest};
    let mut players = gateway.players().await;
    let mut playouts = gateway.playouts().await;
    let sessions = players
        .list_sessions(ListSessionsRequest {
            user_id: "bob".into(),
            ..ListSessionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let live = playouts
        .list_playouts(ListPlayoutsRequest {
            user_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let history = playouts
        .list_view_history(ListViewHistoryRequest {
            user_id: "bob".into(),
            ..ListViewHistoryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    format!(
        "{sessions:?}\n{live:?}\n{history:?}\nuser inbox {}, station inbox {}",
        stored(jetstream, "PLAYHEAD_INBOX_USER").await,
        stored(jetstream, "PLAYHEAD_INBOX_STATION").await
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix_every_rpc_refuses_every_wrong_caller_and_changes_nothing() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    // Bob has a session and a playout.
    gateway
        .players()
        .await
        .start_playlist(start("bob", "road"))
        .await
        .unwrap();
    gateway
        .playouts()
        .await
        .heartbeat(Heartbeat {
            user_id: "bob".into(),
            device_id: "tv".into(),
            playout_id: "p1".into(),
            content_id: "film".into(),
            kind: 1,
            position_ms: 0,
        })
        .await
        .unwrap();
    let before = bobs_state(&gateway, &jetstream).await;

    let now = now_secs();
    let claims = |role, sub: &str, stations: &[&str]| Claims {
        sub: sub.into(),
        role,
        stations: stations.iter().map(|s| s.to_string()).collect(),
        iat: now,
        exp: now + 3600,
    };
    let forged = KeyRing::generate("test").mint(&claims(Role::Admin, "bob", &[]));
    let expired = gateway.keys.mint(&Claims {
        iat: now - 7200,
        exp: now - 3600,
        ..claims(Role::Admin, "bob", &[])
    });
    let ann = gateway.token(Role::Listener, "ann", &[]);
    let other_station = gateway.token(Role::Station, "poller", &["radio-a"]);
    let channel = gateway.channel().await;
    let admin = gateway.admin_token();
    let mut checked = 0;
    for rpc in Rpc::ALL {
        let unauthenticated: [(&str, Option<&str>); 3] = [
            ("no token", None),
            ("a bad signature", Some(&forged)),
            ("an expired token", Some(&expired)),
        ];
        for (what, token) in unauthenticated {
            let status = rpc.call(channel.clone(), token).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc:?} with {what}: {status:?}"
            );
            checked += 1;
        }
        // Another user's token, and a token of a role that may not call it.
        let (other, wrong_role) = if rpc.is_users() {
            let wrong = if rpc.is_command() {
                gateway.token(Role::Operator, "ops", &[])
            } else {
                gateway.token(Role::Station, "poller", &["radio-b"])
            };
            (Some(ann.clone()), Some(wrong))
        } else if rpc == Rpc::ReportSong {
            (
                Some(other_station.clone()),
                Some(gateway.token(Role::Listener, "bob", &[])),
            )
        } else {
            // Station reads are open to every role.
            (None, None)
        };
        for (what, token) in [("another's token", other), ("a wrong role", wrong_role)] {
            let Some(token) = token else { continue };
            let status = rpc.call(channel.clone(), Some(&token)).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{rpc:?} with {what}: {status:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13 * 3 + 9 * 2 + 2);
    assert_eq!(
        bobs_state(&gateway, &jetstream).await,
        before,
        "bob unchanged"
    );
    // The admin's token goes through every one of them.
    for rpc in Rpc::ALL {
        assert!(
            rpc.call(channel.clone(), Some(&admin)).await.is_ok(),
            "{rpc:?}"
        );
    }
    gateway.stop().await;
    node.stop().await;
}
