//! What a native connection has to write: reply frames in one buffer, and the big
//! values among them in buffers of their own, written after the start of their frame by
//! one vectored write ([`agora_proto::native::trailing::encode_reply_frame`]). A big
//! reply is then not copied into the write buffer: perf on 1 MiB gets had the server's
//! `memmove` at 53 % of its CPU, half of it that copy (BENCHMARKS.md, round 24).
//!
//! It owns the writing side's buffers and nothing else: it encodes responses, and knows
//! nothing of requests, sessions or the engine.

use std::io::IoSlice;

use agora_proto::frame;
use agora_proto::io::BufferKeeping;
use agora_proto::native::{self, trailing, Reply, Response};
use agora_proto::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The buffer's first capacity (and what a big one is replaced with).
const START: usize = 1024;

/// A connection's unwritten replies.
pub(super) struct Output {
    /// Frames, whole but for the big values.
    buf: Vec<u8>,
    /// Big values, each with the length of `buf` it comes after.
    values: Vec<(usize, Vec<u8>)>,
    /// When `buf`, grown by a big batch, is given back.
    keeping: BufferKeeping,
}

impl Output {
    /// Nothing to write yet.
    pub(super) fn new() -> Self {
        Output { buf: Vec::with_capacity(START), values: Vec::new(), keeping: super::super::BUFFER_KEEPING }
    }

    /// Adds the frame of a message other than a response (the Welcome).
    pub(super) fn push_message<T: serde::Serialize>(&mut self, message: &T) {
        frame::encode_with(&mut self.buf, |body| native::encode(message, body)).expect("a server message encodes");
    }

    /// Adds a response's frame.
    pub(super) fn push(&mut self, response: Response) {
        if !trailing::has_big_value(&response) {
            return push_response(&mut self.buf, response);
        }
        match trailing::encode_reply_frame(response, &mut self.buf) {
            Ok(value) => self.values.push((self.buf.len(), value)),
            Err(response) => push_response(&mut self.buf, response),
        }
    }

    /// Adds the frame of a call's value (the usual reply), encoded from the value: no
    /// `Response` is built around it, moved and dropped after (~150 instructions of a
    /// pipelined call, BENCHMARKS.md, round 27).
    pub(super) fn push_value(&mut self, id: u64, value: Value) {
        if trailing::is_big(&value) {
            return self.push(Response { id, result: Ok(Reply::Value(value)) });
        }
        let write = |body: &mut Vec<u8>| {
            native::encode_value_response(id, &value, body);
            Ok::<(), std::convert::Infallible>(())
        };
        frame::encode_with(&mut self.buf, write).unwrap_or_else(|never| match never {});
    }

    /// Nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.values.is_empty()
    }

    /// Writes everything, in order, then empties itself (giving a grown buffer back
    /// once batches have been small for a while).
    pub(super) async fn write_to<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if self.values.is_empty() {
            stream.write_all(&self.buf).await?;
        } else {
            let mut parts = Vec::with_capacity(2 * self.values.len() + 1);
            let mut written = 0;
            for (at, value) in &self.values {
                parts.push(IoSlice::new(&self.buf[written..*at]));
                parts.push(IoSlice::new(value));
                written = *at;
            }
            parts.push(IoSlice::new(&self.buf[written..]));
            write_all_vectored(stream, &mut parts).await?;
            self.values.clear();
        }
        if self.keeping.keeps(self.buf.capacity(), self.buf.len()) {
            self.buf.clear();
        } else {
            self.buf = Vec::with_capacity(START);
        }
        Ok(())
    }
}

/// Appends one encoded response frame to `out`.
fn push_response(out: &mut Vec<u8>, response: Response) {
    if let Err(e) = frame::encode_with(out, |body| native::encode_response(&response, body)) {
        // Only a value that cannot be encoded gets here; answer with the reason instead.
        let fallback = Response { id: response.id, result: Err(e) };
        frame::encode_with(out, |body| native::encode(&fallback, body)).expect("errors always encode");
    }
}

/// Writes all of `parts`, as many as the stream takes at a time.
async fn write_all_vectored<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mut parts: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0); // skips leading empty parts
    while !parts.is_empty() {
        let n = stream.write_vectored(parts).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use agora_proto::native::Reply;
    use agora_proto::Value;

    use super::*;

    /// A writer that takes at most `most` bytes per call, of its first buffer only
    /// (as a stream without vectored writes does).
    struct Trickle {
        out: Vec<u8>,
        most: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.most);
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn big_values_among_small_replies_go_out_in_order_and_whole() {
        let big = trailing::MIN_PAYLOAD;
        let responses = [
            Response { id: 1, result: Ok(Reply::Value(Value::Int(1))) },
            Response { id: 2, result: Ok(Reply::Value(Value::Str("a".repeat(big).into()))) },
            Response { id: 3, result: Ok(Reply::Value(Value::Bytes(vec![9; big + 1]))) },
            Response { id: 4, result: Ok(Reply::Done) },
            Response { id: 5, result: Ok(Reply::Value(Value::Str("b".repeat(3 * big).into()))) },
        ];
        let mut expected = Vec::new();
        for response in &responses {
            frame::encode_with(&mut expected, |body| native::encode_response(response, body)).unwrap();
        }
        for most in [1, 7, 4096, usize::MAX] {
            let mut output = Output::new();
            responses.iter().cloned().for_each(|r| output.push(r));
            assert_eq!(output.values.len(), 3, "the big values are kept apart");
            let mut stream = Trickle { out: Vec::new(), most };
            output.write_to(&mut stream).await.unwrap();
            assert!(stream.out == expected, "written differently with {most} bytes a write");
            assert!(output.is_empty());
        }
    }

    #[tokio::test]
    async fn a_value_pushed_alone_is_written_as_its_response_would_be() {
        let big = trailing::MIN_PAYLOAD;
        let values = [
            Value::None,
            Value::Int(-7),
            Value::Str("short".into()),
            Value::Str("a".repeat(big).into()),
            Value::Bytes(vec![9; big + 1]),
            Value::List(vec![Value::Float(0.5), Value::Tuple(vec![])]),
        ];
        let (mut alone, mut in_responses) = (Output::new(), Output::new());
        for (id, value) in (1..).zip(values) {
            in_responses.push(Response { id, result: Ok(Reply::Value(value.clone())) });
            alone.push_value(id, value);
        }
        assert_eq!(alone.values.len(), 2, "the big values are kept apart here too");
        let (mut written_alone, mut written_in_responses) = (Vec::new(), Vec::new());
        alone.write_to(&mut written_alone).await.unwrap();
        in_responses.write_to(&mut written_in_responses).await.unwrap();
        assert!(written_alone == written_in_responses);
    }
}
