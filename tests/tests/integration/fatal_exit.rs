//! A node whose partition intake ends while it is serving (here: its inbox consumer is deleted
//! under it) shuts down in order and exits non-zero with the cause on its last line, so a
//! supervisor (systemd `Restart=on-failure`, Kubernetes) restarts it instead of taking the exit
//! for a requested stop.

use std::time::Duration;

use playhead_proto::subjects::Inbox;
use playhead_tests::harness::NatsServer;
use playhead_tests::system::{NodeProcess, temp_dir};

/// Generous for a debug build on a busy machine: the pull stream sees the deletion at once,
/// the shutdown then drains the other partitions.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_inbox_consumer_makes_the_node_exit_with_an_error() {
    let nats = NatsServer::start();
    let data = temp_dir();
    let jetstream = async_nats::jetstream::new(nats.connect().await);
    let mut node = NodeProcess::start(&nats.url(), data.path(), &[]).await;
    assert!(
        node.process.is_running(),
        "the node serves before the fault"
    );

    let consumer = Inbox::Station.consumer_name(0, playhead_tests::system::TEST_GROUPS);
    jetstream
        .get_stream(Inbox::Station.stream_name())
        .await
        .expect("the station inbox stream")
        .delete_consumer(&consumer)
        .await
        .expect("delete the consumer of group 0");

    // `wait_for_exit` polls the child with a deadline; keep the blocking off the runtime.
    let status = tokio::task::block_in_place(|| node.process.wait_for_exit(EXIT_TIMEOUT));
    let log = std::fs::read_to_string(node.process.log_path()).expect("read the node's log");
    assert_eq!(
        status.code(),
        Some(1),
        "an intake that ends is a failure, not a requested stop: {status}; log:\n{log}"
    );
    let last_line = log.lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("playhead-node: ") && last_line.contains(&consumer),
        "the last line names the cause (the consumer {consumer}):\n{log}"
    );
    assert!(
        log.contains("storage flushed") && log.contains("playhead-node stopped"),
        "the node stopped in order before exiting:\n{log}"
    );
}
