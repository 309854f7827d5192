//! Parked calls as data: what an object keeps for a call that waits, and what it hands
//! out when the wait ends.
//!
//! A blocking method (queue get, lock acquire, event wait…) that cannot answer yet asks
//! its context to [`park`](super::Ctx::park) and keeps the returned [`Waiter`] in its
//! own FIFO. A waiter is three numbers — the call's ticket, its session, and the object
//! it was parked on — never a channel or a task: whether its caller is still there is
//! not a question an object asks. When the object can answer, it
//! [`deliver`](super::Ctx::deliver)s a [`Delivery`]; the parking layer routes it to
//! the waiting connection.
//!
//! Every delivery says how to take it back ([`Reclaim`]). If its caller left before
//! it arrived (timed out, cancelled, disconnected), the parking layer applies an
//! `Abandon` command naming the call's ticket and carrying the undelivered answer and
//! its reclaim ([`Undelivered`]): the object takes exactly that back — an item to the
//! head of its queue, a lease, a lock grant — with no guessing and no memory of past
//! hand-offs. Nothing is handed to nobody.

use agora_proto::native::ObjectId;
use agora_proto::{Value, WireError};
use serde::{Deserialize, Serialize};

use super::clock::Time;

/// Names one parked call, server-wide; tickets only grow, so ticket order is arrival order.
pub type Ticket = u64;

/// A session's id (one per connection), unique for the life of the engine's state.
pub type SessionId = u64;

/// What a parked call finally answers.
pub type Completion = Result<Value, WireError>;

/// A parked call, as the object that keeps it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The call's ticket.
    pub ticket: Ticket,
    /// The session that is waiting.
    pub session: SessionId,
    /// The object the call was made on (a Condition's waiter may end up queued in the
    /// Condition's lock; expiries and abandons still go to the Condition).
    pub object: ObjectId,
}

/// How to take a delivery back if it never reaches its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reclaim {
    /// Nothing to take back (a put's or a join's completion, an error, a flag).
    Nothing,
    /// The delivered value is an item: it goes back to the head of its queue.
    Item,
    /// A queue lease with this receipt: its item goes back to the head, if still leased.
    Lease(u64),
    /// A lock grant or permit with this fencing token: released, if still held.
    Grant(u64),
}

/// An answer for a parked call, on its way to the waiting connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Who receives it.
    pub waiter: Waiter,
    /// The answer.
    pub completion: Completion,
    /// How to take it back if the caller is gone.
    pub reclaim: Reclaim,
}

impl Delivery {
    /// What an `Abandon` must carry back for this delivery, or `None` if there is
    /// nothing to take back.
    pub fn undelivered(self) -> Option<Undelivered> {
        match (self.reclaim, self.completion) {
            (Reclaim::Nothing, _) | (_, Err(_)) => None,
            (reclaim, Ok(value)) => Some(Undelivered { reclaim, value }),
        }
    }
}

/// A delivery that never reached its caller, given back to the object in `Abandon`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undelivered {
    /// How to take it back.
    pub reclaim: Reclaim,
    /// The value that was delivered (the item itself, for [`Reclaim::Item`]).
    pub value: Value,
}

/// A parked call's ticket and deadline, as the engine reports it to the parking layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// The call's ticket.
    pub ticket: Ticket,
    /// When it stops waiting (`None`: never).
    pub deadline: Option<Time>,
}

/// A deadline `timeout` seconds after `now`, or `None` for "wait forever". Rejects
/// negative and NaN timeouts with `message` (callers pass CPython's wording); a
/// far-future timeout (Python's `threading.TIMEOUT_MAX`) means forever.
pub fn deadline_after(now: Time, timeout: Option<f64>, message: &str) -> Result<Option<Time>, WireError> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(WireError::value_error(message)),
        Some(t) => Ok(now.after_secs(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        let now = Time(10);
        assert_eq!(deadline_after(now, None, "m").unwrap(), None);
        assert_eq!(deadline_after(now, Some(0.5), "m").unwrap(), Some(Time(500_010)));
        assert_eq!(deadline_after(now, Some(-1.0), "neg").unwrap_err().message, "neg");
        assert!(deadline_after(now, Some(f64::NAN), "m").is_err());
        assert_eq!(deadline_after(now, Some(1e300), "m").unwrap(), None, "effectively forever");
    }

    #[test]
    fn only_values_with_a_reclaim_come_back() {
        let waiter = Waiter { ticket: 1, session: 1, object: 1 };
        let d = |completion, reclaim| Delivery { waiter, completion, reclaim };
        assert_eq!(d(Ok(Value::None), Reclaim::Nothing).undelivered(), None);
        assert_eq!(d(Err(WireError::value_error("x")), Reclaim::Item).undelivered(), None);
        assert_eq!(
            d(Ok(Value::None), Reclaim::Item).undelivered(),
            Some(Undelivered { reclaim: Reclaim::Item, value: Value::None }),
            "a None item is an item"
        );
    }
}
