//! The workspace's own binaries (`playhead-node`, `playhead-gateway`, `playhead`) and other
//! programs (chromedriver) as child processes of a test.
//!
//! Integration tests run the binaries `cargo build --workspace --bins` left in `target/debug`
//! (`make test` builds them first), so a test exercises exactly what ships: flags, config
//! loading, signal handling. Each child logs to its own temporary file, is stopped with SIGTERM
//! (graceful) or SIGKILL (crash), and is killed on drop so no test leaves one behind. A program
//! that starts programs of its own (chromedriver starts chromium) runs in a process group of its
//! own ([`ChildProcess::spawn_process_group`]): signals go to the whole group.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;

use super::nats::read_log_tail;

/// Environment variable naming the directory of the workspace binaries, for layouts where they
/// are not next to the test executable (a custom target or build directory).
pub const BIN_DIR_ENV: &str = "PLAYHEAD_BIN_DIR";

/// How long [`ChildProcess::terminate`] waits for a graceful exit.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);
const LOG_TAIL_LINES: usize = 30;

/// The path of the workspace binary `name` built in the same profile as the running test:
/// `target/debug/<name>` for `cargo test` (or `$PLAYHEAD_BIN_DIR/<name>`).
///
/// Panics with the build command when the binary is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let bin_dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => binaries_dir_of_current_exe(),
    };
    let binary = bin_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        panic!(
            "{} is missing: run `cargo build --workspace --bins` (make test does) before the \
             tests, or set {BIN_DIR_ENV} to the directory holding {name}",
            binary.display()
        );
    }
    binary
}

/// `target/<profile>`: test executables live in `target/<profile>/deps`, binaries such as the
/// benchmark directly in `target/<profile>`.
fn binaries_dir_of_current_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("locate the running test executable");
    let exe_dir = exe
        .parent()
        .expect("the test executable lives in a directory");
    if exe_dir.file_name() == Some(OsStr::new("deps")) {
        exe_dir
            .parent()
            .expect("a deps directory has a parent")
            .to_path_buf()
    } else {
        exe_dir.to_path_buf()
    }
}

/// A child process owned by a test, with stdout and stderr captured in a temporary log file.
///
/// Dropping it kills the process (SIGKILL) and waits for it; if the test is panicking, the end
/// of the log is printed first, since the log file goes with it.
pub struct ChildProcess {
    name: String,
    child: Child,
    exit_status: Option<ExitStatus>,
    log: NamedTempFile,
    /// Leads a process group of its own: signals go to the group.
    process_group: bool,
}

