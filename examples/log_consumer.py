"""A log consumer: read the committed Raft log in order with EmbeddedNode.tail.

    python examples/log_consumer.py --cluster 3

starts 3 node processes running an event log; this process publishes events through
the cluster, and node 1 consumes every committed call in order with
``async for entry in node.tail(cursor)``, saving its cursor to a file after each
entry so a restarted consumer resumes where it stopped (and learns, with
LogCompacted, if the log was compacted past it). Node 1's consumer output is printed
at the end.
"""
from __future__ import annotations

import asyncio
import glob
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(_ROOT, "raft", "_core.*.so")) \
        or glob.glob(os.path.join(_ROOT, "raft", "_core.*.pyd")):
    sys.path.insert(0, _ROOT)   # a source checkout built in place; else the installed raft

from raft.embed import EmbeddedNode, LogCompacted, StateMachine, query, replicated  # noqa: E402
from raft.embed.codec import pack, unpack  # noqa: E402
from raft.embed.launch import example_main  # noqa: E402

EVENTS = 20


class Events(StateMachine):
    def __init__(self) -> None:
        self.count = 0

    @replicated
    def publish(self, topic: str, payload: dict) -> int:
        self.count += 1
        return self.count

    @query
    def published(self) -> int:
        return self.count

    def snapshot(self) -> bytes:
        return pack(self.count)

    def restore(self, data: bytes) -> None:
        self.count = unpack(data)


async def work(node: EmbeddedNode) -> None:
    if node.id != 1:
        return
    data_dir = node.config.data_dir
    cursor_file = os.path.join(data_dir, "consumer.cursor")
    out = open(os.path.join(data_dir, "consumer.out"), "a", encoding="utf-8")
    cursor = int(open(cursor_file).read()) if os.path.exists(cursor_file) else 1
    try:
        async for e in node.tail(cursor):
            out.write(f"#{e.index} term {e.term} {e.name}{tuple(e.args)}\n")
            out.flush()
            with open(cursor_file + ".tmp", "w") as fp:   # resume point survives restarts
                fp.write(str(e.index + 1))
            os.replace(cursor_file + ".tmp", cursor_file)
    except LogCompacted as exc:
        out.write(f"compacted: {exc}\n")
        out.flush()


async def demo(client, cluster, args) -> None:
    for i in range(EVENTS):
        await client.call("Events", "publish", "orders", {"order": i, "qty": i % 3 + 1})
    out_path = os.path.join(cluster.nodes[1].config.data_dir, "consumer.out")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    lines: list[str] = []
    while loop.time() < deadline:
        if os.path.exists(out_path):
            lines = open(out_path).read().splitlines()
            if len(lines) >= EVENTS:
                break
        await asyncio.sleep(0.1)
    print(f"node 1 consumed {len(lines)} entries:")
    print("\n".join(lines))


if __name__ == "__main__":
    example_main(__doc__.splitlines()[0], Events, demo, work=work)
