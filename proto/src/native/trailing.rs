//! A call whose last argument is a big str or bytes value, taken apart so the value's
//! bytes can be read straight into the buffer the value will own.
//!
//! A decoder copies every str out of the frame it was read into. For a 1 MiB value
//! that copy cost the server as much as the kernel's own copy from the socket (perf on
//! 1 MiB dict sets: `memmove` 33 %, the kernel's `_copy_to_iter` 35 %; BENCHMARKS.md,
//! round 24). Redis avoids it the same way: a big argument is read into its own
//! buffer. So when a frame's buffered start shows a call whose arguments end with a
//! big str or bytes, [`scan`] decodes everything before it, and the reader reads the
//! rest of the frame into a buffer of exactly the value's size, which
//! [`TrailingCall::finish`] turns into the value without copying it.
//!
//! This changes where the bytes land, never what a frame decodes to: [`scan`] accepts
//! only what [`super::decode_request`] decodes the same way (tested below), and a
//! str payload that is not valid UTF-8 is decoded whole by `decode_request`.
//!
//! Replies go the other way: [`encode_reply_frame`] writes a value reply whose value
//! is a big str or bytes up to the value's bytes, and hands the value's own buffer back
//! to be written after them (a vectored write), so a big reply is not copied into the
//! connection's write buffer either. The bytes on the wire are those of
//! [`super::encode_response`].
//!
//! It knows nothing about sockets or the server: the connection owns the buffers.

use super::fast::{call_head, put_value_response_head, CallHead, Cursor};
use super::{Args, Op, Reply, Request, Response};
use crate::value::{put_bin_header, put_str_header};
use crate::{frame, Value, WireError};

/// The smallest value read into its own buffer (Redis's threshold for a big argument
/// is 32 KiB too). Below it the copy costs less than the extra read a split frame can
/// take.
pub const MIN_PAYLOAD: usize = 32 * 1024;

/// The most bytes of a frame's start [`scan`] looks at: a call's envelope and its
/// arguments before the value (a key, say) must fit in them.
pub const MAX_HEAD: usize = 4096;

/// What [`scan`] found.
#[derive(Debug)]
pub enum Scan {
    /// The frame may be one, but its start is not all here yet: scan again after the
    /// next read.
    NeedMore,
    /// Not such a call (or too small to be worth it): read the frame as usual.
    No,
    /// A call ending with a big value: read its payload on its own.
    Found(TrailingCall),
}

/// Whether the value is a str or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Str,
    Bytes,
}

/// A call decoded up to its last positional argument, whose payload (the rest of the
/// frame) is still to be read.
#[derive(Debug)]
pub struct TrailingCall {
    /// The call with every positional argument but the last.
    request: Request,
    payload: Payload,
    /// The frame body before the payload: kept to decode the whole frame again if the
    /// payload turns out not to be UTF-8 (to get what any other frame gets).
    head: Vec<u8>,
    payload_len: usize,
}

/// Looks at the start of a frame body of `body_len` bytes (`start`: as much of it as
/// has been read) for a call that ends with a str or bytes value of at least
/// [`MIN_PAYLOAD`] bytes.
pub fn scan(start: &[u8], body_len: usize) -> Scan {
    if body_len < MIN_PAYLOAD {
        return Scan::No;
    }
    let start = &start[..start.len().min(MAX_HEAD).min(body_len)];
    match found(start, body_len) {
        Some(call) => Scan::Found(call),
        // Anything may be missing from a start that can still grow.
        None if start.len() < MAX_HEAD.min(body_len) => Scan::NeedMore,
        None => Scan::No,
    }
}

/// The call, if `start` holds all of it up to a big payload that ends the body.
fn found(start: &[u8], body_len: usize) -> Option<TrailingCall> {
    let mut c = Cursor::new(start);
    let CallHead { id, object, method, fields, positional } = call_head(&mut c)?;
    // Keywords would follow the payload; only a last positional ends the body.
    if fields != 1 || positional == 0 {
        return None;
    }
    let before = c.values(positional - 1)?;
    let (payload, width) = match c.byte()? {
        0xda => (Payload::Str, 2),
        0xdb => (Payload::Str, 4),
        0xc5 => (Payload::Bytes, 2),
        0xc6 => (Payload::Bytes, 4),
        _ => return None,
    };
    let payload_len = usize::try_from(c.be(width)?).ok()?;
    let head_len = c.position();
    if payload_len < MIN_PAYLOAD || head_len.checked_add(payload_len)? != body_len {
        return None;
    }
    let request = Request { id, op: Op::Call { object, method: method.into(), args: Args::positional(before) } };
    Some(TrailingCall { request, payload, head: start[..head_len].to_vec(), payload_len })
}

