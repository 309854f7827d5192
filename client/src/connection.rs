//! One multiplexed connection to a server: one socket, one server session.
//!
//! Every call gets a fresh request id and a slot in the pending map, and is encoded
//! straight into the connection's [`Outbox`] (under the same lock as its slot), which
//! the writer task takes whole into one write — or, for a call alone on its connection
//! (nothing queued or being written, no other call waiting for a reply), which its
//! caller writes to the socket at once, still under the lock, leaving the writer only
//! what the socket did not take. The reader task puts each response into its slot by
//! id and wakes the caller, whose [`Answer`] takes it from there: the slot, under the
//! connection's state lock, is the channel (a oneshot channel per call cost an
//! allocation and a tenth of a pipelining client's instructions). So one connection
//! carries any number of concurrent calls from any number of tasks, and a call future
//! that is dropped (timed out, cancelled) just abandons its slot — the connection stays
//! in sync because a frame is queued whole and the bytes go out in queue order, each
//! written once, by a caller under the lock or by the writer.
//!
//! When the connection dies, every pending call and every later call on it fails with
//! the reason, as [`Error::ConnectionLost`] or the server's own connection-level error.
//! A connection never comes back: [`crate::link::Link`] replaces a dead one with a new
//! connection (a new session, one *generation* later) when the manager reconnects —
//! or, on a cluster whose leader changed, with one that resumed the same session and
//! so keeps its generation ([`Connection::previous`]).
//! Request ids come from a counter the manager's connections share, so a request
//! that found its connection dead when it was queued ([`Unsent`]) can go out unchanged,
//! under the same id, on the next one.

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agora_proto::auth::{AuthError, Policy};
use agora_proto::frame;
use agora_proto::io::{client_handshake, read_frame, BufferKeeping, FrameIoError, HandshakeError, ReadRoom};
use agora_proto::native::{
    self, CallArgs, Hello, ObjectId, Op, Previous, Reply, Request, Response, Welcome, CONNECTION_ERROR_ID,
};
use agora_proto::{Address, WireError};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::tls::ClientTls;

/// Names the call that returns a hand-off whose caller stopped waiting: the value in,
/// the method and its arguments out (`None`: nothing to give back).
pub(crate) type GiveBack = fn(agora_proto::Value) -> Option<(&'static str, Vec<agora_proto::Value>)>;

/// What to do if a call's value arrives after its caller stopped waiting: send the
/// compensating call that gives a hand-off back (an item back to its queue). It keeps
/// what must stay alive until then (the proxy's handle, so the object is not released
/// before the item is back), so it is never run or dropped under the connection's
/// state lock. Plain fields, not a boxed closure: every queue get carries one, and
/// this costs it no allocation.
pub(crate) struct OnOrphan {
    object: ObjectId,
    give_back: GiveBack,
    keep: Arc<dyn std::any::Any + Send + Sync>,
}

impl OnOrphan {
    /// Gives back what `give_back` names on `object`, keeping `keep` alive until then.
    pub(crate) fn new(object: ObjectId, give_back: GiveBack, keep: Arc<dyn std::any::Any + Send + Sync>) -> OnOrphan {
        OnOrphan { object, give_back, keep }
    }

    /// Sends, with `send`, the call that gives `value` back; only then lets go of
    /// what it keeps (so a proxy's `Release` follows the give-back).
    fn run(self, value: agora_proto::Value, send: impl Fn(Op)) {
        if let Some((method, args)) = (self.give_back)(value) {
            send(Op::Call { object: self.object, method: method.into(), args: native::Args::positional(args) });
        }
        drop(self.keep);
    }
}

/// A call waiting for its reply, in the pending map until its [`Answer`] takes the
/// reply (or is dropped).
struct Slot {
    on_orphan: Option<OnOrphan>,
    /// The outcome, once the reader delivered it (or the connection ended), until the
    /// caller reads it.
    reply: Option<Result<Reply>>,
    /// Wakes the caller when the reply is in.
    waker: Option<std::task::Waker>,
}

impl Slot {
    fn new(on_orphan: Option<OnOrphan>) -> Slot {
        Slot { on_orphan, reply: None, waker: None }
    }
}

/// A map keyed by request id (this client's own counter: see [`agora_proto::idmap`]).
type IdMap<V> = agora_proto::idmap::IdMap<V>;

/// What callers, the reader and the writer share, under one lock.
#[derive(Default)]
struct State {
    /// The encoded requests waiting for the writer: whole frames, appended by callers
    /// and taken all at once by the writer, which swaps in its emptied buffer (so, once
    /// warm, queueing a request allocates nothing). One frame per request in a channel
    /// cost an allocation, a channel send and a copy each. Under the state's lock: a
    /// call is encoded and given its slot under one lock, not two (a lock and an unlock
    /// are ~20 ns on the benchmark host, ~2 % of a pipelined call's client CPU).
    queued: Vec<u8>,
    pending: IdMap<Slot>,
    /// Calls whose callers stopped waiting; their late replies are handed to `on_orphan`.
    abandoned: IdMap<Option<OnOrphan>>,
    /// Cancel request id → the abandoned call it cancels. The server answers in order,
    /// so once the Cancel's reply is in, no reply to that call can follow: forget it.
    cancels: IdMap<u64>,
    /// True from the writer's take of a batch until that batch is written: meanwhile a
    /// caller must not write its request itself (it would pass the batch).
    writing: bool,
    /// Set once the connection is dead: why.
    closed: Option<Error>,
    /// Set when the connection died with a call in flight that hands something over
    /// (a lock grant, a queue item): the session may hold what this client was never
    /// told of, so it must not be resumed (see [`Connection::previous`]).
    grant_in_flight: bool,
}

impl State {
    /// True if a request queued now would be alone on the connection: nothing queued,
    /// nothing being written, no call waiting for its reply. Its caller may then write
    /// it itself ([`write_now`]).
    fn alone(&self) -> bool {
        self.queued.is_empty() && !self.writing && self.pending.is_empty()
    }
}

/// The largest request a caller writes itself ([`write_now`]): a bigger one the socket
/// rarely takes whole, and what it leaves would be moved to the front of the queue.
const WRITE_NOW_AT_MOST: usize = 64 * 1024;

/// Writes the queued request to `socket` at once, under the state lock (so nothing can
/// be queued or written before it is): true if the socket took it all. Otherwise what
/// it did not take stays queued, for the writer task to finish.
///
/// Only for a request that is alone on its connection ([`State::alone`], asked before
/// it was queued): a lone caller's call then needs no wake-up of the writer task (one task
/// switch of the three an unpipelined call made, with the reader's and the caller's
/// own). Requests that come while others are in flight are left to the writer, which
/// sends all that gathered meanwhile in one write; and so are big ones.
fn write_now(socket: &dyn SocketWrite, state: &mut State) -> bool {
    if state.queued.len() > WRITE_NOW_AT_MOST {
        return false;
    }
    match socket.try_write(&state.queued) {
        Ok(n) if n == state.queued.len() => {
            state.queued.clear();
            true
        }
        Ok(n) => {
            state.queued.drain(..n);
            false
        }
        // Nothing taken (a full socket, or a failure the writer meets and reports).
        Err(_) => false,
    }
}

/// How a connection is set up: what every connection of one manager shares.
#[derive(Clone)]
pub(crate) struct Setup {
    /// The request id counter of the manager's connections.
    pub(crate) ids: Arc<AtomicU64>,
    /// Which connection of the manager this is (1 for the first, one more per reconnect).
    pub(crate) generation: u64,
    /// The manager reconnects after losing the connection: calls in flight are told
    /// their outcome is unknown (they are never sent again), whatever ended the
    /// connection, instead of the bare reason.
    pub(crate) reconnects: bool,
    /// How to verify a `tls://` server (and prove ourselves to it).
    pub(crate) tls: Option<ClientTls>,
    /// The session of the lost connection to take back or end, and that connection's
    /// generation, which this one keeps if the server resumes the session.
    pub(crate) previous: Option<(Previous, u64)>,
}

impl Setup {
    /// The setup of a manager's first connection.
    pub(crate) fn first(reconnects: bool, tls: Option<ClientTls>) -> Setup {
        Setup { ids: Arc::new(AtomicU64::new(1)), generation: 1, reconnects, tls, previous: None }
    }
}

/// A request with its id, ready to go out on any connection of its manager (its id
/// comes from the counter they share). It is encoded when it is queued, straight into
/// that connection's outbox.
pub(crate) struct Outgoing {
    request: Request,
}

impl Outgoing {
    /// `op` under a fresh id from `ids`.
    pub(crate) fn new(ids: &AtomicU64, op: Op) -> Outgoing {
        Outgoing { request: Request { id: ids.fetch_add(1, Ordering::Relaxed), op } }
    }

    /// A call of `method` on `object` with positional `args` under a fresh id from `ids`.
    pub(crate) fn call(ids: &AtomicU64, object: ObjectId, method: &str, args: Vec<agora_proto::Value>) -> Outgoing {
        let op = Op::Call { object, method: method.into(), args: native::Args::positional(args) };
        Outgoing::new(ids, op)
    }
}

/// The connection's state with the requests it queued ([`State::queued`]), and what
/// wakes the writer: shared with the writer task, which outlives the last handle to
/// the connection long enough to send what was queued last.
struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: raised when `queued` turns non-empty, and when the last
    /// handle to the connection goes (the writer then sends what is left and closes).
    ready: Signal,
}

