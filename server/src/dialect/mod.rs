//! The dialects a connection can speak after the handshake. Each is a translator: wire
//! messages become engine commands ([`crate::engine::Command`]), applied through the
//! parking layer ([`crate::parking`]), and answers become replies. They import the
//! engine and `agora-proto`, never an object module: object semantics live in
//! [`crate::objects`], lifetimes and sessions in the engine.

pub mod native;
pub mod python;

use agora_proto::io::{BufferKeeping, ReadRoom};
use agora_proto::native::{Args, Kind};
use agora_proto::WireError;

use crate::access::{Level, Who};
use crate::engine::{Answer, Command, Keep, Session, Time};
use crate::server::Shared;

/// When a connection's read or write buffer, grown by a big message, is given back: a
/// buffer up to a read's most room is always kept; a larger one once 16 uses in a row
/// filled less than a quarter of it. One big reply must not pin its memory for the life
/// of the connection (10,000 connections that each once read a 1 MiB value would hold
/// 10 GiB), yet big values among small ones must not regrow the buffer every time.
pub(crate) const BUFFER_KEEPING: BufferKeeping = BufferKeeping::new(ReadRoom::MAX, 16);

/// Opens an object for `who` (both dialects' get-or-create and anonymous create),
/// within its access rules: see [`Who::open`] and [`Who::opened`].
pub(crate) fn open(
    shared: &Shared,
    session: &Session,
    who: Who,
    (kind, name, args): (Kind, Option<String>, Args),
    keep: Keep,
    at: Time,
) -> Result<Answer, WireError> {
    who.open(shared, name.as_deref())?;
    // A constructor's references are used, not just kept (`Condition(lock)` acquires
    // its lock): they need write.
    who.references(shared, &args, Level::Write, "build an object on")?;
    let command = Command::Open { session: session.id(), kind, name: name.clone(), args, keep, at };
    let answer = shared.parking.run(session, command)?;
    if let Answer::Opened { object, created, .. } = answer {
        if let Err(e) = who.opened(shared, object, name.as_deref(), created) {
            // A user who may only read found the name when it checked, but it was
            // deleted before the open, which created it afresh: that creation is undone.
            if let Some(name) = name {
                let _ = shared.parking.run(session, Command::Delete { name, at });
            }
            return Err(e);
        }
    }
    Ok(answer)
}
