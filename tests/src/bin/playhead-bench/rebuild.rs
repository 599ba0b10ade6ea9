//! Rebuild: a node whose local store is gone restores the latest snapshot of every kind and
//! replays the journal after it before it serves (DESIGN §4); the figure is the time from
//! starting that node until it serves, against §10's "1M sessions and 100k stations ≤ 30 s".
//!
//! Set-up (timed, not part of the figure): a node data dir is filled offline with the sessions
//! and stations ([`fill`]) and the three kinds' snapshots are taken from it at journal sequence
//! 0; a real node started on it applies a journal tail of live traffic ([`tail`]) and is
//! stopped gracefully. Then the store is deleted and the node started again: that start,
//! restore + replay, is the figure. The node's own log records say how it split ([`node_log`]);
//! a spot check through the gateway ([`check`]) compares answers before and after. The bare
//! baseline of the replay is reading the same journal with an ordered consumer, as the
//! rebuild does, decoding nothing.
//!
//! The phase runs on a broker of its own: its journal then holds only this tail, not the
//! earlier phases' events, and no later phase's node finds these snapshots.
//!
//! [`node_log`]: crate::node_log

mod check;
mod fill;
mod tail;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_actors::broker;
use playhead_actors::journal::snapshot;
use playhead_actors::node::store::state_dir;
use playhead_proto::subjects::{EVENTS_CAPTURE, EVENTS_STREAM, Inbox};
use playhead_tests::harness::NatsServer;
use playhead_tests::model::publish_pipelined;
use playhead_tests::system::{TestGateway, TestNode, temp_dir};

use crate::common::{format_counts, inbox_outcomes, node_config, wait_processed};
use crate::cpu::CpuSample;
use crate::node_log::{self, Record};
use crate::sessions::fixtures::mib;

/// The longest a start (restore, replay) may take before the phase gives up.
const START_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub sessions: usize,
    pub sessions_per_user: usize,
    pub stations: usize,
    pub plays_per_station: usize,
    /// The journal tail: song observations and player commands.
    pub observations: usize,
    pub player_commands: usize,
    pub repeat_percent: u64,
    pub partitions: u32,
    /// `GetSession` and `ListPlays` requests of the spot check (each).
    pub checks: usize,
}

pub struct Rebuild {
    filled: (Duration, Duration, u64),
    snapshots: Vec<fill::Taken>,
    first_start: Duration,
    tail: TailRun,
    to_serving: Duration,
    node_records: Vec<Record>,
    cpu: String,
    journal_events: (u64, u64),
    /// The whole journal read by a bare ordered consumer.
    bare_read: Duration,
    /// From "serving" until a query was answered, and the UNAVAILABLE answers before.
    answering: (Duration, u32),
    answered: String,
    differences: Vec<String>,
}

struct TailRun {
    publish: Duration,
    drain: Duration,
    command_kinds: [usize; 3],
    changed_stations: usize,
    outcomes: Vec<(&'static str, Vec<(&'static str, f64)>)>,
    cpu: String,
}

