"""ClusterClient: call a cluster's embedded state machines from another process.

It speaks the embed RPC (raft/embed/rpc.py) to whichever node leads, follows
NotLeader redirects, and retries a call whose outcome is unknown (a dropped
connection, a dead leader, a timeout) on the next node with the same session and
sequence number, so the call is applied at most once and the retry returns its
first result.
"""
from __future__ import annotations

import asyncio
from typing import Any

from raft.embed.api import FORWARD_TRY_TIMEOUT, RETRY_PAUSE, ClientSession
from raft.embed.codec import DecodeError, check_args
from raft.embed.errors import CallTimeout, EmbedError, decode_outcome
from raft.embed.rpc import ST_BAD, ST_NOT_LEADER, ST_OK, ConnectionPool
from raft.net.auth import AuthError

__all__ = ["ClusterClient"]


class ClusterClient:
    """``nodes``: node id -> (host, port) of each node's embed RPC (its config's client
    address); ``secret``: the cluster secret."""

    def __init__(self, nodes: dict[int, tuple[str, int]], secret: bytes, *,
                 timeout: float = 10.0, try_timeout: float = FORWARD_TRY_TIMEOUT,
                 window: int = 1024) -> None:
        if not nodes:
            raise ValueError("no nodes")
        self.nodes = dict(nodes)
        self.timeout = timeout
        self.window = window   # calls in flight: at most the nodes' session_window
        self.try_timeout = try_timeout
        self._pool = ConnectionPool(self.nodes, secret)
        self._order = sorted(self.nodes)
        self._leader = self._order[0]
        self.session: ClientSession | None = None
        self._opening: asyncio.Task[ClientSession] | None = None
        self.redirects = 0
        self.retries = 0

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        await self._pool.close()

    async def open_session(self) -> ClientSession:
        if self.session is not None:
            return self.session
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open())
        self.session = await asyncio.shield(self._opening)
        return self.session

    async def _open(self) -> ClientSession:
        loop = asyncio.get_running_loop()
        out = await self._request(loop.time() + self.timeout, "open")
        return ClientSession(int(decode_outcome(out)), self.window)

    async def call(self, target: str, name: str, *args: Any, timeout: float | None = None,
                   version: int = 1, **kwargs: Any) -> Any:
        """Call ``target.name(*args, **kwargs)`` (a @replicated method) through the log."""
        sess = await self.open_session()
        async with sess.call_slot() as seq:
            return await self.invoke(target, name, list(args), kwargs, seq=seq,
                                     timeout=timeout, version=version)

    async def invoke(self, target: str, name: str, args: list[Any], kwargs: dict[str, Any], *,
                     seq: int, timeout: float | None = None, version: int = 1) -> Any:
        """One call under this client's session with an explicit ``seq``; calling it
        again with a seq that was applied returns the first result (exactly once)."""
        check_args(tuple(args), kwargs, f"{target}.{name}")
        sess = await self.open_session()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        out = await self._request(deadline, "call", version, sess.id, seq, sess.ack, target,
                                  name, args, kwargs)
        return decode_outcome(out)

    async def query(self, target: str, name: str, *args: Any, timeout: float | None = None,
                    **kwargs: Any) -> Any:
        """Run a @query method on the leader after a ReadIndex barrier (linearizable)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        return decode_outcome(await self._request(deadline, "query", target, name,
                                                  list(args), kwargs))

    async def leader(self) -> int:
        """The leader some node knows of (0: none yet); it becomes the next target."""
        for node in [self._leader] + [n for n in self._order if n != self._leader]:
            try:
                status, payload = await self._pool.request(node, "leader",
                                                           timeout=self.try_timeout)
            except (OSError, AuthError, TimeoutError, DecodeError):
                self._pool.drop(node)
                continue
            if status == ST_OK and isinstance(payload, list) and payload and payload[0]:
                if payload[0] in self.nodes:
                    self._leader = payload[0]
                return int(payload[0])
        return 0

    async def _request(self, deadline: float, op: str, *fields: Any) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise CallTimeout(f"{op} not answered in time; the outcome is unknown")
            node = self._leader
            try:
                status, payload = await self._pool.request(
                    node, op, *fields, timeout=min(remaining, self.try_timeout))
            except (OSError, AuthError, TimeoutError, DecodeError):
                self._pool.drop(node)
                self._next_node(node)
                self.retries += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if status == ST_OK and isinstance(payload, bytes):
                return payload
            if status == ST_NOT_LEADER:
                lid = payload[0] if isinstance(payload, list) and payload else 0
                self.redirects += 1
                if lid in self.nodes and lid != node:
                    self._leader = lid
                else:
                    self._next_node(node)
                    await asyncio.sleep(RETRY_PAUSE)
                continue
            if status == ST_BAD:
                raise EmbedError(f"node {node} rejected the request: {payload}")
            self.retries += 1   # ST_RETRY: not answered in time there
            await asyncio.sleep(RETRY_PAUSE)

    def _next_node(self, node: int) -> None:
        i = self._order.index(node)
        self._leader = self._order[(i + 1) % len(self._order)]
