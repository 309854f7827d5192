//! `agora bench`: a load generator in the spirit of `redis-benchmark`.
//!
//! It opens `-c` connections (one [`Manager`] each), runs `-P` workers per
//! connection — the client multiplexes, so `-P` requests are in flight on every
//! connection at once — and makes `-n` requests per test between them, recording
//! every request's latency in an HDR histogram ([`report`]). It prints requests per
//! second and p50/p99/p99.9/max, or JSON for scripts (`--json`).
//!
//! It works against a running server (`--address`, the authkey as the admin
//! subcommands find it) or starts its own in-process server (`--embedded`), and it
//! measures the floor — the same framing over the same transport echoed by a
//! server that does nothing ([`echo`]) — so agora's cost can be stated as a ratio.
//! `--idle N` holds N more connections open during the tests and reports what they
//! cost the server in memory.
//!
//! The client side runs on a runtime of its own (`--threads`, default one thread,
//! like `redis-benchmark`), apart from an embedded server's runtime.

pub mod echo;
pub mod raw;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_client::{Manager, ManagerOptions};
use agora_proto::Address;
use clap::Args;

use crate::cli::{parse_duration, ClientArgs};
use agora_server::config::Config;
use echo::EchoConn;
use report::{IdleReport, LatencyUs, Report, TestResult};
use workload::{Rng, Test, Worker};

/// How many connections are opened at once (handshakes in flight).
const CONNECT_CONCURRENCY: usize = 128;
/// How long after the time limit a test may take to wind down before it is abandoned.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// How many requests a worker of the typed client takes from the shared budget at a
/// time: one compare-and-swap on a counter every worker shares per request was 2 % of
/// the load generator's CPU at `-P 16` (BENCHMARKS.md, round 28); `redis-benchmark`
/// counts its requests without one. The run still makes exactly the requests asked
/// for.
const ALLOWANCE: u64 = 16;

/// One worker's share of a test's request budget, taken [`ALLOWANCE`] at a time.
struct Share<'a> {
    remaining: &'a AtomicU64,
    /// Taken from `remaining` and not made yet.
    allowance: u64,
}

