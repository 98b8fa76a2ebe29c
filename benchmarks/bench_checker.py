"""Trace checker throughput: events per second validated against the spec.

    python benchmarks/bench_checker.py [--quick]

Traces come from simulator runs (5 nodes, faults on). The checker runs over
the in-memory event tuples (as every simulator run does) and over the same
trace read back from NDJSON (as `raft check` does). Target: >= 100,000 events/s.
"""
from __future__ import annotations

import io
import statistics
import sys
import time

from raft.testing.sim import SimConfig, Simulation
from raft.trace_checker import Checker, read_ndjson, write_ndjson


def make_trace(seed: int = 3, nodes: int = 5, steps: int = 600):
    sim = Simulation(SimConfig(seed=seed, nodes=nodes, steps=steps, check_trace=True))
    res = sim.run()
    assert res.ok, res.violations
    return sim.trace, sim.ids


def rate(events, ids, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        Checker(ids).check(events)
        times.append(time.perf_counter() - t0)
    return len(events) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)  # a smoke run
    events, ids = make_trace(steps=100 if quick else 600)
    print(f"trace: {len(events):,} events, {len(ids)} servers")
    print(f"in-memory events: {rate(events, ids):,.0f} events/s (median of 5; target 100,000)")
    buf = io.StringIO()
    write_ndjson(events, buf, voters=ids)
    buf.seek(0)
    t0 = time.perf_counter()
    parsed, _ = read_ndjson(buf)
    parse = time.perf_counter() - t0
    print(f"NDJSON parse: {len(parsed) / parse:,.0f} events/s")
    print(f"NDJSON events (check only): {rate(parsed, ids):,.0f} events/s (median of 5)")


def test_checker_rate(benchmark):
    events, ids = make_trace(steps=300)
    n = benchmark(lambda: Checker(ids).check(events))
    assert n == len(events)
    print(f"\nchecker: {n / benchmark.stats.stats.median:,.0f} events/s")


if __name__ == "__main__":
    main()
