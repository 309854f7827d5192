//! A queue client process for multi-process tests and benchmarks: address from argv,
//! authkey from `AGORA_AUTHKEY`; runs one scenario and prints what it did, one record
//! per line (stdout is line buffered, so a killed worker leaves whole lines).
//!
//! ```text
//! agora-queue-worker ADDRESS produce QUEUE MAXSIZE FROM TO INFLIGHT
//!     put FROM..TO on the queue (made with MAXSIZE if new), INFLIGHT puts at once;
//!     prints `done N`
//! agora-queue-worker ADDRESS consume QUEUE MAXSIZE INFLIGHT
//!     get until the queue is shut down, INFLIGHT gets at once; prints every item
//!     received (`item X`), then `done N`
//! agora-queue-worker ADDRESS lease-consume QUEUE LEASE_MS SEED
//!     get_leased one item at a time until the queue is shut down; prints
//!     `lease X RECEIPT` as soon as it holds a lease, works 0–3 ms (1 item in 150:
//!     twice LEASE_MS, so its lease runs out), then acks and prints `acked X RECEIPT`
//!     or `ackfail X RECEIPT`; finally `done`
//! agora-queue-worker ADDRESS echo IN OUT
//!     get from IN and put what came on OUT, one at a time, until IN is shut down;
//!     prints `done N` (the benchmarks' other process)
//! ```

use std::time::Duration;

use agora_client::{Error, Manager};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let authkey = std::env::var("AGORA_AUTHKEY").expect("AGORA_AUTHKEY");
    let manager = Manager::connect(&args[0], authkey.as_bytes()).await.expect("connect");
    let arg = |i: usize| -> u64 { args[i].parse().expect("a number") };
    match args[1].as_str() {
        "produce" => produce(&manager, &args[2], arg(3), arg(4), arg(5), arg(6)).await,
        "consume" => consume(&manager, &args[2], arg(3), arg(4)).await,
        "echo" => echo(&manager, &args[2], &args[3]).await,
        "lease-consume" => {
            // The blocking API, from a thread outside the runtime.
            drop(manager);
            let (address, name, lease, seed) = (args[0].clone(), args[2].clone(), arg(3), arg(4));
            tokio::task::spawn_blocking(move || lease_consume(&address, &authkey, &name, lease, seed))
                .await
                .expect("lease consumer");
        }
        other => panic!("unknown scenario {other}"),
    }
}

async fn produce(manager: &Manager, name: &str, maxsize: u64, from: u64, to: u64, inflight: u64) {
    let queue = manager.queue::<u64>(name, maxsize as usize).await.expect("open queue");
    let tasks: Vec<_> = (0..inflight)
        .map(|k| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut item = from + k;
                while item < to {
                    queue.put(&item).await.expect("put");
                    item += inflight;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("producer task");
    }
    println!("done {}", to - from);
}

async fn consume(manager: &Manager, name: &str, maxsize: u64, inflight: u64) {
    let queue = manager.queue::<u64>(name, maxsize as usize).await.expect("open queue");
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match queue.get().await {
                        Ok(item) => got.push(item),
                        Err(Error::QueueShutDown) => return got,
                        Err(e) => panic!("get: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut out = String::new();
    let mut n = 0;
    for task in tasks {
        for item in task.await.expect("consumer task") {
            out.push_str(&format!("item {item}\n"));
            n += 1;
        }
    }
    print!("{out}");
    println!("done {n}");
}

async fn echo(manager: &Manager, from: &str, to: &str) {
    let (from, to) =
        (manager.queue::<u64>(from, 0).await.expect("open"), manager.queue::<u64>(to, 0).await.expect("open"));
    let mut n = 0;
    loop {
        match from.get().await {
            Ok(item) => to.put(&item).await.expect("put"),
            Err(Error::QueueShutDown) => break,
            Err(e) => panic!("get: {e}"),
        }
        n += 1;
    }
    println!("done {n}");
}

fn lease_consume(address: &str, authkey: &str, name: &str, lease_ms: u64, seed: u64) {
    let manager = agora_client::blocking::Manager::connect(address, authkey.as_bytes()).expect("connect");
    let queue = manager.joinable_queue::<u64>(name, 0).expect("open queue");
    let lease = Duration::from_millis(lease_ms);
    let mut rng = seed | 1;
    loop {
        let leased = match queue.get_leased(lease) {
            Ok(leased) => leased,
            Err(Error::QueueShutDown) => break,
            Err(e) => panic!("get_leased: {e}"),
        };
        let (item, receipt) = (*leased.item(), leased.receipt());
        println!("lease {item} {receipt}");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let work = if rng % 150 == 0 { Duration::from_millis(2 * lease_ms) } else { Duration::from_micros(rng % 3000) };
        std::thread::sleep(work);
        match leased.ack() {
            Ok(()) => println!("acked {item} {receipt}"),
            Err(Error::InvalidValue(_)) => println!("ackfail {item} {receipt}"),
            Err(e) => panic!("ack: {e}"),
        }
    }
    println!("done");
}
