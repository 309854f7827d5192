//! The allocator of buffers so big that giving them back stalls whoever waits on the
//! process's memory map: a big dict's index (144 MB at 8 million keys).
//!
//! glibc maps a block that big on its own and frees it with one `munmap`, which holds
//! the process's memory-map lock, to write, while it frees every page: 6–9 ms for that
//! index. Every thread that meanwhile touches a page for the first time or changes the
//! map (grows its heap, maps a block) waits for it, so even on
//! [`reclaim`](crate::reclaim)'s helper thread the free stalls the thread that serves
//! the dict (a growing dict does both all the time). [`BigAlloc`] maps blocks of
//! [`MAP_FROM`] bytes or more itself and frees their pages [`FREE_STRETCH`] bytes at a
//! time with `madvise(MADV_DONTNEED)`, which holds that lock only to read: page faults
//! go on meanwhile, and a change of the map waits for one stretch at most. The `munmap`
//! that ends it has no page left to free. (Freed in stretches of `munmap` instead, the
//! helper took the lock again and again ahead of the thread waiting for it: the dict's
//! thread still waited 7 ms.) This runs on the helper when the hand-over is on
//! ([`reclaim::drop_later`](crate::reclaim::drop_later)), where the block is freed when
//! it is off. Smaller blocks are the global allocator's. What it has mapped is counted
//! ([`mapped_bytes`]), since the C library's counts of memory in use do not see it.
//!
//! This module owns those mappings and nothing else: whoever allocates through it (the
//! dict's table) sees an ordinary allocator.

use std::alloc::Layout;
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// The smallest block mapped by [`BigAlloc`] itself: freeing a smaller one takes
/// ~0.2 ms or less, not worth a mapping of its own. (512 KiB in this crate's unit
/// tests, so that their dicts of tens of thousands of keys reach it.)
#[cfg(not(test))]
pub const MAP_FROM: usize = 4 << 20;
/// The smallest block mapped by [`BigAlloc`] itself (lowered for the unit tests).
#[cfg(test)]
pub const MAP_FROM: usize = 512 << 10;

/// How much one `madvise` frees: about 0.1 ms of holding the memory-map lock.
pub const FREE_STRETCH: usize = 2 << 20;

/// An allocator ([`allocator_api2`]'s, which hashbrown's tables take) that maps blocks
/// of [`MAP_FROM`] bytes or more itself and frees their pages a stretch at a time (see
/// the module's docs); smaller blocks go to the global allocator.
///
/// With the hand-over off (a program that never called
/// [`reclaim::enable`](crate::reclaim::enable)), a big block is unmapped before its
/// deallocation returns:
///
/// ```
/// use agora_proto::bigalloc::{BigAlloc, MAP_FROM};
/// use allocator_api2::alloc::Allocator;
/// use std::alloc::Layout;
///
/// let layout = Layout::from_size_align(MAP_FROM, 8).unwrap();
/// let block = BigAlloc.allocate(layout).unwrap();
/// // Mapped pages, zeroed, page-aligned, and the caller's to write.
/// let start = block.cast::<u8>();
/// assert_eq!(start.as_ptr() as usize % 4096, 0);
/// unsafe {
///     assert_eq!(*start.as_ptr().add(MAP_FROM - 1), 0);
///     start.as_ptr().write_bytes(0xff, MAP_FROM);
///     BigAlloc.deallocate(start, layout);
/// }
/// assert_eq!(agora_proto::reclaim::handed_over_here(), 0);
/// assert!(!agora_proto::bigalloc::is_mapped(start.as_ptr() as usize, MAP_FROM));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BigAlloc;

