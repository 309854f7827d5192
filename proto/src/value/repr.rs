//! Python `repr` for [`Value`]: the exact text CPython prints, since `str(proxy)` puts
//! it on the wire.
//!
//! - ints of any size in decimal (CPython 3.11+ refuses to print ints above 4300
//!   digits; agora prints them);
//! - floats as `repr(float)`: the shortest digits that round-trip, in scientific
//!   notation when the decimal exponent is below -4 or at least 16;
//! - str with CPython's quote choice and escapes (non-printable characters are
//!   escaped per the Unicode table in `printable`);
//! - bytes as `b'..'`; containers as `[1, 2]`, `(1,)`, `{'k': 3}`, `{1, 2}`, `set()`,
//!   `frozenset({1})`;
//! - an opaque [`Object`](super::Object) as the placeholder `<module.qualname object>`
//!   (CPython would show its own `__repr__`, which agora cannot run).
//!
//! Recursion is one level per nesting level; decoded values are at most
//! [`MAX_DEPTH`](super::MAX_DEPTH) deep.
use std::fmt::Write;

use super::printable::is_printable;
use super::Value;

/// Appends `repr(value)` to `out`.
pub(super) fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => push_display(out, i),
        Value::BigInt(b) => push_display(out, b),
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) => write_bytes(out, b),
        Value::List(items) => write_seq(out, "[", items.iter(), "]"),
        Value::Tuple(items) if items.len() == 1 => write_seq(out, "(", items.iter(), ",)"),
        Value::Tuple(items) => write_seq(out, "(", items.iter(), ")"),
        Value::Dict(d) => write_dict(out, d.iter()),
        Value::Set(s) if s.is_empty() => out.push_str("set()"),
        Value::Set(s) => write_seq(out, "{", s.iter(), "}"),
        Value::FrozenSet(s) if s.is_empty() => out.push_str("frozenset()"),
        Value::FrozenSet(s) => write_seq(out, "frozenset({", s.iter(), "})"),
        Value::Object(o) => {
            let _ = write!(out, "<{}.{} object>", o.module, o.qualname);
        }
    }
}

fn push_display(out: &mut String, x: &impl std::fmt::Display) {
    let _ = write!(out, "{x}");
}

fn write_seq<'a>(out: &mut String, open: &str, items: impl Iterator<Item = &'a Value>, close: &str) {
    out.push_str(open);
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(out, item);
    }
    out.push_str(close);
}

fn write_dict<'a>(out: &mut String, entries: impl Iterator<Item = (&'a Value, &'a Value)>) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(out, k);
        out.push_str(": ");
        write_repr(out, v);
    }
    out.push('}');
}

/// `repr(float)`: shortest round-trip digits, Python's layout.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        return out.push_str("nan");
    }
    if f.is_infinite() {
        return out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "1e16".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        write_fixed(out, &digits, exp);
    } else {
        write_scientific(out, &digits, exp);
    }
}

/// `digits` × 10^(exp - len + 1) in positional notation, with at least one decimal.
fn write_fixed(out: &mut String, digits: &str, exp: i32) {
    if exp < 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-exp - 1) as usize));
        out.push_str(digits);
        return;
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        out.push_str(digits);
        out.push_str(&"0".repeat(int_len - digits.len()));
        out.push_str(".0");
    } else {
        out.push_str(&digits[..int_len]);
        out.push('.');
        out.push_str(&digits[int_len..]);
    }
}

/// `d.ddde±XX`, as Python prints it (at least two exponent digits).
fn write_scientific(out: &mut String, digits: &str, exp: i32) {
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    let sign = if exp < 0 { '-' } else { '+' };
    let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
}

/// The quote Python picks: `'` unless the text has a `'` and no `"`.
fn pick_quote(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double {
        '"'
    } else {
        '\''
    }
}

