//! The `agora` command line: argument parsing and the `serve` subcommand.
//!
//! Every `serve` flag also has an environment-variable form and a key of the same name
//! in the config file (`--config agora.toml`); `--help` shows each. Precedence, the
//! conventional one: a flag beats its environment variable, which beats the config
//! file, which beats the built-in default. The authkey is deliberately *not* a flag
//! (a flag's value shows in `ps`) nor a config key (config files are often
//! world-readable): it comes from a file or the environment.

use std::path::PathBuf;
use std::time::Duration;

use agora_proto::Address;
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use agora_server::busy_poll::NATIVE_MOST;
use agora_server::config::{self, Advertise, Config, Exposure, FileConfig, KeyOrigin, Limits, UserFile, AUTHKEY_ENV};
use agora_server::durability::{DurabilityConfig, Fsync};
use agora_server::memory::MIN_LIMIT as MIN_MEMORY_LIMIT;
use agora_server::server::Server;
use agora_server::tls::TlsConfig;

pub use agora_server::config::{parse_duration, parse_size};

/// agora: a shared-state server for Rust and unmodified CPython multiprocessing clients.
#[derive(Debug, Parser)]
#[command(
    name = "agora",
    version = concat!(env!("CARGO_PKG_VERSION"), env!("AGORA_BUILD")),
    about = "agora: a shared-state server (dicts, lists, queues, locks…) for Rust programs and unmodified \
             CPython multiprocessing clients",
    long_about = None,
    after_help = "\
GETTING STARTED:
  agora serve                 run a server on 127.0.0.1:50000; with no key configured it
                              generates one (and keeps it) in $XDG_RUNTIME_DIR/agora/authkey
  agora stats                 check it (admin commands find that key by themselves)
  agora serve --help          every setting: listeners, limits, --data-dir, metrics…"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (listens on 127.0.0.1:50000 by default).
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(Box<ServeArgs>),
    /// Check that a server answers, and how fast.
    Ping(ClientArgs),
    /// Show sessions, objects by kind, memory and requests per second.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List named objects with their kind and size.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a named object's value (as Python's repr).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The object's name.
        name: String,
    },
    /// Delete a named object.
    Del {
        #[command(flatten)]
        client: ClientArgs,
        /// The object's name.
        name: String,
    },
    /// Ask a server to shut down gracefully.
    Shutdown(ClientArgs),
    /// Ask a server with a data dir to write a snapshot now (and drop the log it covers).
    Snapshot(ClientArgs),
    /// Verify a stopped server's data dir offline: the newest snapshot and every log
    /// record are read and replayed.
    #[command(after_help = "\
A torn last record (a crash mid-write) is reported and cut, as the server does on start.
Damage anywhere else is reported with the file and byte offset, and the exit status is 1;
--truncate then cuts the log at the first bad record (dropping every record after it), so
the server can start from what is intact.")]
    Check {
        /// The data directory (as given to `agora serve --data-dir`).
        #[arg(long, value_name = "DIR", env = "AGORA_DATA_DIR")]
        data_dir: PathBuf,
        /// Cut the log at the first bad record instead of failing.
        #[arg(long)]
        truncate: bool,
    },
    /// Load-test a server (like redis-benchmark): throughput and latency percentiles.
    Bench(crate::bench::BenchArgs),
    /// Operate a replicated cluster through its nodes' peer listeners: status, init,
    /// add, remove.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `agora cluster …`.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
These speak to a node's peer listener (its --peer-listen address) with the cluster's
authkey, so they work whichever node leads, and on a node that is not in a cluster yet.")]
pub enum ClusterCommand {
    /// Show every member: role, term, log index, applied index, lag behind the leader.
    Status(ClusterArgs),
    /// Form a new cluster of these members (ID=HOST:PORT, each node's id and peer
    /// address); the nodes must be running with empty logs. The same as starting them
    /// all with the same --cluster list.
    Init {
        #[command(flatten)]
        args: ClusterArgs,
        /// The members.
        #[arg(required = true, value_name = "ID=PEER")]
        members: Vec<config::Member>,
    },
    /// Add a running node (ID=HOST:PORT) to the cluster: it catches up as a learner,
    /// then becomes a voter.
    Add {
        #[command(flatten)]
        args: ClusterArgs,
        /// The new member.
        #[arg(value_name = "ID=PEER")]
        member: config::Member,
    },
    /// Remove a node from the cluster.
    Remove {
        #[command(flatten)]
        args: ClusterArgs,
        /// The node's id.
        #[arg(value_name = "ID")]
        node_id: u64,
    },
}

/// How `agora cluster` reaches a node.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A node's peer address (its --peer-listen).
    #[arg(long, value_name = "HOST:PORT", env = "AGORA_PEER")]
    pub peer: String,

    /// Read the key the nodes authenticate each other with from this file (their
    /// --cluster-key-file). [default: the authkey]
    #[arg(long, value_name = "PATH", env = CLUSTER_KEY_FILE_ENV)]
    pub cluster_key_file: Option<PathBuf>,

    /// Read the cluster's authkey from this file (for nodes without a cluster key of
    /// their own).
    #[arg(long, value_name = "PATH", env = agora_client::AUTHKEY_FILE_ENV)]
    pub authkey_file: Option<PathBuf>,

    /// The nodes' peer link uses TLS (their --peer-tls-ca): check the node's
    /// certificate against the CAs in this PEM bundle. [default: plain TCP, or the
    /// config file's peer-tls-ca]
    #[arg(long, value_name = "PATH", env = PEER_TLS_CA_ENV)]
    pub peer_tls_ca: Option<PathBuf>,

    /// Find the key's file (and peer-tls-ca) in this `agora serve` config file.
    #[arg(long, value_name = "PATH", env = config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
}

/// The environment variable naming the peers' TLS CA bundle.
pub const PEER_TLS_CA_ENV: &str = "AGORA_PEER_TLS_CA";

