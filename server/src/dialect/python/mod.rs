//! The Python dialect: CPython's `multiprocessing.managers` protocol (spec §3), so a
//! stock `SyncManager(address, authkey).connect()` works against agora.
//!
//! A connection that opens with a pickle is a CPython client. It is either a one-shot
//! control connection (`create`, `incref`, `decref`, …: one request, one reply, close)
//! or, after `accept_connection`, a client thread's persistent connection carrying its
//! method calls one at a time. Pickles are decoded by [`agora_proto::pickle`], which
//! never executes anything. Like the native dialect it is a translator: requests become
//! engine commands (`Call`, `Open`, `Incref`, `Decref`, `Iterate`…) applied through the
//! parking layer, so both dialects see the same objects under the same rules.
//!
//! Ownership (RLock, Condition, lock grants, leases) belongs to the persistent
//! connection's session and is released when it closes — unlike CPython, whose
//! manager keeps a dead client's locks forever.
//!
//! Nested proxies (a proxy stored inside a managed object) are references by ident
//! (module `references`): the container keeps the referenced object alive until it is
//! freed itself (the engine's rule, for both dialects), and a reference sent back to a client on this machine carries the
//! authkey, so CPython's client can rebuild it without the
//! `current_process().authkey` workaround (never over non-loopback TCP).
//!
//! Named objects reach CPython clients two ways: the operator exposes one under a
//! typeid of its own (`--expose`, [`exposed`]), or a client opens any by kind and name
//! at run time through the `agora` typeid ([`runtime`]).
//!
//! Conformance is checked by CPython's own manager tests
//! (`tests/python/cpython_manager_suite.py`, run by `tests/tests/python_conformance.rs`).

mod answerer;
mod control;
pub mod exposed;
pub mod holders;
mod references;
mod reply;
pub mod runtime;

use std::sync::Arc;

use agora_proto::frame;
use agora_proto::{pickle, ErrorCode, Value, WireError};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access::{Level, Who};
use crate::busy_poll::BusyPoll;
use crate::dedicated::Placement;
use crate::engine::{Access, Answer, Command, Completion, Parked, Session, Ticket};
use crate::listener::Transport;
use crate::parking::line::Settled;
use crate::parking::{Mail, Mailbox};
use crate::server::{PeerEntry, Shared};
use reply::{traceback, Reply};

/// One decoded request: `(ident, methodname, args, kwds)`.
struct Request {
    ident: Option<String>,
    method: String,
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
}

/// Reads the request tuple CPython's client sends.
fn parse_request(body: &[u8]) -> Result<Request, String> {
    let value = pickle::decode(body).map_err(|e| format!("cannot decode request: {}", e.message))?;
    let Value::Tuple(mut parts) = value else { return Err("a request must be a 4-tuple".into()) };
    if parts.len() != 4 {
        return Err(format!("a request must be a 4-tuple, got {} items", parts.len()));
    }
    let kwds = parts.pop().unwrap_or_default();
    let args = parts.pop().unwrap_or_default();
    let method = parts.pop().unwrap_or_default();
    let ident = parts.pop().unwrap_or_default();
    let ident = match ident {
        Value::None => None,
        Value::Str(s) => Some(s.into_string()),
        other => return Err(format!("ident must be a str or None, not {}", other.type_name())),
    };
    let Value::Str(method) = method else { return Err("method name must be a str".into()) };
    let args = match args {
        Value::Tuple(a) | Value::List(a) => a,
        other => return Err(format!("args must be a tuple, not {}", other.type_name())),
    };
    let kwargs = match kwds {
        Value::Dict(d) => d
            .into_iter()
            .map(|(k, v)| match k {
                Value::Str(k) => Ok((k.into_string(), v)),
                other => Err(format!("keywords must be strings, not {}", other.type_name())),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("kwds must be a dict, not {}", other.type_name())),
    };
    Ok(Request { ident, method: method.into_string(), args, kwargs })
}

/// Parses a CPython ident (lowercase hex of the object id).
fn parse_ident(ident: &str) -> Option<u64> {
    u64::from_str_radix(ident, 16).ok()
}

/// An ident as CPython clients see it.
pub fn ident(id: u64) -> String {
    format!("{id:x}")
}

/// A refusal for a CPython client (too many connections): a `#TRACEBACK` it will raise
/// as `RemoteError` with our reason.
pub async fn refuse<S: Transport>(stream: &mut S, error: &WireError) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reply_error(stream, error)).await;
}

