"""Reconnecting across a server restart (the server keeps its state in --data-dir).

The test driver restarts the server when this script prints `RESTART` on stdout,
and answers with a line on stdin once the new server listens; on `RESTART-LATE` it
answers as soon as the old server is gone, and starts the new one afterwards. Named objects come
back with their contents, through the very proxies opened before, in every thread;
a call with no server at all waits for it (reconnect_timeout).
"""

import sys
import threading
import unittest

import agora


def restart_server(late=False):
    """Asks the driver to restart the server; returns once it is back (`late`: once
    the old one is gone)."""
    print("RESTART-LATE" if late else "RESTART", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the test driver went away")


class Reconnect(unittest.TestCase):
    def test_named_objects_survive_a_restart(self):
        m = agora.connect(reconnect_timeout=60)
        jobs = m.dict("jobs")
        jobs["a"] = 1
        log = m.list("log")
        log.extend([1, 2])
        tasks = m.queue("tasks")
        tasks.put("t1")
        tasks.put("t2")
        hits = m.value("hits", "i", 5)
        lock = m.lock("db")
        with lock.fenced() as before:
            pass
        in_thread = {}

        def use_in_thread():
            in_thread["before"] = jobs["a"]  # this thread's own connection
            used.set()
            resume.wait()
            in_thread["after"] = jobs["a"]

        used, resume = threading.Event(), threading.Event()
        worker = threading.Thread(target=use_in_thread)
        worker.start()
        used.wait()

        restart_server()

        # The same proxies, no error: each thread's dead connection is replaced.
        self.assertEqual(jobs["a"], 1)
        self.assertEqual(log[:], [1, 2])
        self.assertEqual(tasks.get(timeout=30), "t1")
        self.assertEqual(hits.value, 5)
        with lock.fenced() as after:
            self.assertGreater(after, before, "fencing tokens persist and only grow")
        resume.set()
        worker.join()
        self.assertEqual(in_thread, {"before": 1, "after": 1})

        # New opens by name, writes that stick.
        jobs["b"] = 2
        self.assertEqual(m.dict("jobs").copy(), {"a": 1, "b": 2})
        self.assertEqual(m.queue("tasks").get(timeout=30), "t2")
        hits.value = 6
        print("WROTE", flush=True)

        restart_server(late=True)
        self.assertEqual(m.value("hits").value, 6)
        self.assertEqual(jobs.copy(), {"a": 1, "b": 2})


if __name__ == "__main__":
    unittest.main()
