//! A replicated cluster of real `agora serve` nodes: forming it, serving through any
//! node, losing the leader (SIGKILL) without losing an acknowledged write, a node
//! restarted from its files catching up, reads confirmed by a read-index round and
//! never stale from a cut-off leader, sessions (locks, leases, guards) that survive a
//! leader change, a cut-off leader letting its clients go to the new one, an acquire parked on a killed leader made again on the new one,
//! stock CPython clients of a follower carried across a leader change (killed or paused),
//! membership changes with `agora cluster`,
//! snapshots cut while a big dict changes restoring exactly what was acknowledged,
//! and bad settings refused with a reason.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use agora_client::blocking::Manager;
use agora_client::ManagerOptions;
use agora_proto::Address;
use agora_tests::cluster::Cluster;
use agora_tests::{agora_bin, AUTHKEY};

mod python_support;

fn addresses(cluster: &Cluster) -> Vec<Address> {
    cluster.client_addresses().iter().map(|a| a.parse().expect("an address")).collect()
}

/// A client of the whole cluster (it moves to another node when one goes).
fn client(cluster: &Cluster) -> Manager {
    let options = ManagerOptions::new().reconnect_deadline(Duration::from_secs(60));
    Manager::connect_any(addresses(cluster), AUTHKEY, options).expect("connect to the cluster")
}

/// A client of node `i` only.
fn client_of(cluster: &Cluster, i: usize) -> Manager {
    Manager::connect(cluster.client_address(i), AUTHKEY).expect("connect to the node")
}

/// A read, or a write that leaves the same state however often it is applied (a
/// dict insert of a fixed value), made again while its connection was lost under it:
/// a call in flight when a leader goes (or steps aside, cut off on a loaded machine)
/// has an unknown outcome.
fn retry<T>(call: impl Fn() -> agora_client::Result<T>) -> T {
    for _ in 0..10 {
        match call() {
            Ok(value) => return value,
            Err(agora_client::Error::ConnectionLost(_)) => continue,
            Err(e) => panic!("call failed: {e}"),
        }
    }
    panic!("the connection kept breaking")
}

fn agora(args: &[&str]) -> std::process::Output {
    Command::new(agora_bin()).args(args).env_remove("AGORA_AUTHKEY").output().expect("run agora")
}

#[test]
fn every_node_serves_and_a_killed_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    // Through a follower (passed on to the leader) and through the leader.
    let via_follower = client_of(&cluster, follower);
    let d = via_follower.dict::<String, i64>("acked").expect("open");
    for i in 0..50 {
        d.insert(&format!("k{i}"), &i).expect("write through a follower");
    }
    let via_leader = client_of(&cluster, leader);
    let d2 = via_leader.dict::<String, i64>("acked").expect("open");
    assert_eq!(d2.len().unwrap(), 50, "the leader sees what was written through a follower");
    drop((d, d2, via_follower, via_leader));

    let all = client(&cluster);
    let d = all.dict::<String, i64>("acked").expect("open");
    let counter = all.value::<i64>("counter", &0).expect("open");
    // What the client saw acknowledged, and what it cannot know (an add whose
    // connection broke under it: adding again could count it twice).
    let (mut added, mut unknown) = (0, 0);
    for i in 50..100 {
        retry(|| d.insert(&format!("k{i}"), &i));
        match counter.add(&1) {
            Ok(_) => added += 1,
            Err(agora_client::Error::ConnectionLost(_)) => unknown += 1,
            Err(e) => panic!("add failed: {e}"),
        }
    }
    cluster.kill9(leader);
    // The client moves to another node; every acknowledged write is there. (A call in
    // flight when the connection broke reports that its outcome is unknown.)
    assert_eq!(retry(|| d.len()), 100);
    let count = retry(|| counter.get());
    assert!((added..=added + unknown).contains(&count), "{count} counted; {added} acknowledged, {unknown} unknown");
    for i in 100..120 {
        retry(|| d.insert(&format!("k{i}"), &i));
    }
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader);
    // The old leader comes back from its files and catches up.
    cluster.restart(leader);
    cluster.wait_converged(new_leader);
    let back = client_of(&cluster, leader);
    assert_eq!(back.dict::<String, i64>("acked").unwrap().len().unwrap(), 120);
}