/// A wake-up for one waiting task that is kept if nobody waits yet (as a `Notify`'s
/// permit is), without a waiter list: a flag and the task's waker. An unpipelined call
/// raises it once; a tokio `Notify`, with the writer's waiter registered on it again
/// for every call, cost ~400 instructions a call (bench/changes.md, round 33).
#[derive(Default)]
struct Signal {
    raised: std::sync::atomic::AtomicBool,
    waiter: agora_proto::wake::Waiter,
}

impl Signal {
    /// Raises the signal and wakes the task waiting for it, if one is.
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waiter.wake();
    }

    /// Waits until the signal is raised (at once if it was since the last wait), and
    /// lowers it. For one task at a time.
    async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_with(cx, |signal| signal.raised.swap(false, Ordering::Acquire))).await
    }

    /// Ready if `lower` finds the signal raised, else pending until the next raise
    /// ([`agora_proto::wake::Waiter::poll_with`]).
    fn poll_with(&self, cx: &mut std::task::Context<'_>, lower: impl Fn(&Signal) -> bool) -> std::task::Poll<()> {
        self.waiter.poll_with(cx, || lower(self).then_some(()))
    }
}

impl Outbox {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps everything queued into `batch` (which must be empty), and marks the writer
    /// busy with it if it is not empty (see [`Outbox::written`]).
    fn take(&self, batch: &mut Vec<u8>) {
        let mut state = self.state();
        std::mem::swap(&mut state.queued, batch);
        state.writing = !batch.is_empty();
    }

    /// The writer wrote the batch it took: callers may write for themselves again.
    fn written(&self) {
        self.state().writing = false;
    }
}

/// What a call takes from connection to connection until one of them queues it: how
/// to give back what a reply nobody waits for hands over.
pub(crate) struct PendingCall {
    on_orphan: Option<OnOrphan>,
}

impl PendingCall {
    /// A call; `on_orphan` gives back what a reply nobody waits for hands over.
    pub(crate) fn new(on_orphan: Option<OnOrphan>) -> PendingCall {
        PendingCall { on_orphan }
    }
}

/// A call that could not be queued, given back: the connection was dead (then nothing
/// reached the server, and it may go out unchanged on another connection), or the
/// request is too large for this server.
pub(crate) struct Unsent {
    pub(crate) out: Outgoing,
    pub(crate) call: PendingCall,
    pub(crate) reason: Error,
}

impl Unsent {
    /// The request and its call, to go out on another connection (the reason dropped).
    pub(crate) fn call(self) -> (Outgoing, PendingCall) {
        (self.out, self.call)
    }
}

