"""Ready-made replicated state machines: a dict, a counter, a FIFO queue and a lock
manager with leases and fencing tokens.

Writes are ``@replicated`` (``await d.set("k", 1)``); reads are plain methods on this
replica (stale: wrap them in ``await node.read(lambda: d.get("k"))`` to make them
linearizable) and ``@query`` methods, which ``ClusterClient.query`` runs on the leader
after a ReadIndex barrier.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from raft.errors import RaftError
from raft.embed.codec import pack, unpack
from raft.embed.machine import StateMachine, query, replicated

__all__ = ["ReplicatedDict", "Counter", "Queue", "LockManager", "LockNotHeld", "Lease"]

_MISSING: Any = object()


class ReplicatedDict(StateMachine):
    """A replicated dict. Keys: str, int, bytes, float, bool or None (what msgpack can
    carry as a dict key); values: anything msgpack encodes."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._data: dict[Any, Any] = {}

    @replicated
    def set(self, key: Any, value: Any) -> None:
        self._data[key] = value

    @replicated
    def setdefault(self, key: Any, value: Any) -> Any:
        return self._data.setdefault(key, value)

    @replicated
    def update(self, items: dict[Any, Any]) -> None:
        self._data.update(items)

    @replicated
    def pop(self, key: Any, default: Any = None) -> Any:
        return self._data.pop(key, default)

    @replicated
    def delete(self, key: Any) -> bool:
        return self._data.pop(key, _MISSING) is not _MISSING

    @replicated
    def clear(self) -> None:
        self._data.clear()

    @query
    def get(self, key: Any, default: Any = None) -> Any:
        return self._data.get(key, default)

    @query
    def keys(self) -> list[Any]:
        return list(self._data)

    @query
    def items(self) -> list[list[Any]]:
        return [[k, v] for k, v in self._data.items()]

    @query
    def size(self) -> int:
        return len(self._data)

    def __contains__(self, key: Any) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def snapshot(self) -> bytes:
        return pack([[k, v] for k, v in self._data.items()], "ReplicatedDict state")

    def restore(self, data: bytes) -> None:
        self._data = {k: v for k, v in unpack(data, "ReplicatedDict snapshot")}


