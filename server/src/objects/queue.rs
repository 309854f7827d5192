//! The shared `Queue` and `JoinableQueue` (Python's `SyncManager.Queue()` and
//! `.JoinableQueue()`): CPython's `queue.Queue` semantics and error texts, with
//! hand-offs that never lose or duplicate an item, plus agora's reliable consumption
//! (leases).
//!
//! Both typeids are the same class in CPython (`queue.Queue(maxsize=0)`), so they are
//! one implementation here too; only the kind's name differs, and both have
//! `task_done` and `join`.
//!
//! # Python semantics (3.13)
//!
//! `put(item, block=True, timeout=None)`, `put_nowait`, `get(block=True,
//! timeout=None)`, `get_nowait`, `qsize`, `empty`, `full`, `task_done`, `join` and
//! `shutdown(immediate=False)` behave as CPython 3.13's, checked in the same order
//! with the same errors: `queue.Empty`, `queue.Full`, `queue.ShutDown`,
//! `ValueError("'timeout' must be a non-negative number")`,
//! `ValueError('task_done() called too many times')`, and the `TypeError`s CPython
//! raises for a timeout or maxsize that is not a number. `maxsize <= 0` means
//! unbounded.
//!
//! Where agora differs: a NaN timeout raises the negative-timeout `ValueError` when the
//! call would wait (CPython waits forever, or spins); a far-future timeout means
//! forever. Blocked callers are served strictly in arrival order (CPython's condition
//! variables give the same order, but a caller arriving just then can barge in there).
//!
//! # Hand-offs
//!
//! Blocked getters, putters and joiners wait as [`Waiter`]s (plain data: ticket,
//! session, object), kept by ticket, so in arrival order. The queue answers them with
//! [`Ctx::deliver`], and every delivery names what to take back should it never reach
//! its caller ([`Reclaim`]):
//!
//! - an item goes to the first waiting getter: a `get` receives it with
//!   [`Reclaim::Item`]; a `get_leased` receives `(receipt, item)` with
//!   [`Reclaim::Lease`]`(receipt)`, the lease keeping the item;
//! - a blocked `put` keeps its item inside its waiter; when room appears the item is
//!   inserted and the putter answered `None` ([`Reclaim::Nothing`]). A put whose
//!   caller left while it still waited (timed out, cancelled, disconnected) is removed
//!   by its abandon and its item never goes in. If the caller leaves at the very
//!   moment its put is served, the item stays in the queue: nothing is lost, and the
//!   put happened at least once from the putter's side;
//! - a served `join` answers `None`, and errors (`ShutDown`, timeouts) carry nothing
//!   back either ([`Reclaim::Nothing`]).
//!
//! When a delivery never reached its caller, [`SharedObject::abandon`] brings back
//! exactly what its reclaim names: an item goes back to the head of the queue (a
//! `None` item too: the reclaim, not the value, says it is an item), and a lease that
//! is still held ends with its item back at the head; a lease that was already acked,
//! nacked or expired gives back nothing. The queue keeps no memory of past hand-offs.
//!
//! # Leases (agora only)
//!
//! `get_leased(block=True, timeout=None, lease=30.0)` answers `(receipt, item)` and
//! records a lease: the item is out of the queue (not counted by `qsize`) but not
//! finished. `ack(receipt)` finishes it and counts as one `task_done`;
//! `nack(receipt)` puts the item back at the head of the queue; `renew(receipt,
//! lease=30.0)` restarts its clock from now. A lease whose time runs out, or whose
//! session ends (close, crash, SIGKILL, heartbeat timeout), puts its item back at the
//! head, to be delivered again with a new receipt. `lease=None` means no clock: the
//! lease lasts until ack, nack or the end of its session.
//!
//! A lease's clock is the server's one timer, through [`Ctx::wake_at`] and
//! [`SharedObject::tick`]: the queue asks to be woken at the earliest lease deadline
//! whenever a deadline earlier than all the others appears, and each tick returns the
//! leases due at its `now` and asks again for the next deadline. A mutating call also
//! returns the leases due at its own `now` before anything else sees the queue
//! (read-only calls change nothing, so they leave that to the next tick or call).
//!
//! Receipts are small ints, unique per queue and never reused, so a receipt names one
//! delivery: after a lease expired and its item was delivered again, the old receipt
//! is dead and acking it fails with `ValueError("lease N is not held: …")`. Any
//! session may ack or nack a receipt (like a Python lock, a lease is not owned); the
//! session that took it is only what ends it when that session ends.
//!
//! Leased items are unfinished tasks: `join` waits for their ack. Do not also call
//! `task_done` for a leased item (`ack` already counts). `ack` never raises the
//! task_done error: it finishes the lease and lowers the count if it is above zero.
//!
//! `unget(item)` puts an item back at the head without counting a new task: the
//! client uses it to give back an item whose reply arrived after its caller stopped
//! waiting. `leased()` answers how many leases are outstanding.
//!
//! # Delivery counts, delayed nacks and dead letters (agora only)
//!
//! Every item remembers how many times it was delivered on lease: `get_leased` counts
//! one, and a nack, an expired lease or the end of the lease's session returns the item
//! with its count (`deliveries(receipt)` answers it for a held lease). A lease handed
//! to a caller that never received it does not count; an item taken by a plain `get`
//! leaves reliable consumption and, if it comes back (`unget`, an undelivered get),
//! comes back as new.
//!
//! `Queue(maxsize=0, max_deliveries=N, dead_letter="name")` (both or neither): an item
//! delivered N times that comes back moves to the queue named `dead_letter` instead of
//! the head of this one — a finished task here, a new one there, at its tail whatever
//! its maxsize. The queue never sees the table: it hands the item out through
//! [`Ctx::move_to`], and the engine gives it to that queue (creating a plain `Queue` of
//! that name if there is none) within the same command, or back to this one if the
//! name belongs to another kind; nothing is dropped.
//!
//! `nack(receipt, delay=None)`: with a delay (seconds), the item waits out of the queue
//! (not in `qsize`, counted by `delayed()`, still an unfinished task) and goes back to
//! the head when the delay is over — through the same wake-ups as lease deadlines. An
//! item that is due for the dead letter queue goes there at once; an immediate
//! shutdown drops delayed items as done, as it does queued ones.
//!
//! Items that come back (nack, expired or ended leases, unget, abandoned deliveries)
//! may take the queue above `maxsize` for a while; puts then wait until it is below
//! again. After `shutdown()` they still go back and can be drained by `get`; after
//! `shutdown(immediate=True)` they are dropped and counted as done, as the immediate
//! shutdown did for the items it drained.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};
use num_traits::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::engine::{deadline_after, Ctx, Reclaim, SessionId, Ticket, Time, Undelivered, Waiter};
use crate::object::{
    encode_state, Args, Holders, Holding, MethodSpec, Outcome, SharedObject, StateCapture, Waiting, CAPTURE_FROM,
    VEC_WRITE,
};

/// The kind's constructor and methods, declared in [`agora_proto::methods::queue`].
pub use agora_proto::methods::queue::CONSTRUCTOR;
use agora_proto::methods::queue::METHODS;

/// CPython's message for a negative timeout.
const NEGATIVE_TIMEOUT: &str = "'timeout' must be a non-negative number";
/// agora's message for a lease that is not a positive number.
const BAD_LEASE: &str = "'lease' must be a positive number or None";
/// CPython's message for one `task_done` too many.
const TOO_MANY_TASK_DONE: &str = "task_done() called too many times";
/// How long a lease lasts when the caller does not say.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// agora's message for a nack delay that is not a non-negative number.
const BAD_DELAY: &str = "'delay' must be a non-negative number or None";

/// How many items fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Capacity {
    /// `maxsize <= 0` (or not below infinity).
    Unbounded,
    /// Full at this many items.
    Bounded(usize),
    /// A maxsize Python cannot compare with 0 (its type name): `put` and `full` raise
    /// CPython's `TypeError`, everything else works, as in CPython.
    Invalid(String),
}

impl Capacity {
    fn from_maxsize(maxsize: Value) -> Capacity {
        let bounded = |n: f64| {
            // `qsize >= maxsize` for a fractional maxsize means `qsize >= ceil(maxsize)`.
            if n > 0.0 && n.is_finite() && n < usize::MAX as f64 {
                Capacity::Bounded(n.ceil() as usize)
            } else {
                Capacity::Unbounded
            }
        };
        match maxsize {
            Value::Bool(b) => bounded(f64::from(u8::from(b))),
            Value::Int(n) => bounded(n as f64),
            Value::BigInt(n) => bounded(n.to_f64().unwrap_or(f64::INFINITY)),
            Value::Float(f) => bounded(f),
            other => Capacity::Invalid(other.type_name().to_owned()),
        }
    }
}

/// How long a lease lasts: `None` means until ack, nack or the end of its session.
type LeaseTerm = Option<Duration>;

/// What a parked getter takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Takes {
    /// `get`: the item.
    Item,
    /// `get_leased`: a lease on the item, with this term.
    Lease(LeaseTerm),
}

/// A parked `get` or `get_leased`.
#[derive(Debug, Serialize, Deserialize)]
struct Getter {
    waiter: Waiter,
    takes: Takes,
}

/// A parked `put`: the item stays here until it can be inserted.
#[derive(Debug, Serialize, Deserialize)]
struct Putter {
    waiter: Waiter,
    item: Value,
}

/// An item out on lease.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    item: Value,
    /// The session that took it; its end returns the item.
    session: SessionId,
    /// When it expires (`None`: never).
    deadline: Option<Time>,
    /// How many times the item was delivered, this delivery included.
    #[serde(default)]
    deliveries: u32,
    /// When it was leased.
    #[serde(default)]
    since: Time,
}

/// A nacked item waiting out its delay before it goes back to the queue.
#[derive(Debug, Serialize, Deserialize)]
struct Delayed {
    item: Value,
    /// How many times it was delivered so far.
    deliveries: u32,
}

/// Where items that keep failing go: after `max_deliveries` deliveries, an item that
/// comes back (nack, expired lease, its session's end) moves to the queue named
/// `dead_letter` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeadLetter {
    max_deliveries: u32,
    queue: String,
}

/// A shared queue (`Queue` or `JoinableQueue`).
#[derive(Debug, Serialize, Deserialize)]
pub struct QueueObject {
    kind: Kind,
    capacity: Capacity,
    items: VecDeque<Value>,
    /// How many times each item in `items` was delivered before (same order, same
    /// length; see [`QueueObject::normalized`]).
    #[serde(default)]
    deliveries: VecDeque<u32>,
    /// Python's `unfinished_tasks`.
    unfinished: u64,
    shut_down: bool,
    /// `shutdown(immediate=True)` happened: returning items are dropped as done.
    immediate: bool,
    /// Parked calls by ticket. Tickets only grow, so ticket order is arrival order.
    getters: BTreeMap<Ticket, Getter>,
    putters: BTreeMap<Ticket, Putter>,
    joiners: BTreeMap<Ticket, Waiter>,
    /// Outstanding leases by receipt.
    leases: BTreeMap<u64, Lease>,
    /// Lease deadlines, earliest first.
    deadlines: BTreeSet<(Time, u64)>,
    next_receipt: u64,
    /// Nacked items waiting out their delay, by (when they come back, their receipt).
    #[serde(default)]
    delayed: BTreeMap<(Time, u64), Delayed>,
    /// Where items that keep failing go, if anywhere.
    #[serde(default)]
    dead_letter: Option<DeadLetter>,
    /// A snapshot's capture of the items being read out, if any (not state).
    #[serde(skip)]
    capture: Option<Box<ItemsCapture>>,
}