/// Why [`Connection::queue_method`] did not queue a call.
pub(crate) enum Refused {
    /// The connection is dead (for the reason given): nothing was sent, and the call
    /// may go out on the next one.
    Dead(PendingCall, Error),
    /// The call itself is refused, whatever the connection: an argument that cannot be
    /// converted, or a request too large for this server.
    Call(Error),
}

/// The shared core of a connection; the manager's [`Link`](crate::link::Link) holds
/// the current one, guards and leases remember the generation they belong to.
pub(crate) struct Connection {
    ids: Arc<AtomicU64>,
    generation: u64,
    reconnects: bool,
    outbox: Arc<Outbox>,
    welcome: Welcome,
    /// [`coarse_ms`] at the last successful write: when the server last heard from us
    /// (any message counts as a heartbeat, as on the server).
    last_beat_ms: AtomicU64,
    /// Turns true when the connection dies.
    closed_tx: watch::Sender<bool>,
    /// The socket's write half, for a caller to send its request itself when nothing
    /// else is queued or being written (none under TLS).
    socket: Option<Arc<dyn SocketWrite>>,
}

/// A connected stream, split into the halves its reader and writer tasks own, and the
/// write side that callers may use themselves ([`SocketWrite`]), if it has one. A TCP or
/// Unix socket splits into two handles on the socket (`into_split`), and its write half
/// is shared by the writer task and the callers; a TLS session cannot split, its halves
/// share it behind tokio's `split` lock, which every read and write takes (~120
/// instructions of an unpipelined call's 5,400 on a plain socket), and only its writer
/// task writes.
trait Halves: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn halves(self) -> (Self::Read, Self::Write, Option<Arc<dyn SocketWrite>>);
}

impl Halves for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = SharedWrite<tokio::net::tcp::OwnedWriteHalf>;
    fn halves(self) -> (Self::Read, Self::Write, Option<Arc<dyn SocketWrite>>) {
        shared_write(self.into_split())
    }
}

impl Halves for tokio::net::UnixStream {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = SharedWrite<tokio::net::unix::OwnedWriteHalf>;
    fn halves(self) -> (Self::Read, Self::Write, Option<Arc<dyn SocketWrite>>) {
        shared_write(self.into_split())
    }
}

/// A plain socket's halves: the write half shared by the writer task and the callers.
fn shared_write<R, W: SocketWrite>((read, write): (R, W)) -> (R, SharedWrite<W>, Option<Arc<dyn SocketWrite>>) {
    let write = Arc::new(write);
    (read, SharedWrite(write.clone()), Some(write))
}

impl Halves for crate::tls::TlsStream {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::Read, Self::Write, Option<Arc<dyn SocketWrite>>) {
        let (read, write) = tokio::io::split(self);
        (read, write, None)
    }
}

/// A socket's write half that any thread may write to without waiting: what lets a
/// caller send its request itself ([`Connection::submit_encoded`]) instead of waking
/// the writer task to do it.
trait SocketWrite: Send + Sync + 'static {
    /// Ready when the socket may take more bytes (the waker is woken when it may).
    fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>>;
    /// Writes what the socket takes now, without waiting: `WouldBlock` if nothing.
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

impl SocketWrite for tokio::net::tcp::OwnedWriteHalf {
    fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.as_ref().poll_write_ready(cx)
    }
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::net::tcp::OwnedWriteHalf::try_write(self, buf)
    }
}

impl SocketWrite for tokio::net::unix::OwnedWriteHalf {
    fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.as_ref().poll_write_ready(cx)
    }
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::net::unix::OwnedWriteHalf::try_write(self, buf)
    }
}

/// The writer task's handle on a write half it shares with the callers. Shutting it
/// down does nothing: the half shuts the socket's write side down when its last handle
/// is dropped (tokio's owned halves do), after the writer's last write.
struct SharedWrite<W>(Arc<W>);