impl ClusterArgs {
    /// How to reach the nodes' peer listeners: [`ClusterArgs::key`], inside TLS with
    /// --peer-tls-ca (or the config file's).
    pub fn auth(&self) -> Result<agora_server::cluster::network::PeerAuth, String> {
        let key = self.key()?;
        let file_ca = match (&self.peer_tls_ca, &self.config) {
            (None, Some(path)) => FileConfig::load(path).map_err(|e| e.to_string())?.peer_tls_ca,
            _ => None,
        };
        let tls = match self.peer_tls_ca.as_ref().or(file_ca.as_ref()) {
            Some(ca) => Some(agora_server::tls::PeerTls::client(ca).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(agora_server::cluster::network::PeerAuth::new(key, tls))
    }

    /// The key the nodes authenticate each other with: --cluster-key-file, else the
    /// config file's cluster-key-file, else the authkey (--authkey-file,
    /// $AGORA_AUTHKEY, the config file's).
    pub fn key(&self) -> Result<Vec<u8>, String> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        if let Some(path) = self.cluster_key_file.as_ref().or(file.cluster_key_file.as_ref()) {
            return config::read_authkey_file(path).map_err(|e| format!("the cluster key: {e}"));
        }
        explicit_authkey(self.authkey_file.as_ref(), &file)?.ok_or_else(|| {
            format!("no key: pass the cluster's --cluster-key-file or --authkey-file, or set ${AUTHKEY_ENV}")
        })
    }
}

/// The authkey from a flag, else the environment, else a config file's authkey-file.
fn explicit_authkey(flag: Option<&PathBuf>, file: &FileConfig) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = flag {
        return config::read_authkey_file(path).map(Some).map_err(|e| e.to_string());
    }
    if let Some(key) = config::authkey_from_env().map_err(|e| e.to_string())? {
        return Ok(Some(key));
    }
    match &file.authkey_file {
        Some(path) => config::read_authkey_file(path).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// How the admin subcommands reach a server.
#[derive(Debug, Args)]
#[command(after_help = "\
The authkey comes from --authkey-file, else $AGORA_AUTHKEY, else the authkey-file of the
--config file, else the file a zero-config `agora serve` generated. With --config, the
server's first listen address from the file replaces the default address. A tls://
address needs --tls-ca (and --tls-client-cert/--tls-client-key for mutual TLS).")]
pub struct ClientArgs {
    /// The server's address.
    #[arg(long, short = 'a', value_name = "ADDR", env = agora_client::ADDRESS_ENV, default_value = config::DEFAULT_LISTEN)]
    pub address: Address,

    /// Read the authkey from this file (one trailing newline is ignored).
    #[arg(long, value_name = "PATH", env = agora_client::AUTHKEY_FILE_ENV)]
    pub authkey_file: Option<PathBuf>,

    /// Find the server's address and authkey file in this `agora serve` config file.
    #[arg(long, value_name = "PATH", env = config::CONFIG_ENV)]
    pub config: Option<PathBuf>,

    /// For a tls:// address: the CA bundle (PEM) that verifies the server's certificate.
    #[arg(long, value_name = "PATH", env = agora_client::TLS_CA_ENV)]
    pub tls_ca: Option<PathBuf>,

    /// For a server that requires client certificates (mutual TLS): this client's
    /// certificate chain (PEM). Needs --tls-client-key.
    #[arg(long, value_name = "PATH", env = agora_client::TLS_CLIENT_CERT_ENV, requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-client-cert.
    #[arg(long, value_name = "PATH", env = agora_client::TLS_CLIENT_KEY_ENV, requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientArgs {
    /// How to connect: over TLS with the given CA bundle (and client certificate), if
    /// one was given.
    pub fn manager_options(&self) -> Result<agora_client::ManagerOptions, String> {
        let options = agora_client::ManagerOptions::new();
        let Some(ca) = &self.tls_ca else {
            if self.tls_client_cert.is_some() {
                return Err("--tls-client-cert needs --tls-ca (the CA bundle that verifies the server)".into());
            }
            return Ok(options);
        };
        let mut tls = agora_client::ClientTls::from_ca_file(ca).map_err(|e| e.to_string())?;
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            tls = tls.with_client_cert_files(cert, key).map_err(|e| e.to_string())?;
        }
        Ok(options.tls(tls))
    }

    /// The address to connect to and the authkey, from the flags, the environment and
    /// the config file (in that order), else the defaults.
    pub fn resolve(&self) -> Result<(Address, Vec<u8>), String> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        let default: Address = config::DEFAULT_LISTEN.parse().expect("the default address parses");
        // clap cannot say whether --address was given; the default value means "not given".
        let address = match file.listen.as_ref().and_then(|l| l.first()) {
            Some(from_file) if self.address == default => from_file.clone(),
            _ => self.address.clone(),
        };
        let authkey = if let Some(key) = explicit_authkey(self.authkey_file.as_ref(), &file)? {
            key
        } else if let Some(users) = file.users.as_ref().filter(|u| !u.is_empty()) {
            // Which user to be is the operator's choice, never a guess.
            let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
            return Err(format!(
                "the config file has users ({}), each with its own key: pass --authkey-file with the key \
                 file of the user to connect as (a server admin's for shutdown, snapshot and stats)",
                names.join(", ")
            ));
        } else {
            config::read_authkey_file(&config::default_authkey_path())
                .map_err(|e| format!("no authkey: pass --authkey-file or set ${AUTHKEY_ENV}, ({e})"))?
        };
        Ok((address, authkey))
    }
}

const SERVE_AFTER_HELP: &str = "\
SETTINGS:
  Every flag can also be set by its environment variable (shown as [env: ...]) or by a
  key of the same name in the --config file (listen, authkey-file, strict-auth,
  max-frame, max-connections, max-in-flight, handshake-timeout, max-handshakes,
  python-threads, python-busy-poll, native-busy-poll, heartbeat-timeout, expose, log-level, metrics, workers, data-dir, fsync,
  snapshot-after, allow-remote-shutdown, max-memory, unix-mode, dead-peer-timeout,
  node-id, peer-listen, cluster, cluster-key-file, peer-tls-ca, snapshot-after-entries,
  advertise, tls-cert, tls-key, tls-client-ca). Precedence: flag > environment variable > config file > built-in
  default. An unknown key in the file is an error naming it. --print-config
  shows the result.

AUTHKEY:
  Every connection must prove it knows the authkey (HMAC challenge, as CPython's
  multiprocessing does). The key comes from --authkey-file (or AGORA_AUTHKEY_FILE), else
  from the AGORA_AUTHKEY environment variable (the key itself), else from the config
  file's authkey-file, else a random key is generated and written to
  $XDG_RUNTIME_DIR/agora/authkey (or $TMPDIR/agora-$UID/authkey) with mode 0600, and its
  path is logged. It is never taken from a plain command-line argument, nor from the
  config file itself.

USERS:
  Instead of one authkey, the config file may list users, each with a key file of its
  own and rules (object-name globs = read | write | admin); a connection is the user
  whose key answered the challenge, so stock CPython clients just use that key:
    [users.ingest]
    key-file = \"keys/ingest\"
    rules = { \"jobs.*\" = \"write\", \"stats.*\" = \"read\" }
  read: open existing objects, read-only methods, copy, list; write: every method,
  create; admin: delete. \"*\" = \"admin\" makes a server admin, who alone may
  shut down (--allow-remote-shutdown is then not used), snapshot, read stats.
  Anonymous objects belong to their creator's user. Refusals are PermissionDenied
  (Python: PermissionError) naming the user and the rule. With users there is no
  authkey: --authkey-file / AGORA_AUTHKEY are refused.

ADDRESSES:
  host:port, [v6addr]:port, tcp://host:port, tls://host:port, unix:/path/to.sock (or just
  /path/to.sock), unix:@name (Linux abstract socket). Repeat --listen to serve several at once.

