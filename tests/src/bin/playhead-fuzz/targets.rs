//! The decoders of outside input, each with the valid inputs its mutations start from.

use async_nats::HeaderMap;
use playhead_actors::domain::enrichment::{coverart, musicbrainz};
use playhead_actors::domain::show::{ImportFormat, LineParser, LineSplitter, fingerprint};
use playhead_actors::ingest::screen::{screen_catalog, screen_import, screen_station, screen_user};
use playhead_actors::storage::show_store::ShowCursor;
use playhead_client::query::SessionCursor;
use playhead_gateway::console::dead_letters::{PayloadKind, preview, replay_target};
use playhead_proto::codec::{PayloadFormat, to_json};
use playhead_proto::headers::{CONTENT_TYPE, JSON_CONTENT_TYPE};
use playhead_proto::subjects::{ReplySubject, UserKind};
use playhead_proto::v1::{
    ContentUpdate, EnrichSong, Entitlement, EntitlementsUpdate, Heartbeat, HeartbeatKind,
    ImportRequest, NextTrack, PlayerCommand, PlaylistTrack, SkipTrack, SongEnrichment,
    SongObserved, StartPlaylist, player_command,
};
use prost::Message;

/// The node's limit on an inbox message (its default `ingest.max_message_bytes`).
const MAX_MESSAGE_BYTES: usize = playhead_client::settings::DEFAULT_MAX_MESSAGE_BYTES;

pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub run: fn(&[u8]),
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
    headers
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn songs() -> Vec<SongObserved> {
    vec![
        SongObserved {
            station_id: "radio-1".into(),
            artist: "Nina Simone".into(),
            title: "Sinnerman".into(),
            source: "poller-1".into(),
            observed_at: Some(timestamp(1_700_000_000)),
            ..Default::default()
        },
        SongObserved {
            raw: "MILES DAVIS - So What (live)".into(),
            ..Default::default()
        },
    ]
}

fn enrichment_answers() -> Vec<EnrichSong> {
    vec![EnrichSong {
        station_id: "radio-1".into(),
        play_seq: 42,
        song_key: "nina simone\u{1f}sinnerman".into(),
        enrichment: Some(SongEnrichment {
            recording_mbid: "f3a8b9c2-6d1e-4a7b-9c0d-2e5f8a1b3c4d".into(),
            title: "Sinnerman".into(),
            artist: "Nina Simone".into(),
            release_title: "Pastel Blues".into(),
            release_year: 1965,
            cover_url: "https://coverartarchive.org/release/x/1-500.jpg".into(),
            enriched_at: Some(timestamp(1_790_000_000)),
            ..Default::default()
        }),
    }]
}

fn player_commands() -> Vec<PlayerCommand> {
    use player_command::Command;
    let tracks = (0..12)
        .map(|index| PlaylistTrack {
            track_id: format!("t{index}"),
            artist: "Nina".into(),
        })
        .collect();
    // A long playlist of the shortest ids: the densest valid list, for the decoders' memory.
    let long = (0..2_000)
        .map(|index| PlaylistTrack {
            track_id: char::from(b'a' + (index % 26) as u8).to_string(),
            artist: String::new(),
        })
        .collect();
    vec![
        PlayerCommand {
            user_id: "ann".into(),
            command: Some(Command::Start(StartPlaylist {
                playlist_id: "road-trip".into(),
                tracks,
                seed: Some(7),
                restart: true,
            })),
        },
        PlayerCommand {
            user_id: "ann".into(),
            command: Some(Command::Start(StartPlaylist {
                playlist_id: "long".into(),
                tracks: long,
                seed: None,
                restart: false,
            })),
        },
        PlayerCommand {
            user_id: "ann".into(),
            command: Some(Command::Next(NextTrack {
                playlist_id: "road-trip".into(),
            })),
        },
        PlayerCommand {
            user_id: String::new(),
            command: Some(Command::Skip(SkipTrack {
                playlist_id: "road-trip".into(),
            })),
        },
    ]
}

fn heartbeats() -> Vec<Heartbeat> {
    [
        HeartbeatKind::Start,
        HeartbeatKind::Beat,
        HeartbeatKind::End,
    ]
    .into_iter()
    .map(|kind| Heartbeat {
        user_id: "ann".into(),
        device_id: "tv".into(),
        playout_id: "p1".into(),
        content_id: "film-1".into(),
        kind: kind as i32,
        position_ms: 60_000,
    })
    .collect()
}

fn entitlements() -> Vec<EntitlementsUpdate> {
    vec![EntitlementsUpdate {
        user_id: "ann".into(),
        entitlements: vec![
            Entitlement {
                tag: "premium".into(),
                valid_until: Some(timestamp(1_900_000_000)),
            },
            Entitlement {
                tag: "sports".into(),
                valid_until: Some(timestamp(1_800_000_000)),
            },
        ],
        concurrency_limit: 3,
    }]
}

