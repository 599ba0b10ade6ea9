//! Payload decoding: protobuf by default, canonical proto3 JSON when the publisher sets
//! `Content-Type: application/json` (mapped by prost-reflect from the compiled descriptors).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor};

use crate::FILE_DESCRIPTOR_SET;
use crate::headers::JSON_CONTENT_TYPE;
use crate::v1;
use crate::wire_json::take;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the build embeds a valid descriptor set")
});

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Protobuf,
    Json,
}

impl PayloadFormat {
    /// From a `Content-Type` header value (absent or anything but JSON is protobuf).
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(value)
                if value
                    .split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(JSON_CONTENT_TYPE)) =>
            {
                PayloadFormat::Json
            }
            _ => PayloadFormat::Protobuf,
        }
    }
}

/// A payload that is not a valid encoding of the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not a valid protobuf {message}: {detail}")]
    Protobuf {
        message: &'static str,
        detail: String,
    },
    #[error("payload is not valid proto3 JSON for {message}: {detail}")]
    Json {
        message: &'static str,
        detail: String,
    },
    #[error(
        "payload of {bytes} bytes holds {elements} list elements, more than a {message} of that \
         size can (at most {DECODE_RATIO} bytes decoded per byte of payload, plus \
         {DECODE_FLOOR} bytes)"
    )]
    TooDense {
        message: &'static str,
        bytes: usize,
        elements: usize,
    },
}

/// Decoding a payload allocates at most this many bytes per payload byte (plus
/// [`DECODE_FLOOR`]), in one allocation and in all: a payload whose list elements would take
/// more is refused before it is decoded. Every valid inbox message is far below it (a valid
/// list element carries at least one byte of id besides its field headers).
pub const DECODE_RATIO: usize = 16;
/// What any payload may take, however small, for fixed buffers and error messages.
pub const DECODE_FLOOR: usize = 4 * 1024;

/// The list elements of a payload, per repeated field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElementCounts(Vec<(String, usize)>);

impl ElementCounts {
    /// The elements of the repeated field `full_name` (e.g. `playhead.v1.StartPlaylist.tracks`).
    pub fn of(&self, full_name: &str) -> usize {
        self.0
            .iter()
            .find(|(name, _)| name == full_name)
            .map_or(0, |(_, count)| *count)
    }

    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, count)| count).sum()
    }

    fn add(&mut self, full_name: &str, count: usize) {
        match self.0.iter_mut().find(|(name, _)| name == full_name) {
            Some((_, total)) => *total = total.saturating_add(count),
            None => self.0.push((full_name.to_owned(), count)),
        }
    }
}

/// A message publishers send: how much room its lists take, so a payload is decoded only when
/// that fits [`DECODE_RATIO`], into vectors of exactly the right capacity.
pub trait InboxMessage: prost::Message + prost::Name + Default {
    /// Whether the message has lists at all; without, a payload decodes as it is (no count).
    const LISTS: bool = false;

    /// Bytes the decoded list elements take (their vectors' elements).
    fn element_bytes(_counts: &ElementCounts) -> usize {
        0
    }

    /// Makes room for exactly `counts` in an empty message, which the payload is then merged
    /// into (a vector growing by doubling would take up to twice the room).
    fn reserve(&mut self, _counts: &ElementCounts) {}
}

impl InboxMessage for v1::SongObserved {}

impl InboxMessage for v1::EnrichSong {}

impl InboxMessage for v1::Heartbeat {}

impl InboxMessage for v1::ImportRequest {}

const TRACKS: &str = "playhead.v1.StartPlaylist.tracks";
const ENTITLEMENTS: &str = "playhead.v1.EntitlementsUpdate.entitlements";
const TAGS: &str = "playhead.v1.ContentUpdate.tags";

impl InboxMessage for v1::PlayerCommand {
    const LISTS: bool = true;

    fn element_bytes(counts: &ElementCounts) -> usize {
        counts.of(TRACKS) * size_of::<v1::PlaylistTrack>()
    }

