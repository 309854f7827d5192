//! A direct MessagePack codec for [`Value`] (the layout is in the `msgpack` module
//! doc), behind [`Value::to_msgpack`] and [`Value::from_msgpack`] and the ext payloads
//! of the serde impls.
//!
//! The decoder never recurses: it keeps its open containers in a `Vec`, so hostile
//! input costs no stack however deep it nests; nesting beyond
//! [`MAX_DEPTH`](super::MAX_DEPTH) is still refused, because everything done with a
//! value afterwards (`==`, hashing, `repr`, drop) recurses once per level. The encoder
//! recurses once per level of a value it is given, in two passes: one measures every
//! ext payload so that the second writes the smallest headers, byte for byte what
//! rmp-serde writes for the same value.
use num_bigint::BigInt;

use super::msgpack::{TAG_BIGINT, TAG_FROZENSET, TAG_OBJECT, TAG_SET, TAG_TUPLE};
use super::{Build, Dict, Object, Set, Value};

// ---------------------------------------------------------------- encoding

/// A MessagePack header: up to 9 bytes.
struct Header {
    bytes: [u8; 9],
    len: usize,
}

impl Header {
    fn new(marker: u8, data: &[u8]) -> Header {
        let mut bytes = [0; 9];
        bytes[0] = marker;
        bytes[1..=data.len()].copy_from_slice(data);
        Header { bytes, len: 1 + data.len() }
    }

    /// Appends the header. All nine bytes are copied and the surplus cut off: a copy
    /// of fixed size compiles to two moves, where one of 1–9 bytes was a `memcpy` call
    /// (a tenth of the cost of encoding a call).
    fn put(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        out.extend_from_slice(&self.bytes);
        out.truncate(end);
    }
}

/// The header of an unsigned int, smallest form first (as rmp's `write_uint`).
fn uint_header(n: u64) -> Header {
    match n {
        0..=127 => Header::new(n as u8, &[]),
        128..=255 => Header::new(0xcc, &[n as u8]),
        256..=65535 => Header::new(0xcd, &(n as u16).to_be_bytes()),
        65536..=4_294_967_295 => Header::new(0xce, &(n as u32).to_be_bytes()),
        _ => Header::new(0xcf, &n.to_be_bytes()),
    }
}

/// Appends an unsigned int in MessagePack, the bytes `rmp::encode::write_uint` writes,
/// without its `io::Write` round trip (for hand-written message encoders).
#[inline]
pub fn put_uint(out: &mut Vec<u8>, n: u64) {
    uint_header(n).put(out);
}

/// [`put_uint`]'s bytes for `n`, at the front of nine, and how many of them count: for
/// a writer that copies a fixed size and keeps the count (`native::fast`'s call head).
#[inline]
pub(crate) fn uint_bytes(n: u64) -> ([u8; 9], usize) {
    let header = uint_header(n);
    (header.bytes, header.len)
}

/// Appends a str in MessagePack, as `rmp::encode::write_str` does. A string longer
/// than `u32::MAX` bytes has no MessagePack form: the caller checks first.
#[inline]
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    str_header(s.len()).put(out);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the header of a MessagePack str of `n` bytes (the bytes follow).
pub(crate) fn put_str_header(out: &mut Vec<u8>, n: usize) {
    str_header(n).put(out);
}

/// Appends the header of a MessagePack bin of `n` bytes (the bytes follow).
pub(crate) fn put_bin_header(out: &mut Vec<u8>, n: usize) {
    bin_header(n).put(out);
}

/// Appends the header of a MessagePack array of `n` items, as
/// `rmp::encode::write_array_len` does (`n` at most `u32::MAX`: the caller checks).
#[inline]
pub(crate) fn put_array_len(out: &mut Vec<u8>, n: usize) {
    array_header(n).put(out);
}

