//! The broker side of the security model: no anonymous connection, and each NATS user reaches
//! only the subjects of its role (`deploy/nats/playhead-users.conf`). Refused attempts leave
//! state, streams and consumers as they were.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use playhead_client::service::nats_auth::{NatsAccess, NatsCredentials, NatsRole};
use playhead_proto::headers::{REPLY_SIGNATURE, REPLY_TO};
use playhead_proto::ids::{ContentId, StationId, UserId};
use playhead_proto::subjects::{Inbox, UserKind, catalog_content, station_song, user_subject};
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::{
    CheckEntitlementsRequest, ContentUpdate, Entitlement, EntitlementsUpdate, GetNowPlayingRequest,
    GetNowPlayingResponse, SongObserved,
};
use playhead_tests::harness::process::{ChildProcess, workspace_binary};
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::harness::{NatsServer, nats_server_binary};
use playhead_tests::system::{
    TestGateway, TestNode, temp_dir, test_node_config, wait_until_drained,
};
use prost::Message as _;

const WAIT: Duration = Duration::from_secs(20);

fn entitlements(user: &str, tag: &str) -> Vec<u8> {
    EntitlementsUpdate {
        user_id: user.into(),
        entitlements: vec![Entitlement {
            tag: tag.into(),
            valid_until: Some(prost_types::Timestamp {
                seconds: 4_102_444_800, // 2100-01-01
                nanos: 0,
            }),
        }],
        concurrency_limit: 0,
    }
    .encode_to_vec()
}

fn user_entitlements(user: &str) -> String {
    user_subject(&UserId::parse(user).unwrap(), UserKind::Entitlements)
}

fn song(station: &str, title: &str) -> (String, Vec<u8>) {
    let subject = station_song(&StationId::parse(station).unwrap());
    let payload = SongObserved {
        station_id: station.into(),
        artist: "Nina Simone".into(),
        title: title.into(),
        ..SongObserved::default()
    }
    .encode_to_vec();
    (subject, payload)
}

/// A configuration as JSON with its maps' keys in order (its metadata is a hash map).
fn sorted(config: &impl serde::Serialize) -> String {
    serde_json::to_value(config).unwrap().to_string()
}

/// Every stream with its configuration, message count, and consumers with theirs.
async fn topology(jetstream: &jetstream::Context) -> BTreeMap<String, String> {
    let mut shape = BTreeMap::new();
    let names: Vec<String> = jetstream
        .stream_names()
        .map(|name| name.unwrap())
        .collect()
        .await;
    for name in names {
        let mut stream = jetstream.get_stream(&name).await.unwrap();
        let info = stream.info().await.unwrap().clone();
        shape.insert(
            format!("stream {name}"),
            format!("{} messages={}", sorted(&info.config), info.state.messages),
        );
        let consumers: Vec<_> = stream
            .consumers()
            .map(|consumer| consumer.unwrap())
            .collect()
            .await;
        for consumer in consumers {
            shape.insert(
                format!("consumer {name}/{}", consumer.name),
                sorted(&consumer.config),
            );
        }
    }
    shape
}

