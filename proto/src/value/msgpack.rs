//! The native wire encoding of [`Value`]: MessagePack (through rmp-serde), with ext
//! types for what MessagePack lacks. This table is part of the wire protocol:
//!
//! | `Value` | MessagePack |
//! |---|---|
//! | `None` | nil |
//! | `Bool` | bool |
//! | `Int` | int (smallest encoding) |
//! | `Float` | float 64 |
//! | `Str` | str |
//! | `Bytes` | bin |
//! | `List` | array |
//! | `Dict` | map (keys are any hashable value; order kept) |
//! | `Tuple` | ext [`TAG_TUPLE`] (1): the members as a MessagePack array |
//! | `Set` | ext [`TAG_SET`] (2): the members as a MessagePack array |
//! | `FrozenSet` | ext [`TAG_FROZENSET`] (3): the members as a MessagePack array |
//! | `BigInt` | ext [`TAG_BIGINT`] (4): signed little-endian two's complement bytes |
//! | `Object` | ext [`TAG_OBJECT`] (5): a MessagePack array, see below |
//!
//! The object payload is `[module: str, qualname: str, build: int, args: array,
//! kwargs: array of [key, value], state: array of 0 or 1 value, list_items: array,
//! dict_items: array of [key, value]]`, where build is 0 (the global itself; args and
//! kwargs empty), 1 (REDUCE), 2 (NEWOBJ) or 3 (NEWOBJ_EX, the only one with kwargs).
//!
//! Decoding accepts any MessagePack int or float width, rejects unknown ext types,
//! unhashable dict keys, trailing bytes, and nesting deeper than [`MAX_DEPTH`] levels
//! (arrays, maps and ext types together, counted across the nested payloads of ext
//! types). Hostile input cannot overflow the stack: [`Value::from_msgpack`] and every
//! ext payload go through the non-recursive decoder in `codec`; where serde drives
//! the recursion (a `Value` inside another type decoded with rmp-serde), each level
//! also checks that decoding has used less than 1 MiB of stack, and refuses to go
//! deeper otherwise (in release builds that is well past [`MAX_DEPTH`] levels).
//!
//! The `Serialize`/`Deserialize` impls work with any serde format: a self-describing
//! human-readable one (JSON) gets tuples and sets as arrays, a big int as a decimal
//! string and an object as its payload array; a binary one gets the ext types above.
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde::Deserialize;

use super::codec;
use super::serde_conv::bridge;
use super::{BigInt, Build, Dict, Object, Value};
use crate::{ErrorCode, WireError};

/// The deepest nesting of containers a decoder accepts (MessagePack here; the same
/// cap is meant for every decoder of `Value`).
pub const MAX_DEPTH: usize = 1024;
/// MessagePack ext type of a tuple.
pub const TAG_TUPLE: i8 = 1;
/// MessagePack ext type of a set.
pub const TAG_SET: i8 = 2;
/// MessagePack ext type of a frozenset.
pub const TAG_FROZENSET: i8 = 3;
/// MessagePack ext type of an int outside `i64`.
pub const TAG_BIGINT: i8 = 4;
/// MessagePack ext type of an opaque object.
pub const TAG_OBJECT: i8 = 5;

/// Preallocate at most this many items from an untrusted length.
const MAX_PREALLOC: usize = 4096;

/// Stack that decoding through serde (a `Value` inside another type) may use before
/// it refuses to nest further, whatever the level count: serde recursion costs a few
/// KiB per level (more in debug builds), and tokio's worker threads have 2 MiB.
const STACK_BUDGET: usize = 1 << 20;

/// Encodes a value (see [`Value::to_msgpack`]).
pub(super) fn encode(value: &Value) -> Vec<u8> {
    codec::encode(value)
}

/// Appends the encoding of `value` to `out` (what [`Value::to_msgpack`] returns). For
/// hand-written message encoders (`native::fast`).
pub(crate) fn encode_into(value: &Value, out: &mut Vec<u8>) {
    codec::encode_into(value, out)
}

/// Decodes the value at the start of `bytes` (more may follow); returns it and its
/// length in bytes. For hand-written message decoders (`native::fast`).
pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), String> {
    codec::decode_prefix(bytes, levels_left())
}

/// Decodes a value (see [`Value::from_msgpack`]).
pub(super) fn decode(bytes: &[u8]) -> Result<Value, WireError> {
    codec::decode(bytes, levels_left())
        .map_err(|msg| WireError::new(ErrorCode::Protocol, format!("malformed MessagePack value: {msg}")))
}

