//! The six data kinds end to end: a Rust client against the real `agora` binary,
//! over TCP and over a Unix socket.

use agora_client::{Error, Manager};
use agora_tests::Server;
use serde::{Deserialize, Serialize};

async fn exercise_every_kind(manager: &Manager) {
    // dict: insertion order, typed structs as values, atomic server-side operations
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Job {
        id: u32,
        tags: Vec<String>,
    }
    let jobs = manager.dict::<String, Job>("jobs").await.unwrap();
    let job = Job { id: 7, tags: vec!["a".into()] };
    jobs.insert(&"b".into(), &job).await.unwrap();
    jobs.insert(&"a".into(), &Job { id: 8, tags: vec![] }).await.unwrap();
    assert_eq!(jobs.get(&"b".into()).await.unwrap(), Some(job.clone()));
    assert_eq!(jobs.get(&"zz".into()).await.unwrap(), None);
    assert_eq!(jobs.keys().await.unwrap(), vec!["b".to_string(), "a".to_string()], "insertion order");
    assert_eq!(jobs.len().await.unwrap(), 2);
    assert!(jobs.contains_key(&"a".into()).await.unwrap());
    assert_eq!(jobs.remove(&"a".into()).await.unwrap().map(|j| j.id), Some(8));
    assert_eq!(jobs.remove(&"a".into()).await.unwrap(), None);

    let counts = manager.dict::<String, i64>("counts").await.unwrap();
    assert_eq!(counts.increment(&"x".into(), &5).await.unwrap(), 5);
    assert_eq!(counts.increment(&"x".into(), &-2).await.unwrap(), 3);
    assert!(!counts.compare_and_set(&"x".into(), Some(&4), &10).await.unwrap());
    assert!(counts.compare_and_set(&"x".into(), Some(&3), &10).await.unwrap());
    assert!(counts.compare_and_set(&"new".into(), None, &1).await.unwrap());
    assert!(!counts.compare_and_set(&"new".into(), None, &2).await.unwrap());
    assert_eq!(counts.items().await.unwrap(), vec![("x".into(), 10), ("new".into(), 1)]);
    assert_eq!(counts.pop_last().await.unwrap(), Some(("new".into(), 1)));

    // list
    let list = manager.new_list::<i64>(&[3, 1, 2]).await.unwrap();
    list.push(&5).await.unwrap();
    assert_eq!(list.to_vec().await.unwrap(), vec![3, 1, 2, 5]);
    list.append(&7).await.unwrap();
    assert_eq!(list.pop().await.unwrap(), Some(7), "append is push by Python's name");
    assert_eq!(list.get(-1).await.unwrap(), Some(5));
    assert_eq!(list.get(10).await.unwrap(), None);
    assert!(matches!(list.set(10, &0).await, Err(Error::IndexOutOfRange(_))));
    list.sort().await.unwrap();
    assert_eq!(list.to_vec().await.unwrap(), vec![1, 2, 3, 5]);
    assert_eq!(list.pop().await.unwrap(), Some(5));
    assert_eq!(list.position(&3).await.unwrap(), Some(2));
    assert_eq!(list.position(&42).await.unwrap(), None);
    assert_eq!(list.len().await.unwrap(), 3);

    // set: Python's member rules, set algebra on the server, named and anonymous
    let tags = manager.set::<String>("tags").await.unwrap();
    tags.add(&"red".into()).await.unwrap();
    tags.extend(&["green".to_string(), "red".to_string(), "blue".to_string()]).await.unwrap();
    assert_eq!(tags.len().await.unwrap(), 3, "duplicates collapse");
    assert!(tags.contains(&"green".into()).await.unwrap());
    assert!(!tags.contains(&"pink".into()).await.unwrap());
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let warm = ["red".to_string(), "orange".to_string()];
    assert_eq!(tags.intersection(&warm).await.unwrap(), vec!["red".to_string()]);
    assert_eq!(sorted(tags.difference(&warm).await.unwrap()), ["blue", "green"]);
    assert_eq!(sorted(tags.union(&warm).await.unwrap()), ["blue", "green", "orange", "red"]);
    assert_eq!(sorted(tags.symmetric_difference(&warm).await.unwrap()), ["blue", "green", "orange"]);
    assert!(!tags.is_disjoint(&warm).await.unwrap());
    assert!(tags.is_superset(&["red".to_string()]).await.unwrap());
    assert!(!tags.is_subset(&warm).await.unwrap());
    assert_eq!(tags.len().await.unwrap(), 3, "the algebra left the set alone");
    assert!(tags.remove(&"red".into()).await.unwrap());
    assert!(!tags.remove(&"red".into()).await.unwrap(), "already gone: KeyError becomes false");
    tags.discard(&"red".into()).await.unwrap();
    tags.symmetric_difference_update(&["blue".to_string(), "cyan".to_string()]).await.unwrap();
    assert_eq!(sorted(tags.to_vec().await.unwrap()), ["cyan", "green"]);
    tags.intersection_update(&["cyan".to_string()]).await.unwrap();
    tags.difference_update(&["cyan".to_string()]).await.unwrap();
    assert!(tags.is_empty().await.unwrap());
    assert_eq!(tags.pop().await.unwrap(), None, "pop of an empty set: KeyError becomes None");
    let again = manager.set::<String>("tags").await.unwrap();
    assert_eq!(again.id(), tags.id(), "named: get-or-create");
    // Numbers follow Python: 1 and 1.0 are one member, whatever the Rust type.
    let numbers = manager.new_set::<f64>(&[1.0, 2.5]).await.unwrap();
    let as_ints = manager.new_set::<i64>(&[1, 7]).await.unwrap();
    assert!(numbers.contains(&1.0).await.unwrap());
    assert!(as_ints.contains(&1).await.unwrap());
    assert!(numbers.is_disjoint(&[3.0]).await.unwrap());
    assert_eq!(numbers.intersection(&[1.0, 9.0]).await.unwrap(), vec![1.0]);
    assert_eq!(as_ints.pop().await.unwrap(), Some(7), "pop takes the newest member");
    // A member must be hashable in Python's sense.
    let lists = manager.new_set::<Vec<u8>>(&[]).await.unwrap();
    let refused = lists.add(&vec![1]).await.unwrap_err();
    assert!(matches!(&refused, Error::TypeMismatch(m) if m == "unhashable type: 'list'"), "{refused:?}");
    assert!(matches!(manager.new_set::<Vec<u8>>(&[vec![1]]).await, Err(Error::TypeMismatch(_))));

    // Value: get/set plus atomic add and compare-and-set
    let counter = manager.value::<i64>("counter", &10).await.unwrap();
    assert_eq!(counter.add(&5).await.unwrap(), 15);
    counter.set(&1).await.unwrap();
    assert_eq!(counter.get().await.unwrap(), 1);
    assert!(counter.compare_and_set(&1, &2).await.unwrap());
    assert!(!counter.compare_and_set(&1, &3).await.unwrap());
    assert_eq!(counter.get().await.unwrap(), 2);

    // Array: typed, fixed size, range-checked
    let arr = manager.new_array::<i32>(&[1, 2, 3]).await.unwrap();
    arr.set(0, 10).await.unwrap();
    assert_eq!(arr.to_vec().await.unwrap(), vec![10, 2, 3]);
    assert_eq!(arr.len().await.unwrap(), 3);
    assert!(matches!(arr.get(3).await, Err(Error::IndexOutOfRange(_))));
    let floats = manager.array::<f64>("floats", &[0.5]).await.unwrap();
    assert_eq!(floats.get(-1).await.unwrap(), 0.5);

    // Namespace
    let ns = manager.namespace("config").await.unwrap();
    ns.set("workers", &4u32).await.unwrap();
    assert_eq!(ns.get::<u32>("workers").await.unwrap(), Some(4));
    assert_eq!(ns.get::<u32>("missing").await.unwrap(), None);
    assert!(ns.remove("workers").await.unwrap());
    assert!(!ns.remove("workers").await.unwrap());
}

