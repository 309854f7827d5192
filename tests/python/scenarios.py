"""Scenarios a stock CPython client runs against an agora server.

Usage::

    AGORA_AUTHKEY=key python3 scenarios.py SCENARIO ADDRESS [ARGS...]

ADDRESS is agora's syntax: ``host:port`` or ``unix:/path``. Each scenario raises
(AssertionError with a message) on any difference from CPython's own manager, and
prints ``OK <scenario>`` at the end. Standard library only; runs on CPython 3.8+.

Unless a scenario says otherwise, the client does *not* set
``multiprocessing.current_process().authkey``: nested proxies must work without that
workaround over a Unix socket or loopback TCP.
"""

import gc
import multiprocessing
import os
import queue
import sys
import threading
import time
from multiprocessing import managers
from multiprocessing.managers import BaseManager, RemoteError, SyncManager

PY = sys.version_info[:2]


def parse_address(text):
    if text.startswith("unix:"):
        return text[len("unix:"):]
    if text.startswith("/"):
        return text
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, _, port = text.rpartition(":")
    return (host, int(port))


ADDRESS = None
AUTHKEY = os.environ.get("AGORA_AUTHKEY", "").encode()


def connect(authkey=None, cls=SyncManager):
    m = cls(address=ADDRESS, authkey=AUTHKEY if authkey is None else authkey)
    m.connect()
    return m


def eq(got, want, what=""):
    assert got == want, f"{what}: got {got!r}, want {want!r}"


def raises(exc_type, fn, *args, message=None, **kwds):
    """Calls fn; it must raise exactly exc_type (and, if given, with str() == message)."""
    try:
        fn(*args, **kwds)
    except exc_type as e:
        assert type(e) is exc_type, f"{fn}: raised {type(e).__name__}, want exactly {exc_type.__name__}"
        if message is not None:
            assert str(e) == message, f"{fn}: message {str(e)!r}, want {message!r}"
        return e
    except Exception as e:  # noqa: BLE001 - report what came instead
        raise AssertionError(f"{fn}{args}: raised {type(e).__name__}: {e}, want {exc_type.__name__}")
    raise AssertionError(f"{fn}{args}: did not raise {exc_type.__name__}")


