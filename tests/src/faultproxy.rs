//! A fault-injecting TCP proxy for the links between cluster peers.
//!
//! Point a peer at [`FaultProxy::listen_addr`] instead of its neighbour's address and
//! the proxy forwards every connection to the real target, byte for byte, until told
//! to [`partition`](FaultProxy::partition) (cut every connection, refuse new ones),
//! [`heal`](FaultProxy::heal), or [`set_delay`](FaultProxy::set_delay) (add latency in
//! both directions).
//!
//! It runs on plain std threads (an acceptor, and per connection a reader and a writer
//! for each direction), so it works from sync tests and from inside or outside a tokio
//! runtime alike. Delay is applied per chunk by the writer thread, which sleeps until
//! each chunk's due time: latency is added without throttling throughput.
//!
//! A partition closes connections (peers see EOF or a reset) rather than silently
//! dropping packets: that is what a peer observes when a link fails fast.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the proxy waits to connect to its target before giving a connection up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP proxy to one target with partition and delay controls. Dropping it stops it
/// and closes every connection.
pub struct FaultProxy {
    shared: Arc<Shared>,
    listen_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    stopped: AtomicBool,
    bytes_forwarded: AtomicU64,
    connections_accepted: AtomicU64,
    connections_cut: AtomicU64,
    connections_refused: AtomicU64,
    /// What was forwarded, both directions, once [`FaultProxy::capture`] was called.
    captured: Mutex<Option<Vec<u8>>>,
}

/// The most a capture keeps.
const CAPTURE_LIMIT: usize = 16 << 20;

