//! Support for agora's integration tests: start the real `agora` binary on an
//! ephemeral TCP port or a temporary Unix socket, talk to it raw, and clean up.
//!
//! [`Server`] kills its process (and removes its temporary directory) when dropped, so
//! a failing test leaves nothing running.
//!
//! Fault-injection tests (links cut and slowed between cluster peers, client histories
//! checked afterwards) have modules of their own:
//!
//! - [`history`] owns the recorded history of client operations (call, return,
//!   outcome: ok, failed or unknown) that every checker reads.
//! - [`linearizability`] owns the Wing–Gong/Lowe linearizability checker, its
//!   [`Model`](linearizability::Model) trait and the dict/counter model checked per key.
//! - [`invariants`] owns the queue (no loss, no duplicate delivery after an ack, no
//!   phantom items) and lock (fencing-token order, mutual exclusion) checks.
//! - [`faultproxy`] owns the TCP proxy that partitions and delays links between peers.
//! - [`cluster`] owns a cluster of real `agora serve` nodes whose Raft traffic all
//!   passes fault proxies: kill, pause, isolate, heal, restart.

pub mod cluster;
pub mod faultproxy;
pub mod history;
pub mod invariants;
pub mod linearizability;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The authkey test servers use unless a test says otherwise.
pub const AUTHKEY: &[u8] = b"agora-test-key";

/// How long a test waits for anything before declaring a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// The `agora` binary, built (once per test process) from this workspace.
pub fn agora_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-binary> → target/<profile>/agora
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "-p", "agora", "--bin", "agora"]);
        if profile == "release" {
            build.arg("--release");
        }
        let status = build
            .env("CARGO_TARGET_DIR", profile_dir.parent().expect("target dir"))
            .status()
            .expect("run cargo build for the agora binary");
        assert!(status.success(), "building the agora binary failed");
        profile_dir.join("agora")
    })
    .clone()
}

/// A running `agora serve` process.
pub struct Server {
    child: Child,
    /// The address clients connect to (`127.0.0.1:PORT` or `unix:/…`).
    pub address: String,
    /// The authkey it accepts.
    pub authkey: Vec<u8>,
    /// Scratch directory (Unix socket, key files); removed on drop.
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

/// How to start a test server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Listen on a Unix socket in the scratch directory instead of TCP.
    pub unix: bool,
    /// Extra `agora serve` flags.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Do not pass any authkey (the server generates one).
    pub no_authkey: bool,
}

impl Server {
    /// `agora serve` on an ephemeral TCP port.
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    /// `agora serve` on a Unix socket in a temporary directory.
    pub fn start_unix() -> Server {
        Server::start_with(ServerOptions { unix: true, ..Default::default() })
    }

    /// `agora serve` with options; waits until it listens.
    pub fn start_with(options: ServerOptions) -> Server {
        Server::spawn(None, options, |_| {})
    }

    /// `agora serve --listen LISTEN` with options (`options.unix` is ignored): for a
    /// server that must come back on the same address, e.g. restarted on the same
    /// `--data-dir`. Waits until it listens.
    pub fn start_at(listen: &str, options: ServerOptions) -> Server {
        Server::spawn(Some(listen), options, |_| {})
    }

    /// [`Server::start_at`], or the server's log if it stopped before listening (its
    /// address was taken meanwhile, say).
    pub fn try_start_at(listen: &str, options: ServerOptions) -> Result<Server, String> {
        Server::try_spawn(Some(listen), options, |_| {})
    }

    /// [`Server::start_at`], letting `customize` change the command before it is
    /// spawned (e.g. a `pre_exec` that sets resource limits in the child).
    pub fn start_at_with(listen: &str, options: ServerOptions, customize: impl FnOnce(&mut Command)) -> Server {
        Server::spawn(Some(listen), options, customize)
    }

    fn spawn(listen: Option<&str>, options: ServerOptions, customize: impl FnOnce(&mut Command)) -> Server {
        Server::try_spawn(listen, options, customize)
            .unwrap_or_else(|log| panic!("agora did not start listening; log:\n{log}"))
    }

