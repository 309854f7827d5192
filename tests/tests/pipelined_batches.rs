//! A pipelined batch's requests are answered exactly as if they came one at a time: in
//! order, each with its own result, whatever objects they call. The server decodes a
//! read's requests ahead of answering them when its first call goes to a dict big
//! enough to prefetch for (`Engine::prefetch`, from `PREFETCH_FROM` entries), and one
//! by one otherwise; both paths are driven here with the same batches.

use agora_proto::native::{self, Args, Kind, ObjectId, Op, Reply, Request, Response};
use agora_proto::{ErrorCode, Value};
use agora_server::engine::PREFETCH_FROM;
use agora_tests::{RawConn, Server};

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn call(object: ObjectId, method: &str, args: Vec<Value>) -> Op {
    Op::Call { object, method: method.into(), args: Args::positional(args) }
}

/// Sends `ops` in one write (ids 1, 2, …) and reads one response for each.
fn batch(raw: &mut RawConn, ops: Vec<Op>) -> Vec<Result<Reply, (ErrorCode, String)>> {
    let n = ops.len();
    let mut wire = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let mut body = Vec::new();
        native::encode(&Request { id: i as u64 + 1, op }, &mut body).unwrap();
        agora_proto::frame::encode(&body, &mut wire);
    }
    raw.send(&wire).unwrap();
    (1..=n as u64)
        .map(|id| {
            let response: Response = native::decode(&raw.recv_frame().expect("a response")).unwrap();
            assert_eq!(response.id, id, "answered in the order sent");
            response.result.map_err(|e| (e.code, e.message))
        })
        .collect()
}

