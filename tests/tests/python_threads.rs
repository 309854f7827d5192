//! `--python-threads`: a CPython client thread's connection is served on a thread of
//! its own, up to the limit; beyond it, and with the limit at 0, the shared workers
//! serve it. Either way the client sees the same server, and a thread's place is
//! given back when its connection closes.

mod python_support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, HANG_GUARD};
use python_support::Dialogue;

const THREADS: usize = 3;
const APPENDS: usize = 200;

/// After `python_support::CONNECT`: THREADS client threads append APPENDS items each
/// to one list (every thread has its own connection), then one blocks on a queue the
/// test fills; READY is printed while every connection is open, and the script goes
/// on when the test writes a line.
const SCRIPT: &str = r#"
import threading
threads, appends = int(sys.argv[3]), int(sys.argv[4])
items = m.list()
queue = m.Queue()
ready = threading.Barrier(threads + 1)
go = threading.Event()
got = []
def work(t):
    for i in range(appends):
        items.append((t, i))
    ready.wait()
    go.wait()
    if t == 0:
        got.append(queue.get(timeout=60))
workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
ready.wait()
print("READY", len(items), flush=True)
sys.stdin.readline()
queue.put("from the script")
go.set()
for w in workers:
    w.join()
print("DONE", got[0], len(items), flush=True)
"#;

fn python_threads_now(rt: &tokio::runtime::Runtime, server: &Server) -> u64 {
    rt.block_on(async {
        let m = Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false))
            .await
            .expect("connect");
        m.stats().await.expect("stats").python_threads
    })
}

/// Runs SCRIPT against `server`; returns the dedicated threads counted while every
/// client thread's connection was open.
fn run_script(python: &python_support::Python, server: &Server, rt: &tokio::runtime::Runtime) -> u64 {
    run_threads(python, server, rt, THREADS)
}

/// [`run_script`] with `threads` client threads.
fn run_threads(python: &python_support::Python, server: &Server, rt: &tokio::runtime::Runtime, threads: usize) -> u64 {
    let (threads_arg, appends_arg) = (threads.to_string(), APPENDS.to_string());
    let args = [threads_arg.as_str(), appends_arg.as_str()];
    let mut child = python_support::spawn_with_manager(python, SCRIPT, server, &args, Stdio::inherit());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("READY {}", threads * APPENDS), "CPython {}", python.version);
    let counted = python_threads_now(rt, server);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("DONE from the script {}", threads * APPENDS), "CPython {}", python.version);
    assert!(child.wait().unwrap().success(), "CPython {}", python.version);
    counted
}

/// The count of dedicated threads falls back to zero once the clients are gone.
fn wait_for_no_python_threads(rt: &tokio::runtime::Runtime, server: &Server, version: &str) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let running = python_threads_now(rt, server);
        if running == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "CPython {version}: {running} dedicated threads still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn client_threads_get_threads_of_their_own_up_to_the_limit() {
    python_support::for_each_python(|python| {
        for unix in [true, false] {
            let server = Server::start_with(ServerOptions {
                unix,
                args: vec!["--python-threads".into(), "2".into()],
                ..Default::default()
            });
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // Three client threads, two places: the third is served by the shared workers.
            let counted = run_script(python, &server, &rt);
            assert_eq!(counted, 2, "CPython {} (unix: {unix}): the limit is 2", python.version);
            wait_for_no_python_threads(&rt, &server, &python.version);
            // Places given back are taken again.
            assert_eq!(run_script(python, &server, &rt), 2, "CPython {}: places were given back", python.version);
        }
    });
}

