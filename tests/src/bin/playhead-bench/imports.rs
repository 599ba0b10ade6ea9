//! Imports (issue 13): a day's batch of concert listings — `records` JSON Lines over `distinct`
//! shows, each listed `records / distinct` times, the repeats spread through the file and
//! spelled in several ways — stored in the imports bucket and imported by playhead-node, run as
//! a process of its own so that its peak memory is its own (the generated batch lives in the
//! benchmark). Measured, on a broker of its own: the upload; the import from its request to its
//! status COMPLETED; a re-run of the same object under a new import id (nothing new); the
//! node's resident memory before and its peak (`VmHWM`) after; and the bare baseline, the same
//! object read back from the object store and split into lines, no parsing, no storage.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    object_store::{ObjectMetadata, ObjectStore},
};
use futures::StreamExt as _;
use playhead_actors::domain::player::shuffled_order;
use playhead_client::service::nats_auth::NatsRole;
use playhead_proto::ids::{ImportId, SourceId};
use playhead_proto::subjects::{IMPORTS_BUCKET, import_object_name, import_request};
use playhead_proto::v1;
use playhead_tests::harness::NatsServer;
use playhead_tests::imports::{import_status, is_finished};
use playhead_tests::system::{NodeProcess, metric_value, scrape, temp_dir};
use prost::Message as _;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncReadExt as _;

use crate::common::DRAIN_TIMEOUT;
use crate::cpu::cpu_seconds;
use crate::edge::memory_mib;

const SOURCE: &str = "bench-feed";
/// How often the import's status is asked for while it runs: bounds the error on its end.
const STATUS_POLL: Duration = Duration::from_millis(20);
/// Bytes read from the object at a time by the bare read, as many as the node reads.
const READ_BYTES: usize = 64 * 1024;
/// The shows start in the 364 days after tomorrow, each in a minute of its own: show `n`
/// starts `n × MINUTE_STRIDE mod START_MINUTES` minutes after tomorrow.
const START_MINUTES: u64 = 364 * 24 * 60;
/// Coprime with [`START_MINUTES`] (2⁷·3²·5·7·13), so distinct shows never share a minute.
const MINUTE_STRIDE: u64 = 7_919;
/// Venues the shows are spread over.
const VENUES: usize = 800;
const CITIES: [(&str, &str); 8] = [
    ("Oslo", "NO"),
    ("Stockholm", "SE"),
    ("Copenhagen", "DK"),
    ("Helsinki", "FI"),
    ("Berlin", "DE"),
    ("Amsterdam", "NL"),
    ("Paris", "FR"),
    ("London", "GB"),
];

pub(crate) struct Workload {
    /// Lines of the batch, each a listing.
    pub(crate) records: usize,
    /// Distinct shows the listings are of.
    pub(crate) distinct: usize,
    /// Distinct artists the shows are of.
    pub(crate) artists: usize,
    /// Share of shows (percent) every listing of which carries the source's own event id.
    pub(crate) id_percent: u64,
}

impl Workload {
    /// Shows that occur in the batch at all.
    fn shows(&self) -> usize {
        self.distinct.min(self.records)
    }
}

/// One import, from its request to its status COMPLETED.
pub(crate) struct Imported {
    pub(crate) elapsed: Duration,
    /// Until the node's `ImportAccepted` arrived.
    accepted: Duration,
    /// The node's own time for the run (`playhead_import_seconds`).
    node_seconds: f64,
    /// CPU seconds of the node and of the broker meanwhile (`None`: not readable).
    node_cpu: Option<f64>,
    broker_cpu: Option<f64>,
    pub(crate) status: v1::ImportStatus,
}

pub(crate) struct Figures {
    bytes: usize,
    generation: Duration,
    upload: Duration,
    bare_read: Duration,
    bare_lines: u64,
    pub(crate) first: Imported,
    pub(crate) rerun: Imported,
    rss_before_mib: f64,
    peak_after_first_mib: f64,
    pub(crate) peak_rss_mib: f64,
    rss_after_mib: f64,
}

impl Figures {
    /// Import time ÷ bare read time of the same object.
    pub(crate) fn ratio(&self) -> f64 {
        self.first.elapsed.as_secs_f64() / self.bare_read.as_secs_f64()
    }
}

/// The node process and the broker, for the figures read from outside them.
struct Probe {
    node_pid: u32,
    broker_pid: Option<u32>,
    metrics_url: String,
}

