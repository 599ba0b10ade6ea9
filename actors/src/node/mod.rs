//! The node: starts (or joins) the broker, sets up the JetStream topology, opens (or rebuilds)
//! the local store, runs an intake per inbox ownership group it owns, serves queries and metrics,
//! and shuts all of it down in one fixed order.
//!
//! - [`ownership`]: the leases by which a node owns the inbox groups (a second node stands by).
//! - [`health`]: `/livez` and `/readyz`, served from the start (a standby answers them too).
//!
//! - [`store`]: opening the local store, and rebuilding it when it cannot be trusted.
//! - [`snapshots`]: snapshots of every kind's state, taken on a schedule and restored.

mod compaction;
pub mod health;
pub mod ownership;
pub mod snapshots;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use playhead_client::service::nats_auth::RequesterKeys;
use playhead_proto::subjects::Inbox;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::health::{NodeHealth, Stage};
use self::ownership::Ownership;
use self::store::StoreState;
use crate::broker::{self, EmbeddedBroker};
use crate::config::NodeConfig;
use crate::faults::Faults;
use crate::ingest::dead_letter::DeadLetters;
use crate::ingest::group::GroupId;
use crate::ingest::imports::{self, ImportIntake};
use crate::ingest::screen::DeadLetterReason;
use crate::ingest::{GroupIntake, IngestError, IntakeConfig, IntakeProgress, Screen, screen};
use crate::journal::append::Journal;
use crate::journal::snapshot;
use crate::metrics::{self, LabelSets, NodeMetrics, ProcessCollector};
use crate::query::{self, QueryContext};
use crate::runtime::enrichment::provider::HttpProvider;
use crate::runtime::enrichment::{self, Wanted};
use crate::runtime::imports::{ImportContext, Importers};
use crate::runtime::kinds::catalog::ContentKind;
use crate::runtime::kinds::station::StationKind;
use crate::runtime::kinds::user::UserKind;
use crate::runtime::shard::ShardArguments;
use crate::runtime::{EntityKind, Runtime};
use crate::storage::{self, Storage};

/// Where a started node can be reached.
#[derive(Debug, Clone)]
pub struct NodeEndpoints {
    pub nats_url: String,
    pub metrics: SocketAddr,
}

/// How to start, beyond the configuration.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Move the local store aside and rebuild it from the latest snapshot and the journal.
    pub rebuild: bool,
    /// Injected faults (tests only).
    pub faults: Faults,
}

/// Runs the node until `shutdown` is cancelled, then stops in order. `ready` receives the
/// endpoints once everything is serving.
pub async fn run(
    config: NodeConfig,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<NodeEndpoints>>,
) -> anyhow::Result<()> {
    run_with(config, RunOptions::default(), shutdown, ready).await
}

