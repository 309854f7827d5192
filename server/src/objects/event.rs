//! The shared `Event` (Python's `SyncManager.Event()`, a `threading.Event`): a flag,
//! and waiters that all wake when it is set.
//!
//! Methods: `is_set()`, `set()`, `clear()`, `wait(timeout=None)` → the flag (`True`
//! when set, `False` on timeout). As in CPython, a timeout of zero or less does not
//! wait. A `wait` that must wait parks; `set` answers every parked wait `True`, its
//! deadline answers it `False`, and a wait whose caller left is removed by its
//! `Abandon` (an answer it never received needs nothing back).

use std::collections::VecDeque;

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::grants::{self, condition_wait, Wait};
use crate::engine::{Ctx, Reclaim, Ticket, Undelivered, Waiter};
use crate::object::{encode_state, Args, Holders, MethodSpec, Outcome, SharedObject, Waiting};

/// The kind's constructor and methods, declared in [`agora_proto::methods::event`].
pub use agora_proto::methods::event::CONSTRUCTOR;
use agora_proto::methods::event::METHODS;

/// A shared event.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EventObject {
    flag: bool,
    waiters: VecDeque<Waiter>,
}

impl EventObject {
    /// `Event()`: not set.
    pub fn new(_args: Args) -> Result<EventObject, WireError> {
        Ok(EventObject::default())
    }

    fn set(&mut self, ctx: &mut Ctx<'_>) {
        self.flag = true;
        for waiter in self.waiters.drain(..) {
            ctx.deliver(waiter, Ok(Value::Bool(true)), Reclaim::Nothing);
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

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, mut args: Args) -> Result<Outcome, WireError> {
        match method {
            "is_set" => Ok(Value::Bool(self.flag).into()),
            "set" => {
                self.set(ctx);
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
                    Wait::For(wait) => {
                        let waiter = ctx.park(Wait::deadline(wait, ctx.now()));
                        self.waiters.push_back(waiter);
                        Ok(Outcome::Parked)
                    }
                }
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Event has no method '{other}'"))),
        }
    }

    fn snapshot(&self) -> Value {
        Value::Bool(self.flag)
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        let state = if self.flag { "set" } else { "unset" };
        format!("<threading.Event at {}: {state}>", grants::address(self))
    }

    fn expire(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket) {
        let Some(i) = self.waiters.iter().position(|w| w.ticket == ticket) else { return };
        let waiter = self.waiters.remove(i).expect("found");
        ctx.deliver(waiter, Ok(Value::Bool(false)), Reclaim::Nothing);
    }

    fn abandon(&mut self, _ctx: &mut Ctx<'_>, ticket: Ticket, _undelivered: Option<Undelivered>) {
        self.waiters.retain(|w| w.ticket != ticket);
    }

    /// Nobody holds an Event; its waiters wait for `set`.
    fn holders(&self) -> Holders {
        let waiting = self
            .waiters
            .iter()
            .map(|w| Waiting { session: w.session, ticket: w.ticket, what: "wait".into() })
            .collect();
        Holders { held: Vec::new(), waiting }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Harness, SessionId};

    const A: SessionId = 1;

    fn wait(h: &mut Harness, e: &mut EventObject, args: Vec<Value>) -> Outcome {
        e.call(&mut h.ctx(A), "wait", Args::from_values("wait", args)).unwrap()
    }

    fn parks(h: &mut Harness, e: &mut EventObject, args: Vec<Value>) -> Ticket {
        assert_eq!(wait(h, e, args), Outcome::Parked, "not set yet");
        h.parked().expect("a parked call").ticket
    }

    #[test]
    fn set_wakes_every_waiter_and_timeouts_answer_false() {
        let mut h = Harness::default();
        let mut e = EventObject::default();
        let mut parked: Vec<Ticket> = (0..3).map(|_| parks(&mut h, &mut e, vec![])).collect();
        let timed = parked.pop().unwrap();
        e.expire(&mut h.ctx(A), timed);
        assert_eq!(h.delivered_to(timed).unwrap().completion.unwrap(), Value::Bool(false));
        e.call(&mut h.ctx(A), "set", Args::from_values("set", vec![])).unwrap();
        for ticket in parked {
            let delivery = h.delivered_to(ticket).unwrap();
            assert_eq!((delivery.completion.unwrap(), delivery.reclaim), (Value::Bool(true), Reclaim::Nothing));
        }
        assert!(h.deliveries().is_empty(), "the timed-out waiter was answered once");
        assert_eq!(wait(&mut h, &mut e, vec![Value::Int(0)]), Outcome::Ready(Value::Bool(true)));
        assert!(e.repr().ends_with(": set>"));
    }

    #[test]
    fn a_zero_timeout_does_not_wait_and_a_deadline_is_set() {
        let mut h = Harness::default();
        let mut e = EventObject::default();
        assert_eq!(wait(&mut h, &mut e, vec![Value::Int(0)]), Outcome::Ready(Value::Bool(false)));
        assert!(h.parked().is_none());
        assert_eq!(wait(&mut h, &mut e, vec![Value::Float(2.0)]), Outcome::Parked);
        assert_eq!(h.parked().unwrap().deadline, h.now.after_secs(2.0));
    }

    #[test]
    fn abandoned_waiters_leave_and_late_expiries_do_nothing() {
        let mut h = Harness::default();
        let mut e = EventObject::default();
        let left = parks(&mut h, &mut e, vec![]);
        let stays = parks(&mut h, &mut e, vec![Value::Float(1.0)]);
        e.abandon(&mut h.ctx(A), left, None);
        e.call(&mut h.ctx(A), "set", Args::from_values("set", vec![])).unwrap();
        assert!(h.delivered_to(left).is_none());
        assert_eq!(h.delivered_to(stays).unwrap().completion.unwrap(), Value::Bool(true));
        // Its deadline comes after the answer: nothing happens.
        e.expire(&mut h.ctx(A), stays);
        assert!(h.deliveries().is_empty());
        // An abandon after the answer (nothing to take back) changes nothing either.
        e.abandon(&mut h.ctx(A), stays, None);
        assert_eq!(e.snapshot(), Value::Bool(true));
    }
}
