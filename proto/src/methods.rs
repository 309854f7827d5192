//! The methods of every built-in object kind, declared once.
//!
//! Each kind has a module here ([`dict`], [`queue`], [`lock`]…) holding one
//! [`MethodSpec`] constant per method, named after it (`queue::GET_LEASED` for
//! `get_leased`, `dict::SETITEM` for `__setitem__`), the kind's `METHODS` table listing
//! them in declaration order, and its `CONSTRUCTOR`. Everything that needs a method
//! reads it from here:
//!
//! - the server binds arguments against the table and dispatches on the names;
//! - the Python dialect computes the `exposed` list a CPython client receives for a
//!   typeid from the methods marked [`MethodSpec::python`], in table order (so each
//!   table lists CPython's methods first, in CPython's order, then agora's own);
//! - the client calls methods by their declared names (`queue::GET_LEASED.name`).
//!
//! Custom kinds (registered by an embedding program) build their [`MethodSpec`]s at
//! run time; they are not listed here.

use crate::native::Kind;

/// One method of an object kind, as Python declares it.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The method's name (`"__getitem__"`, `"append"`, `"incr"`).
    pub name: &'static str,
    /// Parameter names in order (without `self`).
    pub params: &'static [&'static str],
    /// How many leading parameters are required.
    pub required: usize,
    /// True if the method takes `**kwargs` beyond its named parameters.
    pub var_keywords: bool,
    /// True if the method takes `*args` beyond its named parameters (delivered in
    /// `Args::take_rest` on the server): the methods of custom kinds, which take any
    /// arguments.
    pub var_positional: bool,
    /// True if the method never changes the object's state (nor parks): such calls
    /// are not logged. Everything else is a mutating command.
    pub read_only: bool,
    /// True if the method keeps its arguments in the object (a container's setter, a
    /// queue's put): objects referenced in them are then kept alive by this object.
    pub stores: bool,
    /// True if the call can make the object hold more memory (it stores new data, or
    /// multiplies what it holds): once the server is at its `--max-memory`, such calls
    /// are refused. Every storing method grows, except one that only gives back an
    /// item the object handed out (a hand-off must never be lost).
    pub grows: bool,
    /// True if the method is exposed to CPython clients of this kind's typeid: it is
    /// in the `exposed` list a `create` reply carries (the names CPython's proxy for
    /// the typeid calls, plus agora's additions an `AutoProxy` picks up), in table
    /// order.
    pub python: bool,
    /// True if the call's work can grow with the object's size (it copies, lists,
    /// searches, sorts or shifts every item): on a big object the server runs it so
    /// that the worker thread's other connections are not kept waiting. Calls whose
    /// work does not depend on the object's size (a dict lookup, a queue put) run
    /// inline at any size: handing the thread over costs more than they do. (A call
    /// whose first argument is a slice is treated as scanning, whatever its method.)
    pub scans: bool,
}

impl MethodSpec {
    /// A method whose parameters are all required.
    pub const fn new(name: &'static str, params: &'static [&'static str]) -> MethodSpec {
        MethodSpec::optional(name, params, params.len())
    }

    /// A method whose first `required` parameters are required and the rest optional.
    pub const fn optional(name: &'static str, params: &'static [&'static str], required: usize) -> MethodSpec {
        MethodSpec {
            name,
            params,
            required,
            var_keywords: false,
            var_positional: false,
            read_only: false,
            stores: false,
            grows: false,
            python: false,
            scans: false,
        }
    }

    /// The same method, also taking `**kwargs` (delivered in `Args::take_keywords` on
    /// the server).
    pub const fn with_var_keywords(self) -> MethodSpec {
        MethodSpec { var_keywords: true, ..self }
    }

    /// The same method, also taking `*args` (delivered in `Args::take_rest` on the
    /// server).
    pub const fn with_var_positional(self) -> MethodSpec {
        MethodSpec { var_positional: true, ..self }
    }

    /// The same method, declared as only reading the object's state.
    pub const fn read_only(self) -> MethodSpec {
        MethodSpec { read_only: true, ..self }
    }

    /// The same method, declared as keeping its arguments in the object.
    pub const fn stores(self) -> MethodSpec {
        MethodSpec { stores: true, grows: true, ..self }
    }

    /// The same method, declared as able to grow the object without storing its
    /// arguments (`l *= n`).
    pub const fn grows(self) -> MethodSpec {
        MethodSpec { grows: true, ..self }
    }

    /// The same storing method, declared as only giving back an item the object
    /// handed out: it is never refused for memory, so the hand-off is not lost.
    pub const fn gives_back(self) -> MethodSpec {
        MethodSpec { grows: false, ..self }
    }

    /// The same method, declared as exposed to CPython clients of the kind's typeid.
    pub const fn python(self) -> MethodSpec {
        MethodSpec { python: true, ..self }
    }

    /// The same method, declared as doing work that grows with the object's size.
    pub const fn scans(self) -> MethodSpec {
        MethodSpec { scans: true, ..self }
    }
}

/// The method table of a built-in kind (the `Iterator` typeid included); `None` for a
/// custom kind.
pub fn table(kind: &Kind) -> Option<&'static [MethodSpec]> {
    Some(match kind {
        Kind::Dict => dict::METHODS,
        Kind::List => list::METHODS,
        Kind::Set => set::METHODS,
        Kind::Value => value::METHODS,
        Kind::Array => array::METHODS,
        Kind::Namespace => namespace::METHODS,
        Kind::Queue | Kind::JoinableQueue => queue::METHODS,
        Kind::Lock => lock::METHODS,
        Kind::RLock => rlock::METHODS,
        Kind::Semaphore | Kind::BoundedSemaphore => semaphore::METHODS,
        Kind::Condition => condition::METHODS,
        Kind::Event => event::METHODS,
        Kind::Barrier => barrier::METHODS,
        Kind::Other(typeid) if typeid == iterator::TYPEID => iterator::METHODS,
        Kind::Other(_) => return None,
    })
}

/// `dict`: CPython's `DictProxy` methods (without `__iter__`, which the Python dialect
/// answers itself), then agora's atomic operations.
pub mod dict {
    use super::MethodSpec;

