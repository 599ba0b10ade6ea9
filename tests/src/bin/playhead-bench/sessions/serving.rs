//! Serving: `NextTrack` latency through the gateway in a window that contains the node's
//! periodic compaction of a pre-filled N-session bucket, against an earlier window of the same
//! load.
//!
//! The node's data dir is pre-filled with the clock placed in a future bucket, chosen so the
//! bucket becomes droppable at a wall-clock instant T far enough ahead for the set-up and the
//! baseline window.

use playhead_gateway::auth::AuthedChannel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use hdrhistogram::Histogram;
use playhead_actors::storage::Storage;
use playhead_actors::storage::clock::{Clock, ManualClock, SystemClock};
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::{GetSessionRequest, PlayerOutcome};
use playhead_tests::player::{start_request, track_request};
use playhead_tests::system::{TestGateway, TestNode, metric_value, temp_dir, test_node_config};

use super::Workload;
use super::fixtures::{PREFILLED_TRACKS, droppable_at, fill, prefilled_ids, stored_session};
use super::restart::{self, Starts};
use crate::common::latency_histogram;

/// Session bucket width and TTL of the node, and its compaction interval.
const BUCKET_MS: u64 = 10_000;
const TTL_MS: u64 = 20_000;
const COMPACTION_INTERVAL: Duration = Duration::from_secs(1);
/// Foreground sessions are long enough never to complete during the measurement.
const FOREGROUND_TRACKS: usize = 1_000;
const FOREGROUND_PLAYLIST: &str = "mix";
/// Budget for the gateway, two node starts and the foreground sessions (slack lengthens the
/// baseline window).
const SETUP_BUDGET: Duration = Duration::from_secs(15);
const WARM_UP: Duration = Duration::from_secs(2);
const BASELINE: Duration = Duration::from_secs(10);
const MIN_BASELINE: Duration = Duration::from_secs(4);
/// The baseline window ends this long before T.
const GAP_BEFORE_DROP: Duration = Duration::from_secs(3);
/// The compaction window is T .. this long after the node's first bucket drop after T ends
/// (an emptying at a bounded rate may take many seconds), and at least T + interval + this.
const DROP_MARGIN: Duration = Duration::from_secs(2);
/// The compaction window ends by T + this even if no drop is seen.
const MAX_DROP_WAIT: Duration = Duration::from_secs(300);
/// The compaction window is also reported in slices of this length, from this many slices
/// before T (the same load with no drop in it, for comparison).
const SLICE: Duration = Duration::from_secs(1);
const SLICES_BEFORE: i32 = 6;
const METRICS_PERIOD: Duration = Duration::from_millis(100);
const KEYSPACE_LABEL: [(&str, &str); 1] = [("keyspace", "player_sessions")];

pub(super) struct Serving {
    starts: Starts,
    baseline: Window,
    during: Window,
    /// The compaction window cut in [`SLICE`]s, after [`SLICES_BEFORE`] of them before T, to
    /// show where its slow requests fall.
    during_slices: Vec<Window>,
    dropped: Option<BucketDrop>,
    completed: u64,
}

/// One scrape of the node's session-keyspace metrics, `at` seconds after T.
#[derive(Clone, Copy)]
struct Scrape {
    at: f64,
    buckets_dropped: f64,
    compaction_seconds: f64,
}

/// The node's first bucket drop after T: it finished between two scrapes (seconds after T),
/// and its compaction took `seconds`.
struct BucketDrop {
    after: f64,
    seen: f64,
    seconds: f64,
}

#[derive(Clone)]
struct Window {
    from: f64,
    to: f64,
    /// Seconds of load the window covers (more than `to - from` once pooled).
    span: f64,
    latency: Histogram<u64>,
    errors: u64,
}