impl<W: SocketWrite> AsyncWrite for SharedWrite<W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                // Readiness was stale; `try_write` cleared it, so the next poll waits.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                done => return std::task::Poll::Ready(done),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Connection {
    /// Connects, authenticates, says hello, and starts the reader, writer and
    /// heartbeat tasks.
    pub(crate) async fn open(address: &Address, authkey: &[u8], client: &str, setup: Setup) -> Result<Arc<Connection>> {
        let connect_err = |e: std::io::Error| Error::Connect { address: address.to_string(), reason: e.to_string() };
        match address {
            Address::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect_err)?;
                stream.set_nodelay(true).map_err(connect_err)?;
                Connection::start(stream, authkey, client, setup, None).await
            }
            Address::Tls { host, port } => {
                let Some(tls) = setup.tls.clone() else {
                    return Err(Error::Tls(format!(
                        "{address} is a TLS address: give the client the CA bundle that verifies the server \
                         (ManagerOptions::tls with a ClientTls)"
                    )));
                };
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect_err)?;
                stream.set_nodelay(true).map_err(connect_err)?;
                let stream = tls.connect(stream, host).await?;
                Connection::start(stream, authkey, client, setup, Some((&tls, host))).await
            }
            Address::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(connect_err)?;
                Connection::start(stream, authkey, client, setup, None).await
            }
            Address::Abstract(name) => {
                let stream = connect_abstract(name).map_err(connect_err)?;
                Connection::start(stream, authkey, client, setup, None).await
            }
        }
    }

    async fn start<S: Halves>(
        mut stream: S,
        authkey: &[u8],
        client: &str,
        setup: Setup,
        tls: Option<(&ClientTls, &str)>,
    ) -> Result<Arc<Connection>> {
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        client_handshake(&mut stream, &mut rbuf, authkey, Policy::default()).await.map_err(|e| match e {
            HandshakeError::Auth(AuthError::Rejected) => {
                Error::AuthenticationFailed("the server refused this client's authkey: it runs with another key".into())
            }
            HandshakeError::Auth(AuthError::WrongDigest) => Error::AuthenticationFailed(
                "the server did not prove it knows this client's authkey: it runs with another key".into(),
            ),
            HandshakeError::Auth(other) => Error::AuthenticationFailed(other.to_string()),
            // Under TLS 1.3 the server judges our certificate after our side of the TLS
            // handshake is done: its refusal arrives here, as a TLS alert.
            HandshakeError::Frame(FrameIoError::Io(e)) if tls.is_some_and(|_| crate::tls::is_tls_error(&e)) => {
                let (tls, host) = tls.expect("checked");
                Error::Tls(tls.explain(&e, host))
            }
            // A tls:// listener waits for a TLS hello that a plain client never sends, and
            // drops it when its handshake time is up.
            HandshakeError::Frame(f @ FrameIoError::Closed) if tls.is_none() => Error::ConnectionLost(format!(
                "during the handshake: {f} (if this port is the server's tls:// listener, dial it as tls://host:port)"
            )),
            HandshakeError::Frame(f) => Error::ConnectionLost(format!("during the handshake: {f}")),
        })?;
        let hello = Hello { previous: setup.previous.map(|(previous, _)| previous), ..Hello::new(client) };
        let mut out = Vec::new();
        frame::encode_with(&mut out, |b| native::encode(&hello, b))?;
        stream.write_all(&out).await.map_err(|e| Error::ConnectionLost(e.to_string()))?;
        let first = read_frame(&mut stream, &mut rbuf, frame::DEFAULT_MAX_FRAME).await.map_err(lost)?;
        let welcome: Welcome = match native::decode::<Welcome>(&first) {
            Ok(w) => w,
            // A refusal (too many connections, bad version) comes as a connection error.
            Err(_) => match native::decode::<Response>(&first) {
                Ok(Response { result: Err(e), .. }) => return Err(e.into()),
                _ => return Err(Error::Protocol("the server's welcome is malformed".into())),
            },
        };
        // A resumed session keeps its generation: its guards and leases stay valid.
        let generation = match setup.previous {
            Some((_, previous)) if welcome.resumed => previous,
            _ => setup.generation,
        };
        let (read_half, write_half, socket) = stream.halves();
        let outbox = Arc::new(Outbox { state: Mutex::new(State::default()), ready: Signal::default() });
        let conn = Arc::new(Connection {
            ids: setup.ids,
            generation,
            reconnects: setup.reconnects,
            outbox: outbox.clone(),
            welcome,
            last_beat_ms: AtomicU64::new(coarse_ms()),
            closed_tx: watch::channel(false).0,
            socket,
        });
        tokio::spawn(write_loop(write_half, outbox, Arc::downgrade(&conn)));
        tokio::spawn(heartbeat_loop(Arc::downgrade(&conn)));
        tokio::spawn(read_loop(read_half, rbuf, Arc::downgrade(&conn)));
        Ok(conn)
    }

    /// Why the connection is dead, if it is.
    pub(crate) fn closed_reason(&self) -> Option<Error> {
        self.state().closed.clone()
    }

    /// True while the connection is usable.
    pub(crate) fn is_open(&self) -> bool {
        self.state().closed.is_none()
    }

    /// Turns true when the connection dies (its sender drops with the connection).
    pub(crate) fn watch_closed(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    /// What names this connection's session in the next connection's Hello, once this
    /// one is dead: resume it (the server takes it back if a cluster's leader change
    /// detached it), or, if a call that hands something over was in flight, end it so
    /// that what it was granted unbeknown to us goes back. `None` if the server does
    /// not resume sessions, or the connection is alive.
    pub(crate) fn previous(&self) -> Option<Previous> {
        let state = self.state();
        let resume = match &state.closed {
            None => return None,
            Some(_) if self.welcome.secret == 0 => return None,
            // The server ended it already.
            Some(Error::SessionExpired(_)) => false,
            Some(_) => !state.grant_in_flight,
        };
        Some(Previous { session: self.welcome.session, secret: self.welcome.secret, resume })
    }

    /// What the server said when we connected.
    pub(crate) fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Which connection of its manager this is: 1 for the first, one more per reconnect.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.outbox.state()
    }

    /// Encodes a request into the outbox, recording it with `register` under the state
    /// lock before the writer can take it (so its reply cannot arrive before it is
    /// recorded). Gives the request back with the reason if it cannot be encoded, is
    /// too large for the server, or the connection is dead: then nothing was sent.
    fn submit(
        &self,
        out: Outgoing,
        register: impl FnOnce(&mut State, u64),
    ) -> std::result::Result<u64, Box<(Outgoing, Error)>> {
        let id = out.request.id;
        match self.submit_encoded(id, |b| native::encode_request(&out.request, b), register) {
            Ok(()) => Ok(id),
            Err(reason) => Err(Box::new((out, reason))),
        }
    }

    /// [`Connection::submit`] of request `id`, which `encode` writes: the reason if
    /// nothing was sent.
    fn submit_encoded(
        &self,
        id: u64,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), agora_proto::WireError>,
        register: impl FnOnce(&mut State, u64),
    ) -> Result<()> {
        if self.heartbeats_missed() {
            self.close(Error::ConnectionLost(String::new()));
        }
        let mut state = self.state();
        if let Some(reason) = &state.closed {
            return Err(reason.clone());
        }
        let alone = state.alone();
        let start = state.queued.len();
        frame::encode_with(&mut state.queued, encode)?;
        let body_len = (state.queued.len() - start - 4) as u64;
        if body_len > self.welcome.max_frame {
            state.queued.truncate(start);
            return Err(Error::LimitExceeded(format!(
                "request of {body_len} bytes exceeds the server's frame limit of {} bytes",
                self.welcome.max_frame
            )));
        }
        register(&mut state, id);
        if let Some(socket) = self.socket.as_deref().filter(|_| alone) {
            if write_now(socket, &mut state) {
                self.heard_now();
                return Ok(());
            }
        }
        drop(state);
        // Only the first request of a batch wakes the writer: it takes them all.
        if start == 0 {
            self.outbox.ready.raise();
        }
        Ok(())
    }

    /// Encodes and queues a request; returns its id.
    fn send(&self, op: Op, slot: Option<Slot>) -> Result<u64> {
        self.send_registering(op, |state, id| {
            if let Some(slot) = slot {
                state.pending.insert(id, slot);
            }
        })
    }

    /// Encodes and queues a request, recorded with `register` (see [`Connection::submit`]).
    fn send_registering(&self, op: Op, register: impl FnOnce(&mut State, u64)) -> Result<u64> {
        self.submit(Outgoing::new(&self.ids, op), register).map_err(|unsent| unsent.1)
    }

    /// Queues a call and returns its [`Answer`], to await right away. A dead
    /// connection, or a request too large for this server, gives the call back unsent.
    pub(crate) fn queue_call(self: Arc<Self>, out: Outgoing, call: PendingCall) -> Result<Answer, Box<Unsent>> {
        let id = out.request.id;
        self.queue_encoded(id, |b| native::encode_request(&out.request, b), call)
            .map_err(|(reason, call, _)| Box::new(Unsent { out, call, reason }))
    }

    /// Queues a call of `method` on `object` with `args`, encoded from where they are
    /// (see [`Connection::queue_call`]).
    pub(crate) fn queue_method<A: CallArgs + ?Sized>(
        self: Arc<Self>,
        object: ObjectId,
        method: &str,
        args: &A,
        call: PendingCall,
    ) -> Result<Answer, Refused> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        match self.queue_encoded(id, |b| native::encode_call(id, object, method, args, b), call) {
            Ok(answer) => Ok(answer),
            Err((reason, _, true)) => Err(Refused::Call(reason)),
            Err((reason, call, false)) => Err(Refused::Dead(call, reason)),
        }
    }

    /// Queues call `id`, which `encode` writes, with a slot for its reply. If nothing
    /// was sent: the reason, the call, and whether the connection is still open (then
    /// the call itself was refused).
    fn queue_encoded(
        self: Arc<Self>,
        id: u64,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), agora_proto::WireError>,
        call: PendingCall,
    ) -> std::result::Result<Answer, (Error, PendingCall, bool)> {
        let mut on_orphan = Some(call.on_orphan);
        match self.submit_encoded(id, encode, |state, id| {
            state.pending.insert(id, Slot::new(on_orphan.take().expect("registered once")));
        }) {
            Ok(()) => Ok(Answer { conn: self, id, waiting: true }),
            Err(reason) => {
                let call = PendingCall { on_orphan: on_orphan.expect("not registered") };
                Err((reason, call, self.is_open()))
            }
        }
    }

    /// Sends a request and returns its [`Answer`] without waiting: for requests sent
    /// in bulk, the attaches of a reconnect.
    pub(crate) fn start_call(self: &Arc<Self>, op: Op) -> Result<Answer> {
        let id = self.send(op, Some(Slot::new(None)))?;
        Ok(Answer { conn: self.clone(), id, waiting: true })
    }

    /// Sends a request whose reply nobody waits for (releasing a handle on drop).
    pub(crate) fn send_and_forget(&self, op: Op) {
        let _ = self.send(op, None);
    }

    /// Notes that the server has just heard from us (a write went out): any message
    /// counts as a heartbeat.
    fn heard_now(&self) {
        self.last_beat_ms.store(coarse_ms(), Ordering::Relaxed);
    }

    /// True if this process could not send a heartbeat for longer than the server's
    /// heartbeat timeout (it was frozen, suspended or starved): the server has ended
    /// the session by now, whether or not its notice can reach us.
    fn heartbeats_missed(&self) -> bool {
        coarse_ms().saturating_sub(self.last_beat_ms.load(Ordering::Relaxed)) > self.welcome.heartbeat_timeout_ms
    }

    /// What a call in flight when the connection ended with `reason` fails with. On a
    /// manager that reconnects: [`Error::ConnectionLost`] saying the outcome is
    /// unknown (the call is not sent again: a repeated `add` would count twice),
    /// unless the server expired the session (then the reason itself).
    fn in_flight_error(&self, reason: Error) -> Error {
        match reason {
            Error::SessionExpired(_) => reason,
            _ if !self.reconnects => reason,
            Error::ConnectionLost(m) => Error::ConnectionLost(format!("{m}; {IN_FLIGHT}")),
            other => Error::ConnectionLost(format!("{other}; {IN_FLIGHT}")),
        }
    }

    /// Marks the connection dead and fails every pending call with `reason` (or with
    /// [`Error::SessionExpired`] if heartbeats were missed, whatever broke first).
    fn close(&self, reason: Error) {
        let reason = if self.heartbeats_missed() {
            Error::SessionExpired(format!(
                "this client sent no heartbeat for longer than the server's {} ms timeout (was it suspended?); \
                 the server ended the session and released its locks, permits and leases",
                self.welcome.heartbeat_timeout_ms
            ))
        } else {
            reason
        };
        let error = self.in_flight_error(reason.clone());
        // Every call still waiting fails; its caller is woken after the lock. Nothing
        // can come back for abandoned calls now: they are dropped after it too.
        let mut wake = Vec::new();
        let _abandoned = {
            let mut state = self.state();
            if state.closed.is_none() {
                let waiting = |slot: &Slot| slot.reply.is_none() && slot.on_orphan.is_some();
                state.grant_in_flight =
                    state.pending.values().any(waiting) || state.abandoned.values().any(Option::is_some);
            }
            state.closed.get_or_insert(reason);
            for slot in state.pending.values_mut().filter(|slot| slot.reply.is_none()) {
                slot.reply = Some(Err(error.clone()));
                wake.extend(slot.waker.take());
            }
            std::mem::take(&mut state.abandoned)
        };
        self.closed_tx.send_replace(true);
        wake.into_iter().for_each(std::task::Waker::wake);
    }
}