    /// `dict(mapping_or_iterable=(), **kw)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("dict", &["iterable"], 0).with_var_keywords();

    /// `key in d`.
    pub const CONTAINS: MethodSpec = MethodSpec::new("__contains__", &["key"]).read_only().python();
    /// `del d[key]`.
    pub const DELITEM: MethodSpec = MethodSpec::new("__delitem__", &["key"]).python();
    /// `d[key]`.
    pub const GETITEM: MethodSpec = MethodSpec::new("__getitem__", &["key"]).read_only().python();
    /// `len(d)`.
    pub const LEN: MethodSpec = MethodSpec::new("__len__", &[]).read_only().python();
    /// `d[key] = value`.
    pub const SETITEM: MethodSpec = MethodSpec::new("__setitem__", &["key", "value"]).stores().python();
    /// `d.clear()`.
    pub const CLEAR: MethodSpec = MethodSpec::new("clear", &[]).python().scans();
    /// `d.copy()`.
    pub const COPY: MethodSpec = MethodSpec::new("copy", &[]).read_only().python().scans();
    /// `d.get(key, default=None)`.
    pub const GET: MethodSpec = MethodSpec::optional("get", &["key", "default"], 1).read_only().python();
    /// `d.items()`.
    pub const ITEMS: MethodSpec = MethodSpec::new("items", &[]).read_only().python().scans();
    /// `d.keys()`.
    pub const KEYS: MethodSpec = MethodSpec::new("keys", &[]).read_only().python().scans();
    /// `d.pop(key[, default])`.
    pub const POP: MethodSpec = MethodSpec::optional("pop", &["key", "default"], 1).python();
    /// `d.popitem()`.
    pub const POPITEM: MethodSpec = MethodSpec::new("popitem", &[]).python();
    /// `d.setdefault(key, default=None)`.
    pub const SETDEFAULT: MethodSpec = MethodSpec::optional("setdefault", &["key", "default"], 1).stores().python();
    /// `d.update(other=(), **kw)`.
    pub const UPDATE: MethodSpec = MethodSpec::optional("update", &["other"], 0).with_var_keywords().stores().python();
    /// `d.values()`.
    pub const VALUES: MethodSpec = MethodSpec::new("values", &[]).read_only().python().scans();
    /// agora's `incr(key, delta=1, default=0)`: adds to a number atomically.
    pub const INCR: MethodSpec = MethodSpec::optional("incr", &["key", "delta", "default"], 1).grows();
    /// agora's `compare_and_set(key, expected, new)`.
    pub const COMPARE_AND_SET: MethodSpec =
        MethodSpec::optional("compare_and_set", &["key", "expected", "new"], 1).stores();

    /// CPython's `DictProxy` methods (without `__iter__`), then agora's atomic operations.
    pub const METHODS: &[MethodSpec] = &[
        CONTAINS,
        DELITEM,
        GETITEM,
        LEN,
        SETITEM,
        CLEAR,
        COPY,
        GET,
        ITEMS,
        KEYS,
        POP,
        POPITEM,
        SETDEFAULT,
        UPDATE,
        VALUES,
        INCR,
        COMPARE_AND_SET,
    ];
}

/// `list`: CPython's `ListProxy` methods in its exposed order, then 3.14's `clear` and
/// `copy`.
pub mod list {
    use super::MethodSpec;

    /// `list(iterable=())`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("list", &["iterable"], 0);

