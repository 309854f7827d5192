//! [`Key`]: a hashable [`Value`], hashed and compared by Python's rules, and
//! [`hash_value`], the hash behind [`Dict`](super::Dict) and [`Set`](super::Set).
//!
//! The one rule a hash must keep is *equal values hash alike* under
//! [`Value::py_eq`]. So every number that holds an integer (bool, int, big int,
//! integral float — including floats beyond `i64`, hashed as the exact big int they
//! hold) hashes its exact integer value; non-integral floats hash their bits. Str,
//! bytes and tuple carry distinct type tags (`'a' != b'a'`), and set and frozenset
//! share one (`{1} == frozenset({1})`) and combine their members' hashes in an
//! order-independent way.
//!
//! Hashes are keyed with a per-process random seed (SipHash), so they are stable
//! within a process only and do not let a client aim collisions at a dict.
//!
//! List, dict and set are unhashable (`TypeError: unhashable type: 'list'`), as is a
//! tuple or frozenset holding one. An opaque [`Object`](super::Object) is always
//! hashable (Python objects hash by identity unless their class says otherwise); it
//! hashes its structure, lists and dicts inside included.
//!
//! NaN never equals anything, itself included, so a NaN key can be inserted but never
//! found again, and each insert of a NaN makes a new entry. (CPython finds the *same*
//! NaN object by identity; agora has no identities.)
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::OnceLock;

use num_bigint::BigInt;

use super::{num, siphash, Build, Dict, Object, Set, Value};
use crate::WireError;

mod ahead;

/// A [`Value`] known to be hashable, with `Hash`/`Eq` following Python
/// (`1`, `1.0` and `True` are one key). The hash is computed once, on creation.
///
/// `Eq` is Python's `==`, which is not reflexive for NaN: a key holding a NaN never
/// equals anything, so it can be stored in a map but not looked up.
#[derive(Debug, Clone)]
pub struct Key {
    value: Value,
    hash: u64,
}

impl Key {
    /// Checks that `value` is hashable (`TypeError: unhashable type: 'list'` otherwise).
    pub fn new(value: Value) -> Result<Key, WireError> {
        let hash = hash_value(&value)?;
        Ok(Key { value, hash })
    }
    /// The value.
    pub fn value(&self) -> &Value {
        &self.value
    }
    /// The value, by move.
    pub fn into_value(self) -> Value {
        self.value
    }
    /// The key's hash ([`hash_value`] of its value).
    pub fn hash_code(&self) -> u64 {
        self.hash
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.hash == other.hash && self.value.py_eq(&other.value)
    }
}

impl Eq for Key {}

/// The Python-compatible hash of a value, or `TypeError` if it is unhashable.
///
/// Values that are equal under [`Value::py_eq`] hash alike. The hash is stable within
/// one process (it is seeded per process).
pub fn hash_value(value: &Value) -> Result<u64, WireError> {
    hash_with(value, Mode::Strict).ok_or_else(|| {
        let culprit = find_unhashable(value).unwrap_or(value);
        WireError::type_error(format!("unhashable type: '{}'", culprit.type_name()))
    })
}

/// [`hash_value`], for a lookup of `value` that comes soon after on this thread (a
/// pipelined batch's, prefetched): a short str's hash is kept for that lookup, which
/// then need not compute it again (`ahead`).
pub(crate) fn hash_value_ahead(value: &Value) -> Result<u64, WireError> {
    match value {
        // Computed, not recalled: recalling a key that is not the oldest queued would
        // empty the queue that the batch's earlier keys are in.
        Value::Str(s) => {
            let hash = hash_bytes(tag::STR, s.as_bytes());
            ahead::remember(s.as_bytes(), hash);
            Ok(hash)
        }
        _ => hash_value(value),
    }
}

/// The list, dict or set that makes `value` unhashable.
fn find_unhashable(value: &Value) -> Option<&Value> {
    match value {
        Value::List(_) | Value::Dict(_) | Value::Set(_) => Some(value),
        Value::Tuple(items) => items.iter().find_map(find_unhashable),
        _ => None,
    }
}

/// Whether unhashable containers make the hash fail (a key) or are hashed
/// structurally anyway (inside an opaque object, which is always hashable).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Strict,
    Lenient,
}

