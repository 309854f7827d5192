#!/usr/bin/env python3
"""Two agora builds side by side: a change's before/after, in one run.

    bench/compare.py --baseline OLD/agora --candidate target/release/agora [--rounds 3]

Starts one `agora serve` of each build (TCP and a Unix socket each), then runs the same
`agora bench` workloads against both, interleaved round by round (every build gets
every round, in alternating order, so a noisy phase of the machine hits both), and
prints a Markdown table of medians: throughput, p50 and p99, and server CPU per
request (from the server process's own CPU time). The bench client is the
candidate's `agora bench` for both servers, so only the server differs.

Rows: one client (latency), 50 clients (throughput), 50 clients x 16 in flight
(`-P 16`), plus the blocking paths (contended lock, event wake-up, queue hand-off).
Loopback and Unix sockets only; every process it starts is stopped when it ends.
Standard library only.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AUTHKEY = "agora-compare-" + os.urandom(8).hex()

# (label, clients, pipeline, requests, tests)
ROWS = [
    ("1 client", 1, 1, 20_000, "ping,set,get,qput,qget,lock,queue"),
    ("50 clients", 50, 1, 100_000, "set,get,add,lock-contended,event"),
    ("50 clients -P 16", 50, 16, 300_000, "set,get"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_connect(address):
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(address[5:])
        else:
            host, port = address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1):
                pass
        return True
    except OSError:
        return False


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def env():
    e = dict(os.environ)
    e["AGORA_AUTHKEY"] = AUTHKEY
    for k in ("AGORA_ADDRESS", "AGORA_AUTHKEY_FILE", "AGORA_CONFIG"):
        e.pop(k, None)
    return e


def start(binary, tmp, name):
    addr = {"tcp": f"127.0.0.1:{free_port()}", "unix": f"unix:{tmp / (name + '.sock')}"}
    cmd = [str(binary), "serve", "--listen", addr["tcp"], "--listen", addr["unix"], "--max-connections", "2000",
           "--heartbeat-timeout", "60s", "--log-level", "warn"]
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 20
    while not all(can_connect(a) for a in addr.values()):
        if time.monotonic() > end or p.poll() is not None:
            p.kill()
            sys.exit(f"{binary} did not come up")
        time.sleep(0.05)
    return p, addr


def bench(client, address, clients, pipeline, requests, tests):
    cmd = [str(client), "bench", "--address", address, "-c", str(clients), "-P", str(pipeline),
           "-n", str(requests), "-t", tests, "--json"]
    out = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        print(f"# failed: {' '.join(cmd)}: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return []
    return json.loads(out.stdout).get("results", [])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the agora binary before the change")
    ap.add_argument("--candidate", required=True, help="the agora binary after the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    ap.add_argument("--only", default="", help="run only the rows whose label contains this")
    args = ap.parse_args()
    builds = {"before": Path(args.baseline), "after": Path(args.candidate)}
    samples = {}  # (row, transport, test, build) -> list of (rps, p50, p99, cpu_us_per_request)
    with tempfile.TemporaryDirectory(prefix="agora-compare-") as tmp:
        tmp = Path(tmp)
        servers = {name: start(binary, tmp, name) for name, binary in builds.items()}
        try:
            for r in range(args.rounds):
                order = list(builds) if r % 2 == 0 else list(reversed(builds))
                for label, clients, pipeline, requests, tests in [r for r in ROWS if args.only in r[0]]:
                    for transport in ("tcp", "unix"):
                        for name in order:
                            proc, addr = servers[name]
                            for test in tests.split(","):
                                n = max(100, int(requests * args.scale))
                                before = cpu_seconds(proc.pid)
                                results = bench(builds["after"], addr[transport], clients, pipeline, n, test)
                                spent = cpu_seconds(proc.pid) - before
                                for res in results:
                                    reqs = res.get("requests") or n
                                    key = (label, transport, res["test"], name)
                                    lat = res["latency_us"]
                                    samples.setdefault(key, []).append(
                                        (res["requests_per_sec"], lat["p50"], lat["p99"], spent * 1e6 / max(reqs, 1)))
                print(f"# round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    print("| workload | transport | test | before req/s | after req/s | after/before | p50 before → after (µs) "
          "| p99 before → after (µs) | server CPU/req before → after (µs) |")
    print("|---|---|---|---:|---:|---:|---|---|---|")
    seen = []
    for (label, transport, test, _name) in samples:
        if (label, transport, test) not in seen:
            seen.append((label, transport, test))
    for label, transport, test in seen:
        b = samples.get((label, transport, test, "before"), [])
        a = samples.get((label, transport, test, "after"), [])
        if not a or not b:
            continue
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        ratio = med(a, 0) / med(b, 0) if med(b, 0) else float("nan")
        print(f"| {label} | {transport} | {test} | {med(b, 0):,.0f} | {med(a, 0):,.0f} | {ratio:.2f}x "
              f"| {med(b, 1):.0f} → {med(a, 1):.0f} | {med(b, 2):.0f} → {med(a, 2):.0f} "
              f"| {med(b, 3):.2f} → {med(a, 3):.2f} |")


if __name__ == "__main__":
    main()