impl Probe {
    fn cpu(&self) -> (Option<f64>, Option<f64>) {
        (
            cpu_seconds(&self.node_pid.to_string()),
            self.broker_pid
                .and_then(|pid| cpu_seconds(&pid.to_string())),
        )
    }

    async fn import_seconds(&self) -> f64 {
        metric_value(
            &scrape(&self.metrics_url).await,
            "playhead_import_seconds_sum",
            &[],
        )
    }
}

pub(crate) async fn run(workload: &Workload) -> anyhow::Result<Figures> {
    anyhow::ensure!(
        workload.distinct as u64 <= START_MINUTES,
        "at most {START_MINUTES} distinct shows (one start minute each)"
    );
    eprintln!(
        "imports: generating {} listings of {} shows…",
        workload.records,
        workload.shows()
    );
    let started = Instant::now();
    let batch = generate(workload);
    let generation = started.elapsed();

    let nats = NatsServer::start();
    let data = temp_dir();
    // The harness's node process: it inherits PLAYHEAD_* variables as `node_config` reads them;
    // its test partitions and groups do not reach an import.
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    let probe = Probe {
        node_pid: node.process.pid(),
        broker_pid: nats.pid(),
        metrics_url: format!(
            "http://{}/metrics",
            node.operations_address()
                .context("playhead-node logged no operations endpoint")?
        ),
    };
    let (rss_before_mib, _) = memory_mib(probe.node_pid)?;
    let admin = nats.connect().await;
    let publisher = nats.connect_as(NatsRole::Publisher).await;
    // The node creates the bucket when it starts.
    let bucket = jetstream::new(admin.clone())
        .get_object_store(IMPORTS_BUCKET)
        .await?;
    let source = SourceId::parse(SOURCE)?;
    let object = import_object_name(&source, &ImportId::parse("day-1")?);

    eprintln!("imports: uploading {:.0} MiB…", mib(batch.len()));
    let started = Instant::now();
    upload(&bucket, &object, &batch).await?;
    let upload = started.elapsed();
    let bytes = batch.len();
    drop(batch);

    eprintln!("imports: reading the object back, bare…");
    let started = Instant::now();
    let bare_lines = bare_read(&bucket, &object).await?;
    let bare_read = started.elapsed();
    anyhow::ensure!(
        bare_lines == workload.records as u64,
        "the object read back has {bare_lines} lines, not {}",
        workload.records
    );

    let shows = workload.shows() as u64;
    let records = workload.records as u64;
    eprintln!("imports: importing with playhead-node…");
    let first = import(
        &nats, &publisher, &admin, &probe, &source, "day-1-a", &object,
    )
    .await?;
    check(&first.status, (records, shows, records - shows, 0))?;
    let (_, peak_after_first_mib) = memory_mib(probe.node_pid)?;
    eprintln!("imports: the same object again, under a new import id…");
    let rerun = import(
        &nats, &publisher, &admin, &probe, &source, "day-1-b", &object,
    )
    .await?;
    check(&rerun.status, (records, 0, records, 0))?;
    let (rss_after_mib, peak_rss_mib) = memory_mib(probe.node_pid)?;

    tokio::task::block_in_place(|| node.process.terminate());
    Ok(Figures {
        bytes,
        generation,
        upload,
        bare_read,
        bare_lines,
        first,
        rerun,
        rss_before_mib,
        peak_after_first_mib,
        peak_rss_mib,
        rss_after_mib,
    })
}

/// The batch: the listings of [`listing`] in a fixed shuffled order, so that a show's
/// listings are spread through the file rather than next to each other.
fn generate(workload: &Workload) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tomorrow_minute = now / 60 + 24 * 60;
    let mut batch = Vec::with_capacity(workload.records * 200);
    for slot in shuffled_order(workload.records, 13) {
        let slot = slot as usize;
        let (show, copy) = (slot % workload.distinct, slot / workload.distinct);
        batch.extend_from_slice(listing(workload, tomorrow_minute, show, copy).as_bytes());
        batch.push(b'\n');
    }
    batch
}

