//! The Prometheus text exposition of the counters in [`super`], and the small HTTP
//! endpoint that serves it.
//!
//! [`MetricsListener`] answers `GET /metrics` (and `HEAD`) with the Prometheus text
//! format, 404 for any other path, over a deliberately minimal HTTP/1.1 (one request
//! per connection, `Connection: close`) on the server's own runtime: a web framework
//! would be most of the binary for one route. It needs no authkey, so bind it to
//! loopback or a private interface; it reveals counts, kind and method names, and the
//! names of named objects that can be held (locks, semaphores, queues…: who holds
//! them is a per-object question), never values, sessions or peers.
//!
//! Per-object series are bounded: named objects only (anonymous ones come and go by
//! the thousand), at most [`MAX_OBJECT_SERIES`] of them per scrape.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::server::Shared;

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
    let polling = &shared.polling;
    for (dialect, polls, whose, setting) in [
        ("python", polling.python_stats(), "a CPython connection's own thread", "--python-busy-poll"),
        ("native", polling.native_stats(), "a worker for a lone native client", "--native-busy-poll"),
    ] {
        scalar(
            &format!("agora_{dialect}_busy_poll_hits_total"),
            "counter",
            &format!("Busy polls of {whose} that found the next request (a wake-up saved)."),
            polls.hits.to_string(),
        );
        scalar(
            &format!("agora_{dialect}_busy_poll_misses_total"),
            "counter",
            &format!("Busy polls of {whose} that ended with no request (the window ended, or it was cut short)."),
            polls.misses.to_string(),
        );
        scalar(
            &format!("agora_{dialect}_busy_poll_seconds_total"),
            "counter",
            &format!("Time {whose} spent busy polling ({setting})."),
            format!("{:.6}", polls.nanos as f64 / 1e9),
        );
    }
    let threads = &shared.python_threads;
    scalar(
        "agora_python_moves_to_workers_total",
        "counter",
        "CPython connections moved from their own thread to the shared workers (their calls waited).",
        threads.to_workers.load(std::sync::atomic::Ordering::Relaxed).to_string(),
    );
    scalar(
        "agora_python_moves_to_threads_total",
        "counter",
        "CPython connections moved back from the shared workers to a thread of their own.",
        threads.to_threads.load(std::sync::atomic::Ordering::Relaxed).to_string(),
    );
    scalar(
        "agora_python_threads_started_total",
        "counter",
        "Threads started for CPython connections (one that has served its connection waits for the next).",
        threads.started.load(std::sync::atomic::Ordering::Relaxed).to_string(),
    );
    scalar(
        "agora_python_threads_waiting",
        "gauge",
        "Threads for CPython connections waiting for one now (--python-threads counts them).",
        threads.waiting().to_string(),
    );
    scalar(
        "agora_resident_memory_bytes",
        "gauge",
        "Resident memory of the server process.",
        stats.memory_bytes.to_string(),
    );
    if let Some(c) = &stats.cluster {
        let is_leader = u8::from(c.leader == Some(c.node_id));
        scalar("agora_cluster_leader", "gauge", "1 while this node leads its cluster, else 0.", is_leader.to_string());
        scalar("agora_cluster_term", "gauge", "The node's current Raft term.", c.term.to_string());
        let index = |i: Option<u64>| i.unwrap_or(0).to_string();
        scalar(
            "agora_cluster_last_log_index",
            "gauge",
            "The last Raft log index this node has.",
            index(c.last_log_index),
        );
        scalar(
            "agora_cluster_last_applied_index",
            "gauge",
            "The last Raft log index this node applied to its state.",
            index(c.last_applied),
        );
    }
    // The big values the reclaim thread frees (and the indexes it makes ahead): a
    // backlog is memory that still counts as in use.
    let reclaim = agora_proto::reclaim::progress();
    scalar(
        "agora_reclaim_handed_over_total",
        "counter",
        "Big values handed to the agora-reclaim thread since start: to free, or (a big dict's next index) to make.",
        reclaim.handed_over.to_string(),
    );
    scalar(
        "agora_reclaim_done_total",
        "counter",
        "Of those, how many the agora-reclaim thread has done; the rest is still to be freed.",
        reclaim.done.to_string(),
    );
    if let Some(m) = &stats.memory {
        scalar(
            "agora_memory_in_use_bytes",
            "gauge",
            "Memory the server has allocated and not freed: what --max-memory limits.",
            m.in_use.to_string(),
        );
        if let Some(limit) = m.limit {
            scalar("agora_memory_limit_bytes", "gauge", "The memory limit (--max-memory).", limit.to_string());
        }
        scalar(
            "agora_memory_refused_total",
            "counter",
            "Calls refused because they would have grown memory in use past --max-memory.",
            m.refused.to_string(),
        );
        scalar(
            "agora_memory_returned_bytes_total",
            "counter",
            "Freed memory given back to the operating system since start.",
            m.returned.to_string(),
        );
    }

    scalar(
        "agora_durable",
        "gauge",
        "1 if the state is kept in a data directory (--data-dir), 0 if in memory only.",
        u8::from(stats.durability.is_some()).to_string(),
    );
    if let Some(d) = &stats.durability {
        scalar("agora_log_bytes", "gauge", "Bytes of command log on disk.", d.log_bytes.to_string());
        scalar(
            "agora_log_bytes_since_snapshot",
            "gauge",
            "Log bytes written since the last snapshot.",
            d.log_bytes_since_snapshot.to_string(),
        );
        scalar(
            "agora_log_records_appended_total",
            "counter",
            "The last log record appended (its LSN).",
            d.appended_lsn.to_string(),
        );
        scalar(
            "agora_log_fsync_lag_records",
            "gauge",
            "Records appended but not yet known to be on disk.",
            d.appended_lsn.saturating_sub(d.synced_lsn).to_string(),
        );
        scalar(
            "agora_log_seconds_since_fsync",
            "gauge",
            "Seconds since the log was last fsynced.",
            format!("{:.3}", d.ms_since_fsync as f64 / 1000.0),
        );
        scalar(
            "agora_log_refusing_changes",
            "gauge",
            "1 while the log cannot be written and changes are refused (full disk, I/O error).",
            u8::from(d.refusing.is_some()).to_string(),
        );
        if let Some(snap) = &d.last_snapshot {
            scalar(
                "agora_snapshot_last_record",
                "gauge",
                "The last log record the newest snapshot covers.",
                snap.lsn.to_string(),
            );
            scalar("agora_snapshot_bytes", "gauge", "Size of the newest snapshot.", snap.bytes.to_string());
            scalar(
                "agora_snapshot_timestamp_seconds",
                "gauge",
                "When the newest snapshot was written (Unix time).",
                snap.at_secs.to_string(),
            );
            scalar(
                "agora_snapshot_pause_seconds",
                "gauge",
                "How long the newest snapshot held changes while it copied the state.",
                format!("{:.6}", snap.pause_us as f64 / 1e6),
            );
        }
    }

    if let Some(c) = &stats.cluster {
        let lagging: Vec<_> = c.members.iter().filter_map(|m| m.lag.map(|lag| (m.id, lag))).collect();
        if !lagging.is_empty() {
            header(
                &mut out,
                "agora_cluster_member_lag_entries",
                "gauge",
                "On the leader: entries each member's log is behind the leader's.",
            );
            for (id, lag) in lagging {
                let _ = writeln!(out, "agora_cluster_member_lag_entries{{node=\"{id}\"}} {lag}");
            }
        }
    }
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
    render_holders(shared, &mut out);
    out
}

