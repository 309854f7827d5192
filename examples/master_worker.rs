//! A distributed master/worker: workers are separate processes, possibly on other
//! hosts, coordinating through a standalone `agora serve`.
//!
//! The master puts jobs on the `jobs` queue and collects results from `results`;
//! workers take jobs with a *lease*: a job a worker took is handed to another worker
//! if the first one dies (or stops renewing) before it acknowledges it, so a crashed
//! host loses no work. When every result is in, the master shuts the `jobs` queue
//! down, and the workers stop.
//!
//! Every process finds the server through its environment (`AGORA_ADDRESS`, and
//! `AGORA_AUTHKEY` or `AGORA_AUTHKEY_FILE`):
//!
//! ```text
//! # host A: the server
//! agora serve --listen 0.0.0.0:50000 --authkey-file /etc/agora/authkey
//!
//! # hosts B and C: workers (as many as you like, started in any order)
//! AGORA_ADDRESS=hostA:50000 AGORA_AUTHKEY_FILE=/etc/agora/authkey \
//!     cargo run --example master_worker -- worker
//!
//! # anywhere: the master, with 100 jobs
//! AGORA_ADDRESS=hostA:50000 AGORA_AUTHKEY_FILE=/etc/agora/authkey \
//!     cargo run --example master_worker -- master 100
//! ```

use std::collections::BTreeSet;
use std::error::Error;
use std::time::Duration;

use agora_client::Manager;
use serde::{Deserialize, Serialize};

/// How long a worker may hold a job before it goes to another worker.
const LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    id: u64,
    text: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    id: u64,
    words: usize,
    worker: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("master") => master(args.get(1).map_or(Ok(100), |n| n.parse())?).await,
        Some("worker") => worker().await,
        _ => Err("usage: master_worker master [JOBS] | master_worker worker".into()),
    }
}

async fn master(count: u64) -> Result<(), Box<dyn Error>> {
    let manager = Manager::from_env().await?;
    let jobs = manager.queue::<Job>("jobs", 0).await?;
    let results = manager.queue::<Done>("results", 0).await?;
    for id in 0..count {
        jobs.put(&Job { id, text: "lorem ipsum dolor sit amet ".repeat(1 + id as usize % 7) }).await?;
    }
    println!("master: {count} jobs queued");

    let (mut seen, mut words, mut workers) = (BTreeSet::new(), 0, BTreeSet::new());
    while (seen.len() as u64) < count {
        let done = results.get().await?;
        // A job redelivered after its worker died may be done twice: count it once.
        if seen.insert(done.id) {
            words += done.words;
            workers.insert(done.worker);
        }
    }
    jobs.shutdown(false).await?; // the workers stop once it is empty
    println!("master: {count} results, {words} words, from {} workers", workers.len());
    // Leave nothing behind for the next run.
    manager.delete("jobs").await?;
    manager.delete("results").await?;
    Ok(())
}

async fn worker() -> Result<(), Box<dyn Error>> {
    let manager = Manager::from_env().await?;
    let jobs = manager.queue::<Job>("jobs", 0).await?;
    let results = manager.queue::<Done>("results", 0).await?;
    let me = format!("{}:{}", hostname(), std::process::id());
    println!("worker {me}: waiting for jobs");
    let mut done = 0;
    loop {
        let job = match jobs.get_leased(LEASE).await {
            Ok(job) => job,
            // The master shut the queue down: no more work.
            Err(agora_client::Error::QueueShutDown) | Err(agora_client::Error::NoSuchObject(_)) => break,
            Err(e) => return Err(e.into()),
        };
        let words = job.item().text.split_whitespace().count();
        results.put(&Done { id: job.item().id, words, worker: me.clone() }).await?;
        // Only now is the job gone for good. The master may have seen this result and
        // deleted the queue already: then there is nothing left to ack.
        match job.ack().await {
            Ok(()) | Err(agora_client::Error::NoSuchObject(_)) => {}
            Err(e) => return Err(e.into()),
        }
        done += 1;
    }
    println!("worker {me}: {done} jobs done");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into())
}