impl TrailingCall {
    /// Bytes of the frame body before the payload.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// Bytes of the payload: the rest of the frame body.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The whole call, its last argument made of `payload` (exactly
    /// [`payload_len`](Self::payload_len) bytes, which the value then owns). A str that
    /// is not UTF-8 is decoded from the whole frame by [`super::decode_request`], so it
    /// gets exactly what that frame would.
    pub fn finish(self, payload: Vec<u8>) -> Result<Request, WireError> {
        assert_eq!(payload.len(), self.payload_len, "a trailing payload is the rest of its frame");
        let TrailingCall { mut request, payload: kind, head, .. } = self;
        let value = match kind {
            Payload::Bytes => Value::Bytes(payload),
            Payload::Str => match crate::utf8::str_from_utf8(&payload) {
                // SAFETY: just checked to be UTF-8.
                Ok(_) => Value::Str(unsafe { String::from_utf8_unchecked(payload) }.into()),
                Err(_) => {
                    let mut whole = head;
                    whole.extend_from_slice(&payload);
                    return super::decode_request(&whole);
                }
            },
        };
        let Op::Call { args, .. } = &mut request.op else { unreachable!("scan only takes calls") };
        args.positional.push(value);
        Ok(request)
    }
}

/// Whether `response` is a value reply whose value is a str or bytes of at least
/// [`MIN_PAYLOAD`] bytes: what [`encode_reply_frame`] splits. A look, for the hot path
/// (every reply asks), before anything is moved.
#[inline]
pub fn has_big_value(response: &Response) -> bool {
    matches!(&response.result, Ok(Reply::Value(value)) if is_big(value))
}

/// Whether `value` is a str or bytes of at least [`MIN_PAYLOAD`] bytes: a value reply
/// that [`encode_reply_frame`] splits.
#[inline]
pub fn is_big(value: &Value) -> bool {
    match value {
        Value::Str(s) => s.len() >= MIN_PAYLOAD,
        Value::Bytes(b) => b.len() >= MIN_PAYLOAD,
        _ => false,
    }
}

/// Writes a MessagePack length header (str or bin) of `n` bytes.
type PutHeader = fn(&mut Vec<u8>, usize);

