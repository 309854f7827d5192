//! [`Dict`] (insertion ordered, like Python's dict) and [`Set`].
//!
//! Both sit on one private [`Table`], laid out like CPython's dict: a dense ring
//! ([`Ring`], a deque kept in blocks once it is long) of entries in insertion order,
//! plus a [`hashbrown::HashTable`] of [`Bucket`]s, each an entry's position and a tag of
//! its key's hash. An entry is its key and value and nothing else (64 bytes in a dict,
//! 32 in a set). Insert, lookup and delete are O(1) on average. A delete leaves a tombstone in the ring so that no other
//! entry moves; tombstones at the front are dropped at once (while no capture or
//! compaction runs), those at the end become spare room for the next entries, and the
//! ring is compacted when tombstones outnumber live entries or when it would otherwise
//! soon have to grow. A
//! bucket names an entry by a position that counts from the first entry ever pushed,
//! so dropping the oldest entries moves nothing: a dict whose oldest keys are deleted
//! as new ones come (a FIFO churn: a results dict, a cache of the latest) never
//! compacts. A big ring is compacted a few positions per change ([`Compaction`]): its
//! live entries slide down over the holes, then the index's buckets are renumbered,
//! while lookups translate the positions not renumbered yet. The ring grows a block at a
//! time and moves no entry as it grows. What is left in one go while every change waits:
//! a small ring's compaction.
//!
//! Python semantics kept: re-inserting an existing key keeps its original position and
//! its original key object (`d[1.0] = x` on a dict holding `1` keeps the key `1`); a
//! key deleted and inserted again goes to the end; `popitem` is LIFO. Lookups take a
//! `&Value` and never clone it. Keys follow [`hash_value`] and [`Value::py_eq`].
//!
//! A big table's index grows a few buckets at a time ([`Regrowth`]): the old index's
//! buckets are copied into one twice its size a few per change (and per [`Dict::tidy`]),
//! while lookups the new one cannot answer yet look in the old one. Growing it in one go
//! would hold up every change to the table for as long as filing every bucket again
//! takes: ~150 ms at 8 million entries.
//!
//! Freeing is the other thing that grows with a table: a big table dropped or cleared
//! is freed on [`reclaim`]'s helper thread once the program turned it on (the server
//! does), not by the caller (dropping 8 million entries took ~100–200 ms).
//!
//! A [`Dict`] can also be *captured* ([`Dict::begin_capture`]): its entries as they are
//! at one instant, read out in order a few at a time while the dict goes on changing.
//! An entry changed or deleted before the read-out reaches it leaves its old contents
//! with the capture first (so a server's snapshot need not copy or encode a big dict
//! while every change waits). While a capture runs, entries never move: compaction
//! waits until it ends.
use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use hashbrown::HashTable;

use super::key::{hash_value, hash_value_ahead};
use super::ring::{self, Ring};
use super::Value;
use crate::bigalloc::BigAlloc;
use crate::{reclaim, WireError};

/// One live entry: the key and what it maps to. Its key's hash is not kept here (the
/// index's [`Bucket`] holds what the table needs of it), which makes a dict's entry 64
/// bytes, not 72: a ninth less memory per entry.
#[derive(Clone)]
struct Slot<V> {
    key: Value,
    value: V,
}

// A hole (`None`) costs no more than an entry.
const _: () = assert!(std::mem::size_of::<Option<Slot<Value>>>() == 64);
const _: () = assert!(std::mem::size_of::<Option<Slot<()>>>() == 32);

/// The insertion-ordered hash table behind [`Dict`] (`V = Value`) and [`Set`] (`V = ()`).
struct Table<V> {
    /// Entries in insertion order; `None` is a tombstone. The last `spare` are room
    /// (see there); before them, it never ends with a tombstone, and begins with one
    /// only while a capture or a compaction runs (and for a few changes after it, which
    /// drop them).
    entries: Ring<Option<Slot<V>>>,
    /// The room the compaction's trigger goes by ([`Table::push`]): what a buffer that
    /// doubles when full would hold, though the ring grows a block at a time. Compacting
    /// when the ring nears it compacts as seldom as before the ring grew in blocks (each
    /// compaction is a pass over the ring and the index). 32 bits, beside `base`: a
    /// table of a small dict (every nested dict is one) stays in its allocation size.
    room: u32,
    /// Tombstones at the end of `entries` that are not part of the table (its ring ends
    /// before them, at [`Table::end`]): room the next pushes fill in place. A delete of
    /// the last entry turns the holes before it into spare room, and a compaction's
    /// sweep leaves the holes it made there: counting them is free, while dropping
    /// millions of them from the ring reads each one (~10 ms for 3 million).
    spare: u32,
    /// The position of `entries[0]`, as [`Bucket`]s name entries: dropping the oldest
    /// entry advances it, and no other entry's position changes. Positions count
    /// modulo 2³² (the entries, fewer than 2³¹, never share one; a [`Compaction`]
    /// moves the numbering by half the circle).
    base: u32,
    /// The live entries' positions, filed by their key's hash (while a [`Regrowth`]
    /// runs, all but those it has still to copy).
    index: Index,
    /// Number of live entries. 32 bits, as `spare`: a table holds fewer than 2³¹
    /// entries, and with `room` and `base` the four take 16 bytes, so a table with
    /// `ahead` beside them is still 120 bytes (a small nested dict's size class).
    live: u32,
    /// The capture being read out, if any (boxed: almost every table has none).
    capture: Option<Box<Capture<V>>>,
    /// The index's growth under way, if any (boxed: almost every table has none).
    regrowth: Option<Box<Regrowth>>,
    /// The index the next growth moves into, made ahead on [`reclaim`]'s helper (see
    /// [`Table::make_room`]; boxed: almost every table has none).
    ahead: Option<Box<reclaim::Ahead<Index>>>,
    /// The entries' compaction under way, if any (boxed: almost every table has none).
    compaction: Option<Box<Compaction>>,
}

/// An index being replaced by one twice its size, as Redis rehashes a growing table:
/// the old index's buckets, from bucket `next` on, are copied into the new one (the
/// table's) a few at a time ([`Table::regrow_some`]), in the old one's bucket order,
/// and until then they are found through the old one. A copy needs only the bucket (its
/// tag files it), never the entry or its key.
///
/// Between them the two hold exactly one bucket for each live entry: the new index's
/// and the old one's from bucket `next` on. A bucket removed while it waits is removed
/// from the old index (hashbrown never moves the others), and the old one is never
/// added to. The buckets it keeps before `next` are copies, searched only by key (a
/// bucket counts once its entry's key is compared) and dropped with it at the end. The
/// entries move only when the table is compacted: at once, which ends the growth first,
/// or step by step, whose lookups translate the buckets of both indexes alike
/// ([`Compaction`]).
#[derive(Clone)]
struct Regrowth {
    /// The index before the growth.
    old: Index,
    /// The old index's next bucket to copy.
    next: usize,
}

/// A compaction of a big entry ring done a few steps per change ([`COMPACT_STEP`]), as a
/// growing index is ([`Regrowth`]), so that no change waits for a pass over millions of
/// entries. Two phases:
///
/// - **Sweeping.** Ring indexes below `swept` were swept: each live entry among them
///   moved down to the index `ranks` gives it (the live entries swept before it), and
///   the indexes from there up to `swept` are holes. Entries at `swept` and after (those
///   pushed meanwhile too) have not moved. A bucket still names its entry's old index,
///   and a lookup translates one below `swept` through `ranks`. Nothing moves while a
///   capture runs (it reads ring indexes); the front drops no holes meanwhile either.
/// - **Renumbering** (`renumbered` is `Some`), once every index was swept: the table's
///   numbering moved by [`RENUMBERING`] (`from` is the old one's base), new entries are
///   numbered in the new one, and the index's buckets, in bucket order, and those a
///   growth copies, are renumbered. A bucket whose position lies in the old numbering's
///   half is translated through `ranks`; the compaction ends when every bucket is in
///   the new one.
#[derive(Clone)]
struct Compaction {
    /// The base of the numbering the buckets held when the compaction began.
    from: u32,
    /// Ring indexes below this were swept.
    swept: usize,
    /// Where each swept index's entry went.
    ranks: Ranks,
    /// `None` while sweeping; then the index's next bucket to renumber.
    renumbered: Option<usize>,
}

impl Compaction {
    /// A compaction about to sweep a ring whose buckets are numbered from `base`.
    fn new(base: u32) -> Compaction {
        Compaction { from: base, swept: 0, ranks: Ranks::default(), renumbered: None }
    }

    /// The ring index of the entry `bucket` names, the table's base being `base`.
    fn at(&self, bucket: Bucket, base: u32) -> usize {
        let i = bucket.at(base);
        match self.renumbered {
            None if i < self.swept => self.ranks.live_before(i) as usize,
            None => i,
            Some(_) if i < RENUMBERING as usize => i,
            Some(_) => self.ranks.live_before(bucket.at(self.from)) as usize,
        }
    }

    /// `bucket` in the numbering new buckets get now.
    fn current(&self, bucket: Bucket, base: u32) -> Bucket {
        match self.renumbered {
            Some(_) if bucket.at(base) >= RENUMBERING as usize => {
                bucket.moved_to(base.wrapping_add(self.ranks.live_before(bucket.at(self.from))))
            }
            _ => bucket,
        }
    }
}

/// How the table's buckets name ring indexes now: its base, and the compaction under
/// way, if any.
#[derive(Clone, Copy)]
struct Numbering<'a> {
    base: u32,
    compaction: Option<&'a Compaction>,
}

impl Numbering<'_> {
    /// The ring index of the entry `bucket` names.
    #[inline]
    fn at(self, bucket: Bucket) -> usize {
        match self.compaction {
            None => bucket.at(self.base),
            Some(c) => c.at(bucket, self.base),
        }
    }
}

/// Indexes smaller than this (in entries they can hold) grow at once: filing this many
/// again takes well under a millisecond. Unit tests grow indexes of a few dozen entries
/// step by step, and smaller ones at once: both ways run in them.
const REGROW_FROM: usize = if cfg!(test) { 64 } else { 1 << 15 };

/// Indexes that can hold at least this many entries have the index they grow into made
/// ahead ([`Table::make_room`]); a smaller one's takes under a millisecond to allocate.
/// Unit tests make indexes of a few hundred entries ahead.
const AHEAD_FROM: usize = if cfg!(test) { 256 } else { 1 << 19 };

/// The old index's buckets (used or not) copied into a growing one per change of the
/// table (and per [`Dict::tidy`]): the new index, twice the old's size, takes the old's
/// entries and those pushed meanwhile (at most one per `REGROW_STEP` buckets) long
/// before it is full.
const REGROW_STEP: usize = 8;

/// A ring at least this long is compacted step by step ([`Compaction`]); a shorter one
/// at once, which takes well under a millisecond. Unit tests compact rings of a few
/// dozen entries step by step.
const COMPACT_STEPWISE_FROM: usize = if cfg!(test) { 16 } else { 1 << 15 };

/// The ring positions a compaction sweeps, or the index buckets it renumbers, per
/// change of the table (and per [`Dict::tidy`]). It begins when the ring is 15/16 full:
/// even if every change is a push, the sweep (the pushes meanwhile and all) ends when
/// about half the room left is taken, so the ring need not grow.
const COMPACT_STEP: usize = 32;

/// How far a compaction moves the numbering of positions ([`Table::base`]): the old
/// numbering's positions and the new one's lie in the two halves of the 32-bit circle,
/// so a bucket's position says which numbering it is in. A ring holds fewer entries.
const RENUMBERING: u32 = 1 << 31;

