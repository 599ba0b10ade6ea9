//! Heartbeat storm: the user inbox is pre-filled with the whole mix while no node runs; a bare
//! pull consumer drains those stored messages (the baseline, as for ingest), then playhead-node
//! drains them through its partition consumers, user actors, sled and event publishing.
//!
//! Set-up, not measured: the node takes in the catalog and every user's entitlements and is
//! stopped once it has processed them all. Afterwards the node's own counters say what became
//! of the storm (answering events per kind against the mix's expectation, dead letters), so
//! the drain rate cannot be the rate of rejecting garbage.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use playhead_actors::broker;
use playhead_actors::config::NodeConfig;
use playhead_proto::ids::{ContentId, UserId};
use playhead_proto::subjects::{Inbox, catalog_content};
use playhead_proto::v1::{ContentUpdate, Entitlement, EntitlementsUpdate};
use playhead_tests::harness::NatsServer;
use playhead_tests::model::publish_pipelined;
use playhead_tests::system::{TestNode, metric_value};
use prost::Message;

use super::mix::{Mix, entitlement};
use crate::common::{
    Batches, bare_consumer, drain, format_counts, inbox_outcomes, print_node_drain, print_rate,
    wait_processed,
};

/// How long the storm's entitlements stay valid.
const ENTITLED_FOR: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Storm {
    setup: Duration,
    setup_outcomes: Vec<(&'static str, f64)>,
    publish: Duration,
    baseline: Duration,
    node_ready: Duration,
    node_drain: Duration,
    outcomes: Vec<(&'static str, f64)>,
    /// `playhead_dead_letters_total` lines of the user inbox (reason and count).
    dead_letters: Vec<String>,
    /// (event, published by the node, expected from the mix).
    events: Vec<(&'static str, f64, u64)>,
    batches: Batches,
}

/// Runs the storm; returns its figures and the node, still running with the storm's state.
pub(super) async fn run(
    nats: &NatsServer,
    config: NodeConfig,
    mix: &Mix,
) -> anyhow::Result<(Storm, TestNode)> {
    let jetstream = jetstream::new(nats.connect().await);
    broker::ensure_topology(&jetstream, &config)
        .await
        .context("creating the inbox streams and consumers")?;

    eprintln!(
        "heartbeats: set-up: {} content items and {} users' entitlements…",
        mix.contents.len(),
        mix.users.len()
    );
    let started = Instant::now();
    let node = TestNode::start(config.clone()).await;
    publish_pipelined(&jetstream, catalog(mix)?).await;
    publish_pipelined(&jetstream, entitlements(mix)?).await;
    let catalog_size = mix.contents.len() as f64;
    wait_processed(&node, Inbox::Catalog, catalog_size, "content updates").await?;
    let users = mix.users.len() as f64;
    wait_processed(&node, Inbox::User, users, "entitlement updates").await?;
    let setup_outcomes = inbox_outcomes(&node.metrics().await, Inbox::User);
    node.stop().await;
    let setup = started.elapsed();

    let inbox = jetstream.get_stream(Inbox::User.stream_name()).await?;
    let first_heartbeat = inbox.get_info().await?.state.last_sequence + 1;
    let count = mix.heartbeats.len();
    eprintln!("heartbeats: publishing {count} heartbeats…");
    let started = Instant::now();
    publish_pipelined(&jetstream, heartbeats(mix)?).await;
    let publish = started.elapsed();

    eprintln!("heartbeats: draining with a bare consumer…");
    let consumer = bare_consumer(
        &inbox,
        "bench-bare-heartbeats",
        String::new(),
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: first_heartbeat,
        },
    )
    .await?;
    let started = Instant::now();
    drain(consumer, count as u64).await?;
    let baseline = started.elapsed();

    eprintln!("heartbeats: draining with playhead-node…");
    let started = Instant::now();
    let node = TestNode::start(config).await;
    let node_ready = started.elapsed();
    wait_processed(&node, Inbox::User, count as f64, "heartbeats").await?;
    let node_drain = started.elapsed();

    let metrics = node.metrics().await;
    let dead_letters = metrics
        .lines()
        .filter(|line| line.starts_with("playhead_dead_letters_total{"))
        .filter(|line| line.contains(&format!("inbox=\"{}\"", Inbox::User.label())))
        .map(str::to_owned)
        .collect();
    let events = mix
        .expected
        .events()
        .into_iter()
        .map(|(event, expected)| {
            let labels = [("event", event)];
            let published = metric_value(&metrics, "playhead_events_published_total", &labels);
            (event, published, expected)
        })
        .collect();
    let storm = Storm {
        setup,
        setup_outcomes,
        publish,
        baseline,
        node_ready,
        node_drain,
        outcomes: inbox_outcomes(&metrics, Inbox::User),
        dead_letters,
        events,
        batches: Batches::scrape(&metrics, Inbox::User),
    };
    Ok((storm, node))
}

fn catalog(mix: &Mix) -> anyhow::Result<Vec<(String, Bytes)>> {
    mix.contents
        .iter()
        .map(|content| {
            let update = ContentUpdate {
                content_id: content.id.clone(),
                tags: content.tags.clone(),
            };
            let subject = catalog_content(&ContentId::parse(content.id.as_str())?);
            Ok((subject, update.encode_to_vec().into()))
        })
        .collect()
}

/// Every user's entitlement, valid from now for [`ENTITLED_FOR`] (the node judges validity
/// at the broker's timestamps, which follow the same wall clock).
fn entitlements(mix: &Mix) -> anyhow::Result<Vec<(String, Bytes)>> {
    let valid_until = prost_types::Timestamp::from(std::time::SystemTime::now() + ENTITLED_FOR);
    mix.users
        .iter()
        .enumerate()
        .map(|(n, user)| {
            let update = EntitlementsUpdate {
                user_id: user.clone(),
                entitlements: vec![Entitlement {
                    tag: entitlement(n),
                    valid_until: Some(valid_until),
                }],
                concurrency_limit: 0,
            };
            let subject = user_subject(&UserId::parse(user.as_str())?, "entitlements");
            Ok((subject, update.encode_to_vec().into()))
        })
        .collect()
}

fn heartbeats(mix: &Mix) -> anyhow::Result<Vec<(String, Bytes)>> {
    mix.heartbeats
        .iter()
        .map(|heartbeat| {
            let subject = user_subject(&UserId::parse(heartbeat.user_id.as_str())?, "heartbeat");
            Ok((subject, heartbeat.encode_to_vec().into()))
        })
        .collect()
}

/// `playhead.user.{user_id}.{kind}`.
fn user_subject(user: &UserId, kind: &str) -> String {
    format!("playhead.user.{user}.{kind}")
}

impl Storm {
    /// Prints the storm's figures; returns the node ÷ bare drain-rate ratio.
    pub(super) fn report(&self, mix: &Mix) -> f64 {
        let count = mix.heartbeats.len() as f64;
        let rate = |elapsed: Duration| count / elapsed.as_secs_f64();
        println!();
        println!(
            "heartbeat storm: {} heartbeats from {} users ({} STARTs, {} BEATs, {} ENDs), {} content items",
            mix.heartbeats.len(),
            mix.users.len(),
            mix.expected.admitted + mix.expected.refused,
            mix.expected.beats,
            mix.expected.ends,
            mix.contents.len()
        );
        println!(
            "  set-up (not measured): catalog and entitlements processed in {:.2} s; user inbox: {}",
            self.setup.as_secs_f64(),
            format_counts(&self.setup_outcomes)
        );
        let unit = "heartbeats/s";
        print_rate(
            "publish (pipelined, every ack awaited)",
            self.publish,
            count,
            unit,
        );
        print_rate(
            "bare consumer drain (pull, ack each)",
            self.baseline,
            count,
            unit,
        );
        print_node_drain(self.node_drain, self.node_ready, count, unit);
        println!("  outcomes: {}", format_counts(&self.outcomes));
        let dead_lettered: f64 = self
            .dead_letters
            .iter()
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        println!("  dead letters: {dead_lettered:.0}");
        for line in &self.dead_letters {
            println!("    {line}");
        }
        let events: Vec<String> = self
            .events
            .iter()
            .map(|(event, published, expected)| {
                let mark = if *published == *expected as f64 {
                    ""
                } else {
                    " MISMATCH"
                };
                format!("{event} {published:.0} of {expected}{mark}")
            })
            .collect();
        println!("  answering events: {}", events.join(", "));
        self.batches.print(count);
        let ratio = rate(self.node_drain) / rate(self.baseline);
        println!("  ratio node ÷ bare drain rate {ratio:.2}");
        ratio
    }
}
