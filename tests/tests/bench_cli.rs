//! `agora bench` against a started server: a tiny run of every test, JSON parsed,
//! counts checked (never the speed: this machine's speed is not a test).

use std::process::Command;

mod python_support;

use agora_tests::{agora_bin, RawConn, Server, ServerOptions, AUTHKEY, HANG_GUARD};

/// Runs `agora COMMAND --address ADDRESS ARGS…` against `server` with its authkey;
/// its standard output, once it succeeded.
fn agora_at(server: &Server, command: &str, args: &[&str]) -> String {
    let output = Command::new(agora_bin())
        .args([command, "--address", &server.address])
        .args(args)
        .env("AGORA_AUTHKEY", std::str::from_utf8(&server.authkey).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("run agora {command}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "agora {command} failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Runs `agora bench` with `args` against `server`; returns the parsed JSON report.
fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let stdout = agora_at(server, "bench", &with_json);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bench JSON does not parse ({e}):\n{stdout}"))
}

/// The size `agora ls --json` reports for the object named `name` on `server`.
fn size_of(server: &Server, name: &str) -> serde_json::Value {
    let objects: serde_json::Value = serde_json::from_str(&agora_at(server, "ls", &["--json"])).unwrap();
    let object = objects.as_array().unwrap().iter().find(|o| o["name"] == name);
    object.unwrap_or_else(|| panic!("no {name} in {objects}"))["size"].clone()
}

/// The numbers of the keys `agora get` shows in the churns' dict (`key:` and 12 digits).
fn churned_keys(server: &Server) -> Vec<u64> {
    let repr = agora_at(server, "get", &["bench:churn"]);
    let mut keys: Vec<u64> = repr.split("'key:").skip(1).map(|rest| rest[..12].parse().unwrap()).collect();
    keys.sort_unstable();
    keys
}

fn result<'a>(report: &'a serde_json::Value, test: &str) -> &'a serde_json::Value {
    report["results"].as_array().unwrap().iter().find(|r| r["test"] == test).unwrap_or_else(|| panic!("no {test}"))
}

