//! Tests of `provider.rs` (kept apart: the client is long enough on its own).
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
const SEARCH_EMPTY: &str =
    include_str!("../../../../tests/fixtures/enrichment/musicbrainz-recording-search-empty.json");
const COVERS: &str = include_str!("../../../../tests/fixtures/enrichment/coverart-release.json");

const SEARCH_PATH: &str = "/ws/2/recording";
const COVER_PATH: &str = "/release/9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
const COVER_URL: &str =
    "https://coverartarchive.org/release/9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d/17203569480-500.jpg";

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
    let provider = HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

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
    let provider = HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

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
    let provider = HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

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
    let provider = HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

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
    let provider = HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

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
    let provider = HttpProvider::new(&config(&responder), Arc::clone(&metrics)).expect("client");

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
