//! Schema versions and refusals: the version-1 `PlayoutStarted` published before the journal
//! is upcast; unknown versions, unknown names, garbage and invalid payloads are typed errors.

use playhead_proto::v1;
use prost::Message;

use super::*;

fn ann() -> UserId {
    UserId::parse("ann").unwrap()
}

/// What `wire::playout_event_payload` published for an admission of `film-1` on `tv` before
/// the journal existed (computed from that code and frozen): user, device, playout, content.
const PLAYOUT_STARTED_V1: &str = "0a03616e6e120274761a027031220666696c6d2d31";

#[test]
fn the_version_1_fields_kept_their_numbers() {
    let old_field_set = v1::PlayoutStarted {
        user_id: "ann".into(),
        device_id: "tv".into(),
        playout_id: "p1".into(),
        content_id: "film-1".into(),
        ..Default::default()
    };
    assert_eq!(old_field_set.encode_to_vec(), unhex(PLAYOUT_STARTED_V1));
}

#[test]
fn a_version_1_playout_started_is_upcast_with_its_stored_time() {
    let stored_at = Timestamp(1_763_000_123_456);
    let decoded = decode_user(
        &ann(),
        "PlayoutStarted",
        1,
        &unhex(PLAYOUT_STARTED_V1),
        stored_at,
    );
    assert_eq!(
        decoded.unwrap(),
        UserEvent::Playout(PlayoutEvent::PlayoutStarted {
            device_id: DeviceId::parse("tv").unwrap(),
            playout_id: PlayoutId::parse("p1").unwrap(),
            content_id: ContentId::parse("film-1").unwrap(),
            position_ms: 0,
            readmitted: false,
            next_heartbeat: Duration::ZERO,
            at: stored_at,
            content_tags: None,
        })
    );
}

#[test]
fn a_version_1_payload_is_checked_like_any_other() {
    let other_user = decode_user(
        &UserId::parse("bob").unwrap(),
        "PlayoutStarted",
        1,
        &unhex(PLAYOUT_STARTED_V1),
        Timestamp(0),
    );
    assert!(matches!(
        other_user,
        Err(CodecError::Invalid {
            name: "PlayoutStarted",
            detail: InvalidPayload::OtherEntity {
                field: "user_id",
                ..
            }
        })
    ));
}

#[test]
fn unknown_versions_are_unsupported() {
    let encoded = encode_user(
        &ann(),
        &UserEvent::Playout(PlayoutEvent::SlotRevoked {
            device_id: DeviceId::parse("tv").unwrap(),
            playout_id: PlayoutId::parse("p1").unwrap(),
            content_id: ContentId::parse("film-1").unwrap(),
            at: Timestamp(5),
        }),
    );
    let payload = unhex(PLAYOUT_STARTED_V1);
    for (name, version, payload) in [
        ("PlayoutStarted", 3, &payload),
        ("PlayoutStarted", 0, &payload),
        ("SlotRevoked", 2, &encoded.payload),
    ] {
        let decoded = decode_user(&ann(), name, version, payload, Timestamp(0));
        assert!(
            matches!(decoded, Err(CodecError::UnsupportedVersion { name: n, version: v }) if n == name && v == version),
            "{name} v{version}: {decoded:?}"
        );
    }
    let station = StationId::parse("radio-1").unwrap();
    assert!(matches!(
        decode_station(&station, "SongStarted", 2, &[], Timestamp(0)),
        Err(CodecError::UnsupportedVersion {
            name: "SongStarted",
            version: 2
        })
    ));
}

#[test]
fn a_name_of_another_family_or_none_is_unknown() {
    let station = StationId::parse("radio-1").unwrap();
    let content = ContentId::parse("film-1").unwrap();
    assert!(matches!(
        decode_user(&ann(), "SongStarted", 1, &[], Timestamp(0)),
        Err(CodecError::UnknownEvent { family: "user", name }) if name == "SongStarted"
    ));
    assert!(matches!(
        decode_station(&station, "ContentTagged", 1, &[], Timestamp(0)),
        Err(CodecError::UnknownEvent {
            family: "station",
            ..
        })
    ));
    assert!(matches!(
        decode_content(&content, "contenttagged", 1, &[], Timestamp(0)),
        Err(CodecError::UnknownEvent {
            family: "content",
            ..
        })
    ));
}

#[test]
fn garbage_bytes_are_undecodable() {
    // A field of wire type 7 (none exists), then a length that runs past the end.
    for garbage in [&[0xff, 0xff, 0xff, 0xff][..], &[0x0a, 0x05, b'a', b'n']] {
        let decoded = decode_user(&ann(), "PlayoutStarted", 2, garbage, Timestamp(0));
        assert!(
            matches!(
                decoded,
                Err(CodecError::Undecodable {
                    name: "PlayoutStarted",
                    ..
                })
            ),
            "{decoded:?}"
        );
    }
}

fn invalid(name: &str, message: impl Message) -> InvalidPayload {
    match decode_user(&ann(), name, 1, &message.encode_to_vec(), Timestamp(0)) {
        Err(CodecError::Invalid { detail, .. }) => detail,
        other => panic!("{name} was not refused as invalid: {other:?}"),
    }
}

#[test]
fn payloads_that_decode_but_describe_no_event_are_invalid() {
    let at = Some(prost_types::Timestamp {
        seconds: 1_763_000_123,
        nanos: 0,
    });
    // The SessionStarted published before the journal: a count, no tracks, no seed.
    let pre_journal = v1::SessionStarted {
        user_id: "ann".into(),
        playlist_id: "road-trip".into(),
        track_count: 12,
        at,
        ..Default::default()
    };
    assert_eq!(
        invalid("SessionStarted", pre_journal),
        InvalidPayload::TrackCount {
            count: 12,
            listed: 0
        }
    );
    let no_time = v1::SessionResumed {
        user_id: "ann".into(),
        playlist_id: "road-trip".into(),
        at: None,
    };
    assert_eq!(
        invalid("SessionResumed", no_time),
        InvalidPayload::Missing { field: "at" }
    );
    let before_the_epoch = v1::SessionCompleted {
        user_id: "ann".into(),
        playlist_id: "road-trip".into(),
        at: Some(prost_types::Timestamp {
            seconds: -1,
            nanos: 0,
        }),
    };
    assert!(matches!(
        invalid("SessionCompleted", before_the_epoch),
        InvalidPayload::Time { field: "at", .. }
    ));
    let injected_playlist = v1::SessionResumed {
        user_id: "ann".into(),
        playlist_id: "road.trip".into(),
        at,
    };
    assert!(matches!(
        invalid("SessionResumed", injected_playlist),
        InvalidPayload::Id(IdError::InvalidCharacter {
            kind: "playlist_id",
            ..
        })
    ));
    let ok_is_no_stop = v1::PlayoutStopped {
        user_id: "ann".into(),
        playout_id: "p1".into(),
        reason: v1::HeartbeatReason::Ok as i32,
        device_id: "tv".into(),
        content_id: "film-1".into(),
        kind: v1::HeartbeatKind::Beat as i32,
        at,
        ..Default::default()
    };
    assert_eq!(
        invalid("PlayoutStopped", ok_is_no_stop),
        InvalidPayload::Enum {
            field: "reason",
            value: v1::HeartbeatReason::Ok as i32
        }
    );
}
