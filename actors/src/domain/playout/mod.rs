//! Playout decider: the video heartbeats of one user. It keeps the user's entitlement tags and
//! concurrency slots, admits or refuses playouts, and records bookmarks.
//!
//! - START is entitled when the content's tags (looked up by the actor and passed in the
//!   command; `None` = unknown content) intersect the tags valid at `now`; it is admitted while
//!   fewer than `limit` slots are live, or when its device already holds one (the device
//!   reclaims its slot: a crashed app never blocks itself).
//! - BEAT refreshes the slot; a BEAT without a live slot is decided like a START (re-admission);
//!   an entitlement that lapsed since START stops it.
//! - END frees the slot and keeps the final bookmark, even for a playout the actor never saw.
//! - **Bookmarks are kept sparingly.** Every heartbeat is a view (its position is journaled and
//!   its slot holds the latest one), but the viewing history stores a bookmark only on START,
//!   END, a STOP of a BEAT, every `bookmark_every_beats`-th BEAT of a playout, and the first BEAT
//!   in a new `bookmark_bucket` (so the stored record is refreshed into each time bucket and
//!   never expires while watched). `HeartbeatRecorded::bookmarked` records that choice, so
//!   replay stores the same bookmarks whatever the policy is then. A slot released with views
//!   not yet stored (expired, revoked, reclaimed, replaced) hands its latest one over
//!   ([`released_views`]); readers overlay the slots' latest views ([`PlayoutState::live_views`])
//!   on the stored history, so what they see is as if every BEAT had been stored.
//! - A slot with no heartbeat for `slot_timeout` is free. Nothing runs on a timer: every command
//!   first releases the slots expired at `now` (`SlotExpired`) and, when the limit is lower than
//!   the live slots (a downgrade), the newest ones (`SlotRevoked`), so `slots.len() <= limit`
//!   holds after every decision.
//!
//! **The answer is derived from the events.** Each heartbeat yields exactly one answering event
//! (`PlayoutStarted`, `HeartbeatRecorded`, `PlayoutEnded` or `PlayoutStopped`), which carries
//! its `next_heartbeat`; [`PlayoutEvent::decision`] / [`decision`] read the answer back, so
//! replay needs no policy. `evolve` also files the answer per playout
//! ([`PlayoutState::last_decision`], the latest [`MAX_RECENT_DECISIONS`]), so a redelivered
//! heartbeat is answered again from the stored state. Only `PlayoutStopped` is a STOP: END is
//! answered CONTINUE / OK (an acknowledgement; nothing was violated and the client is stopping
//! anyway), so the player's "only an explicit STOP stops playback" rule holds.
//!
//! The first interval after an admission is jittered in [50%, 100%] of `heartbeat_interval`,
//! from FNV-1a of the playout id (plus a finalizer, see `spread_hash`): heartbeats that all
//! start together spread out, and replay gives the same answer.
//!
//! Devices, playouts, tags and content are the newtypes of [`playhead_proto::ids`], parsed
//! where a command is built: an id that could inject a subject token never reaches the decider,
//! which only rejects what the types cannot rule out ([`PlayoutError`]).
//!
//! The types, the state and the events live here; [`PlayoutPolicy::decide`] in `decide`,
//! [`evolve()`] in `evolve`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use playhead_proto::ids::{ContentId, DeviceId, PlayoutId, Tag};

use super::time::Timestamp;

mod decide;
mod evolve;

pub use evolve::evolve;

pub use playhead_client::command::{MAX_CONCURRENCY_LIMIT, MAX_ENTITLEMENTS};
/// How many per-playout answers the state keeps for redeliveries.
pub const MAX_RECENT_DECISIONS: usize = 16;

/// Limits of playouts, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutPolicy {
    /// The limit of a user whose entitlements never set one.
    pub default_concurrency_limit: u32,
    /// A slot with no heartbeat for this long is free.
    pub slot_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// A BEAT stores its bookmark every this many BEATs of a playout (at least 1; 1 = every).
    pub bookmark_every_beats: u32,
    /// The viewing history's time-bucket width: the first BEAT in a new bucket stores its
    /// bookmark, so a record being watched never expires with an old bucket.
    pub bookmark_bucket: Duration,
}

