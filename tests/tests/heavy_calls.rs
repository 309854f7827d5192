//! One client's long call on a big object does not freeze the others.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions};

/// On a server with one worker thread, client A sorts a list of two million items;
/// meanwhile client B's calls on another object keep being answered (before, B waited
/// for the whole sort: the worker was busy with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_does_not_freeze_other_clients() {
    const ITEMS: i64 = 2_000_000;
    let server = Server::start_with(ServerOptions { args: vec!["--workers".into(), "1".into()], ..Default::default() });
    let connect = || Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false));
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    let big = a.list::<i64>("big").await.unwrap();
    // Descending, so that sorting has work to do; built in chunks (frames stay small).
    let mut next = ITEMS;
    while next > 0 {
        let chunk: Vec<i64> = (next.saturating_sub(100_000)..next).rev().collect();
        big.extend(&chunk).await.unwrap();
        next = next.saturating_sub(100_000);
    }
    let other = b.dict::<String, i64>("other").await.unwrap();
    other.insert(&"k".to_owned(), &1).await.unwrap();

    let sorting = Arc::new(AtomicBool::new(true));
    let answered_meanwhile = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (sorting, answered) = (sorting.clone(), answered_meanwhile.clone());
        tokio::spawn(async move {
            // Give the sort a head start: it is running once its request is read.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while sorting.load(Ordering::Acquire) {
                assert_eq!(other.get(&"k".to_owned()).await.unwrap(), Some(1));
                if sorting.load(Ordering::Acquire) {
                    answered.fetch_add(1, Ordering::AcqRel);
                }
            }
        })
    };
    for _ in 0..3 {
        big.sort().await.unwrap();
        big.reverse().await.unwrap();
    }
    sorting.store(false, Ordering::Release);
    tokio::time::timeout(Duration::from_secs(60), reader).await.expect("hang").unwrap();
    assert_eq!(big.get(0).await.unwrap(), Some(ITEMS - 1));
    let answered = answered_meanwhile.load(Ordering::Acquire);
    eprintln!("{answered} of B's calls answered while A's sorts ran");
    // Between A's six calls B gets about one answer each; during them, thousands.
    assert!(answered >= 100, "only {answered} of B's calls were answered while A's sorts ran");
}
