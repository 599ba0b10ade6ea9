//! The journal: every state change of every entity, as versioned domain events in
//! `PLAYHEAD_EVENTS`; the local sled state is its fold.
//!
//! - [`append`]: exactly-once appends with per-entity optimistic concurrency; reads of one
//!   entity's journal.
//! - [`codec`]: domain events ↔ versioned protobuf payloads, with upcasters.

pub mod append;
pub mod codec;
