//! One user's records in memory, loaded lazily: each session it has touched (with the last
//! inbox sequence folded into it and the answer filed for a redelivery), and the playout record.
//! Folding updates only the records an event names, and a record already past a replayed
//! decision's inbox sequence skips it (it was written before a crash cut the commit short).

use std::collections::{BTreeSet, HashMap};

use playhead_proto::ids::{PlaylistId, UserId};

use super::answers;
use crate::domain::decider::Decider;
use crate::domain::playout::{Bookmark, PlayoutEvent, Slot, released_views};
use crate::domain::time::Timestamp;
use crate::domain::user::{UserDecider, UserEvent, UserState};
use crate::runtime::EntityError;
use crate::storage::playout_store::StoredPlayouts;
use crate::storage::session_store::LastAnswer;
use crate::storage::user_meta_store::UserMeta;
use crate::storage::{MainWrites, Storage};

/// Bookkeeping of one loaded session (present for every loaded playlist, with or without a
/// session).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SessionMeta {
    pub last_applied_seq: u64,
    pub last_answer: LastAnswer,
}

#[derive(Clone)]
pub struct UserRecords {
    pub(super) state: UserState,
    pub(super) sessions: HashMap<PlaylistId, SessionMeta>,
    /// The playout record's last applied inbox sequence, once it is loaded.
    pub(super) playouts_seq: Option<u64>,
    /// Views of slots released since the last commit that the viewing history lacks (their
    /// BEATs left the bookmark to the slot); the next commit stores them.
    released: Vec<Bookmark>,
}

impl UserRecords {
    pub(super) fn new() -> Self {
        Self {
            state: UserState::default(),
            sessions: HashMap::new(),
            playouts_seq: None,
            released: Vec::new(),
        }
    }

    pub(super) fn load_session(
        &mut self,
        storage: &Storage,
        user: &UserId,
        playlist: &PlaylistId,
    ) -> Result<(), EntityError> {
        if self.sessions.contains_key(playlist) {
            return Ok(());
        }
        let (session, meta) = match storage.sessions.load(user, playlist)? {
            Some(stored) => (
                Some(stored.session),
                SessionMeta {
                    last_applied_seq: stored.last_applied_seq,
                    last_answer: stored.last_answer,
                },
            ),
            None => (None, SessionMeta::default()),
        };
        self.state.sessions.insert(playlist.clone(), session);
        self.sessions.insert(playlist.clone(), meta);
        Ok(())
    }

    /// When each of the user's sessions other than `playlist`'s was last touched: the stored
    /// ones, overtaken by those this entity holds (decided and maybe not yet stored).
    pub(super) fn other_session_touches(
        &self,
        storage: &Storage,
        user: &UserId,
        playlist: &PlaylistId,
    ) -> Result<Vec<Timestamp>, EntityError> {
        let mut touches: HashMap<PlaylistId, Timestamp> =
            storage.sessions.touches(user)?.into_iter().collect();
        for (held, session) in &self.state.sessions {
            match session {
                Some(session) => touches.insert(held.clone(), session.last_touched_at),
                None => touches.remove(held),
            };
        }
        touches.remove(playlist);
        Ok(touches.into_values().collect())
    }

    pub(super) fn load_playouts(
        &mut self,
        storage: &Storage,
        user: &UserId,
    ) -> Result<(), EntityError> {
        if self.playouts_seq.is_some() {
            return Ok(());
        }
        self.take_playouts(storage.playouts.load(user)?);
        Ok(())
    }

    /// Holds a playout record read already (at load, for the position it carries).
    pub(super) fn take_playouts(&mut self, stored: StoredPlayouts) {
        self.state.playouts = stored.state;
        self.playouts_seq = Some(stored.last_applied_seq);
    }

