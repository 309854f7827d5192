//! Server settings: limits, authentication, listen addresses, custom kinds, where the
//! authkey comes from, and the config file.
//!
//! [`Config`] is what a running server needs; the CLI (`cli.rs`) and embedding programs
//! build one. Loading the authkey lives here too, so the rule "never from a plain
//! command-line argument" is enforced in one place — and the config file cannot hold
//! the key either, only the path of a file that does ([`FileConfig`]). Users' keys
//! follow the same rule ([`UserFile`], [`load_users`]); what users may do is
//! [`crate::access`]'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::frame::DEFAULT_MAX_FRAME;
use agora_proto::native::Kind;
use agora_proto::Address;
use serde::Deserialize;

use crate::access::{Level, Rule, User};
use crate::custom::CustomKinds;
use crate::durability::{DurabilityConfig, Fsync};

/// The address `agora serve` listens on when given none.
pub const DEFAULT_LISTEN: &str = agora_proto::address::DEFAULT_ADDRESS;
/// The environment variable holding the authkey itself.
pub const AUTHKEY_ENV: &str = "AGORA_AUTHKEY";
/// The environment variable naming the config file (`--config`).
pub const CONFIG_ENV: &str = "AGORA_CONFIG";

/// Limits that protect the server from any one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted after the handshake.
    pub max_frame: u64,
    /// Most connections served at once; more are refused with a clear error.
    pub max_connections: usize,
    /// Most requests one connection may have parked (blocked) at once.
    pub max_in_flight: u32,
    /// How long a new connection has to finish the handshake and say hello.
    pub handshake_timeout: Duration,
    /// Most connections authenticating at once. Newcomers beyond it wait (accepted, in
    /// order) until a handshake ends, or until the oldest has been under way for
    /// [`PUSH_OUT_AFTER`](crate::connection::PUSH_OUT_AFTER) and is pushed out: a burst
    /// of real clients all get in, and idle unauthenticated sockets cannot lock them
    /// out. They do not count against `max_connections` either.
    pub max_handshakes: usize,
    /// A native session that sends nothing (not even a heartbeat) for this long is
    /// ended and everything it held is released: this is how a half-open connection
    /// (a frozen or unplugged peer) loses its locks.
    pub heartbeat_timeout: Duration,
    /// Most memory the server may have in use (`--max-memory`, Redis's `maxmemory`
    /// with `noeviction`): calls that would store more beyond it are refused with
    /// `MemoryLimit`; reads, deletes and everything that shrinks state still work.
    /// `None` (the default): no limit.
    pub max_memory: Option<u64>,
    /// A TCP connection whose peer stops acknowledging (a host that lost power, a cut
    /// cable, a partition) is dropped after about this long, by the kernel's keepalive
    /// probes and `TCP_USER_TIMEOUT`, so its session ends and what it held is released.
    /// `None`: only the operating system's defaults (hours).
    pub dead_peer_timeout: Option<Duration>,
    /// Most threads of their own for CPython client threads' connections
    /// ([`crate::dedicated`]), serving one or waiting for the next; the rest share the
    /// worker threads. 0: all share them.
    pub python_threads: usize,
    /// Longest a CPython connection's thread of its own polls its socket for the next
    /// request before it sleeps ([`crate::busy_poll`]); zero: it sleeps at once.
    pub python_busy_poll: Duration,
    /// Longest a shared worker polls the socket of a lone native client for its next
    /// request before it goes back to its other connections' sockets
    /// ([`crate::busy_poll`]; at most [`NATIVE_MOST`](crate::busy_poll::NATIVE_MOST));
    /// zero: never. A server run on a runtime that also runs other work holds that
    /// work up as long: set it to zero there.
    pub native_busy_poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            max_in_flight: 1024,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            heartbeat_timeout: Duration::from_secs(10),
            max_memory: None,
            dead_peer_timeout: Some(Duration::from_secs(10)),
            python_threads: 256,
            python_busy_poll: Duration::from_micros(100),
            native_busy_poll: Duration::from_micros(100),
        }
    }
}

/// A CPython typeid served by one named object: `--expose get_tasks=queue:tasks`
/// makes a client that did `BaseManager.register("get_tasks")` get the queue named
/// `tasks` (created on first use), the same one a Rust client reaches with
/// `manager.queue("tasks")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The typeid Python clients register and call.
    pub typeid: String,
    /// The kind of the named object.
    pub kind: Kind,
    /// The object's name.
    pub name: String,
}

impl std::str::FromStr for Exposure {
    type Err = String;