TLS:
  A tls://host:port listener needs --tls-cert (PEM chain, leaf first) and --tls-key (PEM
  private key). Everything on it is encrypted, the authkey handshake included, which runs
  inside TLS unchanged. With --tls-client-ca, clients must also present a certificate
  signed by that CA (mutual TLS). On SIGHUP the three files are read again: new
  connections get the new certificate, open ones keep theirs; a reload that fails is
  logged and changes nothing. Clients need the CA bundle that signed the server's
  certificate (Rust: ManagerOptions::tls; Python: the agora.tls module). A cluster
  node with --peer-tls-ca serves its peers with the same certificate (it then needs no
  tls:// listener) and checks them against that CA; SIGHUP re-reads those too.

DURABILITY:
  Without --data-dir the state lives in memory and is lost when the server stops. With
  it, every change is appended to a command log in DIR and the state is restored on
  start (snapshot + log); sessions end at a restart (locks, permits and leases of the
  old run are released), named objects and what they hold survive, anonymous objects
  of the old run's clients are freed. --fsync decides what a crash can lose:
    always    an answer goes out once its change is on disk: nothing acknowledged is lost
    everysec  an answer goes out once its change is written to the OS, fsynced within ~1 s:
              a process crash loses nothing acknowledged, a machine crash up to ~1 s
    no        as everysec, but the OS decides when to flush
  `agora snapshot` writes a snapshot now; `agora check --data-dir DIR` verifies a
  stopped server's directory. Back up a stopped server's DIR, or the newest
  snapshot-* file of a running one.

METRICS:
  --metrics 127.0.0.1:9464 serves Prometheus text format at http://127.0.0.1:9464/metrics
  (connections, sessions, objects by kind, calls by kind and method, errors, waiters,
  latency histograms). It needs no authkey: bind it to loopback or a private interface.

EXAMPLES:
  agora serve
  agora serve --config /etc/agora/agora.toml
  agora serve --data-dir /var/lib/agora --fsync always
  agora serve --listen tls://0.0.0.0:50443 --tls-cert cert.pem --tls-key key.pem
  AGORA_AUTHKEY=s3cret agora serve --listen 0.0.0.0:50000 --listen unix:/run/agora.sock";

/// Flags of `agora serve`. Each is `None` (or empty) when neither the flag nor its
/// environment variable was given, so that the config file and then the default
/// apply: see [`ServeArgs::resolve`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file; flags and environment variables override it.
    #[arg(long, short = 'c', value_name = "PATH", env = config::CONFIG_ENV)]
    pub config: Option<PathBuf>,

    /// Print the effective settings (flags, environment, config file, defaults) as a
    /// config file and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Address to listen on; repeat for several. [default: 127.0.0.1:50000]
    #[arg(long = "listen", short = 'l', value_name = "ADDR", env = "AGORA_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Address>,

    /// Permission bits of Unix socket files, in octal (660 lets the socket's group
    /// connect, 600 only its owner; every client still needs the authkey). [default:
    /// what the umask leaves]
    #[arg(long, value_name = "MODE", env = "AGORA_UNIX_MODE", value_parser = config::parse_mode)]
    pub unix_mode: Option<u32>,

    /// Read the authkey from this file (one trailing newline is ignored).
    #[arg(long, value_name = "PATH", env = "AGORA_AUTHKEY_FILE")]
    pub authkey_file: Option<PathBuf>,

    /// Refuse the legacy HMAC-MD5 handshake answer (drops CPython <= 3.11 clients).
    /// [default: false]
    #[arg(
        long,
        env = "AGORA_STRICT_AUTH",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub strict_auth: Option<bool>,

    /// Largest message accepted, in bytes (suffixes K, M, G, KiB, MiB, GiB). [default: 64MiB]
    #[arg(long, value_name = "SIZE", env = "AGORA_MAX_FRAME", value_parser = parse_size)]
    pub max_frame: Option<u64>,

    /// Most connections served at once; more are refused with a clear error. [default: 10000]
    #[arg(long, value_name = "N", env = "AGORA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most blocked (parked) requests one connection may have at once. [default: 1024]
    #[arg(long, value_name = "N", env = "AGORA_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<u32>,

    /// Time a new connection has to authenticate (e.g. 5s, 500ms). [default: 5s]
    #[arg(long, value_name = "DURATION", env = "AGORA_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,

    /// Most connections authenticating at once (until each has answered the server's
    /// challenge). Beyond it, newcomers wait their turn (accepted, in order) until a
    /// handshake ends or its client has answered, or until the oldest has taken a second
    /// without answering and is pushed out: a burst of real clients all get in, and
    /// sockets that connect and say nothing cannot lock clients out (they never count
    /// against --max-connections).
    /// [default: 256]
    #[arg(long, value_name = "N", env = "AGORA_MAX_HANDSHAKES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes: Option<u32>,

    /// Most CPython client threads served on a thread of their own, as CPython's own
    /// manager serves each: its calls are lone round trips, and a thread that sleeps on
    /// one socket is woken next to its client. A connection whose calls wait (two of
    /// its last 64: a contended lock, a get from an empty queue) moves to the shared
    /// workers between two calls, where a waiting call costs less, and gets a thread
    /// again after 256 calls in a row that did not wait. The rest, TLS connections and
    /// one-shot control connections share the --workers threads. A thread whose
    /// connection closes waits up to 10 s for the next (counted against N meanwhile).
    /// Each takes 4 more open files: fewer are used if they would take over half of
    /// `ulimit -n`. 0: every
    /// connection shares the workers. Against the default on 2 CPUs that spent
    /// 0.65–1.09× the server CPU per call with 4–8 clients calling at once, and answered
    /// 2 clients at 0.4–0.8× the rate (bench/changes.md, round 38). [default: 256]
    #[arg(long, value_name = "N", env = "AGORA_PYTHON_THREADS")]
    pub python_threads: Option<usize>,

    /// Longest a CPython connection's thread of its own (--python-threads) polls its
    /// socket for the client's next call before it sleeps (e.g. 100us, 0 to never poll). Where waking a sleeping CPU is slow (virtual
    /// machines), this halves a lone CPython client's round trip, for up to this much
    /// CPU per call. Each connection's poll shrinks while its client pauses longer; none
    /// polls while half the CPUs' worth of other CPython connections are calling; and a
    /// polling thread yields to any other thread. [default: 100us]
    #[arg(long, value_name = "DURATION", env = "AGORA_PYTHON_BUSY_POLL", value_parser = parse_duration)]
    pub python_busy_poll: Option<Duration>,

    /// Longest a worker thread (--workers) polls a lone native client's socket for its
    /// next call before it goes back to waiting on every socket (e.g. 100us, at most
    /// 1ms, 0 to never poll). Where waking a sleeping CPU is slow (virtual machines),
    /// this cuts a lone client's round trip by up to two thirds, for up to this much CPU
    /// per call. The worker's other connections wait meanwhile, so it polls only while
    /// no other connection has had a request since the client's last, and stops as
    /// soon as one has; its poll shrinks while the client pauses longer. [default: 100us]
    #[arg(long, value_name = "DURATION", env = "AGORA_NATIVE_BUSY_POLL", value_parser = parse_duration)]
    pub native_busy_poll: Option<Duration>,

    /// End a client session that sends nothing, not even its heartbeat, for this long
    /// (its locks, permits and leases are released). [default: 10s]
    #[arg(long, value_name = "DURATION", env = "AGORA_HEARTBEAT_TIMEOUT", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,

    /// Drop a TCP connection whose peer stops acknowledging (power loss, cut cable,
    /// partition) after about this long — TCP keepalive probes and TCP_USER_TIMEOUT —
    /// so what it held is released; the only way to notice a dead CPython client's
    /// host. 0 leaves it to the OS (hours). [default: 10s]
    #[arg(long, value_name = "DURATION", env = "AGORA_DEAD_PEER_TIMEOUT", value_parser = parse_duration)]
    pub dead_peer_timeout: Option<Duration>,

    /// Serve a named object to CPython clients under a typeid: TYPEID=KIND:NAME, e.g.
    /// get_tasks=queue:tasks (Python: BaseManager.register("get_tasks")); repeatable.
    #[arg(long, value_name = "TYPEID=KIND:NAME", env = "AGORA_EXPOSE", value_delimiter = ',')]
    pub expose: Vec<Exposure>,

    /// What CPython clients of a listener should dial to rebuild proxies they find in
    /// values, when it is not the address they reached (NAT, containers, proxies):
    /// LISTEN=ADVERTISED, LISTEN as given to --listen, e.g.
    /// 0.0.0.0:50000=host.example:50000; repeatable. [default: the address reached]
    #[arg(long, value_name = "LISTEN=ADVERTISED", env = "AGORA_ADVERTISE", value_delimiter = ',')]
    pub advertise: Vec<Advertise>,

    /// Log level or filter: error, warn, info, debug, trace (or a tracing filter string).
    /// [default: info]
    #[arg(long, value_name = "LEVEL", env = "AGORA_LOG")]
    pub log_level: Option<String>,

    /// Serve Prometheus metrics over HTTP at ADDR (host:port), path /metrics. [default: off]
    #[arg(long, value_name = "ADDR", env = "AGORA_METRICS")]
    pub metrics: Option<Address>,

    /// Threads serving connections (each connection's requests run in order on one of
    /// them at a time). The default leaves one CPU to the kernel, the clients beside the
    /// server and its own other threads (on 2 CPUs, one worker served 50 clients
    /// 5-25 % faster than two: BENCHMARKS.md, round 20); on a machine the server has
    /// to itself, try one per CPU. glibc's allocator keeps as many arenas as there are
    /// workers (unless MALLOC_ARENA_MAX or GLIBC_TUNABLES is set), so memory freed on
    /// one thread is reused on another. [default: one fewer than the CPUs, at least 1]
    #[arg(long, value_name = "N", env = "AGORA_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Keep the state in this directory (a command log and snapshots), so it survives
    /// restarts and crashes; one server per directory. [default: none: in memory only]
    #[arg(long, value_name = "DIR", env = "AGORA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// When a change is on disk before it is acknowledged: always (every change, group
    /// commit), everysec (fsync once a second), no (the OS decides). Needs --data-dir.
    /// [default: everysec]
    #[arg(long, value_name = "POLICY", env = "AGORA_FSYNC", value_parser = clap::builder::ValueParser::new(parse_fsync))]
    pub fsync: Option<Fsync>,

    /// Write a snapshot (and drop the log it covers) after this much log. Needs
    /// --data-dir. [default: 64MiB]
    #[arg(long, value_name = "SIZE", env = "AGORA_SNAPSHOT_AFTER", value_parser = parse_size)]
    pub snapshot_after: Option<u64>,

    /// Let clients on other hosts shut the server down (`agora shutdown`); clients on
    /// this machine (a Unix socket, a loopback address) always may. With users in the
    /// config file it is not used: server admins may, from anywhere, others never.
    /// [default: false]
    #[arg(
        long,
        env = "AGORA_ALLOW_REMOTE_SHUTDOWN",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub allow_remote_shutdown: Option<bool>,

    /// Most memory the server may have in use (e.g. 512MiB, 4G), as Redis's maxmemory
    /// with noeviction: once there, calls that would store more (puts, sets, appends,
    /// new objects) fail with MemoryLimit (Python: MemoryError); reads, deletes, pops
    /// and acks keep working. At least 16MiB. [default: no limit]
    #[arg(long, value_name = "SIZE", env = "AGORA_MAX_MEMORY", value_parser = parse_size)]
    pub max_memory: Option<u64>,

    /// The certificate chain (PEM, leaf first) of tls:// listeners; re-read on SIGHUP.
    /// Needs --tls-key. [default: none]
    #[arg(long, value_name = "PATH", env = "AGORA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM: PKCS#8, RSA or EC) of --tls-cert; re-read on SIGHUP.
    /// [default: none]
    #[arg(long, value_name = "PATH", env = "AGORA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Require TLS clients to present a certificate signed by a CA in this PEM bundle
    /// (mutual TLS); re-read on SIGHUP. [default: no client certificates]
    #[arg(long, value_name = "PATH", env = "AGORA_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Run as node N (1, 2, …; unique in its cluster) of a replicated cluster. Needs
    /// --data-dir (the node's Raft log and snapshots), --peer-listen, and an authkey
    /// every node shares (--authkey-file or $AGORA_AUTHKEY), or, with per-user keys (a
    /// users table in the config file), the same users on every node and a
    /// --cluster-key-file. Clients may connect to any
    /// node: the leader serves them, the others relay them to it. [default: a single
    /// server]
    #[arg(long, value_name = "N", env = "AGORA_NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    /// Where this cluster node listens for the other nodes (Raft's traffic, which the
    /// authkey authenticates). Needs --node-id.
    #[arg(long, value_name = "HOST:PORT", env = "AGORA_PEER_LISTEN")]
    pub peer_listen: Option<std::net::SocketAddr>,

    /// The cluster's members, ID=HOST:PORT (each node's id and --peer-listen address),
    /// comma-separated or repeated. Nodes started with the same list form the cluster
    /// on their first start; without it, form one with `agora cluster init`. Needs
    /// --node-id.
    #[arg(long, value_name = "ID=PEER", env = "AGORA_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<config::Member>,

    /// Read the key cluster nodes authenticate each other with from this file (the
    /// same file on every node; `agora cluster` takes it too). Needed when the config
    /// file has a users table, which leaves no authkey; without users it defaults to the
    /// authkey. It is never a client's key. [default: the authkey]
    #[arg(long, value_name = "PATH", env = CLUSTER_KEY_FILE_ENV)]
    pub cluster_key_file: Option<PathBuf>,

    /// Encrypt the peer link with TLS: this node serves its peers with --tls-cert and
    /// --tls-key, and checks the peers it connects to against the CAs in this PEM
    /// bundle (their certificates must name the host in their --cluster address). The
    /// cluster key is still checked inside. Give every node the same setting, and
    /// `agora cluster` too. [default: plain TCP]
    #[arg(long, value_name = "PATH", env = PEER_TLS_CA_ENV)]
    pub peer_tls_ca: Option<PathBuf>,

    /// A cluster node writes a Raft snapshot (the state as of one entry; the log before
    /// it can go) after this many entries. Fewer: a node that fell behind catches up
    /// from a more recent snapshot, and the log stays shorter; more: the state is
    /// encoded and written less often. Needs --node-id. [default: 10000]
    #[arg(long, value_name = "N", env = "AGORA_SNAPSHOT_AFTER_ENTRIES", value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_after_entries: Option<u64>,
}

