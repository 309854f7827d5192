//! The shared `Barrier` (Python's `SyncManager.Barrier()`, a `threading.Barrier`):
//! `parties` callers meet; each `wait` returns its arrival index (the first to arrive
//! gets 0, the last `parties - 1`), and the barrier is ready for the next round.
//!
//! As in CPython, a wait that times out breaks the barrier for everyone
//! (`threading.BrokenBarrierError`, code `BrokenBarrier`), as do `abort()` and a
//! `reset()` while parties wait; a broken barrier refuses waits until `reset()`. A
//! party whose caller cancelled or vanished simply leaves the round when its
//! `Abandon` arrives (as an interrupted thread does in CPython). CPython's draining
//! phase takes no time here: the last arrival releases the whole round at once,
//! delivering each parked party its arrival index.
//!
//! `action=` would be client code run in the server, which agora never does: it is
//! refused with `Unsupported`. The properties `parties`, `n_waiting` and `broken` are
//! read through `__getattribute__(name)`, as Python's `BarrierProxy` does.

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::grants::{self, as_seconds};
use crate::engine::{deadline_after, Ctx, Reclaim, Ticket, Undelivered, Waiter};
use crate::object::{encode_state, Args, MethodSpec, Outcome, SharedObject};

/// The kind's constructor and methods, declared in [`agora_proto::methods::barrier`].
pub use agora_proto::methods::barrier::CONSTRUCTOR;
use agora_proto::methods::barrier::METHODS;

/// `threading.BrokenBarrierError()`: no message, as CPython raises it.
fn broken() -> WireError {
    WireError::new(ErrorCode::BrokenBarrier, "")
}

/// A party waiting for the round to fill.
#[derive(Debug, Serialize, Deserialize)]
struct Party {
    waiter: Waiter,
    index: i64,
}

/// A shared barrier.
#[derive(Debug, Serialize, Deserialize)]
pub struct BarrierObject {
    parties: i64,
    /// The default timeout of `wait` (seconds), from the constructor.
    timeout: Option<Value>,
    waiting: Vec<Party>,
    broken: bool,
}

impl BarrierObject {
    /// `Barrier(parties, action=None, timeout=None)`.
    pub fn new(mut args: Args) -> Result<BarrierObject, WireError> {
        let parties = args.required(0);
        let parties = parties.as_index().ok_or_else(|| {
            WireError::type_error(format!("'{}' object cannot be interpreted as an integer", parties.type_name()))
        })?;
        if parties < 1 {
            return Err(WireError::value_error("parties must be >= 1"));
        }
        if args.take(1).is_some_and(|action| action != Value::None) {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                "Barrier(action=...) is not supported: agora never runs client code in the server; \
                 run the action in the party whose wait() returns 0",
            ));
        }
        let timeout = args.take(2).filter(|t| *t != Value::None);
        Ok(BarrierObject { parties, timeout, waiting: Vec::new(), broken: false })
    }

    /// Breaks the barrier: every waiting party gets `BrokenBarrierError`.
    fn break_all(&mut self, ctx: &mut Ctx<'_>) {
        self.broken = true;
        self.fail_waiting(ctx);
    }

    fn fail_waiting(&mut self, ctx: &mut Ctx<'_>) {
        for party in self.waiting.drain(..) {
            ctx.deliver(party.waiter, Err(broken()), Reclaim::Nothing);
        }
    }

    fn wait(&mut self, ctx: &mut Ctx<'_>, timeout: Option<Value>) -> Result<Outcome, WireError> {
        if self.broken {
            return Err(broken());
        }
        let timeout = timeout.filter(|t| *t != Value::None).or_else(|| self.timeout.clone());
        let seconds = match &timeout {
            None => None,
            Some(t) => Some(as_seconds(t).ok_or_else(|| {
                WireError::type_error(format!("unsupported operand type(s) for +: 'float' and '{}'", t.type_name()))
            })?),
        };
        let index = self.waiting.len() as i64;
        if index + 1 == self.parties {
            for party in self.waiting.drain(..) {
                ctx.deliver(party.waiter, Ok(Value::Int(party.index)), Reclaim::Nothing);
            }
            return Ok(Value::Int(index).into());
        }
        let deadline = match seconds {
            None => None,
            // CPython's `wait_for` with no time left: the barrier breaks.
            Some(s) if s.is_nan() || s <= 0.0 => {
                self.break_all(ctx);
                return Err(broken());
            }
            Some(s) => deadline_after(ctx.now(), Some(s), "")?,
        };
        let waiter = ctx.park(deadline);
        self.waiting.push(Party { waiter, index });
        Ok(Outcome::Parked)
    }

    fn n_waiting(&self) -> i64 {
        if self.broken {
            0
        } else {
            self.waiting.len() as i64
        }
    }

    fn attribute(&self, name: &Value) -> Result<Value, WireError> {
        match name {
            Value::Str(n) if n == "parties" => Ok(Value::Int(self.parties)),
            Value::Str(n) if n == "n_waiting" => Ok(Value::Int(self.n_waiting())),
            Value::Str(n) if n == "broken" => Ok(Value::Bool(self.broken)),
            Value::Str(n) => {
                Err(WireError::new(ErrorCode::AttributeError, format!("'Barrier' object has no attribute '{n}'")))
            }
            other => Err(WireError::type_error(format!("attribute name must be string, not '{}'", other.type_name()))),
        }
    }
}