/// The most positions an entry ring holds (live entries and holes), so that every
/// position of one numbering lies in its half of the circle ([`RENUMBERING`]).
const MOST_POSITIONS: usize = RENUMBERING as usize - 1;

/// The position of the first entry of a new table. Unit tests start just short of 2³²,
/// so that every table they build counts its positions across the wrap.
const FIRST_POSITION: u32 = if cfg!(test) { u32::MAX - 63 } else { 0 };

/// The tombstones at the front of the entry ring a change (or a [`Dict::tidy`]) drops at
/// most, after a capture (which keeps them while it runs) ends: dropping the oldest
/// entry drops the holes right behind it, a run as long as the deletions that came
/// before it out of order.
const HOLES_STEP: usize = 64;

/// A running capture: the entries as they were when it began, read out in order. Its
/// positions are indexes of the entry ring, whose front drops nothing while it runs.
struct Capture<V> {
    /// Positions below this were read out already.
    cursor: usize,
    /// The length of the entry vector when it began: later positions are not part of it.
    end: usize,
    /// What the positions in `cursor..end` changed since held when it began (`None`: a
    /// tombstone, or nothing). The first change of a position records it; later ones
    /// leave it.
    before: HashMap<usize, Option<Slot<V>>>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            entries: Ring::default(),
            room: 0,
            spare: 0,
            base: FIRST_POSITION,
            index: Index::new_in(BigAlloc),
            live: 0,
            capture: None,
            regrowth: None,
            ahead: None,
            compaction: None,
        }
    }
}

/// A copy is a new table: a capture running on the original is not copied (a growth of
/// its index is, and a compaction), nor is the spare room (a dict emptied from its end
/// may have millions of positions of it).
impl<V: Clone> Clone for Table<V> {
    fn clone(&self) -> Self {
        Table {
            entries: self.entries.range(..self.end()).cloned().collect(),
            room: self.end() as u32,
            spare: 0,
            base: self.base,
            index: self.index.clone(),
            live: self.live,
            capture: None,
            regrowth: self.regrowth.clone(),
            ahead: None,
            compaction: self.compaction.clone(),
        }
    }
}

/// A table's index: its buckets, in blocks that a big index maps itself and gives back
/// a stretch at a time ([`BigAlloc`]): freeing the old index at the end of a big growth
/// would otherwise hold the process's memory map for milliseconds, and the thread
/// serving the dict waits for it to fault in its next pages.
type Index = HashTable<Bucket, BigAlloc>;

// A table whose index is a block of its own is big: dropped or cleared whole on the
// helper, where its index is freed at once (a bucket and its control byte: 9 bytes).
const _: () = assert!(crate::bigalloc::MAP_FROM / 9 >= reclaim::RECLAIM_FROM);

/// One entry of the index: the entry's position (the low 32 bits; see [`Table::base`])
/// and the top 32 bits of its key's hash, its *tag*.
///
/// The index files a bucket under its tag alone ([`index_hash`]), so growing the index
/// never reads an entry, and a probe reads the entry a bucket names only when the tags
/// agree (hashbrown's 7-bit control byte alone would let one probe in eight or so read
/// an entry of another key). Eight bytes, as a bare `usize` position was.
#[derive(Clone, Copy)]
struct Bucket(u64);

/// The bits of a key's hash a [`Bucket`] keeps.
const TAG_BITS: u64 = 0xffff_ffff_0000_0000;

impl Bucket {
    fn new(hash: u64, pos: u32) -> Bucket {
        Bucket(hash & TAG_BITS | u64::from(pos))
    }
    fn pos(self) -> u32 {
        self.0 as u32
    }
    /// The entry's index in an entry ring whose first position is `base`.
    fn at(self, base: u32) -> usize {
        self.pos().wrapping_sub(base) as usize
    }
    fn has_tag_of(self, hash: u64) -> bool {
        (self.0 ^ hash) & TAG_BITS == 0
    }
    fn moved_to(self, pos: u32) -> Bucket {
        Bucket(self.0 & TAG_BITS | u64::from(pos))
    }
    fn index_hash(self) -> u64 {
        index_hash(self.0)
    }
}

