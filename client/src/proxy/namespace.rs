//! [`Namespace`]: a shared bag of named attributes (Python `manager.Namespace()`).

use std::sync::Arc;

use agora_proto::methods;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Handle};
use crate::error::{Error, Result};

/// A proxy for a shared namespace: attributes by name, each of any type.
///
/// Unlike the other proxies a namespace is untyped; each call names the type it
/// stores or expects, so one namespace can hold, say, a `String` `status` and a `u64`
/// `count`, as a Python client's `ns.status = "ok"; ns.count = 3` would. Reading an
/// attribute as a type it does not convert into gives
/// [`Error::TypeMismatch`]. Cheap to clone.
#[derive(Clone)]
pub struct Namespace {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Namespace({:?})", self.handle)
    }
}

impl Namespace {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Namespace { handle }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The attribute `name` as a `T`, or `None` if it is not set
    /// (Python `ns.name`, `__getattribute__`, whose `AttributeError` becomes `None`).
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.handle.call(methods::namespace::GETATTRIBUTE.name, &[Value::Str(name.to_owned().into())]).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::NoSuchAttribute(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the attribute `name` to `value`, replacing any value of any type
    /// (Python `ns.name = value`, `__setattr__`).
    pub async fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.handle
            .call(methods::namespace::SETATTR.name, &[Value::Str(name.to_owned().into()), encode(value)?])
            .await
            .map(drop)
    }

    /// Removes the attribute `name`; returns whether it was set
    /// (Python `del ns.name`, `__delattr__`, whose `AttributeError` becomes `false`).
    pub async fn remove(&self, name: &str) -> Result<bool> {
        match self.handle.call(methods::namespace::DELATTR.name, &[Value::Str(name.to_owned().into())]).await {
            Ok(_) => Ok(true),
            Err(Error::NoSuchAttribute(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
