//! The native client rides through a server restart: the manager reconnects by
//! itself, proxies of objects the server still has keep working, those of objects it
//! lost say so, guards and leases of the old session are void, calls in flight are
//! never sent twice, and calls that wait are made again.
//!
//! Every test restarts the real `agora` binary on the same Unix socket: SIGKILL, then
//! a new process on the same path (and, for the durable cases, the same data
//! directory).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_client::{Error, Manager, ManagerOptions};
use agora_tests::{agora_bin, AUTHKEY, HANG_GUARD};

/// An `agora serve` that can be killed and started again on the same socket.
struct Restartable {
    /// Holds the socket (and the data directory, if any).
    dir: tempfile::TempDir,
    /// `unix:/…/agora.sock`.
    address: String,
    /// Extra `agora serve` flags, passed on every start.
    args: Vec<String>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Restartable {
    /// An in-memory server.
    fn start() -> Restartable {
        Restartable::start_with(|_| Vec::new())
    }

    /// A server whose state lives in a data directory inside the scratch directory,
    /// made durable before each change is acknowledged.
    fn start_durable() -> Restartable {
        Restartable::start_with(|dir| {
            let data = dir.join("data");
            vec!["--data-dir".into(), data.display().to_string(), "--fsync".into(), "always".into()]
        })
    }

    fn start_with(args: impl FnOnce(&std::path::Path) -> Vec<String>) -> Restartable {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket: PathBuf = dir.path().join("agora.sock");
        let args = args(dir.path());
        let mut server = Restartable {
            address: format!("unix:{}", socket.display()),
            dir,
            args,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        server.spawn(AUTHKEY);
        server
    }

    /// Starts the server process with `key`; returns once it listens.
    fn spawn(&mut self, key: &[u8]) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(agora_bin());
        cmd.args(["serve", "--listen", &self.address, "--log-level", "debug"]).args(&self.args);
        cmd.env_remove("AGORA_LISTEN")
            .env_remove("AGORA_DATA_DIR")
            .env("AGORA_AUTHKEY", std::str::from_utf8(key).unwrap())
            .env("XDG_RUNTIME_DIR", self.dir.path());
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn agora");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening address=") {
                    let _ = tx.send(());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        if rx.recv_timeout(HANG_GUARD).is_err() {
            let _ = child.kill();
            panic!("agora did not start listening; log:\n{}", self.log.lock().unwrap());
        }
        self.child = Some(child);
    }

    /// SIGKILLs the server and waits until it is gone.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Stops the server the graceful way (SIGTERM: it tells its clients it is shutting
    /// down) and waits until it is gone.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child process; no memory is involved.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        assert!(child.wait().expect("reap").success(), "clean exit; log:\n{}", self.log.lock().unwrap());
    }

    /// Kills the server and starts a new one on the same socket with `key`.
    fn restart_with_key(&mut self, key: &[u8]) {
        self.kill();
        self.spawn(key);
    }

    fn restart(&mut self) {
        self.restart_with_key(AUTHKEY);
    }

    async fn client(&self) -> Manager {
        Manager::connect(&self.address, AUTHKEY).await.expect("connect")
    }

    async fn client_with(&self, options: ManagerOptions) -> Manager {
        Manager::connect_with(&self.address, AUTHKEY, options).await.expect("connect")
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn guarded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future).await.unwrap_or_else(|_| panic!("hang guard: {what}"))
}

