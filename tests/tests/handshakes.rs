//! Sockets that connect and never authenticate cannot lock real clients out.

mod python_support;

use std::net::TcpStream;
use std::time::Duration;

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions};

/// 50 idle sockets against `--max-connections 32 --max-handshakes 16`: they neither take
/// connection slots (those are taken after authenticating) nor keep newcomers from
/// authenticating (each newcomer pushes out the oldest unfinished handshake).
#[test]
fn idle_unauthenticated_sockets_do_not_lock_clients_out() {
    let args = ["--max-connections", "32", "--max-handshakes", "16", "--handshake-timeout", "60s"];
    let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(&server.address).unwrap()).collect();
    // The server has seen them all (they are accepted in order, before the clients below).
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
    // A stock CPython client too, on every version, while the idle sockets are still open
    // (at most a dozen real handshakes at once here: a burst of more than
    // --max-handshakes real ones would push each other out too).
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
    // Idle sockets were pushed out (the log is read by a thread of its own: wait for it).
    server.wait_for_log("its handshake was the oldest unfinished one");
    drop(idle);
}
