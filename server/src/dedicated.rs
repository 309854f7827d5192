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
//! serve it as before.
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
use crate::dialect;
use crate::server::Shared;

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

impl Threads {
    /// At most `limit` threads (0: none).
    pub fn new(limit: usize) -> Threads {
        Threads { limit, running: Arc::new(AtomicUsize::new(0)) }
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
    // The job goes over a channel, so that it is still ours if the thread cannot start.
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let started = std::thread::Builder::new().name("agora-python".to_owned()).spawn(move || {
        let _seat = seat;
        let Ok(job) = job_rx.recv() else { return };
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!(peer = %job.peer, error = %e, "cannot start a connection's runtime; closing it");
                return;
            }
        };
        runtime.block_on(async move {
            tokio::select! {
                _ = run(job) => {}
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
            run(job).await;
        }
    }
}

/// Registers the socket with the current runtime and serves it.
async fn run(job: Job) {
    let Job { detached, buf, first, peer, who, shared } = job;
    let registered = match detached {
        Detached::Tcp(s) => match tokio::net::TcpStream::from_std(s) {
            Ok(s) => return dialect::python::serve(s, buf, first, &peer, who, shared).await,
            Err(e) => e,
        },
        Detached::Unix(s) => match tokio::net::UnixStream::from_std(s) {
            Ok(s) => return dialect::python::serve(s, buf, first, &peer, who, shared).await,
            Err(e) => e,
        },
    };
    tracing::warn!(%peer, error = %registered, "cannot register a CPython connection's socket; closing it");
}
