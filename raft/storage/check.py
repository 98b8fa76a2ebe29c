"""Offline tools for a storage directory: ``check`` (read-only) and ``repair``.

``DiskStorage`` cuts a torn tail by itself but refuses to open a log damaged
anywhere else, because cutting there may drop saves that had returned (entries
acknowledged to a leader, a vote). ``repair`` is the operator's explicit
decision to do it anyway: it cuts the log at the first damaged batch, moves
every byte after that point aside into ``*.corrupt`` files (never deletes them)
and reports what they held, so the operator can judge what was lost.

``storage_main(argv)`` is the ``raft storage check|repair DIR`` command line.
"""
from __future__ import annotations

import argparse
import fcntl
import os
from dataclasses import dataclass, field

from raft._core import HardState
from raft.storage.base import StorageError
from raft.storage.segment import (
    BATCH_HEADER_SIZE,
    KIND_ENTRY,
    KIND_HARD_STATE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEG_HEADER_SIZE,
    Damage,
    HARD_STATE_PAYLOAD,
    batch_at,
    find_valid_batch,
    is_room,
)
from raft.storage.snapshot import read_snapshot
from raft.storage.recovery import Recovery, SegmentInfo, recover


# --- what a damaged region held ------------------------------------------------

@dataclass
class RegionSummary:
    """What could still be decoded from bytes that are being given up on."""

    files: list[str] = field(default_factory=list)
    bytes: int = 0
    intact_batches: int = 0
    entries: int = 0
    first_entry: int | None = None
    last_entry: int | None = None
    hard_states: list[HardState] = field(default_factory=list)
    unreadable_bytes: int = 0

    def add(self, other: RegionSummary) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.intact_batches += other.intact_batches
        self.entries += other.entries
        for i in (other.first_entry, other.last_entry):
            if i is not None:
                self.first_entry = i if self.first_entry is None else min(self.first_entry, i)
                self.last_entry = i if self.last_entry is None else max(self.last_entry, i)
        self.hard_states += other.hard_states
        self.unreadable_bytes += other.unreadable_bytes

    def describe(self) -> str:
        if not self.bytes:
            return "nothing"
        parts = [f"{self.bytes} bytes in {len(self.files)} file(s)"]
        if self.entries:
            parts.append(f"{self.entries} intact entry records with indexes "
                         f"{self.first_entry}..{self.last_entry}")
        if self.hard_states:
            hs = self.hard_states[-1]
            parts.append(f"{len(self.hard_states)} hard state record(s), the last "
                         f"term={hs.term} vote={hs.vote} commit={hs.commit}")
        if self.unreadable_bytes:
            parts.append(f"{self.unreadable_bytes} bytes that could not be decoded at all")
        return "; ".join(parts)


def summarize_region(buf: bytes, start: int, path: str) -> RegionSummary:
    """Decode what is still decodable in ``buf[start:]``: intact batches found by
    resynchronising on the batch magic, and the bytes between them."""
    n = len(buf)
    mv = memoryview(buf)
    out = RegionSummary(files=[path], bytes=n - start)
    pos: int | None = start
    while pos is not None and pos < n:
        end, n_records, reason, _ = batch_at(buf, mv, pos, n)
        if reason is not None:
            if is_room(buf, pos, n):
                out.bytes -= n - pos      # preallocated room: nothing was lost there
                break
            nxt = find_valid_batch(buf, mv, pos, n)
            out.unreadable_bytes += (nxt if nxt is not None else n) - pos
            pos = nxt
            continue
        out.intact_batches += 1
        _summarize_batch(buf, pos + BATCH_HEADER_SIZE, n_records, out)
        pos = end
    return out


def _summarize_batch(buf: bytes, p: int, n_records: int, out: RegionSummary) -> None:
    for _ in range(n_records):
        length, kind, _, _, index, _ = RECORD_HEADER.unpack_from(buf, p)
        if kind == KIND_ENTRY:
            out.entries += 1
            out.first_entry = index if out.first_entry is None else min(out.first_entry, index)
            out.last_entry = index if out.last_entry is None else max(out.last_entry, index)
        elif kind == KIND_HARD_STATE and length == HARD_STATE_PAYLOAD.size:
            out.hard_states.append(HardState(*HARD_STATE_PAYLOAD.unpack_from(buf, p + RECORD_HEADER_SIZE)))
        p += RECORD_HEADER_SIZE + length + 4


def _region_after(rec: Recovery) -> RegionSummary:
    """Everything a repair would move aside: the damaged batch onwards, and all
    later segments."""
    out = RegionSummary()
    d = rec.damage
    if d is not None:
        with open(d.path, "rb") as f:
            buf = f.read()
        out.add(summarize_region(buf, d.batch_offset or 0, d.path))
    for seg in rec.unscanned:
        with open(seg.path, "rb") as f:
            buf = f.read()
        out.add(summarize_region(buf, SEG_HEADER_SIZE if len(buf) >= SEG_HEADER_SIZE else 0, seg.path))
        out.bytes += min(len(buf), SEG_HEADER_SIZE)
    return out


# --- check -------------------------------------------------------------------

