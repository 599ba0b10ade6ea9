//! The heartbeat workload and what the node must make of it: a catalog of content in a few
//! packages, every user entitled to one package, and a storm of heartbeats as after an outage
//! (every user STARTs on one or two devices, then BEATs, some END), interleaved across users
//! in the order a broker would see them.
//!
//! A second device sometimes starts content outside the user's package: that START must be
//! refused (STOP / NOT_ENTITLED). Everything else must be admitted: no user runs more than the
//! default limit of 2 playouts.

use std::collections::BTreeMap;

use playhead_proto::v1::{Heartbeat, HeartbeatKind};
use playhead_tests::model::Rng;
use playhead_tests::playout::heartbeat;

/// Content items in the catalog, spread over [`PACKAGES`].
const CONTENTS: usize = 300;
const PACKAGES: usize = 3;
/// Users who start on a second device.
const TWO_DEVICES_PERCENT: u64 = 30;
/// Second-device STARTs of content outside the user's package.
const REFUSED_PERCENT: u64 = 5;
/// Users whose last heartbeat is an END.
const END_PERCENT: u64 = 20;
/// Position a BEAT advances (players beat every 10 minutes).
pub(super) const BEAT_MS: u64 = 10 * 60 * 1000;

pub(super) struct Content {
    pub(super) id: String,
    pub(super) tags: Vec<String>,
}

/// How many heartbeats of the storm must end in each answering event.
#[derive(Debug, Default)]
pub(super) struct Expected {
    /// STARTs admitted (`PlayoutStarted`).
    pub(super) admitted: u64,
    /// STARTs refused (`PlayoutStopped`).
    pub(super) refused: u64,
    /// BEATs of a live playout (`HeartbeatRecorded`).
    pub(super) beats: u64,
    /// ENDs (`PlayoutEnded`).
    pub(super) ends: u64,
}

