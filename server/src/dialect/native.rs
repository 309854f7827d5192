//! The native dialect: MessagePack requests with ids, pipelined.
//!
//! The loop reads whatever the socket has, runs every complete request in order, and
//! writes all their replies with one write — so a pipelining client costs one read and
//! one write per batch, not per request. Requests take effect in the order they were
//! sent because they run one after another on this task. A call that must wait
//! (a queue get, a lock acquire) is parked: a small task waits for it off the object's
//! lock and sends its reply back here, so the requests behind it go on.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use agora_proto::frame::{self, FrameError};
use agora_proto::io::ReadRoom;
use agora_proto::native::{
    self, Hello, ObjectInfo, Op, Reply, Request, Response, Welcome, CONNECTION_ERROR_ID, MAGIC, PROTOCOL_VERSION,
};
use agora_proto::{ErrorCode, WireError};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::listener::Transport;
use crate::object::{Caller, Outcome};
use crate::registry::ObjectEntry;
use crate::server::Shared;
use crate::session::Session;
use crate::waiter::{settle, Completion, Parked};

/// How long a parting message may take to write: a peer that is not reading must
/// not keep the connection (and what its session holds) alive.
const PARTING_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends a connection-level error (response id 0) and gives up on the connection.
pub async fn refuse<S: Transport>(stream: &mut S, error: WireError) {
    let mut out = Vec::new();
    push_response(&mut out, Response { id: CONNECTION_ERROR_ID, result: Err(error) });
    let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Appends one encoded response frame to `out`.
fn push_response(out: &mut Vec<u8>, response: Response) {
    if let Err(e) = frame::encode_with(out, |body| native::encode_response(&response, body)) {
        // Only a value that cannot be encoded gets here; answer with the reason instead.
        let fallback = Response { id: response.id, result: Err(e) };
        frame::encode_with(out, |body| native::encode(&fallback, body)).expect("errors always encode");
    }
}

/// Checks the Hello and builds the Welcome.
fn greet(first: &[u8], session: &Session, shared: &Shared) -> Result<Welcome, WireError> {
    let hello: Hello = native::decode(first)?;
    if hello.magic != MAGIC {
        return Err(WireError::new(ErrorCode::Protocol, "the first message is neither a native Hello nor a pickle"));
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorCode::Unsupported,
            format!("client speaks native protocol {}, this server speaks {PROTOCOL_VERSION}", hello.version),
        ));
    }
    tracing::debug!(client = %hello.client, session = session.id(), "native session started");
    Ok(Welcome {
        version: PROTOCOL_VERSION,
        server: env!("CARGO_PKG_VERSION").to_owned(),
        session: session.id(),
        max_frame: shared.config.limits.max_frame,
        max_in_flight: shared.config.limits.max_in_flight,
        heartbeat_timeout_ms: shared.config.limits.heartbeat_timeout.as_millis() as u64,
    })
}

/// A parked call's reply on its way back to the connection loop.
struct Settled {
    request: u64,
    entry: Arc<ObjectEntry>,
    ticket: u64,
    completion: Completion,
}

/// One connection's state.
struct Conn<'a> {
    session: Session,
    shared: &'a Shared,
    /// Parked calls by request id; dropping the sender abandons the call.
    parked: HashMap<u64, oneshot::Sender<()>>,
    settled_tx: mpsc::UnboundedSender<Settled>,
    /// Requests handled since the server's counter was last updated: it is shared by
    /// every worker thread, so it is added to once per batch, not once per request.
    uncounted: u64,
}

/// Serves a native connection whose first frame (the Hello) was already read.
pub async fn serve<S: Transport>(mut stream: S, rbuf: BytesMut, first: Bytes, peer: &str, shared: Arc<Shared>) {
    let session = Session::new(shared.registry.clone());
    let welcome = match greet(&first, &session, &shared) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%peer, error = %e.message, "bad hello; closing");
            return refuse(&mut stream, e).await;
        }
    };
    let (settled_tx, mut settled_rx) = mpsc::unbounded_channel();
    let mut conn = Conn { session, shared: &shared, parked: HashMap::new(), settled_tx, uncounted: 0 };
    run(&mut stream, rbuf, welcome, peer, &mut conn, &mut settled_rx).await;
    // Calls that settled but were never answered: nothing they received may be lost.
    settled_rx.close();
    while let Ok(settled) = settled_rx.try_recv() {
        if let Ok(value) = settled.completion {
            settled.entry.take_back(conn.caller(), settled.ticket, value);
        }
    }
}

