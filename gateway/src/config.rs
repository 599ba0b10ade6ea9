//! The gateway's configuration, layered like the node's: defaults, then a TOML file
//! (`--config` / `PLAYHEAD_GATEWAY_CONFIG`), then `PLAYHEAD_GATEWAY_<KEY>` environment
//! variables, then flags; unknown keys are refused in every layer, durations are written for
//! people (`2s`, `250ms`), and the result is validated before anything starts.
//!
//! The node reads its layers with figment; the gateway keeps to a plain TOML reader and one
//! typed [`Layer`] per source, so that it links none of the node's dependencies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use playhead_client::service::duration::{self, format_duration};
use playhead_client::service::nats_auth::{NatsAccess, NatsRole};
use playhead_client::service::telemetry::{LogConfig, LogFormat};
use serde::Deserialize;

use crate::import::{DEFAULT_MAX_CONCURRENT_UPLOADS, DEFAULT_MAX_IMPORT_BYTES, ImportLimits};
use crate::server::{GatewayConfig, GatewayTls};

/// Prefix of the gateway's environment variables.
pub const ENV_PREFIX: &str = "PLAYHEAD_GATEWAY_";
/// The environment variable naming the configuration file (not a setting itself).
pub const CONFIG_FILE_ENV: &str = "PLAYHEAD_GATEWAY_CONFIG";
/// The keys whose values are numbers.
const NUMBER_KEYS: [&str; 4] = [
    "max_concurrent_rpcs",
    "max_streams_per_connection",
    "max_import_bytes",
    "max_concurrent_uploads",
];
/// Longest wait a timeout may be set to.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_LISTEN: SocketAddr = loopback(50051);
const DEFAULT_METRICS_LISTEN: SocketAddr = loopback(9465);
const DEFAULT_CONSOLE_LISTEN: SocketAddr = loopback(9466);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_LOG_FILTER: &str = "info";
const DEFAULT_MAX_CONCURRENT_RPCS: usize = 512;
const MAX_CONCURRENT_RPCS: usize = 100_000;
const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;
const MAX_STREAMS_PER_CONNECTION: u32 = 10_000;
const DEFAULT_REFUSAL_PAUSE: Duration = Duration::from_secs(1);
const MAX_REFUSAL_PAUSE: Duration = Duration::from_secs(10);
/// Largest `max_import_bytes`: 1 GiB (a day's listings are a few MB).
const MAX_IMPORT_BYTES: u64 = 1024 * 1024 * 1024;
const MAX_CONCURRENT_UPLOADS: usize = 1024;

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        port,
    ))
}

/// An address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        text.parse().map(|address| Listen(Some(address))).map_err(|_| {
            format!("{text:?} is not an address to listen on (host:port, e.g. 127.0.0.1:9466, or off)")
        })
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One source of settings; a key it does not give is `None` and leaves the layers below it
/// in force (below them all, the defaults of [`load`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub nats_url: Option<String>,
    /// The gateway user's nkey seed file (mode 0600); see `deploy/nats/playhead-users.conf`.
    pub nats_nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) of a broker listening with TLS; when set, TLS is required.
    pub nats_ca_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub console_listen: Option<Listen>,
    #[serde(default, with = "duration::optional")]
    pub request_timeout: Option<Duration>,
    #[serde(default, with = "duration::optional")]
    pub heartbeat_timeout: Option<Duration>,
    pub log_format: Option<LogFormat>,
    pub log_filter: Option<String>,
    pub max_concurrent_rpcs: Option<usize>,
    pub max_streams_per_connection: Option<u32>,
    #[serde(default, with = "duration::optional")]
    pub refusal_pause: Option<Duration>,
    /// The token key ring file ([`crate::auth`]); required.
    pub auth_keys: Option<PathBuf>,
    /// The gRPC server's certificate chain (PEM); with `tls_key`, required beyond loopback.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM), readable by its owner (and group) only.
    pub tls_key: Option<PathBuf>,
    /// Largest batch an `UploadImport` may store, in bytes.
    pub max_import_bytes: Option<u64>,
    /// Uploads streaming into the object store at once.
    pub max_concurrent_uploads: Option<usize>,
}

