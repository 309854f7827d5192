//! Finding and running real CPython interpreters for the Python integration tests.
//!
//! Every CPython 3.8–3.13 that pyenv knows (`pyenv versions --bare`, else the
//! directories under `$(pyenv root)/versions` or `~/.pyenv/versions`), plus the
//! default `python3`; `AGORA_TEST_PYTHONS` (comma-separated interpreter paths)
//! replaces the search. A test fails when none is found: these tests must never pass
//! by testing nothing.

#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The start of a test script run with `-c`: `m`, a `SyncManager` connected to the
/// address in `sys.argv[1]` (`host:port` or `unix:PATH`) with the authkey in
/// `sys.argv[2]`. A script is this followed by its own lines ([`with_manager`]).
pub const CONNECT: &str = r#"
import sys
from multiprocessing.managers import SyncManager
address = sys.argv[1]
if address.startswith("unix:"):
    address = address[len("unix:"):]
else:
    host, port = address.rsplit(":", 1)
    address = (host, int(port))
m = SyncManager(address=address, authkey=sys.argv[2].encode())
m.connect()
"#;

/// A script: [`CONNECT`], then `body`.
pub fn with_manager(body: &str) -> String {
    [CONNECT, body].concat()
}

/// Starts `python -c` [`with_manager`]`(body)` against `server`, with `args` after the
/// address and authkey: stdin and stdout piped, stderr as `stderr` says.
pub fn spawn_with_manager(
    python: &Python,
    body: &str,
    server: &agora_tests::Server,
    args: &[&str],
    stderr: Stdio,
) -> std::process::Child {
    let key = std::str::from_utf8(&server.authkey).expect("test authkeys are text");
    Command::new(&python.exe)
        .args(["-c", &with_manager(body), &server.address, key])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the interpreter")
}

/// A test script in conversation with its test: lines it prints, lines it is sent.
pub struct Dialogue<'a> {
    child: std::process::Child,
    input: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    /// Names the interpreter (and case) in every failure.
    pub context: &'a str,
}

impl<'a> Dialogue<'a> {
    /// Runs `body` after `python_support::CONNECT` against `server`, with `args`.
    pub fn start(python: &Python, body: &str, server: &agora_tests::Server, args: &[&str], context: &'a str) -> Self {
        let mut child = spawn_with_manager(python, body, server, args, Stdio::inherit());
        let input = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Dialogue { child, input, out, context }
    }

    /// The script's next line is `want`.
    pub fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), want, "{}", self.context);
    }

    /// Sends the script a line.
    pub fn say(&mut self, line: &str) {
        writeln!(self.input, "{line}").unwrap();
    }

    /// The script ends, successfully.
    pub fn finish(mut self) {
        assert!(self.child.wait().unwrap().success(), "{}", self.context);
    }

    /// The script is killed (SIGKILL), wherever it is.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// The oldest and newest CPython minor versions agora speaks to.
const MINORS: std::ops::RangeInclusive<u32> = 8..=13;

/// One CPython interpreter.
#[derive(Debug, Clone)]
pub struct Python {
    /// Its full version (`3.11.7`).
    pub version: String,
    /// The interpreter to run.
    pub exe: PathBuf,
}

/// Every CPython 3.8–3.13 found, one per version, oldest first.
pub fn pythons() -> &'static [Python] {
    static FOUND: OnceLock<Vec<Python>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut found: Vec<Python> = Vec::new();
        for exe in candidates() {
            let Some(version) = version_of(&exe) else { continue };
            let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
            let in_range = version.starts_with("3.") && minor.is_some_and(|m| MINORS.contains(&m));
            if in_range && !found.iter().any(|p| p.version == version) {
                found.push(Python { version, exe });
            }
        }
        found.sort_by_key(|p| p.version.split('.').map(|n| n.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>());
        assert!(
            !found.is_empty(),
            "no CPython 3.8–3.13 found (pyenv versions, python3 on PATH, or AGORA_TEST_PYTHONS); \
             the Python tests need at least one"
        );
        eprintln!(
            "CPython versions under test: {}",
            found.iter().map(|p| p.version.as_str()).collect::<Vec<_>>().join(", ")
        );
        found
    })
}

/// Interpreters to try, in order of preference.
fn candidates() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("AGORA_TEST_PYTHONS") {
        return list.split(',').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
    }
    let mut out = Vec::new();
    let root = output_of(Command::new("pyenv").arg("root"))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(root) = root {
        let versions = root.join("versions");
        let mut names: Vec<String> = output_of(Command::new("pyenv").args(["versions", "--bare"]))
            .map(|list| list.lines().map(|l| l.trim().to_owned()).collect())
            .unwrap_or_default();
        if names.is_empty() {
            if let Ok(dir) = std::fs::read_dir(&versions) {
                names = dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
            }
        }
        for name in names {
            let exe = versions.join(&name).join("bin").join("python3");
            if exe.exists() {
                out.push(exe);
            }
        }
    }
    out.push(PathBuf::from("python3"));
    out
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn version_of(exe: &Path) -> Option<String> {
    output_of(Command::new(exe).args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]))
}

/// The directory of the Python scripts the tests run.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// What a finished Python process printed.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (`None` if it was killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// True if it exited with status 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Everything it printed, for failure messages.
    pub fn transcript(&self) -> String {
        format!("exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A command for `python` running `script` with `args`, the authkey in its environment.
pub fn command(python: &Python, script_name: &str, args: &[&str], authkey: &[u8]) -> Command {
    command_at(python, &script(script_name), args, authkey)
}

/// [`command`] for a script anywhere (given by its path).
pub fn command_at(python: &Python, script: &Path, args: &[&str], authkey: &[u8]) -> Command {
    let mut cmd = Command::new(&python.exe);
    cmd.arg("-u").arg(script).args(args);
    cmd.env("AGORA_AUTHKEY", std::str::from_utf8(authkey).expect("test authkeys are text"));
    // Do not let a user's environment change what the interpreter does.
    cmd.env_remove("PYTHONPATH").env_remove("PYTHONSTARTUP").env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs a command to the end in a fresh temporary working directory (CPython's tests
/// create files in the current directory, so parallel runs must not share one),
/// killing it (and failing) after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Finished {
    let cwd = tempfile::tempdir().expect("temp dir");
    cmd.current_dir(cwd.path());
    let child = cmd.spawn().expect("spawn python");
    finish(child, &format!("{cmd:?}"), timeout)
}

/// Waits for a running `child` (`what`, for the failure message; its stdout and stderr
/// piped) and collects what it printed, killing it (and failing) after `timeout`.
pub fn finish(mut child: std::process::Child, what: &str, timeout: Duration) -> Finished {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let finished = Finished {
        code: status.and_then(|s| s.code()),
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    };
    assert!(status.is_some(), "{what} did not finish within {timeout:?}; killed\n{}", finished.transcript());
    finished
}

/// Runs `check` once per CPython version, all at once in threads; fails listing every
/// version that failed (with its panic message).
pub fn for_each_python(check: impl Fn(&Python) + Sync) {
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = pythons()
            .iter()
            .map(|python| {
                let check = &check;
                let handle = std::thread::Builder::new()
                    .name(format!("python-{}", python.version))
                    .spawn_scoped(scope, move || check(python))
                    .expect("spawn thread");
                (python, handle)
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|(python, handle)| {
                handle.join().err().map(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!("=== CPython {} ===\n{message}", python.version)
                })
            })
            .collect()
    });
    assert!(failures.is_empty(), "failed on {} CPython version(s):\n{}", failures.len(), failures.join("\n"));
}
