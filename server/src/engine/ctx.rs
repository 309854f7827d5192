//! The context an object is driven with: the only window an object has on the world.
//!
//! Object code gets `now` from the command being applied, fresh tickets and fencing
//! tokens from the engine's counters, and reports what it did beyond its answer —
//! a parked call, deliveries to parked callers, a wake-up it wants, an item it hands
//! to another object by name ([`Move`]) — through the context, which the engine turns
//! into [`Effects`](super::Effects) (or, for a move, carries out itself). An object
//! never reads a clock, spawns a task, touches a channel, or looks in the object table;
//! the one other object it may drive (a Condition's shared lock, a dict iterator's
//! dict) is handed to it here, already locked, by the engine.

use std::sync::atomic::{AtomicU64, Ordering};

use agora_proto::native::{Kind, ObjectId};
use agora_proto::Value;
use serde::{Deserialize, Serialize};

use super::clock::Time;
use super::waiter::{Completion, Delivery, Parked, Reclaim, SessionId, Waiter};
use crate::object::SharedObject;

/// The engine's counters: object ids, tickets, fencing tokens and session ids. They
/// only grow, and they are part of the engine's state (saved and restored with it),
/// never process-global statics.
#[derive(Debug)]
pub struct Counters {
    next_id: AtomicU64,
    next_ticket: AtomicU64,
    next_token: AtomicU64,
    next_session: AtomicU64,
}

/// The counters' values, for snapshots and state comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterValues {
    /// The next object id.
    pub next_id: u64,
    /// The next ticket.
    pub next_ticket: u64,
    /// The next fencing token.
    pub next_token: u64,
    /// The next session id.
    pub next_session: u64,
}

impl Counters {
    /// Counters that start at `values`.
    pub fn new(values: CounterValues) -> Counters {
        Counters {
            next_id: AtomicU64::new(values.next_id),
            next_ticket: AtomicU64::new(values.next_ticket),
            next_token: AtomicU64::new(values.next_token),
            next_session: AtomicU64::new(values.next_session),
        }
    }

    /// Counters for a fresh engine: every counter at 1, but object ids at `first_id`
    /// (the engine starts them at a random offset so a client of an earlier server
    /// cannot hit a new object by accident).
    pub fn starting_ids_at(first_id: u64) -> Counters {
        Counters::new(CounterValues { next_id: first_id.max(1), next_ticket: 1, next_token: 1, next_session: 1 })
    }