    fn reserve(&mut self, counts: &ElementCounts) {
        let tracks = counts.of(TRACKS);
        if tracks > 0 {
            // Tracks come only inside a `start`: merging the payload into this one is what
            // decoding does with it (a later `next` or `skip` replaces it, as it would).
            self.command = Some(v1::player_command::Command::Start(v1::StartPlaylist {
                tracks: Vec::with_capacity(tracks),
                ..v1::StartPlaylist::default()
            }));
        }
    }
}

impl InboxMessage for v1::EntitlementsUpdate {
    const LISTS: bool = true;

    fn element_bytes(counts: &ElementCounts) -> usize {
        counts.of(ENTITLEMENTS) * size_of::<v1::Entitlement>()
    }

    fn reserve(&mut self, counts: &ElementCounts) {
        self.entitlements.reserve_exact(counts.of(ENTITLEMENTS));
    }
}

impl InboxMessage for v1::ContentUpdate {
    const LISTS: bool = true;

    fn element_bytes(counts: &ElementCounts) -> usize {
        counts.of(TAGS) * size_of::<String>()
    }

    fn reserve(&mut self, counts: &ElementCounts) {
        self.tags.reserve_exact(counts.of(TAGS));
    }
}

/// Deepest nesting of messages a payload may have (prost's own limit).
const MAX_DEPTH: u32 = 100;

/// Counts the elements of every repeated field in a protobuf `payload` of `descriptor`,
/// nested messages included, without allocating for them.
pub fn count_protobuf_elements(
    descriptor: &MessageDescriptor,
    payload: &[u8],
) -> Result<ElementCounts, String> {
    let mut counts = ElementCounts::default();
    scan_protobuf(descriptor, payload, &mut counts, 0)?;
    Ok(counts)
}

fn scan_protobuf(
    descriptor: &MessageDescriptor,
    mut bytes: &[u8],
    counts: &mut ElementCounts,
    depth: u32,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("messages nested too deep".into());
    }
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).map_err(|error| error.to_string())?;
        let number = u32::try_from(key >> 3).map_err(|_| format!("invalid field key {key}"))?;
        let field = descriptor.get_field(number);
        let elements = match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut bytes).map_err(|error| error.to_string())?;
                1
            }
            1 => {
                take(&mut bytes, 8)?;
                1
            }
            5 => {
                take(&mut bytes, 4)?;
                1
            }
            2 => {
                let length = prost::encoding::decode_varint(&mut bytes)
                    .map_err(|error| error.to_string())?;
                let length = usize::try_from(length).map_err(|_| "length overflow".to_string())?;
                let value = take(&mut bytes, length)?;
                match field.as_ref().map(|field| field.kind()) {
                    Some(Kind::Message(inner)) => {
                        scan_protobuf(&inner, value, counts, depth + 1)?;
                        1
                    }
                    // A packed list of scalars: at most one element per byte.
                    Some(Kind::String | Kind::Bytes) | None => 1,
                    Some(_) => value.len(),
                }
            }
            wire_type => return Err(format!("invalid wire type {wire_type}")),
        };
        if let Some(field) = field.filter(|field| field.is_list()) {
            counts.add(field.full_name(), elements);
        }
    }
    Ok(())
}

/// Decodes `payload` as `M` in the given format, refusing a payload whose lists would take more
/// than [`DECODE_RATIO`] bytes per payload byte (plus [`DECODE_FLOOR`]) before decoding it.
pub fn decode<M: InboxMessage>(format: PayloadFormat, payload: &[u8]) -> Result<M, DecodeError> {
    match format {
        PayloadFormat::Protobuf => decode_protobuf(payload),
        PayloadFormat::Json => decode_json(payload),
    }
}

/// Bytes per payload byte a payload's list elements may take: less than [`DECODE_RATIO`], so
/// that with the elements' strings (at most the payload again) and, for JSON, the wire bytes
/// (at most twice) decoding stays within it. Valid elements take under 10 (a track of a
/// one-byte id: 5 bytes of protobuf, 48 decoded).
const ELEMENT_RATIO: usize = 12;

