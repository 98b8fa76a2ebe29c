"""`raft bench` end to end: a small run in a subprocess (real node processes on
127.0.0.1), its table, its trace verdict and its --json report."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("hdrh")

BENCH_TIMEOUT = 150   # seconds: startup + 2 s of load + trace check, on a slow shared box
_MAIN = "import sys; from raft.cli import main; sys.exit(main(sys.argv[1:]))"


def _row(stdout: str, name: str) -> str:
    m = re.search(rf"{re.escape(name)}\s*│\s*(.+?)\s*│", stdout) or \
        re.search(rf"^{re.escape(name)}\s+(.+)$", stdout, re.M)
    assert m, f"no row {name!r} in:\n{stdout}"
    return m.group(1)


def test_bench_small_run(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, COLUMNS="120")
    proc = subprocess.run(
        [sys.executable, "-c", _MAIN, "bench", "--duration", "2", "--clients", "4",
         "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=BENCH_TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    writes = float(_row(proc.stdout, "committed writes/s").replace(",", ""))
    assert writes > 0
    assert _row(proc.stdout, "trace check").startswith("ok (")

    report = json.loads(out.read_text())
    for key in ("config", "writes_per_s", "reads_per_s", "latency_us", "bytes_per_s",
                "cpu_seconds", "fsyncs_per_s", "elections", "errors", "trace"):
        assert key in report, key
    assert report["writes_per_s"] > 0
    assert report["errors"] == 0
    assert report["trace"]["verdict"] == "ok" and report["trace"]["events"] > 0
    lat = report["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert set(report["cpu_seconds"]) == {"1", "2", "3"}
    assert report["fsyncs_per_s"] is not None and report["fsyncs_per_s"] > 0
    assert not any(p.name.startswith("raft-") for p in tmp_path.iterdir())


def test_trace_check_reports_unclean_stop_as_incomplete(tmp_path):
    from raft.cli.bench import check_traces

    paths = {i: str(tmp_path / f"node{i}.ndjson") for i in (1, 2, 3)}
    r = check_traces(paths, {1: 0, 2: -9, 3: 0})
    assert r["verdict"] == "incomplete" and "node 2 exit -9" in r["detail"]
    r = check_traces(paths, {1: 0, 2: 0, 3: 0})          # files missing
    assert r["verdict"] == "incomplete"
