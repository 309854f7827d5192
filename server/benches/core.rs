//! One operation through the server core, without sockets: the engine's command
//! path, the object's lock, argument binding and the dict itself — and the same with the
//! native request decoded and its response encoded, which is all a request costs
//! the server besides the socket.
//!
//! `cargo bench -p agora-server --bench core`

use std::hint::black_box;
use std::time::Duration;

use agora_proto::frame;
use agora_proto::native::{self, Args, Kind, Op, Reply, Request, Response};
use agora_proto::Value;
use agora_server::custom::CustomKinds;
use agora_server::engine::{Access, Answer, Command, Engine, HandleCache, Keep, Session, Time};
use criterion::{criterion_group, criterion_main, Criterion};

fn key(i: u64) -> Value {
    Value::Str(format!("key:{:012}", i % 10_000).into())
}

/// One call through the engine, by handle (as the native dialect makes it).
fn call(engine: &Engine, session: &Session, object: u64, method: &str, positional: Vec<Value>) -> Value {
    // A fixed `at`: the native dialect reads the clock once per batch, not per call.
    let command = Command::Call {
        session: session.id(),
        object,
        access: Access::Handle,
        method: method.into(),
        args: Args::positional(positional),
        at: Time(1),
    };
    match engine.apply_in(session, command).reply {
        Ok(Answer::Value(v)) => v,
        other => panic!("{method}: {other:?}"),
    }
}

fn dict_ops(c: &mut Criterion) {
    let engine = Engine::new(CustomKinds::default());
    let session = engine.open_session(engine.now(), false).expect("an engine without a journal opens sessions");
    let open = Command::Open {
        session: session.id(),
        kind: Kind::Dict,
        name: Some("bench".into()),
        args: Args::default(),
        keep: Keep::Handle,
        at: engine.now(),
    };
    let Ok(Answer::Opened { object, .. }) = engine.apply_in(&session, open).reply else { panic!("open") };
    for i in 0..10_000 {
        call(&engine, &session, object, "__setitem__", vec![key(i), Value::Str("xxx".into())]);
    }
    let mut g = c.benchmark_group("dict through the engine");
    let mut i = 0u64;
    g.bench_function("__setitem__ (Engine::apply_in)", |b| {
        b.iter(|| {
            i += 7919;
            black_box(call(&engine, &session, object, "__setitem__", vec![key(i), Value::Str("xxx".into())]));
        })
    });
    g.bench_function("__getitem__ (Engine::apply_in)", |b| {
        b.iter(|| {
            i += 7919;
            black_box(call(&engine, &session, object, "__getitem__", vec![key(i)]));
        })
    });
    // The native dialect's hot path: the call by its fields, its object found through
    // the connection's cache of its session's handles.
    let mut handles = HandleCache::new();
    g.bench_function("__getitem__ (Engine::call, the native dialect's path)", |b| {
        b.iter(|| {
            i += 7919;
            let args = Args::positional(vec![key(i)]);
            let effects =
                engine.call(&session, Some(&mut handles), object, Access::Handle, "__getitem__", args, Time(1));
            black_box(effects.reply.unwrap());
        })
    });
    g.bench_function("__getitem__ by id (Engine::apply, the Python path)", |b| {
        b.iter(|| {
            i += 7919;
            let command = Command::Call {
                session: session.id(),
                object,
                access: Access::Id,
                method: "__getitem__".into(),
                args: Args::positional(vec![key(i)]),
                at: Time(1),
            };
            black_box(engine.apply(command).reply.unwrap());
        })
    });
    // What the native dialect does per request, minus the socket: decode the frame
    // body, run the call, encode the response into the output buffer.
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
    let at = engine.now();
    g.bench_function("decode request + __getitem__ + encode response", |b| {
        b.iter(|| {
            let request: Request = native::decode(black_box(&wire[4..])).unwrap();
            let Op::Call { object, method, args } = request.op else { unreachable!() };
            let command = Command::Call { session: session.id(), object, access: Access::Handle, method, args, at };
            let Ok(Answer::Value(value)) = engine.apply_in(&session, command).reply else { unreachable!() };
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
