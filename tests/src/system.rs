//! playhead's node and gateway for tests and benchmarks: in-process (fast, inspectable) or
//! as a child process (to be killed with SIGKILL or stopped with SIGTERM).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use playhead_actors::config::{EnrichmentProvider, NodeConfig};
use playhead_actors::node::{self, NodeEndpoints};
use playhead_client::service::nats_auth::{NatsAccess, NatsRole};
use playhead_gateway::auth::{AuthedChannel, Bearer, Claims, KeyRing, Role, now_secs};
use playhead_gateway::server::{self, GatewayConfig, GatewayEndpoints};
use playhead_proto::subjects::Inbox;
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::playout_service_client::PlayoutServiceClient;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{ListPlaysRequest, ListPlaysResponse};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::process::{ChildProcess, workspace_binary};
use crate::harness::wait::{eventually, within};
use crate::harness::{credentials_for, requester_keys_for, seed_for};
use crate::model::ExpectedPlay;

/// Partitions used by tests unless a test says otherwise (fewer consumers: quicker start).
pub const TEST_PARTITIONS: u32 = 8;

/// Ownership groups per inbox in tests: more than one, so that filtered group consumers and
/// several intakes per inbox are what the tests exercise.
pub const TEST_GROUPS: u32 = 2;

/// A node configuration for tests: joins `nats_url`, keeps state in `data_dir`, picks free
/// ports, and redelivers quickly.
pub fn test_node_config(nats_url: &str, data_dir: &Path) -> NodeConfig {
    let mut config = NodeConfig {
        data_dir: data_dir.to_owned(),
        ..NodeConfig::default()
    };
    config.nats.url = nats_url.to_owned();
    config.nats.nkey_file = seed_for(nats_url, NatsRole::Node);
    config.nats.requester_keys = requester_keys_for(nats_url);
    config.ingest.partitions = TEST_PARTITIONS;
    config.ingest.groups = TEST_GROUPS;
    config.ingest.ack_wait_secs = 5;
    config.metrics.listen = "127.0.0.1:0".parse().expect("valid address");
    // No test reaches the real MusicBrainz; the enrichment tests point the node at their own
    // test provider (`crate::provider`).
    config.enrichment.provider = EnrichmentProvider::None;
    config
}

/// How long a service started in this process may take to report its endpoints.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A service task running in this process until its shutdown token is cancelled.
struct InProcess {
    what: &'static str,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Spawns `run(shutdown, ready)` and waits up to `timeout` until it reports its endpoints.
    async fn start<E, F>(
        what: &'static str,
        timeout: Duration,
        run: impl FnOnce(CancellationToken, oneshot::Sender<E>) -> F,
    ) -> (Self, E)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run(shutdown.clone(), ready_tx));
        let endpoints = match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(endpoints)) => endpoints,
            Ok(Err(_)) => panic!("{what} failed to start: {:?}", task.await),
            Err(_) => panic!("{what} not ready within {timeout:?}"),
        };
        (
            Self {
                what,
                shutdown,
                task,
            },
            endpoints,
        )
    }

    /// Graceful stop through the service's one shutdown path.
    async fn stop(self) {
        let what = self.what;
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap_or_else(|_| panic!("{what} stops within 30 s"))
            .unwrap_or_else(|error| panic!("{what} task joins: {error}"))
            .unwrap_or_else(|error| panic!("{what} stops cleanly: {error:#}"));
    }
}

/// A node running in this process.
pub struct TestNode {
    pub endpoints: NodeEndpoints,
    running: InProcess,
}

impl TestNode {
    pub async fn start(config: NodeConfig) -> TestNode {
        Self::start_within(config, START_TIMEOUT).await
    }

    /// [`TestNode::start`] for a start that may take longer than usual (a rebuild of a large
    /// store): panics if the node does not serve within `timeout`.
    pub async fn start_within(config: NodeConfig, timeout: Duration) -> TestNode {
        Self::start_with(config, node::RunOptions::default(), timeout).await
    }

    /// [`TestNode::start_within`] with run options (e.g. injected faults).
    pub async fn start_with(
        config: NodeConfig,
        options: node::RunOptions,
        timeout: Duration,
    ) -> TestNode {
        let (running, endpoints) = InProcess::start("node", timeout, |shutdown, ready| {
            node::run_with(config, options, shutdown, Some(ready))
        })
        .await;
        TestNode { endpoints, running }
    }

