//! The shared `Condition` (Python's `SyncManager.Condition()`, a
//! `threading.Condition`): a lock plus a FIFO of waiters that `notify` wakes.
//!
//! The lock is the condition's own RLock (`Condition()`), or a shared Lock or RLock
//! passed by reference (`Condition(lock)`), which other clients may also use directly.
//! The condition keeps only a shared lock's object id; it names it as its
//! [`linked`](SharedObject::linked) object, and the engine — which checked, when the
//! condition was made, that the id names a Lock or an RLock — locks it after the
//! condition and hands it over in [`Ctx::with_linked`]. Everything the lock does for
//! the condition goes through [`ConditionLock`]; the grants the condition makes on a
//! shared lock are marked with the condition's object id.
//!
//! `wait` checks the caller owns the lock, releases it fully (an RLock's recursion
//! count is saved), parks the call until a notify or its timeout, then re-acquires the
//! lock — restoring the count — before answering, exactly as CPython: a waiter that
//! times out moves to the lock's queue and waits there for the lock, without a
//! deadline, to answer `False`. `notify(n)` and `notify_all()` move waiters, oldest
//! first, to the lock's queue. A waiter whose caller left is removed by its `Abandon`
//! (wherever it waits); a lock handed to a caller that had left comes back the same
//! way. With a plain Lock, "owning" is CPython's test: the lock is locked (by anybody).
//!
//! Methods: Python's `acquire(blocking=True, timeout=None)`, `release()`,
//! `wait(timeout=None)`, `notify(n=1)`, `notify_all()` (`wait_for` runs in the
//! client), each with agora's optional `owner` (see [`super::rlock`]); agora's
//! `acquire_fenced`, `release_fenced(token, fully=False)` and
//! `wait_fenced(timeout=None, owner=None)` → `(notified, token)`, the token of the
//! re-acquired lock.
//!
//! What a session holds through a condition it releases when its session ends, or
//! when it gives up its last handle on the condition.

use std::collections::VecDeque;

use agora_proto::native::{Kind, ObjectId};
use agora_proto::reference::ObjectRef;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::grants::{self, as_seconds, condition_wait, lock_wait, owner_arg, Answer, Wait};
use super::rlock::RLockObject;
use crate::engine::{Ctx, Reclaim, SessionId, Ticket, Undelivered, Waiter};
use crate::object::{encode_state, Args, Holders, MethodSpec, Outcome, SharedObject, Waiting};

/// The kind's constructor and methods, declared in [`agora_proto::methods::condition`].
pub use agora_proto::methods::condition::CONSTRUCTOR;
use agora_proto::methods::condition::METHODS;