    /// The current values.
    pub fn values(&self) -> CounterValues {
        CounterValues {
            next_id: self.next_id.load(Ordering::Relaxed),
            next_ticket: self.next_ticket.load(Ordering::Relaxed),
            next_token: self.next_token.load(Ordering::Relaxed),
            next_session: self.next_session.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter to `values` (a replica taking its leader's state).
    pub fn set(&self, values: CounterValues) {
        self.next_id.store(values.next_id, Ordering::Relaxed);
        self.next_ticket.store(values.next_ticket, Ordering::Relaxed);
        self.next_token.store(values.next_token, Ordering::Relaxed);
        self.next_session.store(values.next_session, Ordering::Relaxed);
    }

    /// A new object id.
    pub fn object_id(&self) -> ObjectId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new ticket.
    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// A new fencing token: larger than every token handed out before. Taken under
    /// the granting object's lock, so one object's tokens strictly increase.
    pub fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// A new session id.
    pub fn session(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// What an object did besides answering its caller.
#[derive(Debug, Default)]
pub struct Outputs {
    /// The caller's call was parked (at most one per command).
    pub parked: Option<Parked>,
    /// Answers for parked calls, in the order they were handed out.
    pub deliveries: Vec<Delivery>,
    /// Objects that asked to be woken (a `Tick` command) at a time.
    pub wakeups: Vec<(ObjectId, Time)>,
    /// Items objects handed to other, named, objects (a queue's dead letters), in the
    /// order they were handed: the engine moves them before the command ends.
    pub moves: Vec<Move>,
}

/// An item one object hands to another by name ([`Ctx::move_to`]): objects never see
/// the table, so the engine finds (or creates) the target and gives it the item
/// ([`SharedObject::receive_moved`](crate::object::SharedObject::receive_moved)) within
/// the same command; if the target cannot take it, it goes back to its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The object that handed the item out.
    pub from: ObjectId,
    /// The name of the object that receives it.
    pub to: String,
    /// The kind the target is created with if no object has that name.
    pub kind: Kind,
    /// The item.
    pub item: Value,
}

/// One object's view of the command being applied.
pub struct Ctx<'a> {
    now: Time,
    caller: SessionId,
    object: ObjectId,
    counters: &'a Counters,
    out: &'a mut Outputs,
    linked: Option<&'a mut dyn SharedObject>,
}

impl<'a> Ctx<'a> {
    /// A context for a command of session `caller` applied to `object` at `now`.
    pub fn new(
        now: Time,
        caller: SessionId,
        object: ObjectId,
        counters: &'a Counters,
        out: &'a mut Outputs,
        linked: Option<&'a mut dyn SharedObject>,
    ) -> Ctx<'a> {
        Ctx { now, caller, object, counters, out, linked }
    }

    /// The time of the command being applied.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The session the command came from (for engine-made commands such as an
    /// expiry, the session of the call concerned).
    pub fn caller(&self) -> SessionId {
        self.caller
    }

    /// The object being driven.
    pub fn object(&self) -> ObjectId {
        self.object
    }

    /// Parks the caller's call until `deadline` (`None`: no deadline). The object
    /// keeps the returned waiter and answers the call later with [`Ctx::deliver`];
    /// its `call` returns [`Outcome::Parked`](crate::object::Outcome::Parked).
    pub fn park(&mut self, deadline: Option<Time>) -> Waiter {
        let ticket = self.counters.ticket();
        self.out.parked = Some(Parked { ticket, deadline });
        Waiter { ticket, session: self.caller, object: self.object }
    }

    /// Answers a parked call; `reclaim` says how to take the answer back if the
    /// caller turns out to be gone.
    pub fn deliver(&mut self, waiter: Waiter, completion: Completion, reclaim: Reclaim) {
        self.out.deliveries.push(Delivery { waiter, completion, reclaim });
    }

    /// A new fencing token.
    pub fn token(&mut self) -> u64 {
        self.counters.token()
    }

    /// Asks for a `Tick` of this object at `at` (a queue's next lease deadline). A
    /// tick may come late or more than once; the object checks what is due.
    pub fn wake_at(&mut self, at: Time) {
        self.out.wakeups.push((self.object, at));
    }

    /// Hands `item` to the object named `to` (created as a `kind` if missing): the
    /// engine moves it before this command ends. The object must already have let
    /// go of the item; if the target cannot take it, the engine gives it back
    /// ([`SharedObject::receive_moved`](crate::object::SharedObject::receive_moved) on
    /// this object, with `returned` set), so it is never lost.
    pub fn move_to(&mut self, to: &str, kind: Kind, item: Value) {
        self.out.moves.push(Move { from: self.object, to: to.to_owned(), kind, item });
    }

    /// Runs `f` on the other object this one drives (see
    /// [`SharedObject::linked`](crate::object::SharedObject::linked)), already locked
    /// by the engine; `None` if there is none.
    pub fn with_linked<R>(&mut self, f: impl FnOnce(&mut dyn SharedObject, &mut Ctx<'a>) -> R) -> Option<R> {
        let linked = self.linked.take()?;
        let result = f(&mut *linked, self);
        self.linked = Some(linked);
        Some(result)
    }
}

/// Everything a context borrows, owned in one place: for driving an object without an
/// engine (the object kinds' unit tests).
#[derive(Debug)]
pub struct Harness {
    /// The counters the contexts draw from.
    pub counters: Counters,
    /// What the objects did.
    pub out: Outputs,
    /// The time the contexts report.
    pub now: Time,
}

impl Default for Harness {
    fn default() -> Self {
        Harness { counters: Counters::starting_ids_at(1), out: Outputs::default(), now: Time(1_000_000) }
    }
}

impl Harness {
    /// A context for `session` driving object 1 (no linked object).
    pub fn ctx(&mut self, session: SessionId) -> Ctx<'_> {
        Ctx::new(self.now, session, 1, &self.counters, &mut self.out, None)
    }

    /// A context for `session` driving object 1 with `linked` as its linked object.
    pub fn ctx_linked<'a>(&'a mut self, session: SessionId, linked: &'a mut dyn SharedObject) -> Ctx<'a> {
        Ctx::new(self.now, session, 1, &self.counters, &mut self.out, Some(linked))
    }

    /// Takes the deliveries made so far.
    pub fn deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.out.deliveries)
    }

    /// The delivery made to `ticket` so far, if any (others are kept).
    pub fn delivered_to(&mut self, ticket: u64) -> Option<Delivery> {
        let i = self.out.deliveries.iter().position(|d| d.waiter.ticket == ticket)?;
        Some(self.out.deliveries.remove(i))
    }

    /// Takes the last parked call's record.
    pub fn parked(&mut self) -> Option<Parked> {
        self.out.parked.take()
    }

    /// Moves the clock on by `secs` seconds.
    pub fn advance(&mut self, secs: f64) {
        self.now = self.now.after_secs(secs).expect("small step");
    }
}
