"""An asyncio facade over the blocking proxies.

CPython's proxies block; here each call runs in a thread pool executor, so a
coroutine awaits it without blocking the event loop::

    import agora.aio

    async def main():
        m = await agora.aio.connect("127.0.0.1:50000")
        tasks = await m.queue("tasks")
        await tasks.put("job-1")
        async with tasks.leased() as job:       # acked on success, nacked on error
            ...
        lock = await m.lock("db")
        async with lock.fenced() as token:      # the grant's fencing token
            ...
        jobs = await m.dict("jobs")
        await jobs.call("__setitem__", "a", 1)  # any method, by name
        print(await jobs.get("a"))

A CPython client's connection is per thread, and the server ties what a connection
holds (RLock and Condition ownership, lock grants) to it. So each hold of a lock
(``async with lock``) runs its acquire, its release (and a Condition's ``wait`` and
``notify``) on one thread of its own, and two coroutines holding the same lock are
two holders, as two threads would be.

Cancelling a coroutine while its call runs cannot stop the call on the server; what
the call obtained is given back when it completes: an item from ``get`` is put back
(at the tail), a lease is nacked (back at the head), a lock granted is released.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from ._manager import AgoraManager
from ._manager import connect as _connect

__all__ = ["AsyncManager", "AsyncProxy", "AsyncQueue", "AsyncLock", "AsyncCondition", "connect"]

T = TypeVar("T")


async def _run(
    executor: concurrent.futures.Executor,
    fn: Callable[[], T],
    undo: Optional[Callable[[T], None]] = None,
) -> T:
    """Runs `fn` in `executor`; if the awaiting coroutine is cancelled meanwhile, runs
    `undo` on its result once it is there (in the thread that ran `fn`)."""
    future = executor.submit(fn)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if undo is not None:

            def later(done: "concurrent.futures.Future[T]") -> None:
                if not done.cancelled() and done.exception() is None:
                    try:
                        undo(done.result())
                    except Exception:
                        pass  # the server ends what its session held anyway

            future.add_done_callback(later)
        raise


class AsyncProxy:
    """Any proxy, awaitable: ``await p.call("method", *args)``, or ``await
    p.method(*args)`` for a public method of the proxy. The blocking proxy is
    :attr:`proxy`."""

    def __init__(self, proxy: Any, executor: concurrent.futures.Executor) -> None:
        #: The blocking proxy.
        self.proxy = proxy
        self._executor = executor

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Calls `method` on the shared object (``proxy._callmethod``)."""
        return await _run(self._executor, functools.partial(self.proxy._callmethod, method, args, kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self.proxy, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await _run(self._executor, functools.partial(method, *args, **kwargs))

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return "<%s of %r>" % (type(self).__name__, self.proxy)


class AsyncQueue(AsyncProxy):
    """A shared queue: awaitable ``get`` and ``put``, and leased gets."""

    async def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Puts `item` at the tail."""
        await _run(self._executor, functools.partial(self.proxy.put, item, block, timeout))

    async def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Takes the head (``queue.Empty`` if none comes in time). Cancelled while it
        waits: an item that arrives afterwards is put back."""
        return await _run(self._executor, functools.partial(self.proxy.get, block, timeout), self.proxy.put)

    @contextlib.asynccontextmanager
    async def leased(
        self, block: bool = True, timeout: Optional[float] = None, lease: Optional[float] = 30.0, renew: bool = False
    ) -> AsyncIterator[Any]:
        """Takes an item on lease for an ``async with`` block: acked when the block ends
        normally, nacked (back at the head of the queue) when it raises or is cancelled.
        `renew=True` renews the lease every third of `lease` while the block runs."""
        get = functools.partial(self.proxy._callmethod, "get_leased", (block, timeout, lease))
        receipt, item = await _run(self._executor, get, lambda got: self.proxy._callmethod("nack", (got[0],)))
        renewer: Optional["asyncio.Task[None]"] = None
        if renew and lease is not None:
            renewer = asyncio.ensure_future(self._renew(receipt, lease))
        ok = False
        try:
            yield item
            ok = True
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            finish = functools.partial(self.proxy._callmethod, "ack" if ok else "nack", (receipt,))
            # Shielded: a cancelled block still gives its item back.
            await asyncio.shield(_run(self._executor, finish))

    async def _renew(self, receipt: int, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.call("renew", receipt, lease)
            except Exception:
                return


class _Hold:
    """One hold of a lock: the thread (and so the connection) it lives on, and its
    fencing token when fenced."""

    def __init__(self) -> None:
        self.thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agora-hold")
        self.token: Any = None

    def close(self) -> None:
        self.thread.shutdown(wait=False)


class AsyncLock(AsyncProxy):
    """A shared Lock, RLock, Semaphore, BoundedSemaphore or Condition:
    ``async with lock``, ``async with lock.fenced() as token``."""

    def __init__(self, proxy: Any, executor: concurrent.futures.Executor) -> None:
        super().__init__(proxy, executor)
        self._holds: Dict[Any, List[_Hold]] = {}

    def _task(self) -> Any:
        return asyncio.current_task()

    def _current(self) -> _Hold:
        holds = self._holds.get(self._task())
        if not holds:
            raise RuntimeError("this task does not hold the lock (use `async with lock`)")
        return holds[-1]

    async def _acquire(self, fenced: bool, timeout: Optional[float]) -> _Hold:
        hold = _Hold()
        args: Tuple[Any, ...] = (True,) if timeout is None else (True, timeout)
        method = "acquire_fenced" if fenced else "acquire"

        def undo(granted: Any) -> None:
            if granted is not False:
                if fenced:
                    self.proxy._callmethod("release_fenced", (granted,))
                else:
                    self.proxy._callmethod("release")
            hold.close()

        try:
            granted = await _run(hold.thread, functools.partial(self.proxy._callmethod, method, args), undo)
        except asyncio.CancelledError:
            raise
        except BaseException:
            hold.close()
            raise
        if granted is False:
            hold.close()
            raise TimeoutError("the lock was not granted within %s s" % timeout)
        hold.token = granted if fenced else None
        self._holds.setdefault(self._task(), []).append(hold)
        return hold

    async def _release(self) -> None:
        holds = self._holds.get(self._task())
        if not holds:
            raise RuntimeError("this task does not hold the lock")
        hold = holds.pop()
        if not holds:
            del self._holds[self._task()]
        if hold.token is not None:
            release = functools.partial(self.proxy._callmethod, "release_fenced", (hold.token,))
        else:
            release = functools.partial(self.proxy._callmethod, "release")
        try:
            await asyncio.shield(_run(hold.thread, release))
        finally:
            hold.close()

    async def acquire(self, timeout: Optional[float] = None) -> bool:
        """Acquires (a hold of this task; ``False`` if not granted within `timeout`)."""
        try:
            await self._acquire(False, timeout)
        except TimeoutError:
            return False
        return True

    async def release(self) -> None:
        """Releases this task's latest hold."""
        await self._release()

    async def __aenter__(self) -> "AsyncLock":
        await self._acquire(False, None)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._release()

    @contextlib.asynccontextmanager
    async def fenced(self, timeout: Optional[float] = None) -> AsyncIterator[int]:
        """Holds the lock for an ``async with`` block and yields the grant's fencing
        token (``TimeoutError`` if not granted within `timeout`)."""
        hold = await self._acquire(True, timeout)
        try:
            yield hold.token
        finally:
            await self._release()


class AsyncCondition(AsyncLock):
    """A shared Condition: ``async with cond: await cond.wait()``."""

    async def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits for a notify, inside this task's hold."""
        hold = self._current()
        return await _run(hold.thread, functools.partial(self.proxy.wait, timeout))

    async def wait_for(self, predicate: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Waits until `predicate()` (called in the hold's thread) is true."""
        hold = self._current()
        return await _run(hold.thread, functools.partial(self.proxy.wait_for, predicate, timeout))

    async def notify(self, n: int = 1) -> None:
        """Wakes up to `n` waiters, inside this task's hold."""
        await _run(self._current().thread, functools.partial(self.proxy.notify, n))

    async def notify_all(self) -> None:
        """Wakes every waiter, inside this task's hold."""
        await _run(self._current().thread, self.proxy.notify_all)


#: The facade class for each kind.
_FACADES = {
    "Queue": AsyncQueue,
    "JoinableQueue": AsyncQueue,
    "Lock": AsyncLock,
    "RLock": AsyncLock,
    "Semaphore": AsyncLock,
    "BoundedSemaphore": AsyncLock,
    "Condition": AsyncCondition,
}


class AsyncManager:
    """:class:`agora.AgoraManager`, awaitable. Its named-object methods answer
    facades: :class:`AsyncQueue`, :class:`AsyncLock`, :class:`AsyncCondition`, or
    :class:`AsyncProxy` for the other kinds."""

    def __init__(self, manager: AgoraManager, executor: concurrent.futures.Executor) -> None:
        #: The blocking manager.
        self.manager = manager
        self._executor = executor

    def wrap(self, proxy: Any) -> AsyncProxy:
        """The facade for a blocking proxy."""
        cls = _FACADES.get(proxy._token.typeid, AsyncProxy)
        return cls(proxy, self._executor)

    async def open(self, kind: str, name: str, *args: Any, **kwargs: Any) -> AsyncProxy:
        """``AgoraManager.open``, awaitable."""
        opened = functools.partial(self.manager.open, kind, name, *args, **kwargs)
        return self.wrap(await _run(self._executor, opened))

    async def dict(self, name: str) -> AsyncProxy:
        """The dict named `name`."""
        return await self.open("dict", name)

    async def list(self, name: str) -> AsyncProxy:
        """The list named `name`."""
        return await self.open("list", name)

    async def value(self, name: str, typecode: Any = "i", value: Any = 0) -> AsyncProxy:
        """The Value named `name`."""
        return await self.open("Value", name, typecode, value)

    async def queue(self, name: str, maxsize: int = 0) -> AsyncQueue:
        """The Queue named `name`."""
        return await self.open("Queue", name, maxsize)  # type: ignore[return-value]

    async def joinable_queue(self, name: str, maxsize: int = 0) -> AsyncQueue:
        """The JoinableQueue named `name`."""
        return await self.open("JoinableQueue", name, maxsize)  # type: ignore[return-value]

    async def lock(self, name: str) -> AsyncLock:
        """The Lock named `name`."""
        return await self.open("Lock", name)  # type: ignore[return-value]

    async def rlock(self, name: str) -> AsyncLock:
        """The RLock named `name`."""
        return await self.open("RLock", name)  # type: ignore[return-value]

    async def semaphore(self, name: str, value: int = 1) -> AsyncLock:
        """The Semaphore named `name`."""
        return await self.open("Semaphore", name, value)  # type: ignore[return-value]

    async def condition(self, name: str) -> AsyncCondition:
        """The Condition named `name`."""
        return await self.open("Condition", name)  # type: ignore[return-value]

    async def event(self, name: str) -> AsyncProxy:
        """The Event named `name`."""
        return await self.open("Event", name)

    async def close(self) -> None:
        """Stops the executor (if this manager made it)."""
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    _owns_executor = False

    async def __aenter__(self) -> "AsyncManager":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def connect(
    address: Union[str, Tuple[str, int], None] = None,
    authkey: Union[bytes, str, None] = None,
    *,
    executor: Optional[concurrent.futures.Executor] = None,
    max_workers: int = 32,
    reconnect_timeout: float = 30.0,
) -> AsyncManager:
    """:func:`agora.connect`, awaitable. Blocking calls run in `executor`, else in a
    thread pool of `max_workers` threads of the manager's own (a call that waits, such
    as a ``get`` on an empty queue, occupies one thread while it waits)."""
    owns = executor is None
    pool = executor or concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="agora")
    manager = await _run(pool, functools.partial(_connect, address, authkey, reconnect_timeout=reconnect_timeout))
    facade = AsyncManager(manager, pool)
    facade._owns_executor = owns
    return facade
