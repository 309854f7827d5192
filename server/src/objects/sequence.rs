//! What `list` and `array` share: subscripts, slices and iteration, written once.
//!
//! - [`Subscript`] reads an index or a slice the way CPython's `__getitem__`,
//!   `__setitem__` and `__delitem__` do, with the caller's [`Wording`] for errors (list
//!   and array word them differently);
//! - [`get`], [`assign_slice`] and [`delete`] work on any `Vec<T>`, including extended
//!   slices;
//! - [`into_items`] is Python's `list(x)` for the iterables agora understands (used by
//!   the list and dict constructors, `extend`, `update`, slice assignment and the array
//!   constructor);
//! - [`int_arg`] converts an int argument with CPython's errors, and [`check_size`]
//!   caps what one call may build;
//! - [`Capture`] keeps a snapshot's view of the items while they change.
//!
//! At the end, `testing` (tests only) drives any object through its method specs, and
//! checks that a method declared read-only leaves the object's state unchanged.

use std::collections::HashMap;

use agora_proto::slice::{slice_index, Slice};
use agora_proto::value::{Build, Object};
use agora_proto::{ErrorCode, Value, WireError};

use crate::object::begin_sequence_capture;

/// The most items one call may build out of a small request (`l * n`, `list(range(n))`).
/// CPython would try and raise `MemoryError`; agora refuses before allocating.
pub const MAX_ITEMS: usize = 1 << 24;

/// CPython's `OverflowError` text for an int that does not fit `Py_ssize_t`
/// (`list.pop`, `list.insert`).
pub const SSIZE_OVERFLOW: &str = "Python int too large to convert to C ssize_t";

/// CPython's text for an int that does not fit an index (`IndexError` for a subscript,
/// `OverflowError` for a repeat count).
pub const INDEX_OVERFLOW: &str = "cannot fit 'int' into an index-sized integer";

/// How a sequence type words its errors.
#[derive(Debug, Clone, Copy)]
pub struct Wording {
    /// The `TypeError` text for a subscript that is neither an int nor a slice, given
    /// the subscript's type name.
    pub bad_subscript: fn(&str) -> String,
    /// The `IndexError` text for reading past the end.
    pub read_out_of_range: &'static str,
    /// The `IndexError` text for assigning or deleting past the end.
    pub write_out_of_range: &'static str,
    /// What the extended-slice size error calls the assigned value (`"sequence"`).
    pub assigned: &'static str,
}

/// A subscript: one position (not yet checked against the length) or a slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subscript {
    /// An int (or bool) index, possibly negative.
    Index(i64),
    /// A slice.
    Slice(Slice),
}

impl Subscript {
    /// Reads `key` as an index or a slice, with CPython's errors.
    pub fn parse(key: &Value, wording: &Wording) -> Result<Subscript, WireError> {
        if let Some(slice) = Slice::from_value(key) {
            return slice.map(Subscript::Slice);
        }
        match key {
            Value::BigInt(_) => Err(WireError::index_error(INDEX_OVERFLOW)),
            _ => key
                .as_index()
                .map(Subscript::Index)
                .ok_or_else(|| WireError::type_error((wording.bad_subscript)(key.type_name()))),
        }
    }
}

/// What a `__getitem__` selected: one item, or the items of a slice.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection<T> {
    /// `seq[i]`.
    One(T),
    /// `seq[a:b:c]`.
    Many(Vec<T>),
}

/// `items[key]` for an index or a slice.
pub fn get<T: Clone>(items: &[T], key: &Value, wording: &Wording) -> Result<Selection<T>, WireError> {
    Ok(match Subscript::parse(key, wording)? {
        Subscript::Index(index) => {
            Selection::One(items[position(index, items.len(), wording.read_out_of_range)?].clone())
        }
        Subscript::Slice(slice) => Selection::Many(positions(&slice, items.len()).map(|i| items[i].clone()).collect()),
    })
}

/// `del items[key]` for an index or a slice.
pub fn delete<T>(items: &mut Vec<T>, key: &Value, wording: &Wording) -> Result<(), WireError> {
    match Subscript::parse(key, wording)? {
        Subscript::Index(index) => {
            items.remove(position(index, items.len(), wording.write_out_of_range)?);
        }
        Subscript::Slice(slice) => delete_slice(items, &slice),
    }
    Ok(())
}

