"""One behavioural suite for every Storage implementation (raft/storage/base.py).

MemoryStorage (the simulator's disk) is the reference; DiskStorage must be
indistinguishable from it through the protocol, with both durability modes and
with a configuration (tiny segments, no cache) that forces segment rotation,
cross-segment truncation and reads from disk on every call. Disk backends are
also reopened (recovery) at points where MemoryStorage simply carries on.
"""
from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from raft._core import Entry, HardState, Snapshot
from raft.storage import DiskStorage, MemoryStorage, StorageError


class Backend:
    """Makes a storage, and "restarts" it: a disk backend is closed and reopened
    from its directory (full recovery); memory survives as the same object."""

    def __init__(self, name: str, **disk_kw) -> None:
        self.name = name
        self.disk_kw = disk_kw
        self.dirs: list[str] = []

    @property
    def persistent(self) -> bool:
        return self.name != "memory"

    def make(self):
        if not self.persistent:
            return MemoryStorage()
        d = tempfile.mkdtemp(prefix="raft-conf-")
        self.dirs.append(d)
        return DiskStorage(d, **self.disk_kw)

    def reopen(self, s):
        if not self.persistent:
            return s
        s.close()
        return DiskStorage(s.path, **self.disk_kw)

    def cleanup(self) -> None:
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


BACKENDS = {
    "memory": {},
    "disk-none": {"durability": "none"},
    "disk-fsync": {"durability": "fsync"},
    # every save may rotate; every read goes to disk
    "disk-tiny": {"durability": "none", "segment_bytes": 4096, "cache_bytes": 0},
}


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    b = Backend(request.param, **BACKENDS[request.param])
    yield b
    b.cleanup()


@pytest.fixture
def store(backend):
    """(backend, storage); the test may replace the storage via backend.reopen."""
    s = backend.make()
    box = {"s": s}
    yield backend, box
    box["s"].close()


def ents(lo: int, hi: int, term: int, size: int = 20) -> list[Entry]:
    """Entries lo..hi inclusive; the data names index and term (to catch mix-ups)."""
    return [Entry(i, term, i % 2, (b"%d/%d:" % (i, term)).ljust(size, b"x")) for i in range(lo, hi + 1)]


def assert_holds(s, expected: list[Entry], hs: HardState) -> None:
    """Everything the protocol exposes agrees with the expected log and hard state."""
    last = expected[-1].index if expected else 0
    assert s.first_index == 1
    assert s.last_index == last
    assert s.entries(1, last + 1) == expected
    for e in expected:
        assert s.term(e.index) == e.term
        assert s.entries(e.index, e.index + 1) == [e]
    st_ = s.load()
    assert st_.entries == expected
    assert st_.hard_state == hs
    assert (st_.snapshot_index, st_.snapshot_term) == (0, 0)


def test_empty(store):
    backend, box = store
    s = box["s"]
    assert_holds(s, [], HardState())
    assert s.term(0) == 0
    assert s.entries(1, 1) == []
    box["s"] = s = backend.reopen(s)
    assert_holds(s, [], HardState())


