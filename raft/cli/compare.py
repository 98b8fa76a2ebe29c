"""Side-by-side comparison on this machine, in one run (``raft bench --compare``):

    python benchmarks/compare.py [--out-dir DIR] [--quick] [--systems LIST]

1. the machine's limits: loopback round trip (a uvloop echo server in another process,
   and ``redis-benchmark -t ping -c 1`` against plain redis-server, a C client) and raw
   write+fdatasync latency in a temp data dir;
2. sweeps of requests in flight, each system reported at its peak and at its best
   within a p99 <= 10 ms budget: PySyncObj (3 processes, ReplCounter, its defaults:
   in-memory journal, load in the leader's process), our 3-node cluster (durability none
   and fsync; clients x pipeline through RESP), etcd 3.4 (3 nodes, Go clientv3 load;
   data dirs on tmpfs for the no-fsync row);
3. ours with 50%, 90% and 100% linearizable reads against writes alone;
4. plain redis-server vs our durable leader under ``redis-benchmark -t set -c 50``,
   non-pipelined and ``-P 16``;
5. ``raft bench`` traced vs untraced; each node's RSS at the end of its peak point;
6. the ratios of the issue against their targets (raft/cli/compare_report.py).

Writes ``compare.json`` and ``compare.md`` into --out-dir (default: the current dir).
Every phase is bounded in time and request count; every process it starts is stopped
by PID. docs/benchmarks.md describes the method and how to read the results.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import functools
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
import threading
import time
from dataclasses import dataclass
from typing import Any

from raft.cli import compare_etcd
from raft.cli.bench import run_bench
from raft.cli.load import BenchConfig, latency_summary, run_load_sync
from raft.cli.compare_report import (DEFAULT_BUDGET_P99_US, compute_ratios, markdown,
                                 summarize_sweep)
from raft.testing.cluster import LocalCluster, free_ports, stop_process
from raft.testing.pysyncobj import lead_or_wait
from raft.testing.pysyncobj import run_cluster as run_pso_cluster

PHASE_TIMEOUT = 120.0
SYSTEMS = ("pysyncobj", "ours", "redis", "etcd", "tracing")


SWEEP = ((1, 1), (4, 4), (8, 8), (16, 8), (32, 16), (64, 64), (64, 128))


@dataclass(frozen=True)
class Plan:
    """What one run measures; ``--quick`` shortens the points, not the sweeps."""
    point_seconds: float = 3.0
    pso_inflight: tuple[int, ...] = (1, 128, 512, 2_000, 8_000, 20_000)
    # clients x pipeline; the small points find the best throughput within the budget
    ours_sweep: tuple[tuple[int, int], ...] = SWEEP
    etcd_sweep: tuple[tuple[int, int], ...] = SWEEP
    mixed_point: tuple[int, int] = (32, 16)
    read_ratios: tuple[float, ...] = (0.5, 0.9, 1.0)
    redis_n: tuple[int, int] = (50_000, 400_000)      # -n for plain, -P 16: seconds each
    tracing_seconds: float = 3.0
    tracing_rounds: int = 2
    budget_p99_us: float = DEFAULT_BUDGET_P99_US


QUICK = Plan(point_seconds=1.0, redis_n=(3_000, 10_000), tracing_seconds=1.5, tracing_rounds=1)


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
        if proc.stdout is None or not proc.stdout.readline():   # "ready"; exits after 60 s
            raise RuntimeError("the echo server did not start")
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


# --- memory ---------------------------------------------------------------------------


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB (None if it is gone or /proc has no such line)."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Samples the RSS of some processes every ``period`` s in a thread while a load
    point runs; ``last`` is the sample taken closest to the point's end."""

    def __init__(self, pids: dict[str, int | None], period: float = 0.2) -> None:
        self.pids = {k: v for k, v in pids.items() if v is not None}
        self.period = period
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        rss = {k: read_rss_kb(pid) for k, pid in self.pids.items()}
        self.last = {k: v for k, v in rss.items() if v is not None}

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def cpu_seconds_used(who: int) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF) or of its waited-for
    children (RUSAGE_CHILDREN): a load generator's cost is the difference around it."""
    import resource

    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


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