/// Resolves a possibly negative index against `len`, or the `IndexError` `out_of_range`.
pub fn position(index: i64, len: usize, out_of_range: &str) -> Result<usize, WireError> {
    let len_i64 = i64::try_from(len).unwrap_or(i64::MAX);
    let resolved = if index < 0 { index + len_i64 } else { index };
    usize::try_from(resolved).ok().filter(|&i| i < len).ok_or_else(|| WireError::index_error(out_of_range))
}

/// The indices a slice selects in a sequence of `len` items, in slice order.
fn positions(slice: &Slice, len: usize) -> impl Iterator<Item = usize> {
    let (start, _, step, count) = slice.indices(len);
    // Every selected index lies in `0..len`, so none of this overflows.
    (0..count).map(move |k| (start + k as i64 * step) as usize)
}

/// The lowest selected index, the (positive) distance between indices and the count:
/// the same selection walked upwards.
fn ascending(slice: &Slice, len: usize) -> (usize, usize, usize) {
    let (start, _, step, count) = slice.indices(len);
    let lowest = if step < 0 && count > 0 { start + (count as i64 - 1) * step } else { start };
    (lowest.max(0) as usize, step.unsigned_abs() as usize, count)
}

/// `del items[slice]`.
pub fn delete_slice<T>(items: &mut Vec<T>, slice: &Slice) {
    let (lowest, step, count) = ascending(slice, items.len());
    if count == 0 {
        return;
    }
    if step == 1 {
        items.drain(lowest..lowest + count);
        return;
    }
    let highest = lowest + (count - 1) * step;
    let mut index = 0;
    items.retain(|_| {
        let selected = (lowest..=highest).contains(&index) && (index - lowest) % step == 0;
        index += 1;
        !selected
    });
}

/// `items[slice] = values`: a contiguous slice is replaced by any number of values; an
/// extended slice needs exactly as many values as it selects (CPython's
/// `ValueError('attempt to assign sequence of size 1 to extended slice of size 2')`).
pub fn assign_slice<T>(items: &mut Vec<T>, slice: &Slice, values: Vec<T>, wording: &Wording) -> Result<(), WireError> {
    if slice.is_contiguous() {
        let (start, _, _, count) = slice.indices(items.len());
        let start = start as usize; // a forward slice starts within 0..=len
        items.splice(start..start + count, values);
        return Ok(());
    }
    let count = slice.indices(items.len()).3;
    if values.len() != count {
        return Err(WireError::value_error(format!(
            "attempt to assign {} of size {} to extended slice of size {count}",
            wording.assigned,
            values.len()
        )));
    }
    for (index, value) in positions(slice, items.len()).zip(values) {
        items[index] = value;
    }
    Ok(())
}

/// A snapshot's capture of a `Vec`'s items as they were when it began, read out in
/// order a few at a time while the `Vec` changes
/// ([`SharedObject::begin_state`](crate::object::SharedObject::begin_state)). Its owner
/// calls [`Capture::preserve`] before overwriting one item and [`Capture::copy_unread`]
/// before any change that may move items; pushes at the end need neither, as they land
/// past the captured positions.
#[derive(Debug)]
pub struct Capture<T> {
    /// Positions below this were read out already.
    cursor: usize,
    /// The length when it began.
    end: usize,
    /// The old items of the positions in `cursor..end` overwritten since.
    before: HashMap<usize, T>,
    /// Once a change that may move items came: every item still to be read, in order
    /// (the `Vec` itself is not read any more).
    copy: Option<std::vec::IntoIter<T>>,
}

impl<T: Clone> Capture<T> {
    /// A capture of `len` items, none read yet.
    pub fn new(len: usize) -> Box<Capture<T>> {
        Box::new(Capture { cursor: 0, end: len, before: HashMap::new(), copy: None })
    }

    /// Before the item at `at` of `items` changes: keeps the old one if it is still to
    /// be read.
    pub fn preserve(&mut self, items: &[T], at: usize) {
        if (self.cursor..self.end).contains(&at) && self.copy.is_none() {
            self.before.entry(at).or_insert_with(|| items[at].clone());
        }
    }

