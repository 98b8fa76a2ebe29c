"""The power-loss journal and the storage failpoints (raft/storage/fileio.py).

A power loss keeps only what the disk was told to keep: file content up to its last
fsync/fdatasync, directory entries up to the directory's last fsync. These tests drive
the real DiskStorage, "kill" it (close without syncing: what SIGKILL leaves), roll the
directory back, reopen it and compare with what was synced."""
import errno
import os

import pytest

from raft import Entry, HardState
from raft.storage import StorageError, fileio
from raft.storage.wal import DiskStorage


def _entries(lo, hi, term=1):
    return [Entry(i, term, 0, b"v%06d" % i * 8) for i in range(lo, hi + 1)]


def _reopen(path, durability="fsync"):
    s = DiskStorage(path, durability=durability, segment_bytes=4096)
    try:
        st = s.load()
        return st.hard_state, [e.index for e in st.entries]
    finally:
        s.close()


@pytest.fixture
def journaled(tmp_path):
    path = str(tmp_path / "data")
    os.makedirs(path)
    fileio.record_durability(path)
    yield path
    fileio.stop_recording(path)


def _power_loss(path):
    fileio.stop_recording(path)
    return fileio.simulate_power_loss(path)


def test_fsynced_entries_survive_and_unsynced_ones_are_lost(journaled):
    s = DiskStorage(journaled, durability="fsync", segment_bytes=4096)
    s.load()
    s.save(HardState(1, 1, 0), _entries(1, 5))              # fdatasync'ed
    s.save(HardState(1, 1, 5), _entries(6, 9), sync=False)  # written, never synced
    s.close()                                                # a kill: nothing flushed
    assert _reopen(journaled)[1] == list(range(1, 10))      # the page cache still has it
    undone = _power_loss(journaled)
    # The unsynced batch went into the segment's preallocated zeros: zeroed again.
    assert undone["zeroed_bytes"] > 0
    hs, indexes = _reopen(journaled)
    assert indexes == list(range(1, 6))
    assert (hs.term, hs.vote) == (1, 1)


def test_unsynced_writes_into_the_room_of_a_segment_from_before_the_restart_are_lost(tmp_path):
    # The node restarts (journal baseline) with a preallocated segment; what it then
    # writes into the segment's zeros without a sync is lost by the power loss.
    path = str(tmp_path / "data")
    with DiskStorage(path, durability="fsync") as s:
        s.save(HardState(1, 1, 0), _entries(1, 5))
        assert os.path.getsize(s.segments()[-1].path) > s.segments()[-1].size
    fileio.record_durability(path)
    try:
        s = DiskStorage(path, durability="fsync")
        s.load()
        s.save(HardState(1, 1, 5), _entries(6, 9), sync=False)
        s.close()
    finally:
        fileio.stop_recording(path)
    undone = fileio.simulate_power_loss(path)
    assert undone["zeroed_bytes"] > 0
    assert _reopen(path)[1] == list(range(1, 6))


def test_new_segments_survive_only_through_the_directory_sync(journaled, monkeypatch):
    # Many entries in 4 KiB segments: every rotation creates a file, renames it into
    # place and syncs the directory. All of it was synced, so all of it survives.
    s = DiskStorage(journaled, durability="fsync", segment_bytes=4096)
    s.load()
    for lo in range(1, 400, 20):
        s.save(HardState(1, 1, 0), _entries(lo, lo + 19))
    segments = len(s.segments())
    s.close()
    assert segments > 3
    _power_loss(journaled)
    assert _reopen(journaled)[1] == list(range(1, 401))


def test_a_rename_without_a_directory_sync_is_undone(journaled, monkeypatch):
    # A planted bug: segment creation forgets the directory sync. The power loss then
    # loses the new segments whole -- the journal models directory entries too.
    s = DiskStorage(journaled, durability="fsync", segment_bytes=4096)
    s.load()
    s.save(HardState(1, 1, 0), _entries(1, 20))
    monkeypatch.setattr(s, "_sync_dir", lambda: None)
    for lo in range(21, 400, 20):
        s.save(HardState(1, 1, 0), _entries(lo, lo + 19))
    first_segment = s.segments()[0]
    s.close()
    undone = _power_loss(journaled)
    assert undone["removed"] > 0
    # What survives is the first segment (renamed in while the sync still ran) alone.
    assert _reopen(journaled)[1] == list(range(1, first_segment.hi))   # [lo, hi)
    assert 20 <= first_segment.hi < 400


