//! The `serde::Deserializer` behind [`from_value`](super::from_value): reads any
//! deserializable Rust type out of an owned [`Value`] (mapping and leniency in the
//! `serde_conv` module doc).
use std::fmt::Display;

use serde::de::{self, DeserializeSeed, Visitor};

use super::serde_conv::{bridge, ConvError};
use super::{BigInt, Value};

type Result<T> = std::result::Result<T, ConvError>;

/// Deserializes from an owned [`Value`].
pub(super) struct ValueDeserializer {
    value: Value,
}

impl ValueDeserializer {
    pub(super) fn new(value: Value) -> Self {
        ValueDeserializer { value }
    }

    fn mismatch(&self, expected: &dyn Display) -> ConvError {
        ConvError::mismatch(expected, &self.value)
    }

    /// The value as an integer of type `T`, with a range check.
    fn integer<T>(&self, ty: &str) -> Result<T>
    where
        T: TryFrom<i64> + for<'a> TryFrom<&'a BigInt>,
    {
        let converted = match &self.value {
            Value::Int(i) => T::try_from(*i).ok(),
            Value::Bool(b) => T::try_from(i64::from(*b)).ok(),
            Value::BigInt(b) => T::try_from(&**b).ok(),
            _ => return Err(self.mismatch(&ty)),
        };
        converted.ok_or_else(|| ConvError::out_of_range(&self.value.py_repr(), &ty))
    }

    /// The value as a float (ints convert, as in Python's `float(x)`).
    fn float(&self, ty: &str) -> Result<f64> {
        use num_traits::ToPrimitive;
        match &self.value {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            Value::BigInt(b) => {
                b.to_f64().filter(|f| f.is_finite()).ok_or_else(|| ConvError::out_of_range(&self.value.py_repr(), &ty))
            }
            _ => Err(self.mismatch(&ty)),
        }
    }

    /// Visits a list, tuple, set, frozenset (or bytes, as `u8`s) as a sequence.
    fn visit_sequence<'de, V: Visitor<'de>>(self, visitor: V, expected: &dyn Display) -> Result<V::Value> {
        match self.value {
            Value::List(items) | Value::Tuple(items) => visit_seq_of(items.len(), items, visitor),
            Value::Set(set) | Value::FrozenSet(set) => visit_seq_of(set.len(), set, visitor),
            Value::Bytes(bytes) => {
                let ints = bytes.into_iter().map(|b| Value::Int(b.into()));
                visit_seq_of(ints.len(), ints, visitor)
            }
            _ => Err(self.mismatch(expected)),
        }
    }

    /// Visits a big int as the widest primitive that holds it.
    fn visit_big<'de, V: Visitor<'de>>(b: &BigInt, visitor: V) -> Result<V::Value> {
        if let Ok(n) = u64::try_from(b) {
            visitor.visit_u64(n)
        } else if let Ok(n) = i128::try_from(b) {
            visitor.visit_i128(n)
        } else if let Ok(n) = u128::try_from(b) {
            visitor.visit_u128(n)
        } else {
            Err(ConvError::out_of_range(b, &"any Rust integer"))
        }
    }
}

/// Visits `items` as a sequence of `len` values; leftovers are an error.
fn visit_seq_of<'de, V, I>(len: usize, items: I, visitor: V) -> Result<V::Value>
where
    V: Visitor<'de>,
    I: IntoIterator<Item = Value>,
{
    let mut seq = SeqAccess { items: items.into_iter(), left: len };
    let out = visitor.visit_seq(&mut seq)?;
    match seq.left {
        0 => Ok(out),
        _ => Err(de::Error::invalid_length(len, &"fewer elements")),
    }
}

