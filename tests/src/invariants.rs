//! Checks of a [`History`] that are not linearizability: queue delivery and lock
//! exclusion with fencing tokens.
//!
//! Both checks are lenient wherever an outcome is unknown (a client timed out): such an
//! operation may or may not have happened, so it can excuse an observation but never
//! counts as evidence of a violation. [`Outcome::Pending`] is treated like
//! [`Outcome::Unknown`]; failed operations definitely did not happen.
//!
//! # Queue rules ([`check_queues`])
//!
//! Per queue, with items expected to be unique (a retried put of the same item is
//! fine: each non-failed put is one possible copy):
//!
//! - **No loss**: every item whose put succeeded is returned by some successful get.
//!   This assumes the test drained every queue at the end.
//! - **No phantom**: every item returned was put by a put that did not fail (ok or
//!   unknown), and was not returned before that put was even called.
//! - **No duplicate after ack**: an item may be returned again (lease redelivery,
//!   counted in [`QueueReport::redeliveries`]) only while some copy of it is still
//!   unacknowledged: a get returning it after as many successful acks of it as it has
//!   copies had already returned is a violation.
//!
//! # Lock rules ([`check_locks`])
//!
//! Per lock (tokens are per lock) and per fenced resource:
//!
//! - **Unique tokens**: no token is returned by two successful acquires.
//! - **Tokens increase**: an acquire that returned before another was called got the
//!   smaller token.
//! - **Fencing**: a fenced write accepted with token `t` after (in real time) a write
//!   with a larger token had been accepted is a violation: it should have been refused.
//!   Writes with unknown outcome are never evidence.
//! - **Exclusion**: a hold lasts from its acquire's return to the call of the first
//!   non-failed release of its token (+infinity if none). Two holds of one lock must not
//!   overlap in real time. If the earlier hold ended with a successful release, any
//!   overlap is a violation. If it did not (its release failed or is unknown, or there
//!   was none: the holder may have crashed or been cut off, and the server may expire
//!   its lease), the overlap is allowed when the later hold's token is larger, and
//!   counted in [`LockReport::expired_holds`]; with a smaller token it is a violation.
//!   Acquires with unknown outcome carry no token and are not checked.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Instant;

use crate::history::{Event, History, Op, Outcome, Output};

/// The result of [`check_queues`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueReport {
    /// Queue operations (put, get, ack) looked at.
    pub ops_checked: usize,
    /// Distinct items put (by a put that did not fail).
    pub items_put: usize,
    /// Successful gets that returned an item.
    pub deliveries: usize,
    /// Deliveries of an item beyond its number of copies, allowed because a copy was
    /// still unacknowledged (lease expiry).
    pub redeliveries: usize,
    /// What went wrong, one line each.
    pub violations: Vec<String>,
}

impl QueueReport {
    /// True when no rule was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for QueueReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queues: {} ops, {} items, {} deliveries, {} redeliveries, {} violations",
            self.ops_checked,
            self.items_put,
            self.deliveries,
            self.redeliveries,
            self.violations.len()
        )?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// The result of [`check_locks`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockReport {
    /// Lock and fenced-resource operations looked at.
    pub ops_checked: usize,
    /// Successful acquires (the ones whose token is known).
    pub acquisitions: usize,
    /// Fenced writes with a known outcome.
    pub fenced_writes: usize,
    /// Overlapping holds allowed because the earlier holder's hold did not end by a
    /// successful release and the later token is larger.
    pub expired_holds: usize,
    /// What went wrong, one line each.
    pub violations: Vec<String>,
}

impl LockReport {
    /// True when no rule was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for LockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "locks: {} ops, {} acquisitions, {} fenced writes, {} expired holds, {} violations",
            self.ops_checked,
            self.acquisitions,
            self.fenced_writes,
            self.expired_holds,
            self.violations.len()
        )?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// The return time of a completed event (its call time if none was recorded, which
/// only happens for hand-built events).
fn ret_of(e: &Event) -> Instant {
    e.ret.unwrap_or(e.call)
}

/// Per-item facts of one queue.
#[derive(Default)]
struct ItemFacts<'a> {
    /// Puts that did not fail.
    puts: Vec<&'a Event>,
    /// Puts that succeeded.
    ok_puts: usize,
    /// Successful gets that returned it.
    gets: Vec<&'a Event>,
    /// Return times of successful acks.
    acks: Vec<Instant>,
}

