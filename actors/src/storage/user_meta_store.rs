//! Where each user entity stands: the last inbox sequence it applied and its last journal
//! event. One small record per user in the plain tree `user_meta`, written after a decision
//! that changed the user's sessions, so a crash in between leaves it behind them (never
//! ahead): catch-up then folds the missing events, and records already past an event skip it.
//! A decision that changed the playouts writes the position inside the playout record instead
//! (one write, atomic with the state it covers); the entity stands at the later of the two.
//! Both only ever follow (in sled's one log) the records they cover.

use playhead_proto::ids::UserId;

use super::{MainWrites, StorageError};

const TREE_NAME: &str = "user_meta";

#[derive(Clone, PartialEq, prost::Message)]
struct UserMetaRecord {
    #[prost(uint64, tag = "1")]
    last_inbox_seq: u64,
    #[prost(uint64, tag = "2")]
    last_journal_seq: u64,
}

/// A user's last applied inbox sequence and last journal event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserMeta {
    pub last_inbox_seq: u64,
    pub last_journal_seq: u64,
}

impl UserMeta {
    /// The later of two positions written for the same user: both counters only grow, so the
    /// later write is the larger in each.
    pub fn later(self, other: UserMeta) -> UserMeta {
        UserMeta {
            last_inbox_seq: self.last_inbox_seq.max(other.last_inbox_seq),
            last_journal_seq: self.last_journal_seq.max(other.last_journal_seq),
        }
    }
}

#[derive(Clone)]
pub struct UserMetaStore {
    records: sled::Tree,
}

impl UserMetaStore {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            records: db.open_tree(TREE_NAME)?,
        })
    }

    pub fn load(&self, user: &UserId) -> Result<UserMeta, StorageError> {
        let Some(bytes) = self.records.get(user.as_str())? else {
            return Ok(UserMeta::default());
        };
        let record =
            <UserMetaRecord as prost::Message>::decode(bytes.as_ref()).map_err(|error| {
                StorageError::Corrupt {
                    what: "user meta",
                    detail: format!("{user}: {error}"),
                }
            })?;
        Ok(UserMeta {
            last_inbox_seq: record.last_inbox_seq,
            last_journal_seq: record.last_journal_seq,
        })
    }

    pub fn save(&self, writes: &mut MainWrites, user: &UserId, meta: UserMeta) {
        let record = UserMetaRecord {
            last_inbox_seq: meta.last_inbox_seq,
            last_journal_seq: meta.last_journal_seq,
        };
        writes.insert(
            &self.records,
            user.as_str(),
            prost::Message::encode_to_vec(&record),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_unknown_users_start_at_zero() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = UserMetaStore::open(&db).unwrap();
        let ann = UserId::parse("ann").unwrap();
        assert_eq!(store.load(&ann).unwrap(), UserMeta::default());
        let meta = UserMeta {
            last_inbox_seq: 12,
            last_journal_seq: 340,
        };
        MainWrites::write_now(|writes| store.save(writes, &ann, meta)).unwrap();
        assert_eq!(store.load(&ann).unwrap(), meta);
    }
}