impl<'a> Share<'a> {
    fn new(remaining: &'a AtomicU64) -> Share<'a> {
        Share { remaining, allowance: 0 }
    }

    /// Whether to make one more request: no once the budget is spent, or once `stop`
    /// (the time limit) is set — then what this worker took and did not make goes
    /// back, so that what is left says the run was cut short.
    fn next(&mut self, stop: bool) -> bool {
        if stop {
            self.remaining.fetch_add(std::mem::take(&mut self.allowance), Ordering::Relaxed);
            return false;
        }
        if self.allowance == 0 {
            self.allowance = echo::take(self.remaining, ALLOWANCE);
            if self.allowance == 0 {
                return false;
            }
        }
        self.allowance -= 1;
        true
    }
}

const BENCH_AFTER_HELP: &str = "\
TESTS (-t, comma-separated; default: ping,set,get,append,add,qput,qget,queue,lock,lock-contended,event):
  ping            a request that does nothing: agora's own round trip
  echo            the floor: raw frames echoed by a minimal server over the same transport
                  (--echo-address, else an in-process echo server of the same transport)
  set, get        dict set / get on random keys key:000000000000..(-r)   (Redis HSET / HGET)
  append          list append                                          (Redis RPUSH)
  add             atomic add on one counter                            (Redis INCR)
  qput, qget      queue put / get_nowait                               (Redis LPUSH / RPOP)
  queue           queue hand-off: put, then a blocking get (one sample = both)
  lock            acquire+release of a lock of the worker's own (uncontended)
  lock-contended  acquire+release, every worker on one lock (the sample includes the wait)
  event           time from set() to a parked wait() returning
  fill            insert exactly -r distinct keys, report server memory per entry, delete
  churn           a dict of -r keys (made afresh, not timed): delete the oldest key, insert
                  a new one (one sample = both); the dict is left with the newest -r keys
  churn-random    the same, the key deleted picked at random (its successor inserted)
  churn-grow      the same as churn, but two new keys inserted per sample (all three one
                  sample): the dict grows by a key per sample as its oldest go

EXAMPLES:
  agora bench --embedded -c 1 -n 100000 -t echo,ping,get
  agora bench -a 127.0.0.1:50000 --authkey-file key -c 50 -P 16 -t set,get --json
  agora bench --embedded --unix --idle 10000 -c 50 -t get
  agora bench --embedded --raw -c 50 -P 16 -t set,get   (a bare client, as redis-benchmark's)
  agora bench --serve-echo -a 127.0.0.1:50001        (run the floor's echo server)
  AGORA_AUTHKEY=key agora bench --serve-echo --echo-threads --echo-handshake -a unix:/tmp/echo.sock
                                                     (the floor for stock CPython clients:
                                                      bench/py_manager_bench.py --echo)";

/// Flags of `agora bench`.
#[derive(Debug, Args)]
#[command(after_help = BENCH_AFTER_HELP)]
pub struct BenchArgs {
    /// The server to load, and its authkey (ignored with --embedded).
    #[command(flatten)]
    pub client: ClientArgs,

    /// Start an in-process agora server on a loopback ephemeral port (or a Unix socket
    /// with --unix) instead of connecting to --address.
    #[arg(long)]
    pub embedded: bool,

    /// With --embedded: listen on a Unix socket in a temporary directory, not TCP.
    #[arg(long, requires = "embedded")]
    pub unix: bool,

    /// Concurrent connections (clients).
    #[arg(short = 'c', long = "clients", value_name = "N", default_value_t = 50)]
    pub clients: usize,

    /// Requests per test, shared by all connections.
    #[arg(short = 'n', long = "requests", value_name = "N", default_value_t = 100_000)]
    pub requests: u64,

    /// Requests in flight per connection (pipeline depth): each connection runs this
    /// many workers, whose calls the client multiplexes on the one connection.
    #[arg(short = 'P', long = "pipeline", value_name = "N", default_value_t = 1)]
    pub pipeline: usize,

    /// Tests to run, comma-separated, in this order (see TESTS below).
    #[arg(
        short = 't',
        long = "tests",
        value_name = "TESTS",
        value_delimiter = ',',
        default_value = "ping,set,get,append,add,qput,qget,queue,lock,lock-contended,event"
    )]
    pub tests: Vec<Test>,

    /// Size in bytes of the values stored (a string of that many 'x').
    #[arg(short = 'd', long = "data-size", value_name = "BYTES", default_value_t = 3)]
    pub data_size: usize,

    /// Key space: dict tests use random keys key:000000000000 .. key:(N-1); `fill`
    /// inserts exactly N keys.
    #[arg(short = 'r', long = "keyspace", value_name = "N", default_value_t = 10_000)]
    pub keyspace: u64,

    /// Threads of the client runtime (1, like redis-benchmark, leaves the other cores
    /// to the server).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Make each worker's calls from an OS thread of its own that waits for every
    /// answer, as a thread of a synchronous program does through the blocking client
    /// (`agora_client::blocking`): the connections then run on a multi-thread runtime
    /// of --threads workers, as the blocking client's run on its one. Without it the
    /// workers are tasks on the client runtime.
    #[arg(long, conflicts_with = "raw")]
    pub blocking: bool,

    /// Stop a test after this long even if not all requests were made (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub time_limit: Duration,

    /// Hold this many extra idle connections open during the tests, and report the
    /// server memory they take.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub idle: usize,

    /// Where the floor's echo server runs (`agora bench --serve-echo`); without it,
    /// `-t echo` starts one in this process.
    #[arg(long, value_name = "ADDR")]
    pub echo_address: Option<Address>,

    /// Do not benchmark: run the floor's echo server on --address until interrupted.
    #[arg(long, conflicts_with = "embedded")]
    pub serve_echo: bool,

    /// With --serve-echo: serve each connection from an OS thread of its own that
    /// blocks in recv(2) between frames, as CPython's manager serves one, instead of
    /// from a task on the runtime (the floor for stock CPython clients:
    /// bench/py_manager_bench.py --echo). There a CPython request naming `acquire`
    /// waits for one lock all connections share, and one naming `release` frees it:
    /// a lock's floor is a hand-off.
    #[arg(long, requires = "serve_echo")]
    pub echo_threads: bool,

    /// With --echo-threads: every connection first authenticates with the authkey
    /// (--authkey-file, $AGORA_AUTHKEY or the default key file), as a CPython client's
    /// connection to its manager does — the floor for proxy creation, whose every call
    /// is a new connection (bench/py_manager_bench.py --echo expects it).
    #[arg(long, requires = "echo_threads")]
    pub echo_handshake: bool,

    /// Load the server through a bare client shaped like redis-benchmark's (per
    /// connection: write -P pre-encoded requests, read -P replies) instead of the typed
    /// agora client; for comparing servers. Tests: ping, set, get, append, add, qput, qget.
    #[arg(long)]
    pub raw: bool,

    /// Print the results as JSON (for scripts).
    #[arg(long)]
    pub json: bool,

    /// Print one line per test.
    #[arg(short = 'q', long, conflicts_with = "json")]
    pub quiet: bool,
}

/// Runs `agora bench`.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.serve_echo {
        let model = match (args.echo_threads, args.echo_handshake) {
            (false, _) => EchoModel::Tasks,
            (true, false) => EchoModel::Threads { authkey: None },
            (true, true) => EchoModel::Threads { authkey: Some(load_authkey(&args.client)?) },
        };
        return serve_echo(&args.client.address, model).await;
    }
    if args.client.address.is_tls() && args.raw {
        return Err("--raw speaks plain TCP and Unix sockets only: drop --raw to measure a tls:// listener".into());
    }
    let options = args.client.manager_options()?;
    if args.clients == 0 || args.pipeline == 0 || args.keyspace == 0 || args.threads == 0 {
        return Err("-c, -P, -r and --threads must be at least 1".into());
    }
    if let Some(test) = args.tests.iter().find(|t| args.raw && **t != Test::Echo && !raw::supports(**t)) {
        return Err(format!("-t {} cannot run with --raw (only ping, set, get, append, add, qput, qget)", test.name()));
    }
    crate::allocator::keep_freed_memory();
    let needs_agora = args.idle > 0 || args.tests.iter().any(|t| *t != Test::Echo);
    let scratch = Scratch::new();
    // The server: embedded, or the one at --address.
    let mut embedded = None;
    let (address, authkey, server) = if args.embedded {
        let listen = if args.unix {
            Address::Unix(scratch.path("agora.sock").map_err(|e| e.to_string())?)
        } else {
            Address::Tcp { host: "127.0.0.1".into(), port: 0 }
        };
        let authkey: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        let mut config = Config::new(vec![listen], authkey.clone());
        config.limits.max_connections = config.limits.max_connections.max(args.clients + args.idle + 64);
        let server = agora_server::Server::bind(config).await.map_err(|e| e.to_string())?;
        let address = server.addresses()[0].clone();
        embedded = Some((server.shutdown_handle(), tokio::spawn(server.run())));
        (address.clone(), authkey, format!("embedded {}", describe(&address)))
    } else if needs_agora {
        let authkey = load_authkey(&args.client)?;
        (args.client.address.clone(), authkey, describe(&args.client.address))
    } else {
        (args.client.address.clone(), Vec::new(), "none (floor only)".into())
    };
    // The floor's echo server.
    let mut echo_task = None;
    let echo_address = match (&args.echo_address, args.tests.contains(&Test::Echo)) {
        (Some(a), _) => Some(a.clone()),
        (None, true) => {
            let listen = match address {
                Address::Tcp { .. } => Address::Tcp { host: "127.0.0.1".into(), port: 0 },
                _ => Address::Unix(scratch.path("echo.sock").map_err(|e| e.to_string())?),
            };
            let (listener, bound) = echo::bind(&listen).await.map_err(|e| format!("echo server: {e}"))?;
            echo_task = Some(tokio::spawn(echo::serve(listener)));
            Some(bound)
        }
        (None, false) => None,
    };
    let transport = match address {
        Address::Tcp { .. } => "tcp",
        Address::Tls { .. } => "tls",
        _ => "unix",
    };
    let mut report = Report {
        server,
        transport: transport.into(),
        clients: args.clients,
        requests: args.requests,
        pipeline: args.pipeline,
        data_size: args.data_size,
        keyspace: args.keyspace,
        threads: args.threads,
        client: if args.raw {
            "raw"
        } else if args.blocking {
            "blocking"
        } else {
            "typed"
        }
        .into(),
        idle: None,
        results: Vec::new(),
    };
    // The client side runs on a runtime (and thread) of its own.
    let plan = Plan { args, address: needs_agora.then_some(address), authkey, options, echo_address };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let report_in = report.clone();
    std::thread::Builder::new()
        .name("agora-bench-client".into())
        .spawn(move || {
            let runtime =
                client_runtime(plan.args.threads, plan.args.blocking.then_some(plan.args.clients * plan.args.pipeline));
            let result = runtime.and_then(|rt| rt.block_on(plan.run(report_in)));
            let _ = tx.send((result, plan.args.json));
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))?;
    let (result, json) = rx.await.map_err(|_| "the client thread panicked".to_owned())?;
    if let Some(task) = echo_task {
        task.abort();
    }
    if let Some((stop, task)) = embedded {
        stop.shutdown();
        let _ = task.await;
    }
    report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// The client's runtime: one thread (the default) or `threads` workers. With
