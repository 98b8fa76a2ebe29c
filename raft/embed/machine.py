"""The user state machine base class, ``@replicated`` / ``@query``, and the replica
that RaftNode applies the log to (client sessions, the log clock, snapshots).

Determinism rules (every replica must reach the same state from the same log):
``apply`` and ``@replicated`` methods may use only their arguments, the machine's own
state, ``self.now_ms`` (the log's clock: the leader stamps its wall clock into each
entry and the clock is the maximum stamp applied so far, as raft.kv does) and
``self.index`` (the entry's log index). Never the local clock, randomness or I/O.
An exception raised by a method is a deterministic outcome too: it is recorded in
the caller's session and re-raised at the caller as ``ReplicatedError``.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from raft.errors import RaftError
from raft.embed.codec import (
    OP_OPEN,
    OUTCOME_SESSION_EXPIRED,
    DecodeError,
    Entry,
    decode_entry,
    error_outcome,
    ok_outcome,
    pack,
    unpack,
)
from raft.kv import SnapshotError

__all__ = ["Command", "StateMachine", "replicated", "query", "IncompatibleCommand",
           "Replica", "SNAPSHOT_VERSION"]

F = TypeVar("F", bound=Callable[..., Any])

#: 2 adds the calls the log holds but the replica did not execute (Replica.skipped);
#: version 1 snapshots are still read.
SNAPSHOT_VERSION = 2


class IncompatibleCommand(RaftError, RuntimeError):
    """An entry names a state machine version newer than this replica's code. Applying
    it anyway could diverge from the replicas that understand it, so the node stops
    (fail-stop, like any apply failure): upgrade every replica's code before callers
    use the new version."""


class Command:
    """One committed call, as ``StateMachine.apply`` receives it."""

    __slots__ = ("target", "name", "args", "kwargs", "version", "time_ms", "index",
                 "client_id", "seq")

    def __init__(self, target: str, name: str, args: list[Any], kwargs: dict[str, Any],
                 version: int, time_ms: int, index: int, client_id: int, seq: int) -> None:
        self.target = target
        self.name = name          # "" for a raw node.submit(value): args == [value]
        self.args = args
        self.kwargs = kwargs
        self.version = version    # the proposer's StateMachine.version
        self.time_ms = time_ms    # the leader's clock when it proposed the entry
        self.index = index
        self.client_id = client_id
        self.seq = seq

    def __repr__(self) -> str:
        return (f"Command({self.target}.{self.name or '<submit>'}{tuple(self.args)!r}, "
                f"index={self.index}, version={self.version})")


def replicated(fn: F) -> F:
    """Mark a method whose calls go through the Raft log.

    On an attached machine, ``await machine.method(...)`` proposes the call and returns
    the method's result once the entry is committed and applied (on a ``SyncNode``,
    from another thread, the call blocks and returns the result). Inside ``apply``
    (e.g. one replicated method calling another) the body runs directly.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: "StateMachine", *args: Any, **kwargs: Any) -> Any:
        if self._applying:
            return fn(self, *args, **kwargs)
        node = self._node
        if node is None:
            raise RuntimeError(f"{type(self).__name__}.{name}: the machine is not attached "
                               "to a node (pass it to EmbeddedNode or SyncNode)")
        return node._method_call(self, name, args, kwargs)

    wrapper._replicated = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def query(fn: F) -> F:
    """Mark a read-only method that remote callers may run (``ClusterClient.query``)
    after a linearizable read barrier. Locally it is a plain method call (a stale
    read of this replica); use ``await node.read(lambda: machine.method())`` for a
    linearizable one."""
    fn._query = True  # type: ignore[attr-defined]
    return fn


