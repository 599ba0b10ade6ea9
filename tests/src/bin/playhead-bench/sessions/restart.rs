//! Restart: from starting the node on a data dir holding N sessions until a `GetSession` of
//! one of them answers through the gateway (sessions load lazily: this is sled recovery and
//! topology set-up), on the first start and on a restart.

use std::time::{Duration, Instant};

use playhead_actors::config::NodeConfig;
use playhead_gateway::auth::AuthedChannel;
use playhead_proto::v1::GetSessionRequest;
use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_tests::system::TestNode;

use super::Workload;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The node's first start on the pre-filled data dir, and its restart.
pub(super) struct Starts {
    first_start: Start,
    pub(super) restart: Start,
}

pub(super) struct Start {
    /// Until `TestNode::start` returned, and until a pre-filled session was served.
    serving: Duration,
    pub(super) answered: Duration,
}

/// Starts the node, stops it, and starts it again; returns the running node.
pub(super) async fn start_and_restart(
    config: &NodeConfig,
    players: &PlayerServiceClient<AuthedChannel>,
    probe: &GetSessionRequest,
) -> anyhow::Result<(TestNode, Starts)> {
    let (node, first_start) = start_until_session(config, players, probe).await?;
    node.stop().await;
    let (node, restart) = start_until_session(config, players, probe).await?;
    Ok((
        node,
        Starts {
            first_start,
            restart,
        },
    ))
}

/// Starts the node; returns it with the time until it served and until `probe` answered.
async fn start_until_session(
    config: &NodeConfig,
    players: &PlayerServiceClient<AuthedChannel>,
    probe: &GetSessionRequest,
) -> anyhow::Result<(TestNode, Start)> {
    let started = Instant::now();
    let node = TestNode::start(config.clone()).await;
    let serving = started.elapsed();
    loop {
        match players.clone().get_session(probe.clone()).await {
            Ok(_) => {
                let answered = started.elapsed();
                return Ok((node, Start { serving, answered }));
            }
            Err(status) if started.elapsed() > START_TIMEOUT => {
                anyhow::bail!("GetSession of a pre-filled session still fails: {status}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

impl Starts {
    pub(super) fn print(&self, workload: &Workload) {
        println!();
        println!(
            "sessions: node start with those {} sessions persisted ({} partitions), until GetSession of one answers through the gateway",
            workload.sessions, workload.partitions
        );
        for (what, start) in [
            ("start on the pre-filled data dir", &self.first_start),
            ("restart", &self.restart),
        ] {
            println!(
                "  {what:<32} serving after {:>6.2} s   GetSession answered after {:>6.2} s",
                start.serving.as_secs_f64(),
                start.answered.as_secs_f64()
            );
        }
    }
}
