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
use crate::domain::player::PlayerError;
use crate::domain::playout::PlayoutCommand;
use crate::domain::time::Timestamp;
use crate::domain::user::{UserCommand, UserDecider, UserError, UserEvent, UserState};
use crate::journal::append::JournalRecord;
use crate::journal::codec::{self, CodecError, EncodedEvent};
use crate::runtime::{Decided, EntityError, EntityKind, Sequences};
use crate::storage::Storage;
use crate::storage::session_store::LastAnswer;
use crate::storage::user_meta_store::UserMeta;

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

    fn load(context: &UserContext, id: &UserId) -> Result<(UserRecords, Sequences), EntityError> {
        let meta = context.storage.user_meta.load(id)?;
        Ok((
            UserRecords::new(),
            Sequences {
                last_inbox: meta.last_inbox_seq,
                last_journal: meta.last_journal_seq,
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
            UserCommand::Player { playlist, .. } => records.load_session(storage, id, playlist),
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

    /// An expired or never started session is an answer (NOT_FOUND), not bad input.
    fn is_bad_input(error: &UserError) -> bool {
        !matches!(error, UserError::Player(PlayerError::NoSession))
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

    fn persist(
        context: &UserContext,
        id: &UserId,
        records: &mut UserRecords,
        sequences: Sequences,
        applied: &[(u64, Vec<UserEvent>)],
    ) -> Result<(), EntityError> {
        records.persist(&context.storage, id, applied)?;
        // Last: the records are never behind what it claims.
        context.storage.user_meta.save(
            id,
            UserMeta {
                last_inbox_seq: sequences.last_inbox,
                last_journal_seq: sequences.last_journal,
            },
        )?;
        Ok(())
    }
}
