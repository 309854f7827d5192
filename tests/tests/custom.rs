//! Custom kinds: a Rust type registered by the embedding program, reached from Rust
//! through the generic proxy and from CPython through `BaseManager.register` and
//! AutoProxy.

use std::process::Command;

use agora::EmbeddedManager;
use agora_client::proto::native::Kind;
use agora_client::proto::{Value, WireError};
use agora_client::Error;
use agora_server::config::Exposure;
use agora_server::custom::{CustomKind, CustomObject};

/// A counter that counts on the server.
struct Counter {
    n: i64,
}

impl CustomObject for Counter {
    fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, WireError> {
        match method {
            "incr" => {
                let by = match args.as_slice() {
                    [] => 1,
                    [by] => by.as_index().ok_or_else(|| WireError::type_error("incr() takes an int"))?,
                    _ => return Err(WireError::type_error("incr() takes at most 1 argument")),
                };
                self.n += by;
                Ok(Value::Int(self.n))
            }
            "get" => Ok(Value::Int(self.n)),
            "reset" => {
                self.n = 0;
                Ok(Value::None)
            }
            _ => unreachable!("only registered methods reach the object"),
        }
    }

    fn snapshot(&self) -> Value {
        Value::Int(self.n)
    }

    fn repr(&self) -> Option<String> {
        Some(format!("Counter({})", self.n))
    }
}

fn counter_kind() -> CustomKind {
    CustomKind::new("Counter", &["incr", "get", "reset"], |args: Vec<Value>| match args.as_slice() {
        [] => Ok(Counter { n: 0 }),
        [start] => Ok(Counter { n: start.as_index().ok_or_else(|| WireError::type_error("Counter(start: int)"))? }),
        _ => Err(WireError::type_error("Counter() takes at most 1 argument")),
    })
}

fn hits_exposure() -> Exposure {
    Exposure { typeid: "get_hits".into(), kind: Kind::Other("Counter".into()), name: "hits".into() }
}

#[tokio::test]
async fn a_custom_kind_from_rust() {
    let manager = EmbeddedManager::builder().register(counter_kind()).start().await.unwrap();

    let hits = manager.object("Counter", "hits", (10,)).await.unwrap();
    assert_eq!(hits.typeid(), "Counter");
    assert_eq!(hits.call("incr", (5,)).await.unwrap(), Value::Int(15));
    assert_eq!(hits.call_as::<i64, _>("incr", ()).await.unwrap(), 16);
    let again = manager.object("Counter", "hits", (999,)).await.unwrap();
    assert_eq!(again.id(), hits.id(), "get-or-create: the constructor runs once");
    assert_eq!(again.call_as::<i64, _>("get", ()).await.unwrap(), 16);

    let anonymous = manager.new_object("Counter", ()).await.unwrap();
    assert_eq!(anonymous.call_as::<i64, _>("incr", (2,)).await.unwrap(), 2);

    // Errors travel like any other kind's.
    assert!(
        matches!(hits.call("frobnicate", ()).await, Err(Error::NoSuchMethod(m)) if m.contains("'Counter' object has no method 'frobnicate'"))
    );
    assert!(matches!(hits.call("incr", ("x",)).await, Err(Error::TypeMismatch(_))));
    assert!(
        matches!(manager.new_object("Counter", ("x",)).await, Err(Error::TypeMismatch(m)) if m.contains("Counter(start: int)"))
    );
    assert!(matches!(manager.new_object("Teapot", ()).await, Err(Error::Unsupported(m)) if m.contains("Teapot")));
    manager.dict::<String, i64>("scores").await.unwrap();
    assert!(matches!(manager.object("Counter", "scores", ()).await, Err(Error::WrongKind(_))));

    // The operator's views know the kind.
    let listed = manager.list_named().await.unwrap();
    assert!(listed.iter().any(|o| o.name == "hits" && o.kind.as_str() == "Counter"), "{listed:?}");
    assert_eq!(manager.snapshot("hits").await.unwrap(), Value::Int(16));
    let stats = manager.stats().await.unwrap();
    assert!(stats.objects_by_kind.contains(&("Counter".to_owned(), 2)), "{:?}", stats.objects_by_kind);

    // The generic proxy reaches built-in kinds by their Python method names too.
    let scores = manager.object("dict", "scores", ()).await.unwrap();
    scores.call("__setitem__", ("alice", 3)).await.unwrap();
    assert_eq!(scores.call_as::<i64, _>("__getitem__", ("alice",)).await.unwrap(), 3);
    manager.shutdown().await;
}

#[test]
fn a_custom_kind_from_blocking_rust() {
    let manager = EmbeddedManager::builder().register(counter_kind()).start_blocking().unwrap();
    let c = manager.new_object("Counter", (1,)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    c.call("incr", ()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.call_as::<i64, _>("get", ()).unwrap(), 401, "each call is atomic on the server");
    manager.shutdown();
}

const PYTHON_CLIENT: &str = r#"
import os
from multiprocessing.managers import BaseManager

class Manager(BaseManager):
    pass

Manager.register("Counter")
Manager.register("get_hits")

address = os.environ["AGORA_ADDRESS"]
if address.startswith("unix:"):
    address = address[len("unix:"):]
else:
    host, port = address.rsplit(":", 1)
    address = (host, int(port))
m = Manager(address=address, authkey=os.environ["AGORA_AUTHKEY"].encode())
m.connect()

c = m.Counter(10)
print("incr", c.incr(5))
print("incr", c.incr())
print("get", c.get())
print("str", str(c))
print("value", c._getvalue())
try:
    c.incr(by=2)
except TypeError as e:
    print("TypeError", e)
try:
    c.incr("x")
except TypeError as e:
    print("TypeError", e)
try:
    m.Counter("x")
except Exception as e:  # CPython's manager reports a failed create as RemoteError
    print("create failed", type(e).__name__, "Counter(start: int)" in str(e))

hits = m.get_hits()
print("hits", hits.incr(100))
"#;

fn python3() -> Option<&'static str> {
    let ok = Command::new("python3").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    ok.then_some("python3")
}

#[tokio::test]
async fn a_custom_kind_from_cpython_through_autoproxy() {
    let Some(python) = python3() else {
        eprintln!("python3 not found; skipping the CPython half of the custom-kind test");
        return;
    };
    for tcp in [false, true] {
        let mut builder = EmbeddedManager::builder().register(counter_kind()).expose(hits_exposure());
        if tcp {
            builder = builder.tcp();
        }
        let manager = builder.start().await.unwrap();
        let hits = manager.object("Counter", "hits", (1,)).await.unwrap();

        let mut command = manager.command(python);
        command.args(["-c", PYTHON_CLIENT]);
        let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines,
            [
                "incr 15",
                "incr 16",
                "get 16",
                "str Counter(16)",
                "value 16",
                "TypeError incr() got an unexpected keyword argument 'by'",
                "TypeError incr() takes an int",
                "create failed RemoteError True",
                "hits 101",
            ],
            "over {}",
            if tcp { "TCP" } else { "a Unix socket" }
        );
        // The Python client's increments landed on the object Rust holds.
        assert_eq!(hits.call_as::<i64, _>("get", ()).await.unwrap(), 101);
        manager.shutdown().await;
    }
}