impl Expected {
    /// (journaled domain event, how many the storm must produce). A BEAT the node re-admitted
    /// or refused would add to the first two and take from `HeartbeatRecorded`.
    pub(super) fn events(&self) -> [(&'static str, u64); 4] {
        [
            ("PlayoutStarted", self.admitted),
            ("PlayoutStopped", self.refused),
            ("HeartbeatRecorded", self.beats),
            ("PlayoutEnded", self.ends),
        ]
    }
}

pub(super) struct Mix {
    pub(super) contents: Vec<Content>,
    /// Every user id, each entitled to the tag `entitlement(n)`.
    pub(super) users: Vec<String>,
    /// In publish order.
    pub(super) heartbeats: Vec<Heartbeat>,
    pub(super) expected: Expected,
    /// The latest heartbeat of every playout still live after the storm, by user.
    pub(super) live: BTreeMap<String, Vec<Heartbeat>>,
}

/// The tag user `n` holds.
pub(super) fn entitlement(n: usize) -> String {
    package_tag(n % PACKAGES)
}

fn package_tag(package: usize) -> String {
    format!("package-{package}")
}

/// A content item of `package`, picked at random.
fn content_in(package: usize, rng: &mut Rng) -> String {
    let within = rng.below((CONTENTS / PACKAGES) as u64) as usize;
    content_id(within * PACKAGES + package)
}

fn content_id(n: usize) -> String {
    format!("content{n:04}")
}

/// One device's playout while the user's heartbeats are generated.
struct Playing {
    device: String,
    playout: String,
    content: String,
    position_ms: u64,
}

impl Playing {
    fn heartbeat(&self, user: &str, kind: HeartbeatKind) -> Heartbeat {
        heartbeat(
            user,
            &self.device,
            &self.playout,
            &self.content,
            kind,
            self.position_ms,
        )
    }
}

impl Mix {
    /// `heartbeats` spread as evenly as they go over `users` users (seeded: the same every run).
    pub(super) fn generate(users: usize, heartbeats: usize) -> Mix {
        let contents = (0..CONTENTS)
            .map(|n| Content {
                id: content_id(n),
                tags: vec![package_tag(n % PACKAGES), format!("genre-{}", n % 7)],
            })
            .collect();
        let mut rng = Rng::new(11);
        let mut expected = Expected::default();
        let mut live = BTreeMap::new();
        let mut per_user = Vec::with_capacity(users);
        let user_ids: Vec<String> = (0..users).map(|n| format!("viewer{n:06}")).collect();
        for (n, user) in user_ids.iter().enumerate() {
            let budget = heartbeats / users + usize::from(n < heartbeats % users);
            let (sent, playing, refused) = user_heartbeats(user, n % PACKAGES, budget, &mut rng);
            for heartbeat in &sent {
                match heartbeat.kind() {
                    HeartbeatKind::Start => expected.admitted += 1,
                    HeartbeatKind::Beat => expected.beats += 1,
                    HeartbeatKind::End => expected.ends += 1,
                    HeartbeatKind::Unspecified => unreachable!("the mix sends no such kind"),
                }
            }
            expected.admitted -= refused;
            expected.refused += refused;
            if !playing.is_empty() {
                live.insert(
                    user.clone(),
                    playing
                        .iter()
                        .map(|playout| playout.heartbeat(user, HeartbeatKind::Beat))
                        .collect(),
                );
            }
            per_user.push(sent);
        }
        Mix {
            contents,
            users: user_ids,
            heartbeats: interleave(per_user),
            expected,
            live,
        }
    }
}

/// A user's heartbeats in order, the playouts still live after them, and how many of its
/// STARTs must be refused.
fn user_heartbeats(
    user: &str,
    package: usize,
    budget: usize,
    rng: &mut Rng,
) -> (Vec<Heartbeat>, Vec<Playing>, u64) {
    let mut sent = Vec::with_capacity(budget);
    if budget == 0 {
        return (sent, Vec::new(), 0);
    }
    let devices = if budget >= 2 && rng.below(100) < TWO_DEVICES_PERCENT {
        2
    } else {
        1
    };
    let mut playing = Vec::with_capacity(devices);
    let mut refused_starts = 0;
    for device in 0..devices {
        let refused = device > 0 && rng.below(100) < REFUSED_PERCENT;
        let package = if refused {
            (package + 1) % PACKAGES
        } else {
            package
        };
        let playout = Playing {
            device: format!("{user}-tv{device}"),
            playout: format!("{user}-{device}"),
            content: content_in(package, rng),
            position_ms: 0,
        };
        sent.push(playout.heartbeat(user, HeartbeatKind::Start));
        // A refused player stops: it sends nothing more.
        if refused {
            refused_starts += 1;
        } else {
            playing.push(playout);
        }
    }
    let remaining = budget - devices;
    let ends = remaining > 0 && rng.below(100) < END_PERCENT;
    for beat in 0..remaining {
        let device = beat % playing.len();
        if ends && beat + 1 == remaining {
            let ended = playing.remove(device);
            sent.push(ended.heartbeat(user, HeartbeatKind::End));
        } else {
            playing[device].position_ms += BEAT_MS;
            sent.push(playing[device].heartbeat(user, HeartbeatKind::Beat));
        }
    }
    (sent, playing, refused_starts)
}

/// Round by round: every user's first heartbeat, then every user's second, and so on (each
/// user's own order is kept, as the broker keeps it per subject).
fn interleave(per_user: Vec<Vec<Heartbeat>>) -> Vec<Heartbeat> {
    let total = per_user.iter().map(Vec::len).sum();
    let mut queues: Vec<_> = per_user.into_iter().map(Vec::into_iter).collect();
    let mut interleaved = Vec::with_capacity(total);
    while interleaved.len() < total {
        interleaved.extend(queues.iter_mut().filter_map(Iterator::next));
    }
    interleaved
}
