//! `--max-memory`: growth past the limit is refused with a clear error, reads, deletes
//! and everything that shrinks state keep working, writes come back once memory is
//! freed, and freed memory goes back to the system.

mod python_support;

use std::time::{Duration, Instant};

use agora_client::proto::Value;
use agora_client::{Error, Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, HANG_GUARD};
use python_support::{command, for_each_python, run};

const LIMIT_MIB: u64 = 128;
const ITEM: usize = 8 << 20;

fn limited() -> Server {
    Server::start_with(ServerOptions {
        args: vec!["--max-memory".into(), format!("{LIMIT_MIB}MiB")],
        ..Default::default()
    })
}

fn item(i: usize) -> Value {
    Value::Bytes(vec![i as u8; ITEM])
}

/// Polls `check` until it holds, failing after the hang guard.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {HANG_GUARD:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 8 MiB puts fill the server to its limit and are then refused, changing nothing;
/// reads, locks and pops still work; after a drain, writes are accepted again and
/// the resident size falls.
#[tokio::test]
async fn growth_is_refused_at_the_limit_and_reads_are_served() {
    let server = limited();
    let m =
        Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false)).await.unwrap();
    let big = m.dict::<String, Value>("big").await.unwrap();
    let queue = m.queue::<Value>("q", 0).await.unwrap();
    let lock = m.lock("l").await.unwrap();

    let mut stored = 0;
    let refused = loop {
        assert!(stored < 64, "{stored} items of 8 MiB stored under a {LIMIT_MIB} MiB limit");
        match big.insert(&format!("k{stored}"), &item(stored)).await {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
    };
    let Error::MemoryLimit(message) = &refused else { panic!("refused with {refused:?}") };
    assert!(message.contains("--max-memory") && message.contains("reads, deletes"), "{message}");
    assert!(stored >= 8, "only {stored} items of 8 MiB fit under {LIMIT_MIB} MiB");
    let stats = m.stats().await.unwrap();
    let memory = stats.memory.expect("memory stats");
    assert_eq!(memory.limit, Some(LIMIT_MIB << 20));
    assert!(memory.refused >= 1);
    assert!(memory.in_use <= (LIMIT_MIB + 16) << 20, "{} bytes in use", memory.in_use);

    // The refused put changed nothing; every other kind of growth is refused too.
    assert_eq!(big.len().await.unwrap(), stored);
    assert!(!big.contains_key(&format!("k{stored}")).await.unwrap());
    // At the limit the gate may count the last write twice until its next sample, so
    // one more write can fit: each kind of growth is refused within a few tries.
    let mut queued = 0;
    let refused = loop {
        match queue.put(&item(0)).await {
            Ok(()) if queued < 3 => queued += 1,
            other => break other,
        }
    };
    assert!(matches!(refused, Err(Error::MemoryLimit(_))), "a queue put is growth: {refused:?}");
    let mut made = Vec::new();
    let refused = loop {
        match m.new_list::<Value>(&[item(0)]).await {
            Ok(list) if made.len() < 3 => made.push(list),
            other => break other.map(drop),
        }
    };
    assert!(matches!(refused, Err(Error::MemoryLimit(_))), "a new object is growth: {refused:?}");
    drop(made);
    for _ in 0..queued {
        queue.get().await.unwrap();
    }
    // Reads, existing objects and locks work.
    assert_eq!(big.get(&"k0".to_owned()).await.unwrap(), Some(item(0)));
    assert_eq!(big.get(&format!("k{}", stored - 1)).await.unwrap(), Some(item(stored - 1)));
    lock.acquire().await.unwrap().release().await.unwrap();
    let peak_resident = m.stats().await.unwrap().memory_bytes;

    // A drain frees the memory: writes come back, and the resident size falls.
    for i in 0..stored {
        assert_eq!(big.remove(&format!("k{i}")).await.unwrap(), Some(item(i)));
    }
    eventually("a put after the drain", async || big.insert(&"again".to_owned(), &item(1)).await.is_ok()).await;
    big.remove(&"again".to_owned()).await.unwrap();
    eventually("the resident size falling after the drain", async || {
        m.stats().await.unwrap().memory_bytes < peak_resident / 2
    })
    .await;
}

/// A stock CPython client sees the refusal as `MemoryError`, and its reads still work.
#[test]
fn cpython_clients_get_memory_error() {
    for_each_python(|python| {
        let server = limited();
        let done = run(command(python, "memory_limit.py", &[&server.address], &server.authkey), HANG_GUARD);
        assert!(done.ok() && done.stdout.contains("OK memory_limit"), "{}", done.transcript());
    });
}

