//! Node configuration: one struct tree with defaults, loaded from an optional TOML file, then
//! `PLAYHEAD_*` environment variables (nested keys joined by `__`, e.g.
//! `PLAYHEAD_INGEST__PARTITIONS=32`), then command-line flags. Unknown keys are rejected and
//! [`NodeConfig::validate`] explains what to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::player::{PlayerPolicy, PlayerPolicyError};
use crate::domain::playout::{DEFAULT_BOOKMARK_EVERY_BEATS, PlayoutPolicy, PlayoutPolicyError};

/// Configuration version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Ownership groups per inbox unless configured. Measured (README, *Benchmarks*): a consumer
/// filtered to several partitions costs nats-server a walk of every subject of a message block
/// per fetch (`LoadNextMsgMulti` → `IntersectGSL`), so with one subject per user the broker
/// saturates far below a bare drain; one unfiltered consumer per inbox is the cheapest.
pub const DEFAULT_GROUPS: u32 = 1;

/// Batches a group applies side by side unless configured.
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 4;

/// Keys outside any section, as they may appear in `PLAYHEAD_{KEY}`.
const TOP_LEVEL_KEYS: &[&str] = &["version", "data_dir"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub version: u32,
    /// sled state and, in embedded mode, the broker's JetStream store live here.
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub ingest: IngestConfig,
    pub actors: ActorsConfig,
    pub station: StationConfig,
    pub player: PlayerConfig,
    pub playout: PlayoutConfig,
    pub storage: StorageConfig,
    pub journal: JournalConfig,
    pub imports: ImportsConfig,
    pub enrichment: EnrichmentConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// Which enrichment provider looks songs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrichmentProvider {
    /// The MusicBrainz web service v2 (recording search) and the Cover Art Archive.
    Musicbrainz,
    /// No enrichment: songs are served as the stations spell them.
    None,
}

/// Song enrichment: a cache of what the provider knows of each distinct song, one provider
/// call per distinct song (single-flight), rate-limited, off the request path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichmentConfig {
    pub provider: EnrichmentProvider,
    /// Base URL of the MusicBrainz web service (`/ws/2/recording` is appended).
    pub musicbrainz_url: String,
    /// Base URL of the Cover Art Archive (`/release/{mbid}` is appended).
    pub coverart_url: String,
    /// Sent with every request: MusicBrainz asks for an application name, version and contact.
    pub user_agent: String,
    /// Requests per second to MusicBrainz (it asks for at most 1 on average) ...
    pub musicbrainz_rate_per_sec: f64,
    /// ... and to the Cover Art Archive.
    pub coverart_rate_per_sec: f64,
    /// Whole time of one HTTP request (connect, headers, body).
    pub request_timeout_ms: u64,
    /// Attempts of one request (5xx, 429, timeouts and refused connections are retried, with
    /// jittered exponential backoff, honouring `Retry-After`) before the look-up is put back
    /// to wait for the next round.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive failed requests to one provider that open its circuit breaker ...
    pub breaker_failures: u32,
    /// ... which then lets no request through for this long, then one trial request.
    pub breaker_open_secs: u64,
    /// A song found stays cached this long after it was last played (sliding) ...
    pub cache_ttl_secs: u64,
    /// ... in buckets of this width (expiry drops whole buckets).
    pub cache_bucket_secs: u64,
    /// A song the provider does not know is not asked again for this long.
    pub not_found_ttl_secs: u64,
    /// Distinct songs waiting for the provider at once; further misses are not queued (counted
    /// as dropped; their next play asks again).
    pub max_pending_songs: usize,
    /// Plays (stations) waiting for one song's answer; further ones are not enriched.
    pub max_waiters_per_song: usize,
    /// Look-ups in flight at once (each still waits for its provider's rate limit).
    pub max_concurrent_lookups: usize,
    /// Lowest MusicBrainz search score (0-100) taken as a match.
    pub min_score: u32,
    /// No new look-up starts while more than this many station-inbox messages wait (a node
    /// catching up serves the song changes first; their enrichment follows). 0: never wait.
    pub defer_while_backlog_above: u64,
}

