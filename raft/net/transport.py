"""Peer-to-peer transport: authenticated, batched, bounded asyncio connections.

``PeerTransport`` keeps one persistent outbound connection to every peer. The
dialer is the sender: a node writes its messages only on connections it dialed,
and connections it accepted only receive. So between two nodes there are two
connections, one per direction, and there is never a question of which of two
simultaneous dials wins.

Sending is non-blocking. ``send()`` queues messages per destination and wakes
that peer's sender task, which runs on the next event-loop iteration and writes
everything queued since as one frame: one frame per peer per flush, however many
messages the node produced in that iteration.

Memory is bounded per peer by ``max_buffered_bytes``: queued (not yet encoded)
messages plus the bytes sitting in the socket's user-space write buffer. When a
peer is slow or down and a new message would exceed the bound, the oldest queued
messages are dropped (Raft retransmits what matters; newer heartbeats and
appends supersede older ones), and if that is not enough, the new one is. Every
drop is counted. A peer we cannot reach (two failed dials in a row) has its queue
dropped too,
as etcd's rafthttp drops messages to an unreachable peer: a node that comes back
after a long absence is caught up from the leader's current state (a probe, or a
snapshot if the log it needs is compacted) rather than by a backlog of stale
appends and heartbeats.

Every inbound connection must pass the HMAC handshake (``raft.net.auth``). After
that, a malformed, oversized or unknown frame, or a message whose ``src`` is not
the authenticated peer or whose ``dst`` is not this node, closes that connection
with a logged reason; the node keeps serving everyone else.

Not thread-safe: call ``send()`` from the event loop's thread.
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Container
from typing import Any

from raft._core import Message
from raft.net import codec
from raft.net.auth import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    AuthError,
    check_secret,
    check_tls_node_id,
    client_handshake,
    server_handshake,
)
from raft.net.codec import FrameDecoder, FrameError

log = logging.getLogger("raft.net.transport")

DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024
READ_SIZE = 256 * 1024
# Unauthenticated connections allowed at once: a flood of idle dials must not be
# able to exhaust memory or file descriptors before the handshake timeout hits.
DEFAULT_MAX_HANDSHAKES = 64
# ... and from one source address: one host cannot take every slot.
DEFAULT_MAX_HANDSHAKES_PER_IP = 16
# At most one warning line per reason this often; the lines in between are counted
# and the count reported with the next line (an attacker must not fill the disk).
WARNING_INTERVAL = 10.0

_CONNECTION_ERRORS = (OSError, ssl.SSLError, EOFError)

# Counters reported by stats(); all start at zero.
_COUNTERS = (
    "frames_sent", "messages_sent", "bytes_sent",
    "frames_received", "messages_received", "bytes_received",
    "messages_dropped", "auth_failures", "decode_errors", "protocol_errors",
    "connects", "connect_failures", "disconnects", "inbound_accepted",
    "delivery_errors", "handshakes_refused", "handshakes_evicted",
)


def install_event_loop_policy() -> bool:
    """Make new event loops uvloop loops when uvloop is importable.

    Returns True if uvloop is in use; otherwise logs a warning and leaves the
    default asyncio policy (everything works, just slower).
    """
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: using the default asyncio event loop (slower)")
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop if available, else a default one (for ``asyncio.Runner(loop_factory=...)``)."""
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: using the default asyncio event loop (slower)")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _RateLimitedLog:
    """Warnings at most once per ``interval`` seconds per reason, each with the number
    of lines suppressed since the previous one for that reason."""

    def __init__(self, logger: logging.Logger, interval: float = WARNING_INTERVAL) -> None:
        self._log = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, reason: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        n = self._suppressed.pop(reason, 0)
        if n:
            msg += " (%d similar lines suppressed in the last %.0fs)"
            args = (*args, n, now - last if last is not None else 0.0)
        self._log.warning(msg, *args)