def settle_objects(m, want, timeout=10.0):
    """Collects garbage until the server counts `want` objects; returns the count."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        n = m._number_of_objects()
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.02)


# --- every typeid and method (spec §5.2) -------------------------------------------


def scenario_types(m):
    # dict
    d = m.dict({"a": 1}, b=2)
    d["c"] = 3
    eq(d["a"], 1, "getitem")
    eq(len(d), 3, "len")
    assert "b" in d and "z" not in d, "contains"
    del d["b"]
    eq(d.get("b"), None, "get missing")
    eq(d.get("b", 7), 7, "get default")
    eq(d.setdefault("e", 5), 5, "setdefault new")
    eq(d.setdefault("e", 6), 5, "setdefault old")
    d.update({"f": 6}, g=7)
    d.update([("h", 8)])
    eq(d.keys(), ["a", "c", "e", "f", "g", "h"], "keys (insertion order)")
    eq(d.values(), [1, 3, 5, 6, 7, 8], "values")
    eq(d.items()[0], ("a", 1), "items")
    eq(d.pop("h"), 8, "pop")
    eq(d.pop("h", None), None, "pop default")
    eq(d.popitem(), ("g", 7), "popitem is LIFO")
    eq(d.copy(), {"a": 1, "c": 3, "e": 5, "f": 6}, "copy")
    eq(dict(d), {"a": 1, "c": 3, "e": 5, "f": 6}, "dict(proxy)")
    d[(1, 2)] = "tuple key"
    d[1.0] = "one"
    eq(d[1], "one", "1 == 1.0 as a key")
    eq(d[(1, 2)], "tuple key", "tuple key")
    d.clear()
    eq(len(d), 0, "clear")
    big = 2**100
    d["big"] = big
    d["blob"] = b"\x00\xff" * 1000
    d["nested"] = {"x": [1, (2, 3), {4}], "y": None, "z": 1.5}
    eq(d["big"], big, "big int")
    eq(d["blob"], b"\x00\xff" * 1000, "bytes")
    eq(d["nested"], {"x": [1, (2, 3), {4}], "y": None, "z": 1.5}, "nested plain values")

    # list
    lst = m.list([3, 1, 2])
    lst.append(4)
    lst.extend([5, 6])
    lst += [7]
    lst.insert(0, 0)
    eq(lst[:], [0, 3, 1, 2, 4, 5, 6, 7], "slice")
    eq(lst[-1], 7, "negative index")
    eq(lst[1:3], [3, 1], "slice get")
    lst[1:3] = [9]
    eq(lst[:], [0, 9, 2, 4, 5, 6, 7], "slice set")
    del lst[0]
    del lst[::2]
    eq(lst[:], [2, 5, 7], "slice del")
    eq(lst.pop(), 7, "pop")
    eq(lst.pop(0), 2, "pop(0)")
    lst.extend([3, 5, 1])
    eq(lst.count(5), 2, "count")
    eq(lst.index(3), 1, "index")
    lst.remove(5)
    lst.sort()
    eq(lst[:], [1, 3, 5], "sort")
    lst.sort(reverse=True)
    eq(lst[:], [5, 3, 1], "sort reverse")
    lst.reverse()
    eq(lst[:], [1, 3, 5], "reverse")
    eq(lst + [7], [1, 3, 5, 7], "__add__")
    eq(lst * 2, [1, 3, 5, 1, 3, 5], "__mul__")
    eq(2 * lst, [1, 3, 5, 1, 3, 5], "__rmul__")
    lst *= 2
    eq(len(lst), 6, "__imul__")
    eq(list(reversed(lst)), [5, 3, 1, 5, 3, 1], "__reversed__")
    assert 3 in lst and 4 not in lst, "contains"
    lst[0] = "x"
    eq(lst[0], "x", "setitem")

    # Value
    v = m.Value("i", 5)
    eq(v.value, 5, "Value.value")
    v.value = 6
    eq(v.get(), 6, "Value.get")
    v.set(7)
    eq(v.value, 7, "Value.set")
    dv = m.Value("d", 1.5)
    eq(dv.value, 1.5, "Value('d')")
    cv = m.Value("c", b"x")
    eq(cv.value, b"x", "Value('c')")

    # Array
    a = m.Array("i", [1, 2, 3])
    eq(len(a), 3, "Array len")
    eq(a[0], 1, "Array getitem")
    a[1] = 20
    eq(a[1], 20, "Array setitem")
    eq(list(a), [1, 20, 3], "Array iteration")
    eq(a[0:2].tolist(), [1, 20], "Array slice is an array.array")
    fa = m.Array("d", [0.5, 1.5])
    eq(fa[1], 1.5, "Array('d')")

    # Namespace
    ns = m.Namespace(x=1)
    ns.y = "two"
    eq(ns.x, 1, "Namespace get")
    eq(ns.y, "two", "Namespace set")
    del ns.x
    raises(AttributeError, getattr, ns, "x")
    ns._local = 5  # underscore names stay in the client
    eq(ns._local, 5, "local attribute")

    # Queue / JoinableQueue
    for make in (m.Queue, m.JoinableQueue):
        q = make()
        assert q.empty(), "empty"
        q.put(1)
        q.put_nowait(2)
        q.put(3, True, 1.0)
        q.put(item=4, block=True, timeout=1.0)
        eq(q.qsize(), 4, "qsize")
        assert not q.full(), "not full"
        eq(q.get(), 1, "get")
        eq(q.get_nowait(), 2, "get_nowait")
        eq(q.get(True, 1.0), 3, "get(block, timeout)")
        eq(q.get(timeout=1.0), 4, "get(timeout=)")
        for _ in range(4):
            q.task_done()
        q.join()
    bq = m.Queue(2)
    bq.put(1)
    bq.put(2)
    assert bq.full(), "bounded queue full"
    jq = m.JoinableQueue()
    jq.put("job")
    done = []

    def worker():
        item = jq.get()
        time.sleep(0.2)
        done.append(item)
        jq.task_done()

    t = threading.Thread(target=worker)
    t.start()
    jq.join()
    eq(done, ["job"], "join waits for task_done")
    t.join()

    # Lock / RLock / Semaphore / BoundedSemaphore
    lock = m.Lock()
    assert lock.acquire(), "acquire"
    assert not lock.acquire(False), "acquire(False) on a held lock"
    assert not lock.acquire(True, 0.1), "acquire with timeout"
    lock.release()
    with lock:
        pass
    rlock = m.RLock()
    with rlock:
        with rlock:
            pass
    assert rlock.acquire(blocking=True, timeout=1), "rlock acquire"
    rlock.release()
    sem = m.Semaphore(2)
    assert sem.acquire() and sem.acquire(), "two permits"
    assert not sem.acquire(timeout=0.1), "no third permit"
    sem.release()
    sem.release()
    sem.release()  # a plain Semaphore may go above its initial value
    bsem = m.BoundedSemaphore(1)
    with bsem:
        assert not bsem.acquire(False), "bounded semaphore taken"

    # Condition
    cond = m.Condition()
    with cond:
        eq(cond.wait(0.05), False, "wait times out")
        cond.notify()
        cond.notify_all()
    woke = []

    def waiter():
        with cond:
            woke.append(cond.wait(10))

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 10
    while not woke and time.monotonic() < deadline:
        with cond:
            cond.notify()
        time.sleep(0.02)
    t.join()
    eq(woke, [True], "notified wait returns True")
    flag = m.Value("i", 0)

    def setter():
        time.sleep(0.1)
        with cond:
            flag.value = 1
            cond.notify_all()

    t = threading.Thread(target=setter)
    t.start()
    with cond:
        assert cond.wait_for(lambda: flag.value == 1, 10), "wait_for"
    t.join()
    cond_r = m.Condition(m.RLock())
    with cond_r:
        with cond_r:
            eq(cond_r.wait(0.01), False, "Condition(RLock) wait")

    # Event
    ev = m.Event()
    assert not ev.is_set(), "clear event"
    eq(ev.wait(0.05), False, "wait times out")
    ev.set()
    assert ev.is_set(), "set"
    eq(ev.wait(), True, "wait on a set event")
    ev.clear()
    assert not ev.is_set(), "cleared"

    # Barrier
    b = m.Barrier(2, timeout=10)
    eq(b.parties, 2, "parties")
    eq(b.n_waiting, 0, "n_waiting")
    eq(b.broken, False, "broken")
    results = []
    t = threading.Thread(target=lambda: results.append(b.wait()))
    t.start()
    results.append(b.wait())
    t.join()
    eq(sorted(results), [0, 1], "arrival indices")
    b.abort()
    eq(b.broken, True, "broken after abort")
    b.reset()
    eq(b.broken, False, "reset")

    cond2 = m.Condition()
    waiting = []

    def wait_once():
        with cond2:
            waiting.append(1)
            cond2.wait(10)

    ts = [threading.Thread(target=wait_once) for _ in range(3)]
    for t in ts:
        t.start()
    while len(waiting) < 3:
        time.sleep(0.01)
    time.sleep(0.1)
    with cond2:
        cond2.notify(2)  # wakes two of the three
    with cond2:
        cond2.notify_all()
    for t in ts:
        t.join(10)
        assert not t.is_alive(), "notify(n) / notify_all woke every waiter"

    # control functions, as BaseManager and AutoProxy call them
    from multiprocessing.managers import dispatch
    m._number_of_objects()
    assert "refcount=" in m._debug_info(), "debug_info lists objects with refcounts"
    conn = m._Client(m._address, authkey=m._authkey)
    methods = dispatch(conn, None, "get_methods", (lst._token,))
    eq(set(methods), set(managers.ListProxy._exposed_), "get_methods")
    conn = m._Client(m._address, authkey=m._authkey)
    eq(dispatch(conn, None, "dummy", ()), None, "dummy")


# --- errors arrive as the real Python exceptions -------------------------------------


def scenario_errors(m):
    d = m.dict()
    e = raises(KeyError, d.__getitem__, "nope")
    eq(e.args, ("nope",), "KeyError args")
    raises(KeyError, d.__delitem__, "nope")
    raises(KeyError, d.pop, "nope")
    raises(KeyError, d.popitem, message="'popitem(): dictionary is empty'")
    raises(TypeError, d.__setitem__, [1], 2, message="unhashable type: 'list'")

    lst = m.list([1])
    raises(IndexError, lst.__getitem__, 5, message="list index out of range")
    raises(IndexError, m.list().pop, message="pop from empty list")
    raises(ValueError, lst.index, 2, message="2 is not in list")
    raises(ValueError, lst.remove, 2, message="list.remove(x): x not in list")
    raises(TypeError, lst.__getitem__, "x")
    lst.extend(["a"])
    raises(TypeError, lst.sort, message="'<' not supported between instances of 'str' and 'int'")
    raises(ValueError, lst.__setitem__, slice(0, 2, 2), [1, 2],
           message="attempt to assign sequence of size 2 to extended slice of size 1")

    a = m.Array("i", [1])
    raises(TypeError, a.__setitem__, 0, "x")
    raises(IndexError, a.__getitem__, 3)
    raises(OverflowError, a.__setitem__, 0, 2**40)

    ns = m.Namespace()
    raises(AttributeError, getattr, ns, "nope")
    raises(AttributeError, delattr, ns, "nope")

    q = m.Queue(1)
    raises(queue.Empty, q.get_nowait)
    raises(queue.Empty, q.get, timeout=0.05)
    q.put(1)
    raises(queue.Full, q.put_nowait, 2)
    raises(queue.Full, q.put, 2, True, 0.05)
    raises(ValueError, q.get, True, -1, message="'timeout' must be a non-negative number")
    q.get()
    q.task_done()
    raises(ValueError, q.task_done, message="task_done() called too many times")

    sq = m.Queue()
    sq.put("last")
    if PY >= (3, 13):
        sq.shutdown()
        raises(queue.ShutDown, sq.put, 1)
        eq(sq.get(), "last", "get after shutdown drains")
        raises(queue.ShutDown, sq.get)
    else:
        # Older clients have no queue.ShutDown: the AutoProxy still offers shutdown(),
        # and what it raises afterwards degrades to RuntimeError.
        sq.shutdown()
        raises(RuntimeError, sq.put, 1)

    b = m.Barrier(2, timeout=0.1)
    raises(threading.BrokenBarrierError, b.wait)
    raises(threading.BrokenBarrierError, b.wait)
    b.reset()
    b.abort()
    raises(threading.BrokenBarrierError, b.wait)

    lock = m.Lock()
    raises(RuntimeError, lock.release, message="release unlocked lock")
    raises(ValueError, lock.acquire, False, 1, message="can't specify a timeout for a non-blocking call")
    rlock = m.RLock()
    raises(RuntimeError, rlock.release, message="cannot release un-acquired lock")
    bsem = m.BoundedSemaphore(1)
    raises(ValueError, bsem.release, message="Semaphore released too many times")
    sem = m.Semaphore()
    raises(ValueError, sem.acquire, False, 1, message="can't specify timeout for non-blocking acquire")
    cond = m.Condition()
    raises(RuntimeError, cond.wait, message="cannot wait on un-acquired lock")
    raises(RuntimeError, cond.notify, message="cannot notify on un-acquired lock")

    # Protocol errors come back as RemoteError (#TRACEBACK), as from CPython's server.
    raises(RemoteError, d._callmethod, "no_such_method")
    from multiprocessing.managers import dispatch
    e = raises(RemoteError, dispatch, m._Client(m._address, authkey=m._authkey), None, "no_such_function", ())
    assert "AssertionError" in str(e), str(e)
    e = raises(RemoteError, dispatch, m._Client(m._address, authkey=m._authkey), None, "incref", ("ffffffff",))
    assert "KeyError" in str(e), str(e)
    e = raises(RemoteError, m._create, "NoSuchTypeid")
    assert "KeyError" in str(e), str(e)

    # StopIteration ends dict iteration (tested through the Iterator proxy directly).
    it = iter(m.dict({"k": 1}))
    eq(next(it), "k", "next")
    raises(StopIteration, next, it)
    # and the connection still works after all of that
    d["ok"] = True
    eq(d["ok"], True, "connection usable after errors")



# --- CPython 3.14's set typeid ---------------------------------------------------------

# CPython 3.14's SetProxy, rebuilt for older clients: its exposed list, in its order, and
# the in-place operators returning the proxy itself. (Module level, so proxies pickle.)
SET_EXPOSED = (
    "__and__", "__class_getitem__", "__contains__", "__iand__", "__ior__",
    "__isub__", "__iter__", "__ixor__", "__len__", "__or__", "__rand__",
    "__ror__", "__rsub__", "__rxor__", "__sub__", "__xor__",
    "__ge__", "__gt__", "__le__", "__lt__",
    "add", "clear", "copy", "difference", "difference_update", "discard",
    "intersection", "intersection_update", "isdisjoint", "issubset",
    "issuperset", "pop", "remove", "symmetric_difference",
    "symmetric_difference_update", "union", "update",
)
BaseSetProxy = managers.MakeProxyType("BaseSetProxy", SET_EXPOSED)


class SetProxy(BaseSetProxy):
    def __ior__(self, value):
        self._callmethod("__ior__", (value,))
        return self

    def __iand__(self, value):
        self._callmethod("__iand__", (value,))
        return self

    def __ixor__(self, value):
        self._callmethod("__ixor__", (value,))
        return self

    def __isub__(self, value):
        self._callmethod("__isub__", (value,))
        return self


def _members(value):
    """A set's members as comparable text: which of two equal members (1, 1.0, True)
    is kept shows, and iteration order does not matter."""
    return sorted(repr(x) for x in value)


def _outcome(fn, operand):
    """What fn(operand) gave, normalised for comparison with a local set."""
    try:
        result = fn(operand)
    except Exception as e:  # noqa: BLE001 - the exception is the outcome
        return ("raised", type(e), str(e))
    if result is operand:
        return ("self",)
    if isinstance(result, (set, frozenset)):
        return (type(result), _members(result))
    return (type(result), result)


def scenario_set(m):
    """Every method of 3.14's SetProxy, each compared with a local set doing the same."""
    SyncManager.register("set", set, SetProxy)
    eq(m.set()._getvalue(), set(), "set()")
    for init in ([3, 1, 3], "abca", {"k": 1, "j": 2}, range(4), (None, 1.5, (1, "t")), b"ab", frozenset({2})):
        s = m.set(init)
        eq(type(s), SetProxy, "the registered proxy type")
        eq(_members(s._getvalue()), _members(set(init)), f"set({init!r})")
    e = raises(RemoteError, m.set, 5)
    assert "'int' object is not iterable" in str(e), str(e)
    e = raises(RemoteError, m.set, [[1]])
    assert "unhashable type: 'list'" in str(e), str(e)

    initial = [1, 2, "a", (1, 2), frozenset({1}), None, 2.5]
    shared, local = m.set(initial), set(initial)

    def same(what, fn, message=True):
        """fn on the shared set and on the local one: the same outcome and state."""
        got, want = _outcome(fn, shared), _outcome(fn, local)
        if not message and got[0] == want[0] == "raised":
            got, want = got[:2], want[:2]
        eq(got, want, what)
        eq(_members(shared._getvalue()), _members(local), f"{what}: state after")

    import operator
    others = [{1, 2, 3}, frozenset({"a", 9}), set(), {1.0, True, 2}, {(1, 2), frozenset({1}), "z"}]
    # Operators, plain and reflected, with sets and frozensets on either side.
    for other in others:
        for name in ("and_", "or_", "sub", "xor", "lt", "le", "gt", "ge"):
            op = getattr(operator, name)
            same(f"s {name} {other!r}", lambda s: op(s, other))
            same(f"{other!r} {name} s", lambda s: op(other, s))
        for dunder in ("__and__", "__rand__", "__or__", "__ror__", "__sub__", "__rsub__", "__xor__", "__rxor__",
                       "__lt__", "__le__", "__gt__", "__ge__"):
            same(f"s.{dunder}({other!r})", lambda s: getattr(s, dunder)(other))
    # Anything but a set: NotImplemented, so Python's own TypeError (it names the proxy
    # type where a local set names 'set': compare the exception type only).
    for other in ([1], (1,), 1, "a", None, {1: 2}):
        for name in ("and_", "or_", "sub", "xor", "lt", "le", "gt", "ge"):
            op = getattr(operator, name)
            same(f"s {name} {other!r}", lambda s: op(s, other), message=False)
        for dunder in ("__and__", "__ror__", "__lt__"):
            same(f"s.{dunder}({other!r})", lambda s: getattr(s, dunder)(other))
    # 3.14's in-place wrappers ignore what the server answers: `s |= [1]` changes
    # nothing and raises nothing on a shared set (where a local set raises).
    before = shared._getvalue()
    target = shared
    target |= [99]
    assert target is shared, "s |= … gives back the proxy"
    eq(shared._getvalue(), before, "s |= list: NotImplemented, ignored by the wrapper")

    # Membership, with Python's hash rules (a set is looked up as a frozenset).
    for x in (1, 1.0, True, "a", "b", (1, 2), frozenset({1}), {1}, {2}, None, [1], ({1},), {"k": 1}):
        same(f"{x!r} in s", lambda s: x in s)
        same(f"s.__contains__({x!r})", lambda s: s.__contains__(x))
    same("len(s)", len)
    same("copy", lambda s: s.copy())

    # The named methods, each with several kinds of iterable.
    iterables = [[1, 7], (2, "a"), {1.0: "x"}, "ab", range(3), b"\x01", {frozenset({1}), 5}, frozenset()]
    for method in ("union", "intersection", "difference"):
        same(f"{method}()", lambda s: getattr(s, method)())
        for it in iterables:
            same(f"{method}({it!r})", lambda s: getattr(s, method)(it))
        same(f"{method}(*several)", lambda s: getattr(s, method)(*iterables))
        same(f"{method}(bad)", lambda s: getattr(s, method)([1], [[2]]))
        same(f"{method}(not iterable)", lambda s: getattr(s, method)(5))
    for method in ("symmetric_difference", "isdisjoint", "issubset", "issuperset"):
        for it in iterables + [[], [1, 2, "a", (1, 2), frozenset({1}), None, 2.5, 3]]:
            same(f"{method}({it!r})", lambda s: getattr(s, method)(it))
        same(f"{method}(not iterable)", lambda s: getattr(s, method)(5))
        same(f"{method}(unhashable)", lambda s: getattr(s, method)([[1]]))
        raises(TypeError, getattr(shared, method))

    # Mutators, on the shared set and the local twin alike.
    same("add", lambda s: s.add("new"))
    same("add equal", lambda s: s.add(1.0))
    same("add unhashable", lambda s: s.add([1]))
    same("add set", lambda s: s.add({1}))
    same("remove", lambda s: s.remove("new"))
    same("remove missing", lambda s: s.remove("new"))
    same("remove set as frozenset", lambda s: s.remove({1}))
    same("remove missing set", lambda s: s.remove({7}))
    same("remove unhashable", lambda s: s.remove([1]))
    same("discard", lambda s: s.discard("a"))
    same("discard missing", lambda s: s.discard("a"))
    same("discard unhashable", lambda s: s.discard([1]))
    same("update", lambda s: s.update([10, 11], "xy", {12}))
    same("update, bad element after good ones", lambda s: s.update([13, [14], 15]))
    same("difference_update", lambda s: s.difference_update([10], {"x"}))
    same("intersection_update", lambda s: s.intersection_update(s.copy() - {11}))
    same("intersection_update, bad", lambda s: s.intersection_update([1], [[1]]))
    same("symmetric_difference_update", lambda s: s.symmetric_difference_update([1, 2, 77]))
    same("symmetric_difference_update, bad", lambda s: s.symmetric_difference_update([1, [2]]))
    for name, other in (("ior", {5, 6.0}), ("iand", {5.0, 6, 1, "y"}), ("isub", frozenset({6})),
                        ("ixor", {6, 7}), ("ior", set()), ("iand", {1.0, 5})):
        same(f"{name} {other!r}", lambda s: getattr(operator, name)(s, other))
    for x in ("p", "q"):
        same("add", lambda s: s.add(x))
    while len(local):
        popped = shared.pop()
        assert popped in local, f"pop gave {popped!r}, not a member of {local!r}"
        local.remove(popped)
        eq(_members(shared._getvalue()), _members(local), "after pop")
    same("pop empty", lambda s: s.pop())
    same("update again", lambda s: s.update(initial))
    same("clear", lambda s: s.clear())
    same("pop after clear", lambda s: s.pop())

    # Iteration: 3.14's __iter__ answers a local iterator over a copy.
    shared.update(initial)
    it = iter(shared)
    assert iter(it) is it, "an iterator"
    eq(_members(list(it)), _members(initial), "iter(s)")
    eq(_members(shared), _members(initial), "for x in s")
    eq(list(iter(m.set())), [], "iter(empty)")
    # str() and _getvalue()
    eq(str(m.set()), "set()", "str(empty)")
    eq(str(m.set(["only"])), "{'only'}", "str(s)")
    eq(m.set([1, 2])._getvalue(), {1, 2}, "_getvalue")
    if PY >= (3, 9):
        # The proxy's own __class_getitem__ is a class method (as in 3.14): call the
        # referent's through _callmethod.
        eq(shared._callmethod("__class_getitem__", (int,)), set[int], "__class_getitem__")
        eq(shared._callmethod("__class_getitem__", ((int, str),)), set[int, str], "__class_getitem__ of a tuple")

    # A set proxy stored in a dict comes back as a working SetProxy for the same set.
    d = m.dict()
    d["s"] = shared
    back = d["s"]
    back.add("via dict")
    assert "via dict" in shared, "a set stored in a dict is the same set"
    eq(type(back), SetProxy, "it comes back as a SetProxy")