/// A leader cuts its snapshots in one hold of the journal's lock and reads big objects
/// out afterwards, while writes go on. With a snapshot every 50 entries and a
/// 50,000-entry dict changing under them — `pop_last` among the changes, which a
/// snapshot holding a later change would repeat on replay — a leader restarted from its
/// own snapshots and log, and a node that caught up by installing one of them, both
/// hold exactly the dict the client saw acknowledged.
#[test]
fn snapshots_cut_while_a_big_dict_changes_restore_exactly_what_was_acknowledged() {
    let mut cluster = Cluster::start_with(3, vec!["--snapshot-after-entries".to_owned(), "50".to_owned()]);
    let a = cluster.wait_for_leader();
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);
    // B misses everything from here on: more than the 1,000 entries a snapshot keeps.
    cluster.kill9(b);
    let manager = client_of(&cluster, a);
    let d = manager.dict::<String, i64>("big").expect("open");
    let mut model: BTreeMap<String, i64> = (0..50_000).map(|i| (format!("s{i}"), i)).collect();
    d.update(model.iter()).expect("seed");
    for i in 0..1_400i64 {
        match i % 4 {
            0 => {
                d.insert(&format!("n{i}"), &i).expect("insert");
                model.insert(format!("n{i}"), i);
            }
            1 => {
                d.insert(&format!("s{i}"), &-i).expect("overwrite");
                model.insert(format!("s{i}"), -i);
            }
            2 => {
                let key = format!("s{}", i * 37 % 50_000);
                assert_eq!(d.remove(&key).expect("remove"), model.remove(&key), "{key}");
            }
            _ => {
                let (key, value) = d.pop_last().expect("pop_last").expect("not empty");
                assert_eq!(model.remove(&key), Some(value), "popped {key}");
            }
        }
    }
    drop((d, manager));
    let expected: Vec<(String, i64)> = model.into_iter().collect();
    let check = |cluster: &Cluster, who: &str| {
        let manager = client(cluster);
        let mut items = retry(|| manager.dict::<String, i64>("big")?.items());
        items.sort();
        assert_eq!(items.len(), expected.len(), "{who}");
        assert!(items == expected, "{who}: the dict differs from what was acknowledged");
    };
    // A and C go down; A comes back with B, whose log is behind A's: only A can lead,
    // from its own snapshot (cut while the dict changed) and its log.
    cluster.kill9(c);
    cluster.kill9(a);
    cluster.restart(a);
    cluster.restart(b);
    assert_eq!(cluster.wait_for_leader(), a, "B's log is behind A's: B cannot win A's vote");
    check(&cluster, "the leader restarted from its own snapshot");
    // B caught up by installing A's snapshot. With A gone and C back, B or C leads.
    cluster.wait_converged(a);
    cluster.kill9(a);
    cluster.restart(c);
    cluster.wait_for_leader();
    check(&cluster, "a node that installed a snapshot, or one restarted from its own");
}

