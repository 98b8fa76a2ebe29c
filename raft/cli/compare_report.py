"""The pure part of ``raft bench --compare``: pick each system's figures out of its sweep,
compute the ratios against their targets, and render ``compare.md``.

No I/O here, so tests/test_compare.py can check it on hand-made results. A *sweep
point* is a dict with at least ``label``, ``ops_per_s``, ``ops``, ``errors`` and
``latency_us`` (``p50``/``p90``/``p99`` in microseconds); raft/cli/compare.py produces them.
"""
from __future__ import annotations

from typing import Any

#: The latency budget of "throughput at p99 <= 10 ms".
DEFAULT_BUDGET_P99_US = 10_000.0
#: A point with more failed than this fraction of its requests is not a result.
MAX_ERROR_FRACTION = 0.01

Point = dict[str, Any]


# --- sweep selection ------------------------------------------------------------------


def valid_points(points: list[Point]) -> list[Point]:
    """Points that completed work and failed at most MAX_ERROR_FRACTION of it: a point
    that "ran fast" by failing requests must not be anyone's best figure."""
    out = []
    for p in points:
        ops, errors = p.get("ops") or 0, p.get("errors") or 0
        if ops > 0 and errors <= MAX_ERROR_FRACTION * (ops + errors):
            out.append(p)
    return out


def peak(points: list[Point]) -> Point | None:
    """The point with the highest throughput, whatever its latency (None if no point
    qualifies)."""
    ok = valid_points(points)
    return max(ok, key=lambda p: p["ops_per_s"]) if ok else None


def best_under_budget(points: list[Point],
                      p99_budget_us: float = DEFAULT_BUDGET_P99_US) -> Point | None:
    """The highest-throughput point whose p99 latency is within the budget; None when
    no point meets it (reported as "none")."""
    ok = [p for p in valid_points(points)
          if p.get("latency_us", {}).get("p99") is not None
          and p["latency_us"]["p99"] <= p99_budget_us]
    return max(ok, key=lambda p: p["ops_per_s"]) if ok else None


def find_point(points: list[Point], label: str) -> Point | None:
    return next((p for p in points if p.get("label") == label), None)


def summarize_sweep(points: list[Point],
                    p99_budget_us: float = DEFAULT_BUDGET_P99_US) -> dict[str, Any]:
    """{"peak": point|None, "under_budget": point|None} for one system."""
    return {"peak": peak(points), "under_budget": best_under_budget(points, p99_budget_us)}


# --- ratios ---------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded, or None when either side is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratio_row(name: str, value: float | None, op: str, target: float,
              basis: str = "") -> dict[str, Any]:
    """One row of the ratio table; ``met`` is None when the value is missing."""
    if op not in (">=", "<="):
        raise ValueError(f"unknown comparison {op!r}")
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"name": name, "value": value, "op": op, "target": target, "met": met,
            "basis": basis}


def _get(d: Any, *path: Any) -> Any:
    """d[path[0]][path[1]]... or None when any step is missing."""
    for k in path:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
        if d is None:
            return None
    return d


def _peak_ops(r: dict[str, Any], *path: str) -> float | None:
    return _get(summarize_sweep(_get(r, *path, "sweep") or []), "peak", "ops_per_s")


def _point(r: dict[str, Any], label: str, *path: str) -> Point | None:
    return find_point(_get(r, *path, "sweep") or [], label)