/// The writer sends what is still queued, then closes our side.
impl Drop for Connection {
    fn drop(&mut self) {
        self.outbox.ready.raise();
    }
}

/// What a call in flight when its connection was lost is told.
const IN_FLIGHT: &str =
    "the call was in flight, so whether it took effect is unknown (it was not sent again after reconnecting)";

/// The reply to a queued call ([`Connection::queue_call`]): a future to await right
/// after queueing. If the caller stops waiting (the future is dropped), the server is
/// told to cancel the call; should its value arrive anyway, the call's `on_orphan`
/// turns it into an operation that gives it back. A connection lost meanwhile fails
/// the call (see [`Connection::in_flight_error`]). Written by hand rather than as an
/// `async fn`: it is on every call's path, and one state machine fewer per call shows
/// in `agora bench`.
pub(crate) struct Answer {
    conn: Arc<Connection>,
    id: u64,
    /// Until the reply is read: dropping the future now abandons the call.
    waiting: bool,
}

impl Answer {
    /// The connection the call went out on.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }
}

impl std::future::Future for Answer {
    type Output = Result<Reply>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<Reply>> {
        let this = &mut *self;
        if !this.waiting {
            return std::task::Poll::Ready(Err(Error::Internal("a call's answer was awaited twice".into())));
        }
        let mut state = this.conn.state();
        // Only this future takes the slot out, so it is there until the reply is read.
        // One lookup, whether the reply is in (the slot comes out) or not.
        let Entry::Occupied(mut entry) = state.pending.entry(this.id) else {
            this.waiting = false;
            return std::task::Poll::Ready(Err(Error::Internal("a call's reply slot went missing".into())));
        };
        if entry.get().reply.is_some() {
            let slot = entry.remove();
            drop(state);
            this.waiting = false;
            // Its `on_orphan` goes with it, after the lock.
            return std::task::Poll::Ready(slot.reply.expect("just seen"));
        }
        let slot = entry.get_mut();
        // A waker replaced goes after the lock: dropping the last one frees its task.
        let replaced = match &slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            _ => slot.waker.replace(cx.waker().clone()),
        };
        drop(state);
        drop(replaced);
        std::task::Poll::Pending
    }
}

