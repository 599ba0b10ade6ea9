//! Imports by reference against the real broker: a batch stored in `PLAYHEAD_IMPORTS`, an
//! `ImportRequest` on `playhead.import.{source}` answered on its reply subject, exact counts and
//! line errors, idempotent re-runs, a restart mid-import, and the shows it lists.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt as _;
use playhead_client::service::nats_auth::NatsRole;
use playhead_proto::ids::SourceId;
use playhead_proto::subjects::{
    DLQ_STREAM, EVENTS_STREAM, IMPORTS_BUCKET, Inbox, Query, import_request,
};
use playhead_proto::v1::{self, list_shows_request::Selector};
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::{eventually, within};
use playhead_tests::imports::{import_status, is_finished, upload_batch};
use playhead_tests::system::{
    NodeProcess, TestNode, metric_value, temp_dir, test_node_config, wait_until_drained,
};
use prost::Message as _;

const DAY_SECS: i64 = 24 * 3600;

/// RFC 3339, with a +02:00 offset, of `days` days and `minutes` minutes after the minute this
/// test process first asked: one base for every call, so two lines written to list the same
/// show agree even when the clock turns a minute between them (a show's start is part of its
/// fingerprint).
fn at(days: i64, minutes: i64) -> String {
    static BASE_MINUTE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base =
        *BASE_MINUTE.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp() / 60 * 60);
    let moment = base + days * DAY_SECS + minutes * 60;
    time::OffsetDateTime::from_unix_timestamp(moment)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn unix(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn json_show(artist: &str, venue: &str, city: &str, starts_at: &str) -> String {
    let page = venue.trim().replace(' ', "-");
    format!(
        r#"{{"artist":"{artist}","venue":"{venue}","city":"{city}","country":"no","starts_at":"{starts_at}","url":"https://tickets.example/{page}"}}"#
    )
}

/// A scraper's side: the publisher user, storing batches in `PLAYHEAD_IMPORTS` and requesting
/// their imports.
struct Scraper<'a> {
    nats: &'a NatsServer,
    publisher: async_nats::Client,
}