    /// `l + value`.
    pub const ADD: MethodSpec = MethodSpec::new("__add__", &["value"]).read_only().python().scans();
    /// `key in l`.
    pub const CONTAINS: MethodSpec = MethodSpec::new("__contains__", &["key"]).read_only().python().scans();
    /// `del l[key]`.
    pub const DELITEM: MethodSpec = MethodSpec::new("__delitem__", &["key"]).python().scans();
    /// `l[index]` (an index or a slice).
    pub const GETITEM: MethodSpec = MethodSpec::new("__getitem__", &["index"]).read_only().python();
    /// `len(l)`.
    pub const LEN: MethodSpec = MethodSpec::new("__len__", &[]).read_only().python();
    /// `l * value`.
    pub const MUL: MethodSpec = MethodSpec::new("__mul__", &["value"]).read_only().python().scans();
    /// `reversed(l)`.
    pub const REVERSED: MethodSpec = MethodSpec::new("__reversed__", &[]).read_only().python().scans();
    /// `value * l`.
    pub const RMUL: MethodSpec = MethodSpec::new("__rmul__", &["value"]).read_only().python().scans();
    /// `l[key] = value`.
    pub const SETITEM: MethodSpec = MethodSpec::new("__setitem__", &["key", "value"]).stores().python();
    /// `l.append(object)`.
    pub const APPEND: MethodSpec = MethodSpec::new("append", &["object"]).stores().python();
    /// `l.count(value)`.
    pub const COUNT: MethodSpec = MethodSpec::new("count", &["value"]).read_only().python().scans();
    /// `l.extend(iterable)`.
    pub const EXTEND: MethodSpec = MethodSpec::new("extend", &["iterable"]).stores().python();
    /// `l.index(value[, start[, stop]])`.
    pub const INDEX: MethodSpec =
        MethodSpec::optional("index", &["value", "start", "stop"], 1).read_only().python().scans();
    /// `l.insert(index, object)`.
    pub const INSERT: MethodSpec = MethodSpec::new("insert", &["index", "object"]).stores().python().scans();
    /// `l.pop(index=-1)`.
    pub const POP: MethodSpec = MethodSpec::optional("pop", &["index"], 0).python().scans();
    /// `l.remove(value)`.
    pub const REMOVE: MethodSpec = MethodSpec::new("remove", &["value"]).python().scans();
    /// `l.reverse()`.
    pub const REVERSE: MethodSpec = MethodSpec::new("reverse", &[]).python().scans();
    /// `l.sort(key=None, reverse=False)`.
    pub const SORT: MethodSpec = MethodSpec::optional("sort", &["key", "reverse"], 0).python().scans();
    /// `l *= value`.
    pub const IMUL: MethodSpec = MethodSpec::new("__imul__", &["value"]).grows().python().scans();
    /// `l.clear()` (in CPython 3.14's `ListProxy`; not exposed to older clients).
    pub const CLEAR: MethodSpec = MethodSpec::new("clear", &[]).scans();
    /// `l.copy()` (in CPython 3.14's `ListProxy`; not exposed to older clients).
    pub const COPY: MethodSpec = MethodSpec::new("copy", &[]).read_only().scans();

    /// CPython's `ListProxy` methods in its exposed order, then 3.14's `clear` and `copy`.
    pub const METHODS: &[MethodSpec] = &[
        ADD, CONTAINS, DELITEM, GETITEM, LEN, MUL, REVERSED, RMUL, SETITEM, APPEND, COUNT, EXTEND, INDEX, INSERT, POP,
        REMOVE, REVERSE, SORT, IMUL, CLEAR, COPY,
    ];
}

/// `set`: CPython 3.14's `SetProxy` methods, in its exposed order. Every one is exposed:
/// agora adds nothing of its own to sets.
///
/// The set-algebra operators (`__and__`, `__or__`, `__ior__`…) and the comparisons
/// take sets only, as CPython's do (anything else answers `NotImplemented`); the named
/// methods (`union`, `issubset`…) take any iterable.
pub mod set {
    use super::MethodSpec;

    /// `set(iterable=())`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("set", &["iterable"], 0);