/// The connection loop; returns when the connection is done, for whatever reason.
async fn run<S: Transport>(
    stream: &mut S,
    mut rbuf: BytesMut,
    welcome: Welcome,
    peer: &str,
    conn: &mut Conn<'_>,
    settled_rx: &mut mpsc::UnboundedReceiver<Settled>,
) {
    let shared = conn.shared;
    // Small to start, like the read buffer (idle connections keep what they touch).
    let mut wbuf = Vec::with_capacity(1024);
    frame::encode_with(&mut wbuf, |b| native::encode(&welcome, b)).expect("welcome encodes");
    let mut shutdown = shared.shutdown.clone();
    let max_frame = shared.config.limits.max_frame;
    let heartbeat = shared.config.limits.heartbeat_timeout;
    let mut silent_until = tokio::time::Instant::now() + heartbeat;
    let mut room = ReadRoom::default();
    loop {
        let batch = frame::drain_frames(&mut rbuf, max_frame, |body| match native::decode_request(body) {
            Ok(request) => {
                if let Some(response) = conn.handle(request) {
                    push_response(&mut wbuf, response);
                }
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        });
        match batch {
            Ok(None) => {}
            Ok(Some(e)) => {
                tracing::warn!(%peer, error = %e.message, "malformed request; closing");
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, stream.write_all(&wbuf)).await;
                return refuse(stream, e).await;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad frame; closing");
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, stream.write_all(&wbuf)).await;
                return refuse(stream, frame_error(e)).await;
            }
        }
        conn.count_requests();
        if !wbuf.is_empty() {
            // A peer that stops reading for a whole heartbeat period is as gone as one
            // that stops writing: do not let a full socket buffer pin its session.
            match tokio::time::timeout(heartbeat, stream.write_all(&wbuf)).await {
                Ok(Ok(())) => wbuf.clear(),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "write failed; closing");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, session = conn.session.id(), "session expired: the client stopped reading; releasing what it held");
                    return;
                }
            }
        }
        // No TCP_QUICKACK re-arm here (it costs a setsockopt, and often a pure ACK
        // segment, per request): native clients set TCP_NODELAY, so a delayed ACK never
        // holds up their next request. CPython clients (Nagle on) are re-armed in
        // their own dialect.
        let event = tokio::select! {
            // Shutdown first: a client that never stops sending must not hold the server up.
            biased;
            _ = shutdown.wait_for(|stop| *stop) => Event::Shutdown,
            Some(settled) = settled_rx.recv() => {
                if let Some(response) = conn.settle(settled) {
                    push_response(&mut wbuf, response);
                }
                Event::Continue
            }
            read = room.read(&mut *stream, &mut rbuf) => match read {
                Ok(0) => return,
                Ok(_) => {
                    silent_until = tokio::time::Instant::now() + heartbeat;
                    Event::Continue
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "read failed; closing");
                    return;
                }
            },
            _ = tokio::time::sleep_until(silent_until) => Event::Silent,
        };
        match event {
            Event::Continue => {}
            Event::Silent => {
                tracing::warn!(%peer, session = conn.session.id(), ?heartbeat, "session expired: no heartbeat; releasing what it held");
                let message = format!("the server heard nothing from this client for {heartbeat:?} and ended its session; its locks, permits and leases were released");
                return refuse(stream, WireError::new(ErrorCode::SessionExpired, message)).await;
            }
            Event::Shutdown => {
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, stream.write_all(&wbuf)).await;
                return refuse(stream, WireError::new(ErrorCode::ShuttingDown, "the server is shutting down")).await;
            }
        }
    }
}

/// What woke the connection loop.
enum Event {
    /// Input or a settled call: go round again.
    Continue,
    /// Nothing heard for a whole heartbeat period.
    Silent,
    /// The server is shutting down.
    Shutdown,
}

fn frame_error(e: FrameError) -> WireError {
    match e {
        FrameError::TooLarge { .. } => WireError::new(ErrorCode::LimitExceeded, e.to_string()),
        FrameError::NegativeLength(_) => WireError::new(ErrorCode::Protocol, e.to_string()),
    }
}

