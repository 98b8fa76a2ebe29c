"""Regenerate tests/mutants/*.patch from mutants.py against the current raft/_core.pyx.

    python tests/mutants/make_patches.py
"""
import difflib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from mutants import MUTANTS  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SOURCE = "raft/_core.pyx"


def main() -> int:
    with open(os.path.join(ROOT, SOURCE)) as f:
        original = f.read()
    for name, why, old, new in MUTANTS:
        if original.count(old) != 1:
            print(f"{name}: the text to mutate occurs {original.count(old)} times in {SOURCE}")
            return 1
        mutated = original.replace(old, new)
        diff = difflib.unified_diff(original.splitlines(True), mutated.splitlines(True),
                                    fromfile=f"a/{SOURCE}", tofile=f"b/{SOURCE}")
        with open(os.path.join(os.path.dirname(__file__), f"{name}.patch"), "w") as f:
            f.write(f"# {why}\n")
            f.writelines(diff)
        print(f"wrote {name}.patch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
