//! The files in `deploy/systemd/` start the binaries: each unit's `ExecStart=`, expanded with
//! its `Environment=` and the example environment file read the way systemd reads it (an
//! inline `# note` is part of the value), is accepted by `--check-config`, and the file's
//! values reach the configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

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

#[test]
fn the_node_unit_starts_with_the_example_environment() {
    let data = temp_dir();
    let config = deploy("playhead.toml");
    let printed = check_config(
        "systemd/playhead-node.service",
        "playhead-node",
        &[
            ("/etc/playhead/playhead.toml", config.as_path()),
            ("/var/lib/playhead-node", data.path()),
        ],
    );
    for expected in [
        "url = \"nats://nats.internal:4222\"",
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
    let printed = check_config(
        "systemd/playhead-gateway.service",
        "playhead-gateway",
        &[
            ("/etc/playhead/auth-keys", keys.as_path()),
            ("/etc/playhead/tls/gateway.crt", tls_cert.as_path()),
            ("/etc/playhead/tls/gateway.key", tls_key.as_path()),
        ],
    );
    for expected in [
        "nats://nats.internal:4222",
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
