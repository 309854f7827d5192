//! The dynamic [`Value`] model: what the server stores and both dialects exchange.
//!
//! A `Value` is a Python value as far as agora needs to understand one: none, bool,
//! int (arbitrary size), float, str, bytes, list, tuple, dict, set, frozenset, and an
//! opaque [`Object`] (a pickled Python object the server never executes, kept
//! structurally so it goes back out exactly as it came in).
//!
//! It follows Python's rules where a Python user would notice:
//! - equality ([`Value::py_eq`]): `1 == 1.0 == True`, int/float compare exactly, NaN
//!   equals nothing, `set == frozenset`;
//! - hashing ([`Key`]): equal values hash alike; list, dict and set are unhashable and
//!   give `TypeError: unhashable type: 'list'`;
//! - ordering ([`Value::py_lt`], [`sort_values`]): numbers with numbers, str by code
//!   point, bytes, lists and tuples lexicographically, anything else a `TypeError`;
//! - `repr` ([`Value::py_repr`]): the text CPython prints.
//!
//! Where things live:
//! - `num`: the numeric tower (exact int/float comparison, `+` without overflow);
//! - `compare`: `==`, `<` and the stable [`sort_values`];
//! - `key`: [`Key`] and [`hash_value`] (equal values hash alike), with `siphash`, the
//!   one-pass SipHash it hashes strs and bytes with;
//! - `dict`: the insertion-ordered [`Dict`] and the [`Set`], on `ring`'s block-wise
//!   deque of entries;
//! - `repr` (with its Unicode table `printable`): `repr()` as CPython prints it;
//! - `serde_conv`, `ser`, `de`: [`to_value`] / [`from_value`] for any serde type, and
//!   [`write_msgpack_of`], which encodes a scalar without building its `Value`;
//! - `msgpack`: the native wire encoding (MessagePack, with ext types [`TAG_TUPLE`]…
//!   [`TAG_OBJECT`] for what it lacks; the table is in [`Value::to_msgpack`]) as
//!   `Serialize`/`Deserialize` impls, and `codec`, the direct encoder and the
//!   non-recursive decoder behind [`Value::to_msgpack`] / [`Value::from_msgpack`].
//!
//! A `Value` is 32 bytes (a test keeps it so): every list item and dict slot holds one,
//! and at full load the server's dict lookups are bound by cache misses. So strings are
//! [`CompactString`]s (up to 24 bytes inline) and the tables of dicts and sets are boxed.
//!
//! Every decoder caps nesting at [`MAX_DEPTH`]: the operations above recurse once per
//! level, which is fine at that depth on a 2 MiB thread stack (tokio's default).

mod codec;
mod compare;
mod de;
mod dict;
mod key;
mod msgpack;
pub(crate) use codec::{put_array_len, put_bin_header, put_str_header, uint_bytes};
pub use codec::{put_str, put_uint};
pub(crate) use msgpack::{decode_prefix as decode_msgpack_prefix, encode_into as encode_msgpack_into};
mod num;
mod printable;
mod repr;
mod ring;
mod ser;
mod serde_conv;
mod siphash;

pub use compact_str::CompactString;
pub use compare::sort_values;
pub use dict::{Dict, DictIntoIter, Set, SetIntoIter};
pub use key::{hash_value, Key};
pub use msgpack::{MAX_DEPTH, TAG_BIGINT, TAG_FROZENSET, TAG_OBJECT, TAG_SET, TAG_TUPLE};
pub use num_bigint::BigInt;
pub use serde_conv::{from_value, to_value, write_msgpack_of};

use num_traits::{ToPrimitive, Zero};