def ours_point(cluster: LocalCluster, clients: int, pipeline: int, seconds: float,
               read_ratio: float = 0.0) -> dict[str, Any]:
    """One sweep point: ``clients`` RESP connections to the leader, ``pipeline`` requests
    in flight on each, for ``seconds``; throughput counts every completed request."""
    cfg = BenchConfig(clients=clients, pipeline=pipeline, duration=seconds,
                      max_requests=5_000_000, trace=False, read_ratio=read_ratio)
    import resource

    addr = leader_addr(cluster)
    cpu0 = cpu_seconds_used(resource.RUSAGE_SELF)
    with RssSampler({f"node{i}": n.pid for i, n in cluster.nodes.items()}) as rss:
        res = run_load_sync([addr], cfg)
    cpu = cpu_seconds_used(resource.RUSAGE_SELF) - cpu0
    return {"label": f"{clients}x{pipeline}", "clients": clients, "pipeline": pipeline,
            "inflight": clients * pipeline, "read_ratio": read_ratio,
            "ops_per_s": round(res.ok_ops / res.seconds, 1) if res.seconds else 0.0,
            "client_cpu": round(cpu / res.seconds, 2) if res.seconds else None,
            "ops": res.ok_ops, "errors": res.errors, "error_samples": res.error_samples,
            "latency_us": latency_summary(res.hist), "rss_kb": rss.last}


def ours_phase(durability: str, tmp: str, plan: Plan, with_redis: bool) -> dict[str, Any]:
    """The sweep; with fsync also the mixed read/write points and redis-benchmark
    against the leader (same cluster, so one start)."""
    cluster = start_cluster(durability, tmp)
    try:
        out: dict[str, Any] = {}
        if durability == "fsync":
            # the disk is shared and its latency drifts: probe it right before the
            # sequential point that is compared with it
            out["fdatasync"] = fdatasync_latency(tmp)
        out["sweep"] = [ours_point(cluster, c, p, plan.point_seconds)
                        for c, p in plan.ours_sweep]
        if durability == "fsync":
            out["mixed"] = mixed_points(cluster, plan)
            if with_redis:
                out["redis_benchmark"] = redis_benchmark_pair(
                    leader_addr(cluster)[1], plan.redis_n)
        return out
    finally:
        cluster.close()


def mixed_points(cluster: LocalCluster, plan: Plan) -> dict[str, Any]:
    """Writes alone (measured again, right before the mixes, at the same concurrency)
    and each read ratio; keyed by the ratio as text ("0", "0.5", "0.9", "1")."""
    c, p = plan.mixed_point
    out = {"0": ours_point(cluster, c, p, plan.point_seconds)}
    for rr in plan.read_ratios:
        out[f"{rr:g}"] = ours_point(cluster, c, p, plan.point_seconds, read_ratio=rr)
    return out


# --- PySyncObj ------------------------------------------------------------------------


class _Window:
    """At most ``size`` requests outstanding; callbacks release from PySyncObj's thread."""

    def __init__(self, size: int) -> None:
        self.size, self.out = size, 0
        self.cv = threading.Condition()

    def acquire(self, timeout: float) -> bool:
        with self.cv:
            if not self.cv.wait_for(lambda: self.out < self.size, timeout):
                return False
            self.out += 1
            return True

    def release(self) -> None:
        with self.cv:
            self.out -= 1
            self.cv.notify()

    def drain(self, timeout: float) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: self.out == 0, timeout)


def _pso_pids(path: str) -> dict[str, int]:
    try:
        with open(path) as fp:
            return {f"node{i}": int(x) for i, x in enumerate(fp.read().split(), 1)}
    except (OSError, ValueError):
        return {}


