//! Prometheus metrics: the counters and histograms, their text exposition, and the
//! small HTTP endpoint that serves them (`agora serve --metrics ADDR`).
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
//! [`Shared::stats`], the same numbers `agora stats` prints.
//!
//! # The endpoint
//!
//! [`MetricsListener`] answers `GET /metrics` (and `HEAD`) with the Prometheus text
//! format, 404 for any other path, over a deliberately minimal HTTP/1.1 (one request
//! per connection, `Connection: close`) on the server's own runtime: a web framework
//! would be most of the binary for one route. It needs no authkey, so bind it to
//! loopback or a private interface; it reveals counts and kind and method names, never
//! object names or values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_proto::native::Kind;
use agora_proto::{Address, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::object::MethodSpec;
use crate::server::Shared;

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

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition, in the Prometheus text format (version 0.0.4).
pub fn render(shared: &Shared) -> String {
    let stats = shared.stats();
    let kinds = shared.parking.engine().metrics().snapshot();
    let mut out = String::with_capacity(16 * 1024);
    let mut scalar = |name: &str, kind: &str, help: &str, value: String| {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    scalar("agora_uptime_seconds", "gauge", "Seconds since the server started.", stats.uptime_secs.to_string());
    scalar(
        "agora_connections_accepted_total",
        "counter",
        "Connections accepted since start (refused ones included).",
        stats.connections_total.to_string(),
    );
    scalar(
        "agora_connections_refused_total",
        "counter",
        "Connections refused: failed handshake, bad hello, or the connection limit.",
        stats.connections_refused.to_string(),
    );
    scalar(
        "agora_sessions",
        "gauge",
        "Sessions open now (authenticated connections, both dialects).",
        stats.sessions.to_string(),
    );
    scalar(
        "agora_requests_total",
        "counter",
        "Requests handled since start, both dialects.",
        stats.requests_total.to_string(),
    );
    scalar("agora_named_objects", "gauge", "Named objects alive now.", stats.named_objects.to_string());
    scalar(
        "agora_resident_memory_bytes",
        "gauge",
        "Resident memory of the server process.",
        stats.memory_bytes.to_string(),
    );

    header(&mut out, "agora_build_info", "gauge", "The server's version, as a label.");
    let _ = writeln!(out, "agora_build_info{{version=\"{}\"}} 1", label(&stats.version));

    header(&mut out, "agora_objects", "gauge", "Objects alive now, by kind.");
    let mut by_kind: BTreeMap<String, u64> = kinds.iter().map(|k| (k.kind.to_string(), 0)).collect();
    by_kind.extend(stats.objects_by_kind.iter().cloned());
    for (kind, count) in &by_kind {
        let _ = writeln!(out, "agora_objects{{kind=\"{}\"}} {count}", label(kind));
    }

    header(&mut out, "agora_waiters", "gauge", "Blocked calls waiting now (queue gets, lock acquires...), by kind.");
    for k in &kinds {
        let _ = writeln!(out, "agora_waiters{{kind=\"{}\"}} {}", label(k.kind.as_str()), k.waiters());
    }

    // Per method: only methods that were called, to keep the exposition small.
    fn called(k: &KindMetrics) -> impl Iterator<Item = &MethodMetrics> {
        k.methods.iter().chain(std::iter::once(&k.unknown)).filter(|m| m.calls() > 0)
    }
    let per_method = |out: &mut String, name: &str, help: &str, value: fn(&MethodMetrics) -> u64| {
        header(out, name, "counter", help);
        for k in &kinds {
            for m in called(k) {
                let (kind, method) = (label(k.kind.as_str()), label(m.name));
                let _ = writeln!(out, "{name}{{kind=\"{kind}\",method=\"{method}\"}} {}", value(m));
            }
        }
    };
    per_method(&mut out, "agora_calls_total", "Method calls on shared objects, by kind and method.", |m| m.calls());
    per_method(&mut out, "agora_call_errors_total", "Method calls that failed, by kind and method.", |m| {
        m.errors.load(Ordering::Relaxed)
    });
    per_method(
        &mut out,
        "agora_calls_parked_total",
        "Method calls that blocked before answering, by kind and method.",
        |m| m.parked.load(Ordering::Relaxed),
    );

    header(&mut out, "agora_errors_total", "counter", "Failed method calls by kind and error code.");
    for k in &kinds {
        for (slot, count) in k.errors_by_code.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let code = CODES.get(slot).map_or_else(|| "Other".to_owned(), |c| format!("{c:?}"));
                let _ =
                    writeln!(out, "agora_errors_total{{kind=\"{}\",code=\"{code}\"}} {count}", label(k.kind.as_str()));
            }
        }
    }

    header(
        &mut out,
        "agora_call_duration_seconds",
        "histogram",
        "Time to run a method call on the server (object lock included; a blocked call's wait is not), by kind and method.",
    );
    for k in &kinds {
        for m in called(k) {
            let labels = format!("kind=\"{}\",method=\"{}\"", label(k.kind.as_str()), label(m.name));
            m.latency.render(&mut out, "agora_call_duration_seconds", &labels);
        }
    }

    header(
        &mut out,
        "agora_wait_duration_seconds",
        "histogram",
        "How long blocked calls waited before they were answered, by kind.",
    );
    for k in &kinds {
        if k.wait.count() > 0 {
            k.wait.render(&mut out, "agora_wait_duration_seconds", &format!("kind=\"{}\"", label(k.kind.as_str())));
        }
    }
    out
}

/// How long a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Scrapes served at once; more wait for a slot.
const MAX_SCRAPES: usize = 16;

/// The bound metrics endpoint.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    address: Address,
}

impl MetricsListener {
    /// Binds `address` (TCP only: `host:port`, port 0 for an ephemeral one).
    pub async fn bind(address: &Address) -> std::io::Result<MetricsListener> {
        let Address::Tcp { host, port } = address else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the metrics endpoint listens on TCP (host:port), not {address}"),
            ));
        };
        let listener = TcpListener::bind((host.as_str(), *port))
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot serve metrics on {address}: {e}")))?;
        let local = listener.local_addr()?;
        let address = Address::Tcp { host: local.ip().to_string(), port: local.port() };
        Ok(MetricsListener { listener, address })
    }

    /// The address really bound (an ephemeral port resolved).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Switches call recording on, then (when polled) answers scrapes until the server
    /// shuts down.
    pub fn serve(self, shared: Arc<Shared>) -> impl std::future::Future<Output = ()> + Send {
        shared.parking.engine().metrics().start_recording();
        self.answer_scrapes(shared)
    }

    async fn answer_scrapes(self, shared: Arc<Shared>) {
        let mut shutdown = shared.shutdown.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                accepted = self.listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &shared)).await;
                drop(slot);
            });
        }
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "request too large\n", true).await;
        }
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return respond(&mut stream, "400 Bad Request", "", "bad request\n", true).await;
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut stream, "400 Bad Request", "", "bad request\n", true).await;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "", "not found; metrics are at /metrics\n", true).await;
    }
    match method {
        "GET" | "HEAD" => {
            let body = render(shared);
            let content_type = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";
            respond(&mut stream, "200 OK", content_type, &body, method == "GET").await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", "use GET\n", true).await,
    }
}

/// Writes a whole response and closes the connection. `headers` are extra header
/// lines, each ending in CRLF; the default content type is plain text.
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let content_type =
        if headers.contains("Content-Type:") { "" } else { "Content-Type: text/plain; charset=utf-8\r\n" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{headers}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
