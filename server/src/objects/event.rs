//! The shared `Event` (Python's `SyncManager.Event()`, a `threading.Event`): a flag,
//! and waiters that all wake when it is set.
//!
//! Methods: `is_set()`, `set()`, `clear()`, `wait(timeout=None)` → the flag (`True`
//! when set, `False` on timeout). As in CPython, a timeout of zero or less does not
//! wait.

use std::collections::VecDeque;

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};

use super::grants::{self, condition_wait, Wait};
use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::waiter::{self, Completion, Waiter};

/// `Event()`.
pub const CONSTRUCTOR: MethodSpec = MethodSpec::new("Event", &[]);

/// CPython's `EventProxy` methods.
const METHODS: &[MethodSpec] = &[
    MethodSpec::new("is_set", &[]),
    MethodSpec::new("set", &[]),
    MethodSpec::new("clear", &[]),
    MethodSpec::optional("wait", &["timeout"], 0),
];

/// A shared event.
#[derive(Debug, Default)]
pub struct EventObject {
    flag: bool,
    waiters: VecDeque<Waiter>,
}

impl EventObject {
    /// `Event()`: not set.
    pub fn new(_args: Args) -> Result<EventObject, WireError> {
        Ok(EventObject::default())
    }

    fn set(&mut self) {
        self.flag = true;
        for waiter in self.waiters.drain(..) {
            // A waiter whose caller is gone needs nothing.
            let _ = waiter.complete(Ok(Value::Bool(true)));
        }
    }
}

impl SharedObject for EventObject {
    fn kind(&self) -> Kind {
        Kind::Event
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, caller: Caller, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "is_set" => Ok(Value::Bool(self.flag).into()),
            "set" => {
                self.set();
                Ok(Value::None.into())
            }
            "clear" => {
                self.flag = false;
                Ok(Value::None.into())
            }
            "wait" => {
                if self.flag {
                    return Ok(Value::Bool(true).into());
                }
                match condition_wait(args.take(0))? {
                    Wait::No => Ok(Value::Bool(false).into()),
                    Wait::Until(deadline) => {
                        let (waiter, parked) = waiter::park(caller.session, deadline);
                        self.waiters.retain(|w| !w.is_gone());
                        self.waiters.push_back(waiter);
                        Ok(Outcome::Park(parked))
                    }
                }
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Event has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        Value::Bool(self.flag)
    }

    fn repr(&self) -> String {
        let state = if self.flag { "set" } else { "unset" };
        format!("<threading.Event at {}: {state}>", grants::address(self))
    }

    fn expire(&mut self, ticket: u64) -> Option<Completion> {
        let i = self.waiters.iter().position(|w| w.ticket() == ticket)?;
        self.waiters.remove(i);
        Some(Ok(Value::Bool(false)))
    }

    fn abandon(&mut self, _caller: Caller, ticket: u64, _delivered: Option<Value>) {
        self.waiters.retain(|w| w.ticket() != ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Caller = Caller { session: 1 };

    #[tokio::test]
    async fn set_wakes_every_waiter_and_timeouts_answer_false() {
        let mut e = EventObject::default();
        let mut parked = Vec::new();
        for _ in 0..3 {
            match e.call(A, "wait", Args::from_values("wait", vec![])).unwrap() {
                Outcome::Park(p) => parked.push(p),
                Outcome::Ready(_) => panic!("not set yet"),
            }
        }
        let timed = parked.pop().unwrap();
        assert_eq!(e.expire(timed.ticket).unwrap().unwrap(), Value::Bool(false));
        e.set();
        for mut p in parked {
            assert_eq!(p.rx.try_recv().unwrap().unwrap(), Value::Bool(true));
        }
        let Outcome::Ready(v) = e.call(A, "wait", Args::from_values("wait", vec![Value::Int(0)])).unwrap() else {
            panic!()
        };
        assert_eq!(v, Value::Bool(true));
        assert!(e.repr().ends_with(": set>"));
    }
}
