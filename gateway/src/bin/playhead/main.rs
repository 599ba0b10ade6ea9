//! `playhead`: the command-line client. See `playhead --help`.

mod import;
mod playout;
mod shows;

use std::time::Duration;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use playhead_client::service::duration::parse_duration;
use playhead_client::service::nats_auth::{self, NatsAccess, NatsRole};
use playhead_gateway::auth::{AuthedChannel, Bearer, Claims, KeyRing, Role, now_secs};
use playhead_proto::codec::to_json;
use playhead_proto::headers::MSG_ID;
use playhead_proto::ids::StationId;
use playhead_proto::subjects::station_song;
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{
    GetNowPlayingRequest, GetSessionRequest, ListPlaysRequest, ListSessionsRequest,
    PlayerTrackRequest, PlaylistTrack, SongObserved, StartPlaylist, StartPlaylistRequest,
    WatchNowPlayingRequest,
};
use prost::Message;

/// Try playhead from a terminal: publish song observations, catalog tags and entitlements as a
/// NATS publisher would, query or watch stations, drive a playlist player, send video
/// heartbeats, import show listings and list upcoming shows through the gRPC gateway. Output
/// is proto3 JSON, one per line (`import` and `shows` print for people).
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
///   playhead import shows.jsonl --source songkick --id songkick-2026-07-01
///   playhead import status songkick-2026-07-01
///   playhead shows --artist "Nina Simone" --from 2026-07-01T00:00:00Z --all
///   playhead shows --station radio-1
///   playhead token mint --keys data/auth-keys --user ann --role listener
///
/// Every gRPC command sends the token in PLAYHEAD_TOKEN (or --token): `make run` prints an
/// admin one; `playhead token mint` makes others.
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
    /// Directory of the NATS users' nkey seeds (for `publish`): `publish song` signs in as
    /// publisher.nk, `publish entitlements` and `publish content` as backoffice.nk. `make run`
    /// makes them under its data dir; `playhead nats keygen` makes a set for a deployment.
    #[arg(
        long,
        global = true,
        env = "PLAYHEAD_NATS_CREDENTIALS",
        default_value = "data/nats-credentials"
    )]
    nats_credentials: PathBuf,
    /// For a broker that listens with TLS: its CA certificate (PEM); TLS is then required.
    #[arg(long, global = true, env = "PLAYHEAD_NATS_CA_FILE")]
    nats_ca_file: Option<PathBuf>,
    /// gRPC gateway (for queries).
    #[arg(
        long,
        global = true,
        env = "PLAYHEAD_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    grpc_url: String,
    /// Bearer token for the gateway (for queries and player and playout commands).
    #[arg(long, global = true, env = "PLAYHEAD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For an https:// gateway: the CA certificate (PEM) to trust instead of the system's.
    #[arg(long, global = true, env = "PLAYHEAD_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The broker, and the credentials of each role the CLI publishes as.
struct Broker {
    url: String,
    credentials: PathBuf,
    ca_file: Option<PathBuf>,
}

impl Broker {
    /// A connection as `role`: signed in with its seed from the credentials directory (without
    /// one, anonymous, which only a broker without users accepts).
    async fn connect(&self, role: NatsRole) -> anyhow::Result<async_nats::Client> {
        let seed = role.seed_file(&self.credentials);
        let nkey_file = seed.exists().then_some(seed.as_path());
        let access = NatsAccess::load(role, nkey_file, self.ca_file.as_deref())?;
        let result = access
            .options()
            .connection_timeout(Duration::from_secs(5))
            .connect(&self.url)
            .await;
        match result {
            Ok(client) => Ok(client),
            Err(error) if error.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                match nkey_file {
                    Some(path) => bail!(
                        "NATS at {} refused the {role} key {} (is it a seed of this broker's \
                         users? `make run` keeps its own in data/nats-credentials)",
                        self.url,
                        path.display()
                    ),
                    None => bail!(
                        "NATS at {} refuses anonymous clients and there is no {}: give \
                         --nats-credentials DIR, the directory of the {role}.nk seed (`make run` \
                         prints its own)",
                        self.url,
                        seed.display()
                    ),
                }
            }
            Err(error) => Err(error).with_context(|| {
                format!("cannot reach NATS at {} (is `make run` running?)", self.url)
            }),
        }
    }
}

/// The gateway and the token to call it with.
struct Gateway {
    url: String,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

impl Gateway {
    async fn channel(&self) -> anyhow::Result<AuthedChannel> {
        let token = self
            .token
            .as_deref()
            .filter(|token| !token.trim().is_empty());
        let token = token.context(
            "no token: set PLAYHEAD_TOKEN (`make run` prints one) or give --token \
             (`playhead token mint` makes one)",
        )?;
        let bearer = Bearer::new(token)?;
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("{} is not a gateway URL", self.url))?;
        if self.url.starts_with("https://") {
            let tls = match &self.ca_cert {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                }
                None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach the gateway at {} (is `make run` running?)",
                self.url
            )
        })?;
        Ok(bearer.channel(channel))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish an event into playhead's inbox (as a NATS publisher).
    #[command(subcommand)]
    Publish(Publish),
    /// Show what a station is playing now (JSON), with its enrichment once it has one
    /// (`enrichment`: release, year, cover URL, MusicBrainz ids).
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
    /// Follow stations: the current song, then every change, one JSON line each (a new song,
    /// then the same play again once its enrichment arrives; Ctrl-C to stop).
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
    /// Upload a batch of show listings and follow its import, or show an import's status
    /// (ImportService): `playhead import FILE --source S [--id ID] [--content-type T]`,
    /// `playhead import status ID`.
    Import(import::ImportArgs),
    /// List upcoming shows of an artist, of the artists played on a station, or of a listener's
    /// artists (ShowService), one per line: start time, artist, venue, city, country, url.
    Shows(shows::ShowsArgs),
    /// Make token keys and tokens for the gateway.
    #[command(subcommand)]
    Token(Token),
    /// Make the NATS users' credentials of a deployment.
    #[command(subcommand)]
    Nats(Nats),
}

