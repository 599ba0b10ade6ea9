//! Heartbeat RPC latency: BEATs of the playouts the storm left live go through the gateway's
//! `PlayoutService.Heartbeat` (gateway → user inbox → user actor → reply), paced open-loop at
//! a fixed rate over a few HTTP/2 connections; the baseline is the gateway's `grpc.health.v1`
//! Check at the same rate and pacing from the same client, in the same run.
//!
//! Open loop: requests leave on schedule whether or not earlier ones were answered, so a slow
//! answer cannot hold back the requests behind it and hide the backlog. Latency runs from the
//! moment a request leaves; the lag of that moment behind its schedule is reported apart, to
//! show whether the load generator kept up (tokio's timer ticks in whole milliseconds, so up
//! to ~2 ms of it is the timer itself). The client runs on a single-threaded runtime of
//! its own, apart from the in-process node and gateway (or, with
//! `--heartbeat-gateway-process`, a release gateway process of its own); the two cores are
//! shared either way.
//!
//! Every answer is counted by kind: anything but CONTINUE / OK is visible in the report (a
//! DEGRADED answer is the gateway failing open after its heartbeat timeout).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use playhead_gateway::auth::{AuthedChannel, Bearer};
use playhead_proto::subjects::Inbox;
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::{Heartbeat, HeartbeatAction, HeartbeatReason, ListPlayoutsRequest};
use playhead_tests::playout::{CONTINUE, answer};
use playhead_tests::system::{GatewayProcess, TestGateway, TestNode};
use tonic::transport::Channel;

use super::Workload;
use super::mix::{BEAT_MS, Mix};
use crate::common::{Batches, Phase, WARM_UP, health_check, latency_histogram};

/// Users whose playouts are listed after the storm.
const SAMPLED_USERS: usize = 100;

type Answer = (HeartbeatAction, HeartbeatReason);

/// What a paced phase produced.
pub(super) struct Paced<A, E = tonic::Status> {
    pub(super) phase: Phase,
    /// Successful requests per answer.
    answers: BTreeMap<A, u64>,
    /// Microseconds each measured request left after its scheduled time.
    lag: Histogram<u64>,
    first_error: Option<E>,
}

/// `ListPlayouts` of a sample of users against the playouts the mix left live.
struct Sample {
    users: usize,
    matching: usize,
    /// The first user whose listing differed, and how.
    first_mismatch: Option<String>,
    failed: Option<tonic::Status>,
}

pub(super) struct Rpc {
    sample: Sample,
    health: Paced<()>,
    pub(super) heartbeat: Paced<Answer>,
    /// The node's user-inbox batches during the Heartbeat phase.
    node_batches: Batches,
    live_playouts: usize,
}

/// The schedule of a paced phase.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacing {
    /// Requests per second.
    pub(super) rate: u64,
    /// Measured, after [`WARM_UP`].
    pub(super) duration: Duration,
}

/// Runs both phases against `node`, the node that drained the storm.
pub(super) async fn run(
    nats_url: &str,
    node: &TestNode,
    mix: &Mix,
    workload: &Workload,
) -> anyhow::Result<Rpc> {
    let beats: Arc<[Heartbeat]> = mix.live.values().flatten().cloned().collect();
    anyhow::ensure!(
        !beats.is_empty(),
        "the storm left no live playout to send BEATs for"
    );
    let live_playouts = beats.len();
    let gateway = if workload.gateway_in_process {
        Gateway::InProcess(TestGateway::start(nats_url).await)
    } else {
        Gateway::Process(GatewayProcess::start(nats_url, &[]).await)
    };
    eprintln!("heartbeats: the gateway runs {}", gateway.placement());
    let sample = list_playouts(&gateway.authed().await, mix).await;

    let pacing = Pacing {
        rate: workload.rate,
        duration: workload.duration,
    };
    let (url, connections) = (gateway.grpc_url(), workload.connections);
    let bearer = Bearer::new(&gateway.admin_token())?;
    let before = Batches::scrape(&node.metrics().await, Inbox::User);
    let load = on_a_thread_of_its_own("the load generator", move || {
        load(url, bearer, connections, pacing, beats)
    })
    .await;
    // Only the Heartbeat phase reaches the user inbox.
    let node_batches = Batches::scrape(&node.metrics().await, Inbox::User).since(&before);
    gateway.stop().await;
    let (health, heartbeat) = load?;
    Ok(Rpc {
        sample,
        health,
        heartbeat,
        node_batches,
        live_playouts,
    })
}

/// The gateway under test: in the benchmark's process or a process of its own.
enum Gateway {
    InProcess(TestGateway),
    Process(GatewayProcess),
}

