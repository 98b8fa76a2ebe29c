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
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any, Callable, cast

from raft import kv
from raft.api import NodeAPI, NotLeaderError, ReadTimeoutError, TryAgainError
from raft.kv import NULL_ARRAY, OK, ErrorReply, Reply, arity_ok
from raft.limits import EXEC_ENVELOPE, command_size_bound, exec_item_size_bound, too_large_message
from raft.resp.commands import _LOCAL_COMMANDS, _NOT_QUEUED, _QUEUED, _not_leader_reply
from raft._fastpath import encode_replies as _encode_replies
from raft._fastpath import encode_run_replies as _encode_run_replies
from raft._fastpath import take_plain_run as _take_plain_run
from raft.resp.protocol import ProtocolError, RequestParser, ServerConfig, _one_line, encode_reply

log = logging.getLogger("raft.resp")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- server


def _write_reply(fut: asyncio.Future[Any]) -> Any:
    """The reply to a write whose future (NodeAPI.submit) is done."""
    if fut.cancelled():
        return ErrorReply("ERR request cancelled")
    e = fut.exception()
    if e is None:
        return fut.result()
    return _failure_reply(e)


def _failure_reply(e: BaseException) -> ErrorReply:
    """The reply to a write that failed with ``e`` after it was proposed."""
    if isinstance(e, NotLeaderError):
        return _not_leader_reply(e)
    if isinstance(e, ReadTimeoutError):
        return ErrorReply("TRYAGAIN read barrier timed out")
    if isinstance(e, asyncio.TimeoutError):
        return ErrorReply("TRYAGAIN write timed out; it may or may not have been applied")
    if isinstance(e, TryAgainError):
        return ErrorReply(_one_line(f"TRYAGAIN {e}"))
    log.error("write failed: %r", e)
    return ErrorReply(_one_line(f"ERR internal error: {type(e).__name__}: {e}"))


def _refusal_reply(e: Exception) -> ErrorReply:
    """The reply to a write the node refused before it entered the log."""
    if isinstance(e, NotLeaderError):
        return _not_leader_reply(e)
    if isinstance(e, TryAgainError):   # a leadership transfer: not in the log, retry
        return ErrorReply(_one_line(f"TRYAGAIN {e}"))
    # ValueError: refused before it entered the log (e.g. too large)
    return ErrorReply(_one_line(str(e) if str(e).startswith("ERR") else f"ERR {e}"))


def _encode_batch(batch: _Batch, out: bytearray, proto: int) -> None:
    """The replies of a done _Batch, in order."""
    fut = batch.future
    if fut.cancelled() or fut.exception() is not None:
        error = _write_reply(fut)   # a read's failure, or a cancel: each one failed alike
        for _ in range(batch.count):
            encode_reply(error, out, proto)
        return
    outcomes = fut.result()
    if batch.run is not None:
        _encode_run(batch.run, outcomes, out, proto)
    elif all(v is OK for v in outcomes):
        out += _OK_LINE * len(outcomes)   # the common case: a pipeline of SETs
    else:
        _encode_replies(outcomes, out, proto, OK, _encode_outcome)   # GETs' values: in C


def _encode_outcome(value: Any, out: bytearray, proto: int) -> None:
    """One outcome of a batch: a reply, or the exception its command failed with."""
    _encode_one(_failure_reply(value) if isinstance(value, BaseException) else value,
                out, proto)


def _encode_run(run: list[list[bytes]], outcomes: list[Any], out: bytearray,
                proto: int) -> None:
    """The replies of a run of SETs with GETs among them, in the run's order:
    ``outcomes`` are the SETs', then the GETs' values (read_gets, all in one list) or
    the exception their read failed with (NodeAPI.submit_batch with read_before). A
    GET's value assumed the run's SETs before it applied: if the last of them was
    not (lost with a deposed leader's log, or its outcome unknown), the GET fails
    (_read_failure_reply) as that SET did."""
    values = outcomes[-1]
    if type(values) is list and all(o is OK for o in outcomes[:-1]):
        _encode_run_replies(run, values, out, proto, OK, _encode_one)   # the common case
        return
    read_failure = values if isinstance(values, BaseException) else None
    gets = iter(values) if read_failure is None else iter(())
    s, before = 0, outcomes[0]
    for argv in run:
        if len(argv) == 3:        # a SET (take_plain_run takes SETs and GETs only)
            before = outcomes[s]
            s += 1
            if before is OK:
                out += _OK_LINE
            else:
                _encode_one(_failure_reply(before) if isinstance(before, BaseException)
                            else before, out, proto)
            continue
        value = next(gets, None)
        if read_failure is not None:
            _encode_one(_read_failure_reply(read_failure), out, proto)
        elif isinstance(before, BaseException):
            _encode_one(_read_failure_reply(before), out, proto)
        else:
            _encode_one(value, out, proto)


def _read_failure_reply(e: BaseException) -> ErrorReply:
    """A GET of a run that failed as a write did: a timeout says so as a read's does
    (nothing to retry with caution: a read has no effect)."""
    if isinstance(e, asyncio.TimeoutError):
        e = ReadTimeoutError()
    return _failure_reply(e)