/// A running capture of a queue's state ([`SharedObject::begin_state`]): the items
/// and their delivery counts as they were when it began, read out while the queue
/// changes, then the rest of the state as it was encoded then.
///
/// Items change only at the ends (`push_back`, `push_front`, `pop_front`), so the
/// original items still queued are one run in the middle of `items`, after the
/// `pushed_front` items put back at the head since; an original popped before its
/// delivery count was read out is kept in `popped`.
#[derive(Debug)]
struct ItemsCapture {
    /// How many items there were: positions `0..len` read out the items, `len..2 len`
    /// their delivery counts.
    len: usize,
    /// The next position to read out.
    cursor: usize,
    /// Originals popped since (the first ones of the `len`).
    originals_popped: usize,
    /// Items pushed at the head since and still before the first original left.
    pushed_front: usize,
    /// Originals popped before they were read out in full, by index.
    popped: BTreeMap<usize, (Value, u32)>,
    /// The encoding between the items and their counts (`deliveries` and its length).
    middle: Vec<u8>,
    /// The state's encoding after the counts, taken when the capture began.
    rest: Vec<u8>,
}

impl QueueObject {
    /// `Queue(maxsize=0, max_deliveries=None, dead_letter=None)` for `kind` (`Queue`
    /// or `JoinableQueue`). `max_deliveries` and `dead_letter` go together: an item
    /// delivered that many times that comes back moves to the queue of that name.
    pub fn new(kind: Kind, mut args: Args) -> Result<QueueObject, WireError> {
        let capacity = Capacity::from_maxsize(args.or(0, Value::Int(0)));
        let dead_letter = dead_letter_args(args.take(1), args.take(2))?;
        Ok(QueueObject {
            kind,
            capacity,
            items: VecDeque::new(),
            deliveries: VecDeque::new(),
            unfinished: 0,
            shut_down: false,
            immediate: false,
            getters: BTreeMap::new(),
            putters: BTreeMap::new(),
            joiners: BTreeMap::new(),
            leases: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_receipt: 1,
            delayed: BTreeMap::new(),
            dead_letter,
            capture: None,
        })
    }

    /// This queue with one delivery count per item: a state written before counts
    /// existed reads back with none, and its items count as never delivered.
    pub fn normalized(mut self) -> QueueObject {
        self.deliveries.resize(self.items.len(), 0);
        self
    }

    /// Adds an item at the tail with its delivery count.
    fn push_back(&mut self, item: Value, deliveries: u32) {
        self.items.push_back(item);
        self.deliveries.push_back(deliveries);
    }

    /// Adds an item at the head with its delivery count.
    fn push_front(&mut self, item: Value, deliveries: u32) {
        self.items.push_front(item);
        self.deliveries.push_front(deliveries);
        if let Some(capture) = self.capture.as_deref_mut() {
            capture.pushed_front += 1;
        }
    }

    /// Takes the item at the head with its delivery count.
    fn pop_front(&mut self) -> Option<(Value, u32)> {
        let item = self.items.pop_front()?;
        let popped = (item, self.deliveries.pop_front().unwrap_or(0));
        if let Some(capture) = self.capture.as_deref_mut() {
            if capture.pushed_front > 0 {
                capture.pushed_front -= 1;
            } else if capture.originals_popped < capture.len {
                // An original: kept if its delivery count is still to be read out.
                let index = capture.originals_popped;
                capture.originals_popped += 1;
                if capture.cursor <= capture.len + index {
                    capture.popped.insert(index, popped.clone());
                }
            }
        }
        Some(popped)
    }