/// Abandons the call if its future is dropped before its reply was read.
impl Drop for Answer {
    fn drop(&mut self) {
        if !self.waiting {
            return;
        }
        let mut state = self.conn.state();
        let Some(slot) = state.pending.remove(&self.id) else { return };
        // The slot, its `on_orphan` and waker go after the lock (see `OnOrphan`).
        let Slot { on_orphan, reply, waker } = slot;
        if let Some(result) = reply {
            // The reply is in, unread: give back what it hands over.
            drop(state);
            drop(waker);
            if let (Ok(Reply::Value(value)), Some(on_orphan)) = (result, on_orphan) {
                on_orphan.run(value, |op| self.conn.send_and_forget(op));
            }
            return;
        }
        if state.closed.is_some() {
            drop(state);
            return;
        }
        state.abandoned.insert(self.id, on_orphan);
        drop(state);
        drop(waker);
        // A parked call must not go on waiting for (and taking) what nobody will read.
        let original = self.id;
        let _ = self.conn.send_registering(Op::Cancel { request: original }, |state, id| {
            state.cancels.insert(id, original);
        });
    }
}

/// Pings the server well within its heartbeat timeout for as long as the connection
/// lives, so an idle (or blocked) client keeps its session and what it holds.
async fn heartbeat_loop(conn: std::sync::Weak<Connection>) {
    let Some(timeout) = conn.upgrade().map(|c| c.welcome.heartbeat_timeout_ms) else { return };
    let period = std::time::Duration::from_millis((timeout / 4).max(50));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match conn.upgrade() {
            Some(conn) if conn.closed_reason().is_none() => conn.send_and_forget(Op::Ping),
            _ => return,
        }
    }
}

/// Milliseconds on a monotonic clock, read cheaply: every call checks it (see
/// [`Connection::heartbeats_missed`]), and a precise clock read was ~3 % of a pipelining
/// client's CPU (`clock_gettime` is slow on some VMs). On Linux the coarse clock only
/// reads the kernel's last tick (1–10 ms old): plenty, as the client's own pings are at
/// least 50 ms apart (see `heartbeat_loop`).
#[cfg(target_os = "linux")]
fn coarse_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to; the clock id is a constant Linux has.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) } == 0;
    debug_assert!(ok, "CLOCK_MONOTONIC_COARSE is always there on Linux");
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// Milliseconds on a monotonic clock (elsewhere than Linux: `Instant`, from first use).
#[cfg(not(target_os = "linux"))]
fn coarse_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

fn lost(e: FrameIoError) -> Error {
    match e {
        FrameIoError::Closed => Error::ConnectionLost("the server closed the connection".into()),
        other => Error::ConnectionLost(other.to_string()),
    }
}

/// The batch buffer up to 1 MiB is always kept for the next batch. A larger one (big
/// values went out) is kept only while its batches fill a quarter of it or more: a
/// client sending big values one after another reuses its buffer, instead of growing a
/// fresh one (and faulting its pages in) for every value, and the first small batch
/// after them gives the memory back (a client has one buffer, not thousands: no need to
/// wait longer, as the server does).
const BATCH_KEEPING: BufferKeeping = BufferKeeping::new(1 << 20, 1);

/// Writes whatever the outbox holds, one write per wake-up, until every handle to the
/// connection is gone (then what was queued last still goes out).
async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, outbox: Arc<Outbox>, conn: std::sync::Weak<Connection>) {
    // The server hears us from the first byte on: a long write (a big value on a slow
    // link) must not look like silence.
    let stamp = |conn: &std::sync::Weak<Connection>| {
        if let Some(conn) = conn.upgrade() {
            conn.heard_now();
        }
    };
    let mut batch = Vec::new();
    let mut keeping = BATCH_KEEPING;
    loop {
        outbox.ready.wait().await;
        // Checked before taking: whatever was queued before the last handle went is
        // in this take.
        let gone = conn.strong_count() == 0;
        outbox.take(&mut batch);
        if !batch.is_empty() {
            stamp(&conn);
            let written = writer.write_all(&batch).await;
            outbox.written();
            if keeping.keeps(batch.capacity(), batch.len()) {
                batch.clear();
            } else {
                batch = Vec::new();
            }
            match (written, conn.upgrade()) {
                (Ok(()), _) => stamp(&conn),
                (Err(e), Some(conn)) => return write_failed(&conn, e).await,
                (Err(_), None) => break,
            }
        }
        if gone {
            break;
        }
    }
    // Every handle to the connection is gone: close our side politely.
    let _ = writer.shutdown().await;
}

