//! A local stand-in for the enrichment providers: MusicBrainz's web service v2 recording search
//! and the Cover Art Archive's release listing, served from `tests/fixtures/enrichment/` by a
//! small HTTP/1.1 server on a random port of 127.0.0.1, one request per connection.
//!
//! - `GET /musicbrainz/ws/2/recording?query=recording:"<title>" AND artist:"<artist>"&fmt=json`:
//!   the fixture search, its first recording made into the asked song with ids derived from
//!   (artist, title) (Nina Simone's "Sinnerman" gets the fixture verbatim), or the empty search
//!   for songs marked not found.
//! - `GET /coverart/release/<mbid>`: the fixture listing with its release id replaced by `<mbid>`,
//!   or 404 for releases marked as having no cover.
//!
//! A test slows the answers down, makes a service down or answer an error status (for good or for
//! the next few requests), and reads back every request the provider received.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const RECORDING_SEARCH: &str =
    include_str!("../fixtures/enrichment/musicbrainz-recording-search.json");
const RECORDING_SEARCH_EMPTY: &str =
    include_str!("../fixtures/enrichment/musicbrainz-recording-search-empty.json");
const RELEASE_LISTING: &str = include_str!("../fixtures/enrichment/coverart-release.json");

/// The song the search fixture is about, and the release id the listing fixture is about.
const FIXTURE_ARTIST: &str = "Nina Simone";
const FIXTURE_TITLE: &str = "Sinnerman";
const FIXTURE_RELEASE_MBID: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";

/// Longest request head (request line and headers) the server reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Longest the server waits for a client to stop sending after the answer.
const LINGER: Duration = Duration::from_secs(1);

/// One of the two services the provider plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    MusicBrainz,
    CoverArt,
}

/// How a service answers a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Answer {
    /// From the fixtures, as the routes describe.
    #[default]
    Normal,
    /// Accept the connection, then close it without writing a byte.
    Down,
    /// This status with a small JSON error body, and `Retry-After` when given.
    Status {
        code: u16,
        retry_after: Option<String>,
    },
}

/// One request the provider received, however it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCall {
    pub service: Service,
    /// The request path without its query string, e.g. `/musicbrainz/ws/2/recording`.
    pub path: String,
    /// The decoded `query` parameter of a recording search.
    pub query: Option<String>,
    /// Artist and title as parsed out of a recording search's query.
    pub artist: Option<String>,
    pub title: Option<String>,
    /// The release of a cover listing.
    pub release_mbid: Option<String>,
    pub user_agent: Option<String>,
    /// When the request head was read.
    pub at: Instant,
    /// The status answered; 0 when the service was down.
    pub status: u16,
}

/// What the node should end up with for a song the provider knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEnrichment {
    pub recording_mbid: String,
    pub title: String,
    pub artist: String,
    pub artist_mbid: String,
    pub release_mbid: String,
    pub release_title: String,
    pub release_year: u32,
    pub cover_url: String,
}

/// The provider, serving until dropped.
pub struct TestProvider {
    address: SocketAddr,
    state: Arc<Mutex<ProviderState>>,
    server: JoinHandle<()>,
}

