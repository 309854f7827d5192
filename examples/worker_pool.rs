//! A worker pool: fan tasks out to worker processes, fan their results back in.
//!
//! What Python does with a `Manager().Queue()` for tasks and another for results
//! shared by `Process` workers. The program starts an embedded manager, puts every
//! task on the `tasks` queue, shuts that queue down (workers then stop once it is
//! empty), runs itself four times as a worker process, and collects one result per
//! task from the `results` queue. Tasks and results are plain serde structs.
//!
//! ```text
//! cargo run --example worker_pool
//! ```

use std::collections::BTreeMap;
use std::error::Error;

use agora::embedded::blocking::EmbeddedManager;
use agora_client::blocking::Manager;
use serde::{Deserialize, Serialize};

const WORKERS: usize = 4;
const TASKS: u64 = 40;

/// Count the primes below `limit`.
#[derive(Debug, Serialize, Deserialize)]
struct Task {
    id: u64,
    limit: u64,
}

/// How many primes there are below a task's limit, and who counted them.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    id: u64,
    primes: u64,
    worker: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return worker();
    }

    let manager = EmbeddedManager::start()?;
    let tasks = manager.queue::<Task>("tasks", 0)?;
    let results = manager.queue::<Outcome>("results", 0)?;

    // Fan out: every task on the queue, then shut it down so workers stop when it is empty.
    for id in 0..TASKS {
        tasks.put(&Task { id, limit: 1_000 + id * 500 })?;
    }
    tasks.shutdown(false)?;
    let me = std::env::current_exe()?;
    let workers = (0..WORKERS).map(|_| manager.command(&me).arg("worker").spawn()).collect::<Result<Vec<_>, _>>()?;

    // Fan in: one result per task, in whatever order they finish.
    let mut by_worker = BTreeMap::<u32, u64>::new();
    let mut primes = BTreeMap::new();
    for _ in 0..TASKS {
        let outcome = results.get()?;
        *by_worker.entry(outcome.worker).or_default() += 1;
        primes.insert(outcome.id, outcome.primes);
    }
    for mut worker in workers {
        if !worker.wait()?.success() {
            return Err("a worker failed".into());
        }
    }

    println!("{} results from {} workers: {by_worker:?} tasks per worker pid", primes.len(), by_worker.len());
    println!("primes below 1000: {}, below {}: {}", primes[&0], 1_000 + (TASKS - 1) * 500, primes[&(TASKS - 1)]);
    manager.shutdown();
    if primes.len() as u64 != TASKS || primes[&0] != 168 {
        return Err("wrong results".into());
    }
    Ok(())
}

/// One worker process: take tasks until the queue is shut down and empty.
fn worker() -> Result<(), Box<dyn Error>> {
    let manager = Manager::from_env()?;
    let tasks = manager.queue::<Task>("tasks", 0)?;
    let results = manager.queue::<Outcome>("results", 0)?;
    for task in tasks.iter() {
        let task = task?;
        let primes = (2..task.limit).filter(|&n| is_prime(n)).count() as u64;
        results.put(&Outcome { id: task.id, primes, worker: std::process::id() })?;
    }
    Ok(())
}

fn is_prime(n: u64) -> bool {
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}
