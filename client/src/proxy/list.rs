//! [`List`]: a shared list (Python `list`).

use std::marker::PhantomData;
use std::sync::Arc;

use agora_proto::methods;
use agora_proto::slice::Slice;
use agora_proto::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, Handle};
use crate::error::{Error, Result};

/// A proxy for a shared list of `T`.
///
/// Any serde type works; a Python client sees the same list. Indices are `i64` and
/// follow Python: a negative index counts from the end (`-1` is the last item).
/// Every method is one atomic call on the server. Cheap to clone.
pub struct List<T> {
    handle: Arc<Handle>,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List { handle: self.handle.clone(), _types: PhantomData }
    }
}

impl<T> std::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "List({:?})", self.handle)
    }
}

impl<T> List<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        List { handle, _types: PhantomData }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Appends `item` at the end (Python `append`; [`List::push`] is the same call,
    /// by Rust's name).
    pub async fn append(&self, item: &T) -> Result<()> {
        self.handle.call(methods::list::APPEND.name, &(item,)).await.map(drop)
    }

    /// Appends `item` at the end, like `Vec::push` (the same call as
    /// [`List::append`], Python's name).
    pub async fn push(&self, item: &T) -> Result<()> {
        self.append(item).await
    }

    /// The item at `index`, or `None` if the index is out of range
    /// (Python `l[index]`, `__getitem__`). Negative indices count from the end.
    pub async fn get(&self, index: i64) -> Result<Option<T>> {
        match self.handle.call(methods::list::GETITEM.name, &[Value::Int(index)]).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::IndexOutOfRange(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the item at `index` (Python `l[index] = item`, `__setitem__`).
    ///
    /// Fails with [`Error::IndexOutOfRange`] if there is no item at `index`.
    pub async fn set(&self, index: i64, item: &T) -> Result<()> {
        self.handle.call(methods::list::SETITEM.name, &(&index, item)).await.map(drop)
    }

    /// Inserts `item` before `index` (Python `insert`). As in Python, an index past
    /// either end inserts at that end; it never fails for being out of range.
    pub async fn insert(&self, index: i64, item: &T) -> Result<()> {
        self.handle.call(methods::list::INSERT.name, &(&index, item)).await.map(drop)
    }

    /// Removes and returns the last item, or `None` if the list is empty
    /// (Python `pop()`).
    pub async fn pop(&self) -> Result<Option<T>> {
        match self.handle.call(methods::list::POP.name, &[]).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::IndexOutOfRange(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes and returns the item at `index` (Python `pop(index)`).
    ///
    /// Fails with [`Error::IndexOutOfRange`] if there is no item at `index`.
    pub async fn pop_at(&self, index: i64) -> Result<T> {
        self.handle.call_as(methods::list::POP.name, &[Value::Int(index)]).await
    }

    /// Removes the item at `index` without returning it
    /// (Python `del l[index]`, `__delitem__`).
    ///
    /// Fails with [`Error::IndexOutOfRange`] if there is no item at `index`.
    pub async fn remove_at(&self, index: i64) -> Result<()> {
        self.handle.call(methods::list::DELITEM.name, &[Value::Int(index)]).await.map(drop)
    }

    /// Removes the first item equal to `item`; returns whether there was one
    /// (Python `remove`, whose `ValueError` becomes `false`).
    pub async fn remove(&self, item: &T) -> Result<bool> {
        match self.handle.call(methods::list::REMOVE.name, &(item,)).await {
            Ok(_) => Ok(true),
            Err(Error::InvalidValue(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The index of the first item equal to `item`, or `None`
    /// (Python `index`, whose `ValueError` becomes `None`).
    pub async fn position(&self, item: &T) -> Result<Option<usize>> {
        match self.handle.call(methods::list::INDEX.name, &(item,)).await {
            Ok(v) => decode(v).map(Some),
            Err(Error::InvalidValue(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How many items equal `item` (Python `count`).
    pub async fn count(&self, item: &T) -> Result<usize> {
        self.handle.call_as(methods::list::COUNT.name, &(item,)).await
    }

    /// True if some item equals `item` (Python `item in l`, `__contains__`).
    pub async fn contains(&self, item: &T) -> Result<bool> {
        self.handle.call_as(methods::list::CONTAINS.name, &(item,)).await
    }

    /// Appends every item, in order, atomically (Python `extend`).
    ///
    /// Takes anything that iterates over `&T`: `&[T]`, `&Vec<T>`, `slice.iter()`, ….
    pub async fn extend<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        let items = items.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.handle.call(methods::list::EXTEND.name, &[Value::List(items)]).await.map(drop)
    }

    /// Number of items (Python `len(l)`, `__len__`).
    pub async fn len(&self) -> Result<usize> {
        self.handle.call_as(methods::list::LEN.name, &[]).await
    }

    /// True when the list has no items (Python `len(l) == 0`, `__len__`).
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Removes every item (Python `clear`).
    pub async fn clear(&self) -> Result<()> {
        self.handle.call(methods::list::CLEAR.name, &[]).await.map(drop)
    }

    /// Reverses the list in place (Python `reverse`).
    pub async fn reverse(&self) -> Result<()> {
        self.handle.call(methods::list::REVERSE.name, &[]).await.map(drop)
    }

    /// Sorts the list in place, ascending, by Python's ordering of the stored values
    /// (Python `sort()`). Stable. Items that Python cannot compare with each other
    /// (say, ints and strings) give [`Error::TypeMismatch`].
    pub async fn sort(&self) -> Result<()> {
        self.sort_in_order(false).await
    }

    /// Sorts the list in place, descending (Python `sort(reverse=True)`). Stable, as in
    /// Python: equal items keep their order.
    pub async fn sort_descending(&self) -> Result<()> {
        self.sort_in_order(true).await
    }

    /// `sort(key=None, reverse=reverse)`, passed positionally.
    async fn sort_in_order(&self, reverse: bool) -> Result<()> {
        self.handle.call(methods::list::SORT.name, &[Value::None, Value::Bool(reverse)]).await.map(drop)
    }

    /// A copy of every item, in order (Python `l[:]`, `__getitem__` with a full slice).
    pub async fn to_vec(&self) -> Result<Vec<T>> {
        self.slice(None, None).await
    }

    /// A copy of the items from `start` up to (not including) `stop`
    /// (Python `l[start:stop]`, `__getitem__` with a slice).
    ///
    /// `None` leaves a bound out (`l[:stop]`, `l[start:]`). As in Python, negative
    /// bounds count from the end and bounds past either end are clamped, so this never
    /// fails for being out of range: `slice(Some(-2), None)` is the last two items.
    pub async fn slice(&self, start: Option<i64>, stop: Option<i64>) -> Result<Vec<T>> {
        let slice = Slice { start, stop, step: None };
        self.handle.call_as(methods::list::GETITEM.name, &[slice.to_value()]).await
    }

    /// Repeats the contents in place `times` times; `0` empties the list
    /// (Python `l *= times`, `__imul__`).
    pub async fn repeat_in_place(&self, times: usize) -> Result<()> {
        let times = i64::try_from(times).map_err(|_| Error::Overflow(format!("cannot repeat a list {times} times")))?;
        self.handle.call(methods::list::IMUL.name, &[Value::Int(times)]).await.map(drop)
    }
}