impl Gateway {
    fn placement(&self) -> &'static str {
        match self {
            Gateway::InProcess(_) => "in the benchmark's process, on the node's runtime",
            Gateway::Process(_) => "as a release process of its own",
        }
    }

    fn grpc_url(&self) -> String {
        match self {
            Gateway::InProcess(gateway) => gateway.grpc_url(),
            Gateway::Process(gateway) => gateway.grpc_url(),
        }
    }

    fn admin_token(&self) -> String {
        match self {
            Gateway::InProcess(gateway) => gateway.admin_token(),
            Gateway::Process(gateway) => gateway.admin_token.clone(),
        }
    }

    async fn authed(&self) -> AuthedChannel {
        match self {
            Gateway::InProcess(gateway) => gateway.authed().await,
            Gateway::Process(gateway) => gateway.authed().await,
        }
    }

    async fn stop(self) {
        match self {
            Gateway::InProcess(gateway) => gateway.stop().await,
            Gateway::Process(mut gateway) => {
                gateway.process.terminate_within(Duration::from_secs(30));
            }
        }
    }
}

/// The health check, then BEATs of the live playouts, each paced over `connections` new
/// connections to the gateway at `url` (the BEATs with `bearer`'s token).
async fn load(
    url: String,
    bearer: Bearer,
    connections: usize,
    pacing: Pacing,
    beats: Arc<[Heartbeat]>,
) -> anyhow::Result<(Paced<()>, Paced<Answer>)> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }
    eprintln!(
        "heartbeats: loading the health check at {} req/s…",
        pacing.rate
    );
    let health = paced(&channels, pacing, |channel, _| health_check(channel)).await;
    eprintln!(
        "heartbeats: loading Heartbeat (BEAT) at {} req/s…",
        pacing.rate
    );
    let heartbeat = paced(&channels, pacing, move |channel, n| {
        let bearer = bearer.clone();
        let mut beat = beats[n % beats.len()].clone();
        // Each round over the live playouts moves them one interval further.
        beat.position_ms += (n / beats.len() + 1) as u64 * BEAT_MS;
        async move {
            let decision = PlayoutServiceClient::with_interceptor(channel, bearer.clone())
                .heartbeat(beat)
                .await?;
            Ok(answer(decision.get_ref()))
        }
    })
    .await;
    Ok((health, heartbeat))
}

/// Lists the playouts of [`SAMPLED_USERS`] users spread over the mix and compares them with
/// the playouts the mix left live.
async fn list_playouts(channel: &AuthedChannel, mix: &Mix) -> Sample {
    let mut client = PlayoutServiceClient::new(channel.clone());
    let stride = (mix.users.len() / SAMPLED_USERS).max(1);
    let mut sample = Sample {
        users: 0,
        matching: 0,
        first_mismatch: None,
        failed: None,
    };
    for user in mix.users.iter().step_by(stride).take(SAMPLED_USERS) {
        let request = ListPlayoutsRequest {
            user_id: user.clone(),
        };
        let listed = match client.list_playouts(request).await {
            Ok(reply) => reply.into_inner().playouts,
            Err(status) => {
                sample.failed = Some(status);
                return sample;
            }
        };
        sample.users += 1;
        let mut listed: Vec<&str> = listed
            .iter()
            .map(|playout| playout.playout_id.as_str())
            .collect();
        listed.sort_unstable();
        let mut expected: Vec<&str> = mix
            .live
            .get(user)
            .into_iter()
            .flatten()
            .map(|beat| beat.playout_id.as_str())
            .collect();
        expected.sort_unstable();
        if listed == expected {
            sample.matching += 1;
        } else if sample.first_mismatch.is_none() {
            sample.first_mismatch =
                Some(format!("{user}: listed {listed:?}, expected {expected:?}"));
        }
    }
    sample
}

/// Runs the future `load` makes on a single-threaded runtime and a thread of its own: on the
/// benchmark's runtime a load generator's schedule and answers would queue behind the node's
/// and the gateway's tasks.
pub(super) async fn on_a_thread_of_its_own<T, F, Fut>(what: &str, load: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a load generator's runtime")?
            .block_on(load())
    })
    .await
    .with_context(|| format!("{what}'s thread"))?
}