    /// The canonical state in three parts: up to the items (with their count), from
    /// `deliveries` up to its counts (without them), and the fields after it. Between
    /// them go the items and the counts. `None` past `u32::MAX` items (serde writes it).
    fn state_parts(&self) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        fn field<T: Serialize>(out: &mut Vec<u8>, name: &str, value: &T) {
            rmp::encode::write_str(out, name).expect(VEC_WRITE);
            rmp_serde::encode::write_named(out, value).expect("a queue's fields encode");
        }
        let len = u32::try_from(self.items.len()).ok()?;
        // As long as `items` but in a state from before counts (see `normalized`).
        let counts = u32::try_from(self.deliveries.len()).ok()?;
        let mut head = Vec::with_capacity(64 + 16 * self.items.len());
        rmp::encode::write_map_len(&mut head, 15).expect(VEC_WRITE);
        field(&mut head, "kind", &self.kind);
        field(&mut head, "capacity", &self.capacity);
        rmp::encode::write_str(&mut head, "items").expect(VEC_WRITE);
        rmp::encode::write_array_len(&mut head, len).expect(VEC_WRITE);
        let mut middle = Vec::new();
        rmp::encode::write_str(&mut middle, "deliveries").expect(VEC_WRITE);
        rmp::encode::write_array_len(&mut middle, counts).expect(VEC_WRITE);
        let mut rest = Vec::new();
        field(&mut rest, "unfinished", &self.unfinished);
        field(&mut rest, "shut_down", &self.shut_down);
        field(&mut rest, "immediate", &self.immediate);
        field(&mut rest, "getters", &self.getters);
        field(&mut rest, "putters", &self.putters);
        field(&mut rest, "joiners", &self.joiners);
        field(&mut rest, "leases", &self.leases);
        field(&mut rest, "deadlines", &self.deadlines);
        field(&mut rest, "next_receipt", &self.next_receipt);
        field(&mut rest, "delayed", &self.delayed);
        field(&mut rest, "dead_letter", &self.dead_letter);
        Some((head, middle, rest))
    }

    /// One delivery count as serde writes a `u32`.
    fn write_count(out: &mut Vec<u8>, count: u32) {
        rmp::encode::write_uint(out, u64::from(count)).expect(VEC_WRITE);
    }

    fn dispatch_call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        let ready = |v: Value| Ok(Outcome::Ready(v));
        match method {
            "put" => {
                let item = args.required(0);
                let block = args.bool_or(1, true);
                self.put(ctx, item, block, args.take(2))
            }
            "put_nowait" => self.put(ctx, args.required(0), false, None),
            "get" => {
                let block = args.bool_or(0, true);
                self.get(ctx, block, args.take(1), None)
            }
            "get_nowait" => self.get(ctx, false, None, None),
            "get_leased" => {
                let term = lease_term(args.take(2))?;
                let block = args.bool_or(0, true);
                self.get(ctx, block, args.take(1), Some(term))
            }
            "qsize" => ready(Value::Int(self.items.len() as i64)),
            "empty" => ready(Value::Bool(self.items.is_empty())),
            "full" => self.full().map(Value::Bool).map(Outcome::Ready),
            "task_done" => self.task_done(ctx).map(Outcome::Ready),
            "join" => Ok(self.join(ctx)),
            "shutdown" => {
                self.shutdown(ctx, args.bool_or(0, false));
                ready(Value::None)
            }
            "ack" => self.ack(ctx, receipt_arg(args.required(0))?).map(Outcome::Ready),
            "nack" => {
                let receipt = receipt_arg(args.required(0))?;
                let delay = delay_arg(args.take(1))?;
                self.nack(ctx, receipt, delay).map(Outcome::Ready)
            }
            "renew" => {
                let receipt = receipt_arg(args.required(0))?;
                let term = lease_term(args.take(1))?;
                self.renew(ctx, receipt, term).map(Outcome::Ready)
            }
            "unget" => {
                self.return_items(ctx, vec![(args.required(0), 0)]);
                ready(Value::None)
            }
            "leased" => ready(Value::Int(self.leases.len() as i64)),
            "delayed" => ready(Value::Int(self.delayed.len() as i64)),
            "deliveries" => {
                let receipt = receipt_arg(args.required(0))?;
                let lease = self.leases.get(&receipt).ok_or_else(|| not_held(receipt))?;
                ready(Value::Int(i64::from(lease.deliveries)))
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Queue has no method '{other}'"))),
        }
    }

    /// CPython's `put`, in CPython's order of checks.
    fn put(
        &mut self,
        ctx: &mut Ctx<'_>,
        item: Value,
        block: bool,
        timeout: Option<Value>,
    ) -> Result<Outcome, WireError> {
        if self.shut_down {
            return Err(shut_down());
        }
        let capacity = match &self.capacity {
            Capacity::Invalid(type_name) => {
                return Err(WireError::type_error(format!(
                    "'>' not supported between instances of '{type_name}' and 'int'"
                )))
            }
            Capacity::Unbounded => None,
            Capacity::Bounded(n) => Some(*n),
        };
        if let Some(capacity) = capacity {
            let full = self.items.len() >= capacity;
            if !block {
                if full {
                    return Err(full_error());
                }
            } else {
                let timeout = timeout_secs(timeout)?;
                if timeout.is_some_and(|t| t < 0.0) {
                    return Err(WireError::value_error(NEGATIVE_TIMEOUT));
                }
                if full {
                    if timeout == Some(0.0) {
                        return Err(full_error());
                    }
                    let deadline = deadline_after(ctx.now(), timeout, NEGATIVE_TIMEOUT)?;
                    let waiter = ctx.park(deadline);
                    self.putters.insert(waiter.ticket, Putter { waiter, item });
                    return Ok(Outcome::Parked);
                }
            }
        }
        self.push_back(item, 0);
        self.unfinished += 1;
        self.dispatch(ctx);
        Ok(Outcome::Ready(Value::None))
    }

    /// CPython's `get` (and agora's `get_leased` when `lease` is given).
    fn get(
        &mut self,
        ctx: &mut Ctx<'_>,
        block: bool,
        timeout: Option<Value>,
        lease: Option<LeaseTerm>,
    ) -> Result<Outcome, WireError> {
        if self.shut_down && self.items.is_empty() {
            return Err(shut_down());
        }
        let mut timeout_given = None;
        if !block {
            if self.items.is_empty() {
                return Err(empty());
            }
        } else {
            timeout_given = timeout_secs(timeout)?;
            if timeout_given.is_some_and(|t| t < 0.0) {
                return Err(WireError::value_error(NEGATIVE_TIMEOUT));
            }
        }
        if let Some((item, deliveries)) = self.pop_front() {
            let value = match lease {
                None => item,
                Some(term) => self.lease_out(ctx, item, deliveries, ctx.caller(), term).1,
            };
            // Room appeared: a waiting putter may go in.
            self.dispatch(ctx);
            return Ok(Outcome::Ready(value));
        }
        if timeout_given == Some(0.0) {
            return Err(empty());
        }
        let deadline = deadline_after(ctx.now(), timeout_given, NEGATIVE_TIMEOUT)?;
        let waiter = ctx.park(deadline);
        let takes = lease.map_or(Takes::Item, Takes::Lease);
        self.getters.insert(waiter.ticket, Getter { waiter, takes });
        Ok(Outcome::Parked)
    }

    /// CPython's `full()`: `0 < maxsize <= qsize()`.
    fn full(&self) -> Result<bool, WireError> {
        match &self.capacity {
            Capacity::Unbounded => Ok(false),
            Capacity::Bounded(n) => Ok(self.items.len() >= *n),
            Capacity::Invalid(type_name) => {
                Err(WireError::type_error(format!("'<' not supported between instances of 'int' and '{type_name}'")))
            }
        }
    }

    fn task_done(&mut self, ctx: &mut Ctx<'_>) -> Result<Value, WireError> {
        if self.unfinished == 0 {
            return Err(WireError::value_error(TOO_MANY_TASK_DONE));
        }
        self.finish_one(ctx);
        Ok(Value::None)
    }

    /// One task finished (never below zero); joiners go at zero.
    fn finish_one(&mut self, ctx: &mut Ctx<'_>) {
        if self.unfinished > 0 {
            self.unfinished -= 1;
            if self.unfinished == 0 {
                self.release_joiners(ctx);
            }
        }
    }

    fn join(&mut self, ctx: &mut Ctx<'_>) -> Outcome {
        if self.unfinished == 0 {
            return Outcome::Ready(Value::None);
        }
        let waiter = ctx.park(None);
        self.joiners.insert(waiter.ticket, waiter);
        Outcome::Parked
    }

    fn release_joiners(&mut self, ctx: &mut Ctx<'_>) {
        for (_, waiter) in std::mem::take(&mut self.joiners) {
            ctx.deliver(waiter, Ok(Value::None), Reclaim::Nothing);
        }
    }

    /// CPython 3.13's `shutdown(immediate)`: puts fail from now on, gets fail once the
    /// queue is empty (at once if immediate, which drains it as done tasks). Blocked
    /// getters and putters get `ShutDown`; joiners go if nothing is unfinished.
    fn shutdown(&mut self, ctx: &mut Ctx<'_>, immediate: bool) {
        self.shut_down = true;
        if immediate {
            self.immediate = true;
            while self.pop_front().is_some() {
                self.unfinished = self.unfinished.saturating_sub(1);
            }
            // Nacked items waiting out a delay would be dropped when due: drop them now,
            // so a join does not wait for their delay.
            for _ in std::mem::take(&mut self.delayed) {
                self.unfinished = self.unfinished.saturating_sub(1);
            }
            if self.unfinished == 0 {
                self.release_joiners(ctx);
            }
        }
        // Getters only wait on an empty queue, so they all raise; putters always raise.
        for (_, getter) in std::mem::take(&mut self.getters) {
            ctx.deliver(getter.waiter, Err(shut_down()), Reclaim::Nothing);
        }
        for (_, putter) in std::mem::take(&mut self.putters) {
            ctx.deliver(putter.waiter, Err(shut_down()), Reclaim::Nothing);
        }
    }

    /// Makes `item` (delivered `deliveries` times before) a lease of `session`;
    /// returns its receipt and what the caller receives (`(receipt, item)`: the reply
    /// carries a copy, the lease keeps the item).
    fn lease_out(
        &mut self,
        ctx: &mut Ctx<'_>,
        item: Value,
        deliveries: u32,
        session: SessionId,
        term: LeaseTerm,
    ) -> (u64, Value) {
        let receipt = self.next_receipt;
        self.next_receipt += 1;
        let reply = Value::Tuple(vec![Value::Int(receipt as i64), item.clone()]);
        let deadline = term.and_then(|d| ctx.now().after(d));
        let deliveries = deliveries.saturating_add(1);
        self.leases.insert(receipt, Lease { item, session, deadline, deliveries, since: ctx.now() });
        if let Some(deadline) = deadline {
            self.schedule(ctx, deadline, receipt);
        }
        (receipt, reply)
    }

    /// Removes a lease and its deadline.
    fn take_lease(&mut self, receipt: u64) -> Option<Lease> {
        let lease = self.leases.remove(&receipt)?;
        if let Some(deadline) = lease.deadline {
            self.deadlines.remove(&(deadline, receipt));
        }
        Some(lease)
    }

    fn ack(&mut self, ctx: &mut Ctx<'_>, receipt: u64) -> Result<Value, WireError> {
        self.take_lease(receipt).ok_or_else(|| not_held(receipt))?;
        self.finish_one(ctx);
        Ok(Value::None)
    }

    /// Gives a leased item back: to the head now, or after `delay` (the item is then
    /// in neither the queue nor a lease, but still an unfinished task), or to the dead
    /// letter queue if it was delivered `max_deliveries` times.
    fn nack(&mut self, ctx: &mut Ctx<'_>, receipt: u64, delay: Option<Duration>) -> Result<Value, WireError> {
        let due = match delay {
            Some(d) if !d.is_zero() => Some(ctx.now().after(d).ok_or_else(|| WireError::value_error(BAD_DELAY))?),
            _ => None,
        };
        let lease = self.take_lease(receipt).ok_or_else(|| not_held(receipt))?;
        match due {
            // Waiting would only delay the move to the dead letter queue.
            Some(due) if !self.immediate && !self.exhausted(lease.deliveries) => {
                self.schedule_wake(ctx, due);
                self.delayed.insert((due, receipt), Delayed { item: lease.item, deliveries: lease.deliveries });
            }
            _ => self.come_back(ctx, vec![(lease.item, lease.deliveries)]),
        }
        Ok(Value::None)
    }

    /// True if an item delivered `deliveries` times may not be delivered again.
    fn exhausted(&self, deliveries: u32) -> bool {
        self.dead_letter.as_ref().is_some_and(|d| deliveries >= d.max_deliveries)
    }

    /// Items that failed a delivery (nacked, expired, their session ended), each with
    /// its delivery count, oldest delivery first: those delivered `max_deliveries`
    /// times move to the dead letter queue (each a finished task here, a new one
    /// there), the others go back to the head.
    fn come_back(&mut self, ctx: &mut Ctx<'_>, items: Vec<(Value, u32)>) {
        let mut back = Vec::with_capacity(items.len());
        for (item, deliveries) in items {
            match &self.dead_letter {
                Some(dead) if !self.immediate && deliveries >= dead.max_deliveries => {
                    tracing::debug!(deliveries, to = %dead.queue, "queue: an item delivered too often moves to its dead letter queue");
                    let to = dead.queue.clone();
                    ctx.move_to(&to, Kind::Queue, item);
                    self.finish_one(ctx);
                }
                _ => back.push((item, deliveries)),
            }
        }
        self.return_items(ctx, back);
    }

    fn renew(&mut self, ctx: &mut Ctx<'_>, receipt: u64, term: LeaseTerm) -> Result<Value, WireError> {
        let lease = self.leases.get_mut(&receipt).ok_or_else(|| not_held(receipt))?;
        let old = lease.deadline.take();
        lease.deadline = term.and_then(|d| ctx.now().after(d));
        let new = lease.deadline;
        if let Some(old) = old {
            self.deadlines.remove(&(old, receipt));
        }
        if let Some(new) = new {
            self.schedule(ctx, new, receipt);
        }
        Ok(Value::None)
    }

    /// Puts items (with their delivery counts) back at the head, first item first,
    /// and hands them on. After an immediate shutdown they are dropped as done tasks
    /// instead.
    fn return_items(&mut self, ctx: &mut Ctx<'_>, items: Vec<(Value, u32)>) {
        if items.is_empty() {
            return;
        }
        if self.immediate {
            for _ in items {
                self.finish_one(ctx);
            }
            return;
        }
        for (item, deliveries) in items.into_iter().rev() {
            self.push_front(item, deliveries);
        }
        self.dispatch(ctx);
    }

    /// Returns the items of every lease whose deadline is `ctx.now()` or earlier,
    /// oldest delivery first, then the nacked items whose delay is over, earliest
    /// first; true if there were any.
    fn reap(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let now = ctx.now();
        let mut expired = Vec::new();
        while let Some(&(deadline, receipt)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            expired.push(receipt);
        }
        let mut due = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let delayed = entry.remove();
            due.push((delayed.item, delayed.deliveries));
        }
        let any = !expired.is_empty() || !due.is_empty();
        self.reclaim(ctx, expired);
        // Their dead letter check was made when they were nacked.
        self.return_items(ctx, due);
        any
    }

    /// The earliest time something is due: a lease deadline or a nack delay's end.
    fn next_due(&self) -> Option<Time> {
        let lease = self.deadlines.first().map(|&(t, _)| t);
        let delayed = self.delayed.keys().next().map(|&(t, _)| t);
        match (lease, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Asks for a wake-up at the earliest due time, if anything is due ever.
    fn wake_at_next_deadline(&self, ctx: &mut Ctx<'_>) {
        if let Some(next) = self.next_due() {
            ctx.wake_at(next);
        }
    }

    /// Ends the given leases and returns their items, oldest delivery first.
    fn reclaim(&mut self, ctx: &mut Ctx<'_>, mut receipts: Vec<u64>) {
        receipts.sort_unstable();
        let items = receipts.into_iter().filter_map(|r| self.take_lease(r)).map(|l| (l.item, l.deliveries)).collect();
        self.come_back(ctx, items);
    }

    /// Adds a lease deadline (see [`QueueObject::schedule_wake`]).
    fn schedule(&mut self, ctx: &mut Ctx<'_>, deadline: Time, receipt: u64) {
        self.schedule_wake(ctx, deadline);
        self.deadlines.insert((deadline, receipt));
    }

    /// Something falls due at `at`: if that is earlier than everything else due, ask
    /// the timer for a wake-up then (later ones are asked for by the tick that
    /// precedes them). Call before recording it.
    fn schedule_wake(&self, ctx: &mut Ctx<'_>, at: Time) {
        if self.next_due().is_none_or(|first| at < first) {
            ctx.wake_at(at);
        }
    }

    /// Hands items to waiting getters and room to waiting putters until neither can
    /// go on. Every hand-off is a delivery that names what to take back if it never
    /// reaches its caller.
    fn dispatch(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let mut progressed = false;
            while !self.items.is_empty() {
                let Some((_, getter)) = self.getters.pop_first() else { break };
                let (item, deliveries) = self.pop_front().expect("not empty");
                match getter.takes {
                    Takes::Item => ctx.deliver(getter.waiter, Ok(item), Reclaim::Item),
                    Takes::Lease(term) => {
                        let (receipt, reply) = self.lease_out(ctx, item, deliveries, getter.waiter.session, term);
                        ctx.deliver(getter.waiter, Ok(reply), Reclaim::Lease(receipt));
                    }
                }
                progressed = true;
            }
            if !self.shut_down {
                while self.has_room() {
                    let Some((_, putter)) = self.putters.pop_first() else { break };
                    self.push_back(putter.item, 0);
                    self.unfinished += 1;
                    ctx.deliver(putter.waiter, Ok(Value::None), Reclaim::Nothing);
                    progressed = true;
                }
            }
            if !progressed || self.items.is_empty() || self.getters.is_empty() {
                break;
            }
        }
    }

    fn has_room(&self) -> bool {
        match self.capacity {
            Capacity::Unbounded => true,
            Capacity::Bounded(n) => self.items.len() < n,
            Capacity::Invalid(_) => false,
        }
    }
}

/// A timeout argument as seconds: `None` for none, CPython's `TypeError` for what it
/// cannot compare with 0.
fn timeout_secs(timeout: Option<Value>) -> Result<Option<f64>, WireError> {
    number(timeout).map_err(|type_name| {
        WireError::type_error(format!("'<' not supported between instances of '{type_name}' and 'int'"))
    })
}

/// A lease argument: absent means the default, `None` means no clock.
fn lease_term(lease: Option<Value>) -> Result<LeaseTerm, WireError> {
    let Some(lease) = lease else { return Ok(Some(DEFAULT_LEASE)) };
    match number(Some(lease)) {
        Err(type_name) => Err(WireError::type_error(format!("'lease' must be a number or None, not '{type_name}'"))),
        Ok(None) => Ok(None),
        Ok(Some(secs)) if secs.is_nan() || secs <= 0.0 => Err(WireError::value_error(BAD_LEASE)),
        Ok(Some(secs)) => Ok(Duration::try_from_secs_f64(secs).ok()),
    }
}

/// A Python number as `f64` (`None` for `None`), or the type name of a non-number.
fn number(value: Option<Value>) -> Result<Option<f64>, String> {
    match value {
        None | Some(Value::None) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(f64::from(u8::from(b)))),
        Some(Value::Int(n)) => Ok(Some(n as f64)),
        Some(Value::BigInt(n)) => Ok(Some(n.to_f64().unwrap_or(if n.sign() == num_bigint::Sign::Minus {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }))),
        Some(Value::Float(f)) => Ok(Some(f)),
        Some(other) => Err(other.type_name().to_owned()),
    }
}