/// The environment variable naming the cluster key's file.
pub const CLUSTER_KEY_FILE_ENV: &str = "AGORA_CLUSTER_KEY_FILE";

/// A cluster node's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's id.
    pub node_id: u64,
    /// Where it listens for its peers.
    pub peer_listen: std::net::SocketAddr,
    /// The members to form the cluster with on first start (may be empty).
    pub members: Vec<config::Member>,
    /// The node's directory (from --data-dir).
    pub dir: PathBuf,
    /// The file of the key the nodes authenticate each other with (`None`: the
    /// authkey).
    pub key_file: Option<PathBuf>,
    /// The CA bundle peers are checked against: TLS on the peer link (`None`: plain).
    pub peer_tls_ca: Option<PathBuf>,
    /// Raft log entries between two snapshots.
    pub snapshot_after_entries: u64,
}

fn parse_fsync(text: &str) -> Result<Fsync, String> {
    text.parse()
}

/// Where the authkey of `agora serve` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthkeySource {
    /// A file (from `--authkey-file`, `AGORA_AUTHKEY_FILE`, or the config file).
    File(PathBuf),
    /// The `AGORA_AUTHKEY` environment variable.
    Env,
    /// None given: generate one into the default file.
    Generate,
    /// Users are configured: each authenticates with its own key, there is no authkey.
    Users,
}

/// The settings `agora serve` runs with: flags over environment over config file over
/// defaults, resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Where to listen.
    pub listen: Vec<Address>,
    /// Where the authkey comes from.
    pub authkey: AuthkeySource,
    /// Refuse the legacy handshake answer.
    pub strict_auth: bool,
    /// Limits.
    pub limits: Limits,
    /// CPython typeids served by named objects.
    pub expose: Vec<Exposure>,
    /// Advertised addresses, per listen address.
    pub advertise: Vec<Advertise>,
    /// The log filter.
    pub log_level: String,
    /// The metrics endpoint, if any.
    pub metrics: Option<Address>,
    /// Worker threads of the server's runtime.
    pub workers: usize,
    /// The data directory and its policies; `None`: in memory only.
    pub durability: Option<DurabilityConfig>,
    /// Clients on other hosts may shut the server down.
    pub allow_remote_shutdown: bool,
    /// Permission bits of Unix socket files, if set.
    pub unix_mode: Option<u32>,
    /// The config file's users (their keys are read at start); empty: the one authkey.
    pub users: Vec<UserFile>,
    /// The certificate, key and client CA of `tls://` listeners, if given.
    pub tls: Option<TlsConfig>,
    /// This server is a cluster node; `None`: a single server.
    pub cluster: Option<ClusterSettings>,
}