    /// Graceful stop through the node's one shutdown path.
    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// The node's Prometheus text.
    pub async fn metrics(&self) -> String {
        scrape(&format!("http://{}/metrics", self.endpoints.metrics)).await
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    pub endpoints: GatewayEndpoints,
    /// The keys its tokens are signed with.
    pub keys: Arc<KeyRing>,
    running: InProcess,
}

/// A gateway configuration for tests: joins `nats_url` and picks free ports.
pub fn test_gateway_config(nats_url: &str) -> GatewayConfig {
    GatewayConfig {
        nats_url: nats_url.to_owned(),
        nats: NatsAccess::load(
            NatsRole::Gateway,
            seed_for(nats_url, NatsRole::Gateway).as_deref(),
            None,
        )
        .expect("the harness's gateway seed loads"),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        metrics_listen: "127.0.0.1:0".parse().expect("valid address"),
        console_listen: Some("127.0.0.1:0".parse().expect("valid address")),
        request_timeout: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(2),
        max_concurrent_rpcs: 512,
        max_streams_per_connection: 200,
        // Refusals are what many tests check: answered at once (the pause has its own test).
        refusal_pause: Duration::ZERO,
        keys: Arc::new(KeyRing::generate("test")),
        tls: None,
        imports: playhead_gateway::import::ImportLimits::default(),
    }
}

impl TestGateway {
    pub async fn start(nats_url: &str) -> TestGateway {
        Self::start_with(test_gateway_config(nats_url)).await
    }

    pub async fn start_with(config: GatewayConfig) -> TestGateway {
        let keys = config.keys.clone();
        let (running, endpoints) = InProcess::start("gateway", START_TIMEOUT, |shutdown, ready| {
            server::serve(config, shutdown, Some(ready))
        })
        .await;
        TestGateway {
            endpoints,
            keys,
            running,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.endpoints.grpc)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url())
            .expect("valid url")
            .connect()
            .await
            .expect("gateway accepts connections")
    }

    /// A token of this gateway's keys, valid for an hour.
    pub fn token(&self, role: Role, subject: &str, stations: &[&str]) -> String {
        let now = now_secs();
        self.keys.mint(&Claims {
            sub: subject.to_owned(),
            role,
            stations: stations.iter().map(|station| station.to_string()).collect(),
            iat: now,
            exp: now + 3600,
        })
    }

    /// An admin's token: what the tests that are not about authorization call with.
    pub fn admin_token(&self) -> String {
        self.token(Role::Admin, "tests", &[])
    }

    /// A channel sending `token`.
    pub async fn channel_as(&self, token: &str) -> AuthedChannel {
        Bearer::new(token)
            .expect("a printable token")
            .channel(self.channel().await)
    }

    /// A channel sending an admin's token.
    pub async fn authed(&self) -> AuthedChannel {
        self.channel_as(&self.admin_token()).await
    }

    /// Where the CLI goes, with an admin's token.
    pub fn cli_target(&self) -> CliTarget {
        CliTarget {
            grpc_url: self.grpc_url(),
            token: self.admin_token(),
        }
    }

    pub async fn stations(&self) -> StationServiceClient<AuthedChannel> {
        StationServiceClient::new(self.authed().await)
    }

    pub async fn players(&self) -> PlayerServiceClient<AuthedChannel> {
        PlayerServiceClient::new(self.authed().await)
    }

    pub async fn playouts(&self) -> PlayoutServiceClient<AuthedChannel> {
        PlayoutServiceClient::new(self.authed().await)
    }