fn contents() -> Vec<ContentUpdate> {
    vec![ContentUpdate {
        content_id: "film-1".into(),
        tags: vec!["premium".into(), "drama".into()],
    }]
}

fn protobuf<M: Message>(messages: Vec<M>) -> Vec<Vec<u8>> {
    messages.iter().map(Message::encode_to_vec).collect()
}

fn json<M: Message + prost::Name + std::fmt::Debug>(messages: Vec<M>) -> Vec<Vec<u8>> {
    messages
        .iter()
        .map(|message| to_json(message).into_bytes())
        .collect()
}

const STATION: &str = "playhead-in.station.3.radio-1.song";
const ENRICHMENT: &str = "playhead-in.station.3.radio-1.enrichment";
const CATALOG: &str = "playhead-in.catalog.5.film-1.content";

fn user_subject(kind: UserKind) -> String {
    format!("playhead-in.user.9.ann.{}", kind.token())
}

fn user(kind: UserKind, headers: Option<&HeaderMap>, input: &[u8]) {
    let _ = screen_user(&user_subject(kind), headers, input, MAX_MESSAGE_BYTES);
}

const IMPORT: &str = "playhead-in.import.0.scraper-1.request";

fn import_requests() -> Vec<ImportRequest> {
    vec![ImportRequest {
        source: "scraper-1".into(),
        import_id: "batch-2026-11-30".into(),
        object_name: "scraper-1/batch-2026-11-30".into(),
    }]
}

