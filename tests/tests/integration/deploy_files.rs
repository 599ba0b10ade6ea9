//! The files in `deploy/systemd/` start the binaries: each unit's `ExecStart=`, expanded with
//! its `Environment=` and the example environment file read the way systemd reads it (an
//! inline `# note` is part of the value), is accepted by `--check-config`, and the file's
//! values reach the configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use playhead_client::service::nats_auth::{NatsAccess, NatsRole, ensure_credentials};
use playhead_tests::harness::process::workspace_binary;
use playhead_tests::system::temp_dir;
use playhead_tests::systemd::{Unit, environment_file};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Runs the unit's command line with `--check-config` and the environment systemd would give
/// it (nothing else), with the installed paths mapped to this checkout; returns stdout.
fn check_config(unit_file: &str, binary: &str, installed: &[(&str, &Path)]) -> String {
    let unit = Unit::parse(&read(&deploy(unit_file)));
    assert_eq!(
        unit.environment_files,
        ["/etc/playhead/env"],
        "{unit_file} reads the environment file the example is for"
    );
    let file = environment_file(&read(&deploy("systemd/playhead.env.example")));
    let environment = unit.environment_with(&[file]);
    let mut command_line = unit.command_line(&environment).into_iter();
    let program = command_line.next().expect("ExecStart has a program");
    assert!(program.ends_with(binary), "{unit_file} runs {program}");
    let arguments: Vec<String> = command_line
        .map(|argument| {
            installed
                .iter()
                .find(|(path, _)| argument == *path)
                .map_or(argument, |(_, local)| local.display().to_string())
        })
        .collect();
    let environment: Vec<(String, String)> = environment
        .into_iter()
        .map(|(name, value)| {
            let value = installed
                .iter()
                .find(|(path, _)| value == *path)
                .map_or(value, |(_, local)| local.display().to_string());
            (name, value)
        })
        .collect();
    let output = Command::new(workspace_binary(binary))
        .args(&arguments)
        .arg("--check-config")
        .env_clear()
        .envs(environment)
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{unit_file} with playhead.env.example: {binary} {arguments:?} exited {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A credentials directory as `playhead nats keygen` makes it.
fn nats_credentials(dir: &Path) -> PathBuf {
    let credentials = dir.join("nats");
    ensure_credentials(&credentials).unwrap();
    credentials
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
}

#[test]
fn the_node_unit_starts_with_the_example_environment() {
    let data = temp_dir();
    let config = deploy("playhead.toml");
    let seed = NatsRole::Node.seed_file(&nats_credentials(data.path()));
    let ca = tls_fixture("ca.pem");
    let keys = data.path().join("public-keys.env");
    let printed = check_config(
        "systemd/playhead-node.service",
        "playhead-node",
        &[
            ("/etc/playhead/playhead.toml", config.as_path()),
            ("/var/lib/playhead-node", data.path()),
            ("/etc/playhead/nats/node.nk", seed.as_path()),
            ("/etc/playhead/tls/nats-ca.pem", ca.as_path()),
            ("/etc/playhead/nats/public-keys.env", keys.as_path()),
        ],
    );
    for expected in [
        "url = \"tls://nats.internal:4222\"",
        "node.nk\"",
        "ca.pem\"",
        "public-keys.env\"",
        "replicas = 3",
        "listen = \"0.0.0.0:9464\"",
    ] {
        assert!(printed.contains(expected), "{expected} in:\n{printed}");
    }
}

/// A key ring file as `playhead token keygen` writes it.
fn key_ring(dir: &Path) -> PathBuf {
    let path = dir.join("auth-keys");
    playhead_gateway::auth::KeyRing::generate("k1")
        .create_file(&path)
        .unwrap();
    path
}

#[test]
fn the_gateway_unit_starts_with_the_example_environment() {
    let data = temp_dir();
    let keys = key_ring(data.path());
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    // The test key, copied to an owner-only file (git keeps no modes).
    let tls_key = data.path().join("gateway.key");
    playhead_gateway::auth::KeyRing::generate("unused")
        .create_file(&tls_key)
        .unwrap();
    std::fs::write(&tls_key, read(&tls.join("gateway.key"))).unwrap();
    let tls_cert = tls.join("gateway.pem");
    let seed = NatsRole::Gateway.seed_file(&nats_credentials(data.path()));
    let ca = tls_fixture("ca.pem");
    let printed = check_config(
        "systemd/playhead-gateway.service",
        "playhead-gateway",
        &[
            ("/etc/playhead/nats/gateway.nk", seed.as_path()),
            ("/etc/playhead/tls/nats-ca.pem", ca.as_path()),
            ("/etc/playhead/auth-keys", keys.as_path()),
            ("/etc/playhead/tls/gateway.crt", tls_cert.as_path()),
            ("/etc/playhead/tls/gateway.key", tls_key.as_path()),
        ],
    );
    for expected in [
        "tls://nats.internal:4222",
        "public_key: \"U",
        "inbox_prefix: \"_INBOX.gateway\"",
        "ca.pem",
        "0.0.0.0:50051",
        "heartbeat_timeout: 2s",
        "format: Json",
        "gateway.pem",
    ] {
        assert!(printed.contains(expected), "{expected} in:\n{printed}");
    }
}

/// `playhead-gateway [--config FILE] --auth-keys KEYS --check-config` with an empty environment.
fn gateway_check_config(file: Option<&Path>) -> std::process::Output {
    let data = temp_dir();
    let keys = key_ring(data.path());
    let mut command = Command::new(workspace_binary("playhead-gateway"));
    if let Some(file) = file {
        command.arg("--config").arg(file);
    }
    command
        .arg("--auth-keys")
        .arg(&keys)
        .arg("--check-config")
        .env_clear()
        .output()
        .expect("run the binary")
}

/// The sample `deploy/gateway.toml` is read (every key known) and spells the defaults: the
/// settings it gives are those of no file at all.
#[test]
fn the_gateway_sample_file_is_accepted_and_spells_the_defaults() {
    let settings = |file: Option<&Path>| {
        let output = gateway_check_config(file);
        assert!(
            output.status.success(),
            "playhead-gateway --config {file:?} --check-config exited {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let sample = deploy("gateway.toml");
    assert_eq!(settings(Some(&sample)), settings(None));
    // A key the gateway does not know is refused, not ignored.
    let data = temp_dir();
    let typo = data.path().join("gateway.toml");
    std::fs::write(&typo, "request_timeout_ms = 2000\n").unwrap();
    let output = gateway_check_config(Some(&typo));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("request_timeout_ms"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The production broker configuration (`deploy/nats/nats-server.conf` with the users file it
/// includes), run as one server: clients speak TLS and sign in with a role's nkey, or are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_broker_config_takes_only_tls_clients_signed_in_as_a_role() {
    let dir = temp_dir();
    let credentials = nats_credentials(dir.path());
    let public_keys: Vec<(String, String)> = ensure_credentials(&credentials)
        .unwrap()
        .into_iter()
        .map(|(role, key)| (role.public_key_variable(), key))
        .collect();
    let server_key = dir.path().join("server.key");
    playhead_client::service::secret_file::write_private_file(
        &server_key,
        &read(&tls_fixture("gateway.key")),
    )
    .unwrap();
    let (cert, ca) = (tls_fixture("gateway.pem"), tls_fixture("ca.pem"));
    let port = free_port();
    let unreachable_route = format!("nats-route://127.0.0.1:{}", free_port());
    let mut environment: Vec<(String, String)> = vec![
        ("NATS_SERVER_NAME".into(), "nats-1".into()),
        (
            "NATS_STORE_DIR".into(),
            dir.path().join("store").display().to_string(),
        ),
        ("NATS_TLS_CERT".into(), cert.display().to_string()),
        ("NATS_TLS_KEY".into(), server_key.display().to_string()),
        ("NATS_TLS_CA".into(), ca.display().to_string()),
    ];
    for route in 1..=3 {
        environment.push((format!("NATS_ROUTE_{route}"), unreachable_route.clone()));
    }
    environment.extend(public_keys);
    let environment: Vec<(&str, &str)> = environment
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let config = deploy("nats/nats-server.conf").display().to_string();
    let (port_arg, monitor) = (port.to_string(), free_port().to_string());
    let cluster = format!("nats://127.0.0.1:{}", free_port());
    let mut server = playhead_tests::harness::process::ChildProcess::spawn(
        playhead_tests::harness::nats_server_binary(),
        [
            "-c",
            config.as_str(),
            "-a",
            "127.0.0.1",
            "-p",
            &port_arg,
            "-m",
            &monitor,
            "--cluster_listen",
            &cluster,
        ],
        &environment,
    );
    let url = format!("tls://127.0.0.1:{port}");
    let attempt = |options: async_nats::ConnectOptions| {
        let url = url.clone();
        async move {
            options
                .connection_timeout(std::time::Duration::from_secs(2))
                .connect(url)
                .await
        }
    };
    let node = NatsAccess::load(
        NatsRole::Node,
        Some(&NatsRole::Node.seed_file(&credentials)),
        Some(&ca),
    )
    .unwrap();
    // The server takes a moment to listen: the node's connection is retried until it does.
    let client = playhead_tests::harness::wait::eventually(
        "the broker to take the node over TLS",
        std::time::Duration::from_secs(15),
        || {
            let attempt = attempt(node.options());
            async move { attempt.await.ok() }
        },
    )
    .await;
    client.flush().await.expect("a round trip as the node");

    let anonymous = attempt(
        NatsAccess::load(NatsRole::Node, None, Some(&ca))
            .unwrap()
            .options(),
    );
    let error = anonymous.await.expect_err("an anonymous client is refused");
    assert_eq!(
        error.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{error}"
    );
    let plaintext = NatsAccess::load(
        NatsRole::Node,
        Some(&NatsRole::Node.seed_file(&credentials)),
        None,
    )
    .unwrap()
    .options()
    .connection_timeout(std::time::Duration::from_secs(2))
    .connect(format!("nats://127.0.0.1:{port}"))
    .await;
    assert!(
        plaintext.is_err(),
        "a client that does not trust the servers' CA got in"
    );
    assert!(server.is_running(), "{}", server.log_tail(20));
    server.terminate();
}
