//! Who connects to NATS, and as what: one broker user per role, each with an nkey and the subject
//! permissions of `deploy/nats/playhead-users.conf`.
//!
//! A role's credentials are an nkey seed in a file of its own (`{role}.nk`, mode 0600): the seed
//! never leaves the file but to sign the broker's challenge, and is never logged or put in a URL.
//! The broker knows only the public keys, from the environment variables
//! `PLAYHEAD_NKEY_{ROLE}` that the users file reads. Each role receives replies under its own
//! prefix `_INBOX.{role}.`, the only part of `_INBOX.>` its permissions let it subscribe to.

use std::fmt;
use std::fmt::Write as _;
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
    /// Derived once: signing with a pair made from the seed each time cost a key derivation per
    /// answered command.
    pair: std::sync::Arc<nkeys::KeyPair>,
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
            pair: std::sync::Arc::new(pair),
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

    /// The `Playhead-Reply-Signature` of a command published to `subject` whose decision is to
    /// go to `reply` (under this role's prefix): see [`RequesterKeys`].
    pub fn sign_reply(&self, subject: &str, reply: &str) -> String {
        let signature = self
            .pair
            .sign(signed_reply_text(subject, reply).as_bytes())
            .expect("a seed signs");
        let mut hex = String::with_capacity(signature.len() * 2);
        for byte in signature {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    /// `options` signing in with this nkey and taking replies under the role's prefix.
    pub fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        options
            .nkey(self.seed.clone())
            .custom_inbox_prefix(&self.inbox_prefix)
    }
}

fn signed_reply_text(subject: &str, reply: &str) -> String {
    format!("{subject}\n{reply}")
}

/// The public keys of the users that may ask for replies, by role: a reply subject
/// `_INBOX.{role}.…` is used only with that role's signature of it, so that no client can aim a
/// decision into another client's replies. (The broker cannot tell the node who published a
/// stored message: it strips even its own client-info header when a stream stores one.)
#[derive(Clone, Default)]
pub struct RequesterKeys(Vec<RequesterKey>);

/// One role's public key, parsed once (not for every reply it signs).
#[derive(Clone)]
struct RequesterKey {
    role: String,
    public_key: String,
    pair: std::sync::Arc<nkeys::KeyPair>,
}

impl RequesterKey {
    fn parse(role: String, public_key: String) -> Option<Self> {
        let pair = nkeys::KeyPair::from_public_key(&public_key).ok()?;
        public_key.starts_with('U').then(|| RequesterKey {
            role,
            public_key,
            pair: std::sync::Arc::new(pair),
        })
    }
}

impl fmt::Debug for RequesterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|key| (&key.role, &key.public_key)))
            .finish()
    }
}

/// Why a reply subject is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyRefusal {
    #[error("reply subject {0:?} names no user (expected _INBOX.<role>.…)")]
    NoRole(String),
    #[error("no user {0:?} may ask for replies")]
    UnknownRole(String),
    #[error("the reply subject carries no Playhead-Reply-Signature")]
    Unsigned,
    #[error(
        "the Playhead-Reply-Signature is not {0}'s signature of this subject and reply subject"
    )]
    BadSignature(String),
}

impl RequesterKeys {
    /// From `(role, public key)` pairs, as [`ensure_credentials`] returns them.
    pub fn new(keys: impl IntoIterator<Item = (NatsRole, String)>) -> Self {
        Self(
            keys.into_iter()
                .filter_map(|(role, key)| RequesterKey::parse(role.name().to_owned(), key))
                .collect(),
        )
    }

    /// From a file of `PLAYHEAD_NKEY_{ROLE}=U…` lines, as `playhead nats keygen` prints them
    /// (other lines and comments are skipped).
    pub fn load(path: &Path) -> Result<Self, NatsAuthError> {
        let read_error = |reason: String| NatsAuthError::Read {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| read_error(error.to_string()))?;
        let mut keys = Vec::new();
        for line in text.lines() {
            let Some((name, key)) = line.trim().split_once('=') else {
                continue;
            };
            let Some(role) = name.trim().strip_prefix("PLAYHEAD_NKEY_") else {
                continue;
            };
            let key = RequesterKey::parse(role.to_ascii_lowercase(), key.trim().to_owned())
                .ok_or_else(|| read_error(format!("{name} is not a user's public key")))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(read_error("no PLAYHEAD_NKEY_* line".into()));
        }
        Ok(Self(keys))
    }

