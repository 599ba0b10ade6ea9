//! The operator console in a real browser (Debian's chromium, driven over WebDriver): songs
//! published over NATS appear on the wall without a reload, with what the node's enrichment
//! found out about them (release, year, cover, MusicBrainz link, from a local test provider),
//! and a dead-lettered message shows up, is fixed in the page and replayed into its inbox,
//! where the node applies it.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use playhead_actors::config::{EnrichmentProvider, NodeConfig};
use playhead_gateway::auth::Role;
use playhead_proto::headers::{CONTENT_TYPE, JSON_CONTENT_TYPE};
use playhead_proto::ids::StationId;
use playhead_proto::subjects::{DLQ_STREAM, Inbox, station_song};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, on_big_stack};
use playhead_tests::model::{Observation, publish_all};
use playhead_tests::provider::{ExpectedEnrichment, TestProvider};
use playhead_tests::system::{
    TestGateway, TestNode, http_get, http_request_with, metric_value, temp_dir, test_node_config,
    wait_until_drained,
};
use playhead_tests::webdriver::Browser;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn card(station: &str, part: &str) -> String {
    format!("article.card[data-station=\"{station}\"] {part}")
}

/// The node's configuration with enrichment asking `provider`.
fn enriching(nats_url: &str, data: &std::path::Path, provider: &TestProvider) -> NodeConfig {
    let mut config = test_node_config(nats_url, data);
    let enrichment = &mut config.enrichment;
    enrichment.provider = EnrichmentProvider::Musicbrainz;
    enrichment.musicbrainz_url = provider.musicbrainz_url();
    enrichment.coverart_url = provider.coverart_url();
    enrichment.musicbrainz_rate_per_sec = 5.0;
    enrichment.coverart_rate_per_sec = 5.0;
    config
}

/// A check of the page, as a future on the heap. The test's body is one large `async` block, and
/// in a debug build its stack frame keeps a slot for every future it awaits, next to the node it
/// starts on the same 2 MiB test thread: checks built here take no room there.
type Check<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Waits until the card of `station` links the recording `expected` is about (the link is what
/// tells one song's enrichment from another's: the provider gives every song the same release
/// title), then checks the rest of the enrichment block against `expected`.
fn assert_enriched_card<'a>(
    browser: &'a Browser,
    station: &'a str,
    expected: &'a ExpectedEnrichment,
) -> Check<'a> {
    Box::pin(async move {
        let link = card(station, ".enrichment a.musicbrainz");
        let href = format!(
            "https://musicbrainz.org/recording/{}",
            expected.recording_mbid
        );
        let predicate = format!(
            "const link = document.querySelector({link}); \
             return link !== null && link.getAttribute('href') === {href};",
            link = json!(link),
            href = json!(href),
        );
        browser
            .wait_for(&format!("{station} to link {href}"), WAIT, &predicate)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
        let text_of = |part: &str| {
            let css = card(station, &format!(".enrichment {part}"));
            async move {
                browser
                    .find(&css)
                    .await
                    .unwrap_or_else(|error| panic!("{css}: {error:#}"))
                    .text()
                    .await
                    .unwrap_or_else(|error| panic!("the text of {css}: {error:#}"))
            }
        };
        let year = format!("({})", expected.release_year);
        assert_eq!(
            text_of(".release").await,
            format!("{} {year}", expected.release_title),
            "{station}: the release and its year"
        );
        assert_eq!(text_of(".year").await.trim(), year, "{station}: the year");
        assert_eq!(text_of("a.musicbrainz").await, "MusicBrainz", "{station}");

        // The cover cannot load (the browser resolves no name, only 127.0.0.1 is reachable) and
        // the page hides a cover once it fails, whenever that is: check its attributes, which are
        // the same on every machine and at any moment.
        let cover_css = card(station, ".enrichment img.cover");
        let cover = browser
            .find(&cover_css)
            .await
            .unwrap_or_else(|error| panic!("{cover_css}: {error:#}"));
        let mut attributes = Vec::new();
        for name in ["src", "alt", "loading"] {
            let value = cover
                .attribute(name)
                .await
                .unwrap_or_else(|error| panic!("{cover_css} {name}: {error:#}"));
            attributes.push(value);
        }
        assert_eq!(
            attributes,
            [
                Some(expected.cover_url.clone()),
                Some(expected.release_title.clone()),
                Some("lazy".to_owned()),
            ],
            "{station}: the cover's src, alt and loading"
        );
    })
}

