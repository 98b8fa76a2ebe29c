"""Snapshot files: the state machine's image at a log index, written atomically.

File ``<index>-<term>.snap`` (16 hex digits each, so names sort by index) holds,
all integers little-endian:

    header (48 bytes) = magic b"RAFTSNP\\0" | version u16 | checksum u8 | reserved u8 |
        conf_len u32 | index u64 | term u64 | data_len u64 | body_crc u32 | header_crc u32
    body = conf_len bytes of configuration (raft._core.encode_conf: voters, learners and
        the members' addresses), then data_len bytes of state machine data

Version 1 files (before membership changes) held n_voters u64 voter ids where the
configuration now is; they are still read, as a configuration of those voters.

``body_crc`` is CRC-32C of the body; ``header_crc`` covers the header bytes before
it (both seeded like the WAL's, see raft/storage/segment.py). Writing goes
temp file -> fsync -> rename -> directory fsync, so a crash leaves either the old
set of snapshots or the new one, never a half-written ``.snap`` (a leftover
``.snap.tmp`` is ignored and removed by the next write).

The snapshot lives in the same directory as the WAL segments. ``DiskStorage``
reads the newest one at open (header to know where the log starts, body to check
it and hand it to ``load()``), writes one in ``save_snapshot`` (a snapshot taken
locally) and ``install_snapshot`` (one from the leader; see raft/storage/wal.py
for how that is made crash safe together with the WAL's SNAPSHOT record).
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Iterable

from raft._core import decode_conf, encode_conf
from raft.storage import fileio
from raft.storage.base import StorageError
from raft.storage.segment import CHECKSUM_CRC32C, CRC_RESIDUE, checksum

SNAP_MAGIC = b"RAFTSNP\0"
SNAP_VERSION = 2
_HEAD = struct.Struct("<8sHBBIQQQI")  # magic, version, checksum, 0, conf_len, index, term, data_len, body_crc
_CRC = struct.Struct("<I")
SNAP_HEADER_SIZE = _HEAD.size + _CRC.size
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


@dataclass(frozen=True)
class SnapshotMeta:
    """A snapshot's header: enough to know where the log starts, without reading the data."""

    index: int
    term: int
    voters: tuple[int, ...]
    data_len: int
    path: str
    conf: bytes = b""        # the whole configuration (encode_conf), voters included


@dataclass(frozen=True)
class SnapshotFile:
    """One snapshot file, read and verified (``raft._core.Snapshot`` is the core's
    value type: index, term, data; ``DiskStorage.load()`` returns that one)."""

    index: int
    term: int
    voters: tuple[int, ...]
    data: bytes
    path: str
    conf: bytes = b""


#: The old name (``raft.storage.Snapshot``); not the core's ``raft.Snapshot``.
Snapshot = SnapshotFile


def snapshot_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}.snap"


def _fsync_dir(path: str) -> None:
    fileio.fsync_dir(path)


def list_snapshots(directory: str | os.PathLike) -> list[str]:
    """Paths of the snapshot files in ``directory``, oldest (lowest index) first."""
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in sorted(n for n in names if _NAME.match(n))]