def test_durability_none_loses_everything_since_the_start(journaled):
    s = DiskStorage(journaled, durability="none", segment_bytes=4096)
    s.load()
    s.save(HardState(1, 1, 0), _entries(1, 50))
    s.close()
    _power_loss(journaled)
    assert _reopen(journaled, "none")[1] == []


def test_an_unlink_and_a_replacing_rename_come_back(journaled):
    a, b = os.path.join(journaled, "a"), os.path.join(journaled, "b")
    for path, text in ((a, b"alpha"), (b, b"bravo")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, text)
        fileio.fsync(fd)
        os.close(fd)
    fileio.fsync_dir(journaled)
    fileio.unlink(a)
    tmp = os.path.join(journaled, "b.tmp")
    with open(tmp, "wb") as fp:
        fp.write(b"new b")
        fileio.fsync(fp.fileno())
    fileio.replace(tmp, b)                 # no directory sync after either change
    _power_loss(journaled)
    assert sorted(os.listdir(journaled)) == ["a", "b"]
    assert open(a, "rb").read() == b"alpha"
    assert open(b, "rb").read() == b"bravo"


def test_synced_directory_changes_stay(journaled):
    a = os.path.join(journaled, "a")
    with open(a, "wb") as fp:
        fp.write(b"alpha")
        fileio.fsync(fp.fileno())
    fileio.fsync_dir(journaled)
    fileio.unlink(a)
    fileio.fsync_dir(journaled)
    _power_loss(journaled)
    assert os.listdir(journaled) == []


def test_a_file_whose_data_was_never_synced_comes_back_empty(journaled):
    a = os.path.join(journaled, "a")
    with open(a, "wb") as fp:
        fp.write(b"alpha")
    fileio.fsync_dir(journaled)
    _power_loss(journaled)
    assert open(a, "rb").read() == b""


def test_failpoint_error_fails_the_save_and_sleep_delays_it(tmp_path):
    path = str(tmp_path / "data")
    s = DiskStorage(path, durability="fsync")
    s.load()
    try:
        fileio.write_failpoints(path, "wal.sync = error\n")
        fileio.enable_failpoints(path)
        with pytest.raises(StorageError) as e:      # the node fail-stops on it
            s.save(HardState(1, 1, 0), _entries(1, 1))
        assert e.value.__cause__.errno == errno.EIO
        fileio.set_failpoints("wal.write = sleep(1)")
        calls = []
        real_sleep = fileio.time.sleep
        fileio.time.sleep = calls.append
        try:
            fileio.failpoint("wal.write")
        finally:
            fileio.time.sleep = real_sleep
        assert calls == [0.001]
    finally:
        fileio.disable_failpoints()
        s.close()


def test_failpoints_are_reread_when_the_control_file_changes(tmp_path):
    path = str(tmp_path / "data")
    fileio.enable_failpoints(path)
    try:
        fileio.failpoint("wal.sync")                      # no file: nothing armed
        fileio.write_failpoints(path, "wal.sync=error")
        fileio._control._next = 0.0                       # skip the poll interval
        with pytest.raises(OSError):
            fileio.failpoint("wal.sync")
        fileio.write_failpoints(path, "wal.sync=off  # healed")
        fileio._control._next = 0.0
        fileio.failpoint("wal.sync")
    finally:
        fileio.disable_failpoints()


@pytest.mark.parametrize("text", ["nope=error", "wal.sync=explode", "wal.sync=sleep(x)"])
def test_bad_failpoint_specs_are_refused(text):
    with pytest.raises(ValueError):
        fileio.parse_failpoints(text)


def test_a_node_killed_before_its_baseline_was_journaled_loses_nothing(tmp_path):
    # Killed while starting (a power cut right after the previous one): no journal,
    # or one cut inside its baseline. The directory is as durable as it was.
    path = str(tmp_path / "data")
    os.makedirs(path)
    with open(os.path.join(path, "keep"), "wb") as fp:
        fp.write(b"durable")
    assert fileio.simulate_power_loss(path) == {"removed": 0, "restored": 0, "truncated_bytes": 0,
                                                "zeroed_bytes": 0}
    pdir = fileio.powerloss_dir(path)
    os.makedirs(pdir)
    with open(os.path.join(pdir, "journal"), "w") as fp:
        fp.write("D .\t{}\n")                   # a baseline cut short: no B line
    fileio.simulate_power_loss(path)
    assert open(os.path.join(path, "keep"), "rb").read() == b"durable"
    assert not os.path.exists(pdir)
