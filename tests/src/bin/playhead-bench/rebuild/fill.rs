//! The state a rebuild restores, built offline: player sessions (the sessions phase's
//! fixtures, spread over users) and stations with a few plays each written straight into a
//! node's store, then the three kinds' snapshots taken from that store at journal sequence 0.
//!
//! Every record is what the node itself would have written for that history: stations are
//! decided and folded by the station decider and stored through `StationStore::commit`. No
//! record claims an inbox message (`last_applied_seq` 0) nor a journal event
//! (`last_journal_seq` 0): the phase's broker is new, its inboxes and journal empty.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectStore;
use playhead_actors::config::NodeConfig;
use playhead_actors::domain::decider::Decider;
use playhead_actors::domain::station::{
    ObserveSong, StationCommand, StationDecider, StationEvent, StationState,
};
use playhead_actors::domain::time::Timestamp;
use playhead_actors::journal::snapshot::SnapshotMeta;
use playhead_actors::node::snapshots::KINDS;
use playhead_actors::node::store::state_dir;
use playhead_actors::storage::Storage;
use playhead_actors::storage::clock::{Clock, SystemClock};
use playhead_actors::storage::station_store::StoredStation;
use playhead_proto::ids::{PlaylistId, StationId, UserId};
use playhead_tests::model::Rng;

use super::Workload;
use crate::sessions::fixtures::{PREFILLED_TRACKS, fill_spread, spread_ids, stored_session};

/// Ids of the phase's users and stations, apart from every other phase's.
const USER_PREFIX: &str = "rb-u";
const STATION_PREFIX: &str = "rb-station-";
/// Distinct songs the stations play, and artists they are by.
pub(super) const SONGS: u64 = 50_000;
const ARTISTS: u64 = 2_000;
/// Time between two filled plays of a station.
const PLAY_LENGTH: Duration = Duration::from_secs(200);
/// How long ago the filled sessions were last touched (well within their TTL).
const SESSIONS_TOUCHED_AGO: Duration = Duration::from_secs(24 * 3600);

pub(super) fn station_id(n: usize) -> anyhow::Result<StationId> {
    Ok(StationId::parse(format!("{STATION_PREFIX}{n:06}"))?)
}

/// The `n`th filled session.
pub(super) fn session_ids(n: usize, per_user: usize) -> anyhow::Result<(UserId, PlaylistId)> {
    spread_ids(USER_PREFIX, n, per_user)
}

/// Song `number` as pollers spell it.
pub(super) fn song(number: u64) -> (String, String) {
    (
        format!("Artist {}", number % ARTISTS),
        format!("Song Title {number}"),
    )
}

/// The filled store, still open, and what filling it took.
pub(super) struct Filled {
    pub(super) storage: Storage,
    pub(super) sessions: Duration,
    pub(super) stations: Duration,
    pub(super) plays: u64,
    /// The song on air on each station at the end.
    pub(super) on_air: Vec<u64>,
}

/// Fills the store of `config`'s data dir (blocking: run it off the runtime).
pub(super) fn fill(config: &NodeConfig, workload: &Workload) -> anyhow::Result<Filled> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_millis();
    let storage = Storage::open(&state_dir(config), config, clock)?;

    eprintln!(
        "rebuild: filling the store with {} sessions…",
        workload.sessions
    );
    let mut session = stored_session(
        PREFILLED_TRACKS,
        now - SESSIONS_TOUCHED_AGO.as_millis() as u64,
    );
    session.last_applied_seq = 0;
    let sessions = fill_spread(
        &storage.sessions,
        (USER_PREFIX, workload.sessions_per_user),
        workload.sessions,
        &session,
    )?;

    eprintln!(
        "rebuild: filling the store with {} stations…",
        workload.stations
    );
    let started = Instant::now();
    let mut rng = Rng::new(11);
    let mut on_air = Vec::with_capacity(workload.stations);
    let mut plays = 0;
    for n in 0..workload.stations {
        let station = station_id(n)?;
        let first_play = now - PLAY_LENGTH.as_millis() as u64 * workload.plays_per_station as u64;
        let mut state = StationState::default();
        let mut events: Vec<StationEvent> = Vec::new();
        let mut current = 0;
        for play in 0..workload.plays_per_station {
            current = rng.below(SONGS);
            let (artist, title) = song(current);
            let observed = StationCommand::ObserveSong(ObserveSong {
                artist,
                title,
                raw: String::new(),
                known: None,
            });
            let at =
                Timestamp::from_millis(first_play + PLAY_LENGTH.as_millis() as u64 * play as u64);
            let decided = StationDecider.decide(&observed, &state, at)?;
            state = StationDecider::fold(state, &decided);
            events.extend(decided);
        }
        plays += state.last_play_seq;
        on_air.push(current);
        let events: Vec<&StationEvent> = events.iter().collect();
        storage.stations.commit(
            &station,
            &events,
            &StoredStation {
                state,
                last_applied_seq: 0,
                last_journal_seq: 0,
            },
        )?;
    }
    let stations = started.elapsed();
    storage.flush()?;
    Ok(Filled {
        storage,
        sessions,
        stations,
        plays,
        on_air,
    })
}

/// One kind's snapshot as taken.
pub(super) struct Taken {
    pub(super) meta: SnapshotMeta,
    pub(super) elapsed: Duration,
}

/// Takes the snapshot of every kind from `storage`, covering journal sequence 0.
pub(super) async fn snapshot_all(
    storage: &Storage,
    bucket: &ObjectStore,
    config: &NodeConfig,
) -> anyhow::Result<Vec<Taken>> {
    let scratch = config.data_dir.join("snapshots");
    std::fs::create_dir_all(&scratch)?;
    let taken_at_ms = SystemClock.now_millis();
    let mut taken = Vec::with_capacity(KINDS.len());
    for kind in KINDS {
        eprintln!("rebuild: taking the {} snapshot…", kind.name);
        let started = Instant::now();
        // The node's own snapshot of the kind, covering journal sequence 0.
        let meta = kind
            .take(
                storage,
                bucket,
                0,
                config.ingest.partitions,
                taken_at_ms,
                &scratch,
            )
            .await?;
        taken.push(Taken {
            meta,
            elapsed: started.elapsed(),
        });
    }
    Ok(taken)
}
