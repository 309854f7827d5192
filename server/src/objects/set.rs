//! The shared `set` (CPython 3.14's `SyncManager.set()`): Python's set semantics and
//! error texts over agora's [`Set`], for every method of 3.14's `SetProxy`.
//!
//! What this module owns, and where it follows CPython to the letter:
//! - the set algebra. Operators (`__or__`, `__iand__`, `__lt__`…) take a set or a
//!   frozenset only and answer `NotImplemented` to anything else, as CPython's slots do
//!   (a client's `proxy | [1]` then fails in the client with Python's own `TypeError`);
//!   the named methods (`union`, `update`, `issuperset`…) take any iterable agora
//!   understands (`sequence::into_items`). Results take the type of their left
//!   operand (`frozenset | s`, reflected through `__ror__`, is a frozenset), and
//!   which of two equal members survives (`{1} & {1.0}`) follows CPython's loops;
//! - element rules: an unhashable element is CPython's `TypeError` ("unhashable type:
//!   'list'"), except that `in`, `remove` and `discard` look a set up as the equal
//!   frozenset, as CPython does; `remove` of a missing element is `KeyError(elem)`, and
//!   `pop` of an empty set `KeyError('pop from an empty set')`;
//! - `iter(s)` answers what a CPython 3.14 server sends: 3.14's `SetProxy` has no
//!   `_method_to_typeid_` for `__iter__`, so its server pickles the set iterator, which
//!   pickles as `iter(list_of_members)` and reaches the client as a local iterator over
//!   a copy. No iterator object is made on the server.
//!
//! In-place operators return the set, as CPython's server does (3.14's proxy drops it
//! and returns itself). `pop` removes the most recently added member: CPython's choice
//! is arbitrary too, and this one is deterministic.
//!
//! The state is the members in insertion order (like `dict`): the same commands give
//! the same encoding, without sorting values Python cannot order (`1` and `'a'`), and
//! independently of the per-process hash seed.

use agora_proto::native::Kind;
use agora_proto::value::{Build, Object, Set};
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::sequence;
use crate::engine::Ctx;
use crate::object::{
    begin_sequence_capture, encode_state, sequence_state_header, Args, MethodSpec, Outcome, SharedObject, StateCapture,
};

/// The kind's constructor and methods, declared in [`agora_proto::methods::set`].
pub use agora_proto::methods::set::CONSTRUCTOR;
use agora_proto::methods::set::METHODS;

/// A shared set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetObject {
    #[serde(with = "members")]
    set: Set,
}

/// Serde for a [`Set`] (which has none of its own): its members in insertion order.
mod members {
    use agora_proto::value::Set;
    use agora_proto::Value;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the members as a sequence, in order.
    pub fn serialize<S: Serializer>(set: &Set, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(set.len()))?;
        for member in set.iter() {
            seq.serialize_element(member)?;
        }
        seq.end()
    }

    /// Reads the members back, in order (an unhashable one is an error).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Set, D::Error> {
        let members = Vec::<Value>::deserialize(deserializer)?;
        Set::from_values(members).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// A set operand of an operator: its members, and whether it is a frozenset (results
/// take the type of their left operand).
struct Operand {
    set: Set,
    frozen: bool,
}

impl Operand {
    /// `value` if it is a set or a frozenset; `None` makes the operator answer
    /// `NotImplemented`.
    fn of(value: Value) -> Option<Operand> {
        match value {
            Value::Set(set) => Some(Operand { set, frozen: false }),
            Value::FrozenSet(set) => Some(Operand { set, frozen: true }),
            _ => None,
        }
    }

    /// A result of this operand's type.
    fn typed(&self, set: Set) -> Value {
        if self.frozen {
            Value::FrozenSet(set)
        } else {
            Value::Set(set)
        }
    }
}

/// True if `set` holds `member`, which came out of a set (so it is hashable).
fn has(set: &Set, member: &Value) -> bool {
    matches!(set.contains(member), Ok(true))
}

/// A set of members taken from other sets: they are hashable, so no insert fails.
fn collect<'a>(members: impl Iterator<Item = &'a Value>) -> Set {
    let mut out = Set::new();
    for member in members {
        let _ = out.insert(member.clone());
    }
    out
}

/// Adds `members` (of a set, so hashable) after the set's own; a member equal to one
/// already there is not added.
fn add_members(set: &mut Set, members: &Set) {
    for member in members.iter() {
        let _ = set.insert(member.clone());
    }
}

/// `a | b`: a copy of `a` with `b`'s new members after its own.
fn union(a: &Set, b: &Set) -> Set {
    let mut out = a.clone();
    add_members(&mut out, b);
    out
}

/// `a & b` for two sets, as CPython's `set_intersection` walks it: through the smaller
/// set (through `b` when the sizes are equal), keeping that set's members.
fn intersection(a: &Set, b: &Set) -> Set {
    let (walked, probed) = if b.len() > a.len() { (a, b) } else { (b, a) };
    collect(walked.iter().filter(|m| has(probed, m)))
}

