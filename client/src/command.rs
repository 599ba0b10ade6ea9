//! Commands: the checks a publisher's input must pass, shared by the gateway and the node, so
//! both edges refuse the same input with the same words ([`ValidationError`]).
//!
//! ```
//! use playhead_client::command::{self, TrackError, ValidationError};
//! use playhead_client::v1::{self, player_command::Command};
//!
//! let start = v1::StartPlaylist {
//!     playlist_id: "road-trip".into(),
//!     tracks: vec![
//!         v1::PlaylistTrack { track_id: "t1".into(), artist: "Nina Simone".into() },
//!         v1::PlaylistTrack { track_id: "t1".into(), artist: "Nina Simone".into() },
//!     ],
//!     ..Default::default()
//! };
//! let wire = v1::PlayerCommand { user_id: "ann".into(), command: Some(Command::Start(start)) };
//! // The playlist is named correctly...
//! assert_eq!(command::player_command(&wire).unwrap().as_str(), "road-trip");
//! // ...but a track appears twice, which the node would refuse.
//! let Some(Command::Start(start)) = &wire.command else { unreachable!() };
//! assert_eq!(
//!     command::check_tracks(&start.tracks),
//!     Err(ValidationError::Tracks(TrackError::DuplicateTrack("t1".into())))
//! );
//! ```

use std::collections::HashSet;

use playhead_proto::ids::{
    ContentId, DeviceId, IdError, ImportId, PlaylistId, PlayoutId, SourceId,
};
use playhead_proto::v1;

/// Most tracks a playlist may have. With the default message limit
/// ([`DEFAULT_MAX_MESSAGE_BYTES`](crate::settings::DEFAULT_MAX_MESSAGE_BYTES), 64 KiB) a
/// `StartPlaylist` of this many tracks fits when its track ids have up to 8 characters and no
/// artist; every command must also fit that limit ([`check_encoded_size`]).
pub const MAX_TRACKS: usize = 5_000;
/// Most entitlement tags kept per user (and asked per `CheckEntitlements`).
pub const MAX_ENTITLEMENTS: usize = 256;
/// Highest concurrency limit a user may have.
pub const MAX_CONCURRENCY_LIMIT: u32 = 16;
/// Longest object name an `ImportRequest` may name.
pub const MAX_OBJECT_NAME_BYTES: usize = 1024;

/// Why a command is refused before anything is decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The command encodes to more bytes than the nodes take in one inbox message.
    #[error(
        "the command encodes to {bytes} bytes; the nodes take at most {limit} \
         (ingest.max_message_bytes): send fewer or shorter tracks or fields"
    )]
    TooLarge { bytes: usize, limit: usize },
    /// An id is missing or malformed (the message names the field).
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The command is well-formed but not usable (the message says why).
    #[error("{0}")]
    InvalidCommand(String),
    #[error(transparent)]
    Tracks(#[from] TrackError),
}

/// What is wrong with a playlist's tracks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("the playlist has no tracks")]
    EmptyPlaylist,
    #[error("the playlist has {0} tracks; at most {MAX_TRACKS} are allowed")]
    TooManyTracks(usize),
    #[error("track {0:?} appears more than once in the playlist")]
    DuplicateTrack(String),
    #[error("track ids must not be empty")]
    EmptyTrackId,
}

/// Checks a command's encoded size against the nodes' limit, before it is encoded
/// (`prost::Message::encoded_len` counts without allocating).
///
/// ```
/// use playhead_client::command::{check_encoded_size, ValidationError};
/// assert!(check_encoded_size(65_536, 65_536).is_ok());
/// assert_eq!(
///     check_encoded_size(65_537, 65_536),
///     Err(ValidationError::TooLarge { bytes: 65_537, limit: 65_536 })
/// );
/// ```
pub fn check_encoded_size(bytes: usize, limit: usize) -> Result<(), ValidationError> {
    if bytes > limit {
        return Err(ValidationError::TooLarge { bytes, limit });
    }
    Ok(())
}

/// Checks a playlist's track ids: at least one, at most [`MAX_TRACKS`], none empty, no repeats.
pub fn check_track_ids<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> Result<(), TrackError> {
    if ids.len() == 0 {
        return Err(TrackError::EmptyPlaylist);
    }
    if ids.len() > MAX_TRACKS {
        return Err(TrackError::TooManyTracks(ids.len()));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    for id in ids {
        if id.is_empty() {
            return Err(TrackError::EmptyTrackId);
        }
        if !seen.insert(id) {
            return Err(TrackError::DuplicateTrack(id.to_owned()));
        }
    }
    Ok(())
}

/// Checks a `StartPlaylist`'s tracks as the player will.
pub fn check_tracks(tracks: &[v1::PlaylistTrack]) -> Result<(), ValidationError> {
    Ok(check_track_ids(
        tracks.iter().map(|track| track.track_id.as_str()),
    )?)
}

/// The playlist a `PlayerCommand` addresses: its id is valid and one command is set.
pub fn player_command(command: &v1::PlayerCommand) -> Result<PlaylistId, ValidationError> {
    use v1::player_command::Command;
    let playlist_id = match &command.command {
        Some(Command::Start(start)) => &start.playlist_id,
        Some(Command::Next(next)) => &next.playlist_id,
        Some(Command::Skip(skip)) => &skip.playlist_id,
        None => {
            return Err(ValidationError::InvalidCommand(
                "PlayerCommand sets none of start, next, skip".into(),
            ));
        }
    };
    Ok(PlaylistId::parse(playlist_id.as_str())?)
}

/// What a heartbeat reports: a playout starting, going on, or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatKind {
    Start,
    Beat,
    End,
}