impl TestProvider {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ProviderState::default()));
        let server = tokio::spawn(serve(listener, state.clone()));
        Ok(Self {
            address,
            state,
            server,
        })
    }

    /// The MusicBrainz base URL; the client appends `/ws/2/recording?…`.
    pub fn musicbrainz_url(&self) -> String {
        format!("http://{}/musicbrainz", self.address)
    }

    /// The Cover Art Archive base URL; the client appends `/release/<mbid>`.
    pub fn coverart_url(&self) -> String {
        format!("http://{}/coverart", self.address)
    }

    /// Delays every following answer of both services (also closes and error statuses).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// How `service` answers from now on, once the answers queued by [`Self::fail_next`] are
    /// used up.
    pub fn set_answer(&self, service: Service, answer: Answer) {
        self.state().service_mut(service).answer = answer;
    }

    /// The next `n` requests of `service` get `answer`, then the configured answer again.
    pub fn fail_next(&self, service: Service, n: usize, answer: Answer) {
        let mut state = self.state();
        let upcoming = &mut state.service_mut(service).upcoming;
        upcoming.extend(std::iter::repeat_n(answer, n));
    }

    /// Searches for exactly this artist and title find nothing.
    pub fn set_not_found(&self, artist: &str, title: &str) {
        self.state()
            .not_found
            .insert((artist.to_owned(), title.to_owned()));
    }

    /// The listing of this release is 404, as for a release without cover art.
    pub fn set_no_cover(&self, release_mbid: &str) {
        self.state().no_cover.insert(release_mbid.to_owned());
    }

    /// Every request received so far, in order of arrival.
    pub fn calls(&self) -> Vec<ProviderCall> {
        self.state().calls.clone()
    }

    /// The requests `service` received so far, in order of arrival.
    pub fn calls_to(&self, service: Service) -> Vec<ProviderCall> {
        let state = self.state();
        let calls = state.calls.iter().filter(|call| call.service == service);
        calls.cloned().collect()
    }

    /// What the node should end up with for a song this provider knows (not for songs marked
    /// not found), by the client's choice rules applied to what the provider serves: the first
    /// recording, its artist credit as displayed, the earliest official release and the
    /// 500-pixel thumbnail of that release's front cover over https.
    pub fn expected(artist: &str, title: &str) -> ExpectedEnrichment {
        let search = recording_search(artist, title);
        let recording = &search["recordings"][0];
        let credits = recording["artist-credit"]
            .as_array()
            .expect("the fixture recording has an artist credit");
        let displayed_credit = credits
            .iter()
            .map(|credit| {
                let joinphrase = credit["joinphrase"].as_str().unwrap_or_default();
                format!("{}{joinphrase}", text(&credit["name"]))
            })
            .collect();
        let release = recording["releases"]
            .as_array()
            .expect("the fixture recording has releases")
            .iter()
            .filter(|release| release["status"] == "Official" && release["date"].is_string())
            .min_by_key(|release| text(&release["date"]))
            .expect("the fixture recording has a dated official release");
        let date = text(&release["date"]);
        let release_year = date
            .get(..4)
            .and_then(|year| year.parse().ok())
            .expect("the fixture release date starts with a year");
        let release_mbid = text(&release["id"]);
        let listing: Value =
            serde_json::from_str(&release_listing(&release_mbid)).expect("the listing is JSON");
        let front = listing["images"]
            .as_array()
            .expect("the fixture listing has images")
            .iter()
            .find(|image| image["front"] == true)
            .expect("the fixture listing has a front image");
        let thumbnail = text(&front["thumbnails"]["500"]);
        let cover_url = match thumbnail.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => thumbnail,
        };
        ExpectedEnrichment {
            recording_mbid: text(&recording["id"]),
            title: text(&recording["title"]),
            artist: displayed_credit,
            artist_mbid: text(&credits[0]["artist"]["id"]),
            release_mbid,
            release_title: text(&release["title"]),
            release_year,
            cover_url,
        }
    }

    fn state(&self) -> MutexGuard<'_, ProviderState> {
        self.state.lock().expect("provider state lock")
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks: aborting it drops their JoinSet, which
        // aborts them too, and closes the listener.
        self.server.abort();
    }
}

/// What the tests configured, and what the provider received.
#[derive(Default)]
struct ProviderState {
    latency: Duration,
    musicbrainz: ServiceControl,
    coverart: ServiceControl,
    not_found: HashSet<(String, String)>,
    no_cover: HashSet<String>,
    calls: Vec<ProviderCall>,
}

#[derive(Default)]
struct ServiceControl {
    answer: Answer,
    upcoming: VecDeque<Answer>,
}

impl ProviderState {
    fn service_mut(&mut self, service: Service) -> &mut ServiceControl {
        match service {
            Service::MusicBrainz => &mut self.musicbrainz,
            Service::CoverArt => &mut self.coverart,
        }
    }

    /// Answers `request` (`None`: close without a byte), records it, and says how long to wait
    /// before the answer goes out.
    fn answer(&mut self, request: ServiceRequest, at: Instant) -> (Option<HttpResponse>, Duration) {
        let control = self.service_mut(request.service);
        let answer = control
            .upcoming
            .pop_front()
            .unwrap_or_else(|| control.answer.clone());
        let response = match answer {
            Answer::Normal => Some(self.answer_normally(&request)),
            Answer::Down => None,
            Answer::Status { code, retry_after } => {
                Some(HttpResponse::error(code).with_retry_after(retry_after))
            }
        };
        let ServiceRequest {
            service,
            path,
            user_agent,
            route,
            ..
        } = request;
        let (query, artist, title, release_mbid) = match route {
            Route::RecordingSearch {
                query,
                artist,
                title,
            } => (query, artist, title, None),
            Route::ReleaseListing { release_mbid } => (None, None, None, Some(release_mbid)),
            Route::Unknown => (None, None, None, None),
        };
        let call = ProviderCall {
            service,
            path,
            query,
            artist,
            title,
            release_mbid,
            user_agent,
            at,
            status: response.as_ref().map_or(0, |response| response.status),
        };
        // Concurrent connections take the lock in any order; keep the record in order of `at`.
        let index = self.calls.partition_point(|earlier| earlier.at <= call.at);
        self.calls.insert(index, call);
        (response, self.latency)
    }

