//! Users: player commands over three playlists mixed with heartbeats and entitlement updates,
//! so both the sessions and the playout record are non-trivial.

use std::collections::BTreeSet;
use std::sync::Arc;

use playhead_proto::ids::{ContentId, DeviceId, PlaylistId, PlayoutId, Tag, UserId};
use proptest::prelude::*;

use super::{
    Decision, HOUR, MINUTE, START, messages, rebuilt_from_journal, run_as_the_shell, temporary_db,
};
use crate::config::NodeConfig;
use crate::domain::player::{PlayerCommand, Session, StartPlaylist, Track};
use crate::domain::playout::{
    Entitlement, Heartbeat, HeartbeatKind, PlayoutCommand, UpdateEntitlements,
};
use crate::domain::time::Timestamp;
use crate::domain::user::{UserCommand, UserDecider, UserEvent, UserState};
use crate::runtime::kinds::user::UserKind;
use crate::storage::MainWrites;
use crate::storage::clock::{Clock, ManualClock};
use crate::storage::playout_store::{PlayoutStore, StoredPlayouts};
use crate::storage::session_store::{LastAnswer, SessionStore, StoredSession};

const PLAYLISTS: [&str; 3] = ["road-trip", "gym", "focus"];
/// The tags entitlements grant and contents carry.
const TAGS: [&str; 3] = ["sports", "movies", "kids"];
const DEVICES: [&str; 3] = ["tv", "phone", "tablet"];
const PLAYOUTS: usize = 6;
/// Contents film-0 … film-3.
const CONTENTS: usize = 4;

/// The catalog's tags of film-`content`, as the user kind looks them up before deciding a
/// heartbeat: film-3 is unknown to the catalog.
fn content_tags(content: usize) -> Option<BTreeSet<Tag>> {
    let tags: &[usize] = match content {
        0 => &[0],
        1 => &[1],
        2 => &[0, 2],
        _ => return None,
    };
    Some(tags.iter().map(|index| tag(*index)).collect())
}

#[derive(Debug, Clone)]
enum UserStep {
    Start {
        playlist: usize,
        tracks: usize,
        seed: Option<u64>,
        restart: bool,
    },
    Next(usize),
    Skip(usize),
    /// A playout plays one content on one device: both follow from its index.
    Heartbeat {
        playout: usize,
        kind: HeartbeatKind,
        position_ms: u64,
    },
    /// (one of `TAGS`, valid until `now` plus this many minutes), limit.
    Entitle(Vec<(usize, i64)>, Option<u32>),
}

/// (time since the previous command, slice ends, step).
type Step = (u64, bool, UserStep);

fn user_command(step: &UserStep, now: Timestamp) -> UserCommand {
    let playlist_id = |index: usize| PlaylistId::parse(PLAYLISTS[index]).expect("a valid id");
    let player = |index: usize, command| UserCommand::Player {
        playlist: playlist_id(index),
        command,
    };
    match step {
        UserStep::Start {
            playlist,
            tracks,
            seed,
            restart,
        } => player(
            *playlist,
            PlayerCommand::Start(StartPlaylist {
                user_id: user(),
                playlist_id: playlist_id(*playlist),
                tracks: (0..*tracks)
                    .map(|n| Track {
                        track_id: format!("{}-{n}", PLAYLISTS[*playlist]),
                        artist: format!("Artist {}", n % 3),
                    })
                    .collect(),
                seed: *seed,
                restart: *restart,
                other_sessions: None,
            }),
        ),
        UserStep::Next(playlist) => player(*playlist, PlayerCommand::Next),
        UserStep::Skip(playlist) => player(*playlist, PlayerCommand::Skip),
        UserStep::Heartbeat {
            playout,
            kind,
            position_ms,
        } => UserCommand::Playout(PlayoutCommand::Heartbeat(Heartbeat {
            device_id: DeviceId::parse(DEVICES[playout % DEVICES.len()]).expect("a valid id"),
            playout_id: PlayoutId::parse(format!("playout-{playout}")).expect("a valid id"),
            content_id: ContentId::parse(format!("film-{}", playout % CONTENTS))
                .expect("a valid id"),
            content_tags: content_tags(playout % CONTENTS),
            kind: *kind,
            position_ms: *position_ms,
        })),
        UserStep::Entitle(entitlements, concurrency_limit) => {
            UserCommand::Playout(PlayoutCommand::UpdateEntitlements(UpdateEntitlements {
                entitlements: entitlements
                    .iter()
                    .map(|(index, minutes)| Entitlement {
                        tag: tag(*index),
                        valid_until: Timestamp::from_millis(
                            now.as_millis()
                                .saturating_add_signed(minutes * MINUTE as i64),
                        ),
                    })
                    .collect(),
                concurrency_limit: *concurrency_limit,
            }))
        }
    }
}

