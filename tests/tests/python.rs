//! Unmodified CPython clients (every 3.8–3.13 found, see `python_support`) against the
//! real `agora` binary: each typeid and method (3.14's `set` too), each error type as
//! the real Python exception, iteration, str/repr/_getvalue, nested proxies, refcounts,
//! many client processes at once, hand-offs to waiting clients (each once, over TCP and
//! Unix sockets), a killed client's locks released, the master/worker
//! pattern shared with a Rust client, wrong authkeys, Pool refused, TCP and Unix sockets.
//!
//! The scenarios themselves are Python (`tests/python/scenarios.py SCENARIO ADDRESS`);
//! each raises on any difference from CPython's own manager. Every scenario runs once
//! per CPython version, the versions in parallel, each against its own server.

mod python_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use agora_tests::{Server, ServerOptions, HANG_GUARD};
use python_support::{command, for_each_python, run, Python};

/// How long one scenario may take before it counts as hung.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `scenarios.py NAME ADDRESS ARGS…` with `python` against `server`; fails with
/// the transcript unless it succeeded and said so.
fn scenario(python: &Python, server: &Server, name: &str, args: &[&str]) -> String {
    let mut argv = vec![name, server.address.as_str()];
    argv.extend_from_slice(args);
    let done = run(command(python, "scenarios.py", &argv, &server.authkey), SCENARIO_TIMEOUT);
    let said_ok = done.stdout.contains(&format!("OK {name} {}", python.version));
    assert!(
        done.ok() && said_ok,
        "scenario {name} failed\n{}\n--- server log (tail)\n{}",
        done.transcript(),
        tail(&server.log())
    );
    done.stdout
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Every version runs `name` against a fresh TCP server of its own.
fn each_version(name: &str) {
    for_each_python(|python| {
        let server = Server::start();
        scenario(python, &server, name, &[]);
    });
}

#[test]
fn every_typeid_and_method() {
    each_version("types");
}

#[test]
fn errors_arrive_as_the_real_python_exceptions() {
    each_version("errors");
}

#[test]
fn dict_and_list_iteration() {
    each_version("iteration");
}

/// CPython 3.14's `set` typeid from every older CPython: a stock client registers it with
/// a `SetProxy` built like 3.14's, and every method's result (or exception) and the
/// set's state after it match a local `set` doing the same.
#[test]
fn the_set_typeid_of_cpython_3_14() {
    each_version("set");
}

/// `--advertise`: proxies sent inside values carry the address a listener advertises
/// (for clients behind NAT, in containers…), not the one the client dialled.
#[test]
fn proxies_in_values_carry_the_advertised_address() {
    for_each_python(|python| {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agora.sock").display().to_string();
        let args = ["--listen", &format!("unix:{socket}"), "--advertise", &format!("127.0.0.1:0=unix:{socket}")];
        let server = Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() });
        assert!(server.address.starts_with("127.0.0.1:"), "the client dials TCP: {}", server.address);
        scenario(python, &server, "advertised", &[&socket]);
    });
}

#[test]
fn the_list_methods_cpython_3_14_adds() {
    each_version("list_3_14");
}

#[test]
fn str_repr_and_getvalue() {
    each_version("repr");
}

#[test]
fn refcounts_and_number_of_objects_follow_cpython() {
    each_version("refcounts");
}

/// Nested proxies (list in dict, dict in list, Queue in dict, three levels) work with
/// no `current_process().authkey` workaround over loopback TCP and Unix sockets, stay
/// alive after `del` of their own proxy, and are freed with their container.
#[test]
fn nested_proxies_without_the_authkey_workaround() {
    for_each_python(|python| {
        let tcp = Server::start();
        scenario(python, &tcp, "nested", &[]);
        let unix = Server::start_unix();
        scenario(python, &unix, "nested", &[]);
    });
}

