"""DiskStorage beyond the Storage protocol: group commit, snapshots and compaction,
leftovers of interrupted operations, refusal of damaged directories, the
check/repair tools and their command line, recovery speed."""
from __future__ import annotations

import errno
import gc
import os
import time

import pytest

from raft._core import Entry, HardState, Snapshot, encode_conf
from raft.storage import DiskStorage, StorageError, read_latest_snapshot, write_snapshot
from raft.storage import wal as wal_module
from raft.storage.check import check, repair, storage_main
from raft.storage.segment import SEG_HEADER_SIZE, encode_segment_header
from raft.storage.snapshot import SNAP_HEADER_SIZE, list_snapshots


@pytest.fixture(autouse=True)
def _slow_only_when_selected(request):
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: select with -m slow")


def ents(lo: int, hi: int, term: int, size: int = 50) -> list[Entry]:
    return [Entry(i, term, 0, (b"%d:%d;" % (i, term)).ljust(size, b".")) for i in range(lo, hi + 1)]


def wal_files(d) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith(".wal"))


def load(d):
    with DiskStorage(d, durability="none") as s:
        return s.load()


# --- group commit --------------------------------------------------------------------

class SyscallCounter:
    def __init__(self, monkeypatch):
        self.calls: dict[str, int] = {}
        for name in ("fdatasync", "fsync", "write", "pwrite", "pwritev"):
            real = getattr(os, name)
            monkeypatch.setattr(wal_module.os, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def f(*a):
            self.calls[name] = self.calls.get(name, 0) + 1
            return real(*a)
        return f

    def reset(self):
        self.calls.clear()


def test_fsync_segments_write_into_preallocated_zeros_and_reopen_at_the_data_end(tmp_path):
    """With fsync a segment is zero-filled PREALLOCATE_BYTES ahead; later saves go into
    those zeros (the file does not grow), and a reopened storage continues at the end
    of the data, not at the end of the file."""
    room = wal_module.PREALLOCATE_BYTES
    with DiskStorage(tmp_path, durability="fsync") as s:
        s.save(HardState(1, 1, 0), ents(1, 10, 1))
        seg = s.segments()[-1]
        first_end = seg.size
        assert os.path.getsize(seg.path) == first_end + room
        s.save(HardState(1, 1, 5), ents(11, 20, 1))
        assert seg.size > first_end and os.path.getsize(seg.path) == first_end + room
        data_end = seg.size
    with DiskStorage(tmp_path, durability="fsync") as s:
        st = s.load()
        assert [e.index for e in st.entries] == list(range(1, 21))
        assert s.segments()[-1].size == data_end
        s.save(HardState(1, 1, 20), ents(21, 30, 1))
    with DiskStorage(tmp_path, durability="none") as s:
        st = s.load()
        assert [e.index for e in st.entries] == list(range(1, 31))
        assert st.hard_state == HardState(1, 1, 20)
    with DiskStorage(tmp_path / "none", durability="none") as s:   # no room without fsync
        s.save(HardState(1, 1, 0), ents(1, 10, 1))
        assert os.path.getsize(s.segments()[-1].path) == s.segments()[-1].size


def test_only_the_last_segment_may_end_in_zeros(tmp_path):
    """A segment is cut to its data (and synced) before the next one is made, so zeros
    ending an older segment are lost data: refused, never taken for room. Here the lost
    batch is a truncation: taking its zeros for room would bring back the entries it
    truncated, with nothing else to show for it (the next segment follows on)."""
    with DiskStorage(tmp_path, durability="fsync", segment_bytes=8192) as s:
        s.save(HardState(1, 1, 0), ents(1, 20, 1))
        first = s.segments()[0]
        truncated_at = first.size
        s.save(HardState(2, 2, 0), ents(15, 20, 2))        # TRUNCATE 15, entries 15..20 of term 2
        s.save(HardState(2, 2, 0), [Entry(21, 2, 0, b"x" * 7000)])   # does not fit: a new segment
        segs = s.segments()
        assert len(segs) == 2 and segs[0].path == first.path
        assert os.path.getsize(first.path) == segs[0].size   # cut to its data at the rollover
        assert os.path.getsize(segs[-1].path) > segs[-1].size  # the active one has room
    with open(first.path, "r+b") as f:      # the truncation batch reads back as zeros
        f.seek(truncated_at)
        f.write(bytes(os.path.getsize(first.path) - truncated_at))
    with pytest.raises(StorageError, match="corrupt"):
        DiskStorage(tmp_path, durability="fsync")


def test_a_full_disk_drops_the_room_not_the_save(tmp_path, monkeypatch):
    real = wal_module._write_at

    def no_room(fd, bufs, offset):
        if any(isinstance(b, memoryview) and b.nbytes and not any(b[:64]) for b in bufs[1:]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, bufs, offset)

    monkeypatch.setattr(wal_module, "_write_at", no_room)
    with DiskStorage(tmp_path, durability="fsync") as s:
        s.save(HardState(1, 1, 0), ents(1, 10, 1))
        s.save(HardState(1, 1, 5), ents(11, 20, 1))
        seg = s.segments()[-1]
        assert os.path.getsize(seg.path) == seg.size                   # no room was written
    with DiskStorage(tmp_path, durability="fsync") as s:
        assert [e.index for e in s.load().entries] == list(range(1, 21))


def test_one_write_and_one_fdatasync_per_save(tmp_path, monkeypatch):
    with DiskStorage(tmp_path, durability="fsync") as s:
        s.save(HardState(1, 1, 0), ents(1, 10, 1))  # creates the first segment
        n = SyscallCounter(monkeypatch)
        s.save(HardState(1, 1, 5), ents(11, 1010, 1))  # 1000 entries and a hard state
        assert n.calls == {"pwritev": 1, "fdatasync": 1}
        n.reset()
        s.save(HardState(2, 0, 5), ents(900, 905, 2))  # a truncation is in the same write
        assert n.calls == {"pwritev": 1, "fdatasync": 1}
        n.reset()
        s.save(HardState(2, 0, 5), [])  # unchanged hard state, no entries: nothing to do
        s.save(None, [])
        assert n.calls == {}
    assert load(tmp_path).entries == ents(1, 899, 1) + ents(900, 905, 2)


def test_new_segment_syncs_file_and_directory(tmp_path, monkeypatch):
    with DiskStorage(tmp_path, durability="fsync", segment_bytes=4096) as s:
        s.save(None, ents(1, 40, 1))
        n = SyscallCounter(monkeypatch)
        s.save(None, ents(41, 80, 1))  # does not fit: rotation
        # fsyncs: the outgoing segment cut to its data (its preallocated room), and the
        # directory after the rename; the new segment's file: one fdatasync.
        assert n.calls == {"pwritev": 1, "fdatasync": 1, "fsync": 2}
        assert len(wal_files(tmp_path)) == 2


def test_durability_none_never_syncs(tmp_path, monkeypatch):
    n = SyscallCounter(monkeypatch)
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 400, 40):
            s.save(HardState(1, 0, 0), ents(lo, lo + 39, 1))
    assert "fdatasync" not in n.calls and "fsync" not in n.calls
    assert n.calls["pwritev"] > 5


