//! What the synchronization kinds share: the grant and orphan-credit bookkeeping of the
//! ownerless acquirers (Lock, Semaphore, BoundedSemaphore), fencing tokens, the shapes
//! an acquire answers in, and CPython's timeout argument rules.
//!
//! # Ownerless objects stay ownerless
//!
//! Python lets any process release a Lock or a semaphore, and real code does. So
//! [`Permits`] records every grant against the session that received it, and a release
//! clears the releasing session's own (oldest) grant if it has one, else the oldest
//! outstanding grant. When a session ends, its grants are released and each leaves an
//! *orphan credit*: a later release that would otherwise fail or over-release (an
//! unlocked Lock, a semaphore with no outstanding grant, a bounded semaphore at its
//! bound) consumes a credit instead and succeeds without changing the value. Both
//! orders of "holder dies" and "someone else releases" then end in the same state.
//!
//! # Hand-offs
//!
//! A release hands the permit straight to the first waiter in line, as a delivery that
//! names its grant's token ([`Reclaim::Grant`]), so a permit is never free while a
//! waiter waits. A waiter whose caller left is removed by its `Abandon`; a hand-off
//! that never reached its caller comes back through [`Permits::abandon`], which
//! releases exactly the grant with that token.
//!
//! # Fencing tokens
//!
//! Every grant of every lock and permit takes the next value of the engine's token
//! counter ([`Ctx::token`]), so the tokens of one lock strictly increase for the life
//! of the engine's state — even across deleting and re-creating a named lock.

use std::collections::VecDeque;
use std::time::Duration;

use agora_proto::native::ObjectId;
use agora_proto::{ErrorCode, Value, WireError};
use num_traits::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::engine::{Ctx, Reclaim, SessionId, Ticket, Time, Undelivered, Waiter};
use crate::object::{Holders, Holding, Outcome, Waiting};

/// CPython's `threading.TIMEOUT_MAX` on Linux, in seconds.
pub const TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// How a call was asked to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait: answer at once.
    No,
    /// Wait this long (`None`: forever).
    For(Option<Duration>),
}

impl Wait {
    /// The deadline of a wait that starts at `now` (`None`: forever).
    pub fn deadline(wait: Option<Duration>, now: Time) -> Option<Time> {
        wait.and_then(|d| now.after(d))
    }
}

/// A number argument as `f64`, or `None` if it is not a number (int, bool or float).
pub fn as_seconds(value: &Value) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Int(i) => Some(*i as f64),
        Value::BigInt(b) => Some(b.to_f64().unwrap_or(f64::INFINITY)),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// `_thread.lock.acquire(blocking, timeout)`'s argument rules (Lock, RLock, and a
/// Condition's acquire), with CPython 3.13's messages. A missing or `None` timeout and
/// `-1` mean "forever"; `0` means "do not wait".
pub fn lock_wait(blocking: bool, timeout: Option<Value>) -> Result<Wait, WireError> {
    // CPython converts the timeout first, then checks it against `blocking`; `-1` is
    // its "not given" value, so `acquire(False, -1)` is fine.
    let seconds = match timeout {
        None | Some(Value::None) => -1.0,
        Some(t) => as_seconds(&t).ok_or_else(|| not_an_integer(&t))?,
    };
    if seconds.is_nan() {
        return Err(WireError::value_error("Invalid value NaN (not a number)"));
    }
    if seconds == -1.0 {
        return Ok(if blocking { Wait::For(None) } else { Wait::No });
    }
    if !blocking {
        return Err(WireError::value_error("can't specify a timeout for a non-blocking call"));
    }
    if seconds < 0.0 {
        return Err(WireError::value_error("timeout value must be a non-negative number"));
    }
    if seconds > TIMEOUT_MAX {
        return Err(WireError::overflow_error("timeout value is too large"));
    }
    Ok(until(seconds))
}

