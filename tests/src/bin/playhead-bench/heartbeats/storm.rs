//! Heartbeat storm: the user inbox is pre-filled with the whole mix while no node runs; a bare
//! pull consumer drains those stored messages (the baseline, as for ingest), then playhead-node
//! drains them through its partition consumers, user actors, sled and event publishing.
//!
//! Set-up, not measured: the node takes in the catalog and every user's entitlements and is
//! stopped once it has processed them all. Afterwards the node's own counters say what became
//! of the storm (outcomes, dead letters, `PlayoutStarted` / `PlayoutStopped` published against
//! the mix's expectation), and the RPC part lists a sample of users' playouts, so the drain
//! rate cannot be the rate of rejecting garbage.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;
use playhead_actors::broker;
use playhead_actors::config::NodeConfig;
use playhead_proto::ids::{ContentId, UserId};
use playhead_proto::subjects::{Inbox, UserKind, catalog_content, user_subject};
use playhead_proto::v1::ContentUpdate;
use playhead_tests::harness::NatsServer;
use playhead_tests::model::publish_pipelined;
use playhead_tests::playout::entitlements as entitlements_update;
use playhead_tests::system::{TestNode, metric_value};
use prost::Message;

use super::mix::{Mix, entitlement};
use crate::common::{
    Batches, Drains, format_counts, inbox_outcomes, publish_and_drain, wait_processed,
};

/// How long the storm's entitlements stay valid.
const ENTITLED_FOR: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Storm {
    setup: Duration,
    setup_outcomes: Vec<(&'static str, f64)>,
    drains: Drains,
    outcomes: Vec<(&'static str, f64)>,
    dead_letters: f64,
    /// `playhead_dead_letters_total` lines of the user inbox that counted (reason and count).
    dead_letter_reasons: Vec<String>,
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
    broker::ensure_streams(&jetstream, &config)
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

    let count = mix.heartbeats.len() as u64;
    let (drains, node) = publish_and_drain(
        &jetstream,
        nats.pid(),
        config,
        Inbox::User,
        (count, "heartbeats"),
        publish_pipelined(&jetstream, heartbeats(mix)?),
    )
    .await?;

    let metrics = node.metrics().await;
    let user_label = [("inbox", Inbox::User.label())];
    let dead_letters = metric_value(&metrics, "playhead_dead_letters_total", &user_label);
    let dead_letter_reasons = metrics
        .lines()
        .filter(|line| line.starts_with("playhead_dead_letters_total{"))
        .filter(|line| line.contains(&format!("inbox=\"{}\"", Inbox::User.label())))
        // Every reason's series exists from the start, at 0: list those that counted.
        .filter(|line| !line.ends_with(" 0"))
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
        drains,
        outcomes: inbox_outcomes(&metrics, Inbox::User),
        dead_letters,
        dead_letter_reasons,
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
    mix.users
        .iter()
        .enumerate()
        .map(|(n, user)| {
            let update = entitlements_update(user, &[&entitlement(n)], ENTITLED_FOR, 0);
            let subject = user_subject(&UserId::parse(user.as_str())?, UserKind::Entitlements);
            Ok((subject, update.encode_to_vec().into()))
        })
        .collect()
}

fn heartbeats(mix: &Mix) -> anyhow::Result<Vec<(String, Bytes)>> {
    mix.heartbeats
        .iter()
        .map(|heartbeat| {
            let user = UserId::parse(heartbeat.user_id.as_str())?;
            let subject = user_subject(&user, UserKind::Heartbeat);
            Ok((subject, heartbeat.encode_to_vec().into()))
        })
        .collect()
}

impl Storm {
    /// Prints the storm's figures; returns the node ÷ bare drain-rate ratio.
    pub(super) fn report(&self, mix: &Mix) -> f64 {
        let count = mix.heartbeats.len() as f64;
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
        self.drains.print_times(count, "heartbeats/s");
        println!("  outcomes: {}", format_counts(&self.outcomes));
        println!("  dead letters: {:.0}", self.dead_letters);
        for line in &self.dead_letter_reasons {
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
        // Every decision is journaled: a BEAT re-admitted or refused would show up here.
        println!("  events journaled / expected: {}", events.join(", "));
        self.batches.print(count);
        self.drains.print_ratios(count, Some(0.25))
    }
}
