//! Where a CPython connection is served: its thread of its own, or the shared workers.
//!
//! A thread of its own answers a client whose calls come one after another for the
//! least: the thread wakes next to its client and often polls instead of sleeping. A
//! call that waits (an acquire of a lock someone holds, a `get` from an empty queue)
//! gains nothing from it: the thread sleeps until the call is answered, and each
//! answer then wakes it and its client on idle CPUs. On the shared workers such a call
//! is a parked task, and the worker that answers it goes on to other connections: a
//! contended lock cost 0.72–0.89× the server CPU per operation there, at 0.94–1.37×
//! the rate (bench/changes.md, round 38). So a connection whose calls wait moves to the
//! shared workers, and comes back to a thread once they stop waiting.
//!
//! Owns: the rule (what a connection's recent calls make of its place). It sees only
//! whether each call waited; moving the connection is [`crate::dedicated`]'s.

/// How many of a connection's last 64 calls (the bits of its record) must have waited
/// before it leaves its thread: one wait (an `Event` set at start-up) moves nothing.
const WAITS_TO_LEAVE: u32 = 2;

/// How many calls in a row must answer without waiting before a connection on the
/// shared workers goes back to a thread: a move costs waking a thread that waits for a
/// connection, or starting one when none waits (about a hundred microseconds), so it
/// is made only for a run of calls worth it.
pub const QUIET_TO_RETURN: u32 = 256;

/// One connection's place, and the record its next move is decided on.
#[derive(Debug, Clone)]
pub struct Placement {
    on_thread: bool,
    /// On its thread: the last 64 calls, newest in the lowest bit, set if the call waited.
    waits: u64,
    /// On the shared workers: calls in a row that answered without waiting.
    quiet: u32,
    /// Where it is, it stays (no thread could be started for it).
    settled: bool,
}

impl Placement {
    /// A connection starting on a thread of its own.
    pub fn on_thread() -> Placement {
        Placement::fresh(true, false)
    }

    /// A place with an empty record.
    fn fresh(on_thread: bool, settled: bool) -> Placement {
        Placement { on_thread, waits: 0, quiet: 0, settled }
    }

    /// True while the connection is (to be) served on a thread of its own.
    pub fn is_on_thread(&self) -> bool {
        self.on_thread
    }

    /// Notes a call answered (`waited`: it was parked before its answer came); true if
    /// the connection should move now, before its next call.
    pub fn after_call(&mut self, waited: bool) -> bool {
        if self.settled {
            return false;
        }
        if self.on_thread {
            self.waits = self.waits << 1 | u64::from(waited);
            self.waits.count_ones() >= WAITS_TO_LEAVE
        } else {
            self.quiet = if waited { 0 } else { self.quiet.saturating_add(1) };
            self.quiet >= QUIET_TO_RETURN
        }
    }

    /// The connection moved to the other side: its record starts again.
    pub fn moved(&mut self) {
        *self = Placement::fresh(!self.on_thread, false);
    }

    /// The connection stays on the shared workers for good (no thread could be started).
    pub fn settle_on_workers(&mut self) {
        *self = Placement::fresh(false, true);
    }

    /// The connection stays on the shared workers for now (every thread's place is
    /// taken): it asks again after another run of quiet calls.
    pub fn stay_on_workers(&mut self) {
        *self = Placement::fresh(false, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOKED_AT: u32 = u64::BITS;

    #[test]
    fn calls_that_never_wait_keep_a_connection_on_its_thread() {
        let mut place = Placement::on_thread();
        for _ in 0..10_000 {
            assert!(!place.after_call(false));
        }
        assert!(place.is_on_thread());
    }

    #[test]
    fn one_wait_moves_nothing_two_close_together_do() {
        let mut place = Placement::on_thread();
        assert!(!place.after_call(true), "one wait");
        for _ in 0..LOOKED_AT {
            assert!(!place.after_call(false));
        }
        assert!(!place.after_call(true), "the first wait is out of the record by now");
        for _ in 0..LOOKED_AT - 2 {
            assert!(!place.after_call(false));
        }
        assert!(place.after_call(true), "two waits within the record");
    }

    #[test]
    fn on_the_workers_a_run_of_quiet_calls_brings_it_back_and_a_wait_restarts_the_run() {
        let mut place = Placement::on_thread();
        place.moved();
        assert!(!place.is_on_thread());
        for _ in 0..QUIET_TO_RETURN - 1 {
            assert!(!place.after_call(false));
        }
        assert!(!place.after_call(true), "a wait: the run starts again");
        for _ in 0..QUIET_TO_RETURN - 1 {
            assert!(!place.after_call(false));
        }
        assert!(place.after_call(false), "a whole run of quiet calls");
        place.moved();
        assert!(place.is_on_thread());
        assert!(!place.after_call(true), "back on a thread, its record starts again");
    }

    #[test]
    fn a_connection_settled_on_the_workers_never_moves_and_one_kept_there_asks_again() {
        let mut place = Placement::on_thread();
        place.settle_on_workers();
        for _ in 0..QUIET_TO_RETURN * 2 {
            assert!(!place.after_call(false));
        }
        place.stay_on_workers();
        assert!(!place.is_on_thread());
        let asked = (0..QUIET_TO_RETURN).filter(|_| place.after_call(false)).count();
        assert_eq!(asked, 1, "it asks once a run is over");
    }
}
