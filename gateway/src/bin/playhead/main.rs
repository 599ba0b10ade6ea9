//! `playhead`: the command-line client. See `playhead --help`.

mod playout;

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use playhead_proto::codec::to_json;
use playhead_proto::headers::MSG_ID;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::station_song;
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{
    GetNowPlayingRequest, GetSessionRequest, ListPlaysRequest, ListSessionsRequest,
    PlayerTrackRequest, PlaylistTrack, SongObserved, StartPlaylist, StartPlaylistRequest,
    WatchNowPlayingRequest,
};
use prost::Message;

/// Try playhead from a terminal: publish song observations, catalog tags and entitlements as a
/// NATS publisher would, query or watch stations, drive a playlist player, and send video
/// heartbeats through the gRPC gateway. Output is proto3 JSON, one per line.
///
/// Examples:
///   playhead publish song --station radio-1 --artist "Nina Simone" --title Sinnerman
///   playhead now-playing radio-1
///   playhead plays radio-1 --page-size 10
///   playhead watch radio-1 radio-2
///   playhead player start --user ann --playlist road-trip --track t1:Nina --track t2 --track t3
///   playhead player skip --user ann --playlist road-trip
///   playhead player sessions --user ann
///   playhead publish content --content film-1 --tag premium
///   playhead publish entitlements --user ann --tag premium --valid-for-secs 86400
///   playhead playout beat --user ann --device tv --playout p1 --content film-1 --kind start
///   playhead playout history --user ann
#[derive(Debug, Parser)]
#[command(name = "playhead", version, verbatim_doc_comment)]
struct Cli {
    /// NATS server (for `publish`).
    #[arg(
        long,
        global = true,
        env = "PLAYHEAD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// gRPC gateway (for queries).
    #[arg(
        long,
        global = true,
        env = "PLAYHEAD_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    grpc_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish an event into playhead's inbox (as a NATS publisher).
    #[command(subcommand)]
    Publish(Publish),
    /// Show what a station is playing now.
    NowPlaying { station: String },
    /// List a station's plays, newest first.
    Plays {
        station: String,
        /// 1..=100
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        /// Only plays with play_seq below this (older page).
        #[arg(long)]
        before: Option<u64>,
        /// Only plays with play_seq above this (newer page).
        #[arg(long)]
        since: Option<u64>,
    },
    /// Follow stations: the current song, then every change (Ctrl-C to stop).
    Watch {
        #[arg(required = true)]
        stations: Vec<String>,
    },
    /// Drive a listener's playlist player (PlayerService).
    #[command(subcommand)]
    Player(Player),
    /// Video playouts: heartbeats, live playouts, viewing history, entitlements
    /// (PlayoutService).
    #[command(subcommand)]
    Playout(playout::Playout),
}