    /// Before a change that may move items: copies what is still to be read (once; a
    /// `Vec` copy, so one item costs a clone and no hashing).
    pub fn copy_unread(&mut self, items: &[T]) {
        if self.copy.is_none() {
            let mut unread = items[self.cursor..self.end].to_vec();
            for (at, item) in self.before.drain() {
                unread[at - self.cursor] = item;
            }
            self.copy = Some(unread.into_iter());
        }
    }

    /// Hands up to `positions` more captured items to `write`, in order; true once all
    /// have been.
    pub fn read_out(&mut self, items: &[T], positions: usize, mut write: impl FnMut(&T)) -> bool {
        let stop = self.end.min(self.cursor.saturating_add(positions));
        match self.copy.as_mut() {
            Some(copy) => copy.by_ref().take(stop - self.cursor).for_each(|item| write(&item)),
            None => {
                for (at, item) in items.iter().enumerate().take(stop).skip(self.cursor) {
                    match self.before.remove(&at) {
                        Some(old) => write(&old),
                        None => write(item),
                    }
                }
            }
        }
        self.cursor = stop;
        self.cursor == self.end
    }
}

/// [`SharedObject::begin_state`](crate::object::SharedObject::begin_state) for a `Vec`
/// kept with an optional [`Capture`], whose state ends in the sequence `field` after
/// `leading` string fields ([`begin_sequence_capture`]): the header, the capture begun;
/// `None` means encode the state at once.
pub fn begin_capture<T: Clone>(
    capture: &mut Option<Box<Capture<T>>>,
    leading: &[(&str, &str)],
    field: &str,
    len: usize,
) -> Option<Vec<u8>> {
    let running = capture.is_some();
    begin_sequence_capture(leading, field, len, || {
        !running && {
            *capture = Some(Capture::new(len));
            true
        }
    })
}

/// [`SharedObject::state_next`](crate::object::SharedObject::state_next) for a `Vec`
/// kept with an optional [`Capture`]: reads up to `positions` more items out through
/// `write`, and ends the capture once all have been (true then, and with no capture).
pub fn state_next<T: Clone>(
    capture: &mut Option<Box<Capture<T>>>,
    items: &[T],
    positions: usize,
    write: impl FnMut(&T),
) -> bool {
    let done = capture.as_deref_mut().is_none_or(|c| c.read_out(items, positions, write));
    if done {
        *capture = None;
    }
    done
}

/// Python's `list(x)` for the iterables agora understands: list, tuple, set, frozenset,
/// dict (its keys), str (its characters), bytes (its ints), and the pickled `range(…)`
/// and `list(…)` objects. Anything else is `TypeError: 'int' object is not iterable`.
pub fn into_items(value: Value) -> Result<Vec<Value>, WireError> {
    into_items_or(value, |v| WireError::type_error(format!("'{}' object is not iterable", v.type_name())))
}

/// [`into_items`] with the caller's error for a value that is not iterable.
pub fn into_items_or(value: Value, not_iterable: impl FnOnce(&Value) -> WireError) -> Result<Vec<Value>, WireError> {
    match value {
        Value::List(items) | Value::Tuple(items) => Ok(items),
        Value::Set(set) | Value::FrozenSet(set) => Ok(set.iter().cloned().collect()),
        Value::Dict(dict) => Ok(dict.iter().map(|(key, _)| key.clone()).collect()),
        Value::Str(text) => Ok(text.chars().map(|c| Value::Str(c.to_string().into())).collect()),
        Value::Bytes(bytes) => Ok(bytes.into_iter().map(|b| Value::Int(b.into())).collect()),
        Value::Object(object) => object_items(&object).unwrap_or_else(|| Err(not_iterable(&Value::Object(object)))),
        other => Err(not_iterable(&other)),
    }
}

/// The items of a pickled iterable object: `range(start, stop, step)`, or
/// `list(iterable)` (how CPython pickles dict views). `None` for other objects.
fn object_items(object: &Object) -> Option<Result<Vec<Value>, WireError>> {
    let Build::Reduce(args) = &object.build else { return None };
    match (object.module.as_str(), object.qualname.as_str(), args.as_slice()) {
        ("builtins", "range", [start, stop, step]) => Some(range_items(start, stop, step)),
        ("builtins", "list", [inner]) => Some(into_items(inner.clone())),
        _ => None,
    }
}

