//! Pure domain logic: one decider per actor kind (`initial`, `decide`, `evolve`).
//!
//! Nothing here imports sled, NATS, ractor or the clock: `now` is an argument (the broker's
//! stored timestamp of the inbox message), so replaying the log gives the same decisions.

pub mod catalog;
pub mod normalise;
pub mod player;
pub mod playout;
pub mod station;
pub mod time;