def _encode_one(value: Any, out: bytearray, proto: int) -> None:
    """encode_reply, or an error reply if ``value`` cannot be encoded (a bug): one
    reply per command whatever happens, or the queue behind it would stall."""
    try:
        encode_reply(value, out, proto)
    except Exception:
        log.exception("unencodable reply %r", value)
        encode_reply(ErrorReply("ERR internal error: unencodable reply"), out)


def _read_each(sm: Any, run: list[list[bytes]]) -> list[Any]:
    """The replies of the ``GET key`` commands of a run, all at the state machine's
    current place (plus the run's SETs before each: KVStateMachine.read_gets)."""
    return sm.read_gets(run, now_ms())


def _consume_outcome(fut: asyncio.Future[Any]) -> None:
    """Mark a reply's outcome as seen (a closed connection's), so asyncio does not log
    its exception as never retrieved."""
    if not fut.cancelled():
        fut.exception()


class _Ready:
    """A reply already computed, queued behind replies still in flight."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Batch:
    """The replies to ``count`` commands run together: writes proposed together
    (NodeAPI.submit_batch), reads evaluated together (NodeAPI.read), or both (a
    submit_batch with its read_before; ``run`` is then the commands, for the order of
    the replies). One place in the reply queue, one future, whose result is the list
    of their outcomes."""

    __slots__ = ("future", "count", "run")

    def __init__(self, future: asyncio.Future[list[Any]], count: int,
                 run: list[list[bytes]] | None = None) -> None:
        self.future = future
        self.count = count
        self.run = run


class _Fatal:
    """Answer ``message`` (if any) after the queued replies, then close."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