fn import_batches() -> Vec<Vec<u8>> {
    let json = (0..20)
        .map(|index| {
            format!(
                r#"{{"artist":"Artist {index}","venue":"Hall","city":"Oslo","country":"NO","starts_at":"2027-0{}-01T20:00:00+01:00","url":"https://t.example/{index}","source_event_id":{index}}}"#,
                1 + index % 9
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let csv = "artist,venue,city,country,starts_at,url\n\
               \"Nina, Simone\",\"The \"\"Hall\"\"\",Oslo,NO,2027-01-01T20:00:00Z,https://t.example/1\n\
               Kent,Debaser,Stockholm,SE,2027-02-01T20:00:00+01:00,https://t.example/2\n";
    vec![json.into_bytes(), csv.as_bytes().to_vec()]
}

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "station-protobuf",
            about: "the station inbox's screening of a protobuf SongObserved",
            seeds: || protobuf(songs()),
            run: |input| {
                let _ = screen_station(STATION, None, input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "station-json",
            about: "the station inbox's screening of a JSON SongObserved",
            seeds: || json(songs()),
            run: |input| {
                let _ = screen_station(STATION, Some(&json_headers()), input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "enrichment-answer-protobuf",
            about: "the station inbox's screening of the enrichment service's EnrichSong",
            seeds: || protobuf(enrichment_answers()),
            run: |input| {
                let _ = screen_station(ENRICHMENT, None, input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "musicbrainz-search",
            about: "the choice of a recording and release in a MusicBrainz recording search answer",
            seeds: || {
                vec![
                    include_bytes!(
                        "../../../fixtures/enrichment/musicbrainz-recording-search.json"
                    )
                    .to_vec(),
                    include_bytes!(
                        "../../../fixtures/enrichment/musicbrainz-recording-search-empty.json"
                    )
                    .to_vec(),
                ]
            },
            run: |input| {
                let _ = musicbrainz::choose(input, 90);
            },
        },
        Target {
            name: "coverart-release",
            about: "the front cover in a Cover Art Archive release listing",
            seeds: || {
                vec![include_bytes!("../../../fixtures/enrichment/coverart-release.json").to_vec()]
            },
            run: |input| {
                let _ = coverart::front_cover(input);
            },
        },
        Target {
            name: "player-protobuf",
            about: "the user inbox's screening of a protobuf PlayerCommand",
            seeds: || protobuf(player_commands()),
            run: |input| user(UserKind::Player, None, input),
        },
        Target {
            name: "player-json",
            about: "the user inbox's screening of a JSON PlayerCommand",
            seeds: || json(player_commands()),
            run: |input| user(UserKind::Player, Some(&json_headers()), input),
        },
        Target {
            name: "heartbeat-protobuf",
            about: "the user inbox's screening of a protobuf Heartbeat",
            seeds: || protobuf(heartbeats()),
            run: |input| user(UserKind::Heartbeat, None, input),
        },
        Target {
            name: "heartbeat-json",
            about: "the user inbox's screening of a JSON Heartbeat",
            seeds: || json(heartbeats()),
            run: |input| user(UserKind::Heartbeat, Some(&json_headers()), input),
        },
        Target {
            name: "entitlements-protobuf",
            about: "the user inbox's screening of a protobuf EntitlementsUpdate",
            seeds: || protobuf(entitlements()),
            run: |input| user(UserKind::Entitlements, None, input),
        },
        Target {
            name: "entitlements-json",
            about: "the user inbox's screening of a JSON EntitlementsUpdate",
            seeds: || json(entitlements()),
            run: |input| user(UserKind::Entitlements, Some(&json_headers()), input),
        },
        Target {
            name: "catalog-protobuf",
            about: "the catalog inbox's screening of a protobuf ContentUpdate",
            seeds: || protobuf(contents()),
            run: |input| {
                let _ = screen_catalog(CATALOG, None, input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "catalog-json",
            about: "the catalog inbox's screening of a JSON ContentUpdate",
            seeds: || json(contents()),
            run: |input| {
                let _ = screen_catalog(CATALOG, Some(&json_headers()), input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "import-request-protobuf",
            about: "the import inbox's screening of a protobuf ImportRequest",
            seeds: || protobuf(import_requests()),
            run: |input| {
                let _ = screen_import(IMPORT, None, input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "import-request-json",
            about: "the import inbox's screening of a JSON ImportRequest",
            seeds: || json(import_requests()),
            run: |input| {
                let _ = screen_import(IMPORT, Some(&json_headers()), input, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "import-lines",
            about: "an import batch split into lines and parsed as JSON Lines and as CSV",
            seeds: import_batches,
            run: |input| {
                for format in [ImportFormat::JsonLines, ImportFormat::Csv] {
                    let mut parser = LineParser::new(format);
                    let mut splitter = LineSplitter::new(4096);
                    let mut parse = |line: playhead_actors::domain::show::Line<'_>| {
                        if let Ok(playhead_actors::domain::show::ParsedLine::Show(show)) =
                            parser.parse(&line)
                        {
                            let _ = fingerprint("s", &show);
                        }
                    };
                    for chunk in input.chunks(777) {
                        splitter.push(chunk, &mut parse);
                    }
                    splitter.finish(&mut parse);
                }
            },
        },
        Target {
            name: "show-page-token",
            about: "ListShows' page_token",
            seeds: || {
                let token = ShowCursor {
                    starts_at_ms: 1_800_000_000_000,
                    fingerprint: [7; 16],
                }
                .token();
                vec![token.into_bytes()]
            },
            run: |input| {
                let _ = ShowCursor::parse(&text(input));
            },
        },
        Target {
            name: "stored-subject",
            about: "screening's reading of the stored subject (partition, id, kind) of each inbox",
            seeds: || {
                [STATION, CATALOG, "playhead-in.user.0.a.player"]
                    .into_iter()
                    .map(|subject| subject.as_bytes().to_vec())
                    .chain([user_subject(UserKind::Heartbeat).into_bytes()])
                    .collect()
            },
            run: |input| {
                let subject = text(input);
                let song = songs()[0].encode_to_vec();
                let _ = screen_station(&subject, None, &song, MAX_MESSAGE_BYTES);
                let _ = screen_user(&subject, None, &song, MAX_MESSAGE_BYTES);
                let _ = screen_catalog(&subject, None, &song, MAX_MESSAGE_BYTES);
            },
        },
        Target {
            name: "reply-subject",
            about: "the Playhead-Reply-To header's subject",
            seeds: || {
                [
                    "_INBOX.abc.def",
                    "playhead.reply.gw-1.42",
                    "$JS.API.INFO",
                    "a.b",
                ]
                .into_iter()
                .map(|subject| subject.as_bytes().to_vec())
                .collect()
            },
            run: |input| {
                let _ = ReplySubject::parse(&text(input));
            },
        },
        Target {
            name: "session-page-token",
            about: "ListSessions' page_token",
            seeds: || vec![b"1700000000000.road-trip".to_vec(), b"0.a".to_vec()],
            run: |input| {
                let _ = SessionCursor::parse(&text(input));
            },
        },
        Target {
            name: "console-dead-letter",
            about: "the console's preview of a dead letter's payload and its replay subject",
            seeds: || {
                let mut seeds = json(songs());
                seeds.extend(protobuf(player_commands()));
                seeds.extend(json(player_commands()));
                seeds.push(b"playhead.user.ann.heartbeat".to_vec());
                seeds
            },
            run: |input| {
                for kind in [
                    PayloadKind::Song,
                    PayloadKind::User(UserKind::Player),
                    PayloadKind::User(UserKind::Heartbeat),
                    PayloadKind::User(UserKind::Entitlements),
                    PayloadKind::Content,
                ] {
                    for format in [PayloadFormat::Json, PayloadFormat::Protobuf] {
                        let _ = preview(Some(kind), format, input, false);
                    }
                }
                let _ = preview(None, PayloadFormat::Protobuf, input, true);
                let _ = replay_target(&text(input));
            },
        },
    ]
}