/// The int header and payload, smallest form first (as rmp's `write_sint`).
fn int_header(i: i64) -> Header {
    match i {
        -32..=127 => Header::new(i as u8, &[]),
        -128..=-33 => Header::new(0xd0, &(i as i8).to_be_bytes()),
        -32768..=-129 => Header::new(0xd1, &(i as i16).to_be_bytes()),
        -2_147_483_648..=-32769 => Header::new(0xd2, &(i as i32).to_be_bytes()),
        i64::MIN..=-2_147_483_649 => Header::new(0xd3, &i.to_be_bytes()),
        128..=255 => Header::new(0xcc, &[i as u8]),
        256..=65535 => Header::new(0xcd, &(i as u16).to_be_bytes()),
        65536..=4_294_967_295 => Header::new(0xce, &(i as u32).to_be_bytes()),
        _ => Header::new(0xcf, &(i as u64).to_be_bytes()),
    }
}

/// A length that MessagePack can carry (u32); longer values cannot be encoded at all
/// and never get this far under the frame-size limit.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The header of a length-prefixed item: `fix` (with the fix-form bound) or the 8/16/32
/// bit markers (`None` where a form does not exist).
fn len_header(n: usize, fix: Option<(u8, u32)>, markers: [Option<u8>; 3]) -> Header {
    let n = len32(n);
    match (fix, markers) {
        (Some((base, bound)), _) if n < bound => Header::new(base | n as u8, &[]),
        (_, [Some(m8), _, _]) if n <= 0xff => Header::new(m8, &[n as u8]),
        (_, [_, Some(m16), _]) if n <= 0xffff => Header::new(m16, &(n as u16).to_be_bytes()),
        (_, [_, _, m32]) => Header::new(m32.unwrap_or(0xc1), &n.to_be_bytes()),
    }
}

fn str_header(n: usize) -> Header {
    len_header(n, Some((0xa0, 32)), [Some(0xd9), Some(0xda), Some(0xdb)])
}
fn bin_header(n: usize) -> Header {
    len_header(n, None, [Some(0xc4), Some(0xc5), Some(0xc6)])
}
fn array_header(n: usize) -> Header {
    len_header(n, Some((0x90, 16)), [None, Some(0xdc), Some(0xdd)])
}
fn map_header(n: usize) -> Header {
    len_header(n, Some((0x80, 16)), [None, Some(0xde), Some(0xdf)])
}

/// The ext header for a payload of `n` bytes with type `tag` (as rmp's `write_ext_meta`).
fn ext_header(n: usize, tag: i8) -> Header {
    let fixed = match n {
        1 => Some(0xd4),
        2 => Some(0xd5),
        4 => Some(0xd6),
        8 => Some(0xd7),
        16 => Some(0xd8),
        _ => None,
    };
    let mut header = match fixed {
        Some(marker) => Header::new(marker, &[]),
        None => len_header(n, None, [Some(0xc7), Some(0xc8), Some(0xc9)]),
    };
    header.bytes[header.len] = tag as u8;
    header.len += 1;
    header
}

/// Where the encoder's walk goes: a byte counter (first pass) or a buffer (second).
trait Sink {
    fn header(&mut self, header: Header);
    fn raw(&mut self, bytes: &[u8]);
    /// An ext item begins; its payload follows until the matching `ext_end`.
    fn ext_begin(&mut self, tag: i8);
    fn ext_end(&mut self);
}

/// First pass: counts bytes and records each ext payload's length, in walk order.
#[derive(Default)]
struct Measure {
    total: usize,
    ext_lens: Vec<usize>,
    open: Vec<(usize, usize, i8)>, // (slot in ext_lens, total at begin, tag)
}

impl Sink for Measure {
    fn header(&mut self, header: Header) {
        self.total += header.len;
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
    }
    fn ext_begin(&mut self, tag: i8) {
        self.open.push((self.ext_lens.len(), self.total, tag));
        self.ext_lens.push(0);
    }
    fn ext_end(&mut self) {
        if let Some((slot, start, tag)) = self.open.pop() {
            let len = self.total - start;
            self.ext_lens[slot] = len;
            self.total += ext_header(len, tag).len;
        }
    }
}

