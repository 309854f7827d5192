//! The shared `Semaphore` and `BoundedSemaphore` (Python's `SyncManager.Semaphore()`
//! and `BoundedSemaphore()`): CPython's `threading` semantics and error texts.
//!
//! Permits have no owner, as in Python: any session may release. Each permit granted
//! is still recorded against its session ([`Permits`]), so a session that ends holding
//! permits gives them back, leaving orphan credits for the releases others were going
//! to make on its behalf (see [`super::grants`]).
//!
//! Methods: Python's `acquire(blocking=True, timeout=None)` → bool and
//! `release(n=1)`; agora's `acquire_fenced(blocking=True, timeout=None)` → the permit's
//! id (an int from the fencing-token counter) or `False`, `release_fenced(token)`
//! (gives back exactly that permit, if this session still holds it), and
//! `get_value()` (the free permits).
//!
//! A release hands freed permits straight to the waiters in line, each as a delivery
//! naming the permit's token; a permit handed to a caller that had left comes back in
//! that caller's `Abandon` (see [`super::grants`]).

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

use serde::{Deserialize, Serialize};

use super::grants::{self, semaphore_wait, Answer, Permits};
use crate::engine::{Ctx, SessionId, Ticket, Undelivered};
use crate::object::{encode_state, Args, Holders, MethodSpec, Outcome, SharedObject};

use agora_proto::methods::semaphore::METHODS;
/// The kind's constructor and methods, declared in [`agora_proto::methods::semaphore`].
pub use agora_proto::methods::semaphore::{BOUNDED_CONSTRUCTOR, CONSTRUCTOR};

/// A shared semaphore, bounded or not.
#[derive(Debug, Serialize, Deserialize)]
pub struct SemaphoreObject {
    permits: Permits,
    /// The initial value, for a BoundedSemaphore.
    bound: Option<u64>,
}

impl SemaphoreObject {
    /// `Semaphore(value=1)`, or with `bounded` `BoundedSemaphore(value=1)`.
    pub fn new(mut args: Args, bounded: bool) -> Result<SemaphoreObject, WireError> {
        let value = args.int_or(0, 1)?;
        if value < 0 {
            return Err(WireError::value_error("semaphore initial value must be >= 0"));
        }
        let bound = bounded.then_some(value as u64);
        Ok(SemaphoreObject { permits: Permits::new(value as u64, bound), bound })
    }

    fn release(&mut self, ctx: &mut Ctx<'_>, n: i64) -> Result<(), WireError> {
        if n < 1 {
            return Err(WireError::value_error("n must be one or more"));
        }
        let session = ctx.caller();
        self.permits
            .release(ctx, session, n as u64)
            .map_err(|_| WireError::value_error("Semaphore released too many times"))
    }

    fn release_fenced(&mut self, ctx: &mut Ctx<'_>, token: Value) -> Result<(), WireError> {
        let Some(token) = token.as_index() else {
            return Err(WireError::type_error(format!("token must be an int, not {}", token.type_name())));
        };
        let session = ctx.caller();
        if self.permits.release_token(ctx, session, token as u64) {
            return Ok(());
        }
        Err(WireError::value_error(format!(
            "this session holds no permit {token} (it was released already, perhaps by another session)"
        )))
    }
}

