//! The data directory on disk: its lock, its log segments, its snapshots, and reading
//! them back.
//!
//! ```text
//! DIR/LOCK                          flock'd by the server using DIR (holds its pid)
//! DIR/log-<first lsn, 20 digits>    a log segment: a header, then records
//! DIR/snapshot-<lsn, 20 digits>     the engine's state after record <lsn>
//! ```
//!
//! A segment starts with [`SEGMENT_MAGIC`], a format version and the LSN of its first
//! record; records follow back to back (their layout is the journal's:
//! [`crate::engine::encode_record`]). A snapshot is [`SNAPSHOT_MAGIC`], the version,
//! the LSN it covers, the payload's length and CRC-32, then the payload (the
//! [`EngineImage`] in MessagePack). Snapshots are written to a temporary file, fsynced,
//! renamed and the directory fsynced, so a snapshot file is whole or absent.
//!
//! Every file is created mode 0600: the state holds every value clients stored.
//!
//! This module knows formats and files; it never applies a command.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::engine::{decode_record, Command, EngineImage, Lsn, RecordRead};

/// The first bytes of a log segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"AGORALOG";
/// The first bytes of a snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"AGORASNP";
/// The on-disk format version of segments and snapshots.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a segment's header: magic, version, first LSN.
pub const SEGMENT_HEADER: usize = 8 + 4 + 8;
const SNAPSHOT_HEADER: usize = 8 + 4 + 8 + 8 + 4;

/// What can go wrong with a data directory.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another server holds the directory.
    #[error("the data directory {dir} is in use by another agora server{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, if it wrote one.
        pid: Option<u32>,
    },
    /// A file is damaged where a crash cannot have damaged it.
    #[error("{path} is damaged at byte {offset}: {why} (run `agora check --data-dir DIR` for details; `--truncate` drops everything from there on)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// Files the state needs are missing.
    #[error("{0}")]
    Missing(String),
    /// The log cannot be written right now (no snapshot is taken meanwhile).
    #[error("the log cannot be written: {0}")]
    Unwritable(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io { path: path.to_owned(), source }
}

/// The directory's lock, held for as long as the value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes `dir`'s lock (creating the directory), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, DiskError> {
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a file descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DiskError::InUse { dir: dir.to_owned(), pid: text.trim().parse().ok() });
        }
        file.set_len(0).map_err(io_err(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        Ok(DirLock { _file: file })
    }
}

/// The path of the segment whose first record is `first`.
pub fn segment_path(dir: &Path, first: Lsn) -> PathBuf {
    dir.join(format!("log-{first:020}"))
}

/// The path of the snapshot covering records up to `lsn`.
pub fn snapshot_path(dir: &Path, lsn: Lsn) -> PathBuf {
    dir.join(format!("snapshot-{lsn:020}"))
}

/// The segments and snapshots in a directory, each sorted by LSN.
#[derive(Debug, Default)]
pub struct Listing {
    /// Segments: (first LSN, path).
    pub segments: Vec<(Lsn, PathBuf)>,
    /// Snapshots: (LSN covered, path).
    pub snapshots: Vec<(Lsn, PathBuf)>,
}

/// Lists `dir` (leftover temporary files of an interrupted snapshot are removed).
pub fn list(dir: &Path) -> Result<Listing, DiskError> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(lsn) = name.strip_prefix("log-").and_then(|n| n.parse().ok()) {
            listing.segments.push((lsn, entry.path()));
        } else if let Some(lsn) = name.strip_prefix("snapshot-").and_then(|n| n.parse().ok()) {
            listing.snapshots.push((lsn, entry.path()));
        } else if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// fsyncs a directory, so the files created, renamed or removed in it stay so.
pub fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Creates a new, empty segment whose first record will be `first`, durably.
pub fn create_segment(dir: &Path, first: Lsn) -> Result<File, DiskError> {
    let path = segment_path(dir, first);
    let mut file =
        OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&path).map_err(io_err(&path))?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&first.to_le_bytes());
    file.write_all(&header).and_then(|()| file.sync_all()).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Opens an existing segment to append to it.
pub fn open_segment(path: &Path) -> Result<File, DiskError> {
    OpenOptions::new().append(true).open(path).map_err(io_err(path))
}

/// What reading one segment found.
#[derive(Debug)]
pub struct SegmentRead {
    /// Its records, in order, with their LSNs.
    pub records: Vec<(Lsn, Command)>,
    /// Where the intact records end.
    pub good_len: u64,
    /// The file's length.
    pub file_len: u64,
    /// The first bad record, if any: its offset and what is wrong.
    pub bad: Option<(u64, String)>,
}

impl SegmentRead {
    /// True if the bad part can only be a write a crash interrupted: it runs to the
    /// end of the file (an incomplete record, or a last record whose bytes never all
    /// made it) and no intact record follows it.
    pub fn torn(&self) -> bool {
        self.bad.as_ref().is_some_and(|(_, why)| why == TORN)
    }
}