class StateMachine:
    """Base class of a replicated state machine.

    Override ``snapshot()``/``restore()`` (the whole state as bytes, for log
    compaction and InstallSnapshot) and either mark methods ``@replicated`` (the
    default ``apply`` dispatches to them) or override ``apply(command)``.
    ``version`` travels in every entry, so a newer ``apply`` can interpret entries
    proposed by older code (``command.version``).
    """

    #: Bump when the meaning of a command changes; entries carry the proposer's version.
    version: int = 1
    #: The name commands address this machine by (several machines can share a node).
    name: str = ""

    _replicated_methods: dict[str, Callable[..., Any]] = {}
    _query_methods: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        methods: dict[str, Callable[..., Any]] = {}
        queries: set[str] = set()
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                inner = getattr(value, "_replicated", None)
                if inner is not None:
                    methods[attr] = inner
                if getattr(value, "_query", False):
                    queries.add(attr)
        cls._replicated_methods = methods
        cls._query_methods = frozenset(queries)

    # Attached by the node; class-level defaults so subclasses need not call super().__init__.
    _node: Any = None
    _applying: bool = False
    _now_ms: int = 0
    _index: int = 0

    @property
    def machine_name(self) -> str:
        return self.name or type(self).__name__

    @property
    def now_ms(self) -> int:
        """The log's clock (Unix ms): the largest leader stamp applied so far."""
        return self._now_ms

    @property
    def index(self) -> int:
        """The log index of the entry being applied (or the last one applied)."""
        return self._index

    def apply(self, command: Command) -> Any:
        """Apply one committed command; the result goes back to the caller."""
        fn = self._replicated_methods.get(command.name)
        if fn is None:
            if not command.name:
                raise NotImplementedError(f"{self.machine_name} got a raw submit(); "
                                          "override apply() to handle it")
            raise AttributeError(f"{self.machine_name} has no @replicated method "
                                 f"{command.name!r}")
        return fn(self, *command.args, **command.kwargs)

    def snapshot(self) -> bytes:
        raise NotImplementedError(f"{type(self).__name__}.snapshot()")

    def restore(self, data: bytes) -> None:
        raise NotImplementedError(f"{type(self).__name__}.restore()")


class _Session:
    """One caller's exactly-once state (diss. §6.3): the outcomes of its latest calls.
    Every seq <= floor is forgotten (acknowledged by the caller, or out of the window)."""

    __slots__ = ("outcomes", "floor")

    def __init__(self, floor: int = 0, outcomes: dict[int, bytes] | None = None) -> None:
        self.outcomes: dict[int, bytes] = outcomes if outcomes is not None else {}
        self.floor = floor

    def record(self, seq: int, ack: int, outcome: bytes, window: int) -> None:
        self.outcomes[seq] = outcome
        # The caller has every answer below ack (it sends the lowest seq it still waits
        # for), and we keep at most `window` outcomes.
        floor = self.floor = max(self.floor, ack - 1, seq - window)
        # Outcomes are inserted in (nearly always) ascending seq order, so the ones to
        # drop are at the front: O(1) per call, not a scan of the window.
        outcomes = self.outcomes
        while outcomes:
            oldest = next(iter(outcomes))
            if oldest > floor and len(outcomes) <= window:
                break
            del outcomes[oldest]
            if oldest > floor:
                self.floor = oldest


