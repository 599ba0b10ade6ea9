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
    /// Whether asking the same again cannot help (a 4xx, an unusable client): the song is
    /// given up rather than asked again and again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ProviderError::Rejected { .. }
                | ProviderError::Client(_)
                | ProviderError::InvalidUrl { .. }
        )
    }

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
#[path = "provider_tests.rs"]
mod tests;
