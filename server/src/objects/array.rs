//! The shared `Array` (Python's `SyncManager.Array(typecode, sequence)`, an
//! `array.array`): typed items with CPython's range checks and error texts, indexing
//! and slicing from `sequence`, and agora's `tolist`.
//!
//! Items are stored typed (`Item`, checked against the typecode's `Format`). An
//! array travels the way CPython's `array.array` can be rebuilt from a pickle:
//! `REDUCE(array.array, (typecode, machine_bytes))`, little endian, with the item sizes
//! of LP64 Linux (`l`/`L` are 8 bytes). Incoming arrays are also read in the shape
//! CPython pickles them (`array._array_reconstructor`). Its state is the typecode
//! letter and the typed items.
//!
//! A snapshot captures a big array ([`SharedObject::begin_state`]) and reads it out
//! while it changes: an item set keeps the old item, a slice set (which may move items)
//! first copies what is still to be read.

use agora_proto::native::Kind;
use agora_proto::value::{BigInt, Build, Object};
use agora_proto::{ErrorCode, Value, WireError};
use num_traits::ToPrimitive;
use serde::{Deserialize, Serialize};

use super::sequence::{self, Capture, Selection, Subscript, Wording};
use crate::engine::Ctx;
use crate::object::{
    encode_state, sequence_state_header, Args, MethodSpec, Outcome, SharedObject, StateCapture, VEC_WRITE,
};

/// The kind's constructor and methods, declared in [`agora_proto::methods::array`].
pub use agora_proto::methods::array::CONSTRUCTOR;
use agora_proto::methods::array::METHODS;

/// How `array` words its index errors.
const WORDING: Wording = Wording {
    bad_subscript: |_| "array indices must be integers".to_string(),
    read_out_of_range: "array index out of range",
    write_out_of_range: "array assignment index out of range",
    assigned: "array",
};

