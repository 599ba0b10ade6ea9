//! The entity kinds: how each plugs its decider, storage and codec into the shell.
//!
//! - [`station`]: song observations → plays and now-playing.
//! - [`user`]: player sessions and playouts of one listener.
//! - [`catalog`]: content items' tags.
//! - `round_trips` (tests): each kind's state read back from sled and rebuilt from the journal.

pub mod catalog;
pub mod station;
pub mod user;

#[cfg(test)]
mod round_trips;