/// The ints of `range(start, stop, step)`.
fn range_items(start: &Value, stop: &Value, step: &Value) -> Result<Vec<Value>, WireError> {
    let (Some(start), Some(stop), Some(step)) = (start.as_index(), stop.as_index(), step.as_index()) else {
        return Err(WireError::new(ErrorCode::Unsupported, "agora only iterates ranges with 64-bit int bounds"));
    };
    if step == 0 {
        return Err(WireError::value_error("range() arg 3 must not be zero"));
    }
    let (from, to, by) = (i128::from(start), i128::from(stop), i128::from(step));
    let count = match step > 0 {
        true if from < to => (to - from - 1) / by + 1,
        false if to < from => (from - to - 1) / -by + 1,
        _ => 0,
    };
    let count = check_size(count as u128)?;
    Ok((0..count).map(|k| Value::Int((from + k as i128 * by) as i64)).collect())
}

/// Checks that a result of `count` items stays within [`MAX_ITEMS`].
pub fn check_size(count: u128) -> Result<usize, WireError> {
    usize::try_from(count).ok().filter(|&n| n <= MAX_ITEMS).ok_or_else(|| {
        WireError::new(
            ErrorCode::LimitExceeded,
            format!("the result would have {count} items, more than agora's limit of {MAX_ITEMS}"),
        )
    })
}

/// An int argument (an int or bool): `TypeError: 'str' object cannot be interpreted as
/// an integer` for anything else, and `OverflowError(too_big)` beyond `i64`.
pub fn int_arg(value: &Value, too_big: &str) -> Result<i64, WireError> {
    match value {
        Value::BigInt(_) => Err(WireError::overflow_error(too_big)),
        _ => value.as_index().ok_or_else(|| {
            WireError::type_error(format!("'{}' object cannot be interpreted as an integer", value.type_name()))
        }),
    }
}

