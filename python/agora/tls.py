"""TLS for stock ``multiprocessing`` managers: ``serializer="agora+tls"``.

Importing this module registers a transport named ``agora+tls`` in
``multiprocessing.managers.listener_client``, so an unmodified manager reaches an
agora server's ``tls://`` listener::

    import agora.tls  # registers "agora+tls"
    from multiprocessing.managers import SyncManager

    m = SyncManager(("agora.internal", 50443), b"secret", serializer="agora+tls")
    m.connect()
    d = m.dict()

Every connection the manager and its proxies open is TLS (the standard library's
``ssl``), and the authkey handshake runs inside it, as over plain TCP. The settings
come from the environment, so child processes inherit them (a process that unpickles
a proxy must have imported this module too: a top-level ``import agora.tls`` in the
main script covers ``spawn`` children):

- ``AGORA_TLS_CA`` (required): the CA bundle (PEM) that signed the server's
  certificate. The certificate must carry the host name dialled, or the IP address;
- ``AGORA_TLS_CLIENT_CERT`` and ``AGORA_TLS_CLIENT_KEY``: a client certificate and its key (PEM),
  for a server started with ``--tls-client-ca`` (mutual TLS);
- ``AGORA_TLS_SERVER_NAME``: the name to check the server's certificate for instead
  of the host dialled.

Standard library only, CPython 3.8+. It only connects: a manager using it cannot
``start()`` a server of its own.
"""

import io
import os
import socket
import ssl
import threading
from multiprocessing import connection, managers

__all__ = ["SERIALIZER", "CA_ENV", "CERT_ENV", "KEY_ENV", "SERVER_NAME_ENV", "Client", "TlsConnection", "register"]

#: The ``serializer`` name to give a manager.
SERIALIZER = "agora+tls"
#: The environment variable naming the CA bundle (PEM) that verifies the server.
CA_ENV = "AGORA_TLS_CA"
#: The environment variable naming this client's certificate chain (PEM).
CERT_ENV = "AGORA_TLS_CLIENT_CERT"
#: The environment variable naming this client's private key (PEM).
KEY_ENV = "AGORA_TLS_CLIENT_KEY"
#: The environment variable naming the server name to verify instead of the host.
SERVER_NAME_ENV = "AGORA_TLS_SERVER_NAME"


class TlsConnection(connection.Connection):
    """A ``multiprocessing.connection.Connection`` over a TLS socket.

    The base class reads and writes the file descriptor directly; these overrides
    go through the ``ssl`` socket instead. Framing, ``send``/``recv`` and the
    authkey handshake are the base class's, unchanged.
    """

    def __init__(self, sock):
        self._sock = sock
        super().__init__(sock.fileno())

    def _close(self, _close=None):
        self._sock.close()

    def _send(self, buf, write=None):
        self._sock.sendall(buf)

    def _recv(self, size, read=None):
        buf = io.BytesIO()
        remaining = size
        while remaining > 0:
            chunk = self._sock.recv(min(remaining, 1 << 20))
            if not chunk:
                if remaining == size:
                    raise EOFError
                raise OSError("got end of file during message")
            buf.write(chunk)
            remaining -= len(chunk)
        return buf

    def _poll(self, timeout):
        # Bytes ssl has already decrypted are not visible to select() on the socket.
        if self._sock.pending():
            return True
        return bool(connection.wait([self], timeout))


_contexts = {}
_contexts_lock = threading.Lock()


def _context():
    """The SSL context for the current environment (made once per setting)."""
    cafile = os.environ.get(CA_ENV)
    if not cafile:
        raise ValueError(
            "agora+tls needs the CA bundle that verifies the server: set %s to its PEM file" % CA_ENV
        )
    cert, key = os.environ.get(CERT_ENV), os.environ.get(KEY_ENV)
    if bool(cert) != bool(key):
        raise ValueError("agora+tls: set both %s and %s (a client certificate and its key), or neither" % (CERT_ENV, KEY_ENV))
    settings = (cafile, cert, key)
    with _contexts_lock:
        context = _contexts.get(settings)
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
            if cert:
                context.load_cert_chain(cert, key)
            _contexts[settings] = context
        return context


def Client(address, family=None, authkey=None):
    """Connects to an agora ``tls://`` listener at ``(host, port)`` and, given an
    authkey, runs the same handshake as ``multiprocessing.connection.Client``."""
    if not (isinstance(address, tuple) and len(address) == 2):
        raise ValueError("agora+tls connects to a (host, port) address, not %r" % (address,))
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError("authkey should be a byte string")
    host = address[0]
    context = _context()
    sock = socket.create_connection(address)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_socket(sock, server_hostname=os.environ.get(SERVER_NAME_ENV) or host)
    except BaseException:
        sock.close()
        raise
    c = TlsConnection(tls)
    if authkey is not None:
        try:
            connection.answer_challenge(c, authkey)
            connection.deliver_challenge(c, authkey)
        except BaseException:
            c.close()
            raise
    return c


def _no_listener(*args, **kwargs):
    raise NotImplementedError(
        "agora+tls only connects to an agora server; it cannot start a manager's server"
    )


def register():
    """Registers the ``agora+tls`` transport (done on import; harmless to repeat)."""
    managers.listener_client[SERIALIZER] = (_no_listener, Client)


register()
