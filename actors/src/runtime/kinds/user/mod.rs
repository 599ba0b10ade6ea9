//! The user kind: one listener's player sessions (one per playlist) and playouts
//! (entitlements, concurrency slots, bookmarks), decided by the user decider behind one inbox
//! so a user's commands stay in order across kinds.
//!
//! - `records`: the records in memory, loaded lazily, and how decisions fold into them.
//! - [`answers`]: the answers, pure functions of the state (a model of the inboxes uses them).
//! - this module: the kind's glue — loading, the heartbeat's catalog tags, the codec.
//!
//! Answers: a player command gets a `PlayerReply`, a heartbeat a `HeartbeatDecision`, an
//! entitlements update nothing. A redelivered command is answered from the state: a player
//! command with the answer filed on its session, a heartbeat with the decision filed for its
//! playout (or, if no longer kept, the fail-open answer the gateway would give).

pub mod answers;
mod records;

use playhead_proto::ids::UserId;
use playhead_proto::subjects::EventFamily;

use self::records::UserRecords;
use crate::domain::player::{PlayerCommand, PlayerError};
use crate::domain::playout::PlayoutCommand;
use crate::domain::time::Timestamp;
use crate::domain::user::{UserCommand, UserDecider, UserError, UserEvent, UserState};
use crate::journal::append::JournalRecord;
use crate::journal::codec::{self, CodecError, EncodedEvent};
use crate::runtime::{Decided, EntityError, EntityKind, Sequences};
use crate::storage::session_store::LastAnswer;
use crate::storage::user_meta_store::UserMeta;
use crate::storage::{MainWrites, Storage};

/// What every user shares.
pub struct UserContext {
    pub storage: Storage,
    pub decider: UserDecider,
}

pub struct UserKind;

impl EntityKind for UserKind {
    type Id = UserId;
    type Decider = UserDecider;
    type Command = UserCommand;
    type Event = UserEvent;
    type Records = UserRecords;
    type Context = UserContext;

    const KIND: &'static str = "user";
    const FAMILY: EventFamily = EventFamily::User;
    const ANSWERS: bool = true;
    const INBOX_STREAM: &'static str = playhead_proto::subjects::Inbox::User.stream_name();

    fn stored_command(
        subject: &str,
        headers: &async_nats::HeaderMap,
        payload: &[u8],
    ) -> Option<(UserCommand, bool)> {
        // It was screened once already: no size limit applies again.
        crate::ingest::screen::screen_user(subject, Some(headers), payload, usize::MAX)
            .ok()
            .map(|screened| (screened.command, screened.reply_to.is_some()))
    }

    fn inbox_filter(id: &UserId) -> Option<String> {
        Some(playhead_proto::subjects::stored_user_filter(id.as_ref()))
    }

    fn decider(context: &UserContext) -> &UserDecider {
        &context.decider
    }

    fn parse_id(token: &str) -> Result<UserId, playhead_proto::ids::IdError> {
        UserId::parse(token)
    }

    fn state(records: &UserRecords) -> &UserState {
        &records.state
    }

    /// The entity stands at the later of the two positions it writes (see
    /// [`crate::storage::user_meta_store`]); the playout record read for it is kept.
    fn load(context: &UserContext, id: &UserId) -> Result<(UserRecords, Sequences), EntityError> {
        let meta = context.storage.user_meta.load(id)?;
        let playouts = context.storage.playouts.load(id)?;
        let position = meta.later(playouts.position);
        let mut records = UserRecords::new();
        records.take_playouts(playouts);
        Ok((
            records,
            Sequences {
                last_inbox: position.last_inbox_seq,
                last_journal: position.last_journal_seq,
            },
        ))
    }

    fn prepare(
        context: &UserContext,
        id: &UserId,
        records: &mut UserRecords,
        command: &mut UserCommand,
    ) -> Result<(), EntityError> {
        let storage = &context.storage;
        match command {
            UserCommand::Player { playlist, command } => {
                records.load_session(storage, id, playlist)?;
                // The limit on sessions per listener counts the others as they are now.
                if let PlayerCommand::Start(start) = command {
                    start.other_sessions =
                        Some(records.other_session_touches(storage, id, playlist)?);
                }
                Ok(())
            }
            UserCommand::Playout(PlayoutCommand::Heartbeat(heartbeat)) => {
                records.load_playouts(storage, id)?;
                // The catalog as it is now; the decision records the tags it used.
                heartbeat.content_tags = storage.catalog.tags_of(&heartbeat.content_id)?;
                Ok(())
            }
            UserCommand::Playout(PlayoutCommand::UpdateEntitlements(_)) => {
                records.load_playouts(storage, id)
            }
        }
    }

    fn prepare_event(
        context: &UserContext,
        id: &UserId,
        records: &mut UserRecords,
        event: &UserEvent,
    ) -> Result<(), EntityError> {
        match event {
            UserEvent::Player { playlist, .. } => {
                records.load_session(&context.storage, id, playlist)
            }
            UserEvent::Playout(_) => records.load_playouts(&context.storage, id),
        }
    }

    fn apply(records: &mut UserRecords, inbox_seq: u64, events: &[UserEvent], replayed: bool) {
        records.apply(inbox_seq, events, replayed);
    }

