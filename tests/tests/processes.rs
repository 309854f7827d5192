//! Several client processes against one real server.

use std::process::{Command, Stdio};

use agora_tests::Server;

fn worker(server: &Server, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_agora-test-client"))
        .arg(&server.address)
        .args(args)
        .env("AGORA_AUTHKEY", std::str::from_utf8(&server.authkey).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

fn finish(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("worker output");
    assert!(out.status.success(), "worker failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn four_processes_increment(server: Server) {
    let workers: Vec<_> = (0..4).map(|_| worker(&server, &["incr", "totals", "hits", "1000"])).collect();
    let lasts: Vec<i64> =
        workers.into_iter().map(|w| finish(w).trim().strip_prefix("done ").unwrap().parse().unwrap()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let total = rt.block_on(async {
        let m = server.client().await;
        m.dict::<String, i64>("totals").await.unwrap().get(&"hits".into()).await.unwrap()
    });
    assert_eq!(total, Some(4000), "no increment lost or doubled");
    assert!(lasts.contains(&4000), "the last increment saw the final count: {lasts:?}");
}

#[test]
fn four_processes_times_1000_increments_over_tcp() {
    four_processes_increment(Server::start());
}

#[test]
fn four_processes_times_1000_increments_over_unix_socket() {
    four_processes_increment(Server::start_unix());
}

#[test]
fn concurrent_appends_from_processes_are_all_kept() {
    let server = Server::start();
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            let (from, to) = ((i * 250).to_string(), ((i + 1) * 250).to_string());
            worker(&server, &["append", "items", &from, &to])
        })
        .collect();
    for w in workers {
        finish(w);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut items =
        rt.block_on(async { server.client().await.list::<u64>("items").await.unwrap().to_vec().await.unwrap() });
    // Each process's own appends stay in its order…
    for i in 0..4u64 {
        let mine: Vec<u64> = items.iter().copied().filter(|x| x / 250 == i).collect();
        assert_eq!(mine, (i * 250..(i + 1) * 250).collect::<Vec<_>>());
    }
    // …and every item is there exactly once.
    items.sort_unstable();
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
}