/// The hash the index files a key under, from the tag alone: the tag times an odd
/// constant, so that hashbrown's bucket (the low bits) and its control byte (the top
/// seven) both come from all of it.
fn index_hash(hash: u64) -> u64 {
    (hash >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The error for an insert into a table whose entry ring is full ([`MOST_POSITIONS`] live
/// entries and holes deletions left: far more than memory holds).
fn full() -> WireError {
    WireError::overflow_error("a dict or set holds at most 2,147,483,647 entries")
}

/// Asks the CPU to load `item`'s cache lines (its first and last byte's) without
/// waiting for them; a hint, never a fault, whatever the address. A no-op where the
/// standard library has no stable prefetch (outside x86-64).
#[inline]
fn prefetch<T>(item: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = (item as *const T).cast::<i8>();
        let last = first.wrapping_add(std::mem::size_of::<T>().saturating_sub(1));
        // SAFETY: a prefetch reads nothing the program sees and cannot fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}

/// Entry `i`, if it is live and its key equals `key`.
fn holding<'a, V>(entries: &'a Ring<Option<Slot<V>>>, i: usize, key: &Value) -> Option<&'a Slot<V>> {
    entries.get(i)?.as_ref().filter(|s| s.key.py_eq(key))
}

/// Takes the bucket of a key hashing to `hash` that `matches` picks out of `index`, or
/// else out of the old index of a growth under way (see [`Regrowth`]), and returns it.
fn remove_bucket(
    index: &mut Index,
    regrowth: Option<&mut Regrowth>,
    hash: u64,
    matches: impl Fn(&Bucket) -> bool,
) -> Option<Bucket> {
    if let Ok(found) = index.find_entry(index_hash(hash), &matches) {
        return Some(found.remove().0);
    }
    let found = regrowth?.old.find_entry(index_hash(hash), &matches).ok()?;
    Some(found.remove().0)
}

/// Where compaction moves each entry: the number of live entries before it, kept as a
/// bit per entry and a count per 64 of them — an eighth of a byte per entry, not four,
/// so the index's renumbering (in bucket order, the entries at random) finds them in
/// the cache.
#[derive(Clone, Default)]
struct Ranks {
    /// Bit `i % 64` of word `i / 64`: entry `i` is live.
    live: Vec<u64>,
    /// The live entries before each word's first position.
    before: Vec<u32>,
    /// The live entries noted so far: where the next live one goes.
    kept: u32,
}

impl Ranks {
    /// Notes whether entry `i`, the one after the last noted, is live.
    fn note(&mut self, i: usize, live: bool) {
        if i % 64 == 0 {
            self.before.push(self.kept);
            self.live.push(0);
        }
        if live {
            if let Some(word) = self.live.last_mut() {
                *word |= 1 << (i % 64);
            }
            self.kept += 1;
        }
    }

    /// The live entries before entry `i` (one noted): the index it moved to.
    fn live_before(&self, i: usize) -> u32 {
        let (word, bit) = (i / 64, i % 64);
        self.before[word] + (self.live[word] & ((1u64 << bit) - 1)).count_ones()
    }
}

impl<V: Clone> Table<V> {
    fn with_capacity(n: usize) -> Self {
        Table {
            entries: Ring::with_capacity(n),
            room: u32::try_from(n).unwrap_or(u32::MAX),
            spare: 0,
            base: FIRST_POSITION,
            index: Index::with_capacity_in(n, BigAlloc),
            live: 0,
            capture: None,
            regrowth: None,
            ahead: None,
            compaction: None,
        }
    }

    /// Where the ring ends: its entries and holes are `entries[..end]`, the rest is
    /// spare room.
    fn end(&self) -> usize {
        self.entries.len() - self.spare as usize
    }

    /// Number of live entries.
    fn live(&self) -> usize {
        self.live as usize
    }

    /// How buckets name ring indexes now.
    fn numbering(&self) -> Numbering<'_> {
        Numbering { base: self.base, compaction: self.compaction.as_deref() }
    }

    /// The index in the entry ring of `key`, whose hash is `hash`.
    fn find(&self, hash: u64, key: &Value) -> Option<usize> {
        self.probe(hash, key).map(|(i, _)| i)
    }

    /// The entry of `key`, whose hash is `hash`.
    fn find_slot(&self, hash: u64, key: &Value) -> Option<&Slot<V>> {
        self.probe(hash, key).map(|(_, slot)| slot)
    }

    /// The index in the entry ring of `key` (whose hash is `hash`) and its entry, kept as
    /// the probe compares it: finding it in the ring again is one more dependent load.
    fn probe(&self, hash: u64, key: &Value) -> Option<(usize, &Slot<V>)> {
        let (entries, numbering) = (&self.entries, self.numbering());
        let found = Cell::new(None);
        let matches = |b: &Bucket| {
            if !b.has_tag_of(hash) {
                return false;
            }
            let i = numbering.at(*b);
            let slot = holding(entries, i, key);
            found.set(slot.map(|slot| (i, slot)));
            slot.is_some()
        };
        if self.index.find(index_hash(hash), matches).is_none() {
            self.regrowth.as_deref()?.old.find(index_hash(hash), matches)?;
        }
        found.get()
    }

    /// Copies up to `buckets` more of a growing index's old buckets into the new one
    /// (renumbered, if a compaction renumbers the buckets); the growth ends once the
    /// last is copied.
    fn regrow_some(&mut self, buckets: usize) {
        let Some(r) = self.regrowth.as_deref_mut() else { return };
        let end = r.old.num_buckets();
        let stop = end.min(r.next.saturating_add(buckets));
        for i in r.next..stop {
            if let Some(&bucket) = r.old.get_bucket(i) {
                let bucket = self.compaction.as_deref().map_or(bucket, |c| c.current(bucket, self.base));
                self.index.insert_unique(bucket.index_hash(), bucket, |b| b.index_hash());
            }
        }
        r.next = stop;
        if stop == end {
            self.regrowth = None;
        }
    }

    /// Before a bucket is added: an index that is full begins to grow step by step
    /// (one too small to be worth it grows in the insert, at once). A growth that
    /// is still running when its new index fills (it cannot, at `REGROW_STEP`'s
    /// pace) is finished first.
    ///
    /// A big index 15/16 full has the one it will grow into made on [`reclaim`]'s helper
    /// meanwhile ([`AHEAD_FROM`]): allocating it writes a control byte per bucket, ~10
    /// ms at 16 Mi buckets, which the change that starts the growth would otherwise wait
    /// for. If it is not made by then, the growth makes its own.
    fn make_room(&mut self) {
        let (len, capacity) = (self.index.len(), self.index.capacity());
        if len < capacity {
            if len == capacity - capacity / 16 && capacity >= AHEAD_FROM && self.ahead.is_none() {
                let bigger = 2 * capacity;
                self.ahead = reclaim::make_ahead(move || Index::with_capacity_in(bigger, BigAlloc)).map(Box::new);
            }
            return;
        }
        self.regrow_some(usize::MAX);
        if self.index.capacity() >= REGROW_FROM {
            let capacity = (2 * self.index.capacity()).max(3);
            let bigger = self.made_ahead(capacity).unwrap_or_else(|| Index::with_capacity_in(capacity, BigAlloc));
            let old = std::mem::replace(&mut self.index, bigger);
            self.regrowth = Some(Box::new(Regrowth { old, next: 0 }));
            // A compaction renumbering the old index's buckets renumbers them as they
            // are copied: none in the new one is left to walk.
            if let Some(next) = self.compaction.as_deref_mut().and_then(|c| c.renumbered.as_mut()) {
                *next = self.index.num_buckets();
            }
        } else if self.compaction.as_deref().is_some_and(|c| c.renumbered.is_some()) {
            // The insert rehashes a small index where it is, which moves its buckets
            // past the renumbering's walk: they are all renumbered first.
            self.compact_some(usize::MAX);
        }
    }

    /// The index made ahead for a growth into `capacity`, if the helper has made it (one
    /// it has not is dropped there once made). Only a growth or a clear replaces an
    /// index, and a clear lets the one made ahead go: it was made for this growth.
    fn made_ahead(&mut self, capacity: usize) -> Option<Index> {
        let made = self.ahead.take()?.take()?;
        debug_assert!(made.capacity() >= capacity, "made ahead for another growth");
        #[cfg(test)]
        tests::AHEAD_TAKEN.with(|n| n.set(n.get() + 1));
        Some(made)
    }

    fn slot(&self, i: usize) -> Option<&Slot<V>> {
        self.entries.get(i)?.as_ref()
    }

    /// Entry `i`, to change it: a running capture that has not read it out yet keeps
    /// what it holds now first.
    fn slot_mut(&mut self, i: usize) -> Option<&mut Slot<V>> {
        self.preserve(i);
        self.entries.get_mut(i)?.as_mut()
    }

    /// Before position `i` changes: if a running capture still has to read it out and
    /// has not kept its old contents yet, it keeps them.
    fn preserve(&mut self, i: usize) {
        let Table { entries, capture, .. } = self;
        if let Some(c) = capture.as_deref_mut() {
            if (c.cursor..c.end).contains(&i) {
                c.before.entry(i).or_insert_with(|| entries.get(i).cloned().flatten());
            }
        }
    }

    /// Starts loading into the cache the entries that `keys` would find, so that
    /// their lookups soon after wait for none of them. Each key costs its hash and a
    /// probe of the index by tag alone: the probes' loads of different keys overlap,
    /// and the entry, a lookup's slowest load (another cache line, named by the
    /// bucket), is prefetched, not waited for. Unhashable keys are skipped.
    fn prefetch(&self, keys: impl IntoIterator<Item = impl Borrow<Value>>) {
        for key in keys {
            let Ok(hash) = hash_value_ahead(key.borrow()) else { continue };
            let tagged = |b: &Bucket| b.has_tag_of(hash);
            let bucket = self.index.find(index_hash(hash), tagged);
            let bucket = bucket.or_else(|| self.regrowth.as_deref()?.old.find(index_hash(hash), tagged));
            if let Some(slot) = bucket.and_then(|b| self.entries.get(self.numbering().at(*b))) {
                prefetch(slot);
            }
        }
    }

    fn get(&self, key: &Value) -> Result<Option<&Slot<V>>, WireError> {
        let hash = hash_value(key)?;
        Ok(self.find_slot(hash, key))
    }

    /// Inserts or replaces; a replaced entry keeps its key and position.
    fn insert(&mut self, key: Value, value: V) -> Result<Option<V>, WireError> {
        let hash = hash_value(&key)?;
        if let Some(slot) = self.find(hash, &key).and_then(|i| self.slot_mut(i)) {
            return Ok(Some(std::mem::replace(&mut slot.value, value)));
        }
        self.push(hash, Slot { key, value })?;
        Ok(None)
    }

    /// Appends a slot whose key (hashing to `hash`) is known to be absent.
    fn push(&mut self, hash: u64, slot: Slot<V>) -> Result<(), WireError> {
        let (len, tombstones) = (self.end(), self.end() - self.live());
        // A ring an eighth holes is compacted before it outgrows its room: one with room
        // for fewer than COMPACT_STEPWISE_FROM positions (in one go) once full, a bigger
        // one from 15/16 full, so that a compaction step by step ends before it fills.
        let room = self.room as usize;
        let due = if room < COMPACT_STEPWISE_FROM { len == room } else { len * 16 >= room * 15 };
        if due && tombstones > 0 && tombstones * 8 >= len {
            self.start_compaction();
        }
        self.compact_some(COMPACT_STEP);
        let end = self.end();
        if end >= MOST_POSITIONS {
            return Err(full());
        }
        let pos = self.base.wrapping_add(end as u32);
        self.make_room();
        self.regrow_some(REGROW_STEP);
        self.index.insert_unique(index_hash(hash), Bucket::new(hash, pos), |b| b.index_hash());
        if self.spare > 0 {
            // A running capture kept what it reads here when the position became spare
            // (or the position is past the capture's end).
            self.entries[end] = Some(slot);
            self.spare -= 1;
        } else {
            self.entries.push_back(Some(slot));
            if self.entries.len() > self.room as usize {
                self.room = self.room.saturating_mul(2).max(4);
            }
        }
        self.live += 1;
        Ok(())
    }

    fn remove(&mut self, key: &Value) -> Result<Option<Slot<V>>, WireError> {
        let hash = hash_value(key)?;
        self.upkeep();
        let entries = &self.entries;
        let numbering = Numbering { base: self.base, compaction: self.compaction.as_deref() };
        let matches = |b: &Bucket| b.has_tag_of(hash) && holding(entries, numbering.at(*b), key).is_some();
        let Some(bucket) = remove_bucket(&mut self.index, self.regrowth.as_deref_mut(), hash, matches) else {
            return Ok(None);
        };
        let i = numbering.at(bucket);
        Ok(self.take_slot(i))
    }

    /// Removes the last entry (Python's `popitem`).
    fn pop_last(&mut self) -> Option<Slot<V>> {
        self.upkeep();
        let i = self.end().checked_sub(1)?;
        // Its bucket is found by its key's hash (a stored key always hashes).
        let hash = hash_value(&self.slot(i)?.key).ok()?;
        let numbering = Numbering { base: self.base, compaction: self.compaction.as_deref() };
        remove_bucket(&mut self.index, self.regrowth.as_deref_mut(), hash, |b| numbering.at(*b) == i);
        self.take_slot(i)
    }

    /// A change's share of the upkeep: a few buckets of a growing index copied, a few
    /// steps of a compaction.
    fn upkeep(&mut self) {
        self.regrow_some(REGROW_STEP);
        self.compact_some(COMPACT_STEP);
    }

    /// Turns entry `i` (already gone from the index) into a tombstone and tidies up.
    fn take_slot(&mut self, i: usize) -> Option<Slot<V>> {
        self.preserve(i);
        let slot = self.entries.get_mut(i)?.take()?;
        self.live -= 1;
        self.drop_trailing_holes();
        self.drop_oldest_holes(HOLES_STEP);
        if self.end() - self.live() > self.live().max(8) && self.capture.is_none() {
            self.start_compaction();
        }
        Some(slot)
    }

    /// Ends the entry ring before the tombstones at its end, which become spare room.
    /// A sweep whose ring now ends at or before the index it reached is over.
    fn drop_trailing_holes(&mut self) {
        while let Some(last) = self.end().checked_sub(1).filter(|&i| self.entries[i].is_none()) {
            // A position a capture still reads could be reused by the next push.
            self.preserve(last);
            self.spare += 1;
        }
        if self.compaction.as_deref().is_some_and(|c| c.renumbered.is_none() && c.swept >= self.end()) {
            self.end_sweep();
        }
    }

    /// Drops up to `most` tombstones from the front of the entry ring, advancing
    /// `base`: no entry moves and no bucket changes. Not while a capture runs, whose
    /// positions are indexes of the ring, nor while a compaction runs, which counts
    /// ring indexes too.
    fn drop_oldest_holes(&mut self, most: usize) {
        if self.capture.is_some() || self.compaction.is_some() {
            return;
        }
        for _ in 0..most {
            if self.end() == 0 || !matches!(self.entries.front(), Some(None)) {
                break;
            }
            self.entries.pop_front();
            self.base = self.base.wrapping_add(1);
        }
    }

    /// Begins compacting the entry ring, unless a compaction runs already or a capture
    /// does (which reads ring indexes): a small ring at once, a big one step by step.
    fn start_compaction(&mut self) {
        if self.compaction.is_some() || self.capture.is_some() {
            return;
        }
        if self.end() < COMPACT_STEPWISE_FROM {
            self.compact();
            return;
        }
        self.compaction = Some(Box::new(Compaction::new(self.base)));
    }

    /// Compacts the ring in one go: a [`Compaction`]'s steps all at once, after the
    /// index's growth (if any) ends, so that one index is renumbered. The spare room
    /// the sweep leaves is dropped too (a small ring's: reading it costs little).
    fn compact(&mut self) {
        debug_assert!(self.compaction.is_none(), "a compaction runs already");
        self.regrow_some(usize::MAX);
        self.compaction = Some(Box::new(Compaction::new(self.base)));
        // The sweep, then the renumbering, which ends it.
        self.compact_some(usize::MAX);
        self.compact_some(usize::MAX);
        debug_assert!(self.compaction.is_none(), "a compaction in one go ends");
        self.entries.truncate(self.end());
        self.spare = 0;
    }

    /// Takes a running compaction up to `steps` ring indexes or index buckets further
    /// (see [`Compaction`]); it ends once every bucket is renumbered and no growth of the
    /// index (which renumbers what it copies) runs.
    fn compact_some(&mut self, steps: usize) {
        let Table { entries, spare, index, compaction, capture, regrowth, base, .. } = self;
        let Some(c) = compaction.as_deref_mut() else { return };
        match c.renumbered {
            None => {
                if capture.is_some() {
                    return;
                }
                let end = entries.len() - *spare as usize;
                let stop = end.min(c.swept.saturating_add(steps));
                for i in c.swept..stop {
                    let live = entries[i].is_some();
                    let to = c.ranks.kept as usize;
                    if live && to != i {
                        entries[to] = entries[i].take();
                    }
                    c.ranks.note(i, live);
                }
                c.swept = stop;
                if stop == end {
                    self.end_sweep();
                }
            }
            Some(next) => {
                let end = index.num_buckets();
                let stop = end.min(next.saturating_add(steps));
                for i in next..stop {
                    if let Some(bucket) = index.get_bucket_mut(i) {
                        *bucket = c.current(*bucket, *base);
                    }
                }
                c.renumbered = Some(stop);
                if stop == end && regrowth.is_none() {
                    *compaction = None;
                }
            }
        }
    }

    /// Ends a compaction's sweep: the holes it left at the end of the ring become spare
    /// room, and the table's numbering moves on by [`RENUMBERING`] for the buckets'
    /// renumbering.
    fn end_sweep(&mut self) {
        let Some(c) = self.compaction.as_deref_mut() else { return };
        // (`from` is the base still: the front drops nothing while a compaction runs.)
        c.renumbered = Some(0);
        // Everything from where the next live entry would go on is a hole. (A capture
        // holds the sweep still: if one runs, the ring's end got here by dropping its
        // trailing holes, which kept each position for it.)
        self.spare = (self.entries.len() - c.ranks.kept as usize) as u32;
        self.base = self.base.wrapping_add(RENUMBERING);
        self.drop_trailing_holes();
    }

    fn clear(&mut self)
    where
        V: Send + 'static,
    {
        if let Some(c) = self.capture.as_deref_mut() {
            // What the capture has still to read moves into it (no copy).
            for i in c.cursor..c.end {
                c.before.entry(i).or_insert_with(|| self.entries.get_mut(i).and_then(Option::take));
            }
        }
        if self.is_big() {
            // Millions of entries take long to free: the helper frees them, with the
            // index (a cleared table starts small again, as CPython's dict does).
            let (entries, index) = (std::mem::take(&mut self.entries), std::mem::take(&mut self.index));
            reclaim::drop_later((entries, index, self.regrowth.take()));
        }
        // An index made for the old one's growth (whoever has it, the helper frees it).
        if let Some(ahead) = self.ahead.take() {
            reclaim::drop_later(ahead);
        }
        self.entries.clear();
        self.spare = 0;
        self.index.clear();
        self.regrowth = None;
        self.compaction = None;
        self.live = 0;
    }

    fn slots(&self) -> impl Iterator<Item = &Slot<V>> + '_ {
        self.entries.range(..self.end()).flatten()
    }

    /// Every live entry with its [`Bucket`]'s tag (as a hash: [`Table::find`] needs no
    /// more of one), each once, in no particular order.
    fn tagged_slots(&self) -> impl Iterator<Item = (u64, &Slot<V>)> + '_ {
        let (entries, numbering) = (&self.entries, self.numbering());
        // While the index grows, the buckets it has still to copy are in the old one.
        let not_yet = self
            .regrowth
            .as_deref()
            .into_iter()
            .flat_map(|r| (r.next..r.old.num_buckets()).filter_map(|i| r.old.get_bucket(i)));
        self.index
            .iter()
            .chain(not_yet)
            .filter_map(move |b| Some((b.0 & TAG_BITS, entries.get(numbering.at(*b))?.as_ref()?)))
    }

    /// Does a share of the table's upkeep: copies a few more buckets of a growing
    /// index, takes a compaction a step further, drops a few holes a capture left at the
    /// front. Changes nothing any lookup or iteration sees.
    fn tidy(&mut self) {
        self.upkeep();
        self.drop_oldest_holes(HOLES_STEP);
    }

    /// Every live entry, mutably (a running capture keeps a copy of what it has still
    /// to read first).
    fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot<V>> + '_ {
        if let Some(c) = self.capture.as_deref() {
            for i in c.cursor..c.end {
                self.preserve(i);
            }
        }
        let end = self.end();
        self.entries.range_mut(..end).flatten()
    }

    /// Starts a capture of the entries as they are now; false if one is running.
    fn begin_capture(&mut self) -> bool {
        if self.capture.is_some() {
            return false;
        }
        self.capture = Some(Box::new(Capture { cursor: 0, end: self.end(), before: HashMap::new() }));
        true
    }

    /// Reads out up to `positions` more positions of the running capture, handing each
    /// entry it held to `emit`; true once the capture is over (or none ran).
    fn capture_next(&mut self, positions: usize, mut emit: impl FnMut(&Slot<V>)) -> bool {
        let Table { entries, capture, .. } = self;
        let Some(c) = capture.as_deref_mut() else {
            return true;
        };
        let stop = c.end.min(c.cursor.saturating_add(positions));
        for i in c.cursor..stop {
            let kept = if c.before.is_empty() { None } else { c.before.remove(&i) };
            match kept {
                Some(Some(slot)) => emit(&slot),
                Some(None) => {}
                None => {
                    if let Some(Some(slot)) = entries.get(i) {
                        emit(slot);
                    }
                }
            }
        }
        c.cursor = stop;
        let over = c.cursor >= c.end;
        if over {
            *capture = None;
        }
        over
    }
}

