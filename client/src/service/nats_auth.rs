//! Who connects to NATS, and as what: one broker user per role, each with an nkey and the subject
//! permissions of `deploy/nats/playhead-users.conf`.
//!
//! A role's credentials are an nkey seed in a file of its own (`{role}.nk`, mode 0600): the seed
//! never leaves the file but to sign the broker's challenge, and is never logged or put in a URL.
//! The broker knows only the public keys, from the environment variables
//! `PLAYHEAD_NKEY_{ROLE}` that the users file reads. Each role receives replies under its own
//! prefix `_INBOX.{role}.`, the only part of `_INBOX.>` its permissions let it subscribe to.

use std::fmt;
use std::path::{Path, PathBuf};

use super::secret_file::{read_private_file, write_private_file};

/// The broker users of a deployment; `deploy/nats/playhead-users.conf` gives each its permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatsRole {
    /// playhead-node: JetStream administration of its streams and consumers, events, dead
    /// letters, KV and object store, replies to any requester, the query service.
    Node,
    /// playhead-gateway: publishes the inboxes, requests queries, reads the KV buckets and the
    /// streams' state for the console.
    Gateway,
    /// Stations and players: the station inbox and the player and heartbeat messages of the user
    /// inbox, and import requests.
    Publisher,
    /// Entitlements and the content catalog.
    Backoffice,
    /// Read-only: JetStream and service state (stream and consumer info, `$SRV` pings).
    Monitor,
    /// Everything: operators' maintenance (the `nats` CLI) and tests' observers.
    Admin,
}

impl NatsRole {
    pub const ALL: &'static [NatsRole] = &[
        NatsRole::Node,
        NatsRole::Gateway,
        NatsRole::Publisher,
        NatsRole::Backoffice,
        NatsRole::Monitor,
        NatsRole::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NatsRole::Node => "node",
            NatsRole::Gateway => "gateway",
            NatsRole::Publisher => "publisher",
            NatsRole::Backoffice => "backoffice",
            NatsRole::Monitor => "monitor",
            NatsRole::Admin => "admin",
        }
    }

    /// The seed file of this role in a credentials directory.
    pub fn seed_file(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.nk", self.name()))
    }

    /// The environment variable the broker's users file reads this role's public key from.
    pub fn public_key_variable(self) -> String {
        format!("PLAYHEAD_NKEY_{}", self.name().to_ascii_uppercase())
    }

    /// Where this role's replies arrive: `_INBOX.{role}`, under the reply prefix.
    pub fn inbox_prefix(self) -> String {
        format!("{}.{}", playhead_proto::subjects::REPLY_PREFIX, self.name())
    }
}

impl fmt::Display for NatsRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsAuthError {
    #[error("cannot read the NATS credentials {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "{path} is not an nkey user seed (one line starting with SU, as `playhead nats keygen` \
         writes)"
    )]
    NotASeed { path: PathBuf },
    #[error("cannot write the NATS credentials {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One role's nkey, read from its seed file. `Debug` shows the public key only.
#[derive(Clone)]
pub struct NatsCredentials {
    seed: String,
    public_key: String,
    inbox_prefix: String,
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCredentials")
            .field("public_key", &self.public_key)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsCredentials {
    /// Reads `path` (refused if others may read it) for a client of `role`.
    pub fn load(path: &Path, role: NatsRole) -> Result<Self, NatsAuthError> {
        let text = read_private_file(path).map_err(|reason| NatsAuthError::Read {
            path: path.to_owned(),
            reason,
        })?;
        let seed = text.trim();
        let not_a_seed = || NatsAuthError::NotASeed {
            path: path.to_owned(),
        };
        if !seed.starts_with("SU") {
            return Err(not_a_seed());
        }
        let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| not_a_seed())?;
        Ok(Self {
            seed: seed.to_owned(),
            public_key: pair.public_key(),
            inbox_prefix: role.inbox_prefix(),
        })
    }

    /// The key the broker's users file names (`U…`).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn inbox_prefix(&self) -> &str {
        &self.inbox_prefix
    }

    /// `options` signing in with this nkey and taking replies under the role's prefix.
    pub fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        options
            .nkey(self.seed.clone())
            .custom_inbox_prefix(&self.inbox_prefix)
    }
}

/// How one client reaches the broker: optionally signed in with a role's nkey, optionally over
/// TLS. Loaded (and so checked) at start.
#[derive(Debug, Clone, Default)]
pub struct NatsAccess {
    pub credentials: Option<NatsCredentials>,
    /// CA certificate (PEM) of a broker that listens with TLS; when set, TLS is required.
    pub ca_file: Option<PathBuf>,
}

