//! One operation through the server core, without sockets: the registry, the
//! object's lock, argument binding and the dict itself — and the same with the
//! native request decoded and its response encoded, which is all a request costs
//! the server besides the socket.
//!
//! `cargo bench -p agora-server --bench core`

use std::hint::black_box;
use std::time::Duration;

use agora_proto::frame;
use agora_proto::native::{self, Args, Kind, Op, Reply, Request, Response};
use agora_proto::Value;
use agora_server::object::{Caller, Outcome};
use agora_server::registry::Registry;
use criterion::{criterion_group, criterion_main, Criterion};

fn key(i: u64) -> Value {
    Value::Str(format!("key:{:012}", i % 10_000).into())
}

fn dict_ops(c: &mut Criterion) {
    let registry = Registry::new();
    let entry = registry.open_named(&Kind::Dict, "bench", vec![], vec![]).expect("open").entry;
    let caller = Caller { session: 1 };
    for i in 0..10_000 {
        entry.call(caller, "__setitem__", vec![key(i), Value::Str("xxx".into())], vec![]).expect("set");
    }
    let mut g = c.benchmark_group("dict through the core");
    let mut i = 0u64;
    g.bench_function("__setitem__ (ObjectEntry::call)", |b| {
        b.iter(|| {
            i += 7919;
            let args = vec![key(i), Value::Str("xxx".into())];
            black_box(entry.call(caller, "__setitem__", args, vec![]).unwrap());
        })
    });
    g.bench_function("__getitem__ (ObjectEntry::call)", |b| {
        b.iter(|| {
            i += 7919;
            black_box(entry.call(caller, "__getitem__", vec![key(i)], vec![]).unwrap());
        })
    });
    g.bench_function("registry lookup by id + __getitem__", |b| {
        let id = entry.id();
        b.iter(|| {
            i += 7919;
            let e = registry.get(black_box(id)).unwrap();
            black_box(e.call(caller, "__getitem__", vec![key(i)], vec![]).unwrap());
        })
    });
    // What the native dialect does per request, minus the socket: decode the frame
    // body, run the call, encode the response into the output buffer.
    let object = entry.id();
    let mut wire = Vec::new();
    let request = Request {
        id: 42,
        op: Op::Call {
            object,
            method: "__getitem__".into(),
            args: Args::positional(vec![Value::Str("key:000000000042".into())]),
        },
    };
    frame::encode_with(&mut wire, |b| native::encode(&request, b)).unwrap();
    let mut out = Vec::with_capacity(1024);
    g.bench_function("decode request + __getitem__ + encode response", |b| {
        b.iter(|| {
            let request: Request = native::decode(black_box(&wire[4..])).unwrap();
            let Op::Call { object, method, args } = request.op else { unreachable!() };
            let e = registry.get(object).unwrap();
            let Outcome::Ready(value) = e.call(caller, &method, args.positional, args.keywords).unwrap() else {
                unreachable!()
            };
            out.clear();
            let response = Response { id: request.id, result: Ok(Reply::Value(value)) };
            frame::encode_with(&mut out, |b| native::encode(&response, b)).unwrap();
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = dict_ops
}
criterion_main!(benches);
