//! Player sessions end to end: gRPC clients and NATS publishers with a reply subject, the
//! user actor, sessions in the time-partitioned keyspace, restarts and expiry.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use playhead_gateway::auth::AuthedChannel;
use playhead_proto::codec::to_json;
use playhead_proto::headers::{CONTENT_TYPE, DLQ_REASON, JSON_CONTENT_TYPE, REPLY_TO};
use playhead_proto::ids::UserId;
use playhead_proto::subjects::{DLQ_STREAM, UserKind, user_subject};
use playhead_proto::v1::player_command::Command;
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::{
    GetSessionRequest, ListSessionsRequest, NextTrack, PlayerCommand, PlayerOutcome, PlayerReply,
    PlayerSession, SessionStatus, SkipDenied, SkipTrack, StartPlaylist,
};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::player::{start_request, track_request, tracks};
use playhead_tests::system::{
    TestGateway, TestNode, cli, metric_value, temp_dir, test_node_config,
};
use prost::Message;

const TRACKS: usize = 12;
const SKIP_LIMIT: usize = 3;

fn session_of(reply: &PlayerReply) -> &PlayerSession {
    reply.session.as_ref().expect("a reply with a session")
}

fn current_of(reply: &PlayerReply) -> String {
    session_of(reply)
        .current_track
        .as_ref()
        .expect("a current track")
        .track_id
        .clone()
}

fn outcome(reply: &PlayerReply) -> PlayerOutcome {
    PlayerOutcome::try_from(reply.outcome).expect("a known outcome")
}

/// A way of sending player commands and getting the decision back.
trait Transport {
    async fn send(&mut self, command: Command) -> PlayerReply;
}

struct Grpc {
    client: PlayerServiceClient<AuthedChannel>,
    user: &'static str,
}

impl Transport for Grpc {
    async fn send(&mut self, command: Command) -> PlayerReply {
        grpc_command(&mut self.client, self.user, command)
            .await
            .unwrap()
    }
}

/// A plain NATS publisher that asks for the decision on its own subject.
struct NatsPublisher {
    jetstream: async_nats::jetstream::Context,
    user: UserId,
    /// `Playhead-Reply-To` and its signature.
    asking: HeaderMap,
    replies: async_nats::Subscriber,
    sent: usize,
}

