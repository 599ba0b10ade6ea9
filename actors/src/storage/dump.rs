//! Raw copies of selected sled trees to a byte stream and back: the payload of snapshots.
//!
//! Every record carries its own sequence numbers, so a dump need not be a point-in-time cut:
//! it copies each selected tree's bytes as they are while it runs, and whoever restores it
//! replays the journal from a sequence recorded before the dump started.
//!
//! Format (version 1, integers little-endian):
//!
//! ```text
//! header   MAGIC (8 bytes "PHSLEDDP") | version u32
//! per tree 0x01 | name_len u32 | name
//!          then per entry 0x02 | key_len u32 | key | value_len u32 | value
//! trailer  0x03 | trees u64 | entries u64 | crc32 u32
//! ```
//!
//! The CRC32 (IEEE, `crc32fast`) covers every byte before the CRC field, trailer tag and counts
//! included; nothing may follow the trailer. A reader therefore refuses a truncated stream (the
//! trailer is missing), a flipped byte (checksum, framing or counts) and trailing garbage.

use std::io::{self, BufReader, BufWriter, Read, Write};

use std::sync::mpsc::{SyncSender, sync_channel};

use sled::IVec;

/// First bytes of every dump.
pub const MAGIC: [u8; 8] = *b"PHSLEDDP";
/// The format version [`dump_trees`] writes and [`restore_trees`] reads.
pub const FORMAT_VERSION: u32 = 1;
/// sled's own default tree: never dumped, it is not a playhead tree.
pub const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

const TAG_TREE: u8 = 0x01;
const TAG_ENTRY: u8 = 0x02;
const TAG_TRAILER: u8 = 0x03;
/// Entries per `apply_batch` on restore: large batches amortise sled's per-batch cost, bounded
/// so one batch of ~200-byte values stays a few MiB of memory.
const RESTORE_CHUNK_ENTRIES: usize = 1_000;
/// Threads inserting restored entries. `Tree::apply_batch` takes sled's process-wide write
/// lock, so batches never overlap; plain inserts from several threads do (measured here:
/// 1M entries of 200 bytes into one tree, 65k/s in batches from one thread, 98k/s with two
/// inserting threads, 124k/s with four).
const RESTORE_WORKERS: usize = 4;
/// Initial buffer reserved for a length-prefixed field. A corrupted length must not make the
/// reader allocate gigabytes up front: the buffer grows only with bytes actually read.
const MAX_UPFRONT_RESERVE: usize = 1 << 20;

/// What a dump or a restore covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpReport {
    pub trees: usize,
    pub entries: u64,
    /// Size of the dump stream, header and trailer included.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("dump stream i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("sled failed while dumping or restoring: {0}")]
    Sled(#[from] sled::Error),
    #[error("not a playhead sled dump (magic {found:02x?}); was the right object downloaded?")]
    BadMagic { found: [u8; 8] },
    #[error(
        "dump format version {found} is not supported (this build reads {supported}); restore \
         it with the playhead release that wrote it, or take a new snapshot"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("dump is truncated at byte {offset}: the copy is incomplete, fetch it again")]
    Truncated { offset: u64 },
    #[error("dump is corrupt at byte {offset}: {detail}; discard it and take a new snapshot")]
    Corrupt { offset: u64, detail: String },
    #[error(
        "dump checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the copy is \
         damaged; discard it and take a new snapshot"
    )]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("a restore worker stopped before the dump was read")]
    WorkerGone,
    #[error("the store failed while dumping or restoring: {0}")]
    Store(#[source] Box<super::StorageError>),
    #[error("{what} of {len} bytes in tree {tree:?} exceeds the format's 4 GiB field limit")]
    TooLarge {
        what: &'static str,
        tree: String,
        len: usize,
    },
}

/// The named trees a dump reads and a restore writes: a sled db's, or the node's whole store
/// (its db's trees and its bucket dbs, see [`super::Storage::tree_names`]).
pub trait NamedTrees {
    /// Every tree name (sled's default tree is skipped wherever it appears).
    fn names(&self) -> Vec<Vec<u8>>;
    /// The tree `name`, created when missing.
    fn open(&self, name: &[u8]) -> Result<sled::Tree, DumpError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), DumpError>;
}

