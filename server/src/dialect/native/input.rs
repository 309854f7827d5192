//! What a native connection has read and not yet handled: the frames in its read
//! buffer, and at most one call whose big last argument is being read into a buffer of
//! its own ([`agora_proto::native::trailing`]): the kernel copies that value straight
//! into the memory the stored value will own, instead of into the read buffer and
//! from there into the value.
//!
//! It owns the reading side of the connection and nothing else: it neither decodes
//! frames (beyond letting `trailing` take a call apart) nor runs requests.

use agora_proto::frame::{self, FrameError};
use agora_proto::io::{BufferKeeping, ReadRoom};
use agora_proto::native::trailing::{self, Scan, TrailingCall};
use agora_proto::native::Request;
use agora_proto::WireError;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most a read takes when nothing unhandled is buffered.
const FIRST_READ: usize = 16 * 1024;

/// A connection's unhandled input.
pub(super) struct Input {
    /// Frames, complete ones first: what [`Input::frames`] hands out.
    rbuf: BytesMut,
    /// How much room the next read into `rbuf` gets.
    room: ReadRoom,
    /// When `rbuf`, grown by a big frame, is given back.
    keeping: BufferKeeping,
    /// A call taken apart, and as much of its last argument as has been read. It comes
    /// before every frame in `rbuf` (its frame was the first unhandled one).
    trailing: Option<(TrailingCall, Vec<u8>)>,
}

impl Input {
    /// Input that starts with what `rbuf` holds (read with the handshake).
    pub(super) fn new(rbuf: BytesMut) -> Self {
        Input { rbuf, room: ReadRoom::default(), keeping: super::super::BUFFER_KEEPING, trailing: None }
    }

    /// Runs `each` on every complete frame in the buffer, as [`frame::drain_frames`]
    /// does; a buffer a big frame grew is given back once it has been drained and
    /// frames have been small for a while.
    pub(super) fn drain<B>(
        &mut self,
        limit: u64,
        each: impl FnMut(&[u8]) -> std::ops::ControlFlow<B>,
    ) -> Result<Option<B>, FrameError> {
        let held = self.rbuf.len();
        let drained = frame::drain_frames(&mut self.rbuf, limit, each);
        let used = held - self.rbuf.len();
        if self.rbuf.is_empty() && used > 0 && !self.keeping.keeps(self.rbuf.capacity(), used) {
            self.rbuf = BytesMut::new();
        }
        drained
    }

    /// The buffer starts with a complete frame.
    pub(super) fn holds_a_frame(&self, limit: u64) -> bool {
        matches!(frame::parse_header(&self.rbuf, limit), Ok(Some(h)) if self.rbuf.len() >= h.header_len + h.body_len)
    }

    /// Nothing has been read that is not handled.
    pub(super) fn is_empty(&self) -> bool {
        self.rbuf.is_empty() && self.trailing.is_none()
    }

    /// The call whose last argument was being read, once all of it is: it comes
    /// before any frame in the buffer.
    pub(super) fn take_finished(&mut self) -> Option<Result<Request, WireError>> {
        let (call, payload) = self.trailing.take_if(|(call, payload)| payload.len() == call.payload_len())?;
        Some(call.finish(payload))
    }

    /// Readies the buffer for the incomplete frame left after the complete ones were
    /// drained: a call that ends with a big value is taken apart, so the rest of the
    /// value is read into its own buffer; any other frame gets room for all of it.
    pub(super) fn prepare(&mut self, limit: u64) {
        if self.trailing.is_some() {
            return;
        }
        let Ok(Some(header)) = frame::parse_header(&self.rbuf, limit) else { return };
        match trailing::scan(&self.rbuf[header.header_len..], header.body_len) {
            Scan::Found(call) => {
                // What was read of the value already (at most one read's worth).
                let mut payload = Vec::with_capacity(call.payload_len());
                payload.extend_from_slice(&self.rbuf[header.header_len + call.head_len()..]);
                self.rbuf.clear();
                self.trailing = Some((call, payload));
            }
            // The next read's room holds a call's start.
            Scan::NeedMore => {}
            Scan::No => frame::reserve_partial(&mut self.rbuf, limit),
        }
    }

    /// Reads once, into the value being read if there is one (never past its end, so
    /// its buffer is exactly the value), else into the read buffer (behind a finished
    /// value not yet taken; at most 16 KiB into an empty one); `Ok(0)` is end of file.
    /// Cancel safe.
    pub(super) async fn read<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> std::io::Result<usize> {
        match &mut self.trailing {
            Some((call, payload)) if payload.len() < call.payload_len() => {
                let left = call.payload_len() - payload.len();
                stream.read_buf(&mut payload.limit(left)).await
            }
            // A new frame's start: at most 16 KiB (Redis reads that much at a time too), so
            // that a big value behind it is mostly read into its own buffer, not copied.
            _ if self.rbuf.is_empty() => self.room.read_at_most(stream, &mut self.rbuf, FIRST_READ).await,
            _ => self.room.read(stream, &mut self.rbuf).await,
        }
    }
}