class _FrameReader(asyncio.StreamReader):
    """An inbound connection's reader: a plain StreamReader for the handshake, then,
    once ``deliver_to(on_data)`` is called, each chunk read from the socket goes
    straight to ``on_data`` from the protocol's callback instead of into the buffer
    for the receiving task's next turn: one event-loop turn and one task switch less
    per chunk, on the path of every acknowledgement."""

    _on_data: Callable[[bytes], None] | None = None

    def deliver_to(self, on_data: Callable[[bytes], None]) -> bytes:
        """Switch to direct delivery; returns what was read and not yet consumed (the
        first frames may have arrived with the end of the handshake)."""
        # StreamReader's buffer and flow control (CPython 3.11+): the bytes already
        # buffered are handed over, and a transport paused because they were too many
        # is resumed.
        buffered = bytes(self._buffer)
        self._buffer.clear()
        self._on_data = on_data
        self._maybe_resume_transport()
        return buffered

    def feed_data(self, data: bytes) -> None:
        on_data = self._on_data
        if on_data is None:
            super().feed_data(data)
        else:
            on_data(data)


class _Handshake:
    """An inbound connection that has not authenticated yet."""

    __slots__ = ("ip", "writer", "hello")

    def __init__(self, ip: str, writer: asyncio.StreamWriter) -> None:
        self.ip = ip
        self.writer = writer
        self.hello = False  # its HELLO frame arrived: a peer at work, not an idle socket


class _Peer:
    """Outbound state for one peer: its bounded queue and its connection."""

    __slots__ = ("id", "addr", "queue", "queued_bytes", "wake", "writer", "task",
                 "dropped", "dropping", "connected", "flush_scheduled", "draining", "high")

    def __init__(self, peer_id: int, addr: tuple[str, int]) -> None:
        self.id = peer_id
        self.addr = addr
        self.queue: deque[tuple[Message, int]] = deque()   # (message, encoded size)
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.dropping = False        # in a drop episode (log once per episode)
        self.connected = False
        self.flush_scheduled = False  # a _flush callback is due in this loop iteration
        self.draining = False         # the pump task is waiting for the socket to drain
        self.high = 0                 # the socket's write-buffer high-water mark

    def write_buffer_size(self) -> int:
        w = self.writer
        return w.transport.get_write_buffer_size() if w is not None else 0

    def buffered_bytes(self) -> int:
        return self.queued_bytes + self.write_buffer_size()


