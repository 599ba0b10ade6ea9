//! Imports: each one's record (state, how far it got, counts), its first line errors, and each
//! source's last journal event (`ImportCompleted` is appended exactly once per import).
//!
//! Trees:
//! - `imports`: import id → [`ImportRecord`], rewritten at each commit of an import's progress
//!   (after the shows of the lines it covers, so a crash never leaves a record ahead of them);
//! - `import_errors`: `{import id}\0{line: 8 bytes BE}` → reason, the first
//!   [`MAX_LISTED_ERRORS`] of each import, written as they are found;
//! - `import_sources`: source → the sequence of its last journal event;
//! - `import_meta`: the next import serial.

use playhead_proto::ids::SourceId;

use super::StorageError;

/// Line errors kept per import; every one is counted.
pub const MAX_LISTED_ERRORS: usize = 1000;

const NEXT_SERIAL: &[u8] = b"next_serial";

/// The state of an import, as `playhead.v1.ImportState` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportState {
    Accepted = 1,
    Running = 2,
    Completed = 3,
    Failed = 4,
}

impl ImportState {
    pub fn from_number(number: i32) -> Option<Self> {
        Some(match number {
            1 => Self::Accepted,
            2 => Self::Running,
            3 => Self::Completed,
            4 => Self::Failed,
            _ => return None,
        })
    }

    /// Completed or failed: nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// One import as stored.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ImportRecord {
    #[prost(string, tag = "1")]
    pub source: String,
    #[prost(string, tag = "2")]
    pub import_id: String,
    #[prost(string, tag = "3")]
    pub object_name: String,
    /// Order of acceptance; shows name it as their origin.
    #[prost(uint64, tag = "4")]
    pub serial: u64,
    /// An [`ImportState`].
    #[prost(int32, tag = "5")]
    pub state: i32,
    /// Lines of the object done (records, blank lines and the header alike).
    #[prost(uint64, tag = "6")]
    pub lines_done: u64,
    #[prost(uint64, tag = "7")]
    pub records_read: u64,
    #[prost(uint64, tag = "8")]
    pub records_new: u64,
    #[prost(uint64, tag = "9")]
    pub records_duplicate: u64,
    #[prost(uint64, tag = "10")]
    pub records_invalid: u64,
    #[prost(string, tag = "11")]
    pub failure: String,
    #[prost(uint64, tag = "12")]
    pub accepted_at_ms: u64,
    #[prost(uint64, tag = "13")]
    pub completed_at_ms: u64,
    #[prost(uint64, tag = "14")]
    pub updated_at_ms: u64,
    /// The import request's sequence in the import inbox (the journal event names it).
    #[prost(uint64, tag = "15")]
    pub request_seq: u64,
    /// The sequence of its `ImportCompleted` event once appended (0 before).
    #[prost(uint64, tag = "16")]
    pub journal_seq: u64,
}

impl ImportRecord {
    pub fn state(&self) -> ImportState {
        ImportState::from_number(self.state).unwrap_or(ImportState::Failed)
    }
}

#[derive(Clone)]
pub struct ImportStore {
    imports: sled::Tree,
    errors: sled::Tree,
    sources: sled::Tree,
    meta: sled::Tree,
}