@dataclass
class CheckReport:
    path: str
    ok: bool            # DiskStorage will open it (cutting a torn tail at most)
    clean: bool         # nothing at all to fix
    segments: list[SegmentInfo]
    unscanned: list[SegmentInfo]
    first_index: int
    last_index: int
    hard_state: HardState
    snapshot: tuple[int, int] | None
    damage: Damage | None
    problem: str | None
    at_risk: RegionSummary  # what a repair would move aside
    wal_snapshot: tuple[int, int] | None = None
    install_pending: bool = False
    discarded: tuple[int, int] | None = None

    def __str__(self) -> str:
        lines = [f"storage directory {self.path}"]
        for s in self.segments:
            live = f"entries {s.lo}..{s.hi - 1}" if s.live else "no live entries"
            damaged = self.damage is not None and self.damage.path == s.path
            room = (f" ({s.file_size - s.size} of them preallocated zeros)"
                    if s.file_size > s.size and not damaged else "")
            lines.append(f"  {os.path.basename(s.path)}: {s.file_size} bytes{room}, {s.batches} "
                         f"intact batches, {live}")
        for s in self.unscanned:
            lines.append(f"  {os.path.basename(s.path)}: not read (follows the damage)")
        if self.snapshot:
            lines.append(f"  snapshot: index {self.snapshot[0]} term {self.snapshot[1]}")
        if self.wal_snapshot:
            lines.append(f"  write-ahead log: the log starts after index {self.wal_snapshot[0]} "
                         f"term {self.wal_snapshot[1]} (its last snapshot record)")
        if self.install_pending:
            what = (f"discards entries {self.discarded[0]}..{self.discarded[1]} of the write-ahead log"
                    if self.discarded else "the write-ahead log holds no entries")
            lines.append(f"  INTERRUPTED INSTALL: the newest snapshot is ahead of the write-ahead log, "
                         f"which does not hold its last entry; opening completes the install and "
                         f"{what} (Raft Figure 13 step 6).")
        hs = self.hard_state
        lines.append(f"  log: entries {self.first_index}..{self.last_index}; hard state "
                     f"term={hs.term} vote={hs.vote} commit={hs.commit}")
        if self.damage is not None and self.damage.torn:
            lines.append(f"OK with a torn tail: {self.damage.describe()}. Opening the storage "
                         f"cuts it (it is the save() in flight at a crash, never acknowledged); "
                         f"it holds {self.at_risk.describe()}.")
        elif self.damage is not None:
            lines.append(f"DAMAGED: {self.damage.describe()}.")
            lines.append(f"  `raft storage repair {self.path}` would cut the log there and move "
                         f"aside {self.at_risk.describe()}.")
        if self.problem:
            lines.append(f"INCONSISTENT: {self.problem}.")
        if self.clean:
            lines.append("OK: every segment is intact.")
        return "\n".join(lines)


