//! The commands: every state change the engine can make, as data.
//!
//! A command is what the log records and the replicas apply: it carries everything the
//! change depends on — who asked, what, and `at`, the time on the engine's clock — and
//! nothing else. The dialects build commands from wire requests; the parking layer
//! builds the ones that time and vanished callers cause (`Expire`, `Abandon`, `Tick`,
//! `EndSession`).

use agora_proto::native::{Args, Kind, ObjectId};
use agora_proto::{Value, WireError};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::clock::Time;
use super::waiter::{Delivery, Parked, SessionId, Ticket, Undelivered};

/// How a command names the object it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Through a handle the session opened (the native dialect).
    Handle,
    /// By id alone (the Python dialect: a proxy carries the id).
    Id,
}

/// What a session keeps of an object it opens or creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Keep {
    /// A handle of the session, given back by `Release` or the session's end (native).
    Handle,
    /// A counted reference, given back by `Decref` (Python's `create` and `incref`).
    Reference,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A connection authenticated: a new session ([`Answer::Session`]).
    OpenSession {
        /// When.
        at: Time,
        /// What a client must show to resume the session on a new connection after a
        /// leader change ([`Command::Resume`]); `None`: it cannot be resumed (a stock
        /// CPython client, or a server that resumes nothing). Chosen by the server that
        /// opened it, so that every replica agrees.
        #[serde(default)]
        secret: Option<u64>,
    },
    /// A session ended (closed, crashed, silent, or the server restarted): its handles
    /// are given back and every object it used releases what it held there.
    EndSession {
        /// The session.
        session: SessionId,
        /// When.
        at: Time,
    },
    /// Get-or-create the object `name` of `kind`, or create an anonymous one
    /// (native `Open`, Python `create`, `--expose`): [`Answer::Opened`].
    Open {
        /// The session asking.
        session: SessionId,
        /// The object's kind.
        kind: Kind,
        /// Its name; `None` for an anonymous object.
        name: Option<String>,
        /// Constructor arguments (ignored when the name exists).
        args: Args,
        /// What the session keeps of it.
        keep: Keep,
        /// When.
        at: Time,
    },
    /// Take another handle on an existing object: [`Answer::Opened`].
    Attach {
        /// The session asking.
        session: SessionId,
        /// The object.
        object: ObjectId,
        /// When.
        at: Time,
    },
    /// Give back one handle.
    Release {
        /// The session.
        session: SessionId,
        /// The object.
        object: ObjectId,
        /// When.
        at: Time,
    },
    /// Take a counted reference (Python's `incref`).
    Incref {
        /// The object.
        object: ObjectId,
        /// When.
        at: Time,
    },
    /// Give back a counted reference (Python's `decref`).
    Decref {
        /// The object.
        object: ObjectId,
        /// When.
        at: Time,
    },
    /// Delete a named object: the name is freed, existing handles fail.
    Delete {
        /// The name.
        name: String,
        /// When.
        at: Time,
    },
    /// Call a method: [`Answer::Value`] or [`Answer::Parked`].
    Call {
        /// The calling session.
        session: SessionId,
        /// The object.
        object: ObjectId,
        /// How the session names it.
        access: Access,
        /// The method.
        method: CompactString,
        /// Its arguments.
        args: Args,
        /// When.
        at: Time,
    },
    /// Python's `iter(dict_proxy)`: a new iterator over the dict's keys, with one
    /// counted reference for the caller ([`Answer::Opened`]).
    Iterate {
        /// The calling session.
        session: SessionId,
        /// The dict.
        object: ObjectId,
        /// When.
        at: Time,
    },
    /// The deadline of a parked call passed.
    Expire {
        /// The call's session.
        session: SessionId,
        /// The object it was made on.
        object: ObjectId,
        /// The call.
        ticket: Ticket,
        /// When.
        at: Time,
    },
    /// The caller of a parked call is gone (cancelled, disconnected); what was
    /// delivered to it and never arrived comes back.
    Abandon {
        /// The call's session.
        session: SessionId,
        /// The object it was made on.
        object: ObjectId,
        /// The call.
        ticket: Ticket,
        /// The answer that never reached it, if one was delivered.
        undelivered: Option<Undelivered>,
        /// When.
        at: Time,
    },
    /// A wake-up an object asked for is due (queue lease expiry).
    Tick {
        /// The object.
        object: ObjectId,
        /// When.
        at: Time,
    },
    /// The server restarted from its log: every session of the previous run ends (in
    /// id order, through the same path as a crash), and anonymous objects lose the
    /// references their clients held, so only named objects and what they hold
    /// survive.
    Restart {
        /// When.
        at: Time,
    },
    /// A new cluster leader took over (the replicated counterpart of `Restart`): the
    /// parked calls of every session opened before it (ids below `before`) are
    /// abandoned, since their callers were connected to the old leader; sessions that
    /// can be resumed are *detached* until `until` (they keep their handles, locks,
    /// permits and leases, and a client that shows the secret gets them back with
    /// [`Command::Resume`]); the others end. Unlike `Restart`, the references CPython
    /// clients counted on anonymous objects stay: a client a follower relays lives on
    /// across the change, and its proxies still name those objects.
    Takeover {
        /// When.
        at: Time,
        /// Sessions with smaller ids are the previous leader's.
        before: SessionId,
        /// Detached sessions end at this time unless resumed ([`Command::Lapse`]).
        until: Time,
    },
    /// A client on a new connection takes back a detached session ([`Answer::Session`]),
    /// or fails if the secret is wrong or the session is not detached (it ended, or a
    /// connection still serves it).
    Resume {
        /// The session.
        session: SessionId,
        /// The secret its `OpenSession` carried.
        secret: u64,
        /// When.
        at: Time,
    },
    /// The leader's timer: a session still detached when its time ran out ends (as
    /// `EndSession`); one resumed meanwhile is left alone.
    Lapse {
        /// The session.
        session: SessionId,
        /// When.
        at: Time,
    },
    /// Changes nothing, but is logged: a replicated node's read waits for the commit of
    /// a record appended after it, which proves the node still led the cluster then.
    Barrier {
        /// When.
        at: Time,
    },
}

