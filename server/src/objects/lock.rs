//! The shared `Lock` (Python's `SyncManager.Lock()`, a `threading.Lock`): CPython's
//! `_thread.lock` semantics and error texts, plus agora's fencing tokens.
//!
//! A Lock has no owner, as in Python: any session may release it. Grants are still
//! recorded per session ([`Permits`]), so a session that ends holding the lock
//! releases it, leaving an orphan credit for whoever was going to release it for the
//! dead holder (see [`super::grants`]).
//!
//! Methods: Python's `acquire(blocking=True, timeout=-1)` → bool and `release()`;
//! agora's `acquire_fenced(blocking=True, timeout=-1)` → the grant's fencing token (an
//! int) or `False`, `release_fenced(token)` (releases exactly that grant, if this
//! session still holds it), and `locked()`.

use agora_proto::native::{Kind, ObjectId};
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::condition::ConditionLock;
use super::grants::{self, lock_wait, Answer, Permits, Wait};
use crate::engine::{Ctx, SessionId, Ticket, Undelivered, Waiter};
use crate::object::{encode_state, Args, Holders, MethodSpec, Outcome, SharedObject};

/// The kind's constructor and methods, declared in [`agora_proto::methods::lock`].
pub use agora_proto::methods::lock::CONSTRUCTOR;
use agora_proto::methods::lock::METHODS;

/// A shared lock.
#[derive(Debug, Serialize, Deserialize)]
pub struct LockObject {
    permits: Permits,
}

impl Default for LockObject {
    fn default() -> Self {
        LockObject { permits: Permits::new(1, Some(1)) }
    }
}

impl LockObject {
    /// `Lock()`: unlocked.
    pub fn new(_args: Args) -> Result<LockObject, WireError> {
        Ok(LockObject::default())
    }

    /// True while some session holds the lock.
    pub fn is_locked(&self) -> bool {
        self.permits.available() == 0
    }

    fn release_one(&mut self, ctx: &mut Ctx<'_>) -> Result<(), WireError> {
        let session = ctx.caller();
        self.permits.release(ctx, session, 1).map_err(|_| grants::runtime_error("release unlocked lock"))
    }

    fn release_fenced(&mut self, ctx: &mut Ctx<'_>, token: Value) -> Result<(), WireError> {
        let Some(token) = token.as_index() else {
            return Err(WireError::type_error(format!("token must be an int, not {}", token.type_name())));
        };
        let session = ctx.caller();
        if self.permits.release_token(ctx, session, token as u64) {
            return Ok(());
        }
        if !self.is_locked() {
            return Err(grants::runtime_error("release unlocked lock"));
        }
        Err(grants::runtime_error(&format!(
            "this session does not hold the lock under token {token} (another session released that grant)"
        )))
    }
}

impl SharedObject for LockObject {
    fn kind(&self) -> Kind {
        Kind::Lock
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = lock_wait(args.bool_or(0, true), args.take(1))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                Ok(self.permits.acquire(ctx, wait, answer, 0))
            }
            "release" => self.release_one(ctx).map(|()| Value::None.into()),
            "release_fenced" => self.release_fenced(ctx, args.required(0)).map(|()| Value::None.into()),
            "locked" => Ok(Value::Bool(self.is_locked()).into()),
            other => Err(WireError::new(ErrorCode::Internal, format!("Lock has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        let pairs = [
            ("locked", Value::Bool(self.is_locked())),
            ("token", self.permits.current_token().map_or(Value::None, |t| Value::Int(t as i64))),
            ("waiting", Value::Int(self.permits.waiting() as i64)),
            ("orphan_credits", Value::Int(self.permits.credits() as i64)),
        ];
        Dict::from_pairs(pairs.into_iter().map(|(k, v)| (Value::Str(k.into()), v))).map(Value::Dict).unwrap_or_default()
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        let state = if self.is_locked() { "locked" } else { "unlocked" };
        format!("<{state} _thread.lock object at {}>", grants::address(self))
    }

    fn holds_session_state(&self) -> bool {
        true
    }

    fn as_condition_lock(&mut self) -> Option<&mut dyn ConditionLock> {
        Some(self)
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        self.permits.expire(ctx, ticket);
    }

    fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.permits.abandon(ctx, ticket, undelivered);
    }

    fn holders(&self) -> Holders {
        self.permits.holders("lock")
    }

    fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        self.permits.session_ended(ctx, session, None);
    }
}

impl ConditionLock for LockObject {
    fn acquire_via(
        &mut self,
        ctx: &mut Ctx<'_>,
        _owner: Option<String>,
        wait: Wait,
        answer: Answer,
        via: ObjectId,
    ) -> Outcome {
        self.permits.acquire(ctx, wait, answer, via)
    }

    fn release_via(&mut self, ctx: &mut Ctx<'_>, _owner: &Option<String>) -> Result<(), WireError> {
        self.release_one(ctx)
    }

    fn release_token(&mut self, ctx: &mut Ctx<'_>, token: Value, _fully: bool) -> Result<(), WireError> {
        self.release_fenced(ctx, token)
    }

    /// CPython's `Condition._is_owned` for a plain lock: locked by anybody.
    fn is_owned(&self, _session: SessionId, _owner: &Option<String>) -> bool {
        self.is_locked()
    }