#[test]
fn every_test_makes_exactly_its_requests() {
    let server = Server::start();
    let tests = "echo,ping,set,get,append,add,qput,qget,queue,lock,lock-contended,event";
    let report = bench(&server, &["-n", "200", "-c", "3", "-P", "2", "-r", "50", "-d", "16", "-t", tests]);
    assert_eq!(report["clients"], 3);
    assert_eq!(report["pipeline"], 2);
    assert_eq!(report["transport"], "tcp");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 12, "one result per test, in order");
    for (r, name) in results.iter().zip(tests.split(',')) {
        assert_eq!(r["test"], name);
        assert_eq!(r["requests"], 200, "{name}: {r}");
        assert_eq!(r["errors"], 0, "{name}: {r}");
        assert_eq!(r["timed_out"], false, "{name}: {r}");
        let latency = &r["latency_us"];
        let (p50, p99, max) =
            (latency["p50"].as_f64().unwrap(), latency["p99"].as_f64().unwrap(), latency["max"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{name}: {latency}");
        assert!(r["requests_per_sec"].as_f64().unwrap() > 0.0);
        if name != "echo" {
            assert!(r["server_memory_after"].as_u64().unwrap() > 0, "memory comes from the server's stats");
        }
    }
    // The server really did the work: 200 sets landed in the dict, 200 appends in the list.
    let size = |name: &str| size_of(&server, name);
    assert_eq!(size("bench:list"), 200);
    assert!(size("bench:dict").as_u64().unwrap() <= 50, "keys come from the -r key space");
    assert_eq!(size("bench:queue"), 0, "qget took back what qput put");
}

/// `--blocking`: every test, its calls made from threads that wait for each answer
/// (two per connection with `-P 2`), over a Unix socket; the time limit still ends a
/// run that cannot finish.
#[test]
fn blocking_threads_make_exactly_their_requests() {
    let server = Server::start_with(ServerOptions { unix: true, ..Default::default() });
    let tests = "ping,set,get,append,add,qput,qget,queue,lock,lock-contended,event";
    let report = bench(&server, &["--blocking", "-n", "120", "-c", "3", "-P", "2", "-r", "50", "-t", tests]);
    assert_eq!(report["client"], "blocking");
    for name in tests.split(',') {
        let r = result(&report, name);
        assert_eq!(r["requests"], 120, "{name}: {r}");
        assert_eq!(r["errors"], 0, "{name}: {r}");
        assert_eq!(r["timed_out"], false, "{name}: {r}");
    }
    let asked = 1_000_000_000u64;
    let report =
        bench(&server, &["--blocking", "-n", &asked.to_string(), "-c", "2", "-t", "get", "--time-limit", "1s"]);
    let r = result(&report, "get");
    assert_eq!(r["timed_out"], true, "{r}");
    assert!(r["requests"].as_u64().unwrap() < asked, "{r}");
}

#[test]
fn fill_and_idle_report_memory_over_a_unix_socket() {
    let server = Server::start_with(ServerOptions { unix: true, ..Default::default() });
    let report = bench(&server, &["-c", "2", "-r", "300", "-t", "fill", "--idle", "20"]);
    assert_eq!(report["transport"], "unix");
    let fill = result(&report, "fill");
    assert_eq!(fill["requests"], 300, "fill inserts exactly -r keys");
    assert!(fill["bytes_per_entry"].is_number());
    let idle = &report["idle"];
    assert_eq!(idle["connected"], 20);
    assert!(idle["server_sessions"].as_u64().unwrap() > 20, "the idle connections and the admin one: {idle}");
}

/// `churn` starts from a fresh dict of `-r` keys each run and deletes exactly the key
/// it inserted `-r` samples before: the dict keeps exactly `-r` keys however many
/// samples run, and a second run (with another `-r`) starts over; `churn-random` too.
#[test]
fn churn_keeps_exactly_its_keys_run_after_run() {
    let server = Server::start();
    for keys in [40, 25] {
        let report = bench(&server, &["-n", "500", "-c", "3", "-P", "2", "-r", &keys.to_string(), "-t", "churn"]);
        let r = result(&report, "churn");
        assert_eq!(r["requests"], 500, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(size_of(&server, "bench:churn"), keys, "every delete found the oldest key, of this run's dict");
        assert_eq!(churned_keys(&server), (500..500 + keys).collect::<Vec<u64>>(), "the newest keys are left");
    }
    // At random, one call at a time (two workers could pick one slot at once): each
    // delete finds the key its slot holds, and the successor takes its place.
    let report = bench(&server, &["-n", "400", "-c", "1", "-P", "1", "-r", "30", "-t", "churn-random"]);
    assert_eq!(result(&report, "churn-random")["errors"], 0);
    assert_eq!(size_of(&server, "bench:churn"), 30);
    // Key s + g × 30 is slot s's after g samples picked it: one key per slot, and the
    // generations add up to the samples.
    let keys = churned_keys(&server);
    let mut slots: Vec<u64> = keys.iter().map(|k| k % 30).collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..30).collect::<Vec<u64>>(), "{keys:?}");
    assert_eq!(keys.iter().map(|k| k / 30).sum::<u64>(), 400, "{keys:?}");
}

/// `churn-grow` deletes the oldest key and inserts two new ones per sample: the dict
/// ends a key per sample bigger, holding exactly the keys no sample deleted.
#[test]
fn churn_grow_gains_a_key_per_sample() {
    let server = Server::start();
    let report = bench(&server, &["-n", "60", "-c", "3", "-P", "2", "-r", "80", "-t", "churn-grow"]);
    let r = result(&report, "churn-grow");
    assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(60), Some(0)), "{r}");
    assert_eq!(size_of(&server, "bench:churn"), 140);
    // Keys 0..60 deleted (the oldest 60 of the 80 it started with), 80..200 inserted.
    assert_eq!(churned_keys(&server), (60..200).collect::<Vec<u64>>());
    // More samples than keys, one call at a time: past the 20 it started with, each
    // delete finds a key an earlier sample inserted.
    let report = bench(&server, &["-n", "60", "-c", "1", "-P", "1", "-r", "20", "-t", "churn-grow"]);
    assert_eq!(result(&report, "churn-grow")["errors"], 0);
    assert_eq!(churned_keys(&server), (60..140).collect::<Vec<u64>>(), "keys 0..60 deleted, 20..140 inserted");
}

