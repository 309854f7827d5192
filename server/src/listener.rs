//! Binding and accepting on TCP and Unix-domain sockets.
//!
//! A `tls://` address binds a TCP socket like any other; its connections come out as
//! [`Accepted::Tls`], and the server wraps them with [`crate::tls`] before anything is
//! read from them.
//!
//! Owns socket options (TCP_NODELAY on every accepted socket, TCP_QUICKACK re-armed on
//! Linux where a dialect asks for it — spec §1.4: without it a CPython client's
//! handshake and its large messages stall ~40 ms on delayed ACKs), stale Unix socket files, and removing the socket file when
//! the listener goes away. It knows nothing about what is spoken on a connection.

use std::io;
use std::path::PathBuf;

use agora_proto::Address;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// An accepted byte stream, whatever the transport.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Re-arms TCP_QUICKACK on TCP (the kernel clears it), which also sends a pending
    /// delayed ACK at once. Dialects call it before a read whose data a peer with Nagle
    /// on may be holding back until it sees our ACK.
    fn before_read(&self) {}

    /// True if the peer is on this machine (a Unix socket, or TCP from a loopback
    /// address), so what is sent cannot be read off a network.
    fn peer_is_local(&self) -> bool {
        false
    }

    /// The address the peer reached this server at, as a client would dial it.
    /// The peer's process id, where the kernel says it (a Unix socket).
    fn peer_pid(&self) -> Option<u32> {
        None
    }

    fn local_address(&self) -> Option<Address> {
        None
    }

    /// Whether bytes (or the peer's close) are waiting to be read, found out without
    /// waiting; `None` if this transport cannot tell. [`crate::busy_poll`] asks it.
    fn input_waiting(&self) -> Option<bool> {
        None
    }

    /// The socket itself, if another thread may write a whole reply onto it with
    /// `send(2)` while this connection waits for the call it answers
    /// ([`crate::parking::line`]); `None` where bytes must pass through this stream
    /// (TLS) or there is no socket.
    fn raw_socket(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Waits for input with the thread blocked, for at most a moment, and reads what
    /// came into `buf`: only a connection on a thread of its own can
    /// ([`crate::dedicated`]); `None` for one on a runtime other connections share.
    /// `Some(Err(_))` with [`io::ErrorKind::WouldBlock`]: nothing came meanwhile. With
    /// `input_only`, a thread waits where only input wakes it (other connections are
    /// calling: a wake-up for nothing would take a CPU one of theirs needs).
    fn read_blocking(&mut self, _buf: &mut bytes::BytesMut, _input_only: bool) -> Option<io::Result<usize>> {
        None
    }

    /// Takes the socket off this runtime, to be served on another
    /// ([`crate::dedicated`]); a stream that cannot be moved (TLS) comes back as is.
    /// `Ok(Err(_))`: taking it off failed, and the connection is lost.
    fn detach(self) -> Result<io::Result<crate::dedicated::Detached>, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

impl Transport for TcpStream {
    fn before_read(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self).set_quickack(true);
    }

    fn peer_is_local(&self) -> bool {
        self.peer_addr().is_ok_and(|peer| match peer.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback(),
            std::net::IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        })
    }

    fn local_address(&self) -> Option<Address> {
        let local = self.local_addr().ok()?;
        Some(Address::Tcp { host: local.ip().to_string(), port: local.port() })
    }

    fn detach(self) -> Result<io::Result<crate::dedicated::Detached>, Self> {
        Ok(self.into_std().map(crate::dedicated::Detached::Tcp))
    }

    fn input_waiting(&self) -> Option<bool> {
        input_waiting(self)
    }

    fn raw_socket(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

impl Transport for UnixStream {
    fn peer_is_local(&self) -> bool {
        true
    }

    fn peer_pid(&self) -> Option<u32> {
        u32::try_from(self.peer_cred().ok()?.pid()?).ok()
    }

    fn detach(self) -> Result<io::Result<crate::dedicated::Detached>, Self> {
        Ok(self.into_std().map(crate::dedicated::Detached::Unix))
    }

    fn input_waiting(&self) -> Option<bool> {
        input_waiting(self)
    }

    fn raw_socket(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }

    fn local_address(&self) -> Option<Address> {
        let local = self.local_addr().ok()?;
        if let Some(path) = local.as_pathname() {
            return Some(Address::Unix(path.to_path_buf()));
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let local: std::os::unix::net::SocketAddr = local.into();
            if let Some(name) = local.as_abstract_name() {
                return Some(Address::Abstract(String::from_utf8_lossy(name).into_owned()));
            }
        }
        None
    }
}

/// Asks the kernel, without waiting, whether `socket` has bytes (or a close) to read.
/// Tokio's own readiness is no use here: it is only learnt when the runtime polls.
pub(crate) fn input_waiting(socket: &impl std::os::fd::AsRawFd) -> Option<bool> {
    let mut wanted = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd that lives across the call, and a zero timeout.
    let ready = unsafe { libc::poll(&mut wanted, 1, 0) };
    (ready >= 0).then_some(ready > 0)
}

impl Transport for tokio::io::DuplexStream {
    fn peer_is_local(&self) -> bool {
        true
    }
}

/// Makes the kernel end a TCP connection whose peer has gone silent for about
/// `timeout`: keepalive probes start after half of it on an idle connection
/// (`TCP_KEEPIDLE`), every sixth of it after that, and `TCP_USER_TIMEOUT` drops the
/// connection once sent data or probes have gone unacknowledged for `timeout`. That
/// is how a client whose host lost power, or whose network was cut, loses its locks,
/// permits and leases: its connection fails, and its session ends, although it never
/// sent a FIN. CPython clients have no heartbeat, so for them this is the only way.
pub fn guard_dead_peer(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let whole_secs = |d: Duration| Duration::from_secs(d.as_secs().max(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(whole_secs(timeout / 2));
    #[cfg(target_os = "linux")]
    let keepalive = keepalive.with_interval(whole_secs(timeout / 6)).with_retries(3);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(timeout))?;
    Ok(())
}

/// A bound listening socket.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix-domain socket, and its file (none for an abstract name).
    Unix(UnixListener, SocketFile),
    /// TCP whose connections speak TLS.
    Tls(TcpListener),
}

/// An accepted connection.
pub enum Accepted {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain connection.
    Unix(UnixStream),
    /// A TCP connection to a TLS listener: TLS has not started yet.
    Tls(TcpStream),
}

impl Listener {
    /// Binds `address`; returns the listener and the address it really got (an
    /// ephemeral port resolved). A Unix socket file gets the permission bits
    /// `unix_mode`, if given (else what the umask leaves).
    pub async fn bind(address: &Address, unix_mode: Option<u32>) -> io::Result<(Listener, Address)> {
        let bound = Self::bind_socket(address, unix_mode).await?;
        bound.0.deepen_backlog()?;
        Ok(bound)
    }

    /// [`Listener::bind`], with the backlog Tokio or the standard library chose.
    async fn bind_socket(address: &Address, unix_mode: Option<u32>) -> io::Result<(Listener, Address)> {
        match address {
            Address::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port)).await?;
                let local = listener.local_addr()?;
                Ok((Listener::Tcp(listener), Address::Tcp { host: local.ip().to_string(), port: local.port() }))
            }
            Address::Tls { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port)).await?;
                let local = listener.local_addr()?;
                Ok((Listener::Tls(listener), Address::Tls { host: local.ip().to_string(), port: local.port() }))
            }
            Address::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path).map_err(|e| match path.parent() {
                    Some(dir)
                        if e.kind() == io::ErrorKind::NotFound && !dir.as_os_str().is_empty() && !dir.exists() =>
                    {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "the directory {} does not exist: create it (under systemd, RuntimeDirectory= \
                                 does, as in deploy/agora.service)",
                                dir.display()
                            ),
                        )
                    }
                    _ => e,
                })?;
                if let Some(mode) = unix_mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                }
                Ok((Listener::Unix(listener, SocketFile(Some(path.clone()))), address.clone()))
            }
            Address::Abstract(name) => Ok((Listener::Unix(bind_abstract(name)?, SocketFile(None)), address.clone())),
        }
    }

    /// Waits for the next connection; returns it and a peer description for logs.
    pub async fn accept(&self) -> io::Result<(Accepted, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Accepted::Tcp(stream), peer.to_string()))
            }
            Listener::Tls(l) => {
                let (stream, peer) = l.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Accepted::Tls(stream), format!("tls {peer}")))
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                let peer = match stream.peer_cred() {
                    Ok(cred) => format!("unix pid={}", cred.pid().unwrap_or(-1)),
                    Err(_) => "unix".to_owned(),
                };
                Ok((Accepted::Unix(stream), peer))
            }
        }
    }
}

