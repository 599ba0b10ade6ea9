//! Tests of `provider.rs` (kept apart: the client is long enough on its own).
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
         Accept: application/json\r\nConnection: close\r\n\r\n"
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
        "POST /coverart/release/x HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .into(),
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

#[tokio::test]
async fn a_connection_is_kept_alive_until_the_client_asks_to_close_it() {
    let provider = provider().await;
    let cover = |connection: &str| {
        format!(
            "GET /coverart/release/9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d HTTP/1.1\r\n\
             Host: x\r\n{connection}\r\n"
        )
    };
    // Two requests on one connection, the second asking to close: two answers, then the end.
    let answer = exchange(
        provider.address,
        [cover(""), cover("Connection: close\r\n")].concat(),
    )
    .await;
    let answer = String::from_utf8(answer).expect("UTF-8");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(answer.matches("Connection: keep-alive").count(), 1);
    assert_eq!(answer.matches("Connection: close").count(), 1);
    assert_eq!(provider.calls_to(Service::CoverArt).len(), 2);
}