    /// Parses `TYPEID=KIND:NAME` (kind as a typeid, any case: `queue`, `dict`, `Lock`).
    fn from_str(text: &str) -> Result<Exposure, String> {
        let usage = || format!("'{text}' is not TYPEID=KIND:NAME (e.g. get_tasks=queue:tasks)");
        let (typeid, target) = text.split_once('=').ok_or_else(usage)?;
        let (kind, name) = target.split_once(':').ok_or_else(usage)?;
        if typeid.is_empty() || name.is_empty() {
            return Err(usage());
        }
        let kind = Kind::parse(kind);
        if let Kind::Other(other) = &kind {
            let kinds: Vec<&str> = Kind::BUILTIN.iter().map(Kind::as_str).collect();
            return Err(format!(
                "unknown kind '{other}' in '{text}': the kind must be one of {} (any case, e.g. queue)",
                kinds.join(", ")
            ));
        }
        Ok(Exposure { typeid: typeid.to_owned(), kind, name: name.to_owned() })
    }
}

/// Everything a server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (at least one).
    pub listen: Vec<Address>,
    /// The shared secret every connection must prove it knows.
    pub authkey: Vec<u8>,
    /// Refuse the legacy HMAC-MD5 handshake answer (drops CPython ≤ 3.11 clients).
    pub strict_auth: bool,
    /// Resource limits.
    pub limits: Limits,
    /// CPython typeids served by named objects.
    pub expose: Vec<Exposure>,
    /// What to tell CPython clients to dial, per listen address, where that is not
    /// the address they reached (NAT, containers, proxies).
    pub advertise: Vec<Advertise>,
    /// The embedding program's own types, served as custom kinds ([`crate::custom`]).
    pub custom: CustomKinds,
    /// Where the state is kept across restarts; `None`: in memory only.
    pub durability: Option<DurabilityConfig>,
    /// Clients on other hosts may shut the server down (local ones always may).
    pub allow_remote_shutdown: bool,
    /// The permission bits of Unix socket files (`0o660` lets the group connect);
    /// `None`: as the process's umask leaves them.
    pub unix_mode: Option<u32>,
    /// The users, each with its own key and rules ([`crate::access`]). Empty (the
    /// default): every connection proves it knows `authkey` and may do everything;
    /// otherwise only the users' keys are accepted and `authkey` is not used.
    pub users: Vec<User>,
    /// The certificate and key of `tls://` listeners (and the CA their clients'
    /// certificates must chain to, for mutual TLS); required if one is a `tls://`
    /// address, refused if none is.
    pub tls: Option<crate::tls::TlsConfig>,
    /// This server is a node of a replicated cluster ([`crate::cluster`]); its state
    /// lives in the cluster's log, so `durability` must be `None`.
    pub cluster: Option<crate::cluster::ClusterSetup>,
}

impl Config {
    /// A config listening on `listen` with `authkey`, default limits and no custom kinds.
    pub fn new(listen: Vec<Address>, authkey: impl Into<Vec<u8>>) -> Config {
        Config {
            listen,
            authkey: authkey.into(),
            strict_auth: false,
            limits: Limits::default(),
            expose: Vec::new(),
            advertise: Vec::new(),
            custom: CustomKinds::default(),
            durability: None,
            allow_remote_shutdown: false,
            unix_mode: None,
            users: Vec::new(),
            tls: None,
            cluster: None,
        }
    }

    /// The named object serving CPython typeid `typeid`, if one is exposed.
    pub fn exposed(&self, typeid: &str) -> Option<&Exposure> {
        self.expose.iter().find(|e| e.typeid == typeid)
    }
}

/// One member of a cluster as `--cluster` names it: `ID=HOST:PORT`, the node's id and
/// the address of its peer listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's id (not 0).
    pub id: u64,
    /// Its peer address.
    pub peer: String,
}

impl std::str::FromStr for Member {
    type Err = String;
    fn from_str(text: &str) -> Result<Member, String> {
        let bad = || {
            format!(
                "'{text}' is not a cluster member: write ID=HOST:PORT (the node's id and its --peer-listen address)"
            )
        };
        let (id, peer) = text.split_once('=').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        let peer = peer.trim();
        if id == 0 || peer.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
            return Err(bad());
        }
        Ok(Member { id, peer: peer.to_owned() })
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.id, self.peer)
    }
}

/// The address to put in the proxies a listener's CPython clients are sent, instead
/// of the address they reached: `--advertise 0.0.0.0:50000=host.example:50000`. A
/// CPython client rebuilds a proxy it finds inside a value (a list stored in a dict)
/// from that address, so behind NAT, in a container or behind a proxy it must be one
/// the client can dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    /// A listen address, as given to `--listen`.
    pub listen: Address,
    /// What its clients should dial.
    pub advertised: Address,
}

impl std::str::FromStr for Advertise {
    type Err = String;

