//! The gateway at its edge (issue 12), run as a process of its own so its memory is its own:
//!
//! - **flood**: `connections` HTTP/2 connections each keep `streams` `StartPlaylist` requests of
//!   `request_bytes` in flight (raw h2: one shared buffer is the body of every request, so the
//!   load generator holds one copy) for `flood_secs`, with a valid token so the requests reach
//!   admission and decoding. Measured: the gateway's peak resident memory (`VmHWM`), the
//!   answers by gRPC code, and the health check's latency at a paced rate beside the flood ÷
//!   the same before it.
//! - **watched ids**: `watched_ids` distinct station ids watched (`WatchNowPlaying`, 100 ids a
//!   call, each stream opened then dropped), then the gateway's cached stations
//!   (`playhead_gateway_cached_stations`) and resident memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{
    PlaylistTrack, StartPlaylist, StartPlaylistRequest, WatchNowPlayingRequest,
};
use playhead_tests::harness::NatsServer;
use playhead_tests::system::{
    GatewayProcess, TestNode, metric_value, scrape, temp_dir, test_node_config,
};
use prost::Message as _;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::common::{health_check, latency_histogram};

pub(crate) struct Workload {
    pub(crate) connections: usize,
    pub(crate) streams: usize,
    pub(crate) request_bytes: usize,
    pub(crate) flood: Duration,
    pub(crate) health_rate: u64,
    pub(crate) watched_ids: usize,
}

