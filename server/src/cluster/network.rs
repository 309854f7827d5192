//! The peer network: Raft's RPCs between nodes, over TCP, authenticated with the
//! cluster's key.
//!
//! A peer connection starts with the authkey challenge run both ways (the side that
//! connected proves it knows the cluster key, then asks the listening side to prove
//! it), with the same frames and HMAC as a client's handshake, so no node joins or
//! impersonates a cluster without the key. With `--peer-tls-ca` ([`PeerAuth::tls`])
//! the connection is TLS first: the listening side presents the node's certificate,
//! the connecting side checks it against the CA and the host it dialled, and the
//! challenge runs inside. Then the connecting side sends requests
//! and reads one response to each, in order: `[frame: MessagePack of PeerRequest]` →
//! `[frame: MessagePack of PeerResponse]`.
//!
//! Each openraft client object (one per target and purpose: a replication stream, a
//! vote, a leadership check) keeps one connection and reconnects after an error; a
//! failed connect is `Unreachable` (openraft then backs off), a failure on an open
//! connection is a `Network` error. openraft makes a new client for every leadership
//! check (each read-index round) and vote, so a client that goes leaves its connection,
//! if it is in step, to the next client of that peer (a few per peer), instead of each
//! connecting and running the key challenge anew.
//!
//! A follower's relay of a client ([`PeerRequest::Relay`]) starts like any request;
//! after the leader's [`RelayAnswer`] the connection is the client's, handed to the
//! server's [`RelayAcceptor`].
//!
//! This module owns sockets and framing; it calls the local Raft with what arrives and
//! never touches the engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use agora_proto::auth::{self, Challenge, Policy};
use agora_proto::frame;
use agora_proto::io::read_frame;
use bytes::BytesMut;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use super::{ClusterError, ClusterNode, Node, NodeId, NodeStatus, TypeConfig};

/// A connection between peers: TCP, or TLS over it with `--peer-tls-ca`.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> PeerIo for T {}

/// How a node proves itself to its peers and checks them: the cluster key's challenge,
/// inside TLS where the peer link has it.
#[derive(Clone, Debug)]
pub struct PeerAuth {
    /// The key every node of the cluster shares.
    pub key: Arc<Vec<u8>>,
    /// TLS on the peer link (`--peer-tls-ca`).
    pub tls: Option<Arc<crate::tls::PeerTls>>,
}

impl PeerAuth {
    /// The cluster key `key`, with TLS if `tls` is given.
    pub fn new(key: Vec<u8>, tls: Option<crate::tls::PeerTls>) -> PeerAuth {
        PeerAuth { key: Arc::new(key), tls: tls.map(Arc::new) }
    }
}

/// The largest frame a peer may send (an append batch or a snapshot chunk).
pub const PEER_FRAME_LIMIT: u64 = 512 << 20;

/// How long a peer has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request from one node to another, or from `agora cluster` (which knows the
/// cluster key) to a node.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Replicate entries (also the heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Where do you stand? ([`NodeStatus`]).
    Status,
    /// Form a new cluster of these members (id → peer address).
    Init(BTreeMap<NodeId, String>),
    /// Add a node (id, peer address): a learner first, then a voter.
    Add(NodeId, String),
    /// Remove a node.
    Remove(NodeId),
    /// Serve a client this follower authenticated (see [`RelayOpening`]): after the
    /// [`RelayAnswer`], the connection carries the client's own frames both ways.
    Relay(RelayOpening),
}

/// A client connection a follower relays to the leader: the follower ran the handshake
/// (and TLS) itself, so it says who the client is; the leader trusts it because the
/// follower knows the cluster key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayOpening {
    /// The client's own address, for the leader's logs.
    pub client: String,
    /// The user the client authenticated as (`None` without users).
    pub user: Option<String>,
    /// The address the client dialled, as a client dials it (`tcp://…`, `tls://…`,
    /// `unix:…`): the address new proxies' tokens name.
    pub address: Option<String>,
    /// A CPython client: the leader opens its session before answering, and the
    /// follower keeps it across leader changes.
    pub python: bool,
    /// The session this connection had on an earlier leader: resume it, or end it.
    pub previous: Option<agora_proto::native::Previous>,
}

