//! The running server: its shared state, its listeners, and graceful shutdown.
//!
//! [`Server::bind`] binds every listen address up front (so a port clash fails fast);
//! [`Server::run`] accepts until [`ShutdownHandle::shutdown`] (or a signal, in the
//! binary), then stops accepting, lets each connection finish the requests it has
//! read, answers parked calls with `ShuttingDown`, and waits for every connection
//! to close. Unix socket files are removed when their listeners drop.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto::native::ServerStats;
use agora_proto::Address;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::{self, Config};
use crate::connection::{self, Route};
use crate::dialect::python::holders::{self, ClientRefs};
use crate::durability::{Durability, DurabilityConfig, Recovery};
use crate::engine::{Command, Engine, Session, SessionId, Time};
use crate::listener::{self, Accepted, Listener};
use crate::memory::{self, MemoryMonitor};
use crate::parking::{Alarm, Mailbox, Parking};
use crate::tls::ServerTls;

/// How long [`Server::run`] waits for connections to close after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters for `stats` and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections refused (limit, failed handshake, bad hello).
    pub connections_refused: AtomicU64,
    /// Requests handled since start.
    pub requests_total: AtomicU64,
}

/// The peer address of every open session: the engine knows sessions, the server
/// knows sockets, and `agora get` shows both (who holds a lock, from where).
#[derive(Debug, Default)]
pub struct Peers(Mutex<HashMap<SessionId, String>>);