impl NamedTrees for sled::Db {
    fn names(&self) -> Vec<Vec<u8>> {
        self.tree_names()
            .into_iter()
            .map(|name| name.to_vec())
            .collect()
    }

    fn open(&self, name: &[u8]) -> Result<sled::Tree, DumpError> {
        Ok(self.open_tree(name)?)
    }

    fn flush(&self) -> Result<(), DumpError> {
        sled::Tree::flush(self)?;
        Ok(())
    }
}

impl NamedTrees for super::Storage {
    fn names(&self) -> Vec<Vec<u8>> {
        self.tree_names()
    }

    fn open(&self, name: &[u8]) -> Result<sled::Tree, DumpError> {
        self.open_tree(name)
            .map_err(|error| DumpError::Store(Box::new(error)))
    }

    fn flush(&self) -> Result<(), DumpError> {
        super::Storage::flush(self).map_err(|error| DumpError::Store(Box::new(error)))
    }
}

/// Writes every entry of the trees whose name `select` accepts (sled's default tree excepted)
/// to `out`, buffered, and flushes it.
///
/// Writes made while the dump runs may or may not be included, tree by tree and key by key. A
/// tree dropped between listing and opening is recreated empty by sled's `open_tree` and dumped
/// empty; for an expired keyspace bucket that is harmless (the next compaction drops it again).
pub fn dump_trees(
    db: &impl NamedTrees,
    select: impl Fn(&[u8]) -> bool,
    out: impl Write,
) -> Result<DumpReport, DumpError> {
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
    writer.write(&MAGIC)?;
    writer.write(&FORMAT_VERSION.to_le_bytes())?;
    let mut report = DumpReport::default();
    // In name order, whatever order sled keeps them in: a kind may rely on one tree being read
    // before another (imports before the shows they wrote).
    let mut names = db.names();
    names.sort();
    for name in names {
        if name == SLED_DEFAULT_TREE || !select(&name) {
            continue;
        }
        let tree = db.open(&name)?;
        let tree_name = || String::from_utf8_lossy(&name).into_owned();
        writer.write(&[TAG_TREE])?;
        writer.write_field(&name, "tree name", tree_name)?;
        report.trees += 1;
        for entry in tree.iter() {
            let (key, value) = entry?;
            writer.write(&[TAG_ENTRY])?;
            writer.write_field(&key, "key", tree_name)?;
            writer.write_field(&value, "value", tree_name)?;
            report.entries += 1;
        }
    }
    writer.write(&[TAG_TRAILER])?;
    writer.write(&(report.trees as u64).to_le_bytes())?;
    writer.write(&report.entries.to_le_bytes())?;
    let crc = writer.hasher.clone().finalize();
    writer.out.write_all(&crc.to_le_bytes())?;
    report.bytes = writer.bytes + 4;
    writer
        .out
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .flush()?;
    Ok(report)
}