/// The default number of worker threads: one fewer than the CPUs, at least one. The
/// CPU left over is the kernel's (loopback and TCP processing), the clients' beside the
/// server, and the server's own other threads' (CPython connections' threads, the log
/// writer, snapshots).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl ServeArgs {
    /// Applies the precedence flag (or its environment variable: clap merges the two,
    /// the flag first) > config file > default.
    pub fn resolve(&self) -> Result<ServeSettings, String> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        let defaults = Limits::default();
        let listen = match (&self.listen, file.listen) {
            (given, _) if !given.is_empty() => given.clone(),
            (_, Some(from_file)) if !from_file.is_empty() => from_file,
            _ => vec![config::DEFAULT_LISTEN.parse().expect("the default address parses")],
        };
        let users = file.users.unwrap_or_default();
        let authkey = if !users.is_empty() {
            // Which key answers says who connected; one more key would be a user without rules.
            let given = [
                self.authkey_file.as_ref().map(|_| "--authkey-file (or $AGORA_AUTHKEY_FILE)"),
                std::env::var_os(AUTHKEY_ENV).map(|_| "$AGORA_AUTHKEY"),
                file.authkey_file.as_ref().map(|_| "the config file's authkey-file"),
            ];
            if let Some(given) = given.into_iter().flatten().next() {
                return Err(format!(
                    "the config file has users, each with its own key-file, so there is no authkey: remove \
                     {given} (an operator's key is a user with the rule \"*\" = \"admin\")"
                ));
            }
            AuthkeySource::Users
        } else if let Some(path) = &self.authkey_file {
            AuthkeySource::File(path.clone())
        } else if std::env::var_os(AUTHKEY_ENV).is_some() {
            AuthkeySource::Env
        } else if let Some(path) = file.authkey_file {
            AuthkeySource::File(path)
        } else {
            AuthkeySource::Generate
        };
        let node_id = self.node_id.or(file.node_id);
        let peer_listen = self.peer_listen.or(file.peer_listen);
        let members = if self.cluster.is_empty() { file.cluster.unwrap_or_default() } else { self.cluster.clone() };
        let data_dir = self.data_dir.clone().or(file.data_dir);
        let cluster_key_file = self.cluster_key_file.clone().or(file.cluster_key_file);
        let peer_tls_ca = self.peer_tls_ca.clone().or(file.peer_tls_ca);
        let snapshot_after_entries = self.snapshot_after_entries.or(file.snapshot_after_entries);
        if snapshot_after_entries == Some(0) {
            return Err("snapshot-after-entries must be at least 1".to_owned());
        }
        let has_certificate = self.tls_cert.is_some() || file.tls_cert.is_some();
        let cluster = match (node_id, peer_listen, &data_dir) {
            (None, _, _) if peer_tls_ca.is_some() => {
                return Err("--peer-tls-ca is for cluster nodes: give --node-id and --peer-listen too".to_owned())
            }
            (None, _, _) if snapshot_after_entries.is_some() => {
                return Err("--snapshot-after-entries is for cluster nodes (a single server snapshots after \
                            --snapshot-after bytes of log): give --node-id and --peer-listen too"
                    .to_owned())
            }
            (Some(_), _, _) if peer_tls_ca.is_some() && !has_certificate => {
                return Err("--peer-tls-ca needs --tls-cert and --tls-key: the certificate this node serves its \
                            peers with"
                    .to_owned())
            }
            (None, None, _) if members.is_empty() && cluster_key_file.is_some() => {
                return Err("--cluster-key-file is for cluster nodes: give --node-id and --peer-listen too".to_owned())
            }
            (None, None, _) if members.is_empty() => None,
            (None, _, _) => {
                return Err("--peer-listen and --cluster are for cluster nodes: give --node-id too".to_owned())
            }
            (Some(_), None, _) => {
                return Err("a cluster node needs --peer-listen HOST:PORT (where the other nodes reach it)".to_owned())
            }
            (Some(_), Some(_), None) => {
                return Err("a cluster node needs --data-dir (where its Raft log and snapshots are kept)".to_owned())
            }
            (Some(_), Some(_), Some(_)) if !users.is_empty() && cluster_key_file.is_none() => {
                return Err("a cluster node with [users] has no authkey to authenticate its peers with: give \
                            --cluster-key-file (or $AGORA_CLUSTER_KEY_FILE, or cluster-key-file in the config \
                            file), the same key file on every node"
                    .to_owned())
            }
            (Some(_), Some(_), Some(_)) if self.fsync.is_some() || self.snapshot_after.is_some() => {
                return Err("--fsync and --snapshot-after are for a single server: a cluster node fsyncs its Raft log \
                            before every acknowledgement and snapshots by entries"
                    .to_owned())
            }
            (Some(node_id), Some(peer_listen), Some(dir)) => {
                if !members.is_empty() && !members.iter().any(|m| m.id == node_id) {
                    return Err(format!(
                        "--cluster does not list this node ({node_id}): list every member, this one too"
                    ));
                }
                Some(ClusterSettings {
                    node_id,
                    peer_listen,
                    members: members.clone(),
                    dir: dir.clone(),
                    key_file: cluster_key_file,
                    peer_tls_ca,
                    snapshot_after_entries: snapshot_after_entries
                        .unwrap_or(agora_server::cluster::DEFAULT_SNAPSHOT_AFTER_ENTRIES),
                })
            }
        };
        let durability = match data_dir.filter(|_| cluster.is_none()) {
            Some(dir) => {
                let mut durable = DurabilityConfig::new(dir);
                durable.fsync = self.fsync.or(file.fsync).unwrap_or_default();
                durable.snapshot_after = self.snapshot_after.or(file.snapshot_after).unwrap_or(durable.snapshot_after);
                Some(durable)
            }
            None if self.fsync.is_some() || self.snapshot_after.is_some() => {
                return Err("--fsync and --snapshot-after need --data-dir (where the log is kept)".to_owned());
            }
            None => None,
        };
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
            self.tls_client_ca.clone().or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsConfig { cert, key, client_ca }),
            (None, None, None) => None,
            (Some(_), None, _) => return Err("--tls-cert needs --tls-key (the certificate's private key)".to_owned()),
            (None, Some(_), _) => return Err("--tls-key needs --tls-cert (the certificate it belongs to)".to_owned()),
            (None, None, Some(_)) => {
                return Err("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)".to_owned())
            }
        };
        Ok(ServeSettings {
            tls,
            durability,
            cluster,
            allow_remote_shutdown: self.allow_remote_shutdown.or(file.allow_remote_shutdown).unwrap_or(false),
            unix_mode: self.unix_mode.or(file.unix_mode),
            users,
            listen,
            authkey,
            strict_auth: self.strict_auth.or(file.strict_auth).unwrap_or(false),
            limits: Limits {
                max_frame: self.max_frame.or(file.max_frame).unwrap_or(defaults.max_frame),
                max_connections: self.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections),
                max_in_flight: self.max_in_flight.or(file.max_in_flight).unwrap_or(defaults.max_in_flight),
                handshake_timeout: self
                    .handshake_timeout
                    .or(file.handshake_timeout)
                    .unwrap_or(defaults.handshake_timeout),
                max_handshakes: self
                    .max_handshakes
                    .map(|n| n as usize)
                    .or(file.max_handshakes)
                    .unwrap_or(defaults.max_handshakes),
                python_threads: self.python_threads.or(file.python_threads).unwrap_or(defaults.python_threads),
                python_busy_poll: self.python_busy_poll.or(file.python_busy_poll).unwrap_or(defaults.python_busy_poll),
                native_busy_poll: match self.native_busy_poll.or(file.native_busy_poll) {
                    Some(most) if most > NATIVE_MOST => {
                        return Err(format!(
                            "native-busy-poll is at most {}: a worker's other connections wait while it polls (got {})",
                            config::format_duration(NATIVE_MOST),
                            config::format_duration(most)
                        ))
                    }
                    Some(most) => most,
                    None => defaults.native_busy_poll,
                },
                heartbeat_timeout: self
                    .heartbeat_timeout
                    .or(file.heartbeat_timeout)
                    .unwrap_or(defaults.heartbeat_timeout),
                dead_peer_timeout: match self.dead_peer_timeout.or(file.dead_peer_timeout) {
                    Some(off) if off.is_zero() => None,
                    Some(timeout) => Some(timeout),
                    None => defaults.dead_peer_timeout,
                },
                max_memory: match self.max_memory.or(file.max_memory) {
                    Some(limit) if limit < MIN_MEMORY_LIMIT => {
                        return Err(format!(
                            "--max-memory {} is too small: the server itself needs a few MiB (at least {})",
                            config::format_size(limit),
                            config::format_size(MIN_MEMORY_LIMIT)
                        ))
                    }
                    limit => limit,
                },
            },
            expose: if self.expose.is_empty() { file.expose.unwrap_or_default() } else { self.expose.clone() },
            advertise: if self.advertise.is_empty() {
                file.advertise.unwrap_or_default()
            } else {
                self.advertise.clone()
            },
            log_level: self.log_level.clone().or(file.log_level).unwrap_or_else(|| "info".to_owned()),
            metrics: self.metrics.clone().or(file.metrics),
            workers: self.workers.map(usize::from).or(file.workers).unwrap_or_else(default_workers),
        })
    }
}

