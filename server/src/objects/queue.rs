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
//! Blocked getters, putters and joiners wait in FIFO order as [`Waiter`]s. Every
//! hand-off happens under the object's lock through [`Waiter::complete`], which gives
//! the value back when the caller is gone:
//!
//! - an item goes to the first getter still waiting; if none is, it stays at the head;
//! - a blocked `put` keeps its item inside its waiter; when room appears the putter is
//!   completed first and the item inserted only if that succeeded, so an abandoned put
//!   (timed out, cancelled, disconnected) never half-inserts;
//! - [`SharedObject::abandon`] with a delivered item (the reply never reached the
//!   caller) puts it back at the head; with a delivered lease, returns the lease's
//!   item to the head.
//!
//! # Leases (agora only)
//!
//! `get_leased(block=True, timeout=None, lease=30.0)` answers `(receipt, item)` and
//! records a lease: the item is out of the queue (not counted by `qsize`) but not
//! finished. `ack(receipt)` finishes it and counts as one `task_done`;
//! `nack(receipt)` puts the item back at the head of the queue; `renew(receipt,
//! lease=30.0)` restarts its clock. A lease whose time runs out (a timer task started
//! through [`SharedObject::bind_self`], and a check at every call), or whose session
//! ends (close, crash, SIGKILL, heartbeat timeout), puts its item back at the head,
//! to be delivered again with a new receipt. `lease=None` means no clock: the lease
//! lasts until ack, nack or the end of its session.
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
//! Items that come back (nack, expired or ended leases, unget) may take the queue
//! above `maxsize` for a while; puts then wait until it is below again. After
//! `shutdown()` they still go back and can be drained by `get`; after
//! `shutdown(immediate=True)` they are dropped and counted as done, as the immediate
//! shutdown did for the items it drained.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};
use num_traits::ToPrimitive;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::registry::ObjectEntry;
use crate::waiter::{deadline_after, park, Completion, Waiter};

/// `queue.Queue(maxsize=0)`, the callable behind both typeids.
pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Queue", &["maxsize"], 0);

/// CPython's exposed methods (3.13, with `shutdown`), then agora's own.
const METHODS: &[MethodSpec] = &[
    MethodSpec::new("empty", &[]),
    MethodSpec::new("full", &[]),
    MethodSpec::optional("get", &["block", "timeout"], 0),
    MethodSpec::new("get_nowait", &[]),
    MethodSpec::new("join", &[]),
    MethodSpec::optional("put", &["item", "block", "timeout"], 1),
    MethodSpec::new("put_nowait", &["item"]),
    MethodSpec::new("qsize", &[]),
    MethodSpec::new("task_done", &[]),
    MethodSpec::optional("shutdown", &["immediate"], 0),
    MethodSpec::optional("get_leased", &["block", "timeout", "lease"], 0),
    MethodSpec::new("ack", &["receipt"]),
    MethodSpec::new("nack", &["receipt"]),
    MethodSpec::optional("renew", &["receipt", "lease"], 1),
    MethodSpec::new("unget", &["item"]),
    MethodSpec::new("leased", &[]),
];

/// CPython's message for a negative timeout.
const NEGATIVE_TIMEOUT: &str = "'timeout' must be a non-negative number";
/// agora's message for a lease that is not a positive number.
const BAD_LEASE: &str = "'lease' must be a positive number or None";
/// CPython's message for one `task_done` too many.
const TOO_MANY_TASK_DONE: &str = "task_done() called too many times";
/// How long a lease lasts when the caller does not say.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How many past hand-offs the queue remembers to classify a late `abandon` (see
/// [`QueueObject::abandon`]); old entries are forgotten first.
const HANDOFF_MEMORY: usize = 4096;

/// How many items fit.
#[derive(Debug, Clone, PartialEq)]
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

/// A parked `get` or `get_leased`.
#[derive(Debug)]
struct Getter {
    waiter: Waiter,
    /// `Some` for `get_leased`.
    lease: Option<LeaseTerm>,
}

/// A parked `put`: the item stays here until it can be inserted.
#[derive(Debug)]
struct Putter {
    waiter: Waiter,
    item: Value,
}

/// An item out on lease.
#[derive(Debug)]
struct Lease {
    item: Value,
    /// The session that took it; its end returns the item.
    session: u64,
    deadline: Option<Instant>,
    /// The ticket of the parked call it was handed to, if it was (not answered at once).
    ticket: Option<u64>,
}

/// A shared queue (`Queue` or `JoinableQueue`).
#[derive(Debug)]
pub struct QueueObject {
    kind: Kind,
    capacity: Capacity,
    items: VecDeque<Value>,
    /// Python's `unfinished_tasks`.
    unfinished: u64,
    shut_down: bool,
    /// `shutdown(immediate=True)` happened: returning items are dropped as done.
    immediate: bool,
    /// Parked calls by ticket. Tickets only grow, so ticket order is arrival order.
    getters: BTreeMap<u64, Getter>,
    putters: BTreeMap<u64, Putter>,
    joiners: BTreeMap<u64, Waiter>,
    /// Outstanding leases by receipt.
    leases: BTreeMap<u64, Lease>,
    /// Lease deadlines, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Receipt of each live lease that was handed to a parked call, by its ticket.
    lease_by_ticket: HashMap<u64, u64>,
    next_receipt: u64,
    /// Tickets of parked `get`s that were handed a `None` item (a `put` or `join`
    /// completes with `None` too; see `abandon`).
    none_handoffs: BTreeSet<u64>,
    /// Tickets of parked `get_leased` calls whose lease has ended.
    ended_lease_tickets: BTreeSet<u64>,
    /// This object's own entry, for the lease timer.
    me: Weak<ObjectEntry>,
    /// Wakes the running lease timer when an earlier deadline appears.
    reaper: Option<Arc<Notify>>,
}

