//! The codecs every request goes through: frames, native requests and replies
//! (MessagePack), the Value model's own MessagePack, and the Python dialect's pickle.
//!
//! `cargo bench -p agora-proto --bench codec`

use std::hint::black_box;
use std::time::Duration;

use agora_proto::frame;
use agora_proto::native::{self, Args, Op, Reply, Request, Response};
use agora_proto::value::Dict;
use agora_proto::{pickle, Value};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// A dict set request as the Rust client sends it (`d["key:…42"] = "xxx"`).
fn set_request() -> Request {
    Request {
        id: 123_456,
        op: Op::Call {
            object: 0x1234_5678_9abc,
            method: "__setitem__".into(),
            args: Args::positional(vec![Value::Str("key:000000000042".into()), Value::Str("xxx".into())]),
        },
    }
}

/// A dict of `n` string keys to 32-byte string values.
fn dict_value(n: usize) -> Value {
    let mut d = Dict::with_capacity(n);
    for i in 0..n {
        d.insert(Value::Str(format!("key:{i:012}").into()), Value::Str("x".repeat(32).into())).expect("hashable");
    }
    Value::Dict(d)
}

/// `(ident, '__setitem__', ('key:000000000042', 'x' * 32), {})` as CPython 3.11's
/// manager client pickles it (protocol 4).
const CPYTHON_SETITEM: &[u8] = b"\x80\x04\x95\x5b\x00\x00\x00\x00\x00\x00\x00\x28\x8c\x0c\x37\x66\x33\x61\x35\x63\x32\x65\x31\x64\x34\x30\x94\x8c\x0b\x5f\x5f\x73\x65\x74\x69\x74\x65\x6d\x5f\x5f\x94\x8c\x10\x6b\x65\x79\x3a\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x34\x32\x94\x8c\x20\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x78\x94\x86\x94\x7d\x94\x74\x94\x2e";

/// `d['k']` as CPython 3.11's manager client pickles it: `(ident, '__getitem__', ('k',), {})`.
const CPYTHON_GETITEM: &[u8] = b"\x80\x04\x95)\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7f3a2b1c0d10\x94\x8c\x0b__getitem__\x94\x8c\x01k\x94\x85\x94}\x94t\x94.";

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let request = set_request();
    let mut out = Vec::with_capacity(256);
    g.bench_function("encode set request (msgpack into frame)", |b| {
        b.iter(|| {
            out.clear();
            frame::encode_with(&mut out, |body| native::encode(black_box(&request), body)).unwrap();
            black_box(&out);
        })
    });
    let mut wire = Vec::new();
    frame::encode_with(&mut wire, |body| native::encode(&request, body)).unwrap();
    g.bench_function("take + decode set request", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| {
                let body = frame::take_frame(buf, frame::DEFAULT_MAX_FRAME).unwrap().unwrap();
                black_box(native::decode::<Request>(&body).unwrap());
            },
            BatchSize::SmallInput,
        )
    });
    let response = Response { id: 123_456, result: Ok(Reply::Value(Value::Str("xxx".into()))) };
    g.bench_function("encode value response", |b| {
        b.iter(|| {
            out.clear();
            frame::encode_with(&mut out, |body| native::encode(black_box(&response), body)).unwrap();
            black_box(&out);
        })
    });
    let mut wire = Vec::new();
    frame::encode_with(&mut wire, |body| native::encode(&response, body)).unwrap();
    g.bench_function("decode value response", |b| {
        b.iter(|| black_box(native::decode::<Response>(black_box(&wire[4..])).unwrap()))
    });
    // 64 pipelined requests in one buffer: the server's take_frame loop.
    let mut batch = Vec::new();
    for _ in 0..64 {
        frame::encode_with(&mut batch, |body| native::encode(&request, body)).unwrap();
    }
    g.throughput(Throughput::Elements(64));
    g.bench_function("take 64 pipelined frames", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&batch[..]),
            |buf| {
                while let Some(body) = frame::take_frame(buf, frame::DEFAULT_MAX_FRAME).unwrap() {
                    black_box(body);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn values(c: &mut Criterion) {
    let mut g = c.benchmark_group("value msgpack");
    for (name, value) in [
        ("str 32", Value::Str("x".repeat(32).into())),
        ("int", Value::Int(1_234_567)),
        ("list of 100 ints", Value::List((0..100).map(Value::Int).collect())),
        ("dict of 100 str", dict_value(100)),
    ] {
        let bytes = value.to_msgpack();
        g.bench_function(format!("encode {name}"), |b| b.iter(|| black_box(black_box(&value).to_msgpack())));
        g.bench_function(format!("decode {name}"), |b| {
            b.iter(|| black_box(Value::from_msgpack(black_box(&bytes)).unwrap()))
        });
    }
    g.finish();
}

fn pickles(c: &mut Criterion) {
    let mut g = c.benchmark_group("pickle");
    g.bench_function("decode CPython __setitem__ request", |b| {
        b.iter(|| black_box(pickle::decode(black_box(CPYTHON_SETITEM)).unwrap()))
    });
    g.bench_function("decode CPython __getitem__ request", |b| {
        b.iter(|| black_box(pickle::decode(black_box(CPYTHON_GETITEM)).unwrap()))
    });
    let reply = Value::Tuple(vec![Value::Str("#RETURN".into()), Value::None]);
    g.bench_function("encode #RETURN None", |b| b.iter(|| black_box(pickle::encode(black_box(&reply)))));
    let big = Value::Tuple(vec![Value::Str("#RETURN".into()), dict_value(100)]);
    let big_bytes = pickle::encode(&big);
    g.bench_function("encode #RETURN dict of 100", |b| b.iter(|| black_box(pickle::encode(black_box(&big)))));
    g.bench_function("decode #RETURN dict of 100", |b| {
        b.iter(|| black_box(pickle::decode(black_box(&big_bytes)).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = frames, values, pickles
}
criterion_main!(benches);
