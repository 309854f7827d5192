//! Conversion between [`Value`] and any serde type: [`to_value`] (a
//! `serde::Serializer` producing a `Value`, see `ser`) and [`from_value`] (a
//! `serde::Deserializer` over an owned `Value`, see `de`).
//!
//! The serde data model maps onto Python values as serde_json maps onto JSON:
//!
//! | serde | `Value` |
//! |---|---|
//! | bool, integers, floats | `Bool`, `Int` (`BigInt` beyond `i64`), `Float` |
//! | char, str / bytes | `Str` / `Bytes` |
//! | unit, unit struct, `None` | `None` (`Some(x)` is `x`) |
//! | unit variant | `Str(variant)` |
//! | newtype struct | the inner value |
//! | newtype / tuple / struct variant | `Dict {variant: value / Tuple / Dict}` |
//! | seq | `List` |
//! | tuple, tuple struct | `Tuple` |
//! | map / struct | `Dict` (struct: str keys) |
//!
//! Reading back is lenient the way Python is: an int (or bool) fits any integer type
//! in range ("integer 300 out of range for u8" otherwise), ints read as floats, list,
//! tuple, set and frozenset read as sequences, bytes read as byte buffers or as a
//! sequence of `u8`, a one-entry dict or a str reads as an enum. Mismatches are a
//! `TypeError` naming what was expected and what was found.
//!
//! Like rmp-serde, both sides say they are *not* human readable, so a type that
//! serializes differently for humans (an IP address, a UUID) gives the same `Value`
//! whether it goes through `to_value` or straight through the native MessagePack.
//!
//! A [`Value`] nested in a serde type goes through unchanged (tuples stay tuples, big
//! ints and objects are kept): `from_value::<Value>(v)` returns `v` itself, and
//! `to_value(&v)` returns a clone. The two sides recognise each other through a
//! thread-local hand-off, set and taken within one call (see [`bridge`]).
use std::fmt;

use serde::{de, ser};

use super::Value;
use crate::{ErrorCode, WireError};

/// Converts any serializable Rust value into a [`Value`].
pub fn to_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<Value, WireError> {
    value.serialize(super::ser::ValueSerializer).map_err(|e| e.0)
}

/// Appends the MessagePack encoding of `value` to `out`: the bytes
/// `to_value(value)?.write_msgpack(out)` appends. A scalar (the usual key or item of a
/// call) is written directly, without building the [`Value`]; anything else goes
/// through [`to_value`]. On an error nothing is appended.
pub fn write_msgpack_of<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    if value.serialize(super::ser::ScalarWriter(out)).is_ok() {
        return Ok(());
    }
    out.truncate(start); // a serialization that wrote and then failed (never a plain scalar)
    to_value(value)?.write_msgpack(out);
    Ok(())
}

/// Converts a [`Value`] into any deserializable Rust type (`TypeError` on mismatch).
pub fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, WireError> {
    T::deserialize(super::de::ValueDeserializer::new(value)).map_err(|e| e.0)
}

/// The error type of the `Value` serializer and deserializer: a [`WireError`] that
/// implements serde's error traits (kept private so that `WireError` itself does not
/// have to).
#[derive(Debug)]
pub(super) struct ConvError(pub(super) WireError);

impl ConvError {
    pub(super) fn type_error(message: impl Into<String>) -> ConvError {
        ConvError(WireError::type_error(message))
    }
    /// "expected u64, found str 'abc'".
    pub(super) fn mismatch(expected: &dyn fmt::Display, found: &Value) -> ConvError {
        Self::type_error(format!("expected {expected}, found {}", describe(found)))
    }
    /// "integer 300 out of range for u8".
    pub(super) fn out_of_range(found: &dyn fmt::Display, target: &dyn fmt::Display) -> ConvError {
        ConvError(WireError::overflow_error(format!("integer {found} out of range for {target}")))
    }
}

impl fmt::Display for ConvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ConvError {}

impl ser::Error for ConvError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::type_error(msg.to_string())
    }
}

impl de::Error for ConvError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::type_error(msg.to_string())
    }
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::type_error(format!("expected {exp}, found {}", describe_unexpected(&unexp)))
    }
    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        match unexp {
            de::Unexpected::Signed(n) => Self::out_of_range(&n, &exp.to_string()),
            de::Unexpected::Unsigned(n) => Self::out_of_range(&n, &exp.to_string()),
            other => ConvError(WireError::new(
                ErrorCode::ValueError,
                format!("invalid value {}, expected {exp}", describe_unexpected(&other)),
            )),
        }
    }
    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Self::type_error(format!("expected {exp}, found {len} elements"))
    }
}