/// Waits until the node has had the provider's not-found answer (before it, no enrichment
/// block proves nothing), then checks that the card of `station`, playing `title`, has none.
fn assert_unenriched_card<'a>(
    browser: &'a Browser,
    node: &'a TestNode,
    station: &'a str,
    title: &'a str,
) -> Check<'a> {
    Box::pin(async move {
        eventually("the provider's not-found answer", WAIT, || async {
            let metrics = node.metrics().await;
            let not_found = metric_value(
                &metrics,
                "playhead_enrichment_songs_total",
                &[("outcome", "not_found")],
            );
            (not_found >= 1.0).then_some(())
        })
        .await;
        browser
            .wait_for_text(&card(station, ".title"), title, WAIT)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"));
        let blocks = browser
            .find_all(&card(station, ".enrichment"))
            .await
            .expect("find");
        assert!(blocks.is_empty(), "{station}: an enrichment for {title:?}");
    })
}

async fn songs(jetstream: &async_nats::jetstream::Context, songs: &[(&str, &str, &str)]) {
    let observations: Vec<Observation> = songs
        .iter()
        .map(|(station, artist, title)| Observation {
            station: station.to_string(),
            artist: artist.to_string(),
            title: title.to_string(),
        })
        .collect();
    publish_all(jetstream, &observations).await;
}

/// Where the screenshots go: `target/console-*.png`, and with `PLAYHEAD_UPDATE_SCREENSHOTS=1`
/// also `gateway/console/` (the pictures the README shows).
fn screenshot_paths(name: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = vec![root.join("target").join(format!("console-{name}.png"))];
    if std::env::var_os("PLAYHEAD_UPDATE_SCREENSHOTS").is_some() {
        paths.push(root.join("gateway/console").join(format!("{name}.png")));
    }
    paths
}

async fn screenshot(browser: &Browser, name: &str) {
    for path in screenshot_paths(name) {
        browser
            .save_screenshot(&path)
            .await
            .unwrap_or_else(|error| panic!("screenshot {}: {error}", path.display()));
    }
}

async fn click(browser: &Browser, css: &str) {
    browser
        .find(css)
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("click {css}: {error}"));
}

/// A console API read with `token`.
async fn api_as(console: &str, token: &str, path: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let (status, body) = http_request_with(
        "GET",
        &format!("{console}{path}"),
        None,
        &[("authorization", &bearer)],
    )
    .await;
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|error| panic!("{path} answered {status} with non-JSON ({error}): {body}"));
    (status, value)
}

#[test]
fn the_console_shows_songs_live_and_replays_a_fixed_dead_letter() {
    // The scenario's state machine is over 1 MiB in a debug build, near the test thread's
    // 2 MiB stack.
    on_big_stack(shows_songs_live_and_replays_a_fixed_dead_letter);
}

