//! Bounded waiting for tests: nothing waits forever and nothing sleeps in the hope that a
//! condition holds by then.
//!
//! [`eventually`] polls a probe until it yields or a deadline passes; [`within`] bounds a single
//! future (a receive, a request, a shutdown). Both panic with what was awaited and where from.
//!
//! They measure time with tokio's clock: under `tokio::time::pause()` the deadline advances with
//! the paused clock, so use them there only for work that does not depend on real processes.

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use tokio::time::Instant;

/// A generous bound for one step of a test against local processes (a request, a receive, a
/// reconnect); slow CI machines stay well inside it, a hang fails instead of blocking the run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two probes of [`eventually`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` about every [`POLL_INTERVAL`] until it returns `Some`, and returns that value.
///
/// Panics, naming `what` and the caller's location, when `timeout` passes first; a probe that
/// itself hangs is cut off at the same deadline.
///
/// ```text
/// let info = eventually("the stream to hold 3 messages", DEFAULT_TIMEOUT, || async {
///     let info = stream.info().await.ok()?;
///     (info.state.messages == 3).then_some(info)
/// })
/// .await;
/// ```
#[track_caller]
pub fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, probe()).await {
                Ok(Some(value)) => return value,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
                Ok(None) | Err(_) => {
                    panic!("{caller}: timed out after {timeout:?} waiting for {what}")
                }
            }
        }
    }
}

/// Awaits `future`, panicking with `what` and the caller's location if it takes longer than
/// `timeout`.
///
/// ```text
/// let message = within("the SongStarted event", DEFAULT_TIMEOUT, subscriber.next()).await;
/// ```
#[track_caller]
pub fn within<T>(
    what: &str,
    timeout: Duration,
    future: impl IntoFuture<Output = T>,
) -> impl Future<Output = T> {
    let caller = Location::caller();
    async move {
        match tokio::time::timeout(timeout, future).await {
            Ok(value) => value,
            Err(_) => panic!("{caller}: timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// Runs `scenario` on a runtime of its own (two workers, like the tests' `multi_thread`
/// flavour) on a thread with a 16 MiB stack, and passes its panic on. For a test whose async
/// state machine is too large for the test thread's 2 MiB in a debug build: boxing does not
/// help there, since the future is built on the stack before it is moved.
pub fn on_big_stack<F, Fut>(scenario: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::Builder::new()
        .name("big-stack-test".into())
        .stack_size(16 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a test runtime")
                .block_on(scenario());
        })
        .expect("a test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