#[test]
fn with_no_python_threads_the_shared_workers_serve_everyone() {
    python_support::for_each_python(|python| {
        let server = Server::start_with(ServerOptions {
            unix: true,
            args: vec!["--python-threads".into(), "0".into()],
            ..Default::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(run_script(python, &server, &rt), 0, "CPython {}", python.version);
    });
}

#[test]
fn a_low_open_files_limit_caps_the_threads_and_everyone_is_still_served() {
    // 96 open files: the threads (4 descriptors each besides the socket) may take half,
    // so 12 of them; the script's 13 client threads (12 + its main thread) overflow it.
    let server = Server::start_at_with("127.0.0.1:0", ServerOptions::default(), |cmd| {
        // SAFETY: only async-signal-safe calls (getrlimit, setrlimit) between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_cur = 96;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    server.wait_for_log("the open-files limit (ulimit -n) is low");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let python = python_support::pythons().last().expect("a CPython (the search fails when it finds none)");
    assert_eq!(run_threads(python, &server, &rt, 12), 12, "CPython {}", python.version);
    wait_for_no_python_threads(&rt, &server, &python.version);
}

#[test]
fn busy_polling_threads_answer_every_call_and_count_what_they_did() {
    python_support::for_each_python(|python| {
        // A window far past the hang guard: a thread whose client is gone must see the
        // close while it polls, or it would not be given back in time.
        for (poll, polls) in [("10m", true), ("0", false)] {
            let server = Server::start_with(ServerOptions {
                unix: true,
                args: ["--python-busy-poll", poll, "--metrics", "127.0.0.1:0"].map(String::from).to_vec(),
                ..Default::default()
            });
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // Every append arrives, and the blocked get is answered, while threads poll
            // for up to ten minutes after each answer (a poll that cannot miss a request).
            // One client thread calls at a time: with others calling, nobody would poll.
            assert_eq!(run_threads(python, &server, &rt, 1), 2, "CPython {}", python.version);
            // The client is gone: its threads' polls end and their places are given back.
            wait_for_no_python_threads(&rt, &server, &python.version);
            let (hits, misses) = (
                server.metric("agora_python_busy_poll_hits_total"),
                server.metric("agora_python_busy_poll_misses_total"),
            );
            let requests = server.metric("agora_requests_total");
            match polls {
                // At least some polls found the client's next append (half the CPUs
                // may poll at once), and a poll follows an answer: no more than those.
                true => assert!(
                    hits >= 1.0 && hits + misses <= requests,
                    "CPython {}: {hits} {misses} {requests}",
                    python.version
                ),
                false => assert_eq!((hits, misses), (0.0, 0.0), "CPython {}: polling is off", python.version),
            }
        }
    });
}

/// After `python_support::CONNECT`: `sys.argv[3]` times, a proxy made, called (its
/// client thread's connection opens) and dropped (the connection closes: no other
/// proxy holds it); CLOSED after each, and the next on the test's word.
const PROXY_AFTER_PROXY: &str = r#"
for i in range(int(sys.argv[3])):
    d = m.dict()
    d["i"] = i
    assert d["i"] == i
    del d
    print("CLOSED", flush=True)
    sys.stdin.readline()
"#;

/// A thread whose connection closed waits for the next one, and the next takes it: a
/// client that makes proxy after proxy (a new connection for its thread each time) is
/// served by one thread, started once.
#[test]
fn a_thread_whose_connection_closed_serves_the_next_one() {
    const PROXIES: usize = 5;
    python_support::for_each_python(|python| {
        for unix in [true, false] {
            let context = format!("CPython {} (unix: {unix})", python.version);
            let server = metered_server(unix, &[]);
            let proxies = PROXIES.to_string();
            let mut script = Dialogue::start(python, PROXY_AFTER_PROXY, &server, &[&proxies], &context);
            for made in 1..=PROXIES {
                script.expect("CLOSED");
                // The close reaches the connection's thread a moment after the script goes on.
                let waiting = metric_until(&server, "agora_python_threads_waiting", |n| n >= 1.0);
                assert_eq!(waiting, 1.0, "{context}: after proxy {made}, its thread waits");
                let started = server.metric("agora_python_threads_started_total");
                assert_eq!(started, 1.0, "{context}: proxy {made}'s connection found the thread waiting");
                assert_eq!(server.metric("agora_python_moves_to_workers_total"), 0.0, "{context}");
                script.say("next");
            }
            script.finish();
        }
    });
}

/// After `python_support::CONNECT`: a client thread's calls, some after a pause longer
/// than its server thread waits in `recv(2)` (`agora_server::dedicated::BLOCK_AT_MOST`,
/// 10 ms: the wait then moves to the thread's runtime), some carrying requests far
/// bigger than one read; then the client stays connected and idle, and prints IDLE.
const PAUSES: &str = r#"
import time
d = m.dict()
for i in range(24):
    value = str(i) * (1 + (i % 4) * 100_000)
    d[i] = value
    if i % 3 == 0:
        time.sleep(0.05)
    assert d[i] == value, i
    if i % 3 == 1:
        time.sleep(0.02)
print("SERVED", len(d), flush=True)
print("IDLE", flush=True)
sys.stdin.readline()
"#;

/// The server's thread for a client thread waits for each call blocked in `recv(2)`
/// only for a moment: calls after longer pauses, and requests bigger than a read, are
/// all answered; and a client left idle does not hold up a shutdown (the thread is not
/// stuck in `recv`: the server stops without waiting out its drain timeout).
#[test]
fn threads_answer_calls_after_pauses_and_big_requests_and_let_an_idle_client_go_at_shutdown() {
    python_support::for_each_python(|python| {
        for unix in [false, true] {
            let mut server = Server::start_with(ServerOptions { unix, ..Default::default() });
            let mut child = python_support::spawn_with_manager(python, PAUSES, &server, &[], Stdio::piped());
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let served = line.clone();
            line.clear();
            out.read_line(&mut line).unwrap();
            let idle = line.clone();
            // The client is still connected, and quiet, when the server is told to stop.
            server.signal(libc::SIGTERM);
            let stopped = server.wait_exit();
            let _ = child.kill();
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            child.wait().unwrap();
            assert_eq!(
                (served.trim(), idle.trim()),
                ("SERVED 24", "IDLE"),
                "CPython {} (unix: {unix}): {stderr}",
                python.version
            );
            assert!(stopped.success(), "CPython {} (unix: {unix})", python.version);
            let log = server.log();
            assert!(
                log.contains("server stopped") && !log.contains("still open"),
                "CPython {} (unix: {unix}): {log}",
                python.version
            );
        }
    });
}

/// Script lines (for after a `queue` and `threading` are defined): two gets from the
/// queue that wait, each printing WAITING first and answered by a feeder thread that
/// puts an item once the test says a line ([`two_waits`]).
const TWO_WAITS: &str = r#"
def feed():
    for _ in range(2):
        sys.stdin.readline()
        queue.put("item")
feeder = threading.Thread(target=feed)
feeder.start()
for _ in range(2):
    print("WAITING", flush=True)
    assert queue.get(timeout=60) == "item"
feeder.join()
"#;

/// The test's side of [`TWO_WAITS`]: each get is seen waiting before the feeder is told
/// to put. (Counted as it begins to wait; the gauge of waiting calls may still show the
/// last get for a moment after its answer went out.)
fn two_waits(script: &mut Dialogue, server: &Server) {
    for gets in 1..=2 {
        expect_a_waiting_get(script, server, gets);
        script.say("put");
    }
}

/// The script says WAITING, and its `gets`-th queue get waits.
fn expect_a_waiting_get(script: &mut Dialogue, server: &Server, gets: u32) {
    script.expect("WAITING");
    let waited = metric_until(server, QUEUE_GETS_WAITED, |n| n >= f64::from(gets));
    assert_eq!(waited, f64::from(gets), "{}: the get waits", script.context);
}

/// Queue gets, and lock acquires, that waited for their answer so far.
const QUEUE_GETS_WAITED: &str = "agora_calls_parked_total{kind=\"Queue\",method=\"get\"}";
const LOCK_ACQUIRES_WAITED: &str = "agora_calls_parked_total{kind=\"Lock\",method=\"acquire\"}";
/// Lock acquires waiting now.
const LOCKS_WAITING: &str = "agora_waiters{kind=\"Lock\"}";

/// A server on a Unix socket or TCP, with `--metrics` (the move tests count waiting
/// calls and moves there) and `more` arguments.
fn metered_server(unix: bool, more: &[&str]) -> Server {
    let args = ["--metrics", "127.0.0.1:0"].iter().chain(more).map(|arg| arg.to_string()).collect();
    Server::start_with(ServerOptions { unix, args, ..Default::default() })
}

/// Scrapes `name` until `done` holds for its value (0 while it is not shown); the last
/// value seen.
fn metric_until(server: &Server, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let value = server.metric_if_shown(name).unwrap_or(0.0);
        if done(value) || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// After `python_support::CONNECT`: the main thread's connection holds an RLock (the
/// server's `R`, exposed as `get_rlock`) twice, then makes two calls that wait
/// ([`TWO_WAITS`]) and one that does not; prints MOVED. On the test's word it makes
/// `sys.argv[3]` calls that do not wait; prints QUIET. On the test's word it releases
/// the RLock twice — as the session that took it — and another client thread takes it.
fn moves_script() -> String {
    let head = r#"
import threading
from multiprocessing.managers import AcquirerProxy
SyncManager.register("get_rlock", proxytype=AcquirerProxy)
rlock, queue, items = m.get_rlock(), m.Queue(), m.list()
rlock.acquire()
rlock.acquire()
"#;
    let tail = r#"
# The server learns that an answer went out (its thread wrote it) from the next call.
assert len(items) == 0
print("MOVED", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[3])):
    items.append(i)
print("QUIET", flush=True)
sys.stdin.readline()
rlock.release()
rlock.release()
took = []
taker = threading.Thread(target=lambda: took.append(rlock.acquire(timeout=5)))
taker.start()
taker.join()
print("DONE", took[0], len(items), flush=True)
"#;
    [head, TWO_WAITS, tail].concat()
}

/// A client thread whose calls wait leaves its thread for the shared workers, and
/// comes back to a thread after a run of calls that do not wait; its session goes
/// with it both ways (the RLock it held before the moves, it releases after them), and
/// so does its peer address in the holders view.
#[test]
fn a_connection_whose_calls_wait_moves_to_the_shared_workers_and_back_with_its_session() {
    // Calls in a row without a wait that bring a connection back to a thread
    // (`agora_server::dedicated::placement::QUIET_TO_RETURN`), and some more.
    const QUIET: usize = 256 + 44;
    python_support::for_each_python(|python| {
        for unix in [true, false] {
            let context = format!("CPython {} (unix: {unix})", python.version);
            let server = metered_server(unix, &["--expose", "get_rlock=rlock:R"]);
            let quiet = QUIET.to_string();
            let mut script = Dialogue::start(python, &moves_script(), &server, &[&quiet], &context);
            two_waits(&mut script, &server);
            script.expect("MOVED");
            let moved = metric_until(&server, "agora_python_moves_to_workers_total", |n| n >= 1.0);
            assert_eq!(moved, 1.0, "{context}: two waits moved the connection to the shared workers");
            assert_eq!(server.metric("agora_python_moves_to_threads_total"), 0.0, "{context}");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let holders = rt.block_on(async { server.client().await.holders("R").await.expect("holders") });
            assert_eq!(holders.held.len(), 1, "{context}: {holders:?}");
            assert!(holders.held[0].peer.is_some(), "{context}: the moved session's peer is known: {holders:?}");
            script.say("go on");
            script.expect("QUIET");
            let back = metric_until(&server, "agora_python_moves_to_threads_total", |n| n >= 1.0);
            assert_eq!(back, 1.0, "{context}: a run of quiet calls brought it back");
            script.say("go on");
            script.expect(&format!("DONE True {QUIET}"));
            script.finish();
            assert_eq!(server.metric("agora_python_moves_to_workers_total"), 1.0, "{context}: it stayed");
        }
    });
}

/// After `python_support::CONNECT`: a raw connection of CPython's manager protocol
/// sends requests behind a call that waits (a lock the main thread holds) — once
/// before the call waits, once while it waits — and reads the answers in order; the
/// main thread lets the lock go on the test's word.
const PIPELINED: &str = r##"
from multiprocessing.connection import Client
lock, items = m.Lock(), m.list()
raw = Client(address, authkey=sys.argv[2].encode())
raw.send((None, "accept_connection", ("pipelined",), {}))
assert raw.recv() == ("#RETURN", None)
def call(proxy, method, *args):
    raw.send((proxy._token.id, method, args, {}))
def answer():
    assert raw.poll(60), "no answer within a minute"
    return raw.recv()
for round in range(2):
    lock.acquire()
    call(lock, "acquire")
    if round == 0:
        call(items, "append", round)
        call(lock, "release")
    print("WAITING", flush=True)
    sys.stdin.readline()
    if round == 1:
        call(items, "append", round)
        call(lock, "release")
        print("SENT", flush=True)
        sys.stdin.readline()
    lock.release()
    replies = [answer() for _ in range(3)]
    assert replies == [("#RETURN", True), ("#RETURN", None), ("#RETURN", None)], replies
print("DONE", list(items), lock.acquire(timeout=5), flush=True)
"##;

/// Requests a client sends behind a call that waits are answered, in order, once the
/// call is: whether they came before it waited or while it waited, and when the
/// connection moves to the shared workers with them still unread.
#[test]
fn requests_sent_behind_a_waiting_call_are_answered_in_order() {
    python_support::for_each_python(|python| {
        for unix in [true, false] {
            let context = format!("CPython {} (unix: {unix})", python.version);
            let server = metered_server(unix, &[]);
            let mut script = Dialogue::start(python, PIPELINED, &server, &[], &context);
            for round in 0..2 {
                script.expect("WAITING");
                let waited = metric_until(&server, LOCK_ACQUIRES_WAITED, |n| n > f64::from(round));
                assert_eq!(waited, f64::from(round + 1), "{context}: the acquire waits");
                script.say("go on");
                if round == 1 {
                    script.expect("SENT");
                    // The server reads them at once; watching a while gives a
                    // miscount the chance to show.
                    for _ in 0..30 {
                        assert_eq!(server.metric(LOCKS_WAITING), 1.0, "{context}: still counted as waiting");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    script.say("go on");
                }
            }
            script.expect("DONE [0, 1] True");
            script.finish();
            assert_eq!(server.metric(LOCKS_WAITING), 0.0, "{context}");
            assert_eq!(server.metric("agora_wait_duration_seconds_count{kind=\"Lock\"}"), 2.0, "{context}");
            // The second wait moved the raw connection, its last two requests unread.
            assert_eq!(server.metric("agora_python_moves_to_workers_total"), 1.0, "{context}");
        }
    });
}

/// After `python_support::CONNECT`: a raw connection of CPython's manager protocol
/// sends a get from an empty queue (it waits), then, on the test's word, frames of
/// 60,000 bytes behind it, eight of them, and says whether the server answered or
/// closed the connection; then the main thread puts an item and gets it.
const FLOOD_BEHIND_A_WAIT: &str = r##"
from multiprocessing.connection import Client
queue = m.Queue()
raw = Client(address, authkey=sys.argv[2].encode())
raw.send((None, "accept_connection", ("flood",), {}))
assert raw.recv() == ("#RETURN", None)
raw.send((queue._token.id, "get", (), {}))
print("WAITING", flush=True)
sys.stdin.readline()
try:
    for _ in range(8):
        raw.send_bytes(b"x" * 60000)
    assert raw.poll(60), "neither answered nor closed within a minute"
    print("ANSWERED", raw.recv(), flush=True)
except (EOFError, OSError):
    print("CLOSED", flush=True)
queue.put("item")
print("GOT", queue.get(timeout=60), flush=True)
"##;

/// A client that sends more than a request of the largest size (`--max-frame`) behind
/// a call that waits is let go as one that left: what it sends is not kept without
/// bound, its waiting get is abandoned (the next item goes to the next consumer), and
/// the server says why.
#[test]
fn a_client_that_sends_too_much_behind_a_waiting_call_is_let_go_and_takes_nothing() {
    let python = python_support::pythons().last().expect("a CPython (the search fails when it finds none)");
    for unix in [true, false] {
        let context = format!("CPython {} (unix: {unix})", python.version);
        let server = metered_server(unix, &["--max-frame", "64KiB"]);
        let mut script = Dialogue::start(python, FLOOD_BEHIND_A_WAIT, &server, &[], &context);
        expect_a_waiting_get(&mut script, &server, 1);
        script.say("flood");
        script.expect("CLOSED");
        script.expect("GOT item");
        script.finish();
        server.wait_for_log("behind a call not answered yet; closing");
    }
}

/// After `python_support::CONNECT`: the main thread's connection makes two queue gets
/// that wait ([`TWO_WAITS`], on the server's queue `Q`, exposed as `get_q`), so it moves to the shared workers, then a third get that
/// waits there until the process is killed.
fn killed_while_moved_script() -> String {
    let head = r#"
import threading
SyncManager.register("get_q")
queue = m.get_q()
"#;
    let tail = r#"
print("WAITING", flush=True)
queue.get(timeout=600)
"#;
    [head, TWO_WAITS, tail].concat()
}

/// A client killed while its call waits on the shared workers, where its calls' waits
/// moved it, takes nothing: the call is abandoned, and the next item goes to the next
/// consumer.
#[test]
fn a_moved_connection_whose_client_is_killed_while_it_waits_takes_nothing() {
    let python = python_support::pythons().last().expect("a CPython (the search fails when it finds none)");
    for unix in [true, false] {
        let context = format!("CPython {} (unix: {unix})", python.version);
        let server = metered_server(unix, &["--expose", "get_q=queue:Q"]);
        let mut script = Dialogue::start(python, &killed_while_moved_script(), &server, &[], &context);
        two_waits(&mut script, &server);
        expect_a_waiting_get(&mut script, &server, 3);
        let moved = metric_until(&server, "agora_python_moves_to_workers_total", |n| n >= 1.0);
        assert_eq!(moved, 1.0, "{context}: the third get waits on the shared workers");
        script.kill();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let consumer = server.client().await;
            let queue = consumer.queue::<String>("Q", 0).await.expect("the queue");
            queue.put(&"last".to_owned()).await.unwrap();
            let got = tokio::time::timeout(HANG_GUARD, queue.get()).await.expect("hang guard");
            assert_eq!(got.unwrap(), "last", "{context}: the killed client's get took nothing");
        });
    }
}