/// Over TCP from a non-loopback address the key is never sent: the nested proxy
/// fails as on CPython unless the client sets `current_process().authkey`.
#[test]
fn remote_clients_use_the_process_authkey_for_nested_proxies() {
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback IPv4 address on this machine; skipping");
        return;
    };
    for_each_python(|python| {
        let mut server = Server::start_with(ServerOptions {
            args: vec!["--listen".into(), format!("{ip}:0")],
            ..Default::default()
        });
        server.wait_for_log(&format!("listening address={ip}:"));
        let remote = listening_addresses(&server).into_iter().find(|a| a.starts_with(&ip)).expect("remote listener");
        server.address = remote;
        scenario(python, &server, "nested_workaround", &["without"]);
        scenario(python, &server, "nested_workaround", &["with"]);
    });
}

/// 8 processes × 50 increments of a shared Value under a manager Lock: exact total.
#[test]
fn many_processes_increment_under_a_lock() {
    for_each_python(|python| {
        let server = Server::start();
        scenario(python, &server, "many_processes", &["8", "50"]);
    });
}

/// Processes blocked on a Lock, a Queue and an Event over both transports: what the
/// thread that hands something over writes to a waiting client itself (a lock grant, a
/// scalar item) and what it leaves to the waiting connection (a tuple, a 5 KB str)
/// arrive exactly once, intact, and each client's next call is answered (after an
/// acquire the timer answered with `False`, too) — on threads
/// of their own and on the shared workers (`--python-threads 0`).
#[test]
fn waiting_clients_get_each_hand_off_once_over_tcp_and_unix() {
    let shared_workers = || ServerOptions { args: vec!["--python-threads".into(), "0".into()], ..Default::default() };
    for_each_python(|python| {
        for server in [Server::start(), Server::start_unix(), Server::start_with(shared_workers())] {
            scenario(python, &server, "many_processes", &["4", "100"]);
            scenario(python, &server, "handoffs", &["4", "300"]);
        }
    });
}

/// A CPython client blocked in `acquire()` is granted the Lock when its holder is
/// killed, and is killed in turn after it said so: the lock is free again for a third
/// client. (The grant reaches a waiting client from the thread that made it; its own
/// connection learns of it only when the client closes.)
#[test]
fn a_client_killed_after_its_waiting_acquire_was_granted_leaves_the_lock_free() {
    let exposes = ["get_lock=lock:L", "get_rlock=rlock:R", "get_semaphore=semaphore:S"];
    let args: Vec<String> = exposes.iter().flat_map(|e| ["--expose".to_owned(), (*e).to_owned()]).collect();
    for_each_python(|python| {
        for server in [
            Server::start_with(ServerOptions { args: args.clone(), ..Default::default() }),
            Server::start_with(ServerOptions { args: args.clone(), unix: true, ..Default::default() }),
        ] {
            let spawn = |name: &str| {
                let mut child =
                    command(python, "scenarios.py", &[name, &server.address], &server.authkey).spawn().expect("spawn");
                let lines = BufReader::new(child.stdout.take().unwrap()).lines();
                (child, lines)
            };
            let (mut holder, mut holder_said) = spawn("hold_locks");
            assert_eq!(holder_said.next().and_then(Result::ok).as_deref(), Some("HELD"));
            let (mut waiter, mut waiter_said) = spawn("wait_for_lock");
            assert_eq!(waiter_said.next().and_then(Result::ok).as_deref(), Some("WAITING"));
            wait_until_waiting(&server, "L");
            // SAFETY: kill(2) on children we spawned.
            assert_eq!(unsafe { libc::kill(holder.id() as i32, libc::SIGKILL) }, 0);
            let _ = holder.wait();
            assert_eq!(waiter_said.next().and_then(Result::ok).as_deref(), Some("GOT"), "the waiter was granted");
            assert_eq!(unsafe { libc::kill(waiter.id() as i32, libc::SIGKILL) }, 0);
            let _ = waiter.wait();
            let out = scenario(python, &server, "take_locks", &["20"]);
            assert!(out.contains("ACQUIRED"), "{out}");
        }
    });
}