# --- segments and leftovers ---------------------------------------------------------

def test_truncation_below_the_active_segment_deletes_later_segments(tmp_path):
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 301, 20):
            s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
        assert len(wal_files(tmp_path)) >= 5
        s.save(HardState(2, 0, 0), ents(30, 31, 2))
        # the segment holding 1..29, plus the new one starting at 30
        files = wal_files(tmp_path)
        assert len(files) == 2, files
        assert files[1].endswith(f"-{30:016x}.wal")
        assert s.entries(1, 32) == ents(1, 29, 1) + ents(30, 31, 2)
    assert load(tmp_path).entries == ents(1, 29, 1) + ents(30, 31, 2)


def test_interrupted_cross_segment_truncation_recovers(tmp_path, monkeypatch):
    """Crash after the new segment is durable but before the superseded ones are
    deleted: replay order (by sequence number) still gives the right log, and
    opening removes the dead segments."""
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 301, 20):
            s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
        n_before = len(wal_files(tmp_path))
        monkeypatch.setattr(DiskStorage, "_collect_garbage", lambda self: None)
        s.save(HardState(2, 0, 0), ents(30, 31, 2))
        monkeypatch.undo()
    assert len(wal_files(tmp_path)) == n_before + 1  # dead segments still there
    st = load(tmp_path)
    assert st.entries == ents(1, 29, 1) + ents(30, 31, 2)
    assert st.hard_state == HardState(2, 0, 0)
    assert len(wal_files(tmp_path)) == 2


