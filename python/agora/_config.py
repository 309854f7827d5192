"""Where the server is and which key it wants: addresses and authkeys, found the way
the ``agora`` command line and the Rust client find them."""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple, Union

#: The address ``agora serve`` listens on when given none.
DEFAULT_ADDRESS = "127.0.0.1:50000"

#: The variable holding the server's address.
ADDRESS_ENV = "AGORA_ADDRESS"
#: The variable holding the authkey itself.
AUTHKEY_ENV = "AGORA_AUTHKEY"
#: The variable naming a file that holds the authkey.
AUTHKEY_FILE_ENV = "AGORA_AUTHKEY_FILE"

#: An address as ``multiprocessing.connection`` takes it: ``(host, port)`` or a
#: Unix socket path (a str starting with NUL for a Linux abstract socket).
PyAddress = Union[Tuple[str, int], str]


class AuthkeyNotFound(LookupError):
    """No authkey was given and none was found where the server keeps one."""


def parse_address(address: Union[str, Tuple[str, int], "os.PathLike[str]", None]) -> PyAddress:
    """Turns an agora address into what ``multiprocessing`` connects to.

    Accepts ``host:port``, ``[v6]:port``, ``tcp://host:port``, ``unix:///path``,
    ``unix:/path``, ``unix:@name`` (abstract), a bare absolute path, a
    ``(host, port)`` tuple, or ``None`` for ``$AGORA_ADDRESS`` (else
    ``127.0.0.1:50000``).
    """
    if address is None:
        address = os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    if isinstance(address, tuple):
        host, port = address
        return (str(host), int(port))
    if not isinstance(address, str):
        return os.fspath(address)
    text = address.strip()
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path:
            raise ValueError("invalid address %r: empty socket path" % address)
        return path
    if text.startswith("unix:"):
        rest = text[len("unix:"):]
        if rest.startswith("@"):
            if len(rest) == 1:
                raise ValueError("invalid address %r: empty abstract socket name" % address)
            return "\0" + rest[1:]
        if not rest:
            raise ValueError("invalid address %r: empty socket path" % address)
        return rest
    if text.startswith(("/", "./", "../")):
        return text
    hostport = text[len("tcp://"):] if text.startswith("tcp://") else text
    host, sep, port = hostport.rpartition(":")
    if not sep:
        raise ValueError(
            "invalid address %r: missing port (expected host:port, [v6]:port, tcp://host:port, "
            "unix:///path or unix:@name)" % address
        )
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("invalid address %r: unclosed '['" % address)
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("invalid address %r: IPv6 addresses need brackets" % address)
    if not host:
        raise ValueError("invalid address %r: missing host" % address)
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ValueError("invalid address %r: port is not a number from 0 to 65535" % address)
    return (host, number)


def default_authkey_path() -> str:
    """Where a zero-config ``agora serve`` writes the key it generates:
    ``$XDG_RUNTIME_DIR/agora/authkey``, else ``$TMPDIR/agora-$UID/authkey``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "agora", "authkey")
    tmp = os.environ.get("TMPDIR") or tempfile.gettempdir()
    return os.path.join(tmp, "agora-%d" % os.getuid(), "authkey")


def read_authkey_file(path: str) -> bytes:
    """An authkey file's bytes, less one trailing newline (as the server reads it)."""
    with open(path, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
        if key.endswith(b"\r"):
            key = key[:-1]
    if not key:
        raise ValueError("the authkey file %s is empty" % path)
    return key


def find_authkey(authkey: Union[bytes, str, None] = None) -> bytes:
    """The authkey: ``authkey`` if given, else ``$AGORA_AUTHKEY``, else the file
    ``$AGORA_AUTHKEY_FILE`` names, else the key a zero-config ``agora serve``
    generated (:func:`default_authkey_path`)."""
    if authkey is not None:
        key = authkey.encode() if isinstance(authkey, str) else bytes(authkey)
        if not key:
            raise ValueError("the authkey is empty")
        return key
    env = os.environb.get(AUTHKEY_ENV.encode()) if hasattr(os, "environb") else None
    if env is None and os.environ.get(AUTHKEY_ENV) is not None:
        env = os.environ[AUTHKEY_ENV].encode()
    if env is not None:
        if not env:
            raise ValueError("$%s is empty" % AUTHKEY_ENV)
        return env
    path: Optional[str] = os.environ.get(AUTHKEY_FILE_ENV)
    if path:
        return read_authkey_file(path)
    path = default_authkey_path()
    try:
        return read_authkey_file(path)
    except FileNotFoundError:
        raise AuthkeyNotFound(
            "no authkey: pass authkey=..., set $%s (the key) or $%s (a file holding it); "
            "a zero-config `agora serve` on this machine writes its key to %s, which does not exist"
            % (AUTHKEY_ENV, AUTHKEY_FILE_ENV, path)
        ) from None