/// Imports of concert listings (claim checks in the object store) and the shows they list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportsConfig {
    /// An import notes how far it got (its last committed line and counts) every this many
    /// lines, and resumes from there after a restart.
    pub commit_every_lines: u64,
    /// Longest line of a batch; a longer one is an invalid record (its bytes are skipped).
    pub max_line_bytes: usize,
    /// Shows are kept in buckets of this width by their start time...
    pub show_bucket_secs: u64,
    /// ...and leave with their bucket once it ended this long ago (shows stay listed until at
    /// least `starts_at` + this).
    pub show_keep_after_start_secs: u64,
    /// A station's or a listener's artists looked up for shows, most recent first.
    pub max_artists_per_query: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Join this server or cluster. Empty: start an embedded nats-server child.
    pub url: String,
    /// The nats-server executable for embedded mode (a path, or a name looked up on PATH).
    pub server_bin: PathBuf,
    /// Client port of the embedded server (it listens on 127.0.0.1 only).
    pub embedded_port: u16,
    /// JetStream replicas of the streams the node creates (3 on a cluster).
    pub replicas: usize,
    /// The node user's nkey seed file (mode 0600) for joining `url`; see
    /// `deploy/nats/playhead-users.conf`. The embedded broker makes its own credentials.
    pub nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) of a broker that listens with TLS; when set, TLS is required.
    pub ca_file: Option<PathBuf>,
    /// The users' public keys (`PLAYHEAD_NKEY_{ROLE}=U…` lines, as `playhead nats keygen`
    /// prints them) for joining `url`: a command's reply subject `_INBOX.{role}.…` is used
    /// only with that user's signature of it. Unset: reply subjects are not checked for their
    /// signer. The embedded broker knows its own.
    pub requester_keys: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// P of `{{partition(P,1)}}`: fixed per deployment.
    pub partitions: u32,
    /// Most inbox messages a partition processes between two acknowledgements.
    pub batch_size: usize,
    /// Batches a group applies side by side (only batches that share no entity; one that
    /// does waits for the one ahead). 1 applies one batch at a time.
    pub batches_in_flight: usize,
    /// Larger payloads are dead-lettered as oversize.
    pub max_message_bytes: usize,
    /// Redelivery delay of an unacknowledged inbox message.
    pub ack_wait_secs: u64,
    /// Broker-side duplicate window for `Nats-Msg-Id` on the inbox streams (publishers'
    /// retries). The journal does not rely on it: its appends are exactly-once by sequence.
    pub duplicate_window_secs: u64,
    /// Failures of one message, for a reason that does not go away, before it is quarantined
    /// to the dead-letter stream (reason `poison`) and its partition carries on.
    pub max_attempts: u32,
    /// Ownership groups per inbox: the partitions are dealt to this many groups (partition
    /// `p` belongs to group `p mod groups`), each read by one durable consumer. The group is
    /// what a node owns; fewer groups mean fuller batches.
    pub groups: u32,
    /// A node holds each group it processes by a lease in the broker, renewed every third of
    /// this; another node waits (stands by) until the lease has lapsed.
    pub ownership_lease_secs: u64,
    /// How long the answer sent for a command is kept, so that the command coming back (a
    /// lost acknowledgement, a crash after answering) gets the same answer; later it is
    /// answered from the state if nothing decided since changed what it reads, else not at all.
    pub answer_retention_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// An entity actor idle this long is stopped; its state stays in sled.
    pub passivate_after_secs: u64,
    /// How often shards look for idle entities.
    pub passivation_check_secs: u64,
    /// Bound on live entity actors per shard (one shard per ownership group); the least
    /// recently used go first.
    pub max_live_entities_per_shard: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StationConfig {
    /// Plays kept per station (older ones are evicted).
    pub history_cap: u64,
    /// Plays older than this expire (whole time buckets are dropped).
    pub history_retention_secs: u64,
    /// Width of one play-history time bucket.
    pub history_bucket_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayerConfig {
    /// Skips granted per rolling `skip_window_secs`; 0 disables skipping (every skip is
    /// denied with `retry_after` = the window).
    pub skip_limit: u32,
    pub skip_window_secs: u64,
    /// A session untouched this long is gone (sliding: every command refreshes it).
    pub session_ttl_secs: u64,
    /// Width of one session time bucket (expiry drops whole buckets).
    pub session_bucket_secs: u64,
    /// Live sessions (playlists in play) one listener may have; starting one more is refused
    /// until one lapses.
    pub max_sessions_per_user: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayoutConfig {
    /// Streams an account may play at once unless its entitlements set another limit.
    pub concurrency_limit: u32,
    /// A slot with no heartbeat for this long is free.
    pub slot_timeout_secs: u64,
    /// Interval the players are told to heartbeat at (the first one is jittered down to 50%).
    pub heartbeat_interval_secs: u64,
    /// Viewing-history records kept per user (the least recently viewed are evicted).
    pub history_cap: u32,
    /// A viewing-history record untouched this long is gone (sliding: every view refreshes it).
    pub history_retention_secs: u64,
    /// Width of one viewing-history time bucket (expiry drops whole buckets).
    pub history_bucket_secs: u64,
    /// A BEAT stores its bookmark in the viewing history every this many BEATs of a playout
    /// (and the first BEAT in a new history bucket); the others only update the playout record,
    /// whose latest positions readers overlay on the history. At least 1 (1 = every BEAT).
    pub bookmark_every_beats: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How often every time-partitioned keyspace drops its expired buckets.
    pub compaction_interval_secs: u64,
    /// For the keyspaces kept as trees of the main db (enrichment cache, answers, shows):
    /// records a second removed from an expired bucket before its (then nearly empty) tree is
    /// dropped, so expiry does not stall the serving path; 0 drops each tree whole at once
    /// (faster, but a 1M-record bucket then stalls every write for a second or more). The
    /// entity keyspaces (plays, sessions, viewing history) keep each bucket in a sled db of its
    /// own, deleted whole once expired: this does not apply to them.
    pub expiry_removes_per_sec: u64,
    /// sled page cache of the main db; each bucket db may cache up to an eighth of it.
    pub cache_mib: u64,
    /// Catalog items whose tags are kept in memory for heartbeats (the recently read ones).
    pub catalog_cache_items: usize,
}

/// The journal (`PLAYHEAD_EVENTS`) and the snapshots of the folded state.
///
/// Rule: the journal must keep every event not yet in a snapshot, so a node can always rebuild
/// from the latest snapshot plus the journal after it. A snapshot is taken at least every
/// `snapshot_interval_secs`, so `retention_secs` must be at least two intervals (one failed
/// snapshot is tolerated) plus an hour of margin; validation refuses less.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Events older than this leave `PLAYHEAD_EVENTS`.
    pub retention_secs: u64,
    /// A snapshot of every kind's folded state goes to the object store this often...
    pub snapshot_interval_secs: u64,
    /// ...or sooner, once this many events were appended since the last one (0: by time only).
    pub snapshot_every_events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus `/metrics` listen address; port 0 picks a free port.
    pub listen: SocketAddr,
}

pub use playhead_client::service::telemetry::{LogConfig, LogFormat};

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            data_dir: PathBuf::from("./data"),
            nats: NatsConfig::default(),
            ingest: IngestConfig::default(),
            actors: ActorsConfig::default(),
            station: StationConfig::default(),
            player: PlayerConfig::default(),
            playout: PlayoutConfig::default(),
            storage: StorageConfig::default(),
            journal: JournalConfig::default(),
            imports: ImportsConfig::default(),
            enrichment: EnrichmentConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            server_bin: PathBuf::from("nats-server"),
            embedded_port: 4222,
            replicas: 1,
            nkey_file: None,
            ca_file: None,
            requester_keys: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            partitions: playhead_proto::partition::DEFAULT_PARTITIONS,
            batch_size: 256,
            batches_in_flight: DEFAULT_BATCHES_IN_FLIGHT,
            max_message_bytes: playhead_client::settings::DEFAULT_MAX_MESSAGE_BYTES,
            ack_wait_secs: 30,
            duplicate_window_secs: 120,
            max_attempts: 5,
            groups: DEFAULT_GROUPS,
            ownership_lease_secs: 15,
            answer_retention_secs: 900,
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            retention_secs: 7 * 24 * 3600,
            snapshot_interval_secs: 3600,
            snapshot_every_events: 1_000_000,
        }
    }
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self {
            passivate_after_secs: 300,
            passivation_check_secs: 30,
            max_live_entities_per_shard: 65_536,
        }
    }
}