def test_append_in_batches(store):
    backend, box = store
    s = box["s"]
    log: list[Entry] = []
    for lo in range(1, 200, 17):  # batches of 17, several segments in disk-tiny
        batch = ents(lo, lo + 16, 1 + lo // 50)
        s.save(None, batch)
        log += batch
        assert s.last_index == lo + 16
    assert_holds(s, log, HardState())
    assert s.entries(50, 60) == log[49:59]
    box["s"] = s = backend.reopen(s)
    assert_holds(s, log, HardState())
    s.save(None, ents(205, 210, 9))  # and it keeps going after recovery
    assert_holds(s, log + ents(205, 210, 9), HardState())


@pytest.mark.parametrize("cut", [1, 2, 50, 99, 100])
def test_overwrite_conflicting_suffix(store, cut):
    backend, box = store
    s = box["s"]
    s.save(HardState(1, 1, 0), ents(1, 100, 1, size=60))
    s.save(HardState(2, 0, 0), ents(cut, cut + 2, 2))
    expected = ents(1, cut - 1, 1, size=60) + ents(cut, cut + 2, 2)
    assert_holds(s, expected, HardState(2, 0, 0))
    box["s"] = s = backend.reopen(s)
    assert_holds(s, expected, HardState(2, 0, 0))
    # a second truncation after recovery, then appending past it
    s.save(None, ents(cut + 1, cut + 1, 3) + ents(cut + 2, cut + 5, 3))
    expected = expected[:cut] + ents(cut + 1, cut + 5, 3)
    assert_holds(s, expected, HardState(2, 0, 0))
    box["s"] = s = backend.reopen(s)
    assert_holds(s, expected, HardState(2, 0, 0))


def test_hard_state_round_trip(store):
    backend, box = store
    s = box["s"]
    s.save(HardState(3, 2, 0), [])
    assert_holds(s, [], HardState(3, 2, 0))
    s.save(None, ents(1, 5, 3))  # no hard state: the old one stays
    assert_holds(s, ents(1, 5, 3), HardState(3, 2, 0))
    s.save(HardState(4, 0, 5), [])
    box["s"] = s = backend.reopen(s)
    assert_holds(s, ents(1, 5, 3), HardState(4, 0, 5))
    big = HardState(2**64 - 1, 2**64 - 2, 2**63)  # full u64 range survives encoding
    s.save(big, [])
    box["s"] = s = backend.reopen(s)
    assert s.load().hard_state == big


def test_range_errors_leave_state_unchanged(store):
    backend, box = store
    s = box["s"]
    s.save(HardState(1, 0, 0), ents(1, 10, 1))
    for lo, hi in [(0, 1), (1, 12), (11, 12), (0, 0)]:
        with pytest.raises(StorageError):
            s.entries(lo, hi)
    for i in (11, 100):
        with pytest.raises(StorageError):
            s.term(i)
    with pytest.raises(StorageError, match="gap"):
        s.save(HardState(9, 9, 9), ents(12, 13, 1))
    assert s.entries(5, 5) == []
    assert s.entries(11, 11) == []  # empty range at the end is fine
    assert_holds(s, ents(1, 10, 1), HardState(1, 0, 0))
    box["s"] = s = backend.reopen(s)
    assert_holds(s, ents(1, 10, 1), HardState(1, 0, 0))


def test_idempotent_resave(store):
    backend, box = store
    s = box["s"]
    hs = HardState(2, 1, 3)
    s.save(hs, ents(1, 10, 2))
    s.save(hs, ents(1, 10, 2))
    s.save(hs, ents(4, 10, 2))
    s.save(None, ents(10, 10, 2))
    assert_holds(s, ents(1, 10, 2), hs)
    box["s"] = s = backend.reopen(s)
    assert_holds(s, ents(1, 10, 2), hs)
    s.save(hs, ents(10, 10, 2))
    box["s"] = s = backend.reopen(s)
    assert_holds(s, ents(1, 10, 2), hs)


def test_truncate_everything(store):
    backend, box = store
    s = box["s"]
    s.save(HardState(1, 0, 0), ents(1, 30, 1))
    s.save(HardState(5, 0, 0), ents(1, 1, 5))
    assert_holds(s, ents(1, 1, 5), HardState(5, 0, 0))
    box["s"] = s = backend.reopen(s)
    assert_holds(s, ents(1, 1, 5), HardState(5, 0, 0))


def test_save_nothing(store):
    backend, box = store
    s = box["s"]
    s.save(None, [])
    s.save(HardState(), [])
    s.save(HardState(1, 0, 0), ents(1, 2, 1))
    s.save(None, [])
    box["s"] = s = backend.reopen(s)
    assert_holds(s, ents(1, 2, 1), HardState(1, 0, 0))


# --- snapshots: save_snapshot + compact, install_snapshot ----------------------------

def assert_holds_snapshot(s, snap: Snapshot | None, expected: list[Entry], hs: HardState) -> None:
    """The storage holds ``snap`` and the log ``expected`` right after it."""
    si = snap.index if snap else 0
    last = expected[-1].index if expected else si
    assert s.first_index == si + 1
    assert s.last_index == last
    assert s.entries(si + 1, last + 1) == expected
    if snap is not None:
        assert s.term(si) == snap.term
        with pytest.raises(StorageError):
            s.entries(si, si + 1)           # compacted
    for e in expected[::7] + expected[-1:]:
        assert s.term(e.index) == e.term
    st_ = s.load()
    assert st_.snapshot == snap
    assert (st_.snapshot_index, st_.snapshot_term) == ((snap.index, snap.term) if snap else (0, 0))
    assert st_.entries == expected
    assert st_.hard_state == hs


def image(index: int, size: int = 300) -> bytes:
    return (b"state@%d;" % index).ljust(size, b"#")


def test_save_snapshot_then_compact(store):
    backend, box = store
    s = box["s"]
    log = ents(1, 60, 1, size=60) + ents(61, 100, 2, size=60)
    s.save(HardState(2, 1, 90), log)
    snap = Snapshot(70, 2, image(70))
    s.save_snapshot(snap)
    s.compact(70)
    assert_holds_snapshot(s, snap, log[70:], HardState(2, 1, 90))
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, log[70:], HardState(2, 1, 90))
    # the log goes on: appends, a conflicting suffix after the snapshot, a newer snapshot
    s.save(HardState(3, 0, 90), ents(95, 120, 3))
    log = log[70:94] + ents(95, 120, 3)
    assert_holds_snapshot(s, snap, log, HardState(3, 0, 90))
    snap2 = Snapshot(110, 3, image(110, 5000))
    s.save_snapshot(snap2)
    s.compact(110)
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap2, ents(111, 120, 3), HardState(3, 0, 90))
    s.save(None, ents(121, 121, 3))
    assert_holds_snapshot(s, snap2, ents(111, 121, 3), HardState(3, 0, 90))