/// Listing `copy` of show `show`. The listings of a show name the same artist, venue, city and
/// start, spelled as sources spell them (case, spacing, the offset of the start time), and
/// link to other pages; the shows of `id_percent`% carry the source's event id throughout.
fn listing(workload: &Workload, tomorrow_minute: i64, show: usize, copy: usize) -> String {
    let mut artist = format!("The Band {:04}", show % workload.artists);
    let venue_number = (show * 31) % VENUES;
    let mut venue = format!("Hall {venue_number}");
    let (city, country) = CITIES[venue_number % CITIES.len()];
    let mut city = city.to_owned();
    let odd = copy % 2 == 1;
    if odd {
        artist = artist.to_uppercase();
    }
    if copy % 3 == 2 {
        venue = format!("  {} ", venue.to_lowercase());
        city = city.to_lowercase();
    }
    let minute = tomorrow_minute + ((show as u64 * MINUTE_STRIDE) % START_MINUTES) as i64;
    let offset_hours = if odd { -5 } else { 2 };
    let starts_at = time::OffsetDateTime::from_unix_timestamp(minute * 60)
        .expect("a start within a year")
        .to_offset(time::UtcOffset::from_hms(offset_hours, 0, 0).expect("a valid offset"))
        .format(&Rfc3339)
        .expect("RFC 3339 formats any date of this era");
    let mut line = format!(
        r#"{{"artist":"{artist}","venue":"{venue}","city":"{city}","country":"{country}","starts_at":"{starts_at}","url":"https://tickets.example/shows/{show}?listing={copy}""#
    );
    if (show % 100) < workload.id_percent as usize {
        let _ = write!(line, r#","source_event_id":"ev-{show}""#);
    }
    line.push('}');
    line
}

/// Stores `batch` as `object`, typed as JSON Lines.
async fn upload(bucket: &ObjectStore, object: &str, batch: &[u8]) -> anyhow::Result<()> {
    let metadata = ObjectMetadata {
        name: object.to_owned(),
        metadata: HashMap::from([("content-type".to_owned(), "application/x-ndjson".to_owned())]),
        ..Default::default()
    };
    bucket
        .put(metadata, &mut std::io::Cursor::new(batch))
        .await
        .map_err(|error| anyhow::anyhow!("upload {object}: {error}"))?;
    Ok(())
}

/// Reads `object` back as the node does (64 KiB at a time) and splits it into lines, doing
/// nothing with them: the least an import of it could cost. Returns the lines, the last one
/// counted even without its newline.
async fn bare_read(bucket: &ObjectStore, object: &str) -> anyhow::Result<u64> {
    let mut reader = bucket
        .get(object)
        .await
        .map_err(|error| anyhow::anyhow!("get {object}: {error}"))?;
    let mut buffer = vec![0u8; READ_BYTES];
    // The start of a line cut by the end of a read.
    let mut carry = Vec::new();
    let (mut lines, mut line_bytes) = (0u64, 0usize);
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let mut pieces = buffer[..read].split(|byte| *byte == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_none() {
                carry.extend_from_slice(piece);
                break;
            }
            let line = if carry.is_empty() {
                piece
            } else {
                carry.extend_from_slice(piece);
                &carry[..]
            };
            line_bytes += std::hint::black_box(line).len();
            lines += 1;
            carry.clear();
        }
    }
    if !carry.is_empty() {
        lines += 1;
    }
    std::hint::black_box(line_bytes);
    Ok(lines)
}

