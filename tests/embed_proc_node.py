"""One node of tests/test_embed_process.py: a Journal state machine (appends values,
returns the position) served by raft.embed.launch.serve."""
from __future__ import annotations

import argparse
import glob
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(_ROOT, "raft", "_core.*.so")) \
        or glob.glob(os.path.join(_ROOT, "raft", "_core.*.pyd")):
    sys.path.insert(0, _ROOT)   # a source checkout built in place; else the installed raft

from raft.embed import StateMachine, query, replicated  # noqa: E402
from raft.embed.codec import pack, unpack  # noqa: E402
from raft.embed.launch import serve  # noqa: E402


class Journal(StateMachine):
    def __init__(self) -> None:
        self.items: list = []

    @replicated
    def add(self, x):
        self.items.append(x)
        return len(self.items)

    @query
    def all(self):
        return list(self.items)

    def snapshot(self) -> bytes:
        return pack(self.items)

    def restore(self, data: bytes) -> None:
        self.items = unpack(data)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--node-config", required=True)
    serve(p.parse_args().node_config, Journal)
