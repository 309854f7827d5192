#!/usr/bin/env python3
"""How cost grows: agora against Redis as connections, entries and value sizes grow
(BENCHMARKS.md section 10). Run it through bench/scaling.sh.

Three tables, agora (`agora bench` against `agora serve`) and Redis (`redis-benchmark`
against `redis-server --save '' --appendonly no`) measured in the same run, on
loopback, in interleaved rounds (every system gets every round); cells are medians of
the rounds: throughput (requests/s) and p99 latency (µs), and the agora ÷ Redis ratio
of the throughput medians.

1. connections: dict get ↔ HGET with 1 .. 10,000 connections, no pipelining, TCP and
   Unix socket;
2. entries: dict set/get ↔ HSET/HGET on a dict/hash pre-filled with exactly N keys,
   N = 1 K .. 10 M, 50 clients, -P 16, TCP; the servers' RSS after the fill;
3. value sizes: dict set/get ↔ HSET/HGET with 16 B .. 1 MiB values, 50 clients, no
   pipelining, TCP; also MB/s of values moved.

Prints the tables as Markdown and writes them, with the machine, the versions and every
command executed, to bench/results/scaling.md. Every process it starts is stopped when
it ends (also on Ctrl-C or SIGTERM); its temporary directory is removed. The agora
binary is $AGORA_BIN, else target/release/agora. Standard library only (plus the
repository's python/ package, to pre-fill agora's dict).

    bench/scaling.sh                    # ROUNDS=3 by default
    ROUNDS=1 bench/scaling.sh --quick   # tiny counts: checks the script
"""

