#!/usr/bin/env python3
"""agora's side-by-side benchmark suite (run it through bench/run.sh).

In one run on this machine it measures, with fixed request counts, several rounds
and a time cap, and writes BENCHMARKS.md:

1. the floor: the same framing over the same transport echoed by a server that does
   nothing (`agora bench --serve-echo`), against agora's set/get, single client,
   50 clients, and 50 clients x 16 in flight;
2. agora vs Redis: `agora bench` vs `redis-benchmark`, same -c/-P/-n/-d/-r, TCP and
   Unix sockets: dict set/get vs HSET/HGET, queue put/get vs LPUSH/RPOP, value add
   vs INCR;
3. agora vs CPython's manager: bench/py_manager_bench.py, if it exists;
4. scaling: throughput and p99 from 1 to 1,000 connections;
5. memory: per idle connection (10,000 held) and per entry of a 1M-entry dict.

Rounds are interleaved (every system gets every round), so slow phases of a noisy
machine hit all of them; the report quotes medians and ratios of medians. Only
loopback addresses and Unix sockets are used. Standard library only.
"""

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The binary measured: $AGORA_BIN (e.g. the profile-guided build of deploy/build-pgo.sh),
# else the release build bench/prepare.sh makes.
AGORA = Path(os.environ["AGORA_BIN"]).resolve() if os.environ.get("AGORA_BIN") else ROOT / "target" / "release" / "agora"
# The second agora server's worker count: one per CPU, against the default of one fewer.
ALT_WORKERS = os.cpu_count() or 1
AUTHKEY = "agora-bench-" + os.urandom(8).hex()
PY_BENCH = ROOT / "bench" / "py_manager_bench.py"
CHANGES = ROOT / "bench" / "changes.md"
SECTIONS = ROOT / "bench" / "sections.md"  # hand-written sections measured by other scripts, kept as is
PY_DURATION = 1.5  # seconds per py_manager_bench.py measurement

COMMANDS = []  # every benchmark command line, for the report
NOTES = []  # things that went wrong or were skipped


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Deadline:
    def __init__(self, minutes):
        self.end = time.monotonic() + minutes * 60

    def left(self):
        return self.end - time.monotonic()

    def expired(self, reserve=0):
        return self.left() <= reserve


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def can_connect(address):
    try:
        if address.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(address[5:])
        else:
            host, port = address.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=1)
        s.close()
        return True
    except OSError:
        return False


def record(cmd):
    COMMANDS.append(" ".join(shlex.quote(str(c)) for c in cmd))