impl Default for StationConfig {
    fn default() -> Self {
        Self {
            history_cap: 1000,
            history_retention_secs: 7 * 24 * 3600,
            history_bucket_secs: 24 * 3600,
        }
    }
}

/// Most `player.max_sessions_per_user` may be.
pub const MAX_SESSIONS_PER_USER: u32 = 10_000;

impl Default for PlayerConfig {
    fn default() -> Self {
        Self {
            skip_limit: 3,
            skip_window_secs: 3600,
            session_ttl_secs: 30 * 24 * 3600,
            session_bucket_secs: 24 * 3600,
            max_sessions_per_user: crate::domain::player::DEFAULT_MAX_SESSIONS,
        }
    }
}

pub use playhead_client::settings::DEFAULT_HEARTBEAT_INTERVAL_SECS;

impl Default for PlayoutConfig {
    fn default() -> Self {
        Self {
            concurrency_limit: 2,
            slot_timeout_secs: 25 * 60,
            heartbeat_interval_secs: DEFAULT_HEARTBEAT_INTERVAL_SECS,
            history_cap: 500,
            history_retention_secs: 180 * 24 * 3600,
            history_bucket_secs: 24 * 3600,
            bookmark_every_beats: DEFAULT_BOOKMARK_EVERY_BEATS,
        }
    }
}

