"""Stock CPython clients read a big value, then make small calls: the server's reply
buffers, grown by the big reply, must be given back (tests/tests/memory.rs).  Each of
COUNT threads has a connection of its own (a proxy connects once per thread); the
value is the named dict `stored`'s "v" (`--expose stored=dict:stored`).  The server's
memory in use comes from `AGORA stats --json` (what its allocator has handed out and
not had back: freed memory the allocator keeps, or gives back later, does not count).
Usage: big_replies.py ADDRESS AGORA COUNT BYTES (authkey in $AGORA_AUTHKEY)."""

import json
import os
import subprocess
import sys
import threading
import time
from multiprocessing.managers import BaseManager


class Manager(BaseManager):
    pass


Manager.register("stored")


def in_use(agora, address):
    out = subprocess.run([agora, "stats", "-a", address, "--json"], check=True, capture_output=True)
    return json.loads(out.stdout)["memory"]["in_use"]


def wait_for(what, check, agora, address):
    # The server samples its memory a few times a second; the deadline is a hang guard.
    deadline = time.monotonic() + 20
    while True:
        now = in_use(agora, address)
        if check(now):
            return now
        assert time.monotonic() < deadline, "%s: in use %d" % (what, now)
        time.sleep(0.1)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    agora, count, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    manager = Manager((host, int(port)), authkey=os.environ["AGORA_AUTHKEY"].encode())
    manager.connect()
    stored = manager.stored()
    connected = threading.Barrier(count + 1)
    measured = threading.Barrier(count + 1)
    read = threading.Barrier(count + 1)
    small = threading.Barrier(count + 1)
    # A thread's connection closes when the thread ends: they stay until checked.
    checked = threading.Barrier(count + 1)

    def client():
        stored.get("missing")  # this thread's connection
        connected.wait()
        measured.wait()
        assert len(stored.get("v")) == size
        read.wait()
        small.wait()
        for _ in range(20):
            stored.get("missing")
        checked.wait()

    # Daemons: a failed check must not leave them waiting at a barrier forever.
    threads = [threading.Thread(target=client, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    connected.wait()
    time.sleep(0.3)  # a sample after the connections' own buffers
    before = in_use(agora, sys.argv[1])
    measured.wait()
    read.wait()
    held = wait_for("the big replies' buffers held", lambda n: n >= before + count * size * 3 // 4, agora, sys.argv[1])
    small.wait()
    # (held, they would add count * size: a third of that is the bound)
    after = wait_for("the buffers given back", lambda n: n < before + count * size // 3, agora, sys.argv[1])
    checked.wait()
    for t in threads:
        t.join()
    print("OK big_replies %d -> %d -> %d" % (before, held, after))


if __name__ == "__main__":
    main()
