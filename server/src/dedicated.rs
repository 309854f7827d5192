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
//! ([`ThreadSocket`]), for up to [`BLOCK_AT_MOST`]. A thread whose connection is done
//! keeps its runtime and waits for the next connection, for up to [`LINGER`]
//! (`pool`): a CPython client opens a connection for every proxy it makes, and
//! starting a thread for each was 7 % of the server's CPU while it made them.
//!
//! A connection whose calls wait (a contended lock, a `get` from an empty queue) costs
//! less on the shared workers, where a waiting call is a parked task: between two
//! calls it leaves its thread for them, with its session and whatever it sent ahead,
//! and comes back to a thread after a run of calls that did not wait ([`Placement`]).
//!
//! Owns: the count of such threads, the ones waiting for a connection, moving a
//! connection's socket onto one and off it again, and the count of those moves. It
//! runs the same dialect code as the shared workers (`dialect::python::serve_placed`), so
//! what a client sees does not depend on where it is served; it must not reach into
//! the dialect's or the engine's state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::access::Who;
use crate::busy_poll::BusyPoll;
use crate::dialect;
use crate::dialect::python::Start;
use crate::listener::Transport;
use crate::server::Shared;

mod placement;
mod pool;
mod socket;
pub use placement::Placement;
pub use socket::{ThreadSocket, BLOCK_AT_MOST};

/// A socket taken off the runtime that accepted it, to be registered with another.
pub enum Detached {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix-domain connection.
    Unix(std::os::unix::net::UnixStream),
}

/// How long a thread whose connection is done waits for the next one before it ends:
/// long enough for a client that opens connection after connection (one per proxy,
/// one per task) to find it, short enough that a burst's threads do not outlive it by
/// much.
pub const LINGER: Duration = Duration::from_secs(10);

/// How many dedicated threads there are (serving a connection or waiting for one),
/// against the limit, and how often connections moved between them and the shared
/// workers.
pub struct Threads {
    limit: usize,
    /// Threads alive, each holding one of the `limit` places.
    alive: Arc<AtomicUsize>,
    /// Threads serving a connection now.
    serving: Arc<AtomicUsize>,
    /// Threads waiting for a connection.
    idle: Arc<pool::Pool<Assignment>>,
    /// Connections that left their thread for the shared workers (their calls waited).
    pub to_workers: AtomicU64,
    /// Connections that went back from the shared workers to a thread of their own.
    pub to_threads: AtomicU64,
    /// Threads started, ever (a connection that found one waiting started none).
    pub started: AtomicU64,
}

/// One in a count, for as long as it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn enter(count: &Arc<AtomicUsize>) -> Counted {
        count.fetch_add(1, Ordering::AcqRel);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A thread for one connection: a waiting one, or one of the limited places to start
/// one in. Dropped unused, the waiting thread goes on waiting, or the place is free.
pub struct Seat(SeatOn);

enum SeatOn {
    Waiting(pool::Hand<Assignment>),
    /// Held by the thread for as long as it lives.
    New(Counted),
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
pub(crate) fn open_files_limit() -> Option<u64> {
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
        Threads::with_limit(capped)
    }

    /// At most `limit` threads, whatever the open-files limit.
    fn with_limit(limit: usize) -> Threads {
        Threads {
            limit,
            alive: Arc::default(),
            serving: Arc::default(),
            idle: Arc::default(),
            to_workers: 0.into(),
            to_threads: 0.into(),
            started: 0.into(),
        }
    }

    /// Dedicated threads serving a connection now.
    pub fn running(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// Dedicated threads waiting for a connection now.
    pub fn waiting(&self) -> usize {
        self.idle.parked()
    }

    /// A thread for a connection: one waiting, or else a place to start one in, if
    /// fewer than the limit are alive.
    pub fn take(&self) -> Option<Seat> {
        if let Some(hand) = self.idle.take() {
            return Some(Seat(SeatOn::Waiting(hand)));
        }
        self.alive
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| Seat(SeatOn::New(Counted(self.alive.clone()))))
    }
}

/// A CPython connection between two places: its socket, off any runtime, and where
/// its serving starts.
struct Job {
    detached: Detached,
    start: Start,
    peer: String,
    place: Placement,
    shared: Arc<Shared>,
}

/// The connection cannot be served (its socket cannot be registered): a session it
/// moved with ends here.
fn lost(start: Start, shared: &Shared, peer: &str, error: &std::io::Error) -> Option<Job> {
    tracing::warn!(%peer, %error, "cannot register a CPython connection's socket; closing it");
    if let Start::Resumed(moving) = start {
        moving.close(shared);
    }
    None
}

