//! [`Manager`]: a connection to an agora server and the factory for proxies, and
//! [`ManagerOptions`]: how it reconnects when it loses the server.

use std::sync::Arc;
use std::time::Duration;

use agora_proto::native::{Kind, ObjectHolders, ObjectInfo, Op, Reply, ServerStats};
use agora_proto::{Address, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::link::Link;
use crate::proxy::{encode, Handle};
use crate::tls::ClientTls;
use crate::{Array, ArrayItem, Dict, List, Namespace, Set};

/// How a [`Manager`] behaves when it loses its server: whether it reconnects, and how
/// long calls wait for that. Pass it to [`Manager::connect_with`];
/// [`Manager::connect`] uses the defaults (reconnect, 30 s deadline).
///
/// When the connection is lost — the socket breaks, or the server says it is
/// shutting down, as a restart does — the manager connects again to the same address
/// with the same authkey, retrying with exponential backoff and jitter (50 ms doubling
/// up to 1 s). A manager given several addresses of one cluster
/// ([`Manager::connect_any`]) tries them in turn on each attempt, starting with the one
/// after the address it lost, and pauses at most 200 ms between attempts: a leader
/// change is over in about a second. A call made meanwhile waits for the new connection, up to the
/// deadline, and then runs on it. Once the server has been unreachable for longer,
/// calls fail with [`Error::Unreachable`]; an [`Error::AuthenticationFailed`] on
/// reconnecting is reported at once, and never retried. The crate docs say what
/// [survives a restart](crate#what-survives-a-server-restart).
///
/// ```no_run
/// use std::time::Duration;
/// use agora_client::{Manager, ManagerOptions};
///
/// # async fn demo() -> agora_client::Result<()> {
/// // Wait at most 5 s for a restarted server.
/// let options = ManagerOptions::new().reconnect_deadline(Duration::from_secs(5));
/// let manager = Manager::connect_with("127.0.0.1:50000", b"secret", options).await?;
///
/// // Never reconnect: the first lost connection ends the manager.
/// let once = Manager::connect_with("127.0.0.1:50000", b"secret", ManagerOptions::new().reconnect(false)).await?;
/// # let _ = (manager, once); Ok(()) }
/// ```
///
/// A `tls://host:port` address needs [`ManagerOptions::tls`]: the CA bundle that
/// verifies the server, and a client certificate if the server requires one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerOptions {
    reconnect: bool,
    deadline: Duration,
    tls: Option<ClientTls>,
}

impl Default for ManagerOptions {
    fn default() -> ManagerOptions {
        ManagerOptions { reconnect: true, deadline: ManagerOptions::DEFAULT_RECONNECT_DEADLINE, tls: None }
    }
}

impl ManagerOptions {
    /// How long calls wait for a lost server by default: 30 s.
    pub const DEFAULT_RECONNECT_DEADLINE: Duration = Duration::from_secs(30);

    /// The defaults: reconnect, waiting up to [`Self::DEFAULT_RECONNECT_DEADLINE`].
    pub fn new() -> ManagerOptions {
        ManagerOptions::default()
    }

    /// Whether to reconnect after losing the connection (default: yes). Without, the
    /// first lost connection ends the manager: every later call fails with the reason
    /// ([`Error::ConnectionLost`], [`Error::ShuttingDown`]).
    pub fn reconnect(mut self, reconnect: bool) -> ManagerOptions {
        self.reconnect = reconnect;
        self
    }

    /// How long calls wait for the server to come back, counted from the first call
    /// that found the connection lost (default: 30 s). Zero turns reconnecting off.
    pub fn reconnect_deadline(mut self, deadline: Duration) -> ManagerOptions {
        self.deadline = deadline;
        self
    }

    /// True if the manager reconnects: [`reconnect`](Self::reconnect) is on and the
    /// deadline is not zero.
    pub fn reconnects(&self) -> bool {
        self.reconnect && !self.deadline.is_zero()
    }

    /// The reconnect deadline.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// How to verify a `tls://` server (and prove this client to one that requires a
    /// client certificate); used for every connection, reconnects included. Ignored
    /// for plain addresses.
    pub fn tls(mut self, tls: ClientTls) -> ManagerOptions {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if any.
    pub(crate) fn tls_settings(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }
}

/// A connection to an agora server. Cheap to clone: every clone, and every proxy made
/// from it, shares one connection, which carries any number of concurrent calls.
///
/// Objects are reached by name (`manager.dict("scores")` finds or creates the dict
/// named `scores`) or created anonymously (`manager.new_dict()`), in which case they
/// live while some proxy (in any client) holds them.
///
/// If the connection is lost, the manager reconnects by itself and its proxies keep
/// working ([`ManagerOptions`] has the details and the settings).
#[derive(Clone)]
pub struct Manager {
    link: Arc<Link>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Manager(session {})", self.link.current().welcome().session)
    }
}

