//! Argument buffers kept for reuse on each thread: the `Vec` a decoded call's
//! positional arguments arrive in comes from here, and the server gives it back once
//! it has bound and run the call ([`give_back`]), so a call allocates nothing for its
//! arguments. A `malloc` and `free` per call were ~150 of the ~3,200 instructions the
//! server spends on a pipelined dict get (BENCHMARKS.md, round 22).
//!
//! Each thread keeps up to [`KEPT_BUFFERS`] buffers. Decoding and running native calls
//! happen on one worker thread, one call after another, so the buffer a call gives
//! back is usually the next call's: that one sits in a slot of its own, taken and
//! refilled with no more than a `Cell` swap (a list took more instructions per call:
//! BENCHMARKS.md, round 22). A connection that decodes a read's calls before it runs
//! them (so that their objects can prefetch what they will read) has many buffers
//! out at once; those come back to a list beside the slot, which the next such read's
//! calls take from again: for a pipelined batch on a big dict that is every call, so
//! the list's two functions are inlined, not cold (−24 instructions per pipelined get,
//! BENCHMARKS.md, round 34; one stack for both cases took −69 there but +20 on the
//! calls that never decode ahead). Beyond [`KEPT_BUFFERS`] a buffer given back is
//! freed, and a large one is never kept.
//!
//! It only holds empty buffers: what a buffer held is dropped before it is kept, and
//! nothing here knows who decodes into them or binds them.

use std::cell::{Cell, RefCell};

use crate::Value;

/// A buffer larger than this (a call with many arguments) is freed, not kept.
const KEPT_CAPACITY: usize = 16;

/// The most buffers a thread keeps: as many calls as a connection decodes ahead.
pub const KEPT_BUFFERS: usize = 32;

thread_local! {
    /// The buffer given back last while the slot was free: empty, without an
    /// allocation, when there is none.
    static SLOT: Cell<Vec<Value>> = const { Cell::new(Vec::new()) };
    /// The rest of the kept buffers (up to `KEPT_BUFFERS - 1`), the last given back at
    /// the end.
    static MORE: RefCell<Vec<Vec<Value>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `n` values: a kept one if this thread has one.
#[inline]
pub fn buffer(n: usize) -> Vec<Value> {
    let mut buffer = SLOT.try_with(Cell::take).unwrap_or_default();
    if buffer.capacity() == 0 {
        buffer = from_more();
    }
    buffer.reserve(n);
    buffer
}

/// A buffer from the list, when the slot had none (calls decoded ahead).
#[inline]
fn from_more() -> Vec<Value> {
    MORE.try_with(|more| more.borrow_mut().pop()).ok().flatten().unwrap_or_default()
}

/// Empties `buffer` (dropping what it holds) and keeps it for one of this thread's
/// next [`buffer`]s, unless it is large or the thread keeps [`KEPT_BUFFERS`] already.
pub fn give_back(mut buffer: Vec<Value>) {
    if buffer.capacity() > KEPT_CAPACITY {
        return;
    }
    buffer.clear();
    // A thread being torn down keeps nothing: the buffer is just freed.
    let _ = SLOT.try_with(|slot| {
        let held = slot.replace(buffer);
        if held.capacity() > 0 {
            to_more(held);
        }
    });
}

/// Keeps a buffer in the list, when the slot held one already (calls decoded ahead).
#[inline]
fn to_more(buffer: Vec<Value>) {
    let _ = MORE.try_with(|more| {
        let mut more = more.borrow_mut();
        if more.len() < KEPT_BUFFERS - 1 {
            more.push(buffer);
        }
    });
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

    /// Every buffer this thread keeps.
    fn kept() -> Vec<Vec<Value>> {
        let mut kept = MORE.with(|more| std::mem::take(&mut *more.borrow_mut()));
        kept.push(SLOT.with(Cell::take));
        kept.retain(|b| b.capacity() > 0);
        kept
    }

    #[test]
    fn large_buffers_are_not_kept() {
        give_back(Vec::with_capacity(KEPT_CAPACITY + 1));
        assert!(kept().is_empty());
    }

    #[test]
    fn a_thread_keeps_as_many_as_a_batch_takes_and_no_more() {
        let taken: Vec<Vec<Value>> = (0..KEPT_BUFFERS + 3).map(|_| buffer(1)).collect();
        let last = taken.last().unwrap().as_ptr() as usize;
        let addresses: Vec<usize> = taken.iter().map(|b| b.as_ptr() as usize).collect();
        for b in taken {
            give_back(b);
        }
        let first = buffer(1);
        assert_eq!(first.as_ptr() as usize, last, "the last given back is the first taken");
        drop(first);
        let again: Vec<Vec<Value>> = (0..KEPT_BUFFERS - 1).map(|_| buffer(1)).collect();
        assert!(again.iter().all(|b| addresses.contains(&(b.as_ptr() as usize))), "kept ones are taken again");
        drop(again);
        for _ in 0..KEPT_BUFFERS + 3 {
            give_back(Vec::with_capacity(1));
        }
        assert_eq!(kept().len(), KEPT_BUFFERS);
    }
}
