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