impl Manager {
    /// Connects to `address` (`host:port`, `[::1]:port`, `tcp://host:port`,
    /// `unix:/path`; `tls://host:port` needs [`ManagerOptions::tls`]) and authenticates with `authkey`, with the default
    /// [`ManagerOptions`]: the manager reconnects if it loses the server.
    ///
    /// Fails with [`Error::Connect`] if the server cannot be reached and
    /// [`Error::AuthenticationFailed`] if the authkey does not match (this first
    /// connection is tried once, never retried).
    pub async fn connect(address: &str, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        Manager::connect_with(address, authkey, ManagerOptions::default()).await
    }

    /// Like [`Manager::connect`], with an already parsed address.
    pub async fn connect_to(address: &Address, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        Manager::connect_to_with(address, authkey, ManagerOptions::default()).await
    }

    /// Like [`Manager::connect`], choosing how the manager reconnects.
    pub async fn connect_with(address: &str, authkey: impl AsRef<[u8]>, options: ManagerOptions) -> Result<Manager> {
        let address: Address = address.parse().map_err(|e: agora_proto::address::AddressError| Error::Connect {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
        Manager::connect_to_with(&address, authkey, options).await
    }

    /// Like [`Manager::connect_with`], with an already parsed address.
    pub async fn connect_to_with(
        address: &Address,
        authkey: impl AsRef<[u8]>,
        options: ManagerOptions,
    ) -> Result<Manager> {
        Ok(Manager { link: Link::connect(vec![address.clone()], authkey.as_ref(), client_name(), options).await? })
    }

    /// Connects to one of several addresses of one cluster — any node accepts clients —
    /// and authenticates with `authkey`. The addresses are tried in the order given;
    /// the first that connects and authenticates is used (each is given at most 10 s).
    /// With one address this is [`Manager::connect_to_with`].
    ///
    /// When the connection is lost, the manager reconnects (as [`ManagerOptions`]
    /// says) to any of the addresses: each attempt tries them in turn, starting with
    /// the one after the address whose connection was lost, within the reconnect
    /// deadline and with the usual backoff between attempts. Giving up, it fails calls
    /// with [`Error::Unreachable`] naming every address; an authentication failure ends
    /// the attempts only if every address refused the authkey.
    /// [`Manager::current_address`] says which address the manager is connected to.
    ///
    /// On a cluster, a leader change does not end the manager's session: the new
    /// leader keeps it for a heartbeat timeout, and the manager, which reconnects as
    /// soon as the connection dies (not at the next call), resumes it. Its locks,
    /// permits, leases and proxies stay its own, and their guards stay valid. A session
    /// that had an acquire or a get in flight is ended and replaced instead, so that a
    /// grant whose answer was lost goes back.
    ///
    /// Fails with [`Error::ConnectAny`], naming every address and why each failed, if
    /// none works (with a single address: that address's own error, as
    /// [`Manager::connect_to_with`] reports it), and with [`Error::Connect`] if
    /// `addresses` is empty.
    ///
    /// ```no_run
    /// use agora_client::{Address, Manager, ManagerOptions};
    ///
    /// # async fn demo() -> agora_client::Result<()> {
    /// let nodes: Vec<Address> = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    ///     .iter()
    ///     .map(|a| a.parse().expect("a valid address"))
    ///     .collect();
    /// let manager = Manager::connect_any(nodes, b"secret", ManagerOptions::new()).await?;
    /// println!("connected to {}", manager.current_address());
    /// # Ok(()) }
    /// ```
    pub async fn connect_any(
        addresses: impl IntoIterator<Item = Address>,
        authkey: impl AsRef<[u8]>,
        options: ManagerOptions,
    ) -> Result<Manager> {
        let addresses: Vec<Address> = addresses.into_iter().collect();
        Ok(Manager { link: Link::connect(addresses, authkey.as_ref(), client_name(), options).await? })
    }

    /// The address of the server the manager is connected to now: after a reconnect,
    /// the address it reconnected to (with [`Manager::connect_any`], any of its
    /// addresses). While the connection is down, the address of the lost connection.
    ///
    /// ```no_run
    /// # async fn demo() -> agora_client::Result<()> {
    /// let manager = agora_client::Manager::connect("127.0.0.1:50000", b"secret").await?;
    /// assert_eq!(manager.current_address().to_string(), "127.0.0.1:50000");
    /// # Ok(()) }
    /// ```
    pub fn current_address(&self) -> Address {
        self.link.current_address()
    }

    /// Every address the manager may connect to, in the order given: the one address
    /// it was given, or those of [`Manager::connect_any`].
    ///
    /// ```no_run
    /// # async fn demo() -> agora_client::Result<()> {
    /// let manager = agora_client::Manager::connect("127.0.0.1:50000", b"secret").await?;
    /// assert_eq!(manager.addresses().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn addresses(&self) -> Vec<Address> {
        self.link.addresses().to_vec()
    }

    /// This connection's session id on the server: a new one after each reconnect,
    /// unless the reconnect resumed the session (a cluster's leader change: see
    /// [`Manager::connect_any`]).
    pub fn session_id(&self) -> u64 {
        self.link.current().welcome().session
    }

    /// Why the connection is unusable, or `None` while it is healthy. After the
    /// server ended this session ([`Error::SessionExpired`]), every lock, permit and
    /// lease it held is gone; this is how a guard knows it is no longer valid.
    ///
    /// On a manager that reconnects: the reason the connection was lost until the next
    /// call reconnects, [`Error::Unreachable`] once reconnecting gave up, and
    /// [`Error::AuthenticationFailed`] if the server refused the authkey on
    /// reconnecting; `None` again once reconnected.
    pub fn connection_error(&self) -> Option<Error> {
        self.link.connection_error()
    }

    /// The server's version (of the server connected to now: a restart may have
    /// changed it).
    pub fn server_version(&self) -> String {
        self.link.current().welcome().server.clone()
    }

    pub(crate) async fn open(&self, kind: Kind, name: Option<&str>, args: Vec<Value>) -> Result<Arc<Handle>> {
        Handle::open(&self.link, kind, name, args).await
    }

    /// Runs a manager-level request (not on an object).
    fn call(&self, op: Op) -> impl std::future::Future<Output = Result<Reply>> + Send + '_ {
        self.link.call(op)
    }