    /// An expired or never started session is an answer (NOT_FOUND), and so is a listener at
    /// the session limit (SESSION_LIMIT): not bad input.
    fn is_bad_input(error: &UserError) -> bool {
        !matches!(
            error,
            UserError::Player(PlayerError::NoSession | PlayerError::TooManySessions { .. })
        )
    }

    fn holds_later(records: &UserRecords, command: &UserCommand, seq: u64) -> bool {
        match command {
            UserCommand::Player { playlist, .. } => records
                .sessions
                .get(playlist)
                .is_some_and(|meta| meta.last_applied_seq > seq),
            UserCommand::Playout(_) => records.playouts_seq.is_some_and(|applied| applied > seq),
        }
    }

    fn answer(
        context: &UserContext,
        id: &UserId,
        records: &UserRecords,
        command: &UserCommand,
        decided: Decided<'_, UserEvent, UserError>,
        now: Timestamp,
    ) -> Option<Vec<u8>> {
        let filed = match command {
            UserCommand::Player { playlist, .. } => records
                .sessions
                .get(playlist)
                .map(|meta| meta.last_answer)
                .unwrap_or_default(),
            UserCommand::Playout(_) => LastAnswer::default(),
        };
        answers::encode(
            &context.decider,
            id,
            &records.state,
            filed,
            command,
            decided,
            now,
        )
    }

    fn encode(id: &UserId, event: &UserEvent) -> EncodedEvent {
        codec::encode_user(id, event)
    }

    fn decode(id: &UserId, record: &JournalRecord) -> Result<UserEvent, CodecError> {
        codec::decode_user(
            id,
            &record.event_name,
            record.version,
            &record.payload,
            record.stored_at,
        )
    }

    fn persist_bucketed(
        context: &UserContext,
        id: &UserId,
        records: &mut UserRecords,
        applied: &[(u64, Vec<UserEvent>)],
    ) -> Result<bool, EntityError> {
        records.persist_bucketed(&context.storage, id, applied)
    }

    fn persist(
        context: &UserContext,
        id: &UserId,
        records: &mut UserRecords,
        sequences: Sequences,
        applied: &[(u64, Vec<UserEvent>)],
        writes: &mut MainWrites,
    ) -> Result<(), EntityError> {
        let position = UserMeta {
            last_inbox_seq: sequences.last_inbox,
            last_journal_seq: sequences.last_journal,
        };
        let in_playouts = records.persist(&context.storage, id, applied, position, writes);
        if !in_playouts {
            // Last: the records are never behind what it claims.
            context.storage.user_meta.save(writes, id, position);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::NodeConfig;
    use crate::storage::clock::SystemClock;
    use crate::storage::playout_store::StoredPlayouts;

    fn context(dir: &std::path::Path) -> UserContext {
        let config = NodeConfig::default();
        UserContext {
            storage: Storage::open(dir, &config, Arc::new(SystemClock)).unwrap(),
            decider: UserDecider::default(),
        }
    }

    fn position(last_inbox_seq: u64, last_journal_seq: u64) -> UserMeta {
        UserMeta {
            last_inbox_seq,
            last_journal_seq,
        }
    }

    /// A heartbeat writes the entity's position inside the playout record, a player command in
    /// `user_meta`: whichever was written last is where the entity stands.
    #[test]
    fn given_positions_in_both_records_when_loaded_then_the_entity_stands_at_the_later() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        let ann = UserId::parse("ann").unwrap();
        let playouts = |at: UserMeta| StoredPlayouts {
            last_applied_seq: at.last_inbox_seq,
            position: at,
            ..StoredPlayouts::default()
        };

        // Given a player command at 5 then a heartbeat at 7: the playout record is later.
        let store = &context.storage.user_meta;
        MainWrites::write_now(|writes| store.save(writes, &ann, position(5, 50))).unwrap();
        let store = &context.storage.playouts;
        MainWrites::write_now(|writes| store.save(writes, &ann, &playouts(position(7, 70))))
            .unwrap();
        let (records, sequences) = UserKind::load(&context, &ann).unwrap();
        assert_eq!((sequences.last_inbox, sequences.last_journal), (7, 70));
        // The playout record read for the position is kept, not read again.
        assert_eq!(records.playouts_seq, Some(7));

        // Given another player command at 9: user_meta is later.
        let store = &context.storage.user_meta;
        MainWrites::write_now(|writes| store.save(writes, &ann, position(9, 90))).unwrap();
        let (_, sequences) = UserKind::load(&context, &ann).unwrap();
        assert_eq!((sequences.last_inbox, sequences.last_journal), (9, 90));

        // A record from before positions were kept in it (zeros) leaves user_meta in charge.
        let bob = UserId::parse("bob").unwrap();
        let store = &context.storage.user_meta;
        MainWrites::write_now(|writes| store.save(writes, &bob, position(3, 30))).unwrap();
        let store = &context.storage.playouts;
        MainWrites::write_now(|writes| store.save(writes, &bob, &playouts(position(0, 0))))
            .unwrap();
        let (_, sequences) = UserKind::load(&context, &bob).unwrap();
        assert_eq!((sequences.last_inbox, sequences.last_journal), (3, 30));
    }
}
