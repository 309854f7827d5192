//! The Raft log on disk: entries, the vote, and the committed mark of one node.
//!
//! One append-only file, `raft.log`, holds records `[len: u32 LE][CRC-32: u32 LE]
//! [MessagePack of a `LogRecord`]`: an entry, or a marker that says entries from an
//! index on were cut (`Truncate`, a conflicting tail a new leader overwrote), that
//! entries up to a log id were purged (a snapshot covers them), or where the commit
//! index stands. Reading the file from the start and applying the records in order
//! gives the log back; a torn last record (a crash mid-write) is cut off. When the
//! file holds much more than the live entries it is rewritten (to a temporary file,
//! fsynced, renamed). The vote lives in its own small file, replaced atomically,
//! because Raft's safety rests on it.
//!
//! Every append and every vote is fsynced before openraft is told it is done: a node
//! must never forget what it acknowledged to a leader or whom it voted for. Appends
//! are written by a thread of the log's own (`agora-raft-log`), which takes every
//! record queued while the previous fsync ran and writes them with one fsync (group
//! commit), then tells openraft; openraft's core goes on meanwhile. The in-memory
//! view is updated when a record is queued, so reads see an entry at once. A commit
//! mark alone is written without an fsync of its own (the next append's carries it):
//! a lost one only means replaying less on start, and a torn one is cut off like any
//! torn tail, since every acknowledged record before it was fsynced already.
//!
//! This module owns these two files; it knows nothing about the engine.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{Entry, NodeId, TypeConfig};

/// The log file's name in the node's directory.
pub const LOG_FILE: &str = "raft.log";
/// The vote file's name in the node's directory.
pub const VOTE_FILE: &str = "raft.vote";

/// Rewrite the log file once it is this many times larger than its live records…
const COMPACT_RATIO: u64 = 2;
/// …and at least this large.
const COMPACT_MIN: u64 = 64 << 20;

/// One record of the log file.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// An entry (replacing any entry at its index).
    Entry(Entry),
    /// Every entry at this index and after is gone.
    Truncate(u64),
    /// Every entry up to and including this log id is gone (a snapshot covers it).
    Purge(LogId<NodeId>),
    /// The commit index.
    Committed(Option<LogId<NodeId>>),
}

/// What the log holds in memory (the file is its durable copy).
#[derive(Debug, Default)]
struct State {
    /// Index → (entry, bytes of its record in the file).
    entries: BTreeMap<u64, (Entry, u64)>,
    last_purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    /// Bytes of the file's records that are still live (to know when to compact).
    live_len: u64,
}

struct Inner {
    dir: PathBuf,
    state: State,
}