    /// A round trip that does nothing: checks the server is there.
    pub async fn ping(&self) -> Result<()> {
        self.call(Op::Ping).await.map(drop)
    }

    /// Server statistics (what `agora stats` shows).
    pub async fn stats(&self) -> Result<ServerStats> {
        match self.call(Op::Stats).await? {
            Reply::Stats(stats) => Ok(*stats),
            other => Err(Error::Protocol(format!("unexpected reply to stats: {other:?}"))),
        }
    }

    /// Every named object with its kind and size, sorted by name (what `agora ls` shows).
    pub async fn list_named(&self) -> Result<Vec<ObjectInfo>> {
        match self.call(Op::ListNamed).await? {
            Reply::Objects(objects) => Ok(objects),
            other => Err(Error::Protocol(format!("unexpected reply to list: {other:?}"))),
        }
    }

    /// Who holds the named object and who waits for it (what `agora get` prints for a
    /// lock, a semaphore or a queue): each hold's session, peer address, since when
    /// and fencing token, and the waiting calls in the order they will be served.
    pub async fn holders(&self, name: &str) -> Result<ObjectHolders> {
        match self.call(Op::Holders { name: Some(name.to_owned()) }).await? {
            Reply::Holders(mut all) if all.len() == 1 => Ok(all.remove(0)),
            other => Err(Error::Protocol(format!("unexpected reply to holders: {other:?}"))),
        }
    }

    /// [`Manager::holders`] of every named object that keeps per-session state (locks,
    /// semaphores, queues…) or has a waiting call, sorted by name (what `agora ls`
    /// summarizes).
    pub async fn all_holders(&self) -> Result<Vec<ObjectHolders>> {
        match self.call(Op::Holders { name: None }).await? {
            Reply::Holders(all) => Ok(all),
            other => Err(Error::Protocol(format!("unexpected reply to holders: {other:?}"))),
        }
    }

    /// A copy of the named object's whole state, whatever its kind (what `agora get`
    /// prints): a dict's entries, a list's items, a queue's contents…
    pub async fn snapshot(&self, name: &str) -> Result<Value> {
        match self.call(Op::Snapshot { name: name.to_owned() }).await? {
            Reply::Value(value) => Ok(value),
            other => Err(Error::Protocol(format!("unexpected reply to snapshot: {other:?}"))),
        }
    }

