//! # agora-client
//!
//! The Rust client for agora, a shared-state server: shared dicts, lists, sets, values,
//! arrays, namespaces, queues, locks, semaphores, conditions, events and barriers,
//! reached through typed proxies over one
//! multiplexed TCP, TLS or Unix-socket connection (`tls://host:port` with a
//! [`ClientTls`] in [`ManagerOptions::tls`]).
//!
//! ```no_run
//! # async fn demo() -> agora_client::Result<()> {
//! use agora_client::Manager;
//!
//! let manager = Manager::connect("127.0.0.1:50000", b"secret").await?;
//! let scores = manager.dict::<String, u64>("scores").await?;
//! scores.insert(&"alice".to_string(), &3).await?;
//! let total = scores.increment(&"alice".to_string(), &1).await?; // atomic, server side
//! assert_eq!(total, 4);
//! # Ok(()) }
//! ```
//!
//! Async first (Tokio); [`blocking`] has the same API for threads. The dynamic value
//! model the server stores is [`proto::Value`].
//!
//! # Riding through a server restart
//!
//! A [`Manager`] that loses its connection — the socket breaks, or the server says
//! it is shutting down, as a restart does — connects again by itself, to the same
//! address with the same authkey, retrying with exponential backoff and jitter. A call
//! made while the server is down waits for that (up to the reconnect deadline, 30 s
//! unless set with [`ManagerOptions`] and [`Manager::connect_with`]) and then runs on
//! the new connection; once the deadline has passed, calls fail with
//! [`Error::Unreachable`], which says for how long and why. A server that refuses the
//! authkey on reconnecting ends the attempts at once ([`Error::AuthenticationFailed`]).
//! A session the server *expired* (this process sent no heartbeat for longer than the
//! server's timeout: it was frozen or suspended) is not resumed: calls keep failing
//! with [`Error::SessionExpired`], so that a process that was acting under a lock
//! learns it lost it.
//!
//! ## Several addresses: a cluster
//!
//! [`Manager::connect_any`] takes the addresses of several nodes of one cluster (any
//! node accepts clients), and `AGORA_ADDRESS` may hold several, comma separated, for
//! [`Manager::from_env`]. The manager connects to the first that works; when the node
//! it is connected to dies, each reconnect attempt tries the addresses in turn,
//! starting with the one after the node it lost, within the same deadline and
//! backoff. [`Manager::current_address`] says which node it is connected to. What is
//! said below of a restart holds for moving to another node: the new node's session
//! is a new session.
//!
//! ## What survives a server restart
//!
//! - **Calls in flight** when the connection was lost fail with
//!   [`Error::ConnectionLost`]: they may or may not have taken effect, and they are
//!   never sent again (a repeated `Value::add` would count twice). Retry them yourself
//!   where that is safe. Calls that *wait* are the exception (below).
//! - **Proxies** keep working if the server still has their object: after
//!   reconnecting, the manager attaches again, by id, every object it holds proxies
//!   for. A server that keeps its state across restarts (a data directory) keeps
//!   named objects and what they hold; an in-memory server keeps nothing. The
//!   proxies of an object the server no longer has fail with [`Error::NoSuchObject`],
//!   naming the object and saying it did not survive the restart; open it again (a
//!   named object by its name: `manager.dict("scores")` finds or creates it on the
//!   server as it is now). Other proxies are not affected.
//! - **Lock guards and queue leases do not survive**: they belong to the session that
//!   obtained them, and the server releases what a session held when it ends (an item
//!   on lease goes back to the head of its queue). A [`Guard`] or [`Leased`] of an
//!   earlier connection reports `is_valid() == false`; releasing, acking or nacking it
//!   fails with [`Error::SessionExpired`] and sends nothing (the new session does not
//!   own the grant, and releasing by its token could release someone else's); dropping
//!   it sends nothing. Acquire again on the new connection.
//! - **Fencing tokens** grow for the life of the server's state: a server without a
//!   data directory starts them over after a restart, so a resource that remembers the
//!   newest token it saw must be told (or keep it per server run).
//! - **Calls that wait are made again** on the new connection, with whatever time
//!   their timeout has left: a blocking or timed `acquire` (Lock, RLock, Semaphore,
//!   Condition), a blocking or timed `get` or `get_leased` of a queue, an Event's
//!   `wait`, a JoinableQueue's `join`. Whatever the lost session was granted and
//!   never heard of (a lock, a permit, a leased item) the server gave back when that
//!   session ended, so waiting again loses nothing and holds nothing twice; a plain
//!   `get` whose item was already on its way when the connection broke is the one
//!   hand-off that cannot be recovered, as with any call in flight. A Barrier's or a
//!   Condition's `wait` is not made again (the party, or the lock the wait gave up,
//!   belonged to the old session): it fails with [`Error::ConnectionLost`].
//! - Heartbeats continue on the new connection, and [`Manager::session_id`] is the new
//!   session's.
//!
//! `ManagerOptions::new().reconnect(false)` keeps a manager on its first connection:
//! once it is lost, every call fails with the reason.
//!
//! # Big values
//! A value of any size up to the server's `--max-frame` (64 MiB by default) is one
//! call. Each reply is a fresh allocation the caller owns. With glibc's allocator, a
//! program that receives many values of a MiB or more may spend half its CPU faulting
//! pages in: glibc gives freed blocks that big back to the system at once, so the next
//! reply's memory is new to the process again. A process-wide setting cures it, which
//! a library must not make for its program: set `M_MMAP_THRESHOLD` and
//! `M_TRIM_THRESHOLD` with `mallopt` (or `MALLOC_MMAP_THRESHOLD_` and
//! `MALLOC_TRIM_THRESHOLD_` in the environment), or use an allocator that keeps freed
//! memory (jemalloc, mimalloc). `agora bench` sets the first two for itself.

mod connection;
mod env;
mod error;
mod link;
mod manager;
mod proxy;
mod tls;

pub mod blocking;

pub use agora_proto as proto;
pub use agora_proto::Address;
pub use env::{
    ADDRESS_ENV, AUTHKEY_ENV, AUTHKEY_FILE_ENV, TLS_CA_ENV, TLS_CLIENT_CERT_ENV, TLS_CLIENT_KEY_ENV,
    TLS_SERVER_NAME_ENV,
};
pub use error::{Error, Result};
pub use manager::{Manager, ManagerOptions};
pub use proxy::array::{Array, ArrayItem};
pub use proxy::barrier::Barrier;
pub use proxy::condition::{Condition, ConditionLock};
pub use proxy::dict::Dict;
pub use proxy::event::Event;
pub use proxy::list::List;
pub use proxy::lock::{Guard, Lock};
pub use proxy::namespace::Namespace;
pub use proxy::object::Object;
pub use proxy::queue::{Items, JoinableQueue, Leased, Queue, QueueOptions};
pub use proxy::rlock::RLock;
pub use proxy::semaphore::Semaphore;
pub use proxy::set::Set;
pub use proxy::value::Value;
pub use tls::ClientTls;