import argparse
import os
import resource
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (bench/suite.py's helpers)
from suite import (  # noqa: E402
    COMMANDS, NOTES, ROOT, Deadline, Processes, Samples, agora_env, by_test, can_connect, fmt_ratio, fmt_rps,
    fmt_us, free_port, loadavg, log, machine_info, ratio, record, wait_until,
)

RESULTS = ROOT / "bench" / "results" / "scaling.md"

CONNECTIONS = [1, 10, 100, 1000, 10000]
ENTRIES = [1000, 10000, 100000, 1000000, 10000000]
VALUE_SIZES = [16, 256, 4096, 65536, 1048576]
VALUE_KEYS = 1000  # key space of the value-size table (1,000 × 1 MiB = 1 GiB per server)


def conn_requests(c, scale):
    """Requests for one connection count: at least 20 per connection, never under ~1-2 s of work."""
    return max(20 * c, int({1: 20000, 10: 50000}.get(c, 100000) * scale))


def value_requests(d, scale):
    return max(100, int({65536: 20000, 1048576: 2000}.get(d, 100000) * scale))


def size_name(d):
    if d >= 1 << 20:
        return f"{d >> 20} MiB"
    if d >= 1 << 10:
        return f"{d >> 10} KiB"
    return f"{d} B"


def count_name(n):
    return f"{n // 1000000} M" if n >= 1000000 else f"{n // 1000} K"


def vm_rss(pid):
    """Resident set size of a running process, in bytes (/proc/PID/status VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def redis_info_rss(port):
    """Redis's own view: INFO memory used_memory_rss, in bytes."""
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", "memory"],
                         capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        if line.startswith("used_memory_rss:"):
            return int(line.split(":")[1])
    return None


# ----------------------------------------------------------------------------- servers


def start_agora(procs, tmp, name, unix=False):
    addr = {"tcp": f"127.0.0.1:{free_port()}"}
    if unix:
        addr["unix"] = f"unix:{tmp / (name + '.sock')}"
    listen = [x for a in addr.values() for x in ("--listen", a)]
    server = procs.start([suite.AGORA, "serve", *listen, "--max-connections", 20000, "--heartbeat-timeout", "60s",
                          "--log-level", "warn"], env=agora_env())
    for a in addr.values():
        wait_until(lambda a=a: can_connect(a), a)
    return server, addr


def start_redis(procs, tmp, name, unix=False):
    port = free_port()
    cmd = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--maxclients", 20000, "--daemonize", "no"]
    args = {"tcp": ["-h", "127.0.0.1", "-p", port]}
    if unix:
        sock = tmp / (name + ".sock")
        cmd += ["--unixsocket", sock]
        args["unix"] = ["-s", sock]
    server = procs.start(cmd)
    wait_until(lambda: can_connect(f"127.0.0.1:{port}"), f"redis on {port}")
    if unix:
        wait_until(lambda: can_connect(f"unix:{sock}"), str(sock))
    return server, port, args


# ----------------------------------------------------------------------------- pre-filling


def fill_agora(address, n, value_size, key_format="key:%012d", name="bench:dict"):
    """Stores exactly n keys (key:000000000000 ..) with values of value_size 'x' in agora's
    dict `name` (what `agora bench -t set,get` uses), through the repository's Python client
    in dict.update() batches; returns the dict's length."""
    sys.path.insert(0, str(ROOT / "python"))
    import agora  # noqa: E402  (python/agora: stdlib only)

    chunk = max(1, min(100000, (32 << 20) // (value_size + 24)))
    COMMANDS.append(f"# pre-fill agora: python/agora: agora.connect('{address}').dict('{name}').update("
                    f"{{'{key_format}' % i: 'x' * {value_size}}}) for i in 0 .. {n - 1:,}, batches of {chunk:,}")
    m = agora.connect(address, suite.AUTHKEY)
    d = m.dict(name)
    value = "x" * value_size
    for start in range(0, n, chunk):
        d.update({key_format % i: value for i in range(start, min(n, start + chunk))})
    got = len(d)
    del d, m
    return got


REDIS_FILL = ("local v = string.rep('x', tonumber(ARGV[4])) "
              "for i = tonumber(ARGV[2]), tonumber(ARGV[3]) - 1 do "
              "redis.call('HSET', KEYS[1], string.format(ARGV[1], i), v) end "
              "return redis.call('HLEN', KEYS[1])")


def fill_redis(port, n, value_size, key_format="key:%012d", name="bench:dict"):
    """Stores exactly n fields in Redis's hash `name`, by Lua scripts of up to 500,000 HSETs."""
    chunk = max(1, min(500000, (64 << 20) // (value_size + 24)))
    got = 0
    first = True
    for start in range(0, n, chunk):
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", port, "EVAL", REDIS_FILL, 1, name, key_format, start,
               min(n, start + chunk), value_size]
        if first:
            COMMANDS.append(f"# pre-fill Redis: {n:,} fields, batches of {chunk:,} (START .. END)")
            record(cmd[:-3] + ["START", "END", value_size])
            first = False
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, check=False)
        if out.returncode != 0 or "ERR" in out.stdout:
            raise RuntimeError(f"redis fill failed: {out.stdout[-300:]} {out.stderr[-300:]}")
        got = int(out.stdout.strip() or 0)
    return got


# ----------------------------------------------------------------------------- measuring


def take_agora(s, key, r):
    if r is None:
        NOTES.append(f"{' '.join(map(str, key))}: no result; sample left out")
        return
    if r.get("errors") or r.get("timed_out"):
        NOTES.append(f"{' '.join(map(str, key))}: {r.get('errors')} errors (first: {r.get('first_error')}), "
                     f"timed out: {r.get('timed_out')}; sample left out")
        return
    s.add(key, r["requests_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"])


def take_redis(s, key, *args, **kw):
    try:
        r = suite.redis_bench(*args, **kw)
        s.add(key, r["rps"], r["p50_us"], r["p99_us"])
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        NOTES.append(f"{' '.join(map(str, key))}: {e}")


def stage(out, what):
    """Logs a stage with the load average at its start (the machine is shared)."""
    load = " ".join(loadavg())
    out.setdefault("loads", []).append((time.strftime("%H:%M:%S"), what, load))
    log(f"{what} (load average {load})")


def connections_table(procs, tmp, s, rounds, scale, deadline, out):
    log("connections: agora and redis on TCP + Unix, 10,000 keys pre-filled")
    _, addr = start_agora(procs, tmp, "agora-conn", unix=True)
    _, port, rargs = start_redis(procs, tmp, "redis-conn", unix=True)
    fill_agora(addr["tcp"], 10000, 3)
    fill_redis(port, 10000, 3)
    counts = CONNECTIONS if scale == 1.0 else [1, 10, 100]
    out["connections"] = counts
    out["conn_requests"] = {c: conn_requests(c, scale) for c in counts}
    for rnd in range(rounds):
        if deadline.expired(reserve=0.6 * deadline.total):
            NOTES.append(f"connections: stopped after {rnd} of {rounds} rounds (time cap)")
            break
        stage(out, f"connections round {rnd + 1}/{rounds}")
        for transport in ("tcp", "unix"):
            for c in counts:
                req = out["conn_requests"][c]
                rep = suite.agora_bench(["-a", addr[transport], "-c", c, "-n", req, "-r", 10000, "-t", "get",
                                         "--time-limit", "120s"], timeout=300)
                take_agora(s, ("agora", "conn", transport, c, "get"), by_test(rep).get("get"))
                take_redis(s, ("redis", "conn", transport, c, "get"), rargs[transport], c, 1, req,
                           ["HGET", "bench:dict", "key:__rand_int__"], timeout=300)


def entries_table(procs, tmp, s, rounds, scale, deadline, out):
    sizes = ENTRIES if scale == 1.0 else [1000, 10000]
    req = max(1000, int(400000 * scale))
    out["entries"], out["entries_requests"], out["fill"] = [], req, {}
    for n in sizes:
        if deadline.expired(reserve=0.3 * deadline.total):
            NOTES.append(f"entries: {n:,} and larger skipped (time cap)")
            break
        stage(out, f"entries: {n:,} (fresh servers)")
        agora, addr = start_agora(procs, tmp, f"agora-{n}")
        redis, port, rargs = start_redis(procs, tmp, f"redis-{n}")
        before = {"agora": vm_rss(agora.pid), "redis": vm_rss(redis.pid)}
        t0 = time.monotonic()
        got_a = fill_agora(addr["tcp"], n, 3)
        t1 = time.monotonic()
        got_r = fill_redis(port, n, 3)
        t2 = time.monotonic()
        if got_a != n or got_r != n:
            NOTES.append(f"entries {n:,}: pre-fill gave agora {got_a:,}, Redis {got_r:,} keys")
        out["fill"][n] = {
            "agora_before": before["agora"], "agora_after": vm_rss(agora.pid), "agora_secs": t1 - t0,
            "redis_before": before["redis"], "redis_after": vm_rss(redis.pid), "redis_secs": t2 - t1,
            "redis_info_rss": redis_info_rss(port),
        }
        log(f"  filled: agora {t1 - t0:.1f}s, redis {t2 - t1:.1f}s; RSS agora "
            f"{out['fill'][n]['agora_after'] / 2**20:.0f} MiB, redis {out['fill'][n]['redis_after'] / 2**20:.0f} MiB")
        out["entries"].append(n)
        for rnd in range(rounds):
            if rnd and deadline.expired(reserve=0.3 * deadline.total):
                NOTES.append(f"entries {n:,}: {rnd} of {rounds} rounds (time cap)")
                break
            rep = suite.agora_bench(["-a", addr["tcp"], "-c", 50, "-P", 16, "-n", req, "-d", 3, "-r", n,
                                     "-t", "set,get", "--time-limit", "120s"], timeout=400)
            for test in ("set", "get"):
                take_agora(s, ("agora", "entries", n, test), by_test(rep).get(test))
            take_redis(s, ("redis", "entries", n, "set"), rargs["tcp"], 50, 16, req,
                       ["HSET", "bench:dict", "key:__rand_int__", "xxx"], timeout=400, keyspace=n)
            take_redis(s, ("redis", "entries", n, "get"), rargs["tcp"], 50, 16, req,
                       ["HGET", "bench:dict", "key:__rand_int__"], timeout=400, keyspace=n)
        out["fill"][n]["agora_end"] = vm_rss(agora.pid)
        out["fill"][n]["redis_end"] = vm_rss(redis.pid)
        procs.stop(agora)
        procs.stop(redis)


def values_table(procs, tmp, s, rounds, scale, deadline, out):
    sizes = VALUE_SIZES if scale == 1.0 else [16, 4096, 65536]
    out["values"], out["values_requests"] = [], {}
    for d in sizes:
        if deadline.expired():
            NOTES.append(f"value sizes: {size_name(d)} and larger skipped (time cap)")
            break
        stage(out, f"value size {size_name(d)} (fresh servers, {VALUE_KEYS:,} keys pre-filled)")
        agora, addr = start_agora(procs, tmp, f"agora-d{d}")
        redis, port, rargs = start_redis(procs, tmp, f"redis-d{d}")
        fill_agora(addr["tcp"], VALUE_KEYS, d)
        # redis-benchmark's own HSET test (`-t hset -d`) writes `myhash element:__rand_int__ <d bytes>`:
        # a 1 MiB value cannot be passed on a command line.
        fill_redis(port, VALUE_KEYS, d, key_format="element:%012d", name="myhash")
        req = value_requests(d, scale)
        out["values"].append(d)
        out["values_requests"][d] = req
        for rnd in range(rounds):
            rep = suite.agora_bench(["-a", addr["tcp"], "-c", 50, "-n", req, "-d", d, "-r", VALUE_KEYS,
                                     "-t", "set,get", "--time-limit", "120s"], timeout=400)
            for test in ("set", "get"):
                take_agora(s, ("agora", "values", d, test), by_test(rep).get(test))
            take_redis(s, ("redis", "values", d, "set"), rargs["tcp"], 50, 1, req, ["-d", d, "-t", "hset"],
                       timeout=400, keyspace=VALUE_KEYS)
            take_redis(s, ("redis", "values", d, "get"), rargs["tcp"], 50, 1, req,
                       ["HGET", "myhash", "element:__rand_int__"], timeout=400, keyspace=VALUE_KEYS)
            log(f"  round {rnd + 1}/{rounds} done")
        procs.stop(agora)
        procs.stop(redis)


# ----------------------------------------------------------------------------- report


def cell(s, key):
    if not s.rounds(key):
        return "—"
    return f"{fmt_rps(s.rps(key))} ({fmt_us(s.p99(key))})"


def mib(b):
    return "—" if b is None else f"{b / 2**20:,.0f} MiB"


def render_tables(s, res):
    L = []
    w = L.append
    rounds = res["rounds"]
    w("### Connections: dict get ↔ HGET, no pipelining\n")
    reqs = res.get("conn_requests", {})
    w(f"Each cell: requests/s (p99 µs), median of {rounds} rounds. One server of each for the whole table, "
      "both listening on TCP and a Unix socket; 10,000 keys pre-filled, `-r 10000`, 3-byte values. Requests per "
      "run: " + ", ".join(f"{reqs[c]:,} at {c:,}" for c in res.get("connections", [])) +
      " connections (at least 20 per connection). agora: `agora serve --max-connections 20000`; Redis: "
      f"`--maxclients 20000`; open-files limit {res.get('nofile', '?'):,} for servers and clients.\n")
    w("| connections | TCP agora | TCP Redis | TCP agora ÷ Redis | Unix agora | Unix Redis | Unix agora ÷ Redis |")
    w("|---|---|---|---|---|---|---|")
    for c in res.get("connections", []):
        row = [f"{c:,}"]
        for t in ("tcp", "unix"):
            a, r = ("agora", "conn", t, c, "get"), ("redis", "conn", t, c, "get")
            row += [cell(s, a), cell(s, r), f"**{fmt_ratio(ratio(s.rps(a), s.rps(r)))}**"]
        w("| " + " | ".join(row) + " |")
    w("")

    w("### Entries: dict set/get ↔ HSET/HGET on N keys, 50 clients, `-P 16`, TCP\n")
    w(f"Each cell: requests/s (p99 µs), median of {rounds} rounds; {res.get('entries_requests', 0):,} requests "
      "per test and run, `-r N` random keys out of the N pre-filled (so set overwrites and the size stays N), "
      "3-byte values. Fresh servers for every N. Pre-fill: agora through the repository's Python client "
      "(`dict.update` in batches of 100,000), Redis by Lua scripts of `HSET`s (batches of 500,000). RSS: "
      "`VmRSS` of the server process (`/proc/PID/status`) after the fill (Redis's own "
      "`INFO memory used_memory_rss` in brackets); per entry = (RSS after − RSS before) ÷ N.\n")
    w("| entries | agora RSS after fill | Redis RSS after fill | agora / Redis bytes per entry | op | agora | Redis | agora ÷ Redis |")
    w("|---|---|---|---|---|---|---|---|")
    for n in res.get("entries", []):
        f = res["fill"][n]

        def per(sys_):
            a, b = f.get(f"{sys_}_before"), f.get(f"{sys_}_after")
            return "—" if a is None or b is None else f"{(b - a) / n:,.0f}"

        for i, test in enumerate(("set", "get")):
            a, r = ("agora", "entries", n, test), ("redis", "entries", n, test)
            first = [count_name(n), mib(f["agora_after"]), f"{mib(f['redis_after'])} ({mib(f.get('redis_info_rss'))})",
                     f"{per('agora')} / {per('redis')}"] if i == 0 else ["", "", "", ""]
            w("| " + " | ".join(first + [f"{test} ↔ H{test.upper()}", cell(s, a), cell(s, r),
                                         f"**{fmt_ratio(ratio(s.rps(a), s.rps(r)))}**"]) + " |")
    w("")

    w("### Value sizes: dict set/get ↔ HSET/HGET, 50 clients, no pipelining, TCP\n")
    vreq = res.get("values_requests", {})
    w(f"Each cell: requests/s (p99 µs) and MB/s of values moved (requests/s × value size, 10⁶ bytes), median of "
      f"{rounds} rounds. Fresh servers for every size, {VALUE_KEYS:,} keys pre-filled with values of that size, "
      f"`-r {VALUE_KEYS}`. Requests per test and run: "
      + ", ".join(f"{vreq[d]:,} at {size_name(d)}" for d in res.get("values", []))
      + " (fewer for the large values, so a row takes seconds). Redis: `redis-benchmark -t hset -d SIZE` "
      "(`HSET myhash element:__rand_int__ <value>`; a 1 MiB value does not fit on a command line) and "
      "`HGET myhash element:__rand_int__`.\n")
    w("| value | op | agora | agora MB/s | Redis | Redis MB/s | agora ÷ Redis |")
    w("|---|---|---|---|---|---|---|")
    for d in res.get("values", []):
        for test in ("set", "get"):
            a, r = ("agora", "values", d, test), ("redis", "values", d, test)
            mbs = [("—" if s.rps(k) is None else f"{s.rps(k) * d / 1e6:,.1f}") for k in (a, r)]
            w(f"| {size_name(d)} | {test} ↔ H{test.upper()} | {cell(s, a)} | {mbs[0]} | {cell(s, r)} | {mbs[1]} | "
              f"**{fmt_ratio(ratio(s.rps(a), s.rps(r)))}** |")
    w("")
    return "\n".join(L)


def render(info, res, tables):
    L = []
    w = L.append
    w("# How cost grows: connections, entries, value sizes\n")
    w(f"Written by `bench/scaling.sh` (`bench/scaling.py`) on {res['date']}: every number below was measured in "
      f"this run, agora and Redis side by side, {res['rounds']} interleaved rounds, medians. Loopback only.\n")
    if res.get("quick"):
        w("> **Quick mode** (`--quick`): tiny counts. These numbers check the script, nothing else.\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for k in ("nproc", "cpu", "memory", "kernel", "os", "agora", "redis", "python"):
        w(f"| {k} | {info[k]} |")
    w(f"| load average at start / end | {' '.join(res['load_start'])} / {' '.join(res['load_end'])} |")
    w(f"| duration | {res['minutes']:.1f} min |\n")
    w(f"agora binary: `{str(suite.AGORA).replace(str(ROOT) + '/', '')}` (the git revision above is the checkout's, "
      "which is the binary's only if it was built from it).\n")
    w(tables)
    w("<details><summary>Every round's requests/s, and the load average as each stage began</summary>\n")
    w("| system | table | case | op | requests/s per round |\n|---|---|---|---|---|")
    for key, xs in res["samples"].data.items():
        w(f"| {key[0]} | {key[1]} | {' '.join(map(str, key[2:-1]))} | {key[-1]} | "
          + ", ".join(fmt_rps(x[0]) for x in xs) + " |")
    w("")
    w("| time | stage | load average (1, 5, 15 min) |\n|---|---|---|")
    for t, what, load in res.get("loads", []):
        w(f"| {t} | {what} | {load} |")
    w("\n</details>\n")
    if NOTES:
        w("## Notes from this run\n")
        for note in NOTES:
            w(f"- {note}")
        w("")
    suite.commands_section(w, "Every command this run executed, in order (`AGORA_AUTHKEY` set in the environment; "
                              "ports and socket paths are the run's own):")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    ap.add_argument("--max-minutes", type=float, default=float(os.environ.get("BENCH_MAX_MINUTES", 40)))
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--quick", action="store_true", help="tiny counts, smaller tables: checks the script itself")
    ap.add_argument("--tables", default="connections,entries,values", help="which tables to run (comma-separated)")
    opts = ap.parse_args()
    if not suite.AGORA.exists():
        sys.exit(f"{suite.AGORA} is missing: set AGORA_BIN or run bench/scaling.sh (it builds it)")
    suite.require_redis_tools("bench/scaling.sh")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops everything
    rounds = max(1, opts.rounds)
    scale = 0.02 if opts.quick else 1.0
    deadline = Deadline(opts.max_minutes)
    deadline.total = opts.max_minutes * 60
    started = time.time()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": loadavg(), "rounds": rounds,
           "quick": opts.quick, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    info = machine_info()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="agora-scaling-"))
    s = Samples()
    tables = set(opts.tables.split(","))
    try:
        if "connections" in tables:
            connections_table(procs, tmp, s, rounds, scale, deadline, res)
            procs.stop_all()
        if "entries" in tables:
            entries_table(procs, tmp, s, rounds, scale, deadline, res)
        if "values" in tables:
            values_table(procs, tmp, s, rounds, scale, deadline, res)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        res["load_end"] = loadavg()
        res["minutes"] = (time.time() - started) / 60
        res["samples"] = s
        tables_md = render_tables(s, res)
        print(tables_md, flush=True)
        Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.output).write_text(render(info, res, tables_md))
        log(f"wrote {opts.output} ({res['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
