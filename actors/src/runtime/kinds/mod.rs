//! The entity kinds: how each plugs its decider, storage and codec into the shell.
//!
//! - [`station`]: song observations → plays and now-playing.
//! - [`user`]: player sessions and playouts of one listener.
//! - [`catalog`]: content items' tags.

pub mod catalog;
pub mod station;
pub mod user;
