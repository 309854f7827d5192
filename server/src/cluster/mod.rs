//! Replication: the engine as openraft's state machine.
//!
//! Raft is openraft's, not ours. What this module adds is the three things openraft
//! asks an application for, and a handle that ties them together:
//!
//! - [`log_store`]: the Raft log on disk (entries, vote, commit mark), fsynced before
//!   anything is acknowledged.
//! - [`state_machine`]: the engine, fed committed entries. An entry's payload, a
//!   [`Proposal`], is a run of the same command records the single-node log holds, so
//!   a replica applies exactly what a single server would have replayed, in the
//!   leader's order and with the leader's times.
//! - [`network`]: the peer RPCs over TCP, authenticated with the cluster's key, and
//!   the relays that carry a follower's clients to the leader (handed to the server's
//!   [`network::RelayAcceptor`]; this module never reads what they carry).
//! - [`ClusterNode`]: one node: start it over an engine, form or join a cluster,
//!   propose commands, wait for a read to be linearizable, see where the node stands.
//!
//! Fencing tokens, object ids and session ids are the engine's counters, so they are
//! replicated state: they only grow, across leader changes and restarts.
//!
//! This module owns the node's Raft files and peer sockets; it must not know about
//! connections, dialects or wire formats.

pub mod leadership;
pub mod log_store;
pub mod network;
pub mod serving;
pub mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
// `declare_raft_types!` names its default snapshot type as plain `Cursor`.
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::custom::CustomKinds;
use crate::engine::{encode_record, Command, CounterValues, Engine};
pub use leadership::Leadership;
pub use log_store::LogStore;
pub use network::PeerNetwork;
pub use serving::{Serving, StintHooks};
pub use state_machine::{EffectsSink, StateMachine};

/// Where every node's engine starts its counters. Replicas must start from the same
/// state, so a cluster's object ids do not start at a random offset as a single
/// server's do (that offset only guards against a client of an earlier run of a
/// server that forgot its objects; a cluster's ids live in its replicated state).
pub const FIRST_STATE: CounterValues =
    CounterValues { next_id: 1 << 16, next_ticket: 1, next_token: 1, next_session: 1 };

/// The engine a node starts with before its snapshot and log are applied.
pub fn fresh_engine(custom: CustomKinds) -> Engine {
    Engine::with_counters(custom, FIRST_STATE)
}

/// A node's id in its cluster (any number but 0, unique in the cluster).
pub type NodeId = u64;
/// What the cluster knows of a node: its peer address.
pub type Node = BasicNode;

/// What one log entry carries: command records (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The leader's stint that applied these commands already (0: none did; see
    /// [`leadership`]).
    pub origin: u64,
    /// The journal LSN of the last record, on the node that proposed it.
    pub last_lsn: u64,
    /// Encoded records (`engine::encode_record`), one command each.
    #[serde(with = "serde_bytes")]
    pub records: Vec<u8>,
}

impl Proposal {
    /// The proposal of `commands`, in order, applied nowhere yet.
    pub fn of<'a>(commands: impl IntoIterator<Item = &'a Command>) -> Proposal {
        let mut records = Vec::new();
        for command in commands {
            encode_record(&mut records, command);
        }
        Proposal { origin: 0, last_lsn: 0, records }
    }
}

/// What applying one entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Commands applied.
    pub commands: u64,
}

openraft::declare_raft_types!(
    /// agora's Raft types: proposals of engine commands, node ids, peer addresses.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = Node,
);

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft instance of agora's types.
pub type Raft = openraft::Raft<TypeConfig>;

