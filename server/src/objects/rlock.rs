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
//! A release that frees the lock hands it straight to the first waiter in line, as a
//! delivery naming the new hold's fencing token ([`Reclaim::Grant`]). A waiter whose
//! caller left is removed by its `Abandon`; a hand-off that never reached its caller
//! comes back in that `Abandon`, which drops the hold with exactly that token (if it
//! is still the current one) and serves the next waiter.
//!
//! Methods: Python's `acquire(blocking=True, timeout=-1)` → bool and `release()`, each
//! with agora's optional `owner`; agora's `acquire_fenced(blocking=True, timeout=-1,
//! owner=None)` → the hold's fencing token or `False` (re-entrant acquires answer the
//! same token), and `release_fenced(token, fully=False)` (releases one level, or the
//! whole hold, of the hold with that token if this session owns it).

use std::collections::VecDeque;

use agora_proto::native::{Kind, ObjectId};
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::condition::ConditionLock;
use super::grants::{self, lock_wait, owner_arg, Answer, Wait};
use crate::engine::{Ctx, Reclaim, SessionId, Ticket, Time, Undelivered, Waiter};
use crate::object::{encode_state, Args, Holders, Holding, MethodSpec, Outcome, SharedObject};

/// The kind's constructor and methods, declared in [`agora_proto::methods::rlock`].
pub use agora_proto::methods::rlock::CONSTRUCTOR;
use agora_proto::methods::rlock::METHODS;

const NOT_OWNED: &str = "cannot release un-acquired lock";

/// Who holds the lock, how deep, and under which token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hold {
    session: SessionId,
    owner: Option<String>,
    count: u64,
    token: u64,
    /// The Condition it was first acquired through (0: directly).
    via: ObjectId,
    /// When it was first acquired.
    #[serde(default)]
    since: Time,
}

impl Hold {
    fn is(&self, session: SessionId, owner: &Option<String>) -> bool {
        self.session == session && self.owner == *owner
    }
}

/// One waiting acquire (or condition re-acquire, which restores `count`).
#[derive(Debug, Serialize, Deserialize)]
struct Queued {
    waiter: Waiter,
    owner: Option<String>,
    count: u64,
    answer: Answer,
    via: ObjectId,
}

