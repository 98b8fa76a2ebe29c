"""The write-ahead log's on-disk format: segment files, batches, records.

Everything here is pure (bytes in, bytes or parsed values out) so that
``DiskStorage`` (raft/storage/wal.py), ``check``/``repair`` (raft/storage/check.py)
and the tests share one definition of the format. docs/storage.md has the
diagrams; the short version, all integers little-endian:

    segment  = segment header, then batches
    segment header (36 bytes) = magic b"RAFTWAL\\0" | version u16 | checksum u8 |
        reserved u8 | reserved u32 | seq u64 | first_index u64 | crc u32
    batch    = batch header, then ``n_records`` records (one ``save()`` = one batch)
    batch header (16 bytes)   = magic b"RFTB" | body_len u32 | n_records u32 | crc u32
    record   = len u32 | kind u8 | flags u8 | entry_type u16 | index u64 | term u64 |
        payload (len bytes) | crc u32

Record kinds: ENTRY, HARD_STATE, TRUNCATE, SNAPSHOT (see the KIND_* constants).
A batch is [SNAPSHOT] [TRUNCATE] [ENTRY ...] [HARD_STATE], every part optional.

Checksums are CRC-32C, each one *trailing* the bytes it covers and seeded with
``CRC_SEED``. Seeding with the CRC residue constant makes a run of checksummed
pieces self-verifying as a whole: ``crc32c(piece1 + piece2 + ..., CRC_SEED) ==
CRC_RESIDUE`` iff (with CRC-32 strength) every piece's own checksum is right. So
recovery checks a whole batch with one C call, and only falls back to per-record
checks to say *where* a damaged batch is damaged.

A batch is the unit of atomicity: recovery applies a batch only if all of it is
intact, so a save() torn by a crash is either wholly there or wholly absent
(a hard state is never recovered without the entries it was saved with).
"""
from __future__ import annotations

import logging
import re
import struct
from array import array
from dataclasses import dataclass
from typing import Callable

from raft.errors import RaftError
from raft._core import Entry, HardState

log = logging.getLogger("raft.storage")

# --- checksum -------------------------------------------------------------------

try:  # the C implementation (SSE4.2 / ARMv8 CRC instructions): ~GB/s
    from crc32c import crc32c as _crc32c_impl

    CRC32C_NATIVE = True
except ImportError:  # pragma: no cover - exercised only where the package is missing
    CRC32C_NATIVE = False
    _TABLE: list[int] = []
    for _i in range(256):
        _c = _i
        for _ in range(8):
            _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def _crc32c_impl(data, value: int = 0) -> int:  # type: ignore[misc]
        """Pure-Python CRC-32C (Castagnoli), same convention as the crc32c package.
        Correct but ~100x slower: install ``crc32c`` for real workloads."""
        crc = value ^ 0xFFFFFFFF
        table = _TABLE
        for b in bytes(data):
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF

    log.warning("raft.storage: the 'crc32c' package is not installed; using a slow "
                "pure-Python CRC-32C (pip install crc32c)")

#: crc32c(m + le32(crc32c(m, s)), s) for every message m and seed s.
CRC_RESIDUE = 0x48674BC7
#: Every checksum in the format is seeded with the residue (see the module docstring).
CRC_SEED = CRC_RESIDUE

crc32c: Callable[..., int] = _crc32c_impl

try:  # the batch's ENTRY records in C (raft/_fastpath.pyx); entries() falls back to Python
    from raft._fastpath import wal_entry_records as _wal_entry_records
except ImportError:  # pragma: no cover - a source tree without compiled extensions
    _wal_entry_records = None


def checksum(data, seed: int = CRC_SEED) -> int:
    """The format's checksum of ``data`` (bytes-like)."""
    return crc32c(data, seed)


# --- layout ---------------------------------------------------------------------

SEGMENT_MAGIC = b"RAFTWAL\0"
FORMAT_VERSION = 1
CHECKSUM_CRC32C = 1  # the only algorithm so far; the field exists so we can add one

SEG_HEADER = struct.Struct("<8sHBBIQQ")  # magic, version, checksum, 0, 0, seq, first_index
SEG_HEADER_SIZE = SEG_HEADER.size + 4    # + trailing crc
BATCH_MAGIC = b"RFTB"
BATCH_HEADER = struct.Struct("<4sII")    # magic, body_len, n_records
BATCH_HEADER_SIZE = BATCH_HEADER.size + 4
RECORD_HEADER = struct.Struct("<IBBHQQ")  # payload len, kind, flags, entry type, index, term
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 24; the record adds a 4-byte crc after the payload
RECORD_OVERHEAD = RECORD_HEADER_SIZE + 4
CRC = struct.Struct("<I")
U32 = CRC
HARD_STATE_PAYLOAD = struct.Struct("<QQQ")  # term, vote, commit

