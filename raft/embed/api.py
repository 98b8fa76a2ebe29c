"""EmbeddedNode: run your own state machines on a RaftNode (asyncio).

::

    class Counter(StateMachine):
        def __init__(self): self.value = 0
        @replicated
        def incr(self, n=1):
            self.value += n
            return self.value
        def snapshot(self): return msgpack.packb(self.value)
        def restore(self, data): self.value = msgpack.unpackb(data)

    counter = Counter()
    node = EmbeddedNode(load_config("node1.toml"), counter)
    await node.start()
    await counter.incr(5)                       # through the log, exactly once
    await node.read(lambda: counter.value)      # linearizable (ReadIndex, diss. §6.4)
    node.read_stale(lambda: counter.value)      # this replica's state, maybe behind

The node is a ``raft.node.RaftNode`` (its WAL, transport, tracing, snapshots and
metrics, exactly as ``raft serve``) with no ``frontend`` (no RESP server); the embed RPC
(raft/embed/rpc.py) listens on the config's client address instead of RESP.

Calls run under a client session (diss. §6.3): each node opens one through the log on
first use and numbers its calls; a call whose outcome is unknown (a timeout, a lost
leader) is retried with the same number, and the state machine returns the first
outcome instead of applying it twice. On a follower a call is forwarded to the
leader over the embed RPC (``forward=True``, the default) or fails with ``NotLeader``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable

from raft._core import ENTRY_NORMAL
from raft.config import NodeConfig
from raft.embed.codec import (
    OP_CALL,
    OP_OPEN,
    DecodeError,
    EncodeError,
    check_args,
    decode_entry,
    encode_entry,
    error_outcome,
    ok_outcome,
)
from raft.embed.errors import (
    CallTimeout,
    EmbedError,
    LogCompacted,
    NotLeader,
    SessionExpired,
    decode_outcome,
)
from raft.embed.machine import Replica, StateMachine
from raft.embed.rpc import ST_NOT_LEADER, ST_OK, ConnectionPool, RpcServer
from raft.net.auth import AuthError
from raft.node import RaftNode
from raft.api import NotLeaderError

__all__ = ["EmbeddedNode", "ClientSession", "LeaderInfo", "TailEntry", "DEFAULT_CALL_TIMEOUT"]

log = logging.getLogger("raft.embed")

DEFAULT_CALL_TIMEOUT = 10.0
#: How long one attempt of a forwarded call may take before it is retried elsewhere
#: (a leader cut off without closing the connection answers nothing).
FORWARD_TRY_TIMEOUT = 3.0
#: Pause between attempts while no leader is known (an election is under way).
RETRY_PAUSE = 0.02
#: How often a node that knows no leader asks its peers for one (seconds).
HINT_PERIOD = 0.2


class ClientSession:
    """A caller's session id and call numbering (diss. §6.3). ``ack`` is the lowest
    number still waiting for an answer: the state machine may forget outcomes below."""

    def __init__(self, session_id: int, window: int = 1024) -> None:
        self.id = session_id
        #: Calls in flight stay within ``window`` numbers of the lowest one still
        #: unanswered (the state machine's session_window: it forgets outcomes more than
        #: ``window`` below the newest call it applied). Counting calls is not enough:
        #: with 44 unanswered and 45 answered, 44, 46, 47, 48 are four calls spanning
        #: five numbers, and 48's apply would push the floor past 44, so 44 retried
        #: after a leader change failed with SessionExpired.
        self.window = window
        self._room = asyncio.Event()
        self._next = 1
        self._outstanding: set[int] = set()
        # Seqs are begun in ascending order, so the unanswered ones form a FIFO whose
        # head, once answered ones are skipped, is the lowest: O(1) amortized.
        self._order: deque[int] = deque()

    def begin(self) -> int:
        seq = self._next
        self._next += 1
        self._outstanding.add(seq)
        self._order.append(seq)
        return seq

    def end(self, seq: int) -> None:
        self._outstanding.discard(seq)
        self._room.set()

    @contextlib.asynccontextmanager
    async def call_slot(self) -> AsyncIterator[int]:
        """A seq for one call, once it is within ``window`` of the lowest unanswered
        one (waiting for earlier calls to be answered if not); ended on exit."""
        while self._next - self.ack >= self.window:
            self._room.clear()
            await self._room.wait()
        seq = self.begin()
        try:
            yield seq
        finally:
            self.end(seq)

    @property
    def ack(self) -> int:
        order, outstanding = self._order, self._outstanding
        while order and order[0] not in outstanding:
            order.popleft()
        return order[0] if order else self._next


@dataclass(frozen=True)
class LeaderInfo:
    """A leadership change as this node saw it (leader 0: none known)."""

    leader_id: int
    term: int
    is_leader: bool


@dataclass(frozen=True)
class TailEntry:
    """One committed call from the log (``EmbeddedNode.tail``)."""

    index: int
    term: int
    target: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    time_ms: int
    version: int
    client_id: int
    seq: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EmbeddedNode:
    """One Raft server running user state machines (asyncio; see the module docstring).

    ``machines``: one StateMachine or several with distinct ``machine_name``s.
    ``forward``: on a follower, forward calls to the leader (else raise NotLeader).
    ``serve_rpc``: serve the embed RPC on the config's client address (needed for
    forwarding to this node and for ``ClusterClient``).
    """

    def __init__(self, config: NodeConfig, machines: StateMachine | Iterable[StateMachine], *,
                 forward: bool = True, serve_rpc: bool = True,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT, max_sessions: int = 10_000,
                 session_window: int = 1024, seed: int | None = None) -> None:
        ms = [machines] if isinstance(machines, StateMachine) else list(machines)
        by_name: dict[str, StateMachine] = {}
        for m in ms:
            if m.machine_name in by_name:
                raise ValueError(f"two state machines named {m.machine_name!r}; set .name")
            if m._node is not None:
                raise ValueError(f"{m.machine_name} is already attached to a node")
            by_name[m.machine_name] = m
        if not by_name:
            raise ValueError("an EmbeddedNode needs at least one state machine")
        self.config = config
        self.machines = by_name
        self.forward = forward
        self.serve_rpc = serve_rpc
        self.call_timeout = call_timeout
        self.replica = Replica(by_name, max_sessions=max_sessions, session_window=session_window)
        self.raft = RaftNode(config, state_machine=self.replica,  # type: ignore[arg-type]
                             seed=seed)
        for m in by_name.values():
            m._node = self
        self._rpc: RpcServer | None = None
        self._pool = ConnectionPool({i: p.client for i, p in config.peers.items()},
                                    config.secret, client_id=config.node_id)
        self._session: ClientSession | None = None
        self._session_task: asyncio.Task[ClientSession] | None = None
        self._leader_cbs: list[Callable[[LeaderInfo], None]] = []
        self._leader_changed = asyncio.Event()
        self._last_leader = LeaderInfo(0, 0, False)
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync_thread: int | None = None   # set by SyncNode: its loop's thread
        self._stopped = False
        # Proposals waiting here -> the term they were made in; the ones the watcher
        # cancelled because that term's leadership ended (_watch_leadership).
        self._inflight: dict[asyncio.Future[Any], int] = {}
        self._deposed: set[asyncio.Future[Any]] = set()
        self._hint_task: asyncio.Future[int] | None = None
        self._hint_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._leader_changed = asyncio.Event()
        await self.raft.start()
        try:
            if self.serve_rpc:
                self._rpc = RpcServer(self, *self.config.me.client)
                await self._rpc.start()
        except BaseException:
            await self.raft.stop()
            raise
        self._watch = asyncio.create_task(self._watch_leadership(),
                                          name=f"embed-leader-{self.id}")

    async def stop(self) -> None:
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._session_task is not None:
            self._session_task.cancel()
            await asyncio.gather(self._session_task, return_exceptions=True)
        if self._rpc is not None:
            await self._rpc.close()
        await self._pool.close()
        await self.raft.stop()

    # --- who leads ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.config.node_id

    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    def _core(self) -> Any:
        """RaftNode.core, or None before start (its property asserts it is set)."""
        try:
            return self.raft.core
        except AssertionError:
            return None

    @property
    def leader_id(self) -> int:
        """The leader this node knows of; 0 when none is (an election is under way)."""
        core = self._core()
        return core.leader if core is not None else 0

    @property
    def leader_addr(self) -> str | None:
        lid = self.leader_id
        return self.config.client_addr_of(lid) if lid else None

    @property
    def applied_index(self) -> int:
        return self.raft.applied_index

    def status(self) -> dict[str, Any]:
        return self.raft.status()

    def on_leader_change(self, cb: Callable[[LeaderInfo], None]) -> Callable[[], None]:
        """Call ``cb(LeaderInfo)`` on the loop at every change of leader, term or role
        this node observes; returns a function that unsubscribes."""
        self._leader_cbs.append(cb)
        return lambda: self._leader_cbs.remove(cb) if cb in self._leader_cbs else None

    async def leadership_changed(self, timeout: float | None = None) -> LeaderInfo:
        """Wait for the next leadership change; return it."""
        ev = self._leader_changed
        await asyncio.wait_for(ev.wait(), timeout)
        return self._last_leader

    async def wait_leader(self, timeout: float = 10.0) -> int:
        """Wait until some leader is known; return its id (CallTimeout if none)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.leader_id:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise CallTimeout(f"no leader known after {timeout}s")
            try:
                await self.leadership_changed(remaining)
            except TimeoutError:
                pass
        return self.leader_id

    async def _watch_leadership(self) -> None:
        """Poll the core once per tick (RaftNode has no leadership hook, and its Ready
        loop is not ours to change): a change is seen within a tick."""
        period = self.config.tick_ms / 1000.0
        while True:
            core = self._core()
            if core is not None:
                info = LeaderInfo(core.leader, core.term, self.raft.is_leader)
                if info != self._last_leader:
                    self._cancel_deposed(info)
                    self._last_leader = info
                    ev, self._leader_changed = self._leader_changed, asyncio.Event()
                    ev.set()
                    for cb in list(self._leader_cbs):
                        try:
                            cb(info)
                        except Exception:   # a user callback must not stop the watch
                            log.exception("node %d: a leader-change callback failed", self.id)
            await asyncio.sleep(period)

    # --- applied index ------------------------------------------------------------------

    def on_applied(self, cb: Callable[[int], None]) -> Callable[[], None]:
        """Call ``cb(index)`` on the loop after each command entry is applied here."""
        def observe(index: int, _entry: Any) -> None:
            cb(index)
        self.replica.observers.append(observe)
        return lambda: self.replica.observers.remove(observe) \
            if observe in self.replica.observers else None

    async def wait_applied(self, index: int, timeout: float = 10.0) -> bool:
        """Wait until this node has applied the log up to ``index``; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.raft.applied_index < index:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopped:
                return False
            # Wakes when the next command is applied; no-op entries (a new leader's
            # first entry) do not reach the state machine, hence the 50 ms bound.
            await self.raft.wait_applied(self.replica.last_applied, min(remaining, 0.05))
        return True

    # --- calls ----------------------------------------------------------------------------

    def _method_call(self, machine: StateMachine, name: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
        """A @replicated method called on an attached machine: a coroutine, or, from a
        thread other than a SyncNode's loop, the blocking result."""
        coro = self._call(machine.machine_name, machine.version, name, args, kwargs, None)
        if self._sync_thread is not None and threading.get_ident() != self._sync_thread:
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        return coro

    async def call(self, machine: StateMachine | str, name: str, *args: Any,
                   timeout: float | None = None, **kwargs: Any) -> Any:
        """Call the @replicated method ``name`` of ``machine`` through the log."""
        m = self.machines[machine] if isinstance(machine, str) else machine
        return await self._call(m.machine_name, m.version, name, args, kwargs, timeout)

    async def submit(self, value: Any, machine: StateMachine | str | None = None, *,
                     timeout: float | None = None) -> Any:
        """Replicate a raw command: the machine's own ``apply(command)`` gets
        ``command.name == ""`` and ``command.args == [value]``."""
        if machine is None:
            if len(self.machines) != 1:
                raise ValueError("several machines: name the one to submit to")
            machine = next(iter(self.machines.values()))
        m = self.machines[machine] if isinstance(machine, str) else machine
        return await self._call(m.machine_name, m.version, "", (value,), {}, timeout)

    async def _call(self, target: str, version: int, name: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any], timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.call_timeout)
        session = await self._get_session(deadline)
        async with session.call_slot() as seq:
            try:
                outcome = await self._route(OP_CALL, version, session, seq, target, name,
                                            list(args), kwargs, deadline)
            except EncodeError:
                # Name the culprit (encoding happens once, where the entry or the
                # forwarded request is built; nothing was proposed).
                check_args(args, kwargs, f"{target}.{name or 'submit'}")
                raise
        try:
            return decode_outcome(outcome)
        except SessionExpired:
            if self._session is session:
                self._session = None   # the next call opens a new session
            raise

    async def _get_session(self, deadline: float) -> ClientSession:
        if self._session is not None:
            return self._session
        if self._session_task is None or self._session_task.done():
            self._session_task = asyncio.create_task(self._open_session())
        loop = asyncio.get_running_loop()
        try:
            sess = await asyncio.wait_for(asyncio.shield(self._session_task),
                                          max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise CallTimeout("could not open a client session in time") from None
        self._session = sess
        return sess

    async def _open_session(self) -> ClientSession:
        loop = asyncio.get_running_loop()
        outcome = await self._route(OP_OPEN, 0, None, 0, "", "", [], {},
                                    loop.time() + 3600.0)
        return ClientSession(int(decode_outcome(outcome)), self.replica.session_window)

    async def _route(self, op: int, version: int, session: ClientSession | None, seq: int,
                     target: str, name: str, args: list[Any], kwargs: dict[str, Any],
                     deadline: float) -> bytes:
        """Get one entry applied, here if we lead, else through the leader; retry (same
        session and seq: at most one apply) until ``deadline``; the outcome bytes."""
        loop = asyncio.get_running_loop()
        cid = session.id if session is not None else 0
        while True:
            if self._stopped:
                raise EmbedError("the node is stopped")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise CallTimeout(f"{target}.{name or op} not answered in time; the outcome "
                                  "is unknown (a retry under the same session cannot apply "
                                  "it twice)")
            ack = session.ack if session is not None else 0
            leader = self.leader_id
            if self.raft.is_leader:
                try:
                    return await self._propose_here(op, version, cid, seq, ack, target, name,
                                                    args, kwargs, deadline)
                except (NotLeader, TimeoutError):
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
            if not leader or leader == self.id:
                # An election is under way, or we are cut off from the other voters
                # (a deposed leader hears from no one): ask the peers' embed RPC.
                leader = await self._leader_hint(min(remaining, 1.0)) if self.forward else 0
                if not leader:
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
            if not self.forward:
                raise NotLeader(leader, self.leader_addr)
            got = await self._forward(leader, op, version, cid, seq, ack, target, name, args,
                                      kwargs, min(remaining, FORWARD_TRY_TIMEOUT))
            if got is not None:
                return got
            await asyncio.sleep(RETRY_PAUSE)

    def _cancel_deposed(self, info: LeaderInfo) -> None:
        """Proposals made as leader of a term we no longer lead may never commit, and
        RaftNode fails them only once overwritten or after propose_timeout: fail them
        now so callers retry on the new leader (the session makes the retry safe).

        Judged by each proposal's own term, not by the last leadership we observed:
        this watch polls once per tick, so a call can be proposed before it has seen
        us become leader, and comparing with that stale view (term 0) cancelled the
        very first call and proposed it again: two log entries for one call."""
        deposed = [t for t, term in self._inflight.items()
                   if not info.is_leader or term != info.term]
        for t in deposed:
            del self._inflight[t]
            self._deposed.add(t)
            t.cancel()

    async def _leader_hint(self, timeout: float) -> int:
        """A leader named by another node's embed RPC, when our core knows none; probes
        are shared by concurrent callers and at most every HINT_PERIOD."""
        loop = asyncio.get_running_loop()
        if self._hint_task is None or (self._hint_task.done()
                                       and loop.time() >= self._hint_at + HINT_PERIOD):
            self._hint_at = loop.time()
            self._hint_task = asyncio.ensure_future(self._probe_leader(timeout))
        try:
            return await asyncio.shield(self._hint_task)
        except Exception:
            return 0

    async def _probe_leader(self, timeout: float) -> int:
        for peer in self.config.peers:
            if peer == self.id:
                continue
            try:
                status, payload = await self._pool.request(peer, "leader", timeout=timeout)
            except (OSError, AuthError, TimeoutError, DecodeError):
                self._pool.drop(peer)
                continue
            if status == ST_OK and isinstance(payload, list) and payload \
                    and payload[0] in self.config.peers and payload[0] != self.id:
                return int(payload[0])
        return 0

    async def _forward(self, leader: int, op: int, version: int, cid: int, seq: int, ack: int,
                       target: str, name: str, args: list[Any], kwargs: dict[str, Any],
                       timeout: float) -> bytes | None:
        """One attempt through the leader's embed RPC; None: try again."""
        try:
            if op == OP_OPEN:
                status, payload = await self._pool.request(leader, "open", timeout=timeout)
            else:
                status, payload = await self._pool.request(
                    leader, "call", version, cid, seq, ack, target, name, args, kwargs,
                    timeout=timeout)
        except (OSError, AuthError, TimeoutError, DecodeError):
            self._pool.drop(leader)
            return None
        if status == ST_OK and isinstance(payload, bytes):
            return payload
        if status == ST_NOT_LEADER:
            return None   # our core learns the new leader soon
        if status == 3:
            raise EmbedError(f"node {leader} rejected a forwarded call: {payload}")
        return None

    async def _propose_here(self, op: int, version: int, cid: int, seq: int, ack: int,
                            target: str, name: str, args: list[Any], kwargs: dict[str, Any],
                            deadline: float | None = None) -> bytes:
        """Propose one entry on this node (the leader stamps its clock, as raft.kv does);
        the outcome bytes once applied. NotLeader / TimeoutError (outcome unknown)."""
        data = encode_entry(op, version, cid, seq, ack, _now_ms(), target, name, args, kwargs)
        me = asyncio.current_task()
        if me is None:
            raise RuntimeError("_propose_here must run in a task")
        # RaftNode times proposals out after propose_timeout by itself; a timer only for
        # a shorter deadline. No task per call: _watch_leadership cancels *this* task
        # if we are deposed while waiting, and we turn that into NotLeader (the pattern
        # of asyncio.timeout, which also cancels the current task and uncancels it).
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline >= loop.time() + self.config.propose_timeout:
            deadline = None
        core = self._core()
        self._inflight[me] = core.term if core is not None else 0
        try:
            async with asyncio.timeout_at(deadline):
                out = await self.raft.propose(data)
        except NotLeaderError:
            raise NotLeader(self.leader_id, self.leader_addr) from None
        except asyncio.CancelledError:
            if me in self._deposed and me.uncancel() == 0:
                # We stopped leading, so the entry may never commit. The outcome is
                # unknown; a retry on the new leader is safe (sessions).
                raise NotLeader(self.leader_id, self.leader_addr) from None
            raise
        finally:
            self._inflight.pop(me, None)
            self._deposed.discard(me)
        if not isinstance(out, bytes):
            raise EmbedError(f"the state machine returned {type(out).__name__}")
        return out

    # --- reads ----------------------------------------------------------------------------

    async def read(self, fn: Callable[[], Any] | None = None, *,
                   timeout: float | None = None) -> Any:
        """Linearizable read, then ``fn()`` on this replica.

        On the leader: a ReadIndex barrier (diss. §6.4: it confirms with a heartbeat
        round that it still leads, and waits until it has applied every write
        committed before the call). On a follower (``forward=True``): the follower
        asks the leader for a read index over the embed RPC and waits until it has
        applied up to it itself (§6.4.1), so ``fn`` sees every write committed
        before the call. With ``forward=False`` a follower raises NotLeader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.call_timeout)
        while True:
            if self.raft.is_leader or not self.forward:
                try:
                    await self._read_index_here()
                    return fn() if fn is not None else None
                except NotLeader:
                    if not self.forward:
                        raise
            index = await self._remote_read_index(deadline)
            if index is not None:
                remaining = deadline - loop.time()
                if not await self.wait_applied(index, remaining):
                    raise CallTimeout(f"log index {index} not applied here in time")
                return fn() if fn is not None else None

    async def _read_index_here(self) -> int:
        """The local ReadIndex barrier; the applied index it guarantees."""
        try:
            await self.raft.read_barrier()
        except NotLeaderError:
            raise NotLeader(self.leader_id, self.leader_addr) from None
        except TimeoutError:
            raise CallTimeout("the read barrier was not confirmed in time") from None
        return self.raft.applied_index

    async def _remote_read_index(self, deadline: float) -> int | None:
        """A read index from the leader's embed RPC (None: we lead now, read here)."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise CallTimeout("no read index from the leader in time")
            if self.raft.is_leader:
                return None
            leader = self.leader_id
            if not leader or leader == self.id:
                leader = await self._leader_hint(min(remaining, 1.0))
            if leader and leader != self.id:
                try:
                    status, payload = await self._pool.request(
                        leader, "readindex", timeout=min(remaining, FORWARD_TRY_TIMEOUT))
                except (OSError, AuthError, TimeoutError, DecodeError):
                    self._pool.drop(leader)
                    status, payload = -1, None
                if status == ST_OK and isinstance(payload, int):
                    return payload
            await asyncio.sleep(RETRY_PAUSE)

    def read_stale(self, fn: Callable[[], Any]) -> Any:
        """A local read of this replica: fast, on any node, but it may miss writes
        committed elsewhere (and, on a deposed leader, writes of a newer term)."""
        return fn()

    async def _query_here(self, target: str, name: str, args: list[Any],
                          kwargs: dict[str, Any]) -> bytes:
        m = self.machines.get(target)
        if m is None or name not in m._query_methods:
            return error_outcome("LookupError", f"{target}.{name} is not a @query method")
        await self._read_index_here()
        try:
            return ok_outcome(getattr(m, name)(*args, **kwargs), f"{target}.{name}")
        except Exception as e:
            return error_outcome(type(e).__name__, str(e))

    # --- log tailing --------------------------------------------------------------------

    async def tail(self, from_index: int = 1, *, batch: int = 256) -> AsyncIterator[TailEntry]:
        """The committed calls from ``from_index`` on, in log order, forever (waiting
        for new ones), each call once: a retry the state machine answered from its
        session (a second log entry for the same call) is skipped. Resume after a
        restart with ``last_seen.index + 1``. Raises LogCompacted when the log no
        longer holds ``from_index`` (a snapshot covers it)."""
        if from_index < 1:
            raise ValueError("log indexes start at 1")
        cursor = from_index
        while not self._stopped:
            applied = self.raft.applied_index
            if cursor > applied:
                await self.wait_applied(cursor, timeout=1.0)
                continue
            log = self.raft.core.log
            first = log.first_index
            if cursor < first:
                raise LogCompacted(cursor, first)
            hi = min(applied, cursor + batch - 1)
            entries = log.entries(cursor, hi + 1)
            cursor = hi + 1
            skipped = self.replica.skipped
            for e in entries:
                if e.type != ENTRY_NORMAL or not e.data or e.index in skipped:
                    continue   # a new leader's no-op (diss. §6.4), or a call not executed
                try:
                    d = decode_entry(e.data)
                except DecodeError:
                    continue
                if d.op == OP_CALL:
                    yield TailEntry(e.index, e.term, d.target, d.name, d.args, d.kwargs,
                                    d.time_ms, d.version, d.client_id, d.seq)