/// A shared re-entrant lock.
#[derive(Debug, Default, Serialize, Deserialize)]
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

    /// An acquire by `owner` of the caller's session.
    fn acquire(
        &mut self,
        ctx: &mut Ctx<'_>,
        owner: Option<String>,
        wait: Wait,
        answer: Answer,
        via: ObjectId,
    ) -> Outcome {
        let session = ctx.caller();
        match &mut self.hold {
            Some(hold) if hold.is(session, &owner) => {
                hold.count += 1;
                Outcome::Ready(answer.value(hold.token))
            }
            None => {
                let token = ctx.token();
                self.hold = Some(Hold { session, owner, count: 1, token, via, since: ctx.now() });
                Outcome::Ready(answer.value(token))
            }
            Some(_) => match wait {
                Wait::No => Outcome::Ready(Answer::nothing()),
                Wait::For(wait) => {
                    let waiter = ctx.park(Wait::deadline(wait, ctx.now()));
                    self.queue.push_back(Queued { waiter, owner, count: 1, answer, via });
                    Outcome::Parked
                }
            },
        }
    }

    /// One level of `owner`'s hold.
    fn release(&mut self, ctx: &mut Ctx<'_>, owner: &Option<String>) -> Result<(), WireError> {
        match &mut self.hold {
            Some(hold) if hold.is(ctx.caller(), owner) => {
                hold.count -= 1;
                if hold.count == 0 {
                    self.hold = None;
                    self.serve(ctx);
                }
                Ok(())
            }
            _ => Err(grants::runtime_error(NOT_OWNED)),
        }
    }

    /// One level (or all) of the hold with `token`, if the caller's session owns it.
    fn release_fenced(&mut self, ctx: &mut Ctx<'_>, token: Value, fully: bool) -> Result<(), WireError> {
        let Some(token) = token.as_index() else {
            return Err(WireError::type_error(format!("token must be an int, not {}", token.type_name())));
        };
        match &mut self.hold {
            Some(hold) if hold.session == ctx.caller() && hold.token == token as u64 => {
                hold.count = if fully { 0 } else { hold.count - 1 };
                if hold.count == 0 {
                    self.hold = None;
                    self.serve(ctx);
                }
                Ok(())
            }
            _ => Err(grants::runtime_error(NOT_OWNED)),
        }
    }

    /// Hands a free lock to the first waiter in line.
    fn serve(&mut self, ctx: &mut Ctx<'_>) {
        if self.hold.is_some() {
            return;
        }
        let Some(Queued { waiter, owner, count, answer, via }) = self.queue.pop_front() else { return };
        let token = ctx.token();
        self.hold = Some(Hold { session: waiter.session, owner, count, token, via, since: ctx.now() });
        ctx.deliver(waiter, Ok(answer.value(token)), Reclaim::Grant(token));
    }

    /// The deadline of waiter `ticket` passed: if it is queued (and not a condition
    /// re-acquire, which waits on without a deadline), remove it and answer `False`.
    fn expire_ticket(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        let Some(i) = self.queue.iter().position(|q| q.waiter.ticket == ticket) else { return };
        if !self.queue[i].answer.expires() {
            return;
        }
        let queued = self.queue.remove(i).expect("found");
        ctx.deliver(queued.waiter, Ok(Answer::nothing()), Reclaim::Nothing);
    }

    /// The caller of `ticket` is gone: forget its waiter, and if the lock was handed to
    /// it and never arrived, drop that hold (if it is still the current one).
    fn abandon_ticket(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.queue.retain(|q| q.waiter.ticket != ticket);
        if let Some(Undelivered { reclaim: Reclaim::Grant(token), .. }) = undelivered {
            if self.hold.as_ref().is_some_and(|h| h.token == token) {
                self.hold = None;
                self.serve(ctx);
            }
        }
    }

    fn end_session(&mut self, ctx: &mut Ctx<'_>, session: SessionId, via: Option<ObjectId>) {
        let ends = |h: &Hold| h.session == session && via.is_none_or(|v| h.via == v);
        if self.hold.as_ref().is_some_and(ends) {
            self.hold = None;
            self.serve(ctx);
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

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = lock_wait(args.bool_or(0, true), args.take(1))?;
                let owner = owner_arg(args.take(2))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                Ok(self.acquire(ctx, owner, wait, answer, 0))
            }
            "release" => {
                let owner = owner_arg(args.take(0))?;
                self.release(ctx, &owner).map(|()| Value::None.into())
            }
            "release_fenced" => {
                let (token, fully) = (args.required(0), args.bool_or(1, false));
                self.release_fenced(ctx, token, fully).map(|()| Value::None.into())
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

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        let (state, owner, count) = match &self.hold {
            Some(h) => ("locked", h.session, h.count),
            None => ("unlocked", 0, 0),
        };
        format!("<{state} _thread.RLock object owner={owner} count={count} at {}>", grants::address(self))
    }

    fn holds_session_state(&self) -> bool {
        true
    }

    fn as_condition_lock(&mut self) -> Option<&mut dyn ConditionLock> {
        Some(self)
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        self.expire_ticket(ctx, ticket);
    }

    fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.abandon_ticket(ctx, ticket, undelivered);
    }

    fn holders(&self) -> Holders {
        let held = self
            .hold
            .iter()
            .map(|h| Holding {
                session: h.session,
                since: h.since,
                token: Some(h.token),
                what: match &h.owner {
                    Some(owner) => format!("owner {owner}, depth {}", h.count),
                    None => format!("depth {}", h.count),
                },
            })
            .collect();
        let waiting = self.queue.iter().map(|q| grants::acquire_waiting(&q.waiter, &q.answer)).collect();
        Holders { held, waiting }
    }

    fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        self.end_session(ctx, session, None);
    }
}

impl ConditionLock for RLockObject {
    fn acquire_via(
        &mut self,
        ctx: &mut Ctx<'_>,
        owner: Option<String>,
        wait: Wait,
        answer: Answer,
        via: ObjectId,
    ) -> Outcome {
        self.acquire(ctx, owner, wait, answer, via)
    }

    fn release_via(&mut self, ctx: &mut Ctx<'_>, owner: &Option<String>) -> Result<(), WireError> {
        self.release(ctx, owner)
    }

