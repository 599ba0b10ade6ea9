//! Player sessions (issue 3): the costs of the time-partitioned session keyspace.
//!
//! - compaction: `SessionStore::compact` dropping one bucket of N sessions, against removing
//!   the same N keys one by one from the same keyspace of the same db (the baseline);
//! - serving: `NextTrack` latency through the gateway in a window that contains the node's
//!   periodic compaction of a pre-filled N-session bucket, against an earlier window of the
//!   same load;
//! - restart: from starting the node on a data dir holding N sessions until a `GetSession` of
//!   one of them answers (sessions load lazily: this is sled recovery and topology set-up);
//! - churn: `size_on_disk` after 60 simulated days of new and touched sessions with daily
//!   compaction, against after 30, at a roughly constant live set (and after 90, to see
//!   whether it levels off).
//!
//! Storage-level parts move a `ManualClock`. The serving part pre-fills the node's data dir
//! with the clock placed in a future bucket, chosen so the bucket becomes droppable at a
//! wall-clock instant T far enough ahead for the set-up and the baseline window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use hdrhistogram::Histogram;
use playhead_actors::config::NodeConfig;
use playhead_actors::domain::player::{PlayerEvent, Track, evolve};
use playhead_actors::domain::time::Timestamp;
use playhead_actors::storage::Storage;
use playhead_actors::storage::clock::{Clock, ManualClock, SystemClock};
use playhead_actors::storage::session_store::{
    LastAnswer, SessionStore, StoredSession, session_key,
};
use playhead_proto::ids::{PlaylistId, UserId};
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::{GetSessionRequest, PlayerOutcome};
use playhead_tests::player::{start_request, track_request};
use playhead_tests::system::{TestGateway, TestNode, metric_value, temp_dir, test_node_config};
use tonic::transport::Channel;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// An arbitrary fixed day, so storage-level runs are identical from one run to the next.
const EPOCH_DAY: u64 = 20_000;
/// Sessions saved per call (one user's batch) when filling a bucket.
const SESSIONS_PER_SAVE: usize = 1_000;
/// Tracks of each pre-filled session (sets the record size, ~200 bytes).
const PREFILLED_TRACKS: usize = 10;
/// Serving part: session bucket width and TTL of the node, and its compaction interval.
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
/// The compaction window is T .. T + interval + this.
const DROP_MARGIN: Duration = Duration::from_secs(2);
const METRICS_PERIOD: Duration = Duration::from_millis(100);
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Churn part: sessions per user, simulated days.
const CHURN_SESSIONS_PER_USER: usize = 100;
const CHURN_DAYS: u64 = 90;
/// Re-saved users are drawn from those created in the last week.
const CHURN_RETURN_DAYS: usize = 7;
const KEYSPACE_LABEL: [(&str, &str); 1] = [("keyspace", "player_sessions")];

pub struct Workload {
    /// Sessions in the bucket that is compacted (and persisted across the restart).
    pub sessions: usize,
    /// Foreground listeners driven with `NextTrack`.
    pub users: usize,
    /// Paced `NextTrack` requests per second over all workers (0: unpaced closed loop).
    pub rate: u64,
    pub concurrency: usize,
    pub partitions: u32,
    /// New sessions a simulated day, and as many touched ones.
    pub churn_per_day: usize,
}

pub struct Sessions {
    compaction: Compaction,
    serving: Serving,
    churn: Churn,
}

struct Compaction {
    fill: Duration,
    size_full: u64,
    drop: Duration,
    drop_flush: Duration,
    deletes: Duration,
    deletes_flush: Duration,
}

struct Serving {
    first_start: Start,
    restart: Start,
    baseline: Window,
    during: Window,
    dropped: Option<BucketDrop>,
    completed: u64,
}

