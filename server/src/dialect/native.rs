//! The native dialect: MessagePack requests with ids, pipelined.
//!
//! A translator: each request becomes an engine [`Command`], applied through the
//! parking layer, and its [`Answer`] becomes the reply. The loop reads whatever the
//! socket has, runs every complete request in order, and writes all their replies with
//! one write — so a pipelining client costs one read and one write per batch, not per
//! request. Requests take effect in the order they were sent because they run one
//! after another on this task. When a read holds several requests and the first calls
//! a big dict, up to 32 are decoded before any runs, so that the dict can
//! fetch their entries into the cache first (`answer_read`); the answers are the
//! same. A call that must wait (a queue get, a lock acquire) is
//! parked: its answer arrives later in this session's mailbox, so the requests behind
//! it go on. After writing, the loop may poll a lone client's socket for its next call
//! before the worker sleeps ([`crate::busy_poll`], `--native-busy-poll`). What was read
//! and not yet handled belongs to the submodule `input`: a call ending with a big value
//! is read there straight into the value's own buffer. What is to be written belongs to
//! `output`: a big value in a reply goes out from its own buffer.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use agora_proto::frame::FrameError;
use agora_proto::native::{
    self, Hello, Op, Reply, Request, Response, Welcome, CONNECTION_ERROR_ID, MAGIC, PROTOCOL_VERSION,
};
use agora_proto::{ErrorCode, WireError};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::error::Elapsed;

use crate::access::{Level, Who};
use crate::busy_poll::BusyPoll;
use crate::engine::{Access, Answer, Command, HandleCache, Keep, Session, Ticket, Time};
use crate::listener::Transport;
use crate::metrics::WaitGuard;
use crate::object::Upcoming;
use crate::parking::{Alarm, Mail, Mailbox, Posted};
use crate::server::Shared;

mod input;
mod output;
use input::Input;
use output::Output;

/// How many of a pipelined batch's requests are decoded before they run, for their
/// calls' objects to prefetch what the calls will read ([`Conn::prefetch`]): more than
/// clients pipeline by default, few enough that the first ones' cache lines are not
/// pushed out by the last ones' before they are used, and as many as a worker thread
/// keeps argument buffers for (so decoding ahead allocates nothing).
const LOOK_AHEAD: usize = native::spare::KEPT_BUFFERS;

/// How long a parting message may take to write: a peer that is not reading must
/// not keep the connection (and what its session holds) alive.
const PARTING_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `future`'s output, or `Elapsed` if it took longer than `limit`; a future ready at
/// its first poll sets no timer. Nearly every write of replies is taken whole by the
/// socket at once, and a timer for it (the clock read, the timer driver's handle taken
/// and dropped) cost ~160 instructions per unpipelined request.
async fn within<F: std::future::Future>(limit: std::time::Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    match std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(future.as_mut(), cx))).await {
        std::task::Poll::Ready(output) => Ok(output),
        std::task::Poll::Pending => tokio::time::timeout(limit, future).await,
    }
}

/// Sends a connection-level error (response id 0) and gives up on the connection.
pub async fn refuse<S: Transport>(stream: &mut S, error: WireError) {
    let mut out = Output::new();
    out.push(Response { id: CONNECTION_ERROR_ID, result: Err(error) });
    let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, async {
        let _ = out.write_to(stream).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Reads and checks the Hello.
fn read_hello(first: &[u8]) -> Result<Hello, WireError> {
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
    Ok(hello)
}

/// The Welcome of a session.
fn welcome(session: &Session, resumed: bool, shared: &Shared) -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        server: env!("CARGO_PKG_VERSION").to_owned(),
        session: session.id(),
        max_frame: shared.config.limits.max_frame,
        max_in_flight: shared.config.limits.max_in_flight,
        heartbeat_timeout_ms: shared.config.limits.heartbeat_timeout.as_millis() as u64,
        secret: session.secret().unwrap_or(0),
        resumed,
    }
}

/// A call of this connection that waits.
struct ParkedCall {
    ticket: Ticket,
    object: u64,
    deadline: Option<Time>,
    /// Counts it in the metrics' waiter gauge while it waits.
    _waiting: Option<WaitGuard>,
}

