//! Python equality and ordering for [`Value`], and a stable sort that never panics.
//!
//! - `==` ([`Value::py_eq`]): numbers compare exactly across bool/int/float
//!   (`1 == 1.0 == True`, `2**53 + 1 != float(2**53 + 1)`), NaN equals nothing, a list
//!   never equals a tuple, dicts ignore order, `set == frozenset` by membership, opaque
//!   objects compare structurally (which diverges from Python for types with their own
//!   `__eq__`, e.g. `Decimal('1.0') == 1` is true in Python but not here).
//! - `<` ([`Value::py_lt`]): numbers with numbers, str by code point, bytes, lists with
//!   lists and tuples with tuples lexicographically, sets by proper inclusion; anything
//!   else is Python's `TypeError`.
//! - [`sort_values`]: CPython's `list.sort` contract (stable, `reverse` keeps equal items
//!   in their original order), built only on `<`, so an inconsistent order (NaN) gives
//!   some order instead of a panic.
use std::cmp::Ordering;

use super::num;
use super::{Set, Value};
use crate::WireError;

/// `PartialEq` is Python's `==` ([`Value::py_eq`]): `Int(1) == Float(1.0)`, NaN unequal.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.py_eq(other)
    }
}

/// Python `==` (see the module doc).
pub(super) fn py_eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.as_num(), b.as_num()) {
        return num::cmp(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::None, Value::None) => true,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => seq_eq(x, y),
        (Value::Dict(x), Value::Dict(y)) => x == y,
        (Value::Set(x) | Value::FrozenSet(x), Value::Set(y) | Value::FrozenSet(y)) => x == y,
        (Value::Object(x), Value::Object(y)) => x == y,
        _ => false,
    }
}

fn seq_eq(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.py_eq(y))
}

/// Python `<` (see the module doc).
pub(super) fn py_lt(a: &Value, b: &Value) -> Result<bool, WireError> {
    if let (Some(x), Some(y)) = (a.as_num(), b.as_num()) {
        return Ok(num::cmp(x, y) == Some(Ordering::Less));
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x < y),
        (Value::Bytes(x), Value::Bytes(y)) => Ok(x < y),
        (Value::List(x), Value::List(y)) | (Value::Tuple(x), Value::Tuple(y)) => seq_lt(x, y),
        (Value::Set(x) | Value::FrozenSet(x), Value::Set(y) | Value::FrozenSet(y)) => Ok(is_proper_subset(x, y)),
        _ => Err(unorderable(a, b)),
    }
}

/// Lexicographic `<`: the first unequal pair decides, else the shorter is smaller.
fn seq_lt(a: &[Value], b: &[Value]) -> Result<bool, WireError> {
    match a.iter().zip(b).find(|(x, y)| !x.py_eq(y)) {
        Some((x, y)) => x.py_lt(y),
        None => Ok(a.len() < b.len()),
    }
}

fn is_proper_subset(a: &Set, b: &Set) -> bool {
    a.len() < b.len() && a.is_subset(b)
}

