//! The blocking form of the generic proxy, [`Object`], and the [`Manager`] methods
//! that open one.

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use super::{Blocking, Manager, Runtime};
use crate::error::Result;
use crate::proto::Value;

blocking_proxy! {
    /// A shared object of any kind called by method name, for synchronous code: the
    /// blocking form of [`crate::Object`] (custom kinds above all). Cheap to clone,
    /// `Send + Sync`.
    Object<> where [] {
    }
}

impl Object {
    /// The object's kind: its type name ([`crate::Object::typeid`]).
    pub fn typeid(&self) -> &str {
        self.inner.typeid()
    }

    /// Calls `method` with `args` (a tuple, spread into positional arguments). The
    /// blocking form of [`crate::Object::call`].
    pub fn call<A: Serialize>(&self, method: &str, args: A) -> Result<Value> {
        self.rt.block_on(self.inner.call(method, args))
    }

    /// Calls `method` and converts the result into `T`. The blocking form of
    /// [`crate::Object::call_as`].
    pub fn call_as<T: DeserializeOwned, A: Serialize>(&self, method: &str, args: A) -> Result<T> {
        self.rt.block_on(self.inner.call_as(method, args))
    }
}

/// Opening objects by type name.
impl Manager {
    /// The object named `name` of kind `typeid`, created from `args` if it does not
    /// exist. The blocking form of [`crate::Manager::object`].
    pub fn object<A: Serialize>(&self, typeid: &str, name: &str, args: A) -> Result<Object> {
        self.rt.block_on(self.inner.object(typeid, name, args)).map(|o| self.wrap(o))
    }

    /// A new anonymous object of kind `typeid`, built from `args`. The blocking form
    /// of [`crate::Manager::new_object`].
    pub fn new_object<A: Serialize>(&self, typeid: &str, args: A) -> Result<Object> {
        self.rt.block_on(self.inner.new_object(typeid, args)).map(|o| self.wrap(o))
    }
}
