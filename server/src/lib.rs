//! # agora-server
//!
//! The agora server as a library (embed it, or run the `agora` binary).
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | binding, accepting, graceful shutdown, shared state |
//! | [`listener`] | TCP/Unix sockets and their options |
//! | [`connection`] | handshake, limits, choosing the dialect |
//! | [`dialect`] | the native (MessagePack) dialect |
//! | [`session`] | a connection's handles and their release |
//! | [`registry`] | the object table and object lifetimes |
//! | [`object`] | the contract every object kind implements, argument binding |
//! | [`objects`] | one module per object kind |
//! | [`config`] | limits, authkey loading |
//! | [`cli`], [`admin`] | the `agora` command line: `serve` and the operator's subcommands |

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connection;
pub mod dialect;
pub mod listener;
pub mod object;
pub mod objects;
pub mod registry;
pub mod server;
pub mod session;
pub mod waiter;

pub use config::{Config, Limits};
pub use server::{Server, ShutdownHandle};