    pub async fn metrics(&self) -> String {
        scrape(&format!("http://{}/metrics", self.endpoints.metrics)).await
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// `playhead-node` as a child process (built by `cargo build --workspace --bins`).
pub struct NodeProcess {
    pub process: ChildProcess,
}

impl NodeProcess {
    /// Starts the binary joining `nats_url` without waiting for it to serve (for runs that are
    /// meant to end on their own).
    pub fn spawn(nats_url: &str, data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::spawn_with_args(nats_url, data_dir, &[], extra_env)
    }

    /// [`NodeProcess::spawn`] with extra command-line arguments.
    pub fn spawn_with_args(
        nats_url: &str,
        data_dir: &Path,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Self {
        let data_dir = data_dir.display().to_string();
        let partitions = TEST_PARTITIONS.to_string();
        let groups = TEST_GROUPS.to_string();
        let nkey_file = seed_for(nats_url, NatsRole::Node)
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let mut env = vec![
            ("PLAYHEAD_INGEST__ACK_WAIT_SECS", "5"),
            ("PLAYHEAD_INGEST__GROUPS", groups.as_str()),
        ];
        let requester_keys = requester_keys_for(nats_url)
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        if !nkey_file.is_empty() {
            env.push(("PLAYHEAD_NATS__NKEY_FILE", nkey_file.as_str()));
            env.push(("PLAYHEAD_NATS__REQUESTER_KEYS", requester_keys.as_str()));
        }
        env.extend_from_slice(extra_env);
        let process = ChildProcess::spawn(
            workspace_binary("playhead-node"),
            [
                "--nats-url",
                nats_url,
                "--data-dir",
                &data_dir,
                "--partitions",
                &partitions,
                "--metrics-listen",
                "127.0.0.1:0",
            ]
            .into_iter()
            .chain(extra_args.iter().copied()),
            &env,
        );
        NodeProcess { process }
    }

    /// Its log so far, without terminal colours.
    pub fn plain_log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.process.log_path()).unwrap_or_default())
    }

    /// The `host:port` of its operations endpoint (`/metrics`, `/livez`, `/readyz`), once it
    /// logged it (right after connecting to the broker, a standby too).
    pub fn operations_address(&self) -> Option<String> {
        self.plain_log().lines().find_map(|line| {
            let rest = line.split("metrics=http://").nth(1)?;
            Some(rest[..rest.find('/')?].to_owned())
        })
    }

    /// Starts the binary joining `nats_url`, and waits until it serves.
    pub async fn start(nats_url: &str, data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::start_with_args(nats_url, data_dir, &[], extra_env).await
    }

    /// [`NodeProcess::start`] with extra command-line arguments.
    pub async fn start_with_args(
        nats_url: &str,
        data_dir: &Path,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Self {
        let mut node = Self::spawn_with_args(nats_url, data_dir, extra_args, extra_env);
        let log_path = node.process.log_path().to_owned();
        let serving = eventually(
            "playhead-node to log that it serves",
            Duration::from_secs(30),
            || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                async move { log.contains("playhead-node serving").then_some(()) }
            },
        );
        tokio::select! {
            _ = serving => {}
            _ = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if !node.process.is_running() { break; }
                }
            } => panic!("playhead-node exited during start:\n{}", node.process.log_tail(40)),
        }
        node
    }
}

