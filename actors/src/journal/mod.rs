//! The journal: every state change of every entity, as versioned domain events in
//! `PLAYHEAD_EVENTS`; the local sled state is its fold, and snapshots bound how much of it a
//! rebuild replays.
//!
//! - [`append`]: exactly-once appends with per-entity optimistic concurrency; reads of one
//!   entity's journal.
//! - [`codec`]: domain events ↔ versioned protobuf payloads, with upcasters.
//! - [`snapshot`]: raw copies of selected sled trees in the JetStream object store.

pub mod append;
pub mod codec;
pub mod snapshot;
