//! Big values (32 KiB and more) arrive whole and in order, however they are split on
//! the wire: the server reads a call whose last argument is a big str or bytes into a
//! buffer of its own (`agora_proto::native::trailing`), and every path around that —
//! a frame dribbled in, a request right behind it, a client that leaves halfway, a
//! payload that is not UTF-8 — behaves as it does for any other frame.

use std::time::Duration;

use agora_proto::native::{self, Args, Kind, Op, Reply, Request, Response};
use agora_proto::Value;
use agora_tests::{RawConn, Server, ServerOptions};

/// The server's threshold for reading a value on its own.
const MIN: usize = agora_proto::native::trailing::MIN_PAYLOAD;

/// Text of `len` bytes that differs from one `seed` to the next, with non-ASCII in it.
fn text(len: usize, seed: usize) -> String {
    let mut s = format!("{seed}:é");
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() * 7 + seed) as u8 % 26));
    }
    s.truncate(len);
    s
}

/// One request, framed.
fn framed(id: u64, op: Op) -> Vec<u8> {
    let mut body = Vec::new();
    native::encode_request(&Request { id, op }, &mut body).unwrap();
    let mut out = Vec::new();
    agora_proto::frame::encode(&body, &mut out);
    out
}

fn reply(raw: &mut RawConn, id: u64) -> Result<Reply, agora_proto::WireError> {
    let response: Response = native::decode(&raw.recv_frame().expect("a reply")).unwrap();
    assert_eq!(response.id, id, "replies come in order");
    response.result
}

/// Opens the dict `name` on a raw session; its object id.
fn open_dict(raw: &mut RawConn, name: &str) -> u64 {
    raw.send(&framed(1, Op::Open { kind: Kind::Dict, name: Some(name.into()), args: Args::default() })).unwrap();
    let Ok(Reply::Opened { object, .. }) = reply(raw, 1) else { panic!("dict not opened") };
    object
}

fn set(object: u64, id: u64, key: &str, value: Value) -> Vec<u8> {
    let args = Args::positional(vec![Value::Str(key.into()), value]);
    framed(id, Op::Call { object, method: "__setitem__".into(), args })
}

/// Values on both sides of the threshold, str and bytes, set concurrently by many
/// calls pipelined on one connection among small ones, all read back intact (over TCP
/// here; over a Unix socket below; `tls.rs` sends a 1 MiB value over TLS).
#[tokio::test]
async fn big_values_pipelined_among_small_calls_arrive_whole() {
    pipelined_among_small_calls(&Server::start()).await;
}

#[tokio::test]
async fn big_values_pipelined_over_a_unix_socket_arrive_whole() {
    pipelined_among_small_calls(&Server::start_with(ServerOptions { unix: true, ..Default::default() })).await;
}

async fn pipelined_among_small_calls(server: &Server) {
    let m = server.client().await;
    let d = m.dict::<String, Value>("big").await.unwrap();
    let small = m.dict::<String, i64>("small").await.unwrap();
    let sizes = [MIN - 1, MIN, MIN + 1, 100_000, 1 << 20, 3 << 20];
    let values: Vec<(String, Value)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &len)| {
            let bytes = text(len, i + 100).into_bytes();
            [(format!("s{i}"), Value::Str(text(len, i).into())), (format!("b{i}"), Value::Bytes(bytes))]
        })
        .collect();
    // Each on its own task, so they are pipelined on the one connection.
    let mut calls = tokio::task::JoinSet::new();
    for (key, value) in values.clone() {
        let (d, small) = (d.clone(), small.clone());
        calls.spawn(async move {
            d.insert(&key, &value).await.unwrap();
            small.increment(&"n".to_owned(), &1).await.unwrap();
        });
    }
    while let Some(done) = tokio::time::timeout(Duration::from_secs(120), calls.join_next()).await.expect("hang") {
        done.unwrap();
    }
    assert_eq!(small.get(&"n".to_owned()).await.unwrap(), Some(values.len() as i64));
    for (key, value) in &values {
        assert!(d.get(key).await.unwrap().as_ref() == Some(value), "{key} came back different");
    }
    // The one-argument methods take the same path: a list's append, a queue's put.
    let list = m.list::<String>("big-list").await.unwrap();
    let queue = m.queue::<String>("big-queue", 0).await.unwrap();
    let item = text(2 << 20, 7);
    list.append(&item).await.unwrap();
    queue.put(&item).await.unwrap();
    assert_eq!(list.get(0).await.unwrap().as_deref(), Some(item.as_str()));
    assert_eq!(queue.get().await.unwrap(), item);
}

