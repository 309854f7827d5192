"""Stock CPython clients read a big value, then make small calls: the server's reply
buffers, grown by the big reply, must be given back (tests/tests/memory.rs).  Each of
COUNT threads has a connection of its own (a proxy connects once per thread); the
value is the named dict `stored`'s "v" (`--expose stored=dict:stored`).  The server's
resident size is read from /proc/PID/status.  Usage: big_replies.py ADDRESS PID COUNT
BYTES (authkey in $AGORA_AUTHKEY)."""

import os
import sys
import threading
import time
from multiprocessing.managers import BaseManager


class Manager(BaseManager):
    pass


Manager.register("stored")


def resident(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_for(what, check, pid):
    deadline = time.monotonic() + 20  # a hang guard, not a timing
    while True:
        now = resident(pid)
        if check(now):
            return now
        assert time.monotonic() < deadline, "%s: resident %d" % (what, now)
        time.sleep(0.05)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    pid, count, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    manager = Manager((host, int(port)), authkey=os.environ["AGORA_AUTHKEY"].encode())
    manager.connect()
    stored = manager.stored()
    connected = threading.Barrier(count + 1)
    read = threading.Barrier(count + 1)
    small = threading.Barrier(count + 1)
    # A thread's connection closes when the thread ends: they stay until checked.
    checked = threading.Barrier(count + 1)

    def client():
        stored.get("missing")  # this thread's connection
        connected.wait()
        assert len(stored.get("v")) == size
        read.wait()
        small.wait()
        for _ in range(20):
            stored.get("missing")
        checked.wait()

    threads = [threading.Thread(target=client) for _ in range(count)]
    for t in threads:
        t.start()
    connected.wait()
    before = resident(pid)
    read.wait()
    held = wait_for("the big replies' buffers held", lambda n: n >= before + count * size * 3 // 4, pid)
    small.wait()
    # (held, they would add count * size: a third of that is the bound)
    after = wait_for("the buffers given back", lambda n: n < before + count * size // 3, pid)
    checked.wait()
    for t in threads:
        t.join()
    print("OK big_replies %d -> %d -> %d" % (before, held, after))


if __name__ == "__main__":
    main()
