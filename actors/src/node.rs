//! The node: starts (or joins) the broker, sets up the JetStream topology, opens storage,
//! spawns a shard and an intake task per partition, serves queries and metrics, and shuts
//! all of it down in one fixed order — on request, or when a task it cannot serve without
//! ends (then `run` returns that cause, so the process exits non-zero and is restarted).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use playhead_proto::subjects::Inbox;
use ractor::{Actor, ActorCell};
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::broker::{self, EmbeddedBroker};
use crate::catalog_entity::{CatalogContext, ContentEntity};
use crate::config::NodeConfig;
use crate::ingest::dead_letter::DeadLetters;
use crate::ingest::{IngestError, PartitionIntake, Screen, screen};
use crate::metrics::{self, KeyspaceLabel, NodeMetrics};
use crate::query::{self, QueryContext};
use crate::sharding::Entity;
use crate::sharding::shard::{ShardActor, ShardArguments};
use crate::station_entity::{StationContext, StationEntity};
use crate::storage::Storage;
use crate::storage::clock::SystemClock;
use crate::user_entity::{UserContext, UserEntity};

/// Where a started node can be reached.
#[derive(Debug, Clone)]
pub struct NodeEndpoints {
    pub nats_url: String,
    pub metrics: SocketAddr,
}

/// Runs the node until `shutdown` is cancelled, then stops in order. `ready` receives the
/// endpoints once everything is serving. A partition intake or a background task (metrics,
/// queries, compaction) that ends before that is fatal: the node stops in the same order and
/// returns the cause as its error.
pub async fn run(
    config: NodeConfig,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<NodeEndpoints>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let embedded = if config.embedded_broker() {
        Some(EmbeddedBroker::start(&config).await?)
    } else {
        None
    };
    let nats_url = embedded
        .as_ref()
        .map_or_else(|| config.nats.url.clone(), |broker| broker.url.clone());
    let client = broker::connect(&nats_url, "playhead-node").await?;
    let jetstream = jetstream::new(client.clone());
    let topology = broker::ensure_topology(&jetstream, &config).await?;
    tracing::info!(
        partitions = config.ingest.partitions,
        consumers = topology.consumers.len(),
        "jetstream topology ready"
    );

    let storage = Storage::open(
        &config.data_dir.join("state"),
        &config,
        Arc::new(SystemClock),
    )
    .with_context(|| format!("cannot open storage under {}", config.data_dir.display()))?;
    let node_metrics = NodeMetrics::new();

    let background_stop = CancellationToken::new();
    let mut background = Background::new();
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics.listen))?;
    let metrics_address = metrics_listener.local_addr()?;
    {
        let node_metrics = node_metrics.clone();
        let stop = background_stop.clone();
        spawn_background(&mut background, "metrics endpoint", async move {
            metrics::serve(
                metrics_listener,
                Arc::new(move || metrics::render(&node_metrics.registry)),
                stop.cancelled_owned(),
            )
            .await
            .map_err(anyhow::Error::from)
        });
    }
    spawn_background(
        &mut background,
        "query service",
        query::serve(
            client.clone(),
            QueryContext {
                storage: storage.clone(),
                player_policy: config.player_policy(),
                playout_policy: config.playout_policy(),
            },
            background_stop.clone(),
        ),
    );
    spawn_background(
        &mut background,
        "compaction",
        compact_periodically(
            storage.clone(),
            node_metrics.clone(),
            Duration::from_secs(config.storage.compaction_interval_secs),
            background_stop.clone(),
        ),
    );

    let station_context = Arc::new(StationContext {
        storage: storage.clone(),
        jetstream: jetstream.clone(),
        now_playing: topology.now_playing.clone(),
        metrics: node_metrics.clone(),
    });
    let user_context = Arc::new(UserContext {
        storage: storage.clone(),
        jetstream: jetstream.clone(),
        client: client.clone(),
        metrics: node_metrics.clone(),
        player_policy: config.player_policy(),
        playout_policy: config.playout_policy(),
    });
    let catalog_context = Arc::new(CatalogContext {
        storage: storage.clone(),
    });
    let partitions = Partitions {
        config: &config,
        storage: &storage,
        metrics: &node_metrics,
        dead_letters: DeadLetters {
            jetstream: jetstream.clone(),
            metrics: node_metrics.clone(),
        },
        stop: CancellationToken::new(),
    };
    let mut intakes = JoinSet::new();
    let mut shards = Vec::new();
    for (inbox, partition, consumer) in topology.consumers {
        let shard = match inbox {
            Inbox::Station => {
                partitions
                    .start::<StationEntity>(
                        &mut intakes,
                        (inbox, partition, consumer),
                        station_context.clone(),
                        screen::screen_station,
                    )
                    .await?
            }
            Inbox::User => {
                partitions
                    .start::<UserEntity>(
                        &mut intakes,
                        (inbox, partition, consumer),
                        user_context.clone(),
                        screen::screen_user,
                    )
                    .await?
            }
            Inbox::Catalog => {
                partitions
                    .start::<ContentEntity>(
                        &mut intakes,
                        (inbox, partition, consumer),
                        catalog_context.clone(),
                        screen::screen_catalog,
                    )
                    .await?
            }
        };
        shards.push(shard);
    }
    let intake_stop = partitions.stop;

    let endpoints = NodeEndpoints {
        nats_url: nats_url.clone(),
        metrics: metrics_address,
    };
    tracing::info!(
        nats = %endpoints.nats_url,
        metrics = %format!("http://{metrics_address}/metrics"),
        data_dir = %config.data_dir.display(),
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
        Some(ended) = intakes.join_next() => Some(intake_ended(ended)),
        Some(ended) = background.join_next() => Some(background_ended(ended)),
    };
    if let Some(cause) = &fatal {
        tracing::error!(
            cause = format!("{cause:#}"),
            "fatal task end; shutting down"
        );
    }
    let stopped = shut_down(ShutdownParts {
        intake_stop,
        intakes,
        shards,
        background_stop,
        background,
        storage,
        client,
        embedded,
    })
    .await;
    let Some(cause) = fatal else {
        return stopped;
    };
    if let Err(error) = stopped {
        tracing::error!(error = format!("{error:#}"), "the shutdown failed too");
    }
    tracing::error!(
        cause = format!("{cause:#}"),
        "playhead-node stopped after a fatal task end"
    );
    Err(cause)
}

