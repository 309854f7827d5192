//! The same API for synchronous code: [`Manager`] and proxies whose methods block.
//!
//! A blocking [`Manager`] owns a small Tokio runtime (one worker thread, named
//! `agora-client`) that drives its connection, and an async [`crate::Manager`]; each
//! blocking method runs the async method of the same name to completion on the
//! calling thread. Names, arguments, return types and errors are those of the async
//! API, so its documentation applies as is.
//!
//! ```no_run
//! use agora_client::blocking::Manager;
//!
//! fn main() -> agora_client::Result<()> {
//!     let manager = Manager::connect("127.0.0.1:50000", b"secret")?;
//!     let jobs = manager.list::<String>("jobs")?;
//!     jobs.extend(&["build".to_string(), "test".to_string()])?;
//!     let done = manager.value::<u64>("done", &0)?;
//!
//!     // Proxies are Send + Sync and cheap to clone: hand one to each thread.
//!     let workers: Vec<_> = (0..4)
//!         .map(|_| {
//!             let (jobs, done) = (jobs.clone(), done.clone());
//!             std::thread::spawn(move || -> agora_client::Result<()> {
//!                 while let Some(job) = jobs.pop()? {
//!                     println!("running {job}");
//!                     done.add(&1)?; // atomic, server side
//!                 }
//!                 Ok(())
//!             })
//!         })
//!         .collect();
//!     for worker in workers {
//!         worker.join().expect("worker panicked")?;
//!     }
//!     println!("{} jobs done", done.get()?);
//!     Ok(())
//! }
//! ```
//!
//! # Threads
//!
//! The manager and every proxy are `Send + Sync` and cheap to clone (clones share the
//! runtime and the one connection), so any number of threads can call through them at
//! once; their calls are multiplexed over the connection like concurrent async calls.
//! A call alone on the connection (no other call waiting for its answer) is written
//! to a TCP or Unix socket by the calling thread itself, so a thread making one call
//! at a time wakes the runtime's thread only for the answer (under TLS the runtime's
//! thread writes every call). The runtime and the connection live
//! until the manager and the last proxy made from it are dropped.
//!
//! # Losing the server
//!
//! A blocking manager reconnects like the async one ([`ManagerOptions`], and the
//! crate docs on [what survives a restart](crate#what-survives-a-server-restart)): a
//! call made while the server is down blocks until the manager has reconnected, up to
//! the reconnect deadline, then runs on the new connection. Choose the settings with
//! [`Manager::connect_with`].
//!
//! # Not from async code
//!
//! Blocking methods must not be called from inside an async runtime (from a Tokio
//! task, or anywhere under `#[tokio::main]`): Tokio panics ("Cannot start a runtime
//! from within a runtime"), as blocking there would stall the executor. Async code
//! should use [`crate::Manager`] directly, or move blocking calls into
//! `tokio::task::spawn_blocking`. Creating and dropping blocking handles is fine
//! anywhere.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::proto::Address;
use crate::{ArrayItem, ManagerOptions};

/// The runtime a blocking [`Manager`] and its proxies share.
///
/// Shut down in the background when the last holder drops, so that dropping a
/// blocking handle never blocks (and never panics, even inside an async context).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// Starts the runtime: a multi-thread runtime with one worker named `agora-client`.
    fn start() -> std::io::Result<Arc<Runtime>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agora-client")
            .enable_all()
            .build()?;
        Ok(Arc::new(Runtime(Some(rt))))
    }

    /// Runs `future` to completion on the calling thread.
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.as_ref().expect("the runtime is only taken when dropped").block_on(future)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A connection to an agora server, for synchronous code: the blocking form of
/// [`crate::Manager`], with the same methods.
///
/// Cheap to clone, `Send + Sync`: every clone, and every proxy made from it, shares
/// one connection and one runtime. See the [module docs](self) for the one rule:
/// never call it from inside an async runtime.
#[derive(Clone)]
pub struct Manager {
    // Declared before `rt`, so dropped first: the connection goes before the runtime.
    inner: crate::Manager,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.inner, f)
    }
}