    /// Parses `LISTEN=ADVERTISED` (two addresses).
    fn from_str(text: &str) -> Result<Advertise, String> {
        let usage = || format!("'{text}' is not LISTEN=ADVERTISED (e.g. 0.0.0.0:50000=host.example:50000)");
        let (listen, advertised) = text.split_once('=').ok_or_else(usage)?;
        let parse = |a: &str| a.trim().parse::<Address>().map_err(|e| format!("'{text}': {e}"));
        Ok(Advertise { listen: parse(listen)?, advertised: parse(advertised)? })
    }
}

impl std::fmt::Display for Advertise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.listen, self.advertised)
    }
}

/// Parses `1024`, `64K`, `64KiB`, `8M`, `1GiB` (K = KiB = 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is not a size like 1024, 64K or 8MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown size unit in '{text}' (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses octal permission bits: `660`, `0660` or `0o660` (at most `777`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!("'{text}' is not a file mode like 0660 (octal, at most 0777)")),
    }
}

/// Parses `5s`, `500ms`, `2m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration like 5s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" | "µs" => n / 1_000_000.0,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown duration unit in '{text}' (use us, ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is not a valid duration"))
}

/// Formats a size the way [`parse_size`] reads it back (`64MiB`, `1000`).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Formats a duration the way [`parse_duration`] reads it back (`5s`, `250ms`, `50us`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else if d.as_nanos() % 1_000 == 0 && d < Duration::from_millis(1) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The settings of a config file (`agora serve --config agora.toml`): one key per
/// `agora serve` flag, spelled like the flag (`max-frame`, `heartbeat-timeout`), every
/// key optional. A flag or its environment variable overrides the file's key; the
/// file overrides the built-in default.
///
/// ```toml
/// listen = ["0.0.0.0:50000", "unix:/run/agora/agora.sock"]
/// authkey-file = "/etc/agora/authkey"   # relative paths: from the config file's folder
/// max-frame = "64MiB"                   # or a number of bytes
/// heartbeat-timeout = "10s"             # or a number of seconds
/// metrics = "127.0.0.1:9464"
/// workers = 2                           # threads serving connections
/// data-dir = "/var/lib/agora"           # keep the state across restarts
/// fsync = "everysec"                    # always | everysec | no
/// tls-cert = "/etc/agora/tls/cert.pem"   # for tls:// listeners, with tls-key
/// tls-key = "/etc/agora/tls/key.pem"
/// tls-client-ca = "/etc/agora/tls/clients-ca.pem"   # mutual TLS
/// ```
///
/// An unknown key is an error that names it (a typo must not silently fall back to a
/// default). The authkey itself is refused: a config file is often world-readable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    /// `listen`: a string or an array of strings.
    pub listen: Option<Vec<Address>>,
    /// `authkey-file`, resolved against the config file's folder.
    pub authkey_file: Option<PathBuf>,
    /// `strict-auth`.
    pub strict_auth: Option<bool>,
    /// `max-frame`: bytes, or a size string.
    pub max_frame: Option<u64>,
    /// `max-connections`.
    pub max_connections: Option<usize>,
    /// `max-in-flight`.
    pub max_in_flight: Option<u32>,
    /// `handshake-timeout`: seconds, or a duration string.
    pub handshake_timeout: Option<Duration>,
    /// `max-handshakes`.
    pub max_handshakes: Option<usize>,
    /// `python-threads`.
    pub python_threads: Option<usize>,
    /// `python-busy-poll`: a duration string, or seconds.
    pub python_busy_poll: Option<Duration>,
    /// `native-busy-poll`: a duration string, or seconds.
    pub native_busy_poll: Option<Duration>,
    /// `heartbeat-timeout`: seconds, or a duration string.
    pub heartbeat_timeout: Option<Duration>,
    /// `expose`: a string or an array of `TYPEID=KIND:NAME` strings.
    pub expose: Option<Vec<Exposure>>,
    /// `advertise`: a string or an array of `LISTEN=ADVERTISED` strings.
    pub advertise: Option<Vec<Advertise>>,
    /// `log-level`.
    pub log_level: Option<String>,
    /// `metrics`: the address of the Prometheus endpoint.
    pub metrics: Option<Address>,
    /// `workers`: threads serving connections.
    pub workers: Option<usize>,
    /// `data-dir`, resolved against the config file's folder.
    pub data_dir: Option<PathBuf>,
    /// `fsync`: `always`, `everysec` or `no`.
    pub fsync: Option<Fsync>,
    /// `snapshot-after`: bytes of log, or a size string.
    pub snapshot_after: Option<u64>,
    /// `allow-remote-shutdown`.
    pub allow_remote_shutdown: Option<bool>,
    /// `max-memory`: bytes, or a size string.
    pub max_memory: Option<u64>,
    /// `unix-mode`: octal permission bits, as a string (`"0660"`) or a TOML octal (`0o660`).
    pub unix_mode: Option<u32>,
    /// `dead-peer-timeout`: seconds, or a duration string; 0 turns it off.
    pub dead_peer_timeout: Option<Duration>,
    /// `[users.NAME]` tables: each user's key file and rules, sorted by name.
    pub users: Option<Vec<UserFile>>,
    /// `tls-cert`, resolved against the config file's folder.
    pub tls_cert: Option<PathBuf>,
    /// `tls-key`, resolved against the config file's folder.
    pub tls_key: Option<PathBuf>,
    /// `tls-client-ca`, resolved against the config file's folder.
    pub tls_client_ca: Option<PathBuf>,
    /// `node-id`: this server is a node of a replicated cluster.
    pub node_id: Option<u64>,
    /// `peer-listen`: where a cluster node listens for its peers.
    pub peer_listen: Option<std::net::SocketAddr>,
    /// `cluster`: a string or an array of `ID=HOST:PORT` members.
    pub cluster: Option<Vec<Member>>,
    /// `cluster-key-file`, resolved against the config file's folder: the key cluster
    /// nodes authenticate each other with (needed beside `[users]`).
    pub cluster_key_file: Option<PathBuf>,
    /// `peer-tls-ca`, resolved against the config file's folder: TLS on the peer link,
    /// checking peers against this CA bundle.
    pub peer_tls_ca: Option<PathBuf>,
    /// `snapshot-after-entries`: a cluster node's Raft log entries between snapshots.
    pub snapshot_after_entries: Option<u64>,
}