impl Default for PlayoutPolicy {
    fn default() -> Self {
        Self {
            default_concurrency_limit: 2,
            slot_timeout: Duration::from_secs(25 * 60),
            heartbeat_interval: Duration::from_secs(10 * 60),
            bookmark_every_beats: DEFAULT_BOOKMARK_EVERY_BEATS,
            bookmark_bucket: Duration::from_secs(24 * 3600),
        }
    }
}

/// Default of [`PlayoutPolicy::bookmark_every_beats`]: with 10-minute heartbeats a stored
/// bookmark every 100 minutes, the history write of a BEAT cut tenfold.
pub const DEFAULT_BOOKMARK_EVERY_BEATS: u32 = 10;

/// Why a playout policy is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayoutPolicyError {
    #[error("default_concurrency_limit is {0}; it must be between 1 and {MAX_CONCURRENCY_LIMIT}")]
    ConcurrencyLimit(u32),
    #[error("heartbeat_interval must be at least 1 ms")]
    ZeroInterval,
    #[error(
        "slot_timeout ({timeout:?}) must be longer than heartbeat_interval ({interval:?}), \
         or every slot expires between two heartbeats"
    )]
    TimeoutNotAboveInterval {
        timeout: Duration,
        interval: Duration,
    },
    #[error("bookmark_every_beats must be at least 1 (1 stores every BEAT's bookmark)")]
    ZeroBookmarkEvery,
    #[error("bookmark_bucket must be at least 1 ms")]
    ZeroBookmarkBucket,
}

impl PlayoutPolicy {
    pub fn validate(&self) -> Result<(), PlayoutPolicyError> {
        if !(1..=MAX_CONCURRENCY_LIMIT).contains(&self.default_concurrency_limit) {
            return Err(PlayoutPolicyError::ConcurrencyLimit(
                self.default_concurrency_limit,
            ));
        }
        if self.heartbeat_interval.as_millis() == 0 {
            return Err(PlayoutPolicyError::ZeroInterval);
        }
        if self.slot_timeout <= self.heartbeat_interval {
            return Err(PlayoutPolicyError::TimeoutNotAboveInterval {
                timeout: self.slot_timeout,
                interval: self.heartbeat_interval,
            });
        }
        if self.bookmark_every_beats == 0 {
            return Err(PlayoutPolicyError::ZeroBookmarkEvery);
        }
        if self.bookmark_bucket.as_millis() == 0 {
            return Err(PlayoutPolicyError::ZeroBookmarkBucket);
        }
        Ok(())
    }

    /// Whether a BEAT of `content` on `slot` at `now` stores its bookmark: every
    /// `bookmark_every_beats`-th BEAT since the last stored one, the first in a newer history
    /// bucket, one naming another content than the slot's (the slot keeps the view of its own
    /// content only), and one not later than the user's previous view (a reader tells views
    /// apart by time, so an unstored view must be newer than every view before it).
    pub fn beat_stores_bookmark(
        &self,
        state: &PlayoutState,
        slot: &Slot,
        content: &ContentId,
        now: Timestamp,
    ) -> bool {
        let width = (self.bookmark_bucket.as_millis() as u64).max(1);
        *content != slot.content_id
            || now <= state.last_view_at
            || slot.beats_unsaved.saturating_add(1) >= self.bookmark_every_beats
            || now.as_millis() / width > slot.bookmarked_at.as_millis() / width
    }
}

/// A tag the user holds until `valid_until` (exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    pub tag: Tag,
    pub valid_until: Timestamp,
}

/// Upserts tags (a tag given twice: the last one wins) and sets the limit when given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateEntitlements {
    pub entitlements: Vec<Entitlement>,
    pub concurrency_limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeartbeatKind {
    Start,
    Beat,
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub device_id: DeviceId,
    pub playout_id: PlayoutId,
    pub content_id: ContentId,
    /// The content's tags from the catalog; `None` when the catalog does not know it.
    pub content_tags: Option<BTreeSet<Tag>>,
    pub kind: HeartbeatKind,
    pub position_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutCommand {
    UpdateEntitlements(UpdateEntitlements),
    Heartbeat(Heartbeat),
}

/// One stream in play, holding a seat of the user's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub device_id: DeviceId,
    pub playout_id: PlayoutId,
    pub content_id: ContentId,
    pub started_at: Timestamp,
    pub last_heartbeat_at: Timestamp,
    /// The latest view of `content_id`: its position and when (START or BEAT).
    pub position_ms: u64,
    pub viewed_at: Timestamp,
    /// BEATs since the last bookmark the viewing history stored for this playout.
    pub beats_unsaved: u32,
    /// When that bookmark was stored.
    pub bookmarked_at: Timestamp,
}

