#!/usr/bin/env python3
"""--max-memory, measured (BENCHMARKS.md section 8).

For each setting, starts `agora serve` on a Unix socket, then a stock CPython client
stores 8 MiB bytes values in a dict until the server refuses one (MemoryError) or
PUTS were stored, pops them all, and waits. Reports how many were stored and refused,
the server's resident size at the peak and 1 s / 3 s after the drain (from
/proc/PID/status), and what `agora stats` calls "in use".  Also times dict sets of
small values with and without a limit (the gate's cost on the hot path).

    python3 bench/memory.py [--agora target/release/agora] [--puts 183]

Not part of CI: it needs about 2 GB of memory.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing.managers import SyncManager

ITEM = 8 << 20
KEY = b"memory-bench"


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def stats(agora, socket):
    out = subprocess.run(
        [agora, "stats", "--json", "--address", "unix:" + socket],
        env=dict(os.environ, AGORA_AUTHKEY=KEY.decode()),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


@contextlib.contextmanager
def serving(agora, limit):
    """`agora serve` on a Unix socket in a temporary directory (with --max-memory
    `limit`, if given); yields the server process and a connected SyncManager."""
    with tempfile.TemporaryDirectory() as tmp:
        socket = os.path.join(tmp, "agora.sock")
        extra = ["--max-memory", limit] if limit else []
        server = subprocess.Popen(
            [agora, "serve", "--listen", "unix:" + socket, "--log-level", "warn"] + extra,
            env=dict(os.environ, AGORA_AUTHKEY=KEY.decode()),
        )
        try:
            deadline = time.time() + 30
            while not os.path.exists(socket):
                assert time.time() < deadline, "the server did not start"
                time.sleep(0.05)
            manager = SyncManager(socket, authkey=KEY)
            manager.connect()
            yield server, manager, socket
        finally:
            server.terminate()
            server.wait()


def fill_and_drain(agora, limit, puts):
    with serving(agora, limit) as (server, manager, socket):
        d = manager.dict()
        stored = refused = 0
        began = time.perf_counter()
        for i in range(puts):
            try:
                d[i] = bytes([i % 256]) * ITEM
                stored += 1
            except MemoryError:
                refused += 1
                break
        took = time.perf_counter() - began
        peak = rss_mib(server.pid)
        in_use = (stats(agora, socket).get("memory") or {}).get("in_use", 0) / (1 << 20)
        for i in range(stored):
            d.pop(i)
        time.sleep(1)
        after_1s = rss_mib(server.pid)
        time.sleep(2)
        after_3s = rss_mib(server.pid)
        return dict(limit=limit or "none", stored=stored, refused=refused, took=took, peak=peak,
                    in_use=in_use, after_1s=after_1s, after_3s=after_3s)


def small_sets(agora, limit, n):
    with serving(agora, limit) as (_, manager, _):
        d = manager.dict()
        began = time.perf_counter()
        for i in range(n):
            d[i % 1000] = i
        return n / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agora", default="target/release/agora")
    parser.add_argument("--puts", type=int, default=183)
    parser.add_argument("--sets", type=int, default=50000)
    args = parser.parse_args()
    print("| --max-memory | 8 MiB puts stored | refused | time | RSS at peak | in use at peak | RSS 1 s after drain | RSS 3 s after drain |")
    print("|---|---|---|---|---|---|---|---|")
    for limit in [None, "512MiB", "128MiB"]:
        r = fill_and_drain(args.agora, limit, args.puts)
        print("| %(limit)s | %(stored)d | %(refused)d | %(took).2f s | %(peak).0f MiB | %(in_use).0f MiB | %(after_1s).0f MiB | %(after_3s).0f MiB |" % r)
    print()
    print("| dict set of a small int, one CPython client (unix) | sets/s |")
    print("|---|---|")
    for round_ in range(3):
        for limit in [None, "1GiB"]:
            rate = small_sets(args.agora, limit, args.sets)
            print("| round %d, --max-memory %s | %.0f |" % (round_ + 1, limit or "none", rate))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
