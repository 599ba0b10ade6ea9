//! Screening of inbox messages: everything that makes a message unusable is found here,
//! before any actor sees it, and becomes a [`DeadLetter`] with a reason.

use async_nats::HeaderMap;
use playhead_proto::codec::{self, PayloadFormat};
use playhead_proto::headers::{CONTENT_TYPE, REPLY_TO};
use playhead_proto::ids::{ContentId, ImportId, SourceId, StationId, Tag, UserId};
use playhead_proto::subjects::{Inbox, ReplySubject, StationInboxKind, StoredSubject, UserKind};
use playhead_proto::v1;

use super::commands;
use crate::domain::catalog::CatalogCommand;
use crate::domain::playout::PlayoutCommand;
use crate::domain::station::StationCommand;
use crate::domain::user::UserCommand;
use crate::wire;

/// Why a message went to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    Oversize,
    BadSubject,
    InvalidId,
    Undecodable,
    IdMismatch,
    /// Decodable, but not a usable command (e.g. none of its alternatives set).
    InvalidCommand,
    /// `Playhead-Reply-To` is not a subject a decision may be published to.
    InvalidReplyTo,
    /// Well-formed, but the decider refused it.
    Rejected,
    /// A decider (or an entity actor) panicked on it.
    Panic,
    /// It failed `ingest.max_attempts` times for a reason that does not go away.
    Poison,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 10] = [
        DeadLetterReason::Oversize,
        DeadLetterReason::BadSubject,
        DeadLetterReason::InvalidId,
        DeadLetterReason::Undecodable,
        DeadLetterReason::IdMismatch,
        DeadLetterReason::InvalidCommand,
        DeadLetterReason::InvalidReplyTo,
        DeadLetterReason::Rejected,
        DeadLetterReason::Panic,
        DeadLetterReason::Poison,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Oversize => "oversize",
            DeadLetterReason::BadSubject => "bad_subject",
            DeadLetterReason::InvalidId => "invalid_id",
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::IdMismatch => "id_mismatch",
            DeadLetterReason::InvalidCommand => "invalid_command",
            DeadLetterReason::InvalidReplyTo => "invalid_reply_to",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Panic => "panic",
            DeadLetterReason::Poison => "poison",
        }
    }
}

/// A usable inbox message: the entity it addresses, its command, and where the answer goes
/// when the publisher asked for one (`Playhead-Reply-To`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened<I, C> {
    pub id: I,
    pub command: C,
    pub reply_to: Option<ReplySubject>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: DeadLetterReason,
    pub detail: String,
}

/// An id that fails validation dead-letters its message as `invalid_id`.
impl From<playhead_client::command::ValidationError> for DeadLetter {
    fn from(error: playhead_client::command::ValidationError) -> Self {
        use playhead_client::command::ValidationError;
        match error {
            ValidationError::InvalidId(error) => error.into(),
            error @ ValidationError::TooLarge { .. } => {
                DeadLetter::new(DeadLetterReason::Oversize, error.to_string())
            }
            error @ (ValidationError::InvalidCommand(_) | ValidationError::Tracks(_)) => {
                DeadLetter::new(DeadLetterReason::InvalidCommand, error.to_string())
            }
        }
    }
}

impl From<playhead_proto::ids::IdError> for DeadLetter {
    fn from(error: playhead_proto::ids::IdError) -> Self {
        DeadLetter::new(DeadLetterReason::InvalidId, error.to_string())
    }
}

impl DeadLetter {
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The checks every inbox shares: size first (nothing else is read of an oversize message),
/// then the stored subject's shape.
fn stored_subject<'a>(
    inbox: Inbox,
    subject: &'a str,
    payload: &[u8],
    max_message_bytes: usize,
) -> Result<StoredSubject<'a>, DeadLetter> {
    if payload.len() > max_message_bytes {
        return Err(DeadLetter::new(
            DeadLetterReason::Oversize,
            format!(
                "payload is {} bytes; the limit is {max_message_bytes}",
                payload.len()
            ),
        ));
    }
    inbox
        .parse_stored(subject)
        .map_err(|error| DeadLetter::new(DeadLetterReason::BadSubject, error.to_string()))
}

