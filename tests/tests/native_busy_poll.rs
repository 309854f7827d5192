//! `--native-busy-poll`: a worker polls a lone native client's socket for its next call
//! before it sleeps. Every call is still answered exactly once, the polls are counted,
//! and a second client on the same worker is served while the first one's are polled
//! for (the worker's other connections must not wait behind a poll).

use agora_client::{Manager, ManagerOptions};
use agora_tests::{Server, ServerOptions, HANG_GUARD};

/// One worker thread, so every connection shares the thread that polls.
fn server(poll: &str) -> Server {
    let args = ["--workers", "1", "--native-busy-poll", poll, "--metrics", "127.0.0.1:0"];
    Server::start_with(ServerOptions { args: args.map(String::from).to_vec(), ..Default::default() })
}

async fn connect(server: &Server) -> Manager {
    Manager::connect_with(&server.address, &server.authkey, ManagerOptions::new().reconnect(false)).await.unwrap()
}

#[tokio::test]
async fn a_lone_client_is_polled_for_and_every_call_is_answered() {
    const CALLS: i64 = 2_000;
    for (poll, polls) in [("1ms", true), ("0", false)] {
        let server = server(poll);
        let manager = connect(&server).await;
        let counter = manager.value::<i64>("counter", &0).await.unwrap();
        let run = async {
            for i in 1..=CALLS {
                assert_eq!(counter.add(&1).await.unwrap(), i, "each add answered once, in order");
            }
        };
        tokio::time::timeout(HANG_GUARD, run).await.expect("every call is answered");
        assert_eq!(counter.get().await.unwrap(), CALLS);
        let (hits, misses) =
            (server.metric("agora_native_busy_poll_hits_total"), server.metric("agora_native_busy_poll_misses_total"));
        let requests = server.metric("agora_requests_total");
        match polls {
            // A client that calls again at once is caught by some polls (the first
            // answers poll only once the client is seen calling alone), and a poll
            // follows an answer: no more polls than requests.
            true => assert!(hits >= 1.0 && hits + misses <= requests, "{hits} {misses} {requests}"),
            false => assert_eq!((hits, misses), (0.0, 0.0), "polling is off"),
        }
        let python = server.metric("agora_python_busy_poll_hits_total");
        assert_eq!(python, 0.0, "counted apart from CPython connections' polls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_is_served_while_a_lone_one_is_polled_for() {
    const CALLS: i64 = 1_000;
    let server = server("1ms");
    let (a, b) = (connect(&server).await, connect(&server).await);
    let counter_a = a.value::<i64>("counter", &0).await.unwrap();
    let counter_b = b.value::<i64>("counter", &0).await.unwrap();
    // A calls alone for a while, so that its answers are polled for...
    for _ in 0..CALLS {
        counter_a.add(&1).await.unwrap();
    }
    // ...then both call at once, on the one worker thread.
    let (ran_a, ran_b) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(
            tokio::spawn(async move {
                for _ in 0..CALLS {
                    counter_a.add(&1).await.unwrap();
                }
            }),
            tokio::spawn(async move {
                for _ in 0..CALLS {
                    counter_b.add(&1).await.unwrap();
                }
                counter_b
            }),
        )
    })
    .await
    .expect("neither client waits behind the other's polls for ever");
    ran_a.unwrap();
    let counter = ran_b.unwrap();
    assert_eq!(counter.get().await.unwrap(), 3 * CALLS, "every add of both clients counted once");
}
