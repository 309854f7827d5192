//! # agora-proto
//!
//! Everything agora puts on the wire, and nothing that opens a socket:
//!
//! - [`address`]: the one address syntax (`host:port`, `unix:/path`, …);
//! - [`frame`]: the length-prefixed frames of Python's `multiprocessing.connection`;
//! - [`auth`]: the mutual HMAC challenge (CPython 3.12+, with the legacy MD5 answer);
//! - [`keyfile`]: where a generated authkey lives, and how key files read;
//! - [`value`]: the dynamic [`Value`] shared by both dialects, with Python's equality,
//!   hashing, ordering and `repr`, and serde conversion from and to any Rust type;
//! - [`reference`](mod@reference): references to managed objects inside values (CPython's nested-proxy form);
//! - [`pickle`]: the Python dialect's pickle codec (decodes and encodes, never executes);
//! - [`slice`](mod@slice): Python slices as they travel in a [`Value`];
//! - [`native`]: the native dialect's requests and replies (MessagePack);
//! - [`methods`]: the methods of every built-in object kind, declared once (names,
//!   parameters, read-only or mutating, exposed to CPython or not);
//! - [`error`]: the error codes both dialects report;
//! - [`utf8`]: the UTF-8 check every received string goes through;
//! - [`io`] (feature `tokio`, on by default): frame and handshake drivers over any
//!   `AsyncRead + AsyncWrite`, shared by the server and the client;
//! - [`flushing`] (feature `tokio`): a stream whose writes are on the wire when they
//!   complete, so code written for sockets is correct over TLS;
//! - [`wake`]: one task's waker, for news kept in state beside it (the server's
//!   mailboxes, the client's writer);
//! - [`reclaim`]: big memory work done off the caller's thread (freeing big values,
//!   making a growing dict's next index ahead);
//! - [`bigalloc`]: the allocator of a big dict index's blocks, mapped and given back a
//!   stretch at a time.
//!
//! The server and the client both depend on this crate; it depends on neither.

pub mod address;
pub mod auth;
pub mod bigalloc;
pub mod error;
#[cfg(feature = "tokio")]
pub mod flushing;
pub mod frame;
pub mod idmap;
#[cfg(feature = "tokio")]
pub mod io;
pub mod keyfile;
pub mod methods;
pub mod native;
pub mod pickle;
pub mod reclaim;
pub mod reference;
pub mod slice;
pub mod utf8;
pub mod value;
pub mod wake;

pub use address::Address;
pub use error::{ErrorCode, WireError};
pub use value::{from_value, to_value, Value};
