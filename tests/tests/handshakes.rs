//! Sockets that connect and never authenticate cannot lock real clients out.

mod python_support;

use std::net::TcpStream;
use std::time::Duration;

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions};

/// A native client connects (no reconnecting) and makes a call: it got in. `who`
/// names it in the failure.
fn a_client_gets_in(server: &Server, who: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let m = Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false))
            .await
            .unwrap_or_else(|e| panic!("{who} was locked out: {e}"));
        m.dict::<String, i64>("d").await.unwrap().insert(&"k".to_owned(), &1).await.unwrap();
    });
}

/// 50 idle sockets against `--max-connections 32 --max-handshakes 16`: they neither take
/// connection slots (those are taken after authenticating) nor keep newcomers from
/// authenticating (a handshake that has taken a second is pushed out for the next
/// connection waiting: the 50 are gone after about three seconds, then the clients
/// below get in).
#[test]
fn idle_unauthenticated_sockets_do_not_lock_clients_out() {
    let args = ["--max-connections", "32", "--max-handshakes", "16", "--handshake-timeout", "60s"];
    let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(&server.address).unwrap()).collect();
    // They are queued first: the first 16 hold the handshake places, the rest wait
    // ahead of the clients below.
    std::thread::sleep(Duration::from_millis(200));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for round in 0..3 {
            let m = Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false))
                .await
                .unwrap_or_else(|e| panic!("round {round}: a real client was locked out: {e}"));
            m.dict::<String, i64>("d").await.unwrap().insert(&format!("k{round}"), &round).await.unwrap();
        }
    });
    // A stock CPython client too, on every version, while the idle sockets are still open.
    let script = r#"
import sys
from multiprocessing.managers import SyncManager
host, port = sys.argv[1].rsplit(":", 1)
m = SyncManager(address=(host, int(port)), authkey=sys.argv[2].encode())
m.connect()
d = m.dict()
d["x"] = 1
print("OK", d["x"])
"#;
    let key = std::str::from_utf8(&server.authkey).unwrap().to_owned();
    python_support::for_each_python(|python| {
        let out = std::process::Command::new(&python.exe).args(["-c", script, &server.address, &key]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("OK 1"),
            "CPython {}: {stdout}\n{}",
            python.version,
            String::from_utf8_lossy(&out.stderr)
        );
    });
    // Idle sockets were pushed out of their handshakes, and, beyond the 32 that may
    // wait (--max-connections), out of the queue (the log is read by a thread of its
    // own: wait for it).
    server.wait_for_log("its handshake was the oldest unfinished one");
    server.wait_for_log("it had waited longest to authenticate");
    drop(idle);
}

/// 300 native clients connecting at once against `--max-handshakes 8` (a fleet starting,
/// or every client of a restarted server coming back): every one of them gets in, none
/// is pushed out by the others (newcomers wait for a handshake to finish), and each
/// call lands.
#[test]
fn a_burst_of_real_clients_larger_than_max_handshakes_all_get_in() {
    const CLIENTS: usize = 300;
    let args = ["--max-handshakes", "8"];
    let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..CLIENTS {
            let (address, authkey, start) = (server.address.clone(), server.authkey.clone(), start.clone());
            clients.spawn(async move {
                start.wait().await;
                let options = ManagerOptions::new().reconnect(false);
                let m =
                    Manager::connect_with(&address, &authkey, options).await.map_err(|e| format!("client {i}: {e}"))?;
                let d = m.dict::<String, usize>("burst").await.map_err(|e| format!("client {i}: {e}"))?;
                d.insert(&format!("c{i}"), &i).await.map_err(|e| format!("client {i}: {e}"))?;
                Ok::<_, String>(m)
            });
        }
        let mut managers = Vec::new();
        let mut failed = Vec::new();
        while let Some(joined) =
            tokio::time::timeout(Duration::from_secs(120), clients.join_next()).await.expect("the burst hung")
        {
            match joined.unwrap() {
                Ok(m) => managers.push(m),
                Err(e) => failed.push(e),
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {CLIENTS} clients failed, e.g. {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        let d = managers[0].dict::<String, usize>("burst").await.unwrap();
        assert_eq!(d.len().await.unwrap(), CLIENTS);
    });
    assert!(!server.log().contains("oldest unfinished"), "a real client's handshake was pushed out");
}

/// The same for a stock CPython program whose 40 threads connect at once
/// (`--max-handshakes 4`), on every CPython version.
#[test]
fn a_burst_of_cpython_threads_larger_than_max_handshakes_all_get_in() {
    let args = ["--max-handshakes", "4"];
    let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
    let body = r#"
import threading
THREADS = 40
d = m.dict()
start = threading.Barrier(THREADS)
failed = []
def client(i):
    try:
        start.wait()
        own = SyncManager(address=address, authkey=sys.argv[2].encode())
        own.connect()
        own.Lock().acquire()
        d[i] = i
    except Exception as e:
        failed.append(repr(e))
threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("FAILED", failed[:3]) if failed else print("OK", len(d))
"#;
    python_support::for_each_python(|python| {
        let child = python_support::spawn_with_manager(python, body, &server, &[], std::process::Stdio::piped());
        let done = python_support::finish(child, "the CPython burst", Duration::from_secs(120));
        assert!(done.transcript().contains("OK 40"), "CPython {}: {}", python.version, done.transcript());
    });
    assert!(!server.log().contains("oldest unfinished"), "a real client's handshake was pushed out");
}

/// Clients that connect and vanish while they wait for a handshake place cost nothing
/// once their turn comes (their handshakes fail at once, they do not hold a place for
/// the second a silent one gets): with one place, held by an idle socket, and 20
/// vanished clients queued ahead of it, a real client is in within the idle socket's
/// second and a little more.
#[test]
fn clients_that_vanish_while_they_wait_do_not_hold_up_the_next() {
    let args = ["--max-handshakes", "1", "--handshake-timeout", "60s"];
    let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
    let idle = TcpStream::connect(&server.address).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..20 {
        drop(TcpStream::connect(&server.address).unwrap());
    }
    let started = std::time::Instant::now();
    a_client_gets_in(&server, "the client behind the vanished ones");
    // About one second (the idle socket's time); 20 vanished clients each holding the
    // place for a second would take 21. The bound is a hang guard, far above either.
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "the client waited {waited:?} behind 20 vanished ones");
    server.wait_for_log("its handshake was the oldest unfinished one");
    drop(idle);
}