/// Second pass: writes, taking ext payload lengths from the first.
struct Write<I> {
    out: Vec<u8>,
    ext_lens: I,
}

impl<I: Iterator<Item = usize>> Sink for Write<I> {
    fn header(&mut self, header: Header) {
        header.put(&mut self.out);
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn ext_begin(&mut self, tag: i8) {
        let len = self.ext_lens.next().unwrap_or(0);
        self.header(ext_header(len, tag));
    }
    fn ext_end(&mut self) {}
}

/// Runs `walk` twice: to measure, then to write.
fn two_pass(walk: impl Fn(&mut dyn Sink)) -> Vec<u8> {
    let mut measure = Measure::default();
    walk(&mut measure);
    let mut write = Write { out: Vec::with_capacity(measure.total), ext_lens: measure.ext_lens.into_iter() };
    walk(&mut write);
    write.out
}

/// Encodes a value.
pub(super) fn encode(value: &Value) -> Vec<u8> {
    two_pass(|sink| walk(value, sink))
}

/// Appends the encoding of `value` to `out`: a scalar directly (most arguments and
/// replies are one), anything else through the two passes.
pub(super) fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match Scalar::of(value) {
        Some(scalar) => scalar.put(out),
        None => out.extend_from_slice(&encode(value)),
    }
}

/// A scalar value, borrowed: what [`Value`] holds, or what a Rust value serializes as
/// (`ser::ScalarWriter` encodes one without building the `Value`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Scalar<'a> {
    /// `value` if it is a scalar; `None` for containers and exts.
    fn of(value: &'a Value) -> Option<Scalar<'a>> {
        Some(match value {
            Value::None => Scalar::None,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Int(i) => Scalar::Int(*i),
            Value::Float(f) => Scalar::Float(*f),
            Value::Str(s) => Scalar::Str(s),
            Value::Bytes(b) => Scalar::Bytes(b),
            _ => return None,
        })
    }

    /// The header and the bytes after it.
    fn parts(self) -> (Header, &'a [u8]) {
        match self {
            Scalar::None => (Header::new(0xc0, &[]), &[]),
            Scalar::Bool(b) => (Header::new(if b { 0xc3 } else { 0xc2 }, &[]), &[]),
            Scalar::Int(i) => (int_header(i), &[]),
            Scalar::Float(f) => (Header::new(0xcb, &f.to_be_bytes()), &[]),
            Scalar::Str(s) => (str_header(s.len()), s.as_bytes()),
            Scalar::Bytes(b) => (bin_header(b.len()), b),
        }
    }

    /// Appends the encoding: the bytes [`Value::to_msgpack`] writes for the same value.
    pub(super) fn put(self, out: &mut Vec<u8>) {
        let (header, body) = self.parts();
        header.put(out);
        // None, a bool, an int or a float (a setter's reply, a counter's sum) has no
        // body: copying the empty one is still a `memcpy` call.
        if !body.is_empty() {
            out.extend_from_slice(body);
        }
    }
}

/// The ext type and payload of a tuple, set, frozenset, big int or object (`None` for
/// the types MessagePack has natively).
pub(super) fn ext_payload(value: &Value) -> Option<(i8, Vec<u8>)> {
    let tag = ext_tag(value)?;
    Some((tag, two_pass(|sink| walk_ext_body(value, sink))))
}

fn ext_tag(value: &Value) -> Option<i8> {
    Some(match value {
        Value::Tuple(_) => TAG_TUPLE,
        Value::Set(_) => TAG_SET,
        Value::FrozenSet(_) => TAG_FROZENSET,
        Value::BigInt(_) => TAG_BIGINT,
        Value::Object(_) => TAG_OBJECT,
        _ => return None,
    })
}