impl SharedObject for BarrierObject {
    fn kind(&self) -> Kind {
        Kind::Barrier
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "__getattribute__" => self.attribute(&args.required(0)).map(Outcome::Ready),
            "wait" => self.wait(ctx, args.take(0)),
            "abort" => {
                self.break_all(ctx);
                Ok(Value::None.into())
            }
            "reset" => {
                // Parties waiting now see the barrier broken; it is whole again after.
                self.fail_waiting(ctx);
                self.broken = false;
                Ok(Value::None.into())
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Barrier has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        let pairs = [
            ("parties", Value::Int(self.parties)),
            ("n_waiting", Value::Int(self.n_waiting())),
            ("broken", Value::Bool(self.broken)),
        ];
        Dict::from_pairs(pairs.into_iter().map(|(k, v)| (Value::Str(k.into()), v))).map(Value::Dict).unwrap_or_default()
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        let at = grants::address(self);
        if self.broken {
            format!("<threading.Barrier at {at}: broken>")
        } else {
            format!("<threading.Barrier at {at}: waiters={}/{}>", self.n_waiting(), self.parties)
        }
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        let Some(i) = self.waiting.iter().position(|p| p.waiter.ticket == ticket) else { return };
        let party = self.waiting.remove(i);
        // A party that timed out breaks the barrier for everyone, as in CPython.
        self.break_all(ctx);
        ctx.deliver(party.waiter, Err(broken()), Reclaim::Nothing);
    }

    fn abandon(&mut self, _ctx: &mut Ctx<'_>, ticket: Ticket, _undelivered: Option<Undelivered>) {
        self.waiting.retain(|p| p.waiter.ticket != ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Harness, SessionId};

    const A: SessionId = 1;

    fn barrier(parties: i64) -> BarrierObject {
        BarrierObject::new(Args::from_values("Barrier", vec![Value::Int(parties)])).unwrap()
    }

    fn wait(h: &mut Harness, b: &mut BarrierObject) -> Result<Outcome, WireError> {
        b.call(&mut h.ctx(A), "wait", Args::from_values("wait", vec![]))
    }

    /// The ticket of a wait that must park.
    fn parks(h: &mut Harness, b: &mut BarrierObject, args: Vec<Value>) -> Ticket {
        assert_eq!(b.call(&mut h.ctx(A), "wait", Args::from_values("wait", args)).unwrap(), Outcome::Parked);
        h.parked().expect("a parked call").ticket
    }

    fn completion(h: &mut Harness, ticket: Ticket) -> Result<Value, WireError> {
        h.delivered_to(ticket).expect("delivered").completion
    }

    #[test]
    fn arrival_indexes_and_rounds() {
        let mut h = Harness::default();
        let mut b = barrier(3);
        let first = parks(&mut h, &mut b, vec![]);
        let second = parks(&mut h, &mut b, vec![]);
        assert_eq!(b.attribute(&Value::Str("n_waiting".into())).unwrap(), Value::Int(2));
        let Outcome::Ready(last) = wait(&mut h, &mut b).unwrap() else { panic!() };
        assert_eq!(last, Value::Int(2));
        let delivery = h.delivered_to(first).unwrap();
        assert_eq!((delivery.completion.unwrap(), delivery.reclaim), (Value::Int(0), Reclaim::Nothing));
        assert_eq!(completion(&mut h, second).unwrap(), Value::Int(1));
        assert_eq!(b.attribute(&Value::Str("n_waiting".into())).unwrap(), Value::Int(0), "ready for a new round");
    }

    #[test]
    fn timeout_abort_and_reset_break_it() {
        let mut h = Harness::default();
        let mut b = barrier(3);
        let first = parks(&mut h, &mut b, vec![]);
        let second = parks(&mut h, &mut b, vec![Value::Float(1.0)]);
        assert_eq!(h.out.deliveries.len(), 0);
        b.expire(&mut h.ctx(A), second);
        assert_eq!(completion(&mut h, second).unwrap_err().code, ErrorCode::BrokenBarrier);
        assert_eq!(completion(&mut h, first).unwrap_err().code, ErrorCode::BrokenBarrier);
        assert_eq!(b.attribute(&Value::Str("broken".into())).unwrap(), Value::Bool(true));
        assert_eq!(wait(&mut h, &mut b).unwrap_err().code, ErrorCode::BrokenBarrier);
        b.call(&mut h.ctx(A), "reset", Args::from_values("reset", vec![])).unwrap();
        let waiting = parks(&mut h, &mut b, vec![]);
        b.call(&mut h.ctx(A), "abort", Args::from_values("abort", vec![])).unwrap();
        assert_eq!(completion(&mut h, waiting).unwrap_err().code, ErrorCode::BrokenBarrier);
        assert!(b.repr().ends_with(": broken>"));
    }

    #[test]
    fn deadlines_and_a_zero_timeout() {
        let mut h = Harness::default();
        let mut b =
            BarrierObject::new(Args::from_values("Barrier", vec![Value::Int(3), Value::None, Value::Float(2.0)]))
                .unwrap();
        // The constructor's timeout is the default; a wait's own overrides it.
        parks(&mut h, &mut b, vec![]);
        assert_eq!(h.parked(), None);
        assert_eq!(b.call(&mut h.ctx(A), "wait", Args::from_values("wait", vec![])).unwrap(), Outcome::Parked);
        assert_eq!(h.parked().unwrap().deadline, h.now.after_secs(2.0));
        assert_eq!(
            b.call(&mut h.ctx(A), "wait", Args::from_values("wait", vec![Value::Int(0)])).unwrap(),
            Outcome::Ready(Value::Int(2))
        );
        // With no time left and the round not full, the barrier breaks.
        let mut b = barrier(2);
        let err = b.call(&mut h.ctx(A), "wait", Args::from_values("wait", vec![Value::Int(0)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::BrokenBarrier);
        assert_eq!(b.attribute(&Value::Str("broken".into())).unwrap(), Value::Bool(true));
    }

    #[test]
    fn a_party_whose_caller_left_leaves_the_round() {
        let mut h = Harness::default();
        let mut b = barrier(2);
        let left = parks(&mut h, &mut b, vec![Value::Float(5.0)]);
        b.abandon(&mut h.ctx(A), left, None);
        assert_eq!(b.attribute(&Value::Str("n_waiting".into())).unwrap(), Value::Int(0));
        assert_eq!(b.attribute(&Value::Str("broken".into())).unwrap(), Value::Bool(false));
        // Its deadline, arriving later, breaks nothing.
        b.expire(&mut h.ctx(A), left);
        assert!(h.deliveries().is_empty());
        assert_eq!(b.attribute(&Value::Str("broken".into())).unwrap(), Value::Bool(false));
        let first = parks(&mut h, &mut b, vec![]);
        assert_eq!(wait(&mut h, &mut b).unwrap(), Outcome::Ready(Value::Int(1)));
        assert_eq!(completion(&mut h, first).unwrap(), Value::Int(0));
        assert!(h.delivered_to(left).is_none());
        // An expiry after the release is a no-op too.
        b.expire(&mut h.ctx(A), first);
        assert!(h.deliveries().is_empty());
        assert_eq!(b.attribute(&Value::Str("broken".into())).unwrap(), Value::Bool(false));
    }

    #[test]
    fn constructor_errors() {
        let err = BarrierObject::new(Args::from_values("Barrier", vec![Value::Int(0)])).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::ValueError, "parties must be >= 1"));
        let action = Value::reduce("builtins", "print", vec![]);
        let err = BarrierObject::new(Args::from_values("Barrier", vec![Value::Int(2), action])).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported);
        let err = barrier(2).attribute(&Value::Str("nope".into())).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::AttributeError, "'Barrier' object has no attribute 'nope'")
        );
    }
}