/// A user as the config file describes it (`[users.NAME]`): its key is in a file of its
/// own, like the authkey, never in the config file.
///
/// ```toml
/// [users.ingest]
/// key-file = "keys/ingest"                       # relative: from the config file's folder
/// rules = { "jobs.*" = "write", "stats.*" = "read" }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct UserFile {
    /// The user's name.
    pub name: String,
    /// `key-file`, resolved against the config file's folder.
    pub key_file: PathBuf,
    /// `rules`: object-name pattern = `read` | `write` | `admin`.
    pub rules: Vec<Rule>,
}

/// Reads every user's key file ([`read_authkey_file`]'s rules) and makes the users a
/// server runs with. Two users with one key are refused: the key is how a connection
/// is told apart.
pub fn load_users(users: &[UserFile]) -> Result<Vec<User>, String> {
    let mut loaded: Vec<User> = Vec::with_capacity(users.len());
    for user in users {
        let key = read_authkey_file(&user.key_file).map_err(|e| format!("user '{}': {e}", user.name))?;
        if let Some(twin) = loaded.iter().find(|u| u.key == key) {
            return Err(format!(
                "users '{}' and '{}' have the same key: the server tells users apart by their keys, so each \
                 needs a key of its own",
                twin.name, user.name
            ));
        }
        loaded.push(User { name: user.name.clone(), key, rules: user.rules.clone() });
    }
    Ok(loaded)
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong form.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and the key.
        message: String,
    },
}

/// The file's keys as written (see [`FileConfig`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    #[serde(default, deserialize_with = "de::addresses")]
    listen: Option<Vec<Address>>,
    authkey_file: Option<PathBuf>,
    strict_auth: Option<bool>,
    #[serde(default, deserialize_with = "de::size")]
    max_frame: Option<u64>,
    max_connections: Option<usize>,
    max_in_flight: Option<u32>,
    #[serde(default, deserialize_with = "de::duration")]
    handshake_timeout: Option<Duration>,
    max_handshakes: Option<usize>,
    python_threads: Option<usize>,
    #[serde(default, deserialize_with = "de::duration")]
    python_busy_poll: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    native_busy_poll: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    heartbeat_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de::exposures")]
    expose: Option<Vec<Exposure>>,
    #[serde(default, deserialize_with = "de::advertise")]
    advertise: Option<Vec<Advertise>>,
    log_level: Option<String>,
    #[serde(default, deserialize_with = "de::address")]
    metrics: Option<Address>,
    #[serde(default, deserialize_with = "de::workers")]
    workers: Option<usize>,
    data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de::fsync")]
    fsync: Option<Fsync>,
    #[serde(default, deserialize_with = "de::size")]
    snapshot_after: Option<u64>,
    allow_remote_shutdown: Option<bool>,
    #[serde(default, deserialize_with = "de::size")]
    max_memory: Option<u64>,
    #[serde(default, deserialize_with = "de::mode")]
    unix_mode: Option<u32>,
    #[serde(default, deserialize_with = "de::duration")]
    dead_peer_timeout: Option<Duration>,
    users: Option<std::collections::BTreeMap<String, RawUser>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    node_id: Option<u64>,
    peer_listen: Option<std::net::SocketAddr>,
    #[serde(default, deserialize_with = "de::members")]
    cluster: Option<Vec<Member>>,
    cluster_key_file: Option<PathBuf>,
    peer_tls_ca: Option<PathBuf>,
    snapshot_after_entries: Option<u64>,
}

