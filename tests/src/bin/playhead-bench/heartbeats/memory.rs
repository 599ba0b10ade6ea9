//! Memory per live user entity (DESIGN §10: ≤ 8 KB an active entity actor, ~0 a passivated
//! user): the same START of N users sent to two `playhead-node` processes on fresh brokers,
//! one keeping every user's actor live (the default idle time, minutes), one keeping at most
//! one per shard (the others passivated as soon as the next arrives). Both do the same storage
//! and broker work; the difference in their resident memory, per user, is what a live actor
//! holds — its task, mailbox and loaded records.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use playhead_proto::ids::UserId;
use playhead_proto::subjects::{Inbox, UserKind, user_subject};
use playhead_proto::v1::HeartbeatKind;
use playhead_tests::harness::NatsServer;
use playhead_tests::model::publish_pipelined;
use playhead_tests::playout::heartbeat;
use playhead_tests::system::{NodeProcess, scrape, temp_dir};
use prost::Message;

use crate::common::wait_processed_by;

/// Users whose START each node takes in.
const USERS: usize = 20_000;
/// Wait after the last message before reading the resident memory (late frees, flushes).
const SETTLE: Duration = Duration::from_secs(2);

/// One node's resident memory before and after the STARTs, in KiB.
struct Resident {
    idle_kib: u64,
    after_kib: u64,
}

impl Resident {
    fn growth_kib(&self) -> i64 {
        self.after_kib as i64 - self.idle_kib as i64
    }
}

pub(crate) struct Memory {
    live: Resident,
    bounded: Resident,
}

pub(crate) async fn run() -> anyhow::Result<Memory> {
    eprintln!("heartbeats: memory of {USERS} live user entities against passivated ones…");
    let live = resident_after_starts(&[]).await?;
    let bounded =
        resident_after_starts(&[("PLAYHEAD_ACTORS__MAX_LIVE_ENTITIES_PER_SHARD", "1")]).await?;
    Ok(Memory { live, bounded })
}

/// Starts a node on a fresh broker with `env`, sends it one START per user and reads its
/// resident memory before and once it has processed them all.
async fn resident_after_starts(env: &[(&str, &str)]) -> anyhow::Result<Resident> {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = NodeProcess::start(&nats.url(), data.path(), env).await;
    let pid = node.process.pid();
    let metrics_url = format!(
        "http://{}/metrics",
        node.operations_address()
            .ok_or_else(|| anyhow::anyhow!("the node logged no metrics address"))?
    );
    let idle_kib = resident_kib(pid)?;
    let starts = (0..USERS)
        .map(|n| {
            let user = format!("mem{n:06}");
            let start = heartbeat(
                &user,
                "tv",
                &format!("p{n}"),
                "content0001",
                HeartbeatKind::Start,
                0,
            );
            let subject = user_subject(&UserId::parse(user.as_str())?, UserKind::Heartbeat);
            Ok((subject, Bytes::from(start.encode_to_vec())))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let jetstream = jetstream::new(nats.connect().await);
    publish_pipelined(&jetstream, starts).await;
    wait_processed_by(
        async || scrape(&metrics_url).await,
        Inbox::User,
        USERS as f64,
        "STARTs",
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let after_kib = resident_kib(pid)?;
    // Killed: its state is not needed again.
    drop(node);
    Ok(Resident {
        idle_kib,
        after_kib,
    })
}

/// `VmRSS` of process `pid`, in KiB.
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

impl Memory {
    /// Prints both nodes' growth; returns the bytes a live user entity holds.
    pub(crate) fn print(&self) -> f64 {
        let per_user =
            (self.live.growth_kib() - self.bounded.growth_kib()) as f64 * 1024.0 / USERS as f64;
        println!();
        println!(
            "memory: one START from each of {USERS} users, playhead-node as a process on a fresh broker (resident memory after they are processed − before)"
        );
        for (what, resident) in [
            ("every user's actor live", &self.live),
            ("at most 1 live per shard", &self.bounded),
        ] {
            println!(
                "  {what:<26} {:>8} KiB → {:>8} KiB   (+{:.1} MiB)",
                resident.idle_kib,
                resident.after_kib,
                resident.growth_kib() as f64 / 1024.0
            );
        }
        println!(
            "  a live user entity holds {:.1} KB (the difference ÷ {USERS})",
            per_user / 1000.0
        );
        per_user
    }
}