/// What a Condition needs from the Lock or RLock it uses. `via` names the condition a
/// grant was made through (the condition's object id), so the condition can release
/// exactly those when a session lets go of it; `owner` is the RLock owner name (a
/// Lock ignores it). The caller is `ctx.caller()`.
pub trait ConditionLock {
    /// The lock's own acquire (lock timeout rules already applied).
    fn acquire_via(
        &mut self,
        ctx: &mut Ctx<'_>,
        owner: Option<String>,
        wait: Wait,
        answer: Answer,
        via: ObjectId,
    ) -> Outcome;
    /// The lock's own release.
    fn release_via(&mut self, ctx: &mut Ctx<'_>, owner: &Option<String>) -> Result<(), WireError>;
    /// agora's `release_fenced(token, fully)`.
    fn release_token(&mut self, ctx: &mut Ctx<'_>, token: Value, fully: bool) -> Result<(), WireError>;
    /// CPython's `Condition._is_owned`.
    fn is_owned(&self, session: SessionId, owner: &Option<String>) -> bool;
    /// CPython's `_release_save`: releases fully, returns the recursion count.
    fn release_save(&mut self, ctx: &mut Ctx<'_>, owner: &Option<String>) -> Result<u64, WireError>;
    /// Queues a condition waiter to re-acquire with `count` (CPython's
    /// `_acquire_restore`); it is granted at once if the lock is free. It answers
    /// `answer` and never expires.
    fn reacquire(
        &mut self,
        ctx: &mut Ctx<'_>,
        waiter: Waiter,
        owner: Option<String>,
        count: u64,
        answer: Answer,
        via: ObjectId,
    );
    /// The lock's [`SharedObject::expire`] for a waiter queued through the condition.
    fn expire_waiter(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket);
    /// The lock's [`SharedObject::abandon`] for a waiter queued through the condition.
    fn abandon_waiter(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>);
    /// Releases what `session` holds through the condition `via`.
    fn session_ended_via(&mut self, ctx: &mut Ctx<'_>, session: SessionId, via: ObjectId);
    /// The lock's repr.
    fn describe(&self) -> String;
}

/// The condition's lock.
#[derive(Debug, Serialize, Deserialize)]
enum LockRef {
    /// `Condition()`: its own RLock.
    Own(RLockObject),
    /// `Condition(lock)`: a shared Lock or RLock, by object id (the condition's
    /// linked object).
    Shared(ObjectId),
}

/// Runs `f` on the condition's lock: its own RLock, or the shared lock the engine
/// handed over as the linked object.
fn with_lock<R>(
    lock: &mut LockRef,
    ctx: &mut Ctx<'_>,
    f: impl FnOnce(&mut dyn ConditionLock, &mut Ctx<'_>) -> R,
) -> Result<R, WireError> {
    match lock {
        LockRef::Own(rlock) => Ok(f(rlock, ctx)),
        LockRef::Shared(id) => {
            let id = *id;
            ctx.with_linked(|object, ctx| match object.as_condition_lock() {
                Some(lock) => Ok(f(lock, ctx)),
                None => Err(WireError::new(ErrorCode::Internal, "a Condition's lock is neither a Lock nor an RLock")),
            })
            .unwrap_or_else(|| {
                Err(WireError::new(
                    ErrorCode::NoSuchObject,
                    format!("this Condition's lock (object {id:x}) no longer exists"),
                ))
            })
        }
    }
}

/// A caller waiting to be notified.
#[derive(Debug, Serialize, Deserialize)]
struct CondWaiter {
    waiter: Waiter,
    owner: Option<String>,
    /// The lock's recursion count to restore.
    saved: u64,
    fenced: bool,
}

/// A shared condition variable.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConditionObject {
    lock: LockRef,
    waiters: VecDeque<CondWaiter>,
}

impl ConditionObject {
    /// `Condition(lock=None)`: `lock` is a reference to a shared Lock or RLock (the
    /// engine checks what it names).
    pub fn new(mut args: Args) -> Result<ConditionObject, WireError> {
        let lock = match args.take(0) {
            None | Some(Value::None) => LockRef::Own(RLockObject::default()),
            Some(value) => {
                let Some(reference) = ObjectRef::from_value(&value) else {
                    return Err(WireError::new(
                        ErrorCode::AttributeError,
                        format!("'{}' object has no attribute 'acquire'", value.type_name()),
                    ));
                };
                LockRef::Shared(reference.id)
            }
        };
        Ok(ConditionObject { lock, waiters: VecDeque::new() })
    }

    fn wait(
        &mut self,
        ctx: &mut Ctx<'_>,
        timeout: Option<Value>,
        owner: Option<String>,
        fenced: bool,
    ) -> Result<Outcome, WireError> {
        let waiters = &mut self.waiters;
        with_lock(&mut self.lock, ctx, |lock, ctx| {
            if !lock.is_owned(ctx.caller(), &owner) {
                return Err(grants::runtime_error("cannot wait on un-acquired lock"));
            }
            let wait = condition_wait(timeout)?;
            let saved = lock.release_save(ctx, &owner)?;
            let via = ctx.object();
            match wait {
                Wait::No => {
                    let waiter = ctx.park(None);
                    lock.reacquire(ctx, waiter, owner, saved, Answer::Wait { notified: false, fenced }, via);
                }
                Wait::For(wait) => {
                    let waiter = ctx.park(Wait::deadline(wait, ctx.now()));
                    waiters.push_back(CondWaiter { waiter, owner, saved, fenced });
                }
            }
            Ok(Outcome::Parked)
        })?
    }

    /// Wakes waiters, oldest first, while `n` (any number, as CPython's loop) is
    /// positive; `None` wakes all.
    fn notify(&mut self, ctx: &mut Ctx<'_>, n: Option<Value>, owner: Option<String>) -> Result<(), WireError> {
        let waiters = &mut self.waiters;
        with_lock(&mut self.lock, ctx, |lock, ctx| {
            if !lock.is_owned(ctx.caller(), &owner) {
                return Err(grants::runtime_error("cannot notify on un-acquired lock"));
            }
            let mut n = match n {
                None => waiters.len() as f64,
                Some(n) if waiters.is_empty() => as_seconds(&n).unwrap_or(0.0),
                Some(n) => as_seconds(&n).ok_or_else(|| {
                    WireError::type_error(format!(
                        "'>' not supported between instances of '{}' and 'int'",
                        n.type_name()
                    ))
                })?,
            };
            let via = ctx.object();
            while n > 0.0 {
                let Some(w) = waiters.pop_front() else { break };
                let answer = Answer::Wait { notified: true, fenced: w.fenced };
                lock.reacquire(ctx, w.waiter, w.owner, w.saved, answer, via);
                n -= 1.0;
            }
            Ok(())
        })?
    }
}

impl SharedObject for ConditionObject {
    fn kind(&self) -> Kind {
        Kind::Condition
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        let via = ctx.object();
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = lock_wait(args.bool_or(0, true), args.take(1))?;
                let owner = owner_arg(args.take(2))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                with_lock(&mut self.lock, ctx, |lock, ctx| lock.acquire_via(ctx, owner, wait, answer, via))
            }
            "release" => {
                let owner = owner_arg(args.take(0))?;
                with_lock(&mut self.lock, ctx, |lock, ctx| lock.release_via(ctx, &owner))?.map(|()| Value::None.into())
            }
            "release_fenced" => {
                let (token, fully) = (args.required(0), args.bool_or(1, false));
                with_lock(&mut self.lock, ctx, |lock, ctx| lock.release_token(ctx, token, fully))?
                    .map(|()| Value::None.into())
            }
            "wait" | "wait_fenced" => {
                let timeout = args.take(0);
                let owner = owner_arg(args.take(1))?;
                self.wait(ctx, timeout, owner, method == "wait_fenced")
            }
            "notify" => {
                let n = args.take(0).unwrap_or(Value::Int(1));
                let owner = owner_arg(args.take(1))?;
                self.notify(ctx, Some(n), owner).map(|()| Value::None.into())
            }
            "notify_all" => {
                let owner = owner_arg(args.take(0))?;
                self.notify(ctx, None, owner).map(|()| Value::None.into())
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Condition has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        let pairs = [("lock", Value::Str(self.repr().into())), ("waiting", Value::Int(self.waiters.len() as i64))];
        Dict::from_pairs(pairs.into_iter().map(|(k, v)| (Value::Str(k.into()), v))).map(Value::Dict).unwrap_or_default()
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        let lock = match &self.lock {
            LockRef::Own(rlock) => rlock.describe(),
            // The shared lock is not at hand here: name it.
            LockRef::Shared(id) => format!("<shared lock {id:x}>"),
        };
        format!("<Condition({lock}, {})>", self.waiters.len())
    }

    fn holds_session_state(&self) -> bool {
        true
    }

    fn linked(&self) -> Option<ObjectId> {
        match self.lock {
            LockRef::Own(_) => None,
            LockRef::Shared(id) => Some(id),
        }
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        let Some(i) = self.waiters.iter().position(|w| w.waiter.ticket == ticket) else {
            // An acquire through the condition, or a waiter already re-acquiring.
            let _ = with_lock(&mut self.lock, ctx, |lock, ctx| lock.expire_waiter(ctx, ticket));
            return;
        };
        let w = self.waiters.remove(i).expect("found");
        let waiter = w.waiter;
        // Timed out: it answers False, once it has the lock back.
        let answer = Answer::Wait { notified: false, fenced: w.fenced };
        let via = ctx.object();
        let moved =
            with_lock(&mut self.lock, ctx, |lock, ctx| lock.reacquire(ctx, w.waiter, w.owner, w.saved, answer, via));
        if let Err(e) = moved {
            ctx.deliver(waiter, Err(e), Reclaim::Nothing);
        }
    }

    fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        if let Some(i) = self.waiters.iter().position(|w| w.waiter.ticket == ticket) {
            self.waiters.remove(i);
            return;
        }
        let _ = with_lock(&mut self.lock, ctx, |lock, ctx| lock.abandon_waiter(ctx, ticket, undelivered));
    }

    /// Its own lock's holder and waiters, then the callers waiting to be notified; a
    /// shared lock shows its holders on itself.
    fn holders(&self) -> Holders {
        let mut holders = match &self.lock {
            LockRef::Own(rlock) => rlock.holders(),
            LockRef::Shared(_) => Holders::default(),
        };
        holders.waiting.extend(self.waiters.iter().map(|w| Waiting {
            session: w.waiter.session,
            ticket: w.waiter.ticket,
            what: "wait for notify".into(),
        }));
        holders
    }

    fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        match &mut self.lock {
            LockRef::Own(rlock) => rlock.session_ended(ctx, session),
            shared => {
                let _ = with_lock(shared, ctx, |lock, ctx| {
                    let via = ctx.object();
                    lock.session_ended_via(ctx, session, via)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Harness;
    use crate::objects::event::EventObject;
    use crate::objects::lock::LockObject;

    const A: SessionId = 1;
    const B: SessionId = 2;

    fn call(
        h: &mut Harness,
        c: &mut ConditionObject,
        caller: SessionId,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Outcome, WireError> {
        c.call(&mut h.ctx(caller), method, Args::from_values(method, args))
    }

    fn ready(outcome: Result<Outcome, WireError>) -> Value {
        match outcome.unwrap() {
            Outcome::Ready(v) => v,
            Outcome::Parked => panic!("parked"),
        }
    }

    /// The ticket of a call that must park.
    fn parked(h: &mut Harness, outcome: Result<Outcome, WireError>) -> Ticket {
        match outcome.unwrap() {
            Outcome::Parked => h.parked().expect("a parked call").ticket,
            Outcome::Ready(v) => panic!("ready with {v:?}"),
        }
    }

    /// What was delivered to `ticket` (it must have been).
    fn answer(h: &mut Harness, ticket: Ticket) -> Value {
        h.delivered_to(ticket).expect("delivered").completion.unwrap()
    }

    fn own() -> ConditionObject {
        ConditionObject::new(Args::from_values("Condition", vec![])).unwrap()
    }

    fn shared(id: ObjectId, typeid: &str) -> ConditionObject {
        let reference = ObjectRef::new(id, typeid).to_value();
        ConditionObject::new(Args::from_values("Condition", vec![reference])).unwrap()
    }

    /// A call on `c` with `lock` as its linked lock.
    fn call_linked(
        h: &mut Harness,
        c: &mut ConditionObject,
        lock: &mut dyn SharedObject,
        caller: SessionId,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Outcome, WireError> {
        c.call(&mut h.ctx_linked(caller, lock), method, Args::from_values(method, args))
    }

    #[test]
    fn wait_and_notify_need_the_lock() {
        let mut h = Harness::default();
        let mut c = own();
        let err = call(&mut h, &mut c, A, "wait", vec![]).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::RuntimeError, "cannot wait on un-acquired lock"));
        let err = call(&mut h, &mut c, A, "notify", vec![]).unwrap_err();
        assert_eq!(err.message, "cannot notify on un-acquired lock");
        let err = call(&mut h, &mut c, A, "release", vec![]).unwrap_err();
        assert_eq!(err.message, "cannot release un-acquired lock");
        assert!(c.repr().starts_with("<Condition(<unlocked _thread.RLock object owner=0 count=0 at 0x"));
        assert!(c.holds_session_state());
        assert_eq!(c.linked(), None);
    }

    #[test]
    fn wait_releases_fully_and_reacquires_with_the_saved_count() {
        let mut h = Harness::default();
        let mut c = own();
        ready(call(&mut h, &mut c, A, "acquire", vec![]));
        ready(call(&mut h, &mut c, A, "acquire", vec![]));
        let outcome = call(&mut h, &mut c, A, "wait_fenced", vec![]);
        let waiting = parked(&mut h, outcome);
        // B can take the lock now, and notify.
        assert_eq!(ready(call(&mut h, &mut c, B, "acquire", vec![])), Value::Bool(true));
        ready(call(&mut h, &mut c, B, "notify", vec![]));
        assert!(h.delivered_to(waiting).is_none(), "still needs the lock");
        ready(call(&mut h, &mut c, B, "release", vec![]));
        let Value::Tuple(pair) = answer(&mut h, waiting) else { panic!() };
        assert_eq!(pair[0], Value::Bool(true));
        // Two levels restored.
        ready(call(&mut h, &mut c, A, "release", vec![]));
        assert_eq!(ready(call(&mut h, &mut c, B, "acquire", vec![Value::Bool(false)])), Value::Bool(false));
        ready(call(&mut h, &mut c, A, "release", vec![]));
        assert_eq!(ready(call(&mut h, &mut c, B, "acquire", vec![Value::Bool(false)])), Value::Bool(true));
    }

    #[test]
    fn a_timed_out_waiter_answers_false_after_reacquiring() {
        let mut h = Harness::default();
        let mut c = own();
        ready(call(&mut h, &mut c, A, "acquire", vec![]));
        let outcome = call(&mut h, &mut c, A, "wait", vec![Value::Float(30.0)]);
        let waiting = parked(&mut h, outcome);
        ready(call(&mut h, &mut c, B, "acquire", vec![]));
        c.expire(&mut h.ctx(A), waiting);
        assert!(h.delivered_to(waiting).is_none(), "keeps waiting, for the lock");
        // It waits for the lock without a deadline: a second expiry changes nothing.
        c.expire(&mut h.ctx(A), waiting);
        assert!(h.delivered_to(waiting).is_none());
        ready(call(&mut h, &mut c, B, "release", vec![]));
        assert_eq!(answer(&mut h, waiting), Value::Bool(false));
        // A zero timeout does not wait to be notified either.
        let outcome = call(&mut h, &mut c, A, "wait", vec![Value::Int(0)]);
        let again = parked(&mut h, outcome);
        assert_eq!(answer(&mut h, again), Value::Bool(false));
        // An expiry after the answer was delivered is a no-op.
        c.expire(&mut h.ctx(A), again);
        assert!(h.deliveries().is_empty());
        assert!(call(&mut h, &mut c, A, "release", vec![]).is_ok(), "A holds the lock");
    }

    #[test]
    fn notify_wakes_in_fifo_order() {
        let mut h = Harness::default();
        let mut c = own();
        let mut order = Vec::new();
        for _ in 0..3 {
            ready(call(&mut h, &mut c, A, "acquire", vec![]));
            let outcome = call(&mut h, &mut c, A, "wait", vec![]);
            order.push(parked(&mut h, outcome));
        }
        ready(call(&mut h, &mut c, B, "acquire", vec![]));
        ready(call(&mut h, &mut c, B, "notify", vec![Value::Int(2)]));
        ready(call(&mut h, &mut c, B, "release", vec![]));
        assert_eq!(answer(&mut h, order[0]), Value::Bool(true), "the oldest has the lock");
        assert!(h.delivered_to(order[1]).is_none(), "the second waits for the lock");
        ready(call(&mut h, &mut c, A, "release", vec![]));
        assert_eq!(answer(&mut h, order[1]), Value::Bool(true));
        ready(call(&mut h, &mut c, A, "release", vec![]));
        assert!(h.delivered_to(order[2]).is_none(), "never notified");
    }

    #[test]
    fn abandoned_waiters_leave_and_an_undelivered_lock_comes_back() {
        let mut h = Harness::default();
        let mut c = own();
        ready(call(&mut h, &mut c, A, "acquire", vec![]));
        let outcome = call(&mut h, &mut c, A, "wait", vec![]);
        let left = parked(&mut h, outcome);
        ready(call(&mut h, &mut c, B, "acquire", vec![]));
        let outcome = call(&mut h, &mut c, B, "wait", vec![]);
        let notified = parked(&mut h, outcome);
        // A's caller left while waiting to be notified: its Abandon removes it.
        c.abandon(&mut h.ctx(A), left, None);
        ready(call(&mut h, &mut c, 3, "acquire", vec![]));
        ready(call(&mut h, &mut c, 3, "notify", vec![]));
        ready(call(&mut h, &mut c, 3, "release", vec![]));
        assert!(h.delivered_to(left).is_none());
        let delivery = h.delivered_to(notified).expect("B was notified and has the lock");
        assert_eq!(delivery.completion, Ok(Value::Bool(true)));
        assert!(matches!(delivery.reclaim, Reclaim::Grant(_)));
        // B's caller had left: the re-acquired lock comes back.
        c.abandon(&mut h.ctx(B), notified, delivery.undelivered());
        assert_eq!(ready(call(&mut h, &mut c, 3, "acquire", vec![Value::Bool(false)])), Value::Bool(true));
    }

    #[test]
    fn a_shared_lock_by_reference() {
        let mut h = Harness::default();
        let mut lock = LockObject::default();
        let mut c = shared(0x1a2b, "Lock");
        assert_eq!(c.linked(), Some(0x1a2b));
        assert_eq!(c.repr(), "<Condition(<shared lock 1a2b>, 0)>");
        ready(call_linked(&mut h, &mut c, &mut lock, A, "acquire", vec![]));
        assert!(lock.is_locked());
        // The session lets go of the condition: what it holds through it is released.
        c.session_ended(&mut h.ctx_linked(A, &mut lock), A);
        assert!(!lock.is_locked());
        // An acquire through the condition that times out answers False.
        ready(call_linked(&mut h, &mut c, &mut lock, A, "acquire", vec![]));
        let outcome = call_linked(&mut h, &mut c, &mut lock, B, "acquire", vec![Value::Bool(true), Value::Int(5)]);
        let timed = parked(&mut h, outcome);
        c.expire(&mut h.ctx_linked(B, &mut lock), timed);
        assert_eq!(answer(&mut h, timed), Value::Bool(false));
        // With a plain Lock, owning means locked (by anybody).
        ready(call_linked(&mut h, &mut c, &mut lock, B, "notify", vec![]));
    }

    #[test]
    fn waits_through_a_shared_rlock() {
        let mut h = Harness::default();
        let mut lock = RLockObject::default();
        let mut c = shared(9, "RLock");
        ready(call_linked(&mut h, &mut c, &mut lock, A, "acquire", vec![]));
        let outcome = call_linked(&mut h, &mut c, &mut lock, A, "wait", vec![]);
        let waiting = parked(&mut h, outcome);
        assert!(!lock.is_locked(), "wait released it");
        ready(call_linked(&mut h, &mut c, &mut lock, B, "acquire", vec![]));
        ready(call_linked(&mut h, &mut c, &mut lock, B, "notify_all", vec![]));
        ready(call_linked(&mut h, &mut c, &mut lock, B, "release", vec![]));
        let delivery = h.delivered_to(waiting).unwrap();
        assert_eq!(delivery.waiter.object, 1, "answered as the condition's call");
        assert_eq!(delivery.completion, Ok(Value::Bool(true)));
        assert!(lock.is_owned(A, &None));
        // A's caller had left: the abandon reaches the lock and frees it.
        c.abandon(&mut h.ctx_linked(A, &mut lock), waiting, delivery.undelivered());
        assert!(!lock.is_locked());
    }

    #[test]
    fn a_lock_argument_must_be_a_reference_to_a_lock_that_exists() {
        let mut h = Harness::default();
        let err = ConditionObject::new(Args::from_values("Condition", vec![Value::Int(3)])).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::AttributeError, "'int' object has no attribute 'acquire'")
        );
        let mut c = shared(0x2f, "Lock");
        // The engine hands over nothing: the lock is gone.
        let err = call(&mut h, &mut c, A, "acquire", vec![]).unwrap_err();
        assert_eq!(err.code, ErrorCode::NoSuchObject);
        assert!(err.message.contains("2f"), "{}", err.message);
        // Something that is not a lock.
        let mut event = EventObject::default();
        let err = call_linked(&mut h, &mut c, &mut event, A, "acquire", vec![]).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
    }
}