impl Layer {
    /// This layer over `lower`: each key this layer gives wins.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            nats_url: self.nats_url.or(lower.nats_url),
            nats_nkey_file: self.nats_nkey_file.or(lower.nats_nkey_file),
            nats_ca_file: self.nats_ca_file.or(lower.nats_ca_file),
            listen: self.listen.or(lower.listen),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            console_listen: self.console_listen.or(lower.console_listen),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            heartbeat_timeout: self.heartbeat_timeout.or(lower.heartbeat_timeout),
            log_format: self.log_format.or(lower.log_format),
            log_filter: self.log_filter.or(lower.log_filter),
            max_concurrent_rpcs: self.max_concurrent_rpcs.or(lower.max_concurrent_rpcs),
            max_streams_per_connection: self
                .max_streams_per_connection
                .or(lower.max_streams_per_connection),
            refusal_pause: self.refusal_pause.or(lower.refusal_pause),
            auth_keys: self.auth_keys.or(lower.auth_keys),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            max_import_bytes: self.max_import_bytes.or(lower.max_import_bytes),
            max_concurrent_uploads: self.max_concurrent_uploads.or(lower.max_concurrent_uploads),
        }
    }

    /// The layer of a TOML file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    /// The layer of the `PLAYHEAD_GATEWAY_<KEY>` variables among `vars` (each value read as
    /// the same text a file would hold in quotes).
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut table = toml::Table::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_FILE_ENV {
                continue;
            }
            let key = key.to_ascii_lowercase();
            // The keys that are numbers take the variable as one (when it is one; otherwise
            // serde says what it expected); every other value is text, a duration included
            // (so `2000` is refused for want of its unit, not read as a number).
            let value = match value.parse::<i64>() {
                Ok(number) if NUMBER_KEYS.contains(&key.as_str()) => toml::Value::Integer(number),
                _ => toml::Value::String(value),
            };
            table.insert(key, value);
        }
        Layer::deserialize(table).map_err(|error| {
            // serde names the field; say which variable it came from.
            let message = error.to_string();
            let message = message.trim_end();
            format!("{message} (environment variables {ENV_PREFIX}<KEY>)")
        })
    }
}

/// Why the gateway cannot start with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("cannot read {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("invalid environment: {0}")]
    Env(String),
    #[error(
        "auth_keys is required: the file of token signing keys (make one with `playhead token keygen --out FILE`)"
    )]
    NoKeys,
    #[error(transparent)]
    Keys(#[from] crate::auth::AuthError),
    #[error(
        "listen = {0} reaches beyond loopback: give tls_cert and tls_key (PEM) so tokens never cross the network in clear, or listen on 127.0.0.1"
    )]
    PlaintextBeyondLoopback(SocketAddr),
    #[error("{0}")]
    Nats(playhead_client::service::nats_auth::NatsAuthError),
    #[error("tls_cert and tls_key go together: give both or neither")]
    HalfTls,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid configuration: {key} = {value}: {fix}")]
    Invalid {
        key: &'static str,
        value: String,
        fix: String,
    },
}

/// The resolved settings: the server's configuration and how to log.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway: GatewayConfig,
    pub log: LogConfig,
}

/// Defaults, then `file`, then the environment `vars`, then `flags`; validated.
pub fn load(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
    flags: Layer,
) -> Result<Settings, ConfigError> {
    let mut layers = Layer::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ConfigError::MissingFile(path.to_owned()),
            _ => ConfigError::File {
                path: path.to_owned(),
                detail: error.to_string(),
            },
        })?;
        let layer = Layer::from_toml(&text).map_err(|detail| ConfigError::File {
            path: path.to_owned(),
            detail,
        })?;
        layers = layer.over(layers);
    }
    layers = Layer::from_env(vars)
        .map_err(ConfigError::Env)?
        .over(layers);
    resolve(flags.over(layers))
}

