//! Durability: the command log, snapshots, the fsync policy, and restoring on start.
//!
//! With a data directory, the engine's journal ([`crate::engine::Journal`]) orders and
//! encodes every command that may change state; this module writes those records to
//! the log and decides when an answer may go out:
//!
//! | `--fsync` | an answer goes out once its record is… | a crash of… loses |
//! |---|---|---|
//! | `always` | on disk (fsynced, group commit) | nothing acknowledged |
//! | `everysec` (default) | written to the OS (fsynced within ~1 s) | the process: nothing acknowledged; the machine: up to ~1 s |
//! | `no` | written to the OS (the OS flushes when it likes) | the process: nothing acknowledged; the machine: what the OS had not flushed |
//!
//! Answers to parked calls (a `get` handed an item, a lock granted) wait the same way
//! for the record that produced them. Reads are not logged and never wait.
//!
//! - **Writing.** With `everysec` and `no`, a connection about to answer yields once,
//!   so the other connections ready on its worker append their records too; the first
//!   to run again writes every record appended so far in one `write` (group commit, as
//!   an event loop writes its log before it sleeps), and the others find theirs
//!   written. While writes carry one record each (one client at a time), a connection
//!   writes at once instead, there being nobody to wait for; one settle in 16 still
//!   yields, to notice when others start appending. With `always` the log thread
//!   writes and fsyncs, batching every record appended while the previous fsync ran;
//!   an answer wakes it after the same yield (so the worker's other ready
//!   connections append first, and one fsync covers them), and only if no earlier
//!   wake-up is still pending. The log thread also writes what nobody waits for
//!   every 100 ms, fsyncs once a second (`everysec`) and takes snapshots.
//! - **Failures.** If the log cannot be written (a full disk, an I/O error) the journal
//!   refuses every change a client asks for with `Unavailable`
//!   ([`Command::refusable`](crate::engine::Command::refusable)); reads keep working,
//!   clients can connect, and what ends or gives back (a session's end, a release) is
//!   still applied; the records already applied stay in memory and their answers
//!   wait; the log thread retries at least every 200 ms and accepts changes again once
//!   the write succeeds.
//! - **Snapshots** ([`Durability::save_snapshot`]): a new segment is started, the engine's
//!   state is taken while mutating calls wait (the pause `agora stats` shows) — all of
//!   it but big dicts, sets, lists, arrays and queues, whose items are captured and read out
//!   after the pause, as they were at it ([`Engine::begin_image`]) — then written to a
//!   temporary file, fsynced and renamed; segments it covers and older snapshots are
//!   deleted. Triggered every `snapshot_after` bytes of log and by `agora snapshot`.
//! - **Restoring** ([`Durability::open`]): the newest snapshot, then every record after
//!   it. A torn last record (a crash mid-write) is cut off with a warning; damage
//!   anywhere else refuses the start, naming the file and the offset.
//!
//! This module owns files and threads; it never applies a command except in replay.

pub mod disk;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_proto::native::{DurabilityStats, ObjectId, SnapshotInfo};
use tokio::sync::watch;

use crate::custom::CustomKinds;
use crate::engine::{log_unwritable, Engine, Journal, Lsn, Time};
pub use disk::DiskError;

/// When a change is on disk before its answer goes out (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After every change (group commit): nothing acknowledged is ever lost.
    Always,
    /// Once a second: a machine crash loses up to about a second.
    #[default]
    Everysec,
    /// Never explicitly: the OS decides.
    No,
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(text: &str) -> Result<Fsync, String> {
        match text {
            "always" => Ok(Fsync::Always),
            "everysec" => Ok(Fsync::Everysec),
            "no" => Ok(Fsync::No),
            other => Err(format!("'{other}' is not an fsync policy: use always, everysec or no")),
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Everysec => "everysec",
            Fsync::No => "no",
        })
    }
}

/// Where and how the state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilityConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The fsync policy.
    pub fsync: Fsync,
    /// Take a snapshot once this many bytes of log were written since the last one.
    pub snapshot_after: u64,
    /// Start a new log segment once the current one is this large.
    pub segment_size: u64,
}

