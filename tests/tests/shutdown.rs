//! What a shutdown hands out (nothing) and who may ask for one.

mod python_support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use agora_client::{Error, Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, HANG_GUARD};

async fn connect(server: &Server) -> Manager {
    Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false)).await.unwrap()
}

/// Blocked calls waiting now, from the metrics endpoint.
fn lock_waiters(metrics: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("agora_waiters{kind=\"Lock\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The metrics endpoint, scraped once: the server counts waiters from the first scrape.
fn metrics_endpoint(server: &Server) -> String {
    let endpoint = server.metrics_endpoint();
    lock_waiters(&endpoint);
    endpoint
}

fn wait_for_waiters(metrics: &str, n: u64) {
    let deadline = Instant::now() + HANG_GUARD;
    while lock_waiters(metrics) < n {
        assert!(Instant::now() < deadline, "the waiters never parked");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn with_metrics() -> ServerOptions {
    ServerOptions { args: vec!["--metrics".into(), "127.0.0.1:0".into()], ..Default::default() }
}

/// SIGTERM with a lock held and waiters parked behind it: the holder's session ends
/// during the shutdown, and none of the waiters may be told it acquired the lock (its
/// client would then hold it beside the holder, who was never told it lost it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_grants_no_lock_to_a_waiter() {
    const ROUNDS: usize = 12;
    const WAITERS: usize = 3;
    for round in 0..ROUNDS {
        let mut server = Server::start_with(with_metrics());
        let metrics = metrics_endpoint(&server);
        let holder = connect(&server).await;
        let _held = holder.lock("L").await.unwrap().acquire().await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..WAITERS {
            let m = connect(&server).await;
            let lock = m.lock("L").await.unwrap();
            waiters.push(tokio::spawn(async move {
                let outcome = lock.acquire().await.map(|guard| guard.token());
                (outcome, m)
            }));
        }
        let probe = metrics.clone();
        tokio::task::spawn_blocking(move || wait_for_waiters(&probe, WAITERS as u64)).await.unwrap();
        server.signal(libc::SIGTERM);
        for waiter in waiters {
            let (outcome, _m) = tokio::time::timeout(HANG_GUARD, waiter).await.expect("hang").unwrap();
            match outcome {
                Ok(token) => panic!("round {round}: a waiter was granted the lock (token {token}) during shutdown"),
                Err(Error::ShuttingDown(_) | Error::ConnectionLost(_)) => {}
                Err(other) => panic!("round {round}: unexpected error {other}"),
            }
        }
        assert!(server.wait_exit().success());
        // The log is read by a thread of its own: wait for the line, do not peek.
        server.wait_for_log("shutting down: no call waits any more");
    }
}

/// Native clients that are idle, and one in the middle of a stream of calls, hear
/// that the server is shutting down (its notice, not a dropped connection), over TCP
/// and a Unix socket: a native connection learns of the shutdown through its session's
/// mailbox, which it looks at between requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_are_told_the_server_is_shutting_down() {
    for unix in [false, true] {
        let mut server = if unix { Server::start_unix() } else { Server::start() };
        let idle = [connect(&server).await, connect(&server).await];
        let busy = connect(&server).await;
        let counter = busy.value::<i64>("n", &0).await.unwrap();
        let calls = tokio::spawn(async move {
            let mut done = 0;
            while counter.add(&1).await.is_ok() {
                done += 1;
            }
            (done, busy)
        });
        // Calls are flowing before the shutdown comes.
        let watcher = connect(&server).await;
        let seen = watcher.value::<i64>("n", &0).await.unwrap();
        let deadline = Instant::now() + HANG_GUARD;
        while seen.get().await.unwrap() < 100 {
            assert!(Instant::now() < deadline, "the calls never ran");
        }
        server.signal(libc::SIGTERM);
        let (done, busy) = tokio::time::timeout(HANG_GUARD, calls).await.expect("hang").unwrap();
        assert!(done >= 100);
        for m in idle.iter().chain([&busy, &watcher]) {
            let deadline = Instant::now() + HANG_GUARD;
            while m.connection_error().is_none() {
                assert!(Instant::now() < deadline, "a client never heard of the shutdown");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(matches!(m.connection_error(), Some(Error::ShuttingDown(_))), "{:?}", m.connection_error());
        }
        assert!(server.wait_exit().success());
    }
}

/// A stock CPython client blocked in `acquire()` hears why: a `ConnectionAbortedError`
/// naming the shutdown, not a bare `EOFError`.
#[test]
fn a_cpython_waiter_is_told_the_server_is_shutting_down() {
    let script = r#"
import os, sys
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register("get_lock")
host, port = sys.argv[1].rsplit(":", 1)
m = M(address=(host, int(port)), authkey=sys.argv[2].encode())
m.connect()
lock = m.get_lock()
try:
    lock.acquire()
    print("ACQUIRED")
except Exception as e:
    print("RAISED", type(e).__name__, e)
# Leave without the proxies' exit-time decref: it would connect to a server that is
# closing its listener, a connect the kernel can leave half open (it hung a CI run).
sys.stdout.flush()
os._exit(0)
"#;
    python_support::for_each_python(|python| {
        let mut options = with_metrics();
        options.args.extend(["--expose".into(), "get_lock=lock:L".into()]);
        let mut server = Server::start_with(options);
        let metrics = metrics_endpoint(&server);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let holder = rt.block_on(connect(&server));
        let guard = rt.block_on(async { holder.lock("L").await.unwrap().acquire().await.unwrap() });
        let key = std::str::from_utf8(&server.authkey).unwrap().to_owned();
        let child = std::process::Command::new(&python.exe)
            .args(["-c", script, &server.address, &key])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_waiters(&metrics, 1);
        server.signal(libc::SIGTERM);
        // The timeout is a hang guard only: the client should be told at once.
        let out = python_support::finish(child, "the CPython waiter", std::time::Duration::from_secs(60));
        assert!(
            out.stdout.contains("RAISED ConnectionAbortedError") && out.stdout.contains("shutting down"),
            "CPython {}: {}",
            python.version,
            out.transcript()
        );
        drop(guard);
        assert!(server.wait_exit().success());
    });
}

/// `agora shutdown` from another host is refused unless the server allows it; from
/// this machine it works.
#[tokio::test]
async fn only_local_clients_may_shut_the_server_down_unless_allowed() {
    let Some(ip) = non_loopback_ipv4() else {
        panic!("this test needs a non-loopback IPv4 address on some interface");
    };
    for allowed in [false, true] {
        let mut args = vec!["--listen".to_owned(), "0.0.0.0:0".to_owned()];
        if allowed {
            args.push("--allow-remote-shutdown".into());
        }
        let mut server = Server::start_with(ServerOptions { args, ..Default::default() });
        server.wait_for_log("address=0.0.0.0:");
        let port =
            server.log().split("address=0.0.0.0:").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_owned();
        let remote =
            Manager::connect_with(&format!("{ip}:{port}"), &server.authkey, ManagerOptions::new().reconnect(false))
                .await
                .unwrap();
        match remote.shutdown_server().await {
            Err(Error::Unsupported(why)) if !allowed => assert!(why.contains("--allow-remote-shutdown"), "{why}"),
            Ok(()) if allowed => {
                assert!(server.wait_exit().success());
                continue;
            }
            other => panic!("allowed={allowed}: {other:?}"),
        }
        assert!(server.is_running(), "a refused shutdown leaves the server running");
        let local = Manager::connect_with(
            &format!("127.0.0.1:{port}"),
            &server.authkey,
            ManagerOptions::new().reconnect(false),
        )
        .await
        .unwrap();
        local.shutdown_server().await.unwrap();
        assert!(server.wait_exit().success());
    }
}

/// A non-loopback IPv4 address of this machine.
fn non_loopback_ipv4() -> Option<std::net::Ipv4Addr> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list we walk and free; the pointers are valid until then.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found = Some(ip);
                    break;
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}