/// `max_deliveries` and `dead_letter`: both or neither.
fn dead_letter_args(max: Option<Value>, queue: Option<Value>) -> Result<Option<DeadLetter>, WireError> {
    let max = max.filter(|v| *v != Value::None);
    let queue = queue.filter(|v| *v != Value::None);
    match (max, queue) {
        (None, None) => Ok(None),
        (Some(max), Some(queue)) => {
            let max_deliveries = match max.as_index() {
                Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
                Some(_) => return Err(WireError::value_error("'max_deliveries' must be at least 1")),
                None => {
                    return Err(WireError::type_error(format!(
                        "'max_deliveries' must be an int, not '{}'",
                        max.type_name()
                    )))
                }
            };
            let Value::Str(queue) = queue else {
                return Err(WireError::type_error(format!(
                    "'dead_letter' must be the name of a queue (a str), not '{}'",
                    queue.type_name()
                )));
            };
            if queue.is_empty() {
                return Err(WireError::value_error("'dead_letter' must be a non-empty queue name"));
            }
            Ok(Some(DeadLetter { max_deliveries, queue: queue.into_string() }))
        }
        (Some(_), None) => Err(WireError::value_error(
            "'max_deliveries' needs 'dead_letter': the name of the queue that takes items delivered that often \
             (agora never drops them)",
        )),
        (None, Some(_)) => {
            Err(WireError::value_error("'dead_letter' needs 'max_deliveries': how many deliveries make an item dead"))
        }
    }
}

/// A nack's `delay`: `None` (or absent) and 0 mean now.
fn delay_arg(delay: Option<Value>) -> Result<Option<Duration>, WireError> {
    match number(delay) {
        Err(type_name) => Err(WireError::type_error(format!("'delay' must be a number or None, not '{type_name}'"))),
        Ok(None) => Ok(None),
        Ok(Some(secs)) if secs.is_nan() || secs < 0.0 => Err(WireError::value_error(BAD_DELAY)),
        Ok(Some(secs)) => Duration::try_from_secs_f64(secs).map(Some).map_err(|_| WireError::value_error(BAD_DELAY)),
    }
}

/// A receipt argument.
fn receipt_arg(receipt: Value) -> Result<u64, WireError> {
    match receipt.as_index() {
        Some(n) => Ok(u64::try_from(n).unwrap_or(0)),
        None => Err(WireError::type_error(format!("a lease receipt must be an int, not '{}'", receipt.type_name()))),
    }
}

fn not_held(receipt: u64) -> WireError {
    WireError::value_error(format!(
        "lease {receipt} is not held: it was acked, nacked or expired (an expired lease's item went back to the \
         queue), or never issued"
    ))
}

fn empty() -> WireError {
    WireError::new(ErrorCode::Empty, "")
}

fn full_error() -> WireError {
    WireError::new(ErrorCode::Full, "")
}

fn shut_down() -> WireError {
    WireError::new(ErrorCode::ShutDown, "")
}

impl SharedObject for QueueObject {
    fn kind(&self) -> Kind {
        self.kind.clone()
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        // Leases due now expire before anything else sees the queue. A read-only call
        // must not change the state (it is not logged): its leases wait for the tick.
        let read_only = METHODS.iter().any(|m| m.name == method && m.read_only);
        if !read_only && self.next_due().is_some_and(|due| due <= ctx.now()) && self.reap(ctx) {
            self.wake_at_next_deadline(ctx);
        }
        self.dispatch_call(ctx, method, args)
    }

    fn snapshot(&self) -> Value {
        Value::List(self.items.iter().cloned().collect())
    }

    fn state(&self) -> Vec<u8> {
        // The bytes `encode_state(self)` writes (a test holds them equal), in the
        // parts a capture writes in steps.
        let Some((mut out, middle, rest)) = self.state_parts() else {
            return encode_state(self);
        };
        self.items.iter().for_each(|item| item.write_msgpack(&mut out));
        out.extend_from_slice(&middle);
        self.deliveries.iter().for_each(|&count| Self::write_count(&mut out, count));
        out.extend_from_slice(&rest);
        out
    }

    fn begin_state(&mut self) -> StateCapture {
        // Captured when big, so that a snapshot's pause does not grow with the queue.
        let capturable =
            self.items.len() >= CAPTURE_FROM && self.capture.is_none() && self.deliveries.len() == self.items.len();
        // The parts only for a capture: encoded at once, the state builds its own.
        let parts = if capturable { self.state_parts() } else { None };
        let header = parts.map(|(head, middle, rest)| {
            self.capture = Some(Box::new(ItemsCapture {
                len: self.items.len(),
                cursor: 0,
                originals_popped: 0,
                pushed_front: 0,
                popped: BTreeMap::new(),
                middle,
                rest,
            }));
            head
        });
        StateCapture::started_or(header, || self.state())
    }

    fn state_next(&mut self, out: &mut Vec<u8>, positions: usize) -> bool {
        let Some(c) = self.capture.as_deref_mut() else {
            return true;
        };
        // Originals still queued sit after the items pushed at the head since.
        let at = |index: usize, c: &ItemsCapture| c.pushed_front + index - c.originals_popped;
        let stop = (2 * c.len).min(c.cursor.saturating_add(positions));
        while c.cursor < stop {
            if c.cursor < c.len {
                let index = c.cursor;
                match c.popped.get(&index) {
                    Some((item, _)) => item.write_msgpack(out),
                    None => self.items[at(index, c)].write_msgpack(out),
                }
            } else {
                let index = c.cursor - c.len;
                if index == 0 {
                    out.extend_from_slice(&c.middle);
                }
                match c.popped.remove(&index) {
                    Some((_, count)) => Self::write_count(out, count),
                    None => Self::write_count(out, self.deliveries[at(index, c)]),
                }
            }
            c.cursor += 1;
        }
        if c.cursor < 2 * c.len {
            return false;
        }
        if c.len == 0 {
            out.extend_from_slice(&c.middle);
        }
        out.extend_from_slice(&c.rest);
        self.capture = None;
        true
    }

    fn end_state(&mut self) {
        self.capture = None;
    }

    fn repr(&self) -> String {
        format!("<queue.Queue object at {:#x}>", self as *const QueueObject as usize)
    }

    fn size(&self) -> Option<usize> {
        Some(self.items.len())
    }

    fn holds_session_state(&self) -> bool {
        true
    }