#[test]
fn reads_confirm_the_lead_without_a_log_write_and_a_cut_off_leader_answers_no_stale_read() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let on_leader = client_of(&cluster, leader);
    let d = on_leader.dict::<String, i64>("reads").expect("open");
    d.insert(&"k".to_string(), &1).expect("write");
    cluster.wait_converged(leader);

    // A read on an idle leader is confirmed by a heartbeat round (read-index): the Raft
    // log does not grow, however many reads there are.
    let last_index = || cluster.status(leader).and_then(|s| s.last_log_index);
    let before = last_index();
    for _ in 0..20 {
        assert_eq!(d.get(&"k".to_string()).expect("read"), Some(1));
    }
    assert_eq!(last_index(), before, "20 reads on an idle leader appended log entries");

    // Cut the leader off; another node takes over and a write through it is
    // acknowledged. A read made on the old leader after that must never answer the old
    // value: it waits (no quorum confirms the lead) and fails once it hears of the new
    // term.
    cluster.isolate(leader);
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    let new_leader = loop {
        let now = cluster.wait_for_leader();
        if now != leader {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "no other node took over");
        std::thread::sleep(Duration::from_millis(50));
    };
    let elsewhere = client_of(&cluster, new_leader);
    elsewhere.dict::<String, i64>("reads").unwrap().insert(&"k".to_string(), &2).expect("write to the new leader");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(d.get(&"k".to_string()));
    });
    let stale = |answer: &agora_client::Result<Option<i64>>| matches!(answer, Ok(Some(1)));
    if let Ok(answer) = rx.recv_timeout(Duration::from_secs(3)) {
        assert!(!stale(&answer), "a cut-off leader served a stale read: {answer:?}");
    } else {
        cluster.heal();
        let answer = rx.recv_timeout(agora_tests::HANG_GUARD).expect("the read ends once the old leader hears");
        assert!(!stale(&answer), "a cut-off leader served a stale read after healing: {answer:?}");
    }
}

/// Waits (up to the hang guard) until `ready` holds.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A native client's session survives a leader change: the new leader detaches it,
/// and the client, which reconnects by itself as soon as its connection dies (it
/// makes no call here), resumes it. The lock it held stays held by it all along, its
/// guard is valid again and releases by its token; its lease is still its own, and
/// its session id is the same.
#[test]
fn a_lock_and_a_lease_survive_a_leader_failover_and_their_guards_stay_valid() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let holder = client(&cluster);
    let session = holder.session_id();
    let guard = holder.lock("fenced").expect("open").acquire().expect("acquire");
    let jobs = holder.queue::<String>("jobs", 0).expect("open");
    jobs.put(&"job-1".to_string()).expect("put");
    let leased = jobs.get_leased(Duration::from_secs(600)).expect("lease");
    assert_eq!(leased.item(), "job-1");

    cluster.kill9(leader);
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader);
    // Another client, through the new leader, finds the lock still held.
    let other = client_of(&cluster, new_leader);
    let lock = other.lock("fenced").expect("open");
    assert!(lock.try_acquire().expect("try").is_none(), "the holder's lock was released by the failover");
    assert!(other.queue::<String>("jobs", 0).unwrap().try_get().expect("try_get").is_none(), "the lease ended");

    wait_until("the holder resumed its session", || guard.is_valid() && leased.is_valid());
    assert_eq!(holder.session_id(), session, "the client resumed its session");
    let token = guard.token();
    guard.release().expect("the guard of the resumed session releases the lock");
    leased.ack().expect("the lease of the resumed session acks its item");
    let next = lock.try_acquire().expect("try").expect("free once its holder released it");
    assert!(next.token() > token, "fencing tokens only grow: {} after {token}", next.token());
    let jobs = other.queue::<String>("jobs", 0).unwrap();
    assert_eq!((jobs.len().unwrap(), jobs.leased_len().unwrap()), (0, 0), "the acked item is done");
}

/// A leader cut off from the other nodes stops serving once no majority has answered
/// it for an election timeout, although Raft still calls it leader until it hears of
/// the newer term: its clients go to the node that leads now and resume their
/// sessions there, while it is still cut off (before, they waited for the partition to
/// heal).
#[test]
fn a_cut_off_leader_lets_its_clients_go_to_the_new_one_with_their_sessions() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    // The leader's address first: the client starts there.
    let mut nodes = addresses(&cluster);
    nodes.rotate_left(leader);
    let options = ManagerOptions::new().reconnect_deadline(Duration::from_secs(60));
    let holder = Manager::connect_any(nodes.clone(), AUTHKEY, options).expect("connect");
    assert_eq!(holder.current_address(), nodes[0]);
    let session = holder.session_id();
    let guard = holder.lock("partitioned").expect("open").acquire().expect("acquire");
    let counter = holder.value::<i64>("count", &0).expect("open");
    counter.add(&1).expect("add");

    cluster.isolate(leader);
    wait_until("the client moved to another node with its session", || {
        holder.current_address() != nodes[0] && guard.is_valid()
    });
    assert_eq!(holder.session_id(), session, "the client resumed its session");
    // While the old leader is still cut off, the client works through the new one.
    counter.add(&1).expect("add through the new leader");
    assert_eq!(counter.get().expect("read"), 2);
    guard.release().expect("the guard of the resumed session releases the lock");
    cluster.heal();
}

