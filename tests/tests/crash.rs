//! The crash test: the real `agora serve --data-dir D` killed with SIGKILL at random
//! moments while mixed clients run, then restarted on the same directory and address,
//! many times; after every restart a checker compares the recovered state with what
//! the clients recorded as *acknowledged* (a reply received):
//!
//! - every acknowledged dict write is there with its value (and nothing never sent);
//! - the counter is at least the acknowledged `add(1)`s (and at least the largest value
//!   an add answered) and at most the adds sent (one whose reply was lost may or may
//!   not have applied);
//! - every acknowledged put is in the queue or was acked by the consumer (or its ack
//!   was sent and the answer lost); nothing the consumer acked is in the queue again;
//!   items handed out but not acked may come back (at-least-once: counted);
//! - the lock is free after the restart and fencing tokens strictly increase, across
//!   every restart.
//!
//! `--fsync always` runs `AGORA_CRASH_ROUNDS` rounds (default 10); `everysec` and `no`
//! run a third as many (at least 2): a process crash must lose nothing acknowledged
//! under every policy. `AGORA_CRASH_SEED` replays a run's kill delays. Each test prints
//! a summary line (`--nocapture` shows it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agora_client::{Error, Manager, ManagerOptions};
use agora_proto::Value;
use agora_tests::{Server, ServerOptions, AUTHKEY, HANG_GUARD};

const DICT: &str = "crash-dict";
const COUNTER: &str = "crash-counter";
const QUEUE: &str = "crash-queue";
const LOCK: &str = "crash-lock";

/// Clients per round, by what they do.
const DICT_WRITERS: usize = 2;
const ADDERS: usize = 2;
const PRODUCERS: usize = 1;
const CONSUMERS: usize = 1;
const LOCKERS: usize = 2;

/// How long after the load starts the server is killed: 50–400 ms.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 50..=400;

#[test]
fn sigkill_under_load_with_fsync_always() {
    crash_test("always", rounds());
}

#[test]
fn sigkill_under_load_with_fsync_everysec() {
    crash_test("everysec", (rounds() / 3).max(2));
}

#[test]
fn sigkill_under_load_with_fsync_no() {
    crash_test("no", (rounds() / 3).max(2));
}

fn rounds() -> usize {
    match std::env::var("AGORA_CRASH_ROUNDS") {
        Ok(n) => n.parse().expect("AGORA_CRASH_ROUNDS is a number"),
        Err(_) => 10,
    }
}

