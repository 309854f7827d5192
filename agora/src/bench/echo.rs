//! The floor: a request/response echo over the same transport and framing.
//!
//! The echo server accepts with agora's own [`Listener`] (so the same socket options:
//! `TCP_NODELAY`), reads whatever arrived, and writes every complete frame straight
//! back in one write — the native dialect's loop with the handshake, the decoding
//! and the object call taken out. The floor
//! client is as thin: per connection one task writes `P` frames in one write and
//! reads `P` frames back. What agora adds on top of this is what agora costs.
//!
//! The server comes in two models: tasks on the runtime ([`serve`], agora's own
//! model), and a thread per connection blocked in `recv(2)` ([`serve_threads`],
//! CPython's manager's). The second is the floor for a stock CPython client's round
//! trip (`bench/py_manager_bench.py --echo`): what any server that sleeps between a
//! lone client's calls must spend on one. Its threads wait in `accept(2)` and go back
//! to it when their connection ends (a new one is started only when none is left
//! waiting), so a connection costs no thread's start; and with an authkey each
//! connection first authenticates as a CPython client's does with its manager (agora's
//! own handshake, run on the blocking socket): the floor under proxy creation, whose
//! every call is a connection of its own.
//!
//! A lock's floor is a hand-off, not two echoes: in the threads model a CPython request
//! naming `acquire` takes one lock all connections share, the connection's thread
//! waiting for it as CPython's manager's thread waits in `Lock.acquire`, and one naming
//! `release` frees it (`HandOff`). Echoed at once, processes taking turns on a lock
//! would never wait for each other, and the floor would measure something easier than
//! a contended lock (bench/changes.md, rounds 38 and 40).

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use agora_proto::frame;
use agora_proto::io::ReadRoom;
use agora_proto::Address;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::report::Latencies;
use agora_server::listener::{Accepted, Listener, SocketFile, Transport};

/// The largest frame the echo server accepts.
const ECHO_MAX_FRAME: u64 = 64 << 20;

/// Binds `address` and returns the listener and the bound address.
pub async fn bind(address: &Address) -> std::io::Result<(Listener, Address)> {
    if address.is_tls() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the echo floor supports TCP and Unix socket paths",
        ));
    }
    Listener::bind(address, None).await
}

