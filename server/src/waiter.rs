//! Parked calls: how a blocking method (queue get, lock acquire, event wait…) waits
//! without holding a thread, a connection, or its object's lock.
//!
//! An object that cannot answer a call yet makes a pair with [`park`]: it keeps the
//! [`Waiter`] in its own FIFO and returns the [`Parked`] half to the core, which awaits
//! it off the object's lock. Every hand-off (an item, a permit, a grant) happens under
//! the object's lock through [`Waiter::complete`], which fails — giving the value back
//! — when the waiting side is gone, so the object offers it to the next waiter or keeps
//! it. Nothing is handed to nobody.
//!
//! The core settles the other outcomes, also under the object's lock so they cannot
//! race a hand-off: on the deadline it asks the object to [`expire`] the waiter (the
//! object removes it and says what to answer); when the caller cancels or disconnects
//! it asks the object to [`abandon`] it, passing along anything that was handed over
//! in the meantime so the object can take it back.
//!
//! [`expire`]: crate::object::SharedObject::expire
//! [`abandon`]: crate::object::SharedObject::abandon

use std::sync::atomic::{AtomicU64, Ordering};

use agora_proto::{Value, WireError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::registry::ObjectEntry;

/// What a parked call finally answers.
pub type Completion = Result<Value, WireError>;

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// The object's half of a parked call: kept in the object's wait queue.
#[derive(Debug)]
pub struct Waiter {
    ticket: u64,
    session: u64,
    tx: oneshot::Sender<Completion>,
}

/// The core's half of a parked call.
#[derive(Debug)]
pub struct Parked {
    /// Identifies the waiter to the object in `expire` and `abandon`.
    pub ticket: u64,
    /// When the call stops waiting, if it has a timeout.
    pub deadline: Option<Instant>,
    /// Receives the completion.
    pub rx: oneshot::Receiver<Completion>,
}

/// Makes a waiter for a call of `session` that gives up at `deadline`.
pub fn park(session: u64, deadline: Option<Instant>) -> (Waiter, Parked) {
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    (Waiter { ticket, session, tx }, Parked { ticket, deadline, rx })
}

impl Waiter {
    /// The ticket the core uses to name this waiter.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// The session that is waiting.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// True if the waiting side is gone (timed out, cancelled, disconnected).
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Hands `completion` to the waiting call; gives it back if the caller is gone.
    pub fn complete(self, completion: Completion) -> Result<(), Completion> {
        self.tx.send(completion)
    }
}

/// Waits for a parked call's completion, applying its deadline: when it passes, the
/// object settles the call under its lock ([`ObjectEntry::expire`]), so a timeout can
/// never race a hand-off. Both dialects wait this way.
pub async fn settle(
    entry: &ObjectEntry,
    ticket: u64,
    deadline: Option<Instant>,
    rx: &mut oneshot::Receiver<Completion>,
) -> Completion {
    let gone = || Err(WireError::new(agora_proto::ErrorCode::Internal, "a parked call's object dropped it"));
    let _waiting = entry.waiting(); // the metrics' waiter gauge and wait-time histogram
    if let Some(deadline) = deadline {
        tokio::select! {
            completion = &mut *rx => return completion.unwrap_or_else(|_| gone()),
            _ = tokio::time::sleep_until(deadline) => {}
        }
        if let Some(timed_out) = entry.expire(ticket) {
            return timed_out;
        }
    }
    rx.await.unwrap_or_else(|_| gone())
}

/// A deadline `timeout` seconds from now, or `None` for "wait forever". Rejects
/// negative and non-finite timeouts with `message` (callers pass CPython's wording).
pub fn deadline_after(timeout: Option<f64>, message: &str) -> Result<Option<Instant>, WireError> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(WireError::value_error(message)),
        // Far-future timeouts (Python's threading.TIMEOUT_MAX) mean "forever".
        Some(t) => Ok(std::time::Duration::try_from_secs_f64(t).ok().and_then(|d| Instant::now().checked_add(d))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_waiter_gives_the_value_back() {
        let (waiter, parked) = park(1, None);
        drop(parked);
        assert!(waiter.is_gone());
        assert_eq!(waiter.complete(Ok(Value::Int(7))).unwrap_err().unwrap(), Value::Int(7));
    }

    #[tokio::test]
    async fn a_present_waiter_receives_it() {
        let (waiter, parked) = park(1, None);
        assert!(!waiter.is_gone());
        waiter.complete(Ok(Value::Int(7))).unwrap();
        assert_eq!(parked.rx.await.unwrap().unwrap(), Value::Int(7));
    }

    #[test]
    fn deadlines() {
        assert_eq!(deadline_after(None, "m").unwrap(), None);
        assert!(deadline_after(Some(0.5), "m").unwrap().is_some());
        assert_eq!(deadline_after(Some(-1.0), "neg").unwrap_err().message, "neg");
        assert!(deadline_after(Some(f64::NAN), "m").is_err());
        assert_eq!(deadline_after(Some(1e300), "m").unwrap(), None, "effectively forever");
    }
}
