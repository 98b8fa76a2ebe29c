"""One thread that runs a node's storage calls (save, snapshot writes, compaction) for
its event loop, so the loop keeps stepping messages and taking proposals while a
write + fdatasync is in flight (group commit: what arrives meanwhile is the next
batch). The GIL is released in the write and the sync.

Why not ``loop.run_in_executor`` with a ``ThreadPoolExecutor``: a save is submitted
more than a thousand times a second per node, and each submission there builds a
``concurrent.futures.Future`` (with its ``Condition``), a work item, takes two locks
and the pool's idle ``Semaphore``, then chains an asyncio future to it
(``wrap_future``, ``iscoroutinefunction``). Profiled under ``raft bench``, that
bookkeeping was about 10% of a follower's Python time. Here a call is one tuple on a
``SimpleQueue`` and one ``call_soon_threadsafe`` back: calls run one at a time, in
the order they were made.
"""
from __future__ import annotations

import asyncio
import os
import queue
import threading
from typing import Any, Callable

__all__ = ["DiskThread", "SyncWriteThread"]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class DiskThread:
    """``await disk.call(fn, *args)`` runs ``fn(*args)`` on the thread and returns its
    result (or raises its exception) in the loop that made the call."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError("the disk thread is shut down")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return fut

    def shutdown(self) -> None:
        """Run what is queued, then end the thread (waits for it)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            loop, fut, fn, args = item
            try:
                result = fn(*args)
            except BaseException as e:  # delivered to the caller, like an executor
                ok, value = False, e
            else:
                ok, value = True, result
            try:
                loop.call_soon_threadsafe(_settle, fut, ok, value)
            except RuntimeError:
                pass   # the loop is closed: nobody waits for this any more


class SyncWriteThread:
    """``await writer.write(fd, bufs, offset)``: pwritev + fdatasync on a thread that
    never takes the GIL (``raft._fastpath.SyncWriter``), its completion delivered
    through an eventfd this loop watches. For the WAL's common save (wal.py
    begin_save/end_save); everything else goes through ``DiskThread``. One write
    at a time: the caller awaits each before the next (and does not mix the two
    threads' calls: the node's Ready loop awaits every storage call in turn)."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        from raft._fastpath import SyncWriter

        self._loop = loop
        self._writer = SyncWriter(name)
        self._future: asyncio.Future[float] | None = None
        self._closed = False
        loop.add_reader(self._writer.done_fd, self._on_done)

    def write(self, fd: int, bufs: list, offset: int, sync: bool = True) -> asyncio.Future[float]:
        """Write ``bufs`` at ``offset`` of ``fd`` (then fdatasync if ``sync``); the
        future gets the seconds the write + fdatasync took on the writer thread, or
        the ``OSError``."""
        if self._closed:
            raise RuntimeError("the WAL writer thread is shut down")
        fut = self._loop.create_future()
        self._writer.submit(fd, bufs, offset, sync)    # refuses a second write in flight
        self._future = fut
        return fut

    def write_here(self, fd: int, bufs: list, offset: int, sync: bool = True) -> float:
        """``write`` run in this thread, the GIL released while the disk works (the
        event loop waits): the seconds it took, or the ``OSError``. Not while a
        ``write`` is in flight."""
        if self._closed:
            raise RuntimeError("the WAL writer thread is shut down")
        _written, err, io_ns = self._writer.write_here(fd, bufs, offset, sync)
        if err:
            raise OSError(err, os.strerror(err))
        return io_ns / 1e9

    def _on_done(self) -> None:
        outcome = self._writer.result()
        if outcome is None:
            return                     # nothing finished (a spurious wakeup)
        fut, self._future = self._future, None
        _written, err, io_ns = outcome
        if fut is None or fut.cancelled():
            return
        if err:
            fut.set_exception(OSError(err, os.strerror(err)))
        else:
            fut.set_result(io_ns / 1e9)

    def shutdown(self) -> None:
        """Finish the write in flight (its buffers stay valid until then), end the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.remove_reader(self._writer.done_fd)
        except (RuntimeError, ValueError, OSError):
            pass   # the loop is already closed
        self._writer.close()

