//! The user entity: a thin shell around the user's deciders, the player (one session per
//! playlist, [`player`]) and the playouts (entitlements, concurrency slots and bookmarks,
//! [`playout`]). Per slice of commands it skips sequences already applied (answering them
//! again from the stored answer), decides, publishes the events, persists what changed (the
//! touched sessions in one batch, which refreshes their sliding TTL; the viewing history, then
//! the playout record that holds the last sequence applied), and then publishes each answer to
//! the command's `Playhead-Reply-To`.

mod player;
mod playout;

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::subjects::{EventFamily, ReplySubject};
use tracing::Instrument;

use crate::domain::player::{PlayerCommand, PlayerPolicy};
use crate::domain::playout::{Bookmark, Heartbeat, PlayoutPolicy, UpdateEntitlements};
use crate::domain::time::Timestamp;
use crate::events::{self, OutgoingEvent};
use crate::metrics::NodeMetrics;
use crate::sharding::{Entity, EntityError, Envelope, Outcome};
use crate::storage::Storage;
use crate::storage::playout_store::StoredPlayouts;
use crate::storage::session_store::StoredSession;
use crate::telemetry;

/// What every user entity shares.
pub struct UserContext {
    pub storage: Storage,
    pub jetstream: jetstream::Context,
    /// Replies go out as core NATS messages.
    pub client: async_nats::Client,
    pub metrics: Arc<NodeMetrics>,
    pub player_policy: PlayerPolicy,
    pub playout_policy: PlayoutPolicy,
}

/// A screened user-inbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    /// Where the decision goes, when the publisher asked for it.
    pub reply_to: Option<ReplySubject>,
    pub message: UserMessage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMessage {
    Player {
        playlist: PlaylistId,
        command: PlayerCommand,
    },
    /// The content's tags are left unset by screening: the actor reads them from the catalog
    /// when it decides.
    Heartbeat(Heartbeat),
    /// Not answered: an update has no decision to report.
    Entitlements(UpdateEntitlements),
}

pub struct UserEntity {
    id: UserId,
    /// Sessions read so far (`None`: none stored); loaded on first use, so a user with many
    /// playlists costs memory only for those in play.
    sessions: HashMap<PlaylistId, Option<StoredSession>>,
    /// The playout record, loaded on the user's first heartbeat or entitlements update.
    playouts: Option<StoredPlayouts>,
}

/// An encoded decision to publish once state is persisted.
struct PendingReply {
    subject: ReplySubject,
    payload: Vec<u8>,
}

/// One batch decided into copies of the entity's state: on error `self` is left as it was.
#[derive(Default)]
struct Working {
    sessions: HashMap<PlaylistId, Option<StoredSession>>,
    touched_sessions: Vec<PlaylistId>,
    playouts: Option<StoredPlayouts>,
    playouts_touched: bool,
    bookmarks: Vec<Bookmark>,
    outgoing: Vec<OutgoingEvent>,
    replies: Vec<PendingReply>,
}

/// Where a command stands in the inbox: its sequence, and the broker time it is decided at.
#[derive(Debug, Clone, Copy)]
struct Position {
    seq: u64,
    now: Timestamp,
}

/// What one command came to.
struct Decided {
    outcome: Outcome,
    /// The encoded answer, for a publisher that asked for one.
    reply: Option<Vec<u8>>,
}

impl Entity for UserEntity {
    type Id = UserId;
    type Command = UserCommand;
    type Context = UserContext;

    const KIND: &'static str = "user";

    fn load(id: UserId, _context: &UserContext) -> Result<Self, EntityError> {
        Ok(Self {
            id,
            sessions: HashMap::new(),
            playouts: None,
        })
    }

    async fn apply(
        &mut self,
        context: &Arc<UserContext>,
        batch: Vec<Envelope<UserCommand>>,
    ) -> Result<Vec<Outcome>, EntityError> {
        let span = tracing::debug_span!("user.apply", user = %self.id, commands = batch.len());
        telemetry::adopt_context(
            &span,
            batch.first().and_then(|envelope| envelope.headers.as_ref()),
        );
        async {
            let mut working = Working::default();
            let mut outcomes = Vec::with_capacity(batch.len());
            for envelope in batch {
                let Envelope {
                    seq,
                    now,
                    command: UserCommand { reply_to, message },
                    ..
                } = envelope;
                let at = Position { seq, now };
                let decided = match message {
                    UserMessage::Player { playlist, command } => {
                        self.player(context, &mut working, playlist, &command, at)?
                    }
                    UserMessage::Heartbeat(heartbeat) => {
                        self.heartbeat(context, &mut working, heartbeat, at)?
                    }
                    UserMessage::Entitlements(update) => {
                        self.entitlements(context, &mut working, update, at)?
                    }
                };
                if let (Some(subject), Some(payload)) = (reply_to, decided.reply) {
                    working.replies.push(PendingReply { subject, payload });
                }
                outcomes.push(decided.outcome);
            }
            let replies = self.commit(context, working).await?;
            send_replies(context, replies).await;
            Ok(outcomes)
        }
        .instrument(span)
        .await
    }
}

impl UserEntity {
    /// Publishes the batch's events, persists what it changed, and adopts the new state;
    /// returns the replies to send.
    async fn commit(
        &mut self,
        context: &UserContext,
        working: Working,
    ) -> Result<Vec<PendingReply>, EntityError> {
        let Working {
            sessions,
            touched_sessions,
            playouts,
            playouts_touched,
            bookmarks,
            outgoing,
            replies,
        } = working;
        if !outgoing.is_empty() {
            events::publish(
                &context.jetstream,
                &context.metrics,
                EventFamily::User,
                self.id.as_str(),
                outgoing,
            )
            .await?;
        }
        let _persist = tracing::debug_span!(
            "persist",
            sessions = touched_sessions.len(),
            bookmarks = bookmarks.len()
        )
        .entered();
        let to_save: Vec<(&PlaylistId, &StoredSession)> = touched_sessions
            .iter()
            .filter_map(|playlist| {
                sessions
                    .get(playlist)
                    .and_then(Option::as_ref)
                    .map(|stored| (playlist, stored))
            })
            .collect();
        if !to_save.is_empty() {
            context.storage.sessions.save(&self.id, &to_save)?;
        }
        if let Some(stored) = playouts.as_ref().filter(|_| playouts_touched) {
            // History before the record: after a crash in between, the redelivered heartbeats
            // are decided again (the record's sequence did not move) and record the same
            // bookmarks, which the history takes as no change.
            context.storage.view_history.record(&self.id, &bookmarks)?;
            context.storage.playouts.save(&self.id, stored)?;
        }
        self.sessions.extend(sessions);
        if playouts.is_some() {
            self.playouts = playouts;
        }
        Ok(replies)
    }
}

/// Best effort: a publisher that went away does not hold up the partition.
async fn send_replies(context: &UserContext, replies: Vec<PendingReply>) {
    for PendingReply { subject, payload } in replies {
        let mut headers = HeaderMap::new();
        telemetry::inject_context(&mut headers);
        if let Err(error) = context
            .client
            .publish_with_headers(subject.as_str().to_owned(), headers, payload.into())
            .await
        {
            tracing::warn!(subject = subject.as_str(), %error, "cannot publish a reply");
        }
    }
}
