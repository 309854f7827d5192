"""Addresses and authkeys, found as the agora command line finds them; connecting
with the key from each place. Needs a server at $AGORA_ADDRESS, key $AGORA_AUTHKEY."""

import os
import tempfile
import unittest
from unittest import mock

import agora


class Addresses(unittest.TestCase):
    def test_forms(self):
        parse = agora.parse_address
        self.assertEqual(parse("127.0.0.1:50000"), ("127.0.0.1", 50000))
        self.assertEqual(parse("tcp://example.org:7"), ("example.org", 7))
        self.assertEqual(parse("[::1]:7"), ("::1", 7))
        self.assertEqual(parse("unix:///run/agora.sock"), "/run/agora.sock")
        self.assertEqual(parse("unix:/run/agora.sock"), "/run/agora.sock")
        self.assertEqual(parse("unix:@agora"), "\0agora")
        self.assertEqual(parse("/run/agora.sock"), "/run/agora.sock")
        self.assertEqual(parse(("h", 1)), ("h", 1))

    def test_default_and_environment(self):
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(agora.parse_address(None), ("127.0.0.1", 50000))
        with mock.patch.dict(os.environ, {"AGORA_ADDRESS": "unix:/x.sock"}):
            self.assertEqual(agora.parse_address(None), "/x.sock")

    def test_bad_addresses_say_why(self):
        for bad, why in [("nohost", "missing port"), ("h:99999", "port"), ("::1:5", "brackets"), ("unix:", "empty")]:
            with self.assertRaises(ValueError) as caught:
                agora.parse_address(bad)
            self.assertIn(why, str(caught.exception))


class Authkeys(unittest.TestCase):
    def setUp(self):
        self.key = os.environ["AGORA_AUTHKEY"].encode()
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def env_without_key(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_AUTHKEY")}
        env["XDG_RUNTIME_DIR"] = self.dir.name
        env.update(extra)
        return mock.patch.dict(os.environ, env, clear=True)

    def test_explicit_then_env_then_file_then_generated(self):
        self.assertEqual(agora.find_authkey("given"), b"given")
        with self.env_without_key(AGORA_AUTHKEY="from-env"):
            self.assertEqual(agora.find_authkey(), b"from-env")
        path = os.path.join(self.dir.name, "keyfile")
        with open(path, "wb") as f:
            f.write(b"from-file\r\n")
        with self.env_without_key(AGORA_AUTHKEY_FILE=path):
            self.assertEqual(agora.find_authkey(), b"from-file")
        with self.env_without_key():
            with self.assertRaises(agora.AuthkeyNotFound) as caught:
                agora.find_authkey()
            self.assertIn("AGORA_AUTHKEY", str(caught.exception))
            os.makedirs(os.path.join(self.dir.name, "agora"))
            with open(agora.default_authkey_path(), "wb") as f:
                f.write(b"generated\n")
            self.assertEqual(agora.find_authkey(), b"generated")

    def test_connect_with_a_key_file(self):
        path = os.path.join(self.dir.name, "keyfile")
        with open(path, "wb") as f:
            f.write(self.key + b"\n")
        with self.env_without_key(AGORA_AUTHKEY_FILE=path):
            m = agora.connect()
        m.dict("config-test")["ok"] = True
        self.assertTrue(agora.connect(authkey=self.key).dict("config-test")["ok"])


if __name__ == "__main__":
    unittest.main()