impl SharedObject for SemaphoreObject {
    fn kind(&self) -> Kind {
        if self.bound.is_some() {
            Kind::BoundedSemaphore
        } else {
            Kind::Semaphore
        }
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = semaphore_wait(args.bool_or(0, true), args.take(1))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                let wait = if self.permits.available() > 0 { grants::Wait::No } else { wait.resolve()? };
                Ok(self.permits.acquire(ctx, wait, answer, 0))
            }
            "release" => {
                let n = args.int_or(0, 1)?;
                self.release(ctx, n).map(|()| Value::None.into())
            }
            "release_fenced" => self.release_fenced(ctx, args.required(0)).map(|()| Value::None.into()),
            "get_value" => Ok(Value::Int(self.permits.available() as i64).into()),
            other => Err(WireError::new(ErrorCode::Internal, format!("Semaphore has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        let pairs = [
            ("value", Value::Int(self.permits.available() as i64)),
            ("bound", self.bound.map_or(Value::None, |b| Value::Int(b as i64))),
            ("outstanding", Value::Int(self.permits.outstanding() as i64)),
            ("waiting", Value::Int(self.permits.waiting() as i64)),
            ("orphan_credits", Value::Int(self.permits.credits() as i64)),
        ];
        Dict::from_pairs(pairs.into_iter().map(|(k, v)| (Value::Str(k.into()), v))).map(Value::Dict).unwrap_or_default()
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        let at = grants::address(self);
        let value = self.permits.available();
        match self.bound {
            Some(bound) => format!("<threading.BoundedSemaphore at {at}: value={value}/{bound}>"),
            None => format!("<threading.Semaphore at {at}: value={value}>"),
        }
    }

    fn holds_session_state(&self) -> bool {
        true
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        self.permits.expire(ctx, ticket);
    }

    fn abandon(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, undelivered: Option<Undelivered>) {
        self.permits.abandon(ctx, ticket, undelivered);
    }

    fn holders(&self) -> Holders {
        self.permits.holders("permit")
    }

    fn session_ended(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        self.permits.session_ended(ctx, session, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Harness, Reclaim};

    const A: SessionId = 1;
    const B: SessionId = 2;

    fn call(
        h: &mut Harness,
        s: &mut SemaphoreObject,
        caller: SessionId,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Value, WireError> {
        match s.call(&mut h.ctx(caller), method, Args::from_values(method, args))? {
            Outcome::Ready(v) => Ok(v),
            Outcome::Parked => panic!("{method} parked"),
        }
    }

    /// The ticket of an acquire that must park.
    fn parks(h: &mut Harness, s: &mut SemaphoreObject, caller: SessionId, args: Vec<Value>) -> Ticket {
        let outcome = s.call(&mut h.ctx(caller), "acquire_fenced", Args::from_values("acquire_fenced", args)).unwrap();
        assert_eq!(outcome, Outcome::Parked);
        h.parked().expect("a parked call").ticket
    }

    fn semaphore(value: i64, bounded: bool) -> SemaphoreObject {
        SemaphoreObject::new(Args::from_values("Semaphore", vec![Value::Int(value)]), bounded).unwrap()
    }

    #[test]
    fn constructor_and_release_errors() {
        let mut h = Harness::default();
        let err = SemaphoreObject::new(Args::from_values("Semaphore", vec![Value::Int(-1)]), false).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::ValueError, "semaphore initial value must be >= 0"));
        let mut b = semaphore(1, true);
        let err = call(&mut h, &mut b, A, "release", vec![]).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::ValueError, "Semaphore released too many times"));
        let err = call(&mut h, &mut b, A, "release", vec![Value::Int(0)]).unwrap_err();
        assert_eq!(err.message, "n must be one or more");
        let err = call(&mut h, &mut b, A, "acquire", vec![Value::Bool(false), Value::Int(1)]).unwrap_err();
        assert_eq!(err.message, "can't specify timeout for non-blocking acquire");
        assert!(b.repr().ends_with(": value=1/1>"));
        assert!(b.holds_session_state());
    }

    #[test]
    fn counts_and_ownerless_releases() {
        let mut h = Harness::default();
        let mut s = semaphore(2, false);
        assert_eq!(call(&mut h, &mut s, A, "acquire", vec![]).unwrap(), Value::Bool(true));
        assert_eq!(call(&mut h, &mut s, A, "acquire", vec![]).unwrap(), Value::Bool(true));
        assert_eq!(
            call(&mut h, &mut s, B, "acquire", vec![Value::Bool(true), Value::Int(-1)]).unwrap(),
            Value::Bool(false)
        );
        call(&mut h, &mut s, B, "release", vec![Value::Int(3)]).unwrap();
        assert_eq!(
            call(&mut h, &mut s, B, "get_value", vec![]).unwrap(),
            Value::Int(3),
            "an unbounded semaphore grows"
        );
    }

    #[test]
    fn a_dead_holders_permits_come_back_with_credits() {
        let mut h = Harness::default();
        let mut b = semaphore(2, true);
        call(&mut h, &mut b, A, "acquire", vec![]).unwrap();
        call(&mut h, &mut b, A, "acquire", vec![]).unwrap();
        b.session_ended(&mut h.ctx(A), A);
        assert_eq!(call(&mut h, &mut b, B, "get_value", vec![]).unwrap(), Value::Int(2));
        call(&mut h, &mut b, B, "release", vec![Value::Int(2)]).unwrap();
        assert!(call(&mut h, &mut b, B, "release", vec![]).is_err(), "credits are spent");
    }

    #[test]
    fn hand_offs_timeouts_and_undelivered_permits() {
        let mut h = Harness::default();
        let mut s = semaphore(1, true);
        call(&mut h, &mut s, A, "acquire", vec![]).unwrap();
        let timed = parks(&mut h, &mut s, B, vec![Value::Bool(true), Value::Float(0.5)]);
        let left = parks(&mut h, &mut s, B, vec![]);
        let served = parks(&mut h, &mut s, 3, vec![]);
        s.expire(&mut h.ctx(B), timed);
        assert_eq!(h.delivered_to(timed).unwrap().completion.unwrap(), Value::Bool(false));
        s.abandon(&mut h.ctx(B), left, None);
        call(&mut h, &mut s, A, "release", vec![]).unwrap();
        assert!(h.delivered_to(left).is_none(), "its caller had left");
        let delivery = h.delivered_to(served).expect("the next in line got the permit");
        let token = delivery.completion.clone().unwrap().as_index().unwrap() as u64;
        assert_eq!(delivery.reclaim, Reclaim::Grant(token));
        // An expiry after the hand-off is a no-op.
        s.expire(&mut h.ctx(3), served);
        assert!(h.deliveries().is_empty());
        assert_eq!(call(&mut h, &mut s, B, "get_value", vec![]).unwrap(), Value::Int(0));
        // The permit never reached its caller: it comes back, with no orphan credit.
        s.abandon(&mut h.ctx(3), served, delivery.undelivered());
        assert_eq!(call(&mut h, &mut s, B, "get_value", vec![]).unwrap(), Value::Int(1));
        assert!(call(&mut h, &mut s, B, "release", vec![]).is_err(), "bounded, and no credit left behind");
    }
}