/// Publishes the `ImportRequest` of `object` as a publisher would, then asks for its status
/// every [`STATUS_POLL`] until it is COMPLETED (or FAILED): the time in between.
async fn import(
    nats: &NatsServer,
    publisher: &async_nats::Client,
    admin: &async_nats::Client,
    probe: &Probe,
    source: &SourceId,
    import_id: &str,
    object: &str,
) -> anyhow::Result<Imported> {
    let reply = format!(
        "{}.bench-import.{import_id}",
        NatsRole::Publisher.inbox_prefix()
    );
    let mut answers = publisher.subscribe(reply.clone()).await?;
    publisher.flush().await?;
    let subject = import_request(source);
    let request = v1::ImportRequest {
        source: source.as_str().to_owned(),
        import_id: import_id.to_owned(),
        object_name: object.to_owned(),
    };
    let jetstream = jetstream::new(publisher.clone());
    let node_seconds_before = probe.import_seconds().await;
    let (node_cpu_before, broker_cpu_before) = probe.cpu();

    let started = Instant::now();
    jetstream
        .publish_with_headers(
            subject.clone(),
            nats.asking(&subject, &reply),
            request.encode_to_vec().into(),
        )
        .await?
        .await?;
    let answer = tokio::time::timeout(Duration::from_secs(30), answers.next())
        .await
        .context("no answer to the import request in 30 s")?
        .context("the answers' subscription ended")?;
    let accepted = started.elapsed();
    let answer = v1::ImportAccepted::decode(answer.payload)?;
    anyhow::ensure!(
        answer.state == v1::ImportState::Accepted as i32,
        "import {import_id} not accepted: {answer:?}"
    );
    let deadline = started + DRAIN_TIMEOUT;
    let status = loop {
        if let Some(status) = import_status(admin, import_id).await
            && is_finished(&status)
        {
            break status;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "import {import_id} did not finish in {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(STATUS_POLL).await;
    };
    let elapsed = started.elapsed();

    let (node_cpu, broker_cpu) = probe.cpu();
    let since = |now: Option<f64>, then: Option<f64>| Some(now? - then?);
    Ok(Imported {
        elapsed,
        accepted,
        node_seconds: probe.import_seconds().await - node_seconds_before,
        node_cpu: since(node_cpu, node_cpu_before),
        broker_cpu: since(broker_cpu, broker_cpu_before),
        status,
    })
}

/// Fails unless the import completed with (read, new, duplicate, invalid) = `expected`.
fn check(status: &v1::ImportStatus, expected: (u64, u64, u64, u64)) -> anyhow::Result<()> {
    let counts = (
        status.records_read,
        status.records_new,
        status.records_duplicate,
        status.records_invalid,
    );
    anyhow::ensure!(
        status.state == v1::ImportState::Completed as i32 && counts == expected,
        "import {} ended {:?} with (read, new, duplicate, invalid) {counts:?}, expected \
         {expected:?}; failure {:?}; first line errors {:?}",
        status.import_id,
        v1::ImportState::try_from(status.state),
        status.failure,
        &status.errors[..status.errors.len().min(5)]
    );
    Ok(())
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

impl Imported {
    fn print(&self, what: &str, records: f64) {
        println!(
            "  {what:<40} {:>8.2} s {:>10.0} records/s",
            self.elapsed.as_secs_f64(),
            records / self.elapsed.as_secs_f64()
        );
        let cpu = |seconds: Option<f64>| {
            seconds.map_or_else(|| "unavailable".to_owned(), |s| format!("{s:.2} s"))
        };
        println!(
            "    accepted after {:.3} s; the node's own run {:.2} s; CPU: node {}, nats-server {}",
            self.accepted.as_secs_f64(),
            self.node_seconds,
            cpu(self.node_cpu),
            cpu(self.broker_cpu)
        );
        println!(
            "    read {}, new {}, duplicate {}, invalid {}",
            self.status.records_read,
            self.status.records_new,
            self.status.records_duplicate,
            self.status.records_invalid
        );
    }
}

impl Figures {
    pub(crate) fn report(&self, workload: &Workload) -> &Self {
        let records = workload.records as f64;
        println!();
        println!(
            "imports: {} JSON Lines listings ({:.1} MiB) of {} shows, {} artists, {}% of shows with the source's event id; playhead-node as a process of its own",
            workload.records,
            mib(self.bytes),
            workload.shows(),
            workload.artists.min(workload.shows()),
            workload.id_percent
        );
        let line = |what: &str, elapsed: Duration, rate: f64, unit: &str| {
            println!(
                "  {what:<40} {:>8.2} s {rate:>10.0} {unit}",
                elapsed.as_secs_f64()
            );
        };
        line(
            "generate the batch (not timed below)",
            self.generation,
            records / self.generation.as_secs_f64(),
            "records/s",
        );
        line(
            "upload to the object store",
            self.upload,
            mib(self.bytes) / self.upload.as_secs_f64(),
            "MiB/s",
        );
        line(
            "bare: read back, split into lines",
            self.bare_read,
            self.bare_lines as f64 / self.bare_read.as_secs_f64(),
            "lines/s",
        );
        self.first.print("import (request → COMPLETED)", records);
        self.rerun
            .print("re-run, new import id, same object", records);
        println!(
            "  ratio import ÷ bare read time {:.1} (re-run {:.1})",
            self.ratio(),
            self.rerun.elapsed.as_secs_f64() / self.bare_read.as_secs_f64()
        );
        println!(
            "  node RSS before {:.0} MiB; peak (VmHWM) after the import {:.0} MiB, after the re-run {:.0} MiB; RSS after {:.0} MiB",
            self.rss_before_mib, self.peak_after_first_mib, self.peak_rss_mib, self.rss_after_mib
        );
        self
    }
}
