//! Objects a crashed CPython client created: given back when it was on a Unix socket
//! (the kernel names its process), counted when it was on TCP.

mod python_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, HANG_GUARD};

const DICTS: u64 = 200;

/// After `python_support::CONNECT`: creates DICTS anonymous dicts, keeps them, says
/// READY, and waits to be killed.
const SCRIPT: &str = r#"
import time
kept = [m.dict() for _ in range(int(sys.argv[3]))]
print("READY", flush=True)
time.sleep(3600)
"#;

fn dicts(rt: &tokio::runtime::Runtime, server: &Server) -> (u64, u64) {
    rt.block_on(async {
        let m = Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false))
            .await
            .unwrap();
        let stats = m.stats().await.unwrap();
        let dicts = stats.objects_by_kind.iter().find(|(k, _)| k == "dict").map_or(0, |(_, n)| *n);
        (dicts, stats.client_objects_untracked)
    })
}

fn run_and_kill(python: &python_support::Python, server: &Server) {
    let mut child = python_support::spawn_with_manager(python, SCRIPT, server, &[&DICTS.to_string()], Stdio::inherit());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "CPython {}", python.version);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_unix_socket_client_s_objects_are_freed() {
    python_support::for_each_python(|python| {
        let server = Server::start_unix();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        run_and_kill(python, &server);
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let (dicts, untracked) = dicts(&rt, &server);
            assert_eq!(untracked, 0, "CPython {}: Unix-socket references are tracked", python.version);
            if dicts == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "CPython {}: {dicts} dicts still alive", python.version);
            std::thread::sleep(Duration::from_millis(50));
        }
        server.wait_for_log("a CPython client process is gone");
    });
}

#[test]
fn a_killed_tcp_client_s_objects_are_counted() {
    python_support::for_each_python(|python| {
        let server = Server::start_with(ServerOptions::default());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        run_and_kill(python, &server);
        assert_eq!(dicts(&rt, &server), (DICTS, DICTS), "CPython {}", python.version);
        // The server cannot know a TCP client's process is gone: they stay, counted.
        std::thread::sleep(Duration::from_millis(2_500));
        assert_eq!(dicts(&rt, &server), (DICTS, DICTS), "CPython {}", python.version);
    });
}