/// Type tags, so that values of types that never compare equal hash apart.
mod tag {
    pub const NONE: u8 = 0;
    pub const INT: u8 = 1;
    pub const BIG: u8 = 2;
    pub const FLOAT: u8 = 3;
    pub const STR: u8 = 4;
    pub const BYTES: u8 = 5;
    pub const TUPLE: u8 = 6;
    pub const SET: u8 = 7;
    pub const OBJECT: u8 = 8;
    pub const LIST: u8 = 9;
    pub const DICT: u8 = 10;
}

/// The process's hash seed (random, drawn once).
fn seed() -> &'static RandomState {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    SEED.get_or_init(RandomState::new)
}

/// A streaming hasher under the process's seed.
fn hasher() -> impl Hasher {
    seed().build_hasher()
}

/// The hash, or `None` if (in strict mode) the value is unhashable. Kept lean: it
/// recurses once per nesting level.
fn hash_with(value: &Value, mode: Mode) -> Option<u64> {
    let lenient = mode == Mode::Lenient;
    match value {
        Value::Tuple(items) => hash_seq(tag::TUPLE, items, mode),
        Value::FrozenSet(set) => Some(hash_set(set)),
        Value::Object(obj) => Some(hash_object(obj)),
        Value::List(items) if lenient => hash_seq(tag::LIST, items, mode),
        Value::Set(set) if lenient => Some(hash_set(set)),
        Value::Dict(dict) if lenient => Some(hash_dict(dict)),
        Value::List(_) | Value::Set(_) | Value::Dict(_) => None,
        scalar => Some(hash_scalar(scalar)),
    }
}

fn hash_scalar(value: &Value) -> u64 {
    // First, and before a streaming hasher is set up: the commonest keys.
    match value {
        Value::Str(s) => return ahead::recall(s.as_bytes()).unwrap_or_else(|| hash_bytes(tag::STR, s.as_bytes())),
        Value::Bytes(b) => return hash_bytes(tag::BYTES, b),
        _ => {}
    }
    let mut h = hasher();
    match value {
        Value::Bool(b) => hash_int(&mut h, i64::from(*b)),
        Value::Int(i) => hash_int(&mut h, *i),
        Value::BigInt(b) => hash_big(&mut h, b),
        Value::Float(f) => hash_float(&mut h, *f),
        _ => h.write_u8(tag::NONE),
    }
    h.finish()
}

/// A str's or bytes' hash: one pass of SipHash-1-3 (std's `HashMap` hash) over the
/// bytes, under a per-process random key of the type's own (its tag in the key), so
/// `'a'` and `b'a'` hash apart. Most dict keys are short strs: hashing a 16-byte one
/// this way costs 191 instructions, against 243 through std's streaming hasher.
fn hash_bytes(tag: u8, bytes: &[u8]) -> u64 {
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    // SipHash's two key words, drawn from the process's seed.
    let &(k0, k1) = KEY.get_or_init(|| (seed().hash_one(0u8), seed().hash_one(1u8)));
    siphash::siphash::<1, 3>(k0 ^ u64::from(tag), k1, bytes)
}

fn hash_int(h: &mut impl Hasher, i: i64) {
    h.write_u8(tag::INT);
    h.write_i64(i);
}

fn hash_big(h: &mut impl Hasher, b: &BigInt) {
    // A big int that fits i64 (not normalised) must hash as the small int it equals.
    match i64::try_from(b) {
        Ok(i) => hash_int(h, i),
        Err(_) => {
            h.write_u8(tag::BIG);
            b.hash(h);
        }
    }
}

fn hash_float(h: &mut impl Hasher, f: f64) {
    if let Some(i) = num::i64_from_integral_float(f) {
        hash_int(h, i);
    } else if let Some(b) = num::big_from_integral_float(f) {
        hash_big(h, &b);
    } else {
        h.write_u8(tag::FLOAT);
        h.write_u64(f.to_bits());
    }
}

fn hash_seq(tag: u8, items: &[Value], mode: Mode) -> Option<u64> {
    let mut h = hasher();
    h.write_u8(tag);
    write_seq(&mut h, items, mode)?;
    Some(h.finish())
}

fn write_seq(h: &mut impl Hasher, items: &[Value], mode: Mode) -> Option<()> {
    h.write_usize(items.len());
    for item in items {
        h.write_u64(hash_with(item, mode)?);
    }
    Some(())
}

/// What the set keeps of its members' hashes, combined in an order-independent way.
fn hash_set(set: &Set) -> u64 {
    let mut h = hasher();
    h.write_u8(tag::SET);
    write_unordered(&mut h, set.len(), set.member_hashes());
    h.finish()
}

