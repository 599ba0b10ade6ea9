//! `decode(encode(e)) == e` for every family, compared with the generated event itself (which
//! owes nothing to the codec); payloads of another entity are refused; arbitrary and corrupted
//! payloads never panic.

use super::*;

/// The version the journal must write: 2 for `PlayoutStarted` (it records the catalog tags
/// since), 1 for everything else. Spelled out here, not read from the codec.
fn expected_version(event: &UserEvent) -> u32 {
    match event {
        UserEvent::Playout(PlayoutEvent::PlayoutStarted { .. }) => 2,
        _ => 1,
    }
}

const EVERY_NAME: &[&str] = &[
    "SongStarted",
    "SongEnded",
    "SessionStarted",
    "SessionResumed",
    "TrackAdvanced",
    "SkipDenied",
    "SessionCompleted",
    "EntitlementsUpdated",
    "SlotExpired",
    "SlotRevoked",
    "SlotReclaimed",
    "PlayoutStarted",
    "HeartbeatRecorded",
    "PlayoutEnded",
    "PlayoutStopped",
    "ContentTagged",
    "",
    "songstarted",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn station_events_round_trip(
        station in station_id(),
        event in station_event(),
        stored_at in time(),
    ) {
        let encoded = encode_station(&station, &event);
        prop_assert_eq!(encoded.name, event.name());
        prop_assert_eq!(encoded.version, 1);
        let decoded =
            decode_station(&station, encoded.name, encoded.version, &encoded.payload, stored_at);
        prop_assert_eq!(decoded.map_err(|error| error.to_string()), Ok(event));
    }

    #[test]
    fn user_events_round_trip(user in user_id(), event in user_event(), stored_at in time()) {
        let encoded = encode_user(&user, &event);
        prop_assert_eq!(encoded.name, event.name());
        prop_assert_eq!(encoded.version, expected_version(&event));
        let decoded =
            decode_user(&user, encoded.name, encoded.version, &encoded.payload, stored_at);
        prop_assert_eq!(decoded.map_err(|error| error.to_string()), Ok(event));
    }

    #[test]
    fn content_events_round_trip(
        content in content_id(),
        event in catalog_event(),
        stored_at in time(),
    ) {
        let encoded = encode_content(&content, &event);
        prop_assert_eq!(encoded.name, event.name());
        prop_assert_eq!(encoded.version, 1);
        let decoded =
            decode_content(&content, encoded.name, encoded.version, &encoded.payload, stored_at);
        prop_assert_eq!(decoded.map_err(|error| error.to_string()), Ok(event));
    }

    /// An entry filed under the wrong entity (a bug, or a tampered stream) must not fold into
    /// that entity's state.
    #[test]
    fn payloads_of_another_entity_are_refused(
        (station, other_station) in (station_id(), station_id()),
        (user, other_user) in (user_id(), user_id()),
        (content, other_content) in (content_id(), content_id()),
        station_event in station_event(),
        user_event in user_event(),
        catalog_event in catalog_event(),
    ) {
        let refused = |result: Result<(), CodecError>| matches!(
            result,
            Err(CodecError::Invalid { detail: InvalidPayload::OtherEntity { .. }, .. })
        );
        if station != other_station {
            let encoded = encode_station(&station, &station_event);
            let decoded = decode_station(&other_station, encoded.name, encoded.version, &encoded.payload, Timestamp(0));
            prop_assert!(refused(decoded.map(drop)));
        }
        if user != other_user {
            let encoded = encode_user(&user, &user_event);
            let decoded = decode_user(&other_user, encoded.name, encoded.version, &encoded.payload, Timestamp(0));
            prop_assert!(refused(decoded.map(drop)));
        }
        if content != other_content {
            let encoded = encode_content(&content, &catalog_event);
            let decoded = decode_content(&other_content, encoded.name, encoded.version, &encoded.payload, Timestamp(0));
            prop_assert!(refused(decoded.map(drop)));
        }
    }

    /// Arbitrary bytes under any name and version: an error or an event, never a panic; an
    /// event that decodes is a valid one (it survives its own round trip).
    #[test]
    fn arbitrary_payloads_never_panic(
        name in prop::sample::select(EVERY_NAME),
        version in 0u32..4,
        payload in prop::collection::vec(any::<u8>(), 0..256),
        stored_at in time(),
    ) {
        let station = StationId::parse("radio-1").unwrap();
        let user = UserId::parse("ann").unwrap();
        let content = ContentId::parse("film-1").unwrap();
        if let Ok(event) = decode_station(&station, name, version, &payload, stored_at) {
            let again = encode_station(&station, &event);
            prop_assert_eq!(decode_station(&station, again.name, again.version, &again.payload, stored_at).ok(), Some(event));
        }
        if let Ok(event) = decode_user(&user, name, version, &payload, stored_at) {
            let again = encode_user(&user, &event);
            prop_assert_eq!(decode_user(&user, again.name, again.version, &again.payload, stored_at).ok(), Some(event));
        }
        if let Ok(event) = decode_content(&content, name, version, &payload, stored_at) {
            let again = encode_content(&content, &event);
            prop_assert_eq!(decode_content(&content, again.name, again.version, &again.payload, stored_at).ok(), Some(event));
        }
    }

    /// Real payloads truncated or with one byte changed (what a damaged store holds): still
    /// never a panic. Random bytes rarely get past the first field; these reach every reader.
    #[test]
    fn corrupted_payloads_never_panic(
        user in user_id(),
        event in user_event(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let encoded = encode_user(&user, &event);
        let mut payload = encoded.payload.clone();
        if !payload.is_empty() {
            let at = flip.index(payload.len());
            payload[at] = byte;
        }
        let truncated = &encoded.payload[..cut.index(encoded.payload.len() + 1)];
        for damaged in [&payload[..], truncated] {
            if let Ok(decoded) = decode_user(&user, encoded.name, encoded.version, damaged, Timestamp(0)) {
                let again = encode_user(&user, &decoded);
                let redecoded = decode_user(&user, again.name, again.version, &again.payload, Timestamp(0));
                prop_assert_eq!(redecoded.ok(), Some(decoded));
            }
        }
    }
}
