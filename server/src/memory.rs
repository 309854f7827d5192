//! The server process's memory: how much it has in use, the samples the memory limit
//! decides on, and giving freed memory back to the operating system.
//!
//! What counts as "in use" is what the allocator has handed out and not had back
//! (glibc's `mallinfo2`: stored values, indexes, connection buffers, the log's tail —
//! Redis's `used_memory`; plus the big dict indexes [`agora_proto::bigalloc`] maps
//! beside it), not the resident size, which stays high after a large
//! drain until freed pages are returned. Where that count is not available (another C
//! library, or a program embedding the server with its own global allocator, which
//! glibc does not see) the resident size stands in for it.
//!
//! A [`MemoryMonitor`] samples on a thread of its own (`agora-memory`), ten times a
//! second while that is cheap: it reports to the engine's [`MemoryGate`] and, when
//! memory was freed, asks the allocator to return it to the system (`malloc_trim`) —
//! so the resident size falls after large objects are dropped. Both walk the
//! allocator's free lists with each arena locked in turn, and every thread that
//! allocates in an arena waits while it is walked: on a heap fragmented into millions
//! of free chunks (values replaced by values of another size, keys deleted) one walk
//! takes tens of milliseconds, and at a fixed pace the thread was busy half the time,
//! its walks in every request's way. So each walk is followed by a pause of at least
//! [`PAUSE_PER_WALK`] times what it took (`Pacing`). It never touches objects or
//! connections.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use agora_proto::native::MemoryStats;

use crate::engine::MemoryGate;

/// How often memory in use is sampled. Between samples the gate counts what it lets
/// in, so this bounds only how soon freed memory is seen.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Memory freed since the least the allocator kept free since the last trim, before
/// it is asked to give it back (a trim returns the pages of free chunks, which still
/// count as free after it: what was free then is no reason to trim again)...
const TRIM_FREE_BYTES: u64 = 32 << 20;

/// ...and no more often than this (trimming walks every free chunk).
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A walk of the allocator's arenas (a sample, a trim) is followed by a pause of at
/// least this many times what it took: walks take at most about 1 % of the time...
pub const PAUSE_PER_WALK: u32 = 100;

/// ...but the pause between samples is never longer than this: the gate counts what
/// it admits meanwhile, so a long pause only delays seeing memory freed.
const MOST_PAUSE: Duration = Duration::from_secs(10);

/// When the monitor thread samples and trims next, from what the last walks took.
#[derive(Debug)]
struct Pacing {
    /// The pause before the next sample.
    sample_pause: Duration,
    /// The least time between trims, and when the last one ended.
    trim_pause: Duration,
    trimmed: Instant,
    /// The least free memory sampled since the last trim (0 before the first: then
    /// whatever is free counts).
    least_free: u64,
}

impl Pacing {
    fn new(now: Instant) -> Pacing {
        Pacing { sample_pause: SAMPLE_EVERY, trim_pause: TRIM_EVERY, trimmed: now, least_free: 0 }
    }

    /// `least`, or [`PAUSE_PER_WALK`] times what a walk `took` if that is longer.
    fn pause(least: Duration, took: Duration) -> Duration {
        least.max(took.saturating_mul(PAUSE_PER_WALK))
    }

    /// A sample that found `free` bytes kept free took `took`, and ended `now`: true if
    /// the allocator should be asked to give memory back now.
    fn sampled(&mut self, free: u64, took: Duration, now: Instant) -> bool {
        self.sample_pause = Pacing::pause(SAMPLE_EVERY, took).min(MOST_PAUSE);
        self.least_free = self.least_free.min(free);
        free >= self.least_free.saturating_add(TRIM_FREE_BYTES) && now >= self.trimmed + self.trim_pause
    }

    /// A trim (with the sample after it, which found `free`) took `took`, and ended `now`.
    fn trimmed(&mut self, free: u64, took: Duration, now: Instant) {
        self.trim_pause = Pacing::pause(TRIM_EVERY, took);
        self.trimmed = now;
        self.least_free = free;
    }
}