class Replica:
    """What RaftNode applies the log to: ``apply(index, data)``, ``snapshot()``,
    ``restore(data)`` and ``last_applied``, over one or more user machines."""

    def __init__(self, machines: dict[str, StateMachine], *, max_sessions: int = 10_000,
                 session_window: int = 1024) -> None:
        if max_sessions < 1 or session_window < 1:
            raise ValueError("max_sessions and session_window must be >= 1")
        self.machines = machines
        self.max_sessions = max_sessions
        self.session_window = session_window
        self.last_applied = 0
        self.clock_ms = 0
        self.sessions: OrderedDict[int, _Session] = OrderedDict()  # LRU, oldest first
        #: Indexes of session calls that were NOT executed: a retry answered with the
        #: first outcome, or a call whose session had expired. The log still holds them,
        #: and log readers (EmbeddedNode.tail) skip them so that each call is seen once.
        #: Bounded by the log: what the snapshot before the last one covered is pruned
        #: (RaftNode compacts one snapshot before it takes the next).
        self.skipped: set[int] = set()
        self._snapshot_index = 0
        #: Called after each applied entry with (index, entry); the node uses it for
        #: applied-index waiters.
        self.observers: list[Callable[[int, Entry | None], None]] = []

    # --- RaftNode's interface -----------------------------------------------------

    def apply(self, index: int, data: bytes) -> bytes:
        if index <= self.last_applied:
            raise ValueError(f"apply index {index} <= last applied {self.last_applied}")
        self.last_applied = index
        try:
            e = decode_entry(data)
        except DecodeError as exc:
            # Not ours (or corrupt): the same outcome on every replica, nothing changes.
            return error_outcome("DecodeError", f"log entry {index}: {exc}")
        self.clock_ms = max(self.clock_ms, e.time_ms)
        if e.op == OP_OPEN:
            out = self._open_session(index)
        elif e.client_id:
            out = self._apply_in_session(index, e)
        else:
            out = self._execute(index, e)
        for observe in self.observers:
            observe(index, e)
        return out

    def snapshot(self) -> bytes:
        user = {}
        for name, m in self.machines.items():
            data = m.snapshot()
            if not isinstance(data, bytes):
                raise TypeError(f"{name}.snapshot() returned {type(data).__name__}, not bytes")
            user[name] = [m.version, data]
        sessions = [[sid, s.floor, list(s.outcomes.items())] for sid, s in self.sessions.items()]
        # The log is compacted up to the previous snapshot by now: forget what it covered.
        self.skipped = {i for i in self.skipped if i > self._snapshot_index}
        self._snapshot_index = self.last_applied
        return pack([SNAPSHOT_VERSION, self.last_applied, self.clock_ms, self.max_sessions,
                     self.session_window, sessions, user, sorted(self.skipped)], "the snapshot")

    def restore(self, data: bytes) -> None:
        """Validate the whole snapshot, then replace the state (SnapshotError, with
        nothing changed, when the envelope is bad; user restore() must do the same)."""
        try:
            v = unpack(data, "snapshot")
        except DecodeError as e:
            raise SnapshotError(str(e)) from None
        if not (isinstance(v, list) and ((v[:1] == [1] and len(v) == 7)
                                         or (v[:1] == [SNAPSHOT_VERSION] and len(v) == 8))):
            raise SnapshotError("not a raft.embed snapshot (or a newer version)")
        _, applied, clock, max_sessions, window, sessions, user = v[:7]
        skipped_list = v[7] if len(v) == 8 else []
        if not isinstance(user, dict) or set(user) != set(self.machines):
            raise SnapshotError(f"the snapshot holds machines {sorted(user or {})}, this node "
                                f"runs {sorted(self.machines)}")
        restored: OrderedDict[int, _Session] = OrderedDict()
        try:
            for sid, floor, outcomes in sessions:
                restored[int(sid)] = _Session(int(floor), {int(s): bytes(o) for s, o in outcomes})
            for name, (version, blob) in user.items():
                if version > self.machines[name].version:
                    raise SnapshotError(f"{name}: snapshot of version {version}, this code "
                                        f"is version {self.machines[name].version}")
                if not isinstance(blob, bytes):
                    raise SnapshotError(f"{name}: snapshot data is not bytes")
            skipped = {int(i) for i in skipped_list}
        except (TypeError, ValueError) as e:
            raise SnapshotError(f"malformed raft.embed snapshot: {e}") from None
        for name, (_, blob) in user.items():
            self.machines[name].restore(blob)
        self.last_applied, self.clock_ms = int(applied), int(clock)
        self.max_sessions, self.session_window = int(max_sessions), int(window)
        self.sessions = restored
        self.skipped = skipped
        self._snapshot_index = self.last_applied
        for m in self.machines.values():
            m._now_ms, m._index = self.clock_ms, self.last_applied

    # --- sessions (diss. §6.3) -------------------------------------------------------

    def _open_session(self, index: int) -> bytes:
        # The id is the entry's log index: unique and the same on every replica.
        self.sessions[index] = _Session()
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)   # log order: every replica evicts the same
        return ok_outcome(index, "open session")

    def _apply_in_session(self, index: int, e: Entry) -> bytes:
        sess = self.sessions.get(e.client_id)
        if sess is None:
            self.skipped.add(index)
            return error_outcome("SessionExpired", f"unknown or expired session {e.client_id}",
                                 OUTCOME_SESSION_EXPIRED)
        self.sessions.move_to_end(e.client_id)
        saved = sess.outcomes.get(e.seq)
        if saved is not None:
            self.skipped.add(index)
            return saved        # a retry: the first outcome, not a second apply
        if e.seq <= sess.floor:
            self.skipped.add(index)
            return error_outcome("SessionExpired",
                                 f"the outcome of call {e.seq} of session {e.client_id} was "
                                 f"discarded (acknowledged, or more than "
                                 f"{self.session_window} calls in flight)",
                                 OUTCOME_SESSION_EXPIRED)
        out = self._execute(index, e)
        sess.record(e.seq, e.ack, out, self.session_window)
        return out

    def _execute(self, index: int, e: Entry) -> bytes:
        m = self.machines.get(e.target)
        what = f"{e.target}.{e.name or 'apply'}"
        if m is None:
            return error_outcome("LookupError", f"no state machine named {e.target!r}")
        if e.version > m.version:
            raise IncompatibleCommand(
                f"entry {index} calls {what} at version {e.version}; this replica runs "
                f"version {m.version}: upgrade its code")
        cmd = Command(e.target, e.name, e.args, e.kwargs, e.version, e.time_ms, index,
                      e.client_id, e.seq)
        m._now_ms, m._index, m._applying = self.clock_ms, index, True
        try:
            result = m.apply(cmd)
        except IncompatibleCommand:
            raise
        except Exception as exc:  # a deterministic outcome of the command: the caller's
            return error_outcome(type(exc).__name__, str(exc))
        finally:
            m._applying = False
        return ok_outcome(result, what)
