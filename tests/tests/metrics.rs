//! The Prometheus endpoint: scraped over HTTP, parsed as Prometheus text, and checked
//! to move with the requests it counts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use agora::EmbeddedManager;
use agora_client::Error;
use agora_tests::{Server, ServerOptions};

/// One HTTP/1.1 exchange; returns the status line, the headers and the body.
fn http(address: &str, request: &str) -> (String, String, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// A parsed exposition: each sample as `name{labels}` → value, and each family's type.
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn value(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| panic!("no series {series}"))
    }

    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `key="value",…` (with Prometheus escapes); panics on anything else.
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(is_name(key), "bad label name {key:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// Checks every line of a Prometheus text exposition and parses its samples.
fn parse(body: &str) -> Exposition {
    let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
    let mut helped = BTreeSet::new();
    for line in body.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(is_name(name), "bad metric name in {line:?}");
            match keyword {
                "HELP" => assert!(helped.insert(name.to_owned()) && !rest.is_empty(), "one HELP per family: {line:?}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest), "{line:?}");
                    assert!(types.insert(name.to_owned(), rest.to_owned()).is_none(), "one TYPE per family: {line:?}");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                parse_labels(labels, line);
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| types.get(*base).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE line: {line:?}");
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "counters end in _total: {line:?}");
        }
        assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series {series}");
    }
    Exposition { samples, types }
}

