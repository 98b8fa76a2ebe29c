"""``raft bench``: start a local cluster, drive a RESP workload through it, report.

    raft bench                                  3 nodes, fsync, 10 s, traces checked
    raft bench --nodes 5 --clients 32 --pipeline 16 --value-size 1024 --read-ratio 0.5
    raft bench --durability none --no-trace --json out.json --plot out.png

What it does, in order:

1. starts ``--nodes`` ``raft serve`` processes on 127.0.0.1 (``LocalCluster``: a temp
   dir for data, configs and logs; metrics endpoints on; each node traces the core's
   events to ``<tmp>/traces/nodeI.ndjson`` unless ``--no-trace``) and waits for a leader
   that serves a linearizable read;
2. opens ``--clients`` RESP connections (asyncio protocol + ``hiredis.Reader``), spread
   over all the nodes, each keeping ``--pipeline`` requests in flight: ``SET`` of
   ``--value-size`` bytes, or ``GET`` with probability ``--read-ratio``. A ``-MOVED``
   reply makes the connection reconnect to the leader it names; ``-CLUSTERDOWN`` and
   ``-TRYAGAIN`` are counted and retried. Every latency (send to reply, microseconds)
   goes into an HdrHistogram. The load runs for ``--duration`` seconds or
   ``--max-requests`` requests, whichever comes first;
3. reads each node's CPU time (psutil, else /proc/PID/stat) and metrics (saves =
   fsyncs with durability fsync, elections) before and after the load;
4. stops the nodes with SIGTERM (a clean stop flushes each node's trace), prints the
   table, then merges the per-node traces in causal order and replays them through the
   spec checker (``spec.checker.Checker``).

Exit status: 0 if the run had no client errors and the traces check (or ``--no-trace``),
1 otherwise, 2 for bad arguments or a cluster that never elected a leader.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from raft.errors import RaftError

__all__ = ["BenchConfig", "LoadResult", "add_bench_subcommand", "bench_main", "run_bench",
           "run_load"]

LAT_MAX_US = 120_000_000      # histogram range: 1 us .. 120 s
RETRY_ERRORS = (b"CLUSTERDOWN", b"TRYAGAIN")
DRAIN_TIMEOUT = 10.0          # seconds to wait for in-flight replies after the load
CONNECT_TIMEOUT = 5.0
METRICS_SETTLE = 0.6          # > raft.node.METRICS_PERIOD: the endpoint's snapshot is fresh


# --- configuration and results --------------------------------------------------------


@dataclass
class BenchConfig:
    nodes: int = 3
    clients: int = 16
    pipeline: int = 8
    value_size: int = 100
    duration: float = 10.0
    durability: str = "fsync"
    read_ratio: float = 0.0
    keys: int = 10_000
    max_requests: int = 10_000_000
    trace: bool = True
    leader_timeout: float = 60.0
    seed: int = 1


@dataclass
class LoadResult:
    """What the client side saw. Latencies in microseconds."""
    seconds: float = 0.0
    writes: int = 0
    reads: int = 0
    sent: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    redirects: int = 0
    retries: int = 0
    errors: int = 0
    reconnects: int = 0
    error_samples: list[str] = field(default_factory=list)
    per_second: list[dict[str, float]] = field(default_factory=list)
    hist: Any = None          # HdrHistogram of every successful request
    write_hist: Any = None
    read_hist: Any = None
    # Latencies as measured, recorded into the histograms once the load is over
    # (finish_histograms): an append costs the load generator ~50 ns, a Python
    # HdrHistogram.record_value a few microseconds, and the generator shares the
    # machine's cores with the nodes it measures.
    write_us: array = field(default_factory=lambda: array("q"))
    read_us: array = field(default_factory=lambda: array("q"))

    def finish_histograms(self) -> None:
        for samples, hist in ((self.write_us, self.write_hist), (self.read_us, self.read_hist)):
            for us in samples:
                hist.record_value(us)
                self.hist.record_value(us)
        self.write_us, self.read_us = array("q"), array("q")

    @property
    def ok_ops(self) -> int:
        return self.writes + self.reads


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, LAT_MAX_US, 3)


def latency_summary(hist: Any) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean in microseconds (None when nothing was recorded)."""
    if hist is None or hist.get_total_count() == 0:
        return {k: None for k in ("p50", "p90", "p99", "p99.9", "max", "mean", "count")}
    pct = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
    out: dict[str, float | None] = {k: float(hist.get_value_at_percentile(v))
                                    for k, v in pct.items()}
    out["max"] = float(hist.get_max_value())
    out["mean"] = round(float(hist.get_mean_value()), 1)
    out["count"] = float(hist.get_total_count())
    return out


