//! A server embedded in the test program, and child processes of the test binary that
//! find it through their environment.
//!
//! The children are this very test binary, re-executed to run only
//! [`child_entry_point`], with `AGORA_TEST_CHILD` naming what to do. Run normally (no
//! such variable), that test does nothing.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agora::embedded::blocking;
use agora::EmbeddedManager;
use agora_client::{Error, ADDRESS_ENV, AUTHKEY_ENV, AUTHKEY_FILE_ENV};

const ROLE: &str = "AGORA_TEST_CHILD";
const ROUNDS: i64 = 200;

/// What a child process does, by role.
#[test]
fn child_entry_point() {
    let Ok(role) = std::env::var(ROLE) else { return };
    match role.as_str() {
        // Read-modify-write under the shared Lock: without it, increments would be lost.
        "increment" => {
            let manager = agora_client::blocking::Manager::from_env().expect("from_env");
            let lock = manager.lock("counter-lock").unwrap();
            let counter = manager.value::<i64>("counter", &0).unwrap();
            for _ in 0..ROUNDS {
                let guard = lock.acquire().unwrap();
                let n = counter.get().unwrap();
                counter.set(&(n + 1)).unwrap();
                guard.release().unwrap();
            }
            println!("child {} done", std::process::id());
        }
        "no-environment" => match agora_client::blocking::Manager::from_env() {
            Err(Error::Environment(message)) => println!("refused: {message}"),
            other => panic!("expected an environment error, got {other:?}"),
        },
        "async-append" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let manager = agora_client::Manager::from_env().await.expect("from_env");
                let list = manager.list::<String>("children").await.unwrap();
                list.push(&format!("pid {}", std::process::id())).await.unwrap();
            });
            println!("appended");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Runs this test binary as a child in `role`, through `command` (made by the manager).
