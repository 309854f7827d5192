//! What the client's reader makes of replies a real server never sends in the middle of
//! a session, seen through a scripted server: a connection-level reply (id 0) that
//! carries a value is a protocol error, and one that carries an error ends the
//! connection with that error. Either way the call in flight fails with the reason.

mod fake;

use agora_client::proto::io::{read_frame, write_frame};
use agora_client::proto::native::{self, Reply, Response, CONNECTION_ERROR_ID};
use agora_client::proto::{ErrorCode, Value, WireError};
use agora_client::{Manager, ManagerOptions};
use tokio::net::UnixListener;

const KEY: &[u8] = b"fake-key";

/// Starts a server that welcomes one client, then answers its first request with
/// `reply` (whatever its id) and keeps the connection open.
async fn answering_with(reply: Result<Reply, WireError>) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = fake::welcome(&mut stream, KEY, 1).await;
        let _request = read_frame(&mut stream, &mut buf, u64::MAX).await.unwrap();
        let mut body = Vec::new();
        native::encode(&Response { id: CONNECTION_ERROR_ID, result: reply }, &mut body).unwrap();
        write_frame(&mut stream, &body).await.unwrap();
        // Held open: the client must end the connection on its own.
        let _ = read_frame(&mut stream, &mut buf, u64::MAX).await;
    });
    (dir, format!("unix:{}", path.display()))
}

async fn ping_error(reply: Result<Reply, WireError>) -> String {
    let (_dir, address) = answering_with(reply).await;
    let options = ManagerOptions::new().reconnect(false);
    let m = Manager::connect_with(&address, KEY, options).await.expect("connect");
    let ping = tokio::time::timeout(std::time::Duration::from_secs(30), m.ping()).await.expect("hang guard");
    ping.expect_err("the ping must fail").to_string()
}

#[tokio::test]
async fn a_value_reply_on_the_connection_level_id_is_a_protocol_error() {
    // A value reply takes the reader's fast path; on id 0 it must not be delivered.
    let error = ping_error(Ok(Reply::Value(Value::Int(1)))).await;
    assert!(error.contains("unexpected connection-level reply"), "{error}");
}

#[tokio::test]
async fn a_connection_level_error_fails_the_call_in_flight_with_its_reason() {
    let error = ping_error(Err(WireError::new(ErrorCode::Protocol, "told off by the server"))).await;
    assert!(error.contains("told off by the server"), "{error}");
}
