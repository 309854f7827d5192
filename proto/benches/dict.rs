//! The dict behind every shared dict: lookups, replacements and growth at sizes that
//! fit in the caches and sizes that do not, with the keys `agora bench` uses; and a
//! pipelined batch's lookups with and without prefetching them first.
//!
//! `cargo bench -p agora-proto --bench dict`

use std::hint::black_box;
use std::time::Duration;

use agora_proto::value::Dict;
use agora_proto::Value;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// `agora bench`'s key `i` (`key:000000000042`).
fn key(i: usize) -> Value {
    Value::Str(format!("key:{i:012}").into())
}

/// A dict of `n` such keys, each mapping to a 3-byte str.
fn filled(n: usize) -> Dict {
    Dict::from_pairs((0..n).map(|i| (key(i), Value::Str("xxx".into())))).unwrap()
}

/// `count` keys out of `0..n` in a scrambled order (a fixed xorshift, so every run
/// probes the same keys), so that consecutive lookups land far apart.
fn scrambled_keys(n: usize, count: usize) -> Vec<Value> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            key((x % n as u64) as usize)
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("dict");
    const PROBES: usize = 4096;
    g.throughput(Throughput::Elements(PROBES as u64));
    for n in [1_000, 10_000, 1_000_000] {
        let mut dict = filled(n);
        let keys = scrambled_keys(n, PROBES);
        g.bench_function(format!("get, {n} entries"), |b| {
            b.iter(|| {
                for k in &keys {
                    black_box(dict.get(k).unwrap());
                }
            })
        });
        g.bench_function(format!("replace, {n} entries"), |b| {
            b.iter(|| {
                for k in &keys {
                    black_box(dict.insert(k.clone(), Value::Str("yyy".into())).unwrap());
                }
            })
        });
    }
    g.finish();
}

/// The server's own work between two lookups of a pipelined batch, stood in for by
/// what weighs most in it for the caches: the kernel copying the request in and the
/// reply out, and the other connections' buffers. Each call writes the next 8 KiB of a
/// 4 MiB scratch area, so that, as in the server, a dict that would fit in a core's
/// caches alone is pushed out of them between its lookups.
fn work_between_requests(scratch: &mut [u8], at: &mut usize) {
    const STEP: usize = 8 * 1024;
    *at = (*at + STEP) % scratch.len();
    scratch[*at..*at + STEP].fill(*at as u8);
    black_box(&scratch[*at]);
}

/// Batches of 16 gets with the server's work between them, as they come, and after
/// `Dict::prefetch` of the batch's keys (what the native dialect does for a batch on a
/// big dict).
fn pipelined_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("dict");
    const PROBES: usize = 4096;
    g.throughput(Throughput::Elements(PROBES as u64));
    for n in [10_000, 1_000_000] {
        let dict = filled(n);
        let keys = scrambled_keys(n, PROBES);
        for prefetched in [false, true] {
            let how = if prefetched { ", prefetched" } else { "" };
            g.bench_function(format!("batches of 16 gets{how}, {n} entries"), |b| {
                let (mut scratch, mut at) = (vec![0u8; 4 << 20], 0);
                b.iter(|| {
                    for batch in keys.chunks(16) {
                        if prefetched {
                            dict.prefetch(batch);
                        }
                        for k in batch {
                            black_box(dict.get(k).unwrap());
                            work_between_requests(&mut scratch, &mut at);
                        }
                    }
                })
            });
        }
    }
    g.finish();
}

fn growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("dict");
    const N: usize = 100_000;
    g.throughput(Throughput::Elements(N as u64));
    let keys: Vec<Value> = (0..N).map(key).collect();
    g.bench_function(format!("insert {N} new keys into an empty dict"), |b| {
        b.iter_batched(
            || keys.clone(),
            |keys| {
                let mut dict = Dict::new();
                for k in keys {
                    dict.insert(k, Value::Int(1)).unwrap();
                }
                dict
            },
            BatchSize::LargeInput,
        )
    });
    let full = filled(N);
    g.bench_function(format!("delete every other key of {N}"), |b| {
        b.iter_batched(
            || full.clone(),
            |mut dict| {
                for k in keys.iter().step_by(2) {
                    dict.remove(k).unwrap();
                }
                dict
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = lookups, pipelined_batches, growth
}
criterion_main!(benches);
