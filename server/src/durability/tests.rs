//! The data directory through `Durability`: exact restore from the log and from
//! snapshots, the restart rules, torn tails, damage, missing files and the lock.

use std::path::Path;
use std::sync::Arc;

use agora_proto::native::{Args, Kind, ObjectId};
use agora_proto::reference::ObjectRef;
use agora_proto::value::Set;
use agora_proto::Value;

use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::engine::{Access, Answer, Command, Keep, SessionId};

fn open(dir: &Path) -> (Arc<Durability>, Recovery) {
    open_with(dir, Fsync::Always)
}

fn open_with(dir: &Path, fsync: Fsync) -> (Arc<Durability>, Recovery) {
    let mut config = DurabilityConfig::new(dir);
    config.fsync = fsync;
    Durability::open(config, CustomKinds::default()).expect("opens")
}

/// Stops the log (everything written and fsynced) and lets go of the directory.
fn close(durability: Arc<Durability>) {
    durability.stop();
    drop(durability);
}

struct Client<'a> {
    engine: &'a Engine,
    session: SessionId,
}

impl<'a> Client<'a> {
    fn new(engine: &'a Engine) -> Client<'a> {
        match engine.apply(Command::OpenSession { at: engine.now(), secret: None }).reply {
            Ok(Answer::Session(session)) => Client { engine, session },
            other => panic!("{other:?}"),
        }
    }

    fn open(&self, kind: Kind, name: Option<&str>, args: Vec<Value>) -> ObjectId {
        let command = Command::Open {
            session: self.session,
            kind,
            name: name.map(str::to_owned),
            args: Args::positional(args),
            keep: Keep::Handle,
            at: self.engine.now(),
        };
        match self.engine.apply(command).reply {
            Ok(Answer::Opened { object, .. }) => object,
            other => panic!("{other:?}"),
        }
    }

    fn call(&self, object: ObjectId, method: &str, args: Vec<Value>) -> Value {
        let command = Command::Call {
            session: self.session,
            object,
            access: Access::Handle,
            method: method.into(),
            args: Args::positional(args),
            at: self.engine.now(),
        };
        match self.engine.apply(command).reply {
            Ok(Answer::Value(value)) => value,
            other => panic!("{method}: {other:?}"),
        }
    }
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

/// A little of everything: a named dict holding an anonymous list, a counter, a queue
/// with an item out on lease, a lock held (its token returned), a set, an anonymous
/// dict only a client holds.
fn workload(engine: &Engine, rounds: i64) -> (ObjectId, i64) {
    let c = Client::new(engine);
    let dict = c.open(Kind::Dict, Some("config"), vec![]);
    let counter = c.open(Kind::Value, Some("hits"), vec![s("i"), Value::Int(0)]);
    let queue = c.open(Kind::Queue, Some("jobs"), vec![]);
    let lock = c.open(Kind::Lock, Some("leader"), vec![]);
    let tags = c.open(Kind::Set, Some("tags"), vec![Value::List(vec![s("x")])]);
    let held = c.open(Kind::List, None, vec![Value::List(vec![Value::Int(1)])]);
    let _loose = c.open(Kind::Dict, None, vec![]);
    c.call(dict, "__setitem__", vec![s("nested"), ObjectRef::new(held, "list").to_value()]);
    for i in 0..rounds {
        c.call(dict, "__setitem__", vec![s(&format!("k{i}")), Value::Int(i)]);
        c.call(counter, "add", vec![Value::Int(1)]);
        c.call(queue, "put", vec![Value::Int(i)]);
        c.call(tags, "__ixor__", vec![Value::Set(Set::from_values([Value::Int(i % 4), s("x")]).unwrap())]);
    }
    c.call(queue, "get_leased", vec![Value::Bool(false)]);
    let Value::Int(token) = c.call(lock, "acquire_fenced", vec![]) else { panic!("no token") };
    (dict, token)
}

#[test]
fn the_log_restores_the_exact_state() {
    let dir = tempfile::tempdir().unwrap();
    let (d, recovery) = open(dir.path());
    assert_eq!((recovery.snapshot, recovery.replayed), (Some(0), 0), "a new directory starts with snapshot 0");
    workload(d.engine(), 20);
    let before = d.engine().canonical_state();
    close(d);
    let (d, recovery) = open(dir.path());
    assert!(recovery.replayed > 60, "{recovery:?}");
    assert_eq!(d.engine().canonical_state(), before, "sessions, handles, objects and counters all come back");
}

#[test]
fn a_restart_keeps_named_objects_and_what_they_hold_and_releases_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    let (dict, token) = workload(d.engine(), 3);
    let ids_before = d.engine().counters().next_id;
    close(d);

    let (d, _) = open(dir.path());
    let engine = d.engine();
    engine.apply(Command::Restart { at: engine.now() });
    let c = Client::new(engine);
    // Named objects and the anonymous list the dict holds survive; the anonymous dict
    // only a client of the old run held does not.
    let names: Vec<String> = engine.named().into_iter().map(|o| o.name).collect();
    assert_eq!(names, ["config", "hits", "jobs", "leader", "tags"]);
    let kinds: Vec<Kind> = engine.objects().into_iter().map(|o| o.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == Kind::List).count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == Kind::Dict).count(), 1);
    assert_eq!(engine.value_of(dict).unwrap().1.py_repr().matches("k").count(), 3);
    // The set has its members: 0, 1 and 2 toggled in, `x` out, in and out again.
    let tags = c.open(Kind::Set, Some("tags"), vec![]);
    assert_eq!(engine.value_of(tags).unwrap().1.py_repr(), "{0, 1, 2}");
    // The lock of the ended session is free, and its next token is larger.
    let lock = c.open(Kind::Lock, Some("leader"), vec![]);
    let Value::Int(next) = c.call(lock, "acquire_fenced", vec![Value::Bool(false)]) else { panic!() };
    assert!(next > token, "token {next} after the restart, {token} before");
    // The leased item is back at the head of its queue.
    let queue = c.open(Kind::Queue, Some("jobs"), vec![]);
    assert_eq!(c.call(queue, "qsize", vec![]), Value::Int(3));
    assert_eq!(c.call(queue, "get", vec![Value::Bool(false)]), Value::Int(0));
    // Ids keep growing, and an id of the old run says what happened to it.
    let fresh = c.open(Kind::Dict, None, vec![]);
    assert!(fresh >= ids_before);
    let lost = engine.missing_object(ids_before - 1);
    assert!(lost.message.contains("did not survive the server's restart"), "{}", lost.message);
    assert!(!engine.missing_object(fresh + 1000).message.contains("restart"));
}