/// An optional `start`/`stop` argument of `index`, clamped like a slice bound.
pub fn search_bound(value: Option<&Value>, default: i64) -> Result<i64, WireError> {
    value.map_or(Ok(default), |v| {
        slice_index(v)
            .ok_or_else(|| WireError::type_error("slice indices must be integers or have an __index__ method"))
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Drives objects the way the engine does: bind the arguments against the method's
    //! spec, then call with a context (from a [`Harness`]).
    use crate::engine::Harness;
    use crate::object::{bind, MethodSpec, Outcome, SharedObject};
    use agora_proto::{ErrorCode, Value, WireError};

    /// Calls `method` with positional arguments.
    pub fn call(object: &mut dyn SharedObject, method: &str, positional: Vec<Value>) -> Result<Value, WireError> {
        call_kw(object, method, positional, Vec::new())
    }

    /// Calls `method` with positional and keyword arguments.
    pub fn call_kw(
        object: &mut dyn SharedObject,
        method: &str,
        positional: Vec<Value>,
        keywords: Vec<(&str, Value)>,
    ) -> Result<Value, WireError> {
        let spec = spec_of(object, method);
        let args = bind_kw(spec, positional, keywords)?;
        let before = spec.read_only.then(|| object.state());
        let result = invoke(object, method, args);
        if let Some(before) = before {
            assert_eq!(before, object.state(), "{method} is declared read-only but changed the state");
        }
        result
    }

    /// [`call`] without its check that a read-only method left the state as it was
    /// (which encodes the whole state twice a call: minutes, in a loop over a big
    /// object).
    pub fn call_unchecked(
        object: &mut dyn SharedObject,
        method: &str,
        positional: Vec<Value>,
    ) -> Result<Value, WireError> {
        let args = bind_kw(spec_of(object, method), positional, Vec::new())?;
        invoke(object, method, args)
    }

    fn spec_of<'a>(object: &'a dyn SharedObject, method: &str) -> &'a MethodSpec {
        object.methods().iter().find(|spec| spec.name == method).unwrap_or_else(|| panic!("no method {method}"))
    }

    /// Calls with bound arguments and a context, as the engine does; a call that parks
    /// is a test failure.
    fn invoke(object: &mut dyn SharedObject, method: &str, args: crate::object::Args) -> Result<Value, WireError> {
        let mut harness = Harness::default();
        match object.call(&mut harness.ctx(1), method, args)? {
            Outcome::Ready(value) => Ok(value),
            parked => panic!("{method} parked: {parked:?}"),
        }
    }

    /// Binds arguments against `spec` (for constructors).
    pub fn bind_kw(
        spec: &MethodSpec,
        positional: Vec<Value>,
        keywords: Vec<(&str, Value)>,
    ) -> Result<crate::object::Args, WireError> {
        bind(spec, positional, keywords.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// Asserts that `result` failed with exactly `code` and `message`.
    #[track_caller]
    pub fn assert_error<T: std::fmt::Debug>(result: Result<T, WireError>, code: ErrorCode, message: &str) {
        let error = result.expect_err("expected an error");
        assert_eq!((error.code, error.message.as_str()), (code, message));
    }

    /// A str value.
    pub fn s(text: &str) -> Value {
        Value::Str(text.to_string().into())
    }

    /// A list of ints.
    pub fn ints(values: &[i64]) -> Value {
        Value::List(values.iter().map(|&i| Value::Int(i)).collect())
    }

    /// Asserts Python equality (`Value` has no `Eq` beyond `py_eq`), showing reprs.
    #[track_caller]
    pub fn assert_py_eq(actual: &Value, expected: &Value) {
        assert!(actual.py_eq(expected), "{} != {}", actual.py_repr(), expected.py_repr());
        assert_eq!(actual.type_name(), expected.type_name());
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_error, ints, s};
    use super::*;
    use agora_proto::value::BigInt;

    const WORDING: Wording = Wording {
        bad_subscript: |t| format!("list indices must be integers or slices, not {t}"),
        read_out_of_range: "list index out of range",
        write_out_of_range: "list assignment index out of range",
        assigned: "sequence",
    };

    fn slice(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Slice {
        Slice { start, stop, step }
    }

    fn big() -> Value {
        Value::BigInt(Box::new(BigInt::from(2).pow(70)))
    }

    #[test]
    fn subscripts_are_indices_slices_or_type_errors() {
        assert_eq!(Subscript::parse(&Value::Int(-1), &WORDING).unwrap(), Subscript::Index(-1));
        assert_eq!(Subscript::parse(&Value::Bool(true), &WORDING).unwrap(), Subscript::Index(1));
        let s = slice(Some(1), None, Some(2));
        assert_eq!(Subscript::parse(&s.to_value(), &WORDING).unwrap(), Subscript::Slice(s));
        assert_error(
            Subscript::parse(&Value::Float(1.0), &WORDING),
            ErrorCode::TypeError,
            "list indices must be integers or slices, not float",
        );
        assert_error(Subscript::parse(&big(), &WORDING), ErrorCode::IndexError, INDEX_OVERFLOW);
    }

    #[test]
    fn positions_resolve_negative_indices() {
        assert_eq!(position(-1, 3, "x").unwrap(), 2);
        assert_eq!(position(2, 3, "x").unwrap(), 2);
        assert_error(position(3, 3, "gone"), ErrorCode::IndexError, "gone");
        assert_error(position(-4, 3, "gone"), ErrorCode::IndexError, "gone");
        assert_error(position(i64::MIN, 3, "gone"), ErrorCode::IndexError, "gone");
    }

    #[test]
    fn get_reads_items_and_slices() {
        let items = vec![1, 2, 3, 4, 5];
        assert_eq!(get(&items, &Value::Int(-2), &WORDING).unwrap(), Selection::One(4));
        let reversed = slice(None, None, Some(-2)).to_value();
        assert_eq!(get(&items, &reversed, &WORDING).unwrap(), Selection::Many(vec![5, 3, 1]));
        assert_error(get(&items, &Value::Int(5), &WORDING), ErrorCode::IndexError, "list index out of range");
    }

    /// Expected lists from CPython: `l = [0, 1, 2, 3, 4, 5]; del l[s]`.
    #[test]
    fn delete_slices_like_cpython() {
        let cases = [
            (slice(None, None, Some(2)), vec![1, 3, 5]),
            (slice(None, None, Some(-2)), vec![0, 2, 4]),
            (slice(Some(1), Some(4), None), vec![0, 4, 5]),
            (slice(Some(4), Some(1), None), vec![0, 1, 2, 3, 4, 5]),
            (slice(Some(-2), None, Some(-3)), vec![0, 2, 3, 5]),
            (slice(None, None, Some(-1)), vec![]),
        ];
        for (s, expected) in cases {
            let mut items: Vec<i32> = (0..6).collect();
            delete(&mut items, &s.to_value(), &WORDING).unwrap();
            assert_eq!(items, expected, "del l[{s:?}]");
        }
        let mut items = vec![1];
        assert_error(
            delete(&mut items, &Value::Int(1), &WORDING),
            ErrorCode::IndexError,
            "list assignment index out of range",
        );
    }

    /// Expected lists from CPython, starting from `[1, 2, 3, 4]`.
    #[test]
    fn assign_slices_like_cpython() {
        let cases = [
            (slice(Some(3), Some(1), None), vec![9], vec![1, 2, 3, 9, 4]),
            (slice(Some(1), Some(3), None), vec![], vec![1, 4]),
            (slice(Some(10), None, None), vec![5], vec![1, 2, 3, 4, 5]),
            (slice(Some(-10), Some(1), None), vec![5], vec![5, 2, 3, 4]),
            (slice(None, None, Some(-1)), vec![5, 6, 7, 8], vec![8, 7, 6, 5]),
            (slice(Some(1), None, Some(2)), vec![0, 0], vec![1, 0, 3, 0]),
        ];
        for (s, values, expected) in cases {
            let mut items = vec![1, 2, 3, 4];
            assign_slice(&mut items, &s, values, &WORDING).unwrap();
            assert_eq!(items, expected, "l[{s:?}] = …");
        }
    }

    #[test]
    fn extended_slices_need_a_matching_size() {
        let mut items = vec![1, 2, 3];
        assert_error(
            assign_slice(&mut items, &slice(Some(0), Some(3), Some(2)), vec![1], &WORDING),
            ErrorCode::ValueError,
            "attempt to assign sequence of size 1 to extended slice of size 2",
        );
        assert_eq!(items, vec![1, 2, 3]);
    }

    #[test]
    fn iterables_become_items() {
        let items = |v: Value| into_items(v).unwrap().iter().map(Value::py_repr).collect::<Vec<_>>();
        assert_eq!(items(Value::Tuple(vec![Value::Int(1)])), ["1"]);
        assert_eq!(items(s("ab")), ["'a'", "'b'"]);
        assert_eq!(items(Value::Bytes(b"ab".to_vec())), ["97", "98"]);
        let range = Value::reduce("builtins", "range", vec![Value::Int(5), Value::Int(0), Value::Int(-2)]);
        assert_eq!(items(range), ["5", "3", "1"]);
        let view = Value::reduce("builtins", "list", vec![ints(&[7])]);
        assert_eq!(items(view), ["7"]);
    }

    #[test]
    fn non_iterables_are_type_errors() {
        assert_error(into_items(Value::Int(5)), ErrorCode::TypeError, "'int' object is not iterable");
        assert_error(into_items(Value::None), ErrorCode::TypeError, "'NoneType' object is not iterable");
        let other = Value::reduce("datetime", "date", vec![]);
        assert_error(into_items(other), ErrorCode::TypeError, "'date' object is not iterable");
    }

    #[test]
    fn huge_ranges_are_refused() {
        let range = Value::reduce("builtins", "range", vec![Value::Int(0), Value::Int(i64::MAX), Value::Int(1)]);
        let error = into_items(range).unwrap_err();
        assert_eq!(error.code, ErrorCode::LimitExceeded);
    }

    #[test]
    fn int_arguments_follow_cpython() {
        assert_eq!(int_arg(&Value::Bool(true), SSIZE_OVERFLOW).unwrap(), 1);
        assert_error(
            int_arg(&s("x"), SSIZE_OVERFLOW),
            ErrorCode::TypeError,
            "'str' object cannot be interpreted as an integer",
        );
        assert_error(int_arg(&big(), SSIZE_OVERFLOW), ErrorCode::OverflowError, SSIZE_OVERFLOW);
        assert_eq!(search_bound(Some(&big()), 0).unwrap(), i64::MAX);
        assert_eq!(search_bound(None, 7).unwrap(), 7);
        assert_error(
            search_bound(Some(&Value::None), 0),
            ErrorCode::TypeError,
            "slice indices must be integers or have an __index__ method",
        );
    }
}