impl Slot {
    pub fn is_live(&self, now: Timestamp, policy: &PlayoutPolicy) -> bool {
        now.saturating_duration_since(self.last_heartbeat_at) < policy.slot_timeout
    }

    /// The latest view, when the viewing history does not hold it yet.
    pub fn unsaved_view(&self) -> Option<Bookmark> {
        (self.beats_unsaved > 0).then(|| Bookmark {
            content_id: self.content_id.clone(),
            position_ms: self.position_ms,
            at: self.viewed_at,
            view_ended: false,
        })
    }
}

/// The views the viewing history must store because their slots are gone: each slot of
/// `before` holding an unsaved view whose playout no longer holds the same slot in `after`
/// (expired, revoked, reclaimed, ended, stopped, or replaced by a new START). Slots are few
/// (at most [`MAX_CONCURRENCY_LIMIT`]), so this is cheap.
pub fn released_views(before: &[Slot], after: &PlayoutState) -> Vec<Bookmark> {
    before
        .iter()
        .filter(|slot| {
            !after.slots.iter().any(|kept| {
                kept.playout_id == slot.playout_id && kept.started_at == slot.started_at
            })
        })
        .filter_map(Slot::unsaved_view)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeartbeatAction {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeartbeatReason {
    Ok,
    NotEntitled,
    ConcurrencyLimit,
}

/// The rule a STOP names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    NotEntitled,
    ConcurrencyLimit,
}

impl From<StopReason> for HeartbeatReason {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::NotEntitled => HeartbeatReason::NotEntitled,
            StopReason::ConcurrencyLimit => HeartbeatReason::ConcurrencyLimit,
        }
    }
}

/// The answer to one heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeartbeatDecision {
    pub action: HeartbeatAction,
    pub reason: HeartbeatReason,
    pub next_heartbeat: Duration,
}

impl HeartbeatDecision {
    fn proceed(next_heartbeat: Duration) -> Self {
        Self {
            action: HeartbeatAction::Continue,
            reason: HeartbeatReason::Ok,
            next_heartbeat,
        }
    }
}

/// What the viewing history of (user, content) takes from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookmark {
    pub content_id: ContentId,
    pub position_ms: u64,
    pub at: Timestamp,
    /// The view is over (END, or a STOP while playing).
    pub view_ended: bool,
}

/// An answer filed for redeliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentDecision {
    pub playout_id: PlayoutId,
    pub decision: HeartbeatDecision,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlayoutState {
    /// Tag → valid until (exclusive); one record per tag.
    pub entitlements: BTreeMap<Tag, Timestamp>,
    /// `None`: the policy's default.
    pub concurrency_limit: Option<u32>,
    /// In admission order, oldest first; unique by device and by playout. Some may have
    /// expired since the last command: ask [`Slot::is_live`].
    pub slots: Vec<Slot>,
    /// The latest answer per playout, oldest first.
    pub recent_decisions: VecDeque<RecentDecision>,
    /// The time of the user's latest view (any heartbeat that watched something).
    pub last_view_at: Timestamp,
}

