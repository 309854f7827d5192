//! Object lifetimes are the same for every dialect: a container keeps alive what is
//! stored in it. Checked here from a native client speaking the wire protocol itself,
//! against the real binary (the Python side is checked by CPython's own suite).

use agora_proto::native::{self, Args, Kind, Op, Reply, Request, Response};
use agora_proto::reference::ObjectRef;
use agora_proto::{ErrorCode, Value, WireError};
use agora_tests::{RawConn, Server};

/// A native connection driven request by request.
struct Native {
    raw: RawConn,
    next_id: u64,
}

impl Native {
    fn connect(server: &Server) -> Native {
        let mut raw = server.raw();
        assert!(raw.handshake(&server.authkey));
        let hello = native::Hello::new("lifetimes");
        let mut body = Vec::new();
        native::encode(&hello, &mut body).unwrap();
        raw.send_frame(&body).unwrap();
        let _welcome: native::Welcome = native::decode(&raw.recv_frame().expect("welcome")).unwrap();
        Native { raw, next_id: 1 }
    }

    fn request(&mut self, op: Op) -> Result<Reply, WireError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = Vec::new();
        native::encode(&Request { id, op }, &mut body).unwrap();
        self.raw.send_frame(&body).unwrap();
        let response: Response = native::decode(&self.raw.recv_frame().expect("a response")).unwrap();
        assert_eq!(response.id, id);
        response.result
    }

    fn open(&mut self, kind: Kind, name: Option<&str>, args: Vec<Value>) -> u64 {
        match self.request(Op::Open { kind, name: name.map(str::to_owned), args: Args::positional(args) }) {
            Ok(Reply::Opened { object, .. }) => object,
            other => panic!("open: {other:?}"),
        }
    }

    fn call(&mut self, object: u64, method: &str, args: Vec<Value>) -> Result<Reply, WireError> {
        self.request(Op::Call { object, method: method.into(), args: Args::positional(args) })
    }

    fn release(&mut self, object: u64) {
        assert_eq!(self.request(Op::Release { object }), Ok(Reply::Done));
    }

    /// Whether object `id` is alive: another handle on it can be taken.
    fn alive(&mut self, id: u64) -> bool {
        match self.request(Op::Attach { object: id }) {
            Ok(Reply::Opened { .. }) => {
                self.release(id);
                true
            }
            Err(e) if e.code == ErrorCode::NoSuchObject => false,
            other => panic!("attach: {other:?}"),
        }
    }
}

#[test]
fn a_reference_stored_in_a_dict_keeps_its_object_alive_until_the_dict_goes() {
    let server = Server::start();
    let mut a = Native::connect(&server);
    let dict = a.open(Kind::Dict, Some("holder"), vec![]);
    let list = a.open(Kind::List, None, vec![]);
    a.call(list, "append", vec![Value::Int(42)]).unwrap();
    let stored = ObjectRef::new(list, "list").to_value();
    a.call(dict, "__setitem__", vec![Value::Str("inner".into()), stored]).unwrap();
    // The client gives up its own handle, and even its session.
    a.release(list);
    drop(a);
    let mut b = Native::connect(&server);
    let dict = b.open(Kind::Dict, Some("holder"), vec![]);
    let Ok(Reply::Value(found)) = b.call(dict, "__getitem__", vec![Value::Str("inner".into())]) else { panic!() };
    let found = ObjectRef::from_value(&found).expect("a reference comes back");
    assert_eq!(found.id, list);
    assert!(b.alive(list), "the dict keeps the list alive");
    assert_eq!(b.request(Op::Attach { object: list }).map(|_| ()), Ok(()));
    assert_eq!(b.call(list, "__getitem__", vec![Value::Int(0)]), Ok(Reply::Value(Value::Int(42))));
    b.release(list);
    // Deleting the dict lets the list go.
    assert_eq!(b.request(Op::Delete { name: "holder".into() }), Ok(Reply::Done));
    assert!(!b.alive(list), "freed with the dict that held it");
}

#[test]
fn a_condition_keeps_its_lock_alive_and_drives_it() {
    let server = Server::start();
    let mut a = Native::connect(&server);
    let lock = a.open(Kind::Lock, None, vec![]);
    let cond = a.open(Kind::Condition, None, vec![ObjectRef::new(lock, "Lock").to_value()]);
    a.release(lock);
    assert!(a.alive(lock), "the condition keeps its lock alive");
    assert_eq!(a.call(cond, "acquire", vec![]), Ok(Reply::Value(Value::Bool(true))));
    // The condition's acquire took the shared lock itself.
    let mut b = Native::connect(&server);
    b.request(Op::Attach { object: lock }).unwrap();
    assert_eq!(b.call(lock, "locked", vec![]), Ok(Reply::Value(Value::Bool(true))));
    assert_eq!(a.call(cond, "release", vec![]), Ok(Reply::Value(Value::None)));
    assert_eq!(b.call(lock, "locked", vec![]), Ok(Reply::Value(Value::Bool(false))));
    b.release(lock);
    a.release(cond);
    assert!(!b.alive(lock), "freed with its condition");
}

#[test]
fn a_condition_on_something_that_is_not_a_lock_is_refused() {
    let server = Server::start();
    let mut a = Native::connect(&server);
    let dict = a.open(Kind::Dict, None, vec![]);
    let err = a
        .request(Op::Open {
            kind: Kind::Condition,
            name: None,
            args: Args::positional(vec![ObjectRef::new(dict, "dict").to_value()]),
        })
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (ErrorCode::Unsupported, "agora's Condition works with a Lock or an RLock, not a dict")
    );
    let err = a
        .request(Op::Open {
            kind: Kind::Condition,
            name: None,
            args: Args::positional(vec![ObjectRef::new(0xdead, "Lock").to_value()]),
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchObject);
}

#[test]
fn a_call_after_the_last_handle_went_back_finds_no_object() {
    // The server remembers the objects behind a connection's handles between its calls:
    // what it remembers must follow every handle given back.
    let server = Server::start();
    let mut a = Native::connect(&server);
    let dict = a.open(Kind::Dict, Some("kept"), vec![]);
    assert_eq!(a.call(dict, "__setitem__", vec![Value::Int(1), Value::Int(2)]), Ok(Reply::Value(Value::None)));
    // Held twice, given back once: still reachable.
    assert!(matches!(a.request(Op::Attach { object: dict }), Ok(Reply::Opened { .. })));
    a.release(dict);
    assert_eq!(a.call(dict, "__getitem__", vec![Value::Int(1)]), Ok(Reply::Value(Value::Int(2))));
    // Given back for good: the named object lives on, but this session holds no handle.
    a.release(dict);
    let err = a.call(dict, "__getitem__", vec![Value::Int(1)]).unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSuchObject, "{err:?}");
    // Opened again, it is found again, with what it held.
    let again = a.open(Kind::Dict, Some("kept"), vec![]);
    assert_eq!(again, dict);
    assert_eq!(a.call(dict, "__getitem__", vec![Value::Int(1)]), Ok(Reply::Value(Value::Int(2))));
}
