//! [`Manager`]: a connection to an agora server and the factory for proxies.

use std::sync::Arc;

use agora_proto::native::{Kind, ObjectInfo, Op, Reply, ServerStats};
use agora_proto::{Address, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::proxy::{encode, Handle};
use crate::{Array, ArrayItem, Dict, List, Namespace};

/// A connection to an agora server. Cheap to clone: every clone, and every proxy made
/// from it, shares one connection, which carries any number of concurrent calls.
///
/// Objects are reached by name (`manager.dict("scores")` finds or creates the dict
/// named `scores`) or created anonymously (`manager.new_dict()`), in which case they
/// live while some proxy (in any client) holds them.
#[derive(Clone)]
pub struct Manager {
    conn: Arc<Connection>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Manager(session {})", self.conn.welcome().session)
    }
}

impl Manager {
    /// Connects to `address` (`host:port`, `[::1]:port`, `tcp://host:port`,
    /// `unix:/path`) and authenticates with `authkey`.
    ///
    /// Fails with [`Error::Connect`] if the server cannot be reached and
    /// [`Error::AuthenticationFailed`] if the authkey does not match.
    pub async fn connect(address: &str, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        let address: Address = address.parse().map_err(|e: agora_proto::address::AddressError| Error::Connect {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
        Manager::connect_to(&address, authkey).await
    }

    /// Like [`Manager::connect`], with an already parsed address.
    pub async fn connect_to(address: &Address, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "agora-client".into());
        let client = format!("{name}[{}]", std::process::id());
        Ok(Manager { conn: Connection::open(address, authkey.as_ref(), &client).await? })
    }

    /// This connection's session id on the server.
    pub fn session_id(&self) -> u64 {
        self.conn.welcome().session
    }

    /// Why the connection is unusable, or `None` while it is healthy. After the
    /// server ended this session ([`Error::SessionExpired`]), every lock, permit and
    /// lease it held is gone; this is how a guard knows it is no longer valid.
    pub fn connection_error(&self) -> Option<Error> {
        self.conn.closed_reason()
    }

    /// The server's version.
    pub fn server_version(&self) -> &str {
        &self.conn.welcome().server
    }

    pub(crate) async fn open(&self, kind: Kind, name: Option<&str>, args: Vec<Value>) -> Result<Arc<Handle>> {
        Handle::open(&self.conn, kind, name, args).await
    }

    /// A round trip that does nothing: checks the server is there.
    pub async fn ping(&self) -> Result<()> {
        self.conn.call(Op::Ping).await.map(drop)
    }

    /// Server statistics (what `agora stats` shows).
    pub async fn stats(&self) -> Result<ServerStats> {
        match self.conn.call(Op::Stats).await? {
            Reply::Stats(stats) => Ok(stats),
            other => Err(Error::Protocol(format!("unexpected reply to stats: {other:?}"))),
        }
    }

    /// Every named object with its kind and size, sorted by name (what `agora ls` shows).
    pub async fn list_named(&self) -> Result<Vec<ObjectInfo>> {
        match self.conn.call(Op::ListNamed).await? {
            Reply::Objects(objects) => Ok(objects),
            other => Err(Error::Protocol(format!("unexpected reply to list: {other:?}"))),
        }
    }

    /// A copy of the named object's whole state, whatever its kind (what `agora get`
    /// prints): a dict's entries, a list's items, a queue's contents…
    pub async fn snapshot(&self, name: &str) -> Result<Value> {
        match self.conn.call(Op::Snapshot { name: name.to_owned() }).await? {
            Reply::Value(value) => Ok(value),
            other => Err(Error::Protocol(format!("unexpected reply to snapshot: {other:?}"))),
        }
    }

    /// Asks the server to shut down gracefully (what `agora shutdown` does).
    pub async fn shutdown_server(&self) -> Result<()> {
        self.conn.call(Op::Shutdown).await.map(drop)
    }

    /// Deletes the named object. Its name is free again; proxies still pointing at it
    /// get [`Error::NoSuchObject`].
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.conn.call(Op::Delete { name: name.to_owned() }).await.map(drop)
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
