//! A client process for multi-process tests: connects with the blocking API (address
//! from argv, authkey from `AGORA_AUTHKEY`), runs one scenario, prints a result line.
//!
//! ```text
//! agora-test-client ADDRESS incr DICT KEY N       # N atomic increments of DICT[KEY]
//! agora-test-client ADDRESS append LIST FROM TO   # append FROM..TO to LIST
//! ```

use agora_client::blocking::Manager;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let authkey = std::env::var("AGORA_AUTHKEY").expect("AGORA_AUTHKEY");
    let manager = Manager::connect(&args[0], authkey.as_bytes()).expect("connect");
    match args[1].as_str() {
        "incr" => {
            let dict = manager.dict::<String, i64>(&args[2]).expect("open dict");
            let n: u64 = args[4].parse().expect("N");
            let mut last = 0;
            for _ in 0..n {
                last = dict.increment(&args[3], &1).expect("increment");
            }
            println!("done {last}");
        }
        "append" => {
            let list = manager.list::<u64>(&args[2]).expect("open list");
            let (from, to): (u64, u64) = (args[3].parse().unwrap(), args[4].parse().unwrap());
            for i in from..to {
                list.push(&i).expect("push");
            }
            println!("done");
        }
        other => panic!("unknown scenario {other}"),
    }
}
