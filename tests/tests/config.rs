//! `agora serve --config agora.toml`: precedence (flag > environment > file >
//! default), unknown keys, the admin subcommands reading the same file, and the
//! shipped `deploy/` files (the example config parses; the systemd unit passes
//! `systemd-analyze verify` where that is installed; the profile-guided build script
//! checks its tools before it builds).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use agora_tests::{agora_bin, HANG_GUARD};

/// Every variable `agora serve` reads, removed so the test's own environment cannot leak in.
const SERVE_ENV: &[&str] = &[
    "AGORA_CONFIG",
    "AGORA_LISTEN",
    "AGORA_AUTHKEY",
    "AGORA_AUTHKEY_FILE",
    "AGORA_STRICT_AUTH",
    "AGORA_MAX_FRAME",
    "AGORA_MAX_CONNECTIONS",
    "AGORA_MAX_IN_FLIGHT",
    "AGORA_HANDSHAKE_TIMEOUT",
    "AGORA_HEARTBEAT_TIMEOUT",
    "AGORA_PYTHON_THREADS",
    "AGORA_PYTHON_BUSY_POLL",
    "AGORA_NATIVE_BUSY_POLL",
    "AGORA_EXPOSE",
    "AGORA_LOG",
    "AGORA_METRICS",
    "AGORA_ADDRESS",
];

