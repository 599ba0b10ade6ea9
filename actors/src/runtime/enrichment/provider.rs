//! The HTTP client of the enrichment provider: a MusicBrainz recording search, then the chosen
//! release's front cover from the Cover Art Archive.
//!
//! Each of the two services has its own rate limit ([`RateLimit`], one request per slot) and
//! its own circuit breaker ([`Breaker`]). A request takes a breaker permit (an open breaker
//! fails the look-up at once), waits for its slot, and is tried up to `max_attempts` times:
//! 5xx, 429, timeouts and unreachable servers are retried after a jittered backoff, or after
//! the `Retry-After` of a 429 or 503, which pauses the service's bucket. The choices are the
//! pure modules' (`domain::enrichment`); this shell only sends, waits and counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::config::EnrichmentConfig;
use crate::domain::enrichment::Enrichment;
use crate::domain::enrichment::backoff::{Backoff, parse_retry_after};
use crate::domain::enrichment::breaker::{Breaker, BreakerState, Permit};
use crate::domain::enrichment::coverart;
use crate::domain::enrichment::musicbrainz;
use crate::domain::enrichment::rate::RateLimit;
use crate::metrics::{NodeMetrics, ProviderCallLabel, ProviderLabel};

/// Largest answer body read; a larger one is undecodable.
pub const BODY_LIMIT_BYTES: usize = 1 << 20;

/// Recordings asked of the search: the best few are enough to pick from by score.
const SEARCH_LIMIT: &str = "5";

const MUSICBRAINZ: &str = "musicbrainz";
const COVERART: &str = "coverart";

/// What the provider answered for a song.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Enrichment),
    /// The search found no recording scored at least `min_score`.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the enrichment http client could not be built")]
    Client(#[source] reqwest::Error),
    #[error("{provider} base url {url:?} is not usable")]
    InvalidUrl {
        provider: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{provider}'s circuit breaker is open, retry in {retry_in:?}")]
    BreakerOpen {
        provider: &'static str,
        retry_in: Duration,
    },
    /// A 4xx other than 429 (and, for covers, 404): asking again would not help.
    #[error("{provider} refused the request: {status}")]
    Rejected {
        provider: &'static str,
        status: StatusCode,
    },
    #[error("{provider} failed after {attempts} attempt(s)")]
    Unavailable {
        provider: &'static str,
        attempts: u32,
        #[source]
        last: RequestFailure,
        retry_in: Option<Duration>,
    },
    #[error("{provider} answered a body that could not be read")]
    Undecodable {
        provider: &'static str,
        #[source]
        source: BodyError,
    },
}

impl ProviderError {
    /// When asking about the song again may be worth it (`Retry-After`, the breaker's open
    /// time); `None` leaves it to the caller's own schedule.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            ProviderError::BreakerOpen { retry_in, .. } => Some(*retry_in),
            ProviderError::Unavailable { retry_in, .. } => *retry_in,
            ProviderError::Client(_)
            | ProviderError::InvalidUrl { .. }
            | ProviderError::Rejected { .. }
            | ProviderError::Undecodable { .. } => None,
        }
    }
}

