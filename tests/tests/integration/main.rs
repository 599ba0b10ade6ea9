//! Integration tests of playhead against a real nats-server, one binary for all.

mod auth;
mod bad_input;
mod broker_auth;
mod browser;
mod catalog_flow;
mod console;
mod crash_restart;
mod dead_letter_failures;
mod dead_letter_hygiene;
mod deploy_files;
mod fatal_exit;
mod gateway_edges;
mod harness;
mod health;
mod imports;
mod journal_crashes;
mod ownership;
mod passivation;
mod player_flow;
mod playout_edges;
mod playout_flow;
mod quarantine;
mod rebuild;
mod snapshots;
mod station_flow;
mod traces;
