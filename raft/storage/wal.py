"""Durable storage: a segmented, checksummed write-ahead log (``DiskStorage``).

One directory holds everything a node must not forget:

* ``<seq>-<first index>.wal`` segments: append-only logs of *batches*, one batch
  per ``save()``, each batch = [TRUNCATE] [ENTRY ...] [HARD_STATE] records
  (format in raft/storage/segment.py, diagrams in docs/storage.md);
* ``<index>-<term>.snap`` snapshots (raft/storage/snapshot.py);
* ``LOCK``, flock()ed while a ``DiskStorage`` has the directory open.

Snapshots (``save_snapshot``, ``compact``, ``install_snapshot``): the snapshot file
is always made durable first; then a SNAPSHOT record in the WAL says where the log
now starts (compaction: "entries <= index are in the snapshot"; install, flag RESET,
as the first batch of a new segment: "the whole log is replaced, it continues at
index + 1"); only then are segments deleted. Every new segment's first batch carries
the WAL's current SNAPSHOT record as well as the hard state, so deleting older
segments loses neither. Recovery reconciles the newest snapshot file with the WAL:
if the file is newer than the WAL's last SNAPSHOT record, the WAL's entries after
it are kept only if the WAL holds the snapshot's last entry (index, term) (Raft
Figure 13 step 6: a local snapshot not yet compacted); otherwise the file is an
install interrupted before its WAL record, and every WAL entry is discarded (never
a snapshot followed by an old, conflicting suffix). Opening then writes the missing
record, completing the compaction or the install.

Why it is crash safe:

* one ``save()`` = one write() of one batch + one ``fdatasync``; the hard state
  is a record in the same batch, so it costs no extra sync and is never
  recovered without the entries it was saved with (batches are all-or-nothing);
* a truncation of a conflicting suffix is a TRUNCATE record at the head of the
  batch that brings the replacement entries, so it is durable exactly when they are;
* a new segment is written to a temp file (header + first batch, which always
  includes the current hard state), fsynced, renamed, and the directory fsynced:
  a segment never exists half-made, and the newest segment always holds the
  newest hard state, so deleting older segments can never roll it back;
* recovery (``recover``) verifies every batch; the only damage it repairs on its
  own is a torn tail (the save() in flight at the crash, which never returned).
  Anything else raises ``StorageError`` pointing at ``raft storage check/repair``.

Reads for replication come from an in-memory cache of the newest entries
(``cache_bytes``); older entries are read back from their segment through a
per-segment offset index built on first use.
"""
from __future__ import annotations

import bisect
import errno
import fcntl
import logging
import os
from array import array
from itertools import groupby
from operator import attrgetter
from collections import OrderedDict

from raft._core import Entry, HardState, decode_conf
from raft._core import Snapshot as CoreSnapshot
from raft.storage import fileio
from raft.storage.base import PersistedState, StorageError
from raft.storage.guard import DataDirGuard, check_marker, marker_path, write_marker
from raft.storage.recovery import Recovery, SegmentInfo, recover
from raft.storage.segment import (
    CRC_RESIDUE,
    HARD_STATE_PAYLOAD,
    KIND_ENTRY,
    KIND_HARD_STATE,
    KIND_TRUNCATE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_OVERHEAD,
    SEG_HEADER_SIZE,
    BatchBuilder,
    checksum,
    encode_segment_header,
    index_segment,
    segment_name,
)
from raft.storage.snapshot import (
    SnapshotMeta,
    latest_snapshot_meta,
    read_snapshot,
    write_snapshot,
)

log = logging.getLogger("raft.storage")

DURABILITY_MODES = ("fsync", "none")
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_CACHE_BYTES = 64 << 20
#: What one cached Entry costs beyond its data (the Entry and bytes objects, a
#: list slot), so that a cache of tiny entries is still bounded in real memory.
ENTRY_MEMORY_OVERHEAD = 96
#: Room to reserve for the hard state record when deciding whether a batch fits.
_HARD_STATE_RECORD_SIZE = RECORD_OVERHEAD + HARD_STATE_PAYLOAD.size
#: How many older segments keep their offset index in memory (8 bytes x 2 an entry).
_INDEXED_SEGMENTS = 4

_term_of = attrgetter("term")
_data_of = attrgetter("data")

try:   # compiled (raft/_fastpath.pyx); the sum below is its reference
    from raft._fastpath import entries_data_bytes as _entries_data_bytes
except ImportError:  # a source tree without compiled extensions
    _entries_data_bytes = None


def data_bytes(entries: list[Entry]) -> int:
    """The total size of the entries' data (what byte budgets on the log count)."""
    if _entries_data_bytes is not None and type(entries) is list:
        return _entries_data_bytes(entries)
    return sum(map(len, map(_data_of, entries)))

REPAIR_HINT = ("`raft storage check DIR` describes the damage; `raft storage repair DIR` "
               "cuts the log there, moving the damaged bytes aside to a .corrupt file")


# --- the storage ------------------------------------------------------------------

def _read_core_snapshot(path: str) -> CoreSnapshot:
    """A snapshot file as the core's Snapshot; StorageError naming the file if damaged."""
    f = read_snapshot(path)
    try:
        return CoreSnapshot(f.index, f.term, f.data, f.conf)
    except Exception as e:  # index or term 0: not something we write
        raise StorageError(f"snapshot {path}: unusable ({e})") from None

