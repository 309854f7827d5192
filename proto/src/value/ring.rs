//! [`Ring`]: the double-ended run of positions under a dict's or set's table, kept in
//! blocks of a fixed size once it is long, so that it grows and drops its front without
//! moving an entry.
//!
//! A `VecDeque` that fills moves into a buffer twice its size, and when its entries wrap
//! around its end (a dict whose oldest entries were dropped, that then grew) the shorter
//! of its two runs is copied: up to half the entries in one go, 55 ms at 4 million dict
//! entries and 130–160 ms at 8 million, while every change to the dict waits. A ring
//! longer than a block grows by one block and frees its first block once its front has
//! passed it; a position costs one more load to find (its block's address, from a
//! table of a few hundred or thousand). A ring of a block or less is a `VecDeque` as
//! before (its growth copies at most half a block), so that a small dict (every nested
//! dict a value holds is one) takes no more memory or allocations than it did.
//!
//! This module owns where positions live, not what they hold: holes, ordering and the
//! numbering of positions are the table's business (`dict`).
use std::collections::{vec_deque, VecDeque};
use std::ops::{Bound, Index, IndexMut, RangeBounds};

/// log₂ of the positions in a block: 8,192 (512 KiB of dict entries). Unit tests use
/// blocks of 8, so that every table they build spans many blocks.
const BLOCK_SHIFT: u32 = if cfg!(test) { 3 } else { 13 };
const BLOCK: usize = 1 << BLOCK_SHIFT;

/// A double-ended queue of positions, indexed from its front: a `VecDeque` while it
/// holds a block's positions or fewer, then [`Blocks`].
pub(super) enum Ring<T> {
    /// At most [`BLOCK`] positions.
    Small(VecDeque<T>),
    /// More than a block's positions (or fewer, popped or truncated, while they still
    /// span two blocks).
    Blocks(Blocks<T>),
}

/// A ring of two blocks or more, of [`BLOCK`] positions each: every block but the last is
/// full (the first block's first `head` positions are gone: popped), and every block but
/// the first was made with room for a whole block, so its entries never move.
pub(super) struct Blocks<T> {
    /// The blocks, front first.
    blocks: Vec<Vec<T>>,
    /// Positions popped from the front of the first block.
    head: usize,
    /// Positions in the ring.
    len: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring::Small(VecDeque::new())
    }
}

