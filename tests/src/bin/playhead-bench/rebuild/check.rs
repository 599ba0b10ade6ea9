//! The correctness spot check of a rebuild: the same `GetSession` and `ListPlays` requests
//! through the gateway before the store is deleted and after it is rebuilt; every answer must
//! be identical. Half of each sample is drawn from what the journal tail touched (so replayed
//! events are checked, not only restored records), half from everything filled.

use std::time::{Duration, Instant};

use playhead_proto::v1::player_service_client::PlayerServiceClient;
use playhead_proto::v1::station_service_client::StationServiceClient;
use playhead_proto::v1::{GetSessionRequest, ListPlaysRequest, ListPlaysResponse, PlayerSession};
use playhead_tests::model::Rng;
use playhead_tests::system::TestGateway;

use super::Workload;
use super::fill::{session_ids, station_id};
use super::tail::Tail;

/// Largest `ListPlays` page: the whole history of a filled station fits in it.
const PAGE_SIZE: u32 = 100;
/// How long a node that says it serves may leave queries unanswered (no responders).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The requests of the spot check.
pub(super) struct Sample {
    sessions: Vec<GetSessionRequest>,
    stations: Vec<ListPlaysRequest>,
}

/// An answer, or the status code and message that came instead.
type Answer<T> = Result<T, (tonic::Code, String)>;

/// What the gateway answered to a sample.
#[derive(PartialEq)]
pub(super) struct Answers {
    sessions: Vec<Answer<PlayerSession>>,
    plays: Vec<Answer<ListPlaysResponse>>,
}

impl Sample {
    pub(super) fn draw(workload: &Workload, tail: &Tail) -> anyhow::Result<Self> {
        let mut rng = Rng::new(31);
        let half = workload.checks / 2;
        let mut sessions = Vec::with_capacity(workload.checks);
        for n in 0..workload.checks {
            let (user, playlist) = if n < half && !tail.touched_sessions.is_empty() {
                let touched = rng.below(tail.touched_sessions.len() as u64) as usize;
                tail.touched_sessions[touched].clone()
            } else {
                session_ids(
                    rng.below(workload.sessions as u64) as usize,
                    workload.sessions_per_user,
                )?
            };
            sessions.push(GetSessionRequest {
                user_id: user.to_string(),
                playlist_id: playlist.to_string(),
            });
        }
        let mut stations = Vec::with_capacity(workload.checks);
        for n in 0..workload.checks {
            let station = if n < half && !tail.changed_stations.is_empty() {
                tail.changed_stations[rng.below(tail.changed_stations.len() as u64) as usize]
            } else {
                rng.below(workload.stations as u64) as usize
            };
            stations.push(ListPlaysRequest {
                station_id: station_id(station)?.to_string(),
                page_size: PAGE_SIZE,
                before: None,
                since: None,
            });
        }
        Ok(Self { sessions, stations })
    }

    /// Asks the sample's first `GetSession` until the node's query service answers it (any
    /// answer but UNAVAILABLE, which is what the gateway makes of "no responders"); returns
    /// how long that took and how many UNAVAILABLE answers came first.
    pub(super) async fn wait_answering(
        &self,
        gateway: &TestGateway,
    ) -> anyhow::Result<(Duration, u32)> {
        let mut players = PlayerServiceClient::new(gateway.authed().await);
        let probe = self.sessions.first().cloned().unwrap_or_default();
        let started = Instant::now();
        let mut unavailable = 0;
        loop {
            match players.get_session(probe.clone()).await {
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    unavailable += 1;
                    anyhow::ensure!(
                        started.elapsed() < ANSWER_TIMEOUT,
                        "the node serves but its queries still go unanswered: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => return Ok((started.elapsed(), unavailable)),
            }
        }
    }

    /// Asks every request of the sample, one at a time.
    pub(super) async fn ask(&self, gateway: &TestGateway) -> Answers {
        let channel = gateway.authed().await;
        let mut players = PlayerServiceClient::new(channel.clone());
        let mut stations = StationServiceClient::new(channel);
        let mut answers = Answers {
            sessions: Vec::with_capacity(self.sessions.len()),
            plays: Vec::with_capacity(self.stations.len()),
        };
        for request in &self.sessions {
            let answer = players.get_session(request.clone()).await;
            answers.sessions.push(unwrap(answer));
        }
        for request in &self.stations {
            let answer = stations.list_plays(request.clone()).await;
            answers.plays.push(unwrap(answer));
        }
        answers
    }
}

fn unwrap<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> Answer<T> {
    answer
        .map(tonic::Response::into_inner)
        .map_err(|status| (status.code(), status.message().to_owned()))
}

impl Answers {
    /// `sessions found / asked, plays listed / stations asked` (the check is vacuous if the
    /// store answered nothing).
    pub(super) fn describe(&self) -> String {
        let sessions = self.sessions.iter().filter(|answer| answer.is_ok()).count();
        let plays: usize = self
            .plays
            .iter()
            .filter_map(|answer| answer.as_ref().ok())
            .map(|page| page.plays.len())
            .sum();
        format!(
            "{sessions} of {} sessions found, {plays} plays listed for {} stations",
            self.sessions.len(),
            self.plays.len()
        )
    }

    /// One line per answer that differs from `before`'s (empty when all are identical).
    pub(super) fn differences(&self, before: &Answers, sample: &Sample) -> Vec<String> {
        let mut differences = Vec::new();
        for ((request, was), is) in sample
            .sessions
            .iter()
            .zip(&before.sessions)
            .zip(&self.sessions)
        {
            if was != is {
                differences.push(format!(
                    "GetSession {}/{}: before {was:?}, after {is:?}",
                    request.user_id, request.playlist_id
                ));
            }
        }
        for ((request, was), is) in sample.stations.iter().zip(&before.plays).zip(&self.plays) {
            if was != is {
                differences.push(format!(
                    "ListPlays {}: before {was:?}, after {is:?}",
                    request.station_id
                ));
            }
        }
        differences
    }
}
