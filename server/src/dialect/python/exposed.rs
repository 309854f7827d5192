//! What CPython's `SyncManager` registry says about each typeid: the `exposed` method
//! names a `create` reply carries (spec §5.1, in CPython's exact order), and which
//! names agora answers for Python clients.
//!
//! Typed proxies (DictProxy, ListProxy…) ignore the list; AutoProxy (Queue,
//! JoinableQueue, custom typeids) builds its methods from it, so for queues agora adds
//! its reliable-consumption methods and Python users get `q.get_leased()`, `q.ack()`,
//! `q.nack()` and `q.renew()` for free.

use agora_proto::native::Kind;

const QUEUE: &[&str] = &[
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
    "shutdown",
    "get_leased",
    "ack",
    "nack",
    "renew",
];
const EVENT: &[&str] = &["is_set", "set", "clear", "wait"];
const ACQUIRER: &[&str] = &["acquire", "release"];
const CONDITION: &[&str] = &["acquire", "release", "wait", "notify", "notify_all"];
const BARRIER: &[&str] = &["__getattribute__", "wait", "abort", "reset"];
const LIST: &[&str] = &[
    "__add__",
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__mul__",
    "__reversed__",
    "__rmul__",
    "__setitem__",
    "append",
    "count",
    "extend",
    "index",
    "insert",
    "pop",
    "remove",
    "reverse",
    "sort",
    "__imul__",
];
/// CPython really sends `__iter__` twice (the registry list plus the method_to_typeid key).
const DICT: &[&str] = &[
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__iter__",
    "__len__",
    "__setitem__",
    "clear",
    "copy",
    "get",
    "items",
    "keys",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "values",
    "__iter__",
];
const VALUE: &[&str] = &["get", "set"];
const ARRAY: &[&str] = &["__len__", "__getitem__", "__setitem__"];
const NAMESPACE: &[&str] = &["__getattribute__", "__setattr__", "__delattr__"];
const ITERATOR: &[&str] = &["__next__", "send", "throw", "close"];

/// The exposed names for an object of `kind`, as a `create` reply lists them.
pub fn exposed(kind: &Kind) -> &'static [&'static str] {
    match kind {
        Kind::Queue | Kind::JoinableQueue => QUEUE,
        Kind::Event => EVENT,
        Kind::Lock | Kind::RLock | Kind::Semaphore | Kind::BoundedSemaphore => ACQUIRER,
        Kind::Condition => CONDITION,
        Kind::Barrier => BARRIER,
        Kind::List => LIST,
        Kind::Dict => DICT,
        Kind::Value => VALUE,
        Kind::Array => ARRAY,
        Kind::Namespace => NAMESPACE,
        Kind::Other(name) if name == crate::objects::iterator::TYPEID => ITERATOR,
        Kind::Other(_) => &[],
    }
}

/// Typeids a CPython client may ask for that agora deliberately cannot serve, with why.
pub fn unsupported(typeid: &str) -> Option<&'static str> {
    match typeid {
        "Pool" | "AsyncResult" => Some(
            "agora does not run Pool: a pool executes pickled Python functions inside the server, \
             and agora never executes client code. Run a multiprocessing.Pool in your own process \
             and share its inputs and results through agora queues.",
        ),
        _ => None,
    }
}