impl ServeSettings {
    /// The settings as a config file that reads back to the same settings.
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let list = |items: Vec<String>| format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "));
        let mut out = String::new();
        out.push_str(&format!("listen = {}\n", list(self.listen.iter().map(Address::to_string).collect())));
        match &self.authkey {
            AuthkeySource::File(path) => {
                out.push_str(&format!("authkey-file = {}\n", quote(&path.display().to_string())))
            }
            AuthkeySource::Env => out.push_str(&format!("# authkey: from ${AUTHKEY_ENV}\n")),
            AuthkeySource::Generate => out.push_str(&format!(
                "# authkey: none given; generated into {}\n",
                config::default_authkey_path().display()
            )),
            AuthkeySource::Users => out.push_str("# authkey: none; each user below has its own key-file\n"),
        }
        let l = &self.limits;
        out.push_str(&format!("strict-auth = {}\n", self.strict_auth));
        out.push_str(&format!("allow-remote-shutdown = {}\n", self.allow_remote_shutdown));
        match self.unix_mode {
            Some(mode) => out.push_str(&format!("unix-mode = \"{mode:04o}\"\n")),
            None => out.push_str("# unix-mode: as the umask leaves it\n"),
        }
        out.push_str(&format!("max-frame = {}\n", quote(&config::format_size(l.max_frame))));
        out.push_str(&format!("max-connections = {}\n", l.max_connections));
        out.push_str(&format!("max-in-flight = {}\n", l.max_in_flight));
        out.push_str(&format!("handshake-timeout = {}\n", quote(&config::format_duration(l.handshake_timeout))));
        out.push_str(&format!("max-handshakes = {}\n", l.max_handshakes));
        out.push_str(&format!("python-threads = {}\n", l.python_threads));
        out.push_str(&format!("python-busy-poll = {}\n", quote(&config::format_duration(l.python_busy_poll))));
        out.push_str(&format!("native-busy-poll = {}\n", quote(&config::format_duration(l.native_busy_poll))));
        out.push_str(&format!("heartbeat-timeout = {}\n", quote(&config::format_duration(l.heartbeat_timeout))));
        match l.dead_peer_timeout {
            Some(timeout) => {
                out.push_str(&format!("dead-peer-timeout = {}\n", quote(&config::format_duration(timeout))))
            }
            None => out.push_str("dead-peer-timeout = 0 # off: the OS's defaults\n"),
        }
        match l.max_memory {
            Some(limit) => out.push_str(&format!("max-memory = {}\n", quote(&config::format_size(limit)))),
            None => out.push_str("# max-memory: no limit\n"),
        }
        let exposures = self.expose.iter().map(|e| format!("{}={}:{}", e.typeid, e.kind, e.name)).collect();
        out.push_str(&format!("expose = {}\n", list(exposures)));
        out.push_str(&format!("advertise = {}\n", list(self.advertise.iter().map(Advertise::to_string).collect())));
        out.push_str(&format!("log-level = {}\n", quote(&self.log_level)));
        match &self.metrics {
            Some(address) => out.push_str(&format!("metrics = {}\n", quote(&address.to_string()))),
            None => out.push_str("# metrics: off\n"),
        }
        out.push_str(&format!("workers = {}\n", self.workers));
        match &self.tls {
            Some(tls) => {
                out.push_str(&format!("tls-cert = {}\n", quote(&tls.cert.display().to_string())));
                out.push_str(&format!("tls-key = {}\n", quote(&tls.key.display().to_string())));
                match &tls.client_ca {
                    Some(ca) => out.push_str(&format!("tls-client-ca = {}\n", quote(&ca.display().to_string()))),
                    None => out.push_str("# tls-client-ca: none (no client certificates)\n"),
                }
            }
            None => out.push_str("# tls-cert: none (no tls:// listeners)\n"),
        }
        if let Some(c) = &self.cluster {
            out.push_str(&format!("data-dir = {}\n", quote(&c.dir.display().to_string())));
            out.push_str(&format!("node-id = {}\n", c.node_id));
            out.push_str(&format!("peer-listen = {}\n", quote(&c.peer_listen.to_string())));
            out.push_str(&format!("cluster = {}\n", list(c.members.iter().map(|m| m.to_string()).collect())));
            match &c.key_file {
                Some(path) => out.push_str(&format!("cluster-key-file = {}\n", quote(&path.display().to_string()))),
                None => out.push_str("# cluster-key-file: none (the nodes authenticate each other with the authkey)\n"),
            }
            match &c.peer_tls_ca {
                Some(path) => out.push_str(&format!("peer-tls-ca = {}\n", quote(&path.display().to_string()))),
                None => out.push_str("# peer-tls-ca: none (the peer link is plain TCP)\n"),
            }
            out.push_str(&format!("snapshot-after-entries = {}\n", c.snapshot_after_entries));
        }
        match &self.durability {
            None if self.cluster.is_some() => {}
            Some(d) => {
                out.push_str(&format!("data-dir = {}\n", quote(&d.data_dir.display().to_string())));
                out.push_str(&format!("fsync = {}\n", quote(&d.fsync.to_string())));
                out.push_str(&format!("snapshot-after = {}\n", quote(&config::format_size(d.snapshot_after))));
            }
            None => out.push_str("# data-dir: none (state in memory only)\n"),
        }
        // Tables last: TOML puts every key after a table header into that table.
        for user in &self.users {
            out.push_str(&format!("\n[users.{}]\n", quote(&user.name)));
            out.push_str(&format!("key-file = {}\n", quote(&user.key_file.display().to_string())));
            let rules: Vec<String> =
                user.rules.iter().map(|r| format!("{} = {}", quote(&r.pattern), quote(r.level.as_str()))).collect();
            out.push_str(&format!("rules = {{ {} }}\n", rules.join(", ")));
        }
        out
    }
}

/// Finds the authkey as `source` says; a generated key is written to a private file
/// (whose path is logged).
fn load_authkey(source: &AuthkeySource) -> Result<Vec<u8>, config::AuthkeyError> {
    match source {
        AuthkeySource::File(path) => {
            let key = config::read_authkey_file(path).inspect_err(|e| {
                if matches!(e, config::AuthkeyError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound) {
                    tracing::error!(
                        "create the key file (e.g. head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {}), \
                         or give no authkey file at all and a key is generated and kept",
                        path.display()
                    );
                }
            })?;
            tracing::info!(path = %path.display(), "authkey read from file");
            Ok(key)
        }
        AuthkeySource::Env => {
            let key = config::authkey_from_env()?.unwrap_or_default();
            tracing::info!("authkey taken from ${AUTHKEY_ENV}");
            Ok(key)
        }
        AuthkeySource::Users => Ok(Vec::new()),
        AuthkeySource::Generate => {
            let path = config::default_authkey_path();
            let (key, origin) = config::generated_authkey(&path)?;
            match origin {
                KeyOrigin::Generated => tracing::info!(
                    path = %path.display(),
                    "no authkey given: generated a random one (mode 0600); clients on this machine find it there"
                ),
                KeyOrigin::Reused => tracing::info!(
                    path = %path.display(),
                    "no authkey given: using the one generated earlier (clients keep the key they read)"
                ),
            }
            Ok(key)
        }
    }
}

fn init_logging(filter: &str) {
    // openraft narrates every election and replication step at info; an operator needs
    // its warnings (a peer unreachable, a vote lost) unless they ask for more.
    let filter = if filter.contains("openraft") { filter.to_owned() } else { format!("{filter},openraft=warn") };
    let filter = filter.as_str();
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("agora: invalid --log-level '{filter}' ({e}); using 'info'");
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs `agora serve` to completion (until SIGINT/SIGTERM) on a runtime of its own,
/// with the resolved number of worker threads.
pub fn serve(args: ServeArgs) -> Result<(), String> {
    let settings = args.resolve()?;
    if args.print_config {
        print!("{}", settings.to_toml());
        return Ok(());
    }
    crate::allocator::share_arenas(settings.workers);
    let runtime =
        crate::runtime::server_runtime(settings.workers).map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve_with(args, settings))
}