/// One connection's state.
struct Conn<'a> {
    session: Session,
    shared: &'a Shared,
    /// The objects behind the session's handles, so that a call finds its object
    /// without the session's lock (cleared when this connection gives one back).
    handles: HandleCache,
    /// Parked calls by request id, and request ids by ticket.
    parked: HashMap<u64, ParkedCall>,
    by_ticket: HashMap<Ticket, u64>,
    /// When the current batch of requests is handled (the commands' `at`).
    now: Time,
    /// Requests handled since the server's counter was last updated: it is shared by
    /// every worker thread, so it is added to once per batch, not once per request.
    uncounted: u64,
    /// The log record the answers of delivered calls depend on (durability on).
    delivered_lsn: u64,
    /// The peer is on this machine (a Unix socket or a loopback address).
    local_peer: bool,
    /// The user it authenticated as: every request is checked against its rules.
    who: Who,
    /// The requests decoded from one read, answered together (kept for its room).
    batch: Vec<Request>,
    /// Busy polling for a lone client's next request (`None`: off, or a transport that
    /// cannot tell whether input waits).
    poll: Option<BusyPoll>,
    /// The server's request count just after this connection last added to it: while
    /// it is unchanged, no other connection has had a request since.
    counted_at: u64,
    /// No other connection had a request between this one's last two batches: only
    /// then may it poll (on a worker with other connections ready, the first to be
    /// answered would otherwise poll while they wait behind it).
    alone: bool,
}

/// Serves a native connection whose first frame (the Hello) was already read.
pub async fn serve<S: Transport>(
    mut stream: S,
    rbuf: BytesMut,
    first: Bytes,
    peer: &str,
    who: Who,
    shared: Arc<Shared>,
) {
    let hello = match read_hello(&first) {
        Ok(hello) => hello,
        Err(e) => {
            tracing::warn!(%peer, error = %e.message, "bad hello; closing");
            return refuse(&mut stream, e).await;
        }
    };
    let (session, mut mailbox, _peer, resumed) = match shared.start_session(peer, &hello.client, hello.previous) {
        Ok(started) => started,
        Err(e) => return refuse(&mut stream, e).await,
    };
    tracing::debug!(client = %hello.client, session = session.id(), resumed, "native session started");
    let welcome = welcome(&session, resumed, &shared);
    let now = shared.parking.engine().now();
    let mut conn = Conn {
        session,
        shared: &shared,
        handles: HandleCache::new(),
        parked: HashMap::new(),
        by_ticket: HashMap::new(),
        now,
        uncounted: 0,
        delivered_lsn: 0,
        local_peer: stream.peer_is_local(),
        who,
        poll: busy_poll(&stream, &shared),
        batch: Vec::new(),
        counted_at: 0,
        alone: false,
    };
    run(&mut stream, rbuf, welcome, peer, &mut conn, &mut mailbox).await;
    // Whatever was delivered and never answered goes back; parked calls are abandoned.
    let Conn { session, parked, .. } = conn;
    shared.parking.close(session, mailbox, parked.into_values().map(|p| (p.object, p.ticket)));
}

/// The connection's busy polling, if it is on and its transport can tell whether
/// input waits (TLS cannot).
fn busy_poll<S: Transport>(stream: &S, shared: &Shared) -> Option<BusyPoll> {
    let most = shared.config.limits.native_busy_poll;
    let can_tell = || stream.input_waiting().is_some();
    (!most.is_zero() && can_tell()).then(|| BusyPoll::on_shared_worker(most, shared.polling.clone()))
}