    fn answer_normally(&self, request: &ServiceRequest) -> HttpResponse {
        if !request.is_get {
            return HttpResponse::error(405);
        }
        match &request.route {
            Route::RecordingSearch {
                artist: Some(artist),
                title: Some(title),
                ..
            } => {
                let song = (artist.clone(), title.clone());
                if self.not_found.contains(&song) {
                    HttpResponse::json(200, RECORDING_SEARCH_EMPTY.to_owned())
                } else if (artist.as_str(), title.as_str()) == (FIXTURE_ARTIST, FIXTURE_TITLE) {
                    HttpResponse::json(200, RECORDING_SEARCH.to_owned())
                } else {
                    let search = recording_search(artist, title);
                    HttpResponse::json(200, search.to_string())
                }
            }
            Route::RecordingSearch { .. } => HttpResponse::json(
                400,
                serde_json::json!({
                    "error": "the query must name a recording and an artist",
                    "help": "recording:\"<title>\" AND artist:\"<artist>\"",
                })
                .to_string(),
            ),
            Route::ReleaseListing { release_mbid } if self.no_cover.contains(release_mbid) => {
                HttpResponse::not_found_text()
            }
            Route::ReleaseListing { release_mbid } => {
                HttpResponse::json(200, release_listing(release_mbid))
            }
            Route::Unknown if request.service == Service::MusicBrainz => HttpResponse::error(404),
            Route::Unknown => HttpResponse::not_found_text(),
        }
    }
}

/// The search fixture for `artist` and `title`: verbatim for the fixture song, otherwise its
/// first recording made into this song, with ids derived from it.
fn recording_search(artist: &str, title: &str) -> Value {
    let mut search: Value =
        serde_json::from_str(RECORDING_SEARCH).expect("the recording search fixture is JSON");
    if (artist, title) == (FIXTURE_ARTIST, FIXTURE_TITLE) {
        return search;
    }
    let recording = &mut search["recordings"][0];
    recording["id"] = derived_uuid(&[artist, title]).into();
    recording["title"] = title.into();
    let credit = &mut recording["artist-credit"][0];
    credit["name"] = artist.into();
    credit["artist"]["name"] = artist.into();
    if let Some(releases) = recording["releases"].as_array_mut() {
        for (index, release) in releases.iter_mut().enumerate() {
            release["id"] = derived_uuid(&[artist, title, &index.to_string()]).into();
        }
    }
    search
}

/// The listing fixture, about `release_mbid`.
fn release_listing(release_mbid: &str) -> String {
    RELEASE_LISTING.replace(FIXTURE_RELEASE_MBID, release_mbid)
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string in the fixture, not {value}"))
        .to_owned()
}

/// A stable UUID-shaped id (version 4, RFC 4122 variant) for `parts`: their FNV-1a 128 hash.
fn derived_uuid(parts: &[&str]) -> String {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(part.as_bytes());
        // 0xff occurs in no UTF-8 text, so ("ab", "c") and ("a", "bc") hash apart.
        bytes.push(0xff);
    }
    let mut hash = fnv1a_128(&bytes);
    hash = (hash & !(0xf << 76)) | (0x4 << 76);
    hash = (hash & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{hash:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET_BASIS: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    })
}

/// A request to one of the services, as read from its head.
struct ServiceRequest {
    service: Service,
    path: String,
    is_get: bool,
    user_agent: Option<String>,
    route: Route,
}

enum Route {
    RecordingSearch {
        query: Option<String>,
        artist: Option<String>,
        title: Option<String>,
    },
    ReleaseListing {
        release_mbid: String,
    },
    Unknown,
}

/// The request line and the one header the provider looks at.
struct RequestHead {
    method: String,
    target: String,
    user_agent: Option<String>,
}

