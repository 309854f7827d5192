//! Frames and the handshake over any `AsyncRead + AsyncWrite` stream (Tokio).
//!
//! Shared by the server (which challenges first) and the client (which answers
//! first). Reads go through a caller-owned [`BytesMut`], so bytes that arrive after the
//! handshake — a CPython client sends its first request right behind `#WELCOME#` — stay
//! buffered for the connection's main loop.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::{self, AuthError, Challenge, Policy};
use crate::frame::{self, FrameError, HANDSHAKE_LIMIT};

/// Why reading or writing frames failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame header this end refuses.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed the connection in the middle of a frame.
    #[error("got end of file during message")]
    TruncatedFrame,
    /// The peer closed the connection where a frame was expected.
    #[error("connection closed by peer")]
    Closed,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Reading or writing a handshake frame failed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Reads one frame body, waiting for more bytes as needed.
///
/// Returns [`FrameIoError::Closed`] on a clean EOF between frames and
/// [`FrameIoError::TruncatedFrame`] on an EOF inside one. An oversized header is
/// refused before any of its body is read.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    limit: u64,
) -> Result<Bytes, FrameIoError> {
    loop {
        if let Some(body) = frame::take_frame(buf, limit)? {
            return Ok(body);
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() { FrameIoError::Closed } else { FrameIoError::TruncatedFrame });
        }
    }
}

/// Writes one frame (header and body in a single write) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, body: &[u8]) -> Result<(), FrameIoError> {
    let mut out = Vec::with_capacity(body.len() + 4);
    frame::encode(body, &mut out);
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

/// Challenges the peer and checks its answer; sends `#WELCOME#` or `#FAILURE#`.
async fn deliver_challenge<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    authkey: &[u8],
    policy: Policy,
) -> Result<(), HandshakeError> {
    let challenge = Challenge::new();
    write_frame(stream, &challenge.frame()).await?;
    let answer = read_frame(stream, buf, HANDSHAKE_LIMIT).await?;
    match challenge.verify(authkey, &answer, policy) {
        Ok(()) => Ok(write_frame(stream, auth::WELCOME).await?),
        Err(e) => {
            // Best effort: the peer learns it failed; we close either way.
            let _ = write_frame(stream, auth::FAILURE).await;
            Err(e.into())
        }
    }
}

/// Answers the peer's challenge and checks its verdict.
async fn answer_challenge<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    authkey: &[u8],
    policy: Policy,
) -> Result<(), HandshakeError> {
    let challenge = read_frame(stream, buf, HANDSHAKE_LIMIT).await?;
    write_frame(stream, &auth::answer(authkey, &challenge, policy)?).await?;
    let verdict = read_frame(stream, buf, HANDSHAKE_LIMIT).await?;
    if &verdict[..] == auth::WELCOME {
        Ok(())
    } else {
        Err(AuthError::Rejected.into())
    }
}

/// The server side: challenge the client, then answer its challenge.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    authkey: &[u8],
    policy: Policy,
) -> Result<(), HandshakeError> {
    deliver_challenge(stream, buf, authkey, policy).await?;
    answer_challenge(stream, buf, authkey, policy).await
}

/// The client side: answer the server's challenge, then challenge it.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    authkey: &[u8],
    policy: Policy,
) -> Result<(), HandshakeError> {
    answer_challenge(stream, buf, authkey, policy).await?;
    deliver_challenge(stream, buf, authkey, policy).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(
        server_key: &'static [u8],
        client_key: &'static [u8],
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            server_handshake(&mut a, &mut buf, server_key, Policy::default()).await
        });
        let mut buf = BytesMut::new();
        let client = client_handshake(&mut b, &mut buf, client_key, Policy::default()).await;
        (server.await.unwrap(), client)
    }

    #[tokio::test]
    async fn same_key_succeeds_both_ways() {
        let (s, c) = pair(b"secret", b"secret").await;
        s.unwrap();
        c.unwrap();
    }

    #[tokio::test]
    async fn wrong_key_fails_both_ways() {
        let (s, c) = pair(b"secret", b"wrong").await;
        assert!(matches!(s, Err(HandshakeError::Auth(AuthError::WrongDigest))), "{s:?}");
        assert!(matches!(c, Err(HandshakeError::Auth(AuthError::Rejected))), "{c:?}");
    }

    #[tokio::test]
    async fn oversized_handshake_frame_refused_unread() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(&[0, 0, 1, 1]).await.unwrap();
        let mut buf = BytesMut::new();
        let err = server_handshake(&mut a, &mut buf, b"k", Policy::default()).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Frame(FrameIoError::Frame(FrameError::TooLarge { len: 257, .. }))));
    }

    #[tokio::test]
    async fn eof_inside_frame_is_truncation() {
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(b);
        let mut buf = BytesMut::new();
        assert!(matches!(read_frame(&mut a, &mut buf, 100).await, Err(FrameIoError::TruncatedFrame)));
    }
}