    /// `s & other`.
    pub const AND: MethodSpec = MethodSpec::new("__and__", &["value"]).read_only().python().scans();
    /// `set[item]`: the generic alias `types.GenericAlias(set, (item,))`.
    pub const CLASS_GETITEM: MethodSpec = MethodSpec::new("__class_getitem__", &["item"]).read_only().python();
    /// `elem in s`.
    pub const CONTAINS: MethodSpec = MethodSpec::new("__contains__", &["key"]).read_only().python();
    /// `s &= other`. Not storing: it keeps only values equal to members, which the set
    /// already holds, and it never grows the set.
    pub const IAND: MethodSpec = MethodSpec::new("__iand__", &["value"]).python().scans();
    /// `s |= other`.
    pub const IOR: MethodSpec = MethodSpec::new("__ior__", &["value"]).stores().python();
    /// `s -= other`.
    pub const ISUB: MethodSpec = MethodSpec::new("__isub__", &["value"]).python().scans();
    /// `iter(s)`: an iterator over a copy of the members.
    pub const ITER: MethodSpec = MethodSpec::new("__iter__", &[]).read_only().python().scans();
    /// `s ^= other`.
    pub const IXOR: MethodSpec = MethodSpec::new("__ixor__", &["value"]).stores().python().scans();
    /// `len(s)`.
    pub const LEN: MethodSpec = MethodSpec::new("__len__", &[]).read_only().python();
    /// `s | other`.
    pub const OR: MethodSpec = MethodSpec::new("__or__", &["value"]).read_only().python().scans();
    /// `other & s`.
    pub const RAND: MethodSpec = MethodSpec::new("__rand__", &["value"]).read_only().python().scans();
    /// `other | s`.
    pub const ROR: MethodSpec = MethodSpec::new("__ror__", &["value"]).read_only().python().scans();
    /// `other - s`.
    pub const RSUB: MethodSpec = MethodSpec::new("__rsub__", &["value"]).read_only().python().scans();
    /// `other ^ s`.
    pub const RXOR: MethodSpec = MethodSpec::new("__rxor__", &["value"]).read_only().python().scans();
    /// `s - other`.
    pub const SUB: MethodSpec = MethodSpec::new("__sub__", &["value"]).read_only().python().scans();
    /// `s ^ other`.
    pub const XOR: MethodSpec = MethodSpec::new("__xor__", &["value"]).read_only().python().scans();
    /// `s >= other`.
    pub const GE: MethodSpec = MethodSpec::new("__ge__", &["value"]).read_only().python().scans();
    /// `s > other`.
    pub const GT: MethodSpec = MethodSpec::new("__gt__", &["value"]).read_only().python().scans();
    /// `s <= other`.
    pub const LE: MethodSpec = MethodSpec::new("__le__", &["value"]).read_only().python().scans();
    /// `s < other`.
    pub const LT: MethodSpec = MethodSpec::new("__lt__", &["value"]).read_only().python().scans();
    /// `s.add(elem)`.
    pub const ADD: MethodSpec = MethodSpec::new("add", &["elem"]).stores().python();
    /// `s.clear()`.
    pub const CLEAR: MethodSpec = MethodSpec::new("clear", &[]).python().scans();
    /// `s.copy()`.
    pub const COPY: MethodSpec = MethodSpec::new("copy", &[]).read_only().python().scans();
    /// `s.difference(*others)`.
    pub const DIFFERENCE: MethodSpec =
        MethodSpec::new("difference", &[]).with_var_positional().read_only().python().scans();
    /// `s.difference_update(*others)`.
    pub const DIFFERENCE_UPDATE: MethodSpec =
        MethodSpec::new("difference_update", &[]).with_var_positional().python().scans();
    /// `s.discard(elem)`.
    pub const DISCARD: MethodSpec = MethodSpec::new("discard", &["elem"]).python();
    /// `s.intersection(*others)`.
    pub const INTERSECTION: MethodSpec =
        MethodSpec::new("intersection", &[]).with_var_positional().read_only().python().scans();
    /// `s.intersection_update(*others)`: not storing, like [`IAND`].
    pub const INTERSECTION_UPDATE: MethodSpec =
        MethodSpec::new("intersection_update", &[]).with_var_positional().python().scans();
    /// `s.isdisjoint(other)`.
    pub const ISDISJOINT: MethodSpec = MethodSpec::new("isdisjoint", &["other"]).read_only().python().scans();
    /// `s.issubset(other)`.
    pub const ISSUBSET: MethodSpec = MethodSpec::new("issubset", &["other"]).read_only().python().scans();
    /// `s.issuperset(other)`.
    pub const ISSUPERSET: MethodSpec = MethodSpec::new("issuperset", &["other"]).read_only().python().scans();
    /// `s.pop()`.
    pub const POP: MethodSpec = MethodSpec::new("pop", &[]).python();
    /// `s.remove(elem)`.
    pub const REMOVE: MethodSpec = MethodSpec::new("remove", &["elem"]).python();
    /// `s.symmetric_difference(other)`.
    pub const SYMMETRIC_DIFFERENCE: MethodSpec =
        MethodSpec::new("symmetric_difference", &["other"]).read_only().python().scans();
    /// `s.symmetric_difference_update(other)`.
    pub const SYMMETRIC_DIFFERENCE_UPDATE: MethodSpec =
        MethodSpec::new("symmetric_difference_update", &["other"]).stores().python().scans();
    /// `s.union(*others)`.
    pub const UNION: MethodSpec = MethodSpec::new("union", &[]).with_var_positional().read_only().python().scans();
    /// `s.update(*others)`.
    pub const UPDATE: MethodSpec = MethodSpec::new("update", &[]).with_var_positional().stores().python();