/// The node with a pre-filled bucket droppable at T: its first start and restart, then a
/// steady `NextTrack` load from before T until the compaction window after T has passed.
async fn serving(nats_url: &str, workload: &Workload, fill_rate: f64) -> anyhow::Result<Serving> {
    let data = temp_dir();
    let mut config = test_node_config(nats_url, data.path());
    config.ingest.partitions = workload.partitions;
    config.storage.compaction_interval_secs = COMPACTION_INTERVAL.as_secs();
    if let Some(removes_per_sec) = workload.expiry_removes_per_sec {
        config.storage.expiry_removes_per_sec = removes_per_sec;
    }
    config.player.session_bucket_secs = BUCKET_MS / 1000;
    config.player.session_ttl_secs = TTL_MS / 1000;
    config.player.skip_window_secs = TTL_MS / 1000;

    // Place the bucket so that T leaves room for the fill, the set-up and the baseline.
    let fill_estimate = Duration::from_secs_f64(workload.sessions as f64 / fill_rate * 1.5 + 2.0);
    let lead = fill_estimate + SETUP_BUDGET + WARM_UP + BASELINE + GAP_BEFORE_DROP;
    let earliest_drop = SystemClock.now_millis() + lead.as_millis() as u64;
    let bucket = (earliest_drop - TTL_MS).div_ceil(BUCKET_MS) - 2;
    let drop_at_ms = droppable_at(bucket, BUCKET_MS, TTL_MS);
    // The last millisecond of the bucket: the sessions stay live until T - one width.
    let filled_at = (bucket + 1) * BUCKET_MS - 1;
    {
        let config = config.clone();
        let count = workload.sessions;
        eprintln!("sessions: pre-filling the node's data dir with {count} sessions…");
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let clock = Arc::new(ManualClock::new(filled_at));
            let storage = Storage::open(&config.data_dir.join("state"), &config, clock)?;
            fill(
                &storage.sessions,
                "u",
                count,
                &stored_session(PREFILLED_TRACKS, filled_at),
            )?;
            storage.flush()?;
            Ok(())
        })
        .await??;
    }
    let drop_at =
        Instant::now() + Duration::from_millis(drop_at_ms.saturating_sub(SystemClock.now_millis()));

    let gateway = TestGateway::start(nats_url).await;
    let channel = gateway.authed().await;
    let players = PlayerServiceClient::new(channel.clone());
    let (user, playlist) = prefilled_ids("u", workload.sessions / 2)?;
    let probe = GetSessionRequest {
        user_id: user.to_string(),
        playlist_id: playlist.to_string(),
    };

    eprintln!("sessions: starting the node, then restarting it…");
    let (node, starts) = restart::start_and_restart(&config, &players, &probe).await?;

    eprintln!("sessions: starting {} foreground sessions…", workload.users);
    start_foreground(&players, workload.users).await?;
    let load_started = Instant::now();
    let stop_at = drop_at + COMPACTION_INTERVAL + DROP_MARGIN;
    eprintln!(
        "sessions: NextTrack load until {:.0} s after the node's first bucket drop after T (T is {:.0} s from now; expiry at {} removes/s)…",
        DROP_MARGIN.as_secs_f64(),
        drop_at
            .saturating_duration_since(Instant::now())
            .as_secs_f64(),
        config.storage.expiry_removes_per_sec
    );
    let (deadline, stop_load) = tokio::sync::watch::channel(stop_at);
    let offset = |at: Instant| -> f64 {
        if at >= drop_at {
            (at - drop_at).as_secs_f64()
        } else {
            -(drop_at - at).as_secs_f64()
        }
    };
    let channels = [channel, gateway.authed().await];
    let (samples, scrapes) = tokio::join!(
        next_track_load(&channels, workload, stop_load),
        scrape_compactions(&node, deadline, drop_at, offset)
    );
    let stop_at = *scrapes.deadline.borrow();
    let scrapes = scrapes.scrapes;
    node.stop().await;
    gateway.stop().await;

    let baseline_from = offset(load_started + WARM_UP);
    let baseline_to = -GAP_BEFORE_DROP.as_secs_f64();
    anyhow::ensure!(
        baseline_to - baseline_from >= MIN_BASELINE.as_secs_f64(),
        "the set-up overran its budget: only {:.1} s of baseline before the drop",
        baseline_to - baseline_from
    );
    let mut baseline = Window::new(baseline_from, baseline_to);
    let mut during = Window::new(0.0, offset(stop_at));
    let mut during_slices: Vec<Window> = (-SLICES_BEFORE..)
        .map(|slice| slice as f64 * SLICE.as_secs_f64())
        .take_while(|&from| from < during.to)
        .map(|from| Window::new(from, (from + SLICE.as_secs_f64()).min(during.to)))
        .collect();
    let mut completed = 0;
    for sample in &samples {
        let at = offset(sample.at);
        for window in [&mut baseline, &mut during]
            .into_iter()
            .chain(during_slices.iter_mut())
        {
            window.record(at, sample);
        }
        completed += u64::from(sample.outcome == Some(PlayerOutcome::Completed));
    }
    Ok(Serving {
        starts,
        baseline,
        during,
        during_slices,
        dropped: bucket_drop(&scrapes),
        completed,
    })
}