/// Longest str or bytes quoted in an error message.
const MAX_QUOTED: usize = 60;

/// What was found, for an error message: "str 'abc'", "int 5", "list of 3 items",
/// "None" (long text shortened, containers only counted).
pub(super) fn describe(value: &Value) -> String {
    let count = |n: usize| format!("{} of {n} item{}", value.type_name(), if n == 1 { "" } else { "s" });
    match value {
        Value::None => "None".into(),
        Value::Str(s) if s.chars().count() > MAX_QUOTED => {
            format!("str {}...", Value::Str(s.chars().take(MAX_QUOTED).collect()).py_repr())
        }
        Value::Bytes(b) if b.len() > MAX_QUOTED => {
            format!("bytes {}...", Value::Bytes(b[..MAX_QUOTED].to_vec()).py_repr())
        }
        Value::List(items) | Value::Tuple(items) => count(items.len()),
        Value::Dict(d) => count(d.len()),
        Value::Set(s) | Value::FrozenSet(s) => count(s.len()),
        Value::Object(o) => format!("object {}.{}", o.module, o.qualname),
        scalar => format!("{} {}", scalar.type_name(), scalar.py_repr()),
    }
}

/// serde's description of what it found, in Python's words.
fn describe_unexpected(unexp: &de::Unexpected<'_>) -> String {
    use de::Unexpected as U;
    match *unexp {
        U::Bool(b) => describe(&Value::Bool(b)),
        U::Unsigned(n) => format!("int {n}"),
        U::Signed(n) => format!("int {n}"),
        U::Float(f) => describe(&Value::Float(f)),
        U::Char(c) => describe(&Value::Str(c.to_string().into())),
        U::Str(s) => describe(&Value::Str(s.into())),
        U::Bytes(b) => describe(&Value::Bytes(b.into())),
        U::Unit => "None".into(),
        U::Seq => "list".into(),
        U::Map => "dict".into(),
        ref other => other.to_string(),
    }
}

/// The hand-off that lets a [`Value`] cross [`to_value`] and [`from_value`] whole.
///
/// serde offers no way to pass a `Value` through a generic serializer or visitor, so
/// the two sides meet through a thread-local slot, always filled and emptied within a
/// single call:
///
/// - serializing: `Value::serialize` wraps itself in a newtype struct named
///   [`VALUE_TOKEN`](bridge::VALUE_TOKEN) (transparent to every other serializer). The
///   `Value` serializer sees the name, raises the capture flag and serializes the
///   wrapper, which finds the flag, lowers it and leaves a clone of the value in the
///   slot.
/// - deserializing: `Value::deserialize` asks for an *option* (any-like in every
///   self-describing format). The `Value` deserializer answers a non-`None` value by
///   putting it in the slot and calling `visit_some` with a deserializer that reads
///   from the slot; `Value`'s visitor takes it from there directly.
pub(super) mod bridge {
    use std::cell::Cell;

    use super::Value;

    /// The newtype-struct name under which a `Value` serializes itself.
    pub(in crate::value) const VALUE_TOKEN: &str = "$agora::Value";

    thread_local! {
        static CAPTURE: Cell<bool> = const { Cell::new(false) };
        static SLOT: Cell<Option<Value>> = const { Cell::new(None) };
    }

    /// Serializer side: the next `Value` serialized should be handed over whole.
    pub(in crate::value) fn request_capture(on: bool) {
        CAPTURE.with(|c| c.set(on));
    }

    /// Value side: was a capture requested? (Clears the request.)
    pub(in crate::value) fn take_capture_request() -> bool {
        CAPTURE.with(|c| c.replace(false))
    }

    /// Leaves a value in the slot.
    pub(in crate::value) fn put(value: Value) {
        SLOT.with(|s| s.set(Some(value)));
    }

