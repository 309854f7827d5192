//! [`Link`]: a manager's way to its server, across reconnects.
//!
//! A [`Connection`] is one socket and one server session; when it dies it stays dead.
//! The link holds the current connection and, when the manager reconnects (see
//! [`ManagerOptions`]), replaces a connection lost to a socket error, an EOF or the
//! server's shutdown notice with a new one with the same authkey, to the same address
//! or, given several addresses of one cluster, to any of them:
//!
//! - **Round robin.** Each connect attempt tries the addresses in turn, starting with
//!   the one after the address whose connection was lost, and takes the first that
//!   connects and authenticates ([`round_robin`]). The first connection tries them in
//!   the order given. An attempt fails when every address it tried failed; it is fatal
//!   only if every one of them failed fatally (an authentication failure at one node
//!   does not stop the others from being tried again).
//!
//! - **Lazily** (but see the cluster's sessions below). Nothing happens while nobody
//!   calls. The first call that finds the
//!   connection dead reconnects (one call at a time does; the others wait for it),
//!   retrying with exponential backoff and jitter (from [`BACKOFF_START`] up to
//!   [`BACKOFF_CAP`], or [`CLUSTER_BACKOFF_CAP`] for several addresses) until the
//!   reconnect deadline, counted from that first call,
//!   passes. Then calls fail with [`Error::Unreachable`]; a later call tries once more
//!   (at most once per [`BACKOFF_CAP`]), so the manager recovers when the server is
//!   back. An authentication failure ends the attempts for good.
//! - **Calls are never sent twice.** A call whose request was queued on a connection
//!   that then died fails with [`Error::ConnectionLost`] (its outcome is unknown); only
//!   a request that never left (the connection was already dead) goes out on the next
//!   connection. (The proxies make calls that wait again themselves, as new calls:
//!   see `proxy::Wait`.)
//! - **Objects are re-attached.** The link keeps a registry of the objects the
//!   manager holds proxies for (id → kind, how many proxies, how many server handles
//!   the current session holds). Before a new connection is used, every object in it
//!   is re-attached by id (`Op::Attach`, pipelined); one the server no longer has is
//!   marked lost, and its proxies' calls fail with [`Error::NoSuchObject`] saying it
//!   did not survive the restart.
//! - **Grants are pinned.** A lock guard or queue lease belongs to the session that
//!   obtained it: it remembers its connection's generation, and releasing or settling
//!   it goes only to that connection ([`Link::pinned`]), never to a later session,
//!   which does not own it.
//! - **Sessions are resumed on a cluster.** A cluster node gives each session a secret
//!   (`Welcome::secret`). The next connection's Hello names the lost session: a new
//!   leader that detached it hands it back, and the new connection keeps the lost
//!   one's generation, so guards, leases and attached objects stay valid and nothing
//!   is re-attached (releases of proxies dropped meanwhile go out first). If a call
//!   handing something over was in flight when the connection died, the Hello asks
//!   the server to end the session instead: it may hold a grant this client never
//!   heard of ([`Connection::previous`]). Because a detached session waits only a
//!   heartbeat timeout, the link reconnects to a cluster as soon as the connection
//!   dies, not at the next call ([`Link::keep_session`]).
//!
//! Lock order: the registry before the current connection, never the reverse.

use std::collections::hash_map::Entry as MapEntry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agora_proto::native::{CallArgs, Kind, ObjectId, Op, Reply};
use agora_proto::Address;

use crate::connection::{Answer, Connection, OnOrphan, Outgoing, PendingCall, Refused, Setup, Unsent};
use crate::error::{Error, Result};
use crate::manager::ManagerOptions;

/// The first pause between reconnect attempts.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(50);
/// The longest pause between reconnect attempts (each pause doubles up to it).
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// The longest pause between reconnect attempts to a cluster (several addresses): the
/// outage to expect there is a leader change, which is over in about a second, and the
/// nodes refuse an attempt cheaply until then; a 1 s pause would add up to a second.
pub(crate) const CLUSTER_BACKOFF_CAP: Duration = Duration::from_millis(200);

/// The pause after `pause` between reconnect attempts to `addresses` addresses.
fn next_pause(pause: Duration, addresses: usize) -> Duration {
    let cap = if addresses > 1 { CLUSTER_BACKOFF_CAP } else { BACKOFF_CAP };
    (pause * 2).min(cap)
}
/// The longest one connect attempt (connect, handshake, re-attach) may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);
/// The shortest time one connect attempt is given, even past the deadline.
const ATTEMPT_FLOOR: Duration = Duration::from_secs(1);

/// Queueing a call the slow way ([`Link::queue_slowly`]).
type Queueing<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer>> + Send + 'a>>;

/// `ObjectSlot::attached` of an object that did not survive a restart.
const LOST: u64 = u64::MAX;

/// What every proxy handle of one object shares: in which connection generation the
/// current session holds a handle on it (the one check on the hot path).
#[derive(Debug)]
pub(crate) struct ObjectSlot {
    attached: AtomicU64,
}