impl Manager {
    /// Connects to `address` (`host:port`, `[::1]:port`, `tcp://host:port`,
    /// `unix:/path`) and authenticates with `authkey`, starting the runtime thread
    /// that drives the connection. The blocking form of [`crate::Manager::connect`].
    ///
    /// Fails with [`Error::Connect`] if the server cannot be reached (or the runtime
    /// cannot start) and [`Error::AuthenticationFailed`] if the authkey does not match.
    pub fn connect(address: &str, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        Manager::connect_with(address, authkey, ManagerOptions::default())
    }

    /// Like [`Manager::connect`], with an already parsed address. The blocking form of
    /// [`crate::Manager::connect_to`].
    pub fn connect_to(address: &Address, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        Manager::connect_to_with(address, authkey, ManagerOptions::default())
    }

    /// Like [`Manager::connect`], choosing how the manager reconnects after losing the
    /// server (see [`ManagerOptions`]). The blocking form of
    /// [`crate::Manager::connect_with`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use agora_client::{blocking::Manager, ManagerOptions};
    ///
    /// # fn main() -> agora_client::Result<()> {
    /// let options = ManagerOptions::new().reconnect_deadline(Duration::from_secs(5));
    /// let manager = Manager::connect_with("127.0.0.1:50000", b"secret", options)?;
    /// # let _ = manager; Ok(()) }
    /// ```
    pub fn connect_with(address: &str, authkey: impl AsRef<[u8]>, options: ManagerOptions) -> Result<Manager> {
        let rt = start_runtime(address)?;
        let inner = rt.block_on(crate::Manager::connect_with(address, authkey, options))?;
        Ok(Manager { inner, rt })
    }

    /// Like [`Manager::connect_with`], with an already parsed address. The blocking
    /// form of [`crate::Manager::connect_to_with`].
    pub fn connect_to_with(address: &Address, authkey: impl AsRef<[u8]>, options: ManagerOptions) -> Result<Manager> {
        let rt = start_runtime(address)?;
        let inner = rt.block_on(crate::Manager::connect_to_with(address, authkey, options))?;
        Ok(Manager { inner, rt })
    }