/// Restores a dump written by [`dump_trees`] into `db`, then flushes `db`.
///
/// Each tree in the dump is cleared before its entries are written (a restore replaces a tree,
/// never merges into it); trees absent from the dump are left alone.
///
/// Entries are applied while the stream is read, in batches, and the checksum is known only at
/// the end. On error the db therefore holds a partial restore: the intended use is restoring
/// into a fresh db that the caller discards on error (or checking the stream first with
/// [`verify_dump`]). The error always names the refusal; a damaged dump never yields `Ok`.
pub fn restore_trees(db: &impl NamedTrees, input: impl Read) -> Result<DumpReport, DumpError> {
    let report = std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(RESTORE_WORKERS);
        let mut workers = Vec::with_capacity(RESTORE_WORKERS);
        for _ in 0..RESTORE_WORKERS {
            let (sender, chunks) = sync_channel::<(sled::Tree, Chunk)>(4);
            senders.push(sender);
            workers.push(scope.spawn(move || -> Result<(), DumpError> {
                for (tree, chunk) in chunks {
                    for (key, value) in chunk {
                        tree.insert(key, value)?;
                    }
                }
                Ok(())
            }));
        }
        let mut applier = Applier {
            db,
            tree: None,
            chunk: Vec::with_capacity(RESTORE_CHUNK_ENTRIES),
            workers: senders,
            next_worker: 0,
        };
        let read = read_dump(input, &mut applier);
        drop(applier);
        // A worker's own error explains a `WorkerGone` better than the reader can.
        let mut worker_error = None;
        for worker in workers {
            let result = worker.join().unwrap_or(Err(DumpError::WorkerGone));
            if let Err(error) = result {
                worker_error.get_or_insert(error);
            }
        }
        match (read, worker_error) {
            (Err(DumpError::WorkerGone) | Ok(_), Some(error)) => Err(error),
            (read, _) => read,
        }
    })?;
    db.flush()?;
    Ok(report)
}

/// Reads a whole dump and checks magic, version, framing, counts and checksum without writing
/// anything.
pub fn verify_dump(input: impl Read) -> Result<DumpReport, DumpError> {
    read_dump(input, &mut Verifier)
}

/// Receives the frames of a dump as they are read.
trait FrameSink {
    fn tree(&mut self, name: &[u8]) -> Result<(), DumpError>;
    fn entry(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), DumpError>;
    fn finish(&mut self) -> Result<(), DumpError>;
}

struct Verifier;

impl FrameSink for Verifier {
    fn tree(&mut self, _name: &[u8]) -> Result<(), DumpError> {
        Ok(())
    }
    fn entry(&mut self, _key: Vec<u8>, _value: Vec<u8>) -> Result<(), DumpError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), DumpError> {
        Ok(())
    }
}

/// Entries of one tree on their way to a worker.
type Chunk = Vec<(IVec, IVec)>;

/// Hands entries, a chunk at a time, to the inserting workers in turn.
struct Applier<'db, T> {
    db: &'db T,
    tree: Option<sled::Tree>,
    chunk: Chunk,
    workers: Vec<SyncSender<(sled::Tree, Chunk)>>,
    next_worker: usize,
}

impl<T: NamedTrees> Applier<'_, T> {
    fn send_chunk(&mut self) -> Result<(), DumpError> {
        if let Some(tree) = &self.tree
            && !self.chunk.is_empty()
        {
            let chunk =
                std::mem::replace(&mut self.chunk, Vec::with_capacity(RESTORE_CHUNK_ENTRIES));
            self.workers[self.next_worker]
                .send((tree.clone(), chunk))
                .map_err(|_| DumpError::WorkerGone)?;
            self.next_worker = (self.next_worker + 1) % self.workers.len();
        }
        Ok(())
    }
}