def check(path: str | os.PathLike) -> CheckReport:
    """Read a storage directory and report on it; changes nothing."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise StorageError(f"{path} is not a directory")
    rec = recover(path)
    if rec.snapshot is not None and rec.problem is None:
        try:  # the whole file, checksums included: opening reads it too
            read_snapshot(rec.snapshot.path)
        except StorageError as e:
            rec.problem = str(e)
    snap = (rec.snapshot.index, rec.snapshot.term) if rec.snapshot else None
    base = rec.entries[0].index if rec.entries else (rec.snapshot.index + 1 if rec.snapshot else 1)
    last = rec.entries[-1].index if rec.entries else base - 1
    return CheckReport(
        path=path, ok=rec.ok, clean=rec.ok and rec.damage is None, segments=rec.segments,
        unscanned=rec.unscanned, first_index=base, last_index=last, hard_state=rec.hard_state,
        snapshot=snap, damage=rec.damage, problem=rec.problem, at_risk=_region_after(rec),
        wal_snapshot=rec.wal_snapshot, install_pending=rec.install_pending, discarded=rec.discarded)


# --- repair ------------------------------------------------------------------

@dataclass
class RepairReport:
    path: str
    repaired: bool         # something was changed
    ok: bool               # the directory now opens
    cut: Damage | None     # where the log was cut
    moved: list[tuple[str, str]]  # (from, to) of what was moved aside
    lost: RegionSummary
    hard_state_before: HardState | None  # newest hard state in the moved-aside data
    hard_state_after: HardState
    last_index_after: int
    problem: str | None = None
    dry_run: bool = False

    def __str__(self) -> str:
        if not self.repaired and self.cut is None:
            if self.problem:
                return (f"{self.path}: not repairable automatically: {self.problem}.")
            return f"{self.path}: nothing to repair."
        verb = "would cut" if self.dry_run else "cut"
        lines = [f"{self.path}: {verb} the log at {self.cut.describe() if self.cut else '?'}."]
        for a, b in self.moved:
            lines.append(f"  {'would move' if self.dry_run else 'moved'} {a} -> {b}")
        lines.append(f"  lost: {self.lost.describe()}.")
        hs = self.hard_state_after
        lines.append(f"  the log now ends at index {self.last_index_after}; hard state "
                     f"term={hs.term} vote={hs.vote} commit={hs.commit}.")
        b = self.hard_state_before
        if b is not None and (b.term, b.vote) != (hs.term, hs.vote):
            lines.append(f"  WARNING: the hard state went back from term={b.term} vote={b.vote}: "
                         f"this server may vote twice in a term it already voted in.")
        if self.lost.entries or self.lost.hard_states:
            lines.append(
                "  WARNING: saves in the lost data may have been acknowledged (entries to a leader, "
                "votes to candidates). Raft stays safe only if those promises are not needed: the "
                "safest course is to bring this server back as a new member (remove it from the "
                "configuration, clear or re-seed it from a snapshot, add it again) rather than "
                "restart it as is.")
        if self.problem:
            lines.append(f"  still inconsistent: {self.problem}.")
        return "\n".join(lines)


def _free_name(path: str) -> str:
    cand = path + ".corrupt"
    k = 1
    while os.path.exists(cand):
        cand = f"{path}.corrupt.{k}"
        k += 1
    return cand


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair(path: str | os.PathLike, *, dry_run: bool = False) -> RepairReport:
    """Cut the log at its first damaged batch so that it opens again.

    The damaged segment's bytes from that batch on are copied to
    ``<segment>.corrupt`` (fsynced) before the segment is truncated; later
    segments are renamed to ``<segment>.corrupt`` whole. Nothing is deleted.
    """
    path = os.fspath(path)
    lock_fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"{path} is in use (a DiskStorage holds its LOCK); stop it first") from None
        return _repair_locked(path, dry_run)
    finally:
        os.close(lock_fd)


def _repair_locked(path: str, dry_run: bool) -> RepairReport:
    rec = recover(path)
    d = rec.damage
    if d is None:
        return RepairReport(path, False, rec.ok, None, [], RegionSummary(), None, rec.hard_state,
                            _last(rec), problem=rec.problem, dry_run=dry_run)
    lost = _region_after(rec)
    moved: list[tuple[str, str]] = []
    if d.batch_offset == 0:  # the segment header itself is bad: set the whole file aside
        moved.append((d.path, _free_name(d.path)))
    else:
        moved.append((f"{d.path} bytes {d.batch_offset}..", _free_name(d.path)))
    moved += [(s.path, _free_name(s.path)) for s in rec.unscanned]
    if not dry_run:
        _apply_repair(path, d, rec.unscanned, moved)
        after = recover(path)
    else:
        after = rec
    return RepairReport(
        path, not dry_run, after.ok and (dry_run or after.damage is None), d, moved, lost,
        lost.hard_states[-1] if lost.hard_states else None,
        after.hard_state if not dry_run else rec.hard_state, _last(after),
        problem=after.problem, dry_run=dry_run)


def _apply_repair(path: str, d: Damage, later: list[SegmentInfo], moved: list[tuple[str, str]]) -> None:
    """Ordered so that a crash at any point leaves the directory either repaired
    or damaged at the same spot (and ``repair`` can simply be run again):
    copy the damaged tail aside, set later segments aside newest first, and
    only then cut the damaged segment."""
    if d.batch_offset > 0:
        with open(d.path, "rb") as f:
            f.seek(d.batch_offset)
            tail = f.read()
        with open(moved[0][1], "wb") as f:  # the copy is durable before anything is cut
            f.write(tail)
            f.flush()
            os.fsync(f.fileno())
    for seg, (_, to) in reversed(list(zip(later, moved[1:]))):
        os.rename(seg.path, to)
        _fsync_path(path, directory=True)
    if d.batch_offset == 0:
        os.rename(d.path, moved[0][1])
    else:
        fd = os.open(d.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, d.batch_offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_path(path, directory=True)


def _last(rec: Recovery) -> int:
    if rec.entries:
        return rec.entries[-1].index
    return rec.snapshot.index if rec.snapshot else 0


# --- command line --------------------------------------------------------------

def storage_main(argv: list[str]) -> int:
    """``raft storage check DIR`` / ``raft storage repair [--dry-run] DIR``.

    Exit status: 0 = the directory opens (after repair, for repair), 1 = it is
    damaged (check) or still not loadable (repair), 2 = usage or I/O error.
    """
    parser = argparse.ArgumentParser(prog="raft storage", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="verify every checksum; change nothing")
    p_check.add_argument("dir")
    p_repair = sub.add_parser("repair", help="cut the log at the first damage, moving the rest aside")
    p_repair.add_argument("dir")
    p_repair.add_argument("--dry-run", action="store_true", help="say what would be done")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on errors; report a status instead
        return int(e.code or 0) if isinstance(e.code, int) else 2
    try:
        if args.command == "check":
            report = check(args.dir)
            print(report)
            return 0 if report.ok else 1
        rep = repair(args.dir, dry_run=args.dry_run)
        print(rep)
        return 0 if rep.ok else 1
    except (StorageError, OSError) as e:
        print(f"raft storage {args.command}: {e}")
        return 2


if __name__ == "__main__":  # python -m raft.storage.check check DIR
    import sys

    sys.exit(storage_main(sys.argv[1:]))