#[derive(Debug, Subcommand)]
enum Nats {
    /// Make an nkey seed for each role (node, gateway, publisher, backoffice, monitor, admin)
    /// missing in DIR (mode 0600 each; existing seeds are kept), and print the public keys as
    /// the PLAYHEAD_NKEY_* variables deploy/nats/playhead-users.conf reads (an env file for
    /// the broker; nothing secret).
    Keygen {
        /// The credentials directory (created with mode 0700).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Token {
    /// Write a new key ring file (one random key, readable by its owner only) for the
    /// gateway's auth_keys.
    Keygen {
        /// The file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The key's id, carried in the tokens it signs.
        #[arg(long, default_value = "k1")]
        kid: String,
    },
    /// Print a token signed with the first key of a key ring.
    Mint {
        /// The gateway's key ring file.
        #[arg(long, env = "PLAYHEAD_AUTH_KEYS")]
        keys: PathBuf,
        /// The subject: a listener's user id, or a name for anyone else.
        #[arg(long)]
        user: String,
        /// listener, station, backoffice, operator or admin.
        #[arg(long, value_parser = Role::parse)]
        role: Role,
        /// A station a station token may report for; repeat for each.
        #[arg(long = "station")]
        stations: Vec<String>,
        /// How long the token is valid.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        valid_for: Duration,
    },
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
    let broker = Broker {
        url: cli.nats_url,
        credentials: cli.nats_credentials,
        ca_file: cli.nats_ca_file,
    };
    let gateway = Gateway {
        url: cli.grpc_url,
        token: cli.token,
        ca_cert: cli.ca_cert,
    };
    match cli.command {
        Command::Publish(Publish::Song(song)) => publish_song(&broker, song).await,
        Command::Publish(Publish::Entitlements(args)) => {
            publish_plain(&broker, NatsRole::Backoffice, playout::entitlements(args)?).await
        }
        Command::Publish(Publish::Content(args)) => {
            publish_plain(&broker, NatsRole::Backoffice, playout::content(args)?).await
        }
        Command::Nats(Nats::Keygen { dir }) => {
            let keys = nats_auth::ensure_credentials(&dir)?;
            for (role, key) in keys {
                println!("{}={key}", role.public_key_variable());
            }
            eprintln!(
                "seeds in {} (one per role, mode 0600): give each client its own; the lines \
                 above are the broker's environment",
                dir.display()
            );
            Ok(())
        }
        Command::NowPlaying { station } => {
            let mut client = StationServiceClient::new(gateway.channel().await?);
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
            let mut client = StationServiceClient::new(gateway.channel().await?);
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
            let mut client = StationServiceClient::new(gateway.channel().await?);
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
        Command::Player(command) => player(&gateway, command).await,
        Command::Playout(command) => {
            let client = PlayoutServiceClient::new(gateway.channel().await?);
            playout::playout(client, command).await
        }
        Command::Import(args) => import::import(gateway.channel().await?, args).await,
        Command::Shows(args) => shows::shows(gateway.channel().await?, args).await,
        Command::Token(command) => token(command),
    }
}

fn token(command: Token) -> anyhow::Result<()> {
    match command {
        Token::Keygen { out, kid } => {
            KeyRing::parse(&KeyRing::generate(&kid).to_text())
                .map_err(|error| anyhow::anyhow!("--kid {kid:?}: {error}"))?
                .create_file(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            eprintln!(
                "wrote {} (key {kid}); give it to the gateway as auth_keys",
                out.display()
            );
            Ok(())
        }
        Token::Mint {
            keys,
            user,
            role,
            stations,
            valid_for,
        } => {
            let ring = KeyRing::load(&keys)?;
            let now = now_secs();
            let claims = Claims {
                sub: user,
                role,
                stations,
                iat: now,
                exp: now.saturating_add(valid_for.as_secs()),
            };
            // Refused here as the gateway would refuse it.
            playhead_gateway::auth::Principal::try_from(claims.clone())?;
            println!("{}", ring.mint(&claims));
            Ok(())
        }
    }
}

async fn player(gateway: &Gateway, command: Player) -> anyhow::Result<()> {
    let mut client = PlayerServiceClient::new(gateway.channel().await?);
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

async fn publish_song(broker: &Broker, song: SongArgs) -> anyhow::Result<()> {
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
        broker,
        NatsRole::Publisher,
        station_song(&station),
        headers,
        payload.encode_to_vec(),
    )
    .await
}

/// Publishes `(subject, payload)` without headers.
async fn publish_plain(
    broker: &Broker,
    role: NatsRole,
    (subject, payload): (String, Vec<u8>),
) -> anyhow::Result<()> {
    publish(broker, role, subject, async_nats::HeaderMap::new(), payload).await
}

/// Publishes into an inbox as `role` and prints the broker's acknowledgement.
async fn publish(
    broker: &Broker,
    role: NatsRole,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let client = broker.connect(role).await?;
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
