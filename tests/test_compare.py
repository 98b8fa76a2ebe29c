"""`raft bench --compare`: the pure parts (sweep selection, ratio table, compare.md) on
hand-made results, and a smoke run of ``--compare --quick`` (marked slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raft.cli.compare_report import (best_under_budget, compute_ratios, find_point, markdown,
                                 peak, ratio, ratio_row, summarize_sweep, valid_points)


def pt(label: str, ops_per_s: float, p99_us: float, *, ops: int = 1000, errors: int = 0,
       p50_us: float | None = None, rss: dict[str, int] | None = None) -> dict:
    return {"label": label, "ops_per_s": ops_per_s, "ops": ops, "errors": errors,
            "latency_us": {"p50": p50_us if p50_us is not None else p99_us / 4,
                           "p90": p99_us / 2, "p99": p99_us},
            "rss_kb": rss or {}}


SWEEP = [pt("1x1", 500, 3_000, p50_us=1_000), pt("16x8", 5_000, 9_000),
         pt("32x16", 8_000, 40_000), pt("64x64", 7_000, 900_000)]


# --- sweep selection ------------------------------------------------------------------


def test_peak_is_the_highest_throughput_whatever_its_latency():
    assert peak(SWEEP)["label"] == "32x16"


def test_best_under_budget_is_the_fastest_point_within_p99():
    assert best_under_budget(SWEEP, 10_000)["label"] == "16x8"
    assert best_under_budget(SWEEP, 3_000)["label"] == "1x1"      # the bound is inclusive
    assert best_under_budget(SWEEP, 50_000)["label"] == "32x16"


def test_no_point_within_budget_gives_none():
    assert best_under_budget(SWEEP, 2_999) is None
    assert best_under_budget([], 10_000) is None
    assert peak([]) is None
    assert summarize_sweep(SWEEP, 1.0) == {"peak": SWEEP[2], "under_budget": None}


def test_points_that_failed_requests_or_did_nothing_are_not_results():
    failing = pt("128x128", 50_000, 1_000, ops=1000, errors=100)
    empty = pt("0", 0, 1_000, ops=0)
    pts = SWEEP + [failing, empty]
    assert failing not in valid_points(pts) and empty not in valid_points(pts)
    assert peak(pts)["label"] == "32x16"
    assert best_under_budget(pts, 10_000)["label"] == "16x8"
    # a few errors (<= 1%) do not disqualify a point
    assert peak(SWEEP + [pt("x", 60_000, 1_000, ops=1000, errors=10)])["label"] == "x"


def test_a_point_without_p99_is_never_within_budget():
    p = pt("q", 99_999, 1)
    p["latency_us"]["p99"] = None
    assert best_under_budget([p], 10_000) is None
    assert peak([p]) is p


# --- ratios ---------------------------------------------------------------------------


def test_ratio_and_ratio_row():
    assert ratio(3, 2) == 1.5
    assert ratio(None, 2) is None and ratio(1, 0) is None and ratio(1, None) is None
    assert ratio_row("a", 2.5, ">=", 2.5)["met"] is True
    assert ratio_row("a", 2.4, ">=", 2.5)["met"] is False
    assert ratio_row("a", 0.8, "<=", 0.8)["met"] is True
    assert ratio_row("a", 0.81, "<=", 0.8)["met"] is False
    assert ratio_row("a", None, "<=", 0.8)["met"] is None
    with pytest.raises(ValueError):
        ratio_row("a", 1.0, "==", 1.0)


def _results() -> dict:
    """A complete hand-made run whose every ratio is known."""
    return {
        "host": "h", "cpus": 2, "python": "3.11", "when": "now",
        "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [2.0, 1.5, 1.0],
        "settings": {"point_seconds": 3.0, "budget_p99_us": 10_000.0},
        "machine": {"loopback_rtt": {"p50_us": 30.0, "p99_us": 100.0},
                    "redis_ping": {"p50_us": 25.0, "p99_us": 50.0},
                    "fdatasync": {"p50_us": 475.0, "p99_us": 5000.0}},
        "pysyncobj": {"sweep": [pt("1", 10, 105_000, p50_us=100_000),
                                pt("20000", 4_000, 600_000)]},
        "ours": {
            "none": {"sweep": [pt("1x1", 1_000, 2_000), pt("32x16", 24_000, 30_000,
                                                           rss={"node1": 40 * 1024})]},
            "fsync": {"fdatasync": {"p50_us": 975.0, "p99_us": 3000.0},
                      "sweep": [pt("1x1", 400, 5_000, p50_us=2_000),
                                dict(pt("16x8", 9_000, 9_000), client_cpu=0.45),
                                pt("32x16", 12_000, 50_000)],
                      "mixed": {"0": pt("32x16", 10_000, 1), "0.5": pt("32x16", 11_000, 1),
                                "0.9": pt("32x16", 9_000, 1), "1": pt("32x16", 30_000, 1)}},
        },
        "etcd": {"fsync": {"sweep": [pt("1x1", 500, 4_000, p50_us=4_000),
                                     pt("16x8", 4_000, 40_000)]},
                 "none": {"skipped": "etcd run failed: boom"}},
        "redis": {"n": {"plain": 10, "P16": 20},
                  "redis": {"plain": {"set": {"rps": 40_000.0, "p50_ms": 0.5}},
                            "P16": {"set": {"rps": 400_000.0, "p50_ms": 1.0}}},
                  "ours": {"plain": {"set": {"rps": 8_000.0, "p50_ms": 5.0}},
                           "P16": {"set": {"rps": 44_000.0, "p50_ms": 9.0}}}},
        "tracing": {"config": {"clients": 16, "pipeline": 8, "durability": "fsync",
                               "duration": 3.0},
                    "traced": {"writes_per_s": 4_500.0, "trace_verdict": "ok"},
                    "untraced": {"writes_per_s": 5_000.0}},
    }


def test_compute_ratios_from_a_known_run():
    rows = {r["name"]: r for r in compute_ratios(_results())}
    expect = {
        "ours durable peak / PySyncObj peak": (3.0, True),
        "ours none peak / PySyncObj peak": (6.0, True),
        "redis-benchmark SET -c 50: ours durable / redis-server": (0.2, False),
        "redis-benchmark SET -c 50 -P 16: ours durable / redis-server": (0.11, True),
        "ours sequential durable p50 / (RTT + fdatasync)": (2.0, True),
        "ours durable 16x8 / etcd durable 16x8": (2.25, False),
        "ours sequential durable p50 / etcd's": (0.5, True),
        "ours durable 50% reads / writes alone": (1.1, True),
        "ours durable 90% reads / writes alone": (0.9, False),
        "ours durable reads alone / writes alone": (3.0, True),
        "tracing cost: 1 - traced / untraced": (0.1, True),
    }
    assert set(rows) == set(expect)
    for name, (value, met) in expect.items():
        assert rows[name]["value"] == pytest.approx(value), name
        assert rows[name]["met"] is met, name


def test_the_fdatasync_probe_next_to_the_durable_sweep_is_preferred():
    r = _results()
    name = "ours sequential durable p50 / (RTT + fdatasync)"
    assert {x["name"]: x for x in compute_ratios(r)}[name]["value"] == 2.0   # 2000/(25+975)
    del r["ours"]["fsync"]["fdatasync"]
    assert {x["name"]: x for x in compute_ratios(r)}[name]["value"] == 4.0   # 2000/(25+475)
    assert {x["name"]: x for x in compute_ratios(r)}[name]["met"] is False


def test_missing_systems_give_missing_ratios_not_errors():
    r = _results()
    del r["etcd"], r["pysyncobj"], r["tracing"]
    rows = {row["name"]: row for row in compute_ratios(r)}
    for name in ("ours durable peak / PySyncObj peak", "ours durable 16x8 / etcd durable 16x8",
                 "tracing cost: 1 - traced / untraced"):
        assert rows[name]["value"] is None and rows[name]["met"] is None
    assert rows["ours durable reads alone / writes alone"]["met"] is True


# --- markdown -------------------------------------------------------------------------


def _table_row(md: str, first_cell: str, section: str = "") -> list[str]:
    """The cells of the first table row starting with ``first_cell`` after the heading
    ``section`` (the whole document without one)."""
    if section:
        md = md[md.index(f"\n{section}\n"):]
    for line in md.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row {first_cell!r} in:\n{md}")


def test_markdown_renders_summary_ratios_and_details():
    r = _results()
    md = markdown(r)
    assert "at start [1.0, 1.0, 1.0], at end [2.0, 1.5, 1.0]" in md
    fsync = _table_row(md, "ours, durability fsync (RESP, Python load)")
    assert fsync[1] == "12,000 (32x16, p99 50.00 ms)"
    assert fsync[2] == "9,000 (16x8, p99 9.00 ms)"
    assert fsync[3] == "2.00"
    pso = _table_row(md, "PySyncObj (in-memory journal, in-process load)")
    assert pso[2] == "none" and pso[3] == "100.00"
    assert _table_row(md, "etcd 3.4, no fsync (data dir on tmpfs, Go clientv3)")[1] == \
        "skipped: etcd run failed: boom"
    row = _table_row(md, "ours durable 16x8 / etcd durable 16x8")
    assert row[1:4] == ["2.25", ">= 3", "**no**"]
    row = _table_row(md, "tracing cost: 1 - traced / untraced")
    assert row[1:4] == ["0.1", "<= 0.1", "yes"]
    assert _table_row(md, "ours, durability none (RESP, Python load)", "## Memory")[1] == "node1: 40"
    assert _table_row(md, "redis-server (no persistence)")[1:] == ["40,000 (0.5)",
                                                                   "400,000 (1.0)"]
    assert "trace check: ok" in md
    row = _table_row(md, "16x8", "### ours, durability fsync (RESP, Python load)")
    assert row == ["16x8", "9,000", "2.25", "4.50", "9.00", "0", "0.45"]


def test_markdown_of_an_empty_run_says_what_is_missing():
    md = markdown({"settings": {}})
    assert "skipped: not measured" in md
    assert md.count("| n/a |") >= 11          # every ratio, none computable


def test_find_point():
    assert find_point(SWEEP, "16x8") is SWEEP[1]
    assert find_point(SWEEP, "nope") is None


# --- helpers of the run ----------------------------------------------------------------


def test_a_failing_phase_is_reported_as_skipped_not_raised():
    from raft.cli.compare import _guarded

    def boom(_x: int) -> dict:
        raise RuntimeError("no leader")

    assert _guarded(boom, 1) == {"skipped": "failed: RuntimeError: no leader"}
    assert _guarded(lambda x: {"a": x}, 2) == {"a": 2}


def test_rss_sampler_reads_vmrss():
    from raft.cli.compare import RssSampler, read_rss_kb

    if read_rss_kb(os.getpid()) is None:
        pytest.skip("no /proc/PID/status VmRSS here")
    with RssSampler({"me": os.getpid(), "gone": None}) as s:
        pass
    assert s.last["me"] > 1000 and "gone" not in s.last   # kB: a Python process > 1 MB


def test_percentiles():
    from raft.cli.compare import _percentiles

    p = _percentiles([float(x) for x in range(100, 0, -1)])
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (51.0, 91.0, 100.0, 100.0)
    assert _percentiles([])["p99"] is None


# --- smoke run ------------------------------------------------------------------------


def test_compare_quick_smoke(tmp_path):
    """The whole --quick run end to end: about 60 s on the loaded 2-core development VM
    (plus about 60 s once, the first time, to build etcd's load generator; the systems
    that are not installed are skipped)."""
    pytest.importorskip("hdrh")
    pytest.importorskip("uvloop")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "raft.cli.compare", "--quick", "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=400, env=env,
                          cwd=str(tmp_path))   # not the source tree: it has no compiled core
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "compare.json").read_text())
    assert (tmp_path / "compare.md").read_text().startswith("# raft vs")
    for dur in ("none", "fsync"):
        sweep = r["ours"][dur]["sweep"]
        assert sweep and peak(sweep) is not None, sweep
        assert all(p["errors"] == 0 for p in sweep), [p.get("error_samples") for p in sweep]
        assert all(p["client_cpu"] > 0 for p in sweep), sweep
    assert len(r["ratios"]) == 11
