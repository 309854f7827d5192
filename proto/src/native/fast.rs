//! Hand-written encoders and decoders for the two messages on the hot path: a method
//! call ([`Op::Call`]) and a value reply (`Ok(Reply::Value)`). Everything else, and
//! anything these do not recognise, goes through serde.
//!
//! They write and accept exactly the bytes rmp-serde writes for those messages (structs
//! as arrays, an enum as a one-entry map keyed by the variant's name, `Args` with or
//! without its keywords; ints, strs and array lengths in their smallest form, as `rmp`
//! writes them) and code values with the same codec as [`Value::from_msgpack`], which agrees with
//! serde's (tested in `value::msgpack`). On any surprise the decoders return `None` and
//! the caller decodes with serde, whose errors are the precise ones: so this changes how
//! fast a message is coded, never its bytes or what it decodes to (proptests below).
//! Serde costs here were ~10 % of the server's CPU per request at `-P 16`
//! (BENCHMARKS.md).

use super::{Args, Op, Reply, Request, Response};
use crate::value::{decode_msgpack_prefix, encode_msgpack_into, put_array_len, put_str, put_uint, uint_bytes};
use crate::Value;

/// A cursor over a message; every read returns `None` on anything unexpected.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// How many bytes were read.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    pub(super) fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub(super) fn be(&mut self, width: usize) -> Option<u64> {
        Some(self.take(width)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// An array header's length.
    fn array(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some(usize::from(m & 0x0f)),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    /// A non-negative integer in any unsigned encoding.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// A string, borrowed from the message.
    fn str(&mut self) -> Option<&'a str> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        crate::utf8::str_from_utf8(self.take(len)?).ok()
    }

    /// An int that fits an `i64` in any encoding but the 64-bit unsigned one (whose
    /// large values are big ints: the general decoder's).
    fn int(&mut self) -> Option<i64> {
        Some(match self.byte()? {
            m @ (0x00..=0x7f | 0xe0..=0xff) => i64::from(m as i8),
            0xcc => self.be(1)? as i64,
            0xcd => self.be(2)? as i64,
            0xce => self.be(4)? as i64,
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            0xd3 => self.be(8)? as i64,
            _ => return None,
        })
    }

    fn value(&mut self) -> Option<Value> {
        // A short str (most keys and values) directly: the general decoder's result
        // plumbing cost more than the str itself (BENCHMARKS.md, round 22). So does an
        // int's (a counter's delta and sum): ~110 instructions more (round 27).
        match self.buf.get(self.pos)? {
            0xa0..=0xbf => return self.str().map(|s| Value::Str(s.into())),
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xce | 0xd0..=0xd3 => return self.int().map(Value::Int),
            _ => {}
        }
        let (value, used) = decode_msgpack_prefix(self.buf.get(self.pos..)?).ok()?;
        self.pos += used;
        Some(value)
    }

    /// `n` values (a length read off the wire is not trusted for preallocation).
    pub(super) fn values(&mut self, n: usize) -> Option<Vec<Value>> {
        // Room for a few more than were sent: the server binds these in place into one
        // slot per parameter, and a call that leaves out optional ones (a queue's
        // `put(item)` of `put(item, block, timeout)`) would otherwise reallocate.
        // From this thread's spare buffers: the server gives it back after the call.
        let mut out = super::spare::buffer(n.clamp(SLOTS, 16));
        for _ in 0..n {
            out.push(self.value()?);
        }
        Some(out)
    }

    /// Skips `bytes` if the message goes on with exactly them (fixed envelope parts, as
    /// rmp-serde writes them); `None` otherwise, and the caller falls back to serde,
    /// which accepts every other encoding of the same thing.
    fn literal(&mut self, bytes: &[u8]) -> Option<()> {
        (self.take(bytes.len())? == bytes).then_some(())
    }

    fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// The parameters most methods have at most (a queue's `put(item, block, timeout)`).
const SLOTS: usize = 3;

/// `{"Call": ` as rmp-serde writes it: a one-entry map keyed by the variant's name.
const CALL: &[u8] = b"\x81\xa4Call";
/// `{"Ok": {"Value": ` as rmp-serde writes it.
const OK_VALUE: &[u8] = b"\x81\xa2Ok\x81\xa5Value";

/// A length as MessagePack carries it; `None` beyond `u32` (serde then reports it).
fn len(n: usize) -> Option<u32> {
    u32::try_from(n).ok()
}

/// Writes `[id, {"Call": [object, method, [positional, keywords?]]}]`; `false` (and
/// nothing written) if a length does not fit MessagePack.
pub(super) fn encode_call(
    id: u64,
    object: u64,
    method: &str,
    positional: &[Value],
    keywords: &[(String, Value)],
    out: &mut Vec<u8>,
) -> bool {
    if len(method.len()).is_none() || !args_fit(positional, keywords) {
        return false;
    }
    put_call_head(id, object, method, out);
    put_args(positional, keywords, out);
    true
}

/// Writes a call with `count` positional arguments and no keywords up to its first
/// argument, which the caller appends; `false` (and nothing written) if a length does
/// not fit MessagePack.
pub(super) fn encode_positional_call_head(id: u64, object: u64, method: &str, count: usize, out: &mut Vec<u8>) -> bool {
    if method.len() < 32 && count < 16 {
        // Room for the longest such head, written in place, the surplus cut off.
        let start = out.len();
        out.resize(start + ShortHead::MAX, 0);
        let room = (&mut out[start..]).try_into().expect("room was just made");
        let written = ShortHead { room, len: 0 }.call(id, object, method, count);
        out.truncate(start + written);
        return true;
    }
    if len(method.len()).is_none() || len(count).is_none() {
        return false;
    }
    put_call_head(id, object, method, out);
    out.push(0x91); // `keywords` is left out when empty (`skip_serializing_if`)
    put_array_len(out, count);
    true
}

/// Writes the head of a positional call whose method name and argument list take
/// their MessagePack short forms (every method agora has) into room made for the
/// longest. Pushed into the `Vec` part by part, each part paying its capacity check and
/// the general header writer, the head cost 228 instructions per call; 108 this way.
/// Other heads go part by part ([`put_call_head`]): one writer in place for every
/// length (room sized at run time, a `resize` of run-time length, the argument count's
/// general header) cost 128 instructions more per call than this one.
struct ShortHead<'a> {
    room: &'a mut [u8; ShortHead::MAX],
    len: usize,
}