/// A call parked on a leader that dies is made again on the new leader: an acquire
/// waiting for a lock whose holder never comes back (it knew only the dead node) gets
/// it once the holder's detached session lapses, a heartbeat timeout after the new
/// leader took over. The waiter's own session is not resumed but ended as soon as it
/// reconnects, because a grant was in flight (it may have been granted the lock
/// unbeknown to it): what it held there is free while the holder's session still
/// waits, and its guard says so.
#[test]
fn an_acquire_waiting_on_a_killed_leader_is_made_again_on_the_new_one() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let holder = client_of(&cluster, leader);
    let held = holder.lock("ledger").expect("open").acquire().expect("acquire");
    let waiter = client(&cluster);
    let other = waiter.lock("other").expect("open").acquire().expect("acquire another lock");
    let lock = waiter.lock("ledger").expect("open");
    let elsewhere = client(&cluster);
    let other_elsewhere = elsewhere.lock("other").expect("open");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lock.acquire().map(|guard| (guard.token(), guard.is_valid())));
    });
    std::thread::sleep(Duration::from_millis(500)); // parked on the leader
    assert!(rx.try_recv().is_err(), "the lock is held: the acquire waits");
    cluster.kill9(leader);
    // The waiter's old session ends when it reconnects, long before the holder's
    // detached one lapses (the default heartbeat timeout, 10 s, after the takeover).
    wait_until("the waiter's other lock is free", || matches!(other_elsewhere.try_acquire(), Ok(Some(_))));
    assert!(rx.try_recv().is_err(), "the holder's detached session still holds the ledger");
    assert!(!other.is_valid(), "the waiter's session was resumed although a grant was in flight");
    let (token, valid) = rx.recv_timeout(agora_tests::HANG_GUARD).expect("the acquire ends").expect("granted");
    assert!(valid && token > held.token(), "token {token} after {}", held.token());
}

/// A cluster whose nodes have `[users]`: each user's key and rules hold through any
/// node (the leader checks them), the nodes authenticate each other with a cluster key
/// of their own, which is no client's key, and a node with users but no cluster key
/// refuses to start, saying why.
#[test]
fn users_and_their_rules_hold_through_any_node_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("writer.key"), b"writer-key-0123").unwrap();
    std::fs::write(dir.path().join("reader.key"), b"reader-key-4567").unwrap();
    let config = dir.path().join("agora.toml");
    std::fs::write(
        &config,
        "[users.writer]\nkey-file = \"writer.key\"\nrules = { \"jobs.*\" = \"write\" }\n\n\
         [users.reader]\nkey-file = \"reader.key\"\nrules = { \"jobs.*\" = \"read\" }\n",
    )
    .unwrap();
    let cluster = Cluster::start_with_users(3, &config);
    let leader = cluster.wait_for_leader();
    let follower = cluster.client_address((leader + 1) % 3).to_owned();

    let writer = Manager::connect(&follower, b"writer-key-0123").expect("the writer, through a follower");
    writer.dict::<String, i64>("jobs.a").unwrap().insert(&"k".to_string(), &1).expect("the writer writes");
    let reader = Manager::connect(&follower, b"reader-key-4567").expect("the reader, through a follower");
    let d = reader.dict::<String, i64>("jobs.a").unwrap();
    assert_eq!(d.get(&"k".to_string()).expect("the reader reads"), Some(1));
    match d.insert(&"k".to_string(), &2) {
        Err(agora_client::Error::PermissionDenied(message)) => assert!(message.contains("reader"), "{message}"),
        other => panic!("a reader wrote: {other:?}"),
    }
    // The cluster key lets nodes in, never clients.
    let options = ManagerOptions::new().reconnect(false);
    let refused = Manager::connect_any(vec![follower.parse().unwrap()], AUTHKEY, options);
    assert!(refused.is_err(), "the cluster key connected as a client");
    // agora cluster takes the cluster key.
    let key = cluster.key_file().display().to_string();
    let out = agora(&["cluster", "status", "--peer", &cluster.peer_address(0), "--cluster-key-file", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without a cluster key, a node with users has nothing to authenticate its peers with.
    let data = dir.path().join("data").display().to_string();
    let out = Command::new(agora_bin())
        .args(["serve", "--node-id", "1", "--peer-listen", "127.0.0.1:0", "--data-dir", &data])
        .args(["--config", &config.display().to_string()])
        .env_remove("AGORA_AUTHKEY")
        .output()
        .expect("run agora serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cluster-key-file"), "{out:?}");
}