/// A Unix socket's file, removed when this is dropped: the listener's, or whoever took
/// it from the listener to outlive it ([`std::mem::take`]).
#[derive(Debug, Default)]
pub struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket file left by a server that died, but never a live server's socket
/// and never a file that is not a socket.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; refusing to replace it", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is already listening on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// How many connections the kernel may hold for a listener before it is accepted: as
/// many as the system allows (Linux caps it at `net.core.somaxconn`, 4096 by default).
/// The server speaks first, so a connection the kernel could not queue would leave its
/// client waiting in silence; the accept loop keeps the queue drained, but a burst of
/// thousands of clients can arrive faster than one busy worker accepts.
const LISTEN_BACKLOG: i32 = 65_535;

impl Listener {
    /// Raises the backlog to [`LISTEN_BACKLOG`] (Tokio and the standard library listen
    /// with 128 or 1024; listening again only changes the backlog).
    fn deepen_backlog(&self) -> io::Result<()> {
        let socket = match self {
            Listener::Tcp(l) | Listener::Tls(l) => socket2::SockRef::from(l),
            Listener::Unix(l, _) => socket2::SockRef::from(l),
        };
        socket.listen(LISTEN_BACKLOG)
    }
}

#[cfg(target_os = "linux")]
fn bind_abstract(name: &str) -> io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