impl<T: Default> Ring<T> {
    /// An empty ring with room for `n` positions (at most a block's).
    pub(super) fn with_capacity(n: usize) -> Self {
        Ring::Small(VecDeque::with_capacity(n.min(BLOCK)))
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Ring::Small(deque) => deque.len(),
            Ring::Blocks(b) => b.len,
        }
    }

    /// Position `i` counted from the front.
    #[inline]
    pub(super) fn get(&self, i: usize) -> Option<&T> {
        match self {
            Ring::Small(deque) => deque.get(i),
            Ring::Blocks(b) => {
                // (The blocks' bounds are the ring's: the last block ends where the ring
                // does, and the position cannot fall before `head`.)
                let p = b.head.checked_add(i)?;
                b.blocks.get(p >> BLOCK_SHIFT)?.get(p & (BLOCK - 1))
            }
        }
    }

    #[inline]
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match self {
            Ring::Small(deque) => deque.get_mut(i),
            Ring::Blocks(b) => {
                let p = b.head.checked_add(i)?;
                b.blocks.get_mut(p >> BLOCK_SHIFT)?.get_mut(p & (BLOCK - 1))
            }
        }
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    /// Appends a position: a ring a block long becomes [`Blocks`] (its deque, made
    /// contiguous, the first block: at most a block's positions move, once).
    pub(super) fn push_back(&mut self, item: T) {
        match self {
            Ring::Small(deque) if deque.len() < BLOCK => deque.push_back(item),
            Ring::Small(deque) => {
                let first = Vec::from(std::mem::take(deque));
                let len = first.len() + 1;
                let mut second = Vec::with_capacity(BLOCK);
                second.push(item);
                *self = Ring::Blocks(Blocks { blocks: vec![first, second], head: 0, len });
            }
            Ring::Blocks(b) => {
                match b.blocks.last_mut() {
                    Some(last) if last.len() < BLOCK => last.push(item),
                    _ => {
                        let mut block = Vec::with_capacity(BLOCK);
                        block.push(item);
                        b.blocks.push(block);
                    }
                }
                b.len += 1;
            }
        }
    }

    /// Takes the first position out. A first block every position of which is gone is
    /// freed; a ring down to one block becomes a deque again (no position moves).
    pub(super) fn pop_front(&mut self) -> Option<T> {
        let b = match self {
            Ring::Small(deque) => return deque.pop_front(),
            Ring::Blocks(b) => b,
        };
        let item = std::mem::take(&mut b.blocks[0][b.head]);
        b.head += 1;
        b.len -= 1;
        if b.head == BLOCK {
            b.blocks.remove(0);
            b.head = 0;
            self.become_small_if_one_block();
        }
        Some(item)
    }

    /// Keeps the first `n` positions and drops the rest (and the blocks they filled).
    pub(super) fn truncate(&mut self, n: usize) {
        let b = match self {
            Ring::Small(deque) => return deque.truncate(n),
            Ring::Blocks(b) => b,
        };
        if n >= b.len {
            return;
        }
        let stop = b.head + n;
        let blocks = stop.div_ceil(BLOCK);
        b.blocks.truncate(blocks);
        if let Some(last) = b.blocks.last_mut() {
            last.truncate(stop - (blocks - 1) * BLOCK);
        }
        b.len = n;
        self.become_small_if_one_block();
    }

    /// A ring of [`Blocks`] down to one block (or none) becomes a deque of its positions.
    fn become_small_if_one_block(&mut self) {
        if let Ring::Blocks(b) = self {
            if b.blocks.len() <= 1 {
                let mut deque = VecDeque::from(b.blocks.pop().unwrap_or_default());
                // Its popped positions (no more than a block's, each a default) go.
                deque.drain(..b.head);
                *self = Ring::Small(deque);
            }
        }
    }

    /// Drops every position (a deque keeps its room, blocks are freed).
    pub(super) fn clear(&mut self) {
        match self {
            Ring::Small(deque) => deque.clear(),
            Ring::Blocks(_) => *self = Ring::default(),
        }
    }

    /// The positions `range`, in order.
    pub(super) fn range(&self, range: impl RangeBounds<usize>) -> Iter<'_, T> {
        let (from, to) = bounds(range, self.len());
        match self {
            Ring::Small(deque) => {
                let (first, second) = deque.as_slices();
                let (run, second) = if from < first.len() {
                    (&first[from..to.min(first.len())], second)
                } else {
                    (&second[from - first.len()..to - first.len()], &[][..])
                };
                Iter { after: to - from - run.len(), current: run.iter(), second, blocks: [].iter() }
            }
            Ring::Blocks(b) => {
                let (at, block) = b.locate(from);
                let blocks = b.blocks.get(block..).unwrap_or_default();
                let (first, blocks) = blocks.split_first().map_or((&[][..], blocks), |(f, rest)| (&f[..], rest));
                let run = &first[at.min(first.len())..first.len().min(at + to - from)];
                Iter { after: to - from - run.len(), current: run.iter(), second: &[], blocks: blocks.iter() }
            }
        }
    }

    /// The positions `range`, mutably, in order.
    pub(super) fn range_mut(&mut self, range: impl RangeBounds<usize>) -> IterMut<'_, T> {
        let (from, to) = bounds(range, self.len());
        match self {
            Ring::Small(deque) => {
                let (first, second) = deque.as_mut_slices();
                let (run, second) = if from < first.len() {
                    let end = to.min(first.len());
                    (&mut first[from..end], second)
                } else {
                    (&mut second[from - first.len()..to - first.len()], &mut [][..])
                };
                IterMut { after: to - from - run.len(), current: run.iter_mut(), second, blocks: [].iter_mut() }
            }
            Ring::Blocks(b) => {
                let (at, block) = b.locate(from);
                let blocks = b.blocks.get_mut(block..).unwrap_or_default();
                let (first, blocks) = match blocks.split_first_mut() {
                    Some((f, rest)) => (&mut f[..], rest),
                    None => (&mut [][..], &mut [][..]),
                };
                let end = first.len().min(at + to - from);
                let run = &mut first[at.min(end)..end];
                IterMut {
                    after: to - from - run.len(),
                    current: run.iter_mut(),
                    second: &mut [],
                    blocks: blocks.iter_mut(),
                }
            }
        }
    }
}

impl<T> Blocks<T> {
    /// Where position `i` (counted from the front) is: its index in its block, and the
    /// block's.
    fn locate(&self, i: usize) -> (usize, usize) {
        let p = self.head + i;
        (p & (BLOCK - 1), p >> BLOCK_SHIFT)
    }
}