/// The leader's answer to a [`RelayOpening`]: the session it opened for a CPython
/// client (`None` for a native client, which opens its own with its Hello), or why it
/// refused.
pub type RelayAnswer = Result<Option<RelayedSession>, String>;

/// A relayed CPython connection's session on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedSession {
    /// Its id.
    pub session: u64,
    /// What resumes it after a leader change.
    pub secret: u64,
    /// True if it is the session the opening named, resumed.
    pub resumed: bool,
}

/// A relayed client's connection, past the peer handshake and the opening.
pub struct RelayStream {
    /// The connection.
    pub stream: Box<dyn PeerIo>,
    /// Bytes read from it and not yet taken.
    pub buf: BytesMut,
}

impl RelayStream {
    /// Sends the leader's answer to the opening (the leader's side).
    pub async fn answer(&mut self, answer: &RelayAnswer) -> std::io::Result<()> {
        let bytes = rmp_serde::to_vec(answer).map_err(std::io::Error::other)?;
        write_frame(&mut self.stream, &bytes).await
    }
}

/// What serves the clients followers relay to this node (the server, which owns
/// sessions and dialects; this module only hands the connection over).
pub trait RelayAcceptor: Send + Sync {
    /// Serves one relayed connection to its end; answers the opening first.
    fn serve(
        &self,
        stream: RelayStream,
        opening: RelayOpening,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// Opens a relay to the node whose peer listener is at `addr`: the peer handshake,
/// the opening, and the leader's answer.
pub async fn open_relay(
    addr: &str,
    auth: &PeerAuth,
    opening: &RelayOpening,
    timeout: Duration,
) -> Result<(RelayStream, RelayAnswer), PeerError> {
    tokio::time::timeout(timeout, async {
        let mut peer = connect(addr, auth, None).await?;
        let bytes =
            rmp_serde::to_vec(&PeerRequest::Relay(opening.clone())).map_err(|e| PeerError::Decode(e.to_string()))?;
        peer.send(&bytes).await?;
        let body = peer.recv().await?;
        let answer = rmp_serde::from_slice::<RelayAnswer>(&body).map_err(|e| PeerError::Decode(e.to_string()))?;
        Ok((RelayStream { stream: peer.stream, buf: peer.buf }, answer))
    })
    .await
    .map_err(|_| PeerError::Timeout)?
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To `Status`.
    Status(NodeStatus),
    /// To `Init`, `Add` and `Remove`.
    Changed(Result<(), ClusterError>),
}

/// Why a peer connection failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The transport failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be read.
    #[error("{0}")]
    Frame(#[from] agora_proto::io::FrameIoError),
    /// The handshake failed: the other side does not share the cluster key.
    #[error("peer handshake: {0}")]
    Auth(#[from] auth::AuthError),
    /// A message did not decode.
    #[error("peer message: {0}")]
    Decode(String),
    /// The peer took too long.
    #[error("timed out")]
    Timeout,
}

/// A connection to or from a peer, after the handshake.
struct PeerStream {
    stream: Box<dyn PeerIo>,
    buf: BytesMut,
}

impl PeerStream {
    async fn send(&mut self, body: &[u8]) -> Result<(), PeerError> {
        Ok(write_frame(&mut self.stream, body).await?)
    }

    async fn recv(&mut self) -> Result<bytes::Bytes, PeerError> {
        Ok(read_frame(&mut self.stream, &mut self.buf, PEER_FRAME_LIMIT).await?)
    }

    /// Challenges the other side; returns once it proved it knows `key`.
    async fn challenge(&mut self, key: &[u8]) -> Result<(), PeerError> {
        let challenge = Challenge::new();
        self.send(&challenge.frame()).await?;
        let answer = self.recv().await?;
        match challenge.verify(key, &answer, Policy { strict: true }) {
            Ok(()) => {
                self.send(auth::WELCOME).await?;
                Ok(())
            }
            Err(e) => {
                let _ = self.send(auth::FAILURE).await;
                Err(e.into())
            }
        }
    }

    /// Answers the other side's challenge with `key`.
    async fn answer(&mut self, key: &[u8]) -> Result<(), PeerError> {
        let challenge = self.recv().await?;
        let answer = auth::answer(key, &challenge, Policy { strict: true })?;
        self.send(&answer).await?;
        let verdict = self.recv().await?;
        if &verdict[..] == auth::WELCOME {
            Ok(())
        } else {
            Err(auth::AuthError::Rejected.into())
        }
    }
}

/// Writes `body` as one frame.
async fn write_frame(stream: &mut Box<dyn PeerIo>, body: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 12);
    frame::encode(body, &mut out);
    stream.write_all(&out).await
}

/// Connects to a peer (from `from`, if given) and runs the handshake.
async fn connect(addr: &str, auth: &PeerAuth, from: Option<IpAddr>) -> Result<PeerStream, PeerError> {
    let stream = match from {
        // From the address this node listens on: on a host with several addresses,
        // its peers (and their firewalls) see the address they know it by.
        Some(ip) => {
            let target =
                tokio::net::lookup_host(addr).await?.find(|a| a.is_ipv4() == ip.is_ipv4()).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{addr}: no address to reach it from {ip}"),
                    )
                })?;
            let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let key = &auth.key;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let stream: Box<dyn PeerIo> = match &auth.tls {
            Some(tls) => Box::new(tls.connect(host_of(addr), stream).await?),
            None => Box::new(stream),
        };
        let mut peer = PeerStream { stream, buf: BytesMut::with_capacity(64 * 1024) };
        peer.answer(key).await?;
        peer.challenge(key).await?;
        Ok(peer)
    })
    .await
    .map_err(|_| PeerError::Timeout)?
}

