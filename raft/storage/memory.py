"""In-memory storage: the simulator's "disk". Durable means "survives the
simulated crash of the node's RawNode", i.e. held by this object."""
from __future__ import annotations

from raft._core import Entry, HardState, Snapshot
from raft.storage.base import PersistedState, StorageError


class MemoryStorage:
    def __init__(self) -> None:
        self._hard_state = HardState()
        self._entries: list[Entry] = []
        self._snapshot_index = 0
        self._snapshot_term = 0
        self._snapshot: Snapshot | None = None
        self.saves = 0

    def load(self) -> PersistedState:
        snap = self._snapshot
        if snap is not None and snap.index > self._snapshot_index:
            # Saved but not compacted yet (a crash between the two): the log
            # restarts after the snapshot, as DiskStorage's recovery does.
            after = [e for e in self._entries if e.index > snap.index]
            return PersistedState(self._hard_state, after, snap.index, snap.term, snap)
        return PersistedState(self._hard_state, list(self._entries),
                              self._snapshot_index, self._snapshot_term, snap)

    # -- snapshots (see raft.storage.base for the contract) --

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep a snapshot taken locally; the log is untouched until compact()."""
        if self._snapshot is None or snapshot.index > self._snapshot.index:
            self._snapshot = snapshot

    def compact(self, index: int) -> None:
        """Drop entries <= index; a saved snapshot must cover them."""
        if index <= self._snapshot_index:
            return
        if self._snapshot is None or self._snapshot.index < index:
            raise StorageError(f"compact({index}): no saved snapshot covers it")
        if index > self.last_index:
            raise StorageError(f"compact({index}): beyond the last index {self.last_index}")
        term = self.term(index)
        del self._entries[:index - self._snapshot_index]
        self._snapshot_index, self._snapshot_term = index, term

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaces the whole log (§7)."""
        if self._snapshot is not None and snapshot.index < self._snapshot.index:
            raise StorageError(f"install_snapshot({snapshot.index}): older than the snapshot "
                               f"held ({self._snapshot.index})")
        self._snapshot = snapshot
        self._entries = []
        self._snapshot_index, self._snapshot_term = snapshot.index, snapshot.term

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool = True) -> None:
        self.saves += 1
        if entries:
            first = entries[0].index
            if first > self.last_index + 1:
                raise StorageError(f"gap: appending {first} after {self.last_index}")
            if first <= self._snapshot_index:
                raise StorageError(f"cannot overwrite compacted index {first}")
            del self._entries[first - self._snapshot_index - 1:]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def first_index(self) -> int:
        return self._snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self._snapshot_index + len(self._entries)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        if lo < self.first_index or hi > self.last_index + 1:
            raise StorageError(f"[{lo}, {hi}) outside [{self.first_index}, {self.last_index + 1})")
        off = self._snapshot_index + 1
        return self._entries[lo - off:hi - off]

    def term(self, index: int) -> int:
        if index == self._snapshot_index:
            return self._snapshot_term
        return self.entries(index, index + 1)[0].term

    def close(self) -> None:
        pass
