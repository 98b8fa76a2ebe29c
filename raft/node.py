"""The node runtime: drives the sans-IO core (``raft._core.RawNode``) on an asyncio loop.

One ``RaftNode`` is one Raft server: the core, its write-ahead log
(``DiskStorage``), the peer transport (``PeerTransport``), the replicated KV state
machine (``KVStateMachine``) and a client front end, all on one event loop (uvloop
when installed). It implements ``raft.api.NodeAPI``; the front end is built by the
caller (``RaftNode(config, frontend=raft.resp.resp_frontend)`` for the Redis
protocol), so this module imports no client protocol.

The Ready loop (raft/_core.pyx module docstring; docs/protocol.md "Persistence
contract") is the heart of it. Its one shape is documented in docs/ready-loop.md,
which the simulator (raft/testing/sim/) and the scenario tests' harness (tests/harness.py)
follow too; here it is as this node runs it::

    rd = core.ready()
    transport.send(rd.messages)            # leader appends: before our own fsync (diss. §10.2.1)
    if rd.snapshot:                        # installed from the leader (§7)
        kv.restore(rd.snapshot.data); storage.install_snapshot(rd.snapshot)
    apply(rd.committed_entries)            # committed and locally durable already
    deliver(rd.read_states)                # ReadIndex reads confirmed by a majority
    if rd.must_fsync:                      # entries, snapshot, term or vote
        storage.save(rd.hard_state, rd.entries)   # ONE write + ONE fdatasync, disk thread
    elif rd.hard_state:                    # only the commit hint: volatile, not synced
        storage.save(rd.hard_state, [], sync=False)
    transport.send(rd.messages_after_persist, now=True)  # votes, acks: after it
    core.advance(rd)
    maybe snapshot + compact               # the log since the last snapshot is over a threshold

While the fsync runs in the worker thread, the loop keeps ticking, stepping messages
and taking proposals; the core allows one outstanding Ready, so new entries wait for
the next Ready's write (group commit: one write and one fsync for all of them). What
needs no disk does not wait (``_pump``): the messages the core produced since the
Ready in hand (a leader's AppendEntries for new proposals, heartbeats of a ReadIndex
round), confirmed reads and newly committed entries are taken from the core at once
(``RawNode.take_messages/take_read_states/take_committed``), so a leader replicates,
answers reads and applies while its own write runs. An idle node adds no latency: a
proposal kicks the Ready loop at once.

Reads (``read``/``read_barrier``): ReadIndex (diss. §6.4). ``read`` evaluates a client's
read at its place in the applied log and answers it once a heartbeat round started
after it confirms leadership, so a connection's pipeline never stops for a read.

Log compaction (§7): once the entries applied since the last snapshot add up to
``snapshot_threshold_bytes`` (or the in-memory log passes ``max_log_bytes``), the node
takes ``KVStateMachine.snapshot()`` at its applied index when a Ready is handed out
(so the snapshot never runs ahead of the commit index that Ready persists), makes it
durable (``storage.save_snapshot``) and, once ``snapshot_trailing_entries`` more
entries have been applied, hands it to the core (``core.compact``), which drops the
entries it covers and sends it to followers that need them (InstallSnapshot), and then
compacts the WAL (``storage.compact``). A restart restores the state machine from the
newest snapshot and re-applies only the log after it.

Not done yet: membership changes (issue 12).
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import secrets
import time
from typing import Any, Callable

from raft._core import (
    CANDIDATE,
    CONF_ADD_LEARNER,
    CONF_ADD_VOTER,
    CONF_REMOVE,
    ENTRY_NORMAL,
    LEADER,
    ROLE_NAMES,
    ConfChangeNotYet,
    ConfChangeRefused,
    Entry,
    LocalProtocolError,
    Message,
    NotLeader,
    ProposalDropped,
    RawNode,
    Ready,
    RemoteProtocolError,
    Snapshot,
    decode_conf,
)
from raft.api import ClientFrontend, NotLeaderError, ReadTimeoutError, TryAgainError
from raft.config import NodeConfig, PeerAddress, format_host_port
from raft.membership import AddressBook, AnyPeerExcept, MembershipError, peer_targets
from raft.kv import KVStateMachine, SnapshotError
from raft.limits import (effective_max_clients, fd_reserve, inflight_bytes_bound, nofile_limit,
                         too_large_message, transport_bounds)
from raft.net.transport import DEFAULT_MAX_HANDSHAKES, PeerTransport
from raft.metrics import NodeMetrics
from raft.storage import fileio
from raft.storage.disk_thread import DiskThread, SyncWriteThread
from raft.storage.guard import DataDirLost
from raft.storage.wal import DiskStorage, data_bytes

__all__ = ["RaftNode"]

#: In the data directory of a node started with ``raft serve --join``.
JOINED_FILE = "JOINED"


def _joined_before(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, JOINED_FILE))


def _remember_join(data_dir: str) -> None:
    """Durably note that this node joined a cluster (see RaftNode's ``join``)."""
    path = os.path.join(data_dir, JOINED_FILE)
    if os.path.exists(path):
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"this node joined an existing cluster (raft serve --join)\n")
        fileio.fsync(fd)
    finally:
        os.close(fd)
    fileio.fsync_dir(data_dir)

log = logging.getLogger("raft.node")

#: Housekeeping periods, in seconds (run from the tick loop).
SWEEP_PERIOD = 0.1        # expire proposals that waited longer than propose_timeout
METRICS_PERIOD = 0.5      # refresh the snapshot the metrics endpoint reads
TRACE_FLUSH_PERIOD = 0.2  # append buffered trace events to the NDJSON file
DATA_DIR_CHECK_PERIOD = 0.5  # is the data directory still the one we opened? (also on each save)
BAD_MESSAGE_LOG_PERIOD = 10.0  # at most one warning per peer this often for refused messages
#: What one applied entry adds to the log size the snapshot threshold is compared
#: with, beyond its data: the WAL's per-record overhead (raft/storage/segment.py).
ENTRY_LOG_OVERHEAD = 28


class _Pending:
    """A proposal (or read barrier) waiting for its log entry to be applied.

    Keyed by log index in ``RaftNode._pending``; ``term`` tells whether the entry
    applied at that index is ours (Log Matching, §5.3: (index, term) names one entry).
    """

    __slots__ = ("term", "future", "deadline")

    def __init__(self, term: int, future: asyncio.Future[Any], deadline: float) -> None:
        self.term = term
        self.future = future
        self.deadline = deadline

    def resolve(self, index: int, reply: Any) -> None:
        """The entry at ``index`` was applied with ``reply``."""
        if not self.future.done():
            self.future.set_result(reply)

    def fail(self, index: int, exc: BaseException) -> bool:
        """The entry at ``index`` will not be applied (or its fate is unknown: a
        timeout). False if it was already answered."""
        if self.future.done():
            return False
        self.future.set_exception(exc)
        return True


class _PendingBatch:
    """Proposals appended together (``RaftNode.submit_batch``): one waiter for the
    run first .. first + count - 1, found at each of those indexes in
    ``RaftNode._pending``. Each index is popped from there, and so settled, once; the
    future resolves to the outcomes (a reply, or the exception a single proposal's
    future would fail with) once every one is settled -- and, for a batch with a read
    (``_ReadBeforeBatch``), once that read is settled too: its outcome is the last."""

    __slots__ = ("term", "future", "deadline", "first", "outcomes", "left", "with_read")

    def __init__(self, term: int, future: asyncio.Future[Any], deadline: float,
                 first: int, count: int, with_read: bool = False) -> None:
        self.term = term
        self.future = future
        self.deadline = deadline
        self.first = first
        self.outcomes: list[Any] = [None] * (count + with_read)
        self.left = count + with_read
        self.with_read = with_read

    def resolve(self, index: int, reply: Any) -> None:
        outcomes = self.outcomes
        outcomes[index - self.first] = reply
        self.left -= 1
        if self.left == 0 and not self.future.done():
            if self.with_read and isinstance(outcomes[0], BaseException):
                # The read stands only if the first entry committed in our term (see
                # _ReadBeforeBatch); otherwise it fails as that entry did.
                outcomes[-1] = outcomes[0]
            self.future.set_result(outcomes)

    def fail(self, index: int, exc: BaseException) -> bool:
        self.resolve(index, exc)
        return True


