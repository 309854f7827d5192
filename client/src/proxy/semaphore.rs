//! [`Semaphore`]: a shared counting semaphore, bounded or not (Python
//! `threading.Semaphore` and `threading.BoundedSemaphore` through a manager).

use std::sync::Arc;
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;

use super::lock::{acquire_fenced, granted, timed, Guard};
use super::Handle;
use crate::error::{Error, Result};
use crate::Manager;

/// A proxy for a shared semaphore (Python `manager.Semaphore(value)` or
/// `manager.BoundedSemaphore(value)`). Cheap to clone.
///
/// Each acquire takes one permit and returns a [`Guard`] that gives it back on drop.
/// Permits have no owner, as in Python: [`Semaphore::release`] lets any client add
/// permits. When a session ends holding permits, the server gives them back.
#[derive(Clone)]
pub struct Semaphore {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Semaphore({:?})", self.handle)
    }
}

impl Semaphore {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Semaphore { handle }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Waits for a permit (Python `acquire()`; agora's `acquire_fenced`, which also
    /// answers the permit's id, [`Guard::token`]). First come, first served; dropping
    /// the future gives up waiting without ever leaving a permit taken.
    pub async fn acquire(&self) -> Result<Guard> {
        granted(acquire_fenced(&self.handle, vec![Value::Bool(true)], None).await?)
    }

    /// A permit if one is free now, else `None` (Python `acquire(blocking=False)`).
    pub async fn try_acquire(&self) -> Result<Option<Guard>> {
        acquire_fenced(&self.handle, vec![Value::Bool(false)], None).await
    }

    /// Waits up to `timeout` for a permit; `None` if none came (Python
    /// `acquire(timeout=...)`).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Guard>> {
        acquire_fenced(&self.handle, timed(timeout), None).await
    }

    /// Adds `n` permits whoever took them (Python `release(n)`): this session's own
    /// permits are cleared first, then the oldest others'. A bounded semaphore refuses
    /// to go above its initial value with [`Error::InvalidValue`]
    /// (`Semaphore released too many times`) — except to absorb, once each, releases
    /// meant for permits whose holder's session ended (the server gave those back
    /// already). Prefer releasing the [`Guard`].
    pub async fn release(&self, n: usize) -> Result<()> {
        let n = i64::try_from(n).map_err(|_| Error::Overflow(format!("cannot release {n} permits")))?;
        self.handle.call(methods::semaphore::RELEASE.name, &[Value::Int(n)]).await.map(drop)
    }

    /// The number of free permits now (agora's `get_value`; Python's private
    /// `_value`).
    pub async fn available(&self) -> Result<usize> {
        self.handle.call_as(methods::semaphore::GET_VALUE.name, &[]).await
    }
}

fn initial(value: usize) -> Result<Vec<Value>> {
    let value = i64::try_from(value).map_err(|_| Error::Overflow(format!("{value} permits")))?;
    Ok(vec![Value::Int(value)])
}

impl Manager {
    /// The semaphore named `name`, created with `value` permits if it does not exist.
    pub async fn semaphore(&self, name: &str, value: usize) -> Result<Semaphore> {
        Ok(Semaphore::from_handle(self.open(Kind::Semaphore, Some(name), initial(value)?).await?))
    }

    /// A new anonymous semaphore with `value` permits (Python
    /// `manager.Semaphore(value)`).
    pub async fn new_semaphore(&self, value: usize) -> Result<Semaphore> {
        Ok(Semaphore::from_handle(self.open(Kind::Semaphore, None, initial(value)?).await?))
    }

    /// The bounded semaphore named `name`, created with `value` permits if it does
    /// not exist: releases beyond `value` fail.
    pub async fn bounded_semaphore(&self, name: &str, value: usize) -> Result<Semaphore> {
        Ok(Semaphore::from_handle(self.open(Kind::BoundedSemaphore, Some(name), initial(value)?).await?))
    }

    /// A new anonymous bounded semaphore with `value` permits (Python
    /// `manager.BoundedSemaphore(value)`).
    pub async fn new_bounded_semaphore(&self, value: usize) -> Result<Semaphore> {
        Ok(Semaphore::from_handle(self.open(Kind::BoundedSemaphore, None, initial(value)?).await?))
    }
}
