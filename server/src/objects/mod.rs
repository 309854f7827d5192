//! One module per object kind, and the table that builds them.
//!
//! Each module owns one kind's state and Python semantics and implements
//! [`SharedObject`](crate::object::SharedObject); nothing here knows about sockets,
//! sessions or dialects. [`constructor`] and [`construct`] are the only places that
//! list the kinds.

use agora_proto::native::Kind;
use agora_proto::{ErrorCode, WireError};

use crate::object::{Args, MethodSpec, SharedObject};
use crate::registry::Registry;

pub mod array;
pub mod dict;
pub mod list;
pub mod namespace;
mod sequence;
pub mod value;

/// The constructor signature of `kind` (as Python's callable for the typeid declares
/// it), or `None` if this server cannot build that kind.
pub fn constructor(kind: &Kind) -> Option<&'static MethodSpec> {
    Some(match kind {
        Kind::Dict => &dict::CONSTRUCTOR,
        Kind::List => &list::CONSTRUCTOR,
        Kind::Value => &value::CONSTRUCTOR,
        Kind::Array => &array::CONSTRUCTOR,
        Kind::Namespace => &namespace::CONSTRUCTOR,
        _ => return None,
    })
}

/// Builds a new object of `kind` from constructor arguments bound against
/// [`constructor`]`(kind)`. `registry` resolves arguments that refer to other objects
/// (`Condition(lock)`).
pub fn construct(kind: &Kind, args: Args, registry: &Registry) -> Result<Box<dyn SharedObject>, WireError> {
    let _ = registry;
    Ok(match kind {
        Kind::Dict => Box::new(dict::DictObject::new(args)?),
        Kind::List => Box::new(list::ListObject::new(args)?),
        Kind::Value => Box::new(value::ValueObject::new(args)?),
        Kind::Array => Box::new(array::ArrayObject::new(args)?),
        Kind::Namespace => Box::new(namespace::NamespaceObject::new(args)?),
        other => return Err(unsupported_kind(other)),
    })
}

/// The error for a kind this server does not know.
pub fn unsupported_kind(kind: &Kind) -> WireError {
    WireError::new(ErrorCode::Unsupported, format!("unknown object kind '{kind}'"))
}
