//! [`Ring`]: the double-ended run of positions under a dict's or set's table, kept in
//! blocks of a fixed size so that it grows and drops its front without moving an entry.
//!
//! A `VecDeque` that fills moves into a buffer twice its size, and when its entries wrap
//! around its end (a dict whose oldest entries were dropped, that then grew) the shorter
//! of its two runs is copied: up to half the entries in one go, ~180 ms at 8 million
//! dict entries while every change to the dict waits. A ring grows by one block and
//! frees its first block once the front passed it, and a position costs one more load
//! to find (its block's address, from a table of a few hundred or thousand). A ring
//! shorter than one block is a single vector that grows as a `Vec` does, so a small dict
//! holds little more than its entries.
//!
//! This module owns where positions live, not what they hold: holes, ordering and the
//! numbering of positions are the table's business (`dict`).
use std::ops::{Bound, Index, IndexMut, RangeBounds};

/// log₂ of the positions in a block: 8,192 (512 KiB of dict entries). Unit tests use
/// blocks of 8, so that every table they build spans many blocks.
const BLOCK_SHIFT: u32 = if cfg!(test) { 3 } else { 13 };
const BLOCK: usize = 1 << BLOCK_SHIFT;

/// A double-ended queue of positions, indexed from its front, in blocks of [`BLOCK`]
/// positions: the first block's first `head` positions are gone (popped), every block
/// but the last is full, and a ring of one block may hold fewer than `BLOCK` (its vector
/// grows by doubling up to a block).
pub(super) struct Ring<T> {
    /// The blocks, front first (none in a new ring, or one whose every position was
    /// popped from a full block).
    blocks: Vec<Vec<T>>,
    /// Positions popped from the front of the first block.
    head: usize,
    /// Positions in the ring.
    len: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring { blocks: Vec::new(), head: 0, len: 0 }
    }
}

impl<T: Default> Ring<T> {
    /// An empty ring with room for `n` positions in its first block (at most a block).
    pub(super) fn with_capacity(n: usize) -> Self {
        Ring { blocks: vec![Vec::with_capacity(n.min(BLOCK))], head: 0, len: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Position `i` counted from the front. (The blocks' bounds are the ring's: the last
    /// block ends where the ring does, and the position cannot fall before `head`.)
    #[inline]
    pub(super) fn get(&self, i: usize) -> Option<&T> {
        let p = self.head.checked_add(i)?;
        self.blocks.get(p >> BLOCK_SHIFT)?.get(p & (BLOCK - 1))
    }

    #[inline]
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let p = self.head.checked_add(i)?;
        self.blocks.get_mut(p >> BLOCK_SHIFT)?.get_mut(p & (BLOCK - 1))
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    /// Appends a position: into the last block, or a new one if that one is full.
    pub(super) fn push_back(&mut self, item: T) {
        match self.blocks.last_mut() {
            Some(last) if last.len() < BLOCK => {
                if last.len() == last.capacity() {
                    // A lone block grows as a `Vec` does, but never past a block.
                    last.reserve_exact(last.capacity().max(4).min(BLOCK - last.len()));
                }
                last.push(item);
            }
            _ => {
                let mut block = Vec::with_capacity(if self.blocks.is_empty() { 4 } else { BLOCK });
                block.push(item);
                self.blocks.push(block);
            }
        }
        self.len += 1;
    }

    /// Takes the first position out. The first block is freed once every position in it
    /// is gone; a lone block drops its gone positions once they are as many as those
    /// left, moving those (each position moves at most once per position popped).
    pub(super) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = std::mem::take(&mut self.blocks[0][self.head]);
        self.head += 1;
        self.len -= 1;
        if self.head == BLOCK {
            self.blocks.remove(0);
            self.head = 0;
        } else if self.blocks.len() == 1 && self.head * 2 >= self.blocks[0].len() {
            self.blocks[0].drain(..self.head);
            self.head = 0;
        }
        Some(item)
    }

    /// Keeps the first `n` positions and drops the rest (and the blocks they filled).
    pub(super) fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        if n == 0 {
            self.clear();
            return;
        }
        let stop = self.head + n;
        let blocks = stop.div_ceil(BLOCK);
        self.blocks.truncate(blocks);
        if let Some(last) = self.blocks.last_mut() {
            last.truncate(stop - (blocks - 1) * BLOCK);
        }
        self.len = n;
    }

    /// Drops every position, keeping the first block's room.
    pub(super) fn clear(&mut self) {
        self.blocks.truncate(1);
        if let Some(first) = self.blocks.first_mut() {
            first.clear();
        }
        self.head = 0;
        self.len = 0;
    }

    /// The blocks' slices that hold positions `range`, in order.
    fn slices(&self, range: impl RangeBounds<usize>) -> impl Iterator<Item = &[T]> {
        let (from, to) = self.physical(range);
        let first = from >> BLOCK_SHIFT;
        self.blocks[first..].iter().zip(first..).map_while(move |(block, k)| {
            let start = k * BLOCK;
            (start < to).then(|| &block[from.max(start) - start..to.min(start + block.len()) - start])
        })
    }

    /// The positions `range`, in order.
    pub(super) fn range(&self, range: impl RangeBounds<usize>) -> impl Iterator<Item = &T> {
        self.slices(range).flatten()
    }

    /// The positions `range`, mutably, in order.
    pub(super) fn range_mut(&mut self, range: impl RangeBounds<usize>) -> impl Iterator<Item = &mut T> {
        let (from, to) = self.physical(range);
        let first = from >> BLOCK_SHIFT;
        self.blocks[first..]
            .iter_mut()
            .zip(first..)
            .map_while(move |(block, k)| {
                let start = k * BLOCK;
                (start < to).then(|| {
                    let stop = to.min(start + block.len()) - start;
                    &mut block[from.max(start) - start..stop]
                })
            })
            .flatten()
    }

    /// Where `range` (of positions counted from the front) begins and ends in the blocks
    /// laid end to end. Panics if it reaches past the ring's end.
    fn physical(&self, range: impl RangeBounds<usize>) -> (usize, usize) {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i + 1,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => self.len,
        };
        assert!(from <= to && to <= self.len, "range {from}..{to} of a ring of {}", self.len);
        (self.head + from, self.head + to)
    }
}

