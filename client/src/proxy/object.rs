//! [`Object`]: the generic proxy, for objects of any kind called by method name —
//! above all the custom kinds a program embedding the server registered (the Rust
//! side of Python's `BaseManager.register`).

use std::sync::Arc;

use agora_proto::native::Kind;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Handle};
use crate::error::{Error, Result};
use crate::Manager;

/// A proxy for one shared object of any kind, whose methods are called by name with
/// dynamic arguments: the way to reach a custom kind
/// (`agora_server::custom::CustomKind`), and an escape hatch to any built-in method by
/// its Python name. Cheap to clone.
///
/// Arguments are a tuple of serde values, spread into the method's positional
/// arguments: `()` for none, `(1,)` for one, `("a", 2)` for two (a `Vec` spreads
/// too). To pass a single list or tuple, wrap it: `(vec![1, 2],)`.
///
/// ```no_run
/// # async fn demo(manager: agora_client::Manager) -> agora_client::Result<()> {
/// // The named object "hits" of the custom kind "Counter", created with Counter(10)
/// // if it does not exist yet.
/// let hits = manager.object("Counter", "hits", (10,)).await?;
/// hits.call("incr", (5,)).await?;
/// let now: i64 = hits.call_as("get", ()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Object {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Object({:?})", self.handle)
    }
}

/// Spreads serialized arguments into positional ones.
fn arguments<A: Serialize>(args: &A) -> Result<Vec<Value>> {
    match encode(args)? {
        Value::None => Ok(Vec::new()),
        Value::Tuple(items) | Value::List(items) => Ok(items),
        other => Err(Error::TypeMismatch(format!(
            "arguments must be a tuple like (1, \"a\"), or () for none, not {}",
            other.type_name()
        ))),
    }
}

impl Object {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Object { handle }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The object's kind: its type name (`"Counter"`, `"dict"`…).
    pub fn typeid(&self) -> &str {
        self.handle.kind.as_str()
    }

    /// Calls `method` with `args` (a tuple, spread into positional arguments) and
    /// returns its result as a dynamic value. Fails with [`Error::NoSuchMethod`] if the
    /// kind has no such method, and with whatever error the method raised.
    pub async fn call<A: Serialize>(&self, method: &str, args: A) -> Result<Value> {
        self.handle.call(method, &arguments(&args)?).await
    }

    /// Like [`Object::call`], converting the result into `T`
    /// ([`Error::TypeMismatch`] if it does not convert).
    pub async fn call_as<T: DeserializeOwned, A: Serialize>(&self, method: &str, args: A) -> Result<T> {
        decode(self.call(method, args).await?)
    }
}

impl Manager {
    /// The object named `name` of kind `typeid`, created with the constructor
    /// arguments `args` (a tuple; `()` for none) if it does not exist. Fails with
    /// [`Error::WrongKind`] if the name holds another kind, and with
    /// [`Error::Unsupported`] if the server knows no kind `typeid`.
    pub async fn object<A: Serialize>(&self, typeid: &str, name: &str, args: A) -> Result<Object> {
        Ok(Object::from_handle(self.open(Kind::parse(typeid), Some(name), arguments(&args)?).await?))
    }

    /// A new anonymous object of kind `typeid`, built from the constructor arguments
    /// `args` (a tuple; `()` for none); it lives while some proxy holds it (Python's
    /// `manager.Counter(…)` after `register("Counter")`).
    pub async fn new_object<A: Serialize>(&self, typeid: &str, args: A) -> Result<Object> {
        Ok(Object::from_handle(self.open(Kind::parse(typeid), None, arguments(&args)?).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_spread_tuples_and_refuse_bare_values() {
        assert!(arguments(&()).unwrap().is_empty());
        assert_eq!(arguments(&(1, "a")).unwrap(), vec![Value::Int(1), Value::Str("a".into())]);
        assert_eq!(arguments(&vec![1, 2]).unwrap().len(), 2);
        assert_eq!(arguments(&(vec![1, 2],)).unwrap(), vec![Value::List(vec![Value::Int(1), Value::Int(2)])]);
        assert!(matches!(arguments(&5), Err(Error::TypeMismatch(_))));
    }
}