fn parse_head(head: &str) -> Option<RequestHead> {
    let mut lines = head.lines();
    let mut request_line = lines.next()?.split_whitespace();
    let (method, target, version) = (
        request_line.next()?,
        request_line.next()?,
        request_line.next()?,
    );
    if !version.starts_with("HTTP/1.") || request_line.next().is_some() {
        return None;
    }
    let user_agent = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("user-agent"))
        .map(|(_, value)| value.trim().to_owned());
    Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        user_agent,
    })
}

/// The service and route of `head`; `None` for paths under neither service.
fn route(head: RequestHead) -> Option<ServiceRequest> {
    let (path, query_string) = match head.target.split_once('?') {
        Some((path, query_string)) => (path, Some(query_string)),
        None => (head.target.as_str(), None),
    };
    let (service, rest) = [
        (Service::MusicBrainz, "/musicbrainz"),
        (Service::CoverArt, "/coverart"),
    ]
    .into_iter()
    .find_map(|(service, prefix)| {
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some((service, rest))
    })?;
    let route = match service {
        Service::MusicBrainz if rest.trim_end_matches('/') == "/ws/2/recording" => {
            let query = query_string.and_then(|pairs| form_value(pairs, "query"));
            let (artist, title) = query.as_deref().map(search_song).unwrap_or_default();
            Route::RecordingSearch {
                query,
                artist,
                title,
            }
        }
        Service::CoverArt => match rest.strip_prefix("/release/") {
            Some(mbid) if !mbid.is_empty() && !mbid.contains('/') => Route::ReleaseListing {
                release_mbid: percent_decode(mbid, false),
            },
            _ => Route::Unknown,
        },
        Service::MusicBrainz => Route::Unknown,
    };
    Some(ServiceRequest {
        service,
        path: path.to_owned(),
        is_get: head.method == "GET",
        user_agent: head.user_agent,
        route,
    })
}

/// The decoded value of `key` in a `application/x-www-form-urlencoded` query string.
fn form_value(pairs: &str, key: &str) -> Option<String> {
    pairs
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| percent_decode(name, true) == key)
        .map(|(_, value)| percent_decode(value, true))
}

/// Percent-decodes `text`, `+` as a space too when `plus_is_space`; malformed escapes stay as
/// they are.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let hex_digit = |index: usize| {
        let digit = char::from(*bytes.get(index)?).to_digit(16)?;
        u8::try_from(digit).ok()
    };
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match (byte, hex_digit(index + 1), hex_digit(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high << 4) | low);
                index += 3;
                continue;
            }
            (b'+', ..) if plus_is_space => decoded.push(b' '),
            _ => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The artist and title of a search query such as `recording:"<title>" AND artist:"<artist>"`,
/// in either order.
fn search_song(query: &str) -> (Option<String>, Option<String>) {
    let terms = query_terms(query);
    let value_of = |fields: &[&str]| {
        terms
            .iter()
            .find(|(field, _)| fields.contains(&field.as_str()))
            .map(|(_, value)| value.clone())
    };
    (
        value_of(&["artist", "artistname"]),
        value_of(&["recording"]),
    )
}

/// The `field:value` terms of a Lucene query, fields lowercased: quoted values unescaped
/// (`\x` is `x`), bare values up to whitespace or a parenthesis; anything else is skipped.
fn query_terms(query: &str) -> Vec<(String, String)> {
    let is_field_char = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    let mut terms = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(&first) = chars.peek() {
        if !is_field_char(first) {
            chars.next();
            continue;
        }
        let mut field = String::new();
        while let Some(c) = chars.next_if(|&c| is_field_char(c)) {
            field.push(c);
        }
        if chars.next_if_eq(&':').is_none() {
            continue;
        }
        let quoted = chars.next_if_eq(&'"').is_some();
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' if quoted => break,
                c if !quoted && (c.is_whitespace() || c == ')') => break,
                c => value.push(c),
            }
        }
        terms.push((field.to_lowercase(), value));
    }
    terms
}

struct HttpResponse {
    status: u16,
    content_type: &'static str,
    retry_after: Option<String>,
    body: String,
}