fn walk(value: &Value, sink: &mut dyn Sink) {
    if let Some((header, body)) = Scalar::of(value).map(Scalar::parts) {
        sink.header(header);
        sink.raw(body);
        return;
    }
    match value {
        Value::List(items) => walk_seq(items.len(), items.iter(), sink),
        Value::Dict(d) => {
            sink.header(map_header(d.len()));
            for (k, v) in d.iter() {
                walk(k, sink);
                walk(v, sink);
            }
        }
        other => {
            sink.ext_begin(ext_tag(other).unwrap_or(0));
            walk_ext_body(other, sink);
            sink.ext_end();
        }
    }
}

fn walk_seq<'a>(len: usize, items: impl Iterator<Item = &'a Value>, sink: &mut dyn Sink) {
    sink.header(array_header(len));
    for item in items {
        walk(item, sink);
    }
}

fn walk_ext_body(value: &Value, sink: &mut dyn Sink) {
    match value {
        Value::Tuple(items) => walk_seq(items.len(), items.iter(), sink),
        Value::Set(set) | Value::FrozenSet(set) => walk_seq(set.len(), set.iter(), sink),
        Value::BigInt(b) => sink.raw(&b.to_signed_bytes_le()),
        Value::Object(obj) => walk_object(obj, sink),
        _ => {}
    }
}

/// The object payload: `[module, qualname, build, args, kwargs, state, list, dict]`.
fn walk_object(obj: &Object, sink: &mut dyn Sink) {
    let (kind, args, kwargs): (i64, &[Value], &[(Value, Value)]) = match &obj.build {
        Build::Global => (0, &[], &[]),
        Build::Reduce(args) => (1, args, &[]),
        Build::NewObj(args) => (2, args, &[]),
        Build::NewObjEx(args, kwargs) => (3, args, kwargs),
    };
    sink.header(array_header(8));
    for text in [&obj.module, &obj.qualname] {
        sink.header(str_header(text.len()));
        sink.raw(text.as_bytes());
    }
    sink.header(int_header(kind));
    walk_seq(args.len(), args.iter(), sink);
    walk_pairs(kwargs, sink);
    walk_seq(obj.state.iter().len(), obj.state.iter(), sink);
    walk_seq(obj.list_items.len(), obj.list_items.iter(), sink);
    walk_pairs(&obj.dict_items, sink);
}

fn walk_pairs(pairs: &[(Value, Value)], sink: &mut dyn Sink) {
    sink.header(array_header(pairs.len()));
    for (k, v) in pairs {
        sink.header(array_header(2));
        walk(k, sink);
        walk(v, sink);
    }
}

// ---------------------------------------------------------------- decoding

/// Preallocate at most this many items from an untrusted length.
const MAX_PREALLOC: usize = 4096;

/// A cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or_else(|| "unexpected end of input".to_string())?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    /// A big-endian length of `width` bytes (1, 2 or 4).
    fn len(&mut self, width: u8) -> Result<usize, String> {
        Ok(match width {
            1 => usize::from(self.u8()?),
            2 => usize::from(u16::from_be_bytes(self.array()?)),
            _ => u32::from_be_bytes(self.array()?) as usize,
        })
    }
}

/// What a container being decoded becomes once complete.
enum Kind {
    List,
    Tuple,
    Set,
    FrozenSet,
    /// The 8-field array of an object payload.
    Object,
}

/// A container being decoded.
enum Frame {
    Seq { kind: Kind, items: Vec<Value>, left: usize, end: Option<usize> },
    Map { dict: Dict, key: Option<Value>, left: usize },
}

/// One step of decoding: an item, or a container opened (its items follow).
enum Step {
    Item(Value),
    Opened(Frame),
}

