"""A Redis-protocol (RESP2) server in front of the replicated KV state machine.

The node runtime (Raft, transport, storage) is behind :class:`NodeAPI`; this module only
speaks RESP to clients:

* Writes are encoded with the current wall clock (:func:`raft.kv.encode_command`) and
  handed to ``propose``; many proposals of one connection are in flight at once, and
  replies still go out in request order.
* Reads wait for this connection's earlier writes (read-your-writes, and Redis's in-order
  pipeline semantics), then ``read_barrier()`` (ReadIndex), then read the local state
  machine. ``READONLY`` opts a connection into stale local reads without the barrier.
* A node that is not the leader answers ``-MOVED 0 host:port`` (the leader's client
  address; ``redis-cli -c`` follows it) or ``-CLUSTERDOWN ...`` if no leader is known.

Parsing: a small scanner validates each request's framing (array of bulk strings, length
limits) before ``hiredis.Reader`` turns it into Python objects. The scanner exists because
hiredis allocates an array as soon as it reads its header, so ``*4000000000\\r\\n`` would
try to allocate 32 GB; it also lets inline commands (``PING\\r\\n`` from telnet) work.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, cast

import hiredis

from raft import _fastpath

from . import kv
from .limits import (DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_MULTI_COMMANDS, EXEC_ENVELOPE,
                     command_size_bound, exec_item_size_bound, too_large_message)
from .kv import NULL_ARRAY, OK, ErrorReply, KVStateMachine, Reply, Status

__all__ = [
    "NodeAPI",
    "NotLeaderError",
    "RequestParser",
    "RespServer",
    "ServerConfig",
    "encode_reply",
    "serve_resp",
]

log = logging.getLogger(__name__)

REDIS_COMPAT_VERSION = "7.0.0"  # what INFO/HELLO report, so clients enable 7.0 features


class NotLeaderError(Exception):
    """Raised by NodeAPI when this node cannot serve the request: not the leader.

    ``leader_addr`` is the leader's *client* (RESP) address, ``"host:port"``, or None if
    no leader is known (an election is under way)."""

    def __init__(self, leader_addr: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader_addr or 'unknown'}")
        self.leader_addr = leader_addr


class ReadTimeoutError(asyncio.TimeoutError):
    """No majority confirmed a linearizable read's leadership check in time."""