impl QueueObject {
    /// `Queue(maxsize=0)` for `kind` (`Queue` or `JoinableQueue`).
    pub fn new(kind: Kind, mut args: Args) -> Result<QueueObject, WireError> {
        let capacity = Capacity::from_maxsize(args.or(0, Value::Int(0)));
        Ok(QueueObject {
            kind,
            capacity,
            items: VecDeque::new(),
            unfinished: 0,
            shut_down: false,
            immediate: false,
            getters: BTreeMap::new(),
            putters: BTreeMap::new(),
            joiners: BTreeMap::new(),
            leases: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            lease_by_ticket: HashMap::new(),
            next_receipt: 1,
            none_handoffs: BTreeSet::new(),
            ended_lease_tickets: BTreeSet::new(),
            me: Weak::new(),
            reaper: None,
        })
    }

    fn dispatch_call(&mut self, caller: Caller, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        let ready = |v: Value| Ok(Outcome::Ready(v));
        match method {
            "put" => {
                let item = args.required(0);
                let block = args.bool_or(1, true);
                self.put(caller, item, block, args.take(2))
            }
            "put_nowait" => self.put(caller, args.required(0), false, None),
            "get" => {
                let block = args.bool_or(0, true);
                self.get(caller, block, args.take(1), None)
            }
            "get_nowait" => self.get(caller, false, None, None),
            "get_leased" => {
                let term = lease_term(args.take(2))?;
                let block = args.bool_or(0, true);
                self.get(caller, block, args.take(1), Some(term))
            }
            "qsize" => ready(Value::Int(self.items.len() as i64)),
            "empty" => ready(Value::Bool(self.items.is_empty())),
            "full" => self.full().map(Value::Bool).map(Outcome::Ready),
            "task_done" => self.task_done().map(Outcome::Ready),
            "join" => Ok(self.join(caller)),
            "shutdown" => {
                self.shutdown(args.bool_or(0, false));
                ready(Value::None)
            }
            "ack" => self.ack(receipt_arg(args.required(0))?).map(Outcome::Ready),
            "nack" => self.nack(receipt_arg(args.required(0))?).map(Outcome::Ready),
            "renew" => {
                let receipt = receipt_arg(args.required(0))?;
                let term = lease_term(args.take(1))?;
                self.renew(receipt, term).map(Outcome::Ready)
            }
            "unget" => {
                tracing::debug!(session = caller.session, "queue: unget (an item given back by its client)");
                self.return_items(vec![args.required(0)]);
                ready(Value::None)
            }
            "leased" => ready(Value::Int(self.leases.len() as i64)),
            other => Err(WireError::new(ErrorCode::Internal, format!("Queue has no method '{other}'"))),
        }
    }