/// Why one attempt of a request failed in a way worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailure {
    /// 5xx or 429.
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("the request timed out")]
    Timeout(#[source] reqwest::Error),
    #[error("the server could not be reached")]
    Unreachable(#[source] reqwest::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Musicbrainz(#[from] musicbrainz::DecodeError),
    #[error(transparent)]
    Coverart(#[from] coverart::DecodeError),
}

/// The client; clones share the rate limits, breakers and connections.
#[derive(Clone)]
pub struct HttpProvider {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    musicbrainz: Endpoint,
    coverart: Endpoint,
    backoff: Backoff,
    max_attempts: u32,
    min_score: u32,
    /// Seeds the backoff jitter: one number per wait.
    jitter: AtomicU64,
    metrics: Arc<NodeMetrics>,
}

/// One service: where it is, its rate limit and its breaker.
struct Endpoint {
    provider: &'static str,
    /// Without a trailing `/`.
    base_url: String,
    rate: Mutex<RateLimit>,
    breaker: SyncMutex<BreakerCell>,
    breaker_gauge: Gauge,
}

struct BreakerCell {
    breaker: Breaker,
    /// The state last set on the gauge (and logged).
    shown: BreakerState,
}

/// What a 404 means for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On404 {
    /// There is nothing there: an answer.
    Absent,
    /// The URL is wrong: the request is refused.
    Refused,
}

impl HttpProvider {
    pub fn new(
        config: &EnrichmentConfig,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Self, ProviderError> {
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let client = reqwest::Client::builder()
            .user_agent(config.user_agent.as_str())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(ProviderError::Client)?;
        let open_for = Duration::from_secs(config.breaker_open_secs);
        let endpoint = |provider: &'static str, url: &str, rate_per_sec: f64| {
            let base_url = url.trim_end_matches('/').to_owned();
            client
                .get(&base_url)
                .build()
                .map_err(|source| ProviderError::InvalidUrl {
                    provider,
                    url: url.to_owned(),
                    source,
                })?;
            let breaker_gauge = metrics
                .enrichment_breaker_state
                .get_or_create(&ProviderLabel { provider })
                .clone();
            breaker_gauge.set(BreakerState::Closed.as_gauge());
            Ok(Endpoint {
                provider,
                base_url,
                rate: Mutex::new(RateLimit::new(rate_per_sec)),
                breaker: SyncMutex::new(BreakerCell {
                    breaker: Breaker::new(config.breaker_failures, open_for),
                    shown: BreakerState::Closed,
                }),
                breaker_gauge,
            })
        };
        let musicbrainz = endpoint(
            MUSICBRAINZ,
            &config.musicbrainz_url,
            config.musicbrainz_rate_per_sec,
        )?;
        let coverart = endpoint(COVERART, &config.coverart_url, config.coverart_rate_per_sec)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                musicbrainz,
                coverart,
                backoff: Backoff::new(
                    Duration::from_millis(config.backoff_initial_ms),
                    Duration::from_millis(config.backoff_max_ms),
                ),
                max_attempts: config.max_attempts.max(1),
                min_score: config.min_score,
                jitter: AtomicU64::new(0),
                metrics,
            }),
        })
    }

    /// MusicBrainz search, then the chosen release's front cover. `enriched_at` of the result
    /// is left at its default; the caller stamps it.
    pub async fn lookup(&self, artist: &str, title: &str) -> Result<Lookup, ProviderError> {
        let inner = &*self.inner;
        let query = musicbrainz::search_query(artist, title);
        let search_url = format!("{}/ws/2/recording", inner.musicbrainz.base_url);
        let min_score = inner.min_score;
        let searched = inner
            .get(
                &inner.musicbrainz,
                &search_url,
                &[
                    ("query", query.as_str()),
                    ("fmt", "json"),
                    ("limit", SEARCH_LIMIT),
                ],
                On404::Refused,
                |body| Ok(musicbrainz::choose(body, min_score)?),
            )
            .await?;
        let Some(catalogued) = searched.flatten() else {
            return Ok(Lookup::NotFound);
        };
        let cover_url = match &catalogued.release {
            None => String::new(),
            Some(release) => {
                let url = format!("{}/release/{}", inner.coverart.base_url, release.mbid);
                inner
                    .get(&inner.coverart, &url, &[], On404::Absent, |body| {
                        Ok(coverart::front_cover(body)?)
                    })
                    .await?
                    .flatten()
                    .unwrap_or_default()
            }
        };
        Ok(Lookup::Found(catalogued.into_enrichment(cover_url)))
    }
}

/// How one attempt of a request ended.
enum Attempt<T> {
    Decoded(T),
    NotFound,
    Retryable {
        failure: RequestFailure,
        retry_after: Option<Duration>,
    },
    Refused(StatusCode),
    Undecodable(BodyError),
}

