//! Python's numeric tower as far as [`Value`] needs it: bool and int (small or big)
//! and float, compared and added *exactly*, as CPython does.
//!
//! Mixed int/float comparisons never round the int to a float: `2**53 + 1` is not
//! equal to `float(2**53 + 1)`, and a big int compares exactly with a huge float.
use std::cmp::Ordering;

use num_bigint::BigInt;
use num_traits::{FromPrimitive, Signed, ToPrimitive};

use super::Value;
use crate::WireError;

/// 2**63 as an `f64` (exact).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// A borrowed view of a numeric [`Value`]; bool is seen as the int 0 or 1.
#[derive(Clone, Copy)]
pub(super) enum Num<'a> {
    /// An int within `i64` (or a bool).
    Int(i64),
    /// An int outside `i64`.
    Big(&'a BigInt),
    /// A float.
    Float(f64),
}

/// Exact ordering of two numbers; `None` when a NaN is involved.
pub(super) fn cmp(a: Num<'_>, b: Num<'_>) -> Option<Ordering> {
    use Num::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(&y)),
        (Big(x), Big(y)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(&y),
        (Int(x), Big(y)) => Some(cmp_int_big(x, y)),
        (Big(x), Int(y)) => Some(cmp_int_big(y, x).reverse()),
        (Int(x), Float(y)) => cmp_int_float(x, y),
        (Float(x), Int(y)) => cmp_int_float(y, x).map(Ordering::reverse),
        (Big(x), Float(y)) => cmp_big_float(x, y),
        (Float(x), Big(y)) => cmp_big_float(y, x).map(Ordering::reverse),
    }
}

fn cmp_int_big(i: i64, b: &BigInt) -> Ordering {
    match b.to_i64() {
        Some(b) => i.cmp(&b),
        None if b.is_positive() => Ordering::Less,
        None => Ordering::Greater,
    }
}

/// Compares an int with a float without rounding either.
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // `whole` is integral and within [-2**63, 2**63), so the cast is exact.
    Some(i.cmp(&(whole as i64)).then(frac_order(f, whole)))
}

/// Compares a big int with a float without rounding either.
fn cmp_big_float(b: &BigInt, f: f64) -> Option<Ordering> {
    if let Some(i) = b.to_i64() {
        return cmp_int_float(i, f);
    }
    if f.is_nan() {
        return None;
    }
    if f.abs() < TWO_POW_63 || f.is_infinite() {
        // `b` lies outside i64 (or `f` is infinite): the signs decide.
        let b_wins = if f.is_infinite() { f < 0.0 } else { b.is_positive() };
        return Some(if b_wins { Ordering::Greater } else { Ordering::Less });
    }
    let whole = f.trunc();
    let whole_big = BigInt::from_f64(whole)?;
    Some(b.cmp(&whole_big).then(frac_order(f, whole)))
}

