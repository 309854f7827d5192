//! Prometheus metrics: the counters and histograms the engine updates. Their text
//! exposition and the small HTTP endpoint that serves them (`agora serve --metrics
//! ADDR`) are in [`http`].
//!
//! # The hook
//!
//! Both dialects run every method call through one place, the engine's `Call`
//! command ([`crate::engine`]), and every blocked call holds a guard from
//! [`Engine::waiting`](crate::engine::Engine::waiting) while it waits. Those are the
//! two places that record:
//!
//! Nothing is recorded until an endpoint starts serving ([`MetricsListener::serve`]
//! switches recording on): a server nobody scrapes skips the clock reads and the
//! shared atomic adds on every call.
//!
//! - the `Call` command times the call (taking the object's lock included) and adds
//!   it to its kind's and method's [`MethodMetrics`]: a latency [`Histogram`] (whose
//!   count is the call count), an error count and a parked count; a failure also
//!   counts under its error code. The kind's table is resolved once when the object is created (the object
//!   keeps an `Arc` to it) and the method is found by the index the call's method
//!   lookup already computed, so the hot path costs two clock reads and two relaxed
//!   atomic adds (three for a failure or a parked call) — no lock, no map, no
//!   allocation: some tens of nanoseconds on a call that takes a few hundred inside
//!   the server, where a network round trip takes tens of microseconds.
//! - a parked call holds a [`WaitGuard`] while it waits: the kind's waiter
//!   gauge goes up and down, and the time spent waiting goes into the kind's wait
//!   histogram.
//!
//! Connection and session counts, requests, objects by kind, and memory come from
//! [`Shared::stats`](crate::server::Shared::stats), the same numbers `agora stats` prints.
//! What the `agora-reclaim` thread was handed and has done comes from
//! [`agora_proto::reclaim::progress`].
//!
//! # The endpoint
//!
//! The Prometheus text exposition and the HTTP endpoint that serves it live apart, in
//! [`http`]; this module holds only the counters, which the engine updates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_proto::native::Kind;
use agora_proto::ErrorCode;

use crate::object::MethodSpec;

/// Upper bounds (nanoseconds) of the call-latency buckets: a call runs in
/// microseconds unless it contends for its object's lock.
pub const CALL_BUCKETS_NS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
];

/// Upper bounds (nanoseconds) of the wait-time buckets: how long blocked calls
/// (queue gets, lock acquires, event waits…) waited, from a millisecond to minutes.
pub const WAIT_BUCKETS_NS: &[u64] = &[
    1_000_000,
    10_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    300_000_000_000,
];

/// The error codes counted one by one; any other (future) code counts as the last slot.
const CODES: &[ErrorCode] = &[
    ErrorCode::KeyError,
    ErrorCode::IndexError,
    ErrorCode::ValueError,
    ErrorCode::TypeError,
    ErrorCode::AttributeError,
    ErrorCode::OverflowError,
    ErrorCode::ZeroDivisionError,
    ErrorCode::RuntimeError,
    ErrorCode::StopIteration,
    ErrorCode::Empty,
    ErrorCode::Full,
    ErrorCode::ShutDown,
    ErrorCode::BrokenBarrier,
    ErrorCode::Timeout,
    ErrorCode::NoSuchObject,
    ErrorCode::NoSuchName,
    ErrorCode::NoSuchMethod,
    ErrorCode::WrongKind,
    ErrorCode::LimitExceeded,
    ErrorCode::SessionExpired,
    ErrorCode::ShuttingDown,
    ErrorCode::Unavailable,
    ErrorCode::MemoryLimit,
    ErrorCode::PermissionDenied,
    ErrorCode::Unsupported,
    ErrorCode::Protocol,
    ErrorCode::Internal,
];

/// The method label of calls to a method the kind does not have.
pub const UNKNOWN_METHOD: &str = "_unknown";

/// A histogram with fixed buckets, updated with relaxed atomics.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, plus the overflow (`+Inf`) bucket; not cumulative.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (nanoseconds, ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_ns: AtomicU64::new(0) }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines for `name{labels}`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(&bound) => format!("{}", bound as f64 / 1e9),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Counters of one method of one kind. The number of calls is the latency histogram's
/// count (one atomic less per call).
#[derive(Debug)]
pub struct MethodMetrics {
    name: &'static str,
    errors: AtomicU64,
    parked: AtomicU64,
    latency: Histogram,
}

impl MethodMetrics {
    fn new(name: &'static str) -> MethodMetrics {
        MethodMetrics {
            name,
            errors: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            latency: Histogram::new(CALL_BUCKETS_NS),
        }
    }

    /// Calls so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.latency.count()
    }
}

/// What became of a call, for [`KindMetrics::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It answered at once.
    Ready,
    /// It blocked (its wait is measured by a [`WaitGuard`]).
    Parked,
    /// It failed with this code.
    Failed(ErrorCode),
}

/// Every counter of one object kind. Objects keep an `Arc` to their kind's.
#[derive(Debug)]
pub struct KindMetrics {
    kind: Kind,
    /// The server's switch (see [`Metrics::start_recording`]).
    recording: Arc<AtomicBool>,
    /// The method table these counters were laid out from (index = position).
    table: &'static [MethodSpec],
    methods: Box<[MethodMetrics]>,
    unknown: MethodMetrics,
    errors_by_code: Box<[AtomicU64]>,
    waiting: AtomicU64,
    wait: Histogram,
}