# --- iteration, str/repr, _getvalue ----------------------------------------------------


def scenario_iteration(m):
    d = m.dict()
    for i in range(50):
        d[i] = str(i)
    eq(list(d), list(range(50)), "list(dict)")
    eq([k for k in d], list(range(50)), "for k in dict")
    eq(sorted(d.items()), [(i, str(i)) for i in range(50)], "items")
    it = iter(d)
    next(it)
    d["new"] = 1
    raises(RuntimeError, next, it, message="dictionary changed size during iteration")
    lst = m.list(range(30))
    eq(list(lst), list(range(30)), "list(list) (legacy __getitem__ protocol)")
    eq([x * 2 for x in lst], [x * 2 for x in range(30)], "for x in list")
    eq(list(m.list()), [], "empty list")
    eq(list(m.dict()), [], "empty dict")
    eq(list(enumerate(m.list("ab"))), [(0, "a"), (1, "b")], "enumerate")


def scenario_repr(m):
    eq(str(m.dict({"k": 3})), "{'k': 3}", "str(dict)")
    eq(str(m.list([1, 2, "x"])), "[1, 2, 'x']", "str(list)")
    eq(str(m.Value("i", 5)), "Value('i', 5)", "str(Value)")
    eq(str(m.Array("i", [1, 2, 3])), "array('i', [1, 2, 3])", "str(Array)")
    eq(str(m.Namespace(b=2, a=1)), "Namespace(a=1, b=2)", "str(Namespace)")
    eq(str(m.list([None, True, 1.5, b"x", (1,), "it's", {1}, frozenset()])),
       "[None, True, 1.5, b'x', (1,), \"it's\", {1}, frozenset()]", "reprs of values")
    assert repr(m.dict()).startswith("<DictProxy object, typeid 'dict' at"), repr(m.dict())
    eq(m.dict({"a": [1, 2]})._getvalue(), {"a": [1, 2]}, "_getvalue dict")
    eq(m.list([1, (2,)])._getvalue(), [1, (2,)], "_getvalue list")
    v = m.Value("i", 5)._getvalue()
    eq((type(v).__name__, v.value, repr(v)), ("Value", 5, "Value('i', 5)"), "_getvalue Value")
    arr = m.Array("i", [1, 2])._getvalue()
    eq((type(arr).__name__, arr.tolist()), ("array", [1, 2]), "_getvalue Array")
    ns = m.Namespace(a=1)._getvalue()
    eq((type(ns).__name__, ns.a), ("Namespace", 1), "_getvalue Namespace")
    import copy
    eq(copy.deepcopy(m.list([1, [2]])), [1, [2]], "deepcopy(proxy) is _getvalue")