/// Runs `script` on CPython `py` with the node address and the key as arguments.
fn run_python(py: &python_support::Python, script: &str, address: &str) -> String {
    let out = Command::new(&py.exe)
        .args(["-c", script, address, std::str::from_utf8(AUTHKEY).unwrap()])
        .output()
        .expect("run python");
    assert!(out.status.success(), "CPython {} failed: {}", py.version, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A stock CPython client running a script against one node, talked to line by line:
/// its output is read on a thread, so that a hang fails the test instead of stopping
/// it. Killed when dropped.
struct PyClient {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    version: String,
}

impl PyClient {
    /// Starts `script` on CPython `py` with the node address and the key as arguments.
    fn start(py: &python_support::Python, script: &str, address: &str) -> PyClient {
        use std::io::BufRead;
        let mut child = Command::new(&py.exe)
            .args(["-c", script, address, std::str::from_utf8(AUTHKEY).unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|line| drop(tx.send(line))));
        PyClient { child, lines, version: py.version.clone() }
    }

    /// The next line it prints.
    fn next_line(&self) -> String {
        let line = self.lines.recv_timeout(agora_tests::HANG_GUARD);
        line.unwrap_or_else(|e| panic!("CPython {}: no line from the client ({e})", self.version))
    }

    /// Writes a line to its standard input.
    fn say(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "{line}").expect("write to the client");
    }

    /// Waits for it to exit, and says whether it succeeded.
    fn finished(mut self) -> bool {
        self.child.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stock CPython manager `m` for the node address and key given as arguments.
const PY_MANAGER: &str = r#"
import sys
from multiprocessing.managers import SyncManager
SyncManager.register("agora")
host, port = sys.argv[1].rsplit(":", 1)
m = SyncManager(address=(host, int(port)), authkey=sys.argv[2].encode())
"#;

/// A stock CPython client (every version the machine has) works through a follower,
/// and after the leader is killed a client of the same follower finds every write the
/// first one had acknowledged.
#[test]
fn stock_cpython_clients_work_through_a_follower_and_find_their_writes_after_a_failover() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    let address = cluster.client_address(follower).to_owned();
    for py in python_support::pythons() {
        let write = format!(
            "{PY_MANAGER}m.connect()\nd = m.agora().dict('py-{v}')\nfor i in range(20): d[i] = i * i\nl = m.list([1, 2])\nl.append(3)\nprint(len(d), list(l))",
            v = py.version
        );
        assert_eq!(run_python(py, &write, &address), "20 [1, 2, 3]", "CPython {}", py.version);
    }
    cluster.kill9(leader);
    let new_leader = cluster.wait_for_leader();
    // The follower may itself be the new leader; either way it serves.
    let _ = new_leader;
    for py in python_support::pythons() {
        let read = format!(
            "{PY_MANAGER}m.connect()\nd = m.agora().dict('py-{v}')\nprint(sorted(d.items()) == [(i, i * i) for i in range(20)])",
            v = py.version
        );
        assert_eq!(run_python(py, &read, &address), "True", "CPython {}", py.version);
    }
    let native = client(&cluster);
    let d = native.dict::<i64, i64>(&format!("py-{}", python_support::pythons()[0].version)).unwrap();
    assert_eq!(retry(|| d.len()), 20);
}

/// What each stock CPython client does through a follower: it holds an RLock and a
/// dict, and a second thread waits in `q.get()`; when told (after the leader was
/// killed), it writes to the dict, lets the waiter finish, prints what it saw, and
/// releases the RLock, which only the session that acquired it may.
const PY_CARRIED: &str = r#"
import threading
m.connect()
a = m.agora()
d = m.dict({'before': 1})
lk = a.RLock('held-' + V)
lk.acquire()
q = a.Queue('waits-' + V)
seen = []
def waiter():
    try:
        seen.append(q.get())
    except Exception as e:
        seen.append(type(e).__name__ + (': leader changed' if 'leader changed' in str(e) else ': ' + str(e)))
    q.put('again')
    seen.append(q.get())
t = threading.Thread(target=waiter)
t.start()
print('ready', flush=True)
sys.stdin.readline()
d['after'] = 2
t.join(120)
print(sorted(d.items()), seen, flush=True)
lk.release()
print('released', flush=True)
"#;

/// A stock CPython client connected to a follower keeps its connections, its session
/// and its anonymous objects across a leader change (every CPython the machine has):
/// the follower relays it, and takes its session to the new leader. Its RLock stays
/// held by it throughout (another client finds it held) and it releases it after; a
/// call under way when the leader died (a parked `q.get()`) fails with the reason,
/// and that thread's connection goes on working.
#[test]
fn stock_cpython_clients_of_a_follower_keep_their_connections_and_sessions_across_a_leader_change() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    let address = cluster.client_address(follower).to_owned();
    let mut clients = Vec::new();
    for py in python_support::pythons() {
        let client = PyClient::start(py, &format!("{PY_MANAGER}V = {:?}\n{PY_CARRIED}", py.version), &address);
        assert_eq!(client.next_line(), "ready", "CPython {}", py.version);
        clients.push(client);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let observe = |address: &str| runtime.block_on(agora_client::Manager::connect(address, AUTHKEY)).expect("connect");
    let before = observe(cluster.client_address(leader));
    for client in &clients {
        let name = format!("waits-{}", client.version);
        wait_until("the waiter's get is parked", || {
            runtime.block_on(before.holders(&name)).is_ok_and(|h| h.waiting.len() == 1)
        });
    }
    drop(before);

    cluster.kill9(leader);
    let new_leader = cluster.wait_for_leader();
    let after = observe(cluster.client_address(new_leader));
    let held = |client: &PyClient| runtime.block_on(after.holders(&format!("held-{}", client.version))).unwrap().held;
    for client in &clients {
        assert_eq!(held(client).len(), 1, "CPython {}: its RLock is still held across the change", client.version);
    }
    for mut client in clients {
        client.say("go");
        assert_eq!(
            client.next_line(),
            "[('after', 2), ('before', 1)] ['RemoteError: leader changed', 'again']",
            "CPython {}",
            client.version
        );
        assert_eq!(
            client.next_line(),
            "released",
            "CPython {}: the session that acquired the RLock released it",
            client.version
        );
        assert!(held(&client).is_empty(), "CPython {}", client.version);
        let version = client.version.clone();
        assert!(client.finished(), "CPython {version}");
    }
}

/// A leader that is paused (SIGSTOP) closes nothing, so its relays do not break: the
/// follower learns from Raft that another node leads and takes its CPython client's
/// session there while the old leader is still paused. The client's RLock stays its
/// own, and its next call is answered by the new leader.
#[test]
fn a_follower_takes_its_cpython_clients_from_a_paused_leader_to_the_new_one() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    let py = &python_support::pythons()[0];
    let script = format!(
        "{PY_MANAGER}m.connect()\na = m.agora()\nd = m.dict()\nlk = a.RLock('paused-held')\nlk.acquire()\n\
         print('ready', flush=True)\nsys.stdin.readline()\nd['x'] = 1\nprint(sorted(d.items()), flush=True)\n\
         lk.release()\nprint('released', flush=True)\n"
    );
    let mut client = PyClient::start(py, &script, cluster.client_address(follower));
    assert_eq!(client.next_line(), "ready", "CPython {}", py.version);

    cluster.pause(leader);
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let observer =
        runtime.block_on(agora_client::Manager::connect(cluster.client_address(new_leader), AUTHKEY)).unwrap();
    let held = runtime.block_on(observer.holders("paused-held")).unwrap().held;
    assert_eq!(held.len(), 1, "the RLock is still held: {held:?}");
    client.say("go");
    assert_eq!(client.next_line(), "[('x', 1)]", "CPython {}: answered while the old leader is paused", py.version);
    assert_eq!(
        client.next_line(),
        "released",
        "CPython {}: its session resumed, so it still owned the RLock",
        py.version
    );
    assert!(client.finished(), "CPython {}", py.version);
    assert!(runtime.block_on(observer.holders("paused-held")).unwrap().held.is_empty());
    cluster.resume(leader);
}

/// A stock CPython client of a follower that is killed while its call waits takes
/// nothing, and what it held is released: the follower closes its relay, and the
/// leader ends the session as it does a direct client's.
#[test]
fn a_cpython_client_of_a_follower_killed_mid_call_takes_nothing_and_keeps_nothing() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    let py = &python_support::pythons()[0];
    let script = format!(
        "{PY_MANAGER}m.connect()\na = m.agora()\nlk = a.RLock('dies-held')\nlk.acquire()\nq = a.Queue('dies-q')\nprint('ready', flush=True)\nq.get()\n"
    );
    let client = PyClient::start(py, &script, cluster.client_address(follower));
    assert_eq!(client.next_line(), "ready", "CPython {}", py.version);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let observer = runtime.block_on(agora_client::Manager::connect(cluster.client_address(leader), AUTHKEY)).unwrap();
    let holders = |name: &str| runtime.block_on(observer.holders(name)).expect("holders");
    wait_until("the get is parked", || holders("dies-q").waiting.len() == 1);
    assert_eq!(holders("dies-held").held.len(), 1);

    drop(client); // killed
    wait_until("the dead client's session ended", || {
        holders("dies-held").held.is_empty() && holders("dies-q").waiting.is_empty()
    });
    let native = client_of(&cluster, leader);
    let q = native.queue::<String>("dies-q", 0).unwrap();
    q.put(&"item".to_owned()).unwrap();
    assert_eq!(q.get().unwrap(), "item", "the dead client's abandoned get took nothing");
}