#[test]
fn a_snapshot_plus_the_log_after_it_restores_the_same_state_and_drops_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    workload(d.engine(), 50);
    let info = d.save_snapshot().unwrap();
    assert!(info.bytes > 0 && info.lsn > 100, "{info:?}");
    let listing = disk::list(dir.path()).unwrap();
    assert_eq!(listing.snapshots.len(), 1);
    assert_eq!(listing.segments.len(), 1, "the segments the snapshot covers are gone");
    assert!(listing.segments[0].0 > info.lsn);
    // More after the snapshot, and a second snapshot replaces the first.
    let c = Client::new(d.engine());
    let dict = c.open(Kind::Dict, Some("after"), vec![]);
    c.call(dict, "__setitem__", vec![s("x"), Value::Int(1)]);
    let before = d.engine().canonical_state();
    close(d);
    let (d, recovery) = open(dir.path());
    assert_eq!(recovery.snapshot, Some(info.lsn));
    assert_eq!(recovery.replayed, 3, "OpenSession, Open, __setitem__");
    assert_eq!(d.engine().canonical_state(), before);
    let second = d.save_snapshot().unwrap();
    assert!(second.lsn > info.lsn);
    assert_eq!(
        disk::list(dir.path()).unwrap().snapshots,
        vec![(second.lsn, disk::snapshot_path(dir.path(), second.lsn))]
    );
}