# --- nested proxies ----------------------------------------------------------------


def scenario_nested(m):
    base = settle_objects(m, m._number_of_objects())
    d = m.dict()
    inner = m.list([1, 2])
    d["inner"] = inner
    d["inner"].append(3)  # through the nested proxy: changes the shared list
    eq(inner[:], [1, 2, 3], "list in dict is a reference")
    del inner
    gc.collect()
    eq(d["inner"][:], [1, 2, 3], "nested list survives del of its proxy")

    lst = m.list([m.dict(a=1)])
    lst[0]["b"] = 2
    gc.collect()
    eq(lst[0].copy(), {"a": 1, "b": 2}, "dict in list")

    d["q"] = m.Queue()
    gc.collect()
    d["q"].put("via nested queue")
    eq(d["q"].get(timeout=5), "via nested queue", "Queue in dict")

    ns = m.Namespace()
    ns.counter = m.Value("i", 0)
    ns.counter.value += 1
    eq(ns.counter.value, 1, "Value in Namespace")

    deep = m.list([m.list([m.dict(leaf=True)])])
    gc.collect()
    eq(deep[0][0]["leaf"], True, "three levels")

    # Nested dict iteration needs a manager on the nested proxy: CPython's client gives
    # it none (issue #99595), so read its keys instead.
    eq(sorted(lst[0].keys()), ["a", "b"], "nested dict keys")

    # Proxies stored in a container hold their objects until the container is gone.
    del d, lst, ns, deep
    n = settle_objects(m, base)
    eq(n, base, f"objects freed with their containers; debug_info:\n{m._debug_info()}")


