//! The same operations against a 3-node agora cluster and a 3-node etcd cluster
//! (bench/etcd.sh starts both and calls this binary once per row).
//!
//!     agora-etcd-bench run --target etcd --address 127.0.0.1:2379 -c 50 -P 16 -n 100000 -t put
//!     agora-etcd-bench failover --target agora --addresses a,b,c --kill-pid 1234
//!
//! `run` prints one line, `ROW target CxP test req/s p50_us p99_us ok/total errors violations`:
//! `ok` counts successful compare-and-sets (cas) and operations otherwise; `violations`
//! counts lock grants whose fencing token was not larger than the one before on that
//! lock (expected 0). `failover` prints `FAILOVER target gap_ms`.
//!
//! A client is one connection (one etcd gRPC channel, one agora Manager); with
//! `-P` > 1 that many workers share it, each with one request in flight. The agora
//! authkey is read from the file AGORA_AUTHKEY_FILE names, as `agora bench` does.

mod agora;
mod etcd;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one test at one shape and prints its ROW line.
    Run {
        #[arg(long, value_enum)]
        target: Target,
        /// The node to talk to (host:port): the leader.
        #[arg(long)]
        address: String,
        /// Connections.
        #[arg(short, long, default_value_t = 1)]
        clients: usize,
        /// Workers per connection, each with one request in flight.
        #[arg(short = 'P', long, default_value_t = 1)]
        inflight: usize,
        /// Operations in all (split evenly over the workers).
        #[arg(short = 'n', long, default_value_t = 2000)]
        requests: u64,
        #[arg(short, long, value_enum)]
        test: Test,
        /// Tokio worker threads of this client process.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Writes in a loop through any node, SIGKILLs `--kill-pid` (the leader) after one
    /// second of acknowledged writes, and prints the gap from the last acknowledged
    /// write before the kill to the first after it.
    Failover {
        #[arg(long, value_enum)]
        target: Target,
        /// Every node's client address, comma separated.
        #[arg(long, value_delimiter = ',')]
        addresses: Vec<String>,
        #[arg(long)]
        kill_pid: u32,
        /// A write not acknowledged within this long is abandoned and sent again.
        #[arg(long, default_value_t = 250)]
        op_timeout_ms: u64,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Target {
    Agora,
    Etcd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Test {
    /// Writes each of the KEYS keys once (setup for `get`; not a measurement).
    Fill,
    Put,
    Get,
    Cas,
    /// Acquire + release of a lock of the worker's own.
    Lock,
    /// Acquire + release, every worker on one lock.
    LockContended,
}

impl Test {
    fn name(self) -> &'static str {
        match self {
            Test::Fill => "fill",
            Test::Put => "put",
            Test::Get => "get",
            Test::Cas => "cas",
            Test::Lock => "lock",
            Test::LockContended => "lock-contended",
        }
    }
}

/// How many keys `put` and `get` choose from.
pub const KEYS: u64 = 10_000;

pub fn key(n: u64) -> String {
    format!("key:{n:05}")
}

/// A 3-byte value made of `n`.
pub fn value(n: u64) -> Vec<u8> {
    vec![n as u8, (n >> 8) as u8, (n >> 16) as u8]
}

/// What one worker needs to know to choose its operations.
pub struct Slot {
    /// The worker's index, unique across all clients.
    pub worker: usize,
    /// The lock it uses (shared by every worker in `lock-contended`).
    pub lock: Arc<Fencing>,
    /// How many workers there are in all.
    pub workers: usize,
    rng: u64,
}

impl Slot {
    /// The key the worker's `i`th `fill` writes: the keys are dealt out round robin.
    pub fn fill_key(&self, i: u64) -> Option<String> {
        let n = i * self.workers as u64 + self.worker as u64;
        (n < KEYS).then(|| key(n))
    }

    /// The next of KEYS keys, chosen at random (xorshift; reproducible per worker).
    pub fn random_key(&mut self) -> String {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        key(self.rng % KEYS)
    }
}

/// One lock name and the newest fencing token a holder of it has seen.
pub struct Fencing {
    pub name: String,
    newest: Mutex<u64>,
    violations: AtomicU64,
}

impl Fencing {
    fn new(name: String) -> Arc<Fencing> {
        Arc::new(Fencing { name, newest: Mutex::new(0), violations: AtomicU64::new(0) })
    }

    /// Called by the holder while it holds the lock: counts a violation unless the
    /// token is larger than every token seen before on this lock.
    pub fn check(&self, token: u64) {
        let mut newest = self.newest.lock().unwrap();
        if token <= *newest {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        *newest = (*newest).max(token);
    }
}

/// One worker of a test: one request in flight at a time.
pub trait Worker: Send + 'static {
    /// One operation; `Ok(false)` is an operation that ran but did not take effect
    /// (a compare-and-set that found another value).
    fn op(&mut self, i: u64) -> impl Future<Output = Result<bool>> + Send;
}

struct Outcome {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
}

/// Runs `per_worker` operations on every worker at once; returns the merged latencies
/// and the wall time from the common start to the last worker's end.
async fn drive<W: Worker>(workers: Vec<W>, per_worker: u64) -> (Outcome, Duration) {
    let start = Arc::new(tokio::sync::Barrier::new(workers.len() + 1));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let start = start.clone();
            tokio::spawn(async move {
                let mut out = Outcome { latency: Histogram::new(3).unwrap(), ok: 0, errors: 0 };
                start.wait().await;
                for i in 0..per_worker {
                    let t = Instant::now();
                    match w.op(i).await {
                        Ok(true) => out.ok += 1,
                        Ok(false) => {}
                        Err(e) => {
                            if out.errors == 0 {
                                eprintln!("error: {e}");
                            }
                            out.errors += 1;
                        }
                    }
                    out.latency.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                }
                out
            })
        })
        .collect();
    start.wait().await;
    let t = Instant::now();
    let mut all = Outcome { latency: Histogram::new(3).unwrap(), ok: 0, errors: 0 };
    for task in tasks {
        let out = task.await.expect("a worker panicked");
        all.latency.add(&out.latency).unwrap();
        all.ok += out.ok;
        all.errors += out.errors;
    }
    (all, t.elapsed())
}