# --- the RESP load generator ---------------------------------------------------------


def encode_command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Shared:
    """State all connections of one load run share (one event loop, no locks)."""

    def __init__(self, cfg: BenchConfig, deadline: float, result: LoadResult) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.result = result
        self.rng = random.Random(cfg.seed)
        self.value = b"v" * cfg.value_size
        self.stopping = False
        self.leader_addr: tuple[str, int] | None = None
        self._sets: dict[int, bytes] = {}
        self._gets: dict[int, bytes] = {}

    def budget_left(self) -> bool:
        return (not self.stopping and self.result.sent < self.cfg.max_requests
                and time.monotonic() < self.deadline)

    def next_command(self) -> tuple[bool, bytes]:
        """(is_read, encoded command). Each key's SET and GET are encoded once."""
        k = self.rng.randrange(self.cfg.keys)
        if self.cfg.read_ratio > 0 and self.rng.random() < self.cfg.read_ratio:
            cmd = self._gets.get(k)
            if cmd is None:
                cmd = self._gets[k] = encode_command(b"GET", b"key:%d" % k)
            return True, cmd
        cmd = self._sets.get(k)
        if cmd is None:
            cmd = self._sets[k] = encode_command(b"SET", b"key:%d" % k, self.value)
        return False, cmd

    def note_error(self, text: str) -> None:
        self.result.errors += 1
        if len(self.result.error_samples) < 5:
            self.result.error_samples.append(text)