/// A `[users.NAME]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUser {
    key_file: PathBuf,
    #[serde(default)]
    rules: std::collections::BTreeMap<String, String>,
}

/// Checks and resolves the `[users.NAME]` tables.
fn users(raw: std::collections::BTreeMap<String, RawUser>, base: &Path) -> Result<Vec<UserFile>, String> {
    raw.into_iter()
        .map(|(name, user)| {
            if name.trim().is_empty() {
                return Err("users: a user's name must not be empty".to_owned());
            }
            let rules = user
                .rules
                .into_iter()
                .map(|(pattern, level)| {
                    if pattern.is_empty() {
                        return Err(format!(
                            "users.{name}.rules: a pattern must not be empty (\"*\" matches every name)"
                        ));
                    }
                    let level: Level = level.parse().map_err(|e| format!("users.{name}.rules.\"{pattern}\": {e}"))?;
                    Ok(Rule { pattern, level })
                })
                .collect::<Result<_, String>>()?;
            Ok(UserFile { key_file: base.join(user.key_file), name, rules })
        })
        .collect()
}

/// Deserializers for the config file's values that have a text form of their own.
mod de {
    use std::time::Duration;

    use agora_proto::Address;
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;

    use super::Exposure;

    /// A number or a string.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Int(u64),
        Float(f64),
        Text(String),
    }

    /// A string or an array of strings.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    fn texts<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<Vec<String>, D::Error> {
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(s)) => Ok(vec![s]),
            Ok(OneOrMany::Many(v)) => Ok(v),
            Err(_) => Err(D::Error::custom(format!("expected {what} (a string) or an array of them"))),
        }
    }

    pub(super) fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Address>>, D::Error> {
        let texts = texts(d, "an address like \"127.0.0.1:50000\" or \"unix:/run/agora.sock\"")?;
        texts.iter().map(|t| t.parse().map_err(D::Error::custom)).collect::<Result<_, _>>().map(Some)
    }

    pub(super) fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        String::deserialize(d)?.parse().map(Some).map_err(D::Error::custom)
    }

    pub(super) fn exposures<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Exposure>>, D::Error> {
        let texts = texts(d, "TYPEID=KIND:NAME")?;
        texts.iter().map(|t| t.parse().map_err(D::Error::custom)).collect::<Result<_, _>>().map(Some)
    }

    pub(super) fn advertise<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<super::Advertise>>, D::Error> {
        let texts = texts(d, "LISTEN=ADVERTISED")?;
        texts.iter().map(|t| t.parse().map_err(D::Error::custom)).collect::<Result<_, _>>().map(Some)
    }

    pub(super) fn fsync<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::Fsync>, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Some).map_err(D::Error::custom)
    }

    pub(super) fn members<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<super::Member>>, D::Error> {
        let texts = texts(d, "a cluster member like \"1=10.0.0.1:50100\"")?;
        texts.iter().map(|t| t.parse().map_err(D::Error::custom)).collect::<Result<_, _>>().map(Some)
    }

    pub(super) fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        match usize::deserialize(d) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(D::Error::custom("expected a number of threads, at least 1")),
        }
    }

    pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match NumberOrText::deserialize(d) {
            Ok(NumberOrText::Int(n)) => Ok(Some(n)),
            Ok(NumberOrText::Text(t)) => super::parse_size(&t).map(Some).map_err(D::Error::custom),
            _ => Err(D::Error::custom("expected a number of bytes or a size like \"64MiB\"")),
        }
    }

    pub(super) fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match NumberOrText::deserialize(d) {
            Ok(NumberOrText::Int(n)) if n <= 0o777 => Ok(Some(n as u32)),
            Ok(NumberOrText::Text(t)) => super::parse_mode(&t).map(Some).map_err(D::Error::custom),
            _ => Err(D::Error::custom("expected permission bits like \"0660\" (a string) or 0o660")),
        }
    }

    pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let seconds = |s: f64| Duration::try_from_secs_f64(s).map(Some).map_err(|e| D::Error::custom(e.to_string()));
        match NumberOrText::deserialize(d) {
            Ok(NumberOrText::Int(n)) => Ok(Some(Duration::from_secs(n))),
            Ok(NumberOrText::Float(f)) => seconds(f),
            Ok(NumberOrText::Text(t)) => super::parse_duration(&t).map(Some).map_err(D::Error::custom),
            Err(_) => Err(D::Error::custom("expected a number of seconds or a duration like \"5s\" or \"500ms\"")),
        }
    }
}