async fn serve_with(args: ServeArgs, settings: ServeSettings) -> Result<(), String> {
    init_logging(&settings.log_level);
    if let Some(path) = &args.config {
        tracing::info!(path = %path.display(), "settings read from config file");
    }
    // Before anything is announced, so a signal that arrives early stops us cleanly.
    let stop_signal = stop_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut config = Config::new(settings.listen.clone(), Vec::new());
    config.strict_auth = settings.strict_auth;
    config.expose = settings.expose.clone();
    config.advertise = settings.advertise.clone();
    config.limits = settings.limits.clone();
    config.durability = settings.durability.clone();
    config.allow_remote_shutdown = settings.allow_remote_shutdown;
    config.unix_mode = settings.unix_mode;
    config.tls = settings.tls.clone();
    // A cluster's key must be there before Raft starts; otherwise bind before touching
    // the authkey, so a port clash leaves no new key file behind.
    let mut peer_tls = None;
    let cluster_key = match &settings.cluster {
        Some(cluster) => {
            if settings.authkey == AuthkeySource::Generate {
                return Err(
                    "a cluster's nodes share one authkey: give each the same --authkey-file (or $AGORA_AUTHKEY)"
                        .to_owned(),
                );
            }
            let key = match &cluster.key_file {
                Some(path) => {
                    let key = config::read_authkey_file(path).map_err(|e| format!("the cluster key: {e}"))?;
                    tracing::info!(path = %path.display(), "cluster key read from file");
                    key
                }
                None => load_authkey(&settings.authkey).map_err(|e| e.to_string())?,
            };
            let mut node = agora_server::cluster::ClusterConfig::new(
                cluster.node_id,
                cluster.peer_listen,
                &cluster.dir,
                key.clone(),
            );
            if let (Some(ca), Some(tls)) = (&cluster.peer_tls_ca, &settings.tls) {
                let loaded = agora_server::tls::PeerTls::node(&tls.cert, &tls.key, ca).map_err(|e| e.to_string())?;
                tracing::info!(ca = %ca.display(), "the peer link uses TLS; SIGHUP reloads its certificate and CA");
                let loaded = std::sync::Arc::new(loaded);
                peer_tls = Some(loaded.clone());
                node.tls = Some(loaded);
            }
            node.snapshot_after_entries = cluster.snapshot_after_entries;
            let members = cluster.members.iter().map(|m| (m.id, m.peer.clone())).collect();
            config.cluster = Some(agora_server::cluster::ClusterSetup { node, members });
            Some(key)
        }
        None => None,
    };
    let mut server = Server::bind(config).await.map_err(|e| e.to_string())?;
    let metrics = match &settings.metrics {
        Some(address) => Some(agora_server::metrics::MetricsListener::bind(address).await.map_err(|e| e.to_string())?),
        None => None,
    };
    // Without a key file of its own, a cluster's key is the authkey, read once.
    let authkey = match cluster_key {
        Some(key) if settings.cluster.as_ref().is_some_and(|c| c.key_file.is_none()) => key,
        _ => load_authkey(&settings.authkey).map_err(|e| e.to_string())?,
    };
    server.set_authkey(authkey);
    if !settings.users.is_empty() {
        let users = config::load_users(&settings.users)?;
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        tracing::info!(users = %names.join(", "), "users configured: each connection is the user whose key it holds");
        server.set_users(users);
    }
    // Before "listening" is announced, so a SIGHUP sent once it is reloads.
    let client_tls = server.tls();
    if let Some(tls) = &client_tls {
        let files = tls.files();
        tracing::info!(cert = %files.cert.display(), client_ca = ?files.client_ca, "TLS certificate loaded; SIGHUP reloads it");
    }
    if client_tls.is_some() || peer_tls.is_some() {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let reloaded = [
                    ("clients", client_tls.as_ref().map(|tls| tls.reload())),
                    ("peers", peer_tls.as_ref().map(|tls| tls.reload())),
                ];
                for (link, outcome) in reloaded {
                    match outcome {
                        Some(Ok(())) => tracing::info!(
                            link,
                            "TLS certificate reloaded (SIGHUP): new connections use it, open ones keep theirs"
                        ),
                        Some(Err(e)) => tracing::error!(
                            link,
                            error = %e,
                            "TLS reload (SIGHUP) failed; still using the previous certificate"
                        ),
                        None => {}
                    }
                }
            }
        });
    }
    tracing::info!(workers = settings.workers, "worker threads");
    for address in server.addresses() {
        tracing::info!(%address, "listening");
    }
    if let Some(metrics) = metrics {
        tracing::info!(address = %metrics.address(), "serving metrics at http://{}/metrics", metrics.address());
        tokio::spawn(metrics.serve(server.shared().clone()));
    }
    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        stop_signal.await;
        tracing::info!("shutdown requested by signal");
        handle.shutdown();
    });
    server.run().await;
    Ok(())
}

