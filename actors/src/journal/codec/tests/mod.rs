//! Tests of the journal codec, and the strategies that generate every event with realistic and
//! extreme values (empty and long strings, empty and large track lists, times from 0 to
//! `u64::MAX` milliseconds).
//!
//! - `round_trip`: properties, each decoded event compared with the generated one (which owes
//!   nothing to the codec), and arbitrary or corrupted payloads that must never panic;
//! - `pinned`: one event of each message type against literal bytes;
//! - `versions`: the version-1 `PlayoutStarted` upcast and the refusals.

use std::collections::BTreeSet;
use std::time::Duration;

use playhead_proto::ids::{
    ContentId, DeviceId, IdError, PlaylistId, PlayoutId, StationId, Tag, UserId,
};
use proptest::prelude::*;

use super::*;
use crate::domain::catalog::{CatalogEvent, MAX_CONTENT_TAGS};
use crate::domain::enrichment::Enrichment;
use crate::domain::player::{MAX_TRACKS, PlayerEvent, Track};
use crate::domain::playout::{
    Entitlement, HeartbeatKind, MAX_ENTITLEMENTS, PlayoutEvent, StopReason,
};
use crate::domain::station::{Song, StationEvent};
use crate::domain::time::Timestamp;
use crate::domain::user::UserEvent;

mod pinned;
mod round_trip;
mod versions;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of a hex literal (pinned payloads).
fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex literal"))
        .collect()
}

/// Id text: mostly short and readable, sometimes anything the id alphabet allows, up to the
/// longest id accepted.
fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z][a-z0-9-]{0,15}",
        2 => "[A-Za-z0-9_-]{1,128}",
        1 => "[A-Za-z0-9_-]{128}",
    ]
}

fn id<T: std::fmt::Debug>(parse: fn(String) -> Result<T, IdError>) -> impl Strategy<Value = T> {
    id_text().prop_map(move |text| parse(text).expect("the strategy yields valid ids"))
}

fn station_id() -> impl Strategy<Value = StationId> {
    id(StationId::parse)
}

fn user_id() -> impl Strategy<Value = UserId> {
    id(UserId::parse)
}

fn content_id() -> impl Strategy<Value = ContentId> {
    id(ContentId::parse)
}

fn playlist_id() -> impl Strategy<Value = PlaylistId> {
    id(PlaylistId::parse)
}

fn device_id() -> impl Strategy<Value = DeviceId> {
    id(DeviceId::parse)
}

fn playout_id() -> impl Strategy<Value = PlayoutId> {
    id(PlayoutId::parse)
}

fn tag() -> impl Strategy<Value = Tag> {
    id(Tag::parse)
}

/// Mostly this decade; also the epoch, the end of `u64` milliseconds and anything between.
fn time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        6 => 1_500_000_000_000u64..2_100_000_000_000,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        2 => any::<u64>(),
    ]
    .prop_map(Timestamp::from_millis)
}

/// Whole milliseconds, as every duration of the domain is.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        6 => 0u64..3_600_000,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        2 => any::<u64>(),
    ]
    .prop_map(Duration::from_millis)
}

fn position_ms() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..4 * 3_600_000, 1 => any::<u64>()]
}

/// Free text (artists, titles, track ids): any Unicode, empty, or a few KiB.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => any::<String>(),
        1 => Just(String::new()),
        1 => "[A-Za-zÀ-ÿ &'-]{1000,4000}",
    ]
}

fn song() -> impl Strategy<Value = Song> {
    (text(), text()).prop_map(|(artist, title)| Song { artist, title })
}

fn track() -> impl Strategy<Value = Track> {
    (text(), text()).prop_map(|(track_id, artist)| Track { track_id, artist })
}

/// Small playlists, the empty one, and long ones up to the most a playlist may have (built
/// from a count: generating 10,000 random tracks per case would only slow the test down).
fn tracks() -> impl Strategy<Value = Vec<Track>> {
    prop_oneof![
        8 => prop::collection::vec(track(), 0..30),
        1 => Just(Vec::new()),
        1 => (1usize..=MAX_TRACKS).prop_map(|count| {
            (0..count)
                .map(|index| Track {
                    track_id: format!("spotify:track:{index:022}"),
                    artist: format!("Artist {}", index % 97),
                })
                .collect()
        }),
    ]
}

fn tags() -> impl Strategy<Value = BTreeSet<Tag>> {
    prop_oneof![
        6 => prop::collection::btree_set(tag(), 0..6),
        1 => prop::collection::btree_set(tag(), MAX_CONTENT_TAGS),
    ]
}

fn entitlement() -> impl Strategy<Value = Entitlement> {
    (tag(), time()).prop_map(|(tag, valid_until)| Entitlement { tag, valid_until })
}

fn entitlements() -> impl Strategy<Value = Vec<Entitlement>> {
    prop_oneof![
        6 => prop::collection::vec(entitlement(), 0..6),
        1 => prop::collection::vec(entitlement(), MAX_ENTITLEMENTS),
    ]
}

fn heartbeat_kind() -> impl Strategy<Value = HeartbeatKind> {
    prop_oneof![
        Just(HeartbeatKind::Start),
        Just(HeartbeatKind::Beat),
        Just(HeartbeatKind::End),
    ]
}

fn stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        Just(StopReason::NotEntitled),
        Just(StopReason::ConcurrencyLimit),
    ]
}