/// `repr(str)`.
fn write_str(out: &mut String, s: &str) {
    let quote = pick_quote(s.contains('\''), s.contains('"'));
    out.reserve(s.len() + 2);
    out.push(quote);
    // Runs of characters that stand for themselves go in whole (a dict key's repr, in
    // every KeyError, usually is one run).
    let mut run = 0;
    for (at, c) in s.char_indices() {
        if stands_for_itself(c, quote) {
            continue;
        }
        out.push_str(&s[run..at]);
        run = at + c.len_utf8();
        push_escaped(out, c, quote);
    }
    out.push_str(&s[run..]);
    out.push(quote);
}

/// True if `c` appears as itself inside a str's repr quoted with `quote`.
fn stands_for_itself(c: char, quote: char) -> bool {
    match c {
        '\\' | '\n' | '\r' | '\t' => false,
        c if c == quote => false,
        ' '..='~' => true,
        c => !c.is_ascii() && is_printable(c),
    }
}

/// Writes a character that does not stand for itself, escaped as CPython does.
fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c => push_char_escape(out, c),
    }
}

/// `\xNN`, `\uNNNN` or `\UNNNNNNNN` (lower-case hex, as CPython).
fn push_char_escape(out: &mut String, c: char) {
    let n = u32::from(c);
    let _ = match n {
        0..=0xff => write!(out, "\\x{n:02x}"),
        0x100..=0xffff => write!(out, "\\u{n:04x}"),
        _ => write!(out, "\\U{n:08x}"),
    };
}