/// [`run`] with [`RunOptions`]. Returns an error after the orderly shutdown when a task the
/// node cannot go on without ended (so a supervisor restarts it).
pub async fn run_with(
    config: NodeConfig,
    options: RunOptions,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<NodeEndpoints>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let data_dir_lock = ownership::lock_data_dir(&config.data_dir)?;
    let embedded = if config.embedded_broker() {
        Some(EmbeddedBroker::start(&config).await?)
    } else {
        None
    };
    let nats_url = embedded
        .as_ref()
        .map_or_else(|| config.nats.url.clone(), |broker| broker.url.clone());
    let client = broker::connect(&nats_url, &config, embedded.as_ref()).await?;
    let requesters = broker::requester_keys(&config, embedded.as_ref())?.map(Arc::new);
    let jetstream = jetstream::new(client.clone());
    let node_metrics = NodeMetrics::new();
    let inboxes: Vec<&'static str> = Inbox::ALL
        .iter()
        .chain([&Inbox::Import])
        .map(|inbox| inbox.label())
        .collect();
    node_metrics.start_at_zero(&LabelSets {
        inboxes: &inboxes,
        kinds: &snapshots::KINDS.map(|kind| kind.name),
        dead_letter_reasons: &DeadLetterReason::ALL.map(DeadLetterReason::label),
        keyspaces: &storage::KEYSPACES,
    });
    let process_metrics = ProcessCollector::registry();
    let health = NodeHealth::new(client.clone());
    // Metrics and probes answer from here on, a standby's too; stopped with the background
    // tasks (or dropped with them on an early return).
    let background_stop = CancellationToken::new();
    let mut background = JoinSet::new();
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.listen))?;
    let metrics_address = metrics_listener.local_addr()?;
    tracing::info!(
        metrics = %format!("http://{metrics_address}/metrics"),
        "operations endpoint up: /metrics, /livez, /readyz"
    );
    {
        let node_metrics = node_metrics.clone();
        let readiness = health.readiness();
        let stop = background_stop.clone();
        background.spawn(async move {
            metrics::serve(
                metrics_listener,
                Arc::new(move || metrics::render(&[&node_metrics.registry, &process_metrics])),
                readiness,
                stop.cancelled_owned(),
            )
            .await
            .context("metrics endpoint")
        });
    }
    let topology = broker::ensure_streams(&jetstream, &config).await?;
    let groups = Inbox::ALL
        .iter()
        .flat_map(|inbox| GroupId::all(*inbox, config.ingest.groups))
        .collect();
    // Nothing below touches a consumer or the store before this node owns the groups.
    let Some(ownership) = Ownership::acquire(
        &jetstream,
        &config,
        &data_dir_lock.node_id,
        groups,
        &shutdown,
    )
    .await?
    else {
        tracing::info!("shutdown requested while standing by");
        if let Some(embedded) = embedded {
            embedded.stop().await;
        }
        return Ok(());
    };
    let owned = ownership.groups();
    let another_node_owned_since = ownership.another_node_owned_since();
    // Renewed from now on: preparing the store (a restore or a rebuild) may outlast a lease.
    // Released on the way out, after intake has stopped (background tasks stop after it).
    background.spawn(ownership.keep(background_stop.clone()));
    // The owner's configuration is the one in effect: the gateways follow it from here.
    broker::publish_settings(&topology.settings, &config).await?;
    let consumers = broker::ensure_consumers(&jetstream, &config, &owned).await?;
    tracing::info!(
        partitions = config.ingest.partitions,
        groups_per_inbox = config.ingest.groups,
        consumers = consumers.len(),
        "jetstream topology ready"
    );
    health.enter(Stage::PreparingStore);
    let journal = Journal::open(jetstream.clone()).await?;

    let snapshot_bucket = snapshot::ensure_bucket(&jetstream, config.nats.replicas).await?;
    options.faults.delay_prepare().await;
    if options.rebuild {
        store::move_aside(&store::state_dir(&config), "before-rebuild")?;
    }
    let (storage, contexts, store_state) = store::prepare_store(
        &config,
        &jetstream,
        &snapshot_bucket,
        &topology.journal_identity,
        &topology.now_playing,
        another_node_owned_since,
    )
    .await?;
    storage.mark_running(&topology.journal_identity)?;
    if options.faults.any() {
        tracing::warn!(faults = ?options.faults, "FAULT INJECTION IS ON: this node is for tests only");
    }
    let slow_query = options.faults.slow_query();
    let runtime = Arc::new(Runtime {
        journal,
        metrics: node_metrics.clone(),
        commit_gate: tokio::sync::RwLock::new(()),
        recovering: store_state == StoreState::Resumed { clean: false },
        faults: Arc::new(options.faults),
        appended: std::sync::atomic::AtomicU64::new(0),
        storage: storage.clone(),
        requesters: requesters.clone(),
    });
    if runtime.recovering {
        tracing::warn!(
            "the last run did not stop cleanly: entities check their journal position as they load"
        );
    }

    let queries = query::start(
        client.clone(),
        QueryContext {
            storage: storage.clone(),
            player_policy: config.player_policy(),
            playout_policy: config.playout_policy(),
            max_artists_per_query: config.imports.max_artists_per_query,
            slow_query,
        },
    )
    .await?;
    background.spawn(queries.run(background_stop.clone()));
    background.spawn(snapshots::snapshot_periodically(
        storage.clone(),
        runtime.clone(),
        jetstream.clone(),
        snapshot_bucket,
        Arc::new(config.clone()),
        background_stop.clone(),
    ));
    background.spawn(compaction::compact_periodically(
        storage.clone(),
        node_metrics.clone(),
        Duration::from_secs(config.storage.compaction_interval_secs),
        config.storage.expiry_removes_per_sec,
        background_stop.clone(),
    ));

    if config.enrichment.enabled() {
        start_enrichment(
            &config,
            &storage,
            &contexts,
            &jetstream,
            &node_metrics,
            &mut background,
            &background_stop,
        )?;
    }

    let groups = Groups {
        requesters,
        config: &config,
        storage: &storage,
        metrics: &node_metrics,
        runtime: &runtime,
        client: &client,
        dead_letters: DeadLetters {
            client: client.clone(),
            jetstream: jetstream.clone(),
            metrics: node_metrics.clone(),
        },
        stop: CancellationToken::new(),
        progress: std::sync::Mutex::new(Vec::new()),
    };
    // Nothing may have ended while the store was prepared (a lease lost because renewals
    // failed for a whole lease time): no intake starts without its group's lease.
    if let Some(ended) = background.try_join_next() {
        let cause = match ended {
            Ok(Ok(())) => "a background task ended".to_owned(),
            Ok(Err(error)) => format!("{error:#}"),
            Err(error) => format!("a background task failed: {error}"),
        };
        anyhow::bail!("{cause}; the node stopped before serving");
    }
    let mut intakes = JoinSet::new();
    for (group, consumer) in consumers {
        match group.inbox {
            Inbox::Station => groups.start::<StationKind>(
                &mut intakes,
                (group, consumer),
                &contexts.station,
                screen::screen_station,
            ),
            Inbox::User => groups.start::<UserKind>(
                &mut intakes,
                (group, consumer),
                &contexts.user,
                screen::screen_user,
            ),
            Inbox::Catalog => groups.start::<ContentKind>(
                &mut intakes,
                (group, consumer),
                &contexts.content,
                screen::screen_catalog,
            ),
            // Not grouped: started below.
            Inbox::Import => {}
        }
    }
    {
        let context = Arc::new(ImportContext {
            storage: storage.clone(),
            objects: topology.import_objects.clone(),
            journal: runtime.journal.clone(),
            metrics: node_metrics.clone(),
            config: config.imports.clone(),
            stop: groups.stop.clone(),
            read_delay: runtime.faults.import_read_delay(),
        });
        let intake = ImportIntake {
            consumer: imports::consumer(&jetstream).await?,
            client: client.clone(),
            objects: topology.import_objects.clone(),
            storage: storage.clone(),
            importers: Importers::new(context),
            dead_letters: groups.dead_letters.clone(),
            requesters: groups.requesters.clone(),
            metrics: node_metrics.clone(),
            max_message_bytes: config.ingest.max_message_bytes,
            rebuilt: store_state == StoreState::Rebuilt,
            jetstream: jetstream.clone(),
        };
        let stop = groups.stop.clone();
        intakes.spawn(async move {
            intake
                .run(stop)
                .await
                .map_err(|error| IngestError::Consumer {
                    consumer: playhead_proto::subjects::IMPORT_CONSUMER.to_owned(),
                    detail: format!("{error:#}"),
                })
        });
    }
    let intake_stop = groups.stop;
    health.serving(
        storage.clone(),
        groups.progress.into_inner().expect("progress lock"),
    );

    let endpoints = NodeEndpoints {
        nats_url: nats_url.clone(),
        metrics: metrics_address,
    };
    tracing::info!(
        nats = %endpoints.nats_url,
        metrics = %format!("http://{metrics_address}/metrics"),
        data_dir = %config.data_dir.display(),
        store = ?store_state,
        "playhead-node serving"
    );
    if let Some(ready) = ready {
        let _ = ready.send(endpoints);
    }

    let fatal = tokio::select! {
        _ = shutdown.cancelled() => {
            tracing::info!("shutdown requested");
            None
        }
        Some(ended) = intakes.join_next() => {
            let cause = match ended {
                Ok(Ok(())) => "a partition intake ended".to_owned(),
                Ok(Err(error)) => format!("a partition intake ended: {error}"),
                Err(error) => format!("a partition intake failed: {error}"),
            };
            tracing::error!(%cause, "shutting down");
            Some(cause)
        }
        Some(ended) = background.join_next() => {
            let cause = match ended {
                Ok(Ok(())) => "a background task ended".to_owned(),
                Ok(Err(error)) => format!("a background task ended: {error:#}"),
                Err(error) => format!("a background task failed: {error}"),
            };
            tracing::error!(%cause, "shutting down");
            Some(cause)
        }
    };
    health.enter(Stage::Stopping);
    shut_down(ShutdownParts {
        intake_stop,
        intakes,
        background_stop,
        background,
        storage,
        jetstream,
        client,
        embedded,
    })
    .await?;
    drop(data_dir_lock);
    match fatal {
        Some(cause) => Err(anyhow::anyhow!("{cause}; the node stopped")),
        None => Ok(()),
    }
}