/// `blocking_workers`, always multi-thread (the blocking client's kind: its workers
/// drive the connections while other threads wait in `block_on`), with room for that
/// many threads that block.
fn client_runtime(threads: usize, blocking_workers: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let built = match blocking_workers {
        None if threads == 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build(),
        Some(workers) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(workers.max(1))
            .enable_all()
            .build(),
    };
    built.map_err(|e| format!("cannot start the client runtime: {e}"))
}

fn describe(address: &Address) -> String {
    match address {
        Address::Tcp { .. } => format!("tcp {address}"),
        _ => format!("unix {address}"),
    }
}

/// The authkey as the admin subcommands find it.
fn load_authkey(args: &ClientArgs) -> Result<Vec<u8>, String> {
    args.resolve().map(|(_, authkey)| authkey)
}

/// How the floor's echo server serves its connections.
enum EchoModel {
    /// Tasks on the runtime, as agora's server.
    Tasks,
    /// A thread per connection, as CPython's manager; authenticating each connection
    /// first if there is a key.
    Threads { authkey: Option<Vec<u8>> },
}

/// `agora bench --serve-echo`: the floor's far end, until SIGINT/SIGTERM.
async fn serve_echo(address: &Address, model: EchoModel) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (
        signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
        signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
    );
    let (listener, bound) = echo::bind(address).await.map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let described = match &model {
        EchoModel::Tasks => "tasks on the runtime",
        EchoModel::Threads { authkey: None } => "a thread per connection",
        EchoModel::Threads { authkey: Some(_) } => "a thread per connection, each authenticated",
    };
    eprintln!("agora bench: echo server listening address={bound} ({described})");
    let serve = async {
        match model {
            EchoModel::Tasks => {
                echo::serve(listener).await;
                Ok(())
            }
            EchoModel::Threads { authkey } => Err(echo::serve_threads(listener, authkey).await),
        }
    };
    tokio::select! {
        served = serve => served.map_err(|e| format!("echo server: cannot serve on {bound}: {e}")),
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

/// A private scratch directory for Unix sockets, removed when dropped.
struct Scratch(Mutex<Option<PathBuf>>);

impl Scratch {
    fn new() -> Scratch {
        Scratch(Mutex::new(None))
    }

    fn path(&self, name: &str) -> std::io::Result<PathBuf> {
        let mut dir = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if dir.is_none() {
            let path =
                std::env::temp_dir().join(format!("agora-bench-{}-{}", std::process::id(), rand::random::<u32>()));
            std::fs::create_dir(&path)?;
            *dir = Some(path);
        }
        Ok(dir.as_ref().expect("just set").join(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What the client thread runs.
struct Plan {
    args: BenchArgs,
    address: Option<Address>,
    authkey: Vec<u8>,
    /// How clients connect (TLS settings for a tls:// address).
    options: ManagerOptions,
    echo_address: Option<Address>,
}

/// Opens `n` connections, at most [`CONNECT_CONCURRENCY`] handshakes at a time.
async fn connect_many(
    address: &Address,
    authkey: &[u8],
    options: &ManagerOptions,
    n: usize,
) -> Result<Vec<Manager>, String> {
    let mut managers = Vec::with_capacity(n);
    while managers.len() < n {
        let batch = (n - managers.len()).min(CONNECT_CONCURRENCY);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let (address, authkey, options) = (address.clone(), authkey.to_vec(), options.clone());
                tokio::spawn(async move { Manager::connect_to_with(&address, authkey, options).await })
            })
            .collect();
        for task in tasks {
            let manager = task.await.map_err(|e| e.to_string())?;
            managers.push(manager.map_err(|e| format!("connection {} of {n}: {e}", managers.len() + 1))?);
        }
    }
    Ok(managers)
}

/// Errors of one test, shared by its workers.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    fn add(&self, error: impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| error.to_string());
    }
}

impl Plan {
    async fn run(&self, mut report: Report) -> Result<Report, String> {
        let args = &self.args;
        let admin = match &self.address {
            Some(address) => {
                let options = self.options.clone();
                let admin = Manager::connect_to_with(address, &self.authkey, options).await;
                Some(admin.map_err(|e| format!("{address}: {e}"))?)
            }
            None => None,
        };
        let memory = || async {
            match &admin {
                Some(m) => m.stats().await.map(|s| s.memory_bytes).map_err(|e| format!("stats: {e}")),
                None => Ok(0),
            }
        };
        // Idle connections, held until the end.
        let mut _idle = Vec::new();
        if let (Some(address), true) = (&self.address, args.idle > 0) {
            let before = memory().await?;
            let start = Instant::now();
            _idle = connect_many(address, &self.authkey, &self.options, args.idle).await?;
            let connect_seconds = start.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stats = admin.as_ref().expect("agora tests have an admin connection").stats().await;
            let stats = stats.map_err(|e| format!("stats: {e}"))?;
            let idle = IdleReport {
                requested: args.idle,
                connected: _idle.len(),
                connect_seconds,
                server_memory_before: before,
                server_memory_after: stats.memory_bytes,
                bytes_per_connection: (stats.memory_bytes as f64 - before as f64) / _idle.len().max(1) as f64,
                server_sessions: stats.sessions,
            };
            if !args.json {
                report::print_idle(&idle);
            }
            report.idle = Some(idle);
        }
        let managers = match &self.address {
            Some(address) if !args.raw && args.tests.iter().any(|t| *t != Test::Echo) => {
                connect_many(address, &self.authkey, &self.options, args.clients).await?
            }
            _ => Vec::new(),
        };
        for &test in &args.tests {
            let result = if test == Test::Echo {
                let address = self.echo_address.as_ref().expect("an echo address when -t echo");
                self.run_echo(address).await?
            } else {
                let before = memory().await?;
                let mut result = if args.raw {
                    let admin = admin.as_ref().expect("agora tests have an admin connection");
                    self.run_raw(test, admin).await?
                } else {
                    self.run_agora(test, &managers).await?
                };
                let after = memory().await?;
                result.server_memory_before = Some(before);
                result.server_memory_after = Some(after);
                if test == Test::Fill {
                    result.bytes_per_entry = Some((after as f64 - before as f64) / result.requests.max(1) as f64);
                    if let Some(admin) = &admin {
                        admin.delete(workload::FILL).await.map_err(|e| format!("deleting {}: {e}", workload::FILL))?;
                    }
                }
                result
            };
            if args.quiet {
                let l = &result.latency_us;
                println!(
                    "{}: {:.1} requests/s, p50={:.1} µs p99={:.1} µs{}",
                    result.test,
                    result.requests_per_sec,
                    l.p50,
                    l.p99,
                    if result.errors > 0 { format!(" ({} errors)", result.errors) } else { String::new() }
                );
            } else if !args.json {
                report::print_result(&result, &report);
            }
            report.results.push(result);
        }
        Ok(report)
    }

    fn result(&self, test: Test, requests: u64, seconds: f64, h: &hdrhistogram::Histogram<u64>) -> TestResult {
        TestResult {
            test: test.name().into(),
            what: test.what().into(),
            requests,
            errors: 0,
            first_error: None,
            timed_out: false,
            seconds,
            requests_per_sec: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
            latency_us: LatencyUs::of(h),
            server_memory_before: None,
            server_memory_after: None,
            bytes_per_entry: None,
        }
    }

    /// The floor: `-c` raw connections to the echo server, lockstep batches of `-P`.
    async fn run_echo(&self, address: &Address) -> Result<TestResult, String> {
        let args = &self.args;
        let mut conns = Vec::with_capacity(args.clients);
        for _ in 0..args.clients {
            conns.push(EchoConn::connect(address).await.map_err(|e| format!("echo server {address}: {e}"))?);
        }
        // About the size of a dict set request with this value size.
        let body: Arc<[u8]> = vec![0x94; 40 + args.data_size].into();
        let remaining = Arc::new(AtomicU64::new(args.requests));
        let latencies = Arc::new(report::Latencies::new());
        let failures = Arc::new(Failures::default());
        let start = Instant::now();
        let deadline = start + args.time_limit;
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let (body, remaining, latencies, failures) =
                    (body.clone(), remaining.clone(), latencies.clone(), failures.clone());
                let pipeline = args.pipeline;
                tokio::spawn(async move {
                    if let Err(e) = conn.run(&body, pipeline, &remaining, deadline, latencies, i).await {
                        failures.add(e);
                    }
                })
            })
            .collect();
        let timed_out = join_all(tasks, deadline).await;
        let seconds = start.elapsed().as_secs_f64();
        let h = latencies.merged();
        let mut result = self.result(Test::Echo, h.len(), seconds, &h);
        result.errors = failures.count.load(Ordering::Relaxed);
        result.first_error = failures.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.timed_out = timed_out || remaining.load(Ordering::Relaxed) > 0;
        Ok(result)
    }

    /// One agora test through bare connections (`--raw`).
    async fn run_raw(&self, test: Test, admin: &Manager) -> Result<TestResult, String> {
        let args = &self.args;
        let address = self.address.clone().expect("an agora address");
        // Create the object with the right constructor arguments; held for the test.
        let _object = match test {
            Test::Ping => None,
            _ => Some(Worker::prepare(test, admin, args.keyspace).await.map_err(|e| format!("{}: {e}", test.name()))?),
        };
        let remaining = Arc::new(AtomicU64::new(args.requests));
        let latencies = Arc::new(report::Latencies::new());
        let failures = Arc::new(Failures::default());
        let stop = Arc::new(AtomicBool::new(false));
        let value = "x".repeat(args.data_size);
        let start = Instant::now();
        let deadline = start + args.time_limit;
        let timer = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
                stop.store(true, Ordering::Relaxed);
            }
        });
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                let (remaining, latencies, failures, stop, value, address, authkey) = (
                    remaining.clone(),
                    latencies.clone(),
                    failures.clone(),
                    stop.clone(),
                    value.clone(),
                    address.clone(),
                    self.authkey.clone(),
                );
                let (pipeline, keyspace) = (args.pipeline, args.keyspace);
                tokio::spawn(async move {
                    let run = raw::RawRun {
                        test,
                        pipeline,
                        remaining: &remaining,
                        stop: &stop,
                        latencies: &latencies,
                        worker: i,
                        keyspace,
                        value: &value,
                    };
                    if let Err(e) = run.run(&address, &authkey).await {
                        failures.add(e);
                    }
                })
            })
            .collect();
        let timed_out = join_all(tasks, deadline).await;
        let seconds = start.elapsed().as_secs_f64();
        timer.abort();
        let h = latencies.merged();
        let mut result = self.result(test, h.len(), seconds, &h);
        result.what = format!("{} [raw client]", test.what());
        result.errors = failures.count.load(Ordering::Relaxed);
        result.first_error = failures.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.timed_out = timed_out || (remaining.load(Ordering::Relaxed) > 0 && result.errors == 0);
        Ok(result)
    }

    /// One agora test: `-P` workers on each connection (tasks, or threads with `--blocking`).
    async fn run_agora(&self, test: Test, managers: &[Manager]) -> Result<TestResult, String> {
        let args = &self.args;
        let value = "x".repeat(args.data_size);
        if let (Test::Churn | Test::ChurnRandom | Test::ChurnGrow, Some(manager)) = (test, managers.first()) {
            workload::prepare_churn(manager, args.keyspace, &value)
                .await
                .map_err(|e| format!("filling {}: {e}", workload::CHURN))?;
        }
        let mut workers = Vec::with_capacity(managers.len() * args.pipeline);
        for manager in managers {
            for _ in 0..args.pipeline {
                let worker = Worker::prepare(test, manager, args.keyspace).await;
                workers.push(worker.map_err(|e| format!("{}: {e}", test.name()))?);
            }
        }
        let total = if test == Test::Fill { args.keyspace } else { args.requests };
        let remaining = Arc::new(AtomicU64::new(total));
        let next_key = Arc::new(AtomicU64::new(0));
        // churn-random: each of the -r slots' current key, as a generation (the key of
        // slot s at generation g is numbered s + g × -r).
        let slots = if test == Test::ChurnRandom { args.keyspace as usize } else { 0 };
        let generations: Arc<Vec<AtomicU64>> = Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
        let latencies = Arc::new(report::Latencies::new());
        let failures = Arc::new(Failures::default());
        let keyspace = args.keyspace;
        let start = Instant::now();
        let deadline = start + args.time_limit;
        // A flag, not a clock read per request: the clock shows up in profiles.
        let stop = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
                stop.store(true, Ordering::Relaxed);
            }
        });
        let tasks: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(i, worker)| {
                let (remaining, next_key, latencies, failures, value) =
                    (remaining.clone(), next_key.clone(), latencies.clone(), failures.clone(), value.clone());
                let generations = generations.clone();
                let stop = stop.clone();
                let work = async move {
                    let mut recorder = latencies.recorder(i);
                    let mut rng = Rng::new(i as u64 + 1);
                    let mut share = Share::new(&remaining);
                    let next = |key: &mut String| {
                        if !share.next(stop.load(Ordering::Relaxed)) {
                            return false;
                        }
                        match test {
                            Test::Fill | Test::Churn | Test::ChurnGrow => {
                                workload::write_key(key, next_key.fetch_add(1, Ordering::Relaxed))
                            }
                            Test::Set | Test::Get => workload::write_key(key, rng.below(keyspace)),
                            Test::ChurnRandom => {
                                let slot = rng.below(keyspace);
                                let generation = generations[slot as usize].fetch_add(1, Ordering::Relaxed);
                                workload::write_key(key, slot + generation * keyspace)
                            }
                            _ => {}
                        }
                        true
                    };
                    if let Err(e) = worker.drive(&value, next, |ns| recorder.record_ns(ns)).await {
                        failures.add(e);
                    }
                };
                if args.blocking {
                    // A thread of its own that waits in `block_on` for each call, as
                    // `agora_client::blocking` makes its caller's thread do. An abort
                    // cannot reach it: it gives up by itself when `join_all` would.
                    let runtime = tokio::runtime::Handle::current();
                    let limit = tokio::time::Instant::from_std(deadline + WIND_DOWN);
                    tokio::task::spawn_blocking(move || {
                        let _ = runtime.block_on(tokio::time::timeout_at(limit, work));
                    })
                } else {
                    tokio::spawn(work)
                }
            })
            .collect();
        let timed_out = join_all(tasks, deadline).await;
        let seconds = start.elapsed().as_secs_f64();
        timer.abort();
        let h = latencies.merged();
        let mut result = self.result(test, h.len(), seconds, &h);
        result.errors = failures.count.load(Ordering::Relaxed);
        result.first_error = failures.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.timed_out = timed_out || (remaining.load(Ordering::Relaxed) > 0 && result.errors == 0);
        Ok(result)
    }
}

