//! Traces end to end: a client's `traceparent` on a `StartPlaylist` call is the root of one
//! trace that holds the gateway's RPC span, the node's spans for the command (apply, decide,
//! append, persist), the journal event's message, and the reply — exported over OTLP by both
//! processes to a receiver in this test; a query's trace holds the node's query span.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use playhead_proto::subjects::EVENTS_STREAM;
use playhead_proto::v1::GetSessionRequest;
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::otlp::OtlpReceiver;
use playhead_tests::player::start_request;
use playhead_tests::system::{GatewayProcess, NodeProcess, temp_dir};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// `message` as a gRPC request from a client whose span `CLIENT_SPAN_ID` of trace `trace_id`
/// is sampled.
fn traced<M>(message: M, trace_id: &str) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{CLIENT_SPAN_ID}-01")
            .parse()
            .expect("ascii"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_holds_the_gateway_the_node_the_event_and_the_reply_of_a_start_playlist() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let nats = NatsServer::start();
    let data = temp_dir();
    let mut node = NodeProcess::start(&nats.url(), data.path(), &env).await;
    let mut gateway = GatewayProcess::start(&nats.url(), &env).await;

    let mut player = PlayerServiceClient::new(gateway.authed().await);
    let request = traced(
        start_request("tracy", "traced", 3, Some(7), false),
        TRACE_ID,
    );
    player.start_playlist(request).await.expect("started");

    // Every part of the path, in the client's trace.
    let wanted = [
        ("playhead-gateway", "rpc StartPlaylist"),
        ("playhead-node", "apply"),
        ("playhead-node", "decide"),
        ("playhead-node", "append"),
        ("playhead-node", "persist"),
        ("playhead-node", "reply"),
    ];
    let spans = eventually(
        "the trace to hold the gateway, the node and the reply",
        Duration::from_secs(30),
        || {
            let spans = receiver.trace(TRACE_ID);
            async move {
                let have: BTreeSet<(&str, &str)> = spans
                    .iter()
                    .map(|span| (span.service.as_str(), span.name.as_str()))
                    .collect();
                wanted
                    .iter()
                    .all(|part| have.contains(part))
                    .then_some(spans.clone())
            }
        },
    )
    .await;
    // The gateway's span is the client's child, and the node's command span the gateway's.
    let rpc = spans
        .iter()
        .find(|span| span.name == "rpc StartPlaylist")
        .expect("rpc");
    assert_eq!(rpc.parent_span_id, CLIENT_SPAN_ID);
    let apply = spans
        .iter()
        .find(|span| span.name == "apply")
        .expect("apply");
    assert_eq!(apply.parent_span_id, rpc.span_id, "{spans:#?}");
    for child in ["decide", "append", "persist", "reply"] {
        let span = spans.iter().find(|span| span.name == child).expect(child);
        assert_eq!(span.parent_span_id, apply.span_id, "{child}: {spans:#?}");
    }
    // The journal event carries the command's trace on to whoever reads the journal.
    let events = jetstream::new(nats.connect().await)
        .get_stream(EVENTS_STREAM)
        .await
        .expect("journal");
    let event = events
        .get_last_raw_message_by_subject("playhead.events.user.tracy.SessionStarted")
        .await
        .expect("the SessionStarted event");
    let traceparent = event
        .headers
        .get("traceparent")
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-{}", apply.span_id)),
        "{traceparent}"
    );

    // A query is traced the same way: the node's query span is the gateway's RPC span's child.
    const QUERY_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
    let request = traced(
        GetSessionRequest {
            user_id: "tracy".into(),
            playlist_id: "traced".into(),
        },
        QUERY_TRACE_ID,
    );
    player.get_session(request).await.expect("the session");
    let spans = eventually("the query's trace", Duration::from_secs(30), || {
        let spans = receiver.trace(QUERY_TRACE_ID);
        async move {
            let rpc = spans.iter().find(|span| span.name == "rpc GetSession")?;
            let query = spans.iter().find(|span| span.name == "query")?;
            Some((rpc.clone(), query.clone()))
        }
    })
    .await;
    assert_eq!(spans.0.service, "playhead-gateway");
    assert_eq!(spans.1.service, "playhead-node");
    assert_eq!(spans.1.parent_span_id, spans.0.span_id);
    gateway.process.terminate();
    node.process.terminate();
}