def _pso_point(counter: Any, inflight: int, secs: float, pids: dict[str, int]) -> dict[str, Any]:
    """``inflight`` ``counter.inc`` calls outstanding for ``secs``, then a drain; the
    throughput counts every completed call over the time to the last completion."""
    from pysyncobj import FAIL_REASON

    win, lat, failed = _Window(inflight), [], [0]

    def done(t0: float, _result: Any, err: Any) -> None:
        if err == FAIL_REASON.SUCCESS:
            lat.append(time.perf_counter() - t0)
        else:
            failed[0] += 1
        win.release()

    t0 = time.monotonic()
    while time.monotonic() - t0 < secs and len(lat) < 5_000_000:
        if win.acquire(timeout=5):
            counter.inc(callback=functools.partial(done, time.perf_counter()))
    rss = {k: read_rss_kb(p) for k, p in pids.items()}
    win.drain(15)
    elapsed = time.monotonic() - t0
    us = [s * 1e6 for s in lat]
    return {"label": str(inflight), "inflight": inflight, "ops": len(lat), "errors": failed[0],
            "ops_per_s": round(len(lat) / elapsed, 1), "latency_us": _percentiles(us),
            "rss_kb": {k: v for k, v in rss.items() if v is not None}}


def _percentiles(us: list[float]) -> dict[str, float | None]:
    if not us:
        return {k: None for k in ("p50", "p90", "p99", "max", "mean")}
    us = sorted(us)

    def at(q: float) -> float:
        return round(us[min(len(us) - 1, int(len(us) * q))], 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(us[-1], 1),
            "mean": round(statistics.fmean(us), 1)}


def pso_node_main(argv: list[str]) -> int:
    """One PySyncObj node (run as a child process): a ReplCounter, defaults. The node
    that is leader once the cluster is ready drives the sweep in-process (PySyncObj has
    no client protocol) and writes its figures to ``out``; the others wait for it."""
    from pysyncobj import SyncObj
    from pysyncobj.batteries import ReplCounter

    me, others, out, secs = argv[0], argv[1].split(","), argv[2], float(argv[3])
    sweep = [int(x) for x in argv[4].split(",")]
    counter = ReplCounter()
    obj = SyncObj(me, others, consumers=[counter])
    leads = lead_or_wait(obj, me, out, time.monotonic() + 30 + len(sweep) * (secs + 20))
    if leads is None:
        return 1
    if not leads:
        return 0
    pids = _pso_pids(out + ".pids")
    result = {"sweep": [_pso_point(counter, n, secs, pids) for n in sweep]}
    with open(out + ".tmp", "w") as fp:
        json.dump(result, fp)
    os.rename(out + ".tmp", out)
    return 0


def pysyncobj_phase(tmp: str, plan: Plan) -> dict[str, Any]:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return {"skipped": "pysyncobj is not installed (pip install 'raft[bench]')"}
    secs = plan.point_seconds
    out = os.path.join(tmp, "pso.json")
    sweep = ",".join(map(str, plan.pso_inflight))

    def argv(_i: int, me: str, others: str) -> list[str]:
        return [sys.executable, "-m", "raft.cli.compare", "--pso-node", me, others, out,
                str(secs), sweep]

    return run_pso_cluster(argv, out, 40 + len(plan.pso_inflight) * (secs + 20),
                           pids_file=out + ".pids",
                           skipped="PySyncObj cluster produced no result in time")


# --- redis-benchmark: redis-server vs ours --------------------------------------------


def redis_benchmark(port: int, tests: str, n: int, clients: int = 50,
                    pipeline: int = 1) -> dict[str, Any]:
    """redis-benchmark's CSV, per test: requests/s and p50/p99 in ms."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", tests,
           "-c", str(clients), "-n", str(n), "-P", str(pipeline), "--csv"]
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


REDIS_BENCHMARK_TRIES = 2


def redis_benchmark_pair(port: int, n: tuple[int, int]) -> dict[str, Any]:
    """``-t set -c 50`` without pipelining and with ``-P 16``, each the best of
    REDIS_BENCHMARK_TRIES runs (by requests/s; every run's rps is kept under
    ``tries``): 50 one-request connections are at the mercy of the scheduler on 2
    cores, and a single short run moved by +-15% between runs. Used alike for
    redis-server and for our leader."""
    out: dict[str, Any] = {}
    for mode, count, pipeline in (("plain", n[0], 1), ("P16", n[1], 16)):
        runs = [redis_benchmark(port, "set", count, pipeline=pipeline)
                for _ in range(REDIS_BENCHMARK_TRIES)]
        best = max(runs, key=lambda r: r.get("set", {}).get("rps", 0.0))
        out[mode] = {**best, "tries": [r.get("set", {}).get("rps") for r in runs]}
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


def redis_available() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-benchmark"))


def plain_redis_phase(tmp: str, plan: Plan) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the C client's loopback RTT: PING p50 with one connection, redis-server's SET
    figures) from one redis-server."""
    if not redis_available():
        why = "redis-server / redis-benchmark not installed (apt install redis)"
        return {"skipped": why}, {"skipped": why}
    proc, port = start_redis(tmp)
    try:
        ping = redis_benchmark(port, "ping", 5000, clients=1).get("ping_mbulk")
        sets = redis_benchmark_pair(port, plan.redis_n)
    finally:
        stop_process(proc, 5.0)
    rtt = ({"p50_us": round(ping["p50_ms"] * 1000, 1), "p99_us": round(ping["p99_ms"] * 1000, 1)}
           if ping else {"skipped": "redis-benchmark -t ping gave no result"})
    return rtt, sets


