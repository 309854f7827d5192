//! Benchmarks for queues against the real `agora` binary over loopback TCP:
//!
//! - **hand-off latency**: this process and an echo process (`agora-queue-worker
//!   echo`) ping-pong one item through two queues; each iteration is two put→get
//!   hand-offs between processes (a parked `get` completed by the other side's `put`),
//!   so one hand-off takes half the reported time;
//! - **streaming throughput**: one client puts and another gets (two connections),
//!   each with 32 calls in flight, unbounded and bounded (maxsize 64); leased
//!   consumption (get_leased + ack) for comparison.
//!
//! `cargo bench -p agora-tests --bench queue`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::Queue;
use agora_tests::Server;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn handoff_latency(c: &mut Criterion) {
    let server = Server::start();
    let rt = runtime();
    let m = rt.block_on(server.client());
    let (ping, pong) =
        rt.block_on(async { (m.queue::<u64>("ping", 0).await.unwrap(), m.queue::<u64>("pong", 0).await.unwrap()) });
    let mut echo = Command::new(env!("CARGO_BIN_EXE_agora-queue-worker"))
        .args([&server.address, "echo", "ping", "pong"])
        .env("AGORA_AUTHKEY", std::str::from_utf8(&server.authkey).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the echo process");
    let mut group = c.benchmark_group("queue hand-off");
    group.bench_function("put→get ping-pong with another process (2 hand-offs)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    // In order on one connection: the get parks until the echo's put.
                    let (put, got) = tokio::join!(ping.put(&i), pong.get());
                    put.unwrap();
                    assert_eq!(got.unwrap(), i);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("put+get in one client (2 round trips, for reference)", |b| {
        let q = rt.block_on(m.new_queue::<u64>(0)).unwrap();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    q.put(&i).await.unwrap();
                    q.get().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("ping (1 round trip, for reference)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    m.ping().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(ping.shutdown(false)).unwrap();
    let _ = echo.wait();
}

const ITEMS: u64 = 10_000;
const IN_FLIGHT: u64 = 32;

/// Moves `ITEMS` items from `producer` to `consumer`, `IN_FLIGHT` calls at a time on
/// each side; returns how long it took.
async fn stream(producer: &Queue<u64>, consumer: &Queue<u64>, leased: bool) -> Duration {
    let start = Instant::now();
    let puts: Vec<_> = (0..IN_FLIGHT)
        .map(|k| {
            let q = producer.clone();
            tokio::spawn(async move {
                for i in (k..ITEMS).step_by(IN_FLIGHT as usize) {
                    q.put(&i).await.unwrap();
                }
            })
        })
        .collect();
    let gets: Vec<_> = (0..IN_FLIGHT)
        .map(|k| {
            let q = consumer.clone();
            tokio::spawn(async move {
                for _ in (k..ITEMS).step_by(IN_FLIGHT as usize) {
                    if leased {
                        q.get_leased(Duration::from_secs(30)).await.unwrap().ack().await.unwrap();
                    } else {
                        q.get().await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in puts.into_iter().chain(gets) {
        task.await.unwrap();
    }
    start.elapsed()
}

fn streaming(c: &mut Criterion) {
    let server = Server::start();
    let rt = runtime();
    let (a, b) = rt.block_on(async { (server.client().await, server.client().await) });
    let mut group = c.benchmark_group("queue streaming");
    group.throughput(Throughput::Elements(ITEMS)).sample_size(10).measurement_time(Duration::from_secs(10));
    for (label, maxsize, leased) in
        [("unbounded", 0, false), ("maxsize 64", 64, false), ("unbounded, get_leased + ack", 0, true)]
    {
        let name = format!("bench-{}", label.replace(' ', "-"));
        let (producer, consumer) = rt.block_on(async {
            (a.queue::<u64>(&name, maxsize).await.unwrap(), b.queue::<u64>(&name, maxsize).await.unwrap())
        });
        group.bench_function(format!("{ITEMS} items, two clients, {IN_FLIGHT} in flight each, {label}"), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += stream(&producer, &consumer, leased).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, handoff_latency, streaming);
criterion_main!(benches);