/// Removes a second while emptying an expired bucket (see `make bench`, sessions).
const DEFAULT_EXPIRY_REMOVES_PER_SEC: u64 = 20_000;
const MAX_EXPIRY_REMOVES_PER_SEC: u64 = 10_000_000;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            compaction_interval_secs: 600,
            expiry_removes_per_sec: DEFAULT_EXPIRY_REMOVES_PER_SEC,
            cache_mib: 256,
            catalog_cache_items: 100_000,
        }
    }
}

impl Default for ImportsConfig {
    fn default() -> Self {
        Self {
            commit_every_lines: 5_000,
            max_line_bytes: 16 * 1024,
            show_bucket_secs: 24 * 3600,
            show_keep_after_start_secs: 24 * 3600,
            max_artists_per_query: 200,
        }
    }
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            provider: EnrichmentProvider::Musicbrainz,
            musicbrainz_url: "https://musicbrainz.org".into(),
            coverart_url: "https://coverartarchive.org".into(),
            user_agent: concat!(
                "playhead/",
                env!("CARGO_PKG_VERSION"),
                " ( https://github.com/playhead/playhead )"
            )
            .into(),
            musicbrainz_rate_per_sec: 1.0,
            coverart_rate_per_sec: 1.0,
            request_timeout_ms: 10_000,
            max_attempts: 4,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            breaker_failures: 5,
            breaker_open_secs: 30,
            cache_ttl_secs: 30 * 24 * 3600,
            cache_bucket_secs: 24 * 3600,
            not_found_ttl_secs: 24 * 3600,
            max_pending_songs: 10_000,
            max_waiters_per_song: 10_000,
            max_concurrent_lookups: 4,
            min_score: 90,
            defer_while_backlog_above: 1_000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {key} = {value}: {fix}")]
    Invalid {
        key: &'static str,
        value: String,
        fix: &'static str,
    },
}

fn invalid(key: &'static str, value: impl ToString, fix: &'static str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        value: value.to_string(),
        fix,
    })
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub data_dir: Option<PathBuf>,
    pub nats_url: Option<String>,
    pub nats_server_bin: Option<PathBuf>,
    pub nats_nkey_file: Option<PathBuf>,
    pub partitions: Option<u32>,
    pub metrics_listen: Option<SocketAddr>,
}

