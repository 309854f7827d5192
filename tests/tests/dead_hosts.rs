//! A client host that vanishes without closing its sockets (power loss, a cut cable, a
//! partition) loses its locks within `--dead-peer-timeout`.
//!
//! The test builds a little network of its own: a network namespace for the client,
//! joined to the test's namespace by a veth pair. A stock CPython client in that
//! namespace takes a Lock, RLock and Semaphore; then the test takes the link down, so
//! nothing it sends arrives and nothing comes back — no FIN, no reset. A native client
//! waiting for the Lock must get it once the server's keepalive gives up on the dead
//! peer. Needs root and `ip netns` (skipped, saying so, where they are missing).

mod python_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, HANG_GUARD};
use python_support::{for_each_python, script, Python};

/// The dead-peer timeout the server runs with: short, so the test is quick.
const DEAD_PEER_TIMEOUT_SECS: u64 = 3;

/// A namespace with one end of a veth pair; removed (with both ends) on drop.
struct Island {
    namespace: String,
    host_link: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Island {
    /// Builds namespace number `n` of this test process: 10.254.n.1 on the test's side,
    /// 10.254.n.2 inside.
    fn build(n: u8) -> Result<Island, String> {
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let island = Island {
            namespace: format!("agora-dh-{tag}"),
            host_link: format!("adh{tag}a"),
            host_ip: format!("10.254.{n}.1"),
        };
        let inner_link = format!("adh{tag}b");
        let inner_ip = format!("10.254.{n}.2/30");
        ip(&["netns", "add", &island.namespace])?;
        ip(&["link", "add", &island.host_link, "type", "veth", "peer", "name", &inner_link])?;
        ip(&["link", "set", &inner_link, "netns", &island.namespace])?;
        ip(&["addr", "add", &format!("{}/30", island.host_ip), "dev", &island.host_link])?;
        ip(&["link", "set", &island.host_link, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", island.namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &inner_ip, "dev", &inner_link])?;
        inside(&["link", "set", &inner_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(island)
    }

    /// Cuts the link: from now on nothing crosses it, in either direction.
    fn cut(&self) {
        ip(&["link", "set", &self.host_link, "down"]).expect("take the link down");
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

/// Whether this machine lets the test build namespaces (root, `ip netns`).
fn namespaces_available() -> bool {
    match Island::build(250) {
        Ok(_) => true,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces are not available here ({why}); the dead-host test needs root and `ip netns`");
            false
        }
    }
}

/// The stock CPython client holding the locks, inside the island.
fn holder(python: &Python, island: &Island, address: &str, authkey: &[u8]) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &island.namespace]).arg(&python.exe).arg("-u").arg(script("scenarios.py"));
    cmd.args(["hold_locks", address]);
    cmd.env("AGORA_AUTHKEY", std::str::from_utf8(authkey).unwrap()).env_remove("PYTHONPATH");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("start the holder in its namespace")
}

#[test]
fn a_vanished_hosts_locks_go_to_the_next_waiter() {
    if !namespaces_available() {
        return;
    }
    let versions = std::sync::atomic::AtomicU8::new(0);
    for_each_python(|python| {
        let island = Island::build(versions.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).unwrap();
        let exposes = ["get_lock=lock:L", "get_rlock=rlock:R", "get_semaphore=semaphore:S"];
        let mut args: Vec<String> = exposes.iter().flat_map(|e| ["--expose".to_owned(), (*e).to_owned()]).collect();
        args.extend(["--listen".into(), format!("{}:0", island.host_ip)]);
        args.extend(["--dead-peer-timeout".into(), format!("{DEAD_PEER_TIMEOUT_SECS}s")]);
        let server = Server::start_with(ServerOptions { args, ..Default::default() });
        let listening = format!("listening address={}:", island.host_ip);
        server.wait_for_log(&listening);
        let log = server.log();
        let port = log.split(&listening).nth(1).and_then(|s| s.split_whitespace().next()).expect("the port");
        let island_address = format!("{}:{port}", island.host_ip);

        let mut holder = holder(python, &island, &island_address, &server.authkey);
        let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "HELD", "the holder took the locks");

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let waited = runtime.block_on(async {
            let options = ManagerOptions::new().reconnect(false);
            let waiter = Manager::connect_with(&server.address, &server.authkey, options).await.unwrap();
            let lock = waiter.lock("L").await.unwrap();
            island.cut();
            let cut_at = Instant::now();
            let guard = tokio::time::timeout(HANG_GUARD, lock.acquire()).await;
            let guard = guard.expect("the vanished host's lock was never released").unwrap();
            let waited = cut_at.elapsed();
            guard.release().await.unwrap();
            waited
        });
        eprintln!("CPython {}: the lock passed to the waiter {waited:?} after the link was cut", python.version);
        // The bound is generous (timing on a shared machine); without keepalive the
        // lock would stay held for the OS's retransmission timeout, about 15 minutes.
        assert!(waited < Duration::from_secs(10 * DEAD_PEER_TIMEOUT_SECS), "took {waited:?}");
        let _ = holder.kill();
        let _ = holder.wait();
    });
}
