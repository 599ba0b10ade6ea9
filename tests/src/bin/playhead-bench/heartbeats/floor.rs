//! The Heartbeat floor: the broker path a `Heartbeat` takes, with no playhead code on it.
//!
//! A request is stored in a scratch inbox stream (PubAck awaited), one relay on the
//! benchmark's runtime pulls it like the node pulls its inbox (durable pull consumer,
//! cumulative acks, chunks of up to [`BATCH`]), appends an event to a scratch journal stream
//! (a chunk's appends side by side, as the node's entities append, their PubAcks awaited
//! together) and answers on a core subject; the client waits for that answer. No disk store,
//! no decision, no gRPC: those are the node's and the gateway's own costs. Paced
//! open-loop like the RPC phases, at their rate, by the same loop, after the node stopped: the
//! least latency a Heartbeat could have on this broker and machine, so the report can say how
//! much of the p99 target the broker path alone takes.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use playhead_client::service::nats_auth::NatsRole;
use playhead_tests::harness::NatsServer;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Workload;
use super::rpc::{Paced, Pacing, on_a_thread_of_its_own, paced};

/// The scratch streams, created and deleted by this phase.
const IN_STREAM: &str = "BENCH_FLOOR_IN";
const JOURNAL_STREAM: &str = "BENCH_FLOOR_JOURNAL";
const RELAY_CONSUMER: &str = "bench-floor-relay";
/// The header naming the subject a request's answer goes to.
const REPLY_HEADER: &str = "Floor-Reply";
/// Subjects per stream, like partitions.
const SUBJECTS: usize = 64;
/// Messages per pull and per chunk: the node's default batch size.
const BATCH: usize = 256;
/// About the size of a stored Heartbeat command and of the event it journals.
const REQUEST: &[u8] = &[b'r'; 100];
const EVENT: &[u8] = &[b'e'; 60];
/// A request unanswered this long counts as an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests waiting for their answer, by number.
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

fn waiters(waiting: &Waiting) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) struct Floor {
    paced: Paced<(), anyhow::Error>,
}

/// Paces requests through the floor path at the workload's rate; deletes the scratch streams
/// whatever the outcome.
pub(super) async fn run(nats: &NatsServer, workload: &Workload) -> anyhow::Result<Floor> {
    let jetstream = jetstream::new(nats.connect().await);
    let floor = relay_and_load(nats, &jetstream, workload).await;
    for stream in [IN_STREAM, JOURNAL_STREAM] {
        jetstream
            .delete_stream(stream)
            .await
            .with_context(|| format!("deleting {stream}"))?;
    }
    floor
}

async fn relay_and_load(
    nats: &NatsServer,
    jetstream: &jetstream::Context,
    workload: &Workload,
) -> anyhow::Result<Floor> {
    let inbox = create_stream(jetstream, IN_STREAM, "floor.in.>").await?;
    create_stream(jetstream, JOURNAL_STREAM, "floor.journal.>").await?;
    let consumer = inbox
        .create_consumer(consumer::pull::Config {
            durable_name: Some(RELAY_CONSUMER.into()),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: (BATCH * 4) as i64,
            ..Default::default()
        })
        .await?;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(relay(jetstream.clone(), consumer, stop.clone()));

    let pacing = Pacing {
        rate: workload.rate,
        duration: workload.duration,
    };
    let (url, options) = (nats.url(), nats.options_as(NatsRole::Admin));
    eprintln!(
        "heartbeats: loading the floor (no playhead) at {} req/s…",
        pacing.rate
    );
    // Like the RPC load generator, apart from the relay.
    let load = on_a_thread_of_its_own("the floor client", move || async move {
        let client = options.connect(url.as_str()).await?;
        load(client, pacing).await
    })
    .await;
    stop.cancel();
    relay.await.context("the floor relay's task")??;
    Ok(Floor { paced: load? })
}

async fn create_stream(
    jetstream: &jetstream::Context,
    name: &str,
    subjects: &str,
) -> anyhow::Result<jetstream::stream::Stream> {
    jetstream
        .create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating {name}"))
}