class _ReadBeforeBatch:
    """The read of ``RaftNode.submit_batch(datas, read_before=evaluate)``: ``evaluate``
    runs right before the batch's first entry is applied (the log up to first - 1, no
    further), and its value stands once that first entry is applied as ours.

    Why that is linearizable (diss. §6.4 asks two things of a read): the state at
    first - 1 holds every entry this leader knew committed when the read arrived (its
    commit index then was <= its last index, first - 1); and that first entry,
    created after the read arrived, being committed at all (by us, or by a later
    leader) shows that no newer leader had committed anything before it existed:
    from such a commit on, every leader's log holds that newer-term entry, and by Log
    Matching none could also hold ours, an older-term entry it never received, at a
    lower index (terms only grow along a log). So nothing committed before the read
    arrived is missing from what it read."""

    __slots__ = ("batch", "evaluate", "deadline")

    def __init__(self, batch: _PendingBatch, evaluate: Callable[[], Any]) -> None:
        self.batch = batch
        self.evaluate = evaluate
        self.deadline = batch.deadline

    def evaluate_now(self) -> None:
        if not self.batch.future.done():
            self._settle(self.evaluate())

    def fail(self, exc: BaseException) -> None:
        if not self.batch.future.done():
            self._settle(exc)

    def _settle(self, outcome: Any) -> None:
        batch = self.batch
        batch.resolve(batch.first + len(batch.outcomes) - 1, outcome)


class _LinearizableRead:
    """A read evaluated at its place in the applied log and answered once leadership
    is confirmed (RaftNode.read): the value and the confirmation may come in
    either order; the result future resolves when both are in."""

    __slots__ = ("evaluate", "result", "value", "evaluated", "confirmed", "deadline")

    def __init__(self, evaluate: Callable[[], Any], loop: asyncio.AbstractEventLoop,
                 deadline: float) -> None:
        self.evaluate = evaluate
        self.deadline = deadline
        self.result: asyncio.Future[Any] = loop.create_future()
        self.value: Any = None
        self.evaluated = False
        self.confirmed = False

    def fail(self, exc: BaseException) -> None:
        if not self.result.done():
            # Its reader may be gone: mark the exception seen (only a failure pays
            # for the callback; most reads succeed).
            self.result.add_done_callback(_retrieve)
            self.result.set_exception(exc)

    def evaluate_now(self) -> None:
        if self.result.done():
            return
        self.value = self.evaluate()
        self.evaluated = True
        if self.confirmed:
            self.result.set_result(self.value)

    def _on_confirm(self, confirm: asyncio.Future[int]) -> None:
        if self.result.done():
            return
        if confirm.cancelled():
            self.result.cancel()
        elif confirm.exception() is not None:
            self.fail(confirm.exception())
        else:
            self.confirmed = True
            if self.evaluated:
                self.result.set_result(self.value)


def _pop_expired(waiters: dict[int, Any], now: float) -> list[tuple[int, Any]]:
    """Remove and return (key, waiter) for the waiters whose deadline has passed.
    Insertion order is deadline order (every waiter gets now + propose_timeout), so
    the scan stops at the first one still waiting."""
    expired = []
    for key, p in waiters.items():
        if p.deadline > now:
            break
        expired.append(key)
    return [(key, waiters.pop(key)) for key in expired]