    /// Asks the server to shut down gracefully (what `agora shutdown` does).
    pub async fn shutdown_server(&self) -> Result<()> {
        self.call(Op::Shutdown).await.map(drop)
    }

    /// Asks a server with a data directory to write a snapshot now (what `agora
    /// snapshot` does); returns once it is on disk. An in-memory server answers
    /// [`Error::Unsupported`].
    pub async fn save_snapshot(&self) -> Result<agora_proto::native::SnapshotInfo> {
        match self.call(Op::SaveSnapshot).await? {
            Reply::Saved(info) => Ok(*info),
            other => Err(Error::Protocol(format!("unexpected reply to SaveSnapshot: {other:?}"))),
        }
    }

    /// Deletes the named object. Its name is free again; proxies still pointing at it
    /// get [`Error::NoSuchObject`].
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.call(Op::Delete { name: name.to_owned() }).await.map(drop)
    }

    /// The dict named `name`, created empty if it does not exist.
    pub async fn dict<K, V>(&self, name: &str) -> Result<Dict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(Dict::from_handle(self.open(Kind::Dict, Some(name), vec![]).await?))
    }

    /// A new anonymous dict (Python `manager.dict()`).
    pub async fn new_dict<K, V>(&self) -> Result<Dict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(Dict::from_handle(self.open(Kind::Dict, None, vec![]).await?))
    }

    /// The list named `name`, created empty if it does not exist.
    pub async fn list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<List<T>> {
        Ok(List::from_handle(self.open(Kind::List, Some(name), vec![]).await?))
    }

    /// A new anonymous list holding `items` (Python `manager.list(items)`).
    pub async fn new_list<T: Serialize + DeserializeOwned>(&self, items: &[T]) -> Result<List<T>> {
        Ok(List::from_handle(self.open(Kind::List, None, vec![encode(items)?]).await?))
    }

    /// The set named `name`, created empty if it does not exist (the typeid `set`
    /// of CPython 3.14's `SyncManager`).
    pub async fn set<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Set<T>> {
        Ok(Set::from_handle(self.open(Kind::Set, Some(name), vec![]).await?))
    }

    /// A new anonymous set holding `items` (Python 3.14's `manager.set(items)`).
    pub async fn new_set<T: Serialize + DeserializeOwned>(&self, items: &[T]) -> Result<Set<T>> {
        Ok(Set::from_handle(self.open(Kind::Set, None, vec![encode(items)?]).await?))
    }

    /// The value named `name`, created holding `initial` if it does not exist.
    pub async fn value<T: Serialize + DeserializeOwned>(&self, name: &str, initial: &T) -> Result<crate::Value<T>> {
        let args = vec![Value::None, encode(initial)?];
        Ok(crate::Value::from_handle(self.open(Kind::Value, Some(name), args).await?))
    }

    /// A new anonymous value holding `initial` (Python `manager.Value(typecode, v)`).
    pub async fn new_value<T: Serialize + DeserializeOwned>(&self, initial: &T) -> Result<crate::Value<T>> {
        let args = vec![Value::None, encode(initial)?];
        Ok(crate::Value::from_handle(self.open(Kind::Value, None, args).await?))
    }

    /// The array named `name`, created holding `initial` if it does not exist.
    pub async fn array<T: ArrayItem>(&self, name: &str, initial: &[T]) -> Result<Array<T>> {
        let args = vec![Value::Str(T::TYPECODE.to_string().into()), encode(initial)?];
        Ok(Array::from_handle(self.open(Kind::Array, Some(name), args).await?))
    }

    /// A new anonymous array holding `initial` (Python `manager.Array(typecode, seq)`).
    pub async fn new_array<T: ArrayItem>(&self, initial: &[T]) -> Result<Array<T>> {
        let args = vec![Value::Str(T::TYPECODE.to_string().into()), encode(initial)?];
        Ok(Array::from_handle(self.open(Kind::Array, None, args).await?))
    }

    /// The namespace named `name`, created empty if it does not exist.
    pub async fn namespace(&self, name: &str) -> Result<Namespace> {
        Ok(Namespace::from_handle(self.open(Kind::Namespace, Some(name), vec![]).await?))
    }

    /// A new anonymous namespace (Python `manager.Namespace()`).
    pub async fn new_namespace(&self) -> Result<Namespace> {
        Ok(Namespace::from_handle(self.open(Kind::Namespace, None, vec![]).await?))
    }
}

/// How this process introduces itself to the server: its executable's name and pid.
fn client_name() -> String {
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "agora-client".into());
    format!("{name}[{}]", std::process::id())
}