    fn release_save(&mut self, ctx: &mut Ctx<'_>, _owner: &Option<String>) -> Result<u64, WireError> {
        self.release_one(ctx).map(|()| 1)
    }

    fn reacquire(
        &mut self,
        ctx: &mut Ctx<'_>,
        waiter: Waiter,
        _owner: Option<String>,
        _count: u64,
        answer: Answer,
        via: ObjectId,
    ) {
        self.permits.enqueue(ctx, waiter, answer, via);
    }

    fn expire_waiter(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        self.permits.expire(ctx, ticket);
    }

    fn abandon_waiter(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.permits.abandon(ctx, ticket, undelivered);
    }

    fn session_ended_via(&mut self, ctx: &mut Ctx<'_>, session: SessionId, via: ObjectId) {
        self.permits.session_ended(ctx, session, Some(via));
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
        lock: &mut LockObject,
        caller: SessionId,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Value, WireError> {
        match lock.call(&mut h.ctx(caller), method, Args::from_values(method, args))? {
            Outcome::Ready(v) => Ok(v),
            Outcome::Parked => panic!("{method} parked"),
        }
    }

    #[test]
    fn python_semantics_and_errors() {
        let mut h = Harness::default();
        let mut lock = LockObject::default();
        assert_eq!(call(&mut h, &mut lock, A, "acquire", vec![]).unwrap(), Value::Bool(true));
        assert_eq!(call(&mut h, &mut lock, B, "acquire", vec![Value::Bool(false)]).unwrap(), Value::Bool(false));
        assert_eq!(
            call(&mut h, &mut lock, B, "acquire", vec![Value::Bool(true), Value::Int(0)]).unwrap(),
            Value::Bool(false)
        );
        let err = call(&mut h, &mut lock, B, "acquire", vec![Value::Bool(false), Value::Int(1)]).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::ValueError, "can't specify a timeout for a non-blocking call")
        );
        // Ownerless: another session releases it.
        call(&mut h, &mut lock, B, "release", vec![]).unwrap();
        let err = call(&mut h, &mut lock, B, "release", vec![]).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::RuntimeError, "release unlocked lock"));
        assert!(lock.repr().starts_with("<unlocked _thread.lock object at 0x"));
    }

    #[test]
    fn fenced_grants_carry_growing_tokens_and_release_exactly() {
        let mut h = Harness::default();
        let mut lock = LockObject::default();
        let t1 = call(&mut h, &mut lock, A, "acquire_fenced", vec![]).unwrap().as_index().unwrap();
        call(&mut h, &mut lock, A, "release_fenced", vec![Value::Int(t1)]).unwrap();
        let t2 = call(&mut h, &mut lock, B, "acquire_fenced", vec![]).unwrap().as_index().unwrap();
        assert!(t2 > t1);
        let err = call(&mut h, &mut lock, A, "release_fenced", vec![Value::Int(t1)]).unwrap_err();
        assert_eq!(err.code, ErrorCode::RuntimeError);
        assert!(lock.is_locked(), "a stale token releases nothing");
        call(&mut h, &mut lock, B, "release_fenced", vec![Value::Int(t2)]).unwrap();
        assert_eq!(call(&mut h, &mut lock, A, "locked", vec![]).unwrap(), Value::Bool(false));
    }

    #[test]
    fn a_dead_holders_lock_is_freed_and_one_foreign_release_is_absorbed() {
        let mut h = Harness::default();
        let mut lock = LockObject::default();
        call(&mut h, &mut lock, A, "acquire", vec![]).unwrap();
        lock.session_ended(&mut h.ctx(A), A);
        assert!(!lock.is_locked());
        call(&mut h, &mut lock, B, "release", vec![]).unwrap();
        assert!(call(&mut h, &mut lock, B, "release", vec![]).is_err());
    }

    #[test]
    fn holders_show_the_grant_with_its_token_and_time_and_the_waiters_in_line() {
        let mut h = Harness::default();
        let mut lock = LockObject::default();
        assert_eq!(lock.holders(), Holders::default());
        let token = call(&mut h, &mut lock, A, "acquire_fenced", vec![]).unwrap().as_index().unwrap() as u64;
        let granted_at = h.now;
        h.advance(1.0);
        let mut waiters = Vec::new();
        for caller in [B, A] {
            let outcome = lock.call(&mut h.ctx(caller), "acquire", Args::from_values("acquire", vec![])).unwrap();
            assert_eq!(outcome, Outcome::Parked);
            waiters.push((caller, h.parked().unwrap().ticket));
        }
        let holders = lock.holders();
        assert_eq!(holders.held.len(), 1);
        let held = &holders.held[0];
        assert_eq!((held.session, held.since, held.token, held.what.as_str()), (A, granted_at, Some(token), "lock"));
        let waiting: Vec<_> = holders.waiting.iter().map(|w| (w.session, w.ticket)).collect();
        assert_eq!(waiting, waiters, "in line order");
        // The hand-off makes the first waiter the holder, with a new token, since now.
        call(&mut h, &mut lock, A, "release", vec![]).unwrap();
        let holders = lock.holders();
        assert_eq!((holders.held[0].session, holders.held[0].since), (B, h.now));
        assert!(holders.held[0].token > Some(token));
        assert_eq!(holders.waiting.len(), 1);
    }
}
