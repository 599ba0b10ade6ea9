//! Who may call what: signed bearer tokens and the roles they carry.
//!
//! A token is a JWT (RFC 7519) signed with HS256 under a key of the gateway's key ring, named by
//! the header's `kid`, so keys rotate: add the new key to the ring, mint with it, remove the old
//! one once its tokens have expired. Its claims are `sub` (the user id of a listener, the name
//! of anyone else), `role`, `stations` (a station role's stations), `iat` and `exp` (seconds
//! since the epoch).
//!
//! Verification is strict and small: the header must say `HS256` and name a known key, the
//! signature is checked (in constant time) before the claims are even parsed, the claims must be
//! of their exact types, and the token must not have expired (30 s of clock skew allowed). Any
//! failure is one [`AuthError`], answered UNAUTHENTICATED; a valid token whose role or subject
//! does not cover the request is answered PERMISSION_DENIED ([`Principal::allows`]).
//!
//! Roles:
//!
//! | role | may |
//! |---|---|
//! | `listener` | Player and Playout calls for its own `user_id`; station reads; shows by artist, by station, and by its own `user_id` |
//! | `station` | `ReportSong` for its `stations`; station reads; shows by artist or station |
//! | `backoffice` | read any user's playouts and entitlements; upload, start and read imports; station reads; shows |
//! | `operator` | read everything (imports and shows included) |
//! | `admin` | everything |
//!
//! The key ring is a text file: one key per line, `KID BASE64-SECRET` (secrets of at least 32
//! bytes), `#` comments; the first key signs what `playhead token mint` makes. It may be read by
//! its owner (and group), never by others.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use playhead_client::service::secret_file::{read_private_file, write_private_file};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Shortest secret accepted (the HMAC-SHA-256 block of security).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest `authorization` value read: a token is a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
/// Longest key id.
const MAX_KID_BYTES: usize = 64;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Listener,
    Station,
    Backoffice,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Listener,
        Role::Station,
        Role::Backoffice,
        Role::Operator,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Listener => "listener",
            Role::Station => "station",
            Role::Backoffice => "backoffice",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// `a listener`, `an operator`: the role as a message names it.
    pub fn with_article(self) -> &'static str {
        match self {
            Role::Listener => "a listener",
            Role::Station => "a station",
            Role::Backoffice => "a backoffice",
            Role::Operator => "an operator",
            Role::Admin => "an admin",
        }
    }

    pub fn parse(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|role| role.name()).collect();
                format!("unknown role {name:?}; one of {}", names.join(", "))
            })
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations: Vec<String>,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    kid: String,
}

/// Why a request carries no usable token (answered UNAUTHENTICATED), or why a key ring cannot
/// be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send `authorization: Bearer <token>` (`playhead token mint` makes one)")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("the token is signed with key {0:?}, which this gateway does not have")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired at {0} (seconds since the epoch)")]
    Expired(u64),
    #[error("the token is issued in the future ({0}); check the clocks")]
    IssuedInFuture(u64),
    #[error("the token's claims are unusable: {0}")]
    BadClaims(String),
    #[error("key ring {path}: {detail}")]
    KeyRing { path: String, detail: String },
}

/// The signing keys, by id; the first one signs.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for KeyRing {
    /// Names the keys, never their secrets.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        formatter
            .debug_struct("KeyRing")
            .field("kids", &ids)
            .finish()
    }
}

impl KeyRing {
    /// Reads a key ring file, refusing one that others may read.
    pub fn load(path: &Path) -> Result<KeyRing, AuthError> {
        let error = |detail: String| AuthError::KeyRing {
            path: path.display().to_string(),
            detail,
        };
        let text = read_private_file(path).map_err(error)?;
        KeyRing::parse(&text).map_err(error)
    }

