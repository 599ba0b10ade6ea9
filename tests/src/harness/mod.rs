//! The shared test harness: a real nats-server per test, the workspace binaries as child
//! processes, and bounded waits.
//!
//! - `nats` (re-exported here): [`NatsServer`], a JetStream-enabled nats-server on a random port
//!   of 127.0.0.1 with a temporary store, restartable in place to simulate outages, killed on drop.
//! - [`process`]: [`process::workspace_binary`] and [`process::ChildProcess`] to run
//!   `playhead-node`, `playhead-gateway` and `playhead` the way they ship.
//! - [`wait`]: [`wait::eventually`] and [`wait::within`]; tests poll with a deadline or bound an
//!   await, and never sleep in the hope that something has happened.

mod nats;
pub mod process;
pub mod wait;

pub use nats::*;
