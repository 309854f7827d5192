"""The package's proxies: CPython's own proxy classes, plus three things.

- **Reconnecting.** CPython keeps one connection per thread and server; once the
  server restarts, every call on it fails for good. Here a call first checks that the
  connection is alive (an idle connection the server closed reads as end-of-file) and
  opens a new one if not, then, for a named object, opens the object again by name
  (its ident is the same when the server kept its state with ``--data-dir``, a new one
  otherwise). A call cut off while it was on the wire raises :class:`ConnectionLost`:
  it may or may not have taken effect, so it is never repeated behind your back.
- **Fenced locks.** :func:`fenced` acquires a lock kind with agora's
  ``acquire_fenced`` and hands out the grant's fencing token.
- **Leased gets.** :func:`leased` takes an item from a queue on lease and acks it if
  the block succeeds, nacks it (the item goes back to the head) if it raises.

:func:`fenced` and :func:`leased` work on any proxy of the right kind, also the
plain CPython proxies a ``Pool`` worker receives. A proxy of this package pickles as
the plain CPython proxy, so any process can unpickle it, with or without this package.
"""

from __future__ import annotations

import contextlib
import threading
from multiprocessing import managers
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional, Tuple, Type

__all__ = [
    "ConnectionLost",
    "fenced",
    "leased",
    "DictProxy",
    "ListProxy",
    "SetProxy",
    "ValueProxy",
    "ArrayProxy",
    "NamespaceProxy",
    "QueueProxy",
    "LockProxy",
    "ConditionProxy",
    "EventProxy",
    "BarrierProxy",
    "RuntimeProxy",
]


class ConnectionLost(ConnectionError):
    """The connection to the server broke while a call was on it (the server stopped or
    restarted). The call may or may not have taken effect; the next call reconnects."""


def _is_dead(conn: Any) -> bool:
    """True if an idle connection can no longer carry calls. Between calls the server
    sends nothing, so anything readable is the end-of-file of a closed connection."""
    try:
        return bool(conn.closed or conn.poll(0))
    except (OSError, EOFError, ValueError):
        return True


def _drop_connection(tls: Any) -> None:
    """Forgets this thread's connection, so the next call opens a new one."""
    conn = getattr(tls, "connection", None)
    if conn is None:
        return
    try:
        del tls.connection
    except AttributeError:
        pass
    try:
        conn.close()
    except OSError:
        pass


def _forget_reference(proxy: Any) -> None:
    """The reference `proxy` held died with the server it was taken on: never give it
    back (the ident may name another object on the new server)."""
    close = getattr(proxy, "_close", None)
    if close is not None:
        close.cancel()
    successor = getattr(proxy, "_agora_successor", None)
    if successor is not None:
        _forget_reference(successor)


class _Resilient(managers.BaseProxy):
    """Reconnects after a server restart and re-opens named objects (module docs)."""

    #: The plain CPython proxy class this one pickles as (None: AutoProxy).
    _agora_stock: ClassVar[Optional[Type[managers.BaseProxy]]] = None
    #: For a named object: its typeid, name and constructor arguments.
    _agora_typeid: Optional[str] = None
    _agora_name: Optional[str] = None
    _agora_args: Tuple[Any, ...] = ()
    _agora_kwargs: Dict[str, Any] = {}
    #: The manager's restart count when this proxy last (re)opened its object.
    _agora_epoch: int = 0

    def _agora_manager(self) -> Any:
        manager = getattr(self, "_manager", None)
        return manager if hasattr(manager, "_agora_saw_restart") else None

    def _callmethod(self, methodname: str, args: Tuple[Any, ...] = (), kwds: Dict[str, Any] = {}) -> Any:
        manager = self._agora_manager()
        conn = getattr(self._tls, "connection", None)
        if conn is not None and _is_dead(conn):
            _drop_connection(self._tls)
            if manager is not None:
                manager._agora_saw_restart()
        if manager is not None and manager._agora_epoch:
            if getattr(self._tls, "connection", None) is None:
                manager._agora_wait_for_server()
            if self._agora_name is not None and self._agora_epoch != manager._agora_epoch:
                self._agora_reopen(manager)
        try:
            return super()._callmethod(methodname, args, kwds)
        except (EOFError, OSError) as e:
            conn = getattr(self._tls, "connection", None)
            if conn is None or not _is_dead(conn):
                raise  # the server's answer (an OSError it sent), or no server at all
            _drop_connection(self._tls)
            if manager is not None:
                manager._agora_saw_restart()
            raise ConnectionLost(
                "lost the connection to the agora server during %s(): it may or may not have taken "
                "effect; the next call reconnects" % methodname
            ) from e

    def _agora_reopen(self, manager: Any) -> None:
        fresh = manager._agora_open(self._agora_typeid, self._agora_name, self._agora_args, self._agora_kwargs)
        if fresh._id != self._id:
            # Another server life: adopt the new object, keep its reference alive with us.
            _forget_reference(self)
            self._token = fresh._token
            self._id = fresh._id
            self._agora_successor = fresh
        self._agora_epoch = fresh._agora_epoch

    def __reduce__(self) -> Any:
        func, (_cls, token, serializer, kwds) = super().__reduce__()
        if self._agora_stock is None:
            kwds["exposed"] = self._exposed_
            return (func, (managers.AutoProxy, token, serializer, kwds))
        return (func, (self._agora_stock, token, serializer, kwds))