/// Serves a CPython connection, holding `seat`, on a thread of its own, and moves it
/// between that and the shared workers as its calls say ([`Placement`]); returns when
/// the connection is done. Dropping the returned future (a cluster node's stint ends,
/// or the server shuts down) ends the connection on its thread too. If no thread can
/// be started, the shared workers serve the connection, here.
pub async fn serve_python(
    seat: Seat,
    detached: Detached,
    rbuf: BytesMut,
    first: Bytes,
    peer: &str,
    who: Who,
    shared: Arc<Shared>,
) {
    let start = Start::Fresh { rbuf, first, who };
    let mut job = Job { detached, start, peer: peer.to_owned(), place: Placement::on_thread(), shared };
    let mut seat = Some(seat);
    loop {
        let moved = match seat.take() {
            Some(seat) => on_own_thread(seat, job).await,
            None => on_shared_workers(job).await,
        };
        let Some(next) = moved else { return };
        job = next;
        let threads = &job.shared.python_threads;
        if job.place.is_on_thread() {
            seat = threads.take();
            if seat.is_some() {
                threads.to_threads.fetch_add(1, Ordering::Relaxed);
            } else {
                job.place.stay_on_workers();
            }
        } else {
            threads.to_workers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A connection for a thread of its own, and the two ends of its stint there.
struct Assignment {
    job: Job,
    /// Resolves (its sender dropped) when the connection must end: the server stops.
    stop: oneshot::Receiver<()>,
    /// Where the thread says how the stint ended: `None`, the connection is done;
    /// `Some`, it moves to the shared workers.
    done: oneshot::Sender<Option<Job>>,
}

/// An assignment no thread took, and why.
type NotHanded = Box<(Assignment, std::io::Error)>;

/// `assignment`, back from a thread that ended before it could take it.
fn thread_ended(assignment: Assignment) -> NotHanded {
    Box::new((assignment, std::io::Error::other("its thread ended unasked")))
}

/// Serves `job` on a thread of its own (the waiting one `seat` holds, or a new one with a
/// single-threaded runtime) until it ends (`None`) or moves off it (`Some`, bound for
/// the shared workers). If no thread can take it, the shared workers serve it, here.
async fn on_own_thread(seat: Seat, job: Job) -> Option<Job> {
    let (stop_tx, stop) = oneshot::channel::<()>();
    let (done, done_rx) = oneshot::channel::<Option<Job>>();
    let assignment = Assignment { job, stop, done };
    let handed = match seat.0 {
        SeatOn::Waiting(hand) => hand.give(assignment).map_err(thread_ended),
        SeatOn::New(place) => start_thread(place, assignment),
    };
    match handed {
        Ok(()) => {
            // Held until the thread is done: dropping it tells the thread to stop.
            let _stop = stop_tx;
            done_rx.await.ok().flatten()
        }
        Err(not_handed) => {
            let (assignment, error) = *not_handed;
            let mut job = assignment.job;
            tracing::warn!(peer = %job.peer, %error, "cannot start a thread for a CPython connection; the shared workers serve it");
            job.place.settle_on_workers();
            on_shared_workers(job).await
        }
    }
}

/// Starts a thread, holding `place`, with a runtime of its own, and hands it
/// `assignment`; back, with why, if either cannot be started (out of file descriptors
/// or threads).
fn start_thread(place: Counted, assignment: Assignment) -> Result<(), NotHanded> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
        Ok(runtime) => runtime,
        Err(error) => return Err(Box::new((assignment, error))),
    };
    let threads = &assignment.job.shared.python_threads;
    let (idle, serving) = (Arc::downgrade(&threads.idle), threads.serving.clone());
    // The assignment goes over a channel, so that it is still ours if the thread cannot start.
    let (hand, first) = std::sync::mpsc::sync_channel::<Assignment>(1);
    let started = std::thread::Builder::new()
        .name("agora-python".to_owned())
        .spawn(move || serve_assignments(runtime, place, first, idle, serving));
    match started {
        Ok(_) => {
            threads.started.fetch_add(1, Ordering::Relaxed);
            hand.send(assignment).map_err(|unsent| thread_ended(unsent.0))
        }
        Err(error) => Err(Box::new((assignment, error))),
    }
}

/// A dedicated thread's life: serves the connection it was started for, then each one
/// it is handed while it waits, for up to [`LINGER`] between two; ends when none comes
/// or the server is gone.
fn serve_assignments(
    runtime: tokio::runtime::Runtime,
    place: Counted,
    first: std::sync::mpsc::Receiver<Assignment>,
    idle: Weak<pool::Pool<Assignment>>,
    serving: Arc<AtomicUsize>,
) {
    let mut next = first.recv().ok();
    while let Some(Assignment { job, stop, done }) = next {
        let moved = {
            let _serving = Counted::enter(&serving);
            // Polling off: no poll at all, so no clock is read for it on any request.
            let most = job.shared.config.limits.python_busy_poll;
            let poll = (!most.is_zero()).then(|| BusyPoll::new(most, job.shared.polling.clone()));
            runtime.block_on(async move {
                tokio::select! {
                    moved = run_own(job, poll) => moved,
                    _ = stop => None,
                }
            })
        };
        // Waiting before it answers, so that a connection opened as this one ends (or
        // this one, coming back from the shared workers) finds it.
        let waiting = idle.upgrade().map(|pool| pool.park());
        let _ = done.send(moved);
        next = waiting.and_then(|waiting| pool::Pool::wait(&idle, waiting, LINGER));
    }
    // The runtime's descriptors are free before the place is.
    drop(runtime);
    drop(place);
}

/// Registers the socket with the current runtime, one the shared workers run, and
/// serves it there (no busy polling, no blocking reads: other connections share it)
/// until it ends (`None`) or moves off (`Some`, bound for a thread of its own).
async fn on_shared_workers(job: Job) -> Option<Job> {
    let Job { detached, start, peer, place, shared } = job;
    match detached {
        Detached::Tcp(s) => match tokio::net::TcpStream::from_std(s) {
            Ok(s) => serve_shared(s, start, peer, place, shared).await,
            Err(e) => lost(start, &shared, &peer, &e),
        },
        Detached::Unix(s) => match tokio::net::UnixStream::from_std(s) {
            Ok(s) => serve_shared(s, start, peer, place, shared).await,
            Err(e) => lost(start, &shared, &peer, &e),
        },
    }
}

/// [`on_shared_workers`], once the socket is registered as `stream`.
async fn serve_shared<S: Transport>(
    mut stream: S,
    mut start: Start,
    peer: String,
    mut place: Placement,
    shared: Arc<Shared>,
) -> Option<Job> {
    loop {
        let moving = dialect::python::serve_placed(&mut stream, start, &peer, &shared, None, &mut place).await?;
        match stream.detach() {
            Ok(Ok(detached)) => {
                place.moved();
                return Some(Job { detached, start: Start::Resumed(moving), peer, place, shared });
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "cannot move a CPython connection to its own thread; closing it");
                moving.close(&shared);
                return None;
            }
            // Not a socket of its own (never so for the streams a job holds): it stays.
            Err(back) => {
                stream = back;
                place.settle_on_workers();
                start = Start::Resumed(moving);
            }
        }
    }
}

