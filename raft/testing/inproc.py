"""An in-process cluster: ``n`` nodes on the running event loop, real TCP on 127.0.0.1
and real ``DiskStorage`` under one directory. The tests of ``RaftNode`` and of
``raft.embed``, and benchmarks/bench_snapshot.py, build on it; the node type is theirs
(``make_node``), as is how a leader proves it leads a working majority (``confirm``).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable, Coroutine, Generic, Protocol, TypeVar

from raft.config import NodeConfig, PeerAddress
from raft.net.transport import new_event_loop
from raft.testing.cluster import LOCALHOST, free_ports

__all__ = ["InProcessCluster", "run", "wait_until"]

T = TypeVar("T")


class _Node(Protocol):
    id: int

    @property
    def is_leader(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


N = TypeVar("N", bound=_Node)


def run(coro: Coroutine[Any, Any, T], limit: float) -> T:
    """Run ``coro`` on a fresh (uvloop) loop, failing it after ``limit`` seconds."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro, limit))


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Poll ``pred`` until it holds; AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class InProcessCluster(Generic[N]):
    """``n`` nodes with generated configs; nodes can be stopped and restarted from disk.

    make_node(i, config): build node i (not started). confirm(node): an awaitable that
    succeeds only on a leader of a working majority (a read barrier); ``retry_on``: the
    errors it raises otherwise. ``cfg``: more NodeConfig settings (election_ticks 20 and
    heartbeat_ticks 2 unless given).
    """

    def __init__(self, directory: str | os.PathLike[str], make_node: Callable[[int, NodeConfig], N],
                 confirm: Callable[[N], Awaitable[Any]], retry_on: tuple[type[BaseException], ...],
                 *, n: int = 3, secret: bytes, durability: str = "none", **cfg: Any) -> None:
        ports = free_ports(2 * n, LOCALHOST)
        self.peers = {i: PeerAddress((LOCALHOST, ports[i - 1]), (LOCALHOST, ports[n + i - 1]))
                      for i in range(1, n + 1)}
        cfg.setdefault("election_ticks", 20)
        cfg.setdefault("heartbeat_ticks", 2)
        self.configs = {i: NodeConfig(node_id=i, peers=self.peers,
                                      data_dir=os.path.join(os.fspath(directory), f"node{i}"),
                                      secret=secret, durability=durability, **cfg)
                        for i in self.peers}
        self.nodes: dict[int, N] = {}
        self._make_node = make_node
        self._confirm = confirm
        self._retry_on = retry_on

    async def start(self, *ids: int) -> None:
        """Start the nodes ``ids`` (default: all), each from what its data dir holds."""
        for i in ids or tuple(self.configs):
            node = self._make_node(i, self.configs[i])
            await node.start()
            self.nodes[i] = node

    async def stop(self, i: int) -> None:
        await self.nodes.pop(i).stop()

    async def close(self) -> None:
        for i in list(self.nodes):
            await self.stop(i)

    async def leader(self, timeout: float = 15.0) -> N:
        """A leader that passes ``confirm`` (so it leads a working majority)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for node in list(self.nodes.values()):
                if node.is_leader:
                    try:
                        await asyncio.wait_for(self._confirm(node), 2.0)
                        return node
                    except self._retry_on:
                        pass
            await asyncio.sleep(0.02)
        raise AssertionError("no leader elected")

    def followers(self, leader: N) -> list[N]:
        return [node for i, node in self.nodes.items() if i != leader.id]