impl<T> Attempt<T> {
    /// The `outcome` label of `enrichment_provider_calls`.
    fn outcome(&self) -> &'static str {
        match self {
            Attempt::Decoded(_) => "ok",
            Attempt::NotFound => "not_found",
            Attempt::Retryable { failure, .. } => match failure {
                RequestFailure::Status(StatusCode::TOO_MANY_REQUESTS) => "rate_limited",
                RequestFailure::Status(_) => "server_error",
                RequestFailure::Timeout(_) => "timeout",
                RequestFailure::Unreachable(_) => "unreachable",
            },
            Attempt::Refused(_) => "client_error",
            Attempt::Undecodable(_) => "undecodable",
        }
    }

    /// What the attempt says of the service's health: `None` for nothing (a 429 is handled
    /// by the pause, a refused request by no retry).
    fn healthy(&self) -> Option<bool> {
        match self {
            Attempt::Decoded(_) | Attempt::NotFound => Some(true),
            Attempt::Retryable {
                failure: RequestFailure::Status(StatusCode::TOO_MANY_REQUESTS),
                ..
            }
            | Attempt::Refused(_) => None,
            Attempt::Retryable { .. } | Attempt::Undecodable(_) => Some(false),
        }
    }
}

impl Inner {
    /// `GET url?query` on `endpoint`, tried up to `max_attempts` times; `Ok(None)` is a 404
    /// taken as an answer ([`On404::Absent`]).
    async fn get<T>(
        &self,
        endpoint: &Endpoint,
        url: &str,
        query: &[(&str, &str)],
        on_404: On404,
        decode: impl Fn(&[u8]) -> Result<T, BodyError>,
    ) -> Result<Option<T>, ProviderError> {
        let provider = endpoint.provider;
        let mut attempts = 0u32;
        let mut last: Option<(RequestFailure, Option<Duration>)> = None;
        loop {
            let permit = match endpoint.permit() {
                Ok(permit) => permit,
                Err(retry_in) => {
                    return Err(match last {
                        None => ProviderError::BreakerOpen { provider, retry_in },
                        Some((last, _)) => ProviderError::Unavailable {
                            provider,
                            attempts,
                            last,
                            retry_in: Some(retry_in),
                        },
                    });
                }
            };
            self.wait_for_slot(endpoint).await;
            let started = Instant::now();
            let attempt = self.attempt(url, query, &decode).await;
            attempts += 1;
            permit.settle(attempt.healthy());
            let outcome = attempt.outcome();
            self.metrics
                .enrichment_provider_calls
                .get_or_create(&ProviderCallLabel { provider, outcome })
                .inc();
            debug!(
                provider,
                outcome,
                attempt = attempts,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "enrichment provider request"
            );
            let (failure, retry_after) = match attempt {
                Attempt::Decoded(answer) => return Ok(Some(answer)),
                Attempt::NotFound if on_404 == On404::Absent => return Ok(None),
                Attempt::NotFound => {
                    return Err(ProviderError::Rejected {
                        provider,
                        status: StatusCode::NOT_FOUND,
                    });
                }
                Attempt::Refused(status) => {
                    return Err(ProviderError::Rejected { provider, status });
                }
                Attempt::Undecodable(source) => {
                    return Err(ProviderError::Undecodable { provider, source });
                }
                Attempt::Retryable {
                    failure,
                    retry_after,
                } => (failure, retry_after),
            };
            if let Some(wait) = retry_after {
                let until = Instant::now() + wait;
                endpoint.rate.lock().await.pause_until(until);
            }
            if attempts >= self.max_attempts {
                return Err(ProviderError::Unavailable {
                    provider,
                    attempts,
                    last: failure,
                    retry_in: retry_after,
                });
            }
            // A Retry-After is waited for through the bucket (the next slot is after it).
            if retry_after.is_none() {
                let jitter = self.jitter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.backoff.delay(attempts - 1, jitter)).await;
            }
            last = Some((failure, retry_after));
        }
    }

    /// One HTTP request and its classification.
    async fn attempt<T>(
        &self,
        url: &str,
        query: &[(&str, &str)],
        decode: &impl Fn(&[u8]) -> Result<T, BodyError>,
    ) -> Attempt<T> {
        let mut request = self.client.get(url).header(ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retryable {
                    failure: transport_failure(error),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return match read_limited(response).await {
                Ok(body) => match decode(&body) {
                    Ok(answer) => Attempt::Decoded(answer),
                    Err(error) => Attempt::Undecodable(error),
                },
                Err(BodyRead::TooLarge) => Attempt::Undecodable(BodyError::TooLarge {
                    limit: BODY_LIMIT_BYTES,
                }),
                Err(BodyRead::Transport(error)) => Attempt::Retryable {
                    failure: transport_failure(error),
                    retry_after: None,
                },
            };
        }
        if status == StatusCode::NOT_FOUND {
            return Attempt::NotFound;
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let honours_retry_after = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE;
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .filter(|_| honours_retry_after)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            return Attempt::Retryable {
                failure: RequestFailure::Status(status),
                retry_after,
            };
        }
        Attempt::Refused(status)
    }

    /// Waits for the endpoint's next slot (the lock is held only to reserve it).
    async fn wait_for_slot(&self, endpoint: &Endpoint) {
        let wait = endpoint.rate.lock().await.reserve(Instant::now());
        if wait.is_zero() {
            return;
        }
        let label = ProviderLabel {
            provider: endpoint.provider,
        };
        self.metrics
            .enrichment_rate_limit_waits
            .get_or_create(&label)
            .inc();
        self.metrics
            .enrichment_rate_limit_wait_seconds
            .get_or_create(&label)
            .inc_by(wait.as_secs_f64());
        tokio::time::sleep(wait).await;
    }
}