/// The most named objects a scrape reports holders for (the first by name).
pub const MAX_OBJECT_SERIES: usize = 1000;

/// Per named object that can be held or waited for: holds, waiting calls, and the age
/// of the oldest hold.
fn render_holders(shared: &Shared, out: &mut String) {
    let engine = shared.parking.engine();
    let now = engine.now();
    let views = engine.named_holders();
    let shown = &views[..views.len().min(MAX_OBJECT_SERIES)];
    let labels = |v: &crate::engine::HolderView| {
        format!("kind=\"{}\",name=\"{}\"", label(v.kind.as_str()), label(v.name.as_deref().unwrap_or_default()))
    };
    type Sample = fn(&crate::engine::HolderView, crate::engine::Time) -> String;
    let families: [(&str, &str, Sample); 3] = [
        (
            "agora_object_holds",
            "Holds on a named object now: lock grants, semaphore permits, RLock ownership, queue leases.",
            |v, _| v.held.len().to_string(),
        ),
        ("agora_object_waiters", "Calls waiting on a named object now (acquires, gets, puts, joins...).", |v, _| {
            v.waiting.len().to_string()
        }),
        (
            "agora_object_oldest_hold_seconds",
            "How long the oldest hold on a named object has been held (0 when nothing is held).",
            |v, now| format!("{:.3}", v.oldest_hold_age(now).unwrap_or_default().as_secs_f64()),
        ),
    ];
    for (name, help, sample) in families {
        header(out, name, "gauge", help);
        for v in shown {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(v), sample(v, now));
        }
    }
    scalar_line(
        out,
        "agora_object_series_dropped",
        "Named objects left out of the per-object series above (more than the limit).",
        views.len().saturating_sub(shown.len()),
    );
}

fn scalar_line(out: &mut String, name: &str, help: &str, value: usize) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
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
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