impl DurabilityConfig {
    /// The defaults for `data_dir`: `everysec`, a snapshot every 64 MiB of log, 64 MiB
    /// segments.
    pub fn new(data_dir: impl Into<PathBuf>) -> DurabilityConfig {
        DurabilityConfig {
            data_dir: data_dir.into(),
            fsync: Fsync::default(),
            snapshot_after: 64 << 20,
            segment_size: 64 << 20,
        }
    }
}

/// What restoring found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The snapshot it started from (the last record it covers).
    pub snapshot: Option<Lsn>,
    /// Log records applied after it.
    pub replayed: u64,
    /// A torn tail that was cut off: the file and how many bytes.
    pub truncated: Option<(PathBuf, u64)>,
    /// The LSN the next record gets.
    pub next_lsn: Lsn,
    /// How long restoring took.
    pub took: Duration,
    /// Wake-ups the replayed state asked for (to arm on the server's timer).
    pub wakeups: Vec<(ObjectId, Time)>,
}

/// Log segments on disk: (first LSN, path, bytes).
type Segments = Vec<(Lsn, PathBuf, u64)>;

/// The files the writer appends to.
struct Files {
    /// The segment being appended to, and its first LSN.
    segment: Arc<File>,
    segment_first: Lsn,
    segment_len: u64,
    /// Every segment on disk.
    segments: Segments,
    /// Records taken from the journal and not yet fully written (a write failed
    /// half-way): they go first, from `carry_done`.
    carry: Vec<u8>,
    carry_done: usize,
    carry_last: Lsn,
    /// Log bytes written since the last snapshot.
    since_snapshot: u64,
}

/// The durable log of one server (see the module docs).
pub struct Durability {
    config: DurabilityConfig,
    engine: Arc<Engine>,
    journal: Arc<Journal>,
    files: Mutex<Files>,
    /// The last record written to the OS, and the last one fsynced.
    written: AtomicU64,
    synced: AtomicU64,
    /// Bumped whenever `written` or `synced` moves (with `always`, only `synced`).
    progress: watch::Sender<()>,
    /// Wakes the log thread (a record wants fsyncing, or stop).
    nudge: (Mutex<bool>, Condvar),
    /// How many records the last write that wrote any carried. One means a lone writer
    /// (one client at a time): then nobody else will append, and waiting for them only
    /// delays the answer.
    last_write_records: AtomicU64,
    /// Settles that wrote at once; every [`PROBE_EVERY`]th yields anyway, to find out
    /// whether others have started appending.
    unbatched: AtomicU64,
    stop: AtomicBool,
    last_fsync: Mutex<Instant>,
    last_snapshot: Mutex<Option<SnapshotInfo>>,
    /// One snapshot at a time.
    snapshotting: Mutex<()>,
    /// An automatic snapshot is running.
    snapshot_running: AtomicBool,
    /// After a failed automatic snapshot: not before this.
    snapshot_retry_at: Mutex<Option<Instant>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Why the log cannot be written, while it cannot.
    failure: Mutex<Option<String>>,
    _lock: disk::DirLock,
}

