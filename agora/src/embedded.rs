//! A server inside a Rust program, and a manager connected to it: the equivalent of
//! Python's `multiprocessing.Manager()`.
//!
//! [`EmbeddedManager::start`] starts an agora server on a thread of its own (with its
//! own Tokio runtime, so it does not depend on the caller's), listening on a Unix
//! socket in a fresh private directory (mode 0700) with a random authkey, and returns
//! a [`Manager`] connected to it: use it — it derefs to
//! [`agora_client::Manager`] — like any manager. Child processes find the server
//! through their environment: [`EmbeddedManager::command`] prepares a
//! [`std::process::Command`] carrying `AGORA_ADDRESS` and `AGORA_AUTHKEY` (never on
//! the command line, where `ps` would show the key), and the child calls
//! [`Manager::from_env`](agora_client::Manager::from_env).
//! [`EmbeddedManager::shutdown`] (or dropping it) stops the server cleanly and removes
//! its socket and directory.
//!
//! ```no_run
//! use agora::EmbeddedManager;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = EmbeddedManager::start().await?;
//! let hits = manager.value::<i64>("hits", &0).await?;
//! let mut child = manager.command(std::env::current_exe()?).arg("worker").spawn()?;
//! // In the child: let manager = agora_client::Manager::from_env().await?;
//! child.wait()?;
//! println!("{} hits", hits.get().await?);
//! manager.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`blocking::EmbeddedManager`] is the same for code without an async runtime, and
//! [`EmbeddedManager::builder`] chooses the address (TCP, for clients on other hosts or
//! in containers), the authkey, limits, custom kinds and a metrics endpoint.
//!
//! # Why not `agora_client::Manager::start()`
//!
//! The client crate must not depend on the server crate (every client would carry a
//! server), and the server library does not depend on the client, so starting a
//! server and connecting a manager to it lives here, in `agora`, the one crate that
//! depends on both. A type of its own, rather than an extension trait on `Manager`, because what
//! `start` returns is more than a manager: it owns the server, knows its address and
//! authkey, prepares child processes, and shuts the server down.
//!
//! [`Manager`]: agora_client::Manager

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agora_client::{ADDRESS_ENV, AUTHKEY_ENV};
use agora_proto::Address;
use tokio::sync::oneshot;

use agora_server::config::{Config, Exposure, Limits};
use agora_server::custom::{CustomKind, CustomKinds};
use agora_server::metrics::MetricsListener;
use agora_server::server::{Server, ShutdownHandle};

