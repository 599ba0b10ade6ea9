//! playhead's gateway: a thin tonic server over NATS, and the `playhead` CLI's client code.
//!
//! - [`server`]: assembly, reflection, shutdown.
//! - [`auth`]: bearer tokens (signed, with roles) and who may call what.
//! - [`health`]: gRPC health and `/readyz` that follow the broker connection.
//! - [`station`], [`player`], [`playout`]: the `StationService`, `PlayerService` and
//!   `PlayoutService` handlers.
//! - [`import`]: the `ImportService` handlers (with an upload's bounded body, and the status
//!   watch); [`show`]: the `ShowService` handler.
//! - [`node_client`]: queries, commands and their routed replies over NATS.
//! - [`now_playing`]: the KV-watch-fed now-playing cache; [`follow`]: following a KV bucket.
//! - [`settings`]: what the nodes publish for the gateways (the heartbeat interval).
//! - [`config`]: the layered settings (defaults, TOML file, environment, flags).
//! - [`console`]: the operator's web console (embedded page, JSON + SSE API).
//! - [`error`]: gateway errors and their one mapping to gRPC codes.
//! - [`metrics`]: the gateway's metrics; [`rpc_layer`]: the tower layer that traces and counts every RPC.

pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod follow;
pub mod health;
pub mod import;
pub mod metrics;
pub mod node_client;
pub mod now_playing;
pub mod player;
pub mod playout;
pub mod rpc_layer;
pub mod server;
pub mod settings;
pub mod show;
pub mod station;
