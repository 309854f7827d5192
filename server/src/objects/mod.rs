//! One module per object kind, and the table that builds them.
//!
//! Each module owns one kind's state and Python semantics and implements
//! [`SharedObject`]: a deterministic state machine, driven by the engine through a
//! [`Ctx`](crate::engine::Ctx), with a canonical serde form of its whole state.
//! Nothing here knows about sockets, sessions, dialects, the clock or the object
//! table. [`constructor`], [`construct`] and [`restore`] are the only places that list the kinds; a
//! [`Kind::Other`] is a custom kind the embedding program registered
//! ([`crate::custom`]), found in the [`CustomKinds`] table they are given.

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, WireError};

use crate::custom::CustomKinds;
use crate::object::{Args, MethodSpec, SharedObject};

pub mod array;
pub mod barrier;
pub mod condition;
pub mod dict;
pub mod event;
pub mod grants;
pub mod iterator;
pub mod list;
pub mod lock;
pub mod namespace;
pub mod queue;
pub mod rlock;
pub mod semaphore;
mod sequence;
pub mod set;
pub mod value;

/// The constructor signature of `kind` (as Python's callable for the typeid declares
/// it), or `None` if this server cannot build that kind. `custom` holds the custom
/// kinds.
pub fn constructor(kind: &Kind, custom: &CustomKinds) -> Option<&'static MethodSpec> {
    Some(match kind {
        Kind::Dict => &dict::CONSTRUCTOR,
        Kind::List => &list::CONSTRUCTOR,
        Kind::Set => &set::CONSTRUCTOR,
        Kind::Value => &value::CONSTRUCTOR,
        Kind::Array => &array::CONSTRUCTOR,
        Kind::Namespace => &namespace::CONSTRUCTOR,
        Kind::Queue | Kind::JoinableQueue => &queue::CONSTRUCTOR,
        Kind::Lock => &lock::CONSTRUCTOR,
        Kind::RLock => &rlock::CONSTRUCTOR,
        Kind::Semaphore => &semaphore::CONSTRUCTOR,
        Kind::BoundedSemaphore => &semaphore::BOUNDED_CONSTRUCTOR,
        Kind::Condition => &condition::CONSTRUCTOR,
        Kind::Event => &event::CONSTRUCTOR,
        Kind::Barrier => &barrier::CONSTRUCTOR,
        Kind::Other(typeid) => return custom.get(typeid).map(|kind| kind.constructor()),
    })
}

/// Builds a new object of `kind` from constructor arguments bound against
/// [`constructor`]`(kind)`. `custom` holds the custom kinds. No object is looked up
/// here: an object that drives another (a Condition's shared lock) names it, and the
/// engine hands it over ([`SharedObject::linked`]).
pub fn construct(kind: &Kind, args: Args, custom: &CustomKinds) -> Result<Box<dyn SharedObject>, WireError> {
    Ok(match kind {
        Kind::Dict => Box::new(dict::DictObject::new(args)?),
        Kind::List => Box::new(list::ListObject::new(args)?),
        Kind::Set => Box::new(set::SetObject::new(args)?),
        Kind::Value => Box::new(value::ValueObject::new(args)?),
        Kind::Array => Box::new(array::ArrayObject::new(args)?),
        Kind::Namespace => Box::new(namespace::NamespaceObject::new(args)?),
        Kind::Queue | Kind::JoinableQueue => Box::new(queue::QueueObject::new(kind.clone(), args)?),
        Kind::Lock => Box::new(lock::LockObject::new(args)?),
        Kind::RLock => Box::new(rlock::RLockObject::new(args)?),
        Kind::Semaphore => Box::new(semaphore::SemaphoreObject::new(args, false)?),
        Kind::BoundedSemaphore => Box::new(semaphore::SemaphoreObject::new(args, true)?),
        Kind::Condition => Box::new(condition::ConditionObject::new(args)?),
        Kind::Event => Box::new(event::EventObject::new(args)?),
        Kind::Barrier => Box::new(barrier::BarrierObject::new(args)?),
        Kind::Other(typeid) => match custom.get(typeid) {
            Some(custom) => custom.construct(args)?,
            None => return Err(unsupported_kind(kind)),
        },
    })
}