impl KindMetrics {
    fn new(kind: Kind, table: &'static [MethodSpec], recording: Arc<AtomicBool>) -> KindMetrics {
        KindMetrics {
            kind,
            recording,
            table,
            methods: table.iter().map(|m| MethodMetrics::new(m.name)).collect(),
            unknown: MethodMetrics::new(UNKNOWN_METHOD),
            errors_by_code: (0..=CODES.len()).map(|_| AtomicU64::new(0)).collect(),
            waiting: AtomicU64::new(0),
            wait: Histogram::new(WAIT_BUCKETS_NS),
        }
    }

    /// True once an endpoint serves these numbers; until then calls are not timed.
    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// The counters of `method`, which the object found at `index` of its own method
    /// table `methods` (`None`: the kind has no such method).
    pub fn method(&self, methods: &'static [MethodSpec], index: Option<usize>, method: &str) -> &MethodMetrics {
        let found = match index {
            // The usual case: the object's table is the one the counters were laid out from.
            Some(i) if std::ptr::eq(methods, self.table) => self.methods.get(i),
            _ => self.methods.iter().find(|m| m.name == method),
        };
        found.unwrap_or(&self.unknown)
    }

    /// Records one call of `method` that took `elapsed`.
    pub fn record(&self, method: &MethodMetrics, elapsed: Duration, outcome: CallOutcome) {
        method.latency.observe(elapsed);
        match outcome {
            CallOutcome::Ready => {}
            CallOutcome::Parked => {
                method.parked.fetch_add(1, Ordering::Relaxed);
            }
            CallOutcome::Failed(code) => {
                method.errors.fetch_add(1, Ordering::Relaxed);
                let slot = CODES.iter().position(|&c| c == code).unwrap_or(CODES.len());
                self.errors_by_code[slot].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one blocked call until the guard drops, then records how long it waited.
    pub fn waiting(self: &Arc<Self>) -> WaitGuard {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        WaitGuard { kind: self.clone(), since: Instant::now() }
    }

    /// Blocked calls waiting now.
    pub fn waiters(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Held while a blocked call waits (see [`KindMetrics::waiting`]).
#[derive(Debug)]
pub struct WaitGuard {
    kind: Arc<KindMetrics>,
    since: Instant,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.kind.waiting.fetch_sub(1, Ordering::Relaxed);
        self.kind.wait.observe(self.since.elapsed());
    }
}

/// The metrics of one server: a table of per-kind counters, filled as kinds are first
/// used. Lives in the engine's object table.
#[derive(Debug, Default)]
pub struct Metrics {
    kinds: Mutex<BTreeMap<Kind, Arc<KindMetrics>>>,
    /// Off until an endpoint serves the numbers; every kind's counters share it.
    recording: Arc<AtomicBool>,
}

impl Metrics {
    /// Starts timing and counting calls (an endpoint now serves them).
    pub fn start_recording(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    /// The counters of `kind`, laid out from its method table (made on first use; called
    /// when an object is created, never per call).
    pub fn kind(&self, kind: &Kind, table: &'static [MethodSpec]) -> Arc<KindMetrics> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds
            .entry(kind.clone())
            .or_insert_with(|| Arc::new(KindMetrics::new(kind.clone(), table, self.recording.clone())))
            .clone()
    }

    fn snapshot(&self) -> Vec<Arc<KindMetrics>> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

pub mod http;

pub use http::{render, MetricsListener};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let h = Histogram::new(&[1_000, 10_000]);
        h.observe(Duration::from_nanos(500));
        h.observe(Duration::from_nanos(1_000));
        h.observe(Duration::from_nanos(5_000));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x", "k=\"v\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "x_bucket{k=\"v\",le=\"0.000001\"} 2");
        assert_eq!(lines[1], "x_bucket{k=\"v\",le=\"0.00001\"} 3");
        assert_eq!(lines[2], "x_bucket{k=\"v\",le=\"+Inf\"} 4");
        assert_eq!(lines[3], "x_sum{k=\"v\"} 1.0000065");
        assert_eq!(lines[4], "x_count{k=\"v\"} 4");
    }

    #[test]
    fn calls_land_on_their_method_or_the_unknown_slot() {
        static TABLE: [MethodSpec; 2] = [MethodSpec::new("get", &[]), MethodSpec::new("put", &["item"])];
        let metrics = Metrics::default();
        let k = metrics.kind(&Kind::Queue, &TABLE);
        let put = k.method(&TABLE, Some(1), "put");
        assert_eq!(put.name, "put");
        k.record(put, Duration::from_micros(3), CallOutcome::Ready);
        k.record(k.method(&TABLE, None, "frob"), Duration::ZERO, CallOutcome::Failed(ErrorCode::NoSuchMethod));
        assert_eq!(k.methods[1].calls(), 1);
        assert_eq!(k.unknown.calls(), 1);
        assert_eq!(k.unknown.errors.load(Ordering::Relaxed), 1);
        assert!(Arc::ptr_eq(&k, &metrics.kind(&Kind::Queue, &TABLE)), "one table per kind");
        {
            let _w = k.waiting();
            assert_eq!(k.waiters(), 1);
        }
        assert_eq!((k.waiters(), k.wait.count()), (0, 1));
    }

    #[test]
    fn calls_are_recorded_only_once_an_endpoint_serves_them() {
        static TABLE: [MethodSpec; 1] = [MethodSpec::new("get", &[])];
        let metrics = Metrics::default();
        let before = metrics.kind(&Kind::Dict, &TABLE);
        assert!(!before.recording(), "a server without an endpoint must not pay for timing");
        metrics.start_recording();
        assert!(before.recording(), "kinds made before the switch see it too");
        assert!(metrics.kind(&Kind::List, &TABLE).recording());
    }
}