impl FileConfig {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        FileConfig::parse(&text, base).map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })
    }

    /// Parses a config file's text; relative paths in it are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<FileConfig, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let message = e.to_string().trim_end().to_owned();
            if message.contains("unknown field `authkey`") {
                "the authkey itself does not belong in a config file (which is often world-readable): put it \
                 in a file of its own, readable only by the server, and name that file with authkey-file"
                    .to_owned()
            } else if message.contains("unknown field `key`") {
                "a user's key does not belong in a config file (which is often world-readable): put it in a \
                 file of its own, readable only by the server, and name that file with the user's key-file"
                    .to_owned()
            } else {
                message
            }
        })?;
        Ok(FileConfig {
            listen: raw.listen,
            authkey_file: raw.authkey_file.map(|p| base.join(p)),
            strict_auth: raw.strict_auth,
            max_frame: raw.max_frame,
            max_connections: raw.max_connections,
            max_in_flight: raw.max_in_flight,
            handshake_timeout: raw.handshake_timeout,
            max_handshakes: raw.max_handshakes,
            python_threads: raw.python_threads,
            python_busy_poll: raw.python_busy_poll,
            native_busy_poll: raw.native_busy_poll,
            heartbeat_timeout: raw.heartbeat_timeout,
            expose: raw.expose,
            advertise: raw.advertise,
            log_level: raw.log_level,
            metrics: raw.metrics,
            workers: raw.workers,
            data_dir: raw.data_dir.map(|p| base.join(p)),
            fsync: raw.fsync,
            snapshot_after: raw.snapshot_after,
            allow_remote_shutdown: raw.allow_remote_shutdown,
            max_memory: raw.max_memory,
            unix_mode: raw.unix_mode,
            dead_peer_timeout: raw.dead_peer_timeout,
            users: raw.users.map(|u| users(u, base)).transpose()?,
            tls_cert: raw.tls_cert.map(|p| base.join(p)),
            tls_key: raw.tls_key.map(|p| base.join(p)),
            tls_client_ca: raw.tls_client_ca.map(|p| base.join(p)),
            node_id: raw.node_id,
            peer_listen: raw.peer_listen,
            cluster: raw.cluster,
            cluster_key_file: raw.cluster_key_file.map(|p| base.join(p)),
            peer_tls_ca: raw.peer_tls_ca.map(|p| base.join(p)),
            snapshot_after_entries: raw.snapshot_after_entries,
        })
    }
}

/// Why the authkey could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthkeyError {
    /// The authkey file could not be read.
    #[error("cannot read authkey file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The authkey is empty.
    #[error("the authkey from {0} is empty")]
    Empty(String),
    /// A generated authkey could not be saved.
    #[error("cannot write generated authkey to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Reads an authkey file: its bytes, less one trailing newline (`\n` or `\r\n`), so a
/// key written with `echo` works.
pub fn read_authkey_file(path: &Path) -> Result<Vec<u8>, AuthkeyError> {
    agora_proto::keyfile::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidData => AuthkeyError::Empty(path.display().to_string()),
        _ => AuthkeyError::Read { path: path.to_owned(), source },
    })
}

/// The authkey from the environment variable [`AUTHKEY_ENV`], if set.
pub fn authkey_from_env() -> Result<Option<Vec<u8>>, AuthkeyError> {
    match std::env::var_os(AUTHKEY_ENV) {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(AuthkeyError::Empty(format!("${AUTHKEY_ENV}"))),
        Some(v) => Ok(Some(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())),
    }
}

/// Where a generated authkey is kept: `$XDG_RUNTIME_DIR/agora/authkey`, else
/// `$TMPDIR/agora-$UID/authkey` (clients on this machine look there too).
pub use agora_proto::keyfile::default_path as default_authkey_path;

/// Whether [`generated_authkey`] made a new key or found one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The file did not exist: a new random key was written to it.
    Generated,
    /// An earlier server (or this one, before a restart) wrote it: reused, so the keys
    /// clients already read stay valid and two servers never overwrite each other's.
    Reused,
}