    /// CPython 3.14's `SetProxy` methods, in its exposed order.
    pub const METHODS: &[MethodSpec] = &[
        AND,
        CLASS_GETITEM,
        CONTAINS,
        IAND,
        IOR,
        ISUB,
        ITER,
        IXOR,
        LEN,
        OR,
        RAND,
        ROR,
        RSUB,
        RXOR,
        SUB,
        XOR,
        GE,
        GT,
        LE,
        LT,
        ADD,
        CLEAR,
        COPY,
        DIFFERENCE,
        DIFFERENCE_UPDATE,
        DISCARD,
        INTERSECTION,
        INTERSECTION_UPDATE,
        ISDISJOINT,
        ISSUBSET,
        ISSUPERSET,
        POP,
        REMOVE,
        SYMMETRIC_DIFFERENCE,
        SYMMETRIC_DIFFERENCE_UPDATE,
        UNION,
        UPDATE,
    ];
}

/// `Value`: CPython's `get` and `set`, then agora's atomic operations.
pub mod value {
    use super::MethodSpec;

    /// `Value(typecode, value, lock=True)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Value", &["typecode", "value", "lock"], 2);

    /// `v.get()` (`v.value`).
    pub const GET: MethodSpec = MethodSpec::new("get", &[]).read_only().python();
    /// `v.set(value)` (`v.value = value`).
    pub const SET: MethodSpec = MethodSpec::new("set", &["value"]).stores().python();
    /// agora's `add(delta)`: adds to the number atomically.
    pub const ADD: MethodSpec = MethodSpec::new("add", &["delta"]);
    /// agora's `compare_and_set(expected, new)`.
    pub const COMPARE_AND_SET: MethodSpec = MethodSpec::new("compare_and_set", &["expected", "new"]).stores();

    /// CPython's `get` and `set`, then agora's atomic operations.
    pub const METHODS: &[MethodSpec] = &[GET, SET, ADD, COMPARE_AND_SET];
}

/// `Array`: CPython's `ArrayProxy` methods, then agora's `tolist`.
pub mod array {
    use super::MethodSpec;

    /// `Array(typecode, sequence, lock=True)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Array", &["typecode", "sequence", "lock"], 2);

    /// `len(a)`.
    pub const LEN: MethodSpec = MethodSpec::new("__len__", &[]).read_only().python();
    /// `a[index]` (an index or a slice).
    pub const GETITEM: MethodSpec = MethodSpec::new("__getitem__", &["index"]).read_only().python();
    /// `a[index] = value`.
    pub const SETITEM: MethodSpec = MethodSpec::new("__setitem__", &["index", "value"]).stores().python();
    /// agora's `tolist()`.
    pub const TOLIST: MethodSpec = MethodSpec::new("tolist", &[]).read_only().scans();

    /// CPython's `ArrayProxy` methods, then agora's `tolist`.
    pub const METHODS: &[MethodSpec] = &[LEN, GETITEM, SETITEM, TOLIST];
}

/// `Namespace`: CPython's `NamespaceProxy` methods.
pub mod namespace {
    use super::MethodSpec;

    /// `Namespace(**kwds)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Namespace", &[], 0).with_var_keywords();

    /// `ns.name`.
    pub const GETATTRIBUTE: MethodSpec = MethodSpec::new("__getattribute__", &["name"]).read_only().python();
    /// `ns.name = value`.
    pub const SETATTR: MethodSpec = MethodSpec::new("__setattr__", &["name", "value"]).stores().python();
    /// `del ns.name`.
    pub const DELATTR: MethodSpec = MethodSpec::new("__delattr__", &["name"]).python();

    /// CPython's `NamespaceProxy` methods.
    pub const METHODS: &[MethodSpec] = &[GETATTRIBUTE, SETATTR, DELATTR];
}

/// `Queue` and `JoinableQueue`: CPython's exposed methods (3.13, with `shutdown`), then
/// agora's own. The reliable-consumption methods (`get_leased`, `ack`, `nack`,
/// `renew`) are exposed to CPython too: its `AutoProxy` builds a method per exposed
/// name, so Python users get them for free.
pub mod queue {
    use super::MethodSpec;

    /// `queue.Queue(maxsize=0)`, the callable behind both typeids, with agora's
    /// `max_deliveries=None, dead_letter=None` (reliable consumption: an item delivered
    /// that many times that comes back moves to the queue named `dead_letter`).
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Queue", &["maxsize", "max_deliveries", "dead_letter"], 0);

