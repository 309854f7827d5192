//! A recorded history of client operations, for checking after a fault-injection run.
//!
//! A client wraps every request it sends:
//!
//! ```
//! use agora_tests::history::{History, Op, Output};
//! let history = History::new();
//! let h = history.invoke(1, Op::Put { key: "x".into(), value: 5 });
//! // … send the request …
//! h.ok(Output::Done);
//! assert_eq!(history.len(), 1);
//! ```
//!
//! The three ways an invocation can end are the ones a checker must tell apart:
//! [`Invocation::ok`] (it happened, with this output), [`Invocation::failed`] (it
//! definitely did not happen) and [`Invocation::unknown`] (a timeout or a lost
//! connection: it may have happened, at any time after its call, or never). An
//! invocation dropped without being ended stays [`Outcome::Pending`], which checkers
//! treat exactly like [`Outcome::Unknown`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Who issued an operation (a test's own numbering of its clients).
pub type ClientId = u64;

/// One client request, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Dict: set `key` to `value`. Output: [`Output::Done`].
    Put {
        /// The key.
        key: String,
        /// The value written.
        value: i64,
    },
    /// Dict: read `key`. Output: [`Output::Value`] (`None` when absent).
    Get {
        /// The key.
        key: String,
    },
    /// Dict: set `key` to `new` if it currently holds `expect` (an absent key never
    /// matches). Output: [`Output::Cas`] (whether it swapped).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        expect: i64,
        /// The value written when it does.
        new: i64,
    },
    /// Counter: add `delta` to `key` (absent counts as 0). Output: [`Output::Counter`]
    /// (the new value).
    Add {
        /// The key.
        key: String,
        /// The amount added.
        delta: i64,
    },
    /// Queue: append `item`. Output: [`Output::Done`].
    QueuePut {
        /// The queue.
        queue: String,
        /// The item (tests should make items unique per queue).
        item: String,
    },
    /// Queue: take the next item (leased until acked). Output: [`Output::Item`].
    QueueGet {
        /// The queue.
        queue: String,
    },
    /// Queue: acknowledge a delivered item. Output: [`Output::Done`].
    Ack {
        /// The queue.
        queue: String,
        /// The item acknowledged.
        item: String,
    },
    /// Lock: acquire. Output: [`Output::Token`] (the fencing token).
    Acquire {
        /// The lock.
        lock: String,
    },
    /// Lock: release the hold that `token` was issued for. Output: [`Output::Done`].
    Release {
        /// The lock.
        lock: String,
        /// The fencing token of the hold being released.
        token: u64,
    },
    /// Fenced resource: write guarded by a fencing token. Output: [`Output::Accepted`].
    FencedWrite {
        /// The resource.
        resource: String,
        /// The fencing token presented.
        token: u64,
    },
}

/// What a successful operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// No value (put, queue put, ack, release).
    Done,
    /// The value read by a get (`None`: absent).
    Value(Option<i64>),
    /// Whether a cas swapped.
    Cas(bool),
    /// A counter's value after an add.
    Counter(i64),
    /// The item a queue get returned (`None`: the queue was empty).
    Item(Option<String>),
    /// The fencing token an acquire returned.
    Token(u64),
    /// Whether a fenced write was accepted.
    Accepted(bool),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Not ended (yet): treated like [`Outcome::Unknown`].
    Pending,
    /// It happened and returned this.
    Ok(Output),
    /// It definitely did not happen (the server refused it before acting).
    Failed,
    /// Timeout or lost connection: it may have happened, or not.
    Unknown,
}

impl Outcome {
    /// True for [`Outcome::Unknown`] and [`Outcome::Pending`]: the operation may or
    /// may not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Outcome::Unknown | Outcome::Pending)
    }
}

/// One operation of a history: its call, its return and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the history (order of invocation).
    pub index: usize,
    /// The client that issued it.
    pub client: ClientId,
    /// The request.
    pub op: Op,
    /// When the client was about to send it.
    pub call: Instant,
    /// When the client learned the outcome (`None` while pending). For an unknown
    /// outcome this is when the client gave up; checkers ignore it.
    pub ret: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put {key:?} {value}"),
            Op::Get { key } => write!(f, "get {key:?}"),
            Op::Cas { key, expect, new } => write!(f, "cas {key:?} {expect}->{new}"),
            Op::Add { key, delta } => write!(f, "add {key:?} {delta:+}"),
            Op::QueuePut { queue, item } => write!(f, "queue-put {queue:?} {item:?}"),
            Op::QueueGet { queue } => write!(f, "queue-get {queue:?}"),
            Op::Ack { queue, item } => write!(f, "ack {queue:?} {item:?}"),
            Op::Acquire { lock } => write!(f, "acquire {lock:?}"),
            Op::Release { lock, token } => write!(f, "release {lock:?} token {token}"),
            Op::FencedWrite { resource, token } => write!(f, "fenced-write {resource:?} token {token}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pending => f.write_str("pending"),
            Outcome::Failed => f.write_str("failed"),
            Outcome::Unknown => f.write_str("unknown"),
            Outcome::Ok(Output::Done) => f.write_str("ok"),
            Outcome::Ok(Output::Value(v)) => write!(f, "ok {v:?}"),
            Outcome::Ok(Output::Cas(b)) => write!(f, "ok {b}"),
            Outcome::Ok(Output::Counter(v)) => write!(f, "ok {v}"),
            Outcome::Ok(Output::Item(i)) => write!(f, "ok {i:?}"),
            Outcome::Ok(Output::Token(t)) => write!(f, "ok token {t}"),
            Outcome::Ok(Output::Accepted(b)) => write!(f, "ok accepted={b}"),
        }
    }
}

