//! Integration tests of playhead against a real nats-server, one binary for all.

mod bad_input;
mod catalog_flow;
mod crash_restart;
mod gateway_edges;
mod harness;
mod passivation;
mod player_flow;
mod playout_edges;
mod playout_flow;
mod snapshots;
mod station_flow;
