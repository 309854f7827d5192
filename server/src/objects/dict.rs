//! The shared `dict` (Python's `SyncManager.dict()`): Python's dict semantics and error
//! texts over the insertion-ordered [`Dict`], plus agora's atomic `incr` and
//! `compare_and_set`.
//!
//! `keys`, `values` and `items` return lists (a CPython server returns views, which
//! reach clients as lists). `__iter__` is not here: it answers with an iterator proxy
//! over a snapshot of the keys ([`super::iterator`]), which watches this dict's size.
//!
//! The state is the entries in insertion order (serialized as `(key, value)` pairs:
//! [`Dict`] has no serde of its own), so the same commands give the same encoding.

use agora_proto::native::Kind;
use agora_proto::value::{Dict, Object};
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::sequence;
use super::value::add_numbers;
use crate::engine::Ctx;
use crate::object::{
    begin_sequence_capture, encode_state, sequence_state_header, Args, MethodSpec, Outcome, SharedObject, StateCapture,
    Upcoming, VEC_WRITE,
};

/// The kind's constructor and methods, declared in [`agora_proto::methods::dict`].
pub use agora_proto::methods::dict::CONSTRUCTOR;
use agora_proto::methods::dict::METHODS;

/// A shared dict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DictObject {
    #[serde(with = "pairs")]
    dict: Dict,
}

/// Serde for a [`Dict`] (which has none of its own): its `(key, value)` pairs in
/// insertion order, so equal dicts built by the same commands encode equally.
pub(crate) mod pairs {
    use agora_proto::value::Dict;
    use agora_proto::Value;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the entries as a sequence of `(key, value)` pairs, in order.
    pub fn serialize<S: Serializer>(dict: &Dict, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(dict.len()))?;
        for entry in dict.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }

    /// Reads the pairs back, in order (`Dict::from_pairs`: a key that is not hashable
    /// is an error).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Dict, D::Error> {
        let pairs = Vec::<(Value, Value)>::deserialize(deserializer)?;
        Dict::from_pairs(pairs).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// One entry of the state's pair list.
fn write_entry(out: &mut Vec<u8>, key: &Value, value: &Value) {
    rmp::encode::write_array_len(out, 2).expect(VEC_WRITE);
    key.write_msgpack(out);
    value.write_msgpack(out);
}

impl DictObject {
    /// `dict(mapping_or_iterable=(), **kw)`: a dict, pairs, or keywords.
    pub fn new(mut args: Args) -> Result<DictObject, WireError> {
        let mut object = DictObject::default();
        object.update(args.take(0), args.take_keywords())?;
        Ok(object)
    }

    /// Runs one method; mutators return `None`.
    fn dispatch(&mut self, method: &str, mut args: Args) -> Result<Value, WireError> {
        match method {
            "__contains__" => self.dict.contains_key(&args.required(0)).map(Value::Bool),
            "__delitem__" => {
                let key = args.required(0);
                self.dict.remove(&key)?.map(|_| Value::None).ok_or_else(|| WireError::key_error(key))
            }
            "__getitem__" => {
                let key = args.required(0);
                self.dict.get(&key)?.cloned().ok_or_else(|| WireError::key_error(key))
            }
            "__len__" => Ok(Value::Int(self.dict.len() as i64)),
            "__setitem__" => self.dict.insert(args.required(0), args.required(1)).map(|_| Value::None),
            "clear" => {
                self.dict.clear();
                Ok(Value::None)
            }
            "copy" => Ok(Value::Dict(self.dict.clone())),
            "get" => Ok(self.dict.get(&args.required(0))?.cloned().unwrap_or_else(|| args.or(1, Value::None))),
            "items" => {
                Ok(Value::List(self.dict.iter().map(|(k, v)| Value::Tuple(vec![k.clone(), v.clone()])).collect()))
            }
            "keys" => Ok(Value::List(self.dict.iter().map(|(k, _)| k.clone()).collect())),
            "values" => Ok(Value::List(self.dict.iter().map(|(_, v)| v.clone()).collect())),
            "pop" => self.pop(args.required(0), args.take(1)),
            "popitem" => self
                .dict
                .pop_last()
                .map(|(k, v)| Value::Tuple(vec![k, v]))
                .ok_or_else(|| WireError::key_error(Value::Str("popitem(): dictionary is empty".into()))),
            "setdefault" => self.setdefault(args.required(0), args.or(1, Value::None)),
            "update" => self.update(args.take(0), args.take_keywords()).map(|_| Value::None),
            "incr" => self.incr(args.required(0), args.or(1, Value::Int(1)), args.or(2, Value::Int(0))),
            "compare_and_set" => self.compare_and_set(args.required(0), args.take(1), args.take(2)),
            other => Err(WireError::new(ErrorCode::Internal, format!("dict has no method '{other}'"))),
        }
    }

