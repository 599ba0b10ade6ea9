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

    fn encode(&self) -> Vec<u8> {
        let retry_after = self
            .retry_after
            .as_ref()
            .map(|value| format!("Retry-After: {value}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{retry_after}\
             Connection: close\r\n\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
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

async fn answer_connection(
    stream: &mut TcpStream,
    state: &Mutex<ProviderState>,
) -> std::io::Result<()> {
    let head = match read_head(stream).await? {
        HeadRead::Closed => return Ok(()),
        HeadRead::TooLarge => {
            return write(
                stream,
                HttpResponse::text(431, "Request Header Fields Too Large"),
            )
            .await;
        }
        HeadRead::Head(head) => head,
    };
    let at = Instant::now();
    let Some(head) = parse_head(&head) else {
        return write(stream, HttpResponse::text(400, "Bad Request")).await;
    };
    let Some(request) = route(head) else {
        return write(stream, HttpResponse::not_found_text()).await;
    };
    let (response, latency) = state
        .lock()
        .expect("provider state lock")
        .answer(request, at);
    tokio::time::sleep(latency).await;
    match response {
        Some(response) => write(stream, response).await,
        // Down: the caller drops the stream unwritten.
        None => Ok(()),
    }
}

enum HeadRead {
    Head(String),
    TooLarge,
    Closed,
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<HeadRead> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(HeadRead::Closed);
        }
        // The end may straddle two reads: search from a little before the new bytes.
        let search_from = head.len().saturating_sub(2);
        head.extend_from_slice(&chunk[..read]);
        let end = head_end(&head, search_from);
        match end {
            Some(end) if end <= MAX_HEAD_BYTES => {
                head.truncate(end);
                return Ok(HeadRead::Head(String::from_utf8_lossy(&head).into_owned()));
            }
            Some(_) => return Ok(HeadRead::TooLarge),
            None if head.len() > MAX_HEAD_BYTES => return Ok(HeadRead::TooLarge),
            None => {}
        }
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

async fn write(stream: &mut TcpStream, response: HttpResponse) -> std::io::Result<()> {
    stream.write_all(&response.encode()).await?;
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
mod tests {
    use super::*;
    use crate::harness::wait::{DEFAULT_TIMEOUT, eventually, within};

    const USER_AGENT: &str = "playhead-tests/0.1 ( https://example.org/playhead )";
    const RESPECT: (&str, &str) = ("Aretha Franklin", "Respect");

    /// An answer as read off the socket.
    struct RawResponse {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl RawResponse {
        fn header(&self, name: &str) -> Option<&str> {
            let mut headers = self.headers.iter();
            let (_, value) = headers.find(|(header, _)| header.eq_ignore_ascii_case(name))?;
            Some(value)
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body).expect("a JSON body")
        }
    }

    /// Sends `head` to `address` and reads until the server closes.
    async fn exchange(address: SocketAddr, head: String) -> Vec<u8> {
        within("the provider's answer", DEFAULT_TIMEOUT, async {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(head.as_bytes()).await.expect("send");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.expect("receive");
            answer
        })
        .await
    }

    /// `GET url` (as `http://host:port/path?query`), answered and closed.
    async fn get_bytes(url: &str) -> Vec<u8> {
        let rest = url.strip_prefix("http://").expect("an http URL");
        let (host, target) = rest.split_at(rest.find('/').expect("a path"));
        let address = host.parse().expect("a socket address");
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n\
             Accept: application/json\r\n\r\n"
        );
        exchange(address, head).await
    }

    async fn get(url: &str) -> RawResponse {
        let answer = String::from_utf8(get_bytes(url).await).expect("UTF-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("a status line, not {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|line| line.split_once(": ").expect("a header"))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let response = RawResponse {
            status,
            headers,
            body: body.to_owned(),
        };
        let length = response.header("Content-Length").expect("Content-Length");
        assert_eq!(length, response.body.len().to_string());
        assert_eq!(response.header("Connection"), Some("close"));
        response
    }

    /// A search the way the client sends it: phrases escaped, the query form-encoded.
    fn search_url(provider: &TestProvider, artist: &str, title: &str) -> String {
        let phrase = |text: &str| text.replace('\\', r"\\").replace('"', r#"\""#);
        let query = format!(
            "recording:\"{}\" AND artist:\"{}\"",
            phrase(title),
            phrase(artist)
        );
        format!(
            "{}/ws/2/recording?query={}&fmt=json&limit=5",
            provider.musicbrainz_url(),
            form_encode(&query)
        )
    }

    fn form_encode(text: &str) -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(byte).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{byte:02X}"),
            })
            .collect()
    }

    fn listing_url(provider: &TestProvider, release_mbid: &str) -> String {
        format!("{}/release/{release_mbid}", provider.coverart_url())
    }

    fn assert_uuid_v4(id: &str) {
        let groups: Vec<&str> = id.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(groups[2].starts_with('4'), "{id}: version 4");
        assert!(
            groups[3].starts_with(['8', '9', 'a', 'b']),
            "{id}: RFC 4122 variant"
        );
    }

    async fn provider() -> TestProvider {
        TestProvider::start().await.expect("the provider starts")
    }

    #[tokio::test]
    async fn the_fixture_song_comes_back_verbatim() {
        let provider = provider().await;
        let response = get(&search_url(&provider, "Nina Simone", "Sinnerman")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_eq!(response.body, RECORDING_SEARCH);
    }

    #[tokio::test]
    async fn another_song_gets_its_own_ids_and_title() {
        let provider = provider().await;
        let (artist, title) = RESPECT;
        let fixture: Value = serde_json::from_str(RECORDING_SEARCH).expect("JSON");
        let served = get(&search_url(&provider, artist, title)).await.json();

        let recording = &served["recordings"][0];
        assert_eq!(recording["id"], "6e4eaff4-d03a-428c-ac25-c9d67bdc5977");
        assert_eq!(recording["title"], title);
        assert_eq!(recording["score"], 100);
        assert_eq!(recording["artist-credit"][0]["name"], artist);
        assert_eq!(recording["artist-credit"][0]["artist"]["name"], artist);
        let release_ids: Vec<&str> = recording["releases"]
            .as_array()
            .expect("releases")
            .iter()
            .map(|release| release["id"].as_str().expect("an id"))
            .collect();
        assert_eq!(release_ids.len(), 3);
        assert_eq!(release_ids[1], "b5d683cc-8ee4-4c83-82b4-de6e21a712ef");
        for (index, id) in release_ids.iter().enumerate() {
            assert_uuid_v4(id);
            let fixture_id = &fixture["recordings"][0]["releases"][index]["id"];
            assert_ne!(fixture_id, id);
        }
        assert_ne!(release_ids[0], release_ids[2]);
        assert_eq!(served["recordings"][1], fixture["recordings"][1]);
        assert_eq!(served["recordings"][2], fixture["recordings"][2]);

        let again = get(&search_url(&provider, artist, title)).await.json();
        assert_eq!(again, served, "the derived ids are stable");
        let other = get(&search_url(&provider, "Aretha Franklin", "Think"))
            .await
            .json();
        assert_ne!(other["recordings"][0]["id"], recording["id"]);
    }

    #[tokio::test]
    async fn escaped_phrases_in_either_order_are_understood() {
        let provider = provider().await;
        let (artist, title) = (r#"The "Band" \ Co"#, "Don't Stop: Now (Live)");
        let query = r#"artist:"The \"Band\" \\ Co" AND recording:"Don't Stop: Now (Live)""#;
        // Spaces percent-encoded this time, not as `+`.
        let encoded = form_encode(query).replace('+', "%20");
        let url = format!(
            "{}/ws/2/recording?fmt=json&query={encoded}&limit=5",
            provider.musicbrainz_url()
        );
        let served = get(&url).await.json();
        assert_eq!(served["recordings"][0]["title"], title);
        assert_eq!(served["recordings"][0]["artist-credit"][0]["name"], artist);
        let calls = provider.calls();
        assert_eq!(calls[0].query.as_deref(), Some(query));
        assert_eq!(calls[0].artist.as_deref(), Some(artist));
        assert_eq!(calls[0].title.as_deref(), Some(title));
    }

    #[tokio::test]
    async fn a_song_marked_not_found_gets_the_empty_search() {
        let provider = provider().await;
        provider.set_not_found("Nina Simone", "Sinnerman");
        let response = get(&search_url(&provider, "Nina Simone", "Sinnerman")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, RECORDING_SEARCH_EMPTY);
        let (artist, title) = RESPECT;
        let other = get(&search_url(&provider, artist, title)).await.json();
        assert_eq!(other["count"], 3);
    }

    #[tokio::test]
    async fn the_cover_listing_is_about_the_asked_release() {
        let provider = provider().await;
        let mbid = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
        let response = get(&listing_url(&provider, mbid)).await;
        assert_eq!(response.status, 200);
        assert!(!response.body.contains(FIXTURE_RELEASE_MBID));
        let listing = response.json();
        assert_eq!(
            listing["release"],
            format!("https://musicbrainz.org/release/{mbid}")
        );
        assert_eq!(
            listing["images"][1]["thumbnails"]["500"],
            format!("http://coverartarchive.org/release/{mbid}/17203569480-500.jpg")
        );

        provider.set_no_cover(mbid);
        let response = get(&listing_url(&provider, mbid)).await;
        assert_eq!(response.status, 404);
        assert_eq!(response.body, "Not Found");
        let other = get(&listing_url(&provider, FIXTURE_RELEASE_MBID)).await;
        assert_eq!(other.body, RELEASE_LISTING);
    }

    #[tokio::test]
    async fn fail_next_fails_that_many_requests_then_recovers() {
        let provider = provider().await;
        let unavailable = Answer::Status {
            code: 503,
            retry_after: Some("1".into()),
        };
        provider.fail_next(Service::MusicBrainz, 2, unavailable);
        let url = search_url(&provider, "Nina Simone", "Sinnerman");
        for _ in 0..2 {
            let response = get(&url).await;
            assert_eq!(response.status, 503);
            assert_eq!(response.header("Retry-After"), Some("1"));
            assert!(response.json()["error"].is_string());
            // The other service is unaffected.
            let cover = get(&listing_url(&provider, FIXTURE_RELEASE_MBID)).await;
            assert_eq!(cover.status, 200);
        }
        let response = get(&url).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("Retry-After"), None);
        let statuses: Vec<u16> = provider
            .calls_to(Service::MusicBrainz)
            .iter()
            .map(|call| call.status)
            .collect();
        assert_eq!(statuses, [503, 503, 200]);
    }

    #[tokio::test]
    async fn set_answer_holds_until_changed() {
        let provider = provider().await;
        let too_many = Answer::Status {
            code: 429,
            retry_after: None,
        };
        provider.set_answer(Service::CoverArt, too_many);
        let url = listing_url(&provider, FIXTURE_RELEASE_MBID);
        for _ in 0..3 {
            let response = get(&url).await;
            assert_eq!(response.status, 429);
            assert_eq!(response.header("Retry-After"), None);
        }
        provider.set_answer(Service::CoverArt, Answer::Normal);
        assert_eq!(get(&url).await.status, 200);
    }

    #[tokio::test]
    async fn a_down_service_closes_without_a_byte() {
        let provider = provider().await;
        provider.set_answer(Service::CoverArt, Answer::Down);
        let url = listing_url(&provider, FIXTURE_RELEASE_MBID);
        assert!(get_bytes(&url).await.is_empty());
        let search = get(&search_url(&provider, "Nina Simone", "Sinnerman")).await;
        assert_eq!(search.status, 200);
        provider.set_answer(Service::CoverArt, Answer::Normal);
        assert_eq!(get(&url).await.status, 200);
        let statuses: Vec<u16> = provider.calls().iter().map(|call| call.status).collect();
        assert_eq!(statuses, [0, 200, 200]);
    }

    #[tokio::test]
    async fn every_call_is_recorded_in_order() {
        let provider = provider().await;
        let before = Instant::now();
        let (artist, title) = RESPECT;
        get(&search_url(&provider, artist, title)).await;
        let mbid = TestProvider::expected(artist, title).release_mbid;
        get(&listing_url(&provider, &mbid)).await;
        let unknown = get(&format!("{}/ws/2/artist", provider.musicbrainz_url())).await;
        assert_eq!(unknown.status, 404);
        let elsewhere = format!("http://{}/elsewhere", provider.address);
        assert_eq!(get(&elsewhere).await.status, 404);
        let after = Instant::now();

        let calls = provider.calls();
        assert_eq!(calls.len(), 3, "{calls:#?}");
        let search = &calls[0];
        assert_eq!(search.service, Service::MusicBrainz);
        assert_eq!(search.path, "/musicbrainz/ws/2/recording");
        let query = r#"recording:"Respect" AND artist:"Aretha Franklin""#;
        assert_eq!(search.query.as_deref(), Some(query));
        assert_eq!(search.artist.as_deref(), Some(artist));
        assert_eq!(search.title.as_deref(), Some(title));
        assert_eq!(search.release_mbid, None);
        assert_eq!(search.status, 200);
        let listing = &calls[1];
        assert_eq!(listing.service, Service::CoverArt);
        assert_eq!(listing.path, format!("/coverart/release/{mbid}"));
        assert_eq!(listing.release_mbid.as_deref(), Some(mbid.as_str()));
        assert_eq!(
            (listing.query.as_ref(), listing.artist.as_ref()),
            (None, None)
        );
        assert_eq!(calls[2].path, "/musicbrainz/ws/2/artist");
        assert_eq!(calls[2].status, 404);
        for call in &calls {
            assert_eq!(call.user_agent.as_deref(), Some(USER_AGENT));
        }
        assert!(calls.windows(2).all(|pair| pair[0].at <= pair[1].at));
        assert!(before <= calls[0].at && calls[2].at <= after);
        assert_eq!(provider.calls_to(Service::CoverArt), [calls[1].clone()]);
        assert_eq!(provider.calls_to(Service::MusicBrainz).len(), 2);
    }

    #[tokio::test]
    async fn expected_agrees_with_what_is_served() {
        let provider = provider().await;
        for (artist, title) in [("Nina Simone", "Sinnerman"), RESPECT] {
            let expected = TestProvider::expected(artist, title);
            let served = get(&search_url(&provider, artist, title)).await.json();
            let recording = &served["recordings"][0];
            let pastel_blues = &recording["releases"][1];
            assert_eq!(expected.recording_mbid, text(&recording["id"]));
            assert_eq!(
                (expected.artist.as_str(), expected.title.as_str()),
                (artist, title)
            );
            assert_eq!(expected.artist_mbid, "bfcc6d75-a6a5-4bc6-8282-47aec8531818");
            assert_eq!(expected.release_mbid, text(&pastel_blues["id"]));
            assert_eq!(expected.release_title, "Pastel Blues");
            assert_eq!(expected.release_year, 1965);
            let cover = format!(
                "https://coverartarchive.org/release/{}/17203569480-500.jpg",
                expected.release_mbid
            );
            assert_eq!(expected.cover_url, cover);
            let listing = get(&listing_url(&provider, &expected.release_mbid))
                .await
                .json();
            let front = &listing["images"][1];
            assert_eq!(front["front"], true);
            let served_thumbnail = text(&front["thumbnails"]["500"]);
            assert_eq!(served_thumbnail.replacen("http://", "https://", 1), cover);
        }
        let fixture = TestProvider::expected("Nina Simone", "Sinnerman");
        assert_eq!(
            fixture.recording_mbid,
            "f3a8b9c2-6d1e-4a7b-9c0d-2e5f8a1b3c4d"
        );
        assert_eq!(fixture.release_mbid, FIXTURE_RELEASE_MBID);
    }

    #[tokio::test]
    async fn latency_delays_every_answer() {
        let provider = provider().await;
        let latency = Duration::from_millis(200);
        provider.set_latency(latency);
        provider.fail_next(Service::CoverArt, 1, Answer::Down);
        let started = Instant::now();
        get(&search_url(&provider, "Nina Simone", "Sinnerman")).await;
        assert!(started.elapsed() >= latency);
        let started = Instant::now();
        get_bytes(&listing_url(&provider, FIXTURE_RELEASE_MBID)).await;
        assert!(started.elapsed() >= latency);
    }

    #[tokio::test]
    async fn a_stalled_connection_holds_up_no_other() {
        let provider = provider().await;
        let mut stalled = TcpStream::connect(provider.address).await.expect("connect");
        stalled.write_all(b"GET /coverart/rel").await.expect("send");
        let response = get(&search_url(&provider, "Nina Simone", "Sinnerman")).await;
        assert_eq!(response.status, 200);
    }

    #[tokio::test]
    async fn malformed_and_oversized_requests_are_refused() {
        let provider = provider().await;
        let posted = exchange(
            provider.address,
            "POST /coverart/release/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
        )
        .await;
        assert!(posted.starts_with(b"HTTP/1.1 405 "));
        let garbage = exchange(provider.address, "hello\r\n\r\n".into()).await;
        assert!(garbage.starts_with(b"HTTP/1.1 400 "));
        let huge = format!(
            "GET / HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        let huge = exchange(provider.address, huge).await;
        assert!(huge.starts_with(b"HTTP/1.1 431 "));
        let search = format!(
            "{}/ws/2/recording?query=Sinnerman",
            provider.musicbrainz_url()
        );
        assert_eq!(get(&search).await.status, 400);
    }

    #[tokio::test]
    async fn dropping_the_provider_stops_the_server() {
        let provider = provider().await;
        let address = provider.address;
        drop(provider);
        eventually("the provider's port to close", DEFAULT_TIMEOUT, || async {
            TcpStream::connect(address).await.is_err().then_some(())
        })
        .await;
    }

    #[test]
    fn search_queries_are_parsed_leniently() {
        let song = |artist: &str, title: &str| (Some(artist.to_owned()), Some(title.to_owned()));
        assert_eq!(
            search_song(r#"recording:"Sinnerman" AND artist:"Nina Simone""#),
            song("Nina Simone", "Sinnerman")
        );
        assert_eq!(
            search_song(r#"(artist:"A \"B\"" AND Recording:"C \\ D")"#),
            song(r#"A "B""#, r"C \ D")
        );
        assert_eq!(
            search_song(r#"recording:Sinnerman artist:"Nina Simone""#),
            song("Nina Simone", "Sinnerman")
        );
        assert_eq!(search_song("Sinnerman"), (None, None));
        assert_eq!(
            search_song(r#"recording:"unterminated"#),
            (None, Some("unterminated".to_owned()))
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a+b%20c%22%5C", true), r#"a b c"\"#);
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%C3%A9%2", true), "é%2");
        assert_eq!(percent_decode("100%", true), "100%");
        let query = "query=recording%3A%22x%22&fmt=json";
        assert_eq!(
            form_value(query, "query").as_deref(),
            Some(r#"recording:"x""#)
        );
        assert_eq!(form_value(query, "limit"), None);
    }

    #[test]
    fn derived_ids_are_pinned() {
        // Reference values from an independent FNV-1a 128 (Python big integers).
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
        let sinnerman = derived_uuid(&["Nina Simone", "Sinnerman"]);
        assert_eq!(sinnerman, "31046e06-3e16-4808-b0a9-683b60a4a40d");
        let release = derived_uuid(&["Nina Simone", "Sinnerman", "1"]);
        assert_eq!(release, "1dce5dc1-8088-4e75-add1-0e95a6ac0be9");
        assert_ne!(derived_uuid(&["ab", "c"]), derived_uuid(&["a", "bc"]));
        assert_uuid_v4(&sinnerman);
    }

    #[test]
    fn head_end_takes_crlf_and_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest", 0), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }
}