@contextlib.contextmanager
def fenced(lock: Any, timeout: Optional[float] = None) -> Iterator[int]:
    """Holds `lock` (a proxy of a Lock, RLock, Semaphore, BoundedSemaphore or
    Condition) for the block and yields the grant's fencing token, an int that only
    ever grows: pass it to whatever the lock protects, so a store can refuse writes
    from a holder that lost the lock meanwhile. Raises ``TimeoutError`` if the lock is
    not granted within `timeout` seconds.

    >>> with agora.fenced(lock) as token:
    ...     storage.write(data, fencing_token=token)
    """
    args: Tuple[Any, ...] = (True,) if timeout is None else (True, timeout)
    token = lock._callmethod("acquire_fenced", args)
    if token is False:
        raise TimeoutError("the lock was not granted within %s s" % timeout)
    try:
        yield token
    finally:
        lock._callmethod("release_fenced", (token,))


@contextlib.contextmanager
def leased(
    queue: Any,
    block: bool = True,
    timeout: Optional[float] = None,
    lease: Optional[float] = 30.0,
    renew: bool = False,
) -> Iterator[Any]:
    """Takes an item from `queue` on lease for the block and yields it: acked when the
    block ends normally (it counts as ``task_done``), nacked when it raises (the item
    goes back to the head of the queue, for the next consumer). If this process dies
    meanwhile, or the lease runs out (`lease` seconds; ``None``: never), the server
    puts the item back too. `renew=True` renews the lease in a background thread every
    third of `lease`, for work that may take longer. Raises ``queue.Empty`` as ``get``
    does when nothing comes (`block`, `timeout`).

    >>> with agora.leased(tasks) as task:
    ...     handle(task)          # raises → the task is redelivered
    """
    receipt, item = queue._callmethod("get_leased", (block, timeout, lease))
    stop = threading.Event()
    renewer: Optional[threading.Thread] = None
    if renew and lease is not None:
        renewer = threading.Thread(
            target=_renew_until, args=(queue, receipt, lease, stop), name="agora-lease-renewal", daemon=True
        )
        renewer.start()
    ok = False
    try:
        yield item
        ok = True
    finally:
        stop.set()
        if renewer is not None:
            renewer.join()
        queue._callmethod("ack" if ok else "nack", (receipt,))


def _renew_until(queue: Any, receipt: Any, lease: float, stop: threading.Event) -> None:
    while not stop.wait(lease / 3):
        try:
            queue._callmethod("renew", (receipt, lease))
        except Exception:
            return  # the lease is gone (acked, expired): ack or nack will say so