/// Sends `error` as the reply to a CPython client's request (a relay that lost the
/// leader mid-call says so).
pub async fn reply_error<S: Transport>(stream: &mut S, error: &WireError) -> std::io::Result<()> {
    let mut out = Vec::new();
    frame::encode(&Reply::Error(error.clone()).to_pickle(), &mut out);
    stream.write_all(&out).await
}

/// True if `first`, a CPython connection's first request, makes it a client thread's
/// persistent connection (`accept_connection`) rather than a one-shot control one.
pub fn opens_persistent(first: &[u8]) -> bool {
    parse_request(first).is_ok_and(|r| r.ident.is_none() && r.method == "accept_connection")
}

/// One CPython connection.
struct PyConn<'a> {
    /// What it keeps from one call to the next, wherever it is served.
    kept: Kept,
    /// The call waiting when the client went away, to be abandoned.
    left_waiting: Option<(u64, Ticket)>,
    shared: &'a Shared,
    /// Set by `accept_connection`: this is a client thread's persistent connection.
    persistent: bool,
    /// The log record the next reply depends on through a delivery (durability on).
    delivered_lsn: u64,
    /// How many bytes of the next reply the session's line already wrote (a parked
    /// call's, written by the thread that delivered it; `usize::MAX`: all).
    reply_written: usize,
    /// The call being answered waited (was parked) before its answer came.
    waited: bool,
}

/// A client thread's persistent connection between two calls, off any runtime: its
/// session and what it read past the last call, to go on with on another thread
/// ([`crate::dedicated`]). Nothing of a call is in flight, and no line is armed.
/// Whoever holds one must resume it ([`serve_placed`]) or [`Moving::close`] it: its
/// session (and everything it holds — locks, grants) lives until then.
pub struct Moving {
    kept: Kept,
    /// Bytes read past the last request: the start of the next.
    rbuf: BytesMut,
    /// The session's entry among the server's peers (what `agora get` shows).
    entry: PeerEntry,
}

impl Moving {
    /// Ends the connection's session, as a connection that closes ends it.
    pub fn close(self, shared: &Shared) {
        self.kept.close(shared, None);
    }
}

/// What a connection keeps from one call to the next, wherever it is served.
struct Kept {
    session: Session,
    mailbox: Mailbox,
    /// How references in replies are rewritten for this client.
    outgoing: references::Outgoing,
    /// The peer is on this machine (a Unix socket or a loopback address).
    local_peer: bool,
    /// The peer's process, where the kernel names it: the holder of the references
    /// this connection takes.
    holder: Option<holders::Process>,
    /// The user it authenticated as: every request is checked against its rules.
    who: Who,
}

impl Kept {
    /// Ends the session (its holdings go back); `left_waiting`, a call it left waiting,
    /// is abandoned.
    fn close(self, shared: &Shared, left_waiting: Option<(u64, Ticket)>) {
        shared.parking.close(self.session, self.mailbox, left_waiting);
    }
}

/// Where a client thread's persistent connection starts on a runtime.
pub enum Start {
    /// Freshly accepted: its first request (`accept_connection`) was read, with `rbuf`
    /// holding what came after it; a session is opened for it.
    Fresh { rbuf: BytesMut, first: Bytes, who: Who },
    /// Moved here from another thread between two calls.
    Resumed(Moving),
}

/// What to do after a reply.
enum After {
    Continue,
    /// Close after sending the reply (one-shot control connections).
    Close,
    /// `shutdown`: CPython's server sends its reply twice, then stops.
    Shutdown,
}

/// Serves a CPython client whose first frame (a pickled request) was already read,
/// where it is, until it is done (a client thread's connection on a thread of its own:
/// [`serve_placed`]).
pub async fn serve<S: Transport>(
    mut stream: S,
    rbuf: BytesMut,
    first: Bytes,
    peer: &str,
    who: Who,
    shared: Arc<Shared>,
) {
    if let Some((session, mailbox, _entry)) = open_session(&mut stream, peer, &shared).await {
        serve_session(stream, rbuf, Some(first), peer, who, &shared, (session, mailbox), false).await;
    }
}

