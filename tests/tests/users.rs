//! Users with keys of their own and rules (`[users.NAME]` in the config file), against
//! the real `agora` binary: for read, write and admin an allowed and a refused call,
//! from a native client and from every stock CPython found; two users' keys both
//! authenticate and are told apart; another user's anonymous objects and another
//! namespace's objects are out of reach by id. The setup without users is what every
//! other test file runs.

mod python_support;

use std::time::Duration;

use agora_client::{Error, Manager};
use agora_proto::native::{self, Op, Reply, Request, Response};
use agora_tests::{RawConn, Server, ServerOptions};

const WRITER: &[u8] = b"writer-key-0123";
const READER: &[u8] = b"reader-key-4567";
const ADMIN: &[u8] = b"admin-key-89ab";
const OTHER: &[u8] = b"other-key-cdef";

/// A server whose config file has four users; the config and key files live in `dir`.
struct UsersServer {
    server: Server,
    _dir: tempfile::TempDir,
}

/// Writes the config file of [`start`]'s server and its users' key files into `dir`.
fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    for (name, key) in [("writer", WRITER), ("reader", READER), ("admin", ADMIN), ("other", OTHER)] {
        std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
    }
    let config = dir.join("agora.toml");
    std::fs::write(
        &config,
        r#"
[users.writer]
key-file = "writer.key"
rules = { "jobs.*" = "write", "stats.*" = "read" }

[users.reader]
key-file = "reader.key"
rules = { "jobs.*" = "read" }

[users.admin]
key-file = "admin.key"
rules = { "*" = "admin" }

[users.other]
key-file = "other.key"
rules = { "other.*" = "write" }
"#,
    )
    .unwrap();
    config
}

fn start() -> UsersServer {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let options = ServerOptions {
        no_authkey: true,
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    };
    UsersServer { server: Server::start_with(options), _dir: dir }
}

impl UsersServer {
    async fn connect(&self, key: &[u8]) -> Manager {
        Manager::connect(&self.server.address, key).await.expect("connect")
    }
}

/// The message of a `PermissionDenied`, or a panic naming what came instead.
fn denied<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::PermissionDenied(message)) => message,
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

#[tokio::test]
async fn read_write_and_admin_each_allow_and_refuse_natively() {
    let users = start();
    let (writer, reader, admin) =
        (users.connect(WRITER).await, users.connect(READER).await, users.connect(ADMIN).await);

    // write: creating and changing jobs.* is the writer's; elsewhere no rule matches.
    let jobs = writer.dict::<String, i64>("jobs.a").await.unwrap();
    jobs.insert(&"n".into(), &1).await.unwrap();
    let message = denied(writer.dict::<String, i64>("secret").await);
    assert!(message.contains("user 'writer'") && message.contains("'secret'"), "{message}");
    assert!(message.contains("no rule matches") && message.contains("\"jobs.*\" = write"), "{message}");

    // read: the reader opens and reads; writing and creating are refused, naming the rule.
    let seen = reader.dict::<String, i64>("jobs.a").await.unwrap();
    assert_eq!(seen.get(&"n".into()).await.unwrap(), Some(1));
    assert_eq!(seen.len().await.unwrap(), 1);
    reader.snapshot("jobs.a").await.expect("a reader may copy what it reads");
    reader.holders("jobs.a").await.expect("and see who holds it");
    let message = denied(seen.insert(&"m".into(), &2).await);
    assert!(message.contains("user 'reader'") && message.contains("\"jobs.*\" = read"), "{message}");
    assert!(message.contains("needs write"), "{message}");
    let message = denied(reader.dict::<String, i64>("jobs.new").await);
    assert!(message.contains("create 'jobs.new'"), "{message}");
    assert_eq!(jobs.len().await.unwrap(), 1, "the refused write changed nothing");
    // A rule that reads a namespace lets its names be listed, nothing else.
    admin.dict::<String, i64>("admin.only").await.unwrap();
    let listed: Vec<String> = reader.list_named().await.unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(listed, ["jobs.a"]);

    // admin: deleting needs admin on the name; statistics and shutdown a server admin.
    let message = denied(writer.delete("jobs.a").await);
    assert!(message.contains("delete 'jobs.a'") && message.contains("needs admin"), "{message}");
    let message = denied(writer.stats().await);
    assert!(message.contains("server admin"), "{message}");
    assert!(admin.stats().await.unwrap().objects_by_kind.iter().map(|(_, n)| n).sum::<u64>() >= 2);
    admin.delete("jobs.a").await.unwrap();
    let message = denied(reader.shutdown_server().await);
    assert!(message.contains("user 'reader'") && message.contains("shut the server down"), "{message}");
    assert!(users.server.log().contains("user=writer"), "the log names who connected");
    admin.shutdown_server().await.unwrap();
    let mut server = users.server;
    assert!(server.wait_exit().success());
}

