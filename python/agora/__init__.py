"""agora for CPython: an optional companion to the standard library's client.

Stock CPython clients need nothing from here (``SyncManager(address, authkey)``
works against an agora server as it is). This package adds, with the standard
library only:

- :func:`connect`: a connected :class:`AgoraManager`, address and authkey found as
  the ``agora`` command line finds them, and ``multiprocessing.current_process()
  .authkey`` set so proxies passed to ``Pool`` workers work;
- named objects opened at run time, shared with every other client by name:
  ``m.dict("jobs")``, ``m.queue("tasks")``, ``m.lock("db")``…;
- fenced locks (``with lock.fenced() as token``) and leased gets
  (``with q.leased() as item``: acked on success, redelivered on an exception);
- proxies that reconnect after a server restart and re-open named objects by name;
- an asyncio facade, :mod:`agora.aio`.

>>> import agora
>>> m = agora.connect("127.0.0.1:50000")
>>> jobs = m.dict("jobs")
"""

from ._config import (
    DEFAULT_ADDRESS,
    AuthkeyNotFound,
    default_authkey_path,
    find_authkey,
    parse_address,
)
from ._manager import AgoraManager, connect
from ._proxies import (
    ArrayProxy,
    BarrierProxy,
    ConditionProxy,
    ConnectionLost,
    DictProxy,
    EventProxy,
    ListProxy,
    SetProxy,
    LockProxy,
    NamespaceProxy,
    QueueProxy,
    RuntimeProxy,
    ValueProxy,
    fenced,
    leased,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ADDRESS",
    "AgoraManager",
    "ArrayProxy",
    "AuthkeyNotFound",
    "BarrierProxy",
    "ConditionProxy",
    "ConnectionLost",
    "DictProxy",
    "EventProxy",
    "ListProxy",
    "LockProxy",
    "NamespaceProxy",
    "QueueProxy",
    "RuntimeProxy",
    "SetProxy",
    "ValueProxy",
    "connect",
    "default_authkey_path",
    "fenced",
    "find_authkey",
    "leased",
    "parse_address",
]
