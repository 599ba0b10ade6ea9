//! The journal: every state change of every entity, as versioned events in `PLAYHEAD_EVENTS`.
//!
//! - [`codec`]: domain events ↔ versioned `playhead.v1` payloads, with upcasters.

pub mod codec;