class Crash(BaseException):
    """Stands for the process dying at that point."""


def _crash_after_unlinks(monkeypatch, n: int) -> None:
    real = os.unlink
    count = [0]

    def unlink(path):
        if count[0] == n:
            raise Crash(f"crash after {n} unlinks")
        count[0] += 1
        real(path)

    monkeypatch.setattr(wal_module.os, "unlink", unlink)


@pytest.mark.parametrize("crash_after", range(6))
def test_crash_between_deletions_of_superseded_segments(tmp_path, monkeypatch, crash_after):
    """Regression: deleting superseded segments oldest first, a crash in between
    left a segment whose TRUNCATE pointed past the end of the replayed log, and
    the directory would not open (found by the SIGKILL test)."""
    s = DiskStorage(tmp_path, durability="none", segment_bytes=4096)
    for lo in range(1, 301, 20):
        s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
    s.save(HardState(2, 0, 0), ents(200, 260, 2))  # a truncation into a new segment...
    s.save(HardState(3, 0, 0), ents(250, 300, 3))  # ...one within it, more segments after it
    assert len(wal_files(tmp_path)) >= 7  # the truncation below supersedes all but the first
    _crash_after_unlinks(monkeypatch, crash_after)
    with pytest.raises(Crash):
        s.save(HardState(4, 0, 0), ents(30, 31, 4))  # supersedes >= 6 segments
    monkeypatch.undo()
    s.close()
    st = load(tmp_path)  # the new segment was durable before any unlink
    assert st.entries == ents(1, 29, 1) + ents(30, 31, 4)
    assert st.hard_state == HardState(4, 0, 0)
    assert len(wal_files(tmp_path)) == 2


@pytest.mark.parametrize("crash_after", range(4))
def test_crash_between_deletions_of_compacted_segments(tmp_path, monkeypatch, crash_after):
    s = DiskStorage(tmp_path, durability="none", segment_bytes=4096)
    for lo in range(1, 301, 20):
        s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
    write_snapshot(tmp_path, 250, 1, [1], b"")
    _crash_after_unlinks(monkeypatch, crash_after)
    with pytest.raises(Crash):
        s.compact(250)
    monkeypatch.undo()
    s.close()
    st = load(tmp_path)
    assert (st.snapshot_index, st.entries) == (250, ents(251, 300, 1))


def test_leftover_temp_segment_is_ignored_and_removed(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(1, 0, 0), ents(1, 5, 1))
    tmp = tmp_path / "0000000000000002-0000000000000006.wal.tmp"
    tmp.write_bytes(encode_segment_header(2, 6) + b"garbage")
    assert load(tmp_path).entries == ents(1, 5, 1)
    assert not tmp.exists()


def test_missing_middle_segment_is_refused(tmp_path):
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 301, 20):
            s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
    files = wal_files(tmp_path)
    os.unlink(tmp_path / files[2])
    # the first record of the next segment's first batch (after the 16-byte batch header)
    with pytest.raises(StorageError, match=rf"{files[3]} at byte offset {SEG_HEADER_SIZE + 16}: "
                                           r"malformed record: .*segment file deleted"):
        DiskStorage(tmp_path)


def test_bad_segment_header_is_refused(tmp_path):
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 201, 20):
            s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
    first = tmp_path / wal_files(tmp_path)[0]
    raw = bytearray(first.read_bytes())
    raw[8] = 99  # format version
    first.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match=r"byte offset 0: bad segment header.*(version|checksum)"):
        DiskStorage(tmp_path)


def test_newer_format_version_is_named(tmp_path):
    """A segment from a newer format (valid checksum, version 2) is refused by name,
    never mistaken for a torn tail and cut, even though it is the last segment."""
    from raft.storage.segment import CRC, SEG_HEADER, SEGMENT_MAGIC, checksum
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(1, 0, 0), ents(1, 5, 1))
    seg = tmp_path / wal_files(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    head = SEG_HEADER.pack(SEGMENT_MAGIC, 2, 1, 0, 0, 1, 1)
    raw[:SEG_HEADER_SIZE] = head + CRC.pack(checksum(head))
    seg.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="unsupported WAL format version 2"):
        DiskStorage(tmp_path)
    assert seg.read_bytes() == bytes(raw)