    fn release_token(&mut self, ctx: &mut Ctx<'_>, token: Value, fully: bool) -> Result<(), WireError> {
        self.release_fenced(ctx, token, fully)
    }

    fn is_owned(&self, session: SessionId, owner: &Option<String>) -> bool {
        self.hold.as_ref().is_some_and(|h| h.is(session, owner))
    }

    fn release_save(&mut self, ctx: &mut Ctx<'_>, owner: &Option<String>) -> Result<u64, WireError> {
        match self.hold.take() {
            Some(hold) if hold.is(ctx.caller(), owner) => {
                self.serve(ctx);
                Ok(hold.count)
            }
            other => {
                self.hold = other;
                Err(grants::runtime_error(NOT_OWNED))
            }
        }
    }

    fn reacquire(
        &mut self,
        ctx: &mut Ctx<'_>,
        waiter: Waiter,
        owner: Option<String>,
        count: u64,
        answer: Answer,
        via: ObjectId,
    ) {
        self.queue.push_back(Queued { waiter, owner, count, answer, via });
        self.serve(ctx);
    }

    fn expire_waiter(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        self.expire_ticket(ctx, ticket);
    }

    fn abandon_waiter(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.abandon_ticket(ctx, ticket, undelivered);
    }

    fn session_ended_via(&mut self, ctx: &mut Ctx<'_>, session: SessionId, via: ObjectId) {
        self.end_session(ctx, session, Some(via));
    }

    fn describe(&self) -> String {
        self.repr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Harness;

    const A: SessionId = 1;
    const B: SessionId = 2;

    fn call(
        h: &mut Harness,
        lock: &mut RLockObject,
        caller: SessionId,
        method: &'static str,
        args: Vec<Value>,
    ) -> Outcome {
        lock.call(&mut h.ctx(caller), method, Args::from_values(method, args)).unwrap()
    }

    fn ready(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Ready(v) => v,
            Outcome::Parked => panic!("parked"),
        }
    }

    /// The ticket of a call that must park.
    fn parks(h: &mut Harness, outcome: Outcome) -> Ticket {
        assert_eq!(outcome, Outcome::Parked);
        h.parked().expect("a parked call").ticket
    }

    fn owner(name: &str) -> Value {
        Value::Str(name.into())
    }