/// The registry's record of one object.
struct Entry {
    slot: Arc<ObjectSlot>,
    kind: Kind,
    /// Proxy handles alive in this process.
    live: usize,
    /// Server handles held by the session of generation `attached` (each open takes
    /// one; a re-attach takes one for all the live proxies).
    held: usize,
    /// The generation whose session holds `held` handles.
    attached: u64,
    /// Why the object is gone, and the generation that found out.
    lost: Option<(u64, String)>,
}

impl Entry {
    /// Records that the session of `generation` took one more handle on the object.
    fn took_handle(&mut self, generation: u64) {
        if let Some((lost_in, _)) = &self.lost {
            if generation < *lost_in {
                return; // news from a session older than the one that found it gone
            }
            self.lost = None;
        }
        match generation.cmp(&self.attached) {
            std::cmp::Ordering::Greater => {
                self.attached = generation;
                self.held = 1;
            }
            std::cmp::Ordering::Equal => self.held += 1,
            // A handle of a session that has ended since: nothing to hold.
            std::cmp::Ordering::Less => {}
        }
        self.publish();
    }

    /// Records that the object did not survive into the session of `generation`.
    fn lose(&mut self, generation: u64, why: String) {
        if generation >= self.attached {
            self.lost = Some((generation, why));
            self.held = 0;
            self.publish();
        }
    }

    fn publish(&self) {
        let attached = if self.lost.is_some() { LOST } else { self.attached };
        self.slot.attached.store(attached, Ordering::Release);
    }
}

/// A reconnect in progress, or the end of one that failed.
#[derive(Default)]
struct Outage {
    /// When calls began waiting for the server to come back.
    since: Option<Instant>,
    /// The last connect attempt's error.
    last_error: Option<Error>,
    /// After giving up: no new attempt before this.
    next_attempt: Option<Instant>,
    /// An error no retry can fix (authentication): every call fails with it.
    fatal: Option<Error>,
}

/// The current connection, and the index of the address it was made to.
struct Current {
    conn: Arc<Connection>,
    index: usize,
}

/// A manager's way to its server: the current connection, how to make the next one,
/// and the registry of the objects its proxies hold.
pub(crate) struct Link {
    /// Where the server is: one address, or the nodes of one cluster (never empty).
    addresses: Vec<Address>,
    authkey: Vec<u8>,
    client: String,
    options: ManagerOptions,
    /// The request id counter all connections share.
    ids: Arc<AtomicU64>,
    /// The last generation handed out.
    generations: AtomicU64,
    current: Mutex<Current>,
    /// Held by the call that is reconnecting; the state of the outage.
    outage: tokio::sync::Mutex<Outage>,
    /// Why calls fail without trying (gave up, authentication), for
    /// `Manager::connection_error`; `None` while connected or reconnecting.
    failure: Mutex<Option<Error>>,
    objects: Mutex<agora_proto::idmap::IdMap<Entry>>,
    /// Releases owed by the session of a generation, not sent because its connection
    /// was dead: sent if that session is resumed, forgotten if it is not.
    owed: Mutex<Vec<(u64, ObjectId)>>,
    /// This link, for the task that reconnects when a connection dies.
    me: std::sync::Weak<Link>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conn = self.current();
        let address = self.current_address();
        write!(f, "Link({address}, session {}, generation {})", conn.welcome().session, conn.generation())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    /// Connects for the first time, to the first of `addresses` (in order) that
    /// connects and authenticates; a failure is reported at once, never retried. With
    /// several addresses, each is given [`ATTEMPT_LIMIT`] and the error names every
    /// address and why it failed ([`Error::ConnectAny`]); with one, the error is that
    /// address's own, as it always was.
    pub(crate) async fn connect(
        addresses: Vec<Address>,
        authkey: &[u8],
        client: String,
        options: ManagerOptions,
    ) -> Result<Arc<Link>> {
        if addresses.is_empty() {
            return Err(Error::Connect { address: String::new(), reason: "no server address given".into() });
        }
        let several = addresses.len() > 1;
        let mut failures = Vec::new();
        let mut connected = None;
        for (index, address) in addresses.iter().enumerate() {
            let setup = Setup::first(options.reconnects(), options.tls_settings().cloned());
            let ids = setup.ids.clone();
            let open = Connection::open(address, authkey, &client, setup);
            let result = if several {
                tokio::time::timeout(ATTEMPT_LIMIT, open)
                    .await
                    .unwrap_or_else(|_| Err(no_answer(address, ATTEMPT_LIMIT)))
            } else {
                open.await
            };
            match result {
                Ok(conn) => {
                    connected = Some((conn, ids, index));
                    break;
                }
                Err(e) => {
                    if several {
                        tracing::debug!(%address, error = %e, "cannot connect to this agora server; trying the next");
                    }
                    failures.push((index, e));
                }
            }
        }
        let Some((conn, ids, index)) = connected else {
            return Err(combine_failures(&addresses, failures));
        };
        if several {
            tracing::debug!(address = %addresses[index], "connected to the agora server");
        }
        let link = Arc::new_cyclic(|me| Link {
            addresses,
            authkey: authkey.to_vec(),
            client,
            options,
            ids,
            generations: AtomicU64::new(1),
            current: Mutex::new(Current { conn, index }),
            outage: tokio::sync::Mutex::new(Outage::default()),
            failure: Mutex::new(None),
            objects: Mutex::new(Default::default()),
            owed: Mutex::new(Vec::new()),
            me: me.clone(),
        });
        link.keep_session();
        Ok(link)
    }