/// Appends the frame of a value reply whose value is a str or bytes of at least
/// [`MIN_PAYLOAD`] bytes to `out`, all but the value's bytes, and returns those: the
/// frame goes on with exactly them (the value's own buffer, not copied). Any other
/// response is given back untouched, to be encoded as usual ([`has_big_value`] tells
/// which without moving it).
pub fn encode_reply_frame(response: Response, out: &mut Vec<u8>) -> Result<Vec<u8>, Response> {
    if !has_big_value(&response) {
        return Err(response);
    }
    let (id, payload, put_header): (u64, Vec<u8>, PutHeader) = match response {
        Response { id, result: Ok(Reply::Value(Value::Str(s))) } => (id, s.into_string().into_bytes(), put_str_header),
        Response { id, result: Ok(Reply::Value(Value::Bytes(b))) } => (id, b, put_bin_header),
        other => return Err(other),
    };
    let mut head = Vec::with_capacity(32);
    put_value_response_head(id, &mut head);
    put_header(&mut head, payload.len());
    let (header, n) = frame::header(head.len() + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(&head);
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::native::encode_request;

    fn call(method: &str, positional: Vec<Value>, keywords: Vec<(String, Value)>) -> Vec<u8> {
        let request =
            Request { id: 7, op: Op::Call { object: 3, method: method.into(), args: Args { positional, keywords } } };
        let mut out = Vec::new();
        encode_request(&request, &mut out).unwrap();
        out
    }

    /// Scans `body` as a reader would (its start growing by `step` bytes a read) and
    /// finishes it from the payload bytes.
    fn split_and_finish(body: &[u8], step: usize) -> Option<Result<Request, WireError>> {
        let mut read = step.min(body.len());
        loop {
            match scan(&body[..read], body.len()) {
                Scan::NeedMore => read = (read + step).min(body.len()),
                Scan::No => return None,
                Scan::Found(call) => {
                    assert_eq!(call.head_len() + call.payload_len(), body.len());
                    let payload = body[call.head_len()..].to_vec();
                    return Some(call.finish(payload));
                }
            }
        }
    }

    #[test]
    fn a_big_str_or_bytes_last_is_taken_apart_and_decodes_the_same() {
        let big = "x".repeat(MIN_PAYLOAD);
        for value in
            [Value::Str(big.as_str().into()), Value::Bytes(vec![0xff; 70_000]), Value::Str("é".repeat(40_000).into())]
        {
            for (method, before) in [
                ("put", vec![]),
                ("__setitem__", vec![Value::Str("key".into())]),
                ("f", vec![Value::Int(-1), Value::None]),
            ] {
                let mut positional = before.clone();
                positional.push(value.clone());
                let body = call(method, positional, vec![]);
                for step in [1, 7, 4096, body.len()] {
                    let split = split_and_finish(&body, step).expect("taken apart");
                    assert_eq!(split.unwrap(), crate::native::decode_request(&body).unwrap());
                }
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_the_decoder() {
        let big = Value::Str("y".repeat(MIN_PAYLOAD).into());
        let cases = [
            // too small
            call("put", vec![Value::Str("y".repeat(MIN_PAYLOAD - 1).into())], vec![]),
            // not last
            call("f", vec![big.clone(), Value::Int(1)], vec![]),
            // keywords follow
            call("f", vec![big.clone()], vec![("block".into(), Value::Bool(true))]),
            // a big list, not a str
            call("f", vec![Value::List(vec![Value::Int(1); MIN_PAYLOAD])], vec![]),
            // a head longer than MAX_HEAD
            call("f", vec![Value::Str("k".repeat(MAX_HEAD).into()), big.clone()], vec![]),
        ];
        for body in cases {
            assert!(split_and_finish(&body, 512).is_none());
        }
        let mut not_a_call = vec![0u8; MIN_PAYLOAD];
        not_a_call[0] = 0x92;
        assert!(split_and_finish(&not_a_call, 1000).is_none());
    }

    #[test]
    fn a_payload_that_is_not_utf8_decodes_as_the_whole_frame_does() {
        let body = call("put", vec![Value::Str("z".repeat(MIN_PAYLOAD).into())], vec![]);
        let mut bad = body.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        let split = split_and_finish(&bad, 4096).expect("taken apart");
        let whole = crate::native::decode_request(&bad);
        // (serde's decoder takes a str that is not UTF-8 as bytes)
        assert!(split == whole, "the split frame decodes differently from the whole");
    }

    #[test]
    fn a_length_that_does_not_end_the_frame_is_no() {
        // The payload header claims more (or fewer) bytes than the frame has left.
        let body = call("put", vec![Value::Bytes(vec![1; MIN_PAYLOAD])], vec![]);
        assert!(matches!(scan(&body, body.len() + 1), Scan::No));
        assert!(matches!(scan(&body[..body.len() - 1], body.len() - 1), Scan::No));
    }

    /// The frame of `response` as every other reply is written.
    fn whole_frame(response: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_with(&mut out, |body| crate::native::encode_response(response, body)).unwrap();
        out
    }

    #[test]
    fn a_reply_split_off_its_big_value_is_the_same_bytes() {
        let cases = [
            Value::Str("s".repeat(MIN_PAYLOAD).into()),
            Value::Str("é".repeat(70_000).into()),
            Value::Bytes(vec![7; 1 << 20]),
            Value::Bytes(vec![7; MIN_PAYLOAD]),
        ];
        for (id, value) in (0..).zip(cases) {
            let response = Response { id: id * 1_000_003, result: Ok(Reply::Value(value)) };
            let whole = whole_frame(&response);
            let mut out = vec![1, 2, 3];
            let payload = encode_reply_frame(response, &mut out).expect("split");
            assert_eq!(out[..3], [1, 2, 3], "appended");
            out.extend_from_slice(&payload);
            assert!(out[3..] == whole[..], "the split frame differs");
        }
    }

    #[test]
    fn any_other_response_is_given_back_untouched() {
        let cases = [
            Response { id: 1, result: Ok(Reply::Value(Value::Str("s".repeat(MIN_PAYLOAD - 1).into()))) },
            Response { id: 2, result: Ok(Reply::Value(Value::List(vec![Value::Bytes(vec![0; MIN_PAYLOAD])]))) },
            Response { id: 3, result: Ok(Reply::Done) },
            Response { id: 4, result: Err(WireError::new(crate::ErrorCode::Timeout, "x".repeat(MIN_PAYLOAD))) },
        ];
        for response in cases {
            let mut out = Vec::new();
            let back = encode_reply_frame(response.clone(), &mut out).unwrap_err();
            assert_eq!(back, response);
            assert!(out.is_empty());
        }
    }

    proptest! {
        /// Whatever the frame, a split read decodes to what the whole frame does.
        #[test]
        fn a_split_frame_decodes_as_the_whole(
            key in ".{0,40}",
            n in MIN_PAYLOAD - 2..MIN_PAYLOAD + 40,
            as_bytes in any::<bool>(),
            corrupt in proptest::option::of(0usize..2000),
            step in 1usize..5000,
        ) {
            let value = if as_bytes { Value::Bytes(vec![b'v'; n]) } else { Value::Str("v".repeat(n).into()) };
            let mut body = call("__setitem__", vec![Value::Str(key.as_str().into()), value], vec![]);
            if let Some(at) = corrupt {
                let at = body.len() - 1 - at;
                body[at] = 0xc1;
            }
            if let Some(split) = split_and_finish(&body, step) {
                let whole = crate::native::decode_request(&body);
                prop_assert!(split == whole, "the split frame decodes differently from the whole");
            }
        }
    }
}
