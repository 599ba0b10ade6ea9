//! The journal: the durable log that sled state is folded from, and the snapshots that bound
//! how much of it a rebuild replays.
//!
//! - [`snapshot`]: raw copies of selected sled trees in the JetStream object store.

pub mod snapshot;
