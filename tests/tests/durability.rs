//! Durability through the real binary: `agora serve --data-dir`, `agora check`,
//! `agora snapshot`, `agora stats`, and what a restart keeps and ends.
//!
//! - A second server on a data dir in use refuses to start, naming the dir and the pid.
//! - Damage in the middle of the log refuses the start and fails `agora check`
//!   (file and byte offset); `agora check --truncate` cuts it and the server serves
//!   what came before.
//! - A torn tail (half a record, or zeros) is cut with a warning on start.
//! - A deleted snapshot refuses the start, naming the missing records.
//! - A full disk (RLIMIT_FSIZE in the server) refuses changes, keeps reads, and
//!   recovers once writes succeed again; nothing acknowledged is lost, nothing refused
//!   appears. (Ignored until the server is fixed: a client connecting during the
//!   failure can read, and a client leaving during it gives back its lock.)
//! - `agora stats` says where the state is kept; `agora snapshot` on an in-memory
//!   server fails clearly.
//! - After a SIGKILL and restart: locks free with larger tokens, leased items back at
//!   the head, anonymous objects only clients held gone, held ones kept. (Ignored until
//!   the server is fixed: a native `Attach` of a lost id names the restart.)
//! - Stock CPython `BaseManager` clients (every version found) write, the server
//!   restarts (SIGTERM; SIGKILL with `--fsync always`), new clients read it all back;
//!   a stale ident names the restart.
//! - A dict big enough to compact step by step, churned at random while snapshots are
//!   written, holds after a SIGKILL and a restart exactly the keys, in order, and values
//!   its client was told it holds.

mod python_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_client::{Manager, ManagerOptions};
use agora_proto::native::{self, Args, Op, Request, Response};
use agora_proto::reference::ObjectRef;
use agora_proto::{ErrorCode, Value};
use agora_tests::{agora_bin, RawConn, Server, ServerOptions, AUTHKEY, HANG_GUARD};

// --- fixtures ----------------------------------------------------------------------

/// A data directory and a Unix socket address that stay the same across restarts;
/// removed (with everything in them) on drop.
struct DataDir {
    scratch: tempfile::TempDir,
    data: PathBuf,
    address: String,
}

impl DataDir {
    fn new() -> DataDir {
        let scratch = tempfile::tempdir().expect("temp dir");
        let data = scratch.path().join("data");
        let address = format!("unix:{}", scratch.path().join("agora.sock").display());
        DataDir { scratch, data, address }
    }

    fn options(&self, extra: &[&str]) -> ServerOptions {
        let mut args = vec!["--data-dir".to_owned(), self.data.display().to_string()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        ServerOptions { args, ..Default::default() }
    }

    /// `agora serve --data-dir DIR EXTRA…` on the fixed address; waits until it listens.
    fn start(&self, extra: &[&str]) -> Server {
        Server::start_at(&self.address, self.options(extra))
    }

    /// `agora serve` on this dir (listening on `listen`), expected to exit: its output.
    fn serve_to_exit(&self, listen: &str, extra: &[&str]) -> Output {
        let mut cmd = agora(&["serve", "--listen", listen, "--data-dir", &self.data.display().to_string()]);
        cmd.args(extra).env("XDG_RUNTIME_DIR", self.scratch.path());
        run_guarded(cmd)
    }

    /// `agora check --data-dir DIR [--truncate]`.
    fn check(&self, truncate: bool) -> Output {
        let mut cmd = agora(&["check", "--data-dir", &self.data.display().to_string()]);
        if truncate {
            cmd.arg("--truncate");
        }
        run_guarded(cmd)
    }

    /// The files in the data dir whose names start with `prefix`, sorted.
    fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.data)
            .expect("read the data dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
            .collect();
        found.sort();
        found
    }

    /// The newest log segment.
    fn last_segment(&self) -> PathBuf {
        self.files("log-").pop().expect("a log segment")
    }
}

/// `agora ARGS…` with the test authkey and no settings from the environment.
fn agora(args: &[&str]) -> Command {
    let mut cmd = Command::new(agora_bin());
    cmd.args(args);
    for var in ["AGORA_AUTHKEY_FILE", "AGORA_DATA_DIR", "AGORA_LISTEN", "AGORA_ADDRESS", "AGORA_CONFIG"] {
        cmd.env_remove(var);
    }
    cmd.env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap());
    cmd
}