    /// A timed-out `get` answers `Empty`, a timed-out `put` answers `Full` and its
    /// item is not inserted. A call already answered is left alone.
    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        if let Some(getter) = self.getters.remove(&ticket) {
            ctx.deliver(getter.waiter, Err(empty()), Reclaim::Nothing);
        } else if let Some(putter) = self.putters.remove(&ticket) {
            ctx.deliver(putter.waiter, Err(full_error()), Reclaim::Nothing);
        }
    }

    /// Drops a waiter whose caller left (a waiting put's item never goes in), and
    /// takes back exactly what `undelivered` names: an item goes back to the head; a
    /// lease still held ends and its item goes back to the head.
    fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.getters.remove(&ticket);
        if self.putters.remove(&ticket).is_some() {
            tracing::debug!(ticket, "queue: a waiting put whose caller left was dropped; its item stays out");
        }
        self.joiners.remove(&ticket);
        match undelivered {
            Some(Undelivered { reclaim: Reclaim::Item, value }) => {
                tracing::debug!(ticket, "queue: an item handed to a caller that left went back to the head");
                // A plain get takes an item out of reliable consumption: it comes back as new.
                self.return_items(ctx, vec![(value, 0)]);
            }
            Some(Undelivered { reclaim: Reclaim::Lease(receipt), .. }) => {
                if let Some(lease) = self.take_lease(receipt) {
                    tracing::debug!(
                        ticket,
                        receipt,
                        "queue: a lease handed to a caller that left went back to the head"
                    );
                    // It never reached its caller: that delivery does not count.
                    self.return_items(ctx, vec![(lease.item, lease.deliveries.saturating_sub(1))]);
                }
            }
            _ => {}
        }
    }

    /// Leases due now go back to the head; then the next deadline is asked for.
    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        self.reap(ctx);
        self.wake_at_next_deadline(ctx);
    }

    /// Every lease the session held goes back to the head of the queue (or, delivered
    /// `max_deliveries` times, to the dead letter queue: a consumer that crashes on an
    /// item must not crash every consumer after it).
    fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        let held: Vec<u64> = self.leases.iter().filter(|(_, l)| l.session == session).map(|(&r, _)| r).collect();
        self.reclaim(ctx, held);
    }

    /// The leases, oldest first (receipt order), and the parked gets, puts and joins
    /// in the order they will be served.
    fn holders(&self) -> Holders {
        let held = self
            .leases
            .iter()
            .map(|(&receipt, lease)| Holding {
                session: lease.session,
                since: lease.since,
                token: None,
                what: format!("lease {receipt}, delivery {}", lease.deliveries),
            })
            .collect();
        let getters = self.getters.values().map(|g| {
            let what = match g.takes {
                Takes::Item => "get",
                Takes::Lease(_) => "get_leased",
            };
            Waiting { session: g.waiter.session, ticket: g.waiter.ticket, what: what.to_owned() }
        });
        let putters = self.putters.values().map(|p| Waiting {
            session: p.waiter.session,
            ticket: p.waiter.ticket,
            what: "put".into(),
        });
        let joiners =
            self.joiners.values().map(|w| Waiting { session: w.session, ticket: w.ticket, what: "join".into() });
        Holders { held, waiting: getters.chain(putters).chain(joiners).collect() }
    }

    /// A dead letter from another queue goes in at the tail as a new task, whatever
    /// the maxsize (a hand-off is never refused for room); one of this queue's own
    /// items that its dead letter queue could not take goes back to the head. Only an
    /// immediate shutdown refuses.
    fn receive_moved(&mut self, ctx: &mut Ctx<'_>, item: Value, returned: bool) -> Result<(), Value> {
        if self.immediate {
            return Err(item);
        }
        if returned {
            // Counted as finished when it left: it is a task again.
            self.unfinished += 1;
            self.push_front(item, 0);
        } else {
            self.unfinished += 1;
            self.push_back(item, 0);
        }
        self.dispatch(ctx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Completion, Delivery, Harness, Parked};
    use crate::object::bind;

    const A: SessionId = 1;
    const B: SessionId = 2;

    /// A queue driven through a harness.
    struct Q {
        h: Harness,
        q: QueueObject,
    }

    fn queue(maxsize: Value) -> Q {
        let args = bind(&CONSTRUCTOR, vec![maxsize], vec![]).unwrap();
        Q { h: Harness::default(), q: QueueObject::new(Kind::Queue, args).unwrap() }
    }

    impl Q {
        fn call(&mut self, session: SessionId, method: &str, args: Vec<Value>) -> Result<Outcome, WireError> {
            let spec = METHODS.iter().find(|m| m.name == method).expect("known method");
            let args = bind(spec, args, vec![])?;
            self.q.call(&mut self.h.ctx(session), method, args)
        }

        fn ok(&mut self, method: &str, args: Vec<Value>) -> Value {
            match self.call(A, method, args) {
                Ok(Outcome::Ready(v)) => v,
                other => panic!("{method}: expected a value, got {other:?}"),
            }
        }

        fn err(&mut self, method: &str, args: Vec<Value>) -> WireError {
            match self.call(A, method, args) {
                Err(e) => e,
                other => panic!("{method}: expected an error, got {other:?}"),
            }
        }

        fn parks(&mut self, session: SessionId, method: &str, args: Vec<Value>) -> Parked {
            match self.call(session, method, args) {
                Ok(Outcome::Parked) => self.h.parked().expect("a parked call is recorded"),
                other => panic!("{method}: expected to park, got {other:?}"),
            }
        }

        /// The delivery made to `ticket` so far (`None` while it still waits).
        fn delivery(&mut self, ticket: Ticket) -> Option<Delivery> {
            self.h.delivered_to(ticket)
        }

        /// What a parked call received so far (`None` while it still waits).
        fn received(&mut self, ticket: Ticket) -> Option<Completion> {
            self.delivery(ticket).map(|d| d.completion)
        }

        fn expire(&mut self, ticket: Ticket) {
            self.q.expire(&mut self.h.ctx(A), ticket);
        }

        fn abandon(&mut self, session: SessionId, ticket: Ticket, undelivered: Option<Undelivered>) {
            self.q.abandon(&mut self.h.ctx(session), ticket, undelivered);
        }

        fn session_ended(&mut self, session: SessionId) {
            self.q.session_ended(&mut self.h.ctx(session), session);
        }

        fn tick(&mut self) {
            self.q.tick(&mut self.h.ctx(0));
        }

        fn items(&self) -> Vec<Value> {
            self.q.items.iter().cloned().collect()
        }
    }

    fn int(n: i64) -> Value {
        Value::Int(n)
    }

    fn receipt_of(pair: &Value) -> Value {
        match pair {
            Value::Tuple(t) => t[0].clone(),
            other => panic!("not a (receipt, item) pair: {other:?}"),
        }
    }

    #[test]
    fn fifo_and_sizes() {
        let mut q = queue(int(0));
        assert_eq!(q.ok("empty", vec![]), Value::Bool(true));
        for i in 1..=3 {
            assert_eq!(q.ok("put", vec![int(i)]), Value::None);
        }
        assert_eq!(q.ok("qsize", vec![]), int(3));
        assert_eq!(q.ok("full", vec![]), Value::Bool(false));
        assert_eq!(q.q.size(), Some(3));
        assert_eq!(q.q.snapshot(), Value::List(vec![int(1), int(2), int(3)]));
        assert_eq!(q.ok("get", vec![]), int(1));
        assert_eq!(q.ok("get_nowait", vec![]), int(2));
        assert_eq!(q.ok("get", vec![Value::Bool(false)]), int(3));
        assert_eq!(q.err("get_nowait", vec![]).code, ErrorCode::Empty);
        assert_eq!(q.err("get", vec![Value::Bool(false)]).code, ErrorCode::Empty);
        assert!(q.q.repr().starts_with("<queue.Queue object at 0x"), "{}", q.q.repr());
    }

    #[test]
    fn cpython_errors_and_their_order() {
        let mut q = queue(int(1));
        q.ok("put", vec![int(1)]);
        assert_eq!(q.ok("full", vec![]), Value::Bool(true));
        assert_eq!(q.err("put_nowait", vec![int(2)]).code, ErrorCode::Full);
        assert_eq!(q.err("put", vec![int(2), Value::Bool(false), int(-1)]).code, ErrorCode::Full);
        assert_eq!(q.err("put", vec![int(2), Value::Bool(true), int(0)]).code, ErrorCode::Full);
        let e = q.err("put", vec![int(2), Value::Bool(true), Value::Float(-0.5)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, NEGATIVE_TIMEOUT));
        // A negative timeout is refused even when an item is there…
        let e = q.err("get", vec![Value::Bool(true), int(-1)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, NEGATIVE_TIMEOUT));
        let e = q.err("get", vec![Value::Bool(true), Value::Str("x".into())]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::TypeError, "'<' not supported between instances of 'str' and 'int'")
        );
        // …but ignored without blocking.
        assert_eq!(q.ok("get", vec![Value::Bool(false), int(-1)]), int(1));
        assert_eq!(q.err("get", vec![Value::Bool(true), int(0)]).code, ErrorCode::Empty);
        // An unbounded put never looks at its timeout.
        let mut u = queue(int(0));
        u.ok("put", vec![int(1), Value::Bool(true), int(-1)]);
        u.ok("put", vec![int(1), Value::Bool(true), Value::Str("x".into())]);
        // task_done
        assert_eq!(u.ok("task_done", vec![]), Value::None);
        assert_eq!(u.ok("task_done", vec![]), Value::None);
        let e = u.err("task_done", vec![]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, TOO_MANY_TASK_DONE));
    }

    #[test]
    fn maxsize_as_cpython_compares_it() {
        let mut q = queue(Value::Float(2.5));
        for i in 0..3 {
            q.ok("put_nowait", vec![int(i)]);
        }
        assert_eq!(q.err("put_nowait", vec![int(3)]).code, ErrorCode::Full, "full at ceil(2.5)");
        let mut q = queue(Value::Bool(true));
        q.ok("put_nowait", vec![int(0)]);
        assert_eq!(q.err("put_nowait", vec![int(1)]).code, ErrorCode::Full);
        for unbounded in [int(-3), Value::Float(f64::NAN), Value::Float(f64::INFINITY), Value::Float(-1.5)] {
            let mut q = queue(unbounded);
            for i in 0..100 {
                q.ok("put_nowait", vec![int(i)]);
            }
            assert_eq!(q.ok("full", vec![]), Value::Bool(false));
        }
        let mut q = queue(Value::Str("a".into()));
        let e = q.err("full", vec![]);
        assert_eq!(e.message, "'<' not supported between instances of 'int' and 'str'");
        let e = q.err("put", vec![int(1)]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::TypeError, "'>' not supported between instances of 'str' and 'int'")
        );
        assert_eq!(q.ok("qsize", vec![]), int(0));
        assert_eq!(q.err("get", vec![Value::Bool(true), int(0)]).code, ErrorCode::Empty);
        let mut q = queue(Value::None);
        let e = q.err("put_nowait", vec![int(1)]);
        assert_eq!(e.message, "'>' not supported between instances of 'NoneType' and 'int'");
    }

    #[test]
    fn a_blocked_get_receives_the_next_item_and_an_abandoned_one_never_takes_it() {
        let mut q = queue(int(0));
        let gone = q.parks(A, "get", vec![]);
        let waiting = q.parks(B, "get", vec![Value::Bool(true), Value::Float(5.0)]);
        assert_eq!(gone.deadline, None);
        assert_eq!(waiting.deadline, q.h.now.after_secs(5.0));
        // The first caller left while it waited: its abandon removes it from the line.
        q.abandon(A, gone.ticket, None);
        q.ok("put", vec![int(7)]);
        assert_eq!(q.received(gone.ticket), None);
        let delivery = q.delivery(waiting.ticket).expect("the live getter got it");
        assert_eq!((delivery.completion, delivery.reclaim), (Ok(int(7)), Reclaim::Item));
        assert!(q.q.items.is_empty());
        // Nobody there at all: the item stays.
        let gone = q.parks(A, "get", vec![]);
        q.abandon(A, gone.ticket, None);
        q.ok("put", vec![int(8)]);
        assert_eq!(q.items(), vec![int(8)]);
        assert!(q.q.getters.is_empty());
        assert!(q.h.deliveries().is_empty());
    }

    #[test]
    fn getters_are_served_in_arrival_order() {
        let mut q = queue(int(0));
        let parked: Vec<Parked> = (0..5).map(|_| q.parks(A, "get", vec![])).collect();
        for i in 0..5 {
            q.ok("put", vec![int(i)]);
        }
        let order: Vec<Ticket> = q.h.out.deliveries.iter().map(|d| d.waiter.ticket).collect();
        assert_eq!(order, parked.iter().map(|p| p.ticket).collect::<Vec<_>>());
        for (i, p) in parked.iter().enumerate() {
            assert_eq!(q.received(p.ticket), Some(Ok(int(i as i64))));
        }
    }

    #[test]
    fn a_blocked_put_goes_in_when_room_appears_and_an_abandoned_one_never_does() {
        let mut q = queue(int(1));
        q.ok("put", vec![int(1)]);
        let second = q.parks(A, "put", vec![int(2)]);
        let gone = q.parks(B, "put", vec![int(3)]);
        let fourth = q.parks(B, "put", vec![int(4), Value::Bool(true), int(10)]);
        assert_eq!(q.ok("qsize", vec![]), int(1));
        assert_eq!(q.ok("get", vec![]), int(1));
        let delivery = q.delivery(second.ticket).unwrap();
        assert_eq!((delivery.completion, delivery.reclaim), (Ok(Value::None), Reclaim::Nothing));
        assert_eq!(q.items(), vec![int(2)]);
        q.abandon(B, gone.ticket, None);
        assert_eq!(q.ok("get", vec![]), int(2));
        assert_eq!(q.received(gone.ticket), None);
        assert_eq!(q.received(fourth.ticket), Some(Ok(Value::None)));
        assert_eq!(q.items(), vec![int(4)], "the abandoned put's item never went in");
        assert_eq!(q.q.unfinished, 3, "1, 2 and 4 were put");
    }

    #[test]
    fn a_put_whose_caller_leaves_as_it_is_served_stays_in() {
        let mut q = queue(int(1));
        q.ok("put", vec![int(1)]);
        let putter = q.parks(A, "put", vec![int(2)]);
        q.ok("get", vec![]);
        let delivery = q.delivery(putter.ticket).unwrap();
        assert_eq!(delivery.clone().undelivered(), None, "a put's completion carries nothing back");
        q.abandon(A, putter.ticket, delivery.undelivered());
        q.abandon(A, putter.ticket, Some(Undelivered { reclaim: Reclaim::Nothing, value: Value::None }));
        assert_eq!(q.items(), vec![int(2)], "at least once: the item stays, once");
        assert_eq!(q.q.unfinished, 2);
    }

    #[test]
    fn a_timed_out_call_answers_as_cpython_and_leaves_nothing_behind() {
        let mut q = queue(int(1));
        let getter = q.parks(A, "get", vec![Value::Bool(true), Value::Float(0.1)]);
        q.expire(getter.ticket);
        let delivery = q.delivery(getter.ticket).unwrap();
        assert_eq!(delivery.completion.unwrap_err().code, ErrorCode::Empty);
        assert_eq!(delivery.reclaim, Reclaim::Nothing);
        q.expire(getter.ticket);
        assert_eq!(q.received(getter.ticket), None, "already settled");
        q.ok("put", vec![int(1)]);
        let putter = q.parks(A, "put", vec![int(2), Value::Bool(true), Value::Float(0.1)]);
        q.expire(putter.ticket);
        assert_eq!(q.received(putter.ticket).unwrap().unwrap_err().code, ErrorCode::Full);
        q.ok("get", vec![]);
        assert!(q.q.items.is_empty(), "the timed-out put's item never went in");
        assert_eq!(q.q.unfinished, 1);
    }

    #[test]
    fn an_expiry_after_the_delivery_is_a_no_op() {
        let mut q = queue(int(1));
        let getter = q.parks(A, "get", vec![Value::Bool(true), Value::Float(0.1)]);
        q.ok("put", vec![int(1)]);
        assert_eq!(q.received(getter.ticket), Some(Ok(int(1))));
        q.ok("put", vec![int(2)]);
        let putter = q.parks(A, "put", vec![int(3), Value::Bool(true), Value::Float(0.1)]);
        q.ok("get", vec![]);
        assert_eq!(q.received(putter.ticket), Some(Ok(Value::None)));
        q.expire(getter.ticket);
        q.expire(putter.ticket);
        assert!(q.h.deliveries().is_empty(), "their answers were already delivered");
        assert_eq!(q.items(), vec![int(3)]);
        assert_eq!(q.q.unfinished, 3);
    }

    #[test]
    fn abandon_takes_back_exactly_what_was_handed_over() {
        let mut q = queue(int(1));
        // A get that was handed an item whose reply never reached the caller.
        let getter = q.parks(A, "get", vec![]);
        q.ok("put", vec![int(1)]);
        q.ok("put_nowait", vec![int(2)]);
        let delivery = q.delivery(getter.ticket).unwrap();
        q.abandon(A, getter.ticket, delivery.undelivered());
        assert_eq!(q.items(), vec![int(1), int(2)], "back at the head");
        // A put that went in: its `None` completion is not an item.
        let putter = q.parks(A, "put", vec![int(3)]);
        q.ok("get", vec![]);
        q.ok("get", vec![]);
        assert_eq!(q.items(), vec![int(3)]);
        let delivery = q.delivery(putter.ticket).unwrap();
        assert_eq!(delivery.reclaim, Reclaim::Nothing);
        q.abandon(A, putter.ticket, Some(Undelivered { reclaim: Reclaim::Nothing, value: Value::None }));
        assert_eq!(q.items(), vec![int(3)], "nothing added");
        // A get handed a `None` item: that `None` goes back.
        q.ok("get", vec![]);
        let getter = q.parks(A, "get", vec![]);
        q.ok("put", vec![Value::None]);
        let delivery = q.delivery(getter.ticket).unwrap();
        q.abandon(A, getter.ticket, delivery.undelivered());
        assert_eq!(q.items(), vec![Value::None]);
        // A join that finished: nothing to take back.
        let mut j = queue(int(0));
        j.ok("put", vec![int(1)]);
        let joiner = j.parks(A, "join", vec![]);
        j.ok("get", vec![]);
        j.ok("task_done", vec![]);
        let delivery = j.delivery(joiner.ticket).unwrap();
        assert_eq!((delivery.completion.clone(), delivery.reclaim.clone()), (Ok(Value::None), Reclaim::Nothing));
        j.abandon(A, joiner.ticket, Some(Undelivered { reclaim: delivery.reclaim, value: Value::None }));
        assert!(j.q.items.is_empty());
        // A waiter still parked is just dropped.
        let getter = j.parks(A, "get", vec![]);
        j.abandon(A, getter.ticket, None);
        assert!(j.q.getters.is_empty());
        let joiner = {
            j.ok("put", vec![int(2)]);
            j.parks(A, "join", vec![])
        };
        j.abandon(A, joiner.ticket, None);
        assert!(j.q.joiners.is_empty());
    }

    #[test]
    fn a_late_abandon_after_thousands_of_none_hand_offs_loses_nothing() {
        const N: usize = 5_000;
        let mut q = queue(int(0));
        let getters: Vec<Parked> = (0..N).map(|_| q.parks(A, "get", vec![])).collect();
        for _ in 0..N {
            q.ok("put", vec![Value::None]);
        }
        q.ok("put", vec![int(7)]);
        assert_eq!(q.items(), vec![int(7)], "every None went to a getter");
        assert_eq!(q.h.out.deliveries.len(), N);
        // The first getter's caller left long ago; its abandon arrives now.
        let first = q.delivery(getters[0].ticket).unwrap();
        assert_eq!(first.reclaim, Reclaim::Item);
        q.abandon(A, getters[0].ticket, first.undelivered());
        assert_eq!(q.items(), vec![Value::None, int(7)], "the None item is back at the head");
        // Exact: N-1 delivered and kept, 2 in the queue, N+1 put.
        let kept: Vec<Delivery> = q.h.deliveries();
        assert_eq!(kept.len(), N - 1);
        assert!(kept.iter().all(|d| d.completion == Ok(Value::None) && d.reclaim == Reclaim::Item));
        assert_eq!(kept.len() + q.q.items.len(), N + 1, "nothing lost, nothing duplicated");
        assert_eq!(q.q.unfinished, (N + 1) as u64);
        // An abandon of a getter whose answer did arrive takes nothing back.
        q.abandon(A, getters[1].ticket, None);
        assert_eq!(q.items(), vec![Value::None, int(7)]);
        assert_eq!(q.ok("get", vec![]), Value::None);
        assert_eq!(q.ok("get", vec![]), int(7));
    }

    #[test]
    fn join_waits_for_every_task_done() {
        let mut q = queue(int(0));
        assert_eq!(q.ok("join", vec![]), Value::None, "nothing unfinished");
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        let joiner = q.parks(A, "join", vec![]);
        assert_eq!(joiner.deadline, None);
        q.ok("get", vec![]);
        q.ok("get", vec![]);
        q.ok("task_done", vec![]);
        assert_eq!(q.received(joiner.ticket), None);
        q.ok("task_done", vec![]);
        assert_eq!(q.received(joiner.ticket), Some(Ok(Value::None)));
    }

    #[test]
    fn shutdown_as_in_cpython_3_13() {
        let mut q = queue(int(0));
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        q.ok("shutdown", vec![]);
        assert_eq!(q.err("put", vec![int(3)]).code, ErrorCode::ShutDown);
        assert_eq!(q.err("put_nowait", vec![int(3)]).code, ErrorCode::ShutDown);
        assert_eq!(q.ok("get", vec![]), int(1), "gets drain");
        assert_eq!(q.ok("get_nowait", vec![]), int(2));
        assert_eq!(q.err("get", vec![]).code, ErrorCode::ShutDown);
        assert_eq!(q.err("get_nowait", vec![]).code, ErrorCode::ShutDown);
        assert_eq!(q.err("get", vec![Value::Bool(true), int(-1)]).code, ErrorCode::ShutDown, "checked first");
        assert_eq!(q.q.unfinished, 2);
        q.ok("task_done", vec![]);
        q.ok("shutdown", vec![]);

        // Blocked callers are released with ShutDown; a blocked put's item stays out.
        let mut g = queue(int(1));
        let getter = g.parks(A, "get", vec![]);
        g.ok("shutdown", vec![]);
        let delivery = g.delivery(getter.ticket).unwrap();
        assert_eq!(delivery.completion.unwrap_err().code, ErrorCode::ShutDown);
        assert_eq!(delivery.reclaim, Reclaim::Nothing);
        let mut p = queue(int(1));
        p.ok("put", vec![int(1)]);
        let putter = p.parks(A, "put", vec![int(2)]);
        p.ok("shutdown", vec![]);
        assert_eq!(p.received(putter.ticket).unwrap().unwrap_err().code, ErrorCode::ShutDown);
        assert_eq!(p.items(), vec![int(1)]);
    }

    #[test]
    fn immediate_shutdown_drains_and_releases_joiners_as_cpython_does() {
        let mut q = queue(int(0));
        for i in 0..3 {
            q.ok("put", vec![int(i)]);
        }
        q.ok("get", vec![]); // taken, not yet done
        let joiner = q.parks(A, "join", vec![]);
        q.ok("shutdown", vec![Value::Bool(true)]);
        assert_eq!((q.ok("qsize", vec![]), q.q.unfinished), (int(0), 1), "CPython: (0, 1)");
        assert_eq!(q.received(joiner.ticket), None, "one task is still unfinished");
        assert_eq!(q.err("get", vec![]).code, ErrorCode::ShutDown);
        q.ok("task_done", vec![]);
        assert_eq!(q.received(joiner.ticket), Some(Ok(Value::None)));
    }

    #[test]
    fn leases_ack_nack_and_errors() {
        let mut q = queue(int(0));
        for i in 1..=3 {
            q.ok("put", vec![int(i)]);
        }
        let first = q.ok("get_leased", vec![]);
        assert_eq!(first, Value::Tuple(vec![int(1), int(1)]));
        let second = q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(5.0)]);
        assert_eq!(second, Value::Tuple(vec![int(2), int(2)]));
        assert_eq!(q.ok("qsize", vec![]), int(1), "leased items are not in the queue");
        assert_eq!(q.ok("leased", vec![]), int(2));
        assert_eq!(q.ok("ack", vec![int(1)]), Value::None);
        let e = q.err("ack", vec![int(1)]);
        assert_eq!(e.code, ErrorCode::ValueError);
        assert!(e.message.starts_with("lease 1 is not held: it was acked, nacked or expired"), "{}", e.message);
        assert_eq!(q.err("nack", vec![int(99)]).code, ErrorCode::ValueError);
        assert_eq!(q.err("ack", vec![Value::Str("1".into())]).message, "a lease receipt must be an int, not 'str'");
        assert_eq!(q.ok("nack", vec![int(2)]), Value::None);
        assert_eq!(q.items(), vec![int(2), int(3)], "a nacked item goes back to the head");
        assert_eq!(q.ok("get_leased", vec![]), Value::Tuple(vec![int(3), int(2)]), "with a new receipt");
        assert_eq!(q.q.unfinished, 2, "acked 1 of 3");
        let e = q.err("get_leased", vec![Value::Bool(true), Value::None, int(0)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, BAD_LEASE));
        let e = q.err("get_leased", vec![Value::Bool(true), Value::None, Value::Str("x".into())]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::TypeError, "'lease' must be a number or None, not 'str'"));
        assert_eq!(q.err("renew", vec![int(1)]).code, ErrorCode::ValueError);
        assert_eq!(q.ok("get_leased", vec![Value::Bool(false)]), Value::Tuple(vec![int(4), int(3)]));
        assert_eq!(q.err("get_leased", vec![Value::Bool(false)]).code, ErrorCode::Empty);
    }

    #[test]
    fn leases_come_back_when_their_session_ends_oldest_first() {
        let mut q = queue(int(0));
        for i in 1..=4 {
            q.ok("put", vec![int(i)]);
        }
        q.ok("get_leased", vec![]);
        assert!(matches!(q.call(B, "get_leased", vec![]), Ok(Outcome::Ready(_))));
        q.ok("get_leased", vec![]);
        q.session_ended(A);
        assert_eq!(q.items(), vec![int(1), int(3), int(4)]);
        assert_eq!(q.ok("leased", vec![]), int(1), "B's lease stays");
        assert_eq!(q.err("ack", vec![int(1)]).code, ErrorCode::ValueError);
        assert_eq!(q.ok("ack", vec![int(2)]), Value::None, "any session may ack");
        assert!(q.q.holds_session_state());
    }

    #[test]
    fn leases_expire_back_to_the_head_and_renew_restarts_the_clock() {
        let mut q = queue(int(0));
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(10.0)]);
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(10.0)]);
        q.ok("renew", vec![int(2), Value::Float(60.0)]);
        q.h.advance(11.0);
        q.tick();
        assert_eq!(q.items(), vec![int(1)]);
        assert_eq!(q.err("ack", vec![int(1)]).code, ErrorCode::ValueError, "an expired receipt is dead");
        assert_eq!(
            q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::None]),
            Value::Tuple(vec![int(3), int(1)])
        );
        q.h.advance(3600.0);
        q.tick();
        assert_eq!(q.items(), vec![int(2)], "renewed lease 2 expired later; lease 3 has no clock");
        assert_eq!(q.ok("leased", vec![]), int(1));
    }

    #[test]
    fn a_lease_timer_is_a_wake_up_and_ticks_return_expired_items_without_any_call() {
        let mut q = queue(int(0));
        let start = q.h.now;
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        q.ok("put", vec![int(3)]);
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(0.3)]);
        let t1 = start.after_secs(0.3).unwrap();
        assert_eq!(q.h.out.wakeups, vec![(1, t1)], "the first deadline asks for a wake-up");
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(0.5)]);
        assert_eq!(q.h.out.wakeups.len(), 1, "a later deadline waits for the tick before it");
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(0.05)]);
        let t3 = start.after_secs(0.05).unwrap();
        assert_eq!(q.h.out.wakeups, vec![(1, t1), (1, t3)], "an earlier deadline asks for an earlier wake-up");
        assert_eq!(q.q.size(), Some(0));
        // A tick may come early (or twice): nothing is due yet, the next deadline is asked for.
        q.h.out.wakeups.clear();
        q.tick();
        assert_eq!(q.q.size(), Some(0));
        assert_eq!(q.h.out.wakeups, vec![(1, t3)]);
        q.h.out.wakeups.clear();
        q.h.advance(0.15);
        q.tick();
        assert_eq!(q.items(), vec![int(3)], "the shortest lease expired on its own");
        assert_eq!(q.h.out.wakeups, vec![(1, t1)], "and the next deadline was asked for");
        q.h.out.wakeups.clear();
        q.h.advance(0.5);
        q.tick();
        assert_eq!(q.q.snapshot(), Value::List(vec![int(1), int(2), int(3)]), "oldest delivery first");
        assert!(q.h.out.wakeups.is_empty(), "no lease has a deadline: no wake-up asked for");
        assert!(q.q.deadlines.is_empty());
    }

    #[test]
    fn a_mutating_call_returns_due_leases_first_and_a_read_only_one_changes_nothing() {
        let mut q = queue(int(0));
        q.ok("put", vec![int(1)]);
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(1.0)]);
        q.h.advance(2.0);
        let before = q.q.state();
        assert_eq!(q.ok("qsize", vec![]), int(0));
        assert_eq!(q.ok("leased", vec![]), int(1));
        assert_eq!(q.q.state(), before, "read-only calls leave the state alone");
        assert_eq!(q.ok("get", vec![]), int(1), "the expired lease came back before the get");
        assert_eq!(q.ok("leased", vec![]), int(0));
    }

    #[test]
    fn a_parked_leased_get_and_its_abandonment() {
        let mut q = queue(int(0));
        let leased = q.parks(A, "get_leased", vec![]);
        q.ok("put", vec![int(5)]);
        let delivery = q.delivery(leased.ticket).unwrap();
        assert_eq!(delivery.completion, Ok(Value::Tuple(vec![int(1), int(5)])));
        assert_eq!(delivery.reclaim, Reclaim::Lease(1));
        assert_eq!(q.q.leases[&1].item, int(5), "the lease keeps the item");
        // The reply never reached the caller: the lease ends, the item goes back.
        q.abandon(A, leased.ticket, delivery.undelivered());
        assert_eq!(q.items(), vec![int(5)]);
        assert_eq!(q.ok("leased", vec![]), int(0));
        // The session ended first (the usual order on a disconnect): the late
        // abandon must not put the item back a second time.
        q.ok("get", vec![]);
        let leased = q.parks(A, "get_leased", vec![]);
        q.ok("put", vec![Value::Tuple(vec![int(9), int(9)])]);
        let delivery = q.delivery(leased.ticket).unwrap();
        q.session_ended(A);
        assert_eq!(q.items().len(), 1);
        q.abandon(A, leased.ticket, delivery.undelivered());
        assert_eq!(q.items(), vec![Value::Tuple(vec![int(9), int(9)])], "once, not twice");
        let _ = receipt_of(&q.ok("get_leased", vec![]));
    }

    #[test]
    fn abandon_of_a_lease_takes_back_exactly_that_lease_and_nothing_once_acked() {
        let mut q = queue(int(0));
        let first = q.parks(A, "get_leased", vec![]);
        let second = q.parks(B, "get_leased", vec![]);
        q.ok("put", vec![int(10)]);
        q.ok("put", vec![int(20)]);
        q.ok("put", vec![int(30)]);
        let first = q.delivery(first.ticket).unwrap();
        let second = q.delivery(second.ticket).unwrap();
        assert_eq!(first.reclaim, Reclaim::Lease(1));
        assert_eq!(second.reclaim, Reclaim::Lease(2));
        assert_eq!(q.items(), vec![int(30)]);
        // The second lease's reply never arrived: exactly its item comes back.
        q.abandon(B, second.waiter.ticket, second.undelivered());
        assert_eq!(q.items(), vec![int(20), int(30)]);
        assert_eq!(q.ok("leased", vec![]), int(1));
        assert!(q.q.leases.contains_key(&1) && !q.q.leases.contains_key(&2));
        // The first was acked before its abandon: nothing comes back.
        q.ok("ack", vec![int(1)]);
        let ticket = first.waiter.ticket;
        q.abandon(A, ticket, first.undelivered());
        assert_eq!(q.items(), vec![int(20), int(30)]);
        assert_eq!(q.ok("leased", vec![]), int(0));
        assert_eq!(q.q.unfinished, 2, "one of three acked");
    }

    #[test]
    fn an_abandoned_leased_getter_takes_no_lease() {
        let mut q = queue(int(0));
        let gone = q.parks(A, "get_leased", vec![]);
        q.abandon(A, gone.ticket, None);
        q.ok("put", vec![int(1)]);
        assert_eq!(q.items(), vec![int(1)]);
        assert!(q.q.leases.is_empty());
        assert!(q.h.out.wakeups.is_empty());
    }

    #[test]
    fn join_counts_leased_items_until_acked() {
        let mut q = queue(int(0));
        q.ok("put", vec![int(1)]);
        let pair = q.ok("get_leased", vec![]);
        let joiner = q.parks(B, "join", vec![]);
        q.ok("nack", vec![receipt_of(&pair)]);
        assert_eq!(q.received(joiner.ticket), None);
        let pair = q.ok("get_leased", vec![]);
        q.ok("ack", vec![receipt_of(&pair)]);
        assert_eq!(q.received(joiner.ticket), Some(Ok(Value::None)));
    }

    #[test]
    fn returned_items_after_an_immediate_shutdown_are_done_not_requeued() {
        let mut q = queue(int(0));
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        let pair = q.ok("get_leased", vec![]);
        let joiner = q.parks(B, "join", vec![]);
        q.ok("shutdown", vec![Value::Bool(true)]);
        assert_eq!(q.q.unfinished, 1);
        q.ok("nack", vec![receipt_of(&pair)]);
        assert!(q.q.items.is_empty());
        assert_eq!(q.received(joiner.ticket), Some(Ok(Value::None)));
        // After a plain shutdown, returned items can still be drained.
        let mut q = queue(int(0));
        q.ok("put", vec![int(1)]);
        let pair = q.ok("get_leased", vec![]);
        q.ok("shutdown", vec![]);
        q.ok("nack", vec![receipt_of(&pair)]);
        assert_eq!(q.ok("get", vec![]), int(1));
        assert_eq!(q.err("get", vec![]).code, ErrorCode::ShutDown);
    }

    #[test]
    fn unget_puts_back_at_the_head_without_a_new_task() {
        let mut q = queue(int(1));
        q.ok("put", vec![int(1)]);
        let item = q.ok("get", vec![]);
        q.ok("put", vec![int(2)]);
        q.ok("unget", vec![item]);
        assert_eq!(q.items(), vec![int(1), int(2)], "above maxsize for a while");
        assert_eq!(q.q.unfinished, 2);
        assert_eq!(q.ok("full", vec![]), Value::Bool(true));
        assert_eq!(q.err("put_nowait", vec![int(3)]).code, ErrorCode::Full);
        q.ok("get", vec![]);
        assert_eq!(q.err("put_nowait", vec![int(3)]).code, ErrorCode::Full, "still at maxsize");
        q.ok("get", vec![]);
        q.ok("put_nowait", vec![int(3)]);
    }

    #[test]
    fn the_hand_written_state_is_byte_for_byte_serde_s() {
        let mut shapes = Vec::new();
        for n in [0i64, 1, 15, 16, 300, 70_000] {
            let mut q = queue(int(0));
            for i in 0..n {
                let item = if i % 2 == 0 { int(i) } else { Value::Str(format!("item {i}").into()) };
                q.ok("put", vec![item]);
            }
            shapes.push(q);
        }
        // Leases, a nack waiting out its delay, parked putters and getters, a dead letter.
        let mut busy = queue(int(2));
        busy.ok("put", vec![int(1)]);
        busy.ok("put", vec![int(2)]);
        busy.ok("get_leased", vec![]);
        busy.ok("put", vec![int(3)]);
        busy.parks(B, "put", vec![int(4)]);
        shapes.push(busy);
        let mut waiting = queue(int(0));
        waiting.parks(A, "get_leased", vec![Value::Bool(true), Value::Float(5.0), Value::Float(2.0)]);
        shapes.push(waiting);
        let args = bind(&CONSTRUCTOR, vec![int(0), int(3), Value::Str("dead".into())], vec![]).unwrap();
        let mut lettered = Q { h: Harness::default(), q: QueueObject::new(Kind::JoinableQueue, args).unwrap() };
        lettered.ok("put", vec![int(9)]);
        shapes.push(lettered);
        for q in &shapes {
            assert_eq!(q.q.state(), encode_state(&q.q), "{} items", q.q.items.len());
        }
    }

    /// Operations on a queue's two ends between the steps of a capture.
    #[derive(Debug, Clone)]
    enum End {
        PushBack(i64),
        PushFront(i64),
        PopFront,
        Step(usize),
    }

    fn end() -> impl proptest::strategy::Strategy<Value = End> {
        use proptest::prelude::*;
        prop_oneof![
            3 => any::<i64>().prop_map(End::PushBack),
            1 => any::<i64>().prop_map(End::PushFront),
            4 => Just(End::PopFront),
            3 => (0usize..40).prop_map(End::Step),
        ]
    }

    proptest::proptest! {
        /// A big queue's captured state is its state when the capture began, whatever
        /// is pushed at either end or popped between the steps (and the queue keeps
        /// every item and count meanwhile).
        #[test]
        fn a_captured_queue_reads_out_as_it_was(
            extra in 0usize..50,
            counts in proptest::collection::vec(0u32..5, 0..20),
            ops in proptest::collection::vec(end(), 0..400),
        ) {
            let mut q = queue(int(0)).q;
            for i in 0..CAPTURE_FROM + extra {
                q.push_back(int(i as i64), counts.get(i % 20).copied().unwrap_or(0));
            }
            let before = q.state();
            let mut model: VecDeque<(i64, u32)> =
                q.items.iter().zip(&q.deliveries).map(|(v, &c)| (v.as_index().unwrap(), c)).collect();
            let StateCapture::Started(mut out) = q.begin_state() else { panic!("a big queue is captured") };
            let mut done = false;
            for op in ops.iter().chain([End::Step(usize::MAX)].iter()) {
                match *op {
                    End::PushBack(v) => {
                        q.push_back(int(v), 1);
                        model.push_back((v, 1));
                    }
                    End::PushFront(v) => {
                        q.push_front(int(v), 2);
                        model.push_front((v, 2));
                    }
                    End::PopFront => {
                        let got = q.pop_front().map(|(v, c)| (v.as_index().unwrap(), c));
                        proptest::prop_assert_eq!(got, model.pop_front());
                    }
                    End::Step(n) if !done => done = q.state_next(&mut out, n.saturating_mul(97)),
                    End::Step(_) => {}
                }
            }
            proptest::prop_assert!(done && q.capture.is_none());
            proptest::prop_assert_eq!(&out, &before);
            let now: Vec<(i64, u32)> =
                q.items.iter().zip(&q.deliveries).map(|(v, &c)| (v.as_index().unwrap(), c)).collect();
            proptest::prop_assert_eq!(now, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_state_encodes_canonically() {
        let build = || {
            let mut q = queue(int(2));
            q.ok("put", vec![int(1)]);
            q.ok("put", vec![int(2)]);
            q.ok("get_leased", vec![]);
            q.ok("put", vec![int(3)]);
            q.parks(B, "put", vec![int(4)]);
            q.parks(B, "put", vec![int(5)]);
            q
        };
        let (a, b) = (build(), build());
        assert_eq!(a.q.state(), b.q.state());
        let mut c = build();
        c.ok("ack", vec![int(1)]);
        assert_ne!(a.q.state(), c.q.state());
        // It reads back as it was: a leased get without a clock stays a leased get.
        let mut d = queue(int(0));
        d.parks(A, "get", vec![]);
        d.parks(A, "get_leased", vec![Value::Bool(true), Value::None, Value::None]);
        d.parks(A, "get_leased", vec![Value::Bool(true), Value::Float(5.0), Value::Float(2.0)]);
        let back: QueueObject = rmp_serde::from_slice(&d.q.state()).unwrap();
        assert_eq!(back.state(), d.q.state());
        let takes: Vec<Takes> = back.getters.values().map(|g| g.takes).collect();
        assert_eq!(takes, [Takes::Item, Takes::Lease(None), Takes::Lease(Some(Duration::from_secs(2)))]);
    }

    #[test]
    fn the_methods_are_cpythons_then_agoras() {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(
            &names[..10],
            ["empty", "full", "get", "get_nowait", "join", "put", "put_nowait", "qsize", "task_done", "shutdown"]
        );
        let marked = |pick: fn(&MethodSpec) -> bool| -> Vec<&str> {
            METHODS.iter().filter(|m| pick(m)).map(|m| m.name).collect()
        };
        assert_eq!(marked(|m| m.read_only), ["empty", "full", "qsize", "leased", "delayed", "deliveries"]);
        assert_eq!(marked(|m| m.stores), ["put", "put_nowait", "unget"]);
        let q = QueueObject::new(Kind::JoinableQueue, Args::from_values("Queue", vec![])).unwrap();
        assert_eq!(q.kind(), Kind::JoinableQueue);
    }

    /// A queue whose items move to "dead" after `max` deliveries.
    fn dead_lettering(max: i64) -> Q {
        let args = bind(&CONSTRUCTOR, vec![int(0), int(max), Value::Str("dead".into())], vec![]).unwrap();
        Q { h: Harness::default(), q: QueueObject::new(Kind::Queue, args).unwrap() }
    }

    fn moved(q: &mut Q) -> Vec<(String, Value)> {
        std::mem::take(&mut q.h.out.moves).into_iter().map(|m| (m.to, m.item)).collect()
    }

    #[test]
    fn an_item_nacked_max_deliveries_times_moves_to_its_dead_letter_queue() {
        let mut q = dead_lettering(2);
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        let first = q.ok("get_leased", vec![]);
        assert_eq!(q.ok("deliveries", vec![receipt_of(&first)]), int(1));
        q.ok("nack", vec![receipt_of(&first)]);
        assert_eq!(q.items(), vec![int(1), int(2)], "one delivery of two: back at the head");
        assert!(moved(&mut q).is_empty());
        let second = q.ok("get_leased", vec![]);
        assert_eq!(q.ok("deliveries", vec![receipt_of(&second)]), int(2), "the count came back with the item");
        q.ok("nack", vec![receipt_of(&second)]);
        assert_eq!(q.items(), vec![int(2)]);
        assert_eq!(moved(&mut q), vec![("dead".to_owned(), int(1))]);
        assert_eq!(q.q.unfinished, 1, "a dead letter is a finished task here");
        // The other item was never delivered: its count is its own.
        let third = q.ok("get_leased", vec![]);
        assert_eq!(q.ok("deliveries", vec![receipt_of(&third)]), int(1));
        q.ok("ack", vec![receipt_of(&third)]);
        assert_eq!(q.q.unfinished, 0);
    }

    #[test]
    fn expired_and_orphaned_leases_count_as_failed_deliveries_an_undelivered_one_does_not() {
        let mut q = dead_lettering(1);
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        q.ok("put", vec![int(3)]);
        q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::Float(1.0)]);
        assert!(matches!(q.call(B, "get_leased", vec![]), Ok(Outcome::Ready(_))));
        q.h.advance(2.0);
        q.tick();
        q.session_ended(B);
        assert_eq!(moved(&mut q), vec![("dead".to_owned(), int(1)), ("dead".to_owned(), int(2))]);
        // A lease whose reply never reached its caller was not a delivery.
        q.ok("get", vec![]);
        let leased = q.parks(A, "get_leased", vec![]);
        q.ok("put", vec![int(4)]);
        let delivery = q.delivery(leased.ticket).unwrap();
        q.abandon(A, leased.ticket, delivery.undelivered());
        assert_eq!(q.items(), vec![int(4)]);
        assert!(moved(&mut q).is_empty());
        let again = q.ok("get_leased", vec![]);
        assert_eq!(q.ok("deliveries", vec![receipt_of(&again)]), int(1));
    }

    #[test]
    fn a_delayed_nack_keeps_the_item_out_until_its_delay_is_over() {
        let mut q = queue(int(0));
        let start = q.h.now;
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        let pair = q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::None]);
        q.h.out.wakeups.clear();
        q.ok("nack", vec![receipt_of(&pair), Value::Float(5.0)]);
        let due = start.after_secs(5.0).unwrap();
        assert_eq!(q.h.out.wakeups, vec![(1, due)], "the delay's end is a wake-up");
        assert_eq!((q.items(), q.ok("delayed", vec![]), q.ok("leased", vec![])), (vec![int(2)], int(1), int(0)));
        assert_eq!(q.q.unfinished, 2, "still an unfinished task");
        q.h.advance(4.0);
        q.tick();
        assert_eq!(q.ok("get", vec![]), int(2), "not back before its delay");
        assert_eq!(q.err("get_nowait", vec![]).code, ErrorCode::Empty);
        q.h.advance(1.5);
        assert_eq!(q.ok("qsize", vec![]), int(0), "a read changes nothing");
        let pair = q.ok("get_leased", vec![]);
        assert_eq!(pair, Value::Tuple(vec![int(2), int(1)]), "a mutating call brings it back first");
        assert_eq!(q.ok("deliveries", vec![int(2)]), int(2));
        // Zero and None mean now; bad delays are refused and leave the lease alone.
        let e = q.err("nack", vec![int(2), Value::Float(-1.0)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, BAD_DELAY));
        assert_eq!(q.err("nack", vec![int(2), Value::Str("x".into())]).code, ErrorCode::TypeError);
        q.ok("nack", vec![int(2), int(0)]);
        assert_eq!(q.items(), vec![int(1)]);
        // An immediate shutdown drops delayed items as done, as it does queued ones.
        q.ok("task_done", vec![]); // for the item taken with a plain get
        let pair = q.ok("get_leased", vec![]);
        q.ok("nack", vec![receipt_of(&pair), Value::Float(60.0)]);
        let joiner = q.parks(B, "join", vec![]);
        q.ok("shutdown", vec![Value::Bool(true)]);
        assert_eq!((q.q.unfinished, q.ok("delayed", vec![])), (0, int(0)));
        assert_eq!(q.received(joiner.ticket), Some(Ok(Value::None)));
    }

    #[test]
    fn a_delayed_nack_of_an_exhausted_item_dead_letters_at_once_and_ticks_return_due_items_in_order() {
        let mut q = dead_lettering(1);
        q.ok("put", vec![int(1)]);
        let pair = q.ok("get_leased", vec![]);
        q.ok("nack", vec![receipt_of(&pair), Value::Float(60.0)]);
        assert_eq!(moved(&mut q), vec![("dead".to_owned(), int(1))]);
        assert_eq!(q.ok("delayed", vec![]), int(0));
        let mut q = queue(int(0));
        for i in 1..=3 {
            q.ok("put", vec![int(i)]);
        }
        let a = q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::None]);
        let b = q.ok("get_leased", vec![Value::Bool(true), Value::None, Value::None]);
        q.ok("nack", vec![receipt_of(&a), Value::Float(2.0)]);
        q.ok("nack", vec![receipt_of(&b), Value::Float(1.0)]);
        q.h.advance(3.0);
        q.tick();
        assert_eq!(q.items(), vec![int(2), int(1), int(3)], "earliest due first, ahead of the rest");
        assert!(q.q.delayed.is_empty());
    }

    #[test]
    fn dead_letter_arguments_go_together_and_are_checked() {
        let make = |args: Vec<Value>| {
            let args = bind(&CONSTRUCTOR, args, vec![]).unwrap();
            QueueObject::new(Kind::Queue, args).map(|_| ()).map_err(|e| (e.code, e.message))
        };
        let name = || Value::Str("dlq".into());
        assert!(make(vec![int(0), int(3), name()]).is_ok());
        assert!(make(vec![int(0), Value::None, Value::None]).is_ok());
        assert_eq!(make(vec![int(0), int(3)]).unwrap_err().0, ErrorCode::ValueError);
        assert_eq!(make(vec![int(0), Value::None, name()]).unwrap_err().0, ErrorCode::ValueError);
        assert_eq!(make(vec![int(0), int(0), name()]).unwrap_err().0, ErrorCode::ValueError);
        assert_eq!(make(vec![int(0), Value::Float(2.0), name()]).unwrap_err().0, ErrorCode::TypeError);
        assert_eq!(make(vec![int(0), int(2), int(5)]).unwrap_err().0, ErrorCode::TypeError);
        let by_keyword =
            bind(&CONSTRUCTOR, vec![], vec![("max_deliveries".into(), int(2)), ("dead_letter".into(), name())]);
        assert!(QueueObject::new(Kind::Queue, by_keyword.unwrap()).unwrap().dead_letter.is_some());
    }

    #[test]
    fn a_moved_item_is_a_new_task_at_the_tail_and_one_that_came_back_goes_to_the_head() {
        let mut q = queue(int(1));
        let getter = q.parks(A, "get", vec![]);
        assert_eq!(q.q.receive_moved(&mut q.h.ctx(0), int(7), false), Ok(()));
        assert_eq!(q.received(getter.ticket), Some(Ok(int(7))), "handed to a waiting getter");
        q.ok("put", vec![int(1)]);
        assert_eq!(q.q.receive_moved(&mut q.h.ctx(0), int(2), false), Ok(()), "never refused for room");
        assert_eq!(q.q.receive_moved(&mut q.h.ctx(0), int(0), true), Ok(()));
        assert_eq!(q.items(), vec![int(0), int(1), int(2)]);
        assert_eq!(q.q.unfinished, 4);
        q.ok("shutdown", vec![Value::Bool(true)]);
        assert_eq!(q.q.receive_moved(&mut q.h.ctx(0), int(3), false), Err(int(3)), "an immediate shutdown refuses");
    }

    #[test]
    fn counts_delays_and_dead_letter_settings_survive_the_state_and_old_states_read_back() {
        let mut q = dead_lettering(3);
        q.ok("put", vec![int(1)]);
        q.ok("put", vec![int(2)]);
        let pair = q.ok("get_leased", vec![]);
        q.ok("nack", vec![receipt_of(&pair)]);
        let pair = q.ok("get_leased", vec![]);
        q.ok("nack", vec![receipt_of(&pair), Value::Float(9.0)]);
        let back: QueueObject = rmp_serde::from_slice(&q.q.state()).unwrap();
        assert_eq!(back.normalized().state(), q.q.state());
        // A state from before delivery counts: the items read back as never delivered.
        let mut old = queue(int(0));
        old.ok("put", vec![int(5)]);
        old.q.deliveries.clear();
        let back: QueueObject = rmp_serde::from_slice(&old.q.state()).unwrap();
        assert_eq!(back.normalized().deliveries, VecDeque::from([0]));
    }

    #[test]
    fn holders_are_the_leases_and_waiters_the_parked_calls_in_order() {
        let mut q = queue(int(1));
        q.ok("put", vec![int(1)]);
        q.ok("get_leased", vec![]);
        let get = q.parks(B, "get", vec![]);
        let join = q.parks(A, "join", vec![]);
        let holders = q.q.holders();
        assert_eq!(holders.held.len(), 1);
        assert_eq!((holders.held[0].session, holders.held[0].since, holders.held[0].token), (A, q.h.now, None));
        assert_eq!(holders.held[0].what, "lease 1, delivery 1");
        let waiting: Vec<_> = holders.waiting.iter().map(|w| (w.session, w.ticket, w.what.as_str())).collect();
        assert_eq!(waiting, vec![(B, get.ticket, "get"), (A, join.ticket, "join")]);
    }
}
