//! Threads of their own for CPython clients' persistent connections.
//!
//! A stock CPython client makes one call at a time per connection and waits for each
//! answer, so every request is a lone round trip: the server's thread sleeps, the
//! client's bytes wake it, it answers and sleeps again. CPython's own manager gives
//! each connection a thread of its own, and the kernel then wakes that thread next to
//! the client that woke it. On the shared workers, one thread waits on every socket
//! and each wake-up may land on the other core. With two CPython clients on a 2-core
//! machine, a thread per connection answered ~45 % more round trips (BENCHMARKS.md,
//! round 11). So a client thread's persistent connection (the one that opens with
//! `accept_connection`) gets a thread with a single-threaded runtime of its own,
//! up to [`Limits::python_threads`](crate::config::Limits::python_threads) of them;
//! beyond that, and for one-shot control connections and TLS, the shared workers
//! serve it as before. A thread's runtime holds 4 more file descriptors, so the
//! threads never take more than half of the open-files limit; a thread or runtime
//! that cannot be started leaves its connection to the shared workers. Such a thread
//! polls its socket for a moment before it sleeps ([`crate::busy_poll`]); the shared
//! workers never do. It then sleeps in `recv(2)` (on a Unix socket while other
//! connections are calling, in `poll(2)`) itself, not in its runtime
//! ([`ThreadSocket`]), for up to [`BLOCK_AT_MOST`].
//!
//! Owns: the count of such threads, and moving a connection's socket onto one. It
//! runs the same dialect code as the shared workers (`dialect::python::serve`), so
//! what a client sees does not depend on where it is served; it must not reach into
//! the dialect's or the engine's state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::access::Who;
use crate::busy_poll::BusyPoll;
use crate::dialect;
use crate::server::Shared;

mod socket;
pub use socket::{ThreadSocket, BLOCK_AT_MOST};

/// A socket taken off the runtime that accepted it, to be registered with another.
pub enum Detached {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix-domain connection.
    Unix(std::os::unix::net::UnixStream),
}

/// How many dedicated threads are running, against the limit.
#[derive(Debug)]
pub struct Threads {
    limit: usize,
    running: Arc<AtomicUsize>,
}

/// One of the limited places: the thread count goes down when it drops.
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// File descriptors a dedicated thread holds besides its connection's socket (its
/// runtime's epoll instance, waker and their kin; 4 measured on Linux).
const FDS_PER_THREAD: u64 = 4;

/// The most threads that leave at least half of `open_files` (the soft
/// `RLIMIT_NOFILE`) to connections: a thread must never cost a connection its socket.
fn fd_cap(limit: usize, open_files: u64) -> usize {
    usize::try_from(open_files / 2 / FDS_PER_THREAD).map_or(limit, |cap| limit.min(cap))
}

/// The process's soft limit on open files, if it has one.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

impl Threads {
    /// At most `limit` threads (0: none), fewer if the open-files limit is low.
    pub fn new(limit: usize) -> Threads {
        let capped = open_files_limit().map_or(limit, |open_files| fd_cap(limit, open_files));
        if capped < limit {
            tracing::info!(
                python_threads = capped,
                asked = limit,
                "fewer threads of their own for CPython connections: the open-files limit (ulimit -n) is low"
            );
        }
        Threads { limit: capped, running: Arc::new(AtomicUsize::new(0)) }
    }

    /// Dedicated threads serving a connection now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// A seat, if fewer than the limit are taken.
    pub fn take(&self) -> Option<Seat> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| Seat(self.running.clone()))
    }
}

/// What the dedicated thread serves: a CPython connection whose first request was read.
struct Job {
    detached: Detached,
    buf: BytesMut,
    first: Bytes,
    peer: String,
    who: Who,
    shared: Arc<Shared>,
}

