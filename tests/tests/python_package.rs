//! The `agora` Python package (`python/`) and the runtime typeid it builds on, against
//! the real `agora` binary, on every CPython 3.8–3.13 found (see `python_support`).
//!
//! The checks themselves are `unittest` scripts in `python/tests/`, run uninstalled
//! (`PYTHONPATH=python`), each version against a server of its own:
//!
//! - named objects opened at run time by the package and by a stock `SyncManager`
//!   that registered the `agora` typeid, shared by name with a native Rust client;
//!   the unknown-typeid error saying what to do (`test_named.py`);
//! - a `Pool` whose workers use proxies of a connected manager: with `agora.connect`,
//!   and with a stock manager plus the documented `current_process().authkey`
//!   one-liner, under fork and spawn (`test_pool.py`);
//! - fencing tokens that grow, leased gets acked on success and redelivered after an
//!   exception, lease renewal (`test_fencing_leases.py`);
//! - the asyncio facade (`test_aio.py`);
//! - addresses and authkeys found as the CLI finds them, over a Unix socket given as
//!   `unix:///path` (`test_config.py`);
//! - reconnecting across server restarts on the same `--data-dir`, driven from here
//!   (`test_reconnect.py`).
//!
//! Plus `agora serve --expose` with an unknown kind listing the valid kinds.

mod python_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use agora_tests::{agora_bin, Server, ServerOptions, HANG_GUARD};
use python_support::{command_at, for_each_python, run, Python};

/// How long one script may take before it counts as hung.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The package's directory (`python/`), which `PYTHONPATH` points at.
fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("python")
}

/// `python python/tests/SCRIPT` against `server` (its address as `address`).
fn script_command(python: &Python, server: &Server, script: &str, address: &str) -> Command {
    let path = package_dir().join("tests").join(script);
    let mut cmd = command_at(python, &path, &[], &server.authkey);
    cmd.env("PYTHONPATH", package_dir()).env("AGORA_ADDRESS", address).env_remove("AGORA_AUTHKEY_FILE");
    cmd
}

