//! The broker side of the node: the embedded nats-server child (when no URL is configured)
//! and the JetStream topology (inbox streams with the partitioning transform, events,
//! dead letters, the now-playing bucket, one durable consumer per ownership group), created or
//! updated idempotently at every start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use playhead_client::service::nats_auth::{self, NatsAccess, NatsRole, RequesterKeys};
use playhead_proto::subjects::{
    DLQ_CAPTURE, DLQ_STREAM, EVENTS_CAPTURE, EVENTS_STREAM, HEARTBEAT_INTERVAL_KEY, IMPORTS_BUCKET,
    Inbox, MAX_MESSAGE_BYTES_KEY, NOW_PLAYING_BUCKET, SETTINGS_BUCKET,
};
use tokio::process::{Child, Command};

use crate::config::NodeConfig;
use crate::ingest::group::GroupId;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot start the embedded nats-server {binary:?}: {source} (install it with `make tools`, \
         or set nats.server_bin / --nats-server-bin, or join a running server with --nats-url)"
    )]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("the embedded nats-server exited during start-up ({status}); see {log}")]
    ExitedEarly { status: String, log: String },
    #[error("cannot connect to NATS at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("JetStream setup of {what} failed: {detail}")]
    Setup { what: String, detail: String },
}

/// Inbox streams keep this much history (the journal, not the inbox, is what rebuilds state).
const INBOX_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Import batches stay this long (a re-run after that answers its recorded status still).
const IMPORT_OBJECT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
const DLQ_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The broker users and permissions of every playhead deployment (see the file); the embedded
/// broker runs with this text, the public keys coming from its environment.
pub const USERS_CONF: &str = include_str!("../../deploy/nats/playhead-users.conf");

/// Where the embedded broker's users' nkey seeds live: one file per role, made at first start.
pub fn embedded_credentials_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("nats-credentials")
}

/// Writes [`USERS_CONF`] as the configuration file `path` (replacing an older copy) and makes
/// the seeds in `credentials` that are missing; returns every user's public key.
pub fn prepare_users(
    path: &Path,
    credentials: &Path,
) -> Result<Vec<(NatsRole, String)>, BrokerError> {
    let keys = nats_auth::ensure_credentials(credentials).map_err(|error| BrokerError::Setup {
        what: "the broker's users".into(),
        detail: error.to_string(),
    })?;
    std::fs::write(path, USERS_CONF).map_err(|error| BrokerError::Setup {
        what: format!("the broker's configuration {}", path.display()),
        detail: error.to_string(),
    })?;
    Ok(keys)
}

/// The Go garbage collector's target for every broker playhead starts (embedded, tests,
/// benchmarks; `deploy/` sets the same): a collection once the heap grows by 400% over what
/// the last one kept, instead of Go's 100%. Each collection of a broker holding playhead's
/// streams marks ~100–200 MB on one of the two cores for 60–150 ms, and the requests served
/// meanwhile (journal appends, acknowledgements) wait: those were the largest `Heartbeat`
/// stalls measured (README, *Benchmarks*, 2026-12-01). Four times fewer collections for a
/// heap that peaks at ~5× its live size.
pub const BROKER_GOGC: &str = "400";

/// The Go runtime settings for a broker child: [`BROKER_GOGC`], unless this process's own
/// environment sets `GOGC` (then the child inherits that, as it inherits everything else).
pub fn go_runtime_environment() -> Vec<(&'static str, &'static str)> {
    if std::env::var_os("GOGC").is_some() {
        Vec::new()
    } else {
        vec![("GOGC", BROKER_GOGC)]
    }
}

/// The environment a broker reads the users' public keys from (see [`USERS_CONF`]).
pub fn public_key_environment(keys: &[(NatsRole, String)]) -> Vec<(String, String)> {
    keys.iter()
        .map(|(role, key)| (role.public_key_variable(), key.clone()))
        .collect()
}

/// A nats-server child process owned by the node.
pub struct EmbeddedBroker {
    child: Child,
    pub url: String,
    /// The seed files of the broker's users (see [`embedded_credentials_dir`]).
    pub credentials: PathBuf,
    /// Their public keys, which check the signatures of reply subjects.
    pub requesters: RequesterKeys,
}

