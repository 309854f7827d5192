//! Latency recording and what a run reports.
//!
//! Latencies go into HDR histograms (nanoseconds, 3 significant digits, 1 ns to
//! 60 s): constant memory however many requests a run makes, percentiles exact to
//! 0.1 %, and histograms from many tasks merge losslessly. Workers record into a local
//! buffer and flush it into one of a few shared shards, so a thousand connections
//! neither hold a thousand histograms nor contend on one lock.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Shards of the shared histogram (a few per core is plenty).
const SHARDS: usize = 16;
/// Samples a worker buffers before flushing them into its shard.
const BUFFER: usize = 64;
/// The largest latency recorded exactly; longer ones count as this.
const HIGHEST_NS: u64 = 60_000_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds")
}

/// The histogram every worker of one test records into.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    /// Empty.
    pub fn new() -> Latencies {
        Latencies { shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect() }
    }

    /// A recorder for worker number `worker`.
    pub fn recorder(&self, worker: usize) -> Recorder<'_> {
        Recorder { shard: &self.shards[worker % SHARDS], buffer: Vec::with_capacity(BUFFER) }
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*shard).expect("same bounds");
        }
        all
    }
}

/// Nanoseconds on the monotonic clock, for timing one request after another: the
/// typed workers read it once per request, and `Instant`'s arithmetic (a `Duration`
/// normalised from two `timespec`s, then turned back into nanoseconds) cost more per
/// sample than the clock read itself.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives here;
    // CLOCK_MONOTONIC is supported everywhere agora builds.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// `d` in whole nanoseconds, as the histogram counts them (a latency past ~584 years
/// saturates).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One worker's buffered view of [`Latencies`]; flushes when dropped.
pub struct Recorder<'a> {
    shard: &'a Mutex<Histogram<u64>>,
    buffer: Vec<u64>,
}

impl Recorder<'_> {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(nanos(latency));
    }

    /// Records one latency of `ns` nanoseconds (at least 1: the histogram's floor).
    pub fn record_ns(&mut self, ns: u64) {
        self.buffer.push(ns.max(1));
        if self.buffer.len() == BUFFER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut shard = self.shard.lock().unwrap_or_else(|e| e.into_inner());
        for &ns in &self.buffer {
            shard.saturating_record(ns);
        }
        self.buffer.clear();
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyUs {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest request.
    pub max: f64,
}

impl LatencyUs {
    /// Percentiles of `h` (nanoseconds) in microseconds.
    pub fn of(h: &Histogram<u64>) -> LatencyUs {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return LatencyUs { mean: 0.0, p50: 0.0, p99: 0.0, p999: 0.0, max: 0.0 };
        }
        LatencyUs {
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// The outcome of one test.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The test's name (`set`, `get`, `echo`…).
    pub test: String,
    /// What was measured, in words.
    pub what: String,
    /// Requests completed (one latency sample each).
    pub requests: u64,
    /// Requests that failed (a worker stops at its first failure).
    pub errors: u64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// True if the time limit stopped the test before all requests were made.
    pub timed_out: bool,
    /// Wall-clock seconds from the first request to the last reply.
    pub seconds: f64,
    /// Requests completed per second.
    pub requests_per_sec: f64,
    /// Latency of one request (for `queue`, `lock` and `event`, of one iteration).
    pub latency_us: LatencyUs,
    /// Server resident memory before the test, in bytes (from `stats`; absent for the floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory_before: Option<u64>,
    /// Server resident memory after the test, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory_after: Option<u64>,
    /// For `fill`: resident memory added per dict entry, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_entry: Option<f64>,
}

/// Idle connections held during the run, and what they cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Idle connections asked for.
    pub requested: usize,
    /// Idle connections actually open.
    pub connected: usize,
    /// Seconds it took to open them.
    pub connect_seconds: f64,
    /// Server resident memory before opening them, in bytes.
    pub server_memory_before: u64,
    /// Server resident memory with all of them open, in bytes.
    pub server_memory_after: u64,
    /// Resident memory per idle connection, in bytes.
    pub bytes_per_connection: f64,
    /// Sessions the server counted with them open.
    pub server_sessions: u64,
}

/// Everything one `agora bench` run measured (the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the server was (`tcp 127.0.0.1:50000`, `unix /path`, `embedded tcp …`).
    pub server: String,
    /// `tcp` or `unix`.
    pub transport: String,
    /// Connections (`-c`).
    pub clients: usize,
    /// Requests per test (`-n`).
    pub requests: u64,
    /// Requests in flight per connection (`-P`).
    pub pipeline: usize,
    /// Value size in bytes (`-d`).
    pub data_size: usize,
    /// Key space (`-r`).
    pub keyspace: u64,
    /// Client runtime threads (`--threads`).
    pub threads: usize,
    /// `typed` (the agora client library) or `raw` (`--raw`: bare, like redis-benchmark's).
    pub client: String,
    /// Idle connections held during the tests (`--idle`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    /// One entry per test, in the order run.
    pub results: Vec<TestResult>,
}