/// Decodes exactly one value filling `bytes`, nested at most `max_depth` deep.
pub(super) fn decode(bytes: &[u8], max_depth: usize) -> Result<Value, String> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let value = Decoder { max_depth, stack: Vec::new() }.run(&mut reader, None)?;
    match bytes.len() - reader.pos {
        0 => Ok(value),
        n => Err(format!("{n} trailing bytes")),
    }
}

/// Decodes the one value at the start of `bytes` (more may follow it), nested at most
/// `max_depth` deep; returns it and how many bytes it took.
pub(super) fn decode_prefix(bytes: &[u8], max_depth: usize) -> Result<(Value, usize), String> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let marker = reader.u8()?;
    // A scalar (most arguments and replies): no decoder, no container bookkeeping.
    if let Some(value) = scalar_item(marker, &mut reader)? {
        return Ok((value, reader.pos));
    }
    let mut decoder = Decoder { max_depth, stack: Vec::new() };
    let opened = decoder.container(marker, &mut reader)?;
    let value = decoder.run(&mut reader, Some(opened))?;
    Ok((value, reader.pos))
}

/// Decodes the payload of an ext of type `tag`, as one nesting level.
pub(super) fn decode_ext(tag: i8, payload: &[u8], max_depth: usize) -> Result<Value, String> {
    let mut reader = Reader { buf: payload, pos: 0 };
    let mut decoder = Decoder { max_depth, stack: Vec::new() };
    let first = decoder.ext(&mut reader, tag, payload.len())?;
    decoder.run(&mut reader, Some(first))
}

struct Decoder {
    max_depth: usize,
    stack: Vec<Frame>,
}

impl Decoder {
    /// Decodes one value (starting with `first` if given), iteratively.
    fn run(&mut self, r: &mut Reader<'_>, first: Option<Step>) -> Result<Value, String> {
        let mut step = match first {
            Some(step) => step,
            None => self.item(r)?,
        };
        loop {
            let mut value = match step {
                Step::Item(value) => value,
                Step::Opened(frame) => {
                    if self.stack.len() >= self.max_depth {
                        return Err(format!("nesting deeper than {} levels", super::MAX_DEPTH));
                    }
                    if !frame.is_empty() {
                        self.stack.push(frame);
                        step = self.item(r)?;
                        continue;
                    }
                    close(frame, r.pos)?
                }
            };
            // Hand the value to its container, closing every container it completes.
            loop {
                let Some(frame) = self.stack.last_mut() else {
                    return Ok(value);
                };
                if !push(frame, value)? {
                    break;
                }
                let Some(done) = self.stack.pop() else { break };
                value = close(done, r.pos)?;
            }
            step = self.item(r)?;
        }
    }

    /// Reads one item: a scalar, or the header of a container.
    fn item(&mut self, r: &mut Reader<'_>) -> Result<Step, String> {
        let marker = r.u8()?;
        match scalar_item(marker, r)? {
            Some(value) => Ok(Step::Item(value)),
            None => self.container(marker, r),
        }
    }

    /// Reads the rest of the header of the container (or ext) that `marker` opens.
    fn container(&mut self, marker: u8, r: &mut Reader<'_>) -> Result<Step, String> {
        match marker {
            0x90..=0x9f => Ok(seq(Kind::List, usize::from(marker & 0x0f), None)),
            0xdc | 0xdd => Ok(seq(Kind::List, r_len(r, marker - 0xdb)?, None)),
            0x80..=0x8f => Ok(map(usize::from(marker & 0x0f))),
            0xde | 0xdf => Ok(map(r_len(r, marker - 0xdd)?)),
            0xd4..=0xd8 => {
                let tag = r.u8()? as i8;
                self.ext(r, tag, 1 << (marker - 0xd4))
            }
            0xc7..=0xc9 => {
                let len = r_len(r, marker - 0xc7)?;
                let tag = r.u8()? as i8;
                self.ext(r, tag, len)
            }
            _ => Err(format!("invalid MessagePack marker 0x{marker:02x}")),
        }
    }