    /// Connects to one of several addresses of one cluster, tried in order, and
    /// reconnects to any of them after losing the connection. The blocking form of
    /// [`crate::Manager::connect_any`].
    ///
    /// ```no_run
    /// use agora_client::{blocking::Manager, Address, ManagerOptions};
    ///
    /// # fn main() -> agora_client::Result<()> {
    /// let nodes: Vec<Address> =
    ///     ["127.0.0.1:7001", "127.0.0.1:7002"].iter().map(|a| a.parse().expect("an address")).collect();
    /// let manager = Manager::connect_any(nodes, b"secret", ManagerOptions::new())?;
    /// println!("connected to {}", manager.current_address());
    /// # Ok(()) }
    /// ```
    pub fn connect_any(
        addresses: impl IntoIterator<Item = Address>,
        authkey: impl AsRef<[u8]>,
        options: ManagerOptions,
    ) -> Result<Manager> {
        let addresses: Vec<Address> = addresses.into_iter().collect();
        let rt = start_runtime(addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))?;
        let inner = rt.block_on(crate::Manager::connect_any(addresses, authkey, options))?;
        Ok(Manager { inner, rt })
    }

    /// The address of the server the manager is connected to now
    /// ([`crate::Manager::current_address`]).
    ///
    /// ```no_run
    /// # fn main() -> agora_client::Result<()> {
    /// let manager = agora_client::blocking::Manager::connect("127.0.0.1:50000", b"secret")?;
    /// println!("connected to {}", manager.current_address());
    /// # Ok(()) }
    /// ```
    pub fn current_address(&self) -> Address {
        self.inner.current_address()
    }

    /// Every address the manager may connect to ([`crate::Manager::addresses`]).
    pub fn addresses(&self) -> Vec<Address> {
        self.inner.addresses()
    }

    /// This connection's session id on the server, a new one after each reconnect
    /// ([`crate::Manager::session_id`]).
    pub fn session_id(&self) -> u64 {
        self.inner.session_id()
    }

    /// The server's version ([`crate::Manager::server_version`]).
    pub fn server_version(&self) -> String {
        self.inner.server_version()
    }

    /// A round trip that does nothing: checks the server is there. The blocking form
    /// of [`crate::Manager::ping`].
    pub fn ping(&self) -> Result<()> {
        self.rt.block_on(self.inner.ping())
    }

    /// Deletes the named object. Its name is free again; proxies still pointing at it
    /// get [`Error::NoSuchObject`]. The blocking form of [`crate::Manager::delete`].
    pub fn delete(&self, name: &str) -> Result<()> {
        self.rt.block_on(self.inner.delete(name))
    }

    /// The dict named `name`, created empty if it does not exist. The blocking form of
    /// [`crate::Manager::dict`].
    pub fn dict<K, V>(&self, name: &str) -> Result<Dict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.rt.block_on(self.inner.dict(name)).map(|d| self.wrap(d))
    }

    /// A new anonymous dict (Python `manager.dict()`). The blocking form of
    /// [`crate::Manager::new_dict`].
    pub fn new_dict<K, V>(&self) -> Result<Dict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.rt.block_on(self.inner.new_dict()).map(|d| self.wrap(d))
    }

    /// The list named `name`, created empty if it does not exist. The blocking form of
    /// [`crate::Manager::list`].
    pub fn list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<List<T>> {
        self.rt.block_on(self.inner.list(name)).map(|l| self.wrap(l))
    }

    /// A new anonymous list holding `items` (Python `manager.list(items)`). The
    /// blocking form of [`crate::Manager::new_list`].
    pub fn new_list<T: Serialize + DeserializeOwned>(&self, items: &[T]) -> Result<List<T>> {
        self.rt.block_on(self.inner.new_list(items)).map(|l| self.wrap(l))
    }

    /// The set named `name`, created empty if it does not exist. The blocking form of
    /// [`crate::Manager::set`].
    pub fn set<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Set<T>> {
        self.rt.block_on(self.inner.set(name)).map(|s| self.wrap(s))
    }

    /// A new anonymous set holding `items` (Python 3.14's `manager.set(items)`). The
    /// blocking form of [`crate::Manager::new_set`].
    pub fn new_set<T: Serialize + DeserializeOwned>(&self, items: &[T]) -> Result<Set<T>> {
        self.rt.block_on(self.inner.new_set(items)).map(|s| self.wrap(s))
    }

    /// The value named `name`, created holding `initial` if it does not exist. The
    /// blocking form of [`crate::Manager::value`].
    pub fn value<T: Serialize + DeserializeOwned>(&self, name: &str, initial: &T) -> Result<Value<T>> {
        self.rt.block_on(self.inner.value(name, initial)).map(|v| self.wrap(v))
    }

    /// A new anonymous value holding `initial` (Python `manager.Value(typecode, v)`).
    /// The blocking form of [`crate::Manager::new_value`].
    pub fn new_value<T: Serialize + DeserializeOwned>(&self, initial: &T) -> Result<Value<T>> {
        self.rt.block_on(self.inner.new_value(initial)).map(|v| self.wrap(v))
    }

    /// The array named `name`, created holding `initial` if it does not exist. The
    /// blocking form of [`crate::Manager::array`].
    pub fn array<T: ArrayItem>(&self, name: &str, initial: &[T]) -> Result<Array<T>> {
        self.rt.block_on(self.inner.array(name, initial)).map(|a| self.wrap(a))
    }

    /// A new anonymous array holding `initial` (Python `manager.Array(typecode, seq)`).
    /// The blocking form of [`crate::Manager::new_array`].
    pub fn new_array<T: ArrayItem>(&self, initial: &[T]) -> Result<Array<T>> {
        self.rt.block_on(self.inner.new_array(initial)).map(|a| self.wrap(a))
    }

    /// The namespace named `name`, created empty if it does not exist. The blocking
    /// form of [`crate::Manager::namespace`].
    pub fn namespace(&self, name: &str) -> Result<Namespace> {
        self.rt.block_on(self.inner.namespace(name)).map(|n| self.wrap(n))
    }

    /// A new anonymous namespace (Python `manager.Namespace()`). The blocking form of
    /// [`crate::Manager::new_namespace`].
    pub fn new_namespace(&self) -> Result<Namespace> {
        self.rt.block_on(self.inner.new_namespace()).map(|n| self.wrap(n))
    }

    /// Pairs an async proxy with this manager's runtime.
    fn wrap<P: Blocking>(&self, inner: P::Async) -> P {
        P::new(inner, self.rt.clone())
    }
}