def test_compact_everything_then_append(store):
    backend, box = store
    s = box["s"]
    s.save(HardState(1, 1, 20), ents(1, 20, 1))
    snap = Snapshot(20, 1, image(20))
    s.save_snapshot(snap)
    s.compact(20)
    assert_holds_snapshot(s, snap, [], HardState(1, 1, 20))
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, [], HardState(1, 1, 20))
    s.save(None, ents(21, 25, 2))
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, ents(21, 25, 2), HardState(1, 1, 20))


def test_compact_needs_a_saved_snapshot(store):
    backend, box = store
    s = box["s"]
    s.save(HardState(1, 0, 10), ents(1, 10, 1))
    with pytest.raises(StorageError):
        s.compact(5)
    s.save_snapshot(Snapshot(5, 1, image(5)))
    with pytest.raises(StorageError):
        s.compact(6)          # the snapshot does not cover it
    s.compact(5)
    s.compact(3)              # already compacted: nothing to do
    assert s.first_index == 6


@pytest.mark.parametrize("log_len", [0, 10, 69, 70, 71, 150])
def test_install_snapshot_replaces_the_whole_log(store, log_len):
    """A leader's snapshot replaces the log, whether the log ends before it, at it, or
    runs past it with entries of another term (which must never come back)."""
    backend, box = store
    s = box["s"]
    hs = HardState(2, 3, min(log_len, 8))
    if log_len:
        s.save(hs, ents(1, log_len, 2, size=60))
    else:
        s.save(hs, [])
    snap = Snapshot(70, 4, image(70, 3000))
    s.install_snapshot(snap)
    assert_holds_snapshot(s, snap, [], hs)      # the hard state survives the install
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, [], hs)
    with pytest.raises(StorageError, match="gap"):
        s.save(None, ents(72, 72, 4))
    hs = HardState(4, 0, 70)
    s.save(hs, ents(71, 80, 4))    # the log continues right after the snapshot
    assert_holds_snapshot(s, snap, ents(71, 80, 4), hs)
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, ents(71, 80, 4), hs)


