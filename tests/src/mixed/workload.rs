//! A deterministic mixed workload over every inbox: song observations, player commands,
//! heartbeats, entitlement and catalog updates — the kinds of traffic a node must apply
//! exactly once across crashes.
//!
//! Player commands and heartbeats ask for their answer (`Playhead-Reply-To`), each on a subject
//! of its own under [`REPLY_SUBJECTS`], so every answer a node sends is matched to its message.
//!
//! The catalog of the content that heartbeats play is published first (and waited for): the
//! catalog and the user inbox are separate streams, so a heartbeat racing a retag of its own
//! content would have no single right answer. Retags during the run touch other content only.

use bytes::Bytes;
use playhead_client::service::nats_auth::NatsCredentials;
use playhead_proto::headers::{REPLY_SIGNATURE, REPLY_TO};
use playhead_proto::ids::{ContentId, StationId, UserId};
use playhead_proto::subjects::{
    ReplySubject, UserKind, catalog_content, station_song, user_subject,
};
use playhead_proto::v1;
use prost::Message;

use crate::model::{Publication, Rng};
use crate::player::tracks;
use crate::playout::in_wall_clock;

/// Content that heartbeats play, and the tags each needs (fixed for the whole run).
pub const PLAYED_CONTENT: &[(&str, &str)] = &[
    ("film-0", "premium"),
    ("film-1", "premium"),
    ("film-2", "premium"),
    ("clip-0", "free"),
    ("clip-1", "free"),
    ("clip-2", "free"),
];
/// Content only retagged during the run.
const RETAGGED_CONTENT: usize = 4;
const TAGS: &[&str] = &["premium", "free", "sports", "kids"];
const PLAYLISTS: usize = 3;
const DEVICES: usize = 3;

/// Where the answers go: `_INBOX.admin.mixed.<n>` for the `n`th message (a core NATS
/// subscription to `_INBOX.admin.mixed.>`, as the harness's admin user, receives them all).
pub const REPLY_SUBJECTS: &str = "_INBOX.admin.mixed.>";

/// One catalog message to publish: subject and payload.
pub type Outgoing = (String, Bytes);

/// What to publish: the catalog first (wait until applied), then the mixed messages (their
/// reply subjects signed by the requester [`generate`] is given).
pub struct Workload {
    pub catalog: Vec<Outgoing>,
    pub messages: Vec<Publication>,
    pub stations: Vec<String>,
    pub users: Vec<String>,
}

impl Workload {
    /// Signs every message's reply subject with `credentials` (the harness's admin user, whose
    /// prefix [`REPLY_SUBJECTS`] is under), as nodes require.
    fn signed(mut self, credentials: &NatsCredentials) -> Self {
        for message in &mut self.messages {
            let reply = message
                .headers
                .get(REPLY_TO)
                .map(|reply| reply.as_str().to_owned());
            if let Some(reply) = reply {
                let signature = credentials.sign_reply(&message.subject, &reply);
                message.headers.insert(REPLY_SIGNATURE, signature.as_str());
            }
        }
        self
    }
}

/// Per-user generator state: which playlists were started, which playouts run where.
#[derive(Default, Clone)]
struct Viewer {
    started: [bool; PLAYLISTS],
    playouts: [Option<(u32, usize, u64)>; DEVICES],
    next_playout: u32,
    entitled: bool,
}

/// `count` mixed messages over `stations` stations and `users` users, their reply subjects
/// signed by `requester` (the harness's admin user, whose prefix [`REPLY_SUBJECTS`] is under).
pub fn generate(
    seed: u64,
    stations: usize,
    users: usize,
    count: usize,
    requester: &NatsCredentials,
) -> Workload {
    let mut rng = Rng::new(seed);
    let station_ids: Vec<String> = (0..stations).map(|n| format!("st-{n}")).collect();
    let user_ids: Vec<String> = (0..users).map(|n| format!("viewer-{n}")).collect();
    let catalog = PLAYED_CONTENT
        .iter()
        .map(|(content, tag)| content_update(content, &[tag]))
        .collect();
    let mut on_air = vec![0u64; stations];
    let mut viewers = vec![Viewer::default(); users];
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        let reply_to = reply_subject(messages.len());
        let roll = rng.below(100);
        if roll < 40 {
            let station = rng.below(stations as u64) as usize;
            if rng.below(100) >= 70 {
                on_air[station] = (on_air[station] + 1 + rng.below(9)) % 12;
            }
            messages.push(song(&station_ids[station], on_air[station], rng.below(3)).into());
        } else if roll < 68 {
            let user = rng.below(users as u64) as usize;
            let player = player(&user_ids[user], &mut viewers[user], &mut rng);
            messages.push(asking(player, &reply_to));
        } else if roll < 94 {
            let user = rng.below(users as u64) as usize;
            let viewer = &mut viewers[user];
            if !viewer.entitled {
                viewer.entitled = true;
                messages.push(entitlements(&user_ids[user], user, &mut rng).into());
            } else {
                let heartbeat = heartbeat(&user_ids[user], viewer, &mut rng);
                messages.push(asking(heartbeat, &reply_to));
            }
        } else if roll < 97 {
            let user = rng.below(users as u64) as usize;
            messages.push(entitlements(&user_ids[user], user, &mut rng).into());
        } else {
            let content = format!("extra-{}", rng.below(RETAGGED_CONTENT as u64));
            let tag = TAGS[rng.below(TAGS.len() as u64) as usize];
            messages.push(content_update(&content, &[tag]).into());
        }
    }
    Workload {
        catalog,
        messages,
        stations: station_ids,
        users: user_ids,
    }
    .signed(requester)
}

