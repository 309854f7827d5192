//! A manager given several addresses of one cluster (`Manager::connect_any`): it
//! connects to the first that works, reconnects to another when the node it is
//! connected to dies, and, when none works, says why for every address.
//!
//! The servers here are independent `agora serve` processes with the same authkey,
//! each with its own state (not a cluster): what is tested is which server the
//! client talks to, not replication.

use std::time::{Duration, Instant};

use agora_client::{Address, Error, Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, AUTHKEY, HANG_GUARD};

async fn guarded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future).await.unwrap_or_else(|_| panic!("hang guard: {what}"))
}

/// Runs blocking work (starting or killing a server) from a multi-thread test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Waits until `m` has seen its connection end (see tests/reconnect.rs: a call made
/// before that would be in flight and fail with `ConnectionLost`).
async fn lost(m: &Manager) {
    guarded("the client notices the server is gone", async {
        while m.connection_error().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A TCP address nothing listens on: a port the OS handed out, then closed again.
fn refusing_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = listener.local_addr().expect("its address").to_string();
    drop(listener);
    address
}

fn parse(address: &str) -> Address {
    address.parse().expect("a valid address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_address_that_works_is_used() {
    let server = blocking(Server::start);
    let dead = refusing_address();
    let m = guarded(
        "connect_any",
        Manager::connect_any([parse(&dead), parse(&server.address)], AUTHKEY, ManagerOptions::new()),
    )
    .await
    .expect("the second address works");
    assert_eq!(m.current_address(), parse(&server.address));
    assert_eq!(m.addresses(), [parse(&dead), parse(&server.address)]);
    let scores = m.dict::<String, i64>("scores").await.unwrap();
    scores.insert(&"alice".into(), &3).await.unwrap();
    assert_eq!(scores.get(&"alice".into()).await.unwrap(), Some(3));
    m.ping().await.unwrap();

    // A node that refuses the authkey is passed over too.
    let other_key = blocking(|| {
        Server::start_with(ServerOptions {
            env: vec![("AGORA_AUTHKEY".into(), "another-key".into())],
            ..Default::default()
        })
    });
    let m = guarded(
        "connect_any past a wrong key",
        Manager::connect_any([parse(&other_key.address), parse(&server.address)], AUTHKEY, ManagerOptions::new()),
    )
    .await
    .expect("the second address works");
    assert_eq!(m.current_address(), parse(&server.address));
    assert_eq!(m.dict::<String, i64>("scores").await.unwrap().get(&"alice".into()).await.unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_the_next() {
    let mut a = blocking(Server::start);
    let b = blocking(Server::start);
    // Each server has its own dict "d": B's says where it lives.
    let on_b = b.client().await;
    on_b.dict::<String, String>("d").await.unwrap().insert(&"server".into(), &"B".into()).await.unwrap();

    let m = guarded(
        "connect_any",
        Manager::connect_any([parse(&a.address), parse(&b.address)], AUTHKEY, ManagerOptions::new()),
    )
    .await
    .expect("connect to A");
    assert_eq!(m.current_address(), parse(&a.address), "the first address, in order");
    let d = m.dict::<String, String>("d").await.unwrap();
    d.insert(&"server".into(), &"A".into()).await.unwrap();
    assert_eq!(d.get(&"server".into()).await.unwrap().as_deref(), Some("A"));
    let session_on_a = m.session_id();

    blocking(|| a.kill9());
    lost(&m).await;

    // The next call reconnects, to B, and runs there.
    guarded("ping after A died", m.ping()).await.expect("served by B");
    assert_eq!(m.current_address(), parse(&b.address), "reconnected to the other node");
    assert!(m.connection_error().is_none());
    assert_ne!(m.session_id(), session_on_a, "a new session");
    let fresh = guarded("open on B", m.dict::<String, String>("d")).await.unwrap();
    assert_eq!(fresh.get(&"server".into()).await.unwrap().as_deref(), Some("B"), "B's own state");
    assert_eq!(on_b.stats().await.unwrap().sessions, 2, "the manager's new session is on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_address_works_the_error_names_every_one() {
    let (first, second) = (refusing_address(), refusing_address());
    let err = guarded(
        "connect_any to dead addresses",
        Manager::connect_any([parse(&first), parse(&second)], AUTHKEY, ManagerOptions::new()),
    )
    .await
    .unwrap_err();
    match &err {
        Error::ConnectAny { failures } => {
            let tried: Vec<&str> = failures.iter().map(|(address, _)| address.as_str()).collect();
            assert_eq!(tried, [first.as_str(), second.as_str()], "every address, in order");
            assert!(failures.iter().all(|(_, e)| matches!(e, Error::Connect { .. })), "{failures:?}");
        }
        other => panic!("expected ConnectAny, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.starts_with(&format!("cannot connect to any of {first}, {second}: {first}: ")), "{message}");
    assert!(message.contains(&format!("; {second}: ")), "{message}");

    // One address: its own error, as ever.
    let err = Manager::connect_any([parse(&first)], AUTHKEY, ManagerOptions::new()).await.unwrap_err();
    assert!(matches!(&err, Error::Connect { address, .. } if *address == first), "{err:?}");
    let empty = Manager::connect_any(Vec::<Address>::new(), AUTHKEY, ManagerOptions::new()).await.unwrap_err();
    assert!(matches!(empty, Error::Connect { .. }), "{empty:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_whose_every_node_died_reports_them_all_unreachable() {
    let mut a = blocking(Server::start);
    let dead = refusing_address();
    let deadline = Duration::from_secs(1);
    let options = ManagerOptions::new().reconnect_deadline(deadline);
    let m = guarded("connect_any", Manager::connect_any([parse(&a.address), parse(&dead)], AUTHKEY, options))
        .await
        .expect("connect to A");
    blocking(|| a.kill9());
    lost(&m).await;

    let started = Instant::now();
    let err = guarded("ping while every node is down", m.ping()).await.unwrap_err();
    match &err {
        Error::Unreachable { address, last_error, .. } => {
            assert_eq!(address, &format!("{}, {dead}", a.address), "names every address");
            match &**last_error {
                Error::ConnectAny { failures } => {
                    let tried: Vec<&str> = failures.iter().map(|(address, _)| address.as_str()).collect();
                    assert_eq!(tried, [dead.as_str(), a.address.as_str()], "starting after the lost address");
                }
                other => panic!("expected ConnectAny as the last error, got {other:?}"),
            }
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() >= deadline, "waited for the deadline: {:?}", started.elapsed());
    assert!(matches!(m.connection_error(), Some(Error::Unreachable { .. })));
}
