//! The journal: the order in which mutating commands were applied, as encoded records.
//!
//! With durability on, every command that may change state is applied under the
//! journal's one lock and appended, in that same order, to an in-memory tail of
//! records; the durability layer (`crate::durability`) takes the tail and writes it to
//! the log. So the log's order is the order the engine applied them in, and replaying
//! the log gives the same state. Read-only calls skip the journal and its lock.
//!
//! A record is `[payload length: u32 LE][CRC-32 of the payload: u32 LE][payload]`, the
//! payload being the [`Command`] in MessagePack. [`encode_record`] and
//! [`decode_record`] are the only places that know that layout.
//!
//! This module does no I/O: it only orders and encodes. It must not know about files.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use agora_proto::{ErrorCode, WireError};

use agora_proto::native::{Args, ObjectId};

use super::clock::Time;
use super::command::{Access, Command, Effects};
use super::waiter::SessionId;

/// A log sequence number: the position of a record in the log, from 1. Every record
/// ever appended has one, and they only grow (across restarts too).
pub type Lsn = u64;

/// Bytes before a record's payload: its length and its checksum.
pub const RECORD_HEADER: usize = 8;

/// The largest payload a record may have (a command is at most a frame, and frames
/// are far smaller): a length above it is damage, not a record.
pub const MAX_RECORD: usize = 1 << 30;

/// Appends `command` to `buf` as one record.
pub fn encode_record(buf: &mut Vec<u8>, command: &Command) {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER]);
    match command {
        Command::Call { session, object, access, method, args, at } => {
            encode_call(buf, *session, *object, *access, method, args, *at);
        }
        // Encoding into a Vec cannot fail for a command (every field is plain data).
        other => rmp_serde::encode::write(buf, other).expect("a command always encodes"),
    }
    let payload = &buf[start + RECORD_HEADER..];
    let len = u32::try_from(payload.len()).expect("a command is far below 4 GiB");
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A `Command::Call` as `rmp_serde` writes it (a test holds the bytes equal), written
/// by hand: it is the record of nearly every logged change, and serde's walk over it
/// cost more than the rest of logging the call.
fn encode_call(
    buf: &mut Vec<u8>,
    session: SessionId,
    object: ObjectId,
    access: Access,
    method: &str,
    args: &Args,
    at: Time,
) {
    use agora_proto::value::{put_str, put_uint};
    // The constant parts as bytes: a map of one entry, the variant's name as a str of
    // four bytes, and the array of its six fields; `access` as a str of its name.
    const CALL: &[u8] = b"\x81\xa4Call\x96";
    const HANDLE: &[u8] = b"\xa6Handle";
    const ID: &[u8] = b"\xa2Id";
    buf.extend_from_slice(CALL);
    put_uint(buf, session);
    put_uint(buf, object);
    buf.extend_from_slice(match access {
        Access::Handle => HANDLE,
        Access::Id => ID,
    });
    // A method name and arguments come from a frame, far below 2^32 bytes.
    put_str(buf, method);
    agora_proto::native::encode_args(args, buf).expect("a call's arguments came in a frame");
    put_uint(buf, at.0);
}

/// What [`decode_record`] found at the start of a byte slice.
#[derive(Debug)]
pub enum RecordRead {
    /// A whole, intact record and its length in bytes (header included).
    Record(Box<Command>, usize),
    /// The slice ends inside a record (a torn write, if it is the end of the log).
    Incomplete,
    /// The bytes are not a record: why.
    Damaged(String),
}

/// Reads the record at the start of `bytes`.
pub fn decode_record(bytes: &[u8]) -> RecordRead {
    if bytes.len() < RECORD_HEADER {
        return RecordRead::Incomplete;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return RecordRead::Damaged(format!("record length {len} is impossible"));
    }
    let Some(payload) = bytes.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return RecordRead::Incomplete;
    };
    if crc32fast::hash(payload) != crc {
        return RecordRead::Damaged("checksum mismatch".to_owned());
    }
    match rmp_serde::from_slice::<Command>(payload) {
        Ok(command) => RecordRead::Record(Box::new(command), RECORD_HEADER + len),
        Err(e) => RecordRead::Damaged(format!("checksum matches but the command does not decode: {e}")),
    }
}

/// The records appended and not yet taken by the writer.
#[derive(Debug, Default)]
pub struct Tail {
    /// Encoded records, in order.
    pub bytes: Vec<u8>,
    /// The LSN of the next record.
    pub next_lsn: Lsn,
}

/// The journal of one engine (see the module docs).
#[derive(Debug)]
pub struct Journal {
    tail: Mutex<Tail>,
    /// The LSN of the last record appended (readable without the lock).
    appended: AtomicU64,
    /// The LSN of the last record taken (or dropped by a close).
    taken: AtomicU64,
    /// Set while the log cannot be written: mutating commands are refused with it.
    refusing: AtomicBool,
    refusal: Mutex<Option<WireError>>,
    /// Set while every command is refused, not only changes a client asked for: a
    /// replicated node that does not lead must apply nothing but its cluster's log.
    closed: Mutex<Option<WireError>>,
}

