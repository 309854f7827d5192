//! Synchronization objects across real processes and sessions: Lock, RLock,
//! Semaphore, BoundedSemaphore, Condition, Event, Barrier — Python's semantics and
//! error texts, locks that die with their holder, fencing tokens, and hand-offs that
//! survive cancellation. Outcomes are deterministic; timeouts are hang guards only.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_client::{Error, Manager};
use agora_proto::native::{self, Args, Kind, Op, Reply, Request, Response};
use agora_proto::{ErrorCode, Value, WireError};
use agora_tests::{RawConn, Server, ServerOptions, HANG_GUARD};
use tokio::sync::mpsc;

/// A worker process and the lines it prints, as they come.
struct Worker {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Worker {
    fn spawn(server: &Server, args: &[&str]) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora-sync-worker"))
            .arg(&server.address)
            .args(args)
            .env("AGORA_AUTHKEY", std::str::from_utf8(&server.authkey).unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker { child, lines }
    }

    /// The next line the worker prints.
    async fn line(&mut self) -> String {
        match tokio::time::timeout(HANG_GUARD, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the worker exited without printing more: {:?}", self.child.try_wait()),
            Err(_) => panic!("hang guard: the worker printed nothing"),
        }
    }

    /// Every line up to and including `done`.
    async fn until_done(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self.line().await;
            if line == "done" {
                return out;
            }
            out.push(line);
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child process; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("reap the worker");
    }

