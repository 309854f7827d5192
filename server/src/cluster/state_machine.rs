//! The Raft state machine: the engine, fed the commands the cluster committed.
//!
//! An entry's payload is a [`Proposal`]: journal records (the same encoding the
//! durable log uses, `engine::encode_record`), each one [`Command`]. Applying an entry
//! applies its commands to the engine in order, with the `at` each carries, so every
//! node's engine goes through the same states. Snapshots are the engine's
//! [`EngineImage`] with the Raft metadata beside it, kept in memory and in
//! `raft.snapshot` (replaced atomically); a node that starts finds its state there and
//! openraft replays the committed entries after it.
//!
//! What applying a command produced besides its state change (answers for parked
//! calls, wake-ups) goes to the [`EffectsSink`], if one is set; a replica that serves
//! nobody drops the answers and remembers the earliest wake-up each object asked for,
//! which it arms if it comes to lead ([`StateMachine::take_wakeups`]).
//!
//! On a node that serves clients ([`Leadership`]), entries of the running stint are
//! not applied again (their commands are in the engine already): they settle the
//! answers that wait for them. An entry from anyone else during a stint ends it. And
//! before anything is applied to an engine that may hold uncommitted changes, the
//! engine is rebuilt: the snapshot, then the committed entries after it, from the log.
//!
//! This module owns the snapshot file and the applied position; it never opens
//! sessions or reads a clock.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use agora_proto::native::ObjectId;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::leadership::Leadership;
use super::{fresh_engine, Applied, Entry, LogStore, Node, NodeId, Proposal, TypeConfig};
use crate::custom::CustomKinds;
use crate::engine::{decode_record, Command, Effects, Engine, EngineImage, RecordRead, Time};

/// The snapshot file's name in the node's directory.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";

/// Where the effects of applied commands go (see the module docs).
pub type EffectsSink = Arc<dyn Fn(Effects) + Send + Sync>;

/// A leader's cut being read out ([`crate::engine::PendingImage::finish`], off the
/// async threads): the engine's state at the cut once it is done.
pub type CutImage = tokio::task::JoinHandle<EngineImage>;

/// A snapshot: Raft's metadata and the engine's state.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, Node>,
    image: EngineImage,
}

#[derive(Debug, Default)]
struct AppliedState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    /// The last snapshot built or installed: its metadata and encoded bytes.
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>,
    snapshots_built: u64,
    /// On a leader: the engine's state right after the record with this LSN of this
    /// stint, waiting for the entry that carries that record to be committed.
    cut: Option<(u64, u64, CutImage)>,
    /// On a leader: a committed cut (the state as of that entry), for the next snapshot.
    ready: Option<(LogId<NodeId>, StoredMembership<NodeId, Node>, CutImage)>,
}

/// The state machine of one node (see the module docs). Clones share it.
#[derive(Clone)]
pub struct StateMachine {
    engine: Arc<Engine>,
    custom: CustomKinds,
    dir: PathBuf,
    state: Arc<Mutex<AppliedState>>,
    sink: Arc<Mutex<Option<EffectsSink>>>,
    /// The log, to rebuild the engine from.
    log: LogStore,
    /// Set on a node that serves clients.
    leadership: Option<Arc<Leadership>>,
    /// The earliest wake-up each object asked for while this node did not lead.
    wakeups: Arc<Mutex<BTreeMap<ObjectId, Time>>>,
    /// Held while entries are applied or the engine is rebuilt.
    applying: Arc<tokio::sync::Mutex<()>>,
    /// Held while a snapshot is written and recorded (taken after `applying` where
    /// both are held), so that one never replaces a newer one.
    persisting: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").field("dir", &self.dir).field("last_applied", &self.last_applied()).finish()
    }
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The commands of a proposal, in order.
pub fn commands(proposal: &Proposal) -> Result<Vec<Command>, String> {
    let mut bytes = &proposal.records[..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match decode_record(bytes) {
            RecordRead::Record(command, len) => {
                out.push(*command);
                bytes = &bytes[len..];
            }
            RecordRead::Incomplete => return Err("a proposal ends inside a record".to_owned()),
            RecordRead::Damaged(why) => return Err(format!("a proposal holds a damaged record: {why}")),
        }
    }
    Ok(out)
}

impl StateMachine {
    /// The state machine over `engine`, keeping its snapshot in `dir`; `log` is the
    /// node's log and `leadership` is set on a node that serves clients. A snapshot
    /// found in `dir` becomes the engine's state.
    pub fn open(
        engine: Arc<Engine>,
        custom: CustomKinds,
        dir: &Path,
        log: LogStore,
        leadership: Option<Arc<Leadership>>,
    ) -> io::Result<StateMachine> {
        let machine = StateMachine {
            engine,
            custom,
            dir: dir.to_owned(),
            state: Arc::default(),
            sink: Arc::default(),
            log,
            leadership,
            wakeups: Arc::default(),
            applying: Arc::default(),
            persisting: Arc::default(),
        };
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let file: SnapshotFile = rmp_serde::from_slice(&bytes)
                    .map_err(|e| io_error(format!("{}: {e}", dir.join(SNAPSHOT_FILE).display())))?;
                machine.take_image(file.image).map_err(io_error)?;
                let mut state = machine.lock();
                state.last_applied = file.meta.last_log_id;
                state.membership = file.meta.last_membership.clone();
                state.snapshot = Some((file.meta, bytes));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(machine)
    }