#: With durability "fsync", a segment is zero-filled this far ahead of its data, in
#: the same write and sync as the batch that needs the room (``DiskStorage._room``):
#: an fdatasync then has only data to flush, not the file's new size (on ext4 a
#: journal commit per sync, and the three nodes' syncs queue for the one journal).
#: Measured on the development VM (4 KiB write + fdatasync, three processes at once):
#: p50 0.29 ms appending, 0.15 ms into zero-filled space, 0.22 ms into fallocate()d
#: space (unwritten extents still change metadata). benchmarks/bench_storage.py.
PREALLOCATE_BYTES = 1 << 20
_ZEROS = memoryview(bytes(PREALLOCATE_BYTES))


def _write_at(fd: int, bufs: list, offset: int) -> None:
    """One pwritev for the whole save at ``offset``; loops only if the kernel writes
    short (a regular file does that only on ENOSPC-like conditions)."""
    total = sum(len(b) for b in bufs)
    done = os.pwritev(fd, bufs, offset)
    if done < total:
        rest = memoryview(b"".join(bufs))[done:]
        while rest:
            n = os.pwrite(fd, rest, offset + done)
            rest, done = rest[n:], done + n


class _BatchPlan:
    """One batch, built (``builder``, ``batch``) and placed: a new segment, or
    ``seg`` (the active one) at ``offset``."""

    __slots__ = ("builder", "batch", "new_segment", "truncate_at", "hard_state", "entries",
                 "marker", "reset", "seg", "offset")

    def __init__(self, builder: BatchBuilder, batch: bytearray, new_segment: bool,
                 truncate_at: int | None, hard_state: HardState | None, entries: list[Entry],
                 marker: tuple[int, int] | None, reset: bool, seg: SegmentInfo | None,
                 offset: int) -> None:
        self.builder, self.batch, self.new_segment = builder, batch, new_segment
        self.truncate_at, self.hard_state, self.entries = truncate_at, hard_state, entries
        self.marker, self.reset = marker, reset
        self.seg: SegmentInfo = seg   # type: ignore[assignment]  # set for a new segment later
        self.offset = offset


class PendingSave:
    """A save between begin_save and end_save: write ``bufs`` at ``offset`` of ``fd``
    (the active segment's), then fdatasync."""

    __slots__ = ("fd", "plan")

    def __init__(self, fd: int, plan: _BatchPlan) -> None:
        self.fd, self.plan = fd, plan

    @property
    def bufs(self) -> list:
        return [self.plan.batch]

    @property
    def offset(self) -> int:
        return self.plan.offset


