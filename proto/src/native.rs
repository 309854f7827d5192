//! The native dialect: MessagePack requests and replies, each carrying a request id.
//!
//! After the handshake a native client sends one [`Hello`]; the server answers
//! [`Welcome`]. From then on the client sends [`Request`]s and the server sends
//! [`Response`]s with the request's id. Many requests may be in flight on one
//! connection (pipelining); they take effect in the order sent, and a request that
//! blocks (a queue get, a lock acquire) parks without holding up those behind it, so
//! responses may come back out of order.
//!
//! A response with id [`CONNECTION_ERROR_ID`] is not an answer to any request: the
//! server is about to close the connection and says why (an oversized frame, a
//! protocol error, shutdown).
//!
//! Objects are addressed by the [`ObjectId`] that [`Op::Open`] returned. Methods are
//! named by their Python names (`__getitem__`, `append`, …) plus agora's own atomic
//! operations, so one dispatch serves both dialects.

use serde::{Deserialize, Serialize};

use crate::value::CompactString;
use crate::{Value, WireError};

mod call_args;
mod fast;
pub mod spare;
pub mod trailing;

pub use call_args::CallArgs;

/// The native protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The magic string a native [`Hello`] starts with.
pub const MAGIC: &str = "agora";
/// The response id reserved for connection-level errors sent just before a close.
pub const CONNECTION_ERROR_ID: u64 = 0;

/// A server-assigned object id: unique for the life of the server, never reused.
pub type ObjectId = u64;

/// The first message of a native client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// A free-form client name, for logs (`"worker-3"`, the program name…).
    pub client: String,
    /// The session of this client's lost connection, to take back (or end) if a
    /// cluster's leader change detached it; `None` for a new session.
    #[serde(default)]
    pub previous: Option<Previous>,
}

impl Hello {
    /// The Hello of a new session of this protocol version, from client `client`.
    pub fn new(client: impl Into<String>) -> Hello {
        Hello { magic: MAGIC.into(), version: PROTOCOL_VERSION, client: client.into(), previous: None }
    }
}

/// A client's earlier session, named in its [`Hello`] after a lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// Its id ([`Welcome::session`]).
    pub session: u64,
    /// Its [`Welcome::secret`].
    pub secret: u64,
    /// True: resume it, so that its handles, locks, permits and leases are this
    /// connection's. False: end it now and start a new one (the client may have been
    /// granted something it never heard of, which only the session's end gives back).
    pub resume: bool,
}

/// The server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The server's software version.
    pub server: String,
    /// This connection's session id.
    pub session: u64,
    /// The largest frame body the server accepts.
    pub max_frame: u64,
    /// How many requests may be parked (blocked) at once on this connection.
    pub max_in_flight: u32,
    /// The server ends a session that sends nothing for this long (milliseconds); the
    /// client sends [`Op::Ping`] well within it.
    pub heartbeat_timeout_ms: u64,
    /// What resumes this session on a new connection if a cluster's leader changes
    /// ([`Previous`]); 0: the server never resumes sessions (it is not a cluster node).
    #[serde(default)]
    pub secret: u64,
    /// True if this connection took back the session its [`Hello::previous`] named.
    #[serde(default)]
    pub resumed: bool,
}

/// The kind of a shared object: Python's typeid for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Kind {
    /// `dict`
    Dict,
    /// `list`
    List,
    /// `set` (CPython 3.14's `SyncManager.set()`)
    Set,
    /// `Value`
    Value,
    /// `Array`
    Array,
    /// `Namespace`
    Namespace,
    /// `Queue`
    Queue,
    /// `JoinableQueue`
    JoinableQueue,
    /// `Lock`
    Lock,
    /// `RLock`
    RLock,
    /// `Semaphore`
    Semaphore,
    /// `BoundedSemaphore`
    BoundedSemaphore,
    /// `Condition`
    Condition,
    /// `Event`
    Event,
    /// `Barrier`
    Barrier,
    /// Any other typeid (custom types registered by an embedding program).
    Other(String),
}

impl Kind {
    /// Every built-in kind.
    pub const BUILTIN: [Kind; 15] = [
        Kind::Dict,
        Kind::List,
        Kind::Set,
        Kind::Value,
        Kind::Array,
        Kind::Namespace,
        Kind::Queue,
        Kind::JoinableQueue,
        Kind::Lock,
        Kind::RLock,
        Kind::Semaphore,
        Kind::BoundedSemaphore,
        Kind::Condition,
        Kind::Event,
        Kind::Barrier,
    ];

