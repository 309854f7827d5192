//! Queues against the real server: items moved by several processes arrive exactly
//! once; leased items survive consumers killed with SIGKILL; timed-out and cancelled
//! gets never take an item; JoinableQueue's join and shutdown; every error precise.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_client::Error;
use agora_proto::native::{self, Args, Op, Reply, Request, Response};
use agora_proto::{ErrorCode, Value, WireError};
use agora_tests::{Rng, Server, HANG_GUARD};

fn worker(server: &Server, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agora-queue-worker"))
        .arg(&server.address)
        .args(args)
        .env("AGORA_AUTHKEY", std::str::from_utf8(&server.authkey).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn queue worker")
}

/// Waits for a worker (within the hang guard) and returns its output.
fn finish(child: Child) -> String {
    let out = wait_output(child);
    assert!(out.status.success(), "worker failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits for a worker to exit, reading its output meanwhile (a worker that fills the
/// pipe must not block), within the hang guard.
fn wait_output(mut child: Child) -> std::process::Output {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).expect("read worker output");
        out
    });
    let deadline = std::time::Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a worker hung; it printed: {}", String::from_utf8_lossy(&reader.join().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output { status, stdout: reader.join().expect("reader"), stderr: Vec::new() }
}

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f).await.unwrap_or_else(|_| panic!("hang: {what}"))
}

/// Asserts that `f` has not finished within a short while (it must go on waiting).
async fn still_waiting<F: std::future::Future + Unpin>(what: &str, f: &mut F)
where
    F::Output: std::fmt::Debug,
{
    if let Ok(out) = tokio::time::timeout(Duration::from_millis(150), f).await {
        panic!("{what} finished too early: {out:?}");
    }
}

#[test]
fn four_producers_and_four_consumers_move_100_000_items_each_exactly_once() {
    const N: u64 = 100_000;
    const PRODUCERS: u64 = 4;
    let server = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(server.client());
    let queue = rt.block_on(m.queue::<u64>("moved", 64)).unwrap();
    let consumers: Vec<_> = (0..4).map(|_| worker(&server, &["consume", "moved", "64", "16"])).collect();
    let per = N / PRODUCERS;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            worker(&server, &["produce", "moved", "64", &(p * per).to_string(), &((p + 1) * per).to_string(), "16"])
        })
        .collect();
    for p in producers {
        assert_eq!(finish(p).trim(), format!("done {per}"));
    }
    // Consumers drain what is left, then get ShutDown and report.
    rt.block_on(queue.shutdown(false)).unwrap();
    let mut received = Vec::with_capacity(N as usize);
    let mut per_consumer = Vec::new();
    for c in consumers {
        let out = finish(c);
        let items: Vec<u64> = out.lines().filter_map(|l| l.strip_prefix("item ")).map(|x| x.parse().unwrap()).collect();
        assert!(out.ends_with(&format!("done {}\n", items.len())), "consumer finished cleanly");
        per_consumer.push(items.len());
        received.extend(items);
    }
    received.sort_unstable();
    assert_eq!(received.len() as u64, N, "received {} items (per consumer {per_consumer:?})", received.len());
    assert!(received.iter().copied().eq(0..N), "every item exactly once");
    assert!(per_consumer.iter().all(|&n| n > 0), "every consumer took part: {per_consumer:?}");
    assert_eq!(rt.block_on(queue.len()).unwrap(), 0);
}

/// One consumer process's records.
#[derive(Debug, Default)]
struct Records {
    /// `(item, receipt)` of every lease it reported holding, in order.
    leases: Vec<(u64, u64)>,
    acked: Vec<(u64, u64)>,
    ackfail: Vec<(u64, u64)>,
    /// It was killed (so its last record may be missing its outcome).
    killed: bool,
}

fn parse_records(out: &str, killed: bool) -> Records {
    let mut records = Records { killed, ..Default::default() };
    for line in out.lines() {
        let mut words = line.split(' ');
        let kind = words.next().unwrap();
        let mut num = || words.next().map(|w| w.parse::<u64>().unwrap());
        match kind {
            "lease" => records.leases.push((num().unwrap(), num().unwrap())),
            "acked" => records.acked.push((num().unwrap(), num().unwrap())),
            "ackfail" => records.ackfail.push((num().unwrap(), num().unwrap())),
            "done" => assert!(!killed, "a killed worker cannot have finished"),
            other => panic!("unexpected record {other:?}"),
        }
    }
    records
}

