//! The dialects a connection can speak after the handshake. Each turns its wire
//! messages into calls on the session and registry, and results back into replies;
//! object semantics live in [`crate::objects`], never here.

pub mod native;
pub mod python;
