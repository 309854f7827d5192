//! The shared `list` (Python's `SyncManager.list()`): Python's list semantics and error
//! texts, with indexing and slicing from `sequence`.
//!
//! `sort` cannot take a `key=` (agora never runs client code); everything else is
//! CPython's `list`, including the 3.14 additions `clear` and `copy`.
//!
//! A snapshot captures a big list ([`SharedObject::begin_state`]) and reads it out
//! while it changes: appends go past the captured positions and a single item set
//! keeps the old item; any other change (which may move items) first copies what is
//! still to be read.

use agora_proto::native::Kind;
use agora_proto::reclaim;
use agora_proto::value::sort_values;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::sequence::{self, Capture, Selection, Subscript, Wording, INDEX_OVERFLOW, SSIZE_OVERFLOW};
use crate::engine::Ctx;
use crate::object::{encode_state, sequence_state_header, Args, MethodSpec, Outcome, SharedObject, StateCapture};

/// The kind's constructor and methods, declared in [`agora_proto::methods::list`].
pub use agora_proto::methods::list::CONSTRUCTOR;
use agora_proto::methods::list::METHODS;

/// How `list` words its index errors.
const WORDING: Wording = Wording {
    bad_subscript: |type_name| format!("list indices must be integers or slices, not {type_name}"),
    read_out_of_range: "list index out of range",
    write_out_of_range: "list assignment index out of range",
    assigned: "sequence",
};

/// A shared list.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ListObject {
    items: Vec<Value>,
    /// A snapshot's capture being read out, if any (not state).
    #[serde(skip)]
    capture: Option<Box<Capture<Value>>>,
}

/// A copy is a new list: a capture running on the original is not copied.
impl Clone for ListObject {
    fn clone(&self) -> Self {
        ListObject { items: self.items.clone(), capture: None }
    }
}

impl ListObject {
    /// `list(iterable=())`: any iterable agora can walk (list, tuple, set, dict, str, bytes, range…).
    pub fn new(mut args: Args) -> Result<ListObject, WireError> {
        let items = args.take(0).map_or(Ok(Vec::new()), sequence::into_items)?;
        Ok(ListObject { items, capture: None })
    }

    /// Before a change to the item at `at`: a capture that has still to read it keeps
    /// the old item.
    fn preserve(&mut self, at: usize) {
        if let Some(c) = self.capture.as_deref_mut() {
            c.preserve(&self.items, at);
        }
    }

    /// Before a change that may move items: a capture copies what it has still to read.
    fn copy_unread(&mut self) {
        if let Some(c) = self.capture.as_deref_mut() {
            c.copy_unread(&self.items);
        }
    }

    /// Runs one method; mutators return `None`.
    fn dispatch(&mut self, method: &str, mut args: Args) -> Result<Value, WireError> {
        let none = |()| Value::None;
        match method {
            "__add__" => self.concatenated(args.required(0)),
            "__contains__" => {
                let value = args.required(0);
                Ok(Value::Bool(self.items.iter().any(|item| item.py_eq(&value))))
            }
            "__delitem__" => sequence::delete(&mut self.items, &args.required(0), &WORDING).map(none),
            "__getitem__" => self.get(&args.required(0)),
            "__len__" => Ok(Value::Int(self.items.len() as i64)),
            "__mul__" | "__rmul__" => Ok(Value::List(repeated(&self.items, &args.required(0))?)),
            "__imul__" => self.repeat_in_place(&args.required(0)),
            "__reversed__" => Ok(Value::List(self.items.iter().rev().cloned().collect())),
            "__setitem__" => self.set(&args.required(0), args.required(1)).map(none),
            "append" => {
                self.items.push(args.required(0));
                Ok(Value::None)
            }
            "count" => Ok(Value::Int(self.count(&args.required(0)))),
            "extend" => {
                self.items.extend(sequence::into_items(args.required(0))?);
                Ok(Value::None)
            }
            "index" => self.index(&args.required(0), args.get(1), args.get(2)),
            "insert" => self.insert(&args.required(0), args.required(1)).map(none),
            "pop" => self.pop(args.get(0)),
            "remove" => self.remove(&args.required(0)).map(none),
            "reverse" => {
                self.items.reverse();
                Ok(Value::None)
            }
            "sort" => self.sort(args.get(0), args.get(1)).map(none),
            "clear" => {
                // A big list's items are freed off this thread (see `reclaim`).
                if self.items.len() >= reclaim::RECLAIM_FROM {
                    reclaim::drop_later(std::mem::take(&mut self.items));
                }
                self.items.clear();
                Ok(Value::None)
            }
            "copy" => Ok(Value::List(self.items.clone())),
            other => Err(WireError::new(ErrorCode::Internal, format!("list has no method '{other}'"))),
        }
    }