#[test]
fn leased_items_survive_consumers_killed_at_random_points_and_are_acked_exactly_once() {
    const N: u64 = 3_000;
    const CONSUMERS: usize = 4;
    const KILLS: usize = 10;
    const LEASE_MS: &str = "250";
    let mut rng = Rng(0x5eed_a60a);
    let server = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = rt.block_on(server.client());
    let jobs = rt.block_on(m.joinable_queue::<u64>("jobs", 0)).unwrap();
    rt.block_on(async {
        for i in 0..N {
            jobs.put(&i).await.unwrap();
        }
    });
    let spawn = |rng: &mut Rng| worker(&server, &["lease-consume", "jobs", LEASE_MS, &rng.next_u64().to_string()]);
    let mut running: Vec<Child> = (0..CONSUMERS).map(|_| spawn(&mut rng)).collect();
    let mut records = Vec::new();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        let victim = running.swap_remove(rng.below(running.len() as u64) as usize);
        // SAFETY: kill(2) on a child process we own.
        unsafe { libc::kill(victim.id() as i32, libc::SIGKILL) };
        let out = wait_output(victim);
        records.push(parse_records(&String::from_utf8(out.stdout).unwrap(), true));
        running.push(spawn(&mut rng));
    }
    // Every item finished (acked) in the end: join returns, nothing is left anywhere.
    rt.block_on(guard("join after the kills", jobs.join())).unwrap();
    assert_eq!(rt.block_on(jobs.len()).unwrap(), 0);
    assert_eq!(rt.block_on(jobs.leased_len()).unwrap(), 0);
    rt.block_on(jobs.shutdown(false)).unwrap();
    for c in running {
        records.push(parse_records(&finish(c), false));
    }

    // Per item: every lease reported (receipts only grow), and the acks.
    let mut leases: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut acks: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in &records {
        for &(item, receipt) in &r.leases {
            leases.entry(item).or_default().push(receipt);
        }
        for &(item, receipt) in &r.acked {
            acks.entry(item).or_default().push(receipt);
        }
    }
    assert!(leases.keys().copied().eq(0..N), "every item was delivered");
    // An outcome may be missing only for a killed consumer's last lease.
    let cut_short: HashSet<(u64, u64)> = records
        .iter()
        .filter(|r| r.killed)
        .filter_map(|r| r.leases.last().copied())
        .filter(|last| !records.iter().any(|r| r.acked.contains(last) || r.ackfail.contains(last)))
        .collect();
    let mut unrecorded = 0;
    for item in 0..N {
        let last = *leases[&item].iter().max().unwrap();
        match acks.get(&item).map(Vec::as_slice) {
            // Acked once, and never delivered again after that ack.
            Some([receipt]) => assert_eq!(*receipt, last, "item {item} was delivered again after its ack"),
            Some(more) => panic!("item {item} acked {} times: receipts {more:?}", more.len()),
            // Its ack happened in a consumer killed before it could say so.
            None => {
                assert!(cut_short.contains(&(item, last)), "item {item} was never acked (leases {:?})", leases[&item]);
                unrecorded += 1;
            }
        }
    }
    assert!(unrecorded <= KILLS, "{unrecorded} unrecorded acks for {KILLS} kills");
    // A failed ack is a lease that ran out: its item was delivered again.
    for r in &records {
        for &(item, receipt) in &r.ackfail {
            assert!(leases[&item].iter().any(|&later| later > receipt), "item {item} not redelivered after ackfail");
        }
    }
    let redelivered = leases.values().filter(|receipts| receipts.len() > 1).count();
    let ackfails: usize = records.iter().map(|r| r.ackfail.len()).sum();
    println!("{redelivered} items redelivered, {ackfails} acks of expired leases refused, {unrecorded} acks cut short");
    assert!(redelivered > 0, "kills and slow consumers made some redeliveries");
}

