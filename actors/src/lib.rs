//! playhead's node: domain deciders, entity actors, storage and ingestion.
//!
//! - [`config`]: the node configuration tree, loaded and validated at start.
//! - [`domain`]: pure deciders (`initial` / `decide` / `evolve`), no IO.
//! - [`journal`]: the domain events in `PLAYHEAD_EVENTS`, appended exactly once; their codec;
//!   snapshots.
//! - [`storage`]: sled, time-partitioned keyspaces, group commit.
//! - [`runtime`]: the one entity shell, entity actors, shards, the kinds, rebuild.
//! - [`ingest`]: partition intake, screening, dead letters, quarantine.
//! - [`query`]: per-entity queries over the NATS service API.
//! - [`broker`]: embedded nats-server and the JetStream topology.
//! - [`wire`]: domain ↔ `playhead.v1` mapping.
//! - [`faults`]: fault injection for the crash and quarantine tests (off unless asked for).
//! - [`metrics`], [`telemetry`]: Prometheus, tracing and OpenTelemetry.
//! - [`node`]: wiring and the one shutdown path.

pub mod broker;
pub mod config;
pub mod domain;
pub mod faults;
pub mod ingest;
pub mod journal;
pub mod metrics;
pub mod node;
pub mod query;
pub mod runtime;
pub mod storage;
pub mod telemetry;
pub mod wire;