def write_snapshot(directory: str | os.PathLike, index: int, term: int,
                   conf: bytes | Iterable[int], data: bytes, *, durability: str = "fsync",
                   keep: int = 2) -> str:
    """Write a snapshot atomically and return its path. ``conf`` is the configuration
    at ``index`` (encode_conf's bytes; b"" if not recorded), or just the voter ids.

    Keeps the ``keep`` newest snapshots (the new one included) and deletes older
    ones: one spare is handy for forensics, but recovery never falls back to it
    (the log may already be compacted past it).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    conf = bytes(conf) if isinstance(conf, (bytes, bytearray)) else encode_conf(conf)
    body = conf + bytes(data)
    head = _HEAD.pack(SNAP_MAGIC, SNAP_VERSION, CHECKSUM_CRC32C, 0, len(conf),
                      index, term, len(data), checksum(body))
    head += _CRC.pack(checksum(head))
    final = os.path.join(directory, snapshot_name(index, term))
    tmp = final + ".tmp"
    fileio.failpoint("snapshot.write")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(head + body)
        while view:
            view = view[os.write(fd, view):]
        if durability == "fsync":
            fileio.fsync(fd)
    finally:
        os.close(fd)
    fileio.replace(tmp, final)
    if durability == "fsync":
        _fsync_dir(directory)
    _prune(directory, keep, durability)
    return final


def _prune(directory: str, keep: int, durability: str) -> None:
    for path in list_snapshots(directory)[:-keep] if keep > 0 else []:
        fileio.unlink(path)
    for name in os.listdir(directory):
        if name.endswith(".snap.tmp"):  # debris of a write that crashed
            fileio.unlink(os.path.join(directory, name))
    if durability == "fsync":
        _fsync_dir(directory)


def _read_header(path: str, head: bytes, with_conf: bool = True) -> tuple[SnapshotMeta, int]:
    """The header's fields, checked; with_conf: also parse the configuration after it
    (read_snapshot does that only once the body's checksum matched)."""
    def bad(why: str) -> StorageError:
        return StorageError(f"snapshot {path}: {why}")

    if len(head) < SNAP_HEADER_SIZE:
        raise bad(f"header truncated ({len(head)} of {SNAP_HEADER_SIZE} bytes)")
    magic, version, algo, _, n_conf, index, term, data_len, body_crc = _HEAD.unpack_from(head, 0)
    if magic != SNAP_MAGIC:
        raise bad(f"not a snapshot file (magic {magic!r})")
    if checksum(head[:SNAP_HEADER_SIZE]) != CRC_RESIDUE:
        raise bad("header checksum mismatch at byte offset 0")
    if version not in (1, SNAP_VERSION) or algo != CHECKSUM_CRC32C:
        raise bad(f"unsupported version {version} / checksum algorithm {algo}")
    m = _NAME.match(os.path.basename(path))
    if m and (int(m.group(1), 16), int(m.group(2), 16)) != (index, term):
        raise bad(f"file name says index/term {m.group(1)}/{m.group(2)}, header says {index}/{term}")
    if not with_conf:
        return SnapshotMeta(index, term, (), data_len, path), body_crc
    conf_len = _conf_len(head)
    if len(head) < SNAP_HEADER_SIZE + conf_len:
        raise bad("configuration truncated")
    raw_conf = head[SNAP_HEADER_SIZE:SNAP_HEADER_SIZE + conf_len]
    try:
        if version == 1:      # n_conf voter ids
            conf = encode_conf(struct.unpack_from(f"<{n_conf}Q", raw_conf))
        else:
            conf = bytes(raw_conf)
        voters = decode_conf(conf)[0] if conf else ()     # b"": not recorded
    except Exception as e:
        raise bad(f"configuration unreadable ({e})") from None
    return SnapshotMeta(index, term, voters, data_len, path, conf), body_crc


def _conf_len(head: bytes) -> int:
    """Bytes of configuration after the header (version 1: 8 per voter id)."""
    if len(head) < 16:
        return 0
    version = struct.unpack_from("<H", head, 8)[0]
    n = struct.unpack_from("<I", head, 12)[0]
    return 8 * n if version == 1 else n


def read_snapshot_meta(path: str) -> SnapshotMeta:
    """The header of one snapshot file (checked), without reading its data."""
    with open(path, "rb") as f:
        head = f.read(SNAP_HEADER_SIZE)
        head += f.read(_conf_len(head))
    return _read_header(path, head)[0]


def read_snapshot(path: str) -> SnapshotFile:
    """One snapshot file, with its checksums verified; StorageError if damaged."""
    with open(path, "rb") as f:
        raw = f.read()
    head, body_crc = _read_header(path, raw[:SNAP_HEADER_SIZE], with_conf=False)
    conf_len = _conf_len(raw)
    body = memoryview(raw)[SNAP_HEADER_SIZE:]
    if len(body) != conf_len + head.data_len:
        raise StorageError(f"snapshot {path}: body is {len(body)} bytes, header says "
                           f"{conf_len + head.data_len}")
    if checksum(body) != body_crc:
        raise StorageError(f"snapshot {path}: data checksum mismatch (body at byte offset "
                           f"{SNAP_HEADER_SIZE})")
    # The configuration is checked (and parsed) only once its checksum matched.
    meta, _ = _read_header(path, raw[:SNAP_HEADER_SIZE + conf_len])
    data = bytes(body[conf_len:])
    return SnapshotFile(meta.index, meta.term, meta.voters, data, path, meta.conf)



def read_latest_snapshot(directory: str | os.PathLike) -> SnapshotFile | None:
    """The newest snapshot in ``directory`` (None if there is none).

    A damaged newest snapshot raises StorageError rather than falling back to an
    older one: the log may have been compacted past the older one's index, and
    silently restarting from it would lose committed entries.
    """
    paths = list_snapshots(directory)
    return read_snapshot(paths[-1]) if paths else None


def latest_snapshot_meta(directory: str | os.PathLike) -> SnapshotMeta | None:
    """Header of the newest snapshot in ``directory`` (None if there is none)."""
    paths = list_snapshots(directory)
    return read_snapshot_meta(paths[-1]) if paths else None