def scenario_refcounts(m):
    """number_of_objects follows CPython's refcounts exactly."""
    base = settle_objects(m, m._number_of_objects())
    d = m.dict()
    eq(m._number_of_objects(), base + 1, "one object")
    d2 = d  # same proxy, no new reference
    del d
    eq(m._number_of_objects(), base + 1, "alive while a proxy is")
    del d2
    eq(settle_objects(m, base), base, "freed with its last proxy")
    q = m.Queue()
    raises(queue.Empty, q.get_nowait)  # before 3.13 an #ERROR delays the decref until gc
    del q
    eq(settle_objects(m, base), base, "freed after gc")
    # A decref for an object only a container keeps alive is ignored, as on CPython.
    from multiprocessing.managers import dispatch
    d = m.dict()
    d["inner"] = m.list([1])
    inner = d["inner"]
    ident = inner._id
    del inner
    # As on CPython, an object only a container keeps alive is not counted.
    eq(settle_objects(m, base + 1), base + 1, "container counted, held list not")
    dispatch(m._Client(m._address, authkey=m._authkey), None, "decref", (ident,))
    eq(d["inner"][:], [1], "a stray decref does not free a held object")
    del d
    eq(settle_objects(m, base), base, "freed with the container")
    it = iter(m.dict({1: 2}))
    # As in CPython: the dict's last proxy is gone, so it no longer counts, but the
    # iterator still reads it.
    eq(settle_objects(m, base + 1), base + 1, "only the iterator counts")
    eq(list(it), [1], "the iterator keeps its dict")
    del it
    eq(settle_objects(m, base), base, "iterator and dict freed")


