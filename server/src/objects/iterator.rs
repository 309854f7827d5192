//! `Iterator`: what `iter(dict_proxy)` returns to a CPython client (spec §5.2).
//!
//! CPython iterates the live dict. agora iterates a snapshot of the keys taken when
//! the iterator was made, but keeps watching the dict's size: once it differs from
//! the size at the start, `__next__` raises `RuntimeError('dictionary changed size
//! during iteration')`, for good, as CPython's dict iterator does. (A change that
//! keeps the size — one key deleted, another added — goes unnoticed here, where
//! CPython may notice it.)
//!
//! The iterator names its dict by id ([`SharedObject::linked`]); the engine locks the
//! dict after the iterator (always in that order) and hands it over through
//! [`Ctx::with_linked`] for the size check. If the dict is gone, there is nothing to
//! compare with: the iterator goes on through its snapshot.

use std::collections::VecDeque;

use agora_proto::native::{Kind, ObjectId};
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use crate::engine::Ctx;
use crate::object::{encode_state, Args, MethodSpec, Outcome, SharedObject};

use agora_proto::methods::iterator::METHODS;
/// The typeid CPython's `SyncManager` gives iterators; the methods are declared in
/// [`agora_proto::methods::iterator`].
pub use agora_proto::methods::iterator::TYPEID;

/// An iterator over a snapshot of values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IteratorObject {
    /// The items not yet yielded.
    items: VecDeque<Value>,
    /// The dict being iterated and its size when the iteration began.
    source: Option<(ObjectId, usize)>,
    /// Set once the source changed size: every later `__next__` fails too.
    changed: bool,
}

impl IteratorObject {
    /// An iterator over `items`.
    pub fn new(items: Vec<Value>) -> IteratorObject {
        IteratorObject { items: items.into(), source: None, changed: false }
    }

    /// An iterator over the keys of the dict `source`, whose current `keys` are given:
    /// it fails once the dict's size changes.
    pub fn over(source: ObjectId, keys: Vec<Value>) -> IteratorObject {
        let len = keys.len();
        IteratorObject { items: keys.into(), source: Some((source, len)), changed: false }
    }

    /// True once the source's size differs from the start. The source comes from the
    /// context, locked by the engine; a source that is gone changes nothing.
    fn source_changed(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if !self.changed {
            if let Some((_, len)) = self.source {
                let size = ctx.with_linked(|dict, _| dict.size()).flatten();
                self.changed = matches!(size, Some(n) if n != len);
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

    fn call(&mut self, ctx: &mut Ctx<'_>, method: &str, _args: Args) -> Result<Outcome, WireError> {
        match method {
            "__next__" => {
                if self.source_changed(ctx) {
                    return Err(WireError::new(ErrorCode::RuntimeError, "dictionary changed size during iteration"));
                }
                self.items.pop_front().map(Outcome::Ready).ok_or_else(|| WireError::new(ErrorCode::StopIteration, ""))
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("Iterator has no method {other}"))),
        }
    }

    fn snapshot(&self) -> Value {
        Value::List(self.items.iter().cloned().collect())
    }

    fn state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn repr(&self) -> String {
        "<dict_keyiterator object>".to_owned()
    }

    fn linked(&self) -> Option<ObjectId> {
        self.source.map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Harness;
    use crate::objects::dict::DictObject;
    use crate::objects::sequence::testing::call;

    fn next_args() -> Args {
        Args::from_values("__next__", vec![])
    }

    /// `__next__` with no linked object.
    fn next(h: &mut Harness, it: &mut IteratorObject) -> Result<Outcome, WireError> {
        it.call(&mut h.ctx(1), "__next__", next_args())
    }

    /// `__next__` with `dict` handed over as the linked object, as the engine does.
    fn next_over(h: &mut Harness, it: &mut IteratorObject, dict: &mut DictObject) -> Result<Outcome, WireError> {
        it.call(&mut h.ctx_linked(1, dict), "__next__", next_args())
    }

    fn set(dict: &mut DictObject, key: i64) {
        call(dict, "__setitem__", vec![Value::Int(key), Value::None]).unwrap();
    }

    #[test]
    fn yields_then_stops() {
        let mut h = Harness::default();
        let mut it = IteratorObject::new(vec![Value::Int(1)]);
        assert_eq!(it.linked(), None);
        assert!(matches!(next(&mut h, &mut it), Ok(Outcome::Ready(Value::Int(1)))));
        assert_eq!(next(&mut h, &mut it).unwrap_err().code, ErrorCode::StopIteration);
        assert_eq!(next(&mut h, &mut it).unwrap_err().code, ErrorCode::StopIteration);
    }

    #[test]
    fn a_dict_that_changes_size_fails_the_iteration_for_good() {
        let mut h = Harness::default();
        let mut dict = DictObject::default();
        set(&mut dict, 1);
        set(&mut dict, 2);
        let mut it = IteratorObject::over(7, vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(it.linked(), Some(7));
        assert!(matches!(next_over(&mut h, &mut it, &mut dict), Ok(Outcome::Ready(Value::Int(1)))));
        set(&mut dict, 2); // same size: unnoticed
        assert!(matches!(next_over(&mut h, &mut it, &mut dict), Ok(Outcome::Ready(Value::Int(2)))));
        call(&mut dict, "clear", vec![]).unwrap();
        let err = next_over(&mut h, &mut it, &mut dict).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ErrorCode::RuntimeError, "dictionary changed size during iteration")
        );
        set(&mut dict, 1);
        set(&mut dict, 2);
        assert_eq!(next_over(&mut h, &mut it, &mut dict).unwrap_err().code, ErrorCode::RuntimeError, "sticky");
    }

    #[test]
    fn a_dict_that_is_gone_leaves_the_snapshot_to_iterate() {
        let mut h = Harness::default();
        let mut it = IteratorObject::over(7, vec![Value::Int(1), Value::Int(2)]);
        // No linked object handed over: the dict was deleted.
        assert!(matches!(next(&mut h, &mut it), Ok(Outcome::Ready(Value::Int(1)))));
        assert!(matches!(next(&mut h, &mut it), Ok(Outcome::Ready(Value::Int(2)))));
        assert_eq!(next(&mut h, &mut it).unwrap_err().code, ErrorCode::StopIteration);
    }

    #[test]
    fn the_state_is_the_remaining_items_and_the_source() {
        let mut h = Harness::default();
        let keys = vec![Value::Int(0), Value::Int(1)];
        let mut a = IteratorObject::over(7, keys.clone());
        let mut b = IteratorObject::over(7, keys.clone());
        assert_eq!(a.state(), b.state());
        assert_ne!(a.state(), IteratorObject::over(8, keys).state());
        next(&mut h, &mut a).unwrap();
        assert_ne!(a.state(), b.state());
        next(&mut h, &mut b).unwrap();
        assert_eq!(a.state(), b.state());
        let back: IteratorObject = rmp_serde::from_slice(&a.state()).unwrap();
        assert_eq!(back.state(), a.state());
        assert_eq!(back.linked(), Some(7));
    }
}