impl Journal {
    /// A journal whose next record has LSN `next_lsn`.
    pub fn new(next_lsn: Lsn) -> Journal {
        Journal {
            tail: Mutex::new(Tail { bytes: Vec::with_capacity(64 * 1024), next_lsn }),
            appended: AtomicU64::new(next_lsn.saturating_sub(1)),
            taken: AtomicU64::new(next_lsn.saturating_sub(1)),
            refusing: AtomicBool::new(false),
            refusal: Mutex::new(None),
            closed: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a command in the journal's order: it is encoded and `apply` runs under
    /// the journal's lock, and the record stays if the effects say it changed
    /// something. While the log cannot be written, a change a client asked for is
    /// refused without applying ([`Command::refusable`]); the rest are applied and
    /// kept here until the log can be written again.
    pub(super) fn record(&self, command: Command, apply: impl FnOnce(Command) -> Effects) -> Effects {
        let mut tail = self.lock();
        if let Some(closed) = self.closed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Effects::unchanged(Err(closed));
        }
        if command.refusable() && self.refusing.load(Ordering::Acquire) {
            if let Some(refusal) = self.refusal.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return Effects::unchanged(Err(refusal));
            }
        }
        // Encoded before it is applied, since applying consumes it.
        let start = tail.bytes.len();
        encode_record(&mut tail.bytes, &command);
        let mut effects = apply(command);
        if effects.mutated {
            let lsn = tail.next_lsn;
            tail.next_lsn += 1;
            self.appended.store(lsn, Ordering::Release);
            effects.lsn = Some(lsn);
        } else {
            tail.bytes.truncate(start);
        }
        effects
    }

    /// The LSN of the last record appended.
    pub fn appended(&self) -> Lsn {
        self.appended.load(Ordering::Acquire)
    }

    /// Moves the appended records into `into` (which should be empty; its capacity is
    /// reused) and returns the LSN of the last one.
    pub fn take(&self, into: &mut Vec<u8>) -> Lsn {
        let mut tail = self.lock();
        std::mem::swap(&mut tail.bytes, into);
        self.taken.store(tail.next_lsn - 1, Ordering::Release);
        tail.next_lsn - 1
    }

    /// The LSN of the last record appended, if some records appended have not been
    /// taken yet: whoever takes them does so after this call.
    pub fn untaken(&self) -> Option<Lsn> {
        let appended = self.appended();
        (appended > self.taken.load(Ordering::Acquire)).then_some(appended)
    }

    /// [`Journal::take`], and `also` run in the same hold of the journal's lock: what
    /// `also` sees of the engine is its state right after the last record taken (a
    /// replicated leader's snapshot cut).
    pub fn take_and<R>(&self, into: &mut Vec<u8>, also: impl FnOnce() -> R) -> (Lsn, R) {
        let mut tail = self.lock();
        std::mem::swap(&mut tail.bytes, into);
        self.taken.store(tail.next_lsn - 1, Ordering::Release);
        let seen = also();
        (tail.next_lsn - 1, seen)
    }

    /// Holds the journal's lock: no mutating command runs until the guard drops (a
    /// snapshot's consistent cut). The guard's tail says where the cut is.
    pub fn pause(&self) -> MutexGuard<'_, Tail> {
        self.lock()
    }

    /// While `Some`, every mutating command is refused with this error (the log cannot
    /// be written); `None` accepts them again.
    pub fn refuse(&self, refusal: Option<WireError>) {
        let refusing = refusal.is_some();
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = refusal;
        self.refusing.store(refusing, Ordering::Release);
    }
}

impl Journal {
    /// Closes the journal: from now on every command is refused with `why`, and the
    /// records appended and not yet taken are dropped (returned, for a count). Taking
    /// the journal's lock makes it a clean cut: no command is half-applied.
    pub fn close(&self, why: WireError) -> usize {
        let mut tail = self.lock();
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        let dropped = tail.bytes.len();
        tail.bytes.clear();
        self.taken.store(tail.next_lsn - 1, Ordering::Release);
        dropped
    }

    /// Opens a closed journal again.
    pub fn reopen(&self) {
        let _tail = self.lock();
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// True while closed.
    pub fn is_closed(&self) -> bool {
        self.closed.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// The error mutating calls get while the log cannot be written.
pub fn log_unwritable(why: &str) -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        format!(
            "durability: the server cannot write its log ({why}); changes are refused until it can, reads still work"
        ),
    )
}

#[cfg(test)]
mod tests {
    use agora_proto::Value;
    use proptest::prelude::*;

    use super::*;

    /// A few shapes: what matters here is the record around the values (their own
    /// encoding agrees with serde's in `agora_proto::value::msgpack`'s tests).
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            "[a-z\u{e9}]{0,40}".prop_map(|s: String| Value::Str(s.into())),
            proptest::collection::vec(any::<i64>().prop_map(Value::Int), 0..40).prop_map(Value::List),
        ]
    }

    proptest! {
        /// The hand-written record of a call is byte for byte serde's, so logs written
        /// before and after it read alike, and it decodes to the same command.
        #[test]
        fn a_call_record_is_the_bytes_serde_writes(
            session in any::<u64>(),
            object in any::<u64>(),
            by_id in any::<bool>(),
            method in "[a-z_]{0,40}",
            positional in proptest::collection::vec(value(), 0..20),
            keywords in proptest::collection::vec(("[a-z]{1,8}", value()), 0..3),
            at in any::<u64>(),
        ) {
            let access = if by_id { Access::Id } else { Access::Handle };
            let command = Command::Call {
                session, object, access, method: method.into(), args: Args { positional, keywords }, at: Time(at),
            };
            let mut fast = Vec::new();
            encode_record(&mut fast, &command);
            let serde = rmp_serde::to_vec(&command).unwrap();
            prop_assert_eq!(&fast[RECORD_HEADER..], &serde[..]);
            match decode_record(&fast) {
                RecordRead::Record(decoded, used) => {
                    prop_assert_eq!(used, fast.len());
                    prop_assert_eq!(*decoded, command);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
