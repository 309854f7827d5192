#!/usr/bin/env python3
"""Durability benchmarks: agora's command log vs Redis's AOF (run it through bench/durability.sh).

In one run on this machine, side by side, over loopback TCP, with every data directory
in one temporary directory (so both servers write to the same filesystem):

1. throughput and p50/p99 latency of dict set (agora `set` ↔ HSET) and queue put then
   get (`qput`/`qget` ↔ LPUSH/RPOP), 50 clients × 1 and 50 clients × 16 in flight, for
   agora in memory and with `--fsync no|everysec|always`, and Redis without persistence
   and with `--appendonly yes --appendfsync no|everysec|always`; `agora bench --raw`
   against `redis-benchmark`, same -c/-P/-n/-d/-r; interleaved rounds, medians;
2. restart with 1,000,000 dict entries: from the log alone (agora) / the AOF alone
   (Redis), then from a snapshot (`agora snapshot`) / a rewritten AOF (BGREWRITEAOF,
   an RDB preamble); sizes on disk;
3. the pause a snapshot causes: a 50-client set load on the 1M-entry dict, with and
   without `agora snapshot` (Redis: BGREWRITEAOF, whose pause is its fork) in the middle.

It writes the section "## 6. Durability: agora's log vs Redis's AOF" into
bench/sections.md, which the suite (bench/run.sh) includes as is, and into BENCHMARKS.md
(an existing section 6 is replaced where it stands, keeping the hand-written
"### Findings" block of the one in bench/sections.md). Only loopback addresses are used;
every process it starts is stopped when it ends. Standard library only; reuses
bench/suite.py's helpers.
"""

import argparse
import json
import os
import pickle
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client
from multiprocessing.managers import BaseManager
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ from importing suite
sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (bench/suite.py: its helpers, not its main)
from suite import (  # noqa: E402
    ROOT, Deadline, Samples, by_test, can_connect, fmt_ratio, fmt_rps, fmt_us, free_port, loadavg, log, med,
    process_cpu, ratio, record, wait_until,
)

SECTION = "## 6. Durability: agora's log vs Redis's AOF"
KEEP = "### Findings"  # the hand-written block of the section: a rerun keeps it (up to the next ###)
LEVELS = ["memory", "no", "everysec", "always"]  # memory: agora without --data-dir, Redis without AOF
TESTS = [("set", "dict set", ["HSET", "bench:dict", "key:__rand_int__", "xxx"]),
         ("qput", "queue put", ["LPUSH", "bench:queue", "xxx"]),
         ("qget", "queue get", ["RPOP", "bench:queue"])]
FILL_TYPEID = "get_bench_dict"  # the CPython typeid the restart server exposes bench:dict as
NOTES = []


def note(text):
    log("note: " + text)
    NOTES.append(text)


class Servers(suite.Processes):
    """suite.Processes, with each server's output in a file of its own when asked."""

    def launch(self, cmd, logfile=None, env=None):
        record(cmd)
        out = open(logfile, "ab") if logfile else subprocess.DEVNULL
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT if logfile else subprocess.DEVNULL,
                             env=env)
        if logfile:
            out.close()
        self.procs.append(p)
        return p


# ----------------------------------------------------------------------------- agora


def agora_serve_cmd(addr, data_dir=None, fsync=None, extra=()):
    cmd = [suite.AGORA, "serve", "--listen", addr, "--heartbeat-timeout", "60s", "--log-level", "info"]
    if data_dir:
        cmd += ["--data-dir", data_dir, "--fsync", fsync]
    return cmd + list(extra)


def agora_admin(sub, addr, *args, timeout=60):
    cmd = [suite.AGORA, sub, "-a", addr, *args]
    return subprocess.run([str(c) for c in cmd], env=suite.agora_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def agora_stats(addr):
    out = agora_admin("stats", addr, "--json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def agora_size(addr, name):
    out = agora_admin("ls", addr, "--json")
    if out.returncode != 0:
        return None
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None
    rows = data if isinstance(data, list) else data.get("objects", [])
    for row in rows:
        if isinstance(row, dict) and row.get("name") == name:
            return row.get("size", row.get("len"))
    return None


def agora_fill(addr, n):
    """n distinct entries key:000000000000.. = 'xxx' in bench:dict, one `d[key] = value` call each, pipelined.

    Through the CPython dialect with the standard library's own client (the server
    exposes bench:dict as FILL_TYPEID): the usual handshake and proxy connection, then
    the proxy's frames written in batches by one thread while this one reads the replies.
    Every entry is one call, so one log record, as a client setting keys one by one makes.
    """
    host, port = addr.rsplit(":", 1)
    authkey = suite.AUTHKEY.encode()

    class M(BaseManager):
        pass

    M.register(FILL_TYPEID)
    m = M(address=(host, int(port)), authkey=authkey)
    m.connect()
    token = getattr(m, FILL_TYPEID)()._token
    conn = Client(token.address, authkey=authkey)
    conn.send((None, "accept_connection", (token.id,), {}))
    answer = conn.recv()
    if answer[0] != "#RETURN":
        raise RuntimeError(f"accept_connection: {answer!r}")
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    failure = []

    def writer():
        try:
            batch = 5000
            for start in range(0, n, batch):
                parts = []
                for i in range(start, min(n, start + batch)):
                    body = pickle.dumps((token.id, "__setitem__", (f"key:{i:012d}", "xxx"), {}), protocol=pickle.HIGHEST_PROTOCOL)
                    parts.append(struct.pack("!i", len(body)))
                    parts.append(body)
                sock.sendall(b"".join(parts))
        except OSError as e:
            failure.append(e)

    started = time.perf_counter()
    thread = threading.Thread(target=writer)
    thread.start()
    buf, got, good = bytearray(), 0, None
    while got < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError(f"the server closed the fill connection after {got} replies {failure}")
        buf += chunk
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = struct.unpack_from("!i", buf, pos)
            if len(buf) - pos - 4 < length:
                break
            body = bytes(buf[pos + 4:pos + 4 + length])
            if body != good:
                reply = pickle.loads(body)
                if reply[0] != "#RETURN":
                    raise RuntimeError(f"fill: {reply!r}")
                good = body
            pos += 4 + length
            got += 1
        del buf[:pos]
    thread.join()
    took = time.perf_counter() - started
    sock.close()
    conn.close()
    return took


def agora_log_took_ms(logfile):
    """The server's own restore time (its 'state restored ... took_ms=N' line)."""
    try:
        found = re.findall(r"took_ms=(\d+)", Path(logfile).read_text(errors="replace"))
    except OSError:
        return None
    return int(found[-1]) if found else None


def agora_start_timed(procs, cmd, addr, logfile):
    """Starts agora; seconds until it accepts a TCP connection, and until `agora stats` answers."""
    t0 = time.perf_counter()
    p = procs.launch(cmd, logfile, env=suite.agora_env())
    accepted = None
    end = t0 + 300
    while time.perf_counter() < end:
        if p.poll() is not None:
            raise RuntimeError(f"agora exited with {p.returncode} while restoring; see {logfile}")
        if accepted is None and can_connect(addr):
            accepted = time.perf_counter() - t0
        if accepted is not None and agora_admin("stats", addr, "--json").returncode == 0:
            return p, accepted, time.perf_counter() - t0
        time.sleep(0.005)
    raise RuntimeError("agora did not come up within 300 s")


def dir_bytes(path, pattern="*"):
    return sum(f.stat().st_size for f in Path(path).glob(pattern) if f.is_file())


# ----------------------------------------------------------------------------- redis


def redis_cmd(port, *args, timeout=60):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, check=False)
    return out.stdout.strip()


def redis_info(port, section):
    info = {}
    for line in redis_cmd(port, "INFO", section).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def redis_raw_info(port, section):
    """INFO over a raw socket (no process to start: used while a load runs)."""
    info = {}
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as s:
            s.sendall(f"*2\r\n$4\r\nINFO\r\n${len(section)}\r\n{section}\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                data += s.recv(65536)
            head, data = data.split(b"\r\n", 1)
            want = int(head[1:]) + 2
            while len(data) < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError):
        return info
    for line in data.decode(errors="replace").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def redis_serve_cmd(port, data_dir=None, fsync=None, extra=()):
    cmd = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]
    if data_dir:
        cmd += ["--appendonly", "yes", "--appendfsync", fsync, "--dir", data_dir]
    else:
        cmd += ["--appendonly", "no"]
    return cmd + list(extra)


