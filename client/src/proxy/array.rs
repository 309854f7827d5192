//! [`Array`]: a shared fixed-size array of numbers (Python `array.array`, as made by
//! `manager.Array(typecode, sequence)`), and [`ArrayItem`], the Rust types it can hold.

use std::marker::PhantomData;
use std::sync::Arc;

use agora_proto::methods;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Handle;
use crate::error::Result;

mod sealed {
    pub trait Sealed {}
}

/// A Rust number type an [`Array`] can hold, with the Python `array` typecode it
/// stands for.
///
/// | Rust  | typecode | C type (Python `array` docs) |
/// |-------|----------|------------------------------|
/// | `i8`  | `'b'`    | `signed char`                |
/// | `u8`  | `'B'`    | `unsigned char`              |
/// | `i16` | `'h'`    | `signed short`               |
/// | `u16` | `'H'`    | `unsigned short`             |
/// | `i32` | `'i'`    | `signed int`                 |
/// | `u32` | `'I'`    | `unsigned int`               |
/// | `i64` | `'q'`    | `signed long long`           |
/// | `u64` | `'Q'`    | `unsigned long long`         |
/// | `f32` | `'f'`    | `float`                      |
/// | `f64` | `'d'`    | `double`                     |
///
/// The server also knows `'l'` and `'L'` (8 bytes there, as on 64-bit Linux); an
/// array a Python client made with those reads fine as `i64` / `u64`. The typecode
/// matters only when the array is created: opening an existing array by name uses
/// the array as it is.
///
/// This trait is sealed: the table above is the complete list.
pub trait ArrayItem: Serialize + DeserializeOwned + Copy + sealed::Sealed {
    /// The Python `array` typecode for this type.
    const TYPECODE: char;
}

macro_rules! array_items {
    ($($ty:ty => $code:literal),* $(,)?) => {
        $(
            impl sealed::Sealed for $ty {}
            impl ArrayItem for $ty {
                const TYPECODE: char = $code;
            }
        )*
    };
}

array_items! {
    i8 => 'b',
    u8 => 'B',
    i16 => 'h',
    u16 => 'H',
    i32 => 'i',
    u32 => 'I',
    i64 => 'q',
    u64 => 'Q',
    f32 => 'f',
    f64 => 'd',
}

/// A proxy for a shared array of `T` (Python `array.array`).
///
/// The size is fixed when the array is created. Indices are `i64` and follow Python:
/// a negative index counts from the end. Storing a number the array's typecode cannot
/// hold gives [`Error::Overflow`](crate::Error::Overflow). Cheap to clone.
pub struct Array<T> {
    handle: Arc<Handle>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { handle: self.handle.clone(), _types: PhantomData }
    }
}

impl<T> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Array({:?})", self.handle)
    }
}

impl<T: ArrayItem> Array<T> {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Array { handle, _types: PhantomData }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Number of items (Python `len(a)`, `__len__`).
    pub async fn len(&self) -> Result<usize> {
        self.handle.call_as(methods::array::LEN.name, &[]).await
    }

    /// True when the array has no items (Python `len(a) == 0`, `__len__`).
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// The item at `index` (Python `a[index]`, `__getitem__`). Negative indices count
    /// from the end.
    ///
    /// Fails with [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) if there is
    /// no item at `index`: an array's size is fixed, so that is a bug rather than an
    /// expected absence.
    pub async fn get(&self, index: i64) -> Result<T> {
        self.handle.call_as(methods::array::GETITEM.name, &[Value::Int(index)]).await
    }

    /// Replaces the item at `index` (Python `a[index] = item`, `__setitem__`).
    ///
    /// Fails with [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) if there is
    /// no item at `index`.
    pub async fn set(&self, index: i64, item: T) -> Result<()> {
        self.handle.call(methods::array::SETITEM.name, &(&index, &item)).await.map(drop)
    }

    /// A copy of every item, in order (Python `tolist`).
    pub async fn to_vec(&self) -> Result<Vec<T>> {
        self.handle.call_as(methods::array::TOLIST.name, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::ArrayItem;

    #[test]
    fn typecodes_match_python_array() {
        let codes = [
            i8::TYPECODE,
            u8::TYPECODE,
            i16::TYPECODE,
            u16::TYPECODE,
            i32::TYPECODE,
            u32::TYPECODE,
            i64::TYPECODE,
            u64::TYPECODE,
            f32::TYPECODE,
            f64::TYPECODE,
        ];
        assert_eq!(String::from_iter(codes), "bBhHiIqQfd");
    }

    /// Each typecode's item size in Python's `array` (on 64-bit Linux) is the Rust
    /// type's size, so every value of the Rust type fits the array and back.
    #[test]
    fn rust_sizes_match_typecode_sizes() {
        fn size(code: char) -> usize {
            match code {
                'b' | 'B' => 1,
                'h' | 'H' => 2,
                'i' | 'I' | 'f' => 4,
                'q' | 'Q' | 'd' => 8,
                other => panic!("unexpected typecode {other:?}"),
            }
        }
        fn check<T: ArrayItem>() {
            assert_eq!(size(T::TYPECODE), std::mem::size_of::<T>(), "{}", T::TYPECODE);
        }
        check::<i8>();
        check::<u8>();
        check::<i16>();
        check::<u16>();
        check::<i32>();
        check::<u32>();
        check::<i64>();
        check::<u64>();
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn signedness_matches_typecode_case() {
        // Python: lowercase integer typecodes are signed, uppercase unsigned.
        fn signed<T: ArrayItem + TryFrom<i8>>() -> bool {
            T::try_from(-1i8).is_ok()
        }
        assert!(signed::<i8>() && signed::<i16>() && signed::<i32>() && signed::<i64>());
        assert!(!signed::<u8>() && !signed::<u16>() && !signed::<u32>() && !signed::<u64>());
        for code in [i8::TYPECODE, i16::TYPECODE, i32::TYPECODE, i64::TYPECODE] {
            assert!(code.is_ascii_lowercase());
        }
        for code in [u8::TYPECODE, u16::TYPECODE, u32::TYPECODE, u64::TYPECODE] {
            assert!(code.is_ascii_uppercase());
        }
    }
}
