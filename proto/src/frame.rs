//! Length-prefixed frames, byte for byte as Python's `multiprocessing.connection`.
//!
//! ```text
//! normal: [len: i32 big-endian, 0 <= len <= 0x7fff_ffff][body]
//! large:  [ff ff ff ff][len: u64 big-endian][body]          (only for len > 0x7fff_ffff)
//! ```
//!
//! [`parse_header`] decides from the header alone whether a frame is acceptable, so a
//! reader rejects an oversized frame *before* reading any of its body. Negative lengths
//! other than -1 are protocol errors (CPython silently treats them as empty reads).

/// Largest body that uses the 4-byte header; anything larger uses the 12-byte form.
pub const MAX_SHORT_LEN: usize = 0x7fff_ffff;
/// The size cap for every frame read during the handshake (CPython reads with `recv_bytes(256)`).
pub const HANDSHAKE_LIMIT: u64 = 256;
/// The default cap on a frame body after the handshake: 64 MiB.
pub const DEFAULT_MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Why a frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced body is larger than the reader accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The length the header announced.
        len: u64,
        /// The reader's limit.
        limit: u64,
    },
    /// A negative length other than the -1 marker.
    #[error("invalid frame length {0}")]
    NegativeLength(i32),
}

/// A parsed frame header: how many header bytes, how many body bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes taken by the header itself (4 or 12).
    pub header_len: usize,
    /// Bytes of body that follow the header.
    pub body_len: usize,
}

/// Parses the header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole header, and an error when the
/// header announces a body above `limit` or an invalid length. The body need not be in
/// `buf` yet.
pub fn parse_header(buf: &[u8], limit: u64) -> Result<Option<Header>, FrameError> {
    let Some(short) = buf.get(..4) else { return Ok(None) };
    let short = i32::from_be_bytes(short.try_into().expect("4 bytes"));
    let (header_len, len) = match short {
        0.. => (4, short as u64),
        -1 => {
            let Some(long) = buf.get(4..12) else { return Ok(None) };
            (12, u64::from_be_bytes(long.try_into().expect("8 bytes")))
        }
        negative => return Err(FrameError::NegativeLength(negative)),
    };
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let body_len = usize::try_from(len).map_err(|_| FrameError::TooLarge { len, limit })?;
    Ok(Some(Header { header_len, body_len }))
}

/// The header bytes for a body of `len` bytes (4 bytes, or 12 above 2 GiB).
pub fn header(len: usize) -> ([u8; 12], usize) {
    let mut out = [0u8; 12];
    if len <= MAX_SHORT_LEN {
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        (out, 4)
    } else {
        out[..4].copy_from_slice(&[0xff; 4]);
        out[4..].copy_from_slice(&(len as u64).to_be_bytes());
        (out, 12)
    }
}

/// Appends one whole frame (header and body) to `out`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) {
    let (hdr, n) = header(body.len());
    out.reserve(n + body.len());
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(body);
}

