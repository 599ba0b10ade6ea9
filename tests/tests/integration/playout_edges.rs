//! Video playouts at the edges: the gateway failing open while the broker is down (with the
//! heartbeat interval the node configured), NATS publishers with a reply subject, bad input,
//! and the CLI.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use playhead_proto::codec::to_json;
use playhead_proto::headers::{CONTENT_TYPE, JSON_CONTENT_TYPE};
use playhead_proto::ids::UserId;
use playhead_proto::subjects::{Inbox, UserKind, user_subject};
use playhead_proto::v1::{
    Heartbeat, HeartbeatAction, HeartbeatDecision, HeartbeatKind, HeartbeatReason,
};
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::playout::{
    CONTINUE, PlayoutSystem, WAIT, answer, entitlements, heartbeat, publish_entitlements,
};
use playhead_tests::system::{cli, metric_value, wait_until_drained};
use prost::Message;

use HeartbeatKind::{Beat, Start};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_down_heartbeats_fail_open_and_afterwards_no_slot_is_lost() {
    let heartbeat_timeout = Duration::from_millis(800);
    // Configured on the node only: the gateway follows what the node publishes.
    let mut system = PlayoutSystem::start_with_gateway(
        |config| config.playout.heartbeat_interval_secs = 420,
        heartbeat_timeout,
    )
    .await;
    eventually(
        "the gateway to follow the nodes' heartbeat interval",
        Duration::from_secs(10),
        || async {
            let metrics = system.gateway.metrics().await;
            (metric_value(&metrics, "playhead_gateway_heartbeat_interval_seconds", &[]) == 420.0)
                .then_some(())
        },
    )
    .await;
    system.entitle("fay", &["premium"], DAY, 0).await;
    for device in ["tv", "phone"] {
        let start = system
            .beat("fay", device, &format!("{device}-p1"), "film-1", Start, 0)
            .await;
        assert_eq!(answer(&start), CONTINUE);
    }

    system.nats.stop();
    for kind in [Beat, Start] {
        let asked = Instant::now();
        let degraded = within(
            "a fail-open answer",
            heartbeat_timeout + Duration::from_secs(5),
            system.beat("fay", "tv", "tv-p1", "film-1", kind, 60_000),
        )
        .await;
        assert_eq!(
            answer(&degraded),
            (HeartbeatAction::Continue, HeartbeatReason::Degraded),
            "{kind:?}"
        );
        assert_eq!(degraded.next_heartbeat_ms, 420_000);
        // Not the request timeout's worth more: the answer comes when the wait runs out.
        assert!(asked.elapsed() < heartbeat_timeout + Duration::from_secs(2));
    }
    let fail_opens = metric_value(
        &system.gateway.metrics().await,
        "playhead_gateway_heartbeat_fail_open_total",
        &[],
    );
    assert!(fail_opens >= 2.0, "{fail_opens}");

    system.nats.restart();
    let resumed = eventually("decisions to resume", Duration::from_secs(60), || async {
        let decision = system
            .beat("fay", "phone", "phone-p1", "film-1", Beat, 90_000)
            .await;
        (answer(&decision) == CONTINUE).then_some(decision)
    })
    .await;
    assert_eq!(resumed.next_heartbeat_ms, 420_000);
    // Both slots outlived the outage: a third device still finds the limit full.
    let third = system
        .beat("fay", "tablet", "tablet-p1", "film-2", Start, 0)
        .await;
    assert_eq!(
        answer(&third),
        (HeartbeatAction::Stop, HeartbeatReason::ConcurrencyLimit)
    );
    let mut live = system.live_playouts("fay").await;
    live.sort();
    assert_eq!(live, ["phone-p1", "tv-p1"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publishers_get_decisions_and_bad_playout_input_is_refused_with_a_reason() {
    let system = PlayoutSystem::start(|_| {}).await;
    system.entitle("gus", &["premium"], DAY, 0).await;
    let client = system.nats.connect().await;
    let mut replies = client
        .subscribe("_INBOX.admin.gus.decisions")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let subject = user_subject(&UserId::parse("gus").unwrap(), UserKind::Heartbeat);
    let publish = |headers: HeaderMap, payload: Vec<u8>| {
        let jetstream = system.jetstream.clone();
        let subject = subject.clone();
        async move {
            jetstream
                .publish_with_headers(subject, headers, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let asking = system.nats.asking(&subject, "_INBOX.admin.gus.decisions");
    let mut asking_in_json = asking.clone();
    asking_in_json.insert(CONTENT_TYPE, JSON_CONTENT_TYPE);

    let start = heartbeat("gus", "tv", "tv-p1", "film-1", Start, 0);
    publish(asking.clone(), start.encode_to_vec()).await;
    let beat = heartbeat("gus", "tv", "tv-p1", "film-1", Beat, 30_000);
    publish(asking_in_json, to_json(&beat).into_bytes()).await;
    for expected_interval in [None, Some(600_000)] {
        let reply = within("a decision", WAIT, replies.next()).await.unwrap();
        let decision = HeartbeatDecision::decode(reply.payload.as_ref()).unwrap();
        assert_eq!(answer(&decision), CONTINUE);
        if let Some(interval) = expected_interval {
            assert_eq!(decision.next_heartbeat_ms, interval);
        }
    }

    // Bad input over NATS is dead-lettered with its reason; the rest carries on.
    let no_kind = Heartbeat {
        kind: 0,
        ..heartbeat("gus", "tv", "tv-p1", "film-1", Beat, 40_000)
    };
    publish(HeaderMap::new(), no_kind.encode_to_vec()).await;
    let someone_else = heartbeat("hal", "tv", "tv-p9", "film-1", Start, 0);
    publish(HeaderMap::new(), someone_else.encode_to_vec()).await;
    let mut no_end = entitlements("gus", &["sports"], DAY, 0);
    no_end.entitlements[0].valid_until = None;
    publish_entitlements(&system.jetstream, &no_end).await;
    let dead_letters = eventually("three dead letters", WAIT, || async {
        let metrics = system.node.metrics().await;
        let count = |reason| {
            metric_value(
                &metrics,
                "playhead_dead_letters_total",
                &[("inbox", "user"), ("reason", reason)],
            )
        };
        let counts = (count("invalid_command"), count("id_mismatch"));
        (counts.0 + counts.1 >= 3.0).then_some(counts)
    })
    .await;
    assert_eq!(dead_letters, (2.0, 1.0));

    // The gateway refuses malformed heartbeats itself: the only error a player can get.
    let mut grpc = system.client.clone();
    let bad_device = heartbeat("gus", "tv 1", "tv-p2", "film-1", Start, 0);
    for malformed in [no_kind, bad_device] {
        let status = grpc.heartbeat(malformed).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    assert_eq!(system.live_playouts("gus").await, ["tv-p1"]);
    assert!(system.held_tags("gus", &["sports"]).await.is_empty());
    let beat = system
        .beat("gus", "tv", "tv-p1", "film-1", Beat, 50_000)
        .await;
    assert_eq!(answer(&beat), CONTINUE);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_grants_tags_and_sends_heartbeats() {
    let system = PlayoutSystem::start(|_| {}).await;
    let grpc_url = system.gateway.cli_target();
    let nats_url = system.nats.url();
    let run = |args: &[&str]| {
        let mut full = vec!["--nats-url".to_owned(), nats_url.clone()];
        full.extend(args.iter().map(|arg| arg.to_string()));
        let grpc_url = grpc_url.clone();
        async move {
            let args: Vec<&str> = full.iter().map(String::as_str).collect();
            let (ok, out, err) = cli(&grpc_url, &args).await;
            assert!(ok, "playhead {args:?}: {err}");
            serde_json::from_str::<serde_json::Value>(&out).expect("JSON output")
        }
    };
    run(&["publish", "content", "--content", "show-1", "--tag", "kids"]).await;
    run(&["publish", "entitlements", "--user", "ivy", "--tag", "kids"]).await;
    wait_until_drained(&system.jetstream, Inbox::Catalog, WAIT).await;
    let held = run(&[
        "playout", "check", "--user", "ivy", "--tag", "kids", "--tag", "premium",
    ]);
    assert_eq!(held.await["heldTags"], serde_json::json!(["kids"]));

    const BEAT: [&str; 10] = [
        "playout",
        "beat",
        "--user",
        "ivy",
        "--device",
        "tv",
        "--playout",
        "p1",
        "--content",
        "show-1",
    ];
    let start = run(&[&BEAT[..], &["--kind", "start"]].concat()).await;
    assert_eq!(start["action"], "HEARTBEAT_ACTION_CONTINUE", "{start}");
    let end = run(&[&BEAT[..], &["--kind", "end", "--position-ms", "1234"]].concat()).await;
    assert_eq!(end["reason"], "HEARTBEAT_REASON_OK", "{end}");
    let history = run(&["playout", "history", "--user", "ivy"]).await;
    assert_eq!(history["records"][0]["contentId"], "show-1", "{history}");
    assert_eq!(history["records"][0]["positionMs"], "1234", "{history}");
    assert_eq!(history["records"][0]["completed"], true, "{history}");
    let listed = run(&["playout", "list", "--user", "ivy"]).await;
    assert_eq!(listed, serde_json::json!({}), "END freed the slot");

    let (ok, _, err) = cli(
        &grpc_url,
        &[
            "playout",
            "beat",
            "--user",
            "ivy",
            "--device",
            "t v",
            "--playout",
            "p",
            "--content",
            "c",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("device_id"),
        "{err}"
    );
    system.stop().await;
}