fn decode<M>(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<M, DeadLetter>
where
    M: codec::InboxMessage,
{
    let format = PayloadFormat::from_content_type(
        headers
            .and_then(|headers| headers.get(CONTENT_TYPE))
            .map(|value| value.as_str()),
    );
    codec::decode(format, payload)
        .map_err(|error| DeadLetter::new(DeadLetterReason::Undecodable, error.to_string()))
}

/// The `Playhead-Reply-To` header, if any, as a subject a decision may be published to.
fn reply_to(headers: Option<&HeaderMap>) -> Result<Option<ReplySubject>, DeadLetter> {
    headers
        .and_then(|headers| headers.get(REPLY_TO))
        .map(|value| ReplySubject::parse(value.as_str()))
        .transpose()
        .map_err(|error| DeadLetter::new(DeadLetterReason::InvalidReplyTo, error.to_string()))
}

/// A payload naming another entity than its subject is refused (an empty id means "the
/// subject's").
fn ensure_same_id(kind: &str, in_payload: &str, in_subject: &str) -> Result<(), DeadLetter> {
    if in_payload.is_empty() || in_payload == in_subject {
        return Ok(());
    }
    Err(DeadLetter::new(
        DeadLetterReason::IdMismatch,
        format!("payload {kind} {in_payload:?} differs from the subject's {in_subject:?}"),
    ))
}

/// Screens a stored station-inbox message into the station it addresses and its command.
pub fn screen_station(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_message_bytes: usize,
) -> Result<Screened<StationId, StationCommand>, DeadLetter> {
    let stored = stored_subject(Inbox::Station, subject, payload, max_message_bytes)?;
    let station = StationId::parse(stored.entity_token)?;
    let Some(kind) = StationInboxKind::from_token(stored.kind_token) else {
        let known: Vec<&str> = StationInboxKind::ALL
            .iter()
            .map(|kind| kind.token())
            .collect();
        return Err(DeadLetter::new(
            DeadLetterReason::BadSubject,
            format!(
                "unknown station message kind {:?}; expected one of: {}",
                stored.kind_token,
                known.join(", ")
            ),
        ));
    };
    let command = match kind {
        StationInboxKind::Song => {
            let observed: v1::SongObserved = decode(headers, payload)?;
            ensure_same_id(StationId::KIND, &observed.station_id, station.as_str())?;
            wire::observe_command(observed)
        }
        StationInboxKind::Enrichment => {
            let answer: v1::EnrichSong = decode(headers, payload)?;
            ensure_same_id(StationId::KIND, &answer.station_id, station.as_str())?;
            commands::enrich_command(answer)?
        }
    };
    // A station answers nothing: a reply subject is ignored, as it was.
    Ok(Screened {
        id: station,
        command,
        reply_to: None,
    })
}

/// Screens a stored user-inbox message into the user it addresses and its command.
pub fn screen_user(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_message_bytes: usize,
) -> Result<Screened<UserId, UserCommand>, DeadLetter> {
    let stored = stored_subject(Inbox::User, subject, payload, max_message_bytes)?;
    let user = UserId::parse(stored.entity_token)?;
    let Some(kind) = UserKind::from_token(stored.kind_token) else {
        let known: Vec<&str> = UserKind::ALL.iter().map(|kind| kind.token()).collect();
        return Err(DeadLetter::new(
            DeadLetterReason::BadSubject,
            format!(
                "unknown user message kind {:?}; expected one of: {}",
                stored.kind_token,
                known.join(", ")
            ),
        ));
    };
    let reply_to = reply_to(headers)?;
    let command = match kind {
        UserKind::Player => {
            let command: v1::PlayerCommand = decode(headers, payload)?;
            ensure_same_id(UserId::KIND, &command.user_id, user.as_str())?;
            let (playlist, command) = commands::player_command(&user, command)?;
            UserCommand::Player { playlist, command }
        }
        UserKind::Heartbeat => {
            let heartbeat: v1::Heartbeat = decode(headers, payload)?;
            ensure_same_id(UserId::KIND, &heartbeat.user_id, user.as_str())?;
            UserCommand::Playout(PlayoutCommand::Heartbeat(commands::heartbeat_command(
                heartbeat,
            )?))
        }
        UserKind::Entitlements => {
            let update: v1::EntitlementsUpdate = decode(headers, payload)?;
            ensure_same_id(UserId::KIND, &update.user_id, user.as_str())?;
            UserCommand::Playout(PlayoutCommand::UpdateEntitlements(
                commands::entitlements_update(update)?,
            ))
        }
    };
    Ok(Screened {
        id: user,
        command,
        reply_to,
    })
}

/// Screens a stored catalog-inbox message into the content item and its new tags.
pub fn screen_catalog(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_message_bytes: usize,
) -> Result<Screened<ContentId, CatalogCommand>, DeadLetter> {
    let stored = stored_subject(Inbox::Catalog, subject, payload, max_message_bytes)?;
    let content = ContentId::parse(stored.entity_token)?;
    let update: v1::ContentUpdate = decode(headers, payload)?;
    ensure_same_id(ContentId::KIND, &update.content_id, content.as_str())?;
    let tags = update
        .tags
        .into_iter()
        .map(Tag::parse)
        .collect::<Result<_, _>>()?;
    // A catalog update answers nothing: a reply subject is ignored.
    Ok(Screened {
        id: content,
        command: CatalogCommand::SetTags(tags),
        reply_to: None,
    })
}

/// A screened import request: which source's import, of which object, answered where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenedImport {
    pub source: SourceId,
    pub import_id: ImportId,
    pub object_name: String,
    pub reply_to: Option<ReplySubject>,
}

