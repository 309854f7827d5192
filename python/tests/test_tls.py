"""A stock SyncManager over TLS: ``serializer="agora+tls"`` from ``agora.tls``.

Run against a server's tls:// listener at $AGORA_ADDRESS (host:port, key in
$AGORA_AUTHKEY, CA bundle in $AGORA_TLS_CA) started with
``--expose get_shared=dict:shared``. Leaves for the Rust side to check: dict
``shared`` = {"from": "python"}.

A second server, at $AGORA_TEST_MTLS_ADDRESS, requires client certificates (mutual
TLS); $AGORA_TEST_CLIENT_CERT and $AGORA_TEST_CLIENT_KEY are one it accepts.
"""

import os
import queue
import ssl
import unittest
from multiprocessing.managers import SyncManager

import agora
import agora.tls


def address():
    return agora.parse_address(os.environ["AGORA_ADDRESS"])


def authkey():
    return os.environ["AGORA_AUTHKEY"].encode()


class Stock(SyncManager):
    pass


Stock.register("get_shared")


class StockManagerOverTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = Stock(address(), authkey(), serializer=agora.tls.SERIALIZER)
        cls.m.connect()

    def test_objects_round_trip(self):
        d = self.m.dict()
        d["big"] = "x" * (1 << 20)
        d["n"] = 41
        self.assertEqual(d["n"], 41)
        self.assertEqual(len(d["big"]), 1 << 20)
        q = self.m.Queue()
        q.put([1, 2, 3])
        self.assertEqual(q.get(timeout=5), [1, 2, 3])
        with self.assertRaises(queue.Empty):
            q.get(timeout=0.1)
        lock = self.m.Lock()
        self.assertTrue(lock.acquire())
        lock.release()

    def test_nested_proxies_connect_over_tls_too(self):
        outer = self.m.dict()
        outer["inner"] = self.m.list([1, 2])
        inner = outer["inner"]
        inner.append(3)
        self.assertEqual(list(inner), [1, 2, 3])

    def test_exposed_named_object_is_shared_with_rust(self):
        shared = self.m.get_shared()
        shared["from"] = "python"
        self.assertEqual(shared["from"], "python")

    def test_a_list_a_rust_client_stored_is_rebuilt_over_tls(self):
        # agora names the agora+tls transport and this listener in every proxy it
        # sends over TLS, whoever stored it.
        from_rust = self.m.get_shared()["from_rust"]
        self.assertEqual(from_rust._serializer, agora.tls.SERIALIZER)
        from_rust.append("from python")
        self.assertEqual(list(from_rust), ["from rust", "from python"])


class Settings(unittest.TestCase):
    def test_a_missing_ca_bundle_is_named(self):
        saved = os.environ.pop(agora.tls.CA_ENV)
        try:
            with self.assertRaises(ValueError) as caught:
                agora.tls.Client(address(), authkey=authkey())
            self.assertIn(agora.tls.CA_ENV, str(caught.exception))
        finally:
            os.environ[agora.tls.CA_ENV] = saved

    def test_a_wrong_name_fails_verification(self):
        os.environ[agora.tls.SERVER_NAME_ENV] = "not-the-server.example"
        try:
            with self.assertRaises(Exception) as caught:
                agora.tls.Client(address(), authkey=authkey())
            self.assertIn("certificate", str(caught.exception).lower())
        finally:
            del os.environ[agora.tls.SERVER_NAME_ENV]

    def test_a_manager_over_tls_cannot_start_a_server(self):
        with self.assertRaises(NotImplementedError):
            Stock(address(), authkey(), serializer=agora.tls.SERIALIZER).get_server()


class MutualTls(unittest.TestCase):
    def setUp(self):
        self.address = agora.parse_address(os.environ["AGORA_TEST_MTLS_ADDRESS"])

    def test_without_a_client_certificate_the_server_refuses(self):
        with self.assertRaises((ssl.SSLError, ConnectionError, EOFError, OSError)):
            m = Stock(self.address, authkey(), serializer=agora.tls.SERIALIZER)
            m.connect()
            m.dict()

    def test_with_one_from_its_client_ca_objects_work(self):
        os.environ[agora.tls.CERT_ENV] = os.environ["AGORA_TEST_CLIENT_CERT"]
        os.environ[agora.tls.KEY_ENV] = os.environ["AGORA_TEST_CLIENT_KEY"]
        try:
            m = Stock(self.address, authkey(), serializer=agora.tls.SERIALIZER)
            m.connect()
            d = m.dict()
            d["mutual"] = True
            self.assertEqual(d["mutual"], True)
        finally:
            del os.environ[agora.tls.CERT_ENV]
            del os.environ[agora.tls.KEY_ENV]


if __name__ == "__main__":
    unittest.main(verbosity=2)
