//! Comparing a running system with the [`Model`]: every query answer through the gateway, the
//! journal event by event, and every answer the node sent to a message.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use playhead_actors::domain::player::PlayerPolicy;
use playhead_actors::domain::playout::PlayoutPolicy;
use playhead_actors::domain::time::Timestamp;
use playhead_actors::storage::clock::{Clock, SystemClock};
use playhead_actors::wire;
use playhead_proto::headers::{EVENT_VERSION, INBOX_SEQUENCE};
use playhead_proto::ids::{PlaylistId, StationId, UserId};
use playhead_proto::subjects::{EVENTS_STREAM, EventFamily, parse_event_subject};
use playhead_proto::v1;
use prost::Message;

use super::model::{Model, ModelEvent};
use super::replies::Reply;
use crate::harness::wait::eventually;
use crate::system::{TestGateway, all_plays_full};

/// One stored event: (inbox sequence, name, version, payload).
pub type StoredEvent = (u64, String, u32, Vec<u8>);

/// Every event of `PLAYHEAD_EVENTS`, per entity, in order.
pub async fn read_journal(
    jetstream: &jetstream::Context,
) -> BTreeMap<(EventFamily, String), Vec<StoredEvent>> {
    let stream = jetstream.get_stream(EVENTS_STREAM).await.expect("journal");
    let last = stream.cached_info().state.last_sequence;
    let mut journal: BTreeMap<_, Vec<_>> = BTreeMap::new();
    if last == 0 {
        return journal;
    }
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer")
        .messages()
        .await
        .expect("journal messages");
    while let Some(message) = messages.next().await {
        let message = message.expect("journal message");
        let seq = message.info().expect("stored").stream_sequence;
        let subject = parse_event_subject(&message.subject).expect("an event subject");
        let headers = message.headers.clone().unwrap_or_default();
        let number = |name: &str| -> u64 {
            headers
                .get(name)
                .unwrap_or_else(|| panic!("event {seq} has no {name}"))
                .as_str()
                .parse()
                .expect("a number")
        };
        journal
            .entry((subject.family, subject.id.to_owned()))
            .or_default()
            .push((
                number(INBOX_SEQUENCE),
                subject.event_name.to_owned(),
                number(EVENT_VERSION) as u32,
                message.payload.to_vec(),
            ));
        if seq >= last {
            break;
        }
    }
    journal
}