def redis_bench(port, clients, pipeline, requests, keyspace, command, timeout=300):
    """redis-benchmark, one test; rps and latencies in µs (p50, p99, max)."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-c", clients, "-P", pipeline, "-n", requests,
           "-r", keyspace, "--csv", *command]
    record(cmd)
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith('"') and not line.startswith('"test"')]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"redis-benchmark failed: {out.stderr.strip()[-300:]} {out.stdout[-300:]}")
    cells = [c.strip('"') for c in lines[-1].split('","')]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    return {"rps": float(cells[1]), "p50_us": float(cells[4]) * 1000, "p99_us": float(cells[6]) * 1000,
            "max_us": float(cells[7]) * 1000}


def redis_hlen(port, key):
    """HLEN over a raw socket: the count, or None while Redis is loading or not listening."""
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2) as s:
            s.sendall(f"*2\r\n$4\r\nHLEN\r\n${len(key)}\r\n{key}\r\n".encode())
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    return int(reply[1:-2]) if reply.startswith(b":") else None


def redis_start_timed(procs, cmd, port, logfile, expect):
    """Starts redis-server; seconds until it accepts a connection, and until HLEN bench:dict answers `expect`."""
    t0 = time.perf_counter()
    p = procs.launch(cmd, logfile)
    accepted = None
    end = t0 + 300
    while time.perf_counter() < end:
        if p.poll() is not None:
            raise RuntimeError(f"redis-server exited with {p.returncode}; see {logfile}")
        if accepted is None and can_connect(f"127.0.0.1:{port}"):
            accepted = time.perf_counter() - t0
        if accepted is not None:
            n = redis_hlen(port, "bench:dict")
            if n is not None:
                if n != expect:
                    note(f"Redis restarted with {n:,} entries in bench:dict, not {expect:,}")
                return p, accepted, time.perf_counter() - t0
        time.sleep(0.005)
    raise RuntimeError("redis-server did not come up within 300 s")


def redis_log_loaded(logfile):
    """Redis's own load time ('DB loaded from append only file: N seconds')."""
    try:
        found = re.findall(r"DB loaded from append only file: ([0-9.]+) seconds", Path(logfile).read_text(errors="replace"))
    except OSError:
        return None
    return float(found[-1]) if found else None


def redis_fill(port, n):
    """n distinct fields key:000000000000.. = 'xxx' in the hash bench:dict, one HSET each (redis-cli --pipe)."""
    parts = []
    for i in range(n):
        k = f"key:{i:012d}"
        parts.append(f"*4\r\n$4\r\nHSET\r\n$10\r\nbench:dict\r\n${len(k)}\r\n{k}\r\n$3\r\nxxx\r\n")
    data = "".join(parts).encode()
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", port, "--pipe"]
    suite.COMMANDS.append(" ".join(map(str, cmd)) + f"  # stdin: {n:,} × HSET bench:dict key:%012d xxx")
    started = time.perf_counter()
    out = subprocess.run([str(c) for c in cmd], input=data, capture_output=True, timeout=600, check=False)
    took = time.perf_counter() - started
    if out.returncode != 0 or b"errors: 0" not in out.stdout:
        raise RuntimeError(f"redis-cli --pipe: {out.stdout[-300:]!r} {out.stderr[-300:]!r}")
    return took