#[test]
fn print_config_shows_users_and_their_key_files_never_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = std::process::Command::new(agora_tests::agora_bin())
        .args(["serve", "--config", config.to_str().unwrap(), "--print-config"])
        .env_remove("AGORA_AUTHKEY")
        .env_remove("AGORA_AUTHKEY_FILE")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("[users.\"reader\"]") && printed.contains("reader.key"), "{printed}");
    assert!(printed.contains("\"jobs.*\" = \"write\""), "{printed}");
    for key in [WRITER, READER, ADMIN, OTHER] {
        assert!(!printed.contains(std::str::from_utf8(key).unwrap()), "a key was printed: {printed}");
    }
    // An authkey beside the users would be a key outside every rule: refused.
    let out = std::process::Command::new(agora_tests::agora_bin())
        .args(["serve", "--config", config.to_str().unwrap(), "--print-config"])
        .env("AGORA_AUTHKEY", "s3cret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("$AGORA_AUTHKEY"));
}

#[tokio::test]
async fn two_keys_authenticate_as_two_users_and_a_stranger_is_refused() {
    let users = start();
    // The same call, two users: what each may do tells them apart.
    let writer = users.connect(WRITER).await;
    let other = users.connect(OTHER).await;
    writer.dict::<String, i64>("jobs.x").await.unwrap();
    other.dict::<String, i64>("other.x").await.unwrap();
    denied(writer.dict::<String, i64>("other.y").await);
    denied(other.dict::<String, i64>("jobs.y").await);
    let stranger = Manager::connect(&users.server.address, b"no user has this key").await.unwrap_err();
    assert!(matches!(stranger, Error::AuthenticationFailed(_)), "{stranger:?}");
    writer.ping().await.unwrap();
}

/// A native session by hand, to ask for objects by id as a client guessing ids would.
fn raw_session(server: &Server, key: &[u8]) -> RawConn {
    let mut raw = server.raw();
    raw.native_session(key, "raw");
    raw
}

fn request(raw: &mut RawConn, op: Op) -> Result<Reply, agora_proto::WireError> {
    let mut out = Vec::new();
    native::encode_request(&Request { id: 7, op }, &mut out).unwrap();
    raw.send_frame(&out).unwrap();
    let response: Response = native::decode_response(&raw.recv_frame().unwrap()).unwrap();
    assert_eq!(response.id, 7);
    response.result
}

fn attach(raw: &mut RawConn, object: u64) -> Result<Reply, agora_proto::WireError> {
    request(raw, Op::Attach { object })
}

