//! The shared `RLock` (Python's `SyncManager.RLock()`, a `threading.RLock`): a
//! re-entrant lock with an owner, CPython's semantics and error texts, plus agora's
//! fencing tokens.
//!
//! The owner is the session together with the owner name the caller gives in the
//! optional `owner` argument (agora's native client names the calling thread or task);
//! Python clients never send one, so for them the session (their connection) alone
//! owns, as a CPython manager's server thread per connection does. Only the owner
//! releases, and when its session ends the lock is released however deep the
//! recursion, and the next waiter is served.
//!
//! Methods: Python's `acquire(blocking=True, timeout=-1)` → bool and `release()`, each
//! with agora's optional `owner`; agora's `acquire_fenced(blocking=True, timeout=-1,
//! owner=None)` → the hold's fencing token or `False` (re-entrant acquires answer the
//! same token), and `release_fenced(token, fully=False)` (releases one level, or the
//! whole hold, of the hold with that token if this session owns it).

use std::collections::VecDeque;

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

use super::condition::ConditionLock;
use super::grants::{self, lock_wait, owner_arg, Answer, Wait};
use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::waiter::{self, Completion, Waiter};

/// `RLock()`.
pub const CONSTRUCTOR: MethodSpec = MethodSpec::new("RLock", &[]);

/// CPython's `AcquirerProxy` methods (with agora's `owner`), then agora's.
const METHODS: &[MethodSpec] = &[
    MethodSpec::optional("acquire", &["blocking", "timeout", "owner"], 0),
    MethodSpec::optional("release", &["owner"], 0),
    MethodSpec::optional("acquire_fenced", &["blocking", "timeout", "owner"], 0),
    MethodSpec::optional("release_fenced", &["token", "fully"], 1),
];

const NOT_OWNED: &str = "cannot release un-acquired lock";

/// Who holds the lock, how deep, and under which token.
#[derive(Debug, Clone)]
struct Hold {
    session: u64,
    owner: Option<String>,
    count: u64,
    token: u64,
    /// The parked call it was handed to, if it was handed off (for `abandon`).
    ticket: Option<u64>,
    /// The Condition it was first acquired through (0: directly).
    via: u64,
}

impl Hold {
    fn is(&self, session: u64, owner: &Option<String>) -> bool {
        self.session == session && self.owner == *owner
    }
}

/// One waiting acquire (or condition re-acquire, which restores `count`).
#[derive(Debug)]
struct Queued {
    waiter: Waiter,
    owner: Option<String>,
    count: u64,
    answer: Answer,
    via: u64,
}

/// A shared re-entrant lock.
#[derive(Debug, Default)]
pub struct RLockObject {
    hold: Option<Hold>,
    queue: VecDeque<Queued>,
}

impl RLockObject {
    /// `RLock()`: unlocked.
    pub fn new(_args: Args) -> Result<RLockObject, WireError> {
        Ok(RLockObject::default())
    }

    /// True while some owner holds the lock.
    pub fn is_locked(&self) -> bool {
        self.hold.is_some()
    }

    /// An acquire by `owner` of `caller`'s session.
    fn acquire(&mut self, caller: Caller, owner: Option<String>, wait: Wait, answer: Answer, via: u64) -> Outcome {
        match &mut self.hold {
            Some(hold) if hold.is(caller.session, &owner) => {
                hold.count += 1;
                Outcome::Ready(answer.value(hold.token))
            }
            None => {
                let token = grants::next_token();
                self.hold = Some(Hold { session: caller.session, owner, count: 1, token, ticket: None, via });
                Outcome::Ready(answer.value(token))
            }
            Some(_) => match wait {
                Wait::No => Outcome::Ready(Answer::nothing()),
                Wait::Until(deadline) => {
                    let (waiter, parked) = waiter::park(caller.session, deadline);
                    self.queue.push_back(Queued { waiter, owner, count: 1, answer, via });
                    Outcome::Park(parked)
                }
            },
        }
    }

    /// One level of `owner`'s hold.
    fn release(&mut self, session: u64, owner: &Option<String>) -> Result<(), WireError> {
        match &mut self.hold {
            Some(hold) if hold.is(session, owner) => {
                hold.count -= 1;
                if hold.count == 0 {
                    self.hold = None;
                    self.serve();
                }
                Ok(())
            }
            _ => Err(grants::runtime_error(NOT_OWNED)),
        }
    }