# --- etcd -----------------------------------------------------------------------------


def etcd_phase(tmp: str, plan: Plan) -> dict[str, Any]:
    why = compare_etcd.unavailable()
    if why:
        return {"skipped": why}
    try:
        _say("etcd: building the load generator (cached after the first run) ...")
        binary = compare_etcd.build_load_generator()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"could not build raft/etcd_load: {e}"}
    out: dict[str, Any] = {}
    for dur in ("none", "fsync"):
        _say(f"etcd, {'fsync' if dur == 'fsync' else 'data dir on tmpfs'} ...")
        try:
            out[dur] = etcd_sweep(binary, dur, tmp, plan)
        except (RuntimeError, TimeoutError, OSError, ValueError,
                subprocess.TimeoutExpired) as e:
            out[dur] = {"skipped": f"etcd run failed: {e}"}
    return out


def etcd_sweep(binary: str, durability: str, tmp: str, plan: Plan) -> dict[str, Any]:
    import resource

    base = compare_etcd.data_parent(durability, tmp)
    cluster = compare_etcd.EtcdCluster(base)
    try:
        cluster.start()
        leader = cluster.leader()
        endpoint = f"127.0.0.1:{cluster.client[leader]}"
        points = []
        for c, p in plan.etcd_sweep:
            cpu0 = cpu_seconds_used(resource.RUSAGE_CHILDREN)
            with RssSampler(dict(cluster.pids)) as rss:
                res = compare_etcd.run_load(binary, endpoint, c, p, plan.point_seconds)
            cpu = cpu_seconds_used(resource.RUSAGE_CHILDREN) - cpu0
            points.append({"label": f"{c}x{p}", "clients": c, "pipeline": p,
                           "inflight": c * p, "ops_per_s": round(res["ops_per_s"], 1),
                           "client_cpu": round(cpu / res["seconds"], 2)
                           if res.get("seconds") else None,
                           "ops": res["ops"], "errors": res["errors"],
                           "error_samples": [res["error_sample"]] if res.get("error_sample")
                           else [], "latency_us": res["latency_us"], "rss_kb": rss.last})
        note = ("data dirs on tmpfs (/dev/shm): etcd 3.4 has no --unsafe-no-fsync"
                if durability == "none" and base.startswith(compare_etcd.TMPFS) else "")
        return {"sweep": points, "note": note, "leader_endpoint": endpoint}
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)


# --- tracing cost ---------------------------------------------------------------------


def tracing_phase(plan: Plan) -> dict[str, Any]:
    """``raft bench`` (its own cluster, clients spread over all nodes) untraced and
    traced with the same settings, alternating for ``plan.tracing_rounds`` rounds so
    that a burst of load from elsewhere hits both sides; each side's figure is the mean
    of its runs. The traced runs' traces are checked against the spec as usual."""
    base = BenchConfig(duration=plan.tracing_seconds, durability="fsync")
    out: dict[str, Any] = {"config": {"clients": base.clients, "pipeline": base.pipeline,
                                      "durability": base.durability,
                                      "duration": base.duration,
                                      "rounds": plan.tracing_rounds}, "runs": []}
    for _ in range(plan.tracing_rounds):
        for trace in (False, True):
            rep = run_bench(BenchConfig(duration=base.duration, durability=base.durability,
                                        trace=trace))
            out["runs"].append({"trace": trace, "writes_per_s": rep["writes_per_s"],
                                "errors": rep["errors"], "latency_us": rep["latency_us"],
                                "trace_verdict": rep["trace"]["verdict"]})
    for key, trace in (("untraced", False), ("traced", True)):
        runs = [x for x in out["runs"] if x["trace"] is trace]
        out[key] = {"writes_per_s": round(statistics.fmean(x["writes_per_s"] for x in runs), 1),
                    "errors": sum(x["errors"] for x in runs),
                    "trace_verdict": ", ".join(sorted({x["trace_verdict"] for x in runs}))}
    return out


