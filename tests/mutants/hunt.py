"""Measure seeds-to-catch for each planted bug (the table in docs/testing.md).

    python tests/mutants/hunt.py --seeds 0-4999 [--sim OTHER_SIM.py] [--work DIR] [NAME ...]

Each mutant's core is built once under --work (kept between runs), then the
simulator (3 nodes, 300 steps, trace-checked, membership draws on for
MEMBERSHIP_MUTANTS: what tests/test_mutants.py runs)
goes through the seeds in order until one fails. --sim swaps in a one-file
simulator (an older one: `git show REV:raft/sim.py > old.py`, from before it became
the package raft/testing/sim/) to compare simulators on the same mutants. Prints one line per mutant: name, first failing
seed (or "survived") and the violation; with --all, also how many seeds of the
range catch it.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from mutants import MEMBERSHIP_MUTANTS, MUTANTS  # noqa: E402
from test_mutants import BUILD, _copy_sources  # noqa: E402

HUNT = """
import importlib, sys
run = importlib.import_module(sys.argv[2]).run
every = sys.argv[3] == "all"
kw = {"membership": True} if sys.argv[4] == "membership" else {}
lo, hi = map(int, sys.argv[1].split("-"))
first, caught = None, 0
for seed in range(lo, hi + 1):
    res = run(seed, nodes=3, steps=300, **kw)
    if not res.ok:
        caught += 1
        if first is None:
            first = (seed, res.violations[0][:200].replace(chr(10), " "))
        if not every:
            break
if first is None:
    print("survived")
    sys.exit(0)
rate = f" (caught by {caught} of {hi - lo + 1} seeds)" if every else ""
print(f"{first[0]}{rate} {first[1]}")
sys.exit(1)
"""

def build(name: str, work: str) -> str:
    d = os.path.join(work, name)
    if os.path.exists(os.path.join(d, ".built")):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    _copy_sources(d)
    patch = os.path.join(HERE, f"{name}.patch")
    subprocess.run(["git", "apply", "--whitespace=nowarn", patch], cwd=d, check=True)
    subprocess.run([sys.executable, "-c", BUILD], cwd=d, check=True, capture_output=True)
    open(os.path.join(d, ".built"), "w").close()
    return d


def hunt(d: str, seeds: str, sim: str | None, every: bool = False, membership: bool = False) -> str:
    # Each simulator under its own module name, so hunts with different ones can
    # share a build at the same time.
    module = "raft.testing.sim"
    if sim is not None:     # a one-file simulator (raft/sim.py before it became a package)
        src = os.path.abspath(sim)
        module = "raft.sim_" + hashlib.sha1(src.encode()).hexdigest()[:10]
        shutil.copy(src, os.path.join(d, "raft", module.split(".")[1] + ".py"))
    out = subprocess.run([sys.executable, "-c", HUNT, seeds, module,
                          "all" if every else "first", "membership" if membership else "plain"], cwd=d, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=d))
    if out.returncode not in (0, 1):
        return "error " + out.stderr[-300:]
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-4999")
    ap.add_argument("--sim", default=None)
    ap.add_argument("--work", default="/tmp/raft-mutants")
    ap.add_argument("--all", action="store_true",
                    help="run every seed of the range and count those that catch the mutant")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    for name, _, _, _ in MUTANTS:
        if a.names and name not in a.names:
            continue
        print(f"{name}: {hunt(build(name, a.work), a.seeds, a.sim, a.all, name in MEMBERSHIP_MUTANTS)}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
