"""In-process cluster of EmbeddedNodes for tests: n nodes on one event loop, real TCP
on 127.0.0.1, real DiskStorage in tmp dirs (raft.testing.inproc, as test_node.py's Cluster)."""
from __future__ import annotations

import secrets
from typing import Any, Callable

from raft.config import NodeConfig
from raft.embed import EmbeddedNode, NotLeader, CallTimeout, StateMachine
from raft.testing.inproc import InProcessCluster, run as _run, wait_until as _wait_until

HOST = "127.0.0.1"
# Each cluster adds a random suffix: a node another test left behind can never join it
# through a reused port.
SECRET = b"embed-test-secret-0123456789abcdef"
TIME_LIMIT = 90.0


def run(coro: Any, limit: float = TIME_LIMIT) -> Any:
    return _run(coro, limit)


async def wait_until(pred: Callable[[], bool], timeout: float = 15.0,
                     what: str = "condition") -> None:
    await _wait_until(pred, timeout, what)


class EmbedCluster(InProcessCluster[EmbeddedNode]):
    """n EmbeddedNodes (raft.testing.inproc); ``make(i)`` builds node i's machines (a list)."""

    def __init__(self, tmp_path: Any, make: Callable[[int], list[StateMachine]], n: int = 3,
                 durability: str = "none", node_kw: dict[str, Any] | None = None,
                 **cfg: Any) -> None:
        super().__init__(tmp_path, self._new_node, lambda node: node.read(),
                         (NotLeader, CallTimeout, TimeoutError),
                         n=n, secret=SECRET + secrets.token_hex(8).encode(),
                         durability=durability, **cfg)
        self.make = make
        self.node_kw = node_kw or {}
        self.machines: dict[int, list[StateMachine]] = {}

    def _new_node(self, i: int, config: NodeConfig) -> EmbeddedNode:
        ms = self.make(i)
        self.machines[i] = ms
        return EmbeddedNode(config, ms, **self.node_kw)

    async def leader(self, timeout: float = 20.0) -> EmbeddedNode:
        return await super().leader(timeout)


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