/// `a & items` for any iterable's items: the items (first of equals) found in `a`.
fn intersection_with_items(a: &Set, items: Vec<Value>) -> Result<Set, WireError> {
    let mut out = Set::new();
    for item in items {
        if a.contains(&item)? {
            out.insert(item)?;
        }
    }
    Ok(out)
}

/// `a - b`: `a`'s members not in `b`.
fn difference(a: &Set, b: &Set) -> Set {
    collect(a.iter().filter(|m| !has(b, m)))
}

/// `a ^ b`, as CPython's `set_symmetric_difference` builds it: `b`'s members not in
/// `a`, then `a`'s not in `b`.
fn symmetric_difference(a: &Set, b: &Set) -> Set {
    let only_b = b.iter().filter(|m| !has(a, m));
    let only_a = a.iter().filter(|m| !has(b, m));
    collect(only_b.chain(only_a))
}

/// A builtin the client's pickle loads by name (`builtins.set`, `NotImplemented`).
fn builtin(name: &str) -> Value {
    Value::Object(Box::new(Object {
        module: "builtins".into(),
        qualname: name.into(),
        build: Build::Global,
        state: None,
        list_items: Vec::new(),
        dict_items: Vec::new(),
    }))
}

/// `NotImplemented`: what CPython's set operators answer for an operand that is not a
/// set; the client's Python then tries the reflected operator, and raises its own
/// `TypeError` if nothing handles it.
fn not_implemented() -> Value {
    builtin("NotImplemented")
}

impl SetObject {
    /// `set(iterable=())`: any iterable agora can walk (list, tuple, set, dict keys,
    /// str, bytes, range…).
    pub fn new(mut args: Args) -> Result<SetObject, WireError> {
        let mut object = SetObject::default();
        if let Some(iterable) = args.take(0) {
            object.set = Set::from_values(sequence::into_items(iterable)?)?;
        }
        Ok(object)
    }

