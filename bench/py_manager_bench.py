#!/usr/bin/env python3
"""Stock CPython manager clients against CPython's own SyncManager server and agora.

One run measures, for each operation and for K = 1, 2, 4, 8 client processes at once,
the aggregate throughput and the per-call round-trip latency, first against a
CPython ``SyncManager`` server this script starts itself (same Python, same kind of
address as agora's: loopback TCP or a Unix socket), then against an agora server
you started. Standard library only; CPython 3.8+.

Usage::

    AGORA_AUTHKEY=key python3 bench/py_manager_bench.py --agora 127.0.0.1:50000
    python3 bench/py_manager_bench.py --agora unix:/tmp/agora.sock --authkey key \\
        --clients 1,2,4,8 --duration 2 --json results.json

Operations (each client process works on the same shared objects):

* ``dict_set``        ``d[k] = i`` (100 keys)
* ``dict_get``        ``d[k]``
* ``list_append``     ``l.append(i)``
* ``queue_put_get``   ``q.put(i); q.get()``        (two round trips per op)
* ``lock``            ``lock.acquire(); lock.release()`` (two round trips, contended)
* ``proxy_create``    ``m.dict()`` then dropping it (create + incref + decref + decref:
  four new connections per op — where CPython's Nagle/delayed-ACK stall shows over TCP)

The floor (``--echo ADDR``, target ``echo``): the same client processes make the same
round trips — a request pickled as the proxy pickles it, sent and read back through
``multiprocessing.connection`` — against an echo server that returns every frame as
it came (``agora bench --serve-echo --echo-threads --echo-handshake``, a thread per
connection blocked in ``recv``, as CPython's manager serves one, each connection
authenticated with the authkey as a manager's is). With ``--echo-pid`` its CPU per op
is the least any server that sleeps between a client's calls spends on them: the
kernel's ``recv``, ``send``, sleep and wake-up, and nothing else. For ``lock`` the floor
hands a lock off: an ``acquire`` waits until no other connection holds the echo
server's one lock, as CPython's manager's thread waits in ``Lock.acquire``, and a
``release`` frees it. For ``proxy_create`` each of the four calls is a connection of
its own, authenticated, as the manager's are.

Prints a table, then one line ``JSON {...}`` (and writes it to ``--json FILE``) with
every measurement and the ratio agora/CPython for throughput (>1: agora is faster)
and p50 latency (<1: agora is faster). With ``--agora-pid PID`` it also reports each
server's CPU time per operation (user + system, from /proc: the CPython server's pid
is known to the script) and their ratio (<1: agora's server spends less).

Each target's client processes also count their own CPU time (``client_cpu_us`` per
op): once the machine's cores are busy, it bounds the rate whatever the server does.
``client_bound_ratio`` is the most these clients could do on this machine, ÷ CPython's
rate, with a server that spent nothing (each process uses at most one core, and all
share the machine's); ``floor_bound_ratio`` the same with a server that spent what the
floor's does. Where a goal such as "2× CPython's manager" is above them, the clients'
own CPU is the ceiling, not the server.
"""

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Client
from multiprocessing.managers import SyncManager

OPS = ["dict_set", "dict_get", "list_append", "queue_put_get", "lock", "proxy_create"]
MAX_SAMPLES = 20000  # latency samples kept per client and run


def parse_address(text):
    if text.startswith("unix:"):
        return text[len("unix:"):]
    if text.startswith("/"):
        return text
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, _, port = text.rpartition(":")
    return (host, int(port))


def show_address(address):
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else f"unix:{address}"


def connect(address, authkey):
    m = SyncManager(address=address, authkey=authkey)
    m.connect()
    return m


def make_objects(m):
    d = m.dict()
    for i in range(100):
        d[f"k{i}"] = i
    return {"dict": d, "list": m.list(), "queue": m.Queue(), "lock": m.Lock()}


def step(op, objs, manager, i):
    """One measured operation."""
    if op == "dict_set":
        objs["dict"][f"k{i % 100}"] = i
    elif op == "dict_get":
        objs["dict"][f"k{i % 100}"]
    elif op == "list_append":
        objs["list"].append(i)
    elif op == "queue_put_get":
        objs["queue"].put(i)
        objs["queue"].get()
    elif op == "lock":
        objs["lock"].acquire()
        objs["lock"].release()
    elif op == "proxy_create":
        d = manager.dict()
        del d
    else:
        raise ValueError(op)