/// While writes carry one record each, one settle in this many yields anyway (see
/// [`Durability::settle`]).
const PROBE_EVERY: u64 = 16;

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability").field("config", &self.config).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads a data directory back into an engine: the newest snapshot, then the log.
/// A torn tail is cut; with `cut_damage` (`agora check --truncate`), so is any bad
/// record and everything after it.
fn restore(dir: &Path, custom: CustomKinds, cut_damage: bool) -> Result<(Engine, Recovery, Segments), DiskError> {
    let started = Instant::now();
    let listing = disk::list(dir)?;
    let mut recovery = Recovery::default();
    let (engine, snapshot_lsn) = match listing.snapshots.last() {
        Some((_, path)) => {
            let (lsn, image) = disk::read_snapshot(path)?;
            let engine = Engine::from_image(custom, image).map_err(|why| DiskError::Damaged {
                path: path.clone(),
                offset: 0,
                why: format!("the state does not restore: {why}"),
            })?;
            recovery.snapshot = Some(lsn);
            (engine, lsn)
        }
        // A new directory: the engine's first counters (object ids start at a random
        // offset) become snapshot 0 before any record, or replay could not match them.
        None if listing.segments.is_empty() => {
            let engine = Engine::new(custom);
            disk::write_snapshot(dir, 0, &engine.image())?;
            recovery.snapshot = Some(0);
            (engine, 0)
        }
        None => (Engine::new(custom), 0),
    };
    let mut expected = snapshot_lsn + 1;
    if let Some((first, path)) = listing.segments.first() {
        if *first > expected {
            let what = match recovery.snapshot {
                Some(lsn) => format!("the newest snapshot covers records up to {lsn}"),
                None => "there is no snapshot".to_owned(),
            };
            return Err(DiskError::Missing(format!(
                "{what}, but the log starts at record {first} ({}): records {expected}..{} are missing (was a snapshot deleted?)",
                path.display(),
                first - 1
            )));
        }
        expected = *first;
    }
    let mut segments = Vec::new();
    let mut max_at = Time(0);
    // The earliest wake-up each object asked for: its tick then asks for the next.
    let mut wakeups: BTreeMap<ObjectId, Time> = BTreeMap::new();
    let count = listing.segments.len();
    for (i, (first, path)) in listing.segments.iter().enumerate() {
        if *first != expected {
            return Err(DiskError::Missing(format!(
                "log segment {} should start at record {expected}: records {expected}..{} are missing",
                path.display(),
                first.saturating_sub(1)
            )));
        }
        let mut read = disk::read_segment(path, *first)?;
        expected = *first + read.records.len() as u64;
        for (lsn, command) in std::mem::take(&mut read.records) {
            if lsn <= snapshot_lsn {
                continue;
            }
            max_at = max_at.max(command.at());
            for (object, at) in engine.apply(command).wakeups {
                let earliest = wakeups.entry(object).or_insert(at);
                *earliest = (*earliest).min(at);
            }
            recovery.replayed += 1;
        }
        if let Some((offset, why)) = &read.bad {
            let last = i + 1 == count;
            if !(cut_damage || (last && read.torn())) {
                return Err(DiskError::Damaged { path: path.clone(), offset: *offset, why: why.clone() });
            }
            let cut = read.file_len - read.good_len;
            tracing::warn!(file = %path.display(), offset, bytes = cut, why = %why, "cutting the log here (a write a crash interrupted, or damage cut on request)");
            recovery.truncated = Some((path.clone(), cut));
            if read.good_len < disk::SEGMENT_HEADER as u64 {
                // Created, then a crash before its header: it holds no record.
                std::fs::remove_file(path).map_err(|source| DiskError::Io { path: path.clone(), source })?;
            } else {
                disk::truncate(path, read.good_len)?;
                segments.push((*first, path.clone(), read.good_len));
            }
            // After damage cut on request, every later segment goes too.
            for (_, later) in &listing.segments[i + 1..] {
                std::fs::remove_file(later).map_err(|source| DiskError::Io { path: later.clone(), source })?;
                tracing::warn!(file = %later.display(), "removed a log segment after the cut");
            }
            break;
        }
        segments.push((*first, path.clone(), read.file_len));
    }
    recovery.wakeups = wakeups.into_iter().collect();
    engine.clock_not_before(max_at);
    recovery.next_lsn = expected;
    recovery.took = started.elapsed();
    Ok((engine, recovery, segments))
}

/// What `agora check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// What restoring found (and cut, with `truncate`).
    pub recovery: Recovery,
    /// Objects in the restored state.
    pub objects: usize,
    /// Named objects in the restored state.
    pub named: u64,
}

/// Verifies a data directory offline (no server may be using it): reads the newest
/// snapshot and replays the whole log. With `truncate`, a bad record anywhere is cut
/// off with everything after it, instead of failing.
pub fn check(dir: &Path, truncate: bool) -> Result<CheckReport, DiskError> {
    if !dir.is_dir() {
        return Err(DiskError::Missing(format!("{} is not a directory", dir.display())));
    }
    let _lock = disk::DirLock::acquire(dir)?;
    let (engine, recovery, _) = restore(dir, CustomKinds::default(), truncate)?;
    Ok(CheckReport { objects: engine.object_count(), named: engine.stats().named, recovery })
}