fn transport_failure(error: reqwest::Error) -> RequestFailure {
    if error.is_timeout() {
        RequestFailure::Timeout(error)
    } else {
        RequestFailure::Unreachable(error)
    }
}

enum BodyRead {
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, BodyRead> {
    let limit = BODY_LIMIT_BYTES as u64;
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(BodyRead::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyRead::Transport)? {
        if body.len() + chunk.len() > BODY_LIMIT_BYTES {
            return Err(BodyRead::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Endpoint {
    fn permit(&self) -> Result<HeldPermit<'_>, Duration> {
        let permit = self.with_breaker(|breaker, now| breaker.permit(now))?;
        Ok(HeldPermit {
            endpoint: self,
            permit: Some(permit),
        })
    }

    /// Runs `change` on the breaker, then shows its state on the gauge (and in the log) if it
    /// is not the one shown.
    fn with_breaker<R>(&self, change: impl FnOnce(&mut Breaker, Instant) -> R) -> R {
        // The breaker is left consistent by every call: a panic elsewhere does not spoil it.
        let mut cell = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let result = change(&mut cell.breaker, now);
        let state = cell.breaker.state(now);
        if state != cell.shown {
            cell.shown = state;
            self.breaker_gauge.set(state.as_gauge());
            let provider = self.provider;
            match state {
                BreakerState::Open => warn!(provider, "enrichment provider circuit breaker opened"),
                BreakerState::HalfOpen => {
                    debug!(provider, "enrichment provider circuit breaker half-open");
                }
                BreakerState::Closed => {
                    info!(provider, "enrichment provider circuit breaker closed")
                }
            }
        }
        result
    }
}

/// A breaker permit that is given back even when the look-up is dropped half-way, so that a
/// half-open breaker's trial cannot be lost.
struct HeldPermit<'a> {
    endpoint: &'a Endpoint,
    permit: Option<Permit>,
}

impl HeldPermit<'_> {
    /// Gives the permit back with what the attempt said of the service's health.
    fn settle(mut self, healthy: Option<bool>) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        self.endpoint.with_breaker(|breaker, now| match healthy {
            Some(success) => breaker.record(permit, now, success),
            None => breaker.abandon(permit),
        });
    }
}

impl Drop for HeldPermit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.endpoint
                .with_breaker(|breaker, _| breaker.abandon(permit));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a tiny HTTP/1.1 responder on 127.0.0.1 answering canned responses, one per
    //! connection (`Connection: close`), and noting each request it got.

    use std::collections::{HashMap, VecDeque};
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::metrics::ProviderCallLabel;

