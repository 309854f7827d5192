"""CPython's own manager conformance tests, run against an agora server.

Imports ``test._test_multiprocessing`` (shipped with CPython in ``Lib/test``), builds
the ``manager`` flavour of its test classes the way CPython's
``install_tests_in_module_dict(..., only_type='manager')`` does, but replaces the
class-level manager (``multiprocessing.Manager()``, a spawned CPython server) with a
``SyncManager(address, authkey).connect()`` to agora. Runs them with unittest and
prints the counts, then one JSON line.

Usage::

    AGORA_AUTHKEY=key python3 cpython_manager_suite.py --address 127.0.0.1:50000
    python3 cpython_manager_suite.py --address unix:/tmp/agora.sock --authkey key -v
    python3 cpython_manager_suite.py --address ... WithManagerTestQueue  # only matching tests

Exit status 0 when every test ran passed (or was skipped for a listed reason) and
no object leaked.

What is left out, and why (each shows up as a skip with this reason):

* ``_TestPool`` — a Pool runs pickled Python functions in worker processes forked
  from the server; agora never executes client code (its ``create('Pool')`` answers
  with an error saying so; tested in tests/tests/python.rs).
* ``_TestMyManager``, ``_TestRemoteManager``, ``_TestManagerRestart`` — they start
  their own CPython manager server (custom typeids backed by Python callables, a
  server process to restart): there is no agora in them to test.
* ``_TestBarrier.test_action`` and ``TestSyncManagerTypes.test_pool`` — a Barrier
  action and a Pool are Python code that would run inside the server.

The client does not set ``multiprocessing.current_process().authkey`` (unless
``--process-authkey``): over a Unix socket or loopback TCP agora hands nested
proxies the key itself.

``TestSyncManagerTypes`` (a plain TestCase that starts its own SyncManager per test)
is run too, redirected to agora: it shares every typeid between a parent and a child
process.
"""

import argparse
import gc
import json
import os
import sys
import time
import unittest

import multiprocessing
import multiprocessing.managers
import multiprocessing.util
from multiprocessing.managers import SyncManager

try:
    import test._test_multiprocessing as T
except ImportError as e:  # pragma: no cover - depends on the Python build
    print(json.dumps({"error": f"test._test_multiprocessing is not installed: {e}"}))
    sys.exit(3)

# Test classes of _test_multiprocessing that are left out, with the reason.
SKIPPED_CLASSES = {
    "_TestPool": "Pool runs pickled Python functions inside the server; agora never executes client code",
    "_TestMyManager": "starts its own CPython manager server with custom Python typeids",
    "_TestRemoteManager": "starts its own CPython manager server",
    "_TestManagerRestart": "starts, shuts down and restarts its own CPython manager server",
}

# Individual tests left out, with the reason.
SKIPPED_TESTS = {
    "WithManagerTestBarrier.test_action": "Barrier(action=callable) runs a pickled Python callable inside the "
    "server; agora never executes client code (it refuses the action with a clear error)",
    "TestSyncManagerTypes.test_pool": "Pool runs pickled Python functions inside the server; agora never "
    "executes client code",
}

ADDRESS = None
AUTHKEY = None


def parse_address(text):
    """agora's address syntax → what multiprocessing.connection expects."""
    if text.startswith("unix:"):
        return text[len("unix:"):]
    if text.startswith("/"):
        return text
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, _, port = text.rpartition(":")
    return (host, int(port))


def connect():
    """A SyncManager connected to agora (what the tests call ``self.manager``)."""
    manager = SyncManager(address=ADDRESS, authkey=AUTHKEY)
    manager.connect()
    return manager


