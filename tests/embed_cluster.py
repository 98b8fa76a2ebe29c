"""In-process cluster of EmbeddedNodes for tests: n nodes on one event loop, real TCP
on 127.0.0.1, real DiskStorage in tmp dirs (like test_node.py's Cluster)."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from raft.config import NodeConfig, PeerAddress
from raft.embed import EmbeddedNode, NotLeader, CallTimeout, StateMachine
from raft.net.transport import new_event_loop
from raft.server_cli import free_ports

HOST = "127.0.0.1"
SECRET = b"embed-test-secret-0123456789abcdef"
TIME_LIMIT = 90.0


def run(coro: Any, limit: float = TIME_LIMIT) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro, limit))


async def wait_until(pred: Callable[[], bool], timeout: float = 15.0,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class EmbedCluster:
    """n EmbeddedNodes; ``make(i)`` builds node i's machines (a list)."""

    def __init__(self, tmp_path: Any, make: Callable[[int], list[StateMachine]], n: int = 3,
                 durability: str = "none", node_kw: dict[str, Any] | None = None,
                 **cfg: Any) -> None:
        ports = free_ports(2 * n, HOST)
        self.peers = {i: PeerAddress((HOST, ports[i - 1]), (HOST, ports[n + i - 1]))
                      for i in range(1, n + 1)}
        cfg.setdefault("election_ticks", 20)
        cfg.setdefault("heartbeat_ticks", 2)
        self.configs = {i: NodeConfig(node_id=i, peers=self.peers,
                                      data_dir=str(tmp_path / f"node{i}"), secret=SECRET,
                                      durability=durability, **cfg)
                        for i in self.peers}
        self.make = make
        self.node_kw = node_kw or {}
        self.nodes: dict[int, EmbeddedNode] = {}
        self.machines: dict[int, list[StateMachine]] = {}

    async def start(self, *ids: int) -> None:
        for i in ids or tuple(self.configs):
            ms = self.make(i)
            node = EmbeddedNode(self.configs[i], ms, **self.node_kw)
            await node.start()
            self.nodes[i], self.machines[i] = node, ms

    async def stop(self, i: int) -> None:
        await self.nodes.pop(i).stop()

    async def close(self) -> None:
        for i in list(self.nodes):
            await self.stop(i)

    async def leader(self, timeout: float = 20.0) -> EmbeddedNode:
        """A leader that serves a read barrier (it leads a working majority)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for node in list(self.nodes.values()):
                if node.is_leader:
                    try:
                        await asyncio.wait_for(node.read(), 2.0)
                        return node
                    except (NotLeader, CallTimeout, TimeoutError):
                        pass
            await asyncio.sleep(0.02)
        raise AssertionError("no leader elected")

    def followers(self, leader: EmbeddedNode) -> list[EmbeddedNode]:
        return [n for i, n in self.nodes.items() if i != leader.id]


def with_cluster(tmp_path: Any, make: Callable[[int], list[StateMachine]], body: Any,
                 n: int = 3, limit: float = TIME_LIMIT, **kw: Any) -> Any:
    async def main() -> Any:
        c = EmbedCluster(tmp_path, make, n, **kw)
        try:
            await c.start()
            return await body(c)
        finally:
            await c.close()
    return run(main(), limit)
