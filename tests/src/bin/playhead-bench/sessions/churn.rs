//! Churn: `size_on_disk` after 60 simulated days of new and touched sessions with daily
//! compaction, against after 30, at a roughly constant live set (and after 90, to see whether
//! it levels off). Storage alone, with a `ManualClock`.

use std::sync::Arc;

use playhead_actors::config::NodeConfig;
use playhead_actors::storage::Storage;
use playhead_actors::storage::clock::ManualClock;
use playhead_actors::storage::keyspace::Expiry;
use playhead_proto::ids::UserId;
use playhead_tests::system::temp_dir;

use super::fixtures::{DAY_MS, EPOCH_DAY, PREFILLED_TRACKS, mib, prefilled_ids, stored_session};

/// Churn part: sessions per user, simulated days.
const CHURN_SESSIONS_PER_USER: usize = 100;
const CHURN_DAYS: u64 = 90;
/// Re-saved users are drawn from those created in the last week.
const CHURN_RETURN_DAYS: usize = 7;

pub(super) struct Churn {
    /// Every ten days.
    days: Vec<ChurnDay>,
}

struct ChurnDay {
    day: u64,
    bytes: u64,
    /// Sessions saved within the TTL.
    live: usize,
    /// Bucket trees held, and the records written into them (every copy of a session).
    buckets: usize,
    copies: usize,
}

/// `CHURN_DAYS` simulated days: each day `per_day` new sessions and as many re-saved ones
/// (whole users, drawn from those created in the last [`CHURN_RETURN_DAYS`] days, so every
/// user lives at most that much longer than the TTL and the live set levels off), then
/// compaction and a flush.
pub(super) fn churn(per_day: usize) -> anyhow::Result<Churn> {
    eprintln!("sessions: simulating {CHURN_DAYS} days of churn…");
    let data = temp_dir();
    let config = NodeConfig::default();
    let ttl_days = config.player.session_ttl_secs * 1000 / DAY_MS;
    let clock = Arc::new(ManualClock::new(EPOCH_DAY * DAY_MS));
    let storage = Storage::open(&data.path().join("state"), &config, clock.clone())?;
    let users_per_day = (per_day / CHURN_SESSIONS_PER_USER).max(1);
    let playlists = (0..CHURN_SESSIONS_PER_USER)
        .map(|n| Ok(prefilled_ids("c", n)?.1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The day each user was last saved, and the records written each day.
    let mut last_saved: Vec<u64> = Vec::new();
    let mut written: Vec<usize> = Vec::new();
    let mut random = SplitMix(0x5eed);
    let mut days = Vec::new();
    for day in 1..=CHURN_DAYS {
        let now = (EPOCH_DAY + day) * DAY_MS;
        clock.set(now);
        let session = stored_session(PREFILLED_TRACKS, now);
        let existing = last_saved.len();
        let returning = existing.saturating_sub(users_per_day * CHURN_RETURN_DAYS);
        let touched: Vec<usize> = (0..users_per_day)
            .filter(|_| existing > 0)
            .map(|_| returning + (random.next() as usize) % (existing - returning))
            .collect();
        let created = existing..existing + users_per_day;
        last_saved.resize(created.end, day);
        written.push((touched.len() + created.len()) * CHURN_SESSIONS_PER_USER);
        for user in touched.into_iter().chain(created) {
            last_saved[user] = day;
            let batch: Vec<_> = playlists.iter().map(|p| (p, &session)).collect();
            storage
                .sessions
                .save(&UserId::parse(format!("c{user:07}"))?, &batch)?;
        }
        storage.sessions.compact(&Expiry::whole())?;
        storage.flush()?;
        if day % 10 == 0 {
            let buckets = storage.sessions.keyspace().bucket_count();
            days.push(ChurnDay {
                day,
                bytes: storage.size_on_disk()?,
                live: last_saved
                    .iter()
                    .filter(|&&saved| saved + ttl_days > day)
                    .count()
                    * CHURN_SESSIONS_PER_USER,
                buckets,
                copies: written.iter().rev().take(buckets).sum(),
            });
        }
    }
    Ok(Churn { days })
}

/// splitmix64: reproducible picks without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Churn {
    /// Prints the days; returns the disk size after 60 days ÷ after 30, and after 90 ÷ 60.
    pub(super) fn print(&self, per_day: usize) -> (f64, f64) {
        println!();
        println!(
            "sessions: {CHURN_DAYS} simulated days, {per_day} new + {per_day} re-saved sessions a day ({CHURN_SESSIONS_PER_USER} per user, re-saved users created in the last {CHURN_RETURN_DAYS} days), daily buckets, 30-day TTL, daily compaction",
        );
        for day in &self.days {
            println!(
                "  day {:>2}: {:>7.1} MiB on disk, {:>7} live sessions, {} buckets holding {:>7} records ({:.0} bytes each)",
                day.day,
                mib(day.bytes),
                day.live,
                day.buckets,
                day.copies,
                day.bytes as f64 / day.copies as f64
            );
        }
        let size_on = |day: u64| {
            self.days
                .iter()
                .find(|at| at.day == day)
                .map_or(f64::NAN, |at| at.bytes as f64)
        };
        let ratio = size_on(60) / size_on(30);
        let later = size_on(90) / size_on(60);
        println!(
            "  ratio disk after 60 ÷ after 30 days {ratio:.2} (after 90 ÷ after 60 {later:.2})"
        );
        (ratio, later)
    }
}