/// What starting a group's intake needs, whatever its entity kind.
struct Groups<'a> {
    /// Whose signatures reply subjects need (`None`: not checked).
    requesters: Option<Arc<RequesterKeys>>,
    config: &'a NodeConfig,
    storage: &'a Storage,
    metrics: &'a Arc<NodeMetrics>,
    runtime: &'a Arc<Runtime>,
    client: &'a async_nats::Client,
    dead_letters: DeadLetters,
    /// Stops every intake.
    stop: CancellationToken,
    /// Each started intake's progress, named by group (for `/readyz`).
    progress: std::sync::Mutex<Vec<(String, Arc<IntakeProgress>)>>,
}

impl Groups<'_> {
    /// Spawns the group's intake task (owned by `intakes`), which runs its shard.
    fn start<K: EntityKind>(
        &self,
        intakes: &mut JoinSet<Result<(), IngestError>>,
        (group, consumer): (GroupId, PullConsumer),
        context: &Arc<K::Context>,
        screen: Screen<K>,
    ) {
        let config = self.config;
        let (context, runtime, metrics) =
            (context.clone(), self.runtime.clone(), self.metrics.clone());
        let passivate_after = config.passivate_after();
        let passivation_check = Duration::from_secs(config.actors.passivation_check_secs);
        let max_live_entities = config.actors.max_live_entities_per_shard;
        let intake = GroupIntake::<K> {
            group,
            consumer,
            shard_arguments: Box::new(move || ShardArguments {
                context: context.clone(),
                runtime: runtime.clone(),
                metrics: metrics.clone(),
                passivate_after,
                passivation_check,
                max_live_entities,
            }),
            screen,
            requesters: self.requesters.clone(),
            storage: self.storage.clone(),
            dead_letters: self.dead_letters.clone(),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            config: IntakeConfig {
                batch_size: config.ingest.batch_size,
                batches_in_flight: config.ingest.batches_in_flight,
                max_message_bytes: config.ingest.max_message_bytes,
                max_attempts: config.max_attempts(),
            },
            runtime: self.runtime.clone(),
            progress: Arc::new(IntakeProgress::default()),
        };
        self.progress
            .lock()
            .expect("progress lock")
            .push((group.to_string(), intake.progress.clone()));
        intakes.spawn(intake.run(self.stop.clone()));
    }
}