#[tokio::test]
async fn timed_out_and_cancelled_gets_racing_puts_never_take_an_item() {
    const N: u64 = 3_000;
    let server = Server::start();
    let producer = server.client().await;
    let queue = producer.queue::<u64>("raced", 0).await.unwrap();
    let mut consumers = Vec::new();
    for c in 0..4u64 {
        let m = server.client().await;
        let queue = m.queue::<u64>("raced", 0).await.unwrap();
        consumers.push(tokio::spawn(async move {
            let mut rng = Rng(c + 1);
            let (mut got, mut timeouts, mut dropped) = (Vec::new(), 0u64, 0u64);
            for i in 0..1_500u64 {
                let wait = Duration::from_micros(rng.below(3_000));
                if i % 2 == 0 {
                    // Server-side timeout.
                    match queue.get_timeout(wait).await {
                        Ok(item) => got.push(item),
                        Err(Error::Empty) => timeouts += 1,
                        Err(e) => panic!("get_timeout: {e}"),
                    }
                } else {
                    // Client-side cancellation: the future is dropped.
                    match tokio::time::timeout(wait, queue.get()).await {
                        Ok(item) => got.push(item.unwrap()),
                        Err(_) => dropped += 1,
                    }
                }
            }
            (got, timeouts, dropped, m)
        }));
    }
    let mut rng = Rng(99);
    for i in 0..N {
        queue.put(&i).await.unwrap();
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_micros(rng.below(1_000))).await;
        }
    }
    let mut received = Vec::new();
    let (mut timeouts, mut dropped, mut managers) = (0, 0, Vec::new());
    for c in consumers {
        let (got, t, d, m) = guard("consumer", c).await.unwrap();
        received.extend(got);
        timeouts += t;
        dropped += d;
        managers.push(m);
    }
    assert!(timeouts > 0 && dropped > 0, "both paths raced: {timeouts} timeouts, {dropped} drops");
    // Items given back after a cancelled call arrive asynchronously: drain until all
    // are accounted for (a lost item would hang here until the guard).
    let mut left = Vec::new();
    guard("every item accounted for", async {
        while (received.len() + left.len()) < N as usize {
            match queue.try_get().await.unwrap() {
                Some(item) => left.push(item),
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    let mut all: Vec<u64> = received.iter().chain(&left).copied().collect();
    all.sort_unstable();
    assert!(all.iter().copied().eq(0..N), "received + left == put, no duplicates");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue.len().await.unwrap(), 0, "nothing extra appeared");
    let log = server.log();
    let (server_took_back, client_gave_back) = (
        log.matches("an item handed to a caller that left went back").count(),
        log.matches("an item given back by its client").count(),
    );
    println!(
        "received {}, left {}, {timeouts} timeouts, {dropped} dropped gets; items taken back by the server \
         {server_took_back}, given back by the client {client_gave_back}",
        received.len(),
        left.len()
    );
}

#[tokio::test]
async fn a_cancelled_get_leaves_the_item_for_the_next_getter() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.new_queue::<String>(0).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), q.get()).await.is_err());
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.get().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.put(&"only".to_string()).await.unwrap();
    assert_eq!(guard("second getter", waiting).await.unwrap().unwrap(), "only");
    assert_eq!(q.len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_put_waiting_on_a_full_queue_that_is_abandoned_never_goes_in() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.new_queue::<u32>(1).await.unwrap();
    q.put(&1).await.unwrap();
    assert_eq!(q.put_timeout(&2, Duration::from_millis(50)).await, Err(Error::Full));
    assert!(tokio::time::timeout(Duration::from_millis(50), q.put(&3)).await.is_err(), "cancelled");
    // Cancels are settled off the connection's loop: wait until this one was.
    guard("the cancelled put dropped", async {
        while !server.log().contains("a waiting put whose caller left was dropped") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(q.get().await.unwrap(), 1);
    assert_eq!(q.try_get().await.unwrap(), None, "neither 2 nor 3 went in");
}

#[tokio::test]
async fn queue_errors_are_pythons() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.queue::<u32>("bounded", 2).await.unwrap();
    assert!(q.is_empty().await.unwrap());
    q.put(&1).await.unwrap();
    q.try_put(&2).await.unwrap();
    assert!(q.is_full().await.unwrap());
    assert_eq!(q.len().await.unwrap(), 2);
    assert_eq!(q.try_put(&3).await, Err(Error::Full));
    assert_eq!(q.put_timeout(&3, Duration::ZERO).await, Err(Error::Full));
    assert_eq!(q.get().await.unwrap(), 1);
    assert_eq!(q.get_timeout(Duration::from_millis(10)).await.unwrap(), 2);
    assert_eq!(q.try_get().await.unwrap(), None);
    assert_eq!(q.get_timeout(Duration::from_millis(30)).await, Err(Error::Empty));
    assert_eq!(q.get_timeout(Duration::ZERO).await, Err(Error::Empty));
    // A name is one kind.
    let e = m.joinable_queue::<u32>("bounded", 0).await.unwrap_err();
    assert_eq!(e, Error::WrongKind("'bounded' is a Queue, not a JoinableQueue".into()));
    // task_done on a plain queue is Python's too (same class).
    let j = m.new_joinable_queue::<u32>(0).await.unwrap();
    assert_eq!(j.task_done().await, Err(Error::InvalidValue("task_done() called too many times".into())));
    // A value of another type is given back, not lost.
    let strings = m.queue::<String>("typed", 0).await.unwrap();
    strings.put(&"not a number".to_string()).await.unwrap();
    let numbers = m.queue::<u32>("typed", 0).await.unwrap();
    let e = numbers.get().await.unwrap_err();
    assert!(
        matches!(&e, Error::TypeMismatch(m) if m.ends_with("(the item went back to the head of the queue)")),
        "{e}"
    );
    assert_eq!(strings.get().await.unwrap(), "not a number");
}

/// A raw native session, for arguments the typed client never sends.
struct Raw {
    conn: agora_tests::RawConn,
    next: u64,
}

impl Raw {
    fn open(server: &Server) -> Raw {
        let mut conn = server.raw();
        assert!(conn.handshake(&server.authkey));
        let hello = native::Hello::new("raw");
        let mut body = Vec::new();
        native::encode(&hello, &mut body).unwrap();
        conn.send_frame(&body).unwrap();
        let _: native::Welcome = native::decode(&conn.recv_frame().unwrap()).unwrap();
        Raw { conn, next: 1 }
    }

    fn request(&mut self, op: Op) -> Result<Reply, WireError> {
        self.next += 1;
        let mut body = Vec::new();
        native::encode(&Request { id: self.next, op }, &mut body).unwrap();
        self.conn.send_frame(&body).unwrap();
        let response: Response = native::decode(&self.conn.recv_frame().expect("a reply")).unwrap();
        assert_eq!(response.id, self.next);
        response.result
    }

    fn call(&mut self, object: u64, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
        match self.request(Op::Call { object, method: method.into(), args: Args::positional(args) })? {
            Reply::Value(v) => Ok(v),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn raw_arguments_get_cpythons_errors() {
    let server = Server::start();
    let mut raw = Raw::open(&server);
    let open = Op::Open { kind: native::Kind::JoinableQueue, name: None, args: Args::positional(vec![Value::Int(1)]) };
    let Ok(Reply::Opened { object: q, .. }) = raw.request(open) else { panic!("open") };
    let t = Value::Bool(true);
    let err = |r: Result<Value, WireError>| r.map(|v| panic!("expected an error, got {v:?}")).unwrap_err();
    let e = err(raw.call(q, "get", vec![t.clone(), Value::Int(-1)]));
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, "'timeout' must be a non-negative number"));
    let e = err(raw.call(q, "get", vec![t.clone(), Value::Str("soon".into())]));
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::TypeError, "'<' not supported between instances of 'str' and 'int'")
    );
    assert_eq!(
        raw.call(q, "put", vec![Value::Int(1), t.clone(), Value::Float(-0.5)]).unwrap_err().code,
        ErrorCode::ValueError
    );
    raw.call(q, "put", vec![Value::Int(1)]).unwrap();
    let e = err(raw.call(q, "put", vec![Value::Int(2), t.clone(), Value::Float(-0.5)]));
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, "'timeout' must be a non-negative number"));
    assert_eq!(err(raw.call(q, "put_nowait", vec![Value::Int(2)])).code, ErrorCode::Full);
    let e = err(raw.call(q, "get_leased", vec![t.clone(), Value::None, Value::Int(0)]));
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, "'lease' must be a positive number or None"));
    let e = err(raw.call(q, "ack", vec![Value::Int(12345)]));
    assert_eq!(e.code, ErrorCode::ValueError);
    assert!(e.message.starts_with("lease 12345 is not held"), "{}", e.message);
    raw.call(q, "shutdown", vec![]).unwrap();
    assert_eq!(err(raw.call(q, "put", vec![Value::Int(3)])).code, ErrorCode::ShutDown);
    // As in CPython, with an item left the negative timeout is still refused…
    assert_eq!(err(raw.call(q, "get", vec![t.clone(), Value::Int(-1)])).code, ErrorCode::ValueError);
    assert_eq!(raw.call(q, "get_nowait", vec![]).unwrap(), Value::Int(1));
    // …but once the shut-down queue is empty, ShutDown comes first.
    assert_eq!(err(raw.call(q, "get", vec![t, Value::Int(-1)])).code, ErrorCode::ShutDown);
}

