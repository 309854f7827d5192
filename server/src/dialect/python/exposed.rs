//! What CPython's `SyncManager` registry says about each typeid: the `exposed` method
//! names a `create` reply carries (spec §5.1, in CPython's exact order), and which
//! names agora answers for Python clients.
//!
//! The lists are not written here: each kind declares its methods once in
//! [`agora_proto::methods`], marking those exposed to CPython ([`MethodSpec::python`]),
//! and the list of a typeid is those methods in declaration order, plus the few names
//! CPython sends that are not methods agora implements (`DICT_ITER`,
//! `ITERATOR_GENERATOR`). The tests below hold CPython's lists as a fixture.
//!
//! Typed proxies (DictProxy, ListProxy…) ignore the list; AutoProxy (Queue,
//! JoinableQueue, custom typeids) builds its methods from it, so for queues agora adds
//! its reliable-consumption methods and Python users get `q.get_leased()`, `q.ack()`,
//! `q.nack()` and `q.renew()` for free.

use std::sync::OnceLock;

use agora_proto::methods::{self, iterator, MethodSpec};
use agora_proto::native::Kind;

/// `iter(d)`: CPython's `DictProxy` lists `__iter__` among its (sorted) methods, right
/// after `__getitem__`, and the registry appends it again as the key of the proxy's
/// `_method_to_typeid_` (it returns an `Iterator` proxy), so CPython really sends it
/// twice. agora answers `__iter__` in this dialect (a snapshot of the keys as an
/// Iterator object), not as a method of the dict's table.
const DICT_ITER: &str = "__iter__";
/// The dict method [`DICT_ITER`] follows in CPython's list.
const DICT_ITER_AFTER: &str = "__getitem__";
/// The generator methods CPython's `Iterator` typeid exposes after `__next__`. agora
/// implements only `__next__`; these are listed so a CPython proxy is built as
/// CPython builds it (calling one answers that the iterator has no such method).
const ITERATOR_GENERATOR: &[&str] = &["send", "throw", "close"];

/// The exposed names for an object of `kind`, as a `create` reply lists them: the
/// kind's methods marked [`MethodSpec::python`], in declaration order
/// ([`agora_proto::methods`]), with CPython's quirks above. Empty for a custom kind
/// (whose every method is exposed). Computed once per kind.
pub fn exposed(kind: &Kind) -> &'static [&'static str] {
    const SLOTS: usize = 14;
    static LISTS: [OnceLock<Vec<&'static str>>; SLOTS] = [const { OnceLock::new() }; SLOTS];
    let slot = match kind {
        Kind::Dict => 0,
        Kind::List => 1,
        Kind::Set => 13,
        Kind::Value => 2,
        Kind::Array => 3,
        Kind::Namespace => 4,
        Kind::Queue | Kind::JoinableQueue => 5,
        Kind::Lock => 6,
        Kind::RLock => 7,
        Kind::Semaphore | Kind::BoundedSemaphore => 8,
        Kind::Condition => 9,
        Kind::Event => 10,
        Kind::Barrier => 11,
        Kind::Other(typeid) if typeid == iterator::TYPEID => 12,
        Kind::Other(_) => return &[],
    };
    LISTS[slot].get_or_init(|| compute(kind))
}

/// The exposed names of `kind`, computed from its declaration.
fn compute(kind: &Kind) -> Vec<&'static str> {
    let Some(table) = methods::table(kind) else { return Vec::new() };
    let mut names = python_names(table);
    if *kind == Kind::Dict {
        let at = names.iter().position(|n| *n == DICT_ITER_AFTER).map_or(names.len(), |i| i + 1);
        names.insert(at, DICT_ITER);
        names.push(DICT_ITER);
    } else if matches!(kind, Kind::Other(typeid) if typeid == iterator::TYPEID) {
        names.extend_from_slice(ITERATOR_GENERATOR);
    }
    names
}