    /// One level (or all) of the hold with `token`, if `session` owns it.
    fn release_fenced(&mut self, session: u64, token: Value, fully: bool) -> Result<(), WireError> {
        let Some(token) = token.as_index() else {
            return Err(WireError::type_error(format!("token must be an int, not {}", token.type_name())));
        };
        match &mut self.hold {
            Some(hold) if hold.session == session && hold.token == token as u64 => {
                hold.count = if fully { 0 } else { hold.count - 1 };
                if hold.count == 0 {
                    self.hold = None;
                    self.serve();
                }
                Ok(())
            }
            _ => Err(grants::runtime_error(NOT_OWNED)),
        }
    }

    /// Hands a free lock to the first waiter still there.
    fn serve(&mut self) {
        while self.hold.is_none() {
            let Some(Queued { waiter, owner, count, answer, via }) = self.queue.pop_front() else { break };
            let token = grants::next_token();
            let ticket = Some(waiter.ticket());
            self.hold = Some(Hold { session: waiter.session(), owner, count, token, ticket, via });
            if waiter.complete(Ok(answer.value(token))).is_err() {
                // Its caller is gone: nobody got the lock.
                self.hold = None;
            }
        }
    }

    fn expire_ticket(&mut self, ticket: u64) -> Option<Completion> {
        let i = self.queue.iter().position(|q| q.waiter.ticket() == ticket)?;
        if !self.queue[i].answer.expires() {
            return None;
        }
        self.queue.remove(i);
        Some(Ok(Answer::nothing()))
    }

    fn abandon_ticket(&mut self, ticket: u64, delivered: bool) {
        self.queue.retain(|q| q.waiter.ticket() != ticket);
        if delivered && self.hold.as_ref().is_some_and(|h| h.ticket == Some(ticket)) {
            self.hold = None;
            self.serve();
        }
    }

    fn end_session(&mut self, session: u64, via: Option<u64>) {
        let ends = |h: &Hold| h.session == session && via.is_none_or(|v| h.via == v);
        if self.hold.as_ref().is_some_and(ends) {
            self.hold = None;
            self.serve();
        }
    }
}

impl SharedObject for RLockObject {
    fn kind(&self) -> Kind {
        Kind::RLock
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, caller: Caller, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = lock_wait(args.bool_or(0, true), args.take(1))?;
                let owner = owner_arg(args.take(2))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                Ok(self.acquire(caller, owner, wait, answer, 0))
            }
            "release" => {
                let owner = owner_arg(args.take(0))?;
                self.release(caller.session, &owner).map(|()| Value::None.into())
            }
            "release_fenced" => {
                let (token, fully) = (args.required(0), args.bool_or(1, false));
                self.release_fenced(caller.session, token, fully).map(|()| Value::None.into())
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("RLock has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        let hold = self.hold.as_ref();
        let pairs = [
            ("locked", Value::Bool(hold.is_some())),
            ("session", hold.map_or(Value::None, |h| Value::Int(h.session as i64))),
            ("owner", hold.and_then(|h| h.owner.clone()).map_or(Value::None, |o| Value::Str(o.into()))),
            ("count", Value::Int(hold.map_or(0, |h| h.count as i64))),
            ("token", hold.map_or(Value::None, |h| Value::Int(h.token as i64))),
        ];
        Dict::from_pairs(pairs.into_iter().map(|(k, v)| (Value::Str(k.into()), v))).map(Value::Dict).unwrap_or_default()
    }

    fn repr(&self) -> String {
        let (state, owner, count) = match &self.hold {
            Some(h) => ("locked", h.session, h.count),
            None => ("unlocked", 0, 0),
        };
        format!("<{state} _thread.RLock object owner={owner} count={count} at {}>", grants::address(self))
    }

    fn expire(&mut self, ticket: u64) -> Option<Completion> {
        self.expire_ticket(ticket)
    }

    fn abandon(&mut self, _caller: Caller, ticket: u64, delivered: Option<Value>) {
        self.abandon_ticket(ticket, delivered.is_some());
    }

    fn session_ended(&mut self, session: u64) {
        self.end_session(session, None);
    }
}

impl ConditionLock for RLockObject {
    fn acquire_via(&mut self, caller: Caller, owner: Option<String>, wait: Wait, answer: Answer, via: u64) -> Outcome {
        self.acquire(caller, owner, wait, answer, via)
    }

