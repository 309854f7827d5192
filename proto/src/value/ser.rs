//! The `serde::Serializer`s behind [`to_value`](super::to_value) — any serializable
//! Rust value becomes a [`Value`] (mapping in the `serde_conv` module doc) — and
//! behind [`write_msgpack_of`](super::write_msgpack_of), which writes a scalar's bytes
//! without building the `Value`.
use serde::ser::{self, Serialize};

use super::codec::Scalar;
use super::serde_conv::{bridge, ConvError};
use super::{BigInt, Dict, Value};

type Result<T> = std::result::Result<T, ConvError>;

/// Serializes into a [`Value`].
pub(super) struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ConvError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = VariantBuilder<SeqBuilder>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = VariantBuilder<StructBuilder>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value> {
        Ok(Value::from_bigint(BigInt::from(v)))
    }
    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value> {
        Ok(Value::from_bigint(BigInt::from(v)))
    }
    fn serialize_u128(self, v: u128) -> Result<Value> {
        Ok(Value::from_bigint(BigInt::from(v)))
    }
    fn serialize_f32(self, v: f32) -> Result<Value> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::Str(v.to_string().into()))
    }
    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(Value::Str(v.into()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        Ok(Value::Bytes(v.into()))
    }
    fn serialize_none(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<Value> {
        Ok(Value::Str(variant.into()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<Value> {
        if name != bridge::VALUE_TOKEN {
            return value.serialize(self);
        }
        // A `Value`: let it hand itself over whole (see `serde_conv::bridge`).
        bridge::request_capture(true);
        let serialized = value.serialize(ValueSerializer);
        bridge::request_capture(false);
        match bridge::take() {
            Some(captured) => Ok(captured),
            None => serialized,
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value> {
        tagged(variant, value.serialize(ValueSerializer)?)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(len.unwrap_or(0), false))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(len, true))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(len, true))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<SeqBuilder>> {
        Ok(VariantBuilder { variant, inner: SeqBuilder::new(len, true) })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder> {
        Ok(MapBuilder { dict: Dict::with_capacity(len.unwrap_or(0)), key: None })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<StructBuilder> {
        Ok(StructBuilder { dict: Dict::with_capacity(len) })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder<StructBuilder>> {
        Ok(VariantBuilder { variant, inner: StructBuilder { dict: Dict::with_capacity(len) } })
    }
}

/// `{variant: value}`, the external tagging of enum variants with data.
fn tagged(variant: &'static str, value: Value) -> Result<Value> {
    let mut dict = Dict::with_capacity(1);
    dict.insert(Value::Str(variant.into()), value).map_err(ConvError)?;
    Ok(Value::Dict(dict))
}

/// Collects a seq (into a list) or a tuple (into a tuple).
pub(super) struct SeqBuilder {
    items: Vec<Value>,
    tuple: bool,
}

impl SeqBuilder {
    fn new(len: usize, tuple: bool) -> SeqBuilder {
        SeqBuilder { items: Vec::with_capacity(len), tuple }
    }
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn finish(self) -> Value {
        if self.tuple {
            Value::Tuple(self.items)
        } else {
            Value::List(self.items)
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

/// Collects a map into a dict.
pub(super) struct MapBuilder {
    dict: Dict,
    key: Option<Value>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let key = self.key.take().ok_or_else(|| ConvError::type_error("map value without a key"))?;
        self.dict.insert(key, value.serialize(ValueSerializer)?).map_err(ConvError)?;
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(Value::Dict(self.dict))
    }
}

/// Collects a struct into a dict with str keys.
pub(super) struct StructBuilder {
    dict: Dict,
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        let value = value.serialize(ValueSerializer)?;
        self.dict.insert(Value::Str(key.into()), value).map_err(ConvError)?;
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(Value::Dict(self.dict))
    }
}

/// A tuple or struct variant: the inner builder, wrapped as `{variant: inner}` at the end.
pub(super) struct VariantBuilder<B> {
    variant: &'static str,
    inner: B,
}

impl ser::SerializeTupleVariant for VariantBuilder<SeqBuilder> {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.inner.push(value)
    }
    fn end(self) -> Result<Value> {
        tagged(self.variant, self.inner.finish())
    }
}

impl ser::SerializeStructVariant for VariantBuilder<StructBuilder> {
    type Ok = Value;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, value)
    }
    fn end(self) -> Result<Value> {
        tagged(self.variant, Value::Dict(self.inner.dict))
    }
}

/// Writes a Rust value that serializes as a scalar (bool, int within `i64`, float, str,
/// bytes, `None`, a unit variant) straight into a message: the bytes
/// [`ValueSerializer`] and then the codec would give, without building the [`Value`]
/// (a call's key or item, on every call of the client library). Anything else —
/// containers, ints beyond `i64`, a `Value` itself, a serialization that fails — is
/// refused with [`NotScalar`] before a byte is written, for the caller to take the
/// long way. The mapping must stay that of [`ValueSerializer`]; a proptest checks it.
pub(super) struct ScalarWriter<'a>(pub(super) &'a mut Vec<u8>);

/// The value is not a scalar (or failed to serialize): nothing was written.
#[derive(Debug)]
pub(super) struct NotScalar;

impl std::fmt::Display for NotScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a scalar")
    }
}

impl std::error::Error for NotScalar {}

impl ser::Error for NotScalar {
    fn custom<T: std::fmt::Display>(_msg: T) -> NotScalar {
        NotScalar
    }
}

impl ScalarWriter<'_> {
    fn put(self, scalar: Scalar<'_>) -> Written {
        scalar.put(self.0);
        Ok(())
    }

    fn int(self, v: impl TryInto<i64>) -> Written {
        self.put(Scalar::Int(v.try_into().map_err(|_| NotScalar)?))
    }
}

type Refused = ser::Impossible<(), NotScalar>;
/// What a scalar method returns: written, or refused before a byte was.
type Written = std::result::Result<(), NotScalar>;
/// What a container method returns: always refused.
type Compound = std::result::Result<Refused, NotScalar>;

/// `ScalarWriter`'s integer methods: an int that fits `i64` is written; one beyond it is
/// a big int, refused for the long way.
macro_rules! int_methods {
    ($($method:ident: $ty:ty),+) => {
        $(
            fn $method(self, v: $ty) -> Written {
                self.int(v)
            }
        )+
    };
}

impl ser::Serializer for ScalarWriter<'_> {
    type Ok = ();
    type Error = NotScalar;
    type SerializeSeq = Refused;
    type SerializeTuple = Refused;
    type SerializeTupleStruct = Refused;
    type SerializeTupleVariant = Refused;
    type SerializeMap = Refused;
    type SerializeStruct = Refused;
    type SerializeStructVariant = Refused;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Written {
        self.put(Scalar::Bool(v))
    }
    int_methods!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128
    );
    fn serialize_f32(self, v: f32) -> Written {
        self.put(Scalar::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Written {
        self.put(Scalar::Float(v))
    }
    fn serialize_char(self, v: char) -> Written {
        self.put(Scalar::Str(v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_str(self, v: &str) -> Written {
        self.put(Scalar::Str(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Written {
        self.put(Scalar::Bytes(v))
    }
    fn serialize_none(self) -> Written {
        self.put(Scalar::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Written {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Written {
        self.put(Scalar::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Written {
        self.put(Scalar::None)
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Written {
        self.put(Scalar::Str(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Written {
        if name == bridge::VALUE_TOKEN {
            return Err(NotScalar); // a `Value`: `to_value` hands it over whole
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Written {
        Err(NotScalar)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Compound {
        Err(NotScalar)
    }
    fn serialize_tuple(self, _len: usize) -> Compound {
        Err(NotScalar)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Compound {
        Err(NotScalar)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Compound {
        Err(NotScalar)
    }
    fn serialize_map(self, _len: Option<usize>) -> Compound {
        Err(NotScalar)
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Compound {
        Err(NotScalar)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Compound {
        Err(NotScalar)
    }
}