    /// `pop(key[, default])`: without a default a missing key is a `KeyError`.
    fn pop(&mut self, key: Value, default: Option<Value>) -> Result<Value, WireError> {
        // CPython answers for an empty dict without hashing the key.
        let found = if self.dict.is_empty() { None } else { self.dict.remove(&key)? };
        found.or(default).ok_or_else(|| WireError::key_error(key))
    }

    /// `setdefault(key, default=None)`.
    fn setdefault(&mut self, key: Value, default: Value) -> Result<Value, WireError> {
        if let Some(value) = self.dict.get(&key)? {
            return Ok(value.clone());
        }
        self.dict.insert(key, default.clone())?;
        Ok(default)
    }

    /// `update(other=(), **kw)`. Like CPython, pairs before a bad element stay applied.
    fn update(&mut self, other: Option<Value>, keywords: Vec<(String, Value)>) -> Result<(), WireError> {
        match other {
            None => {}
            Some(Value::Dict(other)) => self.insert_all(other.iter().map(|(k, v)| (k.clone(), v.clone())))?,
            Some(Value::Object(object)) if is_ordered_dict(&object) => {
                self.insert_all(object.dict_items.iter().cloned())?
            }
            Some(pairs) => self.insert_pairs(pairs)?,
        }
        self.insert_all(keywords.into_iter().map(|(k, v)| (Value::Str(k.into()), v)))
    }

    /// Inserts entries in order.
    fn insert_all(&mut self, entries: impl Iterator<Item = (Value, Value)>) -> Result<(), WireError> {
        for (key, value) in entries {
            self.dict.insert(key, value)?;
        }
        Ok(())
    }

    /// Inserts an iterable of 2-item iterables, with CPython's errors for bad elements.
    fn insert_pairs(&mut self, pairs: Value) -> Result<(), WireError> {
        for (i, pair) in sequence::into_items(pairs)?.into_iter().enumerate() {
            let pair = sequence::into_items_or(pair, |_| {
                WireError::type_error(format!("cannot convert dictionary update sequence element #{i} to a sequence"))
            })?;
            let [key, value] = <[Value; 2]>::try_from(pair).map_err(|pair| {
                WireError::value_error(format!(
                    "dictionary update sequence element #{i} has length {}; 2 is required",
                    pair.len()
                ))
            })?;
            self.dict.insert(key, value)?;
        }
        Ok(())
    }

    /// `incr(key, delta=1, default=0)`: `d[key] = d.get(key, default) + delta` for
    /// numbers, atomically; returns the new value.
    fn incr(&mut self, key: Value, delta: Value, default: Value) -> Result<Value, WireError> {
        let current = self.dict.get(&key)?.unwrap_or(&default);
        let new = add_numbers(current, &delta)?;
        self.dict.insert(key, new.clone())?;
        Ok(new)
    }

    /// `compare_and_set(key, expected, new)` sets `key` to `new` if its value equals
    /// `expected`; `compare_and_set(key, new)` sets it only if the key is absent.
    /// Returns whether it set.
    fn compare_and_set(&mut self, key: Value, expected: Option<Value>, new: Option<Value>) -> Result<Value, WireError> {
        let (expected, new) = match (expected, new) {
            (Some(expected), Some(new)) => (Some(expected), new),
            (None, Some(new)) | (Some(new), None) => (None, new),
            (None, None) => return Err(WireError::type_error("compare_and_set() missing required argument: 'new'")),
        };
        let matches = match (self.dict.get(&key)?, &expected) {
            (Some(current), Some(expected)) => current.py_eq(expected),
            (None, None) => true,
            _ => false,
        };
        if matches {
            self.dict.insert(key, new)?;
        }
        Ok(Value::Bool(matches))
    }
}