    /// `self[key]`: an item, or a plain list for a slice.
    fn get(&self, key: &Value) -> Result<Value, WireError> {
        Ok(match sequence::get(&self.items, key, &WORDING)? {
            Selection::One(item) => item,
            Selection::Many(items) => Value::List(items),
        })
    }

    /// `self[key] = value`: a slice takes any iterable.
    fn set(&mut self, key: &Value, value: Value) -> Result<(), WireError> {
        match Subscript::parse(key, &WORDING)? {
            Subscript::Index(index) => {
                let at = sequence::position(index, self.items.len(), WORDING.write_out_of_range)?;
                self.preserve(at);
                self.items[at] = value;
                Ok(())
            }
            Subscript::Slice(slice) => {
                let not_iterable = if slice.is_contiguous() {
                    "can only assign an iterable"
                } else {
                    "must assign iterable to extended slice"
                };
                let values = sequence::into_items_or(value, |_| WireError::type_error(not_iterable))?;
                self.copy_unread();
                sequence::assign_slice(&mut self.items, &slice, values, &WORDING)
            }
        }
    }

    /// `self + other`, for a list `other` only.
    fn concatenated(&self, other: Value) -> Result<Value, WireError> {
        let Value::List(other) = other else {
            return Err(WireError::type_error(format!(
                "can only concatenate list (not \"{}\") to list",
                other.type_name()
            )));
        };
        Ok(Value::List(self.items.iter().cloned().chain(other).collect()))
    }

    /// `self *= n`, returning the list (which CPython's server sends back too).
    fn repeat_in_place(&mut self, times: &Value) -> Result<Value, WireError> {
        self.items = repeated(&self.items, times)?;
        Ok(Value::List(self.items.clone()))
    }

    /// How many items equal `value`.
    fn count(&self, value: &Value) -> i64 {
        self.items.iter().filter(|item| item.py_eq(value)).count() as i64
    }

    /// `index(value, start=0, stop=sys.maxsize)`.
    fn index(&self, value: &Value, start: Option<&Value>, stop: Option<&Value>) -> Result<Value, WireError> {
        let len = self.items.len();
        let clamp = |bound: i64| -> usize {
            let bound = if bound < 0 { bound.saturating_add(len as i64).max(0) } else { bound };
            (bound as usize).min(len)
        };
        let start = clamp(sequence::search_bound(start, 0)?);
        let stop = clamp(sequence::search_bound(stop, i64::MAX)?).max(start);
        self.items[start..stop]
            .iter()
            .position(|item| item.py_eq(value))
            .map(|found| Value::Int((start + found) as i64))
            .ok_or_else(|| WireError::value_error(format!("{} is not in list", value.py_repr())))
    }

    /// `insert(index, object)`, clamping the index to the list like Python.
    fn insert(&mut self, index: &Value, object: Value) -> Result<(), WireError> {
        let len = self.items.len() as i64;
        let index = sequence::int_arg(index, SSIZE_OVERFLOW)?;
        let at = if index < 0 { (index + len).max(0) } else { index.min(len) };
        self.items.insert(at as usize, object);
        Ok(())
    }

    /// `pop(index=-1)`.
    fn pop(&mut self, index: Option<&Value>) -> Result<Value, WireError> {
        let index = index.map_or(Ok(-1), |i| sequence::int_arg(i, SSIZE_OVERFLOW))?;
        if self.items.is_empty() {
            return Err(WireError::index_error("pop from empty list"));
        }
        let at = sequence::position(index, self.items.len(), "pop index out of range")?;
        Ok(self.items.remove(at))
    }

