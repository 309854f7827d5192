//! Three nodes in one process, on loopback peer listeners with their Raft files in
//! temporary directories: replication, a leader's loss, a restart from disk, a
//! snapshot sent to a node that fell behind, and the cluster key.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::native::{Args, Kind};
use agora_proto::Value;

use super::*;
use crate::engine::{Access, Keep, Time};

const KEY: &[u8] = b"cluster-test-key";
/// A hang guard, not a timing claim.
const PATIENCE: Duration = Duration::from_secs(30);

struct TestNode {
    node: Arc<ClusterNode>,
    engine: Arc<Engine>,
    dir: PathBuf,
}

fn config(id: NodeId, dir: &std::path::Path, port: u16) -> ClusterConfig {
    let mut config = ClusterConfig::new(id, SocketAddr::from(([127, 0, 0, 1], port)), dir, KEY.to_vec());
    config.snapshot_after_entries = 50;
    // A node that fell behind past a snapshot gets the snapshot, not the log.
    config.keep_after_snapshot = 0;
    config
}

async fn start(id: NodeId, dir: PathBuf, port: u16) -> TestNode {
    let engine = Arc::new(fresh_engine(CustomKinds::default()));
    let node =
        ClusterNode::start(config(id, &dir, port), engine.clone(), CustomKinds::default(), None).await.expect("start");
    TestNode { node, engine, dir }
}

async fn three(base: &tempfile::TempDir) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, base.path().join(format!("n{id}")), 0).await);
    }
    let members = nodes.iter().map(|n| (n.node.id(), n.node.peer_addr().to_string())).collect();
    nodes[0].node.initialize(members).await.expect("initialize");
    nodes
}

async fn leader_of(nodes: &[TestNode]) -> usize {
    let id = nodes[0].node.wait_for_leader(PATIENCE).await.expect("a leader");
    nodes.iter().position(|n| n.node.id() == id).expect("the leader is one of ours")
}