/// True for a pickled `collections.OrderedDict`, whose entries travel as dict items.
fn is_ordered_dict(object: &Object) -> bool {
    object.module == "collections" && object.qualname == "OrderedDict"
}

impl SharedObject for DictObject {
    fn kind(&self) -> Kind {
        Kind::Dict
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        // Every call, reads too, does a step of the dict's upkeep (a growing index):
        // one only read still finishes it.
        self.dict.tidy();
        self.dispatch(method, args).map(Outcome::from)
    }

    /// The keys of upcoming calls that look their first argument up: on a dict too big
    /// for the cache, each lookup would otherwise wait for its entry in turn.
    fn prefetch(&self, upcoming: &mut dyn Iterator<Item = Upcoming<'_>>) {
        let looks_up = |u: &Upcoming<'_>| {
            matches!(
                u.method,
                "__getitem__" | "get" | "__setitem__" | "__contains__" | "__delitem__" | "pop" | "setdefault"
            )
        };
        self.dict.prefetch(upcoming.filter(looks_up).map(|u| u.first));
    }

    fn prefetches(&self) -> bool {
        true
    }

    fn snapshot(&self) -> Value {
        Value::Dict(self.dict.clone())
    }

    fn state(&self) -> Vec<u8> {
        // The bytes `encode_state(self)` writes (a test holds them equal), written by
        // hand: several times faster than through serde.
        let Some(mut out) = sequence_state_header(&[], "dict", self.dict.len()) else {
            return encode_state(self);
        };
        for (key, value) in self.dict.iter() {
            write_entry(&mut out, key, value);
        }
        out
    }

    fn begin_state(&mut self) -> StateCapture {
        // Captured when big, so that a snapshot's pause does not grow with it.
        let header = begin_sequence_capture(&[], "dict", self.dict.len(), || self.dict.begin_capture());
        StateCapture::started_or(header, || self.state())
    }

    fn state_next(&mut self, out: &mut Vec<u8>, positions: usize) -> bool {
        self.dict.capture_next(positions, |key, value| write_entry(out, key, value))
    }

    fn end_state(&mut self) {
        self.dict.end_capture();
    }

    fn repr(&self) -> String {
        self.snapshot().py_repr()
    }

    fn size(&self) -> Option<usize> {
        Some(self.dict.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::CAPTURE_FROM;
    use crate::objects::sequence::testing::{
        assert_error, assert_py_eq, bind_kw, call, call_kw, call_unchecked, ints, s,
    };
    use agora_proto::value::Build;

    #[test]
    fn a_big_dict_s_state_is_captured_as_it_was_while_it_changes() {
        let n = CAPTURE_FROM as i64 + 500;
        let mut d = DictObject::default();
        for i in 0..n {
            call(&mut d, "__setitem__", vec![Value::Int(i), Value::Int(i)]).unwrap();
        }
        let before = d.state();
        let StateCapture::Started(mut out) = d.begin_state() else { panic!("a big dict is captured") };
        assert!(
            matches!(d.begin_state(), StateCapture::Encoded(now) if now == before),
            "a second snapshot while one reads out encodes at once"
        );
        let mut step = 0;
        while !d.state_next(&mut out, 100) {
            step += 1;
            // Overwrites, deletes, inserts and popitems between the steps, and a clear.
            call(&mut d, "__setitem__", vec![Value::Int(step * 37 % n), s("new")]).unwrap();
            call(&mut d, "pop", vec![Value::Int(step * 53 % n), Value::None]).unwrap();
            call(&mut d, "__setitem__", vec![Value::Int(n + step), Value::Int(0)]).unwrap();
            call(&mut d, "popitem", vec![]).unwrap();
            if step == 30 {
                call(&mut d, "clear", vec![]).unwrap();
            }
        }
        assert!(step > 40, "read out in steps ({step})");
        assert_eq!(out, before, "the state as it was when the capture began");
        assert_ne!(d.state(), before);
        assert!(matches!(ab().begin_state(), StateCapture::Encoded(b) if b == ab().state()), "small: at once");
    }

    #[test]
    fn an_ended_capture_stops_and_lets_the_next_begin() {
        let mut d = DictObject::default();
        for i in 0..CAPTURE_FROM as i64 {
            call(&mut d, "__setitem__", vec![Value::Int(i), Value::Int(i)]).unwrap();
        }
        let StateCapture::Started(mut out) = d.begin_state() else { panic!("a big dict is captured") };
        d.end_state();
        let header = out.len();
        assert!(d.state_next(&mut out, 100), "an ended capture has nothing left");
        assert_eq!(out.len(), header);
        assert!(matches!(d.begin_state(), StateCapture::Started(_)), "a new capture can begin");
    }

    #[test]
    fn the_hand_written_state_is_byte_for_byte_serde_s() {
        let mut values = vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-7),
            Value::Int(1 << 40),
            Value::Float(2.5),
            s(""),
            s("a key longer than the thirty-one bytes of a fixstr"),
            Value::Bytes(vec![0, 1, 2]),
            Value::Tuple(vec![Value::Int(1), s("t")]),
            Value::List(vec![Value::None; 20]),
        ];
        let nested: Dict = Dict::from_pairs([(s("k"), Value::List(values.clone()))]).unwrap();
        values.push(Value::Dict(nested));
        for len in [0, 1, 15, 16, 300, 70_000] {
            let mut object = DictObject::default();
            for i in 0..len {
                let key = if i % 3 == 0 { Value::Int(i as i64) } else { s(&format!("key:{i}")) };
                object.dict.insert(key, values[i % values.len()].clone()).unwrap();
            }
            assert_eq!(object.state(), encode_state(&object), "{len} entries");
        }
    }

    fn new(positional: Vec<Value>, keywords: Vec<(&str, Value)>) -> Result<DictObject, WireError> {
        DictObject::new(bind_kw(&CONSTRUCTOR, positional, keywords)?)
    }

    fn pair(key: Value, value: Value) -> Value {
        Value::Tuple(vec![key, value])
    }

    /// `{'a': 1, 'b': 2}`.
    fn ab() -> DictObject {
        new(vec![Value::List(vec![pair(s("a"), Value::Int(1)), pair(s("b"), Value::Int(2))])], vec![]).unwrap()
    }

    #[track_caller]
    fn assert_key_error(result: Result<Value, WireError>, key: Value) {
        let error = result.unwrap_err();
        assert_eq!((error.code, error.message.clone()), (ErrorCode::KeyError, key.py_repr()));
        assert_py_eq(error.detail.as_ref().expect("a KeyError carries its key"), &key);
    }

    #[test]
    fn constructor_takes_mappings_pairs_and_keywords() {
        assert_eq!(ab().repr(), "{'a': 1, 'b': 2}");
        let from_dict = new(vec![ab().snapshot()], vec![("c", Value::Int(3))]).unwrap();
        assert_eq!(from_dict.repr(), "{'a': 1, 'b': 2, 'c': 3}");
        assert_eq!(new(vec![], vec![("iterable_not", Value::None)]).unwrap().repr(), "{'iterable_not': None}");
        assert_eq!(new(vec![Value::List(vec![s("xy")])], vec![]).unwrap().repr(), "{'x': 'y'}");
        assert_eq!(new(vec![], vec![]).unwrap().size(), Some(0));
    }

    #[test]
    fn constructor_reads_a_pickled_ordered_dict() {
        let ordered = Value::Object(Box::new(Object {
            module: "collections".into(),
            qualname: "OrderedDict".into(),
            build: Build::Reduce(vec![]),
            state: None,
            list_items: vec![],
            dict_items: vec![(s("z"), Value::Int(1)), (s("a"), Value::Int(2))],
        }));
        assert_eq!(new(vec![ordered], vec![]).unwrap().repr(), "{'z': 1, 'a': 2}");
    }

    #[test]
    fn update_errors_match_cpython() {
        let with = |other: Value| new(vec![other], vec![]);
        assert_error(with(Value::Int(5)), ErrorCode::TypeError, "'int' object is not iterable");
        assert_error(with(Value::None), ErrorCode::TypeError, "'NoneType' object is not iterable");
        assert_error(
            with(ints(&[1])),
            ErrorCode::TypeError,
            "cannot convert dictionary update sequence element #0 to a sequence",
        );
        assert_error(
            with(Value::List(vec![Value::Tuple(vec![Value::Int(1), Value::Int(2), Value::Int(3)])])),
            ErrorCode::ValueError,
            "dictionary update sequence element #0 has length 3; 2 is required",
        );
        assert_error(
            with(Value::List(vec![pair(Value::Int(1), Value::Int(2)), s("a")])),
            ErrorCode::ValueError,
            "dictionary update sequence element #1 has length 1; 2 is required",
        );
        assert_error(
            with(Value::List(vec![pair(ints(&[]), Value::Int(1))])),
            ErrorCode::TypeError,
            "unhashable type: 'list'",
        );
    }

    #[test]
    fn update_applies_pairs_before_a_bad_element_like_cpython() {
        let mut d = ab();
        let pairs = Value::List(vec![pair(s("c"), Value::Int(3)), Value::Int(4)]);
        assert!(call(&mut d, "update", vec![pairs]).is_err());
        assert_eq!(d.repr(), "{'a': 1, 'b': 2, 'c': 3}");
        call_kw(&mut d, "update", vec![], vec![("a", Value::Int(0))]).unwrap();
        assert_eq!(d.repr(), "{'a': 0, 'b': 2, 'c': 3}");
    }

    #[test]
    fn item_access() {
        let mut d = ab();
        assert_py_eq(&call(&mut d, "__getitem__", vec![s("a")]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut d, "__contains__", vec![s("b")]).unwrap(), &Value::Bool(true));
        assert_py_eq(&call(&mut d, "__contains__", vec![s("z")]).unwrap(), &Value::Bool(false));
        call(&mut d, "__setitem__", vec![s("a"), Value::Int(9)]).unwrap();
        call(&mut d, "__delitem__", vec![s("b")]).unwrap();
        assert_eq!(d.repr(), "{'a': 9}");
        assert_py_eq(&call(&mut d, "__len__", vec![]).unwrap(), &Value::Int(1));
    }

    #[test]
    fn missing_keys_are_key_errors() {
        let mut d = ab();
        assert_key_error(call(&mut d, "__getitem__", vec![s("x")]), s("x"));
        assert_key_error(call(&mut d, "__delitem__", vec![s("x")]), s("x"));
        assert_key_error(
            call(&mut d, "pop", vec![Value::Tuple(vec![Value::Int(1)])]),
            Value::Tuple(vec![Value::Int(1)]),
        );
    }

    #[test]
    fn unhashable_keys_are_type_errors() {
        let mut d = ab();
        for method in ["__getitem__", "__contains__", "__delitem__", "get", "setdefault", "pop"] {
            assert_error(call(&mut d, method, vec![ints(&[1])]), ErrorCode::TypeError, "unhashable type: 'list'");
        }
        assert_error(
            call(&mut d, "__setitem__", vec![ints(&[1]), Value::None]),
            ErrorCode::TypeError,
            "unhashable type: 'list'",
        );
    }

    #[test]
    fn get_and_setdefault() {
        let mut d = ab();
        assert_py_eq(&call(&mut d, "get", vec![s("a")]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut d, "get", vec![s("x")]).unwrap(), &Value::None);
        assert_py_eq(&call_kw(&mut d, "get", vec![s("x")], vec![("default", Value::Int(0))]).unwrap(), &Value::Int(0));
        assert_py_eq(&call(&mut d, "setdefault", vec![s("a"), Value::Int(5)]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut d, "setdefault", vec![s("c")]).unwrap(), &Value::None);
        assert_eq!(d.repr(), "{'a': 1, 'b': 2, 'c': None}");
    }

    #[test]
    fn pop_with_and_without_default() {
        let mut d = ab();
        assert_py_eq(&call(&mut d, "pop", vec![s("a")]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut d, "pop", vec![s("a"), Value::None]).unwrap(), &Value::None);
        assert_key_error(call(&mut d, "pop", vec![s("a")]), s("a"));
        assert_eq!(d.repr(), "{'b': 2}");
        // Like CPython, an empty dict never hashes the key.
        let mut empty = new(vec![], vec![]).unwrap();
        assert_key_error(call(&mut empty, "pop", vec![ints(&[1])]), ints(&[1]));
        assert_py_eq(&call(&mut empty, "pop", vec![ints(&[1]), Value::Int(2)]).unwrap(), &Value::Int(2));
    }

    #[test]
    fn popitem_is_lifo() {
        let mut d = ab();
        assert_py_eq(&call(&mut d, "popitem", vec![]).unwrap(), &Value::Tuple(vec![s("b"), Value::Int(2)]));
        call(&mut d, "popitem", vec![]).unwrap();
        assert_key_error(call(&mut d, "popitem", vec![]), s("popitem(): dictionary is empty"));
    }

    #[test]
    fn views_are_lists_and_copy_is_a_dict() {
        let mut d = ab();
        assert_eq!(call(&mut d, "keys", vec![]).unwrap().py_repr(), "['a', 'b']");
        assert_eq!(call(&mut d, "values", vec![]).unwrap().py_repr(), "[1, 2]");
        assert_eq!(call(&mut d, "items", vec![]).unwrap().py_repr(), "[('a', 1), ('b', 2)]");
        let copy = call(&mut d, "copy", vec![]).unwrap();
        assert!(matches!(copy, Value::Dict(_)));
        call(&mut d, "clear", vec![]).unwrap();
        assert_eq!((d.repr(), copy.py_repr()), ("{}".to_string(), "{'a': 1, 'b': 2}".to_string()));
        assert_eq!(d.kind(), Kind::Dict);
    }

    #[test]
    fn incr_adds_numbers_atomically() {
        let mut d = ab();
        assert_py_eq(&call(&mut d, "incr", vec![s("a")]).unwrap(), &Value::Int(2));
        assert_py_eq(&call(&mut d, "incr", vec![s("new"), Value::Float(0.5)]).unwrap(), &Value::Float(0.5));
        let with_default = call_kw(&mut d, "incr", vec![s("n")], vec![("default", Value::Int(10))]).unwrap();
        assert_py_eq(&with_default, &Value::Int(11));
        assert_eq!(d.repr(), "{'a': 2, 'b': 2, 'new': 0.5, 'n': 11}");
    }

    #[test]
    fn incr_refuses_non_numbers() {
        let mut d = new(vec![], vec![("s", s("x"))]).unwrap();
        assert_error(
            call(&mut d, "incr", vec![s("s")]),
            ErrorCode::TypeError,
            "unsupported operand type(s) for +: 'str' and 'int'",
        );
        assert_error(
            call(&mut d, "incr", vec![s("k"), s("x")]),
            ErrorCode::TypeError,
            "unsupported operand type(s) for +: 'int' and 'str'",
        );
        assert_error(call(&mut d, "incr", vec![ints(&[])]), ErrorCode::TypeError, "unhashable type: 'list'");
        assert_eq!(d.repr(), "{'s': 'x'}");
    }

    #[test]
    fn compare_and_set_with_an_expected_value() {
        let mut d = ab();
        let cas = |d: &mut DictObject, args: Vec<Value>| call(d, "compare_and_set", args).unwrap();
        assert_py_eq(&cas(&mut d, vec![s("a"), Value::Int(5), Value::Int(7)]), &Value::Bool(false));
        assert_py_eq(&cas(&mut d, vec![s("a"), Value::Float(1.0), Value::Int(7)]), &Value::Bool(true));
        assert_py_eq(&cas(&mut d, vec![s("x"), Value::None, Value::Int(7)]), &Value::Bool(false));
        assert_eq!(d.repr(), "{'a': 7, 'b': 2}");
    }

    #[test]
    fn compare_and_set_with_two_arguments_inserts_if_absent() {
        let mut d = ab();
        assert_py_eq(&call(&mut d, "compare_and_set", vec![s("a"), Value::Int(5)]).unwrap(), &Value::Bool(false));
        assert_py_eq(&call(&mut d, "compare_and_set", vec![s("c"), Value::Int(5)]).unwrap(), &Value::Bool(true));
        let by_name = call_kw(&mut d, "compare_and_set", vec![s("d")], vec![("new", Value::Int(6))]).unwrap();
        assert_py_eq(&by_name, &Value::Bool(true));
        assert_eq!(d.repr(), "{'a': 1, 'b': 2, 'c': 5, 'd': 6}");
        assert_error(
            call(&mut d, "compare_and_set", vec![s("e")]),
            ErrorCode::TypeError,
            "compare_and_set() missing required argument: 'new'",
        );
    }

    #[test]
    fn state_is_canonical_and_round_trips() {
        let mut d = ab();
        assert_eq!(d.state(), ab().state());
        call(&mut d, "__setitem__", vec![s("a"), Value::Int(1)]).unwrap();
        assert_eq!(d.state(), ab().state(), "setting an equal value changes nothing");
        let ba = new(vec![], vec![("b", Value::Int(2)), ("a", Value::Int(1))]).unwrap();
        assert_ne!(ba.state(), d.state(), "insertion order is part of the state");
        let key = Value::Tuple(vec![Value::Int(1), s("x")]);
        call(&mut d, "__setitem__", vec![key.clone(), Value::Float(0.5)]).unwrap();
        call(&mut d, "__setitem__", vec![Value::Int(3), ab().snapshot()]).unwrap();
        let back: DictObject = rmp_serde::from_slice(&d.state()).unwrap();
        assert_eq!(back.repr(), "{'a': 1, 'b': 2, (1, 'x'): 0.5, 3: {'a': 1, 'b': 2}}");
        assert_eq!(back.state(), d.state());
        assert_py_eq(&call(&mut back.clone(), "__getitem__", vec![key]).unwrap(), &Value::Float(0.5));
    }

    #[test]
    fn a_dict_only_read_still_finishes_growing_its_index() {
        let mut d = new(vec![], vec![]).unwrap();
        let mut n = 0;
        while !d.dict.index_growing() {
            call(&mut d, "__setitem__", vec![Value::Int(n), Value::Int(n)]).unwrap();
            n += 1;
            assert!(n < 1_000_000, "a big enough dict's index grows step by step");
        }
        // A read stays read-only (the state encodes the same; `call` checks it)...
        assert_py_eq(&call(&mut d, "__getitem__", vec![Value::Int(0)]).unwrap(), &Value::Int(0));
        // ...and reads alone finish the growth.
        let mut reads = 0;
        while d.dict.index_growing() {
            let got = call_unchecked(&mut d, "__getitem__", vec![Value::Int(reads % n)]).unwrap();
            assert_py_eq(&got, &Value::Int(reads % n));
            reads += 1;
            assert!(reads < 1_000_000, "reads finish the growth");
        }
        assert_eq!(call(&mut d, "__len__", vec![]).unwrap(), Value::Int(n));
    }

    #[test]
    fn reads_are_read_only_and_setters_store() {
        let spec = |name: &str| *METHODS.iter().find(|m| m.name == name).unwrap();
        for name in ["__contains__", "__getitem__", "__len__", "copy", "get", "items", "keys", "values"] {
            assert!(spec(name).read_only && !spec(name).stores, "{name}");
        }
        for name in ["__setitem__", "setdefault", "update"] {
            assert!(spec(name).stores && !spec(name).read_only, "{name}");
        }
        for name in ["__delitem__", "clear", "pop", "popitem", "incr", "compare_and_set"] {
            assert!(!spec(name).read_only, "{name}");
        }
    }
}