def test_install_then_compact_and_install_again(store):
    backend, box = store
    s = box["s"]
    s.save(HardState(1, 1, 5), ents(1, 30, 1))
    s.install_snapshot(Snapshot(40, 2, image(40)))
    s.save(HardState(2, 0, 40), ents(41, 90, 2))
    snap = Snapshot(60, 2, image(60))
    s.save_snapshot(snap)
    s.compact(60)
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, ents(61, 90, 2), HardState(2, 0, 40))
    snap = Snapshot(200, 5, b"")                 # an empty state machine image is fine
    s.install_snapshot(snap)
    s.save(HardState(5, 0, 200), [])
    box["s"] = s = backend.reopen(s)
    assert_holds_snapshot(s, snap, [], HardState(5, 0, 200))


# --- model-based ------------------------------------------------------------------

class StorageMachine(RuleBasedStateMachine):
    """Random save/truncate/reopen sequences against a plain list model."""

    backend: Backend  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.s = self.backend.make()
        self.model: list[Entry] = []
        self.hs = HardState()
        self.term = 1

    def _entries(self, lo: int, n: int, size: int) -> list[Entry]:
        return [Entry(i, self.term, i % 3, bytes([i % 251]) * size) for i in range(lo, lo + n)]

    @rule(n=st.integers(1, 12), size=st.integers(0, 300), with_hs=st.booleans())
    def append(self, n, size, with_hs):
        batch = self._entries(len(self.model) + 1, n, size)
        hs = HardState(self.term, 1, len(self.model)) if with_hs else None
        self.s.save(hs, batch)
        self.model += batch
        if hs is not None:
            self.hs = hs

    @precondition(lambda self: self.model)
    @rule(data=st.data(), n=st.integers(0, 6), size=st.integers(0, 120), bump=st.booleans())
    def overwrite_suffix(self, data, n, size, bump):
        k = data.draw(st.integers(1, len(self.model)), label="from")
        if bump:
            self.term += 1
        batch = self._entries(k, max(n, 1), size)
        hs = HardState(self.term, 0, 0) if bump else None
        self.s.save(hs, batch)
        self.model = self.model[:k - 1] + batch
        if hs is not None:
            self.hs = hs

    @rule(term=st.integers(0, 2**64 - 1), vote=st.integers(0, 9), commit=st.integers(0, 50))
    def hard_state_only(self, term, vote, commit):
        self.hs = HardState(term, vote, commit)
        self.s.save(self.hs, [])

    @rule()
    def reopen(self):
        self.s = self.backend.reopen(self.s)

    @invariant()
    def matches_model(self):
        s = self.s
        last = len(self.model)
        assert s.last_index == last
        assert s.first_index == 1
        assert s.entries(1, last + 1) == self.model
        if last:
            assert s.term(last) == self.model[-1].term
            mid = (last + 1) // 2
            assert s.entries(mid, last + 1) == self.model[mid - 1:]
            assert s.term(mid) == self.model[mid - 1].term
        loaded = s.load()
        assert loaded.hard_state == self.hs
        assert loaded.entries == self.model

    def teardown(self):
        self.s.close()


MODEL_SETTINGS = {
    # derandomize: the same examples on every run and machine (no flaky CI);
    # fsync'ing backends get fewer, since each save costs a real sync.
    "memory": 60, "disk-none": 60, "disk-fsync": 15, "disk-tiny": 80,
}


