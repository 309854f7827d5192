//! [`Event`]: a shared event flag (Python `threading.Event` through a manager).

use std::sync::Arc;
use std::time::Duration;

use agora_proto::methods;
use agora_proto::native::Kind;
use agora_proto::Value;

use super::lock::timeout_value;
use super::{decode, Handle, Wait};
use crate::error::Result;
use crate::Manager;

/// A proxy for a shared event (Python `manager.Event()`): a flag that clients set
/// and clear, and wait for. Setting it wakes every waiter at once. Cheap to clone.
#[derive(Clone)]
pub struct Event {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Event({:?})", self.handle)
    }
}

impl Event {
    pub(crate) fn from_handle(handle: Arc<Handle>) -> Self {
        Event { handle }
    }

    /// The server's id for this object.
    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    /// Sets the flag and wakes every waiter (Python `set()`).
    pub async fn set(&self) -> Result<()> {
        self.handle.call(methods::event::SET.name, &[]).await.map(drop)
    }

    /// Clears the flag (Python `clear()`).
    pub async fn clear(&self) -> Result<()> {
        self.handle.call(methods::event::CLEAR.name, &[]).await.map(drop)
    }

    /// True if the flag is set (Python `is_set()`).
    pub async fn is_set(&self) -> Result<bool> {
        self.handle.call_as(methods::event::IS_SET.name, &[]).await
    }

    /// Waits until the flag is set; at once if it is (Python `wait()`).
    pub async fn wait(&self) -> Result<()> {
        self.handle.call_waiting(methods::event::WAIT.name, vec![Value::None], Wait::forever()).await.map(drop)
    }

    /// Waits up to `timeout` for the flag; returns whether it is set (Python
    /// `wait(timeout)`). A zero timeout only looks.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        let wait = Wait::up_to(0, timeout);
        decode(self.handle.call_waiting(methods::event::WAIT.name, vec![timeout_value(Some(timeout))], wait).await?)
    }
}

impl Manager {
    /// The event named `name`, created unset if it does not exist.
    pub async fn event(&self, name: &str) -> Result<Event> {
        Ok(Event::from_handle(self.open(Kind::Event, Some(name), vec![]).await?))
    }

    /// A new anonymous event (Python `manager.Event()`).
    pub async fn new_event(&self) -> Result<Event> {
        Ok(Event::from_handle(self.open(Kind::Event, None, vec![]).await?))
    }
}