    /// Checks that `signature` is the signature of `reply` for a command published to
    /// `subject`, by the user whose prefix `reply` is under.
    pub fn verify(
        &self,
        subject: &str,
        reply: &str,
        signature: Option<&str>,
    ) -> Result<(), ReplyRefusal> {
        let role = reply
            .split('.')
            .nth(1)
            .filter(|_| reply.split('.').count() > 2)
            .ok_or_else(|| ReplyRefusal::NoRole(reply.to_owned()))?;
        let key = self
            .0
            .iter()
            .find(|key| key.role == role)
            .ok_or_else(|| ReplyRefusal::UnknownRole(role.to_owned()))?;
        let signature = signature.ok_or(ReplyRefusal::Unsigned)?;
        let bad = || ReplyRefusal::BadSignature(role.to_owned());
        if signature.len() != 128 || !signature.is_ascii() {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..signature.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&signature[at..at + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        key.pair
            .verify(signed_reply_text(subject, reply).as_bytes(), &bytes)
            .map_err(|_| bad())
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
        let seed = std::fs::read_to_string(NatsRole::Node.seed_file(&credentials)).unwrap();
        assert!(
            !shown.contains(seed.trim()),
            "Debug must not show the seed: {shown}"
        );
    }

    #[test]
    fn only_the_user_a_reply_prefix_names_may_sign_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = RequesterKeys::new(ensure_credentials(dir.path()).unwrap());
        let publisher = NatsCredentials::load(
            &NatsRole::Publisher.seed_file(dir.path()),
            NatsRole::Publisher,
        )
        .unwrap();
        let gateway =
            NatsCredentials::load(&NatsRole::Gateway.seed_file(dir.path()), NatsRole::Gateway)
                .unwrap();
        let subject = "playhead.user.ann.player";
        let own = "_INBOX.publisher.abc.1";
        let signed = publisher.sign_reply(subject, own);
        assert_eq!(keys.verify(subject, own, Some(&signed)), Ok(()));
        // Another client's prefix, signed by the publisher: refused.
        let theirs = "_INBOX.gateway.abc.1";
        assert_eq!(
            keys.verify(
                subject,
                theirs,
                Some(&publisher.sign_reply(subject, theirs))
            ),
            Err(ReplyRefusal::BadSignature("gateway".into()))
        );
        assert_eq!(
            keys.verify(subject, theirs, Some(&gateway.sign_reply(subject, theirs))),
            Ok(())
        );
        // The signature binds the subject and the reply subject.
        assert!(
            keys.verify("playhead.user.bob.player", own, Some(&signed))
                .is_err()
        );
        assert!(
            keys.verify(subject, "_INBOX.publisher.abc.2", Some(&signed))
                .is_err()
        );
        assert_eq!(keys.verify(subject, own, None), Err(ReplyRefusal::Unsigned));
        assert_eq!(
            keys.verify(subject, "_INBOX.nobody.x", Some(&signed)),
            Err(ReplyRefusal::UnknownRole("nobody".into()))
        );
        assert!(matches!(
            keys.verify(subject, "_INBOX.publisher", Some(&signed)),
            Err(ReplyRefusal::NoRole(_))
        ));
        assert!(keys.verify(subject, own, Some("zz")).is_err());
        assert!(keys.verify(subject, own, Some(&"é".repeat(64))).is_err());
        // The keygen lines read back as the same keys.
        let lines: String = ensure_credentials(dir.path())
            .unwrap()
            .into_iter()
            .map(|(role, key)| format!("{}={key}\n", role.public_key_variable()))
            .collect();
        let file = dir.path().join("keys.env");
        std::fs::write(&file, format!("# public keys\n{lines}")).unwrap();
        let loaded = RequesterKeys::load(&file).unwrap();
        assert_eq!(loaded.verify(subject, own, Some(&signed)), Ok(()));
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