async fn now_playing(gateway: &TestGateway) -> GetNowPlayingResponse {
    gateway
        .stations()
        .await
        .get_now_playing(GetNowPlayingRequest {
            station_id: "radio-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn held_tags(gateway: &TestGateway, user: &str) -> Vec<String> {
    PlayoutServiceClient::new(gateway.authed().await)
        .check_entitlements(CheckEntitlementsRequest {
            user_id: user.into(),
            tags: vec!["premium".into(), "kids".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .held_tags
}

/// A client of one role that hears the broker's refusals (`-ERR 'Permissions Violation …'`).
struct Watched {
    client: async_nats::Client,
    refusals: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Watched {
    async fn connect(nats: &NatsServer, role: NatsRole) -> Watched {
        let (sender, refusals) = tokio::sync::mpsc::unbounded_channel();
        let options = nats.options_as(role).event_callback(move |event| {
            let sender = sender.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = sender.send(error.to_string());
                }
            }
        });
        let client = nats.connect_unauthenticated(options).await;
        Watched { client, refusals }
    }

    /// Waits for the broker to refuse `what` on `subject` ("Publish" or "Subscription").
    async fn refused(&mut self, what: &str, subject: &str) {
        let expected = format!("Permissions Violation for {what} to \"{subject}\"");
        // `within` panics, naming what was awaited, if the broker lets it through.
        within(&expected, WAIT, async {
            while let Some(error) = self.refusals.recv().await {
                if error.contains(&expected) {
                    return;
                }
            }
            panic!("the client closed before the refusal");
        })
        .await;
    }

    /// Publishes into JetStream as this role and waits for the refusal.
    async fn publish_refused(&mut self, subject: String, payload: Vec<u8>) {
        // The acknowledgement would go to this inbox; it never comes for a refused publish.
        let inbox = self.client.new_inbox();
        self.client
            .publish_with_reply(subject.clone(), inbox, payload.into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.refused("Publish", &subject).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_and_subjects_outside_a_role_are_refused_and_change_nothing() {
    let mut nats = NatsServer::start();
    nats.expect_violations();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let admin = jetstream::new(nats.connect().await);

    // No credentials, and a key the broker does not know: refused at sign-in.
    for options in [
        async_nats::ConnectOptions::new(),
        async_nats::ConnectOptions::with_nkey(nkeys::KeyPair::new_user().seed().unwrap()),
    ] {
        let refused = options
            .connection_timeout(Duration::from_secs(5))
            .connect(nats.url())
            .await;
        match refused {
            Err(error) => assert_eq!(
                error.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation,
                "{error}"
            ),
            Ok(_) => panic!("an unknown client was let in"),
        }
    }

    // Each role does what it is for: a publisher reports songs, the back office grants tags.
    let mut publisher = Watched::connect(&nats, NatsRole::Publisher).await;
    let mut backoffice = Watched::connect(&nats, NatsRole::Backoffice).await;
    let (subject, payload) = song("radio-1", "Sinnerman");
    jetstream::new(publisher.client.clone())
        .publish(subject, payload.into())
        .await
        .unwrap()
        .await
        .expect("a publisher publishes songs");
    jetstream::new(backoffice.client.clone())
        .publish(user_entitlements("ann"), entitlements("ann", "kids").into())
        .await
        .unwrap()
        .await
        .expect("the back office grants tags");
    wait_until_drained(&admin, Inbox::Station, WAIT).await;
    wait_until_drained(&admin, Inbox::User, WAIT).await;
    eventually("ann to hold kids", WAIT, || async {
        (held_tags(&gateway, "ann").await == ["kids"]).then_some(())
    })
    .await;

    let before = topology(&admin).await;
    let bob_before = held_tags(&gateway, "bob").await;
    let radio_before = now_playing(&gateway).await;

    // A publisher grants itself premium and retags content; the back office and the monitor
    // report no songs; the monitor writes nothing at all.
    let mut monitor = Watched::connect(&nats, NatsRole::Monitor).await;
    let mut gateway_user = Watched::connect(&nats, NatsRole::Gateway).await;
    let content = catalog_content(&ContentId::parse("film-1").unwrap());
    let retag = ContentUpdate {
        content_id: "film-1".into(),
        tags: vec![],
    }
    .encode_to_vec();
    let premium = || entitlements("bob", "premium");
    publisher
        .publish_refused(user_entitlements("bob"), premium())
        .await;
    publisher
        .publish_refused(content.clone(), retag.clone())
        .await;
    for client in [&mut backoffice, &mut monitor] {
        let (subject, payload) = song("radio-1", "Forged");
        client.publish_refused(subject, payload).await;
    }
    monitor
        .publish_refused(user_entitlements("bob"), premium())
        .await;
    monitor.publish_refused(content, retag).await;

    // The JetStream API: no role but the node's (and admin's) may delete, purge or create; a
    // publisher and the back office may not even read it.
    let station_consumer = before
        .keys()
        .find_map(|key| key.strip_prefix("consumer PLAYHEAD_INBOX_STATION/"))
        .expect("the station inbox has consumers")
        .to_owned();
    let destructive = [
        format!("$JS.API.STREAM.DELETE.{}", Inbox::User.stream_name()),
        "$JS.API.STREAM.PURGE.PLAYHEAD_EVENTS".to_owned(),
        format!(
            "$JS.API.CONSUMER.DELETE.{}.{station_consumer}",
            Inbox::Station.stream_name()
        ),
        "$JS.API.STREAM.CREATE.HIJACK".to_owned(),
        "$JS.API.STREAM.UPDATE.PLAYHEAD_DLQ".to_owned(),
    ];
    for client in [
        &mut publisher,
        &mut backoffice,
        &mut monitor,
        &mut gateway_user,
    ] {
        for api in &destructive {
            client.publish_refused(api.clone(), b"{}".to_vec()).await;
        }
    }
    for client in [&mut publisher, &mut backoffice] {
        let api = format!("$JS.API.STREAM.INFO.{}", Inbox::User.stream_name());
        client.publish_refused(api, Vec::new()).await;
    }

    // Another client's replies: a publisher may not listen under the gateway's prefix, nor
    // under the reply prefix as a whole. A query the gateway makes meanwhile (its answer goes
    // to `_INBOX.gateway.…`) reaches the gateway only.
    let gateway_replies = format!("{}.>", NatsRole::Gateway.inbox_prefix());
    let mut eavesdrop = publisher
        .client
        .subscribe(gateway_replies.clone())
        .await
        .unwrap();
    publisher.refused("Subscription", &gateway_replies).await;
    let mut all_replies = publisher.client.subscribe("_INBOX.>").await.unwrap();
    publisher.refused("Subscription", "_INBOX.>").await;
    assert_eq!(held_tags(&gateway, "bob").await, bob_before);
    // A round trip on the publisher's connection: whatever the broker routed to it before
    // has arrived by now.
    publisher.client.flush().await.unwrap();
    assert!(
        futures::FutureExt::now_or_never(eavesdrop.next()).is_none(),
        "a publisher received a reply meant for the gateway"
    );
    assert!(
        futures::FutureExt::now_or_never(all_replies.next()).is_none(),
        "a publisher received replies under another prefix"
    );

    // Nothing changed: streams (configuration and stored messages), consumers, state.
    let after = topology(&admin).await;
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| {
            format!(
                "{key}:\n  before {:?}\n  after  {:?}",
                before.get(key),
                after.get(key)
            )
        })
        .collect();
    assert!(changed.is_empty(), "changed:\n{}", changed.join("\n"));
    assert_eq!(held_tags(&gateway, "bob").await, bob_before);
    assert_eq!(now_playing(&gateway).await, radio_before);

    let log = nats.violations().join("\n");
    assert!(log.contains("authentication error"), "{log}");
    gateway.stop().await;
    node.stop().await;
}

/// A command's reply subject is used only with the signature of the user whose prefix it is
/// under: a publisher cannot aim a decision at the gateway's (or anyone else's) replies, even
/// with a valid signature of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_subject_under_another_clients_prefix_is_refused() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let admin = jetstream::new(nats.connect().await);
    let publisher = nats.connect_as(NatsRole::Publisher).await;
    let own_replies = format!("{}.app", NatsRole::Publisher.inbox_prefix());
    let mut answers = publisher
        .subscribe(format!("{own_replies}.>"))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let subject = user_subject(&UserId::parse("ann").unwrap(), UserKind::Player);
    let start = playhead_proto::v1::PlayerCommand {
        user_id: "ann".into(),
        command: Some(playhead_proto::v1::player_command::Command::Start(
            playhead_proto::v1::StartPlaylist {
                playlist_id: "p".into(),
                tracks: vec![playhead_proto::v1::PlaylistTrack {
                    track_id: "t1".into(),
                    artist: String::new(),
                }],
                ..Default::default()
            },
        )),
    }
    .encode_to_vec();
    let credentials = nats.credentials(NatsRole::Publisher);
    let gateways = format!("{}.x.1", NatsRole::Gateway.inbox_prefix());
    let signed = |reply: &str, signer: &NatsCredentials| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REPLY_TO, reply);
        headers.insert(REPLY_SIGNATURE, signer.sign_reply(&subject, reply).as_str());
        headers
    };
    let unsigned = {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REPLY_TO, gateways.as_str());
        headers
    };
    let own = format!("{own_replies}.1");
    let publisher_js = jetstream::new(publisher.clone());
    for headers in [
        // Into the gateway's replies: unsigned, and signed by the publisher itself.
        unsigned,
        signed(&gateways, &credentials),
        // Its own prefix, with a signature of another subject's reply.
        {
            let mut headers = signed(&own, &credentials);
            let other = credentials.sign_reply("playhead.user.bob.player", &own);
            headers.insert(REPLY_SIGNATURE, other.as_str());
            headers
        },
        // Its own prefix, signed: answered.
        signed(&own, &credentials),
    ] {
        publisher_js
            .publish_with_headers(subject.clone(), headers, start.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let answer = within(
        "the answer on the publisher's own reply subject",
        WAIT,
        answers.next(),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.subject.as_str(), own);
    // The three others are dead letters with their reason, after which the fourth was applied.
    wait_until_drained(&admin, Inbox::User, WAIT).await;
    let dlq = admin.get_stream("PLAYHEAD_DLQ").await.unwrap();
    let mut reasons = Vec::new();
    for sequence in 1..=3 {
        let letter = dlq.get_raw_message(sequence).await.unwrap();
        reasons.push((
            letter.subject.to_string(),
            letter
                .headers
                .get(playhead_proto::headers::DLQ_DETAIL)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default(),
        ));
    }
    assert!(
        reasons
            .iter()
            .all(|(subject, _)| subject == "playhead.dlq.user.invalid_reply_to"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].1.contains("no Playhead-Reply-Signature"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].1.contains("not gateway's signature"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].1.contains("not publisher's signature"),
        "{reasons:?}"
    );
    assert_eq!(dlq.cached_info().state.messages, 3);
    node.stop().await;
}

/// `make run`'s broker: the node's embedded nats-server runs with the same users, their seeds
/// made at the first start under the data dir, owner-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_refuses_anonymous_clients_and_serves_the_roles() {
    let data = temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let data_dir = data.path().display().to_string();
    let server_bin = nats_server_binary().display().to_string();
    let mut node = ChildProcess::spawn(
        workspace_binary("playhead-node"),
        [
            "--data-dir",
            &data_dir,
            "--nats-server-bin",
            &server_bin,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[("PLAYHEAD_NATS__EMBEDDED_PORT", port.as_str())],
    );
    let url = format!("nats://127.0.0.1:{port}");
    let credentials = data.path().join("nats-credentials");
    let (subject, payload) = song("radio-1", "Sinnerman");
    // Once the node has made the users and its streams, a publisher's song is stored.
    eventually(
        "the embedded broker to store a publisher's song",
        WAIT,
        || {
            let (url, subject, payload) = (url.clone(), subject.clone(), payload.clone());
            let publisher = NatsAccess::load(
                NatsRole::Publisher,
                Some(&NatsRole::Publisher.seed_file(&credentials)),
                None,
            );
            async move {
                let client = publisher.ok()?.options().connect(url).await.ok()?;
                let ack = jetstream::new(client)
                    .publish(subject, payload.into())
                    .await
                    .ok()?;
                ack.await.ok()
            }
        },
    )
    .await;
    #[cfg(unix)]
    for role in NatsRole::ALL {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(role.seed_file(&credentials))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{role}'s seed");
    }
    let refused = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .expect_err("an anonymous client is refused");
    assert_eq!(
        refused.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{refused}"
    );
    #[cfg(target_os = "linux")]
    {
        // Its Go collector target: the node's own `GOGC` if it has one, playhead's otherwise.
        let expected = format!(
            "GOGC={}",
            std::env::var("GOGC")
                .unwrap_or_else(|_| playhead_actors::broker::BROKER_GOGC.to_owned())
        );
        let environment = broker_environment(node.pid());
        assert!(
            environment.contains(&expected),
            "the embedded broker's environment lacks {expected}: {environment:?}"
        );
    }
    let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    for role in NatsRole::ALL {
        let seed = std::fs::read_to_string(role.seed_file(&credentials)).unwrap();
        assert!(!log.contains(seed.trim()), "the node logged {role}'s seed");
    }
    assert!(node.terminate().success(), "{}", node.log_tail(20));
}

/// The environment of the nats-server child of process `parent`, from `/proc`.
#[cfg(target_os = "linux")]
fn broker_environment(parent: u32) -> Vec<String> {
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `stat`: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, after) = stat.rsplit_once(')')?;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "nats-server")
        })
        .collect::<Vec<_>>();
    assert_eq!(
        children.len(),
        1,
        "the node's nats-server children: {children:?}"
    );
    std::fs::read(format!("/proc/{}/environ", children[0]))
        .unwrap()
        .split(|byte| *byte == 0)
        .filter(|variable| !variable.is_empty())
        .map(|variable| String::from_utf8_lossy(variable).into_owned())
        .collect()
}