# The floor's round trips per op, each the request a proxy sends for it: ``(token id,
# method, args, kwds)``, pickled by ``Connection.send`` as ``_callmethod`` does.
ECHO_CALLS = {
    "dict_set": [("__setitem__", ("k1", 1))],
    "dict_get": [("__getitem__", ("k1",))],
    "list_append": [("append", (1,))],
    "queue_put_get": [("put", (1,)), ("get", ())],
    "lock": [("acquire", ()), ("release", ())],
}


ECHO_TOKEN = "7f3b2c1d9e80"  # a token id as CPython's manager writes one

# The floor's calls that are each a connection of their own: ``(None, method, args,
# kwds)``, as ``BaseManager``'s ``dispatch`` sends them.
ECHO_CONNECTIONS = {
    "proxy_create": [("create", ("dict",)), ("incref", (ECHO_TOKEN,)), ("decref", (ECHO_TOKEN,)),
                     ("decref", (ECHO_TOKEN,))],
}


def has_floor(op):
    return op in ECHO_CALLS or op in ECHO_CONNECTIONS


def echo_step(op, conn, address, authkey):
    """One floor operation: the op's round trips, each echoed back and unpickled (on a
    new authenticated connection each, for the calls a manager makes that way)."""
    for method, args in ECHO_CONNECTIONS.get(op, ()):
        one_shot = Client(address, authkey=authkey)
        one_shot.send((None, method, args, {}))
        one_shot.recv()
        one_shot.close()
    for method, args in ECHO_CALLS.get(op, ()):
        conn.send((ECHO_TOKEN, method, args, {}))
        conn.recv()


def check_echo_authenticates(address):
    """The floor's clients authenticate: fail clearly, not hang, if the echo server does
    not challenge a new connection (it was started without --echo-handshake)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(address)
        except OSError as e:
            raise SystemExit(f"cannot connect to the echo server at {show_address(address)}: {e}")
        try:
            first = s.recv(64)
        except socket.timeout:
            first = b""
    if b"#CHALLENGE#" not in first:
        raise SystemExit(f"the echo server at {show_address(address)} does not authenticate its connections: "
                         "start it with `agora bench --serve-echo --echo-threads --echo-handshake` "
                         "and the same authkey")


def client(op, objs, address, authkey, duration, warmup, start, results):
    """One client process: warm up, wait for the others, run for `duration` seconds."""
    if objs is None:  # the floor: a connection of this process's own
        conn = Client(address, authkey=authkey)
        one = lambda i: echo_step(op, conn, address, authkey)  # noqa: E731
    else:
        manager = connect(address, authkey) if op == "proxy_create" else None
        one = lambda i: step(op, objs, manager, i)  # noqa: E731
    gc.disable()
    t_end = time.perf_counter() + warmup
    i = 0
    while time.perf_counter() < t_end:
        one(i)
        i += 1
    start.wait()
    samples = []
    ops = 0
    now = time.perf_counter
    cpu_began = time.process_time()
    began = now()
    deadline = began + duration
    t = began
    while t < deadline:
        one(i)
        t2 = now()
        samples.append(t2 - t)
        t = t2
        i += 1
        ops += 1
    elapsed = t - began
    cpu = time.process_time() - cpu_began
    if len(samples) > MAX_SAMPLES:
        stride = len(samples) / MAX_SAMPLES
        samples = [samples[int(j * stride)] for j in range(MAX_SAMPLES)]
    results.put((ops, elapsed, samples, cpu))


def percentile(sorted_samples, q):
    if not sorted_samples:
        return float("nan")
    k = min(len(sorted_samples) - 1, max(0, int(round(q * (len(sorted_samples) - 1)))))
    return sorted_samples[k]


def process_cpu(pid):
    """CPU seconds (user + system) process `pid` has used, from /proc (None if unknown)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