/// The reply subject of the `n`th message.
fn reply_subject(n: usize) -> ReplySubject {
    let subject = REPLY_SUBJECTS.replace('>', &n.to_string());
    ReplySubject::parse(&subject).expect("a reply subject the node accepts")
}

/// `message`, asking for its answer on `reply_to`.
fn asking((subject, payload): Outgoing, reply_to: &ReplySubject) -> Publication {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(REPLY_TO, reply_to.as_str());
    Publication {
        subject,
        headers,
        payload,
    }
}

fn song(station: &str, song: u64, spelling: u64) -> Outgoing {
    let (artist, title) = (format!("Band {song}"), format!("Tune {song}"));
    let (artist, title) = match spelling {
        0 => (artist, title),
        1 => (artist.to_uppercase(), title.to_lowercase()),
        _ => (format!(" {artist}"), format!("{title}!")),
    };
    let id = StationId::parse(station).expect("valid station id");
    let payload = v1::SongObserved {
        station_id: station.into(),
        artist,
        title,
        ..Default::default()
    };
    (station_song(&id), payload.encode_to_vec().into())
}

fn player(user: &str, viewer: &mut Viewer, rng: &mut Rng) -> Outgoing {
    let playlist = rng.below(PLAYLISTS as u64) as usize;
    let playlist_id = format!("mix-{playlist}");
    let roll = rng.below(100);
    let command = if !viewer.started[playlist] || roll < 8 {
        viewer.started[playlist] = true;
        v1::player_command::Command::Start(v1::StartPlaylist {
            playlist_id,
            tracks: tracks(6 + playlist * 2),
            seed: roll.is_multiple_of(2).then_some(rng.below(1_000)),
            restart: roll < 4,
        })
    } else if roll < 65 {
        v1::player_command::Command::Next(v1::NextTrack { playlist_id })
    } else {
        v1::player_command::Command::Skip(v1::SkipTrack { playlist_id })
    };
    let id = UserId::parse(user).expect("valid user id");
    let payload = v1::PlayerCommand {
        user_id: user.into(),
        command: Some(command),
    };
    (
        user_subject(&id, UserKind::Player),
        payload.encode_to_vec().into(),
    )
}

fn heartbeat(user: &str, viewer: &mut Viewer, rng: &mut Rng) -> Outgoing {
    let device = rng.below(DEVICES as u64) as usize;
    let (kind, playout, content, position) = match viewer.playouts[device] {
        None => {
            viewer.next_playout += 1;
            let content = rng.below(PLAYED_CONTENT.len() as u64) as usize;
            viewer.playouts[device] = Some((viewer.next_playout, content, 0));
            (v1::HeartbeatKind::Start, viewer.next_playout, content, 0)
        }
        Some((playout, content, position)) if rng.below(100) < 20 => {
            viewer.playouts[device] = None;
            (v1::HeartbeatKind::End, playout, content, position + 5_000)
        }
        Some((playout, content, position)) => {
            let position = position + 10_000;
            viewer.playouts[device] = Some((playout, content, position));
            (v1::HeartbeatKind::Beat, playout, content, position)
        }
    };
    let id = UserId::parse(user).expect("valid user id");
    let payload = v1::Heartbeat {
        user_id: user.into(),
        device_id: format!("device-{device}"),
        playout_id: format!("{user}-play-{playout}"),
        content_id: PLAYED_CONTENT[content].0.into(),
        kind: kind as i32,
        position_ms: position,
    };
    (
        user_subject(&id, UserKind::Heartbeat),
        payload.encode_to_vec().into(),
    )
}

fn entitlements(user: &str, index: usize, rng: &mut Rng) -> Outgoing {
    let mut tags = vec!["free"];
    if index.is_multiple_of(2) {
        tags.push("premium");
    }
    let id = UserId::parse(user).expect("valid user id");
    let payload = v1::EntitlementsUpdate {
        user_id: user.into(),
        entitlements: tags
            .iter()
            .map(|tag| v1::Entitlement {
                tag: (*tag).into(),
                valid_until: Some(in_wall_clock(std::time::Duration::from_secs(24 * 3600))),
            })
            .collect(),
        concurrency_limit: rng.below(3) as u32,
    };
    (
        user_subject(&id, UserKind::Entitlements),
        payload.encode_to_vec().into(),
    )
}

fn content_update(content: &str, tags: &[&str]) -> Outgoing {
    let id = ContentId::parse(content).expect("valid content id");
    let payload = v1::ContentUpdate {
        content_id: content.into(),
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
    };
    (catalog_content(&id), payload.encode_to_vec().into())
}