def test_failed_sync_makes_the_storage_unusable_until_reopened(tmp_path, monkeypatch):
    s = DiskStorage(tmp_path, durability="fsync")
    s.save(HardState(1, 0, 0), ents(1, 5, 1))

    def eio(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal_module.os, "fdatasync", eio)
    with pytest.raises(StorageError, match="unusable, reopen"):
        s.save(None, ents(6, 10, 1))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="failed earlier"):
        s.save(None, ents(6, 10, 1))
    s.close()
    # the write itself happened (only the sync "failed"), so either state is legal
    st = load(tmp_path)
    assert st.entries in (ents(1, 5, 1), ents(1, 10, 1))


def test_gc_is_restored_after_recovery(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(None, ents(1, 100, 1))
    assert gc.isenabled()
    load(tmp_path)
    assert gc.isenabled()
    (tmp_path / wal_files(tmp_path)[0]).write_bytes(b"RAFTWAL\0garbage" * 10)
    with pytest.raises(StorageError):
        load(tmp_path)
    assert gc.isenabled()


def test_cold_reads_across_many_segments(tmp_path):
    """With no cache every read goes to disk, through per-segment offset indexes
    of which only a few are kept: reading all segments twice must still work."""
    expected = []
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096, cache_bytes=0) as s:
        for lo in range(1, 1001, 25):
            s.save(None, ents(lo, lo + 24, 1 + lo // 300))
            expected += ents(lo, lo + 24, 1 + lo // 300)
        assert len(s.segments()) > 10
        for _ in range(2):
            for lo in range(1, 1001, 37):
                hi = min(lo + 50, 1001)
                assert s.entries(lo, hi) == expected[lo - 1:hi - 1]
        assert [s.term(i) for i in range(1, 1001)] == [e.term for e in expected]


def test_cold_read_detects_bit_rot(tmp_path):
    with DiskStorage(tmp_path, durability="none", cache_bytes=0) as s:
        s.save(None, ents(1, 10, 1))
        seg = os.path.join(tmp_path, wal_files(tmp_path)[0])
        raw = bytearray(open(seg, "rb").read())
        raw[SEG_HEADER_SIZE + 16 + 30] ^= 1  # inside entry 1
        with open(seg, "r+b") as f:
            f.write(raw)
        with pytest.raises(StorageError, match="checksum mismatch reading entry 1"):
            s.entries(1, 3)


# --- snapshots and compaction --------------------------------------------------------

def test_snapshot_round_trip_and_pruning(tmp_path):
    assert read_latest_snapshot(tmp_path) is None
    for i, idx in enumerate([10, 20, 30]):
        write_snapshot(tmp_path, idx, 2, [1, 2, 3], b"state%d" % i)
    snap = read_latest_snapshot(tmp_path)
    assert (snap.index, snap.term, snap.voters, snap.data) == (30, 2, (1, 2, 3), b"state2")
    assert [os.path.basename(p) for p in list_snapshots(tmp_path)] == [
        f"{20:016x}-{2:016x}.snap", f"{30:016x}-{2:016x}.snap"]  # keep=2


def test_damaged_snapshot_is_refused(tmp_path):
    path = write_snapshot(tmp_path, 10, 2, [1], b"x" * 1000)
    raw = bytearray(open(path, "rb").read())
    raw[500] ^= 0xFF
    open(path, "wb").write(raw)
    with pytest.raises(StorageError, match="data checksum mismatch"):
        read_latest_snapshot(tmp_path)
    (tmp_path / "x.snap.tmp").write_bytes(b"half")  # a crashed write is ignored
    write_snapshot(tmp_path, 11, 2, [1], b"y")
    assert read_latest_snapshot(tmp_path).data == b"y"
    assert not (tmp_path / "x.snap.tmp").exists()


def test_compact_drops_covered_segments_and_load_starts_after_the_snapshot(tmp_path):
    with DiskStorage(tmp_path, durability="fsync", segment_bytes=4096) as s:
        s.save(HardState(3, 1, 0), [])  # the only hard state record: in the first segment
        for lo in range(1, 401, 20):
            s.save(None, ents(lo, lo + 19, 3))
        n_segments = len(wal_files(tmp_path))
        with pytest.raises(StorageError, match="no snapshot"):
            s.compact(200)
        write_snapshot(tmp_path, 250, 3, [1, 2, 3], b"image")
        s.compact(200)
        assert s.first_index == 201
        assert s.term(200) == 3
        with pytest.raises(StorageError):
            s.entries(200, 201)
        assert s.entries(201, 401) == ents(201, 400, 3)
        assert len(wal_files(tmp_path)) < n_segments
        st = s.load()  # the snapshot on disk is at 250
        assert (st.snapshot_index, st.snapshot_term) == (250, 3)
        assert st.entries == ents(251, 400, 3)
    st = load(tmp_path)
    assert (st.snapshot_index, st.snapshot_term) == (250, 3)
    assert st.entries == ents(251, 400, 3)
    assert st.hard_state == HardState(3, 1, 0)  # not lost with the first segment
    with DiskStorage(tmp_path, durability="none") as s:
        assert s.first_index == 251 and s.term(250) == 3
        s.save(None, ents(401, 405, 3))
    assert load(tmp_path).entries == ents(251, 405, 3)


def test_compact_checks_the_snapshot_term(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(None, ents(1, 10, 1))
        write_snapshot(tmp_path, 10, 7, [1], b"")
        with pytest.raises(StorageError, match="term"):
            s.compact(10)
        with pytest.raises(StorageError, match="beyond"):
            write_snapshot(tmp_path, 20, 1, [1], b"")
            s.compact(20)


def test_snapshot_ahead_of_the_log(tmp_path):
    """A snapshot installed from the leader can be past our whole log: the log
    then continues right after it, and the old entries never come back."""
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(1, 0, 0), ents(1, 10, 1))
    write_snapshot(tmp_path, 50, 4, [1, 2, 3], b"image")
    with DiskStorage(tmp_path, durability="none") as s:
        st = s.load()
        assert (st.snapshot_index, st.entries, s.first_index, s.last_index) == (50, [], 51, 50)
        assert s.term(50) == 4
        with pytest.raises(StorageError, match="gap"):
            s.save(None, ents(52, 52, 4))
        s.save(HardState(4, 0, 50), ents(51, 55, 4))
    st = load(tmp_path)
    assert (st.snapshot_index, st.entries, st.hard_state) == (50, ents(51, 55, 4), HardState(4, 0, 50))


def test_log_starting_after_a_gap_without_snapshot_is_refused(tmp_path):
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 201, 20):
            s.save(HardState(1, 0, 0), ents(lo, lo + 19, 1))
    os.unlink(tmp_path / wal_files(tmp_path)[0])
    with pytest.raises(StorageError, match="no snapshot covering"):
        DiskStorage(tmp_path)


# --- install_snapshot and compaction: crash points ------------------------------------

def _log_in_segments(path, n=300, term=1, hs=HardState(1, 0, 0)):
    s = DiskStorage(path, durability="none", segment_bytes=4096)
    for lo in range(1, n + 1, 20):
        s.save(hs, ents(lo, lo + 19, term))
    return s


def test_install_interrupted_after_the_snapshot_file_completes_on_open(tmp_path, caplog):
    """Crash between the two durable steps of install_snapshot: the snapshot file is
    there, the WAL's RESET record is not, and the WAL holds entries of another term
    past the snapshot. Recovery must give the installed state (snapshot, empty log),
    never the snapshot with the old conflicting suffix after it."""
    s = _log_in_segments(tmp_path, hs=HardState(3, 2, 40))
    s.close()
    write_snapshot(tmp_path, 120, 4, [1, 2, 3], image := b"leader's state")  # step 1 only
    with DiskStorage(tmp_path, durability="none") as s:
        st = s.load()
        assert st.snapshot == Snapshot(120, 4, image, encode_conf([1, 2, 3]))
        assert (st.entries, st.hard_state) == ([], HardState(3, 2, 40))
        assert (s.first_index, s.last_index, s.term(120)) == (121, 120, 4)
        s.save(HardState(4, 0, 120), ents(121, 125, 4))
    assert "completing an interrupted snapshot install" in caplog.text
    assert "discarding the log's entries 1..300" in caplog.text
    assert len(wal_files(tmp_path)) == 1     # the old segments are gone
    st = load(tmp_path)                       # and stays so: the RESET record is durable
    assert (st.snapshot_index, st.entries, st.hard_state) == (120, ents(121, 125, 4), HardState(4, 0, 120))


def test_snapshot_file_ahead_but_log_holds_its_entry_keeps_the_log(tmp_path):
    """Figure 13 step 6: if the log holds the snapshot's last entry (a local snapshot
    not yet compacted, or an install whose log matched), the entries after it stay."""
    _log_in_segments(tmp_path).close()
    write_snapshot(tmp_path, 120, 1, [1], b"img")
    with DiskStorage(tmp_path, durability="none") as s:
        st = s.load()
        assert (st.snapshot_index, st.entries) == (120, ents(121, 300, 1))
    r = check(tmp_path)
    assert r.ok and not r.install_pending


@pytest.mark.parametrize("crash_after", range(5))
def test_crash_between_deletions_after_install(tmp_path, monkeypatch, crash_after):
    s = _log_in_segments(tmp_path, hs=HardState(2, 1, 10))
    assert len(wal_files(tmp_path)) >= 5
    _crash_after_unlinks(monkeypatch, crash_after)
    with pytest.raises(Crash):
        s.install_snapshot(Snapshot(500, 3, b"x" * 100))
    monkeypatch.undo()
    s.close()
    st = load(tmp_path)
    assert (st.snapshot, st.entries, st.hard_state) == (Snapshot(500, 3, b"x" * 100), [], HardState(2, 1, 10))
    assert len(wal_files(tmp_path)) == 1


@pytest.mark.parametrize("crash_after", range(4))
@pytest.mark.parametrize("term", [1, 4], ids=["log-holds-it", "log-conflicts"])
def test_crash_while_opening_completes_a_snapshot(tmp_path, monkeypatch, crash_after, term):
    """Opening completes an interrupted compaction (the log holds the snapshot's entry)
    or install (it does not) by writing the WAL record and then deleting segments.
    A crash after any deletion must reopen to the same state. (Deleting before the
    record was written left a suffix starting after a gap: refused as missing entries.)"""
    _log_in_segments(tmp_path).close()
    write_snapshot(tmp_path, 120, term, [1], b"img")
    expected = ents(121, 300, 1) if term == 1 else []
    _crash_after_unlinks(monkeypatch, crash_after)
    try:
        DiskStorage(tmp_path, durability="none").close()
    except Crash:
        pass
    monkeypatch.undo()
    st = load(tmp_path)
    assert (st.snapshot, st.entries) == (Snapshot(120, term, b"img", encode_conf([1])), expected)
    assert load(tmp_path).entries == expected


def test_install_crash_before_the_wal_record(tmp_path, monkeypatch):
    """The same as above, by making the WAL write itself fail after the file is durable."""
    s = _log_in_segments(tmp_path, n=100)

    def boom(*a, **k):
        raise Crash("crash before the RESET record")

    monkeypatch.setattr(s, "_write_batch", boom)
    with pytest.raises(Crash):
        s.install_snapshot(Snapshot(50, 2, b"img"))   # 50 < 100: the old suffix conflicts
    monkeypatch.undo()
    s.close()
    st = load(tmp_path)
    assert (st.snapshot, st.entries) == (Snapshot(50, 2, b"img"), [])


def test_compaction_record_survives_a_superseded_segment(tmp_path):
    """The WAL's compaction record must not be lost when the segment it was written
    to is deleted as superseded by a truncation: every new segment carries it. (Without
    that, recovery would find the snapshot ahead of a log that no longer holds its
    last entry, and drop the log as after an interrupted install.)"""
    s = DiskStorage(tmp_path, durability="none", segment_bytes=4096)
    for lo in range(1, 301, 10):
        s.save(HardState(1, 0, 0), ents(lo, lo + 9, 1))
    segs = s.segments()
    assert len(segs) >= 4
    cut = segs[0].hi - 1             # the last entry of the first segment
    s.save_snapshot(Snapshot(cut, 1, b"img"))
    s.compact(cut)                    # the record goes into the active (last) segment
    assert not os.path.exists(segs[0].path)
    k = segs[1].lo + 2                # below the active segment: a new segment supersedes it
    assert k < s.segments()[-1].first
    s.save(HardState(2, 0, cut), ents(k, k + 3, 2))
    assert not os.path.exists(segs[-1].path)
    expected = ents(cut + 1, k - 1, 1) + ents(k, k + 3, 2)
    assert s.load().entries == expected
    s.close()
    st = load(tmp_path)
    assert (st.snapshot_index, st.entries) == (cut, expected)


def test_truncated_or_damaged_snapshot_file_is_refused_naming_it(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(1, 0, 10), ents(1, 20, 1))
        s.save_snapshot(Snapshot(10, 1, bytes(range(256)) * 8))
        s.compact(10)
    path = list_snapshots(tmp_path)[-1]
    raw = open(path, "rb").read()
    name = os.path.basename(path)
    cases = {"header truncated": raw[:SNAP_HEADER_SIZE - 1], "truncated empty": b"",
             "body is": raw[:len(raw) - 1], "body is ": raw[:SNAP_HEADER_SIZE + 100],
             "data checksum mismatch": raw[:1000] + bytes([raw[1000] ^ 1]) + raw[1001:],
             "header checksum": raw[:20] + bytes([raw[20] ^ 1]) + raw[21:]}
    for reason, content in cases.items():
        with open(path, "wb") as f:
            f.write(content)
        with pytest.raises(StorageError) as exc:
            DiskStorage(tmp_path, durability="none")
        msg = str(exc.value)
        assert name in msg, (reason, msg)
        assert reason.split(" ")[0] in msg or "truncated" in msg or "magic" in msg, (reason, msg)
        r = check(tmp_path)
        assert not r.ok and name in str(r), (reason, str(r))
        assert storage_main(["check", str(tmp_path)]) == 1
    with open(path, "wb") as f:
        f.write(raw)
    assert load(tmp_path).snapshot.data == bytes(range(256)) * 8


def test_missing_snapshot_file_is_refused(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(1, 0, 10), ents(1, 20, 1))
        s.install_snapshot(Snapshot(50, 2, b"img"))
    for p in list_snapshots(tmp_path):
        os.unlink(p)
    with pytest.raises(StorageError, match="no snapshot file"):
        DiskStorage(tmp_path)
    write_snapshot(tmp_path, 30, 1, [1], b"older")
    with pytest.raises(StorageError, match="that snapshot file is missing"):
        DiskStorage(tmp_path)


def test_install_and_compact_sync_counts(tmp_path, monkeypatch):
    """What each snapshot operation costs in syncs (durability fsync)."""
    with DiskStorage(tmp_path, durability="fsync") as s:
        s.save(HardState(1, 0, 10), ents(1, 20, 1))
        n = SyscallCounter(monkeypatch)
        s.save_snapshot(Snapshot(10, 1, b"img"))
        # temp file fsync, directory fsync after the rename, directory fsync after pruning
        assert n.calls.get("fsync") == 3 and "fdatasync" not in n.calls
        n.reset()
        s.compact(10)
        assert n.calls == {"pwritev": 1, "fdatasync": 1}   # the compaction record
        n.reset()
        s.install_snapshot(Snapshot(40, 2, b"img2"))
        # the snapshot file (3 fsyncs), then a new segment: fdatasync + directory fsync,
        # then a directory fsync per deleted segment
        assert n.calls.get("fdatasync") == 1 and n.calls.get("fsync", 0) >= 5


def test_stale_install_is_refused(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.install_snapshot(Snapshot(50, 2, b"img"))
        with pytest.raises(StorageError, match="not newer"):
            s.install_snapshot(Snapshot(40, 2, b"old"))
        with pytest.raises(StorageError, match="beyond the last index"):
            s.save_snapshot(Snapshot(60, 2, b"local snapshots follow the log"))
        s.save_snapshot(Snapshot(30, 1, b"older than what we hold: ignored"))
        assert s.load().snapshot == Snapshot(50, 2, b"img")


def test_check_reports_an_interrupted_install(tmp_path, capsys):
    _log_in_segments(tmp_path, n=40).close()
    write_snapshot(tmp_path, 100, 2, [1], b"img")
    r = check(tmp_path)
    assert r.ok and r.install_pending and r.discarded == (1, 40)
    assert "INTERRUPTED INSTALL" in str(r) and "entries 1..40" in str(r)
    assert storage_main(["check", str(tmp_path)]) == 0
    load(tmp_path)
    r = check(tmp_path)
    assert r.clean and not r.install_pending and r.wal_snapshot == (100, 2)


# --- check / repair / command line --------------------------------------------------

def _damaged(tmp_path):
    with DiskStorage(tmp_path, durability="none", segment_bytes=4096) as s:
        for lo in range(1, 201, 20):
            s.save(HardState(1, 0, lo), ents(lo, lo + 19, 1))
    first = tmp_path / wal_files(tmp_path)[0]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    first.write_bytes(bytes(raw))
    return tmp_path


def test_check_clean_directory(tmp_path, capsys):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(2, 1, 3), ents(1, 30, 2))
    r = check(tmp_path)
    assert r.ok and r.clean and (r.first_index, r.last_index) == (1, 30)
    assert r.hard_state == HardState(2, 1, 3)
    assert storage_main(["check", str(tmp_path)]) == 0
    assert "OK: every segment is intact" in capsys.readouterr().out
    assert storage_main(["repair", str(tmp_path)]) == 0
    assert "nothing to repair" in capsys.readouterr().out


def test_check_reports_a_torn_tail_without_touching_it(tmp_path):
    with DiskStorage(tmp_path, durability="none") as s:
        s.save(HardState(2, 1, 3), ents(1, 30, 2))
        s.save(None, ents(31, 31, 2))
    seg = tmp_path / wal_files(tmp_path)[0]
    size = seg.stat().st_size
    os.truncate(seg, size - 10)
    r = check(tmp_path)
    assert r.ok and not r.clean and r.damage.torn
    assert "torn tail" in str(r)
    assert seg.stat().st_size == size - 10  # check changes nothing
    assert r.last_index == 30


def test_cli_on_damage(tmp_path, capsys):
    d = _damaged(tmp_path)
    assert storage_main(["check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "byte offset" in out
    before = sorted(os.listdir(d))
    assert storage_main(["repair", "--dry-run", str(d)]) == 1
    assert "would cut" in capsys.readouterr().out
    assert sorted(os.listdir(d)) == before
    assert storage_main(["repair", str(d)]) == 0
    out = capsys.readouterr().out
    assert "moved" in out and "lost:" in out and "WARNING" in out
    assert storage_main(["check", str(d)]) == 0
    st = load(d)
    assert st.entries == ents(1, len(st.entries), 1)


def test_repair_refuses_an_open_directory(tmp_path):
    e = tmp_path / "e"
    with DiskStorage(e, durability="none"):
        with pytest.raises(StorageError, match="in use"):
            repair(e)


def test_cli_usage_errors(tmp_path, capsys):
    assert storage_main([]) == 2
    assert storage_main(["frobnicate", str(tmp_path)]) == 2
    assert storage_main(["check", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().out


# --- speed --------------------------------------------------------------------------

def _write_n(path, n: int, size: int = 100, batch: int = 1024) -> None:
    payload = b"p" * size
    with DiskStorage(path, durability="none") as s:
        for lo in range(1, n + 1, batch):
            s.save(None, [Entry(i, 1, 0, payload) for i in range(lo, min(lo + batch, n + 1))])


def test_recovery_speed_200k(tmp_path):
    """A generous bound (the shared CI box is noisy); bench_storage.py has the real figures."""
    _write_n(tmp_path, 200_000)
    t = time.perf_counter()
    st = load(tmp_path)
    dt = time.perf_counter() - t
    assert len(st.entries) == 200_000 and st.entries[-1].index == 200_000
    assert dt < 2.0, f"recovering 200k entries took {dt:.2f}s"


@pytest.mark.slow
def test_recovery_speed_1m_under_2s(tmp_path):
    _write_n(tmp_path, 1_000_000)
    t = time.perf_counter()
    st = load(tmp_path)
    dt = time.perf_counter() - t
    assert len(st.entries) == 1_000_000
    assert dt < 2.0, f"recovering 1M entries took {dt:.2f}s"