/// Rebuilds an object of `kind` from its [`SharedObject::state`] (a snapshot being
/// restored). A custom kind's state is opaque to the server, so it cannot be restored.
pub fn restore(kind: &Kind, state: &[u8]) -> Result<Box<dyn SharedObject>, String> {
    fn decode<T: SharedObject + serde::de::DeserializeOwned + 'static>(
        state: &[u8],
    ) -> Result<Box<dyn SharedObject>, String> {
        rmp_serde::from_slice::<T>(state).map(|o| Box::new(o) as Box<dyn SharedObject>).map_err(|e| e.to_string())
    }
    match kind {
        Kind::Dict => decode::<dict::DictObject>(state),
        Kind::List => decode::<list::ListObject>(state),
        Kind::Set => decode::<set::SetObject>(state),
        Kind::Value => decode::<value::ValueObject>(state),
        Kind::Array => decode::<array::ArrayObject>(state),
        Kind::Namespace => decode::<namespace::NamespaceObject>(state),
        Kind::Queue | Kind::JoinableQueue => rmp_serde::from_slice::<queue::QueueObject>(state)
            .map(|q| Box::new(q.normalized()) as Box<dyn SharedObject>)
            .map_err(|e| e.to_string()),
        Kind::Lock => decode::<lock::LockObject>(state),
        Kind::RLock => decode::<rlock::RLockObject>(state),
        Kind::Semaphore | Kind::BoundedSemaphore => decode::<semaphore::SemaphoreObject>(state),
        Kind::Condition => decode::<condition::ConditionObject>(state),
        Kind::Event => decode::<event::EventObject>(state),
        Kind::Barrier => decode::<barrier::BarrierObject>(state),
        Kind::Other(typeid) if typeid == iterator::TYPEID => decode::<iterator::IteratorObject>(state),
        Kind::Other(typeid) => Err(format!("the state of custom kind '{typeid}' is opaque and cannot be restored")),
    }
}

/// The error for a kind this server does not know.
pub fn unsupported_kind(kind: &Kind) -> WireError {
    WireError::new(ErrorCode::Unsupported, format!("unknown object kind '{kind}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_object_restores_from_its_state() {
        let custom = CustomKinds::default();
        for kind in Kind::BUILTIN {
            let spec = constructor(&kind, &custom).expect("built-in");
            let args: Vec<agora_proto::Value> = match kind {
                Kind::Value => vec![agora_proto::Value::Str("i".into()), agora_proto::Value::Int(7)],
                Kind::Array => vec![agora_proto::Value::Str("i".into()), agora_proto::Value::List(vec![])],
                Kind::Barrier => vec![agora_proto::Value::Int(2)],
                _ => vec![],
            };
            let object = construct(&kind, crate::object::bind(spec, args, vec![]).unwrap(), &custom).unwrap();
            let restored = restore(&kind, &object.state()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(restored.state(), object.state(), "{kind}");
            assert_eq!(restored.kind(), kind);
        }
        let custom_kind = Kind::Other("Tally".into());
        assert!(matches!(restore(&custom_kind, &[]), Err(e) if e.contains("opaque")));
    }

    #[test]
    fn every_built_in_object_serves_its_declared_table() {
        use crate::custom::CustomKinds;
        use agora_proto::Value;
        let custom = CustomKinds::default();
        for kind in Kind::BUILTIN {
            let spec = constructor(&kind, &custom).expect("built-in");
            let args: Vec<Value> = match kind {
                Kind::Value => vec![Value::Str("i".into()), Value::Int(0)],
                Kind::Array => vec![Value::Str("i".into()), Value::List(vec![])],
                Kind::Barrier => vec![Value::Int(2)],
                _ => vec![],
            };
            let args = crate::object::bind(spec, args, vec![]).expect("constructor arguments");
            let object = construct(&kind, args, &custom).expect("constructed");
            let served: Vec<&str> = object.methods().iter().map(|m| m.name).collect();
            let declared: Vec<&str> = agora_proto::methods::table(&kind).unwrap().iter().map(|m| m.name).collect();
            assert_eq!(served, declared, "{kind}");
        }
    }
}