#[test]
fn a_snapshot_taken_while_a_big_dict_changes_restores_with_the_log_to_the_same_state() {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open_with(dir.path(), Fsync::Everysec);
    let c = Client::new(d.engine());
    let big = c.open(Kind::Dict, Some("big"), vec![]);
    for i in 0..20_000 {
        c.call(big, "__setitem__", vec![Value::Int(i), Value::Int(i)]);
    }
    // A writer overwrites, deletes and adds entries while the snapshot is taken (its
    // dict is read out after the pause, while these run).
    let (stop, writes) = (AtomicBool::new(false), AtomicU64::new(0));
    let info = std::thread::scope(|scope| {
        scope.spawn(|| {
            let c = Client::new(d.engine());
            let big = c.open(Kind::Dict, Some("big"), vec![]);
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                c.call(big, "__setitem__", vec![Value::Int(i * 13 % 30_000), Value::Int(-i)]);
                c.call(big, "pop", vec![Value::Int(i * 7 % 30_000), Value::None]);
                i += 1;
                writes.store(i as u64, Ordering::Release);
            }
        });
        while writes.load(Ordering::Acquire) < 100 {
            std::thread::yield_now();
        }
        let info = d.save_snapshot().unwrap();
        stop.store(true, Ordering::Release);
        info
    });
    let before = d.engine().canonical_state();
    close(d);
    let (d, recovery) = open(dir.path());
    assert_eq!(recovery.snapshot, Some(info.lsn));
    assert_eq!(d.engine().canonical_state(), before, "the snapshot and the log after it give the state");
}

fn last_segment(dir: &Path) -> PathBuf {
    disk::list(dir).unwrap().segments.last().unwrap().1.clone()
}

#[test]
fn a_torn_last_record_is_cut_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    workload(d.engine(), 5);
    let before = d.engine().canonical_state();
    close(d);
    // Half a record at the end: what a crash mid-write leaves.
    let mut record = Vec::new();
    crate::engine::encode_record(&mut record, &Command::Tick { object: 1, at: Time(1) });
    let path = last_segment(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&record[..record.len() / 2]);
    std::fs::write(&path, &bytes).unwrap();
    let (d, recovery) = open(dir.path());
    assert_eq!(recovery.truncated, Some((path.clone(), (record.len() / 2) as u64)));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    assert_eq!(d.engine().canonical_state(), before);
}

#[test]
fn damage_inside_the_log_refuses_the_start_and_check_can_cut_it() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    workload(d.engine(), 30);
    close(d);
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let config = DurabilityConfig::new(dir.path());
    match Durability::open(config.clone(), CustomKinds::default()) {
        Err(DiskError::Damaged { path: at, offset, .. }) => {
            assert_eq!(at, path);
            assert!(offset <= middle as u64 && offset + 200 > middle as u64, "offset {offset}, flipped {middle}");
        }
        other => panic!("expected damage, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(check(dir.path(), false), Err(DiskError::Damaged { .. })));
    let report = check(dir.path(), true).expect("cut at the first bad record");
    assert!(report.recovery.truncated.is_some());
    let (d, _) = open(dir.path());
    assert!(d.engine().object_count() >= 4, "what came before the damage is there");
}

#[test]
fn a_missing_snapshot_is_named_not_guessed_around() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    workload(d.engine(), 5);
    let info = d.save_snapshot().unwrap();
    Client::new(d.engine());
    close(d);
    std::fs::remove_file(&info.path).unwrap();
    match Durability::open(DurabilityConfig::new(dir.path()), CustomKinds::default()) {
        Err(DiskError::Missing(why)) => {
            assert!(why.contains("there is no snapshot") && why.contains("missing"), "{why}")
        }
        other => panic!("expected a missing snapshot, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    match Durability::open(DurabilityConfig::new(dir.path()), CustomKinds::default()) {
        Err(DiskError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected the directory in use, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(check(dir.path(), false), Err(DiskError::InUse { .. })));
    close(d);
    open(dir.path());
}

#[test]
fn reads_are_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    let c = Client::new(d.engine());
    let dict = c.open(Kind::Dict, Some("d"), vec![]);
    let appended = d.appended();
    for _ in 0..10 {
        c.call(dict, "keys", vec![]);
        c.call(dict, "get", vec![s("missing")]);
    }
    assert_eq!(d.appended(), appended);
    c.call(dict, "__setitem__", vec![s("a"), Value::Int(1)]);
    assert_eq!(d.appended(), appended + 1);
}

#[test]
fn the_newest_snapshot_alone_is_a_complete_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    workload(d.engine(), 10);
    let info = d.save_snapshot().unwrap();
    let before = d.engine().canonical_state();
    // A backup of a running server: its newest snapshot, copied elsewhere.
    let backup = tempfile::tempdir().unwrap();
    let copy = backup.path().join(Path::new(&info.path).file_name().unwrap());
    std::fs::copy(&info.path, &copy).unwrap();
    close(d);
    let (restored, recovery) = open(backup.path());
    assert_eq!((recovery.snapshot, recovery.replayed), (Some(info.lsn), 0));
    assert_eq!(restored.engine().canonical_state(), before);
    // And it carries on from there: new records follow the snapshot's.
    let c = Client::new(restored.engine());
    c.open(Kind::Dict, Some("more"), vec![]);
    assert!(restored.appended() > info.lsn);
}

