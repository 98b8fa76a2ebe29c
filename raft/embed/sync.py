"""SyncNode: the synchronous facade of EmbeddedNode for threaded programs.

The node runs on its own event loop in a background thread; every method here blocks
the calling thread until the loop has the answer. ``@replicated`` methods of the
attached machines block too when called from any thread but the loop's::

    counter = Counter()
    node = SyncNode(load_config("node1.toml"), counter)
    node.start()
    counter.incr(5)                    # blocks; returns the new value
    node.read(lambda: counter.value)   # linearizable
    node.stop()

Machine state must only be read through ``read``/``read_stale`` (which run ``fn`` on
the loop thread, where the log is applied).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterable

from raft.config import NodeConfig
from raft.embed.api import EmbeddedNode
from raft.embed.machine import StateMachine
from raft.net.transport import new_event_loop

__all__ = ["SyncNode"]


class SyncNode:
    """Blocking wrapper around an EmbeddedNode running on a private loop thread."""

    def __init__(self, config: NodeConfig, machines: StateMachine | Iterable[StateMachine],
                 **kwargs: Any) -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"raft-embed-{config.node_id}",
                                        daemon=True)
        self.node = EmbeddedNode(config, machines, **kwargs)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _do(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.node._sync_thread = self._thread.ident
        self._do(self.node.start())

    def stop(self) -> None:
        try:
            self._do(self.node.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> "SyncNode":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def id(self) -> int:
        return self.node.id

    @property
    def is_leader(self) -> bool:
        return self.node.is_leader

    @property
    def leader_id(self) -> int:
        return self.node.leader_id

    def call(self, machine: StateMachine | str, name: str, *args: Any,
             timeout: float | None = None, **kwargs: Any) -> Any:
        return self._do(self.node.call(machine, name, *args, timeout=timeout, **kwargs))

    def submit(self, value: Any, machine: StateMachine | str | None = None) -> Any:
        return self._do(self.node.submit(value, machine))

    def read(self, fn: Callable[[], Any] | None = None) -> Any:
        """Linearizable read (ReadIndex); ``fn`` runs on the loop thread."""
        return self._do(self.node.read(fn))

    def read_stale(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()
        return self._do(run())

    def wait_leader(self, timeout: float = 10.0) -> int:
        return self._do(self.node.wait_leader(timeout))

    def wait_applied(self, index: int, timeout: float = 10.0) -> bool:
        return self._do(self.node.wait_applied(index, timeout))

    def on_leader_change(self, cb: Callable[[Any], None]) -> Callable[[], None]:
        """``cb`` runs on the loop thread."""
        return self.node.on_leader_change(cb)

    def status(self) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            return self.node.status()
        return self._do(run())
