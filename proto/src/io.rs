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

/// How much free room each read into a connection's buffer gets.
///
/// A read only takes what fits in the buffer's spare capacity, and a buffer whose
/// frames were split off the front has little left: a batch of pipelined requests then
/// arrives in several reads, and a read that fills its room also costs an extra `recv`
/// that finds nothing (Tokio only knows the socket is drained when a read comes back
/// short). So every read is given at least `want` bytes of room; a read that fills it
/// doubles `want` (up to [`ReadRoom::MAX`]). It starts small ([`ReadRoom::MIN`]) because
/// idle connections keep the pages their buffers touched.
#[derive(Debug, Clone, Copy)]
pub struct ReadRoom {
    want: usize,
}

impl Default for ReadRoom {
    fn default() -> Self {
        ReadRoom { want: ReadRoom::MIN }
    }
}

impl ReadRoom {
    /// The room a first read gets.
    pub const MIN: usize = 1024;
    /// The most room a read is given before the buffer is drained again.
    pub const MAX: usize = 64 * 1024;

    /// The room the next read will get at least.
    pub fn want(&self) -> usize {
        self.want
    }

    /// Reads once into `buf` after making room; `Ok(0)` is end of file. Cancel safe.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, reader: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
        self.read_at_most(reader, buf, usize::MAX).await
    }

    /// [`read`](Self::read), taking at most `most` bytes (however much room `buf` has).
    pub async fn read_at_most<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        most: usize,
    ) -> std::io::Result<usize> {
        let want = self.want.min(most);
        if buf.capacity() - buf.len() < want {
            // Reclaims the space of frames already split off when nothing else holds it.
            buf.reserve(want);
        }
        let room = (buf.capacity() - buf.len()).min(most);
        let n = reader.read_buf(&mut bytes::BufMut::limit(&mut *buf, room)).await?;
        if n >= room {
            self.want = (self.want * 2).min(ReadRoom::MAX);
        }
        Ok(n)
    }
}

/// When a connection's buffer, grown by a big message, gives its memory back.
///
/// A buffer up to `kept` bytes of capacity is always kept for the next use. A larger
/// one is kept while its uses fill a quarter of it or more, so big messages one after
/// another reuse it instead of growing a fresh buffer (and faulting its pages in) for
/// each. After `patience` smaller uses in a row it is given back: on a server with
/// thousands of connections, one big reply must not pin its buffer for the life of the
/// connection, and an occasional big message among small ones must not make the buffer
/// regrow every time (giving it back at the first small use cost 17 % of the gets/s
/// with 1 MiB replies among small ones: BENCHMARKS.md, round 23).
#[derive(Debug, Clone, Copy)]
pub struct BufferKeeping {
    kept: usize,
    patience: u32,
    small_in_a_row: u32,
}

impl BufferKeeping {
    /// Keeps buffers up to `kept` bytes always, larger ones until `patience` uses in a
    /// row fill less than a quarter of them (at least 1).
    pub const fn new(kept: usize, patience: u32) -> Self {
        BufferKeeping { kept, patience, small_in_a_row: 0 }
    }

    /// After a use that took `used` bytes of a buffer of `capacity`: `false` when the
    /// buffer should be given back (replaced by a small one).
    pub fn keeps(&mut self, capacity: usize, used: usize) -> bool {
        if capacity <= self.kept || used >= capacity / 4 {
            self.small_in_a_row = 0;
            return true;
        }
        self.small_in_a_row += 1;
        if self.small_in_a_row < self.patience {
            return true;
        }
        self.small_in_a_row = 0;
        false
    }
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
    read_frame_with(reader, buf, limit, &mut ReadRoom::default()).await
}

/// [`read_frame`] for a loop that reads frame after frame: `room` carries the read
/// size over from one frame to the next (see [`ReadRoom`]).
pub async fn read_frame_with<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    limit: u64,
    room: &mut ReadRoom,
) -> Result<Bytes, FrameIoError> {
    read_frame_noting_partial(reader, buf, limit, room, |_| {}).await
}