/// Sends `request(channel, n)` for n = 0, 1, … at `pacing.rate` per second, round-robin
/// over the channels (gRPC channels, or any connection), each in its own task: [`WARM_UP`],
/// then `pacing.duration` measured.
pub(super) async fn paced<C, F, Fut, A, E>(
    channels: &[C],
    pacing: Pacing,
    request: F,
) -> Paced<A, E>
where
    C: Clone,
    F: Fn(C, usize) -> Fut,
    Fut: Future<Output = Result<A, E>> + Send + 'static,
    A: Ord + Send + 'static,
    E: Display + Send + 'static,
{
    let started = Instant::now();
    let warm_up_until = started + WARM_UP;
    let stop_at = warm_up_until + pacing.duration;
    let mut paced = Paced {
        phase: Phase::new(pacing.duration),
        answers: BTreeMap::new(),
        lag: latency_histogram(),
        first_error: None,
    };
    let mut in_flight = tokio::task::JoinSet::new();
    for n in 0.. {
        let due = started + Duration::from_secs_f64(n as f64 / pacing.rate as f64);
        if due >= stop_at {
            break;
        }
        while let Some(done) = in_flight.try_join_next() {
            paced.record(done.expect("request task does not panic"));
        }
        tokio::time::sleep_until(due.into()).await;
        let measured = due >= warm_up_until;
        let lag = due.elapsed();
        let answer = request(channels[n % channels.len()].clone(), n);
        in_flight.spawn(async move {
            let sent = Instant::now();
            let result = answer.await;
            (measured, lag, sent.elapsed(), result)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        paced.record(done.expect("request task does not panic"));
    }
    paced
}

impl<A: Ord, E: Display> Paced<A, E> {
    fn record(&mut self, (measured, lag, took, result): (bool, Duration, Duration, Result<A, E>)) {
        if !measured {
            return;
        }
        self.lag.saturating_record(lag.as_micros() as u64);
        match result {
            Ok(answer) => {
                self.phase.requests += 1;
                self.phase
                    .latency
                    .saturating_record(took.as_micros() as u64);
                *self.answers.entry(answer).or_default() += 1;
            }
            Err(error) => {
                self.phase.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    pub(super) fn print(&self, what: &str) {
        self.phase.print(what);
        println!(
            "  {:<16} scheduler lag p99 {:.2} ms, max {:.2} ms",
            "",
            self.lag.value_at_quantile(0.99) as f64 / 1_000.0,
            self.lag.max() as f64 / 1_000.0
        );
        if let Some(error) = &self.first_error {
            println!("  {:<16} first error: {error}", "");
        }
    }
}

impl Paced<Answer> {
    /// Successful answers other than CONTINUE / OK.
    pub(super) fn not_ok(&self) -> u64 {
        self.answers
            .iter()
            .filter(|(answer, _)| **answer != CONTINUE)
            .map(|(_, count)| count)
            .sum()
    }
}

fn answer_name((action, reason): &Answer) -> String {
    format!(
        "{}/{}",
        action.as_str_name().trim_start_matches("HEARTBEAT_ACTION_"),
        reason.as_str_name().trim_start_matches("HEARTBEAT_REASON_")
    )
}

impl Rpc {
    pub(super) fn report(&self, workload: &Workload) {
        println!();
        let sample = &self.sample;
        match &sample.failed {
            Some(status) => println!(
                "heartbeat storm check: ListPlayouts failed after {} users: {status}",
                sample.users
            ),
            None => println!(
                "heartbeat storm check: ListPlayouts of {} sampled users: {} list exactly the playouts the storm left live",
                sample.users, sample.matching
            ),
        }
        if let Some(mismatch) = &sample.first_mismatch {
            println!("  first mismatch: {mismatch}");
        }
        println!();
        println!(
            "heartbeat RPC: open loop at {} req/s over {} connections, {} s measured per phase after {} s of warm-up; BEATs of {} live playouts",
            workload.rate,
            workload.connections,
            workload.duration.as_secs(),
            WARM_UP.as_secs(),
            self.live_playouts
        );
        self.health.print("health check");
        self.heartbeat.print("Heartbeat");
        let answers: Vec<String> = self
            .heartbeat
            .answers
            .iter()
            .map(|(answer, count)| format!("{} {count}", answer_name(answer)))
            .collect();
        println!(
            "  Heartbeat answers: {}; not CONTINUE/OK {}; errors {}",
            if answers.is_empty() {
                "none".to_owned()
            } else {
                answers.join(", ")
            },
            self.heartbeat.not_ok(),
            self.heartbeat.phase.errors
        );
        self.node_batches.print_as(
            "node batches meanwhile (warm-up included)",
            self.node_batches.messages,
        );
        println!(
            "  ratio Heartbeat ÷ health check p99 {:.2}",
            self.heartbeat.phase.millis_at(0.99) / self.health.phase.millis_at(0.99)
        );
    }
}
