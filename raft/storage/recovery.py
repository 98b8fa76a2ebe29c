"""WAL recovery: a pure read of a data directory (``recover``), no writes.

``DiskStorage`` (raft/storage/wal.py) opens a directory by recovering it, then repairs
what recovery reports it may repair (a torn tail, leftover temp files) and writes the
missing SNAPSHOT record; ``raft storage check/repair`` (raft/storage/check.py) reports
and cuts the rest. Recovery replays every segment's batches in order, verifies every
checksum, reconciles the newest snapshot file with the WAL's SNAPSHOT records (see
wal.py's docstring for the rule) and works out which entries are live.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Iterator

from raft._core import Entry, HardState
from raft.storage.base import StorageError
from raft.storage.segment import (
    BATCH_HEADER_SIZE,
    KIND_ENTRY,
    KIND_HARD_STATE,
    KIND_SNAPSHOT,
    KIND_TRUNCATE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEG_HEADER_SIZE,
    SNAPSHOT_RESET,
    Damage,
    MalformedRecord,
    batch_at,
    classify_damage,
    is_room,
    decode_hard_state,
    decode_segment_header,
    parse_segment_name,
)
from raft.storage.snapshot import SnapshotMeta, latest_snapshot_meta

__all__ = ["SegmentInfo", "Recovery", "recover"]

log = logging.getLogger("raft.storage")


@dataclass(eq=False)
class SegmentInfo:
    """One segment file as recovery found it (and as DiskStorage tracks it)."""

    path: str
    seq: int
    first: int           # first index per its header: every entry in it is >= first
    size: int            # bytes of intact content = where the next batch goes
    file_size: int = 0   # bytes on disk (> size: a damaged tail, or preallocated zeros)
    batches: int = 0
    lo: int = 0          # live entries are [lo, hi): later TRUNCATEs or the snapshot
    hi: int = 0          # may have killed the rest

    @property
    def live(self) -> bool:
        return self.hi > self.lo


@dataclass
class Recovery:
    """What a directory holds, as found by ``recover`` (which changes nothing)."""

    path: str
    segments: list[SegmentInfo] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)  # live entries after the snapshot
    next_index: int = 0       # where the on-disk log continues (0: no entry record yet)
    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None   # the newest snapshot file's header
    # (index, term) of the last SNAPSHOT record in the WAL: where the WAL says the log starts
    wal_snapshot: tuple[int, int] | None = None
    # The newest snapshot file is ahead of the WAL's SNAPSHOT records and the WAL does
    # not hold its last entry: an install interrupted between writing the snapshot file
    # and its WAL record. The WAL's entries were discarded (Figure 13 step 6);
    # opening completes the install. discarded = (first, last) index of what was dropped.
    install_pending: bool = False
    discarded: tuple[int, int] | None = None
    # The newest snapshot file is ahead of the WAL's SNAPSHOT records and the WAL holds
    # its last entry: a local snapshot saved but not compacted yet (or an install whose
    # log matched). The log continues after it; opening writes the compaction record
    # before any segment it covers may be deleted.
    compact_pending: bool = False
    damage: Damage | None = None   # first unreadable spot; .torn says if it is a torn tail
    unscanned: list[SegmentInfo] = field(default_factory=list)  # segments after the damage
    problem: str | None = None     # an inconsistency that is not at one byte offset
    temp_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Loadable: at most a torn tail, which opening cuts away automatically."""
        return self.problem is None and (self.damage is None or self.damage.torn)


class _Replay:
    """Applies batches in log order; the state recovery builds."""

    __slots__ = ("entries", "next", "hard_state", "runs", "snap")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.next = 0  # index the next ENTRY record must have; 0 = none seen yet (any)
        self.hard_state = HardState()
        self.snap: tuple[int, int] | None = None  # the last SNAPSHOT record's (index, term)
        # (first index, segment) for each stretch of live entries: their segments
        self.runs: list[tuple[int, SegmentInfo]] = []

    def truncate(self, k: int, nxt: int) -> int:
        """TRUNCATE k: drop entries >= k; k past the end drops all (a snapshot covers the gap)."""
        entries = self.entries
        base = nxt - len(entries)
        if nxt == 0 or k > nxt or k <= base:
            entries.clear()
            self.runs.clear()
        else:
            del entries[k - base:]
            while self.runs and self.runs[-1][0] >= k:
                self.runs.pop()
        return k

    def snapshot(self, index: int, term: int, flags: int, nxt: int, at: int) -> int:
        """SNAPSHOT (index, term): the log starts after it. An installed snapshot
        (SNAPSHOT_RESET) drops every entry; a compaction drops entries <= index.
        Returns the index the next entry must have (0: any)."""
        self.snap = (index, term)
        entries = self.entries
        if flags & SNAPSHOT_RESET:
            entries.clear()
            self.runs.clear()
            return index + 1
        if nxt == 0:
            # Nothing replayed yet (the segments before were compacted away): the
            # first entry record fixes where the log continues.
            return 0
        if index >= nxt:
            raise MalformedRecord(at, f"compaction record at index {index} is beyond the "
                                      f"end of the log ({nxt - 1})")
        base = nxt - len(entries)
        if index >= base:
            if entries[index - base].term != term:
                raise MalformedRecord(at, f"compaction record says entry {index} has term {term}, "
                                          f"the log has term {entries[index - base].term}")
            del entries[:index + 1 - base]
        return nxt


