"""A stock CPython client against an agora server configured with users.

Usage::

    AGORA_KEY_WRITER=… AGORA_KEY_READER=… AGORA_KEY_ADMIN=… python3 users.py ADDRESS ROLE [IDENTS…]

One process per user, run in turn: ``writer`` (prints ``private=IDENT``), ``admin
PRIVATE`` (prints ``hidden=IDENT``), ``reader PRIVATE HIDDEN``. One process per user
because CPython's proxies share one connection per thread and server address whatever
their authkey: two users in one process would call through whichever connected first.

The server's users (see ``tests/tests/users.rs``): ``writer`` may write ``jobs.*``,
``reader`` may read ``jobs.*``, ``admin`` has ``"*" = admin``. For each access (read,
write, admin) one call that is allowed and one that is refused, refusals arriving
as ``PermissionError`` (method calls) or a ``RemoteError`` whose traceback names it
(CPython's public functions); and objects of another user or namespace are not
reachable by id. Prints ``OK users <role> <version>``. Standard library only.
"""

import os
import sys
from multiprocessing import managers
from multiprocessing.connection import Client
from multiprocessing.managers import RemoteError, SyncManager


def parse_address(text):
    if text.startswith("unix:"):
        return text[len("unix:"):]
    host, _, port = text.rpartition(":")
    return (host, int(port))


ADDRESS = parse_address(sys.argv[1])
WRITER = os.environ["AGORA_KEY_WRITER"].encode()
READER = os.environ["AGORA_KEY_READER"].encode()
ADMIN = os.environ["AGORA_KEY_ADMIN"].encode()


class Manager(SyncManager):
    pass


Manager.register("agora")


def connect(key):
    m = Manager(address=ADDRESS, authkey=key)
    m.connect()
    return m


def refused(fn, *needles):
    """fn must raise PermissionError whose message holds every needle."""
    try:
        fn()
    except PermissionError as e:
        for needle in needles:
            assert needle in str(e), f"{needle!r} not in {e!r}"
        return
    raise AssertionError(f"{fn} was allowed; it should raise PermissionError")


def remote_refused(fn, *needles):
    """fn must raise RemoteError whose traceback names PermissionError and every needle."""
    try:
        fn()
    except RemoteError as e:
        text = str(e)
        assert "PermissionError" in text, text
        for needle in needles:
            assert needle in text, f"{needle!r} not in {text}"
        return
    raise AssertionError(f"{fn} was allowed; it should raise RemoteError(PermissionError)")


def control(key, method):
    """One of CPython's public server functions on a connection of its own."""
    conn = Client(ADDRESS, authkey=key)
    try:
        return managers.dispatch(conn, None, method)
    finally:
        conn.close()


def proxy_by_id(key, typeid, ident):
    """A proxy built from nothing but an id, as a client guessing ids would."""
    token = managers.Token(typeid, ADDRESS, ident)
    return managers.DictProxy(token, "pickle", authkey=key)


ROLE = sys.argv[2]
VERSION = ".".join(map(str, sys.version_info[:3]))

if ROLE == "writer":
    writer = connect(WRITER)
    # write: allowed on jobs.*, refused where no rule matches.
    jobs = writer.agora().dict("jobs.py")
    jobs["n"] = 1
    refused(lambda: writer.agora().dict("secret.py"), "user 'writer'", "'secret.py'", "no rule matches")
    # admin: debug_info (every object's contents) is for server admins.
    remote_refused(lambda: control(WRITER, "debug_info"), "user 'writer'", "server admin")
    # An anonymous dict of the writer's, kept alive by a named list after this process ends.
    private = writer.dict({"k": "v"})
    writer.agora().list("jobs.keep").append(private)
    assert proxy_by_id(WRITER, "dict", private._token.id)["k"] == "v", "the owner reaches it by id"
    print(f"private={private._token.id}")
elif ROLE == "admin":
    admin = connect(ADMIN)
    # admin: allowed what the writer was refused; another user's anonymous object too.
    assert "jobs.py" in control(ADMIN, "debug_info")
    assert proxy_by_id(ADMIN, "dict", sys.argv[3])["k"] == "v", "a server admin reaches any object"
    hidden = admin.agora().dict("admin.only")
    hidden["secret"] = 42
    print(f"hidden={hidden._token.id}")
elif ROLE == "reader":
    reader = connect(READER)
    private, hidden = sys.argv[3], sys.argv[4]
    # read: the reader opens and reads what the writer made; writing and creating are refused.
    seen = reader.agora().dict("jobs.py")
    assert seen["n"] == 1 and len(seen) == 1 and seen.copy() == {"n": 1}, seen.copy()
    refused(lambda: seen.__setitem__("m", 2), "user 'reader'", '"jobs.*" = read', "needs write")
    refused(lambda: reader.agora().dict("jobs.new"), "user 'reader'", "create", "'jobs.new'")
    assert seen.copy() == {"n": 1}, "the refused write changed nothing"
    # admin: shutdown is for server admins.
    remote_refused(lambda: control(READER, "shutdown"), "user 'reader'", "shut the server down")
    # By id: another user's anonymous object, a name outside the rules: out of reach.
    remote_refused(lambda: proxy_by_id(READER, "dict", private), "user 'reader'", "anonymous object of user 'writer'")
    remote_refused(lambda: proxy_by_id(READER, "dict", hidden), "user 'reader'", "'admin.only'")
else:
    raise SystemExit(f"unknown role {ROLE!r}")

print(f"OK users {ROLE} {VERSION}")
