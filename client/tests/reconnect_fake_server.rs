//! What the client sends around a reconnect, seen by a scripted server: one attach
//! per object, releases counted per session, nothing for objects that are gone, and
//! nothing on behalf of the old session's grants.
//!
//! The real server is exercised in `tests/tests/reconnect.rs`; here a fake one records
//! every request, so the tests can say exactly what was (not) sent.

mod fake;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_client::proto::io::{read_frame, write_frame};
use agora_client::proto::native::{self, Kind, Op, Reply, Response};
use agora_client::proto::{ErrorCode, Value, WireError};
use agora_client::{Error, Manager};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

const KEY: &[u8] = b"fake-key";
const NAMED: u64 = 0x10;

#[derive(Default)]
struct Script {
    /// Every request but pings: (connection number, op).
    log: Vec<(usize, Op)>,
    /// The objects that exist, with their kinds.
    alive: HashMap<u64, Kind>,
    next_anonymous: u64,
    /// Connections the client closed (the server read end-of-stream).
    closed: Vec<usize>,
}

/// A scripted server on a Unix socket; `restart` drops the connection and forgets
/// what a restart would.
struct Fake {
    _dir: tempfile::TempDir,
    address: String,
    script: Arc<Mutex<Script>>,
    kick: Arc<Notify>,
}

impl Fake {
    async fn start() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let script = Arc::new(Mutex::new(Script { next_anonymous: 0x20, ..Default::default() }));
        let kick = Arc::new(Notify::new());
        tokio::spawn(serve(listener, script.clone(), kick.clone()));
        Fake { address: format!("unix:{}", path.display()), _dir: dir, script, kick }
    }

    /// Ends the current connection, as a restart would; afterwards only `kept`
    /// objects exist.
    fn restart(&self, kept: &[u64]) {
        self.script.lock().unwrap().alive.retain(|id, _| kept.contains(id));
        self.kick.notify_one();
    }

    /// The ops sent on connection `n`, in order.
    fn sent_on(&self, n: usize) -> Vec<Op> {
        self.script.lock().unwrap().log.iter().filter(|(c, _)| *c == n).map(|(_, op)| op.clone()).collect()
    }
}

async fn serve(listener: UnixListener, script: Arc<Mutex<Script>>, kick: Arc<Notify>) {
    let mut n = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        n += 1;
        tokio::select! {
            _ = kick.notified() => {}
            _ = session(stream, n, &script) => {}
        }
    }
}

async fn session(mut stream: UnixStream, n: usize, script: &Mutex<Script>) {
    let mut buf = fake::welcome(&mut stream, KEY, n as u64).await;
    loop {
        let Ok(frame) = read_frame(&mut stream, &mut buf, u64::MAX).await else {
            script.lock().unwrap().closed.push(n);
            return;
        };
        let request = native::decode_request(&frame).unwrap();
        let result = answer(&mut script.lock().unwrap(), n, request.op);
        let mut body = Vec::new();
        native::encode(&Response { id: request.id, result }, &mut body).unwrap();
        if write_frame(&mut stream, &body).await.is_err() {
            return;
        }
    }
}

fn answer(script: &mut Script, n: usize, op: Op) -> Result<Reply, WireError> {
    if op != Op::Ping {
        script.log.push((n, op.clone()));
    }
    match op {
        Op::Open { kind, name, .. } => {
            let object = if name.is_some() {
                NAMED
            } else {
                script.next_anonymous += 1;
                script.next_anonymous
            };
            script.alive.insert(object, kind.clone());
            Ok(Reply::Opened { object, kind, created: true })
        }
        Op::Attach { object } => match script.alive.get(&object) {
            Some(kind) => Ok(Reply::Opened { object, kind: kind.clone(), created: false }),
            None => Err(WireError::new(
                ErrorCode::NoSuchObject,
                format!("object {object:x} does not exist (it did not survive the restart)"),
            )),
        },
        Op::Call { method, .. } if method == "acquire_fenced" => Ok(Reply::Value(Value::Int(7))),
        Op::Call { .. } => Ok(Reply::Value(Value::Int(1))),
        _ => Ok(Reply::Done),
    }
}

/// Waits until `m` has seen its connection end.
async fn lost(m: &Manager) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while m.connection_error().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client notices the connection ended");
}

fn attaches(ops: &[Op]) -> Vec<u64> {
    let mut ids: Vec<u64> =
        ops.iter().filter_map(|op| if let Op::Attach { object } = op { Some(*object) } else { None }).collect();
    ids.sort_unstable();
    ids
}

fn releases(ops: &[Op]) -> Vec<u64> {
    ops.iter().filter_map(|op| if let Op::Release { object } = op { Some(*object) } else { None }).collect()
}

