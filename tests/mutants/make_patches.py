"""Regenerate tests/mutants/*.patch from mutants.py against the current core sources.

    python tests/mutants/make_patches.py

The core is one extension built from raft/_core.pyx, which includes its parts
from raft/core/*.pxi: each mutant's old text must occur exactly once across all
of them, and its patch changes the file that holds it.
"""
import difflib
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from mutants import MUTANTS  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def core_sources() -> list[str]:
    """The core's source files, relative to the repository root."""
    parts = sorted(glob.glob(os.path.join(ROOT, "raft", "core", "*.pxi")))
    return ["raft/_core.pyx", "raft/_core.pxd"] + [os.path.relpath(p, ROOT) for p in parts]


def read_sources() -> dict[str, str]:
    out = {}
    for rel in core_sources():
        with open(os.path.join(ROOT, rel)) as f:
            out[rel] = f.read()
    return out


def locate(sources: dict[str, str], old: str) -> tuple[str | None, int]:
    """The file holding ``old`` and how many times it occurs across all sources."""
    where, total = None, 0
    for rel, text in sources.items():
        n = text.count(old)
        if n:
            where = rel
            total += n
    return where, total


def main() -> int:
    sources = read_sources()
    for name, why, old, new in MUTANTS:
        where, count = locate(sources, old)
        if count != 1:
            print(f"{name}: the text to mutate occurs {count} times in the core sources "
                  f"({', '.join(sources)})")
            return 1
        original = sources[where]
        mutated = original.replace(old, new)
        diff = difflib.unified_diff(original.splitlines(True), mutated.splitlines(True),
                                    fromfile=f"a/{where}", tofile=f"b/{where}")
        with open(os.path.join(os.path.dirname(__file__), f"{name}.patch"), "w") as f:
            f.write(f"# {why}\n")
            f.writelines(diff)
        print(f"wrote {name}.patch ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