def redis_wait_rewrite(port, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = redis_info(port, "persistence")
        if info.get("aof_rewrite_in_progress") == "0" and info.get("aof_rewrite_scheduled") == "0":
            return info
        time.sleep(0.05)
    raise RuntimeError("BGREWRITEAOF did not finish")


# ----------------------------------------------------------------------------- the runs


def stop_term(procs, p):
    """SIGTERM, wait (graceful: agora writes and fsyncs its log; Redis fsyncs its AOF)."""
    t0 = time.perf_counter()
    procs.stop(p)
    return time.perf_counter() - t0


def run_throughput(procs, tmp, rounds, scale, deadline, reserve):
    """Part 1: every fsync level, both systems, both shapes, interleaved rounds."""
    agora, redis = {}, {}
    for level in LEVELS:
        addr = f"127.0.0.1:{free_port()}"
        data = None if level == "memory" else tmp / f"agora-{level}"
        agora[level] = (procs.launch(agora_serve_cmd(addr, data, level), tmp / f"agora-{level}.log",
                                     env=suite.agora_env()), addr)
        port = free_port()
        rdata = None if level == "memory" else tmp / f"redis-{level}"
        if rdata:
            rdata.mkdir()
        redis[level] = (procs.launch(redis_serve_cmd(port, rdata, level), tmp / f"redis-{level}.log"), port)
    for level in LEVELS:
        wait_until(lambda a=agora[level][1]: can_connect(a), f"agora {level}")
        wait_until(lambda p=redis[level][1]: can_connect(f"127.0.0.1:{p}"), f"redis {level}")
    shapes = [("50x1", 50, 1, suite.n(100000, scale)), ("50x16", 50, 16, suite.n(400000, scale))]
    log("warming up every server (not measured)")
    for level in LEVELS:
        suite.agora_bench(["-a", agora[level][1], "--raw", "-c", 50, "-P", 16, "-n", 20000, "-d", 3, "-r", 10000,
                           "-t", ",".join(t for t, _, _ in TESTS)], timeout=120)
        for _, _, command in TESTS:
            try:
                redis_bench(redis[level][1], 50, 16, 20000, 10000, command)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                note(f"redis {level} warm-up: {e}")
    s = Samples()
    extra = {}  # key -> list of max latency; cpu: (system, level, shape) -> [µs per request]
    cpu = {}
    done = 0
    times = []
    for rnd in range(rounds):
        if rnd and deadline.left() < reserve + (max(times) if times else 0):
            note(f"throughput rounds stopped after {rnd} of {rounds} (time cap)")
            break
        t_round = time.monotonic()
        order = LEVELS[rnd % len(LEVELS):] + LEVELS[:rnd % len(LEVELS)]
        log(f"throughput round {rnd + 1}/{rounds}: levels in the order {', '.join(order)}")
        for shape, c, p, req in shapes:
            for level in order:
                proc, addr = agora[level]
                before = process_cpu(proc.pid)
                rep = suite.agora_bench(["-a", addr, "--raw", "-c", c, "-P", p, "-n", req, "-d", 3, "-r", 10000,
                                         "-t", ",".join(t for t, _, _ in TESTS), "--time-limit", "120s"], timeout=400)
                after = process_cpu(proc.pid)
                total = 0
                for test, r in by_test(rep).items():
                    if r.get("errors") or r.get("timed_out"):
                        note(f"agora {level} {shape} {test}: {r.get('errors')} errors (first: {r.get('first_error')}), "
                             f"timed out: {r.get('timed_out')}; sample left out")
                        continue
                    s.add(("agora", level, shape, test), r["requests_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"])
                    extra.setdefault(("agora", level, shape, test), []).append(r["latency_us"]["max"])
                    total += r["requests"]
                if before is not None and after is not None and total:
                    cpu.setdefault(("agora", level, shape), []).append((after - before) * 1e6 / total)
                rproc, port = redis[level]
                before = process_cpu(rproc.pid)
                total = 0
                for test, _, command in TESTS:
                    try:
                        r = redis_bench(port, c, p, req, 10000, command)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        note(f"redis {level} {shape} {test}: {e}")
                        continue
                    s.add(("redis", level, shape, test), r["rps"], r["p50_us"], r["p99_us"])
                    extra.setdefault(("redis", level, shape, test), []).append(r["max_us"])
                    total += req
                after = process_cpu(rproc.pid)
                if before is not None and after is not None and total:
                    cpu.setdefault(("redis", level, shape), []).append((after - before) * 1e6 / total)
        done += 1
        times.append(time.monotonic() - t_round)
        log(f"round {rnd + 1} took {times[-1]:.0f} s")
    # What the persistent servers did meanwhile: snapshots / AOF rewrites, sizes.
    disk = {}
    for level in LEVELS[1:]:
        st = agora_stats(agora[level][1]) or {}
        d = st.get("durability") or {}
        snap = d.get("last_snapshot") or {}
        info = redis_info(redis[level][1], "persistence")
        disk[level] = {
            "agora_log_bytes": d.get("log_bytes"), "agora_snapshot_lsn": snap.get("lsn"),
            "agora_appended": d.get("appended_lsn"),
            "redis_aof_bytes": dir_bytes(tmp / f"redis-{level}" / "appendonlydir"),
            "redis_rewrites": info.get("aof_rewrites"),
        }
    for level in LEVELS:
        procs.stop(agora[level][0])
        procs.stop(redis[level][0])
        if level != "memory":
            shutil.rmtree(tmp / f"agora-{level}", ignore_errors=True)
            shutil.rmtree(tmp / f"redis-{level}", ignore_errors=True)
    return {"samples": s, "max": extra, "cpu": cpu, "rounds": done, "shapes": shapes, "disk": disk,
            "round_seconds": times}


def run_restart(procs, tmp, fill_n, rounds, scale, deadline):
    """Parts 2 and 3: a 1M-entry dict / hash; restarts from the log / AOF, the pause of a snapshot, restarts from it."""
    out = {"fill_n": fill_n, "restart": {}, "pause": {}}
    addr = f"127.0.0.1:{free_port()}"
    adir = tmp / "agora-restart"
    # No automatic snapshot while the log holds the fill (the default would take one at 64 MiB):
    # the first restarts replay the log alone.
    acmd = agora_serve_cmd(addr, adir, "everysec", ["--snapshot-after", "64GiB", "--expose",
                                                    f"{FILL_TYPEID}=dict:bench:dict"])
    port = free_port()
    rdir = tmp / "redis-restart"
    rdir.mkdir()
    # No automatic AOF rewrite either (the default rewrites past 64 MB).
    rcmd = redis_serve_cmd(port, rdir, "everysec", ["--auto-aof-rewrite-percentage", "0"])
    starts = {"agora": 0, "redis": 0}

    def alog(kind):
        starts["agora"] += 1
        return tmp / f"agora-restart-{starts['agora']}-{kind}.log"

    def rlog(kind):
        starts["redis"] += 1
        return tmp / f"redis-restart-{starts['redis']}-{kind}.log"

    log(f"restart: filling agora and Redis with {fill_n:,} entries")
    agora_p, _, _ = agora_start_timed(procs, acmd, addr, alog("fill"))
    redis_p = procs.launch(rcmd, rlog("fill"))
    wait_until(lambda: can_connect(f"127.0.0.1:{port}"), "redis")
    suite.COMMANDS.append(f"# bench/durability.py (agora_fill): {fill_n:,} pipelined calls d['key:%012d'] = 'xxx' on "
                          f"bench:dict through the CPython manager protocol (typeid {FILL_TYPEID})")
    out["agora_fill_s"] = agora_fill(addr, fill_n)
    out["redis_fill_s"] = redis_fill(port, fill_n)
    size = agora_size(addr, "bench:dict")
    if size != fill_n:
        note(f"agora's bench:dict holds {size} entries after the fill, not {fill_n:,}")
    st = agora_stats(addr) or {}
    out["agora_log_bytes"] = (st.get("durability") or {}).get("log_bytes")
    out["agora_memory_bytes"] = st.get("memory_bytes")
    out["agora_records"] = (st.get("durability") or {}).get("appended_lsn")
    time.sleep(1.2)  # everysec: let both fsync
    out["redis_aof_bytes"] = dir_bytes(rdir / "appendonlydir")
    out["redis_memory_bytes"] = int(redis_info(port, "memory").get("used_memory_rss", 0)) or None
    stop_term(procs, agora_p)
    stop_term(procs, redis_p)
    out["agora_log_files_bytes"] = dir_bytes(adir, "log-*")

    def restarts(kind):
        agora_p = redis_p = None
        for rnd in range(rounds):
            for system in (("agora", "redis") if rnd % 2 == 0 else ("redis", "agora")):
                if system == "agora":
                    if agora_p:
                        stop_term(procs, agora_p)
                    lf = alog(kind)
                    agora_p, acc, ready = agora_start_timed(procs, acmd, addr, lf)
                    out["restart"].setdefault(("agora", kind), []).append((acc, ready, agora_log_took_ms(lf)))
                else:
                    if redis_p:
                        stop_term(procs, redis_p)
                    lf = rlog(kind)
                    redis_p, acc, ready = redis_start_timed(procs, rcmd, port, lf, fill_n)
                    out["restart"].setdefault(("redis", kind), []).append((acc, ready, redis_log_loaded(lf)))
            log(f"restart from the {kind}, round {rnd + 1}: agora {out['restart'][('agora', kind)][-1][1]:.2f} s, "
                f"Redis {out['restart'][('redis', kind)][-1][1]:.2f} s")
        return agora_p, redis_p

    log("restart: from agora's log alone / Redis's AOF alone")
    agora_p, redis_p = restarts("log")
    size = agora_size(addr, "bench:dict")
    if size != fill_n:
        note(f"agora restarted from its log with {size} entries in bench:dict, not {fill_n:,}")

    # Part 3: the pause of a snapshot under load, with the 1M entries in memory.
    # Long enough (3-4 s at 150-200 K sets/s) that the snapshot, issued 1 s in, runs
    # under load from start to end on either server (200,000 ended around 1 s).
    load_n = suite.n(600000, scale)
    log(f"snapshot pause: 50 clients setting random keys of the {fill_n:,}-entry dict, with and without a snapshot")
    for rnd in range(rounds):
        if deadline.expired(reserve=60):
            note(f"snapshot-pause rounds stopped after {rnd} (time cap)")
            break
        for system in ("agora", "redis"):
            for with_snapshot in ((False, True) if rnd % 2 == 0 else (True, False)):
                got = {}

                def trigger(system=system, got=got):
                    got["at"] = time.perf_counter()
                    if system == "agora":
                        got["printed"] = agora_admin("snapshot", addr).stdout.strip()
                    else:
                        got["printed"] = redis_cmd(port, "BGREWRITEAOF")
                        end = time.perf_counter() + 120
                        while time.perf_counter() < end:
                            time.sleep(0.02)
                            persistence = redis_raw_info(port, "persistence")
                            if persistence.get("aof_rewrite_in_progress") == "0" and persistence.get("aof_rewrite_scheduled") == "0":
                                got["done_ms"] = (time.perf_counter() - got["at"]) * 1000
                                break

                timer = threading.Timer(1.0, trigger) if with_snapshot else None
                t0 = time.perf_counter()
                if timer:
                    timer.start()
                if system == "agora":
                    rep = suite.agora_bench(["-a", addr, "--raw", "-c", 50, "-n", load_n, "-d", 3, "-r", fill_n,
                                             "-t", "set", "--time-limit", "120s"], timeout=400)
                    r = by_test(rep).get("set")
                    if timer:
                        timer.join()
                    if not r or r.get("errors"):
                        note(f"agora snapshot-pause load failed: {r and r.get('first_error')}")
                        continue
                    row = {"rps": r["requests_per_sec"], "p50": r["latency_us"]["p50"], "p99": r["latency_us"]["p99"],
                           "p999": r["latency_us"]["p999"], "max": r["latency_us"]["max"], "seconds": r["seconds"]}
                else:
                    try:
                        r = redis_bench(port, 50, 1, load_n, fill_n, ["HSET", "bench:dict", "key:__rand_int__", "xxx"])
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        if timer:
                            timer.join()
                        note(f"redis snapshot-pause load failed: {e}")
                        continue
                    row = {"rps": r["rps"], "p50": r["p50_us"], "p99": r["p99_us"], "p999": None, "max": r["max_us"],
                           "seconds": time.perf_counter() - t0}
                if timer:
                    timer.join()
                    row["trigger_at"] = got["at"] - t0
                    row["printed"] = got.get("printed")
                    if system == "agora":
                        snap = ((agora_stats(addr) or {}).get("durability") or {}).get("last_snapshot") or {}
                        row["pause_us"] = snap.get("pause_us")
                        row["write_ms"] = snap.get("write_ms")
                        row["snapshot_bytes"] = snap.get("bytes")
                    else:
                        info = redis_wait_rewrite(port)
                        row["pause_us"] = int(redis_info(port, "stats").get("latest_fork_usec", 0))
                        row["write_ms"] = got.get("done_ms")
                        row["snapshot_bytes"] = dir_bytes(rdir / "appendonlydir", "*.base.*")
                    if row["trigger_at"] > row["seconds"] - 0.2:
                        note(f"{system}: the snapshot started {row['trigger_at']:.2f} s into a {row['seconds']:.2f} s load "
                             "run, at or after its end")
                out["pause"].setdefault((system, with_snapshot), []).append(row)
        log(f"snapshot pause round {rnd + 1}: agora paused "
            f"{(out['pause'].get(('agora', True)) or [{}])[-1].get('pause_us')} µs, Redis fork "
            f"{(out['pause'].get(('redis', True)) or [{}])[-1].get('pause_us')} µs")

    # A snapshot / rewrite with nothing else running, then restarts from it.
    log("restart: after `agora snapshot` / BGREWRITEAOF")
    printed = agora_admin("snapshot", addr)
    record([suite.AGORA, "snapshot", "-a", addr])
    out["snapshot_printed"] = printed.stdout.strip() or printed.stderr.strip()
    st = (agora_stats(addr) or {}).get("durability") or {}
    out["snapshot"] = st.get("last_snapshot")
    out["agora_log_after_snapshot"] = st.get("log_bytes")
    record(["redis-cli", "-p", port, "BGREWRITEAOF"])
    t0 = time.perf_counter()
    redis_cmd(port, "BGREWRITEAOF")
    info = redis_wait_rewrite(port)
    out["redis_rewrite_s"] = time.perf_counter() - t0
    out["redis_fork_us"] = int(redis_info(port, "stats").get("latest_fork_usec", 0))
    out["redis_base_bytes"] = dir_bytes(rdir / "appendonlydir", "*.base.*")
    out["redis_incr_bytes"] = dir_bytes(rdir / "appendonlydir", "*.incr.*")
    out["redis_rewrite_status"] = info.get("aof_last_bgrewrite_status")
    stop_term(procs, agora_p)
    stop_term(procs, redis_p)
    restarts("snapshot")
    size = agora_size(addr, "bench:dict")
    if size != fill_n:
        note(f"agora restarted from its snapshot with {size} entries in bench:dict, not {fill_n:,}")
    procs.stop_all()
    return out


# ----------------------------------------------------------------------------- report


def fmt_s(v):
    return "—" if v is None else f"{v:.2f} s"


def fmt_mib(v):
    return "—" if v is None else f"{v / 2**20:,.1f} MiB"


def fmt_ms(us):
    return "—" if us is None else f"{us / 1000:,.1f} ms"


LEVEL_NAMES = {
    "memory": ("in memory (no `--data-dir`)", "no persistence (`--appendonly no`)"),
    "no": ("`--fsync no`", "`appendfsync no`"),
    "everysec": ("`--fsync everysec`", "`appendfsync everysec`"),
    "always": ("`--fsync always`", "`appendfsync always`"),
}


def render(info, tp, rs, meta, findings=""):
    L = []
    w = L.append
    s = tp["samples"] if tp else Samples()
    w(SECTION + "\n")
    w(
        "Written by `bench/durability.sh` (the script `bench/durability.py`), separately from the suite, into "
        "`bench/sections.md` (which `bench/run.sh` includes as is) and into this file. "
        f"One run, {meta['started']}, {meta['minutes']:.1f} min, load average {' '.join(meta['load_start'])} at the start "
        f"and {' '.join(meta['load_end'])} at the end"
        + (
            f": **the machine ({info['nproc']} cores, {info['cpu']}) was not idle when the run began** (other work was "
            "running or had just ended). "
            if float(meta["load_start"][0]) >= 0.5
            else f" (the machine: {info['nproc']} cores, {info['cpu']}). "
        )
        + "Only ratios measured in the same run mean anything. "
        f"`agora serve` runs with its default worker count ({info['agora_workers']} here: one fewer "
        "than the CPUs, at least one). "
        f"{tp['rounds'] if tp else 0} interleaved rounds (every system, every fsync level, every round; the order "
        "of the levels rotates each round); tables show **medians**. Loopback TCP; both servers' data directories "
        f"in one temporary directory on the same filesystem ({meta['fs']}); {info['agora']}; {info['redis']}.\n"
    )
    if meta.get("quick"):
        w("> **Quick mode** (`--quick`): tiny counts, one round. These numbers check the script, nothing else.\n")
    w("### What each setting promises\n")
    w(
        "From `server/src/durability/mod.rs` and `agora serve --help`, restated. With `--data-dir`, every "
        "command that can change state is appended to a log in the directory (reads are not logged); "
        "answers to parked calls (a `get` handed an item, a lock granted) wait for their record like any other "
        "change. The Redis column is the setting compared with it.\n"
    )
    w("| agora | an answer is sent once the change's record is… | lost if the agora process crashes | lost if the machine crashes (power, kernel) | Redis setting compared |")
    w("|---|---|---|---|---|")
    w("| no `--data-dir` | (nothing is recorded) | everything | everything | `--save '' --appendonly no` |")
    w("| `--fsync no` | handed to the OS (`write`); agora never fsyncs | nothing that was answered | whatever the OS had not flushed yet (its own schedule: on Linux, typically up to ~30 s) | `--appendonly yes --appendfsync no` |")
    w("| `--fsync everysec` (the default) | handed to the OS; a log thread fsyncs about once a second | nothing that was answered | up to about the last second of answered changes | `--appendonly yes --appendfsync everysec` |")
    w("| `--fsync always` | on disk: fsynced (group commit: one fsync covers every record appended while the previous one ran) | nothing that was answered | nothing that was answered | `--appendonly yes --appendfsync always` |")
    w("")
    w(
        "Redis makes the same kind of promise at each level (it writes the AOF before it replies, and with "
        "`always` fsyncs before replying); its documentation allows up to ~2 s of loss with `everysec` when "
        "fsyncs fall behind. Snapshots (`agora snapshot`, and one automatically every `--snapshot-after` bytes "
        "of log, 64 MiB by default) bound the log: the state is taken while changes wait (the *pause*; "
        "big dicts, sets, lists, arrays and queues are only marked in it and read out after it, as they were), "
        "written to a file in the background, and the log it covers is deleted. Redis's counterpart is the AOF "
        "rewrite (`BGREWRITEAOF`, automatic past 64 MB and 100 % growth by default): a `fork`, whose copy of "
        "the page tables is its pause, and an RDB image written by the child.\n"
    )

    if tp:
        w("### 1. Throughput and latency at each fsync level\n")
        w(
            "`agora bench --raw` (a bare client shaped like redis-benchmark's) against `agora serve`; `redis-benchmark` "
            "against `redis-server`; 50 connections, no pipelining (-n "
            f"{tp['shapes'][0][3]:,}) and 16 in flight per connection (-n {tp['shapes'][1][3]:,}); 3-byte values; "
            "`-r 10000` random keys. *queue put then get*: the put test (LPUSH) fills the queue with -n items, "
            "the get test (RPOP / `get_nowait`) empties it. Each server ran from the first round to the last, "
            "with the defaults for snapshots and AOF rewrites. µs are client-side, per request.\n"
        )
        for shape, c, p, req in tp["shapes"]:
            w(f"#### {c} clients × {p} in flight\n")
            w("| test | agora | Redis | agora req/s | Redis req/s | **agora ÷ Redis** | agora p50 / p99 µs | Redis p50 / p99 µs | agora ÷ its in-memory |")
            w("|---|---|---|---|---|---|---|---|---|")
            for test, name, command in TESTS:
                for level in LEVELS:
                    a, r = ("agora", level, shape, test), ("redis", level, shape, test)
                    if not s.rounds(a) and not s.rounds(r):
                        continue
                    w(
                        f"| {name} ↔ {command[0]} | {LEVEL_NAMES[level][0]} | {LEVEL_NAMES[level][1]} | {fmt_rps(s.rps(a))} | "
                        f"{fmt_rps(s.rps(r))} | **{fmt_ratio(ratio(s.rps(a), s.rps(r)))}** | "
                        f"{fmt_us(s.p50(a))} / {fmt_us(s.p99(a))} | {fmt_us(s.p50(r))} / {fmt_us(s.p99(r))} | "
                        f"{fmt_ratio(ratio(s.rps(a), s.rps(('agora', 'memory', shape, test))))} |"
                    )
            w("")
        w("Server CPU per request (µs, from `/proc/PID/stat`, over the three tests of a round; medians):\n")
        w("| clients × in flight | system | " + " | ".join(LEVELS) + " |")
        w("|---|---|" + "---|" * len(LEVELS))
        for shape, c, p, _ in tp["shapes"]:
            for system in ("agora", "redis"):
                cells = [med(tp["cpu"].get((system, level, shape), [])) for level in LEVELS]
                w(f"| {c} × {p} | {system} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in cells) + " |")
        w("")
        disk = tp.get("disk") or {}
        if disk:
            w("What the persistent servers held at the end of the rounds (defaults: agora snapshots every 64 MiB of log; "
              "Redis rewrites its AOF past 64 MB and 100 % growth):\n")
            w("| level | agora records logged | agora log now | agora's last snapshot at record | Redis AOF now | Redis AOF rewrites |")
            w("|---|---|---|---|---|---|")
            for level, d in disk.items():
                w(f"| {level} | {fmt_rps(d.get('agora_appended'))} | {fmt_mib(d.get('agora_log_bytes'))} | "
                  f"{fmt_rps(d.get('agora_snapshot_lsn'))} | {fmt_mib(d.get('redis_aof_bytes'))} | {d.get('redis_rewrites') or '—'} |")
            w("")

    if rs:
        n = rs["fill_n"]
        w(f"### 2. Restarting with {n:,} entries\n")
        w(
            f"A dict (`bench:dict`) / a hash of {n:,} distinct entries `key:000000000000`… → `'xxx'`, each set by a call "
            "of its own, so the log / AOF holds one record per entry: agora through the CPython dialect, by the "
            "standard library's own manager client with its calls pipelined (the server runs with "
            f"`--expose {FILL_TYPEID}=dict:bench:dict`); Redis by `redis-cli --pipe` with one `HSET` per field. "
            "Both servers `everysec`, automatic snapshots / rewrites off for this part (`--snapshot-after 64GiB`, "
            "`--auto-aof-rewrite-percentage 0`), so the first restarts replay the whole log / AOF. Each restart: "
            "SIGTERM (both write and fsync what they hold), start, then poll every 5 ms. *ready* is the time from "
            "starting the process until `agora stats` answers / `HLEN bench:dict` answers "
            f"{n:,} (Redis accepts connections while loading, and answers `-LOADING`); *port open* is when a TCP connect first succeeds (agora binds its "
            "listener before it restores; connections wait in the kernel's backlog until it is ready); *own count* is "
            "what the server logs (`state restored … took_ms` / `DB loaded from append only file: … seconds`). "
            f"Medians of {len(rs['restart'].get(('agora', 'log'), []))} restarts each, interleaved.\n"
        )
        w(f"Filling took {fmt_s(rs.get('agora_fill_s'))} (agora, {fmt_rps(n / rs['agora_fill_s'])} calls/s through the "
          f"Python dialect) and {fmt_s(rs.get('redis_fill_s'))} (Redis, `redis-cli --pipe`). Resident memory afterwards: "
          f"agora {fmt_mib(rs.get('agora_memory_bytes'))}, Redis {fmt_mib(rs.get('redis_memory_bytes'))}.\n")
        w("| restart from | agora: on disk | agora: ready | agora: own count | agora: port open | Redis: on disk | Redis: ready | Redis: own count | **agora ÷ Redis** (ready) |")
        w("|---|---|---|---|---|---|---|---|---|")

        def cols(system, kind):
            rows = rs["restart"].get((system, kind), [])
            acc = med(x[0] for x in rows)
            ready = med(x[1] for x in rows)
            own = med(x[2] for x in rows)
            return acc, ready, own

        for kind, agora_disk, redis_disk, title in (
            ("log", f"log {fmt_mib(rs.get('agora_log_files_bytes'))} ({fmt_rps(rs.get('agora_records'))} records, "
                    f"{(rs.get('agora_log_files_bytes') or 0) / n:.0f} B per entry)",
             f"AOF {fmt_mib(rs.get('redis_aof_bytes'))} ({(rs.get('redis_aof_bytes') or 0) / n:.0f} B per entry)",
             "the log alone / the AOF alone (commands)"),
            ("snapshot", f"snapshot {fmt_mib((rs.get('snapshot') or {}).get('bytes'))} + log "
                         f"{fmt_mib(rs.get('agora_log_after_snapshot'))}",
             f"RDB-preamble base {fmt_mib(rs.get('redis_base_bytes'))} + AOF {fmt_mib(rs.get('redis_incr_bytes'))}",
             "a snapshot (`agora snapshot`) / a rewritten AOF (`BGREWRITEAOF`)"),
        ):
            aa, ar, ao = cols("agora", kind)
            ra, rr, ro = cols("redis", kind)
            w(f"| {title} | {agora_disk} | {fmt_s(ar)} | {fmt_s(None if ao is None else ao / 1000)} | {fmt_s(aa)} | "
              f"{redis_disk} | {fmt_s(rr)} | {fmt_s(ro)} | **{fmt_ratio(ratio(ar, rr))}** |")
        w("")
        snap = rs.get("snapshot") or {}
        w(f"`agora snapshot` printed: `{rs.get('snapshot_printed')}` (the idle snapshot; changes paused "
          f"{fmt_ms(snap.get('pause_us'))}, written in {snap.get('write_ms', '—')} ms). `BGREWRITEAOF` of the same "
          f"data: fork {fmt_ms(rs.get('redis_fork_us'))}, done in {fmt_s(rs.get('redis_rewrite_s'))} "
          f"(status {rs.get('redis_rewrite_status')}).\n")

        w(f"### 3. The pause of a snapshot under load ({n:,} entries)\n")
        w(
            f"50 clients, no pipelining, setting random keys among the {n:,} (`agora bench --raw -t set -r {n}` / "
            f"`redis-benchmark -r {n} HSET`), -n {suite.n(600000, meta['scale']):,}; in one run of each pair "
            "`agora snapshot` (Redis: `BGREWRITEAOF`) is issued 1 s in. *pause* is what the server reports: agora's "
            "`pause_us` (the time mutating calls waited while the state was copied; `agora snapshot` prints it), "
            "Redis's `latest_fork_usec` (its main thread is stopped for the fork). redis-benchmark reports no p99.9. "
            f"Medians of {len(rs['pause'].get(('agora', True), []))} runs each.\n"
        )
        w("| system | load | req/s | p50 µs | p99 µs | p99.9 µs | max µs | pause (server) | snapshot written in | snapshot size |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for system in ("agora", "redis"):
            for with_snapshot in (False, True):
                rows = rs["pause"].get((system, with_snapshot), [])
                if not rows:
                    continue
                m = {k: med(r.get(k) for r in rows) for k in ("rps", "p50", "p99", "p999", "max", "pause_us", "write_ms",
                                                             "snapshot_bytes")}
                pauses = ", ".join(fmt_ms(r.get("pause_us")) for r in rows) if with_snapshot else ""
                w(f"| {system} | {'with a snapshot' if with_snapshot else 'alone'} | {fmt_rps(m['rps'])} | {fmt_us(m['p50'])} | "
                  f"{fmt_us(m['p99'])} | {fmt_us(m['p999'])} | {fmt_us(m['max'])} | "
                  f"{(fmt_ms(m['pause_us']) + ' (' + pauses + ')') if with_snapshot else '—'} | "
                  f"{(str(round(m['write_ms'])) + ' ms') if with_snapshot and m['write_ms'] is not None else '—'} | "
                  f"{fmt_mib(m['snapshot_bytes']) if with_snapshot else '—'} |")
        printed = [r.get("printed") for r in rs["pause"].get(("agora", True), []) if r.get("printed")]
        if printed:
            w(f"\n`agora snapshot` printed, in the runs above: " + "; ".join(f"`{p}`" for p in printed))
        w("")

    w("### Targets\n")
    w("| target | measured | verdict |\n|---|---|---|")
    for row in targets(tp, rs):
        w("| " + " | ".join(row) + " |")
    w("")
    if findings:
        w(findings.rstrip() + "\n")
    if NOTES:
        w("### Notes from this run\n")
        for text in NOTES:
            w(f"- {text}")
        w("")
    w("### Commands\n")
    w("Rerun: `bench/durability.sh` (`ROUNDS=N`, `BENCH_MAX_MINUTES=M`; `--quick` checks the script). Every server "
      "and benchmark command this run executed, in order, temporary paths shortened to `$TMP` and ports as run "
      "(`AGORA_AUTHKEY` set in the environment):\n")
    w("<details><summary>the commands</summary>\n")
    w("```sh")
    seen = []
    for c in suite.COMMANDS:
        c = re.sub(re.escape(str(meta["agora_copy"])) + r"(?=\s|$)", meta["agora_shown"], c)
        c = c.replace(str(meta["tmp"]), "$TMP")
        c = re.sub(r"restart-\d+-", "restart-N-", c)
        if c not in seen:
            seen.append(c)
    w("\n".join(seen))
    w("```\n")
    w("</details>\n")
    return "\n".join(L)


def targets(tp, rs):
    rows = []
    if tp:
        s = tp["samples"]
        for shape, c, p, _ in tp["shapes"]:
            for level in LEVELS:
                rs_ = {t: ratio(s.rps(("agora", level, shape, t)), s.rps(("redis", level, shape, t))) for t, _, _ in TESTS}
                if None in rs_.values():
                    rows.append([f"≥ Redis throughput, {level}, {c} × {p}", "—", "not measured"])
                    continue
                worst = min(rs_.values())
                verdict = "met" if worst >= 1 else f"missed by {(1 - worst) * 100:.0f}%"
                rows.append([f"≥ Redis throughput, {LEVEL_NAMES[level][0]} ↔ {LEVEL_NAMES[level][1]}, {c} × {p}",
                             ", ".join(f"{t} {fmt_ratio(v)}" for t, v in rs_.items()), verdict])
    if rs:
        for kind, title in (("log", "from the log alone"), ("snapshot", "from a snapshot")):
            ready = med(x[1] for x in rs["restart"].get(("agora", kind), []))
            rows.append([f"restart with {rs['fill_n']:,} entries {title} in a few seconds (≤ 3 s)", fmt_s(ready),
                         "—" if ready is None else ("met" if ready <= 3 else "missed")])
    return rows


def old_findings(path):
    """The hand-written KEEP block of an existing section 6, up to the next ### heading."""
    try:
        doc = Path(path).read_text()
    except OSError:
        return ""
    start = doc.find(SECTION)
    if start < 0:
        return ""
    nxt = doc.find("\n## ", start + len(SECTION))
    old = doc[start:len(doc) if nxt < 0 else nxt + 1]
    k = old.find(KEEP)
    if k < 0:
        return ""
    end = old.find("\n### ", k + len(KEEP))
    return old[k:len(old) if end < 0 else end + 1]


def write_section(path, text):
    """Replaces an old section 6 where it stands; a first one goes before the first later
    numbered section, else before '## Profiles', else at the end."""
    doc = Path(path).read_text() if Path(path).exists() else "# agora benchmarks\n"
    block = text.rstrip() + "\n\n"
    start = doc.find(SECTION)
    if start >= 0:
        nxt = doc.find("\n## ", start + len(SECTION))
        end = len(doc) if nxt < 0 else nxt + 1
        doc = doc[:start] + block + doc[end:]
    else:
        later = [doc.find(f"\n## {n}.") for n in range(7, 20)] + [doc.find("\n## Profiles")]
        at = min((i for i in later if i >= 0), default=-1)
        doc = doc.rstrip() + "\n\n" + block if at < 0 else doc[:at + 1] + block + doc[at + 1:]
    Path(path).write_text(doc.rstrip() + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 5)))
    ap.add_argument("--max-minutes", type=float, default=float(os.environ.get("BENCH_MAX_MINUTES", 12)))
    ap.add_argument("--fill", type=int, default=1000000, help="entries for the restart and pause tests")
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--json", help="also write the raw measurements here")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-restart", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny counts, one round: checks the script itself")
    opts = ap.parse_args()
    if not suite.AGORA.exists():
        sys.exit(f"{suite.AGORA} is missing: run bench/durability.sh (it builds it)")
    suite.require_redis_tools("bench/durability.sh")
    rounds = 1 if opts.quick else max(1, opts.rounds)
    scale = 0.05 if opts.quick else 1.0
    fill_n = 20000 if opts.quick else opts.fill
    deadline = Deadline(opts.max_minutes)
    started = time.time()
    load_start = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="agora-durability-"))
    # A private copy of the binary: a rebuild of target/ during the run cannot change what is measured.
    copy = tmp / "bin" / "agora"
    copy.parent.mkdir()
    shutil.copy2(suite.AGORA, copy)
    info = suite.machine_info()
    # The commands name the binary that was copied (AGORA_BIN's, or the release build).
    shown = suite.AGORA.relative_to(suite.ROOT) if suite.AGORA.is_relative_to(suite.ROOT) else suite.AGORA
    suite.AGORA = copy
    fs = subprocess.run(["df", "--output=fstype,source", str(tmp)], capture_output=True, text=True).stdout.split()
    procs = Servers()
    tp = rs = None
    try:
        restart_minutes = 0 if opts.skip_restart else (0.5 if opts.quick else 3)
        if not opts.skip_throughput:
            tp = run_throughput(procs, tmp, rounds, scale, deadline, reserve=restart_minutes * 60)
        if not opts.skip_restart:
            rs = run_restart(procs, tmp, fill_n, rounds, scale, deadline)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    NOTES.extend(n for n in suite.NOTES if n not in NOTES)
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "minutes": (time.time() - started) / 60, "load_start": load_start, "load_end": loadavg(), "quick": opts.quick,
        "scale": scale, "tmp": tmp, "agora_copy": copy, "agora_shown": str(shown), "fs": f"{fs[2]} on {fs[3]}" if len(fs) >= 4 else "?",
    }
    # bench/sections.md keeps the section across suite runs (bench/run.sh rewrites
    # BENCHMARKS.md); a run written elsewhere (--output, --quick checks) leaves it alone.
    of_record = Path(opts.output).resolve() == (ROOT / "BENCHMARKS.md").resolve()
    text = render(info, tp, rs, meta, old_findings(suite.SECTIONS if of_record else opts.output))
    if of_record:
        write_section(suite.SECTIONS, text)
    write_section(opts.output, text)
    if opts.json:
        def plain(x):
            if isinstance(x, dict):
                return {" ".join(map(str, k)) if isinstance(k, tuple) else str(k): plain(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [plain(v) for v in x]
            if isinstance(x, Samples):
                return plain(x.data)
            return x if isinstance(x, (int, float, str, type(None), bool)) else str(x)
        Path(opts.json).write_text(json.dumps(plain({"throughput": tp, "restart": rs, "meta": meta, "info": info}), indent=1))
    print(text)
    log(f"wrote section 6 of {opts.output} ({meta['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