/// Big tables are freed on [`reclaim`]'s helper.
impl<V: Clone + Send + 'static> Table<V> {
    /// Whether freeing the table takes long enough to be [`reclaim`]'s: counted in ring
    /// positions or index buckets, whichever is more (a cleared index keeps its buckets).
    fn is_big(&self) -> bool {
        self.entries.len().max(self.index.num_buckets()) >= reclaim::RECLAIM_FROM
    }

    /// Drops a big table on [`reclaim`]'s helper, leaving an empty one in its place (a
    /// dict's or set's drop: the rest of it then drops here, at once).
    fn drop_big(table: &mut Box<Self>) {
        if table.is_big() {
            reclaim::drop_later(std::mem::take(table));
        }
    }
}

/// An insertion-ordered map from hashable values to values, with Python's key rules.
///
/// Keys must be hashable ([`hash_value`]); every method taking a key returns Python's
/// `TypeError` for an unhashable one. `1`, `1.0` and `True` are the same key.
#[derive(Clone, Default)]
pub struct Dict {
    /// Boxed so that a [`Value`] stays small (32 bytes, not 72): every slot of every
    /// list and dict holds one, and a smaller slot is fewer cache lines per lookup.
    table: Box<Table<Value>>,
}

impl Dict {
    /// An empty dict.
    pub fn new() -> Dict {
        Dict::default()
    }
    /// An empty dict with room for `n` entries.
    pub fn with_capacity(n: usize) -> Dict {
        Dict { table: Box::new(Table::with_capacity(n)) }
    }
    /// A dict from `(key, value)` pairs, later pairs overriding earlier ones (like
    /// Python's `dict(pairs)`); `TypeError` for an unhashable key.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Value, Value)>) -> Result<Dict, WireError> {
        let pairs = pairs.into_iter();
        let mut dict = Dict::with_capacity(pairs.size_hint().0);
        for (k, v) in pairs {
            dict.insert(k, v)?;
        }
        Ok(dict)
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.live()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts loading the entries of `keys` into the cache, for lookups of them soon
    /// after (a pipelined batch's): changes nothing, and costs each key its hash and a
    /// probe of the index. Unhashable keys are skipped.
    pub fn prefetch(&self, keys: impl IntoIterator<Item = impl Borrow<Value>>) {
        self.table.prefetch(keys);
    }
    /// The value under `key` (`TypeError` if `key` is unhashable).
    pub fn get(&self, key: &Value) -> Result<Option<&Value>, WireError> {
        Ok(self.table.get(key)?.map(|s| &s.value))
    }
    /// The stored key equal to `key` and its value (the stored key may differ in type:
    /// looking up `1.0` in `{1: 'a'}` gives the key `1`).
    pub fn get_key_value(&self, key: &Value) -> Result<Option<(&Value, &Value)>, WireError> {
        Ok(self.table.get(key)?.map(|s| (&s.key, &s.value)))
    }
    /// The value under `key`, mutably.
    pub fn get_mut(&mut self, key: &Value) -> Result<Option<&mut Value>, WireError> {
        // (`slot_mut` lets a running capture keep the old value first.)
        let hash = hash_value(key)?;
        let found = self.table.find(hash, key);
        Ok(found.and_then(|i| self.table.slot_mut(i)).map(|s| &mut s.value))
    }
    /// True if `key` is present.
    pub fn contains_key(&self, key: &Value) -> Result<bool, WireError> {
        Ok(self.get(key)?.is_some())
    }
    /// Sets `key` to `value`; an existing key keeps its position. Returns the old value.
    pub fn insert(&mut self, key: Value, value: Value) -> Result<Option<Value>, WireError> {
        self.table.insert(key, value)
    }
    /// Removes `key`, keeping the order of the rest. Returns its value.
    pub fn remove(&mut self, key: &Value) -> Result<Option<Value>, WireError> {
        Ok(self.table.remove(key)?.map(|s| s.value))
    }
    /// Removes `key` and returns the stored key and its value.
    pub fn remove_entry(&mut self, key: &Value) -> Result<Option<(Value, Value)>, WireError> {
        Ok(self.table.remove(key)?.map(|s| (s.key, s.value)))
    }
    /// Removes and returns the most recently inserted entry (Python's `popitem`).
    pub fn pop_last(&mut self) -> Option<(Value, Value)> {
        self.table.pop_last().map(|s| (s.key, s.value))
    }
    /// Removes every entry.
    pub fn clear(&mut self) {
        self.table.clear();
    }
    /// True while the dict's index grows: a few of its buckets are copied with each
    /// change and each [`Dict::tidy`] until it is done.
    pub fn index_growing(&self) -> bool {
        self.table.regrowth.is_some()
    }
    /// Does a small, bounded share of the dict's upkeep (a few buckets of a growing
    /// index copied, a compaction taken a step further, a few holes a capture kept at
    /// the front dropped): its changes do it too, but a dict that is only read after a
    /// change began its index's growth or compaction finishes it only through this.
    /// Nothing any lookup or iteration sees changes.
    pub fn tidy(&mut self) {
        self.table.tidy();
    }
    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> + '_ {
        self.table.slots().map(|s| (&s.key, &s.value))
    }
    /// Keys in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &Value> + '_ {
        self.table.slots().map(|s| &s.key)
    }
    /// Values in insertion order.
    pub fn values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.table.slots().map(|s| &s.value)
    }
    /// Values in insertion order, mutably.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> + '_ {
        self.table.slots_mut().map(|s| &mut s.value)
    }

    /// Starts a *capture*: the entries as they are now (insertion order, [`Dict::len`]
    /// of them), read out later by [`Dict::capture_next`] while the dict goes on
    /// changing. Until it is read out, a change keeps the old contents of the entry it
    /// changes (a copy of the entry, the first time it changes), and entries do not
    /// move. Returns false, and starts nothing, if a capture is running already.
    pub fn begin_capture(&mut self) -> bool {
        self.table.begin_capture()
    }

    /// Reads out the running capture's next `positions` positions (entries, and the
    /// holes deletions left), handing each entry to `emit` in order. Returns true once
    /// every entry was read out (the capture is then over), or if none was running.
    pub fn capture_next(&mut self, positions: usize, mut emit: impl FnMut(&Value, &Value)) -> bool {
        self.table.capture_next(positions, |s| emit(&s.key, &s.value))
    }

    /// Stops a running capture without reading the rest (what it kept is dropped).
    pub fn end_capture(&mut self) {
        self.table.capture = None;
    }

    /// True while a capture runs.
    pub fn capturing(&self) -> bool {
        self.table.capture.is_some()
    }
}

/// Python's `==`: same keys (by [`Value::py_eq`]) mapping to equal values, in any order.
impl PartialEq for Dict {
    fn eq(&self, other: &Dict) -> bool {
        self.len() == other.len()
            && self.table.tagged_slots().all(|(hash, s)| {
                let found = other.table.find_slot(hash, &s.key);
                found.is_some_and(|o| o.value.py_eq(&s.value))
            })
    }
}

impl fmt::Debug for Dict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// An owning iterator over a [`Dict`]'s `(key, value)` pairs in insertion order.
pub struct DictIntoIter {
    inner: std::iter::Flatten<ring::IntoIter<Option<Slot<Value>>>>,
}

impl Iterator for DictIntoIter {
    type Item = (Value, Value);
    fn next(&mut self) -> Option<(Value, Value)> {
        self.inner.next().map(|s| (s.key, s.value))
    }
}

impl IntoIterator for Dict {
    type Item = (Value, Value);
    type IntoIter = DictIntoIter;
    fn into_iter(mut self) -> DictIntoIter {
        DictIntoIter { inner: std::mem::take(&mut self.table.entries).into_iter().flatten() }
    }
}

/// A big dict is freed off the dropping thread (see [`reclaim`]).
impl Drop for Dict {
    fn drop(&mut self) {
        Table::drop_big(&mut self.table);
    }
}

/// A set of hashable values with Python's key rules (iteration order is unspecified,
/// as in Python; today it is insertion order).
#[derive(Clone, Default)]
pub struct Set {
    /// Boxed for the same reason as [`Dict`]'s table.
    table: Box<Table<()>>,
}

