//! The engine: the one place where state changes.
//!
//! Every change to shared state is a [`Command`] applied by [`Engine::apply`] (or
//! [`Engine::apply_in`], the same thing with the session already in hand; a method
//! call, the hot path, may also be applied by its fields with [`Engine::call`], which
//! is what `apply` runs for a `Command::Call`), which returns its [`Effects`]: the answer for the sender, answers for parked calls of any
//! session ([`Delivery`]), and wake-ups to arm. The call is direct and synchronous:
//! no channel hop, no task. Each object keeps its state behind its own lock, so calls
//! on different objects run in parallel and calls on one object are linearizable.
//!
//! # The contract
//!
//! - **What a command may touch.** Applying a command locks the object it names (and
//!   the one object that object drives, if any: a Condition's lock, a dict iterator's
//!   dict — holder first, then held), changes state, and returns. It never waits,
//!   never does I/O, never reads a clock: `now` is the command's `at`.
//! - **Objects see the world through [`Ctx`] only.** Counters (object ids, tickets,
//!   fencing tokens, session ids) are the engine's state ([`Counters`]); objects never
//!   hold channels, tasks or references into the table. A waiter is data ([`Waiter`]).
//! - **What only the parking layer does** (`crate::parking`): it owns the connections'
//!   waiting calls and the server's one timer, routes deliveries to waiting
//!   connections, and turns deadlines, cancels, disconnects and silence into commands
//!   (`Expire`, `Abandon`, `Tick`, `EndSession`). Whether a caller is still there is a
//!   fact it reports as an `Abandon` naming the call, never a question an object asks.
//! - **Determinism.** Applied one after another, the same commands from the same state
//!   give the same state ([`Engine::canonical_state`]): that is what makes the command
//!   log replayable and the engine a replicated state machine. Reads (methods declared
//!   read-only) are commands too, but change nothing and need no log
//!   ([`Effects::mutated`]).
//! - **The journal.** With durability on ([`Engine::attach_journal`]), every command
//!   that may change state is applied under the [`Journal`]'s lock and recorded in that
//!   order; its [`Effects::lsn`] says which record its answers wait for. The whole state
//!   can be taken as an [`EngineImage`] (a snapshot) and rebuilt from one, and
//!   [`Command::Restart`] ends the previous run's sessions after a restore.
//! - **Moves between objects.** An object never reaches another; when it hands an item
//!   to another object by name (a queue's dead letter, [`Ctx::move_to`]), the engine
//!   finds or creates the target and gives it the item before the same command ends,
//!   or gives it back to its source: a move is replayed as part of its command and
//!   never drops what it carries.
//! - **Who holds what** ([`Engine::holders`]) is a read: each object describes its
//!   holds and waiters ([`SharedObject::holders`]) and the engine adds when each parked
//!   call parked. Peer addresses are the server's (`crate::server::Peers`), not the
//!   engine's.
//! - **One set of lifetime rules.** Both dialects open, call and release through the
//!   same commands: a container keeps alive every object referenced in what is stored
//!   in it (methods declared as storing their arguments, and constructor arguments such
//!   as `Condition(lock)`), whichever dialect stored it.

mod clock;
mod command;
mod ctx;
mod image;
mod journal;
mod memory;
mod session;
mod table;
mod waiter;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use agora_proto::idmap::IdMap;
use agora_proto::native::{Args, Kind, ObjectId, ObjectInfo};
use agora_proto::reference::referenced_ids;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

pub use clock::{Clock, Time};
pub use command::{Access, Answer, Command, Effects, Keep};
pub use ctx::{CounterValues, Counters, Ctx, Harness, Move, Outputs};
pub use image::{EngineImage, PendingImage, SessionImage};
pub use journal::{decode_record, encode_record, log_unwritable, Journal, Lsn, RecordRead, Tail, RECORD_HEADER};
pub use memory::{MemoryGate, OBJECT_OVERHEAD};
pub use session::{HandleCache, Session};
pub use table::{no_such_object, ObjectImage, RegistryStats};
pub use waiter::{deadline_after, Completion, Delivery, Parked, Reclaim, SessionId, Ticket, Undelivered, Waiter};

pub use crate::objects::unsupported_kind;

use crate::custom::CustomKinds;
use crate::metrics::{CallOutcome, Metrics, WaitGuard};
pub use crate::object::Holding;
use crate::object::{bind, MethodSpec, Outcome, SharedObject, Upcoming};
use crate::objects::iterator::{self, IteratorObject};
use table::{ObjectEntry, Table};

/// The engine: the object table, the sessions, the counters and the clock.
pub struct Engine {
    table: Table,
    counters: Counters,
    clock: Clock,
    sessions: Mutex<IdMap<Session>>,
    /// With durability on: the order mutating commands are applied and logged in.
    journal: OnceLock<Arc<Journal>>,
    /// The last [`Command::Restart`], if the state came back from a log.
    restarted: Mutex<Option<Restarted>>,
    /// How to run a call that may take long (see [`Engine::set_offload`]).
    offload: OnceLock<Offload>,
    /// The memory limit, if one is set (see [`Engine::set_memory_gate`]).
    memory: OnceLock<Arc<MemoryGate>>,
}

/// Runs a call that scans ([`MethodSpec::scans`]), or is given a slice of, an object of at
/// least this many items through the offload.
pub const HEAVY_CALL_ITEMS: usize = 65_536;

/// The fewest items an object holds for [`Engine::prefetch`] to ask it to prefetch: a
/// dict this small (64 KiB of entries) stays in a core's cache between calls, and its
/// lock is better left alone.
pub const PREFETCH_FROM: usize = 1_024;

/// Runs the given call, which may take long, so that the caller's other work goes on
/// meanwhile (the server hands its runtime's other tasks to another thread).
pub type Offload = fn(&mut dyn FnMut());

/// When the engine last restarted from its log, and the first object id it made after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarted {
    /// When.
    pub at: Time,
    /// Objects with smaller ids were made before the restart.
    pub first_id: ObjectId,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("objects", &self.table.len()).field("counters", &self.counters.values()).finish()
    }
}

/// One object in [`Engine::objects`].
#[derive(Debug, Clone)]
pub struct ObjectSummary {
    /// Its id.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Its name, for a named object.
    pub name: Option<String>,
    /// The references keeping it alive.
    pub refcount: u64,
    /// True if only the objects storing it keep it alive.
    pub only_held: bool,
    /// Its Python `repr`.
    pub repr: String,
}