#[tokio::test]
async fn every_kind_over_tcp() {
    let server = Server::start();
    exercise_every_kind(&server.client().await).await;
}

#[tokio::test]
async fn every_kind_over_unix_socket() {
    let server = Server::start_unix();
    assert!(server.address.starts_with("unix:"));
    exercise_every_kind(&server.client().await).await;
}

#[tokio::test]
async fn named_objects_are_shared_between_clients() {
    let server = Server::start();
    let (a, b) = (server.client().await, server.client().await);
    let da = a.dict::<String, String>("shared").await.unwrap();
    da.insert(&"k".into(), &"v".into()).await.unwrap();
    let db = b.dict::<String, String>("shared").await.unwrap();
    assert_eq!(db.get(&"k".into()).await.unwrap(), Some("v".into()));
    assert_eq!(da.id(), db.id());
}

#[tokio::test]
async fn anonymous_objects_die_with_their_last_handle_and_ids_are_not_reused() {
    let server = Server::start();
    let m = server.client().await;
    let first = m.new_list::<u8>(&[1]).await.unwrap();
    let first_id = first.id();
    drop(first);
    let second = m.new_list::<u8>(&[]).await.unwrap();
    assert!(second.id() > first_id, "ids only grow");
}

/// Many calls in flight on one connection: the client reads their replies in batches
/// (many frames per read) and each caller gets its own reply, also when callers give up
/// on theirs in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_of_a_pipelined_batch_gets_its_own_reply() {
    const KEYS: i64 = 2_000;
    let server = Server::start();
    let m = server.client().await;
    let d = m.dict::<String, i64>("replies").await.unwrap();
    let pairs: Vec<(String, i64)> = (0..KEYS).map(|i| (format!("k{i}"), i)).collect();
    d.update(pairs.iter().map(|(k, v)| (k, v))).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let d = d.clone();
        calls.spawn(async move {
            let key = format!("k{i}");
            if i % 7 == 0 {
                // Gives up on its reply at once: the reply still arrives in some batch.
                let abandoned = tokio::time::timeout(std::time::Duration::ZERO, d.get(&key)).await;
                return (i, abandoned.ok().and_then(|r| r.unwrap()).unwrap_or(i));
            }
            (i, d.get(&key).await.unwrap().expect("every key is there"))
        });
    }
    let mut answered = 0;
    while let Some(joined) =
        tokio::time::timeout(std::time::Duration::from_secs(60), calls.join_next()).await.expect("hang")
    {
        let (asked, got) = joined.unwrap();
        assert_eq!(got, asked, "a caller got another call's reply");
        answered += 1;
    }
    assert_eq!(answered, KEYS);
    // The connection is still in step afterwards.
    assert_eq!(d.get(&"k42".to_owned()).await.unwrap(), Some(42));
    assert_eq!(d.len().await.unwrap(), KEYS as usize);
}

