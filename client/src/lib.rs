//! # agora-client
//!
//! The Rust client for agora, a shared-state server: shared dicts, lists, values,
//! arrays, namespaces, queues, locks, semaphores, conditions, events and barriers,
//! reached through typed proxies over one
//! multiplexed TCP or Unix-socket connection.
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

mod connection;
mod env;
mod error;
mod manager;
mod proxy;

pub mod blocking;

pub use agora_proto as proto;
pub use agora_proto::Address;
pub use env::{ADDRESS_ENV, AUTHKEY_ENV, AUTHKEY_FILE_ENV};
pub use error::{Error, Result};
pub use manager::Manager;
pub use proxy::array::{Array, ArrayItem};
pub use proxy::barrier::Barrier;
pub use proxy::condition::{Condition, ConditionLock};
pub use proxy::dict::Dict;
pub use proxy::event::Event;
pub use proxy::list::List;
pub use proxy::lock::{Guard, Lock};
pub use proxy::namespace::Namespace;
pub use proxy::object::Object;
pub use proxy::queue::{Items, JoinableQueue, Leased, Queue};
pub use proxy::rlock::RLock;
pub use proxy::semaphore::Semaphore;
pub use proxy::value::Value;