    /// The typeid, as Python's `SyncManager` registers it.
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::Value => "Value",
            Kind::Array => "Array",
            Kind::Namespace => "Namespace",
            Kind::Queue => "Queue",
            Kind::JoinableQueue => "JoinableQueue",
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Semaphore => "Semaphore",
            Kind::BoundedSemaphore => "BoundedSemaphore",
            Kind::Condition => "Condition",
            Kind::Event => "Event",
            Kind::Barrier => "Barrier",
            Kind::Other(name) => name,
        }
    }

    /// The kind for a typeid; also accepts lowercase spellings (`queue`, `lock`) as
    /// operators type them in `--expose`.
    pub fn parse(typeid: &str) -> Kind {
        Kind::BUILTIN
            .into_iter()
            .find(|k| k.as_str() == typeid || k.as_str().eq_ignore_ascii_case(typeid))
            .unwrap_or_else(|| Kind::Other(typeid.to_owned()))
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Kind {
    fn from(s: String) -> Kind {
        Kind::parse(&s)
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> String {
        k.as_str().to_owned()
    }
}

/// A native request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in the response; never [`CONNECTION_ERROR_ID`].
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// Positional and keyword arguments of a constructor or method.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Args {
    /// Positional arguments.
    pub positional: Vec<Value>,
    /// Keyword arguments, by parameter name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<(String, Value)>,
}

impl Args {
    /// Positional arguments only.
    pub fn positional(values: Vec<Value>) -> Args {
        Args { positional: values, keywords: Vec::new() }
    }
}

/// The operations of the native dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Find or create an object and take a handle to it. With a name: get-or-create the
    /// named object (an existing name of another kind is [`crate::ErrorCode::WrongKind`];
    /// `args` are used only when creating). Without: create an anonymous object that
    /// lives while handles to it exist. Replies [`Reply::Opened`].
    Open {
        /// The object's kind.
        kind: Kind,
        /// The name, for a named object.
        name: Option<String>,
        /// Constructor arguments, as Python's constructor for the kind takes them.
        args: Args,
    },
    /// Take another handle on an object this session can already see by id (the
    /// native form of Python's `incref`). Replies [`Reply::Opened`].
    Attach {
        /// The object.
        object: ObjectId,
    },
    /// Call a method. Replies [`Reply::Value`].
    Call {
        /// The object (from [`Reply::Opened`]).
        object: ObjectId,
        /// The method's name (inline: method names are short, and this is the hot path).
        method: CompactString,
        /// Its arguments.
        args: Args,
    },
    /// Give back one handle (the proxy was dropped). Replies [`Reply::Done`].
    Release {
        /// The object.
        object: ObjectId,
    },
    /// Delete a named object: its name is freed, calls through existing handles fail with
    /// [`crate::ErrorCode::NoSuchObject`]. Replies [`Reply::Done`].
    Delete {
        /// The name.
        name: String,
    },
    /// Abandon a parked request of this connection (its client stopped waiting). The
    /// parked request is answered with [`crate::ErrorCode::Timeout`] if it had not
    /// completed; nothing it would have received is lost. Replies [`Reply::Done`].
    Cancel {
        /// The id of the request to abandon.
        request: u64,
    },
    /// A round trip that does nothing; also the heartbeat. Replies [`Reply::Done`].
    Ping,
    /// Server statistics. Replies [`Reply::Stats`].
    Stats,
    /// The named objects. Replies [`Reply::Objects`].
    ListNamed,
    /// A copy of a named object's whole state. Replies [`Reply::Value`].
    Snapshot {
        /// The name.
        name: String,
    },
    /// Begin a graceful shutdown of the server. Replies [`Reply::Done`].
    Shutdown,
    /// Write a snapshot of the whole state now and drop the log it covers (a server
    /// with a data dir). Replies [`Reply::Saved`] once it is on disk.
    SaveSnapshot,
    /// Who holds named objects and who waits for them. With a name, that object
    /// (whatever its kind); without, every named object that keeps per-session state
    /// (locks, semaphores, queues…) or has a waiting call. Replies [`Reply::Holders`].
    Holders {
        /// The object's name, or `None` for all.
        name: Option<String>,
    },
}

/// A native response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id, or [`CONNECTION_ERROR_ID`].
    pub id: u64,
    /// The outcome.
    pub result: Result<Reply, WireError>,
}

/// A successful outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The result of a method call.
    Value(Value),
    /// The object a [`Op::Open`] or [`Op::Attach`] found or created.
    Opened {
        /// Its id.
        object: ObjectId,
        /// Its kind.
        kind: Kind,
        /// True if this request created it.
        created: bool,
    },
    /// Done, nothing to return.
    Done,
    /// Server statistics (boxed, as [`Reply::Saved`]: a reply moves through several
    /// hands on every call, so it stays the size of a value).
    Stats(Box<ServerStats>),
    /// Named objects, sorted by name.
    Objects(Vec<ObjectInfo>),
    /// A snapshot was written.
    Saved(Box<SnapshotInfo>),
    /// Holders and waiters of named objects, sorted by name.
    Holders(Vec<ObjectHolders>),
}