# --- many clients, locks ---------------------------------------------------------------


def _increment(n, shared):
    for _ in range(n):
        with shared["lock"]:
            shared["value"].value = shared["value"].value + 1


def scenario_many_processes(m, processes="8", per_process="50"):
    processes, per_process = int(processes), int(per_process)
    lock = m.Lock()
    value = m.Value("i", 0)
    # Proxies travel to the children (fork or spawn) and reconnect there.
    ps = [
        multiprocessing.Process(target=_increment, args=(per_process, {"lock": lock, "value": value}))
        for _ in range(processes)
    ]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        eq(p.exitcode, 0, "child exit code")
    eq(value.value, processes * per_process, "every increment counted exactly once")


def scenario_threads(m, threads="8", per_thread="50"):
    threads, per_thread = int(threads), int(per_thread)
    d = m.dict(n=0)
    lock = m.RLock()

    def run():
        for _ in range(per_thread):
            with lock:
                d["n"] = d["n"] + 1

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    eq(d["n"], threads * per_thread, "threads share the RLock correctly")


def _register_exposed(cls):
    from multiprocessing.managers import AcquirerProxy
    for typeid in ("get_lock", "get_rlock", "get_semaphore"):
        cls.register(typeid, proxytype=AcquirerProxy)


def scenario_hold_locks(m):
    """Takes the exposed Lock, RLock and Semaphore, says HELD, then waits to be killed."""
    class M(BaseManager):
        pass
    _register_exposed(M)
    mm = connect(cls=M)
    held = [mm.get_lock(), mm.get_rlock(), mm.get_semaphore()]
    for proxy in held:
        assert proxy.acquire(timeout=10), "acquire"
    print("HELD", flush=True)
    time.sleep(600)