NOAUTH = ErrorReply("NOAUTH Authentication required.")
_OK_LINE = b"+OK\r\n"
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
        self._replies: collections.deque[asyncio.Future | _Ready | _Batch] = collections.deque()
        self._batched = 0   # replies in the queue beyond one per _Batch: sum(count - 1)
        self._watched: asyncio.Future | None = None   # the head reply _flush waits on
        self._last_write: asyncio.Future | None = None   # see _before_read
        self._last_write_index = 0   # log index of this connection's last write
        self._wakeup = asyncio.Event()   # for the runner: commands queued, or room, or drained
        self._idle = False      # the runner is parked in _next_item on an empty queue
        self._draining = False  # the runner waits in replies_drained
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
        # With the runner parked on an empty queue nothing is mid-command, so the
        # commands that need no waiting can run right here, in order, without a task
        # switch per read (the common case: a client waiting for its replies).
        direct = self._idle and not self._queue
        self._parse(self._parser.feed, data)
        if self._parser.held:
            self._pause_reading()  # until the AUTH that held the parser has run
        if direct:
            try:
                self._run_ready_commands()
            except Exception:    # as the runner handles it (_run)
                log.exception("client %d: connection handler failed", self.client_id)
                self.abort()
                return
        if self._pipeline_length() > self.cfg.max_pipeline:
            self._pause_reading()
        if self._queue:
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

    def _pipeline_length(self) -> int:
        """Commands read and not yet answered: what max_pipeline bounds."""
        return len(self._queue) + len(self._replies) + self._batched

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
            and self._pipeline_length() <= self.cfg.max_pipeline // 2
            and self._transport is not None
            and not self._transport.is_closing()
        ):
            self._transport.resume_reading()
            self._reading_paused = False

    # ----------------------------------------------------------------- replies

    def _push(self, item: asyncio.Future | _Ready | _Batch) -> None:
        self._replies.append(item)
        if len(self._replies) == 1:
            self._flush()

    def _watch_head(self) -> None:
        """Flush when the reply at the head of the queue is done. Only the head is
        watched: replies leave in order, so nothing can go before it, and the flush
        then takes every reply behind it that is done too (a pipeline's writes,
        applied in one batch, cost one callback rather than one each)."""
        head = self._replies[0]
        if type(head) is _Batch:
            head = head.future
        if head is not self._watched:
            self._watched = head
            head.add_done_callback(self._flush)

    def reply(self, value: Any) -> None:
        self._push(_Ready(value))

    async def replies_drained(self) -> None:
        self._draining = True
        try:
            while self._replies:
                self._wakeup.clear()
                await self._wakeup.wait()  # _flush sets it
        finally:
            self._draining = False

    def _flush(self, _fut: object = None) -> None:
        """Encode every reply at the head of the queue that is complete, in order, into
        the output buffer. Called for the head's completion it writes at once (the
        whole batch that completed is in the buffer); otherwise the write waits for
        the end of the loop iteration. Either way a pipeline's replies leave in a few
        large writes rather than one syscall each."""
        transport = self._transport
        if transport is None or transport.is_closing():
            for item in self._replies:   # nobody will look at their outcome now
                if type(item) is _Batch:
                    item.future.add_done_callback(_consume_outcome)
                elif not isinstance(item, _Ready):
                    item.add_done_callback(_consume_outcome)
            if isinstance(_fut, asyncio.Future):
                _consume_outcome(_fut)
            self._replies.clear()
            self._batched = 0
            return
        out, replies = self._out, self._replies
        while replies:
            head = replies[0]
            if type(head) is _Batch:
                if not head.future.done():
                    self._watch_head()
                    break
                replies.popleft()
                self._batched -= head.count - 1
                _encode_batch(head, out, self.proto)
                continue
            if isinstance(head, _Ready):
                value = head.value
            elif not head.done():
                self._watch_head()
                break
            else:
                value = _write_reply(head)
            replies.popleft()
            _encode_one(value, out, self.proto)
        if out or self._close_when_flushed:
            if _fut is not None:
                # Called as the head's done-callback: every reply the same apply batch
                # resolved is drained above, so write now rather than a loop turn later.
                self._write_out()
            elif not self._write_scheduled:
                self._write_scheduled = True
                asyncio.get_running_loop().call_soon(self._write_out)
        self._maybe_resume_reading()
        if self._queue or self._draining:
            self._wakeup.set()  # the runner may be waiting for room, or for the drain

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
                self._run_ready_commands()
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

    def _run_ready_commands(self) -> None:
        """Run the queued commands that need no waiting (_plain_run, _handle_now), in
        order, until the queue is empty or its head needs the runner task (it awaits,
        or closes), or the pipeline is full, or the client is not reading: a
        pipeline's commands then cost no coroutine switch each."""
        queue = self._queue
        while queue:
            if self._plain_run():
                continue
            head = queue[0]
            if type(head) is not list or not self._can_write.is_set() \
                    or len(self._replies) + self._batched >= self.cfg.max_pipeline:
                return
            self.last_command = name = head[0].lower()
            if not self._handle_now(head, name):
                return
            queue.popleft()
            self._maybe_resume_reading()

    def _plain_run(self) -> bool:
        """The plain ``SET key value`` and ``GET key`` commands at the head of the queue
        as one run, with one place in the reply queue: the compiled ``take_plain_run``
        checks them and encodes the SETs, with no per-command Python. A run with SETs
        is one NodeAPI.submit_batch; its GETs are its read_before, each answered as
        the state right before the run's first entry plus the run's SETs before it
        (KVStateMachine.read_gets): in a pipeline's order, and with no ReadIndex
        round. A run of GETs alone is one linearizable read (NodeAPI.read). False if
        the head is not one, or the connection may not run commands now."""
        room = self._room_for_a_run()
        if room <= 0:
            return False
        # READONLY reads locally, and debug_stale_reads (a planted bug) reads at once:
        # their GETs take the general path.
        with_gets = not (self.readonly or self.cfg.debug_stale_reads)
        datas, run = _take_plain_run(self._queue, room, now_ms(), self.cfg.max_entry_bytes,
                                     with_gets)
        if not run:
            return False
        if not datas:
            return self._read_run(run)
        self.last_command = b"set"
        gets = len(run) > len(datas)
        try:
            last, fut = self.api.submit_batch(
                datas, functools.partial(_read_each, self.api.state_machine, run) if gets
                else None)
        except (NotLeaderError, TryAgainError, ValueError) as e:
            refusal = _refusal_reply(e)
            for _ in run:
                self.reply(refusal)
        else:
            self._last_write = fut
            self._last_write_index = last
            self._batched += len(run) - 1
            self._push(_Batch(fut, len(run), run if gets else None))
        # Only now: until the run is in the reply queue the pipeline looks shorter.
        self._maybe_resume_reading()
        return True

    def _room_for_a_run(self) -> int:
        """How many commands a run may take now: none inside MULTI, before AUTH or
        while the client is not reading; else the room left under max_pipeline."""
        if self.multi is not None or not self.authenticated or not self._can_write.is_set():
            return 0
        return self.cfg.max_pipeline - len(self._replies) - self._batched

    def _read_run(self, argvs: list[list[bytes]]) -> bool:
        """A run of plain ``GET key`` commands (_plain_run's) as ONE linearizable read
        (NodeAPI.read) evaluating them all at the same place in the log. False if the
        node cannot serve the read without waiting: the GETs are then put back."""
        self.last_command = b"get"
        try:
            fut = self.api.read(functools.partial(_read_each, self.api.state_machine, argvs),
                                self._last_write_index)
        except NotLeaderError as e:
            refusal = _not_leader_reply(e)
            for _ in argvs:
                self.reply(refusal)
        else:
            if fut is None:
                self._queue.extendleft(reversed(argvs))
                return False
            self._batched += len(argvs) - 1
            self._push(_Batch(fut, len(argvs)))
        self._maybe_resume_reading()   # after the push: see _plain_run
        return True

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
            if self._queue and len(self._replies) + self._batched < self.cfg.max_pipeline:
                item = self._queue.popleft()
                self._maybe_resume_reading()
                return item
            self._wakeup.clear()
            self._idle = not self._queue
            await self._wakeup.wait()
            self._idle = False

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
        elif not arity_ok(local[0], len(argv)):
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
        except (NotLeaderError, TryAgainError, ValueError) as e:
            self.reply(_refusal_reply(e))
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