/// Checks the queue rules (see the module docs) over every queue of `history`.
pub fn check_queues(history: &History) -> QueueReport {
    let events = history.events();
    let mut report = QueueReport::default();
    let mut queues: BTreeMap<&str, BTreeMap<&str, ItemFacts>> = BTreeMap::new();
    for e in &events {
        match (&e.op, &e.outcome) {
            (Op::QueuePut { .. } | Op::QueueGet { .. } | Op::Ack { .. }, _) => report.ops_checked += 1,
            _ => continue,
        }
        match (&e.op, &e.outcome) {
            (_, Outcome::Failed) => {}
            (Op::QueuePut { queue, item }, outcome) => {
                let facts = queues.entry(queue).or_default().entry(item).or_default();
                facts.puts.push(e);
                facts.ok_puts += matches!(outcome, Outcome::Ok(_)) as usize;
            }
            (Op::QueueGet { queue }, Outcome::Ok(Output::Item(Some(item)))) => {
                queues.entry(queue).or_default().entry(item).or_default().gets.push(e);
                report.deliveries += 1;
            }
            (Op::QueueGet { queue }, Outcome::Ok(other)) if !matches!(other, Output::Item(None)) => {
                report.violations.push(format!("queue {queue:?}: get #{} returned {other:?}", e.index));
            }
            (Op::Ack { queue, item }, Outcome::Ok(_)) => {
                queues.entry(queue).or_default().entry(item).or_default().acks.push(ret_of(e));
            }
            _ => {}
        }
    }

    for (queue, items) in &mut queues {
        for (item, facts) in items.iter_mut() {
            if !facts.puts.is_empty() {
                report.items_put += 1;
            }
            if facts.ok_puts > 0 && facts.gets.is_empty() {
                report.violations.push(format!("queue {queue:?}: item {item:?} was put (ok) but never delivered"));
            }
            if facts.gets.is_empty() {
                continue;
            }
            if facts.puts.is_empty() {
                let gets: Vec<_> = facts.gets.iter().map(|g| g.index).collect();
                report.violations.push(format!(
                    "queue {queue:?}: item {item:?} delivered by gets {gets:?} but never put (or its put failed)"
                ));
                continue;
            }
            let first_put = facts.puts.iter().map(|p| p.call).min().expect("a put");
            let copies = facts.puts.len();
            facts.gets.sort_by_key(|g| (g.call, g.index));
            for (k, get) in facts.gets.iter().enumerate() {
                if ret_of(get) < first_put {
                    report.violations.push(format!(
                        "queue {queue:?}: item {item:?} delivered by get #{} before any put of it was called",
                        get.index
                    ));
                }
                // Acks that had certainly taken effect before this get was sent.
                let acked = facts.acks.iter().filter(|&&a| a < get.call).count();
                if acked >= copies {
                    report.violations.push(format!(
                        "queue {queue:?}: item {item:?} delivered again by get #{} (client {}) after all {copies} \
                         cop{} had been acknowledged",
                        get.index,
                        get.client,
                        if copies == 1 { "y" } else { "ies" }
                    ));
                } else if k >= copies {
                    report.redeliveries += 1;
                }
            }
        }
    }
    report
}

/// One successful acquire and how its hold ended.
struct Hold<'a> {
    acquire: &'a Event,
    token: u64,
    /// The call of the first non-failed release of this token, if any.
    end: Option<Instant>,
    /// True if some release of this token succeeded.
    released_ok: bool,
}

