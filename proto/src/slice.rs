//! Python's `slice`: how a slice travels as a [`Value`] and how it selects items.
//!
//! A client indexes a list or array with a slice (`l[1:3]`, `a[::-1]`). On the wire a
//! slice is what pickle makes of it, `REDUCE(builtins.slice, (start, stop, step))`, which
//! the value model keeps as an opaque [`Object`](crate::value::Object). [`Slice::from_value`] recognises that
//! shape and checks its bounds the way CPython's `PySlice_Unpack` does;
//! [`Slice::indices`] resolves it against a length like `PySlice_AdjustIndices`.

use crate::value::Build;
use crate::{Value, WireError};

/// A Python `slice(start, stop, step)`; `None` marks a part that was left out.
///
/// `step` is never `Some(0)` in a slice that came from [`Slice::from_value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slice {
    /// First index (`None`: from the start, or from the end when stepping backwards).
    pub start: Option<i64>,
    /// Index to stop before (`None`: to the end, or to the start when stepping backwards).
    pub stop: Option<i64>,
    /// Distance between items (`None`: 1).
    pub step: Option<i64>,
}

/// The module and name pickle gives Python's `slice` type.
const MODULE: &str = "builtins";
const QUALNAME: &str = "slice";

impl Slice {
    /// The slice as it travels: `REDUCE(builtins.slice, (start, stop, step))`.
    pub fn to_value(&self) -> Value {
        let part = |p: Option<i64>| p.map_or(Value::None, Value::Int);
        Value::reduce(MODULE, QUALNAME, vec![part(self.start), part(self.stop), part(self.step)])
    }

    /// Reads a slice from a value: `None` if the value is not a slice at all, an error
    /// if it is one with bounds Python would reject (`TypeError` for a bound that is not
    /// an int or `None`, `ValueError` for a zero step). Bounds beyond `i64` saturate, as
    /// CPython clamps them to `Py_ssize_t`.
    pub fn from_value(value: &Value) -> Option<Result<Slice, WireError>> {
        let Value::Object(object) = value else { return None };
        if object.module != MODULE || object.qualname != QUALNAME {
            return None;
        }
        let Build::Reduce(args) = &object.build else { return None };
        // `slice(stop)`, `slice(start, stop)` or `slice(start, stop, step)`.
        let (start, stop, step) = match args.as_slice() {
            [stop] => (&Value::None, stop, &Value::None),
            [start, stop] => (start, stop, &Value::None),
            [start, stop, step] => (start, stop, step),
            _ => return None,
        };
        Some(Slice::checked(start, stop, step))
    }

    /// Checks the parts in CPython's order: the step first, then start and stop.
    fn checked(start: &Value, stop: &Value, step: &Value) -> Result<Slice, WireError> {
        let step = bound(step)?;
        if step == Some(0) {
            return Err(WireError::value_error("slice step cannot be zero"));
        }
        // CPython keeps -step representable.
        let step = step.map(|s| s.max(-i64::MAX));
        Ok(Slice { start: bound(start)?, stop: bound(stop)?, step })
    }

    /// Resolves the slice against a sequence of `len` items, like CPython's
    /// `PySlice_Unpack` + `PySlice_AdjustIndices`: returns `(start, stop, step, count)`
    /// where the selected indices are `start + k * step` for `k` in `0..count` (all
    /// within `0..len`). A step of `Some(0)` selects nothing.
    pub fn indices(&self, len: usize) -> (i64, i64, i64, usize) {
        let step = self.step.unwrap_or(1);
        if step == 0 {
            return (0, 0, 0, 0);
        }
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let backwards = step < 0;
        let start = match self.start {
            None if backwards => len - 1,
            None => 0,
            Some(i) => adjust(i, len, backwards),
        };
        let stop = match self.stop {
            None if backwards => -1,
            None => len,
            Some(i) => adjust(i, len, backwards),
        };
        // i128: `start - stop` and `-step` cannot overflow there.
        let (from, to, by) = (i128::from(start), i128::from(stop), i128::from(step));
        let count = match backwards {
            true if to < from => (from - to - 1) / -by + 1,
            false if from < to => (to - from - 1) / by + 1,
            _ => 0,
        };
        (start, stop, step, usize::try_from(count).unwrap_or(0))
    }

    /// True when the slice selects a contiguous run (step 1), which Python assigns and
    /// deletes as a plain slice rather than an extended one.
    pub fn is_contiguous(&self) -> bool {
        self.step.unwrap_or(1) == 1
    }
}

/// One bound of a slice: `None`, or an int clamped to `i64`.
fn bound(value: &Value) -> Result<Option<i64>, WireError> {
    match value {
        Value::None => Ok(None),
        other => slice_index(other)
            .map(Some)
            .ok_or_else(|| WireError::type_error("slice indices must be integers or None or have an __index__ method")),
    }
}

/// An int (or bool) as a slice-style index, saturating at the `i64` limits like
/// CPython's `_PyEval_SliceIndex`; `None` for anything that is not an int.
pub fn slice_index(value: &Value) -> Option<i64> {
    match value {
        Value::BigInt(n) if n.sign() == num_bigint::Sign::Minus => Some(i64::MIN),
        Value::BigInt(_) => Some(i64::MAX),
        other => other.as_index(),
    }
}