/// A write failed: the server may have closed the connection on purpose, having sent
/// its reason first (a session it expired, a shutdown). That reason is still on its way
/// in: give the reader a moment to deliver it, so callers learn why, not just that a
/// write failed.
async fn write_failed(conn: &Connection, e: std::io::Error) {
    const GRACE: std::time::Duration = std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(GRACE, async {
        while conn.closed_reason().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    conn.close(Error::ConnectionLost(format!("write failed: {e}")));
}

/// What the reader does, after the state lock, with the replies one read brought in
/// (whatever the maps held for them is dropped there too: see `OnOrphan`). Kept from
/// read to read, so that once warm it allocates nothing.
#[derive(Default)]
struct Delivery {
    /// The callers to wake: their replies are in their slots.
    wake: Vec<std::task::Waker>,
    /// The rare rest: replies whose callers stopped waiting, and abandoned calls a
    /// Cancel's reply settled.
    rest: Vec<Leftover>,
}

/// A reply nobody waits for, with how to give back what it hands over; or the
/// abandoned call a Cancel's reply settled (nothing can follow for it).
struct Leftover {
    unread: Option<(std::result::Result<Reply, agora_proto::WireError>, Option<OnOrphan>)>,
    _settled: Option<Option<OnOrphan>>,
}

impl Delivery {
    /// Puts the reply to call `id` into its caller's slot (its waker to be woken), or
    /// takes it out of the maps if nobody waits for it.
    fn take(&mut self, state: &mut State, id: u64, result: Result<Reply, WireError>) {
        // The cancel and abandoned maps are almost always empty: skip hashing then.
        let mut settled = None;
        if !state.cancels.is_empty() {
            if let Some(original) = state.cancels.remove(&id) {
                settled = state.abandoned.remove(&original);
            }
        }
        if let Some(slot) = state.pending.get_mut(&id) {
            slot.reply = Some(result.map_err(Error::from));
            self.wake.extend(slot.waker.take());
            if settled.is_some() {
                self.rest.push(Leftover { unread: None, _settled: settled });
            }
            return;
        }
        let orphan = if state.abandoned.is_empty() { None } else { state.abandoned.remove(&id).flatten() };
        self.rest.push(Leftover { unread: Some((result, orphan)), _settled: settled });
    }

    /// Wakes the callers, and gives back the values nobody waits for. A reply nobody
    /// waits for that hands nothing over (a release, a cancelled call's error) is
    /// dropped.
    fn deliver(&mut self, conn: &Connection) {
        self.wake.drain(..).for_each(std::task::Waker::wake);
        for leftover in self.rest.drain(..) {
            if let Some((Ok(Reply::Value(value)), Some(on_orphan))) = leftover.unread {
                on_orphan.run(value, |op| conn.send_and_forget(op));
            }
        }
    }
}

/// Reads replies and hands each to its caller. The replies a read brought in are
/// decoded and put into their slots under one lock, then their callers are woken: a
/// pipelined batch costs one lock and one look at the connection, not one per reply,
/// and a reply is moved once, from the message into its slot.
async fn read_loop<R: AsyncRead + Unpin>(mut reader: R, mut rbuf: BytesMut, conn: std::sync::Weak<Connection>) {
    let limit = u64::MAX; // the server is trusted to send what we asked for
    let mut room = ReadRoom::default();
    let mut delivery = Delivery::default();
    let reason = loop {
        // Every handle is gone: nobody can be waiting; the writer closes our side.
        let Some(live) = conn.upgrade() else { return };
        let drained = {
            let mut state = live.state();
            frame::drain_frames(&mut rbuf, limit, |body| {
                // A value reply (nearly every one) goes into its slot as it is decoded,
                // with no `Response` built around it and moved (BENCHMARKS.md, round 27).
                let value = native::decode_value_response(body).filter(|&(id, _)| id != CONNECTION_ERROR_ID);
                if let Some((id, value)) = value {
                    delivery.take(&mut state, id, Ok(Reply::Value(value)));
                    return std::ops::ControlFlow::Continue(());
                }
                // Anything else: serde (the fast path was just tried on it).
                match native::decode::<Response>(body) {
                    Ok(Response { id: CONNECTION_ERROR_ID, result }) => std::ops::ControlFlow::Break(match result {
                        Err(e) => e.into(),
                        Ok(_) => Error::Protocol("unexpected connection-level reply".into()),
                    }),
                    Ok(response) => {
                        delivery.take(&mut state, response.id, response.result);
                        std::ops::ControlFlow::Continue(())
                    }
                    Err(e) => std::ops::ControlFlow::Break(Error::Protocol(e.message)),
                }
            })
        };
        delivery.deliver(&live);
        // Not kept across the read: the last handle's drop is what ends the connection.
        drop(live);
        match drained {
            Ok(None) => frame::reserve_partial(&mut rbuf, limit),
            Ok(Some(reason)) => break reason,
            Err(e) => break lost(e.into()),
        }
        match room.read(&mut reader, &mut rbuf).await {
            Ok(0) if rbuf.is_empty() => break lost(FrameIoError::Closed),
            Ok(0) => break lost(FrameIoError::TruncatedFrame),
            Ok(_) => {}
            Err(e) => break lost(e.into()),
        }
    };
    if let Some(conn) = conn.upgrade() {
        conn.close(reason);
    }
}

#[cfg(target_os = "linux")]
fn connect_abstract(name: &str) -> std::io::Result<tokio::net::UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

#[cfg(not(target_os = "linux"))]
fn connect_abstract(_name: &str) -> std::io::Result<tokio::net::UnixStream> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract Unix sockets exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Polls `signal.wait()` once: whether it was ready.
    fn ready_now(signal: &Signal) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(std::pin::pin!(signal.wait()), &mut cx).is_ready()
    }

    #[test]
    fn a_raise_before_the_wait_is_kept_once() {
        let signal = Signal::default();
        assert!(!ready_now(&signal));
        signal.raise();
        signal.raise();
        assert!(ready_now(&signal), "kept for the next wait");
        assert!(!ready_now(&signal), "two raises before a wait wake it once, as a Notify's permit does");
    }

    /// The one window a sleeping writer could miss: a raise after its first look and
    /// before its waker is registered (that raise woke nobody).
    #[test]
    fn a_raise_between_the_look_and_the_registration_is_found() {
        let signal = Signal::default();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let first_look = std::cell::Cell::new(true);
        let polled = signal.poll_with(&mut cx, |signal| {
            if first_look.replace(false) {
                signal.raise();
                return false;
            }
            signal.raised.swap(false, std::sync::atomic::Ordering::Acquire)
        });
        assert!(polled.is_ready());
    }

    /// The writer's pattern: a task waits again and again while other threads raise the
    /// signal after queueing; it never sleeps through a raise (the guard would end it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raise_from_another_thread_wakes_a_sleeping_waiter() {
        const RAISES: usize = 10_000;
        let signal = Arc::new(Signal::default());
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiter = {
            let (signal, done) = (signal.clone(), done.clone());
            tokio::spawn(async move {
                while done.load(std::sync::atomic::Ordering::Acquire) < RAISES {
                    signal.wait().await;
                }
            })
        };
        let raiser = std::thread::spawn(move || {
            for _ in 0..RAISES {
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
                signal.raise();
                std::thread::yield_now();
            }
        });
        raiser.join().unwrap();
        tokio::time::timeout(Duration::from_secs(60), waiter).await.expect("the waiter slept through a raise").unwrap();
    }

    #[test]
    fn a_big_batch_buffer_is_kept_only_while_its_batches_fill_it() {
        const MIB: usize = 1 << 20;
        let mut keeping = BATCH_KEEPING;
        // Up to 1 MiB: always kept, however little the last batch took.
        assert!(keeping.keeps(MIB, 0));
        // Beyond it: kept while big values keep going out (a 1 MiB value in a buffer
        // that doubled to 2 MiB)...
        assert!(keeping.keeps(2 * MIB, MIB + 40));
        assert!(keeping.keeps(8 * MIB, 2 * MIB));
        // ...and given back by the first small batch after them.
        assert!(!keeping.keeps(8 * MIB, 2 * MIB - 1));
        assert!(!keeping.keeps(2 * MIB, 100));
    }

    /// A socket that takes at most `room` bytes per write, and remembers what it took.
    struct Taker {
        room: usize,
        took: Mutex<Vec<u8>>,
    }

    impl SocketWrite for Taker {
        fn poll_write_ready(&self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.took.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    fn state_with(queued: &[u8]) -> State {
        State { queued: queued.to_vec(), ..State::default() }
    }

    fn taker(room: usize) -> Taker {
        Taker { room, took: Mutex::new(Vec::new()) }
    }

    #[test]
    fn a_request_the_socket_takes_whole_leaves_nothing_queued() {
        let (socket, mut state) = (taker(usize::MAX), state_with(b"request"));
        assert!(write_now(&socket, &mut state));
        assert!(state.queued.is_empty());
        assert_eq!(*socket.took.lock().unwrap(), b"request");
    }

    /// What the socket did not take stays queued, from where it stopped: the writer
    /// sends exactly the rest, and the bytes on the wire are the request's, in order.
    #[test]
    fn what_the_socket_does_not_take_stays_queued_for_the_writer() {
        let (socket, mut state) = (taker(3), state_with(b"request"));
        assert!(!write_now(&socket, &mut state));
        assert_eq!(state.queued, b"uest");
        assert_eq!(*socket.took.lock().unwrap(), b"req");

        let (full, mut state) = (taker(0), state_with(b"request"));
        assert!(!write_now(&full, &mut state));
        assert_eq!(state.queued, b"request");
    }

    /// A socket that fails (the server went away) takes nothing: the request stays
    /// queued for the writer, whose write fails the same way and ends the connection
    /// with the reason (`write_failed`), failing the call.
    #[test]
    fn a_failing_socket_leaves_the_request_to_the_writer() {
        struct Broken;
        impl SocketWrite for Broken {
            fn poll_write_ready(&self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn try_write(&self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let mut state = state_with(b"request");
        assert!(!write_now(&Broken, &mut state));
        assert_eq!(state.queued, b"request");
    }

    #[test]
    fn a_big_request_is_left_to_the_writer() {
        let (socket, mut state) = (taker(usize::MAX), state_with(&vec![7; WRITE_NOW_AT_MOST + 1]));
        assert!(!write_now(&socket, &mut state));
        assert_eq!(state.queued.len(), WRITE_NOW_AT_MOST + 1);
        assert!(socket.took.lock().unwrap().is_empty());
    }

    /// A request is alone only while the writer has no batch in hand and no call
    /// waits for a reply; the writer's take and its end of writing move the first.
    #[test]
    fn a_request_is_alone_only_with_no_write_under_way_and_no_call_waiting() {
        let outbox = Outbox { state: Mutex::new(state_with(b"")), ready: Signal::default() };
        assert!(outbox.state().alone());
        outbox.state().queued.extend_from_slice(b"batch");
        assert!(!outbox.state().alone(), "a request is queued before it");
        let mut batch = Vec::new();
        outbox.take(&mut batch);
        assert_eq!(batch, b"batch");
        assert!(!outbox.state().alone(), "the writer is writing a batch");
        outbox.written();
        assert!(outbox.state().alone());
        // Taking an empty outbox starts no write.
        batch.clear();
        outbox.take(&mut batch);
        assert!(outbox.state().alone());
        outbox.state().pending.insert(1, Slot::new(None));
        assert!(!outbox.state().alone(), "a call waits for its reply");
    }
}
