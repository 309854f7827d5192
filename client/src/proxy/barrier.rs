//! [`Barrier`]: a shared barrier (Python `threading.Barrier` through a manager).

use std::sync::Arc;
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;

use super::lock::timeout_value;
use super::Handle;
use crate::error::{Error, Result};
use crate::Manager;

/// A proxy for a shared barrier (Python `manager.Barrier(parties)`): `parties`
/// callers meet in [`Barrier::wait`], which releases them all once the last one
/// arrives; then the barrier is ready for the next round. Cheap to clone.
///
/// A wait that times out breaks the barrier for everyone, as do [`Barrier::abort`]
/// and a [`Barrier::reset`] while parties wait: their waits fail with
/// [`Error::BrokenBarrier`], and so does every wait until a reset. Python's `action`
/// is not supported (the server never runs client code): run it in the party whose
/// wait returns 0.
#[derive(Clone)]
pub struct Barrier {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Barrier({:?})", self.handle)
    }
}

impl Barrier {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Barrier { handle }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Waits for the round to fill; returns this caller's arrival index, 0 for the
    /// first to arrive up to `parties - 1` for the last (Python `wait()`).
    pub async fn wait(&self) -> Result<usize> {
        self.handle.call_as(methods::barrier::WAIT.name, &[Value::None]).await
    }

    /// Like [`Barrier::wait`], breaking the barrier if the round has not filled
    /// within `timeout` ([`Error::BrokenBarrier`]) (Python `wait(timeout)`).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.handle.call_as(methods::barrier::WAIT.name, &[timeout_value(Some(timeout))]).await
    }

    /// Breaks the barrier: current and later waits fail with
    /// [`Error::BrokenBarrier`] until [`Barrier::reset`] (Python `abort()`).
    pub async fn abort(&self) -> Result<()> {
        self.handle.call(methods::barrier::ABORT.name, &[]).await.map(drop)
    }

    /// Makes the barrier whole and empty again; parties waiting now fail with
    /// [`Error::BrokenBarrier`] (Python `reset()`).
    pub async fn reset(&self) -> Result<()> {
        self.handle.call(methods::barrier::RESET.name, &[]).await.map(drop)
    }

    /// How many parties each round needs (Python `parties`).
    pub async fn parties(&self) -> Result<usize> {
        self.attribute("parties").await
    }

    /// How many parties wait in the current round (Python `n_waiting`).
    pub async fn n_waiting(&self) -> Result<usize> {
        self.attribute("n_waiting").await
    }

    /// True if the barrier is broken (Python `broken`).
    pub async fn broken(&self) -> Result<bool> {
        self.attribute("broken").await
    }

    async fn attribute<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.handle.call_as(methods::barrier::GETATTRIBUTE.name, &[Value::Str(name.into())]).await
    }
}

fn parties_arg(parties: usize) -> Result<Vec<Value>> {
    let parties = i64::try_from(parties).map_err(|_| Error::Overflow(format!("{parties} parties")))?;
    Ok(vec![Value::Int(parties)])
}

impl Manager {
    /// The barrier named `name`, created for `parties` parties if it does not exist.
    /// [`Error::InvalidValue`] if `parties` is 0.
    pub async fn barrier(&self, name: &str, parties: usize) -> Result<Barrier> {
        Ok(Barrier::from_handle(self.open(Kind::Barrier, Some(name), parties_arg(parties)?).await?))
    }

    /// A new anonymous barrier for `parties` parties (Python
    /// `manager.Barrier(parties)`).
    pub async fn new_barrier(&self, parties: usize) -> Result<Barrier> {
        Ok(Barrier::from_handle(self.open(Kind::Barrier, None, parties_arg(parties)?).await?))
    }
}
