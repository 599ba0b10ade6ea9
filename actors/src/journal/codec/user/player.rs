//! Player events of one playlist session (`SessionStarted`, `SessionResumed`, `TrackAdvanced`,
//! `SkipDenied`, `SessionCompleted`), all version 1. `SessionStarted` carries the tracks and
//! the seed the playing order is derived from when the journal is folded.

use std::time::Duration;

use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::v1;

use super::super::{
    CodecError, EncodedEvent, InvalidPayload, decode_v1, millis, read_time, same_entity, time,
    version_1,
};
use crate::domain::player::{PlayerEvent, Track};
use crate::wire;

// The names `PlayerEvent::name` gives, `'static` for errors (the `name` argument is borrowed).
const SESSION_STARTED: &str = "SessionStarted";
const SESSION_RESUMED: &str = "SessionResumed";
const TRACK_ADVANCED: &str = "TrackAdvanced";
const SKIP_DENIED: &str = "SkipDenied";
const SESSION_COMPLETED: &str = "SessionCompleted";

pub(super) fn encode(user: &UserId, playlist: &PlaylistId, event: &PlayerEvent) -> EncodedEvent {
    let user_id = user.to_string();
    let playlist_id = playlist.to_string();
    let name = event.name();
    match event {
        PlayerEvent::SessionStarted {
            tracks,
            seed,
            recent_skips,
            at,
        } => version_1(
            name,
            v1::SessionStarted {
                user_id,
                playlist_id,
                track_count: u32::try_from(tracks.len()).unwrap_or(u32::MAX),
                at: time(*at),
                tracks: tracks.iter().map(playlist_track).collect(),
                seed: *seed,
                recent_skips: recent_skips.iter().map(|at| wire::timestamp(*at)).collect(),
            },
        ),
        PlayerEvent::SessionResumed { at } => version_1(
            name,
            v1::SessionResumed {
                user_id,
                playlist_id,
                at: time(*at),
            },
        ),
        PlayerEvent::TrackAdvanced {
            track_id,
            skipped,
            at,
        } => version_1(
            name,
            v1::TrackAdvanced {
                user_id,
                playlist_id,
                track_id: track_id.clone(),
                skipped: *skipped,
                at: time(*at),
            },
        ),
        PlayerEvent::SkipDenied { retry_after, at } => version_1(
            name,
            v1::SkipDenied {
                user_id,
                playlist_id,
                retry_after_ms: millis(*retry_after),
                at: time(*at),
            },
        ),
        PlayerEvent::SessionCompleted { at } => version_1(
            name,
            v1::SessionCompleted {
                user_id,
                playlist_id,
                at: time(*at),
            },
        ),
    }
}

/// The session and event of a player payload; `None` when `name` is no player event.
pub(super) fn decode(
    own: &str,
    name: &str,
    version: u32,
    payload: &[u8],
) -> Option<Result<(PlaylistId, PlayerEvent), CodecError>> {
    let decoded = match name {
        SESSION_STARTED => decode_v1(
            SESSION_STARTED,
            version,
            payload,
            |m: v1::SessionStarted| {
                let playlist = session(own, m.user_id, m.playlist_id)?;
                if usize::try_from(m.track_count).ok() != Some(m.tracks.len()) {
                    return Err(InvalidPayload::TrackCount {
                        count: m.track_count,
                        listed: m.tracks.len(),
                    });
                }
                let recent_skips = m
                    .recent_skips
                    .into_iter()
                    .map(|at| read_time("recent_skips", Some(at)));
                Ok((
                    playlist,
                    PlayerEvent::SessionStarted {
                        tracks: m.tracks.into_iter().map(read_track).collect(),
                        seed: m.seed,
                        recent_skips: recent_skips.collect::<Result<_, _>>()?,
                        at: read_time("at", m.at)?,
                    },
                ))
            },
        ),
        SESSION_RESUMED => decode_v1(
            SESSION_RESUMED,
            version,
            payload,
            |m: v1::SessionResumed| {
                let playlist = session(own, m.user_id, m.playlist_id)?;
                let at = read_time("at", m.at)?;
                Ok((playlist, PlayerEvent::SessionResumed { at }))
            },
        ),
        TRACK_ADVANCED => decode_v1(TRACK_ADVANCED, version, payload, |m: v1::TrackAdvanced| {
            let playlist = session(own, m.user_id, m.playlist_id)?;
            Ok((
                playlist,
                PlayerEvent::TrackAdvanced {
                    track_id: m.track_id,
                    skipped: m.skipped,
                    at: read_time("at", m.at)?,
                },
            ))
        }),
        SKIP_DENIED => decode_v1(SKIP_DENIED, version, payload, |m: v1::SkipDenied| {
            let playlist = session(own, m.user_id, m.playlist_id)?;
            Ok((
                playlist,
                PlayerEvent::SkipDenied {
                    retry_after: Duration::from_millis(m.retry_after_ms),
                    at: read_time("at", m.at)?,
                },
            ))
        }),
        SESSION_COMPLETED => decode_v1(
            SESSION_COMPLETED,
            version,
            payload,
            |m: v1::SessionCompleted| {
                let playlist = session(own, m.user_id, m.playlist_id)?;
                let at = read_time("at", m.at)?;
                Ok((playlist, PlayerEvent::SessionCompleted { at }))
            },
        ),
        _ => return None,
    };
    Some(decoded)
}

/// A player event's ids: its user must be the journal entry's, its playlist names the session.
fn session(own: &str, user_id: String, playlist_id: String) -> Result<PlaylistId, InvalidPayload> {
    same_entity("user_id", own, user_id)?;
    Ok(PlaylistId::parse(playlist_id)?)
}

fn playlist_track(track: &Track) -> v1::PlaylistTrack {
    v1::PlaylistTrack {
        track_id: track.track_id.clone(),
        artist: track.artist.clone(),
    }
}

fn read_track(track: v1::PlaylistTrack) -> Track {
    Track {
        track_id: track.track_id,
        artist: track.artist,
    }
}