/// The host part of a peer address (`HOST:PORT`, `[V6]:PORT`), which its TLS
/// certificate must name.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// What a node answers its peers and `agora cluster` with.
pub struct PeerHandler {
    /// The node (weak: the node owns the listener task).
    pub node: Weak<ClusterNode>,
    /// What serves relayed clients, once the server has set it.
    pub relay: Arc<std::sync::OnceLock<Arc<dyn RelayAcceptor>>>,
}

/// Serves peers that connect to `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<tokio::sync::OnceCell<PeerHandler>>,
    auth: PeerAuth,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "peer listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let auth = auth.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = serve_peer(stream, &handler, &auth) => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %from, error = %e, "peer connection ended");
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

async fn serve_peer(
    stream: TcpStream,
    handler: &tokio::sync::OnceCell<PeerHandler>,
    auth: &PeerAuth,
) -> Result<(), PeerError> {
    stream.set_nodelay(true)?;
    // With TLS, its handshake runs inside the first reads below, under the same timeout.
    let stream: Box<dyn PeerIo> = match &auth.tls {
        Some(tls) => Box::new(tls.accept(stream)?),
        None => Box::new(stream),
    };
    let key = &auth.key;
    let mut peer = PeerStream { stream, buf: BytesMut::with_capacity(64 * 1024) };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        peer.challenge(key).await?;
        peer.answer(key).await
    })
    .await
    .map_err(|_| PeerError::Timeout)??;
    loop {
        let body = match peer.recv().await {
            Ok(body) => body,
            Err(PeerError::Frame(agora_proto::io::FrameIoError::Closed)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let request: PeerRequest = rmp_serde::from_slice(&body).map_err(|e| PeerError::Decode(e.to_string()))?;
        let Some(node) = handler.get().and_then(|h| h.node.upgrade()) else {
            return Err(PeerError::Decode("this node is starting or stopping".to_owned()));
        };
        let raft = node.raft();
        let response = match request {
            PeerRequest::Append(rpc) => PeerResponse::Append(raft.append_entries(rpc).await),
            PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await),
            PeerRequest::Snapshot(rpc) => PeerResponse::Snapshot(raft.install_snapshot(rpc).await),
            PeerRequest::Relay(opening) => {
                let mut relay = RelayStream { stream: peer.stream, buf: peer.buf };
                match handler.get().and_then(|h| h.relay.get().cloned()) {
                    Some(acceptor) => acceptor.serve(relay, opening).await,
                    None => relay.answer(&Err("this node is starting: it serves no client yet".to_owned())).await?,
                }
                return Ok(());
            }
            PeerRequest::Status => PeerResponse::Status(node.status()),
            PeerRequest::Init(members) => PeerResponse::Changed(node.initialize(members).await),
            PeerRequest::Add(id, addr) => PeerResponse::Changed(node.add_node(id, addr).await),
            PeerRequest::Remove(id) => PeerResponse::Changed(node.remove_node(id).await),
        };
        let bytes = rmp_serde::to_vec(&response).map_err(|e| PeerError::Decode(e.to_string()))?;
        peer.send(&bytes).await?;
    }
}

