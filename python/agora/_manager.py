"""The connected manager: a ``SyncManager`` that knows agora's runtime typeid."""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing import managers
from typing import Any, Dict, Optional, Tuple, Union

from ._config import PyAddress, find_authkey, parse_address
from ._proxies import (
    PROXY_TYPES,
    RUNTIME_TYPEID,
    ArrayProxy,
    BarrierProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    ListProxy,
    SetProxy,
    LockProxy,
    NamespaceProxy,
    QueueProxy,
    RuntimeProxy,
    ValueProxy,
)

__all__ = ["AgoraManager", "connect"]

#: Errors that mean "no server answers there (yet)".
_UNREACHABLE = (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, BrokenPipeError, EOFError)


class AgoraManager(managers.SyncManager):
    """A ``SyncManager`` connected to an agora server, with:

    - named objects opened at run time: ``m.dict("jobs")``, ``m.queue("tasks")``,
      ``m.lock("db")``… — the objects a Rust client reaches by the same names (and
      ``m.open(kind, name, ...)`` for any kind);
    - every stock method still there: ``m.dict()``, ``m.Queue()``… make anonymous
      objects as with CPython (``m.dict`` and ``m.list`` take a name only as a str
      first argument: an anonymous list from a string is ``m.list(list("abc"))``);
    - proxies that reconnect after a server restart and re-open named objects by name,
      fenced locks (``with lock.fenced() as token``) and leased gets
      (``with q.leased() as item``).

    Use :func:`connect` to make one.
    """

    def __init__(
        self,
        address: Union[str, Tuple[str, int], None] = None,
        authkey: Union[bytes, str, None] = None,
        *,
        reconnect_timeout: float = 30.0,
        serializer: str = "pickle",
        ctx: Any = None,
    ) -> None:
        """`address` and `authkey` as :func:`connect` takes them; `reconnect_timeout`:
        how long a call waits for a restarting server to come back."""
        super().__init__(address=parse_address(address), authkey=find_authkey(authkey), serializer=serializer, ctx=ctx)
        self.reconnect_timeout = reconnect_timeout
        self._agora_epoch = 0
        self._agora_lock = threading.Lock()
        self._agora_runtime: Optional[RuntimeProxy] = None

    @property
    def address(self) -> PyAddress:
        """The server's address, as ``multiprocessing`` spells it."""
        return self._address

    def connect(self) -> None:
        """Connects (checks the server answers), and sets this process's authkey to
        the server's, so proxies passed to ``Pool`` workers (which rebuild them with
        their process authkey) work."""
        super().connect()
        multiprocessing.current_process().authkey = self._authkey

    def __enter__(self) -> "AgoraManager":
        if self._state.value == managers.State.INITIAL:
            self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        # A connected manager owns no server: nothing to shut down.
        pass

    # --- named objects -------------------------------------------------------------

    def open(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Gets or creates the object `name` of `kind` (a typeid, any case: ``dict``,
        ``Queue``, ``queue``, ``joinable_queue``) and answers its proxy. `args` and
        `kwargs` go to the constructor, used only when it is created. A name holding
        another kind raises ``TypeError``."""
        return self._agora_open(_typeid(kind), name, args, kwargs)

    def dict(self, *args: Any, **kwargs: Any) -> DictProxy:  # type: ignore[override]
        """``m.dict("jobs")``: the dict named ``jobs``; otherwise an anonymous dict,
        as ``SyncManager.dict``."""
        if args and isinstance(args[0], str):
            return self._agora_open("dict", args[0], args[1:], kwargs)
        return self._agora_create("dict", args, kwargs)

    def list(self, *args: Any, **kwargs: Any) -> ListProxy:  # type: ignore[override]
        """``m.list("log")``: the list named ``log``; otherwise an anonymous list, as
        ``SyncManager.list``."""
        if args and isinstance(args[0], str):
            return self._agora_open("list", args[0], args[1:], kwargs)
        return self._agora_create("list", args, kwargs)

    def set(self, *args: Any, **kwargs: Any) -> SetProxy:  # type: ignore[override]
        """``m.set("seen")``: the set named ``seen``; otherwise an anonymous set, as
        CPython 3.14's ``SyncManager.set`` (on every CPython from 3.8)."""
        if args and isinstance(args[0], str):
            return self._agora_open("set", args[0], args[1:], kwargs)
        return self._agora_create("set", args, kwargs)

    def value(self, name: str, typecode: Any = "i", value: Any = 0) -> ValueProxy:
        """The Value named `name` (created as ``Value(typecode, value)``)."""
        return self._agora_open("Value", name, (typecode, value), {})

    def array(self, name: str, typecode: Any, sequence: Any) -> ArrayProxy:
        """The Array named `name` (created as ``Array(typecode, sequence)``)."""
        return self._agora_open("Array", name, (typecode, sequence), {})

    def namespace(self, name: str) -> NamespaceProxy:
        """The Namespace named `name`."""
        return self._agora_open("Namespace", name, (), {})

    def queue(self, name: str, maxsize: int = 0) -> QueueProxy:
        """The Queue named `name`."""
        return self._agora_open("Queue", name, (maxsize,), {})

    def joinable_queue(self, name: str, maxsize: int = 0) -> QueueProxy:
        """The JoinableQueue named `name`."""
        return self._agora_open("JoinableQueue", name, (maxsize,), {})

    def lock(self, name: str) -> LockProxy:
        """The Lock named `name` (``with lock.fenced() as token`` for its fencing token)."""
        return self._agora_open("Lock", name, (), {})

    def rlock(self, name: str) -> LockProxy:
        """The RLock named `name`."""
        return self._agora_open("RLock", name, (), {})

    def semaphore(self, name: str, value: int = 1) -> LockProxy:
        """The Semaphore named `name`."""
        return self._agora_open("Semaphore", name, (value,), {})

    def bounded_semaphore(self, name: str, value: int = 1) -> LockProxy:
        """The BoundedSemaphore named `name`."""
        return self._agora_open("BoundedSemaphore", name, (value,), {})

    def condition(self, name: str, lock: Any = None) -> ConditionProxy:
        """The Condition named `name`."""
        return self._agora_open("Condition", name, (lock,), {})

    def event(self, name: str) -> EventProxy:
        """The Event named `name`."""
        return self._agora_open("Event", name, (), {})

    def barrier(self, name: str, parties: int, timeout: Optional[float] = None) -> BarrierProxy:
        """The Barrier named `name`."""
        return self._agora_open("Barrier", name, (parties,), {"timeout": timeout} if timeout is not None else {})

    # --- internals -----------------------------------------------------------------

    def _agora_runtime_proxy(self) -> RuntimeProxy:
        with self._agora_lock:
            if self._agora_runtime is None:
                self._agora_runtime = self._agora_create(RUNTIME_TYPEID, (), {})
            return self._agora_runtime

    def _agora_open(self, typeid: str, name: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        if not isinstance(name, str):
            raise TypeError("the name must be a str, not %s" % type(name).__name__)
        runtime = self._agora_runtime_proxy()
        proxy = getattr(runtime, typeid)(name, *args, **kwargs)
        proxy._agora_typeid, proxy._agora_name = typeid, name
        proxy._agora_args, proxy._agora_kwargs = tuple(args), dict(kwargs)
        proxy._agora_epoch = self._agora_epoch
        return proxy

    def _agora_create(self, typeid: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """What SyncManager's create methods do, with this package's proxy class."""
        if self._agora_epoch:
            self._agora_wait_for_server()
        token, exposed = self._create(typeid, *args, **kwargs)
        proxy = PROXY_TYPES[typeid](token, self._serializer, manager=self, authkey=self._authkey, exposed=exposed)
        conn = self._Client(token.address, authkey=self._authkey)
        managers.dispatch(conn, None, "decref", (token.id,))
        return proxy

    def _agora_saw_restart(self) -> None:
        """A connection to the server died: named objects re-open on their next call."""
        with self._agora_lock:
            self._agora_epoch += 1

    def _agora_wait_for_server(self) -> None:
        """Waits (up to ``reconnect_timeout``) until the server answers again."""
        deadline = time.monotonic() + self.reconnect_timeout
        pause = 0.02
        while True:
            try:
                conn = self._Client(self._address, authkey=self._authkey)
                try:
                    managers.dispatch(conn, None, "dummy")
                finally:
                    conn.close()
                return
            except _UNREACHABLE:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)


def _typeid(kind: str) -> str:
    """The typeid for a kind spelled any case, with or without underscores."""
    wanted = kind.replace("_", "").lower()
    for typeid in PROXY_TYPES:
        if typeid != RUNTIME_TYPEID and typeid.lower() == wanted:
            return typeid
    raise ValueError(
        "unknown kind %r: one of %s" % (kind, ", ".join(t for t in PROXY_TYPES if t != RUNTIME_TYPEID))
    )


for _tid, _cls in PROXY_TYPES.items():
    # Our proxy class for every typeid (also what #PROXY replies build); the stock
    # create methods (m.Queue(), m.Lock()…) stay, except dict, list and set, defined above.
    AgoraManager.register(_tid, proxytype=_cls, create_method=_tid not in ("dict", "list", "set"))
del _tid, _cls


def connect(
    address: Union[str, Tuple[str, int], None] = None,
    authkey: Union[bytes, str, None] = None,
    *,
    reconnect_timeout: float = 30.0,
) -> AgoraManager:
    """Connects to an agora server and answers the manager.

    `address`: ``host:port``, ``tcp://host:port``, ``unix:///path`` (or ``unix:/path``,
    ``unix:@abstract``), a ``(host, port)`` tuple; default ``$AGORA_ADDRESS``, else
    ``127.0.0.1:50000``. `authkey`: default ``$AGORA_AUTHKEY``, else the file
    ``$AGORA_AUTHKEY_FILE`` names, else the key a zero-config ``agora serve`` wrote.

    Also sets ``multiprocessing.current_process().authkey`` to the key, so proxies
    passed to ``Pool`` workers created afterwards work there.
    """
    manager = AgoraManager(address, authkey, reconnect_timeout=reconnect_timeout)
    manager.connect()
    return manager
