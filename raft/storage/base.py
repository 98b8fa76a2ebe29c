"""The storage interface the node runtime and the simulator persist through.

Contract (see raft._core for the Ready/advance protocol):
- ``save(hard_state, entries)`` makes both durable before it returns (one write,
  one sync for the whole batch: group commit). If ``entries[0].index`` is at or
  below ``last_index``, everything from that index on is first discarded (the
  core asks for this when a follower's log had a conflicting suffix, §5.3).
- ``load()`` returns exactly what was made durable by completed ``save`` calls.
- Snapshots (§7): ``save_snapshot(snap)`` makes a snapshot the application took
  durable without touching the log; ``compact(index)`` then drops the entries it
  covers. ``install_snapshot(snap)`` (a Ready's ``snapshot``, sent by the leader)
  makes it durable and discards the whole log: the log continues at
  ``snap.index + 1``. ``load()`` returns the newest snapshot with the log after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from raft.errors import RaftError
from raft._core import Entry, HardState, Snapshot


@dataclass
class PersistedState:
    """What a node restarts from."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot: Snapshot | None = None    # with its data, when the storage keeps it


class Storage(Protocol):
    def load(self) -> PersistedState: ...

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool = True) -> None: ...

    def entries(self, lo: int, hi: int) -> list[Entry]: ...

    def term(self, index: int) -> int: ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def compact(self, index: int) -> None: ...

    def install_snapshot(self, snapshot: Snapshot) -> None: ...

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def close(self) -> None: ...


class StorageError(RaftError):
    """Persisted state is unusable (corrupt, inconsistent); the message says where and why."""
