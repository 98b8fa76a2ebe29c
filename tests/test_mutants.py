"""Planted bugs (tests/mutants/*.patch) must each be caught: the patched core is
built in a temporary directory and the simulator, with every run's trace
checked against the spec, runs over a seed budget until it fails. The membership
mutants (tests/mutants/mutants.py: MEMBERSHIP_MUTANTS) run with membership draws on."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mutants

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PATCHES = sorted(glob.glob(os.path.join(ROOT, "tests", "mutants", "*.patch")))
SEEDS = "0-299"

sys.path.insert(0, os.path.join(ROOT, "tests", "mutants"))
from mutants import MEMBERSHIP_MUTANTS  # noqa: E402

BUILD = """
from setuptools import setup, Extension
from Cython.Build import cythonize
setup(script_args=["build_ext", "--inplace", "-q"],
      ext_modules=cythonize([Extension("raft._core", ["raft/_core.pyx"], extra_compile_args=["-O0"])],
                            language_level=3, quiet=True,
                            compiler_directives={"wraparound": False, "cdivision": True}))
"""


# Run the simulator (with trace checking) over the seed budget and stop at the
# first failing seed. Only raft._core is rebuilt in the mutant's directory, so
# this imports raft.testing.sim directly rather than the CLI (which loads the network
# modules too).
HUNT = """
import sys
from raft.testing.sim import run
lo, hi = map(int, sys.argv[1].split("-"))
membership = sys.argv[2] == "membership"
for seed in range(lo, hi + 1):
    res = run(seed, nodes=3, steps=300, membership=membership)
    if not res.ok:
        print(res.summary())
        print(f"caught at seed {seed}", file=sys.stderr)
        sys.exit(1)
print("survived")
"""


def _copy_sources(dst: str) -> None:
    ignore = shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__", "build")
    shutil.copytree(os.path.join(ROOT, "raft"), os.path.join(dst, "raft"), ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "spec"), os.path.join(dst, "spec"), ignore=ignore)


def test_there_are_at_least_six_mutants():
    assert len(PATCHES) >= 6


@pytest.mark.parametrize("patch", PATCHES, ids=[os.path.basename(p)[:-6] for p in PATCHES])
def test_mutant_is_caught(patch, tmp_path):
    pytest.importorskip("Cython")
    work = str(tmp_path)
    _copy_sources(work)
    applied = subprocess.run(["git", "apply", "--whitespace=nowarn", patch], cwd=work,
                             capture_output=True, text=True)
    assert applied.returncode == 0, (f"{os.path.basename(patch)} no longer applies to the core sources: "
                                     f"regenerate with python tests/mutants/make_patches.py\n{applied.stderr}")
    built = subprocess.run([sys.executable, "-c", BUILD], cwd=work, capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=work)
    name = os.path.basename(patch)[:-6]
    mode = "membership" if name in MEMBERSHIP_MUTANTS else "plain"
    run = subprocess.run([sys.executable, "-c", HUNT, SEEDS, mode], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 1, (f"mutant {os.path.basename(patch)} survived seeds {SEEDS}:\n"
                                 + run.stdout[-2000:] + run.stderr[-2000:])
    first = run.stdout.splitlines()[0]
    print(f"\n{os.path.basename(patch)}: caught -> {first[:300]}")