impl<T: NamedTrees> FrameSink for Applier<'_, T> {
    fn tree(&mut self, name: &[u8]) -> Result<(), DumpError> {
        self.send_chunk()?;
        let tree = self.db.open(name)?;
        // Cleared before any of its chunks leaves: a restore replaces, never merges.
        tree.clear()?;
        self.tree = Some(tree);
        Ok(())
    }

    fn entry(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), DumpError> {
        self.chunk.push((IVec::from(key), IVec::from(value)));
        if self.chunk.len() >= RESTORE_CHUNK_ENTRIES {
            self.send_chunk()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DumpError> {
        self.send_chunk()
    }
}

fn read_dump(input: impl Read, sink: &mut impl FrameSink) -> Result<DumpReport, DumpError> {
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, input));
    let magic: [u8; 8] = reader.read_array()?;
    if magic != MAGIC {
        return Err(DumpError::BadMagic { found: magic });
    }
    let version = u32::from_le_bytes(reader.read_array()?);
    if version != FORMAT_VERSION {
        return Err(DumpError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let mut report = DumpReport::default();
    // Tree names seen so far: a repeated name would clear what the dump itself just restored.
    let mut seen_trees = std::collections::HashSet::new();
    loop {
        let frame_offset = reader.bytes;
        let [tag] = reader.read_array()?;
        match tag {
            TAG_TREE => {
                let name = reader.read_field()?;
                if name.as_slice() == SLED_DEFAULT_TREE || !seen_trees.insert(name.clone()) {
                    return Err(corrupt(frame_offset, "tree listed twice or sled's own"));
                }
                sink.tree(&name)?;
                report.trees += 1;
            }
            TAG_ENTRY => {
                if report.trees == 0 {
                    return Err(corrupt(frame_offset, "entry before any tree"));
                }
                let key = reader.read_field()?;
                let value = reader.read_field()?;
                sink.entry(key, value)?;
                report.entries += 1;
            }
            TAG_TRAILER => break,
            other => {
                return Err(corrupt(
                    frame_offset,
                    format!("unknown frame tag {other:#04x}"),
                ));
            }
        }
    }
    let trailer_offset = reader.bytes;
    let stored_trees = u64::from_le_bytes(reader.read_array()?);
    let stored_entries = u64::from_le_bytes(reader.read_array()?);
    let computed = reader.hasher.clone().finalize();
    let stored = u32::from_le_bytes(reader.read_unhashed_array()?);
    if stored != computed {
        return Err(DumpError::ChecksumMismatch { stored, computed });
    }
    if stored_trees != report.trees as u64 || stored_entries != report.entries {
        return Err(corrupt(
            trailer_offset,
            format!(
                "trailer counts {stored_trees} trees / {stored_entries} entries, the stream \
                 holds {} / {}",
                report.trees, report.entries
            ),
        ));
    }
    if reader.input.read(&mut [0u8; 1])? != 0 {
        return Err(corrupt(reader.bytes, "bytes after the trailer"));
    }
    sink.finish()?;
    report.bytes = reader.bytes;
    Ok(report)
}

/// A writer that feeds every byte written through it to the CRC.
struct HashingWriter<W: Write> {
    out: BufWriter<W>,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(out: BufWriter<W>) -> Self {
        Self {
            out,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DumpError> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn write_field(
        &mut self,
        field: &[u8],
        what: &'static str,
        tree: impl Fn() -> String,
    ) -> Result<(), DumpError> {
        let len = u32::try_from(field.len()).map_err(|_| DumpError::TooLarge {
            what,
            tree: tree(),
            len: field.len(),
        })?;
        self.write(&len.to_le_bytes())?;
        self.write(field)
    }
}

/// A reader that feeds every byte read through it to the CRC and counts its offset.
struct HashingReader<R: Read> {
    input: BufReader<R>,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(input: BufReader<R>) -> Self {
        Self {
            input,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let array = self.read_unhashed_array()?;
        self.hasher.update(&array);
        Ok(array)
    }

    fn read_unhashed_array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut array = [0u8; N];
        self.input
            .read_exact(&mut array)
            .map_err(|error| match error.kind() {
                io::ErrorKind::UnexpectedEof => DumpError::Truncated { offset: self.bytes },
                _ => DumpError::Io(error),
            })?;
        self.bytes += N as u64;
        Ok(array)
    }

    /// Reads a `u32` length and that many bytes.
    fn read_field(&mut self) -> Result<Vec<u8>, DumpError> {
        let len = u32::from_le_bytes(self.read_array()?) as usize;
        let mut field = Vec::with_capacity(len.min(MAX_UPFRONT_RESERVE));
        let read = (&mut self.input).take(len as u64).read_to_end(&mut field)?;
        self.hasher.update(&field);
        self.bytes += read as u64;
        if read < len {
            return Err(DumpError::Truncated { offset: self.bytes });
        }
        Ok(field)
    }
}

fn corrupt(offset: u64, detail: impl Into<String>) -> DumpError {
    DumpError::Corrupt {
        offset,
        detail: detail.into(),
    }
}

#[cfg(test)]
#[path = "dump_tests.rs"]
mod tests;