/// A `Heartbeat` whose ids and kind are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHeartbeat {
    pub device_id: DeviceId,
    pub playout_id: PlayoutId,
    pub content_id: ContentId,
    pub kind: HeartbeatKind,
    pub position_ms: u64,
}

/// Checks a `Heartbeat`: its ids, and a kind of START (1), BEAT (2) or END (3).
pub fn heartbeat(heartbeat: &v1::Heartbeat) -> Result<CheckedHeartbeat, ValidationError> {
    let kind = match v1::HeartbeatKind::try_from(heartbeat.kind) {
        Ok(v1::HeartbeatKind::Start) => HeartbeatKind::Start,
        Ok(v1::HeartbeatKind::Beat) => HeartbeatKind::Beat,
        Ok(v1::HeartbeatKind::End) => HeartbeatKind::End,
        Ok(v1::HeartbeatKind::Unspecified) | Err(_) => {
            return Err(ValidationError::InvalidCommand(format!(
                "heartbeat kind {} is not START (1), BEAT (2) or END (3)",
                heartbeat.kind
            )));
        }
    };
    Ok(CheckedHeartbeat {
        device_id: DeviceId::parse(heartbeat.device_id.as_str())?,
        playout_id: PlayoutId::parse(heartbeat.playout_id.as_str())?,
        content_id: ContentId::parse(heartbeat.content_id.as_str())?,
        kind,
        position_ms: heartbeat.position_ms,
    })
}

/// An `ImportRequest` whose ids and object name are usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedImportRequest {
    pub source: SourceId,
    pub import_id: ImportId,
    pub object_name: String,
}

/// Checks an `ImportRequest`: `source` and `import_id` are ids, `object_name` names an object
/// of 1 to [`MAX_OBJECT_NAME_BYTES`] bytes.
pub fn import_request(
    request: &v1::ImportRequest,
) -> Result<CheckedImportRequest, ValidationError> {
    let source = SourceId::parse(request.source.as_str())?;
    let import_id = ImportId::parse(request.import_id.as_str())?;
    if request.object_name.is_empty() || request.object_name.len() > MAX_OBJECT_NAME_BYTES {
        return Err(ValidationError::InvalidCommand(format!(
            "object_name must name an object of 1 to {MAX_OBJECT_NAME_BYTES} bytes; got {} bytes",
            request.object_name.len()
        )));
    }
    Ok(CheckedImportRequest {
        source,
        import_id,
        object_name: request.object_name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&'static str]) -> Result<(), TrackError> {
        check_track_ids(ids.iter().copied())
    }

    #[test]
    fn tracks_need_one_at_least_none_empty_and_no_repeats() {
        assert_eq!(ids(&[]), Err(TrackError::EmptyPlaylist));
        assert_eq!(ids(&["a", ""]), Err(TrackError::EmptyTrackId));
        assert_eq!(
            ids(&["a", "b", "a"]),
            Err(TrackError::DuplicateTrack("a".into()))
        );
        assert_eq!(ids(&["a", "b"]), Ok(()));
        let many: Vec<String> = (0..=MAX_TRACKS).map(|n| n.to_string()).collect();
        assert_eq!(
            check_track_ids(many.iter().map(String::as_str)),
            Err(TrackError::TooManyTracks(MAX_TRACKS + 1))
        );
    }

    #[test]
    fn a_player_command_names_its_playlist_or_is_refused() {
        use v1::player_command::Command;
        let command = |command| v1::PlayerCommand {
            user_id: "ann".into(),
            command,
        };
        let next = command(Some(Command::Next(v1::NextTrack {
            playlist_id: "mix".into(),
        })));
        assert_eq!(player_command(&next).unwrap().as_str(), "mix");
        assert!(matches!(
            player_command(&command(None)),
            Err(ValidationError::InvalidCommand(_))
        ));
        let bad = command(Some(Command::Skip(v1::SkipTrack {
            playlist_id: "a b".into(),
        })));
        assert!(matches!(
            player_command(&bad),
            Err(ValidationError::InvalidId(_))
        ));
    }

    #[test]
    fn an_import_request_names_its_source_its_id_and_a_bounded_object() {
        let request = |source: &str, import_id: &str, object_name: String| v1::ImportRequest {
            source: source.into(),
            import_id: import_id.into(),
            object_name,
        };
        let checked =
            import_request(&request("songkick", "imp-1", "songkick/imp-1".into())).unwrap();
        assert_eq!(checked.source.as_str(), "songkick");
        assert_eq!(checked.import_id.as_str(), "imp-1");
        assert!(import_request(&request("a.b", "imp-1", "x".into())).is_err());
        assert!(import_request(&request("songkick", "", "x".into())).is_err());
        let longest = "o".repeat(MAX_OBJECT_NAME_BYTES);
        assert!(import_request(&request("songkick", "imp-1", longest.clone())).is_ok());
        for object_name in [String::new(), format!("{longest}o")] {
            assert!(matches!(
                import_request(&request("songkick", "imp-1", object_name)),
                Err(ValidationError::InvalidCommand(_))
            ));
        }
    }
}
