"""Side-by-side comparison on this machine, in one run:

    python benchmarks/compare.py [--out-dir DIR] [--quick]

1. the machine's limits: loopback round trip (a uvloop echo server in another process,
   one 16-byte message at a time) and raw write+fdatasync latency in a temp data dir;
2. PySyncObj (3 processes on loopback, a ReplCounter, its defaults: in-memory journal)
   vs our 3-node cluster with durability none and fsync: max sustained throughput with
   many requests in flight, and sequential single-client latency;
3. plain redis-server (``--save '' --appendonly no``) vs our 3-node cluster under
   ``redis-benchmark -t set,get -c 50 -n N``, non-pipelined and ``-P 16``;
4. our sequential commit latency as a multiple of (RTT + fdatasync).

Writes ``compare.json`` and ``compare.md`` into --out-dir (default: the current dir).
Every phase is bounded in time and request count; every process it starts is stopped
by PID. docs/benchmarks.md describes the method and the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from raft.bench import BenchConfig, latency_summary, run_load_sync
from raft.server_cli import LocalCluster, free_ports, stop_process

PHASE_TIMEOUT = 120.0


# --- machine limits -------------------------------------------------------------------


_ECHO_SERVER = """
import asyncio, sys, uvloop
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    srv = await asyncio.get_running_loop().create_server(Echo, '127.0.0.1', int(sys.argv[1]))
    print('ready', flush=True)
    await asyncio.sleep(60)
uvloop.run(main())
"""


async def _echo_client(port: int, rounds: int) -> list[float]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg, out = b"x" * 16, []
    deadline = time.monotonic() + 10
    for _ in range(rounds):
        t0 = time.perf_counter()
        writer.write(msg)
        await asyncio.wait_for(reader.readexactly(len(msg)), 5)
        out.append(time.perf_counter() - t0)
        if time.monotonic() > deadline:
            break
    writer.close()
    return out


def loopback_rtt(rounds: int = 3000) -> dict[str, float]:
    """Round trip of a 16-byte message to a uvloop echo server in another process."""
    import uvloop

    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()          # "ready" (the server exits by itself after 60 s)
        samples = uvloop.run(_echo_client(port, rounds))
    finally:
        stop_process(proc, 2.0)
    return _us_summary(samples)


def fdatasync_latency(directory: str, rounds: int = 200, size: int = 256) -> dict[str, float]:
    """Append ``size`` bytes + fdatasync, ``rounds`` times (bounded to 15 s)."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out, deadline = [], time.monotonic() + 15
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(fd, b"x" * size)
            os.fdatasync(fd)
            out.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
    finally:
        os.close(fd)
        os.unlink(path)
    return _us_summary(out)


def _us_summary(seconds: list[float]) -> dict[str, float]:
    us = sorted(s * 1e6 for s in seconds)
    return {"n": len(us), "p50_us": round(statistics.median(us), 1),
            "p99_us": round(us[min(len(us) - 1, int(len(us) * 0.99))], 1),
            "mean_us": round(statistics.fmean(us), 1)}


# --- our cluster ----------------------------------------------------------------------


def start_cluster(durability: str, tmp: str) -> LocalCluster:
    cluster = LocalCluster(3, directory=os.path.join(tmp, f"raft-{durability}"),
                           durability=durability, log_level="warning")
    cluster.start()
    try:
        cluster.wait_for_leader(60)
    except BaseException:
        cluster.close()
        raise
    return cluster


def leader_addr(cluster: LocalCluster) -> tuple[str, int]:
    leader = cluster.wait_for_leader(30)
    return cluster.nodes[leader].client


def ours_load(cluster: LocalCluster, clients: int, pipeline: int, seconds: float,
              max_requests: int) -> dict[str, Any]:
    cfg = BenchConfig(clients=clients, pipeline=pipeline, duration=seconds,
                      max_requests=max_requests, trace=False)
    res = run_load_sync([leader_addr(cluster)], cfg)
    return {"ops_per_s": round(res.writes / res.seconds, 1), "ops": res.writes,
            "errors": res.errors, "latency_us": latency_summary(res.write_hist)}


def ours_phase(durability: str, tmp: str, quick: bool) -> dict[str, Any]:
    secs = 3.0 if quick else 6.0
    cluster = start_cluster(durability, tmp)
    try:
        return {
            "throughput": ours_load(cluster, 32, 16, secs, 2_000_000),
            "sequential": ours_load(cluster, 1, 1, secs / 2, 20_000),
        }
    finally:
        cluster.close()


# --- PySyncObj ------------------------------------------------------------------------


