//! The test harness itself: the nats-server it starts serves JetStream, is isolated per test,
//! survives a restart with its store, and goes away on drop; child processes and waits behave.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use playhead_tests::harness::process::{ChildProcess, workspace_binary};
use playhead_tests::harness::wait::{DEFAULT_TIMEOUT, eventually, within};
use playhead_tests::harness::*;

fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        ..Default::default()
    }
}

fn accepts_connections(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

/// Publishes one message to `subject` and waits for the JetStream ack; returns its sequence.
async fn publish_acked(context: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    let ack = within(
        "the publish to be accepted",
        DEFAULT_TIMEOUT,
        context.publish(subject.to_string(), payload.into()),
    )
    .await
    .expect("publish");
    within("the JetStream ack", DEFAULT_TIMEOUT, ack)
        .await
        .expect("ack")
        .sequence
}

#[tokio::test]
async fn started_server_serves_jetstream() {
    let server = NatsServer::start();
    let context = jetstream::new(server.connect().await);

    let mut stream = within(
        "stream creation",
        DEFAULT_TIMEOUT,
        context.create_stream(stream_config("HARNESS")),
    )
    .await
    .expect("create stream");
    let sequence = publish_acked(&context, "harness.one", "hello").await;

    assert_eq!(sequence, 1);
    let info = within("stream info", DEFAULT_TIMEOUT, stream.info())
        .await
        .expect("stream info");
    assert_eq!(info.state.messages, 1);
    assert!(
        server.store_dir().join("jetstream").is_dir(),
        "store under the temp dir"
    );
}

#[tokio::test]
async fn servers_started_together_are_isolated() {
    let first = NatsServer::start();
    let second = NatsServer::start();

    assert_ne!(first.port(), second.port());
    assert_ne!(first.store_dir(), second.store_dir());
    let first_context = jetstream::new(first.connect().await);
    let second_context = jetstream::new(second.connect().await);
    within(
        "stream creation on the first server",
        DEFAULT_TIMEOUT,
        first_context.create_stream(stream_config("ONLY_ON_FIRST")),
    )
    .await
    .expect("create stream");

    let on_second = within(
        "stream lookup on the second server",
        DEFAULT_TIMEOUT,
        second_context.get_stream("ONLY_ON_FIRST"),
    )
    .await;
    assert!(on_second.is_err(), "a stream leaked between servers");
}

#[tokio::test]
async fn restart_keeps_port_and_store() {
    let mut server = NatsServer::start();
    let port = server.port();
    let context = jetstream::new(server.connect().await);
    within(
        "stream creation",
        DEFAULT_TIMEOUT,
        context.create_stream(stream_config("DURABLE")),
    )
    .await
    .expect("create stream");
    publish_acked(&context, "durable.before", "kept").await;

    server.stop();
    assert!(!server.is_running());
    assert!(
        !accepts_connections(port),
        "a stopped server still accepts connections"
    );
    server.stop(); // idempotent

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let context = jetstream::new(server.connect().await);
    let mut stream = within(
        "stream lookup",
        DEFAULT_TIMEOUT,
        context.get_stream("DURABLE"),
    )
    .await
    .expect("the stream survives the restart");
    let info = within("stream info", DEFAULT_TIMEOUT, stream.info())
        .await
        .expect("stream info");
    assert_eq!(info.state.messages, 1);
}

#[test]
fn drop_kills_the_server_and_removes_its_store() {
    let server = NatsServer::start();
    let port = server.port();
    let store_dir = server.store_dir();
    assert!(accepts_connections(port));

    drop(server);

    assert!(!accepts_connections(port), "the server outlived its handle");
    assert!(
        !store_dir.exists(),
        "the temporary store outlived its server"
    );
}

#[test]
fn start_with_args_passes_them_to_the_server() {
    let server = NatsServer::start_with_args(&["--server_name", "harness-test"]);

    assert!(
        server.log_tail(200).contains("harness-test"),
        "server log does not name the server:\n{}",
        server.log_tail(200)
    );
}

#[tokio::test]
async fn child_process_terminates_gracefully_and_keeps_its_log() {
    // nats-server stands in for a workspace binary: it logs and exits 0 on SIGTERM.
    let mut child = ChildProcess::spawn(nats_server_binary(), ["-a", "127.0.0.1", "-p", "-1"], &[]);
    // A SIGTERM before the server installed its signal handler would kill it outright.
    let log_path = child.log_path().to_owned();
    eventually("nats-server to report ready", DEFAULT_TIMEOUT, || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move { log.contains("Server is ready").then_some(()) }
    })
    .await;
    assert!(child.is_running());

    let status = child.terminate();

    assert!(
        status.success(),
        "nats-server exited with {status} on SIGTERM"
    );
    assert!(!child.is_running());
    assert!(
        child.log_tail(5).contains("Server Exiting"),
        "log tail: {}",
        child.log_tail(5)
    );
    assert_eq!(
        child.kill(),
        status,
        "kill after exit reports the same status"
    );
}

#[test]
fn child_process_kill_is_a_crash() {
    let mut child = ChildProcess::spawn(nats_server_binary(), ["-a", "127.0.0.1", "-p", "-1"], &[]);

    let status = child.kill();

    assert!(!status.success());
    assert_eq!(status.code(), None, "killed by a signal, not exited");
}

#[test]
fn child_process_exit_on_its_own_is_observed() {
    // nats-server exits 0 on an unknown flag, but 1 on a configuration file it cannot read.
    let mut child = ChildProcess::spawn(
        nats_server_binary(),
        ["-c", "/nonexistent/playhead-harness.conf"],
        &[],
    );

    let status = child.wait_for_exit(DEFAULT_TIMEOUT);

    assert!(!status.success());
}

#[test]
#[should_panic(expected = "run `cargo build --workspace --bins`")]
fn missing_workspace_binary_says_how_to_build_it() {
    workspace_binary("playhead-no-such-binary");
}

#[tokio::test]
async fn eventually_returns_the_first_value() {
    let mut probes = 0;
    let value = eventually("the third probe", DEFAULT_TIMEOUT, || {
        probes += 1;
        let seen = probes;
        async move { (seen == 3).then_some(seen) }
    })
    .await;
    assert_eq!(value, 3);
}

#[tokio::test]
#[should_panic(expected = "waiting for a condition that never holds")]
async fn eventually_panics_with_what_on_timeout() {
    eventually(
        "a condition that never holds",
        Duration::from_millis(100),
        || async { None::<()> },
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "waiting for a reply that never comes")]
async fn within_panics_with_what_on_timeout() {
    within(
        "a reply that never comes",
        Duration::from_millis(50),
        futures::future::pending::<()>(),
    )
    .await;
}