/// A big call sent a few bytes at a time, with pauses (its start, then its value in
/// uneven pieces), and a small request in the same write as the value's last bytes:
/// both are answered, in order, and the value is whole.
#[tokio::test]
async fn a_big_value_dribbled_in_with_a_request_right_behind_it() {
    let server = Server::start();
    let mut raw = server.raw_session();
    let object = open_dict(&mut raw, "dribble");
    let value = text(200_000, 3);
    let call = set(object, 2, "k", Value::Str(value.as_str().into()));
    let behind = framed(3, Op::Call { object, method: "__len__".into(), args: Args::default() });
    // The start byte by byte, then pieces growing from 1 byte to 64 KiB.
    let (mut at, mut piece) = (0, 1);
    while at < 60 {
        raw.send(&call[at..at + 1]).unwrap();
        at += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    while call.len() - at > 100 {
        let end = (at + piece).min(call.len() - 100);
        raw.send(&call[at..end]).unwrap();
        at = end;
        piece = (piece * 3).min(64 * 1024);
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut last = call[at..].to_vec();
    last.extend_from_slice(&behind);
    raw.send(&last).unwrap();
    assert!(matches!(reply(&mut raw, 2), Ok(Reply::Value(Value::None))));
    assert!(matches!(reply(&mut raw, 3), Ok(Reply::Value(Value::Int(1)))));
    let m = server.client().await;
    let d = m.dict::<String, String>("dribble").await.unwrap();
    assert_eq!(d.get(&"k".to_owned()).await.unwrap(), Some(value));
}

/// A client that leaves halfway through a big value: its call never happens, and the
/// server, its other clients and the dict are unharmed.
#[tokio::test]
async fn a_client_leaving_halfway_through_a_big_value_changes_nothing() {
    let server = Server::start();
    let m = server.client().await;
    let d = m.dict::<String, String>("halfway").await.unwrap();
    d.insert(&"k".to_owned(), &"before".to_owned()).await.unwrap();
    for round in 0..10 {
        let mut raw = server.raw_session();
        let object = open_dict(&mut raw, "halfway");
        let call = set(object, 2, "k", Value::Str(text(1 << 20, round).into()));
        raw.send(&call[..call.len() / 2 + round * 1000]).unwrap();
        drop(raw);
    }
    // The next calls see the dict as it was.
    assert_eq!(d.get(&"k".to_owned()).await.unwrap().as_deref(), Some("before"));
    assert_eq!(d.len().await.unwrap(), 1);
    let fresh = server.client().await;
    fresh.dict::<String, String>("halfway").await.unwrap().insert(&"k2".to_owned(), &text(MIN * 2, 1)).await.unwrap();
    assert_eq!(d.len().await.unwrap(), 2);
}

/// A client that goes silent halfway through a big value loses its session as any
/// silent peer does (the heartbeat timeout; a read into a value's own buffer is no
/// exception), with the precise error; the buffer it had the server reserve for the
/// value is freed, and the dict never sees the value.
#[tokio::test]
async fn a_client_silent_halfway_through_a_big_value_loses_its_session_and_its_buffer() {
    const BIG: usize = 8 << 20;
    // Long enough to see the buffer held; the typed client heartbeats well within it.
    let server = Server::start_with(ServerOptions {
        args: vec!["--heartbeat-timeout".into(), "3s".into()],
        ..Default::default()
    });
    let admin = server.client().await;
    let d = admin.dict::<String, String>("silent").await.unwrap();
    // Ballast, so that the server's memory in use is its heap's count and not its
    // resident size (which is mostly code and stacks in a small debug-built server,
    // and moves with them: see `server/src/memory.rs`).
    let ballast = admin.dict::<String, String>("ballast").await.unwrap();
    for i in 0..3 {
        ballast.insert(&i.to_string(), &"b".repeat(BIG)).await.unwrap();
    }
    let before = memory_in_use(&admin, |n| n >= 3 * BIG).await;
    let mut raw = server.raw_session();
    let object = open_dict(&mut raw, "silent");
    let call = set(object, 2, "k", Value::Str("v".repeat(BIG).into()));
    raw.send(&call[..call.len() / 2]).unwrap();
    // The value's buffer is reserved whole once the call's start is in.
    let holding = memory_in_use(&admin, |n| n >= before + BIG * 3 / 4).await;
    assert!(holding >= before + BIG * 3 / 4, "a buffer for the value is held: {before} -> {holding} bytes in use");
    // Then silence: the session ends, with its reason.
    let notice: Response = native::decode(&raw.recv_frame().expect("an expiry notice")).unwrap();
    assert_eq!(notice.id, native::CONNECTION_ERROR_ID);
    assert_eq!(notice.result.unwrap_err().code, agora_proto::ErrorCode::SessionExpired);
    server.wait_for_log("session expired: no heartbeat");
    let after = memory_in_use(&admin, |n| n < before + BIG / 4).await;
    assert!(after < before + BIG / 4, "the value's buffer is freed: {before} -> {holding} -> {after} bytes in use");
    assert_eq!(d.len().await.unwrap(), 0, "the dict never saw the value");
    assert!(admin.connection_error().is_none(), "the other session is unharmed");
}

/// A str that is not UTF-8 is taken as serde's decoder takes it, big or small: the
/// value read on its own ends the same way as when its frame is decoded whole.
#[tokio::test]
async fn a_big_str_that_is_not_utf8_is_taken_as_a_small_one_is() {
    let server = Server::start();
    let mut raw = server.raw_session();
    let object = open_dict(&mut raw, "not-utf8");
    let mut outcomes = Vec::new();
    for (id, len) in [(2, 100), (4, MIN + 10)] {
        let mut call = set(object, id, &format!("k{len}"), Value::Str("x".repeat(len).into()));
        let last = call.len() - 1;
        call[last] = 0xff; // the value's last byte
        raw.send(&call).unwrap();
        let set = reply(&mut raw, id).map_err(|e| e.code);
        let get = Args::positional(vec![Value::Str(format!("k{len}").into())]);
        raw.send(&framed(id + 1, Op::Call { object, method: "get".into(), args: get })).unwrap();
        // What was stored: its type and its size.
        let stored = match reply(&mut raw, id + 1) {
            Ok(Reply::Value(Value::Bytes(b))) => format!("bytes of {}", b.len() - len),
            Ok(Reply::Value(Value::Str(s))) => format!("str of {}", s.len() - len),
            other => format!("{other:?}"),
        };
        outcomes.push((set.map(|_| ()), stored));
    }
    assert_eq!(outcomes[0], outcomes[1], "the small and the big frame are taken alike");
    // and the connection goes on
    raw.send(&framed(9, Op::Ping)).unwrap();
    assert!(reply(&mut raw, 9).is_ok());
}

/// The server's memory in use (`stats`: what its allocator has handed out; freed memory
/// it keeps or gives back does not count), from the first sample that passes `until`
/// (it samples a few times a second; the deadline only guards against a hang).
async fn memory_in_use(m: &agora_client::Manager, until: impl Fn(usize) -> bool) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let in_use = m.stats().await.unwrap().memory.expect("memory stats").in_use as usize;
        if until(in_use) || tokio::time::Instant::now() > deadline {
            return in_use;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection's buffers grown by a big reply are given back once its traffic is
/// small again: twelve clients that each read a 4 MiB list hold 48 MiB of reply buffers
/// on the server only until each has made some small calls. (A list, because a single
/// big str goes out from its own buffer.)
#[tokio::test]
async fn buffers_grown_by_big_replies_are_given_back() {
    const BIG: usize = 4 << 20;
    const CLIENTS: usize = 12;
    let server = Server::start();
    let admin = server.client().await;
    let list: Vec<String> = (0..BIG / 4096).map(|i| text(4096, i)).collect();
    admin.dict::<String, Vec<String>>("big").await.unwrap().insert(&"v".to_owned(), &list).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let m = server.client().await;
        let d = m.dict::<String, Vec<String>>("big").await.unwrap();
        clients.push((m, d));
    }
    // A sample taken after the connections' own buffers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = memory_in_use(&admin, |_| true).await;
    for (_, d) in &clients {
        assert!(d.get(&"v".to_owned()).await.unwrap().as_ref() == Some(&list));
    }
    let held = before + CLIENTS * BIG * 3 / 4;
    let holding = memory_in_use(&admin, |n| n >= held).await;
    assert!(holding >= held, "the replies' buffers are held: {before} -> {holding} bytes in use");
    for (m, _) in &clients {
        for _ in 0..20 {
            m.ping().await.unwrap();
        }
    }
    let given_back = before + CLIENTS * BIG / 3;
    let after = memory_in_use(&admin, |n| n < given_back).await;
    assert!(after < given_back, "the buffers were not given back: {before} -> {holding} -> {after} bytes in use");
}