#[cfg(not(target_os = "linux"))]
fn bind_abstract(_name: &str) -> io::Result<UnixListener> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract Unix sockets exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_replaced_live_one_and_plain_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = Address::Unix(path.clone());
        let (live, _) = Listener::bind(&addr, None).await.unwrap();
        let err = Listener::bind(&addr, None).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        // A socket file whose server died is stale (std's listener leaves its file behind).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (again, _) = Listener::bind(&addr, None).await.unwrap();
        drop(again);
        assert!(!path.exists(), "socket file removed when the listener closes");
        std::fs::write(&path, "not a socket").unwrap();
        let err = Listener::bind(&addr, None).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    /// Connections the server has not accepted yet are queued by the kernel as deep as
    /// it allows (`net.core.somaxconn`), not the 128 Tokio listens with: a connection
    /// beyond the queue would not complete, and its client (the server speaks first)
    /// would wait in silence.
    #[tokio::test]
    async fn the_kernel_queues_many_connections_before_they_are_accepted() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        // Well past Tokio's 128, within what the system allows (4096 by default).
        let connections = somaxconn.min(600) - 8;
        let (_listener, addr) = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let Address::Tcp { port, .. } = addr else { panic!() };
        let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let queued = tokio::task::spawn_blocking(move || {
            (0..connections)
                .map(|i| {
                    std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
                        .unwrap_or_else(|e| panic!("connection {i} of {connections} was not queued: {e}"))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(queued.len(), connections);
    }

    #[tokio::test]
    async fn ephemeral_tcp_port_resolved() {
        let (_l, addr) = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let Address::Tcp { port, .. } = addr else { panic!() };
        assert_ne!(port, 0);
    }
}