fn value(reply: &Result<Reply, (ErrorCode, String)>) -> &Value {
    match reply {
        Ok(Reply::Value(v)) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

fn code(reply: &Result<Reply, (ErrorCode, String)>) -> ErrorCode {
    match reply {
        Err((code, _)) => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Opens `kind` named `name` on `raw`'s session.
fn open(raw: &mut RawConn, kind: Kind, name: &str) -> ObjectId {
    match batch(raw, vec![Op::Open { kind, name: Some(name.into()), args: Args::default() }]).remove(0) {
        Ok(Reply::Opened { object, .. }) => object,
        other => panic!("open: {other:?}"),
    }
}

/// A dict of `entries` entries (`key:i` → `i`), filled in batches, and a list.
fn setup(server: &Server, entries: usize) -> (RawConn, ObjectId, ObjectId) {
    let mut raw = server.raw_session();
    let dict = open(&mut raw, Kind::Dict, "d");
    let list = open(&mut raw, Kind::List, "l");
    for chunk in (0..entries).collect::<Vec<_>>().chunks(500) {
        let sets = chunk.iter().map(|&i| call(dict, "__setitem__", vec![s(&format!("key:{i}")), Value::Int(i as i64)]));
        assert!(batch(&mut raw, sets.collect()).iter().all(|r| matches!(r, Ok(Reply::Value(Value::None)))));
    }
    (raw, dict, list)
}

/// One batch mixing reads, writes that later calls of the same batch read, errors,
/// another object, a request that is not a call, and more calls than the server looks
/// ahead at; every answer is the one a lone request would get.
fn mixed_batch_is_answered_as_one_at_a_time(entries: usize) {
    let server = Server::start();
    let (mut raw, dict, list) = setup(&server, entries);
    let mut ops = vec![
        call(dict, "get", vec![s("key:5")]),
        call(dict, "__getitem__", vec![s("missing")]),
        call(dict, "__setitem__", vec![s("fresh"), Value::Int(-1)]),
        call(dict, "__getitem__", vec![s("fresh")]),
        call(list, "append", vec![Value::Int(1)]),
        call(dict, "__contains__", vec![s("key:7")]),
        call(dict, "pop", vec![s("key:7")]),
        call(dict, "__contains__", vec![s("key:7")]),
        call(dict, "__getitem__", vec![Value::List(vec![])]),
        Op::Ping,
        call(0x1234_5678, "__getitem__", vec![s("key:1")]),
        call(dict, "get", vec![]),
        call(dict, "__len__", vec![]),
    ];
    ops.extend((0..100).map(|i| call(dict, "get", vec![s(&format!("key:{i}"))])));
    ops.push(call(list, "__len__", vec![]));
    let replies = batch(&mut raw, ops);
    assert_eq!(value(&replies[0]), &Value::Int(5));
    assert_eq!(code(&replies[1]), ErrorCode::KeyError);
    assert_eq!(value(&replies[2]), &Value::None);
    assert_eq!(value(&replies[3]), &Value::Int(-1), "a write earlier in the batch is read");
    assert_eq!(value(&replies[4]), &Value::None);
    assert_eq!(value(&replies[5]), &Value::Bool(true));
    assert_eq!(value(&replies[6]), &Value::Int(7));
    assert_eq!(value(&replies[7]), &Value::Bool(false), "a delete earlier in the batch is seen");
    assert_eq!(replies[8], Err((ErrorCode::TypeError, "unhashable type: 'list'".into())));
    assert!(matches!(replies[9], Ok(Reply::Done)), "{:?}", replies[9]);
    assert_eq!(code(&replies[10]), ErrorCode::NoSuchObject);
    assert_eq!(code(&replies[11]), ErrorCode::TypeError);
    assert_eq!(value(&replies[12]), &Value::Int(entries as i64));
    for (i, reply) in replies[13..113].iter().enumerate() {
        let expected = if i == 7 || i >= entries { Value::None } else { Value::Int(i as i64) };
        assert_eq!(value(reply), &expected, "get key:{i}");
    }
    assert_eq!(value(&replies[113]), &Value::Int(1));
}

#[test]
fn a_batch_on_a_big_dict_is_answered_as_one_request_at_a_time() {
    mixed_batch_is_answered_as_one_at_a_time(PREFETCH_FROM + 500);
}

#[test]
fn a_batch_on_a_small_dict_is_answered_as_one_request_at_a_time() {
    mixed_batch_is_answered_as_one_at_a_time(50);
}

/// A batch whose first call goes to another object is answered one by one, and still
/// right, whatever the big dict behind it.
#[test]
fn a_batch_that_starts_on_another_object_is_answered_in_order() {
    let server = Server::start();
    let (mut raw, dict, list) = setup(&server, PREFETCH_FROM + 10);
    let mut ops = vec![call(list, "append", vec![Value::Int(3)])];
    ops.extend((0..40).map(|i| call(dict, "__getitem__", vec![s(&format!("key:{i}"))])));
    let replies = batch(&mut raw, ops);
    assert_eq!(value(&replies[0]), &Value::None);
    for (i, reply) in replies[1..].iter().enumerate() {
        assert_eq!(value(reply), &Value::Int(i as i64));
    }
}

/// A malformed request in the middle of a batch decoded ahead: the requests before it
/// are answered, then the connection gets a protocol error and is closed; the dict and
/// other clients are unharmed.
#[test]
fn a_malformed_request_in_a_batch_decoded_ahead_ends_only_its_connection() {
    let server = Server::start();
    let (mut raw, dict, _) = setup(&server, PREFETCH_FROM + 10);
    let mut wire = Vec::new();
    for id in 1..=3u64 {
        let mut body = Vec::new();
        let key = s(&format!("key:{id}"));
        native::encode(&Request { id, op: call(dict, "__setitem__", vec![key, Value::Int(100)]) }, &mut body).unwrap();
        agora_proto::frame::encode(&body, &mut wire);
    }
    agora_proto::frame::encode(&[0x93, 0x01], &mut wire);
    let mut body = Vec::new();
    native::encode(&Request { id: 5, op: call(dict, "__setitem__", vec![s("key:4"), Value::Int(100)]) }, &mut body)
        .unwrap();
    agora_proto::frame::encode(&body, &mut wire);
    raw.send(&wire).unwrap();
    for id in 1..=3 {
        let response: Response = native::decode(&raw.recv_frame().unwrap()).unwrap();
        assert_eq!((response.id, response.result), (id, Ok(Reply::Value(Value::None))));
    }
    let error: Response = native::decode(&raw.recv_frame().unwrap()).unwrap();
    assert_eq!(error.id, native::CONNECTION_ERROR_ID);
    assert_eq!(error.result.unwrap_err().code, ErrorCode::Protocol);
    assert!(raw.recv_frame().is_none(), "closed after the error");
    // What came before the bad frame was applied, what came after it was not.
    let mut other = server.raw_session();
    let dict = open(&mut other, Kind::Dict, "d");
    let gets = (1..=4).map(|i| call(dict, "__getitem__", vec![s(&format!("key:{i}"))])).collect();
    let values: Vec<Value> = batch(&mut other, gets).iter().map(|r| value(r).clone()).collect();
    assert_eq!(values, [Value::Int(100), Value::Int(100), Value::Int(100), Value::Int(4)]);
}
