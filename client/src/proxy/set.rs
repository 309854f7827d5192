//! [`Set`]: a shared set (Python `set`, CPython 3.14's `SyncManager.set()`).

use std::marker::PhantomData;
use std::sync::Arc;

use agora_proto::methods;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Handle};
use crate::error::{Error, Result};

/// A proxy for a shared set of `T`.
///
/// Members follow Python's rules, not `T`'s `Eq`: they are compared as the values a
/// Python client would see (`1` and `1.0` are one member), so `T` must serialize to
/// something Python can hash — numbers, strings, bytes, `bool`, tuples of those. A
/// type that serializes to a list or a dict (a `Vec`, a struct) is refused with
/// [`Error::TypeMismatch`] ("unhashable type: 'list'"), as Python would refuse it. A
/// Python client sees the same set. Every method is one atomic call on the server.
/// Cheap to clone.
///
/// ```no_run
/// # async fn demo(manager: agora_client::Manager) -> agora_client::Result<()> {
/// let online = manager.set::<String>("online").await?;
/// online.add(&"alice".to_string()).await?;
/// online.extend(&["bob".to_string(), "carol".to_string()]).await?;
/// assert!(online.contains(&"bob".to_string()).await?);
///
/// // Set algebra runs on the server, against any list of values.
/// let admins = ["carol".to_string(), "dave".to_string()];
/// let online_admins = online.intersection(&admins).await?;
/// assert_eq!(online_admins, vec!["carol".to_string()]);
/// assert!(!online.is_disjoint(&admins).await?);
///
/// assert!(online.remove(&"alice".to_string()).await?);
/// assert!(!online.remove(&"alice".to_string()).await?, "already gone");
/// assert_eq!(online.len().await?, 2);
/// # Ok(()) }
/// ```
pub struct Set<T> {
    handle: Arc<Handle>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for Set<T> {
    fn clone(&self) -> Self {
        Set { handle: self.handle.clone(), _types: PhantomData }
    }
}

impl<T> std::fmt::Debug for Set<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Set({:?})", self.handle)
    }
}

impl<T> Set<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Set { handle, _types: PhantomData }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Adds `member`; a member equal to it already there stays (Python `add`).
    pub async fn add(&self, member: &T) -> Result<()> {
        self.handle.call(methods::set::ADD.name, &(member,)).await.map(drop)
    }

    /// True if `member` is in the set (Python `member in s`, `__contains__`).
    pub async fn contains(&self, member: &T) -> Result<bool> {
        self.handle.call_as(methods::set::CONTAINS.name, &(member,)).await
    }

    /// Removes `member`; returns whether it was there (Python `remove`, whose
    /// `KeyError` becomes `false`).
    pub async fn remove(&self, member: &T) -> Result<bool> {
        match self.handle.call(methods::set::REMOVE.name, &(member,)).await {
            Ok(_) => Ok(true),
            Err(Error::KeyNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `member` if it is there (Python `discard`).
    pub async fn discard(&self, member: &T) -> Result<()> {
        self.handle.call(methods::set::DISCARD.name, &(member,)).await.map(drop)
    }

    /// Removes and returns some member, or `None` if the set is empty (Python `pop`;
    /// agora takes the most recently added one).
    pub async fn pop(&self) -> Result<Option<T>> {
        match self.handle.call(methods::set::POP.name, &[]).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Number of members (Python `len(s)`, `__len__`).
    pub async fn len(&self) -> Result<usize> {
        self.handle.call_as(methods::set::LEN.name, &[]).await
    }

    /// True when the set has no members (Python `len(s) == 0`, `__len__`).
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Removes every member (Python `clear`).
    pub async fn clear(&self) -> Result<()> {
        self.handle.call(methods::set::CLEAR.name, &[]).await.map(drop)
    }

    /// A copy of every member, in no particular order (Python `copy`).
    pub async fn to_vec(&self) -> Result<Vec<T>> {
        self.handle.call_as(methods::set::COPY.name, &[]).await
    }

    /// Adds every item, atomically (Python `update`).
    ///
    /// Takes anything that iterates over `&T`: `&[T]`, `&Vec<T>`, `slice.iter()`, ….
    pub async fn extend<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call(methods::set::UPDATE.name, &[list(items)?]).await.map(drop)
    }

    /// The members together with `items`, without changing the set (Python `union`).
    pub async fn union<'a, I>(&self, items: I) -> Result<Vec<T>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::UNION.name, &[list(items)?]).await
    }

    /// The members also in `items`, without changing the set (Python
    /// `intersection`).
    pub async fn intersection<'a, I>(&self, items: I) -> Result<Vec<T>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::INTERSECTION.name, &[list(items)?]).await
    }

    /// The members not in `items`, without changing the set (Python `difference`).
    pub async fn difference<'a, I>(&self, items: I) -> Result<Vec<T>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::DIFFERENCE.name, &[list(items)?]).await
    }

    /// What is in the set or in `items` but not in both, without changing the set
    /// (Python `symmetric_difference`).
    pub async fn symmetric_difference<'a, I>(&self, items: I) -> Result<Vec<T>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::SYMMETRIC_DIFFERENCE.name, &[list(items)?]).await
    }

    /// Keeps only the members also in `items`, atomically (Python
    /// `intersection_update`, `s &= …`).
    pub async fn intersection_update<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call(methods::set::INTERSECTION_UPDATE.name, &[list(items)?]).await.map(drop)
    }

    /// Removes every member that is in `items`, atomically (Python
    /// `difference_update`, `s -= …`).
    pub async fn difference_update<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call(methods::set::DIFFERENCE_UPDATE.name, &[list(items)?]).await.map(drop)
    }

    /// Removes the members that are in `items` and adds the items that are not,
    /// atomically (Python `symmetric_difference_update`, `s ^= …`).
    pub async fn symmetric_difference_update<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call(methods::set::SYMMETRIC_DIFFERENCE_UPDATE.name, &[list(items)?]).await.map(drop)
    }

    /// True if every member is in `items` (Python `issubset`, `s <= …`).
    pub async fn is_subset<'a, I>(&self, items: I) -> Result<bool>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::ISSUBSET.name, &[list(items)?]).await
    }

    /// True if every item of `items` is a member (Python `issuperset`, `s >= …`).
    pub async fn is_superset<'a, I>(&self, items: I) -> Result<bool>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::ISSUPERSET.name, &[list(items)?]).await
    }

    /// True if no item of `items` is a member (Python `isdisjoint`).
    pub async fn is_disjoint<'a, I>(&self, items: I) -> Result<bool>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.handle.call_as(methods::set::ISDISJOINT.name, &[list(items)?]).await
    }
}

/// The items as one list argument (Python's named set methods take any iterable).
fn list<'a, T: Serialize + 'a>(items: impl IntoIterator<Item = &'a T>) -> Result<Value> {
    Ok(Value::List(items.into_iter().map(encode).collect::<Result<Vec<_>>>()?))
}