impl ChildProcess {
    /// Spawns `binary` with `args` and extra environment variables `envs` (added to the test's
    /// own environment), stdin closed, output to the log file.
    ///
    /// ```text
    /// let node = ChildProcess::spawn(
    ///     workspace_binary("playhead-node"),
    ///     ["--nats-url", &nats.url()],
    ///     &[("RUST_LOG", "debug")],
    /// );
    /// ```
    pub fn spawn<A>(binary: impl AsRef<Path>, args: A, envs: &[(&str, &str)]) -> ChildProcess
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        Self::spawn_with(binary.as_ref(), args, envs, false)
    }

    /// [`ChildProcess::spawn`] in a new process group led by the child, for a program that starts
    /// programs of its own: [`ChildProcess::kill`], [`ChildProcess::terminate`] and drop signal
    /// the whole group (what the child started too), and kill and drop wait until no process of
    /// the group runs any more. A descendant that leaves the group (`setsid`) is not reached.
    pub fn spawn_process_group<A>(
        binary: impl AsRef<Path>,
        args: A,
        envs: &[(&str, &str)],
    ) -> ChildProcess
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        Self::spawn_with(binary.as_ref(), args, envs, true)
    }

    fn spawn_with<A>(
        binary: &Path,
        args: A,
        envs: &[(&str, &str)],
        process_group: bool,
    ) -> ChildProcess
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        let name = binary.file_name().map_or_else(
            || binary.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let log = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .suffix(".log")
            .tempfile()
            .expect("create a temporary log file");
        let stdout = log.reopen().expect("open the log file for stdout");
        let stderr = log.reopen().expect("open the log file for stderr");
        let mut command = Command::new(binary);
        command
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        if process_group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));
        ChildProcess {
            name,
            child,
            exit_status: None,
            log,
            process_group,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file receiving the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// The last `lines` lines of the process's output.
    pub fn log_tail(&self, lines: usize) -> String {
        read_log_tail(self.log.path(), lines)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .unwrap_or_else(|error| panic!("poll {} for exit: {error}", self.name));
        }
        self.exit_status
    }

    /// Sends SIGTERM and waits up to [`TERMINATE_TIMEOUT`] for the process to exit, returning
    /// its status. Panics (after killing it) with the log tail if it does not exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(TERMINATE_TIMEOUT)
    }

    /// [`ChildProcess::terminate`] with an explicit grace period.
    pub fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_exit_status() {
            return status;
        }
        // std offers only SIGKILL; `kill` from procps/util-linux sends the graceful signal.
        if !self.signal("TERM")
            && let Some(status) = self.try_exit_status()
        {
            // It exited between the check above and the signal.
            return status;
        }
        self.wait_for_exit_or_panic(timeout, " of SIGTERM")
    }

    /// Waits up to `timeout` for the process to exit on its own (a bad flag, a fatal error) and
    /// returns its status. Panics (after killing it) with the log tail otherwise.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_for_exit_or_panic(timeout, "")
    }

    fn wait_for_exit_or_panic(&mut self, timeout: Duration, after: &str) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} (pid {}) did not exit within {timeout:?}{after}; last lines of its log:\n{}",
                    self.name,
                    self.pid(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(EXIT_POLL_INTERVAL);
        }
    }

    /// Kills the process with SIGKILL, like a crash, and returns its exit status (the earlier
    /// one if it had already exited).
    ///
    /// In a process group of its own, the whole group is killed, even if the child itself had
    /// already exited.
    pub fn kill(&mut self) -> ExitStatus {
        if self.process_group {
            self.kill_group();
        }
        if let Some(status) = self.try_exit_status() {
            return status;
        }
        // An error means it exited meanwhile; wait() reaps it either way.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|error| panic!("wait for {} after SIGKILL: {error}", self.name));
        self.exit_status = Some(status);
        status
    }

    /// Sends `SIG<signal>` with `kill` to the process, or to its whole group; whether it was
    /// delivered (not if nothing was left to signal).
    fn signal(&self, signal: &str) -> bool {
        let target = if self.process_group {
            format!("-{}", self.pid())
        } else {
            self.pid().to_string()
        };
        Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|error| panic!("run `kill -{signal}` for {}: {error}", self.name))
            .success()
    }

    /// SIGKILL to the process group, then waits (up to [`TERMINATE_TIMEOUT`]) until none of its
    /// processes runs any more: their files (a browser's profile directory) are no longer
    /// written once this returns.
    fn kill_group(&self) {
        if !self.signal("KILL") {
            return;
        }
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        while group_has_running_processes(self.pid()) && Instant::now() < deadline {
            thread::sleep(EXIT_POLL_INTERVAL);
        }
    }
}

/// Whether a process of group `pgid` is still running (a zombie does not count), from `/proc`.
fn group_has_running_processes(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let pgid = pgid.to_string();
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp …`, where comm may hold spaces and parentheses.
        let Some((_, fields)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = fields.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1);
        state.is_some_and(|state| state != "Z" && state != "X") && pgrp == Some(pgid.as_str())
    })
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- last lines of the {} log ({}):\n{}",
                self.name,
                self.log.path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        if self.process_group {
            self.kill_group();
        }
        if self.exit_status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
