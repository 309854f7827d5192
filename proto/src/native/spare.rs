//! Argument buffers kept for reuse on each thread: the `Vec` a decoded call's
//! positional arguments arrive in comes from here, and the server gives it back once
//! it has bound and run the call ([`give_back`]), so a call allocates nothing for its
//! arguments. A `malloc` and `free` per call were ~150 of the ~3,200 instructions the
//! server spends on a pipelined dict get (BENCHMARKS.md, round 22).
//!
//! Each thread keeps one buffer: decoding and running a native call happen on one
//! worker thread, one call after another, so the buffer a call gives back is the next
//! call's. A thread keeps the buffer given back last (the one it held before is
//! freed: a call that parked and was answered later, say), and never a large one.
//! (A list of kept buffers, or a `Cell<Option<Vec>>`, took more instructions than
//! this `Cell<Vec>`: BENCHMARKS.md, round 22.)
//!
//! It only holds empty buffers: what a buffer held is dropped before it is kept, and
//! nothing here knows who decodes into them or binds them.

use std::cell::Cell;

use crate::Value;

/// A buffer larger than this (a call with many arguments) is freed, not kept.
const KEPT_CAPACITY: usize = 16;

thread_local! {
    /// Empty, without an allocation, when the thread keeps none.
    static SPARE: Cell<Vec<Value>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer with room for at least `n` values: the kept one if this thread has it.
pub fn buffer(n: usize) -> Vec<Value> {
    let mut buffer = SPARE.try_with(Cell::take).unwrap_or_default();
    buffer.reserve(n);
    buffer
}

/// Empties `buffer` (dropping what it holds) and keeps it for this thread's next
/// [`buffer`], unless it is large.
pub fn give_back(mut buffer: Vec<Value>) {
    if buffer.capacity() > KEPT_CAPACITY {
        return;
    }
    buffer.clear();
    // A thread being torn down keeps nothing: the buffer is just freed.
    let _ = SPARE.try_with(|spare| drop(spare.replace(buffer)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        let mut first = buffer(3);
        first.push(Value::Int(1));
        let address = first.as_ptr() as usize;
        give_back(first);
        let second = buffer(2);
        assert!(second.is_empty(), "given back empty");
        assert_eq!(second.as_ptr() as usize, address, "the same allocation");
    }

    #[test]
    fn large_buffers_are_not_kept() {
        give_back(Vec::with_capacity(KEPT_CAPACITY + 1));
        assert_eq!(SPARE.with(Cell::take).capacity(), 0);
    }

    #[test]
    fn a_thread_keeps_the_last_one_given_back() {
        let (first, second) = (buffer(1), buffer(1));
        let kept = second.as_ptr() as usize;
        give_back(first);
        give_back(second);
        let taken = buffer(1);
        assert_eq!(taken.as_ptr() as usize, kept);
        assert_eq!(SPARE.with(Cell::take).capacity(), 0, "one buffer kept, not two");
    }
}
