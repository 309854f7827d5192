//! A shared counter guarded by a Lock across child processes.
//!
//! Python's classic: `with lock: counter.value += 1` in several processes sharing a
//! `Manager()`. The program starts an embedded manager, then runs itself again as
//! four worker processes (`shared_counter worker`). Each worker finds the manager
//! through its environment — the parent's `command()` put the address and the authkey
//! there, never on the command line — and increments the counter, each
//! read-modify-write under the shared lock, so no increment is lost.
//!
//! ```text
//! cargo run --example shared_counter
//! ```
//!
//! (For a plain counter, `counter.add(&1)` is atomic on the server and needs no lock;
//! the lock is here to guard a read-modify-write, as it would any critical section.)

use std::error::Error;
use std::process::ExitCode;

use agora::embedded::blocking::EmbeddedManager;
use agora_client::blocking::Manager;

const WORKERS: i64 = 4;
const ROUNDS: i64 = 250;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        worker()?;
        return Ok(ExitCode::SUCCESS);
    }

    let manager = EmbeddedManager::start()?;
    let counter = manager.value::<i64>("counter", &0)?;
    let me = std::env::current_exe()?;
    let workers = (0..WORKERS).map(|_| manager.command(&me).arg("worker").spawn()).collect::<Result<Vec<_>, _>>()?;
    for mut worker in workers {
        if !worker.wait()?.success() {
            return Err("a worker failed".into());
        }
    }

    let total = counter.get()?;
    println!("counter = {total} (expected {})", WORKERS * ROUNDS);
    manager.shutdown();
    Ok(if total == WORKERS * ROUNDS { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One worker process: `ROUNDS` increments, each under the lock.
fn worker() -> Result<(), Box<dyn Error>> {
    let manager = Manager::from_env()?;
    let lock = manager.lock("counter-lock")?;
    let counter = manager.value::<i64>("counter", &0)?;
    for _ in 0..ROUNDS {
        // Released when the guard drops — or by the server, if this process dies.
        let _guard = lock.acquire()?;
        let n = counter.get()?;
        counter.set(&(n + 1))?;
    }
    Ok(())
}