# Record kinds. Values are part of the format: never reuse one.
KIND_ENTRY = 1       # a log entry: index, term, entry_type, payload = data
KIND_HARD_STATE = 2  # payload = term, vote, commit; header index/term are 0
KIND_TRUNCATE = 3    # "the log continues at `index`": drop every entry >= index
                     # (and, if index is past the end, every entry: a snapshot covers the gap)
KIND_SNAPSHOT = 4    # "the log starts after (index, term), which a snapshot file covers":
                     # drop every entry <= index. With flag SNAPSHOT_RESET (an installed
                     # snapshot) drop every entry, and the log continues at index + 1.

#: KIND_SNAPSHOT flag: the snapshot was installed from a leader and replaces the whole log.
SNAPSHOT_RESET = 1

MAX_U32 = 0xFFFFFFFF
#: Torn writes are detected by zero-filled sectors (see ``classify_damage``).
SECTOR = 512

_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


def segment_name(seq: int, first_index: int) -> str:
    """``<seq>-<first index>.wal`` in fixed-width hex: names sort in log order.

    The sequence number leads because after a truncation below the active
    segment's first index the new segment starts *lower* than the one it
    supersedes (which is deleted right after); sorting by seq keeps replay order
    correct even if we crash between the two (etcd names its WAL files the same way).
    """
    return f"{seq:016x}-{first_index:016x}.wal"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(seq, first_index) for a segment file name, None for any other file."""
    m = _SEGMENT_NAME.match(name)
    return (int(m.group(1), 16), int(m.group(2), 16)) if m else None


# --- encoding -------------------------------------------------------------------

def encode_segment_header(seq: int, first_index: int) -> bytes:
    head = SEG_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, CHECKSUM_CRC32C, 0, 0, seq, first_index)
    return head + CRC.pack(checksum(head))


def decode_segment_header(buf: bytes) -> tuple[int, int]:
    """(seq, first_index); raises ValueError saying what is wrong."""
    if len(buf) < SEG_HEADER_SIZE:
        raise ValueError(f"segment header truncated ({len(buf)} of {SEG_HEADER_SIZE} bytes)")
    magic, version, algo, _, _, seq, first = SEG_HEADER.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise ValueError(f"not a WAL segment (magic {magic!r})")
    if checksum(memoryview(buf)[:SEG_HEADER_SIZE]) != CRC_RESIDUE:
        raise ValueError("segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported WAL format version {version} (this code reads {FORMAT_VERSION})")
    if algo != CHECKSUM_CRC32C:
        raise ValueError(f"unknown checksum algorithm {algo}")
    return seq, first


class BatchBuilder:
    """Builds one batch (the bytes of one ``save()``) in a single bytearray.

    Records are added in the order recovery must apply them: an optional
    TRUNCATE first, then entries, then an optional hard state. ``entry_offsets``
    are the records' offsets relative to the start of the batch (for the
    per-segment offset index).
    """

    __slots__ = ("buf", "n_records", "entry_offsets", "entry_ends", "head_kinds")

    def __init__(self) -> None:
        self.buf = bytearray(BATCH_HEADER_SIZE)  # header placeholder, filled by finish()
        self.n_records = 0
        self.head_kinds: list[int] = []  # kinds of the SNAPSHOT/TRUNCATE records at the head
        self.entry_offsets: list[int] = []
        self.entry_ends: list[int] = []

    def _record(self, kind: int, entry_type: int, index: int, term: int, payload: bytes) -> None:
        head = RECORD_HEADER.pack(len(payload), kind, 0, entry_type, index, term)
        buf = self.buf
        buf += head
        buf += payload
        buf += CRC.pack(crc32c(payload, crc32c(head, CRC_SEED)))
        self.n_records += 1

    def snapshot(self, index: int, term: int, reset: bool) -> None:
        """The log starts after (index, term) (compaction), or, with ``reset``, is
        replaced by an installed snapshot ending there."""
        if self.n_records != 0:
            raise ValueError("SNAPSHOT must be a batch's first record")
        self._record_flags(KIND_SNAPSHOT, SNAPSHOT_RESET if reset else 0, index, term)

    def _record_flags(self, kind: int, flags: int, index: int, term: int) -> None:
        head = RECORD_HEADER.pack(0, kind, flags, 0, index, term)
        self.buf += head
        self.buf += CRC.pack(crc32c(b"", crc32c(head, CRC_SEED)))
        self.n_records += 1
        self.head_kinds.append(kind)

    def truncate(self, index: int) -> None:
        if self.head_kinds not in ([], [KIND_SNAPSHOT]):
            raise ValueError("TRUNCATE must be a batch's first record, or follow its SNAPSHOT record")
        self._record(KIND_TRUNCATE, 0, index, 0, b"")
        self.head_kinds.append(KIND_TRUNCATE)

    def entries(self, entries: list[Entry]) -> None:
        if _wal_entry_records is not None:   # the same bytes, compiled
            self.n_records += _wal_entry_records(self.buf, entries, self.entry_offsets,
                                                 self.entry_ends, KIND_ENTRY, CRC_SEED)
            return
        self._entries_reference(entries)

    def _entries_reference(self, entries: list[Entry]) -> None:
        """BatchBuilder.entries in Python: the reference the compiled one must match."""
        # The hot loop of the write path: keep lookups local.
        buf = self.buf
        pack = RECORD_HEADER.pack
        pack_crc = CRC.pack
        c = crc32c
        offs = self.entry_offsets
        ends = self.entry_ends
        for e in entries:
            data = e.data
            if len(data) > MAX_U32:
                raise ValueError(f"entry {e.index} is {len(data)} bytes, over the 4 GiB record limit")
            head = pack(len(data), KIND_ENTRY, 0, e.type, e.index, e.term)
            offs.append(len(buf))
            buf += head
            buf += data
            buf += pack_crc(c(data, c(head, CRC_SEED)))
            ends.append(len(buf))
        self.n_records += len(entries)

    def hard_state(self, hs: HardState) -> None:
        self._record(KIND_HARD_STATE, 0, 0, 0, HARD_STATE_PAYLOAD.pack(hs.term, hs.vote, hs.commit))

    def __len__(self) -> int:
        return len(self.buf)

    def finish(self) -> bytearray:
        body_len = len(self.buf) - BATCH_HEADER_SIZE
        if body_len > MAX_U32:
            raise ValueError(f"a single save() of {body_len} bytes is over the 4 GiB batch limit")
        head = BATCH_HEADER.pack(BATCH_MAGIC, body_len, self.n_records)
        self.buf[:BATCH_HEADER_SIZE] = head + CRC.pack(checksum(head))
        return self.buf


# --- decoding -------------------------------------------------------------------

@dataclass
class Damage:
    """Where a segment stops being readable, and why."""

    path: str
    offset: int        # byte offset of the first bad byte we can name (record or batch header)
    batch_offset: int  # start of the batch containing it: the log is cut here
    reason: str
    # "short" (the file ends inside it), "checksum", "header" (batch header), "malformed",
    # "segment" (segment header)
    kind: str = "checksum"
    torn: bool = False  # set by classify_damage: a torn final write, not corruption

    def describe(self) -> str:
        return f"{self.path} at byte offset {self.offset}: {self.reason}"


class MalformedRecord(RaftError):
    """A batch with valid checksums but impossible content (a bug, or a deliberate forgery)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def batch_at(buf: bytes, mv: memoryview, off: int, n: int) -> tuple[int, int, str | None, str]:
    """Validate the batch starting at ``off`` of ``buf[:n]``.

    Returns (end offset, n_records, None, "") for a batch whose header and body
    checksums are right, else (bad offset, 0, reason, damage kind).
    """
    if n - off < BATCH_HEADER_SIZE:
        return off, 0, f"batch header truncated ({n - off} of {BATCH_HEADER_SIZE} bytes)", "short"
    magic, body_len, n_records = BATCH_HEADER.unpack_from(buf, off)
    if magic != BATCH_MAGIC:
        return off, 0, f"bad batch magic {bytes(magic)!r}", "header"
    if checksum(mv[off:off + BATCH_HEADER_SIZE]) != CRC_RESIDUE:
        return off, 0, "batch header checksum mismatch", "header"
    body = off + BATCH_HEADER_SIZE
    end = body + body_len
    if end > n:
        return (off, 0, f"batch of {body_len} bytes runs past the end of the file "
                        f"({n - body} present)", "short")
    if checksum(mv[body:end]) != CRC_RESIDUE:
        return first_bad_record(buf, mv, body, end), 0, "record checksum mismatch", "checksum"
    return end, n_records, None, ""


