#!/usr/bin/env python3
"""Failover time of a 3-node agora cluster: the last acknowledged write before the
leader is killed (SIGKILL) to the first acknowledged write after it.

One stock CPython client (standard library only) writes to a named dict as fast as it
can, starting through a follower (which relays it to the leader); a write that fails
with `RemoteError` (the leader died while it was under way; the follower keeps the
connection) is made again on the same proxy, and when its connection breaks it
connects to the next node and goes on. The script starts the cluster itself on loopback (default timeouts:
heartbeat 100 ms, election 0.4-0.8 s), kills the leader after a second of writes, and
repeats on a fresh cluster ROUNDS times.

    python3 bench/failover.py [--rounds 5] [--bin target/release/agora]

Prints each round's gap and the median. Every process it starts is stopped at exit.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.managers import RemoteError, SyncManager

SyncManager.register("agora")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leader_of(binary, peer, key_file):
    out = subprocess.run([binary, "cluster", "status", "--peer", peer, "--authkey-file", key_file],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("leader: node "):
            return int(line.split()[2])
    return None


def one_round(binary, workdir):
    key = os.urandom(16).hex()
    key_file = os.path.join(workdir, "key")
    with open(key_file, "w") as f:
        f.write(key)
    os.chmod(key_file, 0o600)
    peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    clients = {i: ("127.0.0.1", free_port()) for i in (1, 2, 3)}
    members = ",".join(f"{i}={p}" for i, p in peers.items())
    procs = {}
    for i in (1, 2, 3):
        procs[i] = subprocess.Popen(
            [binary, "serve", "--node-id", str(i), "--listen", f"{clients[i][0]}:{clients[i][1]}",
             "--peer-listen", peers[i], "--cluster", members, "--data-dir", os.path.join(workdir, f"n{i}"),
             "--authkey-file", key_file, "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        leader = None
        while leader is None and time.time() < deadline:
            time.sleep(0.1)
            leader = leader_of(binary, peers[1], key_file)
        if leader is None:
            raise RuntimeError("no leader")
        order = [i for i in (1, 2, 3) if i != leader] + [leader]
        acks = []
        d = None
        turn = 0
        killed_at = None
        reconnects = 0
        i = 0
        while True:
            now = time.time()
            if killed_at is None and acks and now - acks[0] > 1.0:
                procs[leader].send_signal(signal.SIGKILL)
                procs[leader].wait()
                killed_at = time.time()
            if killed_at is not None and acks and acks[-1] > killed_at + 1.0:
                break
            if killed_at is not None and now - killed_at > 20:
                raise RuntimeError("no write acknowledged within 20 s of the kill")
            try:
                if d is None:
                    node = order[turn % len(order)]
                    turn += 1
                    if node == leader and killed_at is not None:
                        continue
                    m = SyncManager(address=clients[node], authkey=key.encode())
                    m.connect()
                    d = m.agora().dict("failover")
                d[i % 100] = i
                acks.append(time.time())
                i += 1
            except RemoteError:
                # The connection lives on (a follower relays it): the same proxy goes on.
                time.sleep(0.01)
            except (OSError, EOFError, ConnectionError, Exception):
                d = None
                reconnects += 1
                time.sleep(0.01)
        before = max(t for t in acks if t < killed_at)
        after = min(t for t in acks if t > killed_at)
        return after - before, reconnects
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bin", default=os.environ.get("AGORA_BIN", "target/release/agora"))
    args = parser.parse_args()
    gaps = []
    for r in range(args.rounds):
        workdir = tempfile.mkdtemp(prefix="agora-failover-")
        try:
            gap, reconnects = one_round(args.bin, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        gaps.append(gap)
        print(f"round {r + 1}: last ack before the kill -> first ack after: {gap * 1000:.0f} ms "
              f"({reconnects} new connections)", flush=True)
    print(f"median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms over {len(gaps)} rounds "
          f"(CPython {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
