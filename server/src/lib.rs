//! # agora-server
//!
//! The agora server as a library. It depends only on `agora-proto`; the `agora` binary
//! (command line, admin subcommands, `agora bench`) and the embedded manager (a server
//! plus a connected client) live in the `agora` crate.
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | binding, accepting, graceful shutdown, shared state |
//! | [`listener`] | TCP/Unix sockets and their options |
//! | [`tls`] | TLS on `tls://` listeners: certificates, client verification, reload |
//! | [`connection`] | handshake, limits, choosing the dialect |
//! | [`dedicated`] | CPython connections' threads of their own |
//! | [`busy_poll`] | such a thread polling for its client's next request before it sleeps |
//! | [`relay`] | a cluster follower's relay of its clients to the leader, and the leader's side of it |
//! | [`access`] | users, their rules, anonymous objects' owners: who may do what |
//! | [`dialect`] | the native (MessagePack) and Python dialects: wire ↔ engine commands |
//! | [`engine`] | the one place where state changes: commands, the object table, sessions |
//! | [`durability`] | the data directory: the command log, snapshots, fsync policy, restore |
//! | [`parking`] | waiting calls, the server's one timer, session teardown |
//! | [`object`] | the contract every object kind implements, argument binding |
//! | [`objects`] | one module per object kind |
//! | [`config`] | limits, authkey loading, the config file |
//! | [`custom`] | the embedding program's own types, served as custom kinds |
//! | [`metrics`] | counters, histograms, and the Prometheus endpoint |
//! | [`memory`] | the process's memory in use, the memory limit's samples, returning freed memory |

pub mod access;
pub mod busy_poll;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod custom;
pub mod dedicated;
pub mod dialect;
pub mod durability;
pub mod engine;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod object;
pub mod objects;
pub mod parking;
pub mod relay;
pub mod server;
pub mod tls;

pub use agora_proto as proto;
pub use config::{Config, Limits};
pub use custom::{CustomKind, CustomObject};
pub use server::{Server, ShutdownHandle};