/// A log without terminal colour codes.
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// `playhead-gateway` as a child process on free ports (for what only a process of its own
/// can do, e.g. install a trace exporter).
pub struct GatewayProcess {
    pub process: ChildProcess,
    /// `host:port` of its gRPC server.
    pub grpc: String,
    /// `host:port` of its `/metrics`.
    pub metrics: String,
    /// An admin's token of its key ring.
    pub admin_token: String,
    /// Holds its key ring file.
    _keys_dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts the binary joining `nats_url`, and waits until it serves.
    pub async fn start(nats_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let keys_dir = temp_dir();
        let keys_path = keys_dir.path().join("auth-keys");
        let keys = KeyRing::generate("test");
        keys.create_file(&keys_path).expect("write the key ring");
        let now = now_secs();
        let admin_token = keys.mint(&Claims {
            sub: "tests".into(),
            role: Role::Admin,
            stations: Vec::new(),
            iat: now,
            exp: now + 3600,
        });
        let keys_arg = keys_path.display().to_string();
        let nkey_file = seed_for(nats_url, NatsRole::Gateway)
            .expect("the gateway joins a harness broker")
            .display()
            .to_string();
        let mut process = ChildProcess::spawn(
            workspace_binary("playhead-gateway"),
            [
                "--nats-nkey-file",
                &nkey_file,
                "--auth-keys",
                &keys_arg,
                "--nats-url",
                nats_url,
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--console-listen",
                "127.0.0.1:0",
            ],
            extra_env,
        );
        let log_path = process.log_path().to_owned();
        let serving = eventually(
            "playhead-gateway to log that it serves",
            Duration::from_secs(30),
            || {
                let log = strip_ansi(&std::fs::read_to_string(&log_path).unwrap_or_default());
                async move {
                    log.lines()
                        .filter(|line| line.contains("playhead-gateway serving"))
                        .find_map(|line| {
                            let field = |name: &str| {
                                let rest = line.split(name).nth(1)?;
                                Some(rest.split_whitespace().next()?.to_owned())
                            };
                            let metrics = field("metrics=http://")?;
                            Some((
                                field("grpc=")?,
                                metrics.trim_end_matches("/metrics").to_owned(),
                            ))
                        })
                }
            },
        );
        let (grpc, metrics) = tokio::select! {
            endpoints = serving => endpoints,
            _ = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if !process.is_running() { break; }
                }
            } => panic!("playhead-gateway exited during start:\n{}", process.log_tail(40)),
        };
        GatewayProcess {
            process,
            grpc,
            metrics,
            admin_token,
            _keys_dir: keys_dir,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A channel sending an admin's token.
    pub async fn authed(&self) -> AuthedChannel {
        let channel = Channel::from_shared(self.grpc_url())
            .expect("valid url")
            .connect()
            .await
            .expect("gateway accepts connections");
        Bearer::new(&self.admin_token)
            .expect("a printable token")
            .channel(channel)
    }
}

/// One `ListPlays` page through the gateway.
pub async fn list_plays_page(
    client: &mut StationServiceClient<AuthedChannel>,
    station: &str,
    page_size: u32,
    before: Option<u64>,
    since: Option<u64>,
) -> ListPlaysResponse {
    client
        .list_plays(ListPlaysRequest {
            station_id: station.into(),
            page_size,
            before,
            since,
        })
        .await
        .expect("list plays")
        .into_inner()
}

/// A page's plays as (play_seq, (artist, title)), in page order (newest first).
pub fn plays_of(page: &ListPlaysResponse) -> Vec<(u64, ExpectedPlay)> {
    page.plays
        .iter()
        .map(|play| {
            let song = play.song.clone().unwrap_or_default();
            (play.play_seq, (song.artist, song.title))
        })
        .collect()
}