def measure(target, address, authkey, op, clients, duration, warmup, server_pid=None):
    """Runs `clients` processes doing `op` for `duration` seconds; the aggregate, with
    the server's CPU time per operation when its pid is known."""
    m = None if target == "echo" else connect(address, authkey)
    objs = None if m is None else make_objects(m)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=client, args=(op, objs, address, authkey, duration, warmup, start, results))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    start.wait(timeout=120)
    cpu_before = process_cpu(server_pid)
    got = [results.get(timeout=duration + 120) for _ in procs]
    cpu_after = process_cpu(server_pid)
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"{target} {op} K={clients}: a client exited with {p.exitcode}")
    total_ops = sum(r[0] for r in got)
    elapsed = max(r[1] for r in got)
    samples = sorted(s for r in got for s in r[2])
    del objs
    gc.collect()
    return {
        "ops": total_ops,
        "seconds": round(elapsed, 3),
        "ops_per_sec": round(total_ops / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_us": round(percentile(samples, 0.50) * 1e6, 1),
        "p99_us": round(percentile(samples, 0.99) * 1e6, 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1) if samples else float("nan"),
        # /proc counts in 10 ms ticks: over a 1.5 s run of ~20,000 ops that is ±0.5 µs.
        "server_cpu_us": (round((cpu_after - cpu_before) / total_ops * 1e6, 2)
                          if cpu_before is not None and cpu_after is not None and total_ops else None),
        # The client processes' own CPU (user + system) per op: what bounds the rate once
        # the cores are busy, whatever the server spends (`rate_bound`).
        "client_cpu_us": round(sum(r[3] for r in got) / total_ops * 1e6, 2) if total_ops else None,
    }


def rate_bound(clients, client_cpu_us, server_cpu_us=0.0, cpus=None):
    """The most ops/s `clients` processes can make on this machine's `cpus` cores when
    together they spend `client_cpu_us` per op and a server on the same cores spends
    `server_cpu_us`: each process uses at most one core, and clients and server share
    them all."""
    cpus = cpus or os.cpu_count() or 1
    if not client_cpu_us:
        return None
    return min(min(clients, cpus) * 1e6 / client_cpu_us, cpus * 1e6 / (client_cpu_us + (server_cpu_us or 0.0)))


def start_cpython_server(kind, authkey, tmpdir):
    """CPython's own SyncManager server, in a child process, on the same kind of address."""
    address = os.path.join(tmpdir, "cpython.sock") if kind == "unix" else ("127.0.0.1", 0)
    manager = SyncManager(address=address, authkey=authkey)
    manager.start()
    return manager


def ratio(a, b):
    return round(a / b, 2) if b else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agora", required=True, help="agora's address: host:port or unix:/path")
    parser.add_argument("--authkey", default=os.environ.get("AGORA_AUTHKEY"),
                        help="agora's authkey (default: $AGORA_AUTHKEY)")
    parser.add_argument("--clients", default="1,2,4,8", help="client process counts (default 1,2,4,8)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"operations (default {','.join(OPS)})")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per client (default 0.3)")
    parser.add_argument("--targets", default="cpython,agora", help="which servers (default cpython,agora)")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON results here")
    parser.add_argument("--agora-pid", type=int, help="agora server's pid: also report its CPU time per op")
    parser.add_argument("--echo", metavar="ADDR",
                        help="the floor's echo server (agora bench --serve-echo --echo-threads --echo-handshake, "
                             "with the same authkey): adds target echo")
    parser.add_argument("--echo-pid", type=int, help="the echo server's pid: also report its CPU time per op")
    args = parser.parse_args()
    if args.authkey is None:
        parser.error("agora's authkey: pass --authkey or set AGORA_AUTHKEY")
    ops = [o for o in args.ops.split(",") if o]
    unknown = set(ops) - set(OPS)
    if unknown:
        parser.error(f"unknown operations: {', '.join(sorted(unknown))}")
    client_counts = [int(k) for k in args.clients.split(",") if k]
    targets = [t for t in args.targets.split(",") if t]
    if args.echo and "echo" not in targets:
        targets.append("echo")
    if "echo" in targets and not args.echo:
        parser.error("target echo needs --echo ADDR")
    unknown = set(targets) - {"cpython", "agora", "echo"}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    agora_address = parse_address(args.agora)
    kind = "tcp" if isinstance(agora_address, tuple) else "unix"
    authkey = args.authkey.encode()

    tmpdir = tempfile.mkdtemp(prefix="py-manager-bench-")
    cpython = None
    addresses = {"agora": agora_address}
    pids = {"agora": args.agora_pid}
    if args.echo:
        addresses["echo"] = parse_address(args.echo)
        pids["echo"] = args.echo_pid
        if isinstance(addresses["echo"], tuple) != isinstance(agora_address, tuple):
            parser.error("--echo must be the same kind of address as --agora (TCP or Unix)")
        check_echo_authenticates(addresses["echo"])
    try:
        if "cpython" in targets:
            cpython = start_cpython_server(kind, authkey, tmpdir)
            addresses["cpython"] = cpython.address
            pids["cpython"] = cpython._process.pid
        results = []
        print(f"CPython {sys.version.split()[0]} clients, {kind}; agora at {show_address(agora_address)}"
              + (f", CPython server at {show_address(addresses['cpython'])}" if cpython else ""), flush=True)
        header = f"{'op':<14} {'K':>2} " + "".join(
            f"{t + ' ops/s':>15} {t + ' p50/p99 us':>22} " for t in targets) + ("   ratio" if {"cpython", "agora"} <= set(targets) else "")
        print(header)
        print("-" * len(header))
        for op in ops:
            for k in client_counts:
                row = {"op": op, "clients": k}
                for target in targets:
                    if target == "echo" and not has_floor(op):
                        continue
                    row[target] = measure(target, addresses[target], authkey, op, k, args.duration, args.warmup,
                                          pids.get(target))
                if "cpython" in row and "agora" in row:
                    row["throughput_ratio"] = ratio(row["agora"]["ops_per_sec"], row["cpython"]["ops_per_sec"])
                    a_cpu, c_cpu = row["agora"]["server_cpu_us"], row["cpython"]["server_cpu_us"]
                    if a_cpu is not None and c_cpu:
                        row["server_cpu_ratio"] = ratio(a_cpu, c_cpu)
                    row["p50_ratio"] = ratio(row["agora"]["p50_us"], row["cpython"]["p50_us"])
                if "cpython" in row and "echo" in row:
                    e_cpu, c_cpu = row["echo"]["server_cpu_us"], row["cpython"]["server_cpu_us"]
                    if e_cpu is not None and c_cpu:
                        # Below 1/3: a server could meet "a third of CPython's server" here.
                        row["floor_cpu_ratio"] = ratio(e_cpu, c_cpu)
                if "cpython" in row and "agora" in row:
                    # How far above CPython's rate these clients could go on this machine
                    # with agora's clients' own CPU per op: with a server that cost nothing,
                    # and with one that cost what the floor's does.
                    c_rate, own = row["cpython"]["ops_per_sec"], row["agora"]["client_cpu_us"]
                    free = rate_bound(k, own)
                    if free and c_rate:
                        row["client_bound_ratio"] = ratio(free, c_rate)
                    e_cpu = row.get("echo", {}).get("server_cpu_us")
                    floored = rate_bound(k, own, e_cpu) if e_cpu is not None else None
                    if floored and c_rate:
                        row["floor_bound_ratio"] = ratio(floored, c_rate)
                results.append(row)
                line = f"{op:<14} {k:>2} " + "".join(
                    f"{row[t]['ops_per_sec']:>15,.0f} {str(row[t]['p50_us']) + ' / ' + str(row[t]['p99_us']):>22} "
                    if t in row else f"{'-':>15} {'-':>22} "
                    for t in targets)
                if "throughput_ratio" in row:
                    line += f"{row['throughput_ratio']:>7}x"
                cpus = [row[t]["server_cpu_us"] for t in targets if t in row]
                if cpus and all(c is not None for c in cpus):
                    line += "   server CPU/op us " + " / ".join(f"{c}" for c in cpus)
                print(line, flush=True)
        report = {
            "python": sys.version.split()[0],
            "transport": kind,
            "duration": args.duration,
            "agora_address": show_address(agora_address),
            "results": results,
        }
        text = json.dumps(report)
        print("JSON " + text)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    finally:
        if cpython is not None:
            cpython.shutdown()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