    /// Starts an ext of type `tag` whose payload is the next `len` bytes.
    fn ext(&mut self, r: &mut Reader<'_>, tag: i8, len: usize) -> Result<Step, String> {
        let end = r.pos.checked_add(len).filter(|&end| end <= r.buf.len());
        let end = end.ok_or_else(|| "unexpected end of input".to_string())?;
        let kind = match tag {
            TAG_BIGINT => return Ok(Step::Item(Value::from_bigint(BigInt::from_signed_bytes_le(r.take(len)?)))),
            TAG_TUPLE => Kind::Tuple,
            TAG_SET => Kind::Set,
            TAG_FROZENSET => Kind::FrozenSet,
            TAG_OBJECT => Kind::Object,
            other => return Err(format!("unknown MessagePack ext type {other}")),
        };
        // The payload is one array, read in place; `end` checks it fills the payload.
        let n = match r.u8()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            m @ (0xdc | 0xdd) => r_len(r, m - 0xdb)?,
            m => return Err(format!("ext type {tag} holds marker 0x{m:02x}, not an array")),
        };
        Ok(seq(kind, n, Some(end)))
    }
}

/// Reads the scalar that `marker` begins (an int, float, bool, None, str or bytes);
/// `None`, with nothing more read, if it opens a container or an ext.
fn scalar_item(marker: u8, r: &mut Reader<'_>) -> Result<Option<Value>, String> {
    Ok(Some(match marker {
        0x00..=0x7f => Value::Int(i64::from(marker)),
        0xe0..=0xff => Value::Int(i64::from(marker as i8)),
        0xc0 => Value::None,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xcc => Value::Int(i64::from(r.u8()?)),
        0xcd => Value::Int(i64::from(u16::from_be_bytes(r.array()?))),
        0xce => Value::Int(i64::from(u32::from_be_bytes(r.array()?))),
        0xcf => Value::from_bigint(BigInt::from(u64::from_be_bytes(r.array()?))),
        0xd0 => Value::Int(i64::from(i8::from_be_bytes(r.array()?))),
        0xd1 => Value::Int(i64::from(i16::from_be_bytes(r.array()?))),
        0xd2 => Value::Int(i64::from(i32::from_be_bytes(r.array()?))),
        0xd3 => Value::Int(i64::from_be_bytes(r.array()?)),
        0xca => Value::Float(f64::from(f32::from_be_bytes(r.array()?))),
        0xcb => Value::Float(f64::from_be_bytes(r.array()?)),
        0xa0..=0xbf => string(r, usize::from(marker & 0x1f))?,
        0xd9..=0xdb => {
            let len = r_len(r, marker - 0xd9)?;
            string(r, len)?
        }
        0xc4..=0xc6 => {
            let len = r_len(r, marker - 0xc4)?;
            Value::Bytes(r.take(len)?.to_vec())
        }
        _ => return Ok(None),
    }))
}

/// A length after marker offset `width_code` (0: 8 bits, 1: 16 bits, 2: 32 bits).
fn r_len(r: &mut Reader<'_>, width_code: u8) -> Result<usize, String> {
    r.len(1 << width_code)
}

fn string(r: &mut Reader<'_>, len: usize) -> Result<Value, String> {
    let bytes = r.take(len)?;
    let text = crate::utf8::str_from_utf8(bytes).map_err(|e| format!("invalid UTF-8 in str: {e}"))?;
    Ok(Value::Str(text.into()))
}

/// A sequence of `len` items (an ext payload's when `end` is given).
fn seq(kind: Kind, len: usize, end: Option<usize>) -> Step {
    let items = Vec::with_capacity(len.min(MAX_PREALLOC));
    Step::Opened(Frame::Seq { kind, items, left: len, end })
}

fn map(len: usize) -> Step {
    Step::Opened(Frame::Map { dict: Dict::with_capacity(len.min(MAX_PREALLOC)), key: None, left: len })
}

