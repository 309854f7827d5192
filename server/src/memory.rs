//! The server process's memory: how much it has in use, the samples the memory limit
//! decides on, and giving freed memory back to the operating system.
//!
//! What counts as "in use" is what the allocator has handed out and not had back
//! (glibc's `mallinfo2`: stored values, indexes, connection buffers, the log's tail —
//! Redis's `used_memory`), not the resident size, which stays high after a large
//! drain until freed pages are returned. Where that count is not available (another C
//! library, or a program embedding the server with its own global allocator, which
//! glibc does not see) the resident size stands in for it.
//!
//! A [`MemoryMonitor`] samples on a thread of its own (`agora-memory`), a few times a
//! second: it reports to the engine's [`MemoryGate`] and, when the allocator keeps a
//! lot of freed memory, asks it to return that to the system (`malloc_trim`) — so the
//! resident size falls after large objects are dropped. It never touches objects or
//! connections.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use agora_proto::native::MemoryStats;

use crate::engine::MemoryGate;

/// How often memory in use is sampled. Between samples the gate counts what it lets
/// in, so this bounds only how soon freed memory is seen.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Freed memory the allocator may keep before it is asked to give it back...
const TRIM_FREE_BYTES: u64 = 32 << 20;

/// ...and no more often than this (trimming walks every free chunk).
const TRIM_EVERY: Duration = Duration::from_secs(1);

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
            let mut last_trim = Instant::now();
            loop {
                std::thread::sleep(SAMPLE_EVERY);
                let Some(monitor) = weak.upgrade() else { return };
                if monitor.sample() >= TRIM_FREE_BYTES && last_trim.elapsed() >= TRIM_EVERY {
                    last_trim = Instant::now();
                    monitor.give_back();
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
    // Chunks in use in the arenas, plus the ones mapped on their own.
    let in_use = (info.uordblks + info.hblkhd) as u64;
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

    #[test]
    fn a_sample_sees_memory_in_use() {
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
}