class NodeAPI(Protocol):
    """What the server needs from the Raft node.

    Ordering contract: ``submit`` fixes its entry's place in the log before it returns
    (as calling ``RawNode.propose`` does), because the server submits one connection's
    pipelined writes in request order and answers them in that order.
    The state machine is only touched from the event loop thread.
    """

    state_machine: KVStateMachine

    def submit(self, data: bytes) -> tuple[int, asyncio.Future[Any]]:
        """Append ``data`` to the log now; returns its log index and a future that
        resolves to ``state_machine.apply``'s reply once applied locally, or fails with NotLeaderError (leadership lost: not
        applied) or asyncio.TimeoutError (outcome unknown: answered ``-TRYAGAIN``).
        Raises NotLeaderError at once on a follower. No task per write: the hot path."""

    async def read_barrier(self) -> None:
        """Return once the local state machine reflects every write committed before the
        call (ReadIndex). Raises NotLeaderError."""

    def read(self, evaluate: Callable[[], Any], after_index: int = 0) -> asyncio.Future[Any] | None:
        """A linearizable read that does not block the connection: ``evaluate`` runs
        once every entry up to max(commit now, ``after_index``) is applied, before any
        later one; the future gets its value once leadership is confirmed, or fails
        with NotLeaderError / ReadTimeoutError. None: not possible yet (use
        ``read_barrier``). Raises NotLeaderError on a follower."""

    def status(self) -> dict:
        """For INFO: e.g. role, term, leader, commit_index, applied_index."""

    async def wait_applied(self, after_index: int, timeout: float) -> None:
        """Return when ``state_machine.last_applied > after_index`` or ``timeout`` seconds
        have passed (whichever is first; no exception on timeout)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    password: str | None = None
    # Redis allows 512 MB bulk strings; a Raft entry that large stalls replication, so the
    # default is lower. Every buffered request is bounded by these two numbers.
    max_bulk_len: int = 64 << 20
    max_request_len: int = 128 << 20
    max_args: int = 1 << 20
    max_inline_len: int = 64 << 10
    # Commands queued plus replies not yet sent, per connection: beyond this we stop
    # reading from the socket until the client catches up.
    max_pipeline: int = 1024
    # Connections served at once; one more is answered "-ERR max number of clients
    # reached" and closed (Redis's maxclients). The node lowers it to fit its file
    # descriptor limit (raft.limits).
    max_clients: int = 10000
    # Before AUTH (when a password is set) a client can only make the server buffer
    # this much: each bulk string, an inline command and a partial request are capped
    # at it, and a request may have at most PREAUTH_MAX_ARGS arguments (Redis 7: 16 KB
    # and 10, CVE-2021-32675). A connection that has not authenticated within
    # auth_timeout seconds of connecting is closed.
    preauth_query_buffer: int = 16 << 10
    auth_timeout: float = 10.0
    # Issue 15 item 1 (raft/limits.py): the largest log entry a write may become, and
    # the commands one MULTI may queue (its bytes are bounded by max_entry_bytes: EXEC
    # is one entry).
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    max_multi_commands: int = DEFAULT_MAX_MULTI_COMMANDS
    # TEST ONLY ([debug] stale_reads): answer reads locally, without ReadIndex.
    debug_stale_reads: bool = False


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- encoding


def encode_reply(reply: Reply | Any, out: bytearray, proto: int = 2) -> None:
    """Append the RESP encoding of ``reply`` to ``out``.

    ``proto`` 3 (after ``HELLO 3``) differs only where our replies need it: nil is
    ``_`` and a ``dict`` is a map (in RESP2 a flat key, value, ... array)."""
    t = type(reply)
    if t is bytes:
        out += b"$%d\r\n" % len(reply)
        out += reply
        out += b"\r\n"
    elif t is int:
        out += b":%d\r\n" % reply
    elif reply is None or reply is NULL_ARRAY:
        out += b"_\r\n" if proto == 3 else (b"$-1\r\n" if reply is None else b"*-1\r\n")
    elif t is Status:
        out += b"+%s\r\n" % _one_line(reply).encode()
    elif t is ErrorReply:
        out += b"-%s\r\n" % _one_line(reply).encode()
    elif t is list or t is tuple:
        out += b"*%d\r\n" % len(reply)
        for item in reply:
            encode_reply(item, out, proto)
    elif t is dict:
        out += b"%%%d\r\n" % len(reply) if proto == 3 else b"*%d\r\n" % (2 * len(reply))
        for k, v in reply.items():
            encode_reply(k, out, proto)
            encode_reply(v, out, proto)
    elif t is bool:
        out += b":1\r\n" if reply else b":0\r\n"
    elif isinstance(reply, str):
        encode_reply(reply.encode(), out, proto)
    elif isinstance(reply, (bytearray, memoryview)):
        encode_reply(bytes(reply), out, proto)
    else:
        raise TypeError(f"cannot encode {type(reply).__name__} as RESP")


def _one_line(s: str) -> str:
    return s.replace("\r", " ").replace("\n", " ")


# --------------------------------------------------------------------------- parsing

_MBULK_RE = re.compile(rb"-?(?:0|[1-9][0-9]{0,17})")
_MAX_HEADER = 64 << 10  # a length line longer than this is garbage
_MAX_LEN_DIGITS = 18  # a bulk length with more digits is garbage (and int() of
# thousands of digits is slow, then raises ValueError past 4,300 digits)
PREAUTH_MAX_ARGS = 10  # Redis 7's limit on a request before AUTH
# Commands that may authenticate: before AUTH the parser stops after one of them until
# it has run, so the requests behind it get the limits that apply after it.
_AUTH_COMMANDS = frozenset((b"auth", b"hello"))


class ProtocolError(Exception):
    """A client sent something that is not RESP; the message is the reply (Redis's text)."""


class RequestParser:
    """Turns a client's byte stream into commands (lists of bytes).

    ``feed(data)`` returns the commands completed by ``data``. On a framing error it
    raises ProtocolError; the commands completed by the same call before the error are
    then in ``pending``, for the caller to answer before the error.

    With ``preauth`` (a password is set and the client has not authenticated yet) the
    limits are small (``ServerConfig.preauth_query_buffer``, ``PREAUTH_MAX_ARGS``), and
    parsing stops after an AUTH or HELLO command (``held`` is then true): the caller
    runs it, then calls ``resume(authenticated)`` for the rest.
    """

    def __init__(self, config: ServerConfig, preauth: bool = False) -> None:
        self._cfg = config
        self._buf = bytearray()
        self._pos = 0  # scan position in _buf
        self._cmd_start = 0  # start of the command being scanned
        self._args_left = -1  # -1: at a command boundary
        self._line_end = 0  # set by _line: where the line after the header starts
        self._reader = hiredis.Reader()
        self.pending: list[list[bytes]] = []
        self.held = False
        self._set_limits(preauth)

    def _set_limits(self, preauth: bool) -> None:
        cfg = self._cfg
        self._preauth = preauth
        if preauth:
            small = cfg.preauth_query_buffer
            self._max_args = min(cfg.max_args, PREAUTH_MAX_ARGS)
            self._max_bulk = min(cfg.max_bulk_len, small)
            self._max_inline = min(cfg.max_inline_len, small)
            self._max_buffer = min(cfg.max_request_len, small)
        else:
            self._max_args, self._max_bulk = cfg.max_args, cfg.max_bulk_len
            self._max_inline, self._max_buffer = cfg.max_inline_len, cfg.max_request_len

    def resume(self, authenticated: bool) -> list[list[bytes]]:
        """After the AUTH/HELLO that ``held`` the parser ran: parse what follows it,
        with the full limits if it authenticated the client."""
        self.held = False
        self._set_limits(self._preauth and not authenticated)
        return self.feed(b"")

    def feed(self, data: bytes) -> list[list[bytes]]:
        self._buf += data
        self.pending = []
        if self.held:
            return self.pending
        run_start = -1  # start of scanned RESP commands not yet given to hiredis
        try:
            while not self.held:
                if self._args_left < 0:
                    if self._pos >= len(self._buf):
                        break
                    if self._buf[self._pos] == 42 and not self._preauth:   # "*"
                        # The compiled scanner takes every complete, well-formed
                        # command it can; we read what it stops at.
                        run_start = self._hiredis(run_start)
                        pos = _fastpath.scan_requests(self._buf, self._pos, self._max_args,
                                                      self._max_bulk, self.pending)
                        if pos != self._pos:
                            self._pos = self._cmd_start = pos
                            continue
                    if self._buf[self._pos] != ord("*"):
                        run_start = self._hiredis(run_start)  # keep commands in order
                        if not self._inline():
                            break
                        continue
                    if not self._multibulk_header():
                        break
                    if self._args_left == 0:
                        # "*0", "*-1", "*-5": an empty request, skipped as Redis does
                        # (hiredis would raise on a count below -1).
                        run_start = self._hiredis(run_start)
                        self._args_left = -1
                        continue
                if not self._bulks():
                    break
                self._args_left = -1
                if run_start < 0:
                    run_start = self._cmd_start
                if self._preauth:
                    run_start = self._hold_after_auth(run_start)
        finally:
            self._hiredis(run_start)
            self._compact()
        if len(self._buf) > self._max_buffer and not self.held:
            if self._preauth:
                raise ProtocolError("ERR Protocol error: unauthenticated request too big")
            raise ProtocolError("ERR Protocol error: request exceeds the query buffer limit")
        return self.pending

    def _hold_after_auth(self, run_start: int) -> int:
        """Before AUTH: hand each command to hiredis on its own, and stop after one
        that may authenticate (its outcome decides the limits for what follows)."""
        run_start = self._hiredis(run_start)
        if self.pending and self.pending[-1] and \
                self.pending[-1][0].lower() in _AUTH_COMMANDS:
            self.held = True
        return run_start

    def _hiredis(self, run_start: int) -> int:
        """Let hiredis build the argv lists of the complete commands scanned so far."""
        if run_start < 0:
            return -1
        end = self._cmd_start if self._args_left >= 0 else self._pos
        if end > run_start:
            self._reader.feed(self._buf, run_start, end - run_start)
            while (msg := self._reader.gets()) is not False:
                if msg:  # "*0" and "*-1" are empty commands, ignored like Redis
                    self.pending.append(msg)
        return -1

    def _line(self, what: str) -> bytes | None:
        end = self._buf.find(b"\r\n", self._pos)
        if end < 0:
            if len(self._buf) - self._pos > _MAX_HEADER:
                raise ProtocolError(f"ERR Protocol error: too big {what} count string")
            return None
        line = bytes(self._buf[self._pos + 1 : end])
        self._line_end = end + 2
        return line

    def _multibulk_header(self) -> bool:
        line = self._line("mbulk")
        if line is None:
            return False
        if not _MBULK_RE.fullmatch(line):
            raise ProtocolError("ERR Protocol error: invalid multibulk length")
        if int(line) > self._max_args:
            if self._preauth:
                raise ProtocolError("ERR Protocol error: unauthenticated multibulk length")
            raise ProtocolError("ERR Protocol error: invalid multibulk length")
        self._cmd_start = self._pos
        self._pos = self._line_end
        self._args_left = max(int(line), 0)
        return True

    def _bulks(self) -> bool:
        # The hot loop of the server: locals, and no regex for the common length line.
        buf, pos, left, max_bulk = self._buf, self._pos, self._args_left, self._max_bulk
        try:
            while left > 0:
                if pos >= len(buf):
                    return False
                if buf[pos] != 36:  # "$"
                    got = _one_line(chr(buf[pos]))
                    raise ProtocolError(f"ERR Protocol error: expected '$', got '{got}'")
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if len(buf) - pos > _MAX_HEADER:
                        raise ProtocolError("ERR Protocol error: too big bulk count string")
                    return False
                digits = buf[pos + 1 : eol]
                if (not digits.isdigit() or len(digits) > _MAX_LEN_DIGITS
                        or (digits[0] == 48 and len(digits) > 1)):  # no "01"
                    raise ProtocolError("ERR Protocol error: invalid bulk length")
                n = int(digits)
                if n > max_bulk:
                    if self._preauth:
                        raise ProtocolError("ERR Protocol error: unauthenticated bulk length")
                    raise ProtocolError("ERR Protocol error: invalid bulk length")
                end = eol + 2 + n + 2
                if end > len(buf):
                    return False  # wait for the body; the header is re-read next time
                if buf[end - 2] != 13 or buf[end - 1] != 10:
                    raise ProtocolError("ERR Protocol error: expected CRLF after bulk string")
                pos = end
                left -= 1
            return True
        finally:
            self._pos, self._args_left = pos, left

    def _inline(self) -> bool:
        """An inline command (``PING\\r\\n``), as telnet and nc users type them."""
        nl = self._buf.find(b"\n", self._pos)
        if (nl if nl >= 0 else len(self._buf)) - self._pos > self._max_inline:
            raise ProtocolError("ERR Protocol error: too big inline request")
        if nl < 0:
            return False
        argv = bytes(self._buf[self._pos : nl]).split()
        self._pos = self._cmd_start = nl + 1
        if argv:
            if argv[0].lower() in (b"post", b"host:"):
                # An HTTP request: a browser being used against us (cross-protocol attack);
                # Redis drops these connections silently.
                raise ProtocolError("")
            if self._preauth and len(argv) > self._max_args:
                raise ProtocolError("ERR Protocol error: unauthenticated multibulk length")
            self.pending.append(argv)
            if self._preauth and argv[0].lower() in _AUTH_COMMANDS:
                self.held = True
        return True

    def _compact(self) -> None:
        keep_from = self._cmd_start if self._args_left >= 0 else self._pos
        if keep_from:
            del self._buf[:keep_from]
            self._pos -= keep_from
            self._cmd_start -= keep_from


# --------------------------------------------------------------------------- server


def _not_leader_reply(e: NotLeaderError) -> ErrorReply:
    if e.leader_addr:
        return ErrorReply(f"MOVED 0 {e.leader_addr}")
    return ErrorReply("CLUSTERDOWN no leader known; retry later")


def _write_reply(fut: asyncio.Future[Any]) -> Any:
    """The reply to a write whose future (NodeAPI.submit) is done."""
    if fut.cancelled():
        return ErrorReply("ERR request cancelled")
    e = fut.exception()
    if e is None:
        return fut.result()
    if isinstance(e, NotLeaderError):
        return _not_leader_reply(e)
    if isinstance(e, ReadTimeoutError):
        return ErrorReply("TRYAGAIN read barrier timed out")
    if isinstance(e, asyncio.TimeoutError):
        return ErrorReply("TRYAGAIN write timed out; it may or may not have been applied")
    log.error("write failed: %r", e)
    return ErrorReply(_one_line(f"ERR internal error: {type(e).__name__}: {e}"))


class _Ready:
    """A reply already computed, queued behind replies still in flight."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Fatal:
    """Answer ``message`` (if any) after the queued replies, then close."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


NOAUTH = ErrorReply("NOAUTH Authentication required.")
# Allowed before AUTH. Redis 7 also requires AUTH for PING; we let it through so health
# checks work without the password (it reveals nothing).
_NOAUTH_ALLOWED = frozenset((b"auth", b"hello", b"quit", b"ping"))


class RespServer:
    """Shared state of all client connections of one node."""

    def __init__(self, api: NodeAPI, config: ServerConfig) -> None:
        self.api = api
        self.config = config
        self.connections: set[RespConnection] = set()
        self.started = time.monotonic()
        self.port = 0
        self._next_client_id = 0
        self.server: asyncio.Server | None = None
        self.max_clients = config.max_clients
        self.refused = 0  # connections refused over max_clients, since start
        self._refusal_logged = -1.0

    def note_refused(self) -> None:
        """Log refusals over max_clients at most once a minute (a flood must not
        flood the log too)."""
        now = time.monotonic()
        if self._refusal_logged < 0 or now - self._refusal_logged >= 60.0:
            self._refusal_logged = now
            log.warning("refusing client connections: max_clients (%d) reached "
                        "(%d refused since start)", self.max_clients, self.refused)

    def next_client_id(self) -> int:
        self._next_client_id += 1
        return self._next_client_id

    async def start(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: RespConnection(self), host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.server

    async def close(self) -> None:
        """Stop listening and drop every client connection."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.abort()
        if self.server is not None:
            await self.server.wait_closed()


async def serve_resp(
    api: NodeAPI, host: str, port: int, password: str | None = None, **options: Any
) -> asyncio.Server:
    """Start serving RESP on host:port (0 = any free port). ``options`` are
    :class:`ServerConfig` fields. Closing the returned server stops listening only; use
    :class:`RespServer` directly to also drop the client connections."""
    resp = RespServer(api, ServerConfig(password=password, **options))
    return await resp.start(host, port)


class RespConnection(asyncio.Protocol):
    """One client. Input is parsed as it arrives into a queue; one task runs the queued
    commands in order (starting writes without waiting for them); replies are written in
    request order as they complete."""

    def __init__(self, server: RespServer) -> None:
        self.srv = server
        self.api = server.api
        self.cfg = server.config
        self.client_id = server.next_client_id()
        self.name: bytes | None = None
        self.authenticated = server.config.password is None
        self.readonly = False  # READONLY: serve reads locally without the barrier
        self.proto = 2  # RESP version, 3 after HELLO 3
        self.multi: list[list[bytes]] | None = None  # commands queued since MULTI
        self.multi_failed = False
        self.multi_bytes = 0  # upper bound of the RAFT.EXEC entry the queue would become
        self.addr = ""
        self.last_command = b""
        self._parser = RequestParser(server.config, preauth=not self.authenticated)
        self._queue: collections.deque[list[bytes] | _Fatal] = collections.deque()
        self._replies: collections.deque[asyncio.Future | _Ready] = collections.deque()
        self._last_write: asyncio.Future | None = None   # see _before_read
        self._last_write_index = 0   # log index of this connection's last write
        self._wakeup = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reading_paused = False
        self._input_closed = False  # EOF, protocol error or QUIT: read nothing more
        self._close_when_flushed = False
        self._out = bytearray()  # encoded replies not yet handed to the transport
        self._write_scheduled = False
        self._transport: asyncio.Transport | None = None
        self._runner: asyncio.Task | None = None
        self._auth_timer: asyncio.TimerHandle | None = None
        self._refused = False  # over max_clients: answered and closed, never served
        self._eof_held = False  # EOF came while the parser was held after AUTH

    # ----------------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.addr = f"{peer[0]}:{peer[1]}" if peer else "?"
        if len(self.srv.connections) >= self.srv.max_clients:
            self._refuse()
            return
        self.srv.connections.add(self)
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._run())
        if not self.authenticated:
            self._auth_timer = loop.call_later(self.cfg.auth_timeout, self._auth_expired)

    def _refuse(self) -> None:
        """Over max_clients: say so and close, as Redis does, before reading anything
        (the connection is never counted or served)."""
        self._refused = self._input_closed = True
        self.srv.refused += 1
        self.srv.note_refused()
        assert self._transport is not None
        self._transport.write(b"-ERR max number of clients reached\r\n")
        self._transport.close()

    def _auth_expired(self) -> None:
        """A connection that has not authenticated in time is closed: idle or slow
        unauthenticated clients must not hold descriptors and buffers forever."""
        self._auth_timer = None
        if not self.authenticated:
            log.debug("client %d (%s): closed: not authenticated within %gs",
                      self.client_id, self.addr, self.cfg.auth_timeout)
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self._input_closed:
            return
        self._parse(self._parser.feed, data)
        if self._parser.held:
            self._pause_reading()  # until the AUTH that held the parser has run
        if len(self._queue) + len(self._replies) > self.cfg.max_pipeline:
            self._pause_reading()
        self._wakeup.set()

    def _parse(self, fn: Callable[..., list[list[bytes]]], *args: Any) -> None:
        """Queue the commands ``fn`` parses; on a framing error queue the commands
        before it, then the error reply and the close."""
        try:
            self._queue.extend(fn(*args))
        except ProtocolError as e:
            self._queue.extend(self._parser.pending)  # answer what came before the error
            self._queue.append(_Fatal(str(e)))
            self._stop_input()
        except Exception as e:
            # A parser bug must cost this connection only, with one line, not a traceback.
            log.warning("client %d (%s): unparsable request: %s: %s", self.client_id,
                        self.addr, type(e).__name__, _one_line(str(e))[:200])
            self._queue.extend(self._parser.pending)
            self._queue.append(_Fatal("ERR Protocol error: invalid request"))
            self._stop_input()

    def _resume_parser(self) -> None:
        """The AUTH/HELLO that held the parser has run: parse what followed it."""
        self._parse(self._parser.resume, self.authenticated)
        if not self._parser.held:
            if self._eof_held:
                self._eof_held = False
                self._queue.append(_Fatal(""))
            self._maybe_resume_reading()

    def eof_received(self) -> bool:
        # The client closed its side; finish what it sent, then close (True keeps the
        # transport open for our replies).
        self._input_closed = True
        if self._parser.held:
            self._eof_held = True  # after the requests still held in the parser
        else:
            self._queue.append(_Fatal(""))
        self._wakeup.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.srv.connections.discard(self)
        self._input_closed = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._runner is not None:
            self._runner.cancel()
        # In-flight proposals are left to finish: cancelling them would not un-propose.

    def pause_writing(self) -> None:
        self._can_write.clear()  # the client is not reading its replies: stop executing

    def resume_writing(self) -> None:
        self._can_write.set()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _stop_input(self) -> None:
        self._input_closed = True
        self._pause_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport and not self._transport.is_closing():
            self._transport.pause_reading()
            self._reading_paused = True

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and not self._input_closed
            and not self._parser.held
            and len(self._queue) + len(self._replies) <= self.cfg.max_pipeline // 2
            and self._transport is not None
            and not self._transport.is_closing()
        ):
            self._transport.resume_reading()
            self._reading_paused = False

    # ----------------------------------------------------------------- replies

    def _push(self, item: asyncio.Future | _Ready) -> None:
        self._replies.append(item)
        if isinstance(item, _Ready):
            if len(self._replies) == 1:
                self._flush()
        else:
            item.add_done_callback(self._flush)

    def reply(self, value: Any) -> None:
        self._push(_Ready(value))

    async def replies_drained(self) -> None:
        while self._replies:
            self._wakeup.clear()
            await self._wakeup.wait()  # _flush sets it

    def _flush(self, _fut: object = None) -> None:
        """Encode every reply at the head of the queue that is complete, in order, into
        the output buffer; it is written once per event loop iteration, so a pipeline's
        replies leave in a few large writes rather than one syscall each."""
        transport = self._transport
        if transport is None or transport.is_closing():
            for item in self._replies:   # nobody will look at their outcome now
                if not isinstance(item, _Ready) and item.done() and not item.cancelled():
                    item.exception()
            if isinstance(_fut, asyncio.Future) and not _fut.cancelled():
                _fut.exception()
            self._replies.clear()
            return
        out, replies = self._out, self._replies
        while replies:
            head = replies[0]
            if isinstance(head, _Ready):
                value = head.value
            elif not head.done():
                break
            else:
                value = _write_reply(head)
            replies.popleft()
            try:
                encode_reply(value, out, self.proto)
            except TypeError:
                log.exception("unencodable reply %r", value)
                encode_reply(ErrorReply("ERR internal error: unencodable reply"), out)
        if (out or self._close_when_flushed) and not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_out)
        self._maybe_resume_reading()
        self._wakeup.set()  # the runner may be waiting for room in the pipeline

    def _write_out(self) -> None:
        self._write_scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._out:
            transport.write(self._out)
            self._out = bytearray()
        if not self._replies and self._close_when_flushed:
            transport.close()

    # ----------------------------------------------------------------- command loop

    async def _run(self) -> None:
        try:
            while True:
                item = self._next_item_now()
                if item is None:
                    item = await self._next_item()
                if isinstance(item, _Fatal):
                    self._finish(item.message)
                    return
                self.last_command = name = item[0].lower()
                if not self._handle_now(item, name):
                    await self._handle(item)
                if self._close_when_flushed:  # QUIT
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client %d: connection handler failed", self.client_id)
            self.abort()

    def _next_item_now(self) -> list[bytes] | _Fatal | None:
        """_next_item without awaiting, when an item is there and may run: a pipeline's
        commands then cost no coroutine switch each."""
        if self._queue and self._can_write.is_set() \
                and len(self._replies) < self.cfg.max_pipeline:
            item = self._queue.popleft()
            self._maybe_resume_reading()
            return item
        return None

    def _handle_now(self, argv: list[bytes], name: bytes) -> bool:
        """The hot commands without a coroutine: an authenticated client's write, or
        linearizable read that need not wait (RaftNode.read). False: not handled,
        use _handle."""
        if self.multi is not None or not self.authenticated or name in _LOCAL_COMMANDS:
            return False
        spec = kv.lookup_command(argv)
        if isinstance(spec, ErrorReply):
            self.reply(spec)
            return True
        if spec.write:
            self._write(argv, 0, 0)
            return True
        if spec.name == "xread" or self.readonly or self.cfg.debug_stale_reads:
            return False
        return self._read_without_waiting(argv)

    async def _next_item(self) -> list[bytes] | _Fatal:
        while True:
            await self._can_write.wait()
            if not self._queue and self._parser.held:
                self._resume_parser()
            if self._queue and len(self._replies) < self.cfg.max_pipeline:
                item = self._queue.popleft()
                self._maybe_resume_reading()
                return item
            self._wakeup.clear()
            await self._wakeup.wait()

    def _finish(self, message: str) -> None:
        if message:
            self.reply(ErrorReply(message))
        self._close_when_flushed = True
        self._stop_input()
        self._flush()

    async def _handle(self, argv: list[bytes]) -> None:
        # Redis's order: unknown command, then arity, then authentication.
        name = argv[0].lower()
        local = _LOCAL_COMMANDS.get(name)
        if self.multi is not None and name not in _NOT_QUEUED and self.authenticated:
            self._queue_in_multi(argv, local is not None)
        elif local is None:
            if not self.authenticated:
                spec = kv.lookup_command(argv)
                self.reply(spec if isinstance(spec, ErrorReply) else NOAUTH)
                return
            await self._state_machine_command(argv, 0, 0)
        elif not _arity_ok(local[0], len(argv)):
            self.reply(kv.arity_error(name.decode("latin-1")))
        elif not self.authenticated and name not in _NOAUTH_ALLOWED:
            self.reply(NOAUTH)
        else:
            await local[1](self, argv)

    def _queue_in_multi(self, argv: list[bytes], local: bool) -> None:
        """Between MULTI and EXEC: check and queue data commands; anything else fails
        the transaction (EXEC then answers EXECABORT, as in Redis)."""
        if self.multi is None:
            raise RuntimeError("_queue_in_multi outside MULTI")
        if local:
            self.multi_failed = True
            self.reply(ErrorReply("ERR Command not allowed inside a transaction"))
            return
        spec = kv.lookup_command(argv)
        if isinstance(spec, ErrorReply):
            self.multi_failed = True
            self.reply(spec)
            return
        error = self._multi_limit_error(argv)
        if error is not None:
            self.multi_failed = True
            self.multi.clear()   # EXEC will abort: keep no memory for it
            self.reply(error)
        elif not self.multi_failed:
            self.multi.append(argv)
            self.reply(_QUEUED)
        else:
            self.reply(_QUEUED)  # as Redis: queued, but EXEC answers EXECABORT

    def _multi_limit_error(self, argv: list[bytes]) -> ErrorReply | None:
        """Bound a transaction: EXEC makes the whole queue one log entry, so its bytes
        are bounded by max_entry_bytes, and its length by max_multi_commands (it is
        applied in one step on the event loop)."""
        if self.multi_failed:
            return None
        if self.multi is not None and len(self.multi) >= self.cfg.max_multi_commands:
            return ErrorReply(f"ERR MULTI queue too long: more than {self.cfg.max_multi_commands} "
                              f"commands (limits.max_multi_commands); the transaction is discarded")
        self.multi_bytes += exec_item_size_bound(argv)
        size = self.multi_bytes + EXEC_ENVELOPE
        if size > self.cfg.max_entry_bytes:
            return ErrorReply(too_large_message(size, self.cfg.max_entry_bytes)
                              + "; the transaction is discarded")
        return None

    async def _state_machine_command(self, argv: list[bytes], client_id: int, seq: int
                                     ) -> None:
        spec = kv.lookup_command(argv)
        if isinstance(spec, ErrorReply):
            self.reply(spec)
        elif spec.write:
            self._write(argv, client_id, seq)
        elif spec.name == "xread":
            await self._xread(argv)
        else:
            await self._read(argv)

    # ----------------------------------------------------------------- writes and reads

    def _write(self, argv: list[bytes], client_id: int, seq: int) -> None:
        """A write command: refused if its entry would be too large, else proposed."""
        size = command_size_bound(argv)
        if size > self.cfg.max_entry_bytes:
            self.reply(ErrorReply(too_large_message(size, self.cfg.max_entry_bytes)))
        else:
            self._propose(argv, client_id, seq)

    def _propose(self, argv: list[bytes], client_id: int, seq: int) -> None:
        data = kv.encode_command(client_id, seq, argv, time_ms=now_ms())
        try:
            index, fut = self.api.submit(data)
        except NotLeaderError as e:
            self.reply(_not_leader_reply(e))
            return
        except ValueError as e:   # refused before it entered the log (e.g. too large)
            self.reply(ErrorReply(_one_line(str(e) if str(e).startswith("ERR") else f"ERR {e}")))
            return
        self._last_write = fut
        self._last_write_index = index
        self._push(fut)

    async def _before_read(self) -> ErrorReply | None:
        """Order this read after the connection's earlier writes, then make it
        linearizable (unless READONLY). Returns an error reply if it cannot be served.

        Waiting for the connection's last write is enough: writes resolve in log
        order (applied, or failed from the first lost index on, or timed out in
        deadline order), so once it is done every earlier one is."""
        last = self._last_write
        if last is not None:
            if not last.done():
                await asyncio.wait((last,))
            self._last_write = None
        if self.readonly or self.cfg.debug_stale_reads:   # the latter: a planted bug
            return None
        try:
            await self.api.read_barrier()
        except NotLeaderError as e:
            return _not_leader_reply(e)
        except asyncio.TimeoutError:
            return ErrorReply("TRYAGAIN read barrier timed out")
        return None

    async def _read(self, argv: list[bytes]) -> None:
        if not (self.readonly or self.cfg.debug_stale_reads) and self._read_without_waiting(argv):
            return
        err = await self._before_read()
        self.reply(err if err is not None else self.api.state_machine.read(argv, now_ms()))

    def _read_without_waiting(self, argv: list[bytes]) -> bool:
        """Serve a linearizable read without stopping this connection's pipeline
        (NodeAPI.read): it is evaluated after this connection's earlier writes and
        before its later ones, and answered in order once leadership is confirmed.
        False if the node cannot do that now (the caller waits instead)."""
        sm = self.api.state_machine
        try:
            fut = self.api.read(lambda: sm.read(argv, now_ms()), self._last_write_index)
        except NotLeaderError as e:
            self.reply(_not_leader_reply(e))
            return True
        if fut is None:
            return False
        self._push(fut)
        return True

    async def _xread(self, argv: list[bytes]) -> None:
        args = kv.parse_xread(argv)
        if isinstance(args, ErrorReply):
            self.reply(args)
            return
        err = await self._before_read()
        if err is not None:
            self.reply(err)
            return
        sm = self.api.state_machine
        applied = sm.last_applied
        result = sm.xread(args, argv[len(argv) - len(args.ids) :], now_ms())
        if result is NULL_ARRAY and args.block_ms is not None:
            result = await self._xread_block(args, applied)
        if self.proto == 3 and isinstance(result, list):
            result = {key: entries for key, entries in result}  # RESP3 XREAD is a map
        self.reply(result)

    async def _xread_block(self, args: kv.XReadArgs, applied: int) -> Reply:
        """Wait for new applies until data arrives or BLOCK's timeout (0 = forever)."""
        sm = self.api.state_machine
        deadline = None if args.block_ms == 0 else time.monotonic() + args.block_ms / 1000
        while True:
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return NULL_ARRAY
            await self.api.wait_applied(applied, remaining)
            if sm.last_applied == applied:
                continue  # a timeout (or a spurious wakeup): re-check the deadline
            applied = sm.last_applied
            result = sm.xread(args, None, now_ms())
            if result is not NULL_ARRAY:
                return result


# --------------------------------------------------------------------------- local commands
# Commands the server answers itself (connection state, introspection). Each entry is
# (arity, coroutine function); arity is checked before the call.

_Handler = Callable[[RespConnection, list[bytes]], Awaitable[None]]
_LOCAL_COMMANDS: dict[bytes, tuple[int, _Handler]] = {}


def _arity_ok(arity: int, argc: int) -> bool:
    return argc == arity if arity >= 0 else argc >= -arity


def _local(name: str, arity: int) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        _LOCAL_COMMANDS[name.encode()] = (arity, fn)
        return fn

    return register


@_local("ping", -1)
async def _ping(c: RespConnection, argv: list[bytes]) -> None:
    if len(argv) > 2:
        c.reply(kv.arity_error("ping"))
    else:
        c.reply(argv[1] if len(argv) == 2 else Status("PONG"))


@_local("echo", 2)
async def _echo(c: RespConnection, argv: list[bytes]) -> None:
    c.reply(argv[1])


@_local("quit", -1)
async def _quit(c: RespConnection, argv: list[bytes]) -> None:
    c.reply(OK)
    c._finish("")


_QUEUED = Status("QUEUED")
# Commands that act immediately even between MULTI and EXEC.
_NOT_QUEUED = frozenset((b"multi", b"exec", b"discard", b"quit", b"watch", b"unwatch"))


@_local("multi", 1)
async def _multi(c: RespConnection, argv: list[bytes]) -> None:
    if c.multi is not None:
        c.reply(ErrorReply("ERR MULTI calls can not be nested"))
    else:
        c.multi, c.multi_failed, c.multi_bytes = [], False, 0
        c.reply(OK)


@_local("exec", 1)
async def _exec(c: RespConnection, argv: list[bytes]) -> None:
    """The queued commands go into the log as one RAFT.EXEC entry: atomic, and applied
    (reads included) in order with nothing in between."""
    queued, failed = c.multi, c.multi_failed
    c.multi, c.multi_failed = None, False
    if queued is None:
        c.reply(ErrorReply("ERR EXEC without MULTI"))
    elif failed:
        c.reply(ErrorReply("EXECABORT Transaction discarded because of previous errors."))
    elif not queued:
        c.reply([])
    else:
        c._propose([b"RAFT.EXEC", *(kv.encode_argv(q) for q in queued)], 0, 0)


@_local("discard", 1)
async def _discard(c: RespConnection, argv: list[bytes]) -> None:
    if c.multi is None:
        c.reply(ErrorReply("ERR DISCARD without MULTI"))
    else:
        c.multi, c.multi_failed = None, False
        c.reply(OK)


@_local("watch", -2)
async def _watch(c: RespConnection, argv: list[bytes]) -> None:
    # Optimistic locking would need the version of each key at EXEC time in the log.
    c.reply(ErrorReply("ERR WATCH is not supported; MULTI/EXEC alone is atomic"))


@_local("unwatch", 1)
async def _unwatch(c: RespConnection, argv: list[bytes]) -> None:
    c.reply(OK)


@_local("select", 2)
async def _select(c: RespConnection, argv: list[bytes]) -> None:
    n = kv.parse_int(argv[1])
    if n is None:
        c.reply(kv.E_NOT_INT)
    else:  # one replicated keyspace
        c.reply(OK if n == 0 else ErrorReply("ERR DB index is out of range"))


@_local("readonly", 1)
async def _readonly(c: RespConnection, argv: list[bytes]) -> None:
    c.readonly = True
    c.reply(OK)


@_local("readwrite", 1)
async def _readwrite(c: RespConnection, argv: list[bytes]) -> None:
    c.readonly = False
    c.reply(OK)


def _check_password(c: RespConnection, username: bytes, password: bytes) -> ErrorReply | None:
    expected = c.cfg.password
    if expected is None:   # callers check first; explicit so that -O cannot turn it into a crash
        return ErrorReply("ERR AUTH <password> called without any password configured for "
                          "the default user.")
    ok = username == b"default" and hmac.compare_digest(password, expected.encode())
    if not ok:
        return ErrorReply("WRONGPASS invalid username-password pair or user is disabled.")
    c.authenticated = True
    return None


@_local("auth", -2)
async def _auth(c: RespConnection, argv: list[bytes]) -> None:
    if len(argv) > 3:
        c.reply(kv.E_SYNTAX)
    elif c.cfg.password is None:
        c.reply(ErrorReply(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        ))
    else:
        user = argv[1] if len(argv) == 3 else b"default"
        c.reply(_check_password(c, user, argv[-1]) or OK)


@_local("hello", -1)
async def _hello(c: RespConnection, argv: list[bytes]) -> None:
    if len(argv) > 1:
        proto = kv.parse_int(argv[1])
        if proto is None:
            c.reply(ErrorReply("ERR Protocol version is not an integer or out of range"))
            return
        if proto not in (2, 3):
            c.reply(ErrorReply("NOPROTO unsupported protocol version"))
            return
    else:
        proto = c.proto
    i, name = 2, None
    while i < len(argv):
        opt, more = argv[i].lower(), len(argv) - i - 1
        if opt == b"auth" and more >= 2:
            if c.cfg.password is None:
                err = None  # Redis accepts any credentials when none are configured
            else:
                err = _check_password(c, argv[i + 1], argv[i + 2])
            if err is not None:
                c.reply(err)
                return
            i += 3
        elif opt == b"setname" and more >= 1:
            name = argv[i + 1]
            i += 2
        else:
            c.reply(ErrorReply(f"ERR Syntax error in HELLO option '{_text(argv[i])}'"))
            return
    if not c.authenticated:
        c.reply(ErrorReply(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise "
            "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
            "client and select the RESP protocol version at the same time"
        ))
        return
    if name is not None:
        if not _valid_client_name(name):
            c.reply(_BAD_NAME)
            return
        c.name = name or None
    await c.replies_drained()  # replies still queued were asked for in the old protocol
    c.proto = proto  # this reply already uses the new protocol, as in Redis
    role = "master" if _status(c).get("role") == "leader" else "replica"
    c.reply({b"server": b"redis", b"version": REDIS_COMPAT_VERSION.encode(), b"proto": proto,
             b"id": c.client_id, b"mode": b"standalone", b"role": role.encode(),
             b"modules": []})


_BAD_NAME = ErrorReply(
    "ERR Client names cannot contain spaces, newlines or special characters."
)


def _valid_client_name(name: bytes) -> bool:
    return all(33 <= b <= 126 for b in name)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


@_local("client", -2)
async def _client(c: RespConnection, argv: list[bytes]) -> None:
    sub = argv[1].lower()
    arity = {b"id": 2, b"getname": 2, b"setname": 3, b"setinfo": 4, b"info": 2,
             b"list": -2, b"help": 2}.get(sub)
    if arity is None:
        c.reply(ErrorReply(_one_line(
            f"ERR unknown subcommand '{_text(argv[1])[:128]}'. Try CLIENT HELP.")))
    elif not _arity_ok(arity, len(argv)):
        c.reply(kv.arity_error(f"client|{sub.decode('latin-1')}"))
    elif sub == b"id":
        c.reply(c.client_id)
    elif sub == b"getname":
        c.reply(c.name)
    elif sub == b"setname":
        if not _valid_client_name(argv[2]):
            c.reply(_BAD_NAME)
        else:
            c.name = argv[2] or None
            c.reply(OK)
    elif sub == b"setinfo":  # redis-py sends LIB-NAME/LIB-VER on connect
        if argv[2].lower() in (b"lib-name", b"lib-ver"):
            c.reply(OK)
        else:
            c.reply(ErrorReply(_one_line(f"ERR Unrecognized option '{_text(argv[2])}'")))
    elif sub == b"info":
        c.reply(_client_line(c).encode())
    elif sub == b"list":
        c.reply("".join(_client_line(x) for x in sorted(
            c.srv.connections, key=lambda x: x.client_id)).encode())
    else:
        c.reply([b"CLIENT ID", b"CLIENT GETNAME", b"CLIENT SETNAME <name>",
                 b"CLIENT SETINFO LIB-NAME|LIB-VER <value>", b"CLIENT INFO", b"CLIENT LIST"])


def _client_line(c: RespConnection) -> str:
    name = (c.name or b"").decode("latin-1")
    cmd = c.last_command.decode("latin-1")
    return f"id={c.client_id} addr={c.addr} name={name} db=0 cmd={cmd}\n"


@_local("command", -1)
async def _command(c: RespConnection, argv: list[bytes]) -> None:
    """Enough of COMMAND for redis-cli and client libraries to start cleanly."""
    sub = argv[1].lower() if len(argv) > 1 else b""
    if sub == b"":
        c.reply([_command_info(n) for n in _all_command_names()])
    elif sub == b"count":
        c.reply(len(_all_command_names()))
    elif sub == b"list":
        c.reply([n.encode() for n in _all_command_names()])
    elif sub == b"info":
        names = [n.lower().decode("latin-1") for n in argv[2:]] or _all_command_names()
        c.reply([_command_info(n) for n in names])
    elif sub == b"docs":
        c.reply([])  # no docs: redis-cli falls back to its built-in hints
    else:
        c.reply(ErrorReply(_one_line(
            f"ERR unknown subcommand '{_text(argv[1])[:128]}'. Try COMMAND HELP.")))


def _all_command_names() -> list[str]:
    local = [n.decode() for n in _LOCAL_COMMANDS]
    return sorted(set(local) | set(kv.command_names()))


# (first key, last key, step) for COMMAND INFO; the rest take one key at argv[1].
_KEY_POSITIONS = {
    "mget": (1, -1, 1), "exists": (1, -1, 1), "del": (1, -1, 1), "unlink": (1, -1, 1),
    "mset": (1, -1, 2), "dbsize": (0, 0, 0), "flushdb": (0, 0, 0), "flushall": (0, 0, 0),
    "raft.session": (0, 0, 0), "xread": (0, 0, 0),
}


def _command_info(name: str) -> list | None:
    """Redis's COMMAND INFO shape: name, arity, flags, first key, last key, key step."""
    spec = kv.command_spec(name.encode())
    if spec is not None:
        flags = [Status("write")] if spec.write else [Status("readonly")]
        first, last, step = _KEY_POSITIONS.get(name, (1, 1, 1))
        return [name.encode(), spec.arity, flags, first, last, step]
    local = _LOCAL_COMMANDS.get(name.encode())
    if local is not None:
        return [name.encode(), local[0], [Status("fast")], 0, 0, 0]
    return None


def _status(c: RespConnection) -> dict:
    try:
        return dict(c.api.status())
    except Exception:
        log.exception("status() failed")
        return {}


@_local("info", -1)
async def _info(c: RespConnection, argv: list[bytes]) -> None:
    wanted = {a.lower().decode("latin-1") for a in argv[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(_INFO_SECTIONS)
    text = "\r\n".join(_INFO_SECTIONS[s](c) for s in _INFO_SECTIONS if s in wanted)
    c.reply(text.encode())


def _info_server(c: RespConnection) -> str:
    return _section("Server", {
        "redis_version": REDIS_COMPAT_VERSION,
        "redis_mode": "standalone",
        "server": "raft",
        "process_id": os.getpid(),
        "tcp_port": c.srv.port,
        "uptime_in_seconds": int(time.monotonic() - c.srv.started),
    })


def _info_clients(c: RespConnection) -> str:
    return _section("Clients", {"connected_clients": len(c.srv.connections),
                                "maxclients": c.srv.max_clients,
                                "rejected_connections": c.srv.refused})


def _info_replication(c: RespConnection) -> str:
    status = _status(c)
    return _section("Replication", {
        "role": "master" if status.get("role") == "leader" else "slave",
        "raft_leader": status.get("leader", ""),
    })


def _info_raft(c: RespConnection) -> str:
    fields: dict[str, object] = {f"raft_{k}": v for k, v in _status(c).items()}
    sm = c.api.state_machine
    fields["raft_sm_last_applied"] = sm.last_applied
    fields["raft_sm_clock_ms"] = sm.clock_ms
    fields["raft_sm_sessions"] = sm.session_count()
    return _section("Raft", fields)


def _info_keyspace(c: RespConnection) -> str:
    sm = c.api.state_machine
    if not sm.dbsize():
        return _section("Keyspace", {})
    return _section("Keyspace", {
        "db0": f"keys={sm.dbsize()},expires={sm.expires_count()},avg_ttl=0"})


def _section(title: str, fields: dict[str, object]) -> str:
    lines = [f"# {title}"]
    lines += [f"{k}:{_one_line(str(v))}" for k, v in fields.items()]
    return "\r\n".join(lines) + "\r\n"


_INFO_SECTIONS: dict[str, Callable[[RespConnection], str]] = {
    "server": _info_server,
    "clients": _info_clients,
    "replication": _info_replication,
    "raft": _info_raft,
    "keyspace": _info_keyspace,
}


@_local("raft.seq", -4)
async def _raft_seq(c: RespConnection, argv: list[bytes]) -> None:
    """RAFT.SEQ <session> <seq> <command> [args...]: run a write exactly once."""
    client_id, seq = kv.parse_int(argv[1]), kv.parse_int(argv[2])
    if client_id is None or seq is None:
        c.reply(kv.E_NOT_INT)
        return
    if client_id < 1 or seq < 1:
        c.reply(ErrorReply("ERR RAFT.SEQ session id and seq must be >= 1"))
        return
    inner = argv[3:]
    if inner[0].lower() in _LOCAL_COMMANDS or inner[0].lower() == b"raft.session":
        c.reply(ErrorReply(_one_line(
            f"ERR RAFT.SEQ cannot wrap '{_text(inner[0])}': only data commands")))
        return
    # Reads need no session: they run as plain reads (and consume no seq).
    await c._state_machine_command(inner, client_id, seq)