/// Runs `cmd` to its end (killing it and failing after the hang guard).
fn run_guarded(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {HANG_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A client that stays on its first connection.
async fn connect(address: &str) -> Manager {
    Manager::connect_with(address, AUTHKEY, ManagerOptions::new().reconnect(false)).await.expect("connect")
}

/// Writes `k0000`… = index into the named dict `name`, one acknowledged call each.
async fn write_keys(address: &str, name: &str, range: std::ops::Range<i64>) {
    let m = connect(address).await;
    let dict = m.dict::<String, i64>(name).await.unwrap();
    for i in range {
        dict.insert(&key(i), &i).await.unwrap();
    }
}

fn key(i: i64) -> String {
    format!("k{i:04}")
}

/// The named dict `name` as the server has it now.
async fn read_dict<V: serde::de::DeserializeOwned>(address: &str, name: &str) -> BTreeMap<String, V> {
    let m = connect(address).await;
    agora_proto::from_value(m.snapshot(name).await.expect("the dict is there")).expect("a dict")
}

/// The records of a log segment: (offset, payload length) each.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    const SEGMENT_HEADER: usize = 20;
    const RECORD_HEADER: usize = 8;
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(at + RECORD_HEADER + len <= bytes.len(), "a whole segment ends with a whole record");
        out.push((at, len));
        at += RECORD_HEADER + len;
    }
    assert_eq!(at, bytes.len(), "the segment is whole records");
    out
}

// --- 1. one server per data dir ----------------------------------------------------

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = DataDir::new();
    let mut first = dir.start(&[]);
    let other = format!("unix:{}", dir.scratch.path().join("other.sock").display());
    let out = dir.serve_to_exit(&other, &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the second server started:\n{stderr}");
    assert!(stderr.contains(&dir.data.display().to_string()), "names the directory:\n{stderr}");
    assert!(stderr.contains("in use"), "says it is in use:\n{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "names the first server's pid:\n{stderr}");
    // Nor can it be checked while in use.
    let check = dir.check(false);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    assert!(text(&check.stderr).contains("in use"), "{}", text(&check.stderr));
    assert!(first.is_running(), "the first server is unharmed");
}

// --- 2. damage in the middle of the log --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_the_log_is_refused_and_cut_on_request() {
    const KEYS: i64 = 2000;
    let dir = DataDir::new();
    let mut server = dir.start(&[]);
    write_keys(&dir.address, "keys", 0..KEYS).await;
    assert!(server.terminate().success(), "graceful stop");

    // A good directory checks clean.
    let good = dir.check(false);
    let stdout = text(&good.stdout);
    assert!(good.status.success(), "{}\n{}", stdout, text(&good.stderr));
    let replayed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("log")?.trim().split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("check lists the records:\n{stdout}"));
    assert!(replayed >= KEYS as u64, "{replayed} records for {KEYS} writes:\n{stdout}");

    // One flipped byte inside a record in the middle of the segment.
    let segment = dir.last_segment();
    let mut bytes = std::fs::read(&segment).unwrap();
    let all = records(&bytes);
    let (at, len) = all[all.len() / 2];
    bytes[at + 8 + len / 2] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();
    let named = format!("{} is damaged at byte {at}", segment.display());

    let refused = dir.serve_to_exit(&dir.address, &[]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "the server started on a damaged log:\n{stderr}");
    assert!(stderr.contains(&named), "names the file and the byte offset ({named}):\n{stderr}");

    let check = dir.check(false);
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{}\n{stderr}", text(&check.stdout));
    assert!(stderr.contains(&named), "check names the file and the byte offset ({named}):\n{stderr}");

    let truncate = dir.check(true);
    let stdout = text(&truncate.stdout);
    assert!(truncate.status.success(), "{stdout}\n{}", text(&truncate.stderr));
    assert!(stdout.contains("cut") && stdout.contains(&segment.display().to_string()), "{stdout}");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), at as u64, "cut at the bad record");

    // The server serves exactly what was before the damage: a prefix of the writes.
    let _server = dir.start(&[]);
    let keys: BTreeMap<String, i64> = read_dict(&dir.address, "keys").await;
    let kept = keys.len() as i64;
    assert!(kept > 0 && kept < KEYS, "kept {kept} of {KEYS}");
    for i in 0..kept {
        assert_eq!(keys.get(&key(i)), Some(&i), "kept a prefix of the writes (0..{kept})");
    }
}

// --- 3. a torn tail ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_with_a_warning_and_earlier_data_kept() {
    const KEYS: i64 = 300;
    let dir = DataDir::new();
    let mut server = dir.start(&[]);
    write_keys(&dir.address, "keys", 0..KEYS).await;
    assert!(server.terminate().success());

    // Half of a real record (its header and half its payload) at the end.
    let segment = dir.last_segment();
    let bytes = std::fs::read(&segment).unwrap();
    let (at, len) = *records(&bytes).last().unwrap();
    let half = &bytes[at..at + 8 + len / 2];
    std::fs::OpenOptions::new().append(true).open(&segment).unwrap().write_all(half).unwrap();

    let mut server = dir.start(&[]);
    server.wait_for_log("cutting the log here");
    assert!(server.log().contains(&format!("bytes={}", half.len())), "says how much it cut:\n{}", server.log());
    let keys: BTreeMap<String, i64> = read_dict(&dir.address, "keys").await;
    assert_eq!(keys.len() as i64, KEYS);
    assert!((0..KEYS).all(|i| keys.get(&key(i)) == Some(&i)));
    // The log goes on after the cut.
    write_keys(&dir.address, "keys", KEYS..KEYS + 1).await;
    assert!(server.terminate().success());

    // A tail of zeros (a file extended before its data made it) is torn too.
    let segment = dir.last_segment();
    std::fs::OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[0; 4096]).unwrap();
    let server = dir.start(&[]);
    server.wait_for_log("cutting the log here");
    assert!(server.log().contains("bytes=4096"), "{}", server.log());
    let keys: BTreeMap<String, i64> = read_dict(&dir.address, "keys").await;
    assert_eq!(keys.len() as i64, KEYS + 1, "every write, also the one after the first cut");
}

