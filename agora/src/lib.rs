//! # agora
//!
//! The `agora` binary and the embedded manager: the one crate that depends on both the
//! server library (`agora-server`) and the client (`agora-client`). The server depends
//! only on `agora-proto`, the client never on the server; what needs both lives here.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the `agora` command line: argument parsing and `agora serve` |
//! | [`admin`] | the operator's subcommands: `ping`, `stats`, `ls`, `get`, `del`, `shutdown` |
//! | [`bench`](mod@bench) | `agora bench`, the load generator |
//! | [`embedded`] | a server inside a Rust program, and a manager connected to it |
//! | [`allocator`] | the binary's process-wide settings for glibc's allocator |
//!
//! The three crates it builds on are re-exported: [`server`], [`client`], [`proto`].

pub mod admin;
pub mod allocator;
pub mod bench;
pub mod cli;
pub mod embedded;
pub mod runtime;

pub use agora_client as client;
pub use agora_proto as proto;
pub use agora_server as server;
pub use embedded::EmbeddedManager;

/// The README's examples, compiled as doc tests so they cannot rot. Here because they
/// use both the server and the client (the embedded manager, custom kinds).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