/// Runs a test script to the end; fails with its transcript (and the server's log)
/// unless every test in it passed.
fn run_script(python: &Python, server: &Server, script: &str, address: &str) {
    let done = run(script_command(python, server, script, address), SCRIPT_TIMEOUT);
    assert!(
        done.ok(),
        "{script} failed on {}\n{}\n--- server log (tail)\n{}",
        python.version,
        done.transcript(),
        tail(&server.log())
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

#[test]
fn named_objects_at_run_time_are_shared_with_rust_clients_by_name() {
    for_each_python(|python| {
        let server = Server::start();
        let rt = runtime();
        rt.block_on(async {
            let manager = server.client().await;
            let from_rust = manager.dict::<String, String>("from-rust").await.unwrap();
            from_rust.insert(&"greeting".to_owned(), &"hello".to_owned()).await.unwrap();
            let to_python = manager.queue::<i64>("rust-to-py", 0).await.unwrap();
            for n in 1..=3 {
                to_python.put(&n).await.unwrap();
            }
        });
        run_script(python, &server, "test_named.py", &server.address);
        rt.block_on(async {
            let manager = server.client().await;
            let from_python = manager.dict::<String, i64>("from-python").await.unwrap();
            assert_eq!(from_python.get(&"answer".to_owned()).await.unwrap(), Some(42));
            let from_queue = manager.queue::<i64>("py-to-rust", 0).await.unwrap();
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(tokio::time::timeout(HANG_GUARD, from_queue.get()).await.expect("an item").unwrap());
            }
            assert_eq!(got, [10, 20, 30]);
            let hits = manager.value::<i64>("py-hits", &0).await.unwrap();
            assert_eq!(hits.get().await.unwrap(), 7);
        });
    });
}

#[test]
fn pool_workers_use_the_proxies_of_a_connected_manager() {
    for_each_python(|python| {
        let server = Server::start();
        run_script(python, &server, "test_pool.py", &server.address);
    });
}

#[test]
fn fenced_locks_and_leased_gets() {
    for_each_python(|python| {
        let server = Server::start();
        run_script(python, &server, "test_fencing_leases.py", &server.address);
    });
}

#[test]
fn the_asyncio_facade() {
    for_each_python(|python| {
        let server = Server::start();
        run_script(python, &server, "test_aio.py", &server.address);
    });
}

#[test]
fn addresses_and_authkeys_over_a_unix_socket() {
    for_each_python(|python| {
        let server = Server::start_unix();
        let path = server.address.strip_prefix("unix:").expect("a unix address");
        run_script(python, &server, "test_config.py", &format!("unix://{path}"));
    });
}

/// `test_reconnect.py` asks for restarts on stdout (`RESTART`: answer once the new
/// server listens; `RESTART-LATE`: answer once the old one is gone, then start the
/// new one); the server keeps its state in a data dir, on one Unix socket path.
#[test]
fn reconnects_across_server_restarts_on_the_same_data_dir() {
    for_each_python(|python| {
        let scratch = tempfile::tempdir().expect("temp dir");
        let address = format!("unix:{}", scratch.path().join("agora.sock").display());
        let options = ServerOptions {
            args: vec![
                "--data-dir".into(),
                scratch.path().join("data").display().to_string(),
                "--fsync".into(),
                "always".into(),
            ],
            ..Default::default()
        };
        let mut server = Server::start_at(&address, options.clone());
        let cwd = tempfile::tempdir().expect("temp dir");
        let mut child = script_command(python, &server, "test_reconnect.py", &address)
            .current_dir(cwd.path())
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let mut stdin = child.stdin.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut said = Vec::new();
        loop {
            let line = match lines.recv_timeout(SCRIPT_TIMEOUT) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("test_reconnect.py hung; it said {said:?}");
                }
            };
            match line.as_str() {
                // A crash: nothing flushed but what --fsync always already wrote.
                "RESTART" => {
                    server.kill9();
                    server = Server::start_at(&address, options.clone());
                    writeln!(stdin, "restarted").expect("answer python");
                }
                "RESTART-LATE" => {
                    server.terminate();
                    writeln!(stdin, "stopped").expect("answer python");
                    std::thread::sleep(Duration::from_millis(300)); // python calls meanwhile
                    server = Server::start_at(&address, options.clone());
                }
                _ => {}
            }
            said.push(line);
        }
        let status = child.wait().expect("wait for python");
        let errors = errors.join().unwrap_or_default();
        assert!(
            status.success() && said.iter().any(|l| l == "WROTE"),
            "test_reconnect.py failed on {}: {status}\n--- stdout\n{}\n--- stderr\n{errors}\n--- server log (tail)\n{}",
            python.version,
            said.join("\n"),
            tail(&server.log())
        );
        // A native client sees what Python wrote before the last restart.
        runtime().block_on(async {
            let manager = agora_client::Manager::connect(&address, &server.authkey).await.expect("connect");
            let jobs = manager.dict::<String, i64>("jobs").await.unwrap();
            assert_eq!(jobs.get(&"b".to_owned()).await.unwrap(), Some(2));
            assert_eq!(manager.value::<i64>("hits", &0).await.unwrap().get().await.unwrap(), 6);
        });
    });
}

#[test]
fn expose_with_an_unknown_kind_lists_the_kinds() {
    let out = Command::new(agora_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--expose", "x=foo:bar"])
        .env("AGORA_AUTHKEY", "k")
        .stdin(Stdio::null())
        .output()
        .expect("run agora");
    assert!(!out.status.success(), "an unknown kind must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown kind 'foo'"), "{stderr}");
    for kind in agora_proto::native::Kind::BUILTIN {
        assert!(stderr.contains(kind.as_str()), "{kind} not listed in: {stderr}");
    }
}
