//! The memory limit's gate: whether a call that would store more may run.
//!
//! Like Redis's `maxmemory` with `noeviction`, the limit is on the memory the server
//! has in use, and what it refuses is growth: a call declared as growing
//! ([`MethodSpec::grows`](crate::object::MethodSpec)) and the creation of an object.
//! Reads, deletes, pops, acks and everything that ends, gives back or times out
//! always run, so a full server can still be drained.
//!
//! The gate owns only arithmetic. It never measures the process: the server samples
//! the memory in use (`crate::memory`) a few times a second and reports it with
//! [`MemoryGate::note_in_use`]; between two samples the gate adds up what it let in
//! (the size of the arguments it admitted), so a burst of large writes cannot overrun
//! the limit by more than what one sample period's allocations outside stored values
//! take.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use agora_proto::{ErrorCode, WireError};

use crate::config::format_size;

/// What a new object costs before any argument: its table entry, lock and state.
pub const OBJECT_OVERHEAD: u64 = 512;

/// The memory limit and what the gate knows of usage against it.
#[derive(Debug)]
pub struct MemoryGate {
    limit: u64,
    /// The last sample of memory in use.
    in_use: AtomicU64,
    /// Bytes admitted since that sample.
    admitted: AtomicU64,
    refused: AtomicU64,
}

impl MemoryGate {
    /// A gate refusing growth past `limit` bytes.
    pub fn new(limit: u64) -> MemoryGate {
        MemoryGate { limit, in_use: AtomicU64::new(0), admitted: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// A new sample of the memory in use: it already counts what was admitted before.
    pub fn note_in_use(&self, bytes: u64) {
        self.in_use.store(bytes, Relaxed);
        self.admitted.store(0, Relaxed);
    }

    /// The best estimate of memory in use now: the last sample plus what was admitted
    /// since.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Relaxed).saturating_add(self.admitted.load(Relaxed))
    }

    /// How many calls were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Lets in a call that would store about `incoming` bytes, or refuses it with
    /// [`ErrorCode::MemoryLimit`] if that would take usage past the limit.
    pub fn admit(&self, incoming: u64) -> Result<(), WireError> {
        let before = self.admitted.fetch_add(incoming, Relaxed);
        let in_use = self.in_use.load(Relaxed).saturating_add(before);
        if in_use.saturating_add(incoming) <= self.limit {
            return Ok(());
        }
        self.admitted.fetch_sub(incoming, Relaxed);
        self.refused.fetch_add(1, Relaxed);
        Err(WireError::new(
            ErrorCode::MemoryLimit,
            format!(
                "memory limit reached: the server has {} in use of its {} (--max-memory) and this call would store {} more; reads, deletes and calls that remove items still work",
                human(in_use),
                human(self.limit),
                human(incoming)
            ),
        ))
    }
}

/// A size for people: exact units where they fit (`512MiB`), else MiB with a decimal.
fn human(bytes: u64) -> String {
    if bytes < 1 << 20 || bytes % (1 << 20) == 0 {
        format_size(bytes)
    } else {
        format!("{:.1}MiB", bytes as f64 / f64::from(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_until_the_limit_then_refuses_growth() {
        let gate = MemoryGate::new(100 << 20);
        gate.note_in_use(60 << 20);
        gate.admit(30 << 20).unwrap();
        let refused = gate.admit(20 << 20).unwrap_err();
        assert_eq!(refused.code, ErrorCode::MemoryLimit);
        assert!(refused.message.contains("90MiB in use of its 100MiB"), "{}", refused.message);
        assert_eq!((gate.refused(), gate.in_use()), (1, 90 << 20), "a refused call is not counted");
        gate.admit(10 << 20).unwrap();
    }

    #[test]
    fn a_new_sample_replaces_what_was_admitted() {
        let gate = MemoryGate::new(100 << 20);
        gate.note_in_use(99 << 20);
        assert!(gate.admit(2 << 20).is_err());
        // Memory was freed: the next sample lets writes in again.
        gate.note_in_use(10 << 20);
        gate.admit(2 << 20).unwrap();
        assert_eq!(gate.in_use(), 12 << 20);
    }
}
