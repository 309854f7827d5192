//! A client process for the synchronization tests: connects with the blocking API
//! (address from argv, authkey from `AGORA_AUTHKEY`), runs one scenario, and reports
//! on stdout, one line at a time (tests read lines as they come).
//!
//! ```text
//! agora-sync-worker ADDRESS incr DICT KEY N LOCK TOKENS   # N lock-protected get/+1/insert of DICT[KEY];
//!                                                          # each grant's token appended to list TOKENS
//! agora-sync-worker ADDRESS hold LOCK RLOCK SEM            # hold all three ("holding"), then sleep
//! agora-sync-worker ADDRESS hold-lock LOCK                 # hold LOCK and poll until a call fails
//! agora-sync-worker ADDRESS produce COND LIST FROM TO      # push FROM..TO to LIST under COND, notify(1) each
//! agora-sync-worker ADDRESS consume COND LIST              # pop LIST's oldest under COND until -1; print each
//! agora-sync-worker ADDRESS barrier NAME PARTIES ROUNDS    # wait ROUNDS times; print "ROUND INDEX"
//! ```

use std::time::Duration;

use agora_client::blocking::Manager;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let authkey = std::env::var("AGORA_AUTHKEY").expect("AGORA_AUTHKEY");
    let manager = Manager::connect(&args[0], authkey.as_bytes()).expect("connect");
    match args[1].as_str() {
        "incr" => {
            let dict = manager.dict::<String, i64>(&args[2]).expect("open dict");
            let key = args[3].clone();
            let n: u64 = args[4].parse().expect("N");
            let lock = manager.lock(&args[5]).expect("open lock");
            let tokens = manager.list::<u64>(&args[6]).expect("open list");
            let mut mine = Vec::new();
            for _ in 0..n {
                let guard = lock.acquire().expect("acquire");
                // A read-modify-write that only the lock makes safe.
                let value = dict.get(&key).expect("get").unwrap_or(0);
                dict.insert(&key, &(value + 1)).expect("insert");
                tokens.push(&guard.token()).expect("push token");
                mine.push(guard.token());
                guard.release().expect("release");
            }
            println!("tokens {}", mine.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
            println!("done");
        }
        "hold" => {
            let lock = manager.lock(&args[2]).expect("open lock");
            let rlock = manager.rlock(&args[3]).expect("open rlock");
            let semaphore = manager.semaphore(&args[4], 1).expect("open semaphore");
            let guards = (
                lock.acquire().expect("lock"),
                rlock.acquire().expect("rlock"),
                rlock.acquire().expect("rlock again"),
                semaphore.acquire().expect("permit"),
            );
            println!("holding {}", guards.0.token());
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "hold-lock" => {
            let lock = manager.lock(&args[2]).expect("open lock");
            let guard = lock.acquire().expect("acquire");
            println!("holding {}", guard.token());
            loop {
                std::thread::sleep(Duration::from_millis(50));
                if let Err(e) = lock.is_locked() {
                    println!("error {e:?}");
                    println!("valid {}", guard.is_valid());
                    println!("connection {:?}", manager.connection_error());
                    println!("release {:?}", guard.release());
                    return;
                }
            }
        }
        "produce" => {
            let condition = manager.condition(&args[2]).expect("open condition");
            let list = manager.list::<i64>(&args[3]).expect("open list");
            let (from, to): (i64, i64) = (args[4].parse().unwrap(), args[5].parse().unwrap());
            for i in from..to {
                let guard = condition.acquire().expect("acquire");
                list.push(&i).expect("push");
                condition.notify(1).expect("notify");
                drop(guard);
            }
            println!("done");
        }
        "consume" => {
            let condition = manager.condition(&args[2]).expect("open condition");
            let list = manager.list::<i64>(&args[3]).expect("open list");
            loop {
                let guard = condition.acquire().expect("acquire");
                condition.wait_for(&guard, || Ok(!list.is_empty()?), None).expect("wait_for");
                // First in, first out: the stop signs come after every job.
                let item = list.pop_at(0).expect("pop the oldest job");
                drop(guard);
                if item < 0 {
                    break;
                }
                println!("{item}");
            }
            println!("done");
        }
        "barrier" => {
            let parties: usize = args[3].parse().unwrap();
            let barrier = manager.barrier(&args[2], parties).expect("open barrier");
            let rounds: usize = args[4].parse().unwrap();
            for round in 0..rounds {
                let index = barrier.wait().expect("wait");
                println!("{round} {index}");
            }
            println!("done");
        }
        other => panic!("unknown scenario {other}"),
    }
}