fn resolve(layers: Layer) -> Result<Settings, ConfigError> {
    let nats_url = layers.nats_url.unwrap_or_else(|| DEFAULT_NATS_URL.into());
    if !(nats_url.starts_with("nats://") || nats_url.starts_with("tls://")) {
        return Err(ConfigError::Invalid {
            key: "nats_url",
            value: nats_url,
            fix: "use nats://host:port or tls://host:port".into(),
        });
    }
    let timeout = |key: &'static str, value: Option<Duration>| {
        let value = value.unwrap_or(DEFAULT_TIMEOUT);
        if value.is_zero() || value > MAX_TIMEOUT {
            return Err(ConfigError::Invalid {
                key,
                value: format_duration(value),
                fix: format!("give 1ms to {}", format_duration(MAX_TIMEOUT)),
            });
        }
        Ok(value)
    };
    let nats = NatsAccess::load(
        NatsRole::Gateway,
        layers.nats_nkey_file.as_deref(),
        layers.nats_ca_file.as_deref(),
    )
    .map_err(ConfigError::Nats)?;
    let keys = crate::auth::KeyRing::load(&layers.auth_keys.ok_or(ConfigError::NoKeys)?)?;
    let listen = layers.listen.unwrap_or(DEFAULT_LISTEN);
    let tls = match (layers.tls_cert, layers.tls_key) {
        (Some(cert), Some(key)) => Some(GatewayTls::load(&cert, &key)?),
        (None, None) if listen.ip().is_loopback() => None,
        (None, None) => return Err(ConfigError::PlaintextBeyondLoopback(listen)),
        _ => return Err(ConfigError::HalfTls),
    };
    let max_streams_per_connection = match layers
        .max_streams_per_connection
        .unwrap_or(DEFAULT_MAX_STREAMS_PER_CONNECTION)
    {
        limit @ 1..=MAX_STREAMS_PER_CONNECTION => limit,
        other => {
            return Err(ConfigError::Invalid {
                key: "max_streams_per_connection",
                value: other.to_string(),
                fix: format!("give 1 to {MAX_STREAMS_PER_CONNECTION}"),
            });
        }
    };
    let refusal_pause = match layers.refusal_pause.unwrap_or(DEFAULT_REFUSAL_PAUSE) {
        pause if pause <= MAX_REFUSAL_PAUSE => pause,
        other => {
            return Err(ConfigError::Invalid {
                key: "refusal_pause",
                value: format_duration(other),
                fix: format!("give 0s (none) to {}", format_duration(MAX_REFUSAL_PAUSE)),
            });
        }
    };
    let imports = ImportLimits {
        max_import_bytes: match layers.max_import_bytes.unwrap_or(DEFAULT_MAX_IMPORT_BYTES) {
            limit @ 1..=MAX_IMPORT_BYTES => limit,
            other => {
                return Err(ConfigError::Invalid {
                    key: "max_import_bytes",
                    value: other.to_string(),
                    fix: format!("give 1 to {MAX_IMPORT_BYTES} (bytes)"),
                });
            }
        },
        max_concurrent_uploads: match layers
            .max_concurrent_uploads
            .unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS)
        {
            limit @ 1..=MAX_CONCURRENT_UPLOADS => limit,
            other => {
                return Err(ConfigError::Invalid {
                    key: "max_concurrent_uploads",
                    value: other.to_string(),
                    fix: format!("give 1 to {MAX_CONCURRENT_UPLOADS}"),
                });
            }
        },
    };
    let gateway = GatewayConfig {
        imports,
        nats_url,
        nats,
        max_streams_per_connection,
        refusal_pause,
        keys: std::sync::Arc::new(keys),
        tls,
        listen,
        metrics_listen: layers.metrics_listen.unwrap_or(DEFAULT_METRICS_LISTEN),
        console_listen: layers
            .console_listen
            .unwrap_or(Listen(Some(DEFAULT_CONSOLE_LISTEN)))
            .0,
        request_timeout: timeout("request_timeout", layers.request_timeout)?,
        heartbeat_timeout: timeout("heartbeat_timeout", layers.heartbeat_timeout)?,
        max_concurrent_rpcs: match layers
            .max_concurrent_rpcs
            .unwrap_or(DEFAULT_MAX_CONCURRENT_RPCS)
        {
            limit @ 1..=MAX_CONCURRENT_RPCS => limit,
            other => {
                return Err(ConfigError::Invalid {
                    key: "max_concurrent_rpcs",
                    value: other.to_string(),
                    fix: format!("give 1 to {MAX_CONCURRENT_RPCS}"),
                });
            }
        },
    };
    let log = LogConfig {
        format: layers.log_format.unwrap_or(LogFormat::Text),
        filter: layers
            .log_filter
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.into()),
    };
    Ok(Settings { gateway, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// A key ring file, and the flags layer that names it.
    fn with_keys() -> (tempfile::TempDir, Layer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        crate::auth::KeyRing::generate("test")
            .create_file(&path)
            .unwrap();
        let layer = Layer {
            auth_keys: Some(path),
            ..Layer::default()
        };
        (dir, layer)
    }

    #[test]
    fn given_only_keys_the_defaults_serve_on_loopback() {
        let (_dir, keys) = with_keys();
        let settings = load(None, vars(&[]), keys).unwrap();
        let gateway = settings.gateway;
        assert_eq!(gateway.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(gateway.metrics_listen.to_string(), "127.0.0.1:9465");
        assert_eq!(
            gateway.console_listen.unwrap().to_string(),
            "127.0.0.1:9466"
        );
        assert_eq!(gateway.request_timeout, Duration::from_secs(2));
        assert_eq!(gateway.imports.max_import_bytes, 64 * 1024 * 1024);
        assert_eq!(gateway.imports.max_concurrent_uploads, 16);
        assert_eq!(settings.log.format, LogFormat::Text);
        assert_eq!(gateway.keys.key_ids().collect::<Vec<_>>(), ["test"]);
    }

    #[test]
    fn without_a_usable_key_ring_the_gateway_does_not_start() {
        let none = load(None, vars(&[]), Layer::default()).unwrap_err();
        assert!(matches!(none, ConfigError::NoKeys), "{none}");
        assert!(none.to_string().contains("playhead token keygen"), "{none}");
        let missing = load(
            None,
            vars(&[("PLAYHEAD_GATEWAY_AUTH_KEYS", "/no/such/keys")]),
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("/no/such/keys"), "{missing}");
    }

    #[test]
    fn each_layer_wins_over_the_ones_below() {
        let dir = std::env::temp_dir().join(format!("playhead-gw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(
            &file,
            "request_timeout = \"5s\"\nheartbeat_timeout = \"750ms\"\nlisten = \"127.0.0.1:1\"\n\
             log_format = \"json\"\n",
        )
        .unwrap();
        let env = vars(&[
            ("PLAYHEAD_GATEWAY_HEARTBEAT_TIMEOUT", "1m"),
            ("PLAYHEAD_GATEWAY_LISTEN", "127.0.0.1:2"),
            ("PLAYHEAD_GATEWAY_CONSOLE_LISTEN", "off"),
            ("PLAYHEAD_GATEWAY_MAX_CONCURRENT_RPCS", "1000"),
            ("PLAYHEAD_GATEWAY_REFUSAL_PAUSE", "250ms"),
            ("PLAYHEAD_GATEWAY_MAX_IMPORT_BYTES", "1048576"),
            ("PLAYHEAD_GATEWAY_CONFIG", "/ignored/as/a/setting"),
            ("PLAYHEAD_NATS_URL", "nats://not-the-gateways:1"),
        ]);
        let (_keys_dir, keys) = with_keys();
        let flags = Layer {
            listen: Some("127.0.0.1:3".parse().unwrap()),
            ..keys
        };
        let settings = load(Some(&file), env, flags).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let gateway = settings.gateway;
        assert_eq!(gateway.request_timeout, Duration::from_secs(5), "file");
        assert_eq!(
            gateway.heartbeat_timeout,
            Duration::from_secs(60),
            "env over file"
        );
        assert_eq!(gateway.listen.to_string(), "127.0.0.1:3", "flag over env");
        assert_eq!(gateway.console_listen, None, "off");
        assert_eq!(gateway.nats_url, "nats://127.0.0.1:4222", "default");
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(
            gateway.max_concurrent_rpcs, 1000,
            "a number from the environment"
        );
        assert_eq!(gateway.refusal_pause, Duration::from_millis(250));
        assert_eq!(gateway.imports.max_import_bytes, 1024 * 1024);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn beyond_loopback_the_gateway_serves_tls_only() {
        let (dir, keys) = with_keys();
        let wide = |more: Layer| {
            load(
                None,
                vars(&[("PLAYHEAD_GATEWAY_LISTEN", "0.0.0.0:50051")]),
                more.over(keys.clone()),
            )
        };
        let plaintext = wide(Layer::default()).unwrap_err();
        assert!(
            matches!(plaintext, ConfigError::PlaintextBeyondLoopback(_)),
            "{plaintext}"
        );
        // git keeps no modes: the key is copied to an owner-only file.
        let key = dir.path().join("gateway.key");
        crate::auth::KeyRing::generate("unused")
            .create_file(&key)
            .unwrap();
        std::fs::write(&key, std::fs::read(fixture("gateway.key")).unwrap()).unwrap();
        let tls = |cert: &str| Layer {
            tls_cert: Some(fixture(cert)),
            tls_key: Some(key.clone()),
            ..Layer::default()
        };
        let settings = wide(tls("gateway.pem")).unwrap();
        assert!(settings.gateway.tls.is_some());
        assert!(!format!("{settings:?}").contains("PRIVATE KEY"));
        let half = wide(Layer {
            tls_key: None,
            ..tls("gateway.pem")
        })
        .unwrap_err();
        assert!(matches!(half, ConfigError::HalfTls), "{half}");
        // A certificate that is not the key's.
        let mismatch = wide(tls("ca.pem")).unwrap_err().to_string();
        assert!(mismatch.starts_with("TLS: tls_cert"), "{mismatch}");
        // A key others may read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let open_key = dir.path().join("open.key");
            std::fs::copy(&key, &open_key).unwrap();
            std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let readable = wide(Layer {
                tls_key: Some(open_key),
                ..tls("gateway.pem")
            })
            .unwrap_err()
            .to_string();
            assert!(readable.contains("chmod 600"), "{readable}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_what_to_change() {
        let unknown = Layer::from_toml("request_timeout_ms = 2000\n").unwrap_err();
        assert!(unknown.contains("request_timeout_ms"), "{unknown}");
        let env = load(
            None,
            vars(&[("PLAYHEAD_GATEWAY_LISTN", "x")]),
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(env.contains("listn") && env.contains(ENV_PREFIX), "{env}");
        let unitless = load(
            None,
            vars(&[("PLAYHEAD_GATEWAY_REQUEST_TIMEOUT", "2000")]),
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(unitless.contains("needs its unit"), "{unitless}");
        let (_keys_dir, keys) = with_keys();
        let too_long = load(
            None,
            vars(&[("PLAYHEAD_GATEWAY_REQUEST_TIMEOUT", "2m")]),
            keys,
        )
        .unwrap_err()
        .to_string();
        assert!(
            too_long.contains("request_timeout = 2m: give 1ms to 1m"),
            "{too_long}"
        );
        let (_keys_dir, keys) = with_keys();
        for (key, value) in [
            ("PLAYHEAD_GATEWAY_MAX_IMPORT_BYTES", "0"),
            ("PLAYHEAD_GATEWAY_MAX_IMPORT_BYTES", "1073741825"),
            ("PLAYHEAD_GATEWAY_MAX_CONCURRENT_UPLOADS", "0"),
        ] {
            let refused = load(None, vars(&[(key, value)]), keys.clone())
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains(&format!("= {value}: give 1 to")),
                "{refused}"
            );
        }
        let size_with_unit = load(
            None,
            vars(&[("PLAYHEAD_GATEWAY_MAX_IMPORT_BYTES", "64MiB")]),
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            size_with_unit.contains("max_import_bytes"),
            "{size_with_unit}"
        );
        let missing = load(
            Some(Path::new("/no/such/gateway.toml")),
            vars(&[]),
            Layer::default(),
        )
        .unwrap_err();
        assert!(matches!(missing, ConfigError::MissingFile(_)));
    }
}