/// The smallest `--max-memory` accepted: the server itself needs a few MiB.
pub const MIN_LIMIT: u64 = 16 << 20;

/// Samples the process's memory for the limit and for statistics.
#[derive(Debug)]
pub struct MemoryMonitor {
    gate: Option<Arc<MemoryGate>>,
    in_use: AtomicU64,
    resident: AtomicU64,
    returned: AtomicU64,
}

impl MemoryMonitor {
    /// Starts sampling (once, now, then on the `agora-memory` thread, which ends when
    /// the monitor is dropped). With `limit`, the monitor holds the engine's gate.
    pub fn start(limit: Option<u64>) -> std::io::Result<Arc<MemoryMonitor>> {
        let monitor = Arc::new(MemoryMonitor {
            gate: limit.map(|limit| Arc::new(MemoryGate::new(limit))),
            in_use: AtomicU64::new(0),
            resident: AtomicU64::new(0),
            returned: AtomicU64::new(0),
        });
        monitor.sample();
        let weak: Weak<MemoryMonitor> = Arc::downgrade(&monitor);
        std::thread::Builder::new().name("agora-memory".into()).spawn(move || {
            let mut pacing = Pacing::new(Instant::now());
            loop {
                std::thread::sleep(pacing.sample_pause);
                let Some(monitor) = weak.upgrade() else { return };
                let began = Instant::now();
                let free = monitor.sample();
                let now = Instant::now();
                if pacing.sampled(free, now - began, now) {
                    monitor.give_back();
                    let free = monitor.sample();
                    let end = Instant::now();
                    pacing.trimmed(free, end - now, end);
                }
            }
        })?;
        Ok(monitor)
    }

    /// The gate the engine checks growth against, with a limit.
    pub fn gate(&self) -> Option<&Arc<MemoryGate>> {
        self.gate.as_ref()
    }

    /// Takes a sample and reports it to the gate; returns the freed memory the
    /// allocator keeps.
    fn sample(&self) -> u64 {
        let resident = resident_bytes();
        let heap = heap();
        // Another allocator than glibc's holds most of the memory: count the resident size.
        let in_use = match heap {
            Some(heap) if heap.in_use + heap.free >= resident / 4 => heap.in_use,
            _ => resident,
        };
        self.resident.store(resident, Relaxed);
        self.in_use.store(in_use, Relaxed);
        if let Some(gate) = &self.gate {
            gate.note_in_use(in_use);
        }
        heap.map_or(0, |heap| heap.free)
    }

    /// Asks the allocator to return the free memory it keeps.
    fn give_back(&self) {
        let before = resident_bytes();
        trim();
        let after = resident_bytes();
        self.returned.fetch_add(before.saturating_sub(after), Relaxed);
        self.resident.store(after, Relaxed);
    }

    /// What `agora stats` and the metrics show.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            in_use: self.gate.as_ref().map_or_else(|| self.in_use.load(Relaxed), |gate| gate.in_use()),
            limit: self.gate.as_ref().map(|gate| gate.limit()),
            refused: self.gate.as_ref().map_or(0, |gate| gate.refused()),
            returned: self.returned.load(Relaxed),
        }
    }
}