/// xorshift64*: the kill delays, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = match std::env::var("AGORA_CRASH_SEED") {
            Ok(s) => s.parse().expect("AGORA_CRASH_SEED is a number"),
            Err(_) => {
                let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                (nanos as u64) ^ u64::from(std::process::id()) << 32
            }
        };
        (Rng(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn in_range(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }
}

/// What the clients saw, over every round of one test.
#[derive(Default)]
struct Ledger {
    /// Every dict write sent, and those acknowledged.
    dict_sent: BTreeMap<String, i64>,
    dict_acked: BTreeMap<String, i64>,
    /// `add(1)` calls sent, acknowledged, and the largest value an add answered.
    adds_sent: u64,
    adds_acked: u64,
    max_add_answer: i64,
    /// Items put (sent, acknowledged).
    puts_sent: BTreeSet<String>,
    puts_acked: BTreeSet<String>,
    /// Every item the consumer was handed (on lease), ever.
    received: BTreeSet<String>,
    /// Hand-outs in all, and hand-outs of an item handed out before.
    deliveries: u64,
    redeliveries: u64,
    /// Items whose ack was acknowledged.
    consumer_acked: BTreeSet<String>,
    /// Items handed out whose ack was not acknowledged (not sent, or its answer lost).
    ack_unconfirmed: BTreeSet<String>,
    /// Items of `ack_unconfirmed` a restart showed were consumed (the ack applied).
    consumed_unconfirmed: BTreeSet<String>,
    /// Items handed out, not acked, found back in the queue after a restart.
    back_after_crash: u64,
    /// Fencing tokens in the order they were granted (clients and checker).
    tokens: Vec<u64>,
    lock_grants: u64,
    /// Restarts that cut a torn tail off the log.
    torn_tails: usize,
    /// Snapshots the killed servers logged as written, and how many of them read the
    /// dict out after their pause.
    snapshots: usize,
    captures: usize,
    /// Adds that applied although their answer was lost (counter − acked adds).
    adds_in_doubt_applied: u64,
    /// Acknowledged things missing after a restart, by kind.
    lost_dict: u64,
    lost_adds: u64,
    lost_items: u64,
    token_regressions: u64,
    /// Everything that went wrong, for the failure message.
    violations: Vec<String>,
    /// Errors a client got that a crash does not explain.
    unexpected: Vec<String>,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// The errors a call in flight gets when the server dies under it.
fn crash_error(e: &Error) -> bool {
    matches!(
        e,
        Error::ConnectionLost(_)
            | Error::Connect { .. }
            | Error::Unreachable { .. }
            | Error::ShuttingDown(_)
            | Error::SessionExpired(_)
    )
}

/// Shared by the clients of one round.
struct Round {
    number: usize,
    address: String,
    ledger: Arc<Mutex<Ledger>>,
    /// Set just before the server is killed.
    killed: AtomicBool,
    /// Clients connected with their objects open (or failed to).
    ready: AtomicUsize,
}

impl Round {
    /// Runs a client's setup (connect, open its object) and counts the client ready
    /// either way; `None` if it failed (recorded like any other stop).
    async fn ready<T>(&self, who: &str, setup: impl std::future::Future<Output = Result<T, Error>>) -> Option<T> {
        let result = setup.await;
        self.ready.fetch_add(1, Ordering::AcqRel);
        result.map_err(|e| self.stopped(who, e)).ok()
    }

    /// Records why a client stopped: fine after the kill if it is a crash's error.
    fn stopped(&self, who: &str, e: Error) {
        if !(self.killed.load(Ordering::Acquire) && crash_error(&e)) {
            let killed = if self.killed.load(Ordering::Acquire) { "after" } else { "before" };
            lock(&self.ledger).unexpected.push(format!("round {}: {who} ({killed} the kill): {e}", self.number));
        }
    }
}

async fn connect(address: &str) -> agora_client::Result<Manager> {
    Manager::connect_with(address, AUTHKEY, ManagerOptions::new().reconnect(false)).await
}

/// Entries in the dict before the first round: enough that a snapshot reads it out
/// after its pause (a capture) rather than while changes wait, so crashes land during
/// read-outs too.
const SEED_ENTRIES: i64 = 6000;

async fn seed_the_dict(address: &str, ledger: &Mutex<Ledger>) {
    let m = connect(address).await.expect("the seeder connects");
    let dict = m.dict::<String, i64>(DICT).await.expect("the dict");
    // One `update` call: one log record, one fsync.
    let seed: Vec<(String, i64)> = (0..SEED_ENTRIES).map(|n| (format!("seed-{n}"), n)).collect();
    dict.update(seed.iter().map(|(k, v)| (k, v))).await.expect("the seed entries");
    let mut l = lock(ledger);
    l.dict_sent.extend(seed.iter().cloned());
    l.dict_acked.extend(seed);
}

async fn dict_writer(round: Arc<Round>, index: usize) {
    let who = format!("dict writer {index}");
    let setup = async {
        let m = connect(&round.address).await?;
        let dict = m.dict::<String, i64>(DICT).await?;
        Ok::<_, Error>((m, dict))
    };
    let Some((_m, dict)) = round.ready(&who, setup).await else { return };
    for n in 1.. {
        let key = format!("w{}x{index}-{n}", round.number);
        lock(&round.ledger).dict_sent.insert(key.clone(), n);
        match dict.insert(&key, &n).await {
            Ok(()) => {
                lock(&round.ledger).dict_acked.insert(key, n);
            }
            Err(e) => return round.stopped(&who, e),
        }
    }
}

async fn adder(round: Arc<Round>, index: usize) {
    let who = format!("adder {index}");
    let setup = async {
        let m = connect(&round.address).await?;
        let counter = m.value::<i64>(COUNTER, &0).await?;
        Ok::<_, Error>((m, counter))
    };
    let Some((_m, counter)) = round.ready(&who, setup).await else { return };
    loop {
        lock(&round.ledger).adds_sent += 1;
        match counter.add(&1).await {
            Ok(value) => {
                let mut l = lock(&round.ledger);
                l.adds_acked += 1;
                l.max_add_answer = l.max_add_answer.max(value);
            }
            Err(e) => return round.stopped(&who, e),
        }
    }
}

async fn producer(round: Arc<Round>, index: usize) {
    let who = format!("producer {index}");
    let setup = async {
        let m = connect(&round.address).await?;
        let queue = m.queue::<String>(QUEUE, 0).await?;
        Ok::<_, Error>((m, queue))
    };
    let Some((_m, queue)) = round.ready(&who, setup).await else { return };
    for n in 1.. {
        let item = format!("r{}p{index}-{n}", round.number);
        lock(&round.ledger).puts_sent.insert(item.clone());
        match queue.put(&item).await {
            Ok(()) => {
                lock(&round.ledger).puts_acked.insert(item);
            }
            Err(e) => return round.stopped(&who, e),
        }
    }
}

async fn consumer(round: Arc<Round>, index: usize) {
    let who = format!("consumer {index}");
    let setup = async {
        let m = connect(&round.address).await?;
        let queue = m.queue::<String>(QUEUE, 0).await?;
        Ok::<_, Error>((m, queue))
    };
    let Some((_m, queue)) = round.ready(&who, setup).await else { return };
    loop {
        let leased = match queue.get_leased(Duration::from_secs(3600)).await {
            Ok(leased) => leased,
            Err(e) => return round.stopped(&who, e),
        };
        let item = leased.item().clone();
        {
            let mut l = lock(&round.ledger);
            l.deliveries += 1;
            if !l.received.insert(item.clone()) {
                l.redeliveries += 1;
            }
            if l.consumer_acked.contains(&item) || l.consumed_unconfirmed.contains(&item) {
                let what = format!("round {}: item {item} handed out again after it was acked", round.number);
                l.violations.push(what);
            }
            if !l.puts_sent.contains(&item) {
                l.violations.push(format!("round {}: item {item} handed out but never put", round.number));
            }
            l.ack_unconfirmed.insert(item.clone());
        }
        match leased.ack().await {
            Ok(()) => {
                let mut l = lock(&round.ledger);
                l.ack_unconfirmed.remove(&item);
                l.consumer_acked.insert(item);
            }
            Err(e) => return round.stopped(&who, e),
        }
    }
}

async fn locker(round: Arc<Round>, index: usize) {
    let who = format!("locker {index}");
    let setup = async {
        let m = connect(&round.address).await?;
        let lock = m.lock(LOCK).await?;
        Ok::<_, Error>((m, lock))
    };
    let Some((_m, shared_lock)) = round.ready(&who, setup).await else { return };
    loop {
        let guard = match shared_lock.acquire().await {
            Ok(guard) => guard,
            Err(e) => return round.stopped(&who, e),
        };
        {
            // Recorded before the release, so the next grant is recorded after it.
            let mut l = lock(&round.ledger);
            l.tokens.push(guard.token());
            l.lock_grants += 1;
        }
        if let Err(e) = guard.release().await {
            return round.stopped(&who, e);
        }
    }
}

/// One test: a fresh data dir, `rounds` rounds of load + SIGKILL + restart + check.
fn crash_test(fsync: &str, rounds: usize) {
    agora_tests::agora_bin(); // built before the clock starts
    let started = Instant::now();
    let (mut rng, seed) = Rng::seeded();
    let scratch = tempfile::tempdir().expect("temp dir");
    let data_dir = scratch.path().join("data");
    let address = format!("unix:{}", scratch.path().join("agora.sock").display());
    let options = ServerOptions {
        args: vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--fsync".into(),
            fsync.into(),
            // Small, so that snapshots (and crashes during them) happen under load too.
            "--snapshot-after".into(),
            "64KiB".into(),
        ],
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = Server::start_at(&address, options.clone());
    rt.block_on(seed_the_dict(&address, &ledger));
    let mut kills = 0;
    for number in 1..=rounds {
        let round = Arc::new(Round {
            number,
            address: address.clone(),
            ledger: ledger.clone(),
            killed: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
        });
        let delay = Duration::from_millis(rng.in_range(KILL_AFTER_MS));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..DICT_WRITERS {
                tasks.push(tokio::spawn(dict_writer(round.clone(), i)));
            }
            for i in 0..ADDERS {
                tasks.push(tokio::spawn(adder(round.clone(), i)));
            }
            for i in 0..PRODUCERS {
                tasks.push(tokio::spawn(producer(round.clone(), i)));
            }
            for i in 0..CONSUMERS {
                tasks.push(tokio::spawn(consumer(round.clone(), i)));
            }
            for i in 0..LOCKERS {
                tasks.push(tokio::spawn(locker(round.clone(), i)));
            }
            let deadline = Instant::now() + HANG_GUARD;
            while round.ready.load(Ordering::Acquire) < tasks.len() {
                assert!(Instant::now() < deadline, "round {number}: clients did not connect");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(delay).await;
            round.killed.store(true, Ordering::Release);
            server.kill9();
            for task in tasks {
                tokio::time::timeout(HANG_GUARD, task)
                    .await
                    .unwrap_or_else(|_| panic!("round {number}: a client hung after the kill"))
                    .expect("client task panicked");
            }
        });
        kills += 1;
        {
            let log = server.log();
            let mut l = lock(&ledger);
            l.snapshots += log.matches("snapshot written").count();
            l.captures +=
                log.lines().filter(|line| line.contains("snapshot written") && !line.contains("captured=0")).count();
        }
        server = Server::start_at(&address, options.clone());
        if server.log().contains("cutting the log here") {
            lock(&ledger).torn_tails += 1;
        }
        rt.block_on(check(&address, number, &ledger));
        let l = lock(&ledger);
        if !l.unexpected.is_empty() || !l.violations.is_empty() {
            // Stop at the first bad round: later rounds would only repeat it.
            break;
        }
    }
    let l = lock(&ledger);
    eprintln!(
        "crash test summary (fsync {fsync}): {rounds} rounds, {kills} SIGKILLs, seed {seed}, {:.1} s; \
         acked: {} dict writes, {} adds, {} puts, {} consumer acks, {} lock grants; \
         {} deliveries, {} redeliveries ({} leased items back after a crash); \
         {} adds applied without their answer; {} restarts cut a torn tail; {} snapshots written ({} read the dict out after the pause); \
         LOST (acknowledged, missing after restart): {} (dict {}, counter {}, queue {}, fencing tokens {})",
        started.elapsed().as_secs_f64(),
        l.dict_acked.len(),
        l.adds_acked,
        l.puts_acked.len(),
        l.consumer_acked.len(),
        l.lock_grants,
        l.deliveries,
        l.redeliveries,
        l.back_after_crash,
        l.adds_in_doubt_applied,
        l.torn_tails,
        l.snapshots,
        l.captures,
        l.lost_dict + l.lost_adds + l.lost_items + l.token_regressions,
        l.lost_dict,
        l.lost_adds,
        l.lost_items,
        l.token_regressions,
    );
    assert!(l.unexpected.is_empty(), "unexpected client errors (seed {seed}):\n{}", l.unexpected.join("\n"));
    assert!(
        l.violations.is_empty(),
        "the recovered state broke the promise (seed {seed}):\n{}\n--- server log (tail)\n{}",
        l.violations.join("\n"),
        tail(&server.log())
    );
    // Every kind of client got work acknowledged, or the test tested little.
    assert!(l.dict_acked.len() as u64 > 0 && l.adds_acked > 0 && !l.puts_acked.is_empty() && l.lock_grants > 0);
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Reads the restarted server's state through a fresh client and checks it against
/// the ledger; violations go into the ledger.
async fn check(address: &str, number: usize, ledger: &Mutex<Ledger>) {
    let guard = tokio::time::timeout(HANG_GUARD, async {
        let m = connect(address).await.expect("the checker connects");
        let dict: BTreeMap<String, i64> =
            agora_proto::from_value(m.snapshot(DICT).await.expect("the dict is there")).expect("a str → int dict");
        let counter: i64 = match m.snapshot(COUNTER).await.expect("the counter is there") {
            Value::Int(n) => n,
            other => panic!("the counter holds {other:?}"),
        };
        let queue: Vec<String> =
            agora_proto::from_value(m.snapshot(QUEUE).await.expect("the queue is there")).expect("a list of str");
        let lock_proxy = m.lock(LOCK).await.expect("the lock");
        let grant = lock_proxy.try_acquire().await.expect("try_acquire");
        let token = grant.as_ref().map(|g| g.token());
        if let Some(grant) = grant {
            grant.release().await.expect("release");
        }
        (dict, counter, queue, token)
    });
    let (dict, counter, queue, token) = guard.await.expect("the check hung");
    let mut l = lock(ledger);
    let l = &mut *l;
    let mut bad = Vec::new();

    // Dict: every acknowledged write, and nothing never sent.
    let missing: Vec<_> = l.dict_acked.iter().filter(|(k, v)| dict.get(*k) != Some(v)).collect();
    l.lost_dict += missing.len() as u64;
    if !missing.is_empty() {
        let some: Vec<_> = missing.iter().take(5).map(|(k, v)| format!("{k}={v} (found {:?})", dict.get(*k))).collect();
        bad.push(format!("{} acknowledged dict writes missing or wrong, e.g. {}", missing.len(), some.join(", ")));
    }
    if let Some((k, v)) = dict.iter().find(|(k, v)| l.dict_sent.get(*k) != Some(v)) {
        bad.push(format!("dict holds {k}={v}, which no client wrote"));
    }

    // Counter: acked <= value <= sent, and at least what an add answered.
    let floor = l.adds_acked.max(l.max_add_answer as u64);
    if (counter as u64) < floor || counter < 0 {
        l.lost_adds += floor.saturating_sub(counter.max(0) as u64);
        bad.push(format!(
            "counter is {counter}: {} adds were acknowledged, the largest answer was {}",
            l.adds_acked, l.max_add_answer
        ));
    }
    if counter as u64 > l.adds_sent {
        bad.push(format!("counter is {counter}, but only {} adds were sent", l.adds_sent));
    }
    l.adds_in_doubt_applied = (counter.max(0) as u64).saturating_sub(l.adds_acked);

    // Queue: no acknowledged item lost, nothing acked back, no duplicates.
    let in_queue: BTreeSet<String> = queue.iter().cloned().collect();
    if in_queue.len() != queue.len() {
        bad.push(format!("the queue holds duplicates: {} items, {} distinct", queue.len(), in_queue.len()));
    }
    let lost: Vec<&String> = l
        .puts_acked
        .iter()
        .filter(|item| {
            !(in_queue.contains(*item)
                || l.consumer_acked.contains(*item)
                || l.ack_unconfirmed.contains(*item)
                || l.consumed_unconfirmed.contains(*item))
        })
        .collect();
    l.lost_items += lost.len() as u64;
    if !lost.is_empty() {
        bad.push(format!(
            "{} acknowledged puts are neither in the queue nor consumed, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    let back: Vec<&String> =
        in_queue.iter().filter(|i| l.consumer_acked.contains(*i) || l.consumed_unconfirmed.contains(*i)).collect();
    if !back.is_empty() {
        bad.push(format!(
            "{} items the consumer acked are in the queue again, e.g. {:?}",
            back.len(),
            &back[..back.len().min(5)]
        ));
    }
    if let Some(stranger) = in_queue.iter().find(|i| !l.puts_sent.contains(*i)) {
        bad.push(format!("the queue holds {stranger}, which no client put"));
    }
    // Handed out, ack unconfirmed: back in the queue (redelivered later) or consumed.
    for item in std::mem::take(&mut l.ack_unconfirmed) {
        if in_queue.contains(&item) {
            l.back_after_crash += 1;
        } else {
            l.consumed_unconfirmed.insert(item);
        }
    }

    // Lock: free after the restart, its token larger than every token before.
    match token {
        None => bad.push("the lock is still held after the restart".to_owned()),
        Some(token) => {
            let before = l.tokens.iter().copied().max().unwrap_or(0);
            if token <= before {
                l.token_regressions += 1;
                bad.push(format!("the first fencing token after the restart is {token}, not above {before}"));
            }
            l.tokens.push(token);
        }
    }
    if let Some(w) = l.tokens.windows(2).find(|w| w[1] <= w[0]) {
        l.token_regressions += 1;
        bad.push(format!("fencing tokens went from {} to {}", w[0], w[1]));
    }
    l.violations.extend(bad.into_iter().map(|b| format!("after kill {number}: {b}")));
}
