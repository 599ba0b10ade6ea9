//! Pinned bytes: one event of each message type against the payload it encoded to when the
//! schema was written (obtained once, then frozen here).
//!
//! Why: the round-trip properties pass for any schema, even one renumbered or retyped between
//! two releases, yet every journal already stored would then decode wrongly or not at all. A
//! change to these bytes is a change to stored data: it needs a new version and an upcaster,
//! never an edit of the literal. Every field is set to a non-default value, so each field
//! number and type is pinned; decoding the literal also checks old entries stay readable.

use super::*;

const AT: Timestamp = Timestamp(1_763_000_123_456);
const LATER: Timestamp = Timestamp(1_763_000_725_000);

#[track_caller]
fn assert_pinned(encoded: &EncodedEvent, version: u32, pinned: &str) {
    assert_eq!(
        (encoded.version, hex(&encoded.payload)),
        (version, pinned.to_owned()),
        "the stored form of {} changed",
        encoded.name
    );
}

fn tag_set(names: &[&str]) -> BTreeSet<Tag> {
    names
        .iter()
        .map(|name| Tag::parse(*name).unwrap())
        .collect()
}

fn device() -> DeviceId {
    DeviceId::parse("tv").unwrap()
}

fn playout(name: &str) -> PlayoutId {
    PlayoutId::parse(name).unwrap()
}

fn film(name: &str) -> ContentId {
    ContentId::parse(name).unwrap()
}

#[test]
fn station_payloads_are_pinned() {
    let station = StationId::parse("radio-1").unwrap();
    let song = Song {
        artist: "Nina Simone".into(),
        title: "Sinnerman".into(),
    };
    let pinned = [
        (
            StationEvent::SongStarted {
                play_seq: 42,
                song: song.clone(),
                started_at: AT,
            },
            "0a07726164696f2d31102a1a180a0b4e696e612053696d6f6e65120953696e6e65726d616e220c08bbfed4c806108084b8d901",
        ),
        (
            // Unchanged by the `enrichment` field added since: absent, it writes nothing.
            StationEvent::SongEnded {
                play_seq: 42,
                song,
                started_at: AT,
                ended_at: LATER,
                enrichment: None,
            },
            "0a07726164696f2d31102a1a180a0b4e696e612053696d6f6e65120953696e6e65726d616e220c08bbfed4c806108084b8d9012a06089583d5c806",
        ),
        (
            StationEvent::SongEnriched {
                play_seq: 42,
                enrichment: Enrichment {
                    recording_mbid: "f3a8b9c2".into(),
                    title: "Sinnerman".into(),
                    artist: "Nina Simone".into(),
                    artist_mbid: "bfcc6d75".into(),
                    release_mbid: "9a8b7c6d".into(),
                    release_title: "Pastel Blues".into(),
                    release_year: 1965,
                    cover_url: "https://c.example/1.jpg".into(),
                    enriched_at: LATER,
                },
            },
            "0a07726164696f2d31102a1a680a086633613862396332120953696e6e65726d616e1a0b4e696e612053696d6f6e65220862666363366437352a083961386237633664320c50617374656c20426c75657338ad0f421768747470733a2f2f632e6578616d706c652f312e6a70674a06089583d5c806",
        ),
    ];
    for (event, bytes) in pinned {
        assert_pinned(&encode_station(&station, &event), 1, bytes);
        let decoded = decode_station(&station, event.name(), 1, &unhex(bytes), LATER);
        assert_eq!(decoded.unwrap(), event);
    }
}

#[test]
fn player_payloads_are_pinned() {
    let user = UserId::parse("ann").unwrap();
    let playlist = PlaylistId::parse("road-trip").unwrap();
    let pinned = [
        (
            PlayerEvent::SessionStarted {
                tracks: vec![
                    Track {
                        track_id: "t1".into(),
                        artist: "Björk".into(),
                    },
                    Track {
                        track_id: "t2".into(),
                        artist: "Nina Simone".into(),
                    },
                ],
                seed: 7,
                recent_skips: vec![Timestamp(1_763_000_000_000)],
                at: AT,
            },
            "0a03616e6e1209726f61642d747269701802220c08bbfed4c806108084b8d9012a0c0a0274311206426ac3b6726b2a110a027432120b4e696e612053696d6f6e6530073a0608c0fdd4c806",
        ),
        (
            PlayerEvent::SessionResumed { at: AT },
            "0a03616e6e1209726f61642d747269701a0c08bbfed4c806108084b8d901",
        ),
        (
            PlayerEvent::TrackAdvanced {
                track_id: "t1".into(),
                skipped: true,
                at: AT,
            },
            "0a03616e6e1209726f61642d747269701a02743120012a0c08bbfed4c806108084b8d901",
        ),
        (
            PlayerEvent::SkipDenied {
                retry_after: Duration::from_millis(1_200_000),
                at: AT,
            },
            "0a03616e6e1209726f61642d7472697018809f49220c08bbfed4c806108084b8d901",
        ),
        (
            PlayerEvent::SessionCompleted { at: AT },
            "0a03616e6e1209726f61642d747269701a0c08bbfed4c806108084b8d901",
        ),
    ];
    for (event, bytes) in pinned {
        let event = UserEvent::Player {
            playlist: playlist.clone(),
            event,
        };
        assert_pinned(&encode_user(&user, &event), 1, bytes);
        let decoded = decode_user(&user, event.name(), 1, &unhex(bytes), LATER);
        assert_eq!(decoded.unwrap(), event);
    }
}

