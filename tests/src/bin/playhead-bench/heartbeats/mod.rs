//! Video heartbeats (issue 4): the user actor's playout slots under load.
//!
//! - storm: drain rate of a user inbox pre-filled with a storm of heartbeats (STARTs on one or
//!   two devices, BEATs, some ENDs) from many users, playhead-node ÷ a bare consumer of the
//!   same stored messages, with the node's counters checked against what the mix must produce;
//! - RPC: `PlayoutService.Heartbeat` latency through the gateway at a steady paced rate, next
//!   to the gateway's health check at the same rate, with every non-OK answer counted;
//! - floor: the broker path of a Heartbeat with no playhead code on it, paced the same way once
//!   the node has stopped;
//! - history: what a viewing-history bookmark costs as the store ages (storage only);
//! - memory: what a live user entity holds, from two node processes' resident memory.
//!
//! The RPC part sends BEATs for the playouts the storm left live, on the same node.

mod floor;
mod history;
pub mod memory;
mod mix;
mod rpc;
mod storm;

use std::time::Duration;

use playhead_tests::harness::NatsServer;
use playhead_tests::system::temp_dir;

use crate::common::node_config;
use floor::Floor;
use history::History;
use memory::Memory;
use mix::Mix;
use rpc::Rpc;
use storm::Storm;

pub struct Workload {
    pub users: usize,
    pub heartbeats: usize,
    pub partitions: u32,
    /// Paced `Heartbeat` (and health check) requests per second.
    pub rate: u64,
    /// The gateway in the benchmark's process instead of a process of its own.
    pub gateway_in_process: bool,
    /// Measured per RPC phase, after the warm-up.
    pub duration: Duration,
    pub connections: usize,
}

pub struct Heartbeats {
    mix: Mix,
    storm: Storm,
    rpc: Rpc,
    floor: Floor,
    history: History,
    memory: Memory,
}

pub async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<Heartbeats> {
    anyhow::ensure!(workload.users > 0, "--heartbeat-users must be at least 1");
    let mix = Mix::generate(workload.users, workload.heartbeats);
    let data = temp_dir();
    let config = node_config(&nats.url(), data.path(), workload.partitions)?;
    let (storm, node) = storm::run(nats, config, &mix).await?;
    let rpc = rpc::run(&nats.url(), &node, &mix, workload).await;
    node.stop().await;
    let rpc = rpc?;
    let floor = floor::run(nats, workload).await?;
    let history = tokio::task::spawn_blocking(history::run).await??;
    let memory = memory::run().await?;
    Ok(Heartbeats {
        storm,
        rpc,
        floor,
        history,
        memory,
        mix,
    })
}

/// The figures the summary judges.
pub struct Figures {
    /// Node ÷ bare drain rate of the storm (reported).
    pub drain_ratio: f64,
    /// `Heartbeat` p99 in ms at the paced rate.
    pub p99: f64,
    /// The floor's p99 in ms: the same path and pacing with no playhead code.
    pub floor_p99: f64,
    /// `Heartbeat` answers other than CONTINUE / OK, and failed requests.
    pub not_ok: u64,
    pub errors: u64,
    /// Bytes a live user entity holds.
    pub entity_bytes: f64,
}

impl Heartbeats {
    pub fn report(&self, workload: &Workload) -> Figures {
        let drain_ratio = self.storm.report(&self.mix);
        self.rpc.report(workload);
        let heartbeat = &self.rpc.heartbeat;
        self.floor.print(heartbeat.phase.millis_at(0.99));
        self.history.report();
        let entity_bytes = self.memory.print();
        Figures {
            drain_ratio,
            p99: heartbeat.phase.millis_at(0.99),
            floor_p99: self.floor.p99(),
            not_ok: heartbeat.not_ok(),
            errors: heartbeat.phase.errors,
            entity_bytes,
        }
    }
}
