//! The Raft log on disk: entries, the vote, and the committed mark of one node.
//!
//! Append-only segment files, `raft.log` then `raft.log.00000000000000000001` and on,
//! hold records `[len: u32 LE][CRC-32: u32 LE][MessagePack of a `LogRecord`]`: an
//! entry, or a marker that says entries from an index on were cut (`Truncate`, a
//! conflicting tail a new leader overwrote), that entries up to a log id were purged
//! (a snapshot covers them), or where the commit index stands. Reading the segments in
//! order and applying their records gives the log back; a torn last record of the last
//! segment (a crash mid-write) is cut off, damage anywhere else stops the node. Once a
//! segment holds `SEGMENT_BYTES` a new one begins, with the purge and commit marks as
//! they stand; a segment whose entries a durable purge covers is deleted. Nothing is
//! ever rewritten, so appends never wait for the log to be tidied. The vote lives in
//! its own small file, replaced atomically, because Raft's safety rests on it.
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

/// The first log segment's name in the node's directory (the later ones add
/// `.` and their number; a node from before segments has only this one).
pub const LOG_FILE: &str = "raft.log";
/// The vote file's name in the node's directory.
pub const VOTE_FILE: &str = "raft.vote";

/// A new segment begins once the current one holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;

/// The file of segment `seq` in `dir`.
fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    match seq {
        0 => dir.join(LOG_FILE),
        seq => dir.join(format!("{LOG_FILE}.{seq:020}")),
    }
}