    /// The current connection, dead or alive.
    pub(crate) fn current(&self) -> Arc<Connection> {
        lock(&self.current).conn.clone()
    }

    /// The address of the current connection (dead or alive: the one last connected to).
    pub(crate) fn current_address(&self) -> Address {
        let index = lock(&self.current).index;
        self.addresses[index].clone()
    }

    /// Every address the link may connect to, in the order given.
    pub(crate) fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// The addresses for a message: the one address, or all of them comma separated.
    fn addresses_text(&self) -> String {
        join_addresses(&self.addresses)
    }

    /// Why calls fail now, or `None` while the connection is healthy (or about to be
    /// replaced by the next call).
    pub(crate) fn connection_error(&self) -> Option<Error> {
        if let Some(failure) = lock(&self.failure).clone() {
            return Some(failure);
        }
        self.current().closed_reason()
    }

    /// Calls `op`, on no object (a ping, an open, the manager's own requests), on a live
    /// connection (reconnecting if need be) and returns the reply.
    pub(crate) async fn call(&self, op: Op) -> Result<Reply> {
        let answer = match self.queue_now(op) {
            Ok(answer) => answer,
            Err(slow) => self.queue_slowly(None, *slow).await?,
        };
        answer.await
    }

    /// Calls `method` on `object` with positional `args`, borrowed, on a live
    /// connection (reconnecting if need be) where the object is attached (it is
    /// re-attached if a reconnect raced with its opening; a lost object fails at once),
    /// and returns the reply with the generation of the connection that answered:
    /// whose session holds what the call handed over. The hot path encodes the
    /// arguments where they are, straight into the outbox; only a call that must wait
    /// for a reconnect or an attach copies them into a request of its own. `on_orphan`
    /// makes the call's [`OnOrphan`], if it has one (a closure: a call without one
    /// then carries nothing for it).
    pub(crate) async fn call_method<A: CallArgs + ?Sized>(
        &self,
        object: (&ObjectSlot, ObjectId),
        method: &str,
        args: &A,
        on_orphan: impl FnOnce() -> Option<OnOrphan>,
    ) -> Result<(Reply, u64)> {
        let call = match self.attached_current(object) {
            Some(conn) => match conn.queue_method(object.1, method, args, PendingCall::new(on_orphan())) {
                Ok(answer) => return in_session(answer).await,
                Err(Refused::Call(reason)) => return Err(reason),
                Err(Refused::Dead(call, _)) => call,
            },
            None => PendingCall::new(on_orphan()),
        };
        let out = Outgoing::call(&self.ids, object.1, method, args.to_values().map_err(Error::from)?);
        in_session(self.queue_slowly(Some(object), (out, call)).await?).await
    }

    /// [`Link::call`], also returning the generation of the connection that answered:
    /// whose session holds what the call handed over (an opened handle).
    pub(crate) async fn call_in_session(&self, op: Op) -> Result<(Reply, u64)> {
        let answer = match self.queue_now(op) {
            Ok(answer) => answer,
            Err(slow) => self.queue_slowly(None, *slow).await?,
        };
        in_session(answer).await
    }

    /// Encodes `op` and queues it on the current connection if that is alive: the hot
    /// path, which awaits nothing. Otherwise gives the call back for
    /// [`Link::queue_slowly`].
    fn queue_now(&self, op: Op) -> std::result::Result<Answer, Box<(Outgoing, PendingCall)>> {
        let out = Outgoing::new(&self.ids, op);
        self.current().queue_call(out, PendingCall::new(None)).map_err(|unsent| Box::new(unsent.call()))
    }

    /// The current connection, if `object` is attached in its session: where the hot
    /// path queues. (Whether it is alive, queueing finds out.)
    fn attached_current(&self, (slot, _): (&ObjectSlot, ObjectId)) -> Option<Arc<Connection>> {
        let conn = self.current();
        (slot.attached.load(Ordering::Acquire) == conn.generation()).then_some(conn)
    }