def _confirm_reads(reads: list[_LinearizableRead], confirm: asyncio.Future[int]) -> None:
    """A ReadIndex round's outcome to every read that joined it: one callback per
    round rather than one per read."""
    for read in reads:
        read._on_confirm(confirm)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as retrieved (its waiters may all be gone)."""
    if not fut.cancelled():
        fut.exception()


class RaftNode:
    """One Raft server on the running event loop. Implements ``raft.api.NodeAPI``.

    ``await start()`` opens the data directory, restarts the core from it, and
    starts the transport, timers and client server; ``await stop()`` undoes it.
    All methods must be called on the loop's thread.
    """

    def __init__(self, config: NodeConfig, *, state_machine: KVStateMachine | None = None,
                 seed: int | None = None, force_new: bool = False, join: bool = False,
                 frontend: Callable[[RaftNode], ClientFrontend] | None = None) -> None:
        """force_new: start even on an empty data directory that held state before
        (``raft serve --force-new``; raft/storage/guard.py explains the risk).
        join: this node joins an existing cluster (``raft serve --join``): ``[peers]``
        only says where the others listen, not who votes; the node waits, never
        campaigning, until a leader adds it (docs/operations.md, "Membership"). The
        data directory remembers it (a JOINED file), so a restart before the node
        has heard of its configuration cannot make it bootstrap a cluster of its own.
        frontend: builds the server for clients on the client address, given this
        node (``raft.resp.resp_frontend``: the Redis protocol); None for none (an
        embedded state machine, raft.embed, serves its own callers there). The node
        does not know the protocol: only that it starts and closes."""
        self.config = config
        self._force_new = force_new
        self._join = join
        #: Where every known node listens (config file, then configuration contexts).
        self.addresses = AddressBook(config.peers)
        self._membership_seen: tuple = ()
        self._members_before: frozenset[int] = frozenset(config.peers)
        # Members of any configuration seen, and those a committed one removed (their
        # peer handshakes are refused; anyone else holding the secret may connect).
        self._ever_members: set[int] = set()
        self._removed: frozenset[int] = frozenset()
        self._frontend_factory = frontend
        self.serve_clients = frontend is not None
        self.id = config.node_id
        #: The replicated state machine; only touched on the loop thread.
        self.state_machine = state_machine if state_machine is not None else KVStateMachine()
        #: the state machine's batch apply, if it has one (KVStateMachine.apply_entries)
        self._apply_entries: Callable[[list[Entry], list[Any]], int] | None = getattr(
            self.state_machine, "apply_entries", None)
        self._seed = seed if seed is not None else secrets.randbits(64)
        self._core: RawNode | None = None
        self._storage: DiskStorage | None = None
        self._transport: PeerTransport | None = None
        self._frontend: ClientFrontend | None = None
        self._disk: DiskThread | None = None
        self._wal_writer: SyncWriteThread | None = None   # the common save, no GIL
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self._applied_event = asyncio.Event()
        self._stopped_event = asyncio.Event()
        self._role_event = asyncio.Event()     # set on every role/leader change
        self._running = False
        self._stopping = False
        self._persisting = False      # a Ready's fsync is in progress (see _pump)
        # A follower's Ready applies its committed entries after its ack (see
        # _handle_ready); until then the pump must not apply later ones before them.
        self._apply_held = False
        self._pump_scheduled = False
        self.fatal_error: str | None = None
        # Waiting proposals and barriers, by log index (insertion order ~ deadline order).
        # Proposals waiting for their entry to be applied, by log index; a batch
        # (submit_batch) is found at each of its indexes.
        self._pending: dict[int, _Pending | _PendingBatch] = {}
        self._max_pending = 0
        # ReadIndex reads waiting for confirmation: ctx -> future of the read index.
        # ReadIndex requests waiting for confirmation: ctx -> future of the read index
        # (with its deadline), in ctx order; the one later reads may still join.
        self._reads: dict[int, _Pending] = {}
        self._read_ctx = 0
        self._open_read: asyncio.Future[int] | None = None
        self._open_read_joiners: list[_LinearizableRead] = []   # the reads of _open_read
        # Reads (RaftNode.read) to evaluate right after the entry at their index is
        # applied: index -> reads.
        self._reads_at: dict[int, list[_LinearizableRead | _ReadBeforeBatch]] = {}
        self.applied_index = 0
        self._last_role = -1
        self._last_term = -1
        self._last_leader = -1
        # Counters (exported as metrics; plain ints: the hot path must stay cheap).
        self.counters: dict[str, int] = dict.fromkeys((
            "proposals", "proposals_failed", "proposals_timed_out", "read_barriers",
            "entries_applied", "commands_applied", "readies", "saves", "entries_saved",
            "messages_sent", "messages_received", "bad_messages", "elections",
            "leader_changes", "became_leader", "snapshots_taken", "snapshots_installed",
            "compactions", "wal_io_us"), 0)
        # Log compaction: bytes applied since the last snapshot (entry data + WAL
        # record overhead); a snapshot taken and saved but not yet handed to the core
        # (waiting for snapshot_trailing_entries more entries); timing of the last one.
        self._log_bytes = 0
        self._pending_snapshot: Snapshot | None = None
        self.last_snapshot: dict[str, float] = {}
        self._fsync_observers: list[Callable[[float, int], None]] = []
        self._metrics: Any = None
        self._trace: list | None = None
        self._trace_fp: Any = None
        self._trace_writer: Any = None
        self._bad_message_logged: dict[int, float] = {}

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Restart from the data directory and start serving peers and clients."""
        if self._running or self._stopping:
            raise RuntimeError("RaftNode.start() called twice")
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._open_storage_and_core()
        self._disk = DiskThread(f"raft-wal-{self.id}")
        if cfg.durability == "fsync" and isinstance(self._storage, DiskStorage):
            self._wal_writer = SyncWriteThread(f"raft-walw-{self.id}", self._loop)
        self._transport = self._make_transport()
        try:
            await self._transport.start()
            self._running = True
            self._tasks = [
                asyncio.create_task(self._ready_loop(), name=f"raft-ready-{self.id}"),
                asyncio.create_task(self._tick_loop(), name=f"raft-tick-{self.id}"),
            ]
            if self._frontend_factory is not None:
                self._frontend = self._frontend_factory(self)
                await self._frontend.start(*cfg.me.client)
            if cfg.metrics_port is not None:
                self._start_metrics()
        except BaseException:
            await self.stop()
            raise
        log.info("node %d: serving clients on %s, peers on %s (durability=%s, tick=%gms, "
                 "election=%d ticks, heartbeat=%d ticks)", self.id,
                 format_host_port(cfg.me.client), format_host_port(cfg.me.raft),
                 cfg.durability, cfg.tick_ms, cfg.election_ticks, cfg.heartbeat_ticks)

    def max_clients(self) -> int:
        """Client connections a front end may serve: ``[limits] max_clients`` lowered to
        leave the descriptors storage and peers need (raft.limits), so a client flood
        cannot make a WAL or snapshot write fail with EMFILE."""
        cfg = self.config
        reserve = fd_reserve(len(cfg.other_peers), DEFAULT_MAX_HANDSHAKES)
        return effective_max_clients(cfg.max_clients, nofile_limit(), reserve)

    def _arm_test_facilities(self) -> None:
        """[debug] power_loss / failpoints (TEST ONLY; raft/storage/fileio.py)."""
        cfg = self.config
        if cfg.debug_power_loss:
            os.makedirs(cfg.data_dir, exist_ok=True)
            fileio.record_durability(cfg.data_dir)
            log.warning("node %d: [debug] power_loss: journaling %s", self.id,
                        fileio.powerloss_dir(cfg.data_dir))
        if cfg.debug_failpoints:
            fileio.enable_failpoints(cfg.data_dir, log)

    def _open_storage_and_core(self) -> None:
        """Load the durable state and restart the core from it (Figure 2: currentTerm,
        votedFor and the log survive crashes; everything else is rebuilt). The state
        machine is restored from the newest snapshot, and the first Ready re-applies
        the committed entries after it."""
        cfg = self.config
        self._arm_test_facilities()
        self._storage = DiskStorage(cfg.data_dir, durability=cfg.durability,
                                    voters=tuple(cfg.voters), node_id=self.id,
                                    force_new=self._force_new)
        st = self._storage.load()
        snap = st.snapshot
        applied = 0
        if snap is not None:
            try:
                self.state_machine.restore(snap.data)
            except SnapshotError as e:
                self._storage.close()
                raise RuntimeError(f"{cfg.data_dir}: the snapshot at index {snap.index} is not a "
                                   f"state machine snapshot this node can restore: {e}") from None
            applied = self.applied_index = snap.index
        if cfg.trace_file is not None:
            self._open_trace(cfg.trace_file)
        # applied = the snapshot's index: the first Ready hands us every committed entry
        # in the log after it again, and we re-apply them to rebuild the state machine.
        # msg_id_start: message ids must be unique per sender across restarts for
        # the trace checker to pair sends with receives; nanoseconds since the epoch
        # exceed every id the previous incarnation used unless it sent more than one
        # message per nanosecond.
        self._join = self._join or _joined_before(cfg.data_dir)
        if self._join:
            _remember_join(cfg.data_dir)
        self._core = RawNode(
            self.id, () if self._join else cfg.voters, seed=self._seed,
            election_tick=cfg.election_ticks, heartbeat_tick=cfg.heartbeat_ticks,
            pre_vote=cfg.pre_vote, check_quorum=cfg.check_quorum, max_msg_bytes=cfg.max_msg_bytes, max_inflight=cfg.max_inflight,
            max_inflight_bytes=inflight_bytes_bound(cfg.max_msg_bytes, cfg.max_entry_bytes),
            hard_state=st.hard_state, entries=st.entries, snapshot=snap, applied=applied,
            msg_id_start=time.time_ns(), trace=self._trace)
        hs = st.hard_state
        log.info("node %d: restarted from %s: term %d, vote %d, commit %d, snapshot %s, log %d..%d",
                 self.id, cfg.data_dir, hs.term, hs.vote, hs.commit,
                 f"at {snap.index} (term {snap.term}, {len(snap.data)} bytes)" if snap else "none",
                 st.entries[0].index if st.entries else 0,
                 st.entries[-1].index if st.entries else 0)

    def _make_transport(self) -> PeerTransport:
        cfg = self.config
        ssl_server = ssl_client = None
        if cfg.tls is not None:
            from raft.net.auth import client_ssl_context, server_ssl_context

            ssl_server = server_ssl_context(cfg.tls.cert, cfg.tls.key, cfg.tls.ca)
            ssl_client = client_ssl_context(cfg.tls.cert, cfg.tls.key, cfg.tls.ca)
        # Frames and send buffers sized so that any entry the front end accepts
        # (limits.max_entry_bytes) replicates: raft/limits.py.
        max_frame, max_buffered = transport_bounds(cfg.max_msg_bytes, cfg.max_entry_bytes)
        transport = PeerTransport(self.id, cfg.me.raft, cfg.other_peers, cfg.secret,
                                  self._on_messages, ssl_server=ssl_server,
                                  ssl_client=ssl_client, max_frame=max_frame,
                                  max_buffered_bytes=max_buffered)
        self._transport = transport
        self._sync_membership()
        return transport

    async def stop(self) -> None:
        """Stop serving: clients first, then the Ready loop (after it finishes the Ready
        in hand, so nothing acknowledged is half-done), then peers and the disk."""
        if self._stopping:
            await self._stopped_event.wait()
            return
        self._stopping = True
        self._running = False
        if self._frontend is not None:
            await self._frontend.close()
        self._kick.set()
        for task in self._tasks:
            if task.get_name().startswith("raft-tick"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            await self._transport.close()
        self._fail_all_pending(NotLeaderError(None))
        self._stop_metrics()
        self._close_trace()
        if self._wal_writer is not None:
            self._wal_writer.shutdown()
        if self._disk is not None:
            self._disk.shutdown()
        if self._storage is not None:
            self._storage.close()
        if self.config.debug_power_loss:
            fileio.stop_recording(self.config.data_dir)
        self._stopped_event.set()
        log.info("node %d: stopped", self.id)

    async def wait_stopped(self) -> None:
        await self._stopped_event.wait()

    def _fatal(self, reason: str) -> None:
        """Fail-stop: an internal error (a core assertion, a failed disk write) leaves
        state we cannot trust, and a stopped node is safe where a confused one is not."""
        if self.fatal_error is None:
            self.fatal_error = reason
            log.critical("node %d: stopping after a fatal error: %s", self.id, reason)
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop())

    # --- inputs: ticks, messages, proposals -------------------------------------------

    async def _tick_loop(self) -> None:
        """Logical time for the core. One tick per wakeup: a loop that stalled (GC, a
        slow callback) skips the ticks it missed instead of firing a burst, which
        could time out an election before the heartbeats waiting in the socket are
        read (Go's time.Ticker, which etcd uses, drops ticks the same way)."""
        loop = asyncio.get_running_loop()
        interval = self.config.tick_ms / 1000.0
        core = self._core
        assert core is not None
        next_at = loop.time() + interval
        sweep_at = metrics_at = trace_at = data_dir_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            self._note_stall(now - next_at)
            next_at += interval
            if next_at < now:
                next_at = now + interval
            try:
                core.tick()
                self._kick.set()
                if now >= sweep_at:
                    sweep_at = now + SWEEP_PERIOD
                    self._expire_pending(now)
                if self._metrics is not None and now >= metrics_at:
                    metrics_at = now + METRICS_PERIOD
                    self._metrics.refresh()
                if self._trace_fp is not None and now >= trace_at:
                    trace_at = now + TRACE_FLUSH_PERIOD
                    self._flush_trace()
                if now >= data_dir_at:
                    data_dir_at = now + DATA_DIR_CHECK_PERIOD
                    self._check_data_dir()
            except DataDirLost as e:
                self._fatal(str(e))
                return
            except Exception as e:  # a core assertion, or a full disk for the trace
                log.exception("node %d: the tick loop failed", self.id)
                self._fatal(f"{type(e).__name__}: {e}")
                return

    def _check_data_dir(self) -> None:
        """Fail-stop if the data directory was deleted or replaced under us: our vote
        and log are no longer durable, so nothing we acknowledge from now on would be
        (raft/storage/guard.py). Raises DataDirLost into the tick loop's handler."""
        storage = self._storage
        if storage is not None:
            storage.check_data_dir()

    def _note_stall(self, late: float) -> None:
        """Warn when the event loop was blocked long enough to threaten elections: a
        tick that runs half an election timeout late means followers may already have
        timed out (a long callback: a huge entry parsed, applied or encoded; a snapshot)."""
        limit = self.config.election_ticks * self.config.tick_ms / 2000.0
        if late > limit:
            self.counters["loop_stalls"] = self.counters.get("loop_stalls", 0) + 1
            log.warning("node %d: the event loop was blocked for %.0f ms (half an election "
                        "timeout is %.0f ms)", self.id, late * 1000, limit * 1000)

    def _on_messages(self, msgs: list[Message]) -> None:
        """PeerTransport delivery: step each message into the core. A malformed message
        (RemoteProtocolError) is logged and dropped without touching state; anything
        else the core raises is a bug on our side and stops the node."""
        if not self._running:
            return
        core = self._core
        assert core is not None
        self.counters["messages_received"] += len(msgs)
        for m in msgs:
            try:
                core.step(m)
            except RemoteProtocolError as e:
                self._note_bad_message(m, e)
            except Exception as e:
                self._fatal(f"the core raised {type(e).__name__} stepping {m!r}: {e}")
                return
        self._sync_membership()       # an AppendEntries may have carried a configuration
        self._kick.set()
        self._schedule_pump()

    def _note_bad_message(self, m: Message, e: RemoteProtocolError) -> None:
        """A peer sent a message the core refused (malformed, or one the protocol says
        cannot happen): the core changed nothing, so count it and go on. Logged at most
        once per BAD_MESSAGE_LOG_PERIOD per peer: a peer repeating it must not flood
        the log (the counter, raft_bad_messages_total, has every one)."""
        self.counters["bad_messages"] += 1
        now = time.monotonic()
        last = self._bad_message_logged.get(m.src)
        if last is None or now - last >= BAD_MESSAGE_LOG_PERIOD:
            self._bad_message_logged[m.src] = now
            log.warning("node %d: dropped a message from node %d that breaks the protocol "
                        "(RemoteProtocolError, %d so far): %s: %r", self.id, m.src,
                        self.counters["bad_messages"], e, m)

    def _leader_client_addr(self, leader: int | None = None) -> str | None:
        core = self._core
        lid = leader if leader is not None else (core.leader if core is not None else 0)
        return self.addresses.client_addr_of(lid) if lid else None

    # --- membership (docs/protocol.md "Membership changes", raft/membership.py) -------

    def _sync_membership(self) -> None:
        """Point the transport at the configuration the core uses now. Cheap when
        nothing changed (called after every step and Ready)."""
        core, transport = self._core, self._transport
        if core is None or transport is None:
            return
        seen = (core.conf_index, core.conf_index <= core.commit, core.leader, core.voters)
        if seen == self._membership_seen:
            return
        conf_changed = not self._membership_seen or self._membership_seen[0] != seen[0] \
            or self._membership_seen[3] != seen[3]
        self._membership_seen = seen
        try:
            self.addresses.learn(core.conf_context)
        except MembershipError as e:
            log.error("node %d: configuration at index %d: %s", self.id, core.conf_index, e)
        members = frozenset(core.voters) | frozenset(core.learners)
        if conf_changed:
            log.info("node %d: configuration at index %d: voters %s, learners %s", self.id,
                     core.conf_index, list(core.voters), list(core.learners))
        if seen[1] and self.id not in members and core.role != LEADER and self._pending:
            self._abandon_pending_after_removal()   # (may run again: by index, idempotent)
        targets = peer_targets(self.id, members, self._members_before, seen[1], core.leader)
        self._ever_members |= members
        if seen[1]:
            self._members_before = members
            self._removed = self._ever_members - members
        transport.set_peers({pid: a.raft for pid in targets
                             if (a := self.addresses.get(pid)) is not None},
                            AnyPeerExcept(self._removed - {self.id}))

    def _abandon_pending_after_removal(self) -> None:
        """We are out of the committed configuration: nobody will send us the fate of
        the entries we proposed while leading (the new leader may still commit them).
        Their outcome is unknown, and waiting for propose_timeout would only stall
        the clients: answer now as a timeout would (-TRYAGAIN, may or may not apply)."""
        commit = self.core.commit        # committed ones are applied (and answered) here
        lost = [i for i in self._pending if i > commit]
        for i in lost:
            p = self._pending.pop(i)
            if p.fail(i, asyncio.TimeoutError(
                    "this node was removed from the cluster; the write may or may not apply")):
                self.counters["proposals_timed_out"] += 1

    def members(self) -> list[dict[str, Any]]:
        """Every member of the configuration in force: id, role (voter/learner),
        addresses, and on a leader each one's match index and lag."""
        core = self.core
        st = core.status()
        out = []
        for pid in sorted(set(core.voters) | set(core.learners)):
            a = self.addresses.get(pid)
            pr = st["progress"].get(pid)
            m: dict[str, Any] = {
                "id": pid, "role": "voter" if pid in core.voters else "learner",
                "raft": format_host_port(a.raft) if a else "", "client": a.client_addr if a else "",
                "leader": pid == core.leader}
            if pid == self.id:
                m["match"], m["lag"] = st["stable"], 0
            elif pr is not None:
                m["match"], m["lag"] = pr["match"], st["last_index"] - pr["match"]
            out.append(m)
        return out

    async def change_membership(self, op: str, node_id: int,
                                addr: PeerAddress | None = None) -> int:
        """Propose one single-server change (diss. §4.1) and wait until it is committed
        and applied here; returns its log index. ``op``: "add" (a voter), "learner"
        (add a learner), "promote" (learner to voter), "remove". A new member needs
        ``addr``. Raises NotLeaderError, TryAgainError (another change pending, a
        transfer under way, or a new leader's first entry not yet committed),
        MembershipError (a change that makes no sense), or asyncio.TimeoutError."""
        core = self._core
        if not self._running or core is None:
            raise NotLeaderError(None)
        if core.role != LEADER:
            raise NotLeaderError(self._leader_client_addr())
        kinds = {"add": CONF_ADD_VOTER, "promote": CONF_ADD_VOTER,
                 "learner": CONF_ADD_LEARNER, "remove": CONF_REMOVE}
        if op not in kinds:
            raise MembershipError(f"unknown membership operation {op!r}")
        members = set(core.voters) | set(core.learners)
        if op == "promote" and node_id not in core.learners:
            raise MembershipError(f"node {node_id} is not a learner")
        if op in ("add", "learner") and node_id in members:
            raise MembershipError(f"node {node_id} is already a member")
        if op in ("add", "learner"):
            if addr is None:
                raise MembershipError(f"adding node {node_id} needs its addresses")
            self.addresses.add(node_id, addr)
            members.add(node_id)
        elif op == "remove":
            members.discard(node_id)
        try:
            index = core.propose_conf_change(kinds[op], node_id,
                                             self.addresses.context_for(members))
        except NotLeader as e:
            raise NotLeaderError(self._leader_client_addr(e.leader)) from None
        except (ConfChangeNotYet, ProposalDropped) as e:
            raise TryAgainError(str(e)) from None
        except ConfChangeRefused as e:
            raise MembershipError(str(e)) from None
        self._sync_membership()
        fut = self._track(index)
        await fut
        return index

    async def transfer_leadership(self, target: int, timeout: float | None = None) -> None:
        """Hand leadership to voter ``target`` (diss. §3.10) and wait until it leads
        (as this node sees it). Raises NotLeaderError, MembershipError (not a voter),
        or TryAgainError if it did not take over within ``timeout`` (default: the
        propose timeout); proposals meanwhile get -TRYAGAIN."""
        core = self._core
        if not self._running or core is None:
            raise NotLeaderError(None)
        try:
            core.transfer_leadership(target)
        except NotLeader as e:
            raise NotLeaderError(self._leader_client_addr(e.leader)) from None
        except LocalProtocolError as e:
            raise MembershipError(str(e)) from None
        self._kick.set()
        self._schedule_pump()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.config.propose_timeout)
        while core.leader != target or core.role == LEADER:
            if target == self.id and core.role == LEADER:
                return
            remaining = deadline - loop.time()
            if remaining <= 0 or not self._running:
                raise TryAgainError(f"node {target} did not take over in time")
            self._role_event.clear()
            try:
                await asyncio.wait_for(self._role_event.wait(), remaining)
            except TimeoutError:
                pass

    def _track(self, index: int) -> asyncio.Future[Any]:
        """A future resolved when the entry at ``index`` (ours, this term) is applied."""
        fut = self._new_future()
        self._wait_for(index, index, _Pending(self.core.term, fut, self._deadline()))
        return fut

    def _new_future(self) -> asyncio.Future[Any]:
        loop = self._loop
        assert loop is not None
        return loop.create_future()

    def _deadline(self) -> float:
        loop = self._loop
        assert loop is not None
        return loop.time() + self.config.propose_timeout

    def _wait_for(self, first: int, last: int, waiter: _Pending | _PendingBatch) -> None:
        """Register ``waiter`` for the entries first..last, and have the Ready loop
        run next (no added latency when idle)."""
        if first == last:
            self._pending[first] = waiter
        else:
            self._pending.update(zip(range(first, last + 1), itertools.repeat(waiter)))
        if last > self._max_pending:
            self._max_pending = last
        self._kick.set()
        self._schedule_pump()

    def _propose(self, datas: list[bytes]) -> tuple[RawNode, int]:
        """Append ``datas`` to the leader's log *now* (no await: this fixes the
        entries' places in the log, which the RESP server's pipelining relies on);
        the core and the index of the first."""
        core = self._core
        if not self._running or core is None:
            raise NotLeaderError(None)
        largest = max(map(len, datas))
        if largest > self.config.max_entry_bytes:
            # The front end refuses these first (raft/limits.py); this is the backstop
            # for every other path: an entry too large to replicate must never enter the log.
            raise ValueError(too_large_message(largest, self.config.max_entry_bytes))
        try:
            return core, core.propose_batch(datas)
        except NotLeader as e:
            raise NotLeaderError(self._leader_client_addr(e.leader)) from None
        except ProposalDropped as e:     # a leadership transfer is under way
            raise TryAgainError(str(e)) from None

    # --- NodeAPI --------------------------------------------------------------------

    def submit(self, data: bytes) -> tuple[int, asyncio.Future[Any]]:
        """Append ``data`` (an encoded command) to the log now; return its index and
        the future of the state machine's reply: NodeAPI.submit (raft/api.py).
        Raises NotLeaderError (with the leader's client address) at once on a follower."""
        if not isinstance(data, bytes) or not data:
            # Commands are never empty (an empty entry is the leader's no-op).
            raise ValueError("a proposal must be non-empty bytes")
        core, index = self._propose([data])
        fut = self._new_future()
        self._wait_for(index, index, _Pending(core.term, fut, self._deadline()))
        self.counters["proposals"] += 1
        return index, fut

    def submit_batch(self, datas: list[bytes], read_before: Callable[[], Any] | None = None
                     ) -> tuple[int, asyncio.Future[list[Any]]]:
        """Append every command of ``datas`` to the log now, in order, as one run;
        return the index of the last and one future for all of them:
        NodeAPI.submit_batch (raft/api.py). One waiter, one future and one Ready
        wakeup for the run rather than one each (the RESP front end's pipelined SETs).
        ``read_before``: a linearizable read evaluated right before the first of them
        is applied, without a ReadIndex round (_ReadBeforeBatch says why that is
        safe); its outcome comes last (the front end's GETs between its SETs)."""
        if not datas or type(datas) is not list or not all(datas):
            raise ValueError("a batch must be a non-empty list of non-empty bytes")
        core, first = self._propose(datas)
        fut = self._new_future()
        n = len(datas)
        last = first + n - 1
        batch = _PendingBatch(core.term, fut, self._deadline(), first, n, read_before is not None)
        self._wait_for(first, last, batch)
        self.counters["proposals"] += n
        if read_before is not None:
            read = _ReadBeforeBatch(batch, read_before)
            if self.applied_index == first - 1:   # nothing is left to apply before it
                read.evaluate_now()
            else:
                self._reads_at.setdefault(first - 1, []).append(read)
        return last, fut

    async def propose(self, data: bytes) -> object:
        """Replicate ``data`` (an encoded KV command) and return the state machine's
        reply once it is committed and applied here. Raises NotLeaderError (with the
        leader's client address) or asyncio.TimeoutError (outcome unknown)."""
        return await self.submit(data)[1]

    async def read_barrier(self) -> None:
        """Return once every write committed before this call is applied locally:
        reads after it are linearizable (ReadIndex, diss. §6.4).

        The core records its commit index as the read index and confirms, with one
        heartbeat round answered by a majority after the request, that it is still
        the leader; nothing is written to the log. Reads arriving in the same loop
        iteration share one request (one future), and requests not yet in a round
        share the next one, which starts at once when none is in flight (etcd does
        the same). We then wait until the read index is applied here. A leader that
        is deposed first drops the read: the client is redirected (``_fail_reads``);
        one that cannot reach a majority times the read out after
        ``propose_timeout`` (``-TRYAGAIN``, from the sweep in the tick loop).
        """
        index = await self._read_request()
        if self.applied_index >= index:
            return
        # The node's applied index, not the state machine's: the read index may be
        # a no-op entry, which moves only the former.
        loop = asyncio.get_running_loop()
        loop_deadline = loop.time() + self.config.propose_timeout
        while self.applied_index < index:
            if not self._running:
                raise NotLeaderError(None)
            remaining = loop_deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("read index not applied in time")
            try:
                await asyncio.wait_for(self._applied_event.wait(), remaining)
            except TimeoutError:
                pass

    def _read_request(self) -> asyncio.Future[int]:
        """The future of this loop iteration's ReadIndex request (shared by every read
        that arrives before the core can put it in a round: see _close_read_request)."""
        fut = self._open_read
        if fut is not None:
            return fut
        core = self._core
        loop = self._loop
        if not self._running or core is None or loop is None:
            raise NotLeaderError(None)
        self._read_ctx += 1
        ctx = self._read_ctx
        try:
            core.read_index(ctx)
        except NotLeader as e:
            raise NotLeaderError(self._leader_client_addr(e.leader)) from None
        fut = loop.create_future()
        fut.add_done_callback(_retrieve)
        joiners: list[_LinearizableRead] = []
        fut.add_done_callback(functools.partial(_confirm_reads, joiners))
        self._reads[ctx] = _Pending(core.term, fut, loop.time() + self.config.propose_timeout)
        self._open_read = fut
        self._open_read_joiners = joiners
        self._kick.set()
        self._schedule_pump()
        self.counters["read_barriers"] += 1
        return fut

    def read(self, evaluate: Callable[[], Any], after_index: int = 0) -> asyncio.Future[Any] | None:
        """A linearizable read that does not hold up the caller's pipeline: NodeAPI.read
        (raft/api.py). ``evaluate`` runs against the state machine once every entry
        up to max(commit index now, ``after_index``) is applied -- at once if it
        already is -- and exactly there, before any later entry is applied; the
        future gets its value once a ReadIndex round started after this call
        confirms our leadership (diss. §6.4), or NotLeaderError / ReadTimeoutError.

        The commit index now is a valid read index only once this leader has
        committed an entry of its own term (§6.4 step 1); before that, returns
        None: the caller falls back to ``read_barrier``. Raises NotLeaderError on
        a follower.
        """
        core = self._core
        if not self._running or core is None:
            raise NotLeaderError(None)
        if core.role != LEADER:
            raise NotLeaderError(self._leader_client_addr())
        commit = core.commit
        if core.log.term(commit) != core.term:
            return None
        confirm = self._read_request()
        loop = asyncio.get_running_loop()
        read = _LinearizableRead(evaluate, loop, loop.time() + self.config.propose_timeout)
        if confirm.done():    # (an open request is never done; kept safe regardless)
            read._on_confirm(confirm)
        else:
            self._open_read_joiners.append(read)   # the reads of confirm's round
        # The connection's last write, if it is still in our log (a write lost with an
        # earlier term of ours may lie beyond it: nothing to wait for there).
        need = max(commit, min(after_index, core.last_index))
        if self.applied_index >= need:
            read.evaluate_now()
        else:
            self._reads_at.setdefault(need, []).append(read)
        return read.result

    def _close_read_request(self) -> None:
        """The core may start a read round now (ready(), take_messages()): later reads
        must not join a request that may already be in a round."""
        self._open_read = None

    def _deliver_reads(self, read_states: list) -> None:
        """Confirmed ReadIndex reads: hand each waiter its read index."""
        for ctx, index in read_states:
            p = self._reads.pop(ctx, None)
            if p is not None and not p.future.done():
                p.future.set_result(index)

    def _fail_reads(self) -> None:
        """This node stopped leading: its unconfirmed reads were dropped by the core."""
        reads, self._reads = self._reads, {}
        self._open_read = None
        err_addr = self._leader_client_addr()
        self._fail_reads_at(NotLeaderError(err_addr))
        for p in reads.values():
            if not p.future.done():
                p.future.set_exception(NotLeaderError(err_addr))

    async def wait_applied(self, after_index: int, timeout: float) -> None:
        """Return when ``state_machine.last_applied > after_index`` or after ``timeout``
        seconds (no exception on timeout). Wakes XREAD BLOCK readers."""
        sm = self.state_machine
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sm.last_applied <= after_index and self._running:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._applied_event.wait(), remaining)
            except TimeoutError:
                return

    def status(self) -> dict[str, Any]:
        """A flat dict for INFO's raft section (and tools): role, term, leader, commit,
        applied and last index, and on a leader every peer's match index and lag."""
        core = self._core
        if core is None:
            return {"id": self.id, "role": "stopped"}
        st = core.status()
        out: dict[str, Any] = {
            "id": self.id,
            "role": st["role"],
            "term": st["term"],
            "vote": st["vote"],
            "leader": st["leader"],
            "leader_client_addr": self._leader_client_addr() or "",
            "commit_index": st["commit"],
            "applied_index": self.applied_index,
            "last_index": st["last_index"],
            "stable_index": st["stable"],
            "first_index": st["first_index"],
            "snapshot_index": st["snapshot_index"],
            "snapshot_term": core.snapshot.term if core.snapshot is not None else 0,
            "snapshot_bytes": len(core.snapshot.data) if core.snapshot is not None else 0,
            "log_bytes_since_snapshot": self._log_bytes,
            "log_mem_bytes": st["log_bytes"],
            "snapshots_taken": self.counters["snapshots_taken"],
            "snapshots_installed": self.counters["snapshots_installed"],
            "pending_requests": len(self._pending),
            "durability": self.config.durability,
            "voters": ",".join(map(str, core.voters)),
            "learners": ",".join(map(str, core.learners)),
            "conf_index": core.conf_index,
            "lead_transferee": core.lead_transferee,
        }
        connected = {}
        if self._transport is not None:
            connected = {p: s["connected"] for p, s in self._transport.stats()["peers"].items()}
        for peer in sorted((set(core.voters) | set(core.learners)) - {self.id}):
            out[f"peer_{peer}_connected"] = int(bool(connected.get(peer)))
            pr = st["progress"].get(peer)
            if pr is not None:
                out[f"peer_{peer}_match"] = pr["match"]
                out[f"peer_{peer}_next"] = pr["next"]
                out[f"peer_{peer}_state"] = pr["state"]
                out[f"peer_{peer}_lag"] = st["last_index"] - pr["match"]
        return out

    # --- introspection for tests and tools ---------------------------------------------

    @property
    def core(self) -> RawNode:
        assert self._core is not None
        return self._core

    @property
    def is_leader(self) -> bool:
        return self._core is not None and self._core.role == LEADER

    @property
    def transport(self) -> PeerTransport | None:
        return self._transport

    @property
    def storage(self) -> DiskStorage | None:
        return self._storage

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return self._metrics.address if self._metrics is not None else None

    # --- the Ready loop ----------------------------------------------------------------

    async def _ready_loop(self) -> None:
        core = self._core
        assert core is not None
        while True:
            await self._kick.wait()
            self._kick.clear()
            while core.has_ready():
                if self._stopping or self.fatal_error is not None:
                    return
                rd = core.ready()
                self._close_read_request()
                try:
                    if self._trace_writer is not None:
                        self._format_trace()
                    await self._handle_ready(rd)
                except Exception as e:  # a disk failure or a bug: see _fatal
                    log.exception("node %d: the Ready loop failed", self.id)
                    self._fatal(f"{type(e).__name__}: {e}")
                    return
            if self._stopping or self.fatal_error is not None:
                return

    async def _handle_ready(self, rd: Ready) -> None:
        """One Ready, in the order the persistence contract requires."""
        self.counters["readies"] += 1
        self._note_ready(rd)
        self._sync_membership()
        transport = self._transport
        assert transport is not None
        # New entries: a leader's AppendEntries carrying them go first, at once, before
        # its own write (diss. §10.2.1; the leader counts itself for commitment only
        # after advance()), so the followers' saves start while ours is prepared.
        # Other messages (a commit index, heartbeat replies) go after this Ready's
        # replies to clients, at the end of the loop iteration.
        replicate_first = bool(rd.messages) and bool(rd.entries)
        if replicate_first:
            transport.send(rd.messages, now=True)
            self.counters["messages_sent"] += len(rd.messages)
        if rd.snapshot is not None:
            # A snapshot from the leader replaced our log (§7): durable first, before
            # the entries that follow it and before the ack in messages_after_persist.
            await self._install_snapshot(rd.snapshot)
        # Committed entries are durable on a majority and here (the core hands out
        # only entries <= its stable index), and confirmed reads depend on
        # heartbeats only: neither waits for this Ready's write. A leader applies
        # now, while its write runs on the writer thread; a follower, whose write
        # blocks its loop (_saves_inline), applies after its ack has left: the
        # leader's commit waits for that ack, nobody waits for the follower's apply.
        apply_after_ack = rd.must_fsync and self._saves_inline() and bool(rd.committed_entries)
        if apply_after_ack:
            self._apply_held = True
        elif rd.committed_entries:
            self._apply(rd.committed_entries)
        if rd.read_states:
            self._deliver_reads(rd.read_states)
        if rd.messages and not replicate_first:
            transport.send(rd.messages)
            self.counters["messages_sent"] += len(rd.messages)
        # Take a due snapshot now, before the pump applies more (and only if the
        # applied index is <= the commit hint written once this Ready is: a new
        # commit index rides a later Ready, see RawNode.ready), so a restart from the
        # snapshot never comes back with a commit index beyond the durable hint.
        snap = self._snapshot_if_due() if self.config.snapshot_threshold_bytes else None
        if rd.must_fsync:
            self._persisting = True
            try:
                await self._persist(rd)
            finally:
                self._persisting = False
        elif rd.hard_state is not None:
            # Only the commit hint changed: volatile in Raft, written but not synced.
            if rd.committed_entries and self._last_role == LEADER:
                # Let the replies this Ready's entries resolved (their futures'
                # callbacks) leave first: nobody waits on this write, which takes
                # tens of microseconds (a lone client's write waited for it).
                await asyncio.sleep(0)
            storage = self._storage
            assert storage is not None
            storage.save(rd.hard_state, [], sync=False)
        if rd.messages_after_persist:
            # Vote grants, AppendEntries acks and our own RequestVotes promise durable
            # state (Figure 2: "respond after updating stable storage"). Sent at once:
            # the leader's commit waits on them.
            transport.send(rd.messages_after_persist, now=True)
            self.counters["messages_sent"] += len(rd.messages_after_persist)
        if apply_after_ack:
            self._apply_held = False
            self._apply(rd.committed_entries)
        self.core.advance(rd)
        if self.config.snapshot_threshold_bytes:
            await self._maybe_compact(snap)

    def _schedule_pump(self) -> None:
        """While a Ready's fsync runs, let what needs no disk leave in this loop
        iteration (coalesced: one pump per iteration, however many inputs)."""
        if self._persisting and not self._pump_scheduled:
            self._pump_scheduled = True
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Send, answer and apply what the core produced since the Ready in hand, without
        waiting for that Ready's fsync (RawNode.take_messages/take_read_states/
        take_committed; diss. §10.2.1): a leader replicates new proposals, confirms
        reads and applies newly committed entries while its own write runs."""
        self._pump_scheduled = False
        core = self._core
        transport = self._transport
        if not self._persisting or core is None or transport is None or not self._running:
            return
        try:
            if core.role != self._last_role or core.term != self._last_term \
                    or core.leader != self._last_leader:
                self._note_role_change(core)
            msgs = core.take_messages()
            self._close_read_request()
            if msgs:
                transport.send(msgs)
                self.counters["messages_sent"] += len(msgs)
            read_states = core.take_read_states()
            if read_states:
                self._deliver_reads(read_states)
            # (While this Ready's own entries wait to be applied, later ones wait too:
            # the next Ready hands them out.)
            committed = core.take_committed() if not self._apply_held else None
            if committed:
                self._apply(committed)
        except Exception as e:  # a core assertion: see _fatal
            log.exception("node %d: the pump failed", self.id)
            self._fatal(f"{type(e).__name__}: {e}")

    # --- snapshots and log compaction (§7) -------------------------------------------

    async def _disk_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a storage call on the disk thread with fsync (the loop goes on meanwhile);
        inline with durability "none", where it is a page-cache write."""
        if self.config.durability == "fsync":
            assert self._disk is not None
            return await self._disk.call(fn, *args)
        return fn(*args)

    async def _install_snapshot(self, snap: Snapshot) -> None:
        """A Ready's snapshot from the leader: restore the state machine from it and make
        it durable (which discards our whole stored log), before the rest of the Ready.

        The state machine is restored first only because ``restore`` validates the
        snapshot without changing anything on failure: a snapshot we cannot read never
        reaches the disk (where it would stop every restart). Nothing is acknowledged
        before the install is durable (the ack is in messages_after_persist)."""
        storage = self._storage
        assert storage is not None
        t0 = time.perf_counter()
        self.state_machine.restore(snap.data)   # SnapshotError: fail-stop (see _ready_loop)
        t1 = time.perf_counter()
        await self._disk_call(storage.install_snapshot, snap)
        t2 = time.perf_counter()
        self.applied_index = snap.index
        self._log_bytes = 0
        if self._pending_snapshot is not None and self._pending_snapshot.index <= snap.index:
            self._pending_snapshot = None
        self.counters["snapshots_installed"] += 1
        self.last_snapshot = {"installed_index": snap.index, "bytes": len(snap.data),
                              "restore_seconds": t1 - t0, "save_seconds": t2 - t1}
        # Proposals at or below the snapshot: their entries may or may not be in it
        # (we no longer know): the outcome is unknown (-TRYAGAIN). Above it: gone
        # from our log unless the leader sends them again.
        for index in [i for i in self._pending if i <= snap.index]:
            p = self._pending.pop(index)
            if p.fail(index, asyncio.TimeoutError()):
                self.counters["proposals_timed_out"] += 1
        if self._pending:
            self._fail_overwritten(snap.index + 1)
        log.info("node %d: installed a snapshot from the leader at index %d (term %d, %d bytes): "
                 "restore %.3fs, save %.3fs", self.id, snap.index, snap.term, len(snap.data),
                 t1 - t0, t2 - t1)
        self._applied_event.set()
        self._applied_event = asyncio.Event()

    def _snapshot_if_due(self) -> Snapshot | None:
        """A snapshot of the state machine at the applied index, once the log since
        the last snapshot is over the threshold (and none is waiting to compact).

        ``KVStateMachine.snapshot()`` runs on the event loop: for its duration (about
        a second per few hundred MB of state, see docs/operations.md) no tick, message or
        client is served. That is fine for the default threshold and small states;
        a fork-based or incremental snapshot would lift it."""
        if self._pending_snapshot is not None or not self._snapshot_due():
            return None
        core = self.core
        snap_index = core.snapshot.index if core.snapshot is not None else 0
        if self.applied_index <= snap_index or self.applied_index > core.commit_hint:
            return None
        index = self.applied_index
        conf = core.conf_at(index)
        if not decode_conf(conf)[0]:
            # A joining node that got the log from its start (no snapshot) does not
            # know the configuration before the entry that added it: a snapshot here
            # would claim an empty one. Wait until one is in force at the applied index.
            return None
        t0 = time.perf_counter()
        data = self.state_machine.snapshot()
        self._log_bytes = 0   # what is applied from here on counts toward the next one
        self.last_snapshot = {"taken_index": index, "bytes": len(data),
                              "snapshot_seconds": time.perf_counter() - t0}
        return Snapshot(index, core.log.term(index), data, conf)

    async def _maybe_compact(self, snap: Snapshot | None) -> None:
        """After advance(): save a snapshot taken in this Ready (_snapshot_if_due);
        compact once snapshot_trailing_entries more entries are applied. The file
        write and the WAL compaction run on the disk thread, like saves; the Ready
        loop waits for them (no Ready is processed meanwhile), the rest of the loop
        does not."""
        if snap is not None and self._pending_snapshot is None:
            await self._save_snapshot(snap)
        pending = self._pending_snapshot
        cfg = self.config
        if pending is not None and (
                self.applied_index >= pending.index + cfg.snapshot_trailing_entries
                or self.core.log.mem_bytes > cfg.max_log_bytes):
            # Trailing entries are kept for slow followers only while the in-memory
            # log is under snapshot.max_log_bytes (issue 15, item 5): past it, compact
            # now; a follower that needs the dropped entries gets the snapshot (§7).
            await self._compact(pending)

    def _snapshot_due(self) -> bool:
        """Snapshot once threshold_bytes were applied since the last one, or once the
        in-memory log is over max_log_bytes with a good part of it (a quarter of the
        budget) applied since the last snapshot: what is not yet applied cannot be
        compacted, and snapshotting again for a few entries would only burn CPU."""
        cfg = self.config
        if self._log_bytes >= cfg.snapshot_threshold_bytes:
            return True
        return (self.core.log.mem_bytes > cfg.max_log_bytes
                and self._log_bytes >= cfg.max_log_bytes // 4)

    async def _save_snapshot(self, snap: Snapshot) -> None:
        storage = self._storage
        assert storage is not None
        t0 = time.perf_counter()
        await self._disk_call(storage.save_snapshot, snap)
        save_seconds = time.perf_counter() - t0
        self._pending_snapshot = snap
        self.counters["snapshots_taken"] += 1
        self.last_snapshot["save_seconds"] = save_seconds
        log.info("node %d: snapshot at index %d (term %d): %d bytes, taken in %.3fs, saved in %.3fs",
                 self.id, snap.index, snap.term, len(snap.data),
                 self.last_snapshot.get("snapshot_seconds", 0.0), save_seconds)

    async def _compact(self, snap: Snapshot) -> None:
        """Hand a saved snapshot to the core (it drops the entries it covers and sends
        it to followers that need them), then drop those entries from the WAL."""
        storage = self._storage
        assert storage is not None
        self._pending_snapshot = None
        t0 = time.perf_counter()
        self.core.compact(snap.index, snap.data)   # a no-op if a newer one was installed
        await self._disk_call(storage.compact, snap.index)
        self.counters["compactions"] += 1
        self.last_snapshot["compact_seconds"] = time.perf_counter() - t0
        log.info("node %d: compacted the log up to index %d (first index now %d)",
                 self.id, snap.index, self.core.log.first_index)

    async def _persist(self, rd: Ready) -> None:
        """hard_state + entries with ONE save() = one write + one fdatasync. With
        fsync it runs on the single disk thread so the loop keeps stepping messages,
        ticking and taking proposals (which become the next Ready: group commit). With
        durability "none" it is a page-cache write and runs inline."""
        storage = self._storage
        assert storage is not None
        t0 = time.perf_counter()
        pending = (storage.begin_save(rd.hard_state, rd.entries)
                   if self._wal_writer is not None else None)
        if pending is not None:
            # The common save: built here, written + synced without the GIL. A
            # follower waits for it right here (see _saves_inline); a leader keeps its
            # loop running meanwhile (diss. §10.2.1).
            try:
                if self._saves_inline():
                    io_seconds = self._wal_writer.write_here(pending.fd, pending.bufs,
                                                             pending.offset)
                else:
                    io_seconds = await self._wal_writer.write(pending.fd, pending.bufs,
                                                              pending.offset)
            except OSError as e:
                storage.end_save(pending, e)    # raises StorageError: fail-stop
            storage.end_save(pending, None)
            self.counters["wal_io_us"] += int(io_seconds * 1e6)
        else:
            await self._disk_call(storage.save, rd.hard_state, rd.entries)
        elapsed = time.perf_counter() - t0
        self.counters["saves"] += 1
        self.counters["entries_saved"] += len(rd.entries)
        for observe in self._fsync_observers:
            observe(elapsed, len(rd.entries))

    def _saves_inline(self) -> bool:
        """Whether this save blocks the loop (the GIL released) instead of going to
        the writer thread. Only off the leader: a follower's loop has little to do
        during its own save (its acks wait for it; the next AppendEntries wait in the
        socket buffer; a heartbeat's answer waits at most one save), while handing
        the write to a thread and back costs two wakeups (150-200 us each on the
        2-vCPU development VM) and their CPU. A leader must keep taking proposals and
        replicating while it writes (diss. §10.2.1). A/B in docs/benchmarks.md (22)."""
        core = self._core
        return core is not None and core.role != LEADER

    def _note_ready(self, rd: Ready) -> None:
        """Bookkeeping at ready() time: role changes, shared barriers, overwritten entries."""
        core = self.core
        if core.role != self._last_role or core.term != self._last_term \
                or core.leader != self._last_leader:
            self._note_role_change(core)
        if rd.entries and self._pending and core.role != LEADER \
                and rd.entries[0].index <= self._max_pending:
            # A follower may have rewritten its log from rd.entries[0].index on (§5.3:
            # a conflicting suffix is replaced by the leader's entries). A leader never
            # rewrites its own log (Leader Append-Only), so its hot path skips the scan.
            # This only answers sooner: an overwritten entry is also caught when another
            # term's entry is applied at its index (_apply).
            self._fail_overwritten(rd.entries[0].index)

    def _note_role_change(self, core: RawNode) -> None:
        role, term, leader = core.role, core.term, core.leader
        if self._reads and (role != LEADER or term != self._last_term):
            self._fail_reads()
        if role == CANDIDATE and (self._last_role != CANDIDATE or term != self._last_term):
            self.counters["elections"] += 1
        if role == LEADER and self._last_role != LEADER:
            self.counters["became_leader"] += 1
        if leader != self._last_leader and leader:
            self.counters["leader_changes"] += 1
        level = logging.INFO if role != self._last_role or leader != self._last_leader \
            else logging.DEBUG
        log.log(level, "node %d: %s in term %d (leader %s)", self.id, ROLE_NAMES[role], term,
                leader or "unknown")
        self._last_role, self._last_term, self._last_leader = role, term, leader
        self._role_event.set()

    def _fail_overwritten(self, from_index: int) -> None:
        """Fail the waiters whose entry at or after ``from_index`` is no longer ours:
        it can never be applied (an (index, term) pair names one entry forever), so
        the client may safely retry on the current leader."""
        core = self.core
        last = core.last_index
        lost = [i for i, p in self._pending.items()
                if i >= from_index and (i > last or core.log.term(i) != p.term)]
        for i in lost:
            p = self._pending.pop(i)
            self._resolve_lost(i, p)

    def _resolve_lost(self, index: int, p: _Pending | _PendingBatch) -> None:
        if p.fail(index, NotLeaderError(self._leader_client_addr())):
            self.counters["proposals_failed"] += 1

    def _apply(self, entries: list[Entry]) -> None:
        """Apply committed entries in log order (§5.3: State Machine Safety makes every
        node apply the same command at each index) and answer their proposers. A read
        waiting at an index is evaluated right after that entry: it sees the log up to
        its place, no further."""
        first = entries[0].index
        if self._apply_entries is None or entries[-1].index - first != len(entries) - 1:
            applied_commands = self._apply_one_by_one(entries)
        else:
            # Apply in runs (the state machine's batch path), cut after each index a
            # read waits at. Reads wait only at indexes above the applied one (read()).
            reads_at = self._reads_at
            marks = sorted(i for i in reads_at if first <= i <= entries[-1].index) if reads_at else ()
            applied_commands, start = 0, 0
            for mark in marks:
                end = mark - first + 1
                applied_commands += self._apply_run(entries[start:end])
                for read in reads_at.pop(mark):
                    read.evaluate_now()
                start = end
            if start < len(entries):
                applied_commands += self._apply_run(entries[start:] if start else entries)
        self.applied_index = entries[-1].index
        self.counters["entries_applied"] += len(entries)
        self._log_bytes += data_bytes(entries) + ENTRY_LOG_OVERHEAD * len(entries)
        self.counters["commands_applied"] += applied_commands
        # Wake every waiter (XREAD BLOCK, reads waiting for their read index) once
        # per batch, then start a new event.
        self._applied_event.set()
        self._applied_event = asyncio.Event()

    def _apply_run(self, entries: list[Entry]) -> int:
        """Apply ``entries`` whole with the state machine's batch path, then answer
        their proposers (the futures' callbacks run after this anyway)."""
        assert self._apply_entries is not None
        replies: list[Any] = []
        try:
            return self._apply_entries(entries, replies)
        finally:
            # Even if the state machine raised partway (a bug: the node then stops),
            # what it applied is answered, as entry-by-entry apply would have.
            pending = self._pending
            if pending:
                for e, reply in zip(entries, replies):
                    p = pending.pop(e.index, None)
                    if p is not None:
                        self._answer(p, e, reply)

    def _apply_one_by_one(self, entries: list[Entry]) -> int:
        """Each entry, then the reads waiting at its index (evaluated right there:
        a read sees the log up to its place, no further)."""
        sm = self.state_machine
        pending = self._pending
        applied_commands = 0
        for e in entries:
            index = e.index
            reply: Any = None
            # No-ops (a new leader's first entry, diss. §6.4) and empty read barriers
            # carry no command: they move the node's applied index, not the machine's.
            if e.type == ENTRY_NORMAL and e.data:
                reply = sm.apply(index, e.data)
                applied_commands += 1
            if pending:
                p = pending.pop(index, None)
                if p is not None:
                    self._answer(p, e, reply)
            if self._reads_at:
                reads = self._reads_at.pop(index, None)
                if reads is not None:
                    for read in reads:
                        read.evaluate_now()
        return applied_commands

    def _answer(self, p: _Pending | _PendingBatch, e: Entry, reply: Any) -> None:
        """The proposer of ``e``: its reply, or NotLeaderError if another leader's
        entry took its index (§5.3)."""
        if p.term == e.term:
            p.resolve(e.index, reply)
        else:
            self._resolve_lost(e.index, p)

    def _expire_pending(self, now: float) -> None:
        """Time out waiters past propose_timeout: their outcome is unknown (the entry
        may still commit later), which RESP reports as -TRYAGAIN."""
        if self._reads or self._reads_at:
            self._expire_reads(now)
        for index, p in _pop_expired(self._pending, now):
            if p.fail(index, asyncio.TimeoutError()):
                self.counters["proposals_timed_out"] += 1

    def _expire_reads(self, now: float) -> None:
        """ReadIndex requests no majority confirmed within propose_timeout, and reads
        whose index was not applied in that time."""
        for index in [i for i, rs in self._reads_at.items() if rs[0].deadline <= now]:
            keep = []
            for read in self._reads_at[index]:
                if read.deadline <= now:
                    read.fail(ReadTimeoutError())
                else:
                    keep.append(read)
            if keep:
                self._reads_at[index] = keep
            else:
                del self._reads_at[index]
        for _, p in _pop_expired(self._reads, now):
            if p.future is self._open_read:
                self._open_read = None
            if not p.future.done():
                p.future.set_exception(ReadTimeoutError())

    def _fail_reads_at(self, exc: Exception) -> None:
        """Reads waiting for their index to be applied (confirmed or not)."""
        waiting, self._reads_at = self._reads_at, {}
        for reads in waiting.values():
            for read in reads:
                read.fail(exc)

    def _fail_all_pending(self, exc: Exception) -> None:
        reads, self._reads = self._reads, {}
        self._open_read = None
        self._fail_reads_at(exc)
        for p in reads.values():
            if not p.future.done():
                p.future.set_exception(exc)
        commit = self.core.commit        # committed ones are applied (and answered) here
        lost = [i for i in self._pending if i > commit]
        for i in lost:
            p = self._pending.pop(i)
            if p.fail(i, exc) and p.future.done():
                _retrieve(p.future)  # nobody may be left to look at it
        self._applied_event.set()

    # --- tracing ---------------------------------------------------------------------

    def _open_trace(self, path: str) -> None:
        """Trace the core's events (RawNode(trace=...)) to ``path`` as NDJSON, the format
        of ``raft check`` (raft/trace.py), appending across restarts."""
        from raft.trace import NdjsonWriter

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._trace = []
        # binary: the writer writes the formatted bytes straight to the file descriptor
        self._trace_fp = open(path, "ab")
        self._trace_writer = NdjsonWriter(self._trace_fp, self.config.voters)

    def _format_trace(self) -> None:
        """Format the events the core traced since the last call and drop them. Called
        after every Ready: kept for a whole flush period, the event tuples and the
        Messages they hold outlived two collections and reached the collector's
        oldest generation, whose full collections then cost a busy leader ~2% of its
        loop (none untraced)."""
        trace = self._trace
        if trace:
            self._trace_writer.add(trace)
            del trace[:]   # the core keeps appending to this same list

    def _flush_trace(self) -> None:
        self._format_trace()
        self._trace_writer.flush()

    def _close_trace(self) -> None:
        if self._trace_fp is not None:
            self._flush_trace()
            self._trace_fp.close()
            self._trace_fp = None
            self._trace_writer = None

    # --- metrics ---------------------------------------------------------------------

    def _start_metrics(self) -> None:
        cfg = self.config
        assert cfg.metrics_port is not None
        self._metrics = NodeMetrics(self)
        self._metrics.refresh()
        self._metrics.serve(cfg.metrics_host, cfg.metrics_port)
        self._fsync_observers.append(self._metrics.observe_save)
        log.info("node %d: metrics on http://%s/metrics", self.id,
                 format_host_port(self._metrics.address))

    def _stop_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