def pso_node_main(argv: list[str]) -> int:
    """One PySyncObj node (run as a child process): a ReplCounter, defaults. The node
    that is leader once the cluster is ready drives the load in-process (PySyncObj has
    no client protocol) and writes its figures to ``out``; the others wait for it."""
    import threading

    from pysyncobj import FAIL_REASON, SyncObj
    from pysyncobj.batteries import ReplCounter

    me, others, out, secs = argv[0], argv[1].split(","), argv[2], float(argv[3])
    counter = ReplCounter()
    obj = SyncObj(me, others, consumers=[counter])
    deadline = time.monotonic() + 30 + 4 * secs
    while not (obj.isReady() and obj._getLeader() is not None):
        if time.monotonic() > deadline:
            return 1
        time.sleep(0.05)
    if str(obj._getLeader()) != me:
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)           # let the leader's last round finish
        return 0
    inflight = threading.BoundedSemaphore(512)
    done = {"ok": 0, "failed": 0}

    def cb(_result: Any, err: Any) -> None:
        done["ok" if err == FAIL_REASON.SUCCESS else "failed"] += 1
        inflight.release()

    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < secs and sent < 2_000_000:
        if inflight.acquire(timeout=5):
            counter.inc(callback=cb)
            sent += 1
    for _ in range(512):
        if not inflight.acquire(timeout=10):
            break
    elapsed = time.monotonic() - t0
    lat, t1 = [], time.monotonic()
    while time.monotonic() - t1 < secs / 2 and len(lat) < 20_000:
        s = time.perf_counter()
        counter.inc(sync=True, timeout=5)
        lat.append(time.perf_counter() - s)
    result = {"throughput": {"ops_per_s": round(done["ok"] / elapsed, 1), "ops": done["ok"],
                             "errors": done["failed"]},
              "sequential": {"latency_us": _us_summary(lat), "ops": len(lat)}}
    with open(out + ".tmp", "w") as fp:
        json.dump(result, fp)
    os.rename(out + ".tmp", out)
    return 0


def pysyncobj_phase(tmp: str, quick: bool) -> dict[str, Any]:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return {"skipped": "pysyncobj is not installed (pip install 'raft[bench]')"}
    secs = 3.0 if quick else 6.0
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    out = os.path.join(tmp, "pso.json")
    procs = []
    for i, a in enumerate(addrs):
        others = ",".join(x for x in addrs if x != a)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "raft.compare", "--pso-node", a, others, out, str(secs)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 40 + 4 * secs
        while not os.path.exists(out) and time.monotonic() < deadline:
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
        if not os.path.exists(out):
            return {"skipped": "PySyncObj cluster produced no result in time"}
        with open(out) as fp:
            return json.load(fp)
    finally:
        for p in procs:
            stop_process(p, 5.0)


# --- redis-benchmark: redis-server vs ours --------------------------------------------


def redis_benchmark(port: int, n: int, pipeline: int) -> dict[str, Any]:
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
           "-c", "50", "-n", str(n), "-P", str(pipeline), "--csv"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=PHASE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"redis-benchmark timed out after {PHASE_TIMEOUT}s"}
    rows = list(csv.reader(io.StringIO(p.stdout)))
    out: dict[str, Any] = {}
    header = rows[0] if rows else []
    for row in rows[1:]:
        rec = dict(zip(header, row))
        out[rec.get("test", row[0]).lower()] = {
            "rps": float(rec.get("rps", 0)), "p50_ms": float(rec.get("p50_latency_ms", 0)),
            "p99_ms": float(rec.get("p99_latency_ms", 0))}
    if not out:
        out["error"] = (p.stderr or p.stdout)[-300:]
    return out


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp, "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    stop_process(proc, 2.0)
    raise RuntimeError("redis-server did not start")


def redis_phase(tmp: str, quick: bool, durability: str) -> dict[str, Any]:
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        return {"skipped": "redis-server / redis-benchmark not installed (apt install redis)"}
    n_plain, n_pipe = (5000, 20000) if quick else (20000, 100000)
    out: dict[str, Any] = {"n": {"plain": n_plain, "P16": n_pipe}}
    proc, port = start_redis(tmp)
    try:
        out["redis"] = {"plain": redis_benchmark(port, n_plain, 1),
                        "P16": redis_benchmark(port, n_pipe, 16)}
    finally:
        stop_process(proc, 5.0)
    cluster = start_cluster(durability, tmp)
    try:
        port = leader_addr(cluster)[1]
        out[f"ours_{durability}"] = {"plain": redis_benchmark(port, n_plain, 1),
                                     "P16": redis_benchmark(port, n_pipe, 16)}
    finally:
        cluster.close()
    return out