#[test]
fn playout_payloads_are_pinned() {
    let user = UserId::parse("ann").unwrap();
    let pinned = [
        (
            PlayoutEvent::EntitlementsUpdated {
                entitlements: vec![Entitlement {
                    tag: Tag::parse("sports").unwrap(),
                    valid_until: LATER,
                }],
                concurrency_limit: Some(3),
                at: AT,
            },
            1,
            "0a03616e6e12100a0673706f7274731206089583d5c8061803220c08bbfed4c806108084b8d901",
        ),
        (
            PlayoutEvent::SlotExpired {
                device_id: device(),
                playout_id: playout("p1"),
                content_id: film("film-1"),
                last_heartbeat_at: AT,
                at: LATER,
            },
            1,
            "0a03616e6e120274761a027031220666696c6d2d312a0c08bbfed4c806108084b8d9013206089583d5c806",
        ),
        (
            PlayoutEvent::SlotRevoked {
                device_id: device(),
                playout_id: playout("p1"),
                content_id: film("film-1"),
                at: AT,
            },
            1,
            "0a03616e6e120274761a027031220666696c6d2d312a0c08bbfed4c806108084b8d901",
        ),
        (
            PlayoutEvent::SlotReclaimed {
                device_id: device(),
                previous_playout_id: playout("p1"),
                previous_content_id: film("film-1"),
                playout_id: playout("p2"),
                at: AT,
            },
            1,
            "0a03616e6e120274761a027031220270322a0666696c6d2d31320c08bbfed4c806108084b8d901",
        ),
        (
            PlayoutEvent::PlayoutStarted {
                device_id: device(),
                playout_id: playout("p2"),
                content_id: film("film-2"),
                position_ms: 90_000,
                readmitted: true,
                next_heartbeat: Duration::from_millis(420_000),
                at: AT,
                content_tags: Some(tag_set(&["premium", "sports"])),
            },
            2,
            "0a03616e6e120274761a027032220666696c6d2d322890bf05300138a0d119420c08bbfed4c806108084b8d9014a110a077072656d69756d0a0673706f727473",
        ),
        (
            PlayoutEvent::HeartbeatRecorded {
                device_id: device(),
                playout_id: playout("p2"),
                content_id: film("film-2"),
                position_ms: 690_000,
                next_heartbeat: Duration::from_millis(600_000),
                at: LATER,
                bookmarked: true,
            },
            1,
            "0a03616e6e120274761a027032220666696c6d2d3228d08e2a30c0cf243a06089583d5c806",
        ),
        (
            // The bookmark left to the slot: field 8 (`bookmark_deferred`) only then.
            PlayoutEvent::HeartbeatRecorded {
                device_id: device(),
                playout_id: playout("p2"),
                content_id: film("film-2"),
                position_ms: 690_000,
                next_heartbeat: Duration::from_millis(600_000),
                at: LATER,
                bookmarked: false,
            },
            1,
            "0a03616e6e120274761a027032220666696c6d2d3228d08e2a30c0cf243a06089583d5c8064001",
        ),
        (
            PlayoutEvent::PlayoutEnded {
                device_id: device(),
                playout_id: playout("p2"),
                content_id: film("film-2"),
                position_ms: 700_000,
                freed_slot: true,
                next_heartbeat: Duration::from_millis(600_000),
                at: LATER,
            },
            1,
            "0a03616e6e120274761a027032220666696c6d2d3228e0dc2a300138c0cf244206089583d5c806",
        ),
        (
            PlayoutEvent::PlayoutStopped {
                device_id: device(),
                playout_id: playout("p3"),
                content_id: film("film-3"),
                kind: HeartbeatKind::Beat,
                reason: StopReason::ConcurrencyLimit,
                position_ms: 5_000,
                next_heartbeat: Duration::from_millis(600_000),
                at: LATER,
            },
            1,
            "0a03616e6e120270331803220274762a0666696c6d2d33300238882740c0cf244a06089583d5c806",
        ),
    ];
    for (event, version, bytes) in pinned {
        let event = UserEvent::Playout(event);
        assert_pinned(&encode_user(&user, &event), version, bytes);
        let decoded = decode_user(&user, event.name(), version, &unhex(bytes), Timestamp(0));
        assert_eq!(decoded.unwrap(), event);
    }
}

#[test]
fn content_payloads_are_pinned() {
    let content = film("film-1");
    let event = CatalogEvent::ContentTagged {
        tags: tag_set(&["premium", "sports"]),
    };
    let bytes = "0a0666696c6d2d3112077072656d69756d120673706f727473";
    assert_pinned(&encode_content(&content, &event), 1, bytes);
    let decoded = decode_content(&content, "ContentTagged", 1, &unhex(bytes), AT);
    assert_eq!(decoded.unwrap(), event);
}