#[derive(Debug, Subcommand)]
enum Player {
    /// Start a playlist, or resume its live session (`--restart` starts over).
    Start {
        #[command(flatten)]
        session: SessionArgs,
        /// A track as ID or ID:ARTIST; repeat for each track, in the listed order.
        #[arg(long = "track", required = true)]
        tracks: Vec<String>,
        /// Shuffle seed (default: derived from the user and playlist ids).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        restart: bool,
    },
    /// The current track finished: get the next one.
    Next(SessionArgs),
    /// Skip the current track (limited per rolling window).
    Skip(SessionArgs),
    /// Show a session: current track, played tracks, skips used (never the order ahead).
    Session(SessionArgs),
    /// List a listener's live sessions, most recently touched first.
    Sessions {
        #[arg(long)]
        user: String,
        /// 1..=100
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        /// `next_page_token` of the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

#[derive(Debug, Args)]
struct SessionArgs {
    #[arg(long)]
    user: String,
    #[arg(long)]
    playlist: String,
}

#[derive(Debug, Subcommand)]
enum Publish {
    /// A song observation for a station (`playhead.station.{id}.song`).
    Song(SongArgs),
    /// Grant or renew a viewer's entitlement tags (`playhead.user.{id}.entitlements`).
    Entitlements(playout::EntitlementsArgs),
    /// Set a content item's tags (`playhead.catalog.content.{id}`).
    Content(playout::ContentArgs),
}

#[derive(Debug, Args)]
struct SongArgs {
    /// Station id ([A-Za-z0-9_-], 1 to 128 characters).
    #[arg(long)]
    station: String,
    /// Artist as the station's feed spells it (kept for display).
    #[arg(long, default_value = "")]
    artist: String,
    /// Song title as the station's feed spells it.
    #[arg(long, default_value = "")]
    title: String,
    /// "Artist - Title", used when --artist and --title are not given.
    #[arg(long, default_value = "")]
    raw: String,
    /// Sets Nats-Msg-Id, so the broker drops a repeated publish.
    #[arg(long)]
    msg_id: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("playhead: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("playhead: {:?}: {}", status.code(), status.message()),
                None => eprintln!("playhead: {error:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Publish(Publish::Song(song)) => publish_song(&cli.nats_url, song).await,
        Command::Publish(Publish::Entitlements(args)) => {
            publish_plain(&cli.nats_url, playout::entitlements(args)?).await
        }
        Command::Publish(Publish::Content(args)) => {
            publish_plain(&cli.nats_url, playout::content(args)?).await
        }
        Command::NowPlaying { station } => {
            let mut client = grpc(&cli.grpc_url).await?;
            let response = client
                .get_now_playing(GetNowPlayingRequest {
                    station_id: station,
                })
                .await?
                .into_inner();
            if let Some(now_playing) = response.now_playing {
                println!("{}", to_json(&now_playing));
            }
            Ok(())
        }
        Command::Plays {
            station,
            page_size,
            before,
            since,
        } => {
            let mut client = grpc(&cli.grpc_url).await?;
            let page = client
                .list_plays(ListPlaysRequest {
                    station_id: station,
                    page_size,
                    before,
                    since,
                })
                .await?
                .into_inner();
            println!("{}", to_json(&page));
            Ok(())
        }
        Command::Watch { stations } => {
            let mut client = grpc(&cli.grpc_url).await?;
            let mut changes = client
                .watch_now_playing(WatchNowPlayingRequest {
                    station_ids: stations,
                })
                .await?
                .into_inner();
            while let Some(change) = changes.next().await {
                println!("{}", to_json(&change?));
            }
            Ok(())
        }
        Command::Player(command) => player(&cli.grpc_url, command).await,
        Command::Playout(command) => playout::playout(&cli.grpc_url, command).await,
    }
}

async fn player(url: &str, command: Player) -> anyhow::Result<()> {
    let mut client = PlayerServiceClient::connect(url.to_owned())
        .await
        .with_context(|| format!("cannot reach the gateway at {url} (is `make run` running?)"))?;
    let track = |args: SessionArgs| PlayerTrackRequest {
        user_id: args.user,
        playlist_id: args.playlist,
    };
    let json = match command {
        Player::Start {
            session,
            tracks,
            seed,
            restart,
        } => {
            let tracks = tracks
                .into_iter()
                .map(|track| {
                    let (track_id, artist) = track.split_once(':').unwrap_or((&track, ""));
                    PlaylistTrack {
                        track_id: track_id.to_owned(),
                        artist: artist.to_owned(),
                    }
                })
                .collect();
            let request = StartPlaylistRequest {
                user_id: session.user,
                start: Some(StartPlaylist {
                    playlist_id: session.playlist,
                    tracks,
                    seed,
                    restart,
                }),
            };
            to_json(&client.start_playlist(request).await?.into_inner())
        }
        Player::Next(args) => to_json(&client.next_track(track(args)).await?.into_inner()),
        Player::Skip(args) => to_json(&client.skip_track(track(args)).await?.into_inner()),
        Player::Session(args) => {
            let request = GetSessionRequest {
                user_id: args.user,
                playlist_id: args.playlist,
            };
            to_json(&client.get_session(request).await?.into_inner())
        }
        Player::Sessions {
            user,
            page_size,
            page_token,
        } => {
            let request = ListSessionsRequest {
                user_id: user,
                page_size,
                page_token,
            };
            to_json(&client.list_sessions(request).await?.into_inner())
        }
    };
    println!("{json}");
    Ok(())
}

async fn grpc(url: &str) -> anyhow::Result<StationServiceClient<tonic::transport::Channel>> {
    StationServiceClient::connect(url.to_owned())
        .await
        .with_context(|| format!("cannot reach the gateway at {url} (is `make run` running?)"))
}

async fn publish_song(nats_url: &str, song: SongArgs) -> anyhow::Result<()> {
    let station = StationId::parse(song.station)?;
    if song.artist.is_empty() && song.title.is_empty() && song.raw.is_empty() {
        bail!("give --artist and --title, or --raw \"Artist - Title\"");
    }
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = &song.msg_id {
        headers.insert(MSG_ID, id.as_str());
    }
    let payload = SongObserved {
        station_id: station.to_string(),
        artist: song.artist,
        title: song.title,
        raw: song.raw,
        source: "playhead-cli".into(),
        observed_at: None,
    };
    publish(
        nats_url,
        station_song(&station),
        headers,
        payload.encode_to_vec(),
    )
    .await
}

/// Publishes `(subject, payload)` without headers.
async fn publish_plain(
    nats_url: &str,
    (subject, payload): (String, Vec<u8>),
) -> anyhow::Result<()> {
    publish(nats_url, subject, async_nats::HeaderMap::new(), payload).await
}

/// Publishes into an inbox and prints the broker's acknowledgement.
async fn publish(
    nats_url: &str,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats_url)
        .await
        .with_context(|| format!("cannot reach NATS at {nats_url} (is `make run` running?)"))?;
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await?
        .await
        .context("the inbox did not acknowledge (is playhead-node running?)")?;
    println!(
        "{{\"stream\":\"{}\",\"sequence\":{},\"duplicate\":{}}}",
        ack.stream, ack.sequence, ack.duplicate
    );
    Ok(())
}