    /// Folds one decision's events into the records they name.
    pub(super) fn apply(&mut self, inbox_seq: u64, events: &[UserEvent], replayed: bool) {
        let behind = |seq: u64| !replayed || seq < inbox_seq;
        let playlists: BTreeSet<&PlaylistId> = events
            .iter()
            .filter_map(|event| match event {
                UserEvent::Player { playlist, .. } => Some(playlist),
                UserEvent::Playout(_) => None,
            })
            .filter(|playlist| {
                behind(
                    self.sessions
                        .get(*playlist)
                        .map_or(0, |meta| meta.last_applied_seq),
                )
            })
            .collect();
        let playouts = behind(self.playouts_seq.unwrap_or(0));
        let mut state = std::mem::take(&mut self.state);
        // Few (at most the concurrency limit), and only those holding a view not stored.
        let unsaved_before: Vec<Slot> = if playouts {
            state
                .playouts
                .slots
                .iter()
                .filter(|slot| slot.unsaved_view().is_some())
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        for event in events {
            let folds = match event {
                UserEvent::Player { playlist, .. } => playlists.contains(playlist),
                UserEvent::Playout(_) => playouts,
            };
            if folds {
                state = UserDecider::evolve(state, event);
            }
        }
        for playlist in playlists {
            let last_answer = answers::filed_answer(playlist, events, &state);
            self.sessions.insert(
                playlist.clone(),
                SessionMeta {
                    last_applied_seq: inbox_seq,
                    last_answer,
                },
            );
        }
        if playouts
            && events
                .iter()
                .any(|event| matches!(event, UserEvent::Playout(_)))
        {
            self.playouts_seq = Some(inbox_seq);
            self.released
                .extend(released_views(&unsaved_before, &state.playouts));
        }
        self.state = state;
    }

    /// Writes the bucketed records `applied` touched: the sessions and the viewing history.
    /// Returns whether it wrote anything.
    ///
    /// The history gets the bookmarks the events store (not every BEAT's: see
    /// [`PlayoutEvent::stored_bookmark`]) and the views of released slots.
    pub(super) fn persist_bucketed(
        &mut self,
        storage: &Storage,
        user: &UserId,
        applied: &[(u64, Vec<UserEvent>)],
    ) -> Result<bool, EntityError> {
        let mut touched: BTreeSet<&PlaylistId> = BTreeSet::new();
        let released = std::mem::take(&mut self.released);
        let mut bookmarks = Vec::new();
        let mut playouts_touched = false;
        for event in applied.iter().flat_map(|(_, events)| events) {
            match event {
                UserEvent::Player { playlist, .. } => {
                    touched.insert(playlist);
                }
                UserEvent::Playout(event) => {
                    playouts_touched = true;
                    bookmarks.extend(PlayoutEvent::stored_bookmark(event));
                }
            }
        }
        let sessions: Vec<_> = touched
            .into_iter()
            .filter_map(|playlist| {
                let session = self.state.session(playlist).as_ref()?;
                let meta = self.sessions.get(playlist)?;
                Some((playlist, session, meta.last_applied_seq, meta.last_answer))
            })
            .collect();
        storage.sessions.save_parts(user, &sessions)?;
        let mut wrote = !sessions.is_empty();
        if playouts_touched && (!bookmarks.is_empty() || !released.is_empty()) {
            let live_views: Vec<Bookmark> = self.state.playouts.live_views().collect();
            let report = storage.view_history.record_beside_live_views(
                user,
                &released,
                &bookmarks,
                &live_views,
            )?;
            wrote |= report.written > 0 || report.evicted > 0;
        }
        Ok(wrote)
    }

    /// Writes the playout record into `writes` when `applied` touched it, with `position` in
    /// it; returns whether it did (then the entity's position needs no other write). After
    /// [`Self::persist_bucketed`]: a crash in between replays to the same history.
    pub(super) fn persist(
        &mut self,
        storage: &Storage,
        user: &UserId,
        applied: &[(u64, Vec<UserEvent>)],
        position: UserMeta,
        writes: &mut MainWrites,
    ) -> bool {
        let playouts_touched = applied
            .iter()
            .flat_map(|(_, events)| events)
            .any(|event| matches!(event, UserEvent::Playout(_)));
        if playouts_touched {
            storage.playouts.save(
                writes,
                user,
                &StoredPlayouts {
                    state: self.state.playouts.clone(),
                    last_applied_seq: self.playouts_seq.unwrap_or(0),
                    position,
                },
            );
        }
        playouts_touched
    }
}
