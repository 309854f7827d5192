//! The object table: id → object, name → id, and object lifetimes.
//!
//! Ids come from the engine's counter, which starts at a random offset and only grows,
//! so an id is never reused (a stale client cannot hit a new object by accident). Named
//! objects live until deleted. Anonymous objects live while references to them exist:
//! handles held by sessions, Python `incref`s, and holds by the objects that store
//! references to them. Every object keeps its state behind its own lock; the table's
//! own locks are held only to find or insert entries, never during a call.
//!
//! This module owns lifetimes and lookup; driving objects is the engine's
//! ([`super::Engine`]), and it knows nothing of dialects or sockets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use agora_proto::idmap::IdMap;
use agora_proto::native::{Kind, ObjectId};
use agora_proto::reclaim;
use agora_proto::{ErrorCode, Value, WireError};
use serde::{Deserialize, Serialize};

use super::ctx::{Counters, Ctx};
use crate::custom::CustomKinds;
use crate::metrics::{KindMetrics, Metrics};
use crate::object::{bind, Args, MethodSpec, Outcome, SharedObject, StateCapture};
use crate::objects;

/// One shared object and its bookkeeping.
pub struct ObjectEntry {
    id: ObjectId,
    kind: Kind,
    name: Option<String>,
    state: Mutex<Box<dyn SharedObject>>,
    /// References that keep an anonymous object alive (handles, Python increfs).
    refs: AtomicU64,
    /// Set when a named object is deleted; calls through old handles then fail.
    deleted: AtomicBool,
    /// Objects this one keeps alive because it stores references to them (a list kept
    /// in a dict: spec §4.4), one registry reference each, given back when this object
    /// is freed. `None` once it is freed.
    holds: Mutex<Option<IdMap<Arc<ObjectEntry>>>>,
    /// How many of `refs` are held by other objects (see `holds`).
    holders: AtomicU64,
    /// Its kind's counters (see [`crate::metrics`]).
    metrics: Arc<KindMetrics>,
    /// The object's methods (fixed for its life): looked up without its lock.
    methods: &'static [MethodSpec],
    /// Whether its kind keeps per-session state (fixed for its life).
    holds_session_state: bool,
    /// Whether its kind prefetches for upcoming calls (fixed for its life).
    prefetches: bool,
    /// Its number of items after the last call (a hint read without its lock).
    size_hint: AtomicUsize,
}

/// A big object's state is freed on [`reclaim`]'s helper thread once its entry goes
/// (its name deleted, its last reference given back): freeing a list or a queue of
/// millions of items takes tens of milliseconds, which the thread dropping the entry
/// (a worker, serving other clients) would otherwise spend. A dict's or set's own drop
/// does the same for every big dict and set, wherever it is kept.
impl Drop for ObjectEntry {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.size().is_some_and(|items| items >= reclaim::RECLAIM_FROM) {
            reclaim::drop_later(std::mem::replace(state, Box::new(Dropped)));
        }
    }
}

/// What an entry being dropped holds in place of the state it handed over: never
/// called (nothing can reach an entry while it drops).
struct Dropped;

impl SharedObject for Dropped {
    fn kind(&self) -> Kind {
        unreachable!("an object being dropped is never used")
    }
    fn methods(&self) -> &'static [MethodSpec] {
        &[]
    }
    fn call(&mut self, _: &mut Ctx<'_>, method: &str, _: Args) -> Result<Outcome, WireError> {
        unreachable!("{method} on an object being dropped")
    }
    fn snapshot(&self) -> Value {
        unreachable!("an object being dropped is never read")
    }
    fn state(&self) -> Vec<u8> {
        unreachable!("an object being dropped is never read")
    }
    fn repr(&self) -> String {
        unreachable!("an object being dropped is never read")
    }
}

impl std::fmt::Debug for ObjectEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectEntry").field("id", &self.id).field("kind", &self.kind).field("name", &self.name).finish()
    }
}

