//! Mapping between domain types and `playhead.v1` wire messages, in one place. Stored records
//! are mapped where they are read (the query handlers), so this module depends on the domain
//! only, never on storage.

use playhead_proto::ids::{PlaylistId, StationId, UserId};
use playhead_proto::v1;

use crate::domain::enrichment::Enrichment;
use crate::domain::player::{PlayerPolicy, Session, SessionStatus, Track};
use crate::domain::playout::{HeartbeatAction, HeartbeatDecision, HeartbeatReason, Slot};
use crate::domain::station::{ObserveSong, Song, StationCommand, StationState};
use crate::domain::time::Timestamp;

pub use playhead_client::wire::{degraded_decision, duration_millis, timestamp, timestamp_millis};

fn song(song: &Song) -> v1::Song {
    v1::Song {
        artist: song.artist.clone(),
        title: song.title.clone(),
    }
}

pub fn observe_command(observed: v1::SongObserved) -> StationCommand {
    StationCommand::ObserveSong(ObserveSong {
        artist: observed.artist,
        title: observed.title,
        raw: observed.raw,
        known: None,
    })
}

pub fn song_enrichment(enrichment: &Enrichment) -> v1::SongEnrichment {
    v1::SongEnrichment {
        recording_mbid: enrichment.recording_mbid.clone(),
        title: enrichment.title.clone(),
        artist: enrichment.artist.clone(),
        artist_mbid: enrichment.artist_mbid.clone(),
        release_mbid: enrichment.release_mbid.clone(),
        release_title: enrichment.release_title.clone(),
        release_year: enrichment.release_year,
        cover_url: enrichment.cover_url.clone(),
        enriched_at: Some(timestamp(enrichment.enriched_at)),
    }
}

/// The now-playing projection of a station state (None before its first song).
pub fn now_playing(station: &StationId, state: &StationState) -> Option<v1::NowPlaying> {
    let current = state.current.as_ref()?;
    Some(v1::NowPlaying {
        station_id: station.to_string(),
        play_seq: current.play_seq,
        song: Some(song(&current.song)),
        started_at: Some(timestamp(current.started_at)),
        enrichment: current.enrichment.as_ref().map(song_enrichment),
    })
}

fn playlist_track(track: &Track) -> v1::PlaylistTrack {
    v1::PlaylistTrack {
        track_id: track.track_id.clone(),
        artist: track.artist.clone(),
    }
}

/// What a listener may see of a session at `now`: never the upcoming order.
pub fn player_session(
    user: &UserId,
    playlist: &PlaylistId,
    session: &Session,
    policy: &PlayerPolicy,
    now: Timestamp,
) -> v1::PlayerSession {
    v1::PlayerSession {
        user_id: user.to_string(),
        playlist_id: playlist.to_string(),
        status: match session.status {
            SessionStatus::Playing => v1::SessionStatus::Playing,
            SessionStatus::Completed => v1::SessionStatus::Completed,
        } as i32,
        current_track: session.current_track().map(playlist_track),
        played_track_ids: session
            .played_tracks()
            .map(|track| track.track_id.clone())
            .collect(),
        skips_used: session.skips_used(now, policy) as u32,
        tracks_remaining: session.tracks_remaining() as u32,
        last_touched_at: Some(timestamp(session.last_touched_at)),
    }
}

/// A playlist track as the decider sees it.
pub fn track(track: v1::PlaylistTrack) -> Track {
    Track {
        track_id: track.track_id,
        artist: track.artist,
    }
}

pub fn heartbeat_action(action: HeartbeatAction) -> v1::HeartbeatAction {
    match action {
        HeartbeatAction::Continue => v1::HeartbeatAction::Continue,
        HeartbeatAction::Stop => v1::HeartbeatAction::Stop,
    }
}

pub fn heartbeat_reason(reason: HeartbeatReason) -> v1::HeartbeatReason {
    match reason {
        HeartbeatReason::Ok => v1::HeartbeatReason::Ok,
        HeartbeatReason::NotEntitled => v1::HeartbeatReason::NotEntitled,
        HeartbeatReason::ConcurrencyLimit => v1::HeartbeatReason::ConcurrencyLimit,
    }
}

pub fn heartbeat_decision(decision: HeartbeatDecision) -> v1::HeartbeatDecision {
    v1::HeartbeatDecision {
        action: heartbeat_action(decision.action) as i32,
        reason: heartbeat_reason(decision.reason) as i32,
        next_heartbeat_ms: duration_millis(decision.next_heartbeat),
    }
}

pub fn playout(slot: &Slot) -> v1::Playout {
    v1::Playout {
        device_id: slot.device_id.to_string(),
        playout_id: slot.playout_id.to_string(),
        content_id: slot.content_id.to_string(),
        last_heartbeat_at: Some(timestamp(slot.last_heartbeat_at)),
    }
}