#[tokio::test]
async fn join_returns_only_after_every_item_is_done_or_acked() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.joinable_queue::<u32>("work", 0).await.unwrap();
    q.join().await.unwrap(); // nothing unfinished
    for i in 0..3 {
        q.put(&i).await.unwrap();
    }
    let other = server.client().await;
    let joiner_q = other.joinable_queue::<u32>("work", 0).await.unwrap();
    let mut join = Box::pin(joiner_q.join());
    still_waiting("join with 3 unfinished", &mut join).await;
    assert_eq!(q.get().await.unwrap(), 0);
    q.task_done().await.unwrap();
    still_waiting("join with 2 unfinished", &mut join).await;
    let leased = q.get_leased(Duration::from_secs(30)).await.unwrap();
    assert_eq!((*leased.item(), q.len().await.unwrap(), q.leased_len().await.unwrap()), (1, 1, 1));
    let nacked = leased.nack();
    nacked.await.unwrap();
    still_waiting("join after a nack", &mut join).await;
    let leased = q.get_leased(Duration::from_secs(30)).await.unwrap();
    assert_eq!(*leased.item(), 1, "a nacked item is back at the head");
    leased.ack().await.unwrap();
    still_waiting("join with 1 unfinished", &mut join).await;
    assert_eq!(q.get().await.unwrap(), 2);
    q.task_done().await.unwrap();
    guard("join", join).await.unwrap();
    assert_eq!(q.task_done().await, Err(Error::InvalidValue("task_done() called too many times".into())));
}