/// Python's `TypeError` for `a < b` on unorderable types.
fn unorderable(a: &Value, b: &Value) -> WireError {
    WireError::type_error(format!("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name()))
}

/// Sorts `items` stably by Python's `<`, like `list.sort(reverse=…)`. On a `TypeError`
/// (unorderable items) the list is left unchanged. Never panics, even with NaN.
pub fn sort_values(items: &mut Vec<Value>, reverse: bool) -> Result<(), WireError> {
    // CPython reverses, sorts stably, and reverses again, so that equal items keep
    // their original order under `reverse=True`. We sort a permutation and apply it
    // only once every comparison has succeeded.
    let mut order: Vec<usize> = (0..items.len()).collect();
    if reverse {
        order.reverse();
    }
    let mut scratch = Vec::with_capacity(items.len() / 2);
    merge_sort(&mut order, &mut scratch, &|x, y| items[x].py_lt(&items[y]))?;
    if reverse {
        order.reverse();
    }
    apply_permutation(items, &order);
    Ok(())
}

/// Rearranges `items` so that the new `items[k]` is the old `items[order[k]]`.
fn apply_permutation(items: &mut Vec<Value>, order: &[usize]) {
    let mut old: Vec<Option<Value>> = items.drain(..).map(Some).collect();
    items.extend(order.iter().map(|&i| old[i].take().unwrap_or_default()));
}

/// Below this length a run is sorted by insertion.
const INSERTION_RUN: usize = 16;

/// A stable merge sort of indices by `lt`, stopping at the first error. `scratch` is
/// reused by every merge.
fn merge_sort<F>(v: &mut [usize], scratch: &mut Vec<usize>, lt: &F) -> Result<(), WireError>
where
    F: Fn(usize, usize) -> Result<bool, WireError>,
{
    if v.len() <= INSERTION_RUN {
        return insertion_sort(v, lt);
    }
    let mid = v.len() / 2;
    merge_sort(&mut v[..mid], scratch, lt)?;
    merge_sort(&mut v[mid..], scratch, lt)?;
    if !lt(v[mid], v[mid - 1])? {
        return Ok(()); // already in order
    }
    scratch.clear();
    scratch.extend_from_slice(&v[..mid]);
    let left = &scratch[..];
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < left.len() && j < v.len() {
        // Take from the right only when strictly smaller: that keeps the sort stable.
        if lt(v[j], left[i])? {
            v[k] = v[j];
            j += 1;
        } else {
            v[k] = left[i];
            i += 1;
        }
        k += 1;
    }
    v[k..k + left.len() - i].copy_from_slice(&left[i..]);
    Ok(())
}

/// A stable insertion sort of indices by `lt`.
fn insertion_sort<F>(v: &mut [usize], lt: &F) -> Result<(), WireError>
where
    F: Fn(usize, usize) -> Result<bool, WireError>,
{
    for end in 1..v.len() {
        let item = v[end];
        let mut pos = end;
        while pos > 0 && lt(item, v[pos - 1])? {
            v[pos] = v[pos - 1];
            pos -= 1;
        }
        v[pos] = item;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn ints(v: &[i64]) -> Vec<Value> {
        v.iter().map(|&i| Value::Int(i)).collect()
    }
    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }
    fn set(items: &[Value]) -> Set {
        let mut out = Set::new();
        for v in items {
            out.insert(v.clone()).unwrap();
        }
        out
    }

    #[test]
    fn numbers_are_equal_across_types() {
        assert!(Value::Int(1).py_eq(&Value::Float(1.0)));
        assert!(Value::Bool(true).py_eq(&Value::Int(1)));
        assert!(Value::Bool(true).py_eq(&Value::Float(1.0)));
        assert!(Value::Int(0).py_eq(&Value::Float(-0.0)));
        assert!(Value::Bool(false).py_eq(&Value::Float(-0.0)));
        let n = (1i64 << 53) + 1;
        assert!(!Value::Int(n).py_eq(&Value::Float(n as f64)));
        assert!(!Value::Float(f64::NAN).py_eq(&Value::Float(f64::NAN)));
        let big = Value::from_bigint(num_bigint::BigInt::from(1u8) << 70u32);
        assert!(big.py_eq(&Value::Float(2f64.powi(70))));
        assert!(!big.py_eq(&Value::Float(2f64.powi(71))));
    }

    #[test]
    fn containers_compare_by_content() {
        assert!(Value::List(ints(&[1, 2])).py_eq(&Value::List(vec![Value::Float(1.0), Value::Int(2)])));
        assert!(!Value::List(ints(&[1])).py_eq(&Value::Tuple(ints(&[1]))));
        assert!(!Value::Str("a".into()).py_eq(&Value::Bytes(b"a".to_vec())));
        let nan_list = Value::List(vec![Value::Float(f64::NAN)]);
        assert!(!nan_list.py_eq(&nan_list.clone()));
        let a = set(&[Value::Int(1), Value::Int(2)]);
        let b = set(&[Value::Float(2.0), Value::Bool(true)]);
        assert!(Value::Set(a).py_eq(&Value::FrozenSet(b)));
        assert!(!Value::None.py_eq(&Value::Bool(false)));
    }

    #[test]
    fn dict_equality_ignores_order() {
        let mut a = super::super::Dict::new();
        a.insert(s("x"), Value::Int(1)).unwrap();
        a.insert(s("y"), Value::Int(2)).unwrap();
        let mut b = super::super::Dict::new();
        b.insert(s("y"), Value::Float(2.0)).unwrap();
        b.insert(s("x"), Value::Bool(true)).unwrap();
        assert!(Value::Dict(a.clone()).py_eq(&Value::Dict(b.clone())));
        b.insert(s("z"), Value::None).unwrap();
        assert!(!Value::Dict(a).py_eq(&Value::Dict(b)));
    }

    #[test]
    fn ordering_follows_python() {
        assert!(Value::Int(1).py_lt(&Value::Float(1.5)).unwrap());
        assert!(!Value::Float(f64::NAN).py_lt(&Value::Int(1)).unwrap());
        assert!(!Value::Int(1).py_lt(&Value::Float(f64::NAN)).unwrap());
        assert!(s("Z").py_lt(&s("a")).unwrap());
        assert!(s("a").py_lt(&s("é")).unwrap());
        assert!(Value::Bytes(vec![1]).py_lt(&Value::Bytes(vec![1, 0])).unwrap());
        let short = Value::List(ints(&[1]));
        let mixed = Value::List(vec![Value::Int(1), s("a")]);
        assert!(short.py_lt(&mixed).unwrap(), "[1] < [1, 'a'] needs no str/int compare");
        let err = Value::List(ints(&[1, 2])).py_lt(&mixed).unwrap_err();
        assert_eq!(err.message, "'<' not supported between instances of 'int' and 'str'");
        let err = Value::List(ints(&[1])).py_lt(&Value::Tuple(ints(&[1]))).unwrap_err();
        assert_eq!(err.message, "'<' not supported between instances of 'list' and 'tuple'");
        let err = s("a").py_lt(&Value::Int(1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        assert_eq!(err.message, "'<' not supported between instances of 'str' and 'int'");
        let err = Value::None.py_lt(&Value::None).unwrap_err();
        assert_eq!(err.message, "'<' not supported between instances of 'NoneType' and 'NoneType'");
    }

    #[test]
    fn set_order_is_inclusion() {
        let one = Value::Set(set(&[Value::Int(1)]));
        let two = Value::FrozenSet(set(&[Value::Int(1), Value::Int(2)]));
        assert!(one.py_lt(&two).unwrap());
        assert!(!two.py_lt(&one).unwrap());
        assert!(!one.py_lt(&one.clone()).unwrap());
    }

    #[test]
    fn sort_is_stable_both_ways() {
        // (key, tag) pairs: equal keys must keep their original order.
        let keyed = |k: i64| Value::Int(k);
        let mut v = vec![keyed(2), Value::Float(1.0), keyed(3), Value::Bool(true), keyed(1)];
        sort_values(&mut v, false).unwrap();
        // 1.0, True, 1 are equal: original order 1.0, True, 1.
        assert!(matches!(v[0], Value::Float(_)) && matches!(v[1], Value::Bool(_)));
        assert!(matches!(v[2], Value::Int(1)) && matches!(v[3], Value::Int(2)));
        let mut v = vec![keyed(2), Value::Float(1.0), keyed(3), Value::Bool(true), keyed(1)];
        sort_values(&mut v, true).unwrap();
        assert!(matches!(v[0], Value::Int(3)) && matches!(v[1], Value::Int(2)));
        assert!(matches!(v[2], Value::Float(_)) && matches!(v[3], Value::Bool(_)));
        assert!(matches!(v[4], Value::Int(1)));
    }

    #[test]
    fn sort_matches_a_reference_on_many_items() {
        // Pairs sorted by first element only (via a wrapper) against std's stable sort.
        let n = 1000;
        let keys: Vec<i64> = (0..n).map(|i| (i * 7919) % 37).collect();
        let mut v: Vec<Value> = keys.iter().map(|&k| Value::Int(k)).collect();
        sort_values(&mut v, false).unwrap();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(v, ints(&expected));
        let mut v: Vec<Value> = keys.iter().map(|&k| Value::Int(k)).collect();
        sort_values(&mut v, true).unwrap();
        expected.reverse();
        assert_eq!(v, ints(&expected));
    }

    #[test]
    fn sort_stability_with_tags() {
        // Floats and ints that are equal carry their origin in their type.
        let mut v = Vec::new();
        for i in 0..200i64 {
            let k = i % 5;
            v.push(if i % 2 == 0 { Value::Int(k) } else { Value::Float(k as f64) });
        }
        let orig = v.clone();
        for reverse in [false, true] {
            let mut sorted = orig.clone();
            sort_values(&mut sorted, reverse).unwrap();
            let mut expected: Vec<(usize, &Value)> = orig.iter().enumerate().collect();
            let key = |v: &Value| {
                v.as_index().unwrap_or_else(|| match v {
                    Value::Float(f) => *f as i64,
                    _ => unreachable!(),
                })
            };
            expected.sort_by_key(|(_, v)| key(v));
            if reverse {
                // Stable descending: equal keys keep the original order.
                expected.sort_by_key(|e| std::cmp::Reverse(key(e.1)));
            }
            let same = sorted.iter().zip(&expected).all(|(a, (_, b))| a.type_name() == b.type_name() && a.py_eq(b));
            assert!(same, "reverse={reverse}");
        }
    }

    #[test]
    fn sort_error_leaves_list_unchanged() {
        let mut v = vec![Value::Int(3), Value::Int(1), s("a"), Value::Int(2)];
        let before = format!("{v:?}");
        let err = sort_values(&mut v, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::TypeError);
        assert_eq!(format!("{v:?}"), before);
        let mut v = vec![Value::Int(1), s("a")];
        let err = sort_values(&mut v, false).unwrap_err();
        assert_eq!(err.message, "'<' not supported between instances of 'str' and 'int'");
    }

    #[test]
    fn sort_with_nan_does_not_panic() {
        let mut v: Vec<Value> = (0..500)
            .map(|i| if i % 3 == 0 { Value::Float(f64::NAN) } else { Value::Float((i * 31 % 17) as f64) })
            .collect();
        sort_values(&mut v, false).unwrap();
        sort_values(&mut v, true).unwrap();
        assert_eq!(v.len(), 500);
    }
}
