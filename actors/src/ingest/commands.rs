//! Wire messages of the user inbox (and the station's enrichment answers) mapped to decider
//! commands. The node's screen and the
//! gateway both use these, so the two edges refuse the same input with the same words.

use playhead_client::command::HeartbeatKind;
use playhead_proto::ids::{PlaylistId, Tag, UserId};
use playhead_proto::v1;

use super::screen::{DeadLetter, DeadLetterReason};
use crate::domain::player;
use crate::domain::playout::{
    self, Entitlement, MAX_CONCURRENCY_LIMIT, MAX_ENTITLEMENTS, UpdateEntitlements,
};
use crate::domain::station::{EnrichSong, StationCommand};
use crate::domain::time::Timestamp;
use crate::journal::codec::read_enrichment;
use crate::wire;

fn invalid_command(detail: impl Into<String>) -> DeadLetter {
    DeadLetter::new(DeadLetterReason::InvalidCommand, detail)
}

/// Maps a wire `PlayerCommand` to the decider's command and the playlist it addresses, after
/// the client crate's checks (which the gateway runs too, so both edges refuse the same input).
pub fn player_command(
    user: &UserId,
    command: v1::PlayerCommand,
) -> Result<(PlaylistId, player::PlayerCommand), DeadLetter> {
    use v1::player_command::Command;
    let playlist_id = playhead_client::command::player_command(&command)?;
    let decided = match command.command {
        Some(Command::Start(start)) => player::PlayerCommand::Start(player::StartPlaylist {
            user_id: user.clone(),
            playlist_id: playlist_id.clone(),
            tracks: start.tracks.into_iter().map(wire::track).collect(),
            seed: start.seed,
            restart: start.restart,
            // Looked up by the user entity before it decides.
            other_sessions: None,
        }),
        Some(Command::Next(_)) => player::PlayerCommand::Next,
        Some(Command::Skip(_)) => player::PlayerCommand::Skip,
        None => unreachable!("the check refuses a command that sets none"),
    };
    Ok((playlist_id, decided))
}

/// Maps a wire `Heartbeat` to the playout decider's heartbeat, after the client crate's checks.
/// The content's tags are not known here: the user actor looks them up in the catalog when it
/// decides.
pub fn heartbeat_command(heartbeat: v1::Heartbeat) -> Result<playout::Heartbeat, DeadLetter> {
    let checked = playhead_client::command::heartbeat(&heartbeat)?;
    Ok(playout::Heartbeat {
        device_id: checked.device_id,
        playout_id: checked.playout_id,
        content_id: checked.content_id,
        content_tags: None,
        kind: match checked.kind {
            HeartbeatKind::Start => playout::HeartbeatKind::Start,
            HeartbeatKind::Beat => playout::HeartbeatKind::Beat,
            HeartbeatKind::End => playout::HeartbeatKind::End,
        },
        position_ms: checked.position_ms,
    })
}

/// Maps a wire `EntitlementsUpdate`: every tag valid and with its end of validity, at most
/// [`MAX_ENTITLEMENTS`] of them, and a concurrency limit of 0 (keep the current one) or
/// within 1..=[`MAX_CONCURRENCY_LIMIT`].
pub fn entitlements_update(
    update: v1::EntitlementsUpdate,
) -> Result<UpdateEntitlements, DeadLetter> {
    if update.entitlements.len() > MAX_ENTITLEMENTS {
        return Err(invalid_command(format!(
            "{} entitlements in one update; at most {MAX_ENTITLEMENTS} are allowed",
            update.entitlements.len()
        )));
    }
    let concurrency_limit = match update.concurrency_limit {
        0 => None,
        limit if limit <= MAX_CONCURRENCY_LIMIT => Some(limit),
        limit => {
            return Err(invalid_command(format!(
                "concurrency_limit {limit} is out of range; it must be 1 to \
                 {MAX_CONCURRENCY_LIMIT}, or 0 to keep the current limit"
            )));
        }
    };
    let entitlements = update
        .entitlements
        .into_iter()
        .map(|entitlement| {
            let tag = Tag::parse(entitlement.tag)?;
            let valid_until = entitlement.valid_until.as_ref().ok_or_else(|| {
                invalid_command(format!("entitlement {tag:?} has no valid_until"))
            })?;
            Ok(Entitlement {
                valid_until: Timestamp::from_millis(wire::timestamp_millis(valid_until)),
                tag,
            })
        })
        .collect::<Result<_, DeadLetter>>()?;
    Ok(UpdateEntitlements {
        entitlements,
        concurrency_limit,
    })
}

/// Longest text field of an enrichment answer (titles, ids, the cover URL).
const MAX_ENRICHMENT_FIELD_BYTES: usize = 2048;