/// A Python value as agora stores and transmits it.
///
/// Integers are normalised: a value that fits in `i64` is always [`Value::Int`];
/// [`Value::BigInt`] only holds values outside that range (use [`Value::from_bigint`]).
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// Python `None`.
    #[default]
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` within `i64`.
    Int(i64),
    /// Python `int` outside `i64` (never holds a value that fits in `i64`).
    BigInt(Box<BigInt>),
    /// Python `float`.
    Float(f64),
    /// Python `str`. Up to 24 bytes are stored inline (no allocation, no pointer to
    /// chase when a dict compares keys); longer strings live on the heap.
    Str(CompactString),
    /// Python `bytes`.
    Bytes(Vec<u8>),
    /// Python `list`.
    List(Vec<Value>),
    /// Python `tuple`.
    Tuple(Vec<Value>),
    /// Python `dict`, insertion ordered.
    Dict(Dict),
    /// Python `set`.
    Set(Set),
    /// Python `frozenset`.
    FrozenSet(Set),
    /// An opaque Python object the server does not interpret.
    Object(Box<Object>),
}

/// An opaque Python object, kept as the pickle described it so it can be written back
/// exactly: the class (or callable) it was built with, the arguments, and the state and
/// items applied afterwards. The server never calls anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `module` of the class or callable (`"datetime"`).
    pub module: String,
    /// Qualified name within the module (`"datetime"`, `"Color"`).
    pub qualname: String,
    /// How the object was built.
    pub build: Build,
    /// State applied with pickle's BUILD, if any.
    pub state: Option<Value>,
    /// Items appended after construction (pickle APPENDS on a REDUCE'd object).
    pub list_items: Vec<Value>,
    /// Items set after construction (pickle SETITEMS on a REDUCE'd object).
    pub dict_items: Vec<(Value, Value)>,
}

/// How an opaque [`Object`] was constructed.
#[derive(Debug, Clone, PartialEq)]
pub enum Build {
    /// The object *is* the global itself (a class or function reference).
    Global,
    /// `callable(*args)` (pickle REDUCE).
    Reduce(Vec<Value>),
    /// `cls.__new__(cls, *args)` (pickle NEWOBJ).
    NewObj(Vec<Value>),
    /// `cls.__new__(cls, *args, **kwargs)` (pickle NEWOBJ_EX).
    NewObjEx(Vec<Value>, Vec<(Value, Value)>),
}

impl Value {
    /// An opaque object built as `module.qualname(*args)` (pickle's REDUCE), with no
    /// state or items: how slices, arrays and other well-known callables travel.
    pub fn reduce(module: &str, qualname: &str, args: Vec<Value>) -> Value {
        Value::Object(Box::new(Object {
            module: module.to_owned(),
            qualname: qualname.to_owned(),
            build: Build::Reduce(args),
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        }))
    }

    /// Builds an int from a big integer, normalising to [`Value::Int`] when it fits.
    pub fn from_bigint(n: BigInt) -> Value {
        match n.to_i64() {
            Some(i) => Value::Int(i),
            None => Value::BigInt(Box::new(n)),
        }
    }

    /// The Python type name (`'int'`, `'str'`, `'list'`…), as used in error messages.
    /// An [`Object`] gives its class's qualified name.
    pub fn type_name(&self) -> &str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Object(o) => &o.qualname,
        }
    }

    /// Python truthiness (`bool(x)`). An [`Object`] is always true (agora cannot call
    /// its `__bool__` or `__len__`).
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(b) => !b.is_zero(),
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(v) | Value::Tuple(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Set(s) | Value::FrozenSet(s) => !s.is_empty(),
            Value::Object(_) => true,
        }
    }

    /// The value as an `i64` if it is an int (or bool) that fits, as Python's
    /// `operator.index` would accept it.
    pub fn as_index(&self) -> Option<i64> {
        match self {
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Int(i) => Some(*i),
            Value::BigInt(b) => b.to_i64(),
            _ => None,
        }
    }

    /// Python `==`.
    pub fn py_eq(&self, other: &Value) -> bool {
        compare::py_eq(self, other)
    }

    /// Python `<`, or the `TypeError` Python raises for unorderable types
    /// (`'<' not supported between instances of 'str' and 'int'`).
    pub fn py_lt(&self, other: &Value) -> Result<bool, crate::WireError> {
        compare::py_lt(self, other)
    }

    /// Python `+` for numbers (int, bool, float, big int; ints never overflow) and for
    /// sequences of the same type (str, bytes, list, tuple).
    pub fn py_add(&self, other: &Value) -> Result<Value, crate::WireError> {
        if let (Some(a), Some(b)) = (self.as_num(), other.as_num()) {
            return num::add(a, b);
        }
        concat(self, other)
    }

    /// Python `repr(x)`.
    pub fn py_repr(&self) -> String {
        let mut out = String::new();
        repr::write_repr(&mut out, self);
        out
    }

    /// Python `str(x)` (the text itself for a str, else the repr).
    pub fn py_str(&self) -> String {
        match self {
            Value::Str(s) => s.to_string(),
            other => other.py_repr(),
        }
    }

    /// Roughly how many bytes the value takes once stored: its own 32 bytes plus what
    /// it owns on the heap (long strings, bytes, items, table slots). An estimate for
    /// the memory limit's admission check, not an exact count of allocations.
    pub fn footprint(&self) -> usize {
        const SLOT: usize = std::mem::size_of::<Value>();
        // A hash table's entry: the slot, its hash and index (see `Dict`, `Set`).
        const ENTRY: usize = 16;
        SLOT + match self {
            Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 0,
            Value::BigInt(b) => b.bits().div_ceil(8) as usize + 24,
            Value::Str(s) if s.is_heap_allocated() => s.len(),
            Value::Str(_) => 0,
            Value::Bytes(b) => b.len(),
            Value::List(items) | Value::Tuple(items) => items.iter().map(Value::footprint).sum(),
            Value::Dict(d) => d.iter().map(|(k, v)| k.footprint() + v.footprint() + ENTRY).sum(),
            Value::Set(s) | Value::FrozenSet(s) => s.iter().map(|v| v.footprint() + ENTRY).sum(),
            Value::Object(o) => {
                let build = match &o.build {
                    Build::Global => 0,
                    Build::Reduce(args) | Build::NewObj(args) => args.iter().map(Value::footprint).sum(),
                    Build::NewObjEx(args, kwargs) => {
                        args.iter().map(Value::footprint).sum::<usize>()
                            + kwargs.iter().map(|(k, v)| k.footprint() + v.footprint()).sum::<usize>()
                    }
                };
                std::mem::size_of::<Object>()
                    + o.module.len()
                    + o.qualname.len()
                    + build
                    + o.state.as_ref().map_or(0, Value::footprint)
                    + o.list_items.iter().map(Value::footprint).sum::<usize>()
                    + o.dict_items.iter().map(|(k, v)| k.footprint() + v.footprint()).sum::<usize>()
            }
        }
    }

    /// Encodes the value as MessagePack, the native dialect's encoding (byte for byte
    /// what rmp-serde writes for the value). Encoding cannot fail.
    ///
    /// None is nil, bool bool, int int, float float 64, str str, bytes bin, list array,
    /// dict map; the rest are MessagePack ext types: [`TAG_TUPLE`] (1), [`TAG_SET`] (2)
    /// and [`TAG_FROZENSET`] (3) hold their members as an array, [`TAG_BIGINT`] (4) the
    /// signed little-endian two's complement bytes, [`TAG_OBJECT`] (5) the array
    /// `[module, qualname, build, args, kwargs, state, list_items, dict_items]` (build:
    /// 0 global, 1 REDUCE, 2 NEWOBJ, 3 NEWOBJ_EX; kwargs and dict items as `[k, v]`
    /// arrays; state an array of 0 or 1 value).
    pub fn to_msgpack(&self) -> Vec<u8> {
        msgpack::encode(self)
    }

    /// Appends what [`Value::to_msgpack`] returns to `out`: for encoders that write a
    /// message around values by hand.
    pub fn write_msgpack(&self, out: &mut Vec<u8>) {
        msgpack::encode_into(self, out)
    }

    /// Decodes a value from MessagePack, rejecting malformed or too deeply nested input
    /// (more than [`MAX_DEPTH`] levels) and trailing bytes, with [`ErrorCode::Protocol`].
    ///
    /// [`ErrorCode::Protocol`]: crate::ErrorCode::Protocol
    pub fn from_msgpack(bytes: &[u8]) -> Result<Value, crate::WireError> {
        msgpack::decode(bytes)
    }

    /// A view of the value as a number, if it is a bool, int or float.
    fn as_num(&self) -> Option<num::Num<'_>> {
        match self {
            Value::Bool(b) => Some(num::Num::Int(i64::from(*b))),
            Value::Int(i) => Some(num::Num::Int(*i)),
            Value::BigInt(b) => Some(num::Num::Big(b)),
            Value::Float(f) => Some(num::Num::Float(*f)),
            _ => None,
        }
    }
}

/// Sequence concatenation (`'a' + 'b'`, `[1] + [2]`…) with Python's error texts.
fn concat(a: &Value, b: &Value) -> Result<Value, crate::WireError> {
    let joined = |x: &[Value], y: &[Value]| [x, y].concat();
    Ok(match (a, b) {
        (Value::Str(x), Value::Str(y)) => Value::Str([x.as_str(), y.as_str()].concat().into()),
        (Value::Bytes(x), Value::Bytes(y)) => Value::Bytes([&x[..], y].concat()),
        (Value::List(x), Value::List(y)) => Value::List(joined(x, y)),
        (Value::Tuple(x), Value::Tuple(y)) => Value::Tuple(joined(x, y)),
        (Value::Str(_) | Value::List(_) | Value::Tuple(_), _) => {
            let (left, right) = (a.type_name(), b.type_name());
            let msg = format!("can only concatenate {left} (not \"{right}\") to {left}");
            return Err(crate::WireError::type_error(msg));
        }
        (Value::Bytes(_), _) => {
            let msg = format!("can't concat {} to bytes", b.type_name());
            return Err(crate::WireError::type_error(msg));
        }
        _ => {
            let msg = format!("unsupported operand type(s) for +: '{}' and '{}'", a.type_name(), b.type_name());
            return Err(crate::WireError::type_error(msg));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn a_value_is_four_words() {
        // Every list item and dict slot holds one: a bigger Value is more cache misses
        // per lookup (BENCHMARKS.md, "Profiles"). Large variants go behind a pointer.
        assert_eq!(std::mem::size_of::<Value>(), 32);
    }

    #[test]
    fn footprint_counts_what_a_value_owns() {
        assert_eq!(Value::Int(5).footprint(), 32);
        assert_eq!(s("short").footprint(), 32, "inline strings own no heap");
        assert_eq!(Value::Bytes(vec![0; 8 << 20]).footprint(), 32 + (8 << 20));
        let nested = Value::List(vec![Value::Bytes(vec![0; 1000]), s(&"x".repeat(100))]);
        assert_eq!(nested.footprint(), 32 + (32 + 1000) + (32 + 100));
        let dict = Value::Dict(Dict::from_pairs([(s("k"), Value::Bytes(vec![0; 64]))]).unwrap());
        assert_eq!(dict.footprint(), 32 + 32 + (32 + 64) + 16);
    }

    #[test]
    fn big_ints_are_normalised() {
        assert!(matches!(Value::from_bigint(BigInt::from(5)), Value::Int(5)));
        assert!(matches!(Value::from_bigint(BigInt::from(i64::MIN)), Value::Int(i64::MIN)));
        assert!(matches!(Value::from_bigint(BigInt::from(u64::MAX)), Value::BigInt(_)));
    }

    #[test]
    fn type_names_are_pythons() {
        let obj = Object {
            module: "enum".into(),
            qualname: "Color".into(),
            build: Build::Global,
            state: None,
            list_items: vec![],
            dict_items: vec![],
        };
        let cases = [
            (Value::None, "NoneType"),
            (Value::Bool(true), "bool"),
            (Value::Int(1), "int"),
            (Value::from_bigint(BigInt::from(u64::MAX)), "int"),
            (Value::Float(1.0), "float"),
            (s(""), "str"),
            (Value::Bytes(vec![]), "bytes"),
            (Value::List(vec![]), "list"),
            (Value::Tuple(vec![]), "tuple"),
            (Value::Dict(Dict::new()), "dict"),
            (Value::Set(Set::new()), "set"),
            (Value::FrozenSet(Set::new()), "frozenset"),
            (Value::Object(Box::new(obj)), "Color"),
        ];
        for (v, name) in cases {
            assert_eq!(v.type_name(), name);
        }
    }

    #[test]
    fn truthiness_and_index() {
        let falsy = [
            Value::None,
            Value::Bool(false),
            Value::Int(0),
            Value::Float(0.0),
            Value::Float(-0.0),
            s(""),
            Value::Bytes(vec![]),
            Value::List(vec![]),
            Value::Tuple(vec![]),
            Value::Dict(Dict::new()),
            Value::Set(Set::new()),
        ];
        assert!(falsy.iter().all(|v| !v.is_truthy()));
        let truthy = [Value::Float(f64::NAN), Value::Int(-1), s("0"), Value::Tuple(vec![Value::None])];
        assert!(truthy.iter().all(Value::is_truthy));
        assert_eq!(Value::Bool(true).as_index(), Some(1));
        assert_eq!(Value::Int(-3).as_index(), Some(-3));
        assert_eq!(Value::Float(1.0).as_index(), None);
        assert_eq!(Value::from_bigint(BigInt::from(u64::MAX)).as_index(), None);
        assert_eq!(s("1").as_index(), None);
    }

    #[test]
    fn add_numbers() {
        let add = |a: Value, b: Value| a.py_add(&b).unwrap().py_repr();
        assert_eq!(add(Value::Int(2), Value::Int(3)), "5");
        assert_eq!(add(Value::Bool(true), Value::Bool(true)), "2");
        assert_eq!(add(Value::Int(i64::MAX), Value::Int(1)), "9223372036854775808");
        assert_eq!(add(Value::Int(i64::MIN), Value::Int(-1)), "-9223372036854775809");
        assert_eq!(add(Value::Int(1), Value::Float(0.5)), "1.5");
        assert_eq!(add(Value::Float(0.1), Value::Float(0.2)), "0.30000000000000004");
        let big = Value::from_bigint(BigInt::from(u64::MAX));
        assert_eq!(add(big.clone(), Value::Float(1.0)), "1.8446744073709552e+19");
        assert!(matches!(big.py_add(&Value::Int(i64::MIN)).unwrap(), Value::Int(i64::MAX)));
    }

    #[test]
    fn add_sequences() {
        let add = |a: Value, b: Value| a.py_add(&b).unwrap().py_repr();
        assert_eq!(add(s("ab"), s("c")), "'abc'");
        assert_eq!(add(Value::Bytes(b"a".to_vec()), Value::Bytes(b"b".to_vec())), "b'ab'");
        assert_eq!(add(Value::List(vec![Value::Int(1)]), Value::List(vec![s("x")])), "[1, 'x']");
        assert_eq!(add(Value::Tuple(vec![Value::Int(1)]), Value::Tuple(vec![])), "(1,)");
    }

    #[test]
    fn add_errors_use_python_text() {
        // Each checked against CPython 3.11.
        let cases = [
            (Value::Int(1), s("a"), "unsupported operand type(s) for +: 'int' and 'str'"),
            (s("a"), Value::Int(1), "can only concatenate str (not \"int\") to str"),
            (Value::List(vec![]), Value::Tuple(vec![]), "can only concatenate list (not \"tuple\") to list"),
            (Value::Tuple(vec![]), Value::List(vec![]), "can only concatenate tuple (not \"list\") to tuple"),
            (Value::Bytes(vec![]), s("a"), "can't concat str to bytes"),
            (Value::None, Value::Int(1), "unsupported operand type(s) for +: 'NoneType' and 'int'"),
            (
                Value::Dict(Dict::new()),
                Value::Dict(Dict::new()),
                "unsupported operand type(s) for +: 'dict' and 'dict'",
            ),
            (Value::Bool(true), Value::None, "unsupported operand type(s) for +: 'bool' and 'NoneType'"),
        ];
        for (a, b, msg) in cases {
            let err = a.py_add(&b).unwrap_err();
            assert_eq!(err.code, ErrorCode::TypeError);
            assert_eq!(err.message, msg);
        }
    }

    #[test]
    fn values_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Value>();
        shareable::<Dict>();
        shareable::<Key>();
    }

    #[test]
    fn key_error_carries_the_repr() {
        let err = crate::WireError::key_error(s("nope"));
        assert_eq!(err.message, "'nope'");
    }
}
