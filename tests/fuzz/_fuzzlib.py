"""Shared start-up for the atheris harnesses in tests/fuzz/ (see docs/torture.md, "Fuzzing").

``main(name, test_one_input)`` hands sys.argv to libFuzzer. When the command line
names no corpus directory, the seed corpus ``tests/fuzz/corpus/<name>/`` is read
*after* a fresh temporary directory: libFuzzer writes the inputs it finds into the
first directory, so the checked-in seeds stay small and unchanged.
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Callable

import atheris

CORPUS_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def corpus_dir(name: str) -> str:
    return os.path.join(CORPUS_ROOT, name)


def _with_default_corpus(argv: list[str], name: str) -> list[str]:
    if any(not a.startswith("-") for a in argv[1:]):
        return argv  # the caller chose the corpus directories
    scratch = tempfile.mkdtemp(prefix=f"fuzz-{name}-")
    return argv + [scratch, corpus_dir(name)]


def main(name: str, test_one_input: Callable[[bytes], None]) -> None:
    atheris.Setup(_with_default_corpus(list(sys.argv), name), test_one_input)
    atheris.Fuzz()