def test_model_based(backend):
    machine = type("M", (StorageMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=settings(
        derandomize=True, max_examples=MODEL_SETTINGS[backend.name], stateful_step_count=25,
        deadline=None, suppress_health_check=list(HealthCheck), database=None))


class SnapshotMachine(RuleBasedStateMachine):
    """Random saves, truncations, snapshots + compactions, installs and reopens
    against a model: (snapshot, the log after it, hard state)."""

    backend: Backend  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.s = self.backend.make()
        self.snap: Snapshot | None = None
        self.log: list[Entry] = []
        self.hs = HardState()
        self.term = 1

    @property
    def base(self) -> int:
        return self.snap.index if self.snap else 0

    @property
    def last(self) -> int:
        return self.log[-1].index if self.log else self.base

    def _entries(self, lo: int, n: int, size: int) -> list[Entry]:
        return [Entry(i, self.term, i % 2, bytes([i % 251]) * size) for i in range(lo, lo + n)]

    @rule(n=st.integers(1, 10), size=st.integers(0, 200), with_hs=st.booleans())
    def append(self, n, size, with_hs):
        batch = self._entries(self.last + 1, n, size)
        hs = HardState(self.term, 1, self.base) if with_hs else None
        self.s.save(hs, batch)
        self.log += batch
        if hs is not None:
            self.hs = hs

    @precondition(lambda self: self.log)
    @rule(data=st.data(), n=st.integers(1, 5), size=st.integers(0, 100))
    def overwrite_suffix(self, data, n, size):
        k = data.draw(st.integers(self.base + 1, self.last), label="from")
        self.term += 1
        batch = self._entries(k, n, size)
        self.s.save(HardState(self.term, 0, self.base), batch)
        self.hs = HardState(self.term, 0, self.base)
        self.log = self.log[:k - self.base - 1] + batch

    @precondition(lambda self: self.log)
    @rule(data=st.data(), size=st.integers(0, 3000))
    def snapshot_and_compact(self, data, size):
        k = data.draw(st.integers(self.base + 1, self.last), label="at")
        snap = Snapshot(k, self.log[k - self.base - 1].term, bytes([k % 256]) * size)
        self.s.save_snapshot(snap)
        self.s.compact(k)
        self.log = self.log[k - self.base:]
        self.snap = snap

    @rule(ahead=st.integers(1, 40), bump=st.integers(0, 2), size=st.integers(0, 3000))
    def install(self, ahead, bump, size):
        self.term += bump
        snap = Snapshot(self.base + ahead, self.term, bytes([ahead]) * size)
        self.s.install_snapshot(snap)
        self.snap, self.log = snap, []

    @rule()
    def reopen(self):
        self.s = self.backend.reopen(self.s)

    @invariant()
    def matches_model(self):
        assert_holds_snapshot(self.s, self.snap, self.log, self.hs)

    def teardown(self):
        self.s.close()


def test_model_based_with_snapshots(backend):
    machine = type("SM", (SnapshotMachine,), {"backend": backend})
    run_state_machine_as_test(machine, settings=settings(
        derandomize=True, max_examples=MODEL_SETTINGS[backend.name], stateful_step_count=25,
        deadline=None, suppress_health_check=list(HealthCheck), database=None))


# --- DiskStorage-only behaviour --------------------------------------------------

def test_disk_rejects_noncontiguous_batch(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        with pytest.raises(StorageError, match="not contiguous"):
            s.save(None, [Entry(1, 1, 0, b""), Entry(3, 1, 0, b"")])
        assert s.last_index == 0


def test_disk_directory_is_locked(tmp_path):
    with DiskStorage(tmp_path, durability="none"):
        with pytest.raises(StorageError, match="in use"):
            DiskStorage(tmp_path)
    DiskStorage(tmp_path).close()  # released on close


def test_disk_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="durability"):
        DiskStorage(tmp_path, durability="sometimes")
    with pytest.raises(ValueError, match="segment_bytes"):
        DiskStorage(tmp_path, segment_bytes=10)


def test_disk_closed_storage_refuses(tmp_path):
    s = DiskStorage(tmp_path, durability="none")
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.save(None, ents(1, 1, 1))