/// What to do once a write is on disk.
enum Done {
    /// Tell openraft an append is flushed.
    Flushed(LogFlushed<TypeConfig>),
    /// Wake a caller that waits for it.
    Notify(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// Nothing (a commit mark: losing it only means replaying less).
    Nothing,
}

/// Bytes for the writer thread, and whom to tell.
struct Job {
    bytes: Vec<u8>,
    done: Done,
}

/// The Raft log of one node (see the module docs). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("LogStore")
            .field("dir", &inner.dir)
            .field("entries", &inner.state.entries.len())
            .field("last_purged", &inner.state.last_purged)
            .finish()
    }
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn encode(record: &LogRecord) -> Vec<u8> {
    let payload = rmp_serde::to_vec(record).expect("a log record always encodes");
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads every intact record of `bytes`; returns them and the length of the intact
/// prefix (shorter than `bytes` after a torn or damaged tail).
fn decode_all(bytes: &[u8]) -> (Vec<(LogRecord, u64)>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = rmp_serde::from_slice::<LogRecord>(payload) else { break };
        records.push((record, (8 + len) as u64));
        at += 8 + len;
    }
    (records, at)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl State {
    /// Applies one record of `len` bytes in the file.
    fn apply(&mut self, record: LogRecord, len: u64) {
        match record {
            LogRecord::Entry(entry) => self.insert(entry, len),
            LogRecord::Truncate(from) => self.truncate(from),
            LogRecord::Purge(upto) => self.purge(upto),
            LogRecord::Committed(committed) => self.committed = committed,
        }
    }

    fn insert(&mut self, entry: Entry, len: u64) {
        if let Some((_, old)) = self.entries.insert(entry.log_id.index, (entry, len)) {
            self.live_len -= old;
        }
        self.live_len += len;
    }

    fn truncate(&mut self, from: u64) {
        let cut = self.entries.split_off(&from);
        self.live_len -= cut.values().map(|(_, len)| len).sum::<u64>();
    }

    fn purge(&mut self, upto: LogId<NodeId>) {
        let kept = self.entries.split_off(&(upto.index + 1));
        let purged = std::mem::replace(&mut self.entries, kept);
        self.live_len -= purged.values().map(|(_, len)| len).sum::<u64>();
        self.last_purged = Some(upto);
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries.values().next_back().map(|(e, _)| e.log_id).or(self.last_purged)
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`: replays the file, cutting a torn tail.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, good) = decode_all(&bytes);
        let mut state = State::default();
        for (record, len) in records {
            state.apply(record, len);
        }
        if good < bytes.len() {
            tracing::warn!(file = %path.display(), offset = good, bytes = bytes.len() - good, "cutting the Raft log's torn tail");
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        state.vote = read_vote(dir)?;
        let inner = Arc::new(Mutex::new(Inner { dir: dir.to_owned(), state }));
        let (jobs, queue) = std::sync::mpsc::channel();
        let writer = Writer { inner: Arc::downgrade(&inner), file, file_len: good as u64, dir: dir.to_owned() };
        std::thread::Builder::new().name("agora-raft-log".to_owned()).spawn(move || writer.run(queue))?;
        Ok(LogStore { inner, jobs })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries at indexes in `range` (for a replica restoring its state).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.lock().state.entries.range(range).map(|(_, (e, _))| e.clone()).collect()
    }

    /// Applies `records` to the in-memory log and queues their bytes for the writer,
    /// in one hold of the lock, so the file's order is the order of the calls.
    fn queue(&self, records: Vec<LogRecord>, done: Done) -> io::Result<()> {
        let mut inner = self.lock();
        let mut bytes = Vec::new();
        for record in records {
            let encoded = encode(&record);
            inner.state.apply(record, encoded.len() as u64);
            bytes.extend_from_slice(&encoded);
        }
        self.jobs
            .send(Job { bytes, done })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the Raft log's writer thread is gone"))
    }

    /// Queues `records` and returns once they are on disk.
    async fn write(&self, records: Vec<LogRecord>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(records, Done::Notify(tx))?;
        rx.await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the Raft log's writer thread is gone"))?
    }
}

/// The writer thread's side of the log (see the module docs).
struct Writer {
    inner: std::sync::Weak<Mutex<Inner>>,
    file: File,
    file_len: u64,
    dir: PathBuf,
}

impl Writer {
    fn run(mut self, queue: std::sync::mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter());
            let mut bytes = Vec::with_capacity(batch.iter().map(|j| j.bytes.len()).sum());
            for job in &batch {
                bytes.extend_from_slice(&job.bytes);
            }
            // Nobody waits for a commit mark alone (losing one only means replaying
            // more on start): it is written, and goes to disk with the next fsync,
            // instead of costing one of its own that the next append would queue behind.
            let durable = batch.iter().any(|job| !matches!(job.done, Done::Nothing));
            let written =
                self.file.write_all(&bytes).and_then(|()| if durable { self.file.sync_data() } else { Ok(()) });
            self.file_len += bytes.len() as u64;
            if let Err(e) = &written {
                tracing::error!(error = %e, "cannot write the Raft log");
            }
            for job in batch {
                let result = written.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
                match job.done {
                    Done::Flushed(callback) => callback.log_io_completed(result),
                    Done::Notify(tx) => {
                        let _ = tx.send(result);
                    }
                    Done::Nothing => {}
                }
            }
            if let Err(e) = self.compact_if_due() {
                tracing::error!(error = %e, "cannot compact the Raft log; it keeps growing");
            }
        }
    }

    /// Rewrites the log file with only what is live, atomically, once it holds much
    /// more than that.
    fn compact_if_due(&mut self) -> io::Result<()> {
        let Some(inner) = self.inner.upgrade() else { return Ok(()) };
        let inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.file_len <= COMPACT_MIN || self.file_len <= COMPACT_RATIO * inner.state.live_len.max(1) {
            return Ok(());
        }
        // The state may hold records queued since this batch was taken: they go into
        // the new file now and are appended again when their turn comes, which is
        // harmless (an entry replaces itself on replay; truncate and purge marks and
        // commit marks are idempotent).
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut out = Vec::new();
        if let Some(purged) = inner.state.last_purged {
            out.extend_from_slice(&encode(&LogRecord::Purge(purged)));
        }
        out.extend_from_slice(&encode(&LogRecord::Committed(inner.state.committed)));
        for (entry, _) in inner.state.entries.values() {
            out.extend_from_slice(&encode(&LogRecord::Entry(entry.clone())));
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(LOG_FILE))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().read(true).append(true).open(self.dir.join(LOG_FILE))?;
        self.file_len = out.len() as u64;
        Ok(())
    }
}

fn read_vote(dir: &Path) -> io::Result<Option<Vote<NodeId>>> {
    let path = dir.join(VOTE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Written whole and renamed into place: anything but one intact record is damage.
    let damaged =
        |why: &str| io_error(format!("{}: {why}; refusing to start without knowing this node's vote", path.display()));
    if bytes.len() < 8 {
        return Err(damaged("too short"));
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = bytes.get(8..8 + len).ok_or_else(|| damaged("truncated"))?;
    if crc32fast::hash(payload) != crc {
        return Err(damaged("checksum mismatch"));
    }
    rmp_serde::from_slice(payload).map(Some).map_err(|e| damaged(&e.to_string()))
}

fn write_vote(dir: &Path, vote: &Vote<NodeId>) -> io::Result<()> {
    let payload = rmp_serde::to_vec(vote).map_err(io_error)?;
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(format!("{VOTE_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(VOTE_FILE))?;
    sync_dir(dir)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(self.entries(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(LogState { last_purged_log_id: inner.state.last_purged, last_log_id: inner.state.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let dir = self.lock().dir.clone();
        let store = self.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || {
            write_vote(&dir, &vote)?;
            store.lock().state.vote = Some(vote);
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&io_error(e)))?
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().state.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Not waited for: a lost commit mark only means replaying less on start.
        self.queue(vec![LogRecord::Committed(committed)], Done::Nothing)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().state.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        // The writer thread tells openraft once the records are on disk.
        self.queue(records, Done::Flushed(callback)).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(vec![LogRecord::Truncate(log_id.index)]).await.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(vec![LogRecord::Purge(log_id)]).await.map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