class _LoadProtocol(asyncio.Protocol):
    """One connection keeping ``pipeline`` requests in flight; replies come back in
    order, so a FIFO of (send time, is_read) pairs them with their requests."""

    def __init__(self, shared: _Shared) -> None:
        import hiredis

        self.shared = shared
        self.reader = hiredis.Reader()
        self.inflight: deque[tuple[int, bool]] = deque()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.retry_pause = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._fill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(("lost", exc))

    def _fill(self) -> None:
        sh = self.shared
        want = sh.cfg.pipeline - len(self.inflight)
        if want <= 0 or self.transport is None or self.retry_pause:
            return
        chunks = []
        now = time.perf_counter_ns()
        while want > 0 and sh.budget_left():
            is_read, cmd = sh.next_command()
            chunks.append(cmd)
            self.inflight.append((now, is_read))
            sh.result.sent += 1
            want -= 1
        if chunks:
            data = b"".join(chunks)
            sh.result.bytes_out += len(data)
            self.transport.write(data)
        elif not self.inflight and not self.done.done():
            self.done.set_result(("finished", None))

    def data_received(self, data: bytes) -> None:
        sh = self.shared
        res = sh.result
        res.bytes_in += len(data)
        self.reader.feed(data)
        now = time.perf_counter_ns()
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            if not self.inflight:
                sh.note_error(f"unexpected reply {reply!r:.60}")
                continue
            t0, is_read = self.inflight.popleft()
            if isinstance(reply, Exception):
                self._on_error(str(reply).encode())
                continue
            us = min(max(1, (now - t0) // 1000), LAT_MAX_US)
            if is_read:
                res.reads += 1
                res.read_us.append(us)
            else:
                res.writes += 1
                res.write_us.append(us)
        if self.done.done():
            return
        self._fill()

    def _on_error(self, text: bytes) -> None:
        sh = self.shared
        if text.startswith(b"MOVED"):
            if self.done.done():
                return            # the rest of this window's redirects: already moving
            sh.result.redirects += 1
            host, _, port = text.split()[-1].decode().rpartition(":")
            addr = (host.strip("[]"), int(port))
            sh.leader_addr = addr
            if not self.done.done():
                self.done.set_result(("moved", addr))
        elif text.startswith(RETRY_ERRORS):
            sh.result.retries += 1
            if not self.retry_pause:   # back off briefly, then refill the window
                self.retry_pause = True
                asyncio.get_running_loop().call_later(0.05, self._resume)
        else:
            sh.note_error(text.decode(errors="replace"))

    def _resume(self) -> None:
        self.retry_pause = False
        if not self.done.done():
            self._fill()


async def _one_client(shared: _Shared, addr: tuple[str, int]) -> None:
    """Run one connection until the budget is spent, following MOVED redirects."""
    loop = asyncio.get_running_loop()
    hops = 0
    while shared.budget_left() and hops < 50:
        try:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _LoadProtocol(shared), *addr), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            shared.note_error(f"connect {addr[0]}:{addr[1]}: {e}")
            await asyncio.sleep(0.1)
            hops += 1
            continue
        try:
            remaining = max(0.1, shared.deadline - time.monotonic()) + DRAIN_TIMEOUT
            try:
                why, detail = await asyncio.wait_for(asyncio.shield(proto.done), remaining)
            except asyncio.TimeoutError:
                why, detail = "timeout", None
        finally:
            transport.close()
        if why == "finished":
            return
        if why == "moved":
            addr = detail
        elif why == "timeout":
            shared.note_error(f"{len(proto.inflight)} replies outstanding after the drain timeout")
            return
        elif why == "lost" and shared.budget_left():
            shared.note_error(f"connection to {addr[0]}:{addr[1]} lost: {detail}")
            addr = shared.leader_addr or addr
            await asyncio.sleep(0.05)
        shared.result.reconnects += 1
        hops += 1


async def _sample_progress(shared: _Shared, start: float, on_tick: Any) -> None:
    """Once per 0.25 s: progress callback; once per second: a throughput sample."""
    res = shared.result
    last_t, last_ops, next_sample = start, 0, start + 1.0
    while True:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        if on_tick is not None:
            on_tick(now - start, res.ok_ops)
        if now >= next_sample:
            res.per_second.append({"t": round(now - start, 2),
                                   "ops_per_s": (res.ok_ops - last_ops) / (now - last_t)})
            last_t, last_ops, next_sample = now, res.ok_ops, next_sample + 1.0


async def run_load(addrs: list[tuple[str, int]], cfg: BenchConfig,
                   on_tick: Any = None) -> LoadResult:
    """Drive the workload against ``addrs`` (clients spread round-robin); bounded by
    ``cfg.duration`` and ``cfg.max_requests`` plus DRAIN_TIMEOUT for the last replies."""
    result = LoadResult(hist=new_histogram(), write_hist=new_histogram(),
                        read_hist=new_histogram())
    start = time.monotonic()
    shared = _Shared(cfg, start + cfg.duration, result)
    sampler = asyncio.create_task(_sample_progress(shared, start, on_tick))
    clients = [asyncio.create_task(_one_client(shared, addrs[i % len(addrs)]))
               for i in range(cfg.clients)]
    try:
        await asyncio.wait_for(asyncio.gather(*clients),
                               cfg.duration + DRAIN_TIMEOUT + CONNECT_TIMEOUT + 5)
    except asyncio.TimeoutError:
        shared.note_error("the load did not finish in time")
    finally:
        shared.stopping = True
        sampler.cancel()
        for t in clients:
            t.cancel()
        await asyncio.gather(sampler, *clients, return_exceptions=True)
    result.seconds = time.monotonic() - start
    result.finish_histograms()
    return result


def run_load_sync(addrs: list[tuple[str, int]], cfg: BenchConfig,
                  on_tick: Any = None) -> LoadResult:
    from raft.net.transport import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run_load(addrs, cfg, on_tick))