impl ImportStore {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            imports: db.open_tree("imports")?,
            errors: db.open_tree("import_errors")?,
            sources: db.open_tree("import_sources")?,
            meta: db.open_tree("import_meta")?,
        })
    }

    pub fn load(&self, import: &str) -> Result<Option<ImportRecord>, StorageError> {
        self.imports
            .get(import.as_bytes())?
            .map(|bytes| {
                prost::Message::decode(bytes.as_ref()).map_err(|error| StorageError::Corrupt {
                    what: "import record",
                    detail: error.to_string(),
                })
            })
            .transpose()
    }

    pub fn save(&self, record: &ImportRecord) -> Result<(), StorageError> {
        self.imports.insert(
            record.import_id.as_bytes(),
            prost::Message::encode_to_vec(record),
        )?;
        Ok(())
    }

    /// The next import serial (1, 2, …); taken serials are never given again.
    pub fn take_serial(&self) -> Result<u64, StorageError> {
        let previous = self.meta.fetch_and_update(NEXT_SERIAL, |current| {
            let next = current
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map_or(1, u64::from_be_bytes);
            Some(next.saturating_add(1).to_be_bytes().to_vec())
        })?;
        Ok(previous
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }

    /// Imports not finished (accepted or running), oldest first: resumed at start.
    pub fn unfinished(&self) -> Result<Vec<ImportRecord>, StorageError> {
        let mut unfinished = Vec::new();
        for entry in self.imports.iter() {
            let (key, _) = entry?;
            let Some(record) = self.load(&String::from_utf8_lossy(&key))? else {
                continue;
            };
            if !record.state().is_terminal() {
                unfinished.push(record);
            }
        }
        unfinished.sort_by_key(|record| record.serial);
        Ok(unfinished)
    }

    /// Notes the error of `line`, unless [`MAX_LISTED_ERRORS`] are listed already (the caller
    /// counts them: `listed_so_far`).
    pub fn note_error(
        &self,
        import: &str,
        line: u64,
        reason: &str,
        listed_so_far: u64,
    ) -> Result<(), StorageError> {
        if listed_so_far >= MAX_LISTED_ERRORS as u64 {
            return Ok(());
        }
        self.errors
            .insert(error_key(import, line), reason.as_bytes())?;
        Ok(())
    }

    /// The listed errors of an import, by line.
    pub fn errors(&self, import: &str) -> Result<Vec<(u64, String)>, StorageError> {
        let mut prefix = import.as_bytes().to_vec();
        prefix.push(0);
        let mut errors = Vec::new();
        for entry in self.errors.scan_prefix(&prefix).take(MAX_LISTED_ERRORS) {
            let (key, reason) = entry?;
            let line = key
                .get(prefix.len()..)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map_or(0, u64::from_be_bytes);
            errors.push((line, String::from_utf8_lossy(&reason).into_owned()));
        }
        Ok(errors)
    }

    /// The sequence of the source's last journal event (0: none yet).
    pub fn source_journal_seq(&self, source: &SourceId) -> Result<u64, StorageError> {
        Ok(self
            .sources
            .get(source.as_str())?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub fn set_source_journal_seq(
        &self,
        source: &SourceId,
        sequence: u64,
    ) -> Result<(), StorageError> {
        self.sources
            .insert(source.as_str(), sequence.to_be_bytes().as_slice())?;
        Ok(())
    }
}

fn error_key(import: &str, line: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(import.len() + 9);
    key.extend_from_slice(import.as_bytes());
    key.push(0);
    key.extend_from_slice(&line.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_count_up_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let store = ImportStore::open(&db).unwrap();
            assert_eq!(store.take_serial().unwrap(), 1);
            assert_eq!(store.take_serial().unwrap(), 2);
            db.flush().unwrap();
        }
        // The first handle's lock goes a moment after its drop (sled's threads).
        let db = crate::storage::reopen_db(&sled::Config::new().path(dir.path()));
        let store = ImportStore::open(&db).unwrap();
        assert_eq!(store.take_serial().unwrap(), 3);
    }

    #[test]
    fn errors_are_listed_by_line_up_to_the_limit_and_kept_apart_per_import() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = ImportStore::open(&db).unwrap();
        for line in (1..=1005u64).rev() {
            let listed = store.errors("a").unwrap().len() as u64;
            store.note_error("a", line, "bad", listed).unwrap();
        }
        store.note_error("a-b", 1, "other", 0).unwrap();
        let errors = store.errors("a").unwrap();
        assert_eq!(errors.len(), MAX_LISTED_ERRORS);
        assert_eq!(errors[0], (6, "bad".to_owned()));
        assert_eq!(store.errors("a-b").unwrap(), vec![(1, "other".to_owned())]);
    }
}
