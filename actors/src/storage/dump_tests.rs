//! Tests of the sled dump format: round trips checked against the entries the test wrote (not
//! against a second dump), selection, replacement, and refusal of damaged streams.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use super::*;

/// Tree name → key → value: what a test wrote, the oracle a restore is compared with.
type Contents = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn temporary_db() -> sled::Db {
    sled::Config::new()
        .temporary(true)
        .open()
        .expect("temporary sled db")
}

fn fill(db: &sled::Db, contents: &Contents) {
    for (tree_name, entries) in contents {
        let tree = db.open_tree(tree_name).expect("open tree");
        for (key, value) in entries {
            tree.insert(key.as_slice(), value.as_slice())
                .expect("insert");
        }
    }
}

/// Every tree of `db` except sled's default one, read back entry by entry.
fn read_back(db: &sled::Db) -> Contents {
    db.tree_names()
        .into_iter()
        .filter(|name| name.as_ref() != SLED_DEFAULT_TREE)
        .map(|name| {
            let tree = db.open_tree(&name).expect("open tree");
            let entries = tree
                .iter()
                .map(|entry| {
                    let (key, value) = entry.expect("read entry");
                    (key.to_vec(), value.to_vec())
                })
                .collect();
            (name.to_vec(), entries)
        })
        .collect()
}

fn entries(pairs: &[(&[u8], &[u8])]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_vec(), value.to_vec()))
        .collect()
}

/// Binary keys and values, an empty value, an empty tree and a 1 MiB value.
fn varied_contents() -> Contents {
    let large: Vec<u8> = (0..1 << 20)
        .map(|index: u32| (index * 31 % 251) as u8)
        .collect();
    let mut contents = Contents::new();
    contents.insert(
        b"station_state".to_vec(),
        entries(&[
            (b"radio-1", b"\x00\x01\x02state"),
            (b"\x00\xff\x00", b"\xff\xfe"),
            (b"radio-2", b""),
        ]),
    );
    contents.insert(
        b"ks/view_history/00000000000000019999".to_vec(),
        entries(&[(b"user-1\x00content-9", &large), (b"user-2", b"x")]),
    );
    contents.insert(b"ks/view_history/meta".to_vec(), BTreeMap::new());
    contents.insert(
        b"catalog_content".to_vec(),
        (0..500u32)
            .map(|index| (index.to_be_bytes().to_vec(), vec![index as u8; 200]))
            .collect(),
    );
    contents
}

fn dump_to_vec(db: &sled::Db, select: impl Fn(&[u8]) -> bool) -> (Vec<u8>, DumpReport) {
    let mut bytes = Vec::new();
    let report = dump_trees(db, select, &mut bytes).expect("dump");
    (bytes, report)
}

/// A small dump of two trees, for the damage tests.
fn small_dump() -> Vec<u8> {
    let db = temporary_db();
    let mut contents = Contents::new();
    contents.insert(b"a".to_vec(), entries(&[(b"k1", b"v1"), (b"k2", b"")]));
    contents.insert(b"b".to_vec(), entries(&[(b"\x00", b"\x01\x02\x03")]));
    fill(&db, &contents);
    dump_to_vec(&db, |_| true).0
}

#[test]
fn a_restore_reproduces_every_tree_entry_for_entry() {
    let source = temporary_db();
    let contents = varied_contents();
    fill(&source, &contents);
    source
        .insert(b"in the default tree", b"never dumped")
        .expect("insert");

    let (bytes, dumped) = dump_to_vec(&source, |_| true);
    let target = temporary_db();
    let restored = restore_trees(&target, bytes.as_slice()).expect("restore");

    assert_eq!(read_back(&target), contents);
    assert!(target.is_empty(), "sled's default tree is not copied");
    let expected_entries: u64 = contents.values().map(|tree| tree.len() as u64).sum();
    assert_eq!(
        dumped,
        DumpReport {
            trees: contents.len(),
            entries: expected_entries,
            bytes: bytes.len() as u64,
        }
    );
    assert_eq!(restored, dumped);
    assert_eq!(verify_dump(bytes.as_slice()).expect("verify"), dumped);
}