/// The socket file's name inside the private directory.
const SOCKET_NAME: &str = "agora.sock";
/// The longest Unix socket path the kernel takes (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why an embedded manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The server could not start: its thread, runtime, directory or socket.
    #[error("cannot start the embedded agora server: {0}")]
    Server(#[source] std::io::Error),
    /// The server started but the manager could not connect to it.
    #[error("cannot connect to the embedded agora server: {0}")]
    Connect(#[source] agora_client::Error),
}

/// Settings of an embedded server: [`EmbeddedManager::builder`].
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until started"]
pub struct Builder {
    listen: Option<Address>,
    authkey: Option<Vec<u8>>,
    limits: Limits,
    strict_auth: bool,
    custom: CustomKinds,
    expose: Vec<Exposure>,
    metrics: Option<Address>,
    worker_threads: Option<usize>,
}

impl Builder {
    /// Listen on `address` instead of a Unix socket in a private directory: a TCP
    /// address (port 0 for an ephemeral port) for clients on other hosts, or a Unix
    /// socket path of your choosing.
    pub fn listen(mut self, address: Address) -> Self {
        self.listen = Some(address);
        self
    }

    /// Listen on an ephemeral TCP port on 127.0.0.1 (`listen("127.0.0.1:0")`).
    pub fn tcp(self) -> Self {
        self.listen(Address::Tcp { host: "127.0.0.1".into(), port: 0 })
    }

    /// Use this authkey instead of a random one.
    pub fn authkey(mut self, authkey: impl Into<Vec<u8>>) -> Self {
        self.authkey = Some(authkey.into());
        self
    }

    /// The server's limits (frame size, connections, heartbeat timeout…).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Refuse the legacy HMAC-MD5 handshake answer (drops CPython ≤ 3.11 clients).
    pub fn strict_auth(mut self, strict: bool) -> Self {
        self.strict_auth = strict;
        self
    }

    /// Serve a custom kind: this program's own type ([`agora_server::custom`]).
    ///
    /// # Panics
    ///
    /// If a kind of the same name is already registered.
    pub fn register(mut self, kind: CustomKind) -> Self {
        self.custom.register(kind);
        self
    }

    /// Serve a named object to CPython clients under a typeid (as `--expose`).
    pub fn expose(mut self, exposure: Exposure) -> Self {
        self.expose.push(exposure);
        self
    }

    /// Serve Prometheus metrics over HTTP at `address` (`host:port`, path `/metrics`);
    /// [`EmbeddedManager::metrics_address`] tells the port an ephemeral one got.
    pub fn metrics(mut self, address: Address) -> Self {
        self.metrics = Some(address);
        self
    }

    /// Worker threads of the server's runtime (default: the number of CPUs, at most 4).
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads.max(1));
        self
    }

    /// Starts the server and connects a manager to it.
    pub async fn start(self) -> Result<EmbeddedManager, StartError> {
        let (pending, ready) = self.launch()?;
        let server = pending.ready(ready.await)?;
        let manager = agora_client::Manager::connect_to_with(&server.address, &server.authkey, in_process())
            .await
            .map_err(StartError::Connect)?;
        Ok(EmbeddedManager { manager, server })
    }

    /// Starts the server and connects a blocking manager to it. Like
    /// [`agora_client::blocking::Manager`], not for use inside an async runtime.
    pub fn start_blocking(self) -> Result<blocking::EmbeddedManager, StartError> {
        let (pending, ready) = self.launch()?;
        let server = pending.ready(ready.blocking_recv())?;
        let manager = agora_client::blocking::Manager::connect_to_with(&server.address, &server.authkey, in_process())
            .map_err(StartError::Connect)?;
        Ok(blocking::EmbeddedManager { manager, server })
    }

    /// Spawns the server thread; the receiver says when it listens (or why it cannot).
    fn launch(self) -> Result<(Pending, oneshot::Receiver<std::io::Result<Ready>>), StartError> {
        let (listen, dir) = match self.listen {
            Some(address) => (address, None),
            None => private_socket().map_err(StartError::Server)?,
        };
        let authkey = self.authkey.unwrap_or_else(random_authkey);
        let mut config = Config::new(vec![listen], authkey.clone());
        config.limits = self.limits;
        config.strict_auth = self.strict_auth;
        config.custom = self.custom;
        config.expose = self.expose;
        let workers =
            self.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(4));
        let metrics = self.metrics;
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("agora-server".into())
            .spawn(move || serve(config, metrics, workers, ready_tx))
            .map_err(StartError::Server)?;
        Ok((Pending { authkey, dir, thread: Some(thread) }, ready_rx))
    }
}