impl EnrichmentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.provider == EnrichmentProvider::None {
            return Ok(());
        }
        for (key, url) in [
            ("enrichment.musicbrainz_url", &self.musicbrainz_url),
            ("enrichment.coverart_url", &self.coverart_url),
        ] {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.len() > 1024 || url.contains(char::is_whitespace) {
                return invalid(
                    key,
                    url,
                    "give an http:// or https:// base URL (no spaces), e.g. https://musicbrainz.org",
                );
            }
        }
        if self.user_agent.trim().is_empty() || self.user_agent.len() > 256 {
            return invalid(
                "enrichment.user_agent",
                &self.user_agent,
                "name the application, its version and a contact (MusicBrainz blocks anonymous \
                 clients), at most 256 bytes",
            );
        }
        for (key, rate) in [
            (
                "enrichment.musicbrainz_rate_per_sec",
                self.musicbrainz_rate_per_sec,
            ),
            (
                "enrichment.coverart_rate_per_sec",
                self.coverart_rate_per_sec,
            ),
        ] {
            if !(rate.is_finite() && (0.001..=1000.0).contains(&rate)) {
                return invalid(
                    key,
                    rate,
                    "give 0.001 to 1000 requests per second (MusicBrainz asks for at most 1)",
                );
            }
        }
        if !(100..=120_000).contains(&self.request_timeout_ms) {
            return invalid(
                "enrichment.request_timeout_ms",
                self.request_timeout_ms,
                "give 100 to 120000 ms (default 10000)",
            );
        }
        if !(1..=20).contains(&self.max_attempts) {
            return invalid(
                "enrichment.max_attempts",
                self.max_attempts,
                "give 1 to 20 attempts per request (default 4)",
            );
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return invalid(
                "enrichment.backoff_max_ms",
                self.backoff_max_ms,
                "must be at least enrichment.backoff_initial_ms, which must be positive",
            );
        }
        if self.breaker_failures == 0 || self.breaker_open_secs == 0 {
            return invalid(
                "enrichment.breaker_failures",
                self.breaker_failures,
                "give at least 1 failure and enrichment.breaker_open_secs of at least 1",
            );
        }
        if self.cache_bucket_secs == 0 || self.cache_ttl_secs < self.cache_bucket_secs {
            return invalid(
                "enrichment.cache_ttl_secs",
                self.cache_ttl_secs,
                "must be at least enrichment.cache_bucket_secs, which must be positive",
            );
        }
        if self.cache_ttl_secs / self.cache_bucket_secs > 1000 {
            return invalid(
                "enrichment.cache_bucket_secs",
                self.cache_bucket_secs,
                "use at least cache_ttl_secs / 1000: a look-up probes each live bucket",
            );
        }
        if self.not_found_ttl_secs == 0 || self.not_found_ttl_secs > self.cache_ttl_secs {
            return invalid(
                "enrichment.not_found_ttl_secs",
                self.not_found_ttl_secs,
                "give 1 second up to enrichment.cache_ttl_secs (default 1 day)",
            );
        }
        for (key, value) in [
            ("enrichment.max_pending_songs", self.max_pending_songs),
            ("enrichment.max_waiters_per_song", self.max_waiters_per_song),
            (
                "enrichment.max_concurrent_lookups",
                self.max_concurrent_lookups,
            ),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return invalid(key, value, "give 1 to 1000000");
            }
        }
        if self.min_score > 100 {
            return invalid(
                "enrichment.min_score",
                self.min_score,
                "give a MusicBrainz search score of 0 to 100 (default 90)",
            );
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.provider != EnrichmentProvider::None
    }
}

impl JournalConfig {
    /// The shortest retention that keeps every event not yet in a snapshot, tolerating one
    /// failed snapshot.
    pub fn minimum_retention_secs(&self) -> u64 {
        self.snapshot_interval_secs
            .saturating_mul(2)
            .saturating_add(3600)
    }
}