/// Starts the runtime for a connection to `address`.
fn start_runtime(address: impl std::fmt::Display) -> Result<Arc<Runtime>> {
    Runtime::start().map_err(|e| Error::Connect {
        address: address.to_string(),
        reason: format!("cannot start the agora-client runtime thread: {e}"),
    })
}

/// A blocking proxy: an async proxy plus the runtime that runs its calls.
trait Blocking {
    type Async;
    fn new(inner: Self::Async, rt: Arc<Runtime>) -> Self;
}

/// Defines a blocking proxy wrapping the async proxy of the same name: the struct,
/// `Clone` and `Debug` (without bounds on the type parameters), `id`, and one method
/// per listed signature that blocks on the async method of the same name. Each
/// method's doc comment is followed by a link to the async method.
///
/// Generic methods do not fit the pattern; they are written out below.
macro_rules! blocking_proxy {
    (
        $(#[$doc:meta])*
        $name:ident<$($param:ident),*> where [$($bound:tt)*] {
            $(
                $(#[$method_doc:meta])*
                fn $method:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;
            )*
        }
    ) => {
        $(#[$doc])*
        pub struct $name<$($param),*> {
            inner: crate::$name<$($param),*>,
            rt: Arc<Runtime>,
        }

        impl<$($param),*> Clone for $name<$($param),*> {
            fn clone(&self) -> Self {
                $name { inner: self.inner.clone(), rt: self.rt.clone() }
            }
        }

        impl<$($param),*> std::fmt::Debug for $name<$($param),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.inner, f)
            }
        }

        impl<$($param),*> Blocking for $name<$($param),*> {
            type Async = crate::$name<$($param),*>;
            fn new(inner: Self::Async, rt: Arc<Runtime>) -> Self {
                $name { inner, rt }
            }
        }

        impl<$($param),*> $name<$($param),*>
        where
            $($bound)*
        {
            /// The server's id for this object.
            pub fn id(&self) -> u64 {
                self.inner.id()
            }

            $(
                $(#[$method_doc])*
                #[doc = ""]
                #[doc = concat!(
                    "The blocking form of [`", stringify!($name), "::", stringify!($method),
                    "`](crate::", stringify!($name), "::", stringify!($method), ")."
                )]
                pub fn $method(&self $(, $arg: $ty)*) -> $ret {
                    self.rt.block_on(self.inner.$method($($arg),*))
                }
            )*
        }
    };
}

mod object;
mod queue;
mod sync;
pub use object::*;
pub use queue::*;
pub use sync::*;