/// Values a stock CPython client stored (its connection runs on a thread of its own)
/// and a native client then replaced leave no memory stranded: the new values reuse
/// what the old ones freed, because `agora serve` keeps one malloc arena per worker
/// (`agora::allocator::share_arenas`). With an arena per thread, glibc's default, the
/// resident size grew by all of the replaced values (24 MiB here).
#[test]
fn values_replaced_across_threads_reuse_their_memory() {
    const COUNT: usize = 24;
    const MIB: u64 = 1 << 20;
    for_each_python(|python| {
        let server = Server::start_with(ServerOptions {
            args: vec!["--expose".into(), "stored=dict:stored".into()],
            ..Default::default()
        });
        let count = COUNT.to_string();
        let done = run(command(python, "store_big_values.py", &[&server.address, &count], &server.authkey), HANG_GUARD);
        assert!(done.ok() && done.stdout.contains("OK store_big_values"), "{}", done.transcript());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let m = server.client().await;
            let stored = m.dict::<String, String>("stored").await.unwrap();
            assert_eq!(stored.len().await.unwrap(), COUNT);
            let before = server.resident_bytes();
            for i in 0..COUNT {
                stored.insert(&format!("k{i}"), &"n".repeat(MIB as usize)).await.unwrap();
            }
            let after = server.resident_bytes();
            assert!(
                after < before + COUNT as u64 * MIB / 2,
                "the replaced values' memory was not reused: resident {before} -> {after} bytes"
            );
            assert_eq!(stored.get(&"k0".to_owned()).await.unwrap().map(|v| v.len()), Some(MIB as usize));
        });
    });
}

/// The CPython dialect gives back a reply buffer a big reply grew, as the native one
/// does (`big_values.rs`): twelve stock clients, each on a connection of its own, read a
/// 4 MiB value, and the server's memory in use grows by their buffers; after some small
/// calls each, it falls back (the script checks both with `agora stats`; with the
/// buffers kept the test failed).
#[test]
fn cpython_connections_give_back_buffers_a_big_reply_grew() {
    const BIG: usize = 4 << 20;
    for_each_python(|python| {
        let server = Server::start_with(ServerOptions {
            args: vec!["--expose".into(), "stored=dict:stored".into()],
            ..Default::default()
        });
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let m = server.client().await;
            m.dict::<String, String>("stored").await.unwrap().insert(&"v".to_owned(), &"v".repeat(BIG)).await.unwrap();
        });
        let (agora, size) = (agora_tests::agora_bin(), BIG.to_string());
        let args = [server.address.as_str(), agora.to_str().unwrap(), "12", size.as_str()];
        let done = run(command(python, "big_replies.py", &args, &server.authkey), HANG_GUARD);
        assert!(done.ok() && done.stdout.contains("OK big_replies"), "{}", done.transcript());
    });
}

/// A limit too small for the server itself is refused at start, with the minimum.
#[test]
fn a_tiny_limit_is_refused_at_start() {
    let out = std::process::Command::new(agora_tests::agora_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--max-memory", "1MiB"])
        .env("AGORA_AUTHKEY", "k")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too small") && stderr.contains("16MiB"), "{stderr}");
}

/// Big objects that go give their memory back: a dict deleted, a dict cleared and a
/// list deleted, each of 60,000 items of 100 bytes (their drops run on the server's
/// `agora-reclaim` thread, not on the worker serving the call). Memory in use falls
/// back to within an eighth of what they took (with the two deleted ones kept, a
/// quarter stayed), and the cleared dict works on.
#[tokio::test]
async fn big_objects_deleted_or_cleared_give_their_memory_back() {
    const ITEMS: usize = 60_000;
    let server = Server::start();
    let m = server.client().await;
    let in_use = async || m.stats().await.unwrap().memory.expect("memory stats").in_use;
    let base = in_use().await;
    let value = "v".repeat(100);
    let gone = m.dict::<String, String>("gone").await.unwrap();
    let cleared = m.dict::<String, String>("cleared").await.unwrap();
    let list = m.list::<String>("list").await.unwrap();
    let keys: Vec<String> = (0..ITEMS).map(|i| format!("key {i}")).collect();
    for chunk in keys.chunks(5_000) {
        gone.update(chunk.iter().map(|k| (k, &value))).await.unwrap();
        cleared.update(chunk.iter().map(|k| (k, &value))).await.unwrap();
        list.extend(std::iter::repeat_n(&value, chunk.len())).await.unwrap();
    }
    assert_eq!((gone.len().await.unwrap(), list.len().await.unwrap()), (ITEMS, ITEMS));
    // Memory in use is sampled every 100 ms or so: wait for a sample after the fill.
    eventually("the fill's memory counted", async || in_use().await > base + 2 * 100 * ITEMS as u64).await;
    let full = in_use().await;

    // Their handles given back first: until then this session keeps them alive.
    drop((gone, list));
    m.delete("gone").await.unwrap();
    cleared.clear().await.unwrap();
    m.delete("list").await.unwrap();
    assert!(cleared.is_empty().await.unwrap());
    cleared.insert(&"again".to_owned(), &value).await.unwrap();
    assert_eq!(cleared.get(&"again".to_owned()).await.unwrap().as_deref(), Some(value.as_str()));
    eventually("the memory of the objects that went given back", async || in_use().await < base + (full - base) / 8)
        .await;
    assert!(threads_of(server.pid()).contains(&"agora-reclaim".to_owned()), "{:?}", threads_of(server.pid()));
}

/// The names of a process's threads (Linux: `/proc/PID/task/*/comm`).
fn threads_of(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}