/// Serves a CPython connection on a thread of its own, holding `seat`; returns when
/// the connection is done. Dropping the returned future (a cluster node's stint ends,
/// or the server shuts down) ends the connection on its thread too. If no thread can
/// be started, the connection is served here, on the caller's runtime.
pub async fn serve_python(
    seat: Seat,
    detached: Detached,
    buf: BytesMut,
    first: Bytes,
    peer: &str,
    who: Who,
    shared: Arc<Shared>,
) {
    let job = Job { detached, buf, first, peer: peer.to_owned(), who, shared };
    // Built here, so that if it cannot be (out of file descriptors), the shared
    // workers serve the connection instead.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot start a runtime for a CPython connection; the shared workers serve it");
            return run_shared(job).await;
        }
    };
    // The job goes over a channel, so that it is still ours if the thread cannot start.
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let started = std::thread::Builder::new().name("agora-python".to_owned()).spawn(move || {
        let _seat = seat;
        let Ok(job) = job_rx.recv() else { return };
        // Polling off: no poll at all, so no clock is read for it on any request.
        let most = job.shared.config.limits.python_busy_poll;
        let poll = (!most.is_zero()).then(|| BusyPoll::new(most, job.shared.polling.clone()));
        runtime.block_on(async move {
            tokio::select! {
                _ = run_own(job, poll) => {}
                _ = stop_rx => {}
            }
        });
        drop(done_tx);
    });
    match started {
        Ok(_) => {
            if job_tx.send(job).is_err() {
                return;
            }
            // Held until the thread is done: dropping it tells the thread to stop.
            let _stop = stop_tx;
            let _ = done_rx.await;
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot start a thread for a CPython connection; the shared workers serve it");
            run_shared(job).await;
        }
    }
}

/// Registers the socket with the current runtime, one the shared workers run, and
/// serves it there: no busy polling, no blocking reads (other connections share it).
async fn run_shared(job: Job) {
    let Job { detached, buf, first, peer, who, shared } = job;
    let registered = match detached {
        Detached::Tcp(s) => match tokio::net::TcpStream::from_std(s) {
            Ok(s) => return dialect::python::serve(s, buf, first, &peer, who, shared, None).await,
            Err(e) => e,
        },
        Detached::Unix(s) => match tokio::net::UnixStream::from_std(s) {
            Ok(s) => return dialect::python::serve(s, buf, first, &peer, who, shared, None).await,
            Err(e) => e,
        },
    };
    tracing::warn!(%peer, error = %registered, "cannot register a CPython connection's socket; closing it");
}

/// Serves the socket on the connection's own thread (the current runtime is that
/// thread's): it busy polls with `poll`, if any, then waits for requests blocked in
/// `recv(2)` ([`ThreadSocket`]).
async fn run_own(job: Job, mut poll: Option<BusyPoll>) {
    let Job { detached, buf, first, peer, who, shared } = job;
    let socket = match detached {
        Detached::Tcp(s) => tokio::net::TcpStream::from_std(s).and_then(ThreadSocket::new),
        Detached::Unix(s) => tokio::net::UnixStream::from_std(s).and_then(ThreadSocket::new),
    };
    match socket {
        Ok(s) => dialect::python::serve(s, buf, first, &peer, who, shared, poll.as_mut()).await,
        Err(e) => tracing::warn!(%peer, error = %e, "cannot register a CPython connection's socket; closing it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_leave_half_the_open_files_to_connections() {
        assert_eq!(fd_cap(256, 1024), 128, "1024 files: 128 threads × 4 = 512");
        assert_eq!(fd_cap(256, 20_000), 256, "the setting, when files are plenty");
        assert_eq!(fd_cap(0, 20_000), 0);
        assert_eq!(fd_cap(256, 7), 0, "too few files for even one");
    }

    #[test]
    fn seats_are_limited_and_given_back() {
        let threads = Threads { limit: 2, running: Arc::new(AtomicUsize::new(0)) };
        let (a, b) = (threads.take().expect("first"), threads.take().expect("second"));
        assert!(threads.take().is_none(), "the limit is 2");
        assert_eq!(threads.running(), 2);
        drop(a);
        let c = threads.take().expect("a seat given back is taken again");
        drop((b, c));
        assert_eq!(threads.running(), 0);
    }
}
