"""Snapshot figures: KV snapshot/restore cost and size, DiskStorage save_snapshot /
compact / install_snapshot / open, and a lagging follower caught up by InstallSnapshot
in a 3-node in-process cluster (real TCP on 127.0.0.1, real DiskStorage).

    python benchmarks/bench_snapshot.py [--keys 10000,100000] [--catchup-keys 100000]
                                        [--durability none|fsync] [--dir DIR] [--quick]

Figures in docs/storage.md and docs/operations.md come from this script. It imports
only the installed ``raft`` package (nothing from the source tree or tests/), so it
runs after ``pip install .``; ``--quick`` is a few-second smoke run.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time

from raft._core import Entry, HardState, Snapshot
from raft.kv import KVStateMachine, encode_command
from raft.net.transport import new_event_loop
from raft.node import RaftNode
from raft.resp import NotLeaderError, resp_frontend
from raft.testing.inproc import InProcessCluster, wait_until
from raft.storage import DiskStorage

VALUE_BYTES = 100


def kv_with(n: int) -> KVStateMachine:
    sm = KVStateMachine()
    for i in range(n):
        sm.apply(i + 1, encode_command(0, 0, [b"SET", b"key%d" % i, b"v" * VALUE_BYTES], time_ms=1))
    return sm


def storage_figures(n: int, directory: str) -> None:
    sm = kv_with(n)
    t = time.perf_counter()
    data = sm.snapshot()
    t_snap = time.perf_counter() - t
    t = time.perf_counter()
    KVStateMachine().restore(data)
    t_restore = time.perf_counter() - t
    d = tempfile.mkdtemp(dir=directory)
    try:
        s = DiskStorage(d, durability="fsync")
        s.save(HardState(1, 1, n), [Entry(i, 1, 0, b"x" * 120) for i in range(1, n + 1)])
        t = time.perf_counter()
        s.save_snapshot(Snapshot(n, 1, data))
        t_save = time.perf_counter() - t
        t = time.perf_counter()
        s.compact(n)
        t_compact = time.perf_counter() - t
        t = time.perf_counter()
        s.install_snapshot(Snapshot(n + 10, 2, data))
        t_install = time.perf_counter() - t
        s.close()
        t = time.perf_counter()
        with DiskStorage(d) as s:
            s.load()
        t_open = time.perf_counter() - t
    finally:
        shutil.rmtree(d)
    ms = 1000
    print(f"{n} keys x {VALUE_BYTES} B: snapshot {len(data) / 1e6:.2f} MB; kv.snapshot "
          f"{t_snap * ms:.0f} ms, kv.restore {t_restore * ms:.0f} ms; save_snapshot (fsync) "
          f"{t_save * ms:.0f} ms, compact {t_compact * ms:.0f} ms, install_snapshot "
          f"{t_install * ms:.0f} ms, open + load {t_open * ms:.0f} ms", flush=True)


SECRET = b"bench-snapshot-secret-0123456789"


async def _catchup(n: int, durability: str, directory: str, threshold: int) -> None:
    """Three RaftNodes on this loop (real TCP on 127.0.0.1, real DiskStorage): stop a
    follower, write ``n`` keys through the leader, restart the follower and time how
    long it takes to apply the leader's commit index (InstallSnapshot, then the log)."""
    cluster = InProcessCluster(directory, lambda i, cfg: RaftNode(cfg, frontend=resp_frontend),
                               lambda node: node.read_barrier(), (NotLeaderError, asyncio.TimeoutError),
                               n=3, secret=SECRET, durability=durability,
                               snapshot_threshold_bytes=threshold,
                               snapshot_trailing_entries=0)
    nodes = cluster.nodes
    try:
        await cluster.start()
        leader = await cluster.leader(30.0)
        fid = next(i for i in nodes if i != leader.id)
        await cluster.stop(fid)
        t = time.perf_counter()
        for lo in range(0, n, 2000):  # pipelined, as a client's pipeline would be
            await asyncio.gather(*(leader.propose(encode_command(
                0, 0, [b"SET", b"key%d" % i, b"v" * VALUE_BYTES], time_ms=1))
                for i in range(lo, min(n, lo + 2000))))
        t_writes = time.perf_counter() - t
        await wait_until(lambda: leader.counters["compactions"] >= 1, 60, "a compaction")
        snap = leader.core.snapshot
        t0 = time.perf_counter()
        await cluster.start(fid)
        node = nodes[fid]
        await wait_until(lambda: node.applied_index >= leader.core.commit, 120,
                          "the follower to catch up")
        dt = time.perf_counter() - t0
        ls, fs = leader.last_snapshot, node.last_snapshot
        print(f"catch-up ({durability}): {n} keys written in {t_writes:.1f}s with the follower down; "
              f"leader's snapshot at index {snap.index} of {leader.core.commit}, "
              f"{len(snap.data) / 1e6:.1f} MB (kv.snapshot {ls.get('snapshot_seconds', 0):.3f}s, "
              f"saved in {ls.get('save_seconds', 0):.3f}s); the restarted follower applied the "
              f"leader's commit index {dt:.2f}s after start() (install: restore "
              f"{fs.get('restore_seconds', 0):.3f}s, save {fs.get('save_seconds', 0):.3f}s; "
              f"then {leader.core.commit - snap.index} entries by AppendEntries)", flush=True)
    finally:
        await cluster.close()


def catchup_figure(n: int, durability: str, directory: str, threshold: int = 4 << 20) -> None:
    d = tempfile.mkdtemp(dir=directory)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(asyncio.wait_for(_catchup(n, durability, d, threshold), 600))
    finally:
        shutil.rmtree(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", default="10000,100000")
    ap.add_argument("--catchup-keys", type=int, default=100_000)
    ap.add_argument("--durability", choices=("none", "fsync"), default="fsync")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--quick", action="store_true",
                    help="a few-second smoke run (1,000 keys; 3,000 for the catch-up)")
    args = ap.parse_args()
    threshold = 4 << 20
    if args.quick:
        args.keys, args.catchup_keys, threshold = "1000", 3000, 64 << 10
    for n in (int(k) for k in args.keys.split(",") if k):
        storage_figures(n, args.dir)
    if args.catchup_keys:
        catchup_figure(args.catchup_keys, args.durability, args.dir, threshold)


if __name__ == "__main__":
    main()