def _replay_segment(st: _Replay, seg: SegmentInfo, buf: bytes, n: int, last: bool) -> Damage | None:
    """Replay the batches of one segment (header already checked) into ``st``.

    This is recovery's hot loop: one checksum call per batch, then per record
    one struct unpack, one bytes slice and one Entry. Returns the first damage
    found (unclassified), or None if the whole segment is intact.
    """
    mv = memoryview(buf)
    entries = st.entries
    append = entries.append
    unpack = RECORD_HEADER.unpack_from
    # Locals, not module globals, in the per-record loop: each global costs a dict lookup.
    make_entry = Entry
    head = RECORD_HEADER_SIZE
    k_entry, k_hard_state, k_truncate = KIND_ENTRY, KIND_HARD_STATE, KIND_TRUNCATE
    k_snapshot = KIND_SNAPSHOT
    nxt = st.next
    off = SEG_HEADER_SIZE
    try:
        while off < n:
            end, n_records, reason, kind = batch_at(buf, mv, off, n)
            if reason is not None:
                if last and is_room(buf, off, n):
                    # The active segment's preallocated room (DiskStorage._room). Only
                    # there: a segment is cut to its data before the next one is made,
                    # so zeros ending an older one are lost data, not room.
                    return None
                return Damage(seg.path, end, off, reason, kind)
            p = off + BATCH_HEADER_SIZE
            appended_from = nxt
            # The batch's checksums are right, so its records are as we wrote them:
            # no per-record bounds checks; a record that does not end exactly at
            # the batch's end (checked after the loop) means a malformed batch.
            head_snapshot = False
            for i in range(n_records):
                length, kind, flags, etype, index, term = unpack(buf, p)
                q = p + head + length
                if kind == k_entry:
                    if index != nxt:
                        if nxt != 0:
                            hint = (f" (entries {nxt}..{index - 1} are missing: was a segment file "
                                    f"deleted?)" if index > nxt else "")
                            raise MalformedRecord(
                                p, f"entry {index} follows entry {nxt - 1} with no truncation record{hint}")
                        nxt = appended_from = index
                    append(make_entry(index, term, etype, buf[p + head:q]))
                    nxt += 1
                elif kind == k_hard_state:
                    st.hard_state = decode_hard_state(buf, p + head, length, p)
                elif kind == k_truncate:
                    if i != 0 and not (i == 1 and head_snapshot):
                        raise MalformedRecord(p, "truncation record not at the head of its batch")
                    nxt = appended_from = st.truncate(index, nxt)
                elif kind == k_snapshot:
                    if i != 0:
                        raise MalformedRecord(p, "snapshot record not at the head of its batch")
                    if length or index == 0 or term == 0:
                        raise MalformedRecord(p, "snapshot record with a payload or index/term 0")
                    head_snapshot = True
                    nxt = appended_from = st.snapshot(index, term, flags, nxt, p)
                else:
                    raise MalformedRecord(p, f"unknown record kind {kind}")
                p = q + 4
            if p != end:
                raise MalformedRecord(p, f"{end - p} bytes after the last record of the batch")
            if nxt > appended_from and (not st.runs or st.runs[-1][1] is not seg):
                st.runs.append((appended_from, seg))
            seg.batches += 1
            off = end
        return None
    except MalformedRecord as m:
        # Checksums were right, content impossible: a bug or tampering, never a torn write.
        return Damage(seg.path, m.offset, off, f"malformed record: {m.reason}", "malformed")
    except struct.error:  # a record header ran off the end of the file
        return Damage(seg.path, off, off, "malformed batch: its records run past the end of the file",
                      "malformed")
    finally:
        st.next = nxt
        seg.size = off


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Recovery creates ~1 object per entry and frees none; the cyclic GC would
    rescan the growing heap over and over (measured: 2.3x slower for 1M entries)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _list_dir(path: str, rec: Recovery) -> list[SegmentInfo]:
    segments: list[SegmentInfo] = []
    for name in os.listdir(path):
        parsed = parse_segment_name(name)
        if parsed:
            segments.append(SegmentInfo(os.path.join(path, name), parsed[0], parsed[1], 0))
        elif name.endswith(".tmp"):
            rec.temp_files.append(os.path.join(path, name))
    segments.sort(key=lambda s: s.seq)
    for a, b in zip(segments, segments[1:]):
        if a.seq == b.seq:
            rec.problem = f"two segments with sequence number {a.seq}: {a.path} and {b.path}"
    return segments


