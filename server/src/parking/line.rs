//! A waiting connection's line to its client: the answer of a parked call written
//! onto the client's socket by the thread whose command produced it.
//!
//! A stock CPython client blocked in `lock.acquire()` is served by a thread of its own
//! that sleeps while the call is parked. When another client releases the lock, the
//! releasing thread used to wake the sleeping one only for it to write a few dozen
//! bytes, so every hand-off of a contended lock waited for a thread wake-up — on a
//! machine whose cores the client processes keep busy, for a free core too. A
//! connection that waits *arms* its session's line with an [`Answerer`] that can write
//! its reply; the parking layer offers the call's delivery to it first, from the
//! thread that made the delivery. A reply written whole leaves the delivery on the
//! line, where the connection finds it when its client's next call (or its close)
//! wakes it: one wake-up per hand-off instead of two, and none on the hand-off's path.
//!
//! Owns: the state of one session's line. It must not know a wire format (the
//! connection's [`Answerer`] encodes and writes) nor decide when a line may be used
//! (the parking layer offers deliveries only where an answer waits for no log).

use std::sync::{Mutex, MutexGuard};

use crate::metrics::WaitGuard;

use crate::engine::{Completion, Delivery, Ticket};

/// How much of a reply an [`Answerer`] put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// None of it: the connection answers as if the line had not been armed.
    Nothing,
    /// This many bytes, fewer than the whole reply: the connection writes the rest.
    Part(usize),
    /// All of it.
    Whole,
}

/// Writes a parked call's reply onto its client's socket without waiting.
pub trait Answerer: Send {
    /// Writes the reply `completion` makes, if it can without waiting (a full socket
    /// buffer, or a completion the connection must rewrite first, writes nothing).
    fn answer(&mut self, completion: &Completion) -> Written;
}

/// A line's state.
enum State {
    /// No call is waiting on it.
    Idle,
    /// Call `ticket` waits; `answerer` may write its reply. `waiting`: the call's place
    /// in its object's count of waiting calls, given up when its delivery comes (the
    /// connection may not wake for it), handed back if the line is disarmed first.
    Armed { ticket: Ticket, answerer: Box<dyn Answerer>, waiting: Option<WaitGuard> },
    /// The reply to this delivery was written whole; its connection has not looked yet.
    Answered(Delivery),
    /// `written` bytes of the armed call's reply went out; its delivery went by mail.
    Begun { written: usize },
}

/// One session's line (see the module docs).
pub struct Line(Mutex<State>);

impl Default for Line {
    fn default() -> Line {
        Line(Mutex::new(State::Idle))
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line").finish_non_exhaustive()
    }
}

/// What a connection finds on its line when it stops watching it.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// No reply went out through the line: the answer comes (or came) by mail, if at all.
    Unused,
    /// The reply to this delivery is on the client's socket, whole.
    Answered(Delivery),
    /// This many bytes of the reply went out; the delivery is in the mailbox.
    Begun(usize),
}

impl Settled {
    /// How many bytes of the reply went out through the line (0 unless [`Settled::Begun`]).
    pub fn begun(&self) -> usize {
        match self {
            Settled::Begun(written) => *written,
            _ => 0,
        }
    }
}

impl Line {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `answerer` write the reply of parked call `ticket`, which holds `waiting`
    /// until its delivery comes. The connection must [`disarm`](Line::disarm) the line
    /// before whatever the answerer writes to closes.
    pub fn arm(&self, ticket: Ticket, answerer: Box<dyn Answerer>, waiting: Option<WaitGuard>) {
        *self.state() = State::Armed { ticket, answerer, waiting };
    }

    /// Offers `delivery` to the armed answerer; gives it back unless its reply went out
    /// whole (then it stays on the line). An answerer is used once, whatever it wrote.
    pub(super) fn offer(&self, delivery: Delivery) -> Option<Delivery> {
        let mut state = self.state();
        let mut answerer = match std::mem::replace(&mut *state, State::Idle) {
            // The call waits no more, whoever writes its reply.
            State::Armed { ticket, answerer, waiting: _ } if ticket == delivery.waiter.ticket => answerer,
            other => {
                *state = other;
                return Some(delivery);
            }
        };
        match answerer.answer(&delivery.completion) {
            Written::Whole => {
                *state = State::Answered(delivery);
                None
            }
            Written::Part(written) => {
                *state = State::Begun { written };
                Some(delivery)
            }
            Written::Nothing => Some(delivery),
        }
    }

