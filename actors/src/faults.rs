//! Fault injection for the crash and quarantine tests; off unless asked for.
//!
//! `playhead-node` reads `PLAYHEAD_FAULTS` (comma-separated, logged loudly at start):
//!
//! - `panic_on=MARK`: the decider panics on a command whose debug form contains `MARK`;
//! - `actor_panic_on=MARK`: the entity actor panics (outside the decider's guard) on a slice
//!   holding such a command, so the actor fails while it holds the slice;
//! - `poison_on=MARK`: applying such a command fails with a permanent error every time;
//! - `fail_on=MARK:N`: applying such a command fails with a transient error (retried as a
//!   broker hiccup would be) the first N times;
//! - `append_delay_ms=N`: every journal append waits N ms first (a broker further away than
//!   loopback: the benchmark's stand-in for a network round trip);
//! - `prepare_delay_ms=N`: the node waits N ms after taking its groups' leases, before it
//!   prepares its store (a store restore or rebuild that outlasts a lease);
//! - `slow_query=ENDPOINT:N`: answering the query endpoint `ENDPOINT` (e.g. `list_sessions`)
//!   takes N ms more (a slow read must not hold the other queries);
//! - `crash_after_appends=N`: the process aborts right after its `N`th journal append, before
//!   the local commit (the window exactly-once must survive);
//! - `crash_after_answers=N`: the process aborts right after its `N`th batch of answers reached
//!   the broker, before their messages are flushed and acknowledged (the window in which a
//!   publisher holds an answer the node must not contradict).
//! - `crash_after_persists=N`: right after the main-db writes of the `N`th entity commit are
//!   made (before the group commit flushed the main db), the process flushes the main db alone
//!   — as sled's own flusher may at any moment — and aborts: the bucket dbs keep only what was
//!   flushed before (the window `Storage::commit_main`'s ordering closes).
//! - `slow_import_ms=N`: an import waits N ms after each read from its object (so a test can
//!   cut it half-way, between two commits of its progress).
//!
//! Nothing here runs unless one of these is set: production paths only test an `Option`.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable `playhead-node` reads.
pub const FAULTS_ENV: &str = "PLAYHEAD_FAULTS";