impl Command {
    /// True if the command is a change a client asked for, which the server may refuse
    /// while it cannot make changes durable (`Call`, `Open`, `Attach`, `Iterate`,
    /// `Delete`, `Incref`). Commands that end, give back or time out (`OpenSession`,
    /// `EndSession`, `Release`, `Decref`, `Expire`, `Abandon`, `Tick`, `Restart`,
    /// `Takeover`, `Resume`, `Lapse`) are never refused: refusing them would strand a lock, a lease or an item, or keep
    /// clients from connecting to read.
    pub fn refusable(&self) -> bool {
        matches!(
            self,
            Command::Call { .. }
                | Command::Open { .. }
                | Command::Attach { .. }
                | Command::Iterate { .. }
                | Command::Delete { .. }
                | Command::Incref { .. }
        )
    }

    /// When the command happens.
    pub fn at(&self) -> Time {
        match self {
            Command::OpenSession { at, .. }
            | Command::EndSession { at, .. }
            | Command::Open { at, .. }
            | Command::Attach { at, .. }
            | Command::Release { at, .. }
            | Command::Incref { at, .. }
            | Command::Decref { at, .. }
            | Command::Delete { at, .. }
            | Command::Call { at, .. }
            | Command::Iterate { at, .. }
            | Command::Expire { at, .. }
            | Command::Abandon { at, .. }
            | Command::Tick { at, .. }
            | Command::Restart { at }
            | Command::Takeover { at, .. }
            | Command::Resume { at, .. }
            | Command::Lapse { at, .. }
            | Command::Barrier { at } => *at,
        }
    }
}

/// A command's answer to whoever sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Done; nothing to say.
    Done,
    /// A method's value.
    Value(Value),
    /// The call waits; its answer comes later as a [`Delivery`].
    Parked(Parked),
    /// An object opened, created or attached.
    Opened {
        /// Its id.
        object: ObjectId,
        /// Its kind.
        kind: Kind,
        /// True if this command created it.
        created: bool,
    },
    /// A new session.
    Session(SessionId),
}

/// Everything applying one command produced.
#[derive(Debug)]
pub struct Effects {
    /// The answer for the command's sender.
    pub reply: Result<Answer, WireError>,
    /// Answers for parked calls (of any session), in the order they were made.
    pub deliveries: Vec<Delivery>,
    /// Wake-ups to arm: a `Tick` of the object at the time.
    pub wakeups: Vec<(ObjectId, Time)>,
    /// False if the command changed nothing and need not be logged (a read-only
    /// method, or a command that failed before touching any state).
    pub mutated: bool,
    /// Where the journal recorded it, with durability on: its answer and deliveries
    /// may go out only once the log has it (see `crate::durability`).
    pub lsn: Option<super::journal::Lsn>,
}

impl Effects {
    pub(super) fn reply(reply: Result<Answer, WireError>) -> Effects {
        Effects { reply, deliveries: Vec::new(), wakeups: Vec::new(), mutated: true, lsn: None }
    }

    /// A reply from a command that changed nothing.
    pub fn unchanged(reply: Result<Answer, WireError>) -> Effects {
        Effects { reply, deliveries: Vec::new(), wakeups: Vec::new(), mutated: false, lsn: None }
    }
}