/// Opens a new connection's session, with its entry among the server's peers (which
/// must live as long as the session); `None` if none can be opened: then the client
/// was told why.
async fn open_session<S: Transport>(
    stream: &mut S,
    peer: &str,
    shared: &Shared,
) -> Option<(Session, Mailbox, PeerEntry)> {
    match shared.open_session(peer, false) {
        Ok(opened) => Some(opened),
        Err(e) => {
            // A replicated node that stopped leading: the client raises our reason as a
            // `RemoteError`, and may connect again (through another node).
            tracing::debug!(%peer, error = %e.message, "no session; closing");
            refuse(stream, &e).await;
            None
        }
    }
}

/// Serves a CPython connection in `opened`, a session opened (or resumed) for it,
/// starting with `first` if a request was read already. A follower's relay of a
/// CPython client opens its session this way: `persistent` if it resumed one (only a
/// client thread's persistent connection lives on past a leader change).
#[allow(clippy::too_many_arguments)]
pub async fn serve_session<S: Transport>(
    mut stream: S,
    rbuf: BytesMut,
    first: Option<Bytes>,
    peer: &str,
    who: Who,
    shared: &Shared,
    opened: (Session, Mailbox),
    persistent: bool,
) {
    let mut conn = PyConn::new(&stream, shared, who, opened, persistent);
    serve_requests(&mut stream, rbuf, first, peer, &mut conn, None, None).await;
    conn.close();
}

/// Serves a client thread's persistent connection from `start` until it ends, or until
/// `place` says it moves between two calls: then returns it, to be resumed elsewhere.
pub async fn serve_placed<S: Transport>(
    stream: &mut S,
    start: Start,
    peer: &str,
    shared: &Shared,
    poll: Option<&mut BusyPoll>,
    place: &mut Placement,
) -> Option<Moving> {
    let (mut conn, rbuf, first, entry) = match start {
        Start::Fresh { rbuf, first, who } => {
            let (session, mailbox, entry) = open_session(stream, peer, shared).await?;
            (PyConn::new(stream, shared, who, (session, mailbox), false), rbuf, Some(first), entry)
        }
        // Only a persistent connection moves.
        Start::Resumed(Moving { kept, rbuf, entry }) => (PyConn::with(shared, kept, true), rbuf, None, entry),
    };
    match serve_requests(stream, rbuf, first, peer, &mut conn, poll, Some(place)).await {
        Some(rbuf) => Some(Moving { kept: conn.kept, rbuf, entry }),
        None => {
            conn.close();
            None
        }
    }
}

impl<'a> PyConn<'a> {
    /// A connection on `stream` in `opened`, a session opened (or resumed) for it.
    fn new<S: Transport>(
        stream: &S,
        shared: &'a Shared,
        who: Who,
        opened: (Session, Mailbox),
        persistent: bool,
    ) -> Self {
        let local_peer = stream.peer_is_local();
        let holder = stream.peer_pid().and_then(|pid| shared.client_refs.holder(pid));
        let local = stream.local_address();
        let advertised = local.as_ref().and_then(|local| shared.advertised(local));
        let token_address = advertised.or(local.as_ref());
        // Nested proxies carry the key this client authenticated with, never another user's.
        let outgoing = references::Outgoing::new(local_peer, who.key(shared), token_address, advertised.is_some());
        let (session, mailbox) = opened;
        PyConn::with(shared, Kept { session, mailbox, outgoing, local_peer, holder, who }, persistent)
    }

    /// A connection with what it `kept`, before its next call.
    fn with(shared: &'a Shared, kept: Kept, persistent: bool) -> Self {
        PyConn { kept, left_waiting: None, shared, persistent, delivered_lsn: 0, reply_written: 0, waited: false }
    }

    /// Ends the connection's session; a call it left waiting is abandoned.
    fn close(self) {
        self.kept.close(self.shared, self.left_waiting);
    }
}