#[test]
fn a_restart_abandons_the_old_run_s_parked_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    let engine = d.engine();
    let c = Client::new(engine);
    let waiting = c.open(Kind::Queue, Some("waiting"), vec![]);
    let full = c.open(Kind::Queue, Some("full"), vec![Value::Int(1)]);
    c.call(full, "put", vec![s("first")]);
    let park = |object, method: &str, args| {
        let command = Command::Call {
            session: c.session,
            object,
            access: Access::Handle,
            method: method.into(),
            args: Args::positional(args),
            at: engine.now(),
        };
        assert!(matches!(engine.apply(command).reply, Ok(Answer::Parked(_))), "{method} parks");
    };
    park(waiting, "get", vec![]);
    park(full, "put", vec![s("second")]);
    let before = engine.canonical_state();
    assert_eq!(before.sessions[&c.session].parked.len(), 2);
    close(d);

    let (d, _) = open(dir.path());
    let engine = d.engine();
    assert_eq!(engine.canonical_state(), before, "parked calls are part of the state");
    let effects = engine.apply(Command::Restart { at: engine.now() });
    assert!(effects.deliveries.is_empty(), "nothing is handed to a caller of the old run");
    let c = Client::new(engine);
    let waiting = c.open(Kind::Queue, Some("waiting"), vec![]);
    let full = c.open(Kind::Queue, Some("full"), vec![]);
    // The old run's get takes nothing, its put never lands.
    c.call(waiting, "put", vec![s("x")]);
    assert_eq!(c.call(waiting, "qsize", vec![]), Value::Int(1));
    assert_eq!(c.call(full, "get", vec![Value::Bool(false)]), s("first"));
    assert_eq!(c.call(full, "qsize", vec![]), Value::Int(0));
}

#[test]
fn a_snapshot_is_taken_by_itself_once_enough_log_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = DurabilityConfig::new(dir.path());
    config.snapshot_after = 16 * 1024;
    let (d, _) = Durability::open(config.clone(), CustomKinds::default()).unwrap();
    workload(d.engine(), 400);
    // Everything is written by the log thread (no connection settles here).
    let guard = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while d.stats().last_snapshot.is_none_or(|s| s.lsn == 0) {
        assert!(std::time::Instant::now() < guard, "no automatic snapshot: {:?}", d.stats());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = d.engine().canonical_state();
    close(d);
    let (d, recovery) = Durability::open(config, CustomKinds::default()).unwrap();
    assert!(recovery.snapshot.is_some_and(|lsn| lsn > 0), "{recovery:?}");
    assert_eq!(d.engine().canonical_state(), before);
}