impl ShortHead<'_> {
    /// `[id, {"Call": [object, method, [[` with the arguments' count, at most: 1 + 9
    /// (the id) + 6 + 1 + 9 (the object) + 1 + 31 (the method) + 2 bytes.
    const MAX: usize = 60;

    /// Writes [`encode_positional_call_head`]'s bytes for a `method` that is a fixstr
    /// (under 32 bytes) and a `count` under 16 (a fixarray); returns their length.
    fn call(mut self, id: u64, object: u64, method: &str, count: usize) -> usize {
        debug_assert!(method.len() < 32 && count < 16);
        self.put(&[0x92]);
        self.put_uint(id);
        self.put(CALL);
        self.put(&[0x93]);
        self.put_uint(object);
        self.put(&[0xa0 | method.len() as u8]);
        self.put(method.as_bytes());
        // `keywords` is left out when empty (`skip_serializing_if`).
        self.put(&[0x91, 0x90 | count as u8]);
        self.len
    }

    fn put(&mut self, bytes: &[u8]) {
        self.room[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// As [`put_uint`] writes it: all nine bytes of its header copied (a copy of a
    /// known size), the count advanced by the ones that count. The room has nine
    /// bytes left wherever an integer goes.
    fn put_uint(&mut self, n: u64) {
        let (bytes, len) = uint_bytes(n);
        self.room[self.len..self.len + bytes.len()].copy_from_slice(&bytes);
        self.len += len;
    }
}

/// `[id, {"Call": [object, method, ` — the arguments follow.
fn put_call_head(id: u64, object: u64, method: &str, out: &mut Vec<u8>) {
    out.push(0x92);
    put_uint(out, id);
    out.extend_from_slice(CALL);
    out.push(0x93);
    put_uint(out, object);
    put_str(out, method);
}

/// Writes an `Args` as serde does, `[positional, keywords?]`; `false` (and nothing
/// written) if a length does not fit MessagePack.
pub(super) fn encode_args(positional: &[Value], keywords: &[(String, Value)], out: &mut Vec<u8>) -> bool {
    if !args_fit(positional, keywords) {
        return false;
    }
    put_args(positional, keywords, out);
    true
}

/// Whether every length in a call's arguments fits MessagePack.
fn args_fit(positional: &[Value], keywords: &[(String, Value)]) -> bool {
    let lengths = [positional.len(), keywords.len()].into_iter();
    lengths.chain(keywords.iter().map(|(name, _)| name.len())).all(|n| len(n).is_some())
}

/// [`encode_args`] once its lengths are checked.
fn put_args(positional: &[Value], keywords: &[(String, Value)], out: &mut Vec<u8>) {
    // `keywords` is left out when empty (`skip_serializing_if`).
    out.push(if keywords.is_empty() { 0x91 } else { 0x92 });
    put_array_len(out, positional.len());
    for value in positional {
        encode_msgpack_into(value, out);
    }
    if !keywords.is_empty() {
        put_array_len(out, keywords.len());
        for (name, value) in keywords {
            put_array_len(out, 2);
            put_str(out, name);
            encode_msgpack_into(value, out);
        }
    }
}

/// Writes `[id, {"Ok": {"Value": value}}]`.
pub(super) fn encode_value_response(id: u64, value: &Value, out: &mut Vec<u8>) {
    put_value_response_head(id, out);
    encode_msgpack_into(value, out);
}

/// Writes `[id, {"Ok": {"Value": ` — the value follows.
pub(super) fn put_value_response_head(id: u64, out: &mut Vec<u8>) {
    out.push(0x92);
    put_uint(out, id);
    out.extend_from_slice(OK_VALUE);
}

/// A call up to its first positional argument: `[id, {"Call": [object, method,
/// [positional…`.
pub(super) struct CallHead<'a> {
    pub(super) id: u64,
    pub(super) object: u64,
    pub(super) method: &'a str,
    /// 2 when keywords follow the positional arguments, 1 when they are left out.
    pub(super) fields: usize,
    /// How many positional arguments follow.
    pub(super) positional: usize,
}