/// A follower relays its client to the leader, which is another machine's process as
/// far as the client is concerned: a client local to the follower may not shut the
/// leader down (that takes --allow-remote-shutdown), and the leader keeps serving.
#[test]
fn a_client_of_a_follower_cannot_shut_the_leader_down() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % 3;
    let out = Command::new(agora_bin())
        .args(["shutdown", "--address", cluster.client_address(follower)])
        .env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap())
        .env_remove("AGORA_AUTHKEY_FILE")
        .output()
        .expect("run agora shutdown");
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote-shutdown"), "{out:?}");
    assert_eq!(cluster.wait_for_leader(), leader, "the leader still leads");
    let d = client_of(&cluster, leader).dict::<i64, i64>("still-up").unwrap();
    d.insert(&1, &1).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
}

/// A node left without a majority passes nobody on: native and stock CPython clients
/// get the reason, not a bare close.
#[test]
fn a_node_without_a_leader_refuses_clients_with_the_reason() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let survivor = (leader + 1) % 3;
    cluster.kill9(leader);
    cluster.kill9((leader + 2) % 3);
    let address = cluster.client_address(survivor).to_owned();
    let options = ManagerOptions::new().reconnect(false);
    let address_list: Vec<Address> = vec![address.parse().unwrap()];
    match Manager::connect_any(address_list, AUTHKEY, options) {
        Ok(_) => panic!("a node without a leader served a client"),
        Err(e) => assert!(e.to_string().contains("does not lead its cluster"), "{e}"),
    }
    let script = format!(
        "{PY_MANAGER}\ntry:\n    m.connect()\nexcept Exception as e:\n    print(type(e).__name__, 'does not lead its cluster' in str(e))"
    );
    for py in python_support::pythons() {
        assert_eq!(run_python(py, &script, &address), "RemoteError True", "CPython {}", py.version);
    }
}