#[tokio::test]
async fn shutdown_releases_blocked_getters_putters_and_joiners_with_the_right_outcome() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.joinable_queue::<u32>("closing", 1).await.unwrap();
    let empty = m.joinable_queue::<u32>("empty", 0).await.unwrap();
    let getter = tokio::spawn({
        let empty = empty.clone();
        async move { empty.get().await }
    });
    let leased_getter = tokio::spawn({
        let empty = empty.clone();
        async move { empty.get_leased(Duration::from_secs(5)).await.map(|l| *l.item()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    empty.shutdown(false).await.unwrap();
    assert_eq!(guard("getter", getter).await.unwrap(), Err(Error::QueueShutDown));
    assert_eq!(guard("leased getter", leased_getter).await.unwrap(), Err(Error::QueueShutDown));

    q.put(&1).await.unwrap();
    let putter = tokio::spawn({
        let q = q.clone();
        async move { q.put(&2).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(q.get().await.unwrap(), 1, "taken, not yet done");
    guard("putter", putter).await.unwrap().expect("room appeared: 2 went in");
    assert_eq!(q.len().await.unwrap(), 1);
    let mut join = Box::pin(q.join());
    still_waiting("join", &mut join).await;
    q.shutdown(true).await.unwrap();
    // The drained items count as done; the one taken earlier does not.
    still_waiting("join after an immediate shutdown", &mut join).await;
    assert_eq!(q.len().await.unwrap(), 0);
    assert_eq!(q.get().await, Err(Error::QueueShutDown));
    assert_eq!(q.try_get().await, Err(Error::QueueShutDown));
    assert_eq!(q.put(&4).await, Err(Error::QueueShutDown));
    assert_eq!(q.try_put(&4).await, Err(Error::QueueShutDown));
    q.task_done().await.unwrap();
    guard("join", join).await.unwrap();
}

#[tokio::test]
async fn a_blocked_put_is_released_by_shutdown_without_its_item() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.new_queue::<u32>(1).await.unwrap();
    q.put(&1).await.unwrap();
    let putter = tokio::spawn({
        let q = q.clone();
        async move { q.put(&2).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.shutdown(false).await.unwrap();
    assert_eq!(guard("putter", putter).await.unwrap(), Err(Error::QueueShutDown));
    assert_eq!(q.get().await.unwrap(), 1, "gets drain after a shutdown");
    assert_eq!(q.get().await, Err(Error::QueueShutDown), "2 never went in");
}

#[tokio::test]
async fn a_lease_that_runs_out_or_whose_session_ends_is_delivered_again() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.queue::<String>("leases", 0).await.unwrap();
    q.put(&"a".to_string()).await.unwrap();
    let first = q.get_leased(Duration::from_millis(100)).await.unwrap();
    assert_eq!(q.try_get_leased(Duration::from_secs(1)).await.unwrap().map(|l| l.receipt()), None);
    // No call needed: the server's timer returns it.
    let again = guard("redelivery", q.get_leased(Duration::from_secs(30))).await.unwrap();
    assert_eq!(again.item(), "a");
    assert!(again.receipt() > first.receipt());
    let stale = first.receipt();
    assert!(
        matches!(first.ack().await, Err(Error::InvalidValue(m)) if m.starts_with(&format!("lease {stale} is not held")))
    );
    // Its consumer's session ends: back at the head for the next consumer.
    q.put(&"b".to_string()).await.unwrap();
    again.nack().await.unwrap();
    let mut raw = Raw::open(&server);
    let open = Op::Open { kind: native::Kind::Queue, name: Some("leases".into()), args: Args::positional(vec![]) };
    let Ok(Reply::Opened { object, .. }) = raw.request(open) else { panic!("open") };
    let held = raw.call(object, "get_leased", vec![]).unwrap();
    assert!(matches!(&held, Value::Tuple(pair) if pair[1] == Value::Str("a".into())), "{held:?}");
    assert_eq!(q.len().await.unwrap(), 1, "only b is left");
    drop(raw); // the connection closes: the session ends
    guard("the session's end", async {
        while q.leased_len().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let back = guard("after the session ended", q.get_leased(Duration::from_secs(30))).await.unwrap();
    assert_eq!(back.item(), "a", "back at the head, before b");
    // Dropping a lease unsettled nacks it.
    drop(back);
    assert_eq!(guard("after a drop", q.get()).await.unwrap(), "a");
    assert_eq!(q.get().await.unwrap(), "b");
    assert_eq!(q.leased_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_stream_yields_items_until_shutdown() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.new_queue::<u32>(4).await.unwrap();
    let mut items = q.stream();
    let producer = tokio::spawn({
        let q = q.clone();
        async move {
            for i in 0..20 {
                q.put(&i).await.unwrap();
            }
            q.shutdown(false).await.unwrap();
        }
    });
    let mut got = Vec::new();
    while let Some(item) = guard("stream", items.next()).await {
        got.push(item.unwrap());
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(items.next().await.is_none(), "fused");
    producer.await.unwrap();
    // A stream dropped while it waits takes nothing.
    let q = m.new_queue::<u32>(0).await.unwrap();
    let mut items = q.stream();
    assert!(tokio::time::timeout(Duration::from_millis(50), items.next()).await.is_err());
    drop(items);
    q.put(&7).await.unwrap();
    assert_eq!(q.try_get().await.unwrap(), Some(7));
}

#[test]
fn the_blocking_api_across_threads() {
    let server = Server::start();
    let m = agora_client::blocking::Manager::connect(&server.address, &server.authkey).unwrap();
    let jobs = m.joinable_queue::<u64>("blocking-jobs", 8).unwrap();
    let results = m.new_queue::<u64>(0).unwrap();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (jobs, results) = (jobs.clone(), results.clone());
            std::thread::spawn(move || {
                for job in jobs.iter() {
                    let job = job.unwrap();
                    results.put(&(job * 10)).unwrap();
                    jobs.task_done().unwrap();
                    // Odd jobs also take the next one on lease, when there is one now.
                    // (The main thread may have shut the queue down already: nothing left.)
                    if job % 2 == 1 {
                        match jobs.try_get_leased(Duration::from_secs(30)) {
                            Ok(Some(leased)) => {
                                results.put(&(*leased.item() * 10)).unwrap();
                                leased.ack().unwrap();
                            }
                            Ok(None) | Err(Error::QueueShutDown) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for job in 0..100 {
        jobs.put(&job).unwrap();
    }
    jobs.join().unwrap();
    jobs.shutdown(false).unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let mut got: Vec<u64> = std::iter::from_fn(|| results.try_get().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..100).map(|j| j * 10).collect::<Vec<_>>());
    assert_eq!(jobs.try_get(), Err(Error::QueueShutDown));
    assert_eq!(jobs.get_timeout(Duration::from_millis(1)), Err(Error::QueueShutDown));
    let q = m.new_queue::<u8>(1).unwrap();
    q.try_put(&1).unwrap();
    assert_eq!(q.put_timeout(&2, Duration::from_millis(10)), Err(Error::Full));
    assert_eq!(q.try_get_leased(Duration::from_secs(1)).unwrap().map(|l| l.nack()).transpose(), Ok(Some(())));
    assert!(q.is_full().unwrap());
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<agora_client::Queue<std::rc::Rc<u8>>>();
    shareable::<agora_client::JoinableQueue<std::rc::Rc<u8>>>();
    shareable::<agora_client::blocking::Queue<std::rc::Rc<u8>>>();
    shareable::<agora_client::blocking::JoinableQueue<std::rc::Rc<u8>>>();
    fn sendable<T: Send + 'static>() {}
    sendable::<agora_client::Leased<u8>>();
    sendable::<agora_client::Items<u8>>();
}

#[tokio::test]
async fn a_one_worker_server_hands_items_and_locks_between_blocked_clients() {
    // With `--workers 1` every connection and every parked call shares one thread: a
    // blocked get or acquire must still let the put or release that frees it run.
    let server = Server::start_with(agora_tests::ServerOptions {
        args: vec!["--workers".into(), "1".into()],
        ..Default::default()
    });
    server.wait_for_log("workers=1");
    let (producer, consumer) = (server.client().await, server.client().await);
    let q_in = consumer.queue::<u64>("handoff", 4).await.unwrap();
    let getter = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..500 {
            got.push(q_in.get().await.unwrap());
        }
        got
    });
    let q_out = producer.queue::<u64>("handoff", 4).await.unwrap();
    for i in 0..500u64 {
        q_out.put(&i).await.unwrap(); // blocks whenever the 4 slots are full
    }
    assert_eq!(guard("the getter", getter).await.unwrap(), (0..500).collect::<Vec<_>>());

    let (a, b) = (producer.lock("one").await.unwrap(), consumer.lock("one").await.unwrap());
    let held = a.acquire().await.unwrap();
    let mut waiting = Box::pin(b.acquire());
    still_waiting("the second acquire", &mut waiting).await;
    held.release().await.unwrap();
    guard("the second acquire", waiting).await.unwrap().release().await.unwrap();
}

/// Reliable consumption with a dead letter queue: two consumers ack good items and
/// nack poison ones; every item ends either acked once or in the dead letter queue
/// once, each poison item after exactly `max_deliveries` deliveries.
#[tokio::test]
async fn dead_letters_after_max_deliveries_none_lost_none_duplicated() {
    use agora_client::QueueOptions;
    const ITEMS: u64 = 60;
    const MAX: u32 = 3;
    let server = Server::start();
    let m = server.client().await;
    let options = QueueOptions::new().dead_letter(MAX, "work.dead");
    let work = m.queue_with::<u64>("work", &options).await.unwrap();
    for i in 0..ITEMS {
        work.put(&i).await.unwrap();
    }
    let poison = |i: u64| i % 7 == 3;
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let m = server.client().await;
        consumers.push(tokio::spawn(async move {
            let work = m.queue::<u64>("work", 0).await.unwrap();
            let (mut acked, mut deliveries) = (Vec::new(), BTreeMap::<u64, u32>::new());
            while let Some(leased) = work.try_get_leased(HANG_GUARD).await.unwrap() {
                let item = *leased.item();
                let n = leased.deliveries().await.unwrap();
                let seen = deliveries.entry(item).or_default();
                *seen = (*seen).max(n);
                if poison(item) {
                    leased.nack().await.unwrap();
                } else {
                    leased.ack().await.unwrap();
                    acked.push(item);
                }
            }
            (acked, deliveries)
        }));
    }
    let mut acked = Vec::new();
    let mut most = BTreeMap::<u64, u32>::new();
    for consumer in consumers {
        let (a, d) = tokio::time::timeout(HANG_GUARD, consumer).await.unwrap().unwrap();
        acked.extend(a);
        for (item, n) in d {
            let seen = most.entry(item).or_default();
            *seen = (*seen).max(n);
        }
    }
    // A consumer may stop while the other still holds the last leases: drain what is left.
    let work = m.queue::<u64>("work", 0).await.unwrap();
    while let Some(leased) = work.try_get_leased(HANG_GUARD).await.unwrap() {
        let item = *leased.item();
        let n = leased.deliveries().await.unwrap();
        let seen = most.entry(item).or_default();
        *seen = (*seen).max(n);
        if poison(item) {
            leased.nack().await.unwrap();
        } else {
            leased.ack().await.unwrap();
            acked.push(item);
        }
    }
    assert_eq!((work.len().await.unwrap(), work.leased_len().await.unwrap()), (0, 0));
    let dead = m.queue::<u64>("work.dead", 0).await.unwrap();
    let mut dead_items = Vec::new();
    while let Some(item) = dead.try_get().await.unwrap() {
        dead_items.push(item);
    }
    let mut all: Vec<u64> = acked.iter().chain(&dead_items).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..ITEMS).collect::<Vec<_>>(), "every item exactly once: acked or dead");
    assert!(dead_items.iter().all(|&i| poison(i)) && acked.iter().all(|&i| !poison(i)));
    for (item, n) in most {
        if poison(item) {
            assert_eq!(n, MAX, "poison item {item} was delivered {n} times");
        } else {
            assert_eq!(n, 1, "good item {item} delivered once");
        }
    }
}

/// A delayed nack keeps the item out of the queue until the delay is over: the item
/// behind it comes first, a try in between finds nothing, and the item then comes back.
#[tokio::test]
async fn a_nack_with_a_delay_hides_the_item_until_the_delay_is_over() {
    let server = Server::start();
    let m = server.client().await;
    let q = m.queue::<String>("retry", 0).await.unwrap();
    q.put(&"a".to_owned()).await.unwrap();
    q.put(&"b".to_owned()).await.unwrap();
    let a = q.get_leased(HANG_GUARD).await.unwrap();
    assert_eq!(a.item(), "a");
    a.nack_after(Duration::from_secs(2)).await.unwrap();
    assert_eq!(q.delayed_len().await.unwrap(), 1);
    assert_eq!(q.try_get().await.unwrap().as_deref(), Some("b"), "b overtakes the delayed a");
    assert_eq!(q.try_get().await.unwrap(), None, "a is not visible during its delay");
    assert_eq!(q.len().await.unwrap(), 0);
    let again = q.get_leased_timeout(HANG_GUARD, HANG_GUARD).await.unwrap();
    assert_eq!(again.item(), "a", "back after its delay");
    assert_eq!(again.deliveries().await.unwrap(), 2);
    again.ack().await.unwrap();
    assert_eq!(q.delayed_len().await.unwrap(), 0);
}

/// A CPython-style bad configuration is refused with a clear error.
#[tokio::test]
async fn dead_letter_settings_are_checked() {
    let server = Server::start();
    let m = server.client().await;
    let half = agora_client::QueueOptions::new().dead_letter(0, "d");
    match m.queue_with::<u8>("q0", &half).await {
        Err(Error::InvalidValue(message)) => assert!(message.contains("max_deliveries"), "{message}"),
        other => panic!("{other:?}"),
    }
}