/// [`read_frame_with`] that calls `before_rest(reader)` before each read that must
/// complete a frame already partly in `buf` (a server uses it to re-arm TCP_QUICKACK
/// only when a peer may be waiting for its ACK).
pub async fn read_frame_noting_partial<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    limit: u64,
    room: &mut ReadRoom,
    mut before_rest: impl FnMut(&R),
) -> Result<Bytes, FrameIoError> {
    loop {
        if let Some(body) = frame::take_frame(buf, limit)? {
            return Ok(body);
        }
        if !buf.is_empty() {
            before_rest(reader);
        }
        if room.read(reader, buf).await? == 0 {
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

/// Challenges the peer and finds which of `keys` its answer was made with; sends
/// `#WELCOME#` or `#FAILURE#`.
async fn deliver_challenge_any<S: AsyncRead + AsyncWrite + Unpin, K: AsRef<[u8]>>(
    stream: &mut S,
    buf: &mut BytesMut,
    keys: &[K],
    policy: Policy,
) -> Result<usize, HandshakeError> {
    let challenge = Challenge::new();
    write_frame(stream, &challenge.frame()).await?;
    let answer = read_frame(stream, buf, HANDSHAKE_LIMIT).await?;
    match challenge.verify_any(keys, &answer, policy) {
        Ok(at) => {
            write_frame(stream, auth::WELCOME).await?;
            Ok(at)
        }
        Err(e) => {
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

/// The server side with several keys (one per user): challenge the client, learn which
/// key it answered with, then answer its challenge with that same key (the client
/// checks the server knows *its* key). Returns the index of the key in `keys`.
pub async fn server_handshake_any<S: AsyncRead + AsyncWrite + Unpin, K: AsRef<[u8]>>(
    stream: &mut S,
    buf: &mut BytesMut,
    keys: &[K],
    policy: Policy,
) -> Result<usize, HandshakeError> {
    server_handshake_noting(stream, buf, keys, policy, || {}).await
}

/// [`server_handshake_any`], calling `proven` as soon as the client's answer to the
/// server's challenge is accepted — it holds one of `keys` — before the server answers
/// the client's challenge in turn.
pub async fn server_handshake_noting<S: AsyncRead + AsyncWrite + Unpin, K: AsRef<[u8]>>(
    stream: &mut S,
    buf: &mut BytesMut,
    keys: &[K],
    policy: Policy,
    proven: impl FnOnce(),
) -> Result<usize, HandshakeError> {
    let at = deliver_challenge_any(stream, buf, keys, policy).await?;
    proven();
    answer_challenge(stream, buf, keys[at].as_ref(), policy).await?;
    Ok(at)
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

    #[tokio::test]
    async fn a_read_takes_at_most_what_it_is_allowed() {
        let data = vec![7u8; 50_000];
        let mut reader = &data[..];
        let mut room = ReadRoom { want: ReadRoom::MAX };
        let mut buf = BytesMut::with_capacity(100_000);
        assert_eq!(room.read_at_most(&mut reader, &mut buf, 16 * 1024).await.unwrap(), 16 * 1024);
        // `read` takes as much as the buffer has room for.
        assert_eq!(room.read(&mut reader, &mut buf).await.unwrap(), 50_000 - 16 * 1024);
        assert_eq!(buf.len(), 50_000);
    }

    #[test]
    fn a_big_buffer_is_kept_while_used_and_given_back_after_patience() {
        let mut keeping = BufferKeeping::new(1000, 3);
        // Small buffers are always kept, however little of them is used.
        assert!((0..10).all(|_| keeping.keeps(1000, 0)));
        // A big one is kept while a quarter of it or more is used...
        assert!((0..10).all(|_| keeping.keeps(8000, 2000)));
        // ...and through fewer than `patience` small uses in a row, which a big use resets.
        assert!(keeping.keeps(8000, 10) && keeping.keeps(8000, 10));
        assert!(keeping.keeps(8000, 8000));
        assert!(keeping.keeps(8000, 10) && keeping.keeps(8000, 10));
        // The third small use in a row gives it back; counting starts again after.
        assert!(!keeping.keeps(8000, 10));
        assert!(keeping.keeps(8000, 10));
        // With a patience of 1, the first small use gives it back.
        assert!(!BufferKeeping::new(1000, 1).keeps(8000, 1999));
        assert!(BufferKeeping::new(1000, 1).keeps(8000, 2000));
    }

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
    async fn a_server_with_several_keys_learns_which_one_the_client_has() {
        for (client_key, expected) in [(&b"bob"[..], Some(1)), (b"alice", Some(0)), (b"mallory", None)] {
            let (mut a, mut b) = tokio::io::duplex(1024);
            let server = tokio::spawn(async move {
                let mut buf = BytesMut::new();
                server_handshake_any(&mut a, &mut buf, &[&b"alice"[..], b"bob"], Policy::default()).await
            });
            let mut buf = BytesMut::new();
            let client = client_handshake(&mut b, &mut buf, client_key, Policy::default()).await;
            let server = server.await.unwrap();
            match expected {
                Some(at) => {
                    assert_eq!(server.unwrap(), at);
                    client.unwrap();
                }
                None => {
                    assert!(matches!(server, Err(HandshakeError::Auth(AuthError::WrongDigest))), "{server:?}");
                    assert!(matches!(client, Err(HandshakeError::Auth(AuthError::Rejected))), "{client:?}");
                }
            }
        }
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
    async fn a_read_gets_room_even_when_the_buffer_is_nearly_full() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        b.write_all(&[7; 10_000]).await.unwrap();
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 60]);
        let _ = buf.split_to(60); // what a loop leaves after taking frames: 4 bytes of room
        let mut room = ReadRoom::default();
        let first = room.read(&mut a, &mut buf).await.unwrap();
        assert!(first >= ReadRoom::MIN, "a pipelined batch must not be cut into 4-byte reads: {first}");
        assert_eq!(room.want(), 2 * ReadRoom::MIN, "a read that filled its room doubles the next one");
        let mut total = first;
        while total < 10_000 {
            total += room.read(&mut a, &mut buf).await.unwrap();
        }
        assert_eq!(buf.len(), 10_000);
        assert!(room.want() <= ReadRoom::MAX);
        b.write_all(&[1; 10]).await.unwrap();
        let before = room.want();
        assert_eq!(room.read(&mut a, &mut buf).await.unwrap(), 10);
        assert_eq!(room.want(), before, "a short read does not grow the room");
    }

    #[tokio::test]
    async fn the_partial_frame_hook_runs_only_before_completing_a_frame() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (mut buf, mut room, mut calls) = (BytesMut::new(), ReadRoom::default(), 0);
        b.write_all(&[0, 0, 0, 2, 7, 7]).await.unwrap();
        let whole = read_frame_noting_partial(&mut a, &mut buf, 10, &mut room, |_| calls += 1).await.unwrap();
        assert_eq!((&whole[..], calls), (&[7, 7][..], 0), "a frame that arrives whole needs no hook");
        b.write_all(&[0, 0, 0, 3, 1]).await.unwrap();
        let rest = tokio::spawn(async move {
            tokio::task::yield_now().await;
            b.write_all(&[2, 3]).await.unwrap();
            b
        });
        let split = read_frame_noting_partial(&mut a, &mut buf, 10, &mut room, |_| calls += 1).await.unwrap();
        assert_eq!(&split[..], &[1, 2, 3]);
        assert!(calls >= 1, "the read that completes a partial frame is announced");
        drop(rest.await.unwrap());
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