struct ShutdownParts {
    intake_stop: CancellationToken,
    intakes: JoinSet<Result<(), IngestError>>,
    background_stop: CancellationToken,
    background: JoinSet<anyhow::Result<()>>,
    storage: Storage,
    jetstream: jetstream::Context,
    client: async_nats::Client,
    embedded: Option<EmbeddedBroker>,
}

/// The one shutdown path: stop intake (each finishes its batch in hand and drains its shard),
/// stop queries and metrics, flush sled, note the clean stop, drain NATS, stop the embedded
/// broker.
async fn shut_down(parts: ShutdownParts) -> anyhow::Result<()> {
    let ShutdownParts {
        intake_stop,
        mut intakes,
        background_stop,
        mut background,
        storage,
        jetstream,
        client,
        embedded,
    } = parts;
    intake_stop.cancel();
    while let Some(result) = intakes.join_next().await {
        match result {
            Ok(Err(error)) => tracing::warn!(%error, "intake ended with an error"),
            Err(error) => tracing::warn!(%error, "intake task failed"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("intake stopped, actors drained");
    background_stop.cancel();
    while let Some(result) = background.join_next().await {
        if let Ok(Err(error)) = result {
            tracing::warn!(%error, "background task ended with an error");
        }
    }
    // Through the group commit: the bucket dbs, the main-db writes still waiting for them,
    // then the main db.
    storage
        .make_durable()
        .await
        .context("final sled flush failed")?;
    // Without the journal's end the next start checks every entity against the journal.
    match store::journal_last_sequence(&jetstream).await {
        Ok(end) => storage
            .mark_stopped_cleanly(end)
            .context("cannot note the clean stop")?,
        Err(error) => {
            tracing::warn!(%error, "cannot read the journal's end; the next start checks each entity against it")
        }
    }
    tracing::info!("storage flushed");
    if let Err(error) = client.drain().await {
        tracing::warn!(%error, "nats drain failed");
    }
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    tracing::info!("playhead-node stopped");
    Ok(())
}

/// Plays on air without their enrichment filed again at start (those a stopped run left
/// waiting); more than the service holds wait for the next play of their song.
fn start_enrichment(
    config: &NodeConfig,
    storage: &Storage,
    contexts: &store::Contexts,
    jetstream: &jetstream::Context,
    metrics: &Arc<NodeMetrics>,
    background: &mut JoinSet<anyhow::Result<()>>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let provider = HttpProvider::new(&config.enrichment, metrics.clone())
        .context("cannot set up the enrichment provider")?;
    let (link, service) = enrichment::service(
        &config.enrichment,
        config.ingest.groups,
        provider,
        storage.enrichment.clone(),
        storage.stations.clone(),
        jetstream.clone(),
        metrics.clone(),
    );
    background.spawn(service.run(stop.clone()));
    let waiting = storage
        .stations
        .unenriched_plays(config.enrichment.max_pending_songs)?;
    if !waiting.is_empty() {
        tracing::info!(
            plays = waiting.len(),
            "filing the plays on air without enrichment again"
        );
    }
    for (station, play_seq, song) in waiting {
        link.want(Wanted {
            station,
            play_seq,
            song,
            resumed: true,
        });
    }
    if contexts.station.enrichment.set(link).is_err() {
        anyhow::bail!("the enrichment service was started twice");
    }
    Ok(())
}