/// How CPython checks an int for one typecode, which decides its error texts.
#[derive(Debug, Clone, Copy)]
enum Range {
    /// Through a C `long`, then the item's own bounds (`b B h H i l`); `name` is what
    /// CPython calls the item type in its messages.
    Long { name: &'static str, min: i64, max: i64 },
    /// Through a C `unsigned long`, then the item's bound (`I L`).
    ULong { max: u64 },
    /// Through a C `long long` (`q`).
    LongLong,
    /// Through a C `unsigned long long` (`Q`).
    ULongLong,
    /// A float, stored as a C `float` (`f`, 4 bytes) or `double` (`d`).
    Float,
}

/// One supported typecode.
#[derive(Debug)]
struct Format {
    /// The typecode letter.
    code: char,
    /// Bytes per item.
    size: usize,
    /// How ints are checked (or `Float`).
    range: Range,
    /// CPython's machine format code for this typecode in little endian (the big endian
    /// one, where it differs, is one more).
    machine_format: i64,
}

/// The typecodes agora supports, as on LP64 Linux.
const FORMATS: [Format; 12] = [
    Format { code: 'b', size: 1, range: Range::Long { name: "signed char", min: -128, max: 127 }, machine_format: 1 },
    Format {
        code: 'B',
        size: 1,
        range: Range::Long { name: "unsigned byte integer", min: 0, max: 255 },
        machine_format: 0,
    },
    Format {
        code: 'h',
        size: 2,
        range: Range::Long { name: "signed short integer", min: i16::MIN as i64, max: i16::MAX as i64 },
        machine_format: 4,
    },
    Format { code: 'H', size: 2, range: Range::Long { name: "unsigned short", min: 0, max: 65535 }, machine_format: 2 },
    Format {
        code: 'i',
        size: 4,
        range: Range::Long { name: "signed integer", min: i32::MIN as i64, max: i32::MAX as i64 },
        machine_format: 8,
    },
    Format { code: 'I', size: 4, range: Range::ULong { max: u32::MAX as u64 }, machine_format: 6 },
    Format {
        code: 'l',
        size: 8,
        range: Range::Long { name: "signed long", min: i64::MIN, max: i64::MAX },
        machine_format: 12,
    },
    Format { code: 'L', size: 8, range: Range::ULong { max: u64::MAX }, machine_format: 10 },
    Format { code: 'q', size: 8, range: Range::LongLong, machine_format: 12 },
    Format { code: 'Q', size: 8, range: Range::ULongLong, machine_format: 10 },
    Format { code: 'f', size: 4, range: Range::Float, machine_format: 14 },
    Format { code: 'd', size: 8, range: Range::Float, machine_format: 16 },
];

/// One stored item. Ints beyond `i64` (only `L`/`Q` reach them) are `UInt`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum Item {
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl Item {
    /// A range-checked int as an item.
    fn from_int(n: i128) -> Item {
        i64::try_from(n).map_or(Item::UInt(n as u64), Item::Int)
    }

    /// Appends the item's canonical encoding (serde's, as [`encode_state`] writes it: a
    /// one-entry map from the variant's name).
    fn write_msgpack(self, out: &mut Vec<u8>) {
        rmp::encode::write_map_len(out, 1).expect(VEC_WRITE);
        match self {
            Item::Int(i) => {
                rmp::encode::write_str(out, "Int").expect(VEC_WRITE);
                rmp::encode::write_sint(out, i).expect(VEC_WRITE);
            }
            Item::UInt(u) => {
                rmp::encode::write_str(out, "UInt").expect(VEC_WRITE);
                rmp::encode::write_uint(out, u).expect(VEC_WRITE);
            }
            Item::Float(x) => {
                rmp::encode::write_str(out, "Float").expect(VEC_WRITE);
                rmp::encode::write_f64(out, x).expect(VEC_WRITE);
            }
        }
    }

    /// The item as a Python value.
    fn to_value(self) -> Value {
        match self {
            Item::Int(i) => Value::Int(i),
            Item::UInt(u) => Value::from_bigint(BigInt::from(u)),
            Item::Float(x) => Value::Float(x),
        }
    }
}

impl Format {
    /// The format for a typecode argument, with CPython's errors.
    fn parse(typecode: &Value) -> Result<&'static Format, WireError> {
        let code = match typecode {
            Value::Str(text) if text.chars().count() == 1 => text.chars().next().unwrap_or_default(),
            other => {
                return Err(WireError::type_error(format!(
                    "array() argument 1 must be a unicode character, not {}",
                    other.type_name()
                )))
            }
        };
        if let Some(format) = FORMATS.iter().find(|f| f.code == code) {
            return Ok(format);
        }
        if code == 'u' || code == 'w' {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                format!("agora does not support array typecode '{code}'"),
            ));
        }
        Err(WireError::value_error("bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)"))
    }

    /// Converts a value to an item of this typecode, with CPython's errors.
    fn item(&self, value: &Value) -> Result<Item, WireError> {
        match self.range {
            Range::Float => self.float_item(value),
            range => check_int(range, int_of(value)?).map(Item::from_int).map_err(WireError::overflow_error),
        }
    }

    /// A float item (ints are converted; `f` rounds to single precision).
    fn float_item(&self, value: &Value) -> Result<Item, WireError> {
        let x = match value {
            Value::Float(x) => *x,
            Value::Int(i) => *i as f64,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::BigInt(n) => n
                .to_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| WireError::overflow_error("int too large to convert to float"))?,
            other => return Err(WireError::type_error(format!("must be real number, not {}", other.type_name()))),
        };
        Ok(Item::Float(if self.size == 4 { x as f32 as f64 } else { x }))
    }

    /// Converts values to items.
    fn items(&self, values: &[Value]) -> Result<Vec<Item>, WireError> {
        values.iter().map(|v| self.item(v)).collect()
    }

    /// Whether ints of this typecode are signed (for reading machine bytes).
    fn signed(&self) -> bool {
        matches!(self.range, Range::Long { min, .. } if min < 0) || matches!(self.range, Range::LongLong)
    }

    /// Items from little-endian machine bytes (`array(typecode, bytes)`).
    fn decode(&self, bytes: &[u8]) -> Result<Vec<Item>, WireError> {
        let chunks = bytes.chunks_exact(self.size);
        if !chunks.remainder().is_empty() {
            return Err(WireError::value_error("bytes length not a multiple of item size"));
        }
        Ok(chunks.map(|chunk| self.decode_item(chunk)).collect())
    }

    /// One item from its little-endian bytes.
    fn decode_item(&self, chunk: &[u8]) -> Item {
        let mut buffer = [0u8; 8];
        buffer[..self.size].copy_from_slice(chunk);
        let raw = u64::from_le_bytes(buffer);
        let unused = 64 - 8 * self.size as u32;
        match self.range {
            Range::Float if self.size == 4 => Item::Float(f32::from_bits(raw as u32) as f64),
            Range::Float => Item::Float(f64::from_bits(raw)),
            _ if self.signed() => Item::Int(((raw << unused) as i64) >> unused),
            _ => Item::from_int(raw.into()),
        }
    }

    /// Items as little-endian machine bytes.
    fn encode(&self, items: &[Item]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(items.len() * self.size);
        for item in items {
            let raw = match *item {
                Item::Int(i) => i as u64,
                Item::UInt(u) => u,
                Item::Float(x) if self.size == 4 => u64::from((x as f32).to_bits()),
                Item::Float(x) => x.to_bits(),
            };
            bytes.extend_from_slice(&raw.to_le_bytes()[..self.size]);
        }
        bytes
    }

    /// An array of this typecode as it travels: `REDUCE(array.array, (typecode, bytes))`.
    fn to_value(&self, items: &[Item]) -> Value {
        Value::reduce(
            "array",
            "array",
            vec![Value::Str(self.code.to_string().into()), Value::Bytes(self.encode(items))],
        )
    }
}

/// The int an integer item is made from (saturating far beyond any item range).
fn int_of(value: &Value) -> Result<i128, WireError> {
    match value {
        Value::BigInt(n) => {
            Ok(n.to_i128().unwrap_or(if n.sign() == num_bigint::Sign::Minus { i128::MIN } else { i128::MAX }))
        }
        other => other.as_index().map(i128::from).ok_or_else(|| {
            WireError::type_error(format!("'{}' object cannot be interpreted as an integer", other.type_name()))
        }),
    }
}