/// The request loop of one CPython connection; returns when it is done (`None`), or
/// with what it read past the last call when `place` says it moves (`Some`).
async fn serve_requests<S: Transport>(
    stream: &mut S,
    mut rbuf: BytesMut,
    first: Option<Bytes>,
    peer: &str,
    conn: &mut PyConn<'_>,
    mut poll: Option<&mut BusyPoll>,
    mut place: Option<&mut Placement>,
) -> Option<BytesMut> {
    let shared = conn.shared;
    let mut shutdown = shared.shutdown.clone();
    let max_frame = shared.config.limits.max_frame;
    let mut next = first;
    const OUT_START: usize = 4096;
    let mut out = Vec::with_capacity(OUT_START);
    let mut out_keeping = super::BUFFER_KEEPING;
    loop {
        let body = match next.take() {
            Some(body) => body,
            None => {
                // A request already buffered needs no waiting for.
                if rbuf.is_empty() {
                    // While other connections are calling, their threads need the CPUs:
                    // this one then waits to be woken by a request alone.
                    let others_calling = poll.as_deref_mut().is_some_and(|poll| poll.wait(|| stream.input_waiting()));
                    // On a thread of its own, the connection waits blocked for a while,
                    // without a turn of its runtime. What that finds other than bytes
                    // (an end, an error, nothing yet) the read below finds too.
                    if !*shutdown.borrow() {
                        let _ = stream.read_blocking(&mut rbuf, others_calling);
                    }
                }
                let read = match frame::take_frame(&mut rbuf, max_frame) {
                    Ok(Some(body)) => Ok(body),
                    Ok(None) => tokio::select! {
                        biased;
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                        read = read_request(stream, &mut rbuf, max_frame) => read,
                    },
                    Err(e) => Err(e.into()),
                };
                if let Some(poll) = poll.as_deref_mut() {
                    poll.arrived();
                }
                match read {
                    Ok(body) => body,
                    Err(agora_proto::io::FrameIoError::Closed) => return None,
                    // A client killed or cut off: its connection ends, nothing was malformed.
                    Err(e @ (agora_proto::io::FrameIoError::Io(_) | agora_proto::io::FrameIoError::TruncatedFrame)) => {
                        tracing::debug!(%peer, error = %e, "CPython client connection lost; closing");
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "bad frame from a CPython client; closing");
                        return None;
                    }
                }
            }
        };
        let (mut reply, after) = match parse_request(&body) {
            // CPython answers an undecodable request with a traceback and carries on.
            Err(why) => (Reply::Traceback(traceback("pickle.UnpicklingError", &why)), After::Continue),
            Ok(request) => match conn.handle(request, stream, &mut rbuf, peer).await {
                Some(done) => done,
                None => return None, // the client went away while its call was parked
            },
        };
        if let Reply::Return(value) = &mut reply {
            conn.kept.outgoing.localize(value);
        }
        // (`out` still holds the last reply: how much of it that one used.)
        if out_keeping.keeps(out.capacity(), out.len()) {
            out.clear();
        } else {
            out = Vec::with_capacity(OUT_START);
        }
        frame_reply(&mut out, &reply);
        if matches!(after, After::Shutdown) {
            out.extend_from_within(..);
        }
        // With durability on, a reply goes out once the log has what it depends on.
        // A client that leaves meanwhile (the log cannot be written) ends its session.
        let depends_on = conn.kept.session.logged().max(std::mem::take(&mut conn.delivered_lsn));
        if !shared.parking.settle_promptly(depends_on).await {
            tokio::select! {
                _ = shared.parking.settle(depends_on) => {}
                _ = peer_closed(stream, &mut rbuf, shared, peer) => return None,
                _ = shutdown.wait_for(|stop| *stop) => return None,
            }
        }
        // The part of a parked call's reply its line wrote is not written again.
        let unwritten = out.get(std::mem::take(&mut conn.reply_written)..).unwrap_or_default();
        if !unwritten.is_empty() && stream.write_all(unwritten).await.is_err() {
            return None;
        }
        match after {
            // Between two calls, the connection may move to where its calls cost less.
            After::Continue => {
                let waited = std::mem::take(&mut conn.waited);
                if place.as_deref_mut().is_some_and(|place| place.after_call(waited)) {
                    return Some(rbuf);
                }
            }
            After::Close => return None,
            After::Shutdown => {
                conn.shared.stopper.shutdown();
                return None;
            }
        }
    }
}