/// The positions of a range of a [`Ring`], in order: the run being read, then a deque's
/// second run or the next blocks, as far as the range goes. (Small, and one type for
/// both kinds of ring: recursive code over values holds one in its stack frame.)
pub(super) struct Iter<'a, T> {
    current: std::slice::Iter<'a, T>,
    second: &'a [T],
    blocks: std::slice::Iter<'a, Vec<T>>,
    /// Positions of the range after `current`.
    after: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if self.after == 0 {
                return None;
            }
            let run: &'a [T] = match std::mem::take(&mut self.second) {
                [] => self.blocks.next()?,
                second => second,
            };
            let run = &run[..run.len().min(self.after)];
            self.after -= run.len();
            self.current = run.iter();
        }
    }
}

/// [`Iter`], mutably.
pub(super) struct IterMut<'a, T> {
    current: std::slice::IterMut<'a, T>,
    second: &'a mut [T],
    blocks: std::slice::IterMut<'a, Vec<T>>,
    /// Positions of the range after `current`.
    after: usize,
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;

    #[inline]
    fn next(&mut self) -> Option<&'a mut T> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if self.after == 0 {
                return None;
            }
            let run: &'a mut [T] = match std::mem::take(&mut self.second) {
                [] => self.blocks.next()?,
                second => second,
            };
            let len = run.len().min(self.after);
            self.after -= len;
            self.current = run[..len].iter_mut();
        }
    }
}

/// Where `range` (of a ring of `len` positions) begins and ends. Panics if it reaches
/// past the ring's end.
fn bounds(range: impl RangeBounds<usize>, len: usize) -> (usize, usize) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i + 1,
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i + 1,
        Bound::Excluded(&i) => i,
        Bound::Unbounded => len,
    };
    assert!(from <= to && to <= len, "range {from}..{to} of a ring of {len}");
    (from, to)
}

impl<T: Default> Index<usize> for Ring<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        self.get(i).unwrap_or_else(|| panic!("position {i} of a ring of {}", self.len()))
    }
}

impl<T: Default> IndexMut<usize> for Ring<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len();
        self.get_mut(i).unwrap_or_else(|| panic!("position {i} of a ring of {len}"))
    }
}

impl<T: Default> FromIterator<T> for Ring<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut ring = Ring::default();
        for item in items {
            ring.push_back(item);
        }
        ring
    }
}

/// A ring's positions, front first, by value.
pub(super) type IntoIter<T> = std::iter::Chain<
    std::iter::Flatten<std::option::IntoIter<vec_deque::IntoIter<T>>>,
    std::iter::Flatten<std::option::IntoIter<std::iter::Skip<std::iter::Flatten<std::vec::IntoIter<Vec<T>>>>>>,
>;