/// Checks the lock and fencing rules (see the module docs) over `history`.
pub fn check_locks(history: &History) -> LockReport {
    let events = history.events();
    let mut report = LockReport::default();
    let mut acquires: BTreeMap<&str, Vec<(&Event, u64)>> = BTreeMap::new();
    // (lock, token) → (earliest non-failed release call, any release ok).
    let mut releases: HashMap<(&str, u64), (Option<Instant>, bool)> = HashMap::new();
    let mut writes: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        match (&e.op, &e.outcome) {
            (Op::Acquire { lock }, outcome) => {
                report.ops_checked += 1;
                match outcome {
                    Outcome::Ok(Output::Token(t)) => acquires.entry(lock).or_default().push((e, *t)),
                    Outcome::Ok(other) => {
                        report.violations.push(format!("lock {lock:?}: acquire #{} returned {other:?}", e.index))
                    }
                    _ => {}
                }
            }
            (Op::Release { lock, token }, outcome) => {
                report.ops_checked += 1;
                if *outcome != Outcome::Failed {
                    let r = releases.entry((lock, *token)).or_default();
                    r.0 = Some(r.0.map_or(e.call, |c| c.min(e.call)));
                    r.1 |= matches!(outcome, Outcome::Ok(_));
                }
            }
            (Op::FencedWrite { resource, .. }, outcome) => {
                report.ops_checked += 1;
                if let Outcome::Ok(_) = outcome {
                    writes.entry(resource).or_default().push(e);
                }
            }
            _ => {}
        }
    }

    for (lock, acqs) in &acquires {
        report.acquisitions += acqs.len();
        let mut by_token: HashMap<u64, usize> = HashMap::new();
        for (e, t) in acqs {
            if let Some(first) = by_token.insert(*t, e.index) {
                report
                    .violations
                    .push(format!("lock {lock:?}: token {t} handed out twice (acquires #{first} and #{})", e.index));
            }
        }
        // Tokens increase in real-time order: sweep acquires by call time, keeping the
        // largest token among those already returned.
        check_increasing(
            acqs.iter().map(|(e, t)| (e.call, ret_of(e), *t, e.index)).collect(),
            |earlier, later| {
                format!(
                    "lock {lock:?}: acquire #{} got token {} though acquire #{} had already returned token {}",
                    later.3, later.2, earlier.3, earlier.2
                )
            },
            &mut report.violations,
        );

        let mut holds: Vec<Hold> = acqs
            .iter()
            .map(|&(acquire, token)| {
                let (end, released_ok) = releases.get(&(*lock, token)).copied().unwrap_or((None, false));
                Hold { acquire, token, end, released_ok }
            })
            .collect();
        holds.sort_by_key(|h| (ret_of(h.acquire), h.acquire.index));
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                // `b` began after `a` (by acquire return); they overlap if `b` began
                // before `a` ended.
                if a.end.is_some_and(|end| ret_of(b.acquire) >= end) {
                    continue;
                }
                if !a.released_ok && b.token > a.token {
                    report.expired_holds += 1;
                    continue;
                }
                let how = if a.released_ok { "released later" } else { "never released" };
                report.violations.push(format!(
                    "lock {lock:?}: hold of token {} (acquire #{}, client {}) overlaps hold of token {} (acquire #{}, \
                     client {}, {how})",
                    b.token, b.acquire.index, b.acquire.client, a.token, a.acquire.index, a.acquire.client
                ));
            }
        }
    }

    for (resource, ws) in &writes {
        report.fenced_writes += ws.len();
        // Only accepted writes raise the bar; every known write is checked against it.
        let accepted: Vec<_> = ws
            .iter()
            .filter(|e| e.outcome == Outcome::Ok(Output::Accepted(true)))
            .map(|e| (e.call, ret_of(e), token_of(e), e.index))
            .collect();
        check_increasing(
            accepted,
            |earlier, later| {
                format!(
                    "resource {resource:?}: write #{} with token {} accepted after write #{} with token {} had been \
                     accepted",
                    later.3, later.2, earlier.3, earlier.2
                )
            },
            &mut report.violations,
        );
    }
    report
}

fn token_of(e: &Event) -> u64 {
    match e.op {
        Op::FencedWrite { token, .. } | Op::Release { token, .. } => token,
        _ => 0,
    }
}