#[derive(Debug, Default)]
pub struct Faults {
    panic_on: Option<String>,
    actor_panic_on: Option<String>,
    poison_on: Option<String>,
    fail_on: Option<(String, u64)>,
    failures: AtomicU64,
    prepare_delay_ms: Option<u64>,
    append_delay_ms: Option<u64>,
    slow_query: Option<(String, u64)>,
    crash_after_appends: Option<u64>,
    appends: AtomicU64,
    crash_after_answers: Option<u64>,
    answers: AtomicU64,
    crash_after_persists: Option<u64>,
    persists: AtomicU64,
    slow_import_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{FAULTS_ENV}: {0}")]
pub struct FaultsError(String);

impl Faults {
    /// Parses `panic_on=MARK,poison_on=MARK,crash_after_appends=N` (any subset, any order).
    pub fn parse(text: &str) -> Result<Self, FaultsError> {
        let count = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| FaultsError(format!("{key}={value:?} is not a count")))
        };
        // `NAME:N`, e.g. `list_sessions:200`.
        let named_count = |key: &str, value: &str, form: &str| {
            value
                .split_once(':')
                .and_then(|(name, count)| Some((name.to_owned(), count.parse::<u64>().ok()?)))
                .ok_or_else(|| FaultsError(format!("{key}={value:?} is not {form}")))
        };
        let mut faults = Faults::default();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| FaultsError(format!("{item:?} is not key=value")))?;
            match key {
                "panic_on" => faults.panic_on = Some(value.to_owned()),
                "actor_panic_on" => faults.actor_panic_on = Some(value.to_owned()),
                "poison_on" => faults.poison_on = Some(value.to_owned()),
                "prepare_delay_ms" => faults.prepare_delay_ms = Some(count(key, value)?),
                "append_delay_ms" => faults.append_delay_ms = Some(count(key, value)?),
                "fail_on" => faults.fail_on = Some(named_count(key, value, "MARK:TIMES")?),
                "slow_query" => {
                    faults.slow_query = Some(named_count(key, value, "ENDPOINT:MILLIS")?);
                }
                "crash_after_appends" => faults.crash_after_appends = Some(count(key, value)?),
                "crash_after_answers" => faults.crash_after_answers = Some(count(key, value)?),
                "crash_after_persists" => faults.crash_after_persists = Some(count(key, value)?),
                "slow_import_ms" => faults.slow_import_ms = Some(count(key, value)?),
                other => {
                    return Err(FaultsError(format!(
                        "unknown fault {other:?}; known: panic_on, actor_panic_on, poison_on, \
                         fail_on, prepare_delay_ms, append_delay_ms, slow_query, \
                         crash_after_appends, crash_after_answers, crash_after_persists, \
                         slow_import_ms"
                    )));
                }
            }
        }
        Ok(faults)
    }

    /// The faults `PLAYHEAD_FAULTS` asks for (none when unset).
    pub fn from_env() -> Result<Self, FaultsError> {
        match std::env::var(FAULTS_ENV) {
            Ok(text) => Self::parse(&text),
            Err(_) => Ok(Self::default()),
        }
    }

    pub fn any(&self) -> bool {
        self.panic_on.is_some()
            || self.actor_panic_on.is_some()
            || self.poison_on.is_some()
            || self.fail_on.is_some()
            || self.prepare_delay_ms.is_some()
            || self.append_delay_ms.is_some()
            || self.slow_query.is_some()
            || self.crash_after_appends.is_some()
            || self.crash_after_answers.is_some()
            || self.crash_after_persists.is_some()
            || self.slow_import_ms.is_some()
    }

    /// How long an import waits after each read from its object, if at all.
    pub fn import_read_delay(&self) -> Option<std::time::Duration> {
        self.slow_import_ms.map(std::time::Duration::from_millis)
    }

    /// Whether the process is to abort after some batch of answers.
    pub fn crashes_after_answers(&self) -> bool {
        self.crash_after_answers.is_some()
    }

    /// Whether a crash after some entity commit is configured (see [`Self::persisted`]).
    pub fn crashes_after_persists(&self) -> bool {
        self.crash_after_persists.is_some()
    }

    /// Panics when `command` carries the panic mark (called inside the decider's guard).
    pub fn panic_if_marked(&self, command: &impl Debug) {
        if let Some(mark) = &self.panic_on
            && format!("{command:?}").contains(mark.as_str())
        {
            panic!("injected decider panic on {mark}");
        }
    }

    /// Panics when one of `commands` carries the actor panic mark (called by the entity actor
    /// outside the decider's guard).
    pub fn panic_actor_if_marked<C: Debug>(&self, commands: impl IntoIterator<Item = C>) {
        if let Some(mark) = &self.actor_panic_on
            && commands
                .into_iter()
                .any(|command| format!("{command:?}").contains(mark.as_str()))
        {
            panic!("injected entity actor panic on {mark}");
        }
    }

    /// The query endpoint to slow down and by how much, if any.
    pub fn slow_query(&self) -> Option<(String, std::time::Duration)> {
        self.slow_query
            .as_ref()
            .map(|(endpoint, millis)| (endpoint.clone(), std::time::Duration::from_millis(*millis)))
    }

    /// Waits the configured time before the store is prepared.
    pub async fn delay_prepare(&self) {
        if let Some(millis) = self.prepare_delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        }
    }

    /// Whether applying `command` must fail permanently.
    pub fn poisons(&self, command: &impl Debug) -> bool {
        self.poison_on
            .as_ref()
            .is_some_and(|mark| format!("{command:?}").contains(mark.as_str()))
    }

    /// Whether applying `command` must fail for a transient reason (its first N times).
    pub fn fails(&self, command: &impl Debug) -> bool {
        self.fail_on.as_ref().is_some_and(|(mark, times)| {
            format!("{command:?}").contains(mark.as_str())
                && self.failures.fetch_add(1, Ordering::SeqCst) < *times
        })
    }

    /// Waits the configured time before a journal append.
    pub async fn delay_append(&self) {
        if let Some(millis) = self.append_delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        }
    }

    /// Counts a journal append; aborts the process at the configured one.
    pub fn appended(&self) {
        if let Some(limit) = self.crash_after_appends {
            let count = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
            if count >= limit {
                eprintln!("playhead-node: injected crash after journal append {count}");
                std::process::abort();
            }
        }
    }

    /// Counts an entity commit whose main-db writes were just made; at the configured one,
    /// flushes the main db alone with `flush_main` and aborts the process.
    pub fn persisted(&self, flush_main: impl FnOnce()) {
        if let Some(limit) = self.crash_after_persists {
            let count = self.persists.fetch_add(1, Ordering::SeqCst) + 1;
            if count >= limit {
                flush_main();
                eprintln!("playhead-node: injected crash after entity commit {count}");
                std::process::abort();
            }
        }
    }

    /// Counts a batch of answers that reached the broker; aborts the process at the
    /// configured one.
    pub fn answered(&self) {
        if let Some(limit) = self.crash_after_answers {
            let count = self.answers.fetch_add(1, Ordering::SeqCst) + 1;
            if count >= limit {
                eprintln!("playhead-node: injected crash after answer batch {count}");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_unknown_ones_are_named() {
        let faults = Faults::parse(
            "panic_on=BOOM, actor_panic_on=BANG, crash_after_appends=3, crash_after_answers=2, \
             crash_after_persists=4",
        )
        .unwrap();
        assert_eq!(faults.panic_on.as_deref(), Some("BOOM"));
        assert_eq!(faults.actor_panic_on.as_deref(), Some("BANG"));
        assert_eq!(faults.crash_after_appends, Some(3));
        assert_eq!(faults.crash_after_answers, Some(2));
        assert_eq!(faults.crash_after_persists, Some(4));
        assert!(faults.any());
        assert!(!Faults::parse("").unwrap().any());
        assert!(Faults::parse("explode=1").is_err());
        assert!(Faults::parse("crash_after_appends=x").is_err());
        assert!(Faults::parse("crash_after_answers=x").is_err());
        assert!(Faults::parse("crash_after_persists=-1").is_err());
        assert!(!faults.poisons(&"POISON"));
        assert!(Faults::parse("fail_on=AGAIN").is_err());
        let delayed = Faults::parse("append_delay_ms=2").unwrap();
        assert_eq!(delayed.append_delay_ms, Some(2));
        assert!(delayed.any());
    }

    #[test]
    fn a_command_marked_to_fail_fails_its_first_n_times() {
        let faults = Faults::parse("fail_on=AGAIN:2").unwrap();
        assert!(faults.any());
        assert!(!faults.fails(&"title Other"));
        let attempts: Vec<bool> = (0..4).map(|_| faults.fails(&"title AGAIN")).collect();
        assert_eq!(attempts, [true, true, false, false]);
    }

    #[test]
    #[should_panic(expected = "injected decider panic")]
    fn a_marked_command_panics() {
        Faults::parse("panic_on=BOOM")
            .unwrap()
            .panic_if_marked(&"title BOOM");
    }
}