/// Reads a call's envelope, up to its positional arguments.
pub(super) fn call_head<'a>(c: &mut Cursor<'a>) -> Option<CallHead<'a>> {
    if c.array()? != 2 {
        return None;
    }
    let id = c.uint()?;
    c.literal(CALL)?;
    if c.array()? != 3 {
        return None;
    }
    let object = c.uint()?;
    let method = c.str()?;
    let fields = c.array()?;
    if !(1..=2).contains(&fields) {
        return None;
    }
    let positional = c.array()?;
    Some(CallHead { id, object, method, fields, positional })
}

/// `[id, {"Call": [object, method, [positional, keywords?]]}]`.
pub(super) fn call_request(bytes: &[u8]) -> Option<Request> {
    let mut c = Cursor::new(bytes);
    let CallHead { id, object, method, fields, positional: n } = call_head(&mut c)?;
    let method = method.into();
    let positional = c.values(n)?;
    let mut keywords = Vec::new();
    if fields == 2 {
        for _ in 0..c.array()? {
            if c.array()? != 2 {
                return None;
            }
            let name = c.str()?.to_owned();
            keywords.push((name, c.value()?));
        }
    }
    c.at_end().then_some(Request { id, op: Op::Call { object, method, args: Args { positional, keywords } } })
}

/// `[id, {"Ok": {"Value": value}}]`.
pub(super) fn value_response(bytes: &[u8]) -> Option<Response> {
    value_reply(bytes).map(|(id, value)| Response { id, result: Ok(Reply::Value(value)) })
}