# --- node-side measurements -----------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (psutil, else /proc/PID/stat)."""
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except ImportError:
        pass
    except Exception:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fp:
            fields = fp.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (/proc/PID/status VmRSS), or None."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def scrape_metrics(port: int, timeout: float = 2.0) -> dict[str, float]:
    """The unlabelled samples of a node's Prometheus endpoint ({} if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def node_snapshot(cluster: Any) -> dict[int, dict[str, Any]]:
    snap = {}
    for i, n in cluster.nodes.items():
        snap[i] = {"cpu": cpu_seconds(n.pid) if n.running else None,
                   "rss_mb": rss_mb(n.pid) if n.running else None,
                   "metrics": scrape_metrics(n.config.metrics_port) if n.running else {}}
    return snap


def node_deltas(before: dict, after: dict, seconds: float, durability: str) -> dict[str, Any]:
    """CPU seconds per node, fsyncs/s, elections over the load window."""
    def delta(i: int, name: str) -> float | None:
        a, b = after[i]["metrics"].get(name), before[i]["metrics"].get(name)
        return None if a is None or b is None else a - b

    cpu = {}
    for i in after:
        a, b = after[i]["cpu"], before[i]["cpu"]
        cpu[i] = None if a is None or b is None else round(a - b, 2)
    saves = [delta(i, "raft_saves_total") for i in after]
    fsync_sum = [delta(i, "raft_fsync_seconds_sum") for i in after]
    have = all(s is not None for s in saves)
    fsyncs = sum(s for s in saves if s is not None) if have else None
    elections_total = [after[i]["metrics"].get("raft_elections_total") for i in after]
    elections_load = [delta(i, "raft_elections_total") for i in after]
    return {
        "cpu_seconds": cpu,
        "rss_mb": {i: after[i].get("rss_mb") for i in after},   # at the end of the load
        "fsyncs_per_s": (round(fsyncs / seconds, 1) if have and durability == "fsync"
                         and seconds > 0 else None),
        "fsync_mean_ms": (round(1000 * sum(fsync_sum) / fsyncs, 3)  # type: ignore[arg-type]
                          if have and fsyncs and durability == "fsync"
                          and all(f is not None for f in fsync_sum) else None),
        "elections": (int(sum(e for e in elections_total if e is not None))
                      if any(e is not None for e in elections_total) else None),
        "elections_during_load": (int(sum(e for e in elections_load if e is not None))
                                  if all(e is not None for e in elections_load) else None),
    }


# --- trace check ----------------------------------------------------------------------


def check_traces(paths: dict[int, str], exit_codes: dict[int, int | None]) -> dict[str, Any]:
    """Merge the per-node traces and replay them through the spec checker. A node that
    did not stop cleanly (its last buffered events are lost) makes the verdict
    "incomplete", never a violation."""
    from spec.checker import Checker, TraceViolation, merge_by_causality, read_ndjson_file

    unclean = {i: c for i, c in exit_codes.items() if c != 0}
    if unclean:
        return {"verdict": "incomplete", "events": 0,
                "detail": "nodes that did not stop cleanly (trace tail lost): "
                          + ", ".join(f"node {i} exit {c}" for i, c in sorted(unclean.items()))}
    streams, voters = [], set()
    for i, path in sorted(paths.items()):
        try:
            events, file_voters = read_ndjson_file(path)
        except (OSError, ValueError) as e:
            return {"verdict": "incomplete", "events": 0, "detail": f"node {i}: {path}: {e}"}
        streams.append(events)
        voters.update(file_voters or [i])
    voters.update(paths)
    t0 = time.perf_counter()
    try:
        events = merge_by_causality(streams)
    except ValueError as e:
        return {"verdict": "incomplete", "events": sum(map(len, streams)), "detail": str(e)}
    checker = Checker(sorted(voters))
    try:
        n = checker.check(events)
    except TraceViolation as v:
        return {"verdict": "violation", "events": checker.events, "detail": v.render()}
    return {"verdict": "ok", "events": n, "seconds": round(time.perf_counter() - t0, 2),
            "detail": ""}


# --- the whole run --------------------------------------------------------------------


class BenchError(RaftError):
    """The cluster could not be started or elected no leader."""


def _progress(cfg: BenchConfig) -> tuple[Any, Any]:
    """A rich progress bar on stderr (or a no-op without rich)."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:
        return None, None
    console = Console(stderr=True)
    prog = Progress(TextColumn("[bold]load[/]"), BarColumn(), TextColumn("{task.description}"),
                    TimeRemainingColumn(), console=console, transient=True)
    task = prog.add_task("", total=cfg.duration)

    def on_tick(elapsed: float, ops: int) -> None:
        rate = ops / elapsed if elapsed > 0 else 0
        prog.update(task, completed=min(elapsed, cfg.duration),
                    description=f"{ops:,} ops  {rate:,.0f}/s")

    return prog, on_tick


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Start a cluster, run the load, stop it, check the traces; a JSON-ready report."""
    from raft.server_cli import LocalCluster

    tmp = tempfile.mkdtemp(prefix="raft-bench-")
    trace_dir = os.path.join(tmp, "traces") if cfg.trace else None
    if trace_dir:
        os.makedirs(trace_dir)
    cluster = None
    try:
        cluster = LocalCluster(cfg.nodes, directory=os.path.join(tmp, "cluster"),
                               durability=cfg.durability, trace_dir=trace_dir,
                               log_level="warning", metrics=True)
        t0 = time.monotonic()
        cluster.start()
        try:
            leader = cluster.wait_for_leader(cfg.leader_timeout)
        except (TimeoutError, RuntimeError) as e:
            raise BenchError(str(e)) from None
        _say(f"raft bench: {cfg.nodes} nodes up, leader node {leader} after "
             f"{time.monotonic() - t0:.1f}s; {cfg.clients} clients x {cfg.pipeline} in flight, "
             f"{cfg.value_size} B values, read ratio {cfg.read_ratio:g}, "
             f"durability {cfg.durability}, {cfg.duration:g}s")
        addrs = [n.client for n in cluster.nodes.values()]
        time.sleep(METRICS_SETTLE)   # let every node's metrics snapshot catch up
        before = node_snapshot(cluster)
        prog, on_tick = _progress(cfg)
        if prog is not None:
            with prog:
                load = run_load_sync(addrs, cfg, on_tick)
        else:
            load = run_load_sync(addrs, cfg)
        cpu_after = {i: cpu_seconds(n.pid) if n.running else None
                     for i, n in cluster.nodes.items()}
        time.sleep(METRICS_SETTLE)
        after = node_snapshot(cluster)
        for i, c in cpu_after.items():
            after[i]["cpu"] = c
        nodes = node_deltas(before, after, load.seconds, cfg.durability)
        exit_codes = _stop_cluster(cluster)
        report = _report(cfg, load, nodes, exit_codes)
        if cfg.trace and trace_dir:
            _say("raft bench: checking the traces against the spec ...")
            paths = {i: n.config.trace_file for i, n in cluster.nodes.items()}
            report["trace"] = check_traces(paths, exit_codes)  # type: ignore[arg-type]
        else:
            report["trace"] = {"verdict": "skipped", "events": 0, "detail": "--no-trace"}
        return report
    finally:
        if cluster is not None:
            cluster.stop_all(timeout=15.0)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop_cluster(cluster: Any) -> dict[int, int | None]:
    """SIGTERM every node (a clean stop flushes its trace), SIGKILL after 15 s."""
    cluster.stop_all(timeout=15.0)
    return {i: (n.proc.returncode if n.proc is not None else None)
            for i, n in cluster.nodes.items()}


def _report(cfg: BenchConfig, load: LoadResult, nodes: dict[str, Any],
            exit_codes: dict[int, int | None]) -> dict[str, Any]:
    secs = load.seconds or 1e-9
    return {
        "config": asdict(cfg),
        "seconds": round(load.seconds, 3),
        "writes": load.writes,
        "reads": load.reads,
        "writes_per_s": round(load.writes / secs, 1),
        "reads_per_s": round(load.reads / secs, 1),
        "bytes_per_s": round((load.bytes_out + load.bytes_in) / secs, 1),
        "latency_us": latency_summary(load.hist),
        "write_latency_us": latency_summary(load.write_hist),
        "read_latency_us": latency_summary(load.read_hist),
        "redirects": load.redirects,
        "retries": load.retries,
        "errors": load.errors,
        "error_samples": load.error_samples,
        "per_second": load.per_second,
        "node_exit_codes": {str(k): v for k, v in exit_codes.items()},
        "cpu_seconds": {str(k): v for k, v in nodes["cpu_seconds"].items()},
        "rss_mb": {str(k): v for k, v in nodes["rss_mb"].items()},
        "fsyncs_per_s": nodes["fsyncs_per_s"],
        "fsync_mean_ms": nodes["fsync_mean_ms"],
        "elections": nodes["elections"],
        "elections_during_load": nodes["elections_during_load"],
    }


# --- output ---------------------------------------------------------------------------


def _ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1000:.2f} ms"


def report_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    lat = r["latency_us"]
    cpu = ", ".join(f"node{k} {'n/a' if v is None else f'{v:.2f}s'}"
                    for k, v in r["cpu_seconds"].items())
    rows = [
        ("committed writes/s", f"{r['writes_per_s']:,.0f}"),
        ("reads/s", f"{r['reads_per_s']:,.0f}"),
        ("latency p50", _ms(lat["p50"])),
        ("latency p90", _ms(lat["p90"])),
        ("latency p99", _ms(lat["p99"])),
        ("latency p99.9", _ms(lat["p99.9"])),
        ("latency max", _ms(lat["max"])),
        ("bytes/s (client in+out)", f"{r['bytes_per_s'] / 1e6:,.2f} MB/s"),
        ("CPU seconds per node", cpu),
        ("RSS per node (end of load)", ", ".join(
            f"node{k} {'n/a' if v is None else f'{v:.0f} MB'}"
            for k, v in r.get("rss_mb", {}).items())),
        ("fsyncs/s (all nodes)", "n/a" if r["fsyncs_per_s"] is None
         else f"{r['fsyncs_per_s']:,.0f} (mean {r['fsync_mean_ms']} ms)"),
        ("elections", "n/a" if r["elections"] is None
         else f"{r['elections']} ({r['elections_during_load']} during the load)"),
        ("redirects / retries / errors", f"{r['redirects']} / {r['retries']} / {r['errors']}"),
        ("duration", f"{r['seconds']:.2f} s ({r['writes'] + r['reads']:,} ops)"),
    ]
    t = r.get("trace", {})
    rows.append(("trace check", f"{t.get('verdict')} ({t.get('events', 0):,} events)"))
    return rows


def print_report(r: dict[str, Any]) -> None:
    rows = report_rows(r)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        return
    c = r["config"]
    table = Table(title=f"raft bench: {c['nodes']} nodes, durability {c['durability']}, "
                        f"{c['clients']}x{c['pipeline']} in flight, {c['value_size']} B values")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    Console(width=max(100, shutil.get_terminal_size().columns)).print(table)


def write_plot(r: dict[str, Any], path: str) -> str | None:
    """Throughput per second and the latency distribution; an error text or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'raft[bench]'): no plot written"
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ps = r["per_second"]
    a.plot([p["t"] for p in ps], [p["ops_per_s"] for p in ps], marker="o")
    a.set_xlabel("seconds")
    a.set_ylabel("ops/s")
    a.set_title("throughput")
    lat = r["latency_us"]
    names = ["p50", "p90", "p99", "p99.9", "max"]
    b.bar(names, [(lat[n] or 0) / 1000 for n in names])
    b.set_ylabel("ms")
    b.set_title("latency")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


