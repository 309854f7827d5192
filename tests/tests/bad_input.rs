//! Bad input gets a precise error, closes only the offending connection, and leaves
//! the server and every other client unharmed.

use std::time::Duration;

use agora_client::{Error, Manager};
use agora_proto::native::{self, Args, Kind, Op, Request, Response};
use agora_tests::{RawConn, Server, ServerOptions, HANG_GUARD};

/// A second client that must keep working through every test.
async fn healthy(server: &Server, bystander: &Manager) {
    let d = bystander.dict::<String, i64>("bystander").await.unwrap();
    let n = d.increment(&"n".into(), &1).await.unwrap();
    assert!(n >= 1);
    // and a brand-new connection still works
    server.client().await.ping().await.unwrap();
}

fn connection_error(raw: &mut RawConn) -> agora_proto::WireError {
    let resp: Response = native::decode(&raw.recv_frame().expect("a connection-level error frame")).unwrap();
    assert_eq!(resp.id, native::CONNECTION_ERROR_ID);
    resp.result.unwrap_err()
}

#[tokio::test]
async fn wrong_authkey_is_refused_and_others_carry_on() {
    let server = Server::start();
    let bystander = server.client().await;
    let err = Manager::connect(&server.address, b"not the key").await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    // By hand: the server says #FAILURE# and nothing else, then closes.
    let mut raw = server.raw();
    assert!(!raw.handshake(b"also wrong"));
    assert_eq!(raw.read_to_end().unwrap(), b"", "nothing after #FAILURE#");
    server.wait_for_log("handshake failed");
    healthy(&server, &bystander).await;
}

#[tokio::test]
async fn garbage_bytes_close_only_that_connection() {
    let server = Server::start();
    let bystander = server.client().await;
    let mut raw = server.raw();
    let _challenge = raw.recv_frame().unwrap();
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // "GET " as a length is > 256: refused from the header alone, connection closed.
    assert_eq!(raw.read_to_end().unwrap(), b"");
    server.wait_for_log("exceeds the limit of 256 bytes");
    healthy(&server, &bystander).await;
}

#[tokio::test]
async fn garbage_after_authentication_gets_a_protocol_error() {
    let server = Server::start();
    let bystander = server.client().await;
    let mut raw = server.raw();
    assert!(raw.handshake(&server.authkey));
    raw.send_frame(b"\xc1\xc1 definitely not msgpack").unwrap();
    let err = connection_error(&mut raw);
    assert_eq!(err.code, agora_proto::ErrorCode::Protocol);
    assert!(err.message.contains("malformed native message"), "{}", err.message);
    assert!(raw.recv_frame().is_none(), "closed after the error");
    // and a malformed request on an established session
    let mut raw = server.raw_session();
    raw.send_frame(&[0x93, 0x01]).unwrap();
    assert_eq!(connection_error(&mut raw).code, agora_proto::ErrorCode::Protocol);
    healthy(&server, &bystander).await;
}

#[tokio::test]
async fn oversized_frame_is_refused_before_its_body_is_read() {
    let server =
        Server::start_with(ServerOptions { args: vec!["--max-frame".into(), "1K".into()], ..Default::default() });
    let bystander = server.client().await;
    let mut raw = server.raw_session();
    // Announce 1 GiB and send none of it: the server must answer from the header alone.
    raw.send(&(1u32 << 30).to_be_bytes()).unwrap();
    let err = connection_error(&mut raw);
    assert_eq!(err.code, agora_proto::ErrorCode::LimitExceeded);
    assert_eq!(err.message, "frame of 1073741824 bytes exceeds the limit of 1024 bytes");
    // The client library refuses to send such a request in the first place.
    let m = server.client().await;
    let list = m.list::<String>("big").await.unwrap();
    let err = list.push(&"x".repeat(4096)).await.unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    list.push(&"small".into()).await.expect("the connection survives a refused request");
    healthy(&server, &bystander).await;
}

#[tokio::test]
async fn negative_frame_length_is_a_protocol_error() {
    let server = Server::start();
    let mut raw = server.raw_session();
    raw.send(&(-2i32).to_be_bytes()).unwrap();
    let err = connection_error(&mut raw);
    assert_eq!(err.code, agora_proto::ErrorCode::Protocol);
    assert_eq!(err.message, "invalid frame length -2");
}

#[tokio::test]
async fn stalled_handshake_is_dropped_after_the_timeout() {
    let server = Server::start_with(ServerOptions {
        args: vec!["--handshake-timeout".into(), "300ms".into()],
        ..Default::default()
    });
    let bystander = server.client().await;
    let mut raw = server.raw();
    let _challenge = raw.recv_frame().unwrap();
    // Say nothing. The server must hang up on its own.
    assert_eq!(raw.read_to_end().unwrap(), b"");
    server.wait_for_log("handshake did not finish in time");
    healthy(&server, &bystander).await;
}

