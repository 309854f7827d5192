//! The shared `Barrier` (Python's `SyncManager.Barrier()`, a `threading.Barrier`):
//! `parties` callers meet; each `wait` returns its arrival index (the first to arrive
//! gets 0, the last `parties - 1`), and the barrier is ready for the next round.
//!
//! As in CPython, a wait that times out breaks the barrier for everyone
//! (`threading.BrokenBarrierError`, code `BrokenBarrier`), as do `abort()` and a
//! `reset()` while parties wait; a broken barrier refuses waits until `reset()`. A
//! party whose caller cancelled or vanished simply leaves the round (as an
//! interrupted thread does in CPython). CPython's draining phase takes no time here:
//! the last arrival releases the whole round at once.
//!
//! `action=` would be client code run in the server, which agora never does: it is
//! refused with `Unsupported`. The properties `parties`, `n_waiting` and `broken` are
//! read through `__getattribute__(name)`, as Python's `BarrierProxy` does.

use agora_proto::native::Kind;
use agora_proto::value::Dict;
use agora_proto::{ErrorCode, Value, WireError};

use super::grants::{self, as_seconds};
use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::waiter::{self, Completion, Waiter};

/// `Barrier(parties, action=None, timeout=None)`.
pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Barrier", &["parties", "action", "timeout"], 1);

/// CPython's `BarrierProxy` methods.
const METHODS: &[MethodSpec] = &[
    MethodSpec::new("__getattribute__", &["name"]),
    MethodSpec::optional("wait", &["timeout"], 0),
    MethodSpec::new("abort", &[]),
    MethodSpec::new("reset", &[]),
];

/// `threading.BrokenBarrierError()`: no message, as CPython raises it.
fn broken() -> WireError {
    WireError::new(ErrorCode::BrokenBarrier, "")
}

/// A party waiting for the round to fill.
#[derive(Debug)]
struct Party {
    waiter: Waiter,
    index: i64,
}

/// A shared barrier.
#[derive(Debug)]
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
    fn break_all(&mut self) {
        self.broken = true;
        self.fail_waiting();
    }

    fn fail_waiting(&mut self) {
        for party in self.waiting.drain(..) {
            let _ = party.waiter.complete(Err(broken()));
        }
    }

    fn wait(&mut self, caller: Caller, timeout: Option<Value>) -> Result<Outcome, WireError> {
        if self.broken {
            return Err(broken());
        }
        // A party that left without being released does not count.
        self.waiting.retain(|p| !p.waiter.is_gone());
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
                let _ = party.waiter.complete(Ok(Value::Int(party.index)));
            }
            return Ok(Value::Int(index).into());
        }
        let deadline = match seconds {
            None => None,
            // CPython's `wait_for` with no time left: the barrier breaks.
            Some(s) if s.is_nan() || s <= 0.0 => {
                self.break_all();
                return Err(broken());
            }
            Some(s) => waiter::deadline_after(Some(s), "")?,
        };
        let (waiter, parked) = waiter::park(caller.session, deadline);
        self.waiting.push(Party { waiter, index });
        Ok(Outcome::Park(parked))
    }

    fn n_waiting(&self) -> i64 {
        if self.broken {
            0
        } else {
            self.waiting.iter().filter(|p| !p.waiter.is_gone()).count() as i64
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

    fn call(&mut self, caller: Caller, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "__getattribute__" => self.attribute(&args.required(0)).map(Outcome::Ready),
            "wait" => self.wait(caller, args.take(0)),
            "abort" => {
                self.break_all();
                Ok(Value::None.into())
            }
            "reset" => {
                // Parties waiting now see the barrier broken; it is whole again after.
                self.fail_waiting();
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

    fn repr(&self) -> String {
        let at = grants::address(self);
        if self.broken {
            format!("<threading.Barrier at {at}: broken>")
        } else {
            format!("<threading.Barrier at {at}: waiters={}/{}>", self.n_waiting(), self.parties)
        }
    }

    fn expire(&mut self, ticket: u64) -> Option<Completion> {
        let i = self.waiting.iter().position(|p| p.waiter.ticket() == ticket)?;
        self.waiting.remove(i);
        // A party that timed out breaks the barrier for everyone, as in CPython.
        self.break_all();
        Some(Err(broken()))
    }

    fn abandon(&mut self, _caller: Caller, ticket: u64, _delivered: Option<Value>) {
        self.waiting.retain(|p| p.waiter.ticket() != ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Caller = Caller { session: 1 };

    fn barrier(parties: i64) -> BarrierObject {
        BarrierObject::new(Args::from_values("Barrier", vec![Value::Int(parties)])).unwrap()
    }

    fn wait(b: &mut BarrierObject) -> Result<Outcome, WireError> {
        b.call(A, "wait", Args::from_values("wait", vec![]))
    }

    #[tokio::test]
    async fn arrival_indexes_and_rounds() {
        let mut b = barrier(3);
        let Outcome::Park(mut first) = wait(&mut b).unwrap() else { panic!() };
        let Outcome::Park(mut second) = wait(&mut b).unwrap() else { panic!() };
        assert_eq!(b.attribute(&Value::Str("n_waiting".into())).unwrap(), Value::Int(2));
        let Outcome::Ready(last) = wait(&mut b).unwrap() else { panic!() };
        assert_eq!(last, Value::Int(2));
        assert_eq!(first.rx.try_recv().unwrap().unwrap(), Value::Int(0));
        assert_eq!(second.rx.try_recv().unwrap().unwrap(), Value::Int(1));
        assert_eq!(b.attribute(&Value::Str("n_waiting".into())).unwrap(), Value::Int(0), "ready for a new round");
    }

    #[tokio::test]
    async fn timeout_abort_and_reset_break_it() {
        let mut b = barrier(3);
        let Outcome::Park(mut first) = wait(&mut b).unwrap() else { panic!() };
        let Outcome::Park(second) = wait(&mut b).unwrap() else { panic!() };
        assert_eq!(b.expire(second.ticket).unwrap().unwrap_err().code, ErrorCode::BrokenBarrier);
        assert_eq!(first.rx.try_recv().unwrap().unwrap_err().code, ErrorCode::BrokenBarrier);
        assert_eq!(b.attribute(&Value::Str("broken".into())).unwrap(), Value::Bool(true));
        assert_eq!(wait(&mut b).unwrap_err().code, ErrorCode::BrokenBarrier);
        b.call(A, "reset", Args::from_values("reset", vec![])).unwrap();
        assert!(matches!(wait(&mut b).unwrap(), Outcome::Park(_)));
        b.call(A, "abort", Args::from_values("abort", vec![])).unwrap();
        assert!(b.repr().ends_with(": broken>"));
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