pub async fn run(workload: &Workload) -> anyhow::Result<Rebuild> {
    anyhow::ensure!(
        workload.sessions > 0 && workload.stations > 0 && workload.sessions_per_user > 0,
        "the rebuild needs sessions, stations and at least one session a user"
    );
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = node_config(&nats.url(), data.path(), workload.partitions)?;
    // The offline snapshots are the only ones: the tail is replayed from the journal.
    config.journal.snapshot_every_events = 0;
    let jetstream = jetstream::new(nats.connect().await);
    broker::ensure_streams(&jetstream, &config).await?;
    let bucket = snapshot::ensure_bucket(&jetstream, config.nats.replicas).await?;

    let filled = {
        let (config, workload) = (config.clone(), *workload);
        tokio::task::spawn_blocking(move || fill::fill(&config, &workload)).await??
    };
    let snapshots = fill::snapshot_all(&filled.storage, &bucket, &config).await?;
    let fill::Filled {
        storage,
        sessions,
        stations,
        plays,
        mut on_air,
    } = filled;
    drop(storage);

    // The filled store was never marked as a node's: its first start restores the snapshots.
    eprintln!("rebuild: starting the node on the filled data dir…");
    let started = Instant::now();
    let node = TestNode::start_within(config.clone(), START_TIMEOUT).await;
    let first_start = started.elapsed();

    let tail = tail::generate(workload, &mut on_air)?;
    eprintln!(
        "rebuild: journal tail of {} observations and {} player commands…",
        tail.observations, tail.commands
    );
    let cpu_before = CpuSample::now(nats.pid());
    let started = Instant::now();
    publish_pipelined(&jetstream, tail.messages.iter().cloned()).await;
    let publish = started.elapsed();
    wait_processed(
        &node,
        Inbox::Station,
        tail.observations as f64,
        "observations",
    )
    .await?;
    wait_processed(&node, Inbox::User, tail.commands as f64, "player commands").await?;
    let drain = started.elapsed();
    let cpu = CpuSample::now(nats.pid()).describe_since(&cpu_before);
    let metrics = node.metrics().await;
    let tail_run = TailRun {
        publish,
        drain,
        command_kinds: tail.command_kinds,
        changed_stations: tail.changed_stations.len(),
        outcomes: vec![
            ("stations", inbox_outcomes(&metrics, Inbox::Station)),
            ("users", inbox_outcomes(&metrics, Inbox::User)),
        ],
        cpu,
    };

    let gateway = TestGateway::start(&nats.url()).await;
    let sample = check::Sample::draw(workload, &tail)?;
    let before = sample.ask(&gateway).await;
    node.stop().await;
    let journal_before = journal_events(&jetstream).await?;

    eprintln!("rebuild: store deleted, starting the node…");
    std::fs::remove_dir_all(state_dir(&config))?;
    node_log::take();
    let cpu_before = CpuSample::now(nats.pid());
    let started = Instant::now();
    let node = TestNode::start_within(config.clone(), START_TIMEOUT).await;
    let to_serving = started.elapsed();
    let cpu = CpuSample::now(nats.pid()).describe_since(&cpu_before);
    let node_records = node_log::take();

    let answering = sample.wait_answering(&gateway).await?;
    let after = sample.ask(&gateway).await;
    let journal_after = journal_events(&jetstream).await?;
    node.stop().await;
    gateway.stop().await;
    let bare_read = bare_journal_read(&jetstream, journal_after).await?;
    Ok(Rebuild {
        filled: (sessions, stations, plays),
        snapshots,
        first_start,
        tail: tail_run,
        to_serving,
        node_records,
        cpu,
        journal_events: (journal_before, journal_after),
        bare_read,
        answering,
        answered: before.describe(),
        differences: after.differences(&before, &sample),
    })
}