#[test]
fn only_the_selected_trees_are_dumped() {
    let source = temporary_db();
    let contents = varied_contents();
    fill(&source, &contents);

    let (bytes, report) = dump_to_vec(&source, |name| name.starts_with(b"ks/"));
    let target = temporary_db();
    restore_trees(&target, bytes.as_slice()).expect("restore");

    let expected: Contents = contents
        .into_iter()
        .filter(|(name, _)| name.starts_with(b"ks/"))
        .collect();
    assert_eq!(report.trees, 2);
    assert_eq!(read_back(&target), expected);
}

#[test]
fn a_restore_replaces_the_trees_it_restores_and_keeps_the_others() {
    let source = temporary_db();
    let mut dumped = Contents::new();
    dumped.insert(b"a".to_vec(), entries(&[(b"new", b"1")]));
    fill(&source, &dumped);
    let (bytes, _) = dump_to_vec(&source, |_| true);

    let target = temporary_db();
    let mut existing = Contents::new();
    existing.insert(
        b"a".to_vec(),
        entries(&[(b"stale", b"0"), (b"new", b"old")]),
    );
    existing.insert(b"untouched".to_vec(), entries(&[(b"keep", b"me")]));
    fill(&target, &existing);
    restore_trees(&target, bytes.as_slice()).expect("restore");

    let mut expected = existing;
    expected.insert(b"a".to_vec(), entries(&[(b"new", b"1")]));
    assert_eq!(read_back(&target), expected);
}

#[test]
fn an_empty_selection_makes_a_valid_empty_dump() {
    let source = temporary_db();
    fill(&source, &varied_contents());

    let (bytes, report) = dump_to_vec(&source, |_| false);

    assert_eq!(report.trees, 0);
    assert_eq!(report.entries, 0);
    let target = temporary_db();
    assert_eq!(
        restore_trees(&target, bytes.as_slice()).expect("restore"),
        report
    );
    assert!(read_back(&target).is_empty());
}

#[test]
fn a_dump_cut_at_any_byte_is_refused_as_truncated() {
    let dump = small_dump();
    let target = temporary_db();
    for cut in 0..dump.len() {
        match restore_trees(&target, &dump[..cut]) {
            Err(DumpError::Truncated { offset }) => {
                assert!(offset <= cut as u64, "offset {offset} beyond cut {cut}")
            }
            other => panic!("cut at {cut} of {}: {other:?}", dump.len()),
        }
    }
}

#[test]
fn a_flipped_byte_anywhere_is_refused_with_the_variant_of_its_region() {
    let dump = small_dump();
    let target = temporary_db();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(512));
    let result = runner.run(&(0..dump.len(), 1u8..=255), |(position, mask)| {
        let mut damaged = dump.clone();
        damaged[position] ^= mask;
        let outcome = restore_trees(&target, damaged.as_slice());
        let accepted = match (&outcome, position) {
            (Err(DumpError::BadMagic { .. }), 0..8) => true,
            (Err(DumpError::UnsupportedVersion { found, .. }), 8..12) => *found != FORMAT_VERSION,
            (
                Err(
                    DumpError::Corrupt { .. }
                    | DumpError::Truncated { .. }
                    | DumpError::ChecksumMismatch { .. },
                ),
                12..,
            ) => true,
            _ => false,
        };
        prop_assert!(accepted, "byte {position} ^ {mask:#04x} gave {outcome:?}");
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn a_flipped_payload_or_checksum_byte_is_a_checksum_mismatch() {
    let dump = small_dump();
    let payload = dump
        .windows(2)
        .position(|window| window == b"v1")
        .expect("value bytes in the dump");
    for position in [payload, dump.len() - 1] {
        let mut damaged = dump.clone();
        damaged[position] ^= 0x20;
        let outcome = verify_dump(damaged.as_slice());
        assert!(
            matches!(outcome, Err(DumpError::ChecksumMismatch { .. })),
            "byte {position}: {outcome:?}"
        );
    }
}

#[test]
fn bytes_after_the_trailer_are_refused() {
    let mut dump = small_dump();
    dump.push(0);

    let outcome = verify_dump(dump.as_slice());

    assert!(
        matches!(outcome, Err(DumpError::Corrupt { .. })),
        "{outcome:?}"
    );
}

#[test]
fn a_foreign_stream_is_refused_as_bad_magic() {
    let outcome = verify_dump(&b"{\"not\": \"a dump\"}"[..]);

    assert!(
        matches!(outcome, Err(DumpError::BadMagic { .. })),
        "{outcome:?}"
    );
}