struct State {
    partitioned: bool,
    /// Connections from these addresses are cut and refused (one node isolated).
    refused_from: std::collections::HashSet<std::net::IpAddr>,
    delay: Duration,
    next_id: u64,
    /// Open connections: clones of both sockets, so a partition can shut them down.
    conns: HashMap<u64, (TcpStream, TcpStream)>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`.
    ///
    /// # Panics
    /// If it cannot bind a local port (a test environment failure).
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let listen_addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State {
                partitioned: false,
                refused_from: Default::default(),
                delay: Duration::ZERO,
                next_id: 0,
                conns: HashMap::new(),
            }),
            stopped: AtomicBool::new(false),
            bytes_forwarded: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_cut: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            captured: Mutex::new(None),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("faultproxy-{listen_addr}"))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the proxy's acceptor")
        };
        FaultProxy { shared, listen_addr, acceptor: Some(acceptor) }
    }

    /// The address peers should connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Cuts the link: closes every open connection and closes new ones as soon as they
    /// are accepted, until [`heal`](FaultProxy::heal).
    pub fn partition(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.partitioned = true;
        for (_, (client, server)) in state.conns.drain() {
            // Shutting both sockets down wakes the blocked readers, which then exit.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            self.shared.connections_cut.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Cuts the connections that come from `ip` and refuses new ones from it, until
    /// [`heal`](FaultProxy::heal): the link from one peer fails, the others stay.
    pub fn refuse_from(&self, ip: std::net::IpAddr) {
        let mut state = self.shared.state.lock().unwrap();
        state.refused_from.insert(ip);
        let cut: Vec<u64> = state
            .conns
            .iter()
            .filter(|(_, (client, _))| client.peer_addr().is_ok_and(|a| a.ip() == ip))
            .map(|(id, _)| *id)
            .collect();
        for id in cut {
            if let Some((client, server)) = state.conns.remove(&id) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                self.shared.connections_cut.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Restores the link: new connections are forwarded again, from every address
    /// (connections cut stay closed; peers reconnect).
    pub fn heal(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.partitioned = false;
        state.refused_from.clear();
    }

    /// True while partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.shared.state.lock().unwrap().partitioned
    }

    /// Delays every chunk of bytes by `delay` in each direction from now on
    /// (`Duration::ZERO` to stop delaying).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.state.lock().unwrap().delay = delay;
    }

    /// Keeps a copy of every byte forwarded from now on, both directions (up to
    /// 16 MiB): what a capture of the link would show.
    pub fn capture(&self) {
        *self.shared.captured.lock().unwrap() = Some(Vec::new());
    }

    /// What was captured since [`FaultProxy::capture`].
    pub fn captured(&self) -> Vec<u8> {
        self.shared.captured.lock().unwrap().clone().unwrap_or_default()
    }

    /// Bytes written onward so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes_forwarded.load(Ordering::Relaxed)
    }

    /// Connections forwarded to the target so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::Relaxed)
    }

    /// Open connections closed by [`partition`](FaultProxy::partition).
    pub fn connections_cut(&self) -> u64 {
        self.shared.connections_cut.load(Ordering::Relaxed)
    }

    /// New connections closed at once because of a partition (or because the target
    /// could not be reached).
    pub fn connections_refused(&self) -> u64 {
        self.shared.connections_refused.load(Ordering::Relaxed)
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.state.lock().unwrap().conns.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the acceptor, blocked in accept(), so it sees the flag and exits.
        let _ = TcpStream::connect_timeout(&self.listen_addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let mut state = self.shared.state.lock().unwrap();
        for (_, (client, server)) in state.conns.drain() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let refused =
            |state: &State| state.partitioned || client.peer_addr().is_ok_and(|a| state.refused_from.contains(&a.ip()));
        if refused(&shared.state.lock().unwrap()) {
            shared.connections_refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
            shared.connections_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if let Err(e) = forward(client, server, &shared) {
            eprintln!("faultproxy: cannot forward a connection: {e}");
        }
    }
}

/// Registers a connection and starts its four pump threads.
fn forward(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    // Peers exchange small messages; Nagle would add latency the test did not ask for.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let id = {
        let mut state = shared.state.lock().unwrap();
        // Re-checked under the lock: a partition that raced with the connect must
        // not let this connection through.
        let from_refused = client.peer_addr().is_ok_and(|a| state.refused_from.contains(&a.ip()));
        if state.partitioned || from_refused || shared.stopped.load(Ordering::SeqCst) {
            shared.connections_refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return Ok(());
        }
        let id = state.next_id;
        state.next_id += 1;
        state.conns.insert(id, (client.try_clone()?, server.try_clone()?));
        id
    };
    shared.connections_accepted.fetch_add(1, Ordering::Relaxed);
    let open = Arc::new(AtomicU64::new(2));
    pump(client.try_clone()?, server.try_clone()?, id, open.clone(), shared.clone())?;
    pump(server, client, id, open, shared.clone())?;
    Ok(())
}

/// Copies `from` → `to` with the current delay: a reader thread stamps each chunk
/// with its due time, a writer thread sleeps until then and writes it.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, open: Arc<AtomicU64>, shared: Arc<Shared>) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_shared = shared.clone();
    std::thread::Builder::new().name("faultproxy-read".into()).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = reader_shared.state.lock().unwrap().delay;
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` tells the writer the stream ended.
    })?;
    std::thread::Builder::new().name("faultproxy-write".into()).spawn(move || {
        let mut failed = false;
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                failed = true;
                break;
            }
            shared.bytes_forwarded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if let Some(captured) = shared.captured.lock().unwrap().as_mut() {
                let room = CAPTURE_LIMIT.saturating_sub(captured.len());
                captured.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        if failed {
            // The far side is gone: tear the whole connection down.
            let _ = to.shutdown(Shutdown::Both);
            if let Some((client, server)) = shared.state.lock().unwrap().conns.remove(&id) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
        } else {
            // Pass the end of stream on (half-close), as a direct connection would.
            let _ = to.shutdown(Shutdown::Write);
        }
        // The last direction to finish forgets the connection.
        if open.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.state.lock().unwrap().conns.remove(&id);
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generous per-read bound: only here so a broken proxy fails instead of hanging.
    const GUARD: Duration = Duration::from_secs(10);

    /// An echo server on an ephemeral port; its threads end with the process.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        s
    }

    /// Sends `msg` and reads the same number of bytes back.
    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    /// True if the connection yields no data: EOF, reset or any error.
    fn is_dead(s: &mut TcpStream) -> bool {
        let _ = s.write_all(b"ping");
        let mut buf = [0u8; 4];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    }

    #[test]
    fn bytes_flow_both_ways() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(proxy.listen_addr());
        assert_eq!(round_trip(&mut s, b"hello").unwrap(), b"hello");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(&mut s, &big).unwrap(), big);
        // The writer counts after writing, so the echo can arrive a moment before.
        let deadline = Instant::now() + GUARD;
        while proxy.bytes_forwarded() < 2 * (5 + 200_000) {
            assert!(Instant::now() < deadline, "only {} bytes counted", proxy.bytes_forwarded());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(proxy.bytes_forwarded(), 2 * (5 + 200_000));
        assert_eq!(proxy.connections_accepted(), 1);
        assert_eq!(proxy.open_connections(), 1);
    }

    #[test]
    fn partition_cuts_and_heal_restores() {
        let proxy = FaultProxy::start(echo_server());
        let mut old = connect(proxy.listen_addr());
        assert_eq!(round_trip(&mut old, b"before").unwrap(), b"before");

        proxy.partition();
        assert!(proxy.is_partitioned());
        assert_eq!(proxy.connections_cut(), 1);
        assert_eq!(proxy.open_connections(), 0);
        assert!(is_dead(&mut old), "an open connection sees EOF or a reset");
        // A new connection may complete the TCP handshake but exchanges nothing.
        // (The kernel refusing the connect outright would be fine too.)
        if let Ok(mut new) = TcpStream::connect(proxy.listen_addr()) {
            new.set_read_timeout(Some(GUARD)).unwrap();
            assert!(is_dead(&mut new), "a new connection is closed at once");
            assert_eq!(proxy.connections_refused(), 1);
        }

        proxy.heal();
        assert!(!proxy.is_partitioned());
        let mut new = connect(proxy.listen_addr());
        assert_eq!(round_trip(&mut new, b"after").unwrap(), b"after");
        assert!(is_dead(&mut old), "cut connections stay cut");
    }

    #[test]
    fn delay_adds_latency() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(proxy.listen_addr());
        round_trip(&mut s, b"warm").unwrap();
        proxy.set_delay(Duration::from_millis(150));
        let start = Instant::now();
        assert_eq!(round_trip(&mut s, b"slow").unwrap(), b"slow");
        // Both directions are delayed: at least 2 × 150 ms; the upper bound is a hang guard.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300) && took < GUARD, "{took:?}");
        proxy.set_delay(Duration::ZERO);
        assert_eq!(round_trip(&mut s, b"fast").unwrap(), b"fast");
    }

    #[test]
    fn client_close_is_passed_on() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(proxy.listen_addr());
        round_trip(&mut s, b"x").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // The echo server sees EOF, closes, and the proxy passes that back.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let deadline = Instant::now() + GUARD;
        while proxy.open_connections() > 0 {
            assert!(Instant::now() < deadline, "the connection was never forgotten");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn drop_closes_everything() {
        let target = echo_server();
        let proxy = FaultProxy::start(target);
        let addr = proxy.listen_addr();
        let mut s = connect(addr);
        round_trip(&mut s, b"x").unwrap();
        drop(proxy);
        assert!(is_dead(&mut s));
        // Nothing listens there any more.
        assert!(TcpStream::connect(addr).map(|mut s| is_dead(&mut s)).unwrap_or(true));
    }

    #[test]
    fn unreachable_target_closes_the_connection() {
        // A port that was just free: nothing listens on it.
        let target = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let proxy = FaultProxy::start(target);
        let mut s = connect(proxy.listen_addr());
        assert!(is_dead(&mut s));
        assert_eq!(proxy.connections_refused(), 1);
    }
}