/// The server thread, before it said it listens.
struct Pending {
    authkey: Vec<u8>,
    dir: Option<tempfile::TempDir>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pending {
    fn ready(
        mut self,
        ready: Result<std::io::Result<Ready>, oneshot::error::RecvError>,
    ) -> Result<ServerThread, StartError> {
        let ready = match ready {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => return Err(StartError::Server(e)),
            Err(_) => return Err(StartError::Server(std::io::Error::other("the server thread ended while starting"))),
        };
        Ok(ServerThread {
            address: ready.address,
            authkey: std::mem::take(&mut self.authkey),
            metrics: ready.metrics,
            stop: ready.stop,
            thread: self.thread.take(),
            dir: self.dir.take(),
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Startup failed: the thread ends on its own (it could not bind, or sees that
        // nobody waits for it); wait for it so the directory goes after the socket.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the server thread reports once it listens.
struct Ready {
    address: Address,
    metrics: Option<Address>,
    stop: ShutdownHandle,
}

/// The server thread's body: bind, report, serve until shutdown.
fn serve(config: Config, metrics: Option<Address>, workers: usize, ready: oneshot::Sender<std::io::Result<Ready>>) {
    let runtime = crate::runtime::server_runtime(workers);
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let metrics = match &metrics {
            Some(address) => match MetricsListener::bind(address).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            },
            None => None,
        };
        let report = Ready {
            address: server.addresses()[0].clone(),
            metrics: metrics.as_ref().map(|m| m.address().clone()),
            stop: server.shutdown_handle(),
        };
        if ready.send(Ok(report)).is_err() {
            return; // nobody is waiting for this server any more
        }
        if let Some(metrics) = metrics {
            tokio::spawn(metrics.serve(server.shared().clone()));
        }
        server.run().await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// A fresh private directory (mode 0700) and a socket path inside it; TCP on
/// 127.0.0.1 if no temporary directory gives a short enough path.
fn private_socket() -> std::io::Result<(Address, Option<tempfile::TempDir>)> {
    let mut bases = vec![std::env::temp_dir()];
    if bases[0] != std::path::Path::new("/tmp") {
        bases.push(PathBuf::from("/tmp"));
    }
    for base in bases {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o700);
        let dir = tempfile::Builder::new().prefix("agora-").permissions(private).tempdir_in(&base)?;
        let socket = dir.path().join(SOCKET_NAME);
        if socket.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok((Address::Unix(socket), Some(dir)));
        }
    }
    tracing::debug!("temporary directory paths too long for a Unix socket; using TCP on 127.0.0.1");
    Ok((Address::Tcp { host: "127.0.0.1".into(), port: 0 }, None))
}

/// 32 random bytes as 64 hex characters, so the key survives environment variables and
/// Python's `authkey=os.environ["AGORA_AUTHKEY"].encode()`.
fn random_authkey() -> Vec<u8> {
    use std::fmt::Write as _;
    rand::random::<[u8; 32]>()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
        .into_bytes()
}

/// The running server an embedded manager owns; stops it when dropped.
struct ServerThread {
    address: Address,
    authkey: Vec<u8>,
    metrics: Option<Address>,
    stop: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The private directory of the socket; removed (after the socket) on drop.
    dir: Option<tempfile::TempDir>,
}

impl ServerThread {
    fn env(&self) -> [(&'static str, OsString); 2] {
        use std::os::unix::ffi::OsStringExt;
        [
            (ADDRESS_ENV, OsString::from(self.address.to_string())),
            (AUTHKEY_ENV, OsString::from_vec(self.authkey.clone())),
        ]
    }

    fn command(&self, program: &OsStr) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env());
        command
    }

    /// Stops the server and waits for its thread (the socket file goes with it).
    fn stop_and_join(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the embedded agora server thread panicked");
            }
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop_and_join();
        drop(self.dir.take());
    }
}

/// An agora server running inside this program, and a manager connected to it. Derefs
/// to [`agora_client::Manager`]: call `dict`, `queue`, `lock`… on it directly, and
/// clone it (`manager.clone()` is an `agora_client::Manager` sharing the connection) to
/// hand proxies to tasks. See the [module docs](self).
///
/// Dropping it stops the server, as [`shutdown`](EmbeddedManager::shutdown) does, but
/// blocks the dropping thread until the server has stopped (briefly: connections are
/// closed, not drained of blocked calls).
pub struct EmbeddedManager {
    // Declared first, so dropped first: the connection closes before the server stops.
    manager: agora_client::Manager,
    server: ServerThread,
}

impl std::fmt::Debug for EmbeddedManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedManager").field("address", &self.server.address).finish_non_exhaustive()
    }
}

impl std::ops::Deref for EmbeddedManager {
    type Target = agora_client::Manager;

    fn deref(&self) -> &agora_client::Manager {
        &self.manager
    }
}

impl EmbeddedManager {
    /// Starts a server on a private Unix socket with a random authkey, and connects a
    /// manager to it (Python's `Manager()`).
    pub async fn start() -> Result<EmbeddedManager, StartError> {
        Builder::default().start().await
    }

    /// A builder to choose the address, authkey, limits, custom kinds or metrics first.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The connected manager (also reachable through `Deref`).
    pub fn manager(&self) -> &agora_client::Manager {
        &self.manager
    }

    /// The address the server listens on (`unix:/…/agora.sock`, or `127.0.0.1:PORT`).
    pub fn address(&self) -> &Address {
        &self.server.address
    }

    /// The authkey clients must prove they know.
    pub fn authkey(&self) -> &[u8] {
        &self.server.authkey
    }

    /// Where the metrics endpoint listens, if [`Builder::metrics`] asked for one.
    pub fn metrics_address(&self) -> Option<&Address> {
        self.server.metrics.as_ref()
    }

    /// The environment a child process needs to connect with
    /// [`Manager::from_env`](agora_client::Manager::from_env): `AGORA_ADDRESS` and
    /// `AGORA_AUTHKEY`. For commands built elsewhere (`tokio::process::Command::envs`).
    pub fn env(&self) -> [(&'static str, OsString); 2] {
        self.server.env()
    }

    /// A [`Command`] for `program` whose environment carries the address and authkey,
    /// so the child connects with [`Manager::from_env`](agora_client::Manager::from_env).
    /// The authkey is never put on the command line.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.server.command(program.as_ref())
    }

    /// Adds the address and authkey to an existing command's environment.
    pub fn export<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command.envs(self.env())
    }

    /// A second connection to the server: a session of its own (locks held through it
    /// are not this manager's), as another process would have.
    pub async fn connect(&self) -> agora_client::Result<agora_client::Manager> {
        agora_client::Manager::connect_to_with(&self.server.address, &self.server.authkey, in_process()).await
    }

    /// Stops the server: clients (clones of this manager, child processes) are told it
    /// is going away, the socket file and its directory are removed. Returns when the
    /// server has stopped.
    pub async fn shutdown(self) {
        let EmbeddedManager { manager, mut server } = self;
        drop(manager);
        server.stop.shutdown();
        // Join off the async runtime: the thread ends as soon as its connections close.
        let thread = server.thread.take();
        let _ = tokio::task::spawn_blocking(move || thread.map(std::thread::JoinHandle::join)).await;
    }
}