/// The numbers of the segments in `dir`, in order.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LOG_FILE {
            seqs.push(0);
        } else if let Some(seq) = name.strip_prefix(LOG_FILE).and_then(|rest| rest.strip_prefix('.')) {
            if seq.len() == 20 {
                if let Ok(seq) = seq.parse() {
                    seqs.push(seq);
                }
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

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

/// What the log holds in memory (the segments are its durable copy).
#[derive(Debug, Default)]
struct State {
    /// Index → entry.
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
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

/// Bytes for the writer thread, whom to tell, and what the writer must know of them.
struct Job {
    bytes: Vec<u8>,
    done: Done,
    /// The highest index of an entry among them.
    max_index: Option<u64>,
    /// The index a purge among them covers.
    purged: Option<u64>,
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
fn decode_all(bytes: &[u8]) -> (Vec<LogRecord>, usize) {
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
        records.push(record);
        at += 8 + len;
    }
    (records, at)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl State {
    /// Applies one record.
    fn apply(&mut self, record: LogRecord) {
        match record {
            LogRecord::Entry(entry) => {
                self.entries.insert(entry.log_id.index, entry);
            }
            LogRecord::Truncate(from) => {
                self.entries.split_off(&from);
            }
            LogRecord::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
            LogRecord::Committed(committed) => self.committed = committed,
        }
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries.values().next_back().map(|e| e.log_id).or(self.last_purged)
    }

    /// The records a new segment begins with: the purge and commit marks as they stand
    /// (a segment holding the last purge mark may be deleted once it is closed).
    fn segment_header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(purged) = self.last_purged {
            out.extend_from_slice(&encode(&LogRecord::Purge(purged)));
        }
        out.extend_from_slice(&encode(&LogRecord::Committed(self.committed)));
        out
    }
}

/// A closed segment: its number and the highest entry index in it.
#[derive(Debug)]
struct Closed {
    seq: u64,
    max_index: Option<u64>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`: replays its segments, cutting a torn tail.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        LogStore::open_with(dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`], beginning a new segment once one holds `segment_bytes`.
    fn open_with(dir: &Path, segment_bytes: u64) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        // A leftover of the single-file log's compaction (before segments).
        let _ = std::fs::remove_file(dir.join(format!("{LOG_FILE}.tmp")));
        let mut seqs = list_segments(dir)?;
        if seqs.is_empty() {
            seqs.push(0);
        }
        let mut state = State::default();
        let mut closed = std::collections::VecDeque::new();
        let current = *seqs.last().expect("one segment at least");
        let mut current_max = None;
        let mut file = None;
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let mut segment = OpenOptions::new().read(true).append(true).create(seq == current).open(&path)?;
            let mut bytes = Vec::new();
            segment.read_to_end(&mut bytes)?;
            let (records, good) = decode_all(&bytes);
            let mut max_index = None;
            for record in records {
                if let LogRecord::Entry(entry) = &record {
                    max_index = max_index.max(Some(entry.log_id.index));
                }
                state.apply(record);
            }
            if good < bytes.len() {
                if seq != current {
                    return Err(io_error(format!(
                        "{}: damaged at byte {good} of {}, and later segments follow it: refusing to start \
                         without the entries it held (only the last segment may end in a torn record)",
                        path.display(),
                        bytes.len()
                    )));
                }
                tracing::warn!(file = %path.display(), offset = good, bytes = bytes.len() - good, "cutting the Raft log's torn tail");
                segment.set_len(good as u64)?;
                segment.sync_all()?;
            }
            if seq == current {
                current_max = max_index;
                file = Some((segment, good as u64));
            } else {
                closed.push_back(Closed { seq, max_index });
            }
        }
        sync_dir(dir)?;
        let (file, len) = file.expect("the last segment was opened");
        state.vote = read_vote(dir)?;
        let purged = state.last_purged.map(|p| p.index);
        let inner = Arc::new(Mutex::new(Inner { dir: dir.to_owned(), state }));
        let (jobs, queue) = std::sync::mpsc::channel();
        let mut writer = Writer {
            inner: Arc::downgrade(&inner),
            dir: dir.to_owned(),
            file,
            seq: current,
            len,
            max_index: current_max,
            closed,
            purged,
            segment_bytes,
        };
        writer.delete_covered()?;
        std::thread::Builder::new().name("agora-raft-log".to_owned()).spawn(move || writer.run(queue))?;
        Ok(LogStore { inner, jobs })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries at indexes in `range` (for a replica restoring its state).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.lock().state.entries.range(range).map(|(_, e)| e.clone()).collect()
    }

    /// Applies `records` to the in-memory log and queues their bytes for the writer,
    /// in one hold of the lock, so the file's order is the order of the calls.
    fn queue(&self, records: Vec<LogRecord>, done: Done) -> io::Result<()> {
        let mut inner = self.lock();
        let (mut bytes, mut max_index, mut purged) = (Vec::new(), None, None);
        for record in records {
            bytes.extend_from_slice(&encode(&record));
            match &record {
                LogRecord::Entry(entry) => max_index = max_index.max(Some(entry.log_id.index)),
                LogRecord::Purge(upto) => purged = purged.max(Some(upto.index)),
                LogRecord::Truncate(_) | LogRecord::Committed(_) => {}
            }
            inner.state.apply(record);
        }
        self.jobs
            .send(Job { bytes, done, max_index, purged })
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
    dir: PathBuf,
    /// The segment written to, its number, its length and its highest entry index.
    file: File,
    seq: u64,
    len: u64,
    max_index: Option<u64>,
    /// The segments before it, oldest first.
    closed: std::collections::VecDeque<Closed>,
    /// The index the last purge on disk covers.
    purged: Option<u64>,
    segment_bytes: u64,
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
            self.len += bytes.len() as u64;
            if let Err(e) = &written {
                tracing::error!(error = %e, "cannot write the Raft log");
            }
            for job in batch {
                self.max_index = self.max_index.max(job.max_index);
                if written.is_ok() {
                    // A purge is waited for, so it was fsynced with its batch.
                    self.purged = self.purged.max(job.purged);
                }
                let result = written.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
                match job.done {
                    Done::Flushed(callback) => callback.log_io_completed(result),
                    Done::Notify(tx) => {
                        let _ = tx.send(result);
                    }
                    Done::Nothing => {}
                }
            }
            if written.is_ok() && self.len >= self.segment_bytes {
                if let Err(e) = self.begin_segment() {
                    tracing::error!(error = %e, "cannot begin a new Raft log segment; the current one keeps growing");
                }
            }
            if let Err(e) = self.delete_covered() {
                tracing::error!(error = %e, "cannot delete a Raft log segment a snapshot covers");
            }
        }
    }

    /// Closes the current segment and begins the next, with the purge and commit marks
    /// as they stand.
    fn begin_segment(&mut self) -> io::Result<()> {
        let Some(inner) = self.inner.upgrade() else { return Ok(()) };
        let header = inner.lock().unwrap_or_else(|e| e.into_inner()).state.segment_header();
        let seq = self.seq + 1;
        let mut file =
            OpenOptions::new().read(true).append(true).create_new(true).open(segment_path(&self.dir, seq))?;
        file.write_all(&header)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.closed.push_back(Closed { seq: self.seq, max_index: self.max_index });
        (self.file, self.seq, self.len, self.max_index) = (file, seq, header.len() as u64, None);
        Ok(())
    }

    /// Deletes the oldest closed segments while every entry in them is purged on disk.
    fn delete_covered(&mut self) -> io::Result<()> {
        let mut deleted = false;
        while let Some(oldest) = self.closed.front() {
            if oldest.max_index.is_some_and(|max| self.purged.is_none_or(|purged| max > purged)) {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, oldest.seq))?;
            self.closed.pop_front();
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> LogRecord {
        LogRecord::Entry(Entry { log_id: log_id(term, index), payload: EntryPayload::Blank })
    }

    /// Every entry's log id, the purge mark and the commit mark.
    type Contents = (Vec<LogId<NodeId>>, Option<LogId<NodeId>>, Option<LogId<NodeId>>);

    /// What a reopened log must give back.
    fn contents(store: &LogStore) -> Contents {
        let inner = store.lock();
        let ids = inner.state.entries.values().map(|e| e.log_id).collect();
        (ids, inner.state.last_purged, inner.state.committed)
    }

    /// A log in `dir` of 300-byte segments, holding entries 1..=`upto` of term 1.
    async fn filled(dir: &Path, upto: u64) -> LogStore {
        let store = LogStore::open_with(dir, 300).unwrap();
        for i in 1..=upto {
            store.write(vec![entry(1, i)]).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn segments_replay_in_order_and_go_once_a_purge_on_disk_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 40).await;
        let written = list_segments(dir.path()).unwrap();
        assert!(written.len() >= 4, "300-byte segments: {written:?}");
        // A new leader's tail replaces 35..=40, across a segment boundary.
        store.write(vec![LogRecord::Truncate(35)]).await.unwrap();
        for i in 35..=38 {
            store.write(vec![entry(2, i)]).await.unwrap();
        }
        store.write(vec![LogRecord::Purge(log_id(1, 20))]).await.unwrap();
        // The writer deletes after it answers: the next write waits for that.
        store.write(vec![LogRecord::Committed(Some(log_id(2, 36)))]).await.unwrap();
        let kept = list_segments(dir.path()).unwrap();
        assert!(kept[0] > written[0], "the first segment, wholly purged, is deleted: {written:?} -> {kept:?}");
        let expected = contents(&store);
        assert_eq!(expected.0.len(), 18, "21..=38 are live");
        assert_eq!(expected.0[14..], [log_id(2, 35), log_id(2, 36), log_id(2, 37), log_id(2, 38)]);
        drop(store);

        // Reopened: the same log, and writing goes on in later segments.
        let back = LogStore::open_with(dir.path(), 300).unwrap();
        assert_eq!(contents(&back), expected);
        for i in 39..=60 {
            back.write(vec![entry(2, i)]).await.unwrap();
        }
        back.write(vec![LogRecord::Purge(log_id(2, 55))]).await.unwrap();
        back.write(vec![LogRecord::Committed(Some(log_id(2, 58)))]).await.unwrap();
        let expected = contents(&back);
        assert_eq!(expected.0, (56..=60).map(|i| log_id(2, i)).collect::<Vec<_>>());
        let left = list_segments(dir.path()).unwrap();
        assert!(left.iter().all(|s| !kept[..kept.len() - 1].contains(s)), "older segments went: {kept:?} -> {left:?}");
        assert!(left.len() <= 2, "the segment with 56..=60, and maybe the one begun after it: {left:?}");
        drop(back);
        assert_eq!(contents(&LogStore::open_with(dir.path(), 300).unwrap()), expected);
    }

    #[tokio::test]
    async fn a_torn_last_segment_is_cut_and_a_damaged_earlier_one_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 20).await;
        let expected = contents(&store);
        drop(store);
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 2);

        // A crash mid-write: half a record at the end of the last segment.
        let last = segment_path(dir.path(), *segments.last().unwrap());
        let good_len = std::fs::metadata(&last).unwrap().len();
        OpenOptions::new().append(true).open(&last).unwrap().write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        let back = LogStore::open_with(dir.path(), 300).unwrap();
        assert_eq!(contents(&back), expected);
        assert_eq!(std::fs::metadata(&last).unwrap().len(), good_len, "the torn record is cut off");
        drop(back);

        // Damage in a segment that later ones follow: entries would be missing.
        let first = segment_path(dir.path(), segments[0]);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let error = LogStore::open_with(dir.path(), 300).unwrap_err().to_string();
        assert!(error.contains("damaged at byte 0") && error.contains(LOG_FILE), "{error}");
    }

    #[tokio::test]
    async fn the_purge_mark_outlives_the_segment_it_was_written_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 30).await;
        store.write(vec![LogRecord::Purge(log_id(1, 30))]).await.unwrap();
        // Marks alone fill segments: those that held the purge mark, and every entry,
        // are deleted.
        let first = list_segments(dir.path()).unwrap();
        for _ in 0..40 {
            store.write(vec![LogRecord::Committed(Some(log_id(1, 30)))]).await.unwrap();
        }
        let last = list_segments(dir.path()).unwrap();
        assert!(last.iter().all(|s| !first.contains(s)), "{first:?} -> {last:?}");
        drop(store);
        let back = LogStore::open_with(dir.path(), 300).unwrap();
        assert_eq!(contents(&back), (vec![], Some(log_id(1, 30)), Some(log_id(1, 30))));
        assert_eq!(back.lock().state.last_log_id(), Some(log_id(1, 30)), "the log ends where it did");
    }

    #[tokio::test]
    async fn a_crash_while_a_segment_begins_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path(), 20).await;
        store.write(vec![LogRecord::Purge(log_id(1, 5))]).await.unwrap();
        let expected = contents(&store);
        drop(store);
        // Killed after creating the next segment, with half of its header written.
        let next = list_segments(dir.path()).unwrap().last().unwrap() + 1;
        let header = encode(&LogRecord::Purge(log_id(1, 5)));
        std::fs::write(segment_path(dir.path(), next), &header[..header.len() / 2]).unwrap();
        let back = LogStore::open_with(dir.path(), 300).unwrap();
        assert_eq!(contents(&back), expected);
        assert_eq!(std::fs::metadata(segment_path(dir.path(), next)).unwrap().len(), 0, "the torn header is cut");
        // Writing goes on in that segment, and the next ones.
        for i in 21..=40 {
            back.write(vec![entry(1, i)]).await.unwrap();
        }
        let expected = contents(&back);
        assert_eq!(expected.0.len(), 35, "6..=40");
        drop(back);
        assert_eq!(contents(&LogStore::open_with(dir.path(), 300).unwrap()), expected);
    }
}