    fn release_via(&mut self, caller: Caller, owner: &Option<String>) -> Result<(), WireError> {
        self.release(caller.session, owner)
    }

    fn release_token(&mut self, caller: Caller, token: Value, fully: bool) -> Result<(), WireError> {
        self.release_fenced(caller.session, token, fully)
    }

    fn is_owned(&self, session: u64, owner: &Option<String>) -> bool {
        self.hold.as_ref().is_some_and(|h| h.is(session, owner))
    }

    fn release_save(&mut self, session: u64, owner: &Option<String>) -> Result<u64, WireError> {
        match self.hold.take() {
            Some(hold) if hold.is(session, owner) => {
                self.serve();
                Ok(hold.count)
            }
            other => {
                self.hold = other;
                Err(grants::runtime_error(NOT_OWNED))
            }
        }
    }

    fn reacquire(&mut self, waiter: Waiter, owner: Option<String>, count: u64, answer: Answer, via: u64) {
        self.queue.push_back(Queued { waiter, owner, count, answer, via });
        self.serve();
    }

    fn expire_waiter(&mut self, ticket: u64) -> Option<Completion> {
        self.expire_ticket(ticket)
    }

    fn abandon_waiter(&mut self, ticket: u64, delivered: bool) {
        self.abandon_ticket(ticket, delivered);
    }

    fn session_ended_via(&mut self, session: u64, via: u64) {
        self.end_session(session, Some(via));
    }

    fn describe(&self) -> String {
        self.repr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Caller = Caller { session: 1 };
    const B: Caller = Caller { session: 2 };

    fn call(lock: &mut RLockObject, caller: Caller, method: &'static str, args: Vec<Value>) -> Outcome {
        lock.call(caller, method, Args::from_values(method, args)).unwrap()
    }

    fn ready(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Ready(v) => v,
            Outcome::Park(_) => panic!("parked"),
        }
    }

    fn owner(name: &str) -> Value {
        Value::Str(name.into())
    }

    #[test]
    fn reentrant_per_owner_with_one_token_per_hold() {
        let mut lock = RLockObject::default();
        let no = Value::None;
        let t1 = ready(call(&mut lock, A, "acquire_fenced", vec![Value::Bool(true), no.clone(), owner("t1")]));
        let again = ready(call(&mut lock, A, "acquire_fenced", vec![Value::Bool(true), no.clone(), owner("t1")]));
        assert_eq!(t1, again, "re-entrant acquires answer the same token");
        // Another owner of the same session, and another session, are refused.
        let other = vec![Value::Bool(false), no.clone(), owner("t2")];
        assert_eq!(ready(call(&mut lock, A, "acquire", other)), Value::Bool(false));
        assert_eq!(ready(call(&mut lock, B, "acquire", vec![Value::Bool(false)])), Value::Bool(false));
        let err = lock.call(B, "release", Args::from_values("release", vec![])).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::RuntimeError, "cannot release un-acquired lock"));
        ready(call(&mut lock, A, "release", vec![owner("t1")]));
        assert!(lock.is_locked(), "one level left");
        ready(call(&mut lock, A, "release", vec![owner("t1")]));
        assert!(!lock.is_locked());
        let t2 = ready(call(&mut lock, B, "acquire_fenced", vec![]));
        assert!(t2.as_index() > t1.as_index());
    }

    #[tokio::test]
    async fn a_session_end_releases_the_whole_hold_and_serves_the_next() {
        let mut lock = RLockObject::default();
        ready(call(&mut lock, A, "acquire", vec![]));
        ready(call(&mut lock, A, "acquire", vec![]));
        let Outcome::Park(mut parked) = call(&mut lock, B, "acquire", vec![]) else { panic!("B waits") };
        lock.session_ended(A.session);
        assert_eq!(parked.rx.try_recv().unwrap().unwrap(), Value::Bool(true));
        assert!(lock.is_owned(B.session, &None));
        assert!(lock.repr().starts_with("<locked _thread.RLock object owner=2 count=1 at 0x"));
    }
}