impl Conn<'_> {
    fn caller(&self) -> Caller {
        Caller { session: self.session.id() }
    }

    /// Adds the requests handled since the last call to the server's counter.
    fn count_requests(&mut self) {
        if self.uncounted > 0 {
            self.shared.counters.requests_total.fetch_add(std::mem::take(&mut self.uncounted), Ordering::Relaxed);
        }
    }

    /// Runs one request; `None` when its reply comes later (parked).
    fn handle(&mut self, request: Request) -> Option<Response> {
        self.uncounted += 1;
        let id = request.id;
        let result = match request.op {
            Op::Call { object, method, args } => return self.call(id, object, &method, args),
            Op::Open { kind, name, args } => self.session.open(&kind, name.as_deref(), args.positional, args.keywords),
            Op::Attach { object } => self.session.attach(object),
            Op::Release { object } => self.session.release(object).map(|()| Reply::Done),
            Op::Delete { name } => self.session.registry().delete(&name).map(|()| Reply::Done),
            Op::Cancel { request } => {
                // Dropping the sender wakes the parked task, which abandons the call.
                self.parked.remove(&request);
                Ok(Reply::Done)
            }
            Op::Ping => Ok(Reply::Done),
            Op::Stats => Ok(Reply::Stats(self.shared.stats())),
            Op::ListNamed => self.list_named(),
            Op::Snapshot { name } => self.session.registry().lookup(&name).and_then(|e| e.snapshot()).map(Reply::Value),
            Op::Shutdown => {
                tracing::info!(session = self.session.id(), "shutdown requested by a client");
                self.shared.stopper.shutdown();
                Ok(Reply::Done)
            }
        };
        Some(Response { id, result })
    }

    fn list_named(&self) -> Result<Reply, WireError> {
        let objects = self.session.registry().named().into_iter().filter_map(|entry| {
            let size = entry.size().ok()?.map(|n| n as u64);
            Some(ObjectInfo { name: entry.name()?.to_owned(), kind: entry.kind().clone(), id: entry.id(), size })
        });
        Ok(Reply::Objects(objects.collect()))
    }

    fn call(&mut self, id: u64, object: u64, method: &str, args: native::Args) -> Option<Response> {
        let result = (|| {
            // Borrowed, not cloned: the entry's reference count is a cache line every
            // worker thread would otherwise write on every call. Only a parked call keeps it.
            let entry = self.session.handle(object)?;
            if self.parked.len() >= self.shared.config.limits.max_in_flight as usize {
                return Err(WireError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "too many blocked calls on this connection (limit {})",
                        self.shared.config.limits.max_in_flight
                    ),
                ));
            }
            match entry.call(self.caller(), method, args.positional, args.keywords)? {
                Outcome::Ready(value) => Ok(Some(value)),
                Outcome::Park(parked) => {
                    let entry = entry.clone();
                    self.park(id, entry, parked);
                    Ok(None)
                }
            }
        })();
        match result {
            Ok(Some(value)) => Some(Response { id, result: Ok(Reply::Value(value)) }),
            Ok(None) => None,
            Err(e) => Some(Response { id, result: Err(e) }),
        }
    }

    /// Waits for a parked call off the loop: until it completes, its deadline passes,
    /// or it is abandoned (cancel, disconnect, shutdown).
    fn park(&mut self, request: u64, entry: Arc<ObjectEntry>, parked: Parked) {
        let (cancel_tx, cancel_rx) = oneshot::channel();
        self.parked.insert(request, cancel_tx);
        let (caller, settled_tx) = (self.caller(), self.settled_tx.clone());
        tokio::spawn(async move {
            let Parked { ticket, deadline, mut rx } = parked;
            let completion = tokio::select! {
                completion = settle(&entry, ticket, deadline, &mut rx) => completion,
                _ = cancel_rx => {
                    entry.abandon(caller, ticket, &mut rx);
                    Err(WireError::new(ErrorCode::Timeout, "the call was cancelled by the client"))
                }
            };
            let settled = Settled { request, entry, ticket, completion };
            if let Err(mpsc::error::SendError(lost)) = settled_tx.send(settled) {
                // The connection is gone: nothing handed to this call may be lost.
                if let Ok(value) = lost.completion {
                    lost.entry.take_back(caller, lost.ticket, value);
                }
            }
        });
    }

    /// A parked call finished: answer it, unless it was cancelled meanwhile (then
    /// whatever it received goes back to the object).
    fn settle(&mut self, settled: Settled) -> Option<Response> {
        if self.parked.remove(&settled.request).is_none() {
            if let Ok(value) = settled.completion {
                settled.entry.take_back(self.caller(), settled.ticket, value);
            }
            return None;
        }
        Some(Response { id: settled.request, result: settled.completion.map(Reply::Value) })
    }
}