impl NodeConfig {
    /// Defaults, then `file` (if given), then `PLAYHEAD_*` env, then `flags`; validated.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_owned()));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("PLAYHEAD_")
                // Only `SECTION__KEY` names and top-level keys are configuration; other
                // PLAYHEAD_* variables (PLAYHEAD_CONFIG, the gateway's and the CLI's) are not.
                .filter(|key| {
                    key.as_str().contains("__")
                        || TOP_LEVEL_KEYS
                            .iter()
                            .any(|top| key.as_str().eq_ignore_ascii_case(top))
                })
                .split("__"),
        );
        if let Some(value) = &flags.data_dir {
            figment = figment.merge(("data_dir", value));
        }
        if let Some(value) = &flags.nats_url {
            figment = figment.merge(("nats.url", value));
        }
        if let Some(value) = &flags.nats_server_bin {
            figment = figment.merge(("nats.server_bin", value));
        }
        if let Some(value) = &flags.nats_nkey_file {
            figment = figment.merge(("nats.nkey_file", value));
        }
        if let Some(value) = flags.partitions {
            figment = figment.merge(("ingest.partitions", value));
        }
        if let Some(value) = flags.metrics_listen {
            figment = figment.merge(("metrics.listen", value.to_string()));
        }
        let config: NodeConfig = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value a person could get wrong, saying what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return invalid("version", self.version, "this build reads version = 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "\"\"", "give a directory the node may write to");
        }
        let url = &self.nats.url;
        if !(url.is_empty() || url.starts_with("nats://") || url.starts_with("tls://")) {
            return invalid(
                "nats.url",
                &self.nats.url,
                "use nats://host:port (or leave it empty for the embedded broker)",
            );
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return invalid(
                "nats.replicas",
                self.nats.replicas,
                "use 1 (single server) to 5",
            );
        }
        if !(1..=1024).contains(&self.ingest.partitions) {
            return invalid(
                "ingest.partitions",
                self.ingest.partitions,
                "use 1 to 1024 (64 is the default); it must match every client of this deployment",
            );
        }
        if !(1..=10_000).contains(&self.ingest.batch_size) {
            return invalid(
                "ingest.batch_size",
                self.ingest.batch_size,
                "use 1 to 10000",
            );
        }
        if !(1..=64).contains(&self.ingest.batches_in_flight) {
            return invalid(
                "ingest.batches_in_flight",
                self.ingest.batches_in_flight,
                "use 1 to 64 (1 applies one batch at a time)",
            );
        }
        if !(256..=1024 * 1024).contains(&self.ingest.max_message_bytes) {
            return invalid(
                "ingest.max_message_bytes",
                self.ingest.max_message_bytes,
                "use 256 to 1048576 (the broker's default max payload is 1 MiB)",
            );
        }
        if self.ingest.ack_wait_secs == 0 {
            return invalid("ingest.ack_wait_secs", 0, "use at least 1 second");
        }
        if self.ingest.duplicate_window_secs == 0 {
            return invalid("ingest.duplicate_window_secs", 0, "use at least 1 second");
        }
        if self.ingest.groups == 0 || self.ingest.groups > self.ingest.partitions {
            return invalid(
                "ingest.groups",
                self.ingest.groups,
                "use 1 to ingest.partitions (each group owns at least one partition)",
            );
        }
        if !(3..=600).contains(&self.ingest.ownership_lease_secs) {
            return invalid(
                "ingest.ownership_lease_secs",
                self.ingest.ownership_lease_secs,
                "use 3 to 600 seconds (15 is the default)",
            );
        }
        if !(60..=172_800).contains(&self.ingest.answer_retention_secs) {
            return invalid(
                "ingest.answer_retention_secs",
                self.ingest.answer_retention_secs,
                "use 60 to 172800 seconds (900 is the default); it should exceed how long a \
                 node may stay down",
            );
        }
        if !(1..=100).contains(&self.ingest.max_attempts) {
            return invalid(
                "ingest.max_attempts",
                self.ingest.max_attempts,
                "use 1 to 100 (5 is the default)",
            );
        }
        if self.journal.snapshot_interval_secs == 0 {
            return invalid(
                "journal.snapshot_interval_secs",
                0,
                "use at least 1 second (3600 is the default)",
            );
        }
        if self.journal.retention_secs < self.journal.minimum_retention_secs() {
            return invalid(
                "journal.retention_secs",
                self.journal.retention_secs,
                "must keep every event not yet in a snapshot: at least \
                 2 × journal.snapshot_interval_secs + 3600",
            );
        }
        if self.actors.passivate_after_secs == 0 || self.actors.passivation_check_secs == 0 {
            return invalid(
                "actors.passivate_after_secs / actors.passivation_check_secs",
                0,
                "use at least 1 second",
            );
        }
        if self.actors.max_live_entities_per_shard == 0 {
            return invalid(
                "actors.max_live_entities_per_shard",
                0,
                "use at least 1 (memory per live entity is a few KiB)",
            );
        }
        if self.station.history_cap == 0 {
            return invalid("station.history_cap", 0, "keep at least 1 play per station");
        }
        if self.station.history_bucket_secs == 0
            || self.station.history_retention_secs < self.station.history_bucket_secs
        {
            return invalid(
                "station.history_retention_secs",
                self.station.history_retention_secs,
                "must be at least station.history_bucket_secs, which must be positive",
            );
        }
        // The policies own their rules; only how the values are stored is checked here.
        if let Err(error) = self.player_policy().validate() {
            return match error {
                PlayerPolicyError::ZeroSkipWindow => invalid(
                    "player.skip_window_secs",
                    self.player.skip_window_secs,
                    "use at least 1 second (3600 is the default); to disable skipping, set \
                     player.skip_limit = 0 instead",
                ),
                PlayerPolicyError::ZeroSessionTtl => invalid(
                    "player.session_ttl_secs",
                    self.player.session_ttl_secs,
                    "use at least 1 second (30 days is the default), or every session is gone \
                     as soon as it starts",
                ),
                PlayerPolicyError::NoSessions => invalid(
                    "player.max_sessions_per_user",
                    0,
                    "use at least 1 (200 is the default), or no listener can start a playlist",
                ),
                PlayerPolicyError::TtlShorterThanSkipWindow { .. } => invalid(
                    "player.session_ttl_secs",
                    self.player.session_ttl_secs,
                    "must be at least player.skip_window_secs: an expired session must hold no \
                     skip that still counts when the listener starts over",
                ),
            };
        }
        if self.player.max_sessions_per_user > MAX_SESSIONS_PER_USER {
            return invalid(
                "player.max_sessions_per_user",
                self.player.max_sessions_per_user,
                "use at most 10000: a new session reads when every other one was last used",
            );
        }
        if self.imports.commit_every_lines == 0 {
            return invalid(
                "imports.commit_every_lines",
                0,
                "give a positive number of lines (default 5000)",
            );
        }
        if !(256..=1024 * 1024).contains(&self.imports.max_line_bytes) {
            return invalid(
                "imports.max_line_bytes",
                self.imports.max_line_bytes,
                "give 256 to 1048576 bytes (default 16384)",
            );
        }
        if self.imports.show_bucket_secs == 0
            || self.imports.show_keep_after_start_secs < self.imports.show_bucket_secs
        {
            return invalid(
                "imports.show_keep_after_start_secs",
                self.imports.show_keep_after_start_secs,
                "must be at least imports.show_bucket_secs, which must be positive",
            );
        }
        if !(1..=1000).contains(&self.imports.max_artists_per_query) {
            return invalid(
                "imports.max_artists_per_query",
                self.imports.max_artists_per_query,
                "give 1 to 1000 (default 200)",
            );
        }
        self.enrichment.validate()?;
        if self.player.session_bucket_secs == 0
            || self.player.session_ttl_secs < self.player.session_bucket_secs
        {
            return invalid(
                "player.session_ttl_secs",
                self.player.session_ttl_secs,
                "must be at least player.session_bucket_secs, which must be positive",
            );
        }
        if self.player.session_ttl_secs / self.player.session_bucket_secs > 1000 {
            return invalid(
                "player.session_bucket_secs",
                self.player.session_bucket_secs,
                "use at least session_ttl_secs / 1000: every read probes each live bucket",
            );
        }
        let playout = &self.playout;
        if let Err(error) = self.playout_policy().validate() {
            return match error {
                PlayoutPolicyError::ConcurrencyLimit(limit) => invalid(
                    "playout.concurrency_limit",
                    limit,
                    "use 1 to 16 streams per account",
                ),
                PlayoutPolicyError::ZeroInterval => invalid(
                    "playout.heartbeat_interval_secs",
                    playout.heartbeat_interval_secs,
                    "use at least 1 second (600 is the default)",
                ),
                PlayoutPolicyError::ZeroBookmarkEvery => invalid(
                    "playout.bookmark_every_beats",
                    playout.bookmark_every_beats,
                    "use at least 1 (1 stores every BEAT's bookmark; 10 is the default)",
                ),
                PlayoutPolicyError::ZeroBookmarkBucket => invalid(
                    "playout.history_bucket_secs",
                    playout.history_bucket_secs,
                    "use at least 1 second (86400 is the default)",
                ),
                PlayoutPolicyError::TimeoutNotAboveInterval { .. } => invalid(
                    "playout.slot_timeout_secs",
                    playout.slot_timeout_secs,
                    "must be longer than playout.heartbeat_interval_secs, or every slot expires \
                     between two heartbeats (2.5 intervals tolerates one lost heartbeat)",
                ),
            };
        }
        if !(1..=100_000).contains(&playout.history_cap) {
            return invalid(
                "playout.history_cap",
                playout.history_cap,
                "keep 1 to 100000 viewing-history records per user",
            );
        }
        if playout.history_bucket_secs == 0
            || playout.history_retention_secs < playout.history_bucket_secs
        {
            return invalid(
                "playout.history_retention_secs",
                playout.history_retention_secs,
                "must be at least playout.history_bucket_secs, which must be positive",
            );
        }
        if playout.history_retention_secs / playout.history_bucket_secs > 1000 {
            return invalid(
                "playout.history_bucket_secs",
                playout.history_bucket_secs,
                "use at least history_retention_secs / 1000: every read probes each live bucket",
            );
        }
        if self.storage.compaction_interval_secs == 0 {
            return invalid(
                "storage.compaction_interval_secs",
                0,
                "use at least 1 second",
            );
        }
        if self.storage.expiry_removes_per_sec > MAX_EXPIRY_REMOVES_PER_SEC {
            return invalid(
                "storage.expiry_removes_per_sec",
                self.storage.expiry_removes_per_sec,
                "use 0 (drop expired trees whole) to 10000000",
            );
        }
        if !(1..=10_000_000).contains(&self.storage.catalog_cache_items) {
            return invalid(
                "storage.catalog_cache_items",
                self.storage.catalog_cache_items,
                "use 1 to 10000000 (about 200 bytes each)",
            );
        }
        if !(8..=65_536).contains(&self.storage.cache_mib) {
            return invalid(
                "storage.cache_mib",
                self.storage.cache_mib,
                "use 8 to 65536",
            );
        }
        Ok(())
    }

    pub fn max_attempts(&self) -> u32 {
        self.ingest.max_attempts
    }

    /// True when the node starts its own nats-server child.
    pub fn embedded_broker(&self) -> bool {
        self.nats.url.is_empty()
    }

    pub fn passivate_after(&self) -> Duration {
        Duration::from_secs(self.actors.passivate_after_secs)
    }

    pub fn player_policy(&self) -> PlayerPolicy {
        PlayerPolicy {
            skip_limit: self.player.skip_limit,
            skip_window: Duration::from_secs(self.player.skip_window_secs),
            session_ttl: Duration::from_secs(self.player.session_ttl_secs),
            max_sessions: self.player.max_sessions_per_user,
        }
    }

    pub fn playout_policy(&self) -> PlayoutPolicy {
        PlayoutPolicy {
            default_concurrency_limit: self.playout.concurrency_limit,
            slot_timeout: Duration::from_secs(self.playout.slot_timeout_secs),
            heartbeat_interval: Duration::from_secs(self.playout.heartbeat_interval_secs),
            bookmark_every_beats: self.playout.bookmark_every_beats,
            bookmark_bucket: Duration::from_secs(self.playout.history_bucket_secs),
        }
    }
}

#[cfg(test)]
// figment::Jail::expect_with takes closures returning its own (large) error type.
#[allow(clippy::result_large_err)]
#[path = "config_tests.rs"]
mod tests;