/// Resident set size from `/proc/self/statm` (Linux); 0 elsewhere.
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// What glibc's allocator has handed out, and what it keeps free.
#[derive(Debug, Clone, Copy)]
struct Heap {
    in_use: u64,
    free: u64,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> Option<Heap> {
    // SAFETY: mallinfo2 has no preconditions; it only reads the allocator's state.
    let info = unsafe { libc::mallinfo2() };
    // Chunks in use in the arenas, plus the ones mapped on their own, plus the big
    // dict indexes mapped beside glibc (which it does not see).
    let in_use = (info.uordblks + info.hblkhd) as u64 + agora_proto::bigalloc::mapped_bytes() as u64;
    Some(Heap { in_use, free: info.fordblks as u64 })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> Option<Heap> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const MIB: u64 = 1 << 20;

    /// Held by the tests that allocate hundreds of MiB and watch memory in use, so that
    /// they do not see each other's.
    static BIG_ALLOCATIONS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn cheap_walks_keep_the_pace_and_slow_ones_are_spaced_out() {
        let start = Instant::now();
        let mut pacing = Pacing::new(start);
        pacing.sampled(0, Duration::from_micros(50), start);
        assert_eq!(pacing.sample_pause, SAMPLE_EVERY, "a cheap sample: ten a second");
        // A fragmented heap: a 76 ms walk is followed by 7.6 s without one.
        pacing.sampled(0, 76 * MS, start);
        assert_eq!(pacing.sample_pause, 7600 * MS);
        pacing.sampled(0, Duration::from_secs(1), start);
        assert_eq!(pacing.sample_pause, MOST_PAUSE, "never longer than the most");
        pacing.sampled(0, MS / 10, start);
        assert_eq!(pacing.sample_pause, SAMPLE_EVERY, "cheap again: back to the pace");
        // A trim of 200 ms: none for 20 s after it.
        pacing.trimmed(0, 200 * MS, start);
        assert!(!pacing.sampled(500 * MIB, MS, start + Duration::from_secs(19)));
        assert!(pacing.sampled(500 * MIB, MS, start + Duration::from_secs(20)));
    }

    #[test]
    fn memory_is_given_back_when_enough_was_freed_since_the_last_trim() {
        let start = Instant::now();
        let later = |s| start + Duration::from_secs(s);
        let mut pacing = Pacing::new(start);
        assert!(!pacing.sampled(31 * MIB, MS, later(5)), "too little free");
        assert!(!pacing.sampled(40 * MIB, MS, start), "enough, but too soon after the start");
        assert!(pacing.sampled(40 * MIB, MS, later(5)), "whatever is free counts before the first trim");
        // Free chunks still count as free after a trim returned their pages.
        pacing.trimmed(400 * MIB, MS, later(5));
        assert!(!pacing.sampled(420 * MIB, MS, later(10)), "nothing new to give back");
        // Reused, then freed again: that is new.
        assert!(!pacing.sampled(100 * MIB, MS, later(11)));
        assert!(pacing.sampled(140 * MIB, MS, later(12)), "40 MiB freed since the least");
    }

    #[test]
    fn a_sample_sees_memory_in_use() {
        let _alone = BIG_ALLOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
        let monitor = MemoryMonitor::start(Some(1 << 40)).unwrap();
        let before = monitor.stats().in_use;
        // Other tests allocate meanwhile: the margins are wide.
        let held = vec![1u8; 256 << 20];
        monitor.sample();
        let during = monitor.stats().in_use;
        assert!(during >= before + (192 << 20), "{before} → {during}");
        assert_eq!(monitor.gate().unwrap().in_use(), during);
        drop(held);
        monitor.sample();
        assert!(monitor.stats().in_use + (128 << 20) < during, "freed memory is no longer in use");
    }

    /// A big dict's index is mapped beside glibc ([`agora_proto::bigalloc`]), which
    /// does not count it: the sample does.
    #[test]
    fn a_big_dict_index_counts_as_in_use() {
        use agora_proto::bigalloc::BigAlloc;
        use allocator_api2::alloc::Allocator;
        let _alone = BIG_ALLOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
        let monitor = MemoryMonitor::start(Some(1 << 40)).unwrap();
        let before = monitor.stats().in_use;
        let layout = std::alloc::Layout::from_size_align(256 << 20, 8).unwrap();
        let block = BigAlloc.allocate(layout).unwrap().cast::<u8>();
        monitor.sample();
        let during = monitor.stats().in_use;
        // Other tests allocate meanwhile: the margins are wide.
        assert!(during >= before + (192 << 20), "{before} → {during}");
        // SAFETY: allocated above with this layout, never used.
        unsafe { BigAlloc.deallocate(block, layout) };
        // Given back on the reclaim helper if a test turned it on: a moment later.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            monitor.sample();
            if monitor.stats().in_use + (128 << 20) < during {
                break;
            }
            assert!(Instant::now() < deadline, "an index given back is no longer in use");
            std::thread::sleep(10 * MS);
        }
    }
}
