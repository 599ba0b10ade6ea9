//! The journal tail: traffic a node applies after the snapshots were taken, so a rebuild has
//! to replay it. Song observations over the filled stations (mostly repeats of the song on
//! air, spelled in several ways, as pollers send them) interleaved with player commands on
//! the filled sessions (mostly `NextTrack`, some `SkipTrack`, a few new playlists started by
//! the same listeners).

use bytes::Bytes;
use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::subjects::{UserKind, station_song, user_subject};
use playhead_proto::v1::player_command::Command;
use playhead_proto::v1::{NextTrack, PlayerCommand, SkipTrack, SongObserved, StartPlaylist};
use playhead_tests::model::Rng;
use playhead_tests::player::tracks;
use prost::Message;

use super::Workload;
use super::fill::{SONGS, session_ids, song, station_id};

/// Shares (percent) of the player commands: `NextTrack`, then `SkipTrack`, the rest starts.
const NEXT_PERCENT: u64 = 70;
const SKIP_PERCENT: u64 = 20;
/// Tracks of a playlist started by the tail.
const STARTED_TRACKS: usize = 12;

/// The tail's messages in publishing order, and what they touch.
pub(super) struct Tail {
    pub(super) messages: Vec<(String, Bytes)>,
    pub(super) observations: usize,
    pub(super) commands: usize,
    /// Stations whose song changed, and sessions a command named (with repeats).
    pub(super) changed_stations: Vec<usize>,
    pub(super) touched_sessions: Vec<(UserId, PlaylistId)>,
    /// Commands per kind: next, skip, start.
    pub(super) command_kinds: [usize; 3],
}

/// The tail for the filled store; `on_air` (the song on each station) follows the changes.
pub(super) fn generate(workload: &Workload, on_air: &mut [u64]) -> anyhow::Result<Tail> {
    let mut rng = Rng::new(23);
    let mut observations = Vec::with_capacity(workload.observations);
    let mut changed_stations = Vec::new();
    for _ in 0..workload.observations {
        let n = rng.below(on_air.len() as u64) as usize;
        if rng.below(100) >= workload.repeat_percent {
            on_air[n] = (on_air[n] + 1 + rng.below(SONGS - 1)) % SONGS;
            changed_stations.push(n);
        }
        let (artist, title) = song(on_air[n]);
        let (artist, title) = match rng.below(3) {
            0 => (artist, title),
            1 => (artist.to_uppercase(), title.to_lowercase()),
            _ => (format!(" {artist}"), format!("{title}!")),
        };
        let station = station_id(n)?;
        let observed = SongObserved {
            station_id: station.to_string(),
            artist,
            title,
            ..Default::default()
        };
        observations.push((station_song(&station), observed.encode_to_vec().into()));
    }

    let mut commands = Vec::with_capacity(workload.player_commands);
    let mut touched_sessions = Vec::new();
    let mut command_kinds = [0; 3];
    for started in 0..workload.player_commands {
        let n = rng.below(workload.sessions as u64) as usize;
        let (user, playlist) = session_ids(n, workload.sessions_per_user)?;
        let kind = rng.below(100);
        let (playlist, command) = if kind < NEXT_PERCENT {
            command_kinds[0] += 1;
            let next = NextTrack {
                playlist_id: playlist.to_string(),
            };
            (playlist, Command::Next(next))
        } else if kind < NEXT_PERCENT + SKIP_PERCENT {
            command_kinds[1] += 1;
            let skip = SkipTrack {
                playlist_id: playlist.to_string(),
            };
            (playlist, Command::Skip(skip))
        } else {
            command_kinds[2] += 1;
            let playlist = PlaylistId::parse(format!("new{started:06}"))?;
            let start = StartPlaylist {
                playlist_id: playlist.to_string(),
                tracks: tracks(STARTED_TRACKS),
                seed: Some(started as u64),
                restart: false,
            };
            (playlist, Command::Start(start))
        };
        let message = PlayerCommand {
            user_id: user.to_string(),
            command: Some(command),
        };
        commands.push((
            user_subject(&user, UserKind::Player),
            message.encode_to_vec().into(),
        ));
        touched_sessions.push((user, playlist));
    }

    // As they would arrive: both kinds at once.
    let mut messages = Vec::with_capacity(observations.len() + commands.len());
    let (mut observations, mut commands) = (observations.into_iter(), commands.into_iter());
    loop {
        match (observations.next(), commands.next()) {
            (None, None) => break,
            (observation, command) => messages.extend(observation.into_iter().chain(command)),
        }
    }
    Ok(Tail {
        messages,
        observations: workload.observations,
        commands: workload.player_commands,
        changed_stations,
        touched_sessions,
        command_kinds,
    })
}