/// The most bytes the list elements of a payload of `bytes` may take.
fn element_budget(bytes: usize) -> usize {
    bytes
        .saturating_mul(ELEMENT_RATIO)
        .saturating_add(DECODE_FLOOR)
}

fn decode_protobuf<M: InboxMessage>(payload: &[u8]) -> Result<M, DecodeError> {
    let protobuf_error = |detail: String| DecodeError::Protobuf {
        message: M::NAME,
        detail,
    };
    // The ingest hot path (songs, heartbeats): nothing to count, no descriptor looked up.
    if !M::LISTS {
        return M::decode(payload).map_err(|error| protobuf_error(error.to_string()));
    }
    let descriptor = POOL.get_message_by_name(&M::full_name()).ok_or_else(|| {
        protobuf_error(format!("{} is not in the descriptor set", M::full_name()))
    })?;
    let counts = count_protobuf_elements(&descriptor, payload).map_err(protobuf_error)?;
    if M::element_bytes(&counts) > element_budget(payload.len()) {
        return Err(DecodeError::TooDense {
            message: M::NAME,
            bytes: payload.len(),
            elements: counts.total(),
        });
    }
    let mut message = M::default();
    message.reserve(&counts);
    message
        .merge(payload)
        .map_err(|error| protobuf_error(error.to_string()))?;
    Ok(message)
}

/// JSON is transcoded to protobuf wire bytes as it is read ([`crate::json_wire`]), then decoded
/// like a protobuf payload, under the same bound.
fn decode_json<M: InboxMessage>(payload: &[u8]) -> Result<M, DecodeError> {
    let json_error = |detail: String| DecodeError::Json {
        message: M::NAME,
        detail,
    };
    let descriptor = POOL
        .get_message_by_name(&M::full_name())
        .ok_or_else(|| json_error(format!("{} is not in the descriptor set", M::full_name())))?;
    let wire = crate::json_wire::to_wire(&descriptor, payload).map_err(json_error)?;
    decode_protobuf(&wire).map_err(|error| match error {
        DecodeError::Protobuf { detail, .. } => json_error(detail),
        DecodeError::TooDense { elements, .. } => DecodeError::TooDense {
            message: M::NAME,
            bytes: payload.len(),
            elements,
        },
        other => other,
    })
}

/// Renders an inbox message in the canonical proto3 JSON mapping, as [`to_json`] does, from its
/// encoding and without dynamic messages, so that memory stays within [`DECODE_RATIO`] of the
/// payload it came from. `message` is consumed: it is not held while its JSON is written.
pub fn inbox_json<M: InboxMessage + std::fmt::Debug>(message: M) -> String {
    let Some(descriptor) = POOL.get_message_by_name(&M::full_name()) else {
        return format!("{message:?}");
    };
    let wire = message.encode_to_vec();
    drop(message);
    // Only a field kind no inbox message has (bytes, maps, packed numbers) fails to render:
    // then prost-reflect renders it.
    crate::wire_json::render(&descriptor, &wire).unwrap_or_else(|_| match M::decode(&*wire) {
        Ok(message) => to_json(&message),
        Err(error) => error.to_string(),
    })
}

