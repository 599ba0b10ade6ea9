//! Player fixtures shared by the integration tests and the benchmark.

use playhead_proto::v1::{PlayerTrackRequest, PlaylistTrack, StartPlaylist, StartPlaylistRequest};

/// `count` distinct tracks `t00`, `t01`, … by rotating artists.
pub fn tracks(count: usize) -> Vec<PlaylistTrack> {
    (0..count)
        .map(|n| PlaylistTrack {
            track_id: format!("t{n:02}"),
            artist: format!("artist {}", n % 5),
        })
        .collect()
}

/// `StartPlaylist` of `count` tracks.
pub fn start_request(
    user: &str,
    playlist: &str,
    count: usize,
    seed: Option<u64>,
    restart: bool,
) -> StartPlaylistRequest {
    StartPlaylistRequest {
        user_id: user.into(),
        start: Some(StartPlaylist {
            playlist_id: playlist.into(),
            tracks: tracks(count),
            seed,
            restart,
        }),
    }
}

/// `NextTrack` / `SkipTrack` request.
pub fn track_request(user: &str, playlist: &str) -> PlayerTrackRequest {
    PlayerTrackRequest {
        user_id: user.into(),
        playlist_id: playlist.into(),
    }
}
