//! `Iterator`: what `iter(dict_proxy)` returns to a CPython client (spec §5.2).
//!
//! CPython iterates the live dict and fails if it changes size; agora iterates a
//! snapshot of the keys taken when the iterator was made, which never fails.

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};

use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};

/// The typeid CPython's registry gives iterators.
pub const TYPEID: &str = "Iterator";

const METHODS: &[MethodSpec] = &[MethodSpec::new("__next__", &[])];

/// An iterator over a snapshot of values.
pub struct IteratorObject {
    items: std::vec::IntoIter<Value>,
}

impl IteratorObject {
    /// An iterator over `items`.
    pub fn new(items: Vec<Value>) -> IteratorObject {
        IteratorObject { items: items.into_iter() }
    }
}

impl SharedObject for IteratorObject {
    fn kind(&self) -> Kind {
        Kind::Other(TYPEID.to_owned())
    }

    fn methods(&self) -> &'static [MethodSpec] {
        METHODS
    }

    fn call(&mut self, _caller: Caller, method: &str, _args: Args) -> Result<Outcome, WireError> {
        match method {
            "__next__" => {
                self.items.next().map(Outcome::Ready).ok_or_else(|| WireError::new(ErrorCode::StopIteration, ""))
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Iterator has no method {other}"))),
        }
    }

    fn snapshot(&self) -> Value {
        Value::List(self.items.as_slice().to_vec())
    }

    fn repr(&self) -> String {
        "<dict_keyiterator object>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_then_stops() {
        let mut it = IteratorObject::new(vec![Value::Int(1)]);
        let caller = Caller { session: 1 };
        let next = |it: &mut IteratorObject| it.call(caller, "__next__", Args::from_values("__next__", vec![]));
        assert!(matches!(next(&mut it), Ok(Outcome::Ready(Value::Int(1)))));
        assert_eq!(next(&mut it).unwrap_err().code, ErrorCode::StopIteration);
        assert_eq!(next(&mut it).unwrap_err().code, ErrorCode::StopIteration);
    }
}
