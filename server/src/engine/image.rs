//! The engine's whole state as data: what a snapshot holds, and how it comes back.
//!
//! An [`EngineImage`] is taken while no command runs (the journal's lock is held) and
//! is exact: the counters, every object — live ones, and deleted ones a session or a
//! container still refers to — with its references and holds, the names, and every
//! open session's handles. Log records after the snapshot apply to it as they applied
//! to the engine it was taken from. This module does no I/O.
//!
//! Taking it comes in two parts so that changes wait only for the first:
//! [`Engine::begin_image`] (while no command runs) records everything but the states
//! of big objects that capture theirs ([`crate::object::SharedObject::begin_state`]:
//! dicts, sets, lists, arrays and queues), and [`PendingImage::finish`] reads those out afterwards,
//! locking one object for a thousand positions at a time, while commands run again.
//! The image is the same either way: a capture reads the state as it was when it
//! began.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// An image whose big objects' states are still to be read out (see the module
/// docs). Dropping it unfinished ends their captures.
pub struct PendingImage {
    /// `None` once finished.
    image: Option<EngineImage>,
    /// The objects whose state capture began: (index in `image.objects`, object).
    started: Vec<(usize, Arc<ObjectEntry>)>,
}

/// Positions of a captured state read out per hold of its object's lock: a few tens
/// of microseconds, so a call waiting for the object barely notices.
const POSITIONS_PER_STEP: usize = 1024;

/// The rest between two steps of a read-out. An object's lock is not fair: taken again
/// at once, it would keep a waiting call out for the whole read-out (measured: 40–80
/// ms on a 1,000,000-entry dict); resting lets it in. The rest spins: a sleep this
/// short lasted ~200 µs on a VM (timer slack), and the read-out rested 90 % of its
/// time.
const BETWEEN_STEPS: Duration = Duration::from_micros(20);

impl PendingImage {
    /// How many objects' states are still to be read out.
    pub fn captured(&self) -> usize {
        self.started.len()
    }

    /// Reads out the rest of every begun state, resting between steps so that calls
    /// on the objects go on. It keeps the thread busy (~0.1 s per million entries):
    /// call it off the async workers, with no lock held that commands take.
    pub fn finish(self) -> EngineImage {
        self.read_out(Some(BETWEEN_STEPS))
    }

    /// Reads out every begun state, resting `between_steps` after each step.
    fn read_out(mut self, between_steps: Option<Duration>) -> EngineImage {
        let mut image = self.image.take().expect("a pending image is read out once");
        for (i, entry) in std::mem::take(&mut self.started) {
            let state = &mut image.objects[i].state;
            while !entry.image_next(state, POSITIONS_PER_STEP) {
                if let Some(rest) = between_steps {
                    let until = Instant::now() + rest;
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        image
    }
}

impl Drop for PendingImage {
    fn drop(&mut self) {
        for (_, entry) in self.started.drain(..) {
            entry.end_image();
        }
    }
}

impl Engine {
    /// The whole state. Call it while no command runs (under
    /// [`Journal::pause`](super::Journal::pause)), or the image may be torn.
    pub fn image(&self) -> EngineImage {
        // Nothing runs meanwhile: no rest between steps.
        self.begin_image().read_out(None)
    }

    /// The whole state but the rest of big objects' states, which
    /// [`PendingImage::finish`] reads out later as they are now (see the module docs).
    /// Call it while no command runs (under [`Journal::pause`](super::Journal::pause));
    /// finish it after.
    pub fn begin_image(&self) -> PendingImage {
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
        let mut objects = Vec::with_capacity(entries.len());
        let mut started = Vec::new();
        for entry in entries.into_values() {
            let (image, begun) = entry.begin_image();
            if begun {
                started.push((objects.len(), entry));
            }
            objects.push(image);
        }
        let image = EngineImage {
            counters: self.counters.values(),
            objects,
            sessions: session_images,
            restarted: *self.restarted(),
        };
        PendingImage { image: Some(image), started }
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