impl PyConn<'_> {
    /// Runs one request; `None` if the client disconnected while it was parked.
    async fn handle<S: Transport>(
        &mut self,
        request: Request,
        stream: &mut S,
        rbuf: &mut BytesMut,
        peer: &str,
    ) -> Option<(Reply, After)> {
        self.shared.counters.requests_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(ident) = request.ident.clone() else {
            let (reply, after) = self.control(request);
            let after = match after {
                After::Continue if !self.persistent => After::Close,
                other => other,
            };
            return Some((reply, after));
        };
        if ident == runtime::IDENT {
            return Some((self.runtime_call(&request.method, request.args, request.kwargs), After::Continue));
        }
        let engine = self.shared.parking.engine();
        let Some(id) = parse_ident(&ident) else {
            return Some((Reply::Traceback(traceback("KeyError", &format!("'{ident}'"))), After::Continue));
        };
        let Ok(kind) = engine.kind_of(id) else {
            return Some((reply::unknown_ident(engine, id, &ident), After::Continue));
        };
        let args = agora_proto::native::Args { positional: request.args, keywords: request.kwargs };
        let allowed = match request.method.as_str() {
            // A dict's `__iter__` is not a declared method (it makes an iterator object).
            "#GETVALUE" | "__repr__" | "__str__" | "__iter__" => {
                self.kept.who.object(self.shared, id, Level::Read, "read")
            }
            method => self.kept.who.call(self.shared, id, method, &args),
        };
        if let Err(e) = allowed {
            return Some((Reply::Error(e), After::Continue));
        }
        let reply = match request.method.as_str() {
            "#GETVALUE" => getvalue(self.shared, id),
            "__repr__" | "__str__" => {
                engine.repr(id).map(|r| Value::Str(r.into())).map_or_else(Reply::Error, Reply::Return)
            }
            method if !is_exposed(self.shared, id, &kind, method) => Reply::Traceback(traceback(
                "AttributeError",
                &format!("method '{method}' of <class '{kind}'> object is not in exposed"),
            )),
            // A dict's iterator is an object of its own; a set answers `__iter__` itself.
            "__iter__" if kind == agora_proto::native::Kind::Dict => self.iterate(id),
            _ => {
                let at = engine.now();
                match self.shared.parking.call(&self.kept.session, None, id, Access::Id, &request.method, args, at) {
                    Ok(Answer::Value(value)) => Reply::Return(value),
                    Ok(Answer::Parked(parked)) => {
                        self.waited = true;
                        match self.wait_parked(id, parked, stream, rbuf, peer).await {
                            Some(Ok(value)) => Reply::Return(value),
                            Some(Err(e)) => Reply::Error(e),
                            None => return None,
                        }
                    }
                    Ok(other) => {
                        Reply::Error(WireError::new(ErrorCode::Internal, format!("unexpected answer {other:?}")))
                    }
                    Err(e) => Reply::Error(e),
                }
            }
        };
        Some((reply, After::Continue))
    }

    /// `iter(dict_proxy)`: a snapshot of the keys as a new Iterator object, sent as `#PROXY`.
    fn iterate(&mut self, id: u64) -> Reply {
        let command =
            Command::Iterate { session: self.kept.session.id(), object: id, at: self.shared.parking.engine().now() };
        match self.shared.parking.run(&self.kept.session, command) {
            Ok(Answer::Opened { object, kind, created }) => {
                self.shared.client_refs.took(self.kept.holder, object);
                // The iterator is an anonymous object of this client's user.
                if let Err(e) = self.kept.who.opened(self.shared, object, None, created) {
                    return Reply::Error(e);
                }
                Reply::Proxy {
                    exposed: exposed::exposed(&kind),
                    typeid: agora_proto::methods::iterator::TYPEID.to_owned(),
                    ident: ident(object),
                }
            }
            Ok(other) => Reply::Error(WireError::new(ErrorCode::Internal, format!("unexpected answer {other:?}"))),
            Err(e) => Reply::Error(e),
        }
    }

    /// Waits for a parked call's answer while watching the connection: a client that
    /// disconnects (killed while blocked in `q.get()`) leaves its call to be abandoned,
    /// so it takes nothing; so does a shutdown. In memory, the session's line is armed
    /// meanwhile, so the thread that delivers the answer may write it; then this one
    /// learns of it when the client's next call (or its close) wakes it. A client that
    /// sent a request behind the waiting call (it pipelines) would not wake it again:
    /// then the line is not armed, or disarmed once that request comes, and the answer
    /// comes through the mailbox.
    async fn wait_parked<S: Transport>(
        &mut self,
        object: u64,
        parked: Parked,
        stream: &mut S,
        rbuf: &mut BytesMut,
        peer: &str,
    ) -> Option<Completion> {
        let mut waiting = self.shared.parking.engine().waiting(object);
        let socket = stream.raw_socket().filter(|_| self.shared.parking.answers_on_lines());
        let line = self.kept.mailbox.line();
        if let Some(socket) = socket.filter(|_| rbuf.is_empty()) {
            line.arm(parked.ticket, Box::new(answerer::SocketAnswerer::new(socket)), waiting.take());
        }
        // Whichever way this returns (or is dropped), no answerer may write once it has.
        let _disarm = Disarm(&line);
        let mut shutdown = self.shared.shutdown.clone();
        // How much of the answer the line wrote before it was disarmed early.
        let mut begun = 0;
        loop {
            let woke = tokio::select! {
                mail = self.kept.mailbox.recv() => Woke::Mail(Some(mail)),
                read = stream.read_buf(rbuf) => match read {
                    // A stock CPython client sends nothing while it waits, unless its
                    // answer went out through the line and this is its next call. If
                    // not, the line's answer could go out unnoticed: it is disarmed.
                    Ok(read) if read > 0 => match line.disarm_still_waiting() {
                        (Settled::Answered(delivery), _) => {
                            self.reply_written = usize::MAX;
                            return Some(delivery.completion);
                        }
                        (settled, still_waiting) => {
                            // Pipelined bytes: the call waits on, counted here now.
                            waiting = waiting.or(still_waiting);
                            begun = begun.max(settled.begun());
                            if sent_too_much_behind(rbuf, self.shared, peer) {
                                Woke::Mail(None)
                            } else {
                                continue;
                            }
                        }
                    },
                    _ => Woke::Mail(None),
                },
                _ = shutdown.wait_for(|stop| *stop) => Woke::Shutdown,
            };
            // (Outside the select: what `wait_for` returned must not live across an await.)
            let mail = match woke {
                Woke::Mail(mail) => mail,
                Woke::Shutdown => return Some(self.answer_at_shutdown(object, parked.ticket, &line, begun).await),
            };
            match mail {
                Some(Mail::Delivery(delivery)) if delivery.waiter.ticket == parked.ticket => {
                    // The command that delivered it is in the journal by now.
                    self.delivered_lsn = self.shared.parking.appended();
                    self.reply_written = line.disarm().begun().max(begun);
                    return Some(delivery.completion);
                }
                // Not this call's (one abandoned earlier): it goes back.
                Some(Mail::Delivery(other)) => self.shared.parking.return_delivery(other),
                Some(Mail::Silence) => {}
                None => {
                    // The client left. An answer its line wrote whole was the client's
                    // (its session's end releases what it was granted, as for any
                    // answer it was sent); otherwise the call is abandoned.
                    if !matches!(line.disarm(), Settled::Answered(_)) {
                        self.left_waiting = Some((object, parked.ticket));
                    }
                    return None;
                }
            }
        }
    }

    /// What a parked call answers once shutdown has begun: the call was abandoned then,
    /// unless its answer is already here (on the line, or in the mailbox); otherwise
    /// the client hears why it ends. `begun`: what the line wrote before it was
    /// disarmed early.
    async fn answer_at_shutdown(
        &mut self,
        object: u64,
        ticket: Ticket,
        line: &crate::parking::line::Line,
        begun: usize,
    ) -> Completion {
        let begun = match line.disarm() {
            Settled::Answered(delivery) => {
                self.reply_written = usize::MAX;
                return delivery.completion;
            }
            settled => settled.begun().max(begun),
        };
        // Part of the answer went out: its delivery is in the mailbox, or about to be
        // (the line's thread mails it next), and the rest must follow, not a notice.
        loop {
            let mail = if begun > 0 { Some(self.kept.mailbox.recv().await) } else { self.kept.mailbox.try_recv() };
            let Some(mail) = mail else { break };
            match mail {
                Mail::Delivery(delivery) if delivery.waiter.ticket == ticket => {
                    self.delivered_lsn = self.shared.parking.appended();
                    self.reply_written = begun;
                    return delivery.completion;
                }
                Mail::Delivery(other) => self.shared.parking.return_delivery(other),
                Mail::Silence => {}
            }
        }
        self.left_waiting = Some((object, ticket));
        Err(crate::parking::shutting_down())
    }
}