struct Start {
    /// Until `TestNode::start` returned, and until a pre-filled session was served.
    serving: Duration,
    answered: Duration,
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

struct Window {
    from: f64,
    to: f64,
    latency: Histogram<u64>,
    errors: u64,
}

struct Churn {
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

pub async fn run(nats_url: &str, workload: &Workload) -> anyhow::Result<Sessions> {
    let sessions = workload.sessions;
    anyhow::ensure!(sessions > 0, "--sessions must be at least 1");
    let compaction = tokio::task::spawn_blocking(move || compaction_vs_deletes(sessions)).await??;
    let fill_rate = sessions as f64 / compaction.fill.as_secs_f64();
    let serving = serving(nats_url, workload, fill_rate).await?;
    let per_day = workload.churn_per_day;
    let churn = tokio::task::spawn_blocking(move || churn(per_day)).await??;
    Ok(Sessions {
        compaction,
        serving,
        churn,
    })
}

/// One bucket of `count` sessions dropped by compaction, then the same keys refilled into
/// the next bucket and removed one by one.
fn compaction_vs_deletes(count: usize) -> anyhow::Result<Compaction> {
    let data = temp_dir();
    let config = NodeConfig::default();
    let (width, ttl) = (
        config.player.session_bucket_secs * 1000,
        config.player.session_ttl_secs * 1000,
    );
    let filled_at = EPOCH_DAY * DAY_MS;
    let clock = Arc::new(ManualClock::new(filled_at));
    let storage = Storage::open(&data.path().join("state"), &config, clock.clone())?;
    let store = &storage.sessions;
    let session = stored_session(PREFILLED_TRACKS, filled_at);

    eprintln!("sessions: filling one bucket with {count} sessions…");
    let filled = fill(store, "u", count, &session)?;
    storage.flush()?;
    let size_full = storage.size_on_disk()?;

    clock.set(droppable_at(filled_at / width, width, ttl));
    let started = Instant::now();
    let report = store.compact()?;
    let drop = started.elapsed();
    let started = Instant::now();
    storage.flush()?;
    let drop_flush = started.elapsed();
    anyhow::ensure!(
        report.buckets_dropped == 1,
        "compaction dropped {} buckets, expected the one filled",
        report.buckets_dropped
    );

    eprintln!("sessions: refilling the same keys, then removing them one by one…");
    fill(store, "u", count, &session)?;
    storage.flush()?;
    let started = Instant::now();
    for n in 0..count {
        let (user, playlist) = prefilled_ids("u", n)?;
        let removed = store.keyspace().remove(&session_key(&user, &playlist))?;
        anyhow::ensure!(removed, "session {n} was not there to remove");
    }
    let deletes = started.elapsed();
    let started = Instant::now();
    storage.flush()?;
    Ok(Compaction {
        fill: filled,
        size_full,
        drop,
        drop_flush,
        deletes,
        deletes_flush: started.elapsed(),
    })
}

/// When compaction may drop bucket `index` (expired for one more bucket width).
fn droppable_at(index: u64, width: u64, ttl: u64) -> u64 {
    (index + 2) * width + ttl
}

/// A playing session of `tracks` tracks, started (and touched) at `at_ms`.
fn stored_session(tracks: usize, at_ms: u64) -> StoredSession {
    let tracks = (0..tracks)
        .map(|n| Track {
            track_id: format!("t{n:02}"),
            artist: format!("artist {}", n % 5),
        })
        .collect();
    let started = PlayerEvent::SessionStarted {
        tracks,
        seed: 7,
        recent_skips: Vec::new(),
        at: Timestamp::from_millis(at_ms),
    };
    StoredSession {
        session: evolve(None, &started).expect("a started session"),
        last_applied_seq: 1,
        last_answer: LastAnswer::default(),
    }
}

/// The `n`th filled session: user `{prefix}{n / 1000}`, playlist `pl{n % 1000}`.
fn prefilled_ids(prefix: &str, n: usize) -> anyhow::Result<(UserId, PlaylistId)> {
    Ok((
        UserId::parse(format!("{prefix}{:07}", n / SESSIONS_PER_SAVE))?,
        PlaylistId::parse(format!("pl{:04}", n % SESSIONS_PER_SAVE))?,
    ))
}

/// Saves `count` copies of `session` under the ids of [`prefilled_ids`], one batch per user,
/// reporting progress on stderr; returns the time it took.
fn fill(
    store: &SessionStore,
    prefix: &str,
    count: usize,
    session: &StoredSession,
) -> anyhow::Result<Duration> {
    let playlists = (0..SESSIONS_PER_SAVE.min(count))
        .map(|n| Ok(prefilled_ids(prefix, n)?.1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let step = (count / 10).max(1);
    let mut saved = 0;
    while saved < count {
        let (user, _) = prefilled_ids(prefix, saved)?;
        let in_batch = (count - saved).min(SESSIONS_PER_SAVE);
        let batch: Vec<_> = playlists[..in_batch]
            .iter()
            .map(|playlist| (playlist, session))
            .collect();
        store.save(&user, &batch)?;
        if (saved + in_batch) / step > saved / step {
            eprintln!(
                "  {} of {count} sessions saved ({:.0}/s)",
                saved + in_batch,
                (saved + in_batch) as f64 / started.elapsed().as_secs_f64()
            );
        }
        saved += in_batch;
    }
    Ok(started.elapsed())
}

/// The node with a pre-filled bucket droppable at T: its first start and restart, then a
/// steady `NextTrack` load from before T until the compaction window after T has passed.
async fn serving(nats_url: &str, workload: &Workload, fill_rate: f64) -> anyhow::Result<Serving> {
    let data = temp_dir();
    let mut config = test_node_config(nats_url, data.path());
    config.ingest.partitions = workload.partitions;
    config.storage.compaction_interval_secs = COMPACTION_INTERVAL.as_secs();
    config.player.session_bucket_secs = BUCKET_MS / 1000;
    config.player.session_ttl_secs = TTL_MS / 1000;

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
    let channel = gateway.channel().await;
    let players = PlayerServiceClient::new(channel.clone());
    let (user, playlist) = prefilled_ids("u", workload.sessions / 2)?;
    let probe = GetSessionRequest {
        user_id: user.to_string(),
        playlist_id: playlist.to_string(),
    };

    eprintln!("sessions: starting the node, then restarting it…");
    let (node, first_start) = start_until_session(&config, &players, &probe).await?;
    node.stop().await;
    let (node, restart) = start_until_session(&config, &players, &probe).await?;

    eprintln!("sessions: starting {} foreground sessions…", workload.users);
    start_foreground(&players, workload.users).await?;
    let load_started = Instant::now();
    let stop_at = drop_at + COMPACTION_INTERVAL + DROP_MARGIN;
    eprintln!(
        "sessions: NextTrack load until {:.0} s after the bucket becomes droppable ({:.0} s from now)…",
        (COMPACTION_INTERVAL + DROP_MARGIN).as_secs_f64(),
        stop_at
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    );
    let offset = |at: Instant| -> f64 {
        if at >= drop_at {
            (at - drop_at).as_secs_f64()
        } else {
            -(drop_at - at).as_secs_f64()
        }
    };
    let channels = [channel, gateway.channel().await];
    let (samples, scrapes) = tokio::join!(
        next_track_load(&channels, workload, stop_at),
        scrape_compactions(&node, stop_at, offset)
    );
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
    let mut completed = 0;
    for sample in &samples {
        let at = offset(sample.at);
        for window in [&mut baseline, &mut during] {
            window.record(at, sample);
        }
        completed += u64::from(sample.outcome == Some(PlayerOutcome::Completed));
    }
    Ok(Serving {
        first_start,
        restart,
        baseline,
        during,
        dropped: bucket_drop(&scrapes),
        completed,
    })
}

/// Starts the node; returns it with the time until it served and until `probe` answered.
async fn start_until_session(
    config: &NodeConfig,
    players: &PlayerServiceClient<Channel>,
    probe: &GetSessionRequest,
) -> anyhow::Result<(TestNode, Start)> {
    let started = Instant::now();
    let node = TestNode::start(config.clone()).await;
    let serving = started.elapsed();
    loop {
        match players.clone().get_session(probe.clone()).await {
            Ok(_) => {
                let answered = started.elapsed();
                return Ok((node, Start { serving, answered }));
            }
            Err(status) if started.elapsed() > START_TIMEOUT => {
                anyhow::bail!("GetSession of a pre-filled session still fails: {status}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

fn foreground_user(n: usize) -> String {
    format!("fg{n:05}")
}

async fn start_foreground(
    players: &PlayerServiceClient<Channel>,
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
    channels: &[Channel],
    workload: &Workload,
    stop_at: Instant,
) -> Vec<Sample> {
    let mut workers = tokio::task::JoinSet::new();
    let concurrency = workload.concurrency.min(workload.users).max(1);
    let period = (workload.rate > 0)
        .then(|| Duration::from_secs_f64(concurrency as f64 / workload.rate as f64));
    for worker in 0..concurrency {
        let mut players = PlayerServiceClient::new(channels[worker % channels.len()].clone());
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
                if at >= stop_at {
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

/// The node's bucket-drop counter and compaction time of the session keyspace, every
/// [`METRICS_PERIOD`] until `stop_at` and once after.
async fn scrape_compactions(
    node: &TestNode,
    stop_at: Instant,
    seconds_after_drop: impl Fn(Instant) -> f64,
) -> Vec<Scrape> {
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
        if at >= stop_at {
            return scrapes;
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
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
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

    fn print(&self, what: &str) {
        let span = self.to - self.from;
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

/// `CHURN_DAYS` simulated days: each day `per_day` new sessions and as many re-saved ones
/// (whole users, drawn from those created in the last [`CHURN_RETURN_DAYS`] days, so every
/// user lives at most that much longer than the TTL and the live set levels off), then
/// compaction and a flush.
fn churn(per_day: usize) -> anyhow::Result<Churn> {
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
        storage.sessions.compact()?;
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The figures the summary judges.
pub struct Figures {
    /// Seconds `compact()` took to drop the bucket, storage alone.
    pub compaction_idle: f64,
    /// Seconds the node's compaction took to drop it while serving (`None`: not seen).
    pub compaction_serving: Option<f64>,
    /// `NextTrack` p99 in the compaction window ÷ in the baseline window.
    pub p99_ratio: f64,
    /// Seconds from restart until a pre-filled session was served.
    pub restart: f64,
    /// Bytes on disk after 60 days ÷ after 30 (reported).
    pub disk_ratio: f64,
    /// Bytes on disk after 90 days ÷ after 60: about 1 when disk use is bounded.
    pub disk_ratio_later: f64,
}

impl Sessions {
    pub fn report(&self, workload: &Workload) -> Figures {
        self.compaction.print(workload.sessions);
        self.serving.print_starts(workload);
        let compaction_serving = self.serving.print_load(workload);
        let (disk_ratio, disk_ratio_later) = self.churn.print(workload.churn_per_day);
        Figures {
            compaction_idle: self.compaction.drop.as_secs_f64(),
            compaction_serving,
            p99_ratio: self.serving.during.millis_at(0.99) / self.serving.baseline.millis_at(0.99),
            restart: self.serving.restart.answered.as_secs_f64(),
            disk_ratio,
            disk_ratio_later,
        }
    }
}

impl Compaction {
    fn print(&self, sessions: usize) {
        let seconds = |duration: Duration| duration.as_secs_f64();
        println!();
        println!(
            "sessions: one bucket of {sessions} sessions ({PREFILLED_TRACKS} tracks each, {:.0} MiB on disk), daily buckets, 30-day TTL",
            mib(self.size_full)
        );
        println!(
            "  fill ({SESSIONS_PER_SAVE} sessions per save)        {:>8.2} s {:>10.0} sessions/s",
            seconds(self.fill),
            sessions as f64 / seconds(self.fill)
        );
        println!(
            "  compact(): drop the bucket            {:>8.3} s   (then flush {:.3} s)",
            seconds(self.drop),
            seconds(self.drop_flush)
        );
        println!(
            "  baseline: remove each key             {:>8.3} s   (then flush {:.3} s)",
            seconds(self.deletes),
            seconds(self.deletes_flush)
        );
        println!(
            "  ratio per-key deletes ÷ compaction {:.0} (with the flushes {:.0})",
            seconds(self.deletes) / seconds(self.drop),
            seconds(self.deletes + self.deletes_flush) / seconds(self.drop + self.drop_flush)
        );
    }
}

impl Serving {
    fn print_starts(&self, workload: &Workload) {
        println!();
        println!(
            "sessions: node start with those {} sessions persisted ({} partitions), until GetSession of one answers through the gateway",
            workload.sessions, workload.partitions
        );
        for (what, start) in [
            ("start on the pre-filled data dir", &self.first_start),
            ("restart", &self.restart),
        ] {
            println!(
                "  {what:<32} serving after {:>6.2} s   GetSession answered after {:>6.2} s",
                start.serving.as_secs_f64(),
                start.answered.as_secs_f64()
            );
        }
    }

    /// Prints the two windows; returns the node's compaction time if it was seen inside the
    /// compaction window.
    fn print_load(&self, workload: &Workload) -> Option<f64> {
        println!();
        let pacing = match workload.rate {
            0 => "unpaced".to_owned(),
            rate => format!("paced at {rate} req/s"),
        };
        println!(
            "sessions: NextTrack through the gateway, {} users with {FOREGROUND_TRACKS}-track sessions, {} in flight {pacing}; the {}-session bucket (width {} s, TTL {} s) becomes droppable at T, compaction every {} s",
            workload.users,
            workload.concurrency,
            workload.sessions,
            BUCKET_MS / 1000,
            TTL_MS / 1000,
            COMPACTION_INTERVAL.as_secs()
        );
        self.baseline.print("before");
        self.during.print("during");
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
            self.during.millis_at(0.99) / self.baseline.millis_at(0.99)
        );
        confirmed
    }
}

impl Churn {
    /// Prints the days; returns the disk size after 60 days ÷ after 30.
    /// Prints the days; returns (60 ÷ 30, 90 ÷ 60).
    fn print(&self, per_day: usize) -> (f64, f64) {
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