pub(crate) struct Figures {
    pub(crate) rss_before_mib: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) answers: BTreeMap<String, u64>,
    pub(crate) flood_elapsed: Duration,
    pub(crate) health_p99_before_ms: f64,
    pub(crate) health_p99_during_ms: f64,
    pub(crate) health_failed_during: u64,
    pub(crate) watched: usize,
    pub(crate) watch_elapsed: Duration,
    pub(crate) cached_stations: f64,
    pub(crate) rss_after_watch_mib: f64,
    pub(crate) peak_rss_after_watch_mib: f64,
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
pub(crate) fn memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("a number of kB")?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// One gRPC frame (the 5-byte prefix and the message) of a `StartPlaylist` of about `bytes`.
fn oversized_start(bytes: usize) -> Bytes {
    let track_id_len = 100;
    let per_track = track_id_len + 8;
    let request = StartPlaylistRequest {
        user_id: "flood".into(),
        start: Some(StartPlaylist {
            playlist_id: "big".into(),
            tracks: (0..bytes / per_track)
                .map(|n| PlaylistTrack {
                    track_id: format!("{n:0>track_id_len$}"),
                    artist: String::new(),
                })
                .collect(),
            seed: None,
            restart: false,
        }),
    };
    let message = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

/// One connection keeping `streams` requests in flight until `until`: the answers by code.
async fn flood_connection(
    address: String,
    frame: Bytes,
    authorization: http::HeaderValue,
    streams: usize,
    until: Instant,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let tcp = tokio::net::TcpStream::connect(&address).await?;
    tcp.set_nodelay(true)?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut answers = BTreeMap::new();
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < streams && Instant::now() < until {
            let mut ready = client.clone().ready().await?;
            let request = http::Request::post(format!(
                "http://{address}/playhead.v1.PlayerService/StartPlaylist"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", authorization.clone())
            .body(())?;
            let (response, mut body) = ready.send_request(request, false)?;
            // Queued, not copied: every stream shares the one buffer. The gateway may answer
            // before reading it; what it never reads is dropped with the stream.
            let _ = body.send_data(frame.clone(), true);
            in_flight.spawn(async move {
                let response = response.await?;
                let code = match response.headers().get("grpc-status") {
                    Some(code) => code.to_str()?.to_owned(),
                    None => {
                        let mut body = response.into_body();
                        while let Some(chunk) = body.data().await {
                            let chunk = chunk?;
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        body.trailers()
                            .await?
                            .and_then(|trailers| {
                                Some(trailers.get("grpc-status")?.to_str().ok()?.to_owned())
                            })
                            .unwrap_or_else(|| "none".into())
                    }
                };
                anyhow::Ok(code)
            });
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let code = match done? {
            Ok(code) => format!("{:?}", tonic::Code::from_i32(code.parse().unwrap_or(2))),
            Err(error) => format!("transport: {error}"),
        };
        *answers.entry(code).or_default() += 1;
    }
    Ok(answers)
}

/// Health checks at `rate` a second, open loop, until `until`: microseconds of each answer, and
/// how many failed.
async fn paced_health(channel: Channel, rate: u64, until: Instant) -> (Vec<u64>, u64) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut checks = JoinSet::new();
    while Instant::now() < until {
        ticks.tick().await;
        let channel = channel.clone();
        checks.spawn(async move {
            let sent = Instant::now();
            health_check(channel)
                .await
                .map(|()| sent.elapsed().as_micros() as u64)
        });
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while let Some(check) = checks.join_next().await {
        match check {
            Ok(Ok(micros)) => latencies.push(micros),
            _ => failed += 1,
        }
    }
    (latencies, failed)
}

fn p99_ms(latencies: &[u64]) -> f64 {
    let mut histogram = latency_histogram();
    for micros in latencies {
        let _ = histogram.record((*micros).max(1));
    }
    histogram.value_at_quantile(0.99) as f64 / 1000.0
}

/// On a broker of its own: the journal phase leaves bare events on the shared one that no node
/// could fold.
pub(crate) async fn run(workload: &Workload) -> anyhow::Result<Figures> {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let gateway = GatewayProcess::start(&nats.url(), &[]).await;
    let pid = gateway.process.pid();
    let channel = Channel::from_shared(gateway.grpc_url())?.connect().await?;

    eprintln!("edge: the health check alone…");
    let baseline = Duration::from_secs(3);
    let (before, _) = paced_health(
        channel.clone(),
        workload.health_rate,
        Instant::now() + baseline,
    )
    .await;
    let (rss_before_mib, _) = memory_mib(pid)?;

    eprintln!(
        "edge: {} connections × {} streams of {} MiB requests for {} s, health checks beside…",
        workload.connections,
        workload.streams,
        workload.request_bytes >> 20,
        workload.flood.as_secs()
    );
    let frame = oversized_start(workload.request_bytes);
    let authorization: http::HeaderValue = format!("Bearer {}", gateway.admin_token).parse()?;
    let started = Instant::now();
    let until = started + workload.flood;
    let mut flood = JoinSet::new();
    for _ in 0..workload.connections {
        flood.spawn(flood_connection(
            gateway.grpc.clone(),
            frame.clone(),
            authorization.clone(),
            workload.streams,
            until,
        ));
    }
    let (during, health_failed_during) =
        paced_health(channel.clone(), workload.health_rate, until).await;
    let mut answers = BTreeMap::new();
    while let Some(connection) = flood.join_next().await {
        match connection? {
            Ok(counts) => {
                for (code, count) in counts {
                    *answers.entry(code).or_default() += count;
                }
            }
            Err(error) => *answers.entry(format!("connection: {error}")).or_default() += 1,
        }
    }
    let flood_elapsed = started.elapsed();
    let (_, peak_rss_mib) = memory_mib(pid)?;

    eprintln!(
        "edge: watching {} distinct station ids…",
        workload.watched_ids
    );
    let watch_started = Instant::now();
    let calls = workload.watched_ids.div_ceil(100);
    let mut watches = JoinSet::new();
    let bearer = playhead_gateway::auth::Bearer::new(&gateway.admin_token)?;
    for call in 0..calls {
        if watches.len() >= 64 {
            let watch = watches.join_next().await.context("a watch")?;
            watch??;
        }
        let client = StationServiceClient::new(bearer.channel(channel.clone()));
        watches.spawn(async move {
            let ids = (call * 100..(call + 1) * 100)
                .map(|n| format!("watched-{n}"))
                .collect();
            // Opened, then dropped: the client goes away as a page or an app would.
            client
                .clone()
                .watch_now_playing(WatchNowPlayingRequest { station_ids: ids })
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        });
    }
    while let Some(watch) = watches.join_next().await {
        watch??;
    }
    let watch_elapsed = watch_started.elapsed();
    // The cache sweeps what nobody watches once enough piles up; let a scrape see it settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = scrape(&format!("http://{}/metrics", gateway.metrics)).await;
    let cached_stations = metric_value(&metrics, "playhead_gateway_cached_stations", &[]);
    let (rss_after_watch_mib, peak_rss_after_watch_mib) = memory_mib(pid)?;
    drop(gateway);
    node.stop().await;
    Ok(Figures {
        rss_before_mib,
        peak_rss_mib,
        answers,
        flood_elapsed,
        health_p99_before_ms: p99_ms(&before),
        health_p99_during_ms: p99_ms(&during),
        health_failed_during,
        watched: calls * 100,
        watch_elapsed,
        cached_stations,
        rss_after_watch_mib,
        peak_rss_after_watch_mib,
    })
}

impl Figures {
    pub(crate) fn report(&self, workload: &Workload) -> &Self {
        println!(
            "edge: gateway process (release), {} connections × {} streams of {} MiB StartPlaylist requests for {:.1} s",
            workload.connections,
            workload.streams,
            workload.request_bytes >> 20,
            self.flood_elapsed.as_secs_f64()
        );
        let total: u64 = self.answers.values().sum();
        println!(
            "  answers {total} ({:.0}/s):",
            total as f64 / self.flood_elapsed.as_secs_f64()
        );
        for (code, count) in &self.answers {
            println!("    {code:<40} {count:>9}");
        }
        println!(
            "  gateway RSS before {:.0} MiB, peak {:.0} MiB",
            self.rss_before_mib, self.peak_rss_mib
        );
        println!(
            "  health p99 at {}/s: before {:.2} ms, during the flood {:.2} ms ({} failed)",
            workload.health_rate,
            self.health_p99_before_ms,
            self.health_p99_during_ms,
            self.health_failed_during
        );
        println!(
            "  watched ids: {} distinct in {:.1} s → {} stations cached; RSS {:.0} MiB (peak {:.0} MiB)",
            self.watched,
            self.watch_elapsed.as_secs_f64(),
            self.cached_stations,
            self.rss_after_watch_mib,
            self.peak_rss_after_watch_mib
        );
        self
    }
}