/// One given bound resolved against `len` (the clamping half of
/// `PySlice_AdjustIndices`).
fn adjust(index: i64, len: i64, backwards: bool) -> i64 {
    if index < 0 {
        let index = index + len;
        match index < 0 {
            true if backwards => -1,
            true => 0,
            false => index,
        }
    } else if index >= len {
        if backwards {
            len - 1
        } else {
            len
        }
    } else {
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use num_bigint::BigInt;

    fn slice(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Slice {
        Slice { start, stop, step }
    }

    fn big(text: &str) -> Value {
        Value::BigInt(Box::new(text.parse::<BigInt>().unwrap()))
    }

    /// Expected values from CPython 3.11: `slice(*s).indices(len)` and
    /// `len(range(*slice(*s).indices(len)))`.
    #[test]
    fn indices_match_cpython() {
        let max = i64::MAX;
        let cases = [
            (slice(None, None, None), 5, (0, 5, 1, 5)),
            (slice(None, None, Some(-1)), 5, (4, -1, -1, 5)),
            (slice(Some(-10), Some(10), Some(2)), 5, (0, 5, 2, 3)),
            (slice(Some(10), Some(-10), Some(-3)), 5, (4, -1, -3, 2)),
            (slice(Some(1), Some(1), Some(1)), 5, (1, 1, 1, 0)),
            (slice(Some(3), Some(1), Some(1)), 5, (3, 1, 1, 0)),
            (slice(None, None, Some(-1)), 0, (-1, -1, -1, 0)),
            (slice(Some(2), None, Some(-2)), 5, (2, -1, -2, 2)),
            (slice(Some(-1), Some(-6), Some(-1)), 5, (4, -1, -1, 5)),
            (slice(Some(0), Some(5), Some(100)), 5, (0, 5, 100, 1)),
            (slice(Some(-100), None, Some(-1)), 5, (-1, -1, -1, 0)),
            (slice(Some(100), None, Some(-1)), 5, (4, -1, -1, 5)),
            (slice(None, Some(-100), None), 5, (0, 0, 1, 0)),
            (slice(Some(i64::MIN), Some(max), Some(1)), 5, (0, 5, 1, 5)),
            (slice(None, None, Some(-max)), 5, (4, -1, -max, 1)),
            (slice(None, None, Some(max)), 5, (0, 5, max, 1)),
        ];
        for (s, len, expected) in cases {
            assert_eq!(s.indices(len), expected, "{s:?} of {len}");
        }
    }

    #[test]
    fn round_trips_through_its_pickled_shape() {
        let s = slice(Some(1), None, Some(-2));
        let value = s.to_value();
        let Value::Object(object) = &value else { panic!("not an object: {value:?}") };
        assert_eq!((object.module.as_str(), object.qualname.as_str()), ("builtins", "slice"));
        assert!(matches!(&object.build, Build::Reduce(args) if args.len() == 3 && matches!(args[1], Value::None)));
        assert_eq!(Slice::from_value(&value).unwrap().unwrap(), s);
    }

    #[test]
    fn short_constructor_forms_are_read() {
        let stop_only = Value::reduce("builtins", "slice", vec![Value::Int(3)]);
        assert_eq!(Slice::from_value(&stop_only).unwrap().unwrap(), slice(None, Some(3), None));
        let two = Value::reduce("builtins", "slice", vec![Value::Int(1), Value::Bool(true)]);
        assert_eq!(Slice::from_value(&two).unwrap().unwrap(), slice(Some(1), Some(1), None));
    }

    #[test]
    fn other_values_are_not_slices() {
        assert!(Slice::from_value(&Value::Int(1)).is_none());
        assert!(Slice::from_value(&Value::reduce("builtins", "range", vec![Value::Int(1)])).is_none());
        assert!(Slice::from_value(&Value::reduce("builtins", "slice", vec![])).is_none());
    }

    #[test]
    fn huge_bounds_saturate() {
        let value = Value::reduce(
            "builtins",
            "slice",
            vec![big("-1180591620717411303424"), big("1180591620717411303424"), Value::Int(i64::MIN)],
        );
        let s = Slice::from_value(&value).unwrap().unwrap();
        assert_eq!(s, slice(Some(i64::MIN), Some(i64::MAX), Some(-i64::MAX)));
    }

    #[test]
    fn bad_bounds_are_rejected_with_cpython_messages() {
        let err = |args: Vec<Value>| Slice::from_value(&Value::reduce("builtins", "slice", args)).unwrap().unwrap_err();
        let e = err(vec![Value::Int(0), Value::Int(3), Value::Int(0)]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ValueError, "slice step cannot be zero"));
        let e = err(vec![Value::Int(0), Value::Int(3), Value::Str("x".into())]);
        let text = "slice indices must be integers or None or have an __index__ method";
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::TypeError, text));
        let e = err(vec![Value::Float(1.0), Value::None, Value::None]);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::TypeError, text));
        // CPython checks the step before the bounds: slice('a', None, 0) is a ValueError.
        let e = err(vec![Value::Str("a".into()), Value::None, Value::Int(0)]);
        assert_eq!(e.code, ErrorCode::ValueError);
    }

    #[test]
    fn a_zero_step_built_by_hand_selects_nothing() {
        assert_eq!(slice(None, None, Some(0)).indices(5).3, 0);
    }
}
