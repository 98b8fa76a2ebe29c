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
   trace checker (``raft.trace_checker.Checker``).

Exit status: 0 if the run had no client errors and the traces check (or ``--no-trace``),
1 otherwise, 2 for bad arguments or a cluster that never elected a leader.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from typing import Any

from raft.cli.load import BenchConfig, LoadResult, latency_summary, run_load_sync
from raft.errors import RaftError

__all__ = ["add_bench_subcommand", "bench_main", "run_bench"]

METRICS_SETTLE = 0.6          # > raft.node.METRICS_PERIOD: the endpoint's snapshot is fresh


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
    io_sum = [delta(i, "raft_wal_io_seconds_total") for i in after]
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
        # the write + fdatasync alone, on the writer thread (the rest of a save's time
        # is building the batch and the two threads handing it over)
        "wal_io_mean_ms": (round(1000 * sum(io_sum) / fsyncs, 3)  # type: ignore[arg-type]
                           if have and fsyncs and durability == "fsync"
                           and all(f is not None for f in io_sum) else None),
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
    from raft.trace_checker import Checker, TraceViolation, merge_by_causality, read_ndjson_file

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
    from raft.testing.cluster import LocalCluster

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
        "wal_io_mean_ms": nodes.get("wal_io_mean_ms"),
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
         else f"{r['fsyncs_per_s']:,.0f} (mean {r['fsync_mean_ms']} ms"
              + (f", disk {r['wal_io_mean_ms']} ms" if r.get("wal_io_mean_ms") else "") + ")"),
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


def add_bench_subcommand(sub: Any) -> argparse.ArgumentParser:
    """Register ``raft bench``; its --compare and --embedded modes are dispatched by
    raft/cli/main.py (so this module imports neither the comparison nor the embed
    benchmark, and raft/cli/compare.py may import it)."""
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
    return b


def bench_main(args: argparse.Namespace) -> int:
    """``raft bench`` itself (not --compare nor --embedded)."""
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