    /// `q.empty()`.
    pub const EMPTY: MethodSpec = MethodSpec::new("empty", &[]).read_only().python();
    /// `q.full()`.
    pub const FULL: MethodSpec = MethodSpec::new("full", &[]).read_only().python();
    /// `q.get(block=True, timeout=None)`.
    pub const GET: MethodSpec = MethodSpec::optional("get", &["block", "timeout"], 0).python();
    /// `q.get_nowait()`.
    pub const GET_NOWAIT: MethodSpec = MethodSpec::new("get_nowait", &[]).python();
    /// `q.join()` (JoinableQueue).
    pub const JOIN: MethodSpec = MethodSpec::new("join", &[]).python();
    /// `q.put(item, block=True, timeout=None)`.
    pub const PUT: MethodSpec = MethodSpec::optional("put", &["item", "block", "timeout"], 1).stores().python();
    /// `q.put_nowait(item)`.
    pub const PUT_NOWAIT: MethodSpec = MethodSpec::new("put_nowait", &["item"]).stores().python();
    /// `q.qsize()`.
    pub const QSIZE: MethodSpec = MethodSpec::new("qsize", &[]).read_only().python();
    /// `q.task_done()` (JoinableQueue).
    pub const TASK_DONE: MethodSpec = MethodSpec::new("task_done", &[]).python();
    /// `q.shutdown(immediate=False)` (Python 3.13).
    pub const SHUTDOWN: MethodSpec = MethodSpec::optional("shutdown", &["immediate"], 0).python().scans();
    /// agora's `get_leased(block=True, timeout=None, lease=None)` → `(receipt, item)`.
    pub const GET_LEASED: MethodSpec = MethodSpec::optional("get_leased", &["block", "timeout", "lease"], 0).python();
    /// agora's `ack(receipt)`: finishes a leased item.
    pub const ACK: MethodSpec = MethodSpec::new("ack", &["receipt"]).python();
    /// agora's `nack(receipt, delay=None)`: gives a leased item back to the head of
    /// the queue, at once or after `delay` seconds (or to the dead letter queue).
    pub const NACK: MethodSpec = MethodSpec::optional("nack", &["receipt", "delay"], 1).python();
    /// agora's `renew(receipt, lease=None)`: restarts a lease's clock.
    pub const RENEW: MethodSpec = MethodSpec::optional("renew", &["receipt", "lease"], 1).python();
    /// agora's `unget(item)`: puts an item back at the head (a hand-off whose caller
    /// left).
    pub const UNGET: MethodSpec = MethodSpec::new("unget", &["item"]).stores().gives_back();
    /// agora's `leased()`: how many items are out on lease.
    pub const LEASED: MethodSpec = MethodSpec::new("leased", &[]).read_only();
    /// agora's `delayed()`: how many nacked items wait out their delay.
    pub const DELAYED: MethodSpec = MethodSpec::new("delayed", &[]).read_only();
    /// agora's `deliveries(receipt)`: how many times a leased item was delivered,
    /// this delivery included.
    pub const DELIVERIES: MethodSpec = MethodSpec::new("deliveries", &["receipt"]).read_only();

    /// CPython's exposed methods (3.13, with `shutdown`), then agora's own.
    pub const METHODS: &[MethodSpec] = &[
        EMPTY, FULL, GET, GET_NOWAIT, JOIN, PUT, PUT_NOWAIT, QSIZE, TASK_DONE, SHUTDOWN, GET_LEASED, ACK, NACK, RENEW,
        UNGET, LEASED, DELAYED, DELIVERIES,
    ];
}

/// `Lock`: CPython's `AcquirerProxy` methods, then agora's.
pub mod lock {
    use super::MethodSpec;

    /// `Lock()`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::new("Lock", &[]);

    /// `lock.acquire(blocking=True, timeout=-1)`.
    pub const ACQUIRE: MethodSpec = MethodSpec::optional("acquire", &["blocking", "timeout"], 0).python();
    /// `lock.release()`.
    pub const RELEASE: MethodSpec = MethodSpec::new("release", &[]).python();
    /// agora's `acquire_fenced(blocking=True, timeout=-1)`: the grant's fencing token,
    /// or `False`.
    pub const ACQUIRE_FENCED: MethodSpec = MethodSpec::optional("acquire_fenced", &["blocking", "timeout"], 0);
    /// agora's `release_fenced(token)`: releases exactly that grant.
    pub const RELEASE_FENCED: MethodSpec = MethodSpec::new("release_fenced", &["token"]);
    /// `lock.locked()` (Python 3.13).
    pub const LOCKED: MethodSpec = MethodSpec::new("locked", &[]).read_only();

    /// CPython's `AcquirerProxy` methods, then agora's.
    pub const METHODS: &[MethodSpec] = &[ACQUIRE, RELEASE, ACQUIRE_FENCED, RELEASE_FENCED, LOCKED];
}

/// `RLock`: CPython's `AcquirerProxy` methods (with agora's `owner`), then agora's.
pub mod rlock {
    use super::MethodSpec;

    /// `RLock()`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::new("RLock", &[]);

    /// `rlock.acquire(blocking=True, timeout=-1, owner=None)`.
    pub const ACQUIRE: MethodSpec = MethodSpec::optional("acquire", &["blocking", "timeout", "owner"], 0).python();
    /// `rlock.release(owner=None)`: one level of the owner's hold.
    pub const RELEASE: MethodSpec = MethodSpec::optional("release", &["owner"], 0).python();
    /// agora's `acquire_fenced(blocking=True, timeout=-1, owner=None)`: the hold's
    /// fencing token, or `False`.
    pub const ACQUIRE_FENCED: MethodSpec = MethodSpec::optional("acquire_fenced", &["blocking", "timeout", "owner"], 0);
    /// agora's `release_fenced(token, fully=False)`.
    pub const RELEASE_FENCED: MethodSpec = MethodSpec::optional("release_fenced", &["token", "fully"], 1);