class Processes:
    """Servers the suite started; all stopped at the end, whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        record(cmd)
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def agora_env():
    env = dict(os.environ)
    env["AGORA_AUTHKEY"] = AUTHKEY
    env.pop("AGORA_ADDRESS", None)
    env.pop("AGORA_AUTHKEY_FILE", None)
    return env


def children_cpu():
    """CPU seconds (user + system) used by finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu(pid):
    """CPU seconds (user + system) a running process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


LAST_CPU = {}  # CPU seconds of the last benchmark client run


def agora_bench(args, timeout):
    cmd = [AGORA, "bench", *map(str, args), "--json"]
    record(cmd)
    before = children_cpu()
    try:
        out = subprocess.run(
            [str(c) for c in cmd], env=agora_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        NOTES.append(f"`{COMMANDS[-1]}` did not finish within {timeout}s; its results are missing")
        return {"results": []}
    LAST_CPU["client"] = children_cpu() - before
    if out.returncode != 0:
        NOTES.append(f"`{COMMANDS[-1]}` failed: {out.stderr.strip()[-300:]}")
        return {"results": []}
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as e:
        NOTES.append(f"`{COMMANDS[-1]}` printed no JSON ({e})")
        return {"results": []}


def redis_bench(sock_args, clients, pipeline, requests, command, timeout, keyspace=10000):
    cmd = ["redis-benchmark", *sock_args, "-c", clients, "-P", pipeline, "-n", requests, "-r", keyspace, "--csv", *command]
    record(cmd)
    before = children_cpu()
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    LAST_CPU["client"] = children_cpu() - before
    lines = [line for line in out.stdout.splitlines() if line.startswith('"') and not line.startswith('"test"')]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"redis-benchmark failed: {out.stderr.strip()[-300:]} {out.stdout[-300:]}")
    cells = [c.strip('"') for c in lines[-1].split('","')]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    return {"rps": float(cells[1]), "p50_us": float(cells[4]) * 1000, "p99_us": float(cells[6]) * 1000}


def by_test(report):
    return {r["test"]: r for r in report["results"]}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Samples:
    """Measurements keyed by a tuple; medians on demand."""

    def __init__(self):
        self.data = {}

    def add(self, key, rps, p50, p99):
        self.data.setdefault(key, []).append((rps, p50, p99))

    def rounds(self, key):
        return len(self.data.get(key, []))

    def rps(self, key):
        return med(x[0] for x in self.data.get(key, []))

    def p50(self, key):
        return med(x[1] for x in self.data.get(key, []))

    def p99(self, key):
        return med(x[2] for x in self.data.get(key, []))


def fmt_rps(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_us(v):
    return "—" if v is None else f"{v:,.1f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_cpu(v):
    return "—" if v is None else f"{v:.2f}"


def fmt_ratio(v):
    return "—" if v is None else f"{v:.2f}×"


def machine_info():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    rev = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version(["git", "-C", str(ROOT), "status", "--porcelain"]) != "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory": mem,
        "os": version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "agora": version([str(AGORA), "--version"]) + f" (git {rev}{', uncommitted changes' if dirty else ''})",
        "agora_workers": default_workers(),
        "redis": version(["redis-server", "--version"]),
        "python": sys.version.split()[0],
        "rustc": version(["rustc", "--version"]),
    }


def default_workers():
    """How many worker threads `agora serve` runs here by default, as the binary resolves it
    (`--print-config`), or "?" if it cannot say."""
    try:
        out = subprocess.run([str(AGORA), "serve", "--print-config"], capture_output=True, text=True, timeout=10)
        return next(line.split("=")[1].strip() for line in out.stdout.splitlines() if line.startswith("workers ="))
    except (OSError, StopIteration, subprocess.TimeoutExpired):
        return "?"


def loadavg():
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return ["?"] * 3



def commands_section(w, intro):
    """Writes the "Commands" section: every command the run executed, once each, in order."""
    w("## Commands\n")
    w(intro + "\n")
    w("```sh")
    seen = []
    for c in COMMANDS:
        c = c.replace(str(ROOT) + "/", "")
        if c not in seen:
            seen.append(c)
    w("\n".join(seen))
    w("```\n")


def require_redis_tools(script):
    """Exits with what to run if the Redis tools a comparison needs are missing."""
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run {script} (it installs it)")

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 5)))
    ap.add_argument("--max-minutes", type=float, default=float(os.environ.get("BENCH_MAX_MINUTES", 20)))
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--quick", action="store_true", help="tiny counts, one round: checks the suite itself")
    opts = ap.parse_args()
    if not AGORA.exists():
        sys.exit(f"{AGORA} is missing: run bench/run.sh (it builds it)")
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run bench/run.sh (it installs it)")
    rounds = 1 if opts.quick else max(1, opts.rounds)
    scale = 0.05 if opts.quick else 1.0
    deadline = Deadline(opts.max_minutes)
    started = time.time()
    load_start = loadavg()
    info = machine_info()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="agora-suite-"))
    try:
        results = run_suite(procs, tmp, rounds, scale, deadline)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_start"] = load_start
    results["load_end"] = loadavg()
    results["minutes"] = (time.time() - started) / 60
    results["rounds"] = rounds
    results["quick"] = opts.quick
    text = render(info, results)
    Path(opts.output).write_text(text)
    log(f"wrote {opts.output} ({results['minutes']:.1f} min)")


def n(x, scale):
    return max(200, int(x * scale))


def fresh_agora(procs, tmp, name):
    """A new `agora serve` on TCP and a Unix socket; returns the process and its addresses."""
    addr = {"tcp": f"127.0.0.1:{free_port()}", "unix": f"unix:{tmp / (name + '.sock')}"}
    server = procs.start(
        [AGORA, "serve", "--listen", addr["tcp"], "--listen", addr["unix"], "--max-connections", 20000,
         "--heartbeat-timeout", "60s", "--log-level", "warn"],
        env=agora_env(),
    )
    for address in addr.values():
        wait_until(lambda a=address: can_connect(a), address)
    return server, addr


def run_suite(procs, tmp, rounds, scale, deadline):
    log("starting servers: agora (TCP + Unix), echo floor (TCP + Unix), redis (TCP + Unix)")
    agora_tcp = f"127.0.0.1:{free_port()}"
    agora_unix = f"unix:{tmp / 'agora.sock'}"
    agora = procs.start(
        [AGORA, "serve", "--listen", agora_tcp, "--listen", agora_unix, "--max-connections", 20000,
         "--heartbeat-timeout", "60s", "--log-level", "warn"],
        env=agora_env(),
    )
    # The same server with one worker per CPU (`--workers N`), the alternative to the
    # default of one fewer: the setting for a machine the server has to itself.
    per_cpu = {"tcp": f"127.0.0.1:{free_port()}", "unix": f"unix:{tmp / 'agora-per-cpu.sock'}"}
    procs.start(
        [AGORA, "serve", "--listen", per_cpu["tcp"], "--listen", per_cpu["unix"], "--max-connections", 20000,
         "--heartbeat-timeout", "60s", "--log-level", "warn", "--workers", ALT_WORKERS],
        env=agora_env(),
    )
    echo = {
        "tcp": f"127.0.0.1:{free_port()}",
        "unix": f"unix:{tmp / 'echo.sock'}",
    }
    for address in echo.values():
        procs.start([AGORA, "bench", "--serve-echo", "--address", address])
    # The floor for stock CPython clients: an echo server with a thread per connection
    # blocked in recv, as CPython's manager serves one, each connection authenticated
    # with the authkey as a manager's is (bench/py_manager_bench.py --echo).
    py_echo = {"tcp": f"127.0.0.1:{free_port()}", "unix": f"unix:{tmp / 'echo-threads.sock'}"}
    py_echo_pids = {
        transport: procs.start([AGORA, "bench", "--serve-echo", "--echo-threads", "--echo-handshake",
                                "--address", address], env=agora_env()).pid
        for transport, address in py_echo.items()
    }
    redis_port = free_port()
    redis_sock = tmp / "redis.sock"
    redis = procs.start(
        [
            "redis-server", "--port", redis_port, "--bind", "127.0.0.1", "--unixsocket", redis_sock,
            "--save", "", "--appendonly", "no", "--maxclients", 20000, "--daemonize", "no",
        ]
    )
    for address in [agora_tcp, agora_unix, *per_cpu.values(), *echo.values(), *py_echo.values(),
                    f"127.0.0.1:{redis_port}", f"unix:{redis_sock}"]:
        wait_until(lambda a=address: can_connect(a), address)
    agora_addr = {"tcp": agora_tcp, "unix": agora_unix}
    redis_args = {"tcp": ["-h", "127.0.0.1", "-p", redis_port], "unix": ["-s", redis_sock]}
    value = "x" * 3
    redis_cmds = {
        "set": ["HSET", "bench:dict", "key:__rand_int__", value],
        "get": ["HGET", "bench:dict", "key:__rand_int__"],
        "qput": ["LPUSH", "bench:queue", value],
        "qget": ["RPOP", "bench:queue"],
        "add": ["INCR", "bench:counter"],
    }
    s = Samples()
    cpu = {}
    out = {"samples": s, "cpu": cpu, "agora": agora_addr, "echo": echo, "redis_port": redis_port}

    def take(key, r):
        if r is None:
            return
        if r.get("errors") or r.get("timed_out"):
            NOTES.append(f"{' '.join(map(str, key))}: {r.get('errors')} errors (first: {r.get('first_error')}), "
                         f"timed out: {r.get('timed_out')}; sample left out")
            return
        s.add(key, r["requests_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"])

    # Configurations of the main rounds: (label, clients, pipeline, requests).
    configs = [("1x1", 1, 1, n(20000, scale)), ("50x1", 50, 1, n(100000, scale)), ("50x16", 50, 16, n(400000, scale))]
    for rnd in range(rounds):
        if deadline.expired(reserve=8 * 60):
            NOTES.append(f"main rounds stopped after {rnd} of {rounds} (time cap)")
            break
        log(f"round {rnd + 1}/{rounds}: floor, agora, redis over TCP and Unix")
        for transport in ("tcp", "unix"):
            for label, c, p, req in configs:
                tests = "echo,ping,set,get,qput,qget,add" if c > 1 else "echo,ping,set,get,add"
                rep = agora_bench(
                    ["-a", agora_addr[transport], "--echo-address", echo[transport], "-c", c, "-P", p, "-n", req,
                     "-d", 3, "-r", 10000, "-t", tests, "--time-limit", "60s"],
                    timeout=400,
                )
                for test, r in by_test(rep).items():
                    take(("agora", transport, label, test), r)
                if c > 1:
                    for system, address in (("agora", agora_addr[transport]), ("agora-per-cpu", per_cpu[transport])):
                        for client in (["--raw"], []):
                            if system == "agora" and not client:
                                continue  # the typed run against the default server is above
                            rep = agora_bench(
                                ["-a", address, *client, "-c", c, "-P", p, "-n", req, "-d", 3, "-r", 10000,
                                 "-t", "set,get,qput,qget,add", "--time-limit", "60s"],
                                timeout=400,
                            )
                            for test, r in by_test(rep).items():
                                take((system + ("-raw" if client else ""), transport, label, test), r)
                if c > 1 or transport == "tcp":
                    for test, cmd in redis_cmds.items():
                        try:
                            r = redis_bench(redis_args[transport], c, p, req, cmd, timeout=120)
                            s.add(("redis", transport, label, test), r["rps"], r["p50_us"], r["p99_us"])
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            NOTES.append(f"redis {transport} {label} {test}: {e}")
        # CPU per request: dict get alone, so the processes' CPU time is its own.
        for label, c, p, req in configs[1:]:
            for system in ("agora", "redis"):
                server_pid = agora.pid if system == "agora" else redis.pid
                before = process_cpu(server_pid)
                try:
                    if system == "agora":
                        rep = agora_bench(
                            ["-a", agora_tcp, "-c", c, "-P", p, "-n", req, "-r", 10000, "-t", "get", "--time-limit", "60s"],
                            timeout=300,
                        )
                        done = by_test(rep).get("get", {}).get("requests")
                    else:
                        redis_bench(redis_args["tcp"], c, p, req, redis_cmds["get"], timeout=120)
                        done = req
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    NOTES.append(f"cpu {system} {label}: {e}")
                    continue
                after = process_cpu(server_pid)
                if before is not None and after is not None and done:
                    cpu.setdefault((system, label), []).append(
                        (LAST_CPU["client"] * 1e6 / done, (after - before) * 1e6 / done)
                    )
        # The other operations, TCP only.
        for label, c, req in [("1x1", 1, n(10000, scale)), ("50x1", 50, n(50000, scale))]:
            rep = agora_bench(
                ["-a", agora_tcp, "-c", c, "-n", req, "-t", "append,queue,lock,lock-contended,event", "--time-limit", "60s"],
                timeout=400,
            )
            for test, r in by_test(rep).items():
                take(("agora", "tcp", label, test), r)

    # Scaling: 1 .. 1000 connections, dict get, both transports, agora and redis.
    out["scaling"] = [1, 10, 100, 1000]
    for rnd in range(min(rounds, 3)):
        if deadline.expired(reserve=5 * 60):
            NOTES.append(f"scaling stopped after {rnd} rounds (time cap)")
            break
        log(f"scaling round {rnd + 1}: 1..1000 connections")
        for transport in ("tcp", "unix"):
            for c in out["scaling"]:
                req = n(max(20000, c * 100), scale)
                rep = agora_bench(
                    ["-a", agora_addr[transport], "-c", c, "-n", req, "-t", "get", "--time-limit", "60s"], timeout=300
                )
                take(("agora", transport, f"scale{c}", "get"), by_test(rep).get("get"))
                try:
                    r = redis_bench(redis_args[transport], c, 1, req, redis_cmds["get"], timeout=120)
                    s.add(("redis", transport, f"scale{c}", "get"), r["rps"], r["p50_us"], r["p99_us"])
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    NOTES.append(f"redis scaling {transport} {c}: {e}")

    # Memory, each on a fresh server (freed memory is reused, so a second measurement on
    # the same server would see it as free): 10,000 idle connections, and the get rate of
    # 50 clients with and without them held.
    out["idle"] = {}
    idle_n = 10000 if scale == 1.0 else 200
    for transport in ("unix", "tcp"):
        if deadline.expired(reserve=3 * 60):
            NOTES.append(f"idle connections over {transport} skipped (time cap)")
            continue
        log(f"memory: {idle_n} idle connections over {transport} (fresh server)")
        server, addr = fresh_agora(procs, tmp, f"idle-{transport}")
        common = ["-a", addr[transport], "-c", 50, "-n", n(100000, scale), "-t", "set,get", "--time-limit", "60s"]
        rep = agora_bench(common, timeout=300)
        take(("agora", transport, "before-idle", "get"), by_test(rep).get("get"))
        rep = agora_bench(["--idle", idle_n, *common], timeout=400)
        if rep.get("idle"):
            out["idle"][transport] = rep["idle"]
        take(("agora", transport, "idle", "get"), by_test(rep).get("get"))
        procs.stop(server)

    # Memory: a 1M-entry dict (fresh server).
    fill_n = 1000000 if scale == 1.0 else 10000
    if not deadline.expired(reserve=2 * 60):
        log(f"memory: a {fill_n:,}-entry dict (fresh server)")
        server, addr = fresh_agora(procs, tmp, "fill")
        rep = agora_bench(
            ["-a", addr["tcp"], "-c", 50, "-P", 16, "-r", fill_n, "-d", 3, "-t", "fill", "--time-limit", "120s"],
            timeout=400,
        )
        out["fill"] = by_test(rep).get("fill")
        procs.stop(server)
    else:
        NOTES.append("1M-entry dict skipped (time cap)")

    # agora vs CPython's manager.
    out["python"] = run_python_bench(agora_addr, agora.pid, (py_echo, py_echo_pids), deadline, quick=scale != 1.0)
    return out


def run_python_bench(agora_addr, agora_pid, floor, deadline, quick):
    """bench/py_manager_bench.py (stock CPython clients vs CPython's server and agora, and the
    floor: `floor` is the echo servers' addresses and pids), per transport."""
    floor_addr, floor_pid = floor
    if not PY_BENCH.exists():
        NOTES.append("bench/py_manager_bench.py does not exist yet: the CPython comparison is a TODO")
        return None
    runs = {}
    for transport in ("tcp", "unix"):
        budget = min(5 * 60, deadline.left() - 30)
        if budget < 60:
            NOTES.append(f"CPython comparison over {transport} skipped (time cap)")
            continue
        log(f"agora vs CPython's manager over {transport}: {PY_BENCH.name} (up to {budget:.0f}s)")
        out_file = Path(tempfile.mkdtemp(prefix="agora-py-")) / "py.json"
        cmd = [sys.executable, PY_BENCH.relative_to(ROOT), "--agora", agora_addr[transport],
               "--duration", PY_DURATION, "--agora-pid", agora_pid, "--json", out_file,
               "--echo", floor_addr[transport], "--echo-pid", floor_pid[transport]]
        if quick:
            cmd += ["--clients", "1,4", "--ops", "dict_get,dict_set", "--duration", 0.3]
        record(cmd)
        try:
            out = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=agora_env(), capture_output=True, text=True,
                                 timeout=budget, check=False)
        except subprocess.TimeoutExpired:
            NOTES.append(f"{PY_BENCH.name} over {transport} did not finish within {budget:.0f}s")
            continue
        if out.returncode != 0:
            NOTES.append(f"{PY_BENCH.name} over {transport} failed: {out.stderr.strip()[-400:]}")
            continue
        try:
            runs[transport] = json.loads(out_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            NOTES.append(f"{PY_BENCH.name} over {transport}: unreadable results ({e})")
        shutil.rmtree(out_file.parent, ignore_errors=True)
    return runs or None


# ----------------------------------------------------------------------------- report


def render(info, res):
    s = res["samples"]
    L = []
    w = L.append
    w("# agora benchmarks\n")
    w(
        "Written by `bench/run.sh` (the suite in `bench/suite.py`): every number below was measured in one run, "
        "on the machine described, with the commands listed at the end. Each configuration ran "
        f"{res['rounds']} interleaved rounds; tables show **medians**, and ratios are ratios of medians "
        "measured in the same run — on a small, shared machine only those hold. Latencies are per request, "
        "from the client's side, in microseconds. Loopback TCP and Unix sockets only.\n"
    )
    if res.get("quick"):
        w("> **Quick mode** (`--quick`): tiny counts, one round. These numbers check the suite, nothing else.\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for k in ("nproc", "cpu", "memory", "kernel", "os", "agora", "redis", "python", "rustc"):
        w(f"| {k} | {info[k]} |")
    w(f"| agora serve workers (its default here) | {info.get('agora_workers', '?')} |")
    w(f"| load average at start / end | {' '.join(res['load_start'])} / {' '.join(res['load_end'])} |")
    w(f"| suite duration | {res['minutes']:.1f} min |\n")
    w(
        "Client and server share the machine's cores: `agora bench` runs its client on one thread "
        "(`--threads 1`), as `redis-benchmark` does; the agora server runs Tokio's multi-threaded "
        "runtime with its default of one worker thread fewer than the CPUs (at least one), Redis its "
        f"single thread. A second agora server with one worker per CPU (`agora serve --workers {ALT_WORKERS}`) "
        "runs the 50-client comparisons with Redis too (section 2): the setting for a machine the server "
        "has to itself.\n"
    )

    w("## Targets\n")
    w("| target | measured | verdict |\n|---|---|---|")
    for row in targets(res):
        w("| " + " | ".join(row) + " |")
    w("")

    w("## 1. The floor: agora ÷ echo over the same transport\n")
    w(
        "`echo` is `agora bench -t echo` against `agora bench --serve-echo`: the same length-prefixed frames "
        "over the same socket type, written and read back by a server that does nothing (no handshake "
        "state, no decoding, no objects), with a client that does nothing either (one task per connection "
        "writes `-P` frames, reads `-P` back). `ping` is agora's own no-op request through the full client "
        "and server.\n"
    )
    for transport in ("tcp", "unix"):
        w(f"### {transport.upper()}\n")
        w("| clients × in flight | test | requests/s | p50 µs | p99 µs | p50 ÷ echo p50 | requests/s ÷ echo |")
        w("|---|---|---|---|---|---|---|")
        for label in ("1x1", "50x1", "50x16"):
            echo = ("agora", transport, label, "echo")
            for test in ("echo", "ping", "set", "get"):
                key = ("agora", transport, label, test)
                if not s.rounds(key):
                    continue
                w(
                    f"| {label.replace('x', ' × ')} | {test} | {fmt_rps(s.rps(key))} | {fmt_us(s.p50(key))} | "
                    f"{fmt_us(s.p99(key))} | {fmt_ratio(ratio(s.p50(key), s.p50(echo)))} | "
                    f"{fmt_ratio(ratio(s.rps(key), s.rps(echo)))} |"
                )
        w("")

    w("## 2. agora vs Redis\n")
    w(
        "`agora bench` against `agora serve`, `redis-benchmark` against `redis-server --save '' --appendonly no`, "
        "same `-c`, `-P`, `-n`, 3-byte values, `-r 10000` random keys. Pairs: dict set ↔ `HSET`, dict get ↔ "
        "`HGET`, queue put ↔ `LPUSH`, queue get_nowait ↔ `RPOP`, value add ↔ `INCR`.\n\n"
        "Two agora clients: **typed** is the agora client library (`agora_client::Manager` and its proxies — "
        "what a Rust program uses); **raw** (`agora bench --raw`) is a bare client built like "
        "`redis-benchmark`'s own (per connection: write `-P` encoded requests, read `-P` replies). Client and "
        "server share the cores, so the client's own cost shows in the server's throughput; raw ↔ "
        "redis-benchmark compares the servers, typed shows what the library adds.\n"
    )
    names = {"set": "HSET", "get": "HGET", "qput": "LPUSH", "qget": "RPOP", "add": "INCR"}
    for transport, system, title in (("tcp", "agora", "TCP"), ("unix", "agora", "UNIX"),
                                     ("tcp", "agora-per-cpu", f"TCP, `agora serve --workers {ALT_WORKERS}`"),
                                     ("unix", "agora-per-cpu", f"UNIX, `agora serve --workers {ALT_WORKERS}`")):
        if not any(s.rounds((system, transport, label, t)) for label in ("50x1", "50x16") for t in names):
            continue
        w(f"### {title}\n")
        w("| clients × in flight | agora op ↔ Redis | agora raw req/s | agora typed req/s | Redis req/s | raw ÷ Redis | typed ÷ Redis | raw / typed / Redis p99 µs |")
        w("|---|---|---|---|---|---|---|---|")
        for label in ("1x1", "50x1", "50x16"):
            for test, rname in names.items():
                a, b, r = (system + "-raw", transport, label, test), (system, transport, label, test), ("redis", transport, label, test)
                if not s.rounds(r) or not (s.rounds(a) or s.rounds(b)):
                    continue
                w(
                    f"| {label.replace('x', ' × ')} | {test} ↔ {rname} | {fmt_rps(s.rps(a))} | {fmt_rps(s.rps(b))} | "
                    f"{fmt_rps(s.rps(r))} | **{fmt_ratio(ratio(s.rps(a), s.rps(r)))}** | "
                    f"{fmt_ratio(ratio(s.rps(b), s.rps(r)))} | "
                    f"{fmt_us(s.p99(a))} / {fmt_us(s.p99(b))} / {fmt_us(s.p99(r))} |"
                )
        w("")
    w("### CPU per request (TCP, dict get ↔ HGET)\n")
    w(
        "Both clients and both servers share the same cores, so what each side spends per request decides "
        "the throughput once the machine is busy. Measured from the processes' own CPU time "
        "(`/proc/PID/stat`, `getrusage`) over a `get`-only run; medians over the rounds.\n"
    )
    w("| clients × in flight | agora bench µs/req | agora serve µs/req | redis-benchmark µs/req | redis-server µs/req |")
    w("|---|---|---|---|---|")
    for label in ("50x1", "50x16"):
        a, r = res["cpu"].get(("agora", label), []), res["cpu"].get(("redis", label), [])
        if not a and not r:
            continue
        w(
            f"| {label.replace('x', ' × ')} | {fmt_cpu(med(x[0] for x in a))} | {fmt_cpu(med(x[1] for x in a))} | "
            f"{fmt_cpu(med(x[0] for x in r))} | {fmt_cpu(med(x[1] for x in r))} |"
        )
    w("")
    w("### Other operations (TCP, no Redis equivalent)\n")
    w("| clients | test | what one sample is | samples/s | p50 µs | p99 µs |\n|---|---|---|---|---|---|")
    whats = {
        "append": "list append",
        "queue": "put, then a blocking get (2 round trips)",
        "lock": "acquire + release of an uncontended lock (2 round trips)",
        "lock-contended": "acquire + release, everyone on one lock (includes the wait)",
        "event": "set() → the parked wait() returns",
    }
    for label in ("1x1", "50x1"):
        for test, what in whats.items():
            key = ("agora", "tcp", label, test)
            if s.rounds(key):
                w(f"| {label.split('x')[0]} | {test} | {what} | {fmt_rps(s.rps(key))} | {fmt_us(s.p50(key))} | {fmt_us(s.p99(key))} |")
    w("")

    w("## 3. agora vs CPython's manager\n")
    py = res.get("python")
    if py is None:
        w(
            "**TODO** — `bench/py_manager_bench.py` (stdlib only: CPython's `SyncManager` server vs agora, "
            "K = 1, 2, 4, 8 client processes) was not present or did not finish in this run; see the notes.\n"
        )
    else:
        w(render_python(py))

    w("## 4. From 1 to 1,000 connections (dict get, no pipelining)\n")
    w("| transport | connections | agora req/s | agora p50 / p99 µs | Redis req/s | Redis p50 / p99 µs | agora ÷ Redis |")
    w("|---|---|---|---|---|---|---|")
    for transport in ("tcp", "unix"):
        for c in res.get("scaling", []):
            a, r = ("agora", transport, f"scale{c}", "get"), ("redis", transport, f"scale{c}", "get")
            if not s.rounds(a):
                continue
            w(
                f"| {transport} | {c:,} | {fmt_rps(s.rps(a))} | {fmt_us(s.p50(a))} / {fmt_us(s.p99(a))} | "
                f"{fmt_rps(s.rps(r))} | {fmt_us(s.p50(r))} / {fmt_us(s.p99(r))} | {fmt_ratio(ratio(s.rps(a), s.rps(r)))} |"
            )
    w("")

    w("## 5. Memory\n")
    w(
        "Resident memory of a freshly started server process, from `agora stats --json` (`memory_bytes`, read from "
        "`/proc/self/statm`) before and after.\n"
    )
    w("| what | before | after | per item |\n|---|---|---|---|")
    for transport, idle in res.get("idle", {}).items():
        w(
            f"| {idle['connected']:,} idle connections ({transport}) | {idle['server_memory_before'] / 2**20:.1f} MiB | "
            f"{idle['server_memory_after'] / 2**20:.1f} MiB | {idle['bytes_per_connection'] / 1024:.1f} KiB per connection |"
        )
    fill = res.get("fill")
    if fill:
        w(
            f"| dict of {fill['requests']:,} entries (12-byte-digit string keys, 3-byte string values) | "
            f"{fill['server_memory_before'] / 2**20:.1f} MiB | {fill['server_memory_after'] / 2**20:.1f} MiB | "
            f"{fill['bytes_per_entry']:.0f} bytes per entry |"
        )
    w("")
    for transport in res.get("idle", {}):
        key, base = ("agora", transport, "idle", "get"), ("agora", transport, "before-idle", "get")
        if s.rounds(key):
            w(
                f"- dict get, 50 clients, with {res['idle'][transport]['connected']:,} idle connections held "
                f"({transport}): {fmt_rps(s.rps(key))} req/s, p99 {fmt_us(s.p99(key))} µs "
                f"({fmt_ratio(ratio(s.rps(key), s.rps(base)))} of the {fmt_rps(s.rps(base))} req/s measured on the "
                f"same server just before, without them)."
            )
    w("")

    if SECTIONS.exists():
        w(SECTIONS.read_text().rstrip() + "\n")
    if CHANGES.exists():
        w(CHANGES.read_text().rstrip() + "\n")

    if NOTES:
        w("## Notes from this run\n")
        for note in NOTES:
            w(f"- {note}")
        w("")
    commands_section(w, "Every benchmark command this run executed, in order (`AGORA_AUTHKEY` set in the environment):")
    return "\n".join(L)


def render_python(runs):
    out = [
        "Stock CPython clients (`multiprocessing.managers.SyncManager(...).connect()`, standard library only) "
        "against CPython's own manager server and against agora, K client processes at once, by "
        f"`bench/py_manager_bench.py` ({PY_DURATION:g} s per measurement). Ratios: agora ÷ CPython throughput "
        "(> 1: agora faster). Server CPU per op is each server process's CPU time (user + system, "
        "`/proc/PID/stat`) over the measurement, divided by the ops; its ratio < 1: agora's server spends less. "
        "The floor is the same clients' round trips against `agora bench --serve-echo --echo-threads "
        "--echo-handshake`, which authenticates each connection as a manager does and then sends every frame "
        "back from a thread per connection blocked in `recv` (CPython's manager's model; its threads wait in "
        "`accept` and serve connection after connection, so none is started per connection) and does "
        "nothing else: what a server that sleeps between a client's calls spends on them, the kernel's part (a server "
        "that takes several connections' requests per wake-up can spend a little less when many clients call). "
        "Where the floor ÷ CPython is above 1/3, a server that sleeps between calls cannot spend a third of "
        "CPython's server's CPU, and one that polls instead spends more (bench/changes.md, round 37). The lock's "
        "floor is a hand-off: there an acquire takes one lock all the floor's connections share, its thread "
        "waiting for it as CPython's manager's thread waits in `Lock.acquire`, and a release frees it "
        "(bench/changes.md, round 40; before it, the floor echoed both at once and its clients never waited). "
        "Proxy creation's floor is its four calls, each on a new authenticated connection, as the manager makes "
        "them (round 41; before it, that row had no floor). The clients' CPU per op is what agora's client "
        "processes spent themselves (user + system, all K of them, per op): on this machine's cores, shared "
        "with the server, it bounds the rate any server could give them (bench/changes.md, round 42).\n"
    ]
    for transport, run in runs.items():
        out.append(f"### {transport.upper()} (CPython {run.get('python', '?')})\n")
        out.append("| op | K | CPython ops/s | agora ops/s | agora ÷ CPython | CPython p50 / p99 µs | agora p50 / p99 µs "
                   "| server CPU/op µs CPython / agora / floor | CPU ratio | floor ÷ CPython | clients' CPU/op µs |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in run.get("results", []):
            c, a, e = row.get("cpython", {}), row.get("agora", {}), row.get("echo", {})
            out.append(
                f"| {row.get('op')} | {row.get('clients')} | {fmt_rps(c.get('ops_per_sec'))} | {fmt_rps(a.get('ops_per_sec'))} | "
                f"**{fmt_ratio(ratio(a.get('ops_per_sec'), c.get('ops_per_sec')))}** | "
                f"{fmt_us(c.get('p50_us'))} / {fmt_us(c.get('p99_us'))} | {fmt_us(a.get('p50_us'))} / {fmt_us(a.get('p99_us'))} | "
                f"{fmt_us(c.get('server_cpu_us'))} / {fmt_us(a.get('server_cpu_us'))} / {fmt_us(e.get('server_cpu_us'))} | "
                f"{fmt_ratio(ratio(a.get('server_cpu_us'), c.get('server_cpu_us')))} | "
                f"{fmt_ratio(ratio(e.get('server_cpu_us'), c.get('server_cpu_us')))} | {fmt_us(a.get('client_cpu_us'))} |"
            )
        out.append("")
    return "\n".join(out) + "\n"


def python_floor_targets(runs):
    """Every op at every K: agora >= 1.0x CPython's throughput; server CPU per op <= 1/3 of CPython's
    (`costlier`), and of those rows the ones where the echo floor itself is above the third (`beyond`)."""
    slower, costlier, beyond, rows = [], [], [], 0
    for transport, run in runs.items():
        for row in run.get("results", []):
            if "agora" not in row or "cpython" not in row:
                continue
            rows += 1
            name = f"{row['op']}/{transport}/K={row.get('clients')}"
            r = ratio(row["agora"].get("ops_per_sec"), row["cpython"].get("ops_per_sec"))
            if r is None or r < 1.0:
                slower.append(f"{name} {fmt_ratio(r)}")
            c = ratio(row["agora"].get("server_cpu_us"), row["cpython"].get("server_cpu_us"))
            if c is None or c > 1 / 3:
                costlier.append(f"{name} {fmt_ratio(c)}")
                f = ratio(row.get("echo", {}).get("server_cpu_us"), row["cpython"].get("server_cpu_us"))
                if f is not None and f > 1 / 3:
                    beyond.append(name)
    return rows, slower, costlier, beyond


def python_target(runs):
    """K = 4: agora >= 2x CPython's throughput and a lower p99, op by op."""
    met, missed = [], []
    for transport, run in runs.items():
        for row in run.get("results", []):
            if row.get("clients") != 4 or "agora" not in row or "cpython" not in row:
                continue
            r = ratio(row["agora"].get("ops_per_sec"), row["cpython"].get("ops_per_sec"))
            ok = r is not None and r >= 2 and row["agora"].get("p99_us", 1e18) < row["cpython"].get("p99_us", 0)
            name = f"{row['op']}/{transport} {fmt_ratio(r)}"
            if not ok and row.get("client_bound_ratio") is not None:
                # What the clients' own CPU allows on this machine (py_manager_bench.py's bounds).
                name += (f" (the clients' CPU allows {fmt_ratio(row.get('floor_bound_ratio'))} with the floor's "
                         f"server, {fmt_ratio(row['client_bound_ratio'])} with a server that costs nothing)")
            (met if ok else missed).append(name)
    return met, missed


def fmt_cell(v):
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "—" if v is None else str(v)


def targets(res):
    s = res["samples"]
    rows = []
    for transport in ("tcp", "unix"):
        echo = s.p50(("agora", transport, "1x1", "echo"))
        worst = max(
            (ratio(s.p50(("agora", transport, "1x1", t)), echo) or 0 for t in ("set", "get")), default=0
        )
        verdict = "—" if not worst else ("met" if worst <= 1.25 else f"missed by {(worst / 1.25 - 1) * 100:.1f}%")
        rows.append(
            [f"1 client, no pipelining: dict get/set p50 ≤ 1.25× echo floor ({transport})",
             f"set {fmt_ratio(ratio(s.p50(('agora', transport, '1x1', 'set')), echo))}, "
             f"get {fmt_ratio(ratio(s.p50(('agora', transport, '1x1', 'get')), echo))}",
             verdict]
        )
    # Every operation section 2 pairs with Redis: the goal is "every row".
    ops = ("set", "get", "qput", "qget", "add")
    for label, need, name in (("50x1", 1.2, "50 clients, no pipelining: every op ≥ 1.2× Redis's pair"),
                              ("50x16", 1.0, "50 clients, -P 16: every op ≥ Redis's pair")):
        for transport in ("tcp", "unix"):
            for system, client in (("agora-raw", "raw client, as redis-benchmark's"), ("agora", "typed client"),
                                   ("agora-per-cpu-raw", f"raw client, --workers {ALT_WORKERS}"),
                                   ("agora-per-cpu", f"typed client, --workers {ALT_WORKERS}")):
                rs = [(t, ratio(s.rps((system, transport, label, t)), s.rps(("redis", transport, label, t))))
                      for t in ops]
                rs = [(t, r) for t, r in rs if r is not None]
                if not rs:
                    rows.append([f"{name} ({transport}, {client})", "—", "not measured"])
                    continue
                worst = min(r for _, r in rs)
                short = [t for t, r in rs if r < need]
                verdict = "met" if not short else f"missed for {len(short)} of {len(rs)}, worst by {(1 - worst / need) * 100:.1f}%"
                rows.append([f"{name} ({transport}, {client})", ", ".join(f"{t} {fmt_ratio(r)}" for t, r in rs), verdict])
    # The same goal's other half: the server's CPU per pipelined request (section 2's table).
    a, r = res["cpu"].get(("agora", "50x16"), []), res["cpu"].get(("redis", "50x16"), [])
    mine, theirs = med(x[1] for x in a), med(x[1] for x in r)
    if mine and theirs:
        rows.append(
            ["50 clients, -P 16: agora's server CPU per request ≤ Redis's (tcp, dict get ↔ HGET)",
             f"agora {fmt_cpu(mine)} µs, Redis {fmt_cpu(theirs)} µs ({fmt_ratio(mine / theirs)})",
             "met" if mine <= theirs else f"missed by {(mine / theirs - 1) * 100:.1f}%"]
        )
    py = res.get("python")
    if py:
        met, missed = python_target(py)
        verdict = "met" if met and not missed else (f"missed for {len(missed)} of {len(met) + len(missed)}" if missed else "—")
        rows.append(
            ["Stock Python clients, K = 4: ≥ 2× CPython manager throughput, lower p99",
             "met: " + (", ".join(met) or "none") + ("; missed: " + ", ".join(missed) if missed else ""), verdict]
        )
        n, slower, costlier, beyond = python_floor_targets(py)
        rows.append(
            ["Stock Python clients: ≥ 1.0× CPython's manager in every row, every K",
             "below: " + ", ".join(slower) if slower else f"all {n} rows at or above 1.0×",
             f"missed for {len(slower)} of {n}" if slower else "met"]
        )
        rows.append(
            ["Stock Python clients: agora's server CPU per op ≤ 1/3 of CPython's server's",
             (f"{n - len(costlier)} of {n} rows within; above: " + ", ".join(costlier)
              + f"; in {len(beyond)} of those the floor (an echo server of CPython's model; for the lock, a hand-off; for proxy creation, authenticated one-shot connections) is above the third too"
              if costlier else f"all {n} rows"),
             f"missed for {len(costlier)} of {n} ({len(costlier) - len(beyond)} where the floor allows it)"
             if costlier else "met"]
        )
    else:
        rows.append(["Stock Python clients, K = 4: ≥ 2× CPython manager throughput, lower p99",
                     "TODO (bench/py_manager_bench.py missing or failed)", "not measured"])
    idle = res.get("idle", {})
    if idle:
        per = ", ".join(f"{t}: {v['bytes_per_connection'] / 1024:.1f} KiB/conn" for t, v in idle.items())
        held = all(v["connected"] >= 10000 for v in idle.values())
        rows.append(["10,000 idle connections held with modest memory", per, "met" if held else "fewer connected"])
    for transport in ("tcp", "unix"):
        vals = [s.rps(("agora", transport, f"scale{c}", "get")) for c in res.get("scaling", [])]
        vals = [v for v in vals if v]
        if len(vals) >= 2:
            keep = vals[-1] / max(vals)
            rows.append(
                [f"throughput does not collapse from 1 to 1,000 connections ({transport})",
                 f"1,000 connections: {keep * 100:.0f}% of the best", "met" if keep >= 0.5 else "missed"]
            )
    return rows


if __name__ == "__main__":
    main()