class _FencedMixin:
    """``lock.fenced()``: :func:`fenced` as a method."""

    def fenced(self, timeout: Optional[float] = None) -> "contextlib.AbstractContextManager[int]":
        """Holds the lock for a ``with`` block; yields the grant's fencing token
        (see :func:`fenced`)."""
        return fenced(self, timeout)

    def acquire_fenced(self, blocking: bool = True, timeout: Optional[float] = None) -> Any:
        """Acquires and answers the grant's fencing token, or ``False`` if not granted."""
        args: Tuple[Any, ...] = (blocking,) if timeout is None else (blocking, timeout)
        return self._callmethod("acquire_fenced", args)  # type: ignore[attr-defined]

    def release_fenced(self, token: int) -> None:
        """Releases exactly the grant with `token`."""
        self._callmethod("release_fenced", (token,))  # type: ignore[attr-defined]


class DictProxy(_Resilient, managers.DictProxy):  # type: ignore[misc]
    """A shared dict."""

    _agora_stock = managers.DictProxy


class ListProxy(_Resilient, managers.ListProxy):  # type: ignore[misc]
    """A shared list."""

    _agora_stock = managers.ListProxy


# CPython 3.14's SetProxy, for every CPython: its exposed names in its order, and the
# in-place operators answering the proxy itself (as 3.14's wrappers do).
_SET_EXPOSED = (
    "__and__", "__class_getitem__", "__contains__", "__iand__", "__ior__",
    "__isub__", "__iter__", "__ixor__", "__len__", "__or__", "__rand__",
    "__ror__", "__rsub__", "__rxor__", "__sub__", "__xor__",
    "__ge__", "__gt__", "__le__", "__lt__",
    "add", "clear", "copy", "difference", "difference_update", "discard",
    "intersection", "intersection_update", "isdisjoint", "issubset",
    "issuperset", "pop", "remove", "symmetric_difference",
    "symmetric_difference_update", "union", "update",
)  # fmt: skip
_BaseSetProxy = managers.MakeProxyType("_BaseSetProxy", _SET_EXPOSED)


class SetProxy(_Resilient, _BaseSetProxy):  # type: ignore[misc, valid-type]
    """A shared set: CPython 3.14's ``SetProxy`` (``|=``, ``&=``, ``^=``, ``-=`` change
    the shared set and answer the proxy), on every CPython from 3.8."""

    #: 3.14's own class where there is one; elsewhere this one (the unpickling process
    #: needs this package).
    _agora_stock = getattr(managers, "SetProxy", None)

    def __reduce__(self) -> Any:
        if self._agora_stock is None:
            return managers.BaseProxy.__reduce__(self)
        return super().__reduce__()

    def __ior__(self, value: Any) -> "SetProxy":
        self._callmethod("__ior__", (value,))
        return self

    def __iand__(self, value: Any) -> "SetProxy":
        self._callmethod("__iand__", (value,))
        return self

    def __ixor__(self, value: Any) -> "SetProxy":
        self._callmethod("__ixor__", (value,))
        return self

    def __isub__(self, value: Any) -> "SetProxy":
        self._callmethod("__isub__", (value,))
        return self


class ValueProxy(_Resilient, managers.ValueProxy):  # type: ignore[misc]
    """A shared value (``.value``)."""

    _agora_stock = managers.ValueProxy


class ArrayProxy(_Resilient, managers.ArrayProxy):  # type: ignore[misc]
    """A shared array."""

    _agora_stock = managers.ArrayProxy


class NamespaceProxy(_Resilient, managers.NamespaceProxy):  # type: ignore[misc]
    """A shared namespace (attributes)."""

    _agora_stock = managers.NamespaceProxy