impl EmbeddedBroker {
    /// Starts `nats-server` with JetStream under `{data_dir}/jetstream`, on 127.0.0.1, with
    /// playhead's users (seeds in `{data_dir}/nats-credentials`, made at first start).
    pub async fn start(config: &NodeConfig) -> Result<Self, BrokerError> {
        let store = config.data_dir.join("jetstream");
        let log = config.data_dir.join("nats-server.log");
        let conf = config.data_dir.join("nats-users.conf");
        let credentials = embedded_credentials_dir(&config.data_dir);
        let public_keys = prepare_users(&conf, &credentials)?;
        std::fs::create_dir_all(&store).map_err(|source| BrokerError::Spawn {
            binary: config.nats.server_bin.clone(),
            source,
        })?;
        let log_file = std::fs::File::create(&log).map_err(|source| BrokerError::Spawn {
            binary: config.nats.server_bin.clone(),
            source,
        })?;
        let port = config.nats.embedded_port.to_string();
        let mut child = Command::new(&config.nats.server_bin)
            .arg("-c")
            .arg(&conf)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(&store)
            .envs(public_key_environment(&public_keys))
            .envs(go_runtime_environment())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                binary: config.nats.server_bin.clone(),
                source,
            })?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Err(BrokerError::ExitedEarly {
                    status: status.to_string(),
                    log: log.display().to_string(),
                });
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", config.nats.embedded_port))
                .await
                .is_ok()
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BrokerError::Connect {
                    url,
                    detail: format!(
                        "not accepting connections after 15 s; see {}",
                        log.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(
            %url,
            store = %store.display(),
            credentials = %credentials.display(),
            "embedded nats-server started (no anonymous connections: each role signs in with \
             its nkey seed from the credentials directory)"
        );
        Ok(Self {
            child,
            url,
            credentials,
            requesters: RequesterKeys::new(public_keys),
        })
    }

    /// Asks the server to shut down (SIGTERM, so JetStream closes its store cleanly).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(_) => tracing::info!("embedded nats-server stopped"),
            Err(_) => {
                tracing::warn!("embedded nats-server ignored SIGTERM for 10 s; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Connects as the node user (`nkey_file`, the embedded broker's own when there is one),
/// retrying forever on reconnects (the client's default).
pub async fn connect(
    url: &str,
    config: &NodeConfig,
    embedded: Option<&EmbeddedBroker>,
) -> Result<async_nats::Client, BrokerError> {
    let connect_error = |detail: String| BrokerError::Connect {
        url: url.to_owned(),
        detail,
    };
    let nkey_file = match embedded {
        Some(broker) => Some(NatsRole::Node.seed_file(&broker.credentials)),
        None => config.nats.nkey_file.clone(),
    };
    let access = NatsAccess::load(
        NatsRole::Node,
        nkey_file.as_deref(),
        config.nats.ca_file.as_deref(),
    )
    .map_err(|error| connect_error(error.to_string()))?;
    nats_auth::connect(url, "playhead-node", access.options())
        .await
        .map_err(|error| connect_error(error.to_string()))
}

/// Whose signatures reply subjects need: the embedded broker's users, or those of
/// `nats.requester_keys`; `None` (with a warning) when neither is there.
pub fn requester_keys(
    config: &NodeConfig,
    embedded: Option<&EmbeddedBroker>,
) -> Result<Option<RequesterKeys>, BrokerError> {
    if let Some(broker) = embedded {
        return Ok(Some(broker.requesters.clone()));
    }
    match &config.nats.requester_keys {
        Some(path) => RequesterKeys::load(path)
            .map(Some)
            .map_err(|error| BrokerError::Setup {
                what: "nats.requester_keys".into(),
                detail: error.to_string(),
            }),
        None => {
            tracing::warn!(
                "nats.requester_keys is not set: a command's reply subject is used without \
                 checking that its requester signed it, so a publisher could aim a decision at \
                 another client's replies; give the users' public keys (`playhead nats keygen`)"
            );
            Ok(None)
        }
    }
}

fn setup_error(what: impl Into<String>) -> impl FnOnce(String) -> BrokerError {
    let what = what.into();
    move |detail| BrokerError::Setup { what, detail }
}

/// Streams and bucket of this deployment, created or updated idempotently. The consumers come
/// after ownership: [`ensure_consumers`].
pub struct Topology {
    pub now_playing: kv::Store,
    /// Settings the nodes publish for the gateways (see [`publish_settings`]).
    pub settings: kv::Store,
    /// Names this incarnation of `PLAYHEAD_EVENTS` (its creation time): a store folded from
    /// another journal must not be served as if it folded this one.
    pub journal_identity: String,
    /// The import batches (`PLAYHEAD_IMPORTS`).
    pub import_objects: async_nats::jetstream::object_store::ObjectStore,
}

pub async fn ensure_streams(
    jetstream: &jetstream::Context,
    config: &NodeConfig,
) -> Result<Topology, BrokerError> {
    let replicas = config.nats.replicas;
    let duplicate_window = Duration::from_secs(config.ingest.duplicate_window_secs);
    for inbox in Inbox::ALL.iter().copied() {
        jetstream
            .create_or_update_stream(stream::Config {
                name: inbox.stream_name().into(),
                subjects: vec![inbox.capture_subject().into()],
                subject_transform: Some(stream::SubjectTransform {
                    source: inbox.capture_subject().into(),
                    destination: inbox.transform_destination(config.ingest.partitions),
                }),
                max_age: INBOX_MAX_AGE,
                duplicate_window,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|error| setup_error(inbox.stream_name())(error.to_string()))?;
    }
    // Import requests: a few a day, one partition (the transform only moves them under the
    // stored prefix, as the other inboxes are).
    let imports = Inbox::Import;
    jetstream
        .create_or_update_stream(stream::Config {
            name: imports.stream_name().into(),
            subjects: vec![imports.capture_subject().into()],
            subject_transform: Some(stream::SubjectTransform {
                source: imports.capture_subject().into(),
                destination: imports.transform_destination(1),
            }),
            max_age: INBOX_MAX_AGE,
            duplicate_window,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| setup_error(imports.stream_name())(error.to_string()))?;
    let import_objects = match jetstream.get_object_store(IMPORTS_BUCKET).await {
        Ok(store) => store,
        Err(_) => {
            let created = jetstream
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: IMPORTS_BUCKET.to_owned(),
                    description: Some("playhead: import batches (claim checks name them)".into()),
                    max_age: IMPORT_OBJECT_MAX_AGE,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(store) => store,
                // Another node may have created it between our get and create.
                Err(error) => jetstream
                    .get_object_store(IMPORTS_BUCKET)
                    .await
                    .map_err(|_| setup_error(IMPORTS_BUCKET)(error.to_string()))?,
            }
        }
    };
    // The journal: nothing but age removes events (no message or byte limits), and the
    // retention covers everything no snapshot holds yet (validated with the configuration).
    // Direct get serves catch-up reads of one entity's journal.
    let journal = jetstream
        .create_or_update_stream(stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec![EVENTS_CAPTURE.into()],
            max_age: Duration::from_secs(config.journal.retention_secs),
            allow_direct: true,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| setup_error(EVENTS_STREAM)(error.to_string()))?;
    let journal_identity = journal
        .created
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|error| setup_error(EVENTS_STREAM)(error.to_string()))?;
    jetstream
        .create_or_update_stream(stream::Config {
            name: DLQ_STREAM.into(),
            subjects: vec![DLQ_CAPTURE.into()],
            max_age: DLQ_MAX_AGE,
            duplicate_window,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| setup_error(DLQ_STREAM)(error.to_string()))?;
    let now_playing = jetstream
        .create_or_update_key_value(kv::Config {
            bucket: NOW_PLAYING_BUCKET.into(),
            description: "now playing per station (playhead projection)".into(),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| setup_error(NOW_PLAYING_BUCKET)(error.to_string()))?;
    let settings = jetstream
        .create_or_update_key_value(kv::Config {
            bucket: SETTINGS_BUCKET.into(),
            description: "settings the playhead nodes publish for the gateways".into(),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| setup_error(SETTINGS_BUCKET)(error.to_string()))?;
    Ok(Topology {
        now_playing,
        settings,
        journal_identity,
        import_objects,
    })
}

/// Publishes the settings the gateways follow, from this node's configuration, so each is
/// configured once: the heartbeat interval (`playout.heartbeat_interval_secs`) and the size
/// limit of an inbox message (`ingest.max_message_bytes`).
pub async fn publish_settings(
    settings: &kv::Store,
    config: &NodeConfig,
) -> Result<(), BrokerError> {
    let interval_ms = config.playout.heartbeat_interval_secs * 1000;
    settings
        .put(HEARTBEAT_INTERVAL_KEY, interval_ms.to_string().into())
        .await
        .map_err(|error| setup_error(SETTINGS_BUCKET)(error.to_string()))?;
    settings
        .put(
            MAX_MESSAGE_BYTES_KEY,
            config.ingest.max_message_bytes.to_string().into(),
        )
        .await
        .map_err(|error| setup_error(SETTINGS_BUCKET)(error.to_string()))?;
    Ok(())
}

/// The durable consumer of each group in `owned` (one inbox or several), created or updated,
/// then rewound to its ack floor: messages a previous run received but never acknowledged
/// would otherwise come back only after ack_wait, behind newer ones, and entities would skip
/// them as already applied. Only the groups this node owns are touched.
///
/// A group consumer created next to consumers of an earlier layout (one per partition, or
/// another group count) starts at their lowest ack floor, so nothing is skipped and nothing
/// acknowledged is read again (beyond what entities skip); once every group of the inbox has
/// its consumer, the earlier ones are deleted.
pub async fn ensure_consumers(
    jetstream: &jetstream::Context,
    config: &NodeConfig,
    owned: &[GroupId],
) -> Result<Vec<(GroupId, consumer::PullConsumer)>, BrokerError> {
    let mut consumers = Vec::with_capacity(owned.len());
    for inbox in Inbox::ALL.iter().copied() {
        let groups: Vec<GroupId> = owned
            .iter()
            .copied()
            .filter(|group| group.inbox == inbox)
            .collect();
        if groups.is_empty() {
            continue;
        }
        let stream = jetstream
            .get_stream(inbox.stream_name())
            .await
            .map_err(|error| setup_error(inbox.stream_name())(error.to_string()))?;
        let wanted: Vec<String> = groups.iter().map(GroupId::consumer_name).collect();
        let mut earlier = Vec::new();
        // Existing group consumers keep the deliver policy they were created with (the broker
        // refuses to change it).
        let mut existing: Vec<(String, consumer::DeliverPolicy)> = Vec::new();
        let mut names = stream.consumer_names();
        while let Some(name) = names.next().await {
            let name = name.map_err(|error| setup_error(inbox.stream_name())(error.to_string()))?;
            if wanted.contains(&name) {
                let info = stream
                    .consumer_info(&name)
                    .await
                    .map_err(|error| setup_error(format!("consumer {name}"))(error.to_string()))?;
                existing.push((name, info.config.deliver_policy));
            } else if inbox.is_playhead_consumer(&name) {
                earlier.push(name);
            }
        }
        let mut resume_at: Option<u64> = None;
        for name in &earlier {
            let info = stream
                .consumer_info(name)
                .await
                .map_err(|error| setup_error(format!("consumer {name}"))(error.to_string()))?;
            let next = info.ack_floor.stream_sequence + 1;
            resume_at = Some(resume_at.map_or(next, |at: u64| at.min(next)));
        }
        for group in &groups {
            let name = group.consumer_name();
            let kept = existing
                .iter()
                .find(|(existing, _)| *existing == name)
                .map(|(_, policy)| *policy);
            let deliver_policy = match (kept, resume_at) {
                (Some(policy), _) => policy,
                (None, Some(start_sequence)) => {
                    tracing::info!(consumer = %name, start_sequence, earlier = ?earlier, "new group consumer starts at the earlier consumers' ack floor");
                    consumer::DeliverPolicy::ByStartSequence { start_sequence }
                }
                (None, None) => consumer::DeliverPolicy::All,
            };
            let consumer = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subjects: group.filter_subjects(config.ingest.partitions),
                    deliver_policy,
                    ack_policy: consumer::AckPolicy::All,
                    ack_wait: Duration::from_secs(config.ingest.ack_wait_secs),
                    max_ack_pending: (config.ingest.batch_size * 4) as i64,
                    max_deliver: -1,
                    num_replicas: config.nats.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|error| setup_error(format!("consumer {name}"))(error.to_string()))?;
            stream
                .reset_consumer(&name, None)
                .await
                .map_err(|error| setup_error(format!("reset of {name}"))(error.to_string()))?;
            consumers.push((*group, consumer));
        }
        let owns_every_group =
            GroupId::all(inbox, config.ingest.groups).all(|group| groups.contains(&group));
        if owns_every_group {
            for name in earlier {
                stream
                    .delete_consumer(&name)
                    .await
                    .map_err(|error| setup_error(format!("deleting {name}"))(error.to_string()))?;
                tracing::info!(consumer = %name, "deleted a consumer of an earlier layout");
            }
        }
    }
    Ok(consumers)
}