impl HttpResponse {
    fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            retry_after: None,
            body,
        }
    }

    /// `status` with a JSON error body, as MusicBrainz answers errors.
    fn error(status: u16) -> Self {
        let error = reason_phrase(status);
        Self::json(status, serde_json::json!({ "error": error }).to_string())
    }

    /// The Cover Art Archive's 404.
    fn not_found_text() -> Self {
        Self::text(404, "Not Found")
    }

    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            retry_after: None,
            body: body.to_owned(),
        }
    }

    fn with_retry_after(self, retry_after: Option<String>) -> Self {
        Self {
            retry_after,
            ..self
        }
    }

    fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let retry_after = self
            .retry_after
            .as_ref()
            .map(|value| format!("Retry-After: {value}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{retry_after}\
             Connection: {}\r\n\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        [head.as_bytes(), self.body.as_bytes()].concat()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Unknown")
}

/// Accepts connections until aborted, each served in a task the loop owns.
async fn serve(listener: TcpListener, state: Arc<Mutex<ProviderState>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "test provider failed to accept a connection");
                    // Out of descriptors, most likely: give the open connections time to end.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(mut stream: TcpStream, state: Arc<Mutex<ProviderState>>) {
    if let Err(error) = answer_connection(&mut stream, &state).await {
        tracing::debug!(%error, "test provider connection failed");
    }
}

/// Answers requests on one connection until the client closes it or asks to (`Connection:
/// close`), as MusicBrainz keeps connections alive; a bad request, or a service that is down,
/// ends the connection.
async fn answer_connection(
    stream: &mut TcpStream,
    state: &Mutex<ProviderState>,
) -> std::io::Result<()> {
    let mut buffered = Vec::new();
    loop {
        let head = match read_head(stream, &mut buffered).await? {
            HeadRead::Closed => return Ok(()),
            HeadRead::TooLarge => {
                return write(
                    stream,
                    HttpResponse::text(431, "Request Header Fields Too Large"),
                    false,
                )
                .await;
            }
            HeadRead::Head(head) => head,
        };
        let at = Instant::now();
        let keep_alive = !head
            .lines()
            .any(|line| line.trim().eq_ignore_ascii_case("connection: close"));
        let Some(head) = parse_head(&head) else {
            return write(stream, HttpResponse::text(400, "Bad Request"), false).await;
        };
        let response = match route(head) {
            None => Some(HttpResponse::not_found_text()),
            Some(request) => {
                let (response, latency) = state
                    .lock()
                    .expect("provider state lock")
                    .answer(request, at);
                tokio::time::sleep(latency).await;
                response
            }
        };
        match response {
            Some(response) => write(stream, response, keep_alive).await?,
            // Down: the caller drops the stream unwritten.
            None => return Ok(()),
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

enum HeadRead {
    Head(String),
    TooLarge,
    Closed,
}

/// Reads up to the blank line that ends the next request head; bytes read past it stay in
/// `buffered` for the next request.
async fn read_head(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> std::io::Result<HeadRead> {
    let mut chunk = [0; 4096];
    let mut search_from = 0;
    loop {
        match head_end(buffered, search_from) {
            Some(end) if end <= MAX_HEAD_BYTES => {
                let rest = buffered.split_off(end);
                let head = std::mem::replace(buffered, rest);
                return Ok(HeadRead::Head(String::from_utf8_lossy(&head).into_owned()));
            }
            Some(_) => return Ok(HeadRead::TooLarge),
            None if buffered.len() > MAX_HEAD_BYTES => return Ok(HeadRead::TooLarge),
            None => {}
        }
        // The end may straddle two reads: search from a little before the new bytes.
        search_from = buffered.len().saturating_sub(2);
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(HeadRead::Closed);
        }
        buffered.extend_from_slice(&chunk[..read]);
    }
}

/// Where the head in `bytes` ends (after its blank line, CRLF or bare LF), looking from `from`.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find_map(|at| match bytes[at..] {
        [b'\n', b'\n', ..] => Some(at + 2),
        [b'\n', b'\r', b'\n', ..] => Some(at + 3),
        _ => None,
    })
}

async fn write(
    stream: &mut TcpStream,
    response: HttpResponse,
    keep_alive: bool,
) -> std::io::Result<()> {
    stream.write_all(&response.encode(keep_alive)).await?;
    if keep_alive {
        return Ok(());
    }
    stream.shutdown().await?;
    // Take what the client still sends (a body, the rest of an oversized head): closing with
    // unread bytes resets the connection, which can discard the answer before it is read.
    let mut unread = [0; 4096];
    let drain = async {
        while stream.read(&mut unread).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(LINGER, drain).await.unwrap_or(Ok(()))
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