def scenario_take_locks(m, timeout="20"):
    """Acquires the exposed Lock, RLock and Semaphore; prints how long it took."""
    class M(BaseManager):
        pass
    _register_exposed(M)
    mm = connect(cls=M)
    started = time.monotonic()
    for proxy in (mm.get_lock(), mm.get_rlock(), mm.get_semaphore()):
        assert proxy.acquire(timeout=float(timeout)), "acquire of a dead holder's lock timed out"
        proxy.release()
    print(f"ACQUIRED {time.monotonic() - started:.3f}", flush=True)


def scenario_wait_for_lock(m):
    """Says WAITING, blocks acquiring the exposed Lock, says GOT, then waits to be killed."""
    class M(BaseManager):
        pass
    _register_exposed(M)
    mm = connect(cls=M)
    lock = mm.get_lock()
    print("WAITING", flush=True)
    assert lock.acquire(timeout=60), "the lock never came"
    print("GOT", flush=True)
    time.sleep(600)


def _handoff_item(i):
    """Items of every shape: scalars (which the thread that hands them over may write
    itself), a container, and a str too big for that."""
    return [i, f"s{i}", b"b%d" % i, ("t", i), "x" * 5000 + str(i)][i % 5]


def _consume(items, done, started):
    started.set()
    while True:
        item = items.get(timeout=60)
        if item is None:
            return
        done.put(item)


def _wait_event(event, done):
    done.put(("woke", event.wait(60)))


def _acquire_twice(lock, done):
    done.put(("timed out", lock.acquire(timeout=0.3)))
    done.put(("then", lock.acquire(timeout=60)))
    lock.release()


def scenario_handoffs(m, consumers="4", count="300"):
    """Consumers block on an empty queue while one producer feeds it: every item reaches
    exactly one consumer, intact; waiters on an Event all wake; an acquire of a held
    Lock times out (the server's timer answers it) and the client's next acquire works."""
    consumers, count = int(consumers), int(count)
    items, done = m.Queue(), m.Queue()
    started = [m.Event() for _ in range(consumers)]
    ps = [multiprocessing.Process(target=_consume, args=(items, done, s)) for s in started]
    for p in ps:
        p.start()
    for s in started:
        assert s.wait(60), "a consumer never started"
    for i in range(count):
        items.put(_handoff_item(i))
        if i % 10 == 0:
            time.sleep(0.001)  # let the consumers block again
    for _ in ps:
        items.put(None)
    got = [done.get(timeout=60) for _ in range(count)]
    for p in ps:
        p.join(120)
        eq(p.exitcode, 0, "consumer exit code")
    eq(sorted(map(repr, got)), sorted(repr(_handoff_item(i)) for i in range(count)), "every item once, intact")
    event = m.Event()
    ws = [multiprocessing.Process(target=_wait_event, args=(event, done)) for _ in range(consumers)]
    for w in ws:
        w.start()
    time.sleep(0.2)
    event.set()
    eq([done.get(timeout=60) for _ in ws], [("woke", True)] * consumers, "every waiter woke")
    for w in ws:
        w.join(120)
        eq(w.exitcode, 0, "waiter exit code")
    lock = m.Lock()
    lock.acquire()
    taker = multiprocessing.Process(target=_acquire_twice, args=(lock, done))
    taker.start()
    eq(done.get(timeout=60), ("timed out", False), "a timed-out acquire answers False")
    lock.release()
    eq(done.get(timeout=60), ("then", True), "the next acquire is answered")
    taker.join(120)
    eq(taker.exitcode, 0, "taker exit code")
    eq(lock.acquire(timeout=10), True, "the lock is free again")


# --- reliable consumption: delivery counts, dead letters, delayed nacks ---------------


def scenario_dead_letters(m):
    """A queue made with max_deliveries and dead_letter (constructor keywords): poison
    items end in the dead letter queue (exposed as get_dead) after two deliveries, every
    other item is acked; none lost, none twice. Then a nack with a delay: the item
    behind overtakes it, and it comes back afterwards."""
    class M(BaseManager):
        pass
    M.register("get_dead")
    mm = connect(cls=M)
    q = m.Queue(max_deliveries=2, dead_letter="py.dead")
    for i in range(12):
        q.put(i)
    acked, deliveries = [], {}
    while True:
        try:
            receipt, item = q.get_leased(False)
        except queue.Empty:
            break
        deliveries[item] = deliveries.get(item, 0) + 1
        if item % 4 == 1:
            q.nack(receipt)
        else:
            q.ack(receipt)
            acked.append(item)
    dead = mm.get_dead()
    dead_items = []
    while True:
        try:
            dead_items.append(dead.get_nowait())
        except queue.Empty:
            break
    eq(sorted(acked + dead_items), list(range(12)), "every item acked or dead, once")
    eq(sorted(dead_items), [1, 5, 9], "the poison items are dead letters")
    eq(sorted(n for i, n in deliveries.items() if i % 4 == 1), [2, 2, 2], "after max_deliveries")
    eq(q.qsize(), 0, "nothing left")
    # A refused constructor is a RemoteError, as CPython's server reports it.
    e = raises(RemoteError, m.Queue, max_deliveries=2)
    assert "'max_deliveries' needs 'dead_letter'" in str(e), str(e)

    q.put("a")
    q.put("b")
    receipt, item = q.get_leased()
    eq(item, "a", "head")
    q.nack(receipt, delay=1.5)
    eq(q.get(timeout=30), "b", "b overtakes the delayed a")
    raises(queue.Empty, q.get_nowait)
    eq(q.get(timeout=60), "a", "a comes back after its delay")
    # The counters beyond the exposed names, by _callmethod.
    q.put("c")
    receipt, item = q.get_leased()
    q.nack(receipt, delay=600)
    eq(q._callmethod("delayed"), 1, "one item waits out its delay")
    q.put("d")
    receipt, item = q.get_leased()
    eq(q._callmethod("deliveries", (receipt,)), 1, "first delivery")
    q.ack(receipt)