fn station_event() -> BoxedStrategy<StationEvent> {
    prop_oneof![
        (any::<u64>(), song(), time()).prop_map(|(play_seq, song, started_at)| {
            StationEvent::SongStarted {
                play_seq,
                song,
                started_at,
            }
        }),
        (
            any::<u64>(),
            song(),
            time(),
            time(),
            prop::option::of(enrichment())
        )
            .prop_map(|(play_seq, song, started_at, ended_at, enrichment)| {
                StationEvent::SongEnded {
                    play_seq,
                    song,
                    started_at,
                    ended_at,
                    enrichment,
                }
            }),
        (any::<u64>(), enrichment()).prop_map(|(play_seq, enrichment)| {
            StationEvent::SongEnriched {
                play_seq,
                enrichment,
            }
        }),
    ]
    .boxed()
}

fn enrichment() -> impl Strategy<Value = Enrichment> {
    (
        (text(), text(), text(), text()),
        (text(), text(), any::<u32>(), text()),
        time(),
    )
        .prop_map(
            |(
                (recording_mbid, title, artist, artist_mbid),
                (release_mbid, release_title, release_year, cover_url),
                enriched_at,
            )| Enrichment {
                recording_mbid,
                title,
                artist,
                artist_mbid,
                release_mbid,
                release_title,
                release_year,
                cover_url,
                enriched_at,
            },
        )
}

fn player_event() -> BoxedStrategy<PlayerEvent> {
    prop_oneof![
        (
            tracks(),
            any::<u64>(),
            prop::collection::vec(time(), 0..5),
            time()
        )
            .prop_map(
                |(tracks, seed, recent_skips, at)| PlayerEvent::SessionStarted {
                    tracks,
                    seed,
                    recent_skips,
                    at,
                }
            ),
        time().prop_map(|at| PlayerEvent::SessionResumed { at }),
        (text(), any::<bool>(), time()).prop_map(|(track_id, skipped, at)| {
            PlayerEvent::TrackAdvanced {
                track_id,
                skipped,
                at,
            }
        }),
        (duration(), time())
            .prop_map(|(retry_after, at)| PlayerEvent::SkipDenied { retry_after, at }),
        time().prop_map(|at| PlayerEvent::SessionCompleted { at }),
    ]
    .boxed()
}

/// Device, playout, content, position and time: what most playout events share.
type Seat = (DeviceId, PlayoutId, ContentId, u64, Timestamp);

fn seat() -> impl Strategy<Value = Seat> {
    (
        device_id(),
        playout_id(),
        content_id(),
        position_ms(),
        time(),
    )
}

fn playout_event() -> BoxedStrategy<PlayoutEvent> {
    prop_oneof![
        (entitlements(), any::<Option<u32>>(), time())
            .prop_map(
                |(entitlements, concurrency_limit, at)| PlayoutEvent::EntitlementsUpdated {
                    entitlements,
                    concurrency_limit,
                    at,
                }
            )
            .boxed(),
        (seat(), time())
            .prop_map(|((device_id, playout_id, content_id, _, at), last)| {
                PlayoutEvent::SlotExpired {
                    device_id,
                    playout_id,
                    content_id,
                    last_heartbeat_at: last,
                    at,
                }
            })
            .boxed(),
        seat()
            .prop_map(
                |(device_id, playout_id, content_id, _, at)| PlayoutEvent::SlotRevoked {
                    device_id,
                    playout_id,
                    content_id,
                    at,
                }
            )
            .boxed(),
        (seat(), playout_id())
            .prop_map(
                |((device_id, previous_playout_id, previous_content_id, _, at), playout_id)| {
                    PlayoutEvent::SlotReclaimed {
                        device_id,
                        previous_playout_id,
                        previous_content_id,
                        playout_id,
                        at,
                    }
                }
            )
            .boxed(),
        (seat(), any::<bool>(), duration(), prop::option::of(tags()))
            .prop_map(
                |((device_id, playout_id, content_id, position_ms, at), readmitted, next, tags)| {
                    PlayoutEvent::PlayoutStarted {
                        device_id,
                        playout_id,
                        content_id,
                        position_ms,
                        readmitted,
                        next_heartbeat: next,
                        at,
                        content_tags: tags,
                    }
                }
            )
            .boxed(),
        (seat(), duration(), any::<bool>())
            .prop_map(
                |(
                    (device_id, playout_id, content_id, position_ms, at),
                    next_heartbeat,
                    bookmarked,
                )| {
                    PlayoutEvent::HeartbeatRecorded {
                        device_id,
                        playout_id,
                        content_id,
                        position_ms,
                        next_heartbeat,
                        at,
                        bookmarked,
                    }
                }
            )
            .boxed(),
        (seat(), any::<bool>(), duration())
            .prop_map(
                |((device_id, playout_id, content_id, position_ms, at), freed_slot, next)| {
                    PlayoutEvent::PlayoutEnded {
                        device_id,
                        playout_id,
                        content_id,
                        position_ms,
                        freed_slot,
                        next_heartbeat: next,
                        at,
                    }
                }
            )
            .boxed(),
        (seat(), heartbeat_kind(), stop_reason(), duration())
            .prop_map(
                |((device_id, playout_id, content_id, position_ms, at), kind, reason, next)| {
                    PlayoutEvent::PlayoutStopped {
                        device_id,
                        playout_id,
                        content_id,
                        kind,
                        reason,
                        position_ms,
                        next_heartbeat: next,
                        at,
                    }
                }
            )
            .boxed(),
    ]
    .boxed()
}

fn user_event() -> BoxedStrategy<UserEvent> {
    prop_oneof![
        (playlist_id(), player_event())
            .prop_map(|(playlist, event)| UserEvent::Player { playlist, event }),
        playout_event().prop_map(UserEvent::Playout),
    ]
    .boxed()
}

fn catalog_event() -> BoxedStrategy<CatalogEvent> {
    tags()
        .prop_map(|tags| CatalogEvent::ContentTagged { tags })
        .boxed()
}