#[test]
fn concurrent_changes_replay_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open(dir.path());
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let engine = d.engine();
            scope.spawn(move || {
                let c = Client::new(engine);
                let dict = c.open(Kind::Dict, Some("shared"), vec![]);
                let counter = c.open(Kind::Value, Some("n"), vec![s("i"), Value::Int(0)]);
                let queue = c.open(Kind::Queue, Some("q"), vec![]);
                let lock = c.open(Kind::Lock, Some("l"), vec![]);
                for i in 0..300 {
                    c.call(dict, "__setitem__", vec![s(&format!("{}", i % 17)), Value::Int(worker * 1000 + i)]);
                    c.call(counter, "add", vec![Value::Int(1)]);
                    c.call(queue, "put", vec![Value::Int(worker * 1000 + i)]);
                    let _ = c.call(queue, "get", vec![Value::Bool(false)]);
                    if c.call(lock, "acquire", vec![Value::Bool(false)]) == Value::Bool(true) {
                        c.call(lock, "release", vec![]);
                    }
                }
            });
        }
    });
    let before = d.engine().canonical_state();
    assert_eq!(d.engine().value_of(d.engine().named()[1].id).unwrap().1, Value::Int(1200), "{:?}", d.engine().named());
    close(d);
    let (d, _) = open(dir.path());
    assert_eq!(d.engine().canonical_state(), before, "the log's order is the order the changes were applied in");
}

/// Sets two keys and writes them (as several clients would): afterwards writes carry
/// several records, so settling yields first. Returns how many records that write
/// carried, fewer than two if the log thread's own tick wrote some first.
fn write_several(d: &Durability, c: &Client, dict: ObjectId, attempt: i64) -> u64 {
    c.call(dict, "__setitem__", vec![s("x"), Value::Int(attempt)]);
    c.call(dict, "__setitem__", vec![s("y"), Value::Int(attempt)]);
    d.flush();
    d.last_write_records.load(Ordering::Relaxed)
}

/// Group commit with `everysec`: settling tasks yield so that others can append; the
/// first to run again writes every record appended so far, and the next finds its own
/// written. A task dropped while it yields (its connection closed) leaves nobody
/// waiting on it.
#[test]
fn settling_tasks_share_one_write_and_none_waits_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open_with(dir.path(), Fsync::Everysec);
    let c = Client::new(d.engine());
    let dict = c.open(Kind::Dict, Some("d"), vec![]);
    let mut cx = Context::from_waker(Waker::noop());
    // The log thread also writes every 100 ms; try again if it got there first.
    for attempt in 0.. {
        assert!(attempt < 50, "the log thread always wrote before the settles ran");
        if write_several(&d, &c, dict, attempt) < 2 {
            continue;
        }
        c.call(dict, "__setitem__", vec![s("a"), Value::Int(attempt)]);
        let first_lsn = d.journal.appended();
        let mut first = Box::pin(d.settle(first_lsn));
        if first.as_mut().poll(&mut cx).is_ready() {
            continue;
        }
        c.call(dict, "__setitem__", vec![s("b"), Value::Int(attempt)]);
        let second_lsn = d.journal.appended();
        let mut second = Box::pin(d.settle(second_lsn));
        if second.as_mut().poll(&mut cx).is_ready() {
            continue;
        }
        c.call(dict, "__setitem__", vec![s("c"), Value::Int(attempt)]);
        let third_lsn = d.journal.appended();
        let mut third = Box::pin(d.settle(third_lsn));
        if third.as_mut().poll(&mut cx).is_ready() {
            continue;
        }
        if d.is_settled(first_lsn) {
            continue; // the log thread wrote meanwhile
        }
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(()));
        assert!(d.is_settled(third_lsn), "the first to run again wrote the others' records too");
        assert_eq!(d.last_write_records.load(Ordering::Relaxed), 3, "in one write");
        assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(()), "found its record written");
        // A yielded settle that is dropped promised nothing: the next one settles
        // as usual.
        drop(third);
        c.call(dict, "__setitem__", vec![s("d"), Value::Int(attempt)]);
        let lsn = d.journal.appended();
        let mut next = Box::pin(d.settle(lsn));
        if next.as_mut().poll(&mut cx).is_pending() {
            assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(()));
        }
        assert!(d.is_settled(lsn));
        break;
    }
    close(d);
}

