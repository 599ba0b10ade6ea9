//! Video playouts end to end, the rules: heartbeats through the gateway's `PlayoutService`,
//! the user actor's slots and entitlements, the catalog's tags, and viewing history.

use std::time::Duration;

use futures::future::join_all;
use playhead_proto::subjects::EVENTS_STREAM;
use playhead_proto::v1::{
    HeartbeatAction, HeartbeatKind, HeartbeatReason, ListViewHistoryRequest, SlotReclaimed,
    ViewRecord,
};
use playhead_tests::harness::wait::eventually;
use playhead_tests::playout::{CONTINUE, PlayoutSystem, WAIT, answer, in_wall_clock};
use prost::Message;

use HeartbeatKind::{Beat, End, Start};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_racing_start_on_a_limit_of_two_get_exactly_two_continues() {
    let system = PlayoutSystem::start(|_| {}).await;
    system.entitle("ann", &["premium"], DAY, 0).await;

    let racing = ["tv", "phone", "tablet"].map(|device| {
        let playout = format!("{device}-p1");
        let system = &system;
        async move {
            system
                .beat("ann", device, &playout, "film-1", Start, 0)
                .await
        }
    });
    let answers = join_all(racing).await;
    let continued = answers.iter().filter(|d| answer(d) == CONTINUE).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|d| answer(d) != CONTINUE)
        .map(answer)
        .collect();
    assert_eq!(continued, 2, "{answers:?}");
    assert_eq!(
        refused,
        [(HeartbeatAction::Stop, HeartbeatReason::ConcurrencyLimit)]
    );
    // The first interval after START is jittered into [50%, 100%] of 10 minutes.
    for admitted in answers.iter().filter(|d| answer(d) == CONTINUE) {
        assert!(
            (300_000..=600_000).contains(&admitted.next_heartbeat_ms),
            "{admitted:?}"
        );
    }
    assert_eq!(system.live_playouts("ann").await.len(), 2);

    // Unknown content and content outside the user's tags are not entitled.
    for content in ["match-1", "film-unknown"] {
        let refused = system.beat("ann", "tv", "other", content, Start, 0).await;
        assert_eq!(
            answer(&refused),
            (HeartbeatAction::Stop, HeartbeatReason::NotEntitled),
            "{content}"
        );
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_crashed_starts_again_at_once_by_reclaiming_its_slot() {
    let system = PlayoutSystem::start(|_| {}).await;
    system.entitle("bob", &["premium"], DAY, 0).await;
    let events = system.jetstream.get_stream(EVENTS_STREAM).await.unwrap();

    assert_eq!(
        answer(&system.beat("bob", "tv", "tv-p1", "film-1", Start, 0).await),
        CONTINUE
    );
    assert_eq!(
        answer(
            &system
                .beat("bob", "phone", "phone-p1", "film-2", Start, 0)
                .await
        ),
        CONTINUE
    );
    // The tv app crashed mid-film (no END) and starts again at once: the limit is full, but
    // the device's own seat is taken over.
    let restarted = system.beat("bob", "tv", "tv-p2", "film-1", Start, 0).await;
    assert_eq!(answer(&restarted), CONTINUE);
    let mut live = system.live_playouts("bob").await;
    live.sort();
    assert_eq!(live, ["phone-p1", "tv-p2"]);

    let reclaimed = eventually("the SlotReclaimed event", WAIT, || async {
        events
            .get_last_raw_message_by_subject("playhead.events.user.bob.SlotReclaimed")
            .await
            .ok()
    })
    .await;
    let reclaimed = SlotReclaimed::decode(reclaimed.payload.as_ref()).unwrap();
    assert_eq!(
        (
            reclaimed.device_id.as_str(),
            reclaimed.previous_playout_id.as_str(),
            reclaimed.playout_id.as_str()
        ),
        ("tv", "tv-p1", "tv-p2")
    );
    // Another device still finds the limit full.
    let third = system
        .beat("bob", "tablet", "tablet-p1", "film-3", Start, 0)
        .await;
    assert_eq!(
        answer(&third),
        (HeartbeatAction::Stop, HeartbeatReason::ConcurrencyLimit)
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_without_heartbeats_frees_after_the_slot_timeout() {
    let system = PlayoutSystem::start(|config| {
        config.playout.heartbeat_interval_secs = 1;
        config.playout.slot_timeout_secs = 2;
    })
    .await;
    system.entitle("cat", &["premium"], DAY, 1).await;

    assert_eq!(
        answer(&system.beat("cat", "tv", "tv-p1", "film-1", Start, 0).await),
        CONTINUE
    );
    let beat = system.beat("cat", "tv", "tv-p1", "film-1", Beat, 500).await;
    assert_eq!((answer(&beat), beat.next_heartbeat_ms), (CONTINUE, 1_000));
    let refused = system
        .beat("cat", "phone", "phone-p1", "film-2", Start, 0)
        .await;
    assert_eq!(
        answer(&refused),
        (HeartbeatAction::Stop, HeartbeatReason::ConcurrencyLimit)
    );

    // The tv goes silent; after the timeout its slot no longer counts.
    eventually("the silent slot to expire", WAIT, || async {
        system.live_playouts("cat").await.is_empty().then_some(())
    })
    .await;
    let admitted = system
        .beat("cat", "phone", "phone-p2", "film-2", Start, 0)
        .await;
    assert_eq!(answer(&admitted), CONTINUE);
    assert_eq!(system.live_playouts("cat").await, ["phone-p2"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entitlement_renewal_replaces_the_tag_instead_of_adding_one() {
    let system = PlayoutSystem::start(|_| {}).await;
    // `premium` is renewed for longer; `sports` is renewed for shorter. A renewal that added a
    // record would keep the longer validity of `sports` alive.
    system
        .entitle("dan", &["premium"], Duration::from_secs(2), 0)
        .await;
    system.entitle("dan", &["sports"], DAY, 0).await;
    system.entitle("dan", &["premium"], DAY, 0).await;
    system
        .entitle("dan", &["sports"], Duration::from_secs(2), 0)
        .await;
    let both = eventually("both tags held", WAIT, || async {
        let held = system
            .held_tags("dan", &["premium", "sports", "kids"])
            .await;
        (held.len() == 2).then_some(held)
    })
    .await;
    assert_eq!(both, ["premium", "sports"]);

    let lapse = in_wall_clock(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(in_wall_clock(Duration::ZERO).seconds >= lapse.seconds);
    assert_eq!(
        system.held_tags("dan", &["premium", "sports"]).await,
        ["premium"]
    );
    assert_eq!(
        answer(&system.beat("dan", "tv", "tv-p1", "film-1", Start, 0).await),
        CONTINUE
    );
    assert_eq!(
        answer(&system.beat("dan", "tv", "tv-p2", "match-1", Start, 0).await),
        (HeartbeatAction::Stop, HeartbeatReason::NotEntitled)
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_are_listed_newest_first_and_the_history_is_capped() {
    let system = PlayoutSystem::start(|config| config.playout.history_cap = 3).await;
    system.entitle("eve", &["premium"], DAY, 0).await;
    for n in 1..=5u64 {
        let film = format!("film-{n}");
        let playout = format!("p{n}");
        for (kind, position) in [(Start, 0), (Beat, n * 1_000), (End, n * 1_000 + 500)] {
            let decision = system
                .beat("eve", "tv", &playout, &film, kind, position)
                .await;
            assert_eq!(answer(&decision), CONTINUE, "{film} {kind:?}");
        }
    }
    // Watching film-6 now, not finished.
    system.beat("eve", "tv", "p6", "film-6", Start, 0).await;
    system.beat("eve", "tv", "p6", "film-6", Beat, 7_000).await;

    let mut client = system.client.clone();
    let page = |page_size: u32, before| {
        let mut client = client.clone();
        async move {
            client
                .list_view_history(ListViewHistoryRequest {
                    user_id: "eve".into(),
                    page_size,
                    before,
                })
                .await
                .expect("list view history")
                .into_inner()
        }
    };
    let seen = |records: &[ViewRecord]| -> Vec<(String, u64, bool)> {
        records
            .iter()
            .map(|record| {
                (
                    record.content_id.clone(),
                    record.position_ms,
                    record.completed,
                )
            })
            .collect()
    };
    let all = page(10, None).await;
    assert_eq!(
        seen(&all.records),
        [
            ("film-6".to_owned(), 7_000, false),
            ("film-5".to_owned(), 5_500, true),
            ("film-4".to_owned(), 4_500, true),
        ]
    );
    assert_eq!(all.next_before, None);
    let first = page(2, None).await;
    assert_eq!(seen(&first.records), seen(&all.records[..2]));
    let rest = page(2, first.next_before).await;
    assert_eq!(seen(&rest.records), seen(&all.records[2..]));
    assert!(
        client
            .list_view_history(ListViewHistoryRequest {
                user_id: "eve".into(),
                page_size: 1_000,
                before: None,
            })
            .await
            .is_err_and(|status| status.code() == tonic::Code::InvalidArgument)
    );
    system.stop().await;
}