impl Peers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer address of open session `session` (`host:port`, or the Unix socket's
    /// peer as the listener names it).
    pub fn of(&self, session: SessionId) -> Option<String> {
        self.map().get(&session).cloned()
    }

    /// How many sessions are known.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True if no session is known.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// A session's entry in [`Peers`], removed when its connection is done with it.
#[derive(Debug)]
pub struct PeerEntry {
    peers: Arc<Peers>,
    session: SessionId,
}

impl Drop for PeerEntry {
    fn drop(&mut self) {
        self.peers.map().remove(&self.session);
    }
}

/// State shared by every connection of one server.
pub struct Shared {
    /// Connections' waiting calls and the server's timer, over the engine that holds
    /// every object (`parking.engine()`).
    pub parking: Arc<Parking>,
    /// The configuration the server runs with.
    pub config: Config,
    /// Counters.
    pub counters: Counters,
    /// Flips to `true` when shutdown begins.
    pub shutdown: watch::Receiver<bool>,
    /// Begins shutdown (for the admin `shutdown` request).
    pub stopper: ShutdownHandle,
    /// When the server started.
    pub started: std::time::Instant,
    /// Connections authenticating now (bounded apart from `max_connections`).
    pub handshakes: Arc<connection::Handshakes>,
    /// References CPython clients hold, by holding process.
    pub client_refs: ClientRefs,
    /// The process's memory, sampled for the memory limit and statistics.
    pub memory: Arc<MemoryMonitor>,
    /// Every open session's peer address.
    pub peers: Arc<Peers>,
    /// Bound listen address → what its CPython clients should dial (`--advertise`).
    advertised: Vec<(Address, Address)>,
    /// Which user made each anonymous object (users configured only).
    pub owners: crate::access::Owners,
    /// The certificate of the `tls://` listeners, if there are any.
    pub tls: Option<Arc<ServerTls>>,
    /// Threads of their own serving CPython clients' persistent connections.
    pub python_threads: crate::dedicated::Threads,
    /// What every connection's busy polling shares: its places, the record of recent
    /// calls, and its counters (see [`crate::busy_poll`]).
    pub polling: Arc<crate::busy_poll::Polling>,
    /// Requests per second over the last sampling window, in thousandths.
    requests_per_sec_milli: AtomicU64,
}

impl Shared {
    /// Opens the session of a connection from `peer` (both dialects): its session and
    /// mailbox, and its entry in [`Shared::peers`], which lasts as long as the entry
    /// is kept.
    pub fn open_session(
        &self,
        peer: &str,
        resumable: bool,
    ) -> Result<(Session, Mailbox, PeerEntry), agora_proto::WireError> {
        let (session, mailbox) = self.parking.open(resumable)?;
        Ok(self.peer_entry(peer, session, mailbox))
    }

    /// Takes back a session a cluster's leader change detached, for a client that
    /// shows its secret (see [`Parking::resume`]).
    fn resume_session(
        &self,
        peer: &str,
        id: crate::engine::SessionId,
        secret: u64,
    ) -> Result<(Session, Mailbox, PeerEntry), agora_proto::WireError> {
        let (session, mailbox) = self.parking.resume(id, secret)?;
        Ok(self.peer_entry(peer, session, mailbox))
    }

    /// A connection's session: the one its client names in `previous`, if it asks to
    /// resume it and a leader change detached it; otherwise a new one (resumable on a
    /// cluster), after ending the previous one if it names one to end. Returns whether
    /// it resumed. `client` names the client in the log.
    pub fn start_session(
        &self,
        peer: &str,
        client: &str,
        previous: Option<agora_proto::native::Previous>,
    ) -> Result<(Session, Mailbox, PeerEntry, bool), agora_proto::WireError> {
        if let Some(previous) = previous {
            match self.resume_session(peer, previous.session, previous.secret) {
                Ok((session, mailbox, entry)) if previous.resume => {
                    tracing::info!(%client, session = session.id(), "session resumed after a leader change");
                    return Ok((session, mailbox, entry, true));
                }
                // The client may have been granted something it never heard of: only the
                // session's end gives that back.
                Ok((session, mailbox, _entry)) => {
                    tracing::info!(%client, session = session.id(), "the client ended its detached session");
                    self.parking.close(session, mailbox, []);
                }
                Err(e) => {
                    tracing::info!(%client, session = previous.session, error = %e.message, "no session to resume; starting a new one")
                }
            }
        }
        let (session, mailbox, entry) = self.open_session(peer, true)?;
        Ok((session, mailbox, entry, false))
    }

    fn peer_entry(&self, peer: &str, session: Session, mailbox: Mailbox) -> (Session, Mailbox, PeerEntry) {
        self.peers.map().insert(session.id(), peer.to_owned());
        let entry = PeerEntry { peers: self.peers.clone(), session: session.id() };
        (session, mailbox, entry)
    }

    /// Whether a client may shut the server down: one on this machine (a Unix socket or
    /// a loopback address) may, one on another host only with
    /// `--allow-remote-shutdown`.
    pub fn may_shut_down(&self, local_peer: bool) -> Result<(), agora_proto::WireError> {
        if local_peer || self.config.allow_remote_shutdown {
            return Ok(());
        }
        Err(agora_proto::WireError::new(
            agora_proto::ErrorCode::Unsupported,
            "shutdown refused: this client is on another host, and the server was not started with \
             --allow-remote-shutdown (stop it from its own machine: agora shutdown, or SIGTERM)",
        ))
    }

    /// What the listener a client reached at `local` (a connection's local address)
    /// advertises to its CPython clients (`--advertise`), if anything.
    pub fn advertised(&self, local: &Address) -> Option<&Address> {
        let serves = |bound: &Address| match (bound.host_port(), local.host_port()) {
            // TCP or TLS, the same on both sides: an unspecified host serves every address.
            (Some((host, port)), Some((local_host, local_port)))
                if std::mem::discriminant(bound) == std::mem::discriminant(local) =>
            {
                let any = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
                port == local_port && (any || host == local_host)
            }
            _ => bound == local,
        };
        self.advertised.iter().find(|(bound, _)| serves(bound)).map(|(_, advertised)| advertised)
    }

    /// Statistics for `agora stats` and the metrics endpoint.
    pub fn stats(&self) -> ServerStats {
        let objects = self.parking.engine().stats();
        let c = &self.counters;
        ServerStats {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.started.elapsed().as_secs(),
            sessions: c.connections_open.load(Ordering::Relaxed),
            connections_total: c.connections_total.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            requests_total: c.requests_total.load(Ordering::Relaxed),
            requests_per_sec: self.requests_per_sec_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            objects_by_kind: objects.objects_by_kind.into_iter().collect(),
            named_objects: objects.named,
            memory_bytes: memory::resident_bytes(),
            durability: self.parking.durability().map(|d| Box::new(d.stats())),
            client_objects_untracked: self.client_refs.untracked_objects(),
            memory: Some(self.memory.stats()),
            cluster: self.parking.serving().map(|s| Box::new(s.node().status().to_stats())),
            python_threads: self.python_threads.running() as u64,
        }
    }
}

/// Once a second, gives back the references that CPython client processes which are
/// gone still held (see [`crate::dialect::python::holders`]).
async fn give_back_for_dead_processes(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for (process, held) in shared.client_refs.take_dead() {
            let references: u64 = held.iter().map(|&(_, n)| n).sum();
            for (object, n) in held {
                for _ in 0..n {
                    let at = shared.parking.engine().now();
                    let _ = shared.parking.run_global(Command::Decref { object, at });
                }
            }
            tracing::info!(
                pid = process.pid(),
                references,
                "a CPython client process is gone: the references it still held were given back"
            );
        }
    }
}

