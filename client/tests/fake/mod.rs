//! What the scripted servers of the client's tests share: opening a session as a
//! server does.

use agora_client::proto::auth::Policy;
use agora_client::proto::io::{read_frame, server_handshake, write_frame};
use agora_client::proto::native::{self, Welcome};
use bytes::BytesMut;
use tokio::net::UnixStream;

/// Answers the client's handshake with `key`, reads its Hello and welcomes it to
/// session `session`. Returns the read buffer: it may already hold the first request.
pub async fn welcome(stream: &mut UnixStream, key: &[u8], session: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    server_handshake(stream, &mut buf, key, Policy::default()).await.unwrap();
    let _hello = read_frame(stream, &mut buf, u64::MAX).await.unwrap();
    let welcome = Welcome {
        version: native::PROTOCOL_VERSION,
        server: "fake".into(),
        session,
        max_frame: 1 << 20,
        max_in_flight: 64,
        heartbeat_timeout_ms: 10_000,
        secret: 0,
        resumed: false,
    };
    let mut body = Vec::new();
    native::encode(&welcome, &mut body).unwrap();
    write_frame(stream, &body).await.unwrap();
    buf
}