/// Appends a frame whose body is written by `write_body`, patching the length in
/// afterwards, so a message can be serialized straight into the output buffer.
/// Bodies above 2 GiB fall back to the 12-byte header by moving the body once.
pub fn encode_with<E>(out: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = write_body(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - 4;
    if len <= MAX_SHORT_LEN {
        out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    } else {
        let (hdr, n) = header(len);
        out.splice(start..start + 4, hdr[..n].iter().copied());
    }
    Ok(())
}

/// Takes one whole frame's body off the front of `buf`, if `buf` holds one.
///
/// Leaves `buf` untouched (and returns `Ok(None)`) while the frame is incomplete, so a
/// reader can call it after every read and drain every complete frame.
pub fn take_frame(buf: &mut bytes::BytesMut, limit: u64) -> Result<Option<bytes::Bytes>, FrameError> {
    let Some(h) = parse_header(buf, limit)? else { return Ok(None) };
    if buf.len() < h.header_len + h.body_len {
        buf.reserve(h.header_len + h.body_len - buf.len());
        return Ok(None);
    }
    let _ = buf.split_to(h.header_len);
    Ok(Some(buf.split_to(h.body_len).freeze()))
}

/// Runs `each` on the body of every complete frame at the front of `buf`, in order,
/// then removes those frames from `buf` at once. Bodies are borrowed in place: no
/// split, no reference count per frame (for a loop that handles a pipelined batch).
/// Stops early when `each` breaks, with the frames before (and including) that one
/// consumed, and returns what it broke with. An incomplete frame that follows stays;
/// [`reserve_partial`] makes room for the rest of it.
pub fn drain_frames<B>(
    buf: &mut bytes::BytesMut,
    limit: u64,
    mut each: impl FnMut(&[u8]) -> std::ops::ControlFlow<B>,
) -> Result<Option<B>, FrameError> {
    let mut used = 0;
    let mut outcome = Ok(None);
    while let Some(h) = match parse_header(&buf[used..], limit) {
        Ok(h) => h,
        Err(e) => {
            outcome = Err(e);
            None
        }
    } {
        let end = used + h.header_len + h.body_len;
        if buf.len() < end {
            break;
        }
        let body = &buf[used + h.header_len..end];
        used = end;
        if let std::ops::ControlFlow::Break(b) = each(body) {
            outcome = Ok(Some(b));
            break;
        }
    }
    bytes::Buf::advance(buf, used);
    outcome
}

/// Makes room in `buf` for all of the incomplete frame at its front, if its header is
/// there and within `limit`, so the rest of it is read without growing `buf` step by
/// step.
pub fn reserve_partial(buf: &mut bytes::BytesMut, limit: u64) {
    if let Ok(Some(h)) = parse_header(buf, limit) {
        buf.reserve((h.header_len + h.body_len).saturating_sub(buf.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_header_round_trip() {
        let mut out = Vec::new();
        encode(b"hello", &mut out);
        assert_eq!(out, b"\x00\x00\x00\x05hello");
        let h = parse_header(&out, 100).unwrap().unwrap();
        assert_eq!(h, Header { header_len: 4, body_len: 5 });
    }

    #[test]
    fn zero_length_frame_is_legal() {
        assert_eq!(parse_header(&[0, 0, 0, 0], 0).unwrap(), Some(Header { header_len: 4, body_len: 0 }));
    }

    #[test]
    fn large_header_form() {
        let (hdr, n) = header(0x8000_0000);
        assert_eq!(&hdr[..n], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        let h = parse_header(&hdr[..n], u64::MAX).unwrap().unwrap();
        assert_eq!(h, Header { header_len: 12, body_len: 0x8000_0000 });
        // the large form is accepted on receive even for small bodies
        let mut small = vec![0xff; 4];
        small.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(parse_header(&small, 10).unwrap().unwrap().body_len, 7);
    }

    #[test]
    fn incomplete_headers_wait_for_more() {
        assert_eq!(parse_header(&[0, 0, 1], 10).unwrap(), None);
        assert_eq!(parse_header(&[0xff, 0xff, 0xff, 0xff, 0], 10).unwrap(), None);
    }

    #[test]
    fn oversized_frame_rejected_from_header_alone() {
        let err = parse_header(&[0, 0, 1, 1], 256).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 257, limit: 256 });
        assert_eq!(err.to_string(), "frame of 257 bytes exceeds the limit of 256 bytes");
    }

    #[test]
    fn negative_lengths_other_than_marker_rejected() {
        assert_eq!(parse_header(&[0xff, 0xff, 0xff, 0xfe], 10), Err(FrameError::NegativeLength(-2)));
        assert_eq!(parse_header(&[0x80, 0, 0, 0], 10), Err(FrameError::NegativeLength(i32::MIN)));
    }

    #[test]
    fn take_frame_drains_complete_frames_only() {
        let mut buf = bytes::BytesMut::new();
        let mut wire = Vec::new();
        encode(b"one", &mut wire);
        encode(b"two", &mut wire);
        buf.extend_from_slice(&wire[..wire.len() - 1]);
        assert_eq!(take_frame(&mut buf, 10).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(take_frame(&mut buf, 10).unwrap(), None);
        buf.extend_from_slice(&wire[wire.len() - 1..]);
        assert_eq!(take_frame(&mut buf, 10).unwrap().unwrap(), &b"two"[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn drain_frames_takes_complete_frames_in_place() {
        use std::ops::ControlFlow;
        let mut wire = Vec::new();
        for body in [&b"one"[..], b"two", b"three"] {
            encode(body, &mut wire);
        }
        let mut buf = bytes::BytesMut::from(&wire[..wire.len() - 2]);
        let mut seen = Vec::new();
        let r = drain_frames(&mut buf, 10, |b| -> ControlFlow<()> {
            seen.push(b.to_vec());
            ControlFlow::Continue(())
        });
        assert_eq!(r, Ok(None));
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(&buf[..], &wire[wire.len() - 9..wire.len() - 2], "the incomplete frame stays");
        reserve_partial(&mut buf, 10);
        assert!(buf.capacity() >= 9, "room for the whole of it");
        buf.extend_from_slice(&wire[wire.len() - 2..]);
        let r =
            drain_frames(
                &mut buf,
                10,
                |b| if b == b"three" { ControlFlow::Break(7) } else { ControlFlow::Continue(()) },
            );
        assert_eq!(r, Ok(Some(7)));
        assert!(buf.is_empty(), "the frame it broke on is consumed");
        let mut bad = bytes::BytesMut::from(&[0, 0, 0, 1, 9, 0, 0, 1, 0][..]);
        let mut n = 0;
        let r = drain_frames(&mut bad, 10, |_| -> ControlFlow<()> {
            n += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(r, Err(FrameError::TooLarge { len: 256, limit: 10 }));
        assert_eq!(n, 1, "frames before the bad header are handled");
    }

    #[test]
    fn encode_with_patches_length() {
        let mut out = vec![9];
        encode_with::<()>(&mut out, |b| {
            b.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        assert_eq!(out, b"\x09\x00\x00\x00\x03abc");
        let failed: Result<(), &str> = encode_with(&mut out, |b| {
            b.push(1);
            Err("no")
        });
        assert!(failed.is_err());
        assert_eq!(out, b"\x09\x00\x00\x00\x03abc", "a failed body leaves nothing behind");
    }
}