/// After `python_support::CONNECT`: a raw connection answers the server's challenge (so
/// it has proven it holds the key), says ANSWERED, and goes no further until the test
/// says so; then it finishes its side of the handshake and makes one call.
const ANSWERS_THEN_STALLS: &str = r#"
import socket
from multiprocessing import connection
key = sys.argv[2].encode()
conn = connection.Connection(socket.create_connection(address).detach())
connection.answer_challenge(conn, key)
print("ANSWERED", flush=True)
sys.stdin.readline()
connection.deliver_challenge(conn, key)
conn.send((None, "dummy", (), {}))
print("DONE", conn.recv(), flush=True)
"#;

/// A client that has answered the server's challenge holds the key, so it is no
/// squatter: however slow the rest of its handshake (here it stalls for as long as a
/// newcomer takes to get in), it is never pushed out, and its place goes to the newcomer
/// at once (`--max-handshakes 1`; before, the newcomer waited a second and then pushed
/// it out — what a burst of 10,000 connections from one busy client process did to
/// hundreds of them).
#[test]
fn a_client_that_answered_the_challenge_keeps_its_handshake_however_slow_the_rest() {
    python_support::for_each_python(|python| {
        let args = ["--max-handshakes", "1", "--handshake-timeout", "60s"];
        let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
        let context = format!("CPython {}", python.version);
        let mut script = python_support::Dialogue::start(python, ANSWERS_THEN_STALLS, &server, &[], &context);
        script.expect("ANSWERED");
        a_client_gets_in(&server, &format!("{context}: the newcomer"));
        script.say("go on");
        script.expect("DONE ('#RETURN', None)");
        script.finish();
        assert!(!server.log().contains("oldest unfinished"), "{context}: a proven client was pushed out");
    });
}

/// A client that answered the challenge and then stalls is bounded by the handshake
/// timeout alone: the server hangs up on it once `--handshake-timeout` has passed, and
/// meanwhile its place, given up when it answered, lets a newcomer in
/// (`--max-handshakes 1`).
#[test]
fn a_client_that_answered_the_challenge_and_stalls_is_dropped_at_the_handshake_timeout() {
    let python = python_support::pythons().last().expect("a CPython (the search fails when it finds none)");
    let args = ["--max-handshakes", "1", "--handshake-timeout", "1s"];
    let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
    let context = format!("CPython {}", python.version);
    let mut script = python_support::Dialogue::start(python, ANSWERS_THEN_STALLS, &server, &[], &context);
    script.expect("ANSWERED");
    a_client_gets_in(&server, "the newcomer, in the place the stalled client gave up,");
    server.wait_for_log("handshake did not finish in time");
    script.kill();
    assert!(
        !server.log().contains("oldest unfinished"),
        "{context}: the answered client was pushed out, not timed out"
    );
}
