//! The shared `Condition` (Python's `SyncManager.Condition()`, a
//! `threading.Condition`): a lock plus a FIFO of waiters that `notify` wakes.
//!
//! The lock is the condition's own RLock (`Condition()`), or a shared Lock or RLock
//! passed by reference (`Condition(lock)`), which other clients may also use directly.
//! A shared lock is driven through its registry entry with
//! [`ObjectEntry::with_object`] (the condition's own lock is held first, then the
//! lock's: never the reverse), and everything the lock needs to do for the condition
//! goes through [`ConditionLock`].
//!
//! `wait` checks the caller owns the lock, releases it fully (an RLock's recursion
//! count is saved), waits for a notify or its timeout, then re-acquires the lock —
//! restoring the count — before answering, exactly as CPython: a waiter that times out
//! still waits for the lock, without a deadline. `notify(n)` and `notify_all()` move
//! waiters, oldest first, to the lock's queue. With a plain Lock, "owning" is CPython's
//! test: the lock is locked (by anybody).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agora_proto::native::Kind;
use agora_proto::reference::ObjectRef;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

use super::grants::{self, as_seconds, condition_wait, lock_wait, owner_arg, Answer, Wait};
use super::lock::LockObject;
use super::rlock::RLockObject;
use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::registry::{ObjectEntry, Registry};
use crate::waiter::{self, Completion, Waiter};

/// `Condition(lock=None)`.
pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Condition", &["lock"], 0);

/// CPython's `ConditionProxy` methods (with agora's `owner`), then agora's.
const METHODS: &[MethodSpec] = &[
    MethodSpec::optional("acquire", &["blocking", "timeout", "owner"], 0),
    MethodSpec::optional("release", &["owner"], 0),
    MethodSpec::optional("wait", &["timeout", "owner"], 0),
    MethodSpec::optional("notify", &["n", "owner"], 0),
    MethodSpec::optional("notify_all", &["owner"], 0),
    MethodSpec::optional("acquire_fenced", &["blocking", "timeout", "owner"], 0),
    MethodSpec::optional("release_fenced", &["token", "fully"], 1),
    MethodSpec::optional("wait_fenced", &["timeout", "owner"], 0),
];

/// Tells apart the grants each condition made on a shared lock.
static NEXT_CONDITION: AtomicU64 = AtomicU64::new(1);

/// What a Condition needs from the Lock or RLock it uses. `via` names the condition a
/// grant was made through, so the condition can release exactly those when a session
/// lets go of it; `owner` is the RLock owner name (a Lock ignores it).
pub trait ConditionLock {
    /// The lock's own acquire (lock timeout rules already applied).
    fn acquire_via(&mut self, caller: Caller, owner: Option<String>, wait: Wait, answer: Answer, via: u64) -> Outcome;
    /// The lock's own release.
    fn release_via(&mut self, caller: Caller, owner: &Option<String>) -> Result<(), WireError>;
    /// agora's `release_fenced(token, fully)`.
    fn release_token(&mut self, caller: Caller, token: Value, fully: bool) -> Result<(), WireError>;
    /// CPython's `Condition._is_owned`.
    fn is_owned(&self, session: u64, owner: &Option<String>) -> bool;
    /// CPython's `_release_save`: releases fully, returns the recursion count.
    fn release_save(&mut self, session: u64, owner: &Option<String>) -> Result<u64, WireError>;
    /// Queues a condition waiter to re-acquire with `count` (CPython's
    /// `_acquire_restore`); it is granted at once if the lock is free. It answers
    /// `answer` and never expires.
    fn reacquire(&mut self, waiter: Waiter, owner: Option<String>, count: u64, answer: Answer, via: u64);
    /// The lock's [`SharedObject::expire`] for a waiter queued through the condition.
    fn expire_waiter(&mut self, ticket: u64) -> Option<Completion>;
    /// The lock's [`SharedObject::abandon`] for a waiter queued through the condition.
    fn abandon_waiter(&mut self, ticket: u64, delivered: bool);
    /// Releases what `session` holds through the condition `via`.
    fn session_ended_via(&mut self, session: u64, via: u64);
    /// The lock's repr.
    fn describe(&self) -> String;
}

/// The condition's lock.
enum LockRef {
    /// `Condition()`: its own RLock.
    Own(RLockObject),
    /// `Condition(lock)`: a shared Lock or RLock.
    Shared(Arc<ObjectEntry>),
}

