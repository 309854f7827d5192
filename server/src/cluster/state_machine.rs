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
//! calls, wake-ups) goes to the [`EffectsSink`], if one is set: the node serving
//! clients routes it; a replica that serves nobody drops it.
//!
//! This module owns the snapshot file and the applied position; it never opens
//! sessions or reads a clock.

use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{Applied, Entry, Node, NodeId, Proposal, TypeConfig};
use crate::custom::CustomKinds;
use crate::engine::{decode_record, Command, Effects, Engine, EngineImage, RecordRead};

/// The snapshot file's name in the node's directory.
pub const SNAPSHOT_FILE: &str = "raft.snapshot";

/// Where the effects of applied commands go (see the module docs).
pub type EffectsSink = Arc<dyn Fn(Effects) + Send + Sync>;

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
}

/// The state machine of one node (see the module docs). Clones share it.
#[derive(Clone)]
pub struct StateMachine {
    engine: Arc<Engine>,
    custom: CustomKinds,
    dir: PathBuf,
    state: Arc<Mutex<AppliedState>>,
    sink: Arc<Mutex<Option<EffectsSink>>>,
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
    /// The state machine over `engine`, keeping its snapshot in `dir`. A snapshot found
    /// there becomes the engine's state.
    pub fn open(engine: Arc<Engine>, custom: CustomKinds, dir: &Path) -> io::Result<StateMachine> {
        let machine = StateMachine { engine, custom, dir: dir.to_owned(), state: Arc::default(), sink: Arc::default() };
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

    fn take_image(&self, image: EngineImage) -> Result<(), String> {
        let restored = Engine::from_image(self.custom.clone(), image)?;
        self.engine.replace_with(restored);
        Ok(())
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
        // Entries are applied by the one task that also asks for this builder, so the
        // image and the applied position agree.
        let (last_applied, membership, number) = {
            let mut state = self.lock();
            state.snapshots_built += 1;
            (state.last_applied, state.membership.clone(), state.snapshots_built)
        };
        let image = self.engine.image();
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{number}", id.leader_id, id.index),
            None => format!("none-{number}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let file = SnapshotFile { meta: meta.clone(), image };
        let bytes = rmp_serde::to_vec(&file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &io_error(e)))?;
        let machine = self.clone();
        let to_save = bytes.clone();
        tokio::task::spawn_blocking(move || machine.save_snapshot(&to_save))
            .await
            .map_err(io_error)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
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
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let mut applied = Applied { commands: 0 };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(proposal) => {
                    let commands = commands(&proposal).map_err(|why| StorageIOError::apply(log_id, &io_error(why)))?;
                    for command in commands {
                        let effects = self.engine.apply(command);
                        applied.commands += 1;
                        if let Some(sink) = &sink {
                            sink(effects);
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
        let bytes = snapshot.into_inner();
        let damaged = |e: io::Error| StorageIOError::read_snapshot(Some(meta.signature()), &e);
        let file: SnapshotFile = rmp_serde::from_slice(&bytes).map_err(|e| damaged(io_error(e)))?;
        self.take_image(file.image).map_err(|e| damaged(io_error(e)))?;
        let machine = self.clone();
        let to_save = bytes.clone();
        tokio::task::spawn_blocking(move || machine.save_snapshot(&to_save))
            .await
            .map_err(io_error)
            .and_then(|r| r)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
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
