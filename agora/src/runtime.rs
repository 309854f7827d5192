//! The Tokio runtime the server runs on, built in one place for `agora serve` and the
//! embedded server.

/// How often (in task polls) a worker takes its next task from the runtime's shared
/// queue rather than its own: every other poll.
///
/// A worker's own queue holds 256 tasks; with more connections ready at once, the rest
/// wait in the shared queue, which Tokio by default visits about once per 200 µs of
/// polls (its adaptive interval), taking one task each time. With one worker and 1,000
/// busy clients, connections parked there waited ~150 ms for a turn while those in the
/// worker's own queue went round every ~2 ms (p99 157 ms, p50 1.6 ms; bench/changes.md,
/// round 31). Every other poll serves both queues in turn (p99 20 ms, p50 9.6 ms);
/// every poll starved the worker's own queue instead (a request waited 1–4 s). With
/// fewer ready connections than the worker's queue holds, the shared queue is empty and
/// a visit costs one load.
pub const GLOBAL_QUEUE_INTERVAL: u32 = 2;

/// A multi-threaded runtime with `workers` worker threads (named `agora-server`), I/O
/// and time on.
pub fn server_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("agora-server")
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
        .enable_all()
        .build()
}
