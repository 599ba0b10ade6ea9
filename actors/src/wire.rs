//! Mapping between domain types and `playhead.v1` wire messages, in one place.

use playhead_proto::ids::{PlaylistId, StationId, UserId};
use playhead_proto::v1;

use crate::domain::player::{PlayerEvent, PlayerPolicy, Session, SessionStatus, Track};
use crate::domain::playout::{HeartbeatAction, HeartbeatDecision, HeartbeatReason, Slot};
use crate::domain::station::{ObserveSong, Song, StationCommand, StationState};
use crate::domain::time::Timestamp;
use crate::storage::session_store::LastAnswer;
use crate::storage::station_store::PlayRecord;
use crate::storage::view_history_store::ViewRecord;

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let millis = at.as_millis();
    prost_types::Timestamp {
        seconds: (millis / 1000) as i64,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    }
}

/// Saturating: a client's far-future timestamp must not overflow (a panic in debug builds).
pub fn timestamp_millis(at: &prost_types::Timestamp) -> u64 {
    (at.seconds.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add((at.nanos.max(0) as u64) / 1_000_000)
}

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
    })
}

/// The now-playing projection of a station state (None before its first song).
pub fn now_playing(station: &StationId, state: &StationState) -> Option<v1::NowPlaying> {
    let current = state.current.as_ref()?;
    Some(v1::NowPlaying {
        station_id: station.to_string(),
        play_seq: current.play_seq,
        song: Some(song(&current.song)),
        started_at: Some(timestamp(current.started_at)),
    })
}

pub fn play(record: PlayRecord) -> v1::Play {
    v1::Play {
        play_seq: record.play_seq,
        song: Some(v1::Song {
            artist: record.artist,
            title: record.title,
        }),
        started_at: Some(timestamp(Timestamp::from_millis(record.started_at_ms))),
        ended_at: record
            .ended_at_ms
            .map(|millis| timestamp(Timestamp::from_millis(millis))),
    }
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

/// The answer to a command that produced `events` and left the session as `session`.
pub fn player_answer(events: &[PlayerEvent], session: Option<&Session>) -> LastAnswer {
    let denied = events.iter().find_map(|event| match event {
        PlayerEvent::SkipDenied { retry_after, .. } => Some(*retry_after),
        _ => None,
    });
    if let Some(retry_after) = denied {
        return LastAnswer {
            outcome: v1::PlayerOutcome::SkipLimited as i32,
            retry_after_ms: retry_after.as_millis().try_into().unwrap_or(u64::MAX),
        };
    }
    let completed = session.is_some_and(|session| session.status == SessionStatus::Completed);
    LastAnswer {
        outcome: if completed {
            v1::PlayerOutcome::Completed
        } else {
            v1::PlayerOutcome::Ok
        } as i32,
        retry_after_ms: 0,
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

/// The fail-open answer: playback continues, the client beats again after `interval`.
pub fn degraded_decision(interval: std::time::Duration) -> v1::HeartbeatDecision {
    v1::HeartbeatDecision {
        action: v1::HeartbeatAction::Continue as i32,
        reason: v1::HeartbeatReason::Degraded as i32,
        next_heartbeat_ms: duration_millis(interval),
    }
}

pub fn duration_millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub fn playout(slot: &Slot) -> v1::Playout {
    v1::Playout {
        device_id: slot.device_id.to_string(),
        playout_id: slot.playout_id.to_string(),
        content_id: slot.content_id.to_string(),
        last_heartbeat_at: Some(timestamp(slot.last_heartbeat_at)),
    }
}

pub fn view_record(record: ViewRecord) -> v1::ViewRecord {
    v1::ViewRecord {
        content_id: record.content_id.into_string(),
        position_ms: record.position_ms,
        last_viewed_at: Some(timestamp(record.last_viewed_at)),
        completed: record.completed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let at = Timestamp::from_millis(1_763_000_123_456);
        assert_eq!(timestamp_millis(&timestamp(at)), at.as_millis());
    }
}
