//! A mixed workload over every inbox, its model, and the checks that compare a running system
//! with the model (query answers and the journal, event by event).
//!
//! - [`workload`]: the deterministic generator.
//! - [`model`]: the fold of what the inboxes stored.
//! - [`replies`]: the answers a node sends, as received.
//! - [`check`]: the comparisons.

pub mod check;
pub mod model;
pub mod replies;
pub mod workload;
