//! A manager's requests reach the server whole, once each, and in the order each task
//! made them, whoever writes them to the socket: a call alone on its connection is
//! written by its caller, calls made while others are in flight (and big ones) by the
//! connection's writer task, which sends all that gathered in one write. Tasks (and
//! threads, through the blocking client) sharing one manager switch between those
//! paths all the time; every item they append must arrive exactly once, each task's in
//! its order.

use std::time::Duration;

use agora_tests::{Rng, Server};

/// Tasks (or threads) appending at once.
const TASKS: u64 = 8;
/// Items each appends.
const EACH: u64 = 150;
/// The size of every seventh item: too big for its caller to write itself.
const BIG: usize = 96 * 1024;

/// `(task, i, padding)`: which task sent it, its place in the task's sequence, and
/// padding of a size [`item`] decides.
type Item = (u64, u64, String);

/// Task `task`'s item `i`: every seventh one big, the others of a random small size.
fn item(task: u64, i: u64, rng: &mut Rng) -> Item {
    let padding = if i % 7 == 3 { "b".repeat(BIG) } else { "s".repeat(rng.below(64) as usize) };
    (task, i, padding)
}

/// How long to pause after an item: often not at all (so a task is now alone on the
/// connection, now one of many).
fn pause(rng: &mut Rng) -> Option<Duration> {
    (rng.below(4) == 0).then(|| Duration::from_micros(rng.below(300)))
}

/// The list holds every item of tasks `0..TASKS` and `EACH` small items of task
/// `TASKS` (appended alone), each once, whole, and each task's in its order.
fn check(items: Vec<Item>) {
    assert_eq!(items.len() as u64, (TASKS + 1) * EACH, "every item once");
    let mut next = vec![0u64; TASKS as usize + 1];
    for (task, i, padding) in items {
        assert_eq!(i, next[task as usize], "task {task}'s items arrive in its order");
        next[task as usize] += 1;
        let whole = if task < TASKS && i % 7 == 3 {
            padding.len() == BIG && padding.bytes().all(|b| b == b'b')
        } else {
            padding.len() < 64 && padding.bytes().all(|b| b == b's')
        };
        assert!(whole, "task {task}'s item {i} arrived whole");
    }
    assert!(next.iter().all(|&n| n == EACH));
}

/// Tasks on one manager append at once, then one appends alone (every call then
/// written by its caller).
async fn every_item_arrives_once_in_order(server: &Server) {
    let manager = server.client().await;
    let list = manager.list::<Item>("writes").await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let list = manager.list::<Item>("writes").await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(task + 1);
            for i in 0..EACH {
                list.push(&item(task, i, &mut rng)).await.unwrap();
                // A pause is a sleep or, half the time, only a yield to the other tasks.
                match pause(&mut rng) {
                    Some(pause) if pause.as_micros() % 2 == 0 => tokio::time::sleep(pause).await,
                    Some(_) => tokio::task::yield_now().await,
                    None => {}
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task).await.expect("hang guard").unwrap();
    }
    for i in 0..EACH {
        list.push(&(TASKS, i, String::new())).await.unwrap();
    }
    check(list.to_vec().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_arrives_once_in_order_over_tcp() {
    every_item_arrives_once_in_order(&Server::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_arrives_once_in_order_over_a_unix_socket() {
    every_item_arrives_once_in_order(&Server::start_unix()).await;
}

/// The same through the blocking client: threads of a synchronous program, each
/// writing its own calls from its own thread while the connection's tasks run on the
/// client's runtime thread.
#[test]
fn threads_sharing_a_blocking_manager_deliver_every_item_once_in_order() {
    let server = Server::start_unix();
    let manager = agora_client::blocking::Manager::connect(&server.address, &server.authkey).unwrap();
    let list = manager.list::<Item>("writes").unwrap();
    let threads: Vec<_> = (0..TASKS)
        .map(|task| {
            let list = manager.list::<Item>("writes").unwrap();
            std::thread::spawn(move || {
                let mut rng = Rng(task + 1);
                for i in 0..EACH {
                    list.push(&item(task, i, &mut rng)).unwrap();
                    if let Some(pause) = pause(&mut rng) {
                        std::thread::sleep(pause);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for i in 0..EACH {
        list.push(&(TASKS, i, String::new())).unwrap();
    }
    check(list.to_vec().unwrap());
}
