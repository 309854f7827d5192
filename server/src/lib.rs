//! # agora-server
//!
//! The agora server as a library (embed it, or run the `agora` binary).
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | binding, accepting, graceful shutdown, shared state |
//! | [`listener`] | TCP/Unix sockets and their options |
//! | [`connection`] | handshake, limits, choosing the dialect |
//! | [`dialect`] | the native (MessagePack) and Python dialects: wire ↔ engine commands |
//! | [`engine`] | the one place where state changes: commands, the object table, sessions |
//! | [`parking`] | waiting calls, the server's one timer, session teardown |
//! | [`object`] | the contract every object kind implements, argument binding |
//! | [`objects`] | one module per object kind |
//! | [`config`] | limits, authkey loading, the config file |
//! | [`cli`], [`admin`] | the `agora` command line: `serve` and the operator's subcommands |
//! | [`embedded`] | a server inside a Rust program, and a manager connected to it |
//! | [`custom`] | the embedding program's own types, served as custom kinds |
//! | [`metrics`] | counters, histograms, and the Prometheus endpoint |

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connection;
pub mod custom;
pub mod dialect;
pub mod embedded;
pub mod engine;
pub mod listener;
pub mod metrics;
pub mod object;
pub mod objects;
pub mod parking;
pub mod server;

pub use agora_client as client;
pub use agora_proto as proto;
pub use config::{Config, Limits};
pub use custom::{CustomKind, CustomObject};
pub use embedded::EmbeddedManager;
pub use server::{Server, ShutdownHandle};

/// The README's examples, compiled as doc tests so they cannot rot. Here rather than in
/// `agora-client` because they use both crates (the embedded manager, custom kinds).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