    fn lock(&self) -> MutexGuard<'_, AppliedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The last entry applied.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.lock().last_applied
    }

    /// Snapshots built by this node since it started.
    pub fn snapshots_built(&self) -> u64 {
        self.lock().snapshots_built
    }

    /// Sends the effects of every command applied from now on to `sink`.
    pub fn set_sink(&self, sink: Option<EffectsSink>) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// The wake-ups objects asked for while this node did not lead (to arm when it
    /// starts to).
    pub fn take_wakeups(&self) -> Vec<(ObjectId, Time)> {
        std::mem::take(&mut *self.wakeups.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect()
    }

    /// On a leader: `image` is (being read out as) the engine's state right after record
    /// `lsn` of `stint`, begun in the same hold of the journal's lock as the proposal
    /// that ends with it. Once that entry commits, it is what the next snapshot holds: a
    /// leader's engine runs ahead of what is committed, so it cannot be imaged at an
    /// applied index. It must be offered before the entry can commit.
    pub fn offer_cut(&self, stint: u64, lsn: u64, image: CutImage) {
        self.lock().cut = Some((stint, lsn, image));
    }

    /// Rebuilds the engine from the snapshot and the committed log if it may hold
    /// changes the cluster did not commit (see the module docs).
    pub async fn rebuild_if_dirty(&self) -> Result<(), String> {
        let _applying = self.applying.lock().await;
        self.rebuild_locked().await
    }

    /// [`StateMachine::rebuild_if_dirty`] with `applying` held by the caller. The
    /// rebuild (decoding the snapshot, replaying the log: as long as a restart) runs on
    /// a blocking thread; the common case, nothing to rebuild, answers at once.
    async fn rebuild_locked(&self) -> Result<(), String> {
        if !self.leadership.as_ref().is_some_and(|l| l.needs_rebuild()) {
            return Ok(());
        }
        let machine = self.clone();
        tokio::task::spawn_blocking(move || machine.rebuild_now()).await.map_err(|e| e.to_string())?
    }

    fn rebuild_now(&self) -> Result<(), String> {
        let Some(leadership) = &self.leadership else { return Ok(()) };
        if !leadership.needs_rebuild() {
            return Ok(());
        }
        let (snapshot, last_applied) = {
            let state = self.lock();
            (state.snapshot.clone(), state.last_applied)
        };
        let (rebuilt, from) = match snapshot {
            Some((meta, bytes)) => {
                let file: SnapshotFile = rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())?;
                (Engine::from_image(self.custom.clone(), file.image)?, meta.last_log_id.map_or(0, |id| id.index + 1))
            }
            None => (fresh_engine(self.custom.clone()), 0),
        };
        let upto = last_applied.map_or(0, |id| id.index);
        let mut replayed = 0;
        if last_applied.is_some() {
            for entry in self.log.entries(from..=upto) {
                if let EntryPayload::Normal(proposal) = &entry.payload {
                    for command in commands(proposal)? {
                        rebuilt.apply_replicated(command);
                        replayed += 1;
                    }
                }
            }
        }
        self.engine.replace_with(rebuilt);
        leadership.rebuilt();
        tracing::info!(from, upto, replayed, "engine rebuilt from the committed log");
        Ok(())
    }

    fn remember_wakeups(&self, effects: &Effects) {
        if effects.wakeups.is_empty() {
            return;
        }
        let mut wakeups = self.wakeups.lock().unwrap_or_else(|e| e.into_inner());
        for &(object, at) in &effects.wakeups {
            let earliest = wakeups.entry(object).or_insert(at);
            *earliest = (*earliest).min(at);
        }
    }

    fn take_image(&self, image: EngineImage) -> Result<(), String> {
        let restored = Engine::from_image(self.custom.clone(), image)?;
        self.engine.replace_with(restored);
        Ok(())
    }

    /// Writes a snapshot's bytes to `raft.snapshot`, off the async threads, and hands
    /// them back.
    async fn persist(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError<NodeId>> {
        self.write_off_thread(meta, move |machine| machine.save_snapshot(&bytes).map(|()| bytes)).await
    }

    /// Encodes a snapshot and writes it to `raft.snapshot`, off the async threads (a
    /// big state takes tens of milliseconds to encode): its bytes.
    async fn encode_and_persist(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        image: EngineImage,
    ) -> Result<Vec<u8>, StorageError<NodeId>> {
        let file = SnapshotFile { meta: meta.clone(), image };
        self.write_off_thread(meta, move |machine| {
            let bytes = rmp_serde::to_vec(&file).map_err(io_error)?;
            machine.save_snapshot(&bytes).map(|()| bytes)
        })
        .await
    }

    /// Runs `write`, which writes snapshot `meta` and gives its bytes, on a blocking
    /// thread.
    async fn write_off_thread(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        write: impl FnOnce(&StateMachine) -> io::Result<Vec<u8>> + Send + 'static,
    ) -> Result<Vec<u8>, StorageError<NodeId>> {
        let machine = self.clone();
        tokio::task::spawn_blocking(move || write(&machine))
            .await
            .map_err(io_error)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    fn save_snapshot(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let applying = self.applying.lock().await;
        self.rebuild_locked().await.map_err(|why| StorageIOError::read_state_machine(&io_error(why)))?;
        let leading = self.leadership.as_ref().is_some_and(|l| l.leading());
        let (last_applied, membership, cut, number) = {
            let mut state = self.lock();
            state.snapshots_built += 1;
            let number = state.snapshots_built;
            if leading {
                // The engine runs ahead of the log: only a committed cut will do.
                match state.ready.take() {
                    Some((log_id, membership, cut)) => (Some(log_id), membership, Some(cut), number),
                    None => {
                        if let Some((meta, bytes)) = &state.snapshot {
                            return Ok(Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) });
                        }
                        (None, StoredMembership::default(), None, number)
                    }
                }
            } else {
                (state.last_applied, state.membership.clone(), None, number)
            }
        };
        let unreadable = |e: tokio::task::JoinError| StorageIOError::read_state_machine(&io_error(e));
        let image = if leading {
            // A leader's image is its cut, taken already: holding `applying` while it is
            // read out and written would keep committed entries, and the answers
            // waiting for them, back.
            drop(applying);
            match cut {
                Some(cut) => cut.await.map_err(unreadable)?,
                None => fresh_engine(self.custom.clone()).image(),
            }
        } else {
            // Entries are applied under `applying`, held for the image: it and the
            // applied position agree. Off the async threads: a big state takes tens of
            // milliseconds.
            let engine = self.engine.clone();
            let image = tokio::task::spawn_blocking(move || engine.image()).await.map_err(unreadable)?;
            drop(applying);
            image
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{number}", id.leader_id, id.index),
            None => format!("none-{number}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let _persisting = self.persisting.lock().await;
        // A snapshot installed meanwhile may be newer (`applying` was let go).
        if let Some((newer, bytes)) = &self.lock().snapshot {
            if newer.last_log_id >= meta.last_log_id {
                return Ok(Snapshot { meta: newer.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) });
            }
        }
        let bytes = self.encode_and_persist(&meta, image).await?;
        self.lock().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let state = self.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let _applying = self.applying.lock().await;
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let mut applied = Applied { commands: 0 };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(proposal) => {
                    let stint = self.leadership.as_ref().map_or(0, |l| l.stint());
                    if stint != 0 && proposal.origin == stint {
                        // Applied when it was proposed: now it is committed.
                        if let Some(leadership) = &self.leadership {
                            leadership.committed(stint, proposal.last_lsn);
                        }
                        let mut state = self.lock();
                        if state.cut.as_ref().is_some_and(|(s, lsn, _)| *s == stint && *lsn == proposal.last_lsn) {
                            let (_, _, image) = state.cut.take().expect("checked");
                            state.ready = Some((log_id, state.membership.clone(), image));
                        }
                    } else {
                        if let Some(leadership) = &self.leadership {
                            if stint != 0 {
                                leadership.end("an entry of another leader was committed");
                            }
                        }
                        self.rebuild_locked().await.map_err(|why| StorageIOError::apply(log_id, &io_error(why)))?;
                        let commands =
                            commands(&proposal).map_err(|why| StorageIOError::apply(log_id, &io_error(why)))?;
                        for command in commands {
                            let effects = self.engine.apply_replicated(command);
                            applied.commands += 1;
                            self.remember_wakeups(&effects);
                            if let Some(sink) = &sink {
                                sink(effects);
                            }
                        }
                    }
                }
                EntryPayload::Membership(membership) => {
                    self.lock().membership = StoredMembership::new(Some(log_id), membership);
                }
            }
            self.lock().last_applied = Some(log_id);
            replies.push(applied);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let _applying = self.applying.lock().await;
        let bytes = snapshot.into_inner();
        // Off the async threads: a big state takes hundreds of milliseconds to decode
        // and rebuild.
        let machine = self.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let file: SnapshotFile = rmp_serde::from_slice(&bytes).map_err(io_error)?;
            machine.take_image(file.image).map_err(io_error)?;
            Ok(bytes)
        })
        .await
        .map_err(io_error)
        .and_then(|r| r)
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let _persisting = self.persisting.lock().await;
        let bytes = self.persist(meta, bytes).await?;
        if let Some(leadership) = &self.leadership {
            // The whole state was replaced by a committed one.
            if !leadership.leading() {
                leadership.rebuilt();
            }
        }
        let mut state = self.lock();
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .lock()
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) }))
    }
}