/// Bytes [`BigAlloc`] has mapped and not unmapped yet ([`mapped_bytes`]).
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of blocks [`BigAlloc`] has mapped itself and not given back to the system
/// yet: memory in use that the C library's counts (`mallinfo2`) do not see, which the
/// server adds to them. A block deallocated counts until it is unmapped.
///
/// ```
/// use agora_proto::bigalloc::{mapped_bytes, BigAlloc, MAP_FROM};
/// use allocator_api2::alloc::Allocator;
/// use std::alloc::Layout;
///
/// let before = mapped_bytes();
/// let layout = Layout::from_size_align(MAP_FROM + 1, 8).unwrap();
/// let block = BigAlloc.allocate(layout).unwrap().cast::<u8>();
/// assert!(mapped_bytes() >= before + MAP_FROM + 1, "counted whole pages");
/// unsafe { BigAlloc.deallocate(block, layout) };
/// assert_eq!(mapped_bytes(), before);
/// ```
pub fn mapped_bytes() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

thread_local! {
    /// How many mapped blocks this thread has deallocated ([`blocks_given_back_here`]).
    static GIVEN_BACK: Cell<u64> = const { Cell::new(0) };
}

/// How many blocks of its own [`BigAlloc`] has been given back on the calling thread
/// (handed over or unmapped in place): what a test checks after a dict's index is
/// replaced (a count of its own thread's, so that tests running at once do not see
/// each other's).
#[doc(hidden)]
pub fn blocks_given_back_here() -> u64 {
    GIVEN_BACK.with(Cell::get)
}

/// Whether every page from `start` for `len` bytes is mapped in this process: what a
/// test checks after a block is given back. `start` must be page-aligned.
#[doc(hidden)]
pub fn is_mapped(start: usize, len: usize) -> bool {
    let pages = len.div_ceil(page_size());
    let mut resident = vec![0u8; pages];
    // SAFETY: `mincore` only reads the process's page tables, writing one byte per page
    // into `resident`, which has room for all of them; it fails (ENOMEM) if any page of
    // the range is not mapped.
    unsafe { libc::mincore(start as *mut libc::c_void, len, resident.as_mut_ptr()) == 0 }
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: `sysconf` has no preconditions.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096))
}

/// Whether a block of `layout` is one [`BigAlloc`] maps itself (a mapping is aligned
/// to a page: a block asking for more goes to the global allocator).
fn maps(layout: &Layout) -> bool {
    layout.size() >= MAP_FROM && layout.align() <= page_size()
}

/// The pages that hold a block of `size` bytes.
fn mapping_len(size: usize) -> usize {
    size.div_ceil(page_size()) * page_size()
}

// SAFETY: a block is either the global allocator's (allocated and deallocated there,
// by the same test of its layout) or a mapping of its own pages that nothing else
// hands out, valid until it is deallocated; `BigAlloc` has no state, so any copy of it
// frees what another allocated.
unsafe impl Allocator for BigAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !maps(&layout) {
            return Global.allocate(layout);
        }
        // SAFETY: a new private anonymous mapping: no address asked for, no file.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len(layout.size()),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(AllocError);
        }
        MAPPED.fetch_add(mapping_len(layout.size()), Ordering::Relaxed);
        let start = NonNull::new(start.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(start, layout.size()))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match maps(&layout) {
            // A new anonymous mapping reads as zeros already.
            true => self.allocate(layout),
            false => Global.allocate_zeroed(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if !maps(&layout) {
            // SAFETY: the caller's: `ptr` was allocated with this layout, which sent it
            // to the global allocator.
            return unsafe { Global.deallocate(ptr, layout) };
        }
        GIVEN_BACK.with(|n| n.set(n.get() + 1));
        crate::reclaim::drop_later(Mapping { start: ptr.as_ptr() as usize, len: mapping_len(layout.size()) });
    }
}