/// How one node is set up.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Where it listens for its peers.
    pub peer_listen: SocketAddr,
    /// Its Raft files (log, vote, snapshot).
    pub dir: PathBuf,
    /// The key every node of the cluster shares.
    pub key: Vec<u8>,
    /// TLS on the peer link (`--peer-tls-ca`), if the nodes use it.
    pub tls: Option<Arc<crate::tls::PeerTls>>,
    /// The leader's heartbeat period.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range stands for
    /// election.
    pub election_timeout: (Duration, Duration),
    /// Take a snapshot (and drop the log it covers) after this many entries.
    pub snapshot_after_entries: u64,
    /// Entries a snapshot covers that are kept anyway, so a follower a little behind
    /// catches up from the log rather than by a whole snapshot.
    pub keep_after_snapshot: u64,
}

/// Entries between two snapshots unless a node is told otherwise
/// (`--snapshot-after-entries`).
pub const DEFAULT_SNAPSHOT_AFTER_ENTRIES: u64 = 10_000;

impl ClusterConfig {
    /// The defaults for node `node_id`: a 100 ms heartbeat, elections after 400–800
    /// ms without one, a snapshot every 10,000 entries keeping the last 1,000 entries.
    pub fn new(node_id: NodeId, peer_listen: SocketAddr, dir: impl Into<PathBuf>, key: Vec<u8>) -> ClusterConfig {
        ClusterConfig {
            node_id,
            peer_listen,
            dir: dir.into(),
            key,
            tls: None,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            snapshot_after_entries: DEFAULT_SNAPSHOT_AFTER_ENTRIES,
            keep_after_snapshot: 1_000,
        }
    }
}

/// A cluster node's settings, as `agora serve` takes them.
#[derive(Debug, Clone)]
pub struct ClusterSetup {
    /// The node.
    pub node: ClusterConfig,
    /// The members to form the cluster with if this node's log is empty (`--cluster`;
    /// empty: wait to be initialized or added by `agora cluster`).
    pub members: BTreeMap<NodeId, String>,
}

/// A relay [`ClusterNode::open_relay`] opened.
pub struct OpenedRelay {
    /// The client's connection to the leader.
    pub stream: network::RelayStream,
    /// The session the leader opened for a CPython client.
    pub session: Option<network::RelayedSession>,
    /// The leader it reached.
    pub leader: NodeId,
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// This node is not the leader; the leader, if known.
    #[error("this node is not the leader{}", match .leader { Some((id, addr)) => format!(" (node {id} at {addr} is)"), None => " (no leader is known yet)".to_owned() })]
    NotLeader {
        /// The leader's id and peer address.
        leader: Option<(NodeId, String)>,
    },
    /// The operation failed for another reason.
    #[error("{0}")]
    Failed(String),
}

/// `NotLeader` naming the leader openraft points at.
fn not_leader(forward: &openraft::error::ForwardToLeader<NodeId, Node>) -> ClusterError {
    ClusterError::NotLeader { leader: forward.leader_id.zip(forward.leader_node.as_ref().map(|n| n.addr.clone())) }
}

fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> ClusterError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => not_leader(&forward),
        other => ClusterError::Failed(other.to_string()),
    }
}

fn read_error(error: RaftError<NodeId, openraft::error::CheckIsLeaderError<NodeId, Node>>) -> ClusterError {
    match error {
        RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(forward)) => not_leader(&forward),
        other => ClusterError::Failed(other.to_string()),
    }
}

/// Where one node stands (`agora cluster status`, `agora stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node.
    pub node_id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The last log index this node has.
    pub last_log_index: Option<u64>,
    /// The last index it applied.
    pub last_applied: Option<u64>,
    /// Voters, by id and peer address.
    pub voters: BTreeMap<NodeId, String>,
    /// Non-voting members (catching up), by id and address.
    pub learners: BTreeMap<NodeId, String>,
    /// On the leader: how far each member's log is behind the leader's (entries).
    pub lag: BTreeMap<NodeId, u64>,
}