/// How the integer `whole` (= trunc(f)) orders against `f` itself.
fn frac_order(f: f64, whole: f64) -> Ordering {
    if f > whole {
        Ordering::Less
    } else if f < whole {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// Python `+` on two numbers: exact int arithmetic (promoting to a big int instead of
/// overflowing), float when either side is a float.
pub(super) fn add(a: Num<'_>, b: Num<'_>) -> Result<Value, WireError> {
    use Num::*;
    Ok(match (a, b) {
        (Float(x), y) | (y, Float(x)) => Value::Float(x + to_f64(y)?),
        (Int(x), Int(y)) => match x.checked_add(y) {
            Some(sum) => Value::Int(sum),
            None => Value::from_bigint(BigInt::from(x) + y),
        },
        (x, y) => Value::from_bigint(to_big(x) + to_big(y)),
    })
}

/// The number as a float, with Python's `OverflowError` for ints too large.
fn to_f64(n: Num<'_>) -> Result<f64, WireError> {
    match n {
        Num::Int(i) => Ok(i as f64),
        Num::Float(f) => Ok(f),
        Num::Big(b) => b
            .to_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| WireError::overflow_error("int too large to convert to float")),
    }
}

/// An int as a big int (floats never reach here).
fn to_big(n: Num<'_>) -> BigInt {
    match n {
        Num::Int(i) => BigInt::from(i),
        Num::Big(b) => b.clone(),
        Num::Float(f) => BigInt::from_f64(f).unwrap_or_default(),
    }
}

/// The exact integer a float holds, if it is integral and too large for `i64`.
pub(super) fn big_from_integral_float(f: f64) -> Option<BigInt> {
    if f.is_finite() && f.trunc() == f && !(-TWO_POW_63..TWO_POW_63).contains(&f) {
        BigInt::from_f64(f)
    } else {
        None
    }
}

/// The `i64` a float holds, if it is integral and fits.
pub(super) fn i64_from_integral_float(f: f64) -> Option<i64> {
    if f.trunc() == f && (-TWO_POW_63..TWO_POW_63).contains(&f) {
        Some(f as i64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(s: &str) -> BigInt {
        s.parse().unwrap()
    }

    #[test]
    fn int_float_compare_is_exact() {
        let n = (1i64 << 53) + 1;
        let f = n as f64; // rounds to 2**53
        assert_eq!(cmp(Num::Int(n), Num::Float(f)), Some(Ordering::Greater));
        assert_eq!(cmp(Num::Int(1 << 53), Num::Float(f)), Some(Ordering::Equal));
        assert_eq!(cmp(Num::Int(i64::MAX), Num::Float(TWO_POW_63)), Some(Ordering::Less));
        assert_eq!(cmp(Num::Int(i64::MIN), Num::Float(-TWO_POW_63)), Some(Ordering::Equal));
        assert_eq!(cmp(Num::Int(1), Num::Float(1.5)), Some(Ordering::Less));
        assert_eq!(cmp(Num::Int(-1), Num::Float(-1.5)), Some(Ordering::Greater));
        assert_eq!(cmp(Num::Int(0), Num::Float(f64::NAN)), None);
        assert_eq!(cmp(Num::Int(0), Num::Float(f64::INFINITY)), Some(Ordering::Less));
    }

    #[test]
    fn big_float_compare_is_exact() {
        let b = big("36893488147419103233"); // 2**65 + 1
        let f = 2f64.powi(65);
        assert_eq!(cmp(Num::Big(&b), Num::Float(f)), Some(Ordering::Greater));
        let exact = big("36893488147419103232");
        assert_eq!(cmp(Num::Big(&exact), Num::Float(f)), Some(Ordering::Equal));
        assert_eq!(cmp(Num::Float(f), Num::Big(&exact)), Some(Ordering::Equal));
        assert_eq!(cmp(Num::Big(&b), Num::Float(1.5)), Some(Ordering::Greater));
        let neg = -b.clone();
        assert_eq!(cmp(Num::Big(&neg), Num::Float(1.5)), Some(Ordering::Less));
        assert_eq!(cmp(Num::Big(&b), Num::Float(f64::INFINITY)), Some(Ordering::Less));
        assert_eq!(cmp(Num::Big(&b), Num::Float(f64::NEG_INFINITY)), Some(Ordering::Greater));
        assert_eq!(cmp(Num::Big(&b), Num::Float(f64::NAN)), None);
    }

    #[test]
    fn add_promotes_and_converts() {
        let sum = add(Num::Int(i64::MAX), Num::Int(1)).unwrap();
        assert_eq!(sum.py_repr(), "9223372036854775808");
        let back = add(Num::Big(&big("9223372036854775808")), Num::Int(-1)).unwrap();
        assert!(matches!(back, Value::Int(i64::MAX)));
        assert!(matches!(add(Num::Int(1), Num::Float(0.5)).unwrap(), Value::Float(f) if f == 1.5));
        let huge = BigInt::from(1u8) << 1100u32;
        let err = add(Num::Big(&huge), Num::Float(1.0)).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::OverflowError);
        assert_eq!(err.message, "int too large to convert to float");
    }

    #[test]
    fn big_to_float_rounds_to_nearest_even() {
        // Python: float(2**64 + 2**11) == 2**64 (tie to even), float(2**64 + 2**11 + 1) rounds up.
        let tie = (BigInt::from(1u8) << 64u32) + (1 << 11);
        assert_eq!(to_f64(Num::Big(&tie)).unwrap(), 2f64.powi(64));
        let above = tie + 1;
        assert_eq!(to_f64(Num::Big(&above)).unwrap(), 2f64.powi(64) + 4096.0);
    }
}
