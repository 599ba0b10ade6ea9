//! playhead's integration tests and benchmarks, against a real nats-server.
//!
//! - [`harness`]: the broker (started on a random port with a temp store, killed on drop),
//!   child processes, and deadline-bound waiting.
//! - [`mixed`]: a workload over every inbox, its model, and the checks against it.
//! - [`otlp`]: an in-process OTLP trace receiver.
//! - [`model`]: expected histories for generated observation streams; pipelined publishing.
//! - [`player`]: playlist fixtures.
//! - [`system`]: playhead's node and gateway, in-process or as child processes.
//! - [`systemd`]: `deploy/systemd/` read the way systemd reads it.

pub mod harness;
pub mod imports;
pub mod mixed;
pub mod model;
pub mod otlp;
pub mod player;
pub mod playout;
pub mod provider;
pub mod system;
pub mod systemd;
pub mod webdriver;