// --- 4. a deleted snapshot -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_snapshot_refuses_the_start_naming_the_missing_records() {
    let dir = DataDir::new();
    let mut server = dir.start(&[]);
    write_keys(&dir.address, "keys", 0..100).await;
    let out = run_guarded(agora(&["snapshot", "--address", &dir.address]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let path = stdout
        .split(" written to ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("prints where the snapshot went: {stdout}"));
    assert!(Path::new(path).is_file(), "{path} exists");
    assert_eq!(dir.files("snapshot-"), vec![PathBuf::from(path)], "the only snapshot");
    write_keys(&dir.address, "keys", 100..200).await;
    assert!(server.terminate().success());

    // Snapshot + log restore everything.
    let mut server = dir.start(&[]);
    let keys: BTreeMap<String, i64> = read_dict(&dir.address, "keys").await;
    assert_eq!(keys.len(), 200);
    assert!(server.terminate().success());

    std::fs::remove_file(path).unwrap();
    let refused = dir.serve_to_exit(&dir.address, &[]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "started without its snapshot:\n{stderr}");
    assert!(stderr.contains("missing") && stderr.contains("snapshot"), "names what is missing:\n{stderr}");
    let check = dir.check(false);
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check.stderr).contains("missing"), "{}", text(&check.stderr));
}

// --- 5. a full disk ------------------------------------------------------------------

/// In the server's child process, before exec: files may grow to `bytes` (EFBIG
/// beyond, SIGXFSZ ignored so the write fails instead of killing the process).
fn limit_file_size(cmd: &mut Command, bytes: u64) {
    // SAFETY: only async-signal-safe calls (getrlimit, setrlimit, signal) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = bytes as libc::rlim_t;
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// Lifts the file size limit of a running process (to its hard limit).
fn lift_file_size_limit(pid: u32) {
    let mut ours = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/prlimit with valid pointers, on our own child.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut ours), 0);
        let lifted = libc::rlimit { rlim_cur: ours.rlim_max, rlim_max: ours.rlim_max };
        let rc = libc::prlimit(pid as libc::pid_t, libc::RLIMIT_FSIZE, &lifted, std::ptr::null_mut());
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
}