# --- command line ---------------------------------------------------------------------


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return v
    return parse


def add_bench_subcommand(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmark a local cluster (throughput, latency, traces)")
    b.add_argument("--nodes", type=int, default=3, choices=(3, 5, 7))
    b.add_argument("--clients", type=_positive(int), default=16, help="connections (default 16)")
    b.add_argument("--pipeline", type=_positive(int), default=8,
                   help="requests in flight per connection (default 8)")
    b.add_argument("--value-size", type=_positive(int), default=100, help="SET value bytes")
    b.add_argument("--duration", type=_positive(float), default=10.0, help="seconds of load")
    b.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    b.add_argument("--read-ratio", type=float, default=0.0, help="fraction of GETs (0..1)")
    b.add_argument("--keys", type=_positive(int), default=10_000, help="key space size")
    b.add_argument("--max-requests", type=_positive(int), default=10_000_000,
                   help="stop after this many requests even before --duration")
    b.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    b.add_argument("--plot", metavar="OUT.png", help="plot throughput and latency (matplotlib)")
    b.add_argument("--no-trace", action="store_true", help="do not trace nor check traces")
    b.add_argument("--compare", action="store_true",
                   help="instead: measure side by side with PySyncObj and Redis and the machine's "
                        "limits; writes compare.json and compare.md (see docs/benchmarks.md)")
    b.add_argument("--embedded", action="store_true",
                   help="instead: @replicated calls/s of raft.embed vs PySyncObj "
                        "(benchmarks/bench_embedded.py; --quick for a short run)")
    b.add_argument("--out-dir", default=".", help="--compare: where to write the results")
    b.add_argument("--quick", action="store_true", help="--compare: shorter phases")
    b.set_defaults(func=bench_main)


def bench_main(args: argparse.Namespace) -> int:
    if args.embedded:
        from raft.embed.bench import main as embedded_main

        return embedded_main(["--quick"] if args.quick else [])
    if args.compare:
        from raft.compare import main as compare_main

        return compare_main(["--out-dir", args.out_dir] + (["--quick"] if args.quick else []))
    if not 0.0 <= args.read_ratio <= 1.0:
        print("raft bench: --read-ratio must be between 0 and 1", file=sys.stderr)
        return 2
    cfg = BenchConfig(nodes=args.nodes, clients=args.clients, pipeline=args.pipeline,
                      value_size=args.value_size, duration=args.duration,
                      durability=args.durability, read_ratio=args.read_ratio, keys=args.keys,
                      max_requests=args.max_requests, trace=not args.no_trace)
    try:
        report = run_bench(cfg)
    except (BenchError, OSError, ValueError) as e:
        print(f"raft bench: {e}", file=sys.stderr)
        return 2
    print_report(report)
    trace = report["trace"]
    if trace["detail"] and trace["verdict"] != "ok":
        print(f"trace check: {trace['verdict']}: {trace['detail']}", file=sys.stderr)
    for s in report["error_samples"]:
        print(f"client error: {s}", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fp:
            json.dump(report, fp, indent=2)
    if args.plot:
        problem = write_plot(report, args.plot)
        print(f"raft bench: {problem}" if problem else f"raft bench: plot written to {args.plot}",
              file=sys.stderr)
    failed = report["errors"] > 0 or trace["verdict"] not in ("ok", "skipped") \
        or report["writes"] + report["reads"] == 0
    return 1 if failed else 0