    /// Runs one method; mutators return `None` (in-place operators the set).
    fn dispatch(&mut self, method: &str, mut args: Args) -> Result<Value, WireError> {
        match method {
            "__and__" | "__rand__" | "__or__" | "__ror__" | "__sub__" | "__rsub__" | "__xor__" | "__rxor__" => {
                Ok(self.operator(method, args.required(0)))
            }
            "__lt__" | "__le__" | "__gt__" | "__ge__" => Ok(self.compare(method, args.required(0))),
            "__iand__" | "__ior__" | "__isub__" | "__ixor__" => Ok(self.in_place(method, args.required(0))),
            "__class_getitem__" => {
                let params = match args.required(0) {
                    Value::Tuple(items) => Value::Tuple(items),
                    item => Value::Tuple(vec![item]),
                };
                Ok(Value::reduce("types", "GenericAlias", vec![builtin("set"), params]))
            }
            "__contains__" => self.contains(&args.required(0)).map(Value::Bool),
            "__iter__" => Ok(Value::reduce("builtins", "iter", vec![Value::List(self.set.iter().cloned().collect())])),
            "__len__" => Ok(Value::Int(self.set.len() as i64)),
            "add" => self.set.insert(args.required(0)).map(|_| Value::None),
            "clear" => {
                self.set.clear();
                Ok(Value::None)
            }
            "copy" => Ok(Value::Set(self.set.clone())),
            "difference" => self.difference_of(args.take_rest(0)).map(Value::Set),
            "difference_update" => self.difference_update(args.take_rest(0)).map(|()| Value::None),
            "discard" => self.discard(&args.required(0)).map(|_| Value::None),
            "intersection" => self.intersection_of(args.take_rest(0)).map(Value::Set),
            "intersection_update" => {
                self.set = self.intersection_of(args.take_rest(0))?;
                Ok(Value::None)
            }
            "isdisjoint" => self.isdisjoint(args.required(0)).map(Value::Bool),
            "issubset" => self.issubset(args.required(0)).map(Value::Bool),
            "issuperset" => self.issuperset(args.required(0)).map(Value::Bool),
            "pop" => self.set.pop().ok_or_else(|| WireError::key_error(Value::Str("pop from an empty set".into()))),
            "remove" => {
                let elem = args.required(0);
                if self.discard(&elem)? {
                    Ok(Value::None)
                } else {
                    Err(WireError::key_error(elem))
                }
            }
            "symmetric_difference" => {
                let other = as_set(args.required(0))?;
                Ok(Value::Set(symmetric_difference(&self.set, &other)))
            }
            "symmetric_difference_update" => {
                let other = as_set(args.required(0))?;
                self.symmetric_difference_update(&other);
                Ok(Value::None)
            }
            "union" => {
                let mut out = self.set.clone();
                for other in args.take_rest(0) {
                    insert_all(&mut out, sequence::into_items(other)?)?;
                }
                Ok(Value::Set(out))
            }
            "update" => {
                // Like CPython, members added before a bad element stay added.
                for other in args.take_rest(0) {
                    insert_all(&mut self.set, sequence::into_items(other)?)?;
                }
                Ok(Value::None)
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("set has no method '{other}'"))),
        }
    }

    /// `s OP other` and the reflected `other OP s`, for a set or frozenset `other`.
    fn operator(&self, method: &str, other: Value) -> Value {
        let Some(other) = Operand::of(other) else { return not_implemented() };
        // Reflected operators compute `other OP s`: `other` is the left operand.
        let reflected = method.starts_with("__r");
        let (left, right) = if reflected { (&other.set, &self.set) } else { (&self.set, &other.set) };
        let result = match method {
            "__and__" | "__rand__" => intersection(left, right),
            "__or__" | "__ror__" => union(left, right),
            "__sub__" | "__rsub__" => difference(left, right),
            _ => symmetric_difference(left, right),
        };
        if reflected {
            other.typed(result)
        } else {
            Value::Set(result)
        }
    }

    /// `s < other`, `s <= other`, `s > other`, `s >= other` for a set or frozenset.
    fn compare(&self, method: &str, other: Value) -> Value {
        let Some(other) = Operand::of(other) else { return not_implemented() };
        let (mine, theirs) = (&self.set, &other.set);
        Value::Bool(match method {
            "__lt__" => mine.len() < theirs.len() && mine.is_subset(theirs),
            "__le__" => mine.is_subset(theirs),
            "__gt__" => mine.len() > theirs.len() && theirs.is_subset(mine),
            _ => theirs.is_subset(mine),
        })
    }

    /// `s &= other`, `s |= other`, `s -= other`, `s ^= other` for a set or frozenset;
    /// returns the set.
    fn in_place(&mut self, method: &str, other: Value) -> Value {
        let Some(other) = Operand::of(other) else { return not_implemented() };
        match method {
            "__iand__" => self.set = intersection(&self.set, &other.set),
            "__ior__" => add_members(&mut self.set, &other.set),
            "__isub__" => {
                for member in other.set.iter() {
                    let _ = self.set.remove(member);
                }
            }
            _ => self.symmetric_difference_update(&other.set),
        }
        Value::Set(self.set.clone())
    }

    /// `elem in s`: an unhashable set is looked up as the equal frozenset.
    fn contains(&self, elem: &Value) -> Result<bool, WireError> {
        match (self.set.contains(elem), elem) {
            (Err(_), Value::Set(set)) => self.set.contains(&Value::FrozenSet(set.clone())),
            (result, _) => result,
        }
    }

    /// Removes `elem` if present (an unhashable set as the equal frozenset); returns
    /// whether it was.
    fn discard(&mut self, elem: &Value) -> Result<bool, WireError> {
        match (self.set.remove(elem), elem) {
            (Err(_), Value::Set(set)) => self.set.remove(&Value::FrozenSet(set.clone())),
            (result, _) => result,
        }
    }

    /// `s.difference(*others)`: a copy without the members of any of `others`.
    fn difference_of(&self, others: Vec<Value>) -> Result<Set, WireError> {
        let mut out = self.set.clone();
        for other in others {
            remove_all(&mut out, other)?;
        }
        Ok(out)
    }

    /// `s.difference_update(*others)`. Like CPython, members removed before a bad
    /// element stay removed.
    fn difference_update(&mut self, others: Vec<Value>) -> Result<(), WireError> {
        for other in others {
            remove_all(&mut self.set, other)?;
        }
        Ok(())
    }

    /// `s.intersection(*others)` (a copy when there are none). Also the new state of
    /// `intersection_update`, which changes nothing when an element is bad.
    fn intersection_of(&self, others: Vec<Value>) -> Result<Set, WireError> {
        let mut out = self.set.clone();
        for other in others {
            out = match other {
                Value::Set(set) | Value::FrozenSet(set) => intersection(&out, &set),
                iterable => intersection_with_items(&out, sequence::into_items(iterable)?)?,
            };
        }
        Ok(out)
    }

    /// Members of `other` leave the set, others join it.
    fn symmetric_difference_update(&mut self, other: &Set) {
        for member in other.iter() {
            if !matches!(self.set.remove(member), Ok(true)) {
                let _ = self.set.insert(member.clone());
            }
        }
    }

    /// `s.isdisjoint(other)`: stops at the first common element, as CPython does.
    fn isdisjoint(&self, other: Value) -> Result<bool, WireError> {
        if let Value::Set(set) | Value::FrozenSet(set) = &other {
            let (small, large) = if set.len() < self.set.len() { (set, &self.set) } else { (&self.set, set) };
            return Ok(!small.iter().any(|member| has(large, member)));
        }
        for item in sequence::into_items(other)? {
            if self.set.contains(&item)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `s.issubset(other)`: any iterable, made a set first (as CPython does).
    fn issubset(&self, other: Value) -> Result<bool, WireError> {
        Ok(self.set.is_subset(&as_set(other)?))
    }

    /// `s.issuperset(other)`: stops at the first element missing, as CPython 3.14
    /// does (older versions made a set of `other` first).
    fn issuperset(&self, other: Value) -> Result<bool, WireError> {
        if let Value::Set(set) | Value::FrozenSet(set) = &other {
            return Ok(set.is_subset(&self.set));
        }
        for item in sequence::into_items(other)? {
            if !self.set.contains(&item)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// `set(value)` for a named method's argument: any iterable; a set as it is.
fn as_set(value: Value) -> Result<Set, WireError> {
    match value {
        Value::Set(set) | Value::FrozenSet(set) => Ok(set),
        iterable => Set::from_values(sequence::into_items(iterable)?),
    }
}

/// Adds every item, in order, stopping at the first unhashable one.
fn insert_all(set: &mut Set, items: Vec<Value>) -> Result<(), WireError> {
    for item in items {
        set.insert(item)?;
    }
    Ok(())
}

/// Removes every item of the iterable `other`, stopping at the first unhashable one.
fn remove_all(set: &mut Set, other: Value) -> Result<(), WireError> {
    for item in sequence::into_items(other)? {
        set.remove(&item)?;
    }
    Ok(())
}

impl SharedObject for SetObject {
    fn kind(&self) -> Kind {
        Kind::Set
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        // Every call, reads too, does a step of the set's upkeep (a growing index):
        // one only read still finishes it.
        self.set.tidy();
        self.dispatch(method, args).map(Outcome::from)
    }

    fn snapshot(&self) -> Value {
        Value::Set(self.set.clone())
    }

    fn state(&self) -> Vec<u8> {
        // The bytes `encode_state(self)` writes (a test holds them equal), written by
        // hand, as a dict's are: a snapshot reads a big set out in steps.
        let Some(mut out) = sequence_state_header(&[], "set", self.set.len()) else {
            return encode_state(self);
        };
        for member in self.set.iter() {
            member.write_msgpack(&mut out);
        }
        out
    }

    fn begin_state(&mut self) -> StateCapture {
        // Captured when big, so that a snapshot's pause does not grow with it.
        let header = begin_sequence_capture(&[], "set", self.set.len(), || self.set.begin_capture());
        StateCapture::started_or(header, || self.state())
    }

    fn state_next(&mut self, out: &mut Vec<u8>, positions: usize) -> bool {
        self.set.capture_next(positions, |member| member.write_msgpack(out))
    }

    fn end_state(&mut self) {
        self.set.end_capture();
    }

    fn repr(&self) -> String {
        self.snapshot().py_repr()
    }

    fn size(&self) -> Option<usize> {
        Some(self.set.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::CAPTURE_FROM;
    use crate::objects::sequence::testing::{
        assert_error, assert_py_eq, bind_kw, call, call_kw, call_unchecked, ints, s,
    };

    #[test]
    fn a_set_only_read_still_finishes_growing_its_index() {
        let mut set = new(vec![]).unwrap();
        let mut n = 0;
        while !set.set.index_growing() {
            call(&mut set, "add", vec![Value::Int(n)]).unwrap();
            n += 1;
            assert!(n < 1_000_000, "a big enough set's index grows step by step");
        }
        // A read stays read-only (`call` checks the state), and reads alone finish it.
        assert_eq!(call(&mut set, "__contains__", vec![Value::Int(0)]).unwrap(), Value::Bool(true));
        let mut reads = 0;
        while set.set.index_growing() {
            let found = call_unchecked(&mut set, "__contains__", vec![Value::Int(reads % n)]).unwrap();
            assert_eq!(found, Value::Bool(true));
            reads += 1;
            assert!(reads < 1_000_000, "reads finish the growth");
        }
        assert_eq!(call(&mut set, "__len__", vec![]).unwrap(), Value::Int(n));
    }

    fn new(positional: Vec<Value>) -> Result<SetObject, WireError> {
        SetObject::new(bind_kw(&CONSTRUCTOR, positional, vec![])?)
    }

    /// A set (value) of ints.
    fn set_of(values: &[i64]) -> Value {
        Value::Set(Set::from_values(values.iter().map(|&i| Value::Int(i))).unwrap())
    }

    /// A frozenset (value) of ints.
    fn frozen_of(values: &[i64]) -> Value {
        Value::FrozenSet(Set::from_values(values.iter().map(|&i| Value::Int(i))).unwrap())
    }

    /// A shared set of ints.
    fn shared(values: &[i64]) -> SetObject {
        new(vec![ints(values)]).unwrap()
    }

    /// The members, sorted, as Python ints would print.
    fn sorted(value: &Value) -> Vec<i64> {
        let (Value::Set(set) | Value::FrozenSet(set)) = value else { panic!("not a set: {}", value.py_repr()) };
        let mut out: Vec<i64> = set.iter().map(|m| m.as_index().expect("an int")).collect();
        out.sort_unstable();
        out
    }

    fn is_not_implemented(value: &Value) -> bool {
        matches!(value, Value::Object(o) if o.module == "builtins" && o.qualname == "NotImplemented")
    }

    #[track_caller]
    fn assert_key_error(result: Result<Value, WireError>, key: Value) {
        let error = result.unwrap_err();
        assert_eq!((error.code, error.message.clone()), (ErrorCode::KeyError, key.py_repr()));
        assert_py_eq(error.detail.as_ref().expect("a KeyError carries its key"), &key);
    }

    #[test]
    fn constructor_takes_any_iterable() {
        assert_eq!(new(vec![]).unwrap().repr(), "set()");
        assert_eq!(new(vec![ints(&[3, 1, 3])]).unwrap().repr(), "{3, 1}");
        assert_eq!(new(vec![s("aba")]).unwrap().repr(), "{'a', 'b'}");
        assert_eq!(new(vec![frozen_of(&[2])]).unwrap().repr(), "{2}");
        let dict = agora_proto::value::Dict::from_pairs([(s("k"), Value::None)]).unwrap();
        assert_eq!(new(vec![Value::Dict(dict)]).unwrap().repr(), "{'k'}", "a mapping gives its keys");
        assert_error(new(vec![Value::Int(5)]), ErrorCode::TypeError, "'int' object is not iterable");
        assert_error(new(vec![Value::List(vec![ints(&[])])]), ErrorCode::TypeError, "unhashable type: 'list'");
        assert_error(
            bind_kw(&CONSTRUCTOR, vec![], vec![("nope", Value::None)]),
            ErrorCode::TypeError,
            "set() got an unexpected keyword argument 'nope'",
        );
    }

    #[test]
    fn add_contains_len_and_copy() {
        let mut set = new(vec![]).unwrap();
        call(&mut set, "add", vec![Value::Int(1)]).unwrap();
        call(&mut set, "add", vec![Value::Float(1.0)]).unwrap();
        call(&mut set, "add", vec![Value::Tuple(vec![s("t")])]).unwrap();
        assert_eq!(set.repr(), "{1, ('t',)}", "1 and 1.0 are one member; the first stays");
        assert_py_eq(&call(&mut set, "__len__", vec![]).unwrap(), &Value::Int(2));
        assert_py_eq(&call(&mut set, "__contains__", vec![Value::Bool(true)]).unwrap(), &Value::Bool(true));
        assert_py_eq(&call(&mut set, "__contains__", vec![Value::Int(2)]).unwrap(), &Value::Bool(false));
        let copy = call(&mut set, "copy", vec![]).unwrap();
        call(&mut set, "clear", vec![]).unwrap();
        assert_eq!((set.repr(), copy.py_repr()), ("set()".to_owned(), "{1, ('t',)}".to_owned()));
        assert_eq!((set.kind(), set.size()), (Kind::Set, Some(0)));
    }

    #[test]
    fn unhashable_elements_are_type_errors_but_a_set_is_looked_up_as_a_frozenset() {
        let mut set = shared(&[1]);
        for method in ["add", "__contains__", "remove", "discard"] {
            assert_error(call(&mut set, method, vec![ints(&[1])]), ErrorCode::TypeError, "unhashable type: 'list'");
        }
        let in_tuple = Value::Tuple(vec![Value::Int(1), set_of(&[2])]);
        assert_error(call(&mut set, "__contains__", vec![in_tuple]), ErrorCode::TypeError, "unhashable type: 'set'");
        assert_error(call(&mut set, "add", vec![set_of(&[2])]), ErrorCode::TypeError, "unhashable type: 'set'");
        call(&mut set, "add", vec![frozen_of(&[2])]).unwrap();
        assert_py_eq(&call(&mut set, "__contains__", vec![set_of(&[2])]).unwrap(), &Value::Bool(true));
        assert_py_eq(&call(&mut set, "__contains__", vec![set_of(&[3])]).unwrap(), &Value::Bool(false));
        call(&mut set, "discard", vec![set_of(&[3])]).unwrap();
        assert_key_error(call(&mut set, "remove", vec![set_of(&[3])]), set_of(&[3]));
        call(&mut set, "remove", vec![set_of(&[2])]).unwrap();
        assert_eq!(set.repr(), "{1}");
    }

    #[test]
    fn remove_discard_and_pop() {
        let mut set = shared(&[1, 2]);
        call(&mut set, "remove", vec![Value::Float(2.0)]).unwrap();
        assert_key_error(call(&mut set, "remove", vec![Value::Int(2)]), Value::Int(2));
        assert_key_error(call(&mut set, "remove", vec![s("x")]), s("x"));
        call(&mut set, "discard", vec![Value::Int(2)]).unwrap();
        assert_py_eq(&call(&mut set, "pop", vec![]).unwrap(), &Value::Int(1));
        assert_key_error(call(&mut set, "pop", vec![]), s("pop from an empty set"));
        assert_eq!(set.repr(), "set()");
    }

    #[test]
    fn pop_takes_the_newest_member() {
        let mut set = shared(&[5, 6, 7]);
        call(&mut set, "remove", vec![Value::Int(7)]).unwrap();
        call(&mut set, "add", vec![Value::Int(1)]).unwrap();
        assert_py_eq(&call(&mut set, "pop", vec![]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut set, "pop", vec![]).unwrap(), &Value::Int(6));
    }

    #[test]
    fn operators_compute_with_sets_and_frozensets() {
        let mut set = shared(&[1, 2, 3]);
        let op = |set: &mut SetObject, method: &str, other: Value| call(set, method, vec![other]).unwrap();
        assert_eq!(sorted(&op(&mut set, "__and__", set_of(&[2, 3, 4]))), [2, 3]);
        assert_eq!(sorted(&op(&mut set, "__or__", set_of(&[4]))), [1, 2, 3, 4]);
        assert_eq!(sorted(&op(&mut set, "__sub__", set_of(&[1, 9]))), [2, 3]);
        assert_eq!(sorted(&op(&mut set, "__rsub__", set_of(&[1, 9]))), [9]);
        assert_eq!(sorted(&op(&mut set, "__xor__", set_of(&[3, 4]))), [1, 2, 4]);
        assert_eq!(sorted(&op(&mut set, "__rxor__", set_of(&[3, 4]))), [1, 2, 4]);
        assert_eq!(sorted(&op(&mut set, "__rand__", frozen_of(&[1]))), [1]);
        assert_eq!(sorted(&op(&mut set, "__ror__", frozen_of(&[]))), [1, 2, 3]);
        // A result has the type of its left operand: a reflected frozenset's.
        assert_eq!(op(&mut set, "__and__", frozen_of(&[1])).type_name(), "set");
        for method in ["__rand__", "__ror__", "__rsub__", "__rxor__"] {
            assert_eq!(op(&mut set, method, frozen_of(&[1])).type_name(), "frozenset", "{method}");
            assert_eq!(op(&mut set, method, set_of(&[1])).type_name(), "set", "{method}");
        }
        assert_eq!(set.repr(), "{1, 2, 3}", "operators change nothing");
    }

    #[test]
    fn operators_answer_not_implemented_to_anything_but_a_set() {
        let mut set = shared(&[1]);
        let methods = [
            "__and__", "__rand__", "__or__", "__ror__", "__sub__", "__rsub__", "__xor__", "__rxor__", "__lt__",
            "__le__", "__gt__", "__ge__", "__iand__", "__ior__", "__isub__", "__ixor__",
        ];
        for method in methods {
            for other in [ints(&[1]), Value::Int(1), Value::None, s("1")] {
                assert!(is_not_implemented(&call(&mut set, method, vec![other]).unwrap()), "{method}");
            }
        }
        assert_eq!(set.repr(), "{1}");
    }

    /// Which of two equal members a result keeps, as CPython: `{1} & {1.0}` is `{1.0}`
    /// (the walk goes through the smaller set, through the right one on a tie).
    #[test]
    fn equal_members_survive_as_cpython_chooses() {
        let one_float = Value::Set(Set::from_values([Value::Float(1.0)]).unwrap());
        let float_and_two = Value::Set(Set::from_values([Value::Float(1.0), Value::Int(2)]).unwrap());
        let op = |set: &mut SetObject, method: &str, other: &Value| call(set, method, vec![other.clone()]).unwrap();
        let mut one = shared(&[1]);
        assert_eq!(op(&mut one, "__and__", &one_float).py_repr(), "{1.0}");
        assert_eq!(op(&mut one, "__rand__", &one_float).py_repr(), "{1}");
        assert_eq!(op(&mut one, "__and__", &float_and_two).py_repr(), "{1}", "the smaller set's member");
        assert_eq!(op(&mut one, "__or__", &one_float).py_repr(), "{1}", "the left operand's member");
        assert_eq!(op(&mut one, "__ror__", &one_float).py_repr(), "{1.0}");
        let mut one_two = shared(&[1, 2]);
        assert_eq!(op(&mut one_two, "__and__", &one_float).py_repr(), "{1.0}");
        call(&mut one, "__iand__", vec![one_float.clone()]).unwrap();
        assert_eq!(one.repr(), "{1.0}");
        call(&mut one, "__ior__", vec![set_of(&[1])]).unwrap();
        assert_eq!(one.repr(), "{1.0}", "an existing member stays");
        let items = Value::List(vec![Value::Bool(true), Value::Int(1)]);
        assert_eq!(call(&mut one_two, "intersection", vec![items]).unwrap().py_repr(), "{True}");
    }

    #[test]
    fn comparisons_are_subset_tests() {
        let mut set = shared(&[1, 2]);
        let cmp = |set: &mut SetObject, method: &str, other: Value| call(set, method, vec![other]).unwrap().is_truthy();
        assert!(cmp(&mut set, "__le__", set_of(&[1, 2])) && !cmp(&mut set, "__lt__", set_of(&[1, 2])));
        assert!(cmp(&mut set, "__lt__", frozen_of(&[1, 2, 3])));
        assert!(cmp(&mut set, "__ge__", set_of(&[1, 2])) && !cmp(&mut set, "__gt__", set_of(&[1, 2])));
        assert!(cmp(&mut set, "__gt__", set_of(&[2])));
        assert!(!cmp(&mut set, "__le__", set_of(&[1, 3])) && !cmp(&mut set, "__ge__", set_of(&[1, 3])));
    }

    #[test]
    fn in_place_operators_change_the_set_and_return_it() {
        let mut set = shared(&[1, 2, 3]);
        assert_eq!(sorted(&call(&mut set, "__ior__", vec![set_of(&[4])]).unwrap()), [1, 2, 3, 4]);
        assert_eq!(sorted(&call(&mut set, "__iand__", vec![frozen_of(&[1, 2, 4, 8])]).unwrap()), [1, 2, 4]);
        assert_eq!(sorted(&call(&mut set, "__isub__", vec![set_of(&[2, 9])]).unwrap()), [1, 4]);
        assert_eq!(sorted(&call(&mut set, "__ixor__", vec![set_of(&[4, 5])]).unwrap()), [1, 5]);
        assert_eq!(sorted(&set.snapshot()), [1, 5]);
    }

    #[test]
    fn named_methods_take_any_number_of_iterables() {
        let mut set = shared(&[1, 2, 3]);
        let union = call(&mut set, "union", vec![ints(&[4]), Value::Tuple(vec![Value::Int(5)]), set_of(&[6])]);
        assert_eq!(sorted(&union.unwrap()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(sorted(&call(&mut set, "union", vec![]).unwrap()), [1, 2, 3], "no others: a copy");
        let common = call(&mut set, "intersection", vec![ints(&[1, 2, 7]), frozen_of(&[2, 3])]).unwrap();
        assert_eq!(sorted(&common), [2]);
        assert_eq!(sorted(&call(&mut set, "intersection", vec![]).unwrap()), [1, 2, 3]);
        assert_eq!(sorted(&call(&mut set, "difference", vec![ints(&[1]), set_of(&[3])]).unwrap()), [2]);
        assert_eq!(sorted(&call(&mut set, "symmetric_difference", vec![ints(&[3, 4, 4])]).unwrap()), [1, 2, 4]);
        assert_eq!(set.repr(), "{1, 2, 3}", "read-only methods change nothing");

        call(&mut set, "update", vec![ints(&[4]), s("")]).unwrap();
        call(&mut set, "difference_update", vec![ints(&[1]), ints(&[2])]).unwrap();
        assert_eq!(sorted(&set.snapshot()), [3, 4]);
        call(&mut set, "intersection_update", vec![ints(&[3, 4, 5]), set_of(&[4])]).unwrap();
        assert_eq!(sorted(&set.snapshot()), [4]);
        call(&mut set, "symmetric_difference_update", vec![ints(&[4, 7, 7])]).unwrap();
        assert_eq!(sorted(&set.snapshot()), [7]);
        assert_error(
            call(&mut set, "union", vec![ints(&[1]), Value::Int(3)]),
            ErrorCode::TypeError,
            "'int' object is not iterable",
        );
        assert_error(
            call_kw(&mut set, "update", vec![], vec![("other", ints(&[1]))]),
            ErrorCode::TypeError,
            "update() got an unexpected keyword argument 'other'",
        );
    }

    #[test]
    fn bad_elements_fail_like_cpython_partway_or_not_at_all() {
        let bad = || Value::List(vec![Value::Int(8), ints(&[]), Value::Int(9)]);
        let mut set = shared(&[1, 8]);
        // update and difference_update apply what came before the bad element...
        assert_error(
            call(&mut set, "update", vec![ints(&[2]), bad()]),
            ErrorCode::TypeError,
            "unhashable type: 'list'",
        );
        assert_eq!(sorted(&set.snapshot()), [1, 2, 8]);
        assert!(call(&mut set, "difference_update", vec![bad()]).is_err());
        assert_eq!(sorted(&set.snapshot()), [1, 2]);
        // ...intersection_update and symmetric_difference_update build their operand first.
        assert!(call(&mut set, "intersection_update", vec![ints(&[1]), bad()]).is_err());
        assert!(call(&mut set, "symmetric_difference_update", vec![bad()]).is_err());
        assert_eq!(sorted(&set.snapshot()), [1, 2]);
        for method in ["union", "intersection", "difference", "symmetric_difference", "issubset"] {
            assert_error(call(&mut set, method, vec![bad()]), ErrorCode::TypeError, "unhashable type: 'list'");
        }
    }

    #[test]
    fn subset_superset_and_disjoint_tests() {
        let mut set = shared(&[1, 2]);
        let test =
            |set: &mut SetObject, method: &str, other: Value| call(set, method, vec![other]).unwrap().is_truthy();
        assert!(test(&mut set, "issubset", ints(&[1, 2, 3])) && !test(&mut set, "issubset", ints(&[1])));
        assert!(!test(&mut set, "issubset", s("")), "not a subset of the empty set");
        assert!(test(&mut set, "issuperset", ints(&[1, 1])) && !test(&mut set, "issuperset", set_of(&[3])));
        assert!(test(&mut set, "issuperset", frozen_of(&[2])));
        assert!(test(&mut set, "isdisjoint", ints(&[3, 4])) && !test(&mut set, "isdisjoint", set_of(&[2, 5])));
        assert!(test(&mut set, "isdisjoint", Value::Tuple(vec![])));
        // Both stop at the first element that decides, as CPython 3.14 does.
        let decided_early = Value::List(vec![Value::Int(2), ints(&[])]);
        assert!(!test(&mut set, "isdisjoint", decided_early));
        let missing_first = Value::List(vec![Value::Int(9), ints(&[])]);
        assert!(!test(&mut set, "issuperset", missing_first));
        assert_error(
            call(&mut set, "issuperset", vec![Value::List(vec![ints(&[])])]),
            ErrorCode::TypeError,
            "unhashable type: 'list'",
        );
        assert_error(
            call(&mut set, "isdisjoint", vec![Value::None]),
            ErrorCode::TypeError,
            "'NoneType' object is not iterable",
        );
    }

    #[test]
    fn iteration_sends_an_iterator_over_a_copy() {
        let mut set = shared(&[3, 1]);
        let Value::Object(it) = call(&mut set, "__iter__", vec![]).unwrap() else { panic!("not an object") };
        assert_eq!((it.module.as_str(), it.qualname.as_str()), ("builtins", "iter"));
        let Build::Reduce(args) = &it.build else { panic!("not a call") };
        assert_eq!(Value::Tuple(args.clone()).py_repr(), "([3, 1],)");
    }

    #[test]
    fn class_getitem_is_a_generic_alias() {
        let mut set = shared(&[]);
        let int = builtin("int");
        let alias = call(&mut set, "__class_getitem__", vec![int.clone()]).unwrap();
        let expected = Value::reduce("types", "GenericAlias", vec![builtin("set"), Value::Tuple(vec![int.clone()])]);
        assert_py_eq(&alias, &expected);
        let pair = Value::Tuple(vec![int.clone(), builtin("str")]);
        let alias = call(&mut set, "__class_getitem__", vec![pair.clone()]).unwrap();
        assert_py_eq(&alias, &Value::reduce("types", "GenericAlias", vec![builtin("set"), pair]));
    }

    #[test]
    fn the_hand_written_state_is_byte_for_byte_serde_s_and_a_big_set_is_captured() {
        for len in [0usize, 1, 15, 16, 300, 70_000] {
            let mut object = SetObject::default();
            for i in 0..len {
                let member = match i % 3 {
                    0 => Value::Int(i as i64),
                    1 => s(&format!("member:{i}")),
                    _ => Value::Tuple(vec![Value::Int(i as i64), Value::None]),
                };
                object.set.insert(member).unwrap();
            }
            assert_eq!(object.state(), encode_state(&object), "{len} members");
        }
        let mut big = SetObject::default();
        for i in 0..CAPTURE_FROM as i64 + 100 {
            big.set.insert(Value::Int(i)).unwrap();
        }
        let before = big.state();
        let StateCapture::Started(mut out) = big.begin_state() else { panic!("a big set is captured") };
        let mut step = 0;
        while !big.state_next(&mut out, 500) {
            step += 1;
            call(&mut big, "discard", vec![Value::Int(step * 11)]).unwrap();
            call(&mut big, "add", vec![Value::Int(-step)]).unwrap();
            call(&mut big, "pop", vec![]).unwrap();
        }
        assert_eq!(out, before, "the state as it was when the capture began");
        assert!(matches!(shared(&[1]).begin_state(), StateCapture::Encoded(b) if b == shared(&[1]).state()));
    }

    #[test]
    fn state_is_canonical_and_round_trips() {
        let mut set = shared(&[1, 2]);
        assert_eq!(set.state(), shared(&[1, 2]).state());
        call(&mut set, "add", vec![Value::Float(2.0)]).unwrap();
        assert_eq!(set.state(), shared(&[1, 2]).state(), "adding an equal member changes nothing");
        assert_ne!(shared(&[2, 1]).state(), set.state(), "insertion order is part of the state");
        call(&mut set, "add", vec![Value::Tuple(vec![s("x"), Value::None])]).unwrap();
        call(&mut set, "add", vec![frozen_of(&[7])]).unwrap();
        let back: SetObject = rmp_serde::from_slice(&set.state()).unwrap();
        assert_eq!(back.repr(), "{1, 2, ('x', None), frozenset({7})}");
        assert_eq!(back.state(), set.state());
        assert_py_eq(&call(&mut back.clone(), "__contains__", vec![set_of(&[7])]).unwrap(), &Value::Bool(true));
    }

    #[test]
    fn reads_are_read_only_and_what_adds_members_stores() {
        let spec = |name: &str| *METHODS.iter().find(|m| m.name == name).unwrap();
        let reads = [
            "__and__",
            "__class_getitem__",
            "__contains__",
            "__iter__",
            "__len__",
            "__or__",
            "__rand__",
            "__ror__",
            "__rsub__",
            "__rxor__",
            "__sub__",
            "__xor__",
            "__ge__",
            "__gt__",
            "__le__",
            "__lt__",
            "copy",
            "difference",
            "intersection",
            "isdisjoint",
            "issubset",
            "issuperset",
            "symmetric_difference",
            "union",
        ];
        for name in reads {
            assert!(spec(name).read_only && !spec(name).stores, "{name}");
        }
        for name in ["add", "update", "__ior__", "__ixor__", "symmetric_difference_update"] {
            assert!(spec(name).stores && spec(name).grows && !spec(name).read_only, "{name}");
        }
        let shrinking =
            ["__iand__", "__isub__", "clear", "difference_update", "discard", "intersection_update", "pop", "remove"];
        for name in shrinking {
            assert!(!spec(name).read_only && !spec(name).grows, "{name}");
        }
        assert_eq!(reads.len() + 5 + shrinking.len(), METHODS.len(), "every method is classified");
        assert!(METHODS.iter().all(|m| m.python), "every method is in 3.14's exposed list");
    }
}
