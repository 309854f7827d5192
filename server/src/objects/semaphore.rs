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

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

use super::grants::{self, semaphore_wait, Answer, Permits};
use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::waiter::Completion;

/// `Semaphore(value=1)`.
pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Semaphore", &["value"], 0);

/// `BoundedSemaphore(value=1)`.
pub const BOUNDED_CONSTRUCTOR: MethodSpec = MethodSpec::optional("BoundedSemaphore", &["value"], 0);

/// CPython's `AcquirerProxy` methods, then agora's.
const METHODS: &[MethodSpec] = &[
    MethodSpec::optional("acquire", &["blocking", "timeout"], 0),
    MethodSpec::optional("release", &["n"], 0),
    MethodSpec::optional("acquire_fenced", &["blocking", "timeout"], 0),
    MethodSpec::new("release_fenced", &["token"]),
    MethodSpec::new("get_value", &[]),
];

/// A shared semaphore, bounded or not.
#[derive(Debug)]
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

    fn release(&mut self, session: u64, n: i64) -> Result<(), WireError> {
        if n < 1 {
            return Err(WireError::value_error("n must be one or more"));
        }
        self.permits.release(session, n as u64).map_err(|_| WireError::value_error("Semaphore released too many times"))
    }

    fn release_fenced(&mut self, session: u64, token: Value) -> Result<(), WireError> {
        let Some(token) = token.as_index() else {
            return Err(WireError::type_error(format!("token must be an int, not {}", token.type_name())));
        };
        if self.permits.release_token(session, token as u64) {
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

    fn call(&mut self, caller: Caller, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "acquire" | "acquire_fenced" => {
                let wait = semaphore_wait(args.bool_or(0, true), args.take(1))?;
                let answer = if method == "acquire" { Answer::Bool } else { Answer::Token };
                let wait = if self.permits.available() > 0 { grants::Wait::No } else { wait.resolve()? };
                Ok(self.permits.acquire(caller, wait, answer, 0))
            }
            "release" => {
                let n = args.int_or(0, 1)?;
                self.release(caller.session, n).map(|()| Value::None.into())
            }
            "release_fenced" => self.release_fenced(caller.session, args.required(0)).map(|()| Value::None.into()),
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

    fn repr(&self) -> String {
        let at = grants::address(self);
        let value = self.permits.available();
        match self.bound {
            Some(bound) => format!("<threading.BoundedSemaphore at {at}: value={value}/{bound}>"),
            None => format!("<threading.Semaphore at {at}: value={value}>"),
        }
    }

    fn expire(&mut self, ticket: u64) -> Option<Completion> {
        self.permits.expire(ticket)
    }

    fn abandon(&mut self, _caller: Caller, ticket: u64, delivered: Option<Value>) {
        self.permits.abandon(ticket, delivered.is_some());
    }

    fn session_ended(&mut self, session: u64) {
        self.permits.session_ended(session, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Caller = Caller { session: 1 };
    const B: Caller = Caller { session: 2 };

    fn call(
        s: &mut SemaphoreObject,
        caller: Caller,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Value, WireError> {
        match s.call(caller, method, Args::from_values(method, args))? {
            Outcome::Ready(v) => Ok(v),
            Outcome::Park(_) => panic!("{method} parked"),
        }
    }

    fn semaphore(value: i64, bounded: bool) -> SemaphoreObject {
        SemaphoreObject::new(Args::from_values("Semaphore", vec![Value::Int(value)]), bounded).unwrap()
    }

    #[test]
    fn constructor_and_release_errors() {
        let err = SemaphoreObject::new(Args::from_values("Semaphore", vec![Value::Int(-1)]), false).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::ValueError, "semaphore initial value must be >= 0"));
        let mut b = semaphore(1, true);
        let err = call(&mut b, A, "release", vec![]).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::ValueError, "Semaphore released too many times"));
        let err = call(&mut b, A, "release", vec![Value::Int(0)]).unwrap_err();
        assert_eq!(err.message, "n must be one or more");
        let err = call(&mut b, A, "acquire", vec![Value::Bool(false), Value::Int(1)]).unwrap_err();
        assert_eq!(err.message, "can't specify timeout for non-blocking acquire");
        assert!(b.repr().ends_with(": value=1/1>"));
    }

    #[test]
    fn counts_and_ownerless_releases() {
        let mut s = semaphore(2, false);
        assert_eq!(call(&mut s, A, "acquire", vec![]).unwrap(), Value::Bool(true));
        assert_eq!(call(&mut s, A, "acquire", vec![]).unwrap(), Value::Bool(true));
        assert_eq!(call(&mut s, B, "acquire", vec![Value::Bool(true), Value::Int(-1)]).unwrap(), Value::Bool(false));
        call(&mut s, B, "release", vec![Value::Int(3)]).unwrap();
        assert_eq!(call(&mut s, B, "get_value", vec![]).unwrap(), Value::Int(3), "an unbounded semaphore grows");
    }

    #[test]
    fn a_dead_holders_permits_come_back_with_credits() {
        let mut b = semaphore(2, true);
        call(&mut b, A, "acquire", vec![]).unwrap();
        call(&mut b, A, "acquire", vec![]).unwrap();
        b.session_ended(A.session);
        assert_eq!(call(&mut b, B, "get_value", vec![]).unwrap(), Value::Int(2));
        call(&mut b, B, "release", vec![Value::Int(2)]).unwrap();
        assert!(call(&mut b, B, "release", vec![]).is_err(), "credits are spent");
    }
}