pub mod blocking {
    //! The embedded manager for synchronous code: [`EmbeddedManager`] derefs to
    //! [`agora_client::blocking::Manager`].
    //!
    //! ```no_run
    //! use agora::embedded::blocking::EmbeddedManager;
    //!
    //! # fn main() -> Result<(), Box<dyn std::error::Error>> {
    //! let manager = EmbeddedManager::start()?;
    //! let jobs = manager.queue::<String>("jobs", 0)?;
    //! jobs.put(&"build".to_string())?;
    //! let status = manager.command(std::env::current_exe()?).arg("worker").status()?;
    //! // The child: let manager = agora_client::blocking::Manager::from_env()?;
    //! assert!(status.success());
    //! manager.shutdown();
    //! # Ok(()) }
    //! ```

    use std::ffi::{OsStr, OsString};
    use std::process::Command;

    use agora_proto::Address;

    use super::{Builder, ServerThread, StartError};

    /// An agora server running inside this program, and a blocking manager connected
    /// to it: the blocking form of [`super::EmbeddedManager`], with the same methods.
    /// Derefs to [`agora_client::blocking::Manager`].
    pub struct EmbeddedManager {
        pub(super) manager: agora_client::blocking::Manager,
        pub(super) server: ServerThread,
    }

    impl std::fmt::Debug for EmbeddedManager {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EmbeddedManager").field("address", &self.server.address).finish_non_exhaustive()
        }
    }

    impl std::ops::Deref for EmbeddedManager {
        type Target = agora_client::blocking::Manager;

        fn deref(&self) -> &agora_client::blocking::Manager {
            &self.manager
        }
    }

    impl EmbeddedManager {
        /// Starts a server on a private Unix socket with a random authkey, and connects
        /// a blocking manager to it. The blocking form of
        /// [`super::EmbeddedManager::start`].
        pub fn start() -> Result<EmbeddedManager, StartError> {
            Builder::default().start_blocking()
        }

        /// A builder; finish it with [`Builder::start_blocking`].
        pub fn builder() -> Builder {
            Builder::default()
        }

        /// The connected manager (also reachable through `Deref`).
        pub fn manager(&self) -> &agora_client::blocking::Manager {
            &self.manager
        }

        /// The address the server listens on.
        pub fn address(&self) -> &Address {
            &self.server.address
        }

        /// The authkey clients must prove they know.
        pub fn authkey(&self) -> &[u8] {
            &self.server.authkey
        }

        /// Where the metrics endpoint listens, if one was asked for.
        pub fn metrics_address(&self) -> Option<&Address> {
            self.server.metrics.as_ref()
        }

        /// `AGORA_ADDRESS` and `AGORA_AUTHKEY`, for a child's environment.
        pub fn env(&self) -> [(&'static str, OsString); 2] {
            self.server.env()
        }

        /// A [`Command`] for `program` whose environment carries the address and
        /// authkey (never its command line): the child connects with
        /// [`agora_client::blocking::Manager::from_env`].
        pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
            self.server.command(program.as_ref())
        }

        /// Adds the address and authkey to an existing command's environment.
        pub fn export<'a>(&self, command: &'a mut Command) -> &'a mut Command {
            command.envs(self.env())
        }

        /// A second connection to the server: a session of its own.
        pub fn connect(&self) -> agora_client::Result<agora_client::blocking::Manager> {
            agora_client::blocking::Manager::connect_to_with(
                &self.server.address,
                &self.server.authkey,
                super::in_process(),
            )
        }

        /// Stops the server (clients are told, the socket and its directory removed)
        /// and returns once it has stopped.
        pub fn shutdown(self) {
            let EmbeddedManager { manager, mut server } = self;
            drop(manager);
            server.stop_and_join();
        }
    }
}

/// How the embedded manager's clients connect: an in-process server never comes back
/// once it stops, so there is nothing to reconnect to.
fn in_process() -> agora_client::ManagerOptions {
    agora_client::ManagerOptions::new().reconnect(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_authkeys_are_64_hex_characters_and_differ() {
        let (a, b) = (random_authkey(), random_authkey());
        assert_eq!(a.len(), 64);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }

    #[test]
    fn the_private_socket_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (address, dir) = private_socket().unwrap();
        let dir = dir.expect("a Unix socket in a temporary directory");
        assert_eq!(address, Address::Unix(dir.path().join(SOCKET_NAME)));
        assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