impl ObjectEntry {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's kind.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The object's name, if it is a named object.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Locks the object's state, or reports why it cannot be used (deleted).
    pub(super) fn lock(&self) -> Result<MutexGuard<'_, Box<dyn SharedObject>>, WireError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(no_such_object(self.id));
        }
        self.state.lock().map_err(|_| {
            WireError::new(ErrorCode::Internal, format!("object {:x} is unusable after an internal error", self.id))
        })
    }

    /// The spec of `method`, or `NoSuchMethod` with Python's wording.
    pub fn method(&self, method: &str) -> Result<&'static MethodSpec, WireError> {
        find_method(self.methods, method, &self.kind)
    }

    /// The names of every method of this object.
    pub fn method_names(&self) -> Result<Vec<&'static str>, WireError> {
        Ok(self.methods.iter().map(|m| m.name).collect())
    }

    /// Its number of items after the last call that drove it (0 for kinds without).
    pub(super) fn size_hint(&self) -> usize {
        self.size_hint.load(Ordering::Relaxed)
    }

    /// Records its number of items after a call.
    pub(super) fn note_size(&self, items: usize) {
        if self.size_hint.load(Ordering::Relaxed) != items {
            self.size_hint.store(items, Ordering::Relaxed);
        }
    }

    /// The object's method table.
    pub(super) fn methods(&self) -> &'static [MethodSpec] {
        self.methods
    }

    /// Whether its kind keeps per-session state.
    pub(super) fn holds_session_state(&self) -> bool {
        self.holds_session_state
    }

    /// Whether calls about to be made on it are worth its prefetching for: its kind does,
    /// and it held [`super::PREFETCH_FROM`] items or more after its last call.
    pub(super) fn worth_prefetching(&self) -> bool {
        self.prefetches && self.size_hint() >= super::PREFETCH_FROM
    }

    /// The object's state, if no other thread holds it now.
    pub(super) fn try_lock(&self) -> Option<MutexGuard<'_, Box<dyn SharedObject>>> {
        self.state.try_lock().ok()
    }

    /// The object's state, locked, even after a named object was deleted (its parked
    /// calls still expire and are abandoned through it).
    pub(super) fn lock_any(&self) -> Result<MutexGuard<'_, Box<dyn SharedObject>>, WireError> {
        self.state.lock().map_err(|_| {
            WireError::new(ErrorCode::Internal, format!("object {:x} is unusable after an internal error", self.id))
        })
    }

    /// Its kind's counters.
    pub(super) fn metrics(&self) -> &Arc<KindMetrics> {
        &self.metrics
    }

    /// A copy of the object's whole state.
    pub fn snapshot(&self) -> Result<Value, WireError> {
        Ok(self.lock()?.snapshot())
    }

    /// The referent's Python `repr`.
    pub fn repr(&self) -> Result<String, WireError> {
        Ok(self.lock()?.repr())
    }

    /// The number of items, for kinds with a size.
    pub fn size(&self) -> Result<Option<usize>, WireError> {
        Ok(self.lock()?.size())
    }

    /// The references keeping this object alive (handles, increfs, holding objects).
    pub fn refcount(&self) -> u64 {
        self.refs.load(Ordering::Acquire)
    }

    /// True if only other objects keep this one alive (every reference is a hold):
    /// a client's decref then has nothing of its own to give back.
    pub fn only_held(&self) -> bool {
        let holders = self.holders.load(Ordering::Acquire);
        holders > 0 && self.refs.load(Ordering::Acquire) <= holders
    }

    /// Takes the objects this one holds, marking it freed (later holds are refused).
    /// The caller gives back one reference on each (after [`ObjectEntry::unhold`]).
    fn take_holds(&self) -> Vec<Arc<ObjectEntry>> {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner()).take();
        holds.map(|h| h.into_values().collect()).unwrap_or_default()
    }

    /// The ids of the objects this one keeps alive, sorted.
    pub(super) fn held_ids(&self) -> Vec<ObjectId> {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<ObjectId> = holds.as_ref().map(|h| h.keys().copied().collect()).unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The objects this one keeps alive.
    pub(super) fn held_entries(&self) -> Vec<Arc<ObjectEntry>> {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.as_ref().map(|h| h.values().cloned().collect()).unwrap_or_default()
    }

    /// How many of its references are held by other objects.
    pub(super) fn holders(&self) -> u64 {
        self.holders.load(Ordering::Acquire)
    }

    /// The object as a snapshot records it (its lock is taken for its state), the
    /// state encoded now or, for a kind that captures it ([`SharedObject::begin_state`]),
    /// begun: then the second value is true and [`ObjectEntry::image_next`] writes the
    /// rest of `state`.
    pub(super) fn begin_image(&self) -> (ObjectImage, bool) {
        let (state, started) = match self.lock_any().map(|mut s| s.begin_state()) {
            Ok(StateCapture::Encoded(state)) => (state, false),
            Ok(StateCapture::Started(state)) => (state, true),
            Err(_) => (Vec::new(), false),
        };
        (self.image_with(state), started)
    }

    /// Appends up to `positions` more of a begun image's state; true once it is complete
    /// (or the object is unusable: the state is then cleared, as an unusable object's
    /// image has none).
    pub(super) fn image_next(&self, state: &mut Vec<u8>, positions: usize) -> bool {
        match self.lock_any() {
            Ok(mut object) => object.state_next(state, positions),
            Err(_) => {
                state.clear();
                true
            }
        }
    }

    /// Drops a begun image's capture that will not be finished.
    pub(super) fn end_image(&self) {
        if let Ok(mut object) = self.lock_any() {
            object.end_state();
        }
    }

    fn image_with(&self, state: Vec<u8>) -> ObjectImage {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|h| {
            let mut ids: Vec<ObjectId> = h.keys().copied().collect();
            ids.sort_unstable();
            ids
        });
        ObjectImage {
            id: self.id,
            kind: self.kind.clone(),
            name: self.name.clone(),
            refs: self.refs.load(Ordering::Acquire),
            holders: self.holders.load(Ordering::Acquire),
            deleted: self.deleted.load(Ordering::Acquire),
            holds,
            state,
        }
    }

    /// Records that a holder let go of this object (before its reference is given back).
    fn unhold(&self) {
        self.holders.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One object as a snapshot records it: its bookkeeping and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectImage {
    /// Its id.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Its name, for a named object.
    pub name: Option<String>,
    /// References keeping it alive.
    pub refs: u64,
    /// How many of `refs` other objects hold.
    pub holders: u64,
    /// A deleted named object (still referenced by a session's handle or a container).
    pub deleted: bool,
    /// The objects it keeps alive; `None` once it let them go (deleted).
    pub holds: Option<Vec<ObjectId>>,
    /// Its state ([`SharedObject::state`]).
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

fn find_method(methods: &'static [MethodSpec], method: &str, kind: &Kind) -> Result<&'static MethodSpec, WireError> {
    methods.iter().find(|m| m.name == method).ok_or_else(|| no_such_method(kind, method))
}

/// The error for a method `kind` does not have, in Python's words.
pub(super) fn no_such_method(kind: &Kind, method: &str) -> WireError {
    WireError::new(ErrorCode::NoSuchMethod, format!("'{kind}' object has no method '{method}'"))
}

/// The error for an id that names no live object.
pub fn no_such_object(id: ObjectId) -> WireError {
    WireError::new(ErrorCode::NoSuchObject, format!("no object with id {id:x} (never existed, released or deleted)"))
}

/// What [`Table::open_named`] found or made.
#[derive(Debug)]
pub struct Opened {
    /// The object, with one reference taken for the caller.
    pub entry: Arc<ObjectEntry>,
    /// True if this call created it.
    pub created: bool,
}

/// Counts for `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Live objects by kind.
    pub objects_by_kind: BTreeMap<String, u64>,
    /// Named objects.
    pub named: u64,
}

/// The table of every live object.
pub struct Table {
    objects: RwLock<IdMap<Arc<ObjectEntry>>>,
    /// Name → id; its lock also serialises get-or-create and delete of names.
    names: Mutex<BTreeMap<String, ObjectId>>,
    /// The custom kinds the embedding program registered.
    custom: CustomKinds,
    /// Call counters and histograms, per kind.
    metrics: Metrics,
}

impl Table {
    /// An empty table that can also build the custom kinds `custom`.
    pub fn with_custom_kinds(custom: CustomKinds) -> Table {
        Table { objects: RwLock::default(), names: Mutex::default(), custom, metrics: Metrics::default() }
    }

    /// Takes `other`'s objects and names (see `Engine::replace_with`); the metrics
    /// and custom kinds stay.
    pub(super) fn replace_with(&self, other: Table) {
        let mut names = self.names();
        let mut objects = self.objects_write();
        *objects = other.objects.into_inner().unwrap_or_else(|e| e.into_inner());
        *names = other.names.into_inner().unwrap_or_else(|e| e.into_inner());
    }

    /// The call counters and histograms (for the metrics endpoint).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn objects_read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<Arc<ObjectEntry>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn objects_write(&self) -> std::sync::RwLockWriteGuard<'_, IdMap<Arc<ObjectEntry>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    fn names(&self) -> MutexGuard<'_, BTreeMap<String, ObjectId>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds a new object (not yet in the table) with one reference.
    fn build(
        &self,
        counters: &Counters,
        kind: &Kind,
        name: Option<String>,
        positional: Vec<Value>,
        keywords: Vec<(String, Value)>,
    ) -> Result<Arc<ObjectEntry>, WireError> {
        let spec = objects::constructor(kind, &self.custom).ok_or_else(|| objects::unsupported_kind(kind))?;
        let state = objects::construct(kind, bind(spec, positional, keywords)?, &self.custom)?;
        self.check_linked(state.as_ref())?;
        Ok(self.insert_new(counters.object_id(), kind.clone(), name, state))
    }

    /// Refuses an object whose linked object cannot serve it: a Condition's lock must
    /// be a live Lock or RLock.
    fn check_linked(&self, state: &dyn SharedObject) -> Result<(), WireError> {
        let Some(linked) = state.linked() else { return Ok(()) };
        let entry = self.get(linked)?;
        let mut object = entry.lock()?;
        if object.as_condition_lock().is_none() {
            return Err(WireError::new(
                ErrorCode::Unsupported,
                format!("agora's Condition works with a Lock or an RLock, not a {}", entry.kind),
            ));
        }
        Ok(())
    }

    /// Wraps a state in a fresh entry with id `id` and one reference.
    fn insert_new(
        &self,
        id: ObjectId,
        kind: Kind,
        name: Option<String>,
        state: Box<dyn SharedObject>,
    ) -> Arc<ObjectEntry> {
        let (methods, holds_session_state, prefetches) =
            (state.methods(), state.holds_session_state(), state.prefetches());
        let metrics = self.metrics.kind(&kind, methods);
        Arc::new(ObjectEntry {
            id,
            kind,
            name,
            state: Mutex::new(state),
            refs: AtomicU64::new(1),
            deleted: AtomicBool::new(false),
            holds: Mutex::new(Some(IdMap::default())),
            holders: AtomicU64::new(0),
            metrics,
            methods,
            holds_session_state,
            prefetches,
            size_hint: AtomicUsize::new(0),
        })
    }

    /// Rebuilds an object from its image and state; a live one goes in the table (and
    /// its name in the names), a deleted one only exists for whoever still refers to
    /// it. Its holds are wired by [`Table::restore_holds`] once every entry exists.
    pub(super) fn restore_entry(&self, image: &ObjectImage, state: Box<dyn SharedObject>) -> Arc<ObjectEntry> {
        let entry = self.insert_new(image.id, image.kind.clone(), image.name.clone(), state);
        entry.refs.store(image.refs, Ordering::Release);
        entry.holders.store(image.holders, Ordering::Release);
        entry.deleted.store(image.deleted, Ordering::Release);
        if !image.deleted {
            self.objects_write().insert(image.id, entry.clone());
            if let Some(name) = &image.name {
                self.names().insert(name.clone(), image.id);
            }
        }
        entry
    }

    /// Sets what a restored object holds (`None`: it let go of everything). The
    /// references are already counted in the held objects' restored counts.
    pub(super) fn restore_holds(&self, container: &ObjectEntry, held: Option<Vec<Arc<ObjectEntry>>>) {
        *container.holds.lock().unwrap_or_else(|e| e.into_inner()) =
            held.map(|held| held.into_iter().map(|e| (e.id, e)).collect());
    }

    /// Adds an object the engine built itself (a dict iterator) as an anonymous object
    /// with one reference (for the caller).
    pub fn adopt(&self, counters: &Counters, kind: Kind, state: Box<dyn SharedObject>) -> Arc<ObjectEntry> {
        let entry = self.insert_new(counters.object_id(), kind, None, state);
        self.objects_write().insert(entry.id, entry.clone());
        entry
    }

    /// Creates an anonymous object with one reference (for the caller).
    pub fn create(
        &self,
        counters: &Counters,
        kind: &Kind,
        positional: Vec<Value>,
        keywords: Vec<(String, Value)>,
    ) -> Result<Arc<ObjectEntry>, WireError> {
        let entry = self.build(counters, kind, None, positional, keywords)?;
        self.objects_write().insert(entry.id, entry.clone());
        Ok(entry)
    }

    /// Finds the object named `name`, or creates it of `kind` from the constructor
    /// arguments. Takes one reference for the caller either way.
    pub fn open_named(
        &self,
        counters: &Counters,
        kind: &Kind,
        name: &str,
        positional: Vec<Value>,
        keywords: Vec<(String, Value)>,
    ) -> Result<Opened, WireError> {
        let mut names = self.names();
        if let Some(&id) = names.get(name) {
            let entry = self.objects_read().get(&id).cloned().ok_or_else(|| no_such_object(id))?;
            if entry.kind != *kind {
                return Err(WireError::new(
                    ErrorCode::WrongKind,
                    format!("'{name}' is a {}, not a {kind}", entry.kind),
                ));
            }
            entry.refs.fetch_add(1, Ordering::AcqRel);
            return Ok(Opened { entry, created: false });
        }
        let entry = self.build(counters, kind, Some(name.to_owned()), positional, keywords)?;
        self.objects_write().insert(entry.id, entry.clone());
        names.insert(name.to_owned(), entry.id);
        Ok(Opened { entry, created: true })
    }

    /// The object with this id, without taking a reference.
    pub fn get(&self, id: ObjectId) -> Result<Arc<ObjectEntry>, WireError> {
        self.objects_read().get(&id).cloned().ok_or_else(|| no_such_object(id))
    }

    /// The id of the object named `name`.
    pub fn lookup(&self, name: &str) -> Result<Arc<ObjectEntry>, WireError> {
        let id = *self
            .names()
            .get(name)
            .ok_or_else(|| WireError::new(ErrorCode::NoSuchName, format!("no object named '{name}'")))?;
        self.get(id)
    }

    /// Takes one more reference on a live object.
    pub fn incref(&self, id: ObjectId) -> Result<Arc<ObjectEntry>, WireError> {
        let objects = self.objects_read();
        let entry = objects.get(&id).ok_or_else(|| no_such_object(id))?;
        entry.refs.fetch_add(1, Ordering::AcqRel);
        Ok(entry.clone())
    }

    /// Gives back one reference; an anonymous object with none left is dropped, and
    /// gives back the references it held (which may free those in turn).
    pub fn decref(&self, entry: &ObjectEntry) {
        if !self.release(entry) {
            return;
        }
        // Iterative, so a long chain of nested objects cannot overflow the stack.
        let mut freed = entry.take_holds();
        while let Some(held) = freed.pop() {
            held.unhold();
            if self.release(&held) {
                freed.extend(held.take_holds());
            }
        }
    }

    /// Gives back one reference; true if that freed the object.
    fn release(&self, entry: &ObjectEntry) -> bool {
        let before = entry.refs.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "decref below zero on {:x}", entry.id);
        if before == 1 && entry.name.is_none() {
            let mut objects = self.objects_write();
            // Re-check under the write lock: an incref may have revived it meanwhile.
            if entry.refs.load(Ordering::Acquire) == 0 {
                return objects.remove(&entry.id).is_some();
            }
        }
        false
    }

    /// Makes `container` keep the object `held` alive (it stores a reference to it):
    /// takes one reference on `held`, given back when `container` is freed. One per
    /// pair however often it is stored; an object never holds itself. False if
    /// nothing was taken (already held, itself, or `container` already freed).
    pub fn hold(&self, container: &ObjectEntry, held: ObjectId) -> Result<bool, WireError> {
        if held == container.id {
            return Ok(false);
        }
        let mut holds = container.holds.lock().unwrap_or_else(|e| e.into_inner());
        let Some(holds) = holds.as_mut() else { return Ok(false) };
        if holds.contains_key(&held) {
            return Ok(false);
        }
        let entry = self.incref(held)?;
        entry.holders.fetch_add(1, Ordering::AcqRel);
        holds.insert(held, entry);
        Ok(true)
    }

    /// Deletes the named object: frees the name and makes existing handles fail.
    pub fn delete(&self, name: &str) -> Result<(), WireError> {
        let id = self
            .names()
            .remove(name)
            .ok_or_else(|| WireError::new(ErrorCode::NoSuchName, format!("no object named '{name}'")))?;
        let removed = self.objects_write().remove(&id);
        if let Some(entry) = removed {
            entry.deleted.store(true, Ordering::Release);
            for held in entry.take_holds() {
                held.unhold();
                self.decref(&held);
            }
        }
        Ok(())
    }

    /// Every live object, sorted by id (`debug_info`).
    pub fn all(&self) -> Vec<Arc<ObjectEntry>> {
        let mut all: Vec<_> = self.objects_read().values().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }

    /// Names → ids.
    pub fn names_map(&self) -> BTreeMap<String, ObjectId> {
        self.names().clone()
    }

    /// Named objects, sorted by name.
    pub fn named(&self) -> Vec<Arc<ObjectEntry>> {
        let names = self.names();
        let objects = self.objects_read();
        names.values().filter_map(|id| objects.get(id).cloned()).collect()
    }

    /// How many objects are alive.
    pub fn len(&self) -> usize {
        self.objects_read().len()
    }

    /// Counts by kind, for `stats` and metrics.
    pub fn stats(&self) -> RegistryStats {
        let objects = self.objects_read();
        let mut stats = RegistryStats { named: self.names().len() as u64, ..Default::default() };
        for entry in objects.values() {
            *stats.objects_by_kind.entry(entry.kind.to_string()).or_default() += 1;
        }
        stats
    }
}