/// Samples the request counter to keep `requests_per_sec` current.
async fn sample_request_rate(shared: Arc<Shared>) {
    const WINDOW: Duration = Duration::from_secs(2);
    let mut shutdown = shared.shutdown.clone();
    let mut last = shared.counters.requests_total.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WINDOW) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = shared.counters.requests_total.load(Ordering::Relaxed);
        let rate_milli = (now - last) * 1000 / WINDOW.as_secs();
        shared.requests_per_sec_milli.store(rate_milli, Ordering::Relaxed);
        last = now;
    }
}

/// Stops a running server; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: Arc<watch::Sender<bool>>,
    parking: Arc<Parking>,
}

impl ShutdownHandle {
    /// Begins a graceful shutdown (idempotent): first no call may wait any more
    /// ([`Parking::drain`]), then connections are told to finish (native ones through
    /// their mailboxes, [`Parking::stop_connections`]; the rest by the watch).
    pub fn shutdown(&self) {
        self.parking.drain();
        self.parking.stop_connections();
        self.stop.send_replace(true);
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    addresses: Vec<Address>,
    shutdown: ShutdownHandle,
}

impl Server {
    /// Binds every address in `config.listen`.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        if config.listen.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no listen address given"));
        }
        if let Some(limit) = config.limits.max_memory.filter(|&limit| limit < memory::MIN_LIMIT) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "max_memory {} is too small: the server itself needs a few MiB (at least {})",
                    config::format_size(limit),
                    config::format_size(memory::MIN_LIMIT)
                ),
            ));
        }
        let tls = match (&config.tls, config.listen.iter().find(|a| a.is_tls())) {
            (Some(files), Some(_)) => Some(Arc::new(
                ServerTls::load(files.clone()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            )),
            (None, Some(address)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                    "cannot listen on {address}: a tls:// address needs a certificate and key (--tls-cert, --tls-key)"
                ),
                ))
            }
            // The certificate serves the cluster's peer link (--peer-tls-ca) only.
            (Some(_), None) if config.cluster.as_ref().is_some_and(|c| c.node.tls.is_some()) => None,
            (Some(_), None) => {
                // A certificate nobody uses would let an operator believe traffic is encrypted.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a TLS certificate is configured but no listen address is tls://host:port: \
                     listen on a tls:// address, or drop the TLS settings",
                ));
            }
            (None, None) => None,
        };
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for address in &config.listen {
            let (listener, bound) = Listener::bind(address, config.unix_mode)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
            listeners.push(listener);
            addresses.push(bound);
        }
        let advertised = resolve_advertised(&config, &addresses)?;
        let (parking, recovery) = match (&config.durability, &config.cluster) {
            (Some(_), Some(_)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a cluster node keeps its state in the cluster's log: give it a cluster directory, not a durability config",
                ))
            }
            (None, Some(setup)) => (open_cluster_node(setup, &config).await?, None),
            (None, None) => {
                tracing::info!("state is in memory only: it is lost when the server stops (--data-dir keeps it)");
                (Parking::new(Arc::new(Engine::new(config.custom.clone()))), None)
            }
            (Some(durable), None) => {
                let (parking, recovery) = open_durable(durable, &config)?;
                (parking, Some(recovery))
            }
        };
        parking.engine().set_offload(offload_heavy_call);
        // A big dict or set that a call deletes or clears is freed on a helper thread,
        // not on the thread serving the call: that would hold up its other clients.
        agora_proto::reclaim::enable();
        let memory = MemoryMonitor::start(config.limits.max_memory)?;
        let python_threads = crate::dedicated::Threads::new(config.limits.python_threads);
        if let Some(gate) = memory.gate() {
            parking.engine().set_memory_gate(gate.clone());
            tracing::info!(max_memory = %config::format_size(gate.limit()), in_use = gate.in_use(), "memory limit set");
        }
        if let Some(recovery) = recovery {
            restart(&parking, recovery);
        }
        let max_handshakes = config.limits.max_handshakes;
        let (tx, rx) = watch::channel(false);
        let stopper = ShutdownHandle { stop: Arc::new(tx), parking: parking.clone() };
        let shared = Arc::new(Shared {
            parking,
            config,
            counters: Counters::default(),
            shutdown: rx,
            stopper: stopper.clone(),
            started: std::time::Instant::now(),
            handshakes: Arc::new(connection::Handshakes::new(max_handshakes)),
            python_threads,
            polling: Arc::new(crate::busy_poll::Polling::for_this_machine()),
            client_refs: ClientRefs::watching_at_most(holders::watch_limit(crate::dedicated::open_files_limit())),
            memory,
            peers: Arc::default(),
            advertised,
            owners: Default::default(),
            tls,
            requests_per_sec_milli: AtomicU64::new(0),
        });
        Ok(Server { shared, listeners, addresses, shutdown: stopper })
    }

    /// The addresses really bound (ephemeral ports resolved).
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// Sets the authkey after binding (the CLI loads or generates it only once the
    /// listen addresses are known to be free).
    pub fn set_authkey(&mut self, authkey: Vec<u8>) {
        Arc::get_mut(&mut self.shared).expect("not running yet").config.authkey = authkey;
    }

    /// Sets the users after binding (the CLI loads their keys only once the listen
    /// addresses are known to be free). Empty: the single authkey, allowed everything.
    pub fn set_users(&mut self, users: Vec<crate::access::User>) {
        Arc::get_mut(&mut self.shared).expect("not running yet").config.users = users;
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The certificate of the `tls://` listeners: [`ServerTls::reload`] makes new
    /// connections use the certificate files' current contents. `None` without TLS.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.shared.tls.clone()
    }

    /// The server's shared state (engine, counters).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Accepts and serves connections until shutdown, then drains them.
    pub async fn run(self) {
        let Server { shared, listeners, shutdown: _handle, .. } = self;
        tokio::spawn(sample_request_rate(shared.clone()));
        tokio::spawn(give_back_for_dead_processes(shared.clone()));
        tokio::spawn(shared.parking.clone().run_timer(shared.shutdown.clone()));
        if let Some(serving) = shared.parking.serving() {
            tokio::spawn(serving.clone().run_replicator(shared.shutdown.clone()));
            let hooks = Arc::new(StintStarter {
                parking: shared.parking.clone(),
                grace: shared.config.limits.heartbeat_timeout,
            });
            tokio::spawn(serving.clone().watch_leadership(hooks, shared.shutdown.clone()));
        }
        let slots = Arc::new(Semaphore::new(shared.config.limits.max_connections));
        if let Some(serving) = shared.parking.serving() {
            serving.node().serve_relays(crate::relay::Acceptor::new(&shared, slots.clone()));
        }
        // Every connection task holds a clone; when all are gone, draining is done.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut accept_tasks = Vec::new();
        for listener in listeners {
            let (shared, slots, done_tx) = (shared.clone(), slots.clone(), done_tx.clone());
            accept_tasks.push(tokio::spawn(accept_loop(listener, shared, slots, done_tx)));
        }
        drop(done_tx);
        for task in accept_tasks {
            let _ = task.await;
        }
        tracing::info!("stopped accepting; waiting for connections to finish");
        if tokio::time::timeout(DRAIN_TIMEOUT, done_rx.recv()).await.is_err() {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting anyway");
        }
        if let Some(serving) = shared.parking.serving() {
            serving.node().stop().await;
            tracing::info!(node = serving.node().id(), "left the cluster's traffic; its log stays on disk");
        }
        if let Some(durability) = shared.parking.durability() {
            // Everything appended goes to disk before the process ends.
            durability.stop();
            tracing::info!(data_dir = %durability.config().data_dir.display(), "log written and fsynced");
        }
        tracing::info!("server stopped");
    }
}

