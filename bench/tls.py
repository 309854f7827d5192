#!/usr/bin/env python3
"""TLS priced: agora over TLS against agora in the clear, and against Redis with and
without TLS (BENCHMARKS.md section 9). Run it through bench/tls.sh.

One server of each, each with a plain and a TLS listener on loopback, certificates
made with openssl for the run (an ECDSA P-256 CA and server key). For dict set and get
(`agora bench -t set,get` ↔ `redis-benchmark HSET/HGET`), 50 clients, 1 and 16
requests in flight each, interleaved rounds: throughput, p50 and p99 in µs, medians.
Prints a Markdown table; every process it starts is stopped when it ends.

    bench/tls.sh [--rounds 3] [--requests 200000]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (bench/suite.py's helpers)
from suite import by_test, free_port, log, med, wait_until, can_connect  # noqa: E402

REDIS = {"set": ["HSET", "bench:dict", "key:__rand_int__", "xxx"], "get": ["HGET", "bench:dict", "key:__rand_int__"]}


def make_certs(dir):
    """A CA and a server certificate for 127.0.0.1 / localhost, with openssl."""
    def sh(*args):
        subprocess.run(args, check=True, capture_output=True, cwd=dir)

    sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    sh("openssl", "req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=bench CA", "-out", "ca.pem")
    sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key.ec")
    sh("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", "server.key.ec", "-out", "server.key")
    sh("openssl", "req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-out", "server.csr")
    Path(dir, "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sh("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return {name: str(Path(dir, name)) for name in ("ca.pem", "server.pem", "server.key")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200000)
    args = parser.parse_args()
    procs = suite.Processes()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(tmp)
        a_plain, a_tls, r_plain, r_tls = (free_port() for _ in range(4))
        procs.start([suite.AGORA, "serve", "--listen", f"127.0.0.1:{a_plain}", "--listen", f"tls://127.0.0.1:{a_tls}",
                     "--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"], "--log-level", "warn"],
                    env=suite.agora_env())
        procs.start(["redis-server", "--port", str(r_plain), "--tls-port", str(r_tls), "--tls-cert-file",
                     certs["server.pem"], "--tls-key-file", certs["server.key"], "--tls-ca-cert-file", certs["ca.pem"],
                     "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--daemonize", "no"])
        for port in (a_plain, a_tls, r_plain, r_tls):
            wait_until(lambda port=port: can_connect(f"127.0.0.1:{port}"), f"port {port}")
        runs = {}
        try:
            for r in range(args.rounds):
                for pipeline in (1, 16):
                    for system, address in (("agora", f"127.0.0.1:{a_plain}"), ("agora TLS", f"tls://127.0.0.1:{a_tls}")):
                        extra = ["--tls-ca", certs["ca.pem"]] if address.startswith("tls") else []
                        report = suite.agora_bench(["-a", address, "-c", 50, "-P", pipeline, "-n", args.requests,
                                                    "-d", 3, "-r", 10000, "-t", "set,get", *extra], timeout=600)
                        for test, row in by_test(report).items():
                            latency = row["latency_us"]
                            runs.setdefault((system, pipeline, test), []).append(
                                (row["requests_per_sec"], latency["p50"], latency["p99"]))
                    for system, sock in (("Redis", ["-p", r_plain]),
                                         ("Redis TLS", ["-p", r_tls, "--tls", "--cacert", certs["ca.pem"]])):
                        for test, command in REDIS.items():
                            row = suite.redis_bench(["-h", "127.0.0.1", *sock], 50, pipeline, args.requests, command,
                                                    timeout=600)
                            runs.setdefault((system, pipeline, test), []).append(
                                (row["rps"], row["p50_us"], row["p99_us"]))
                log(f"round {r + 1} of {args.rounds} done")
        finally:
            procs.stop_all()
    print("| test | in flight | agora | agora TLS | TLS ÷ plain | Redis | Redis TLS | TLS ÷ plain | agora TLS ÷ Redis TLS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pipeline in (1, 16):
        for test in ("set", "get"):
            cell = {s: runs.get((s, pipeline, test), []) for s in ("agora", "agora TLS", "Redis", "Redis TLS")}
            rps = {s: med([x[0] for x in v]) if v else None for s, v in cell.items()}
            p99 = {s: med([x[2] for x in v]) if v else None for s, v in cell.items()}

            def show(s):
                return "—" if rps[s] is None else f"{rps[s]:,.0f}/s (p99 {p99[s]:,.0f} µs)"

            def div(a, b):
                return "—" if not rps[a] or not rps[b] else f"{rps[a] / rps[b]:.2f}×"

            print(f"| dict {test} | {pipeline} | {show('agora')} | {show('agora TLS')} | {div('agora TLS', 'agora')} | "
                  f"{show('Redis')} | {show('Redis TLS')} | {div('Redis TLS', 'Redis')} | {div('agora TLS', 'Redis TLS')} |")


if __name__ == "__main__":
    main()