#[tokio::test]
async fn one_attach_per_object_and_releases_per_session() {
    let fake = Fake::start().await;
    let m = Manager::connect(&fake.address, KEY).await.unwrap();
    // Three proxies of one named object (three opens: three server handles), and an
    // anonymous object.
    let (a, b, c) =
        (m.value::<i64>("x", &0).await.unwrap(), m.value("x", &0).await.unwrap(), m.value("x", &0).await.unwrap());
    let gone = m.new_list::<i64>(&[]).await.unwrap();
    let gone_id = gone.id();
    drop(a); // before the restart: a release, as ever
    m.ping().await.unwrap(); // the server answers in order: the release is in
    assert_eq!(releases(&fake.sent_on(1)), vec![NAMED]);

    fake.restart(&[NAMED]);
    lost(&m).await;
    assert_eq!(b.get().await.unwrap(), 1, "the call runs on the new connection");
    let second = fake.sent_on(2);
    assert_eq!(attaches(&second), vec![NAMED, gone_id], "one attach per object, before anything else");
    assert!(matches!(second.last(), Some(Op::Call { object: NAMED, .. })), "{second:?}");

    // The lost object's proxy fails without sending anything, and so does its drop.
    match gone.len().await {
        Err(Error::NoSuchObject(m)) => {
            assert!(m.starts_with(&format!("list #{gone_id:x} did not survive the server restart")), "{m}");
            assert!(m.contains("it did not survive the restart"), "what the server said: {m}");
        }
        other => panic!("expected NoSuchObject, got {other:?}"),
    }
    drop(gone);
    // One server handle holds the object for both remaining proxies: the first drop
    // sends nothing, the last one releases it once.
    drop(b);
    m.ping().await.unwrap();
    assert!(releases(&fake.sent_on(2)).is_empty(), "{:?}", fake.sent_on(2));
    drop(c);
    m.ping().await.unwrap();
    assert_eq!(releases(&fake.sent_on(2)), vec![NAMED]);
    assert_eq!(fake.sent_on(2).len(), 4, "two attaches, a call, a release: {:?}", fake.sent_on(2));
}

/// Dropping the last proxy and the manager together: the release queued by the proxy's
/// drop still goes out before the client closes the connection.
#[tokio::test]
async fn what_was_queued_when_the_manager_is_dropped_still_goes_out() {
    let fake = Fake::start().await;
    let m = Manager::connect(&fake.address, KEY).await.unwrap();
    let x = m.value::<i64>("x", &0).await.unwrap();
    drop(x);
    drop(m);
    tokio::time::timeout(Duration::from_secs(30), async {
        while !fake.script.lock().unwrap().closed.contains(&1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client closes its connection once every handle is gone");
    assert_eq!(releases(&fake.sent_on(1)), vec![NAMED], "{:?}", fake.sent_on(1));
}

#[tokio::test]
async fn grants_of_the_old_session_send_nothing() {
    let fake = Fake::start().await;
    let m = Manager::connect(&fake.address, KEY).await.unwrap();
    let lock = m.lock("ledger").await.unwrap();
    let kept = lock.acquire().await.unwrap();
    let dropped = lock.acquire().await.unwrap();
    assert_eq!(kept.token(), 7);
    assert!(kept.is_valid());

    fake.restart(&[NAMED]);
    lost(&m).await;
    assert!(!kept.is_valid(), "the session that held it ended");
    match kept.release().await {
        Err(Error::SessionExpired(m)) => assert!(m.contains("belonged to a session that ended"), "{m}"),
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    drop(dropped);
    m.ping().await.unwrap(); // reconnects
    assert!(
        fake.sent_on(2).iter().all(|op| matches!(op, Op::Attach { .. })),
        "only the re-attach: {:?}",
        fake.sent_on(2)
    );
    // A grant on the new connection is released there.
    let fresh = lock.acquire().await.unwrap();
    fresh.release().await.unwrap();
    let calls: Vec<String> = fake
        .sent_on(2)
        .into_iter()
        .filter_map(|op| if let Op::Call { method, .. } = op { Some(method.to_string()) } else { None })
        .collect();
    assert_eq!(calls, vec!["acquire_fenced", "release_fenced"]);
}

#[tokio::test]
async fn a_reply_that_arrives_as_its_caller_leaves_is_given_back() {
    let fake = Fake::start().await;
    let m = Manager::connect(&fake.address, KEY).await.unwrap();
    let queue = m.queue::<i64>("q", 0).await.unwrap();
    let mut get = Box::pin(queue.get());
    // One poll sends the request; then the item arrives while nobody polls.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(get.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(get); // the caller leaves with the item unread: it goes back
    m.ping().await.unwrap();
    let calls: Vec<String> = fake
        .sent_on(1)
        .into_iter()
        .filter_map(|op| if let Op::Call { method, .. } = op { Some(method.to_string()) } else { None })
        .collect();
    assert_eq!(calls, vec!["get", "unget"]);
}