    fn try_spawn(
        listen: Option<&str>,
        options: ServerOptions,
        customize: impl FnOnce(&mut Command),
    ) -> Result<Server, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = match listen {
            Some(listen) => listen.to_owned(),
            None if options.unix => format!("unix:{}", dir.path().join("agora.sock").display()),
            None => "127.0.0.1:0".to_owned(),
        };
        let mut cmd = Command::new(agora_bin());
        cmd.args(["serve", "--listen", &listen, "--log-level", "debug"]).args(&options.args);
        cmd.env_remove("AGORA_AUTHKEY").env_remove("AGORA_LISTEN").env("XDG_RUNTIME_DIR", dir.path());
        if !options.no_authkey {
            cmd.env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap());
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        customize(&mut cmd);
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn agora");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log_sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening address=").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let mut log = log_sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match rx.recv_timeout(HANG_GUARD) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(log.lock().unwrap().clone());
            }
        };
        let authkey = if options.no_authkey { Vec::new() } else { AUTHKEY.to_vec() };
        Ok(Server { child, address, authkey, dir, log })
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the server's log contains `needle` (or panics after the hang guard).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + HANG_GUARD;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "log never contained {needle:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address (`host:port`) of the metrics endpoint of a server started with
    /// `--metrics`, once it serves it (from its log).
    pub fn metrics_endpoint(&self) -> String {
        const SERVING: &str = "serving metrics at http://";
        self.wait_for_log(SERVING);
        let log = self.log();
        log.split(SERVING).nth(1).and_then(|s| s.split("/metrics").next()).expect("the address is logged").to_owned()
    }

    /// The value of the series `name` (with its labels, if it has any) at the server's
    /// metrics endpoint (a server started with `--metrics`), scraped now.
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_if_shown(name).unwrap_or_else(|| panic!("no {name}"))
    }

    /// [`Server::metric`], or `None` if the endpoint does not show the series (yet: a
    /// method's series appear once it was called).
    pub fn metric_if_shown(&self, name: &str) -> Option<f64> {
        let mut stream =
            std::net::TcpStream::connect(self.metrics_endpoint()).expect("connect to the metrics endpoint");
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agora\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let line = response.lines().find(|line| line.split(' ').next() == Some(name))?;
        Some(line.rsplit(' ').next().unwrap().parse().unwrap())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's resident size in bytes (`VmRSS` in `/proc/PID/status`).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed, no handler runs)
    /// and reaps it; returns its exit status.
    pub fn kill9(&mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed server")
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit; returns its
    /// exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// A raw socket to the server, for speaking bytes by hand.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(&self.address)
    }

    /// A raw socket with a native session open on it (authenticated with the server's
    /// authkey, its Hello sent as "raw", the Welcome read).
    pub fn raw_session(&self) -> RawConn {
        let mut raw = self.raw();
        raw.native_session(&self.authkey, "raw");
        raw
    }

    /// Connects an async client with the right authkey.
    pub async fn client(&self) -> agora_client::Manager {
        agora_client::Manager::connect(&self.address, &self.authkey).await.expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw stream to a server (TCP or Unix), with frame helpers.
pub enum RawConn {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// Unix.
    Unix(std::os::unix::net::UnixStream),
}

impl RawConn {
    /// Connects to a test server address.
    pub fn connect(address: &str) -> RawConn {
        let conn = match address.strip_prefix("unix:") {
            Some(path) => RawConn::Unix(std::os::unix::net::UnixStream::connect(path).expect("connect unix")),
            None => RawConn::Tcp(std::net::TcpStream::connect(address).expect("connect tcp")),
        };
        conn.set_timeout(HANG_GUARD);
        conn
    }

    fn set_timeout(&self, t: Duration) {
        match self {
            RawConn::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
            RawConn::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            RawConn::Tcp(s) => s.write_all(bytes),
            RawConn::Unix(s) => s.write_all(bytes),
        }
    }

    /// Writes one frame.
    pub fn send_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        agora_proto::frame::encode(body, &mut out);
        self.send(&out)
    }

    /// Reads one frame body; `None` at EOF.
    pub fn recv_frame(&mut self) -> Option<Vec<u8>> {
        let mut header = [0u8; 4];
        self.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes(header) as usize;
        let mut body = vec![0; len];
        self.read_exact(&mut body).ok()?;
        Some(body)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            RawConn::Tcp(s) => s.read_exact(buf),
            RawConn::Unix(s) => s.read_exact(buf),
        }
    }

    /// Reads until EOF; returns what came (the connection was closed by the server).
    pub fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            RawConn::Tcp(s) => s.read_to_end(&mut out)?,
            RawConn::Unix(s) => s.read_to_end(&mut out)?,
        };
        Ok(out)
    }

    /// Runs the client side of the handshake with `authkey`; true if welcomed.
    pub fn handshake(&mut self, authkey: &[u8]) -> bool {
        let policy = agora_proto::auth::Policy::default();
        let challenge = self.recv_frame().expect("challenge");
        let answer = agora_proto::auth::answer(authkey, &challenge, policy).expect("answer");
        self.send_frame(&answer).unwrap();
        if self.recv_frame().as_deref() != Some(agora_proto::auth::WELCOME) {
            return false;
        }
        let ours = agora_proto::auth::Challenge::new();
        self.send_frame(&ours.frame()).unwrap();
        let theirs = self.recv_frame().expect("server answer");
        assert!(ours.verify(authkey, &theirs, policy).is_ok(), "server proved the key");
        self.send_frame(agora_proto::auth::WELCOME).unwrap();
        true
    }

    /// Authenticates with `authkey` and opens a native session as `client` (its
    /// Hello); the server's Welcome. Panics if either step fails.
    pub fn native_session(&mut self, authkey: &[u8], client: &str) -> agora_proto::native::Welcome {
        use agora_proto::native;
        assert!(self.handshake(authkey), "the server refused the authkey");
        let mut hello = Vec::new();
        native::encode(&native::Hello::new(client), &mut hello).unwrap();
        self.send_frame(&hello).unwrap();
        native::decode(&self.recv_frame().expect("a welcome")).expect("a welcome")
    }
}

/// The path of the example program `name` (from `examples/`), built once per test
/// process from this workspace, in the test's own profile.
pub fn example_binary(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/<test-binary> → target/<profile>/examples
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "-p", "agora-examples", "--examples"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .env("CARGO_TARGET_DIR", profile_dir.parent().expect("target dir"))
            .status()
            .expect("run cargo build for the examples");
        assert!(status.success(), "building the examples failed");
        profile_dir.join("examples")
    });
    dir.join(name)
}

/// A deterministic generator (splitmix64) for the random parts of tests: a seed makes
/// a failure reproduce.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
