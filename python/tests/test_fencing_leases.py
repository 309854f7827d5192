"""Fenced locks (tokens that only grow, across threads and kinds) and leased gets
(acked on success, redelivered after an exception, renewed in the background)."""

import queue
import threading
import unittest

import agora


class Fencing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = agora.connect()

    def test_tokens_only_grow(self):
        lock = self.m.lock("fenced")
        tokens = []
        for _ in range(5):
            with lock.fenced() as token:
                tokens.append(token)
        with agora.fenced(lock) as token:  # the function form, same lock
            tokens.append(token)
        self.assertTrue(all(isinstance(t, int) for t in tokens), tokens)
        self.assertEqual(tokens, sorted(set(tokens)), "strictly increasing")

    def test_tokens_grow_across_holders(self):
        lock = self.m.lock("fenced-threads")
        tokens = []

        def worker():
            for _ in range(10):
                with lock.fenced(timeout=60) as token:
                    tokens.append(token)  # under the lock: appended in grant order

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(tokens), 40)
        self.assertEqual(tokens, sorted(set(tokens)))

    def test_a_held_lock_times_out_and_is_released_after(self):
        lock = self.m.lock("fenced-busy")
        with lock.fenced() as first:
            failed = []

            def contender():
                try:
                    with lock.fenced(timeout=0.1):
                        pass
                except TimeoutError:
                    failed.append(True)

            t = threading.Thread(target=contender)
            t.start()
            t.join()
            self.assertEqual(failed, [True])
        self.assertTrue(lock.acquire(False), "released on leaving the block")
        lock.release()
        with lock.fenced() as later:
            self.assertGreater(later, first)

    def test_other_lock_kinds(self):
        for lock in (self.m.rlock("f-rl"), self.m.semaphore("f-s", 2), self.m.condition("f-c")):
            with lock.fenced() as a:
                pass
            with lock.fenced() as b:
                pass
            self.assertGreater(b, a, type(lock))

    def test_stock_proxies_too(self):
        stock = self.m.Lock()  # any proxy with _callmethod
        with agora.fenced(stock) as a:
            pass
        with agora.fenced(stock) as b:
            pass
        self.assertGreater(b, a)


class Leases(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.m = agora.connect()

    def test_acked_on_success(self):
        q = self.m.queue("lease-ok")
        q.put("job")
        with q.leased() as item:
            self.assertEqual(item, "job")
        self.assertEqual(q.qsize(), 0)
        with self.assertRaises(queue.Empty):
            q.get_nowait()

    def test_redelivered_after_an_exception(self):
        q = self.m.queue("lease-fail")
        q.put("first")
        q.put("second")
        with self.assertRaises(ZeroDivisionError):
            with q.leased() as item:
                self.assertEqual(item, "first")
                1 / 0
        self.assertEqual(q.qsize(), 2, "nacked: back in the queue")
        with q.leased() as item:
            self.assertEqual(item, "first", "back at the head")
        with agora.leased(q) as item:  # the function form
            self.assertEqual(item, "second")
        self.assertEqual(q.qsize(), 0)

    def test_joinable_queue_counts_acks_as_task_done(self):
        q = self.m.joinable_queue("lease-join")
        q.put(1)
        with q.leased():
            pass
        q.join()  # returns: the ack was the task_done

    def test_empty_raises_like_get(self):
        q = self.m.queue("lease-empty")
        with self.assertRaises(queue.Empty):
            with q.leased(block=False):
                self.fail("no item")

    def test_background_renewal_keeps_the_lease(self):
        q = self.m.queue("lease-renew")
        q.put("long")
        done = threading.Event()
        with q.leased(lease=2.0, renew=True) as item:
            # More than two lease terms pass while we hold it: no one else gets it.
            other = agora.connect().queue("lease-renew")
            with self.assertRaises(queue.Empty):
                other.get(timeout=5.0)
            done.set()
        self.assertEqual(item, "long")
        self.assertTrue(done.is_set())
        self.assertEqual(q.qsize(), 0)

    def test_an_unrenewed_lease_expires_and_the_item_comes_back(self):
        q = self.m.queue("lease-expire")
        q.put("short")
        receipt, item = q.get_leased(lease=0.2)
        self.assertEqual(q.get(timeout=30), "short", "redelivered once the lease ran out")
        self.assertEqual(item, "short")
        with self.assertRaises(Exception):
            q.ack(receipt)


if __name__ == "__main__":
    unittest.main()