/// Who holds one object and who waits for it ([`Engine::holders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderView {
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Its name, for a named object.
    pub name: Option<String>,
    /// True for kinds that keep something per session (their holds are worth showing
    /// even when there are none).
    pub tracks_holders: bool,
    /// Current holds, oldest first.
    pub held: Vec<Holding>,
    /// Parked calls, first served first.
    pub waiting: Vec<WaitingCall>,
}

impl HolderView {
    /// How long the oldest hold has been held at `now` (`None`: nothing is held).
    pub fn oldest_hold_age(&self, now: Time) -> Option<std::time::Duration> {
        self.held.iter().map(|h| h.since).min().map(|since| since.until(now))
    }
}

/// One parked call in a [`HolderView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCall {
    /// The waiting session.
    pub session: SessionId,
    /// The call.
    pub ticket: Ticket,
    /// What it waits for (`"acquire"`, `"get"`…).
    pub what: String,
    /// When it parked (`None` if unknown: parked before a restore).
    pub since: Option<Time>,
}

/// The engine's whole state in canonical form: equal states compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalState {
    /// The counters.
    pub counters: CounterValues,
    /// Every live object by id.
    pub objects: BTreeMap<ObjectId, ObjectRecord>,
    /// Names → ids.
    pub names: BTreeMap<String, ObjectId>,
    /// Every open session.
    pub sessions: BTreeMap<SessionId, SessionRecord>,
}

/// One session in a [`CanonicalState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Its handles: object → count.
    pub handles: BTreeMap<ObjectId, u64>,
    /// The live objects it used by id.
    pub touched: BTreeSet<ObjectId>,
    /// Its parked calls: ticket → object.
    pub parked: BTreeMap<Ticket, ObjectId>,
    /// What resumes it (`None`: it cannot be resumed).
    pub secret: Option<u64>,
    /// Detached until then (see [`Command::Takeover`]).
    pub detached_until: Option<Time>,
}

/// One object in a [`CanonicalState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Its kind.
    pub kind: Kind,
    /// Its name, for a named object.
    pub name: Option<String>,
    /// References keeping it alive.
    pub refs: u64,
    /// The objects it keeps alive.
    pub holds: Vec<ObjectId>,
    /// Its state ([`SharedObject::state`]).
    pub state: Vec<u8>,
}

impl Engine {
    /// An empty engine that can also build the custom kinds `custom`. Object ids start
    /// at a random offset, so a client of an earlier server cannot hit a new object by
    /// accident.
    pub fn new(custom: CustomKinds) -> Engine {
        let first_id = (u64::from(rand::random::<u32>()) << 16) | 1;
        Engine::with_counters(custom, Counters::starting_ids_at(first_id).values())
    }

    /// An empty engine whose counters start at `counters` (a restore, a replay).
    pub fn with_counters(custom: CustomKinds, counters: CounterValues) -> Engine {
        Engine {
            table: Table::with_custom_kinds(custom),
            counters: Counters::new(counters),
            clock: Clock::new(),
            sessions: Mutex::default(),
            journal: OnceLock::new(),
            restarted: Mutex::new(None),
            offload: OnceLock::new(),
            memory: OnceLock::new(),
        }
    }

    /// Sets how calls that scan big objects (at least [`HEAVY_CALL_ITEMS`] items) run: the
    /// engine itself never waits or knows the runtime, but a sort of millions of items
    /// must not keep the thread it runs on from serving other clients. Set once.
    pub fn set_offload(&self, offload: Offload) {
        let _ = self.offload.set(offload);
    }

    /// Turns the memory limit on: from now on calls that would grow an object, and the
    /// creation of objects, pass `gate` first (see [`MemoryGate`]). Set once.
    pub fn set_memory_gate(&self, gate: Arc<MemoryGate>) {
        let _ = self.memory.set(gate);
    }

    /// The memory limit's gate, if a limit is set.
    pub fn memory_gate(&self) -> Option<&MemoryGate> {
        self.memory.get().map(|gate| &**gate)
    }

    /// Turns durability on: from now on mutating commands are applied in the
    /// journal's order and recorded there. Set once, before any client connects.
    pub fn attach_journal(&self, journal: Arc<Journal>) {
        assert!(self.journal.set(journal).is_ok(), "the journal is attached once");
    }