class PeerTransport:
    """Authenticated, batched message transport between Raft nodes.

    ``on_messages`` is called (in the event loop) with each received batch, after
    every message in it was checked to come from the authenticated peer and to be
    addressed to this node. Exceptions it raises are logged, not propagated.
    """

    def __init__(self, node_id: int, listen: tuple[str, int],
                 peers: dict[int, tuple[str, int]], secret: bytes,
                 on_messages: Callable[[list[Message]], None], *,
                 ssl_server: ssl.SSLContext | None = None,
                 ssl_client: ssl.SSLContext | None = None,
                 max_frame: int = codec.DEFAULT_MAX_FRAME,
                 max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 connect_timeout: float = 5.0,
                 backoff_base: float = 0.05, backoff_cap: float = 2.0,
                 max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
                 max_handshakes_per_ip: int = DEFAULT_MAX_HANDSHAKES_PER_IP,
                 seed: int | None = None) -> None:
        if node_id in peers:
            raise ValueError(f"peers must not include this node ({node_id})")
        if node_id <= 0 or any(p <= 0 for p in peers):
            raise ValueError("node ids must be positive (0 means 'nobody' in the core)")
        if not 16 <= max_frame <= 0xFFFFFFFF:
            raise ValueError(f"max_frame must be in [16, 2**32 - 1], got {max_frame}")
        if max_buffered_bytes <= 0:
            raise ValueError("max_buffered_bytes must be positive")
        self.node_id = node_id
        self.listen = listen
        self.max_frame = max_frame
        self.max_buffered_bytes = max_buffered_bytes
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_ip = max_handshakes_per_ip
        self._secret = check_secret(secret)
        self._on_messages = on_messages
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._peers = {pid: _Peer(pid, addr) for pid, addr in peers.items()}
        self._allowed: Container[int] = frozenset(peers)
        # A message must fit in one frame with the frame's own overhead.
        self._max_message = max_frame + 4 - codec.MESSAGES_OVERHEAD
        # Seeded: jitter only needs to decorrelate nodes, not be unpredictable.
        self._rng = random.Random(node_id if seed is None else seed)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._server: asyncio.AbstractServer | None = None
        self._inbound: dict[int, asyncio.StreamWriter] = {}
        self._inbound_tasks: set[asyncio.Task[Any]] = set()
        self._retired: set[asyncio.Task[Any]] = set()   # removed peers' senders, ending
        # Handshakes in progress, oldest first, and how many per source address.
        self._handshakes: dict[asyncio.Task[Any], _Handshake] = {}
        self._handshakes_by_ip: dict[str, int] = {}
        self._warn = _RateLimitedLog(log)
        self._started = False
        self._closed = False

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers and start dialing every peer (in the background)."""
        if self._started:
            raise RuntimeError("PeerTransport already started")
        self._started = True
        host, port = self.listen
        loop = asyncio.get_running_loop()

        def inbound() -> asyncio.StreamReaderProtocol:   # asyncio.start_server's, with our reader
            return asyncio.StreamReaderProtocol(_FrameReader(limit=READ_SIZE, loop=loop),
                                                self._handle_inbound, loop=loop)

        self._server = await loop.create_server(
            inbound, host, port, ssl=self._ssl_server,
            ssl_handshake_timeout=self.handshake_timeout if self._ssl_server else None)
        log.info("node %d listening on %s:%d", self.node_id, *self.listen_address)
        for peer in self._peers.values():
            peer.task = asyncio.create_task(self._run_peer(peer), name=f"raft-peer-{peer.id}")

    @property
    def listen_address(self) -> tuple[str, int]:
        """The bound (host, port); useful after listening on port 0."""
        if self._server is None or not self._server.sockets:
            return self.listen
        return self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        """Stop listening, drop every connection and queued message, end all tasks."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += list(self._inbound_tasks) + list(self._retired)
        for task in tasks:
            task.cancel()
        # abort(), not close(): close() would wait to flush to peers that may be dead.
        for writer in [p.writer for p in self._peers.values()] + list(self._inbound.values()):
            if writer is not None:
                writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            except TimeoutError:
                log.warning("node %d: listener did not close within 5s", self.node_id)
        for peer in self._peers.values():
            peer.queue.clear()
            peer.queued_bytes = 0
        log.info("node %d transport closed", self.node_id)

    # --- membership (raft/membership.py decides who; this keeps the connections) ---

    def set_peers(self, peers: dict[int, tuple[str, int]],
                  allowed: Container[int] | None = None) -> None:
        """Make ``peers`` the nodes we dial (a membership change), and ``allowed``
        (default: the same ids) the ones whose handshakes we accept. New peers are
        dialed at once; a removed one's queue is dropped and its connections closed;
        a peer whose address changed is redialed."""
        peers = {int(pid): (str(a[0]), int(a[1])) for pid, a in peers.items() if pid != self.node_id}
        if any(p <= 0 for p in peers):
            raise ValueError("node ids must be positive (0 means 'nobody' in the core)")
        for pid in [p for p, peer in self._peers.items()
                    if p not in peers or peer.addr != peers[p]]:
            self._retire_peer(self._peers.pop(pid))
        for pid, addr in peers.items():
            if pid not in self._peers:
                peer = self._peers[pid] = _Peer(pid, addr)
                if self._started and not self._closed:
                    peer.task = asyncio.create_task(self._run_peer(peer), name=f"raft-peer-{pid}")
                log.info("node %d: now replicating with node %d at %s:%d",
                         self.node_id, pid, *addr)
        self._allowed = frozenset(peers) if allowed is None else allowed
        for pid in [p for p in self._inbound if p not in self._allowed]:
            self._inbound.pop(pid).transport.abort()     # its reader ends; see _handle_inbound

    def _retire_peer(self, peer: _Peer) -> None:
        peer.queue.clear()
        peer.queued_bytes = 0
        if peer.writer is not None:
            peer.writer.transport.abort()
        if peer.task is not None:
            peer.task.cancel()
            self._retired.add(peer.task)
            peer.task.add_done_callback(self._retired.discard)
        log.info("node %d: stopped replicating with node %d", self.node_id, peer.id)

    @property
    def peer_ids(self) -> frozenset[int]:
        return frozenset(self._peers)

    # --- sending --------------------------------------------------------------

    def send(self, msgs: list[Message], *, now: bool = False) -> None:
        """Queue ``msgs`` for their destinations (``m.dst``); never blocks. They are
        written at the end of this loop iteration (with whatever else is sent to the
        same peer meanwhile, in one frame), or with ``now`` at once: for replies
        that someone waits on and that nothing will join (an ack after a save).

        Raises TypeError/ValueError (before queuing any of them) if a message
        cannot be encoded: that is the caller's bug, not a network condition.
        Messages to unknown peers, too large for one frame, or over a peer's
        buffer bound are dropped and counted.
        """
        sizes = [codec.encoded_size(m) for m in msgs]
        peers = self._peers
        for m, size in zip(msgs, sizes):
            peer = peers.get(m.dst)
            if peer is None:
                self._counters["messages_dropped"] += 1
                log.warning("node %d: dropping message to unknown node %d", self.node_id, m.dst)
            elif size > self._max_message:
                self._counters["messages_dropped"] += 1
                log.warning("node %d: dropping a %d-byte message to node %d: larger than "
                            "max_frame (%d)", self.node_id, size, peer.id, self.max_frame)
            elif not self._closed:
                self._enqueue(peer, m, size)
        if now:
            for peer in {m.dst for m in msgs}:
                target = peers.get(peer)
                if target is not None and target.queue:
                    self._flush(target)

    def _enqueue(self, peer: _Peer, m: Message, size: int) -> None:
        budget = self.max_buffered_bytes - peer.write_buffer_size()
        queue = peer.queue
        # Over the bound: evict the oldest first (newer messages supersede them).
        while queue and peer.queued_bytes + size > budget:
            _, old_size = queue.popleft()
            peer.queued_bytes -= old_size
            self._note_drop(peer)
        if peer.queued_bytes + size > budget:
            self._note_drop(peer)
            return
        queue.append((m, size))
        peer.queued_bytes += size
        if not peer.flush_scheduled:
            asyncio.get_running_loop().call_soon(self._flush, peer)
            peer.flush_scheduled = True

    def _flush(self, peer: _Peer) -> None:
        """Write what was queued for ``peer`` in this loop iteration, from a callback:
        a frame then costs no task switch (profiled under ``raft bench``, waking the
        pump task for every frame was a tenth of a leader's time). The pump task
        writes instead while the socket is over its high-water mark (it waits in
        drain()) and while there is no connection (it dials)."""
        peer.flush_scheduled = False
        writer = peer.writer
        if not peer.queue:
            return
        if writer is None or peer.draining or writer.transport.is_closing() \
                or writer.transport.get_write_buffer_size() >= peer.high:
            # The pump task writes once connected, or drained. A connection that just
            # broke keeps its writer until the pump notices: the queue waits for the
            # next connection (a write into the dead one would raise, or vanish).
            peer.wake.set()
            return
        self._write_queued(peer, writer)

    def _drop_queue(self, peer: _Peer) -> None:
        """``peer`` is unreachable: drop what is queued for it (Raft retransmits)."""
        n = len(peer.queue)
        if n:
            peer.queue.clear()
            peer.queued_bytes = 0
            peer.dropped += n
            self._counters["messages_dropped"] += n

    def _note_drop(self, peer: _Peer) -> None:
        peer.dropped += 1
        self._counters["messages_dropped"] += 1
        if not peer.dropping:
            peer.dropping = True
            log.warning("node %d: send buffer for node %d is full (%d bytes): dropping "
                        "messages until it drains", self.node_id, peer.id, self.max_buffered_bytes)

    def _write_queued(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        """Encode everything queued for ``peer`` into as few frames as fit."""
        queue = peer.queue
        limit = self._max_message
        while queue:
            batch: list[Message] = []
            size = 0
            while queue and (not batch or size + queue[0][1] <= limit):
                m, s = queue.popleft()
                batch.append(m)
                size += s
            peer.queued_bytes -= size
            frame = codec.encode(batch, self.max_frame)
            writer.write(frame)
            c = self._counters
            c["frames_sent"] += 1
            c["messages_sent"] += len(batch)
            c["bytes_sent"] += len(frame)
        peer.dropping = False

    # --- outbound connections ---------------------------------------------------

    def _backoff(self, failures: int) -> float:
        # Capped exponential with "equal jitter": at least half the step, so
        # retries still back off, plus a random half to spread nodes apart.
        step = min(self.backoff_cap, self.backoff_base * (2 ** min(failures, 30)))
        return step / 2 + self._rng.random() * step / 2

    async def _run_peer(self, peer: _Peer) -> None:
        """Keep one authenticated connection to ``peer`` up, forever (until close)."""
        failures = 0
        while not self._closed:
            try:
                reader, writer = await self._dial(peer)
            except AuthError as exc:
                self._counters["auth_failures"] += 1
                self._counters["connect_failures"] += 1
                log.warning("node %d: authentication with node %d at %s:%d failed: %s",
                            self.node_id, peer.id, *peer.addr, exc)
            except ssl.SSLError as exc:
                # Certificate or TLS-level refusal: an authentication failure too.
                self._counters["auth_failures"] += 1
                self._counters["connect_failures"] += 1
                log.warning("node %d: TLS with node %d at %s:%d failed: %r",
                            self.node_id, peer.id, *peer.addr, exc)
            except (*_CONNECTION_ERRORS, TimeoutError) as exc:
                self._counters["connect_failures"] += 1
                if failures:   # unreachable twice in a row: down, not just starting
                    self._drop_queue(peer)
                # First failure of a streak is worth a line; the retries are not.
                level = logging.INFO if failures == 0 else logging.DEBUG
                log.log(level, "node %d: cannot connect to node %d at %s:%d: %r",
                        self.node_id, peer.id, *peer.addr, exc)
            except Exception:
                # A bug, not a network condition: log it loudly but keep the peer's
                # sender alive, or this peer would silently never hear from us again.
                self._counters["connect_failures"] += 1
                log.exception("node %d: unexpected error dialing node %d", self.node_id, peer.id)
            else:
                failures = 0
                await self._pump(peer, reader, writer)
            await asyncio.sleep(self._backoff(failures))
            failures += 1

    async def _dial(self, peer: _Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = peer.addr
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._ssl_client, limit=READ_SIZE,
                server_hostname=host if self._ssl_client else None,
                ssl_handshake_timeout=self.handshake_timeout if self._ssl_client else None)
        try:
            check_tls_node_id(writer, peer.id)  # before we send it anything
            await client_handshake(reader, writer, secret=self._secret, node_id=self.node_id,
                                   peer_id=peer.id, timeout=self.handshake_timeout)
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    async def _pump(self, peer: _Peer, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Write ``peer``'s queue to this connection until it breaks."""
        self._counters["connects"] += 1
        log.info("node %d: connected to node %d at %s:%d", self.node_id, peer.id, *peer.addr)
        # Let the socket buffer take part of the budget; beyond that, drain() blocks
        # and messages wait (and may be dropped) in the queue instead.
        high = min(max(64 * 1024, self.max_buffered_bytes // 4), self.max_buffered_bytes)
        writer.transport.set_write_buffer_limits(high=high)
        peer.high = high
        peer.writer = writer
        peer.connected = True
        watcher = asyncio.create_task(self._watch_outbound(peer, reader, writer))
        try:
            while not watcher.done():
                if not peer.queue or writer.transport.is_closing():
                    peer.wake.clear()
                    await peer.wake.wait()
                    continue
                self._write_queued(peer, writer)
                peer.draining = True
                try:
                    await writer.drain()
                finally:
                    peer.draining = False
        except _CONNECTION_ERRORS as exc:
            log.info("node %d: connection to node %d lost: %r", self.node_id, peer.id, exc)
        finally:
            peer.connected = False
            peer.writer = None
            watcher.cancel()
            writer.transport.abort()
            self._counters["disconnects"] += 1

    async def _watch_outbound(self, peer: _Peer, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        """Notice the remote closing our outbound connection (it never sends on it)."""
        try:
            data = await reader.read(1)
        except _CONNECTION_ERRORS as exc:
            log.info("node %d: connection to node %d lost: %r", self.node_id, peer.id, exc)
        else:
            if data:
                self._counters["protocol_errors"] += 1
                log.warning("node %d: node %d sent data on our outbound connection; closing it",
                            self.node_id, peer.id)
            else:
                log.info("node %d: node %d closed the connection", self.node_id, peer.id)
        # Abort so a _pump blocked in drain() wakes up too, then let it see we are done.
        writer.transport.abort()
        peer.wake.set()

    # --- inbound connections ------------------------------------------------------

    async def _handle_inbound(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound_tasks.add(task)
        where = writer.get_extra_info("peername")
        peer_id = None
        try:
            if self._closed:
                return
            ip = str(where[0]) if isinstance(where, tuple) and where else "?"
            if not self._admit(task, ip, writer):
                return
            peer_id = await self._authenticate(reader, writer, where)
            if peer_id is None:
                return
            self._register_inbound(peer_id, writer)
            await self._receive(peer_id, reader, writer)
        except _CONNECTION_ERRORS as exc:
            if peer_id is None:  # an unauthenticated stranger: rate-limited
                self._warn.warning("lost", "node %d: unauthenticated connection from %s "
                                   "lost: %r", self.node_id, where, exc)
            else:
                log.info("node %d: inbound connection from node %s lost: %r",
                         self.node_id, peer_id, exc)
        except asyncio.CancelledError:
            # Only close() cancels us. End normally: the stream server (3.11) calls
            # task.exception() on this task, which raises for a cancelled task and
            # would be reported as an unhandled error in a callback.
            if not self._closed:
                raise
        finally:
            self._release(task)
            if peer_id is not None and self._inbound.get(peer_id) is writer:
                del self._inbound[peer_id]
            writer.transport.abort()
            self._inbound_tasks.discard(task)

    def _admit(self, task: asyncio.Task[Any], ip: str, writer: asyncio.StreamWriter) -> bool:
        """Take a handshake slot for a new connection from ``ip``. When the slots (of
        this address, or in all) are taken, the oldest connection that has not even
        sent its HELLO is evicted to make room: real peers send theirs at once, so
        idle sockets cannot keep a peer out for longer than it takes to connect."""
        per_ip = self._handshakes_by_ip.get(ip, 0) >= self.max_handshakes_per_ip
        if per_ip or len(self._handshakes) >= self.max_handshakes:
            victim = self._oldest_idle(ip if per_ip else None)
            if victim is None:
                self._counters["handshakes_refused"] += 1
                self._warn.warning("refused", "node %d: refusing a connection from %s: "
                                   "%d handshakes in progress (%d from that address)",
                                   self.node_id, ip, len(self._handshakes),
                                   self._handshakes_by_ip.get(ip, 0))
                return False
            self._counters["handshakes_evicted"] += 1
            self._warn.warning("evicted", "node %d: handshake slots full: closing an idle "
                               "unauthenticated connection from %s", self.node_id, victim.ip)
            self._release(next(t for t, h in self._handshakes.items() if h is victim))
            victim.writer.transport.abort()
        self._handshakes[task] = _Handshake(ip, writer)
        self._handshakes_by_ip[ip] = self._handshakes_by_ip.get(ip, 0) + 1
        return True

    def _oldest_idle(self, ip: str | None) -> _Handshake | None:
        for h in self._handshakes.values():  # insertion order: oldest first
            if not h.hello and (ip is None or h.ip == ip):
                return h
        return None

    def _release(self, task: asyncio.Task[Any]) -> None:
        h = self._handshakes.pop(task, None)
        if h is not None:
            left = self._handshakes_by_ip[h.ip] - 1
            if left:
                self._handshakes_by_ip[h.ip] = left
            else:
                del self._handshakes_by_ip[h.ip]

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            where: Any) -> int | None:
        task = asyncio.current_task()
        state = self._handshakes.get(task) if task is not None else None

        def on_hello() -> None:
            if state is not None:
                state.hello = True

        try:
            peer_id = await server_handshake(reader, writer, secret=self._secret,
                                             node_id=self.node_id, allowed_peers=self._allowed,
                                             timeout=self.handshake_timeout, on_hello=on_hello)
            check_tls_node_id(writer, peer_id)
            return peer_id
        except AuthError as exc:
            self._counters["auth_failures"] += 1
            self._warn.warning("rejected", "node %d: rejected connection from %s: %s",
                               self.node_id, where, exc)
            return None
        finally:
            if task is not None:
                self._release(task)

    def _register_inbound(self, peer_id: int, writer: asyncio.StreamWriter) -> None:
        self._counters["inbound_accepted"] += 1
        old = self._inbound.get(peer_id)
        if old is not None:
            # A peer dials us once; a second connection means it restarted or lost
            # the first, so the old one is dead weight.
            log.info("node %d: node %d reconnected; closing its previous connection",
                     self.node_id, peer_id)
            old.transport.abort()
        self._inbound[peer_id] = writer
        log.info("node %d: accepted authenticated connection from node %d",
                 self.node_id, peer_id)

    async def _receive(self, peer_id: int, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        """Decode and deliver frames from an authenticated peer until EOF or a violation:
        each chunk as the transport reads it (_FrameReader), this task only waiting
        for the end."""
        decoder = FrameDecoder(self.max_frame)
        violation: list[str] = []

        def on_data(data: bytes) -> None:
            if violation:
                return                  # closing: the rest is not read
            reason = self._take(peer_id, decoder, data)
            if reason is not None:
                violation.append(reason)
                writer.transport.abort()

        assert isinstance(reader, _FrameReader)
        buffered = reader.deliver_to(on_data)
        if buffered:
            on_data(buffered)
        # feed_data no longer fills the buffer: read() returns only at EOF, or raises
        # the connection's error.
        await reader.read(1)
        if violation:
            log.warning("node %d: closing connection from node %d: %s",
                        self.node_id, peer_id, violation[0])
        else:
            log.info("node %d: node %d closed its connection", self.node_id, peer_id)

    def _take(self, peer_id: int, decoder: FrameDecoder, data: bytes) -> str | None:
        """Decode ``data`` from ``peer_id`` and deliver its complete frames; a reason to
        close the connection if it breaks the protocol."""
        c = self._counters
        c["bytes_received"] += len(data)
        try:
            frames = decoder.feed(data)
        except FrameError as exc:
            c["decode_errors"] += 1
            return f"bad frame: {exc}"
        for msgs in frames:
            reason = self._misrouted(peer_id, msgs)
            if reason is not None:
                c["protocol_errors"] += 1
                return reason
            c["frames_received"] += 1
            c["messages_received"] += len(msgs)
            self._deliver(msgs)
        return None

    def _misrouted(self, peer_id: int, msgs: list[Message]) -> str | None:
        # An authenticated peer may only speak for itself, and only to us.
        node_id = self.node_id
        for m in msgs:
            if m.src != peer_id:
                return f"message claims src {m.src} on node {peer_id}'s connection"
            if m.dst != node_id:
                return f"message for node {m.dst} delivered to node {node_id}"
        return None

    def _deliver(self, msgs: list[Message]) -> None:
        try:
            self._on_messages(msgs)
        except Exception:
            self._counters["delivery_errors"] += 1
            log.exception("node %d: on_messages raised; batch of %d messages lost",
                          self.node_id, len(msgs))

    # --- introspection --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since start, plus current buffering per peer.

        ``buffered_bytes`` is what the bound ``max_buffered_bytes`` applies to, per
        peer: queued messages plus the socket's user-space write buffer.
        """
        out: dict[str, Any] = dict(self._counters)
        per_peer = {
            p.id: {
                "connected": p.connected,
                "buffered_bytes": p.buffered_bytes(),
                "queued_messages": len(p.queue),
                "dropped": p.dropped,
            }
            for p in self._peers.values()
        }
        out["buffered_bytes"] = sum(p["buffered_bytes"] for p in per_peer.values())
        out["max_buffered_bytes_per_peer"] = self.max_buffered_bytes
        out["inbound_connections"] = len(self._inbound)
        out["peers"] = per_peer
        return out

    def queued(self, peer_id: int) -> list[Message]:
        """The messages waiting to be written to ``peer_id`` (oldest first). While a
        peer is down they wait until the next failed dial drops them, so a node that
        returns before that gets them: appends from before the leader compacted its
        log can catch it up without a snapshot (legal: they are only late)."""
        peer = self._peers.get(peer_id)
        return [m for m, _ in peer.queue] if peer is not None else []