/// Answers every complete request the connection has read, in order; what went wrong
/// if one was malformed (the ones before it are answered) or a frame was bad.
///
/// Each is answered as it is decoded, unless more than one was read and the first call
/// goes to an object worth prefetching for ([`Conn::worth_looking_ahead`]): then up to
/// [`LOOK_AHEAD`] are decoded, and looked at together before they are answered.
fn answer_read(
    conn: &mut Conn<'_>,
    input: &mut Input,
    max_frame: u64,
    out: &mut Output,
) -> Result<Option<WireError>, FrameError> {
    let first = match input.drain(max_frame, |body| ControlFlow::Break(native::decode_request(body))) {
        Ok(Some(Ok(first))) => first,
        Ok(Some(Err(e))) => return Ok(Some(e)),
        Ok(None) => return Ok(None),
        Err(e) => return Err(e),
    };
    // A lone request has nothing to be looked at with.
    if !input.holds_a_frame(max_frame) || !conn.worth_looking_ahead(&first) {
        conn.answer(first, out);
        return input.drain(max_frame, |body| match native::decode_request(body) {
            Ok(request) => {
                conn.answer(request, out);
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        });
    }
    conn.batch.push(first);
    loop {
        let decoded = input.drain(max_frame, |body| match native::decode_request(body) {
            Ok(request) => {
                conn.batch.push(request);
                match conn.batch.len() < LOOK_AHEAD {
                    true => ControlFlow::Continue(()),
                    false => ControlFlow::Break(None),
                }
            }
            Err(e) => ControlFlow::Break(Some(e)),
        });
        conn.answer_batch(out);
        match decoded {
            Ok(Some(None)) => continue,
            Ok(Some(Some(e))) => return Ok(Some(e)),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// The connection loop; returns when the connection is done, for whatever reason.
async fn run<S: Transport>(
    stream: &mut S,
    rbuf: BytesMut,
    welcome: Welcome,
    peer: &str,
    conn: &mut Conn<'_>,
    mailbox: &mut Mailbox,
) {
    let shared = conn.shared;
    let parking = &shared.parking;
    let mut out = Output::new();
    out.push_message(&welcome);
    let mut shutdown = shared.shutdown.clone();
    let max_frame = shared.config.limits.max_frame;
    let heartbeat = shared.config.limits.heartbeat_timeout;
    // Silence is checked by the server's timer, not per read: one alarm per period.
    let mut last_heard = conn.now;
    let heartbeat_alarm = Alarm::Heartbeat { session: conn.session.id() };
    let mut heartbeat_at = last_heard.after(heartbeat).unwrap_or(Time(u64::MAX));
    parking.arm(heartbeat_at, heartbeat_alarm);
    let mut input = Input::new(rbuf);
    // Set when requests were read while answers waited for the log.
    let mut read_meanwhile = false;
    loop {
        let batch = match input.take_finished() {
            Some(Err(e)) => Ok(Some(e)),
            finished => {
                if let Some(Ok(request)) = finished {
                    conn.answer(request, &mut out);
                }
                answer_read(conn, &mut input, max_frame, &mut out)
            }
        };
        match batch {
            Ok(None) => input.prepare(max_frame),
            Ok(Some(e)) => {
                tracing::warn!(%peer, error = %e.message, "malformed request; closing");
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, conn.settle()).await;
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, out.write_to(stream)).await;
                return refuse(stream, e).await;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad frame; closing");
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, conn.settle()).await;
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, out.write_to(stream)).await;
                return refuse(stream, frame_error(e)).await;
            }
        }
        conn.count_requests();
        if !out.is_empty() {
            // With durability on, answers go out once the log has what they depend on.
            // Meanwhile the connection keeps reading (a client that leaves while the log
            // cannot be written must still end its session and give back what it held).
            let depends_on = conn.depends_on();
            // Requests read meanwhile are handled right after the write (below), not
            // when more input happens to arrive: a pipelining client may send nothing
            // more until they are answered.
            read_meanwhile = false;
            // Writing the log takes at most a yield; only a wait beyond that (a failed
            // write, an fsync, a cluster's commit) needs watching the client meanwhile.
            let settled = parking.settle_promptly(depends_on).await;
            while !settled && !parking.is_settled(depends_on) {
                let stopping = tokio::select! {
                    _ = parking.settle(depends_on) => false,
                    _ = shutdown.wait_for(|stop| *stop) => true,
                    read = input.read(&mut *stream) => match read {
                        Ok(0) => return parking.disarm(heartbeat_at, heartbeat_alarm),
                        Ok(_) => {
                            conn.now = parking.engine().now();
                            last_heard = conn.now;
                            read_meanwhile = true;
                            false
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "read failed; closing");
                            return parking.disarm(heartbeat_at, heartbeat_alarm);
                        }
                    },
                };
                if stopping {
                    let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, parking.settle(depends_on)).await;
                    break;
                }
            }
            // A peer that stops reading for a whole heartbeat period is as gone as one
            // that stops writing: do not let a full socket buffer pin its session.
            match within(heartbeat, out.write_to(stream)).await {
                Ok(Ok(())) => {
                    // A lone client's next call, looked for before the worker sleeps;
                    // a request already buffered needs no polling for.
                    if let Some(poll) = conn.poll.as_mut().filter(|_| input.is_empty()) {
                        let (requests, counted_at, alone) =
                            (&shared.counters.requests_total, conn.counted_at, conn.alone);
                        let stream = &*stream;
                        poll.wait_alone(
                            || alone && requests.load(Ordering::Relaxed) == counted_at,
                            || if mailbox.has_news() { Some(true) } else { stream.input_waiting() },
                        );
                    }
                }
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
            // Word of a shutdown first, then mail: a client that never stops sending
            // must not hold the server up.
            biased;
            posted = mailbox.next() => match posted {
                Posted::Stop => Event::Shutdown,
                Posted::Mail(mail) => {
                    let mut mail = Some(mail);
                    let mut event = Event::Continue;
                    while let Some(next) = mail.take() {
                        match next {
                            Mail::Delivery(delivery) => {
                                // The command that delivered it is in the journal by now.
                                conn.delivered_lsn = parking.appended();
                                if let Some(response) = conn.delivered(delivery) {
                                    out.push(response);
                                }
                            }
                            Mail::Silence => {
                                let now = parking.engine().now();
                                heartbeat_at = last_heard.after(heartbeat).unwrap_or(Time(u64::MAX));
                                if heartbeat_at <= now {
                                    event = Event::Silent;
                                } else {
                                    parking.arm(heartbeat_at, heartbeat_alarm);
                                }
                            }
                        }
                        // Answer every delivery already there with this one write.
                        mail = mailbox.try_recv();
                    }
                    event
                }
            },
            // Input read while answers waited: handle it now (mail first, as ever).
            () = std::future::ready(()), if std::mem::take(&mut read_meanwhile) => Event::Continue,
            read = input.read(&mut *stream) => match read {
                Ok(0) => return parking.disarm(heartbeat_at, heartbeat_alarm),
                Ok(_) => {
                    conn.now = parking.engine().now();
                    last_heard = conn.now;
                    if let Some(poll) = &mut conn.poll {
                        poll.arrived();
                    }
                    Event::Continue
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "read failed; closing");
                    return parking.disarm(heartbeat_at, heartbeat_alarm);
                }
            },
        };
        match event {
            Event::Continue => {}
            Event::Silent => {
                tracing::warn!(%peer, session = conn.session.id(), ?heartbeat, "session expired: no heartbeat; releasing what it held");
                let message = format!("the server heard nothing from this client for {heartbeat:?} and ended its session; its locks, permits and leases were released");
                return refuse(stream, WireError::new(ErrorCode::SessionExpired, message)).await;
            }
            Event::Shutdown => {
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, conn.settle()).await;
                let _ = tokio::time::timeout(PARTING_WRITE_TIMEOUT, out.write_to(stream)).await;
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
    /// The log record the buffered answers depend on.
    fn depends_on(&mut self) -> u64 {
        self.session.logged().max(std::mem::take(&mut self.delivered_lsn))
    }

    /// Waits until the log has every record the buffered answers depend on.
    async fn settle(&mut self) {
        let depends_on = self.depends_on();
        self.shared.parking.settle(depends_on).await;
    }

    /// Adds the requests handled since the last call to the server's counter.
    fn count_requests(&mut self) {
        if self.uncounted > 0 {
            let handled = std::mem::take(&mut self.uncounted);
            let before = self.shared.counters.requests_total.fetch_add(handled, Ordering::Relaxed);
            self.alone = before == self.counted_at;
            self.counted_at = before + handled;
        }
    }

    /// Whether the requests read with `first` are worth decoding before any is answered,
    /// for their objects to prefetch for them: `first` calls an object that prefetches
    /// (a big dict). Decoding ahead costs a move of each request; most reads go to one
    /// object, so the first call's tells for the rest.
    fn worth_looking_ahead(&mut self, first: &Request) -> bool {
        let Op::Call { object, .. } = first.op else { return false };
        self.shared.parking.engine().worth_prefetching(&self.session, &mut self.handles, object)
    }

    /// Answers the requests decoded together, in order, once the objects their calls go
    /// to could start loading what the calls will read ([`Conn::prefetch`]).
    fn answer_batch(&mut self, out: &mut Output) {
        let mut requests = std::mem::take(&mut self.batch);
        self.prefetch(&requests);
        for request in requests.drain(..) {
            self.answer(request, out);
        }
        // Its room is the next batch's.
        self.batch = requests;
    }

    /// Lets the objects that `requests` (two or more, about to run) call start loading
    /// what the calls will read ([`crate::engine::Engine::prefetch`]), one run of
    /// calls on the same object at a time: a big dict's lookups then wait for memory
    /// together, not one after another (on a dict of 10,000 entries each lookup waited
    /// for two or three cache misses in turn). A lone request gains nothing from it.
    fn prefetch(&mut self, requests: &[Request]) {
        if requests.len() < 2 {
            return;
        }
        let engine = self.shared.parking.engine();
        let target = |r: &Request| match &r.op {
            Op::Call { object, args, .. } if !args.positional.is_empty() => Some(*object),
            _ => None,
        };
        for run in requests.chunk_by(|a, b| target(a) == target(b)) {
            let Some(object) = target(&run[0]) else { continue };
            let calls = run.iter().filter_map(|r| match &r.op {
                Op::Call { method, args, .. } => Some(Upcoming { method, first: args.positional.first()? }),
                _ => None,
            });
            engine.prefetch(&self.session, &mut self.handles, object, calls);
        }
    }

    /// Runs one request and adds its reply to `out`, if it has one now.
    fn answer(&mut self, request: Request, out: &mut Output) {
        self.uncounted += 1;
        match request.op {
            Op::Call { object, method, args } => self.call(request.id, object, method, args, out),
            op => out.push(self.handle(request.id, op)),
        }
    }

    /// Runs one request other than a call ([`Conn::call`]): each has its reply at once.
    fn handle(&mut self, id: u64, op: Op) -> Response {
        let (session, at) = (self.session.id(), self.now);
        let (parking, shared, who) = (&self.shared.parking, self.shared, self.who);
        let result = match op {
            Op::Call { .. } => unreachable!("calls are answered by Conn::call"),
            Op::Open { kind, name, args } => {
                super::open(shared, &self.session, who, (kind, name, args), Keep::Handle, at).map(opened)
            }
            Op::Attach { object } => who
                .object(shared, object, Level::Read, "attach to")
                .and_then(|()| parking.run(&self.session, Command::Attach { session, object, at }))
                .map(opened),
            // Giving back one's own handle needs no right.
            Op::Release { object } => {
                // The object goes now if that was its last reference, not at the next call.
                self.handles.clear();
                parking.run(&self.session, Command::Release { session, object, at }).map(|_| Reply::Done)
            }
            Op::Delete { name } => who
                .named(shared, &name, Level::Admin, "delete")
                .and_then(|()| parking.run(&self.session, Command::Delete { name, at }))
                .map(|_| Reply::Done),
            Op::Cancel { request } => {
                if let Some(call) = self.parked.remove(&request) {
                    self.by_ticket.remove(&call.ticket);
                    if let Some(deadline) = call.deadline {
                        parking.disarm(deadline, Alarm::Call { session, object: call.object, ticket: call.ticket });
                    }
                    parking.abandon(&self.session, call.object, call.ticket);
                }
                Ok(Reply::Done)
            }
            Op::Ping => Ok(Reply::Done),
            Op::Stats => who
                .server_admin(shared, "read the server's statistics")
                .map(|()| Reply::Stats(Box::new(shared.stats()))),
            // Each user sees the names it may read.
            Op::ListNamed => {
                let mut named = parking.engine().named();
                named.retain(|o| who.may(shared, &o.name, Level::Read));
                Ok(Reply::Objects(named))
            }
            Op::Snapshot { name } => who
                .named(shared, &name, Level::Read, "copy")
                .and_then(|()| parking.engine().snapshot_named(&name))
                .map(Reply::Value),
            Op::SaveSnapshot => who.server_admin(shared, "write a snapshot").and_then(|()| save_snapshot(shared)),
            // Who holds an object and waits for it is part of reading it (`agora get`).
            Op::Holders { name: Some(name) } => who
                .named(shared, &name, Level::Read, "see who holds")
                .and_then(|()| holders(shared, Some(&name)))
                .map(Reply::Holders),
            Op::Holders { name: None } => holders(shared, None).map(|mut all| {
                all.retain(|o| who.may(shared, &o.name, Level::Read));
                Reply::Holders(all)
            }),
            Op::Shutdown => who.shutdown(shared, self.local_peer).map(|()| {
                tracing::info!(session, "shutdown requested by a client");
                self.shared.stopper.shutdown();
                Reply::Done
            }),
        };
        Response { id, result }
    }

    fn call(&mut self, id: u64, object: u64, method: compact_str::CompactString, args: native::Args, out: &mut Output) {
        if self.parked.len() >= self.shared.config.limits.max_in_flight as usize {
            let limit = self.shared.config.limits.max_in_flight;
            let error = WireError::new(
                ErrorCode::LimitExceeded,
                format!("too many blocked calls on this connection (limit {limit})"),
            );
            return out.push(Response { id, result: Err(error) });
        }
        if let Err(e) = self.who.call(self.shared, object, &method, &args) {
            return out.push(Response { id, result: Err(e) });
        }
        let error = match self.shared.parking.call(
            &self.session,
            Some(&mut self.handles),
            object,
            Access::Handle,
            &method,
            args,
            self.now,
        ) {
            Ok(Answer::Value(value)) => return out.push_value(id, value),
            // Answered when it is delivered ([`Conn::delivered`]), or never if cancelled.
            Ok(Answer::Parked(parked)) => {
                let waiting = self.shared.parking.engine().waiting(object);
                let call = ParkedCall { ticket: parked.ticket, object, deadline: parked.deadline, _waiting: waiting };
                self.by_ticket.insert(parked.ticket, id);
                self.parked.insert(id, call);
                return;
            }
            Ok(other) => unexpected(other),
            Err(e) => e,
        };
        out.push(Response { id, result: Err(error) });
    }

    /// A parked call's answer arrived: reply, unless the call was cancelled meanwhile
    /// (then what it received goes back to its object).
    fn delivered(&mut self, delivery: crate::engine::Delivery) -> Option<Response> {
        let Some(request) = self.by_ticket.remove(&delivery.waiter.ticket) else {
            self.shared.parking.return_delivery(delivery);
            return None;
        };
        if let Some(call) = self.parked.remove(&request) {
            if let Some(deadline) = call.deadline {
                let alarm = Alarm::Call { session: self.session.id(), object: call.object, ticket: call.ticket };
                self.shared.parking.disarm(deadline, alarm);
            }
        }
        Some(Response { id: request, result: delivery.completion.map(Reply::Value) })
    }
}

