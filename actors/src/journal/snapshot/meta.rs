//! [`SnapshotMeta`] and its form in the object's metadata map: one string per field, readable
//! with `nats object info`, stored in the same object-info record as the chunk list and digest.

use std::collections::HashMap;
use std::str::FromStr;

use super::SnapshotError;
use crate::storage::dump;

/// What a snapshot holds and where the journal replay resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Which state (e.g. `user`, `station`); `[A-Za-z0-9_-]{1,128}`.
    pub kind: String,
    /// The group of partitions whose state this is.
    pub group: u32,
    /// The journal sequence recorded before the dump started: replaying from just after it
    /// reapplies whatever the dump may have missed (every record carries its own sequences).
    pub journal_seq: u64,
    /// The partition count the state was folded with.
    pub partitions: u32,
    pub taken_at_ms: u64,
    /// Filled by `take`.
    pub entries: u64,
    /// Filled by `take`: the dump's size in bytes.
    pub bytes: u64,
    /// Filled by `take`: the dump format version ([`dump::FORMAT_VERSION`]).
    pub format: u32,
}

impl SnapshotMeta {
    /// The meta of a snapshot about to be taken; `take` fills the counts and format.
    pub fn new(
        kind: impl Into<String>,
        group: u32,
        journal_seq: u64,
        partitions: u32,
        taken_at_ms: u64,
    ) -> Self {
        Self {
            kind: kind.into(),
            group,
            journal_seq,
            partitions,
            taken_at_ms,
            entries: 0,
            bytes: 0,
            format: dump::FORMAT_VERSION,
        }
    }

    pub(super) fn to_object_metadata(&self) -> HashMap<String, String> {
        [
            (KEY_KIND, self.kind.clone()),
            (KEY_GROUP, self.group.to_string()),
            (KEY_JOURNAL_SEQ, self.journal_seq.to_string()),
            (KEY_PARTITIONS, self.partitions.to_string()),
            (KEY_TAKEN_AT_MS, self.taken_at_ms.to_string()),
            (KEY_ENTRIES, self.entries.to_string()),
            (KEY_BYTES, self.bytes.to_string()),
            (KEY_FORMAT, self.format.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Reads the meta back, refusing an object whose metadata names another (kind, group).
    pub(super) fn from_object_metadata(
        object: &str,
        metadata: &HashMap<String, String>,
        kind: &str,
        group: u32,
    ) -> Result<Self, SnapshotError> {
        let meta = Self {
            kind: field(object, metadata, KEY_KIND)?,
            group: field(object, metadata, KEY_GROUP)?,
            journal_seq: field(object, metadata, KEY_JOURNAL_SEQ)?,
            partitions: field(object, metadata, KEY_PARTITIONS)?,
            taken_at_ms: field(object, metadata, KEY_TAKEN_AT_MS)?,
            entries: field(object, metadata, KEY_ENTRIES)?,
            bytes: field(object, metadata, KEY_BYTES)?,
            format: field(object, metadata, KEY_FORMAT)?,
        };
        if meta.kind != kind || meta.group != group {
            return Err(SnapshotError::BadMeta {
                object: object.to_owned(),
                key: KEY_KIND,
                value: Some(format!("{}/g{}", meta.kind, meta.group)),
            });
        }
        Ok(meta)
    }
}

const KEY_KIND: &str = "kind";
const KEY_GROUP: &str = "group";
const KEY_JOURNAL_SEQ: &str = "journal_seq";
const KEY_PARTITIONS: &str = "partitions";
const KEY_TAKEN_AT_MS: &str = "taken_at_ms";
const KEY_ENTRIES: &str = "entries";
const KEY_BYTES: &str = "bytes";
const KEY_FORMAT: &str = "format";

fn field<T: FromStr>(
    object: &str,
    metadata: &HashMap<String, String>,
    key: &'static str,
) -> Result<T, SnapshotError> {
    let value = metadata.get(key);
    value
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| SnapshotError::BadMeta {
            object: object.to_owned(),
            key,
            value: value.cloned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_survives_the_object_metadata_map() {
        let meta = SnapshotMeta {
            entries: 12,
            bytes: 3456,
            ..SnapshotMeta::new("user", 7, 99, 16, 1_700_000_000_000)
        };

        let read = SnapshotMeta::from_object_metadata(
            "snapshot.user.g007",
            &meta.to_object_metadata(),
            "user",
            7,
        );

        assert_eq!(read.expect("meta"), meta);
    }

    #[test]
    fn meta_of_another_group_or_with_a_bad_field_is_refused() {
        let metadata = SnapshotMeta::new("user", 7, 99, 16, 0).to_object_metadata();
        let other_group =
            SnapshotMeta::from_object_metadata("snapshot.user.g008", &metadata, "user", 8);
        assert!(matches!(other_group, Err(SnapshotError::BadMeta { .. })));

        let mut bad = metadata;
        bad.insert(KEY_JOURNAL_SEQ.into(), "minus one".into());
        let bad_field = SnapshotMeta::from_object_metadata("snapshot.user.g007", &bad, "user", 7);
        assert!(matches!(
            bad_field,
            Err(SnapshotError::BadMeta {
                key: KEY_JOURNAL_SEQ,
                ..
            })
        ));
    }
}