/// Pages [`BigAlloc`] mapped for a block that was deallocated: freed a stretch at a time
/// when dropped, then unmapped. (An address, not a pointer: nothing reads the pages any
/// more, and the drop may run on another thread.)
struct Mapping {
    start: usize,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut done = 0;
        while done < self.len {
            let stretch = FREE_STRETCH.min(self.len - done);
            #[cfg(test)]
            tests::note_freed(self.start, stretch);
            // SAFETY: these pages were mapped by `BigAlloc::allocate` for a block that
            // has been deallocated: nothing reads or writes them any more.
            let freed =
                unsafe { libc::madvise((self.start + done) as *mut libc::c_void, stretch, libc::MADV_DONTNEED) };
            debug_assert_eq!(freed, 0, "madvise of a block's own pages");
            done += stretch;
        }
        // SAFETY: as above; and nothing else unmaps them.
        let unmapped = unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
        debug_assert_eq!(unmapped, 0, "munmap of a block's own pages");
        MAPPED.fetch_sub(self.len, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reclaim;
    use std::sync::Mutex;

    /// Every stretch a [`Mapping`] freed: its block's start and the stretch's length
    /// (the process's, since the helper's drops are seen from the test's thread).
    static FREED: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    pub(super) fn note_freed(start: usize, len: usize) {
        FREED.lock().unwrap().push((start, len));
    }

    /// The stretches blocks at `start` were freed in, in order, and forgets them.
    fn take_stretches_of(start: usize) -> Vec<usize> {
        let mut freed = FREED.lock().unwrap();
        let of_start = freed.iter().filter(|(s, _)| *s == start).map(|(_, len)| *len).collect();
        freed.retain(|(s, _)| *s != start);
        of_start
    }

    #[test]
    fn a_big_block_is_mapped_and_given_back_on_the_helper() {
        reclaim::enable();
        // Several stretches and a part of one.
        let size = 2 * FREE_STRETCH + 3 * page_size() + 5;
        let layout = Layout::from_size_align(size, 16).unwrap();
        let block = BigAlloc.allocate(layout).unwrap();
        let start = block.cast::<u8>().as_ptr();
        assert_eq!(start as usize % page_size(), 0);
        assert!(is_mapped(start as usize, mapping_len(size)));
        // SAFETY: the block's `size` bytes are the test's.
        unsafe {
            start.write_bytes(7, size);
            assert_eq!(*start.add(size - 1), 7);
        }
        // Earlier blocks mapped here (by other tests) are forgotten: while this one is,
        // no other can be, and its stretches are noted before it is unmapped.
        take_stretches_of(start as usize);
        let (handed, given) = (reclaim::handed_over_here(), blocks_given_back_here());
        // SAFETY: allocated above with this layout, no longer used.
        unsafe { BigAlloc.deallocate(NonNull::new(start).unwrap(), layout) };
        assert_eq!(reclaim::handed_over_here(), handed + 1, "the unmapping went to the helper");
        assert_eq!(blocks_given_back_here(), given + 1);
        reclaim::helper_caught_up();
        // Every stretch went, the last, partial one too.
        let last = mapping_len(size) - 2 * FREE_STRETCH;
        let stretches = take_stretches_of(start as usize);
        assert!(stretches.starts_with(&[FREE_STRETCH, FREE_STRETCH, last]), "{stretches:?}");
    }

    /// A block the system will not map is an allocation error (the caller's to handle:
    /// hashbrown's tables abort as on any failed allocation), never a bad pointer.
    #[test]
    fn a_block_the_system_cannot_map_is_an_error() {
        let layout = Layout::from_size_align(1 << 60, 8).unwrap();
        assert!(BigAlloc.allocate(layout).is_err());
        assert!(BigAlloc.allocate_zeroed(layout).is_err());
    }

    #[test]
    fn a_small_block_or_one_aligned_past_a_page_is_the_global_allocators() {
        reclaim::enable();
        for layout in [
            Layout::from_size_align(MAP_FROM - 1, 8).unwrap(),
            Layout::from_size_align(MAP_FROM, 2 * page_size()).unwrap(),
        ] {
            let block = BigAlloc.allocate_zeroed(layout).unwrap().cast::<u8>();
            // SAFETY: the block's bytes are the test's, zeroed.
            unsafe {
                assert_eq!(*block.as_ptr().add(layout.size() - 1), 0);
                assert_eq!(block.as_ptr() as usize % layout.align(), 0);
            }
            let given = blocks_given_back_here();
            // SAFETY: allocated above with this layout.
            unsafe { BigAlloc.deallocate(block, layout) };
            assert_eq!(blocks_given_back_here(), given, "a global block is not one of its own");
        }
    }
}