/// The zero-config authkey at `path`: the key already there, or a new random one (64
/// hex characters, so it can be typed and pasted) written with mode 0600 in a
/// directory created with mode 0700. A key file another user could read, a directory
/// another user could write, or either owned by another user, is refused — never used
/// or replaced.
pub fn generated_authkey(path: &Path) -> Result<(Vec<u8>, KeyOrigin), AuthkeyError> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    let write_err = |source| AuthkeyError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
        // Others may list the directory, never replace what is in it.
        check_private(dir, 0o022).map_err(write_err)?;
    }
    loop {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                check_private(path, 0o077).map_err(|source| AuthkeyError::Read { path: path.to_owned(), source })?;
                return Ok((read_authkey_file(path)?, KeyOrigin::Reused));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(AuthkeyError::Read { path: path.to_owned(), source }),
        }
        let key = rand::random::<[u8; 32]>().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        // Written whole under a private name, then linked into place: a reader never
        // sees half a key, and of two servers starting at once exactly one key wins.
        let staging = path.with_extension(format!("{}-{:08x}.tmp", std::process::id(), rand::random::<u32>()));
        let _ = std::fs::remove_file(&staging);
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging).map_err(write_err)?;
        let written = writeln!(file, "{key}").and_then(|()| file.sync_all());
        let linked = written.and_then(|()| std::fs::hard_link(&staging, path));
        let _ = std::fs::remove_file(&staging);
        match linked {
            Ok(()) => return Ok((key.into_bytes(), KeyOrigin::Generated)),
            // Another server got there first: use its key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(write_err(e)),
        }
    }
}

