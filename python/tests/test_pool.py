"""A Pool whose workers use proxies of a connected manager: with the package
(agora.connect sets the process authkey) and with a stock SyncManager plus the
documented one-liner, under both the fork and the spawn start methods."""

import multiprocessing
import os
import unittest
from multiprocessing.managers import SyncManager

import agora

WORK = 20


def square_into(job):
    results, done, n = job
    results[n] = n * n
    done.put(n)
    return n


def count_under_lock(job):
    counter, lock, n = job
    with lock:
        counter.value += 1
    return n


class PoolPattern(unittest.TestCase):
    def setUp(self):
        # Not the server's key, until the code under test makes it so.
        multiprocessing.current_process().authkey = b"not-the-server-key"

    def run_pool(self, method, results, done, counter, lock):
        ctx = multiprocessing.get_context(method)
        results.clear()
        counter.value = 0
        with ctx.Pool(2) as pool:
            got = pool.map(square_into, [(results, done, n) for n in range(WORK)])
            pool.map(count_under_lock, [(counter, lock, n) for n in range(WORK)])
        self.assertEqual(sorted(got), list(range(WORK)))
        self.assertEqual(results.copy(), {n: n * n for n in range(WORK)})
        self.assertEqual(sorted(done.get(timeout=30) for _ in range(WORK)), list(range(WORK)))
        self.assertEqual(counter.value, WORK)

    def test_package_connect(self):
        m = agora.connect()
        for method in ("fork", "spawn"):
            with self.subTest(method=method):
                self.run_pool(
                    method,
                    m.dict("pool-%s" % method),
                    m.queue("pool-done-%s" % method),
                    m.value("pool-count-%s" % method, "i", 0),
                    m.lock("pool-lock-%s" % method),
                )

    def test_stock_manager_with_the_one_liner(self):
        key = os.environ["AGORA_AUTHKEY"].encode()
        m = SyncManager(agora.parse_address(None), key)
        m.connect()
        multiprocessing.current_process().authkey = key  # the one-liner
        for method in ("fork", "spawn"):
            with self.subTest(method=method):
                self.run_pool(method, m.dict(), m.Queue(), m.Value("i", 0), m.Lock())


if __name__ == "__main__":
    unittest.main()
