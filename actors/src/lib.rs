//! playhead's node: domain deciders, entity actors, storage and ingestion.
//!
//! - [`config`]: the node configuration tree, loaded and validated at start.
//! - [`domain`]: pure deciders (`initial` / `decide` / `evolve`), no IO.
//! - [`storage`]: sled, time-partitioned keyspaces, group commit.
//! - [`sharding`]: shard actors per partition, entity actors, passivation.
//! - [`station_entity`], [`user_entity`], [`catalog_entity`]: the actor shells around the
//!   deciders.
//! - [`events`]: publishing domain events.
//! - [`journal`]: the journal of every entity's events (codec and versions).
//! - [`ingest`]: partition intake, screening, dead letters.
//! - [`query`]: per-entity queries over the NATS service API.
//! - [`broker`]: embedded nats-server and the JetStream topology.
//! - [`wire`]: domain ↔ `playhead.v1` mapping.
//! - [`metrics`], [`telemetry`]: Prometheus, tracing and OpenTelemetry.
//! - [`node`]: wiring and the one shutdown path.

pub mod broker;
pub mod catalog_entity;
pub mod config;
pub mod domain;
pub mod events;
pub mod ingest;
pub mod journal;
pub mod metrics;
pub mod node;
pub mod query;
pub mod sharding;
pub mod station_entity;
pub mod storage;
pub mod telemetry;
pub mod user_entity;
pub mod wire;
