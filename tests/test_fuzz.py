"""Run each coverage-guided fuzz harness in tests/fuzz/ for a short, bounded time
(docs/torture.md, "Fuzzing"). A failing property makes libFuzzer stop with a crash
file; the test then fails showing the harness output, the seed and the input."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris; "
                    "it is in the 'test' extra)")

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
SECONDS = int(os.environ.get("RAFT_FUZZ_SECONDS", "10"))


@pytest.mark.parametrize("target", ["codec", "resp", "kv", "wal"])
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("RAFT_FUZZ_SEED", random.randrange(1, 1 << 31)))
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    (tmp_path / "tmp").mkdir()
    # TMPDIR: the WAL harness's scratch directories go under pytest's tmp_path
    # raft comes from the installed package (or the caller's PYTHONPATH): the source
    # tree has no compiled core after `pip install .`.
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    cmd = [sys.executable, str(FUZZ / f"fuzz_{target}.py"), f"-seed={seed}",
           f"-max_total_time={SECONDS}", "-timeout=60", "-rss_limit_mb=1024",
           f"-artifact_prefix={tmp_path}/", str(scratch), str(FUZZ / "corpus" / target)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=SECONDS * 10 + 120)
    out = proc.stdout + proc.stderr
    crashes = [p for p in tmp_path.iterdir() if p.is_file()]   # crash-*, timeout-*, oom-*
    detail = "".join(f"\n{p.name}: {p.read_bytes()[:400]!r}" for p in crashes)
    assert proc.returncode == 0 and not crashes, (
        f"fuzz_{target} failed (seed {seed}, rerun: RAFT_FUZZ_SEED={seed}; "
        f"{' '.join(cmd)}):{detail}\n{out[-4000:]}")
    assert "Done" in out and "INITED" in out, f"fuzz_{target} did not run (seed {seed}):\n{out[-2000:]}"