/// Who holds one named object and who waits for it, as `agora get` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectHolders {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its id.
    pub id: ObjectId,
    /// Current holds (lock grants, permits, RLock ownership, queue leases), oldest first.
    pub held: Vec<HolderInfo>,
    /// Parked calls waiting on it, first served first.
    pub waiting: Vec<WaiterInfo>,
}

/// One hold in [`ObjectHolders`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// The holding session.
    pub session: u64,
    /// Its peer address, while its connection is open.
    pub peer: Option<String>,
    /// Since when, in microseconds since the Unix epoch (the server's clock).
    pub since_us: u64,
    /// The grant's fencing token, where there is one.
    pub token: Option<u64>,
    /// What is held, in a few words (`"lock"`, `"owner t1, depth 2"`, `"lease 4, delivery 2"`).
    pub what: String,
}

/// One waiting call in [`ObjectHolders`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaiterInfo {
    /// The waiting session.
    pub session: u64,
    /// Its peer address, while its connection is open.
    pub peer: Option<String>,
    /// Since when it waits, in microseconds since the Unix epoch, if known.
    pub since_us: Option<u64>,
    /// What it waits for (`"acquire"`, `"get"`, `"put"`, `"join"`…).
    pub what: String,
}

/// A snapshot on disk, as `agora snapshot` and `agora stats` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot file.
    pub path: String,
    /// The last log record it covers.
    pub lsn: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long mutating calls were held while the state was copied, in microseconds.
    pub pause_us: u64,
    /// How long writing it took, in milliseconds.
    pub write_ms: u64,
    /// When it was written, in seconds since the Unix epoch.
    pub at_secs: u64,
}

/// The durability of a server's state, as `agora stats` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurabilityStats {
    /// The data directory.
    pub data_dir: String,
    /// The fsync policy: `always`, `everysec` or `no`.
    pub fsync: String,
    /// Bytes of log on disk (every segment).
    pub log_bytes: u64,
    /// Log bytes written since the last snapshot.
    pub log_bytes_since_snapshot: u64,
    /// The last record appended.
    pub appended_lsn: u64,
    /// The last record written to the log file.
    pub written_lsn: u64,
    /// The last record known to be on disk (fsynced).
    pub synced_lsn: u64,
    /// Milliseconds since the last fsync completed.
    pub ms_since_fsync: u64,
    /// The last snapshot, if any.
    pub last_snapshot: Option<SnapshotInfo>,
    /// Why changes are refused right now (the log cannot be written), if they are.
    pub refusing: Option<String>,
}

/// What `agora stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// The server's software version.
    pub version: String,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Connections (sessions) open now.
    pub sessions: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused (limit, failed handshake, bad hello).
    pub connections_refused: u64,
    /// Requests handled since start.
    pub requests_total: u64,
    /// Requests per second over the last few seconds.
    pub requests_per_sec: f64,
    /// Live objects by kind.
    pub objects_by_kind: Vec<(String, u64)>,
    /// Named objects.
    pub named_objects: u64,
    /// Resident memory of the server process, in bytes (0 where unknown).
    pub memory_bytes: u64,
    /// The durability of the state: `None` for an in-memory server.
    #[serde(default)]
    pub durability: Option<Box<DurabilityStats>>,
    /// Objects CPython clients over TCP hold references on: if such a client dies
    /// without giving them back, the server cannot know (over a Unix socket it can,
    /// and does).
    #[serde(default)]
    pub client_objects_untracked: u64,
    /// Memory in use and the memory limit (`None` from a server that does not say).
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    /// Where this node stands in its cluster (`None`: a single server).
    #[serde(default)]
    pub cluster: Option<Box<ClusterStats>>,
    /// CPython client threads' connections served on a thread of their own now
    /// (`--python-threads` is the most there may be).
    #[serde(default)]
    pub python_threads: u64,
}

/// A cluster node's view of its cluster, as `agora stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// This node's id.
    pub node_id: u64,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub role: String,
    /// The current Raft term.
    pub term: u64,
    /// The leader's id, if known.
    pub leader: Option<u64>,
    /// The last log index this node has.
    pub last_log_index: Option<u64>,
    /// The last log index it applied.
    pub last_applied: Option<u64>,
    /// The members, by id.
    pub members: Vec<ClusterMember>,
}

/// One member in [`ClusterStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its id.
    pub id: u64,
    /// Its peer address.
    pub peer: String,
    /// True for a voter, false for a learner still catching up.
    pub voter: bool,
    /// Entries its log is behind the leader's (known on the leader only).
    pub lag: Option<u64>,
}