/// The workers' slots: `clients` × `inflight` of them, numbered client by client.
fn slots(clients: usize, inflight: usize, test: Test) -> Vec<Vec<Slot>> {
    let shared = Fencing::new("lock:contended".into());
    (0..clients)
        .map(|c| {
            (0..inflight)
                .map(|p| {
                    let worker = c * inflight + p;
                    let lock = match test {
                        Test::LockContended => shared.clone(),
                        _ => Fencing::new(format!("lock:{worker}")),
                    };
                    let rng = 0x9E37_79B9_7F4A_7C15 ^ ((worker as u64 + 1) * 0x2545_F491);
                    Slot { worker, lock, workers: clients * inflight, rng }
                })
                .collect()
        })
        .collect()
}

async fn run(
    target: Target,
    address: String,
    clients: usize,
    inflight: usize,
    requests: u64,
    test: Test,
) -> Result<()> {
    let slots = slots(clients, inflight, test);
    let locks: Vec<Arc<Fencing>> = slots.iter().flatten().map(|s| s.lock.clone()).collect();
    let workers = (clients * inflight) as u64;
    let per_worker = if test == Test::Fill { KEYS.div_ceil(workers) } else { (requests / workers).max(1) };
    let (out, elapsed) = match target {
        Target::Etcd => drive(etcd::workers(&address, slots, test).await?, per_worker).await,
        Target::Agora => drive(agora::workers(&address, slots, test).await?, per_worker).await,
    };
    let total = per_worker * workers;
    let violations: u64 = if matches!(test, Test::LockContended) {
        locks[0].violations.load(Ordering::Relaxed)
    } else {
        locks.iter().map(|l| l.violations.load(Ordering::Relaxed)).sum()
    };
    println!(
        "ROW {target:?} {clients}x{inflight} {} {:.0} {} {} {}/{total} {} {violations}",
        test.name(),
        total as f64 / elapsed.as_secs_f64(),
        out.latency.value_at_quantile(0.50),
        out.latency.value_at_quantile(0.99),
        out.ok,
        out.errors,
    );
    Ok(())
}

async fn failover(target: Target, addresses: Vec<String>, kill_pid: u32, op_timeout: Duration) -> Result<()> {
    let mut writer = match target {
        Target::Etcd => Writer::Etcd(Box::new(etcd::failover_client(&addresses).await?)),
        Target::Agora => Writer::Agora(agora::failover_dict(&addresses).await?),
    };
    let mut first_ack: Option<Instant> = None;
    let mut last_before: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    let mut first_after: Option<Instant> = None;
    let mut failures = 0u64;
    for i in 0u64.. {
        if killed_at.is_none() && first_ack.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            let status = std::process::Command::new("kill").args(["-KILL", &kill_pid.to_string()]).status()?;
            if !status.success() {
                return Err(format!("kill -KILL {kill_pid} failed").into());
            }
            killed_at = Some(Instant::now());
        }
        if let Some(killed) = killed_at {
            if first_after.is_some() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                return Err("no write acknowledged within 30 s of the kill".into());
            }
        }
        match tokio::time::timeout(op_timeout, writer.put(i)).await {
            Ok(Ok(())) => {
                let now = Instant::now();
                first_ack.get_or_insert(now);
                match killed_at {
                    None => last_before = Some(now),
                    Some(_) => first_after = Some(now),
                }
            }
            _ => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let (before, after) = (last_before.unwrap(), first_after.unwrap());
    println!(
        "FAILOVER {target:?} {:.0} ms (writes abandoned or failed: {failures}; op timeout {} ms)",
        (after - before).as_secs_f64() * 1000.0,
        op_timeout.as_millis()
    );
    Ok(())
}

enum Writer {
    Etcd(Box<etcd_client::Client>),
    Agora(agora_client::Dict<String, Vec<u8>>),
}

impl Writer {
    async fn put(&mut self, i: u64) -> Result<()> {
        match self {
            Writer::Etcd(client) => client.put(key(i % 100), value(i), None).await.map(drop)?,
            Writer::Agora(dict) => dict.insert(&key(i % 100), &value(i)).await?,
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run { threads, .. } => *threads,
        Command::Failover { .. } => 1,
    };
    // As `agora bench` does: one thread is a current-thread runtime. (On a multi-thread
    // runtime, even with one worker, some agora calls stalled until the client's next
    // heartbeat, 2.5 s later, at 50 x 16; see bench/results/etcd.md.)
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run { target, address, clients, inflight, requests, test, .. } => {
                run(target, address, clients, inflight, requests, test).await
            }
            Command::Failover { target, addresses, kill_pid, op_timeout_ms } => {
                failover(target, addresses, kill_pid, Duration::from_millis(op_timeout_ms)).await
            }
        }
    })
}