# --- the run --------------------------------------------------------------------------


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(plan: Plan, systems: set[str]) -> dict[str, Any]:
    """Every phase of ``systems``; the results dict compare_report renders."""
    r: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count(),
                         "python": platform.python_version(),
                         "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                         "loadavg_start": _loadavg(),
                         "settings": {"point_seconds": plan.point_seconds,
                                      "budget_p99_us": plan.budget_p99_us,
                                      "systems": sorted(systems)}}
    tmp = tempfile.mkdtemp(prefix="raft-compare-")
    try:
        _say("machine limits ...")
        r["machine"] = {"loopback_rtt": loopback_rtt(), "fdatasync": fdatasync_latency(tmp)}
        rtt, redis_sets = plain_redis_phase(tmp, plan)
        r["machine"]["redis_ping"] = rtt
        if "pysyncobj" in systems:
            _say("PySyncObj sweep ...")
            r["pysyncobj"] = _guarded(pysyncobj_phase, tmp, plan)
        if "ours" in systems:
            r["ours"] = {}
            for dur in ("none", "fsync"):
                _say(f"ours, durability {dur} ...")
                want_redis = "redis" in systems and dur == "fsync" and redis_available()
                r["ours"][dur] = _guarded(ours_phase, dur, tmp, plan, want_redis)
        if "redis" in systems:
            ours_rb = (r.get("ours") or {}).get("fsync", {}).pop("redis_benchmark", None)
            r["redis"] = ({"n": {"plain": plan.redis_n[0], "P16": plan.redis_n[1]},
                           "redis": redis_sets, "ours": ours_rb}
                          if ours_rb else {"skipped": redis_sets.get("skipped", "needs ours")})
        if "etcd" in systems:
            r["etcd"] = _guarded(etcd_phase, tmp, plan)
        if "tracing" in systems:
            _say("raft bench traced vs untraced ...")
            r["tracing"] = _guarded(tracing_phase, plan)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r["loadavg_end"] = _loadavg()
    r["summary"] = _summaries(r, plan.budget_p99_us)
    r["ratios"] = compute_ratios(r)
    return r


def _guarded(phase: Any, *args: Any) -> dict[str, Any]:
    """Run one phase; a phase that fails (a cluster that never elects, a crashed
    process) is reported as skipped with the reason, and the other phases still run."""
    try:
        return phase(*args)
    except Exception as e:        # noqa: BLE001 - any failure of one phase, reported
        _say(f"{phase.__name__} failed: {type(e).__name__}: {e}")
        return {"skipped": f"failed: {type(e).__name__}: {e}"}


def _summaries(r: dict[str, Any], budget: float) -> dict[str, Any]:
    out = {}
    for name, sec in (("pysyncobj", r.get("pysyncobj")),
                      ("ours_none", (r.get("ours") or {}).get("none")),
                      ("ours_fsync", (r.get("ours") or {}).get("fsync")),
                      ("etcd_none", (r.get("etcd") or {}).get("none")),
                      ("etcd_fsync", (r.get("etcd") or {}).get("fsync"))):
        if sec and "sweep" in sec:
            s = summarize_sweep(sec["sweep"], budget)
            out[name] = {k: (None if p is None else {"label": p["label"],
                                                      "ops_per_s": p["ops_per_s"],
                                                      "p99_us": p["latency_us"].get("p99")})
                         for k, p in s.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--pso-node":
        return pso_node_main(argv[1:])
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--quick", action="store_true", help="1 s sweep points instead of 3 s")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)")
    args = ap.parse_args(argv)
    systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    if not systems <= set(SYSTEMS):
        ap.error(f"unknown systems: {', '.join(sorted(systems - set(SYSTEMS)))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = run(QUICK if args.quick else Plan(), systems)
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
