"""The WAL's writer thread without the GIL (raft._fastpath.SyncWriter and its loop
side, raft.storage.disk_thread.SyncWriteThread) and the save split around it
(DiskStorage.begin_save / end_save): the bytes on disk and what load() returns are
those of save(), errors fail the storage, and one save at a time is enforced."""
import asyncio
import errno
import os
import random
import select

import pytest

from raft._core import Entry, HardState
from raft._fastpath import SyncWriter
from raft.net.transport import new_event_loop
from raft.storage.base import StorageError
from raft.storage.disk_thread import SyncWriteThread
from raft.storage.wal import DiskStorage


def wait_result(w: SyncWriter, timeout: float = 30.0):
    """The writer's result once done_fd is readable (bounded: never hangs a test)."""
    readable, _, _ = select.select([w.done_fd], [], [], timeout)
    assert readable, "the writer did not finish"
    return w.result()


# --- SyncWriter ------------------------------------------------------------------------


def test_writes_every_buffer_at_the_offset_and_reports_the_count(tmp_path):
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    w = SyncWriter("test-writer")
    try:
        w.submit(fd, [b"abc", bytearray(b"defg"), memoryview(b"--xyz")[2:], b""], 5, True)
        assert w.busy
        written, err, ns = wait_result(w)
        assert (written, err) == (10, 0) and ns >= 0
        assert not w.busy
        assert path.read_bytes() == b"\0" * 5 + b"abcdefgxyz"
        submitted, started, finished = w.timings()
        assert submitted <= started <= finished
    finally:
        w.close()
        os.close(fd)