class Counter(StateMachine):
    """A replicated integer counter (64-bit signed, as msgpack carries it)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.value = 0

    @replicated
    def incr(self, n: int = 1) -> int:
        self.value += int(n)
        return self.value

    @replicated
    def decr(self, n: int = 1) -> int:
        self.value -= int(n)
        return self.value

    @replicated
    def set(self, value: int) -> int:
        self.value = int(value)
        return self.value

    @query
    def get(self) -> int:
        return self.value

    def snapshot(self) -> bytes:
        return pack(self.value)

    def restore(self, data: bytes) -> None:
        value = unpack(data, "Counter snapshot")
        if not isinstance(value, int):
            raise ValueError("Counter snapshot is not an integer")
        self.value = value


class Queue(StateMachine):
    """A replicated FIFO queue; ``maxsize`` 0 means unbounded."""

    def __init__(self, name: str = "", maxsize: int = 0) -> None:
        self.name = name
        self.maxsize = maxsize
        self._items: deque[Any] = deque()

    @replicated
    def put(self, item: Any) -> bool:
        """Append ``item``; False (and nothing changes) when the queue is full."""
        if self.maxsize and len(self._items) >= self.maxsize:
            return False
        self._items.append(item)
        return True

    @replicated
    def get(self, default: Any = None) -> Any:
        """Remove and return the oldest item (``default`` when empty)."""
        return self._items.popleft() if self._items else default

    @replicated
    def get_many(self, n: int) -> list[Any]:
        out = []
        while self._items and len(out) < n:
            out.append(self._items.popleft())
        return out

    @query
    def peek(self, default: Any = None) -> Any:
        return self._items[0] if self._items else default

    @query
    def size(self) -> int:
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def snapshot(self) -> bytes:
        return pack([self.maxsize, list(self._items)], "Queue state")

    def restore(self, data: bytes) -> None:
        maxsize, items = unpack(data, "Queue snapshot")
        self.maxsize, self._items = int(maxsize), deque(items)


class LockNotHeld(RaftError):
    """renew/release by someone who does not hold the lock (or whose lease expired)."""


@dataclass(frozen=True)
class Lease:
    """A held lock as its holder sees it: stop using it at ``local_deadline``
    (time.monotonic()), measured from before the acquire was sent."""

    lock: str
    owner: str
    token: int
    local_deadline: float

    @property
    def valid(self) -> bool:
        return time.monotonic() < self.local_deadline


class LockManager(StateMachine):
    """Named locks with leases and fencing tokens.

    Time is the log's: a lease of ``lease_ms`` acquired by the entry at index i expires
    at ``time_ms(i) + lease_ms``, where time_ms is the leader's clock stamped into the
    entry (never the applying replica's clock, which would make replicas disagree).
    A lock whose lease has expired by the log clock of a later acquire goes to that
    acquirer. The fencing token of an acquisition is its log index: strictly larger
    for each new holder, so a resource that remembers the largest token it has seen
    can refuse a paused old holder (Kleppmann's fencing).

    A holder must stop using the lock when its *own* clock says the lease ended,
    measured from before it sent the acquire (``Lease.local_deadline``): that is never
    later than the log's view unless the leaders' clocks run ahead of the holder's.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        # lock name -> [owner, token, expires_ms]
        self._locks: dict[str, list[Any]] = {}

    def _live(self, lock: str) -> list[Any] | None:
        held = self._locks.get(lock)
        if held is not None and held[2] <= self.now_ms:
            del self._locks[lock]     # the lease ran out by the log's clock
            return None
        return held

    @replicated
    def acquire(self, lock: str, owner: str, lease_ms: int) -> int | None:
        """The fencing token if ``owner`` now holds ``lock``, None if someone else does.
        Acquiring a lock one already holds extends the lease and keeps the token."""
        if lease_ms <= 0:
            raise ValueError("lease_ms must be positive")
        held = self._live(lock)
        if held is not None and held[0] != owner:
            return None
        if held is not None:
            held[2] = self.now_ms + lease_ms
            return int(held[1])
        self._locks[lock] = [owner, self.index, self.now_ms + lease_ms]
        return self.index

    @replicated
    def renew(self, lock: str, owner: str, token: int, lease_ms: int) -> int:
        """Extend a live lease; returns the new expiry (log ms). LockNotHeld otherwise."""
        held = self._live(lock)
        if held is None or held[0] != owner or held[1] != token:
            raise LockNotHeld(f"{owner} does not hold {lock!r} with token {token}")
        held[2] = self.now_ms + lease_ms
        return int(held[2])

    @replicated
    def release(self, lock: str, owner: str, token: int) -> bool:
        """Release; False if ``owner`` did not hold it with ``token`` (e.g. it expired)."""
        held = self._live(lock)
        if held is None or held[0] != owner or held[1] != token:
            return False
        del self._locks[lock]
        return True

    async def lease(self, lock: str, owner: str, lease_ms: int) -> Lease | None:
        """Acquire (asyncio node) and return a Lease with the holder-side deadline."""
        t0 = time.monotonic()
        token = await self.acquire(lock, owner, lease_ms)
        return None if token is None else Lease(lock, owner, token, t0 + lease_ms / 1000.0)

    @query
    def holder(self, lock: str) -> list[Any] | None:
        """[owner, token, expires_ms] by the last applied log time, or None."""
        held = self._locks.get(lock)
        if held is None or held[2] <= self.now_ms:
            return None
        return list(held)

    def snapshot(self) -> bytes:
        return pack(sorted(([k] + v for k, v in self._locks.items())), "LockManager state")

    def restore(self, data: bytes) -> None:
        rows = unpack(data, "LockManager snapshot")
        self._locks = {r[0]: [r[1], int(r[2]), int(r[3])] for r in rows}