/// `threading.Semaphore.acquire(blocking, timeout)`'s rules: a timeout with
/// `blocking=False` is a `ValueError`; a timeout of zero or less means "do not wait".
/// A timeout that is not a number fails only when the call would wait, as in CPython.
pub fn semaphore_wait(blocking: bool, timeout: Option<Value>) -> Result<SemaphoreWait, WireError> {
    let timeout = timeout.filter(|t| *t != Value::None);
    if !blocking && timeout.is_some() {
        return Err(WireError::value_error("can't specify timeout for non-blocking acquire"));
    }
    Ok(SemaphoreWait { blocking, timeout })
}

/// A semaphore acquire's wait, checked lazily (see [`semaphore_wait`]).
#[derive(Debug, Clone)]
pub struct SemaphoreWait {
    blocking: bool,
    timeout: Option<Value>,
}

impl SemaphoreWait {
    /// How to wait, now that the call must: CPython computes `_time() + timeout`, so
    /// a timeout that is not a number fails here, with its message.
    pub fn resolve(self) -> Result<Wait, WireError> {
        if !self.blocking {
            return Ok(Wait::No);
        }
        let Some(timeout) = self.timeout else { return Ok(Wait::For(None)) };
        let seconds = as_seconds(&timeout).ok_or_else(|| {
            WireError::type_error(format!("unsupported operand type(s) for +: 'float' and '{}'", timeout.type_name()))
        })?;
        if seconds.is_nan() {
            return Err(WireError::value_error("Invalid value NaN (not a number)"));
        }
        Ok(if seconds <= 0.0 { Wait::No } else { until(seconds) })
    }
}

/// `Condition.wait(timeout)` and `Event.wait(timeout)`: `None` waits forever, a
/// timeout of zero or less (or NaN) does not wait, and anything but a number is the
/// `TypeError` CPython's `timeout > 0` raises.
pub fn condition_wait(timeout: Option<Value>) -> Result<Wait, WireError> {
    match timeout {
        None | Some(Value::None) => Ok(Wait::For(None)),
        Some(t) => {
            let seconds = as_seconds(&t).ok_or_else(|| {
                WireError::type_error(format!("'>' not supported between instances of '{}' and 'int'", t.type_name()))
            })?;
            // `not (nan > 0)`: NaN does not wait either.
            Ok(if seconds > 0.0 { until(seconds) } else { Wait::No })
        }
    }
}

/// Waiting `seconds` from now (beyond what a deadline can express: forever).
fn until(seconds: f64) -> Wait {
    if seconds == 0.0 {
        return Wait::No;
    }
    // Negative and NaN timeouts are excluded above; too long to represent is forever.
    Wait::For(Duration::try_from_secs_f64(seconds).ok())
}

/// CPython's `TypeError` for a timeout that is not a number, in `_thread` locks.
fn not_an_integer(value: &Value) -> WireError {
    WireError::type_error(format!("'{}' object cannot be interpreted as an integer", value.type_name()))
}

/// The `owner` argument agora's native client adds to RLock and Condition calls (a
/// thread or task of the client); Python clients never send it, and then the session
/// alone owns. Strings and ints name owners; anything else is a `TypeError`.
pub fn owner_arg(value: Option<Value>) -> Result<Option<String>, WireError> {
    match value {
        None | Some(Value::None) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.into_string())),
        Some(Value::Int(i)) => Ok(Some(i.to_string())),
        Some(other) => Err(WireError::type_error(format!("owner must be a str or an int, not {}", other.type_name()))),
    }
}

/// What a granted waiter's call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Python's `acquire`: `True`.
    Bool,
    /// agora's `acquire_fenced`: the grant's token.
    Token,
    /// A condition wait re-acquiring its lock: `notified` (Python's `wait`), or with
    /// `fenced` the pair `(notified, token)` (agora's `wait_fenced`).
    Wait {
        /// Whether the waiter was notified (else it timed out).
        notified: bool,
        /// Whether to answer the new token too.
        fenced: bool,
    },
}