    /// Queues a call the hot path could not: reconnects if the connection is dead,
    /// attaches the object if need be, and tries again. Boxed: its future is large
    /// (reconnecting), and would otherwise make every call's as large.
    fn queue_slowly<'a>(
        &'a self,
        object: Option<(&'a ObjectSlot, ObjectId)>,
        (out, call): (Outgoing, PendingCall),
    ) -> Queueing<'a> {
        Box::pin(async move {
            let (mut out, mut call) = (out, call);
            // The current connection, dead or alive: a dead one gives the request back
            // unsent, and then (only then) the link reconnects.
            let mut conn = self.current();
            loop {
                if let Some((slot, id)) = object {
                    if slot.attached.load(Ordering::Acquire) != conn.generation() {
                        if !conn.is_open() {
                            conn = self.recover().await?;
                            continue;
                        }
                        match self.ensure_attached(&conn, id).await {
                            Ok(()) => {}
                            // Nothing sent yet: on to the next connection.
                            Err(_) if !conn.is_open() => {
                                conn = self.recover().await?;
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                match conn.clone().queue_call(out, call) {
                    Ok(answer) => return Ok(answer),
                    Err(unsent) => {
                        let Unsent { out: unsent, call: pending, reason } = *unsent;
                        if conn.is_open() {
                            return Err(reason); // not a dead connection: too large for this server
                        }
                        (out, call) = (unsent, pending);
                        conn = self.recover().await?;
                    }
                }
            }
        })
    }

    /// True if a call that waits and failed with `error` should be made again: its
    /// connection was lost and the manager reconnects.
    pub(crate) fn waits_again(&self, error: &Error) -> bool {
        self.options.reconnects() && reconnectable(error)
    }

    /// The connection of `generation` if it is still the current one and alive: where
    /// a guard's release or a lease's ack must go, and only there. Otherwise the
    /// error saying the session that owned the grant has ended.
    pub(crate) fn pinned(&self, generation: u64, what: &str) -> Result<Arc<Connection>> {
        let conn = self.current();
        if conn.generation() == generation {
            match conn.closed_reason() {
                None => return Ok(conn),
                Some(reason @ Error::SessionExpired(_)) => return Err(reason),
                Some(reason) if !self.options.reconnects() => return Err(reason),
                Some(reason) => return Err(self.session_ended(what, Some(&reason))),
            }
        }
        Err(self.session_ended(what, None))
    }

    /// Calls `method` on `object` with positional `args`, borrowed, on the connection
    /// of `generation` only (see [`Link::pinned`]): never on another connection, never
    /// reconnecting.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call_pinned<A: CallArgs + ?Sized>(
        &self,
        generation: u64,
        what: &str,
        object: ObjectId,
        method: &str,
        args: &A,
        on_orphan: Option<OnOrphan>,
    ) -> Result<Reply> {
        let conn = self.pinned(generation, what)?;
        match conn.queue_method(object, method, args, PendingCall::new(on_orphan)) {
            Ok(answer) => answer.await,
            Err(Refused::Call(reason)) => Err(reason),
            // The session ended just before: say so, as if it had ended earlier.
            Err(Refused::Dead(_, reason)) => match self.pinned(generation, what) {
                Ok(_) => Err(reason),
                Err(ended) => Err(ended),
            },
        }
    }

    /// `generation`'s connection if it is the current one and alive.
    pub(crate) fn live(&self, generation: u64) -> Option<Arc<Connection>> {
        Some(self.current()).filter(|conn| conn.generation() == generation && conn.is_open())
    }

    /// True if `generation`'s connection is the current one and alive.
    pub(crate) fn is_live(&self, generation: u64) -> bool {
        self.live(generation).is_some()
    }

    fn session_ended(&self, what: &str, reason: Option<&Error>) -> Error {
        let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        Error::SessionExpired(format!(
            "{what} belonged to a session that ended when the connection to the server at {} was lost{why}; \
             the server released it, and nothing was sent (a later session does not own it)",
            self.addresses_text()
        ))
    }

    // --- the registry ---------------------------------------------------------------

    /// Records a handle the session of `generation` took on `object` (an open), and
    /// returns the slot its proxies share.
    pub(crate) fn track(&self, object: ObjectId, kind: &Kind, generation: u64) -> Arc<ObjectSlot> {
        let mut objects = lock(&self.objects);
        let entry = objects.entry(object).or_insert_with(|| Entry {
            slot: Arc::new(ObjectSlot { attached: AtomicU64::new(0) }),
            kind: kind.clone(),
            live: 0,
            held: 0,
            attached: 0,
            lost: None,
        });
        entry.live += 1;
        entry.took_handle(generation);
        entry.slot.clone()
    }

    /// Forgets one proxy handle of `object` (it was dropped). Server handles beyond
    /// the live proxies go back (`Op::Release`), on the current connection if it is
    /// the one whose session holds them; a session that ended holds nothing.
    pub(crate) fn untrack(&self, object: ObjectId) {
        let mut objects = lock(&self.objects);
        let MapEntry::Occupied(mut occupied) = objects.entry(object) else { return };
        let entry = occupied.get_mut();
        entry.live = entry.live.saturating_sub(1);
        let excess = entry.held.saturating_sub(entry.live);
        if excess > 0 && entry.lost.is_none() {
            entry.held -= excess;
            let conn = self.current();
            if conn.generation() == entry.attached {
                if conn.is_open() {
                    for _ in 0..excess {
                        conn.send_and_forget(Op::Release { object });
                    }
                } else if conn.welcome().secret != 0 {
                    // Its session may be resumed, handles and all.
                    lock(&self.owed).extend(std::iter::repeat_n((entry.attached, object), excess));
                }
            }
        }
        if entry.live == 0 {
            occupied.remove();
        }
    }

    /// Attaches `object` in `conn`'s session if it is not yet (an open that raced
    /// with a reconnect); fails if the object is lost.
    async fn ensure_attached(&self, conn: &Arc<Connection>, object: ObjectId) -> Result<()> {
        {
            let objects = lock(&self.objects);
            match objects.get(&object) {
                Some(Entry { lost: Some((_, why)), .. }) => return Err(Error::NoSuchObject(why.clone())),
                Some(entry) if entry.attached == conn.generation() => return Ok(()),
                Some(_) => {}
                None => return Err(Error::Internal(format!("object {object:x} is not in the registry"))),
            }
        }
        let reply = conn.start_call(Op::Attach { object })?.await;
        let mut objects = lock(&self.objects);
        self.settle_attach(&mut objects, conn, object, reply)?;
        match objects.get(&object) {
            Some(Entry { lost: Some((_, why)), .. }) => Err(Error::NoSuchObject(why.clone())),
            _ => Ok(()),
        }
    }

    /// Applies the answer to an `Attach` of `object` on `conn` to the registry. An
    /// error that says nothing about the object (the connection broke) is returned.
    fn settle_attach(
        &self,
        objects: &mut agora_proto::idmap::IdMap<Entry>,
        conn: &Connection,
        object: ObjectId,
        reply: Result<Reply>,
    ) -> Result<()> {
        let generation = conn.generation();
        let entry = objects.get_mut(&object).filter(|e| e.live > 0);
        match (reply, entry) {
            (Ok(Reply::Opened { kind, .. }), Some(entry)) if kind == entry.kind => entry.took_handle(generation),
            (Ok(Reply::Opened { kind, .. }), entry) => {
                // Nobody wants it any more, or it is not the object we knew.
                conn.send_and_forget(Op::Release { object });
                if let Some(entry) = entry {
                    let why = format!(
                        "{} #{object:x} did not survive the server restart: the server now has a {kind} under that \
                         id; open the object again",
                        entry.kind
                    );
                    entry.lose(generation, why);
                }
            }
            (Ok(other), _) => return Err(Error::Protocol(format!("unexpected reply to attach: {other:?}"))),
            (Err(e @ (Error::ConnectionLost(_) | Error::ShuttingDown(_) | Error::SessionExpired(_))), _) => {
                return Err(e)
            }
            (Err(e @ Error::LimitExceeded(_)), _) => return Err(e),
            (Err(e), Some(entry)) => {
                let why = match e {
                    Error::NoSuchObject(said) => format!(
                        "{} #{object:x} did not survive the server restart (the server says: {said}); open it \
                         again (a named object by its name) for a proxy on the server as it is now",
                        entry.kind
                    ),
                    other => format!(
                        "{} #{object:x} could not be attached again after reconnecting to the server: {other}",
                        entry.kind
                    ),
                };
                entry.lose(generation, why);
            }
            (Err(_), None) => {}
        }
        Ok(())
    }

    /// Re-attaches every object the manager holds proxies for in `conn`'s session (a
    /// new connection, not yet in use), then makes `conn` the current connection, both
    /// under the registry lock so that a proxy dropped meanwhile is released exactly
    /// once, in the right session.
    async fn reattach_and_publish(&self, conn: Arc<Connection>, index: usize) -> Result<Arc<Connection>> {
        let wanted: Vec<ObjectId> = lock(&self.objects)
            .iter()
            .filter(|(_, entry)| entry.lost.is_none() && entry.live > 0)
            .map(|(id, _)| *id)
            .collect();
        let mut answers = Vec::with_capacity(wanted.len());
        for &object in &wanted {
            answers.push((object, conn.start_call(Op::Attach { object })?));
        }
        let mut replies = Vec::with_capacity(answers.len());
        for (object, answer) in answers {
            let reply = answer.await;
            replies.push((object, reply));
        }
        let mut objects = lock(&self.objects);
        for (object, reply) in replies {
            self.settle_attach(&mut objects, &conn, object, reply)?;
        }
        *lock(&self.current) = Current { conn: conn.clone(), index };
        drop(objects);
        let lost = lock(&self.objects).values().filter(|e| e.lost.is_some()).count();
        tracing::info!(
            address = %self.addresses[index],
            session = conn.welcome().session,
            generation = conn.generation(),
            objects = wanted.len(),
            lost,
            "reconnected to the agora server"
        );
        Ok(conn)
    }

    /// Makes `conn`, which resumed the session of the lost connection, the current
    /// connection: its session holds the handles, guards and leases of that one, so
    /// nothing is re-attached; releases owed meanwhile go out first.
    fn publish_resumed(&self, conn: Arc<Connection>, index: usize) -> Arc<Connection> {
        let generation = conn.generation();
        let objects = lock(&self.objects);
        for (_, object) in lock(&self.owed).drain(..).filter(|(owed_by, _)| *owed_by == generation) {
            conn.send_and_forget(Op::Release { object });
        }
        *lock(&self.current) = Current { conn: conn.clone(), index };
        drop(objects);
        tracing::info!(
            address = %self.addresses[index],
            session = conn.welcome().session,
            generation,
            "reconnected to the agora cluster and resumed the session: locks, permits, leases and handles are kept"
        );
        self.keep_session();
        conn
    }

    /// On a server that resumes sessions (a cluster node), reconnects as soon as the
    /// current connection dies, not at the next call: a session a leader change
    /// detached waits only a heartbeat timeout for its client, and a worker holding a
    /// lock may make no call for longer than that.
    fn keep_session(&self) {
        let conn = self.current();
        if conn.welcome().secret == 0 || !self.options.reconnects() {
            return;
        }
        let mut closed = conn.watch_closed();
        drop(conn);
        let link = self.me.clone();
        tokio::spawn(async move {
            if closed.wait_for(|dead| *dead).await.is_err() {
                return; // the connection was dropped with its manager
            }
            if let Some(link) = link.upgrade() {
                let _ = link.recover().await;
            }
        });
    }

    // --- reconnecting ---------------------------------------------------------------

    /// Replaces a dead connection, if the manager reconnects and the reason allows it.
    async fn recover(&self) -> Result<Arc<Connection>> {
        let mut outage = self.outage.lock().await;
        let conn = self.current();
        let reason = match conn.closed_reason() {
            None => return Ok(conn), // another call reconnected while we waited
            Some(reason) => reason,
        };
        if !self.options.reconnects() || !reconnectable(&reason) {
            return Err(reason);
        }
        if let Some(fatal) = &outage.fatal {
            return Err(fatal.clone());
        }
        let now = Instant::now();
        let since = *outage.since.get_or_insert_with(|| {
            let address = self.current_address();
            tracing::warn!(%address, %reason, "lost the connection to the agora server; reconnecting");
            now
        });
        let deadline = since + self.options.deadline();
        if now >= deadline {
            // Given up: one try now and then, so the manager recovers when the server is back.
            if outage.next_attempt.is_some_and(|at| now < at) {
                return Err(self.unreachable(&outage, since));
            }
            return match self.attempt(None).await {
                Ok(conn) => Ok(self.recovered(&mut outage, conn)),
                Err(e) => Err(self.failed(&mut outage, e, since)),
            };
        }
        let mut pause = BACKOFF_START;
        loop {
            match self.attempt(Some(deadline)).await {
                Ok(conn) => return Ok(self.recovered(&mut outage, conn)),
                Err(e) if is_fatal(&e) => return Err(self.failed(&mut outage, e, since)),
                Err(e) => {
                    tracing::debug!(addresses = %self.addresses_text(), error = %e, "reconnect attempt failed");
                    outage.last_error = Some(e);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let e = outage.last_error.take().expect("set above");
                return Err(self.failed(&mut outage, e, since));
            }
            tokio::time::sleep(jitter(pause).min(remaining)).await;
            pause = next_pause(pause, self.addresses.len());
        }
    }

    /// One connect attempt: the addresses in turn, starting after the one whose
    /// connection was lost ([`round_robin`]), until one connects; its connection is
    /// made current. Each address is given what is left of the reconnect `deadline`
    /// (at least [`ATTEMPT_FLOOR`], at most [`ATTEMPT_LIMIT`]); without one (the
    /// manager gave up, and tries once more now and then), [`ATTEMPT_FLOOR`]. Every
    /// address is tried, so that the error names each.
    async fn attempt(&self, deadline: Option<Instant>) -> Result<Arc<Connection>> {
        let after = lock(&self.current).index;
        let mut failures = Vec::new();
        for index in round_robin(self.addresses.len(), after) {
            let limit = deadline.map_or(ATTEMPT_FLOOR, |deadline| {
                deadline.saturating_duration_since(Instant::now()).clamp(ATTEMPT_FLOOR, ATTEMPT_LIMIT)
            });
            match self.attempt_at(index, limit).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    if self.addresses.len() > 1 {
                        let address = &self.addresses[index];
                        tracing::debug!(%address, error = %e, "cannot reconnect to this agora server; trying the next");
                    }
                    failures.push((index, e));
                }
            }
        }
        Err(combine_failures(&self.addresses, failures))
    }

    /// Connects to the address at `index`: connect, authenticate, re-attach, make it
    /// current, all within `limit`.
    async fn attempt_at(&self, index: usize, limit: Duration) -> Result<Arc<Connection>> {
        let address = &self.addresses[index];
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let lost = self.current();
        let previous = lost.previous().map(|previous| (previous, lost.generation()));
        drop(lost);
        let tls = self.options.tls_settings().cloned();
        let setup = Setup { ids: self.ids.clone(), generation, reconnects: true, tls, previous };
        let attempt = async {
            let conn = Connection::open(address, &self.authkey, &self.client, setup).await?;
            if conn.welcome().resumed {
                return Ok(self.publish_resumed(conn, index));
            }
            // A new session: what the lost one owed, it no longer holds.
            lock(&self.owed).clear();
            let conn = self.reattach_and_publish(conn, index).await?;
            self.keep_session();
            Ok(conn)
        };
        tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| Err(no_answer(address, limit)))
    }