/// Makes openraft's clients to other nodes (see the module docs).
#[derive(Clone)]
pub struct PeerNetwork {
    auth: PeerAuth,
    from: Option<IpAddr>,
    idle: IdleStreams,
}

impl PeerNetwork {
    /// Clients that authenticate with `auth`, connecting from `from` (the node's peer
    /// listen address, unless it is a wildcard).
    pub fn new(auth: PeerAuth, from: IpAddr) -> PeerNetwork {
        PeerNetwork { auth, from: (!from.is_unspecified()).then_some(from), idle: IdleStreams::default() }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            auth: self.auth.clone(),
            from: self.from,
            stream: None,
            idle: self.idle.clone(),
        }
    }
}

/// Authenticated connections to peers that no client uses now, by peer address.
/// openraft makes a client for every leadership check (each read-index round) and
/// every vote; without these, each would connect and run the key challenge anew.
#[derive(Clone, Default)]
struct IdleStreams(Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<PeerStream>>>>);

/// Idle connections kept per peer.
const IDLE_PER_PEER: usize = 4;

impl IdleStreams {
    fn take(&self, addr: &str) -> Option<PeerStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(addr)?.pop()
    }

    fn put(&self, addr: &str, stream: PeerStream) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let streams = idle.entry(addr.to_owned()).or_default();
        if streams.len() < IDLE_PER_PEER {
            streams.push(stream);
        }
    }
}

/// One openraft client of one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    auth: PeerAuth,
    from: Option<IpAddr>,
    stream: Option<PeerStream>,
    idle: IdleStreams,
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        // Only a connection in step (every request answered) is kept.
        if let Some(stream) = self.stream.take() {
            self.idle.put(&self.addr, stream);
        }
    }
}

/// What can go wrong with one RPC, before it is told apart by openraft's error types.
enum RpcFailure {
    Unreachable(PeerError),
    Network(PeerError),
}

impl PeerClient {
    async fn call(&mut self, request: &PeerRequest, ttl: Duration) -> Result<PeerResponse, RpcFailure> {
        let bytes = rmp_serde::to_vec(request).map_err(|e| RpcFailure::Network(PeerError::Decode(e.to_string())))?;
        // An idle connection may have been closed by the peer (a restart) while it
        // waited: if it fails at once, the request goes out once more on a new one.
        let mut pooled = false;
        if self.stream.is_none() {
            self.stream = self.idle.take(&self.addr);
            pooled = self.stream.is_some();
        }
        loop {
            if self.stream.is_none() {
                let stream = tokio::time::timeout(ttl, connect(&self.addr, &self.auth, self.from))
                    .await
                    .map_err(|_| RpcFailure::Unreachable(PeerError::Timeout))?
                    .map_err(RpcFailure::Unreachable)?;
                self.stream = Some(stream);
            }
            // Out of `self` while the exchange runs: if this future is dropped between
            // the request and its response (openraft cancels RPCs that way), the
            // connection goes with it. Kept, that response would be read as the answer
            // to the next request on it — a stale AppendEntries success, counted
            // toward a commit the follower never made.
            let mut stream = self.stream.take().expect("connected above");
            let exchange = async {
                stream.send(&bytes).await?;
                let body = stream.recv().await?;
                rmp_serde::from_slice::<PeerResponse>(&body).map_err(|e| PeerError::Decode(e.to_string()))
            };
            match tokio::time::timeout(ttl, exchange).await {
                Ok(Ok(response)) => {
                    // In step again: every request on it answered.
                    self.stream = Some(stream);
                    return Ok(response);
                }
                Ok(Err(PeerError::Io(_) | PeerError::Frame(_))) if std::mem::take(&mut pooled) => {}
                Ok(Err(e)) => return Err(RpcFailure::Network(e)),
                // A response may still arrive on this connection: it is dropped, never
                // read as the answer to a later request.
                Err(_) => return Err(RpcFailure::Network(PeerError::Timeout)),
            }
        }
    }