/// Waits for every task, abandoning them [`WIND_DOWN`] after `deadline`; true if any
/// had to be abandoned.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>, deadline: Instant) -> bool {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let all = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    let limit = tokio::time::Instant::from_std(deadline + WIND_DOWN);
    if tokio::time::timeout_at(limit, all).await.is_err() {
        aborts.iter().for_each(|a| a.abort());
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{Share, ALLOWANCE};
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn workers_make_exactly_the_budget_between_them() {
        let remaining = AtomicU64::new(2 * ALLOWANCE + 3);
        let (mut a, mut b) = (Share::new(&remaining), Share::new(&remaining));
        let mut made = 0;
        loop {
            let (more_a, more_b) = (a.next(false), b.next(false));
            made += u64::from(more_a) + u64::from(more_b);
            if !more_a && !more_b {
                break;
            }
        }
        assert_eq!(made, 2 * ALLOWANCE + 3);
        assert_eq!(remaining.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_worker_stopped_by_the_time_limit_gives_back_what_it_did_not_make() {
        // The budget is all taken, but not all made: the run must not look finished.
        let remaining = AtomicU64::new(ALLOWANCE);
        let mut share = Share::new(&remaining);
        assert!(share.next(false));
        assert_eq!(remaining.load(Ordering::Relaxed), 0);
        assert!(!share.next(true));
        assert_eq!(remaining.load(Ordering::Relaxed), ALLOWANCE - 1);
        assert!(!share.next(true), "stopped stays stopped");
        assert_eq!(remaining.load(Ordering::Relaxed), ALLOWANCE - 1, "given back once");
    }
}