/// A station's whole history, paged backwards with `before`, returned oldest first.
pub async fn all_plays(
    client: &mut StationServiceClient<AuthedChannel>,
    station: &str,
) -> Vec<(u64, ExpectedPlay)> {
    let mut plays = Vec::new();
    let mut before = None;
    loop {
        let page = list_plays_page(client, station, 100, before, None).await;
        plays.extend(plays_of(&page));
        match page.next_before {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    plays.reverse();
    plays
}

/// Every station's whole history, as the gateway answers it, equals the model's (`when` names
/// the moment in the failure message).
pub async fn assert_all_plays(
    client: &mut StationServiceClient<AuthedChannel>,
    expected: &std::collections::BTreeMap<String, Vec<ExpectedPlay>>,
    when: &str,
) {
    for (station, plays) in expected {
        let expected_plays: Vec<(u64, ExpectedPlay)> = plays
            .iter()
            .cloned()
            .enumerate()
            .map(|(index, play)| (index as u64 + 1, play))
            .collect();
        assert_eq!(
            all_plays(client, station).await,
            expected_plays,
            "{station} {when}"
        );
    }
}

/// `SongStarted` events in the journal per station (an event appended twice counts twice).
pub async fn songs_started_per_station(
    jetstream: &jetstream::Context,
) -> std::collections::BTreeMap<String, usize> {
    let events = jetstream
        .get_stream(playhead_proto::subjects::EVENTS_STREAM)
        .await
        .expect("events");
    let mut started = std::collections::BTreeMap::new();
    let mut counts = events
        .info_with_subjects("playhead.events.station.*.SongStarted")
        .await
        .expect("subject counts");
    while let Some(entry) = futures::StreamExt::next(&mut counts).await {
        let (subject, count) = entry.expect("subject count");
        let station = subject.split('.').nth(3).expect("station token").to_owned();
        started.insert(station, count);
    }
    started
}

/// A station's whole history as the gateway lists it, oldest first.
pub async fn all_plays_full(
    client: &mut StationServiceClient<AuthedChannel>,
    station: &str,
) -> Vec<playhead_proto::v1::Play> {
    let mut plays = Vec::new();
    let mut before = None;
    loop {
        let page = list_plays_page(client, station, 100, before, None).await;
        plays.extend(page.plays.iter().cloned());
        match page.next_before {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    plays.reverse();
    plays
}

/// Inbox messages of `inbox` not yet acknowledged (pending or in flight), over every consumer
/// of its stream (one per ownership group); `None` when the broker cannot be asked.
pub async fn unfinished_messages(jetstream: &jetstream::Context, inbox: Inbox) -> Option<u64> {
    let stream = jetstream.get_stream(inbox.stream_name()).await.ok()?;
    let mut names = stream.consumer_names();
    let mut total = 0;
    let mut consumers = 0;
    while let Some(name) = futures::StreamExt::next(&mut names).await {
        let info = stream.consumer_info(name.ok()?).await.ok()?;
        total += info.num_pending + info.num_ack_pending as u64;
        consumers += 1;
    }
    // Before the node made its consumers nothing is processed.
    (consumers > 0).then_some(total)
}

/// Waits until every consumer of `inbox` has nothing pending or unacknowledged.
pub async fn wait_until_drained(jetstream: &jetstream::Context, inbox: Inbox, timeout: Duration) {
    eventually(
        &format!("{} inbox to be fully processed", inbox.label()),
        timeout,
        || async { (unfinished_messages(jetstream, inbox).await? == 0).then_some(()) },
    )
    .await
}

/// A gateway for the `playhead` CLI: its URL and the token the CLI sends.
#[derive(Debug, Clone)]
pub struct CliTarget {
    pub grpc_url: String,
    pub token: String,
}

/// Runs the `playhead` CLI against a gateway; (success, stdout, stderr). When `args` name a
/// harness broker (`--nats-url URL`), the CLI gets its credentials directory.
pub async fn cli(target: &CliTarget, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(workspace_binary("playhead"));
    command
        .args(["--grpc-url", &target.grpc_url])
        .env("PLAYHEAD_TOKEN", &target.token)
        .args(args);
    let nats_url = args
        .windows(2)
        .find(|pair| pair[0] == "--nats-url")
        .map(|pair| pair[1]);
    if let Some(credentials) = nats_url.and_then(credentials_for) {
        command.env("PLAYHEAD_NATS_CREDENTIALS", credentials);
    }
    let output = command.output();
    let output = within("the playhead CLI", Duration::from_secs(20), output)
        .await
        .expect("the CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads a Prometheus counter or gauge value (sum over label sets matching all `labels`).
pub fn metric_value(metrics_text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics_text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(name)
                && line[name.len()..].starts_with(['{', ' '])
                && labels
                    .iter()
                    .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

/// The body of a GET (a `/metrics` page).
pub async fn scrape(url: &str) -> String {
    http_get(url).await.1
}

/// A minimal HTTP GET (tests need no HTTP client dependency for the operations endpoint): the
/// status code and the body. Panics if the server cannot be reached.
pub async fn http_get(url: &str) -> (u16, String) {
    http_request("GET", url, None).await
}

/// [`try_http_request`] for a server that must answer: panics if it cannot be reached.
pub async fn http_request(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    try_http_request(method, url, body)
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: {error:#}"))
}

/// One HTTP/1.1 request to an `http://host:port/path` URL on a fresh connection
/// (`Connection: close`), with `body` as JSON if given: the status code (0 if the server sent
/// no status line) and the body, read as far as its `Content-Length` says, a chunked body to its
/// last chunk (and decoded), any other to the end of the connection.
///
/// Tests' only HTTP client: the operations endpoint and chromedriver speak plain HTTP/1.1, so
/// no client crate is needed.
pub async fn try_http_request(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    try_http_request_with(method, url, body, &[]).await
}

/// [`http_request`] with more request headers.
pub async fn http_request_with(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    try_http_request_with(method, url, body, headers)
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: {error:#}"))
}

/// [`try_http_request`] with more request headers.
pub async fn try_http_request_with(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    use anyhow::Context as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let without_scheme = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not an http:// URL"))?;
    let (address, path) = match without_scheme.split_once('/') {
        Some((address, path)) => (address, format!("/{path}")),
        None => (without_scheme, "/".to_owned()),
    };
    let body = body.map(serde_json::Value::to_string);
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAccept: */*\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    match &body {
        Some(body) => request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None if matches!(method, "POST" | "PUT" | "PATCH") => {
            request.push_str("Content-Length: 0\r\n\r\n")
        }
        None => request.push_str("\r\n"),
    }
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to {address}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .context("write the request")?;
    // Read until the body is complete by its framing, not until the server closes: chromedriver
    // answers `Connection: close` but leaves the connection open.
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut head = None;
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .context("read the response")?;
        response.extend_from_slice(&buffer[..read]);
        if head.is_none() {
            head = parse_response_head(&response, method);
        }
        let complete = head
            .as_ref()
            .is_some_and(|head: &ResponseHead| head.body_complete(&response));
        if !complete && read > 0 {
            continue;
        }
        let Some(head) = head else {
            // Closed before a complete head: no status to report.
            return Ok((0, String::new()));
        };
        let raw_body = &response[head.body_start..];
        let body = match head.framing {
            Framing::Chunked => decode_chunked(raw_body)
                .with_context(|| format!("decode the chunked body of {url}"))?,
            Framing::Length(length) => {
                anyhow::ensure!(
                    raw_body.len() >= length,
                    "{url}: the connection closed after {} of {length} body bytes",
                    raw_body.len()
                );
                raw_body[..length].to_vec()
            }
            Framing::UntilClose => raw_body.to_vec(),
        };
        return Ok((head.status, String::from_utf8_lossy(&body).into_owned()));
    }
}

/// How an HTTP response's body ends.
enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

/// The parts of an HTTP response head that tell where its body ends.
struct ResponseHead {
    /// 0 if the status line has none.
    status: u16,
    body_start: usize,
    framing: Framing,
}

impl ResponseHead {
    /// Whether `response` holds the whole body.
    fn body_complete(&self, response: &[u8]) -> bool {
        let body = &response[self.body_start..];
        match self.framing {
            Framing::Length(length) => body.len() >= length,
            Framing::Chunked => decode_chunked(body).is_ok(),
            Framing::UntilClose => false,
        }
    }
}

/// The head of `response` to a `method` request, once it is complete.
fn parse_response_head(response: &[u8], method: &str) -> Option<ResponseHead> {
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let header = |wanted: &str| {
        head.lines().skip(1).find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    let framing = if method == "HEAD" || matches!(status, 100..=199 | 204 | 304) {
        Framing::Length(0)
    } else if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        Framing::Chunked
    } else if let Some(length) = header("content-length").and_then(|value| value.parse().ok()) {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Some(ResponseHead {
        status,
        body_start: head_end + 4,
        framing,
    })
}

/// A `Transfer-Encoding: chunked` body decoded (chunk extensions and trailers ignored).
fn decode_chunked(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("a chunk size line without its end"))?;
        let size_line = std::str::from_utf8(&raw[..line_end])?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| anyhow::anyhow!("bad chunk size {size_line:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        anyhow::ensure!(raw.len() >= size, "a chunk of {size} bytes cut short");
        body.extend_from_slice(&raw[..size]);
        raw = raw[size..].strip_prefix(b"\r\n").unwrap_or(&raw[size..]);
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("playhead-test-")
        .tempdir()
        .expect("temp dir")
}

/// Path helper for sled data of a node inside a test temp dir.
pub fn node_data_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

#[cfg(test)]
mod tests {
    use super::decode_chunked;

    #[test]
    fn a_chunked_body_is_decoded_and_a_cut_one_is_an_error() {
        let raw =
            b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(
            decode_chunked(raw).expect("decodes"),
            b"Wikipedia in \r\n\r\nchunks."
        );
        assert_eq!(decode_chunked(b"0\r\n\r\n").expect("decodes"), b"");
        assert!(decode_chunked(b"a\r\nshort\r\n").is_err());
        assert!(decode_chunked(b"zz\r\n").is_err());
    }
}