/// Proposes on whichever node leads, retrying while a leader is being elected.
async fn propose(nodes: &[TestNode], commands: &[Command]) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        for n in nodes {
            if let Ok(index) = n.node.propose(commands).await {
                return index;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no node accepted a proposal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_applied(node: &TestNode, index: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while node.node.state_machine().last_applied().is_none_or(|id| id.index < index) {
        assert!(tokio::time::Instant::now() < deadline, "node {} never applied {index}", node.node.id());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn set(session: u64, object: u64, key: &str, value: i64, at: Time) -> Command {
    Command::Call {
        session,
        object,
        access: Access::Handle,
        method: "__setitem__".into(),
        args: Args::positional(vec![Value::Str(key.into()), Value::Int(value)]),
        at,
    }
}

fn get(node: &TestNode, name: &str) -> Value {
    node.engine.snapshot_named(name).expect("the object exists")
}

/// Opens session 1 and dict "d" on the cluster; returns the dict's id.
async fn open_dict(nodes: &[TestNode]) -> u64 {
    let at = Time(1_000);
    propose(nodes, &[Command::OpenSession { at, secret: None }]).await;
    let open = Command::Open {
        session: 1,
        kind: Kind::Dict,
        name: Some("d".to_owned()),
        args: Args::default(),
        keep: Keep::Handle,
        at,
    };
    let index = propose(nodes, &[open]).await;
    for n in nodes {
        wait_applied(n, index).await;
    }
    match nodes[0].engine.named().iter().find(|o| o.name == "d") {
        Some(info) => info.id,
        None => panic!("dict d was not created"),
    }
}

fn as_dict(value: &Value) -> BTreeMap<String, i64> {
    let Value::Dict(dict) = value else { panic!("not a dict: {value:?}") };
    dict.iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Int(v)) => (k.to_string(), *v),
            other => panic!("unexpected item {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_applies_the_same_commands_and_ends_in_the_same_state() {
    let base = tempfile::tempdir().unwrap();
    let nodes = three(&base).await;
    let d = open_dict(&nodes).await;
    let mut last = 0;
    for i in 0..20 {
        last = propose(&nodes, &[set(1, d, &format!("k{i}"), i, Time(2_000 + i as u64))]).await;
    }
    for n in &nodes {
        wait_applied(n, last).await;
    }
    let states: Vec<_> = nodes.iter().map(|n| n.engine.canonical_state()).collect();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
    assert_eq!(as_dict(&get(&nodes[2], "d")).len(), 20);
    for n in &nodes {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_every_committed_write_and_a_restarted_node_catches_up() {
    let base = tempfile::tempdir().unwrap();
    let mut nodes = three(&base).await;
    let d = open_dict(&nodes).await;
    // Big enough that snapshots read the dict out after they begin (a capture), while
    // entries are applied.
    let seed = Value::List(
        (0..5_000).map(|i| Value::Tuple(vec![Value::Str(format!("s{i}").into()), Value::Int(i)])).collect(),
    );
    let update = Command::Call {
        session: 1,
        object: d,
        access: Access::Handle,
        method: "update".into(),
        args: Args::positional(vec![seed]),
        at: Time(1_500),
    };
    propose(&nodes, &[update]).await;
    for i in 0..10 {
        propose(&nodes, &[set(1, d, &format!("k{i}"), i, Time(2_000 + i as u64))]).await;
    }
    // The leader goes away: the other two elect one of themselves and keep every write.
    let old = leader_of(&nodes).await;
    nodes[old].node.stop().await;
    let gone = nodes.remove(old);
    let id = gone.node.id();
    let (dir, port) = (gone.dir.clone(), gone.node.peer_addr().port());
    drop(gone);
    let mut last = 0;
    for i in 10..20 {
        last = propose(&nodes, &[set(1, d, &format!("k{i}"), i, Time(3_000 + i as u64))]).await;
    }
    for n in &nodes {
        wait_applied(n, last).await;
        assert_eq!(as_dict(&get(n, "d")).len(), 5_020, "node {}", n.node.id());
    }
    // The old leader starts again from its files and catches up (through a snapshot:
    // more than `snapshot_after_entries` went by).
    for i in 20..80 {
        last = propose(&nodes, &[set(1, d, &format!("k{i}"), i, Time(4_000 + i as u64))]).await;
    }
    let back = start(id, dir, port).await;
    wait_applied(&back, last).await;
    let purged = nodes.iter().all(|n| n.node.raft().metrics().borrow().purged.is_some_and(|p| p.index > 12));
    assert!(purged, "the log the old leader missed was not purged: it caught up without a snapshot");
    assert_eq!(back.engine.canonical_state(), nodes[0].engine.canonical_state());
    let snapshot_taken = nodes.iter().any(|n| n.node.state_machine().snapshots_built() > 0);
    assert!(snapshot_taken, "80 entries past a 50-entry snapshot threshold built no snapshot");
    nodes.push(back);
    for n in &nodes {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_files_has_its_state_back_before_it_hears_from_anyone() {
    let base = tempfile::tempdir().unwrap();
    let nodes = three(&base).await;
    let d = open_dict(&nodes).await;
    let mut last = 0;
    for i in 0..60 {
        last = propose(&nodes, &[set(1, d, &format!("k{i}"), i, Time(2_000 + i as u64))]).await;
    }
    for n in &nodes {
        wait_applied(n, last).await;
    }
    let expected = nodes[0].engine.canonical_state();
    let mut dirs = Vec::new();
    for n in nodes {
        n.node.stop().await;
        dirs.push((n.node.id(), n.dir.clone()));
    }
    // Alone (its peers are down), a node restores its snapshot and replays its log.
    let (id, dir) = dirs[1].clone();
    let alone = start(id, dir, 0).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while alone.engine.canonical_state() != expected {
        assert!(tokio::time::Instant::now() < deadline, "the restarted node never got its state back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alone.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_cannot_join_or_disturb_the_cluster() {
    let base = tempfile::tempdir().unwrap();
    let nodes = three(&base).await;
    let d = open_dict(&nodes).await;
    // An intruder that knows the addresses but not the key stands for election with a
    // high term again and again: nobody listens to it.
    let engine = Arc::new(fresh_engine(CustomKinds::default()));
    let mut wrong =
        ClusterConfig::new(9, SocketAddr::from(([127, 0, 0, 1], 0)), base.path().join("n9"), b"wrong".to_vec());
    wrong.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
    let intruder = ClusterNode::start(wrong, engine, CustomKinds::default(), None).await.unwrap();
    let members: BTreeMap<NodeId, String> = nodes
        .iter()
        .map(|n| (n.node.id(), n.node.peer_addr().to_string()))
        .chain([(9, intruder.peer_addr().to_string())])
        .collect();
    let _ = intruder.initialize(members).await;
    let leader = leader_of(&nodes).await;
    let term = nodes[leader].node.status().term;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last = propose(&nodes, &[set(1, d, "after", 1, Time(5_000))]).await;
    for n in &nodes {
        wait_applied(n, last).await;
        assert_eq!(n.node.status().term, term, "the intruder's votes reached node {}", n.node.id());
        assert!(!n.node.status().voters.contains_key(&9));
    }
    intruder.stop().await;
    for n in &nodes {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_leader_and_the_members() {
    let base = tempfile::tempdir().unwrap();
    let nodes = three(&base).await;
    open_dict(&nodes).await;
    let leader = leader_of(&nodes).await;
    let status = nodes[leader].node.status();
    assert_eq!(status.role, "Leader");
    assert_eq!(status.leader, Some(nodes[leader].node.id()));
    assert_eq!(status.voters.len(), 3);
    assert!(status.lag.len() >= 2, "the leader reports its followers' lag: {status:?}");
    let follower = (leader + 1) % 3;
    let error = nodes[follower].node.propose(&[Command::OpenSession { at: Time(9), secret: None }]).await.unwrap_err();
    assert!(matches!(error, ClusterError::NotLeader { leader: Some(_) }), "{error:?}");
    assert!(matches!(nodes[follower].node.read_barrier().await, Err(ClusterError::NotLeader { .. })));
    nodes[leader].node.read_barrier().await.expect("the leader may serve a linearizable read");
    for n in &nodes {
        n.node.stop().await;
    }
}