    /// CPython's `AcquirerProxy` methods (with agora's `owner`), then agora's.
    pub const METHODS: &[MethodSpec] = &[ACQUIRE, RELEASE, ACQUIRE_FENCED, RELEASE_FENCED];
}

/// `Semaphore` and `BoundedSemaphore`: CPython's `AcquirerProxy` methods, then agora's.
pub mod semaphore {
    use super::MethodSpec;

    /// `Semaphore(value=1)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Semaphore", &["value"], 0);
    /// `BoundedSemaphore(value=1)`.
    pub const BOUNDED_CONSTRUCTOR: MethodSpec = MethodSpec::optional("BoundedSemaphore", &["value"], 0);

    /// `sem.acquire(blocking=True, timeout=None)`.
    pub const ACQUIRE: MethodSpec = MethodSpec::optional("acquire", &["blocking", "timeout"], 0).python();
    /// `sem.release(n=1)`.
    pub const RELEASE: MethodSpec = MethodSpec::optional("release", &["n"], 0).python();
    /// agora's `acquire_fenced(blocking=True, timeout=None)`: the permit's token, or
    /// `False`.
    pub const ACQUIRE_FENCED: MethodSpec = MethodSpec::optional("acquire_fenced", &["blocking", "timeout"], 0);
    /// agora's `release_fenced(token)`: gives back exactly that permit.
    pub const RELEASE_FENCED: MethodSpec = MethodSpec::new("release_fenced", &["token"]);
    /// agora's `get_value()`: the permits available now.
    pub const GET_VALUE: MethodSpec = MethodSpec::new("get_value", &[]).read_only();

    /// CPython's `AcquirerProxy` methods, then agora's.
    pub const METHODS: &[MethodSpec] = &[ACQUIRE, RELEASE, ACQUIRE_FENCED, RELEASE_FENCED, GET_VALUE];
}

/// `Condition`: CPython's `ConditionProxy` methods (with agora's `owner`), then agora's.
pub mod condition {
    use super::MethodSpec;

    /// `Condition(lock=None)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Condition", &["lock"], 0);

    /// `cond.acquire(blocking=True, timeout=-1, owner=None)`.
    pub const ACQUIRE: MethodSpec = MethodSpec::optional("acquire", &["blocking", "timeout", "owner"], 0).python();
    /// `cond.release(owner=None)`.
    pub const RELEASE: MethodSpec = MethodSpec::optional("release", &["owner"], 0).python();
    /// `cond.wait(timeout=None, owner=None)`.
    pub const WAIT: MethodSpec = MethodSpec::optional("wait", &["timeout", "owner"], 0).python();
    /// `cond.notify(n=1, owner=None)`.
    pub const NOTIFY: MethodSpec = MethodSpec::optional("notify", &["n", "owner"], 0).python();
    /// `cond.notify_all(owner=None)`.
    pub const NOTIFY_ALL: MethodSpec = MethodSpec::optional("notify_all", &["owner"], 0).python();
    /// agora's `acquire_fenced(blocking=True, timeout=-1, owner=None)`: the lock's
    /// fencing token, or `False`.
    pub const ACQUIRE_FENCED: MethodSpec = MethodSpec::optional("acquire_fenced", &["blocking", "timeout", "owner"], 0);
    /// agora's `release_fenced(token, fully=False)`.
    pub const RELEASE_FENCED: MethodSpec = MethodSpec::optional("release_fenced", &["token", "fully"], 1);
    /// agora's `wait_fenced(timeout=None, owner=None)` → `(notified, token)`.
    pub const WAIT_FENCED: MethodSpec = MethodSpec::optional("wait_fenced", &["timeout", "owner"], 0);

    /// CPython's `ConditionProxy` methods (with agora's `owner`), then agora's.
    pub const METHODS: &[MethodSpec] =
        &[ACQUIRE, RELEASE, WAIT, NOTIFY, NOTIFY_ALL, ACQUIRE_FENCED, RELEASE_FENCED, WAIT_FENCED];
}

/// `Event`: CPython's `EventProxy` methods.
pub mod event {
    use super::MethodSpec;

    /// `Event()`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::new("Event", &[]);

    /// `e.is_set()`.
    pub const IS_SET: MethodSpec = MethodSpec::new("is_set", &[]).read_only().python();
    /// `e.set()`.
    pub const SET: MethodSpec = MethodSpec::new("set", &[]).python();
    /// `e.clear()`.
    pub const CLEAR: MethodSpec = MethodSpec::new("clear", &[]).python();
    /// `e.wait(timeout=None)`.
    pub const WAIT: MethodSpec = MethodSpec::optional("wait", &["timeout"], 0).python();