fn foreground_user(n: usize) -> String {
    format!("fg{n:05}")
}

async fn start_foreground(
    players: &PlayerServiceClient<AuthedChannel>,
    users: usize,
) -> anyhow::Result<()> {
    let mut starts = futures::stream::iter(0..users)
        .map(|n| {
            let mut players = players.clone();
            async move {
                let request = start_request(
                    &foreground_user(n),
                    FOREGROUND_PLAYLIST,
                    FOREGROUND_TRACKS,
                    Some(n as u64),
                    true,
                );
                players.start_playlist(request).await
            }
        })
        .buffer_unordered(16);
    while let Some(reply) = starts.next().await {
        let reply = reply.context("StartPlaylist of a foreground session")?;
        anyhow::ensure!(
            reply.get_ref().outcome == PlayerOutcome::Ok as i32,
            "StartPlaylist answered {:?}",
            reply.get_ref()
        );
    }
    Ok(())
}

struct Sample {
    at: Instant,
    micros: u64,
    /// `None`: the request failed.
    outcome: Option<PlayerOutcome>,
}

/// `workload.concurrency` workers, each cycling through its share of the foreground users,
/// one request at a time, paced to `workload.rate` in total.
async fn next_track_load(
    channels: &[AuthedChannel],
    workload: &Workload,
    stop_at: tokio::sync::watch::Receiver<Instant>,
) -> Vec<Sample> {
    let mut workers = tokio::task::JoinSet::new();
    let concurrency = workload.concurrency.min(workload.users).max(1);
    let period = (workload.rate > 0)
        .then(|| Duration::from_secs_f64(concurrency as f64 / workload.rate as f64));
    for worker in 0..concurrency {
        let mut players = PlayerServiceClient::new(channels[worker % channels.len()].clone());
        let stop_at = stop_at.clone();
        let users: Vec<String> = (worker..workload.users)
            .step_by(concurrency)
            .map(foreground_user)
            .collect();
        workers.spawn(async move {
            let mut pace = period.map(tokio::time::interval);
            if let Some(pace) = &mut pace {
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            let mut samples = Vec::new();
            for user in users.iter().cycle() {
                if let Some(pace) = &mut pace {
                    pace.tick().await;
                }
                let at = Instant::now();
                if at >= *stop_at.borrow() {
                    break;
                }
                let reply = players
                    .next_track(track_request(user, FOREGROUND_PLAYLIST))
                    .await;
                samples.push(Sample {
                    at,
                    micros: at.elapsed().as_micros() as u64,
                    outcome: reply
                        .ok()
                        .map(|reply| reply.get_ref().outcome())
                        .filter(|outcome| *outcome != PlayerOutcome::Unspecified),
                });
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(joined) = workers.join_next().await {
        samples.extend(joined.expect("load worker does not panic"));
    }
    samples
}

/// What [`scrape_compactions`] saw, and the end of the load it set.
struct Scrapes {
    scrapes: Vec<Scrape>,
    deadline: tokio::sync::watch::Sender<Instant>,
}

/// The node's bucket-drop counter and compaction time of the session keyspace, every
/// [`METRICS_PERIOD`] until the `deadline` and once after. Until a drop is seen after
/// `drop_at` (T), the deadline keeps moving to [`DROP_MARGIN`] ahead, up to T +
/// [`MAX_DROP_WAIT`], so the load covers the whole compaction however long it takes.
async fn scrape_compactions(
    node: &TestNode,
    deadline: tokio::sync::watch::Sender<Instant>,
    drop_at: Instant,
    seconds_after_drop: impl Fn(Instant) -> f64,
) -> Scrapes {
    let mut scrapes = Vec::new();
    loop {
        let metrics = node.metrics().await;
        let at = Instant::now();
        let value = |name| metric_value(&metrics, name, &KEYSPACE_LABEL);
        scrapes.push(Scrape {
            at: seconds_after_drop(at),
            buckets_dropped: value("playhead_keyspace_buckets_dropped_total"),
            compaction_seconds: value("playhead_keyspace_compaction_seconds_sum"),
        });
        if at >= drop_at && bucket_drop(&scrapes).is_none() {
            let extended = (at + DROP_MARGIN).min(drop_at + MAX_DROP_WAIT);
            deadline.send_if_modified(|until| {
                let later = extended > *until;
                if later {
                    *until = extended;
                }
                later
            });
        }
        if at >= *deadline.borrow() {
            return Scrapes { scrapes, deadline };
        }
        tokio::time::sleep(METRICS_PERIOD).await;
    }
}

/// The first bucket drop the scrapes saw after T. The metrics move when a compaction run
/// ends, so only one run falls between the two scrapes around it.
fn bucket_drop(scrapes: &[Scrape]) -> Option<BucketDrop> {
    let at_drop = scrapes.iter().rposition(|scrape| scrape.at <= 0.0)?;
    let dropped_before = scrapes[at_drop].buckets_dropped;
    let seen = at_drop
        + scrapes[at_drop..]
            .iter()
            .position(|scrape| scrape.buckets_dropped > dropped_before)?;
    let (before, after) = (scrapes[seen - 1], scrapes[seen]);
    Some(BucketDrop {
        after: before.at,
        seen: after.at,
        seconds: after.compaction_seconds - before.compaction_seconds,
    })
}

impl Window {
    fn new(from: f64, to: f64) -> Self {
        Self {
            from,
            to,
            span: to - from,
            latency: latency_histogram(),
            errors: 0,
        }
    }

    fn record(&mut self, at: f64, sample: &Sample) {
        if at < self.from || at >= self.to {
            return;
        }
        match sample.outcome {
            Some(_) => self.latency.saturating_record(sample.micros),
            None => self.errors += 1,
        }
    }

    fn millis_at(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// Adds the samples of the same window of another run.
    fn pool(&mut self, other: &Window) {
        self.latency
            .add(&other.latency)
            .expect("every window's histogram has the same bounds");
        self.errors += other.errors;
        self.from = self.from.min(other.from);
        self.to = self.to.max(other.to);
        self.span += other.span;
    }

    /// This window's p99 ÷ `before`'s.
    fn p99_ratio_to(&self, before: &Window) -> f64 {
        self.millis_at(0.99) / before.millis_at(0.99)
    }

    fn print(&self, what: &str) {
        let span = self.span;
        println!(
            "  {what:<8} T{:+6.1} s .. T{:+5.1} s {:>7.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms   errors {}",
            self.from,
            self.to,
            self.latency.len() as f64 / span,
            self.millis_at(0.50),
            self.millis_at(0.99),
            self.latency.max() as f64 / 1_000.0,
            self.errors
        );
    }
}

/// The serving part run several times, each with a bucket of its own: at 500 req/s a window of
/// ~3 s around one drop holds ~1,500 requests, so its p99 rests on ~15 of them and moves with
/// any burst of this machine's; the runs' windows pooled make the figure.
pub(super) struct Expiries {
    runs: Vec<Serving>,
}

impl Expiries {
    /// Runs [`serving`] `workload.expiry_runs` times, one after another.
    pub(super) async fn measure(
        nats_url: &str,
        workload: &Workload,
        fill_rate: f64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(workload.expiry_runs > 0, "--expiry-runs must be at least 1");
        let mut runs = Vec::with_capacity(workload.expiry_runs);
        for run in 1..=workload.expiry_runs {
            eprintln!(
                "sessions: expiry under load, run {run} of {}…",
                workload.expiry_runs
            );
            runs.push(serving(nats_url, workload, fill_rate).await?);
        }
        Ok(Self { runs })
    }

    /// The node starts of the run whose restart took longest to serve.
    pub(super) fn starts(&self) -> &Starts {
        self.runs
            .iter()
            .map(|run| &run.starts)
            .max_by_key(|starts| starts.restart.answered)
            .expect("at least one run")
    }

    /// Prints each run and the pooled windows; returns the slowest of the node's compaction
    /// times if every run saw its drop inside its compaction window.
    pub(super) fn print_load(&self, workload: &Workload) -> Option<f64> {
        println!();
        let pacing = match workload.rate {
            0 => "unpaced".to_owned(),
            rate => format!("paced at {rate} req/s"),
        };
        println!(
            "sessions: NextTrack through the gateway, {} users with {FOREGROUND_TRACKS}-track sessions, {} in flight {pacing}; in each of {} runs a {}-session bucket (width {} s, TTL {} s) becomes droppable at T, compaction every {} s",
            workload.users,
            workload.concurrency,
            self.runs.len(),
            workload.sessions,
            BUCKET_MS / 1000,
            TTL_MS / 1000,
            COMPACTION_INTERVAL.as_secs()
        );
        let mut slowest = Some(0.0f64);
        for (index, run) in self.runs.iter().enumerate() {
            println!(" run {}:", index + 1);
            let confirmed = run.print_load();
            slowest = slowest.zip(confirmed).map(|(a, b)| a.max(b));
        }
        let (before, during) = self.pooled();
        println!(" the {} runs pooled:", self.runs.len());
        before.print("before");
        during.print("during");
        let slices = self
            .runs
            .iter()
            .map(|run| run.during_slices.len())
            .min()
            .unwrap_or(0);
        let pooled_slices: Vec<Window> = (0..slices)
            .map(|slice| {
                let mut pooled = self.runs[0].during_slices[slice].clone();
                for run in &self.runs[1..] {
                    pooled.pool(&run.during_slices[slice]);
                }
                pooled
            })
            .collect();
        print_slices(&pooled_slices);
        println!("  ratio p99 during ÷ before {:.2}", self.p99_ratio());
        slowest
    }

    fn pooled(&self) -> (Window, Window) {
        let (first, rest) = self.runs.split_first().expect("at least one run");
        let mut before = first.baseline.clone();
        let mut during = first.during.clone();
        for run in rest {
            before.pool(&run.baseline);
            during.pool(&run.during);
        }
        (before, during)
    }

    /// `NextTrack` p99 in the pooled compaction windows ÷ in the pooled baseline windows.
    pub(super) fn p99_ratio(&self) -> f64 {
        let (before, during) = self.pooled();
        during.p99_ratio_to(&before)
    }
}

/// The p99 of each [`SLICE`] from [`SLICES_BEFORE`] slices before T.
fn print_slices(slices: &[Window]) {
    let p99s: Vec<String> = slices
        .iter()
        .map(|slice| format!("{:.1}", slice.millis_at(0.99)))
        .collect();
    println!(
        "  p99 of each {} s from T{:+} s, ms: {}",
        SLICE.as_secs(),
        -SLICES_BEFORE * SLICE.as_secs() as i32,
        p99s.join(" ")
    );
}

impl Serving {
    /// Prints the two windows; returns the node's compaction time if it was seen inside the
    /// compaction window.
    fn print_load(&self) -> Option<f64> {
        self.baseline.print("before");
        self.during.print("during");
        print_slices(&self.during_slices);
        let confirmed = match &self.dropped {
            Some(drop) if drop.after >= 0.0 && drop.seen <= self.during.to => {
                println!(
                    "  the node's compaction dropped the bucket in {:.3} s, ending between T{:+.2} s and T{:+.2} s (its metrics)",
                    drop.seconds, drop.after, drop.seen
                );
                Some(drop.seconds)
            }
            Some(drop) => {
                println!(
                    "  NOT CONFIRMED: the node's first bucket drop after T ended between T{:+.2} s and T{:+.2} s, outside the window",
                    drop.after, drop.seen
                );
                None
            }
            None => {
                println!(
                    "  NOT CONFIRMED: the node's metrics show no bucket drop after T: the window may not contain the compaction"
                );
                None
            }
        };
        if self.completed > 0 {
            println!(
                "  warning: {} replies were COMPLETED (sessions ran out of tracks)",
                self.completed
            );
        }
        println!(
            "  ratio p99 during ÷ before {:.2}",
            self.during.p99_ratio_to(&self.baseline)
        );
        confirmed
    }
}
