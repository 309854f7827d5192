//! A cluster of real `agora serve` processes on loopback, for failover tests.
//!
//! Node `i` (1-based) listens for clients on an ephemeral port of 127.0.0.1 and for
//! its peers on `127.0.0.(20+i)`, from which it also connects out. The members list
//! every node gives `--cluster` names each node's [`FaultProxy`], never the node
//! itself, so every byte of Raft traffic passes a proxy a test can cut:
//! [`Cluster::isolate`] cuts everything to and from one node (by its address), and
//! [`Cluster::heal`] restores it. Nodes can be killed (SIGKILL), paused (SIGSTOP),
//! resumed and restarted on the same ports and directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_server::cluster::network::{ask, PeerAuth, PeerRequest, PeerResponse};
use agora_server::cluster::NodeStatus;

use crate::faultproxy::FaultProxy;
use crate::{Server, ServerOptions, AUTHKEY, HANG_GUARD};

/// One node's fixed addresses.
struct NodeSpec {
    id: u64,
    client: String,
    peer: SocketAddr,
    dir: PathBuf,
}

/// A cluster of `agora serve` processes (see the module docs).
pub struct Cluster {
    specs: Vec<NodeSpec>,
    nodes: Vec<Option<Server>>,
    proxies: Vec<FaultProxy>,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
    /// Extra `agora serve` flags for every node.
    extra: Vec<String>,
    /// The nodes get no authkey (their config file has users).
    no_authkey: bool,
    /// How to ask the nodes' peer listeners (TLS if the flags give `--peer-tls-ca`).
    auth: PeerAuth,
}

fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Cluster {
    /// Starts `n` nodes that form one cluster, and waits until one of them leads.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, Vec::new())
    }

    /// [`Cluster::start`] with extra `agora serve` flags for every node.
    pub fn start_with(n: usize, extra: Vec<String>) -> Cluster {
        Cluster::start_inner(n, extra, false)
    }

    /// [`Cluster::start`] with the `[users]` of the config file at `config` on every
    /// node, and no authkey: the nodes authenticate each other with
    /// `--cluster-key-file` (holding [`AUTHKEY`], which is no user's key).
    pub fn start_with_users(n: usize, config: &std::path::Path) -> Cluster {
        Cluster::start_inner(n, vec!["--config".to_owned(), config.display().to_string()], true)
    }

    fn start_inner(n: usize, mut extra: Vec<String>, no_authkey: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("cluster.key");
        std::fs::write(&key_file, AUTHKEY).expect("write the key");
        if no_authkey {
            extra.extend(["--cluster-key-file".to_owned(), key_file.display().to_string()]);
        }
        let mut specs = Vec::new();
        let mut proxies = Vec::new();
        for i in 1..=n {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20 + i as u8));
            let peer = SocketAddr::new(ip, free_port(ip));
            let client_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
            proxies.push(FaultProxy::start(peer));
            specs.push(NodeSpec {
                id: i as u64,
                client: format!("127.0.0.1:{client_port}"),
                peer,
                dir: dir.path().join(format!("node{i}")),
            });
        }
        let peer_tls = extra.iter().position(|flag| flag == "--peer-tls-ca").and_then(|at| extra.get(at + 1));
        let peer_tls =
            peer_tls.map(|ca| agora_server::tls::PeerTls::client(std::path::Path::new(ca)).expect("peer CA"));
        let auth = PeerAuth::new(AUTHKEY.to_vec(), peer_tls);
        let nodes = (0..n).map(|_| None).collect();
        let mut cluster = Cluster { specs, nodes, proxies, key_file, _dir: dir, extra, no_authkey, auth };
        for i in 0..n {
            cluster.start_node(i, true);
        }
        cluster.wait_for_everyone();
        cluster
    }

    fn members(&self) -> String {
        let members: Vec<String> =
            self.specs.iter().zip(&self.proxies).map(|(s, p)| format!("{}={}", s.id, p.listen_addr())).collect();
        members.join(",")
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// True for a cluster of no nodes.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Every node's client address, in node order.
    pub fn client_addresses(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.client.clone()).collect()
    }

    /// Node `i`'s client address.
    pub fn client_address(&self, i: usize) -> &str {
        &self.specs[i].client
    }

    /// The file holding the cluster's key.
    pub fn key_file(&self) -> &std::path::Path {
        &self.key_file
    }

    /// Node `i`'s peer address as the cluster knows it (its proxy).
    pub fn peer_address(&self, i: usize) -> String {
        self.proxies[i].listen_addr().to_string()
    }

    /// Node `i`'s process, while it runs.
    pub fn node(&self, i: usize) -> Option<&Server> {
        self.nodes[i].as_ref()
    }

    /// (Re)starts node `i` on its ports and directory.
    pub fn restart(&mut self, i: usize) {
        self.start_node(i, false);
    }

    /// Starts node `i`. A first start (`new_port_if_taken`) whose client port was
    /// taken since it was picked (by a test's outgoing connection, say) tries again
    /// on another; a restart keeps the address its clients know.
    fn start_node(&mut self, i: usize, new_port_if_taken: bool) {
        for attempt in 1.. {
            match self.spawn(i) {
                Ok(node) => {
                    self.nodes[i] = Some(node);
                    return;
                }
                Err(log) if new_port_if_taken && attempt < 5 && log.contains("Address already in use") => {
                    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
                    self.specs[i].client = format!("127.0.0.1:{port}");
                }
                Err(log) => panic!("node {} did not start; log:\n{log}", i + 1),
            }
        }
    }

    /// Starts node `i`'s process on its ports and directory.
    fn spawn(&self, i: usize) -> Result<Server, String> {
        let spec = &self.specs[i];
        let mut args = vec![
            "--node-id".to_owned(),
            spec.id.to_string(),
            "--peer-listen".to_owned(),
            spec.peer.to_string(),
            "--cluster".to_owned(),
            self.members(),
            "--data-dir".to_owned(),
            spec.dir.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let options = ServerOptions { args, no_authkey: self.no_authkey, ..Default::default() };
        Server::try_start_at(&spec.client, options)
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill9();
        }
    }

    /// Pauses node `i` (SIGSTOP): it neither answers nor times anything out.
    pub fn pause(&self, i: usize) {
        if let Some(node) = &self.nodes[i] {
            node.signal(libc::SIGSTOP);
        }
    }

    /// Resumes a paused node (SIGCONT).
    pub fn resume(&self, i: usize) {
        if let Some(node) = &self.nodes[i] {
            node.signal(libc::SIGCONT);
        }
    }

    /// Cuts every Raft connection to and from node `i`, and refuses new ones.
    pub fn isolate(&self, i: usize) {
        let ip = self.specs[i].peer.ip();
        for (j, proxy) in self.proxies.iter().enumerate() {
            if j == i {
                proxy.partition();
            } else {
                proxy.refuse_from(ip);
            }
        }
    }

    /// Undoes every [`Cluster::isolate`].
    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    /// The proxy in front of node `i`'s peer listener (what its peers connect to).
    pub fn proxy(&self, i: usize) -> &FaultProxy {
        &self.proxies[i]
    }

    /// Asks node `i` where it stands (`None` if it does not answer).
    pub fn status(&self, i: usize) -> Option<NodeStatus> {
        let peer = self.specs[i].peer.to_string();
        // On a thread of its own, so that sync and async tests alike may call it.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    match runtime.block_on(ask(&peer, &self.auth, &PeerRequest::Status, Duration::from_secs(2))) {
                        Ok(PeerResponse::Status(status)) => Some(status),
                        _ => None,
                    }
                })
                .join()
                .expect("the status thread")
        })
    }

    /// Waits until a running node says it leads, a majority of the nodes agrees, and it
    /// serves clients in that term (it has taken over the previous leader's sessions:
    /// a client that connects before that is refused); returns its index.
    pub fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let statuses: Vec<Option<NodeStatus>> =
                (0..self.len()).map(|i| if self.nodes[i].is_some() { self.status(i) } else { None }).collect();
            let leader = statuses.iter().enumerate().find_map(|(i, s)| {
                s.as_ref().filter(|s| s.role == "Leader" && s.leader == Some(self.specs[i].id)).map(|_| i)
            });
            if let Some(leader) = leader {
                let id = self.specs[leader].id;
                let agreed = statuses.iter().flatten().filter(|s| s.leader == Some(id)).count();
                let term = statuses[leader].as_ref().map_or(0, |s| s.term);
                if agreed * 2 > self.len() && self.serves_clients(leader, term) {
                    return leader;
                }
            }
            if Instant::now() >= deadline {
                panic!("no leader within the hang guard: {statuses:?}; {}", self.save_logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether node `i` said it serves clients as the leader of `term` (its log's
    /// "serving clients term=…" line).
    fn serves_clients(&self, i: usize, term: u64) -> bool {
        let Some(node) = &self.nodes[i] else { return false };
        let term = format!("term={term}");
        node.log().lines().any(|line| line.contains("serving clients") && line.split_whitespace().any(|w| w == term))
    }

    /// Waits until every running node follows one leader and has applied its log.
    pub fn wait_for_everyone(&self) -> usize {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let leader = self.wait_for_leader();
            let id = self.specs[leader].id;
            let target = self.status(leader).and_then(|s| s.last_applied);
            let all = (0..self.len())
                .filter(|&i| self.nodes[i].is_some())
                .all(|i| self.status(i).is_some_and(|s| s.leader == Some(id) && s.last_applied >= target));
            if all {
                return leader;
            }
            if Instant::now() >= deadline {
                let statuses: Vec<Option<NodeStatus>> = (0..self.len()).map(|i| self.status(i)).collect();
                panic!("the nodes never all followed one leader: {statuses:?}; {}", self.save_logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes every running node's log to a file in the temporary directory, for a
    /// failure to point at; returns where.
    pub fn save_logs(&self) -> String {
        let mut saved = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                let path = std::env::temp_dir().join(format!("agora-cluster-{}-node{}.log", std::process::id(), i + 1));
                if std::fs::write(&path, node.log()).is_ok() {
                    saved.push(path.display().to_string());
                }
            }
        }
        format!("node logs: {}", saved.join(", "))
    }

    /// Waits until every running node applied at least what node `i` has applied.
    pub fn wait_converged(&self, i: usize) {
        let target = self.status(i).and_then(|s| s.last_applied).unwrap_or(0);
        let deadline = Instant::now() + HANG_GUARD;
        for j in 0..self.len() {
            if self.nodes[j].is_none() {
                continue;
            }
            while self.status(j).and_then(|s| s.last_applied).unwrap_or(0) < target {
                assert!(Instant::now() < deadline, "node {} never applied index {target}", j + 1);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
