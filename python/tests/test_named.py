"""Named objects opened at run time, through the package and through a stock
SyncManager that registered the runtime typeid; the unknown-typeid error.

Run against a server at $AGORA_ADDRESS (key in $AGORA_AUTHKEY) that a Rust client
prepared: dict `from-rust` = {"greeting": "hello"}, queue `rust-to-py` = [1, 2, 3].
Leaves for the Rust client to check: dict `from-python` = {"answer": 42}, queue
`py-to-rust` = [10, 20, 30], Value `py-hits` = 7.
"""

import multiprocessing
import os
import queue
import unittest
from multiprocessing.managers import (
    AcquirerProxy,
    DictProxy,
    ListProxy,
    RemoteError,
    SyncManager,
    ValueProxy,
)

import agora


def stock_manager():
    """A stock SyncManager subclass with the runtime typeid, connected."""

    class Stock(SyncManager):
        pass

    Stock.register("agora")
    m = Stock(agora.parse_address(None), os.environ["AGORA_AUTHKEY"].encode())
    m.connect()
    return m


class PackageNamedObjects(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = agora.connect()

    def test_shared_with_a_rust_client_by_name(self):
        self.assertEqual(self.m.dict("from-rust")["greeting"], "hello")
        incoming = self.m.queue("rust-to-py")
        self.assertEqual([incoming.get(timeout=30) for _ in range(3)], [1, 2, 3])
        self.m.dict("from-python")["answer"] = 42
        out = self.m.queue("py-to-rust")
        for n in (10, 20, 30):
            out.put(n)
        hits = self.m.value("py-hits", "i", 0)
        for _ in range(7):
            hits.value += 1

    def test_sets_named_and_anonymous_on_every_cpython(self):
        seen = self.m.set("seen")
        seen.add(1)
        seen |= {2, 3}
        self.assertIsInstance(seen, agora.SetProxy, "|= answers the proxy, as 3.14's")
        self.assertEqual(self.m.set("seen")._getvalue(), {1, 2, 3})
        self.assertEqual(seen & {2, 9}, {2})
        anonymous = self.m.set([4, 5])
        self.assertEqual(len(anonymous), 2)
        self.assertNotEqual(anonymous._id, seen._id)

    def test_the_same_name_is_the_same_object(self):
        a, b = self.m.dict("same"), self.m.dict("same")
        a["k"] = "v"
        self.assertEqual(b["k"], "v")
        self.assertEqual(a._id, b._id)
        log = self.m.list("log")
        log.append(1)
        self.assertEqual(self.m.list("log")[:], [1])

    def test_constructor_arguments_count_only_on_creation(self):
        first = self.m.value("v-once", "i", 5)
        again = self.m.value("v-once", "i", 99)
        self.assertEqual((first.value, again.value), (5, 5))
        arr = self.m.array("arr", "i", [1, 2, 3])
        self.assertEqual(list(arr[:]), [1, 2, 3])
        bounded = self.m.queue("bounded", 1)
        bounded.put("x")
        self.assertTrue(bounded.full())
        with self.assertRaises(queue.Full):
            bounded.put_nowait("y")

    def test_every_kind_opens_by_name(self):
        m = self.m
        ns = m.namespace("ns")
        ns.x = 3
        self.assertEqual(m.namespace("ns").x, 3)
        jq = m.joinable_queue("jq")
        jq.put(1)
        jq.get()
        jq.task_done()
        jq.join()
        for lock in (m.lock("l"), m.rlock("rl"), m.semaphore("s", 2), m.bounded_semaphore("bs", 1)):
            self.assertTrue(lock.acquire())
            lock.release()
        cond = m.condition("c")
        with cond:
            cond.notify_all()
        ev = m.event("e")
        ev.set()
        self.assertTrue(m.event("e").is_set())
        self.assertEqual(m.barrier("b", 1).wait(), 0)
        self.assertEqual(m.open("QUEUE", "q-any-case").qsize(), 0)
        self.assertEqual(m.open("bounded_semaphore", "bs").acquire(), True)

    def test_anonymous_objects_still_work(self):
        d = self.m.dict({"a": 1})
        self.assertEqual(d.copy(), {"a": 1})
        self.assertEqual(self.m.list([1, 2])[:], [1, 2])
        q = self.m.Queue()
        q.put(1)
        self.assertEqual(q.get(), 1)

    def test_a_name_holds_one_kind(self):
        self.m.dict("taken")
        with self.assertRaises(TypeError) as caught:
            self.m.queue("taken")
        self.assertIn("'taken' is a dict, not a Queue", str(caught.exception))

    def test_the_process_authkey_is_the_servers(self):
        self.assertEqual(bytes(multiprocessing.current_process().authkey), os.environ["AGORA_AUTHKEY"].encode())


class StockClientRuntimeTypeid(unittest.TestCase):
    """No package: SyncManager.register('agora') is all it takes."""

    @classmethod
    def setUpClass(cls):
        cls.m = stock_manager()

    def test_ordinary_proxies_on_named_objects(self):
        rt = self.m.agora()
        d = rt.dict("from-rust")
        self.assertIs(type(d), DictProxy)
        self.assertEqual(d["greeting"], "hello")
        self.assertIs(type(rt.list("stock-list")), ListProxy)
        hits = rt.Value("stock-hits", "i", 1)
        self.assertIs(type(hits), ValueProxy)
        self.assertEqual(hits.value, 1)
        self.assertIs(type(rt.Lock("stock-lock")), AcquirerProxy)
        q = rt.Queue("stock-q", maxsize=2)
        q.put("a")
        self.assertEqual(rt.Queue("stock-q").get(), "a")
        self.assertIn("get_leased", q._exposed_)

    def test_shared_with_the_package(self):
        package = agora.connect()
        package.dict("both")["k"] = 1
        self.assertEqual(self.m.agora().dict("both")["k"], 1)

    def test_wrong_kind_and_missing_name(self):
        rt = self.m.agora()
        rt.dict("stock-taken")
        with self.assertRaises(TypeError):
            rt.Event("stock-taken")
        with self.assertRaises(TypeError):
            rt.dict()

    def test_unknown_typeid_says_what_to_do(self):
        class Typo(SyncManager):
            pass

        Typo.register("get_jobs")
        Typo.register("queue")
        m = Typo(agora.parse_address(None), os.environ["AGORA_AUTHKEY"].encode())
        m.connect()
        with self.assertRaises(RemoteError) as caught:
            m.get_jobs()
        text = str(caught.exception)
        for needle in ("KeyError", "'get_jobs'", "--expose get_jobs=KIND:NAME", "register('agora')", "README"):
            self.assertIn(needle, text)
        with self.assertRaises(RemoteError) as caught:
            m.queue()
        self.assertIn("did you mean 'Queue'?", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
