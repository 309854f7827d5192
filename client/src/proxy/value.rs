//! [`Value`]: a single shared value (Python `manager.Value`).
//!
//! Not to be confused with [`agora_proto::Value`], the dynamic value model the server
//! stores: this is a proxy for one server object that holds one such value.

use std::marker::PhantomData;
use std::sync::Arc;

use agora_proto::methods;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Handle;
use crate::error::Result;

/// A proxy for a single shared value of type `T` (Python `managers.Value`).
///
/// Any serde type works. Besides Python's `get`/`set`, the server offers atomic
/// read-modify-write operations, [`add`](Value::add) and
/// [`compare_and_set`](Value::compare_and_set), so that concurrent clients need no
/// lock to count or to update conditionally. Cheap to clone.
pub struct Value<T> {
    handle: Arc<Handle>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { handle: self.handle.clone(), _types: PhantomData }
    }
}

impl<T> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value({:?})", self.handle)
    }
}

impl<T> Value<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Value { handle, _types: PhantomData }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The current value (Python `v.value`, `get`).
    pub async fn get(&self) -> Result<T> {
        self.handle.call_as(methods::value::GET.name, &[]).await
    }

    /// Replaces the value (Python `v.value = new`, `set`).
    pub async fn set(&self, value: &T) -> Result<()> {
        self.handle.call(methods::value::SET.name, &(value,)).await.map(drop)
    }

    /// Atomically adds `delta` to the value and returns the new value. agora's own
    /// `add`; no Python equivalent (`v.value += delta` in Python is a separate get and
    /// set, which races).
    ///
    /// Meant for numbers. Fails with [`Error::TypeMismatch`](crate::Error::TypeMismatch)
    /// if the server cannot add `delta` to the stored value.
    pub async fn add(&self, delta: &T) -> Result<T> {
        self.handle.call_as(methods::value::ADD.name, &(delta,)).await
    }

    /// Atomically replaces the value with `new` if it currently equals `expected`
    /// (by Python's `==`); returns whether it did. agora's own `compare_and_set`;
    /// no Python equivalent.
    pub async fn compare_and_set(&self, expected: &T, new: &T) -> Result<bool> {
        self.handle.call_as(methods::value::COMPARE_AND_SET.name, &(expected, new)).await
    }
}
