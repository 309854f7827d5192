//! [`WriteThrough`]: a stream whose writes are on the wire when they complete.
//!
//! A TLS stream (tokio-rustls) accepts plaintext into its session and writes the
//! encrypted records to the socket as far as the socket takes them; what the socket
//! did not take waits in the session until the next write or an explicit flush. The
//! server's dialects and the client's writer were written for sockets, where a
//! finished `write_all` means the kernel has the bytes: they never flush, and a
//! connection may close right after its last write. Wrapped in [`WriteThrough`], a
//! write completes only once its bytes went out, as on a plain socket, so the same
//! code is correct over TLS.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps a stream so that each write is flushed before it reports completion.
#[derive(Debug)]
pub struct WriteThrough<S> {
    inner: S,
    /// Bytes of the caller's buffer already taken by `inner` and not yet flushed: a
    /// write that returned `Pending` while flushing reports them when it is polled again.
    taken: Option<usize>,
}

impl<S> WriteThrough<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> WriteThrough<S> {
        WriteThrough { inner, taken: None }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WriteThrough<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WriteThrough<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let taken = match this.taken {
            Some(taken) => taken,
            None => {
                let taken = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
                this.taken = Some(taken);
                taken
            }
        };
        let flushed = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        this.taken = None;
        flushed?;
        // A caller that gave up on a pending write and wrote something shorter still
        // learns no more than its own buffer's length.
        Poll::Ready(Ok(taken.min(buf.len())))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

    #[tokio::test]
    async fn a_finished_write_is_on_the_wire_without_a_flush() {
        let (a, mut b) = tokio::io::duplex(64);
        // A BufWriter holds what it is given until flushed, as a TLS session can.
        let mut writer = WriteThrough::new(BufWriter::new(a));
        writer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), b.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"hello");
    }

    #[tokio::test]
    async fn large_writes_go_through_a_small_pipe() {
        let (a, mut b) = tokio::io::duplex(16);
        let mut writer = WriteThrough::new(BufWriter::with_capacity(8, a));
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let expected = body.clone();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 10_000];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        writer.write_all(&body).await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
    }
}