impl NodeStatus {
    /// As `agora stats` carries it.
    pub fn to_stats(&self) -> agora_proto::native::ClusterStats {
        let member = |(id, peer): (&NodeId, &String), voter: bool| agora_proto::native::ClusterMember {
            id: *id,
            peer: peer.clone(),
            voter,
            lag: self.lag.get(id).copied(),
        };
        agora_proto::native::ClusterStats {
            node_id: self.node_id,
            role: self.role.clone(),
            term: self.term,
            leader: self.leader,
            last_log_index: self.last_log_index,
            last_applied: self.last_applied,
            members: self
                .voters
                .iter()
                .map(|m| member(m, true))
                .chain(self.learners.iter().map(|m| member(m, false)))
                .collect(),
        }
    }
}

/// One node of a cluster (see the module docs).
pub struct ClusterNode {
    id: NodeId,
    raft: Raft,
    machine: StateMachine,
    peer_addr: SocketAddr,
    auth: network::PeerAuth,
    relay: Arc<std::sync::OnceLock<Arc<dyn network::RelayAcceptor>>>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode").field("id", &self.id).field("peer_addr", &self.peer_addr).finish()
    }
}

impl ClusterNode {
    /// Starts node `config.node_id` over `engine`: opens its Raft files in
    /// `config.dir` (a snapshot there becomes the engine's state; committed entries
    /// after it are applied again), listens for peers, and joins whatever cluster its
    /// log says it belongs to. A node with an empty log waits for
    /// [`ClusterNode::initialize`] (on one node) or to be added by a leader.
    pub async fn start(
        config: ClusterConfig,
        engine: Arc<Engine>,
        custom: CustomKinds,
        leadership: Option<Arc<Leadership>>,
    ) -> std::io::Result<Arc<ClusterNode>> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        if config.node_id == 0 {
            return Err(invalid("a node id must not be 0".to_owned()));
        }
        let raft_config = Config {
            cluster_name: "agora".to_owned(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| invalid(e.to_string()))?);
        std::fs::create_dir_all(&config.dir)?;
        let log = LogStore::open(&config.dir)?;
        let machine = StateMachine::open(engine, custom, &config.dir, log.clone(), leadership)?;
        let listener = TcpListener::bind(config.peer_listen).await?;
        let peer_addr = listener.local_addr()?;
        let auth = network::PeerAuth { key: Arc::new(config.key), tls: config.tls };
        let network = PeerNetwork::new(auth.clone(), peer_addr.ip());
        let raft = Raft::new(config.node_id, raft_config, network, log, machine.clone())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (shutdown, stop) = watch::channel(false);
        let handler = Arc::new(tokio::sync::OnceCell::new());
        tokio::spawn(network::serve(listener, handler.clone(), auth.clone(), stop));
        let relay = Arc::new(std::sync::OnceLock::new());
        let node = Arc::new(ClusterNode {
            id: config.node_id,
            raft,
            machine,
            peer_addr,
            auth,
            relay: relay.clone(),
            shutdown,
        });
        let _ = handler.set(network::PeerHandler { node: Arc::downgrade(&node), relay });
        Ok(node)
    }

    /// Sets what serves the clients followers relay to this node (once; until then
    /// they are refused).
    pub fn serve_relays(&self, acceptor: Arc<dyn network::RelayAcceptor>) {
        let _ = self.relay.set(acceptor);
    }

    /// Opens a relay of one client to the node that leads (see [`network::RelayOpening`]),
    /// giving up after `timeout`; the leader's peer address comes from the membership.
    pub async fn open_relay(
        &self,
        opening: &network::RelayOpening,
        timeout: Duration,
    ) -> Result<OpenedRelay, ClusterError> {
        let status = self.status();
        let leader = status.leader.ok_or(ClusterError::NotLeader { leader: None })?;
        let peer = status
            .voters
            .get(&leader)
            .or_else(|| status.learners.get(&leader))
            .ok_or_else(|| ClusterError::Failed(format!("the leader, node {leader}, is not a member")))?;
        match network::open_relay(peer, &self.auth, opening, timeout).await {
            Ok((stream, Ok(session))) => Ok(OpenedRelay { stream, session, leader }),
            Ok((_, Err(why))) => Err(ClusterError::Failed(format!("the leader, node {leader}, refused: {why}"))),
            Err(e) => Err(ClusterError::Failed(format!("cannot reach the leader, node {leader} at {peer}: {e}"))),
        }
    }

    /// Completes once this node hears of a leader other than `leader`: `leader` no
    /// longer leads, whether it died or was paused or cut off (Raft's term moved on).
    /// A relay to it must not wait for it to notice.
    pub async fn deposed(&self, leader: NodeId) {
        let mut metrics = self.raft.metrics();
        if metrics.wait_for(|m| m.current_leader.is_some_and(|now| now != leader)).await.is_err() {
            // Raft stopped: this node is shutting down, which ends its relays anyway.
            std::future::pending::<()>().await;
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address its peer listener is bound to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state machine.
    pub fn state_machine(&self) -> &StateMachine {
        &self.machine
    }

    /// Forms a new cluster of `members` (id → peer address). Run it once, on one node
    /// of a cluster whose nodes all have empty logs.
    /// Running it on every node with the same members is safe too (`--cluster`); on a
    /// node whose log is not empty it does nothing.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), ClusterError> {
        let nodes: BTreeMap<NodeId, Node> = members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // The cluster is formed already: what initializing was for.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Failed(e.to_string())),
        }
    }

    /// Replicates `commands` as one entry and returns once a majority has it and this
    /// node applied it.
    pub async fn propose(&self, commands: &[Command]) -> Result<u64, ClusterError> {
        let response = self.raft.client_write(Proposal::of(commands)).await.map_err(write_error)?;
        Ok(response.log_id.index)
    }

    /// Returns once this node is sure it is still the leader and has applied every
    /// entry committed before the call: a read made after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        self.raft.ensure_linearizable().await.map(drop).map_err(read_error)
    }

    /// Adds node `id` at peer address `addr`: first as a learner that catches up, then
    /// as a voter (a joint-consensus membership change).
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<(), ClusterError> {
        self.raft.add_learner(id, BasicNode { addr }, true).await.map_err(write_error)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    /// Removes node `id` from the cluster (voter or learner). The leader may remove
    /// itself: it steps down once the new membership is committed.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        // One change: a voter removed without `retain` leaves the node set too (a second
        // change after the leader removed itself would be proposed by a non-voter).
        let change = if self.status().voters.contains_key(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft.change_membership(change, false).await.map_err(write_error)?;
        Ok(())
    }

    /// Where this node stands now.
    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.addr.clone());
            } else {
                learners.insert(*id, node.addr.clone());
            }
        }
        let last_log_index = metrics.last_log_index;
        let lag = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| {
                        let matched = matched.map_or(0, |m| m.index);
                        (*id, last_log_index.unwrap_or(0).saturating_sub(matched))
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeStatus {
            node_id: self.id,
            role: match metrics.state {
                ServerState::Leader => "Leader",
                ServerState::Follower => "Follower",
                ServerState::Candidate => "Candidate",
                ServerState::Learner => "Learner",
                ServerState::Shutdown => "Shutdown",
            }
            .to_owned(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            voters,
            learners,
            lag,
        }
    }

    /// Waits until this node sees a leader (any node), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ClusterError> {
        let mut metrics = self.raft.metrics();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(leader) = metrics.borrow().current_leader {
                    return leader;
                }
                if metrics.changed().await.is_err() {
                    return 0;
                }
            }
        })
        .await;
        match found {
            Ok(leader) if leader != 0 => Ok(leader),
            _ => Err(ClusterError::NotLeader { leader: None }),
        }
    }

    /// Stops Raft and the peer listener.
    pub async fn stop(&self) {
        let _ = self.shutdown.send(true);
        let _ = self.raft.shutdown().await;
    }
}
