//! [`Dict`]: a shared dict (Python `dict`, insertion ordered).

use std::marker::PhantomData;
use std::sync::Arc;

use agora_proto::methods;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Handle};
use crate::error::{Error, Result};

/// A proxy for a shared dict with keys `K` and values `V`.
///
/// Any serde type works for both; a Python client sees the same dict (structs appear
/// as dicts with field names as keys). Cheap to clone.
pub struct Dict<K, V> {
    handle: Arc<Handle>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict { handle: self.handle.clone(), _types: PhantomData }
    }
}

impl<K, V> std::fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dict({:?})", self.handle)
    }
}

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Dict { handle, _types: PhantomData }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The value under `key`, or `None` (Python `d[key]`, `__getitem__`).
    pub async fn get(&self, key: &K) -> Result<Option<V>> {
        match self.handle.call(methods::dict::GETITEM.name, &(key,)).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets `key` to `value` (Python `d[key] = value`, `__setitem__`).
    pub async fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.handle.call(methods::dict::SETITEM.name, &(key, value)).await.map(drop)
    }

    /// Removes `key` and returns its value, or `None` if absent (Python `pop`).
    pub async fn remove(&self, key: &K) -> Result<Option<V>> {
        match self.handle.call(methods::dict::POP.name, &(key,)).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True if `key` is present (Python `key in d`, `__contains__`).
    pub async fn contains_key(&self, key: &K) -> Result<bool> {
        self.handle.call_as(methods::dict::CONTAINS.name, &(key,)).await
    }

    /// Number of entries (Python `len(d)`, `__len__`).
    pub async fn len(&self) -> Result<usize> {
        self.handle.call_as(methods::dict::LEN.name, &[]).await
    }

    /// True when the dict has no entries.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// The keys in insertion order (Python `keys`).
    pub async fn keys(&self) -> Result<Vec<K>> {
        self.handle.call_as(methods::dict::KEYS.name, &[]).await
    }

    /// The values in insertion order (Python `values`).
    pub async fn values(&self) -> Result<Vec<V>> {
        self.handle.call_as(methods::dict::VALUES.name, &[]).await
    }

    /// The entries in insertion order (Python `items`).
    pub async fn items(&self) -> Result<Vec<(K, V)>> {
        self.handle.call_as(methods::dict::ITEMS.name, &[]).await
    }

    /// Removes every entry (Python `clear`).
    pub async fn clear(&self) -> Result<()> {
        self.handle.call(methods::dict::CLEAR.name, &[]).await.map(drop)
    }

    /// Inserts every pair, in order, atomically (Python `update`).
    pub async fn update<'a, I>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a K, &'a V)>,
        K: 'a,
        V: 'a,
    {
        let pairs = entries
            .into_iter()
            .map(|(k, v)| Ok(Value::Tuple(vec![encode(k)?, encode(v)?])))
            .collect::<Result<Vec<_>>>()?;
        self.handle.call(methods::dict::UPDATE.name, &[Value::List(pairs)]).await.map(drop)
    }

    /// Returns the value under `key`, inserting `default` first if absent
    /// (Python `setdefault`).
    pub async fn setdefault(&self, key: &K, default: &V) -> Result<V> {
        self.handle.call_as(methods::dict::SETDEFAULT.name, &(key, default)).await
    }

    /// Removes and returns the most recently inserted entry (Python `popitem`).
    pub async fn pop_last(&self) -> Result<Option<(K, V)>> {
        match self.handle.call(methods::dict::POPITEM.name, &[]).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Atomically adds `delta` to the numeric value under `key` (starting from 0 when
    /// absent) and returns the new value. agora's own `incr`; no Python equivalent.
    pub async fn increment(&self, key: &K, delta: &V) -> Result<V> {
        self.handle.call_as(methods::dict::INCR.name, &(key, delta)).await
    }

    /// Atomically sets `key` to `new` if its current value equals `expected`
    /// (`None`: if the key is absent). Returns whether it did. agora's own
    /// `compare_and_set`; no Python equivalent.
    pub async fn compare_and_set(&self, key: &K, expected: Option<&V>, new: &V) -> Result<bool> {
        let args = match expected {
            Some(expected) => vec![encode(key)?, encode(expected)?, encode(new)?],
            None => vec![encode(key)?, encode(new)?],
        };
        self.handle.call_as(methods::dict::COMPARE_AND_SET.name, &args).await
    }
}