    /// Takes a delivery whose reply went out whole, if there is one; otherwise the line
    /// stays as it is (still armed, perhaps).
    pub fn answered(&self) -> Option<Delivery> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, State::Idle) {
            State::Answered(delivery) => Some(delivery),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Leaves the line idle, with no answerer that could still write, and says what
    /// went out through it. Waits for an answerer that is writing.
    pub fn disarm(&self) -> Settled {
        self.disarm_still_waiting().0
    }

    /// [`Line::disarm`], handing back the waiting call's place in its object's count if
    /// no delivery came: the call still waits, and the connection keeps counting it.
    pub fn disarm_still_waiting(&self) -> (Settled, Option<WaitGuard>) {
        match std::mem::replace(&mut *self.state(), State::Idle) {
            State::Idle => (Settled::Unused, None),
            State::Armed { waiting, .. } => (Settled::Unused, waiting),
            State::Answered(delivery) => (Settled::Answered(delivery), None),
            State::Begun { written, .. } => (Settled::Begun(written), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use agora_proto::Value;

    use super::*;
    use crate::engine::{Reclaim, Waiter};

    /// Says it wrote what it was built to say, and counts its calls.
    struct Fake(Written, Arc<AtomicUsize>);

    impl Answerer for Fake {
        fn answer(&mut self, _: &Completion) -> Written {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0
        }
    }

    fn delivery(ticket: Ticket) -> Delivery {
        Delivery {
            waiter: Waiter { ticket, session: 1, object: 1 },
            completion: Ok(Value::Bool(true)),
            reclaim: Reclaim::Grant(ticket),
        }
    }

    fn armed(ticket: Ticket, written: Written) -> (Line, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let line = Line::default();
        line.arm(ticket, Box::new(Fake(written, calls.clone())), None);
        (line, calls)
    }

    #[test]
    fn a_reply_written_whole_keeps_its_delivery_on_the_line() {
        let (line, calls) = armed(7, Written::Whole);
        assert_eq!(line.offer(delivery(7)), None, "nothing to mail");
        assert_eq!(line.answered(), Some(delivery(7)));
        assert_eq!(line.answered(), None, "taken once");
        assert_eq!(line.disarm(), Settled::Unused);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_connection_that_stops_watching_finds_a_whole_reply() {
        let (line, _) = armed(7, Written::Whole);
        assert_eq!(line.offer(delivery(7)), None);
        assert_eq!(line.disarm(), Settled::Answered(delivery(7)));
    }

    #[test]
    fn a_partly_written_reply_is_mailed_and_says_how_much_went_out() {
        let (line, _) = armed(7, Written::Part(5));
        assert_eq!(line.offer(delivery(7)), Some(delivery(7)), "the connection writes the rest");
        assert_eq!(line.answered(), None, "not whole");
        assert_eq!(line.disarm(), Settled::Begun(5));
    }

    #[test]
    fn an_unwritten_reply_is_mailed_and_the_answerer_is_not_used_again() {
        let (line, calls) = armed(7, Written::Nothing);
        assert_eq!(line.offer(delivery(7)), Some(delivery(7)));
        assert_eq!(line.disarm(), Settled::Unused);
        assert_eq!(line.offer(delivery(7)), Some(delivery(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn another_calls_delivery_and_a_disarmed_line_are_not_answered() {
        let (line, calls) = armed(7, Written::Whole);
        assert_eq!(line.offer(delivery(8)), Some(delivery(8)), "not the armed call's");
        assert_eq!(line.answered(), None, "still armed");
        assert_eq!(line.disarm(), Settled::Unused);
        assert_eq!(line.offer(delivery(7)), Some(delivery(7)), "disarmed");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiting_call_is_counted_until_its_delivery_or_handed_back_when_disarmed_first() {
        use crate::metrics::Metrics;
        let metrics = Metrics::default();
        let queue = metrics.kind(&agora_proto::native::Kind::Queue, &[]);
        let calls = Arc::new(AtomicUsize::new(0));
        let line = Line::default();

        // Disarmed before any delivery (bytes came behind the call): it still waits.
        line.arm(7, Box::new(Fake(Written::Whole, calls.clone())), Some(queue.waiting()));
        let (settled, waiting) = line.disarm_still_waiting();
        assert_eq!(settled, Settled::Unused);
        assert!(waiting.is_some(), "the place in the count comes back");
        assert_eq!(queue.waiters(), 1, "the call is still counted");
        drop(waiting);
        assert_eq!(queue.waiters(), 0);

        // Delivered through the line: the count drops then, though no one disarms yet.
        for written in [Written::Whole, Written::Part(3), Written::Nothing] {
            line.arm(8, Box::new(Fake(written, calls.clone())), Some(queue.waiting()));
            line.offer(delivery(9));
            assert_eq!(queue.waiters(), 1, "another call's delivery: still waiting");
            line.offer(delivery(8));
            assert_eq!(queue.waiters(), 0, "{written:?}: delivered, waiting no more");
            assert!(line.disarm_still_waiting().1.is_none());
        }
    }
}