    /// Takes the value from the slot, if any.
    pub(in crate::value) fn take() -> Option<Value> {
        SLOT.with(Cell::take)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    use super::super::{BigInt, Build, Dict, Object, Set};
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: f64,
        name: String,
        tags: Vec<String>,
        maybe: Option<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Pair(i8, i8),
        Rect { w: u16, h: u16 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Meters(f32);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair(u8, String);

    fn round_trip<T>(x: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        from_value(to_value(x).unwrap()).unwrap()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn structs_become_dicts_and_back() {
        let p = Point { x: -3, y: 2.5, name: "p".into(), tags: vec!["a".into()], maybe: Some(7) };
        let v = to_value(&p).unwrap();
        assert_eq!(v.py_repr(), "{'x': -3, 'y': 2.5, 'name': 'p', 'tags': ['a'], 'maybe': 7}");
        assert_eq!(round_trip(&p), p);
        let q = Point { maybe: None, ..p };
        assert_eq!(round_trip(&q), q);
    }

    #[test]
    fn enums_follow_the_external_tagging() {
        assert_eq!(to_value(&Shape::Empty).unwrap().py_repr(), "'Empty'");
        assert_eq!(to_value(&Shape::Circle(1.5)).unwrap().py_repr(), "{'Circle': 1.5}");
        assert_eq!(to_value(&Shape::Pair(1, 2)).unwrap().py_repr(), "{'Pair': (1, 2)}");
        assert_eq!(to_value(&Shape::Rect { w: 1, h: 2 }).unwrap().py_repr(), "{'Rect': {'w': 1, 'h': 2}}");
        for shape in [Shape::Empty, Shape::Circle(1.5), Shape::Pair(-1, 2), Shape::Rect { w: 3, h: 4 }] {
            assert_eq!(round_trip(&shape), shape);
        }
        let mut d = Dict::new();
        d.insert(s("Empty"), Value::None).unwrap();
        assert_eq!(from_value::<Shape>(Value::Dict(d)).unwrap(), Shape::Empty);
        let err = from_value::<Shape>(s("Hexagon")).unwrap_err();
        assert!(err.message.contains("unknown variant"), "{}", err.message);
    }

    #[test]
    fn unit_newtype_and_tuple_structs() {
        assert!(matches!(to_value(&Unit).unwrap(), Value::None));
        assert_eq!(round_trip(&Unit), Unit);
        assert!(matches!(to_value(&Meters(2.0)).unwrap(), Value::Float(f) if f == 2.0));
        assert_eq!(round_trip(&Meters(2.5)), Meters(2.5));
        assert_eq!(to_value(&Pair(1, "a".into())).unwrap().py_repr(), "(1, 'a')");
        assert_eq!(round_trip(&Pair(1, "a".into())), Pair(1, "a".into()));
        assert_eq!(to_value(&(1, "a", true)).unwrap().py_repr(), "(1, 'a', True)");
        assert_eq!(round_trip(&(1u8, 'c', ())), (1u8, 'c', ()));
    }

    #[test]
    fn maps_with_any_hashable_key() {
        let mut m = BTreeMap::new();
        m.insert((1, 2), "a".to_string());
        m.insert((3, 4), "b".to_string());
        assert_eq!(to_value(&m).unwrap().py_repr(), "{(1, 2): 'a', (3, 4): 'b'}");
        assert_eq!(round_trip(&m), m);
        let mut h = HashMap::new();
        h.insert(5u64, vec![1.5]);
        assert_eq!(round_trip(&h), h);
        let mut bad = BTreeMap::new();
        bad.insert(vec![1], 1);
        let err = to_value(&bad).unwrap_err();
        assert_eq!(err.message, "unhashable type: 'list'");
    }

    #[test]
    fn integers_of_every_width() {
        assert_eq!(to_value(&u64::MAX).unwrap().py_repr(), "18446744073709551615");
        assert_eq!(round_trip(&u64::MAX), u64::MAX);
        assert_eq!(round_trip(&i128::MIN), i128::MIN);
        assert_eq!(round_trip(&u128::MAX), u128::MAX);
        assert!(matches!(to_value(&5i128).unwrap(), Value::Int(5)));
        assert_eq!(from_value::<u8>(Value::Bool(true)).unwrap(), 1);
        let err = from_value::<u8>(Value::Int(300)).unwrap_err();
        assert_eq!(err.code, ErrorCode::OverflowError);
        assert_eq!(err.message, "integer 300 out of range for u8");
        let err = from_value::<i64>(to_value(&u64::MAX).unwrap()).unwrap_err();
        assert_eq!(err.message, "integer 18446744073709551615 out of range for i64");
        let err = from_value::<u64>(s("abc")).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        assert_eq!(err.message, "expected u64, found str 'abc'");
        assert_eq!(from_value::<f64>(Value::Int(3)).unwrap(), 3.0);
        assert_eq!(from_value::<f32>(Value::Float(0.5)).unwrap(), 0.5);
        let err = from_value::<i32>(Value::Float(1.5)).unwrap_err();
        assert_eq!(err.message, "expected i32, found float 1.5");
    }

    #[test]
    fn bytes_and_strings() {
        let b = serde_bytes::ByteBuf::from(vec![0u8, 255]);
        let v = to_value(&b).unwrap();
        assert_eq!(v.py_repr(), "b'\\x00\\xff'");
        assert_eq!(round_trip(&b), b);
        assert_eq!(from_value::<Vec<u8>>(v).unwrap(), vec![0, 255]);
        assert_eq!(round_trip(&'é'), 'é');
        let err = from_value::<char>(s("ab")).unwrap_err();
        assert_eq!(err.message, "expected char, found str 'ab'");
        assert_eq!(round_trip(&"text".to_string()), "text");
    }

    #[test]
    fn sequences_from_any_python_sequence() {
        let t = Value::Tuple(vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(from_value::<Vec<i32>>(t.clone()).unwrap(), vec![1, 2]);
        assert_eq!(from_value::<(i32, i32)>(t).unwrap(), (1, 2));
        let set = Value::FrozenSet(Set::from_values([Value::Int(4)]).unwrap());
        assert_eq!(from_value::<Vec<i32>>(set).unwrap(), vec![4]);
        let err = from_value::<(i32, i32)>(Value::List(vec![Value::Int(1)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        let err = from_value::<(i32,)>(Value::List(vec![Value::Int(1), Value::Int(2)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        let err = from_value::<Vec<i32>>(Value::Int(1)).unwrap_err();
        assert_eq!(err.message, "expected a sequence, found int 1");
        let err = from_value::<String>(Value::List(vec![Value::Int(1)])).unwrap_err();
        assert_eq!(err.message, "expected str, found list of 1 item");
        let err = from_value::<bool>(s(&"x".repeat(100))).unwrap_err();
        assert_eq!(err.message, format!("expected bool, found str '{}'...", "x".repeat(60)));
    }

    #[test]
    fn options_and_units() {
        assert!(matches!(to_value(&None::<i32>).unwrap(), Value::None));
        assert!(matches!(to_value(&Some(3)).unwrap(), Value::Int(3)));
        assert_eq!(from_value::<Option<i32>>(Value::None).unwrap(), None);
        assert_eq!(from_value::<Option<i32>>(Value::Int(3)).unwrap(), Some(3));
        assert_eq!(from_value::<Option<Vec<String>>>(Value::List(vec![s("a")])).unwrap(), Some(vec!["a".into()]));
        from_value::<()>(Value::None).unwrap();
        let err = from_value::<()>(Value::Int(1)).unwrap_err();
        assert_eq!(err.message, "expected unit, found int 1");
    }

    fn exotic() -> Value {
        let obj = Object {
            module: "m".into(),
            qualname: "C".into(),
            build: Build::NewObjEx(vec![Value::Int(1)], vec![(s("k"), Value::None)]),
            state: Some(Value::Tuple(vec![])),
            list_items: vec![Value::Int(2)],
            dict_items: vec![(s("a"), Value::Float(1.0))],
        };
        let mut d = Dict::new();
        d.insert(Value::Tuple(vec![Value::Int(1)]), Value::FrozenSet(Set::from_values([s("x")]).unwrap())).unwrap();
        d.insert(s("big"), Value::from_bigint(BigInt::from(-7i8) << 100u32)).unwrap();
        d.insert(s("obj"), Value::Object(Box::new(obj))).unwrap();
        d.insert(s("set"), Value::Set(Set::from_values([Value::Int(1)]).unwrap())).unwrap();
        Value::List(vec![Value::Dict(d), Value::Tuple(vec![Value::Float(f64::INFINITY)])])
    }

    fn same(a: &Value, b: &Value) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn values_cross_whole() {
        let v = exotic();
        let back: Value = from_value(v.clone()).unwrap();
        assert!(same(&back, &v));
        let again = to_value(&v).unwrap();
        assert!(same(&again, &v));
        #[derive(Serialize, Deserialize)]
        struct Holder {
            inner: Value,
            many: Vec<Value>,
            maybe: Option<Value>,
        }
        let h = Holder { inner: v.clone(), many: vec![v.clone()], maybe: Some(v.clone()) };
        let hv = to_value(&h).unwrap();
        let back: Holder = from_value(hv).unwrap();
        assert!(same(&back.inner, &v) && same(&back.many[0], &v));
        assert!(same(back.maybe.as_ref().unwrap(), &v));
    }

    #[test]
    fn bridge_is_left_empty() {
        let _ = from_value::<Value>(exotic()).unwrap();
        let _ = from_value::<Option<i32>>(Value::Int(1)).unwrap();
        let _ = from_value::<Option<u8>>(Value::Int(1000));
        let _ = to_value(&exotic()).unwrap();
        assert!(bridge::take().is_none());
        assert!(!bridge::take_capture_request());
    }

    /// `write_msgpack_of` appends exactly the bytes of `to_value` + `write_msgpack`,
    /// after whatever `out` held.
    fn writes_as_its_value_does<T: Serialize + ?Sized>(x: &T) {
        let mut expected = vec![0xee];
        to_value(x).unwrap().write_msgpack(&mut expected);
        let mut direct = vec![0xee];
        write_msgpack_of(x, &mut direct).unwrap();
        assert_eq!(direct, expected, "{}", to_value(x).unwrap().py_repr());
    }

    #[test]
    fn scalars_are_written_as_their_values_are() {
        for i in [0i64, 1, -1, -32, -33, 127, 128, 255, 256, 65535, 65536, -129, -32769, i64::MIN, i64::MAX] {
            writes_as_its_value_does(&i);
            writes_as_its_value_does(&(i as i32));
            writes_as_its_value_does(&(i as i16));
            writes_as_its_value_does(&(i as i8));
            writes_as_its_value_does(&(i as u8));
            writes_as_its_value_does(&(i as u16));
            writes_as_its_value_does(&(i as u32));
            writes_as_its_value_does(&(i as u64)); // beyond i64: a big int, the long way
            writes_as_its_value_does(&(i as i128));
            writes_as_its_value_does(&(i as u128));
        }
        writes_as_its_value_does(&(u64::MAX as i128 + 1));
        writes_as_its_value_does(&u128::MAX);
        for f in [0.0, -0.0, 1.5, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE] {
            writes_as_its_value_does(&f);
            writes_as_its_value_does(&(f as f32));
        }
        for text in ["", "a", "é", "x".repeat(31).as_str(), "x".repeat(32).as_str(), "y".repeat(70_000).as_str()] {
            writes_as_its_value_does(text);
            writes_as_its_value_does(&text.to_string());
        }
        for c in ['a', 'é', '€', '😀'] {
            writes_as_its_value_does(&c);
        }
        writes_as_its_value_does(&true);
        writes_as_its_value_does(&false);
        writes_as_its_value_does(&());
        writes_as_its_value_does(&None::<i32>);
        writes_as_its_value_does(&Some(Some(3u8)));
        writes_as_its_value_does(&Unit);
        writes_as_its_value_does(&Meters(2.0));
        writes_as_its_value_does(&Shape::Empty);
        writes_as_its_value_does(&Value::Bytes(vec![1, 2, 3]));
    }

    #[test]
    fn everything_else_is_written_the_long_way_as_its_value_is() {
        writes_as_its_value_does(&Shape::Circle(1.5));
        writes_as_its_value_does(&Shape::Rect { w: 1, h: 2 });
        writes_as_its_value_does(&Point { x: -3, y: 2.5, name: "p".into(), tags: vec!["a".into()], maybe: None });
        writes_as_its_value_does(&Pair(1, "a".into()));
        writes_as_its_value_does(&(1, "a", true));
        writes_as_its_value_does(&vec![1u8, 2, 3]);
        writes_as_its_value_does(&BTreeMap::from([("k".to_string(), 1)]));
        writes_as_its_value_does(&exotic());
        writes_as_its_value_does(&Some(exotic()));
        writes_as_its_value_does(&Value::Str("a Value".into()));
    }

    #[test]
    fn a_value_that_cannot_be_converted_appends_nothing() {
        let unhashable = BTreeMap::from([(vec![1], 1)]);
        let mut out = vec![7];
        let err = write_msgpack_of(&unhashable, &mut out).unwrap_err();
        assert_eq!(err.message, to_value(&unhashable).unwrap_err().message);
        assert_eq!(out, [7]);
        assert!(bridge::take().is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_int_float_or_str_is_written_as_its_value_is(i in proptest::num::i64::ANY, u in proptest::num::u64::ANY,
                                                           f in proptest::num::f64::ANY, text in ".{0,40}") {
            writes_as_its_value_does(&i);
            writes_as_its_value_does(&u);
            writes_as_its_value_does(&f);
            writes_as_its_value_does(&text);
            writes_as_its_value_does(&(text.as_str(), i, Some(f)));
        }
    }

    #[test]
    fn value_inside_a_newtype_crosses_whole() {
        #[derive(Serialize)]
        struct Wrap<'a>(&'a Value);
        let v = Value::Tuple(vec![Value::Int(1), s("a")]);
        let back: Value = from_value(to_value(&Wrap(&v)).unwrap()).unwrap();
        assert!(same(&back, &v));
    }
}