const CANNOT_WRITE: &str = "cannot write its log";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_changes_keeps_reads_and_recovers() {
    let dir = DataDir::new();
    let options = dir.options(&["--fsync", "always", "--snapshot-after", "64MiB"]);
    let mut server = Server::start_at_with(&dir.address, options, |cmd| limit_file_size(cmd, 256 << 10));
    let value = "v".repeat(1000);

    // Opened before the disk fills: a reader and prober.
    let m = connect(&dir.address).await;
    let dict = m.dict::<String, String>("big").await.unwrap();
    let counter = m.value::<i64>("n", &0).await.unwrap();
    dict.insert(&"first".into(), &value).await.unwrap();

    // A writer until the log cannot take more (its last write then waits, its answer
    // held back until the record is on disk).
    let acked = Arc::new(Mutex::new(vec!["first".to_owned()]));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (address, acked, refused, stop, value) =
            (dir.address.clone(), acked.clone(), refused.clone(), stop.clone(), value.clone());
        tokio::spawn(async move {
            let w = connect(&address).await;
            let d = w.dict::<String, String>("big").await.unwrap();
            for i in 0.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let key = format!("w{i}");
                match d.insert(&key, &value).await {
                    Ok(()) => acked.lock().unwrap().push(key),
                    Err(e) => {
                        assert!(e.to_string().contains(CANNOT_WRITE), "writer: {e}");
                        refused.lock().unwrap().push(key);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let stats = m.stats().await.expect("stats during the failure");
        if stats.durability.as_ref().expect("durable").refusing.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the log never filled; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Changes are refused, with the durability error.
    let attempts = [
        ("insert", dict.insert(&"refused-a".into(), &value).await.err()),
        ("add", counter.add(&1).await.err()),
        ("small insert", dict.insert(&"refused-b".into(), &"small".into()).await.err()),
    ];
    for (what, e) in attempts {
        let e = e.unwrap_or_else(|| panic!("{what} was accepted while the log cannot be written"));
        assert!(e.to_string().contains(CANNOT_WRITE), "{what}: {e}");
    }
    refused.lock().unwrap().extend(["refused-a".to_owned(), "refused-b".to_owned()]);
    // Reads still work.
    assert_eq!(dict.get(&"first".into()).await.unwrap().as_deref(), Some(value.as_str()));
    assert!(dict.len().await.unwrap() >= 1);
    assert_eq!(counter.get().await.unwrap(), 0);
    server.wait_for_log("cannot write the log");

    // Room again: within the hang guard changes are accepted (the log thread retries).
    lift_file_size_limit(server.pid());
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        match counter.add(&1).await {
            Ok(n) => {
                assert_eq!(n, 1, "only the accepted add counted");
                break;
            }
            Err(e) => assert!(e.to_string().contains(CANNOT_WRITE), "{e}"),
        }
        assert!(Instant::now() < deadline, "changes still refused after the limit was lifted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..10 {
        let key = format!("after-{i}");
        dict.insert(&key, &value).await.unwrap();
        acked.lock().unwrap().push(key);
    }
    stop.store(true, Ordering::Release);
    tokio::time::timeout(HANG_GUARD, writer).await.expect("the writer finished").expect("writer");
    let acked = acked.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    assert!(acked.len() > 100, "{} writes acknowledged before and after", acked.len());

    // A crash now: everything acknowledged is there, nothing refused.
    server.kill9();
    drop(m);
    let _server = dir.start(&["--fsync", "always"]);
    let big: BTreeMap<String, String> = read_dict(&dir.address, "big").await;
    let missing: Vec<&String> = acked.iter().filter(|k| big.get(*k) != Some(&value)).collect();
    assert!(missing.is_empty(), "{} acknowledged writes lost: {:?}", missing.len(), &missing[..missing.len().min(10)]);
    let appeared: Vec<&String> = refused.iter().filter(|k| big.contains_key(*k)).collect();
    assert!(appeared.is_empty(), "refused writes appeared: {appeared:?}");
    let m = connect(&dir.address).await;
    assert_eq!(m.snapshot("n").await.unwrap(), Value::Int(1), "the refused add did not count");
}

// --- 6. agora stats and agora snapshot ------------------------------------------------

#[test]
fn stats_say_where_the_state_is_kept_and_snapshot_needs_a_data_dir() {
    let memory = Server::start_unix();
    let out = run_guarded(agora(&["stats", "--address", &memory.address]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("state in memory only"), "{}", text(&out.stdout));
    let out = run_guarded(agora(&["snapshot", "--address", &memory.address]));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a snapshot of an in-memory server succeeded");
    assert!(stderr.contains("in memory only") && stderr.contains("--data-dir"), "{stderr}");

    let dir = DataDir::new();
    let _durable = dir.start(&["--fsync", "always"]);
    let stats = || {
        let out = run_guarded(agora(&["stats", "--address", &dir.address]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let before = stats();
    assert!(before.contains(&format!("durability     {} (fsync always)", dir.data.display())), "{before}");
    assert!(before.contains("  log          "), "{before}");
    assert!(before.contains("  snapshot     record 0,"), "the new directory's first snapshot:\n{before}");
    assert!(!before.contains("REFUSING"), "{before}");
    let out = run_guarded(agora(&["snapshot", "--address", &dir.address]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let newest = dir.files("snapshot-").pop().expect("a snapshot");
    let after = stats();
    assert!(after.contains(&newest.display().to_string()), "stats name the newest snapshot {newest:?}:\n{after}");
}

// --- 7. what a restart keeps and ends ---------------------------------------------------

/// An authenticated native session by hand, for requests the client does not make.
fn raw_session(address: &str) -> RawConn {
    let mut raw = RawConn::connect(address);
    raw.native_session(AUTHKEY, "raw");
    raw
}

fn raw_request(raw: &mut RawConn, op: Op) -> Result<native::Reply, agora_proto::WireError> {
    let mut out = Vec::new();
    native::encode(&Request { id: 7, op }, &mut out).unwrap();
    raw.send_frame(&out).unwrap();
    let response: Response = native::decode(&raw.recv_frame().expect("a response")).unwrap();
    assert_eq!(response.id, 7);
    response.result
}

/// State a client leaves behind when the server is SIGKILLed: a held lock, a leased
/// queue item, an anonymous list only it holds, one a named dict holds.
struct LeftBehind {
    token: u64,
    loose: u64,
    kept: u64,
}

async fn leave_state_and_crash(dir: &DataDir, server: &mut Server) -> LeftBehind {
    let a = connect(&dir.address).await;
    let guard = a.lock("L").await.unwrap().acquire().await.unwrap();
    let queue = a.queue::<String>("Q", 0).await.unwrap();
    for item in ["a", "b", "c"] {
        queue.put(&item.to_owned()).await.unwrap();
    }
    let leased = queue.get_leased(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(leased.item(), "a");
    let loose = a.new_list::<i64>(&[1, 2, 3]).await.unwrap();
    let kept = a.new_list::<i64>(&[4, 5, 6]).await.unwrap();
    let holder = a.dict::<String, Value>("D").await.unwrap();
    holder.insert(&"kept".into(), &ObjectRef::new(kept.id(), "list").to_value()).await.unwrap();
    let left = LeftBehind { token: guard.token(), loose: loose.id(), kept: kept.id() };
    server.kill9();
    // Only now: with the server gone, dropping sends nothing.
    drop((guard, leased, loose, kept, holder, queue, a));
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_locks_are_free_leases_back_and_only_held_objects_kept() {
    let dir = DataDir::new();
    let mut server = dir.start(&["--fsync", "always"]);
    let left = leave_state_and_crash(&dir, &mut server).await;
    let _server = dir.start(&["--fsync", "always"]);
    let b = connect(&dir.address).await;

    // The lock is free, and its next token is larger.
    let guard = b.lock("L").await.unwrap().try_acquire().await.unwrap().expect("the lock is free after the restart");
    assert!(guard.token() > left.token, "token {} after {}", guard.token(), left.token);
    guard.release().await.unwrap();

    // The leased item is back at the head.
    let items: Vec<String> = agora_proto::from_value(b.snapshot("Q").await.unwrap()).unwrap();
    assert_eq!(items, ["a", "b", "c"]);
    assert_eq!(b.queue::<String>("Q", 0).await.unwrap().get().await.unwrap(), "a");

    // The list the named dict holds survived, the other did not.
    let held: BTreeMap<String, Value> = agora_proto::from_value(b.snapshot("D").await.unwrap()).unwrap();
    let reference = ObjectRef::from_value(&held["kept"]).expect("a reference");
    assert_eq!(reference.id, left.kept);
    let lists = b.stats().await.unwrap().objects_by_kind.into_iter().find(|(k, _)| k == "list").map_or(0, |(_, n)| n);
    assert_eq!(lists, 1, "only the held list is left");
    let mut raw = raw_session(&dir.address);
    assert!(raw_request(&mut raw, Op::Attach { object: left.kept }).is_ok(), "the held list is there");
    let len = raw_request(&mut raw, Op::Call { object: left.kept, method: "__len__".into(), args: Args::default() });
    assert_eq!(len, Ok(native::Reply::Value(Value::Int(3))));
    let gone = raw_request(&mut raw, Op::Attach { object: left.loose }).expect_err("the loose list is gone");
    assert_eq!(gone.code, ErrorCode::NoSuchObject, "{gone:?}");
}

/// The native dialect's way to use an id is `Attach`; for an object lost in a restart
/// its error should say so, as the Python dialect's does (`Engine::missing_object`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_from_before_a_restart_gets_an_error_naming_the_restart() {
    let dir = DataDir::new();
    let mut server = dir.start(&["--fsync", "always"]);
    let left = leave_state_and_crash(&dir, &mut server).await;
    let _server = dir.start(&["--fsync", "always"]);
    let mut raw = raw_session(&dir.address);
    let gone = raw_request(&mut raw, Op::Attach { object: left.loose }).expect_err("the loose list is gone");
    assert_eq!(gone.code, ErrorCode::NoSuchObject, "{gone:?}");
    assert!(gone.message.contains("restart"), "attach: {:?}", gone.message);
}

// --- 8. stock CPython clients across restarts --------------------------------------------

/// A stock-library client: `write LO HI` / `read LO HI` keys of the exposed dict,
/// `hold` (make an anonymous dict, print its token, wait for stdin to close), `stale
/// TYPEID IDENT` (use that token on the server as it is now).
const PYTHON_CLIENT: &str = r#"
import os, sys
from multiprocessing import managers
from multiprocessing.managers import BaseManager, SyncManager, Token

mode, address = sys.argv[1], sys.argv[2]
authkey = os.environ["AGORA_AUTHKEY"].encode()

class M(BaseManager):
    pass
M.register("get_store", proxytype=managers.DictProxy)

if mode in ("write", "read"):
    m = M(address=address, authkey=authkey)
    m.connect()
    store = m.get_store()
    lo, hi = int(sys.argv[3]), int(sys.argv[4])
    if mode == "write":
        for i in range(lo, hi):
            store["k%d" % i] = i
        print("WROTE", hi - lo)
    else:
        wrong = [i for i in range(lo, hi) if store.get("k%d" % i) != i]
        assert not wrong, "missing or wrong: %r" % wrong[:10]
        print("READ", len(store))
elif mode == "hold":
    s = SyncManager(address=address, authkey=authkey)
    s.connect()
    d = s.dict()
    d["x"] = 1
    print("TOKEN", d._token.typeid, d._token.id, flush=True)
    sys.stdin.read()
    os._exit(0)
elif mode == "stale":
    typeid, ident = sys.argv[3], sys.argv[4]
    token = Token(typeid, address, ident)
    for how in ("call", "incref"):
        try:
            if how == "call":
                managers.DictProxy(token, "pickle", authkey=authkey, incref=False)["x"]
            else:
                managers.DictProxy(token, "pickle", authkey=authkey)
            print("NOERROR", how)
        except Exception as e:
            print("ERROR", how, type(e).__name__, " | ".join(str(e).splitlines()))
"#;

fn python(py: &python_support::Python, args: &[&str]) -> Command {
    let mut cmd = Command::new(&py.exe);
    cmd.arg("-c").arg(PYTHON_CLIENT).args(args);
    cmd.env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap());
    cmd.env_remove("PYTHONPATH").env_remove("PYTHONSTARTUP").env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn python_ok(py: &python_support::Python, server: &Server, args: &[&str], said: &str) -> String {
    let done = python_support::run(python(py, args), HANG_GUARD);
    assert!(
        done.ok() && done.stdout.contains(said),
        "python {args:?} failed\n{}\n--- server log (tail)\n{}",
        done.transcript(),
        server.log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    done.stdout
}

#[test]
fn cpython_clients_find_their_data_after_restarts() {
    python_support::for_each_python(|py| {
        let dir = DataDir::new();
        let path = dir.address.strip_prefix("unix:").unwrap().to_owned();
        let expose = ["--expose", "get_store=dict:store"];
        let mut server = dir.start(&expose);
        python_ok(py, &server, &["write", &path, "0", "50"], "WROTE 50");
        assert!(server.terminate().success(), "graceful stop");
        let mut server = dir.start(&expose);
        python_ok(py, &server, &["read", &path, "0", "50"], "READ 50");
        assert!(server.terminate().success());

        // --fsync always, then a crash.
        let always = ["--expose", "get_store=dict:store", "--fsync", "always"];
        let mut server = dir.start(&always);
        python_ok(py, &server, &["write", &path, "50", "100"], "WROTE 50");
        let mut holder = python(py, &["hold", &path]).stdin(Stdio::piped()).spawn().expect("spawn holder");
        let mut said = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut said).unwrap();
        let token: Vec<String> = said.split_whitespace().map(str::to_owned).collect();
        if token.len() != 3 || token[0] != "TOKEN" {
            let _ = holder.kill();
            let out = holder.wait_with_output().unwrap();
            panic!("holder said {said:?}\n{}", text(&out.stderr));
        }
        server.kill9();
        let server = dir.start(&always);
        python_ok(py, &server, &["read", &path, "0", "100"], "READ 100");

        // The old token's ident, used on the restarted server.
        let out = python_ok(py, &server, &["stale", &path, &token[1], &token[2]], "ERROR");
        drop(holder.stdin.take());
        let _ = holder.kill();
        let _ = holder.wait();
        for how in ["call", "incref"] {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(how))
                .unwrap_or_else(|| panic!("no outcome for {how}:\n{out}"));
            assert!(line.starts_with("ERROR "), "{how} with a stale ident succeeded: {line}");
            assert!(line.contains("restart"), "{how}: the error does not mention the restart: {line}");
            // CPython's RemoteError carrying the server's traceback, not a bare KeyError.
            assert!(line.starts_with(&format!("ERROR {how} RemoteError")), "{how}: {line}");
        }
    });
}

// --- 5b. the full disk, continued: what else must keep working ------------------------

/// A `--fsync always` server whose files may not grow beyond 256 KiB.
fn start_on_a_small_disk(dir: &DataDir, extra: &[&str]) -> Server {
    let mut args = vec!["--fsync", "always", "--snapshot-after", "64MiB"];
    args.extend_from_slice(extra);
    Server::start_at_with(&dir.address, dir.options(&args), |cmd| limit_file_size(cmd, 256 << 10))
}

/// Fills the server's log until it refuses changes; returns a client connected before
/// that, and the writer (whose last write waits for the log).
async fn fill_the_disk(dir: &DataDir, server: &Server) -> (Manager, tokio::task::JoinHandle<()>) {
    let m = connect(&dir.address).await;
    let address = dir.address.clone();
    let writer = tokio::spawn(async move {
        let w = connect(&address).await;
        let d = w.dict::<String, String>("fill").await.unwrap();
        let value = "f".repeat(16 << 10);
        for i in 0.. {
            if d.insert(&format!("f{i}"), &value).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let deadline = Instant::now() + HANG_GUARD;
    while m.stats().await.unwrap().durability.expect("durable").refusing.is_none() {
        assert!(Instant::now() < deadline, "the log never filled; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (m, writer)
}

/// Waits (within the hang guard) until the server accepts changes again.
async fn until_writable(m: &Manager) {
    let dict = m.dict::<String, i64>("probe").await;
    let deadline = Instant::now() + HANG_GUARD;
    let dict = match dict {
        Ok(dict) => dict,
        Err(_) => loop {
            assert!(Instant::now() < deadline, "changes still refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(dict) = m.dict::<String, i64>("probe").await {
                break dict;
            }
        },
    };
    while let Err(e) = dict.insert(&"p".into(), &1).await {
        assert!(e.to_string().contains(CANNOT_WRITE), "{e}");
        assert!(Instant::now() < deadline, "changes still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// "Reads still work" includes a client that connects during the failure, and the
/// operator's `agora stats`, which is where REFUSING CHANGES is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_can_connect_and_read_while_the_log_cannot_be_written() {
    let dir = DataDir::new();
    let server = start_on_a_small_disk(&dir, &[]);
    let (_m, writer) = fill_the_disk(&dir, &server).await;
    let out = run_guarded(agora(&["stats", "--address", &dir.address]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "agora stats during the failure: {}\n{}", text(&out.stderr), server.log());
    assert!(stdout.contains("REFUSING CHANGES") && stdout.contains(CANNOT_WRITE), "{stdout}");
    let fresh = Manager::connect_with(&dir.address, AUTHKEY, ManagerOptions::new().reconnect(false))
        .await
        .expect("a new client connects during the failure");
    let fill: BTreeMap<String, String> = agora_proto::from_value(fresh.snapshot("fill").await.unwrap()).unwrap();
    assert!(!fill.is_empty());
    writer.abort();
}

/// A client that leaves while changes are refused must not keep its lock for good:
/// its session ends (now, or once the log is writable again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_while_the_log_cannot_be_written_gives_back_its_lock() {
    let dir = DataDir::new();
    // A short heartbeat timeout: not even a silent session may keep the lock.
    let server = start_on_a_small_disk(&dir, &["--heartbeat-timeout", "1s"]);
    let a = connect(&dir.address).await;
    let guard = a.lock("L").await.unwrap().acquire().await.unwrap();
    let (m, writer) = fill_the_disk(&dir, &server).await;
    // A leaves (its connection closes) while changes are refused.
    let open = m.stats().await.unwrap().sessions;
    drop((guard, a));
    let deadline = Instant::now() + HANG_GUARD;
    while m.stats().await.unwrap().sessions >= open {
        assert!(Instant::now() < deadline, "the server never saw the client leave");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lift_file_size_limit(server.pid());
    until_writable(&m).await;
    let lock = m.lock("L").await.unwrap();
    let got = lock.acquire_timeout(Duration::from_secs(20)).await.unwrap();
    assert!(got.is_some(), "the lock of a client that left during the failure is still held");
    writer.abort();
}

/// Delivery counts, a delayed nack and the dead letter settings survive a crash and a
/// restart (snapshot + log): the crashed consumer's lease comes back counted, and its
/// next failure moves the item to the dead letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_counts_delays_and_dead_letters_survive_a_restart() {
    let dir = DataDir::new();
    let mut server = dir.start(&["--fsync", "always"]);
    {
        let a = connect(&dir.address).await;
        let options = agora_client::QueueOptions::new().dead_letter(2, "RQ.dead");
        let q = a.queue_with::<String>("RQ", &options).await.unwrap();
        for item in ["x", "y", "z"] {
            q.put(&item.to_owned()).await.unwrap();
        }
        let x = q.get_leased(Duration::from_secs(3600)).await.unwrap();
        x.nack_after(Duration::from_secs(3600)).await.unwrap();
        a.save_snapshot().await.unwrap();
        let y = q.get_leased(Duration::from_secs(3600)).await.unwrap();
        assert_eq!((y.item().as_str(), y.deliveries().await.unwrap()), ("y", 1));
        server.kill9();
        drop((y, q, a));
    }
    let _server = dir.start(&["--fsync", "always"]);
    let b = connect(&dir.address).await;
    let q = b.queue::<String>("RQ", 0).await.unwrap();
    assert_eq!(q.delayed_len().await.unwrap(), 1, "x still waits out its delay");
    let y = q.get_leased(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((y.item().as_str(), y.deliveries().await.unwrap()), ("y", 2), "the crash counted as a delivery");
    y.nack().await.unwrap();
    let dead: Vec<String> = agora_proto::from_value(b.snapshot("RQ.dead").await.unwrap()).unwrap();
    assert_eq!(dead, ["y"], "after max_deliveries: the dead letter queue");
    let left: Vec<String> = agora_proto::from_value(b.snapshot("RQ").await.unwrap()).unwrap();
    assert_eq!(left, ["z"]);
}

// --- 9. pipelined requests while answers wait for the log ------------------------------

/// Requests that arrive while earlier answers wait for their fsync are answered as soon
/// as those are written, not when more input happens to come. A raw client (no
/// heartbeats) sends a write and, right after, another in a write of its own, then
/// waits for both answers; 10 times. (The server once left a request read during the
/// wait in its buffer until the next input, which a client's heartbeat sent 2.5 s
/// later: here, never.)
#[test]
fn requests_read_while_answers_wait_for_the_log_are_answered_without_more_input() {
    let dir = DataDir::new();
    let _server = dir.start(&["--fsync", "always", "--heartbeat-timeout", "10m"]);
    let mut raw = raw_session(&dir.address);
    let opened = raw_request(
        &mut raw,
        Op::Open { kind: native::Kind::Dict, name: Some("pipelined".into()), args: Args::default() },
    );
    let Ok(native::Reply::Opened { object, .. }) = opened else { panic!("open: {opened:?}") };
    let mut id = 100;
    for round in 0..10 {
        for _ in 0..2 {
            id += 1;
            let args = Args::positional(vec![Value::Str("k".into()), Value::Int(id as i64)]);
            let mut out = Vec::new();
            native::encode(&Request { id, op: Op::Call { object, method: "__setitem__".into(), args } }, &mut out)
                .unwrap();
            raw.send_frame(&out).unwrap();
        }
        for answer in 0..2 {
            let Some(body) = raw.recv_frame() else {
                panic!("round {round}: answer {answer} of 2 never came (within the hang guard)")
            };
            let response: Response = native::decode(&body).unwrap();
            assert!(response.result.is_ok(), "{response:?}");
        }
    }
}

// --- 10. a big dict compacting while snapshots are written ------------------------------

/// The keys of a dict in insertion order, as a client was told they are: each insert
/// numbered, each delete taking its number out.
#[derive(Default)]
struct OrderedModel {
    by_number: BTreeMap<u64, i64>,
    number_of: std::collections::HashMap<i64, u64>,
    next: u64,
}

impl OrderedModel {
    fn insert(&mut self, k: i64) {
        self.by_number.insert(self.next, k);
        self.number_of.insert(k, self.next);
        self.next += 1;
    }
    fn remove(&mut self, k: i64) {
        let number = self.number_of.remove(&k).expect("a live key");
        self.by_number.remove(&number);
    }
    fn keys(&self) -> Vec<String> {
        self.by_number.values().map(|k| key(*k)).collect()
    }
}

/// Runs `agora snapshot` back to back from when `on` is raised until it is lowered
/// again; how many it wrote.
fn snapshots_while(on: Arc<AtomicBool>, address: String) -> tokio::task::JoinHandle<usize> {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + HANG_GUARD;
        while !on.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "never raised");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut written = 0;
        while on.load(Ordering::Relaxed) {
            let out = run_guarded(agora(&["snapshot", "--address", &address]));
            assert!(out.status.success(), "{}", text(&out.stderr));
            written += 1;
        }
        written
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_dict_compacting_while_snapshots_are_written_survives_a_crash() {
    // 34,000 keys take 34,000 positions of a ring of 65,536; when the deletes (at random)
    // outnumber the keys left, the ring is compacted step by step (rings of 32 Ki
    // positions and more are), over the next thousand or so calls. Snapshots are
    // written back to back from a little before then on, so some are read out while the
    // compaction runs. (A process crash loses nothing acknowledged under every fsync
    // policy: `no` keeps it quick.)
    const KEYS: i64 = 34_000;
    const GONE: usize = 17_001;
    const TASKS: usize = 16;
    let dir = DataDir::new();
    let mut server = dir.start(&["--fsync", "no"]);
    let m = connect(&dir.address).await;
    let dict = m.dict::<String, i64>("churned").await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let dict = dict.clone();
        tasks.spawn(async move {
            for k in (t as i64..KEYS).step_by(TASKS) {
                dict.insert(&key(k), &k).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // The tasks' inserts interleaved: the order is the server's.
    let mut model = OrderedModel::default();
    for k in dict.keys().await.unwrap() {
        model.insert(k[1..].parse().unwrap());
    }
    // Keys deleted in a random order, by several tasks at once.
    let mut live: Vec<i64> = (0..KEYS).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next_random = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let gone: Vec<i64> = (0..GONE).map(|_| live.swap_remove((next_random() % live.len() as u64) as usize)).collect();
    let snapshotting = Arc::new(AtomicBool::new(false));
    let snapshots = snapshots_while(snapshotting.clone(), dir.address.clone());
    let deleted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for share in gone.chunks(GONE.div_ceil(TASKS)) {
        let (dict, share, deleted, snapshotting) =
            (dict.clone(), share.to_vec(), deleted.clone(), snapshotting.clone());
        tasks.spawn(async move {
            for k in share {
                assert_eq!(dict.remove(&key(k)).await.unwrap(), Some(k));
                if deleted.fetch_add(1, Ordering::Relaxed) == GONE - 2_000 {
                    snapshotting.store(true, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    gone.iter().for_each(|k| model.remove(*k));
    // Then a churn: a random key out, a new one in, while the compaction goes on.
    for (step, new) in (KEYS..KEYS + 3_000).enumerate() {
        let out = live.swap_remove((next_random() % live.len() as u64) as usize);
        let (out_key, new_key) = (key(out), key(new));
        // The delete and the insert at once (their keys differ): one round trip.
        let (removed, inserted) = tokio::join!(dict.remove(&out_key), dict.insert(&new_key, &new));
        assert_eq!(removed.unwrap(), Some(out), "step {step}");
        inserted.unwrap();
        model.remove(out);
        model.insert(new);
        live.push(new);
    }
    snapshotting.store(false, Ordering::Relaxed);
    assert!(snapshots.await.unwrap() >= 2, "snapshots were written during the deletes and the churn");
    assert_eq!(dict.keys().await.unwrap(), model.keys(), "before the crash");
    drop((dict, m));
    server.kill9();
    let _server = dir.start(&["--fsync", "no"]);
    let m = connect(&dir.address).await;
    let dict = m.dict::<String, i64>("churned").await.unwrap();
    assert_eq!(dict.keys().await.unwrap(), model.keys(), "after the crash, from the snapshots and the log");
    let values = read_dict::<i64>(&dir.address, "churned").await;
    assert_eq!(values.len(), live.len());
    assert!(values.iter().all(|(k, v)| *k == key(*v)), "every key keeps its value");
}