/// `agora snapshot`: writes a snapshot now. It takes as long as the state is big, so
/// the worker thread hands its other connections to the runtime meanwhile.
fn save_snapshot(shared: &Shared) -> Result<Reply, WireError> {
    let Some(durability) = shared.parking.durability() else {
        return Err(WireError::new(
            ErrorCode::Unsupported,
            "this server keeps its state in memory only: there is nothing to snapshot (start it with --data-dir)",
        ));
    };
    crate::server::without_freezing_others(|| durability.save_snapshot())
        .map(|info| Reply::Saved(Box::new(info)))
        .map_err(|e| WireError::new(ErrorCode::Unavailable, format!("snapshot failed: {e}")))
}

/// `agora get` / `agora ls`: the engine's holder views with each session's peer
/// address joined in (the connections know those, the engine does not).
fn holders(shared: &Shared, name: Option<&str>) -> Result<Vec<native::ObjectHolders>, WireError> {
    let engine = shared.parking.engine();
    let views = match name {
        Some(name) => vec![engine.holders_named(name)?],
        None => engine.named_holders(),
    };
    let peers = &shared.peers;
    Ok(views
        .into_iter()
        .map(|view| native::ObjectHolders {
            name: view.name.unwrap_or_default(),
            kind: view.kind,
            id: view.id,
            held: view
                .held
                .into_iter()
                .map(|h| native::HolderInfo {
                    session: h.session,
                    peer: peers.of(h.session),
                    since_us: h.since.0,
                    token: h.token,
                    what: h.what,
                })
                .collect(),
            waiting: view
                .waiting
                .into_iter()
                .map(|w| native::WaiterInfo {
                    session: w.session,
                    peer: peers.of(w.session),
                    since_us: w.since.map(|t| t.0),
                    what: w.what,
                })
                .collect(),
        })
        .collect())
}

/// The reply to an `Open` or `Attach`.
fn opened(answer: Answer) -> Reply {
    match answer {
        Answer::Opened { object, kind, created } => Reply::Opened { object, kind, created },
        _ => Reply::Done,
    }
}

/// An answer a command should never give.
fn unexpected(answer: Answer) -> WireError {
    WireError::new(ErrorCode::Internal, format!("unexpected answer from the engine: {answer:?}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::within;

    #[tokio::test(start_paused = true)]
    async fn within_answers_a_ready_future_and_times_out_one_that_never_is() {
        assert_eq!(within(Duration::from_secs(5), async { 7 }).await.unwrap(), 7);
        // Pending at its first poll, done later: the timer set then does not fire.
        let later = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            8
        };
        assert_eq!(within(Duration::from_secs(5), later).await.unwrap(), 8);
        let started = tokio::time::Instant::now();
        assert!(within(Duration::from_secs(5), std::future::pending::<()>()).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
