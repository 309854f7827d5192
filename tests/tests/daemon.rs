//! `agora serve` as an operator runs it: zero-config start, signals, socket cleanup,
//! `--help`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use agora_tests::{agora_bin, Server, ServerOptions};

#[tokio::test]
async fn sigterm_finishes_requests_and_removes_the_socket_file() {
    let mut server = Server::start_unix();
    let socket = server.address.strip_prefix("unix:").unwrap().to_owned();
    assert!(std::path::Path::new(&socket).exists());
    let m = server.client().await;
    m.list::<u8>("l").await.unwrap().push(&1).await.unwrap();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(!std::path::Path::new(&socket).exists(), "socket file removed");
    server.wait_for_log("server stopped");
    // The connected client learns the server went away.
    assert!(m.ping().await.is_err());
}

#[test]
fn sigint_stops_the_server_too() {
    let mut server = Server::start();
    server.signal(libc::SIGINT);
    assert!(server.wait_exit().success());
}

#[tokio::test]
async fn without_an_authkey_one_is_generated_into_a_private_file() {
    let server = Server::start_with(ServerOptions { no_authkey: true, ..Default::default() });
    let path = server.dir.path().join("agora/authkey");
    server.wait_for_log("no authkey given: generated a random one");
    assert!(server.log().contains(&path.display().to_string()), "the log says where");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&path).unwrap();
    let m = agora_client::Manager::connect(&server.address, key.trim_end()).await.unwrap();
    m.ping().await.unwrap();
}

/// A generated key is kept: a second zero-config server of the same user uses it
/// rather than overwriting it, and so does the first one when it restarts.
#[tokio::test]
async fn a_generated_key_is_reused_by_restarts_and_other_servers() {
    let runtime = tempfile::tempdir().unwrap();
    let zero_config = || {
        Server::start_with(ServerOptions {
            no_authkey: true,
            env: vec![("XDG_RUNTIME_DIR".into(), runtime.path().display().to_string())],
            ..Default::default()
        })
    };
    let mut first = zero_config();
    first.wait_for_log("no authkey given: generated a random one");
    let key = std::fs::read_to_string(runtime.path().join("agora/authkey")).unwrap();
    let second = zero_config();
    second.wait_for_log("no authkey given: using the one generated earlier");
    for server in [&first, &second] {
        agora_client::Manager::connect(&server.address, key.trim_end()).await.unwrap().ping().await.unwrap();
    }
    first.terminate();
    let restarted = zero_config();
    restarted.wait_for_log("using the one generated earlier");
    agora_client::Manager::connect(&restarted.address, key.trim_end()).await.unwrap().ping().await.unwrap();
    assert_eq!(std::fs::read_to_string(runtime.path().join("agora/authkey")).unwrap(), key, "never rewritten");
}

#[tokio::test]
async fn authkey_file_flag_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, "from-a-file\n").unwrap();
    let server = Server::start_with(ServerOptions {
        no_authkey: true,
        args: vec!["--authkey-file".into(), key_path.display().to_string()],
        ..Default::default()
    });
    agora_client::Manager::connect(&server.address, b"from-a-file").await.unwrap().ping().await.unwrap();
}

#[test]
fn port_clash_fails_fast_with_a_clear_message() {
    let first = Server::start();
    let out = Command::new(agora_bin())
        .args(["serve", "--listen", &first.address])
        .env("AGORA_AUTHKEY", "k")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {}", first.address)), "{stderr}");
}

/// What the cluster harness retries on (a node's first start whose port was taken):
/// `Server::try_start_at` gives back the log, which names the cause.
#[test]
fn a_server_started_on_a_taken_address_gives_back_its_log() {
    let first = Server::start();
    let log = match Server::try_start_at(&first.address, Default::default()) {
        Ok(_) => panic!("two servers listened on {}", first.address),
        Err(log) => log,
    };
    assert!(log.contains("Address already in use"), "{log}");
}

#[test]
fn help_explains_flags_and_the_authkey() {
    let out = Command::new(agora_bin()).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "AGORA_LISTEN",
        "--authkey-file",
        "AGORA_AUTHKEY",
        "--max-frame",
        "--strict-auth",
        "127.0.0.1:50000",
        "mode 0600",
        "--workers",
        "--data-dir",
        "--max-memory",
        "--unix-mode",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn top_level_help_says_what_agora_is_and_how_to_start() {
    let out = Command::new(agora_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.starts_with("agora: a shared-state server"), "{help}");
    assert!(help.contains("GETTING STARTED") && help.contains("agora serve "), "{help}");
}

#[test]
fn version_names_the_package_version_and_only_a_profiled_build_says_more() {
    let out = Command::new(agora_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let version = String::from_utf8(out.stdout).unwrap();
    // The tests' own build has no profile flags: the bare version, as clap prints it.
    assert_eq!(version.trim_end(), format!("agora {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn an_admin_command_with_no_server_says_how_to_name_one() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = unused.local_addr().unwrap().to_string();
    drop(unused);
    let out =
        Command::new(agora_bin()).args(["stats", "--address", &address]).env("AGORA_AUTHKEY", "k").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot connect to {address}")), "{stderr}");
    assert!(stderr.contains("--address ADDR (or AGORA_ADDRESS)"), "{stderr}");
}

#[test]
fn bad_listen_address_is_explained() {
    let out = Command::new(agora_bin()).args(["serve", "--listen", "nonsense"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid address 'nonsense': missing port"), "{stderr}");
}

#[tokio::test]
async fn ipv6_loopback_works() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let server =
        Server::start_with(ServerOptions { args: vec!["--listen".into(), "[::1]:0".into()], ..Default::default() });
    // The server listens on both the default test address and [::1]; connect to the v6 one.
    server.wait_for_log("listening address=[::1]:");
    let log = server.log();
    let v6 = log
        .split("listening address=")
        .filter(|s| s.starts_with("[::1]"))
        .map(|s| s.lines().next().unwrap().trim())
        .next()
        .unwrap()
        .to_owned();
    agora_client::Manager::connect(&v6, &server.authkey).await.unwrap().ping().await.unwrap();
}

#[test]
fn unix_socket_files_get_the_mode_asked_for() {
    for (mode, expected) in [("660", 0o660), ("0600", 0o600)] {
        let server = Server::start_with(ServerOptions {
            unix: true,
            args: vec!["--unix-mode".into(), mode.into()],
            ..Default::default()
        });
        let path = server.address.strip_prefix("unix:").unwrap_or(&server.address);
        let got = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, expected, "--unix-mode {mode}");
    }
}

#[test]
fn an_advertised_address_must_name_a_listen_address() {
    let out = Command::new(agora_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:5=public.example:5"])
        .env("AGORA_AUTHKEY", "k")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:5 is not one of the listen addresses (127.0.0.1:0)"), "{stderr}");
}