fn run_child(mut command: Command, role: &str) -> Output {
    command
        .args(["--exact", "child_entry_point", "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("spawn child");
    let out = child.wait_with_output().expect("child output");
    assert!(
        out.status.success(),
        "child {role} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn children_share_a_lock_guarded_counter_through_the_environment() {
    let manager = blocking::EmbeddedManager::start().expect("start");
    let counter = manager.value::<i64>("counter", &0).unwrap();
    let exe = std::env::current_exe().unwrap();

    let key = String::from_utf8(manager.authkey().to_vec()).unwrap();
    let command = manager.command(&exe);
    assert!(command.get_args().all(|a| a.to_str() != Some(key.as_str())), "the authkey is not on the command line");
    let envs: Vec<_> = command.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
    assert!(envs.iter().any(|(k, v)| k == AUTHKEY_ENV && v.as_deref() == Some(key.as_ref())));
    assert!(envs.iter().any(|(k, v)| k == ADDRESS_ENV && v.as_deref() == Some(manager.address().to_string().as_ref())));

    let children: Vec<_> = (0..4)
        .map(|_| {
            let command = manager.command(&exe);
            std::thread::spawn(move || run_child(command, "increment"))
        })
        .collect();
    for child in children {
        let out = child.join().unwrap();
        assert!(stdout(&out).contains("done"), "{}", stdout(&out));
    }
    assert_eq!(counter.get().unwrap(), 4 * ROUNDS, "no increment lost: the lock worked across processes");
    manager.shutdown();
}

#[test]
fn a_child_without_the_environment_is_told_what_is_missing() {
    // No zero-config server ever ran here: its key file does not exist.
    let runtime_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env_remove(ADDRESS_ENV).env_remove(AUTHKEY_ENV).env_remove(AUTHKEY_FILE_ENV);
    command.env("XDG_RUNTIME_DIR", runtime_dir.path());
    let out = run_child(command, "no-environment");
    let text = stdout(&out);
    assert!(text.contains("refused: no authkey: set AGORA_AUTHKEY (the key) or AGORA_AUTHKEY_FILE"), "{text}");
    let expected = runtime_dir.path().join("agora/authkey");
    assert!(text.contains(&format!("{}, which does not exist", expected.display())), "names the file: {text}");

    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(ADDRESS_ENV, "nonsense").env(AUTHKEY_ENV, "k");
    let text = stdout(&run_child(command, "no-environment"));
    assert!(text.contains("AGORA_ADDRESS: invalid address 'nonsense'"), "{text}");

    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(ADDRESS_ENV, "127.0.0.1:1").env(AUTHKEY_FILE_ENV, runtime_dir.path().join("missing"));
    command.env_remove(AUTHKEY_ENV);
    let text = stdout(&run_child(command, "no-environment"));
    assert!(text.contains("AGORA_AUTHKEY_FILE: cannot read authkey file"), "{text}");
}

/// Next to a zero-config `agora serve`, a program needs no key configuration: the key
/// the server generated is where `Manager::from_env` looks.
#[test]
fn a_zero_config_servers_key_is_found_without_configuration() {
    // The test server runs with its scratch directory as XDG_RUNTIME_DIR.
    let server = agora_tests::Server::start_with(agora_tests::ServerOptions { no_authkey: true, ..Default::default() });
    let runtime = server.dir.path().display().to_string();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(ADDRESS_ENV, &server.address).env_remove(AUTHKEY_ENV).env_remove(AUTHKEY_FILE_ENV);
    command.env("XDG_RUNTIME_DIR", &runtime);
    run_child(command, "async-append");
    assert!(server.log().contains("generated a random one"), "{}", server.log());
}

#[test]
fn the_authkey_may_come_from_a_file_named_in_the_environment() {
    let manager = blocking::EmbeddedManager::start().expect("start");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("authkey");
    let mut key = manager.authkey().to_vec();
    key.push(b'\n');
    std::fs::write(&key_file, key).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(ADDRESS_ENV, manager.address().to_string()).env_remove(AUTHKEY_ENV).env(AUTHKEY_FILE_ENV, &key_file);
    run_child(command, "async-append");
    assert_eq!(manager.list::<String>("children").unwrap().len().unwrap(), 1);
}

#[tokio::test]
async fn async_manager_children_and_clean_shutdown() {
    let manager = EmbeddedManager::start().await.expect("start");
    let agora_client::Address::Unix(socket) = manager.address().clone() else {
        panic!("a private Unix socket by default, got {}", manager.address())
    };
    let dir = socket.parent().unwrap().to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "only this user can reach the socket");
    }

    let exe = std::env::current_exe().unwrap();
    let commands: Vec<Command> = (0..3).map(|_| manager.command(&exe)).collect();
    let outputs = tokio::task::spawn_blocking(move || {
        commands.into_iter().map(|c| run_child(c, "async-append")).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(outputs.iter().all(|o| stdout(o).contains("appended")));
    let children = manager.list::<String>("children").await.unwrap().to_vec().await.unwrap();
    assert_eq!(children.len(), 3, "{children:?}");

    // A clone shares the connection; `connect` opens a session of its own.
    let clone: agora_client::Manager = (*manager).clone();
    let other = manager.connect().await.unwrap();
    assert_ne!(other.session_id(), clone.session_id());
    // This manager's and `other`'s, once the server has seen the children's connections close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while manager.stats().await.unwrap().sessions != 2 {
        assert!(std::time::Instant::now() < deadline, "sessions: {:?}", manager.stats().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    manager.shutdown().await;
    assert!(!socket.exists(), "socket file removed");
    assert!(!dir.exists(), "private directory removed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while clone.ping().await.is_ok() || other.ping().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "clients learn the server is gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn dropping_the_manager_stops_the_server_too() {
    let manager = blocking::EmbeddedManager::start().unwrap();
    let agora_client::Address::Unix(socket) = manager.address().clone() else { panic!() };
    let address = manager.address().to_string();
    let key = manager.authkey().to_vec();
    manager.manager().ping().unwrap();
    drop(manager);
    assert!(!socket.exists());
    assert!(agora_client::blocking::Manager::connect(&address, key).is_err());
}

#[tokio::test]
async fn builder_tcp_with_a_chosen_authkey() {
    let manager = EmbeddedManager::builder().tcp().authkey("chosen").start().await.unwrap();
    assert!(matches!(manager.address(), agora_client::Address::Tcp { port, .. } if *port != 0));
    assert_eq!(manager.authkey(), b"chosen");
    let other = agora_client::Manager::connect(&manager.address().to_string(), "chosen").await.unwrap();
    other.ping().await.unwrap();
    let wrong = agora_client::Manager::connect(&manager.address().to_string(), "wrong").await;
    assert!(matches!(wrong, Err(Error::AuthenticationFailed(_))), "{wrong:?}");
    manager.shutdown().await;
}

#[test]
fn a_port_clash_is_a_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string().parse().unwrap();
    let err = EmbeddedManager::builder().listen(address).start_blocking().unwrap_err();
    assert!(matches!(err, agora::embedded::StartError::Server(_)), "{err:?}");
    assert!(err.to_string().contains("cannot start the embedded agora server"), "{err}");
}

#[tokio::test]
async fn dropping_an_async_manager_inside_a_runtime_stops_the_server() {
    let manager = EmbeddedManager::builder().tcp().start().await.unwrap();
    let address = manager.address().to_string();
    manager.ping().await.unwrap();
    drop(manager);
    assert!(std::net::TcpStream::connect(&address).is_err(), "nothing listens any more");
}