/// Waits until `m` has seen its connection end. A call made before that is in flight
/// when the client learns of it, and fails with `ConnectionLost` (outcome unknown):
/// right, but not what these tests are about.
async fn lost(m: &Manager) {
    guarded("the client notices the server is gone", async {
        while m.connection_error().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Runs blocking work (starting or killing a server) from a multi-thread test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The error of an object that did not survive the restart, naming it.
fn did_not_survive<T: std::fmt::Debug>(result: agora_client::Result<T>, kind: &str) {
    match result {
        Err(Error::NoSuchObject(m)) => {
            assert!(m.contains("did not survive the server restart"), "says what happened: {m}");
            assert!(m.starts_with(&format!("{kind} #")), "names the object: {m}");
        }
        other => panic!("expected NoSuchObject (did not survive), got {other:?}"),
    }
}

/// An argument the client cannot convert fails at once while the connection is down
/// too, with the error it gets when connected: the call does not wait for a reconnect
/// it could never use, and the next call reconnects as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconvertible_argument_fails_at_once_while_disconnected() {
    use std::collections::BTreeMap;
    let mut server = Restartable::start();
    let m = server.client().await;
    let d = m.dict::<String, BTreeMap<Vec<i64>, i64>>("x").await.unwrap();
    blocking(|| server.restart());
    lost(&m).await;

    let unhashable = BTreeMap::from([(vec![1], 1)]);
    let refused = guarded("refused while down", d.insert(&"k".into(), &unhashable)).await.unwrap_err();
    assert!(matches!(&refused, Error::TypeMismatch(m) if m == "unhashable type: 'list'"), "{refused:?}");
    let fresh = guarded("open after restart", m.dict::<String, i64>("y")).await.unwrap();
    fresh.insert(&"bob".into(), &7).await.unwrap();
    assert_eq!(fresh.get(&"bob".into()).await.unwrap(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_survives_an_in_memory_restart() {
    let mut server = Restartable::start();
    let m = server.client().await;
    let scores = m.dict::<String, i64>("x").await.unwrap();
    scores.insert(&"alice".into(), &3).await.unwrap();
    let anonymous = m.new_list::<i64>(&[1, 2, 3]).await.unwrap();

    blocking(|| server.restart());
    lost(&m).await;

    // The first call reconnects, then runs on the new connection: a fresh named dict.
    let fresh = guarded("open after restart", m.dict::<String, i64>("x")).await.unwrap();
    assert!(m.connection_error().is_none());
    assert_eq!(fresh.len().await.unwrap(), 0, "an in-memory server kept nothing");
    fresh.insert(&"bob".into(), &7).await.unwrap();

    // The old proxies' objects are gone; each says so, and nothing else is disturbed.
    did_not_survive(scores.get(&"alice".into()).await, "dict");
    did_not_survive(anonymous.len().await, "list");
    did_not_survive(scores.len().await, "dict");
    assert_eq!(fresh.get(&"bob".into()).await.unwrap(), Some(7));
    let other = m.new_value::<i64>(&1).await.unwrap();
    assert_eq!(other.add(&1).await.unwrap(), 2);
    m.ping().await.unwrap();

    // Dropping the lost proxies sends nothing that could hurt: everything still works.
    drop((scores, anonymous));
    assert_eq!(fresh.len().await.unwrap(), 1);
    assert_eq!(m.stats().await.unwrap().sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_the_server_is_down_waits_for_it() {
    let mut server = Restartable::start();
    let m = server.client().await;
    m.value::<i64>("v", &0).await.unwrap();
    blocking(|| server.kill());
    // Once the client has seen the connection end, a call is not in flight: it waits.
    lost(&m).await;
    assert!(matches!(m.connection_error(), Some(Error::ConnectionLost(_))), "{:?}", m.connection_error());

    let call = tokio::spawn({
        let m = m.clone();
        async move {
            let v = m.value::<i64>("counter", &10).await?;
            v.add(&1).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!call.is_finished(), "the call waits for the server");

    blocking(|| server.spawn(AUTHKEY));
    let result = guarded("the waiting call", call).await.unwrap();
    assert_eq!(result.unwrap(), 11, "ran once, on the new connection");
    assert!(m.connection_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_past_the_deadline_is_reported_unreachable() {
    let mut server = Restartable::start();
    let deadline = Duration::from_secs(1);
    let m = server.client_with(ManagerOptions::new().reconnect_deadline(deadline)).await;
    let list = m.list::<u8>("l").await.unwrap();
    blocking(|| server.kill());
    lost(&m).await;

    let started = Instant::now();
    let err = guarded("ping while down", m.ping()).await.unwrap_err();
    let waited = started.elapsed();
    match &err {
        Error::Unreachable { address, down_for, last_error } => {
            assert_eq!(address, &server.address);
            assert!(*down_for >= deadline, "{down_for:?}");
            assert!(matches!(**last_error, Error::Connect { .. }), "{last_error:?}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&format!("the server at {} has been unreachable for 1.", server.address)), "{message}");
    assert!(message.contains("cannot connect to"), "the last connect error: {message}");
    assert!(waited >= deadline && waited < deadline + Duration::from_secs(5), "waited {waited:?}");

    // From then on, calls fail at once, and the manager says why.
    let started = Instant::now();
    assert!(matches!(list.len().await, Err(Error::Unreachable { .. })));
    assert!(started.elapsed() < Duration::from_millis(900), "{:?}", started.elapsed());
    assert!(matches!(m.connection_error(), Some(Error::Unreachable { .. })));

    // When the server is back, the manager recovers (a call tries again now and then).
    blocking(|| server.spawn(AUTHKEY));
    let recovered = guarded("recovery", async {
        loop {
            match m.ping().await {
                Ok(()) => return,
                Err(Error::Unreachable { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    });
    recovered.await;
    assert!(m.connection_error().is_none());
    did_not_survive(list.len().await, "list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_is_off_when_disabled() {
    let mut server = Restartable::start();
    for options in [ManagerOptions::new().reconnect(false), ManagerOptions::new().reconnect_deadline(Duration::ZERO)] {
        assert!(!options.reconnects());
        let m = server.client_with(options).await;
        blocking(|| server.restart());
        lost(&m).await;
        let started = Instant::now();
        let err = guarded("ping", m.ping()).await.unwrap_err();
        assert!(matches!(err, Error::ConnectionLost(_)), "today's error: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(m.connection_error(), Some(Error::ConnectionLost(_))));
        assert!(matches!(m.ping().await, Err(Error::ConnectionLost(_))), "and it stays dead");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_authkey_after_the_restart_is_reported_not_retried_forever() {
    let mut server = Restartable::start();
    let m = server.client().await; // the default 30 s deadline
    blocking(|| server.restart_with_key(b"another-key"));
    lost(&m).await;

    let started = Instant::now();
    let err = guarded("ping", m.ping()).await.unwrap_err();
    match &err {
        Error::AuthenticationFailed(message) => {
            assert!(message.contains("on reconnecting to"), "{message}");
            assert!(message.contains("not retrying"), "{message}");
        }
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "not waiting for the deadline: {:?}", started.elapsed());
    assert!(matches!(m.connection_error(), Some(Error::AuthenticationFailed(_))));
    let started = Instant::now();
    assert!(matches!(m.ping().await, Err(Error::AuthenticationFailed(_))), "later calls too");
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_of_the_old_session_is_void_and_a_new_one_is_real() {
    let mut server = Restartable::start();
    let m = server.client().await;
    let lock = m.lock("ledger").await.unwrap();
    let old = lock.acquire().await.unwrap();
    let permits = m.semaphore("slots", 1).await.unwrap();
    let old_permit = permits.acquire().await.unwrap();
    assert!(old.is_valid() && old.token() > 0);

    blocking(|| server.restart());
    lost(&m).await;
    m.ping().await.unwrap(); // reconnects
    assert!(!old.is_valid(), "the old session's grant is gone");
    assert!(!old_permit.is_valid());

    // Taken again on the new connection: a real grant.
    let lock = m.lock("ledger").await.unwrap();
    let new = guarded("acquire", lock.acquire()).await.unwrap();
    assert!(new.token() > 0 && new.is_valid());
    assert!(lock.is_locked().await.unwrap());

    // Releasing the old guard says why it cannot, and sends nothing.
    match old.release().await {
        Err(Error::SessionExpired(m)) => {
            assert!(m.contains("belonged to a session that ended when the connection"), "{m}");
            assert!(m.contains("nothing was sent"), "{m}");
        }
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    drop(old_permit); // dropping sends nothing either
    assert!(lock.is_locked().await.unwrap(), "the new grant is untouched");
    assert!(new.is_valid());
    new.release().await.unwrap();
    assert!(!lock.is_locked().await.unwrap());
    let again = lock.try_acquire().await.unwrap().expect("free");
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_the_server_dies_fails_with_connection_lost() {
    let mut server = Restartable::start();
    let m = server.client_with(ManagerOptions::new().reconnect_deadline(Duration::from_secs(3))).await;
    // A barrier's wait is in flight and not made again (its party belonged to the old
    // session); calls that wait for something else are (see the next test).
    let barrier = m.barrier("meet", 2).await.unwrap();
    let counter = m.value::<i64>("count", &0).await.unwrap();
    let wait = tokio::spawn({
        let barrier = barrier.clone();
        async move { barrier.wait().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // the wait is parked on the server
    assert!(!wait.is_finished());

    blocking(|| server.kill());
    match guarded("the parked wait", wait).await.unwrap() {
        Err(Error::ConnectionLost(message)) => {
            assert!(message.contains("whether it took effect is unknown"), "{message}");
            assert!(message.contains("not sent again"), "{message}");
        }
        other => panic!("expected ConnectionLost, got {other:?}"),
    }

    // Calls after the loss wait for the server instead, and run once.
    blocking(|| server.spawn(AUTHKEY));
    did_not_survive(counter.add(&1).await, "Value");
    let counter = m.value::<i64>("count", &0).await.unwrap();
    assert_eq!(counter.add(&1).await.unwrap(), 1);
}

/// Calls that wait are made again on the new connection: an acquire gets the lock the
/// old holder's session gave back, gets take items put after the restart, an event's
/// wait ends when it is set. Nothing is held twice: the new grant's token is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_wait_are_made_again_after_a_restart() {
    let mut server = Restartable::start_durable();
    let holder = server.client().await;
    let waiter = server.client().await;
    let held = holder.lock("ledger").await.unwrap().acquire().await.unwrap();
    let lock = waiter.lock("ledger").await.unwrap();
    let jobs = waiter.queue::<String>("jobs", 0).await.unwrap();
    let go = waiter.event("go").await.unwrap();
    let acquire = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await }
    });
    let get = tokio::spawn({
        let jobs = jobs.clone();
        async move { jobs.get().await }
    });
    let timed_get = tokio::spawn({
        let jobs = jobs.clone();
        async move { jobs.get_timeout(Duration::from_secs(600)).await }
    });
    let wait = tokio::spawn({
        let go = go.clone();
        async move { go.wait_timeout(Duration::from_secs(600)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // all four are parked on the server
    assert!(!acquire.is_finished() && !get.is_finished() && !timed_get.is_finished() && !wait.is_finished());

    blocking(|| server.restart());
    // The holder's session ended with the old run: the lock is free, and the acquire,
    // made again, gets it.
    let guard = guarded("the acquire made again", acquire).await.unwrap().expect("the lock, after the restart");
    assert!(guard.is_valid() && !held.is_valid());
    assert!(guard.token() > held.token(), "{} after {}", guard.token(), held.token());
    // Items put after the restart reach the gets that wait again, one each.
    let feeder = holder.queue::<String>("jobs", 0).await.unwrap();
    feeder.put(&"a".into()).await.unwrap();
    feeder.put(&"b".into()).await.unwrap();
    let mut got = vec![
        guarded("the get made again", get).await.unwrap().unwrap(),
        guarded("the timed get made again", timed_get).await.unwrap().unwrap(),
    ];
    got.sort();
    assert_eq!(got, ["a", "b"]);
    holder.event("go").await.unwrap().set().await.unwrap();
    assert!(guarded("the event wait made again", wait).await.unwrap().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_item_of_the_old_session_cannot_be_settled() {
    let mut server = Restartable::start_durable();
    let m = server.client().await;
    let tasks = m.queue::<String>("tasks", 0).await.unwrap();
    tasks.put(&"a".into()).await.unwrap();
    let lease = tasks.get_leased(Duration::from_secs(600)).await.unwrap();
    assert!(lease.is_valid());

    blocking(|| server.restart());
    lost(&m).await;
    assert!(!lease.is_valid());
    match lease.ack().await {
        Err(Error::SessionExpired(m)) => assert!(m.contains("this lease belonged to a session that ended"), "{m}"),
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    // The item went back when the session ended (the lease did not survive the restart).
    let again = guarded("get again", tasks.get_leased(Duration::from_secs(600))).await.unwrap();
    assert_eq!(again.item(), "a");
    assert!(again.is_valid());
    again.ack().await.unwrap();
    assert_eq!(tasks.len().await.unwrap() + tasks.leased_len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_working_across_a_durable_restart() {
    let mut server = Restartable::start_durable();
    let m = server.client().await;
    let dict = m.dict::<String, i64>("scores").await.unwrap();
    dict.insert(&"alice".into(), &3).await.unwrap();
    dict.insert(&"bob".into(), &4).await.unwrap();
    let value = m.value::<i64>("total", &10).await.unwrap();
    assert_eq!(value.add(&5).await.unwrap(), 15);
    // An anonymous list a named dict holds survives with it; one nobody holds does not.
    let lists = m.dict::<String, agora_client::proto::Value>("lists").await.unwrap();
    let held = m.new_list::<i64>(&[1, 2]).await.unwrap();
    let stored = agora_client::proto::reference::ObjectRef::new(held.id(), "list").to_value();
    lists.insert(&"held".into(), &stored).await.unwrap();
    let loose = m.new_list::<i64>(&[9]).await.unwrap();
    let lock = m.lock("ledger").await.unwrap();
    let old_guard = lock.acquire().await.unwrap();

    blocking(|| server.restart());
    lost(&m).await;

    // The same proxies read back what was written before the restart, and keep working.
    assert_eq!(guarded("read after restart", dict.get(&"alice".into())).await.unwrap(), Some(3));
    assert_eq!(dict.len().await.unwrap(), 2);
    assert_eq!(value.get().await.unwrap(), 15);
    assert_eq!(value.add(&1).await.unwrap(), 16);
    dict.insert(&"carol".into(), &5).await.unwrap();
    assert_eq!(held.to_vec().await.unwrap(), vec![1, 2]);
    held.push(&3).await.unwrap();
    did_not_survive(loose.len().await, "list");

    // The named lock survived, its grant did not: the old guard is void, and the lock
    // is free for a real grant, which the old guard's release cannot touch.
    assert!(!old_guard.is_valid());
    assert!(!lock.is_locked().await.unwrap(), "the old session's grant was released");
    let guard = lock.acquire().await.unwrap();
    assert!(matches!(old_guard.release().await, Err(Error::SessionExpired(_))));
    assert!(lock.is_locked().await.unwrap() && guard.is_valid());
    guard.release().await.unwrap();

    // Another restart: what was written after the first one is there too.
    blocking(|| server.restart());
    lost(&m).await;
    assert_eq!(guarded("second restart", dict.get(&"carol".into())).await.unwrap(), Some(5));
    assert_eq!(value.get().await.unwrap(), 16);
    assert_eq!(held.to_vec().await.unwrap(), vec![1, 2, 3]);
}

#[test]
fn a_blocking_manager_survives_a_restart_too() {
    let mut server = Restartable::start_durable();
    let options = ManagerOptions::new().reconnect_deadline(Duration::from_secs(20));
    let m = agora_client::blocking::Manager::connect_with(&server.address, AUTHKEY, options).unwrap();
    let counter = m.value::<i64>("hits", &0).unwrap();
    assert_eq!(counter.add(&1).unwrap(), 1);
    let fresh = m.new_dict::<String, i64>().unwrap();

    server.restart();
    let deadline = Instant::now() + HANG_GUARD;
    while m.connection_error().is_none() {
        assert!(Instant::now() < deadline, "the client never noticed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(counter.add(&1).unwrap(), 2, "the same proxy, on the new connection");
    assert!(matches!(fresh.len(), Err(Error::NoSuchObject(_))));
    assert!(m.connection_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_is_ridden_through_too() {
    let mut server = Restartable::start_durable();
    let m = server.client().await;
    let names = m.list::<String>("names").await.unwrap();
    names.push(&"ada".into()).await.unwrap();

    blocking(|| server.stop());
    lost(&m).await;
    assert!(matches!(m.connection_error(), Some(Error::ShuttingDown(_))), "{:?}", m.connection_error());
    blocking(|| server.spawn(AUTHKEY));

    names.push(&"grace".into()).await.unwrap();
    assert_eq!(names.to_vec().await.unwrap(), vec!["ada".to_string(), "grace".to_string()]);
    assert!(m.connection_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_continue_on_the_new_connection() {
    let mut server = Restartable::start_with(|_| vec!["--heartbeat-timeout".into(), "1s".into()]);
    let m = server.client().await;
    blocking(|| server.restart());
    lost(&m).await;
    let list = m.new_list::<u8>(&[1, 2]).await.unwrap();
    let session = m.session_id();
    tokio::time::sleep(Duration::from_millis(3500)).await; // over three timeouts of silence from the user
    assert_eq!(list.len().await.unwrap(), 2, "same session, same anonymous object");
    assert_eq!(m.session_id(), session);
    assert!(m.connection_error().is_none());
}