# --- report ---------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def derive(r: dict[str, Any]) -> dict[str, Any]:
    rtt, fs = r["machine"]["loopback_rtt"]["p50_us"], r["machine"]["fdatasync"]["p50_us"]
    d: dict[str, Any] = {"rtt_plus_fdatasync_us": round(rtt + fs, 1)}
    for dur in ("none", "fsync"):
        seq = r["ours"][dur]["sequential"]["latency_us"]["p50"]
        d[f"ours_{dur}_seq_p50_over_rtt_plus_fsync"] = _ratio(seq, rtt + fs)
        d[f"ours_{dur}_seq_p50_over_rtt"] = _ratio(seq, rtt)
    pso = r.get("pysyncobj", {})
    if "throughput" in pso:
        for dur in ("none", "fsync"):
            d[f"throughput_ours_{dur}_over_pysyncobj"] = _ratio(
                r["ours"][dur]["throughput"]["ops_per_s"], pso["throughput"]["ops_per_s"])
            d[f"seq_latency_ours_{dur}_over_pysyncobj"] = _ratio(
                r["ours"][dur]["sequential"]["latency_us"]["p50"],
                pso["sequential"]["latency_us"]["p50_us"])
    red = r.get("redis", {})
    ours_key = next((k for k in red if k.startswith("ours_")), None)
    if "redis" in red and ours_key:
        for mode in ("plain", "P16"):
            for t in ("set", "get"):
                d[f"redis_bench_{t}_{mode}_ours_over_redis"] = _ratio(
                    red[ours_key][mode].get(t, {}).get("rps"), red["redis"][mode].get(t, {}).get("rps"))
    return d


def _f(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v}{unit}"


def markdown(r: dict[str, Any]) -> str:
    m, d, ours = r["machine"], r["derived"], r["ours"]
    lines = [f"# raft vs PySyncObj vs redis-server on {r['host']}", "",
             f"{r['when']}, {r['cpus']} CPUs, Python {r['python']}", "",
             "## Machine limits", "", "| probe | p50 | p99 |", "|---|---|---|",
             f"| loopback RTT (uvloop echo, 16 B) | {m['loopback_rtt']['p50_us']} us | "
             f"{m['loopback_rtt']['p99_us']} us |",
             f"| write 256 B + fdatasync (data dir fs) | {m['fdatasync']['p50_us']} us | "
             f"{m['fdatasync']['p99_us']} us |", "",
             "## Replicated counter/SET: PySyncObj vs ours (3 nodes, loopback)", "",
             "| system | max throughput (ops/s) | sequential p50 | sequential p99 |",
             "|---|---|---|---|"]
    pso = r.get("pysyncobj", {})
    if "throughput" in pso:
        lines.append(f"| PySyncObj 0.3 (in-process client, in-memory journal) | "
                     f"{_f(pso['throughput']['ops_per_s'])} | "
                     f"{_f(pso['sequential']['latency_us']['p50_us'])} us | "
                     f"{_f(pso['sequential']['latency_us']['p99_us'])} us |")
    else:
        lines.append(f"| PySyncObj | {pso.get('skipped', 'n/a')} | | |")
    for dur in ("none", "fsync"):
        t, s = ours[dur]["throughput"], ours[dur]["sequential"]["latency_us"]
        lines.append(f"| ours, durability {dur} (RESP client, 32x16 in flight) | "
                     f"{_f(t['ops_per_s'])} | {_f(s['p50'])} us | {_f(s['p99'])} us |")
    red = r.get("redis", {})
    lines += ["", "## redis-benchmark -c 50 (requests/s; p50 ms)", ""]
    if "redis" in red:
        lines += ["| server | SET | GET | SET -P 16 | GET -P 16 |", "|---|---|---|---|---|"]
        for key in [k for k in red if k == "redis" or k.startswith("ours_")]:
            cells = []
            for mode in ("plain", "P16"):
                for t in ("set", "get"):
                    v = red[key][mode].get(t)
                    cells.append(f"{_f(v['rps'])} ({v['p50_ms']})" if v else "n/a")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append(f"\nn = {red['n']['plain']} (plain), {red['n']['P16']} (-P 16)")
    else:
        lines.append(red.get("skipped", "n/a"))
    lines += ["", "## Ratios", "", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {_f(v)} |" for k, v in d.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--pso-node":
        return pso_node_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="shorter phases (about half)")
    ap.add_argument("--redis-durability", choices=("none", "fsync"), default="none",
                    help="our cluster's durability under redis-benchmark (default none)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="raft-compare-")
    try:
        r: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count(),
                             "python": platform.python_version(),
                             "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        _say("machine limits ...")
        r["machine"] = {"loopback_rtt": loopback_rtt(), "fdatasync": fdatasync_latency(tmp)}
        _say("PySyncObj ...")
        r["pysyncobj"] = pysyncobj_phase(tmp, args.quick)
        r["ours"] = {}
        for dur in ("none", "fsync"):
            _say(f"ours, durability {dur} ...")
            r["ours"][dur] = ours_phase(dur, tmp, args.quick)
        _say("redis-server vs ours under redis-benchmark ...")
        r["redis"] = redis_phase(tmp, args.quick, args.redis_durability)
        r["derived"] = derive(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "compare.json"), "w") as fp:
        json.dump(r, fp, indent=2)
    md = markdown(r)
    with open(os.path.join(args.out_dir, "compare.md"), "w") as fp:
        fp.write(md)
    print(md)
    return 0


def _say(msg: str) -> None:
    print(f"compare: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