/// For (call, return, token, index) intervals: reports every one whose token is
/// smaller than the token of one that returned before it was called. Equal tokens pass:
/// fenced writes may repeat a token (one holder writing twice), and duplicate acquires
/// are reported separately.
fn check_increasing(
    mut items: Vec<(Instant, Instant, u64, usize)>,
    describe: impl Fn(&(Instant, Instant, u64, usize), &(Instant, Instant, u64, usize)) -> String,
    violations: &mut Vec<String>,
) {
    let mut by_ret = items.clone();
    by_ret.sort_by_key(|i| (i.1, i.3));
    items.sort_by_key(|i| (i.0, i.3));
    // The returned-so-far item with the largest token.
    let mut best: Option<(Instant, Instant, u64, usize)> = None;
    let mut next = 0;
    for item in &items {
        while next < by_ret.len() && by_ret[next].1 < item.0 {
            if best.is_none_or(|b| by_ret[next].2 > b.2) {
                best = Some(by_ret[next]);
            }
            next += 1;
        }
        if let Some(b) = best {
            if item.2 < b.2 {
                violations.push(describe(&b, item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Builder;

    fn qput(item: &str) -> Op {
        Op::QueuePut { queue: "q".into(), item: item.into() }
    }
    fn qget() -> Op {
        Op::QueueGet { queue: "q".into() }
    }
    fn ack(item: &str) -> Op {
        Op::Ack { queue: "q".into(), item: item.into() }
    }
    fn got(item: &str) -> Output {
        Output::Item(Some(item.into()))
    }
    fn acquire() -> Op {
        Op::Acquire { lock: "l".into() }
    }
    fn release(token: u64) -> Op {
        Op::Release { lock: "l".into(), token }
    }
    fn write(token: u64) -> Op {
        Op::FencedWrite { resource: "r".into(), token }
    }

    // ---- queues ----

    #[test]
    fn queue_all_delivered_and_acked_is_ok() {
        let b = Builder::new();
        b.ok(1, qput("a"), 0, 10, Output::Done)
            .ok(1, qput("b"), 10, 20, Output::Done)
            .ok(2, qget(), 30, 40, got("a"))
            .ok(2, ack("a"), 40, 50, Output::Done)
            .ok(3, qget(), 30, 45, got("b"))
            .ok(3, ack("b"), 50, 60, Output::Done)
            .ok(2, qget(), 70, 80, Output::Item(None));
        let r = check_queues(&b.history);
        assert!(r.is_ok(), "{r}");
        assert_eq!((r.ops_checked, r.items_put, r.deliveries, r.redeliveries), (7, 2, 2, 0));
    }

    #[test]
    fn queue_lost_item_is_a_violation() {
        let b = Builder::new();
        b.ok(1, qput("a"), 0, 10, Output::Done).ok(1, qput("b"), 10, 20, Output::Done).ok(2, qget(), 30, 40, got("a"));
        let r = check_queues(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("\"b\" was put (ok) but never delivered"), "{r}");
    }

    #[test]
    fn queue_unknown_put_never_delivered_is_ok() {
        let b = Builder::new();
        b.op(1, qput("a"), 0, 10, Outcome::Unknown).op(1, qput("b"), 0, 10, Outcome::Failed);
        assert!(check_queues(&b.history).is_ok());
    }

    #[test]
    fn queue_redelivery_of_unacked_item_is_allowed_and_counted() {
        let b = Builder::new();
        b.ok(1, qput("a"), 0, 10, Output::Done)
            .ok(2, qget(), 20, 30, got("a"))
            // Consumer 2 dies without acking; the lease expires and 3 gets it.
            .ok(3, qget(), 100, 110, got("a"))
            .ok(3, ack("a"), 120, 130, Output::Done);
        let r = check_queues(&b.history);
        assert!(r.is_ok(), "{r}");
        assert_eq!((r.deliveries, r.redeliveries), (2, 1));
    }

    #[test]
    fn queue_delivery_after_ack_is_a_violation() {
        let b = Builder::new();
        b.ok(1, qput("a"), 0, 10, Output::Done)
            .ok(2, qget(), 20, 30, got("a"))
            .ok(2, ack("a"), 30, 40, Output::Done)
            .ok(3, qget(), 50, 60, got("a"));
        let r = check_queues(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("delivered again by get #3 (client 3)"), "{r}");
        // An ack concurrent with the second get does not prove anything.
        let b = Builder::new();
        b.ok(1, qput("a"), 0, 10, Output::Done)
            .ok(2, qget(), 20, 30, got("a"))
            .ok(2, ack("a"), 30, 55, Output::Done)
            .ok(3, qget(), 50, 60, got("a"));
        assert!(check_queues(&b.history).is_ok());
    }

    #[test]
    fn queue_retried_put_may_deliver_twice() {
        let b = Builder::new();
        b.op(1, qput("a"), 0, 10, Outcome::Unknown)
            .ok(1, qput("a"), 20, 30, Output::Done)
            .ok(2, qget(), 40, 50, got("a"))
            .ok(2, ack("a"), 50, 60, Output::Done)
            .ok(3, qget(), 70, 80, got("a"))
            .ok(3, ack("a"), 80, 90, Output::Done);
        let r = check_queues(&b.history);
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.redeliveries, 0);
    }

    #[test]
    fn queue_phantom_item_is_a_violation() {
        let b = Builder::new();
        b.op(1, qput("a"), 0, 10, Outcome::Unknown).ok(2, qget(), 20, 30, got("a"));
        assert!(check_queues(&b.history).is_ok(), "an unknown put may have happened");

        let b = Builder::new();
        b.op(1, qput("a"), 0, 10, Outcome::Failed).ok(2, qget(), 20, 30, got("a")).ok(2, qget(), 20, 30, got("z"));
        let r = check_queues(&b.history);
        assert_eq!(r.violations.len(), 2, "{r}");
        assert!(r.violations.iter().all(|v| v.contains("never put")), "{r}");

        let b = Builder::new();
        b.ok(2, qget(), 0, 5, got("a")).ok(1, qput("a"), 10, 20, Output::Done);
        let r = check_queues(&b.history);
        assert!(r.violations[0].contains("before any put"), "{r}");
    }

    // ---- locks ----

    #[test]
    fn locks_sequential_holds_with_increasing_tokens_are_ok() {
        let b = Builder::new();
        b.ok(1, acquire(), 0, 10, Output::Token(1))
            .ok(1, write(1), 10, 20, Output::Accepted(true))
            .ok(1, write(1), 20, 30, Output::Accepted(true))
            .ok(1, release(1), 30, 40, Output::Done)
            .ok(2, acquire(), 5, 45, Output::Token(2))
            .ok(2, write(2), 50, 60, Output::Accepted(true))
            .ok(2, release(2), 60, 70, Output::Done);
        let r = check_locks(&b.history);
        assert!(r.is_ok(), "{r}");
        assert_eq!((r.ops_checked, r.acquisitions, r.fenced_writes, r.expired_holds), (7, 2, 3, 0));
    }

    #[test]
    fn locks_stale_fenced_write_accepted_is_a_violation() {
        let refused = Builder::new();
        refused.ok(2, write(2), 50, 60, Output::Accepted(true)).ok(1, write(1), 70, 80, Output::Accepted(false)).op(
            1,
            write(1),
            70,
            80,
            Outcome::Unknown,
        );
        assert!(check_locks(&refused.history).is_ok());

        let b = Builder::new();
        b.ok(2, write(2), 50, 60, Output::Accepted(true)).ok(1, write(1), 70, 80, Output::Accepted(true));
        let r = check_locks(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("write #1 with token 1 accepted after write #0 with token 2"), "{r}");
        // Concurrent writes may land in either order.
        let b = Builder::new();
        b.ok(2, write(2), 50, 75, Output::Accepted(true)).ok(1, write(1), 70, 80, Output::Accepted(true));
        assert!(check_locks(&b.history).is_ok());
    }

    #[test]
    fn locks_token_handed_out_twice_is_a_violation() {
        let b = Builder::new();
        b.ok(1, acquire(), 0, 10, Output::Token(7)).ok(1, release(7), 10, 20, Output::Done).ok(
            2,
            acquire(),
            30,
            40,
            Output::Token(7),
        );
        let r = check_locks(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("token 7 handed out twice"), "{r}");
    }

    #[test]
    fn locks_decreasing_tokens_in_real_time_order_is_a_violation() {
        let b = Builder::new();
        b.ok(1, acquire(), 0, 10, Output::Token(5)).ok(1, release(5), 10, 20, Output::Done).ok(
            2,
            acquire(),
            30,
            40,
            Output::Token(3),
        );
        let r = check_locks(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("acquire #2 got token 3 though acquire #0 had already returned token 5"));
    }

    #[test]
    fn locks_overlapping_holds_after_clean_release_is_a_violation() {
        let b = Builder::new();
        b.ok(1, acquire(), 0, 10, Output::Token(1)).ok(2, acquire(), 5, 20, Output::Token(2)).ok(
            1,
            release(1),
            30,
            40,
            Output::Done,
        );
        let r = check_locks(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("overlaps hold of token 1"), "{r}");
        assert_eq!(r.expired_holds, 0);
    }

    #[test]
    fn locks_overlap_after_lost_holder_is_allowed_only_with_larger_token() {
        // Holder 1 is cut off: its release is unknown (or never sent); the server
        // expires the lease and hands out a larger token.
        for release_outcome in [Some(Outcome::Unknown), Some(Outcome::Failed), None] {
            let b = Builder::new();
            b.ok(1, acquire(), 0, 10, Output::Token(1)).ok(2, acquire(), 5, 20, Output::Token(2));
            if let Some(o) = release_outcome.clone() {
                b.op(1, release(1), 30, 40, o);
            }
            let r = check_locks(&b.history);
            assert!(r.is_ok(), "{release_outcome:?}: {r}");
            assert_eq!(r.expired_holds, 1);
        }
        // …but not with a smaller one (the acquires are concurrent, so only the
        // exclusion rule can catch this).
        let b = Builder::new();
        b.ok(1, acquire(), 0, 10, Output::Token(2)).ok(2, acquire(), 5, 20, Output::Token(1)).op(
            1,
            release(2),
            30,
            40,
            Outcome::Unknown,
        );
        let r = check_locks(&b.history);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains("never released"), "{r}");
    }

    #[test]
    fn locks_unknown_acquire_is_not_checked() {
        let b = Builder::new();
        b.op(1, acquire(), 0, 10, Outcome::Unknown).ok(2, acquire(), 5, 20, Output::Token(2)).ok(
            2,
            release(2),
            30,
            40,
            Output::Done,
        );
        let r = check_locks(&b.history);
        assert!(r.is_ok(), "{r}");
        assert_eq!((r.ops_checked, r.acquisitions), (3, 1));
    }
}
