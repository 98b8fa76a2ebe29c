"""raft/storage/disk_thread.py: calls run on one thread, in order; results and
exceptions come back to the awaiting loop; shutdown runs what was queued."""
import asyncio
import threading

import pytest

from raft.storage.disk_thread import DiskThread


def test_calls_run_in_order_on_the_thread_and_return_their_results():
    disk = DiskThread("test-disk")
    seen: list[tuple[int, str]] = []

    def work(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    async def main() -> list[int]:
        return await asyncio.gather(*(disk.call(work, i) for i in range(200)))

    try:
        assert asyncio.run(main()) == [i * i for i in range(200)]
    finally:
        disk.shutdown()
    assert [i for i, _ in seen] == list(range(200))
    assert {name for _, name in seen} == {"test-disk"}


def test_an_exception_reaches_the_caller_and_the_thread_goes_on():
    disk = DiskThread("test-disk")

    def fail() -> None:
        raise OSError(5, "injected")

    async def main() -> int:
        with pytest.raises(OSError, match="injected"):
            await disk.call(fail)
        return await disk.call(lambda: 7)

    try:
        assert asyncio.run(main()) == 7
    finally:
        disk.shutdown()


def test_shutdown_runs_what_is_queued_then_refuses_new_calls():
    disk = DiskThread("test-disk")
    gate = threading.Event()
    done: list[int] = []

    async def main() -> None:
        disk.call(gate.wait)
        for i in range(5):
            disk.call(done.append, i)
        gate.set()
        await asyncio.to_thread(disk.shutdown)
        with pytest.raises(RuntimeError):
            disk.call(done.append, 99)

    asyncio.run(main())
    assert done == [0, 1, 2, 3, 4]
