//! The operator's subcommands against a running server: output and exit codes.

use std::process::{Command, Output};

use agora_tests::{agora_bin, Server};

fn agora(server: &Server, authkey: &str, args: &[&str]) -> Output {
    Command::new(agora_bin())
        .args(args)
        .args(["--address", &server.address])
        .env("AGORA_AUTHKEY", authkey)
        .env_remove("AGORA_AUTHKEY_FILE")
        .output()
        .expect("run agora")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn key(server: &Server) -> String {
    String::from_utf8(server.authkey.clone()).unwrap()
}

#[tokio::test]
async fn ping_stats_ls_get_del() {
    let server = Server::start();
    let m = server.client().await;
    let d = m.dict::<String, i64>("scores").await.unwrap();
    d.insert(&"alice".into(), &3).await.unwrap();
    m.list::<String>("log").await.unwrap().push(&"x".into()).await.unwrap();

    assert!(ok(agora(&server, &key(&server), &["ping"])).starts_with("pong from agora "));

    let stats = ok(agora(&server, &key(&server), &["stats"]));
    for needle in ["sessions", "named objects  2", "dict", "memory"] {
        assert!(stats.contains(needle), "stats lacks {needle}:\n{stats}");
    }
    let json = ok(agora(&server, &key(&server), &["stats", "--json"]));
    assert!(json.contains("\"named_objects\": 2"), "{json}");

    let ls = ok(agora(&server, &key(&server), &["ls"]));
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("NAME"));
    assert!(lines[1].starts_with("log") && lines[1].contains("list") && lines[1].ends_with('1'), "{ls}");
    assert!(lines[2].starts_with("scores") && lines[2].contains("dict"), "{ls}");

    assert_eq!(ok(agora(&server, &key(&server), &["get", "scores"])).trim(), "{'alice': 3}");

    assert_eq!(ok(agora(&server, &key(&server), &["del", "scores"])).trim(), "deleted scores");
    let missing = agora(&server, &key(&server), &["get", "scores"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no object named 'scores'"));
}

#[test]
fn wrong_authkey_exits_nonzero_with_a_clear_message() {
    let server = Server::start();
    let out = agora(&server, "wrong", &["ping"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
}

#[test]
fn unreachable_server_exits_nonzero() {
    let out = Command::new(agora_bin())
        .args(["ping", "--address", "unix:/nonexistent/agora.sock"])
        .env("AGORA_AUTHKEY", "k")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn shutdown_stops_the_server() {
    let mut server = Server::start();
    assert_eq!(ok(agora(&server, &key(&server), &["shutdown"])).trim(), "shutdown requested");
    assert!(server.wait_exit().success());
}

/// `agora get` on a held lock: the holder's session, peer address, since when and
/// fencing token, then the waiters in the order they will be served; `agora ls`
/// counts them; the native `holders` call gives the same.
#[tokio::test]
async fn get_shows_who_holds_a_lock_and_who_waits_in_order() {
    let server = Server::start();
    let holder = server.client().await;
    let guard = holder.lock("L").await.unwrap().acquire().await.unwrap();
    let mut waiters = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let m = server.client().await;
        waiters.push(m.session_id());
        let lock = m.lock("L").await.unwrap();
        let before = holder.holders("L").await.unwrap().waiting.len();
        tasks.push(tokio::spawn(async move {
            let guard = lock.acquire().await.unwrap();
            guard.release().await.unwrap();
            drop(m);
        }));
        // One at a time, so the order of arrival is known.
        let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
        while holder.holders("L").await.unwrap().waiting.len() == before {
            assert!(std::time::Instant::now() < deadline, "the acquire never waited");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let view = holder.holders("L").await.unwrap();
    assert_eq!(view.held.len(), 1);
    let held = &view.held[0];
    assert_eq!((held.session, held.token), (holder.session_id(), Some(guard.token())));
    let peer = held.peer.clone().expect("the holder's peer address");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    let order: Vec<u64> = view.waiting.iter().map(|w| w.session).collect();
    assert_eq!(order, waiters, "waiters in arrival order");
    assert!(view.waiting.iter().all(|w| w.peer.as_deref().is_some_and(|p| p != peer) && w.since_us.is_some()));

    let authkey = key(&server);
    let text = tokio::task::spawn_blocking({
        let address = server.address.clone();
        move || {
            let out = Command::new(agora_bin())
                .args(["get", "L", "--address", &address])
                .env("AGORA_AUTHKEY", &authkey)
                .env_remove("AGORA_AUTHKEY_FILE")
                .output()
                .unwrap();
            ok(out)
        }
    })
    .await
    .unwrap();
    let holder_line = format!("session {}  peer {peer}  since ", holder.session_id());
    assert!(text.contains(&holder_line), "{text}");
    assert!(text.contains(&format!("token {}  lock", guard.token())), "{text}");
    let first = text.find(&format!("1. session {}  peer ", waiters[0])).expect(&text);
    let second = text.find(&format!("2. session {}  peer ", waiters[1])).expect(&text);
    assert!(first < second, "{text}");
    let ls = ok(agora(&server, &key(&server), &["ls"]));
    let line = ls.lines().find(|l| l.starts_with("L ")).expect(&ls);
    assert!(line.contains("Lock") && line.split_whitespace().collect::<Vec<_>>()[2..4] == ["1", "2"], "{ls}");

    guard.release().await.unwrap();
    for task in tasks {
        tokio::time::timeout(agora_tests::HANG_GUARD, task).await.unwrap().unwrap();
    }
    let view = holder.holders("L").await.unwrap();
    assert!(view.held.is_empty() && view.waiting.is_empty(), "{view:?}");
}

/// `agora ls | head -1`: the reader goes away after one line; agora ends quietly, as a
/// command-line tool should, instead of panicking on the closed pipe.
#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let server = Server::start();
    let m = server.client().await;
    for i in 0..3000 {
        m.dict::<String, i64>(&format!("object-with-a-long-name-{i:05}")).await.unwrap();
    }
    let mut child = Command::new(agora_bin())
        .args(["ls", "--address", &server.address])
        .env("AGORA_AUTHKEY", key(&server))
        .env_remove("AGORA_AUTHKEY_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agora ls");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    // The pipe's read end is closed now; agora writes on into it.
    let out = child.wait_with_output().expect("agora ls ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