impl<T> IntoIterator for Ring<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        let (small, blocks) = match self {
            Ring::Small(deque) => (Some(deque.into_iter()), None),
            Ring::Blocks(b) => (None, Some(b.blocks.into_iter().flatten().skip(b.head))),
        };
        small.into_iter().flatten().chain(blocks.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// Checks every way of reading `ring` against `model`, and the ring's layout rules.
    fn check(ring: &Ring<u32>, model: &VecDeque<u32>) {
        assert_eq!(ring.len(), model.len());
        for (i, want) in model.iter().enumerate() {
            assert_eq!(ring.get(i), Some(want));
            assert_eq!(ring[i], *want);
        }
        assert_eq!(ring.get(model.len()), None);
        assert_eq!(ring.front(), model.front());
        assert!(ring.range(..).eq(model.iter()));
        for from in 0..=model.len() {
            for to in from..=model.len() {
                assert!(ring.range(from..to).eq(model.range(from..to)), "{from}..{to}");
            }
        }
        match ring {
            Ring::Small(deque) => assert!(deque.len() <= BLOCK, "a deque holds a block at most"),
            Ring::Blocks(b) => {
                let (last, full) = b.blocks.split_last().expect("blocks");
                assert!(!full.is_empty(), "two blocks at least");
                assert!(full.iter().all(|b| b.len() == BLOCK), "every block but the last is full");
                assert!(!last.is_empty(), "the last block holds a position");
                assert_eq!(b.head + b.len, full.len() * BLOCK + last.len(), "the blocks hold the ring");
                assert!(b.head < BLOCK);
                // A block after the first is made whole at once: its entries never move.
                assert!(b.blocks.iter().skip(1).all(|b| b.capacity() == BLOCK));
            }
        }
    }

    /// How many blocks `ring` is kept in (none while it is a deque).
    fn blocks<T>(ring: &Ring<T>) -> usize {
        match ring {
            Ring::Small(_) => 0,
            Ring::Blocks(b) => b.blocks.len(),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        Truncate(usize),
        Clear,
        Bump(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u32>().prop_map(Op::Push),
            4 => Just(Op::Pop),
            1 => (0usize..40).prop_map(Op::Truncate),
            1 => Just(Op::Clear),
            2 => (0usize..40, 0usize..40).prop_map(|(i, n)| Op::Bump(i, n)),
        ]
    }

    proptest! {
        /// A ring reads as a `VecDeque` given the same pushes, pops, truncations and
        /// changes in place, however its blocks come and go.
        #[test]
        fn a_ring_holds_what_a_deque_would(
            room in prop_oneof![Just(None), (0..2 * BLOCK).prop_map(Some)],
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let mut ring = room.map_or_else(Ring::default, Ring::with_capacity);
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(x) => {
                        ring.push_back(x);
                        model.push_back(x);
                    }
                    Op::Pop => prop_assert_eq!(ring.pop_front(), model.pop_front()),
                    Op::Truncate(n) => {
                        ring.truncate(n);
                        model.truncate(n);
                    }
                    Op::Clear => {
                        ring.clear();
                        model.clear();
                    }
                    Op::Bump(i, n) => {
                        if let Some(x) = model.get_mut(i) {
                            *x = x.wrapping_add(1);
                            ring[i] = ring[i].wrapping_add(1);
                        }
                        // Positions `i..i + n`, as far as the ring goes.
                        let (from, to) = (i.min(model.len()), (i + n).min(model.len()));
                        for (x, y) in ring.range_mut(from..to).zip(model.range_mut(from..to)) {
                            *x ^= 7;
                            *y ^= 7;
                        }
                        prop_assert!(ring.range_mut(from..to).count() == to - from);
                    }
                }
                check(&ring, &model);
            }
            prop_assert!(ring.range(..).cloned().collect::<Ring<u32>>().into_iter().eq(model.iter().cloned()));
            prop_assert!(ring.into_iter().eq(model.into_iter()));
        }
    }

    #[test]
    fn a_ring_churned_at_its_ends_keeps_at_most_two_blocks() {
        let mut ring = Ring::default();
        for i in 0..3 * BLOCK as u32 {
            ring.push_back(i);
            if i >= BLOCK as u32 {
                assert_eq!(ring.pop_front(), Some(i - BLOCK as u32));
            }
            assert!(blocks(&ring) <= 2);
        }
        assert!(ring.range(..).copied().eq(2 * BLOCK as u32..3 * BLOCK as u32));
    }

    /// A ring is a deque up to a block's positions, blocks past it, and a deque again
    /// when it is down to one block, by its front or by its end.
    #[test]
    fn a_ring_is_a_deque_until_it_needs_two_blocks() {
        let mut ring: Ring<u32> = (0..BLOCK as u32).collect();
        assert_eq!(blocks(&ring), 0);
        ring.push_back(BLOCK as u32);
        assert_eq!(blocks(&ring), 2);
        ring.truncate(BLOCK);
        assert_eq!(blocks(&ring), 0, "truncated to one block");
        ring.push_back(BLOCK as u32);
        assert_eq!(ring.pop_front(), Some(0));
        assert_eq!(blocks(&ring), 2, "a position of the first block left");
        for i in 1..BLOCK as u32 {
            assert_eq!(ring.pop_front(), Some(i));
        }
        assert_eq!(blocks(&ring), 0, "the first block freed");
        assert!(ring.range(..).copied().eq([BLOCK as u32]));
    }

    /// What the ring is for: a ring whose front was dropped grows without moving a
    /// position (a `VecDeque` there moves up to half of them, in one go).
    #[test]
    fn a_ring_grows_and_drops_its_front_without_moving_a_position() {
        let mut ring: Ring<u64> = (0..5 * BLOCK as u64).collect();
        for _ in 0..2 * BLOCK + 3 {
            ring.pop_front();
        }
        let at = |ring: &Ring<u64>| ring.range(..).map(|x| (*x, x as *const u64 as usize)).collect::<Vec<_>>();
        let before = at(&ring);
        let mut popped = 0;
        for x in 0..4 * BLOCK as u64 {
            ring.push_back(x);
            if x % 4 == 0 {
                ring.pop_front();
                popped += 1;
            }
        }
        let after = at(&ring);
        assert!(after.len() > before.len() + 2 * BLOCK, "it grew by blocks");
        assert_eq!(after[..before.len() - popped], before[popped..], "every position still in it is where it was");
    }

    #[test]
    #[should_panic(expected = "range 2..5 of a ring of 3")]
    fn a_range_past_the_end_is_a_bug() {
        let ring: Ring<u32> = (0..3).collect();
        let _ = ring.range(2..5).count();
    }
}