blocking_proxy! {
    /// A shared dict with keys `K` and values `V`, for synchronous code: the blocking
    /// form of [`crate::Dict`]. Cheap to clone, `Send + Sync`.
    Dict<K, V> where [K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned] {
        /// The value under `key`, or `None` (Python `d[key]`, `__getitem__`).
        fn get(&self, key: &K) -> Result<Option<V>>;
        /// Sets `key` to `value` (Python `d[key] = value`, `__setitem__`).
        fn insert(&self, key: &K, value: &V) -> Result<()>;
        /// Removes `key` and returns its value, or `None` if absent (Python `pop`).
        fn remove(&self, key: &K) -> Result<Option<V>>;
        /// True if `key` is present (Python `key in d`, `__contains__`).
        fn contains_key(&self, key: &K) -> Result<bool>;
        /// Number of entries (Python `len(d)`, `__len__`).
        fn len(&self) -> Result<usize>;
        /// True when the dict has no entries (Python `len(d) == 0`, `__len__`).
        fn is_empty(&self) -> Result<bool>;
        /// The keys in insertion order (Python `keys`).
        fn keys(&self) -> Result<Vec<K>>;
        /// The values in insertion order (Python `values`).
        fn values(&self) -> Result<Vec<V>>;
        /// The entries in insertion order (Python `items`).
        fn items(&self) -> Result<Vec<(K, V)>>;
        /// Removes every entry (Python `clear`).
        fn clear(&self) -> Result<()>;
        /// Returns the value under `key`, inserting `default` first if absent
        /// (Python `setdefault`).
        fn setdefault(&self, key: &K, default: &V) -> Result<V>;
        /// Removes and returns the most recently inserted entry (Python `popitem`).
        fn pop_last(&self) -> Result<Option<(K, V)>>;
        /// Atomically adds `delta` to the numeric value under `key` (starting from 0
        /// when absent) and returns the new value. agora's own `incr`; no Python
        /// equivalent.
        fn increment(&self, key: &K, delta: &V) -> Result<V>;
        /// Atomically sets `key` to `new` if its current value equals `expected`
        /// (`None`: if the key is absent). Returns whether it did. agora's own
        /// `compare_and_set`; no Python equivalent.
        fn compare_and_set(&self, key: &K, expected: Option<&V>, new: &V) -> Result<bool>;
    }
}

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Inserts every pair, in order, atomically (Python `update`).
    ///
    /// The blocking form of [`Dict::update`](crate::Dict::update).
    pub fn update<'a, I>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a K, &'a V)>,
        K: 'a,
        V: 'a,
    {
        self.rt.block_on(self.inner.update(entries))
    }
}

blocking_proxy! {
    /// A shared list of `T`, for synchronous code: the blocking form of
    /// [`crate::List`]. Indices follow Python (negative ones count from the end).
    /// Cheap to clone, `Send + Sync`.
    List<T> where [T: Serialize + DeserializeOwned] {
        /// Appends `item` at the end (Python `append`).
        fn append(&self, item: &T) -> Result<()>;
        /// Appends `item` at the end, like `Vec::push` (the same call as `append`).
        fn push(&self, item: &T) -> Result<()>;
        /// The item at `index`, or `None` if the index is out of range
        /// (Python `l[index]`, `__getitem__`).
        fn get(&self, index: i64) -> Result<Option<T>>;
        /// Replaces the item at `index` (Python `l[index] = item`, `__setitem__`);
        /// [`Error::IndexOutOfRange`] if there is none.
        fn set(&self, index: i64, item: &T) -> Result<()>;
        /// Inserts `item` before `index`, clamped to the ends (Python `insert`).
        fn insert(&self, index: i64, item: &T) -> Result<()>;
        /// Removes and returns the last item, or `None` if the list is empty
        /// (Python `pop()`).
        fn pop(&self) -> Result<Option<T>>;
        /// Removes and returns the item at `index` (Python `pop(index)`);
        /// [`Error::IndexOutOfRange`] if there is none.
        fn pop_at(&self, index: i64) -> Result<T>;
        /// Removes the item at `index` (Python `del l[index]`, `__delitem__`);
        /// [`Error::IndexOutOfRange`] if there is none.
        fn remove_at(&self, index: i64) -> Result<()>;
        /// Removes the first item equal to `item`; returns whether there was one
        /// (Python `remove`).
        fn remove(&self, item: &T) -> Result<bool>;
        /// The index of the first item equal to `item`, or `None` (Python `index`).
        fn position(&self, item: &T) -> Result<Option<usize>>;
        /// How many items equal `item` (Python `count`).
        fn count(&self, item: &T) -> Result<usize>;
        /// True if some item equals `item` (Python `item in l`, `__contains__`).
        fn contains(&self, item: &T) -> Result<bool>;
        /// Number of items (Python `len(l)`, `__len__`).
        fn len(&self) -> Result<usize>;
        /// True when the list has no items (Python `len(l) == 0`, `__len__`).
        fn is_empty(&self) -> Result<bool>;
        /// Removes every item (Python `clear`).
        fn clear(&self) -> Result<()>;
        /// Reverses the list in place (Python `reverse`).
        fn reverse(&self) -> Result<()>;
        /// Sorts the list in place, ascending (Python `sort()`).
        fn sort(&self) -> Result<()>;
        /// Sorts the list in place, descending (Python `sort(reverse=True)`).
        fn sort_descending(&self) -> Result<()>;
        /// A copy of every item, in order (Python `l[:]`, `__getitem__`).
        fn to_vec(&self) -> Result<Vec<T>>;
        /// A copy of the items from `start` up to (not including) `stop`, `None`
        /// leaving a bound out (Python `l[start:stop]`, `__getitem__` with a slice).
        fn slice(&self, start: Option<i64>, stop: Option<i64>) -> Result<Vec<T>>;
        /// Repeats the contents in place `times` times (Python `l *= times`,
        /// `__imul__`).
        fn repeat_in_place(&self, times: usize) -> Result<()>;
    }
}