    async fn finish(mut self) {
        let status = tokio::task::spawn_blocking(move || self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "worker failed: {status:?}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Awaits `future`, or panics after the hang guard.
async fn guarded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future).await.unwrap_or_else(|_| panic!("hang guard: {what}"))
}

fn strictly_increasing(tokens: &[u64]) -> bool {
    tokens.windows(2).all(|w| w[0] < w[1])
}

fn runtime_error(result: agora_client::Result<impl std::fmt::Debug>, message: &str) {
    match result {
        Err(Error::Runtime(m)) => assert_eq!(m, message),
        other => panic!("expected RuntimeError({message:?}), got {other:?}"),
    }
}

// --- Lock across processes -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_increment_under_a_lock_to_exactly_2000_with_growing_tokens() {
    let server = Server::start();
    let mut workers: Vec<_> =
        (0..4).map(|_| Worker::spawn(&server, &["incr", "counts", "n", "500", "counter-lock", "tokens"])).collect();
    let mut per_process = Vec::new();
    for w in &mut workers {
        let lines = guarded("incr worker", w.until_done()).await;
        let tokens: Vec<u64> =
            lines[0].strip_prefix("tokens ").unwrap().split(' ').map(|t| t.parse().unwrap()).collect();
        assert_eq!(tokens.len(), 500);
        per_process.push(tokens);
    }
    for w in workers {
        w.finish().await;
    }
    let m = server.client().await;
    let total = m.dict::<String, i64>("counts").await.unwrap().get(&"n".into()).await.unwrap();
    assert_eq!(total, Some(2000), "no increment lost: the lock excluded every other writer");
    // Every process saw its tokens grow, and in lock order (the shared list was
    // appended under the lock) they grow strictly across all processes.
    for tokens in &per_process {
        assert!(strictly_increasing(tokens), "one process's tokens: {tokens:?}");
    }
    let in_lock_order = m.list::<u64>("tokens").await.unwrap().to_vec().await.unwrap();
    assert_eq!(in_lock_order.len(), 2000);
    assert!(strictly_increasing(&in_lock_order), "tokens in grant order strictly increase");
    let all: BTreeSet<u64> = per_process.iter().flatten().copied().collect();
    assert_eq!(all.len(), 2000, "no two grants share a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_holder_releases_its_lock_rlock_and_permit() {
    let server = Server::start();
    let mut holder = Worker::spawn(&server, &["hold", "k-lock", "k-rlock", "k-sem"]);
    let held_token: u64 = holder.line().await.strip_prefix("holding ").unwrap().parse().unwrap();
    let m = server.client().await;
    let (lock, rlock, sem) =
        (m.lock("k-lock").await.unwrap(), m.rlock("k-rlock").await.unwrap(), m.semaphore("k-sem", 1).await.unwrap());
    assert!(lock.try_acquire().await.unwrap().is_none(), "held by the worker");
    assert!(rlock.try_acquire().await.unwrap().is_none());
    assert!(sem.try_acquire().await.unwrap().is_none());
    // Block on all three, then kill the holder.
    let waits = tokio::spawn({
        let (lock, rlock, sem) = (lock.clone(), rlock.clone(), sem.clone());
        async move {
            let (l, r, s) = tokio::join!(lock.acquire(), rlock.acquire(), sem.acquire());
            (l.unwrap(), r.unwrap(), s.unwrap())
        }
    });
    holder.kill();
    let (l, r, s) = guarded("acquires after the holder died", waits).await.unwrap();
    assert!(l.token() > held_token, "a new grant, with a newer token");
    assert!(l.is_valid() && r.is_valid() && s.is_valid());
    drop((l, r, s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_loses_its_lock_after_the_heartbeat_timeout_and_learns_it() {
    let server = Server::start_with(ServerOptions {
        args: vec!["--heartbeat-timeout".into(), "1500ms".into()],
        ..Default::default()
    });
    let mut frozen = Worker::spawn(&server, &["hold-lock", "frozen-lock"]);
    let frozen_token: u64 = frozen.line().await.strip_prefix("holding ").unwrap().parse().unwrap();
    let m = server.client().await;
    let lock = m.lock("frozen-lock").await.unwrap();
    frozen.signal(libc::SIGSTOP);
    // The server hears nothing for 1.5 s, ends the session, and hands the lock on.
    let guard = guarded("the frozen holder's lock", lock.acquire()).await.unwrap();
    assert!(guard.token() > frozen_token);
    tokio::task::block_in_place(|| server.wait_for_log("session expired"));
    frozen.signal(libc::SIGCONT);
    let error = frozen.line().await;
    assert!(error.starts_with("error SessionExpired("), "the resumed client is told precisely: {error}");
    assert_eq!(frozen.line().await, "valid false", "its guard knows it no longer holds the lock");
    assert!(frozen.line().await.starts_with("connection Some(SessionExpired("));
    assert!(frozen.line().await.starts_with("release Err(SessionExpired("));
    frozen.finish().await;
    // The resumed client released nothing of ours.
    assert!(lock.is_locked().await.unwrap());
    assert!(guard.is_valid());
    guard.release().await.unwrap();
}

// --- Condition, Barrier, Event ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_producers_and_consumers_across_processes() {
    let server = Server::start();
    let m = server.client().await;
    let condition = m.condition("jobs-ready").await.unwrap();
    let jobs = m.list::<i64>("jobs").await.unwrap();
    let mut consumers: Vec<_> = (0..3).map(|_| Worker::spawn(&server, &["consume", "jobs-ready", "jobs"])).collect();
    let producers = vec![
        Worker::spawn(&server, &["produce", "jobs-ready", "jobs", "0", "100"]),
        Worker::spawn(&server, &["produce", "jobs-ready", "jobs", "100", "200"]),
    ];
    for mut p in producers {
        guarded("producer", p.until_done()).await;
        p.finish().await;
    }
    // One stop sign per consumer, behind every job.
    let guard = condition.acquire().await.unwrap();
    jobs.extend(&[-1, -1, -1]).await.unwrap();
    condition.notify_all().await.unwrap();
    guard.release().await.unwrap();
    let mut seen = Vec::new();
    for c in &mut consumers {
        let mine: Vec<i64> = guarded("consumer", c.until_done()).await.iter().map(|l| l.parse().unwrap()).collect();
        // Each producer's jobs reach any one consumer in the order they were made.
        for range in [0..100, 100..200] {
            let from_one: Vec<i64> = mine.iter().copied().filter(|j| range.contains(j)).collect();
            assert!(from_one.windows(2).all(|w| w[0] < w[1]), "{from_one:?}");
        }
        seen.extend(mine);
    }
    for c in consumers {
        c.finish().await;
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>(), "every job consumed exactly once");
    assert!(jobs.is_empty().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_rounds_across_processes() {
    let server = Server::start();
    let mut workers: Vec<_> = (0..4).map(|_| Worker::spawn(&server, &["barrier", "meet", "4", "3"])).collect();
    let mut rounds = vec![BTreeSet::new(); 3];
    for w in &mut workers {
        for line in guarded("barrier worker", w.until_done()).await {
            let (round, index) = line.split_once(' ').unwrap();
            assert!(rounds[round.parse::<usize>().unwrap()].insert(index.parse::<usize>().unwrap()));
        }
    }
    for w in workers {
        w.finish().await;
    }
    for round in rounds {
        assert_eq!(round, (0..4).collect(), "each round hands out every arrival index once");
    }
    let b = server.client().await.barrier("meet", 4).await.unwrap();
    assert_eq!((b.parties().await.unwrap(), b.n_waiting().await.unwrap(), b.broken().await.unwrap()), (4, 0, false));
}

/// Waits until `n` parties wait at `barrier`.
async fn until_waiting(barrier: &agora_client::Barrier, n: usize) {
    guarded("parties arriving", async {
        while barrier.n_waiting().await.unwrap() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_timeout_abort_and_reset_break_it_for_everyone() {
    let server = Server::start();
    let (a, b) = (server.client().await, server.client().await);
    let (ba, bb) = (a.barrier("b", 3).await.unwrap(), b.barrier("b", 3).await.unwrap());
    assert_eq!((ba.parties().await.unwrap(), ba.n_waiting().await.unwrap(), ba.broken().await.unwrap()), (3, 0, false));

    // A timeout breaks the barrier for every party.
    let first = tokio::spawn({
        let ba = ba.clone();
        async move { ba.wait().await }
    });
    until_waiting(&bb, 1).await;
    assert_eq!(bb.wait_timeout(Duration::from_millis(100)).await, Err(Error::BrokenBarrier));
    assert_eq!(guarded("first party", first).await.unwrap(), Err(Error::BrokenBarrier));
    assert!(bb.broken().await.unwrap());
    assert_eq!(ba.wait().await, Err(Error::BrokenBarrier), "broken until reset");
    bb.reset().await.unwrap();
    assert!(!bb.broken().await.unwrap());

    // Abort breaks it too.
    let first = tokio::spawn({
        let ba = ba.clone();
        async move { ba.wait().await }
    });
    until_waiting(&bb, 1).await;
    bb.abort().await.unwrap();
    assert_eq!(guarded("aborted party", first).await.unwrap(), Err(Error::BrokenBarrier));
    assert_eq!(bb.n_waiting().await.unwrap(), 0);

    // Reset while a party waits: it fails, and the barrier works again after.
    bb.reset().await.unwrap();
    let first = tokio::spawn({
        let ba = ba.clone();
        async move { ba.wait().await }
    });
    until_waiting(&bb, 1).await;
    bb.reset().await.unwrap();
    assert_eq!(guarded("reset party", first).await.unwrap(), Err(Error::BrokenBarrier));
    let c = server.client().await.barrier("b", 3).await.unwrap();
    let (x, y, z) = guarded("a full round", async { tokio::join!(ba.wait(), bb.wait(), c.wait()) }).await;
    let mut indexes = vec![x.unwrap(), y.unwrap(), z.unwrap()];
    indexes.sort_unstable();
    assert_eq!(indexes, vec![0, 1, 2]);

    // A zero timeout with others missing breaks it at once, as in CPython.
    assert_eq!(ba.wait_timeout(Duration::ZERO).await, Err(Error::BrokenBarrier));
    // And parties must be at least one.
    assert_eq!(a.new_barrier(0).await.unwrap_err(), Error::InvalidValue("parties must be >= 1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_event_waiters_all_wake_on_one_set() {
    let server = Server::start();
    let managers: Vec<Manager> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(server.client().await);
        }
        v
    };
    let m = server.client().await;
    let event = m.event("go").await.unwrap();
    let arrived = m.dict::<String, i64>("arrived").await.unwrap();
    let woke = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for i in 0..100 {
        let manager = managers[i % managers.len()].clone();
        let woke = woke.clone();
        waiters.push(tokio::spawn(async move {
            let event = manager.event("go").await.unwrap();
            let arrived = manager.dict::<String, i64>("arrived").await.unwrap();
            arrived.increment(&"n".into(), &1).await.unwrap();
            event.wait().await.unwrap();
            woke.fetch_add(1, Ordering::SeqCst);
        }));
    }
    guarded("every waiter arriving", async {
        while arrived.get(&"n".into()).await.unwrap() != Some(100) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!event.wait_timeout(Duration::from_millis(50)).await.unwrap(), "not set yet");
    assert_eq!(woke.load(Ordering::SeqCst), 0, "nobody wakes before the set");
    event.set().await.unwrap();
    for w in waiters {
        guarded("a waiter waking", w).await.unwrap();
    }
    assert_eq!(woke.load(Ordering::SeqCst), 100);
    assert!(event.is_set().await.unwrap());
    assert!(event.wait_timeout(Duration::ZERO).await.unwrap());
    event.clear().await.unwrap();
    assert!(!event.is_set().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_wait_restores_rlock_depth_and_times_out_holding_the_lock() {
    let server = Server::start();
    let (a, b) = (server.client().await, server.client().await);
    let (ca, cb) = (a.condition("depth").await.unwrap(), b.condition("depth").await.unwrap());
    let g1 = ca.acquire().await.unwrap();
    let g2 = ca.acquire().await.unwrap();
    assert_eq!(g1.token(), g2.token(), "re-entrant acquires share the hold's token");
    let before = g2.token();
    assert!(!ca.wait_timeout(&g2, Duration::from_millis(50)).await.unwrap(), "nobody notified");
    assert!(g2.token() > before, "the re-acquired lock has a new token");
    // Two levels are held again: another session cannot get in until both go.
    assert!(cb.try_acquire().await.unwrap().is_none());
    drop(g2);
    assert!(cb.try_acquire().await.unwrap().is_none());
    drop(g1);
    let gb = guarded("the lock after both levels", cb.acquire()).await.unwrap();
    cb.notify_all().await.unwrap();
    gb.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_on_a_shared_rlock_shares_its_holds() {
    let server = Server::start();
    let (a, b) = (server.client().await, server.client().await);
    let rlock = a.rlock("shared-r").await.unwrap();
    let ca = a.condition_with("on-shared-r", &rlock).await.unwrap();
    let (rb, cb) = (b.rlock("shared-r").await.unwrap(), b.condition("on-shared-r").await.unwrap());
    // One owner holds it directly and through the condition: one hold, two levels.
    let direct = rlock.acquire().await.unwrap();
    let through = ca.acquire().await.unwrap();
    assert_eq!(direct.token(), through.token());
    assert!(rb.try_acquire().await.unwrap().is_none());
    let waiting = tokio::spawn({
        let ca = ca.clone();
        async move {
            let notified = ca.wait(&through).await;
            (notified, through)
        }
    });
    // The wait gave up both levels: b gets in, notifies, leaves.
    let gb = guarded("the rlock during the wait", cb.acquire()).await.unwrap();
    cb.notify(1).await.unwrap();
    gb.release().await.unwrap();
    let (notified, through) = guarded("the notified waiter", waiting).await.unwrap();
    notified.unwrap();
    assert!(through.token() > direct.token(), "re-acquired under a new token");
    assert!(rb.try_acquire().await.unwrap().is_none(), "both levels restored");
    through.release().await.unwrap();
    assert!(rb.try_acquire().await.unwrap().is_none(), "one level left");
    drop(direct);
    drop(guarded("the rlock, free at last", rb.acquire()).await.unwrap());
}

// --- Ownership: ownerless release, orphan credits --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_session_may_release_a_lock_or_semaphore_as_in_python() {
    let server = Server::start();
    let (a, b) = (server.client().await, server.client().await);
    let (la, lb) = (a.lock("free-for-all").await.unwrap(), b.lock("free-for-all").await.unwrap());
    let ga = la.acquire().await.unwrap();
    lb.release().await.unwrap();
    assert!(!la.is_locked().await.unwrap(), "b released a's lock");
    let gb = lb.try_acquire().await.unwrap().expect("free");
    match ga.release().await {
        Err(Error::Runtime(m)) => assert!(m.starts_with("this session does not hold the lock under token"), "{m}"),
        other => panic!("a stale guard's release must fail: {other:?}"),
    }
    assert!(lb.is_locked().await.unwrap(), "a's stale guard released nothing of b's");
    gb.release().await.unwrap();
    runtime_error(lb.release().await, "release unlocked lock");

    let (sa, sb) = (a.bounded_semaphore("slots", 2).await.unwrap(), b.bounded_semaphore("slots", 2).await.unwrap());
    let permit = sa.acquire().await.unwrap();
    assert_eq!(sb.available().await.unwrap(), 1);
    sb.release(1).await.unwrap();
    assert_eq!(sa.available().await.unwrap(), 2);
    assert_eq!(sb.release(1).await, Err(Error::InvalidValue("Semaphore released too many times".into())));
    assert!(matches!(permit.release().await, Err(Error::InvalidValue(_))), "that permit was already given back");
    assert_eq!(sa.available().await.unwrap(), 2);
}

/// What a Lock and an unbounded Semaphore look like from outside.
async fn end_state(lock: &agora_client::Lock, sem: &agora_client::Semaphore) -> (bool, usize) {
    (lock.is_locked().await.unwrap(), sem.available().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_dies_then_another_releases_equals_the_reverse_order() {
    let server = Server::start();
    let m = server.client().await;

    // Order 1: the holder dies (orphan credits), then someone releases for it.
    let mut holder = Worker::spawn(&server, &["hold", "o1-lock", "o1-rlock", "o1-sem"]);
    holder.line().await;
    let (lock, rlock, sem) =
        (m.lock("o1-lock").await.unwrap(), m.rlock("o1-rlock").await.unwrap(), m.semaphore("o1-sem", 1).await.unwrap());
    holder.kill();
    drop(guarded("the dead holder's rlock", rlock.acquire()).await.unwrap());
    guarded("the dead holder's lock", async {
        while lock.is_locked().await.unwrap() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    lock.release().await.expect("absorbed by the orphan credit");
    sem.release(1).await.expect("absorbed by the orphan credit");
    let order1 = end_state(&lock, &sem).await;
    runtime_error(lock.release().await, "release unlocked lock");
    let rlock_err = rlock.release().await;
    runtime_error(rlock_err, "cannot release un-acquired lock");

    // Order 2: someone releases for the holder, then the holder dies.
    let mut holder = Worker::spawn(&server, &["hold", "o2-lock", "o2-rlock", "o2-sem"]);
    holder.line().await;
    let (lock, rlock, sem) =
        (m.lock("o2-lock").await.unwrap(), m.rlock("o2-rlock").await.unwrap(), m.semaphore("o2-sem", 1).await.unwrap());
    lock.release().await.expect("ownerless release");
    sem.release(1).await.expect("ownerless release");
    runtime_error(rlock.release().await, "cannot release un-acquired lock");
    holder.kill();
    drop(guarded("the dead holder's rlock", rlock.acquire()).await.unwrap());
    let order2 = end_state(&lock, &sem).await;
    runtime_error(lock.release().await, "release unlocked lock");

    assert_eq!(order1, order2, "both orders end in the same state");
    assert_eq!(order1, (false, 1));
}

// --- Errors ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_gets_cpythons_errors() {
    let server = Server::start();
    let m = server.client().await;
    let lock = m.new_lock().await.unwrap();
    runtime_error(lock.release().await, "release unlocked lock");
    let rlock = m.new_rlock().await.unwrap();
    runtime_error(rlock.release().await, "cannot release un-acquired lock");
    let held = rlock.owned_by("one").acquire().await.unwrap();
    runtime_error(rlock.owned_by("other").release().await, "cannot release un-acquired lock");
    assert!(rlock.owned_by("other").try_acquire().await.unwrap().is_none(), "owned by another owner");
    held.release().await.unwrap();

    let bounded = m.new_bounded_semaphore(1).await.unwrap();
    assert_eq!(bounded.release(1).await, Err(Error::InvalidValue("Semaphore released too many times".into())));

    let condition = m.new_condition().await.unwrap();
    runtime_error(condition.notify(1).await, "cannot notify on un-acquired lock");
    runtime_error(condition.notify_all().await, "cannot notify on un-acquired lock");
    runtime_error(condition.release().await, "cannot release un-acquired lock");
    let guard = condition.acquire().await.unwrap();
    condition.release().await.unwrap();
    runtime_error(condition.wait(&guard).await, "cannot wait on un-acquired lock");
    let other = m.new_condition().await.unwrap();
    assert!(matches!(other.wait(&guard).await, Err(Error::InvalidValue(_))), "a guard of another condition");
    drop(guard);

    let on_lock = m.new_condition_with(&lock).await.unwrap();
    runtime_error(on_lock.release().await, "release unlocked lock");
    runtime_error(on_lock.notify(1).await, "cannot notify on un-acquired lock");
}

/// A raw native session, for the argument errors the typed client cannot make.
struct Raw {
    conn: RawConn,
    next: u64,
}

impl Raw {
    fn open(server: &Server) -> Raw {
        let mut conn = server.raw();
        conn.native_session(&server.authkey, "raw");
        Raw { conn, next: 1 }
    }

    fn request(&mut self, op: Op) -> Result<Reply, WireError> {
        let id = self.next;
        self.next += 1;
        let mut body = Vec::new();
        native::encode(&Request { id, op }, &mut body).unwrap();
        self.conn.send_frame(&body).unwrap();
        let response: Response = native::decode(&self.conn.recv_frame().expect("a reply")).unwrap();
        assert_eq!(response.id, id);
        response.result
    }

    fn create(&mut self, kind: Kind, args: Vec<Value>) -> Result<u64, WireError> {
        match self.request(Op::Open { kind, name: None, args: Args::positional(args) })? {
            Reply::Opened { object, .. } => Ok(object),
            other => panic!("{other:?}"),
        }
    }

    fn call(&mut self, object: u64, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
        match self.request(Op::Call { object, method: method.into(), args: Args::positional(args) })? {
            Reply::Value(v) => Ok(v),
            other => panic!("{other:?}"),
        }
    }
}

fn wire_error(result: Result<impl std::fmt::Debug, WireError>, code: ErrorCode, message: &str) {
    match result {
        Err(e) => assert_eq!((e.code, e.message.as_str()), (code, message)),
        Ok(v) => panic!("expected {code:?}({message:?}), got {v:?}"),
    }
}

#[test]
fn argument_errors_as_python_clients_would_see_them() {
    let server = Server::start();
    let mut raw = Raw::open(&server);
    let (t, f) = (Value::Bool(true), Value::Bool(false));
    let lock = raw.create(Kind::Lock, vec![]).unwrap();
    let timeout_non_blocking = "can't specify a timeout for a non-blocking call";
    wire_error(raw.call(lock, "acquire", vec![f.clone(), Value::Int(1)]), ErrorCode::ValueError, timeout_non_blocking);
    let negative = "timeout value must be a non-negative number";
    wire_error(raw.call(lock, "acquire", vec![t.clone(), Value::Float(-2.0)]), ErrorCode::ValueError, negative);
    assert_eq!(raw.call(lock, "acquire", vec![t.clone(), Value::Int(-1)]).unwrap(), t, "-1 means forever");
    assert_eq!(raw.call(lock, "acquire", vec![t.clone(), Value::Float(0.05)]).unwrap(), f, "timed out");
    raw.call(lock, "release", vec![]).unwrap();
    let rlock = raw.create(Kind::RLock, vec![]).unwrap();
    wire_error(raw.call(rlock, "acquire", vec![f.clone(), Value::Int(1)]), ErrorCode::ValueError, timeout_non_blocking);
    wire_error(raw.call(rlock, "release", vec![]), ErrorCode::RuntimeError, "cannot release un-acquired lock");

    let sem = raw.create(Kind::Semaphore, vec![Value::Int(0)]).unwrap();
    let message = "can't specify timeout for non-blocking acquire";
    wire_error(raw.call(sem, "acquire", vec![f.clone(), Value::Int(1)]), ErrorCode::ValueError, message);
    assert_eq!(raw.call(sem, "acquire", vec![t.clone(), Value::Int(-1)]).unwrap(), f, "a negative timeout only tries");
    wire_error(raw.call(sem, "release", vec![Value::Int(0)]), ErrorCode::ValueError, "n must be one or more");
    let message = "semaphore initial value must be >= 0";
    wire_error(raw.create(Kind::Semaphore, vec![Value::Int(-1)]), ErrorCode::ValueError, message);
    wire_error(raw.create(Kind::BoundedSemaphore, vec![Value::Int(-1)]), ErrorCode::ValueError, message);

    let condition = raw.create(Kind::Condition, vec![]).unwrap();
    let message = "cannot wait on un-acquired lock";
    wire_error(raw.call(condition, "wait", vec![Value::None]), ErrorCode::RuntimeError, message);

    let barrier = raw.create(Kind::Barrier, vec![Value::Int(2)]).unwrap();
    let attr = |name: &str| vec![Value::Str(name.into())];
    assert_eq!(raw.call(barrier, "__getattribute__", attr("parties")).unwrap(), Value::Int(2));
    let message = "'Barrier' object has no attribute 'nope'";
    wire_error(raw.call(barrier, "__getattribute__", attr("nope")), ErrorCode::AttributeError, message);
    wire_error(raw.call(barrier, "wait", vec![Value::Int(0)]), ErrorCode::BrokenBarrier, "");
    let action = Value::reduce("builtins", "print", vec![]);
    let refused = raw.create(Kind::Barrier, vec![Value::Int(2), action]).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unsupported);
    assert!(refused.message.contains("never runs client code"), "{}", refused.message);
}

// --- Cancellation ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timed_out_and_dropped_acquires_never_leave_a_grant_behind() {
    let server = Server::start();
    let inside = Arc::new(AtomicUsize::new(0));
    let most_inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..4u64 {
        let m = server.client().await;
        for task in 0..3u64 {
            let (m, inside, most_inside) = (m.clone(), inside.clone(), most_inside.clone());
            tasks.push(tokio::spawn(async move {
                let lock = m.lock("contended").await.unwrap();
                let rlock = m.rlock("contended-r").await.unwrap();
                let sem = m.semaphore("contended-s", 2).await.unwrap();
                let counts = m.dict::<String, i64>("counts").await.unwrap();
                let mut won = [0i64; 3];
                for i in 0..150u64 {
                    let wait = Duration::from_micros(((client * 7 + task * 3 + i) % 9) * 300);
                    let dropped = i % 2 == 0;
                    // Half give up on the server (acquire_timeout), half by dropping the future.
                    let lock_guard = if dropped {
                        tokio::time::timeout(wait, lock.acquire()).await.ok().map(Result::unwrap)
                    } else {
                        lock.acquire_timeout(wait).await.unwrap()
                    };
                    if let Some(guard) = lock_guard {
                        let n = counts.get(&"lock".into()).await.unwrap().unwrap_or(0);
                        counts.insert(&"lock".into(), &(n + 1)).await.unwrap();
                        won[0] += 1;
                        if i % 3 == 0 {
                            drop(guard);
                        } else {
                            guard.release().await.unwrap();
                        }
                    }
                    let rlock_guard = if dropped {
                        tokio::time::timeout(wait, rlock.acquire()).await.ok().map(Result::unwrap)
                    } else {
                        rlock.acquire_timeout(wait).await.unwrap()
                    };
                    if let Some(guard) = rlock_guard {
                        let n = counts.get(&"rlock".into()).await.unwrap().unwrap_or(0);
                        counts.insert(&"rlock".into(), &(n + 1)).await.unwrap();
                        won[1] += 1;
                        guard.release().await.unwrap();
                    }
                    let permit = if dropped {
                        tokio::time::timeout(wait, sem.acquire()).await.ok().map(Result::unwrap)
                    } else {
                        sem.acquire_timeout(wait).await.unwrap()
                    };
                    if let Some(permit) = permit {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most_inside.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        won[2] += 1;
                        drop(permit);
                    }
                }
                won
            }));
        }
    }
    let mut won = [0i64; 3];
    for t in tasks {
        let mine = guarded("a contending task", t).await.unwrap();
        for k in 0..3 {
            won[k] += mine[k];
        }
    }
    assert!(won.iter().all(|w| *w > 0), "some acquires succeeded: {won:?}");
    assert!(most_inside.load(Ordering::SeqCst) <= 2, "never more than two permits out");
    let m = server.client().await;
    let counts = m.dict::<String, i64>("counts").await.unwrap();
    assert_eq!(counts.get(&"lock".into()).await.unwrap().unwrap_or(0), won[0], "the lock excluded every writer");
    assert_eq!(counts.get(&"rlock".into()).await.unwrap().unwrap_or(0), won[1]);
    // Nothing is left held: every give-up (and every dropped guard) was undone.
    guarded("the lock, free at the end", async {
        let lock = m.lock("contended").await.unwrap();
        lock.acquire().await.unwrap().release().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());
        let rlock = m.rlock("contended-r").await.unwrap();
        rlock.try_acquire().await.unwrap().expect("the rlock is free").release().await.unwrap();
        let sem = m.semaphore("contended-s", 2).await.unwrap();
        assert_eq!(sem.available().await.unwrap(), 2, "every permit came back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_condition_wait_leaves_the_lock_released() {
    let server = Server::start();
    let (a, b) = (server.client().await, server.client().await);
    let lock = a.lock("under-condition").await.unwrap();
    let ca = a.new_condition_with(&lock).await.unwrap();
    let guard = ca.acquire().await.unwrap();
    assert!(lock.is_locked().await.unwrap());
    assert!(tokio::time::timeout(Duration::from_millis(50), ca.wait(&guard)).await.is_err(), "cancelled");
    assert!(!guard.is_valid(), "the guard knows the wait gave the lock up");
    drop(guard);
    let lb = b.lock("under-condition").await.unwrap();
    let gb = guarded("the lock after a cancelled wait", lb.acquire()).await.unwrap();
    gb.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_growing_when_a_named_lock_is_recreated() {
    let server = Server::start();
    let m = server.client().await;
    let old = m.lock("reborn").await.unwrap().acquire().await.unwrap().token();
    m.delete("reborn").await.unwrap();
    let new = m.lock("reborn").await.unwrap().acquire().await.unwrap().token();
    assert!(new > old, "a resource fenced by the old lock's tokens still accepts the new lock's");
}
