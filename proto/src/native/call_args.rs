//! The positional arguments of a call as the caller holds them: already [`Value`]s, or
//! Rust values (a tuple of references to serializable values), written straight into
//! the request by [`encode_call`](super::encode_call).
//!
//! Owns only the conversion of arguments; the request around them is `native`'s.

use serde::Serialize;

use crate::value::write_msgpack_of;
use crate::{Value, WireError};

/// A call's positional arguments, encoded where they are.
///
/// ```
/// use agora_proto::native::CallArgs;
///
/// let key = String::from("k");
/// let mut out = Vec::new();
/// (&key, &3i64).write(&mut out).unwrap();
/// assert_eq!((&key, &3i64).count(), 2);
/// assert_eq!(out, [0xa1, b'k', 3]);
/// ```
pub trait CallArgs {
    /// How many arguments there are.
    fn count(&self) -> usize;

    /// Appends each argument's MessagePack encoding (the bytes its [`Value`] has);
    /// on an error (a value that cannot be converted) what was appended is left for
    /// the caller to cut off.
    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError>;

    /// The arguments as values: for a request that has to wait for a connection.
    fn to_values(&self) -> Result<Vec<Value>, WireError>;
}

impl CallArgs for [Value] {
    fn count(&self) -> usize {
        self.len()
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.iter().for_each(|value| value.write_msgpack(out));
        Ok(())
    }

    fn to_values(&self) -> Result<Vec<Value>, WireError> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> CallArgs for [Value; N] {
    fn count(&self) -> usize {
        N
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.as_slice().write(out)
    }

    fn to_values(&self) -> Result<Vec<Value>, WireError> {
        Ok(self.to_vec())
    }
}

impl CallArgs for Vec<Value> {
    fn count(&self) -> usize {
        self.len()
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.as_slice().write(out)
    }

    fn to_values(&self) -> Result<Vec<Value>, WireError> {
        Ok(self.clone())
    }
}

/// `CallArgs` for a tuple of references to serializable values.
macro_rules! tuple_args {
    ($count:literal: $($name:ident),+) => {
        impl<$($name: Serialize + ?Sized),+> CallArgs for ($(&$name,)+) {
            fn count(&self) -> usize {
                $count
            }

            #[allow(non_snake_case)]
            fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
                let ($($name,)+) = self;
                $(write_msgpack_of(*$name, out)?;)+
                Ok(())
            }

            #[allow(non_snake_case)]
            fn to_values(&self) -> Result<Vec<Value>, WireError> {
                let ($($name,)+) = self;
                Ok(vec![$(crate::to_value(*$name)?),+])
            }
        }
    };
}

tuple_args!(1: A);
tuple_args!(2: A, B);
tuple_args!(3: A, B, C);