    /// Parses `KID BASE64-SECRET` lines.
    pub fn parse(text: &str) -> Result<KeyRing, String> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = number + 1;
            let mut fields = line.split_whitespace();
            let (Some(kid), Some(secret), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("line {number}: expected `KID BASE64-SECRET`"));
            };
            if kid.len() > MAX_KID_BYTES || !kid.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {number}: a key id is 1 to {MAX_KID_BYTES} printable characters"
                ));
            }
            let secret = STANDARD
                .decode(secret)
                .map_err(|_| format!("line {number}: the secret is not base64"))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "line {number}: the secret of {kid:?} has {} bytes; at least {MIN_SECRET_BYTES}",
                    secret.len()
                ));
            }
            if keys.iter().any(|(known, _)| known == kid) {
                return Err(format!("line {number}: key id {kid:?} is given twice"));
            }
            keys.push((kid.to_owned(), secret));
        }
        if keys.is_empty() {
            return Err("no keys (lines of `KID BASE64-SECRET`)".into());
        }
        Ok(KeyRing { keys })
    }

    /// A ring of one new random key.
    pub fn generate(kid: &str) -> KeyRing {
        let mut secret = vec![0u8; MIN_SECRET_BYTES];
        rand::fill(secret.as_mut_slice());
        KeyRing {
            keys: vec![(kid.to_owned(), secret)],
        }
    }

    /// The ring as its file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::from(
            "# playhead token keys: KID BASE64-SECRET; the first signs. Keep this file private.\n",
        );
        for (kid, secret) in &self.keys {
            text.push_str(&format!("{kid} {}\n", STANDARD.encode(secret)));
        }
        text
    }

    /// Writes the ring to a new file only its owner may read.
    pub fn create_file(&self, path: &Path) -> std::io::Result<()> {
        write_private_file(path, &self.to_text())
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    fn mac(secret: &[u8]) -> HmacSha256 {
        HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length")
    }

    /// A token for `claims`, signed with the first key.
    pub fn mint(&self, claims: &Claims) -> String {
        let (kid, secret) = &self.keys[0];
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
            kid: kid.clone(),
        };
        let signed = format!("{}.{}", encode_part(&header), encode_part(claims));
        let mut mac = KeyRing::mac(secret);
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    /// The claims of a token signed by one of the ring's keys and valid at `now` (seconds since
    /// the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not three dot-separated parts"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(AuthError::Malformed("the header is not base64url JSON"))?;
        if header.alg != "HS256" {
            return Err(AuthError::Malformed("the algorithm is not HS256"));
        }
        let secret = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .map(|(_, secret)| secret)
            .ok_or_else(|| AuthError::UnknownKey(header.kid.chars().take(64).collect()))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed("the signature is not base64url"))?;
        let signed_len = token.len() - signature_len(token);
        let mut mac = KeyRing::mac(secret);
        mac.update(&token.as_bytes()[..signed_len]);
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| AuthError::Malformed("the claims are not base64url"))
            .and_then(|json| {
                serde_json::from_slice(&json)
                    .map_err(|error| AuthError::BadClaims(error.to_string()))
            })?;
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired(claims.exp));
        }
        if claims.iat > now.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::IssuedInFuture(claims.iat));
        }
        Ok(claims)
    }

    /// The principal of an `authorization: Bearer` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed(
                "the authorization header is not `Bearer <token>`",
            ))?;
        Principal::try_from(self.verify(token.trim(), now)?)
    }
}

/// Bytes of the signature part and its dot (the signed part is what comes before).
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// A token part: base64url of its JSON.
fn encode_part<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("token parts serialize"))
}

/// The caller of a request, from its verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub stations: BTreeSet<String>,
}

impl TryFrom<Claims> for Principal {
    type Error = AuthError;