fn scrape(address: &str) -> Exposition {
    let (status, headers, body) = http(address, "GET /metrics HTTP/1.1\r\nHost: agora\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4"), "{headers}");
    assert!(headers.contains(&format!("Content-Length: {}", body.len())), "{headers}");
    parse(&body)
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move_with_requests() {
    let manager =
        EmbeddedManager::builder().metrics("127.0.0.1:0".parse().unwrap()).start().await.expect("start with metrics");
    let endpoint = manager.metrics_address().expect("metrics address").to_string();

    let scores = manager.dict::<String, i64>("scores").await.unwrap();
    scores.insert(&"alice".into(), &1).await.unwrap();
    let before = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || scrape(&endpoint)
    })
    .await
    .unwrap();
    for family in [
        "agora_uptime_seconds",
        "agora_connections_accepted_total",
        "agora_connections_refused_total",
        "agora_sessions",
        "agora_requests_total",
        "agora_python_busy_poll_hits_total",
        "agora_python_busy_poll_misses_total",
        "agora_python_busy_poll_seconds_total",
        "agora_native_busy_poll_hits_total",
        "agora_native_busy_poll_misses_total",
        "agora_native_busy_poll_seconds_total",
        "agora_python_moves_to_workers_total",
        "agora_python_moves_to_threads_total",
        "agora_objects",
        "agora_named_objects",
        "agora_waiters",
        "agora_calls_total",
        "agora_call_errors_total",
        "agora_calls_parked_total",
        "agora_errors_total",
        "agora_call_duration_seconds",
        "agora_wait_duration_seconds",
        "agora_resident_memory_bytes",
        "agora_build_info",
    ] {
        assert!(before.types.contains_key(family), "missing {family}");
    }
    assert_eq!(before.types["agora_call_duration_seconds"], "histogram");
    assert_eq!(before.value("agora_sessions"), 1.0);
    assert_eq!(before.value(r#"agora_objects{kind="dict"}"#), 1.0);
    let setitem = r#"agora_calls_total{kind="dict",method="__setitem__"}"#;
    assert_eq!(before.value(setitem), 1.0);

    // More calls, a failing one, and a call that blocks until a put arrives.
    for i in 0..5 {
        scores.insert(&"bob".into(), &i).await.unwrap();
    }
    let missing = manager.new_list::<i64>(&[]).await.unwrap();
    assert!(matches!(missing.pop_at(3).await, Err(Error::IndexOutOfRange(_))));
    let queue = manager.queue::<i64>("jobs", 0).await.unwrap();
    let getter = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.get().await })
    };
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    let waiting = loop {
        assert!(std::time::Instant::now() < deadline, "the blocked get never showed as a waiter");
        let e = tokio::task::spawn_blocking({
            let endpoint = endpoint.clone();
            move || scrape(&endpoint)
        })
        .await
        .unwrap();
        if e.get(r#"agora_waiters{kind="Queue"}"#) == Some(1.0) {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(waiting.value(r#"agora_calls_parked_total{kind="Queue",method="get"}"#), 1.0);
    queue.put(&7).await.unwrap();
    assert_eq!(getter.await.unwrap().unwrap(), 7);

    let after = tokio::task::spawn_blocking(move || scrape(&endpoint)).await.unwrap();
    assert_eq!(after.value(setitem), 6.0, "counters increase with requests");
    assert!(after.value("agora_requests_total") > before.value("agora_requests_total"));
    assert_eq!(after.value(r#"agora_call_errors_total{kind="list",method="pop"}"#), 1.0);
    assert_eq!(after.value(r#"agora_errors_total{kind="list",code="IndexError"}"#), 1.0);
    assert_eq!(after.value(r#"agora_waiters{kind="Queue"}"#), 0.0);
    assert_eq!(after.value(r#"agora_wait_duration_seconds_count{kind="Queue"}"#), 1.0);
    let count = after.value(r#"agora_call_duration_seconds_count{kind="dict",method="__setitem__"}"#);
    let inf = after.value(r#"agora_call_duration_seconds_bucket{kind="dict",method="__setitem__",le="+Inf"}"#);
    assert_eq!((count, inf), (6.0, 6.0), "the +Inf bucket holds every observation");
    manager.shutdown().await;
}

#[test]
fn only_get_metrics_is_served() {
    let manager = EmbeddedManager::builder()
        .metrics("127.0.0.1:0".parse().unwrap())
        .start_blocking()
        .expect("start with metrics");
    let endpoint = manager.metrics_address().unwrap().to_string();
    let (status, _, body) = http(&endpoint, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(body.contains("/metrics"));
    let (status, headers, _) = http(&endpoint, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET, HEAD"));
    let (status, headers, body) = http(&endpoint, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty() && headers.contains("Content-Length: "), "HEAD: headers only");
    let (status, _, _) = http(&endpoint, "garbage\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let (status, _, _) = http(&endpoint, "GET /metrics?format=text HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "a query string is ignored");
    manager.shutdown();
}

#[tokio::test]
async fn agora_serve_metrics_flag() {
    let server = Server::start_with(ServerOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into()],
        ..Default::default()
    });
    let endpoint = server.metrics_endpoint();
    let m = server.client().await;
    m.list::<u8>("l").await.unwrap().push(&1).await.unwrap();
    let e = tokio::task::spawn_blocking(move || scrape(&endpoint)).await.unwrap();
    assert_eq!(e.value(r#"agora_calls_total{kind="list",method="append"}"#), 1.0);
    assert_eq!(e.value("agora_sessions"), 1.0);
}

/// With a data dir the log and snapshots are measured; without one, `agora_durable` says so.
#[tokio::test]
async fn durability_metrics_follow_the_log_and_snapshots() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("state");
    let server = Server::start_with(ServerOptions {
        args: vec![
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--fsync".into(),
            "always".into(),
        ],
        ..Default::default()
    });
    let endpoint = server.metrics_endpoint();
    let m = server.client().await;
    let list = m.list::<u8>("l").await.unwrap();
    for i in 0..10 {
        list.push(&i).await.unwrap();
    }
    let scrape_now = |endpoint: String| tokio::task::spawn_blocking(move || scrape(&endpoint));
    let before = scrape_now(endpoint.clone()).await.unwrap();
    assert_eq!(before.value("agora_durable"), 1.0);
    assert!(before.value("agora_log_bytes") > 0.0);
    assert!(before.value("agora_log_records_appended_total") >= 12.0, "open session, open, 10 appends");
    assert_eq!(before.value("agora_log_refusing_changes"), 0.0);
    assert_eq!(before.value("agora_snapshot_last_record"), 0.0, "a new directory starts with snapshot 0");
    let saved = m.save_snapshot().await.unwrap();
    let after = scrape_now(endpoint).await.unwrap();
    assert_eq!(after.value("agora_snapshot_last_record"), saved.lsn as f64);
    assert_eq!(after.value("agora_snapshot_bytes"), saved.bytes as f64);
    assert!(after.value("agora_log_bytes_since_snapshot") < before.value("agora_log_bytes_since_snapshot"));

    let memory = Server::start_with(ServerOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into()],
        ..Default::default()
    });
    let endpoint = memory.metrics_endpoint();
    let e = scrape_now(endpoint).await.unwrap();
    assert_eq!(e.value("agora_durable"), 0.0);
    assert_eq!(e.get("agora_log_bytes"), None);
}

/// The memory in use and the limit are gauges; refusals count.
#[tokio::test]
async fn memory_metrics_show_the_limit() {
    let server = Server::start_with(ServerOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into(), "--max-memory".into(), "64MiB".into()],
        ..Default::default()
    });
    let endpoint = server.metrics_endpoint();
    let e = tokio::task::spawn_blocking(move || scrape(&endpoint)).await.unwrap();
    assert_eq!(e.value("agora_memory_limit_bytes"), (64 << 20) as f64);
    let in_use = e.value("agora_memory_in_use_bytes");
    assert!(in_use > 0.0 && in_use < (64 << 20) as f64, "{in_use}");
    assert_eq!(e.value("agora_memory_refused_total"), 0.0);
    assert!(e.get("agora_memory_returned_bytes_total").is_some());
}

/// A big dict deleted is handed to the reclaim thread, which frees it: both counters
/// move, and the done one catches up.
#[tokio::test]
async fn reclaim_metrics_count_what_the_thread_was_handed_and_did() {
    let server = Server::start_with(ServerOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into()],
        ..Default::default()
    });
    let endpoint = server.metrics_endpoint();
    let scraped = || {
        let endpoint = endpoint.clone();
        async move { tokio::task::spawn_blocking(move || scrape(&endpoint)).await.unwrap() }
    };
    let before = scraped().await;
    let handed = before.value("agora_reclaim_handed_over_total");
    assert!(before.value("agora_reclaim_done_total") <= handed);
    assert_eq!(before.types.get("agora_reclaim_done_total").map(String::as_str), Some("counter"));

    let m = server.client().await;
    let big = m.dict::<String, i64>("big").await.unwrap();
    let keys: Vec<String> = (0..40_000).map(|i| format!("k{i}")).collect();
    for chunk in keys.chunks(10_000) {
        big.update(chunk.iter().map(|k| (k, &1))).await.unwrap();
    }
    // Its handle given back first: until then this session keeps the object alive.
    drop(big);
    m.delete("big").await.unwrap();
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    loop {
        let e = scraped().await;
        let (now_handed, done) = (e.value("agora_reclaim_handed_over_total"), e.value("agora_reclaim_done_total"));
        assert!(done <= now_handed, "done {done} > handed over {now_handed}");
        if now_handed > handed && done == now_handed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "handed over {now_handed} (from {handed}), done {done}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per named object: holds, waiters and the age of the oldest hold; anonymous objects
/// and kinds that cannot be held add no series.
#[tokio::test]
async fn held_locks_and_leases_show_per_named_object() {
    let server = Server::start_with(ServerOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into()],
        ..Default::default()
    });
    let endpoint = server.metrics_endpoint();
    let m = server.client().await;
    let guard = m.lock("L").await.unwrap().acquire().await.unwrap();
    let other = server.client().await;
    let lock = other.lock("L").await.unwrap();
    let waiting = tokio::spawn(async move { lock.acquire().await.map(drop) });
    let q = m.queue::<u8>("jobs", 0).await.unwrap();
    q.put(&1).await.unwrap();
    let leased = q.get_leased(Duration::from_secs(600)).await.unwrap();
    m.dict::<u8, u8>("d").await.unwrap();
    let _anonymous = m.new_lock().await.unwrap().acquire().await.unwrap();
    let deadline = std::time::Instant::now() + agora_tests::HANG_GUARD;
    let e = loop {
        let endpoint = endpoint.clone();
        let e = tokio::task::spawn_blocking(move || scrape(&endpoint)).await.unwrap();
        if e.get(r#"agora_object_waiters{kind="Lock",name="L"}"#) == Some(1.0) {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "the waiting acquire never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(e.value(r#"agora_object_holds{kind="Lock",name="L"}"#), 1.0);
    assert!(e.value(r#"agora_object_oldest_hold_seconds{kind="Lock",name="L"}"#) >= 0.0);
    assert_eq!(e.value(r#"agora_object_holds{kind="Queue",name="jobs"}"#), 1.0);
    assert_eq!(e.value(r#"agora_object_waiters{kind="Queue",name="jobs"}"#), 0.0);
    assert_eq!(e.get(r#"agora_object_holds{kind="dict",name="d"}"#), None, "a dict cannot be held");
    let per_object = e.samples.keys().filter(|k| k.starts_with("agora_object_holds{")).count();
    assert_eq!(per_object, 2, "named objects only");
    assert_eq!(e.value("agora_object_series_dropped"), 0.0);
    guard.release().await.unwrap();
    tokio::time::timeout(agora_tests::HANG_GUARD, waiting).await.unwrap().unwrap().unwrap();
    leased.ack().await.unwrap();
}

/// A cluster node reports its role, term and indexes; the leader reports each member's
/// lag.
#[tokio::test]
async fn cluster_metrics_show_the_role_and_the_lag() {
    let cluster = tokio::task::spawn_blocking(|| {
        agora_tests::cluster::Cluster::start_with(3, vec!["--metrics".into(), "127.0.0.1:0".into()])
    })
    .await
    .unwrap();
    let leader = cluster.wait_for_leader();
    for i in 0..cluster.len() {
        let endpoint = cluster.node(i).expect("running").metrics_endpoint();
        let e = tokio::task::spawn_blocking(move || scrape(&endpoint)).await.unwrap();
        assert_eq!(e.value("agora_cluster_leader"), if i == leader { 1.0 } else { 0.0 }, "node {}", i + 1);
        assert!(e.value("agora_cluster_term") >= 1.0);
        assert!(e.value("agora_cluster_last_applied_index") >= 1.0);
        assert_eq!(e.types.get("agora_cluster_term").map(String::as_str), Some("gauge"));
        if i == leader {
            for node in 1..=3 {
                assert!(e.get(&format!("agora_cluster_member_lag_entries{{node=\"{node}\"}}")).is_some());
            }
        }
    }
}
