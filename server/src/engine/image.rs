//! The engine's whole state as data: what a snapshot holds, and how it comes back.
//!
//! An [`EngineImage`] is taken while no command runs (the journal's lock is held) and
//! is exact: the counters, every object — live ones, and deleted ones a session or a
//! container still refers to — with its references and holds, the names, and every
//! open session's handles. Log records after the snapshot apply to it as they applied
//! to the engine it was taken from. This module does no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_proto::native::ObjectId;
use serde::{Deserialize, Serialize};

use super::clock::Time;
use super::ctx::CounterValues;
use super::session::{self, Session};
use super::table::{ObjectEntry, ObjectImage};
use super::waiter::{SessionId, Ticket};
use super::{Engine, Restarted};
use crate::custom::CustomKinds;
use crate::objects;

/// One open session as a snapshot records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionImage {
    /// Its id.
    pub id: SessionId,
    /// Its handles: object → how many times it opened it.
    pub handles: Vec<(ObjectId, u64)>,
    /// Objects it used by id that keep per-session state.
    pub touched: Vec<ObjectId>,
    /// Its parked calls: (ticket, object).
    pub parked: Vec<(Ticket, ObjectId)>,
    /// What resumes it after a leader change (`None`: it cannot be resumed).
    #[serde(default)]
    pub secret: Option<u64>,
    /// Detached (no connection since a leader change) until then.
    #[serde(default)]
    pub detached_until: Option<Time>,
}

/// The engine's whole state (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    /// The counters.
    pub counters: CounterValues,
    /// Every object, by id.
    pub objects: Vec<ObjectImage>,
    /// Every open session, by id.
    pub sessions: Vec<SessionImage>,
    /// The last restart: when, and the first object id made after it.
    pub restarted: Option<Restarted>,
}

impl Engine {
    /// The whole state. Call it while no command runs (under
    /// [`Journal::pause`](super::Journal::pause)), or the image may be torn.
    pub fn image(&self) -> EngineImage {
        let mut entries: BTreeMap<ObjectId, Arc<ObjectEntry>> =
            self.table.all().into_iter().map(|e| (e.id(), e)).collect();
        let mut sessions: Vec<Session> = self.sessions().values().cloned().collect();
        sessions.sort_by_key(Session::id);
        let mut session_images = Vec::with_capacity(sessions.len());
        for session in &sessions {
            let st = session.state();
            for handle in st.handles.values() {
                entries.entry(handle.entry.id()).or_insert_with(|| handle.entry.clone());
            }
            let handles = st.handle_counts().into_iter().collect();
            let mut touched: Vec<ObjectId> =
                st.touched.iter().filter(|(_, weak)| weak.strong_count() > 0).map(|(&id, _)| id).collect();
            touched.sort_unstable();
            let parked = st.parked.iter().map(|(&t, &o)| (t, o)).collect();
            session_images.push(SessionImage {
                id: session.id(),
                handles,
                touched,
                parked,
                secret: session.secret(),
                detached_until: st.detached_until,
            });
        }
        // Deleted objects a container still holds are part of the state too.
        let mut unvisited: Vec<Arc<ObjectEntry>> = entries.values().cloned().collect();
        while let Some(entry) = unvisited.pop() {
            for held in entry.held_entries() {
                if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(held.id()) {
                    slot.insert(held.clone());
                    unvisited.push(held);
                }
            }
        }
        // A touched object no longer alive in the image is forgotten, as its weak
        // reference would be.
        for image in &mut session_images {
            image.touched.retain(|id| entries.contains_key(id));
        }
        EngineImage {
            counters: self.counters.values(),
            objects: entries.values().map(|e| e.image()).collect(),
            sessions: session_images,
            restarted: *self.restarted(),
        }
    }

    /// Rebuilds an engine from an image, able to build the custom kinds `custom`.
    pub fn from_image(custom: CustomKinds, image: EngineImage) -> Result<Engine, String> {
        let engine = Engine::with_counters(custom, image.counters);
        let mut entries: BTreeMap<ObjectId, Arc<ObjectEntry>> = BTreeMap::new();
        for object in &image.objects {
            let state = objects::restore(&object.kind, &object.state)
                .map_err(|e| format!("object {:x} ({}): {e}", object.id, object.kind))?;
            entries.insert(object.id, engine.table.restore_entry(object, state));
        }
        let find = |id: ObjectId, whose: &str| {
            entries
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("{whose} refers to object {id:x}, which is not in the image"))
        };
        for object in &image.objects {
            let held = match &object.holds {
                None => None,
                Some(ids) => Some(
                    ids.iter()
                        .map(|&id| find(id, &format!("object {:x}", object.id)))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            engine.table.restore_holds(&entries[&object.id], held);
        }
        for image in image.sessions {
            let session = Session::new(image.id, image.secret);
            {
                let mut st = session.state();
                for (id, count) in image.handles {
                    let entry = find(id, &format!("session {}", image.id))?;
                    st.handles.insert(id, session::Handle { entry, count });
                }
                for id in image.touched {
                    let entry = find(id, &format!("session {}", image.id))?;
                    st.touched.insert(id, Arc::downgrade(&entry));
                }
                st.parked = image.parked.into_iter().collect();
                st.detached_until = image.detached_until;
            }
            engine.sessions().insert(image.id, session);
        }
        *engine.restarted() = image.restarted;
        Ok(engine)
    }

    /// Makes `other`'s state this engine's, in place: its objects, names, counters,
    /// sessions and last restart. What is not state stays: the clock, the metrics, the
    /// journal, the offload and the memory gate. A replica installing a snapshot its
    /// leader sent uses it, since the serving layer holds this engine and not a slot it
    /// could swap. Call it while no command runs.
    pub fn replace_with(&self, other: Engine) {
        // Connections that still hold a session of the old state must not act on it.
        for session in self.sessions().values() {
            session.mark_ended();
        }
        self.table.replace_with(other.table);
        self.counters.set(other.counters.values());
        *self.sessions() = other.sessions.into_inner().unwrap_or_else(|e| e.into_inner());
        *self.restarted() = other.restarted.into_inner().unwrap_or_else(|e| e.into_inner());
    }
}