class QueueProxy(_Resilient):
    """A shared Queue or JoinableQueue: ``queue.Queue``'s methods, plus agora's leases."""

    _exposed_ = (
        "empty", "full", "get", "get_nowait", "join", "put", "put_nowait", "qsize", "task_done",
        "shutdown", "get_leased", "ack", "nack", "renew",
    )  # fmt: skip

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Puts `item` at the tail (``queue.Full`` if bounded and full after `timeout`)."""
        return self._callmethod("put", (item, block, timeout))

    def put_nowait(self, item: Any) -> None:
        """``put(item, False)``."""
        return self._callmethod("put_nowait", (item,))

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and answers the head (``queue.Empty`` if none comes in time)."""
        return self._callmethod("get", (block, timeout))

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self._callmethod("get_nowait")

    def qsize(self) -> int:
        """How many items are in the queue (not counting leased ones)."""
        return self._callmethod("qsize")

    def empty(self) -> bool:
        """True if the queue holds no item."""
        return self._callmethod("empty")

    def full(self) -> bool:
        """True if a bounded queue is at its size."""
        return self._callmethod("full")

    def task_done(self) -> None:
        """Marks one item taken with ``get`` as processed."""
        return self._callmethod("task_done")

    def join(self) -> None:
        """Waits until every item put has been processed."""
        return self._callmethod("join")

    def shutdown(self, immediate: bool = False) -> None:
        """Shuts the queue down (``queue.ShutDown`` for later calls), as Python 3.13's."""
        return self._callmethod("shutdown", (immediate,))

    def get_leased(
        self, block: bool = True, timeout: Optional[float] = None, lease: Optional[float] = 30.0
    ) -> Tuple[int, Any]:
        """Takes the head on lease: ``(receipt, item)``; finish with :meth:`ack` or
        :meth:`nack`. Prefer :meth:`leased`."""
        return self._callmethod("get_leased", (block, timeout, lease))

    def ack(self, receipt: int) -> None:
        """Finishes a leased item (counts as ``task_done``)."""
        return self._callmethod("ack", (receipt,))

    def nack(self, receipt: int) -> None:
        """Gives a leased item back to the head of the queue."""
        return self._callmethod("nack", (receipt,))

    def renew(self, receipt: int, lease: Optional[float] = 30.0) -> None:
        """Restarts a lease's clock."""
        return self._callmethod("renew", (receipt, lease))

    def leased(
        self, block: bool = True, timeout: Optional[float] = None, lease: Optional[float] = 30.0, renew: bool = False
    ) -> "contextlib.AbstractContextManager[Any]":
        """A leased get for a ``with`` block: acked on success, nacked on an exception
        (see :func:`leased`)."""
        return leased(self, block, timeout, lease, renew)


class LockProxy(_FencedMixin, _Resilient, managers.AcquirerProxy):  # type: ignore[misc]
    """A shared Lock, RLock, Semaphore or BoundedSemaphore, with fencing tokens."""

    _agora_stock = managers.AcquirerProxy


class ConditionProxy(_FencedMixin, _Resilient, managers.ConditionProxy):  # type: ignore[misc]
    """A shared Condition, with fencing tokens."""

    _agora_stock = managers.ConditionProxy


class EventProxy(_Resilient, managers.EventProxy):  # type: ignore[misc]
    """A shared Event."""

    _agora_stock = managers.EventProxy


class BarrierProxy(_Resilient, managers.BarrierProxy):  # type: ignore[misc]
    """A shared Barrier."""

    _agora_stock = managers.BarrierProxy


#: The server's runtime typeid, and its methods: one per kind, named as the typeid.
RUNTIME_TYPEID = "agora"
KINDS = (
    "dict", "list", "set", "Value", "Array", "Namespace", "Queue", "JoinableQueue", "Lock", "RLock",
    "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier",
)  # fmt: skip


def _runtime_method(typeid: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(typeid, args, kwds)

    method.__name__ = typeid
    method.__doc__ = "Gets or creates the %s named by the first argument; the rest are its constructor's." % typeid
    return method


class RuntimeProxy(_Resilient):
    """The server's ``agora`` object: one method per kind, ``dict(name)``,
    ``Queue(name, maxsize)``…, each answering a proxy on the named object."""

    _exposed_ = KINDS


for _typeid in KINDS:
    setattr(RuntimeProxy, _typeid, _runtime_method(_typeid))
del _typeid

#: The proxy class of each typeid, for the manager's registry.
PROXY_TYPES: Dict[str, Type[managers.BaseProxy]] = {
    "dict": DictProxy,
    "list": ListProxy,
    "set": SetProxy,
    "Value": ValueProxy,
    "Array": ArrayProxy,
    "Namespace": NamespaceProxy,
    "Queue": QueueProxy,
    "JoinableQueue": QueueProxy,
    "Lock": LockProxy,
    "RLock": LockProxy,
    "Semaphore": LockProxy,
    "BoundedSemaphore": LockProxy,
    "Condition": ConditionProxy,
    "Event": EventProxy,
    "Barrier": BarrierProxy,
    RUNTIME_TYPEID: RuntimeProxy,
}