    #[test]
    fn reentrant_per_owner_with_one_token_per_hold() {
        let mut h = Harness::default();
        let mut lock = RLockObject::default();
        let no = Value::None;
        let t1 = ready(call(&mut h, &mut lock, A, "acquire_fenced", vec![Value::Bool(true), no.clone(), owner("t1")]));
        let again =
            ready(call(&mut h, &mut lock, A, "acquire_fenced", vec![Value::Bool(true), no.clone(), owner("t1")]));
        assert_eq!(t1, again, "re-entrant acquires answer the same token");
        // Another owner of the same session, and another session, are refused.
        let other = vec![Value::Bool(false), no.clone(), owner("t2")];
        assert_eq!(ready(call(&mut h, &mut lock, A, "acquire", other)), Value::Bool(false));
        assert_eq!(ready(call(&mut h, &mut lock, B, "acquire", vec![Value::Bool(false)])), Value::Bool(false));
        let err = lock.call(&mut h.ctx(B), "release", Args::from_values("release", vec![])).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::RuntimeError, "cannot release un-acquired lock"));
        ready(call(&mut h, &mut lock, A, "release", vec![owner("t1")]));
        assert!(lock.is_locked(), "one level left");
        ready(call(&mut h, &mut lock, A, "release", vec![owner("t1")]));
        assert!(!lock.is_locked());
        let t2 = ready(call(&mut h, &mut lock, B, "acquire_fenced", vec![]));
        assert!(t2.as_index() > t1.as_index());
    }

    #[test]
    fn a_session_end_releases_the_whole_hold_and_serves_the_next() {
        let mut h = Harness::default();
        let mut lock = RLockObject::default();
        ready(call(&mut h, &mut lock, A, "acquire", vec![]));
        ready(call(&mut h, &mut lock, A, "acquire", vec![]));
        let outcome = call(&mut h, &mut lock, B, "acquire", vec![]);
        let waiting = parks(&mut h, outcome);
        lock.session_ended(&mut h.ctx(A), A);
        let delivery = h.delivered_to(waiting).expect("B was served");
        assert_eq!(delivery.completion.unwrap(), Value::Bool(true));
        assert!(matches!(delivery.reclaim, Reclaim::Grant(_)));
        assert!(lock.is_owned(B, &None));
        assert!(lock.repr().starts_with("<locked _thread.RLock object owner=2 count=1 at 0x"));
    }

    #[test]
    fn an_undelivered_hand_off_drops_the_hold_and_serves_the_next() {
        let mut h = Harness::default();
        let mut lock = RLockObject::default();
        ready(call(&mut h, &mut lock, A, "acquire", vec![]));
        let outcome = call(&mut h, &mut lock, B, "acquire_fenced", vec![]);
        let gone = parks(&mut h, outcome);
        let outcome = call(&mut h, &mut lock, 3, "acquire", vec![]);
        let next = parks(&mut h, outcome);
        ready(call(&mut h, &mut lock, A, "release", vec![]));
        let delivery = h.delivered_to(gone).expect("B was handed the lock");
        let token = delivery.completion.clone().unwrap().as_index().unwrap() as u64;
        assert_eq!(delivery.reclaim, Reclaim::Grant(token));
        assert!(lock.is_owned(B, &None));
        // B's caller had left: the hold with that token is dropped, and 3 is served.
        lock.abandon(&mut h.ctx(B), gone, delivery.undelivered());
        assert_eq!(h.delivered_to(next).unwrap().completion.unwrap(), Value::Bool(true));
        assert!(lock.is_owned(3, &None));
        // A stale grant coming back takes nothing from the current holder.
        let stale = Undelivered { reclaim: Reclaim::Grant(token), value: Value::Int(token as i64) };
        lock.abandon(&mut h.ctx(B), gone, Some(stale));
        assert!(lock.is_owned(3, &None));
    }

    #[test]
    fn a_waiter_that_left_is_removed_and_expiry_after_delivery_is_a_no_op() {
        let mut h = Harness::default();
        let mut lock = RLockObject::default();
        ready(call(&mut h, &mut lock, A, "acquire", vec![]));
        let outcome = call(&mut h, &mut lock, B, "acquire", vec![Value::Bool(true), Value::Float(5.0)]);
        let left = parks(&mut h, outcome);
        let outcome = call(&mut h, &mut lock, 3, "acquire", vec![Value::Bool(true), Value::Float(5.0)]);
        let timed = parks(&mut h, outcome);
        let outcome = call(&mut h, &mut lock, 4, "acquire", vec![]);
        let served = parks(&mut h, outcome);
        // B's caller left while queued; 3 timed out.
        lock.abandon(&mut h.ctx(B), left, None);
        lock.expire(&mut h.ctx(3), timed);
        assert_eq!(h.delivered_to(timed).unwrap().completion.unwrap(), Value::Bool(false));
        ready(call(&mut h, &mut lock, A, "release", vec![]));
        assert!(h.delivered_to(left).is_none());
        assert_eq!(h.delivered_to(served).unwrap().completion.unwrap(), Value::Bool(true));
        assert!(lock.is_owned(4, &None));
        // An expiry that comes after the hand-off changes nothing.
        lock.expire(&mut h.ctx(4), served);
        assert!(h.deliveries().is_empty());
        assert!(lock.is_owned(4, &None));
    }

    #[test]
    fn holders_show_the_owner_depth_and_token() {
        let mut h = Harness::default();
        let mut lock = RLockObject::default();
        let args = || vec![Value::Bool(true), Value::None, owner("t1")];
        let token = ready(call(&mut h, &mut lock, A, "acquire_fenced", args())).as_index().unwrap() as u64;
        ready(call(&mut h, &mut lock, A, "acquire_fenced", args()));
        let outcome = call(&mut h, &mut lock, B, "acquire", vec![]);
        let ticket = parks(&mut h, outcome);
        let holders = lock.holders();
        let held = &holders.held[0];
        assert_eq!((held.session, held.token, held.what.as_str()), (A, Some(token), "owner t1, depth 2"));
        assert_eq!(holders.waiting.iter().map(|w| (w.session, w.ticket)).collect::<Vec<_>>(), vec![(B, ticket)]);
    }
}