// ---------------------------------------------------------------- serialize

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The named newtype is transparent to other serializers; `to_value` uses it to
        // take the value whole (see `serde_conv::bridge`).
        serializer.serialize_newtype_struct(bridge::VALUE_TOKEN, &Plain(self))
    }
}

/// A value serialized by its contents.
struct Plain<'a>(&'a Value);

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if bridge::take_capture_request() {
            bridge::put(self.0.clone());
            return s.serialize_unit();
        }
        match self.0 {
            Value::None => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(x) => s.serialize_str(x),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(items) => serialize_seq(s, items.len(), items),
            Value::Dict(d) => {
                let mut map = s.serialize_map(Some(d.len()))?;
                for (k, v) in d.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            other if s.is_human_readable() => serialize_readable(other, s),
            other => serialize_ext(other, s),
        }
    }
}

fn serialize_seq<'a, S: Serializer>(
    s: S,
    len: usize,
    items: impl IntoIterator<Item = &'a Value>,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(len))?;
    for item in items {
        seq.serialize_element(item)?;
    }
    seq.end()
}

/// Tuple, set, frozenset, big int and object as a MessagePack ext.
fn serialize_ext<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
    let Some((tag, payload)) = codec::ext_payload(value) else {
        return Err(ser::Error::custom(format!("{} has no ext type", value.type_name())));
    };
    let ext = (tag, serde_bytes::Bytes::new(&payload));
    s.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &ext)
}

/// Tuple, set, frozenset, big int and object for a human-readable format.
fn serialize_readable<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Value::Tuple(items) => serialize_seq(s, items.len(), items),
        Value::Set(set) | Value::FrozenSet(set) => serialize_seq(s, set.len(), set.iter()),
        Value::BigInt(b) => s.collect_str(b),
        Value::Object(obj) => ObjectRef::new(obj).serialize(s),
        other => Plain(other).serialize(s),
    }
}

/// An object's fields in the order of its ext payload (for human-readable formats).
#[derive(serde::Serialize)]
struct ObjectRef<'a>(
    &'a str,
    &'a str,
    u8,
    &'a [Value],
    &'a [(Value, Value)],
    &'a [Value],
    &'a [Value],
    &'a [(Value, Value)],
);

impl<'a> ObjectRef<'a> {
    fn new(o: &'a Object) -> Self {
        let (kind, args, kwargs): (u8, &[Value], &[(Value, Value)]) = match &o.build {
            Build::Global => (0, &[], &[]),
            Build::Reduce(args) => (1, args, &[]),
            Build::NewObj(args) => (2, args, &[]),
            Build::NewObjEx(args, kwargs) => (3, args, kwargs),
        };
        let state = o.state.as_slice();
        ObjectRef(&o.module, &o.qualname, kind, args, kwargs, state, &o.list_items, &o.dict_items)
    }
}

// ---------------------------------------------------------------- deserialize

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        // An option is any-like in self-describing formats, and lets `from_value`
        // hand the value over whole (see `serde_conv::bridge`).
        deserializer.deserialize_option(ValueVisitor { entry: true })
    }
}

thread_local! {
    /// Containers being decoded through serde on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Roughly where the stack was when the outermost of them began.
    static STACK_BASE: Cell<usize> = const { Cell::new(0) };
}

/// How many more levels may be decoded here.
fn levels_left() -> usize {
    MAX_DEPTH.saturating_sub(DEPTH.with(Cell::get))
}

/// The address of a local: where the stack is now.
#[inline(never)]
fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// One level of nesting decoded through serde, released on drop. Refuses more than
/// [`MAX_DEPTH`] levels, and more than [`STACK_BUDGET`] of stack.
struct DepthGuard;