def first_bad_record(buf: bytes, mv: memoryview, p: int, end: int) -> int:
    """Offset of the first record in ``[p, end)`` whose own checksum fails (the
    slow path, only taken for a batch already known to be damaged)."""
    while p + RECORD_OVERHEAD <= end:
        (length,) = U32.unpack_from(buf, p)  # a record starts with its payload length
        q = p + RECORD_HEADER_SIZE + length + 4
        if q > end or checksum(mv[p:q]) != CRC_RESIDUE:
            return p
        p = q
    return p


def is_room(buf: bytes, off: int, n: int) -> bool:
    """Is ``buf[off:n]`` all zeros: the preallocated room after a segment's data
    (DiskStorage._room), not a batch?"""
    return buf.count(0, off, n) == n - off


def has_zero_sector(buf: bytes, start: int, end: int) -> bool:
    """Does ``buf[start:end]`` contain a sector-aligned run of zeros (a whole
    sector, or the part of one that ends at ``end`` = EOF)?

    That is what a torn write leaves: the file grew but some of its pages never
    reached the disk and read back as zeros. A flipped bit in otherwise intact
    data leaves no such run. (Same heuristic as etcd's WAL ``isTornEntry``.)
    """
    a = start
    while a < end:
        b = min((a // SECTOR + 1) * SECTOR, end)
        if buf.count(0, a, b) == b - a:
            return True
        a = b
    return False


def find_valid_batch(buf: bytes, mv: memoryview, start: int, n: int) -> int | None:
    """Offset of the first fully intact batch starting after ``start``, found by
    searching for the batch magic (resynchronising after damage); None if none."""
    pos = buf.find(BATCH_MAGIC, start + 1, n)
    while pos != -1:
        if batch_at(buf, mv, pos, n)[2] is None:
            return pos
        pos = buf.find(BATCH_MAGIC, pos + 1, n)
    return None


def classify_damage(buf: bytes, mv: memoryview, damage: Damage, n: int, last_segment: bool) -> Damage:
    """Decide whether ``damage`` is a torn tail (safe to cut: it can only be the
    one save() that had not returned) or corruption (must not be silently cut).

    Torn iff all of: it is in the last segment (older segments were complete and
    synced before the next one was created); no intact batch follows it (a
    crash tears only the final write); and it looks like an interrupted write:
    the file ends inside the batch, or the batch holds a zero-filled sector.

    Only the batch's own bytes count (its header's length, if the header is intact;
    else the header's bytes): a preallocated segment has zeros after its last batch
    anyway, and bit rot in that batch must not pass for a tear because of them.
    """
    if not last_segment or damage.kind == "malformed":
        return damage  # malformed = checksums right, content impossible: never a torn write
    if find_valid_batch(buf, mv, damage.batch_offset, n) is not None:
        return damage
    damage.torn = (damage.kind == "short"
                   or has_zero_sector(buf, damage.batch_offset,
                                      _batch_extent(buf, mv, damage.batch_offset, n)))
    return damage


def _batch_extent(buf: bytes, mv: memoryview, off: int, n: int) -> int:
    """Where the batch at ``off`` ends (at most ``n``): per its header if that is intact,
    else the end of the header itself."""
    if n - off >= BATCH_HEADER_SIZE:
        magic, body_len, _ = BATCH_HEADER.unpack_from(buf, off)
        if magic == BATCH_MAGIC and checksum(mv[off:off + BATCH_HEADER_SIZE]) == CRC_RESIDUE:
            return min(n, off + BATCH_HEADER_SIZE + body_len)
    return min(n, off + BATCH_HEADER_SIZE)


def decode_hard_state(buf: bytes, payload_at: int, length: int, at: int) -> HardState:
    if length != HARD_STATE_PAYLOAD.size:
        raise MalformedRecord(at, f"hard state record of {length} bytes (want {HARD_STATE_PAYLOAD.size})")
    return HardState(*HARD_STATE_PAYLOAD.unpack_from(buf, payload_at))


def index_segment(buf: bytes, start: int, n: int) -> tuple[array, array, int]:
    """Replay one segment's records on their own, for the per-segment offset index.

    Returns (offsets, ends, base): the record of entry ``base + i`` spans
    ``buf[offsets[i]:ends[i]]``, taking this segment's own TRUNCATE records into
    account. (Truncations in *later* segments only cut the suffix; the caller
    clips to the segment's live range.) Assumes the bytes were verified by
    recovery; ``read`` re-checks each record's checksum anyway.
    """
    offsets = array("Q")  # 8 bytes an entry, not the ~40 of a list of ints
    ends = array("Q")
    base = 0
    unpack = RECORD_HEADER.unpack_from
    off = start
    while off + BATCH_HEADER_SIZE <= n:
        _, body_len, n_records = BATCH_HEADER.unpack_from(buf, off)
        p = off + BATCH_HEADER_SIZE
        for _ in range(n_records):
            length, kind, flags, _, index, _ = unpack(buf, p)
            q = p + RECORD_HEADER_SIZE + length + 4
            if kind == KIND_ENTRY:
                if not offsets:
                    base = index
                offsets.append(p)
                ends.append(q)
            elif kind == KIND_SNAPSHOT and flags & SNAPSHOT_RESET:
                del offsets[:]  # an installed snapshot replaces everything before it
                del ends[:]
                base = index + 1
            elif kind == KIND_TRUNCATE:
                keep = index - base
                if keep <= 0 or keep > len(offsets):  # drops everything (or jumps past the end)
                    keep = 0
                    base = index
                del offsets[keep:]
                del ends[keep:]
            p = q
        off = p
    return offsets, ends, base