const TORN: &str = "incomplete record at the end of the file";

/// Reads a segment whose first record should be `expected_first`.
pub fn read_segment(path: &Path, expected_first: Lsn) -> Result<SegmentRead, DiskError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let file_len = bytes.len() as u64;
    let damaged = |offset: u64, why: String| DiskError::Damaged { path: path.to_owned(), offset, why };
    if bytes.len() < SEGMENT_HEADER {
        // A crash between creating the file and writing its header.
        return Ok(SegmentRead { records: Vec::new(), good_len: 0, file_len, bad: Some((0, TORN.to_owned())) });
    }
    if &bytes[0..8] != SEGMENT_MAGIC {
        return Err(damaged(0, "not an agora log segment (bad magic)".to_owned()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(damaged(8, format!("format version {version}; this agora reads version {FORMAT_VERSION}")));
    }
    let first = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if first != expected_first {
        return Err(damaged(
            12,
            format!("its header says it starts at record {first}, its name says {expected_first}"),
        ));
    }
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER;
    let mut lsn = first;
    let mut bad = None;
    while offset < bytes.len() {
        match decode_record(&bytes[offset..]) {
            RecordRead::Record(command, len) => {
                records.push((lsn, *command));
                lsn += 1;
                offset += len;
            }
            RecordRead::Incomplete => {
                bad = Some((offset as u64, TORN.to_owned()));
                break;
            }
            RecordRead::Damaged(why) => {
                // A last record torn by a crash can fail its checksum (its tail never
                // made it; the file may even have been extended with zeros).
                let rest = &bytes[offset..];
                let declared = u32::from_le_bytes(rest[0..4].try_into().expect("header")) as usize;
                let reaches_end = crate::engine::RECORD_HEADER + declared >= rest.len();
                let zeros = rest.iter().all(|&b| b == 0);
                let why = if zeros || (reaches_end && why == "checksum mismatch") { TORN.to_owned() } else { why };
                bad = Some((offset as u64, why));
                break;
            }
        }
    }
    // Torn only if nothing intact follows: a damaged length field can also make a
    // record look like it runs off the end, and cutting there would lose the records
    // after it.
    if let Some((at, why)) = &mut bad {
        if why == TORN {
            if let Some(next) = intact_record_after(&bytes, *at as usize) {
                *why = format!("bad record, yet an intact record follows at byte {next}");
            }
        }
    }
    let good_len = bad.as_ref().map_or(file_len, |(o, _)| *o);
    Ok(SegmentRead { records, good_len, file_len, bad })
}

/// The offset of the first intact record that starts after `from`, if any.
fn intact_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len().saturating_sub(crate::engine::RECORD_HEADER))
        .find(|&i| matches!(decode_record(&bytes[i..]), RecordRead::Record(..)))
}

/// Cuts a segment at `len` bytes, durably.
pub fn truncate(path: &Path, len: u64) -> Result<(), DiskError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    file.set_len(len).and_then(|()| file.sync_all()).map_err(io_err(path))
}

/// Writes a snapshot of `image` covering records up to `lsn`, atomically; returns its
/// path and size.
pub fn write_snapshot(dir: &Path, lsn: Lsn, image: &EngineImage) -> Result<(PathBuf, u64), DiskError> {
    let payload = rmp_serde::to_vec_named(image).expect("an engine image always encodes");
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER + payload.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&lsn.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let path = snapshot_path(dir, lsn);
    let tmp = dir.join(format!("snapshot-{lsn:020}.tmp"));
    let write = || -> io::Result<()> {
        // Private: the state holds every value clients stored.
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()
    };
    write().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok((path, bytes.len() as u64))
}

/// Reads a snapshot: the LSN it covers and the image.
pub fn read_snapshot(path: &Path) -> Result<(Lsn, EngineImage), DiskError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let damaged = |offset: u64, why: String| DiskError::Damaged { path: path.to_owned(), offset, why };
    if bytes.len() < SNAPSHOT_HEADER || &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(damaged(0, "not an agora snapshot (bad magic or too short)".to_owned()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(damaged(8, format!("format version {version}; this agora reads version {FORMAT_VERSION}")));
    }
    let lsn = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    let payload = &bytes[SNAPSHOT_HEADER..];
    if payload.len() != len {
        return Err(damaged(20, format!("the payload is {} bytes, the header says {len}", payload.len())));
    }
    if crc32fast::hash(payload) != crc {
        return Err(damaged(SNAPSHOT_HEADER as u64, "checksum mismatch".to_owned()));
    }
    let image = rmp_serde::from_slice(payload)
        .map_err(|e| damaged(SNAPSHOT_HEADER as u64, format!("the state does not decode: {e}")))?;
    Ok((lsn, image))
}