fn agora(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(agora_bin());
    cmd.args(args);
    for var in SERVE_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run agora")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The value of `key` in `--print-config` output.
fn setting<'a>(printed: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    printed.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "agora.toml",
        r#"
listen = "127.0.0.1:7001"
max-frame = "1MiB"
max-in-flight = 11
heartbeat-timeout = 30
log-level = "debug"
workers = 3
python-threads = 9
python-busy-poll = "250us"
native-busy-poll = "50us"
"#,
    );
    let config = config.to_str().unwrap();

    let file_only = ok(run(agora(&["serve", "--config", config, "--print-config"], &[])));
    assert_eq!(setting(&file_only, "listen"), r#"["127.0.0.1:7001"]"#);
    assert_eq!(setting(&file_only, "max-frame"), r#""1MiB""#);
    assert_eq!(setting(&file_only, "max-in-flight"), "11");
    assert_eq!(setting(&file_only, "heartbeat-timeout"), r#""30s""#);
    assert_eq!(setting(&file_only, "max-connections"), "10000", "a key the file leaves out keeps its default");
    assert_eq!(setting(&file_only, "handshake-timeout"), r#""5s""#);
    assert_eq!(setting(&file_only, "workers"), "3");
    assert_eq!(setting(&file_only, "python-threads"), "9");
    assert_eq!(setting(&file_only, "python-busy-poll"), r#""250us""#);
    assert_eq!(setting(&file_only, "native-busy-poll"), r#""50us""#);

    let env = [("AGORA_MAX_FRAME", "2MiB"), ("AGORA_LISTEN", "127.0.0.1:7002"), ("AGORA_CONFIG", config)];
    let with_env = ok(run(agora(&["serve", "--print-config"], &env)));
    assert_eq!(setting(&with_env, "max-frame"), r#""2MiB""#, "environment beats the file");
    assert_eq!(setting(&with_env, "listen"), r#"["127.0.0.1:7002"]"#);
    assert_eq!(setting(&with_env, "max-in-flight"), "11", "the file (named by AGORA_CONFIG) fills the rest");

    let with_flags =
        ok(run(agora(&["serve", "--print-config", "--max-frame", "3MiB", "--listen", "127.0.0.1:7003"], &env)));
    assert_eq!(setting(&with_flags, "max-frame"), r#""3MiB""#, "a flag beats its environment variable");
    assert_eq!(setting(&with_flags, "listen"), r#"["127.0.0.1:7003"]"#);
    let workers = ok(run(agora(
        &["serve", "--print-config", "--workers", "1"],
        &[("AGORA_WORKERS", "2"), ("AGORA_CONFIG", config)],
    )));
    assert_eq!(setting(&workers, "workers"), "1");
    let workers = ok(run(agora(&["serve", "--print-config"], &[("AGORA_WORKERS", "2"), ("AGORA_CONFIG", config)])));
    assert_eq!(setting(&workers, "workers"), "2");
    let threads = ok(run(agora(
        &["serve", "--print-config", "--python-threads", "0"],
        &[("AGORA_PYTHON_THREADS", "4"), ("AGORA_CONFIG", config)],
    )));
    assert_eq!(setting(&threads, "python-threads"), "0", "0 is allowed: every connection shares the workers");
    let threads = ok(run(agora(&["serve", "--print-config"], &[("AGORA_PYTHON_THREADS", "4")])));
    assert_eq!(setting(&threads, "python-threads"), "4");
    let poll = ok(run(agora(
        &["serve", "--print-config", "--python-busy-poll", "0"],
        &[("AGORA_PYTHON_BUSY_POLL", "1ms"), ("AGORA_CONFIG", config)],
    )));
    assert_eq!(setting(&poll, "python-busy-poll"), r#""0s""#, "0 is allowed: threads sleep at once");
    let poll = ok(run(agora(&["serve", "--print-config"], &[("AGORA_PYTHON_BUSY_POLL", "1ms")])));
    assert_eq!(setting(&poll, "python-busy-poll"), r#""1ms""#);
    let bad = run(agora(&["serve", "--print-config", "--python-busy-poll", "5 fortnights"], &[]));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use us, ms, s or m"), "{bad:?}");
    let poll = ok(run(agora(
        &["serve", "--print-config", "--native-busy-poll", "0"],
        &[("AGORA_NATIVE_BUSY_POLL", "1ms"), ("AGORA_CONFIG", config)],
    )));
    assert_eq!(setting(&poll, "native-busy-poll"), r#""0s""#, "0 is allowed: workers never poll");
    let poll = ok(run(agora(&["serve", "--print-config"], &[("AGORA_NATIVE_BUSY_POLL", "1ms")])));
    assert_eq!(setting(&poll, "native-busy-poll"), r#""1ms""#, "the most a worker may poll for");
    let long = run(agora(&["serve", "--print-config", "--native-busy-poll", "2ms"], &[]));
    assert!(!long.status.success(), "a worker's other connections wait while it polls");
    let stderr = String::from_utf8_lossy(&long.stderr);
    assert!(stderr.contains("native-busy-poll is at most 1ms") && stderr.contains("got 2ms"), "{stderr}");

    let defaults = ok(run(agora(&["serve", "--print-config"], &[])));
    assert_eq!(setting(&defaults, "listen"), r#"["127.0.0.1:50000"]"#);
    assert_eq!(setting(&defaults, "max-frame"), r#""64MiB""#);
    assert_eq!(setting(&defaults, "log-level"), r#""info""#);
    assert_eq!(setting(&defaults, "python-threads"), "256");
    assert_eq!(setting(&defaults, "python-busy-poll"), r#""100us""#);
    assert_eq!(setting(&defaults, "native-busy-poll"), r#""100us""#);
    let cpus = std::thread::available_parallelism().unwrap().get();
    let workers = cpus.saturating_sub(1).max(1).to_string();
    assert_eq!(setting(&defaults, "workers"), workers, "one worker fewer than the CPUs by default, at least one");

    // The printed settings are themselves a config file that gives the same settings.
    let again = write(dir.path(), "printed.toml", &with_flags);
    let reread = ok(run(agora(&["serve", "--config", again.to_str().unwrap(), "--print-config"], &[])));
    assert_eq!(setting(&reread, "max-frame"), r#""3MiB""#);
    assert_eq!(setting(&reread, "max-in-flight"), "11");
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |text: &str| {
        let path = write(dir.path(), "bad.toml", text);
        let out = run(agora(&["serve", "--config", path.to_str().unwrap()], &[]));
        assert!(!out.status.success(), "accepted {text:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = fails("listen = \"127.0.0.1:0\"\nmax-frames = \"1MiB\"\n");
    assert!(stderr.contains("unknown field `max-frames`"), "{stderr}");
    assert!(stderr.contains("bad.toml") && stderr.contains("line 2"), "says where: {stderr}");
    assert!(stderr.contains("`max-frame`"), "and lists the keys it knows: {stderr}");

    let stderr = fails("heartbeat-timeout = \"soon\"\n");
    assert!(stderr.contains("heartbeat-timeout") && stderr.contains("not a duration"), "{stderr}");
    let stderr = fails("workers = 0\n");
    assert!(stderr.contains("workers") && stderr.contains("at least 1"), "{stderr}");
    let out = run(agora(&["serve", "--workers", "0", "--print-config"], &[]));
    assert!(!out.status.success(), "--workers 0 must be refused");
    let stderr = fails("authkey = \"s3cret\"\n");
    assert!(stderr.contains("authkey-file"), "{stderr}");
    let stderr = fails("listen = [\n");
    assert!(stderr.contains("TOML parse error"), "{stderr}");

    let out = run(agora(&["serve", "--config", "/nonexistent/agora.toml"], &[]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent/agora.toml"));
}

/// A server process, killed when dropped (a failing test leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `agora serve --config FILE` until it listens; returns the child and its address.
fn serve(config: &Path, env: &[(&str, &str)]) -> (Running, String) {
    let mut child = agora(&["serve", "--config", config.to_str().unwrap()], env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = line.split("listening address=").nth(1) {
                let _ = tx.send(address.trim().to_owned());
            }
        }
    });
    let address = rx.recv_timeout(HANG_GUARD).expect("the server listens");
    (Running(child), address)
}

#[tokio::test]
async fn a_server_and_the_admin_commands_share_one_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agora.sock");
    write(dir.path(), "authkey", "from-the-file\n");
    // authkey-file is relative: read from the config file's folder.
    let config = write(
        dir.path(),
        "agora.toml",
        &format!("listen = \"unix:{}\"\nauthkey-file = \"authkey\"\n", socket.display()),
    );
    let (mut child, address) = serve(&config, &[]);
    assert_eq!(address, format!("unix:{}", socket.display()));

    let m = agora_client::Manager::connect(&address, b"from-the-file").await.unwrap();
    m.list::<u8>("l").await.unwrap().push(&1).await.unwrap();

    // The admin subcommands find the address and the key file in the same file.
    let pong = ok(run(agora(&["ping", "--config", config.to_str().unwrap()], &[])));
    assert!(pong.contains(&address), "{pong}");
    let ls = ok(run(agora(&["ls"], &[("AGORA_CONFIG", config.to_str().unwrap())])));
    assert!(ls.lines().any(|l| l.starts_with('l') && l.contains("list")), "{ls}");
    // …and flags still win: a wrong key from the environment fails.
    let wrong = run(agora(&["ping", "--config", config.to_str().unwrap()], &[("AGORA_AUTHKEY", "wrong")]));
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("authentication failed"));

    ok(run(agora(&["shutdown", "--config", config.to_str().unwrap()], &[])));
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn help_explains_the_config_file_and_precedence() {
    let help = ok(run(agora(&["serve", "--help"], &[])));
    for needle in [
        "--config",
        "AGORA_CONFIG",
        "--print-config",
        "flag > environment variable > config file >",
        "--metrics",
        "AGORA_METRICS",
        "[default: 64MiB]",
        "[default: 127.0.0.1:50000]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_example_config_file_is_valid() {
    let printed =
        ok(run(agora(&["serve", "--config", repo_file("deploy/agora.toml").to_str().unwrap(), "--print-config"], &[])));
    assert_eq!(setting(&printed, "listen"), r#"["127.0.0.1:50000", "unix:/run/agora/agora.sock"]"#);
    assert_eq!(setting(&printed, "unix-mode"), r#""0666""#);
    assert_eq!(setting(&printed, "metrics"), r#""127.0.0.1:9464""#);
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("systemd-analyze is not installed; skipping the unit check");
        return;
    }
    let unit = std::fs::read_to_string(repo_file("deploy/agora.service")).unwrap();
    for option in
        ["DynamicUser=yes", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "LoadCredential="]
    {
        assert!(unit.contains(option), "the unit lacks {option}");
    }
    // verify checks that ExecStart's program exists: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let local = unit.replace("/usr/local/bin/agora", agora_bin().to_str().unwrap());
    let path = write(dir.path(), "agora.service", &local);
    let out = Command::new("systemd-analyze").args(["verify", path.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    assert!(!stderr.contains("agora.service:"), "warnings about the unit:\n{stderr}");
}

/// The profile-guided build checks what it needs before it builds anything: an
/// llvm-profdata named but not there is an error that names it, in seconds.
#[test]
fn the_pgo_build_refuses_a_named_llvm_profdata_that_is_not_there() {
    let missing = tempfile::tempdir().unwrap().path().join("llvm-profdata");
    let out = Command::new("bash")
        .arg(repo_file("deploy/build-pgo.sh"))
        .env("LLVM_PROFDATA", &missing)
        .output()
        .expect("run deploy/build-pgo.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it went on:\n{stderr}");
    assert!(stderr.contains(&format!("LLVM_PROFDATA={} is not a program here", missing.display())), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("instrumented build"), "it started building:\n{stdout}");
}

/// Run by hand, the systemd-oriented paths fail with what to do about them.
#[test]
fn missing_runtime_directories_and_key_files_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-such-dir/agora.sock");
    let out = run(agora(&["serve", "--listen", &format!("unix:{}", socket.display())], &[("AGORA_AUTHKEY", "k")]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-dir does not exist") && stderr.contains("RuntimeDirectory="), "{stderr}");

    let key = dir.path().join("authkey");
    let out = run(agora(&["serve", "--listen", "127.0.0.1:0", "--authkey-file", key.to_str().unwrap()], &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("create the key file") && stderr.contains("cannot read authkey file"), "{stderr}");
    assert!(!stderr.contains("authkey read from file"), "not logged as read: {stderr}");
}