def _read_segment_header(seg: SegmentInfo, buf: bytes, last: bool) -> Damage | None:
    try:
        seq, first = decode_segment_header(buf)
    except ValueError as e:
        # Segments are made whole (temp file, fsync, rename), so a bad header is
        # corruption unless the file is empty or zero-filled (possible only with
        # durability="none" and a power loss): then it held nothing durable.
        torn = last and buf.count(0) == len(buf)
        return Damage(seg.path, 0, 0, f"bad segment header: {e}", "segment", torn=torn)
    if (seq, first) != (seg.seq, seg.first):
        return Damage(seg.path, 0, 0, f"segment header says seq {seq} first index {first}, "
                                      f"its name says seq {seg.seq} first index {seg.first}",
                      "segment")
    return None


def recover(path: str | os.PathLike) -> Recovery:
    """Read a storage directory without changing it: the state it holds and the
    first damage in it (see ``Recovery``). ``DiskStorage`` acts on the result;
    ``raft.storage.check`` reports it."""
    path = os.fspath(path)
    rec = Recovery(path)
    try:
        rec.snapshot = latest_snapshot_meta(path)
    except StorageError as e:  # the newest snapshot's header is damaged: never fall back
        rec.problem = str(e)
    segments = _list_dir(path, rec)
    st = _Replay()
    with _gc_paused():
        for i, seg in enumerate(segments):
            last = i == len(segments) - 1
            with open(seg.path, "rb") as f:
                buf = f.read()
            seg.file_size = n = len(buf)
            damage = _read_segment_header(seg, buf, last) or _replay_segment(st, seg, buf, n, last)
            rec.segments.append(seg)
            if damage is not None:
                if damage.kind != "segment":
                    classify_damage(buf, memoryview(buf), damage, n, last)
                rec.damage = damage
                rec.unscanned = segments[i + 1:]
                break  # nothing after damage can be trusted to be in order
    rec.hard_state = st.hard_state
    rec.next_index = st.next
    rec.wal_snapshot = st.snap
    _live_ranges(rec, st)
    return rec


def _live_ranges(rec: Recovery, st: _Replay) -> None:
    """Set each segment's live range, and reconcile the log with the snapshots.

    The newest snapshot file is at least as new as the WAL's last SNAPSHOT record
    (the file is made durable first). If it is newer, the WAL's entries after it are
    kept only if the WAL holds the snapshot's last entry (Raft paper, Figure 13 step 6):
    then the file is a local snapshot not yet compacted (or an install whose log
    already matched), and the log continues after it. Otherwise the file is an
    install from a leader that crashed before its WAL record: every WAL entry is
    discarded (they may conflict with the snapshot), never a mix of both.
    """
    runs = st.runs
    for j, (start, seg) in enumerate(runs):
        seg.lo, seg.hi = start, runs[j + 1][0] if j + 1 < len(runs) else st.next
    entries = st.entries
    snap = rec.snapshot
    wal = st.snap
    base = st.next - len(entries)
    if rec.problem is not None:
        rec.entries = entries
        return
    if wal is not None:
        if snap is None:
            rec.problem = (f"the write-ahead log says the log starts after a snapshot at index "
                           f"{wal[0]} (term {wal[1]}), but there is no snapshot file")
        elif snap.index < wal[0]:
            rec.problem = (f"the newest snapshot file ({snap.path}) ends at index {snap.index}, "
                           f"but the write-ahead log says the log starts after a snapshot at "
                           f"index {wal[0]}: that snapshot file is missing")
        elif snap.index == wal[0] and snap.term != wal[1]:
            rec.problem = (f"the newest snapshot file ({snap.path}) has term {snap.term}, the "
                           f"write-ahead log's snapshot record at index {wal[0]} has term {wal[1]}")
        if rec.problem is not None:
            rec.entries = entries
            return
    if snap is not None:
        holds = wal == (snap.index, snap.term) or (
            entries and base <= snap.index < st.next and entries[snap.index - base].term == snap.term)
        if entries and base > snap.index + 1:
            rec.problem = (f"the log starts at index {base} but the newest snapshot "
                           f"({snap.path}) ends at {snap.index}: entries {snap.index + 1}.."
                           f"{base - 1} are missing")
        elif holds:
            if entries and base <= snap.index:
                del entries[:min(len(entries), snap.index + 1 - base)]
            rec.compact_pending = wal != (snap.index, snap.term)
        else:
            rec.install_pending = True
            if entries:
                rec.discarded = (base, st.next - 1)
            entries = []
        for seg in rec.segments:
            seg.lo = max(seg.lo, snap.index + 1) if holds else seg.hi
            seg.hi = max(seg.hi, seg.lo)
    elif entries and base != 1:
        rec.problem = (f"the log starts at index {base}, not 1, and there "
                       f"is no snapshot covering the entries before it")
    rec.entries = entries