impl Answer {
    /// The value answered for a grant with `token`.
    pub fn value(self, token: u64) -> Value {
        match self {
            Answer::Bool => Value::Bool(true),
            Answer::Token => Value::Int(token as i64),
            Answer::Wait { notified, fenced: false } => Value::Bool(notified),
            Answer::Wait { notified, fenced: true } => {
                Value::Tuple(vec![Value::Bool(notified), Value::Int(token as i64)])
            }
        }
    }

    /// What an acquire answers when it gets nothing (non-blocking, or timed out).
    pub fn nothing() -> Value {
        Value::Bool(false)
    }

    /// Whether the waiter gives up at its deadline (an acquire) or must wait on
    /// without one (a condition wait re-acquiring its lock, as CPython does).
    pub fn expires(self) -> bool {
        !matches!(self, Answer::Wait { .. })
    }
}

/// One outstanding grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Grant {
    token: u64,
    session: SessionId,
    /// The Condition it was acquired through (0: directly).
    via: ObjectId,
    /// When it was granted.
    #[serde(default)]
    since: Time,
}

/// One waiting acquire.
#[derive(Debug, Serialize, Deserialize)]
struct Queued {
    waiter: Waiter,
    answer: Answer,
    via: ObjectId,
}

/// Counted permits with grants recorded per session, FIFO waiters and orphan credits:
/// a Lock is `Permits::new(1, Some(1))`, a Semaphore `Permits::new(value, None)`, a
/// BoundedSemaphore `Permits::new(value, Some(value))`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Permits {
    available: u64,
    bound: Option<u64>,
    grants: VecDeque<Grant>,
    credits: u64,
    queue: VecDeque<Queued>,
}

/// A release that would over-release (an unlocked Lock, a BoundedSemaphore at its
/// bound); each kind reports it with its own CPython message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverRelease;

impl Permits {
    /// `available` free permits; with a `bound`, releases never take the value above it.
    pub fn new(available: u64, bound: Option<u64>) -> Permits {
        Permits { available, bound, grants: VecDeque::new(), credits: 0, queue: VecDeque::new() }
    }

    /// Free permits (a Lock: 1 unlocked, 0 locked).
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Outstanding grants.
    pub fn outstanding(&self) -> usize {
        self.grants.len()
    }

    /// Orphan credits left by sessions that ended holding grants.
    pub fn credits(&self) -> u64 {
        self.credits
    }

    /// Waiting acquires (a waiter whose caller left is removed by its `Abandon`).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// The newest outstanding grant's token, if any (a Lock's current holder).
    pub fn current_token(&self) -> Option<u64> {
        self.grants.back().map(|g| g.token)
    }

    /// Takes a permit now if one is free; returns its token.
    fn take(&mut self, ctx: &mut Ctx<'_>, session: SessionId, via: ObjectId) -> Option<u64> {
        if self.available == 0 {
            return None;
        }
        self.available -= 1;
        let token = ctx.token();
        self.grants.push_back(Grant { token, session, via, since: ctx.now() });
        Some(token)
    }

    /// An acquire by the caller: a permit now, `False` without waiting, or a parked call.
    pub fn acquire(&mut self, ctx: &mut Ctx<'_>, wait: Wait, answer: Answer, via: ObjectId) -> Outcome {
        if let Some(token) = self.take(ctx, ctx.caller(), via) {
            return Outcome::Ready(answer.value(token));
        }
        match wait {
            Wait::No => Outcome::Ready(Answer::nothing()),
            Wait::For(wait) => {
                let waiter = ctx.park(Wait::deadline(wait, ctx.now()));
                self.queue.push_back(Queued { waiter, answer, via });
                Outcome::Parked
            }
        }
    }

    /// Queues `waiter` (a condition wait re-acquiring its lock) and serves the queue.
    pub fn enqueue(&mut self, ctx: &mut Ctx<'_>, waiter: Waiter, answer: Answer, via: ObjectId) {
        self.queue.push_back(Queued { waiter, answer, via });
        self.serve(ctx);
    }