/// Pairs each `--advertise` entry with the address its listen address was bound to (an
/// ephemeral port resolved); an entry naming no listen address is an error.
fn resolve_advertised(config: &Config, bound: &[Address]) -> std::io::Result<Vec<(Address, Address)>> {
    config
        .advertise
        .iter()
        .map(|entry| match config.listen.iter().position(|listen| *listen == entry.listen) {
            Some(i) => Ok((bound[i].clone(), entry.advertised.clone())),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "--advertise {entry}: {} is not one of the listen addresses ({})",
                    entry.listen,
                    config.listen.iter().map(Address::to_string).collect::<Vec<_>>().join(", ")
                ),
            )),
        })
        .collect()
}

/// Runs `work` that may take long (a sort of millions of items, writing a snapshot) so
/// that the worker thread's other connections are handed to another thread meanwhile,
/// instead of waiting for it; on a single-threaded runtime it just runs.
pub fn without_freezing_others<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The engine's offload for calls on big objects ([`Engine::set_offload`]).
fn offload_heavy_call(call: &mut dyn FnMut()) {
    without_freezing_others(call)
}

/// Opens the data directory and restores its state.
fn open_durable(durable: &DurabilityConfig, config: &Config) -> std::io::Result<(Arc<Parking>, Recovery)> {
    if !config.custom.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a data directory cannot be used with custom kinds: their state is opaque to the server and cannot be restored",
        ));
    }
    let (durability, recovery) = Durability::open(durable.clone(), config.custom.clone())
        .map_err(|e| std::io::Error::other(format!("cannot open the data directory: {e}")))?;
    tracing::info!(
        data_dir = %durable.data_dir.display(),
        fsync = %durable.fsync,
        snapshot = ?recovery.snapshot,
        replayed = recovery.replayed,
        took_ms = recovery.took.as_millis() as u64,
        "state restored from the data directory"
    );
    Ok((Parking::durable(durability), recovery))
}

