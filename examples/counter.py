"""A replicated counter, PySyncObj style, on raft.embed.

    python examples/counter.py --cluster 3

starts 3 node processes on loopback. Each one increments the counter 100 times
through the Raft log (a follower's calls are forwarded to the leader), exactly once
each; then this process reads the total linearizably: 300.
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

from raft.embed import EmbeddedNode, StateMachine, query, replicated  # noqa: E402
from raft.embed.codec import pack, unpack  # noqa: E402
from raft.embed.launch import example_main  # noqa: E402

PER_NODE = 100


class Counter(StateMachine):
    def __init__(self) -> None:
        self.value = 0
        self.by_node: dict[int, int] = {}

    @replicated
    def incr(self, node: int, n: int = 1) -> int:
        self.value += n
        self.by_node[node] = self.by_node.get(node, 0) + n
        return self.value

    @query
    def get(self) -> list:
        return [self.value, self.by_node]

    def snapshot(self) -> bytes:
        return pack([self.value, self.by_node])

    def restore(self, data: bytes) -> None:
        self.value, self.by_node = unpack(data)


async def work(node: EmbeddedNode) -> None:
    """Runs inside every node process."""
    counter = node.machines["Counter"]
    await node.wait_leader(30)
    await asyncio.gather(*(counter.incr(node.id) for _ in range(PER_NODE)))


async def demo(client, cluster, args) -> None:
    expected = PER_NODE * len(cluster.nodes)
    while True:
        value, by_node = await client.query("Counter", "get")
        if value >= expected:
            break
        await asyncio.sleep(0.1)
    print(f"counter = {value} (per node: {by_node})")
    print(f"one more increment from here: {await client.call('Counter', 'incr', 0)}")


if __name__ == "__main__":
    example_main(__doc__.splitlines()[0], Counter, demo, work=work)