    /// Releases `n` permits for `session` (see the module docs for whose grant each
    /// one clears), then hands freed permits to waiters. All or nothing: with a bound,
    /// a release that would exceed it changes nothing and fails.
    pub fn release(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) -> Result<(), OverRelease> {
        if let Some(bound) = self.bound {
            let free_room = bound.saturating_sub(self.available + self.grants.len() as u64);
            if n > self.grants.len() as u64 + self.credits + free_room {
                return Err(OverRelease);
            }
        }
        for _ in 0..n {
            let own = self.grants.iter().position(|g| g.session == session);
            if let Some(i) = own.or(if self.grants.is_empty() { None } else { Some(0) }) {
                self.grants.remove(i);
                self.available += 1;
            } else if self.credits > 0 {
                // The session end that left this credit already gave the permit back.
                self.credits -= 1;
            } else {
                self.available += 1;
            }
        }
        self.serve(ctx);
        Ok(())
    }

    /// Releases the grant with `token` if `session` holds it; false if it does not.
    pub fn release_token(&mut self, ctx: &mut Ctx<'_>, session: SessionId, token: u64) -> bool {
        let Some(i) = self.grants.iter().position(|g| g.token == token && g.session == session) else {
            return false;
        };
        self.grants.remove(i);
        self.available += 1;
        self.serve(ctx);
        true
    }

    /// Hands free permits to waiters, first come first served.
    fn serve(&mut self, ctx: &mut Ctx<'_>) {
        while self.available > 0 {
            let Some(Queued { waiter, answer, via }) = self.queue.pop_front() else { break };
            let token = self.take(ctx, waiter.session, via).expect("a permit is free");
            ctx.deliver(waiter, Ok(answer.value(token)), Reclaim::Grant(token));
        }
    }

    /// The deadline of waiter `ticket` passed: if it is queued (and not a condition
    /// re-acquire, which waits on without a deadline), remove it and answer `False`.
    pub fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        let Some(i) = self.queue.iter().position(|q| q.waiter.ticket == ticket) else { return };
        if !self.queue[i].answer.expires() {
            return;
        }
        let queued = self.queue.remove(i).expect("found");
        ctx.deliver(queued.waiter, Ok(Answer::nothing()), Reclaim::Nothing);
    }

    /// True if `ticket` waits here.
    pub fn is_queued(&self, ticket: Ticket) -> bool {
        self.queue.iter().any(|q| q.waiter.ticket == ticket)
    }

    /// The caller of `ticket` is gone: forget its waiter, and if a grant was
    /// delivered to it and never arrived, take that grant back (no orphan credit:
    /// nobody held it).
    pub fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.queue.retain(|q| q.waiter.ticket != ticket);
        if let Some(Undelivered { reclaim: Reclaim::Grant(token), .. }) = undelivered {
            if let Some(i) = self.grants.iter().position(|g| g.token == token) {
                self.grants.remove(i);
                self.available += 1;
                self.serve(ctx);
            }
        }
    }

    /// `session` ended: release its grants (those acquired through Condition `via`
    /// only, unless `via` is `None`), leaving an orphan credit for each.
    pub fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId, via: Option<ObjectId>) {
        let before = self.grants.len();
        self.grants.retain(|g| g.session != session || via.is_some_and(|v| g.via != v));
        let released = (before - self.grants.len()) as u64;
        self.available += released;
        self.credits += released;
        self.serve(ctx);
    }

    /// True if `session` holds a grant.
    pub fn holds(&self, session: SessionId) -> bool {
        self.grants.iter().any(|g| g.session == session)
    }

    /// The outstanding grants, oldest first, each described as `what` (`"lock"`,
    /// `"permit"`), and the waiting acquires in line order.
    pub fn holders(&self, what: &str) -> Holders {
        let held = self
            .grants
            .iter()
            .map(|g| Holding {
                session: g.session,
                since: g.since,
                token: Some(g.token),
                what: if g.via == 0 { what.to_owned() } else { format!("{what} (through condition {:x})", g.via) },
            })
            .collect();
        let waiting = self.queue.iter().map(|q| acquire_waiting(&q.waiter, &q.answer)).collect();
        Holders { held, waiting }
    }
}