/// Starts a cluster node over a fresh engine; with `--cluster` members and an empty
/// log, forms the cluster.
async fn open_cluster_node(setup: &crate::cluster::ClusterSetup, config: &Config) -> std::io::Result<Arc<Parking>> {
    let engine = Arc::new(crate::cluster::fresh_engine(config.custom.clone()));
    let node = setup.node.clone();
    let (id, dir) = (node.node_id, node.dir.clone());
    let serving = crate::cluster::Serving::start(node, engine.clone(), config.custom.clone())
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cluster node {id} ({}): {e}", dir.display())))?;
    if !setup.members.is_empty() {
        serving
            .node()
            .initialize(setup.members.clone())
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("forming the cluster: {e}")))?;
    }
    tracing::info!(
        node = id,
        peer_listen = %serving.node().peer_addr(),
        dir = %dir.display(),
        "cluster node started; it serves clients while it leads and relays them to the leader otherwise"
    );
    Ok(Parking::replicated(engine, serving))
}

/// What a cluster node does when it starts and stops leading.
struct StintStarter {
    parking: Arc<Parking>,
    /// How long a detached session waits for its client (the heartbeat timeout).
    grace: Duration,
}

impl crate::cluster::StintHooks for StintStarter {
    fn began(&self, wakeups: Vec<(agora_proto::native::ObjectId, crate::engine::Time)>, before: SessionId) {
        // The previous leader's connections are gone with it: its native clients'
        // sessions wait, detached, for them to reconnect within a heartbeat timeout.
        let engine = self.parking.engine();
        let at = engine.now();
        let until = at.after(self.grace).unwrap_or(Time(u64::MAX));
        let _ = self.parking.run_global(Command::Takeover { at, before, until });
        self.parking.arm_lapses();
        for (object, at) in wakeups {
            self.parking.arm(at, Alarm::Wake { object });
        }
    }

    fn ended(&self) {
        self.parking.clear_alarms();
    }
}