def wait_for_no_objects(manager, baseline, timeout=10.0):
    """Collects garbage until agora's object count is back to ``baseline`` (decrefs
    from exiting child processes and finalizers may lag a little); the count."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        count = manager._number_of_objects()
        if count <= baseline or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


LEAKS = []


class AgoraManagerMixin(T.ManagerMixin):
    """ManagerMixin with the class-level manager connected to agora."""

    @classmethod
    def setUpClass(cls):
        super(T.ManagerMixin, cls).setUpClass()
        cls.manager = connect()
        cls.baseline = cls.manager._number_of_objects()

    @classmethod
    def tearDownClass(cls):
        # As CPython's ManagerMixin: let children finish, collect, then the server
        # must hold no object the tests made (CPython warns; we fail).
        deadline = time.monotonic() + 5.0
        while multiprocessing.active_children() and time.monotonic() < deadline:
            time.sleep(0.02)
        count = wait_for_no_objects(cls.manager, cls.baseline)
        if count != cls.baseline:
            LEAKS.append({"class": cls.__name__, "objects": count - cls.baseline,
                          "debug_info": cls.manager._debug_info()})
        cls.manager = None
        super(T.ManagerMixin, cls).tearDownClass()


class CountingResult(unittest.TextTestResult):
    """Counts passes itself (testsRun leaves out class-level skips on 3.12+)."""

    passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def skip_class(cls, reason):
    return unittest.skip(reason)(cls)


def build_manager_tests():
    """The manager test classes, as install_tests_in_module_dict builds them."""
    classes = {}
    for name, base in vars(T).items():
        if not isinstance(base, type) or not issubclass(base, T.BaseTestCase) or base is T.BaseTestCase:
            continue
        if "manager" not in base.ALLOWED_TYPES:
            continue
        newname = "WithManager" + name[1:]
        temp = type(newname, (base, AgoraManagerMixin, unittest.TestCase), {"__module__": __name__})
        temp.__qualname__ = newname
        if name in SKIPPED_CLASSES:
            temp = skip_class(temp, SKIPPED_CLASSES[name])
        classes[newname] = temp

    if hasattr(T, "TestSyncManagerTypes"):
        base = T.TestSyncManagerTypes

        class AgoraSyncManagerTypes(base):
            def setUp(self):
                self.manager = connect()
                self.baseline = self.manager._number_of_objects()
                self.proc = None

            def tearDown(self):
                if self.proc is not None and self.proc.is_alive():
                    self.proc.terminate()
                    self.proc.join()
                self.proc = None
                count = wait_for_no_objects(self.manager, self.baseline)
                if count != self.baseline:
                    LEAKS.append({"class": self.id(), "objects": count - self.baseline,
                                  "debug_info": self.manager._debug_info()})
                self.manager = None

        AgoraSyncManagerTypes.__name__ = AgoraSyncManagerTypes.__qualname__ = "TestSyncManagerTypes"
        classes["TestSyncManagerTypes"] = AgoraSyncManagerTypes

    for test_id, reason in SKIPPED_TESTS.items():
        cls_name, _, method = test_id.partition(".")
        cls = classes.get(cls_name)
        if cls is not None and hasattr(cls, method):
            setattr(cls, method, unittest.skip(reason)(getattr(cls, method)))
    return classes


# At import time, as install_tests_in_module_dict does: child processes started with
# "spawn" or "forkserver" unpickle test classes by their name in this module.
TEST_CLASSES = build_manager_tests()
globals().update(TEST_CLASSES)


def main():
    global ADDRESS, AUTHKEY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="agora address: host:port or unix:/path")
    parser.add_argument("--authkey", default=os.environ.get("AGORA_AUTHKEY"),
                        help="the authkey (default: $AGORA_AUTHKEY)")
    parser.add_argument("--start-method", default="fork", choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--process-authkey", action="store_true",
                        help="also set current_process().authkey to the key (the workaround remote "
                        "clients need for nested proxies)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("patterns", nargs="*", help="run only tests whose id contains one of these")
    args = parser.parse_args()
    if args.authkey is None:
        parser.error("no authkey: pass --authkey or set AGORA_AUTHKEY")
    ADDRESS = parse_address(args.address)
    AUTHKEY = args.authkey.encode()
    if args.process_authkey:
        multiprocessing.current_process().authkey = AUTHKEY
    multiprocessing.set_start_method(args.start_method, force=True)
    multiprocessing.util.get_temp_dir()
    multiprocessing.get_logger().setLevel(T.LOG_LEVEL)

    classes = {name: cls for name, cls in globals().items() if name in TEST_CLASSES}
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in sorted(classes):
        for test in loader.loadTestsFromTestCase(classes[name]):
            if not args.patterns or any(p in test.id() for p in args.patterns):
                suite.addTest(test)

    started = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2 if args.verbose else 1, stream=sys.stdout,
                                     resultclass=CountingResult)
    result = runner.run(suite)
    multiprocessing.util._cleanup_tests() if hasattr(multiprocessing.util, "_cleanup_tests") else None
    for leak in LEAKS:
        print(f"LEAK after {leak['class']}: {leak['objects']} object(s) left\n{leak['debug_info']}")
    summary = {
        "python": sys.version.split()[0],
        "run": result.passed + len(result.failures) + len(result.errors) + len(result.skipped),
        "passed": result.passed,
        "failures": len(result.failures),
        "errors": len(result.errors),
        "skipped": len(result.skipped),
        "leaks": len(LEAKS),
        "seconds": round(time.monotonic() - started, 1),
        "failed_tests": [t.id() for t, _ in result.failures + result.errors],
        "skips": sorted({reason for _, reason in result.skipped}),
    }
    print("AGORA-SUITE " + json.dumps(summary))
    ok = result.wasSuccessful() and not LEAKS
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