#[tokio::test]
async fn pipelined_requests_take_effect_in_order() {
    use agora_proto::native::{self, Args, Kind, Op, Reply, Request, Response};
    let server = Server::start();
    let mut raw = server.raw();
    assert!(raw.handshake(&server.authkey));
    let hello = native::Hello::new("raw");
    let encode = |msg: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        msg(&mut out);
        out
    };
    raw.send_frame(&encode(&|b| native::encode(&hello, b).unwrap())).unwrap();
    let _welcome: native::Welcome = native::decode(&raw.recv_frame().unwrap()).unwrap();
    let open =
        Request { id: 1, op: Op::Open { kind: Kind::List, name: Some("ordered".into()), args: Args::default() } };
    raw.send_frame(&encode(&|b| native::encode(&open, b).unwrap())).unwrap();
    let opened: Response = native::decode(&raw.recv_frame().unwrap()).unwrap();
    let Ok(Reply::Opened { object, .. }) = opened.result else { panic!("{opened:?}") };
    // 500 appends in a single write: the server sees them all at once.
    let mut batch = Vec::new();
    for i in 0..500u64 {
        let call = Request {
            id: 100 + i,
            op: Op::Call {
                object,
                method: "append".into(),
                args: Args::positional(vec![agora_proto::Value::Int(i as i64)]),
            },
        };
        agora_proto::frame::encode_with(&mut batch, |b| native::encode(&call, b)).unwrap();
    }
    raw.send(&batch).unwrap();
    let mut ids: Vec<u64> =
        (0..500).map(|_| native::decode::<Response>(&raw.recv_frame().unwrap()).unwrap().id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (100..600).collect::<Vec<_>>(), "one reply per request");
    let list = server.client().await.list::<u64>("ordered").await.unwrap();
    assert_eq!(list.to_vec().await.unwrap(), (0..500).collect::<Vec<_>>(), "effects in the order sent");
}

#[tokio::test]
async fn deleted_names_are_free_and_old_proxies_fail_precisely() {
    let server = Server::start();
    let m = server.client().await;
    let old = m.dict::<String, i64>("temp").await.unwrap();
    old.insert(&"a".into(), &1).await.unwrap();
    m.delete("temp").await.unwrap();
    assert!(matches!(old.len().await, Err(Error::NoSuchObject(_))));
    assert!(matches!(m.delete("temp").await, Err(Error::NoSuchName(_))));
    let fresh = m.list::<i64>("temp").await.unwrap();
    assert_eq!(fresh.len().await.unwrap(), 0, "the name can now hold another kind");
}
