//! Tests of the viewing-history store, with an injected clock.

use std::collections::{BTreeMap, BTreeSet};

use playhead_proto::ids::{DeviceId, PlayoutId, Tag};

use super::*;
use crate::domain::playout::{
    Entitlement, Heartbeat, HeartbeatKind, PlayoutCommand, PlayoutPolicy, UpdateEntitlements,
    evolve, initial,
};
use crate::storage::clock::ManualClock;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
/// On a bucket boundary, so tests reason in whole days.
const START_MS: u64 = 20_000 * DAY_MS;

struct Fixture {
    clock: Arc<ManualClock>,
    store: ViewHistoryStore,
    _buckets: tempfile::TempDir,
}

fn fixture(history_cap: u32) -> Fixture {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let config = PlayoutConfig {
        history_cap,
        ..PlayoutConfig::default()
    };
    let (buckets, placement) = crate::storage::keyspace::temporary_bucket_dbs();
    let store = ViewHistoryStore::open(&db, &config, clock.clone(), placement).unwrap();
    Fixture {
        clock,
        store,
        _buckets: buckets,
    }
}

impl Fixture {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.clock.now_millis())
    }

    fn advance_days(&self, days: u64) {
        self.clock.advance(Duration::from_millis(days * DAY_MS));
    }

    /// A bookmark at position 0 of `content`, at the clock's time plus `offset_ms`.
    fn view(&self, user: &UserId, content: &str, offset_ms: u64) -> RecordReport {
        let at = Timestamp::from_millis(self.clock.now_millis() + offset_ms);
        self.store
            .record(user, &[bookmark(content, 0, at, false)])
            .unwrap()
    }

    fn listed(&self, user: &UserId) -> Vec<String> {
        let page = self.store.list(user, 1_000, None).unwrap();
        assert_eq!(page.next_before, None);
        content_names(&page)
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn content(name: &str) -> ContentId {
    ContentId::parse(name).unwrap()
}

fn bookmark(name: &str, position_ms: u64, at: Timestamp, view_ended: bool) -> Bookmark {
    Bookmark {
        content_id: content(name),
        position_ms,
        at,
        view_ended,
    }
}

fn content_names(page: &ViewPage) -> Vec<String> {
    page.records
        .iter()
        .map(|record| record.content_id.as_str().to_owned())
        .collect()
}

#[test]
fn given_a_content_viewed_again_when_listed_then_it_has_one_record_with_the_latest_bookmark() {
    let fixture = fixture(500);
    let ann = user("ann");
    let first = fixture.now();
    fixture
        .store
        .record(&ann, &[bookmark("film", 60_000, first, false)])
        .unwrap();
    fixture.advance_days(3);
    let again = fixture.now();

    let report = fixture
        .store
        .record(&ann, &[bookmark("film", 90_000, again, true)])
        .unwrap();

    assert_eq!(report.created, 0);
    assert_eq!(report.written, 1);
    let expected = ViewRecord {
        content_id: content("film"),
        position_ms: 90_000,
        last_viewed_at: again,
        completed: true,
    };
    assert_eq!(
        fixture.store.list(&ann, 10, None).unwrap(),
        ViewPage {
            records: vec![expected.clone()],
            next_before: None,
        }
    );
    assert_eq!(
        fixture.store.get(&ann, &content("film")).unwrap(),
        Some(expected)
    );
}

#[test]
fn given_views_over_several_days_when_paged_by_before_then_newest_first_without_gaps() {
    let fixture = fixture(500);
    let ann = user("ann");
    for name in ["a", "b", "c", "d", "e"] {
        fixture.view(&ann, name, 0);
        fixture.advance_days(1);
    }

    let first = fixture.store.list(&ann, 2, None).unwrap();
    let second = fixture.store.list(&ann, 2, first.next_before).unwrap();
    let third = fixture.store.list(&ann, 2, second.next_before).unwrap();

    assert_eq!(content_names(&first), ["e", "d"]);
    assert_eq!(first.next_before, Some(first.records[1].last_viewed_at));
    assert_eq!(content_names(&second), ["c", "b"]);
    assert_eq!(content_names(&third), ["a"]);
    assert_eq!(third.next_before, None);
    // `before` is exclusive.
    let c_viewed_at = second.records[0].last_viewed_at;
    let before_c = fixture.store.list(&ann, 10, Some(c_viewed_at)).unwrap();
    assert_eq!(content_names(&before_c), ["b", "a"]);
}

#[test]
fn given_records_viewed_in_the_same_millisecond_at_a_page_end_then_the_page_keeps_them() {
    let fixture = fixture(500);
    let ann = user("ann");
    let at = |offset_ms| Timestamp::from_millis(START_MS + offset_ms);
    fixture
        .store
        .record(
            &ann,
            &[
                bookmark("c", 0, at(1), false),
                bookmark("a", 0, at(2), false),
                bookmark("b", 0, at(2), false),
                bookmark("d", 0, at(3), false),
            ],
        )
        .unwrap();

    let first = fixture.store.list(&ann, 2, None).unwrap();
    let second = fixture.store.list(&ann, 2, first.next_before).unwrap();

    assert_eq!(content_names(&first), ["d", "b", "a"]);
    assert_eq!(first.next_before, Some(at(2)));
    assert_eq!(content_names(&second), ["c"]);
    assert_eq!(second.next_before, None);
}

#[test]
fn given_more_contents_than_the_cap_when_recorded_then_the_least_recently_viewed_go() {
    let fixture = fixture(3);
    let ann = user("ann");
    fixture.view(&ann, "a", 1);
    fixture.view(&ann, "b", 2);
    fixture.view(&ann, "c", 3);
    // Viewing `a` again makes `b` the least recently viewed.
    fixture.view(&ann, "a", 4);

    let report = fixture.view(&ann, "d", 5);

    assert_eq!(report.created, 1);
    assert_eq!(report.evicted, 1);
    assert_eq!(fixture.listed(&ann), ["d", "a", "c"]);
    assert_eq!(fixture.store.get(&ann, &content("b")).unwrap(), None);
    for (offset_ms, name) in (6..).zip(["e", "f", "g", "h"]) {
        assert_eq!(fixture.view(&ann, name, offset_ms).evicted, 1);
    }
    assert_eq!(fixture.listed(&ann), ["h", "g", "f"]);
}

#[test]
fn given_records_untouched_for_180_days_when_compacted_then_they_vanish_viewed_ones_stay() {
    let fixture = fixture(500);
    let ann = user("ann");
    fixture.view(&ann, "kept", 0);
    fixture.view(&ann, "dropped", 0);
    // `kept` is viewed again every 60 days; `dropped` never.
    for _ in 0..3 {
        fixture.advance_days(60);
        fixture.view(&ann, "kept", 0);
        fixture.store.compact(&Expiry::whole()).unwrap();
    }
    assert_eq!(fixture.listed(&ann), ["kept", "dropped"]);

    fixture.advance_days(2);
    let report = fixture.store.compact(&Expiry::whole()).unwrap();

    assert_eq!(report.buckets_dropped, 1);
    assert_eq!(fixture.listed(&ann), ["kept"]);
    assert_eq!(fixture.store.get(&ann, &content("dropped")).unwrap(), None);
    assert!(fixture.store.get(&ann, &content("kept")).unwrap().is_some());
}

#[test]
fn given_records_that_expired_when_the_bound_passes_the_cap_then_no_live_record_is_evicted() {
    let fixture = fixture(3);
    let ann = user("ann");
    fixture.view(&ann, "old-1", 0);
    fixture.view(&ann, "old-2", 0);
    fixture.advance_days(100);
    fixture.view(&ann, "recent", 0);
    // old-1 and old-2 expire; the bound written with `recent` still counts them.
    fixture.advance_days(90);

    let report = fixture.view(&ann, "new", 0);

    assert_eq!(report.evicted, 0);
    assert_eq!(fixture.listed(&ann), ["new", "recent"]);
    assert_eq!(fixture.store.load_bound(&ann).unwrap().count, 2);
}

/// The index entries of `user`, oldest first.
fn index_entries(fixture: &Fixture, user: &UserId) -> Vec<Vec<u8>> {
    fixture
        .store
        .history
        .scan_prefix(&index_prefix(user), Direction::Forward)
        .unwrap()
        .map(|entry| entry.unwrap().0.to_vec())
        .collect()
}

#[test]
fn given_a_content_viewed_before_when_viewed_again_then_its_record_is_found_not_created_twice() {
    let fixture = fixture(10);
    let ann = user("ann");
    fixture.view(&ann, "film", 1);
    fixture.view(&ann, "series", 2);
    fixture.advance_days(3);

    let report = fixture.view(&ann, "series", 3);

    // Found through the contents the bound carries: moved on, not counted again, and its old
    // index entry removed.
    assert_eq!((report.created, report.written), (0, 1));
    let bound = fixture.store.load_bound(&ann).unwrap();
    assert_eq!(bound.count, 2);
    assert!(bound.may_hold(&content("film")) && bound.may_hold(&content("series")));
    assert!(!bound.may_hold(&content("show")));
    assert_eq!(index_entries(&fixture, &ann).len(), 2);
    assert_eq!(fixture.listed(&ann), ["series", "film"]);
}

#[test]
fn given_a_bound_from_before_the_contents_were_kept_when_a_view_comes_then_its_records_are_found() {
    let fixture = fixture(10);
    let ann = user("ann");
    fixture.view(&ann, "film", 1);
    fixture.advance_days(2);
    fixture.view(&ann, "series", 1);
    // As an older node wrote it: the count alone.
    fixture
        .store
        .history
        .insert(&bound_key(&ann), &2u32.to_be_bytes())
        .unwrap();
    fixture.advance_days(2);

    let report = fixture.view(&ann, "film", 2);

    assert_eq!(report.created, 0);
    let bound = fixture.store.load_bound(&ann).unwrap();
    assert_eq!(bound.count, 2);
    assert!(bound.may_hold(&content("film")) && bound.may_hold(&content("series")));
    assert_eq!(bound.encode().len(), 4 + 2 * 4);
    assert_eq!(index_entries(&fixture, &ann).len(), 2);
    assert_eq!(fixture.listed(&ann), ["film", "series"]);
}

#[test]
fn given_a_recount_then_the_bound_carries_exactly_the_contents_kept() {
    let fixture = fixture(2);
    let ann = user("ann");
    fixture.view(&ann, "a", 1);
    fixture.view(&ann, "b", 2);

    let report = fixture.view(&ann, "c", 3);

    assert_eq!(report.evicted, 1);
    assert_eq!(
        fixture.store.load_bound(&ann).unwrap(),
        Bound::of(&[&content("c"), &content("b")])
    );
}

#[test]
fn a_bound_that_is_not_whole_words_is_reported_corrupt() {
    let fixture = fixture(2);
    let ann = user("ann");
    fixture
        .store
        .history
        .insert(&bound_key(&ann), &[0, 0, 0, 1, 7])
        .unwrap();

    assert!(matches!(
        fixture.store.load_bound(&ann),
        Err(StorageError::Corrupt { .. })
    ));
}

/// Pinned: the hashes outlive the process, so the function must never change.
#[test]
fn the_content_hash_is_fnv_1a_32() {
    assert_eq!(content_hash(b""), 0x811c_9dc5);
    assert_eq!(content_hash(b"a"), 0xe40c_292c);
    assert_eq!(content_hash(b"foobar"), 0xbf9c_f968);
}

#[test]
fn given_users_ann_and_anna_then_neither_sees_nor_evicts_the_others_records() {
    let fixture = fixture(2);
    let (ann, anna) = (user("ann"), user("anna"));
    fixture.view(&anna, "anna-film", 1);
    fixture.view(&ann, "ann-film", 2);
    fixture.view(&ann, "ann-series", 3);

    fixture.view(&ann, "ann-show", 4);

    assert_eq!(fixture.listed(&ann), ["ann-show", "ann-series"]);
    assert_eq!(fixture.listed(&anna), ["anna-film"]);
    assert_eq!(
        fixture.store.get(&ann, &content("anna-film")).unwrap(),
        None
    );
    assert_eq!(fixture.store.load_bound(&anna).unwrap().count, 1);
}

#[test]
fn given_a_stale_index_entry_left_by_a_crash_when_listed_then_it_is_skipped_then_dropped() {
    let fixture = fixture(2);
    let ann = user("ann");
    let first_view = Timestamp::from_millis(START_MS + 1);
    fixture.view(&ann, "a", 1);
    fixture.view(&ann, "b", 2);
    fixture.view(&ann, "a", 3);
    // A crash between the batch and the removal of `a`'s previous index entry.
    let stale_key = index_key(&ann, first_view, &content("a"));
    fixture.store.keyspace().insert(&stale_key, &[]).unwrap();

    assert_eq!(fixture.listed(&ann), ["a", "b"]);
    let before_b = Timestamp::from_millis(START_MS + 2);
    let older = fixture.store.list(&ann, 10, Some(before_b)).unwrap();
    assert_eq!(older, ViewPage::default());

    let report = fixture.view(&ann, "c", 4);

    assert_eq!(report.evicted, 1);
    assert_eq!(fixture.listed(&ann), ["c", "a"]);
    assert_eq!(fixture.store.keyspace().get(&stale_key).unwrap(), None);
}

#[test]
fn given_an_index_entry_whose_record_a_crash_evicted_then_it_is_skipped_and_goes_first() {
    let fixture = fixture(2);
    let ann = user("ann");
    fixture.view(&ann, "a", 1);
    fixture.view(&ann, "b", 2);
    // A crash between removing `a`'s record and its index entry.
    let record = record_key(&ann, &content("a"));
    assert!(fixture.store.keyspace().remove(&record).unwrap());

    assert_eq!(fixture.listed(&ann), ["b"]);

    let report = fixture.view(&ann, "c", 3);

    assert_eq!(report.evicted, 0);
    assert_eq!(fixture.listed(&ann), ["c", "b"]);
    let orphan = index_key(&ann, Timestamp::from_millis(START_MS + 1), &content("a"));
    assert_eq!(fixture.store.keyspace().get(&orphan).unwrap(), None);
}

#[test]
fn given_a_bookmark_older_than_the_record_when_recorded_then_it_is_ignored() {
    let fixture = fixture(500);
    let ann = user("ann");
    let later = Timestamp::from_millis(START_MS + 10);
    let earlier = Timestamp::from_millis(START_MS + 5);
    fixture
        .store
        .record(&ann, &[bookmark("film", 100, later, false)])
        .unwrap();

    let report = fixture
        .store
        .record(&ann, &[bookmark("film", 50, earlier, true)])
        .unwrap();

    assert_eq!(report, RecordReport::default());
    let record = fixture.store.get(&ann, &content("film")).unwrap().unwrap();
    assert_eq!((record.position_ms, record.last_viewed_at), (100, later));
    assert!(!record.completed);
}

#[test]
fn given_the_same_bookmarks_recorded_twice_then_the_second_time_writes_nothing() {
    let fixture = fixture(500);
    let ann = user("ann");
    let at = |offset_ms| Timestamp::from_millis(START_MS + offset_ms);
    let bookmarks = [
        bookmark("a", 10, at(1), false),
        bookmark("b", 20, at(2), false),
        bookmark("a", 30, at(3), true),
    ];
    let first = fixture.store.record(&ann, &bookmarks).unwrap();
    let listed = fixture.store.list(&ann, 10, None).unwrap();

    let again = fixture.store.record(&ann, &bookmarks).unwrap();

    assert_eq!(
        first,
        RecordReport {
            created: 2,
            written: 2,
            evicted: 0
        }
    );
    assert_eq!(again, RecordReport::default());
    assert_eq!(fixture.store.list(&ann, 10, None).unwrap(), listed);
    assert_eq!(content_names(&listed), ["a", "b"]);
    assert_eq!(listed.records[0].position_ms, 30);
    assert!(listed.records[0].completed);
}

#[test]
fn given_bookmarks_that_evicted_a_record_when_recorded_again_then_the_history_is_the_same() {
    let fixture = fixture(2);
    let ann = user("ann");
    let at = |offset_ms| Timestamp::from_millis(START_MS + offset_ms);
    let bookmarks = [
        bookmark("a", 10, at(1), false),
        bookmark("b", 20, at(2), false),
        bookmark("c", 30, at(3), false),
    ];
    let first = fixture.store.record(&ann, &bookmarks).unwrap();
    let listed = fixture.store.list(&ann, 10, None).unwrap();

    // The store cannot tell an evicted record from a never-seen one: `a` comes back as the
    // oldest and is evicted again.
    let again = fixture.store.record(&ann, &bookmarks).unwrap();

    assert_eq!(first.evicted, 1);
    assert_eq!((again.created, again.evicted), (1, 1));
    assert_eq!(fixture.store.list(&ann, 10, None).unwrap(), listed);
    assert_eq!(content_names(&listed), ["c", "b"]);
}

#[test]
fn given_a_watched_then_rewatched_film_then_completed_follows_the_end_of_the_last_view() {
    let fixture = fixture(500);
    let ann = user("ann");
    let policy = PlayoutPolicy::default();
    let heartbeat = |kind, playout: &str, position_ms| {
        PlayoutCommand::Heartbeat(Heartbeat {
            device_id: DeviceId::parse("tv").unwrap(),
            playout_id: PlayoutId::parse(playout).unwrap(),
            content_id: content("film"),
            content_tags: Some(BTreeSet::from([Tag::parse("films").unwrap()])),
            kind,
            position_ms,
        })
    };
    let entitle = PlayoutCommand::UpdateEntitlements(UpdateEntitlements {
        entitlements: vec![Entitlement {
            tag: Tag::parse("films").unwrap(),
            valid_until: Timestamp::from_millis(START_MS + DAY_MS),
        }],
        concurrency_limit: None,
    });
    let mut state = initial();
    let mut completed_after_each = Vec::new();
    let commands = [
        entitle,
        heartbeat(HeartbeatKind::Start, "p1", 0),
        heartbeat(HeartbeatKind::Beat, "p1", 600_000),
        heartbeat(HeartbeatKind::End, "p1", 700_000),
        heartbeat(HeartbeatKind::Start, "p2", 0),
    ];
    for (minute, command) in (1u64..).zip(&commands) {
        let now = Timestamp::from_millis(START_MS + minute * MINUTE_MS);
        let events = policy.decide(command, &state, now).unwrap();
        let bookmarks: Vec<Bookmark> = events.iter().filter_map(|event| event.bookmark()).collect();
        fixture.store.record(&ann, &bookmarks).unwrap();
        state = events.iter().fold(state, evolve);
        let record = fixture.store.get(&ann, &content("film")).unwrap();
        completed_after_each.push(record.map(|record| (record.position_ms, record.completed)));
    }

    assert_eq!(
        completed_after_each,
        [
            None,
            Some((0, false)),
            Some((600_000, false)),
            Some((700_000, true)),
            Some((0, false)),
        ]
    );
    assert_eq!(fixture.listed(&ann), ["film"]);
}

#[test]
fn given_many_live_buckets_when_a_record_moves_on_then_only_the_bucket_holding_its_index_is_touched()
 {
    let fixture = fixture(500);
    let ann = user("ann");
    // A week of views: seven live buckets, the film's record in the first one.
    fixture.view(&ann, "film", 0);
    let film_bucket = fixture.clock.now_millis() / DAY_MS;
    for name in ["a", "b", "c", "d", "e", "f"] {
        fixture.advance_days(1);
        fixture.view(&ann, name, 0);
    }
    assert_eq!(fixture.store.keyspace().bucket_count(), 7);
    let before = fixture.store.keyspace().removes_per_bucket();

    fixture.view(&ann, "film", 1);

    let after = fixture.store.keyspace().removes_per_bucket();
    let touched: BTreeMap<u64, usize> = after
        .into_iter()
        .filter(|(bucket, removes)| before.get(bucket) != Some(removes))
        .collect();
    // One remove, in the film's old bucket; the six other live trees were not asked.
    assert_eq!(touched, BTreeMap::from([(film_bucket, 1)]));
    assert_eq!(fixture.listed(&ann), ["film", "f", "e", "d", "c", "b", "a"]);
}
