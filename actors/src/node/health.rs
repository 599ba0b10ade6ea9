//! The node's `/readyz`: ready only while it serves its groups and every check passes —
//! the broker connection is up, the local store takes a write and makes it durable, and every
//! intake runs and progresses (see [`IntakeProgress`]). Before that it says what it is doing:
//! acquiring its groups (standing by while another node holds them) or preparing its store.
//! `/livez` only says that the process answers.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::ingest::IntakeProgress;
use crate::metrics::{Readiness, ReadinessCheck};
use crate::storage::Storage;

/// Longest wait for the store's write probe to become durable.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the leases of its groups (standing by while another node holds them).
    AcquiringGroups,
    /// Opening, restoring or rebuilding the local store.
    PreparingStore,
    Serving,
    Stopping,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::AcquiringGroups => {
                "acquiring its groups (standing by while another node holds them)"
            }
            Stage::PreparingStore => "preparing its store (restore or rebuild)",
            Stage::Serving => "serving",
            Stage::Stopping => "stopping",
        }
    }
}

struct Serving {
    storage: Storage,
    intakes: Vec<(String, Arc<IntakeProgress>)>,
}

pub struct NodeHealth {
    stage: Mutex<Stage>,
    client: async_nats::Client,
    serving: OnceLock<Serving>,
}

impl NodeHealth {
    pub fn new(client: async_nats::Client) -> Arc<Self> {
        Arc::new(Self {
            stage: Mutex::new(Stage::AcquiringGroups),
            client,
            serving: OnceLock::new(),
        })
    }

    pub fn enter(&self, stage: Stage) {
        *self.stage.lock().expect("stage lock") = stage;
    }

    /// Serving from now on, with this store and these intakes (named by group).
    pub fn serving(&self, storage: Storage, intakes: Vec<(String, Arc<IntakeProgress>)>) {
        let _ = self.serving.set(Serving { storage, intakes });
        self.enter(Stage::Serving);
    }

    async fn check(&self) -> Readiness {
        let stage = *self.stage.lock().expect("stage lock");
        let mut readiness = Readiness::default().check(
            "stage",
            match stage {
                Stage::Serving => Ok(String::new()),
                other => Err(other.describe().into()),
            },
        );
        readiness = readiness.check(
            "broker",
            match self.client.connection_state() {
                async_nats::connection::State::Connected => Ok(String::new()),
                state => Err(format!("connection {state:?}")),
            },
        );
        let (Stage::Serving, Some(serving)) = (stage, self.serving.get()) else {
            return readiness;
        };
        readiness = readiness.check("store", probe_store(&serving.storage).await);
        let now_ms =
            (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        for (group, progress) in &serving.intakes {
            readiness = readiness.check(
                "intake",
                progress
                    .check(now_ms)
                    .map(|detail| format!("{group}: {detail}"))
                    .map_err(|detail| format!("{group}: {detail}")),
            );
        }
        readiness
    }

    pub fn readiness(self: &Arc<Self>) -> ReadinessCheck {
        let health = self.clone();
        Arc::new(move || {
            let health = health.clone();
            Box::pin(async move { health.check().await })
        })
    }
}

/// A write the store must take and make durable in time.
async fn probe_store(storage: &Storage) -> Result<String, String> {
    storage
        .note_probe()
        .map_err(|error| format!("write failed: {error}"))?;
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, storage.make_durable()).await {
        Ok(Ok(())) => Ok(String::new()),
        Ok(Err(error)) => Err(format!("flush failed: {error}")),
        Err(_) => Err(format!(
            "flush took longer than {} s",
            STORE_PROBE_TIMEOUT.as_secs()
        )),
    }
}
