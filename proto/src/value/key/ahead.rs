//! Hashes of short strs computed ahead of the lookups that need them.
//!
//! Before a pipelined batch runs, a big dict prefetches the entries its lookups will
//! read, which takes each key's hash ([`super::hash_value_ahead`]); the lookup itself
//! comes soon after, in the same order, on the same thread. Each hash computed ahead is
//! queued here with its key's bytes, and a lookup whose key equals the oldest queued
//! one takes that hash instead of computing it again (SipHash: ~190 instructions for a
//! 16-byte key; the comparison a few dozen). A lookup that finds another key empties
//! the queue: the calls did not run as they were queued (one failed before its lookup).
//!
//! Only strs of up to [`KEPT_LEN`] bytes are queued (the commonest keys, and those a
//! `CompactString` holds inline). A hash is a function of the key's bytes alone, so a
//! queued hash is right for any key equal to its bytes, whoever queued it: a stale one
//! costs a comparison, never a wrong answer.

use std::cell::RefCell;

/// The longest str queued (its length is kept in a byte).
const KEPT_LEN: usize = 24;
const _: () = assert!(KEPT_LEN <= u8::MAX as usize);

/// The most hashes queued: as many as a batch's calls looked at together.
const QUEUED: usize = 32;

/// One queued hash: its key's bytes (zero-padded) and length.
#[derive(Clone, Copy)]
struct Queued {
    bytes: [u8; KEPT_LEN],
    len: u8,
    hash: u64,
}

/// A ring of queued hashes, the oldest at `head`.
struct Queue {
    ring: [Queued; QUEUED],
    head: usize,
    len: usize,
}

thread_local! {
    static QUEUE: RefCell<Queue> = const {
        RefCell::new(Queue { ring: [Queued { bytes: [0; KEPT_LEN], len: 0, hash: 0 }; QUEUED], head: 0, len: 0 })
    };
}

/// Queues the hash of a str whose bytes are `key` (if it is short, and the queue has
/// room).
pub(super) fn remember(key: &[u8], hash: u64) {
    if key.len() > KEPT_LEN {
        return;
    }
    let _ = QUEUE.try_with(|queue| {
        let mut q = queue.borrow_mut();
        if q.len < QUEUED {
            let at = (q.head + q.len) % QUEUED;
            let mut bytes = [0; KEPT_LEN];
            bytes[..key.len()].copy_from_slice(key);
            q.ring[at] = Queued { bytes, len: key.len() as u8, hash };
            q.len += 1;
        }
    });
}

/// The queued hash of the str whose bytes are `key`, if it is the oldest queued (which
/// it then leaves the queue); any other key empties the queue.
#[inline]
pub(super) fn recall(key: &[u8]) -> Option<u64> {
    QUEUE
        .try_with(|queue| {
            let mut q = queue.borrow_mut();
            if q.len == 0 {
                return None;
            }
            let oldest = q.ring[q.head];
            if usize::from(oldest.len) == key.len() && oldest.bytes[..key.len()] == *key {
                q.head = (q.head + 1) % QUEUED;
                q.len -= 1;
                Some(oldest.hash)
            } else {
                q.len = 0;
                None
            }
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_recalled_in_the_order_they_were_queued() {
        remember(b"a", 1);
        remember(b"bb", 2);
        assert_eq!(recall(b"a"), Some(1));
        assert_eq!(recall(b"bb"), Some(2));
        assert_eq!(recall(b"bb"), None, "each is recalled once");
    }

    #[test]
    fn another_key_empties_the_queue() {
        remember(b"a", 1);
        remember(b"b", 2);
        assert_eq!(recall(b"b"), None, "not the oldest");
        assert_eq!(recall(b"a"), None, "the queue was emptied");
        assert_eq!(recall(b"b"), None);
    }

    #[test]
    fn long_keys_are_not_queued_and_a_full_queue_takes_no_more() {
        remember(&[7; KEPT_LEN + 1], 9);
        assert_eq!(recall(&[7; KEPT_LEN + 1]), None);
        for i in 0..QUEUED + 5 {
            remember(&[i as u8], i as u64);
        }
        for i in 0..QUEUED {
            assert_eq!(recall(&[i as u8]), Some(i as u64));
        }
        assert_eq!(recall(&[QUEUED as u8]), None, "queued beyond room: dropped");
    }

    #[test]
    fn a_key_that_shares_a_prefix_is_another_key() {
        remember(b"ab", 1);
        assert_eq!(recall(b"a"), None);
        remember(b"a", 1);
        assert_eq!(recall(b"a\0"), None, "padding is not part of the key");
    }
}
