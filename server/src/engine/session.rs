//! What the engine keeps per session: the handles it holds and the objects it used.
//!
//! A native client reaches objects only through handles its session opened, so its
//! calls find their object in the session's own map without touching the table's
//! locks. A Python client calls objects by id; the session remembers (weakly) those
//! whose kind keeps per-session state, so they hear when the session ends. Either way,
//! when the session ends every handle is given back and every object it used releases
//! what the session held there — the same rules for both dialects.
//!
//! A native connection keeps a [`HandleCache`] of the objects behind its handles, so
//! that a call finds its object without taking the session's lock: a lock and an
//! unlock are ~20 ns on the benchmark host, ~3 % of a pipelined call's server CPU. The
//! cache is good while the session has given back no handle since it was filled (the
//! session counts those), and a session that ended is caught under the object's own
//! lock (see `Engine::call_now`).

use std::collections::BTreeMap;

use agora_proto::idmap::IdMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use agora_proto::native::ObjectId;
use agora_proto::{ErrorCode, WireError};

use super::clock::Time;
use super::table::ObjectEntry;
use super::waiter::{SessionId, Ticket};

/// One handle: the object and how many times this session opened it.
pub(super) struct Handle {
    pub(super) entry: Arc<ObjectEntry>,
    pub(super) count: u64,
}

/// A session's state, behind its own lock (only its connection uses it, so the lock
/// is uncontended).
#[derive(Default)]
pub(super) struct SessionState {
    /// One table reference per distinct object, however often it was opened.
    pub(super) handles: IdMap<Handle>,
    /// Objects used by id without a handle that keep per-session state, to be told
    /// when this session ends. Weak: the session must not keep them alive.
    pub(super) touched: IdMap<Weak<ObjectEntry>>,
    /// Its parked calls: ticket → the object the call waits on. A restart abandons
    /// them (their callers are gone with the old process).
    pub(super) parked: BTreeMap<Ticket, ObjectId>,
    /// When each parked call parked (for `agora get`; not part of the state: a
    /// restore abandons every parked call anyway).
    pub(super) parked_at: BTreeMap<Ticket, Time>,
    /// Set while the session has no connection after a leader change: it ends at this
    /// time unless its client resumes it ([`super::Command::Takeover`]).
    pub(super) detached_until: Option<Time>,
    /// Prune dead `touched` entries when the map grows past this.
    prune_at: usize,
}

impl SessionState {
    /// The object behind a handle this session holds.
    pub(super) fn handle(&self, object: ObjectId) -> Result<&Arc<ObjectEntry>, WireError> {
        self.handles.get(&object).map(|h| &h.entry).ok_or_else(|| {
            WireError::new(
                ErrorCode::NoSuchObject,
                format!("this session holds no handle to object {object:x} (open or attach it first)"),
            )
        })
    }

    /// Remembers that this session used `entry` by id (no handle).
    pub(super) fn touch(&mut self, entry: &Arc<ObjectEntry>) {
        self.touched.entry(entry.id()).or_insert_with(|| Arc::downgrade(entry));
        if self.touched.len() > self.prune_at.max(64) {
            // Amortised: forget freed objects, then let the map double before looking again.
            self.touched.retain(|_, weak| weak.strong_count() > 0);
            self.prune_at = (self.touched.len() * 2).max(64);
        }
    }

    /// Handle counts by object, sorted (for the engine's canonical state).
    pub(super) fn handle_counts(&self) -> BTreeMap<ObjectId, u64> {
        self.handles.iter().map(|(&id, h)| (id, h.count)).collect()
    }
}

/// A session as its connection holds it: its id and its state. Cheap to clone.
#[derive(Clone)]
pub struct Session(pub(super) Arc<SessionCell>);

pub(super) struct SessionCell {
    pub(super) id: SessionId,
    /// What resumes it ([`super::Command::Resume`]); `None`: it cannot be resumed.
    pub(super) secret: Option<u64>,
    pub(super) state: Mutex<SessionState>,
    /// How many times a handle left `state.handles`: a [`HandleCache`] filled before
    /// the last such change is stale.
    handles_given_back: AtomicU64,
    /// The LSN of the last record logged for this session (durability on): its
    /// answers go out once the log has that record.
    logged: AtomicU64,
    /// Set when the session ends, or when the engine's state is replaced (a cluster
    /// node rebuilt from its log): a connection still holding it gets no more commands
    /// applied for it.
    ended: AtomicBool,
}

impl Session {
    pub(super) fn new(id: SessionId, secret: Option<u64>) -> Session {
        Session(Arc::new(SessionCell {
            id,
            secret,
            state: Mutex::new(SessionState::default()),
            handles_given_back: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }))
    }

    /// True once the session ended, or the engine's state it belonged to was replaced.
    #[inline]
    pub fn is_ended(&self) -> bool {
        self.0.ended.load(Ordering::Acquire)
    }

    pub(super) fn mark_ended(&self) {
        self.0.ended.store(true, Ordering::Release);
    }

    /// Notes that a command of this session was logged at `lsn`.
    pub fn note_logged(&self, lsn: u64) {
        self.0.logged.fetch_max(lsn, Ordering::Relaxed);
    }

    /// The LSN of the last record logged for this session (0: none).
    pub fn logged(&self) -> u64 {
        self.0.logged.load(Ordering::Relaxed)
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.0.id
    }

    /// What a client shows to resume it after a leader change (`None`: it cannot be).
    pub fn secret(&self) -> Option<u64> {
        self.0.secret
    }

    pub(super) fn state(&self) -> MutexGuard<'_, SessionState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a handle left the session's map (call it under the state's lock,
    /// before the lock is released): every [`HandleCache`] filled until now is stale.
    pub(super) fn note_handle_given_back(&self) {
        self.0.handles_given_back.fetch_add(1, Ordering::Release);
    }
}

/// One connection's copy of the objects behind its session's handles, read without
/// the session's lock (see the module's documentation). Only its connection uses it;
/// it holds the objects' entries until its next call after a handle is given back, or
/// until [`HandleCache::clear`].
#[derive(Default)]
pub struct HandleCache {
    /// The session's count of handles given back when the entries were filled.
    given_back: u64,
    entries: IdMap<Arc<ObjectEntry>>,
}

impl HandleCache {
    /// An empty cache.
    pub fn new() -> HandleCache {
        HandleCache::default()
    }

    /// Forgets every entry (a connection that just gave a handle back lets its object
    /// go at once rather than at its next call).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The object behind `session`'s handle `object`: from the cache if no handle was
    /// given back since it was filled, else from the session's map (under its lock).
    pub(super) fn entry(&mut self, session: &Session, object: ObjectId) -> Result<&Arc<ObjectEntry>, WireError> {
        // Read before the map is: a handle given back after this read makes the next
        // call's read differ, so an entry copied now is dropped then.
        let given_back = session.0.handles_given_back.load(Ordering::Acquire);
        if given_back != self.given_back {
            self.entries.clear();
            self.given_back = given_back;
        }
        match self.entries.entry(object) {
            Entry::Occupied(cached) => Ok(cached.into_mut()),
            Entry::Vacant(slot) => {
                let entry = session.state().handle(object)?.clone();
                Ok(slot.insert(entry))
            }
        }
    }
}

impl std::fmt::Debug for HandleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleCache").field("objects", &self.entries.len()).finish()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.0.id)
    }
}