    fn rpc_error<E: std::error::Error>(&self, failure: RpcFailure) -> RPCError<NodeId, Node, E> {
        match failure {
            RpcFailure::Unreachable(e) => {
                tracing::debug!(target_node = self.target, addr = %self.addr, error = %e, "peer unreachable");
                RPCError::Unreachable(Unreachable::new(&e))
            }
            RpcFailure::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

fn unexpected(what: &str) -> PeerError {
    PeerError::Decode(format!("the peer answered with another kind of response than {what}"))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.call(&PeerRequest::Append(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Append(Ok(response))) => Ok(response),
            Ok(PeerResponse::Append(Err(e))) => {
                Err(RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.rpc_error(RpcFailure::Network(unexpected("append")))),
            Err(failure) => Err(self.rpc_error(failure)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        match self.call(&PeerRequest::Snapshot(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Snapshot(Ok(response))) => Ok(response),
            Ok(PeerResponse::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.rpc_error(RpcFailure::Network(unexpected("snapshot")))),
            Err(failure) => Err(self.rpc_error(failure)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.call(&PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(Ok(response))) => Ok(response),
            Ok(PeerResponse::Vote(Err(e))) => {
                Err(RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.rpc_error(RpcFailure::Network(unexpected("vote")))),
            Err(failure) => Err(self.rpc_error(failure)),
        }
    }
}

/// Sends one request to the node whose peer listener is at `addr` (the side of
/// `agora cluster`: it knows the cluster key) and returns the answer.
pub async fn ask(
    addr: &str,
    auth: &PeerAuth,
    request: &PeerRequest,
    timeout: Duration,
) -> Result<PeerResponse, PeerError> {
    tokio::time::timeout(timeout, async {
        let mut stream = connect(addr, auth, None).await?;
        let bytes = rmp_serde::to_vec(request).map_err(|e| PeerError::Decode(e.to_string()))?;
        stream.send(&bytes).await?;
        let body = stream.recv().await?;
        rmp_serde::from_slice::<PeerResponse>(&body).map_err(|e| PeerError::Decode(e.to_string()))
    })
    .await
    .map_err(|_| PeerError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake peer on a loopback port: each connection runs the key handshake, then
    /// `serve`, which answers as the test needs. Returns its address.
    async fn fake_peer<F, Fut>(key: Vec<u8>, serve: F) -> String
    where
        F: Fn(PeerStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), PeerError>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serve = Arc::new(serve);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (key, serve) = (key.clone(), serve.clone());
                tokio::spawn(async move {
                    let mut peer = PeerStream { stream: Box::new(stream), buf: BytesMut::new() };
                    peer.challenge(&key).await?;
                    peer.answer(&key).await?;
                    serve(peer).await
                });
            }
        });
        addr
    }

    /// Answers with `said` (as a refusal's text: any answer that carries words will do).
    async fn reply(peer: &mut PeerStream, said: &str) -> Result<(), PeerError> {
        let answer = PeerResponse::Changed(Err(ClusterError::Failed(said.to_owned())));
        peer.send(&rmp_serde::to_vec(&answer).unwrap()).await
    }

    /// A request the fake peers answer slowly, and one they answer at once.
    const SLOW: PeerRequest = PeerRequest::Remove(1);
    const QUICK: PeerRequest = PeerRequest::Remove(2);

    /// A peer that answers `SLOW` with "slow" after a while, anything else with
    /// "quick" at once.
    async fn slow_plain_peer(key: Vec<u8>) -> String {
        fake_peer(key, |mut peer| async move {
            while let Ok(body) = peer.recv().await {
                match rmp_serde::from_slice(&body).unwrap() {
                    PeerRequest::Remove(1) => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        reply(&mut peer, "slow").await?;
                    }
                    _ => reply(&mut peer, "quick").await?,
                }
            }
            Ok(())
        })
        .await
    }

    /// A peer that answers one request on each connection, then closes it (as a
    /// restarted peer leaves its old connections).
    async fn one_answer_peer(key: Vec<u8>) -> String {
        fake_peer(key, |mut peer| async move {
            peer.recv().await?;
            reply(&mut peer, "answered").await
        })
        .await
    }

    fn said(response: Result<PeerResponse, RpcFailure>) -> String {
        match response {
            Ok(PeerResponse::Changed(Err(ClusterError::Failed(said)))) => said,
            Ok(other) => panic!("unexpected response {other:?}"),
            Err(RpcFailure::Unreachable(e) | RpcFailure::Network(e)) => panic!("the call failed: {e}"),
        }
    }

    #[test]
    fn a_peer_address_gives_the_host_its_certificate_must_name() {
        assert_eq!(host_of("10.0.0.1:50100"), "10.0.0.1");
        assert_eq!(host_of("node-2.example:50100"), "node-2.example");
        assert_eq!(host_of("[::1]:50100"), "::1");
    }

    /// A call dropped between its request and its response (openraft cancels RPCs by
    /// dropping them) must not leave its response to be read as the answer to the next
    /// request, on the same client or on a pooled connection: a stale AppendEntries
    /// success would count toward a commit the follower never made.
    #[tokio::test]
    async fn a_cancelled_call_never_hands_its_response_to_the_next_one() {
        let key = b"cluster key".to_vec();
        let addr = slow_plain_peer(key.clone()).await;
        let mut network = PeerNetwork::new(PeerAuth::new(key, None), IpAddr::from([0, 0, 0, 0]));
        let node = Node { addr: addr.clone() };
        let ttl = Duration::from_secs(5);

        let mut client = network.new_client(2, &node).await;
        let cancelled = tokio::time::timeout(Duration::from_millis(50), client.call(&SLOW, ttl));
        assert!(cancelled.await.is_err(), "the first answer is slow: the call is cancelled");
        assert_eq!(said(client.call(&QUICK, ttl).await), "quick", "the same client");

        let cancelled = tokio::time::timeout(Duration::from_millis(50), client.call(&SLOW, ttl));
        assert!(cancelled.await.is_err());
        drop(client);
        let mut next = network.new_client(2, &node).await;
        assert_eq!(said(next.call(&QUICK, ttl).await), "quick", "a pooled connection");
    }

    /// A pooled connection the peer closed meanwhile is noticed on first use, and the
    /// request goes out once more on a new connection.
    #[tokio::test]
    async fn a_pooled_connection_the_peer_closed_is_replaced_at_once() {
        let key = b"cluster key".to_vec();
        let addr = one_answer_peer(key.clone()).await;
        let mut network = PeerNetwork::new(PeerAuth::new(key, None), IpAddr::from([0, 0, 0, 0]));
        let node = Node { addr };
        let ttl = Duration::from_secs(5);
        let mut client = network.new_client(2, &node).await;
        assert_eq!(said(client.call(&QUICK, ttl).await), "answered");
        drop(client); // its connection, closed by the peer by now, goes to the pool
        let mut next = network.new_client(2, &node).await;
        assert_eq!(said(next.call(&QUICK, ttl).await), "answered");
    }
}