impl<T> List<T>
where
    T: Serialize + DeserializeOwned,
{
    /// Appends every item, in order, atomically (Python `extend`).
    ///
    /// The blocking form of [`List::extend`](crate::List::extend).
    pub fn extend<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.rt.block_on(self.inner.extend(items))
    }
}

blocking_proxy! {
    /// A shared set of `T` (Python `set`), for synchronous code: the blocking form of
    /// [`crate::Set`]. Members follow Python's rules (`1` and `1.0` are one member).
    /// Cheap to clone, `Send + Sync`.
    Set<T> where [T: Serialize + DeserializeOwned] {
        /// Adds `member` (Python `add`).
        fn add(&self, member: &T) -> Result<()>;
        /// True if `member` is in the set (Python `member in s`, `__contains__`).
        fn contains(&self, member: &T) -> Result<bool>;
        /// Removes `member`; returns whether it was there (Python `remove`).
        fn remove(&self, member: &T) -> Result<bool>;
        /// Removes `member` if it is there (Python `discard`).
        fn discard(&self, member: &T) -> Result<()>;
        /// Removes and returns some member, or `None` if the set is empty
        /// (Python `pop`).
        fn pop(&self) -> Result<Option<T>>;
        /// Number of members (Python `len(s)`, `__len__`).
        fn len(&self) -> Result<usize>;
        /// True when the set has no members (Python `len(s) == 0`, `__len__`).
        fn is_empty(&self) -> Result<bool>;
        /// Removes every member (Python `clear`).
        fn clear(&self) -> Result<()>;
        /// A copy of every member, in no particular order (Python `copy`).
        fn to_vec(&self) -> Result<Vec<T>>;
    }
}