impl Set {
    /// An empty set.
    pub fn new() -> Set {
        Set::default()
    }
    /// A set of `values` (duplicates collapse); `TypeError` for an unhashable value.
    pub fn from_values(values: impl IntoIterator<Item = Value>) -> Result<Set, WireError> {
        let values = values.into_iter();
        let mut set = Set { table: Box::new(Table::with_capacity(values.size_hint().0)) };
        for v in values {
            set.insert(v)?;
        }
        Ok(set)
    }
    /// Number of members.
    pub fn len(&self) -> usize {
        self.table.live()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds `value`; false if it was already present (the stored member is kept).
    pub fn insert(&mut self, value: Value) -> Result<bool, WireError> {
        let hash = hash_value(&value)?;
        if self.table.find(hash, &value).is_some() {
            return Ok(false);
        }
        self.table.push(hash, Slot { key: value, value: () })?;
        Ok(true)
    }
    /// True if `value` is a member.
    pub fn contains(&self, value: &Value) -> Result<bool, WireError> {
        Ok(self.table.get(value)?.is_some())
    }
    /// Removes `value`; false if it was absent.
    pub fn remove(&mut self, value: &Value) -> Result<bool, WireError> {
        Ok(self.table.remove(value)?.is_some())
    }
    /// Removes and returns some member (Python's `set.pop`), or `None` when empty.
    pub fn pop(&mut self) -> Option<Value> {
        self.table.pop_last().map(|s| s.key)
    }
    /// Removes every member.
    pub fn clear(&mut self) {
        self.table.clear();
    }
    /// True while the set's index grows, as [`Dict::index_growing`] says of a dict's.
    pub fn index_growing(&self) -> bool {
        self.table.regrowth.is_some()
    }
    /// Does a small, bounded share of the set's upkeep, as [`Dict::tidy`] does.
    pub fn tidy(&mut self) {
        self.table.tidy();
    }
    /// True if every member of `self` is in `other` (Python's `<=`).
    pub fn is_subset(&self, other: &Set) -> bool {
        self.len() <= other.len() && self.table.tagged_slots().all(|(hash, s)| other.table.find(hash, &s.key).is_some())
    }
    /// Members.
    pub fn iter(&self) -> impl Iterator<Item = &Value> + '_ {
        self.table.slots().map(|s| &s.key)
    }
    /// What the set keeps of its members' hashes (the top 32 bits of each), for
    /// order-independent hashing.
    pub(super) fn member_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.table.tagged_slots().map(|(tag, _)| tag >> 32)
    }

    /// Starts a capture of the members as they are now, as [`Dict::begin_capture`]
    /// does for a dict's entries; false if one is running.
    pub fn begin_capture(&mut self) -> bool {
        self.table.begin_capture()
    }

    /// Reads out the running capture's next `positions` positions, handing each
    /// member to `emit` in order; true once it is over (or none ran).
    pub fn capture_next(&mut self, positions: usize, mut emit: impl FnMut(&Value)) -> bool {
        self.table.capture_next(positions, |s| emit(&s.key))
    }

    /// Stops a running capture without reading the rest.
    pub fn end_capture(&mut self) {
        self.table.capture = None;
    }
}

/// Python's `==` on sets: the same members.
impl PartialEq for Set {
    fn eq(&self, other: &Set) -> bool {
        self.len() == other.len() && self.is_subset(other)
    }
}

impl fmt::Debug for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// An owning iterator over a [`Set`]'s members.
pub struct SetIntoIter {
    inner: std::iter::Flatten<ring::IntoIter<Option<Slot<()>>>>,
}

impl Iterator for SetIntoIter {
    type Item = Value;
    fn next(&mut self) -> Option<Value> {
        self.inner.next().map(|s| s.key)
    }
}

impl IntoIterator for Set {
    type Item = Value;
    type IntoIter = SetIntoIter;
    fn into_iter(mut self) -> SetIntoIter {
        SetIntoIter { inner: std::mem::take(&mut self.table.entries).into_iter().flatten() }
    }
}