/// Accepts and echoes until the task is dropped.
pub async fn serve(listener: Listener) {
    loop {
        match listener.accept().await {
            Ok((Accepted::Tcp(s), _)) => drop(tokio::spawn(echo(s))),
            Ok((Accepted::Unix(s), _)) => drop(tokio::spawn(echo(s))),
            // `bind` refuses tls:// addresses.
            Ok((Accepted::Tls(s), _)) => drop(s),
            Err(e) => {
                tracing::warn!(error = %e, "echo server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves each connection from an OS thread of its own that blocks in `recv(2)` until
/// a frame comes and in `send(2)` to answer it: the model of CPython's manager, whose
/// thread per connection waits in `recv`. With one client a round trip then costs the
/// server a `recv`, a `send` and one sleep and wake-up, with no readiness polling: the
/// least a server that sleeps between calls can spend on it. With `authkey`, every
/// connection authenticates first (module docs). Returns only if it cannot start.
pub async fn serve_threads(mut listener: Listener, authkey: Option<Vec<u8>>) -> std::io::Error {
    // The threads accept on a duplicate of the socket; the runtime lets go of the
    // original, which it would otherwise wake up for at every connection. The socket
    // file is removed when this future ends, as the listener would have.
    let _socket_file = match &mut listener {
        Listener::Unix(_, file) => std::mem::take(file),
        _ => SocketFile::default(),
    };
    let threads = match BlockingListener::of(&listener) {
        Ok(accepting) => {
            Arc::new(Threads { accepting, waiting: AtomicUsize::new(0), hand_off: HandOff::default(), authkey })
        }
        Err(e) => return e,
    };
    drop(listener);
    if let Err(e) = threads.start_one() {
        return e;
    }
    std::future::pending::<()>().await;
    unreachable!("a pending future never completes")
}

/// What the threads model's threads share.
struct Threads {
    accepting: BlockingListener,
    /// How many threads wait in `accept(2)`.
    waiting: AtomicUsize,
    hand_off: HandOff,
    authkey: Option<Vec<u8>>,
}

impl Threads {
    fn start_one(self: &Arc<Self>) -> std::io::Result<()> {
        let threads = self.clone();
        std::thread::Builder::new().name("agora-echo".into()).spawn(move || threads.accept_and_serve()).map(drop)
    }

    /// Waits for a connection, serves it to its end, and waits again; the last thread
    /// to stop waiting starts another, so a newcomer never waits for a connection to end.
    fn accept_and_serve(self: Arc<Self>) {
        loop {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let accepted = self.accepting.accept();
            if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
                if let Err(e) = self.start_one() {
                    tracing::warn!(error = %e, "echo server: cannot start another thread");
                }
            }
            match accepted {
                Ok(stream) => stream.serve(&self),
                Err(e) => {
                    tracing::warn!(error = %e, "echo server: accept failed");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}

/// The listening socket, blocking, for the threads model (a duplicate of the runtime's).
enum BlockingListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl BlockingListener {
    fn of(listener: &Listener) -> std::io::Result<BlockingListener> {
        let accepting = match listener {
            Listener::Tcp(l) => BlockingListener::Tcp(l.as_fd().try_clone_to_owned()?.into()),
            Listener::Unix(l, _) => BlockingListener::Unix(l.as_fd().try_clone_to_owned()?.into()),
            // `bind` refuses tls:// addresses.
            Listener::Tls(_) => return Err(std::io::ErrorKind::Unsupported.into()),
        };
        // The duplicate shares the original's blocking mode; the runtime lets go of that one.
        match &accepting {
            BlockingListener::Tcp(l) => l.set_nonblocking(false)?,
            BlockingListener::Unix(l) => l.set_nonblocking(false)?,
        }
        Ok(accepting)
    }

    /// The next connection (blocking, as its listener), with `TCP_NODELAY` as agora's.
    fn accept(&self) -> std::io::Result<Blocking> {
        match self {
            BlockingListener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nodelay(true)?;
                Ok(Blocking::Tcp(stream))
            }
            BlockingListener::Unix(l) => Ok(Blocking::Unix(l.accept()?.0)),
        }
    }
}

/// A connection served by a thread of its own.
enum Blocking {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Blocking {
    fn serve(self, threads: &Threads) {
        let mut holding = Holding { hand_off: &threads.hand_off, held: false };
        let authkey = threads.authkey.as_deref();
        match self {
            Blocking::Tcp(s) => serve_blocking(s, authkey, &mut holding),
            Blocking::Unix(s) => serve_blocking(s, authkey, &mut holding),
        }
    }
}

/// A blocking socket seen as an async one whose reads and writes are done when first
/// polled (they block instead of waiting), so agora's own handshake runs on it as is.
struct Blocked<'a, S>(&'a mut S);

impl<S: Read + Unpin> AsyncRead for Blocked<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.0.read(buf.initialize_unfilled())?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: Write + Unpin> AsyncWrite for Blocked<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.0.write(buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `work`, whose I/O is on [`Blocked`] sockets alone (so it never waits), to its end.
fn run_blocking<F: Future>(work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(done) = work.as_mut().poll(&mut cx) {
            return done;
        }
        std::thread::yield_now();
    }
}

/// One connection on a floor thread: the handshake, if there is a key, then the echo.
fn serve_blocking<S: Read + Write + Unpin>(mut stream: S, authkey: Option<&[u8]>, holding: &mut Holding<'_>) {
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    if let Some(authkey) = authkey {
        let policy = agora_proto::auth::Policy::default();
        let mut blocked = Blocked(&mut stream);
        if run_blocking(agora_proto::io::server_handshake(&mut blocked, &mut rbuf, authkey, policy)).is_err() {
            return;
        }
    }
    echo_blocking(stream, rbuf, holding)
}

/// The one lock the threads' echo hands off between connections (module docs).
#[derive(Default)]
struct HandOff {
    taken: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

impl HandOff {
    fn acquire(&self) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        while *taken {
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken = true;
    }

    fn release(&self) {
        *self.taken.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.freed.notify_one();
    }
}

/// A connection's part in the hand-off: it frees the lock if it goes away holding it.
struct Holding<'a> {
    hand_off: &'a HandOff,
    held: bool,
}

impl Holding<'_> {
    /// Takes or frees the lock if `body` is a CPython request naming `acquire` or
    /// `release` (a release by a connection not holding it frees nothing).
    fn before_echo(&mut self, body: &[u8]) {
        if !self.held && names_method(body, b"acquire") {
            self.hand_off.acquire();
            self.held = true;
        } else if self.held && names_method(body, b"release") {
            self.hand_off.release();
            self.held = false;
        }
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if self.held {
            self.hand_off.release();
        }
    }
}

/// True if `body` is a pickle (it opens with `PROTO`) holding the short string
/// `method` (`SHORT_BINUNICODE`, as CPython pickles a request's method name): a look
/// at the bytes, cheaper than decoding, so the floor stays a floor.
fn names_method(body: &[u8], method: &[u8]) -> bool {
    const PROTO: u8 = 0x80;
    const SHORT_BINUNICODE: u8 = 0x8c;
    body.first() == Some(&PROTO)
        && body
            .windows(method.len() + 2)
            .any(|w| w[0] == SHORT_BINUNICODE && usize::from(w[1]) == method.len() && &w[2..] == method)
}

/// Moves every complete frame in `rbuf` to `wbuf`, each once `before` has seen it;
/// false if a frame is malformed.
fn echo_frames(rbuf: &mut BytesMut, wbuf: &mut Vec<u8>, mut before: impl FnMut(&[u8])) -> bool {
    loop {
        match frame::take_frame(rbuf, ECHO_MAX_FRAME) {
            Ok(Some(body)) => {
                before(&body);
                frame::encode(&body, wbuf)
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// [`echo`]'s work on a blocking socket, after `rbuf` (read already): write every
/// complete frame back in one write (a lock's hand-off first: [`HandOff`]), read more.
fn echo_blocking<S: Read + Write>(mut stream: S, mut rbuf: BytesMut, holding: &mut Holding<'_>) {
    let mut chunk = vec![0; 16 * 1024];
    let mut wbuf = Vec::with_capacity(16 * 1024);
    loop {
        if !echo_frames(&mut rbuf, &mut wbuf, |body| holding.before_echo(body)) {
            return;
        }
        if !wbuf.is_empty() {
            if stream.write_all(&wbuf).is_err() {
                return;
            }
            wbuf.clear();
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn echo<S: Transport>(mut stream: S) {
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf = Vec::with_capacity(16 * 1024);
    let mut room = ReadRoom::default(); // reads as agora's own loop reads
    loop {
        match room.read(&mut stream, &mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !echo_frames(&mut rbuf, &mut wbuf, |_| {}) {
            return;
        }
        if !wbuf.is_empty() {
            if stream.write_all(&wbuf).await.is_err() {
                return;
            }
            wbuf.clear();
        }
    }
}

/// A floor client connection.
pub enum EchoConn {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// Unix.
    Unix(tokio::net::UnixStream),
}

impl EchoConn {
    /// Connects (with `TCP_NODELAY`, as the agora client does).
    pub async fn connect(address: &Address) -> std::io::Result<EchoConn> {
        match address {
            Address::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Ok(EchoConn::Tcp(s))
            }
            Address::Unix(path) => Ok(EchoConn::Unix(tokio::net::UnixStream::connect(path).await?)),
            Address::Abstract(_) | Address::Tls { .. } => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the echo floor supports TCP and Unix socket paths",
            )),
        }
    }

    /// Runs lockstep batches of up to `pipeline` echoes of `body` until `remaining`
    /// runs out or `deadline` passes; every echo in a batch is recorded with the
    /// batch's round-trip time.
    pub async fn run(
        self,
        body: &[u8],
        pipeline: usize,
        remaining: &AtomicU64,
        deadline: Instant,
        latencies: Arc<Latencies>,
        worker: usize,
    ) -> std::io::Result<()> {
        match self {
            EchoConn::Tcp(s) => lockstep(s, body, pipeline, remaining, deadline, &latencies, worker).await,
            EchoConn::Unix(s) => lockstep(s, body, pipeline, remaining, deadline, &latencies, worker).await,
        }
    }
}

async fn lockstep<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    body: &[u8],
    pipeline: usize,
    remaining: &AtomicU64,
    deadline: Instant,
    latencies: &Latencies,
    worker: usize,
) -> std::io::Result<()> {
    let mut recorder = latencies.recorder(worker);
    let mut one = Vec::new();
    frame::encode(body, &mut one);
    let mut out = Vec::with_capacity(one.len() * pipeline);
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut room = ReadRoom::default();
    while Instant::now() < deadline {
        let batch = take(remaining, pipeline as u64);
        if batch == 0 {
            break;
        }
        out.clear();
        for _ in 0..batch {
            out.extend_from_slice(&one);
        }
        let start = Instant::now();
        stream.write_all(&out).await?;
        let mut got = 0;
        while got < batch {
            match frame::take_frame(&mut rbuf, ECHO_MAX_FRAME) {
                Ok(Some(_)) => got += 1,
                Ok(None) => {
                    if room.read(&mut stream, &mut rbuf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        }
        let elapsed = start.elapsed();
        for _ in 0..batch {
            recorder.record(elapsed);
        }
    }
    Ok(())
}

/// Takes up to `want` from the shared request budget; how many it got.
pub fn take(remaining: &AtomicU64, want: u64) -> u64 {
    let mut current = remaining.load(Ordering::Relaxed);
    loop {
        let got = current.min(want);
        if got == 0 {
            return 0;
        }
        match remaining.compare_exchange_weak(current, current - got, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return got,
            Err(now) => current = now,
        }
    }
}
