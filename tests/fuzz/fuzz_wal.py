"""Fuzz WAL recovery (raft/storage/wal.py, raft/storage/check.py) on damaged segments.

The harness writes one small log with ``DiskStorage`` (three segments, a truncation
of a conflicting suffix, hard states), remembering the state after every save().
Each input damages a copy of it; byte 0 picks how, byte 1 which segment:
  0 overwrite bytes at an offset (bytes 2-3, little-endian) with the rest;
  1 cut the segment at an offset (bytes 2-3);
  2 delete the segment file;
  3 replace the segment's contents with the rest of the input;
  4 add a segment after the last one holding the rest of the input.
Properties:
* ``check(dir)``, ``raft storage check DIR`` and ``DiskStorage(dir).load()`` raise
  nothing but ``StorageError`` (the CLI: nothing at all; its status is 0, 1 or 2);
* ``check`` calls the directory loadable exactly when ``DiskStorage`` opens it;
* what loads is a state the log really had after some save(): a valid prefix (a
  batch is checksummed, so this holds unless the input forges a CRC-32C);
* a second open of the same directory (after recovery cut a torn tail) loads the
  same state.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import struct
import tempfile

import atheris

with atheris.instrument_imports():
    from raft._core import Entry, HardState
    from raft.storage.base import StorageError
    from raft.storage.check import check, storage_main
    from raft.storage.segment import parse_segment_name, segment_name
    from raft.storage.wal import DiskStorage
    from _fuzzlib import main

logging.getLogger("raft.storage").setLevel(logging.ERROR)  # a torn tail cut is expected here
_ROOT = tempfile.mkdtemp(prefix="fuzz-wal-")
_BASE = os.path.join(_ROOT, "base")
_WORK = os.path.join(_ROOT, "work")


def _state(hs: HardState, entries: list[Entry]) -> tuple:
    return ((hs.term, hs.vote, hs.commit), tuple((e.index, e.term, e.type, e.data) for e in entries))


def _build_base() -> tuple[set[tuple], list[str]]:
    """Write the log; return every state it went through and its segment names."""
    states = {_state(HardState(), [])}
    log: list[Entry] = []
    with DiskStorage(_BASE, durability="none", segment_bytes=4096) as st:
        def save(hs: HardState, ents: list[Entry]) -> None:
            st.save(hs, ents)
            if ents:
                del log[ents[0].index - 1:]
                log.extend(ents)
            states.add(_state(hs, log))
        for i in range(1, 31):
            save(HardState(1 + i // 10, 1, max(0, i - 2)), [Entry(i, 1 + i // 10, 0, bytes([i]) * (40 + 7 * i))])
        # a new leader overwrites a conflicting suffix (a TRUNCATE record)
        save(HardState(5, 2, 26), [Entry(27, 5, 0, b"x" * 300), Entry(28, 5, 0, b"y" * 10)])
        for i in range(29, 34):
            save(HardState(5, 2, i - 1), [Entry(i, 5, 0, bytes([i]) * 120)])
        save(HardState(6, 3, 32), [])
    segs = sorted(n for n in os.listdir(_BASE) if parse_segment_name(n))
    if len(segs) < 3:
        raise RuntimeError(f"the base log should span several segments: {segs}")
    return states, segs


_STATES, _SEGMENTS = _build_base()


def _damage(data: bytes) -> None:
    shutil.rmtree(_WORK, ignore_errors=True)
    os.mkdir(_WORK)
    for n in _SEGMENTS:
        shutil.copyfile(os.path.join(_BASE, n), os.path.join(_WORK, n))
    mode, name, rest = data[0] % 5, _SEGMENTS[data[1] % len(_SEGMENTS)], data[2:]
    path = os.path.join(_WORK, name)
    if mode in (0, 1):
        off = struct.unpack_from("<H", rest)[0] if len(rest) >= 2 else 0
        buf = bytearray(open(path, "rb").read())
        off %= len(buf) + 1
        if mode == 0:
            buf[off:off + len(rest) - 2] = rest[2:]
        else:
            del buf[off:]
        with open(path, "wb") as f:
            f.write(buf)
    elif mode == 2:
        os.unlink(path)
    elif mode == 3:
        with open(path, "wb") as f:
            f.write(rest)
    else:
        seq, first = parse_segment_name(_SEGMENTS[-1])
        with open(os.path.join(_WORK, segment_name(seq + 1, first + 100)), "wb") as f:
            f.write(rest)


@atheris.instrument_func
def _open_and_load() -> tuple | None:
    try:
        with DiskStorage(_WORK, durability="none") as st:
            p = st.load()
    except StorageError:
        return None
    return _state(p.hard_state, p.entries)


@atheris.instrument_func
def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    _damage(data)
    try:
        report = check(_WORK)
    except StorageError:
        report = None
    with contextlib.redirect_stdout(io.StringIO()):
        status = storage_main(["check", _WORK])
    if status not in (0, 1, 2):
        raise RuntimeError(f"raft storage check exited {status}")
    loaded = _open_and_load()
    if (loaded is not None) != (report is not None and report.ok):
        raise RuntimeError(f"check says ok={report and report.ok} but open gave {loaded is not None}")
    if loaded is None:
        return
    if loaded not in _STATES:
        raise RuntimeError(f"loaded a state the log never had: {loaded!r}")
    again = _open_and_load()
    if again != loaded:
        raise RuntimeError(f"a second open loaded {again!r}, the first {loaded!r}")


if __name__ == "__main__":
    main("wal", test_one_input)