/// The blocking form of a [`crate::Set`] method taking items: same name, arguments
/// and result.
macro_rules! blocking_set_with_items {
    ($($(#[$doc:meta])* fn $method:ident -> $ret:ty;)*) => {
        impl<T> Set<T>
        where
            T: Serialize + DeserializeOwned,
        {
            $(
                $(#[$doc])*
                #[doc = ""]
                #[doc = concat!(
                    "The blocking form of [`Set::", stringify!($method), "`](crate::Set::", stringify!($method), ")."
                )]
                pub fn $method<'a, I>(&self, items: I) -> $ret
                where
                    I: IntoIterator<Item = &'a T>,
                    T: 'a,
                {
                    self.rt.block_on(self.inner.$method(items))
                }
            )*
        }
    };
}

blocking_set_with_items! {
    /// Adds every item, atomically (Python `update`).
    fn extend -> Result<()>;
    /// The members together with `items` (Python `union`).
    fn union -> Result<Vec<T>>;
    /// The members also in `items` (Python `intersection`).
    fn intersection -> Result<Vec<T>>;
    /// The members not in `items` (Python `difference`).
    fn difference -> Result<Vec<T>>;
    /// What is in the set or in `items` but not in both (Python
    /// `symmetric_difference`).
    fn symmetric_difference -> Result<Vec<T>>;
    /// Keeps only the members also in `items` (Python `intersection_update`).
    fn intersection_update -> Result<()>;
    /// Removes every member that is in `items` (Python `difference_update`).
    fn difference_update -> Result<()>;
    /// Toggles the membership of every item (Python `symmetric_difference_update`).
    fn symmetric_difference_update -> Result<()>;
    /// True if every member is in `items` (Python `issubset`).
    fn is_subset -> Result<bool>;
    /// True if every item is a member (Python `issuperset`).
    fn is_superset -> Result<bool>;
    /// True if no item is a member (Python `isdisjoint`).
    fn is_disjoint -> Result<bool>;
}

blocking_proxy! {
    /// A single shared value of type `T` (Python `managers.Value`), for synchronous
    /// code: the blocking form of [`crate::Value`]. Cheap to clone, `Send + Sync`.
    Value<T> where [T: Serialize + DeserializeOwned] {
        /// The current value (Python `v.value`, `get`).
        fn get(&self) -> Result<T>;
        /// Replaces the value (Python `v.value = new`, `set`).
        fn set(&self, value: &T) -> Result<()>;
        /// Atomically adds `delta` and returns the new value. agora's own `add`; no
        /// Python equivalent.
        fn add(&self, delta: &T) -> Result<T>;
        /// Atomically replaces the value with `new` if it currently equals `expected`;
        /// returns whether it did. agora's own `compare_and_set`; no Python
        /// equivalent.
        fn compare_and_set(&self, expected: &T, new: &T) -> Result<bool>;
    }
}

blocking_proxy! {
    /// A shared fixed-size array of `T` (Python `array.array`), for synchronous code:
    /// the blocking form of [`crate::Array`]. Cheap to clone, `Send + Sync`.
    Array<T> where [T: ArrayItem] {
        /// Number of items (Python `len(a)`, `__len__`).
        fn len(&self) -> Result<usize>;
        /// True when the array has no items (Python `len(a) == 0`, `__len__`).
        fn is_empty(&self) -> Result<bool>;
        /// The item at `index` (Python `a[index]`, `__getitem__`);
        /// [`Error::IndexOutOfRange`] if there is none.
        fn get(&self, index: i64) -> Result<T>;
        /// Replaces the item at `index` (Python `a[index] = item`, `__setitem__`);
        /// [`Error::IndexOutOfRange`] if there is none.
        fn set(&self, index: i64, item: T) -> Result<()>;
        /// A copy of every item, in order (Python `tolist`).
        fn to_vec(&self) -> Result<Vec<T>>;
    }
}

blocking_proxy! {
    /// A shared namespace of named attributes, each of any type (Python
    /// `manager.Namespace()`), for synchronous code: the blocking form of
    /// [`crate::Namespace`]. Cheap to clone, `Send + Sync`.
    Namespace<> where [] {
        /// Removes the attribute `name`; returns whether it was set
        /// (Python `del ns.name`, `__delattr__`).
        fn remove(&self, name: &str) -> Result<bool>;
    }
}

impl Namespace {
    /// The attribute `name` as a `T`, or `None` if it is not set
    /// (Python `ns.name`, `__getattribute__`).
    ///
    /// The blocking form of [`Namespace::get`](crate::Namespace::get).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.rt.block_on(self.inner.get(name))
    }

    /// Sets the attribute `name` to `value` (Python `ns.name = value`, `__setattr__`).
    ///
    /// The blocking form of [`Namespace::set`](crate::Namespace::set).
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.rt.block_on(self.inner.set(name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + Clone + 'static>() {}

    /// Handles can go to other threads whatever their type parameters are.
    #[test]
    fn handles_are_send_sync_and_clone() {
        shareable::<Manager>();
        shareable::<Dict<String, std::rc::Rc<u8>>>();
        shareable::<List<std::cell::Cell<u8>>>();
        shareable::<Set<std::rc::Rc<u8>>>();
        shareable::<Value<std::rc::Rc<u8>>>();
        shareable::<Array<f64>>();
        shareable::<Namespace>();
    }

    #[test]
    fn the_runtime_starts_and_drops_without_blocking() {
        let rt = Runtime::start().expect("runtime");
        assert_eq!(rt.block_on(async { 1 + 1 }), 2);
        let name = rt.block_on(async {
            tokio::task::spawn(async { std::thread::current().name().map(str::to_owned) }).await.expect("task")
        });
        assert_eq!(name.as_deref(), Some("agora-client"));
        drop(rt);
    }

    #[tokio::test]
    async fn the_runtime_can_be_dropped_inside_async_code() {
        let rt = std::thread::spawn(|| Runtime::start().expect("runtime")).join().expect("thread");
        drop(rt);
    }
}