/// The names of the methods of `table` exposed to CPython, in declaration order.
fn python_names(table: &'static [MethodSpec]) -> Vec<&'static str> {
    table.iter().filter(|m| m.python).map(|m| m.name).collect()
}

/// Methods a CPython client may call on `kind` beyond its exposed names, with
/// `proxy._callmethod(name, args)`. They stay out of the exposed list, which is
/// CPython's 3.8–3.13 list (the typed proxies ignore it anyway):
/// - the fenced acquire and release of the lock kinds (the fencing token of each
///   grant), which the `agora` Python package wraps (`with lock.fenced() as token`);
/// - a list's `clear` and `copy`, which CPython 3.14's `ListProxy` calls;
/// - a queue's `delayed` and `deliveries` (reliable consumption's counters).
pub fn extras(kind: &Kind) -> &'static [&'static str] {
    const FENCED: &[&str] = &["acquire_fenced", "release_fenced"];
    match kind {
        Kind::Lock | Kind::RLock | Kind::Semaphore | Kind::BoundedSemaphore | Kind::Condition => FENCED,
        Kind::List => &["clear", "copy"],
        Kind::Queue | Kind::JoinableQueue => &["delayed", "deliveries"],
        _ => &[],
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What CPython (3.13's `SyncManager`; 3.14's for `set`, which 3.13 lacks) sends
    /// for each typeid, plus agora's queue additions: the conformance fixture the
    /// declarations must reproduce byte for byte.
    fn cpython() -> Vec<(Kind, Vec<&'static str>)> {
        let queue = vec![
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
        let acquirer = vec!["acquire", "release"];
        vec![
            (Kind::Queue, queue.clone()),
            (Kind::JoinableQueue, queue),
            (Kind::Event, vec!["is_set", "set", "clear", "wait"]),
            (Kind::Lock, acquirer.clone()),
            (Kind::RLock, acquirer.clone()),
            (Kind::Semaphore, acquirer.clone()),
            (Kind::BoundedSemaphore, acquirer),
            (Kind::Condition, vec!["acquire", "release", "wait", "notify", "notify_all"]),
            (Kind::Barrier, vec!["__getattribute__", "wait", "abort", "reset"]),
            (
                Kind::List,
                vec![
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
                ],
            ),
            (
                Kind::Dict,
                vec![
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
                ],
            ),
            (
                Kind::Set,
                vec![
                    "__and__",
                    "__class_getitem__",
                    "__contains__",
                    "__iand__",
                    "__ior__",
                    "__isub__",
                    "__iter__",
                    "__ixor__",
                    "__len__",
                    "__or__",
                    "__rand__",
                    "__ror__",
                    "__rsub__",
                    "__rxor__",
                    "__sub__",
                    "__xor__",
                    "__ge__",
                    "__gt__",
                    "__le__",
                    "__lt__",
                    "add",
                    "clear",
                    "copy",
                    "difference",
                    "difference_update",
                    "discard",
                    "intersection",
                    "intersection_update",
                    "isdisjoint",
                    "issubset",
                    "issuperset",
                    "pop",
                    "remove",
                    "symmetric_difference",
                    "symmetric_difference_update",
                    "union",
                    "update",
                ],
            ),
            (Kind::Value, vec!["get", "set"]),
            (Kind::Array, vec!["__len__", "__getitem__", "__setitem__"]),
            (Kind::Namespace, vec!["__getattribute__", "__setattr__", "__delattr__"]),
            (Kind::Other(iterator::TYPEID.to_owned()), vec!["__next__", "send", "throw", "close"]),
        ]
    }

    #[test]
    fn the_exposed_lists_are_cpythons() {
        let fixture = cpython();
        for kind in Kind::BUILTIN {
            assert!(fixture.iter().any(|(k, _)| *k == kind), "no CPython list for {kind}");
        }
        for (kind, expected) in fixture {
            assert_eq!(exposed(&kind), expected.as_slice(), "{kind}");
            // Cached: the same list again.
            assert_eq!(exposed(&kind), expected.as_slice(), "{kind}");
        }
        assert!(exposed(&Kind::Other("Custom".to_owned())).is_empty());
    }

    #[test]
    fn the_extras_are_declared_methods_of_their_kinds() {
        for kind in Kind::BUILTIN {
            let table = methods::table(&kind).expect("a built-in kind has a table");
            for name in extras(&kind) {
                assert!(table.iter().any(|m| m.name == *name), "{kind} declares no '{name}'");
                assert!(!exposed(&kind).contains(name), "{kind}: '{name}' is already exposed");
            }
        }
    }

    #[test]
    fn every_exposed_name_is_a_declared_method_or_a_documented_quirk() {
        let quirks: Vec<&str> = std::iter::once(DICT_ITER).chain(ITERATOR_GENERATOR.iter().copied()).collect();
        for (kind, _) in cpython() {
            let table = methods::table(&kind).expect("a built-in kind has a table");
            let listed = exposed(&kind);
            for spec in table.iter().filter(|m| m.python) {
                assert!(listed.contains(&spec.name), "{kind}.{} is marked python but not exposed", spec.name);
            }
            for name in listed {
                let declared = table.iter().any(|m| m.name == *name && m.python);
                assert!(declared || quirks.contains(name), "{kind}: '{name}' is neither declared nor a quirk");
            }
        }
    }
}
