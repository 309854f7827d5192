//! `tls://` listeners against the real `agora` binary, with certificates made at test
//! time (rcgen): the native client over TLS, reconnecting over TLS, a wrong CA and a
//! name mismatch refused, mutual TLS refusing a client without a certificate or with
//! one from another CA, reloading the certificate on SIGHUP while a connection stays
//! open, what a capture of the listener's traffic shows (neither the authkey nor
//! stored values, where the same traffic over plain TCP shows them), and the settings
//! the server refuses to start with; a cluster follower relaying a TLS client to the
//! leader; TLS on the cluster's peer link (`--peer-tls-ca`); and stock CPython managers over TLS with `serializer="agora+tls"`
//! (`python/agora/tls.py`), mutual TLS included, on every CPython found.

mod python_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_client::{ClientTls, Error, Manager, ManagerOptions};
use agora_tests::cluster::Cluster;
use agora_tests::{agora_bin, Server, ServerOptions, AUTHKEY};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    fn client(&self) -> Leaf {
        self.leaf(&[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("agora client"));
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// The PEM files a test server reads, in a directory of their own.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes the server's certificate and key; returns the flags that name them.
    fn server_flags(&self, leaf: &Leaf) -> Vec<String> {
        let cert = self.write("cert.pem", &leaf.cert);
        let key = self.write("key.pem", &leaf.key);
        vec!["--tls-cert".into(), path_arg(&cert), "--tls-key".into(), path_arg(&key)]
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// `agora serve` on `tls://127.0.0.1:<free port>` with `args`.
fn tls_server(args: Vec<String>) -> Server {
    Server::start_at("tls://127.0.0.1:0", ServerOptions { args, ..Default::default() })
}

fn trusting(ca: &Ca) -> ClientTls {
    ClientTls::from_ca_pem(ca.pem().as_bytes()).unwrap()
}

async fn connect(address: &str, tls: ClientTls) -> agora_client::Result<Manager> {
    Manager::connect_with(address, AUTHKEY, ManagerOptions::new().reconnect(false).tls(tls)).await
}

/// The message of a TLS error, or a panic naming what came instead.
fn tls_error(result: agora_client::Result<Manager>) -> String {
    match result {
        Err(Error::Tls(message)) => message,
        Err(other) => panic!("expected a TLS error, got {other:?}"),
        Ok(m) => panic!("expected a TLS error, but connected: {m:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_client_over_tls_stores_reads_and_reconnects() {
    let ca = Ca::new("agora test CA");
    let files = Files::new();
    let mut server = tls_server(files.server_flags(&ca.server(&["localhost", "127.0.0.1"])));
    assert!(server.address.starts_with("tls://127.0.0.1:"), "{}", server.address);
    let manager = Manager::connect_with(
        &server.address,
        AUTHKEY,
        ManagerOptions::new().reconnect_deadline(Duration::from_secs(20)).tls(trusting(&ca)),
    )
    .await
    .unwrap();
    let scores = manager.dict::<String, i64>("scores").await.unwrap();
    scores.insert(&"ada".to_owned(), &36).await.unwrap();
    // A reply larger than any TLS record and socket buffer comes through whole.
    let big = manager.list::<String>("big").await.unwrap();
    let item = "x".repeat(1 << 20);
    big.append(&item).await.unwrap();
    assert_eq!(big.get(0).await.unwrap(), Some(item));
    assert_eq!(scores.get(&"ada".to_owned()).await.unwrap(), Some(36));

    // Dialled by its DNS name, the same certificate is valid too.
    let port = server.address.rsplit(':').next().unwrap().to_owned();
    let by_name = connect(&format!("tls://localhost:{port}"), trusting(&ca)).await.unwrap();
    by_name.ping().await.unwrap();

    // The server restarts on the same address: the manager reconnects, over TLS again.
    let address = server.address.clone();
    server.terminate();
    drop(server);
    let server = Server::start_at(
        &address,
        ServerOptions { args: files.server_flags(&ca.server(&["localhost", "127.0.0.1"])), ..Default::default() },
    );
    let again = manager.dict::<String, i64>("scores").await.unwrap();
    again.insert(&"grace".to_owned(), &45).await.unwrap();
    assert_eq!(again.get(&"grace".to_owned()).await.unwrap(), Some(45));
    assert_eq!(again.get(&"ada".to_owned()).await.unwrap(), None, "a new (in-memory) server answered");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_another_name_is_refused_and_says_why() {
    let ca = Ca::new("agora test CA");
    let files = Files::new();
    let server = tls_server(files.server_flags(&ca.server(&["localhost", "127.0.0.1"])));

    let stranger = Ca::new("some other CA");
    let why = tls_error(connect(&server.address, trusting(&stranger)).await);
    assert!(why.contains("not signed by a CA in this client's CA bundle"), "{why}");

    let why = tls_error(connect(&server.address, trusting(&ca).server_name("agora.example")).await);
    assert!(why.contains("not valid for the name 'agora.example'"), "{why}");

    let no_bundle = Manager::connect_with(&server.address, AUTHKEY, ManagerOptions::new().reconnect(false)).await;
    let Err(Error::Tls(why)) = no_bundle else { panic!("a tls:// address without a CA bundle must fail") };
    assert!(why.contains("CA bundle"), "{why}");

    // A TLS client at a plain listener is told so.
    let plain = Server::start();
    let why = tls_error(connect(&format!("tls://{}", plain.address), trusting(&ca)).await);
    assert!(why.contains("does not speak TLS here"), "{why}");

    // A plain client at a TLS listener is dropped when its handshake time is up, and told
    // what to check.
    let quick = tls_server(
        [files.server_flags(&ca.server(&["127.0.0.1"])), vec!["--handshake-timeout".into(), "1s".into()]].concat(),
    );
    let plain_dial = quick.address.strip_prefix("tls://").unwrap();
    match Manager::connect_with(plain_dial, AUTHKEY, ManagerOptions::new().reconnect(false)).await {
        Err(Error::ConnectionLost(why)) => assert!(why.contains("dial it as tls://host:port"), "{why}"),
        other => panic!("a plain client at a TLS listener must fail: {other:?}"),
    }

    // The server is unharmed by the refused attempts.
    connect(&server.address, trusting(&ca)).await.unwrap().ping().await.unwrap();
    server.wait_for_log("TLS handshake failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let ca = Ca::new("agora test CA");
    let client_ca = Ca::new("agora clients CA");
    let files = Files::new();
    let mut args = files.server_flags(&ca.server(&["127.0.0.1"]));
    args.extend(["--tls-client-ca".into(), path_arg(&files.write("clients.pem", &client_ca.pem()))]);
    let server = tls_server(args);

    let why = tls_error(connect(&server.address, trusting(&ca)).await);
    assert!(why.contains("requires a client certificate"), "{why}");

    let outsider = Ca::new("not the clients CA").client();
    let with_outsider = trusting(&ca).with_client_cert(outsider.cert.as_bytes(), outsider.key.as_bytes()).unwrap();
    let why = tls_error(connect(&server.address, with_outsider).await);
    assert!(why.contains("refused this client's certificate"), "{why}");

    // The server says why, naming the peer; the refusals harmed nothing else.
    server.wait_for_log("TLS handshake failed: peer sent no certificates");
    server.wait_for_log("TLS handshake failed: invalid peer certificate: UnknownIssuer");

    let member = client_ca.client();
    let cert = files.write("worker.pem", &member.cert);
    let key = files.write("worker-key.pem", &member.key);
    let with_member = trusting(&ca).with_client_cert_files(&cert, &key).unwrap();
    let manager = connect(&server.address, with_member).await.unwrap();
    let counter = manager.value::<i64>("counter", &0).await.unwrap();
    counter.set(&7).await.unwrap();
    assert_eq!(counter.get().await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let files = Files::new();
    let server = tls_server(files.server_flags(&old_ca.server(&["127.0.0.1"])));
    let before = connect(&server.address, trusting(&old_ca)).await.unwrap();
    let kept = before.dict::<String, String>("kept").await.unwrap();
    kept.insert(&"k".to_owned(), &"before".to_owned()).await.unwrap();

    // The same files, new contents; then SIGHUP.
    files.server_flags(&new_ca.server(&["127.0.0.1"]));
    server.signal(libc::SIGHUP);
    server.wait_for_log("TLS certificate reloaded");

    // The connection opened before keeps working, on the session it negotiated.
    kept.insert(&"k".to_owned(), &"after".to_owned()).await.unwrap();
    assert_eq!(kept.get(&"k".to_owned()).await.unwrap().as_deref(), Some("after"));
    // A new connection sees the new certificate: the old CA no longer vouches for it.
    let why = tls_error(connect(&server.address, trusting(&old_ca)).await);
    assert!(why.contains("not signed by a CA in this client's CA bundle"), "{why}");
    let after = connect(&server.address, trusting(&new_ca)).await.unwrap();
    assert_eq!(
        after.dict::<String, String>("kept").await.unwrap().get(&"k".to_owned()).await.unwrap().as_deref(),
        Some("after")
    );

    // A reload that fails changes nothing.
    files.write("key.pem", "not a key");
    server.signal(libc::SIGHUP);
    server.wait_for_log("TLS reload (SIGHUP) failed");
    connect(&server.address, trusting(&new_ca)).await.unwrap().ping().await.unwrap();
    before.ping().await.unwrap();
}

/// A TCP forwarder between a client and `upstream` that records every byte both ways.
struct Recorder {
    address: String,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(upstream: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (upstream, recorded) = (upstream.to_owned(), bytes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else { return };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let recorded = recorded.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Recorder { address, bytes }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        self.bytes.lock().unwrap().windows(needle.len()).any(|w| w == needle)
    }

    fn len(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
}

const SECRET_VALUE: &str = "agora-tls-capture-7f3e9b1c-do-not-leak";

/// Stores and reads back [`SECRET_VALUE`] through a fresh connection to `address`.
async fn store_and_read_secret(manager: Manager) {
    let secrets = manager.dict::<String, String>("secrets").await.unwrap();
    secrets.insert(&"launch-code".to_owned(), &SECRET_VALUE.to_owned()).await.unwrap();
    assert_eq!(secrets.get(&"launch-code".to_owned()).await.unwrap().as_deref(), Some(SECRET_VALUE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_of_tls_traffic_shows_neither_the_authkey_nor_stored_values() {
    let ca = Ca::new("agora test CA");
    let files = Files::new();

    // The control: the same exchange over plain TCP shows the value and the handshake.
    let plain = Server::start();
    let plain_recorder = Recorder::start(&plain.address);
    let options = ManagerOptions::new().reconnect(false);
    store_and_read_secret(Manager::connect_with(&plain_recorder.address, AUTHKEY, options).await.unwrap()).await;
    assert!(plain_recorder.contains(SECRET_VALUE.as_bytes()), "the recorder sees plain traffic");
    assert!(plain_recorder.contains(b"#CHALLENGE#"), "the plain handshake is visible");

    let server = tls_server(files.server_flags(&ca.server(&["127.0.0.1"])));
    let upstream = server.address.strip_prefix("tls://").unwrap();
    let recorder = Recorder::start(upstream);
    let through = format!("tls://{}", recorder.address);
    store_and_read_secret(connect(&through, trusting(&ca)).await.unwrap()).await;
    assert!(recorder.len() > SECRET_VALUE.len(), "traffic was recorded");
    assert!(!recorder.contains(SECRET_VALUE.as_bytes()), "a stored value crossed the wire in clear");
    assert!(!recorder.contains(&SECRET_VALUE.as_bytes()[..16]), "part of a stored value crossed in clear");
    assert!(!recorder.contains(AUTHKEY), "the authkey crossed the wire in clear");
    assert!(!recorder.contains(b"#CHALLENGE#"), "the authkey handshake runs inside TLS");
    assert!(!recorder.contains(b"launch-code"), "a key crossed the wire in clear");

    // A stock CPython client is sent the authkey itself inside nested proxies when it
    // is on this machine (so they reconnect): in clear over plain TCP, not over TLS.
    let python = &python_support::pythons()[0];
    let ca_file = files.write("ca.pem", &ca.pem());
    let run_python = |address: &str, serializer: &str| {
        let mut cmd = Command::new(&python.exe);
        cmd.args(["-c", NESTED_PROXY_SCRIPT])
            .env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("python"))
            .env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap())
            .env("AGORA_ADDRESS", address)
            .env("AGORA_TLS_CA", &ca_file)
            .env("SERIALIZER", serializer);
        let out = cmd.output().expect("run python");
        assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    run_python(&plain_recorder.address, "pickle");
    assert!(plain_recorder.contains(AUTHKEY), "the control shows the authkey in clear");
    run_python(&recorder.address, "agora+tls");
    assert!(!recorder.contains(AUTHKEY), "the authkey crossed the TLS listener's wire in clear");
    assert!(!recorder.contains(SECRET_VALUE.as_bytes()), "a value a CPython client stored crossed in clear");
}

/// A stock CPython manager storing a list (holding [`SECRET_VALUE`]) in a dict and
/// using the nested proxy it gets back.
const NESTED_PROXY_SCRIPT: &str = r#"
import os
import agora, agora.tls
from multiprocessing.managers import SyncManager
m = SyncManager(agora.parse_address(os.environ["AGORA_ADDRESS"]), os.environ["AGORA_AUTHKEY"].encode(),
                serializer=os.environ["SERIALIZER"])
m.connect()
outer = m.dict()
outer["inner"] = m.list(["agora-tls-capture-7f3e9b1c-do-not-leak"])
inner = outer["inner"]
assert list(inner) == ["agora-tls-capture-7f3e9b1c-do-not-leak"], list(inner)
"#;

#[test]
fn stock_cpython_managers_connect_over_tls_with_the_agora_tls_transport() {
    let ca = Ca::new("agora test CA");
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.pem());
    let mut args = files.server_flags(&ca.server(&["127.0.0.1"]));
    args.extend(["--expose".into(), "get_shared=dict:shared".into()]);
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("python");
    let client_ca = Ca::new("agora clients CA");
    let member = client_ca.client();
    let (client_cert, client_key) =
        (files.write("worker.pem", &member.cert), files.write("worker-key.pem", &member.key));
    let mut mutual_args = args.clone();
    mutual_args.extend(["--tls-client-ca".into(), path_arg(&files.write("clients.pem", &client_ca.pem()))]);
    python_support::for_each_python(|python| {
        let server = tls_server(args.clone());
        let mutual = tls_server(mutual_args.clone());
        // A list a Rust client stores by reference: the CPython client must rebuild it
        // with the TLS transport and this listener's address.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _keep = rt.block_on(async {
            let manager = connect(&server.address, trusting(&ca)).await.unwrap();
            let list = manager.new_list::<String>(&["from rust".to_owned()]).await.unwrap();
            let shared = manager.dict::<String, agora_proto::Value>("shared").await.unwrap();
            let reference = agora_proto::reference::ObjectRef::new(list.id(), "list").to_value();
            shared.insert(&"from_rust".into(), &reference).await.unwrap();
            (manager, list)
        });
        let script = package.join("tests").join("test_tls.py");
        let mut cmd = python_support::command_at(python, &script, &[], AUTHKEY);
        cmd.env("PYTHONPATH", &package)
            .env("AGORA_ADDRESS", server.address.strip_prefix("tls://").unwrap())
            .env("AGORA_TLS_CA", &ca_file)
            .env_remove("AGORA_TLS_CLIENT_CERT")
            .env_remove("AGORA_TLS_CLIENT_KEY")
            .env_remove("AGORA_TLS_SERVER_NAME")
            .env("AGORA_TEST_MTLS_ADDRESS", mutual.address.strip_prefix("tls://").unwrap())
            .env("AGORA_TEST_CLIENT_CERT", &client_cert)
            .env("AGORA_TEST_CLIENT_KEY", &client_key);
        let done = python_support::run(cmd, Duration::from_secs(120));
        assert!(
            done.ok(),
            "test_tls.py failed on {}\n{}\n--- server log\n{}",
            python.version,
            done.transcript(),
            server.log()
        );
        // What the CPython client stored is there for a Rust client, over TLS too.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let manager = connect(&server.address, trusting(&ca)).await.unwrap();
            let shared = manager.dict::<String, String>("shared").await.unwrap();
            assert_eq!(shared.get(&"from".to_owned()).await.unwrap().as_deref(), Some("python"));
        });
    });
}

#[test]
fn admin_commands_reach_a_tls_listener_with_a_ca_bundle() {
    let ca = Ca::new("agora test CA");
    let client_ca = Ca::new("agora clients CA");
    let files = Files::new();
    let mut args = files.server_flags(&ca.server(&["127.0.0.1"]));
    args.extend(["--tls-client-ca".into(), path_arg(&files.write("clients.pem", &client_ca.pem()))]);
    let server = tls_server(args);
    let ca_file = path_arg(&files.write("ca.pem", &ca.pem()));
    let member = client_ca.client();
    let cert = path_arg(&files.write("admin.pem", &member.cert));
    let key = path_arg(&files.write("admin-key.pem", &member.key));
    let admin = |extra: &[&str]| {
        Command::new(agora_bin())
            .args(["stats", "--address", &server.address])
            .args(extra)
            .env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap())
            .env_remove("AGORA_TLS_CA")
            .env_remove("AGORA_TLS_CLIENT_CERT")
            .env_remove("AGORA_TLS_CLIENT_KEY")
            .output()
            .expect("run agora stats")
    };
    let ok = admin(&["--tls-ca", &ca_file, "--tls-client-cert", &cert, "--tls-client-key", &key]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("sessions"), "{}", String::from_utf8_lossy(&ok.stdout));
    let no_ca = admin(&[]);
    assert!(!no_ca.status.success());
    let err = String::from_utf8_lossy(&no_ca.stderr);
    assert!(err.contains("--tls-ca"), "{err}");
    let no_cert = admin(&["--tls-ca", &ca_file]);
    assert!(!no_cert.status.success());
    let err = String::from_utf8_lossy(&no_cert.stderr);
    assert!(err.contains("requires a client certificate"), "{err}");
}

/// `Manager::from_env` dials a `tls://` address with the CA bundle in `AGORA_TLS_CA`
/// (the README's quick start, run as written, against a TLS listener).
#[test]
fn from_env_reads_the_tls_variables() {
    let ca = Ca::new("agora test CA");
    let files = Files::new();
    let server = tls_server(files.server_flags(&ca.server(&["127.0.0.1"])));
    let ca_file = path_arg(&files.write("ca.pem", &ca.pem()));
    let quickstart = |ca: Option<&str>| {
        let mut cmd = Command::new(agora_tests::example_binary("readme_quickstart"));
        cmd.env("AGORA_ADDRESS", &server.address).env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap());
        cmd.env_remove("AGORA_AUTHKEY_FILE").env_remove("AGORA_TLS_CLIENT_CERT").env_remove("AGORA_TLS_CLIENT_KEY");
        match ca {
            Some(ca) => cmd.env("AGORA_TLS_CA", ca),
            None => cmd.env_remove("AGORA_TLS_CA"),
        };
        cmd.output().expect("run the quick start")
    };
    let out = quickstart(Some(&ca_file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice has 4");
    let out = quickstart(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set AGORA_TLS_CA"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `agora bench` measures a TLS listener with the typed client (the raw one is plain
/// TCP/Unix only, and says so).
#[test]
fn agora_bench_measures_a_tls_listener() {
    let ca = Ca::new("agora test CA");
    let files = Files::new();
    let server = tls_server(files.server_flags(&ca.server(&["127.0.0.1"])));
    let ca_file = path_arg(&files.write("ca.pem", &ca.pem()));
    let bench = |extra: &[&str]| {
        Command::new(agora_bin())
            .args(["bench", "--address", &server.address, "-c", "4", "-n", "400", "-t", "set,get", "--json"])
            .args(extra)
            .env("AGORA_AUTHKEY", std::str::from_utf8(AUTHKEY).unwrap())
            .env_remove("AGORA_TLS_CA")
            .output()
            .expect("run agora bench")
    };
    let out = bench(&["--tls-ca", &ca_file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["transport"], "tls");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report}");
    assert!(results.iter().all(|r| r["errors"] == 0 && r["requests_per_sec"].as_f64().unwrap() > 0.0), "{report}");
    let raw = bench(&["--tls-ca", &ca_file, "--raw"]);
    assert!(!raw.status.success());
    assert!(String::from_utf8_lossy(&raw.stderr).contains("drop --raw"), "{}", String::from_utf8_lossy(&raw.stderr));
}

/// Runs `agora serve` with `args`, expecting it to refuse to start; returns its stderr.
fn refused_to_start(args: &[&str]) -> String {
    let out = Command::new(agora_bin())
        .arg("serve")
        .args(args)
        .env("AGORA_AUTHKEY", "k")
        .env_remove("AGORA_LISTEN")
        .output()
        .expect("run agora serve");
    assert!(!out.status.success(), "agora serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_server_refuses_tls_settings_that_cannot_work() {
    let files = Files::new();
    let ca = Ca::new("agora test CA");
    let leaf = ca.server(&["127.0.0.1"]);
    let cert = path_arg(&files.write("cert.pem", &leaf.cert));
    let key = path_arg(&files.write("key.pem", &leaf.key));
    let other_key = path_arg(&files.write("other-key.pem", &ca.server(&["127.0.0.1"]).key));

    let err = refused_to_start(&["--listen", "tls://127.0.0.1:0"]);
    assert!(err.contains("needs a certificate and key (--tls-cert, --tls-key)"), "{err}");
    let err = refused_to_start(&["--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key]);
    assert!(err.contains("no listen address is tls://"), "{err}");
    let err = refused_to_start(&["--listen", "tls://127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(err.contains("TLS certificate") && err.contains("other-key.pem"), "{err}");
    let missing = path_arg(&files.path("missing.pem"));
    let err = refused_to_start(&["--listen", "tls://127.0.0.1:0", "--tls-cert", &missing, "--tls-key", &key]);
    assert!(err.contains("cannot read TLS certificate") && err.contains("missing.pem"), "{err}");
    let err = refused_to_start(&["--listen", "tls://127.0.0.1:0", "--tls-cert", &cert]);
    assert!(err.contains("--tls-cert needs --tls-key"), "{err}");
}

/// A follower ends a TLS client's TLS with its own certificate and relays the client
/// to the leader, which serves it.
#[test]
fn a_cluster_follower_relays_tls_clients_to_the_leader() {
    let ca = Ca::new("agora cluster CA");
    let files = Files::new();
    let mut flags = files.server_flags(&ca.server(&["localhost", "127.0.0.1"]));
    flags.extend(["--listen".to_owned(), "tls://127.0.0.1:0".to_owned()]);
    let cluster = Cluster::start_with(3, flags);
    let leader = cluster.wait_for_leader();
    let tls_address = |i: usize| {
        let log = cluster.node(i).expect("running").log();
        let line = log.lines().find(|l| l.contains("listening address=tls://")).expect("a tls:// listener").to_owned();
        line.split("listening address=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
    };
    let via_follower = tls_address((leader + 1) % 3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let m = connect(&via_follower, trusting(&ca)).await.expect("TLS through a follower");
        let d = m.dict::<String, i64>("tls").await.unwrap();
        d.insert(&"k".to_owned(), &7).await.unwrap();
        // The leader has it: the follower relayed the client rather than serving it.
        let on_leader = Manager::connect(cluster.client_address(leader), AUTHKEY).await.unwrap();
        assert_eq!(on_leader.dict::<String, i64>("tls").await.unwrap().get(&"k".to_owned()).await.unwrap(), Some(7));
        // A client that does not trust the CA is refused in the handshake, as by a single server.
        assert!(tls_error(connect(&via_follower, trusting(&Ca::new("another CA"))).await).contains("certificate"));
    });
}

/// The bytes every peer link of `cluster` carried while a client of a follower stored
/// `value` and read it back through the leader (what a capture of the links shows).
fn peer_traffic_of_a_write(cluster: &Cluster, value: &str) -> Vec<u8> {
    let leader = cluster.wait_for_leader();
    let follower = (leader + 1) % cluster.len();
    (0..cluster.len()).for_each(|i| cluster.proxy(i).capture());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let through_follower = Manager::connect(cluster.client_address(follower), AUTHKEY).await.unwrap();
        let d = through_follower.dict::<String, String>("peer-link").await.unwrap();
        d.insert(&"k".to_owned(), &value.to_owned()).await.unwrap();
        assert_eq!(d.get(&"k".to_owned()).await.unwrap().as_deref(), Some(value), "read back through the follower");
    });
    (0..cluster.len()).flat_map(|i| cluster.proxy(i).captured()).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// With --peer-tls-ca the peer link is TLS: the nodes form the cluster and replicate
/// over it, a follower relays its client to the leader over it, and a capture of the
/// peer links shows no stored value, where the same write over a plain peer link shows
/// it. `agora cluster status` needs the CA too, and says why without it.
#[test]
fn peer_tls_encrypts_the_cluster_link_and_agora_cluster_speaks_it() {
    let value = "a value only the nodes should see 7f3a";
    let plain = Cluster::start(3);
    let captured = peer_traffic_of_a_write(&plain, value);
    assert!(contains(&captured, value.as_bytes()), "over plain TCP the peer link shows the value");
    drop(plain);

    let ca = Ca::new("agora peers CA");
    let files = Files::new();
    // The peers reach each other at 127.0.0.1 (the test's proxies); `agora cluster`
    // and the harness ask each node at its own 127.0.0.2x address.
    let names = ["127.0.0.1", "127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let mut flags = files.server_flags(&ca.server(&names));
    let ca_file = files.write("peer-ca.pem", &ca.pem());
    flags.extend(["--peer-tls-ca".to_owned(), path_arg(&ca_file)]);
    let cluster = Cluster::start_with(3, flags);
    let captured = peer_traffic_of_a_write(&cluster, value);
    assert!(captured.len() > 1000, "the write crossed the peer links ({} bytes)", captured.len());
    assert!(!contains(&captured, value.as_bytes()), "over TLS the peer link does not show the value");

    let leader = cluster.wait_for_leader();
    let status = |extra: &[&str]| {
        let peer = cluster.peer_address(leader);
        let key = path_arg(cluster.key_file());
        let mut args = vec!["cluster", "status", "--peer", &peer, "--authkey-file", &key];
        args.extend_from_slice(extra);
        Command::new(agora_bin()).args(&args).env_remove("AGORA_AUTHKEY").output().expect("run agora cluster")
    };
    let with_ca = status(&["--peer-tls-ca", &path_arg(&ca_file)]);
    assert!(with_ca.status.success(), "{with_ca:?}");
    assert!(String::from_utf8_lossy(&with_ca.stdout).contains("leader: node"), "{with_ca:?}");
    let without = status(&[]);
    assert!(!without.status.success(), "a plain connection to a TLS peer link must fail: {without:?}");
    let other_ca = files.write("other-ca.pem", &Ca::new("another CA").pem());
    let wrong = status(&["--peer-tls-ca", &path_arg(&other_ca)]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("peer TLS"), "{wrong:?}");
}