/// `[id, {"Ok": {"Value": value}}]`: the id and the value.
pub(super) fn value_reply(bytes: &[u8]) -> Option<(u64, Value)> {
    let mut c = Cursor::new(bytes);
    if c.array()? != 2 {
        return None;
    }
    let id = c.uint()?;
    c.literal(OK_VALUE)?;
    let value = c.value()?;
    c.at_end().then_some((id, value))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{decode, encode, MemoryStats, ServerStats};
    use super::*;
    use crate::{ErrorCode, WireError};

    fn bytes_of<T: serde::Serialize>(message: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out).unwrap();
        out
    }

    /// Values of every wire shape (the codec's agreement with serde on every value is
    /// tested in `value::msgpack`; here the framing around them is what matters).
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            any::<u64>().prop_map(|u| Value::from_bigint(u.into())),
            "[a-z\u{e9}\u{1F600}]{0,40}".prop_map(|s: String| Value::Str(s.into())),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::vec(inner, 0..4).prop_map(Value::Tuple),
            ]
        })
    }

    fn call() -> impl Strategy<Value = Request> {
        (
            any::<u64>(),
            any::<u64>(),
            "[a-z_]{0,40}",
            proptest::collection::vec(value(), 0..20),
            proptest::collection::vec(("[a-z]{1,8}", value()), 0..3),
        )
            .prop_map(|(id, object, method, positional, keywords)| Request {
                id,
                op: Op::Call { object, method: method.into(), args: Args { positional, keywords } },
            })
    }

    #[test]
    fn a_call_whose_arguments_cannot_be_converted_appends_nothing() {
        let unhashable = std::collections::BTreeMap::from([(vec![1], 1)]);
        let mut out = vec![0xee];
        let err = super::super::encode_call(1, 2, "__setitem__", &("k", &unhashable), &mut out).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        assert_eq!(err.message, "unhashable type: 'list'");
        assert_eq!(out, [0xee]);
    }

    #[test]
    fn a_call_head_is_serdes_at_every_integer_width_and_either_side_of_every_length_form() {
        let widths = [0, 127, 128, 255, 256, 65_535, 65_536, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX];
        for (id, object) in widths.iter().flat_map(|&id| widths.iter().map(move |&object| (id, object))) {
            for method in ["", "get", &"m".repeat(31), &"m".repeat(32), &"m".repeat(256), &"m".repeat(65_536)] {
                for count in [0, 1, 15, 16] {
                    let positional = vec![Value::None; count];
                    let mut out = Vec::new();
                    super::super::encode_call(id, object, method, positional.as_slice(), &mut out).unwrap();
                    let request = Request {
                        id,
                        op: Op::Call { object, method: method.into(), args: Args::positional(positional) },
                    };
                    assert_eq!(
                        out,
                        bytes_of(&request),
                        "id {id}, object {object}, method of {}, {count} args",
                        method.len()
                    );
                }
            }
        }
    }

    /// Decoded by hand, decoded by serde: the same message (compared by their encoding,
    /// which is exact where `==` is not: NaN).
    fn agree<T: serde::Serialize>(fast: Option<T>, serde: Result<T, WireError>) -> Result<(), TestCaseError> {
        if let Some(fast) = fast {
            let serde =
                serde.map_err(|e| TestCaseError::fail(format!("fast path accepted what serde refuses: {e}")))?;
            prop_assert_eq!(bytes_of(&fast), bytes_of(&serde));
        }
        Ok(())
    }

    /// The hand-written encoding of a message, through the public entry points.
    fn fast_bytes_of_request(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        super::super::encode_request(request, &mut out).unwrap();
        out
    }

    proptest! {
        #[test]
        fn calls_encode_as_serde_encodes_them(request in call()) {
            prop_assert_eq!(fast_bytes_of_request(&request), bytes_of(&request));
        }

        #[test]
        fn calls_encode_from_borrowed_parts_as_whole_requests_do(request in call()) {
            let Request { id, op: Op::Call { object, method, mut args } } = request else { unreachable!() };
            args.keywords.clear();
            let mut out = Vec::new();
            super::super::encode_call(id, object, &method, args.positional.as_slice(), &mut out).unwrap();
            prop_assert_eq!(out, bytes_of(&Request { id, op: Op::Call { object, method, args } }));
        }

        #[test]
        fn calls_encode_from_rust_values_as_from_their_values(
            (id, object) in (any::<u64>(), any::<u64>()),
            method in "[a-z_]{0,40}",
            key in "[a-z\u{e9}\u{1F600}]{0,40}",
            (n, f, u) in (any::<i64>(), any::<f64>(), any::<u64>()),
        ) {
            let args = (&key, &(n, f), &Some(u));
            let mut out = vec![0xee];
            super::super::encode_call(id, object, &method, &args, &mut out).unwrap();
            let values = vec![crate::to_value(&key)?, crate::to_value(&(n, f))?, crate::to_value(&Some(u))?];
            let request = Request { id, op: Op::Call { object, method: method.into(), args: Args::positional(values) } };
            prop_assert_eq!(&out[1..], &bytes_of(&request)[..]);
        }

        #[test]
        fn arguments_encode_as_serde_encodes_them(request in call()) {
            let Request { op: Op::Call { args, .. }, .. } = request else { unreachable!() };
            let mut out = Vec::new();
            super::super::encode_args(&args, &mut out).unwrap();
            prop_assert_eq!(out, rmp_serde::to_vec(&args).unwrap());
        }

        #[test]
        fn value_replies_encode_as_serde_encodes_them(id in any::<u64>(), v in value()) {
            let response = Response { id, result: Ok(Reply::Value(v)) };
            let mut out = Vec::new();
            super::super::encode_response(&response, &mut out).unwrap();
            prop_assert_eq!(out, bytes_of(&response));
        }

        #[test]
        fn calls_decode_as_serde_decodes_them(request in call()) {
            let bytes = bytes_of(&request);
            let fast = call_request(&bytes);
            prop_assert!(fast.is_some(), "a call must take the fast path");
            agree(fast, decode::<Request>(&bytes))?;
        }

        #[test]
        fn value_replies_decode_as_serde_decodes_them(id in any::<u64>(), v in value()) {
            let bytes = bytes_of(&Response { id, result: Ok(Reply::Value(v)) });
            let fast = value_response(&bytes);
            prop_assert!(fast.is_some(), "a value reply must take the fast path");
            agree(fast, decode::<Response>(&bytes))?;
        }

        #[test]
        fn damaged_calls_are_left_to_serde(request in call(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = bytes_of(&request);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            agree(call_request(&bytes), decode::<Request>(&bytes))?;
            bytes.truncate(i);
            prop_assert!(call_request(&bytes).is_none() || decode::<Request>(&bytes).is_ok());
        }

        #[test]
        fn damaged_replies_are_left_to_serde(id in any::<u64>(), v in value(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = bytes_of(&Response { id, result: Ok(Reply::Value(v)) });
            let i = at.index(bytes.len());
            bytes[i] = byte;
            agree(value_response(&bytes), decode::<Response>(&bytes))?;
        }
    }

    #[test]
    fn ints_in_every_encoding_take_the_fast_path_as_serde_reads_them() {
        let reply = |value: &[u8]| {
            let mut bytes = bytes_of(&Response { id: 7, result: Ok(Reply::Value(Value::None)) });
            assert_eq!(bytes.pop(), Some(0xc0), "the value is last");
            bytes.extend_from_slice(value);
            bytes
        };
        let cases: [(&[u8], i64); 14] = [
            (&[0x05], 5),
            (&[0x7f], 127),
            (&[0xe0], -32),
            (&[0xff], -1),
            (&[0xcc, 0xff], 255),
            (&[0xcd, 0xff, 0xff], 65_535),
            (&[0xce, 0xff, 0xff, 0xff, 0xff], u32::MAX.into()),
            (&[0xd0, 0x80], -128),
            (&[0xd0, 0x05], 5),
            (&[0xd1, 0x80, 0x00], i16::MIN.into()),
            (&[0xd2, 0x80, 0, 0, 0], i32::MIN.into()),
            (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], i64::MIN),
            (&[0xd3, 0, 0, 0, 0, 0, 0, 0, 5], 5),
            (&[0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], i64::MAX),
        ];
        for (encoded, expected) in cases {
            let bytes = reply(encoded);
            let fast = value_response(&bytes).unwrap_or_else(|| panic!("{encoded:02x?} takes the fast path"));
            let Ok(Reply::Value(Value::Int(got))) = fast.result else { panic!("{encoded:02x?}: {fast:?}") };
            assert_eq!(got, expected, "{encoded:02x?}");
            assert_eq!(decode::<Response>(&bytes).unwrap().result, Ok(Reply::Value(Value::Int(expected))));
        }
        // Cut short: serde decides (and words the error).
        for encoded in [&[0xce, 0xff][..], &[0xd3, 0, 0]] {
            assert!(value_response(&reply(encoded)).is_none(), "{encoded:02x?}");
        }
        // A u64 past i64 is a big int: the general decoder's, as serde reads it.
        let bytes = reply(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let big = Ok(Reply::Value(Value::from_bigint(u64::MAX.into())));
        assert_eq!(value_response(&bytes).map(|r| r.result), Some(big.clone()));
        assert_eq!(decode::<Response>(&bytes).unwrap().result, big);
    }

    #[test]
    fn a_short_str_that_is_not_utf8_is_left_to_serde() {
        // The fixstr shortcut must not decide what invalid UTF-8 means: serde does, on
        // every path (it reads such a str as bytes).
        let call = Op::Call { object: 1, method: "get".into(), args: Args::positional(vec![Value::Str("ab".into())]) };
        let mut bytes = bytes_of(&Request { id: 1, op: call });
        let at = bytes.windows(3).position(|w| w == b"\xa2ab").expect("the fixstr argument");
        bytes[at + 1] = 0xff;
        assert!(call_request(&bytes).is_none(), "the fast path decodes only valid UTF-8");
        assert_eq!(super::super::decode_request(&bytes), decode::<Request>(&bytes));
        let reply = Response { id: 1, result: Ok(Reply::Value(Value::Str("ab".into()))) };
        let mut bytes = bytes_of(&reply);
        let at = bytes.windows(3).position(|w| w == b"\xa2ab").expect("the fixstr value");
        bytes[at + 2] = 0xc0;
        assert!(value_response(&bytes).is_none());
        assert_eq!(super::super::decode_response(&bytes), decode::<Response>(&bytes));
    }

    #[test]
    fn other_messages_go_through_serde() {
        let ping = bytes_of(&Request { id: 1, op: Op::Ping });
        assert!(call_request(&ping).is_none());
        assert_eq!(super::super::decode_request(&ping).unwrap(), Request { id: 1, op: Op::Ping });
        let error = Response { id: 2, result: Err(WireError::new(ErrorCode::KeyError, "'k'")) };
        assert!(value_response(&bytes_of(&error)).is_none());
        assert_eq!(super::super::decode_response(&bytes_of(&error)).unwrap(), error);
        let stats = Response {
            id: 3,
            result: Ok(Reply::Stats(Box::new(ServerStats {
                version: "v".into(),
                uptime_secs: 1,
                sessions: 0,
                connections_total: 0,
                connections_refused: 0,
                requests_total: 0,
                requests_per_sec: 0.0,
                objects_by_kind: vec![],
                named_objects: 0,
                memory_bytes: 0,
                durability: None,
                client_objects_untracked: 0,
                python_threads: 0,
                memory: Some(MemoryStats { in_use: 5, limit: Some(10), refused: 1, returned: 0 }),
                cluster: Some(Box::new(super::super::ClusterStats {
                    node_id: 2,
                    role: "Leader".into(),
                    term: 3,
                    leader: Some(2),
                    last_log_index: Some(9),
                    last_applied: Some(9),
                    members: vec![super::super::ClusterMember { id: 1, peer: "h:1".into(), voter: true, lag: Some(0) }],
                })),
            }))),
        };
        assert!(value_response(&bytes_of(&stats)).is_none());
        assert_eq!(super::super::decode_response(&bytes_of(&stats)).unwrap(), stats);
    }

    #[test]
    fn trailing_bytes_and_garbage_get_serdes_answer() {
        let mut bytes =
            bytes_of(&Request { id: 1, op: Op::Call { object: 2, method: "m".into(), args: Args::default() } });
        bytes.push(0);
        assert!(call_request(&bytes).is_none());
        assert_eq!(super::super::decode_request(&bytes), decode::<Request>(&bytes));
        assert_eq!(super::super::decode_request(&[0xc1]).unwrap_err().code, ErrorCode::Protocol);
    }
}