def scenario_advertised(m, expected):
    """A proxy found inside a value is rebuilt from the listener's advertised address
    (here the server's own Unix socket, so the rebuilt proxy works)."""
    d = m.dict()
    d["inner"] = m.list([1, 2])
    inner = d["inner"]
    eq(inner._token.address, expected, "the advertised address, not the one dialled")
    inner.append(3)
    eq(list(d["inner"]), [1, 2, 3], "the proxy works through the advertised address")


def scenario_list_3_14(m):
    """CPython 3.14's ListProxy also calls clear() and copy(): served to every client."""
    l = m.list([1, 2, 3])
    eq(l._callmethod("copy"), [1, 2, 3], "copy")
    l._callmethod("clear")
    eq(len(l), 0, "cleared")


# --- master/worker with the Rust client ------------------------------------------------


def scenario_worker(m, worker_id):
    """A worker: squares tasks from get_task_queue into get_result_queue until None."""
    class QueueManager(BaseManager):
        pass
    QueueManager.register("get_task_queue")
    QueueManager.register("get_result_queue")
    qm = connect(cls=QueueManager)
    tasks, results = qm.get_task_queue(), qm.get_result_queue()
    done = 0
    while True:
        task = tasks.get(timeout=120)
        if task is None:
            break
        results.put([task, task * task, worker_id])
        done += 1
    print(f"WORKER {worker_id} {done}", flush=True)


# --- connection failures ---------------------------------------------------------------


def scenario_wrong_authkey(m_unused):
    from multiprocessing import AuthenticationError
    m = SyncManager(address=ADDRESS, authkey=b"definitely-not-the-key")
    raises(AuthenticationError, m.connect)
    # and the right key still works afterwards
    connect().dict()


def scenario_pool(m):
    e = raises(RemoteError, m.Pool, 2)
    text = str(e)
    assert "agora does not run Pool" in text, text
    e = raises(RemoteError, m._create, "AsyncResult")
    assert "agora does not run Pool" in str(e), str(e)


def scenario_nested_workaround(m, mode):
    """A nested proxy read over non-loopback TCP: the server does not send the key.
    mode 'without' expects AuthenticationError; 'with' sets the documented workaround."""
    from multiprocessing import AuthenticationError
    d = m.dict()
    d["inner"] = m.list([1])
    if mode == "without":
        # the process key is a random one, not the server's
        raises(AuthenticationError, d.__getitem__, "inner")
    else:
        multiprocessing.current_process().authkey = AUTHKEY
        eq(d["inner"][:], [1], "nested proxy with the workaround")


def scenario_rust_reference(m, version_tag):
    """Uses a list a Rust client stored by reference in the exposed dict 'shared'."""
    class M(BaseManager):
        pass
    M.register("get_shared", proxytype=managers.DictProxy)
    mm = connect(cls=M)
    shared = mm.get_shared()
    ref = shared["list"]  # RebuildProxy(AutoProxy, Token('list', <no address>, id)) from Rust
    assert ref[0] == 1 and ref[1] == 2, ref._getvalue()
    ref.append(version_tag)
    # and the other way: a proxy made here, stored for the Rust client
    shared["from_" + version_tag] = m.dict(version=version_tag)


def scenario_read_stored(m, *version_tags):
    """Reads back the dicts other (finished) clients stored in 'shared'."""
    class M(BaseManager):
        pass
    M.register("get_shared", proxytype=managers.DictProxy)
    shared = connect(cls=M).get_shared()
    for tag in version_tags:
        eq(shared["from_" + tag]["version"], tag, "a dict stored by a client that has exited")


def scenario_churn(m, count, size):
    """Makes and drops `count` dicts holding `size` bytes each over one long-lived
    connection (a proxy kept alive keeps it open), then says CHURNED and waits for
    stdin to close, so the server's memory can be measured with the connection open."""
    keep = m.list()
    for _ in range(int(count)):
        d = m.dict()
        d["payload"] = b"x" * int(size)
        it = iter(d)
        next(it)
        del d, it
    gc.collect()
    eq(m._number_of_objects(), 1, "only the kept list is left")
    print("CHURNED", flush=True)
    sys.stdin.read()
    keep.append(1)


def scenario_basic(m):
    d = m.dict()
    d["k"] = [1, 2]
    eq(d["k"], [1, 2], "round trip")
    q = m.Queue()
    q.put("x")
    eq(q.get(timeout=5), "x", "queue")
    d["nested"] = m.list([1])
    gc.collect()
    eq(d["nested"][:], [1], "nested proxy")


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}


def main():
    global ADDRESS
    if len(sys.argv) < 3 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(SCENARIOS)}}} ADDRESS [ARGS...]")
    name, ADDRESS = sys.argv[1], parse_address(sys.argv[2])
    fn = SCENARIOS[name]
    needs_manager = name not in ("wrong_authkey",)
    m = connect() if needs_manager else None
    fn(m, *sys.argv[3:])
    print(f"OK {name} {sys.version.split()[0]}", flush=True)


if __name__ == "__main__":
    main()