#[test]
fn embedded_server_and_text_output() {
    let output = Command::new(agora_bin())
        .args(["bench", "--embedded", "-n", "100", "-c", "2", "-t", "echo,get"])
        .output()
        .expect("run agora bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for needle in ["====== echo ======", "====== get ======", "100 requests", "requests/s", "p99.9"] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn help_explains_every_flag() {
    let output = Command::new(agora_bin()).args(["bench", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--clients",
        "--requests",
        "--pipeline",
        "--tests",
        "--data-size",
        "--keyspace",
        "--embedded",
        "--unix",
        "--json",
        "--idle",
        "--echo-address",
        "--serve-echo",
        "--echo-threads",
        "--threads",
        "--blocking",
        "--time-limit",
        "--address",
        "--authkey-file",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn a_test_cut_short_by_the_time_limit_says_so() {
    // A run the time limit cuts short is reported as such, with the requests it made
    // (the worker's share of the budget: `bench::Share`'s unit tests).
    let server = Server::start();
    let asked = 1_000_000_000u64;
    let report = bench(&server, &["-n", &asked.to_string(), "-c", "2", "-P", "4", "-t", "get", "--time-limit", "1s"]);
    let r = result(&report, "get");
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let made = r["requests"].as_u64().unwrap();
    assert!(0 < made && made < asked, "{r}");
}

/// `agora bench --serve-echo` running in the background; killed when dropped.
struct EchoServer {
    child: std::process::Child,
    address: String,
}

impl EchoServer {
    fn start(listen: &str, threads: bool) -> EchoServer {
        EchoServer::start_with(listen, threads, None)
    }

    /// With `handshake_key`, the threads model authenticating every connection with it.
    fn start_with(listen: &str, threads: bool, handshake_key: Option<&[u8]>) -> EchoServer {
        use std::io::BufRead;
        let mut cmd = Command::new(agora_bin());
        cmd.args(["bench", "--serve-echo", "--address", listen]);
        if threads {
            cmd.arg("--echo-threads");
        }
        if let Some(key) = handshake_key {
            cmd.arg("--echo-handshake").env("AGORA_AUTHKEY", std::str::from_utf8(key).unwrap());
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the echo server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening address=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        });
        let address = rx.recv_timeout(HANG_GUARD).expect("the echo server did not say where it listens");
        EchoServer { child, address }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both models of the floor's echo server give every frame back as it came, on
/// connections served at once, whether a frame comes in one write or in pieces, alone
/// or behind others; and `-t echo` makes exactly its requests against either.
#[test]
fn the_echo_server_gives_every_frame_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    for (listen, threads) in [
        ("127.0.0.1:0".to_owned(), false),
        ("127.0.0.1:0".to_owned(), true),
        (format!("unix:{}", dir.path().join("runtime.sock").display()), false),
        (format!("unix:{}", dir.path().join("threads.sock").display()), true),
    ] {
        let echo = EchoServer::start(&listen, threads);
        let clients: Vec<_> = (0..4u8)
            .map(|c| {
                let address = echo.address.clone();
                std::thread::spawn(move || {
                    let mut conn = RawConn::connect(&address);
                    let small = [c; 17];
                    let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8 ^ c).collect();
                    // The big frame in two writes with a pause between them.
                    let mut wire = Vec::new();
                    agora_proto::frame::encode(&big, &mut wire);
                    conn.send(&wire[..5_000]).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    conn.send(&wire[5_000..]).unwrap();
                    assert_eq!(conn.recv_frame().as_deref(), Some(&big[..]), "client {c}: the big frame");
                    // Three frames in one write: three back, in order.
                    let mut three = Vec::new();
                    for body in [&small[..], b"", &big[..1000]] {
                        agora_proto::frame::encode(body, &mut three);
                    }
                    conn.send(&three).unwrap();
                    assert_eq!(conn.recv_frame().as_deref(), Some(&small[..]), "client {c}");
                    assert_eq!(conn.recv_frame().as_deref(), Some(&b""[..]), "client {c}");
                    assert_eq!(conn.recv_frame().as_deref(), Some(&big[..1000]), "client {c}");
                })
            })
            .collect();
        for client in clients {
            client.join().expect("an echo client failed");
        }
        let output = Command::new(agora_bin())
            .args(["bench", "-t", "echo", "--echo-address", &echo.address, "-n", "300", "-c", "3", "-P", "4"])
            .arg("--json")
            .output()
            .expect("run agora bench");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{listen}: {}", String::from_utf8_lossy(&output.stderr));
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let r = result(&report, "echo");
        assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(300), Some(0)), "{listen}: {r}");
    }
}

/// Bad input ends only its own connection, in both models: a frame header claiming more
/// than the echo server takes is closed without an answer, a client that vanishes in
/// the middle of a frame is let go, and a connection open meanwhile is still served.
#[test]
fn the_echo_server_drops_a_bad_frame_and_a_vanished_client_alone() {
    let dir = tempfile::tempdir().unwrap();
    for threads in [false, true] {
        let listen = format!("unix:{}", dir.path().join(format!("bad-{threads}.sock")).display());
        let echo = EchoServer::start(&listen, threads);
        let mut bystander = RawConn::connect(&echo.address);
        let mut oversized = RawConn::connect(&echo.address);
        oversized.send(&(200u32 << 20).to_be_bytes()).unwrap(); // 200 MiB: over the 64 MiB it takes
        assert_eq!(oversized.read_to_end().unwrap(), b"", "threads={threads}: closed, nothing answered");
        let mut vanished = RawConn::connect(&echo.address);
        let mut half = Vec::new();
        agora_proto::frame::encode(&[9; 1000], &mut half);
        vanished.send(&half[..500]).unwrap();
        drop(vanished);
        bystander.send_frame(b"still here").unwrap();
        assert_eq!(bystander.recv_frame().as_deref(), Some(&b"still here"[..]), "threads={threads}");
        let mut newcomer = RawConn::connect(&echo.address);
        newcomer.send_frame(b"and me").unwrap();
        assert_eq!(newcomer.recv_frame().as_deref(), Some(&b"and me"[..]), "threads={threads}");
    }
}

/// With `--echo-handshake` the threads model authenticates every connection as a
/// manager does: a wrong key is refused and its connection closed; one-shot connections
/// one after another (as proxy creation makes them) are each authenticated and
/// answered; connections held open each keep a thread, and a newcomer is served
/// meanwhile.
#[test]
fn the_threads_echo_authenticates_every_connection_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let echo = EchoServer::start_with(&format!("unix:{}", dir.path().join("auth.sock").display()), true, Some(AUTHKEY));
    let authenticated = || {
        let mut conn = RawConn::connect(&echo.address);
        assert!(conn.handshake(AUTHKEY), "the right key is welcomed");
        conn
    };
    let mut stranger = RawConn::connect(&echo.address);
    assert!(!stranger.handshake(b"not the key"), "a wrong key is refused");
    assert_eq!(stranger.read_to_end().unwrap(), b"", "and its connection closed unanswered");
    // A client that goes away in the middle of its handshake ends only its own thread's
    // connection: that thread goes back to accepting.
    for _ in 0..3 {
        let mut vanished = RawConn::connect(&echo.address);
        assert!(vanished.recv_frame().is_some_and(|challenge| challenge.starts_with(b"#CHALLENGE#")));
        drop(vanished);
    }
    for i in 0..30u8 {
        let mut one_shot = authenticated();
        one_shot.send_frame(&[i; 9]).unwrap();
        assert_eq!(one_shot.recv_frame(), Some(vec![i; 9]), "one-shot connection {i}");
    }
    let mut held: Vec<RawConn> = (0..6).map(|_| authenticated()).collect();
    let mut newcomer = authenticated();
    newcomer.send_frame(b"newcomer").unwrap();
    assert_eq!(newcomer.recv_frame().as_deref(), Some(&b"newcomer"[..]));
    for (i, conn) in held.iter_mut().enumerate() {
        conn.send_frame(format!("held {i}").as_bytes()).unwrap();
        assert_eq!(conn.recv_frame(), Some(format!("held {i}").into_bytes()));
    }
}

