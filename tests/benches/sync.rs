//! Benchmarks for the synchronization objects against the real `agora` binary over
//! loopback TCP: uncontended acquire+release round trips (Lock, RLock, Semaphore),
//! and the contended hand-off latency of two clients ping-ponging one lock.
//!
//! `cargo bench -p agora-tests --bench sync`

use std::time::{Duration, Instant};

use agora_tests::Server;
use criterion::{criterion_group, criterion_main, Criterion};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Runs `op` `iters` times, one after another, and returns the time they took.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        start.elapsed()
    })
}

fn uncontended(c: &mut Criterion) {
    let server = Server::start();
    let rt = runtime();
    let m = rt.block_on(server.client());
    let (lock, rlock, sem) = rt.block_on(async {
        (m.lock("bench").await.unwrap(), m.rlock("bench-r").await.unwrap(), m.semaphore("bench-s", 1).await.unwrap())
    });
    let mut group = c.benchmark_group("uncontended");
    group.bench_function("lock acquire+release (2 round trips)", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || async { lock.acquire().await.unwrap().release().await.unwrap() }))
    });
    group.bench_function("lock acquire+drop (1 round trip)", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || async { drop(lock.acquire().await.unwrap()) }))
    });
    group.bench_function("rlock acquire+release", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || async { rlock.acquire().await.unwrap().release().await.unwrap() }))
    });
    group.bench_function("semaphore acquire+release", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || async { sem.acquire().await.unwrap().release().await.unwrap() }))
    });
    group.bench_function("ping (1 round trip, for reference)", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || async { m.ping().await.unwrap() }))
    });
    group.finish();
}

/// Two clients (two sessions) take turns on one lock: each waits in `acquire` while
/// the other holds it, so every grant is a hand-off from one client to the other
/// (FIFO waiters make them alternate). Reports the time per hand-off.
fn contended(c: &mut Criterion) {
    let server = Server::start();
    let rt = runtime();
    let (a, b) = rt.block_on(async { (server.client().await, server.client().await) });
    let mut group = c.benchmark_group("contended");
    group.bench_function("lock hand-off between two clients", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let rounds = iters.div_ceil(2);
                let (la, lb) = (a.lock("ping-pong").await.unwrap(), b.lock("ping-pong").await.unwrap());
                let start = Instant::now();
                let players = [la, lb].map(|lock| {
                    tokio::spawn(async move {
                        for _ in 0..rounds {
                            lock.acquire().await.unwrap().release().await.unwrap();
                        }
                    })
                });
                for p in players {
                    p.await.unwrap();
                }
                start.elapsed().mul_f64(iters as f64 / (2 * rounds) as f64)
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = uncontended, contended
}
criterion_main!(benches);