    fn recovered(&self, outage: &mut Outage, conn: Arc<Connection>) -> Arc<Connection> {
        *outage = Outage::default();
        *lock(&self.failure) = None;
        conn
    }

    /// Ends a reconnect that failed with `error`: for good if it is fatal, else until
    /// the next attempt is due.
    fn failed(&self, outage: &mut Outage, error: Error, since: Instant) -> Error {
        let failure = if is_fatal(&error) {
            let fatal = match error {
                Error::AuthenticationFailed(m) => Error::AuthenticationFailed(format!(
                    "{m} — on reconnecting to {} after the connection was lost; not retrying (was the server \
                     restarted with another authkey?)",
                    self.addresses_text()
                )),
                other => other,
            };
            outage.fatal = Some(fatal.clone());
            fatal
        } else {
            outage.last_error = Some(error);
            outage.next_attempt = Some(Instant::now() + BACKOFF_CAP);
            self.unreachable(outage, since)
        };
        tracing::warn!(addresses = %self.addresses_text(), error = %failure, "gave up reconnecting to the agora server");
        *lock(&self.failure) = Some(failure.clone());
        failure
    }

    fn unreachable(&self, outage: &Outage, since: Instant) -> Error {
        let last_error = outage
            .last_error
            .clone()
            .unwrap_or_else(|| Error::Connect { address: self.addresses_text(), reason: "no attempt made".into() });
        Error::Unreachable {
            address: self.addresses_text(),
            down_for: since.elapsed(),
            last_error: Box::new(last_error),
        }
    }
}