/// What woke a connection waiting for a parked call's answer.
enum Woke {
    /// Mail, or `None`: the client left.
    Mail(Option<Mail>),
    /// The server began shutting down.
    Shutdown,
}

/// Disarms a line when dropped (see [`PyConn::wait_parked`]).
struct Disarm<'a>(&'a crate::parking::line::Line);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

/// Appends `reply` to `out` as one frame.
fn frame_reply(out: &mut Vec<u8>, reply: &Reply) {
    frame_with(out, |body| reply.write_pickle(body));
}

/// Appends the body `write` writes to `out` as one frame: the framing of every reply,
/// whichever thread writes it.
fn frame_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    frame::encode_with(out, |body| {
        write(body);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
}

/// True if a CPython client may call `method` on object `id` of `kind`: its exposed
/// names, agora's extras for CPython clients ([`exposed::extras`]), or any method of a
/// custom kind.
fn is_exposed(shared: &Shared, id: u64, kind: &agora_proto::native::Kind, method: &str) -> bool {
    let names = exposed::exposed(kind);
    if names.is_empty() {
        return shared.parking.engine().has_method(id, method);
    }
    names.contains(&method) || exposed::extras(kind).contains(&method)
}

/// `_getvalue()`: a copy of the referent, shaped as CPython's server would pickle it.
fn getvalue(shared: &Shared, id: u64) -> Reply {
    use agora_proto::native::Kind;
    use agora_proto::value::{Build, Dict, Object};
    let (kind, snapshot, typecode) = match shared.parking.engine().value_of(id) {
        Ok(v) => v,
        Err(e) => return Reply::Error(e),
    };
    let instance = |qualname: &str, state: Dict| {
        Value::Object(Box::new(Object {
            module: "multiprocessing.managers".into(),
            qualname: qualname.into(),
            build: Build::NewObj(vec![]),
            state: Some(Value::Dict(state)),
            list_items: vec![],
            dict_items: vec![],
        }))
    };
    match kind {
        Kind::Value => {
            let typecode = typecode.unwrap_or_default();
            let state =
                Dict::from_pairs([(Value::Str("_typecode".into()), typecode), (Value::Str("_value".into()), snapshot)]);
            state.map(|s| Reply::Return(instance("Value", s))).unwrap_or_else(Reply::Error)
        }
        Kind::Namespace => match snapshot {
            Value::Dict(attrs) => Reply::Return(instance("Namespace", attrs)),
            other => Reply::Return(other),
        },
        _ => Reply::Return(snapshot),
    }
}

/// Reads one request frame, making sure a CPython client is never kept waiting for our
/// ACK (it has Nagle on: a message above 16 KiB goes out as a header write and a body
/// write, and the body's tail waits for the ACK of the header, which Linux delays
/// ~40 ms while we wait for the rest). So before a read that continues a partial frame,
/// TCP_QUICKACK is re-armed, which also sends the pending ACK at once. A request that
/// arrives whole needs none (our reply carries the ACK), which saves a `setsockopt` and
/// often a bare ACK segment per request.
async fn read_request<S: Transport>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_frame: u64,
) -> Result<Bytes, agora_proto::io::FrameIoError> {
    let mut room = agora_proto::io::ReadRoom::default();
    agora_proto::io::read_frame_noting_partial(stream, rbuf, max_frame, &mut room, |s| s.before_read()).await
}

