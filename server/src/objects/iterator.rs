//! `Iterator`: what `iter(dict_proxy)` returns to a CPython client (spec §5.2).
//!
//! CPython iterates the live dict. agora iterates a snapshot of the keys taken when
//! the iterator was made, but keeps watching the dict's size: once it differs from
//! the size at the start, `__next__` raises `RuntimeError('dictionary changed size
//! during iteration')`, for good, as CPython's dict iterator does. (A change that
//! keeps the size — one key deleted, another added — goes unnoticed here, where
//! CPython may notice it.) The iterator keeps the dict alive, as CPython's does.

use std::sync::Arc;

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, Value, WireError};

use crate::object::{Args, Caller, MethodSpec, Outcome, SharedObject};
use crate::registry::ObjectEntry;

/// The typeid CPython's registry gives iterators.
pub const TYPEID: &str = "Iterator";

const METHODS: &[MethodSpec] = &[MethodSpec::new("__next__", &[])];

/// The dict being iterated and its size when the iteration began.
struct Source {
    entry: Arc<ObjectEntry>,
    len: usize,
}

/// An iterator over a snapshot of values.
pub struct IteratorObject {
    items: std::vec::IntoIter<Value>,
    source: Option<Source>,
    /// Set once the source changed size: every later `__next__` fails too.
    changed: bool,
}

impl IteratorObject {
    /// An iterator over `items`.
    pub fn new(items: Vec<Value>) -> IteratorObject {
        IteratorObject { items: items.into_iter(), source: None, changed: false }
    }

    /// An iterator over the keys of the dict `source`, whose current `keys` are given:
    /// it fails once the dict's size changes.
    pub fn over(source: Arc<ObjectEntry>, keys: Vec<Value>) -> IteratorObject {
        let len = keys.len();
        IteratorObject { items: keys.into_iter(), source: Some(Source { entry: source, len }), changed: false }
    }

    /// True once the source's size differs from the start (the source is locked
    /// briefly: an iterator is always locked before its dict, never the reverse).
    fn source_changed(&mut self) -> bool {
        if !self.changed {
            if let Some(source) = &self.source {
                self.changed = matches!(source.entry.size(), Ok(Some(n)) if n != source.len);
            }
        }
        self.changed
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
                if self.source_changed() {
                    return Err(WireError::new(ErrorCode::RuntimeError, "dictionary changed size during iteration"));
                }
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
    use crate::registry::Registry;

    fn next(it: &mut IteratorObject) -> Result<Outcome, WireError> {
        it.call(Caller { session: 1 }, "__next__", Args::from_values("__next__", vec![]))
    }

    #[test]
    fn yields_then_stops() {
        let mut it = IteratorObject::new(vec![Value::Int(1)]);
        assert!(matches!(next(&mut it), Ok(Outcome::Ready(Value::Int(1)))));
        assert_eq!(next(&mut it).unwrap_err().code, ErrorCode::StopIteration);
        assert_eq!(next(&mut it).unwrap_err().code, ErrorCode::StopIteration);
    }

    #[test]
    fn a_dict_that_changes_size_fails_the_iteration_for_good() {
        let registry = Registry::new();
        let dict = registry.create(&Kind::Dict, vec![], vec![]).unwrap();
        let caller = Caller { session: 1 };
        let set = |k: i64| dict.call(caller, "__setitem__", vec![Value::Int(k), Value::None], vec![]).unwrap();
        set(1);
        set(2);
        let mut it = IteratorObject::over(dict.clone(), vec![Value::Int(1), Value::Int(2)]);
        assert!(matches!(next(&mut it), Ok(Outcome::Ready(Value::Int(1)))));
        set(2); // same size: unnoticed
        assert!(matches!(next(&mut it), Ok(Outcome::Ready(Value::Int(2)))));
        dict.call(caller, "clear", vec![], vec![]).unwrap();
        let err = next(&mut it).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::RuntimeError, "dictionary changed size during iteration")
        );
        set(1);
        set(2);
        assert_eq!(next(&mut it).unwrap_err().code, ErrorCode::RuntimeError, "sticky");
    }
}