/// CPython's range check for an int item, as its `OverflowError` text on failure.
fn check_int(range: Range, n: i128) -> Result<i128, String> {
    let fits_i64 = i64::try_from(n).is_ok();
    let fits_u64 = u64::try_from(n).is_ok();
    let text = match range {
        Range::Long { .. } if !fits_i64 => "Python int too large to convert to C long",
        Range::Long { name, min, .. } if n < i128::from(min) => return Err(format!("{name} is less than minimum")),
        Range::Long { name, max, .. } if n > i128::from(max) => return Err(format!("{name} is greater than maximum")),
        Range::ULong { .. } if n < 0 => "can't convert negative value to unsigned int",
        Range::ULong { .. } if !fits_u64 => "Python int too large to convert to C unsigned long",
        Range::ULong { max } if n > i128::from(max) => "unsigned int is greater than maximum",
        Range::LongLong if !fits_i64 => "int too big to convert",
        Range::ULongLong if n < 0 => "can't convert negative int to unsigned",
        Range::ULongLong if !fits_u64 => "int too big to convert",
        _ => return Ok(n),
    };
    Err(text.to_string())
}

/// A shared `array.array`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArrayObject {
    #[serde(with = "typecode")]
    format: &'static Format,
    items: Vec<Item>,
    /// A snapshot's capture being read out, if any (not state).
    #[serde(skip)]
    capture: Option<Box<Capture<Item>>>,
}

/// A copy is a new array: a capture running on the original is not copied.
impl Clone for ArrayObject {
    fn clone(&self) -> Self {
        ArrayObject { format: self.format, items: self.items.clone(), capture: None }
    }
}

/// Serde for an array's [`Format`]: its typecode letter.
mod typecode {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Format, FORMATS};

    /// Writes the typecode letter.
    pub fn serialize<S: Serializer>(format: &&'static Format, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_char(format.code)
    }

    /// Reads a typecode letter back (one of the supported typecodes).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'static Format, D::Error> {
        let code = char::deserialize(deserializer)?;
        FORMATS
            .iter()
            .find(|f| f.code == code)
            .ok_or_else(|| serde::de::Error::custom(format!("unsupported array typecode '{code}'")))
    }
}

impl ArrayObject {
    /// `Array(typecode, sequence, lock=True)`: `lock` is ignored (every call is atomic).
    pub fn new(mut args: Args) -> Result<ArrayObject, WireError> {
        build(&args.required(0), args.required(1))
    }

    /// Runs one method; `__setitem__` returns `None`.
    fn dispatch(&mut self, method: &str, mut args: Args) -> Result<Value, WireError> {
        match method {
            "__len__" => Ok(Value::Int(self.items.len() as i64)),
            "__getitem__" => Ok(match sequence::get(&self.items, &args.required(0), &WORDING)? {
                Selection::One(item) => item.to_value(),
                Selection::Many(items) => self.format.to_value(&items),
            }),
            "__setitem__" => self.set(&args.required(0), &args.required(1)).map(|()| Value::None),
            "tolist" => Ok(Value::List(self.values())),
            other => Err(WireError::new(ErrorCode::Internal, format!("Array has no method '{other}'"))),
        }
    }

    /// `self[key] = value`: an item, or for a slice an array of the same typecode (or,
    /// beyond CPython, a list or tuple of items).
    fn set(&mut self, key: &Value, value: &Value) -> Result<(), WireError> {
        match Subscript::parse(key, &WORDING)? {
            Subscript::Index(index) => {
                let at = sequence::position(index, self.items.len(), WORDING.write_out_of_range)?;
                let item = self.format.item(value)?;
                if let Some(c) = self.capture.as_deref_mut() {
                    c.preserve(&self.items, at);
                }
                self.items[at] = item;
            }
            Subscript::Slice(slice) => {
                let items = self.slice_value(value)?;
                if let Some(c) = self.capture.as_deref_mut() {
                    c.copy_unread(&self.items);
                }
                // CPython: an empty array assigned to an extended slice deletes it.
                if items.is_empty() && !slice.is_contiguous() {
                    sequence::delete_slice(&mut self.items, &slice);
                } else {
                    sequence::assign_slice(&mut self.items, &slice, items, &WORDING)?;
                }
            }
        }
        Ok(())
    }

    /// The items of a value assigned to a slice.
    fn slice_value(&self, value: &Value) -> Result<Vec<Item>, WireError> {
        match value {
            Value::List(values) | Value::Tuple(values) => self.format.items(values),
            Value::Object(object) => {
                let array = from_object(object).ok_or_else(|| not_an_array(value))??;
                if array.format.code != self.format.code {
                    return Err(WireError::type_error("bad argument type for built-in operation"));
                }
                Ok(array.items)
            }
            other => Err(not_an_array(other)),
        }
    }