class DiskStorage:
    """The Storage protocol (raft/storage/base.py) on a directory of WAL segments.

    ``durability="fsync"`` (default): every ``save()`` is on stable storage when it
    returns (one ``fdatasync``; also a directory fsync when it starts a segment).
    ``durability="none"``: no syncs at all. A process crash loses nothing (the
    page cache survives), but a power loss or kernel crash can lose or tear
    acknowledged saves: UNSAFE for a real cluster; for tests and benchmarks.

    Opening the directory runs recovery (``recover``): a torn final batch is cut
    away with a warning; any other damage raises ``StorageError``. ``load()``
    then returns what is stored. One process at a time: the directory is locked.
    """

    def __init__(self, path: str | os.PathLike, durability: str = "fsync",
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, voters: tuple[int, ...] = (),
                 node_id: int | None = None, force_new: bool = False) -> None:
        """node_id: the node this directory belongs to; enables the marker beside it
        (raft/storage/guard.py): an empty directory whose marker exists is refused
        unless ``force_new``."""
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes={segment_bytes} is too small (min 4096)")
        self.path = os.fspath(path)
        self.durability = durability
        self.segment_bytes = segment_bytes
        self.cache_bytes = cache_bytes
        #: recorded in the snapshot files this storage writes (for tools; not interpreted)
        self.voters = tuple(int(v) for v in voters)
        #: counters for tests and benchmarks
        self.saves = 0
        self.syncs = 0
        self._fd = -1  # write fd of the active (last) segment
        self._failed: BaseException | None = None
        self._pending_save: PendingSave | None = None   # begin_save .. end_save
        self._closed = False
        self._guard: DataDirGuard | None = None
        self._node_id = node_id
        self._needs_marker = False
        os.makedirs(self.path, exist_ok=True)
        self._lock_fd = self._lock()
        try:
            self._guard = DataDirGuard(self.path, self._lock_fd)
            self._open()
            if node_id is not None:
                self._check_marker(force_new)
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------

    def _lock(self) -> int:
        fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(f"{self.path} is in use by another DiskStorage "
                               f"(its LOCK file is held)") from None
        return fd

    def _open(self) -> None:
        rec = recover(self.path)
        if rec.problem is not None:
            raise StorageError(f"{self.path}: {rec.problem}. {REPAIR_HINT}")
        if rec.damage is not None:
            if not rec.damage.torn:
                raise StorageError(f"corrupt write-ahead log: {rec.damage.describe()}. {REPAIR_HINT}")
            self._cut_torn_tail(rec)
        for tmp in rec.temp_files:  # a segment or snapshot whose creation crashed
            fileio.unlink(tmp)

        self._segments: list[SegmentInfo] = rec.segments
        self._hard_state: HardState = rec.hard_state
        self._snapshot: SnapshotMeta | None = rec.snapshot
        # The newest snapshot with its data, checksums verified (a truncated or damaged
        # file is a StorageError naming it: never a silent fall back to an older one).
        self._snap_data: CoreSnapshot | None = (
            _read_core_snapshot(rec.snapshot.path) if rec.snapshot is not None else None)
        # The log starts after (_snap_index, _snap_term): the snapshot, or compact()'s index.
        self._snap_index = rec.snapshot.index if rec.snapshot else 0
        self._snap_term = rec.snapshot.term if rec.snapshot else 0
        # The WAL's own record of where the log starts: carried into the first batch
        # of every new segment, so deleting older segments never loses it.
        self._marker: tuple[int, int] | None = rec.wal_snapshot
        entries = rec.entries
        self._last = entries[-1].index if entries else self._snap_index
        # Where the on-disk log continues; differs from _last + 1 only when the
        # snapshot is ahead of the log (then the next write starts with TRUNCATE).
        self._phys_next = rec.next_index
        self._init_terms(entries)
        self._init_cache(entries)
        self._loaded: list[Entry] | None = entries  # handed out by the first load()
        self._indexes: OrderedDict[int, tuple[int, array, array]] = OrderedDict()
        if self._segments:
            active = self._segments[-1]
            # Not O_APPEND: batches go at active.size, before any preallocated zeros.
            self._fd = os.open(active.path, os.O_WRONLY | os.O_CLOEXEC)
        # Both roll-forwards write their SNAPSHOT record *before* any segment goes:
        # deleting first, a crash could leave a log that no longer holds the snapshot's
        # entry (compaction: then mistaken for an interrupted install), or a suffix
        # that starts after a gap (install: then refused as missing entries).
        if rec.compact_pending:
            self._write_batch(None, [], marker=(self._snap_index, self._snap_term))
        if rec.install_pending:
            if rec.snapshot is None:
                raise StorageError(f"{self.path}: recovery found an interrupted install without a snapshot")
            what = (f"discarding the log's entries {rec.discarded[0]}..{rec.discarded[1]}"
                    if rec.discarded else "the log was empty")
            log.warning("raft.storage: %s: completing an interrupted snapshot install: the "
                        "newest snapshot (%s) is ahead of the write-ahead log, which does not "
                        "hold its last entry (%d, term %d); %s (Raft Figure 13 step 6)",
                        self.path, os.path.basename(rec.snapshot.path), rec.snapshot.index,
                        rec.snapshot.term, what)
            self._write_batch(None, [], marker=(self._snap_index, self._snap_term), reset=True)
        self._collect_garbage()

    def _check_marker(self, force_new: bool) -> None:
        """Refuse an empty directory that held state before (raft/storage/guard.py);
        mark one that holds state now, or mark it at the first save."""
        empty = not self._segments and self._snapshot is None
        check_marker(self.path, self._node_id, empty, force_new)
        if empty:
            if force_new:
                log.warning("raft.storage: %s: starting with an empty data directory "
                            "although it held state before (--force-new)", self.path)
            self._needs_marker = True
        elif force_new or not os.path.exists(marker_path(self.path)):
            write_marker(self.path, self._node_id)

    def check_data_dir(self) -> None:
        """Raise DataDirLost (a StorageError) if the directory or its LOCK file was
        deleted or replaced since it was opened; the storage is then unusable."""
        if self._guard is None or self._closed:
            return
        try:
            self._guard.check()
        except StorageError as e:
            self._failed = e
            raise

    def _cut_torn_tail(self, rec: Recovery) -> None:
        """Cut the torn final batch: it is the save() in flight at the crash,
        which never returned, so nothing acknowledged is lost."""
        d = rec.damage
        if d is None or not d.torn:
            raise StorageError(f"{self.path}: only a torn final batch may be cut, not {d}")
        seg = rec.segments[-1]
        if d.batch_offset == 0:  # not even a valid header: the file held nothing
            log.warning("raft.storage: removing %s: torn at creation (%s)", seg.path, d.reason)
            fileio.unlink(seg.path)
            rec.segments.pop()
            self._sync_dir()
        else:
            log.warning("raft.storage: torn write at the end of %s: cutting the file at byte "
                        "offset %d, %d bytes before its end (preallocated room included) (%s); "
                        "this was a save() that never returned",
                        seg.path, d.batch_offset, seg.file_size - d.batch_offset, d.reason)
            fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                fileio.ftruncate(fd, d.batch_offset)
                if self.durability == "fsync":
                    fileio.fsync(fd)
            finally:
                os.close(fd)
            seg.size = seg.file_size = d.batch_offset
        rec.damage = None

    def _init_terms(self, entries: list[Entry]) -> None:
        # Run-length term index: term() never reads the disk, at ~16 bytes a term
        # change. groupby/map keep the walk over a million entries in C.
        starts: list[int] = []
        terms: list[int] = []
        i = entries[0].index if entries else 0
        for t, run in groupby(map(_term_of, entries)):
            starts.append(i)
            terms.append(t)
            i += len(list(run))
        self._term_starts = starts
        self._term_values = terms

    def _init_cache(self, entries: list[Entry]) -> None:
        # The newest entries, up to cache_bytes; entries are shared with `entries`.
        # Walk back from the end in chunks summed in C (a per-entry Python loop
        # cost 0.3 s for a 64 MiB cache of small entries).
        budget = self.cache_bytes
        used = 0
        k = len(entries)
        chunk = 4096
        while k > 0:
            lo = max(0, k - chunk)
            part = entries[lo:k]
            cost = data_bytes(part) + ENTRY_MEMORY_OVERHEAD * len(part)
            if used + cost > budget:
                for e in reversed(part):  # the last, partial chunk: entry by entry
                    c = len(e.data) + ENTRY_MEMORY_OVERHEAD
                    if used + c > budget:
                        break
                    used += c
                    k -= 1
                break
            used += cost
            k = lo
        self._cache: list[Entry] = entries[k:]
        self._cache_start = 0  # _cache[_cache_start:] is live (amortised popleft)
        self._cache_lo = self._last + 1 - len(self._cache)  # index of the first cached entry
        self._cache_used = used

    # -- the Storage protocol --------------------------------------------------

    def load(self) -> PersistedState:
        """What the directory holds: the hard state, the newest snapshot (with its
        data) and the entries after it."""
        self._check_usable()
        snap = self._snapshot
        snap_index = snap.index if snap else 0
        snap_term = snap.term if snap else 0
        if self._loaded is not None and snap_index <= self._snap_index:
            # the list recovery built: no second read of the disk
            entries, self._loaded = self._loaded, None
        else:
            self._loaded = None
            lo = max(self.first_index, snap_index + 1)
            entries = self.entries(lo, self._last + 1) if lo <= self._last else []
        return PersistedState(self._hard_state, entries, snap_index, snap_term, self.load_snapshot())

    def load_snapshot(self) -> CoreSnapshot | None:
        """The newest snapshot (with its data), or None."""
        self._check_usable()
        snap = self._snapshot
        if snap is None:
            return None
        data = self._snap_data
        if data is None or (data.index, data.term) != (snap.index, snap.term):
            data = self._snap_data = _read_core_snapshot(snap.path)
        return data

    # -- snapshots (the contract is in raft/storage/base.py) ---------------------

    def save_snapshot(self, snapshot: CoreSnapshot) -> None:
        """Make a snapshot the application took durable (file, fsync, rename, directory
        fsync); the log is untouched until ``compact``. A snapshot not newer than the
        newest one already saved is ignored."""
        self._check_usable()
        newest = self._snapshot
        if newest is not None and snapshot.index <= newest.index:
            return
        if snapshot.index > self._last:
            raise StorageError(f"save_snapshot({snapshot.index}): beyond the last index {self._last} "
                               f"(a snapshot from a leader goes through install_snapshot)")
        if snapshot.index > self._snap_index and self.term(snapshot.index) != snapshot.term:
            raise StorageError(f"save_snapshot({snapshot.index}): the snapshot has term "
                               f"{snapshot.term}, the log has term {self.term(snapshot.index)} there")
        self._write_snapshot_file(snapshot)

    def install_snapshot(self, snapshot: CoreSnapshot) -> None:
        """Make a snapshot from the leader durable and discard the whole log (§7): the
        log continues at ``snapshot.index + 1``.

        Crash safe in two durable steps: (1) the snapshot file (temp file, fsync,
        rename, directory fsync); (2) a new segment whose first batch is a SNAPSHOT
        record with the RESET flag (and the hard state). After (1) alone, recovery
        finds the file ahead of the WAL and, the WAL not holding its last entry,
        discards the WAL's entries (Figure 13 step 6) and writes (2) itself. The old
        segments, all dead after (2), are deleted last."""
        self._check_usable()
        newest = self._snapshot
        if newest is not None and snapshot.index <= newest.index:
            raise StorageError(f"install_snapshot({snapshot.index}, term {snapshot.term}): not newer "
                               f"than the snapshot already held ({newest.index}, term {newest.term})")
        self._write_snapshot_file(snapshot)
        self._save_guarded(None, [], marker=(snapshot.index, snapshot.term), reset=True)

    def _write_snapshot_file(self, snapshot: CoreSnapshot) -> None:
        self.check_data_dir()
        try:
            path = write_snapshot(self.path, snapshot.index, snapshot.term,
                                  snapshot.conf, snapshot.data,
                                  durability=self.durability)
        except OSError as e:
            self._failed = e
            raise StorageError(f"writing snapshot ({snapshot.index}, term {snapshot.term}) to "
                               f"{self.path} failed ({e}); this DiskStorage is unusable, reopen "
                               f"it to recover") from e
        if self.durability == "fsync":
            self.syncs += 2
        conf = snapshot.conf
        self._snapshot = SnapshotMeta(snapshot.index, snapshot.term,
                                      decode_conf(conf)[0] if conf else (),
                                      len(snapshot.data), path, conf)
        self._snap_data = snapshot

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def first_index(self) -> int:
        return self._snap_index + 1

    @property
    def last_index(self) -> int:
        return self._last

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool = True) -> None:
        """Make ``hard_state`` (if not None) and ``entries`` durable: one write, one
        fdatasync. If ``entries[0].index <= last_index`` everything from there
        on is discarded first, durably in the same write.

        ``sync=False`` writes without the fdatasync (a process crash keeps the
        write, a power loss may not): for a hard state whose only change is the
        commit hint (``Ready.must_fsync`` False), which Raft does not require to be
        durable. A new segment is still synced whole (it appears whole or not at all)."""
        self._check_usable()
        if not self._check_save(hard_state, entries):
            return  # nothing to make durable
        self._save_guarded(hard_state, entries, sync=sync)
        self.saves += 1

    def _check_save(self, hard_state: HardState | None, entries: list[Entry]) -> bool:
        """Refuse entries that cannot follow the log; False if there is nothing to save."""
        if entries:
            first = entries[0].index
            if entries[-1].index != first + len(entries) - 1:
                raise StorageError(f"entries to save are not contiguous: {first}..{entries[-1].index} "
                                   f"in {len(entries)} entries")
            if first > self._last + 1:
                raise StorageError(f"gap: appending {first} after {self._last}")
            if first <= self._snap_index:
                raise StorageError(f"cannot overwrite compacted index {first}")
            return True
        return hard_state is not None and hard_state != self._hard_state

    def _save_guarded(self, hard_state: HardState | None, entries: list[Entry],
                      marker: tuple[int, int] | None = None, reset: bool = False,
                      sync: bool = True) -> None:
        self._before_write()
        try:
            self._write_batch(hard_state, entries, marker, reset, sync)
            if self._needs_marker:
                write_marker(self.path, self._node_id)
                self._needs_marker = False
        except StorageError:
            raise
        except OSError as e:
            path = self._segments[-1].path if self._segments else self.path
            raise self._write_failed(path, e) from e

    def _before_write(self) -> None:
        """What every WAL write checks first (save(), compaction, begin_save)."""
        if self._pending_save is not None:
            # begin_save's batch is placed at the end of the log: nothing may go first.
            raise StorageError("a WAL write while a save is in flight (begin_save .. end_save)")
        self._loaded = None
        self.check_data_dir()     # never promise durability in a directory that is gone

    def _write_failed(self, path: str, e: OSError) -> StorageError:
        """After a failed write or fsync the file's state is unknown (and Linux may
        have dropped the dirty pages: retrying fsync would lie). Refuse further use;
        reopening runs recovery, which cuts any partial batch."""
        self._failed = e
        return StorageError(f"write to {path} failed ({e}); this DiskStorage is unusable, "
                            f"reopen it to recover")

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries [lo, hi), from memory when cached, else read back from segments."""
        self._check_usable()
        if lo < self.first_index or hi > self._last + 1:
            raise StorageError(f"[{lo}, {hi}) outside [{self.first_index}, {self._last + 1})")
        if lo >= hi:
            return []
        cache_lo = self._cache_lo
        s = self._cache_start - cache_lo
        if lo >= cache_lo:
            return self._cache[s + lo:s + hi]
        out = self._read_disk(lo, min(hi, cache_lo))
        if hi > cache_lo:
            out.extend(self._cache[s + cache_lo:s + hi])
        return out

    def term(self, index: int) -> int:
        self._check_usable()
        if index == self._snap_index:
            return self._snap_term
        if index < self.first_index or index > self._last:
            raise StorageError(f"[{index}, {index + 1}) outside [{self.first_index}, {self._last + 1})")
        return self._term_values[bisect.bisect_right(self._term_starts, index) - 1]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._guard is not None:
            self._guard.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- compaction ------------------------------------------------------------

    def compact(self, index: int) -> None:
        """Forget entries <= ``index``: they are covered by a snapshot already saved
        in this directory (``save_snapshot``, or ``raft.storage.snapshot.write_snapshot``).

        First a SNAPSHOT record (index, term) is made durable in the WAL (so that
        recovery knows where the log starts even once the segment holding ``index``
        is gone), then every segment whose live entries all lie at or below
        ``index`` is deleted, oldest first (never the active one). ``first_index``
        becomes ``index + 1``; after a reopen the log starts after the newest snapshot.
        """
        self._check_usable()
        snap = latest_snapshot_meta(self.path)
        if snap is None or snap.index < index:
            raise StorageError(f"compact({index}): no snapshot in {self.path} covers it "
                               f"(newest: {snap.index if snap else 'none'}); write one first")
        if self._snapshot is None or snap.path != self._snapshot.path:
            self._snapshot = snap   # written by write_snapshot() behind our back
        if index <= self._snap_index:
            return
        if index > self._last:
            raise StorageError(f"compact({index}): beyond the last index {self._last}")
        term = self.term(index)
        if snap.index == index and snap.term != term:
            raise StorageError(f"compact({index}): the snapshot has term {snap.term}, "
                               f"the log has term {term} there")
        self._save_guarded(None, [], marker=(index, term))
        self._snap_index, self._snap_term = index, term
        self._loaded = None
        if self._cache_lo <= index:
            self._cache_drop_front(index + 1)
        for seg in self._segments:
            seg.lo = max(seg.lo, index + 1)
            seg.hi = max(seg.hi, seg.lo)
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete segments other than the active one that hold no live entry.

        Safe because the active segment always holds the newest hard state (its
        first batch carries it), and every live entry is in a kept segment.
        """
        older = self._segments[:-1]
        if all(s.live for s in older):
            return
        # A crash can stop us after any unlink, so every intermediate set of files
        # must replay to the same log. Dead segments before the first live one
        # (compacted away) go oldest first: what is left is still a suffix of the
        # log. Dead segments after it (superseded by a truncation recorded in a
        # later segment) go newest first: what is left still continues without
        # a gap up to that truncation. (Deleting those oldest first once left a
        # segment whose TRUNCATE pointed past the end of the replayed log: found
        # by the SIGKILL test.) The directory is synced after each unlink so a
        # power loss cannot reorder them either.
        first_live = next((i for i, s in enumerate(older) if s.live), len(older))
        front = [s for s in older[:first_live]]
        superseded = [s for s in reversed(older[first_live:]) if not s.live]
        for seg in front + superseded:
            fileio.unlink(seg.path)
            self._indexes.pop(seg.seq, None)
            self._sync_dir()
        gone = set(map(id, front + superseded))
        self._segments = [s for s in self._segments if id(s) not in gone]

    # -- writing ---------------------------------------------------------------

    def _write_batch(self, hard_state: HardState | None, entries: list[Entry],
                     marker: tuple[int, int] | None = None, reset: bool = False,
                     sync: bool = True) -> None:
        """Write one batch durably: [SNAPSHOT] [TRUNCATE] [ENTRY ...] [HARD_STATE].

        ``marker`` (index, term) writes a SNAPSHOT record: compaction, or with
        ``reset`` an installed snapshot (always the first batch of a new segment).
        The first batch of every new segment carries the hard state and the WAL's
        current SNAPSHOT record, so the newest segment always holds both and
        deleting older ones can lose neither."""
        plan = self._plan_batch(hard_state, entries, marker, reset)
        if plan.new_segment:
            if reset:
                if marker is None or entries:
                    raise StorageError("a log reset writes a snapshot marker and no entries")
                seg_first = marker[0] + 1
            else:
                seg_first = plan.truncate_at if plan.truncate_at is not None else (
                    entries[0].index if entries else self._last + 1)
            active = self._segments[-1] if self._segments else None
            seq = active.seq + 1 if active else 1
            if active is not None:
                self._close_room(active)
            plan.seg = self._create_segment(seq, seg_first, plan.batch)
            plan.offset = SEG_HEADER_SIZE
        else:
            seg = plan.seg
            fileio.failpoint("wal.write")
            self._write_with_room(self._fd, seg, [plan.batch], seg.size)
            seg.size += len(plan.batch)
            if self.durability == "fsync" and sync:
                fileio.failpoint("wal.sync")
                fileio.fdatasync(self._fd, seg.size)
                self.syncs += 1
        self._commit_batch(plan)
        if plan.new_segment:
            self._collect_garbage()

    def _plan_batch(self, hard_state: HardState | None, entries: list[Entry],
                    marker: tuple[int, int] | None, reset: bool) -> _BatchPlan:
        """The batch's bytes and where it goes (the active segment, or a new one);
        nothing written, nothing in memory changed."""
        active = self._segments[-1] if self._segments else None
        truncate_at = None
        if entries:
            first = entries[0].index
            if self._phys_next != 0 and first != self._phys_next:
                truncate_at = first

        def build(carry: bool) -> BatchBuilder:
            b = BatchBuilder()
            snap = marker if marker is not None else (self._marker if carry else None)
            if snap is not None:
                b.snapshot(snap[0], snap[1], reset)
            if truncate_at is not None:
                b.truncate(truncate_at)
            if entries:
                b.entries(entries)
            return b

        b = build(False)
        new_segment = (
            active is None
            or reset
            # Truncating below the active segment's first index: start a new one,
            # so that every segment holds only entries >= its first index.
            or (truncate_at is not None and truncate_at < active.first)
            or (active.batches > 0
                and active.size + len(b) + _HARD_STATE_RECORD_SIZE > self.segment_bytes))
        if new_segment and marker is None and self._marker is not None:
            b = build(True)
        if hard_state is not None or new_segment or active.batches == 0:
            # A segment's first batch always carries the hard state (see _collect_garbage).
            b.hard_state(hard_state if hard_state is not None else self._hard_state)
        return _BatchPlan(b, b.finish(), new_segment, truncate_at, hard_state, entries,
                          marker, reset, active, active.size if active is not None else 0)

    def _commit_batch(self, plan: _BatchPlan) -> None:
        """The batch is on disk: count it and bring memory in line with it."""
        plan.seg.batches += 1
        if plan.marker is not None:
            self._marker = plan.marker
            if plan.reset:
                self._reset_memory(plan.marker[0], plan.marker[1])
        self._apply(plan.seg, plan.truncate_at, plan.entries, plan.builder, plan.offset,
                    plan.hard_state)

    # -- the save hot path, split for a writer thread without the GIL ----------

    def begin_save(self, hard_state: HardState | None, entries: list[Entry]) -> PendingSave | None:
        """The common save (an append to the active segment, into room already
        preallocated), in three steps so that the write + fdatasync can run on a
        thread that never takes the GIL (raft._fastpath.SyncWriter; node.py):
        ``begin_save`` checks and builds the batch on the caller's thread, the
        writer writes ``pending.bufs`` at ``pending.offset`` of ``pending.fd`` and
        fdatasyncs, then ``end_save`` brings memory in line (or fails the storage).

        Returns None when this save is not the common case (nothing to save, a new
        segment, room to preallocate, a snapshot marker, armed failpoints, no
        fsync): the caller then runs ``save()`` whole. Until ``end_save`` no other
        call may change the storage (the node's Ready loop runs one save at a time;
        checked)."""
        self._check_usable()
        if self._pending_save is not None:
            raise StorageError("begin_save while another save is in flight")   # before planning
        if self.durability != "fsync" or self._needs_marker or fileio.failpoints_enabled():
            return None
        if not self._check_save(hard_state, entries):
            return None
        plan = self._plan_batch(hard_state, entries, None, False)
        if plan.new_segment or self._room(plan.seg, plan.offset + len(plan.batch)):
            return None
        self._before_write()
        pending = PendingSave(self._fd, plan)
        self._pending_save = pending
        return pending

    def end_save(self, pending: PendingSave, error: OSError | None) -> None:
        """The writer finished ``pending``: ``error`` None means written in full and
        synced. An error makes the storage unusable, as in save()."""
        if pending is not self._pending_save:
            raise StorageError("end_save of a save that is not the one in flight")
        self._pending_save = None
        plan = pending.plan
        if error is not None:
            raise self._write_failed(plan.seg.path, error) from error
        plan.seg.size += len(plan.batch)
        self.syncs += 1
        fileio.note_fdatasync(pending.fd, plan.seg.size)
        self._commit_batch(plan)
        self.saves += 1

    def _reset_memory(self, index: int, term: int) -> None:
        """An installed snapshot at (index, term) replaced the whole log."""
        self._snap_index, self._snap_term = index, term
        self._last = index
        self._phys_next = index + 1
        self._cache, self._cache_start, self._cache_lo, self._cache_used = [], 0, index + 1, 0
        self._term_starts, self._term_values = [], []
        for seg in self._segments:
            seg.hi = seg.lo   # all dead; the new (active) segment starts empty at index + 1
        self._indexes.clear()

    def _room(self, seg: SegmentInfo, end: int) -> int:
        """How many zeros to write after data ending at ``end`` so that the segment stays
        preallocated PREALLOCATE_BYTES ahead (none while the data fits in what is, none
        past segment_bytes, none without fsync: nothing to gain)."""
        if self.durability != "fsync" or end <= seg.file_size:
            return 0
        return max(0, min(PREALLOCATE_BYTES, self.segment_bytes - end))

    def _write_with_room(self, fd: int, seg: SegmentInfo, bufs: list, offset: int) -> None:
        """Write ``bufs`` (a batch, after a segment header if new) at ``offset``, with the
        zeros _room asks for. A full disk fails the save only if the batch itself does
        not fit: without the zeros it is tried again."""
        end = offset + sum(len(b) for b in bufs)
        room = self._room(seg, end)
        try:
            _write_at(fd, [*bufs, _ZEROS[:room]] if room else bufs, offset)
        except OSError as e:
            if e.errno != errno.ENOSPC or not room:
                raise
            log.warning("raft.storage: %s: no space for %d bytes of preallocated room; "
                        "writing the batch alone", seg.path, room)
            # Part of the zeros may be on disk: _close_room must see them to cut them.
            seg.file_size = max(seg.file_size, os.fstat(fd).st_size)
            _write_at(fd, bufs, offset)
            room = 0
        seg.file_size = max(seg.file_size, end + room)

    def _close_room(self, seg: SegmentInfo) -> None:
        """Cut the outgoing segment's preallocated room before the next segment is made:
        recovery takes zeros at the end of the *last* segment as room, and at the end of
        any other as lost data. Synced, so a new segment never follows an uncut one."""
        if seg.file_size > seg.size:
            fileio.ftruncate(self._fd, seg.size)
            if self.durability == "fsync":
                fileio.fsync(self._fd)
                self.syncs += 1
            seg.file_size = seg.size

    def _create_segment(self, seq: int, first: int, batch: bytearray) -> SegmentInfo:
        """Write header + first batch (+ preallocated zeros) to a temp file, sync it,
        rename it into place and sync the directory: the segment appears whole or not
        at all."""
        path = os.path.join(self.path, segment_name(seq, first))
        tmp = path + ".tmp"
        seg = SegmentInfo(path, seq, first, SEG_HEADER_SIZE, lo=first, hi=first)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fileio.failpoint("wal.write")
            self._write_with_room(fd, seg, [encode_segment_header(seq, first), batch], 0)
            seg.size += len(batch)
            if self.durability == "fsync":
                fileio.failpoint("wal.sync")
                fileio.fdatasync(fd, seg.size)
                self.syncs += 1
            fileio.rename(tmp, path)
            self._sync_dir()
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._segments.append(seg)
        return seg

    def _sync_dir(self) -> None:
        if self.durability == "fsync":
            fileio.fsync_dir(self.path)
            self.syncs += 1

    def _apply(self, seg: SegmentInfo, truncate_at: int | None, entries: list[Entry],
               b: BatchBuilder, batch_offset: int, hard_state: HardState | None) -> None:
        """Bring the in-memory state in line with the batch just made durable."""
        if truncate_at is not None:
            self._truncate_memory(truncate_at)
        if entries:
            first, last = entries[0].index, entries[-1].index
            self._cache_append(entries)
            self._terms_append(entries)
            if not seg.live:
                seg.lo = first
            seg.hi = last + 1
            self._index_append(seg, first, b, batch_offset)
            self._last = last
            self._phys_next = last + 1
        if hard_state is not None:
            self._hard_state = hard_state

    def _truncate_memory(self, k: int) -> None:
        self._phys_next = k
        if k > self._last:
            return  # the snapshot was ahead of the log: nothing in memory to drop
        self._last = k - 1
        if k <= self._cache_lo:
            self._cache, self._cache_start, self._cache_lo, self._cache_used = [], 0, k, 0
        else:
            cut = self._cache_start + k - self._cache_lo
            self._cache_used -= sum(len(e.data) + ENTRY_MEMORY_OVERHEAD for e in self._cache[cut:])
            del self._cache[cut:]
        while self._term_starts and self._term_starts[-1] >= k:
            self._term_starts.pop()
            self._term_values.pop()
        for seg in self._segments:
            if seg.lo >= k:
                seg.hi = seg.lo
            elif seg.hi > k:
                seg.hi = k

    def _cache_append(self, entries: list[Entry]) -> None:
        if len(self._cache) == self._cache_start:
            self._cache, self._cache_start, self._cache_lo = [], 0, entries[0].index
        self._cache.extend(entries)
        self._cache_used += data_bytes(entries) + ENTRY_MEMORY_OVERHEAD * len(entries)
        self._evict()

    def _evict(self) -> None:
        cache = self._cache
        i = self._cache_start
        used = self._cache_used
        while used > self.cache_bytes and i < len(cache):
            used -= len(cache[i].data) + ENTRY_MEMORY_OVERHEAD
            i += 1
        self._cache_lo += i - self._cache_start
        self._cache_used = used
        self._cache_start = i
        self._reclaim_front()

    def _reclaim_front(self) -> None:
        """Drop the dead front of the cache list once it outnumbers the live part:
        amortized O(1) per entry, and the dropped entries' data is really freed. (With
        a fixed "more than 1024 dead" condition, a few hundred large entries stayed
        referenced forever: 400 x 1 MB SETs kept ~400 MB per node, issue 15 item 5.)"""
        i = self._cache_start
        if i * 2 > len(self._cache):
            del self._cache[:i]
            self._cache_start = 0

    def _cache_drop_front(self, new_lo: int) -> None:
        stop = min(self._cache_start + new_lo - self._cache_lo, len(self._cache))
        for e in self._cache[self._cache_start:stop]:
            self._cache_used -= len(e.data) + ENTRY_MEMORY_OVERHEAD
        self._cache_lo += stop - self._cache_start
        self._cache_start = stop
        if self._cache_start == len(self._cache):
            self._cache, self._cache_start, self._cache_lo = [], 0, new_lo
        else:
            self._reclaim_front()

    def _terms_append(self, entries: list[Entry]) -> None:
        terms = self._term_values
        t = terms[-1] if terms else -1
        for e in entries:
            if e.term != t:
                t = e.term
                self._term_starts.append(e.index)
                terms.append(t)

    # -- reading old entries back -----------------------------------------------

    def _index_append(self, seg: SegmentInfo, first: int, b: BatchBuilder, batch_offset: int) -> None:
        """Keep an already built offset index of ``seg`` up to date with a new batch."""
        idx = self._indexes.get(seg.seq)
        if idx is None:
            return
        base, offsets, ends = idx
        keep = first - base
        if not offsets or keep <= 0 or keep > len(offsets):
            keep, base = 0, first
        del offsets[keep:]
        del ends[keep:]
        offsets.extend(batch_offset + o for o in b.entry_offsets)
        ends.extend(batch_offset + e for e in b.entry_ends)
        self._indexes[seg.seq] = (base, offsets, ends)

    def _segment_index(self, seg: SegmentInfo) -> tuple[int, array, array]:
        idx = self._indexes.get(seg.seq)
        if idx is not None:
            self._indexes.move_to_end(seg.seq)
            return idx
        with open(seg.path, "rb") as f:
            buf = f.read(seg.size)
        offsets, ends, base = index_segment(buf, SEG_HEADER_SIZE, len(buf))
        idx = (base, offsets, ends)
        self._indexes[seg.seq] = idx
        active_seq = self._segments[-1].seq
        while len(self._indexes) > _INDEXED_SEGMENTS + 1:
            oldest = next(iter(self._indexes))
            if oldest == active_seq:  # the active segment's index stays
                self._indexes.move_to_end(oldest)
                continue
            del self._indexes[oldest]
        return idx

    def _read_disk(self, lo: int, hi: int) -> list[Entry]:
        out: list[Entry] = []
        for seg in self._segments:
            if seg.hi <= lo or seg.lo >= hi:
                continue
            out.extend(self._read_segment(seg, max(lo, seg.lo), min(hi, seg.hi)))
        if len(out) != hi - lo:  # would be a bookkeeping bug: say so rather than return a short list
            raise StorageError(f"internal error: read {len(out)} entries for [{lo}, {hi}) "
                               f"from {[(s.path, s.lo, s.hi) for s in self._segments]}")
        return out

    def _read_segment(self, seg: SegmentInfo, lo: int, hi: int) -> list[Entry]:
        base, offsets, ends = self._segment_index(seg)
        start, stop = offsets[lo - base], ends[hi - 1 - base]
        fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            buf = os.pread(fd, stop - start, start)
        finally:
            os.close(fd)
        mv = memoryview(buf)
        out = []
        for i in range(lo, hi):
            a, z = offsets[i - base] - start, ends[i - base] - start
            if z > len(buf) or checksum(mv[a:z]) != CRC_RESIDUE:
                raise StorageError(f"corrupt write-ahead log: {seg.path} at byte offset {a + start}: "
                                   f"record checksum mismatch reading entry {i}. {REPAIR_HINT}")
            length, kind, _, etype, index, term = RECORD_HEADER.unpack_from(buf, a)
            if kind != KIND_ENTRY or index != i:
                raise StorageError(f"internal error: {seg.path} at byte offset {a + start} holds "
                                   f"record kind {kind} index {index}, expected entry {i}")
            out.append(Entry(index, term, etype, buf[a + RECORD_HEADER_SIZE:z - 4]))
        return out

    # -- misc ------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"DiskStorage({self.path!r}) is closed")
        if self._failed is not None:
            raise StorageError(f"DiskStorage({self.path!r}) failed earlier ({self._failed}); "
                               f"reopen it to recover")

    def segments(self) -> list[SegmentInfo]:
        """The segment files, oldest first (for tests and tools)."""
        return list(self._segments)

    def __repr__(self) -> str:
        return (f"DiskStorage({self.path!r}, durability={self.durability!r}, "
                f"entries [{self.first_index}, {self._last}], {len(self._segments)} segments)")


__all__ = ["DiskStorage", "PendingSave", "Recovery", "SegmentInfo", "recover", "DURABILITY_MODES",
           "KIND_ENTRY", "KIND_HARD_STATE", "KIND_TRUNCATE"]