/// Renders `message` in the canonical proto3 JSON mapping (for the CLI and logs).
pub fn to_json<M>(message: &M) -> String
where
    M: prost::Message + prost::Name + std::fmt::Debug,
{
    let Some(descriptor) = POOL.get_message_by_name(&M::full_name()) else {
        return format!("{message:?}");
    };
    let mut dynamic = DynamicMessage::new(descriptor);
    if dynamic.transcode_from(message).is_err() {
        return format!("{message:?}");
    }
    serde_json::to_string(&dynamic).unwrap_or_else(|_| format!("{message:?}"))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::SongObserved;

    #[test]
    fn decodes_protobuf_and_json_alike() {
        let song = SongObserved {
            station_id: "radio-1".into(),
            artist: "Nina Simone".into(),
            title: "Sinnerman".into(),
            ..Default::default()
        };
        let from_protobuf: SongObserved =
            decode(PayloadFormat::Protobuf, &song.encode_to_vec()).unwrap();
        let from_json: SongObserved = decode(
            PayloadFormat::Json,
            br#"{"stationId":"radio-1","artist":"Nina Simone","title":"Sinnerman"}"#,
        )
        .unwrap();
        assert_eq!(from_protobuf, song);
        assert_eq!(from_json, song);
        assert!(to_json(&song).contains("\"stationId\":\"radio-1\""));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(matches!(
            decode::<SongObserved>(PayloadFormat::Protobuf, &[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf { .. })
        ));
        assert!(matches!(
            decode::<SongObserved>(PayloadFormat::Json, b"{\"stationId\": 7"),
            Err(DecodeError::Json { .. })
        ));
        assert!(matches!(
            decode::<SongObserved>(PayloadFormat::Json, b"{\"noSuchField\": 1}"),
            Err(DecodeError::Json { .. })
        ));
    }

    #[test]
    fn content_type_selects_the_format() {
        assert_eq!(
            PayloadFormat::from_content_type(Some("application/json; charset=utf-8")),
            PayloadFormat::Json
        );
        assert_eq!(
            PayloadFormat::from_content_type(None),
            PayloadFormat::Protobuf
        );
    }

    /// The decoder this module used before `json_wire`: prost-reflect's dynamic messages. The
    /// JSON transcoder must agree with it on every input it accepts or refuses.
    fn decode_dynamic<M: InboxMessage>(payload: &[u8]) -> Result<M, String> {
        let descriptor = POOL.get_message_by_name(&M::full_name()).unwrap();
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        let message = DynamicMessage::deserialize(descriptor, &mut deserializer)
            .map_err(|error| error.to_string())?;
        deserializer.end().map_err(|error| error.to_string())?;
        message
            .transcode_to::<M>()
            .map_err(|error| error.to_string())
    }

    fn agree<M: InboxMessage + std::fmt::Debug + PartialEq>(payload: &str) {
        let old = decode_dynamic::<M>(payload.as_bytes());
        let new = decode::<M>(PayloadFormat::Json, payload.as_bytes());
        match (&old, &new) {
            (Ok(old), Ok(new)) => assert_eq!(old, new, "{payload}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{payload}: prost-reflect {old:?}, json_wire {new:?}"),
        }
    }

    #[test]
    fn json_is_read_as_prost_reflect_reads_it() {
        use crate::v1::{ContentUpdate, EntitlementsUpdate, Heartbeat, PlayerCommand};
        for payload in [
            r#"{"stationId":"radio-1","artist":"A","title":"T","observedAt":"2026-11-30T07:00:00.250Z"}"#,
            r#"{"station_id":"radio-1","raw":"A - T","source":"x","observed_at":"2026-11-30T09:00:00+02:00"}"#,
            r#"{"stationId":null,"artist":"A"}"#,
            r#"{"observedAt":"yesterday"}"#,
            r#"{"observedAt":"0000-01-01T00:00:00Z"}"#,
            r#"{"observedAt":"0001-01-01T00:00:00Z"}"#,
            r#"{"observedAt":"9999-12-31T23:59:59.999999999Z"}"#,
            r#"{"observedAt":"2026-11-30t07:00:00z"}"#,
            r#"{"observedAt":"2026-11-30 07:00:00Z"}"#,
            r#"{"observedAt":"2026-13-01T00:00:00Z"}"#,
            r#"{"observedAt":"2026-02-30T00:00:00Z"}"#,
            r#"{"observedAt":"2026-11-30T07:00:00.1234567891Z"}"#,
            r#"{"observedAt":"2026-11-30T24:00:00Z"}"#,
            r#"{"observedAt":"2026-11-30T07:00:60Z"}"#,
            r#"{"observedAt":"2026-11-30T07:00:00+25:00"}"#,
            r#"{"observedAt":"2026-11-30T07:00:00-00:00"}"#,
            r#"{"observedAt":"2026-11-30T07:00Z"}"#,
            r#"{"observedAt":"+2026-11-30T07:00:00Z"}"#,
            r#"{"observedAt":7}"#,
            r#"{"stationId":7}"#,
            r#"{"stationId":"a","stationId":"b"}"#,
            r#"{"unknown":1}"#,
            r#"[]"#,
            r#"{}"#,
            r#"{"stationId":"a"} trailing"#,
            r#"{"stationId":"\u00e9\n"}"#,
        ] {
            agree::<SongObserved>(payload);
        }
        for payload in [
            r#"{"userId":"ann","start":{"playlistId":"p","tracks":[{"trackId":"t1","artist":"N"},{"trackId":"t2"}],"seed":"18446744073709551615","restart":true}}"#,
            r#"{"user_id":"ann","start":{"playlist_id":"p","tracks":[],"seed":7}}"#,
            r#"{"userId":"ann","start":{"playlistId":"p","seed":-1}}"#,
            r#"{"userId":"ann","start":{"playlistId":"p","seed":1.5}}"#,
            r#"{"userId":"ann","start":{"playlistId":"p","seed":"12"}}"#,
            r#"{"userId":"ann","start":{"playlistId":"p","seed":null,"tracks":null}}"#,
            r#"{"userId":"ann","next":{"playlistId":"p"}}"#,
            r#"{"userId":"ann","skip":{}}"#,
            r#"{"userId":"ann","start":{"tracks":[{}, {}, {"trackId":""}]}}"#,
            r#"{"userId":"ann","start":{"tracks":[1]}}"#,
            r#"{"userId":"ann","start":{"tracks":{"trackId":"t"}}}"#,
            r#"{"userId":"ann","start":{"restart":"true"}}"#,
            r#"{"userId":"ann","start":[]}"#,
        ] {
            agree::<PlayerCommand>(payload);
        }
        for payload in [
            r#"{"userId":"ann","deviceId":"tv","playoutId":"p1","contentId":"c","kind":"HEARTBEAT_KIND_BEAT","positionMs":"60000"}"#,
            r#"{"userId":"ann","kind":2,"positionMs":60000}"#,
            r#"{"kind":"NO_SUCH_KIND"}"#,
            r#"{"positionMs":-1}"#,
            r#"{"positionMs":1e3}"#,
            r#"{"positionMs":"1e3"}"#,
        ] {
            agree::<Heartbeat>(payload);
        }
        // One difference, on purpose: prost-reflect saturates a number beyond the field's
        // range (2^64 read as u64::MAX); it is refused here, as proto3 JSON asks.
        assert!(
            decode::<Heartbeat>(
                PayloadFormat::Json,
                br#"{"positionMs":18446744073709551616}"#
            )
            .is_err()
        );
        for payload in [
            r#"{"userId":"ann","entitlements":[{"tag":"premium","validUntil":"2027-01-01T00:00:00Z"},{"tag":"kids"}],"concurrencyLimit":3}"#,
            r#"{"userId":"ann","concurrencyLimit":4294967296}"#,
            r#"{"userId":"ann","concurrencyLimit":"3"}"#,
            r#"{"entitlements":[{"validUntil":"1970-01-01T00:00:00Z"}]}"#,
            r#"{"entitlements":[{"validUntil":"0001-01-01T00:00:00Z"}]}"#,
        ] {
            agree::<EntitlementsUpdate>(payload);
        }
        for payload in [
            r#"{"contentId":"film-1","tags":["premium","kids"]}"#,
            r#"{"content_id":"film-1","tags":[]}"#,
            r#"{"tags":[null]}"#,
            r#"{"tags":[1]}"#,
            r#"{"tags":"premium"}"#,
        ] {
            agree::<ContentUpdate>(payload);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_player_command_survives_json(
            user in "[a-z0-9_-]{0,8}",
            playlist in "[a-z0-9]{0,8}",
            tracks in proptest::collection::vec(("[a-z0-9]{0,6}", "\\PC{0,6}"), 0..20),
            seed in proptest::option::of(proptest::num::u64::ANY),
            restart in proptest::bool::ANY,
        ) {
            use crate::v1::{PlayerCommand, PlaylistTrack, StartPlaylist, player_command::Command};
            let command = PlayerCommand {
                user_id: user,
                command: Some(Command::Start(StartPlaylist {
                    playlist_id: playlist,
                    tracks: tracks
                        .into_iter()
                        .map(|(track_id, artist)| PlaylistTrack { track_id, artist })
                        .collect(),
                    seed,
                    restart,
                })),
            };
            let json = to_json(&command);
            let decoded: PlayerCommand = decode(PayloadFormat::Json, json.as_bytes()).unwrap();
            proptest::prop_assert_eq!(&decoded, &command);
            let decoded: PlayerCommand =
                decode(PayloadFormat::Protobuf, &command.encode_to_vec()).unwrap();
            proptest::prop_assert_eq!(decoded, command);
        }
    }

    /// Valid payloads of every inbox message, for mutations.
    const JSON_SEEDS: [&str; 5] = [
        r#"{"stationId":"radio-1","artist":"A","title":"T","observedAt":"2026-11-30T07:00:00.250Z"}"#,
        r#"{"userId":"ann","start":{"playlistId":"p","tracks":[{"trackId":"t1","artist":"N"},{"trackId":"t2"}],"seed":"7","restart":true}}"#,
        r#"{"userId":"ann","deviceId":"tv","playoutId":"p1","contentId":"c","kind":"HEARTBEAT_KIND_BEAT","positionMs":"60000"}"#,
        r#"{"userId":"ann","entitlements":[{"tag":"premium","validUntil":"2027-01-01T00:00:00Z"}],"concurrencyLimit":3}"#,
        r#"{"contentId":"film-1","tags":["premium","kids"]}"#,
    ];

    /// Pieces a mutation inserts: JSON's other shapes of a value, and timestamps' characters.
    const JSON_PIECES: [&str; 20] = [
        "null", "1", "-1", "1.5", "1e3", "\"x\"", "\"1\"", "[", "]", "{", "}", ",", "0", "9", "T",
        "Z", ":", "-", ".", "+",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn mutated_json_is_read_as_prost_reflect_reads_it(
            seed in 0..JSON_SEEDS.len(),
            edits in proptest::collection::vec((0usize..200, 0usize..JSON_PIECES.len(), proptest::bool::ANY), 1..4),
        ) {
            use crate::v1::{ContentUpdate, EntitlementsUpdate, Heartbeat, PlayerCommand};
            let mut payload = JSON_SEEDS[seed].to_owned();
            for (at, piece, delete) in edits {
                let at = at % (payload.len() + 1);
                if delete && at < payload.len() {
                    payload.remove(at);
                } else {
                    payload.insert_str(at, JSON_PIECES[piece]);
                }
            }
            match seed {
                0 => agree::<SongObserved>(&payload),
                1 => agree::<PlayerCommand>(&payload),
                2 => agree::<Heartbeat>(&payload),
                3 => agree::<EntitlementsUpdate>(&payload),
                _ => agree::<ContentUpdate>(&payload),
            }
        }
    }

    #[test]
    fn lists_denser_than_the_bound_are_refused_before_decoding() {
        use crate::v1::{PlayerCommand, PlaylistTrack, StartPlaylist, player_command::Command};
        let playlist = |tracks: usize, id: &str| PlayerCommand {
            user_id: "ann".into(),
            command: Some(Command::Start(StartPlaylist {
                playlist_id: "p".into(),
                tracks: (0..tracks)
                    .map(|_| PlaylistTrack {
                        track_id: id.into(),
                        artist: String::new(),
                    })
                    .collect(),
                ..StartPlaylist::default()
            })),
        };
        // The documented maximum with the shortest valid ids decodes ...
        let largest = playlist(5_000, "t");
        let decoded: PlayerCommand =
            decode(PayloadFormat::Protobuf, &largest.encode_to_vec()).unwrap();
        assert_eq!(decoded, largest);
        let Some(Command::Start(start)) = &decoded.command else {
            panic!("a start")
        };
        assert_eq!(
            start.tracks.capacity(),
            5_000,
            "exactly the room the tracks take"
        );
        // ... and as many empty tracks (2 bytes each, 48 decoded) are refused, as JSON too.
        let empty = playlist(5_000, "");
        let refused = decode::<PlayerCommand>(PayloadFormat::Protobuf, &empty.encode_to_vec());
        assert!(
            matches!(
                refused,
                Err(DecodeError::TooDense {
                    elements: 5_000,
                    ..
                })
            ),
            "{refused:?}"
        );
        let json = format!(
            r#"{{"userId":"ann","start":{{"tracks":[{}{{}}]}}}}"#,
            "{},".repeat(4_999)
        );
        let refused = decode::<PlayerCommand>(PayloadFormat::Json, json.as_bytes());
        assert!(
            matches!(refused, Err(DecodeError::TooDense { .. })),
            "{refused:?}"
        );
    }

    fn renders_alike<M: InboxMessage + std::fmt::Debug + Clone>(message: M) {
        assert_eq!(
            inbox_json(message.clone()),
            to_json(&message),
            "{message:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn inbox_json_renders_as_prost_reflect_does(
            text in "\\PC{0,6}",
            id in "[a-z0-9]{0,4}",
            number in proptest::num::u64::ANY,
            small in proptest::num::u32::ANY,
            flag in proptest::bool::ANY,
            kind in 0i32..5,
            seconds in -62_135_596_800i64..253_402_300_799,
            nanos in proptest::prop_oneof![proptest::strategy::Just(0), proptest::strategy::Just(5_000_000), proptest::strategy::Just(123_456), 0i32..1_000_000_000],
            tracks in proptest::collection::vec(("[a-z0-9]{0,4}", "\\PC{0,3}"), 0..5),
            tags in proptest::collection::vec("[a-z]{0,4}", 0..5),
            which in 0..4,
        ) {
            use crate::v1::{
                ContentUpdate, Entitlement, EntitlementsUpdate, Heartbeat, NextTrack,
                PlayerCommand, PlaylistTrack, SkipTrack, StartPlaylist, player_command::Command,
            };
            let at = prost_types::Timestamp { seconds, nanos };
            renders_alike(SongObserved {
                station_id: id.clone(),
                artist: text.clone(),
                observed_at: flag.then_some(at),
                ..SongObserved::default()
            });
            let command = match which {
                0 => None,
                1 => Some(Command::Start(StartPlaylist {
                    playlist_id: id.clone(),
                    tracks: tracks
                        .iter()
                        .map(|(track_id, artist)| PlaylistTrack {
                            track_id: track_id.clone(),
                            artist: artist.clone(),
                        })
                        .collect(),
                    seed: flag.then_some(number),
                    restart: !flag,
                })),
                2 => Some(Command::Next(NextTrack { playlist_id: id.clone() })),
                _ => Some(Command::Skip(SkipTrack::default())),
            };
            renders_alike(PlayerCommand { user_id: id.clone(), command });
            renders_alike(Heartbeat {
                user_id: id.clone(),
                kind,
                position_ms: number,
                ..Heartbeat::default()
            });
            renders_alike(EntitlementsUpdate {
                user_id: id.clone(),
                entitlements: tags
                    .iter()
                    .map(|tag| Entitlement {
                        tag: tag.clone(),
                        valid_until: flag.then_some(at),
                    })
                    .collect(),
                concurrency_limit: small,
            });
            renders_alike(ContentUpdate { content_id: id, tags });
        }
    }
}