/// Installs SIGTERM and SIGINT handlers now; the future completes on either signal.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["agora", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parses").command {
            Command::Serve(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agora.toml");
        std::fs::write(
            &path,
            "max-frame = \"1MiB\"\nmax-in-flight = 7\nstrict-auth = true\nexpose = [\"t=queue:q\"]\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let from_file = serve_args(&["--config", config]).resolve().unwrap();
        assert_eq!(from_file.limits.max_frame, 1 << 20);
        assert_eq!(from_file.limits.max_in_flight, 7);
        assert!(from_file.strict_auth);
        assert_eq!(from_file.expose.len(), 1);
        assert_eq!(from_file.limits.max_connections, Limits::default().max_connections, "default");
        let flagged =
            serve_args(&["--config", config, "--max-frame", "2MiB", "--strict-auth=false", "--expose", "u=dict:d"])
                .resolve()
                .unwrap();
        assert_eq!(flagged.limits.max_frame, 2 << 20);
        assert!(!flagged.strict_auth);
        assert_eq!(flagged.expose[0].typeid, "u");
        assert_eq!(flagged.limits.max_in_flight, 7, "the file still fills what no flag sets");
        assert!(serve_args(&["--strict-auth"]).resolve().unwrap().strict_auth);
    }

    #[test]
    fn durability_settings_need_a_data_dir_and_read_back() {
        let err = serve_args(&["--fsync", "always"]).resolve().unwrap_err();
        assert!(err.contains("--data-dir"), "{err}");
        assert!(Cli::try_parse_from(["agora", "serve", "--data-dir", "/d", "--fsync", "sometimes"]).is_err());
        let settings = serve_args(&["--data-dir", "/var/lib/agora", "--fsync", "always", "--snapshot-after", "1MiB"])
            .resolve()
            .unwrap();
        let durable = settings.durability.clone().unwrap();
        assert_eq!((durable.fsync, durable.snapshot_after), (Fsync::Always, 1 << 20));
        let back = FileConfig::parse(&settings.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.data_dir.as_deref(), Some(Path::new("/var/lib/agora")));
        assert_eq!((back.fsync, back.snapshot_after), (Some(Fsync::Always), Some(1 << 20)));
        let in_memory = serve_args(&[]).resolve().unwrap();
        assert!(in_memory.durability.is_none());
        assert!(in_memory.to_toml().contains("# data-dir: none"));
    }

    #[test]
    fn a_memory_limit_reads_back_and_must_leave_room_for_the_server() {
        let settings = serve_args(&["--max-memory", "2G"]).resolve().unwrap();
        assert_eq!(settings.limits.max_memory, Some(2 << 30));
        let back = FileConfig::parse(&settings.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.max_memory, Some(2 << 30));
        assert!(serve_args(&[]).resolve().unwrap().to_toml().contains("# max-memory: no limit"));
        let err = serve_args(&["--max-memory", "1MiB"]).resolve().unwrap_err();
        assert!(err.contains("too small") && err.contains("16MiB"), "{err}");
    }

    #[test]
    fn the_dead_peer_timeout_defaults_near_the_heartbeat_and_can_be_turned_off() {
        let default = serve_args(&[]).resolve().unwrap();
        assert_eq!(default.limits.dead_peer_timeout, Some(Duration::from_secs(10)));
        let off = serve_args(&["--dead-peer-timeout", "0"]).resolve().unwrap();
        assert_eq!(off.limits.dead_peer_timeout, None);
        let back = FileConfig::parse(&off.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.dead_peer_timeout, Some(Duration::ZERO), "off reads back as off");
        let set = serve_args(&["--dead-peer-timeout", "30s"]).resolve().unwrap();
        let back = FileConfig::parse(&set.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.dead_peer_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn advertised_addresses_read_back() {
        let settings = serve_args(&["--listen", "0.0.0.0:50000", "--advertise", "0.0.0.0:50000=public.example:6000"])
            .resolve()
            .unwrap();
        assert_eq!(settings.advertise[0].advertised.to_string(), "public.example:6000");
        let back = FileConfig::parse(&settings.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.advertise.unwrap(), settings.advertise);
        assert!(Cli::try_parse_from(["agora", "serve", "--advertise", "no-equals-sign"]).is_err());
    }

    #[test]
    fn a_unix_socket_mode_is_octal_and_reads_back() {
        let settings = serve_args(&["--unix-mode", "660"]).resolve().unwrap();
        assert_eq!(settings.unix_mode, Some(0o660));
        let back = FileConfig::parse(&settings.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.unix_mode, Some(0o660));
        assert_eq!(FileConfig::parse("unix-mode = 0o600", Path::new("/")).unwrap().unix_mode, Some(0o600));
        assert!(Cli::try_parse_from(["agora", "serve", "--unix-mode", "999"]).is_err(), "not octal");
        assert!(Cli::try_parse_from(["agora", "serve", "--unix-mode", "1777"]).is_err(), "no special bits");
    }

    #[test]
    fn users_come_from_the_file_print_without_keys_and_exclude_an_authkey() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agora.toml");
        std::fs::write(
            &path,
            "[users.ingest]\nkey-file = \"keys/ingest\"\nrules = { \"jobs.*\" = \"write\", \"*\" = \"read\" }\n\
             [users.\"ops team\"]\nkey-file = \"/k/ops\"\nrules = { \"*\" = \"admin\" }\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let settings = serve_args(&["--config", config]).resolve().unwrap();
        assert_eq!(settings.authkey, AuthkeySource::Users);
        assert_eq!(settings.users.len(), 2);
        let text = settings.to_toml();
        assert!(text.contains("key-file") && !text.contains("authkey-file"), "{text}");
        let back = FileConfig::parse(&text, Path::new("/")).unwrap().users.unwrap();
        assert_eq!(back, settings.users, "{text}");
        let err = serve_args(&["--config", config, "--authkey-file", "/k/a"]).resolve().unwrap_err();
        assert!(err.contains("--authkey-file") && err.contains("own key-file"), "{err}");
    }

    #[test]
    fn admin_commands_with_users_need_a_users_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agora.toml");
        std::fs::write(&path, "[users.ops]\nkey-file = \"ops.key\"\nrules = { \"*\" = \"admin\" }\n").unwrap();
        std::fs::write(dir.path().join("ops.key"), "ops-key\n").unwrap();
        let stats = |extra: &[&str]| {
            let mut argv = vec!["agora", "ping", "--config", path.to_str().unwrap()];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("parses").command {
                Command::Ping(client) => client.resolve(),
                _ => unreachable!(),
            }
        };
        if std::env::var_os(AUTHKEY_ENV).is_none() {
            let err = stats(&[]).unwrap_err();
            assert!(err.contains("users (ops)") && err.contains("--authkey-file"), "{err}");
        }
        let key_file = dir.path().join("ops.key");
        assert_eq!(stats(&["--authkey-file", key_file.to_str().unwrap()]).unwrap().1, b"ops-key");
    }

    #[test]
    fn tls_files_come_in_pairs_and_read_back() {
        let settings = serve_args(&["--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--tls-client-ca", "/ca.pem"])
            .resolve()
            .unwrap();
        let tls = settings.tls.clone().unwrap();
        assert_eq!((tls.cert.as_path(), tls.key.as_path()), (Path::new("/c.pem"), Path::new("/k.pem")));
        let back = FileConfig::parse(&settings.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.tls_cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(back.tls_key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(back.tls_client_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert!(serve_args(&[]).resolve().unwrap().to_toml().contains("# tls-cert: none"));
        let err = serve_args(&["--tls-cert", "/c.pem"]).resolve().unwrap_err();
        assert!(err.contains("--tls-key"), "{err}");
        let err = serve_args(&["--tls-key", "/k.pem"]).resolve().unwrap_err();
        assert!(err.contains("--tls-cert"), "{err}");
        let err = serve_args(&["--tls-client-ca", "/ca.pem"]).resolve().unwrap_err();
        assert!(err.contains("mutual TLS"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_the_same() {
        let args = serve_args(&["--listen", "127.0.0.1:1", "--listen", "unix:/tmp/x.sock", "--max-frame", "3MiB"]);
        let settings = args.resolve().unwrap();
        let text = settings.to_toml();
        let back = FileConfig::parse(&text, Path::new(".")).unwrap();
        assert_eq!(back.listen.unwrap(), settings.listen);
        assert_eq!(back.max_frame, Some(3 << 20));
        assert_eq!(back.heartbeat_timeout, Some(settings.limits.heartbeat_timeout));
        assert_eq!(back.log_level.as_deref(), Some("info"));
    }

    #[test]
    fn cluster_flags_resolve_and_print_back() {
        let args = serve_args(&[
            "--node-id",
            "2",
            "--peer-listen",
            "10.0.0.2:50100",
            "--data-dir",
            "/var/lib/agora",
            "--cluster",
            "1=10.0.0.1:50100,2=10.0.0.2:50100",
            "--cluster",
            "3=10.0.0.3:50100",
            "--cluster-key-file",
            "/etc/agora/cluster.key",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--peer-tls-ca",
            "/etc/agora/peers-ca.pem",
            "--snapshot-after-entries",
            "500",
        ]);
        let settings = args.resolve().unwrap();
        let cluster = settings.cluster.clone().expect("a cluster node");
        assert_eq!(cluster.peer_tls_ca, Some(PathBuf::from("/etc/agora/peers-ca.pem")));
        assert_eq!(cluster.snapshot_after_entries, 500);
        assert_eq!(cluster.node_id, 2);
        assert_eq!(cluster.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(settings.durability.is_none(), "a cluster node's state is in its Raft log");
        let back = FileConfig::parse(&settings.to_toml(), Path::new("/")).unwrap();
        assert_eq!(back.node_id, Some(2));
        assert_eq!(back.peer_listen, Some("10.0.0.2:50100".parse().unwrap()));
        assert_eq!(back.cluster.unwrap(), cluster.members);
        assert_eq!(back.data_dir, Some(PathBuf::from("/var/lib/agora")));
        assert_eq!(back.cluster_key_file, Some(PathBuf::from("/etc/agora/cluster.key")));
        assert_eq!(back.peer_tls_ca, Some(PathBuf::from("/etc/agora/peers-ca.pem")));
        assert_eq!(back.snapshot_after_entries, Some(500));
    }

    #[test]
    fn cluster_settings_that_cannot_work_are_refused() {
        let base = ["--node-id", "1", "--peer-listen", "127.0.0.1:7", "--data-dir", "/d"];
        let with = |extra: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            serve_args(&argv).resolve().unwrap_err()
        };
        assert!(with(&["--fsync", "always"]).contains("--fsync"));
        assert!(with(&["--cluster", "2=127.0.0.1:8"]).contains("this node"));
        assert!(Cli::try_parse_from(["agora", "serve", "--node-id", "0"]).is_err(), "node ids start at 1");
        let single = serve_args(&["--data-dir", "/d", "--snapshot-after-entries", "100"]).resolve().unwrap_err();
        assert!(single.contains("--snapshot-after-entries is for cluster nodes"), "{single}");
        let zero = Cli::try_parse_from(["agora", "serve", "--snapshot-after-entries", "0"]);
        assert!(zero.is_err(), "a snapshot after no entries");
        for bad in ["1", "x=127.0.0.1:1", "0=127.0.0.1:1", "1=:1", "1=host", "1=host:port"] {
            let err = bad.parse::<config::Member>().unwrap_err();
            assert!(err.contains("ID=HOST:PORT"), "{bad}: {err}");
        }
    }
}