impl Frame {
    /// True for a container with no items at all (complete as soon as opened).
    fn is_empty(&self) -> bool {
        match self {
            Frame::Seq { left, .. } | Frame::Map { left, .. } => *left == 0,
        }
    }
}

/// Adds a decoded item to its container; true when the container is then complete.
fn push(frame: &mut Frame, value: Value) -> Result<bool, String> {
    match frame {
        Frame::Seq { items, left, .. } => {
            items.push(value);
            *left -= 1;
            Ok(*left == 0)
        }
        Frame::Map { dict, key, left } => match key.take() {
            None => {
                *key = Some(value);
                Ok(false)
            }
            Some(k) => {
                dict.insert(k, value).map_err(|e| e.message)?;
                *left -= 1;
                Ok(*left == 0)
            }
        },
    }
}

/// Turns a complete container into its value; an ext payload must end at `pos`.
fn close(frame: Frame, pos: usize) -> Result<Value, String> {
    let (kind, items, end) = match frame {
        Frame::Map { dict, .. } => return Ok(Value::Dict(dict)),
        Frame::Seq { kind, items, end, .. } => (kind, items, end),
    };
    if end.is_some_and(|end| end != pos) {
        return Err("ext payload length does not match its content".into());
    }
    let set = |items: Vec<Value>| Set::from_values(items).map_err(|e| e.message);
    Ok(match kind {
        Kind::List => Value::List(items),
        Kind::Tuple => Value::Tuple(items),
        Kind::Set => Value::Set(set(items)?),
        Kind::FrozenSet => Value::FrozenSet(set(items)?),
        Kind::Object => Value::Object(Box::new(object(items)?)),
    })
}

/// Rebuilds an object from its payload's 8 fields.
fn object(fields: Vec<Value>) -> Result<Object, String> {
    type Fields = (String, String, u8, Vec<Value>, Vec<(Value, Value)>, Vec<Value>, Vec<Value>, Vec<(Value, Value)>);
    let malformed = |why: String| format!("malformed object payload: {why}");
    let fields: Fields = super::from_value(Value::Tuple(fields)).map_err(|e| malformed(e.message))?;
    let (module, qualname, kind, args, kwargs, mut state, list_items, dict_items) = fields;
    let build = match kind {
        0 if args.is_empty() && kwargs.is_empty() => Build::Global,
        1 if kwargs.is_empty() => Build::Reduce(args),
        2 if kwargs.is_empty() => Build::NewObj(args),
        3 => Build::NewObjEx(args, kwargs),
        _ => return Err(malformed(format!("build kind {kind} with these arguments"))),
    };
    if state.len() > 1 {
        return Err(malformed("more than one state".into()));
    }
    let state = state.pop();
    Ok(Object { module, qualname, build, state, list_items, dict_items })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each form's bounds, and one past them.
    const EDGES: [u64; 14] = [0, 1, 15, 16, 31, 32, 127, 128, 255, 256, 65_535, 65_536, 4_294_967_295, 4_294_967_296];

    #[test]
    fn message_headers_are_the_bytes_rmp_writes() {
        for n in EDGES.into_iter().chain([u64::MAX]) {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_uint(&mut ours, n);
            rmp::encode::write_uint(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs, "uint {n}");
        }
        for n in EDGES.into_iter().filter(|&n| n <= u64::from(u32::MAX)) {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_array_len(&mut ours, n as usize);
            rmp::encode::write_array_len(&mut theirs, n as u32).unwrap();
            assert_eq!(ours, theirs, "array of {n}");
        }
        for n in EDGES.into_iter().filter(|&n| n <= 70_000) {
            let s = "x".repeat(n as usize);
            let (mut ours, mut theirs) = (vec![7], vec![7]);
            put_str(&mut ours, &s);
            rmp::encode::write_str(&mut theirs, &s).unwrap();
            assert_eq!(ours, theirs, "str of {n}");
        }
    }
}
