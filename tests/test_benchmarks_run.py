"""Issue 15 item 11: every benchmark command the README and docs show runs after the
README's install (``pip install .``), from any directory.

After ``pip install .`` the source tree has no compiled core (``raft/_core*.so``), so a
script that puts the source tree first on ``sys.path`` fails with ``No module named
'raft._core'``. The test reproduces that: it copies the scripts next to a copy of the
``raft`` sources *without* the compiled extensions, and runs them from another
directory with the real package (the one this test imported) on PYTHONPATH.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import raft

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))
# A quick mode for each script the docs run; compare.py drives other systems (Redis,
# PySyncObj) for minutes, so only its command line is checked.
QUICK_ARGS = {"compare.py": ["--help"]}


def test_scripts_found():
    assert {"bench_core.py", "bench_storage.py", "bench_snapshot.py", "bench_codec.py",
            "bench_checker.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_sys_path_hacks_and_nothing_from_tests(script):
    tree = ast.parse((BENCHMARKS / script).read_text(), script)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            pytest.fail(f"{script}:{node.lineno}: uses sys.path (imports must come from the "
                        "installed package)")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert not (top.startswith("test_") or top in ("tests", "harness", "conftest")), \
                    f"{script}:{node.lineno}: imports {name} from the test suite"


@pytest.fixture(scope="module")
def bare_tree(tmp_path_factory):
    """A copy of the source tree as ``pip install .`` leaves it: sources, no compiled
    extensions, no build directory."""
    d = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("*.so", "*.pyd", "*.c", "*.html", "__pycache__")
    for sub in ("raft", "spec", "benchmarks"):
        shutil.copytree(ROOT / sub, d / sub, ignore=ignore)
    assert not list((d / "raft").glob("_core*.so"))
    return d


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_against_the_installed_package(script, bare_tree, tmp_path):
    installed = str(Path(raft.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=installed)
    args = QUICK_ARGS.get(script, ["--quick"])
    done = subprocess.run([sys.executable, str(bare_tree / "benchmarks" / script), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} {args}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