async fn journal_events(jetstream: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(jetstream
        .get_stream(EVENTS_STREAM)
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// Reads `count` events of the journal from its start with an ordered consumer configured
/// like the rebuild's, decoding nothing; returns the time it took.
async fn bare_journal_read(jetstream: &jetstream::Context, count: u64) -> anyhow::Result<Duration> {
    let consumer = jetstream
        .get_stream(EVENTS_STREAM)
        .await?
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: EVENTS_CAPTURE.into(),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer.messages().await?;
    for _ in 0..count {
        tokio::time::timeout(START_TIMEOUT, messages.next())
            .await
            .context("bare journal read stalled")?
            .context("bare journal read ended early")?
            .map_err(|error| anyhow::anyhow!("bare journal read: {error}"))?;
    }
    Ok(started.elapsed())
}

/// The figures the summary judges.
pub struct Figures {
    /// Seconds from the start of the node with no store until it served.
    pub to_serving: f64,
    /// Snapshot entries restored and journal events replayed, as the node logged them.
    pub restored: f64,
    pub replayed: f64,
    /// Answers of the spot check that differ (must be 0).
    pub differences: usize,
}

impl Rebuild {
    pub fn report(&self, workload: &Workload) -> Figures {
        let (sessions, stations, plays) = self.filled;
        println!();
        println!(
            "rebuild: {} sessions ({} a user) and {} stations ({} plays each) restored from \
             snapshots, then the journal tail replayed; {} partitions",
            workload.sessions,
            workload.sessions_per_user,
            workload.stations,
            workload.plays_per_station,
            workload.partitions
        );
        println!(
            "  set-up, not measured: store filled offline: sessions {:.1} s ({:.0}/s), stations {:.1} s ({:.0}/s, {plays} plays)",
            sessions.as_secs_f64(),
            workload.sessions as f64 / sessions.as_secs_f64(),
            stations.as_secs_f64(),
            workload.stations as f64 / stations.as_secs_f64(),
        );
        for taken in &self.snapshots {
            println!(
                "  set-up, not measured: {:<8} snapshot {:>9} entries {:>8.1} MiB in {:>5.1} s",
                taken.meta.kind,
                taken.meta.entries,
                mib(taken.meta.bytes),
                taken.elapsed.as_secs_f64()
            );
        }
        println!(
            "  set-up: first start on the filled data dir (restores the snapshots, empty journal) {:.2} s",
            self.first_start.as_secs_f64()
        );
        self.tail.print(workload);
        println!(
            "  journal: {} events (the rebuild appended {})",
            self.journal_events.0,
            self.journal_events.1 as i64 - self.journal_events.0 as i64
        );

        println!(
            "  REBUILD: store deleted, node start until serving {:>8.2} s   (target ≤ 30 s)",
            self.to_serving.as_secs_f64()
        );
        let (restored, replayed) = self.print_node_records();
        println!(
            "    bare baseline: the same {} journal events read by an ordered consumer in {:.2} s ({:.0} events/s)",
            self.journal_events.1,
            self.bare_read.as_secs_f64(),
            self.journal_events.1 as f64 / self.bare_read.as_secs_f64()
        );
        println!("  CPU during the rebuild: {}", self.cpu);
        let (answering, unavailable) = self.answering;
        println!(
            "  first query answered {:.0} ms after serving ({unavailable} UNAVAILABLE answers before it{})",
            answering.as_secs_f64() * 1_000.0,
            if unavailable > 0 {
                ": the node said it served before its query service subscribed"
            } else {
                ""
            }
        );
        println!("  spot check before the deletion: {}", self.answered);
        if self.differences.is_empty() {
            println!(
                "  spot check after the rebuild: all {} GetSession and {} ListPlays answers identical",
                workload.checks, workload.checks
            );
        } else {
            println!(
                "  !!!!! SPOT CHECK FAILED: {} answers differ after the rebuild !!!!!",
                self.differences.len()
            );
            for difference in self.differences.iter().take(10) {
                println!("  !!!!! {difference}");
            }
        }
        Figures {
            to_serving: self.to_serving.as_secs_f64(),
            restored,
            replayed,
            differences: self.differences.len(),
        }
    }

    /// The node's own account of the rebuild; returns the snapshot entries it restored and
    /// the journal events it replayed.
    fn print_node_records(&self) -> (f64, f64) {
        if self.node_records.is_empty() {
            println!("    (the node logged nothing about a rebuild: did it rebuild at all?)");
        }
        let (mut restored, mut replayed) = (0.0, 0.0);
        for record in &self.node_records {
            match (record.target.as_str(), record.message.as_str()) {
                ("playhead_actors::journal::snapshot", "snapshot restored") => {
                    restored += record.number("entries");
                    println!(
                        "    restored {:<8} {:>9} entries {:>8.1} MiB: download {:>5.2} s, restore into sled {:>5.2} s",
                        record.text("kind"),
                        record.number("entries"),
                        mib(record.number("bytes") as u64),
                        record.number("download_seconds"),
                        record.number("restore_seconds")
                    );
                }
                (_, "journal replayed") => {
                    replayed += record.number("events");
                    println!(
                        "    journal replayed: {} events, {} entities written, {} decisions cut short, in {:.2} s",
                        record.number("events"),
                        record.number("entities"),
                        record.number("cut_short"),
                        record.number("seconds")
                    );
                }
                (_, "the local store is rebuilt") => println!(
                    "    the node's own count: store rebuilt in {:.2} s ({} events replayed); the rest of the start is broker set-up and intake",
                    record.number("seconds"),
                    record.number("replayed")
                ),
                _ => {}
            }
        }
        println!("    snapshot entries restored in all: {restored}");
        (restored, replayed)
    }
}

impl TailRun {
    fn print(&self, workload: &Workload) {
        let [next, skip, start] = self.command_kinds;
        let messages = (workload.observations + workload.player_commands) as f64;
        println!(
            "  journal tail: {} observations ({} song changes) and {} player commands ({next} next, {skip} skip, {start} start)",
            workload.observations, self.changed_stations, workload.player_commands
        );
        println!(
            "    published in {:.2} s, applied by the running node in {:.2} s ({:.0} msg/s)",
            self.publish.as_secs_f64(),
            self.drain.as_secs_f64(),
            messages / self.drain.as_secs_f64()
        );
        for (inbox, outcomes) in &self.outcomes {
            println!("    outcomes {inbox}: {}", format_counts(outcomes));
        }
        println!("    CPU while applying the tail: {}", self.cpu);
    }
}