/// A thread-safe, append-only recorder of operations. Cloning is cheap and every
/// clone records into the same history.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records the call of `op` by `client` now; end it through the returned handle.
    pub fn invoke(&self, client: ClientId, op: Op) -> Invocation {
        let mut events = self.events.lock().unwrap();
        let index = events.len();
        // Stamped under the lock so that index order is call-time order.
        events.push(Event { index, client, op, call: Instant::now(), ret: None, outcome: Outcome::Pending });
        Invocation { history: self.clone(), index }
    }

    /// Appends a complete event with the caller's own timestamps (its `index` is
    /// overwritten): for building histories by hand in checker tests.
    pub fn record(&self, client: ClientId, op: Op, call: Instant, ret: Option<Instant>, outcome: Outcome) {
        let mut events = self.events.lock().unwrap();
        let index = events.len();
        events.push(Event { index, client, op, call, ret, outcome });
    }

    /// A snapshot of every event so far, in invocation order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The number of operations invoked so far.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// True when nothing was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn end(&self, index: usize, outcome: Outcome) {
        let now = Instant::now();
        let mut events = self.events.lock().unwrap();
        let event = &mut events[index];
        event.ret = Some(now);
        event.outcome = outcome;
    }
}

/// An operation in flight; end it with [`ok`](Invocation::ok),
/// [`failed`](Invocation::failed) or [`unknown`](Invocation::unknown). Dropped without
/// that, it stays [`Outcome::Pending`].
#[derive(Debug)]
#[must_use = "end the invocation with ok, failed or unknown"]
pub struct Invocation {
    history: History,
    index: usize,
}

impl Invocation {
    /// The operation happened and returned `output`.
    pub fn ok(self, output: Output) {
        self.finish(Outcome::Ok(output));
    }

    /// The operation definitely did not happen.
    pub fn failed(self) {
        self.finish(Outcome::Failed);
    }

    /// The client cannot tell whether it happened (timeout, lost connection).
    pub fn unknown(self) {
        self.finish(Outcome::Unknown);
    }

    /// The event's position in the history.
    pub fn index(&self) -> usize {
        self.index
    }

    fn finish(&self, outcome: Outcome) {
        self.history.end(self.index, outcome);
    }
}

/// Builds histories by hand with explicit times, in milliseconds from a common origin
/// (for the checkers' own tests).
#[cfg(test)]
pub(crate) struct Builder {
    t0: Instant,
    /// The history built.
    pub(crate) history: History,
}

#[cfg(test)]
impl Builder {
    pub(crate) fn new() -> Builder {
        Builder { t0: Instant::now(), history: History::new() }
    }

    pub(crate) fn at(&self, ms: u64) -> Instant {
        self.t0 + std::time::Duration::from_millis(ms)
    }

    /// An operation called at `call` ms that returned at `ret` ms with `outcome`.
    pub(crate) fn op(&self, client: ClientId, op: Op, call: u64, ret: u64, outcome: Outcome) -> &Self {
        self.history.record(client, op, self.at(call), Some(self.at(ret)), outcome);
        self
    }

    /// A successful operation.
    pub(crate) fn ok(&self, client: ClientId, op: Op, call: u64, ret: u64, out: Output) -> &Self {
        self.op(client, op, call, ret, Outcome::Ok(out))
    }

    /// An operation whose outcome is unknown (its client gave up a second later).
    pub(crate) fn unknown(&self, client: ClientId, op: Op, call: u64) -> &Self {
        self.op(client, op, call, call + 1000, Outcome::Unknown)
    }

    /// An operation that definitely did not happen.
    pub(crate) fn failed(&self, client: ClientId, op: Op, call: u64, ret: u64) -> &Self {
        self.op(client, op, call, ret, Outcome::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_record_call_return_and_outcome() {
        let history = History::new();
        let a = history.invoke(1, Op::Put { key: "k".into(), value: 1 });
        let b = history.invoke(2, Op::Get { key: "k".into() });
        let c = history.invoke(3, Op::Acquire { lock: "l".into() });
        let d = history.invoke(4, Op::Get { key: "k".into() });
        let e = history.clone().invoke(5, Op::Add { key: "c".into(), delta: 1 });
        b.ok(Output::Value(Some(1)));
        a.ok(Output::Done);
        c.unknown();
        d.failed();
        drop(e);
        let events = history.events();
        assert_eq!(events.len(), 5);
        assert_eq!(events.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(events[0].outcome, Outcome::Ok(Output::Done));
        assert_eq!(events[1].outcome, Outcome::Ok(Output::Value(Some(1))));
        assert_eq!(events[2].outcome, Outcome::Unknown);
        assert_eq!(events[3].outcome, Outcome::Failed);
        assert_eq!(events[4].outcome, Outcome::Pending);
        assert!(events[4].ret.is_none() && events[4].outcome.is_indeterminate());
        for w in events.windows(2) {
            assert!(w[0].call <= w[1].call, "calls are stamped in invocation order");
        }
        for e in &events[..4] {
            assert!(e.ret.unwrap() >= e.call);
        }
    }

    #[test]
    fn history_is_shared_across_threads() {
        let history = History::new();
        let threads: Vec<_> = (0..4)
            .map(|c| {
                let history = history.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        history.invoke(c, Op::Add { key: "n".into(), delta: i }).ok(Output::Counter(0));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(history.len(), 400);
        assert!(history.events().iter().all(|e| e.ret.is_some()));
    }
}