/// A big set is freed off the dropping thread (see [`reclaim`]).
impl Drop for Set {
    fn drop(&mut self) {
        Table::drop_big(&mut self.table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use proptest::prelude::*;

    thread_local! {
        /// How many growths on this thread took the index made ahead for them.
        pub(super) static AHEAD_TAKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }
    fn keys(d: &Dict) -> String {
        d.keys().map(Value::py_repr).collect::<Vec<_>>().join(",")
    }

    #[test]
    fn one_true_and_one_point_oh_are_one_key() {
        let mut d = Dict::new();
        assert!(d.insert(Value::Int(1), s("int")).unwrap().is_none());
        let old = d.insert(Value::Float(1.0), s("float")).unwrap();
        assert_eq!(old.unwrap().py_str(), "int");
        d.insert(Value::Bool(true), s("bool")).unwrap();
        assert_eq!(d.len(), 1);
        // The first key object stays, with the last value: {1: 'bool'}.
        assert_eq!(Value::Dict(d.clone()).py_repr(), "{1: 'bool'}");
        assert_eq!(d.get(&Value::Float(1.0)).unwrap().unwrap().py_str(), "bool");
        let (k, _) = d.get_key_value(&Value::Bool(true)).unwrap().unwrap();
        assert!(matches!(k, Value::Int(1)));
        assert!(d.contains_key(&Value::Int(1)).unwrap());
        assert!(!d.contains_key(&Value::Int(2)).unwrap());
    }

    #[test]
    fn prefetching_changes_nothing_and_lookups_after_it_find_what_they_would() {
        let mut d = Dict::new();
        for i in 0..2_000 {
            d.insert(s(&format!("key:{i}")), Value::Int(i)).unwrap();
        }
        d.remove(&s("key:7")).unwrap();
        let before = Value::Dict(d.clone());
        let ahead = [s("key:1"), s("key:7"), s("absent"), Value::List(vec![]), Value::Int(3), s("key:1999")];
        d.prefetch(&ahead);
        assert!(Value::Dict(d.clone()).py_eq(&before));
        // In the order prefetched (the hashes kept for them), then in another.
        let found = |d: &Dict| ahead.iter().map(|k| d.get(k).map(|v| v.cloned())).collect::<Vec<_>>();
        let mut fresh = Dict::new();
        for (k, v) in d.iter() {
            fresh.insert(k.clone(), v.clone()).unwrap();
        }
        let expected = found(&fresh);
        assert_eq!(format!("{:?}", found(&d)), format!("{expected:?}"));
        d.prefetch(ahead.iter().rev());
        assert_eq!(d.get(&s("key:1")).unwrap(), Some(&Value::Int(1)));
        assert_eq!(d.get(&s("key:1999")).unwrap(), Some(&Value::Int(1999)));
        assert_eq!(d.get(&s("key:7")).unwrap(), None);
    }

    #[test]
    fn zero_and_negative_zero_are_one_key() {
        let mut d = Dict::new();
        d.insert(Value::Float(-0.0), Value::None).unwrap();
        d.insert(Value::Bool(false), Value::None).unwrap();
        d.insert(Value::Int(0), Value::None).unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn big_numbers_as_keys() {
        let mut d = Dict::new();
        let two_pow_70 = Value::from_bigint(num_bigint::BigInt::from(1u8) << 70u32);
        d.insert(two_pow_70, s("big")).unwrap();
        assert_eq!(d.get(&Value::Float(2f64.powi(70))).unwrap().unwrap().py_str(), "big");
        let n = (1i64 << 53) + 1;
        d.insert(Value::Int(n), s("exact")).unwrap();
        assert!(d.get(&Value::Float(n as f64)).unwrap().is_none());
    }

    #[test]
    fn str_and_bytes_keys_differ() {
        let mut d = Dict::new();
        d.insert(s("a"), Value::Int(1)).unwrap();
        d.insert(Value::Bytes(b"a".to_vec()), Value::Int(2)).unwrap();
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn unhashable_keys_are_type_errors() {
        let mut d = Dict::new();
        let err = d.insert(Value::List(vec![]), Value::None).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        assert_eq!(err.message, "unhashable type: 'list'");
        let err = d.get(&Value::Dict(Dict::new())).unwrap_err();
        assert_eq!(err.message, "unhashable type: 'dict'");
        let err = d.remove(&Value::Tuple(vec![Value::Set(Set::new())])).unwrap_err();
        assert_eq!(err.message, "unhashable type: 'set'");
        let err = Dict::from_pairs([(Value::List(vec![]), Value::None)]).unwrap_err();
        assert_eq!(err.message, "unhashable type: 'list'");
    }

    #[test]
    fn nan_keys_each_make_an_entry() {
        let mut d = Dict::new();
        d.insert(Value::Float(f64::NAN), Value::Int(1)).unwrap();
        d.insert(Value::Float(f64::NAN), Value::Int(2)).unwrap();
        assert_eq!(d.len(), 2);
        assert!(d.get(&Value::Float(f64::NAN)).unwrap().is_none());
        assert!(d.pop_last().is_some());
    }

    #[test]
    fn order_survives_delete_and_reinsert() {
        let mut d = Dict::new();
        for k in ["a", "b", "c", "d"] {
            d.insert(s(k), Value::None).unwrap();
        }
        d.insert(s("b"), Value::Int(2)).unwrap(); // existing: keeps its place
        assert_eq!(keys(&d), "'a','b','c','d'");
        assert_eq!(d.remove(&s("b")).unwrap().unwrap().py_repr(), "2");
        assert!(d.remove(&s("b")).unwrap().is_none());
        assert_eq!(keys(&d), "'a','c','d'");
        d.insert(s("b"), Value::None).unwrap(); // re-inserted: goes last
        assert_eq!(keys(&d), "'a','c','d','b'");
        assert_eq!(d.len(), 4);
        let (k, v) = d.remove_entry(&s("a")).unwrap().unwrap();
        assert_eq!((k.py_repr(), v.py_repr()), ("'a'".into(), "None".into()));
    }

    #[test]
    fn popitem_is_lifo() {
        let mut d = Dict::from_pairs((0..5).map(|i| (Value::Int(i), Value::Int(i * 10)))).unwrap();
        d.remove(&Value::Int(4)).unwrap();
        d.insert(Value::Int(1), Value::Int(-1)).unwrap();
        let (k, v) = d.pop_last().unwrap();
        assert_eq!((k.py_repr(), v.py_repr()), ("3".into(), "30".into()));
        let popped: Vec<String> = std::iter::from_fn(|| d.pop_last()).map(|(k, _)| k.py_repr()).collect();
        assert_eq!(popped, ["2", "1", "0"]);
        assert!(d.pop_last().is_none());
        assert!(d.is_empty());
    }

    #[test]
    fn values_mut_iterators_and_clear() {
        let mut d = Dict::from_pairs((0..3).map(|i| (Value::Int(i), Value::Int(i)))).unwrap();
        for v in d.values_mut() {
            *v = v.py_add(&Value::Int(100)).unwrap();
        }
        *d.get_mut(&Value::Int(0)).unwrap().unwrap() = s("zero");
        let vals: Vec<String> = d.values().map(Value::py_repr).collect();
        assert_eq!(vals, ["'zero'", "101", "102"]);
        let owned: Vec<(Value, Value)> = d.clone().into_iter().collect();
        assert_eq!(owned.len(), 3);
        assert_eq!(format!("{d:?}"), "{Int(0): Str(\"zero\"), Int(1): Int(101), Int(2): Int(102)}");
        d.clear();
        assert!(d.is_empty() && d.iter().next().is_none());
        d.insert(Value::Int(7), Value::None).unwrap();
        assert_eq!(keys(&d), "7");
    }

    /// The simplest possible model of an ordered dict.
    #[derive(Default)]
    struct Model(Vec<(i64, i64)>);

    impl Model {
        fn insert(&mut self, k: i64, v: i64) -> Option<i64> {
            match self.0.iter_mut().find(|(mk, _)| *mk == k) {
                Some(slot) => Some(std::mem::replace(&mut slot.1, v)),
                None => {
                    self.0.push((k, v));
                    None
                }
            }
        }
        fn remove(&mut self, k: i64) -> Option<i64> {
            let i = self.0.iter().position(|(mk, _)| *mk == k)?;
            Some(self.0.remove(i).1)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(i64, i64),
        Remove(i64),
        Pop,
        Tidy,
    }

    /// An int or integral float key as an `i64`.
    fn int(v: &Value) -> i64 {
        match v {
            Value::Float(f) => *f as i64,
            other => other.as_index().unwrap_or(i64::MIN),
        }
    }

    fn check(d: &Dict, m: &Model) {
        let got: Vec<(i64, i64)> = d.iter().map(|(k, v)| (int(k), int(v))).collect();
        assert_eq!(got, m.0);
        assert_eq!(d.len(), m.0.len());
        for (k, v) in &m.0 {
            assert_eq!(d.get(&Value::Float(*k as f64)).unwrap().and_then(Value::as_index), Some(*v));
        }
        for k in (0..KEYS).filter(|k| !m.0.iter().any(|(mk, _)| mk == k)) {
            assert_eq!(d.get(&Value::Int(k)).unwrap(), None, "{k} is absent");
        }
        assert_filed(&d.table);
    }

    /// What [`Regrowth`] promises: the index and the buckets a growth has still to
    /// copy hold exactly one bucket for each live entry, under its key's tag; every
    /// live entry is listed once.
    fn assert_filed<V: Clone>(t: &Table<V>) {
        let waiting = t.regrowth.as_deref().map_or(Vec::new(), |r| {
            (r.next..r.old.num_buckets()).filter_map(|i| r.old.get_bucket(i).copied()).collect()
        });
        let mut filed: Vec<usize> = t.index.iter().chain(&waiting).map(|b| t.numbering().at(*b)).collect();
        filed.sort_unstable();
        let live: Vec<usize> = (0..t.end()).filter(|i| t.entries[*i].is_some()).collect();
        assert!(t.entries.range(t.end()..).all(Option::is_none), "spare room holds nothing");
        assert!(t.end() == 0 || t.entries[t.end() - 1].is_some(), "the ring ends with an entry");
        assert_eq!(filed, live, "each live entry filed once");
        for b in t.index.iter().chain(&waiting) {
            let hash = hash_value(&t.entries[t.numbering().at(*b)].as_ref().unwrap().key).unwrap();
            assert!(b.has_tag_of(hash));
        }
        let mut listed: Vec<usize> =
            t.tagged_slots().map(|(_, s)| t.find(hash_value(&s.key).unwrap(), &s.key).unwrap()).collect();
        listed.sort_unstable();
        assert_eq!(listed.len(), t.live());
        listed.dedup();
        assert_eq!(listed.len(), t.live(), "each live entry listed once");
    }

    /// Tidies `d` until its index's growth is over; how many tidies it took.
    fn finish_growth(d: &mut Dict) -> usize {
        let mut tidies = 0;
        while d.table.regrowth.is_some() {
            d.tidy();
            tidies += 1;
            assert!(tidies < 1_000_000, "tidying ends a growth");
        }
        tidies
    }

    #[test]
    fn compacting_a_table_whose_index_grows_ends_the_growth_first() {
        let mut d = Dict::new();
        let mut n = 0i64;
        while d.table.regrowth.is_none() || n < 1000 {
            finish_growth(&mut d);
            d.insert(Value::Int(n), Value::Int(n)).unwrap();
            n += 1;
        }
        for k in (0..n).step_by(97) {
            d.remove(&Value::Int(k)).unwrap();
        }
        assert!(d.table.regrowth.is_some(), "still growing");
        // Compaction renumbers every entry after the first hole: one index to renumber.
        d.table.compact();
        assert!(d.table.regrowth.is_none());
        assert_filed(&d.table);
        for k in 0..n {
            let expected = (k % 97 != 0).then_some(Value::Int(k));
            assert_eq!(d.get(&Value::Int(k)).unwrap(), expected.as_ref());
        }
    }

    #[test]
    fn a_big_index_grows_a_few_entries_per_change_and_per_tidy() {
        let mut d = Dict::new();
        let mut n = 0i64;
        // Fill until an insert begins a growth of an index of over a thousand entries
        // (the smaller ones, if they grew step by step, are tidied away).
        loop {
            d.insert(Value::Int(n), Value::Int(n)).unwrap();
            n += 1;
            if d.table.regrowth.is_some() {
                if n > 1000 {
                    break;
                }
                finish_growth(&mut d);
            }
        }
        let unfiled = |d: &Dict| d.table.regrowth.as_deref().map_or(0, |r| r.old.num_buckets() - r.next);
        let before = unfiled(&d);
        // The insert that began it copied one step of the old index's buckets.
        let old_buckets = d.table.regrowth.as_deref().unwrap().old.num_buckets();
        assert!(old_buckets > n as usize);
        assert_eq!(before, old_buckets - REGROW_STEP);
        // Each change files a step; so does each tidy, which a dict only read needs.
        d.insert(Value::Int(n), Value::Int(n)).unwrap();
        assert_eq!(unfiled(&d), before - REGROW_STEP);
        d.remove(&Value::Int(n)).unwrap();
        assert_eq!(unfiled(&d), before - 2 * REGROW_STEP);
        d.tidy();
        assert_eq!(unfiled(&d), before - 3 * REGROW_STEP);
        assert_filed(&d.table);
        // Every key is found meanwhile, through whichever index files it.
        for k in 0..n {
            assert_eq!(d.get(&Value::Int(k)).unwrap(), Some(&Value::Int(k)));
        }
        let tidies = finish_growth(&mut d);
        assert_eq!(tidies, (before - 3 * REGROW_STEP).div_ceil(REGROW_STEP));
        assert_filed(&d.table);
        assert!(d.table.index.capacity() >= 2 * n as usize - 2);
        for k in 0..n {
            assert_eq!(d.get(&Value::Int(k)).unwrap(), Some(&Value::Int(k)));
        }
    }

    /// The holes in a table's entry ring.
    fn holes<V: Clone>(t: &Table<V>) -> usize {
        t.end() - t.live()
    }

    #[test]
    fn a_dict_whose_oldest_keys_go_first_leaves_no_holes_to_compact() {
        let (mut d, mut m) = filled(1000);
        let room = d.table.room;
        // Oldest out, newest in; then out of order by two (the second oldest, then
        // the oldest, which takes the hole behind it along).
        for k in 0..10_000 {
            apply(&mut d, &mut m, &Op::Remove(k));
            apply(&mut d, &mut m, &Op::Insert(1000 + k, k));
            assert_eq!(holes(&d.table), 0, "dropped at once");
        }
        for k in (10_000..12_000).step_by(2) {
            apply(&mut d, &mut m, &Op::Remove(k + 1));
            assert_eq!(holes(&d.table), 1);
            apply(&mut d, &mut m, &Op::Remove(k));
            assert_eq!(holes(&d.table), 0, "the hole behind the oldest goes with it");
            apply(&mut d, &mut m, &Op::Insert(1000 + k, k));
            apply(&mut d, &mut m, &Op::Insert(1001 + k, k));
        }
        check(&d, &m);
        // No entry moved (a compaction would have renumbered them from the first) and
        // the ring never grew: the positions went on past 2³² (unit tests start near it).
        assert_eq!(d.table.base, FIRST_POSITION.wrapping_add(12_000));
        assert!(d.table.base < FIRST_POSITION, "counted across the wrap");
        assert_eq!(d.table.room, room);
    }

    #[test]
    fn holes_a_capture_kept_at_the_front_are_dropped_a_few_per_change_after_it() {
        let (mut d, mut m) = filled(800);
        let before = m.0.clone();
        assert!(d.begin_capture());
        let mut read = Vec::new();
        d.capture_next(10, |k, v| read.push((int(k), int(v))));
        // The oldest go while the capture runs: their holes stay (its positions are
        // indexes of the ring), and not enough of them to compact (nor is the ring
        // 15/16 full, where the insert below would begin a compaction).
        assert!(d.table.end() * 16 < d.table.room as usize * 15);
        for k in 0..300 {
            apply(&mut d, &mut m, &Op::Remove(k));
        }
        assert_eq!(holes(&d.table), 300);
        let base = d.table.base;
        d.tidy();
        assert_eq!(holes(&d.table), 300, "kept while the capture runs");
        assert!(d.capture_next(usize::MAX, |k, v| read.push((int(k), int(v)))));
        assert_eq!(read, before);
        d.tidy();
        assert_eq!(holes(&d.table), 300 - HOLES_STEP);
        apply(&mut d, &mut m, &Op::Insert(5000, 0));
        apply(&mut d, &mut m, &Op::Remove(5000));
        assert_eq!(holes(&d.table), 300 - 2 * HOLES_STEP, "a delete drops as many");
        assert_eq!(d.table.base, base.wrapping_add(2 * HOLES_STEP as u32));
        check(&d, &m);
        for _ in 0..300 / HOLES_STEP {
            d.tidy();
        }
        assert_eq!(holes(&d.table), 0);
        check(&d, &m);
    }

    /// A dict of the keys `0..n`, each its own value, and its model.
    fn filled(n: i64) -> (Dict, Model) {
        let (mut d, mut m) = (Dict::new(), Model::default());
        for k in 0..n {
            apply(&mut d, &mut m, &Op::Insert(k, k));
        }
        (d, m)
    }

    fn apply(d: &mut Dict, m: &mut Model, op: &Op) {
        match *op {
            Op::Insert(k, v) => {
                // Insert through a float key half of the time: same key.
                let key = if v % 2 == 0 { Value::Int(k) } else { Value::Float(k as f64) };
                let got = d.insert(key, Value::Int(v)).unwrap().and_then(|v| v.as_index());
                assert_eq!(got, m.insert(k, v));
            }
            Op::Remove(k) => {
                let got = d.remove(&Value::Int(k)).unwrap().and_then(|v| v.as_index());
                assert_eq!(got, m.remove(k));
            }
            Op::Tidy => d.tidy(),
            Op::Pop => {
                let got = d.pop_last().map(|(k, v)| (int(&k), int(&v)));
                assert_eq!(got, m.0.pop());
            }
        }
    }

    #[test]
    fn compaction_under_churn_matches_the_model() {
        let (mut d, mut m) = (Dict::new(), Model::default());
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..20_000i64 {
            next_random(&mut x);
            let k = (x % 300) as i64;
            let op = match x % 7 {
                0..=2 => Op::Insert(k, step),
                3..=5 => Op::Remove(k),
                _ => Op::Pop,
            };
            apply(&mut d, &mut m, &op);
            if step % 997 == 0 {
                check(&d, &m);
            }
        }
        check(&d, &m);
        // Delete nearly everything from the front: tombstones get compacted away.
        let (mut d, mut m) = (Dict::new(), Model::default());
        for k in 0..5000 {
            apply(&mut d, &mut m, &Op::Insert(k, k * 2));
        }
        for k in 0..4990 {
            apply(&mut d, &mut m, &Op::Remove(k));
        }
        check(&d, &m);
        assert!(d.table.end() <= 2 * d.len().max(8) + 1, "{}", d.table.end());
    }

    /// Where a table's compaction stands: none, sweeping (how far) or renumbering.
    #[derive(Debug, PartialEq)]
    enum Phase {
        Idle,
        Sweeping(usize),
        Renumbering,
    }

    fn phase<V: Clone>(t: &Table<V>) -> Phase {
        match t.compaction.as_deref() {
            None => Phase::Idle,
            Some(c) if c.renumbered.is_none() => Phase::Sweeping(c.swept),
            Some(_) => Phase::Renumbering,
        }
    }

    /// A xorshift generator: the same numbers every run.
    fn next_random(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn a_big_ring_churned_at_random_compacts_a_few_steps_per_change() {
        let (mut d, mut m) = filled(1500);
        // Room for 2,048: the holes never outnumber the live entries, and each
        // compaction begins when the ring is 15/16 full.
        let room = d.table.room;
        let (mut x, mut next_key) = (0x9e37_79b9_7f4a_7c15u64, 1500i64);
        let (mut sweeps, mut renumberings, mut ends) = (0, 0, 0);
        for step in 0..30_000 {
            let before = phase(&d.table);
            // A random key out, a new one in.
            let victim = m.0[(next_random(&mut x) % m.0.len() as u64) as usize].0;
            apply(&mut d, &mut m, &Op::Remove(victim));
            apply(&mut d, &mut m, &Op::Insert(next_key, step));
            next_key += 1;
            let after = phase(&d.table);
            match (&before, &after) {
                // Two changes: two steps at most.
                (Phase::Sweeping(a), Phase::Sweeping(b)) => assert!(b - a <= 2 * COMPACT_STEP, "{a} → {b}"),
                (Phase::Idle, Phase::Sweeping(_)) => sweeps += 1,
                (Phase::Sweeping(_), Phase::Renumbering) => renumberings += 1,
                (Phase::Renumbering, Phase::Idle) => ends += 1,
                _ => {}
            }
            if before != after || step % 500 == 0 {
                check(&d, &m);
            }
        }
        check(&d, &m);
        assert!(sweeps >= 3 && renumberings >= 3 && ends >= 3, "{sweeps} sweeps, {renumberings}, {ends} ended");
        // Each compaction ended before the ring filled: it never grew.
        assert_eq!(d.table.room, room);
        assert!(holes(&d.table) <= d.len(), "{} holes", holes(&d.table));
    }

    /// A dict of the keys `0..n` (its index's growths finished) whose every `every`th
    /// key from the second on was deleted: not enough holes to begin a compaction.
    fn dict_with_holes(n: i64, every: usize) -> (Dict, Model) {
        let (mut d, mut m) = (Dict::new(), Model::default());
        for k in 0..n {
            apply(&mut d, &mut m, &Op::Insert(k, k));
            finish_growth(&mut d);
        }
        for k in (1..n).step_by(every) {
            apply(&mut d, &mut m, &Op::Remove(k));
        }
        assert_eq!(phase(&d.table), Phase::Idle, "not enough holes to compact");
        (d, m)
    }

    #[test]
    fn a_capture_holds_a_sweep_still_and_reads_what_the_dict_held() {
        let (mut d, mut m) = dict_with_holes(1000, 3);
        d.table.start_compaction();
        for _ in 0..10 {
            d.tidy();
        }
        let Phase::Sweeping(swept) = phase(&d.table) else { panic!("{:?}", phase(&d.table)) };
        assert!(swept > 0);
        check(&d, &m);
        assert!(d.begin_capture());
        let expected = m.0.clone();
        let mut read = Vec::new();
        for k in 0..100 {
            apply(&mut d, &mut m, &Op::Remove(3 * k));
            apply(&mut d, &mut m, &Op::Insert(5000 + k, k));
            d.capture_next(7, |k, v| read.push((int(k), int(v))));
            assert_eq!(phase(&d.table), Phase::Sweeping(swept), "no entry moves while a capture reads");
        }
        check(&d, &m);
        assert!(d.capture_next(usize::MAX, |k, v| read.push((int(k), int(v)))));
        assert_eq!(read, expected);
        // Then the sweep goes on, and the compaction ends.
        let mut tidies = 0;
        while phase(&d.table) != Phase::Idle {
            d.tidy();
            tidies += 1;
            assert!(tidies < 10_000, "a compaction ends");
            if tidies % 16 == 0 {
                check(&d, &m);
            }
        }
        check(&d, &m);
        // Only the holes left where the sweep had been already stay.
        assert!(holes(&d.table) <= 100, "{} holes", holes(&d.table));
    }

    #[test]
    fn a_sweep_whose_ring_shrinks_behind_it_ends_and_the_dict_goes_on() {
        // Every third key deleted, and the keys 1700..2099 but the last: a run of holes
        // at the end of the ring, not enough to begin a compaction.
        let (mut d, mut m) = dict_with_holes(2100, 3);
        for k in 1700..2099 {
            apply(&mut d, &mut m, &Op::Remove(k));
        }
        assert_eq!(phase(&d.table), Phase::Idle);
        d.table.start_compaction();
        while !matches!(phase(&d.table), Phase::Sweeping(s) if s >= 1700) {
            d.tidy();
        }
        check(&d, &m);
        // A capture holds the sweep still, but not the ring's end.
        assert!(d.begin_capture());
        let expected = m.0.clone();
        // Taking the last entry leaves holes from where the sweep is on: they become
        // spare room, and the ring ends below the sweep, which is over.
        apply(&mut d, &mut m, &Op::Pop);
        assert_eq!(phase(&d.table), Phase::Renumbering);
        assert_eq!(d.table.end(), d.len());
        check(&d, &m);
        // New entries are numbered anew (in the spare room, where the capture still
        // reads holes), old ones translated until renumbered.
        for k in 0..500 {
            apply(&mut d, &mut m, &Op::Insert(10_000 + k, k));
            if k % 10 == 0 {
                check(&d, &m);
            }
        }
        assert_eq!(phase(&d.table), Phase::Idle);
        check(&d, &m);
        let mut read = Vec::new();
        assert!(d.capture_next(usize::MAX, |k, v| read.push((int(k), int(v)))));
        assert_eq!(read, expected);
    }

    #[test]
    fn a_small_ring_with_spare_room_compacts_at_once() {
        let (mut d, mut m) = filled(14);
        apply(&mut d, &mut m, &Op::Pop);
        apply(&mut d, &mut m, &Op::Pop);
        assert_eq!(d.table.spare, 2);
        // Holes outnumber the live entries (and 8): a ring this small compacts at once.
        for k in 1..10 {
            apply(&mut d, &mut m, &Op::Remove(k));
        }
        assert_eq!(phase(&d.table), Phase::Idle);
        assert_eq!((holes(&d.table), d.table.spare), (0, 0));
        check(&d, &m);
        apply(&mut d, &mut m, &Op::Insert(100, 1));
        check(&d, &m);
    }

    #[test]
    fn a_copy_leaves_the_spare_room_behind() {
        let (mut d, mut m) = filled(1000);
        for _ in 0..990 {
            apply(&mut d, &mut m, &Op::Pop);
        }
        assert_eq!(d.table.spare, 990);
        let mut copy = d.clone();
        assert_eq!((copy.table.entries.len(), copy.table.spare), (10, 0));
        check(&copy, &m);
        apply(&mut copy, &mut m, &Op::Insert(5000, 1));
        check(&copy, &m);
    }

    #[test]
    fn an_index_that_grows_while_a_compaction_renumbers_it_ends_both() {
        // An index 30 entries short of full, a few of them deleted: it fills long
        // before a walk of its buckets ends.
        let (mut d, mut m) = (Dict::new(), Model::default());
        let mut k = 0;
        while d.table.index.capacity() < 2000 || d.table.index.capacity() - d.table.index.len() > 30 {
            apply(&mut d, &mut m, &Op::Insert(k, k));
            finish_growth(&mut d);
            k += 1;
        }
        for k in (1..k).step_by(200) {
            apply(&mut d, &mut m, &Op::Remove(k));
        }
        d.table.start_compaction();
        let mut tidies = 0;
        while phase(&d.table) != Phase::Renumbering {
            d.tidy();
            tidies += 1;
            assert!(tidies < 10_000);
        }
        // Fill the index until it grows, while the renumbering walks it.
        let mut k = 100_000;
        while d.table.regrowth.is_none() {
            apply(&mut d, &mut m, &Op::Insert(k, k));
            k += 1;
            assert_eq!(phase(&d.table), Phase::Renumbering, "the walk is not over yet");
        }
        check(&d, &m);
        // The growth copies renumbered buckets, and the walk starts over on the new
        // index; the compaction ends once both are done.
        while d.table.regrowth.is_some() || phase(&d.table) != Phase::Idle {
            apply(&mut d, &mut m, &Op::Insert(k, k));
            k += 1;
            if k % 8 == 0 {
                check(&d, &m);
            }
            assert!(k < 200_000, "both end");
        }
        check(&d, &m);
        let base = d.table.base;
        assert!(d.table.index.iter().all(|b| b.at(base) < d.table.end()), "every bucket renumbered");
    }

    #[test]
    fn a_small_index_rehashed_while_a_compaction_renumbers_it_is_renumbered_first() {
        let (mut d, mut m) = filled(10);
        apply(&mut d, &mut m, &Op::Remove(3));
        // A ring with a hole, and a full index small enough to grow at once (the insert
        // rehashes it in place), with more buckets than a step renumbers. (Where
        // hashbrown leaves a tombstone for the removed bucket depends on the process's
        // hash seed: so does the index's room.)
        let mut k = 10;
        while d.table.index.len() < d.table.index.capacity() || d.table.index.num_buckets() <= COMPACT_STEP {
            apply(&mut d, &mut m, &Op::Insert(k, k));
            k += 1;
        }
        assert!(d.table.index.capacity() < REGROW_FROM);
        assert_eq!(holes(&d.table), 1);
        d.table.start_compaction();
        d.table.compact_some(usize::MAX);
        assert_eq!(phase(&d.table), Phase::Renumbering);
        // The insert walks a step of the index, then the index grows.
        apply(&mut d, &mut m, &Op::Insert(k, k));
        k += 1;
        assert!(d.table.index.capacity() > d.table.index.len());
        check(&d, &m);
        while phase(&d.table) != Phase::Idle {
            apply(&mut d, &mut m, &Op::Insert(k, k));
            k += 1;
            assert!(k < 1000, "the compaction ends");
        }
        check(&d, &m);
    }

    #[test]
    fn sets_follow_key_rules() {
        let mut set = Set::new();
        assert!(set.insert(Value::Int(1)).unwrap());
        assert!(!set.insert(Value::Float(1.0)).unwrap());
        assert!(!set.insert(Value::Bool(true)).unwrap());
        assert!(set.insert(s("1")).unwrap());
        assert!(set.contains(&Value::Float(1.0)).unwrap());
        assert!(set.remove(&Value::Bool(true)).unwrap());
        assert!(!set.remove(&Value::Int(1)).unwrap());
        assert_eq!(set.len(), 1);
        let err = set.contains(&Value::List(vec![])).unwrap_err();
        assert_eq!(err.message, "unhashable type: 'list'");
        let a = Set::from_values([Value::Int(1), Value::Int(2)]).unwrap();
        let b = Set::from_values([Value::Float(2.0), Value::Int(1), Value::Int(3)]).unwrap();
        assert!(a.is_subset(&b) && !b.is_subset(&a));
        assert_ne!(a, b);
        assert_eq!(a, Set::from_values([Value::Int(2), Value::Bool(true)]).unwrap());
        let mut c = a.clone();
        assert!(c.pop().is_some() && c.pop().is_some() && c.pop().is_none());
        assert_eq!(a.clone().into_iter().count(), 2);
        assert_eq!(format!("{a:?}"), "{Int(1), Int(2)}");
    }

    /// The keys the property tests change: enough for an index that grows step by step
    /// and for a ring compacted step by step.
    const KEYS: i64 = 80;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..KEYS, any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0..KEYS).prop_map(Op::Remove),
            1 => Just(Op::Pop),
            1 => Just(Op::Tidy),
        ]
    }

    proptest! {
        #[test]
        fn dict_matches_a_reference_model(ops in proptest::collection::vec(op(), 0..300)) {
            let (mut d, mut m) = (Dict::new(), Model::default());
            for op in &ops {
                apply(&mut d, &mut m, op);
            }
            check(&d, &m);
            let rebuilt = Dict::from_pairs(d.clone()).unwrap();
            prop_assert!(rebuilt == d);
        }

        /// A capture reads out exactly the entries the dict held when it began, in
        /// order, whatever changes run between its steps; and the dict itself behaves
        /// as it would with no capture (its model agrees after every step).
        #[test]
        fn a_capture_reads_the_dict_as_it_was_while_it_changes(
            first in proptest::collection::vec(op(), 0..200),
            during in proptest::collection::vec(capture_op(), 0..300),
        ) {
            let (mut d, mut m) = (Dict::new(), Model::default());
            for op in &first {
                apply(&mut d, &mut m, op);
            }
            let mut expected: Option<Vec<(i64, i64)>> = None;
            let mut read: Vec<(i64, i64)> = Vec::new();
            for op in during.iter().chain([CaptureOp::Step(usize::MAX)].iter()) {
                match op {
                    CaptureOp::Change(op) => apply(&mut d, &mut m, op),
                    CaptureOp::Clear => {
                        d.clear();
                        m.0.clear();
                    }
                    CaptureOp::AddToAll(x) => {
                        d.values_mut().for_each(|v| *v = Value::Int(int(v).wrapping_add(*x)));
                        m.0.iter_mut().for_each(|(_, v)| *v = v.wrapping_add(*x));
                    }
                    CaptureOp::Begin => {
                        let began = d.begin_capture();
                        prop_assert_eq!(began, expected.is_none(), "a second capture is refused");
                        if began {
                            expected = Some(m.0.clone());
                            read.clear();
                        }
                    }
                    CaptureOp::Step(n) => {
                        let over = d.capture_next(*n, |k, v| read.push((int(k), int(v))));
                        prop_assert_eq!(over, !d.capturing());
                        if over {
                            if let Some(expected) = expected.take() {
                                prop_assert_eq!(&read, &expected);
                            }
                        } else {
                            prop_assert!(expected.is_some());
                        }
                    }
                }
                check(&d, &m);
            }
            prop_assert!(!d.capturing());
            // After the capture, compaction works again: churn leaves no long tail.
            for k in 0..1000 {
                apply(&mut d, &mut m, &Op::Insert(1000 + k, k));
                apply(&mut d, &mut m, &Op::Remove(1000 + k));
            }
            check(&d, &m);
            prop_assert!(d.table.end() <= 2 * d.len().max(8) + 1, "{}", d.table.end());
        }
    }

    #[derive(Debug, Clone)]
    enum CaptureOp {
        Change(Op),
        Clear,
        AddToAll(i64),
        Begin,
        Step(usize),
    }

    fn capture_op() -> impl Strategy<Value = CaptureOp> {
        prop_oneof![
            8 => op().prop_map(CaptureOp::Change),
            1 => Just(CaptureOp::Clear),
            1 => (-5i64..5).prop_map(CaptureOp::AddToAll),
            2 => Just(CaptureOp::Begin),
            4 => (0usize..6).prop_map(CaptureOp::Step),
        ]
    }

    #[test]
    fn a_set_capture_reads_the_members_as_they_were() {
        let mut set = Set::from_values((0..100).map(Value::Int)).unwrap();
        let before: Vec<i64> = set.iter().map(int).collect();
        assert!(set.begin_capture());
        assert!(!set.begin_capture(), "one at a time");
        let mut read = Vec::new();
        let mut step = 0;
        while !set.capture_next(7, |m| read.push(int(m))) {
            step += 1;
            set.remove(&Value::Int(step * 3 % 100)).unwrap();
            set.insert(Value::Int(1000 + step)).unwrap();
            set.pop();
            if step == 9 {
                set.clear();
            }
        }
        assert_eq!(read, before);
        set.end_capture();
        assert!(set.begin_capture(), "over: a new one can begin");
    }

    #[test]
    fn a_copy_of_a_captured_dict_is_not_captured_and_an_ended_capture_keeps_nothing() {
        let mut d = Dict::from_pairs((0..10).map(|i| (Value::Int(i), Value::Int(i)))).unwrap();
        assert!(d.begin_capture());
        let copy = d.clone();
        assert!(!copy.capturing());
        d.remove(&Value::Int(3)).unwrap();
        d.end_capture();
        assert!(!d.capturing());
        assert!(d.capture_next(100, |_, _| panic!("no capture runs")));
        assert_eq!(d.len(), 9);
        assert_eq!(copy.len(), 10);
    }

    /// A dict or set of [`reclaim::RECLAIM_FROM`] entries or more (or index buckets) is
    /// handed to the helper when dropped or cleared; a small one drops here. What is
    /// left works as before.
    #[test]
    fn big_tables_are_freed_by_the_helper() {
        reclaim::enable();
        let handed = reclaim::handed_over_here;
        let n = reclaim::RECLAIM_FROM as i64;
        let start = handed();
        let mut d = Dict::from_pairs((0..n).map(|i| (Value::Int(i), Value::Int(i)))).unwrap();
        assert_eq!(handed(), start);
        d.clear();
        assert_eq!(handed(), start + 1, "the cleared entries and index");
        assert_eq!((d.len(), d.get(&Value::Int(5)).unwrap()), (0, None));
        d.insert(Value::Int(5), s("five")).unwrap();
        assert_eq!(d.get(&Value::Int(5)).unwrap(), Some(&s("five")));
        drop(d);
        assert_eq!(handed(), start + 1, "a small dict drops here");

        let mut set = Set::from_values((0..n).map(Value::Int)).unwrap();
        set.remove(&Value::Int(7)).unwrap();
        drop(set);
        assert_eq!(handed(), start + 2, "a big set");
        let d = Dict::from_pairs((0..n).map(|i| (Value::Int(i), Value::Int(i)))).unwrap();
        let mut entries = d.into_iter();
        assert_eq!(handed(), start + 3, "the index the entries left");
        assert_eq!(entries.next(), Some((Value::Int(0), Value::Int(0))));
        assert_eq!(entries.count(), n as usize - 1);

        // Short of the mark in entries and in buckets: dropped here.
        let small = Set::from_values((0..n / 4).map(Value::Int)).unwrap();
        assert!(small.table.index.num_buckets() < reclaim::RECLAIM_FROM);
        drop(small);
        assert_eq!(handed(), start + 3, "a smaller set drops here");
    }

    /// Inserts keys 0, 1, 2… (the next is the dict's length, its value the key negated)
    /// until `done` holds for its table.
    fn insert_until(d: &mut Dict, done: &dyn Fn(&Table<Value>) -> bool) {
        while !done(&d.table) {
            assert!(d.len() < 1 << 18, "never came");
            let n = d.len() as i64;
            assert_eq!(d.insert(Value::Int(n), Value::Int(-n)).unwrap(), None);
        }
    }

    /// Every key [`insert_until`] inserted is there, with its value.
    fn holds_what_was_inserted(d: &Dict) -> bool {
        (0..d.len() as i64).all(|i| d.get(&Value::Int(i)).unwrap() == Some(&Value::Int(-i)))
    }

    /// Holds the helper up (busy dropping) until the returned sender is dropped.
    fn hold_helper() -> std::sync::mpsc::Sender<()> {
        struct Held(std::sync::mpsc::Receiver<()>);
        impl Drop for Held {
            fn drop(&mut self) {
                let _ = self.0.recv_timeout(std::time::Duration::from_secs(30));
            }
        }
        let (release, held) = std::sync::mpsc::channel();
        reclaim::drop_later(Held(held));
        release
    }

    /// A big index 15/16 full has the index it grows into made on the helper, and its
    /// growth takes it; a growth that finds it not made yet makes its own. Either way
    /// the dict holds every key, and a clear lets the one made ahead go.
    #[test]
    fn a_big_index_grows_into_one_made_ahead() {
        reclaim::enable();
        let taken = || AHEAD_TAKEN.with(std::cell::Cell::get);
        let mut d = Dict::new();
        let made_ahead = |t: &Table<Value>| t.index.capacity() >= AHEAD_FROM && t.ahead.is_some();
        insert_until(&mut d, &made_ahead);
        let capacity = d.table.index.capacity();
        assert_eq!(d.table.index.len(), capacity - capacity / 16 + 1, "asked for at 15/16 (and inserted)");
        reclaim::helper_caught_up();
        let start = taken();
        insert_until(&mut d, &|t| t.index.capacity() > capacity);
        assert_eq!(taken(), start + 1, "the growth took the index made ahead");
        assert_eq!(d.table.index.capacity(), 2 * capacity);
        assert!(d.table.ahead.is_none() && d.index_growing());

        // The next one, with the helper held up: the growth makes its own.
        insert_until(&mut d, &|t| t.regrowth.is_none());
        let release = hold_helper();
        insert_until(&mut d, &made_ahead);
        let capacity = d.table.index.capacity();
        insert_until(&mut d, &|t| t.index.capacity() > capacity);
        assert_eq!(taken(), start + 1, "not made yet: the growth made its own");
        assert_eq!(d.table.index.capacity(), 2 * capacity);
        drop(release);
        insert_until(&mut d, &|t| t.regrowth.is_none());
        assert!(holds_what_was_inserted(&d));

        insert_until(&mut d, &made_ahead);
        d.clear();
        assert!(d.table.ahead.is_none(), "a clear lets it go");
        reclaim::helper_caught_up();
    }

    /// The index a big growth leaves is a block of its own ([`crate::bigalloc`]), given
    /// back once the growth ends: handed to the helper, which unmaps it a stretch at a
    /// time, while the dict goes on with every key.
    #[test]
    fn a_big_growths_old_index_is_given_back_on_the_helper() {
        reclaim::enable();
        let given = crate::bigalloc::blocks_given_back_here;
        let mut d = Dict::new();
        insert_until(&mut d, &|t| t.index.allocation_size() >= crate::bigalloc::MAP_FROM && t.regrowth.is_none());
        let capacity = d.table.index.capacity();
        insert_until(&mut d, &|t| t.index.capacity() > capacity);
        assert!(d.index_growing(), "a big index grows step by step");
        let (blocks, handed) = (given(), reclaim::handed_over_here());
        insert_until(&mut d, &|t| t.regrowth.is_none());
        assert_eq!(given(), blocks + 1, "the old index went back when the growth ended");
        assert_eq!(reclaim::handed_over_here(), handed + 1, "to the helper");
        reclaim::helper_caught_up();
        assert!(holds_what_was_inserted(&d));
        insert_until(&mut d, &|t| t.index.capacity() > 2 * capacity);
        assert!(holds_what_was_inserted(&d));
    }

    /// A big dict cleared while a capture reads it out: the capture still reads every
    /// entry as it was (the clear moves what it has still to read into it first).
    #[test]
    fn a_big_dict_cleared_during_a_capture_is_read_out_whole() {
        reclaim::enable();
        let n = 40_000;
        let mut d = Dict::from_pairs((0..n).map(|i| (Value::Int(i), Value::Int(-i)))).unwrap();
        assert!(d.begin_capture());
        let mut read = Vec::new();
        assert!(!d.capture_next(100, |k, v| read.push((int(k), int(v)))));
        d.clear();
        while !d.capture_next(1000, |k, v| read.push((int(k), int(v)))) {}
        assert_eq!(read, (0..n).map(|i| (i, -i)).collect::<Vec<_>>());
        d.end_capture();
        assert!(d.is_empty());
    }
}