/// Playout domain events, named in the past tense (version 1; `PlayoutStarted` version 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutEvent {
    EntitlementsUpdated {
        entitlements: Vec<Entitlement>,
        concurrency_limit: Option<u32>,
        at: Timestamp,
    },
    /// No heartbeat for `slot_timeout`: the seat is free.
    SlotExpired {
        device_id: DeviceId,
        playout_id: PlayoutId,
        content_id: ContentId,
        last_heartbeat_at: Timestamp,
        at: Timestamp,
    },
    /// The limit fell below the live slots; the newest lose their seat, and their next BEAT
    /// is decided as a re-admission.
    SlotRevoked {
        device_id: DeviceId,
        playout_id: PlayoutId,
        content_id: ContentId,
        at: Timestamp,
    },
    /// The device started another playout: its previous one ends.
    SlotReclaimed {
        device_id: DeviceId,
        previous_playout_id: PlayoutId,
        previous_content_id: ContentId,
        playout_id: PlayoutId,
        at: Timestamp,
    },
    /// Admitted: by START, or by a BEAT that had no live slot (`readmitted`).
    PlayoutStarted {
        device_id: DeviceId,
        playout_id: PlayoutId,
        content_id: ContentId,
        position_ms: u64,
        readmitted: bool,
        next_heartbeat: Duration,
        at: Timestamp,
        /// The catalog tags the admission was decided on (`None`: unknown content), recorded
        /// so the decision is auditable and replay never needs the catalog (version 2).
        content_tags: Option<BTreeSet<Tag>>,
    },
    HeartbeatRecorded {
        device_id: DeviceId,
        playout_id: PlayoutId,
        content_id: ContentId,
        position_ms: u64,
        next_heartbeat: Duration,
        at: Timestamp,
        /// The viewing history stores this bookmark ([`PlayoutPolicy::beat_stores_bookmark`]);
        /// otherwise only the slot holds it until a later one is stored.
        bookmarked: bool,
    },
    PlayoutEnded {
        device_id: DeviceId,
        playout_id: PlayoutId,
        content_id: ContentId,
        position_ms: u64,
        /// Whether the playout held a live slot (an END may come for one never seen).
        freed_slot: bool,
        next_heartbeat: Duration,
        at: Timestamp,
    },
    /// The only event that stops playback. Frees the playout's slot if it had one.
    PlayoutStopped {
        device_id: DeviceId,
        playout_id: PlayoutId,
        content_id: ContentId,
        /// The refused heartbeat: START or BEAT.
        kind: HeartbeatKind,
        reason: StopReason,
        position_ms: u64,
        next_heartbeat: Duration,
        at: Timestamp,
    },
}

impl PlayoutEvent {
    /// The event name used in subjects.
    pub fn name(&self) -> &'static str {
        match self {
            PlayoutEvent::EntitlementsUpdated { .. } => "EntitlementsUpdated",
            PlayoutEvent::SlotExpired { .. } => "SlotExpired",
            PlayoutEvent::SlotRevoked { .. } => "SlotRevoked",
            PlayoutEvent::SlotReclaimed { .. } => "SlotReclaimed",
            PlayoutEvent::PlayoutStarted { .. } => "PlayoutStarted",
            PlayoutEvent::HeartbeatRecorded { .. } => "HeartbeatRecorded",
            PlayoutEvent::PlayoutEnded { .. } => "PlayoutEnded",
            PlayoutEvent::PlayoutStopped { .. } => "PlayoutStopped",
        }
    }

    /// The answer this event gives to its heartbeat, with the playout it concerns; `None` for
    /// events that answer nothing (entitlements, slot housekeeping).
    pub fn decision(&self) -> Option<(&PlayoutId, HeartbeatDecision)> {
        match self {
            PlayoutEvent::PlayoutStarted {
                playout_id,
                next_heartbeat,
                ..
            }
            | PlayoutEvent::HeartbeatRecorded {
                playout_id,
                next_heartbeat,
                ..
            }
            | PlayoutEvent::PlayoutEnded {
                playout_id,
                next_heartbeat,
                ..
            } => Some((playout_id, HeartbeatDecision::proceed(*next_heartbeat))),
            PlayoutEvent::PlayoutStopped {
                playout_id,
                reason,
                next_heartbeat,
                ..
            } => Some((
                playout_id,
                HeartbeatDecision {
                    action: HeartbeatAction::Stop,
                    reason: (*reason).into(),
                    next_heartbeat: *next_heartbeat,
                },
            )),
            _ => None,
        }
    }

    /// What the viewing history stores for this event: [`Self::bookmark`], except for a
    /// BEAT that left its bookmark to its slot (`bookmarked: false`).
    pub fn stored_bookmark(&self) -> Option<Bookmark> {
        match self {
            PlayoutEvent::HeartbeatRecorded {
                bookmarked: false, ..
            } => None,
            _ => self.bookmark(),
        }
    }

    /// The view this event records, what a reader of the viewing history sees (every
    /// heartbeat's position); `None` when nothing was watched (a refused START, housekeeping).
    pub fn bookmark(&self) -> Option<Bookmark> {
        let (content_id, position_ms, at, view_ended) = match self {
            PlayoutEvent::PlayoutStarted {
                content_id,
                position_ms,
                at,
                ..
            }
            | PlayoutEvent::HeartbeatRecorded {
                content_id,
                position_ms,
                at,
                ..
            } => (content_id, position_ms, at, false),
            PlayoutEvent::PlayoutEnded {
                content_id,
                position_ms,
                at,
                ..
            }
            | PlayoutEvent::PlayoutStopped {
                content_id,
                position_ms,
                at,
                kind: HeartbeatKind::Beat,
                ..
            } => (content_id, position_ms, at, true),
            _ => return None,
        };
        Some(Bookmark {
            content_id: content_id.clone(),
            position_ms: *position_ms,
            at: *at,
            view_ended,
        })
    }
}

