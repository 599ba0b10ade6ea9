//! Health that tells the truth: the gateway's gRPC health and `/readyz` follow its broker
//! connection (and the health service is listed by reflection); a node is ready only while it
//! serves its groups with the broker up, and a standby says it is waiting.

use std::time::Duration;

use playhead_tests::harness::NatsServer;
use playhead_tests::harness::wait::eventually;
use playhead_tests::system::{
    NodeProcess, TestGateway, TestNode, http_get, metric_value, temp_dir, test_node_config,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const WITHIN: Duration = Duration::from_secs(20);
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

fn assert_process_and_build_metrics(metrics: &str, build_info: &str) {
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let value = metric_value(metrics, name, &[]);
        assert!(value > 0.0, "{name} = {value} in:\n{metrics}");
    }
    let version = format!(
        "{build_info}{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        metrics.lines().any(|line| line == version),
        "{version} in:\n{metrics}"
    );
    assert_eq!(metrics.lines().filter(|line| *line == "# EOF").count(), 1);
}

async fn statuses(gateway: &TestGateway) -> Vec<i32> {
    let mut health = HealthClient::new(gateway.channel().await);
    let mut statuses = Vec::new();
    for service in [
        "",
        "playhead.v1.StationService",
        "playhead.v1.PlayoutService",
    ] {
        statuses.push(
            health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|response| response.into_inner().status)
                .unwrap_or(-1),
        );
    }
    statuses
}

async fn wait_for_statuses(gateway: &TestGateway, wanted: i32, what: &str) {
    eventually(what, WITHIN, || async {
        statuses(gateway)
            .await
            .iter()
            .all(|status| *status == wanted)
            .then_some(())
    })
    .await;
}

async fn wait_for_ready(url: &str, ready: bool, what: &str) -> String {
    eventually(what, WITHIN, || async {
        let (status, body) = http_get(url).await;
        ((status == 200) == ready && status != 0).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_not_serving_while_its_broker_is_down_and_serving_again_after() {
    let mut nats = NatsServer::start();
    let gateway = TestGateway::start(&nats.url()).await;
    let readyz = format!("http://{}/readyz", gateway.endpoints.metrics);
    wait_for_statuses(&gateway, SERVING, "SERVING with the broker up").await;
    wait_for_ready(&readyz, true, "/readyz 200 with the broker up").await;
    let (status, body) = http_get(&format!("http://{}/livez", gateway.endpoints.metrics)).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_process_and_build_metrics(&gateway.metrics().await, "playhead_gateway_build_info");

    nats.stop();
    wait_for_statuses(&gateway, NOT_SERVING, "NOT_SERVING with the broker down").await;
    let body = wait_for_ready(&readyz, false, "/readyz 503 with the broker down").await;
    assert!(body.contains("broker: FAIL"), "{body}");

    nats.restart();
    wait_for_statuses(&gateway, SERVING, "SERVING once the broker is back").await;
    wait_for_ready(&readyz, true, "/readyz 200 once the broker is back").await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_health_service() {
    let nats = NatsServer::start();
    let gateway = TestGateway::start(&nats.url()).await;
    let mut reflection = ServerReflectionClient::new(gateway.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.iter().any(|name| name == "grpc.health.v1.Health"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|name| name == "playhead.v1.PlayoutService"),
        "{names:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_ready_while_it_serves_and_a_standby_says_it_waits() {
    let mut nats = NatsServer::start();
    let data = temp_dir();
    let node = TestNode::start(test_node_config(&nats.url(), &data.path().join("a"))).await;
    let readyz = format!("http://{}/readyz", node.endpoints.metrics);
    let body = wait_for_ready(&readyz, true, "the serving node's /readyz 200").await;
    for check in ["stage: ok", "broker: ok", "store: ok", "intake: ok"] {
        assert!(body.contains(check), "{check} in:\n{body}");
    }
    let (status, _) = http_get(&format!("http://{}/livez", node.endpoints.metrics)).await;
    assert_eq!(status, 200);
    let metrics = node.metrics().await;
    assert_process_and_build_metrics(&metrics, "playhead_build_info");
    // Counters start at 0 for every label set, before anything happened.
    for series in [
        "playhead_dead_letters_total{inbox=\"user\",reason=\"panic\"} 0",
        "playhead_inbox_messages_total{inbox=\"catalog\",outcome=\"applied\"} 0",
        "playhead_batch_retries_total{inbox=\"station\"} 0",
        "playhead_snapshot_failures_total{kind=\"content\"} 0",
        "playhead_keyspace_compaction_failures_total{keyspace=\"view_history\"} 0",
    ] {
        assert!(
            metrics.lines().any(|line| line == series),
            "{series} in:\n{metrics}"
        );
    }

    // A second node on the same broker stands by: live, not ready, and it says why.
    let mut standby = NodeProcess::spawn(&nats.url(), &data.path().join("b"), &[]);
    let address = eventually("the standby to log its operations endpoint", WITHIN, || {
        let address = standby.operations_address();
        async move { address }
    })
    .await;
    let body = wait_for_ready(
        &format!("http://{address}/readyz"),
        false,
        "the standby's /readyz 503",
    )
    .await;
    assert!(body.contains("stage: FAIL acquiring its groups"), "{body}");
    let (status, _) = http_get(&format!("http://{address}/livez")).await;
    assert_eq!(status, 200, "the standby is live");
    standby.process.terminate();

    // Without its broker the serving node is not ready, and says so; then ready again.
    nats.stop();
    let body = wait_for_ready(&readyz, false, "/readyz 503 with the broker down").await;
    assert!(body.contains("broker: FAIL"), "{body}");
    nats.restart();
    wait_for_ready(&readyz, true, "/readyz 200 once the broker is back").await;
    node.stop().await;
}