impl std::fmt::Debug for LockRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockRef::Own(_) => f.write_str("Own"),
            LockRef::Shared(entry) => write!(f, "Shared({entry:?})"),
        }
    }
}

/// Runs `f` on the lock, under the shared lock's own mutex when there is one.
fn with_lock<R>(lock: &mut LockRef, f: impl FnOnce(&mut dyn ConditionLock) -> R) -> Result<R, WireError> {
    match lock {
        LockRef::Own(rlock) => Ok(f(rlock)),
        LockRef::Shared(entry) => entry.with_object(|object| {
            let any = object.as_any_mut();
            if any.is::<LockObject>() {
                Ok(f(any.downcast_mut::<LockObject>().expect("checked")))
            } else if let Some(rlock) = any.downcast_mut::<RLockObject>() {
                Ok(f(rlock))
            } else {
                Err(WireError::new(ErrorCode::Internal, "a Condition's lock is neither a Lock nor an RLock"))
            }
        })?,
    }
}

/// A caller waiting to be notified.
#[derive(Debug)]
struct CondWaiter {
    waiter: Waiter,
    owner: Option<String>,
    /// The lock's recursion count to restore.
    saved: u64,
    fenced: bool,
}

/// A shared condition variable.
#[derive(Debug)]
pub struct ConditionObject {
    lock: LockRef,
    waiters: VecDeque<CondWaiter>,
    /// This condition's mark on the grants it makes.
    via: u64,
}

impl ConditionObject {
    /// `Condition(lock=None)`: `lock` is a reference to a shared Lock or RLock.
    pub fn new(mut args: Args, registry: &Registry) -> Result<ConditionObject, WireError> {
        let lock = match args.take(0) {
            None | Some(Value::None) => LockRef::Own(RLockObject::default()),
            Some(value) => {
                let Some(reference) = ObjectRef::from_value(&value) else {
                    return Err(WireError::new(
                        ErrorCode::AttributeError,
                        format!("'{}' object has no attribute 'acquire'", value.type_name()),
                    ));
                };
                let entry = registry.get(reference.id)?;
                if !matches!(entry.kind(), Kind::Lock | Kind::RLock) {
                    return Err(WireError::new(
                        ErrorCode::Unsupported,
                        format!("agora's Condition works with a Lock or an RLock, not a {}", entry.kind()),
                    ));
                }
                LockRef::Shared(entry)
            }
        };
        let via = NEXT_CONDITION.fetch_add(1, Ordering::Relaxed);
        Ok(ConditionObject { lock, waiters: VecDeque::new(), via })
    }

    fn wait(
        &mut self,
        caller: Caller,
        timeout: Option<Value>,
        owner: Option<String>,
        fenced: bool,
    ) -> Result<Outcome, WireError> {
        let (waiters, via) = (&mut self.waiters, self.via);
        with_lock(&mut self.lock, |lock| {
            if !lock.is_owned(caller.session, &owner) {
                return Err(grants::runtime_error("cannot wait on un-acquired lock"));
            }
            let wait = condition_wait(timeout)?;
            let saved = lock.release_save(caller.session, &owner)?;
            Ok(match wait {
                Wait::No => {
                    let (waiter, parked) = waiter::park(caller.session, None);
                    lock.reacquire(waiter, owner, saved, Answer::Wait { notified: false, fenced }, via);
                    Outcome::Park(parked)
                }
                Wait::Until(deadline) => {
                    let (waiter, parked) = waiter::park(caller.session, deadline);
                    waiters.push_back(CondWaiter { waiter, owner, saved, fenced });
                    Outcome::Park(parked)
                }
            })
        })?
    }