/// The answer to the heartbeat that produced `events`; `None` for an entitlements update.
pub fn decision(events: &[PlayoutEvent]) -> Option<HeartbeatDecision> {
    events
        .iter()
        .rev()
        .find_map(|event| event.decision().map(|(_, decision)| decision))
}

/// Why a playout command was rejected (bad input: nothing is decided).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayoutError {
    #[error("the user would hold {count} entitlement tags; at most {MAX_ENTITLEMENTS} are allowed")]
    TooManyEntitlements { count: usize },
    #[error(
        "concurrency limit {0} is out of range; it must be between 1 and {MAX_CONCURRENCY_LIMIT}"
    )]
    InvalidConcurrencyLimit(u32),
}

pub fn initial() -> PlayoutState {
    PlayoutState::default()
}

impl PlayoutState {
    /// The limit in force: the user's own, else the policy's default.
    pub fn concurrency_limit(&self, policy: &PlayoutPolicy) -> u32 {
        self.concurrency_limit
            .unwrap_or(policy.default_concurrency_limit)
    }

    /// The slots holding a seat at `now` (what `ListPlayouts` shows).
    pub fn live_slots<'a>(
        &'a self,
        now: Timestamp,
        policy: &'a PlayoutPolicy,
    ) -> impl Iterator<Item = &'a Slot> + 'a {
        self.slots
            .iter()
            .filter(move |slot| slot.is_live(now, policy))
    }

    /// The tags valid at `now` (what `CheckEntitlements` answers from).
    pub fn held_tags(&self, now: Timestamp) -> impl Iterator<Item = &Tag> {
        self.entitlements
            .iter()
            .filter(move |(_, valid_until)| now < **valid_until)
            .map(|(tag, _)| tag)
    }

    /// Whether content with `content_tags` may be watched at `now`; unknown content may not.
    pub fn is_entitled(&self, content_tags: Option<&BTreeSet<Tag>>, now: Timestamp) -> bool {
        content_tags.is_some_and(|tags| {
            tags.iter().any(|tag| {
                self.entitlements
                    .get(tag)
                    .is_some_and(|valid_until| now < *valid_until)
            })
        })
    }

    /// The slots' latest views the viewing history does not hold yet, to overlay on it.
    pub fn live_views(&self) -> impl Iterator<Item = Bookmark> + '_ {
        self.slots.iter().filter_map(Slot::unsaved_view)
    }

    /// The latest answer given to `playout_id`, to answer a redelivered heartbeat again.
    pub fn last_decision(&self, playout_id: &PlayoutId) -> Option<HeartbeatDecision> {
        self.recent_decisions
            .iter()
            .rev()
            .find(|recent| recent.playout_id == *playout_id)
            .map(|recent| recent.decision)
    }
}

impl super::decider::Decider for PlayoutPolicy {
    type Command = PlayoutCommand;
    type Event = PlayoutEvent;
    type State = PlayoutState;
    type Error = PlayoutError;

    fn initial() -> PlayoutState {
        initial()
    }

    fn decide(
        &self,
        command: &PlayoutCommand,
        state: &PlayoutState,
        now: Timestamp,
    ) -> Result<Vec<PlayoutEvent>, PlayoutError> {
        PlayoutPolicy::decide(self, command, state, now)
    }

    fn evolve(state: PlayoutState, event: &PlayoutEvent) -> PlayoutState {
        evolve(state, event)
    }
}

#[cfg(test)]
mod tests;
