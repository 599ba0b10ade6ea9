//! Pure domain logic: one decider per actor kind (`initial`, `decide`, `evolve`).
//!
//! Nothing here imports sled, NATS, ractor or the clock: `now` is an argument (the broker's
//! stored timestamp of the inbox message), so replaying the log gives the same decisions.
//!
//! - [`decider`]: the `Decider` trait every kind implements, and the given/when/then harness.
//! - [`station`], [`player`], [`playout`], [`catalog`]: the deciders.
//! - [`user`]: the user entity's commands and events (player and playout together).
//! - [`enrichment`]: what the enrichment provider knows of a song, and its pure mechanisms.
//! - [`normalise`], [`time`]: shared helpers.

pub mod catalog;
pub mod decider;
pub mod enrichment;
pub mod normalise;
pub mod player;
pub mod playout;
pub mod show;
pub mod station;
pub mod time;
pub mod user;
