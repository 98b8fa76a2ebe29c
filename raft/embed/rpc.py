"""The embed RPC: callers in other processes (and followers forwarding to the leader)
reach a node's state machines over one TCP connection per node.

It listens on the node config's *client* address (RESP is off in an embedded node).
A connection starts with the cluster's HMAC challenge-response handshake
(raft.net.auth, the peers' own), so only holders of the cluster secret can submit
commands; then both sides exchange frames: a 4-byte big-endian length and a msgpack
array (never pickle). Requests are ``[op, req_id, ...]`` and may be pipelined;
responses ``[req_id, status, payload]`` come back as each completes.

==========  ==========================================================  ===============
op          fields                                                      OK payload
==========  ==========================================================  ===============
"call"      version, client_id, seq, ack, target, name, args, kwargs   outcome bytes
"open"      (none): opens a client session                             outcome bytes
"query"     target, name, args, kwargs: a @query method after ReadIndex outcome bytes
"readindex" (none): a ReadIndex barrier on the leader (diss. §6.4.1)    an applied index
"leader"    (none)                                                     [leader id, addr]
==========  ==========================================================  ===============

Status: 0 OK; 1 not the leader (payload ``[leader_id, "host:port" or None]``); 2 not
answered in time, outcome unknown: retry (same session and seq); 3 a bad request.
A node proposes only what it receives as leader: it never forwards a forwarded call
(no loops); the caller follows the redirect.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from typing import TYPE_CHECKING, Any

from raft.embed.errors import NotLeader
from raft.embed.codec import OP_CALL, OP_OPEN, DecodeError, EncodeError, pack, unpack
from raft.net.auth import AuthError, client_handshake, server_handshake

if TYPE_CHECKING:
    from raft.embed.api import EmbeddedNode

__all__ = ["RpcServer", "RpcConnection", "ConnectionPool", "ST_OK", "ST_NOT_LEADER",
           "ST_RETRY", "ST_BAD", "MAX_FRAME"]

log = logging.getLogger("raft.embed.rpc")

ST_OK, ST_NOT_LEADER, ST_RETRY, ST_BAD = 0, 1, 2, 3
MAX_FRAME = 64 << 20
_LEN = struct.Struct(">I")
#: The node id an external caller (not a voter) authenticates as.
EXTERNAL_CLIENT_ID = 0


def frame(value: Any) -> bytes:
    body = pack(value, "an RPC frame")
    return _LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (n,) = _LEN.unpack(await reader.readexactly(4))
    if n > MAX_FRAME:
        raise DecodeError(f"RPC frame of {n} bytes is over the {MAX_FRAME} limit")
    return unpack(await reader.readexactly(n), "an RPC frame")


class RpcServer:
    """Serves the embed RPC for one EmbeddedNode."""

    def __init__(self, node: "EmbeddedNode", host: str, port: int) -> None:
        self.node = node
        self.host, self.port = host, port
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.node.config
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns.add(writer)
        try:
            await server_handshake(reader, writer, secret=cfg.secret, node_id=cfg.node_id,
                                   allowed_peers=set(cfg.voters) | {EXTERNAL_CLIENT_ID})
            while True:
                req = await read_frame(reader)
                t = asyncio.create_task(self._answer(req, writer))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
        except (AuthError, DecodeError) as e:
            log.warning("node %d: embed RPC connection dropped: %s", cfg.node_id, e)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _answer(self, req: Any, writer: asyncio.StreamWriter) -> None:
        req_id = req[1] if isinstance(req, list) and len(req) > 1 else None
        try:
            status, payload = await self._dispatch(req)
        except (TypeError, ValueError, IndexError, EncodeError) as e:
            status, payload = ST_BAD, f"bad request: {e}"
        except asyncio.CancelledError:
            raise
        except Exception as e:  # answer rather than leave the caller to time out
            log.exception("node %d: embed RPC request failed", self.node.config.node_id)
            status, payload = ST_BAD, f"{type(e).__name__}: {e}"
        if not writer.is_closing():
            writer.write(frame([req_id, status, payload]))

    async def _dispatch(self, req: Any) -> tuple[int, Any]:
        node = self.node
        if not isinstance(req, list) or len(req) < 2 or not isinstance(req[0], str):
            return ST_BAD, "a request is [op, req_id, ...]"
        op = req[0]
        try:
            if op == "call":
                _, _, version, cid, seq, ack, target, name, args, kwargs = req
                return ST_OK, await node._propose_here(OP_CALL, int(version), int(cid), int(seq),
                                                        int(ack), str(target), str(name),
                                                        list(args), dict(kwargs))
            if op == "open":
                return ST_OK, await node._propose_here(OP_OPEN, 0, 0, 0, 0, "", "", [], {})
            if op == "query":
                _, _, target, name, args, kwargs = req
                return ST_OK, await node._query_here(str(target), str(name), list(args),
                                                     dict(kwargs))
            if op == "readindex":
                return ST_OK, await node._read_index_here()
            if op == "leader":
                return ST_OK, [node.leader_id, node.leader_addr]
        except NotLeader as e:
            return ST_NOT_LEADER, [e.leader_id, e.leader_addr]
        except TimeoutError:   # CallTimeout too
            return ST_RETRY, "not answered in time; the outcome is unknown"
        return ST_BAD, f"unknown op {op!r}"


class RpcConnection:
    """One authenticated connection to a node; requests are pipelined by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self._task = asyncio.create_task(self._read_loop())
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, *, secret: bytes, server_id: int,
                   client_id: int = EXTERNAL_CLIENT_ID, timeout: float = 5.0) -> "RpcConnection":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            await client_handshake(reader, writer, secret=secret, node_id=client_id,
                                   peer_id=server_id, timeout=timeout)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def request(self, op: str, *fields: Any, timeout: float) -> tuple[int, Any]:
        if self.closed or self._writer.is_closing():
            raise ConnectionError("connection closed")
        req_id = next(self._ids)
        fut: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            try:
                self._writer.write(frame([op, req_id, *fields]))
            except RuntimeError as e:
                # uvloop: the transport was closed under us (the node died) before
                # the read loop noticed: a connection error, which callers retry.
                raise ConnectionError(str(e)) from None
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(req_id, None)

    async def _read_loop(self) -> None:
        err: BaseException = ConnectionError("connection closed by the node")
        try:
            while True:
                resp = await read_frame(self._reader)
                if not (isinstance(resp, list) and len(resp) == 3):
                    raise DecodeError("malformed RPC response")
                fut = self._waiting.get(resp[0])
                if fut is not None and not fut.done():
                    fut.set_result((resp[1], resp[2]))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, DecodeError) as e:
            if not isinstance(e, asyncio.IncompleteReadError):
                err = ConnectionError(str(e))
        finally:
            self.closed = True
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()
            self._writer.close()

    async def close(self) -> None:
        self.closed = True
        self._writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class ConnectionPool:
    """One lazily opened connection per node id."""

    def __init__(self, addresses: dict[int, tuple[str, int]], secret: bytes,
                 client_id: int = EXTERNAL_CLIENT_ID) -> None:
        self.addresses = addresses
        self.secret = secret
        self.client_id = client_id
        self._conns: dict[int, RpcConnection] = {}
        self._opening: dict[int, asyncio.Task[RpcConnection]] = {}

    async def get(self, node_id: int, timeout: float) -> RpcConnection:
        conn = self._conns.get(node_id)
        if conn is not None and not conn.closed:
            return conn
        task = self._opening.get(node_id)
        if task is None:
            host, port = self.addresses[node_id]
            task = asyncio.create_task(RpcConnection.open(
                host, port, secret=self.secret, server_id=node_id, client_id=self.client_id,
                timeout=timeout))
            self._opening[node_id] = task
            task.add_done_callback(lambda _t, n=node_id: self._opening.pop(n, None))
        conn = await asyncio.shield(task)
        self._conns[node_id] = conn
        return conn

    async def request(self, node_id: int, op: str, *fields: Any, timeout: float
                      ) -> tuple[int, Any]:
        conn = await self.get(node_id, timeout)
        return await conn.request(op, *fields, timeout=timeout)

    def drop(self, node_id: int) -> None:
        conn = self._conns.pop(node_id, None)
        if conn is not None:
            conn.closed = True
            conn._writer.close()

    async def close(self) -> None:
        for t in list(self._opening.values()):
            t.cancel()
        conns, self._conns = self._conns, {}
        await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)