/// The cause of an intake's end while the node was serving: every intake end is fatal, since
/// its partition would silently stop being read.
fn intake_ended(ended: Result<Result<(), IngestError>, JoinError>) -> anyhow::Error {
    match ended {
        Ok(Err(error)) => anyhow::Error::new(error).context("a partition intake failed"),
        Ok(Ok(())) => anyhow::anyhow!("a partition intake ended while the node was serving"),
        Err(error) => anyhow::Error::new(error).context("a partition intake task failed"),
    }
}

/// The cause of a background task's end while the node was serving.
fn background_ended(ended: Result<(&'static str, anyhow::Result<()>), JoinError>) -> anyhow::Error {
    match ended {
        Ok((task, Err(error))) => error.context(format!("the {task} failed")),
        Ok((task, Ok(()))) => anyhow::anyhow!("the {task} ended while the node was serving"),
        Err(error) => anyhow::Error::new(error).context("a background task failed"),
    }
}

/// Queries, metrics and compaction, each result carrying its task's name.
type Background = JoinSet<(&'static str, anyhow::Result<()>)>;

fn spawn_background(
    background: &mut Background,
    task: &'static str,
    future: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    background.spawn(async move { (task, future.await) });
}

/// What starting a partition needs, whatever its entity kind.
struct Partitions<'a> {
    config: &'a NodeConfig,
    storage: &'a Storage,
    metrics: &'a Arc<NodeMetrics>,
    dead_letters: DeadLetters,
    /// Stops every intake.
    stop: CancellationToken,
}

/// A running shard actor, kind erased for shutdown.
type RunningShard = (ActorCell, tokio::task::JoinHandle<()>);

impl Partitions<'_> {
    /// Spawns the partition's shard actor and its intake task (owned by `intakes`).
    async fn start<E: Entity>(
        &self,
        intakes: &mut JoinSet<Result<(), IngestError>>,
        (inbox, partition, consumer): (Inbox, u32, PullConsumer),
        context: Arc<E::Context>,
        screen: Screen<E>,
    ) -> anyhow::Result<RunningShard> {
        let config = self.config;
        let (shard, handle) = Actor::spawn(
            None,
            ShardActor::<E>::default(),
            ShardArguments {
                context,
                metrics: self.metrics.clone(),
                passivate_after: config.passivate_after(),
                passivation_check: Duration::from_secs(config.actors.passivation_check_secs),
                max_live_entities: config.actors.max_live_entities_per_shard,
            },
        )
        .await
        .with_context(|| format!("cannot start the shard actor of {inbox:?} {partition}"))?;
        let intake = PartitionIntake {
            inbox,
            partition,
            consumer,
            shard: shard.clone(),
            screen,
            storage: self.storage.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: self.metrics.clone(),
            batch_size: config.ingest.batch_size,
            max_message_bytes: config.ingest.max_message_bytes,
        };
        intakes.spawn(intake.run(self.stop.clone()));
        Ok((shard.get_cell(), handle))
    }
}

struct ShutdownParts {
    intake_stop: CancellationToken,
    intakes: JoinSet<Result<(), IngestError>>,
    shards: Vec<RunningShard>,
    background_stop: CancellationToken,
    background: Background,
    storage: Storage,
    client: async_nats::Client,
    embedded: Option<EmbeddedBroker>,
}

/// The one shutdown path: stop intake (finishing batches in hand), drain the actors,
/// stop queries and metrics, flush sled, drain NATS, stop the embedded broker.
async fn shut_down(parts: ShutdownParts) -> anyhow::Result<()> {
    let ShutdownParts {
        intake_stop,
        mut intakes,
        shards,
        background_stop,
        mut background,
        storage,
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
    tracing::info!("intake stopped");
    for (shard, handle) in shards {
        shard.stop(None);
        let _ = handle.await;
    }
    tracing::info!("actors drained");
    background_stop.cancel();
    while let Some(result) = background.join_next().await {
        if let Ok((task, Err(error))) = result {
            tracing::warn!(task, %error, "background task ended with an error");
        }
    }
    storage.flush().context("final sled flush failed")?;
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

async fn compact_periodically(
    storage: Storage,
    metrics: Arc<NodeMetrics>,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let storage = storage.clone();
        // Dropping trees is blocking IO; keep it off the async workers.
        for (keyspace, result) in tokio::task::spawn_blocking(move || storage.compact()).await? {
            let label = KeyspaceLabel { keyspace };
            match result {
                Ok(report) => {
                    metrics
                        .keyspace_buckets
                        .get_or_create(&label)
                        .set(report.buckets_remaining as i64);
                    metrics
                        .keyspace_buckets_dropped
                        .get_or_create(&label)
                        .inc_by(report.buckets_dropped as u64);
                    metrics
                        .keyspace_compaction_seconds
                        .get_or_create(&label)
                        .observe(report.elapsed.as_secs_f64());
                }
                Err(error) => {
                    metrics
                        .keyspace_compaction_failures
                        .get_or_create(&label)
                        .inc();
                    tracing::warn!(keyspace, %error, "keyspace compaction failed");
                }
            }
        }
    }
}