/// Serves the socket on the connection's own thread (the current runtime is that
/// thread's): it busy polls with `poll`, if any, then waits for requests blocked in
/// `recv(2)` ([`ThreadSocket`]). Returns when the connection ends (`None`) or moves
/// off the thread (`Some`).
async fn run_own(job: Job, mut poll: Option<BusyPoll>) -> Option<Job> {
    let Job { detached, start, peer, mut place, shared } = job;
    let socket = match detached {
        Detached::Tcp(s) => tokio::net::TcpStream::from_std(s).and_then(ThreadSocket::new),
        Detached::Unix(s) => tokio::net::UnixStream::from_std(s).and_then(ThreadSocket::new),
    };
    let mut socket = match socket {
        Ok(socket) => socket,
        Err(e) => return lost(start, &shared, &peer, &e),
    };
    let moving = dialect::python::serve_placed(&mut socket, start, &peer, &shared, poll.as_mut(), &mut place).await?;
    match socket.into_detached() {
        Ok(detached) => {
            place.moved();
            Some(Job { detached, start: Start::Resumed(moving), peer, place, shared })
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot move a CPython connection to the shared workers; closing it");
            moving.close(&shared);
            None
        }
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
        let threads = Threads::with_limit(2);
        let (a, b) = (threads.take().expect("first"), threads.take().expect("second"));
        assert!(threads.take().is_none(), "the limit is 2");
        assert_eq!(threads.alive.load(Ordering::Acquire), 2);
        drop(a);
        let c = threads.take().expect("a seat given back is taken again");
        drop((b, c));
        assert_eq!(threads.alive.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_waiting_thread_is_taken_before_a_new_one_even_at_the_limit() {
        let threads = Threads::with_limit(1);
        let new = threads.take().expect("a place for a new thread");
        assert!(matches!(new.0, SeatOn::New(_)));
        // That thread, done with its connection, waits: it still holds its place.
        let waiting = threads.idle.park();
        assert_eq!(threads.waiting(), 1);
        let taken = threads.take().expect("the waiting thread, though the limit is reached");
        assert!(matches!(taken.0, SeatOn::Waiting(_)));
        assert!(threads.take().is_none(), "nothing waits, and no place is left");
        drop(taken);
        assert_eq!(threads.waiting(), 1, "a seat dropped unused leaves its thread waiting");
        drop((waiting, new));
    }
}