/// `answer`'s reply, with the generation of the connection it came on: whose session
/// holds what the call handed over. Inlined: not a state machine of its own between a
/// call and its answer.
#[inline(always)]
fn in_session(mut answer: Answer) -> impl std::future::Future<Output = Result<(Reply, u64)>> {
    let generation = answer.connection().generation();
    std::future::poll_fn(move |cx| {
        std::future::Future::poll(std::pin::Pin::new(&mut answer), cx).map_ok(|reply| (reply, generation))
    })
}

/// True for the reasons a connection ends that a new connection may overcome: the
/// socket broke or the server shut down (a restart begins with a shutdown). A session
/// the server expired is not resumed: this process was frozen past the heartbeat
/// timeout, and must learn that what it held was released.
fn reconnectable(reason: &Error) -> bool {
    matches!(reason, Error::ConnectionLost(_) | Error::ShuttingDown(_))
}

/// True for connect errors no retry can fix; of several addresses, only if every
/// one failed so.
fn is_fatal(error: &Error) -> bool {
    match error {
        Error::ConnectAny { failures } => !failures.is_empty() && failures.iter().all(|(_, e)| is_fatal(e)),
        _ => {
            matches!(error, Error::AuthenticationFailed(_) | Error::Tls(_) | Error::Protocol(_) | Error::Unsupported(_))
        }
    }
}