/// A waiting acquire as the holder views show it: a plain acquire, or a condition
/// wait re-acquiring its lock (which has no deadline of its own).
pub fn acquire_waiting(waiter: &Waiter, answer: &Answer) -> Waiting {
    let what = if answer.expires() { "acquire" } else { "re-acquire after wait" };
    Waiting { session: waiter.session, ticket: waiter.ticket, what: what.to_owned() }
}

/// The `RuntimeError` every misuse of a lock raises.
pub fn runtime_error(message: &str) -> WireError {
    WireError::new(ErrorCode::RuntimeError, message)
}

/// A stable stand-in for CPython's `at 0x…` in reprs: the object's address.
pub fn address<T>(object: &T) -> String {
    format!("0x{:x}", object as *const T as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::Harness;

    const A: SessionId = 1;
    const B: SessionId = 2;

    fn ready(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Ready(v) => v,
            Outcome::Parked => panic!("parked"),
        }
    }

    #[test]
    fn lock_timeouts_follow_cpython() {
        let msg = |r: Result<Wait, WireError>| r.unwrap_err().message;
        assert_eq!(lock_wait(true, None).unwrap(), Wait::For(None));
        assert_eq!(lock_wait(false, None).unwrap(), Wait::No);
        assert_eq!(lock_wait(true, Some(Value::Int(-1))).unwrap(), Wait::For(None));
        assert_eq!(lock_wait(true, Some(Value::Int(0))).unwrap(), Wait::No);
        assert_eq!(lock_wait(false, Some(Value::Int(-1))).unwrap(), Wait::No, "-1 is CPython's 'not given'");
        assert_eq!(msg(lock_wait(false, Some(Value::Int(1)))), "can't specify a timeout for a non-blocking call");
        assert_eq!(msg(lock_wait(true, Some(Value::Float(-2.0)))), "timeout value must be a non-negative number");
        assert_eq!(msg(lock_wait(true, Some(Value::Float(1e10)))), "timeout value is too large");
        assert_eq!(msg(lock_wait(true, Some(Value::Float(f64::NAN)))), "Invalid value NaN (not a number)");
        assert_eq!(
            msg(lock_wait(true, Some(Value::Str("x".into())))),
            "'str' object cannot be interpreted as an integer"
        );
        assert_eq!(lock_wait(true, Some(Value::Float(0.5))).unwrap(), Wait::For(Some(Duration::from_millis(500))));
    }

    #[test]
    fn semaphore_and_condition_timeouts_follow_cpython() {
        assert_eq!(
            semaphore_wait(false, Some(Value::Int(1))).unwrap_err().message,
            "can't specify timeout for non-blocking acquire"
        );
        assert_eq!(semaphore_wait(true, Some(Value::Int(-1))).unwrap().resolve().unwrap(), Wait::No);
        let lazy = semaphore_wait(true, Some(Value::Str("x".into()))).unwrap();
        assert_eq!(lazy.resolve().unwrap_err().message, "unsupported operand type(s) for +: 'float' and 'str'");
        assert_eq!(condition_wait(Some(Value::Int(-1))).unwrap(), Wait::No);
        assert_eq!(condition_wait(Some(Value::Float(f64::NAN))).unwrap(), Wait::No);
        assert_eq!(
            condition_wait(Some(Value::Str("x".into()))).unwrap_err().message,
            "'>' not supported between instances of 'str' and 'int'"
        );
    }

    #[test]
    fn tokens_grow_and_a_release_clears_the_releasers_own_grant_first() {
        let mut h = Harness::default();
        let mut p = Permits::new(2, Some(2));
        let t1 = ready(p.acquire(&mut h.ctx(A), Wait::No, Answer::Token, 0));
        let t2 = ready(p.acquire(&mut h.ctx(B), Wait::No, Answer::Token, 0));
        assert!(t2.as_index() > t1.as_index());
        p.release(&mut h.ctx(B), B, 1).unwrap();
        assert!(p.holds(A) && !p.holds(B));
        // Someone with no grant clears the oldest one.
        p.release(&mut h.ctx(9), 9, 1).unwrap();
        assert!(!p.holds(A));
        assert_eq!(p.release(&mut h.ctx(9), 9, 1), Err(OverRelease));
    }

    #[test]
    fn orphan_credits_make_both_orders_end_alike() {
        let mut h = Harness::default();
        // Holder dies, then someone else releases: the release consumes the credit.
        let mut p = Permits::new(1, Some(1));
        ready(p.acquire(&mut h.ctx(A), Wait::No, Answer::Bool, 0));
        p.session_ended(&mut h.ctx(A), A, None);
        assert_eq!((p.available(), p.credits()), (1, 1));
        p.release(&mut h.ctx(B), B, 1).unwrap();
        assert_eq!((p.available(), p.credits()), (1, 0));
        assert_eq!(p.release(&mut h.ctx(B), B, 1), Err(OverRelease), "only once");
        // Someone else releases, then the holder dies: nothing left to release.
        let mut q = Permits::new(1, Some(1));
        ready(q.acquire(&mut h.ctx(A), Wait::No, Answer::Bool, 0));
        q.release(&mut h.ctx(B), B, 1).unwrap();
        q.session_ended(&mut h.ctx(A), A, None);
        assert_eq!((q.available(), q.credits()), (1, 0));
    }

    #[test]
    fn an_unbounded_semaphore_spends_credits_before_growing() {
        let mut h = Harness::default();
        let mut p = Permits::new(1, None);
        ready(p.acquire(&mut h.ctx(A), Wait::No, Answer::Bool, 0));
        p.session_ended(&mut h.ctx(A), A, None);
        p.release(&mut h.ctx(B), B, 1).unwrap();
        assert_eq!(p.available(), 1, "the credit absorbed the release");
        p.release(&mut h.ctx(B), B, 2).unwrap();
        assert_eq!(p.available(), 3);
    }

    #[test]
    fn hand_offs_go_in_order_and_come_back_when_undelivered() {
        let mut h = Harness::default();
        let mut p = Permits::new(1, Some(1));
        ready(p.acquire(&mut h.ctx(A), Wait::No, Answer::Bool, 0));
        assert_eq!(p.acquire(&mut h.ctx(B), Wait::For(None), Answer::Bool, 0), Outcome::Parked);
        let gone = h.parked().unwrap().ticket;
        assert_eq!(p.acquire(&mut h.ctx(B), Wait::For(None), Answer::Token, 0), Outcome::Parked);
        let live = h.parked().unwrap().ticket;
        // The first waiter's caller left: its Abandon removes it from the line.
        p.abandon(&mut h.ctx(B), gone, None);
        p.release(&mut h.ctx(A), A, 1).unwrap();
        let delivery = h.delivered_to(live).expect("the live waiter got it");
        let token = delivery.completion.clone().unwrap().as_index().unwrap() as u64;
        assert_eq!(delivery.reclaim, Reclaim::Grant(token));
        assert_eq!(p.available(), 0);
        // Its caller vanished after the hand-off: exactly that grant comes back.
        p.abandon(&mut h.ctx(B), live, delivery.undelivered());
        assert_eq!((p.available(), p.outstanding(), p.credits()), (1, 0, 0));
    }

    #[test]
    fn expiry_answers_false_but_not_for_condition_reacquires() {
        let mut h = Harness::default();
        let mut p = Permits::new(0, Some(1));
        assert_eq!(p.acquire(&mut h.ctx(A), Wait::For(None), Answer::Bool, 0), Outcome::Parked);
        let acq = h.parked().unwrap().ticket;
        p.expire(&mut h.ctx(A), acq);
        assert_eq!(h.delivered_to(acq).unwrap().completion.unwrap(), Value::Bool(false));
        let w = h.ctx(A).park(None);
        p.enqueue(&mut h.ctx(A), w, Answer::Wait { notified: true, fenced: false }, 7);
        p.expire(&mut h.ctx(A), w.ticket);
        assert!(h.delivered_to(w.ticket).is_none());
        assert!(p.is_queued(w.ticket));
    }
}