macro_rules! deserialize_integers {
    ($($method:ident => $visit:ident($ty:ty)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            visitor.$visit(self.integer::<$ty>(stringify!($ty))?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = ConvError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::BigInt(b) => Self::visit_big(&b, visitor),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s.into_string()),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Dict(d) => visit_map_of(d, visitor),
            Value::Object(_) => Err(ConvError::type_error(format!(
                "cannot read an opaque object {} as a Rust value",
                self.value.py_repr()
            ))),
            _ => self.visit_sequence(visitor, &"a sequence"),
        }
    }

    deserialize_integers! {
        deserialize_i8 => visit_i8(i8),
        deserialize_i16 => visit_i16(i16),
        deserialize_i32 => visit_i32(i32),
        deserialize_i64 => visit_i64(i64),
        deserialize_i128 => visit_i128(i128),
        deserialize_u8 => visit_u8(u8),
        deserialize_u16 => visit_u16(u16),
        deserialize_u32 => visit_u32(u32),
        deserialize_u64 => visit_u64(u64),
        deserialize_u128 => visit_u128(u128),
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(b),
            _ => Err(self.mismatch(&"bool")),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(self.float("f32")? as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(self.float("f64")?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let mut chars = match &self.value {
            Value::Str(s) => s.chars(),
            _ => return Err(self.mismatch(&"char")),
        };
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(self.mismatch(&"char")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Str(s) => visitor.visit_string(s.into_string()),
            _ => Err(self.mismatch(&"str")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Str(s) => visitor.visit_string(s.into_string()),
            _ => self.visit_sequence(visitor, &"bytes"),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if let Value::None = self.value {
            return visitor.visit_none();
        }
        // Hand the value over whole if the visitor is `Value`'s (see `bridge`).
        bridge::put(self.value);
        let out = visitor.visit_some(FromSlot);
        bridge::take();
        out
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::None => visitor.visit_unit(),
            _ => Err(self.mismatch(&"unit")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::None => visitor.visit_unit(),
            _ => Err(self.mismatch(&format_args!("unit struct {name}"))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.visit_sequence(visitor, &"a sequence")
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.visit_sequence(visitor, &format_args!("a tuple of {len} elements"))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.visit_sequence(visitor, &format_args!("tuple struct {name}"))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Dict(d) => visit_map_of(d, visitor),
            _ => Err(self.mismatch(&"a dict")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::Dict(d) => visit_map_of(d, visitor),
            Value::List(_) | Value::Tuple(_) => self.visit_sequence(visitor, &format_args!("struct {name}")),
            _ => Err(self.mismatch(&format_args!("struct {name}"))),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::Str(_) => visitor.visit_enum(EnumAccess { variant: self.value, content: None }),
            Value::Dict(d) if d.len() == 1 => {
                let (variant, content) = d.into_iter().next().unwrap_or_default();
                visitor.visit_enum(EnumAccess { variant, content: Some(content) })
            }
            _ => Err(self.mismatch(&format_args!("enum {name}"))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Str(s) => visitor.visit_string(s.into_string()),
            Value::Int(i) if i >= 0 => visitor.visit_u64(i.unsigned_abs()),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            _ => Err(self.mismatch(&"a field name")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
}

/// Visits a dict as a map.
fn visit_map_of<'de, V: Visitor<'de>>(dict: super::Dict, visitor: V) -> Result<V::Value> {
    let len = dict.len();
    visitor.visit_map(MapAccess { entries: dict.into_iter(), value: None, left: len })
}

/// The sequence of a list, tuple, set or bytes.
struct SeqAccess<I> {
    items: I,
    left: usize,
}

impl<'de, I: Iterator<Item = Value>> de::SeqAccess<'de> for SeqAccess<I> {
    type Error = ConvError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        match self.items.next() {
            Some(item) => {
                self.left -= 1;
                seed.deserialize(ValueDeserializer::new(item)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The entries of a dict.
struct MapAccess {
    entries: super::DictIntoIter,
    value: Option<Value>,
    left: usize,
}

impl<'de> de::MapAccess<'de> for MapAccess {
    type Error = ConvError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.entries.next() {
            Some((key, value)) => {
                self.left -= 1;
                self.value = Some(value);
                seed.deserialize(ValueDeserializer::new(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let value = self.value.take().ok_or_else(|| ConvError::type_error("dict value read before its key"))?;
        seed.deserialize(ValueDeserializer::new(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An enum read from `'Variant'` (no content) or `{'Variant': content}`.
struct EnumAccess {
    variant: Value,
    content: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = ConvError;
    type Variant = VariantAccess;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, VariantAccess)> {
        let variant = seed.deserialize(ValueDeserializer::new(self.variant))?;
        Ok((variant, VariantAccess { content: self.content }))
    }
}

/// The content of an enum variant.
struct VariantAccess {
    content: Option<Value>,
}

impl VariantAccess {
    fn content(self, expected: &str) -> Result<ValueDeserializer> {
        match self.content {
            Some(content) => Ok(ValueDeserializer::new(content)),
            None => Err(ConvError::type_error(format!("expected {expected}, found unit variant"))),
        }
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess {
    type Error = ConvError;

    fn unit_variant(self) -> Result<()> {
        match self.content {
            None | Some(Value::None) => Ok(()),
            Some(other) => Err(ConvError::mismatch(&"unit variant", &other)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.content("newtype variant")?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self.content("tuple variant")?, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_struct(self.content("struct variant")?, "", fields, visitor)
    }
}

/// The deserializer passed to `visit_some`: it reads the value left in the bridge's
/// slot (`Value`'s own visitor takes the slot first and never calls it).
struct FromSlot;

impl FromSlot {
    fn take(self) -> Result<ValueDeserializer> {
        bridge::take()
            .map(ValueDeserializer::new)
            .ok_or_else(|| ConvError::type_error("internal: optional value already taken"))
    }
}

macro_rules! forward_from_slot {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value> {
            self.take()?.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for FromSlot {
    type Error = ConvError;

    fn is_human_readable(&self) -> bool {
        false
    }

    forward_from_slot! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }
}
