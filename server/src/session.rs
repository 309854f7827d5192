//! A session: one connection's identity and the references it holds.
//!
//! Every connection is a session. A native client reaches objects only through
//! handles its session opened, so the hot path finds an object in this session's own
//! map without touching the registry's locks. When the session ends — a clean close,
//! a crash, a reset — [`Drop`] gives every reference back, so anonymous objects nobody
//! else holds are freed, and every object is told the session ended so it releases the
//! session's lock grants, permits and leases.
//!
//! This module owns handle bookkeeping; it must not do I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use agora_proto::native::{Kind, ObjectId, Reply};
use agora_proto::{ErrorCode, Value, WireError};

use crate::registry::{ObjectEntry, Registry};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One handle: the object and how many times this session opened it.
struct Handle {
    entry: Arc<ObjectEntry>,
    count: u64,
}

/// A connection's session.
pub struct Session {
    id: u64,
    registry: Arc<Registry>,
    /// One registry reference per distinct object, however often it was opened.
    handles: HashMap<ObjectId, Handle>,
    /// Objects used by id without a handle (a Python connection's calls), to be told
    /// when this session ends. Weak: the session must not keep them alive.
    touched: HashMap<ObjectId, Weak<ObjectEntry>>,
    /// Prune dead `touched` entries when the map grows past this.
    prune_at: usize,
}

impl Session {
    /// A new session with a process-unique id.
    pub fn new(registry: Arc<Registry>) -> Session {
        Session {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            registry,
            handles: HashMap::new(),
            touched: HashMap::new(),
            prune_at: 64,
        }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The registry this session's objects live in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records a handle to `entry`, which carries one fresh registry reference.
    fn adopt(&mut self, entry: Arc<ObjectEntry>) -> &Arc<ObjectEntry> {
        let id = entry.id();
        match self.handles.get_mut(&id) {
            Some(handle) => {
                handle.count += 1;
                // The session already holds a reference for this object.
                self.registry.decref(&entry);
            }
            None => {
                self.handles.insert(id, Handle { entry, count: 1 });
            }
        }
        &self.handles[&id].entry
    }

    /// Get-or-create a named object, or create an anonymous one; returns the reply.
    pub fn open(
        &mut self,
        kind: &Kind,
        name: Option<&str>,
        positional: Vec<Value>,
        keywords: Vec<(String, Value)>,
    ) -> Result<Reply, WireError> {
        let (entry, created) = match name {
            Some(name) => {
                let opened = self.registry.open_named(kind, name, positional, keywords)?;
                (opened.entry, opened.created)
            }
            None => (self.registry.create(kind, positional, keywords)?, true),
        };
        let entry = self.adopt(entry);
        Ok(Reply::Opened { object: entry.id(), kind: entry.kind().clone(), created })
    }

    /// Takes a handle on an existing object by id.
    pub fn attach(&mut self, object: ObjectId) -> Result<Reply, WireError> {
        let entry = self.registry.incref(object)?;
        let entry = self.adopt(entry);
        Ok(Reply::Opened { object: entry.id(), kind: entry.kind().clone(), created: false })
    }

    /// The object behind a handle this session holds.
    pub fn handle(&self, object: ObjectId) -> Result<&Arc<ObjectEntry>, WireError> {
        self.handles.get(&object).map(|h| &h.entry).ok_or_else(|| {
            WireError::new(
                ErrorCode::NoSuchObject,
                format!("this session holds no handle to object {object:x} (open or attach it first)"),
            )
        })
    }

    /// Remembers that this session used `entry` by id (no handle), so the object learns
    /// when the session ends and releases what the session held there.
    pub fn touch(&mut self, entry: &Arc<ObjectEntry>) {
        self.touched.entry(entry.id()).or_insert_with(|| Arc::downgrade(entry));
        if self.touched.len() > self.prune_at {
            // Amortised: forget freed objects, then let the map double before looking again.
            self.touched.retain(|_, weak| weak.strong_count() > 0);
            self.prune_at = (self.touched.len() * 2).max(64);
        }
    }

    /// Gives back one handle.
    pub fn release(&mut self, object: ObjectId) -> Result<(), WireError> {
        let handle = self.handles.get_mut(&object).ok_or_else(|| {
            WireError::new(ErrorCode::NoSuchObject, format!("this session holds no handle to object {object:x}"))
        })?;
        handle.count -= 1;
        if handle.count == 0 {
            let handle = self.handles.remove(&object).expect("present");
            // Without a handle the session cannot release what it holds there: do it now.
            handle.entry.session_ended(self.id);
            self.registry.decref(&handle.entry);
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, handle) in self.handles.drain() {
            handle.entry.session_ended(self.id);
            self.registry.decref(&handle.entry);
        }
        for (_, entry) in self.touched.drain() {
            if let Some(entry) = entry.upgrade() {
                entry.session_ended(self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_session_frees_its_anonymous_objects_only() {
        let registry = Arc::new(Registry::new());
        let mut a = Session::new(registry.clone());
        let Reply::Opened { object: anon, .. } = a.open(&Kind::List, None, vec![], vec![]).unwrap() else { panic!() };
        a.open(&Kind::Dict, Some("kept"), vec![], vec![]).unwrap();
        let mut b = Session::new(registry.clone());
        b.attach(anon).unwrap();
        drop(a);
        assert!(registry.get(anon).is_ok(), "b still holds it");
        drop(b);
        assert!(registry.get(anon).is_err(), "freed with its last holder");
        assert!(registry.lookup("kept").is_ok(), "named objects outlive sessions");
    }

    #[test]
    fn touching_does_not_keep_objects_alive() {
        let registry = Arc::new(Registry::new());
        let mut s = Session::new(registry.clone());
        for _ in 0..1000 {
            let entry = registry.create(&Kind::Lock, vec![], vec![]).unwrap();
            s.touch(&entry);
            registry.decref(&entry);
            assert!(registry.get(entry.id()).is_err(), "freed although the session touched it");
        }
        assert!(s.touched.len() <= 128, "dead entries are pruned: {}", s.touched.len());
    }

    #[test]
    fn handles_count_opens_and_releases() {
        let registry = Arc::new(Registry::new());
        let mut s = Session::new(registry.clone());
        let Reply::Opened { object, .. } = s.open(&Kind::List, None, vec![], vec![]).unwrap() else { panic!() };
        s.attach(object).unwrap();
        s.release(object).unwrap();
        assert!(s.handle(object).is_ok(), "one handle left");
        s.release(object).unwrap();
        assert_eq!(s.handle(object).unwrap_err().code, ErrorCode::NoSuchObject);
        assert!(registry.get(object).is_err());
        assert_eq!(s.release(object).unwrap_err().code, ErrorCode::NoSuchObject);
    }
}
