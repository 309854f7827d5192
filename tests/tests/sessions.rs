//! Sessions: heartbeats keep an idle client's session; silence ends it with a
//! precise error; ending a session frees what it held; a Hello naming a session that
//! cannot be resumed gets a new one.

use std::time::Duration;

use agora_proto::native;
use agora_tests::{Server, ServerOptions};

fn with_heartbeat(timeout: &str) -> Server {
    Server::start_with(ServerOptions { args: vec!["--heartbeat-timeout".into(), timeout.into()], ..Default::default() })
}

#[tokio::test]
async fn an_idle_client_keeps_its_session_through_heartbeats() {
    // Generous enough that a loaded CI machine's scheduling stalls cannot expire it.
    let server = with_heartbeat("1s");
    let m = server.client().await;
    let list = m.new_list::<u8>(&[1, 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await; // over three timeouts of silence from the user
    assert_eq!(list.len().await.unwrap(), 2, "same session, same anonymous object");
    assert!(m.connection_error().is_none());
}

#[tokio::test]
async fn a_silent_peer_loses_its_session_with_a_precise_error() {
    let server = with_heartbeat("300ms");
    let mut raw = server.raw();
    let welcome = raw.native_session(&server.authkey, "mute");
    assert_eq!(welcome.heartbeat_timeout_ms, 300);
    // Say nothing more: the server ends the session and says why.
    let resp: native::Response = native::decode(&raw.recv_frame().expect("an expiry notice")).unwrap();
    assert_eq!(resp.id, native::CONNECTION_ERROR_ID);
    let err = resp.result.unwrap_err();
    assert_eq!(err.code, agora_proto::ErrorCode::SessionExpired);
    assert!(err.message.contains("ended its session"), "{}", err.message);
    server.wait_for_log("session expired: no heartbeat");
}

// Multi-threaded: the observer's heartbeats run on the runtime's workers while this
// test blocks on the log and on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_learns_its_session_expired_on_its_next_call() {
    let server = with_heartbeat("1s");
    // A client process we can freeze: the worker appends forever until stopped.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_agora-test-client"))
        .args([&server.address, "append", "frozen", "0", "1000000000"])
        .env("AGORA_AUTHKEY", std::str::from_utf8(&server.authkey).unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_for_log("native session started");
    // Freeze it only once it is mid-stream: its list exists and holds items.
    let observer = server.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let list = loop {
        if let Ok(list) = observer.list::<u64>("frozen").await {
            if list.len().await.unwrap() > 0 {
                break list;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the worker never appended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let pid = child.id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    server.wait_for_log("session expired");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the worker's next call failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SessionExpired"), "the error says what happened: {stderr}");
    // Meanwhile the server, and the observer's session, are fine.
    assert!(list.len().await.unwrap() > 0);
    assert!(observer.connection_error().is_none());
}

/// A Hello that names a session to resume which cannot be resumed (a single server
/// never detaches one; this one never existed, and its secret is made up) gets a new
/// session, says it did not resume, and the connection works.
#[tokio::test]
async fn a_hello_naming_a_session_that_cannot_be_resumed_gets_a_new_one() {
    let server = with_heartbeat("10s");
    let mut raw = server.raw();
    assert!(raw.handshake(&server.authkey));
    let previous = native::Previous { session: 77_777, secret: 42, resume: true };
    let mut hello = Vec::new();
    native::encode(&native::Hello { previous: Some(previous), ..native::Hello::new("resumer") }, &mut hello).unwrap();
    raw.send_frame(&hello).unwrap();
    let welcome: native::Welcome = native::decode(&raw.recv_frame().unwrap()).unwrap();
    assert!(!welcome.resumed, "nothing could be resumed");
    assert_ne!(welcome.session, 77_777);
    assert_eq!(welcome.secret, 0, "a single server offers nothing to resume");
    let mut ping = Vec::new();
    native::encode_request(&native::Request { id: 1, op: native::Op::Ping }, &mut ping).unwrap();
    raw.send_frame(&ping).unwrap();
    let response: native::Response = native::decode(&raw.recv_frame().unwrap()).unwrap();
    assert_eq!(response.id, 1);
    assert!(response.result.is_ok(), "{:?}", response.result);
}