/// Every CPython version found authenticates with the threads model's handshake as with
/// its own manager's (and is refused with a wrong key), and reads its request back.
#[test]
fn stock_cpython_clients_authenticate_with_the_threads_echo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpython.sock");
    let _echo = EchoServer::start_with(&format!("unix:{}", path.display()), true, Some(AUTHKEY));
    let script = r#"
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
try:
    Client(sys.argv[1], authkey=b"not the key")
    print("a wrong key was welcomed")
except AuthenticationError:
    print("refused")
c = Client(sys.argv[1], authkey=sys.argv[2].encode())
c.send((None, "create", ("dict",), {}))
print(c.recv())
"#;
    let key = std::str::from_utf8(AUTHKEY).unwrap();
    python_support::for_each_python(|python| {
        let mut cmd = Command::new(&python.exe);
        cmd.args(["-c", script, path.to_str().unwrap(), key]);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let done = python_support::run(cmd, HANG_GUARD);
        assert!(done.ok(), "{}", done.transcript());
        assert_eq!(done.stdout, "refused\n(None, 'create', ('dict',), {})\n", "{}", done.transcript());
    });
}

/// `bench/py_manager_bench.py` measures proxy creation (four authenticated one-shot
/// connections per op) and a method call against CPython's manager, agora and the
/// floor, with each server's and the clients' own CPU per op; against a floor that does not authenticate, or
/// none at all, it stops with a clear error instead of hanging.
#[test]
fn the_python_bench_measures_proxy_creation_against_its_floor() {
    let server = Server::start_unix();
    let dir = tempfile::tempdir().unwrap();
    let echo = EchoServer::start_with(
        &format!("unix:{}", dir.path().join("floor.sock").display()),
        true,
        Some(&server.authkey),
    );
    let json = dir.path().join("py.json");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/py_manager_bench.py");
    let python = python_support::pythons().last().expect("a CPython");
    let bench_against = |floor_address: &str, floor_pid: u32, json: &std::path::Path| {
        let echo_pid = floor_pid.to_string();
        let args = [
            "--agora",
            &server.address,
            "--agora-pid",
            &server.pid().to_string(),
            "--echo",
            floor_address,
            "--echo-pid",
            &echo_pid,
            "--ops",
            "proxy_create,dict_get",
            "--clients",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0.05",
            "--json",
            json.to_str().unwrap(),
        ]
        .map(str::to_owned);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python_support::run(python_support::command_at(python, &script, &args, &server.authkey), HANG_GUARD)
    };
    let done = bench_against(&echo.address, echo.child.id(), &json);
    assert!(done.ok(), "{}", done.transcript());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    for row in rows {
        for target in ["cpython", "agora", "echo"] {
            assert!(row[target]["ops"].as_u64().unwrap() > 0, "{target}: {row}");
            assert!(row[target]["server_cpu_us"].as_f64().is_some(), "{target}: {row}");
            // The clients' own CPU: every op costs its process something.
            assert!(row[target]["client_cpu_us"].as_f64().is_some_and(|us| us > 0.0), "{target}: {row}");
        }
        assert!(row["floor_cpu_ratio"].as_f64().is_some(), "{row}");
        // What the clients' CPU allows: a server that costs nothing allows at least what
        // one that costs the floor's does.
        let free = row["client_bound_ratio"].as_f64().expect("client_bound_ratio");
        let floored = row["floor_bound_ratio"].as_f64().expect("floor_bound_ratio");
        assert!(free >= floored && floored > 0.0, "{row}");
    }
    let unauthenticated = EchoServer::start(&format!("unix:{}", dir.path().join("plain.sock").display()), true);
    let refused = bench_against(&unauthenticated.address, unauthenticated.child.id(), &dir.path().join("plain.json"));
    assert!(!refused.ok() && refused.stderr.contains("does not authenticate"), "{}", refused.transcript());
    let nobody = format!("unix:{}", dir.path().join("nobody.sock").display());
    let absent = bench_against(&nobody, std::process::id(), &dir.path().join("absent.json"));
    assert!(!absent.ok() && absent.stderr.contains("cannot connect to the echo server"), "{}", absent.transcript());
}