    /// `remove(value)`: the first equal item.
    fn remove(&mut self, value: &Value) -> Result<(), WireError> {
        let at = self.items.iter().position(|item| item.py_eq(value));
        let at = at.ok_or_else(|| WireError::value_error("list.remove(x): x not in list"))?;
        self.items.remove(at);
        Ok(())
    }

    /// `sort(key=None, reverse=False)`; a key would be client code, so it is refused.
    fn sort(&mut self, key: Option<&Value>, reverse: Option<&Value>) -> Result<(), WireError> {
        if key.is_some_and(|key| !matches!(key, Value::None)) {
            return Err(WireError::type_error("sort(key=...) is not supported: agora cannot run client code"));
        }
        // CPython 3.8–3.12 take `reverse` as a C int.
        let reverse = reverse.map_or(Ok(0), |r| sequence::int_arg(r, "Python int too large to convert to C int"))?;
        sort_values(&mut self.items, reverse != 0)
    }
}

/// `items * times` (`__mul__`, `__rmul__`, `__imul__`): empty for a count below 1.
fn repeated(items: &[Value], times: &Value) -> Result<Vec<Value>, WireError> {
    let times = sequence::int_arg(times, INDEX_OVERFLOW)?.max(0) as u128;
    let total = sequence::check_size(items.len() as u128 * times)?;
    Ok(items.iter().cycle().take(total).cloned().collect())
}

impl SharedObject for ListObject {
    fn kind(&self) -> Kind {
        Kind::List
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        if self.capture.is_some() {
            match method {
                // Reads; appends, past the captured positions; an item set, which keeps
                // the old item itself (a slice set copies).
                "__add__" | "__contains__" | "__getitem__" | "__len__" | "__mul__" | "__rmul__" | "__reversed__"
                | "count" | "index" | "copy" | "append" | "extend" | "__setitem__" => {}
                _ => self.copy_unread(),
            }
        }
        self.dispatch(method, args).map(Outcome::from)
    }

    fn snapshot(&self) -> Value {
        Value::List(self.items.clone())
    }

    fn state(&self) -> Vec<u8> {
        // The bytes `encode_state(self)` writes (a test holds them equal), written by
        // hand so that a big list can be read out in steps.
        let Some(mut out) = sequence_state_header(&[], "items", self.items.len()) else {
            return encode_state(self);
        };
        self.items.iter().for_each(|item| item.write_msgpack(&mut out));
        out
    }

    fn begin_state(&mut self) -> StateCapture {
        let header = sequence::begin_capture(&mut self.capture, &[], "items", self.items.len());
        StateCapture::started_or(header, || self.state())
    }

    fn state_next(&mut self, out: &mut Vec<u8>, positions: usize) -> bool {
        sequence::state_next(&mut self.capture, &self.items, positions, |item| item.write_msgpack(out))
    }

    fn end_state(&mut self) {
        self.capture = None;
    }

    fn repr(&self) -> String {
        self.snapshot().py_repr()
    }