    /// The items as Python values.
    fn values(&self) -> Vec<Value> {
        self.items.iter().map(|item| item.to_value()).collect()
    }
}

/// CPython's error for assigning something other than an array to an array slice.
fn not_an_array(value: &Value) -> WireError {
    WireError::type_error(format!("can only assign array (not \"{}\") to array slice", value.type_name()))
}

/// `array(typecode, initializer)`: the initializer is bytes (machine bytes), an array
/// (converted item by item), or an iterable of items.
fn build(typecode: &Value, initializer: Value) -> Result<ArrayObject, WireError> {
    let format = Format::parse(typecode)?;
    let items = match initializer {
        Value::Str(_) => {
            return Err(WireError::type_error(format!(
                "cannot use a str to initialize an array with typecode '{}'",
                format.code
            )))
        }
        Value::Bytes(bytes) => format.decode(&bytes)?,
        Value::Object(object) => match from_object(&object) {
            Some(source) => format.items(&source?.values())?,
            None => format.items(&sequence::into_items(Value::Object(object))?)?,
        },
        other => format.items(&sequence::into_items(other)?)?,
    };
    Ok(ArrayObject { format, items, capture: None })
}

/// Reads an array travelling as a value: `None` if the object is not an array.
/// Accepts `array.array(typecode, initializer)` and CPython's own pickle,
/// `array._array_reconstructor(array.array, typecode, machine_format, bytes)`.
fn from_object(object: &Object) -> Option<Result<ArrayObject, WireError>> {
    let Build::Reduce(args) = &object.build else { return None };
    match (object.module.as_str(), object.qualname.as_str(), args.as_slice()) {
        ("array", "array", [typecode, initializer]) => Some(build(typecode, initializer.clone())),
        ("array", "_array_reconstructor", [_class, typecode, Value::Int(machine_format), Value::Bytes(bytes)]) => {
            Some(reconstruct(typecode, *machine_format, bytes))
        }
        _ => None,
    }
}

/// `_array_reconstructor` for the typecode's own machine format in either byte order.
fn reconstruct(typecode: &Value, machine_format: i64, bytes: &[u8]) -> Result<ArrayObject, WireError> {
    let format = Format::parse(typecode)?;
    let big_endian = format.size > 1 && machine_format == format.machine_format + 1;
    if machine_format != format.machine_format && !big_endian {
        return Err(WireError::new(
            ErrorCode::Unsupported,
            format!("agora cannot convert machine format {machine_format} to array typecode '{}'", format.code),
        ));
    }
    let mut bytes = bytes.to_vec();
    if big_endian {
        bytes.chunks_mut(format.size).for_each(<[u8]>::reverse);
    }
    Ok(ArrayObject { format, items: format.decode(&bytes)?, capture: None })
}

impl SharedObject for ArrayObject {
    fn kind(&self) -> Kind {
        Kind::Array
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _ctx: &mut Ctx<'_>, method: &str, args: Args) -> Result<Outcome, WireError> {
        self.dispatch(method, args).map(Outcome::from)
    }

    fn snapshot(&self) -> Value {
        self.format.to_value(&self.items)
    }

    fn state(&self) -> Vec<u8> {
        // The bytes `encode_state(self)` writes (a test holds them equal), written by
        // hand so that a big array can be read out in steps.
        let mut letter = [0; 4];
        let letter = self.format.code.encode_utf8(&mut letter);
        let Some(mut out) = sequence_state_header(&[("format", letter)], "items", self.items.len()) else {
            return encode_state(self);
        };
        self.items.iter().for_each(|item| item.write_msgpack(&mut out));
        out
    }

    fn begin_state(&mut self) -> StateCapture {
        let mut letter = [0; 4];
        let letter = self.format.code.encode_utf8(&mut letter);
        let header = sequence::begin_capture(&mut self.capture, &[("format", letter)], "items", self.items.len());
        StateCapture::started_or(header, || self.state())
    }

    fn state_next(&mut self, out: &mut Vec<u8>, positions: usize) -> bool {
        sequence::state_next(&mut self.capture, &self.items, positions, |item| item.write_msgpack(out))
    }

    fn end_state(&mut self) {
        self.capture = None;
    }

    /// `array('i', [1, 2, 3])`, or `array('i')` when empty.
    fn repr(&self) -> String {
        let code = Value::Str(self.format.code.to_string().into()).py_repr();
        if self.items.is_empty() {
            format!("array({code})")
        } else {
            format!("array({code}, {})", Value::List(self.values()).py_repr())
        }
    }