def test_an_io_error_is_reported_with_its_errno(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    w = SyncWriter("test-writer")
    try:
        w.submit(fd, [b"data"], 0, True)
        written, err, _ = wait_result(w)
        assert written == 0 and err == errno.EBADF
        # the thread goes on: the next write is served
        fd2 = os.open(tmp_path / "g", os.O_RDWR | os.O_CREAT)
        w.submit(fd2, [b"ok"], 0, False)
        assert wait_result(w)[:2] == (2, 0)
        os.close(fd2)
    finally:
        w.close()
        os.close(fd)


def test_one_write_at_a_time_and_buffers_are_held_until_the_result(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    w = SyncWriter("test-writer")
    buf = bytearray(b"x" * 100)
    try:
        w.submit(fd, [buf], 0, True)
        with pytest.raises(RuntimeError, match="in flight"):
            w.submit(fd, [b"y"], 0, True)
        with pytest.raises(BufferError):
            buf.extend(b"more")          # the writer may still be reading it
        assert wait_result(w)[:2] == (100, 0)
        buf.extend(b"more")              # released with the result
        with pytest.raises(ValueError, match="at most"):
            w.submit(fd, [b"z"] * 9, 0, True)
    finally:
        w.close()
        os.close(fd)


def test_close_finishes_the_write_in_flight_then_refuses_new_ones(tmp_path):
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    w = SyncWriter("test-writer")
    try:
        data = os.urandom(1 << 20)
        w.submit(fd, [data], 0, True)
        w.close()
        assert path.read_bytes() == data
        with pytest.raises(RuntimeError):
            w.submit(fd, [b"late"], 0, True)
    finally:
        os.close(fd)


def test_write_here_writes_in_the_calling_thread_and_never_beside_a_write_in_flight(tmp_path):
    """write_here: the same job as submit + result, run by the caller; an error comes
    back as its errno; refused while a submitted write is in flight."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    ro = os.open(path, os.O_RDONLY)
    w = SyncWriter("test-writer")
    try:
        written, err, ns = w.write_here(fd, [b"abc", memoryview(b"--de")[2:]], 2, True)
        assert (written, err) == (5, 0) and ns >= 0 and not w.busy
        assert path.read_bytes() == b"\0\0abcde"
        assert w.write_here(ro, [b"x"], 0, True)[:2] == (0, errno.EBADF)
        w.submit(fd, [b"Z"], 0, True)
        with pytest.raises(RuntimeError, match="in flight"):
            w.write_here(fd, [b"Y"], 0, True)
        assert wait_result(w)[:2] == (1, 0)
        assert w.write_here(fd, [b"Y"], 1, False)[:2] == (1, 0)   # and after it, again
        assert path.read_bytes() == b"ZYabcde"
    finally:
        w.close()
        os.close(fd)
        os.close(ro)


# --- SyncWriteThread on a loop ---------------------------------------------------------


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_the_loop_side_returns_the_io_time_or_raises_the_oserror(tmp_path, loop_kind):
    async def main() -> None:
        writer = SyncWriteThread("test-writer", asyncio.get_running_loop())
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        ro = os.open(tmp_path / "f", os.O_RDONLY)
        try:
            for i in range(50):
                if i % 2:    # a follower's save: in the loop's thread
                    seconds = writer.write_here(fd, [b"%03d" % i], 3 * i)
                else:
                    seconds = await asyncio.wait_for(writer.write(fd, [b"%03d" % i], 3 * i), 30)
                assert seconds >= 0
            with pytest.raises(OSError) as info:
                await asyncio.wait_for(writer.write(ro, [b"x"], 0), 30)
            assert info.value.errno == errno.EBADF
            with pytest.raises(OSError) as info:
                writer.write_here(ro, [b"x"], 0)
            assert info.value.errno == errno.EBADF
        finally:
            writer.shutdown()
            os.close(fd)
            os.close(ro)
        assert (tmp_path / "f").read_bytes() == b"".join(b"%03d" % i for i in range(50))

    factory = new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


# --- DiskStorage.begin_save / end_save -------------------------------------------------


def run_pending(storage: DiskStorage, hs, entries, here: bool = False) -> bool:
    """One save through the split path, the write done by the writer thread (or in
    this thread: write_here, a follower's save); False if begin_save declined (the
    caller then uses save())."""
    pending = storage.begin_save(hs, entries)
    if pending is None:
        return False
    w = SyncWriter("test-writer")
    try:
        if here:
            written, err, _ = w.write_here(pending.fd, pending.bufs, pending.offset, True)
        else:
            w.submit(pending.fd, pending.bufs, pending.offset, True)
            written, err, _ = wait_result(w)
    finally:
        w.close()
    storage.end_save(pending, OSError(err, os.strerror(err)) if err else None)
    return True


def random_history(rng: random.Random, n: int):
    """Saves as a follower sees them: appends, a hard state now and then, and
    overwritten suffixes (§5.3) in a later term."""
    term, last, commit = 1, 0, 0
    for _ in range(n):
        r = rng.random()
        if r < 0.1 and last > 2:
            term += 1
            first = rng.randint(max(1, last - 5), last)     # a conflicting suffix
        else:
            first = last + 1
        count = rng.randint(0 if r > 0.9 else 1, 30)
        entries = [Entry(index=first + k, term=term, data=rng.randbytes(rng.randint(0, 300)))
                   for k in range(count)]
        if entries:
            last = entries[-1].index
        commit = min(last, commit + rng.randint(0, 10))
        hs = HardState(term=term, vote=rng.choice([0, 1, 2]), commit=commit) \
            if rng.random() < 0.3 or not entries else None
        yield hs, entries


@pytest.mark.parametrize("here", [False, True], ids=["thread", "write_here"])
@pytest.mark.parametrize("seed", range(4))
def test_the_split_save_writes_what_save_writes(tmp_path, seed, here):
    """Same history through save() only and through begin_save/end_save where it
    accepts (save() where it declines): byte-identical segments, identical load()."""
    rng = random.Random(seed)
    history = list(random_history(rng, 150))
    a = DiskStorage(tmp_path / "a", segment_bytes=64 << 10)
    b = DiskStorage(tmp_path / "b", segment_bytes=64 << 10)
    split = 0
    try:
        for hs, entries in history:
            a.save(hs, entries)
            if run_pending(b, hs, entries, here):
                split += 1
            else:
                b.save(hs, entries)
            assert (a.last_index, a.hard_state) == (b.last_index, b.hard_state), f"seed {seed}"
        assert split > len(history) // 2, f"seed {seed}: only {split} saves took the split path"
        assert b.entries(b.first_index, b.last_index + 1) == a.entries(a.first_index, a.last_index + 1)
    finally:
        a.close()
        b.close()
    names_a = sorted(os.listdir(tmp_path / "a"))
    assert names_a == sorted(os.listdir(tmp_path / "b"))
    for name in names_a:
        if name != "LOCK":
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), \
                f"seed {seed}: {name} differs"
    with DiskStorage(tmp_path / "a") as a2, DiskStorage(tmp_path / "b") as b2:
        la, lb = a2.load(), b2.load()
        assert (la.hard_state, la.entries) == (lb.hard_state, lb.entries)


def test_a_failed_write_fails_the_storage_and_reopening_recovers(tmp_path):
    s = DiskStorage(tmp_path / "d")
    s.save(HardState(term=1, vote=1, commit=0), [Entry(index=1, term=1, data=b"one")])
    pending = s.begin_save(None, [Entry(index=2, term=1, data=b"two")])
    assert pending is not None
    with pytest.raises(StorageError, match="unusable"):
        s.end_save(pending, OSError(errno.EIO, "injected"))
    with pytest.raises(StorageError):
        s.save(None, [Entry(index=2, term=1, data=b"two")])
    s.close()
    with DiskStorage(tmp_path / "d") as again:
        st = again.load()
        assert [e.data for e in st.entries] == [b"one"]


def test_one_save_in_flight_at_a_time(tmp_path):
    with DiskStorage(tmp_path / "d") as s:
        s.save(HardState(term=1, vote=1, commit=0), [])     # the first segment
        pending = s.begin_save(None, [Entry(index=1, term=1, data=b"x")])
        assert pending is not None
        with pytest.raises(StorageError, match="in flight"):
            s.begin_save(None, [Entry(index=1, term=1, data=b"y")])
        with pytest.raises(StorageError, match="in flight"):
            s.save(None, [Entry(index=1, term=1, data=b"y")])
        with pytest.raises(StorageError, match="not the one"):
            s.end_save(object(), None)   # type: ignore[arg-type]


def test_begin_save_declines_what_only_save_does(tmp_path):
    with DiskStorage(tmp_path / "n", durability="none") as s:
        assert s.begin_save(None, [Entry(index=1, term=1, data=b"x")]) is None
    with DiskStorage(tmp_path / "f") as s:
        # the first save creates the first segment
        assert s.begin_save(HardState(term=1, vote=1, commit=0),
                            [Entry(index=1, term=1, data=b"x")]) is None
        s.save(HardState(term=1, vote=1, commit=0), [Entry(index=1, term=1, data=b"x")])
        assert s.begin_save(HardState(term=1, vote=1, commit=0), []) is None   # no change
