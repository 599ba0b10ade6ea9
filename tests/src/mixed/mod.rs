//! A mixed workload over every inbox, its model, and the checks that compare a running system
//! with the model (query answers and the journal, event by event).
//!
//! - [`workload`]: the deterministic generator.
//! - [`model`]: the fold of what the inboxes stored.
//! - [`check`]: the comparisons.

pub mod check;
pub mod model;
pub mod workload;