    /// CPython's `put`, in CPython's order of checks.
    fn put(&mut self, caller: Caller, item: Value, block: bool, timeout: Option<Value>) -> Result<Outcome, WireError> {
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
                    let (waiter, parked) = park(caller.session, deadline_after(timeout, NEGATIVE_TIMEOUT)?);
                    self.putters.insert(waiter.ticket(), Putter { waiter, item });
                    return Ok(Outcome::Park(parked));
                }
            }
        }
        self.items.push_back(item);
        self.unfinished += 1;
        self.dispatch();
        Ok(Outcome::Ready(Value::None))
    }

    /// CPython's `get` (and agora's `get_leased` when `lease` is given).
    fn get(
        &mut self,
        caller: Caller,
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
        if let Some(item) = self.items.pop_front() {
            let value = match lease {
                None => item,
                Some(term) => self.lease_out(item, caller.session, term, None),
            };
            // Room appeared: a waiting putter may go in.
            self.dispatch();
            return Ok(Outcome::Ready(value));
        }
        if timeout_given == Some(0.0) {
            return Err(empty());
        }
        let (waiter, parked) = park(caller.session, deadline_after(timeout_given, NEGATIVE_TIMEOUT)?);
        self.getters.insert(waiter.ticket(), Getter { waiter, lease });
        Ok(Outcome::Park(parked))
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

    fn task_done(&mut self) -> Result<Value, WireError> {
        if self.unfinished == 0 {
            return Err(WireError::value_error(TOO_MANY_TASK_DONE));
        }
        self.finish_one();
        Ok(Value::None)
    }

    /// One task finished (never below zero); joiners go at zero.
    fn finish_one(&mut self) {
        if self.unfinished > 0 {
            self.unfinished -= 1;
            if self.unfinished == 0 {
                self.release_joiners();
            }
        }
    }

    fn join(&mut self, caller: Caller) -> Outcome {
        if self.unfinished == 0 {
            return Outcome::Ready(Value::None);
        }
        let (waiter, parked) = park(caller.session, None);
        self.joiners.insert(waiter.ticket(), waiter);
        Outcome::Park(parked)
    }

    fn release_joiners(&mut self) {
        for (_, waiter) in std::mem::take(&mut self.joiners) {
            let _ = waiter.complete(Ok(Value::None));
        }
    }

    /// CPython 3.13's `shutdown(immediate)`: puts fail from now on, gets fail once the
    /// queue is empty (at once if immediate, which drains it as done tasks). Blocked
    /// getters and putters get `ShutDown`; joiners go if nothing is unfinished.
    fn shutdown(&mut self, immediate: bool) {
        self.shut_down = true;
        if immediate {
            self.immediate = true;
            while self.items.pop_front().is_some() {
                self.unfinished = self.unfinished.saturating_sub(1);
            }
            if self.unfinished == 0 {
                self.release_joiners();
            }
        }
        // Getters only wait on an empty queue, so they all raise; putters always raise.
        for (_, getter) in std::mem::take(&mut self.getters) {
            let _ = getter.waiter.complete(Err(shut_down()));
        }
        for (_, putter) in std::mem::take(&mut self.putters) {
            let _ = putter.waiter.complete(Err(shut_down()));
        }
    }

    /// Makes `item` a lease of `session` and returns what the caller receives.
    fn lease_out(&mut self, item: Value, session: u64, term: LeaseTerm, ticket: Option<u64>) -> Value {
        let receipt = self.next_receipt;
        self.next_receipt += 1;
        let reply = Value::Tuple(vec![Value::Int(receipt as i64), item.clone()]);
        self.add_lease(receipt, Lease { item, session, deadline: None, ticket }, term);
        reply
    }

    fn add_lease(&mut self, receipt: u64, mut lease: Lease, term: LeaseTerm) {
        lease.deadline = term.and_then(|d| Instant::now().checked_add(d));
        if let Some(deadline) = lease.deadline {
            self.schedule(deadline, receipt);
        }
        if let Some(ticket) = lease.ticket {
            self.lease_by_ticket.insert(ticket, receipt);
        }
        self.leases.insert(receipt, lease);
    }

    /// Removes a lease and everything that points at it.
    fn take_lease(&mut self, receipt: u64) -> Option<Lease> {
        let lease = self.leases.remove(&receipt)?;
        if let Some(deadline) = lease.deadline {
            self.deadlines.remove(&(deadline, receipt));
        }
        if let Some(ticket) = lease.ticket {
            self.lease_by_ticket.remove(&ticket);
            remember(&mut self.ended_lease_tickets, ticket);
        }
        Some(lease)
    }

    fn ack(&mut self, receipt: u64) -> Result<Value, WireError> {
        self.take_lease(receipt).ok_or_else(|| not_held(receipt))?;
        self.finish_one();
        Ok(Value::None)
    }

    fn nack(&mut self, receipt: u64) -> Result<Value, WireError> {
        let lease = self.take_lease(receipt).ok_or_else(|| not_held(receipt))?;
        self.return_items(vec![lease.item]);
        Ok(Value::None)
    }

    fn renew(&mut self, receipt: u64, term: LeaseTerm) -> Result<Value, WireError> {
        let lease = self.leases.get_mut(&receipt).ok_or_else(|| not_held(receipt))?;
        if let Some(old) = lease.deadline.take() {
            self.deadlines.remove(&(old, receipt));
        }
        lease.deadline = term.and_then(|d| Instant::now().checked_add(d));
        if let Some(deadline) = lease.deadline {
            self.schedule(deadline, receipt);
        }
        Ok(Value::None)
    }

    /// Puts items back at the head, first item first, and hands them on. After an
    /// immediate shutdown they are dropped as done tasks instead.
    fn return_items(&mut self, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if self.immediate {
            for _ in items {
                self.finish_one();
            }
            return;
        }
        for item in items.into_iter().rev() {
            self.items.push_front(item);
        }
        self.dispatch();
    }

    /// Returns the items of every lease whose deadline is `now` or earlier.
    fn reap(&mut self, now: Instant) {
        let mut expired = Vec::new();
        while let Some(&(deadline, receipt)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            expired.push(receipt);
        }
        self.reclaim(expired);
    }

    /// Ends the given leases and returns their items, oldest delivery first.
    fn reclaim(&mut self, mut receipts: Vec<u64>) {
        receipts.sort_unstable();
        let items = receipts.into_iter().filter_map(|r| self.take_lease(r)).map(|l| l.item).collect();
        self.return_items(items);
    }

    /// Adds a lease deadline and makes sure the timer will see it.
    fn schedule(&mut self, deadline: Instant, receipt: u64) {
        let earlier = match self.deadlines.first() {
            Some(&(first, _)) => deadline < first,
            None => true,
        };
        self.deadlines.insert((deadline, receipt));
        match &self.reaper {
            Some(wake) if earlier => wake.notify_one(),
            Some(_) => {}
            None => {
                // Without a runtime or an entry (unit tests) leases expire at the next call.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
                if self.me.strong_count() == 0 {
                    return;
                }
                let wake = Arc::new(Notify::new());
                runtime.spawn(reap_leases(self.me.clone(), wake.clone()));
                self.reaper = Some(wake);
            }
        }
    }

    /// The timer's turn: expire what is due; the next deadline, or `None` (and the
    /// timer stops) when no lease has one.
    fn reap_for_timer(&mut self) -> Option<Instant> {
        self.reap(Instant::now());
        let next = self.deadlines.first().map(|&(deadline, _)| deadline);
        if next.is_none() {
            self.reaper = None;
        }
        next
    }

    /// Hands items to waiting getters and room to waiting putters until neither can
    /// go on. Every hand-off goes to a caller still waiting, or is taken back.
    fn dispatch(&mut self) {
        loop {
            let mut progressed = false;
            while !self.items.is_empty() {
                let Some((ticket, getter)) = self.getters.pop_first() else { break };
                let item = self.items.pop_front().expect("not empty");
                match getter.lease {
                    None => {
                        let is_none = matches!(item, Value::None);
                        match getter.waiter.complete(Ok(item)) {
                            Ok(()) => {
                                if is_none {
                                    remember(&mut self.none_handoffs, ticket);
                                }
                                progressed = true;
                            }
                            Err(back) => self.items.push_front(completed_value(back)),
                        }
                    }
                    Some(term) => {
                        let (receipt, session) = (self.next_receipt, getter.waiter.session());
                        // The reply carries a copy; the lease keeps the item.
                        let reply = Value::Tuple(vec![Value::Int(receipt as i64), item.clone()]);
                        if getter.waiter.complete(Ok(reply)).is_ok() {
                            self.next_receipt += 1;
                            let lease = Lease { item, session, deadline: None, ticket: Some(ticket) };
                            self.add_lease(receipt, lease, term);
                            progressed = true;
                        } else {
                            self.items.push_front(item);
                        }
                    }
                }
            }
            if !self.shut_down {
                while self.has_room() {
                    let Some((_, putter)) = self.putters.pop_first() else { break };
                    if putter.waiter.complete(Ok(Value::None)).is_ok() {
                        self.items.push_back(putter.item);
                        self.unfinished += 1;
                        progressed = true;
                    }
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

/// The value inside a completion that could not be delivered.
fn completed_value(back: Completion) -> Value {
    back.unwrap_or_default()
}

/// Records a ticket in a bounded memory, forgetting the oldest first.
fn remember(memory: &mut BTreeSet<u64>, ticket: u64) {
    memory.insert(ticket);
    while memory.len() > HANDOFF_MEMORY {
        memory.pop_first();
    }
}

/// The lease timer of one queue: sleeps until the earliest lease deadline, expires
/// what is due, and stops when no lease has a deadline or the queue is gone.
async fn reap_leases(me: Weak<ObjectEntry>, wake: Arc<Notify>) {
    loop {
        let Some(entry) = me.upgrade() else { return };
        let next = entry
            .with_object(|object| {
                object.as_any_mut().downcast_mut::<QueueObject>().and_then(QueueObject::reap_for_timer)
            })
            .ok()
            .flatten();
        drop(entry);
        let Some(next) = next else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = wake.notified() => {}
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

    fn call(&mut self, caller: Caller, method: &str, args: Args) -> Result<Outcome, WireError> {
        // Leases due now expire before anything else sees the queue.
        if self.deadlines.first().is_some_and(|&(deadline, _)| deadline <= Instant::now()) {
            self.reap(Instant::now());
        }
        self.dispatch_call(caller, method, args)
    }

    fn snapshot(&self) -> Value {
        Value::List(self.items.iter().cloned().collect())
    }

    fn repr(&self) -> String {
        format!("<queue.Queue object at {:#x}>", self as *const QueueObject as usize)
    }

    fn size(&self) -> Option<usize> {
        Some(self.items.len())
    }

    /// A timed-out `get` answers `Empty`, a timed-out `put` answers `Full` and its
    /// item is not inserted.
    fn expire(&mut self, ticket: u64) -> Option<Completion> {
        if self.getters.remove(&ticket).is_some() {
            return Some(Err(empty()));
        }
        if self.putters.remove(&ticket).is_some() {
            return Some(Err(full_error()));
        }
        None
    }

    /// Drops a waiter whose caller left; takes back what was handed to it.
    ///
    /// `delivered` does not say which call it answered, and a `put` or `join`
    /// completes with `None` just as a `get` of a `None` item does. So the queue
    /// remembers the tickets it needs to tell them apart: a live lease knows the ticket
    /// it went to; the tickets of ended leases and of `None` hand-offs are kept in a
    /// bounded memory (the latest 4096 of each). Anything else that is not `None` was
    /// a plain `get`'s item.
    fn abandon(&mut self, _caller: Caller, ticket: u64, delivered: Option<Value>) {
        if self.putters.remove(&ticket).is_some() {
            tracing::debug!(ticket, "queue: a waiting put whose caller left was dropped; its item stays out");
            return;
        }
        if self.getters.remove(&ticket).is_some() || self.joiners.remove(&ticket).is_some() {
            return;
        }
        let Some(value) = delivered else { return };
        if let Some(&receipt) = self.lease_by_ticket.get(&ticket) {
            if let Some(lease) = self.take_lease(receipt) {
                tracing::debug!(ticket, receipt, "queue: a lease handed to a caller that left went back to the head");
                self.return_items(vec![lease.item]);
            }
            return;
        }
        if self.ended_lease_tickets.remove(&ticket) {
            return; // its lease ended already and its item went on
        }
        let none_item = self.none_handoffs.remove(&ticket);
        if matches!(value, Value::None) && !none_item {
            return; // a put's or a join's completion: nothing to take back
        }
        tracing::debug!(ticket, "queue: an item handed to a caller that left went back to the head");
        self.return_items(vec![value]);
    }

    fn bind_self(&mut self, me: Weak<ObjectEntry>) {
        self.me = me;
    }

    /// Every lease the session held goes back to the head of the queue.
    fn session_ended(&mut self, session: u64) {
        let held: Vec<u64> = self.leases.iter().filter(|(_, l)| l.session == session).map(|(&r, _)| r).collect();
        self.reclaim(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::bind;
    use crate::waiter::Parked;

    const A: Caller = Caller { session: 1 };
    const B: Caller = Caller { session: 2 };

    fn queue(maxsize: Value) -> QueueObject {
        let args = bind(&CONSTRUCTOR, vec![maxsize], vec![]).unwrap();
        QueueObject::new(Kind::Queue, args).unwrap()
    }

    fn call(q: &mut QueueObject, caller: Caller, method: &str, args: Vec<Value>) -> Result<Outcome, WireError> {
        let spec = METHODS.iter().find(|m| m.name == method).expect("known method");
        q.call(caller, method, bind(spec, args, vec![])?)
    }

    fn ok(q: &mut QueueObject, method: &str, args: Vec<Value>) -> Value {
        match call(q, A, method, args) {
            Ok(Outcome::Ready(v)) => v,
            other => panic!("{method}: expected a value, got {other:?}"),
        }
    }

    fn err(q: &mut QueueObject, method: &str, args: Vec<Value>) -> WireError {
        match call(q, A, method, args) {
            Err(e) => e,
            other => panic!("{method}: expected an error, got {other:?}"),
        }
    }

    fn parks(q: &mut QueueObject, caller: Caller, method: &str, args: Vec<Value>) -> Parked {
        match call(q, caller, method, args) {
            Ok(Outcome::Park(p)) => p,
            other => panic!("{method}: expected to park, got {other:?}"),
        }
    }

    /// What a parked call received so far (`None` while it still waits).
    fn received(p: &mut Parked) -> Option<Completion> {
        p.rx.try_recv().ok()
    }

    fn int(n: i64) -> Value {
        Value::Int(n)
    }

    fn items(q: &QueueObject) -> Vec<Value> {
        q.items.iter().cloned().collect()
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
        assert_eq!(ok(&mut q, "empty", vec![]), Value::Bool(true));
        for i in 1..=3 {
            assert_eq!(ok(&mut q, "put", vec![int(i)]), Value::None);
        }
        assert_eq!(ok(&mut q, "qsize", vec![]), int(3));
        assert_eq!(ok(&mut q, "full", vec![]), Value::Bool(false));
        assert_eq!(q.size(), Some(3));
        assert_eq!(q.snapshot(), Value::List(vec![int(1), int(2), int(3)]));
        assert_eq!(ok(&mut q, "get", vec![]), int(1));
        assert_eq!(ok(&mut q, "get_nowait", vec![]), int(2));
        assert_eq!(ok(&mut q, "get", vec![Value::Bool(false)]), int(3));
        assert_eq!(err(&mut q, "get_nowait", vec![]).code, ErrorCode::Empty);
        assert_eq!(err(&mut q, "get", vec![Value::Bool(false)]).code, ErrorCode::Empty);
        assert!(q.repr().starts_with("<queue.Queue object at 0x"), "{}", q.repr());
    }

    #[test]
    fn cpython_errors_and_their_order() {
        let mut q = queue(int(1));
        ok(&mut q, "put", vec![int(1)]);
        assert_eq!(ok(&mut q, "full", vec![]), Value::Bool(true));
        assert_eq!(err(&mut q, "put_nowait", vec![int(2)]).code, ErrorCode::Full);
        assert_eq!(err(&mut q, "put", vec![int(2), Value::Bool(false), int(-1)]).code, ErrorCode::Full);
        assert_eq!(err(&mut q, "put", vec![int(2), Value::Bool(true), int(0)]).code, ErrorCode::Full);
        let e = err(&mut q, "put", vec![int(2), Value::Bool(true), Value::Float(-0.5)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, NEGATIVE_TIMEOUT));
        // A negative timeout is refused even when an item is there…
        let e = err(&mut q, "get", vec![Value::Bool(true), int(-1)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, NEGATIVE_TIMEOUT));
        let e = err(&mut q, "get", vec![Value::Bool(true), Value::Str("x".into())]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::TypeError, "'<' not supported between instances of 'str' and 'int'")
        );
        // …but ignored without blocking.
        assert_eq!(ok(&mut q, "get", vec![Value::Bool(false), int(-1)]), int(1));
        assert_eq!(err(&mut q, "get", vec![Value::Bool(true), int(0)]).code, ErrorCode::Empty);
        // An unbounded put never looks at its timeout.
        let mut u = queue(int(0));
        ok(&mut u, "put", vec![int(1), Value::Bool(true), int(-1)]);
        ok(&mut u, "put", vec![int(1), Value::Bool(true), Value::Str("x".into())]);
        // task_done
        assert_eq!(ok(&mut u, "task_done", vec![]), Value::None);
        assert_eq!(ok(&mut u, "task_done", vec![]), Value::None);
        let e = err(&mut u, "task_done", vec![]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, TOO_MANY_TASK_DONE));
    }

    #[test]
    fn maxsize_as_cpython_compares_it() {
        let mut q = queue(Value::Float(2.5));
        for i in 0..3 {
            ok(&mut q, "put_nowait", vec![int(i)]);
        }
        assert_eq!(err(&mut q, "put_nowait", vec![int(3)]).code, ErrorCode::Full, "full at ceil(2.5)");
        let mut q = queue(Value::Bool(true));
        ok(&mut q, "put_nowait", vec![int(0)]);
        assert_eq!(err(&mut q, "put_nowait", vec![int(1)]).code, ErrorCode::Full);
        for unbounded in [int(-3), Value::Float(f64::NAN), Value::Float(f64::INFINITY), Value::Float(-1.5)] {
            let mut q = queue(unbounded);
            for i in 0..100 {
                ok(&mut q, "put_nowait", vec![int(i)]);
            }
            assert_eq!(ok(&mut q, "full", vec![]), Value::Bool(false));
        }
        let mut q = queue(Value::Str("a".into()));
        let e = err(&mut q, "full", vec![]);
        assert_eq!(e.message, "'<' not supported between instances of 'int' and 'str'");
        let e = err(&mut q, "put", vec![int(1)]);
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::TypeError, "'>' not supported between instances of 'str' and 'int'")
        );
        assert_eq!(ok(&mut q, "qsize", vec![]), int(0));
        assert_eq!(err(&mut q, "get", vec![Value::Bool(true), int(0)]).code, ErrorCode::Empty);
        let mut q = queue(Value::None);
        let e = err(&mut q, "put_nowait", vec![int(1)]);
        assert_eq!(e.message, "'>' not supported between instances of 'NoneType' and 'int'");
    }

    #[test]
    fn a_blocked_get_receives_the_next_item_and_a_gone_one_never_takes_it() {
        let mut q = queue(int(0));
        let gone = parks(&mut q, A, "get", vec![]);
        let mut waiting = parks(&mut q, B, "get", vec![Value::Bool(true), Value::Float(5.0)]);
        assert!(waiting.deadline.is_some());
        drop(gone);
        ok(&mut q, "put", vec![int(7)]);
        assert_eq!(received(&mut waiting), Some(Ok(int(7))));
        assert!(q.items.is_empty());
        // Nobody there at all: the item stays.
        drop(parks(&mut q, A, "get", vec![]));
        ok(&mut q, "put", vec![int(8)]);
        assert_eq!(items(&q), vec![int(8)]);
        assert!(q.getters.is_empty());
    }

    #[test]
    fn getters_are_served_in_arrival_order() {
        let mut q = queue(int(0));
        let mut parked: Vec<Parked> = (0..5).map(|_| parks(&mut q, A, "get", vec![])).collect();
        for i in 0..5 {
            ok(&mut q, "put", vec![int(i)]);
        }
        for (i, p) in parked.iter_mut().enumerate() {
            assert_eq!(received(p), Some(Ok(int(i as i64))));
        }
    }

    #[test]
    fn a_blocked_put_goes_in_when_room_appears_and_an_abandoned_one_never_does() {
        let mut q = queue(int(1));
        ok(&mut q, "put", vec![int(1)]);
        let mut second = parks(&mut q, A, "put", vec![int(2)]);
        let gone = parks(&mut q, B, "put", vec![int(3)]);
        let mut fourth = parks(&mut q, B, "put", vec![int(4), Value::Bool(true), int(10)]);
        assert_eq!(ok(&mut q, "qsize", vec![]), int(1));
        assert_eq!(ok(&mut q, "get", vec![]), int(1));
        assert_eq!(received(&mut second), Some(Ok(Value::None)));
        assert_eq!(items(&q), vec![int(2)]);
        drop(gone);
        assert_eq!(ok(&mut q, "get", vec![]), int(2));
        assert_eq!(received(&mut fourth), Some(Ok(Value::None)));
        assert_eq!(items(&q), vec![int(4)], "the abandoned put's item never went in");
        assert_eq!(q.unfinished, 3, "1, 2 and 4 were put");
    }

    #[test]
    fn a_timed_out_call_answers_as_cpython_and_leaves_nothing_behind() {
        let mut q = queue(int(1));
        let getter = parks(&mut q, A, "get", vec![Value::Bool(true), Value::Float(0.1)]);
        assert_eq!(q.expire(getter.ticket).unwrap().unwrap_err().code, ErrorCode::Empty);
        assert_eq!(q.expire(getter.ticket), None, "already settled");
        ok(&mut q, "put", vec![int(1)]);
        let putter = parks(&mut q, A, "put", vec![int(2), Value::Bool(true), Value::Float(0.1)]);
        assert_eq!(q.expire(putter.ticket).unwrap().unwrap_err().code, ErrorCode::Full);
        ok(&mut q, "get", vec![]);
        assert!(q.items.is_empty(), "the timed-out put's item never went in");
        assert_eq!(q.unfinished, 1);
    }

    #[test]
    fn abandon_takes_back_exactly_what_was_handed_over() {
        let mut q = queue(int(1));
        // A get that was handed an item whose reply never reached the caller.
        let getter = parks(&mut q, A, "get", vec![]);
        ok(&mut q, "put", vec![int(1)]);
        ok(&mut q, "put_nowait", vec![int(2)]);
        q.abandon(A, getter.ticket, Some(int(1)));
        assert_eq!(items(&q), vec![int(1), int(2)], "back at the head");
        // A put that went in: its `None` completion is not an item.
        let putter = parks(&mut q, A, "put", vec![int(3)]);
        ok(&mut q, "get", vec![]);
        ok(&mut q, "get", vec![]);
        assert_eq!(items(&q), vec![int(3)]);
        q.abandon(A, putter.ticket, Some(Value::None));
        assert_eq!(items(&q), vec![int(3)], "nothing added");
        // A get handed a `None` item: that `None` goes back.
        ok(&mut q, "get", vec![]);
        let getter = parks(&mut q, A, "get", vec![]);
        ok(&mut q, "put", vec![Value::None]);
        q.abandon(A, getter.ticket, Some(Value::None));
        assert_eq!(items(&q), vec![Value::None]);
        // A join that finished: nothing to take back.
        let mut j = queue(int(0));
        ok(&mut j, "put", vec![int(1)]);
        let joiner = parks(&mut j, A, "join", vec![]);
        ok(&mut j, "get", vec![]);
        ok(&mut j, "task_done", vec![]);
        j.abandon(A, joiner.ticket, Some(Value::None));
        assert!(j.items.is_empty());
        // A waiter still parked is just dropped.
        let getter = parks(&mut j, A, "get", vec![]);
        j.abandon(A, getter.ticket, None);
        assert!(j.getters.is_empty());
    }

    #[test]
    fn join_waits_for_every_task_done() {
        let mut q = queue(int(0));
        assert_eq!(ok(&mut q, "join", vec![]), Value::None, "nothing unfinished");
        ok(&mut q, "put", vec![int(1)]);
        ok(&mut q, "put", vec![int(2)]);
        let mut joiner = parks(&mut q, A, "join", vec![]);
        ok(&mut q, "get", vec![]);
        ok(&mut q, "get", vec![]);
        ok(&mut q, "task_done", vec![]);
        assert_eq!(received(&mut joiner), None);
        ok(&mut q, "task_done", vec![]);
        assert_eq!(received(&mut joiner), Some(Ok(Value::None)));
    }

    #[test]
    fn shutdown_as_in_cpython_3_13() {
        let mut q = queue(int(0));
        ok(&mut q, "put", vec![int(1)]);
        ok(&mut q, "put", vec![int(2)]);
        ok(&mut q, "shutdown", vec![]);
        assert_eq!(err(&mut q, "put", vec![int(3)]).code, ErrorCode::ShutDown);
        assert_eq!(err(&mut q, "put_nowait", vec![int(3)]).code, ErrorCode::ShutDown);
        assert_eq!(ok(&mut q, "get", vec![]), int(1), "gets drain");
        assert_eq!(ok(&mut q, "get_nowait", vec![]), int(2));
        assert_eq!(err(&mut q, "get", vec![]).code, ErrorCode::ShutDown);
        assert_eq!(err(&mut q, "get_nowait", vec![]).code, ErrorCode::ShutDown);
        assert_eq!(err(&mut q, "get", vec![Value::Bool(true), int(-1)]).code, ErrorCode::ShutDown, "checked first");
        assert_eq!(q.unfinished, 2);
        ok(&mut q, "task_done", vec![]);
        ok(&mut q, "shutdown", vec![]);

        // Blocked callers are released with ShutDown; a blocked put's item stays out.
        let mut g = queue(int(1));
        let mut getter = parks(&mut g, A, "get", vec![]);
        ok(&mut g, "shutdown", vec![]);
        assert_eq!(received(&mut getter).unwrap().unwrap_err().code, ErrorCode::ShutDown);
        let mut p = queue(int(1));
        ok(&mut p, "put", vec![int(1)]);
        let mut putter = parks(&mut p, A, "put", vec![int(2)]);
        ok(&mut p, "shutdown", vec![]);
        assert_eq!(received(&mut putter).unwrap().unwrap_err().code, ErrorCode::ShutDown);
        assert_eq!(items(&p), vec![int(1)]);
    }

    #[test]
    fn immediate_shutdown_drains_and_releases_joiners_as_cpython_does() {
        let mut q = queue(int(0));
        for i in 0..3 {
            ok(&mut q, "put", vec![int(i)]);
        }
        ok(&mut q, "get", vec![]); // taken, not yet done
        let mut joiner = parks(&mut q, A, "join", vec![]);
        ok(&mut q, "shutdown", vec![Value::Bool(true)]);
        assert_eq!((ok(&mut q, "qsize", vec![]), q.unfinished), (int(0), 1), "CPython: (0, 1)");
        assert_eq!(received(&mut joiner), None, "one task is still unfinished");
        assert_eq!(err(&mut q, "get", vec![]).code, ErrorCode::ShutDown);
        ok(&mut q, "task_done", vec![]);
        assert_eq!(received(&mut joiner), Some(Ok(Value::None)));
    }

    #[test]
    fn leases_ack_nack_and_errors() {
        let mut q = queue(int(0));
        for i in 1..=3 {
            ok(&mut q, "put", vec![int(i)]);
        }
        let first = ok(&mut q, "get_leased", vec![]);
        assert_eq!(first, Value::Tuple(vec![int(1), int(1)]));
        let second = ok(&mut q, "get_leased", vec![Value::Bool(true), Value::None, Value::Float(5.0)]);
        assert_eq!(second, Value::Tuple(vec![int(2), int(2)]));
        assert_eq!(ok(&mut q, "qsize", vec![]), int(1), "leased items are not in the queue");
        assert_eq!(ok(&mut q, "leased", vec![]), int(2));
        assert_eq!(ok(&mut q, "ack", vec![int(1)]), Value::None);
        let e = err(&mut q, "ack", vec![int(1)]);
        assert_eq!(e.code, ErrorCode::ValueError);
        assert!(e.message.starts_with("lease 1 is not held: it was acked, nacked or expired"), "{}", e.message);
        assert_eq!(err(&mut q, "nack", vec![int(99)]).code, ErrorCode::ValueError);
        assert_eq!(
            err(&mut q, "ack", vec![Value::Str("1".into())]).message,
            "a lease receipt must be an int, not 'str'"
        );
        assert_eq!(ok(&mut q, "nack", vec![int(2)]), Value::None);
        assert_eq!(items(&q), vec![int(2), int(3)], "a nacked item goes back to the head");
        assert_eq!(ok(&mut q, "get_leased", vec![]), Value::Tuple(vec![int(3), int(2)]), "with a new receipt");
        assert_eq!(q.unfinished, 2, "acked 1 of 3");
        let e = err(&mut q, "get_leased", vec![Value::Bool(true), Value::None, int(0)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, BAD_LEASE));
        let e = err(&mut q, "get_leased", vec![Value::Bool(true), Value::None, Value::Str("x".into())]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::TypeError, "'lease' must be a number or None, not 'str'"));
        assert_eq!(err(&mut q, "renew", vec![int(1)]).code, ErrorCode::ValueError);
        assert_eq!(ok(&mut q, "get_leased", vec![Value::Bool(false)]), Value::Tuple(vec![int(4), int(3)]));
        assert_eq!(err(&mut q, "get_leased", vec![Value::Bool(false)]).code, ErrorCode::Empty);
    }

    #[test]
    fn leases_come_back_when_their_session_ends_oldest_first() {
        let mut q = queue(int(0));
        for i in 1..=4 {
            ok(&mut q, "put", vec![int(i)]);
        }
        ok(&mut q, "get_leased", vec![]);
        assert!(matches!(call(&mut q, B, "get_leased", vec![]), Ok(Outcome::Ready(_))));
        ok(&mut q, "get_leased", vec![]);
        q.session_ended(A.session);
        assert_eq!(items(&q), vec![int(1), int(3), int(4)]);
        assert_eq!(ok(&mut q, "leased", vec![]), int(1), "B's lease stays");
        assert_eq!(err(&mut q, "ack", vec![int(1)]).code, ErrorCode::ValueError);
        assert_eq!(ok(&mut q, "ack", vec![int(2)]), Value::None, "any session may ack");
    }

    #[test]
    fn leases_expire_back_to_the_head_and_renew_restarts_the_clock() {
        let mut q = queue(int(0));
        ok(&mut q, "put", vec![int(1)]);
        ok(&mut q, "put", vec![int(2)]);
        ok(&mut q, "get_leased", vec![Value::Bool(true), Value::None, Value::Float(10.0)]);
        ok(&mut q, "get_leased", vec![Value::Bool(true), Value::None, Value::Float(10.0)]);
        ok(&mut q, "renew", vec![int(2), Value::Float(60.0)]);
        q.reap(Instant::now() + Duration::from_secs(11));
        assert_eq!(items(&q), vec![int(1)]);
        assert_eq!(err(&mut q, "ack", vec![int(1)]).code, ErrorCode::ValueError, "an expired receipt is dead");
        assert_eq!(
            ok(&mut q, "get_leased", vec![Value::Bool(true), Value::None, Value::None]),
            Value::Tuple(vec![int(3), int(1)])
        );
        q.reap(Instant::now() + Duration::from_secs(3600));
        assert_eq!(items(&q), vec![int(2)], "renewed lease 2 expired later; lease 3 has no clock");
        assert_eq!(ok(&mut q, "leased", vec![]), int(1));
    }

    #[test]
    fn a_parked_leased_get_and_its_abandonment() {
        let mut q = queue(int(0));
        let mut leased = parks(&mut q, A, "get_leased", vec![]);
        ok(&mut q, "put", vec![int(5)]);
        let pair = received(&mut leased).unwrap().unwrap();
        assert_eq!(pair, Value::Tuple(vec![int(1), int(5)]));
        assert_eq!(q.leases[&1].ticket, Some(leased.ticket));
        // The reply never reached the caller: the lease ends, the item goes back.
        q.abandon(A, leased.ticket, Some(pair.clone()));
        assert_eq!(items(&q), vec![int(5)]);
        assert_eq!(ok(&mut q, "leased", vec![]), int(0));
        // The session ended first (the usual order on a disconnect): the late
        // abandon must not put the item back a second time.
        ok(&mut q, "get", vec![]);
        let mut leased = parks(&mut q, A, "get_leased", vec![]);
        ok(&mut q, "put", vec![Value::Tuple(vec![int(9), int(9)])]);
        let pair = received(&mut leased).unwrap().unwrap();
        q.session_ended(A.session);
        assert_eq!(items(&q).len(), 1);
        q.abandon(A, leased.ticket, Some(pair));
        assert_eq!(items(&q), vec![Value::Tuple(vec![int(9), int(9)])], "once, not twice");
        let _ = receipt_of(&ok(&mut q, "get_leased", vec![]));
    }

    #[test]
    fn a_gone_leased_getter_takes_no_lease() {
        let mut q = queue(int(0));
        drop(parks(&mut q, A, "get_leased", vec![]));
        ok(&mut q, "put", vec![int(1)]);
        assert_eq!(items(&q), vec![int(1)]);
        assert!(q.leases.is_empty());
    }

    #[test]
    fn join_counts_leased_items_until_acked() {
        let mut q = queue(int(0));
        ok(&mut q, "put", vec![int(1)]);
        let pair = ok(&mut q, "get_leased", vec![]);
        let mut joiner = parks(&mut q, B, "join", vec![]);
        ok(&mut q, "nack", vec![receipt_of(&pair)]);
        assert_eq!(received(&mut joiner), None);
        let pair = ok(&mut q, "get_leased", vec![]);
        ok(&mut q, "ack", vec![receipt_of(&pair)]);
        assert_eq!(received(&mut joiner), Some(Ok(Value::None)));
    }

    #[test]
    fn returned_items_after_an_immediate_shutdown_are_done_not_requeued() {
        let mut q = queue(int(0));
        ok(&mut q, "put", vec![int(1)]);
        ok(&mut q, "put", vec![int(2)]);
        let pair = ok(&mut q, "get_leased", vec![]);
        let mut joiner = parks(&mut q, B, "join", vec![]);
        ok(&mut q, "shutdown", vec![Value::Bool(true)]);
        assert_eq!(q.unfinished, 1);
        ok(&mut q, "nack", vec![receipt_of(&pair)]);
        assert!(q.items.is_empty());
        assert_eq!(received(&mut joiner), Some(Ok(Value::None)));
        // After a plain shutdown, returned items can still be drained.
        let mut q = queue(int(0));
        ok(&mut q, "put", vec![int(1)]);
        let pair = ok(&mut q, "get_leased", vec![]);
        ok(&mut q, "shutdown", vec![]);
        ok(&mut q, "nack", vec![receipt_of(&pair)]);
        assert_eq!(ok(&mut q, "get", vec![]), int(1));
        assert_eq!(err(&mut q, "get", vec![]).code, ErrorCode::ShutDown);
    }

    #[test]
    fn unget_puts_back_at_the_head_without_a_new_task() {
        let mut q = queue(int(1));
        ok(&mut q, "put", vec![int(1)]);
        let item = ok(&mut q, "get", vec![]);
        ok(&mut q, "put", vec![int(2)]);
        ok(&mut q, "unget", vec![item]);
        assert_eq!(items(&q), vec![int(1), int(2)], "above maxsize for a while");
        assert_eq!(q.unfinished, 2);
        assert_eq!(ok(&mut q, "full", vec![]), Value::Bool(true));
        assert_eq!(err(&mut q, "put_nowait", vec![int(3)]).code, ErrorCode::Full);
        ok(&mut q, "get", vec![]);
        assert_eq!(err(&mut q, "put_nowait", vec![int(3)]).code, ErrorCode::Full, "still at maxsize");
        ok(&mut q, "get", vec![]);
        ok(&mut q, "put_nowait", vec![int(3)]);
    }

    #[tokio::test]
    async fn the_lease_timer_returns_expired_items_without_any_call() {
        let registry = crate::registry::Registry::new();
        let entry = registry.create(&Kind::JoinableQueue, vec![], vec![]).unwrap();
        let call = |method: &str, args: Vec<Value>| match entry.call(A, method, args, vec![]) {
            Ok(Outcome::Ready(v)) => v,
            other => panic!("{method}: {other:?}"),
        };
        call("put", vec![int(1)]);
        call("put", vec![int(2)]);
        call("get_leased", vec![Value::Bool(true), Value::None, Value::Float(0.3)]);
        call("get_leased", vec![Value::Bool(true), Value::None, Value::Float(0.05)]);
        assert_eq!(entry.size().unwrap(), Some(0));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(entry.size().unwrap(), Some(1), "the shorter lease expired on its own");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(entry.snapshot().unwrap(), Value::List(vec![int(1), int(2)]), "oldest delivery first");
        let reaper_stopped =
            entry.with_object(|o| o.as_any_mut().downcast_mut::<QueueObject>().unwrap().reaper.is_none()).unwrap();
        assert!(reaper_stopped, "no lease has a deadline: the timer stopped");
    }

    #[test]
    fn the_methods_are_cpythons_then_agoras() {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(
            &names[..10],
            ["empty", "full", "get", "get_nowait", "join", "put", "put_nowait", "qsize", "task_done", "shutdown"]
        );
        let q = QueueObject::new(Kind::JoinableQueue, Args::from_values("Queue", vec![])).unwrap();
        assert_eq!(q.kind(), Kind::JoinableQueue);
    }
}