/// `repr(bytes)`.
fn write_bytes(out: &mut String, b: &[u8]) {
    let quote = pick_quote(b.contains(&b'\''), b.contains(&b'"'));
    out.push('b');
    out.push(quote);
    for &byte in b {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ if char::from(byte) == quote => {
                out.push('\\');
                out.push(quote);
            }
            b' '..=b'~' => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::super::{BigInt, Build, Dict, Object, Set};
    use super::*;

    fn r(v: Value) -> String {
        v.py_repr()
    }
    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn scalars() {
        assert_eq!(r(Value::None), "None");
        assert_eq!(r(Value::Bool(true)), "True");
        assert_eq!(r(Value::Bool(false)), "False");
        assert_eq!(r(Value::Int(-42)), "-42");
        assert_eq!(r(Value::from_bigint(BigInt::from(1u8) << 70u32)), "1180591620717411303424");
        assert_eq!(r(Value::from_bigint(-(BigInt::from(1u8) << 70u32))), "-1180591620717411303424");
    }

    #[test]
    fn floats_match_cpython() {
        // Each pair checked against `python3 -c 'print(repr(x))'`.
        let cases: &[(f64, &str)] = &[
            (1e16, "1e+16"),
            (1.5e-5, "1.5e-05"),
            (1e-5, "1e-05"),
            (123.0, "123.0"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (1e22, "1e+22"),
            (1.2345678901234567e-7, "1.2345678901234566e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.1, "0.1"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (9999999999999998.0, "9999999999999998.0"),
            (-1.5, "-1.5"),
            (2.5e-300, "2.5e-300"),
            (1.0 / 3.0, "0.3333333333333333"),
        ];
        for &(f, want) in cases {
            assert_eq!(r(Value::Float(f)), want, "{f:e}");
        }
    }

    /// One character at a time, as `write_str` worked before it copied runs (the
    /// escapes themselves are checked against CPython in `strings_match_cpython`).
    fn str_repr_char_by_char(s: &str) -> String {
        let quote = pick_quote(s.contains('\''), s.contains('"'));
        let mut out = String::from(quote);
        for c in s.chars() {
            if stands_for_itself(c, quote) {
                out.push(c);
            } else {
                push_escaped(&mut out, c, quote);
            }
        }
        out.push(quote);
        out
    }

    proptest::proptest! {
        #[test]
        fn a_str_repr_copies_runs_but_escapes_as_char_by_char(text in "(\\PC|\\pC|[\\\\'\"\\n\\t\\r ]){0,40}") {
            let mut fast = String::new();
            write_str(&mut fast, &text);
            proptest::prop_assert_eq!(fast, str_repr_char_by_char(&text));
        }
    }

    #[test]
    fn strings_match_cpython() {
        assert_eq!(r(s("abc")), "'abc'");
        assert_eq!(r(s("it's")), "\"it's\"");
        assert_eq!(r(s("\"'")), "'\"\\''");
        assert_eq!(r(s("say \"hi\"")), "'say \"hi\"'");
        // Checked against CPython 3.11.
        let tricky = "a\u{0}\u{7f}\u{80}\u{a0}\u{ad}\u{200b}\u{2028}\u{1f600}\u{e000}\u{d7ff}\u{1b}\t\\\"'";
        assert_eq!(r(s(tricky)), "'a\\x00\\x7f\\x80\\xa0\\xad\\u200b\\u2028\u{1f600}\\ue000\\ud7ff\\x1b\\t\\\\\"\\''");
        assert_eq!(r(s("é中\n\r")), "'é中\\n\\r'");
        assert_eq!(r(s("\u{e0001}\u{10ffff}")), "'\\U000e0001\\U0010ffff'");
        assert_eq!(r(s(" ")), "' '");
        assert_eq!(r(s("\u{3000}")), "'\\u3000'");
    }

    #[test]
    fn bytes_match_cpython() {
        assert_eq!(r(Value::Bytes(b"\x00it's\x7f\xff\t".to_vec())), "b\"\\x00it's\\x7f\\xff\\t\"");
        assert_eq!(r(Value::Bytes(b"\"'".to_vec())), "b'\"\\''");
        assert_eq!(r(Value::Bytes(b"a\\b\n\r".to_vec())), "b'a\\\\b\\n\\r'");
        assert_eq!(r(Value::Bytes(vec![])), "b''");
    }

    #[test]
    fn containers_match_cpython() {
        let ints = |v: &[i64]| v.iter().map(|&i| Value::Int(i)).collect::<Vec<_>>();
        assert_eq!(r(Value::List(vec![Value::Int(1), Value::Int(2), s("x")])), "[1, 2, 'x']");
        assert_eq!(r(Value::List(vec![])), "[]");
        assert_eq!(r(Value::Tuple(vec![])), "()");
        assert_eq!(r(Value::Tuple(ints(&[1]))), "(1,)");
        assert_eq!(r(Value::Tuple(ints(&[1, 2]))), "(1, 2)");
        let mut d = Dict::new();
        assert_eq!(r(Value::Dict(d.clone())), "{}");
        d.insert(s("k"), Value::Int(3)).unwrap();
        d.insert(Value::Int(1), Value::List(vec![Value::Int(1), Value::Tuple(ints(&[2]))])).unwrap();
        assert_eq!(r(Value::Dict(d)), "{'k': 3, 1: [1, (2,)]}");
        assert_eq!(r(Value::Set(Set::new())), "set()");
        assert_eq!(r(Value::FrozenSet(Set::new())), "frozenset()");
        let one = Set::from_values(ints(&[1])).unwrap();
        assert_eq!(r(Value::Set(one.clone())), "{1}");
        assert_eq!(r(Value::FrozenSet(one)), "frozenset({1})");
        let two = Set::from_values(ints(&[1, 2])).unwrap();
        assert_eq!(r(Value::Set(two)), "{1, 2}");
    }

    #[test]
    fn objects_get_a_placeholder() {
        let obj = Object {
            module: "datetime".into(),
            qualname: "date".into(),
            build: Build::Reduce(vec![Value::Bytes(vec![7, 232, 1, 1])]),
            state: None,
            list_items: vec![],
            dict_items: vec![],
        };
        assert_eq!(r(Value::Object(Box::new(obj))), "<datetime.date object>");
    }

    #[test]
    fn py_str_is_the_text_for_str_only() {
        assert_eq!(s("a'b").py_str(), "a'b");
        assert_eq!(Value::Float(1e16).py_str(), "1e+16");
        assert_eq!(Value::List(vec![s("a")]).py_str(), "['a']");
    }

    #[test]
    fn deep_nesting_at_the_decoder_cap_is_fine() {
        let mut v = Value::Int(0);
        for _ in 0..super::super::MAX_DEPTH {
            v = Value::List(vec![v]);
        }
        let text = v.py_repr();
        assert_eq!(text.len(), 2 * super::super::MAX_DEPTH + 1);
    }
}
