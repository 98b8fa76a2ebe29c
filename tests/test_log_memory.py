"""Issue 15, item 5: the in-memory log is bounded in bytes, not only in entries.

400 x ``SET same <1 MB>`` used to leave every node holding ~400 MB of log for a 1 MB
dataset: the log was kept until ``trailing_entries`` (1000) entries followed a
snapshot. Now a node snapshots and compacts once its in-memory log (``RaftLog.mem_bytes``)
passes ``snapshot.max_log_bytes``, dropping trailing entries; a follower that needs
them gets the snapshot. Three RaftNodes on one loop (tests/test_node.py's Cluster).
"""
from __future__ import annotations

import asyncio

from test_node import Cluster, run, wait_until

BUDGET = 2 << 20
VALUE = 100 * 1024
WRITES = 60          # 6 MB written: 3x the budget
#: A node compacts after each Ready it finishes; between two it may hold one more
#: Ready's entries (under this test's write rate, a few at most).
SLACK = 8 * (VALUE + 200)


def test_log_memory_stays_under_max_log_bytes(tmp_path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, durability="none", snapshot_threshold_bytes=64 << 20,
                    snapshot_trailing_entries=1000, max_log_bytes=BUDGET)
        try:
            await c.start()
            leader = await c.leader()
            lagging = next(i for i in c.nodes if i != leader.id)
            await c.stop(lagging)       # comes back after the leader compacted past it
            r = c.redis(leader.id)
            peak = 0
            for k in range(WRITES):
                assert await r.set("same", b"%06d" % k + b"v" * (VALUE - 6)) is True
                peak = max(peak, *(n.core.log.mem_bytes for n in c.nodes.values()))
            assert peak <= BUDGET + SLACK, peak
            assert leader.counters["snapshots_taken"] >= 1
            assert leader.core.log.first_index > 1
            # Appends queued for it before the compaction would catch it up from the
            # log (PeerTransport.queued): wait until a failed dial dropped them.
            await wait_until(lambda: not any(m.entries for n in c.nodes.values()
                                             for m in n.transport.queued(lagging)),
                             30, "the appends queued for the stopped node dropped")
            await c.start(lagging)
            target = leader.applied_index
            await wait_until(lambda: all(n.applied_index >= target for n in c.nodes.values()),
                             30, "every node to catch up")
            assert c.nodes[lagging].counters["snapshots_installed"] >= 1
            assert c.nodes[lagging].state_machine.read([b"GET", b"same"], 0)[:6] == b"%06d" % (WRITES - 1)
            for n in c.nodes.values():
                assert n.core.log.mem_bytes <= BUDGET + SLACK, (n.id, n.core.log.mem_bytes)
                assert n.status()["log_mem_bytes"] == n.core.log.mem_bytes
        finally:
            await c.close()

    run(main())


def test_wal_cache_frees_evicted_entries(tmp_path) -> None:
    """The WAL's read cache kept every evicted entry referenced until more than 1024
    had been evicted: with large entries that is gigabytes (RSS stayed at ~450 MB after
    400 x 1 MB SETs even with the log compacted)."""
    from raft import Entry, HardState
    from raft.storage.wal import DiskStorage

    s = DiskStorage(str(tmp_path / "wal"), durability="none", cache_bytes=1 << 20)
    try:
        for k in range(1, 51):
            s.save(HardState(1, 1, k - 1), [Entry(k, 1, 0, b"x" * (256 << 10))])
        held = sum(len(e.data) for e in s._cache)     # what the cache list keeps alive
        assert held <= 3 * (1 << 20), held
        assert s.entries(1, 51)[-1].data == b"x" * (256 << 10)   # reads still work
    finally:
        s.close()