impl<'a> Scraper<'a> {
    async fn new(nats: &'a NatsServer) -> Scraper<'a> {
        Scraper {
            nats,
            publisher: nats.connect_as(NatsRole::Publisher).await,
        }
    }

    async fn upload(&self, name: &str, content_type: &str, data: Vec<u8>) {
        upload_batch(
            &jetstream::new(self.publisher.clone()),
            name,
            content_type,
            data,
        )
        .await
        .unwrap();
    }

    /// Publishes an `ImportRequest` with a signed reply subject and returns the node's answer.
    async fn request(&self, source: &str, import_id: &str, object: &str) -> v1::ImportAccepted {
        let reply = format!("_INBOX.publisher.import.{import_id}.{}", rand_suffix());
        let mut answers = self.publisher.subscribe(reply.clone()).await.unwrap();
        self.publisher.flush().await.unwrap();
        let subject = import_request(&SourceId::parse(source).unwrap());
        let request = v1::ImportRequest {
            source: source.into(),
            import_id: import_id.into(),
            object_name: object.into(),
        };
        jetstream::new(self.publisher.clone())
            .publish_with_headers(
                subject.clone(),
                self.nats.asking(&subject, &reply),
                request.encode_to_vec().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let answer = within(
            "the import request's answer",
            Duration::from_secs(20),
            answers.next(),
        )
        .await
        .unwrap();
        v1::ImportAccepted::decode(answer.payload).unwrap()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn finished(client: &async_nats::Client, import_id: &str) -> v1::ImportStatus {
    eventually("the import to finish", Duration::from_secs(60), || async {
        import_status(client, import_id).await.filter(is_finished)
    })
    .await
}

async fn list_shows(
    client: &async_nats::Client,
    request: v1::ListShowsRequest,
) -> v1::ListShowsResponse {
    let answer = client
        .request(Query::ListShows.subject(), request.encode_to_vec().into())
        .await
        .unwrap();
    assert!(
        answer
            .headers
            .as_ref()
            .is_none_or(|headers| headers.get("Nats-Service-Error-Code").is_none()),
        "list_shows failed: {:?}",
        answer.headers
    );
    v1::ListShowsResponse::decode(answer.payload).unwrap()
}

/// Every page of a listing, following the page tokens.
async fn all_pages(
    client: &async_nats::Client,
    selector: Selector,
    page_size: u32,
) -> Vec<v1::Show> {
    let mut shows = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_shows(
            client,
            v1::ListShowsRequest {
                selector: Some(selector.clone()),
                from: None,
                page_size,
                page_token: token,
            },
        )
        .await;
        assert!(page.shows.len() <= page_size as usize);
        shows.extend(page.shows);
        if page.next_page_token.is_empty() {
            return shows;
        }
        token = page.next_page_token;
    }
}

fn counts(status: &v1::ImportStatus) -> (u64, u64, u64, u64) {
    (
        status.records_read,
        status.records_new,
        status.records_duplicate,
        status.records_invalid,
    )
}

async fn completions_in_journal(jetstream: &jetstream::Context, source: &str) -> u64 {
    let stream = jetstream.get_stream(EVENTS_STREAM).await.unwrap();
    let mut subjects = stream
        .info_with_subjects(format!("playhead.events.import.{source}.ImportCompleted"))
        .await
        .unwrap();
    let mut count = 0;
    while let Some(subject) = subjects.next().await {
        count += subject.unwrap().1 as u64;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_and_csv_imports_count_every_line_and_rerun_without_applying_twice() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let admin = nats.connect().await;
    let jetstream = jetstream::new(admin.clone());
    let scraper = Scraper::new(&nats).await;

    let (abba_1, abba_2, queen_1) = (at(3, 0), at(10, 30), at(5, 0));
    let jsonl = [
        json_show("ABBA", "Spektrum", "Oslo", &abba_1),
        String::new(),
        json_show("Queen", "Globen", "Stockholm", &queen_1),
        // The same show again, with other case and spacing: a duplicate.
        json_show("abba", "  spektrum ", "OSLO", &abba_1),
        r#"{"artist":"ABBA","venue":"Hall""#.to_owned(),
        r#"{"artist":"ABBA","venue":"Hall","city":"Oslo","country":"NO","url":"https://x.example"}"#
            .to_owned(),
        json_show("ABBA", "Vega", "Copenhagen", &abba_2),
    ]
    .join("\n");
    scraper
        .upload(
            "scraper-a/batch-1",
            "application/x-ndjson",
            jsonl.into_bytes(),
        )
        .await;
    let accepted = scraper
        .request("scraper-a", "batch-1", "scraper-a/batch-1")
        .await;
    assert_eq!(
        accepted.state,
        v1::ImportState::Accepted as i32,
        "{accepted:?}"
    );
    let first = finished(&admin, "batch-1").await;
    assert_eq!(first.state, v1::ImportState::Completed as i32, "{first:?}");
    assert_eq!(counts(&first), (6, 3, 1, 2), "{first:?}");
    let lines: Vec<u64> = first.errors.iter().map(|error| error.line).collect();
    assert_eq!(lines, vec![5, 6], "{:?}", first.errors);
    assert!(
        first.errors[1].reason.contains("starts_at"),
        "{:?}",
        first.errors
    );

    // CSV, columns in another order: one show already known, one new, one malformed line.
    let csv = format!(
        "city,Artist,venue,starts_at,country,url\n\
         Oslo,ABBA,Spektrum,{abba_1},NO,https://t.example/1\n\
         Bergen,\"Queen\",\"Grieghallen, main\",{},NO,https://t.example/2\n\
         Bergen,Queen,too,few\n",
        at(20, 0)
    );
    scraper
        .upload("scraper-b/batch-2", "text/csv", csv.into_bytes())
        .await;
    scraper
        .request("scraper-b", "batch-2", "scraper-b/batch-2")
        .await;
    let second = finished(&admin, "batch-2").await;
    assert_eq!(counts(&second), (3, 1, 1, 1), "{second:?}");
    assert_eq!(second.errors.len(), 1);
    assert_eq!(second.errors[0].line, 4);

    // The same import id again: its recorded status, nothing applied twice.
    let again = scraper
        .request("scraper-a", "batch-1", "scraper-a/batch-1")
        .await;
    assert_eq!(again.state, v1::ImportState::Completed as i32);
    assert_eq!(
        counts(&import_status(&admin, "batch-1").await.unwrap()),
        (6, 3, 1, 2)
    );
    // A new id with the same content: nothing new.
    scraper
        .request("scraper-a", "batch-3", "scraper-a/batch-1")
        .await;
    let third = finished(&admin, "batch-3").await;
    assert_eq!(counts(&third), (6, 0, 4, 2), "{third:?}");
    // A missing object: failed, with the reason.
    let missing = scraper.request("scraper-a", "batch-4", "nope").await;
    assert_eq!(missing.state, v1::ImportState::Failed as i32);
    assert!(missing.failure.contains("nope"), "{missing:?}");

    // Exactly one ImportCompleted per completed import.
    assert_eq!(completions_in_journal(&jetstream, "scraper-a").await, 2);
    assert_eq!(completions_in_journal(&jetstream, "scraper-b").await, 1);

    // ListShows by artist (normalised as station songs are), paged one at a time.
    let abba = all_pages(&admin, Selector::Artist("  abba ".into()), 1).await;
    let starts: Vec<i64> = abba
        .iter()
        .map(|show| show.starts_at.unwrap().seconds)
        .collect();
    assert_eq!(starts, vec![unix(&abba_1), unix(&abba_2)]);
    assert_eq!(abba[0].venue, "Spektrum");
    assert_eq!(abba[0].country, "NO");
    let queen = all_pages(&admin, Selector::Artist("  QUEEN ".into()), 100).await;
    assert_eq!(
        queen
            .iter()
            .map(|show| show.venue.as_str())
            .collect::<Vec<_>>(),
        vec!["Globen", "Grieghallen, main"]
    );

    // A bad request is dead-lettered with a reason; the next one is served.
    jetstream
        .publish(
            "playhead.import.scraper-a",
            Bytes::from_static(b"\xff\xff not protobuf"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    wait_until_drained(&jetstream, Inbox::Import, Duration::from_secs(20)).await;
    let dlq = jetstream.get_stream(DLQ_STREAM).await.unwrap();
    eventually("the dead letter", Duration::from_secs(10), || {
        let dlq = dlq.clone();
        async move {
            dlq.get_last_raw_message_by_subject("playhead.dlq.import.undecodable")
                .await
                .ok()
        }
    })
    .await;
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "playhead_import_records_total",
            &[("outcome", "new")]
        ),
        4.0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_are_listed_for_a_stations_artists_and_a_listeners_artists() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let admin = nats.connect().await;
    let jetstream = jetstream::new(admin.clone());
    let scraper = Scraper::new(&nats).await;

    let batch = [
        json_show("Kent", "Debaser", "Stockholm", &at(2, 0)),
        json_show("Robyn", "Annexet", "Stockholm", &at(4, 0)),
        json_show("Aurora", "Sentrum", "Oslo", &at(6, 0)),
        json_show("Kent", "Rockefeller", "Oslo", &at(8, 0)),
    ]
    .join("\n");
    scraper
        .upload("s/1", "application/x-ndjson", batch.into_bytes())
        .await;
    scraper.request("s", "i-1", "s/1").await;
    assert_eq!(counts(&finished(&admin, "i-1").await), (4, 4, 0, 0));

    // Kent then Robyn played on radio-1 (Robyn most recently).
    for (artist, title) in [("KENT", "Musik non stop"), ("Robyn", "Dancing on my own")] {
        let song = v1::SongObserved {
            station_id: "radio-1".into(),
            artist: artist.into(),
            title: title.into(),
            ..Default::default()
        };
        jetstream
            .publish("playhead.station.radio-1.song", song.encode_to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_until_drained(&jetstream, Inbox::Station, Duration::from_secs(20)).await;
    let by_station = eventually("radio-1's artists", Duration::from_secs(10), || async {
        let page = list_shows(
            &admin,
            v1::ListShowsRequest {
                selector: Some(Selector::StationId("radio-1".into())),
                ..Default::default()
            },
        )
        .await;
        (page.artists.len() == 2).then_some(page)
    })
    .await;
    assert_eq!(by_station.artists, vec!["robyn", "kent"]);
    assert_eq!(
        by_station
            .shows
            .iter()
            .map(|show| show.venue.as_str())
            .collect::<Vec<_>>(),
        vec!["Debaser", "Annexet", "Rockefeller"]
    );

    // A listener whose live session has Aurora and Kent tracks.
    let start = v1::PlayerCommand {
        user_id: "alice".into(),
        command: Some(v1::player_command::Command::Start(v1::StartPlaylist {
            playlist_id: "mix".into(),
            tracks: vec![
                v1::PlaylistTrack {
                    track_id: "t1".into(),
                    artist: "Aurora".into(),
                },
                v1::PlaylistTrack {
                    track_id: "t2".into(),
                    artist: "kent".into(),
                },
            ],
            ..Default::default()
        })),
    };
    jetstream
        .publish("playhead.user.alice.player", start.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_until_drained(&jetstream, Inbox::User, Duration::from_secs(20)).await;
    let by_user = eventually("alice's artists", Duration::from_secs(10), || async {
        let shows = all_pages(&admin, Selector::UserId("alice".into()), 2).await;
        (shows.len() == 3).then_some(shows)
    })
    .await;
    assert_eq!(
        by_user
            .iter()
            .map(|show| show.venue.as_str())
            .collect::<Vec<_>>(),
        vec!["Debaser", "Sentrum", "Rockefeller"]
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_by_sigkill_completes_after_the_restart_with_exact_counts() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let env = [
        ("PLAYHEAD_IMPORTS__COMMIT_EVERY_LINES", "500"),
        ("PLAYHEAD_STORAGE__COMPACTION_INTERVAL_SECS", "3600"),
        // Slow enough to be cut half-way whatever the machine.
        ("PLAYHEAD_FAULTS", "slow_import_ms=30"),
    ];
    let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    let admin = nats.connect().await;
    let jetstream = jetstream::new(admin.clone());
    let scraper = Scraper::new(&nats).await;

    // 60,000 lines: 20,000 distinct shows, each listed three times, and every 1,000th line bad.
    let mut lines = Vec::new();
    let (mut distinct, mut invalid) = (0u64, 0u64);
    for line in 1..=60_000u64 {
        if line % 1000 == 0 {
            lines.push("not json".to_owned());
            invalid += 1;
            continue;
        }
        let show = line % 20_000;
        lines.push(json_show(
            &format!("artist-{}", show % 500),
            &format!("venue-{show}"),
            "Oslo",
            &at(1 + (show % 300) as i64, 0),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, line) in lines.iter().enumerate() {
        if line != "not json" && seen.insert((index as u64 + 1) % 20_000) {
            distinct += 1;
        }
    }
    scraper
        .upload(
            "big/1",
            "application/x-ndjson",
            lines.join("\n").into_bytes(),
        )
        .await;
    scraper.request("big", "big-1", "big/1").await;
    // Killed once it has committed some lines, well before the end.
    eventually(
        "the import to be under way",
        Duration::from_secs(60),
        || async {
            import_status(&admin, "big-1")
                .await
                .filter(|status| status.records_read >= 1_000)
        },
    )
    .await;
    node.process.kill();
    let cut = import_status(&admin, "big-1").await;
    assert!(cut.is_none(), "the node is gone, nothing answers");
    let first = node;
    let node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    let done = finished(&admin, "big-1").await;
    assert_eq!(done.state, v1::ImportState::Completed as i32);
    // On a miss, what each run said about the import and the shows it found at start.
    let told = |log: String| {
        log.lines()
            .filter(|line| line.contains("import") || line.contains("shows"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        counts(&done),
        (60_000, distinct, 60_000 - distinct - invalid, invalid),
        "{done:?}\nfirst run:\n{}\nafter the restart:\n{}",
        told(first.plain_log()),
        told(node.plain_log())
    );
    assert_eq!(completions_in_journal(&jetstream, "big").await, 1);
    assert!(
        node.plain_log().contains("resuming an unfinished import"),
        "the restart resumed the import"
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_leave_with_their_bucket_once_they_are_over() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut config = test_node_config(&nats.url(), data.path());
    config.imports.show_bucket_secs = 1;
    config.imports.show_keep_after_start_secs = 1;
    config.storage.compaction_interval_secs = 1;
    let node = TestNode::start(config).await;
    let admin = nats.connect().await;
    let scraper = Scraper::new(&nats).await;

    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let later = at(30, 0);
    let batch = [
        json_show("Mew", "Vega", "Copenhagen", &soon),
        json_show("Mew", "Tivoli", "Copenhagen", &later),
    ]
    .join("\n");
    scraper
        .upload("e/1", "application/x-ndjson", batch.clone().into_bytes())
        .await;
    scraper.request("e", "e-1", "e/1").await;
    assert_eq!(counts(&finished(&admin, "e-1").await), (2, 2, 0, 0));
    let listed = all_pages(&admin, Selector::Artist("mew".into()), 10).await;
    assert_eq!(listed.len(), 2, "both are upcoming: {listed:?}");

    // Over, then its bucket dropped by compaction (not a per-row delete).
    eventually(
        "the show's bucket to be dropped",
        Duration::from_secs(30),
        || async {
            let metrics = node.metrics().await;
            (metric_value(
                &metrics,
                "playhead_keyspace_buckets_dropped_total",
                &[("keyspace", "shows")],
            ) >= 1.0)
                .then_some(())
        },
    )
    .await;
    let listed = all_pages(&admin, Selector::Artist("mew".into()), 10).await;
    assert_eq!(
        listed
            .iter()
            .map(|show| show.venue.as_str())
            .collect::<Vec<_>>(),
        vec!["Tivoli"]
    );
    // Gone: the same batch again finds the first show over, not known.
    scraper
        .upload("e/2", "application/x-ndjson", batch.into_bytes())
        .await;
    scraper.request("e", "e-2", "e/2").await;
    let again = finished(&admin, "e-2").await;
    assert_eq!(counts(&again), (2, 0, 1, 1), "{again:?}");
    assert!(
        again.errors[0].reason.contains("over"),
        "{:?}",
        again.errors
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_store_gets_its_imports_and_shows_back_without_journaling_them_twice() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let admin = nats.connect().await;
    let jetstream = jetstream::new(admin.clone());
    let scraper = Scraper::new(&nats).await;
    let batch = [
        json_show("Sigrid", "Spektrum", "Oslo", &at(9, 0)),
        json_show("Sigrid", "Spektrum", "Oslo", &at(9, 0)),
        json_show("Kygo", "Ullevaal", "Oslo", &at(40, 0)),
        "broken".to_owned(),
    ]
    .join("\n");
    scraper
        .upload("r/1", "application/x-ndjson", batch.into_bytes())
        .await;
    scraper.request("r", "r-1", "r/1").await;
    let before = finished(&admin, "r-1").await;
    assert_eq!(counts(&before), (4, 2, 1, 1));
    let shows_before = all_pages(&admin, Selector::Artist("sigrid".into()), 10).await;
    node.stop().await;

    std::fs::remove_dir_all(data.path().join("state")).expect("delete the local store");
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let after = finished(&admin, "r-1").await;
    assert_eq!(counts(&after), counts(&before), "{after:?}");
    assert_eq!(after.errors, before.errors);
    assert_eq!(
        all_pages(&admin, Selector::Artist("sigrid".into()), 10).await,
        shows_before
    );
    assert_eq!(
        all_pages(&admin, Selector::Artist("kygo".into()), 10)
            .await
            .len(),
        1
    );
    assert_eq!(completions_in_journal(&jetstream, "r").await, 1);
    // And the source's journal position came back: the next import appends after it.
    scraper
        .upload("r/2", "application/x-ndjson", b"{}".to_vec())
        .await;
    scraper.request("r", "r-2", "r/2").await;
    assert_eq!(counts(&finished(&admin, "r-2").await), (1, 0, 0, 1));
    assert_eq!(completions_in_journal(&jetstream, "r").await, 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_streams_uploads_into_the_bucket_and_the_cli_follows_them_to_the_end() {
    use playhead_gateway::auth::Role;
    use playhead_proto::v1::import_service_client::ImportServiceClient;
    use playhead_proto::v1::show_service_client::ShowServiceClient;
    use playhead_tests::system::{TestGateway, cli, test_gateway_config};

    let nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), data.path())).await;
    let mut config = test_gateway_config(&nats.url());
    config.imports.max_import_bytes = 64 * 1024;
    let gateway = TestGateway::start_with(config).await;
    let admin = nats.connect().await;
    let jetstream = jetstream::new(admin.clone());

    // The CLI uploads a CSV file through UploadImport and follows WatchImport to the end.
    let files = temp_dir();
    let path = files.path().join("listings.csv");
    let csv = format!(
        "artist,venue,city,country,starts_at,url\n\
         Bicep,Sentrum,Oslo,NO,{},https://t.example/1\n\
         Bicep,Sentrum,Oslo,NO,{},https://t.example/1\n\
         Bicep,nowhere\n",
        at(12, 0),
        at(12, 0)
    );
    std::fs::write(&path, csv).unwrap();
    let target = gateway.cli_target();
    let (ok, out, err) = cli(
        &target,
        &[
            "import",
            path.to_str().unwrap(),
            "--source",
            "web",
            "--id",
            "web-1",
        ],
    )
    .await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("COMPLETED"), "{out}");
    for (what, count) in [("read", 3), ("new", 1), ("duplicate", 1), ("invalid", 1)] {
        assert!(
            out.lines()
                .any(|line| line.split_whitespace().collect::<Vec<_>>()
                    == [what, &count.to_string()]),
            "{what} {count} in:\n{out}"
        );
    }
    assert!(out.contains("line 4:"), "{out}");
    let object = jetstream
        .get_object_store(IMPORTS_BUCKET)
        .await
        .unwrap()
        .info("web/web-1")
        .await
        .unwrap();
    assert_eq!(
        object.metadata.get("file-name").map(String::as_str),
        Some("listings.csv")
    );
    let (ok, out, err) = cli(&target, &["shows", "--artist", "BICEP"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("Sentrum"), "{out}");
    let (ok, out, _) = cli(&target, &["import", "status", "web-1"]).await;
    assert!(ok && out.contains("COMPLETED"), "{out}");

    // The same id again: its recorded state, nothing stored or applied.
    let mut imports = ImportServiceClient::new(gateway.authed().await);
    let again = imports
        .upload_import(futures::stream::iter([v1::ImportChunk {
            source: "web".into(),
            import_id: "web-1".into(),
            data: b"garbage that would be invalid\n".to_vec(),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, v1::ImportState::Completed as i32);
    let status = imports
        .get_import(v1::GetImportRequest {
            import_id: "web-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&status), (3, 1, 1, 1));

    // Over the gateway's size limit: refused, and nothing is left in the bucket.
    let chunk = vec![b'x'; 32 * 1024];
    let refused = imports
        .upload_import(futures::stream::iter((0..3).map(move |index| {
            v1::ImportChunk {
                source: if index == 0 {
                    "web".into()
                } else {
                    String::new()
                },
                import_id: if index == 0 {
                    "web-big".into()
                } else {
                    String::new()
                },
                data: chunk.clone(),
                ..Default::default()
            }
        })))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    let bucket = jetstream.get_object_store(IMPORTS_BUCKET).await.unwrap();
    eventually(
        "the partial object to be deleted",
        Duration::from_secs(10),
        || {
            let bucket = bucket.clone();
            async move {
                let gone = bucket
                    .info("web/web-big")
                    .await
                    .map_or(true, |info| info.deleted);
                gone.then_some(())
            }
        },
    )
    .await;
    assert!(
        imports
            .get_import(v1::GetImportRequest {
                import_id: "web-big".into(),
            })
            .await
            .is_err_and(|status| status.code() == tonic::Code::NotFound),
        "no import was requested"
    );

    // A listener may list shows but not import.
    let listener = gateway.token(Role::Listener, "ann", &[]);
    let mut as_listener = ImportServiceClient::new(gateway.channel_as(&listener).await);
    let denied = as_listener
        .start_import(v1::ImportRequest {
            source: "web".into(),
            import_id: "web-2".into(),
            object_name: "web/web-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let shows = ShowServiceClient::new(gateway.channel_as(&listener).await)
        .list_shows(v1::ListShowsRequest {
            selector: Some(Selector::Artist("bicep".into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shows.shows.len(), 1);
    gateway.stop().await;
    node.stop().await;
}