impl Durability {
    /// Opens `config.data_dir` (creating it), restores its state into a new engine
    /// and turns the engine's journal on. The caller applies `Command::Restart` next,
    /// then serves, and calls [`Durability::stop`] at the end.
    pub fn open(config: DurabilityConfig, custom: CustomKinds) -> Result<(Arc<Durability>, Recovery), DiskError> {
        let dir_lock = disk::DirLock::acquire(&config.data_dir)?;
        let dir = config.data_dir.clone();
        let (engine, recovery, mut segments) = restore(&dir, custom, false)?;
        let next = recovery.next_lsn;
        let (segment, segment_first, segment_len) = match segments.last() {
            Some((first, path, len)) if *len < config.segment_size => (disk::open_segment(path)?, *first, *len),
            _ => {
                let file = disk::create_segment(&dir, next)?;
                segments.push((next, disk::segment_path(&dir, next), disk::SEGMENT_HEADER as u64));
                (file, next, disk::SEGMENT_HEADER as u64)
            }
        };
        let journal = Arc::new(Journal::new(next));
        engine.attach_journal(journal.clone());
        let since_snapshot = segments.iter().map(|(_, _, len)| len).sum();
        let last_snapshot = recovery.snapshot.map(|lsn| {
            let path = disk::snapshot_path(&dir, lsn);
            let meta = std::fs::metadata(&path).ok();
            SnapshotInfo {
                path: path.display().to_string(),
                lsn,
                bytes: meta.as_ref().map_or(0, |m| m.len()),
                pause_us: 0,
                write_ms: 0,
                at_secs: meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
            }
        });
        let durability = Arc::new(Durability {
            config,
            engine: Arc::new(engine),
            journal,
            files: Mutex::new(Files {
                segment: Arc::new(segment),
                segment_first,
                segment_len,
                segments,
                carry: Vec::new(),
                carry_done: 0,
                carry_last: next - 1,
                since_snapshot,
            }),
            written: AtomicU64::new(next - 1),
            synced: AtomicU64::new(next - 1),
            progress: watch::channel(()).0,
            nudge: (Mutex::new(false), Condvar::new()),
            last_write_records: AtomicU64::new(0),
            unbatched: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            last_fsync: Mutex::new(Instant::now()),
            last_snapshot: Mutex::new(last_snapshot),
            snapshotting: Mutex::new(()),
            snapshot_running: AtomicBool::new(false),
            snapshot_retry_at: Mutex::new(None),
            thread: Mutex::new(None),
            failure: Mutex::new(None),
            _lock: dir_lock,
        });
        let worker = durability.clone();
        let thread = std::thread::Builder::new()
            .name("agora-log".into())
            .spawn(move || worker.run_log_thread())
            .map_err(|source| DiskError::Io { path: dir, source })?;
        *lock(&durability.thread) = Some(thread);
        Ok((durability, recovery))
    }

