//! The dialects a connection can speak after the handshake. Each is a translator: wire
//! messages become engine commands ([`crate::engine::Command`]), applied through the
//! parking layer ([`crate::parking`]), and answers become replies. They import the
//! engine and `agora-proto`, never an object module: object semantics live in
//! [`crate::objects`], lifetimes and sessions in the engine.

pub mod native;
pub mod python;