/// The order one connect attempt tries `count` addresses in: starting with the one
/// after `after` (the address whose connection was lost), round the list, `after`
/// itself last.
pub(crate) fn round_robin(count: usize, after: usize) -> impl Iterator<Item = usize> {
    (1..=count).map(move |step| (after + step) % count)
}

/// The error of a connect attempt whose every address failed: the one failure as it
/// is, several as [`Error::ConnectAny`] naming each address (`failures` holds the
/// index of each address tried and its error).
fn combine_failures(addresses: &[Address], mut failures: Vec<(usize, Error)>) -> Error {
    match failures.len() {
        0 => Error::Connect { address: join_addresses(addresses), reason: "no attempt made".into() },
        1 => failures.remove(0).1,
        _ => Error::ConnectAny {
            failures: failures.into_iter().map(|(index, e)| (addresses[index].to_string(), e)).collect(),
        },
    }
}

/// Addresses for a message, comma separated.
fn join_addresses(addresses: &[Address]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The error of a connect attempt to `address` that got no answer within `limit`.
fn no_answer(address: &Address, limit: Duration) -> Error {
    Error::Connect { address: address.to_string(), reason: format!("no answer within {limit:?}") }
}

/// `pause` less a random part of up to half of it, so that the clients of a restarted
/// server do not all knock at the same instant.
pub(crate) fn jitter(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    // The standard library's randomly keyed SipHash of a counter: random enough for
    // spreading retries, without a dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64; // in [0, 1)
    pause.mul_f64(1.0 - fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_whole_of_the_pause() {
        let pause = Duration::from_millis(400);
        let samples: Vec<_> = (0..200).map(|_| jitter(pause)).collect();
        assert!(samples.iter().all(|d| *d > pause / 2 && *d <= pause), "{samples:?}");
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jittered, not constant");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let pauses = |addresses| {
            let mut pause = BACKOFF_START;
            let mut pauses = vec![];
            for _ in 0..8 {
                pauses.push(pause);
                pause = next_pause(pause, addresses);
            }
            pauses
        };
        let one = pauses(1);
        assert_eq!(one[0], Duration::from_millis(50));
        assert_eq!(one[4], Duration::from_millis(800));
        assert_eq!((one[5], one[7]), (BACKOFF_CAP, BACKOFF_CAP));
        let cluster = pauses(3);
        assert_eq!(&cluster[..3], &[50, 100, 200].map(Duration::from_millis));
        assert_eq!(cluster[7], CLUSTER_BACKOFF_CAP, "a cluster is asked often through a leader change");
    }

    #[test]
    fn which_errors_reconnect_and_which_are_fatal() {
        assert!(reconnectable(&Error::ConnectionLost("eof".into())));
        assert!(reconnectable(&Error::ShuttingDown("bye".into())));
        assert!(!reconnectable(&Error::SessionExpired("frozen".into())));
        assert!(is_fatal(&Error::AuthenticationFailed("no".into())));
        assert!(!is_fatal(&Error::Connect { address: "a".into(), reason: "refused".into() }));
        assert!(!is_fatal(&Error::ConnectionLost("during the handshake".into())));
        assert!(!is_fatal(&Error::LimitExceeded("too many connections".into())));
    }

    #[test]
    fn round_robin_starts_after_the_lost_address_and_ends_with_it() {
        let order = |count, after| round_robin(count, after).collect::<Vec<_>>();
        assert_eq!(order(1, 0), [0], "one address: always that one");
        assert_eq!(order(3, 0), [1, 2, 0]);
        assert_eq!(order(3, 1), [2, 0, 1]);
        assert_eq!(order(3, 2), [0, 1, 2]);
        assert_eq!(order(2, 1), [0, 1]);
    }

    fn address(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn one_failure_is_reported_as_it_is_several_name_every_address() {
        let addresses = [address("127.0.0.1:7001"), address("127.0.0.1:7002")];
        let refused = |a: &str| Error::Connect { address: a.into(), reason: "connection refused".into() };
        let one = combine_failures(&addresses[..1], vec![(0, refused("127.0.0.1:7001"))]);
        assert_eq!(one, refused("127.0.0.1:7001"));

        let both = combine_failures(
            &addresses,
            vec![(1, refused("127.0.0.1:7002")), (0, Error::AuthenticationFailed("bad key".into()))],
        );
        let message = both.to_string();
        assert_eq!(
            message,
            "cannot connect to any of 127.0.0.1:7002, 127.0.0.1:7001: 127.0.0.1:7002: connection refused; \
             127.0.0.1:7001: authentication failed: bad key"
        );
        assert!(!is_fatal(&both), "one node refusing the key does not stop retrying the others");
        let all_refuse_the_key = Error::ConnectAny {
            failures: vec![
                ("a:1".into(), Error::AuthenticationFailed("x".into())),
                ("b:1".into(), Error::Tls("y".into())),
            ],
        };
        assert!(is_fatal(&all_refuse_the_key));
        assert!(!is_fatal(&Error::ConnectAny { failures: vec![] }));
    }

    fn entry() -> Entry {
        Entry {
            slot: Arc::new(ObjectSlot { attached: AtomicU64::new(0) }),
            kind: Kind::Dict,
            live: 1,
            held: 0,
            attached: 0,
            lost: None,
        }
    }

    #[test]
    fn handles_count_per_session_and_old_news_is_ignored() {
        let mut e = entry();
        e.took_handle(1);
        e.took_handle(1);
        assert_eq!((e.attached, e.held), (1, 2));
        e.took_handle(3); // re-attached after a reconnect: one handle for all proxies
        assert_eq!((e.attached, e.held), (3, 1));
        e.took_handle(2); // an open answered by a session that ended since
        assert_eq!((e.attached, e.held), (3, 1));
        assert_eq!(e.slot.attached.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_lost_object_stays_lost_unless_a_newer_session_opens_it() {
        let mut e = entry();
        e.took_handle(1);
        e.lose(2, "gone".into());
        assert_eq!(e.slot.attached.load(Ordering::Relaxed), LOST);
        assert_eq!(e.held, 0);
        e.took_handle(1); // old news
        assert_eq!(e.slot.attached.load(Ordering::Relaxed), LOST);
        e.took_handle(2); // opened again (by name) in the session that found it gone
        assert!(e.lost.is_none());
        assert_eq!((e.attached, e.held), (2, 1));
        assert_eq!(e.slot.attached.load(Ordering::Relaxed), 2);
    }
}