/// The node's part, bare: pulls the requests in chunks, journals an event for each and
/// answers it, acknowledges each chunk by its last message; until `stop`.
async fn relay(
    jetstream: jetstream::Context,
    consumer: consumer::PullConsumer,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    let mut chunks = messages.ready_chunks(BATCH);
    let client = jetstream.client();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            chunk = chunks.next() => chunk.context("the relay's pull ended")?,
        };
        // As the node does with a batch: every message's event appended at once (the node's
        // entities append side by side), the acknowledgements awaited together, then the
        // answers, then one cumulative ack.
        let mut messages = Vec::with_capacity(chunk.len());
        let mut appends = Vec::with_capacity(chunk.len());
        for message in chunk {
            let message = message.map_err(|error| anyhow::anyhow!("relay pull: {error}"))?;
            let partition = message
                .subject
                .rsplit('.')
                .next()
                .context("a subject has a last token")?;
            appends.push(
                jetstream
                    .publish(
                        format!("floor.journal.{partition}"),
                        Bytes::from_static(EVENT),
                    )
                    .await?,
            );
            messages.push(message);
        }
        for appended in
            futures::future::join_all(appends.into_iter().map(IntoFuture::into_future)).await
        {
            appended?;
        }
        for message in &messages {
            let reply = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(REPLY_HEADER))
                .with_context(|| format!("a request without {REPLY_HEADER}"))?;
            client.publish(reply.to_string(), Bytes::new()).await?;
        }
        if let Some(last) = messages.last() {
            last.double_ack()
                .await
                .map_err(|error| anyhow::anyhow!("relay ack: {error}"))?;
        }
    }
}

/// The client's part: answers through one wildcard subscription, handed to the waiting
/// requests by number; requests paced by the RPC phases' loop.
async fn load(
    client: async_nats::Client,
    pacing: Pacing,
) -> anyhow::Result<Paced<(), anyhow::Error>> {
    let run = std::process::id();
    let mut answers = client.subscribe(format!("floor.reply.{run}.*")).await?;
    client.flush().await?;
    let waiting = Waiting::default();
    let dispatcher = tokio::spawn({
        let waiting = Arc::clone(&waiting);
        async move {
            while let Some(answer) = answers.next().await {
                let number = answer.subject.rsplit('.').next().map(str::parse::<u64>);
                // A request no longer waiting has timed out: its error is counted already.
                if let Some(Ok(number)) = number
                    && let Some(waiter) = waiters(&waiting).remove(&number)
                {
                    let _ = waiter.send(());
                }
            }
        }
    });
    let jetstream = jetstream::new(client);
    let paced = paced(std::slice::from_ref(&jetstream), pacing, |jetstream, n| {
        let waiting = Arc::clone(&waiting);
        async move {
            let number = n as u64;
            let (answered, answer) = oneshot::channel();
            waiters(&waiting).insert(number, answered);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(REPLY_HEADER, format!("floor.reply.{run}.{number}"));
            let request = async {
                jetstream
                    .publish_with_headers(
                        format!("floor.in.{}", n % SUBJECTS),
                        headers,
                        Bytes::from_static(REQUEST),
                    )
                    .await?
                    .await?;
                answer.await.context("the answer's sender dropped")
            };
            let result = tokio::time::timeout(ANSWER_TIMEOUT, request).await;
            waiters(&waiting).remove(&number);
            result.with_context(|| format!("no answer within {ANSWER_TIMEOUT:?}"))?
        }
    })
    .await;
    dispatcher.abort();
    Ok(paced)
}

impl Floor {
    /// The floor's p99 in ms.
    pub(super) fn p99(&self) -> f64 {
        self.paced.phase.millis_at(0.99)
    }

    /// The floor's lines, and the ratio of the Heartbeat's p99 (ms) to the floor's.
    pub(super) fn print(&self, heartbeat_p99: f64) {
        println!(
            "  floor (no playhead: JetStream publish → pull consumer → journal publish → core reply), same pacing"
        );
        self.paced.print("floor");
        println!(
            "  ratio Heartbeat ÷ floor p99 {:.1}",
            heartbeat_p99 / self.p99()
        );
    }
}