/// Maps the enrichment service's `EnrichSong` to the station's command. Only the node
/// publishes these (the broker refuses the subject to every other user), but what reaches the
/// journal is still checked: a play, a song key, an enrichment with its time, bounded fields.
pub fn enrich_command(answer: v1::EnrichSong) -> Result<StationCommand, DeadLetter> {
    if answer.play_seq == 0 {
        return Err(invalid_command("play_seq must be at least 1"));
    }
    if answer.song_key.is_empty() || answer.song_key.len() > 2 * MAX_ENRICHMENT_FIELD_BYTES {
        return Err(invalid_command("song_key must be 1 to 4096 bytes"));
    }
    let enrichment = answer
        .enrichment
        .ok_or_else(|| invalid_command("enrichment is missing"))?;
    let fields = [
        &enrichment.recording_mbid,
        &enrichment.title,
        &enrichment.artist,
        &enrichment.artist_mbid,
        &enrichment.release_mbid,
        &enrichment.release_title,
        &enrichment.cover_url,
    ];
    if fields
        .iter()
        .any(|field| field.len() > MAX_ENRICHMENT_FIELD_BYTES)
    {
        return Err(invalid_command(
            "an enrichment field is longer than 2048 bytes",
        ));
    }
    let enrichment = read_enrichment(enrichment)
        .map_err(|error| invalid_command(format!("enrichment: {error}")))?;
    Ok(StationCommand::EnrichSong(EnrichSong {
        play_seq: answer.play_seq,
        song_key: answer.song_key,
        enrichment,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(kind: v1::HeartbeatKind) -> v1::Heartbeat {
        v1::Heartbeat {
            user_id: "ann".into(),
            device_id: "tv-1".into(),
            playout_id: "p-1".into(),
            content_id: "film-1".into(),
            kind: kind as i32,
            position_ms: 42_000,
        }
    }

    #[test]
    fn a_heartbeat_maps_with_its_kind_and_position_and_no_tags_yet() {
        let mapped = heartbeat_command(heartbeat(v1::HeartbeatKind::Beat)).unwrap();
        assert_eq!(mapped.kind, playout::HeartbeatKind::Beat);
        assert_eq!(mapped.device_id.as_str(), "tv-1");
        assert_eq!(mapped.playout_id.as_str(), "p-1");
        assert_eq!(mapped.content_id.as_str(), "film-1");
        assert_eq!(mapped.position_ms, 42_000);
        assert_eq!(mapped.content_tags, None);
    }

    #[test]
    fn a_heartbeat_without_a_kind_or_with_a_bad_id_is_refused_with_its_reason() {
        let refused = heartbeat_command(heartbeat(v1::HeartbeatKind::Unspecified)).unwrap_err();
        assert_eq!(refused.reason, DeadLetterReason::InvalidCommand);
        let mut bad_device = heartbeat(v1::HeartbeatKind::Start);
        bad_device.device_id = "tv 1".into();
        let refused = heartbeat_command(bad_device).unwrap_err();
        assert_eq!(refused.reason, DeadLetterReason::InvalidId);
        assert!(refused.detail.contains("device_id"), "{}", refused.detail);
        let mut no_playout = heartbeat(v1::HeartbeatKind::End);
        no_playout.playout_id.clear();
        assert_eq!(
            heartbeat_command(no_playout).unwrap_err().reason,
            DeadLetterReason::InvalidId
        );
    }

    fn entitlement(tag: &str, valid_until_secs: Option<i64>) -> v1::Entitlement {
        v1::Entitlement {
            tag: tag.into(),
            valid_until: valid_until_secs
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn an_update_maps_its_tags_and_a_zero_limit_keeps_the_current_one() {
        let update = entitlements_update(v1::EntitlementsUpdate {
            user_id: "ann".into(),
            entitlements: vec![entitlement("premium", Some(2_000_000_000))],
            concurrency_limit: 0,
        })
        .unwrap();
        assert_eq!(update.concurrency_limit, None);
        assert_eq!(update.entitlements.len(), 1);
        assert_eq!(update.entitlements[0].tag.as_str(), "premium");
        assert_eq!(
            update.entitlements[0].valid_until,
            Timestamp::from_millis(2_000_000_000_000)
        );
        let limited = entitlements_update(v1::EntitlementsUpdate {
            concurrency_limit: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(limited.concurrency_limit, Some(3));
    }

    #[test]
    fn a_bad_update_is_refused_with_its_reason() {
        let refused = |update: v1::EntitlementsUpdate| entitlements_update(update).unwrap_err();
        let no_end = refused(v1::EntitlementsUpdate {
            entitlements: vec![entitlement("premium", None)],
            ..Default::default()
        });
        assert_eq!(no_end.reason, DeadLetterReason::InvalidCommand);
        assert!(no_end.detail.contains("valid_until"), "{}", no_end.detail);
        let bad_tag = refused(v1::EntitlementsUpdate {
            entitlements: vec![entitlement("pre mium", Some(1))],
            ..Default::default()
        });
        assert_eq!(bad_tag.reason, DeadLetterReason::InvalidId);
        let too_high = refused(v1::EntitlementsUpdate {
            concurrency_limit: MAX_CONCURRENCY_LIMIT + 1,
            ..Default::default()
        });
        assert_eq!(too_high.reason, DeadLetterReason::InvalidCommand);
        let too_many = refused(v1::EntitlementsUpdate {
            entitlements: (0..=MAX_ENTITLEMENTS)
                .map(|n| entitlement(&format!("tag-{n}"), Some(1)))
                .collect(),
            ..Default::default()
        });
        assert_eq!(too_many.reason, DeadLetterReason::InvalidCommand);
    }
}