    /// CPython's `EventProxy` methods.
    pub const METHODS: &[MethodSpec] = &[IS_SET, SET, CLEAR, WAIT];
}

/// `Barrier`: CPython's `BarrierProxy` methods.
pub mod barrier {
    use super::MethodSpec;

    /// `Barrier(parties, action=None, timeout=None)`.
    pub const CONSTRUCTOR: MethodSpec = MethodSpec::optional("Barrier", &["parties", "action", "timeout"], 1);

    /// `b.parties`, `b.n_waiting`, `b.broken`.
    pub const GETATTRIBUTE: MethodSpec = MethodSpec::new("__getattribute__", &["name"]).read_only().python();
    /// `b.wait(timeout=None)`.
    pub const WAIT: MethodSpec = MethodSpec::optional("wait", &["timeout"], 0).python();
    /// `b.abort()`.
    pub const ABORT: MethodSpec = MethodSpec::new("abort", &[]).python();
    /// `b.reset()`.
    pub const RESET: MethodSpec = MethodSpec::new("reset", &[]).python();

    /// CPython's `BarrierProxy` methods.
    pub const METHODS: &[MethodSpec] = &[GETATTRIBUTE, WAIT, ABORT, RESET];
}

/// `Iterator`: what `iter(dict_proxy)` returns to a CPython client. It has no
/// constructor: only iterating a dict makes one.
pub mod iterator {
    use super::MethodSpec;

    /// The typeid CPython's `SyncManager` gives iterators.
    pub const TYPEID: &str = "Iterator";

    /// `next(it)`: takes an item (or fails for good), so it changes the iterator.
    pub const NEXT: MethodSpec = MethodSpec::new("__next__", &[]).python();

    /// `__next__` takes an item (or fails for good): it changes the iterator.
    pub const METHODS: &[MethodSpec] = &[NEXT];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table, with its kind's name.
    fn tables() -> Vec<(&'static str, &'static [MethodSpec])> {
        vec![
            ("dict", dict::METHODS),
            ("list", list::METHODS),
            ("set", set::METHODS),
            ("value", value::METHODS),
            ("array", array::METHODS),
            ("namespace", namespace::METHODS),
            ("queue", queue::METHODS),
            ("lock", lock::METHODS),
            ("rlock", rlock::METHODS),
            ("semaphore", semaphore::METHODS),
            ("condition", condition::METHODS),
            ("event", event::METHODS),
            ("barrier", barrier::METHODS),
            ("iterator", iterator::METHODS),
        ]
    }

    #[test]
    fn every_table_has_unique_names_and_consistent_arity() {
        for (kind, table) in tables() {
            assert!(!table.is_empty(), "{kind}");
            for (i, spec) in table.iter().enumerate() {
                assert!(
                    table[..i].iter().all(|other| other.name != spec.name),
                    "{kind}: '{}' is declared twice",
                    spec.name
                );
                assert!(spec.required <= spec.params.len(), "{kind}.{}: required > params", spec.name);
                assert!(!(spec.read_only && spec.stores), "{kind}.{}: read-only yet stores", spec.name);
                assert!(!(spec.read_only && spec.grows), "{kind}.{}: read-only yet grows", spec.name);
            }
        }
        let constructors = [
            dict::CONSTRUCTOR,
            list::CONSTRUCTOR,
            set::CONSTRUCTOR,
            value::CONSTRUCTOR,
            array::CONSTRUCTOR,
            namespace::CONSTRUCTOR,
            queue::CONSTRUCTOR,
            lock::CONSTRUCTOR,
            rlock::CONSTRUCTOR,
            semaphore::CONSTRUCTOR,
            semaphore::BOUNDED_CONSTRUCTOR,
            condition::CONSTRUCTOR,
            event::CONSTRUCTOR,
            barrier::CONSTRUCTOR,
        ];
        for spec in constructors {
            assert!(spec.required <= spec.params.len(), "{}: required > params", spec.name);
        }
    }

    #[test]
    fn every_built_in_kind_has_its_table() {
        for kind in Kind::BUILTIN {
            assert!(table(&kind).is_some(), "{kind}");
        }
        assert_eq!(table(&Kind::Other(iterator::TYPEID.into())).map(|t| t[0].name), Some("__next__"));
        assert!(table(&Kind::Other("Custom".into())).is_none());
    }

    /// Client code shared by every acquirer (guards, fenced acquires) calls these
    /// methods by one name whatever the kind.
    #[test]
    fn every_acquirer_declares_the_same_fenced_names() {
        let acquirers = [lock::METHODS, rlock::METHODS, semaphore::METHODS, condition::METHODS];
        for name in [lock::ACQUIRE_FENCED.name, lock::RELEASE_FENCED.name, lock::RELEASE.name] {
            for table in acquirers {
                assert!(table.iter().any(|m| m.name == name), "{name}");
            }
        }
    }
}
