//! The programs in `examples/` run, and print what they promise.
//!
//! `cargo test --workspace` compiles them (they belong to the `agora-examples`
//! package); these tests run the binaries with a time limit and check their output.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agora_tests::{Server, HANG_GUARD};

fn example(name: &str) -> Command {
    let mut cmd = Command::new(agora_tests::example_binary(name));
    // Whatever this environment says about servers is not the examples' business.
    for var in ["AGORA_ADDRESS", "AGORA_AUTHKEY", "AGORA_AUTHKEY_FILE"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Waits for `child` with a time limit (killing it past the limit); returns its output.
fn finish(mut child: Child, name: &str) -> Output {
    let deadline = Instant::now() + HANG_GUARD;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{name} did not finish in {HANG_GUARD:?}:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(name: &str) -> String {
    let child = example(name).spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    String::from_utf8(finish(child, name).stdout).unwrap()
}

#[test]
fn shared_counter_loses_no_increment_across_processes() {
    let out = run("shared_counter");
    assert_eq!(out.trim(), "counter = 1000 (expected 1000)");
}

#[test]
fn pipeline_drains_through_joinable_queues() {
    let out = run("pipeline");
    assert_eq!(out.trim(), "sum of squares 1..=100 = 338350 (expected 338350)");
}

#[test]
fn worker_pool_fans_out_and_in() {
    let out = run("worker_pool");
    assert!(out.starts_with("40 results from "), "{out}");
    assert!(out.contains("primes below 1000: 168, below 20500: 2313"), "{out}");
}

#[test]
fn master_and_workers_as_separate_processes_against_agora_serve() {
    let server = Server::start();
    let key = String::from_utf8(server.authkey.clone()).unwrap();
    let against_server = |args: &[&str]| {
        let mut cmd = example("master_worker");
        cmd.args(args).env("AGORA_ADDRESS", &server.address).env("AGORA_AUTHKEY", &key);
        cmd.spawn().expect("spawn master_worker")
    };

    // Workers first, as on hosts that come up before the work does; wait until each listens.
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut worker = against_server(&["worker"]);
        let mut stdout = BufReader::new(worker.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("waiting for jobs"), "{line}");
        workers.push((worker, stdout));
    }

    let master = finish(against_server(&["master", "60"]), "master");
    let out = String::from_utf8(master.stdout).unwrap();
    assert!(out.contains("master: 60 jobs queued"), "{out}");
    assert!(out.contains("master: 60 results, "), "{out}");

    let mut total = 0;
    for (worker, mut stdout) in workers {
        finish(worker, "worker");
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let done: u64 = line.split(": ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
        total += done;
    }
    assert_eq!(total, 60, "every job done exactly once");
}