    fn try_from(claims: Claims) -> Result<Principal, AuthError> {
        let valid_id = |id: &str| playhead_proto::ids::UserId::parse(id).is_ok();
        if !valid_id(&claims.sub) {
            return Err(AuthError::BadClaims(
                "sub must be an id ([A-Za-z0-9_-], 1 to 128)".into(),
            ));
        }
        if let Some(bad) = claims.stations.iter().find(|station| !valid_id(station)) {
            return Err(AuthError::BadClaims(format!(
                "stations holds {:?}, which is not a station id",
                bad.chars().take(64).collect::<String>()
            )));
        }
        Ok(Principal {
            subject: claims.sub,
            role: claims.role,
            stations: claims.stations.into_iter().collect(),
        })
    }
}

/// What a request does, for [`Principal::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Commands for a user: Player commands, heartbeats.
    ActFor(&'a str),
    /// Reads of a user's sessions, playouts, history, entitlements.
    ReadUser(&'a str),
    /// Report a station's song.
    Report(&'a str),
    /// Now-playing and play history.
    ReadStations,
    /// Upcoming shows of an artist or of a station's artists (a listener's: [`Access::ReadUser`]).
    ReadShows,
    /// Store an import batch and request its import (`UploadImport`, `StartImport`).
    RunImports,
    /// An import's status (`GetImport`, `WatchImport`).
    ReadImports,
}

/// Checks the caller of `request` (the principal the RPC layer found in its token) for `access`;
/// every handler calls it before it publishes or reads anything.
pub fn authorize<T>(
    request: &tonic::Request<T>,
    access: Access<'_>,
) -> Result<(), crate::error::GatewayError> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or(AuthError::Missing)?;
    principal.allows(access)?;
    Ok(())
}

/// A client interceptor that sends a bearer token with every request.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::AsciiMetadataValue);

/// A gRPC channel that sends a bearer token.
pub type AuthedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

impl Bearer {
    pub fn new(token: &str) -> Result<Bearer, AuthError> {
        format!("Bearer {}", token.trim())
            .parse()
            .map(Bearer)
            .map_err(|_| AuthError::Malformed("a token is printable ASCII"))
    }

    /// `channel` sending this token.
    pub fn channel(&self, channel: tonic::transport::Channel) -> AuthedChannel {
        tonic::service::interceptor::InterceptedService::new(channel, self.clone())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Seconds since the epoch, the clock tokens are checked against.
pub fn now_secs() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// A valid token whose role or subject does not cover the request (PERMISSION_DENIED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Principal {
    pub fn allows(&self, access: Access<'_>) -> Result<(), Denied> {
        let allowed = match (self.role, access) {
            (Role::Admin, _) | (_, Access::ReadStations | Access::ReadShows) => true,
            (Role::Listener, Access::ActFor(user) | Access::ReadUser(user)) => user == self.subject,
            (Role::Backoffice | Role::Operator, Access::ReadUser(_) | Access::ReadImports) => true,
            (Role::Backoffice, Access::RunImports) => true,
            (Role::Station, Access::Report(station)) => self.stations.contains(station),
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        let role = self.role.with_article();
        let subject = &self.subject;
        Err(Denied(match access {
            Access::ActFor(user) | Access::ReadUser(user) if self.role == Role::Listener => {
                format!("a listener token acts for its own user only ({subject}), not {user:?}")
            }
            Access::ActFor(_) => format!("{role} token cannot act for a listener"),
            Access::ReadUser(_) => format!("{role} token cannot read listeners' state"),
            Access::Report(station) if self.role == Role::Station => {
                format!("this station token does not cover station {station:?}")
            }
            Access::Report(_) => format!("{role} token cannot report songs"),
            Access::RunImports => format!("{role} token cannot upload or start imports"),
            Access::ReadImports => format!("{role} token cannot read imports"),
            Access::ReadStations | Access::ReadShows => {
                unreachable!("every role reads stations and shows")
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn claims(role: Role, sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            role,
            stations: Vec::new(),
            iat: NOW,
            exp: NOW + 3600,
        }
    }

    fn ring(kid: &str, byte: u8) -> KeyRing {
        KeyRing {
            keys: vec![(kid.into(), vec![byte; MIN_SECRET_BYTES])],
        }
    }

    #[test]
    fn a_minted_token_verifies_and_gives_its_claims_back() {
        let ring = ring("k1", 7);
        let mut claims = claims(Role::Station, "poller");
        claims.stations = vec!["radio-1".into()];
        let token = ring.mint(&claims);
        assert_eq!(ring.verify(&token, NOW), Ok(claims));
    }

    #[test]
    fn tampered_foreign_expired_and_malformed_tokens_are_refused() {
        let ring = ring("k1", 7);
        let token = ring.mint(&claims(Role::Listener, "ann"));
        // Another secret under the same key id.
        assert_eq!(
            super::tests::ring("k1", 8).verify(&token, NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            super::tests::ring("k2", 7).verify(&token, NOW),
            Err(AuthError::UnknownKey("k1".into()))
        );
        // The claims swapped for an admin's, the signature kept.
        let admin = ring.mint(&claims(Role::Admin, "ann"));
        let forged = {
            let parts: Vec<_> = token.split('.').collect();
            let admin_claims = admin.split('.').nth(1).unwrap();
            format!("{}.{}.{}", parts[0], admin_claims, parts[2])
        };
        assert_eq!(ring.verify(&forged, NOW), Err(AuthError::BadSignature));
        // The algorithm downgraded to none, no signature.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
        let unsigned = format!("{none_header}.{}.", token.split('.').nth(1).unwrap());
        assert!(matches!(
            ring.verify(&unsigned, NOW),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            ring.verify(&token, NOW + 3600 + LEEWAY_SECS + 1),
            Err(AuthError::Expired(NOW + 3600))
        );
        assert!(ring.verify(&token, NOW + 3600 + LEEWAY_SECS).is_ok());
        assert_eq!(
            ring.verify(&token, NOW - LEEWAY_SECS - 1),
            Err(AuthError::IssuedInFuture(NOW))
        );
        for malformed in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(
                matches!(ring.verify(malformed, NOW), Err(AuthError::Malformed(_))),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused_not_ignored() {
        let ring = ring("k1", 7);
        // A correctly signed token whose exp is a string.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1"}"#);
        let body =
            URL_SAFE_NO_PAD.encode(br#"{"sub":"ann","role":"admin","iat":1,"exp":"99999999999"}"#);
        let signed = format!("{header}.{body}");
        let mut mac = KeyRing::mac(&[7; MIN_SECRET_BYTES]);
        mac.update(signed.as_bytes());
        let token = format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert!(matches!(
            ring.verify(&token, NOW),
            Err(AuthError::BadClaims(_))
        ));
    }

    #[test]
    fn rotation_accepts_every_key_of_the_ring_and_signs_with_the_first() {
        let old = ring("2026-01", 1);
        let text = format!(
            "# rotated\n2026-02 {}\n\n{}",
            STANDARD.encode([2; MIN_SECRET_BYTES]),
            old.to_text()
        );
        let rotated = KeyRing::parse(&text).unwrap();
        assert_eq!(
            rotated.key_ids().collect::<Vec<_>>(),
            ["2026-02", "2026-01"]
        );
        let before = old.mint(&claims(Role::Operator, "ops"));
        assert!(rotated.verify(&before, NOW).is_ok());
        let after = rotated.mint(&claims(Role::Operator, "ops"));
        assert_eq!(
            old.verify(&after, NOW),
            Err(AuthError::UnknownKey("2026-02".into()))
        );
    }

    #[test]
    fn key_rings_with_short_duplicate_or_garbled_keys_are_refused() {
        let short = format!("k {}", STANDARD.encode([1; 16]));
        let good = STANDARD.encode([1; MIN_SECRET_BYTES]);
        for (text, expected) in [
            ("", "no keys"),
            (short.as_str(), "at least 32"),
            ("k not-base64!", "not base64"),
            ("k", "expected `KID BASE64-SECRET`"),
        ] {
            let error = KeyRing::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let twice = format!("k {good}\nk {good}");
        assert!(KeyRing::parse(&twice).unwrap_err().contains("twice"));
        let generated = KeyRing::generate("dev");
        assert_eq!(
            KeyRing::parse(&generated.to_text()).unwrap().keys,
            generated.keys
        );
        assert!(!format!("{generated:?}").contains(&STANDARD.encode(&generated.keys[0].1)));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_ring_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        KeyRing::generate("dev").create_file(&path).unwrap();
        assert!(KeyRing::load(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = KeyRing::load(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn the_bearer_header_is_required_and_read() {
        let ring = ring("k1", 7);
        let token = ring.mint(&claims(Role::Listener, "ann"));
        assert_eq!(ring.authenticate(None, NOW), Err(AuthError::Missing));
        assert!(matches!(
            ring.authenticate(Some(&token), NOW),
            Err(AuthError::Malformed(_))
        ));
        let principal = ring
            .authenticate(Some(&format!("Bearer {token}")), NOW)
            .unwrap();
        assert_eq!(
            (principal.subject.as_str(), principal.role),
            ("ann", Role::Listener)
        );
        let mut bad = claims(Role::Listener, "a.b");
        bad.exp = NOW + 1;
        assert!(matches!(
            ring.authenticate(Some(&format!("Bearer {}", ring.mint(&bad))), NOW),
            Err(AuthError::BadClaims(_))
        ));
    }

    #[test]
    fn each_role_reaches_what_its_table_row_says() {
        let principal = |role, sub: &str, stations: &[&str]| Principal {
            subject: sub.into(),
            role,
            stations: stations.iter().map(|s| s.to_string()).collect(),
        };
        let listener = principal(Role::Listener, "ann", &[]);
        let station = principal(Role::Station, "poller", &["radio-1"]);
        let backoffice = principal(Role::Backoffice, "crm", &[]);
        let operator = principal(Role::Operator, "ops", &[]);
        let admin = principal(Role::Admin, "root", &[]);
        let cases = [
            (&listener, Access::ActFor("ann"), true),
            (&listener, Access::ActFor("bob"), false),
            (&listener, Access::ReadUser("ann"), true),
            (&listener, Access::ReadUser("bob"), false),
            (&listener, Access::Report("radio-1"), false),
            (&station, Access::Report("radio-1"), true),
            (&station, Access::Report("radio-2"), false),
            (&station, Access::ActFor("poller"), false),
            (&backoffice, Access::ReadUser("ann"), true),
            (&backoffice, Access::ActFor("ann"), false),
            (&operator, Access::ReadUser("ann"), true),
            (&operator, Access::ActFor("ann"), false),
            (&operator, Access::Report("radio-1"), false),
            (&admin, Access::ActFor("ann"), true),
            (&admin, Access::Report("radio-9"), true),
            // Imports: the back office runs them; operators and admins read them too.
            (&listener, Access::RunImports, false),
            (&station, Access::RunImports, false),
            (&backoffice, Access::RunImports, true),
            (&operator, Access::RunImports, false),
            (&admin, Access::RunImports, true),
            (&listener, Access::ReadImports, false),
            (&station, Access::ReadImports, false),
            (&backoffice, Access::ReadImports, true),
            (&operator, Access::ReadImports, true),
            (&admin, Access::ReadImports, true),
        ];
        for (who, access, expected) in cases {
            assert_eq!(who.allows(access).is_ok(), expected, "{who:?} {access:?}");
        }
        for who in [&listener, &station, &backoffice, &operator, &admin] {
            assert!(who.allows(Access::ReadStations).is_ok());
            assert!(who.allows(Access::ReadShows).is_ok());
        }
        let denied = operator.allows(Access::RunImports).unwrap_err();
        assert_eq!(denied.0, "an operator token cannot upload or start imports");
    }
}