#[test]
fn agora_cluster_status_add_and_remove() {
    let cluster = Cluster::start(3);
    let key = cluster.key_file().display().to_string();
    let peer = cluster.peer_address(0);
    let out = agora(&["cluster", "status", "--peer", &peer, "--authkey-file", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Leader") && text.matches("Follower").count() == 2, "{text}");
    // Every member's lag, from the leader's view, whichever node was asked.
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("Leader") || l.contains("Follower")).collect();
    assert!(
        rows.iter().all(|row| row.split_whitespace().last().is_some_and(|lag| lag.parse::<u64>().is_ok())),
        "{text}"
    );
    // Removing a node, through any node: the leader does it.
    let out = agora(&["cluster", "remove", "--peer", &peer, "--authkey-file", &key, "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let leader = cluster.wait_for_leader();
    let voters = cluster.status(leader).unwrap().voters;
    assert_eq!(voters.keys().copied().collect::<Vec<_>>(), vec![1, 2], "{voters:?}");
    // And back.
    let member = format!("3={}", cluster.peer_address(2));
    let out = agora(&["cluster", "add", "--peer", &peer, "--authkey-file", &key, &member]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let leader = cluster.wait_for_leader();
    let voters: BTreeMap<u64, String> = cluster.status(leader).unwrap().voters;
    assert_eq!(voters.len(), 3);
    // agora stats through a follower shows the leader's view, with every member's lag.
    let follower = cluster.client_address((leader + 1) % 3).to_owned();
    let out = agora(&["stats", "--json", "--address", &follower, "--authkey-file", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let c = &stats["cluster"];
    assert_eq!(c["role"], "Leader", "{stats}");
    let members = c["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["voter"] == true && m["lag"].is_u64()), "{c}");
    // A wrong key is refused.
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), b"not the key").unwrap();
    let out = agora(&["cluster", "status", "--peer", &peer, "--authkey-file", &wrong.path().display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_cluster_node_refuses_incomplete_settings_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let cases: [(&[&str], &str); 6] = [
        (&["--node-id", "1", "--data-dir", &data], "--peer-listen"),
        (&["--peer-tls-ca", "/ca.pem"], "--peer-tls-ca is for cluster nodes"),
        (
            &["--node-id", "1", "--peer-listen", "127.0.0.1:0", "--data-dir", &data, "--peer-tls-ca", "/ca.pem"],
            "--peer-tls-ca needs --tls-cert",
        ),
        (&["--node-id", "1", "--peer-listen", "127.0.0.1:0"], "--data-dir"),
        (&["--peer-listen", "127.0.0.1:0"], "--node-id"),
        (
            &["--node-id", "1", "--peer-listen", "127.0.0.1:0", "--data-dir", &data, "--cluster", "2=127.0.0.1:9"],
            "this node",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(agora_bin())
            .arg("serve")
            .args(args)
            .env("AGORA_AUTHKEY", "k")
            .output()
            .expect("run agora serve");
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // No shared key: a generated one would differ on every node.
    let out = Command::new(agora_bin())
        .args(["serve", "--node-id", "1", "--peer-listen", "127.0.0.1:0", "--data-dir", &data])
        .env_remove("AGORA_AUTHKEY")
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("run agora serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("share one authkey"));
}