/// Group commit with `always`: settling tasks yield before they wake the log thread,
/// so the records the other ready tasks append meanwhile go into the same write and
/// the same fsync (woken by the first answer at once, the thread fsynced every few
/// records under load).
#[test]
fn with_always_settling_tasks_yield_before_waking_the_log_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open_with(dir.path(), Fsync::Always);
    let c = Client::new(d.engine());
    let dict = c.open(Kind::Dict, Some("d"), vec![]);
    let mut cx = Context::from_waker(Waker::noop());
    let nudged = |d: &Durability| *lock(&d.nudge.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The log thread also writes and fsyncs every 200 ms; try again if it got there first.
    for attempt in 0.. {
        assert!(attempt < 50, "the log thread always wrote before the settles ran");
        let flushed = write_several(&d, &c, dict, attempt);
        while nudged(&d) {
            assert!(Instant::now() < deadline, "the log thread never took its nudge");
            std::thread::sleep(Duration::from_millis(1));
        }
        if flushed < 2 {
            continue;
        }
        let mut settles = Vec::new();
        for key in ["a", "b", "c"] {
            c.call(dict, "__setitem__", vec![s(key), Value::Int(attempt)]);
            let lsn = d.journal.appended();
            let mut settle = Box::pin(d.settle(lsn));
            assert!(settle.as_mut().poll(&mut cx).is_pending(), "not fsynced yet");
            settles.push((lsn, settle));
        }
        if d.is_settled(settles[0].0) || d.last_write_records.load(Ordering::Relaxed) != flushed {
            continue; // the log thread wrote meanwhile
        }
        assert!(!nudged(&d), "no settle woke the log thread before it yielded");
        // The first to run again wakes the thread; its write and fsync cover all three.
        let (first_lsn, first) = &mut settles[0];
        while first.as_mut().poll(&mut cx).is_pending() {
            assert!(Instant::now() < deadline, "the log thread never fsynced record {first_lsn}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let last_lsn = settles[2].0;
        assert!(d.synced.load(Ordering::Acquire) >= last_lsn, "one fsync covered the records of all three");
        if d.last_write_records.load(Ordering::Relaxed) != 3 {
            continue; // the thread's own tick wrote some of them first
        }
        for (_, settle) in &mut settles[1..] {
            assert_eq!(settle.as_mut().poll(&mut cx), Poll::Ready(()), "found its record on disk");
        }
        break;
    }
    close(d);
}

/// One client at a time: every write carries one record, so settling writes at once
/// rather than yielding for others who will not come (but for one probe in 16).
#[test]
fn a_lone_writer_settles_without_yielding() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _) = open_with(dir.path(), Fsync::No);
    let c = Client::new(d.engine());
    let dict = c.open(Kind::Dict, Some("d"), vec![]);
    d.flush(); // the session's and the dict's records
    c.call(dict, "__setitem__", vec![s("k"), Value::Int(-1)]);
    d.flush();
    let mut cx = Context::from_waker(Waker::noop());
    let mut yielded = 0;
    for i in 0..32 {
        c.call(dict, "__setitem__", vec![s("k"), Value::Int(i)]);
        let lsn = d.journal.appended();
        let mut settle = Box::pin(d.settle(lsn));
        if settle.as_mut().poll(&mut cx).is_pending() {
            yielded += 1;
            assert_eq!(settle.as_mut().poll(&mut cx), Poll::Ready(()), "the probe wrote after its yield");
        }
        assert!(d.is_settled(lsn));
        assert_eq!(d.last_write_records.load(Ordering::Relaxed), 1);
    }
    // (Fewer if the log thread wrote a record before its settle looked.)
    assert!(yielded <= 32 / PROBE_EVERY, "only the probes yielded: {yielded}");
    close(d);
}