/// A dict inside an object: its pairs, in any order.
fn hash_dict(dict: &Dict) -> u64 {
    let mut h = hasher();
    h.write_u8(tag::DICT);
    write_unordered(&mut h, dict.len(), dict.iter().map(|(k, v)| pair_hash(k, v)));
    h.finish()
}

/// Writes a combination of `hashes` that does not depend on their order.
fn write_unordered(h: &mut impl Hasher, len: usize, hashes: impl Iterator<Item = u64>) {
    let (mut sum, mut xor) = (0u64, 0u64);
    for hash in hashes {
        sum = sum.wrapping_add(spread(hash));
        xor ^= hash;
    }
    h.write_usize(len);
    h.write_u64(sum);
    h.write_u64(xor);
}

/// A bijective scramble, so that the sum and the xor of member hashes stay independent.
fn spread(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

/// A key-value pair inside an object (lenient: never fails).
fn pair_hash(k: &Value, v: &Value) -> u64 {
    let mut h = hasher();
    h.write_u64(hash_with(k, Mode::Lenient).unwrap_or(0));
    h.write_u64(hash_with(v, Mode::Lenient).unwrap_or(0));
    h.finish()
}

/// An object hashes its whole structure, leniently (lists and dicts included).
fn hash_object(obj: &Object) -> u64 {
    let mode = Mode::Lenient;
    let mut h = hasher();
    h.write_u8(tag::OBJECT);
    obj.module.hash(&mut h);
    obj.qualname.hash(&mut h);
    let (kind, args, kwargs): (u8, &[Value], &[(Value, Value)]) = match &obj.build {
        Build::Global => (0, &[], &[]),
        Build::Reduce(args) => (1, args, &[]),
        Build::NewObj(args) => (2, args, &[]),
        Build::NewObjEx(args, kwargs) => (3, args, kwargs),
    };
    h.write_u8(kind);
    let _ = write_seq(&mut h, args, mode);
    write_pairs(&mut h, kwargs);
    let _ = write_seq(&mut h, obj.state.as_slice(), mode);
    let _ = write_seq(&mut h, &obj.list_items, mode);
    write_pairs(&mut h, &obj.dict_items);
    h.finish()
}

/// Ordered pairs, as an object's kwargs and dict items are compared in order.
fn write_pairs(h: &mut impl Hasher, pairs: &[(Value, Value)]) {
    h.write_usize(pairs.len());
    for (k, v) in pairs {
        h.write_u64(pair_hash(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use proptest::prelude::*;

    fn h(v: &Value) -> u64 {
        hash_value(v).unwrap()
    }

    #[test]
    fn hashes_computed_ahead_are_the_hashes_whatever_order_the_lookups_come_in() {
        let strs = ["a", "key:000017", "", &"x".repeat(40), "a"];
        let keys: Vec<Value> = strs.iter().map(|s| Value::Str((*s).into())).collect();
        let fresh: Vec<u64> = strs.iter().map(|s| hash_bytes(tag::STR, s.as_bytes())).collect();
        let ahead: Vec<u64> = keys.iter().map(|k| hash_value_ahead(k).unwrap()).collect();
        assert_eq!(ahead, fresh);
        // In order (each recalled), then out of order (the queue emptied, computed).
        assert_eq!(keys.iter().map(h).collect::<Vec<_>>(), fresh);
        keys.iter().for_each(|k| drop(hash_value_ahead(k)));
        assert_eq!(keys.iter().rev().map(h).collect::<Vec<_>>(), fresh.iter().rev().copied().collect::<Vec<_>>());
        assert_eq!(hash_value_ahead(&Value::Int(3)).unwrap(), h(&Value::Float(3.0)));
        assert!(hash_value_ahead(&Value::List(vec![])).is_err());
    }

    #[test]
    fn equal_numbers_hash_alike() {
        assert_eq!(h(&Value::Int(1)), h(&Value::Float(1.0)));
        assert_eq!(h(&Value::Int(1)), h(&Value::Bool(true)));
        assert_eq!(h(&Value::Int(0)), h(&Value::Float(-0.0)));
        assert_eq!(h(&Value::Bool(false)), h(&Value::Float(0.0)));
        let big = BigInt::from(1u8) << 80u32;
        assert_eq!(h(&Value::from_bigint(big.clone())), h(&Value::Float(2f64.powi(80))));
        let min = Value::Float(-9_223_372_036_854_775_808.0);
        assert_eq!(h(&min), h(&Value::Int(i64::MIN)));
        // Not normalised on purpose: must still hash as the small int.
        assert_eq!(h(&Value::BigInt(Box::new(BigInt::from(7)))), h(&Value::Int(7)));
    }

    #[test]
    fn types_that_differ_hash_apart() {
        assert_ne!(h(&Value::Str("a".into())), h(&Value::Bytes(b"a".to_vec())));
        assert_ne!(h(&Value::Int(1)), h(&Value::Float(1.5)));
        let t = Value::Tuple(vec![Value::Int(1), Value::Str("a".into())]);
        let t2 = Value::Tuple(vec![Value::Float(1.0), Value::Str("a".into())]);
        assert_eq!(h(&t), h(&t2));
    }

    #[test]
    fn frozenset_hash_ignores_order() {
        let mut a = Set::new();
        let mut b = Set::new();
        for i in 0..20 {
            a.insert(Value::Int(i)).unwrap();
            b.insert(Value::Float((19 - i) as f64)).unwrap();
        }
        assert_eq!(h(&Value::FrozenSet(a)), h(&Value::FrozenSet(b)));
    }

    #[test]
    fn unhashable_types_are_rejected_with_python_text() {
        let cases = [
            (Value::List(vec![]), "unhashable type: 'list'"),
            (Value::Dict(Dict::new()), "unhashable type: 'dict'"),
            (Value::Set(Set::new()), "unhashable type: 'set'"),
            (Value::Tuple(vec![Value::Int(1), Value::List(vec![])]), "unhashable type: 'list'"),
            (Value::Tuple(vec![Value::Tuple(vec![Value::Dict(Dict::new())])]), "unhashable type: 'dict'"),
        ];
        for (value, msg) in cases {
            let err = Key::new(value).unwrap_err();
            assert_eq!(err.code, ErrorCode::TypeError);
            assert_eq!(err.message, msg);
        }
        let mut fs = Set::new();
        fs.insert(Value::Tuple(vec![Value::Int(1)])).unwrap();
        assert!(Key::new(Value::FrozenSet(fs)).is_ok());
        assert!(Set::new().insert(Value::List(vec![])).is_err());
    }

    #[test]
    fn objects_hash_structurally() {
        let obj = |x: i64| {
            let mut state = Dict::new();
            state.insert(Value::Str("x".into()), Value::List(vec![Value::Int(x)])).unwrap();
            Value::Object(Box::new(Object {
                module: "m".into(),
                qualname: "C".into(),
                build: Build::NewObj(vec![]),
                state: Some(Value::Dict(state)),
                list_items: vec![],
                dict_items: vec![],
            }))
        };
        assert_eq!(h(&obj(1)), h(&obj(1)));
        assert_ne!(h(&obj(1)), h(&obj(2)));
        assert!(obj(1).py_eq(&obj(1)));
        let k1 = Key::new(obj(1)).unwrap();
        assert_eq!(k1, Key::new(obj(1)).unwrap());
    }

    #[test]
    fn nan_keys_are_never_equal() {
        let k = Key::new(Value::Float(f64::NAN)).unwrap();
        assert_ne!(k, k.clone());
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::Int),
            any::<i64>().prop_map(Value::Int),
            (-5i32..5).prop_map(|i| Value::Float(f64::from(i))),
            any::<f64>().prop_map(Value::Float),
            any::<i64>().prop_map(|i| Value::Float(i as f64)),
            (any::<i64>(), 0u32..80).prop_map(|(i, s)| Value::from_bigint(BigInt::from(i) << s)),
            (any::<i32>(), 0i32..80).prop_map(|(i, s)| Value::Float(f64::from(i) * 2f64.powi(s))),
        ]
    }

    proptest! {
        #[test]
        fn py_eq_implies_equal_hash(a in number(), b in number()) {
            if a.py_eq(&b) {
                prop_assert_eq!(h(&a), h(&b));
            }
            let (ta, tb) = (Value::Tuple(vec![a.clone()]), Value::Tuple(vec![b.clone()]));
            if ta.py_eq(&tb) {
                prop_assert_eq!(h(&ta), h(&tb));
            }
        }

        #[test]
        fn a_number_equals_its_float_when_exact(i in any::<i64>()) {
            let f = i as f64;
            let exact = num::i64_from_integral_float(f) == Some(i);
            prop_assert_eq!(Value::Int(i).py_eq(&Value::Float(f)), exact);
            if exact {
                prop_assert_eq!(h(&Value::Int(i)), h(&Value::Float(f)));
            }
        }
    }
}