/// Asserts the journal holds exactly the model's events: each once, per entity in order.
pub async fn assert_journal_matches(jetstream: &jetstream::Context, model: &Model) {
    let journal = read_journal(jetstream).await;
    let expected: BTreeMap<_, Vec<_>> = model
        .journal
        .iter()
        .map(|(entity, events)| {
            let events: Vec<StoredEvent> = events
                .iter()
                .map(|(inbox_seq, event): &ModelEvent| {
                    (
                        *inbox_seq,
                        event.name.to_owned(),
                        event.version,
                        event.payload.clone(),
                    )
                })
                .collect();
            (entity.clone(), events)
        })
        .collect();
    let mut mismatches = Vec::new();
    for entity in expected.keys().chain(journal.keys()) {
        let (want, got) = (expected.get(entity), journal.get(entity));
        if want != got {
            let names = |events: Option<&Vec<StoredEvent>>| -> Vec<(u64, String)> {
                events
                    .map(|events| {
                        events
                            .iter()
                            .map(|(seq, name, _, _)| (*seq, name.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            mismatches.push(format!(
                "{entity:?}: expected {:?}, journal has {:?}",
                names(want),
                names(got)
            ));
        }
    }
    mismatches.dedup();
    assert!(
        mismatches.is_empty(),
        "{} entities' journals differ from the model (first 5):\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
}

/// Asserts every query answer equals the model's: plays and now-playing of every station;
/// sessions, live playouts, viewing history and entitlements of every user.
pub async fn assert_answers_match(
    gateway: &TestGateway,
    model: &Model,
    stations: &[String],
    users: &[String],
    player: &PlayerPolicy,
    playout: &PlayoutPolicy,
) {
    let mut station_client = gateway.stations().await;
    for station in stations {
        let expected: Vec<v1::Play> = model
            .plays
            .get(station)
            .map(|plays| {
                plays
                    .values()
                    .map(|(play_seq, artist, title, started, ended)| v1::Play {
                        play_seq: *play_seq,
                        song: Some(v1::Song {
                            artist: artist.clone(),
                            title: title.clone(),
                        }),
                        started_at: Some(wire::timestamp(Timestamp::from_millis(*started))),
                        ended_at: ended.map(|ended| wire::timestamp(Timestamp::from_millis(ended))),
                        enrichment: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            all_plays_full(&mut station_client, station).await,
            expected,
            "plays of {station}"
        );
        let id = StationId::parse(station.as_str()).expect("valid station");
        let expected_now = model
            .stations
            .get(station)
            .and_then(|state| wire::now_playing(&id, state));
        // The gateway's cache follows the now-playing bucket: give a fresh one a moment.
        let asked = station_client.clone();
        let settled = eventually(
            &format!("now playing on {station} to match the model"),
            Duration::from_secs(10),
            || {
                let mut client = asked.clone();
                let (station, expected_now) = (station.clone(), expected_now.clone());
                async move {
                    let now_playing = client
                        .get_now_playing(v1::GetNowPlayingRequest {
                            station_id: station,
                        })
                        .await
                        .map(|response| response.into_inner().now_playing)
                        .unwrap_or(None);
                    (now_playing == expected_now).then_some(now_playing)
                }
            },
        )
        .await;
        assert_eq!(settled, expected_now, "now playing on {station}");
    }
    let mut players = gateway.players().await;
    let mut playouts = gateway.playouts().await;
    for user in users {
        let id = UserId::parse(user.as_str()).expect("valid user");
        let state = model.users.get(user).cloned().unwrap_or_default();
        let now = Timestamp::from_millis(SystemClock.now_millis());
        let mut sessions = players
            .list_sessions(v1::ListSessionsRequest {
                user_id: user.clone(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("list sessions")
            .into_inner()
            .sessions;
        sessions.sort_by(|a, b| a.playlist_id.cmp(&b.playlist_id));
        let expected: Vec<v1::PlayerSession> = state
            .sessions
            .iter()
            .filter_map(|(playlist, session)| {
                let session = session
                    .as_ref()
                    .filter(|session| session.is_live(now, player))?;
                Some(wire::player_session(&id, playlist, session, player, now))
            })
            .collect();
        assert_eq!(sessions, expected, "sessions of {user}");
        for playlist in state.sessions.keys() {
            let playlist: &PlaylistId = playlist;
            let one = players
                .get_session(v1::GetSessionRequest {
                    user_id: user.clone(),
                    playlist_id: playlist.to_string(),
                })
                .await
                .expect("get session")
                .into_inner();
            assert_eq!(
                Some(&one),
                expected
                    .iter()
                    .find(|session| session.playlist_id == playlist.as_str()),
                "session {playlist} of {user}"
            );
        }
        let live: Vec<v1::Playout> = playouts
            .list_playouts(v1::ListPlayoutsRequest {
                user_id: user.clone(),
            })
            .await
            .expect("list playouts")
            .into_inner()
            .playouts;
        let expected_live: Vec<v1::Playout> = state
            .playouts
            .live_slots(now, playout)
            .map(wire::playout)
            .collect();
        assert_eq!(live, expected_live, "live playouts of {user}");
        let history = playouts
            .list_view_history(v1::ListViewHistoryRequest {
                user_id: user.clone(),
                page_size: 100,
                before: None,
            })
            .await
            .expect("list view history")
            .into_inner()
            .records;
        let mut expected_history: Vec<v1::ViewRecord> = model
            .views
            .get(user)
            .map(|views| {
                views
                    .iter()
                    .map(|(content, (position, viewed, completed))| v1::ViewRecord {
                        content_id: content.to_string(),
                        position_ms: *position,
                        last_viewed_at: Some(wire::timestamp(*viewed)),
                        completed: *completed,
                    })
                    .collect()
            })
            .unwrap_or_default();
        expected_history.sort_by(|a, b| {
            let at = |record: &v1::ViewRecord| {
                record
                    .last_viewed_at
                    .as_ref()
                    .map(wire::timestamp_millis)
                    .unwrap_or_default()
            };
            at(b).cmp(&at(a)).then(b.content_id.cmp(&a.content_id))
        });
        let mut sorted_history = history.clone();
        sorted_history.sort_by(|a, b| {
            let at = |record: &v1::ViewRecord| {
                record
                    .last_viewed_at
                    .as_ref()
                    .map(wire::timestamp_millis)
                    .unwrap_or_default()
            };
            at(b).cmp(&at(a)).then(b.content_id.cmp(&a.content_id))
        });
        assert_eq!(
            sorted_history, expected_history,
            "viewing history of {user}"
        );
        let asked = ["premium", "free", "sports", "kids"];
        let mut held = playouts
            .check_entitlements(v1::CheckEntitlementsRequest {
                user_id: user.clone(),
                tags: asked.iter().map(|tag| (*tag).to_owned()).collect(),
            })
            .await
            .expect("check entitlements")
            .into_inner()
            .held_tags;
        held.sort();
        let mut expected_held: Vec<String> = state
            .playouts
            .held_tags(now)
            .filter(|tag| asked.contains(&tag.as_str()))
            .map(|tag| tag.to_string())
            .collect();
        expected_held.sort();
        assert_eq!(held, expected_held, "entitlements of {user}");
    }
}

/// What the answers received came to.
#[derive(Debug)]
pub struct RepliesChecked {
    /// Answers received, each equal to the model's.
    pub received: usize,
    /// Messages answered at least once.
    pub answered: usize,
    /// Messages answered more than once (redelivered after a crash).
    pub repeated: usize,
    /// Messages that asked for an answer.
    pub asked: usize,
}

/// Asserts every answer received equals the model's answer to its message — a message may
/// be answered again after a redelivery, never differently — and that at least
/// `min_answered_percent`% of the messages asking for one got one (a node killed between
/// deciding and answering sends none; the redelivery is answered instead, but a node may be
/// killed again first).
///
/// `tolerated` is 0 except where a known defect is documented (README, *Limits*): that many
/// messages may get a wrong answer.
pub fn assert_replies_match(
    model: &Model,
    replies: &[Reply],
    min_answered_percent: usize,
    tolerated: usize,
) -> RepliesChecked {
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    // Subjects that received the model's answer: a different one afterwards contradicts it.
    let mut told_right: BTreeSet<&str> = BTreeSet::new();
    let mut mismatches = Vec::new();
    let mut contradictions = 0;
    // Messages that got at least one answer differing from the model's.
    let mut wrong_subjects: BTreeSet<&str> = BTreeSet::new();
    for (subject, payload) in replies {
        let Some(expected) = model.answers.get(subject) else {
            mismatches.push(format!(
                "an answer on {subject}, which no message asked for"
            ));
            continue;
        };
        let answered = times.entry(subject.as_str()).or_default();
        *answered += 1;
        if payload.as_ref() == expected.encoded.as_slice() {
            told_right.insert(subject.as_str());
            continue;
        }
        wrong_subjects.insert(subject.as_str());
        let contradicts = told_right.contains(subject.as_str());
        contradictions += usize::from(contradicts);
        // The ones contradicting an answer already given come first in the report.
        let at = if contradicts {
            contradictions - 1
        } else {
            mismatches.len()
        };
        mismatches.insert(at, format!(
            "{} (inbox seq {}, answer {} received on {subject}{}):\n  expected {}\n  received {}",
            expected.user,
            expected.inbox_seq,
            answered,
            if contradicts {
                ", after the right one"
            } else {
                ""
            },
            readable(expected.player, &expected.encoded),
            readable(expected.player, payload),
            ),
        );
    }
    let checked = RepliesChecked {
        received: replies.len(),
        answered: times.len(),
        repeated: times.values().filter(|times| **times > 1).count(),
        asked: model.answers.len(),
    };
    let wrong_only = times
        .keys()
        .filter(|subject| !told_right.contains(*subject))
        .count();
    let wrong_messages = wrong_subjects.len();
    if wrong_messages > 0 && wrong_messages <= tolerated {
        eprintln!(
            "KNOWN DEFECT: {wrong_messages} messages got a wrong answer (tolerated: {tolerated}):\n{}",
            mismatches[..mismatches.len().min(5)].join("\n")
        );
    }
    assert!(
        wrong_messages <= tolerated,
        "{} of {} answers differ from the model: {contradictions} of them after the right \
         answer, {wrong_only} messages never got the right answer; {checked:?} (first 5):\n{}",
        mismatches.len(),
        replies.len(),
        mismatches[..mismatches.len().min(5)].join("\n")
    );
    assert!(
        checked.answered * 100 >= checked.asked * min_answered_percent,
        "only {} of {} messages asking for an answer got one: {checked:?}",
        checked.answered,
        checked.asked
    );
    checked
}

/// An encoded answer, decoded for a failure message.
fn readable(player: bool, encoded: &[u8]) -> String {
    let decoded = if player {
        v1::PlayerReply::decode(encoded).map(|reply| format!("{reply:?}"))
    } else {
        v1::HeartbeatDecision::decode(encoded).map(|decision| format!("{decision:?}"))
    };
    decoded.unwrap_or_else(|error| format!("undecodable ({error}): {encoded:?}"))
}