    fn size(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::sequence::testing::{assert_error, assert_py_eq, bind_kw, call, ints, s};
    use agora_proto::slice::Slice;

    fn array(typecode: &str, items: Value) -> Result<ArrayObject, WireError> {
        ArrayObject::new(bind_kw(&CONSTRUCTOR, vec![s(typecode), items], vec![])?)
    }

    fn slice(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Value {
        Slice { start, stop, step }.to_value()
    }

    fn big(text: &str) -> Value {
        Value::from_bigint(text.parse().unwrap())
    }

    /// An array as it travels: `REDUCE(array.array, (typecode, bytes))`.
    fn pickled(typecode: &str, bytes: &[u8]) -> Value {
        Value::reduce("array", "array", vec![s(typecode), Value::Bytes(bytes.to_vec())])
    }

    /// An array as CPython pickles it: `_array_reconstructor(array.array, …)`.
    fn reconstructor(typecode: &str, machine_format: i64, bytes: &[u8]) -> Value {
        let args = vec![
            Value::Object(Box::new(Object {
                module: "array".into(),
                qualname: "array".into(),
                build: Build::Global,
                state: None,
                list_items: vec![],
                dict_items: vec![],
            })),
            s(typecode),
            Value::Int(machine_format),
            Value::Bytes(bytes.to_vec()),
        ];
        Value::reduce("array", "_array_reconstructor", args)
    }

    #[track_caller]
    fn assert_overflow(typecode: &str, item: Value, message: &str) {
        assert_error(array(typecode, Value::List(vec![item])), ErrorCode::OverflowError, message);
    }

    /// Every text checked against CPython 3.11: `array.array(code, [item])`.
    #[test]
    fn int_items_are_range_checked_like_cpython() {
        let cases: [(&str, &str, &str, &str, &str); 10] = [
            ("b", "128", "signed char is greater than maximum", "-129", "signed char is less than minimum"),
            (
                "B",
                "256",
                "unsigned byte integer is greater than maximum",
                "-1",
                "unsigned byte integer is less than minimum",
            ),
            (
                "h",
                "32768",
                "signed short integer is greater than maximum",
                "-32769",
                "signed short integer is less than minimum",
            ),
            ("H", "65536", "unsigned short is greater than maximum", "-1", "unsigned short is less than minimum"),
            (
                "i",
                "2147483648",
                "signed integer is greater than maximum",
                "-2147483649",
                "signed integer is less than minimum",
            ),
            (
                "I",
                "4294967296",
                "unsigned int is greater than maximum",
                "-1",
                "can't convert negative value to unsigned int",
            ),
            (
                "l",
                "9223372036854775808",
                "Python int too large to convert to C long",
                "-9223372036854775809",
                "Python int too large to convert to C long",
            ),
            (
                "L",
                "18446744073709551616",
                "Python int too large to convert to C unsigned long",
                "-1",
                "can't convert negative value to unsigned int",
            ),
            ("q", "9223372036854775808", "int too big to convert", "-9223372036854775809", "int too big to convert"),
            ("Q", "18446744073709551616", "int too big to convert", "-1", "can't convert negative int to unsigned"),
        ];
        for (code, high, high_text, low, low_text) in cases {
            assert_overflow(code, big(high), high_text);
            assert_overflow(code, big(low), low_text);
        }
    }

    #[test]
    fn ints_far_out_of_range_overflow_through_c_long() {
        let huge = "1267650600228229401496703205376"; // 2**100
        for code in ["b", "B", "h", "H", "i", "l"] {
            assert_overflow(code, big(huge), "Python int too large to convert to C long");
            assert_overflow(code, big(&format!("-{huge}")), "Python int too large to convert to C long");
        }
        assert_overflow("I", big(huge), "Python int too large to convert to C unsigned long");
        assert_overflow("I", big(&format!("-{huge}")), "can't convert negative value to unsigned int");
        assert_overflow("Q", big(&format!("-{huge}")), "can't convert negative int to unsigned");
    }

    #[test]
    fn extreme_values_fit() {
        let a = array("Q", Value::List(vec![big("18446744073709551615"), Value::Int(0)])).unwrap();
        assert_eq!(a.repr(), "array('Q', [18446744073709551615, 0])");
        let a = array("b", ints(&[-128, 127])).unwrap();
        assert_eq!(a.repr(), "array('b', [-128, 127])");
        let a = array("q", ints(&[i64::MIN])).unwrap();
        assert_eq!(a.repr(), "array('q', [-9223372036854775808])");
    }

    #[test]
    fn int_items_must_be_ints() {
        let item = |v: Value| array("i", Value::List(vec![v]));
        assert_error(item(s("x")), ErrorCode::TypeError, "'str' object cannot be interpreted as an integer");
        assert_error(
            item(Value::Float(1.5)),
            ErrorCode::TypeError,
            "'float' object cannot be interpreted as an integer",
        );
        assert_eq!(item(Value::Bool(true)).unwrap().repr(), "array('i', [1])");
    }

    #[test]
    fn float_items_take_numbers() {
        assert_error(array("f", Value::List(vec![s("x")])), ErrorCode::TypeError, "must be real number, not str");
        assert_error(
            array("d", Value::List(vec![Value::None])),
            ErrorCode::TypeError,
            "must be real number, not NoneType",
        );
        let too_big = big(&format!("1{}", "0".repeat(400)));
        assert_overflow("d", too_big.clone(), "int too large to convert to float");
        assert_overflow("f", too_big, "int too large to convert to float");
        let a = array("d", Value::List(vec![Value::Int(1), Value::Bool(true), Value::Float(1.1)])).unwrap();
        assert_eq!(a.repr(), "array('d', [1.0, 1.0, 1.1])");
    }

    /// CPython: `array('f', [1.1, 1e39])` is `array('f', [1.100000023841858, inf])`.
    #[test]
    fn single_precision_items_round_trip_through_f32() {
        let a = array("f", Value::List(vec![Value::Float(1.1), Value::Float(1e39)])).unwrap();
        assert_eq!(a.repr(), "array('f', [1.100000023841858, inf])");
    }

    #[test]
    fn typecodes_are_checked() {
        let text = "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)";
        assert_error(array("z", ints(&[])), ErrorCode::ValueError, text);
        assert_error(
            array("ii", ints(&[])),
            ErrorCode::TypeError,
            "array() argument 1 must be a unicode character, not str",
        );
        let not_str = ArrayObject::new(bind_kw(&CONSTRUCTOR, vec![Value::Int(5), ints(&[])], vec![]).unwrap());
        assert_error(not_str, ErrorCode::TypeError, "array() argument 1 must be a unicode character, not int");
        assert_eq!(array("u", ints(&[])).unwrap_err().code, ErrorCode::Unsupported);
    }

    #[test]
    fn initializers() {
        assert_eq!(array("i", Value::Tuple(vec![Value::Int(1)])).unwrap().repr(), "array('i', [1])");
        assert_eq!(array("h", Value::Bytes(vec![1, 0, 255, 255])).unwrap().repr(), "array('h', [1, -1])");
        assert_eq!(array("d", pickled("i", &[1, 0, 0, 0])).unwrap().repr(), "array('d', [1.0])");
        assert_error(
            array("i", s("abc")),
            ErrorCode::TypeError,
            "cannot use a str to initialize an array with typecode 'i'",
        );
        assert_error(
            array("i", Value::Bytes(vec![1, 0, 0])),
            ErrorCode::ValueError,
            "bytes length not a multiple of item size",
        );
        assert_error(array("i", Value::Int(5)), ErrorCode::TypeError, "'int' object is not iterable");
        let doubles = pickled("d", &1.5f64.to_le_bytes());
        assert_error(array("i", doubles), ErrorCode::TypeError, "'float' object cannot be interpreted as an integer");
    }

    #[test]
    fn cpythons_own_pickle_is_read_in_either_byte_order() {
        assert_eq!(array("i", reconstructor("i", 8, &[2, 0, 0, 0])).unwrap().repr(), "array('i', [2])");
        assert_eq!(array("i", reconstructor("i", 9, &[0, 0, 0, 2])).unwrap().repr(), "array('i', [2])");
        assert_eq!(array("i", reconstructor("i", 12, &[0; 8])).unwrap_err().code, ErrorCode::Unsupported);
    }

    /// CPython 3.11: `array.array('i', [1, 2]).tobytes()` and friends.
    #[test]
    fn snapshot_is_little_endian_machine_bytes() {
        let a = array("i", ints(&[1, 2])).unwrap();
        assert_eq!(format!("{:?}", a.snapshot()), format!("{:?}", pickled("i", &[1, 0, 0, 0, 2, 0, 0, 0])));
        let a = array("f", Value::List(vec![Value::Float(1.0), Value::Float(2.0)])).unwrap();
        assert_eq!(format!("{:?}", a.snapshot()), format!("{:?}", pickled("f", b"\x00\x00\x80?\x00\x00\x00@")));
        for code in ["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "f", "d"] {
            let original = array(code, ints(&[0, 1, 100])).unwrap();
            let copy = array(code, original.snapshot()).unwrap();
            assert_eq!(copy.repr(), original.repr(), "typecode {code}");
        }
    }

    #[test]
    fn getitem_reads_items_and_slices() {
        let mut a = array("i", ints(&[1, 2, 3])).unwrap();
        assert_py_eq(&call(&mut a, "__getitem__", vec![Value::Int(-1)]).unwrap(), &Value::Int(3));
        let reversed = call(&mut a, "__getitem__", vec![slice(None, None, Some(-1))]).unwrap();
        assert_eq!(array("i", reversed).unwrap().repr(), "array('i', [3, 2, 1])");
        assert_py_eq(&call(&mut a, "__len__", vec![]).unwrap(), &Value::Int(3));
        assert_py_eq(&call(&mut a, "tolist", vec![]).unwrap(), &ints(&[1, 2, 3]));
    }

    #[test]
    fn index_errors_match_cpython() {
        let mut a = array("i", ints(&[1, 2, 3])).unwrap();
        assert_error(
            call(&mut a, "__getitem__", vec![Value::Int(3)]),
            ErrorCode::IndexError,
            "array index out of range",
        );
        assert_error(call(&mut a, "__getitem__", vec![s("x")]), ErrorCode::TypeError, "array indices must be integers");
        assert_error(
            call(&mut a, "__getitem__", vec![Value::Float(1.0)]),
            ErrorCode::TypeError,
            "array indices must be integers",
        );
        assert_error(
            call(&mut a, "__setitem__", vec![Value::Int(-4), Value::Int(0)]),
            ErrorCode::IndexError,
            "array assignment index out of range",
        );
        assert_error(
            call(&mut a, "__setitem__", vec![s("x"), Value::Int(0)]),
            ErrorCode::TypeError,
            "array indices must be integers",
        );
        assert_error(
            call(&mut a, "__getitem__", vec![slice(None, None, Some(0))]),
            ErrorCode::ValueError,
            "slice step cannot be zero",
        );
    }

    #[test]
    fn setitem_checks_items() {
        let mut a = array("b", ints(&[1, 2, 3])).unwrap();
        call(&mut a, "__setitem__", vec![Value::Int(0), Value::Int(-5)]).unwrap();
        assert_error(
            call(&mut a, "__setitem__", vec![Value::Int(0), Value::Int(300)]),
            ErrorCode::OverflowError,
            "signed char is greater than maximum",
        );
        assert_error(
            call(&mut a, "__setitem__", vec![Value::Int(0), s("x")]),
            ErrorCode::TypeError,
            "'str' object cannot be interpreted as an integer",
        );
        // CPython checks the index before the item.
        assert_error(
            call(&mut a, "__setitem__", vec![Value::Int(9), s("x")]),
            ErrorCode::IndexError,
            "array assignment index out of range",
        );
        assert_eq!(a.repr(), "array('b', [-5, 2, 3])");
    }

    #[test]
    fn slice_assignment_takes_arrays_and_lists() {
        let mut a = array("i", ints(&[1, 2, 3])).unwrap();
        call(&mut a, "__setitem__", vec![slice(Some(0), Some(1), None), pickled("i", &[7, 0, 0, 0, 8, 0, 0, 0])])
            .unwrap();
        assert_eq!(a.repr(), "array('i', [7, 8, 2, 3])");
        call(&mut a, "__setitem__", vec![slice(None, None, Some(-1)), ints(&[1, 2, 3, 4])]).unwrap();
        assert_eq!(a.repr(), "array('i', [4, 3, 2, 1])");
        call(&mut a, "__setitem__", vec![slice(Some(0), Some(2), None), reconstructor("i", 8, &[])]).unwrap();
        assert_eq!(a.repr(), "array('i', [2, 1])");
    }

    /// CPython: `a = array('i', [1, 2, 3, 4]); a[::2] = array('i')` leaves `[2, 4]`.
    #[test]
    fn an_empty_array_deletes_an_extended_slice() {
        let mut a = array("i", ints(&[1, 2, 3, 4])).unwrap();
        call(&mut a, "__setitem__", vec![slice(None, None, Some(2)), pickled("i", &[])]).unwrap();
        assert_eq!(a.repr(), "array('i', [2, 4])");
    }

    #[test]
    fn slice_assignment_errors_match_cpython() {
        let mut a = array("i", ints(&[1, 2, 3])).unwrap();
        let set = |a: &mut ArrayObject, key: Value, value: Value| call(a, "__setitem__", vec![key, value]);
        assert_error(
            set(&mut a, slice(Some(0), Some(3), Some(2)), pickled("i", &[1, 0, 0, 0])),
            ErrorCode::ValueError,
            "attempt to assign array of size 1 to extended slice of size 2",
        );
        assert_error(
            set(&mut a, slice(Some(0), Some(2), None), pickled("d", &[0; 8])),
            ErrorCode::TypeError,
            "bad argument type for built-in operation",
        );
        assert_error(
            set(&mut a, slice(Some(0), Some(1), None), Value::Int(5)),
            ErrorCode::TypeError,
            "can only assign array (not \"int\") to array slice",
        );
        assert_error(
            set(&mut a, slice(Some(0), Some(1), None), s("ab")),
            ErrorCode::TypeError,
            "can only assign array (not \"str\") to array slice",
        );
        assert_error(
            set(&mut a, slice(Some(0), Some(1), None), ints(&[1 << 40])),
            ErrorCode::OverflowError,
            "signed integer is greater than maximum",
        );
        assert_eq!(a.repr(), "array('i', [1, 2, 3])");
    }

    #[test]
    fn repr_kind_and_len() {
        let a = array("i", ints(&[])).unwrap();
        assert_eq!((a.repr(), a.kind(), a.size()), ("array('i')".to_string(), Kind::Array, Some(0)));
    }

    #[test]
    fn state_round_trips_typed_items() {
        let mut a = array("Q", Value::List(vec![Value::Int(1), big("18446744073709551615")])).unwrap();
        call(&mut a, "__setitem__", vec![Value::Int(0), Value::Int(7)]).unwrap();
        let back: ArrayObject = rmp_serde::from_slice(&a.state()).unwrap();
        assert_eq!(back.repr(), "array('Q', [7, 18446744073709551615])");
        assert_eq!(back.state(), a.state());
        let f = array("f", Value::List(vec![Value::Float(0.1)])).unwrap();
        let back: ArrayObject = rmp_serde::from_slice(&f.state()).unwrap();
        assert_eq!((back.repr(), back.state()), (f.repr(), f.state()));
        assert_ne!(array("d", ints(&[1])).unwrap().state(), array("f", ints(&[1])).unwrap().state());
        assert_eq!(a.state(), encode_state(&a), "the hand-written state is serde's");
        let marks: Vec<(&str, bool, bool)> = METHODS.iter().map(|m| (m.name, m.read_only, m.stores)).collect();
        assert_eq!(
            marks,
            [
                ("__len__", true, false),
                ("__getitem__", true, false),
                ("__setitem__", false, true),
                ("tolist", true, false)
            ]
        );
    }

    /// The hand-written state is byte for byte serde's, for every typecode and item
    /// shape (small and large ints, ints past `i64`, floats) and every length that
    /// changes MessagePack's array header.
    #[test]
    fn the_hand_written_state_is_serdes() {
        let values = [
            Value::Int(0),
            Value::Int(-1),
            Value::Int(127),
            Value::Int(200),
            Value::Int(-40_000),
            Value::Int(1 << 40),
            big("18446744073709551615"),
            Value::Float(0.1),
            Value::Float(-2.5e300),
        ];
        for format in &FORMATS {
            let mut a = ArrayObject { format, items: Vec::new(), capture: None };
            for n in 0..70_000usize {
                if [0, 1, 15, 16, 17, 65_535, 65_536, 65_537].contains(&n) {
                    assert_eq!(a.state(), encode_state(&a), "'{}' with {n} items", format.code);
                }
                // The first value this typecode takes, cycling through them.
                let item = (0..values.len())
                    .find_map(|k| format.item(&values[(n + k) % values.len()]).ok())
                    .expect("every typecode takes 0");
                a.items.push(item);
            }
        }
    }

    /// A change between the steps of a capture: `__setitem__`'s index or slice, and value.
    fn change() -> impl proptest::strategy::Strategy<Value = (Value, Value)> {
        use proptest::prelude::*;
        let i = || (-30i64..5000).prop_map(Value::Int);
        let list = |k: usize| proptest::collection::vec(0i64..100, k).prop_map(|v| ints(&v));
        prop_oneof![
            6 => (i(), i()),
            // Contiguous slices to a list of another length: the array grows or shrinks.
            1 => (0i64..5000, 0i64..5000, 0usize..40).prop_flat_map(move |(a, b, k)| {
                (Just(slice(Some(a), Some(b), None)), list(k))
            }),
            // An extended slice given nothing deletes it.
            1 => (0i64..100, 2i64..9).prop_map(|(a, step)| (slice(Some(a), None, Some(step)), ints(&[]))),
            // A bad value changes nothing.
            1 => i().prop_map(|at| (at, s("x"))),
        ]
    }

    proptest::proptest! {
        /// A big array's captured state is its state when the capture began, whatever
        /// item and slice sets run between the steps, and the array behaves as a copy
        /// that was never captured.
        #[test]
        fn a_captured_array_reads_out_as_it_was(
            extra in 0usize..100,
            typecode in proptest::sample::select(vec!["i", "d", "Q"]),
            changes in proptest::collection::vec((change(), 0usize..3000), 0..60),
        ) {
            let n = crate::object::CAPTURE_FROM + extra;
            let mut a = array(typecode, ints(&(0..n as i64).collect::<Vec<_>>())).unwrap();
            let mut twin = a.clone();
            let before = a.state();
            let StateCapture::Started(mut out) = a.begin_state() else { panic!("a big array is captured") };
            let mut done = false;
            for ((key, value), step) in &changes {
                let args = vec![key.clone(), value.clone()];
                let got = call(&mut a, "__setitem__", args.clone()).map(|v| v.py_repr());
                let want = call(&mut twin, "__setitem__", args).map(|v| v.py_repr());
                proptest::prop_assert_eq!(got.map_err(|e| e.message), want.map_err(|e| e.message));
                if !done {
                    done = a.state_next(&mut out, *step);
                }
            }
            if !done {
                proptest::prop_assert!(a.state_next(&mut out, usize::MAX));
            }
            proptest::prop_assert!(a.capture.is_none());
            proptest::prop_assert_eq!(&out, &before);
            proptest::prop_assert_eq!(a.state(), twin.state());
        }
    }

    #[test]
    fn a_small_array_is_encoded_at_once_and_an_ended_capture_is_gone() {
        let mut small = array("i", ints(&[1, 2, 3])).unwrap();
        let StateCapture::Encoded(state) = small.begin_state() else { panic!("a small array is encoded at once") };
        assert_eq!(state, small.state());
        let mut a = array("i", ints(&(0..5000).collect::<Vec<_>>())).unwrap();
        assert!(matches!(a.begin_state(), StateCapture::Started(_)));
        assert!(matches!(a.begin_state(), StateCapture::Encoded(_)), "one capture at a time");
        a.end_state();
        assert!(a.capture.is_none());
        assert!(matches!(a.begin_state(), StateCapture::Started(_)));
    }
}