/// Prints one test's result for people, like `redis-benchmark`.
pub fn print_result(r: &TestResult, report: &Report) {
    println!("====== {} ======", r.test);
    println!("  {}", r.what);
    println!(
        "  {} requests in {:.3} s, {} clients, pipeline {}, {}-byte values, keyspace {}",
        r.requests, r.seconds, report.clients, report.pipeline, report.data_size, report.keyspace
    );
    if r.errors > 0 {
        println!("  {} errors; first: {}", r.errors, r.first_error.as_deref().unwrap_or("?"));
    }
    if r.timed_out {
        println!("  stopped by the time limit");
    }
    println!("  throughput: {:.1} requests/s", r.requests_per_sec);
    let l = &r.latency_us;
    println!(
        "  latency (µs): p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1})",
        l.p50, l.p99, l.p999, l.max, l.mean
    );
    if let Some(per) = r.bytes_per_entry {
        println!("  server memory: {:.1} bytes per entry", per);
    }
    println!();
}

/// Prints the idle-connection report for people.
pub fn print_idle(idle: &IdleReport) {
    println!("====== idle connections ======");
    println!(
        "  {} of {} connected in {:.2} s; server sessions {}",
        idle.connected, idle.requested, idle.connect_seconds, idle.server_sessions
    );
    println!(
        "  server memory {:.1} MiB -> {:.1} MiB: {:.0} bytes per idle connection",
        idle.server_memory_before as f64 / 1048576.0,
        idle.server_memory_after as f64 / 1048576.0,
        idle.bytes_per_connection
    );
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nanosecond_clock_counts_what_instant_counts() {
        let instant = std::time::Instant::now();
        let ns = now_ns();
        std::thread::sleep(Duration::from_millis(20));
        let ns_after = now_ns();
        let elapsed = instant.elapsed();
        // Both read CLOCK_MONOTONIC, so the nanosecond clock's interval lies within
        // Instant's, read around it; and a sleep lasts at least what it was asked.
        let interval = ns_after - ns;
        assert!(interval >= 20_000_000, "{interval} ns across a 20 ms sleep");
        assert!(u128::from(interval) <= elapsed.as_nanos(), "{interval} ns within {elapsed:?}");
    }

    #[test]
    fn a_zero_latency_is_recorded_at_the_histograms_floor() {
        let latencies = Latencies::new();
        latencies.recorder(0).record_ns(0);
        let h = latencies.merged();
        assert_eq!((h.len(), h.min()), (1, 1));
    }

    #[test]
    fn recorders_flush_into_one_histogram() {
        let latencies = Latencies::new();
        for worker in 0..40 {
            let mut r = latencies.recorder(worker);
            for i in 0..100u64 {
                r.record(Duration::from_micros(1 + i));
            }
        }
        let h = latencies.merged();
        assert_eq!(h.len(), 4000);
        let l = LatencyUs::of(&h);
        assert!((l.p50 - 50.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 100.0).abs() < 0.1, "{l:?}");
    }
}