#[test]
fn echo_threads_needs_serve_echo() {
    let output = Command::new(agora_bin()).args(["bench", "--echo-threads", "-t", "echo"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--serve-echo"), "{stderr}");
}

#[test]
fn the_echo_handshake_needs_the_threads_model_and_a_key() {
    let output = Command::new(agora_bin())
        .args(["bench", "--serve-echo", "--echo-handshake", "-a", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--echo-threads"), "{stderr}");
    // No key anywhere (no variable, no key file where the default looks): said, not guessed.
    let nowhere = tempfile::tempdir().unwrap();
    let output = Command::new(agora_bin())
        .args(["bench", "--serve-echo", "--echo-threads", "--echo-handshake", "-a", "127.0.0.1:0"])
        .env_remove("AGORA_AUTHKEY")
        .env_remove("AGORA_AUTHKEY_FILE")
        .env("XDG_RUNTIME_DIR", nowhere.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("no authkey"), "{stderr}");
}

/// A CPython client's request frame body `(token, method, (), {})`, pickled as
/// `multiprocessing.connection` sends it.
fn python_request(method: &str) -> Vec<u8> {
    use agora_proto::Value;
    let request = Value::Tuple(vec![
        Value::Str("7f3b2c1d9e80".into()),
        Value::Str(method.into()),
        Value::Tuple(vec![]),
        Value::Dict(Default::default()),
    ]);
    agora_proto::pickle::encode(&request)
}

/// The threads model's floor hands a lock off as CPython's manager does: an `acquire`
/// is answered only once no other connection holds the lock, a `release` frees it, and
/// a connection that goes away holding it frees it too. Other frames are echoed at once.
#[test]
fn the_threads_echo_hands_a_lock_off_between_connections() {
    let dir = tempfile::tempdir().unwrap();
    let echo = EchoServer::start(&format!("unix:{}", dir.path().join("lock.sock").display()), true);
    let (acquire, release) = (python_request("acquire"), python_request("release"));
    let mut first = RawConn::connect(&echo.address);
    first.send_frame(&acquire).unwrap();
    assert_eq!(first.recv_frame(), Some(acquire.clone()), "a free lock is taken at once");
    // A second connection's acquire waits, on its own thread here, for the first's release.
    let (answered, answer) = std::sync::mpsc::channel();
    let second = {
        let (address, acquire) = (echo.address.clone(), acquire.clone());
        std::thread::spawn(move || {
            let mut second = RawConn::connect(&address);
            second.send_frame(&acquire).unwrap();
            let _ = answered.send(second.recv_frame());
            second
        })
    };
    let mut bystander = RawConn::connect(&echo.address);
    bystander.send_frame(&python_request("get")).unwrap();
    assert_eq!(bystander.recv_frame(), Some(python_request("get")), "other calls are echoed meanwhile");
    assert!(
        answer.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
        "an acquire of a held lock is answered only once it is released"
    );
    first.send_frame(&release).unwrap();
    assert_eq!(first.recv_frame(), Some(release.clone()));
    assert_eq!(answer.recv_timeout(HANG_GUARD).expect("the release handed the lock on"), Some(acquire.clone()));
    // The second goes away holding it: the next acquire is answered all the same.
    drop(second.join().unwrap());
    first.send_frame(&acquire).unwrap();
    assert_eq!(first.recv_frame(), Some(acquire), "a connection that went away frees what it held");
}