/// Ends the previous run's sessions (`Command::Restart`, logged like any other) and
/// arms the wake-ups the restored objects asked for.
fn restart(parking: &Parking, recovery: Recovery) {
    let engine = parking.engine();
    let objects_before = engine.object_count();
    let _ = parking.run_global(Command::Restart { at: engine.now() });
    for (object, at) in recovery.wakeups {
        parking.arm(at, Alarm::Wake { object });
    }
    tracing::info!(
        objects = engine.object_count(),
        freed = objects_before.saturating_sub(engine.object_count()),
        "previous sessions ended: locks, permits and leases they held were released; anonymous objects no named object holds were freed"
    );
}

/// Accepts on one listener until shutdown; the listener (and its socket file) drops at the end.
///
/// Accepting never waits for the handshakes under way: the kernel's accept queue is
/// kept empty (a client whose connection overflowed it would wait in silence, the
/// server speaking first), and accepted connections wait here, in order, for a
/// handshake place ([`connection::Handshakes::admit`]). At most `max_connections` wait;
/// a newcomer beyond that closes the one that has waited longest (as a handshake that
/// takes too long is pushed out: idle sockets cannot lock clients out).
async fn accept_loop(listener: Listener, shared: Arc<Shared>, slots: Arc<Semaphore>, done: mpsc::Sender<()>) {
    let mut shutdown = shared.shutdown.clone();
    let mut waiting: VecDeque<(Accepted, String)> = VecDeque::new();
    let most_waiting = shared.config.limits.max_connections.max(1);
    loop {
        tokio::select! {
            // (The watch's guard dropped at once: the accept arm below awaits.)
            () = async { drop(shutdown.wait_for(|stop| *stop).await) } => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.counters.connections_total.fetch_add(1, Ordering::Relaxed);
                    if waiting.len() >= most_waiting {
                        if let Some((_, first)) = waiting.pop_front() {
                            shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(peer = %first, waiting = most_waiting, "connection dropped: it had waited longest to authenticate when another arrived");
                        }
                    }
                    waiting.push_back((stream, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            handshake = shared.handshakes.admit(), if !waiting.is_empty() => {
                if let Some((stream, peer)) = waiting.pop_front() {
                    start_serving(stream, peer, handshake, &shared, &slots, &done);
                }
            }
        }
    }
}

/// Starts serving an accepted connection, given its handshake place, on a task of its own.
fn start_serving(
    stream: Accepted,
    peer: String,
    handshake: connection::HandshakeSlot,
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    done: &mpsc::Sender<()>,
) {
    if let (Accepted::Tcp(s) | Accepted::Tls(s), Some(timeout)) = (&stream, shared.config.limits.dead_peer_timeout) {
        if let Err(e) = listener::guard_dead_peer(s, timeout) {
            tracing::warn!(%peer, error = %e, "cannot set TCP keepalive: a dead peer may go unnoticed");
        }
    }
    let (shared, slots, done) = (shared.clone(), slots.clone(), done.clone());
    if let Some(serving) = shared.parking.serving().cloned() {
        tokio::spawn(async move {
            // Taken first: a connection served here lives no longer than the stint
            // it was accepted in (its session belongs to that stint's engine state).
            let mut generation = serving.leadership().generation();
            if serving.leadership().admits_clients() {
                tokio::select! {
                    _ = serve_accepted(stream, peer, handshake, shared, slots, Route::Here) => {}
                    _ = generation.changed() => {}
                }
            } else {
                serve_accepted(stream, peer, handshake, shared, slots, Route::Relay(serving)).await;
            }
            drop(done);
        });
        return;
    }
    tokio::spawn(async move {
        serve_accepted(stream, peer, handshake, shared, slots, Route::Here).await;
        drop(done);
    });
}

/// Serves one accepted connection, here or by relaying it to the cluster's leader.
async fn serve_accepted(
    stream: Accepted,
    peer: String,
    handshake: connection::HandshakeSlot,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    route: Route,
) {
    match stream {
        Accepted::Tcp(s) => connection::serve(s, peer, handshake, shared, slots, route).await,
        Accepted::Unix(s) => connection::serve(s, peer, handshake, shared, slots, route).await,
        Accepted::Tls(s) => match shared.tls.clone() {
            Some(tls) => connection::serve(tls.accept(s), peer, handshake, shared, slots, route).await,
            None => unreachable!("Server::bind refuses tls:// listeners without a certificate"),
        },
    }
}