#[tokio::test]
async fn too_many_connections_is_a_clear_error() {
    let server =
        Server::start_with(ServerOptions { args: vec!["--max-connections".into(), "1".into()], ..Default::default() });
    let first = server.client().await;
    let err = Manager::connect(&server.address, &server.authkey).await.unwrap_err();
    assert!(matches!(&err, Error::LimitExceeded(m) if m.contains("too many connections")), "{err:?}");
    first.ping().await.unwrap();
    drop(first);
    // The slot frees when the first client goes away.
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    loop {
        match Manager::connect(&server.address, &server.authkey).await {
            Ok(m) => break m.ping().await.unwrap(),
            Err(Error::LimitExceeded(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_ids_methods_kinds_and_types_are_precise() {
    let server = Server::start();
    let m = server.client().await;
    let mut raw = server.raw_session();
    let mut send = |op: Op| {
        let mut out = Vec::new();
        native::encode(&Request { id: 9, op }, &mut out).unwrap();
        raw.send_frame(&out).unwrap();
        let resp: Response = native::decode(&raw.recv_frame().unwrap()).unwrap();
        assert_eq!(resp.id, 9);
        resp.result
    };
    // unknown object id
    let err = send(Op::Call { object: 12345, method: "__len__".into(), args: Args::default() }).unwrap_err();
    assert_eq!(err.code, agora_proto::ErrorCode::NoSuchObject);
    // unknown method
    let Ok(native::Reply::Opened { object, .. }) =
        send(Op::Open { kind: Kind::List, name: None, args: Args::default() })
    else {
        panic!()
    };
    let err = send(Op::Call { object, method: "frobnicate".into(), args: Args::default() }).unwrap_err();
    assert_eq!(err.code, agora_proto::ErrorCode::NoSuchMethod);
    assert_eq!(err.message, "'list' object has no method 'frobnicate'");
    // wrong argument count
    let err = send(Op::Call { object, method: "append".into(), args: Args::default() }).unwrap_err();
    assert_eq!(err.code, agora_proto::ErrorCode::TypeError);
    assert_eq!(err.message, "append() missing required argument: 'object'");
    // unknown kind
    let err = send(Op::Open { kind: Kind::Other("Teapot".into()), name: None, args: Args::default() }).unwrap_err();
    assert_eq!(err.code, agora_proto::ErrorCode::Unsupported);

    // wrong kind for a name, through the client library
    m.dict::<String, i64>("thing").await.unwrap();
    let err = m.list::<i64>("thing").await.unwrap_err();
    assert!(matches!(&err, Error::WrongKind(msg) if msg == "'thing' is a dict, not a list"), "{err:?}");
    // wrong value type: a stored string read back as a number
    let d = m.dict::<String, String>("typed").await.unwrap();
    d.insert(&"k".into(), &"not a number".into()).await.unwrap();
    let as_numbers = m.dict::<String, u64>("typed").await.unwrap();
    assert!(matches!(as_numbers.get(&"k".into()).await, Err(Error::TypeMismatch(_))));
    // wrong value type refused by the server: incrementing a string
    let err = as_numbers.increment(&"k".into(), &1).await.unwrap_err();
    assert!(matches!(&err, Error::TypeMismatch(msg) if msg.contains("unsupported operand")), "{err:?}");
    // the connection that saw all these errors still works
    assert_eq!(d.len().await.unwrap(), 1);
}

/// An argument the client cannot convert (a map keyed by lists: unhashable in
/// Python) fails that call alone, before anything is sent: the calls pipelined around
/// it on the same connection go through, and nothing of it reaches the dict.
#[tokio::test]
async fn an_argument_the_client_cannot_convert_fails_only_its_call() {
    use std::collections::BTreeMap;
    let server = Server::start();
    let m = server.client().await;
    let d = m.dict::<String, BTreeMap<Vec<i64>, i64>>("unconvertible").await.unwrap();
    let fine = BTreeMap::new();
    let unhashable = BTreeMap::from([(vec![1], 1)]);
    let [a, b, c] = ["a", "b", "c"].map(String::from);
    let (before, refused, after) = tokio::join!(d.insert(&a, &fine), d.insert(&b, &unhashable), d.insert(&c, &fine));
    before.unwrap();
    after.unwrap();
    let refused = refused.unwrap_err();
    assert!(matches!(&refused, Error::TypeMismatch(m) if m == "unhashable type: 'list'"), "{refused:?}");
    assert_eq!(d.keys().await.unwrap(), vec!["a".to_string(), "c".to_string()]);
    m.ping().await.unwrap();
}

#[tokio::test]
async fn a_client_vanishing_mid_call_harms_nobody() {
    let server = Server::start();
    let bystander = server.client().await;
    for _ in 0..20 {
        let mut raw = server.raw_session();
        let mut out = Vec::new();
        let open =
            Request { id: 1, op: Op::Open { kind: Kind::Dict, name: Some("vanish".into()), args: Args::default() } };
        native::encode(&open, &mut out).unwrap();
        let mut framed = Vec::new();
        agora_proto::frame::encode(&out, &mut framed);
        // Half a frame, then gone.
        raw.send(&framed[..framed.len() / 2]).unwrap();
        drop(raw);
    }
    healthy(&server, &bystander).await;
}

/// A client that keeps sending but stops reading its replies cannot pin its session:
/// once the server has waited a whole heartbeat period for room to write, the session
/// ends and what it held is released (here a lock, which another client then gets).
/// Over a Unix socket that wait is all there is; over TCP the kernel's user timeout
/// would drop the connection too, later and without saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_session_and_its_lock() {
    for unix in [true, false] {
        let server = Server::start_with(ServerOptions {
            unix,
            args: vec!["--heartbeat-timeout".into(), "2s".into()],
            ..Default::default()
        });
        let other = server.client().await;
        // A 1 MiB value, so that a few dozen replies fill any socket buffer.
        let big = other.dict::<String, String>("big").await.unwrap();
        big.insert(&"v".into(), &"x".repeat(1 << 20)).await.unwrap();
        let mut raw = server.raw_session();
        let mut id = 0;
        let mut call = |raw: &mut RawConn, op: Op, read: bool| {
            id += 1;
            let mut out = Vec::new();
            native::encode(&Request { id, op }, &mut out).unwrap();
            raw.send_frame(&out).unwrap();
            read.then(|| native::decode::<Response>(&raw.recv_frame().unwrap()).unwrap().result.unwrap())
        };
        let open = |kind: Kind, name: &str| Op::Open { kind, name: Some(name.into()), args: Args::default() };
        let Some(native::Reply::Opened { object: lock, .. }) = call(&mut raw, open(Kind::Lock, "held"), true) else {
            panic!("no lock")
        };
        let acquire = Op::Call { object: lock, method: "acquire".into(), args: Args::default() };
        assert_eq!(call(&mut raw, acquire, true), Some(native::Reply::Value(agora_proto::Value::Bool(true))));
        let Some(native::Reply::Opened { object: dict, .. }) = call(&mut raw, open(Kind::Dict, "big"), true) else {
            panic!("no dict")
        };
        // 64 MiB of replies asked for, none read.
        for _ in 0..64 {
            let key = agora_proto::Value::Str("v".into());
            call(
                &mut raw,
                Op::Call { object: dict, method: "__getitem__".into(), args: Args::positional(vec![key]) },
                false,
            );
        }
        let lock = other.lock("held").await.unwrap();
        let guard =
            tokio::time::timeout(HANG_GUARD, lock.acquire()).await.expect("the lock was never released").unwrap();
        guard.release().await.unwrap();
        server.wait_for_log("session expired: the client stopped reading");
        drop(raw);
        healthy(&server, &other).await;
    }
}

/// A CPython client that is killed mid-message is a lost connection, not a bad frame:
/// only real protocol violations are logged as warnings.
#[tokio::test]
async fn a_vanished_cpython_client_is_not_logged_as_a_bad_frame() {
    // What a CPython proxy sends first: (None, 'accept_connection', ('x',), {}), pickled;
    // the connection then serves that client's calls.
    const ACCEPT: &[u8] = b"\x80\x02(NX\x11\x00\x00\x00accept_connectionX\x01\x00\x00\x00x\x85}t.";
    let server = Server::start();
    let python_session = || {
        let mut raw = server.raw();
        assert!(raw.handshake(&server.authkey));
        raw.send_frame(ACCEPT).unwrap();
        assert!(raw.recv_frame().unwrap().starts_with(b"\x80"), "a pickled reply");
        raw
    };
    // Killed while sending: a header announcing 100 bytes, 10 of them, then gone — with
    // a reset, as the kernel ends the connections of a killed process.
    let mut vanished = python_session();
    vanished.send(&100u32.to_be_bytes()).unwrap();
    vanished.send(&[0u8; 10]).unwrap();
    let RawConn::Tcp(socket) = vanished else { unreachable!("a TCP test server") };
    reset_on_close(&socket);
    drop(socket);
    // Once the server has closed it (only the observer's session is left)...
    let observer = server.client().await;
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    while observer.stats().await.unwrap().sessions > 1 {
        assert!(std::time::Instant::now() < deadline, "the vanished client's connection was never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...a real violation, so the log has certainly seen both.
    let mut violator = python_session();
    let RawConn::Tcp(socket) = &violator else { unreachable!("a TCP test server") };
    let violator_peer = socket.local_addr().unwrap();
    violator.send(&(-2i32).to_be_bytes()).unwrap();
    server.wait_for_log(&format!("bad frame from a CPython client; closing peer={violator_peer}"));
    let log = server.log();
    assert_eq!(log.matches("bad frame").count(), 1, "only the violation is a bad frame:\n{log}");
}

/// Makes closing `socket` send a reset (SO_LINGER with a zero timeout).
fn reset_on_close(socket: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}
