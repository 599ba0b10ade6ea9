//! Reads: the same client drives the gateway's `grpc.health.v1` Check (the baseline: tonic with
//! no playhead code behind it) and then `StationService.GetNowPlaying` over every benchmarked
//! station, each with a fixed number of requests in flight for a fixed time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use playhead_gateway::auth::Bearer;
use playhead_proto::v1::GetNowPlayingRequest;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_tests::system::{TestGateway, metric_value};
use tonic::transport::Channel;

use crate::common::{Phase, WARM_UP, health_check, latency_histogram};

const CACHE_FILL_TIMEOUT: Duration = Duration::from_secs(60);
/// Workers step through the stations by a large prime so they do not move in lockstep.
const STATION_STRIDE: usize = 7_919;

pub struct Load {
    pub duration: Duration,
    pub concurrency: usize,
    pub connections: usize,
}

pub struct Reads {
    health: Phase,
    now_playing: Phase,
}

pub async fn run(nats_url: &str, stations: &[String], load: &Load) -> anyhow::Result<Reads> {
    let gateway = TestGateway::start(nats_url).await;
    // GetNowPlaying is served from the gateway's cache: measure it once the KV watch filled it.
    let deadline = Instant::now() + CACHE_FILL_TIMEOUT;
    loop {
        let cached = metric_value(
            &gateway.metrics().await,
            "playhead_gateway_cached_stations",
            &[],
        );
        if cached >= stations.len() as f64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway cached {cached} of {} stations in {CACHE_FILL_TIMEOUT:?}",
            stations.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut channels = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        channels.push(gateway.channel().await);
    }

    eprintln!("loading the health check…");
    let health = drive(&channels, load, |channel, _| health_check(channel)).await;
    eprintln!("loading GetNowPlaying…");
    let stations: Arc<[String]> = stations.into();
    // The health check needs no token; GetNowPlaying pays for checking its own.
    let bearer = Bearer::new(&gateway.admin_token())?;
    let now_playing = drive(&channels, load, move |channel, request| {
        let station_id = stations[request % stations.len()].clone();
        let bearer = bearer.clone();
        async move {
            StationServiceClient::with_interceptor(channel, bearer)
                .get_now_playing(GetNowPlayingRequest { station_id })
                .await
                .map(drop)
        }
    })
    .await;
    gateway.stop().await;
    let reads = Reads {
        health,
        now_playing,
    };
    anyhow::ensure!(
        reads.now_playing.errors == 0,
        "{} GetNowPlaying requests failed",
        reads.now_playing.errors
    );
    anyhow::ensure!(reads.health.requests > 0, "no health check succeeded");
    Ok(reads)
}

/// Runs `request(channel, n)` from `load.concurrency` tasks spread over the channels: one
/// second of warm-up, then `load.duration` measured.
async fn drive<F, Fut>(channels: &[Channel], load: &Load, request: F) -> Phase
where
    F: Fn(Channel, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let warm_up_until = Instant::now() + WARM_UP;
    let stop_at = warm_up_until + load.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..load.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let request = request.clone();
        tasks.spawn(async move {
            let mut latency = latency_histogram();
            let (mut requests, mut errors) = (0u64, 0u64);
            let mut n = worker;
            loop {
                let started = Instant::now();
                if started >= stop_at {
                    break;
                }
                let result = request(channel.clone(), n).await;
                n += STATION_STRIDE;
                if started < warm_up_until {
                    continue;
                }
                match result {
                    Ok(()) => {
                        requests += 1;
                        latency.saturating_record(started.elapsed().as_micros() as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (requests, errors, latency)
        });
    }
    let mut phase = Phase::new(load.duration);
    while let Some(joined) = tasks.join_next().await {
        let (requests, errors, latency) = joined.expect("load task does not panic");
        phase.requests += requests;
        phase.errors += errors;
        phase.latency.add(latency).expect("same histogram bounds");
    }
    // The last requests may end after `stop_at`; count the time they really took.
    phase.elapsed = phase
        .elapsed
        .max(Instant::now().saturating_duration_since(warm_up_until));
    phase
}

impl Reads {
    /// Prints the read figures; returns the throughput ratio and GetNowPlaying's p99 in ms.
    pub fn report(&self, load: &Load) -> (f64, f64) {
        println!();
        println!(
            "reads: {} requests in flight over {} connections, {} s measured per phase",
            load.concurrency,
            load.connections,
            load.duration.as_secs()
        );
        self.health.print("health check");
        self.now_playing.print("GetNowPlaying");
        let ratio = self.now_playing.rate() / self.health.rate();
        println!("  ratio GetNowPlaying ÷ health check throughput {ratio:.2}");
        (ratio, self.now_playing.millis_at(0.99))
    }
}