#[tokio::test]
async fn objects_of_another_user_or_namespace_are_out_of_reach_by_id() {
    let users = start();
    let writer = users.connect(WRITER).await;
    let private = writer.new_dict::<String, i64>().await.unwrap();
    private.insert(&"k".into(), &1).await.unwrap();
    let named = writer.dict::<String, i64>("jobs.b").await.unwrap();

    let mut reader = raw_session(&users.server, READER);
    let error = attach(&mut reader, private.id()).unwrap_err();
    assert_eq!(error.code, agora_proto::ErrorCode::PermissionDenied);
    assert!(error.message.contains("anonymous object of user 'writer'"), "{}", error.message);
    // A named object is judged by its name, however it is reached.
    assert!(matches!(attach(&mut reader, named.id()), Ok(Reply::Opened { .. })), "jobs.* is readable");
    let mut other = raw_session(&users.server, OTHER);
    let error = attach(&mut other, named.id()).unwrap_err();
    assert_eq!(error.code, agora_proto::ErrorCode::PermissionDenied);
    assert!(error.message.contains("user 'other'") && error.message.contains("'jobs.b'"), "{}", error.message);
    // Nor can it be reached through a container or a constructor: storing a reference
    // to it, or building a Condition on it, is refused too.
    let reference = agora_proto::reference::ObjectRef::new(private.id(), "dict").to_value();
    let args = |values: Vec<agora_proto::Value>| native::Args { positional: values, keywords: vec![] };
    let opened =
        request(&mut other, Op::Open { kind: native::Kind::Dict, name: Some("other.box".into()), args: args(vec![]) });
    let Ok(Reply::Opened { object: other_box, .. }) = opened else { panic!("{opened:?}") };
    let stored = request(
        &mut other,
        Op::Call {
            object: other_box,
            method: "__setitem__".into(),
            args: args(vec![agora_proto::Value::Str("k".into()), reference.clone()]),
        },
    );
    let error = stored.unwrap_err();
    assert_eq!(error.code, agora_proto::ErrorCode::PermissionDenied);
    assert!(error.message.contains("store a reference to"), "{}", error.message);
    let built =
        request(&mut other, Op::Open { kind: native::Kind::Condition, name: None, args: args(vec![reference]) });
    assert!(built.unwrap_err().message.contains("build an object on"));

    // An id that does not exist yet says so, and cannot be claimed in advance.
    let error = attach(&mut other, private.id() + 1000).unwrap_err();
    assert_eq!(error.code, agora_proto::ErrorCode::NoSuchObject);

    // The owner reaches its anonymous object from another connection; so does an admin.
    let mut again = raw_session(&users.server, WRITER);
    assert!(matches!(attach(&mut again, private.id()), Ok(Reply::Opened { .. })));
    let mut admin = raw_session(&users.server, ADMIN);
    assert!(matches!(attach(&mut admin, private.id()), Ok(Reply::Opened { .. })));
}

/// Runs `users.py ADDRESS ROLE ARGS…` (one process per user: see the script) and
/// returns the `name=value` it printed, if any.
fn python_role(python: &python_support::Python, users: &UsersServer, role: &str, args: &[&str]) -> Option<String> {
    let mut argv = vec![users.server.address.as_str(), role];
    argv.extend_from_slice(args);
    let mut cmd = python_support::command(python, "users.py", &argv, b"unused");
    for (var, key) in [("AGORA_KEY_WRITER", WRITER), ("AGORA_KEY_READER", READER), ("AGORA_KEY_ADMIN", ADMIN)] {
        cmd.env(var, std::str::from_utf8(key).unwrap());
    }
    let done = python_support::run(cmd, Duration::from_secs(120));
    assert!(
        done.ok() && done.stdout.contains(&format!("OK users {role} {}", python.version)),
        "{}\n--- server log\n{}",
        done.transcript(),
        users.server.log()
    );
    done.stdout.lines().find_map(|l| l.split_once('=').map(|(_, v)| v.to_owned()))
}

#[test]
fn stock_cpython_clients_are_told_apart_by_their_keys() {
    python_support::for_each_python(|python| {
        let users = start();
        let private = python_role(python, &users, "writer", &[]).expect("the writer prints its object's id");
        let hidden = python_role(python, &users, "admin", &[&private]).expect("the admin prints its object's id");
        python_role(python, &users, "reader", &[&private, &hidden]);
    });
}