impl Transport for NatsPublisher {
    async fn send(&mut self, command: Command) -> PlayerReply {
        self.sent += 1;
        let command = PlayerCommand {
            user_id: self.user.to_string(),
            command: Some(command),
        };
        let mut headers = self.asking.clone();
        // Every other command in proto3 JSON: both encodings are part of the contract.
        let payload = if self.sent.is_multiple_of(2) {
            headers.insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
            to_json(&command).into_bytes()
        } else {
            command.encode_to_vec()
        };
        self.jetstream
            .publish_with_headers(
                user_subject(&self.user, UserKind::Player),
                headers,
                payload.into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let reply = within("a reply", Duration::from_secs(10), self.replies.next())
            .await
            .expect("reply subscription open");
        PlayerReply::decode(reply.payload.as_ref()).unwrap()
    }
}

/// Plays the whole listen through some transport: start, `SKIP_LIMIT` granted skips, one
/// denied, then `NextTrack` to the end. Checks every rule on the way.
async fn listen_to_the_end(transport: &mut impl Transport) {
    let playlist = "road-trip";
    let start = transport
        .send(Command::Start(StartPlaylist {
            playlist_id: playlist.into(),
            tracks: tracks(TRACKS),
            seed: None,
            restart: false,
        }))
        .await;
    assert_eq!(outcome(&start), PlayerOutcome::Ok);
    let session = session_of(&start);
    assert_eq!(session.status(), SessionStatus::Playing);
    assert_eq!(session.tracks_remaining as usize, TRACKS);
    assert!(session.played_track_ids.is_empty());
    let mut heard = vec![current_of(&start)];

    for used in 1..=SKIP_LIMIT {
        let skipped = transport
            .send(Command::Skip(SkipTrack {
                playlist_id: playlist.into(),
            }))
            .await;
        assert_eq!(outcome(&skipped), PlayerOutcome::Ok, "skip {used}");
        assert_eq!(session_of(&skipped).skips_used as usize, used);
        heard.push(current_of(&skipped));
    }
    // Past the limit: refused with the wait, and the current track stays.
    let denied = transport
        .send(Command::Skip(SkipTrack {
            playlist_id: playlist.into(),
        }))
        .await;
    assert_eq!(outcome(&denied), PlayerOutcome::SkipLimited);
    assert!(
        (1..=3_600_000).contains(&denied.retry_after_ms),
        "retry after {} ms",
        denied.retry_after_ms
    );
    assert_eq!(current_of(&denied), *heard.last().unwrap());
    assert_eq!(session_of(&denied).played_track_ids.len(), SKIP_LIMIT);

    let mut last = denied;
    for _ in SKIP_LIMIT..TRACKS {
        last = transport
            .send(Command::Next(NextTrack {
                playlist_id: playlist.into(),
            }))
            .await;
        if let Some(current) = &session_of(&last).current_track {
            heard.push(current.track_id.clone());
        }
    }
    // Every track played exactly once, and then the session is completed.
    assert_eq!(outcome(&last), PlayerOutcome::Completed);
    let finished = session_of(&last);
    assert_eq!(finished.status(), SessionStatus::Completed);
    assert_eq!(finished.tracks_remaining, 0);
    assert!(finished.current_track.is_none());
    assert_eq!(
        finished.played_track_ids, heard,
        "played in the order heard"
    );
    let distinct: HashSet<&String> = heard.iter().collect();
    assert_eq!(distinct.len(), TRACKS);
    let all: HashSet<String> = tracks(TRACKS).into_iter().map(|t| t.track_id).collect();
    assert_eq!(distinct, all.iter().collect());
    // The server chose an order: not the listed one.
    let listed: Vec<String> = tracks(TRACKS).into_iter().map(|t| t.track_id).collect();
    assert_ne!(heard, listed);

    let after_the_end = transport
        .send(Command::Next(NextTrack {
            playlist_id: playlist.into(),
        }))
        .await;
    assert_eq!(outcome(&after_the_end), PlayerOutcome::Completed);
}

async fn grpc_command(
    client: &mut PlayerServiceClient<AuthedChannel>,
    user: &str,
    command: Command,
) -> Result<PlayerReply, tonic::Status> {
    let reply = match command {
        Command::Start(start) => {
            client
                .start_playlist(playhead_proto::v1::StartPlaylistRequest {
                    user_id: user.into(),
                    start: Some(start),
                })
                .await
        }
        Command::Next(next) => {
            client
                .next_track(track_request(user, &next.playlist_id))
                .await
        }
        Command::Skip(skip) => {
            client
                .skip_track(track_request(user, &skip.playlist_id))
                .await
        }
    };
    reply.map(tonic::Response::into_inner)
}

async fn get_session(
    client: &mut PlayerServiceClient<AuthedChannel>,
    user: &str,
    playlist: &str,
) -> Result<PlayerSession, tonic::Status> {
    client
        .get_session(GetSessionRequest {
            user_id: user.into(),
            playlist_id: playlist.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listen_through_grpc_with_skips_past_the_limit() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let mut client = gateway.players().await;

    listen_to_the_end(&mut Grpc {
        client: client.clone(),
        user: "ann",
    })
    .await;

    let session = get_session(&mut client, "ann", "road-trip").await.unwrap();
    assert_eq!(session.status(), SessionStatus::Completed);
    assert_eq!(session.skips_used as usize, SKIP_LIMIT);
    assert_eq!(session.played_track_ids.len(), TRACKS);
    let listed = client
        .list_sessions(ListSessionsRequest {
            user_id: "ann".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions, vec![session]);
    assert!(listed.next_page_token.is_empty());

    // The denied skip is a domain event.
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let events = jetstream.get_stream("PLAYHEAD_EVENTS").await.unwrap();
    let denied = events
        .get_last_raw_message_by_subject("playhead.events.user.ann.SkipDenied")
        .await
        .unwrap();
    let denied = SkipDenied::decode(denied.payload.as_ref()).unwrap();
    assert_eq!(denied.playlist_id, "road-trip");
    assert!(denied.retry_after_ms > 0);

    // Errors a client can act on.
    let unknown = grpc_command(
        &mut client,
        "ann",
        Command::Next(NextTrack {
            playlist_id: "never-started".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let missing = get_session(&mut client, "ann", "never-started")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut duplicated = start_request("ann", "dup", 3, None, false);
    let start = duplicated.start.as_mut().unwrap();
    start.tracks[2].track_id = start.tracks[0].track_id.clone();
    let refused = client.start_playlist(duplicated).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("more than once"), "{refused:?}");
    let bad_user = client
        .next_track(track_request("ann.*", "road-trip"))
        .await
        .unwrap_err();
    assert_eq!(bad_user.code(), tonic::Code::InvalidArgument);

    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publishers_get_decisions_on_their_reply_subject() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let client = nats.connect().await;
    let jetstream = async_nats::jetstream::new(client.clone());
    let user = UserId::parse("bo").unwrap();
    let subject = user_subject(&user, UserKind::Player);
    let replies = client
        .subscribe("_INBOX.admin.bo-app.replies")
        .await
        .unwrap();
    client.flush().await.unwrap();
    listen_to_the_end(&mut NatsPublisher {
        jetstream: jetstream.clone(),
        user,
        asking: nats.asking(&subject, "_INBOX.admin.bo-app.replies"),
        replies,
        sent: 0,
    })
    .await;

    // Without a reply subject the command is still applied (and nobody is answered).
    let restart = PlayerCommand {
        user_id: "bo".into(),
        command: Some(Command::Start(StartPlaylist {
            playlist_id: "road-trip".into(),
            tracks: tracks(TRACKS),
            seed: Some(99),
            restart: true,
        })),
    };
    jetstream
        .publish(subject.clone(), restart.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let gateway = TestGateway::start(&nats.url()).await;
    let mut players = gateway.players().await;
    let restarted = eventually("the restart to apply", Duration::from_secs(10), || {
        let mut players = players.clone();
        async move {
            let session = get_session(&mut players, "bo", "road-trip").await.ok()?;
            (session.status() == SessionStatus::Playing).then_some(session)
        }
    })
    .await;
    assert!(restarted.played_track_ids.is_empty());
    // Starting over does not reset the skip limit.
    assert_eq!(restarted.skips_used as usize, SKIP_LIMIT);

    // A reply subject outside the reply prefix (here the JetStream API) is refused, with its
    // reason.
    let mut headers = HeaderMap::new();
    headers.insert(REPLY_TO, "$JS.API.STREAM.DELETE.PLAYHEAD_EVENTS");
    let next = PlayerCommand {
        user_id: "bo".into(),
        command: Some(Command::Next(NextTrack {
            playlist_id: "road-trip".into(),
        })),
    };
    jetstream
        .publish_with_headers(subject.clone(), headers, next.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let dlq = jetstream.get_stream(DLQ_STREAM).await.unwrap();
    let letter = eventually("the dead letter", Duration::from_secs(10), || {
        let dlq = dlq.clone();
        async move {
            dlq.get_last_raw_message_by_subject("playhead.dlq.user.invalid_reply_to")
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(
        letter.headers.get(DLQ_REASON).map(|value| value.as_str()),
        Some("invalid_reply_to")
    );
    // ... and nothing else was lost: the session did not move.
    let unchanged = get_session(&mut players, "bo", "road-trip").await.unwrap();
    assert!(unchanged.played_track_ids.is_empty());

    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_after_a_node_restart() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let gateway = TestGateway::start(&nats.url()).await;
    let mut client = gateway.players().await;

    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let first = client
        .start_playlist(start_request("cy", "focus", TRACKS, Some(7), false))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        client
            .skip_track(track_request("cy", "focus"))
            .await
            .unwrap();
    }
    let mut before = first;
    for _ in 0..3 {
        before = client
            .next_track(track_request("cy", "focus"))
            .await
            .unwrap()
            .into_inner();
    }
    node.stop().await;

    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    // Starting again resumes where it was: same track, same history, same skips.
    let resumed = client
        .start_playlist(start_request("cy", "focus", TRACKS, Some(7), false))
        .await
        .unwrap()
        .into_inner();
    let (was, is) = (session_of(&before), session_of(&resumed));
    assert_eq!(is.current_track, was.current_track);
    assert_eq!(is.played_track_ids, was.played_track_ids);
    assert_eq!(is.played_track_ids.len(), 5);
    assert_eq!(is.skips_used, 2);
    // The skip limit survived the restart too: one more, then refused.
    let third = client
        .skip_track(track_request("cy", "focus"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&third), PlayerOutcome::Ok);
    let fourth = client
        .skip_track(track_request("cy", "focus"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&fourth), PlayerOutcome::SkipLimited);
    // The order is the seed's: a fresh start with the same seed replays the same sequence.
    let restarted = client
        .start_playlist(start_request("cy", "focus", TRACKS, Some(7), true))
        .await
        .unwrap()
        .into_inner();
    assert!(session_of(&restarted).played_track_ids.is_empty());
    let mut replayed = vec![current_of(&restarted)];
    for _ in 0..5 {
        let next = client
            .next_track(track_request("cy", "focus"))
            .await
            .unwrap()
            .into_inner();
        replayed.push(current_of(&next));
    }
    assert_eq!(replayed[..5], is.played_track_ids[..]);
    assert_eq!(
        Some(&replayed[5]),
        is.current_track.as_ref().map(|t| &t.track_id)
    );

    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_sessions_expire_while_touched_ones_stay() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.player.session_ttl_secs = 3;
    config.player.skip_window_secs = 3;
    config.player.session_bucket_secs = 1;
    config.storage.compaction_interval_secs = 1;
    let node = TestNode::start(config).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let mut client = gateway.players().await;

    for user in ["dee", "eli"] {
        client
            .start_playlist(start_request(user, "mix", TRACKS, None, false))
            .await
            .unwrap();
    }
    // Eli keeps listening (each resume touches the session); Dee walks away.
    let expired = eventually("dee's session to expire", Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            client
                .start_playlist(start_request("eli", "mix", TRACKS, None, false))
                .await
                .unwrap();
            let dee = get_session(&mut client, "dee", "mix").await;
            match dee {
                Err(status) if status.code() == tonic::Code::NotFound => Some(status),
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    None
                }
            }
        }
    })
    .await;
    assert!(expired.message().contains("no live session"), "{expired:?}");
    let eli = get_session(&mut client, "eli", "mix").await.unwrap();
    assert_eq!(eli.status(), SessionStatus::Playing);
    let next = client
        .next_track(track_request("dee", "mix"))
        .await
        .unwrap_err();
    assert_eq!(next.code(), tonic::Code::NotFound);

    // Whole expired buckets were dropped by compaction, none deleted record by record.
    eventually(
        "an expired session bucket to be dropped",
        Duration::from_secs(20),
        || async {
            let dropped = metric_value(
                &node.metrics().await,
                "playhead_keyspace_buckets_dropped_total",
                &[("keyspace", "player_sessions")],
            );
            (dropped > 0.0).then_some(())
        },
    )
    .await;
    let eli = get_session(&mut client, "eli", "mix").await.unwrap();
    assert_eq!(eli.status(), SessionStatus::Playing);

    // A new start after expiry begins fresh.
    let fresh = client
        .start_playlist(start_request("dee", "mix", TRACKS, None, false))
        .await
        .unwrap()
        .into_inner();
    assert!(session_of(&fresh).played_track_ids.is_empty());
    assert_eq!(session_of(&fresh).tracks_remaining as usize, TRACKS);

    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_player_and_explains_errors() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let url = gateway.cli_target();
    let session = ["--user", "fay", "--playlist", "chill"];

    let mut start = vec!["player", "start"];
    start.extend(session);
    start.extend(["--track", "a:Nina", "--track", "b", "--track", "c"]);
    let (ok, out, err) = cli(&url, &start).await;
    assert!(ok, "{err}");
    let started: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(started["outcome"], "PLAYER_OUTCOME_OK", "{out}");
    assert_eq!(started["session"]["tracksRemaining"], 3, "{out}");

    let mut skip = vec!["player", "skip"];
    skip.extend(session);
    let (ok, _, err) = cli(&url, &skip).await;
    assert!(ok, "{err}");
    let mut show = vec!["player", "session"];
    show.extend(session);
    let (ok, out, err) = cli(&url, &show).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(shown["skipsUsed"], 1, "{out}");
    assert_eq!(shown["playedTrackIds"].as_array().map(Vec::len), Some(1));
    assert_eq!(shown["tracksRemaining"], 2);

    let (ok, _, err) = cli(
        &url,
        &["player", "next", "--user", "fay", "--playlist", "nope"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("NotFound"), "{err}");

    gateway.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_the_session_limit_cannot_start_another_until_one_lapses() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.player.max_sessions_per_user = 2;
    config.player.session_ttl_secs = 4;
    config.player.skip_window_secs = 1;
    config.player.session_bucket_secs = 1;
    let node = TestNode::start(config).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let mut client = gateway.players().await;

    for playlist in ["one", "two"] {
        client
            .start_playlist(start_request("kim", playlist, TRACKS, None, false))
            .await
            .unwrap();
    }
    // A third is refused with the limit, and nothing of it is kept.
    let refused = client
        .start_playlist(start_request("kim", "three", TRACKS, None, false))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("2 live sessions"), "{refused:?}");
    let none = get_session(&mut client, "kim", "three").await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);
    // Resuming or restarting a live one adds none; another listener has room of their own.
    client
        .start_playlist(start_request("kim", "one", TRACKS, None, true))
        .await
        .unwrap();
    client
        .start_playlist(start_request("lou", "three", TRACKS, None, false))
        .await
        .unwrap();
    // A NATS publisher is answered SESSION_LIMIT, and nothing is dead-lettered.
    let nats_client = nats.connect().await;
    let jetstream = async_nats::jetstream::new(nats_client.clone());
    let mut replies = nats_client
        .subscribe("_INBOX.admin.kim-app.>")
        .await
        .unwrap();
    nats_client.flush().await.unwrap();
    let kim = user_subject(&UserId::parse("kim").unwrap(), UserKind::Player);
    let headers = nats.asking(&kim, "_INBOX.admin.kim-app.1");
    let command = PlayerCommand {
        user_id: "kim".into(),
        command: start_request("kim", "four", TRACKS, None, false)
            .start
            .map(Command::Start),
    };
    jetstream
        .publish_with_headers(kim, headers, command.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let reply = within("the answer", Duration::from_secs(10), replies.next())
        .await
        .unwrap();
    let reply = PlayerReply::decode(reply.payload.as_ref()).unwrap();
    assert_eq!(reply.outcome(), PlayerOutcome::SessionLimit, "{reply:?}");
    let dlq = jetstream.get_stream(DLQ_STREAM).await.unwrap();
    assert_eq!(dlq.cached_info().state.messages, 0);
    // Once kim's sessions lapse (untouched for the TTL), a new one starts.
    eventually("kim's sessions to lapse", Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            client
                .start_playlist(start_request("kim", "three", TRACKS, None, false))
                .await
                .ok()
        }
    })
    .await;
    gateway.stop().await;
    node.stop().await;
}