/// Player commands over three playlists (starts with and without a seed, restarts, changed
/// track lists) mixed with heartbeats on three devices and entitlement updates; mostly minutes
/// apart (skips fall inside the hour-long skip window, slots stay live), sometimes hours (slots
/// and sessions expire).
fn steps() -> impl Strategy<Value = Vec<Step>> {
    // The first playlist is played most, the last least.
    let playlist = || prop_oneof![3 => Just(0), 2 => Just(1), 1 => Just(2)];
    let kind = prop_oneof![
        2 => Just(HeartbeatKind::Start),
        5 => Just(HeartbeatKind::Beat),
        1 => Just(HeartbeatKind::End),
    ];
    let step = prop_oneof![
        2 => (playlist(), 1..8usize, prop::option::of(0..4u64), any::<bool>()).prop_map(
            |(playlist, tracks, seed, restart)| UserStep::Start { playlist, tracks, seed, restart }
        ),
        3 => playlist().prop_map(UserStep::Next),
        4 => playlist().prop_map(UserStep::Skip),
        8 => (0..PLAYOUTS, kind, 0..2 * HOUR).prop_map(|(playout, kind, position_ms)| {
            UserStep::Heartbeat { playout, kind, position_ms }
        }),
        2 => (
            prop::collection::vec((0..TAGS.len(), -60i64..720), 0..3),
            prop::option::of(1..=3u32),
        )
            .prop_map(|(entitlements, limit)| UserStep::Entitle(entitlements, limit)),
    ];
    let gap = prop_oneof![8 => 0..6 * MINUTE, 1 => 0..8 * HOUR];
    prop::collection::vec((gap, any::<bool>(), step), 0..100)
}

fn tag(index: usize) -> Tag {
    Tag::parse(TAGS[index]).expect("a valid tag")
}

fn user() -> UserId {
    UserId::parse("ann").expect("a valid id")
}

/// What the user kind files beside a session: the inbox sequence of the last decision in
/// `decisions` that touched it, and the answer that decision gave (`session` is the session as
/// it left it: no later decision touched it).
fn session_meta(
    decisions: &[Decision<UserEvent>],
    playlist: &PlaylistId,
    session: &Session,
) -> Option<(u64, LastAnswer)> {
    decisions.iter().rev().find_map(|decision| {
        let events = UserEvent::player_events_of(&decision.events, playlist);
        (!events.is_empty()).then(|| {
            (
                decision.inbox_seq,
                crate::runtime::kinds::user::answers::player_answer(&events, Some(session)),
            )
        })
    })
}

/// The inbox sequence of the last decision in `decisions` with a playout event.
fn last_playout_seq(decisions: &[Decision<UserEvent>]) -> Option<u64> {
    decisions.iter().rev().find_map(|decision| {
        decision
            .events
            .iter()
            .any(|event| matches!(event, UserEvent::Playout(_)))
            .then_some(decision.inbox_seq)
    })
}

/// Decides `steps` for one user, saving the sessions and the playout record each slice
/// touched, then reads them back.
fn check(steps: &[Step]) -> Result<(), TestCaseError> {
    // Sessions live 6 hours here, so some expire within a run and the store lets them go.
    let mut config = NodeConfig::default();
    config.player.session_ttl_secs = 6 * 3600;
    config.player.session_bucket_secs = 3600;
    config.validate()?;
    let decider = UserDecider {
        player: config.player_policy(),
        playout: config.playout_policy(),
    };
    let user = user();
    let playlists = PLAYLISTS.map(|name| PlaylistId::parse(name).expect("a valid id"));
    let clock = Arc::new(ManualClock::new(START));
    let db = temporary_db()?;
    let (_buckets, placement) = crate::storage::keyspace::temporary_bucket_dbs();
    let sessions = SessionStore::open(&db, &config.player, clock.clone(), placement)?;
    let playouts = PlayoutStore::open(&db)?;
    let run = run_as_the_shell(
        &decider,
        messages(steps, user_command),
        |state: &UserState, now, slice, _| {
            clock.set(now.as_millis());
            let touched: Vec<_> = playlists
                .iter()
                .filter_map(|playlist| {
                    let session = state.session(playlist).as_ref()?;
                    let (seq, answer) = session_meta(slice, playlist, session)?;
                    Some((playlist, session, seq, answer))
                })
                .collect();
            sessions.save_parts(&user, &touched)?;
            if let Some(last_applied_seq) = last_playout_seq(slice) {
                let stored = StoredPlayouts {
                    state: state.playouts.clone(),
                    last_applied_seq,
                    position: Default::default(),
                };
                MainWrites::write_now(|writes| playouts.save(writes, &user, &stored))?;
            }
            Ok(())
        },
    )?;

    let end = Timestamp::from_millis(clock.now_millis());
    for playlist in &playlists {
        let loaded = sessions.load(&user, playlist)?;
        let Some(session) = run.state.session(playlist) else {
            prop_assert_eq!(loaded, None, "{}", playlist);
            continue;
        };
        let (last_applied_seq, last_answer) =
            session_meta(&run.decisions, playlist, session).expect("started by a decision");
        let expected = StoredSession {
            session: session.clone(),
            last_applied_seq,
            last_answer,
        };
        if session.is_live(end, &decider.player) {
            prop_assert_eq!(loaded, Some(expected), "{}", playlist);
        } else {
            // An expired session is kept at least as long as it was live, maybe a bucket longer.
            prop_assert!(loaded.is_none() || loaded == Some(expected), "{}", playlist);
        }
    }
    prop_assert_eq!(
        playouts.load(&user)?,
        StoredPlayouts {
            state: run.state.playouts.clone(),
            last_applied_seq: last_playout_seq(&run.decisions).unwrap_or(0),
            position: Default::default(),
        }
    );
    prop_assert_eq!(
        rebuilt_from_journal::<UserKind>(&user, &run.decisions)?,
        run.state
    );
    Ok(())
}

proptest! {
    #[test]
    fn a_user_comes_back_from_sled_and_from_the_journal(steps in steps()) {
        check(&steps)?;
    }
}