    /// The journal, with durability on.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.get()
    }

    /// Moves the clock so that it never reads earlier than `t` (a restore: the log's
    /// last command happened at `t`, and time must not go back across a restart).
    pub fn clock_not_before(&self, t: Time) {
        self.clock.not_before(t);
    }

    fn restarted(&self) -> MutexGuard<'_, Option<Restarted>> {
        self.restarted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error for an id that names no live object; it names the restart when the
    /// object was made before the server last restarted from its log.
    pub fn missing_object(&self, id: ObjectId) -> WireError {
        match *self.restarted() {
            Some(restarted) if id < restarted.first_id => WireError::new(
                ErrorCode::NoSuchObject,
                format!(
                    "object {id:x} did not survive the server's restart ({} s after the epoch): only named objects and what they hold survive a restart",
                    restarted.at.0 / 1_000_000
                ),
            ),
            _ => no_such_object(id),
        }
    }

    /// Now, on the engine's clock: the `at` of commands made here.
    pub fn now(&self) -> Time {
        self.clock.now()
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The call counters and histograms (served by the metrics endpoint).
    pub fn metrics(&self) -> &Metrics {
        self.table.metrics()
    }

    /// The counters' current values.
    pub fn counters(&self) -> CounterValues {
        self.counters.values()
    }

    fn sessions(&self) -> MutexGuard<'_, IdMap<Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open session `id`.
    pub fn session(&self, id: SessionId) -> Option<Session> {
        self.sessions().get(&id).cloned()
    }

    /// Opens a session (an `OpenSession` command) and returns it; `resumable` gives
    /// it a random secret, so that its client can resume it after a leader change
    /// ([`Command::Resume`]). Fails only while the journal is closed (a replicated
    /// node that does not lead).
    pub fn open_session(&self, at: Time, resumable: bool) -> Result<Session, WireError> {
        let secret = resumable.then(|| rand::random::<u64>().max(1));
        match self.apply(Command::OpenSession { at, secret }).reply {
            Ok(Answer::Session(id)) => Ok(self.session(id).expect("just opened")),
            Err(e) => Err(e),
            other => unreachable!("OpenSession answered {other:?}"),
        }
    }

    /// Takes back detached session `id` for a new connection (a `Resume` command).
    pub fn resume_session(&self, id: SessionId, secret: u64, at: Time) -> Result<Session, WireError> {
        match self.apply(Command::Resume { session: id, secret, at }).reply {
            Ok(Answer::Session(id)) => Ok(self.session(id).expect("just resumed")),
            Err(e) => Err(e),
            other => unreachable!("Resume answered {other:?}"),
        }
    }

    /// Every detached session and when it ends unless resumed, in id order (for the
    /// leader's timer: see [`Command::Takeover`]).
    pub fn detached_sessions(&self) -> Vec<(SessionId, Time)> {
        let mut detached: Vec<(SessionId, Time)> =
            self.sessions().values().filter_map(|s| s.state().detached_until.map(|until| (s.id(), until))).collect();
        detached.sort_unstable();
        detached
    }

    /// Applies a command another node already ordered (a replica applying its
    /// cluster's committed log): never through the journal, never refused.
    pub fn apply_replicated(&self, command: Command) -> Effects {
        // The leader's clock ordered it: this node's clock, should it lead next, must
        // not read earlier (leases and timeouts it sets would run long).
        self.clock.not_before(command.at());
        self.apply_now(command)
    }

    /// Applies one command (in the journal's order, and recorded, when it may
    /// change state and durability is on).
    pub fn apply(&self, command: Command) -> Effects {
        if let Err(e) = self.admit(None, &command) {
            return Effects::unchanged(Err(e));
        }
        match self.journal.get() {
            Some(journal) if !self.reads_only(None, &command) => journal.record(command, |c| self.apply_now(c)),
            _ => self.apply_now(command),
        }
    }

    fn apply_now(&self, command: Command) -> Effects {
        let session = match &command {
            Command::OpenSession { secret, .. } => {
                let id = self.counters.session();
                self.sessions().insert(id, Session::new(id, *secret));
                return Effects::reply(Ok(Answer::Session(id)));
            }
            Command::EndSession { session, .. }
            | Command::Open { session, .. }
            | Command::Attach { session, .. }
            | Command::Release { session, .. }
            | Command::Call { session, .. }
            | Command::Iterate { session, .. } => Some(*session),
            _ => None,
        };
        let session = match session {
            None => None,
            Some(id) => match self.session(id) {
                Some(session) => Some(session),
                None => return Effects::reply(Err(no_such_session(id))),
            },
        };
        self.run(session.as_ref(), None, command)
    }

    /// Applies one command of `session` (the connection's own handle on it, which
    /// spares the hot path a look-up in the session map).
    #[inline]
    pub fn apply_in(&self, session: &Session, command: Command) -> Effects {
        if session.is_ended() {
            return Effects::unchanged(Err(no_such_session(session.id())));
        }
        if let Err(e) = self.admit(Some(session), &command) {
            return Effects::unchanged(Err(e));
        }
        match self.journal.get() {
            Some(journal) if !self.reads_only(Some(session), &command) => {
                journal.record(command, |c| self.run(Some(session), None, c))
            }
            _ => self.run(Some(session), None, command),
        }
    }

    /// True if `command` cannot change state: a call of a read-only method (or of a
    /// method or object that does not exist, which fails having changed nothing).
    fn reads_only(&self, session: Option<&Session>, command: &Command) -> bool {
        let Command::Call { session: id, object, access, method, .. } = command else { return false };
        self.spec_of(session, *id, None, *object, *access, method).is_none_or(|m| m.read_only)
    }

    /// The spec of the method a call names, if the object and method exist; a call
    /// through a handle finds its object through the connection's `handles` if given.
    fn spec_of(
        &self,
        session: Option<&Session>,
        id: SessionId,
        handles: Option<&mut HandleCache>,
        object: ObjectId,
        access: Access,
        method: &str,
    ) -> Option<&'static MethodSpec> {
        // The method table lives as long as the program: no entry is kept past the look.
        let methods = match (access, session, handles) {
            (Access::Id, ..) => self.table.get(object).ok()?.methods(),
            (Access::Handle, Some(session), Some(handles)) => handles.entry(session, object).ok()?.methods(),
            (Access::Handle, Some(session), None) => session.state().handle(object).ok()?.methods(),
            (Access::Handle, None, _) => self.session(id)?.state().handle(object).ok()?.methods(),
        };
        methods.iter().find(|m| m.name == method)
    }

    /// With a memory limit, lets `command` in or refuses it: a call of a growing
    /// method pays for its arguments, the creation of an object for its constructor's
    /// arguments and [`OBJECT_OVERHEAD`]. Everything else always runs.
    fn admit(&self, session: Option<&Session>, command: &Command) -> Result<(), WireError> {
        let Some(gate) = self.memory.get() else { return Ok(()) };
        match command {
            Command::Call { session: id, object, access, method, args, .. } => {
                match self.spec_of(session, *id, None, *object, *access, method) {
                    Some(spec) if spec.grows => gate.admit(footprint(args)),
                    _ => Ok(()),
                }
            }
            Command::Open { name: Some(name), .. } if self.table.lookup(name).is_ok() => Ok(()),
            Command::Open { args, .. } => gate.admit(OBJECT_OVERHEAD + footprint(args)),
            _ => Ok(()),
        }
    }

    /// Applies `command`; a call finds its object through `handles` if it is given.
    fn run(&self, session: Option<&Session>, handles: Option<&mut HandleCache>, command: Command) -> Effects {
        if let Command::Call { object, access, method, args, at, .. } = command {
            return self.call_now(session.expect("a session command"), handles, object, access, &method, args, at);
        }
        let mut out = Outputs::default();
        let at = command.at();
        let reply = match command {
            Command::OpenSession { .. } | Command::Call { .. } => unreachable!("handled above"),
            Command::EndSession { at, .. } => {
                self.end_session(session.expect("a session command"), at, &mut out);
                Ok(Answer::Done)
            }
            Command::Open { kind, name, args, keep, at, .. } => {
                self.open(session.expect("a session command"), &kind, name.as_deref(), args, keep, at)
            }
            Command::Attach { object, .. } => self.attach(session.expect("a session command"), object),
            Command::Release { object, at, .. } => {
                self.release(session.expect("a session command"), object, at, &mut out).map(|()| Answer::Done)
            }
            Command::Incref { object, .. } => self.table.incref(object).map(|_| Answer::Done),
            Command::Decref { object, .. } => self.table.get(object).map(|entry| {
                // As CPython: a decref with no client reference left, on an object kept
                // alive only by the objects holding it, is ignored.
                if !entry.only_held() {
                    self.table.decref(&entry);
                }
                Answer::Done
            }),
            Command::Delete { name, .. } => self.table.delete(&name).map(|()| Answer::Done),
            Command::Iterate { object, at, .. } => {
                self.iterate(session.expect("a session command"), object, at, &mut out)
            }
            Command::Expire { session, object, ticket, at } => match self.table.get(object) {
                // The object is gone (a deleted name): the call is answered with that.
                Err(e) => {
                    let _ = self.forget_parked(session, ticket);
                    Err(e)
                }
                Ok(entry) => self
                    .drive(&entry, false, session, at, &mut out, |o, ctx| o.expire(ctx, ticket))
                    .map(|()| Answer::Done),
            },
            Command::Abandon { session, object, ticket, undelivered, at } => {
                let _ = self.forget_parked(session, ticket);
                if let Ok(entry) = self.table.get(object) {
                    let _ =
                        self.drive(&entry, false, session, at, &mut out, |o, ctx| o.abandon(ctx, ticket, undelivered));
                }
                Ok(Answer::Done)
            }
            Command::Tick { object, at } => {
                if let Ok(entry) = self.table.get(object) {
                    let _ = self.drive(&entry, false, 0, at, &mut out, |o, ctx| o.tick(ctx));
                }
                Ok(Answer::Done)
            }
            Command::Restart { at } => {
                self.restart(at, &mut out);
                Ok(Answer::Done)
            }
            Command::Takeover { at, before, until } => {
                self.take_over(at, before, until, &mut out);
                Ok(Answer::Done)
            }
            Command::Resume { session, secret, .. } => self.resume(session, secret),
            Command::Lapse { session, at } => {
                if let Some(session) = self.session(session) {
                    let due = session.state().detached_until.is_some_and(|until| until <= at);
                    if due {
                        self.end_session(&session, at, &mut out);
                    }
                }
                Ok(Answer::Done)
            }
            Command::Barrier { .. } => Ok(Answer::Done),
        };
        if !out.moves.is_empty() {
            self.settle_moves(at, &mut out);
        }
        self.unpark(&out.deliveries);
        Effects { reply, deliveries: out.deliveries, wakeups: out.wakeups, mutated: true, lsn: None }
    }

    /// Carries out the moves objects asked for ([`Ctx::move_to`]: a queue's dead
    /// letters) within the command that asked: each item goes to the object with the
    /// target name (created as the asked kind if no object has that name), which then
    /// keeps alive what the item refers to, as a put would. An item the target cannot
    /// take (the name belongs to another kind, an immediate shutdown) goes back to its
    /// source; only a source that cannot take it back either (shut down immediately,
    /// which drops returning items as done) lets it go, and that is logged.
    ///
    /// The source let go of the item before its lock was released, and the target
    /// takes it before the command ends: a concurrent read may see it in neither for
    /// that moment, never in both, and the log replays the whole move as one command.
    fn settle_moves(&self, at: Time, out: &mut Outputs) {
        while !out.moves.is_empty() {
            for moved in std::mem::take(&mut out.moves) {
                let mut item = Some(moved.item);
                match self.table.open_named(&self.counters, &moved.kind, &moved.to, Vec::new(), Vec::new()) {
                    Ok(opened) => {
                        let target = opened.entry;
                        let mut stored = Vec::new();
                        if let Some(item) = &item {
                            referenced_ids(item, &mut stored);
                        }
                        let _ = self.drive(&target, true, 0, at, out, |o, ctx| {
                            if let Err(back) = o.receive_moved(ctx, item.take().expect("given once"), false) {
                                item = Some(back);
                            }
                        });
                        if item.is_none() {
                            for id in stored {
                                let _ = self.table.hold(&target, id);
                            }
                        } else {
                            tracing::warn!(to = %moved.to, "an item could not move to the object of that name; it went back to its source");
                        }
                        // The move holds no handle: named objects live until deleted.
                        self.table.decref(&target);
                    }
                    Err(e) => {
                        tracing::warn!(to = %moved.to, error = %e.message, "an item could not move to the object of that name; it went back to its source");
                    }
                }
                let Some(item) = item else { continue };
                let mut refused = Some(item);
                if let Ok(source) = self.table.get(moved.from) {
                    let _ = self.drive(&source, false, 0, at, out, |o, ctx| {
                        if o.receive_moved(ctx, refused.take().expect("given once"), true).is_ok() {
                            refused = None;
                        }
                    });
                }
                if refused.is_some() {
                    tracing::error!(from = moved.from, to = %moved.to, "an item could move neither to its target nor back to its source (deleted, or shut down immediately): dropped");
                }
            }
        }
    }

    /// Runs `f` on `entry`'s state under its lock, with the object it drives locked
    /// and linked. Unless `live`, even a deleted object is driven (its parked calls
    /// still settle through it).
    fn drive<R>(
        &self,
        entry: &ObjectEntry,
        live: bool,
        caller: SessionId,
        at: Time,
        out: &mut Outputs,
        f: impl FnOnce(&mut dyn SharedObject, &mut Ctx<'_>) -> R,
    ) -> Result<R, WireError> {
        let mut state = if live { entry.lock()? } else { entry.lock_any()? };
        // Holder first, then held: a Lock or a dict never drives anything, so no cycle.
        let linked_entry = state.linked().and_then(|id| self.table.get(id).ok());
        let mut linked_state = match &linked_entry {
            Some(linked) => Some(linked.lock_any()?),
            None => None,
        };
        let linked = linked_state.as_mut().map(|s| &mut ***s as &mut dyn SharedObject);
        let mut ctx = Ctx::new(at, caller, entry.id(), &self.counters, out, linked);
        let result = f(state.as_mut(), &mut ctx);
        entry.note_size(state.size().unwrap_or(0));
        Ok(result)
    }

    /// Applies the `Call` command with these fields: `apply` unpacks a `Command::Call`
    /// into this, and the dialects' hot path calls it directly, so a method call is
    /// not packed into an enum only to be unpacked again. The effects of a call whose
    /// method is declared read-only are not `mutated`. With durability on, a call
    /// that may change state is packed after all: it is what the journal records.
    /// `handles` is the calling connection's [`HandleCache`], if it keeps one: a call
    /// through a handle then finds its object without the session's lock.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn call(
        &self,
        session: &Session,
        mut handles: Option<&mut HandleCache>,
        object: ObjectId,
        access: Access,
        method: &str,
        args: Args,
        at: Time,
    ) -> Effects {
        if session.is_ended() {
            return Effects::unchanged(Err(no_such_session(session.id())));
        }
        // The method's spec, found once (through the handle cache) for the memory gate
        // and the journal, which both ask.
        let spec = match self.memory.get().is_some() || self.journal.get().is_some() {
            true => self.spec_of(Some(session), session.id(), handles.as_deref_mut(), object, access, method),
            false => None,
        };
        if let Some(gate) = self.memory.get() {
            if let Err(e) = spec.filter(|spec| spec.grows).map_or(Ok(()), |_| gate.admit(footprint(&args))) {
                return Effects::unchanged(Err(e));
            }
        }
        if let Some(journal) = self.journal.get() {
            // As `reads_only`: a call of an unknown object or method changes nothing.
            if spec.is_none_or(|m| m.read_only) {
                return self.call_now(session, handles, object, access, method, args, at);
            }
            let command = Command::Call { session: session.id(), object, access, method: method.into(), args, at };
            return journal.record(command, |c| self.run(Some(session), handles, c));
        }
        self.call_now(session, handles, object, access, method, args, at)
    }

    /// Whether calls through the session's handle of `object` are worth looking at
    /// before they run ([`Engine::prefetch`]): its kind prefetches, and it holds
    /// [`PREFETCH_FROM`] items or more (a smaller one stays in the cache).
    pub fn worth_prefetching(&self, session: &Session, handles: &mut HandleCache, object: ObjectId) -> bool {
        handles.entry(session, object).is_ok_and(|entry| entry.worth_prefetching())
    }

    /// Lets `object` start loading what calls a connection is about to make on it
    /// through its handle will read ([`SharedObject::prefetch`]), if it is worth it
    /// ([`Engine::worth_prefetching`]) and its lock is free (a prefetch never waits).
    /// Changes nothing; a handle the session does not hold is skipped (its calls report
    /// it).
    pub fn prefetch<'a>(
        &self,
        session: &Session,
        handles: &mut HandleCache,
        object: ObjectId,
        mut calls: impl Iterator<Item = Upcoming<'a>>,
    ) {
        let Ok(entry) = handles.entry(session, object) else { return };
        if !entry.worth_prefetching() {
            return;
        }
        if let Some(state) = entry.try_lock() {
            state.prefetch(&mut calls);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_now(
        &self,
        session: &Session,
        handles: Option<&mut HandleCache>,
        object: ObjectId,
        access: Access,
        method: &str,
        args: Args,
        at: Time,
    ) -> Effects {
        let mut out = Outputs::default();
        // The session's lock is taken only to read its map, never across the call: a
        // session that ends meanwhile is caught under the object's lock (below).
        let held;
        let entry = match (access, handles) {
            (Access::Handle, Some(handles)) => match handles.entry(session, object) {
                Ok(entry) => entry,
                Err(e) => return Effects::unchanged(Err(e)),
            },
            (Access::Handle, None) => match session.state().handle(object) {
                Ok(entry) => {
                    held = entry.clone();
                    &held
                }
                Err(e) => return Effects::unchanged(Err(e)),
            },
            (Access::Id, _) => match self.table.get(object) {
                Ok(entry) => {
                    held = entry;
                    &held
                }
                Err(_) => return Effects::unchanged(Err(self.missing_object(object))),
            },
        };
        // Remembered before the call, so that a session ending from now on finds it
        // (an object that keeps per-session state must hear of the end).
        if access == Access::Id && entry.holds_session_state() {
            session.state().touch(entry);
        }
        let metrics = entry.metrics();
        // Metrics are the engine's, not the objects': timing a call reads the clock
        // only when an endpoint serves them.
        let started = metrics.recording().then(std::time::Instant::now);
        // The method table is fixed for the object's life: the spec is found and the
        // arguments bound before its lock is taken, to keep the critical section short.
        let table_methods = entry.methods();
        let spec_index = table_methods.iter().position(|m| m.name == method);
        let mut stored = Vec::new();
        let result = match spec_index {
            None => Err(table::no_such_method(entry.kind(), method)),
            Some(i) => {
                let spec = &table_methods[i];
                if spec.stores {
                    let args = args.positional.iter().chain(args.keywords.iter().map(|(_, v)| v));
                    args.for_each(|v| referenced_ids(v, &mut stored));
                }
                // Checked in this order so that a call on a small object pays nothing. A
                // slice (`l[a:b]`) walks as many items as it spans: on a big list, all.
                let is_slice = |v: &Value| agora_proto::slice::Slice::from_value(v).is_some();
                let walks = entry.size_hint() >= HEAVY_CALL_ITEMS
                    && (spec.scans || args.positional.first().is_some_and(is_slice));
                bind(spec, args.positional, args.keywords).and_then(|bound| {
                    let run = || {
                        self.drive(entry, true, session.id(), at, &mut out, |o, ctx| {
                            // A session's end marks it ended, then releases what it held
                            // in each of its objects under that object's lock: seen here,
                            // under the same lock, a call either comes before that
                            // release or does not run.
                            if session.is_ended() {
                                return Err(no_such_session(session.id()));
                            }
                            o.call(ctx, method, bound)
                        })
                    };
                    match self.offload.get() {
                        // A call that walks a big object may take long: the embedder's
                        // offload lets its other clients be served meanwhile. Calls
                        // whose work does not grow with the object run inline: handing
                        // the thread over would cost more than they do.
                        Some(offload) if walks => {
                            let mut result = None;
                            let mut once = Some(run);
                            offload(&mut || {
                                if let Some(run) = once.take() {
                                    result = Some(run());
                                }
                            });
                            result.expect("the offload runs the call")?
                        }
                        _ => run()?,
                    }
                })
            }
        };
        // An unknown method changed nothing either.
        let read_only = spec_index.is_none_or(|i| table_methods[i].read_only);
        if let Some(started) = started {
            let outcome = match &result {
                Ok(Outcome::Ready(_)) => CallOutcome::Ready,
                Ok(Outcome::Parked) => CallOutcome::Parked,
                Err(e) => CallOutcome::Failed(e.code),
            };
            let counters = metrics.method(table_methods, spec_index, method);
            metrics.record(counters, started.elapsed(), outcome);
        }
        // Borrowed, not cloned, on the hot path: the entry's reference count is a cache
        // line every worker thread would otherwise write on every call.
        let container = (result.is_ok() && !stored.is_empty()).then(|| entry.clone());
        if let Some(container) = container {
            for id in stored {
                // A reference to an object that is already gone stays a dangling value, as in CPython.
                let _ = self.table.hold(&container, id);
            }
        }
        if !out.moves.is_empty() {
            self.settle_moves(at, &mut out);
        }
        let reply = result.and_then(|outcome| match outcome {
            Outcome::Ready(value) => Ok(Answer::Value(value)),
            Outcome::Parked => out
                .parked
                .take()
                .map(Answer::Parked)
                .ok_or_else(|| WireError::new(ErrorCode::Internal, format!("{method} parked without a ticket"))),
        });
        if let Ok(Answer::Parked(parked)) = &reply {
            let mut st = session.state();
            st.parked.insert(parked.ticket, object);
            st.parked_at.insert(parked.ticket, at);
        }
        if !out.deliveries.is_empty() {
            self.unpark(&out.deliveries);
        }
        Effects { reply, deliveries: out.deliveries, wakeups: out.wakeups, mutated: !read_only, lsn: None }
    }

    fn open(
        &self,
        session: &Session,
        kind: &Kind,
        name: Option<&str>,
        args: Args,
        keep: Keep,
        _at: Time,
    ) -> Result<Answer, WireError> {
        let mut stored = Vec::new();
        args.positional.iter().chain(args.keywords.iter().map(|(_, v)| v)).for_each(|v| referenced_ids(v, &mut stored));
        let (entry, created) = match name {
            Some(name) => {
                let opened = self.table.open_named(&self.counters, kind, name, args.positional, args.keywords)?;
                (opened.entry, opened.created)
            }
            None => (self.table.create(&self.counters, kind, args.positional, args.keywords)?, true),
        };
        if created {
            // `Condition(lock)`: the condition keeps its lock alive, whichever dialect made it.
            for id in stored {
                let _ = self.table.hold(&entry, id);
            }
        }
        let answer = Answer::Opened { object: entry.id(), kind: entry.kind().clone(), created };
        if keep == Keep::Handle {
            self.adopt(session, entry);
        }
        Ok(answer)
    }

    /// Records a handle of `session` to `entry`, which carries one fresh table reference.
    fn adopt(&self, session: &Session, entry: Arc<ObjectEntry>) {
        let mut st = session.state();
        match st.handles.get_mut(&entry.id()) {
            Some(handle) => {
                handle.count += 1;
                // The session already holds a reference for this object.
                drop(st);
                self.table.decref(&entry);
            }
            None => {
                st.handles.insert(entry.id(), session::Handle { entry, count: 1 });
            }
        }
    }

    fn attach(&self, session: &Session, object: ObjectId) -> Result<Answer, WireError> {
        let entry = self.table.incref(object).map_err(|_| self.missing_object(object))?;
        let answer = Answer::Opened { object: entry.id(), kind: entry.kind().clone(), created: false };
        self.adopt(session, entry);
        Ok(answer)
    }

    fn release(&self, session: &Session, object: ObjectId, at: Time, out: &mut Outputs) -> Result<(), WireError> {
        let mut st = session.state();
        let handle = st.handles.get_mut(&object).ok_or_else(|| {
            WireError::new(ErrorCode::NoSuchObject, format!("this session holds no handle to object {object:x}"))
        })?;
        handle.count -= 1;
        if handle.count == 0 {
            let handle = st.handles.remove(&object).expect("present");
            session.note_handle_given_back();
            drop(st);
            // Without a handle the session cannot release what it holds there: do it now.
            let _ =
                self.drive(&handle.entry, false, session.id(), at, out, |o, ctx| o.session_ended(ctx, session.id()));
            self.table.decref(&handle.entry);
        }
        Ok(())
    }

    fn end_session(&self, session: &Session, at: Time, out: &mut Outputs) {
        let id = session.id();
        session.mark_ended();
        self.sessions().remove(&id);
        let (handles, touched) = {
            let mut st = session.state();
            session.note_handle_given_back();
            (std::mem::take(&mut st.handles), std::mem::take(&mut st.touched))
        };
        // In id order, so the same end gives the same deliveries on every replay.
        let mut handles: Vec<_> = handles.into_values().collect();
        handles.sort_by_key(|h| h.entry.id());
        for handle in handles {
            let _ = self.drive(&handle.entry, false, id, at, out, |o, ctx| o.session_ended(ctx, id));
            self.table.decref(&handle.entry);
        }
        let mut touched: Vec<_> = touched.into_values().filter_map(|weak| weak.upgrade()).collect();
        touched.sort_by_key(|e| e.id());
        for entry in touched {
            let _ = self.drive(&entry, false, id, at, out, |o, ctx| o.session_ended(ctx, id));
        }
    }

    /// Every parked call of every open session: (session, object, ticket), in
    /// session and ticket order (a shutdown abandons them before sessions end).
    pub fn parked_calls(&self) -> Vec<(SessionId, ObjectId, Ticket)> {
        let mut sessions: Vec<Session> = self.sessions().values().cloned().collect();
        sessions.sort_by_key(Session::id);
        let mut calls = Vec::new();
        for session in sessions {
            let st = session.state();
            calls.extend(st.parked.iter().map(|(&ticket, &object)| (session.id(), object, ticket)));
        }
        calls
    }

    /// Forgets parked call `ticket` of `session` (answered, expired or abandoned);
    /// `None` if the session is gone (the `Option` lets `Expire` chain on it).
    fn forget_parked(&self, session: SessionId, ticket: Ticket) -> Option<()> {
        let session = self.session(session)?;
        let mut st = session.state();
        st.parked.remove(&ticket);
        st.parked_at.remove(&ticket);
        Some(())
    }

    /// Forgets the parked calls these deliveries answer.
    fn unpark(&self, deliveries: &[Delivery]) {
        for delivery in deliveries {
            let _ = self.forget_parked(delivery.waiter.session, delivery.waiter.ticket);
        }
    }

    /// Ends every session of the previous run and gives back the references their
    /// clients held on anonymous objects, in id order (see [`Command::Restart`]).
    fn restart(&self, at: Time, out: &mut Outputs) {
        let sessions = self.sorted_sessions(SessionId::MAX);
        self.abandon_parked(&sessions, at, out);
        for session in sessions {
            self.end_session(&session, at, out);
        }
        self.drop_client_references(at);
    }

    /// A new cluster leader takes over (see [`Command::Takeover`]).
    fn take_over(&self, at: Time, before: SessionId, until: Time, out: &mut Outputs) {
        let sessions = self.sorted_sessions(before);
        self.abandon_parked(&sessions, at, out);
        for session in sessions {
            if session.secret().is_some() {
                let mut st = session.state();
                // A second leader change before the client came back gives it the time again.
                st.detached_until = Some(st.detached_until.map_or(until, |earlier| earlier.max(until)));
            } else {
                self.end_session(&session, at, out);
            }
        }
    }

    fn resume(&self, id: SessionId, secret: u64) -> Result<Answer, WireError> {
        let refused = |why: &str| {
            Err(WireError::new(ErrorCode::SessionExpired, format!("session {id} cannot be resumed: {why}")))
        };
        let Some(session) = self.session(id) else { return refused("it has ended") };
        if session.secret() != Some(secret) {
            return refused("the secret does not match");
        }
        let mut st = session.state();
        if st.detached_until.take().is_none() {
            return refused("it is not detached (a connection still serves it)");
        }
        Ok(Answer::Session(id))
    }

    /// The open sessions with ids below `before`, in id order.
    fn sorted_sessions(&self, before: SessionId) -> Vec<Session> {
        let mut sessions: Vec<Session> = self.sessions().values().filter(|s| s.id() < before).cloned().collect();
        sessions.sort_by_key(Session::id);
        sessions
    }

    /// Abandons every parked call of `sessions` (their callers are gone), before
    /// anything they hold is released, so that nothing is handed to a caller that no
    /// longer exists.
    fn abandon_parked(&self, sessions: &[Session], at: Time, out: &mut Outputs) {
        for session in sessions {
            let parked = {
                let mut st = session.state();
                st.parked_at.clear();
                std::mem::take(&mut st.parked)
            };
            for (ticket, object) in parked {
                if let Ok(entry) = self.table.get(object) {
                    let id = session.id();
                    let _ = self.drive(&entry, false, id, at, out, |o, ctx| o.abandon(ctx, ticket, None));
                }
            }
        }
    }

    /// Gives back the references clients held on anonymous objects (Python's counted
    /// references; a handle of an open session stays), after a restart.
    fn drop_client_references(&self, at: Time) {
        // Each open session holds one table reference per object it has a handle on.
        let mut handles: IdMap<u64> = IdMap::default();
        for session in self.sessions().values() {
            for &object in session.state().handles.keys() {
                *handles.entry(object).or_default() += 1;
            }
        }
        for entry in self.table.all() {
            if entry.name().is_some() {
                continue;
            }
            // What other objects and open sessions hold stays; what clients held goes
            // with the clients.
            let kept = entry.holders() + handles.get(&entry.id()).copied().unwrap_or(0);
            let client_refs = entry.refcount().saturating_sub(kept);
            for _ in 0..client_refs {
                self.table.decref(&entry);
            }
        }
        *self.restarted() = Some(Restarted { at, first_id: self.counters.values().next_id });
    }

    fn iterate(&self, session: &Session, object: ObjectId, at: Time, out: &mut Outputs) -> Result<Answer, WireError> {
        let dict = self.table.get(object)?;
        let keys = self.drive(&dict, true, session.id(), at, out, |o, ctx| {
            o.call(ctx, "keys", crate::object::Args::from_values("keys", vec![]))
        })??;
        let Outcome::Ready(Value::List(keys)) = keys else {
            return Err(WireError::new(ErrorCode::Internal, "keys() did not return a list"));
        };
        let kind = Kind::Other(iterator::TYPEID.to_owned());
        let it = self.table.adopt(&self.counters, kind.clone(), Box::new(IteratorObject::over(dict.id(), keys)));
        // The iterator keeps its dict alive, as CPython's does.
        let _ = self.table.hold(&it, dict.id());
        Ok(Answer::Opened { object: it.id(), kind, created: true })
    }

    // ---- reads: they change nothing and are not commands ----

    /// The kind of object `id`.
    pub fn kind_of(&self, id: ObjectId) -> Result<Kind, WireError> {
        self.table.get(id).map(|e| e.kind().clone())
    }

    /// What access rules need to know of object `id` and a call of `method` on it: its
    /// name (`None`: anonymous), whether `method` only reads it (an unknown method
    /// counts as a write; the call then fails on its own), and whether it stores its
    /// arguments. A missing object is the error a call would get.
    pub fn access_facts(&self, id: ObjectId, method: &str) -> Result<AccessFacts, WireError> {
        let entry = self.table.get(id).map_err(|_| self.missing_object(id))?;
        let spec = entry.method(method).ok();
        Ok(AccessFacts {
            name: entry.name().map(str::to_owned),
            read_only: spec.is_some_and(|s| s.read_only),
            stores: spec.is_some_and(|s| s.stores),
        })
    }

    /// True if an object is named `name` now.
    pub fn name_exists(&self, name: &str) -> bool {
        self.table.lookup(name).is_ok()
    }

    /// True if object `id` exists now.
    pub fn exists(&self, id: ObjectId) -> bool {
        self.table.get(id).is_ok()
    }

    /// The names of every method of object `id`, in declaration order.
    pub fn method_names(&self, id: ObjectId) -> Result<Vec<&'static str>, WireError> {
        self.table.get(id)?.method_names()
    }

    /// True if object `id` has `method`.
    pub fn has_method(&self, id: ObjectId, method: &str) -> bool {
        self.table.get(id).and_then(|e| e.method(method).map(|_| ())).is_ok()
    }

    /// The Python `repr` of object `id`.
    pub fn repr(&self, id: ObjectId) -> Result<String, WireError> {
        self.table.get(id)?.repr()
    }

    /// A copy of object `id`'s user-visible state, and its typecode (a `Value`).
    pub fn value_of(&self, id: ObjectId) -> Result<(Kind, Value, Option<Value>), WireError> {
        let entry = self.table.get(id)?;
        let state = entry.lock()?;
        Ok((entry.kind().clone(), state.snapshot(), state.typecode()))
    }

    /// A copy of the named object's user-visible state.
    pub fn snapshot_named(&self, name: &str) -> Result<Value, WireError> {
        self.table.lookup(name)?.snapshot()
    }

    /// Named objects, sorted by name.
    pub fn named(&self) -> Vec<ObjectInfo> {
        self.table
            .named()
            .into_iter()
            .filter_map(|entry| {
                let size = entry.size().ok()?.map(|n| n as u64);
                Some(ObjectInfo { name: entry.name()?.to_owned(), kind: entry.kind().clone(), id: entry.id(), size })
            })
            .collect()
    }

    /// Every live object, sorted by id.
    pub fn objects(&self) -> Vec<ObjectSummary> {
        self.table
            .all()
            .into_iter()
            .map(|e| ObjectSummary {
                id: e.id(),
                kind: e.kind().clone(),
                name: e.name().map(str::to_owned),
                refcount: e.refcount(),
                only_held: e.only_held(),
                repr: e.repr().unwrap_or_default(),
            })
            .collect()
    }

    /// How many objects are alive.
    pub fn object_count(&self) -> usize {
        self.table.len()
    }

    /// Counts by kind, for `stats` and metrics.
    pub fn stats(&self) -> RegistryStats {
        self.table.stats()
    }

    /// Who holds object `id` and who waits for it ([`SharedObject::holders`]), with
    /// since when each parked call waits. A Barrier or a custom kind, which do not
    /// describe their waiters, shows the parked calls the sessions have on it.
    pub fn holders(&self, id: ObjectId) -> Result<HolderView, WireError> {
        let entry = self.table.get(id).map_err(|_| self.missing_object(id))?;
        self.holders_of(&entry)
    }

    /// [`Engine::holders`] of the object named `name`.
    pub fn holders_named(&self, name: &str) -> Result<HolderView, WireError> {
        let entry = self.table.lookup(name)?;
        self.holders_of(&entry)
    }

    /// [`Engine::holders`] of every named object that keeps per-session state (locks,
    /// semaphores, queues…) or has a parked call, sorted by name.
    pub fn named_holders(&self) -> Vec<HolderView> {
        self.table
            .named()
            .into_iter()
            .filter_map(|entry| self.holders_of(&entry).ok())
            .filter(|view| view.tracks_holders || !view.waiting.is_empty())
            .collect()
    }

    fn holders_of(&self, entry: &ObjectEntry) -> Result<HolderView, WireError> {
        let described = entry.lock()?.holders();
        let mut waiting: Vec<WaitingCall> = described
            .waiting
            .into_iter()
            .map(|w| WaitingCall { session: w.session, ticket: w.ticket, what: w.what, since: None })
            .collect();
        // Kinds that do not describe their waiters: whatever waits here, in arrival
        // (ticket) order, from the sessions' parked calls.
        if matches!(entry.kind(), Kind::Barrier | Kind::Other(_)) {
            let sessions: Vec<Session> = self.sessions().values().cloned().collect();
            for session in &sessions {
                let st = session.state();
                waiting.extend(st.parked.iter().filter(|(_, &o)| o == entry.id()).map(|(&ticket, _)| WaitingCall {
                    session: session.id(),
                    ticket,
                    what: "call".into(),
                    since: None,
                }));
            }
            waiting.sort_by_key(|w| w.ticket);
        }
        for call in &mut waiting {
            if let Some(session) = self.session(call.session) {
                call.since = session.state().parked_at.get(&call.ticket).copied();
            }
        }
        Ok(HolderView {
            id: entry.id(),
            kind: entry.kind().clone(),
            name: entry.name().map(str::to_owned),
            tracks_holders: entry.holds_session_state(),
            held: described.held,
            waiting,
        })
    }

    /// Marks a parked call on `object` as waiting until the guard drops (the metrics'
    /// waiter gauge and wait-time histogram).
    pub fn waiting(&self, object: ObjectId) -> Option<WaitGuard> {
        self.table.get(object).ok().map(|e| e.metrics().waiting())
    }

    /// The whole state in canonical form (for snapshots and replay checks).
    pub fn canonical_state(&self) -> CanonicalState {
        let objects = self
            .table
            .all()
            .into_iter()
            .map(|e| {
                let state = e.lock_any().map(|s| s.state()).unwrap_or_default();
                let record = ObjectRecord {
                    kind: e.kind().clone(),
                    name: e.name().map(str::to_owned),
                    refs: e.refcount(),
                    holds: e.held_ids(),
                    state,
                };
                (e.id(), record)
            })
            .collect();
        let sessions = self
            .sessions()
            .values()
            .map(|s| {
                let st = s.state();
                let touched = st.touched.iter().filter(|(_, w)| w.strong_count() > 0).map(|(&id, _)| id).collect();
                let record = SessionRecord {
                    handles: st.handle_counts(),
                    touched,
                    parked: st.parked.clone(),
                    secret: s.secret(),
                    detached_until: st.detached_until,
                };
                (s.id(), record)
            })
            .collect();
        CanonicalState { counters: self.counters.values(), objects, names: self.table.names_map(), sessions }
    }
}

/// What a call's or constructor's arguments would add to the server once stored.
fn footprint(args: &Args) -> u64 {
    let values = args.positional.iter().chain(args.keywords.iter().map(|(_, v)| v));
    values.map(|v| v.footprint() as u64).sum()
}

fn no_such_session(id: SessionId) -> WireError {
    WireError::new(ErrorCode::SessionExpired, format!("session {id} is not open (it ended or never existed)"))
}

/// What [`Engine::access_facts`] tells the access rules about an object and a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFacts {
    /// The object's name; `None` for an anonymous object.
    pub name: Option<String>,
    /// The method only reads the object.
    pub read_only: bool,
    /// The method keeps its arguments (and the objects they reference) in the object.
    pub stores: bool,
}

#[cfg(test)]
mod tests;
