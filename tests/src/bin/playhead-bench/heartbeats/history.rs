//! What a viewing-history bookmark costs as the store ages: a START's bookmark of content the
//! user never viewed, written through `ViewHistoryStore` (the node's own code, on a sled store
//! of its own, single thread) into a store holding one day, a month and the default 180 days of
//! daily buckets. Its record is looked for in every live bucket before it is written, so this
//! shows what the storm, run on a fresh store, cannot: the cost on a store as old as its
//! retention.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use playhead_actors::config::PlayoutConfig;
use playhead_actors::domain::playout::Bookmark;
use playhead_actors::domain::time::Timestamp;
use playhead_actors::storage::clock::ManualClock;
use playhead_actors::storage::keyspace::{BucketDbs, Placement};
use playhead_actors::storage::view_history_store::ViewHistoryStore;
use playhead_proto::ids::{ContentId, UserId};
use playhead_tests::system::temp_dir;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Days of history before the measured bookmarks: each user views one content a day.
const AGES_DAYS: [u64; 3] = [0, 30, 180];
const USERS: usize = 200;
/// Bookmarks of never-viewed content measured per user.
const MEASURED_PER_USER: usize = 20;

pub(super) struct History {
    /// (days of history, µs per bookmark)
    ages: Vec<(u64, f64)>,
}

pub(super) fn run() -> anyhow::Result<History> {
    let ages = AGES_DAYS
        .iter()
        .map(|&days| bookmark_cost(days).map(|micros| (days, micros)))
        .collect::<anyhow::Result<_>>()?;
    Ok(History { ages })
}

/// µs per measured bookmark after `days` of history (a daily bucket each).
fn bookmark_cost(days: u64) -> anyhow::Result<f64> {
    let dir = temp_dir();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .open()
        .context("the viewing-history store")?;
    let start = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let store = ViewHistoryStore::open(
        &db,
        &PlayoutConfig::default(),
        clock.clone(),
        Placement::OwnDbs(BucketDbs {
            root: dir.path().join("buckets"),
            cache_bytes: 32 << 20,
        }),
    )?;
    let user = |n: usize| UserId::parse(format!("user-{n}"));
    let bookmark = |content: String, at: u64| -> anyhow::Result<Bookmark> {
        Ok(Bookmark {
            content_id: ContentId::parse(content)?,
            position_ms: 1_000,
            at: Timestamp::from_millis(at),
            view_ended: false,
        })
    };
    for day in 0..days {
        let now = start + day * DAY_MS;
        clock.set(now);
        for n in 0..USERS {
            store.record(&user(n)?, &[bookmark(format!("seen-{day}"), now)?])?;
        }
    }
    let now = start + days * DAY_MS + 1_000;
    clock.set(now);
    let began = Instant::now();
    for k in 0..MEASURED_PER_USER {
        for n in 0..USERS {
            store.record(&user(n)?, &[bookmark(format!("new-{k}"), now + k as u64)?])?;
        }
    }
    Ok(began.elapsed().as_secs_f64() * 1e6 / (MEASURED_PER_USER * USERS) as f64)
}

impl History {
    pub(super) fn report(&self) {
        println!();
        println!(
            "viewing history: a bookmark of never-viewed content ({USERS} users, {MEASURED_PER_USER} each, one thread), by the store's age"
        );
        for (days, micros) in &self.ages {
            println!(
                "  {days:>4} days of history (a bucket a day)   {micros:>8.1} µs per bookmark"
            );
        }
        if let (Some(fresh), Some(oldest)) = (self.ages.first(), self.ages.last()) {
            println!(
                "  ratio {} days ÷ fresh store {:.1}",
                oldest.0,
                oldest.1 / fresh.1
            );
        }
    }
}