    /// The engine this log belongs to.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &DurabilityConfig {
        &self.config
    }

    /// The LSN of the last record appended (what a delivery read now may depend on).
    pub fn appended(&self) -> Lsn {
        self.journal.appended()
    }

    /// True if record `lsn` already meets the fsync policy.
    pub fn is_settled(&self, lsn: Lsn) -> bool {
        let done = if self.config.fsync == Fsync::Always { &self.synced } else { &self.written };
        done.load(Ordering::Acquire) >= lsn
    }

    /// Returns once record `lsn` meets the fsync policy: written (`everysec`, `no`) or
    /// on disk (`always`). An answer that depends on it may then go out.
    pub async fn settle(&self, lsn: Lsn) {
        if self.settle_promptly(lsn).await {
            return;
        }
        // The write failed (or, with `always`, the log thread fsyncs): wait for it.
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|()| self.is_settled(lsn)).await;
    }

    /// What settling record `lsn` can do without waiting on another thread; returns
    /// whether it is settled. With `everysec` and `no` that is writing it (after one
    /// yield, unless one client writes alone: see the module docs), so this is false
    /// only if the write failed; with `always` it asks the log thread to fsync (after
    /// the same yield). Never waits longer than a yield, so a caller need not watch
    /// anything else meanwhile.
    pub async fn settle_promptly(&self, lsn: Lsn) -> bool {
        if self.is_settled(lsn) {
            return true;
        }
        if self.last_write_records.load(Ordering::Relaxed) >= 2
            || self.unbatched.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == 0
        {
            // Group commit, the way an event loop writes (and with `always` fsyncs) its
            // log before it sleeps: yield, so that the other tasks ready on this worker
            // append their records too. With `everysec` and `no` the first of them to
            // run again writes every record appended so far in one `write`, and the
            // rest find theirs written; with `always` it wakes the log thread, whose
            // one fsync then covers them all (woken by the first answer instead, the
            // thread fsynced about every 5 records at 50 × 1, every 15 after the
            // yield, counted under strace). Nobody waits on another task's promise: a
            // wake-up from a watch costs more than the yield.
            tokio::task::yield_now().await;
            if self.is_settled(lsn) {
                return true;
            }
        }
        if self.config.fsync == Fsync::Always {
            self.nudge_thread();
            return false;
        }
        // A lone writer writes at once: yielding would cost it an event-loop poll per
        // answer and gather nothing. (Each connection on one worker writing at once
        // would also keep writes at one record: the probe, one settle in 16, finds the
        // others.)
        self.flush();
        self.is_settled(lsn)
    }

    /// Wakes the log thread, unless a nudge it has not taken yet is waiting: it takes
    /// every record appended before it looks, so one wake-up (a `futex` call) serves
    /// every answer that asks before then.
    fn nudge_thread(&self) {
        let (flag, cv) = &self.nudge;
        let mut nudged = lock(flag);
        if !*nudged {
            *nudged = true;
            cv.notify_one();
        }
    }

    fn publish(&self) {
        self.progress.send_replace(());
    }

    /// Writes every record appended so far. On failure the journal refuses changes
    /// until a later flush succeeds.
    fn flush(&self) {
        let result = self.write_pending();
        match result {
            Ok(()) => {
                let mut failure = lock(&self.failure);
                if let Some(was) = failure.take() {
                    tracing::info!(was = %was, "the log is writable again; accepting changes");
                    self.journal.refuse(None);
                }
            }
            Err(e) => self.fail(&format!("writing {}: {e}", self.config.data_dir.display())),
        }
    }

    fn fail(&self, why: &str) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            tracing::error!(why, "cannot write the log: refusing changes until it can (reads still work)");
        }
        *failure = Some(why.to_owned());
        self.journal.refuse(Some(log_unwritable(why)));
    }

    fn write_pending(&self) -> io::Result<()> {
        let mut files = lock(&self.files);
        // At most twice: what a failed write left, then what was appended since.
        for _ in 0..2 {
            if files.carry_done >= files.carry.len() {
                files.carry.clear();
                files.carry_done = 0;
                let mut carry = std::mem::take(&mut files.carry);
                let previous_last = files.carry_last;
                files.carry_last = self.journal.take(&mut carry);
                files.carry = carry;
                if files.carry.is_empty() {
                    return Ok(());
                }
                self.last_write_records.store(files.carry_last - previous_last, Ordering::Relaxed);
            }
            let segment = files.segment.clone();
            while files.carry_done < files.carry.len() {
                let done = files.carry_done;
                match (&*segment).write(&files.carry[done..]) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the log file took no bytes")),
                    Ok(n) => {
                        files.carry_done += n;
                        files.segment_len += n as u64;
                        files.since_snapshot += n as u64;
                        if let Some(last) = files.segments.last_mut() {
                            last.2 += n as u64;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.written.fetch_max(files.carry_last, Ordering::AcqRel);
            // With `always` an answer waits for the fsync, not the write: waking every
            // waiting connection here would only have each look and sleep again.
            if self.config.fsync != Fsync::Always {
                self.publish();
            }
            if files.segment_len >= self.config.segment_size {
                self.rotate_locked(&mut files).map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    /// Ends the current segment (fsynced) and starts a new one after the last record
    /// written.
    fn rotate_locked(&self, files: &mut Files) -> Result<(), DiskError> {
        let path = disk::segment_path(&self.config.data_dir, files.segment_first);
        files.segment.sync_data().map_err(|source| DiskError::Io { path, source })?;
        self.mark_synced(self.written.load(Ordering::Acquire));
        let first = self.written.load(Ordering::Acquire) + 1;
        if first == files.segment_first {
            return Ok(()); // an empty segment is already the newest
        }
        let file = disk::create_segment(&self.config.data_dir, first)?;
        files.segment = Arc::new(file);
        files.segment_first = first;
        files.segment_len = disk::SEGMENT_HEADER as u64;
        files.segments.push((first, disk::segment_path(&self.config.data_dir, first), files.segment_len));
        Ok(())
    }

    /// Records that every record up to `upto` is on disk, and wakes whoever waits for
    /// that (with `always`, only this wakes them: the write does not).
    fn mark_synced(&self, upto: Lsn) {
        self.synced.fetch_max(upto, Ordering::AcqRel);
        self.publish();
    }

    /// fsyncs what has been written.
    fn sync(&self) {
        let (segment, upto, first) = {
            let files = lock(&self.files);
            (files.segment.clone(), self.written.load(Ordering::Acquire), files.segment_first)
        };
        if self.synced.load(Ordering::Acquire) >= upto {
            *lock(&self.last_fsync) = Instant::now();
            return;
        }
        match segment.sync_data() {
            Ok(()) => {
                self.mark_synced(upto);
                *lock(&self.last_fsync) = Instant::now();
            }
            Err(e) => {
                let path = disk::segment_path(&self.config.data_dir, first);
                self.fail(&format!("fsync of {}: {e}", path.display()));
            }
        }
    }

    fn run_log_thread(self: Arc<Self>) {
        let tick = match self.config.fsync {
            Fsync::Always => Duration::from_millis(200),
            Fsync::Everysec | Fsync::No => Duration::from_millis(100),
        };
        loop {
            {
                let (flag, cv) = &self.nudge;
                let mut nudged = lock(flag);
                if !*nudged && !self.stop.load(Ordering::Acquire) {
                    nudged = cv.wait_timeout(nudged, tick).unwrap_or_else(|e| e.into_inner()).0;
                }
                *nudged = false;
            }
            let stopping = self.stop.load(Ordering::Acquire);
            // Records no answer waits for (the timer's) are written here too; while the
            // log cannot be written, this is the retry.
            self.flush();
            let failing = lock(&self.failure).is_some();
            let due = match self.config.fsync {
                Fsync::Always => true,
                Fsync::Everysec => lock(&self.last_fsync).elapsed() >= Duration::from_secs(1),
                Fsync::No => false,
            };
            if (due || stopping) && !failing {
                self.sync();
            }
            if stopping {
                return;
            }
            let since = lock(&self.files).since_snapshot;
            if since >= self.config.snapshot_after && !failing {
                self.snapshot_in_background();
            }
        }
    }

    /// Starts an automatic snapshot on a thread of its own (the log thread must keep
    /// fsyncing meanwhile), unless one is running.
    fn snapshot_in_background(self: &Arc<Self>) {
        if self.snapshot_running.swap(true, Ordering::AcqRel) {
            return;
        }
        if lock(&self.snapshot_retry_at).is_some_and(|at| Instant::now() < at) {
            self.snapshot_running.store(false, Ordering::Release);
            return;
        }
        let worker = self.clone();
        let spawned = std::thread::Builder::new().name("agora-snapshot".into()).spawn(move || {
            if let Err(e) = worker.save_snapshot() {
                tracing::error!(error = %e, "automatic snapshot failed; retrying in 30 s (the log keeps growing until one succeeds)");
                *lock(&worker.snapshot_retry_at) = Some(Instant::now() + Duration::from_secs(30));
            }
            worker.snapshot_running.store(false, Ordering::Release);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the snapshot thread");
            self.snapshot_running.store(false, Ordering::Release);
        }
    }

    /// Writes a snapshot of the whole state now, then deletes the log segments and
    /// older snapshots it covers.
    pub fn save_snapshot(&self) -> Result<SnapshotInfo, DiskError> {
        let _one = lock(&self.snapshotting);
        let dir = &self.config.data_dir;
        if let Some(why) = lock(&self.failure).clone() {
            return Err(DiskError::Unwritable(why));
        }
        // A new segment first, so every older one holds only records the snapshot covers.
        // Written and fsynced before the lock writers need is taken: rotating then has
        // only what came meanwhile to fsync.
        self.flush();
        self.sync();
        self.rotate_locked(&mut lock(&self.files))?;
        let paused = Instant::now();
        let (pending, lsn) = {
            let tail = self.journal.pause();
            (self.engine.begin_image(), tail.next_lsn - 1)
        };
        let pause = paused.elapsed();
        // Big objects' states are read out while changes run again.
        let writing = Instant::now();
        let captured = pending.captured();
        let image = pending.finish();
        let (path, bytes) = disk::write_snapshot(dir, lsn, &image)?;
        drop(image);
        let write_ms = writing.elapsed().as_millis() as u64;
        // Drop what the snapshot covers: segments followed by one starting at or
        // before lsn + 1, and every older snapshot. The files are removed outside the
        // lock the log's writer takes: removing a big file takes tens of milliseconds.
        let covered = {
            let mut files = lock(&self.files);
            let split = files.segments.windows(2).take_while(|pair| pair[1].0 <= lsn + 1).count();
            let kept = files.segments.split_off(split);
            files.since_snapshot = kept.iter().map(|s| s.2).sum();
            std::mem::replace(&mut files.segments, kept)
        };
        let mut left = Vec::new();
        for segment in covered {
            if let Err(e) = std::fs::remove_file(&segment.1) {
                tracing::warn!(file = %segment.1.display(), error = %e, "could not remove a log segment the snapshot covers");
                left.push(segment);
            }
        }
        if !left.is_empty() {
            let mut files = lock(&self.files);
            left.append(&mut files.segments);
            files.since_snapshot = left.iter().map(|s| s.2).sum();
            files.segments = left;
        }
        if let Ok(listing) = disk::list(dir) {
            for (older, path) in listing.snapshots.iter().filter(|(l, _)| *l < lsn) {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(lsn = older, error = %e, "could not remove an older snapshot");
                }
            }
        }
        let _ = disk::sync_dir(dir);
        let info = SnapshotInfo {
            path: path.display().to_string(),
            lsn,
            bytes,
            pause_us: pause.as_micros() as u64,
            write_ms,
            at_secs: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        tracing::info!(lsn, bytes, pause_us = info.pause_us, write_ms, captured, "snapshot written");
        *lock(&self.last_snapshot) = Some(info.clone());
        Ok(info)
    }

    /// For `agora stats` and the metrics.
    pub fn stats(&self) -> DurabilityStats {
        let files = lock(&self.files);
        DurabilityStats {
            data_dir: self.config.data_dir.display().to_string(),
            fsync: self.config.fsync.to_string(),
            log_bytes: files.segments.iter().map(|s| s.2).sum(),
            log_bytes_since_snapshot: files.since_snapshot,
            appended_lsn: self.journal.appended(),
            written_lsn: self.written.load(Ordering::Acquire),
            synced_lsn: self.synced.load(Ordering::Acquire),
            ms_since_fsync: lock(&self.last_fsync).elapsed().as_millis() as u64,
            last_snapshot: lock(&self.last_snapshot).clone(),
            refusing: lock(&self.failure).clone(),
        }
    }

    /// Writes and fsyncs everything appended, then stops the log thread (graceful
    /// shutdown: the next start replays nothing that was lost).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.nudge_thread();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        // A snapshot being written is finished, not left half-way.
        drop(lock(&self.snapshotting));
    }
}

#[cfg(test)]
mod tests;