    fn size(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::sequence::testing::{assert_error, assert_py_eq, bind_kw, call, call_kw, ints, s};
    use agora_proto::slice::Slice;
    use agora_proto::value::BigInt;

    fn list(values: &[i64]) -> ListObject {
        ListObject::new(Args::from_values("list", vec![ints(values)])).unwrap()
    }

    fn slice(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Value {
        Slice { start, stop, step }.to_value()
    }

    #[test]
    fn the_hand_written_state_is_byte_for_byte_serde_s() {
        for n in [0usize, 1, 15, 16, 300, 70_000] {
            let mut l = list(&[]);
            for i in 0..n {
                let item = match i % 3 {
                    0 => Value::Int(i as i64),
                    1 => s(&format!("item {i}")),
                    _ => Value::List(vec![Value::None; i % 5]),
                };
                l.items.push(item);
            }
            assert_eq!(l.state(), encode_state(&l), "{n} items");
        }
    }

    /// A change between the steps of a capture: the method and its arguments.
    fn change() -> impl proptest::strategy::Strategy<Value = (&'static str, Vec<Value>)> {
        use proptest::prelude::*;
        let i = || (-30i64..5000).prop_map(Value::Int);
        prop_oneof![
            4 => i().prop_map(|v| ("append", vec![v])),
            1 => i().prop_map(|v| ("extend", vec![Value::List(vec![v.clone(), v])])),
            4 => (i(), i()).prop_map(|(at, v)| ("__setitem__", vec![at, v])),
            1 => (0i64..50, 50i64..100).prop_map(|(a, b)| ("__setitem__", vec![slice(Some(a), Some(b), None), ints(&[7, 8])])),
            2 => Just(("pop", vec![])),
            1 => i().prop_map(|at| ("pop", vec![at])),
            1 => (i(), i()).prop_map(|(at, v)| ("insert", vec![at, v])),
            1 => i().prop_map(|at| ("__delitem__", vec![at])),
            1 => Just(("reverse", vec![])),
            1 => Just(("sort", vec![])),
            1 => Just(("clear", vec![])),
            1 => Just(("__imul__", vec![Value::Int(2)])),
        ]
    }

    proptest::proptest! {
        /// A big list's captured state is its state when the capture began, whatever
        /// changes run between the steps, and the list behaves as a copy that was
        /// never captured.
        #[test]
        fn a_captured_list_reads_out_as_it_was(
            extra in 0usize..100,
            changes in proptest::collection::vec((change(), 0usize..3000), 0..60),
        ) {
            let n = crate::object::CAPTURE_FROM + extra;
            let mut l = list(&(0..n as i64).collect::<Vec<_>>());
            let mut twin = l.clone();
            let before = l.state();
            let StateCapture::Started(mut out) = l.begin_state() else { panic!("a big list is captured") };
            let mut done = false;
            for ((method, args), step) in &changes {
                let got = call(&mut l, method, args.clone()).map(|v| v.py_repr());
                let want = call(&mut twin, method, args.clone()).map(|v| v.py_repr());
                proptest::prop_assert_eq!(got.map_err(|e| e.message), want.map_err(|e| e.message));
                if !done {
                    done = l.state_next(&mut out, *step);
                }
            }
            if !done {
                proptest::prop_assert!(l.state_next(&mut out, usize::MAX));
            }
            proptest::prop_assert!(l.capture.is_none());
            proptest::prop_assert_eq!(&out, &before);
            proptest::prop_assert_eq!(l.state(), twin.state());
        }
    }

    fn big() -> Value {
        Value::BigInt(Box::new(BigInt::from(2).pow(70)))
    }

    #[track_caller]
    fn assert_items(l: &ListObject, expected: &[i64]) {
        assert_py_eq(&l.snapshot(), &ints(expected));
    }

    #[test]
    fn constructor_takes_any_iterable() {
        let from = |v: Value| ListObject::new(bind_kw(&CONSTRUCTOR, vec![v], vec![]).unwrap());
        assert_eq!(from(s("ab")).unwrap().repr(), "['a', 'b']");
        assert_eq!(from(Value::Tuple(vec![Value::Int(1)])).unwrap().repr(), "[1]");
        assert_eq!(ListObject::new(bind_kw(&CONSTRUCTOR, vec![], vec![]).unwrap()).unwrap().repr(), "[]");
        assert_error(from(Value::Int(5)), ErrorCode::TypeError, "'int' object is not iterable");
    }

    #[test]
    fn getitem_reads_items_and_slices() {
        let mut l = list(&[1, 2, 3]);
        assert_py_eq(&call(&mut l, "__getitem__", vec![Value::Int(-1)]).unwrap(), &Value::Int(3));
        assert_py_eq(&call(&mut l, "__getitem__", vec![Value::Bool(true)]).unwrap(), &Value::Int(2));
        let sliced = call(&mut l, "__getitem__", vec![slice(None, None, Some(-1))]).unwrap();
        assert_py_eq(&sliced, &ints(&[3, 2, 1]));
    }

    #[test]
    fn getitem_errors_match_cpython() {
        let mut l = list(&[1, 2, 3]);
        assert_error(
            call(&mut l, "__getitem__", vec![Value::Int(3)]),
            ErrorCode::IndexError,
            "list index out of range",
        );
        assert_error(
            call(&mut l, "__getitem__", vec![Value::Int(-4)]),
            ErrorCode::IndexError,
            "list index out of range",
        );
        assert_error(
            call(&mut l, "__getitem__", vec![s("x")]),
            ErrorCode::TypeError,
            "list indices must be integers or slices, not str",
        );
        assert_error(call(&mut l, "__getitem__", vec![big()]), ErrorCode::IndexError, INDEX_OVERFLOW);
        assert_error(
            call(&mut l, "__getitem__", vec![slice(None, None, Some(0))]),
            ErrorCode::ValueError,
            "slice step cannot be zero",
        );
    }

    #[test]
    fn setitem_sets_items_and_slices() {
        let mut l = list(&[1, 2, 3]);
        call(&mut l, "__setitem__", vec![Value::Int(-1), Value::Int(9)]).unwrap();
        assert_items(&l, &[1, 2, 9]);
        call(&mut l, "__setitem__", vec![slice(Some(0), Some(1), None), ints(&[7, 8])]).unwrap();
        assert_items(&l, &[7, 8, 2, 9]);
        call(&mut l, "__setitem__", vec![slice(None, None, Some(2)), Value::Tuple(vec![Value::Int(0), Value::Int(0)])])
            .unwrap();
        assert_items(&l, &[0, 8, 0, 9]);
    }

    #[test]
    fn setitem_errors_match_cpython() {
        let mut l = list(&[1, 2, 3]);
        let set = |l: &mut ListObject, key: Value, value: Value| call(l, "__setitem__", vec![key, value]);
        assert_error(
            set(&mut l, Value::Int(5), Value::Int(0)),
            ErrorCode::IndexError,
            "list assignment index out of range",
        );
        assert_error(
            set(&mut l, s("x"), Value::Int(0)),
            ErrorCode::TypeError,
            "list indices must be integers or slices, not str",
        );
        assert_error(
            set(&mut l, slice(Some(0), Some(3), Some(2)), ints(&[1])),
            ErrorCode::ValueError,
            "attempt to assign sequence of size 1 to extended slice of size 2",
        );
        assert_error(
            set(&mut l, slice(Some(0), Some(3), Some(2)), Value::Int(5)),
            ErrorCode::TypeError,
            "must assign iterable to extended slice",
        );
        assert_error(
            set(&mut l, slice(Some(0), Some(3), None), Value::Int(5)),
            ErrorCode::TypeError,
            "can only assign an iterable",
        );
        assert_items(&l, &[1, 2, 3]);
    }

    #[test]
    fn delitem_removes_items_and_slices() {
        let mut l = list(&[1, 2, 3, 4]);
        call(&mut l, "__delitem__", vec![Value::Int(0)]).unwrap();
        call(&mut l, "__delitem__", vec![slice(None, None, Some(-2))]).unwrap();
        assert_items(&l, &[3]);
        assert_error(
            call(&mut l, "__delitem__", vec![Value::Int(5)]),
            ErrorCode::IndexError,
            "list assignment index out of range",
        );
        assert_error(
            call(&mut l, "__delitem__", vec![s("x")]),
            ErrorCode::TypeError,
            "list indices must be integers or slices, not str",
        );
    }

    #[test]
    fn add_takes_lists_only() {
        let mut l = list(&[1]);
        assert_py_eq(&call(&mut l, "__add__", vec![ints(&[2])]).unwrap(), &ints(&[1, 2]));
        assert_error(
            call(&mut l, "__add__", vec![Value::Tuple(vec![])]),
            ErrorCode::TypeError,
            "can only concatenate list (not \"tuple\") to list",
        );
        assert_items(&l, &[1]);
    }

    #[test]
    fn multiplication_repeats() {
        let mut l = list(&[1, 2]);
        assert_py_eq(&call(&mut l, "__mul__", vec![Value::Int(2)]).unwrap(), &ints(&[1, 2, 1, 2]));
        assert_py_eq(&call(&mut l, "__rmul__", vec![Value::Int(-1)]).unwrap(), &ints(&[]));
        assert_py_eq(&call(&mut l, "__imul__", vec![Value::Bool(true)]).unwrap(), &ints(&[1, 2]));
        call(&mut l, "__imul__", vec![Value::Int(2)]).unwrap();
        assert_items(&l, &[1, 2, 1, 2]);
    }

    /// CPython's server calls `list.__mul__(x)` directly, which words its error like
    /// `operator.index`, not like the `*` operator.
    #[test]
    fn multiplication_errors_match_cpython() {
        let mut l = list(&[1]);
        for method in ["__mul__", "__rmul__", "__imul__"] {
            assert_error(
                call(&mut l, method, vec![s("x")]),
                ErrorCode::TypeError,
                "'str' object cannot be interpreted as an integer",
            );
            assert_error(call(&mut l, method, vec![big()]), ErrorCode::OverflowError, INDEX_OVERFLOW);
        }
        let error = call(&mut l, "__mul__", vec![Value::Int(i64::MAX)]).unwrap_err();
        assert_eq!(error.code, ErrorCode::LimitExceeded);
        assert_items(&l, &[1]);
    }

    #[test]
    fn search_methods() {
        let mut l = ListObject::new(Args::from_values(
            "list",
            vec![Value::List(vec![Value::Int(1), s("x"), Value::Float(1.0)])],
        ))
        .unwrap();
        assert_py_eq(&call(&mut l, "__contains__", vec![Value::Bool(true)]).unwrap(), &Value::Bool(true));
        assert_py_eq(&call(&mut l, "count", vec![Value::Int(1)]).unwrap(), &Value::Int(2));
        assert_py_eq(&call(&mut l, "index", vec![s("x")]).unwrap(), &Value::Int(1));
        assert_py_eq(&call(&mut l, "index", vec![Value::Int(1), Value::Int(1)]).unwrap(), &Value::Int(2));
        assert_py_eq(&call(&mut l, "index", vec![Value::Int(1), Value::Int(-1), big()]).unwrap(), &Value::Int(2));
    }

    #[test]
    fn index_errors_match_cpython() {
        let mut l = list(&[1, 2, 3]);
        assert_error(call(&mut l, "index", vec![Value::Int(5)]), ErrorCode::ValueError, "5 is not in list");
        assert_error(call(&mut l, "index", vec![s("x")]), ErrorCode::ValueError, "'x' is not in list");
        assert_error(
            call(&mut l, "index", vec![Value::Int(3), Value::Int(0), Value::Int(2)]),
            ErrorCode::ValueError,
            "3 is not in list",
        );
        assert_error(
            call(&mut l, "index", vec![Value::Int(3), Value::None]),
            ErrorCode::TypeError,
            "slice indices must be integers or have an __index__ method",
        );
        assert_error(
            call(&mut l, "index", vec![Value::Int(1), Value::Int(2), Value::Int(1)]),
            ErrorCode::ValueError,
            "1 is not in list",
        );
    }

    #[test]
    fn insert_clamps_like_python() {
        let mut l = list(&[1, 2]);
        call(&mut l, "insert", vec![Value::Int(-10), Value::Int(0)]).unwrap();
        call(&mut l, "insert", vec![Value::Int(10), Value::Int(3)]).unwrap();
        call(&mut l, "insert", vec![Value::Int(-1), Value::Int(9)]).unwrap();
        assert_items(&l, &[0, 1, 2, 9, 3]);
        assert_error(
            call(&mut l, "insert", vec![s("x"), Value::Int(1)]),
            ErrorCode::TypeError,
            "'str' object cannot be interpreted as an integer",
        );
        assert_error(call(&mut l, "insert", vec![big(), Value::Int(1)]), ErrorCode::OverflowError, SSIZE_OVERFLOW);
    }

    #[test]
    fn pop_and_its_errors() {
        let mut l = list(&[1, 2, 3]);
        assert_py_eq(&call(&mut l, "pop", vec![]).unwrap(), &Value::Int(3));
        assert_py_eq(&call(&mut l, "pop", vec![Value::Int(0)]).unwrap(), &Value::Int(1));
        assert_error(call(&mut l, "pop", vec![Value::Int(5)]), ErrorCode::IndexError, "pop index out of range");
        assert_error(
            call(&mut l, "pop", vec![Value::Float(1.0)]),
            ErrorCode::TypeError,
            "'float' object cannot be interpreted as an integer",
        );
        assert_error(call(&mut l, "pop", vec![big()]), ErrorCode::OverflowError, SSIZE_OVERFLOW);
        call(&mut l, "pop", vec![]).unwrap();
        assert_error(call(&mut l, "pop", vec![]), ErrorCode::IndexError, "pop from empty list");
        // CPython converts the argument before it looks at the length.
        assert_error(
            call(&mut l, "pop", vec![s("x")]),
            ErrorCode::TypeError,
            "'str' object cannot be interpreted as an integer",
        );
    }

    #[test]
    fn remove_takes_the_first_equal_item() {
        let mut l = list(&[1, 2, 1]);
        call(&mut l, "remove", vec![Value::Float(1.0)]).unwrap();
        assert_items(&l, &[2, 1]);
        assert_error(
            call(&mut l, "remove", vec![Value::Int(5)]),
            ErrorCode::ValueError,
            "list.remove(x): x not in list",
        );
    }

    #[test]
    fn append_extend_reverse_clear_copy() {
        let mut l = list(&[1]);
        call(&mut l, "append", vec![Value::Int(2)]).unwrap();
        call(&mut l, "extend", vec![Value::Bytes(vec![3])]).unwrap();
        assert_items(&l, &[1, 2, 3]);
        assert_error(
            call(&mut l, "extend", vec![Value::None]),
            ErrorCode::TypeError,
            "'NoneType' object is not iterable",
        );
        call(&mut l, "reverse", vec![]).unwrap();
        assert_items(&l, &[3, 2, 1]);
        assert_py_eq(&call(&mut l, "__reversed__", vec![]).unwrap(), &ints(&[1, 2, 3]));
        assert_py_eq(&call(&mut l, "copy", vec![]).unwrap(), &ints(&[3, 2, 1]));
        assert_py_eq(&call(&mut l, "__len__", vec![]).unwrap(), &Value::Int(3));
        call(&mut l, "clear", vec![]).unwrap();
        assert_eq!(l.size(), Some(0));
    }

    #[test]
    fn sort_orders_and_refuses_keys() {
        let mut l = list(&[3, 1, 2]);
        call_kw(&mut l, "sort", vec![], vec![("reverse", Value::Int(2))]).unwrap();
        assert_items(&l, &[3, 2, 1]);
        call_kw(&mut l, "sort", vec![], vec![("key", Value::None)]).unwrap();
        assert_items(&l, &[1, 2, 3]);
        let key = Value::Str("len".into());
        assert_error(
            call_kw(&mut l, "sort", vec![], vec![("key", key)]),
            ErrorCode::TypeError,
            "sort(key=...) is not supported: agora cannot run client code",
        );
        assert_error(
            call_kw(&mut l, "sort", vec![], vec![("reverse", Value::None)]),
            ErrorCode::TypeError,
            "'NoneType' object cannot be interpreted as an integer",
        );
    }

    #[test]
    fn sorting_mixed_types_fails_and_keeps_the_list() {
        let mut l = ListObject::new(Args::from_values("list", vec![Value::List(vec![Value::Int(1), s("a")])])).unwrap();
        assert_error(
            call(&mut l, "sort", vec![]),
            ErrorCode::TypeError,
            "'<' not supported between instances of 'str' and 'int'",
        );
        assert_eq!(l.repr(), "[1, 'a']");
    }

    #[test]
    fn kind_and_snapshot() {
        let l = list(&[1]);
        assert_eq!(l.kind(), Kind::List);
        assert_eq!(l.repr(), "[1]");
        assert!(l.methods().iter().any(|m| m.name == "__imul__"));
    }

    #[test]
    fn state_round_trips_and_marks_follow_the_methods() {
        let mut l = list(&[1, 2]);
        call(&mut l, "append", vec![Value::Tuple(vec![s("x"), Value::None])]).unwrap();
        let back: ListObject = rmp_serde::from_slice(&l.state()).unwrap();
        assert_eq!(back.repr(), "[1, 2, ('x', None)]");
        assert_eq!(back.state(), l.state());
        assert_ne!(list(&[2, 1]).state(), list(&[1, 2]).state());
        let spec = |name: &str| *METHODS.iter().find(|m| m.name == name).unwrap();
        for name in ["__setitem__", "append", "extend", "insert"] {
            assert!(spec(name).stores && !spec(name).read_only, "{name}");
        }
        let read_only: Vec<&str> = METHODS.iter().filter(|m| m.read_only).map(|m| m.name).collect();
        assert_eq!(
            read_only,
            [
                "__add__",
                "__contains__",
                "__getitem__",
                "__len__",
                "__mul__",
                "__reversed__",
                "__rmul__",
                "count",
                "index",
                "copy"
            ]
        );
    }
}