/// The server's memory against its limit, as `agora stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Bytes the server has allocated and not freed (what the limit applies to).
    pub in_use: u64,
    /// The limit (`--max-memory`), if one is set.
    pub limit: Option<u64>,
    /// Calls refused because they would have grown usage past the limit.
    pub refused: u64,
    /// Bytes of freed memory given back to the operating system since start.
    pub returned: u64,
}

/// One named object, as `agora ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its id.
    pub id: ObjectId,
    /// Its number of items, for kinds that have one.
    pub size: Option<u64>,
}

/// Encodes a message as MessagePack (structs as arrays, the compact form).
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    rmp_serde::encode::write(out, message)
        .map_err(|e| WireError::new(crate::ErrorCode::Internal, format!("cannot encode message: {e}")))
}

/// Decodes a MessagePack message, rejecting malformed input with a protocol error.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| WireError::new(crate::ErrorCode::Protocol, format!("malformed native message: {e}")))
}

/// Encodes a [`Request`]: the bytes [`encode`] writes, faster for a method call
/// (written by hand; everything else goes through serde).
pub fn encode_request(request: &Request, out: &mut Vec<u8>) -> Result<(), WireError> {
    if let Op::Call { object, method, args } = &request.op {
        if fast::encode_call(request.id, *object, method, &args.positional, &args.keywords, out) {
            return Ok(());
        }
    }
    encode(request, out)
}

/// Encodes the [`Request`] `id` of an [`Op::Call`] with positional arguments only, from
/// borrowed parts: the bytes [`encode_request`] writes for that request, without
/// building it (a client encodes its caller's arguments where they are, Rust values
/// without converting them to [`Value`]s first). On an error (an argument that cannot
/// be converted) nothing is appended.
pub fn encode_call<A: CallArgs + ?Sized>(
    id: u64,
    object: ObjectId,
    method: &str,
    args: &A,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    if fast::encode_positional_call_head(id, object, method, args.count(), out) {
        return args.write(out).inspect_err(|_| out.truncate(start));
    }
    let op = Op::Call { object, method: method.into(), args: Args::positional(args.to_values()?) };
    encode(&Request { id, op }, out)
}

/// Appends `args` as [`encode`] writes them (`[positional, keywords?]`, the keywords
/// left out when empty), by hand: a server's log writes every logged call's arguments.
pub fn encode_args(args: &Args, out: &mut Vec<u8>) -> Result<(), WireError> {
    if fast::encode_args(&args.positional, &args.keywords, out) {
        return Ok(());
    }
    encode(args, out)
}

/// Encodes a [`Response`]: the bytes [`encode`] writes, faster for a value reply
/// (written by hand; everything else goes through serde).
pub fn encode_response(response: &Response, out: &mut Vec<u8>) -> Result<(), WireError> {
    match &response.result {
        Ok(Reply::Value(value)) => {
            encode_value_response(response.id, value, out);
            Ok(())
        }
        _ => encode(response, out),
    }
}

/// Appends what [`encode_response`] writes for `Response { id, result:
/// Ok(Reply::Value(value)) }`, for a caller that has the value and no response around
/// it (a server answering a call: every value encodes).
pub fn encode_value_response(id: u64, value: &Value, out: &mut Vec<u8>) {
    fast::encode_value_response(id, value, out);
}

/// Decodes a [`Request`]: what [`decode`] gives, faster for a method call (decoded by
/// hand; everything else goes through serde).
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    fast::call_request(bytes).map_or_else(|| decode(bytes), Ok)
}

/// Decodes a value reply's id and value, with no [`Response`] built around them (a
/// client's reader puts the value straight into its caller's slot). `None` for any
/// other message, and for a value reply in an encoding only serde reads: what
/// [`decode_response`] decodes.
pub fn decode_value_response(bytes: &[u8]) -> Option<(u64, Value)> {
    fast::value_reply(bytes)
}

/// Decodes a [`Response`]: what [`decode`] gives, faster for a value reply (decoded by
/// hand; everything else goes through serde).
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    fast::value_response(bytes).map_or_else(|| decode(bytes), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_python_typeids() {
        for kind in Kind::BUILTIN {
            assert_eq!(Kind::parse(kind.as_str()), kind);
        }
        assert_eq!(Kind::parse("queue"), Kind::Queue);
        assert_eq!(Kind::parse("Counter"), Kind::Other("Counter".into()));
    }

    #[test]
    fn hello_never_looks_like_a_pickle() {
        let mut out = Vec::new();
        encode(&Hello::new("t"), &mut out).unwrap();
        assert_ne!(out[0], 0x80, "a pickle starts with 0x80; the dialect switch relies on this");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let err = decode::<Request>(&[0xc1, 0xff, 0x00]).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::Protocol);
    }
}
