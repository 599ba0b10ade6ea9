//! The answers sent for recent commands, by entity and inbox sequence, so that a command that
//! comes back (its acknowledgement was lost, or the node died after answering it) is answered
//! exactly as the first time, even when later commands of the same entity changed the state
//! since. Kept in a time-partitioned keyspace for `ingest.answer_retention_secs`: a command
//! redelivered later than that is answered from the state.

use std::sync::Arc;
use std::time::Duration;

use super::StorageError;
use super::clock::Clock;
use super::keyspace::{KeyspaceConfig, TimeKeyspace};

#[derive(Clone)]
pub struct AnswerStore {
    answers: TimeKeyspace,
}

/// `{family}/{id}/{inbox seq, big-endian}`.
fn key(family: &str, id: &str, inbox_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(family.len() + id.len() + 10);
    key.extend_from_slice(family.as_bytes());
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&inbox_seq.to_be_bytes());
    key
}

impl AnswerStore {
    pub fn open(
        db: &sled::Db,
        retention: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StorageError> {
        let answers = TimeKeyspace::open(
            db,
            KeyspaceConfig {
                name: "answers".into(),
                bucket_width: retention / 3,
                retention,
            },
            clock,
        )?;
        Ok(Self { answers })
    }

    /// Files the answers of one entity's slice, one by one: each stands alone, so no batch (and
    /// no process-wide write lock) is needed.
    pub fn file(
        &self,
        family: &str,
        id: &str,
        answers: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = answers
            .into_iter()
            .map(|(seq, answer)| (key(family, id, seq), answer))
            .collect();
        if !entries.is_empty() {
            self.answers.insert_each(entries)?;
        }
        Ok(())
    }

    /// The answer filed for command `inbox_seq` of the entity, if it is still kept.
    pub fn get(
        &self,
        family: &str,
        id: &str,
        inbox_seq: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .answers
            .get(&key(family, id, inbox_seq))?
            .map(|value| value.to_vec()))
    }

    pub fn keyspace(&self) -> &TimeKeyspace {
        &self.answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use crate::storage::clock::ManualClock;
    use crate::storage::keyspace::Expiry;

    #[test]
    fn given_filed_answers_when_read_back_then_each_sequence_has_its_own_until_they_expire() {
        let directory = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(directory.path()).open().unwrap();
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_millis(1_000_000).as_millis(),
        ));
        let store = AnswerStore::open(&db, Duration::from_secs(900), clock.clone()).unwrap();
        store
            .file(
                "user",
                "ann",
                [(7, b"first".to_vec()), (9, b"second".to_vec())],
            )
            .unwrap();
        store.file("user", "bob", [(7, b"other".to_vec())]).unwrap();
        assert_eq!(
            store.get("user", "ann", 7).unwrap().as_deref(),
            Some(&b"first"[..])
        );
        assert_eq!(
            store.get("user", "ann", 9).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(
            store.get("user", "bob", 7).unwrap().as_deref(),
            Some(&b"other"[..])
        );
        assert_eq!(store.get("user", "ann", 8).unwrap(), None);
        clock.advance(Duration::from_secs(2_000));
        store.keyspace().compact(&Expiry::whole()).unwrap();
        assert_eq!(store.get("user", "ann", 7).unwrap(), None);
    }
}