/// Screens a stored import-inbox message (`ImportRequest` on `playhead.import.{source}`), with
/// the checks the gateway makes ([`playhead_client::command::import_request`]).
pub fn screen_import(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_message_bytes: usize,
) -> Result<ScreenedImport, DeadLetter> {
    let stored = stored_subject(Inbox::Import, subject, payload, max_message_bytes)?;
    let source = SourceId::parse(stored.entity_token)?;
    let mut request: v1::ImportRequest = decode(headers, payload)?;
    ensure_same_id(SourceId::KIND, &request.source, source.as_str())?;
    request.source = source.to_string();
    let checked = playhead_client::command::import_request(&request)?;
    Ok(ScreenedImport {
        source: checked.source,
        import_id: checked.import_id,
        object_name: checked.object_name,
        reply_to: reply_to(headers)?,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::player;
    use crate::domain::station::ObserveSong;

    const SUBJECT: &str = "playhead-in.station.3.radio-1.song";

    fn song(station_id: &str) -> Vec<u8> {
        v1::SongObserved {
            station_id: station_id.into(),
            artist: "Nina Simone".into(),
            title: "Sinnerman".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn reason(result: Result<Screened<StationId, StationCommand>, DeadLetter>) -> DeadLetterReason {
        result.expect_err("should be dead-lettered").reason
    }

    const ENRICHMENT_SUBJECT: &str = "playhead-in.station.3.radio-1.enrichment";

    fn answer(play_seq: u64, enrichment: Option<v1::SongEnrichment>) -> Vec<u8> {
        v1::EnrichSong {
            station_id: "radio-1".into(),
            play_seq,
            song_key: "nina simone\u{1f}sinnerman".into(),
            enrichment,
        }
        .encode_to_vec()
    }

    fn catalogued() -> v1::SongEnrichment {
        v1::SongEnrichment {
            recording_mbid: "f3a8b9c2".into(),
            release_title: "Pastel Blues".into(),
            release_year: 1965,
            enriched_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_enrichment_answer_passes_as_the_stations_command() {
        let screened = screen_station(
            ENRICHMENT_SUBJECT,
            None,
            &answer(7, Some(catalogued())),
            4096,
        )
        .unwrap();
        let StationCommand::EnrichSong(command) = screened.command else {
            panic!("not an enrichment: {:?}", screened.command);
        };
        assert_eq!(command.play_seq, 7);
        assert_eq!(command.enrichment.release_year, 1965);
        assert_eq!(
            command.enrichment.enriched_at.as_millis(),
            1_790_000_000_000
        );
    }

    #[test]
    fn a_bad_enrichment_answer_is_dead_lettered_with_its_reason() {
        let no_time = v1::SongEnrichment {
            enriched_at: None,
            ..catalogued()
        };
        let long = v1::SongEnrichment {
            cover_url: "x".repeat(3000),
            ..catalogued()
        };
        for (payload, expected) in [
            (
                answer(0, Some(catalogued())),
                DeadLetterReason::InvalidCommand,
            ),
            (answer(7, None), DeadLetterReason::InvalidCommand),
            (answer(7, Some(no_time)), DeadLetterReason::InvalidCommand),
            (answer(7, Some(long)), DeadLetterReason::InvalidCommand),
            (b"\xff\xff".to_vec(), DeadLetterReason::Undecodable),
        ] {
            assert_eq!(
                reason(screen_station(ENRICHMENT_SUBJECT, None, &payload, 8192)),
                expected
            );
        }
        let other_station = v1::EnrichSong {
            station_id: "radio-2".into(),
            ..v1::EnrichSong::decode(answer(7, Some(catalogued())).as_slice()).unwrap()
        };
        assert_eq!(
            reason(screen_station(
                ENRICHMENT_SUBJECT,
                None,
                &other_station.encode_to_vec(),
                8192
            )),
            DeadLetterReason::IdMismatch
        );
    }

    #[test]
    fn an_unknown_station_message_kind_is_dead_lettered() {
        let dead = screen_station(
            "playhead-in.station.3.radio-1.lyrics",
            None,
            &song("radio-1"),
            1024,
        )
        .expect_err("unknown kind");
        assert_eq!(dead.reason, DeadLetterReason::BadSubject);
        assert!(dead.detail.contains("song, enrichment"), "{}", dead.detail);
    }

    #[test]
    fn a_good_observation_passes_with_its_station() {
        let screened = screen_station(SUBJECT, None, &song("radio-1"), 1024).unwrap();
        assert_eq!(screened.id.as_str(), "radio-1");
        assert_eq!(
            screened.command,
            StationCommand::ObserveSong(ObserveSong {
                artist: "Nina Simone".into(),
                title: "Sinnerman".into(),
                raw: String::new(),
                known: None,
            })
        );
    }

    #[test]
    fn the_subject_names_the_station_when_the_payload_does_not() {
        let screened = screen_station(SUBJECT, None, &song(""), 1024).unwrap();
        assert_eq!(screened.id.as_str(), "radio-1");
    }

    #[test]
    fn json_is_accepted_with_its_content_type() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "application/json");
        let payload = br#"{"stationId":"radio-1","raw":"Nina Simone - Sinnerman"}"#;
        assert!(screen_station(SUBJECT, Some(&headers), payload, 1024).is_ok());
        // Without the header the same bytes are not valid protobuf.
        assert_eq!(
            reason(screen_station(SUBJECT, None, payload, 1024)),
            DeadLetterReason::Undecodable
        );
    }

    #[test]
    fn every_kind_of_bad_input_gets_its_reason() {
        assert_eq!(
            reason(screen_station(SUBJECT, None, &song("radio-1"), 8)),
            DeadLetterReason::Oversize
        );
        assert_eq!(
            reason(screen_station(
                "playhead-in.station.3.bad#id.song",
                None,
                &song(""),
                1024
            )),
            DeadLetterReason::InvalidId
        );
        assert_eq!(
            reason(screen_station("elsewhere.song", None, &song(""), 1024)),
            DeadLetterReason::BadSubject
        );
        assert_eq!(
            reason(screen_station(SUBJECT, None, &[0xff, 0x01, 0x02], 1024)),
            DeadLetterReason::Undecodable
        );
        assert_eq!(
            reason(screen_station(SUBJECT, None, &song("radio-2"), 1024)),
            DeadLetterReason::IdMismatch
        );
    }

    const USER_SUBJECT: &str = "playhead-in.user.9.ann.player";

    fn next(user_id: &str, playlist_id: &str) -> Vec<u8> {
        v1::PlayerCommand {
            user_id: user_id.into(),
            command: Some(v1::player_command::Command::Next(v1::NextTrack {
                playlist_id: playlist_id.into(),
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_content_update_passes_with_its_tags_and_bad_tags_are_refused() {
        let update = |tags: &[&str]| {
            v1::ContentUpdate {
                content_id: "film-1".into(),
                tags: tags.iter().map(|tag| tag.to_string()).collect(),
            }
            .encode_to_vec()
        };
        let subject = "playhead-in.catalog.2.film-1.content";
        let screened =
            screen_catalog(subject, None, &update(&["premium", "sports"]), 1024).unwrap();
        let CatalogCommand::SetTags(tags) = screened.command;
        assert_eq!(screened.id.as_str(), "film-1");
        assert_eq!(tags.len(), 2);
        let refused = screen_catalog(subject, None, &update(&["pre mium"]), 1024).unwrap_err();
        assert_eq!(refused.reason, DeadLetterReason::InvalidId);
    }

    fn user_reason(result: Result<Screened<UserId, UserCommand>, DeadLetter>) -> DeadLetterReason {
        result.expect_err("should be dead-lettered").reason
    }

    #[test]
    fn a_player_command_passes_with_its_user_playlist_and_reply_subject() {
        let mut headers = HeaderMap::new();
        headers.insert(REPLY_TO, "_INBOX.app.1");
        let screened = screen_user(USER_SUBJECT, Some(&headers), &next("", "mix"), 1024).unwrap();
        assert_eq!(screened.id.as_str(), "ann");
        assert_eq!(screened.reply_to.unwrap().as_str(), "_INBOX.app.1");
        let UserCommand::Player { playlist, command } = screened.command else {
            panic!("a player command screens as one");
        };
        assert_eq!(playlist.as_str(), "mix");
        assert_eq!(command, player::PlayerCommand::Next);
    }

    #[test]
    fn every_kind_of_bad_user_input_gets_its_reason() {
        let ok = next("ann", "mix");
        assert_eq!(
            user_reason(screen_user(USER_SUBJECT, None, &next("bob", "mix"), 1024)),
            DeadLetterReason::IdMismatch
        );
        assert_eq!(
            user_reason(screen_user(USER_SUBJECT, None, &next("ann", "a.b"), 1024)),
            DeadLetterReason::InvalidId
        );
        assert_eq!(
            user_reason(screen_user("playhead-in.user.9.ann.dance", None, &ok, 1024)),
            DeadLetterReason::BadSubject
        );
        let empty = v1::PlayerCommand {
            user_id: "ann".into(),
            command: None,
        };
        assert_eq!(
            user_reason(screen_user(
                USER_SUBJECT,
                None,
                &empty.encode_to_vec(),
                1024
            )),
            DeadLetterReason::InvalidCommand
        );
        let mut headers = HeaderMap::new();
        for outside in ["playhead.user.ann.player", "$KV.PLAYHEAD_NOW_PLAYING.x"] {
            headers.insert(REPLY_TO, outside);
            assert_eq!(
                user_reason(screen_user(USER_SUBJECT, Some(&headers), &ok, 1024)),
                DeadLetterReason::InvalidReplyTo
            );
        }
        assert_eq!(
            user_reason(screen_user(USER_SUBJECT, None, &ok, 4)),
            DeadLetterReason::Oversize
        );
    }

    #[test]
    fn heartbeats_and_entitlement_updates_screen_by_their_subject_kind() {
        let heartbeat = |user_id: &str| {
            v1::Heartbeat {
                user_id: user_id.into(),
                device_id: "tv".into(),
                playout_id: "p1".into(),
                content_id: "film-1".into(),
                kind: v1::HeartbeatKind::Start as i32,
                position_ms: 0,
            }
            .encode_to_vec()
        };
        let subject = "playhead-in.user.9.ann.heartbeat";
        let screened = screen_user(subject, None, &heartbeat(""), 1024).unwrap();
        assert_eq!(screened.id.as_str(), "ann");
        let UserCommand::Playout(PlayoutCommand::Heartbeat(screened)) = screened.command else {
            panic!("a heartbeat screens as one");
        };
        assert_eq!(screened.playout_id.as_str(), "p1");
        assert_eq!(
            user_reason(screen_user(subject, None, &heartbeat("bob"), 1024)),
            DeadLetterReason::IdMismatch
        );

        let update = v1::EntitlementsUpdate {
            user_id: "ann".into(),
            entitlements: Vec::new(),
            concurrency_limit: 3,
        }
        .encode_to_vec();
        let screened =
            screen_user("playhead-in.user.9.ann.entitlements", None, &update, 1024).unwrap();
        let UserCommand::Playout(PlayoutCommand::UpdateEntitlements(update)) = screened.command
        else {
            panic!("an entitlements update screens as one");
        };
        assert_eq!(update.concurrency_limit, Some(3));
    }
}