/// Fails unless `path` belongs to this user and has none of the `forbidden` mode bits.
fn check_private(path: &Path, forbidden: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let denied = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    if meta.uid() != agora_proto::keyfile::current_uid() {
        return Err(denied(format!(
            "{} belongs to another user (uid {}); refusing to use it",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & forbidden != 0 {
        return Err(denied(format!(
            "{} is open to other users (mode {:o}); make it private (chmod go-rwx) or delete it",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn config_file_keys_are_the_flag_names() {
        let text = r#"
            listen = ["127.0.0.1:7000", "unix:/run/a.sock"]
            authkey-file = "keys/authkey"
            strict-auth = true
            max-frame = "1MiB"
            max-connections = 10
            max-in-flight = 5
            handshake-timeout = 2
            heartbeat-timeout = "1.5s"
            expose = "get_tasks=queue:tasks"
            log-level = "debug"
            metrics = "127.0.0.1:9464"
            tls-cert = "tls/cert.pem"
            tls-key = "/secret/key.pem"
            tls-client-ca = "tls/ca.pem"
        "#;
        let file = FileConfig::parse(text, Path::new("/etc/agora")).unwrap();
        assert_eq!(file.listen.unwrap().len(), 2);
        assert_eq!(file.authkey_file.unwrap(), Path::new("/etc/agora/keys/authkey"));
        assert_eq!(file.strict_auth, Some(true));
        assert_eq!(file.max_frame, Some(1 << 20));
        assert_eq!((file.max_connections, file.max_in_flight), (Some(10), Some(5)));
        assert_eq!(file.handshake_timeout, Some(Duration::from_secs(2)));
        assert_eq!(file.heartbeat_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(file.expose.unwrap()[0].name, "tasks");
        assert_eq!(file.log_level.as_deref(), Some("debug"));
        assert_eq!(file.metrics.unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(file.tls_cert.unwrap(), Path::new("/etc/agora/tls/cert.pem"));
        assert_eq!(file.tls_key.unwrap(), Path::new("/secret/key.pem"));
        assert_eq!(file.tls_client_ca.unwrap(), Path::new("/etc/agora/tls/ca.pem"));
        assert_eq!(FileConfig::parse("", Path::new(".")).unwrap(), FileConfig::default());
        assert_eq!(FileConfig::parse("listen = \"h:1\"", Path::new(".")).unwrap().listen.unwrap().len(), 1);
    }

    #[test]
    fn config_file_errors_name_the_key() {
        let err = |text: &str| FileConfig::parse(text, Path::new(".")).unwrap_err();
        let unknown = err("listen = \"h:1\"\ncolour = \"blue\"");
        assert!(unknown.contains("unknown field `colour`") && unknown.contains("line 2"), "{unknown}");
        let bad_size = err("max-frame = \"12 parsecs\"");
        assert!(bad_size.contains("max-frame") && bad_size.contains("unknown size unit"), "{bad_size}");
        let bad_address = err("listen = [\"nonsense\"]");
        assert!(bad_address.contains("missing port"), "{bad_address}");
        let wrong_type = err("max-connections = \"many\"");
        assert!(wrong_type.contains("max-connections"), "{wrong_type}");
        assert!(err("authkey = \"s3cret\"").contains("authkey-file"));
    }

    #[test]
    fn users_have_key_files_and_rules() {
        let text = r#"
            [users.ingest]
            key-file = "keys/ingest"
            rules = { "jobs.*" = "write", "*" = "read" }
            [users.ops]
            key-file = "/etc/agora/ops"
            rules = { "*" = "admin" }
        "#;
        let users = FileConfig::parse(text, Path::new("/etc/agora")).unwrap().users.unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name, "ingest");
        assert_eq!(users[0].key_file, Path::new("/etc/agora/keys/ingest"));
        assert!(users[0].rules.contains(&Rule { pattern: "jobs.*".into(), level: Level::Write }));
        assert_eq!(users[1].rules, vec![Rule { pattern: "*".into(), level: Level::Admin }]);
        let err = |text: &str| FileConfig::parse(text, Path::new(".")).unwrap_err();
        let inline = err("[users.a]\nkey = \"s3cret\"");
        assert!(inline.contains("key-file") && !inline.contains("s3cret"), "{inline}");
        let level = err("[users.a]\nkey-file = \"k\"\nrules = { \"x\" = \"owner\" }");
        assert!(level.contains("users.a.rules") && level.contains("read, write or admin"), "{level}");
        assert!(err("[users.a]\nrules = {}").contains("key-file"));
        assert!(err("[users.a]\nkey-file = \"k\"\nrules = { \"\" = \"read\" }").contains("must not be empty"));
    }

    #[test]
    fn users_keys_are_read_and_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "alpha\n").unwrap();
        std::fs::write(dir.path().join("b"), "alpha").unwrap();
        let user =
            |name: &str, file: &str| UserFile { name: name.into(), key_file: dir.path().join(file), rules: vec![] };
        let loaded = load_users(&[user("a", "a")]).unwrap();
        assert_eq!(loaded[0].key, b"alpha");
        let twins = load_users(&[user("a", "a"), user("b", "b")]).unwrap_err();
        assert!(twins.contains("'a' and 'b' have the same key"), "{twins}");
        let missing = load_users(&[user("c", "nope")]).unwrap_err();
        assert!(missing.contains("user 'c'") && missing.contains("nope"), "{missing}");
    }

    #[test]
    fn sizes_and_durations_format_back() {
        for size in [64 << 20, 1024, 1000, 3 << 30] {
            assert_eq!(parse_size(&format_size(size)), Ok(size));
        }
        for d in
            [Duration::from_secs(5), Duration::from_millis(250), Duration::from_micros(1500), Duration::from_micros(50)]
        {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_micros(50)), "50us");
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn exposures_parse_or_say_why() {
        let e: Exposure = "get_tasks=queue:tasks".parse().unwrap();
        assert_eq!(e, Exposure { typeid: "get_tasks".into(), kind: Kind::Queue, name: "tasks".into() });
        assert!("nonsense".parse::<Exposure>().unwrap_err().contains("TYPEID=KIND:NAME"));
        let teapot = "a=teapot:x".parse::<Exposure>().unwrap_err();
        assert!(teapot.contains("unknown kind 'teapot'"), "{teapot}");
        for kind in Kind::BUILTIN {
            assert!(teapot.contains(kind.as_str()), "{teapot} does not list {kind}");
        }
        assert!("a=queue:".parse::<Exposure>().is_err());
    }

    #[test]
    fn authkey_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "secret\r\n").unwrap();
        assert_eq!(read_authkey_file(&path).unwrap(), b"secret");
        std::fs::write(&path, "a\n\n").unwrap();
        assert_eq!(read_authkey_file(&path).unwrap(), b"a\n");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read_authkey_file(&path), Err(AuthkeyError::Empty(_))));
        assert!(matches!(read_authkey_file(&dir.path().join("missing")), Err(AuthkeyError::Read { .. })));
    }

    #[test]
    fn generated_authkey_is_private_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/authkey");
        let (key, origin) = generated_authkey(&path).unwrap();
        assert_eq!((key.len(), origin), (64, KeyOrigin::Generated));
        assert_eq!(read_authkey_file(&path).unwrap(), key);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(generated_authkey(&path).unwrap(), (key, KeyOrigin::Reused), "a restart keeps the key");
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no staging file is left behind");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/authkey");
        let (key, _) = generated_authkey(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = generated_authkey(&path).unwrap_err().to_string();
        assert!(err.contains("open to other users") && err.contains("644"), "{err}");
        assert_eq!(read_authkey_file(&path).unwrap(), key, "left as it was");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(path.parent().unwrap(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = generated_authkey(&path).unwrap_err().to_string();
        assert!(err.contains("open to other users"), "a directory others can write is refused too: {err}");
    }

    #[test]
    fn servers_starting_at_once_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authkey");
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8).map(|_| s.spawn(|| generated_authkey(&path).unwrap().0)).collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "every server uses the one key");
    }
}