impl<T: Default> Index<usize> for Ring<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        self.get(i).unwrap_or_else(|| panic!("position {i} of a ring of {}", self.len))
    }
}

impl<T: Default> IndexMut<usize> for Ring<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
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
pub(super) type IntoIter<T> = std::iter::Skip<std::iter::Flatten<std::vec::IntoIter<Vec<T>>>>;

impl<T> IntoIterator for Ring<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        self.blocks.into_iter().flatten().skip(self.head)
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
        let (last, full) = ring.blocks.split_last().map_or((0, &[][..]), |(l, f)| (l.len(), f));
        assert!(full.iter().all(|b| b.len() == BLOCK), "every block but the last is full");
        assert_eq!(ring.head + ring.len, full.len() * BLOCK + last, "the blocks hold the ring");
        assert!(ring.head < BLOCK);
        assert!(ring.blocks.iter().all(|b| b.capacity() <= BLOCK), "no block outgrows a block");
        // A block after the first is made whole at once: its entries never move.
        assert!(ring.blocks.iter().skip(1).all(|b| b.capacity() == BLOCK));
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
            assert!(ring.blocks.len() <= 2);
        }
        assert!(ring.range(..).copied().eq(2 * BLOCK as u32..3 * BLOCK as u32));
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
    fn a_lone_block_drops_its_popped_positions_once_they_are_half() {
        let mut ring: Ring<u32> = (0..4).collect();
        assert_eq!(ring.pop_front(), Some(0));
        assert_eq!((ring.head, ring.blocks[0].len()), (1, 4), "one of four gone: kept");
        assert_eq!(ring.pop_front(), Some(1));
        assert_eq!((ring.head, ring.blocks[0].len()), (0, 2), "two of four gone: dropped");
        assert!(ring.range(..).copied().eq([2, 3]));
    }

    #[test]
    #[should_panic(expected = "range 2..5 of a ring of 3")]
    fn a_range_past_the_end_is_a_bug() {
        let ring: Ring<u32> = (0..3).collect();
        let _ = ring.range(2..5).count();
    }
}