async fn shows_songs_live_and_replays_a_fixed_dead_letter() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let provider = TestProvider::start().await.expect("the provider starts");
    provider.set_not_found("The Kinks", "Waterloo Sunset");
    let node = TestNode::start(enriching(&nats.url(), data.path(), &provider)).await;
    let gateway = TestGateway::start(&nats.url()).await;
    let console = format!(
        "http://{}",
        gateway
            .endpoints
            .console
            .expect("the test gateway serves a console")
    );
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    songs(
        &jetstream,
        &[
            ("radio-jazz", "Miles Davis", "Blue in Green"),
            ("radio-soul", "Aretha Franklin", "Respect"),
            ("radio-rock", "The Kinks", "Waterloo Sunset"),
        ],
    )
    .await;
    wait_until_drained(&jetstream, Inbox::Station, WAIT).await;

    let admin = gateway.admin_token();
    let api = |console: &str, path: &str| {
        let (console, path, admin) = (console.to_owned(), path.to_owned(), admin.clone());
        async move { api_as(&console, &admin, &path).await }
    };

    // The API needs an operator's or admin's token: none is 401, a listener's 403.
    let (status, _) = http_get(&format!("{console}/api/status")).await;
    assert_eq!(status, 401);
    let listener = gateway.token(Role::Listener, "ann", &[]);
    let (status, refused) = api_as(&console, &listener, "/api/status").await;
    assert_eq!(status, 403, "{refused}");

    // Given a person signed in with the admin token in the page.
    let browser = Browser::start().await.expect("the browser starts");
    browser.goto(&format!("{console}/")).await.expect("page");
    let token_box = browser
        .find("#login-token")
        .await
        .expect("the sign-in form");
    token_box.send_keys(&admin).await.expect("type the token");
    click(&browser, "#login-submit").await;
    browser
        .wait_for_text("#live", "live", WAIT)
        .await
        .expect("the page follows the event stream");
    browser
        .wait_for_text("#who", "tests (admin)", WAIT)
        .await
        .expect("who is signed in");
    // Given: what was playing before the page opened is on the wall.
    browser
        .wait_for_text(&card("radio-soul", ".title"), "Respect", WAIT)
        .await
        .expect("the snapshot");
    // A mark that a reload would wipe.
    browser
        .execute("window.playheadMark = 'same page'; return true;", json!([]))
        .await
        .expect("script");

    // When a song is published over NATS, then it appears on the wall, and so does the next.
    songs(&jetstream, &[("radio-live", "Nina Simone", "Sinnerman")]).await;
    browser
        .wait_for_text(&card("radio-live", ".title"), "Sinnerman", WAIT)
        .await
        .expect("the new song on the wall");
    songs(&jetstream, &[("radio-live", "Nina Simone", "Feeling Good")]).await;
    browser
        .wait_for_text(&card("radio-live", ".title"), "Feeling Good", WAIT)
        .await
        .expect("the next song on the wall");

    // Then what the node's enrichment found follows on the card: the release and its year, the
    // recording on MusicBrainz and the cover; and a song played before the page opened has its
    // enrichment too.
    assert_enriched_card(
        &browser,
        "radio-live",
        &TestProvider::expected("Nina Simone", "Feeling Good"),
    )
    .await;
    assert_enriched_card(
        &browser,
        "radio-soul",
        &TestProvider::expected("Aretha Franklin", "Respect"),
    )
    .await;
    // A song the provider does not know gets no enrichment block.
    assert_unenriched_card(&browser, &node, "radio-rock", "Waterloo Sunset").await;
    let mark = browser
        .execute("return window.playheadMark;", json!([]))
        .await
        .expect("script");
    assert_eq!(
        mark,
        json!("same page"),
        "the songs and their enrichment came without a reload"
    );
    screenshot(&browser, "wall").await;

    // When a publisher sends JSON with a field SongObserved does not have, then it is
    // dead-lettered as undecodable and the station plays nothing.
    let station = StationId::parse("radio-fixed").unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(CONTENT_TYPE, JSON_CONTENT_TYPE);
    let broken = r#"{"stationId": "radio-fixed", "artist": "John Coltrane", "title": "Naima", "album": "Giant Steps"}"#;
    jetstream
        .publish_with_headers(station_song(&station), headers, broken.into())
        .await
        .expect("publish")
        .await
        .expect("the inbox takes it");
    click(&browser, "#tab-dead-letters").await;
    let letter = "article.letter[data-reason=\"undecodable\"]";
    browser
        .wait_for_text(
            &format!("{letter} .subject"),
            "playhead.station.radio-fixed.song",
            WAIT,
        )
        .await
        .expect("the dead letter in the console");
    let detail = browser
        .find(&format!("{letter} .detail"))
        .await
        .expect("detail")
        .text()
        .await
        .expect("text");
    assert!(
        detail.contains("album"),
        "the reason names the field: {detail}"
    );
    screenshot(&browser, "dead-letters").await;

    // When the operator removes the unknown field in the page and replays the letter, then the
    // node applies it: the song is on the wall and the letter has left the dead-letter stream.
    let letter = browser.find(letter).await.expect("letter");
    let sequence: u64 = letter
        .attribute("data-sequence")
        .await
        .expect("attribute")
        .expect("data-sequence")
        .parse()
        .expect("a sequence");
    // A replay that would only be dead-lettered again is refused with the reason, and the
    // letter stays.
    let replay = |token: String, payload: &'static str| {
        let url = format!("{console}/api/dead-letters/{sequence}/replay");
        async move {
            let bearer = format!("Bearer {token}");
            http_request_with(
                "POST",
                &url,
                Some(&json!({ "payload": payload })),
                &[("authorization", &bearer)],
            )
            .await
        }
    };
    // An operator reads but cannot replay.
    let operator = gateway.token(Role::Operator, "ops", &[]);
    let (status, _) = api_as(&console, &operator, "/api/dead-letters").await;
    assert_eq!(status, 200);
    let (status, refused) = replay(operator, r#"{"stationId": "radio-fixed"}"#).await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = replay(
        admin.clone(),
        r#"{"stationId": "radio-fixed", "mood": "blue"}"#,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused.contains("mood") && refused.contains("fix the payload"),
        "{refused}"
    );
    let payload = letter.find("textarea.payload").await.expect("payload");
    payload.clear().await.expect("clear");
    payload
        .send_keys(r#"{"stationId": "radio-fixed", "artist": "John Coltrane", "title": "Naima"}"#)
        .await
        .expect("type the fix");
    letter
        .find("button.replay")
        .await
        .expect("replay button")
        .click()
        .await
        .expect("click");
    click(&browser, "#tab-wall").await;
    browser
        .wait_for_text(&card("radio-fixed", ".title"), "Naima", WAIT)
        .await
        .expect("the replayed song applied and on the wall");
    let remaining = eventually("the letter to leave the DLQ", WAIT, || {
        let console = console.clone();
        async move {
            let (_, list) = api(&console, "/api/dead-letters").await;
            let gone = list["letters"]
                .as_array()?
                .iter()
                .all(|letter| letter["sequence"] != json!(sequence));
            gone.then_some(list)
        }
    })
    .await;
    assert_eq!(remaining["total"], json!(0), "{remaining}");
    let mut dlq = jetstream.get_stream(DLQ_STREAM).await.expect("dlq");
    assert_eq!(dlq.info().await.expect("info").state.messages, 0);

    // The status shows the node holding its groups and every group's consumer.
    let (status, report) = api(&console, "/api/status").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["gateway"]["broker"], json!("connected"));
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{report}");
    assert!(!nodes[0]["groups"].as_array().expect("groups").is_empty());
    assert!(
        !report["consumers"]
            .as_array()
            .expect("consumers")
            .is_empty()
    );
    // Bad input to the API is answered with a reason, not a crash.
    let (status, error) = api(&console, "/api/users/not.an.id").await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().is_some_and(|text| !text.is_empty()));
    let (status, _) = http_request_with(
        "GET",
        &format!("{console}/api/dead-letters/999999/replay"),
        None,
        &[("authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert_eq!(status, 405, "replay is a POST");

    browser.quit().await.expect("browser quits");
    node.stop().await;
}