    /// Wakes waiters, oldest first, while `n` (any number, as CPython's loop) is
    /// positive; `None` wakes all.
    fn notify(&mut self, caller: Caller, n: Option<Value>, owner: Option<String>) -> Result<(), WireError> {
        let (waiters, via) = (&mut self.waiters, self.via);
        with_lock(&mut self.lock, |lock| {
            if !lock.is_owned(caller.session, &owner) {
                return Err(grants::runtime_error("cannot notify on un-acquired lock"));
            }
            waiters.retain(|w| !w.waiter.is_gone());
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
            while n > 0.0 {
                let Some(w) = waiters.pop_front() else { break };
                lock.reacquire(w.waiter, w.owner, w.saved, Answer::Wait { notified: true, fenced: w.fenced }, via);
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

    fn call(&mut self, caller: Caller, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        let via = self.via;
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = lock_wait(args.bool_or(0, true), args.take(1))?;
                let owner = owner_arg(args.take(2))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                with_lock(&mut self.lock, |lock| lock.acquire_via(caller, owner, wait, answer, via))
            }
            "release" => {
                let owner = owner_arg(args.take(0))?;
                with_lock(&mut self.lock, |lock| lock.release_via(caller, &owner))?.map(|()| Value::None.into())
            }
            "release_fenced" => {
                let (token, fully) = (args.required(0), args.bool_or(1, false));
                with_lock(&mut self.lock, |lock| lock.release_token(caller, token, fully))?.map(|()| Value::None.into())
            }
            "wait" | "wait_fenced" => {
                let timeout = args.take(0);
                let owner = owner_arg(args.take(1))?;
                self.wait(caller, timeout, owner, method == "wait_fenced")
            }
            "notify" => {
                let n = args.take(0).unwrap_or(Value::Int(1));
                let owner = owner_arg(args.take(1))?;
                self.notify(caller, Some(n), owner).map(|()| Value::None.into())
            }
            "notify_all" => {
                let owner = owner_arg(args.take(0))?;
                self.notify(caller, None, owner).map(|()| Value::None.into())
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Condition has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        let waiting = self.waiters.iter().filter(|w| !w.waiter.is_gone()).count();
        let pairs = [("lock", Value::Str(self.repr().into())), ("waiting", Value::Int(waiting as i64))];
        Dict::from_pairs(pairs.into_iter().map(|(k, v)| (Value::Str(k.into()), v))).map(Value::Dict).unwrap_or_default()
    }

    fn repr(&self) -> String {
        let lock = match &self.lock {
            LockRef::Own(rlock) => rlock.describe(),
            LockRef::Shared(entry) => entry.repr().unwrap_or_else(|e| format!("<{}>", e.message)),
        };
        format!("<Condition({lock}, {})>", self.waiters.len())
    }

    fn expire(&mut self, ticket: u64) -> Option<Completion> {
        let via = self.via;
        let Some(i) = self.waiters.iter().position(|w| w.waiter.ticket() == ticket) else {
            // An acquire through the condition, or a waiter already re-acquiring.
            return with_lock(&mut self.lock, |lock| lock.expire_waiter(ticket)).unwrap_or_else(|e| Some(Err(e)));
        };
        let w = self.waiters.remove(i).expect("found");
        // Timed out: it answers False, once it has the lock back.
        let answer = Answer::Wait { notified: false, fenced: w.fenced };
        match with_lock(&mut self.lock, |lock| lock.reacquire(w.waiter, w.owner, w.saved, answer, via)) {
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn abandon(&mut self, _caller: Caller, ticket: u64, delivered: Option<Value>) {
        if let Some(i) = self.waiters.iter().position(|w| w.waiter.ticket() == ticket) {
            self.waiters.remove(i);
            return;
        }
        let _ = with_lock(&mut self.lock, |lock| lock.abandon_waiter(ticket, delivered.is_some()));
    }

    fn session_ended(&mut self, session: u64) {
        match &mut self.lock {
            LockRef::Own(rlock) => rlock.session_ended(session),
            shared => {
                let via = self.via;
                let _ = with_lock(shared, |lock| lock.session_ended_via(session, via));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Caller = Caller { session: 1 };
    const B: Caller = Caller { session: 2 };

    fn call(
        c: &mut ConditionObject,
        caller: Caller,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Outcome, WireError> {
        c.call(caller, method, Args::from_values(method, args))
    }

    fn ready(outcome: Result<Outcome, WireError>) -> Value {
        match outcome.unwrap() {
            Outcome::Ready(v) => v,
            Outcome::Park(_) => panic!("parked"),
        }
    }

    fn parked(outcome: Result<Outcome, WireError>) -> waiter::Parked {
        match outcome.unwrap() {
            Outcome::Park(p) => p,
            Outcome::Ready(v) => panic!("ready with {v:?}"),
        }
    }

    fn own() -> ConditionObject {
        ConditionObject::new(Args::from_values("Condition", vec![]), &Registry::new()).unwrap()
    }

    #[test]
    fn wait_and_notify_need_the_lock() {
        let mut c = own();
        let err = call(&mut c, A, "wait", vec![]).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::RuntimeError, "cannot wait on un-acquired lock"));
        let err = call(&mut c, A, "notify", vec![]).unwrap_err();
        assert_eq!(err.message, "cannot notify on un-acquired lock");
        let err = call(&mut c, A, "release", vec![]).unwrap_err();
        assert_eq!(err.message, "cannot release un-acquired lock");
        assert!(c.repr().starts_with("<Condition(<unlocked _thread.RLock object owner=0 count=0 at 0x"));
    }

    #[tokio::test]
    async fn wait_releases_fully_and_reacquires_with_the_saved_count() {
        let mut c = own();
        ready(call(&mut c, A, "acquire", vec![]));
        ready(call(&mut c, A, "acquire", vec![]));
        let mut waiting = parked(call(&mut c, A, "wait_fenced", vec![]));
        // B can take the lock now, and notify.
        assert_eq!(ready(call(&mut c, B, "acquire", vec![])), Value::Bool(true));
        ready(call(&mut c, B, "notify", vec![]));
        assert!(waiting.rx.try_recv().is_err(), "still needs the lock");
        ready(call(&mut c, B, "release", vec![]));
        let Value::Tuple(pair) = waiting.rx.try_recv().unwrap().unwrap() else { panic!() };
        assert_eq!(pair[0], Value::Bool(true));
        // Two levels restored.
        ready(call(&mut c, A, "release", vec![]));
        assert_eq!(ready(call(&mut c, B, "acquire", vec![Value::Bool(false)])), Value::Bool(false));
        ready(call(&mut c, A, "release", vec![]));
        assert_eq!(ready(call(&mut c, B, "acquire", vec![Value::Bool(false)])), Value::Bool(true));
    }

    #[tokio::test]
    async fn a_timed_out_waiter_answers_false_after_reacquiring() {
        let mut c = own();
        ready(call(&mut c, A, "acquire", vec![]));
        let mut waiting = parked(call(&mut c, A, "wait", vec![Value::Float(30.0)]));
        ready(call(&mut c, B, "acquire", vec![]));
        assert!(c.expire(waiting.ticket).is_none(), "keeps waiting, for the lock");
        ready(call(&mut c, B, "release", vec![]));
        assert_eq!(waiting.rx.try_recv().unwrap().unwrap(), Value::Bool(false));
        // A zero timeout does not wait to be notified either.
        let mut again = parked(call(&mut c, A, "wait", vec![Value::Int(0)]));
        assert_eq!(again.rx.try_recv().unwrap().unwrap(), Value::Bool(false));
    }

    #[tokio::test]
    async fn notify_wakes_in_fifo_order() {
        let mut c = own();
        let mut order = Vec::new();
        for _ in 0..3 {
            ready(call(&mut c, A, "acquire", vec![]));
            order.push(parked(call(&mut c, A, "wait", vec![])));
        }
        ready(call(&mut c, B, "acquire", vec![]));
        ready(call(&mut c, B, "notify", vec![Value::Int(2)]));
        ready(call(&mut c, B, "release", vec![]));
        assert_eq!(order[0].rx.try_recv().unwrap().unwrap(), Value::Bool(true), "the oldest has the lock");
        assert!(order[1].rx.try_recv().is_err(), "the second waits for the lock");
        ready(call(&mut c, A, "release", vec![]));
        assert_eq!(order[1].rx.try_recv().unwrap().unwrap(), Value::Bool(true));
        ready(call(&mut c, A, "release", vec![]));
        assert!(order[2].rx.try_recv().is_err(), "never notified");
    }

    #[test]
    fn a_shared_lock_by_reference() {
        let registry = Registry::new();
        let lock = registry.create(&Kind::Lock, vec![], vec![]).unwrap();
        let reference = ObjectRef::new(lock.id(), "Lock").to_value();
        let mut c = ConditionObject::new(Args::from_values("Condition", vec![reference]), &registry).unwrap();
        ready(call(&mut c, A, "acquire", vec![]));
        assert_eq!(
            lock.call(B, "locked", vec![], vec![]).ok().map(|o| matches!(o, Outcome::Ready(Value::Bool(true)))),
            Some(true)
        );
        // The session lets go of the condition: what it holds through it is released.
        c.session_ended(A.session);
        assert!(matches!(
            lock.call(B, "acquire", vec![Value::Bool(false)], vec![]).unwrap(),
            Outcome::Ready(Value::Bool(true))
        ));
        let dict = registry.create(&Kind::Dict, vec![], vec![]).unwrap();
        let reference = ObjectRef::new(dict.id(), "dict").to_value();
        let err = ConditionObject::new(Args::from_values("Condition", vec![reference]), &registry).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported);
    }
}