/// Returns once some call waits on the named object (a hang guard bounds it).
fn wait_until_waiting(server: &Server, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let observer = server.client().await;
        let deadline = Instant::now() + HANG_GUARD;
        while observer.holders(name).await.unwrap().waiting.is_empty() {
            assert!(Instant::now() < deadline, "no call ever waited on {name}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn threads_share_an_rlock() {
    each_version("threads");
}

#[test]
fn wrong_authkey_is_rejected() {
    each_version("wrong_authkey");
}

#[test]
fn pool_is_refused_with_a_clear_error() {
    each_version("pool");
}

#[test]
fn unix_socket() {
    for_each_python(|python| {
        let server = Server::start_unix();
        scenario(python, &server, "basic", &[]);
        scenario(python, &server, "errors", &[]);
    });
}

/// A Python process holding a Lock, an RLock and a Semaphore is SIGKILLed; another
/// Python client (of another version) acquires all three at once — on CPython's
/// server they would stay taken forever.
#[test]
fn a_killed_clients_locks_are_released() {
    let exposes = ["get_lock=lock:L", "get_rlock=rlock:R", "get_semaphore=semaphore:S"];
    let args: Vec<String> = exposes.iter().flat_map(|e| ["--expose".to_owned(), (*e).to_owned()]).collect();
    for_each_python(|python| {
        let server = Server::start_with(ServerOptions { args: args.clone(), ..Default::default() });
        let mut holder = command(python, "scenarios.py", &["hold_locks", &server.address], &server.authkey)
            .spawn()
            .expect("spawn holder");
        let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
        let said = lines.next().and_then(Result::ok).unwrap_or_default();
        if said != "HELD" {
            let _ = holder.kill();
            let out = holder.wait_with_output().unwrap();
            panic!("holder did not take the locks: {said:?}\n{}", String::from_utf8_lossy(&out.stderr));
        }
        // SAFETY: kill(2) on a child we spawned.
        assert_eq!(unsafe { libc::kill(holder.id() as i32, libc::SIGKILL) }, 0);
        let _ = holder.wait();

        let taker = python_support::pythons().iter().rev().find(|p| p.version != python.version).unwrap_or(python);
        let started = Instant::now();
        let out = scenario(taker, &server, "take_locks", &["20"]);
        let elapsed = started.elapsed();
        assert!(out.contains("ACQUIRED"), "{out}");
        // The taker's own start-up is most of this; a lock that stayed taken would
        // have made it wait out its 20 s timeout and fail.
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?} to get a dead holder's locks");
    });
}

/// The classic distributed master/worker: `--expose get_task_queue=queue:tasks
/// get_result_queue=queue:results`; a Rust client (agora_client) is the master, one
/// Python worker per CPython version registers the typeids with BaseManager and
/// serves tasks. Every task is processed exactly once.
#[test]
fn master_worker_across_python_and_rust() {
    const TASKS: u64 = 300;
    let server = Server::start_with(ServerOptions {
        args: ["--expose", "get_task_queue=queue:tasks", "--expose", "get_result_queue=queue:results"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pythons = python_support::pythons();
    let (tasks, results) = rt.block_on(async {
        let manager = server.client().await;
        let tasks = manager.queue::<Option<u64>>("tasks", 0).await.expect("tasks queue");
        let results = manager.queue::<(u64, u64, String)>("results", 0).await.expect("results queue");
        for task in 0..TASKS {
            tasks.put(&Some(task)).await.unwrap();
        }
        (tasks, results)
    });

    let workers: Vec<_> = pythons
        .iter()
        .map(|python| {
            let id = format!("py{}", python.version);
            let cmd = command(python, "scenarios.py", &["worker", &server.address, &id], &server.authkey);
            std::thread::spawn(move || run(cmd, SCENARIO_TIMEOUT))
        })
        .collect();

    let collected = rt.block_on(async {
        let mut collected = Vec::new();
        for _ in 0..TASKS {
            let result = tokio::time::timeout(HANG_GUARD, results.get()).await;
            collected.push(result.expect("a result within the hang guard").expect("result"));
        }
        for _ in pythons {
            tasks.put(&None).await.unwrap();
        }
        collected
    });

    let mut per_worker: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let done = worker.join().expect("worker thread");
        assert!(done.ok(), "worker failed\n{}", done.transcript());
        for line in done.stdout.lines().filter(|l| l.starts_with("WORKER ")) {
            let mut parts = line.split_whitespace().skip(1);
            let (id, count) = (parts.next().unwrap().to_owned(), parts.next().unwrap().parse::<u64>().unwrap());
            per_worker.insert(id, count);
        }
    }
    let mut seen = vec![0u32; TASKS as usize];
    for (task, square, worker) in &collected {
        assert_eq!(*square, task * task, "wrong result from {worker}");
        seen[*task as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "every task exactly once: {seen:?}");
    assert_eq!(per_worker.len(), pythons.len(), "every worker reported: {per_worker:?}");
    assert_eq!(per_worker.values().sum::<u64>(), TASKS, "{per_worker:?}");
    rt.block_on(async {
        assert_eq!(results.len().await.unwrap(), 0);
        assert_eq!(tasks.len().await.unwrap(), 0);
    });
}

/// References cross languages: a list a Rust client stores by reference in a named
/// dict is a working proxy in every CPython version (its Token gets the address the
/// Python client connected to; AutoProxy asks `get_methods`), and a dict a Python
/// client stores there is a reference the Rust client reads back by id.
#[test]
fn references_cross_between_rust_and_python() {
    use agora_proto::reference::ObjectRef;
    let server = Server::start_with(ServerOptions {
        args: ["--expose", "get_shared=dict:shared"].map(String::from).to_vec(),
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (manager, list, shared) = rt.block_on(async {
        let manager = server.client().await;
        let list = manager
            .new_list::<agora_proto::Value>(&[agora_proto::Value::Int(1), agora_proto::Value::Int(2)])
            .await
            .unwrap();
        let shared = manager.dict::<String, agora_proto::Value>("shared").await.unwrap();
        shared.insert(&"list".into(), &ObjectRef::new(list.id(), "list").to_value()).await.unwrap();
        (manager, list, shared)
    });
    for_each_python(|python| {
        scenario(python, &server, "rust_reference", &[&python.version]);
    });
    rt.block_on(async {
        let items = list.to_vec().await.unwrap();
        let mut tags: Vec<String> =
            items[2..].iter().map(|v| agora_proto::value::from_value::<String>(v.clone()).unwrap()).collect();
        tags.sort();
        let mut want: Vec<String> = python_support::pythons().iter().map(|p| p.version.clone()).collect();
        want.sort();
        assert_eq!(tags, want, "one append per CPython version: {items:?}");
        for python in python_support::pythons() {
            let stored = shared.get(&format!("from_{}", python.version)).await.unwrap().expect("stored by Python");
            let reference = ObjectRef::from_value(&stored).expect("a reference");
            assert_eq!(reference.typeid, "dict");
            assert_eq!(reference.proxy_class, "DictProxy");
        }
    });
    // Held by the shared dict, so alive although the clients that made them are gone.
    let versions: Vec<&str> = python_support::pythons().iter().map(|p| p.version.as_str()).collect();
    let newest = python_support::pythons().last().unwrap();
    scenario(newest, &server, "read_stored", &versions);
    drop(manager);
}

/// A client thread's connection lives as long as the client holds any proxy; objects
/// it made and dropped meanwhile must be freed then, not when it disconnects.
/// 256 dicts of 1 MiB each are made and dropped over one connection: the server's
/// resident memory must not grow by anything like that while it is still open.
#[test]
fn a_long_lived_connection_does_not_keep_freed_objects() {
    let python = python_support::pythons().last().expect("a CPython");
    let server = Server::start();
    let before = server.resident_bytes() / 1024;
    let mut cmd = command(python, "scenarios.py", &["churn", &server.address, "256", "1048576"], &server.authkey);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let said = lines.next().and_then(Result::ok).unwrap_or_default();
    let during = server.resident_bytes() / 1024;
    drop(child.stdin.take()); // lets the script finish
    let out = child.wait_with_output().expect("wait");
    assert_eq!(said, "CHURNED", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let grown = during.saturating_sub(before);
    assert!(grown < 64 * 1024, "server grew by {grown} KiB while 256 MiB of freed dicts went through one connection");
}

/// Every address the server logged as listening.
fn listening_addresses(server: &Server) -> Vec<String> {
    server.log().lines().filter_map(|l| l.split("listening address=").nth(1)).map(|a| a.trim().to_owned()).collect()
}

/// An IPv4 address of this machine that is not loopback (the one its default route
/// uses), if any. Nothing is sent: connecting a UDP socket only picks a route.
fn non_loopback_ipv4() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("8.8.8.8:53").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// Reliable consumption from CPython: `Queue(max_deliveries=…, dead_letter=…)` as
/// constructor keywords, `get_leased`/`ack`/`nack` through the exposed list, poison
/// items moved to the dead letter queue (none lost, none twice), `nack(r, delay=…)`.
#[test]
fn cpython_dead_letters_and_delayed_nacks() {
    for_each_python(|python| {
        let server = Server::start_with(ServerOptions {
            args: ["--expose", "get_dead=queue:py.dead"].map(String::from).to_vec(),
            ..Default::default()
        });
        scenario(python, &server, "dead_letters", &[]);
    });
}

/// A CPython client holds a Lock and a native client waits for it: the holders view
/// (what `agora get` prints) shows the CPython session with its peer address and
/// fencing token, and the native waiter; when the holder is killed the waiter gets it.
#[test]
fn holders_show_a_cpython_holder_and_a_native_waiter() {
    let exposes = ["get_lock=lock:L", "get_rlock=rlock:R", "get_semaphore=semaphore:S"];
    let args: Vec<String> = exposes.iter().flat_map(|e| ["--expose".to_owned(), (*e).to_owned()]).collect();
    let python = &python_support::pythons()[0];
    let server = Server::start_with(ServerOptions { args, ..Default::default() });
    let mut holder =
        command(python, "scenarios.py", &["hold_locks", &server.address], &server.authkey).spawn().expect("spawn");
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let said = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(said, "HELD", "the CPython holder did not take the locks");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let waiter = server.client().await;
        let lock = waiter.lock("L").await.unwrap();
        let waiting = tokio::spawn(async move { lock.acquire().await });
        let observer = server.client().await;
        let deadline = Instant::now() + HANG_GUARD;
        let view = loop {
            let view = observer.holders("L").await.unwrap();
            if !view.waiting.is_empty() {
                break view;
            }
            assert!(Instant::now() < deadline, "the native acquire never waited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(view.held.len(), 1, "{view:?}");
        let held = &view.held[0];
        assert!(held.session != waiter.session_id() && held.session != observer.session_id());
        assert!(held.peer.as_deref().is_some_and(|p| p.starts_with("127.0.0.1:")), "{held:?}");
        let token = held.token.expect("a lock grant has a fencing token");
        assert_eq!(view.waiting.iter().map(|w| w.session).collect::<Vec<_>>(), vec![waiter.session_id()]);
        let rlock = observer.holders("R").await.unwrap();
        assert_eq!(rlock.held.iter().map(|h| h.session).collect::<Vec<_>>(), vec![held.session]);
        // SAFETY: kill(2) on a child we spawned.
        assert_eq!(unsafe { libc::kill(holder.id() as i32, libc::SIGKILL) }, 0);
        let _ = holder.wait();
        let guard = tokio::time::timeout(HANG_GUARD, waiting).await.unwrap().unwrap().unwrap();
        assert!(guard.token() > token, "the next grant's token is larger");
        let view = observer.holders("L").await.unwrap();
        let now_held: Vec<_> = view.held.iter().map(|h| (h.session, h.token)).collect();
        assert_eq!(now_held, vec![(waiter.session_id(), Some(guard.token()))]);
        guard.release().await.unwrap();
    });
}