impl NatsAccess {
    /// Reads `nkey_file` for a client of `role`, and checks that `ca_file` exists.
    pub fn load(
        role: NatsRole,
        nkey_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Self, NatsAuthError> {
        let credentials = nkey_file
            .map(|path| NatsCredentials::load(path, role))
            .transpose()?;
        if let Some(ca) = ca_file
            && let Err(error) = std::fs::metadata(ca)
        {
            return Err(NatsAuthError::Read {
                path: ca.to_owned(),
                reason: error.to_string(),
            });
        }
        Ok(Self {
            credentials,
            ca_file: ca_file.map(Path::to_owned),
        })
    }

    /// Connection options signing in with the nkey (replies under the role's prefix) and
    /// requiring TLS with the CA, as given.
    pub fn options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(credentials) = &self.credentials {
            options = credentials.apply(options);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options
    }
}

/// Connects to `url` as `name`, retrying while the broker cannot be reached. What waiting does
/// not cure (a refused sign-in, a permission violation) is logged as an error naming the fix.
pub async fn connect(
    url: &str,
    name: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let role = name.to_owned();
    options
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .event_callback(move |event| {
            let role = role.clone();
            async move {
                // A refused sign-in arrives as a client error while (re)connecting, a refused
                // subject as a server error.
                let refused = match event {
                    async_nats::Event::ServerError(error) => error.to_string(),
                    async_nats::Event::ClientError(error)
                        if error.to_string().contains("authorization violation") =>
                    {
                        error.to_string()
                    }
                    _ => return,
                };
                tracing::error!(
                    client = %role,
                    error = %refused,
                    "the NATS server refused this client: check its nkey file (the seed of the \
                     broker user of its role) and the broker's users and permissions \
                     (deploy/nats/playhead-users.conf)"
                );
            }
        })
        .connect(url)
        .await
}

/// Makes a seed for every role that has none in `dir` (created with mode 0700; each seed file is
/// written once, mode 0600, and never replaced) and returns every role's public key.
pub fn ensure_credentials(dir: &Path) -> Result<Vec<(NatsRole, String)>, NatsAuthError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| NatsAuthError::Write { path, source }
    };
    create_private_dir(dir).map_err(write_error(dir))?;
    let mut keys = Vec::with_capacity(NatsRole::ALL.len());
    for role in NatsRole::ALL.iter().copied() {
        let path = role.seed_file(dir);
        if !path.exists() {
            let pair = nkeys::KeyPair::new_user();
            let seed = pair.seed().expect("a new key pair has its seed");
            write_private_file(&path, &format!("{seed}\n")).map_err(write_error(&path))?;
        }
        keys.push((role, NatsCredentials::load(&path, role)?.public_key));
    }
    Ok(keys)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let first = ensure_credentials(&credentials).unwrap();
        assert_eq!(first.len(), NatsRole::ALL.len());
        assert!(first.iter().all(|(_, key)| key.starts_with('U')));
        // Again: the same keys, nothing replaced.
        assert_eq!(ensure_credentials(&credentials).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&credentials), 0o700);
            assert_eq!(mode(&NatsRole::Node.seed_file(&credentials)), 0o600);
        }
        let node =
            NatsCredentials::load(&NatsRole::Node.seed_file(&credentials), NatsRole::Node).unwrap();
        assert_eq!(node.public_key(), first[0].1);
        assert_eq!(node.inbox_prefix(), "_INBOX.node");
        let shown = format!("{node:?}");
        assert!(shown.contains(&first[0].1));
        assert!(
            !shown.contains("SU"),
            "Debug must not show the seed: {shown}"
        );
    }

    #[test]
    fn refuses_readable_files_and_what_is_not_a_user_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.nk");
        std::fs::write(&path, "not a seed\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = NatsCredentials::load(&path, NatsRole::Node).unwrap_err();
            assert!(error.to_string().contains("chmod 600"), "{error}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let error = NatsCredentials::load(&path, NatsRole::Node).unwrap_err();
        assert!(matches!(error, NatsAuthError::NotASeed { .. }), "{error}");
        // An account seed (SA…) is a valid nkey but not a user's.
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::remove_file(&path).unwrap();
        write_private_file(&path, &account).unwrap();
        let error = NatsCredentials::load(&path, NatsRole::Node).unwrap_err();
        assert!(matches!(error, NatsAuthError::NotASeed { .. }), "{error}");
    }
}