    const SEARCH: &str =
        include_str!("../../../../tests/fixtures/enrichment/musicbrainz-recording-search.json");
    const SEARCH_EMPTY: &str = include_str!(
        "../../../../tests/fixtures/enrichment/musicbrainz-recording-search-empty.json"
    );
    const COVERS: &str =
        include_str!("../../../../tests/fixtures/enrichment/coverart-release.json");

    const SEARCH_PATH: &str = "/ws/2/recording";
    const COVER_PATH: &str = "/release/9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
    const COVER_URL: &str = "https://coverartarchive.org/release/9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d/17203569480-500.jpg";

    /// Longest any single look-up of these tests may take.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn answer(status: &str, headers: &[&str], body: &str) -> String {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        format!("{head}\r\n{body}")
    }

    fn ok(body: &str) -> String {
        answer("200 OK", &[], body)
    }

    /// A request the responder got: its target (path and query), its head, when it came.
    #[derive(Debug, Clone)]
    struct Seen {
        target: String,
        head: String,
        at: Instant,
    }

    struct Responder {
        address: SocketAddr,
        seen: Arc<SyncMutex<Vec<Seen>>>,
        task: JoinHandle<()>,
    }

    impl Responder {
        /// Answers requests whose path starts with a route's prefix with that route's
        /// responses in turn; past them (or off every route), 500.
        async fn start(routes: Vec<(&'static str, Vec<String>)>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let seen = Arc::new(SyncMutex::new(Vec::new()));
            let mut routes: HashMap<&'static str, VecDeque<String>> = routes
                .into_iter()
                .map(|(prefix, answers)| (prefix, answers.into()))
                .collect();
            let noted = Arc::clone(&seen);
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    serve(stream, &mut routes, &noted).await;
                }
            });
            Self {
                address,
                seen,
                task,
            }
        }

        fn base_url(&self) -> String {
            format!("http://{}", self.address)
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("seen").clone()
        }

        fn seen_on(&self, prefix: &str) -> Vec<Seen> {
            self.seen()
                .into_iter()
                .filter(|seen| seen.target.starts_with(prefix))
                .collect()
        }
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(
        mut stream: TcpStream,
        routes: &mut HashMap<&'static str, VecDeque<String>>,
        seen: &SyncMutex<Vec<Seen>>,
    ) {
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
                Ok(Ok(read)) if read > 0 => head.extend_from_slice(&buffer[..read]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
        seen.lock().expect("seen").push(Seen {
            target: target.clone(),
            head,
            at: Instant::now(),
        });
        let response = routes
            .iter_mut()
            .find(|(prefix, _)| target.starts_with(**prefix))
            .and_then(|(_, answers)| answers.pop_front())
            .unwrap_or_else(|| answer("500 Internal Server Error", &[], "{}"));
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn config(responder: &Responder) -> EnrichmentConfig {
        EnrichmentConfig {
            musicbrainz_url: responder.base_url(),
            coverart_url: format!("{}/", responder.base_url()),
            user_agent: "playhead-test/1 ( test@example.org )".into(),
            musicbrainz_rate_per_sec: 1000.0,
            coverart_rate_per_sec: 1000.0,
            request_timeout_ms: 5_000,
            max_attempts: 3,
            backoff_initial_ms: 10,
            backoff_max_ms: 20,
            breaker_failures: 5,
            breaker_open_secs: 30,
            min_score: 90,
            ..EnrichmentConfig::default()
        }
    }

    async fn lookup(provider: &HttpProvider) -> Result<Lookup, ProviderError> {
        tokio::time::timeout(DEADLINE, provider.lookup("Nina Simone", "Sinnerman"))
            .await
            .expect("the look-up ends in time")
    }

    fn calls(metrics: &NodeMetrics, provider: &'static str, outcome: &'static str) -> u64 {
        metrics
            .enrichment_provider_calls
            .get_or_create(&ProviderCallLabel { provider, outcome })
            .get()
    }

    fn sinnerman(cover_url: &str) -> Lookup {
        Lookup::Found(Enrichment {
            recording_mbid: "f3a8b9c2-6d1e-4a7b-9c0d-2e5f8a1b3c4d".into(),
            title: "Sinnerman".into(),
            artist: "Nina Simone".into(),
            artist_mbid: "bfcc6d75-a6a5-4bc6-8282-47aec8531818".into(),
            release_mbid: "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d".into(),
            release_title: "Pastel Blues".into(),
            release_year: 1965,
            cover_url: cover_url.into(),
            ..Enrichment::default()
        })
    }

    #[tokio::test]
    async fn given_a_503_then_a_200_when_looking_up_then_it_retries_once_and_finds_the_song_and_cover()
     {
        let responder = Responder::start(vec![
            (
                SEARCH_PATH,
                vec![answer("503 Service Unavailable", &[], "busy"), ok(SEARCH)],
            ),
            (COVER_PATH, vec![ok(COVERS)]),
        ])
        .await;
        let metrics = NodeMetrics::new();
        let provider =
            HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

        let found = lookup(&provider).await.expect("found");

        assert_eq!(found, sinnerman(COVER_URL));
        let searches = responder.seen_on(SEARCH_PATH);
        assert_eq!(searches.len(), 2, "one retry");
        assert_eq!(responder.seen_on(COVER_PATH).len(), 1);
        assert_eq!(
            searches[1].target,
            "/ws/2/recording?query=recording%3A%22Sinnerman%22+AND+artist%3A%22Nina+Simone%22&fmt=json&limit=5"
        );
        let head = searches[1].head.to_ascii_lowercase();
        assert!(
            head.contains("user-agent: playhead-test/1 ( test@example.org )"),
            "{head}"
        );
        assert!(head.contains("accept: application/json"), "{head}");
        assert_eq!(calls(&metrics, MUSICBRAINZ, "server_error"), 1);
        assert_eq!(calls(&metrics, MUSICBRAINZ, "ok"), 1);
        assert_eq!(calls(&metrics, COVERART, "ok"), 1);
    }

    #[tokio::test]
    async fn given_a_429_with_retry_after_when_looking_up_then_the_next_request_waits_for_it() {
        let responder = Responder::start(vec![
            (
                SEARCH_PATH,
                vec![
                    answer("429 Too Many Requests", &["Retry-After: 1"], "slow down"),
                    ok(SEARCH),
                ],
            ),
            (COVER_PATH, vec![ok(COVERS)]),
        ])
        .await;
        let metrics = NodeMetrics::new();
        let provider =
            HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

        let found = lookup(&provider).await.expect("found");

        assert_eq!(found, sinnerman(COVER_URL));
        let searches = responder.seen_on(SEARCH_PATH);
        assert_eq!(searches.len(), 2);
        let gap = searches[1].at - searches[0].at;
        assert!(gap >= Duration::from_millis(1_000), "retried after {gap:?}");
        assert_eq!(calls(&metrics, MUSICBRAINZ, "rate_limited"), 1);
        let waits = metrics
            .enrichment_rate_limit_waits
            .get_or_create(&ProviderLabel {
                provider: MUSICBRAINZ,
            })
            .get();
        assert_eq!(waits, 1, "the retry waited through the bucket");
    }

    #[tokio::test]
    async fn given_a_search_with_no_match_when_looking_up_then_not_found_and_no_cover_call() {
        let responder = Responder::start(vec![(SEARCH_PATH, vec![ok(SEARCH_EMPTY)])]).await;
        let metrics = NodeMetrics::new();
        let provider =
            HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

        let looked_up = lookup(&provider).await.expect("an answer");

        assert_eq!(looked_up, Lookup::NotFound);
        assert_eq!(responder.seen().len(), 1, "{:?}", responder.seen());
    }

    #[tokio::test]
    async fn given_no_cover_for_the_release_when_looking_up_then_the_song_is_found_without_one() {
        let responder = Responder::start(vec![
            (SEARCH_PATH, vec![ok(SEARCH)]),
            (COVER_PATH, vec![answer("404 Not Found", &[], "")]),
        ])
        .await;
        let metrics = NodeMetrics::new();
        let provider =
            HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

        let found = lookup(&provider).await.expect("found");

        assert_eq!(found, sinnerman(""));
        assert_eq!(calls(&metrics, COVERART, "not_found"), 1);
    }

    #[tokio::test]
    async fn given_a_client_error_when_looking_up_then_it_is_rejected_without_retry() {
        let responder = Responder::start(vec![(
            SEARCH_PATH,
            vec![answer("400 Bad Request", &[], "{}"), ok(SEARCH)],
        )])
        .await;
        let metrics = NodeMetrics::new();
        let provider =
            HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

        let error = lookup(&provider).await.expect_err("rejected");

        assert!(
            matches!(
                error,
                ProviderError::Rejected {
                    provider: MUSICBRAINZ,
                    status: StatusCode::BAD_REQUEST
                }
            ),
            "{error:?}"
        );
        assert_eq!(responder.seen().len(), 1);
        assert_eq!(calls(&metrics, MUSICBRAINZ, "client_error"), 1);
    }

    #[tokio::test]
    async fn given_a_body_that_is_no_search_answer_when_looking_up_then_it_is_undecodable() {
        let responder = Responder::start(vec![(
            SEARCH_PATH,
            vec![ok("<html>maintenance</html>"), ok(SEARCH)],
        )])
        .await;
        let metrics = NodeMetrics::new();
        let provider =
            HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

        let error = lookup(&provider).await.expect_err("undecodable");

        assert!(
            matches!(
                error,
                ProviderError::Undecodable {
                    source: BodyError::Musicbrainz(_),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(responder.seen().len(), 1);
        assert_eq!(calls(&metrics, MUSICBRAINZ, "undecodable"), 1);
    }

    #[tokio::test]
    async fn given_a_failing_service_when_its_breaker_opens_then_look_ups_fail_at_once_without_requests()
     {
        let responder = Responder::start(vec![]).await;
        let metrics = NodeMetrics::new();
        let config = EnrichmentConfig {
            max_attempts: 2,
            breaker_failures: 2,
            ..config(&responder)
        };
        let provider = HttpProvider::new(&config, Arc::clone(&metrics)).expect("client");

        let first = lookup(&provider).await.expect_err("unavailable");
        let second = lookup(&provider).await.expect_err("breaker open");

        assert!(
            matches!(
                first,
                ProviderError::Unavailable {
                    attempts: 2,
                    last: RequestFailure::Status(StatusCode::INTERNAL_SERVER_ERROR),
                    ..
                }
            ),
            "{first:?}"
        );
        assert!(
            matches!(
                second,
                ProviderError::BreakerOpen {
                    provider: MUSICBRAINZ,
                    ..
                }
            ),
            "{second:?}"
        );
        assert!(
            second
                .retry_in()
                .is_some_and(|retry_in| retry_in <= Duration::from_secs(30))
        );
        assert_eq!(responder.seen().len(), 2, "no request while open");
        let gauge = metrics
            .enrichment_breaker_state
            .get_or_create(&ProviderLabel {
                provider: MUSICBRAINZ,
            })
            .get();
        assert_eq!(gauge, BreakerState::Open.as_gauge());
    }

    #[tokio::test]
    async fn given_no_server_listening_when_looking_up_then_it_is_unreachable_after_the_attempts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let metrics = NodeMetrics::new();
        let config = EnrichmentConfig {
            musicbrainz_url: format!("http://{address}"),
            coverart_url: format!("http://{address}"),
            max_attempts: 2,
            backoff_initial_ms: 10,
            backoff_max_ms: 20,
            ..EnrichmentConfig::default()
        };
        let provider = HttpProvider::new(&config, Arc::clone(&metrics)).expect("client");

        let error = lookup(&provider).await.expect_err("unreachable");

        assert!(
            matches!(
                error,
                ProviderError::Unavailable {
                    attempts: 2,
                    last: RequestFailure::Unreachable(_),
                    retry_in: None,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(calls(&metrics, MUSICBRAINZ, "unreachable"), 2);
    }
}