def compute_ratios(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio of the issue, from one run's results ``r`` (see raft/cli/compare.py)."""
    rows = []
    pso_peak = _peak_ops(r, "pysyncobj")
    rows.append(ratio_row("ours durable peak / PySyncObj peak",
                          ratio(_peak_ops(r, "ours", "fsync"), pso_peak), ">=", 2.5,
                          "peaks of the two sweeps; PySyncObj journal in memory"))
    rows.append(ratio_row("ours none peak / PySyncObj peak",
                          ratio(_peak_ops(r, "ours", "none"), pso_peak), ">=", 5.0,
                          "peaks of the two sweeps"))
    for mode, target in (("plain", 0.25), ("P16", 0.10)):
        rows.append(ratio_row(
            f"redis-benchmark SET -c 50{' -P 16' if mode == 'P16' else ''}: "
            "ours durable / redis-server",
            ratio(_get(r, "redis", "ours", mode, "set", "rps"),
                  _get(r, "redis", "redis", mode, "set", "rps")), ">=", target,
            "requests/s, our leader with durability fsync; each the best of its runs"))
    seq = _get(_point(r, "1x1", "ours", "fsync"), "latency_us", "p50")
    ping = _get(r, "machine", "redis_ping", "p50_us")
    # the fdatasync probe taken right before our durable sweep, else the one at the start
    fs = _get(r, "ours", "fsync", "fdatasync", "p50_us") or _get(r, "machine", "fdatasync",
                                                                 "p50_us")
    floor = ping + fs if ping is not None and fs is not None else None
    rows.append(ratio_row("ours sequential durable p50 / (RTT + fdatasync)",
                          ratio(seq, floor), "<=", 3.0,
                          "RTT: redis-benchmark -t ping -c 1 p50; fdatasync: probe p50 "
                          "just before the durable sweep"))
    rows.append(ratio_row("ours durable 16x8 / etcd durable 16x8",
                          ratio(_get(_point(r, "16x8", "ours", "fsync"), "ops_per_s"),
                                _get(_point(r, "16x8", "etcd", "fsync"), "ops_per_s")),
                          ">=", 3.0, "ops/s, 128 requests in flight each"))
    rows.append(ratio_row("ours sequential durable p50 / etcd's",
                          ratio(seq, _get(_point(r, "1x1", "etcd", "fsync"), "latency_us", "p50")),
                          "<=", 0.8, "1 connection x 1 in flight"))
    writes = _get(r, "ours", "fsync", "mixed", "0", "ops_per_s")
    for key, name, target in (("0.5", "50% reads", 1.0), ("0.9", "90% reads", 1.0),
                              ("1", "reads alone", 3.0)):
        rows.append(ratio_row(f"ours durable {name} / writes alone",
                              ratio(_get(r, "ours", "fsync", "mixed", key, "ops_per_s"), writes),
                              ">=", target, "ops/s, linearizable GETs (ReadIndex)"))
    traced = _get(r, "tracing", "traced", "writes_per_s")
    untraced = _get(r, "tracing", "untraced", "writes_per_s")
    cost = None if ratio(traced, untraced) is None else round(1 - ratio(traced, untraced), 3)
    rows.append(ratio_row("tracing cost: 1 - traced / untraced", cost, "<=", 0.10,
                          "raft bench, same settings"))
    return rows


# --- markdown -------------------------------------------------------------------------


def fmt(v: Any, unit: str = "") -> str:
    """A figure for a table: thousands separators, "n/a" for missing."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)) and abs(v) >= 100:
        return f"{v:,.0f}{unit}"
    if isinstance(v, float):
        return f"{v:.3g}{unit}"
    return f"{v}{unit}"


def _ms(us: float | None) -> str:
    return "n/a" if us is None else f"{us / 1000:.2f}"


def _point_cell(p: Point | None) -> str:
    if p is None:
        return "none"
    return f"{fmt(p['ops_per_s'])} ({p['label']}, p99 {_ms(p['latency_us'].get('p99'))} ms)"


def _systems(r: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """(display name, section with a "sweep" or "skipped") for every swept system."""
    return [
        ("PySyncObj (in-memory journal, in-process load)", r.get("pysyncobj")),
        ("ours, durability none (RESP, Python load)", _get(r, "ours", "none")),
        ("ours, durability fsync (RESP, Python load)", _get(r, "ours", "fsync")),
        ("etcd 3.4, no fsync (data dir on tmpfs, Go clientv3)", _get(r, "etcd", "none")),
        ("etcd 3.4, fsync (Go clientv3)", _get(r, "etcd", "fsync")),
    ]


def _summary_table(r: dict[str, Any], budget_us: float) -> list[str]:
    lines = ["| system | peak ops/s (point, p99) | best ops/s at p99 <= "
             f"{budget_us / 1000:g} ms | sequential 1x1 p50 ms |", "|---|---|---|---|"]
    for name, sec in _systems(r):
        if not sec or "sweep" not in sec:
            why = (sec or {}).get("skipped", "not measured")
            lines.append(f"| {name} | skipped: {why} | | |")
            continue
        s = summarize_sweep(sec["sweep"], budget_us)
        seq = find_point(sec["sweep"], "1x1") or find_point(sec["sweep"], "1")
        lines.append(f"| {name} | {_point_cell(s['peak'])} | {_point_cell(s['under_budget'])} | "
                     f"{_ms(_get(seq, 'latency_us', 'p50'))} |")
    return lines


def _sweep_tables(r: dict[str, Any]) -> list[str]:
    lines = []
    for name, sec in _systems(r):
        if not sec or "sweep" not in sec:
            continue
        lines += ["", f"### {name}", "",
                  "| in flight | ops/s | p50 ms | p90 ms | p99 ms | errors | load generator CPU |",
                  "|---|---|---|---|---|---|---|"]
        for p in sec["sweep"]:
            lat = p.get("latency_us", {})
            lines.append(f"| {p['label']} | {fmt(p['ops_per_s'])} | {_ms(lat.get('p50'))} | "
                         f"{_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | {p.get('errors', 0)} | "
                         f"{fmt(p.get('client_cpu'))} |")
        if sec.get("note"):
            lines.append(f"\n{sec['note']}")
    return lines


def _ratio_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| ratio | value | target | met | basis |", "|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        lines.append(f"| {row['name']} | {fmt(row['value'])} | {row['op']} {row['target']:g} | "
                     f"{met} | {row['basis']} |")
    return lines


def _machine_table(r: dict[str, Any]) -> list[str]:
    m = r.get("machine", {})
    lines = ["| probe | p50 us | p99 us |", "|---|---|---|"]
    probes = dict(m, fdatasync_again=_get(r, "ours", "fsync", "fdatasync"))
    for key, name in (("loopback_rtt", "loopback RTT, uvloop echo (Python client, 16 B)"),
                      ("redis_ping", "loopback RTT, redis-benchmark -t ping -c 1 (C client)"),
                      ("fdatasync", "append 256 B + fdatasync (data dir fs), at the start"),
                      ("fdatasync_again", "the same, right before our durable sweep")):
        v = probes.get(key) or {}
        lines.append(f"| {name} | {fmt(v.get('p50_us', v.get('skipped')))} | "
                     f"{fmt(v.get('p99_us'))} |")
    return lines


def _redis_table(r: dict[str, Any]) -> list[str]:
    red = r.get("redis") or {}
    if "redis" not in red:
        return [red.get("skipped", "not measured")]
    lines = ["| server | SET rps (p50 ms) | SET -P 16 rps (p50 ms) |", "|---|---|---|"]
    for key, name in (("redis", "redis-server (no persistence)"),
                      ("ours", "ours, leader, durability fsync")):
        cells = []
        for mode in ("plain", "P16"):
            v = _get(red, key, mode, "set")
            cells.append(f"{fmt(v['rps'])} ({v['p50_ms']})" if v else
                         str(_get(red, key, mode, "error") or "n/a"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nredis-benchmark -t set -c 50, n = {_get(red, 'n', 'plain')} (plain), "
                 f"{_get(red, 'n', 'P16')} (-P 16); each the best of its runs (rps of "
                 f"each run: redis-server {_tries(red, 'redis')}, ours {_tries(red, 'ours')})")
    return lines


def _tries(red: dict[str, Any], key: str) -> str:
    """Each mode's requests/s of every run, e.g. "plain 21,000 / 23,500, P16 ..."."""
    parts = []
    for mode in ("plain", "P16"):
        tries = [fmt(x) for x in (_get(red, key, mode, "tries") or []) if x]
        parts.append(f"{mode} {' / '.join(tries) or 'n/a'}")
    return ", ".join(parts)


def _mixed_table(r: dict[str, Any]) -> list[str]:
    mixed = _get(r, "ours", "fsync", "mixed") or {}
    if not mixed:
        return ["not measured"]
    lines = ["| read ratio | ops/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    for key in sorted(mixed, key=float):
        p = mixed[key]
        lines.append(f"| {key} | {fmt(p['ops_per_s'])} | {_ms(_get(p, 'latency_us', 'p50'))} | "
                     f"{_ms(_get(p, 'latency_us', 'p99'))} |")
    return lines


def _rss_table(r: dict[str, Any]) -> list[str]:
    lines = ["| system | RSS per node at the end of its peak point (MB) |", "|---|---|"]
    for name, sec in _systems(r):
        if not sec or "sweep" not in sec:
            continue
        p = peak(sec["sweep"])
        rss = (p or {}).get("rss_kb") or {}
        cells = ", ".join(f"{k}: {v / 1024:.0f}" for k, v in sorted(rss.items()))
        lines.append(f"| {name} | {cells or 'n/a'} |")
    return lines


def _tracing_lines(r: dict[str, Any]) -> list[str]:
    t = r.get("tracing") or {}
    if "traced" not in t:
        return [t.get("skipped", "not measured")]
    c = t.get("config", {})
    runs = ", ".join(f"{'traced' if x['trace'] else 'untraced'} {fmt(x['writes_per_s'])}"
                     for x in t.get("runs", []))
    return [f"`raft bench` {c.get('clients')}x{c.get('pipeline')}, durability "
            f"{c.get('durability')}, {c.get('duration')} s per run, "
            f"{c.get('rounds', 1)} round(s) alternating: traced "
            f"{fmt(t['traced']['writes_per_s'])} writes/s on average (trace check: "
            f"{t['traced'].get('trace_verdict')}), untraced {fmt(t['untraced']['writes_per_s'])} "
            f"writes/s" + (f" (runs in order: {runs})" if runs else "")]


def markdown(r: dict[str, Any]) -> str:
    """compare.md: the summary, the ratio table with targets, then the details."""
    budget = r.get("settings", {}).get("budget_p99_us", DEFAULT_BUDGET_P99_US)
    la0, la1 = r.get("loadavg_start"), r.get("loadavg_end")
    lines = [f"# raft vs PySyncObj vs etcd vs redis-server on {r.get('host')}", "",
             f"{r.get('when')}, {r.get('cpus')} CPUs, Python {r.get('python')}; "
             f"load average (1/5/15 min) at start {la0}, at end {la1}; "
             f"{r.get('settings', {}).get('point_seconds')} s per sweep point.", "",
             "## Summary: each system at its best and within a latency budget", ""]
    lines += _summary_table(r, budget)
    lines += ["", "## Ratios (all from this run)", ""]
    lines += _ratio_table(r.get("ratios") or compute_ratios(r))
    lines += ["", "## Machine limits", ""] + _machine_table(r)
    lines += ["", "## Sweeps"] + _sweep_tables(r)
    lines += ["", "## redis-benchmark against redis-server and our leader", ""] + _redis_table(r)
    lines += ["", "## Ours, durability fsync, mixed reads and writes (32x16)", ""]
    lines += _mixed_table(r)
    lines += ["", "## Tracing cost", ""] + _tracing_lines(r)
    lines += ["", "## Memory", ""] + _rss_table(r)
    return "\n".join(lines) + "\n"