/// Completes when the peer closes (a CPython client sends nothing while it waits), or
/// sends more than it may ([`sent_too_much_behind`]).
async fn peer_closed<S: Transport>(stream: &mut S, rbuf: &mut BytesMut, shared: &Shared, peer: &str) {
    loop {
        match stream.read_buf(rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) if sent_too_much_behind(rbuf, shared, peer) => return,
            Ok(_) => {}
        }
    }
}

/// True (and logged) if a client has sent more than it may behind a call not answered
/// yet: what it sends there is kept unread until then, so it may send one request of
/// the largest size a frame may have (`--max-frame`), with its header, and no more. A
/// stock CPython client sends nothing there; one that sends more is let go as one that
/// left (a call of its that waits is abandoned, and nothing is handed to it), so that
/// no client can grow the server's memory without bound.
fn sent_too_much_behind(rbuf: &BytesMut, shared: &Shared, peer: &str) -> bool {
    // The longest header: a length of -1, then 8 bytes of length (CPython 3.8+).
    const LONGEST_HEADER: u64 = 12;
    let most = shared.config.limits.max_frame.saturating_add(LONGEST_HEADER);
    let over = u64::try_from(rbuf.len()).is_ok_and(|sent| sent > most);
    if over {
        tracing::warn!(
            %peer,
            sent = rbuf.len(),
            "a CPython client sent more than a request of the largest size (--max-frame) behind a call not answered yet; closing"
        );
    }
    over
}