impl DepthGuard {
    fn enter() -> Result<DepthGuard, String> {
        let level = DEPTH.with(Cell::get) + 1;
        if level > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        let here = stack_position();
        if level == 1 {
            STACK_BASE.with(|base| base.set(here));
        } else if STACK_BASE.with(Cell::get).abs_diff(here) > STACK_BUDGET {
            return Err(format!("nesting too deep ({level} levels use too much stack)"));
        }
        DEPTH.with(|depth| depth.set(level));
        Ok(DepthGuard)
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// Builds a [`Value`] from whatever the format holds. `entry` is true at the start of
/// `Value::deserialize` (where the format was asked for an option).
struct ValueVisitor {
    entry: bool,
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from_bigint(BigInt::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::from_bigint(BigInt::from(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::from_bigint(BigInt::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.into()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if !self.entry {
            return Value::deserialize(d);
        }
        match bridge::take() {
            Some(value) => Ok(value),
            None => d.deserialize_any(ValueVisitor { entry: false }),
        }
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        // rmp-serde delivers ext types this way.
        d.deserialize_any(ExtVisitor)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let _level = DepthGuard::enter().map_err(de::Error::custom)?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let _level = DepthGuard::enter().map_err(de::Error::custom)?;
        let mut dict = Dict::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some((key, value)) = map.next_entry::<Value, Value>()? {
            dict.insert(key, value).map_err(|e| de::Error::custom(e.message))?;
        }
        Ok(Value::Dict(dict))
    }
}

/// Reads a MessagePack ext: a sequence of the type tag and the data.
struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack ext (type, data)")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let tag: i8 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let value = seq.next_element_seed(Payload(tag))?;
        value.ok_or_else(|| de::Error::invalid_length(1, &self))
    }
}

/// The data of an ext type whose tag is known.
struct Payload(i8);

impl<'de> DeserializeSeed<'de> for Payload {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for Payload {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the bytes of a MessagePack ext")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        decode_ext(self.0, v).map_err(E::custom)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        self.visit_bytes(&bytes)
    }
}

/// Decodes the data of ext type `tag` (without recursion, see `codec`).
fn decode_ext(tag: i8, data: &[u8]) -> Result<Value, String> {
    codec::decode_ext(tag, data, levels_left())
}

#[cfg(test)]
mod tests {
    use super::super::Set;
    use super::*;
    use proptest::prelude::*;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// Strict structural equality (Debug shows variant and exact float).
    fn same(a: &Value, b: &Value) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    fn round_trip(v: &Value) -> Value {
        Value::from_msgpack(&v.to_msgpack()).unwrap()
    }

    fn object() -> Object {
        Object {
            module: "collections".into(),
            qualname: "OrderedDict".into(),
            build: Build::Reduce(vec![Value::Tuple(vec![])]),
            state: Some(Value::None),
            list_items: vec![Value::Int(1)],
            dict_items: vec![(s("a"), Value::Tuple(vec![Value::Int(1)]))],
        }
    }

    fn every_variant() -> Vec<Value> {
        let set = Set::from_values([Value::Int(1), s("x"), Value::Tuple(vec![Value::None])]).unwrap();
        let mut d = Dict::new();
        d.insert(Value::Tuple(vec![Value::Int(1), Value::Int(2)]), s("tuple key")).unwrap();
        d.insert(Value::Int(3), Value::FrozenSet(set.clone())).unwrap();
        d.insert(Value::from_bigint(BigInt::from(1u8) << 100u32), Value::Bool(true)).unwrap();
        let builds = [
            Build::Global,
            Build::NewObj(vec![Value::Int(1)]),
            Build::NewObjEx(vec![], vec![(s("k"), Value::Float(2.5))]),
        ];
        let mut out = vec![
            Value::None,
            Value::Bool(false),
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::from_bigint(BigInt::from(u64::MAX)),
            Value::from_bigint(-(BigInt::from(1u8) << 64u32) - 1),
            Value::Float(-0.0),
            Value::Float(f64::INFINITY),
            Value::Float(1e300),
            s(""),
            s("héllo"),
            Value::Bytes(vec![0, 1, 255]),
            Value::List(vec![]),
            Value::Tuple(vec![]),
            Value::Tuple(vec![Value::Tuple(vec![Value::Tuple(vec![Value::Int(1)])])]),
            Value::Set(Set::new()),
            Value::Set(set.clone()),
            Value::FrozenSet(set),
            Value::Dict(Dict::new()),
            Value::Dict(d),
            Value::Object(Box::new(object())),
        ];
        for build in builds {
            out.push(Value::Object(Box::new(Object { build, state: None, ..object() })));
        }
        out.push(Value::List(out.clone()));
        out
    }

    #[test]
    fn every_variant_round_trips() {
        for v in every_variant() {
            assert!(same(&round_trip(&v), &v), "{v:?}");
        }
    }

    #[test]
    fn plain_values_use_plain_messagepack() {
        assert_eq!(Value::None.to_msgpack(), [0xc0]);
        assert_eq!(Value::Int(1).to_msgpack(), [0x01]);
        assert_eq!(Value::Int(-1).to_msgpack(), [0xff]);
        assert_eq!(s("a").to_msgpack(), [0xa1, b'a']);
        assert_eq!(Value::Bytes(vec![7]).to_msgpack(), [0xc4, 1, 7]);
        assert_eq!(Value::List(vec![Value::Bool(true)]).to_msgpack(), [0x91, 0xc3]);
        let mut d = Dict::new();
        d.insert(s("k"), Value::Float(0.5)).unwrap();
        let mut want = vec![0x81, 0xa1, b'k', 0xcb];
        want.extend(0.5f64.to_be_bytes());
        assert_eq!(Value::Dict(d).to_msgpack(), want);
        // A plain msgpack u64 above i64::MAX decodes as a big int.
        let mut big = vec![0xcf];
        big.extend(u64::MAX.to_be_bytes());
        assert_eq!(Value::from_msgpack(&big).unwrap().py_repr(), "18446744073709551615");
        // float 32 is accepted
        let mut f32_bytes = vec![0xca];
        f32_bytes.extend(1.5f32.to_be_bytes());
        assert!(same(&Value::from_msgpack(&f32_bytes).unwrap(), &Value::Float(1.5)));
    }

    #[test]
    fn ext_types_follow_the_table() {
        // (1, 2): fixext... tag 1, payload = [0x92, 1, 2]
        let bytes = Value::Tuple(vec![Value::Int(1), Value::Int(2)]).to_msgpack();
        assert_eq!(bytes, [0xc7, 3, TAG_TUPLE as u8, 0x92, 1, 2]);
        let bytes = Value::from_bigint(BigInt::from(1u8) << 64u32).to_msgpack();
        assert_eq!(bytes, [0xc7, 9, TAG_BIGINT as u8, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let one = Set::from_values([Value::Int(1)]).unwrap();
        assert_eq!(Value::Set(one.clone()).to_msgpack(), [0xd5, TAG_SET as u8, 0x91, 1]);
        assert_eq!(Value::FrozenSet(one).to_msgpack(), [0xd5, TAG_FROZENSET as u8, 0x91, 1]);
    }

    fn protocol_error(bytes: &[u8]) -> String {
        let err = Value::from_msgpack(bytes).unwrap_err();
        assert_eq!(err.code, ErrorCode::Protocol);
        err.message
    }

    #[test]
    fn malformed_input_is_an_error() {
        protocol_error(&[]);
        protocol_error(&[0x92, 0x01]); // array of 2 with one element
        protocol_error(&[0xa3, b'a']); // truncated str
        protocol_error(&[0xa1, 0xff]); // invalid utf-8
        protocol_error(&[0xc1]); // reserved marker
        protocol_error(&[0xdb, 0xff, 0xff, 0xff, 0xff]); // huge str, no data
        protocol_error(&[0xdd, 0xff, 0xff, 0xff, 0xff]); // huge array, no data
        let msg = protocol_error(&[0x01, 0x02]);
        assert!(msg.contains("trailing"), "{msg}");
        let msg = protocol_error(&[0xd4, 9, 0]); // ext type 9
        assert!(msg.contains("unknown MessagePack ext type 9"), "{msg}");
        let msg = protocol_error(&[0xd4, TAG_TUPLE as u8, 0x01]); // tuple payload not an array
        assert!(!msg.is_empty());
        protocol_error(&[0xd5, TAG_TUPLE as u8, 0x90, 0x90]); // payload with trailing bytes
        let msg = protocol_error(&[0x81, 0x90, 0x01]); // {[]: 1}
        assert!(msg.contains("unhashable type: 'list'"), "{msg}");
        let msg = protocol_error(&[0xd5, TAG_SET as u8, 0x91, 0x90]); // {[]}
        assert!(msg.contains("unhashable type: 'list'"), "{msg}");
    }

    #[test]
    fn deep_arrays_are_rejected_without_overflow() {
        let bytes = vec![0x91; 100_000];
        let msg = protocol_error(&bytes);
        assert!(msg.contains("nesting deeper than 1024 levels"), "{msg}");
        let maps = [0x81, 0x01].repeat(50_000);
        protocol_error(&maps);
    }

    /// `levels` tuples nested in each other, each an ext32 around a one-item array.
    fn nested_tuples(levels: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(levels * 7 + 1);
        for level in 0..levels {
            let inner_len = (levels - level - 1) * 7 + 1; // bytes of the level below
            out.push(0xc9);
            out.extend(((inner_len + 1) as u32).to_be_bytes());
            out.push(TAG_TUPLE as u8);
            out.push(0x91);
        }
        out.push(0xc0);
        out
    }

    #[test]
    fn deep_ext_nesting_is_rejected_without_overflow() {
        let ok = Value::from_msgpack(&nested_tuples(100)).unwrap();
        assert_eq!(ok.py_repr().matches('(').count(), 100);
        let msg = protocol_error(&nested_tuples(100_000));
        assert!(msg.contains("nesting deeper than 1024 levels"), "{msg}");
        // The depth counter is released after an error.
        assert!(Value::from_msgpack(&nested_tuples(100)).is_ok());
    }

    #[test]
    fn values_at_the_depth_cap_decode_on_a_small_stack() {
        // Tokio's worker threads have 2 MiB of stack; stay well within it.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deep = nested_tuples(MAX_DEPTH - 1);
                let v = Value::from_msgpack(&deep).unwrap();
                let again = Value::from_msgpack(&v.to_msgpack()).unwrap();
                assert!(v.py_eq(&again));
                let _ = v.py_repr();
                let _ = super::super::hash_value(&v).unwrap();
                let lists = [vec![0x91; MAX_DEPTH - 2], vec![0xc0]].concat();
                assert!(Value::from_msgpack(&lists).is_ok());
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn survives_serde_buffering() {
        // An untagged enum buffers the input before picking a variant.
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Val(Value),
        }
        let v = Value::Tuple(vec![Value::Int(1)]);
        let bytes = v.to_msgpack();
        let Either::Val(back) = rmp_serde::from_slice::<Either>(&bytes).unwrap();
        assert!(same(&back, &v), "{back:?}");
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (any::<i64>(), 1u32..200).prop_map(|(i, s)| Value::from_bigint(BigInt::from(i) << s)),
            any::<f64>().prop_filter("no NaN", |f| !f.is_nan()).prop_map(Value::Float),
            ".{0,8}".prop_map(|s: String| Value::Str(s.into())),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        ]
    }

    fn hashable() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Tuple),
                proptest::collection::vec(inner, 0..3).prop_map(|v| Value::FrozenSet(Set::from_values(v).unwrap())),
            ]
        })
    }

    fn any_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Tuple),
                proptest::collection::vec((hashable(), inner.clone()), 0..5)
                    .prop_map(|pairs| Value::Dict(Dict::from_pairs(pairs).unwrap())),
                proptest::collection::vec(hashable(), 0..5).prop_map(|v| Value::Set(Set::from_values(v).unwrap())),
                (proptest::collection::vec(inner.clone(), 0..3), proptest::option::of(inner)).prop_map(
                    |(args, state)| Value::Object(Box::new(Object {
                        module: "m".into(),
                        qualname: "Q".into(),
                        build: Build::NewObj(args),
                        state,
                        list_items: vec![],
                        dict_items: vec![],
                    }))
                ),
            ]
        })
    }

    #[test]
    fn values_embedded_in_messages() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Request {
            id: u32,
            args: Vec<Value>,
            kwargs: Option<Value>,
        }
        let req = Request { id: 7, args: every_variant(), kwargs: Some(Value::Tuple(vec![])) };
        let bytes = rmp_serde::to_vec(&req).unwrap();
        let back: Request = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.id, 7);
        assert!(back.args.iter().zip(&req.args).all(|(a, b)| same(a, b)));
        assert!(same(back.kwargs.as_ref().unwrap(), &Value::Tuple(vec![])));
    }

    #[test]
    fn deep_arrays_through_serde_are_refused_not_overflowed() {
        // rmp-serde recursion: our guard refuses before the stack runs out.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let bytes = [vec![0x91; 100_000], vec![0xc0]].concat();
                assert!(rmp_serde::from_slice::<Value>(&bytes).is_err());
                let deep = nested_tuples(100_000);
                assert!(rmp_serde::from_slice::<Value>(&deep).is_err());
                let ok = nested_tuples(MAX_DEPTH - 1);
                assert!(rmp_serde::from_slice::<Value>(&ok).is_ok());
            })
            .unwrap();
        handle.join().unwrap();
    }

    proptest! {
        #[test]
        fn rmp_serde_agrees_with_the_codec(v in any_value()) {
            let ours = v.to_msgpack();
            prop_assert_eq!(&rmp_serde::to_vec(&v).unwrap(), &ours);
            let theirs: Value = rmp_serde::from_slice(&ours).unwrap();
            prop_assert!(same(&theirs, &v));
        }

        #[test]
        fn msgpack_round_trip(v in any_value()) {
            let back = round_trip(&v);
            prop_assert!(same(&back, &v), "{:?} != {:?}", back, v);
            prop_assert!(back.py_eq(&v));
        }

        #[test]
        fn serde_round_trip(v in any_value()) {
            let back: Value = super::super::from_value(super::super::to_value(&v).unwrap()).unwrap();
            prop_assert!(same(&back, &v));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Value::from_msgpack(&bytes);
        }
    }
}
